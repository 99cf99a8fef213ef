//! A real player: hls.js (npm) in headless Chromium (Debian `chromium`, driven by
//! `playwright-core`) plays the live stream from a page on another origin. The player lives in
//! `tests/browser/` (`play_hls.mjs`, dependencies pinned in its `package-lock.json`).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::hls::{hls_url, wait_segments};
use crate::publisher::{encoder, publish_url};
use crate::support::Server;

const LIMIT: Duration = Duration::from_secs(60);
/// How long the player may take to play the required seconds, start-up included.
const BUDGET_SEC: u32 = 40;
/// Seconds of playback (`video.currentTime` advancing) the player must see.
const WANT_SEC: u32 = 5;

/// `tests/browser/`, beside this crate's workspace root.
fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/browser")
}

/// Fails (never skips) with what to install when the player's tools are missing.
fn require_player() -> PathBuf {
    let dir = browser_dir();
    let node = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .status();
    assert!(
        node.is_ok_and(|s| s.success()),
        "node is not installed: install Node.js 20 (Debian: `apt-get install nodejs npm`)"
    );
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium is missing: `apt-get install chromium` (scripts/test installs it)"
    );
    assert!(
        dir.join("node_modules/playwright-core").is_dir() && dir.join("node_modules/hls.js").is_dir(),
        "{}/node_modules is missing: run `npm ci --prefix tests/browser` (scripts/test runs it)",
        dir.display()
    );
    dir
}

/// Runs `play_hls.mjs` on `url`; returns its exit success, its JSON report and its stderr.
fn play(dir: &std::path::Path, url: &str) -> (bool, Value, String) {
    let out = Command::new("node")
        .arg(dir.join("play_hls.mjs"))
        .args([url, &BUDGET_SEC.to_string(), &WANT_SEC.to_string()])
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let line = stdout.lines().rev().find(|l| l.starts_with('{'));
    let report = line
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!(
                "no JSON report from play_hls.mjs ({}):\n{stdout}\n{stderr}",
                out.status
            )
        });
    (out.status.success(), report, stderr)
}

#[test]
fn hls_js_in_headless_chromium_plays_the_live_stream() {
    let dir = require_player();
    let server = Server::start();
    let s = server.create_stream(json!({"input": {"type": "rtmp"}, "idle_timeout_sec": 10}));
    let url = hls_url(&s);
    let mut ffmpeg = encoder(&publish_url(&s), 25, "640x360", 2, "va");
    let listing = wait_segments(&url, 2, LIMIT);

    let started = Instant::now();
    let (ok, report, stderr) = play(&dir, &url);
    let took = started.elapsed();
    let _ = ffmpeg.kill();
    let _ = ffmpeg.wait();
    let playlist = crate::hls::fetch_playlist(&url)
        .map(|l| l.text)
        .unwrap_or_default();
    let context = format!(
        "report: {report:#}\nplay_hls.mjs stderr:\n{stderr}\nplaylist before playback:\n{}\nplaylist now:\n{playlist}",
        listing.text
    );

    let fatal = report["fatal"].as_array().unwrap();
    assert!(fatal.is_empty(), "hls.js raised a fatal error\n{context}");
    let advanced = report["advanced"].as_f64().unwrap();
    assert!(
        advanced >= f64::from(WANT_SEC),
        "video.currentTime advanced only {advanced} s in {took:?}\n{context}"
    );
    assert!(ok, "play_hls.mjs failed: {}\n{context}", report["failure"]);
    let video = &report["video"];
    assert_eq!(
        (video["width"].as_u64(), video["height"].as_u64()),
        (Some(640), Some(360)),
        "the decoded picture has the encoder's size\n{context}"
    );
    eprintln!(
        "hls.js {} in Chromium {}: advanced {advanced} s in {took:.1?}, hls.latency {} s, non-fatal errors {}",
        report["hls_js"], report["browser"], report["latency"], report["errors"]
    );
}
