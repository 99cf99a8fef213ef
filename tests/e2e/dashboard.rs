//! The pages people use, in headless Chromium (`tests/browser/dashboard.mjs`, `player.mjs`): the
//! dashboard at `/` runs a stream from creation to deletion through the admin API (preview,
//! figures, a simulcast output, kick), and a stream's
//! public viewer page (`player_uri`) goes live by itself, also inside a frame of another site.
//! The scripts report each step on stdout and wait for the test's go-ahead on stdin where the test
//! publishes or checks the server. Screenshots go to `<target dir>/oxcast-screenshots/`.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::browser::require_player;
use crate::support::destination::Destination;
use crate::support::probe::video_size;
use crate::support::publisher::{encoder, wait_child};
use crate::support::tools::command;
use crate::support::{Auth, BIN, Options, Server, wait_until};

/// How long a step of a script may take before the test gives up on it.
const STEP: Duration = Duration::from_secs(60);

/// `<target dir>/oxcast-screenshots/`: beside the binary under test, never in the sources.
fn screenshot_dir() -> PathBuf {
    let target = Path::new(BIN).parent().and_then(Path::parent).unwrap();
    let dir = target.join("oxcast-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A browser script of `tests/browser/` that reports steps as JSON lines and waits for `go`.
struct Script {
    name: &'static str,
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Script {
    fn start(name: &'static str, args: &[&str]) -> Script {
        let dir = require_player();
        let mut child = command("node")
            .arg(dir.join(name))
            .args(args)
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Script {
            name,
            child,
            stdin,
            lines,
            seen: Vec::new(),
        }
    }

    /// The next JSON line; panics with what came so far if the script ends or says nothing.
    fn next(&mut self) -> Value {
        loop {
            let line = match self.lines.recv_timeout(STEP) {
                Ok(line) => line,
                Err(RecvTimeoutError::Timeout) => panic!(
                    "{} said nothing for {STEP:?}; so far:\n{}",
                    self.name,
                    self.seen.join("\n")
                ),
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("{} ended; it said:\n{}", self.name, self.seen.join("\n"))
                }
            };
            self.seen.push(line.clone());
            if let Ok(value) = serde_json::from_str::<Value>(&line) {
                return value;
            }
        }
    }

    /// Waits for the step `name`; panics with the script's report if it ended before.
    fn expect(&mut self, name: &str) -> Value {
        let value = self.next();
        assert!(
            value["step"] == name,
            "{} reached no step {name:?}: {value:#}",
            self.name
        );
        value
    }

    fn go(&mut self) {
        writeln!(self.stdin, "go").unwrap();
        self.stdin.flush().unwrap();
    }

    /// The final report; panics unless the script passed every check.
    fn finish(mut self) -> Value {
        let report = self.next();
        let status = self.child.wait().unwrap();
        assert!(
            report["failure"].is_null() && status.success(),
            "{} failed ({status}): {}\nreport: {report:#}",
            self.name,
            report["failure"]
        );
        report
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

#[test]
fn the_dashboard_runs_a_stream_from_creation_to_deletion() {
    let server = Server::start_with(Options::env(&[(
        "OXCAST__SIMULCAST__ALLOW_PRIVATE_DESTINATIONS",
        "true",
    )]));
    let destination = Destination::start();
    let (key, secret) = server.credentials();
    let shots = screenshot_dir();

    // The page is served to anyone and holds no data; the API it calls asks for credentials, and
    // leaves out the challenge that would make a browser pop up its own dialog when the page asks.
    let page = http().get(server.url("/")).send().unwrap();
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert!(
        page.text()
            .unwrap()
            .contains("<meta name=\"oxcast-cloud\" content=\"local\">")
    );
    let asked = server.send(Method::GET, "/v2/video/local/live_streams", Auth::None, None);
    asked.assert_status(401);
    assert!(
        asked.headers.contains_key("www-authenticate"),
        "curl and SDKs get the challenge"
    );
    let quiet = http()
        .get(server.url("/v2/video/local/live_streams"))
        .header("x-requested-with", "XMLHttpRequest")
        .send()
        .unwrap();
    assert_eq!(quiet.status(), 401);
    assert!(!quiet.headers().contains_key("www-authenticate"));

    let dest_key = "from-the-dashboard";
    let mut script = Script::start(
        "dashboard.mjs",
        &[
            &server.url(""),
            &key,
            &secret,
            &destination.url(),
            dest_key,
            shots.to_str().unwrap(),
        ],
    );
    script.expect("signed_in");

    // The stream the page made, as the API has it, and the OBS settings the page shows.
    let created = script.expect("created");
    let id = created["id"].as_str().unwrap();
    let stream = server.get(&format!("/live_streams/{id}")).data().clone();
    assert_eq!(stream["name"], "Studio A — main stage", "renamed in the page");
    assert_eq!(created["server"], stream["input"]["uri"]);
    assert_eq!(created["stream_key"], stream["input"]["stream_key"]);
    let hls = stream["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["type"] == "hls")
        .unwrap();
    assert_eq!(created["player_uri"], hls["player_uri"]);

    // An encoder configured from what the page shows.
    let url = format!(
        "{}/{}",
        created["server"].as_str().unwrap(),
        created["stream_key"].as_str().unwrap()
    );
    let mut ffmpeg = encoder(&url, 120, "1280x720", 2, "va");
    script.go();
    let live = script.expect("live");
    eprintln!("dashboard while live: {live}");

    // The output added in the page relays the stream to nginx-rtmp.
    let relaying = script.expect("relaying");
    let outputs = server.get(&format!("/live_streams/{id}/outputs")).data().clone();
    let relay = outputs
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["type"] == "simulcast");
    let relay = relay.unwrap_or_else(|| panic!("no simulcast output after adding one: {outputs:#}"));
    assert_eq!(relay["uri"], destination.url());
    assert_eq!(relay["stream_key"], dest_key);
    let received = wait_until(
        "nginx-rtmp to record the relayed stream",
        STEP,
        Duration::from_millis(200),
        || {
            let files = destination.recordings_of(dest_key);
            let size: u64 = files.iter().map(|f| f.metadata().map_or(0, |m| m.len())).sum();
            if size > 256 * 1024 {
                Ok(files)
            } else {
                Err(format!("{size} bytes in {files:?}"))
            }
        },
    );
    assert_eq!(video_size(&received[0]), "1280,720", "what nginx-rtmp recorded");
    eprintln!("relaying: {relaying}");
    script.go();

    script.expect("output_removed");
    let outputs = server.get(&format!("/live_streams/{id}/outputs")).data().clone();
    assert!(
        outputs
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["type"] != "simulcast"),
        "{outputs:#}"
    );
    script.go();

    // The kick button disconnected the encoder.
    script.expect("kicked");
    let (ok, _) = wait_child(&mut ffmpeg, STEP);
    assert!(!ok, "ffmpeg went on publishing after the kick");
    script.go();

    script.expect("deleted");
    let report = script.finish();
    server
        .get(&format!("/live_streams/{id}"))
        .assert_error(404, "live stream not found");
    for shot in report["screenshots"].as_array().unwrap() {
        let path = Path::new(shot.as_str().unwrap());
        assert!(
            path.metadata().is_ok_and(|m| m.len() > 10_000),
            "{}",
            path.display()
        );
        eprintln!("screenshot: {}", path.display());
    }
}

#[test]
fn the_viewer_page_goes_live_by_itself_and_plays_in_a_frame_of_another_site() {
    let server = Server::start();
    let s = server
        .create_stream(json!({"name": "Launch <day>", "input": {"type": "rtmp"}, "idle_timeout_sec": 2}));
    let id = s["id"].as_str().unwrap();
    let hls = s["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["type"] == "hls")
        .unwrap();
    let player_uri = hls["player_uri"].as_str().unwrap();
    assert_eq!(player_uri, server.url(&format!("/local/video/player/{id}")));

    // Public, embeddable anywhere, and the stream's name as text, not markup.
    let page = http().get(player_uri).send().unwrap();
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("frame-ancestors *") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(!headers.contains_key("x-frame-options"));
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert!(page.text().unwrap().contains("<title>Launch &lt;day&gt;</title>"));

    // No such stream, or one without HLS: a 404 page.
    let other = server.create_stream(json!({"input": {"type": "rtmp"}}));
    let other_id = other["id"].as_str().unwrap();
    let other_hls = other["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["type"] == "hls")
        .unwrap();
    server
        .delete(&format!(
            "/live_streams/{other_id}/outputs/{}",
            other_hls["id"].as_str().unwrap()
        ))
        .assert_ok_message();
    for path in [
        "/local/video/player/0123456789abcdef0123456789abcdef".to_owned(),
        "/local/video/player/nope".to_owned(),
        format!("/other/video/player/{id}"),
        format!("/local/video/player/{other_id}"),
    ] {
        let missing = http().get(server.url(&path)).send().unwrap();
        assert_eq!(missing.status(), 404, "{path}");
        assert!(missing.text().unwrap().contains("Stream not found"), "{path}");
    }

    let shots = screenshot_dir();
    let mut script = Script::start("player.mjs", &[player_uri, shots.to_str().unwrap()]);
    let offline = script.expect("offline");
    assert_eq!(offline["state"], "Offline", "{offline}");
    let mut ffmpeg = encoder(
        &crate::support::publisher::publish_url(&s),
        60,
        "640x360",
        2,
        "va",
    );
    script.go();
    let playing = script.expect("playing");
    let started = playing["started_sec"].as_f64();
    assert!(
        started.is_some_and(|s| s <= 10.0),
        "the page played {started:?} s after ffmpeg started, not within 10 s: {playing:#}"
    );
    assert_eq!(playing["navigations"], 1, "the page was not reloaded");
    let embedded = script.expect("embedded");

    // The publisher leaves; once the stream is idle, the page says offline again.
    let _ = ffmpeg.kill();
    let _ = ffmpeg.wait();
    server.wait_status(id, "idle", STEP);
    script.go();
    script.expect("offline_again");
    script.finish();
    eprintln!("viewer page: {playing}\nin an iframe: {embedded}");
}
