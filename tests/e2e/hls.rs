//! Live HLS from a real encoder: ffmpeg publishes to `input.uri`, players read the `default hls`
//! output's `uri`. Checked with ffprobe/ffmpeg and, for the TS itself, the `mpeg2ts` crate.

use std::time::Duration;

use serde_json::json;

use crate::support::hls::{
    check_playlist_and_segments, fetch_playlist, hls_url, wait_ended, wait_playlist, wait_segments,
};
use crate::support::probe::ffprobe;
use crate::support::publisher::{encoder, publish_url, small_encoder, wait_child};
use crate::support::tools::command;
use crate::support::{Options, Server, wait_until};

const LIMIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(200);

/// `codec,width,height` of each stream the playlist carries.
fn probe_streams(url: &str) -> String {
    ffprobe(
        &[
            "-show_entries",
            "stream=codec_name,width,height",
            "-of",
            "csv=p=0",
        ],
        url,
    )
}

/// Decodes the whole (ended) playlist; returns ffmpeg's stderr (empty when all is well) and the
/// number of video frames decoded.
fn decode(url: &str) -> (String, u64) {
    let out = command("ffmpeg")
        .args([
            "-v", "error", "-nostdin", "-i", url, "-map", "0:v:0", "-f", "null", "-",
        ])
        .output()
        .unwrap();
    let errors = String::from_utf8_lossy(&out.stderr).into_owned();
    let frames = command("ffprobe")
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
    let ended = wait_ended(&url, LIMIT);
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
    let taken = wait_playlist(&url, "a discontinuity where the takeover starts", LIMIT, |l| {
        l.segments.iter().any(|s| s.2)
    });
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
    // The ended playlist is served until the stream is deleted.
    wait_ended(&url, LIMIT);
    server.delete(&format!("/live_streams/{id}")).assert_ok_message();
    assert!(
        fetch_playlist(&url).is_none(),
        "a deleted stream's playlist is gone"
    );
}

#[test]
fn an_ended_playlist_is_served_for_keep_after_end_sec_then_removed() {
    let server = Server::start_with(Options::env(&[("OXCAST__HLS__KEEP_AFTER_END_SEC", "3")]));
    let s = server.create_stream(json!({"input": {"type": "rtmp"}, "idle_timeout_sec": 1}));
    let id = s["id"].as_str().unwrap();
    let url = hls_url(&s);
    let mut ffmpeg = small_encoder(&publish_url(&s), 4);
    let (ok, err) = wait_child(&mut ffmpeg, LIMIT);
    assert!(ok, "{err}");
    server.wait_status(id, "idle", LIMIT);
    let ended = wait_ended(&url, LIMIT);
    let base = url.rsplit_once('/').unwrap().0;
    let segment = format!("{base}/{}", ended.segments[0].1);
    assert_eq!(reqwest::blocking::get(&segment).unwrap().status(), 200);
    // Then both go: 404, as for a stream that never published.
    wait_until("the ended playlist to be removed", LIMIT, POLL, || {
        fetch_playlist(&url).map_or(Ok(()), Err)
    });
    assert_eq!(reqwest::blocking::get(&segment).unwrap().status(), 404);
}
