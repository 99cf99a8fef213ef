//! Recordings under a publisher that tries to make the recorder work for it: one switching codec
//! configurations at every keyframe gets at most one new recording a minute, while its stream
//! stays live.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};

use crate::support::hls::{hls_url, wait_playlist};
use crate::support::probe::{assert_decodes_cleanly, count_frames, video_size};
use crate::support::publisher::encode_flv;
use crate::support::recordings::{download, wait_archives};
use crate::support::rtmp_client::{Publisher, flv_tags};
use crate::support::{Server, wait_until};

const LIMIT: Duration = Duration::from_secs(60);

/// An FLV encode cut for replaying: its sequence headers, and its GOPs of (timestamp, video tag).
struct Encode {
    video_header: Bytes,
    gops: Vec<Vec<(u32, Bytes)>>,
    audio_header: Option<Bytes>,
    audio: Vec<(u32, Bytes)>,
}

fn split(path: &Path) -> Encode {
    let mut encode = Encode {
        video_header: Bytes::new(),
        gops: Vec::new(),
        audio_header: None,
        audio: Vec::new(),
    };
    for tag in flv_tags(path) {
        let Some(&[first, packet_type]) = tag.body.get(..2) else {
            continue;
        };
        match tag.kind {
            // AVCPacketType 0: the AVCDecoderConfigurationRecord; 1: a frame (keyframe: type 1).
            9 if packet_type == 0 => encode.video_header = tag.body,
            9 if packet_type == 1 => {
                if first >> 4 == 1 {
                    encode.gops.push(Vec::new());
                }
                if let Some(gop) = encode.gops.last_mut() {
                    gop.push((tag.timestamp, tag.body));
                }
            }
            // AACPacketType 0: the AudioSpecificConfig; 1: a frame.
            8 if packet_type == 0 => encode.audio_header = Some(tag.body),
            8 => encode.audio.push((tag.timestamp, tag.body)),
            _ => {}
        }
    }
    assert!(
        !encode.video_header.is_empty(),
        "{}: no AVC sequence header",
        path.display()
    );
    encode
}

enum Tag {
    Video(Bytes),
    Audio(Bytes),
}

/// Two H.264 configurations (320x240 and 352x288, a GOP every 2 s) in turn at every keyframe for
/// 60 s, each keyframe preceded by its own sequence header, paced in real time, with the first
/// encode's audio throughout. The stream stays live and its HLS playlist keeps growing; the
/// first change starts a second recording at once, and the other changes within the minute
/// start none (the frames of the other configuration are left out of it): two recordings, each
/// decoding cleanly.
#[test]
fn codec_configuration_changes_at_every_keyframe_make_at_most_two_recordings_a_minute() {
    const GOP_MS: u32 = 2000;
    const PASS_MS: u32 = 10_000;
    const GOPS: u32 = 30;
    let work = tempfile::tempdir().unwrap();
    let (a_flv, b_flv) = (work.path().join("a.flv"), work.path().join("b.flv"));
    encode_flv(&a_flv, PASS_MS / 1000, "320x240", GOP_MS / 1000, "va");
    encode_flv(&b_flv, PASS_MS / 1000, "352x288", GOP_MS / 1000, "v");
    let (a, b) = (split(&a_flv), split(&b_flv));
    let per_pass = (PASS_MS / GOP_MS) as usize;
    assert!(a.gops.len() == per_pass && b.gops.len() == per_pass);
    let gop_frames = |encode: &Encode| encode.gops.iter().map(Vec::len).collect::<Vec<_>>();
    assert_eq!(gop_frames(&a), gop_frames(&b));

    // The timeline: GOP k from A when k is even, from B when odd; A's audio, pass after pass.
    let mut tags: Vec<(u32, Tag)> = Vec::new();
    for k in 0..GOPS {
        let encode = if k % 2 == 0 { &a } else { &b };
        let offset = k / per_pass as u32 * PASS_MS;
        let gop = &encode.gops[k as usize % per_pass];
        tags.push((gop[0].0 + offset, Tag::Video(encode.video_header.clone())));
        tags.extend(
            gop.iter()
                .map(|(ts, body)| (ts + offset, Tag::Video(body.clone()))),
        );
    }
    for pass in 0..GOPS / per_pass as u32 {
        let audio = a.audio.iter().filter(|(ts, _)| *ts < PASS_MS);
        tags.extend(audio.map(|(ts, body)| (ts + pass * PASS_MS, Tag::Audio(body.clone()))));
    }
    // Stable: a sequence header stays before its keyframe, video before audio of the same time.
    tags.sort_by_key(|(ts, _)| *ts);

    let server = Server::start();
    let s = server.create_stream(json!({"input": {"type": "rtmp"}, "idle_timeout_sec": 2}));
    let id = s["id"].as_str().unwrap().to_owned();
    let key = s["input"]["stream_key"].as_str().unwrap().to_owned();
    let port = server.rtmp_port;
    let audio_header = a.audio_header.clone().expect("an AAC sequence header");
    let video_header = a.video_header.clone();
    let publishing = std::thread::spawn(move || {
        let mut publisher = Publisher::start(IpAddr::V4(Ipv4Addr::LOCALHOST), port, &key).unwrap();
        // Both configurations first, as encoders send them.
        publisher.video(0, &video_header).unwrap();
        publisher.audio(0, &audio_header).unwrap();
        let start = Instant::now();
        for (ts, tag) in tags {
            let due = start + Duration::from_millis(u64::from(ts));
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            match tag {
                Tag::Video(body) => publisher.video(ts, &body).unwrap(),
                Tag::Audio(body) => publisher.audio(ts, &body).unwrap(),
            }
        }
        publisher.finish();
    });

    // Meanwhile the stream is live and its playlist gets new segments.
    let url = hls_url(&s);
    let mut newest = None;
    let mut checks = 0;
    loop {
        let since = Instant::now();
        while since.elapsed() < Duration::from_secs(12) && !publishing.is_finished() {
            std::thread::sleep(Duration::from_millis(200));
        }
        if publishing.is_finished() {
            break;
        }
        assert_eq!(server.status(&id), "active");
        let listing = wait_playlist(&url, "served", LIMIT, |_| true);
        let last = listing.sequence + listing.segments.len() as u64;
        if let Some(before) = newest {
            assert!(
                last > before,
                "no new segment since the last check:\n{}",
                listing.text
            );
        }
        newest = Some(last);
        checks += 1;
    }
    publishing.join().unwrap();
    assert!(checks >= 3, "the playlist was checked {checks} times");
    server.wait_status(&id, "idle", LIMIT);

    // Every recording finalized, then listed.
    let recording_dir = server.dir.join("archive/recording");
    wait_until(
        "every recording finalized",
        LIMIT,
        Duration::from_millis(200),
        || {
            let parts: Vec<_> = std::fs::read_dir(&recording_dir)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .filter(|name| name.to_str().unwrap().ends_with(".mp4.part"))
                .collect();
            if parts.is_empty() { Ok(()) } else { Err(parts) }
        },
    );
    let archives = wait_archives(&server, &id, 1);
    let started: Vec<&Value> = archives.iter().map(|a| &a["created_at"]).collect();
    assert_eq!(archives.len(), 2, "recordings started at {started:?}");
    // Newest first: B's GOPs from the first change on; A's first GOP before it.
    let (newest, first) = (work.path().join("newest.mp4"), work.path().join("first.mp4"));
    download(archives[0]["uri"].as_str().unwrap(), &newest);
    download(archives[1]["uri"].as_str().unwrap(), &first);
    assert_eq!(video_size(&first), "320,240");
    assert_eq!(video_size(&newest), "352,288");
    let frames = |gops: &[u32]| -> u64 {
        gops.iter()
            .map(|k| a.gops[*k as usize % per_pass].len() as u64)
            .sum()
    };
    let b_gops: Vec<u32> = (0..GOPS).filter(|k| k % 2 == 1).collect();
    let (video, audio, _) = count_frames(first.to_str().unwrap());
    assert_eq!(video, frames(&[0]), "the first GOP");
    assert!(audio > 0);
    let (video, audio, _) = count_frames(newest.to_str().unwrap());
    assert_eq!(video, frames(&b_gops), "every GOP in B's configuration");
    assert!(audio > 0);
    assert_decodes_cleanly(&first);
    assert_decodes_cleanly(&newest);
}
