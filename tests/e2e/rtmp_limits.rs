//! Hostile RTMP peers, with and without a stream key, against the real binary: each is shed while
//! an honest encoder (ffmpeg) keeps publishing and a player keeps getting its segments, and the
//! server's memory stays within its budgets.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;

use crate::support::hls::{fetch_playlist, hls_url, wait_playlist};
use crate::support::publisher::{encode_flv, encoder, publish_url, wait_child};
use crate::support::rtmp_client::{LOCALHOST, Publisher, connect_from, flv_tags, handshake, message};
use crate::support::tools::{command, run};
use crate::support::{Options, Server, wait_until};

const LIMIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);
const OTHER_HOST: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// A `VmRSS`/`VmHWM`-style field of /proc/PID/status, in bytes.
fn memory(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// How far the server's peak memory rose above what it held at `before` (bytes).
fn peak_growth(server: &Server, before: u64) -> u64 {
    memory(server.pid(), "VmHWM").saturating_sub(before)
}

/// An honest encoder on a stream of its own, and a player fetching the newest segment of its
/// playlist every second, for as long as an attack goes on.
struct Honest {
    encoder: Child,
    player: JoinHandle<Vec<String>>,
    stop: Arc<AtomicBool>,
}

impl Honest {
    /// Starts publishing for `seconds` and waits for the first segment.
    fn start(server: &Server, seconds: u32) -> Honest {
        let s = server.create_stream(json!({"name": "honest", "input": {"type": "rtmp"}}));
        let encoder = encoder(&publish_url(&s), seconds, "320x240", 1, "va");
        let url = hls_url(&s);
        wait_playlist(&url, "a first segment", LIMIT, |l| !l.segments.is_empty());
        let stop = Arc::new(AtomicBool::new(false));
        let player = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap();
                let mut fetched: Vec<String> = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let listing = fetch_playlist(&url).expect("the honest stream's playlist is served");
                    let (_, newest, _) = listing.segments.last().unwrap().clone();
                    if fetched.last() != Some(&newest) {
                        let base = url.rsplit_once('/').unwrap().0;
                        let res = client.get(format!("{base}/{newest}")).send().unwrap();
                        assert_eq!(res.status(), 200, "{newest}");
                        assert!(!res.bytes().unwrap().is_empty());
                        fetched.push(newest);
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
                fetched
            })
        };
        Honest {
            encoder,
            player,
            stop,
        }
    }

    /// The encoder published to its end without an error, and the player got at least `segments`
    /// new segments meanwhile.
    fn finish(mut self, segments: usize) {
        let (ok, err) = wait_child(&mut self.encoder, LIMIT * 2);
        self.stop.store(true, Ordering::Relaxed);
        let fetched = self
            .player
            .join()
            .expect("the player got every segment it asked for");
        assert!(ok, "the honest encoder published to the end: {err}");
        assert!(
            fetched.len() >= segments,
            "the player got {} new segments, wanted {segments}: {fetched:?}",
            fetched.len()
        );
    }
}

/// AMF0 that decodes to ~32 bytes of value per byte: a strict array of `len - 5` nulls.
fn null_array(len: usize) -> Vec<u8> {
    let count = u32::try_from(len - 5).unwrap();
    let mut amf = vec![0x0A];
    amf.extend_from_slice(&count.to_be_bytes());
    amf.resize(len, 0x05);
    amf
}

/// A 16 MiB data message (type 18) or command (type 20) of nulls, after a Set Chunk Size that
/// makes it one chunk: what a stranger can send right after the handshake.
fn amf0_bomb(type_id: u8) -> Vec<u8> {
    const LEN: usize = 16 << 20;
    let mut payload = Vec::new();
    if type_id == 20 {
        // "connect", transaction 1, then the array as the command object.
        payload.extend_from_slice(&[0x02, 0, 7]);
        payload.extend_from_slice(b"connect");
        payload.push(0x00);
        payload.extend_from_slice(&1f64.to_be_bytes());
    }
    let rest = LEN - payload.len();
    payload.extend(null_array(rest));
    let mut bytes = message(2, 1, 0, 0, &(LEN as u32).to_be_bytes(), 128);
    bytes.extend(message(3, type_id, 0, 0, &payload, LEN as u32));
    bytes
}

/// Sends `bytes` on a fresh handshaken connection until the server stops taking them.
fn send_unauthenticated(port: u16, bytes: &[u8]) -> std::io::Result<()> {
    let mut socket = connect_from(LOCALHOST, port)?;
    handshake(&mut socket)?;
    std::io::Write::write_all(&mut socket, bytes)
}

#[test]
fn amf0_bombs_from_strangers_and_key_holders_are_shed() {
    let server = Server::start();
    let honest = Honest::start(&server, 20);
    let before = memory(server.pid(), "VmRSS");
    let port = server.rtmp_port;
    let data = Arc::new(amf0_bomb(18));
    let command = Arc::new(amf0_bomb(20));
    let attackers: Vec<_> = (0..16)
        .map(|i| {
            let bomb = Arc::clone(if i % 2 == 0 { &data } else { &command });
            std::thread::spawn(move || send_unauthenticated(port, &bomb))
        })
        .collect();
    for attacker in attackers {
        let sent = attacker.join().unwrap();
        assert!(sent.is_err(), "the server stops taking a bomb before its end");
    }
    // A key holder's data messages are decoded, within a bound of values per message.
    let s = server.create_stream(json!({"input": {"type": "rtmp"}}));
    let mut publisher =
        Publisher::start(LOCALHOST, port, s["input"]["stream_key"].as_str().unwrap()).unwrap();
    let payload = null_array(8 << 20);
    for _ in 0..4 {
        publisher.data(0, &Bytes::from(payload.clone())).unwrap();
    }
    publisher.finish();
    let growth = peak_growth(&server, before);
    eprintln!("AMF0 bombs: peak memory rose by {} KiB", growth >> 10);
    assert!(growth < 64 << 20, "peak memory rose by {} MiB", growth >> 20);
    let log = server.log();
    assert!(log.contains("RTMP protocol error"), "{log}");
    honest.finish(5);
}

#[test]
fn one_address_holding_its_pending_cap_leaves_others_able_to_publish() {
    let server = Server::start_with(Options::env(&[("OXCAST__RTMP__PUBLISH_TIMEOUT_SEC", "30")]));
    let s = server.create_stream(json!({"input": {"type": "rtmp"}}));
    let key = s["input"]["stream_key"].as_str().unwrap();
    // 127.0.0.1 opens far more connections than its cap (64 by default) and never publishes.
    let mut held = Vec::new();
    let mut closed = 0;
    for _ in 0..100 {
        let mut socket = connect_from(LOCALHOST, server.rtmp_port).unwrap();
        if handshake(&mut socket).is_ok() {
            held.push(socket);
        } else {
            closed += 1;
        }
    }
    assert_eq!(held.len(), 64, "the first 64 are served");
    assert_eq!(closed, 36, "the rest are closed at once");
    assert!(
        server.log().contains("rtmp.max_pending_per_ip"),
        "the refusal names the setting: {}",
        server.log()
    );
    // Another address publishes meanwhile.
    let mut publisher = Publisher::start(OTHER_HOST, server.rtmp_port, key).unwrap();
    server.wait_status(s["id"].as_str().unwrap(), "active", LIMIT);
    let sequence = Bytes::from_static(&[0xAF, 0x00, 0x12, 0x10]);
    publisher.audio(0, &sequence).unwrap();
    publisher.finish();
    // A publisher does not count against its address: 127.0.0.1 publishes once a slot is free.
    held.pop();
    let stream = server.create_stream(json!({"input": {"type": "rtmp"}}));
    let mut encoder = encoder(&publish_url(&stream), 3, "320x240", 1, "va");
    server.wait_status(stream["id"].as_str().unwrap(), "active", LIMIT);
    assert!(wait_child(&mut encoder, LIMIT).0);
}

#[test]
fn a_connection_that_talks_but_never_publishes_is_closed_at_its_deadline() {
    let server = Server::start_with(Options::env(&[
        ("OXCAST__RTMP__PUBLISH_TIMEOUT_SEC", "3"),
        ("OXCAST__RTMP__NO_MEDIA_TIMEOUT_SEC", "300"),
    ]));
    let mut socket = connect_from(LOCALHOST, server.rtmp_port).unwrap();
    handshake(&mut socket).unwrap();
    // Progress that used to restart the timers: a connect, then an unknown command every 300 ms.
    let mut connect = vec![0x02, 0, 7];
    connect.extend_from_slice(b"connect");
    connect.push(0x00);
    connect.extend_from_slice(&1f64.to_be_bytes());
    connect.extend_from_slice(&[0x03, 0, 3, b'a', b'p', b'p', 0x02, 0, 7]);
    connect.extend_from_slice(b"streams");
    connect.extend_from_slice(&[0, 0, 9]);
    std::io::Write::write_all(&mut socket, &message(3, 20, 0, 0, &connect, 128)).unwrap();
    let mut chatter = vec![0x02, 0, 4];
    chatter.extend_from_slice(b"noop");
    chatter.push(0x00);
    chatter.extend_from_slice(&2f64.to_be_bytes());
    chatter.push(0x05);
    let chatter = message(3, 20, 0, 0, &chatter, 128);
    let every = Duration::from_millis(300);
    wait_until(
        "the server to close the talking connection",
        LIMIT,
        every,
        || match std::io::Write::write_all(&mut socket, &chatter) {
            Err(e) => Ok(e),
            Ok(()) => Err("it still takes bytes"),
        },
    );
    assert!(
        server
            .log()
            .contains("not publishing within rtmp.publish_timeout_sec"),
        "{}",
        server.log()
    );
}

/// The AVC sequence header and first keyframe of a small ffmpeg encode, as FLV tag bodies.
fn avc_start(dir: &std::path::Path) -> (Bytes, Bytes) {
    let path = dir.join("start.flv");
    encode_flv(&path, 1, "320x240", 1, "v");
    let tags = flv_tags(&path);
    let mut video = tags.iter().filter(|t| t.kind == 9);
    let sequence = video.next().unwrap().body.clone();
    let keyframe = video.next().unwrap().body.clone();
    assert_eq!((sequence[0], sequence[1]), (0x17, 0), "an AVC sequence header");
    assert_eq!((keyframe[0], keyframe[1]), (0x17, 1), "a keyframe");
    (sequence, keyframe)
}

/// An FLV inter frame of `len` bytes: one non-IDR slice NAL unit of filler.
fn inter_frame(len: usize) -> Bytes {
    let mut body = vec![0x27, 1, 0, 0, 0];
    let nal_len = u32::try_from(len - body.len() - 4).unwrap();
    body.extend_from_slice(&nal_len.to_be_bytes());
    body.push(0x41);
    body.resize(len, 0x5A);
    Bytes::from(body)
}

/// A key holder who sends one keyframe and then only 1 MiB inter frames, every one at timestamp
/// 0, for 30 s: before, the segmenter and the recorder held every frame until the stream ended.
#[test]
fn a_key_holder_sending_huge_frames_at_timestamp_zero_is_bounded() {
    let server = Server::start();
    let work = tempfile::tempdir().unwrap();
    let (sequence, keyframe) = avc_start(work.path());
    let honest = Honest::start(&server, 40);
    let s = server.create_stream(json!({"name": "flood", "input": {"type": "rtmp"}}));
    let url = hls_url(&s);
    let before = memory(server.pid(), "VmRSS");
    let mut publisher = Publisher::to_stream(&server, &s);
    publisher.video(0, &sequence).unwrap();
    publisher.video(0, &keyframe).unwrap();
    let frame = inter_frame(1 << 20);
    let started = Instant::now();
    let mut sequences = Vec::new();
    for i in 0..900u32 {
        // 30 frames a second, as a camera would send them.
        let due = started + Duration::from_millis(u64::from(i) * 1000 / 30);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        publisher.video(0, &frame).unwrap();
        if i % 150 == 149 {
            let listing = fetch_playlist(&url).expect("the flooded stream's playlist is served");
            sequences.push(listing.sequence + listing.segments.len() as u64);
        }
    }
    let growth = peak_growth(&server, before);
    eprintln!(
        "1 MiB frames at timestamp 0: peak memory rose by {} KiB",
        growth >> 10
    );
    publisher.finish();
    assert!(growth < 100 << 20, "peak memory rose by {} MiB", growth >> 20);
    // The flooded stream's playlist kept moving: a new segment at least every 5 s.
    assert!(
        sequences.windows(2).all(|w| w[1] > w[0]),
        "the playlist's last segment, every 5 s: {sequences:?}"
    );
    let log = server.log();
    assert!(log.contains("closed without a keyframe"), "{log}");
    honest.finish(12);
}

/// Timestamps that jump hours ahead and back are logged and smoothed over: the playlist keeps
/// segments of the target length, and the stream decodes.
#[test]
fn absurd_timestamps_leave_a_playable_stream() {
    let server = Server::start();
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("source.flv");
    encode_flv(&path, 12, "320x240", 1, "va");
    let s = server.create_stream(json!({"input": {"type": "rtmp"}, "idle_timeout_sec": 2}));
    let id = s["id"].as_str().unwrap();
    let mut publisher = Publisher::to_stream(&server, &s);
    let started = Instant::now();
    for tag in flv_tags(&path) {
        let due = started + Duration::from_millis(u64::from(tag.timestamp));
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        // From 4 s to 8 s the encoder's clock says three hours later.
        let timestamp = match tag.timestamp {
            4000..8000 => tag.timestamp + 3 * 3600 * 1000,
            t => t,
        };
        match tag.kind {
            9 => publisher.video(timestamp, &tag.body).unwrap(),
            8 => publisher.audio(timestamp, &tag.body).unwrap(),
            _ => {}
        }
    }
    let url = hls_url(&s);
    let listing = fetch_playlist(&url).unwrap();
    publisher.finish();
    server.wait_status(id, "idle", LIMIT);
    // Segments of the keyframe interval, give or take one (a rebased keyframe may land a
    // millisecond short of a cut), instead of one three hours long.
    assert!(listing.target <= 3, "{}", listing.text);
    assert!(
        listing.segments.iter().all(|(d, _, _)| *d <= 3.1),
        "{}",
        listing.text
    );
    let log = server.log();
    assert!(log.contains("timestamps jumped"), "{log}");
    run(command("ffmpeg").args([
        "-v",
        "error",
        "-live_start_index",
        "0",
        "-i",
        &url,
        "-f",
        "null",
        "-",
    ]));
}

/// A connection that published with a key is no stranger: it may unpublish and publish again on
/// the same connection after its publish deadline has passed (only its first publish is bound by
/// rtmp.publish_timeout_sec).
#[test]
fn a_publisher_may_publish_again_on_its_connection_after_the_publish_deadline() {
    let server = Server::start_with(Options::env(&[("OXCAST__RTMP__PUBLISH_TIMEOUT_SEC", "2")]));
    let s = server.create_stream(json!({"input": {"type": "rtmp"}, "idle_timeout_sec": 1}));
    let (id, key) = (
        s["id"].as_str().unwrap(),
        s["input"]["stream_key"].as_str().unwrap(),
    );
    let mut publisher = Publisher::start(LOCALHOST, server.rtmp_port, key).unwrap();
    server.wait_status(id, "active", LIMIT);
    std::thread::sleep(Duration::from_secs(3));
    publisher.unpublish().unwrap();
    server.wait_status(id, "idle", LIMIT);
    publisher.publish_again(key).unwrap();
    server.wait_status(id, "active", LIMIT);
    publisher.finish();
}

/// rtmp.partial_messages_budget_bytes holds across connections: with 1 MiB, one key holder's
/// 700 KiB message in progress leaves no room for another's, whose connection is closed, and the
/// first one goes on.
#[test]
fn messages_in_progress_on_all_connections_share_one_budget() {
    let budget = (1 << 20).to_string();
    let server = Server::start_with(Options::env(&[(
        "OXCAST__RTMP__PARTIAL_MESSAGES_BUDGET_BYTES",
        &budget,
    )]));
    let start = |name: &str| {
        let s = server.create_stream(json!({"name": name, "input": {"type": "rtmp"}}));
        Publisher::to_stream(&server, &s)
    };
    // A video message of 700 KiB in 4 KiB chunks (the client's announced chunk size), on the
    // publishing message stream; each connection sends its first half.
    let big = message(6, 9, 1, 0, &inter_frame(700 << 10), 4096);
    let (first_half, second_half) = big.split_at(big.len() / 2);
    let mut first = start("first");
    first.raw(first_half).unwrap();
    let mut second = start("second");
    second.raw(first_half).unwrap();
    let refused = wait_until("the budget refusal in the log", LIMIT, POLL, || {
        let log = server.log();
        if log.contains("server-wide budget for messages in progress") {
            Ok(log)
        } else {
            Err(log)
        }
    });
    assert!(refused.contains("RTMP protocol error"), "{refused}");
    // The second connection is closed; the first finishes its message and publishes on.
    wait_until(
        "the connection over the budget to be closed",
        LIMIT,
        POLL,
        || match second.raw(second_half) {
            Err(e) => Ok(e),
            Ok(()) => Err("it still takes bytes"),
        },
    );
    first.raw(second_half).unwrap();
    first.video(40, &inter_frame(1000)).unwrap();
    first.finish();
}
