//! The RTMP ingest with a real encoder (ffmpeg): publishing activates a stream, a bad key or a
//! silent client is turned away without affecting anything else, a second encoder takes over.

use std::io::Read;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Options, Server};

const LIMIT: Duration = Duration::from_secs(30);

fn require_ffmpeg() {
    let found = Command::new("ffmpeg")
        .arg("-version")
        .stdout(Stdio::null())
        .status();
    assert!(
        found.is_ok_and(|s| s.success()),
        "ffmpeg is not installed: `apt-get install ffmpeg` (scripts/test installs it)"
    );
}

/// ffmpeg encoding a small synthetic H.264+AAC stream in real time to `url` for `seconds`.
pub fn ffmpeg_publish(url: &str, seconds: u32) -> Child {
    require_ffmpeg();
    Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000"])
        .args(["-t", &seconds.to_string(), "-map", "0:v", "-map", "1:a"])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-tune",
            "zerolatency",
            "-g",
            "30",
            "-pix_fmt",
            "yuv420p",
        ])
        .args(["-c:a", "aac", "-b:a", "64k", "-f", "flv", url])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for a child to exit; returns whether it succeeded and its stderr.
pub fn wait_child(child: &mut Child, limit: Duration) -> (bool, String) {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            return (status.success(), err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("child did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn publish_url(stream: &Value) -> String {
    let input = &stream["input"];
    format!(
        "{}/{}",
        input["uri"].as_str().unwrap(),
        input["stream_key"].as_str().unwrap()
    )
}

#[test]
fn publishing_activates_the_stream_and_leaving_lets_it_go_idle() {
    let server = Server::start();
    let s = server.create_stream(json!({"input": {"type": "rtmp"}, "idle_timeout_sec": 2}));
    let id = s["id"].as_str().unwrap();
    let mut encoder = ffmpeg_publish(&publish_url(&s), 3);
    server.wait_status(id, "active", LIMIT);
    let (ok, err) = wait_child(&mut encoder, LIMIT);
    assert!(ok, "ffmpeg failed: {err}");
    server.wait_status(id, "idle", LIMIT);
    let log = server.log();
    assert!(
        log.contains("publishing") && log.contains("idle timeout"),
        "{log}"
    );
}

#[test]
fn an_unknown_key_is_refused_and_the_encoder_is_told_why() {
    let server = Server::start();
    let s = server.create_stream(json!({"input": {"type": "rtmp"}}));
    let url = format!("{}/{}", s["input"]["uri"].as_str().unwrap(), "not-the-key");
    let (ok, err) = wait_child(&mut ffmpeg_publish(&url, 2), LIMIT);
    assert!(!ok, "ffmpeg must fail on a refused publish");
    assert!(
        err.contains("unknown stream key"),
        "ffmpeg shows our reason: {err}"
    );
    assert!(
        server.log().contains("publish refused: unknown stream key"),
        "{}",
        server.log()
    );
    assert!(
        server.log().contains("127.0.0.1:"),
        "the peer is logged: {}",
        server.log()
    );
    assert_eq!(server.status(s["id"].as_str().unwrap()), "idle");
    // A wrong application is refused the same way.
    let wrong_app = publish_url(&s).replace("/streams/", "/live/");
    let (ok, _) = wait_child(&mut ffmpeg_publish(&wrong_app, 2), LIMIT);
    assert!(!ok);
    assert!(server.log().contains("unknown application"), "{}", server.log());
}

#[test]
fn a_client_that_says_nothing_is_disconnected() {
    let server = Server::start_with(Options {
        env: vec![("OXCAST__RTMP__HANDSHAKE_TIMEOUT_SEC".into(), "1".into())],
        ..Options::default()
    });
    let mut silent = TcpStream::connect(("127.0.0.1", server.rtmp_port)).unwrap();
    silent.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    assert_eq!(
        silent.read(&mut buf).unwrap(),
        0,
        "the server closes the connection"
    );
    assert!(started.elapsed() < Duration::from_secs(9));
    // Garbage instead of a handshake: closed at once, and the server still serves encoders.
    let mut garbage = TcpStream::connect(("127.0.0.1", server.rtmp_port)).unwrap();
    std::io::Write::write_all(&mut garbage, &[0x47; 4000]).unwrap();
    garbage.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert!(matches!(garbage.read(&mut buf), Ok(0) | Err(_)));
    let s = server.create_stream(json!({"input": {"type": "rtmp"}}));
    let mut encoder = ffmpeg_publish(&publish_url(&s), 2);
    server.wait_status(s["id"].as_str().unwrap(), "active", LIMIT);
    assert!(wait_child(&mut encoder, LIMIT).0);
}

#[test]
fn a_second_encoder_takes_the_stream_over() {
    let server = Server::start();
    let s = server.create_stream(json!({"input": {"type": "rtmp"}, "idle_timeout_sec": 30}));
    let id = s["id"].as_str().unwrap();
    let mut first = ffmpeg_publish(&publish_url(&s), 60);
    server.wait_status(id, "active", LIMIT);
    std::thread::sleep(Duration::from_secs(1));
    let mut second = ffmpeg_publish(&publish_url(&s), 3);
    // The first encoder loses its connection; the second publishes to the end.
    let (first_ok, _) = wait_child(&mut first, LIMIT);
    assert!(!first_ok, "the replaced encoder's connection is closed");
    let (second_ok, err) = wait_child(&mut second, LIMIT);
    assert!(second_ok, "{err}");
    assert_eq!(server.status(id), "active");
    assert!(
        server.log().contains("new publisher took over"),
        "{}",
        server.log()
    );
}
