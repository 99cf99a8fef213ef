//! Recordings: every live session becomes an MP4 asset that holds every published frame, plays
//! everywhere (moov before mdat), and survives the server being killed mid-stream.

use std::time::Duration;

use serde_json::json;

use crate::support::hls::{hls_url, wait_segments};
use crate::support::probe::{assert_decodes_cleanly, count_frames, video_size};
use crate::support::publisher::{encoder_with_copy, publish_url, small_encoder, wait_child};
use crate::support::recordings::{download, wait_archives};
use crate::support::{Options, Server};

const LIMIT: Duration = Duration::from_secs(60);

/// The top-level boxes of an MP4 file, in order.
fn top_level_boxes(data: &[u8]) -> Vec<String> {
    let mut boxes = Vec::new();
    let mut at = 0usize;
    while at + 8 <= data.len() {
        let mut size = u64::from(u32::from_be_bytes(data[at..at + 4].try_into().unwrap()));
        let kind = String::from_utf8_lossy(&data[at + 4..at + 8]).into_owned();
        if size == 1 {
            size = u64::from_be_bytes(data[at + 8..at + 16].try_into().unwrap());
        }
        assert!(size >= 8, "box {kind} of size {size}");
        boxes.push(kind);
        at += size as usize;
    }
    assert_eq!(at, data.len(), "boxes cover the file exactly");
    boxes
}

#[test]
fn a_live_session_is_recorded_frame_for_frame_as_a_faststart_mp4() {
    let server = Server::start();
    let s = server.create_stream(json!({"input": {"type": "rtmp"}, "idle_timeout_sec": 2}));
    let id = s["id"].as_str().unwrap();
    let public_id = format!("live_stream_{id}_archive");
    let work = tempfile::tempdir().unwrap();
    let copy = work.path().join("published.flv");
    let mut ffmpeg = encoder_with_copy(&publish_url(&s), 30, "640x360", 2, &copy);
    let (ok, err) = wait_child(&mut ffmpeg, LIMIT);
    assert!(ok, "{err}");
    server.wait_status(id, "idle", LIMIT);

    let archives = wait_archives(&server, id, 1);
    assert_eq!(archives.len(), 1, "{archives:?}");
    let archive = &archives[0];
    assert_eq!(archive["public_id"], public_id.as_str());
    let version = archive["version"].as_i64().unwrap();
    let uri = archive["uri"].as_str().unwrap();
    assert_eq!(
        uri,
        server.url(&format!("/local/video/upload/v{version}/{public_id}.mp4"))
    );
    assert!(archive["bytes"].as_i64().unwrap() > 0);
    assert!(archive["created_at"].as_i64().unwrap() > 1_700_000_000_000);

    let (video, audio, duration) = count_frames(copy.to_str().unwrap());
    assert!(
        video >= 890 && audio > 1000,
        "the source: {video} video, {audio} audio frames"
    );
    let mp4 = work.path().join("recording.mp4");
    let data = download(uri, &mp4);
    assert_eq!(archive["bytes"].as_i64().unwrap() as usize, data.len());
    let boxes = top_level_boxes(&data);
    let moov = boxes.iter().position(|b| b == "moov").expect("a moov");
    let mdat = boxes.iter().position(|b| b == "mdat").expect("an mdat");
    assert!(moov < mdat, "moov before mdat: {boxes:?}");
    let (rec_video, rec_audio, rec_duration) = count_frames(mp4.to_str().unwrap());
    assert_eq!(
        (rec_video, rec_audio),
        (video, audio),
        "every published frame is recorded"
    );
    assert!(
        (rec_duration - duration).abs() <= 0.1,
        "duration {rec_duration} s against {duration} s published"
    );
    assert!(
        (archive["duration_sec"].as_f64().unwrap() - duration).abs() <= 0.1,
        "{archive}"
    );
    assert_decodes_cleanly(&mp4);

    // The unversioned name is the newest recording; ranges let players seek.
    let newest = server.url(&format!("/local/video/upload/{public_id}.mp4"));
    let client = reqwest::blocking::Client::new();
    let part = client
        .get(&newest)
        .header("Range", "bytes=100-199")
        .send()
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(
        part.headers()["content-range"],
        format!("bytes 100-199/{}", data.len()).as_str()
    );
    assert_eq!(part.bytes().unwrap().as_ref(), &data[100..200]);
    let head = client.head(&newest).send().unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], data.len().to_string().as_str());
    for missing in [
        format!("/local/video/upload/v{}/{public_id}.mp4", version + 1),
        format!("/local/video/upload/{public_id}x.mp4"),
        format!("/local/video/upload/../{public_id}.mp4"),
        format!("/other/video/upload/{public_id}.mp4"),
    ] {
        let res = client.get(server.url(&missing)).send().unwrap();
        assert_eq!(res.status(), 404, "{missing}");
    }
}

#[test]
fn a_recording_cut_by_sigkill_is_finalized_and_listed_at_the_next_start() {
    let mut server = Server::start();
    let s = server.create_stream(json!({"input": {"type": "rtmp"}, "idle_timeout_sec": 2}));
    let id = s["id"].as_str().unwrap().to_owned();
    let work = tempfile::tempdir().unwrap();
    let copy = work.path().join("published.flv");
    let mut ffmpeg = encoder_with_copy(&publish_url(&s), 30, "640x360", 2, &copy);
    server.wait_status(&id, "active", LIMIT);
    // Twenty seconds live: many fragments recorded, the last one unfinished.
    std::thread::sleep(Duration::from_secs(20));
    server.kill(); // SIGKILL: no chance to finalize
    // What had been published when the server died (ffmpeg goes on writing its own copy).
    let snapshot = work.path().join("at-kill.flv");
    std::fs::copy(&copy, &snapshot).unwrap();
    let (published_video, _, _) = count_frames(snapshot.to_str().unwrap());
    let _ = ffmpeg.kill();
    let _ = ffmpeg.wait();

    let server = server.restart();
    let archives = wait_archives(&server, &id, 1);
    assert_eq!(archives.len(), 1, "{archives:?}");
    let mp4 = work.path().join("recovered.mp4");
    download(archives[0]["uri"].as_str().unwrap(), &mp4);
    let (video, audio, duration) = count_frames(mp4.to_str().unwrap());
    // Everything up to the last whole fragment (about a second) before the kill. ffmpeg's copy is
    // written through a 32 KiB buffer, so it trails what reached the server by a few frames.
    assert!(
        video + 45 >= published_video && video <= published_video + 30,
        "{video} video frames recovered of {published_video} published before the kill"
    );
    assert!(audio > 0 && duration > 15.0, "{audio} audio frames, {duration} s");
    assert!(
        server.log().contains("finalizing a recording left unfinished"),
        "{}",
        server.log()
    );
}

#[test]
fn a_reconnect_continues_the_recording_and_a_new_resolution_starts_another() {
    let server = Server::start();
    let s = server.create_stream(json!({"input": {"type": "rtmp"}, "idle_timeout_sec": 5}));
    let id = s["id"].as_str().unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut published = Vec::new();
    for (part, size) in ["640x360", "640x360", "320x240"].into_iter().enumerate() {
        let copy = work.path().join(format!("part{part}.flv"));
        let mut ffmpeg = encoder_with_copy(&publish_url(&s), 6, size, 2, &copy);
        let (ok, err) = wait_child(&mut ffmpeg, LIMIT);
        assert!(ok, "{err}");
        published.push(count_frames(copy.to_str().unwrap()));
        assert_eq!(
            server.status(id),
            "active",
            "the reconnect came within the idle timeout"
        );
    }
    server.wait_status(id, "idle", LIMIT);

    let archives = wait_archives(&server, id, 2);
    assert_eq!(archives.len(), 2, "{archives:?}");
    // Newest first: the 320x240 part, then the two 640x360 parts as one recording.
    let newest = work.path().join("newest.mp4");
    download(archives[0]["uri"].as_str().unwrap(), &newest);
    let first = work.path().join("first.mp4");
    download(archives[1]["uri"].as_str().unwrap(), &first);
    assert_eq!(video_size(&first), "640,360");
    assert_eq!(video_size(&newest), "320,240");
    let (video, audio, duration) = count_frames(first.to_str().unwrap());
    assert_eq!(
        (video, audio),
        (published[0].0 + published[1].0, published[0].1 + published[1].1),
        "both 640x360 parts in one recording"
    );
    let both = published[0].2 + published[1].2;
    assert!(
        (duration - both).abs() <= 0.3,
        "{duration} s for {both} s published"
    );
    let (video, audio, _) = count_frames(newest.to_str().unwrap());
    assert_eq!((video, audio), (published[2].0, published[2].1));
    assert_decodes_cleanly(&first);
    assert_decodes_cleanly(&newest);
}

#[test]
fn without_disk_space_the_stream_stays_live_and_nothing_is_recorded() {
    let never_enough = (1u64 << 62).to_string();
    let server = Server::start_with(Options::env(&[(
        "OXCAST__ARCHIVE__MIN_FREE_BYTES",
        &never_enough,
    )]));
    let s = server.create_stream(json!({"input": {"type": "rtmp"}, "idle_timeout_sec": 1}));
    let id = s["id"].as_str().unwrap();
    let url = hls_url(&s);
    let mut ffmpeg = small_encoder(&publish_url(&s), 5);
    wait_segments(&url, 2, LIMIT);
    let (ok, err) = wait_child(&mut ffmpeg, LIMIT);
    assert!(ok, "the publish went on: {err}");
    server.wait_status(id, "idle", LIMIT);
    let list = server.get(&format!("/live_streams/{id}/archives"));
    assert_eq!(list.data(), &json!([]));
    assert!(
        server.log().contains("below archive.min_free_bytes"),
        "the log says why: {}",
        server.log()
    );
}

#[test]
fn a_graceful_shutdown_finalizes_the_recording_before_exiting() {
    let mut server = Server::start();
    let s = server.create_stream(json!({"input": {"type": "rtmp"}, "idle_timeout_sec": 30}));
    let id = s["id"].as_str().unwrap().to_owned();
    let mut ffmpeg = small_encoder(&publish_url(&s), 30);
    server.wait_status(&id, "active", LIMIT);
    std::thread::sleep(Duration::from_secs(5));
    let status = server.signal_and_wait("TERM");
    assert!(status.success(), "{status:?}: {}", server.log());
    assert!(server.log().contains("recording finalized"), "{}", server.log());
    let _ = ffmpeg.kill();
    let _ = ffmpeg.wait();
    let server = server.restart();
    let archives = wait_archives(&server, &id, 1);
    assert_eq!(archives.len(), 1, "{archives:?}");
    assert!(
        archives[0]["duration_sec"].as_f64().unwrap() > 3.0,
        "{archives:?}"
    );
    assert!(
        !server.log().contains("left unfinished"),
        "nothing was left to recover: {}",
        server.log()
    );
}

#[test]
fn a_changed_public_id_names_the_next_recording_and_the_old_one_stays() {
    let server = Server::start();
    let s = server.create_stream(json!({"input": {"type": "rtmp"}, "idle_timeout_sec": 1}));
    let id = s["id"].as_str().unwrap();
    let archive_output = s["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["type"] == "archive")
        .unwrap();
    let first_id = archive_output["public_id"].as_str().unwrap().to_owned();
    let record = || {
        let mut ffmpeg = small_encoder(&publish_url(&s), 3);
        let (ok, err) = wait_child(&mut ffmpeg, LIMIT);
        assert!(ok, "{err}");
        server.wait_status(id, "idle", LIMIT);
    };
    record();
    wait_archives(&server, id, 1);
    server
        .patch(
            &format!(
                "/live_streams/{id}/outputs/{}",
                archive_output["id"].as_str().unwrap()
            ),
            json!({"public_id": "shows/episode-2"}),
        )
        .assert_status(200);
    record();
    let archives = wait_archives(&server, id, 2);
    assert_eq!(archives[0]["public_id"], "shows/episode-2", "{archives:?}");
    assert_eq!(archives[1]["public_id"], first_id.as_str(), "{archives:?}");
    for name in ["shows/episode-2", first_id.as_str()] {
        let url = server.url(&format!("/local/video/upload/{name}.mp4"));
        assert_eq!(reqwest::blocking::get(&url).unwrap().status(), 200, "{url}");
    }
}
