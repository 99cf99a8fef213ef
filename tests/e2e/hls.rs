//! Live HLS from a real encoder: ffmpeg publishes to `input.uri`, players read the `default hls`
//! output's `uri`. Checked with ffprobe/ffmpeg and, for the TS itself, the `mpeg2ts` crate.

use std::process::Command;
use std::time::{Duration, Instant};

use mpeg2ts::ts::{ReadTsPacket, TsPacketReader, TsPayload};
use serde_json::{Value, json};

use crate::publisher::{encoder, publish_url, wait_child};
use crate::support::Server;

const LIMIT: Duration = Duration::from_secs(60);

/// The `default hls` output's URL.
pub fn hls_url(stream: &Value) -> String {
    let outputs = stream["outputs"].as_array().unwrap();
    let hls = outputs.iter().find(|o| o["type"] == "hls").unwrap();
    hls["uri"].as_str().unwrap().to_owned()
}

pub struct Listing {
    pub text: String,
    pub target: u64,
    pub sequence: u64,
    /// (duration, URI relative to the playlist, preceded by EXT-X-DISCONTINUITY)
    pub segments: Vec<(f64, String, bool)>,
    pub ended: bool,
}

/// Fetches and parses a media playlist, checking the headers players rely on.
pub fn fetch_playlist(url: &str) -> Option<Listing> {
    let res = reqwest::blocking::get(url).unwrap();
    if res.status() == 404 {
        return None;
    }
    assert_eq!(res.status(), 200);
    let headers = res.headers().clone();
    assert_eq!(headers["content-type"], "application/vnd.apple.mpegurl");
    assert_eq!(headers["access-control-allow-origin"], "*");
    assert!(headers["cache-control"].to_str().unwrap().contains("max-age=1"));
    let text = res.text().unwrap();
    assert!(text.starts_with("#EXTM3U\n"), "{text}");
    let mut listing = Listing {
        text: text.clone(),
        target: 0,
        sequence: 0,
        segments: Vec::new(),
        ended: false,
    };
    let mut duration = None;
    let mut discontinuity = false;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            listing.target = v.parse().unwrap();
        } else if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            listing.sequence = v.parse().unwrap();
        } else if let Some(v) = line.strip_prefix("#EXTINF:") {
            duration = Some(v.trim_end_matches(',').parse::<f64>().unwrap());
        } else if line == "#EXT-X-DISCONTINUITY" {
            discontinuity = true;
        } else if line == "#EXT-X-ENDLIST" {
            listing.ended = true;
        } else if !line.starts_with('#') && !line.is_empty() {
            listing.segments.push((
                duration.take().expect("EXTINF before each URI"),
                line.to_owned(),
                discontinuity,
            ));
            discontinuity = false;
        }
    }
    Some(listing)
}

/// Waits until the playlist lists at least `count` segments.
pub fn wait_segments(url: &str, count: usize, limit: Duration) -> Listing {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(listing) = fetch_playlist(url).filter(|l| l.segments.len() >= count) {
            return listing;
        }
        assert!(
            Instant::now() < deadline,
            "playlist {url} has fewer than {count} segments after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// RFC 8216 rules on one version of the playlist, and every segment fetched and read: PAT and
/// PMT first, then a PES that opens with a keyframe.
pub fn check_playlist_and_segments(url: &str, listing: &Listing) {
    let base = url.rsplit_once('/').unwrap().0;
    for (i, (duration, uri, _)) in listing.segments.iter().enumerate() {
        assert!(
            duration.round() as u64 <= listing.target,
            "EXTINF {duration} over target {}",
            listing.target
        );
        let expected = format!(
            "{}{}.ts",
            uri.rsplit_once('/').unwrap().0.to_owned() + "/",
            listing.sequence + i as u64
        );
        assert_eq!(uri, &expected, "segment URIs follow the media sequence");
        let res = reqwest::blocking::get(format!("{base}/{uri}")).unwrap();
        assert_eq!(res.status(), 200, "listed segment {uri} is fetchable");
        assert_eq!(res.headers()["content-type"], "video/mp2t");
        let data = res.bytes().unwrap();
        check_segment(&data);
    }
}

/// Reads a segment with an independent TS reader.
pub fn check_segment(data: &[u8]) {
    assert_eq!(data.len() % 188, 0);
    let mut reader = TsPacketReader::new(data);
    let first = reader.read_ts_packet().unwrap().unwrap();
    assert!(
        matches!(first.payload, Some(TsPayload::Pat(_))),
        "segment starts with PAT"
    );
    let second = reader.read_ts_packet().unwrap().unwrap();
    let Some(TsPayload::Pmt(pmt)) = second.payload else {
        panic!("then PMT")
    };
    // H.264 in the program: the segment's first PES must be a video keyframe, whatever else it holds.
    let has_video = pmt
        .es_info
        .iter()
        .any(|es| es.stream_type == mpeg2ts::es::StreamType::H264);
    let first_pes = std::iter::from_fn(|| reader.read_ts_packet().unwrap())
        .find(|p| matches!(p.payload, Some(TsPayload::PesStart(_))))
        .expect("a segment holds media");
    let Some(TsPayload::PesStart(pes)) = &first_pes.payload else {
        unreachable!()
    };
    if has_video {
        assert_eq!(pes.header.stream_id.as_u8(), 0xE0, "the first PES is video");
        let random_access = first_pes
            .adaptation_field
            .as_ref()
            .is_some_and(|a| a.random_access_indicator);
        assert!(random_access, "the first video PES is a keyframe");
    }
}

fn probe_streams(url: &str) -> String {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,width,height",
            "-of",
            "csv=p=0",
            url,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ffprobe {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Decodes the whole (ended) playlist; returns ffmpeg's stderr (empty when all is well) and the
/// number of video frames decoded.
fn decode(url: &str) -> (String, u64) {
    let out = Command::new("ffmpeg")
        .args([
            "-v", "error", "-nostdin", "-i", url, "-map", "0:v:0", "-f", "null", "-",
        ])
        .output()
        .unwrap();
    let errors = String::from_utf8_lossy(&out.stderr).into_owned();
    let frames = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-count_frames",
            "-show_entries",
            "stream=nb_read_frames",
        ])
        .args(["-of", "csv=p=0", url])
        .output()
        .unwrap();
    // The HLS demuxer lists streams once per program too: the first number is the stream's count.
    let out = String::from_utf8_lossy(&frames.stdout).into_owned();
    let count = out
        .split(|c: char| !c.is_ascii_digit())
        .find(|w| !w.is_empty())
        .and_then(|w| w.parse().ok());
    let count = count.unwrap_or_else(|| panic!("no frame count from ffprobe: {out:?}"));
    (errors, count)
}

#[test]
fn a_published_stream_plays_as_hls_while_live_and_ends_cleanly() {
    let server = Server::start();
    let s = server.create_stream(json!({"input": {"type": "rtmp"}, "idle_timeout_sec": 2}));
    let id = s["id"].as_str().unwrap();
    let url = hls_url(&s);
    assert!(
        fetch_playlist(&url).is_none(),
        "no playlist before anything is published"
    );
    let mut ffmpeg = encoder(&publish_url(&s), 20, "1280x720", 2, "va");

    let live = wait_segments(&url, 2, LIMIT);
    assert!(!live.ended);
    assert_eq!(live.target, 2);
    for (duration, _, _) in &live.segments {
        assert!(
            (1.9..=2.1).contains(duration),
            "segments of about 2 s: {}",
            live.text
        );
    }
    check_playlist_and_segments(&url, &live);
    let base = url.rsplit_once('/').unwrap().0;
    let first_uri = format!("{base}/{}", live.segments[0].1);
    let first_bytes = reqwest::blocking::get(&first_uri).unwrap().bytes().unwrap();
    let streams = probe_streams(&url);
    assert!(
        streams.contains("h264,1280,720") && streams.contains("aac"),
        "{streams}"
    );

    let (ok, err) = wait_child(&mut ffmpeg, LIMIT);
    assert!(ok, "{err}");
    server.wait_status(id, "idle", LIMIT);
    let ended = wait_until(|| fetch_playlist(&url).filter(|l| l.ended), LIMIT);
    assert!(ended.sequence > live.sequence, "the window slid");
    assert_eq!(ended.segments.len(), 6, "window of 6: {}", ended.text);
    check_playlist_and_segments(&url, &ended);
    let (errors, frames) = decode(&url);
    assert!(errors.is_empty(), "ffmpeg decodes without error: {errors}");
    let listed_seconds: f64 = ended.segments.iter().map(|s| s.0).sum();
    let expected = (listed_seconds * 30.0).round() as u64;
    assert!(
        frames * 100 >= expected * 95,
        "decoded {frames} of {expected} frames in the window"
    );

    // A player that read an older playlist still gets the segments that left the window since
    // (RFC 8216 §6.2.2), byte for byte as they were while listed, ranges included.
    let client = reqwest::blocking::Client::new();
    let retired = client.get(&first_uri).send().unwrap();
    assert_eq!(retired.status(), 200, "retired segment {first_uri}");
    assert_eq!(retired.headers()["content-type"], "video/mp2t");
    assert_eq!(retired.bytes().unwrap(), first_bytes);
    let part = client
        .get(&first_uri)
        .header("Range", "bytes=0-187")
        .send()
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.bytes().unwrap(), first_bytes.slice(..188));

    // Delivery details: HEAD, ranges, unknown names.
    let segment = format!("{base}/{}", ended.segments[0].1);
    let head = client.head(&segment).send().unwrap();
    assert_eq!(head.status(), 200);
    let length: usize = head.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        head.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age=86400")
    );
    let part = client
        .get(&segment)
        .header("Range", "bytes=188-375")
        .send()
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(
        part.headers()["content-range"],
        format!("bytes 188-375/{length}").as_str()
    );
    assert_eq!(part.bytes().unwrap().len(), 188);
    let beyond = client
        .get(&segment)
        .header("Range", format!("bytes={length}-"))
        .send()
        .unwrap();
    assert_eq!(beyond.status(), 416);
    for missing in [
        url.replace(id, &"0".repeat(32)),
        format!("{base}/live_stream_{id}_hls/1.ts"),
        format!("{base}/live_stream_{id}_hls/../../x"),
        url.replace("/local/", "/other/"),
    ] {
        assert_eq!(client.get(&missing).send().unwrap().status(), 404, "{missing}");
    }
}

pub fn wait_until<T>(mut f: impl FnMut() -> Option<T>, limit: Duration) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "condition not met within {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_reconnect_within_the_idle_timeout_continues_one_playlist_with_a_discontinuity() {
    let server = Server::start();
    let s = server.create_stream(json!({"input": {"type": "rtmp"}, "idle_timeout_sec": 15}));
    let url = hls_url(&s);
    let (ok, err) = wait_child(&mut encoder(&publish_url(&s), 5, "320x240", 1, "va"), LIMIT);
    assert!(ok, "{err}");
    let first = wait_segments(&url, 2, LIMIT);
    assert!(!first.ended, "the stream waits for its encoder to come back");
    let (ok, err) = wait_child(&mut encoder(&publish_url(&s), 5, "320x240", 1, "va"), LIMIT);
    assert!(ok, "{err}");
    let both = wait_segments(&url, first.segments.len() + 2, LIMIT);
    let breaks = both.segments.iter().filter(|s| s.2).count();
    assert_eq!(
        breaks, 1,
        "one EXT-X-DISCONTINUITY where the second session starts: {}",
        both.text
    );
    assert!(
        both.sequence <= first.sequence + 1,
        "one playlist, numbering continued: {}",
        both.text
    );
    check_playlist_and_segments(&url, &both);
}

#[test]
fn an_unknown_key_does_not_disturb_a_live_stream_and_a_takeover_keeps_it_playing() {
    let server = Server::start();
    let s = server.create_stream(json!({"input": {"type": "rtmp"}, "idle_timeout_sec": 10}));
    let url = hls_url(&s);
    let mut first = encoder(&publish_url(&s), 30, "320x240", 1, "va");
    let before = wait_segments(&url, 2, LIMIT);
    let wrong = format!("{}/{}", s["input"]["uri"].as_str().unwrap(), "x".repeat(30));
    let (ok, _) = wait_child(&mut encoder(&wrong, 2, "320x240", 1, "va"), LIMIT);
    assert!(!ok, "the wrong key is refused");
    let after = wait_segments(&url, before.segments.len() + 2, LIMIT);
    assert_eq!(after.segments.iter().filter(|s| s.2).count(), 0, "{}", after.text);
    // A second encoder with the right key takes over; the playlist goes on.
    let mut second = encoder(&publish_url(&s), 4, "320x240", 1, "va");
    let (first_ok, _) = wait_child(&mut first, LIMIT);
    assert!(!first_ok, "the first encoder was disconnected");
    assert!(wait_child(&mut second, LIMIT).0);
    let taken = wait_until(
        || fetch_playlist(&url).filter(|l| l.segments.iter().any(|s| s.2)),
        LIMIT,
    );
    check_playlist_and_segments(&url, &taken);
}

#[test]
fn audio_only_and_video_only_streams_carry_only_their_track() {
    let server = Server::start();
    for (tracks, want, unwanted) in [("a", "aac", "h264"), ("v", "h264", "aac")] {
        let s = server.create_stream(json!({"input": {"type": "rtmp"}, "idle_timeout_sec": 30}));
        let url = hls_url(&s);
        let mut ffmpeg = encoder(&publish_url(&s), 12, "320x240", 2, tracks);
        let listing = wait_segments(&url, 3, LIMIT);
        for (duration, _, _) in &listing.segments[..2] {
            assert!((1.9..=2.1).contains(duration), "{tracks}: {}", listing.text);
        }
        check_playlist_and_segments(&url, &listing);
        let streams = probe_streams(&url);
        assert!(
            streams.contains(want) && !streams.contains(unwanted),
            "{tracks}: {streams}"
        );
        let _ = ffmpeg.kill();
        let _ = ffmpeg.wait();
    }
}

#[test]
fn a_keyframe_interval_longer_than_the_target_raises_the_target_duration() {
    let server = Server::start();
    let s = server.create_stream(json!({"input": {"type": "rtmp"}, "idle_timeout_sec": 30}));
    let url = hls_url(&s);
    let mut ffmpeg = encoder(&publish_url(&s), 16, "320x240", 5, "va");
    let listing = wait_segments(&url, 2, LIMIT);
    assert_eq!(listing.target, 5, "{}", listing.text);
    for (duration, _, _) in &listing.segments {
        assert!((4.9..=5.1).contains(duration), "{}", listing.text);
    }
    check_playlist_and_segments(&url, &listing);
    assert!(
        server.log().contains("keyframe interval is too long"),
        "{}",
        server.log()
    );
    let _ = ffmpeg.kill();
    let _ = ffmpeg.wait();
}

#[test]
fn deleting_a_stream_removes_its_playlist() {
    let server = Server::start();
    let s = server.create_stream(json!({"input": {"type": "rtmp"}, "idle_timeout_sec": 1}));
    let id = s["id"].as_str().unwrap();
    let url = hls_url(&s);
    let (ok, err) = wait_child(&mut encoder(&publish_url(&s), 3, "320x240", 1, "va"), LIMIT);
    assert!(ok, "{err}");
    server.wait_status(id, "idle", LIMIT);
    assert!(
        wait_until(|| fetch_playlist(&url).filter(|l| l.ended), LIMIT).ended,
        "the ended playlist is served"
    );
    server.delete(&format!("/live_streams/{id}")).assert_ok_message();
    assert!(
        fetch_playlist(&url).is_none(),
        "a deleted stream's playlist is gone"
    );
}

#[test]
fn an_ended_playlist_is_served_for_keep_after_end_sec_then_removed() {
    let server = Server::start_with(crate::support::Options {
        env: vec![("OXCAST__HLS__KEEP_AFTER_END_SEC".into(), "3".into())],
        ..crate::support::Options::default()
    });
    let s = server.create_stream(json!({"input": {"type": "rtmp"}, "idle_timeout_sec": 1}));
    let id = s["id"].as_str().unwrap();
    let url = hls_url(&s);
    let mut ffmpeg = crate::publisher::small_encoder(&publish_url(&s), 4);
    let (ok, err) = wait_child(&mut ffmpeg, LIMIT);
    assert!(ok, "{err}");
    server.wait_status(id, "idle", LIMIT);
    let ended = wait_until(|| fetch_playlist(&url).filter(|l| l.ended), LIMIT);
    let base = url.rsplit_once('/').unwrap().0;
    let segment = format!("{base}/{}", ended.segments[0].1);
    assert_eq!(reqwest::blocking::get(&segment).unwrap().status(), 200);
    // Then both go: 404, as for a stream that never published.
    wait_until(|| fetch_playlist(&url).is_none().then_some(()), LIMIT);
    assert_eq!(reqwest::blocking::get(&segment).unwrap().status(), 404);
}
