//! Real players in headless Chromium (Debian `chromium`, driven by `playwright-core`), on a page
//! of another origin: hls.js (npm) plays the live stream, and a plain `<video>` element plays a
//! recording and seeks in it. The players live in `tests/browser/` (`play_hls.mjs`,
//! `play_mp4.mjs`, dependencies pinned in its `package-lock.json`).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::Server;
use crate::support::hls::{fetch_playlist, hls_url, wait_segments};
use crate::support::publisher::{encoder, publish_url, wait_child};
use crate::support::recordings::wait_archives;
use crate::support::tools::{command, require};

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
pub fn require_player() -> PathBuf {
    let dir = browser_dir();
    require("node");
    // The path `tests/browser/chromium.mjs` launches.
    require("/usr/bin/chromium");
    assert!(
        dir.join("node_modules/playwright-core").is_dir() && dir.join("node_modules/hls.js").is_dir(),
        "{}/node_modules is missing: run `npm ci --prefix tests/browser` (scripts/test runs it)",
        dir.display()
    );
    dir
}

/// Runs `play_hls.mjs` on `url`; returns its exit success, its JSON report and its stderr.
fn play(dir: &std::path::Path, url: &str) -> (bool, Value, String) {
    run_player(
        dir,
        "play_hls.mjs",
        &[url, &BUDGET_SEC.to_string(), &WANT_SEC.to_string()],
    )
}

/// Runs the player `script` with `args`; returns its exit success, its JSON report (its last
/// stdout line that is one) and its stderr.
fn run_player(dir: &std::path::Path, script: &str, args: &[&str]) -> (bool, Value, String) {
    let out = command("node")
        .arg(dir.join(script))
        .args(args)
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
                "no JSON report from {script} ({}):\n{stdout}\n{stderr}",
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
    let playlist = fetch_playlist(&url).map(|l| l.text).unwrap_or_default();
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

/// Seconds the recording lasts (what is published).
const RECORDED_SEC: u32 = 12;

#[test]
fn chromium_plays_a_recording_and_seeks_to_its_middle() {
    let dir = require_player();
    let server = Server::start();
    let s = server.create_stream(json!({"input": {"type": "rtmp"}, "idle_timeout_sec": 2}));
    let id = s["id"].as_str().unwrap();
    let mut ffmpeg = encoder(&publish_url(&s), RECORDED_SEC, "640x360", 2, "va");
    let (ok, err) = wait_child(&mut ffmpeg, LIMIT);
    assert!(ok, "the publish went on: {err}");
    server.wait_status(id, "idle", LIMIT);
    let archives = wait_archives(&server, id, 1);
    let uri = archives[0]["uri"].as_str().unwrap();

    let (ok, report, stderr) = run_player(&dir, "play_mp4.mjs", &[uri, &BUDGET_SEC.to_string()]);
    let context = format!(
        "report: {report:#}\nplay_mp4.mjs stderr:\n{stderr}\narchive: {}",
        archives[0]
    );

    assert!(
        report["error"].is_null(),
        "the video element raised a MediaError (canPlayType: {}; to see why, \
         `ffprobe -v error -show_format -show_streams {uri}`)\n{context}",
        report["canPlayType"]
    );
    let duration = report["duration"].as_f64().unwrap_or(f64::NAN);
    let want = f64::from(RECORDED_SEC);
    assert!(
        (duration - want).abs() <= 0.3,
        "video.duration is {duration} s for {want} s recorded\n{context}"
    );
    let video = &report["video"];
    assert_eq!(
        (video["width"].as_u64(), video["height"].as_u64()),
        (Some(640), Some(360)),
        "the decoded picture has the encoder's size\n{context}"
    );
    let before = report["before"]["advanced"].as_f64().unwrap_or(0.0);
    assert!(
        before >= 1.0,
        "currentTime advanced {before} s from the start\n{context}"
    );
    let (target, landed) = (
        report["seek"]["target"].as_f64().unwrap_or(f64::NAN),
        report["seek"]["landed"].as_f64().unwrap_or(f64::NAN),
    );
    assert!(
        (target - duration / 2.0).abs() < 0.01,
        "the seek went to duration / 2\n{context}"
    );
    assert!(
        (landed - target).abs() <= 1.0,
        "the seek to {target} s landed at {landed} s\n{context}"
    );
    let after = report["after"]["advanced"].as_f64().unwrap_or(0.0);
    assert!(
        after >= 1.0,
        "after the seek currentTime advanced {after} s\n{context}"
    );
    // Chromium warns that the https page loads http media ("Mixed Content", left as it is because
    // the host is an IP address); a refused request or a console error is a failure.
    let refused: Vec<&Value> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["details"] != "console warning")
        .collect();
    assert!(
        refused.is_empty(),
        "failed requests or errors in the page: {refused:?}\n{context}"
    );
    assert!(ok, "play_mp4.mjs failed: {}\n{context}", report["failure"]);
    eprintln!(
        "<video> in Chromium {}: duration {duration} s, {}x{}, advanced {before} s, seek to {target} s \
         landed at {landed} s, then advanced {after} s; media requests {}, page warnings {}",
        report["browser"], video["width"], video["height"], report["requests"], report["errors"]
    );
}
