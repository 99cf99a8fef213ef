//! What an operator sees of a live stream: the `live` object and each output's figures in the
//! API, kicking a publisher, and `/metrics` scraped by a real Prometheus (Debian `prometheus`).

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::probe::ffprobe;
use crate::support::publisher::{publish_url, small_encoder, wait_child};
use crate::support::tools::{command, run};
use crate::support::{Options, Server, free_port, wait_until};

const LIMIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(250);

/// 720p30 at 3 Mbit/s with a keyframe every 2 s, five GOPs long, written as fast as it encodes.
fn encode_720p30(path: &Path) {
    run(command("ffmpeg")
        .args(["-v", "error", "-nostdin"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000"])
        .args([
            "-t",
            "10",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
        ])
        .args(["-g", "60", "-keyint_min", "60", "-sc_threshold", "0"])
        // A steady rate, so any five seconds carry about the file's average.
        .args(["-b:v", "3000k", "-maxrate", "3000k", "-bufsize", "3000k"])
        .args(["-c:a", "aac", "-b:a", "128k", "-ar", "48000", "-ac", "2"])
        .args(["-y", "-f", "flv"])
        .arg(path));
}

/// The video bitrate of `path` as ffprobe measures it: its packets' bytes over their span.
fn measured_video_kbps(path: &Path) -> f64 {
    let out = ffprobe(
        &[
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=size,dts_time",
            "-of",
            "csv=p=0",
        ],
        path.to_str().unwrap(),
    );
    let packets: Vec<(f64, f64)> = out
        .lines()
        .filter_map(|line| {
            let (dts, size) = line.split_once(',')?;
            Some((dts.parse().ok()?, size.parse().ok()?))
        })
        .collect();
    assert!(
        packets.len() > 200,
        "ffprobe read {} video packets",
        packets.len()
    );
    let bytes: f64 = packets.iter().map(|(_, size)| size).sum();
    let span = packets.last().unwrap().0 - packets.first().unwrap().0;
    // n frames last n frame times: the span covers n - 1 of them.
    let duration = span * packets.len() as f64 / (packets.len() - 1) as f64;
    bytes * 8.0 / duration / 1000.0
}

/// Publishes `file` at its own pace, again and again, until killed.
fn publish_loop(file: &Path, url: &str) -> Child {
    command("ffmpeg")
        .args(["-v", "error", "-nostdin", "-re", "-stream_loop", "-1", "-i"])
        .arg(file)
        .args(["-c", "copy", "-f", "flv", url])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn f64_of(value: &Value) -> f64 {
    value.as_f64().unwrap_or_else(|| panic!("not a number: {value}"))
}

#[test]
fn the_api_shows_what_a_publisher_sends_and_kick_disconnects_it() {
    let server = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("720p30.flv");
    encode_720p30(&file);
    let published_kbps = measured_video_kbps(&file);

    let stream = server.create_stream(json!({"input": {"type": "rtmp"}, "idle_timeout_sec": 5}));
    let id = stream["id"].as_str().unwrap().to_owned();
    let mut ffmpeg = publish_loop(&file, &publish_url(&stream));
    let publishing = Instant::now();

    // Five seconds of media fill the rate window; a few more, so it holds no start-up burst.
    let live = wait_until(
        "the stream's live figures over a full window",
        LIMIT,
        POLL,
        || {
            let data = server.get(&format!("/live_streams/{id}")).data().clone();
            let video = &data["live"]["video"];
            match video["bitrate_kbps"].as_f64() {
                Some(kbps) if kbps > 0.0 && publishing.elapsed() > Duration::from_secs(8) => Ok(data),
                _ => Err(data),
            }
        },
    );
    let figures = &live["live"];
    let video = &figures["video"];
    assert_eq!(
        (video["width"].as_u64(), video["height"].as_u64()),
        (Some(1280), Some(720)),
        "{figures:#}"
    );
    assert!(
        video["codec"].as_str().unwrap().starts_with("avc1."),
        "{figures:#}"
    );
    let fps = f64_of(&video["fps"]);
    assert!((fps - 30.0).abs() <= 1.0, "fps {fps}, published 30: {figures:#}");
    let kbps = f64_of(&video["bitrate_kbps"]);
    assert!(
        (kbps - published_kbps).abs() <= published_kbps * 0.1,
        "bitrate {kbps} kbit/s; ffprobe measures {published_kbps:.1} kbit/s in the published file"
    );
    let keyframes = f64_of(&video["keyframe_interval_sec"]);
    assert!(
        (keyframes - 2.0).abs() < 0.05,
        "keyframe interval {keyframes} s, published 2 s"
    );
    let audio = &figures["audio"];
    assert_eq!(audio["codec"], "mp4a.40.2", "{figures:#}");
    assert_eq!(
        (audio["sample_rate"].as_u64(), audio["channels"].as_u64()),
        (Some(48000), Some(2))
    );
    let audio_kbps = f64_of(&audio["bitrate_kbps"]);
    assert!(
        (100.0..160.0).contains(&audio_kbps),
        "audio {audio_kbps} kbit/s, published 128"
    );
    let publisher = &figures["publisher"];
    assert!(
        publisher["address"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{publisher}"
    );
    assert!(
        publisher["encoder"].as_str().unwrap().starts_with("Lavf"),
        "{publisher}"
    );
    assert!(
        publisher["connected_at"].as_i64().unwrap() >= live["created_at"].as_i64().unwrap(),
        "{publisher}"
    );
    // Several seconds of 3 Mbit/s came in.
    assert!(figures["bytes_in"].as_u64().unwrap() > 2_000_000, "{figures:#}");
    assert_eq!(figures["dropped_frames"], 0);

    // Each output's own figures.
    let outputs = live["outputs"].as_array().unwrap();
    let of_type = |t: &str| outputs.iter().find(|o| o["type"] == t).unwrap().clone();
    let hls = of_type("hls");
    assert!(hls["segments"].as_u64().unwrap() >= 2, "{hls:#}");
    assert!(hls["last_segment_at"].as_i64().is_some(), "{hls:#}");
    // A player polls the playlist: one viewer.
    let playlist = hls["uri"].as_str().unwrap();
    reqwest::blocking::get(playlist)
        .unwrap()
        .error_for_status()
        .unwrap();
    let hls_now = server.get(&format!(
        "/live_streams/{id}/outputs/{}",
        hls["id"].as_str().unwrap()
    ));
    assert_eq!(hls_now.data()["viewers"], 1, "{:#}", hls_now.data());
    let archive = of_type("archive");
    assert!(
        archive["recording_bytes"].as_u64().unwrap() > 1_000_000,
        "{archive:#}"
    );
    let recorded = f64_of(&archive["recording_duration_sec"]);
    assert!(recorded > 3.0, "{archive:#}");

    // Kick: the encoder is disconnected, and the stream goes idle when its timeout runs out.
    server
        .post(&format!("/live_streams/{id}/kick"), json!({}))
        .assert_ok_message();
    // It publishes in a loop: only a disconnect ends it.
    wait_child(&mut ffmpeg, Duration::from_secs(15));
    let after = server.get(&format!("/live_streams/{id}")).data().clone();
    assert_eq!(after["status"], "active", "the idle timeout runs after a kick");
    assert!(
        after.get("live").is_none(),
        "no publisher, no live figures: {after:#}"
    );
    server.wait_status(&id, "idle", Duration::from_secs(20));
    // Nobody left to kick.
    server
        .post(&format!("/live_streams/{id}/kick"), json!({}))
        .assert_error(409, "no publisher");
    server
        .post("/live_streams/0123456789abcdef0123456789abcdef/kick", json!({}))
        .assert_error(404, "not found");
}

/// Prometheus, started by the test on loopback, scraping the server every second.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target_port: u16, token: Option<&str>) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let auth = token.map_or(String::new(), |t| {
            format!("    authorization:\n      credentials: {t}\n")
        });
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: oxcast\n{auth}    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n"
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let port = free_port();
        let child = command("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Prometheus {
            child,
            port,
            _dir: dir,
        }
    }

    /// The first sample of an instant PromQL query's answer, once it has one.
    fn query(&self, promql: &str) -> Result<f64, String> {
        // Percent-encoded by hand: every byte but the unreserved ones (RFC 3986 §2.3).
        let encoded: String = promql
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let url = format!("http://127.0.0.1:{}/api/v1/query?query={encoded}", self.port);
        let answer: Value = reqwest::blocking::Client::new()
            .get(url)
            .send()
            .and_then(|r| r.json())
            .map_err(|e| e.to_string())?;
        answer["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| answer.to_string())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `promtool check metrics` on an exposition: what it reports (nothing when all is well).
fn promtool_check(text: &str) -> String {
    use std::io::Write as _;
    let mut child = command("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    format!(
        "{}{}{}",
        if out.status.success() {
            ""
        } else {
            "promtool failed\n"
        },
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn prometheus_scrapes_the_bytes_in_rate_of_a_live_stream() {
    const TOKEN: &str = "scrape-token-0123456789";
    let server = Server::start_with(Options::env(&[("OXCAST__METRICS__TOKEN", TOKEN)]));
    let stream = server.create_stream(json!({"input": {"type": "rtmp"}}));
    let id = stream["id"].as_str().unwrap().to_owned();
    let mut encoder = small_encoder(&publish_url(&stream), 40);
    server.wait_status(&id, "active", LIMIT);

    // Without the token, nothing; with it, the exposition, which promtool finds nothing wrong with.
    let metrics = server.url("/metrics");
    let refused = reqwest::blocking::get(&metrics).unwrap();
    assert_eq!(refused.status(), 401, "/metrics without its token");
    let wrong = reqwest::blocking::Client::new()
        .get(&metrics)
        .bearer_auth("scrape-token-0123456780")
        .send()
        .unwrap();
    assert_eq!(wrong.status(), 401, "/metrics with another token");
    let scrape = || {
        reqwest::blocking::Client::new()
            .get(&metrics)
            .bearer_auth(TOKEN)
            .send()
            .unwrap()
    };
    let text = wait_until("the stream's series in /metrics", LIMIT, POLL, || {
        let res = scrape();
        assert_eq!(res.status(), 200);
        let text = res.text().unwrap();
        let wanted = [
            format!("oxcast_stream_bytes_in_total{{stream_id=\"{id}\"}}"),
            format!("oxcast_hls_segments_total{{stream_id=\"{id}\"}}"),
            "oxcast_streams{status=\"active\"} 1".to_owned(),
            "oxcast_rtmp_connections{state=\"publishing\"} 1".to_owned(),
            "oxcast_hls_segment_listing_seconds_bucket".to_owned(),
        ];
        match wanted.iter().find(|w| !text.contains(w.as_str())) {
            None => Ok(text),
            Some(missing) => Err(format!("no {missing} in\n{text}")),
        }
    });
    assert_eq!(promtool_check(&text), "", "promtool check metrics on\n{text}");

    let prometheus = Prometheus::start(server.http_port, Some(TOKEN));
    let query = format!("rate(oxcast_stream_bytes_in_total{{stream_id=\"{id}\"}}[5s])");
    // Once five seconds of scrapes are in, the rate is what the API measures of the same input
    // (media bitrates; the bytes in add RTMP framing), within what two windows over a bursty
    // live encode allow.
    wait_until(
        "Prometheus's bytes-in rate to match the API's bitrates",
        LIMIT,
        POLL,
        || {
            let rate = prometheus.query(&query)?;
            let live = server.get(&format!("/live_streams/{id}")).data()["live"].clone();
            let kbps = |track: &str| live[track]["bitrate_kbps"].as_f64().unwrap_or(0.0);
            let media = (kbps("video") + kbps("audio")) * 125.0;
            if rate > media * 0.8 && rate < media * 1.25 {
                Ok(())
            } else {
                Err(format!(
                    "Prometheus: {rate:.0} B/s in; the API: {media:.0} B/s of media"
                ))
            }
        },
    );
    let up = prometheus.query("up{job=\"oxcast\"}").unwrap();
    assert_eq!(up, 1.0, "Prometheus's scrape of /metrics");
    let _ = encoder.kill();
    let _ = encoder.wait();
}
