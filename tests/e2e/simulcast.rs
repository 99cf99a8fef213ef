//! Simulcast: a live stream relayed to other RTMP servers (nginx-rtmp here, recording what it is
//! sent), checked against what the encoder published, while the API reports each relay's state
//! and the stream's other outputs carry on whatever a destination does.
//!
//! A simulcast output in API responses carries `status` (`idle`, `connecting`, `live`,
//! `retrying`), `last_error` (omitted when there is none), `connected_at` (ms), `bytes_sent` and
//! `dropped_frames`.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use oxcast_rtmp::{ServerConfig, ServerEvent, ServerSession};
use serde_json::{Value, json};

use crate::support::destination::{BlackHole, Destination};
use crate::support::hls::{fetch_playlist, hls_url};
use crate::support::probe::{count_frames, ffprobe};
use crate::support::publisher::{encode_flv, encoder, encoder_with_copy, publish_url, wait_child};
use crate::support::tools::command;
use crate::support::{Options, Server, wait_until};

/// Bound on every wait; the tests poll every [`POLL`].
const LIMIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(200);
/// How soon after it could connect a relay to a working destination must be `live`: generous,
/// a state change and not a measurement.
const LIVE_WITHIN: Duration = Duration::from_secs(6);
/// What a destination may lack against the source: the frames before the first keyframe it was
/// sent, at most one GOP: 2 s of 30 fps video, and 2 s of 48 kHz AAC (1024 samples a frame).
const GOP_VIDEO: u64 = 60;
const GOP_AUDIO: u64 = 94;

const WAITING: [&str; 2] = ["connecting", "retrying"];

fn now_ms() -> u64 {
    u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

/// A server whose relays may reach the loopback destinations these tests start
/// (`simulcast.allow_private_destinations` is off by default), with `env` besides.
fn relaying_server(mut env: Vec<(String, String)>) -> Server {
    env.push((
        "OXCAST__SIMULCAST__ALLOW_PRIVATE_DESTINATIONS".to_owned(),
        "true".to_owned(),
    ));
    Server::start_with(Options {
        env,
        args: Vec::new(),
    })
}

/// Adds a simulcast output to `uri` with `key`; returns its id.
fn relay_to(server: &Server, id: &str, uri: &str, key: &str) -> String {
    add_output(
        server,
        id,
        json!({"type": "simulcast", "uri": uri, "stream_key": key}),
    )
}

/// A new stream relayed to `uri` with `key`, published by a small ffmpeg encode for `seconds`;
/// returns the stream's id, the output's id, and what the API showed meanwhile.
fn publish_relayed<'a>(
    server: &'a Server,
    uri: &str,
    key: &str,
    seconds: u32,
    idle_timeout_sec: u32,
) -> (String, String, Watch<'a>) {
    let s = server.create_stream(json!({"input": {"type": "rtmp"}, "idle_timeout_sec": idle_timeout_sec}));
    let id = s["id"].as_str().unwrap().to_owned();
    let oid = relay_to(server, &id, uri, key);
    let mut ffmpeg = encoder(&publish_url(&s), seconds, "320x240", 2, "va");
    let mut watch = Watch::new(server, &id);
    watch_publish(&mut watch, &mut ffmpeg, |_| {});
    (id, oid, watch)
}

/// Adds a simulcast output; returns its id.
fn add_output(server: &Server, id: &str, body: Value) -> String {
    let reply = server.post(&format!("/live_streams/{id}/outputs"), body.clone());
    let output = reply.data();
    assert_eq!(output["type"], "simulcast", "{output}");
    assert_eq!(output["uri"], body["uri"], "{output}");
    assert_eq!(output["stream_key"], body["stream_key"], "{output}");
    output["id"].as_str().unwrap().to_owned()
}

/// The fields a simulcast output carries, and how they hang together.
fn check_output(output: &Value) {
    let status = output["status"].as_str().unwrap_or_else(|| {
        panic!("a simulcast output carries its status (idle, connecting, live, retrying): {output}")
    });
    assert!(
        ["idle", "connecting", "live", "retrying"].contains(&status),
        "status {status:?}: {output}"
    );
    let object = output.as_object().unwrap();
    if let Some(error) = object.get("last_error") {
        assert!(
            error.as_str().is_some_and(|e| !e.is_empty()),
            "last_error is a message, or omitted: {output}"
        );
    }
    for counter in ["bytes_sent", "dropped_frames"] {
        assert!(output[counter].is_u64(), "{counter}: {output}");
    }
    if let Some(at) = object.get("connected_at") {
        let at = at
            .as_u64()
            .unwrap_or_else(|| panic!("connected_at in ms: {output}"));
        assert!(
            at > 1_700_000_000_000 && at <= now_ms() + 1000,
            "connected_at is a time in ms: {output}"
        );
    }
    if status == "live" {
        assert!(object.contains_key("connected_at"), "{output}");
    }
}

/// A stream's simulcast outputs by id, as `GET /live_streams/{id}` shows them, each checked.
fn simulcast_outputs(server: &Server, id: &str) -> HashMap<String, Value> {
    let stream = server.get(&format!("/live_streams/{id}"));
    let outputs = stream.data()["outputs"].as_array().unwrap();
    outputs
        .iter()
        .filter(|o| o["type"] == "simulcast")
        .map(|o| {
            check_output(o);
            (o["id"].as_str().unwrap().to_owned(), o.clone())
        })
        .collect()
}

/// The simulcast outputs over time, sampled by [`Watch::poll`].
struct Watch<'a> {
    server: &'a Server,
    id: String,
    started: Instant,
    samples: Vec<(Duration, HashMap<String, Value>)>,
}

impl<'a> Watch<'a> {
    /// Starts the clock: times are since now (when the publish started).
    fn new(server: &'a Server, id: &str) -> Self {
        Watch {
            server,
            id: id.to_owned(),
            started: Instant::now(),
            samples: Vec::new(),
        }
    }

    fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Takes a sample; panics when the watch has gone on for longer than [`LIMIT`].
    fn poll(&mut self) -> &HashMap<String, Value> {
        assert!(
            self.elapsed() < LIMIT,
            "still watching after {LIMIT:?}: {}",
            self.history_all()
        );
        let outputs = simulcast_outputs(self.server, &self.id);
        self.samples.push((self.elapsed(), outputs));
        &self.samples.last().unwrap().1
    }

    /// The samples of one output, from `from` on.
    fn of(&self, oid: &str, from: Duration) -> impl Iterator<Item = (Duration, &Value)> {
        let oid = oid.to_owned();
        self.samples
            .iter()
            .filter(move |(at, _)| *at >= from)
            .filter_map(move |(at, outputs)| outputs.get(&oid).map(|o| (*at, o)))
    }

    /// When the output was first seen with `status` at or after `from`.
    fn first(&self, oid: &str, status: &str, from: Duration) -> Option<(Duration, &Value)> {
        self.of(oid, from).find(|(_, o)| o["status"] == status)
    }

    /// One output's states, each change with its time: for failure messages.
    fn history(&self, oid: &str) -> String {
        let mut lines = Vec::new();
        let mut last = None;
        for (at, o) in self.of(oid, Duration::ZERO) {
            let state = (o["status"].clone(), o.get("last_error").cloned());
            if last.as_ref() != Some(&state) {
                lines.push(format!("{:>6.1}s {o}", at.as_secs_f64()));
                last = Some(state);
            }
        }
        format!("output {oid}:\n{}", lines.join("\n"))
    }

    fn history_all(&self) -> String {
        let ids: std::collections::BTreeSet<&String> =
            self.samples.iter().flat_map(|(_, o)| o.keys()).collect();
        ids.iter()
            .map(|oid| self.history(oid))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Once live, the output stayed live on one connection to the end of the watch, sending more
    /// and more, and dropped nothing: a destination that received every frame.
    fn assert_live_throughout(&self, oid: &str) {
        let (from, first) = self
            .first(oid, "live", Duration::ZERO)
            .unwrap_or_else(|| panic!("never live; {}", self.history(oid)));
        let mut bytes = 0;
        for (at, o) in self.of(oid, from) {
            assert_eq!(
                (&o["status"], &o["connected_at"]),
                (&first["status"], &first["connected_at"]),
                "at {at:?}, live on the same connection; {}",
                self.history(oid)
            );
            let sent = o["bytes_sent"].as_u64().unwrap();
            assert!(sent >= bytes, "bytes_sent never goes back: {o}");
            bytes = sent;
            assert_eq!(o["dropped_frames"], 0, "{o}");
        }
        assert!(
            bytes > first["bytes_sent"].as_u64().unwrap(),
            "bytes_sent grows while live; {}",
            self.history(oid)
        );
    }
}

/// Samples `watch` every [`POLL`] until the encoder exits (it must succeed), calling `each` after
/// every sample.
fn watch_publish(watch: &mut Watch<'_>, ffmpeg: &mut Child, mut each: impl FnMut(&mut Watch<'_>)) {
    while ffmpeg.try_wait().unwrap().is_none() {
        watch.poll();
        each(watch);
        std::thread::sleep(POLL);
    }
    let (ok, err) = wait_child(ffmpeg, LIMIT);
    assert!(ok, "the encoder published to the end: {err}");
}

/// Video and audio frames in a set of recordings.
fn frames_in(files: &[PathBuf]) -> (u64, u64) {
    files.iter().fold((0, 0), |(v, a), f| {
        let (video, audio, _) = count_frames(f.to_str().unwrap());
        (v + video, a + audio)
    })
}

/// The destination made one recording, under the stream key it was given, of every published
/// frame from the first keyframe it was sent: never more than the source, at most one GOP fewer.
fn assert_recorded_everything(destination: &Destination, key: &str, source: (u64, u64, f64)) {
    let files = destination.recordings();
    assert_eq!(
        files,
        destination.recordings_of(key),
        "recorded under the key {key:?} only"
    );
    assert_eq!(
        files.len(),
        1,
        "one recording, one connection: {files:?}\n{}",
        destination.log()
    );
    let (video, audio) = frames_in(&files);
    assert!(
        video <= source.0 && video + GOP_VIDEO >= source.0,
        "{key}: {video} video frames recorded of {} published",
        source.0
    );
    assert!(
        audio <= source.1 && audio + GOP_AUDIO >= source.1,
        "{key}: {audio} audio frames recorded of {} published",
        source.1
    );
}

fn wait_outputs_idle(server: &Server, id: &str) {
    wait_until(&format!("stream {id}'s relays to be idle"), LIMIT, POLL, || {
        let outputs = simulcast_outputs(server, id);
        if outputs.values().all(|o| o["status"] == "idle") {
            Ok(())
        } else {
            Err(outputs)
        }
    });
}

/// Total size of some files: a recording that grows while a relay sends to it.
fn total_size(files: &[PathBuf]) -> u64 {
    files
        .iter()
        .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
        .sum()
}

/// (type, pts in seconds) of a recording's first packets.
fn first_packets(file: &Path) -> Vec<(String, f64)> {
    let args = [
        "-show_entries",
        "packet=codec_type,pts_time",
        "-of",
        "csv=p=0",
        "-read_intervals",
        "%+#200",
    ];
    ffprobe(&args, file.to_str().unwrap())
        .lines()
        .filter_map(|l| {
            let (kind, pts) = l.split_once(',')?;
            Some((kind.to_owned(), pts.trim().parse().ok()?))
        })
        .collect()
}

/// `ffprobe`'s flags for a recording's first video packet (`K` for a keyframe).
fn first_video_flags(file: &Path) -> String {
    let args = [
        "-select_streams",
        "v",
        "-show_entries",
        "packet=flags",
        "-of",
        "csv",
        "-read_intervals",
        "%+#1",
    ];
    ffprobe(&args, file.to_str().unwrap()).trim().to_owned()
}

/// Every segment an HLS playlist listed while it was watched.
#[derive(Default)]
struct HlsWatch {
    /// media sequence number → EXTINF
    segments: BTreeMap<u64, f64>,
    sequence: u64,
    discontinuities: Vec<String>,
    ended: bool,
}

impl HlsWatch {
    fn poll(&mut self, url: &str) {
        let Some(listing) = fetch_playlist(url) else {
            return;
        };
        assert!(
            listing.sequence >= self.sequence,
            "EXT-X-MEDIA-SEQUENCE went back from {}: {}",
            self.sequence,
            listing.text
        );
        self.sequence = listing.sequence;
        for (n, (duration, _, discontinuity)) in (listing.sequence..).zip(&listing.segments) {
            if *discontinuity {
                self.discontinuities.push(listing.text.clone());
            }
            let known = *self.segments.entry(n).or_insert(*duration);
            assert!(
                (known - duration).abs() < 1e-6,
                "segment {n} changed duration: {}",
                listing.text
            );
        }
        self.ended = listing.ended;
    }

    /// The playlist ran without a break: every media sequence number from the first on, no
    /// discontinuity, and as much media as was published (a stall or a skip would show as less).
    fn assert_no_gap(&self, published_sec: f64) {
        let (first, last) = (
            *self.segments.keys().next().expect("segments were listed"),
            *self.segments.keys().last().unwrap(),
        );
        assert_eq!(
            usize::try_from(last - first + 1).unwrap(),
            self.segments.len(),
            "media sequence numbers without a hole: {:?}",
            self.segments.keys().collect::<Vec<_>>()
        );
        assert!(
            self.discontinuities.is_empty(),
            "no EXT-X-DISCONTINUITY: {}",
            self.discontinuities[0]
        );
        let listed: f64 = self.segments.values().sum();
        assert!(
            (listed - published_sec).abs() <= 0.5,
            "{listed:.3} s of segments for {published_sec:.3} s published"
        );
    }
}

#[test]
fn two_destinations_receive_every_frame() {
    let mut a = Destination::start();
    let mut b = Destination::start();
    let server = relaying_server(Vec::new());
    let s = server.create_stream(json!({"input": {"type": "rtmp"}, "idle_timeout_sec": 2}));
    let id = s["id"].as_str().unwrap();
    let oa = relay_to(&server, id, &a.url(), "a");
    // The other form: the key is the uri's last path segment.
    let ob = add_output(
        &server,
        id,
        json!({"type": "simulcast", "uri": format!("{}/b", b.url())}),
    );
    for (oid, o) in simulcast_outputs(&server, id) {
        assert_eq!(o["status"], "idle", "{oid} before anything is published: {o}");
        assert!(o.get("last_error").is_none(), "{o}");
    }

    let work = tempfile::tempdir().unwrap();
    let copy = work.path().join("published.flv");
    let mut ffmpeg = encoder_with_copy(&publish_url(&s), 20, "640x360", 2, &copy);
    let mut watch = Watch::new(&server, id);
    let mut listed = false;
    watch_publish(&mut watch, &mut ffmpeg, |w| {
        let now = w.samples.last().unwrap().1.clone();
        if !listed && [&oa, &ob].iter().all(|o| now[o.as_str()]["status"] == "live") {
            // The outputs' own routes show the same.
            let list = server.get(&format!("/live_streams/{id}/outputs"));
            let simulcast: Vec<&Value> = list
                .data()
                .as_array()
                .unwrap()
                .iter()
                .filter(|o| o["type"] == "simulcast")
                .collect();
            assert_eq!(simulcast.len(), 2, "{}", list.body);
            for o in simulcast {
                check_output(o);
                assert_eq!(o["status"], "live", "{o}");
            }
            let one = server.get(&format!("/live_streams/{id}/outputs/{oa}"));
            check_output(one.data());
            assert_eq!(one.data()["status"], "live", "{}", one.body);
            listed = true;
        }
    });
    assert!(listed, "both outputs went live; {}", watch.history_all());
    for oid in [&oa, &ob] {
        watch.assert_live_throughout(oid);
    }
    server.wait_status(id, "idle", LIMIT);
    wait_outputs_idle(&server, id);
    a.stop();
    b.stop();

    let source = count_frames(copy.to_str().unwrap());
    assert!(source.0 >= 590 && source.1 >= 900, "the source: {source:?}");
    assert_recorded_everything(&a, "a", source);
    assert_recorded_everything(&b, "b", source);
}

#[test]
fn a_destination_that_drops_comes_back_and_the_others_see_no_gap() {
    let mut a = Destination::start();
    let mut b = Destination::start();
    let server = relaying_server(Vec::new());
    let s = server.create_stream(json!({"input": {"type": "rtmp"}, "idle_timeout_sec": 2}));
    let id = s["id"].as_str().unwrap();
    let url = hls_url(&s);
    let oa = relay_to(&server, id, &a.url(), "a");
    let ob = relay_to(&server, id, &b.url(), "b");

    let work = tempfile::tempdir().unwrap();
    let copy = work.path().join("published.flv");
    let mut ffmpeg = encoder_with_copy(&publish_url(&s), 35, "640x360", 2, &copy);
    let mut watch = Watch::new(&server, id);
    let mut hls = HlsWatch::default();
    // When A went down (stopped) and came back (restarted), on the watch's clock.
    let mut down: Option<Duration> = None;
    let mut up: Option<Duration> = None;
    let mut before_outage = (0, 0);
    watch_publish(&mut watch, &mut ffmpeg, |w| {
        hls.poll(&url);
        let t = w.elapsed();
        if down.is_none() && t >= Duration::from_secs(8) {
            assert!(
                w.first(&oa, "live", Duration::ZERO).is_some(),
                "A is live before its outage; {}",
                w.history(&oa)
            );
            a.stop();
            down = Some(w.elapsed());
            before_outage = frames_in(&a.recordings_of("a"));
        }
        if let Some(at) = down
            && up.is_none()
            && w.elapsed() >= at + Duration::from_secs(10)
        {
            a.restart();
            up = Some(w.elapsed());
        }
    });
    let (down, up) = (down.unwrap(), up.expect("A was restarted during the publish"));

    // A: retrying with the reason while it was down, live again (a new connection) after.
    let (_, first_live) = watch.first(&oa, "live", Duration::ZERO).unwrap();
    let retrying = watch
        .of(&oa, down)
        .take_while(|(at, _)| *at <= up)
        .find(|(_, o)| o["status"] == "retrying");
    let (_, retrying) = retrying.unwrap_or_else(|| panic!("A retrying while down; {}", watch.history(&oa)));
    assert!(
        retrying.get("last_error").is_some(),
        "retrying says why: {retrying}"
    );
    let (_, again) = watch
        .first(&oa, "live", up)
        .unwrap_or_else(|| panic!("A live again after it came back; {}", watch.history(&oa)));
    assert!(
        again["connected_at"].as_u64() > first_live["connected_at"].as_u64(),
        "a new connection: {first_live} then {again}"
    );
    // B: never disturbed.
    watch.assert_live_throughout(&ob);

    server.wait_status(id, "idle", LIMIT);
    wait_until("the playlist to end", LIMIT, POLL, || {
        hls.poll(&url);
        if hls.ended { Ok(()) } else { Err(hls.sequence) }
    });
    wait_outputs_idle(&server, id);
    a.stop();
    b.stop();

    let source = count_frames(copy.to_str().unwrap());
    assert!(source.0 >= 1040, "the source: {source:?}");
    assert_recorded_everything(&b, "b", source);
    hls.assert_no_gap(source.2);

    // A holds what it was sent before the outage and after it (in a new file or appended).
    let files = a.recordings();
    assert_eq!(files, a.recordings_of("a"), "recorded under the key a only");
    let total = frames_in(&files);
    assert!(
        before_outage.0 >= GOP_VIDEO,
        "A recorded before its outage: {before_outage:?}"
    );
    assert!(
        total.0 >= before_outage.0 + GOP_VIDEO,
        "A recorded after its outage: {total:?} in all, {before_outage:?} before"
    );
    assert!(
        total.0 <= source.0 && total.1 <= source.1,
        "A recorded no more than was published: {total:?} of {source:?}"
    );
}

#[test]
fn a_destination_that_never_answers_delays_nobody() {
    let hole = BlackHole::start();
    let mut nginx = Destination::start();
    let server = relaying_server(Vec::new());
    // Long enough after the publish for a relay's connect or handshake timeout to show.
    let s = server.create_stream(json!({"input": {"type": "rtmp"}, "idle_timeout_sec": 8}));
    let id = s["id"].as_str().unwrap();
    let o_hole = relay_to(&server, id, &hole.url(), "void");
    let o_nginx = relay_to(&server, id, &nginx.url(), "c");

    let work = tempfile::tempdir().unwrap();
    let copy = work.path().join("published.flv");
    let mut ffmpeg = encoder_with_copy(&publish_url(&s), 15, "640x360", 2, &copy);
    let mut watch = Watch::new(&server, id);
    watch_publish(&mut watch, &mut ffmpeg, |w| {
        if w.first(&o_nginx, "live", Duration::ZERO).is_none() {
            assert!(
                w.elapsed() < LIVE_WITHIN,
                "the nginx output is live within {LIVE_WITHIN:?} of the publish; {}",
                w.history_all()
            );
        }
    });
    watch.assert_live_throughout(&o_nginx);
    // The black hole's output says what is wrong, at the latest before the stream goes idle.
    while watch
        .of(&o_hole, Duration::ZERO)
        .all(|(_, o)| o.get("last_error").is_none())
    {
        let sample = watch.poll().clone();
        if server.status(id) == "idle" {
            break;
        }
        assert!(sample.contains_key(&o_hole));
        std::thread::sleep(POLL);
    }
    for (at, o) in watch.of(&o_hole, Duration::ZERO) {
        assert_ne!(
            o["status"], "live",
            "at {at:?}, a destination that never answers is not live"
        );
    }
    let (_, reported) = watch
        .of(&o_hole, Duration::ZERO)
        .find(|(_, o)| o.get("last_error").is_some())
        .unwrap_or_else(|| {
            panic!(
                "the black hole's output shows a last_error; {}",
                watch.history(&o_hole)
            )
        });
    assert!(
        WAITING.contains(&reported["status"].as_str().unwrap()),
        "connecting or retrying: {reported}"
    );
    assert!(hole.accepted() >= 1, "the relay did try the black hole");

    server.wait_status(id, "idle", LIMIT);
    wait_outputs_idle(&server, id);
    nginx.stop();
    let source = count_frames(copy.to_str().unwrap());
    assert!(source.0 >= 440, "the source: {source:?}");
    assert_recorded_everything(&nginx, "c", source);
}

#[test]
fn rtmps_reaches_a_tls_destination() {
    let mut nginx = Destination::start_tls();
    // The setting `simulcast.ca_file`: a PEM file of certificates the relay trusts for `rtmps://`
    // destinations, besides the system's roots.
    let ca = nginx.ca_file().display().to_string();
    let server = relaying_server(vec![("OXCAST__SIMULCAST__CA_FILE".to_owned(), ca)]);
    let s = server.create_stream(json!({"input": {"type": "rtmp"}, "idle_timeout_sec": 2}));
    let id = s["id"].as_str().unwrap();
    let oid = relay_to(&server, id, &nginx.tls_url(), "s");
    let work = tempfile::tempdir().unwrap();
    let copy = work.path().join("published.flv");
    let mut ffmpeg = encoder_with_copy(&publish_url(&s), 10, "640x360", 2, &copy);
    let mut watch = Watch::new(&server, id);
    watch_publish(&mut watch, &mut ffmpeg, |_| {});
    watch.assert_live_throughout(&oid);
    server.wait_status(id, "idle", LIMIT);
    wait_outputs_idle(&server, id);

    // Without that CA the certificate is not trusted: the relay does not publish, and says why.
    let untrusting = relaying_server(Vec::new());
    let (id, refused, watch) = publish_relayed(&untrusting, &nginx.tls_url(), "untrusted", 8, 4);
    for (at, o) in watch.of(&refused, Duration::ZERO) {
        assert_ne!(o["status"], "live", "at {at:?}: an untrusted certificate");
    }
    assert!(
        watch
            .of(&refused, Duration::ZERO)
            .any(|(_, o)| o.get("last_error").is_some()),
        "an untrusted certificate shows as last_error; {}",
        watch.history(&refused)
    );
    untrusting.wait_status(&id, "idle", LIMIT);

    nginx.stop();
    assert!(nginx.recordings_of("untrusted").is_empty());
    let source = count_frames(copy.to_str().unwrap());
    assert!(source.0 >= 290, "the source: {source:?}");
    assert_recorded_everything(&nginx, "s", source);
}

#[test]
fn simulcast_outputs_can_be_added_and_deleted_while_live() {
    let mut a = Destination::start();
    let mut b = Destination::start();
    let server = relaying_server(Vec::new());
    let s = server.create_stream(json!({"input": {"type": "rtmp"}, "idle_timeout_sec": 2}));
    let id = s["id"].as_str().unwrap();
    let ob = relay_to(&server, id, &b.url(), "b");

    let work = tempfile::tempdir().unwrap();
    let copy = work.path().join("published.flv");
    let mut ffmpeg = encoder_with_copy(&publish_url(&s), 30, "640x360", 2, &copy);
    let mut watch = Watch::new(&server, id);
    let mut oa: Option<(String, Duration)> = None;
    let mut deleted = false;
    while ffmpeg.try_wait().unwrap().is_none() {
        watch.poll();
        let t = watch.elapsed();
        if oa.is_none() && t >= Duration::from_secs(5) {
            assert_eq!(server.status(id), "active");
            let oid = relay_to(&server, id, &a.url(), "a");
            oa = Some((oid, watch.elapsed()));
        }
        if let Some((oid, added)) = &oa
            && !deleted
        {
            let live = watch.first(oid, "live", *added).is_some();
            assert!(
                live || t < *added + LIVE_WITHIN,
                "an output added while live is live within {LIVE_WITHIN:?}; {}",
                watch.history(oid)
            );
            if live && t >= Duration::from_secs(15) {
                let growing = total_size(&a.recordings_of("a"));
                assert!(growing > 0, "A recorded while its output was live");
                server
                    .delete(&format!("/live_streams/{id}/outputs/{oid}"))
                    .assert_ok_message();
                server
                    .get(&format!("/live_streams/{id}/outputs/{oid}"))
                    .assert_error(404, "live stream output not found");
                assert!(!watch.poll().contains_key(oid), "deleted outputs are not listed");
                // Deleted takes effect at once: A's recording stops growing while the publish goes on.
                let mut size = total_size(&a.recordings_of("a"));
                let every = Duration::from_secs(3);
                std::thread::sleep(every);
                wait_until("A's recording to stop growing", LIMIT, every, || {
                    let before = std::mem::replace(&mut size, total_size(&a.recordings_of("a")));
                    if size == before { Ok(()) } else { Err(size) }
                });
                assert!(
                    ffmpeg.try_wait().unwrap().is_none(),
                    "A's recording stopped growing before the publish ended, not with it"
                );
                deleted = true;
            }
        }
        std::thread::sleep(POLL);
    }
    let (ok, err) = wait_child(&mut ffmpeg, LIMIT);
    assert!(ok, "{err}");
    assert!(
        deleted,
        "A was added, went live and was deleted during the publish"
    );
    watch.assert_live_throughout(&ob);
    server.wait_status(id, "idle", LIMIT);
    wait_outputs_idle(&server, id);
    a.stop();
    b.stop();

    let source = count_frames(copy.to_str().unwrap());
    assert!(source.0 >= 890, "the source: {source:?}");
    assert_recorded_everything(&b, "b", source);

    // A started on a keyframe. nginx-rtmp records video only from a keyframe whatever it is
    // sent, so the first video packet's flag alone cannot tell; but it records audio at once, so
    // a relay that started mid-GOP shows as audio ahead of the first video frame.
    let files = a.recordings();
    assert_eq!(files, a.recordings_of("a"), "recorded under the key a only");
    assert_eq!(files.len(), 1, "{files:?}");
    let flags = first_video_flags(&files[0]);
    assert!(flags.starts_with("packet,K"), "first video packet: {flags:?}");
    let packets = first_packets(&files[0]);
    let first = |kind: &str| {
        packets
            .iter()
            .find(|(k, _)| k == kind)
            .map(|(_, pts)| *pts)
            .unwrap_or_else(|| panic!("no {kind} in {packets:?}"))
    };
    assert!(
        first("audio") >= first("video") - 0.5,
        "audio starts with the keyframe, not ahead of it: {packets:?}"
    );
    let (video, _) = frames_in(&files);
    assert!(
        video >= GOP_VIDEO && video < source.0,
        "A has part of the stream: {video} of {}",
        source.0
    );
}

/// A relay reaches only public addresses unless `simulcast.allow_private_destinations` says
/// otherwise: an admin-credential holder cannot make the server connect to its own ports or its
/// network, and `last_error` says why nothing is relayed. With the setting on, the same
/// destination is relayed to.
#[test]
fn a_destination_on_a_private_address_is_refused_by_default() {
    let mut nginx = Destination::start();
    let strict = Server::start();
    let (id, refused, watch) = publish_relayed(&strict, &nginx.url(), "private", 6, 2);
    for (at, o) in watch.of(&refused, Duration::ZERO) {
        assert_ne!(o["status"], "live", "at {at:?}: {}", watch.history(&refused));
    }
    let said = watch
        .of(&refused, Duration::ZERO)
        .find_map(|(_, o)| o["last_error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| {
            panic!(
                "a refused destination has a last_error; {}",
                watch.history(&refused)
            )
        });
    assert!(
        said.contains("127.0.0.1")
            && said.contains("loopback")
            && said.contains("simulcast.allow_private_destinations"),
        "{said}"
    );
    strict.wait_status(&id, "idle", LIMIT);
    assert!(
        nginx.recordings_of("private").is_empty(),
        "nothing reached the destination"
    );

    let allowing = relaying_server(Vec::new());
    let (id, oid, watch) = publish_relayed(&allowing, &nginx.url(), "allowed", 6, 2);
    assert!(
        watch.first(&oid, "live", Duration::ZERO).is_some(),
        "allowed, the relay goes live; {}",
        watch.history(&oid)
    );
    allowing.wait_status(&id, "idle", LIMIT);
    nginx.stop();
    assert!(!nginx.recordings_of("allowed").is_empty());
}

/// What a [`Witness`] saw of one connection.
#[derive(Debug, Default, Clone)]
struct Seen {
    /// The key of the publish it accepted.
    published: Option<String>,
    /// Audio and video messages.
    media: u64,
    /// The key the publisher unpublished (`FCUnpublish`/`deleteStream`) before the connection ended.
    unpublished: Option<String>,
    /// How the connection ended, once it has.
    ended: Option<String>,
}

/// An RTMP destination of the test's own: `oxcast_rtmp::ServerSession` over a socket, accepting
/// any connect and publish and noting what each connection was told. Unlike nginx-rtmp (whose
/// notifications and recordings end the same either way) it tells an orderly unpublish apart from
/// a connection that merely closes. It can stop reading, as a congested destination does, so that
/// what a relay sends waits in the relay's own socket.
struct Witness {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    reading: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Witness {
    fn start() -> Witness {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        // A small window (inherited by accepted connections): when this stops reading, a relay's
        // socket is full after its send buffer's worth.
        socket.set_recv_buffer_size(4096).unwrap();
        socket
            .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        socket.listen(4).unwrap();
        let listener: TcpListener = socket.into();
        // Non-blocking, so the thread can see `stop`.
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let reading = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, reading, stop) = (Arc::clone(&seen), Arc::clone(&reading), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((conn, _)) => Witness::serve(conn, &seen, &reading, &stop),
                        Err(_) => std::thread::sleep(Duration::from_millis(50)),
                    }
                }
            })
        };
        Witness {
            port,
            seen,
            reading,
            stop,
            thread: Some(thread),
        }
    }

    /// `rtmp://127.0.0.1:PORT/live`.
    fn url(&self) -> String {
        format!("rtmp://127.0.0.1:{}/live", self.port)
    }

    /// Every connection so far, in order.
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Stops or resumes reading.
    fn read(&self, on: bool) {
        self.reading.store(on, Ordering::Relaxed);
    }

    /// One connection, to its end.
    fn serve(mut conn: TcpStream, seen: &Mutex<Vec<Seen>>, reading: &AtomicBool, stop: &AtomicBool) {
        let index = {
            let mut seen = seen.lock().unwrap();
            seen.push(Seen::default());
            seen.len() - 1
        };
        let note = |f: &mut dyn FnMut(&mut Seen)| f(&mut seen.lock().unwrap()[index]);
        conn.set_nonblocking(false).unwrap();
        conn.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let mut session = ServerSession::new(ServerConfig::default());
        let mut buf = vec![0u8; 64 << 10];
        let ended = loop {
            if stop.load(Ordering::Relaxed) {
                break "the test ended".to_owned();
            }
            if !reading.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            let n = match conn.read(&mut buf) {
                Ok(0) => break "end of stream".to_owned(),
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue;
                }
                Err(e) => break format!("read: {e}"),
            };
            if let Err(e) = session.feed(&buf[..n]) {
                break format!("session: {e}");
            }
            let mut failed = None;
            loop {
                let event = match session.poll() {
                    Ok(Some(event)) => event,
                    Ok(None) => break,
                    Err(e) => {
                        failed = Some(format!("session: {e}"));
                        break;
                    }
                };
                match event {
                    ServerEvent::ConnectRequested { .. } => session.accept_connect().unwrap(),
                    ServerEvent::PublishRequested { stream_key, .. } => {
                        session.accept_publish().unwrap();
                        note(&mut |s| s.published = Some(stream_key.clone()));
                    }
                    ServerEvent::Audio { .. } | ServerEvent::Video { .. } => note(&mut |s| s.media += 1),
                    ServerEvent::Unpublished { stream_key } => {
                        note(&mut |s| s.unpublished = Some(stream_key.clone()));
                    }
                    _ => {}
                }
            }
            if let Some(failed) = failed {
                break failed;
            }
            if let Err(e) = conn.write_all(&session.take_outbound()) {
                break format!("write: {e}");
            }
        };
        note(&mut |s| s.ended = Some(ended.clone()));
    }
}

impl Drop for Witness {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The process has exited (a zombie until it is waited for) or is gone.
fn exited(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z'))
    })
}

/// On SIGTERM, a live relay's destination is told the stream ended (`FCUnpublish`, `deleteStream`)
/// before the connection closes, as it is when the publisher stops: a platform ends the broadcast
/// at once rather than waiting for it to time out. Here the destination is slow to take what it
/// is sent at that moment, so the end waits behind the relay's frames, and only a server that
/// waits for its relays gets it there.
#[test]
fn a_destination_is_told_the_stream_ended_when_the_server_stops() {
    let witness = Witness::start();
    let mut server = relaying_server(Vec::new());
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("source.flv");
    encode_flv(&source, 4, "320x240", 2, "va");
    let s = server.create_stream(json!({"input": {"type": "rtmp"}}));
    let id = s["id"].as_str().unwrap();
    let oid = relay_to(&server, id, &witness.url(), "witnessed");
    // Ten times real time, looped: soon after the destination stops reading, the relay has more
    // to send than its socket holds.
    let mut ffmpeg = command("ffmpeg")
        .args([
            "-v",
            "error",
            "-nostdin",
            "-readrate",
            "10",
            "-stream_loop",
            "-1",
            "-i",
        ])
        .arg(&source)
        .args(["-c", "copy", "-f", "flv", &publish_url(&s)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut watch = Watch::new(&server, id);
    while !(watch.poll()[&oid]["status"] == "live" && witness.seen().first().is_some_and(|c| c.media > 100)) {
        std::thread::sleep(POLL);
    }

    // The destination stops reading; once the relay's socket is full, bytes_sent stands still.
    witness.read(false);
    let (mut still, mut last) = (0, None);
    while still < 5 {
        let o = watch.poll()[&oid].clone();
        assert_eq!(o["status"], "live", "{}", watch.history(&oid));
        let sent = o["bytes_sent"].as_u64();
        if last == Some(sent) {
            still += 1;
        } else {
            (still, last) = (0, Some(sent));
        }
        std::thread::sleep(POLL);
    }

    // SIGTERM. The destination reads again once the server is waiting for its relays, or has
    // exited without doing so.
    server.signal("TERM");
    wait_until(
        "oxcast to wait for its relays, or exit",
        LIMIT,
        Duration::from_millis(20),
        || {
            (server.log().contains("waiting for the relays to unpublish") || exited(server.pid()))
                .then_some(())
                .ok_or("still shutting down")
        },
    );
    witness.read(true);
    let status = server.wait_exit(LIMIT);
    let _ = ffmpeg.kill();
    let _ = ffmpeg.wait();
    assert!(status.success(), "{status:?}: {}", server.log());
    wait_until("the relay's connection to end", LIMIT, POLL, || {
        let seen = witness.seen();
        seen.iter().all(|c| c.ended.is_some()).then_some(()).ok_or(seen)
    });

    let seen = witness.seen();
    assert_eq!(seen.len(), 1, "one connection: {seen:?}");
    assert_eq!(seen[0].published.as_deref(), Some("witnessed"), "{seen:?}");
    assert_eq!(
        seen[0].unpublished.as_deref(),
        Some("witnessed"),
        "the destination is told the stream ended before the connection closes: {seen:?}\n{}",
        server.log()
    );
}
