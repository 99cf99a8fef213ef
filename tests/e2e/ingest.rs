//! The RTMP ingest with a real encoder (ffmpeg): publishing activates a stream, a bad key or a
//! silent client is turned away without affecting anything else, a second encoder takes over.

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::publisher::{publish_url, small_encoder, wait_child};
use crate::support::rtmp_client::{LOCALHOST, Publisher, connect_from, handshake};
use crate::support::{Options, Server};

const LIMIT: Duration = Duration::from_secs(30);

#[test]
fn publishing_activates_the_stream_and_leaving_lets_it_go_idle() {
    let server = Server::start();
    let s = server.create_stream(json!({"input": {"type": "rtmp"}, "idle_timeout_sec": 2}));
    let id = s["id"].as_str().unwrap();
    let mut encoder = small_encoder(&publish_url(&s), 3);
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
    let (ok, err) = wait_child(&mut small_encoder(&url, 2), LIMIT);
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
    let (ok, _) = wait_child(&mut small_encoder(&wrong_app, 2), LIMIT);
    assert!(!ok);
    assert!(server.log().contains("unknown application"), "{}", server.log());
}

#[test]
fn a_client_that_says_nothing_is_disconnected() {
    let server = Server::start_with(Options::env(&[("OXCAST__RTMP__HANDSHAKE_TIMEOUT_SEC", "1")]));
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
    let mut encoder = small_encoder(&publish_url(&s), 2);
    server.wait_status(s["id"].as_str().unwrap(), "active", LIMIT);
    assert!(wait_child(&mut encoder, LIMIT).0);
}

#[test]
fn a_second_encoder_takes_the_stream_over() {
    let server = Server::start();
    let s = server.create_stream(json!({"input": {"type": "rtmp"}, "idle_timeout_sec": 30}));
    let id = s["id"].as_str().unwrap();
    let mut first = small_encoder(&publish_url(&s), 60);
    server.wait_status(id, "active", LIMIT);
    std::thread::sleep(Duration::from_secs(1));
    let mut second = small_encoder(&publish_url(&s), 3);
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

/// Connects and completes a bare RTMP handshake (simple scheme), then says nothing more.
fn handshake_only(port: u16) -> TcpStream {
    let mut socket = connect_from(LOCALHOST, port).unwrap();
    handshake(&mut socket).unwrap();
    socket
}

#[test]
fn a_connection_that_sends_no_media_is_closed_after_the_no_media_timeout() {
    let server = Server::start_with(Options::env(&[("OXCAST__RTMP__NO_MEDIA_TIMEOUT_SEC", "1")]));
    let mut idle = handshake_only(server.rtmp_port);
    let started = Instant::now();
    let mut buf = [0u8; 16];
    assert!(
        matches!(idle.read(&mut buf), Ok(0) | Err(_)),
        "the server closes it"
    );
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "after about 1 s, not the read timeout"
    );
    assert!(server.log().contains("no media; closed"), "{}", server.log());
}

#[test]
fn connections_over_the_cap_are_closed_and_the_first_one_is_served() {
    let server = Server::start_with(Options::env(&[("OXCAST__RTMP__MAX_CONNECTIONS", "1")]));
    let mut first = handshake_only(server.rtmp_port);
    let mut second = TcpStream::connect(("127.0.0.1", server.rtmp_port)).unwrap();
    second.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 16];
    assert!(
        matches!(second.read(&mut buf), Ok(0) | Err(_)),
        "the connection over the cap is closed"
    );
    assert!(server.log().contains("too many connections"), "{}", server.log());
    // The first one is still open: the server is waiting for its commands.
    first.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let still_open = first.read(&mut buf);
    assert!(
        matches!(&still_open, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut),
        "{still_open:?}"
    );
}

#[test]
fn an_encoder_that_stops_publishing_but_stays_connected_is_heard() {
    // A trickle of small messages that never adds up to a video frame (a quiet audio-only
    // publisher, then its FCUnpublish/deleteStream) is read all the same: the stream goes idle
    // although the connection stays open. The no-media timeout is out of reach, so only the
    // unpublish can end the session.
    let server = Server::start_with(Options::env(&[("OXCAST__RTMP__NO_MEDIA_TIMEOUT_SEC", "300")]));
    let s = server.create_stream(json!({"input": {"type": "rtmp"}, "idle_timeout_sec": 1}));
    let id = s["id"].as_str().unwrap();
    let mut publisher = Publisher::to_stream(&server, &s);
    server.wait_status(id, "active", LIMIT);
    // AAC-LC 44.1 kHz stereo, then ten 200-byte frames: about 2 KiB in all.
    publisher
        .audio(0, &bytes::Bytes::from_static(&[0xAF, 0x00, 0x12, 0x10]))
        .unwrap();
    for i in 0..10u32 {
        let mut frame = vec![0xAF, 0x01];
        frame.resize(202, 0x21);
        publisher.audio(i * 23, &bytes::Bytes::from(frame)).unwrap();
    }
    publisher.unpublish().unwrap();
    server.wait_status(id, "idle", LIMIT);
    assert!(server.log().contains("unpublished"), "{}", server.log());
    // The connection is still there (the server's answers aside, nothing comes): the server did
    // not need it closed to hear the publisher.
    let socket = publisher.socket();
    socket.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let mut buf = [0u8; 4096];
    let still_open = loop {
        match socket.read(&mut buf) {
            Ok(n) if n > 0 => continue,
            other => break other,
        }
    };
    assert!(
        matches!(&still_open, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut),
        "{still_open:?}"
    );
}
