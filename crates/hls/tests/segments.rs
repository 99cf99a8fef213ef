//! The segmenter and TS muxer on a real encoder's output (`shared/fixtures/rtmp/source.flv`),
//! checked with an independent TS reader (the `mpeg2ts` crate).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use bytes::Bytes;
use mpeg2ts::pes::{PesPacketReader, ReadPesPacket};
use mpeg2ts::ts::{ReadTsPacket, TsPacketReader, TsPayload};
use oxcast_core::BusEvent;
use oxcast_hls::playlist::Segment;
use std::time::Duration;

use oxcast_hls::segmenter::{ForcedCut, SegmentLimits, Segmenter};
use oxcast_hls::ts::{AUDIO_PID, PACKET_LEN, VIDEO_PID};
use oxcast_media::flv::file_tags;
use oxcast_media::{Demuxer, MediaEvent, Track};

/// The fixture's media as bus events, optionally one track only, with a timestamp offset.
fn events(tracks: &[Track], offset: u32) -> Vec<BusEvent> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/fixtures/rtmp/source.flv"
    );
    let file = Bytes::from(
        std::fs::read(path)
            .unwrap_or_else(|e| panic!("fixture {path}: {e} (../shared must sit beside the repository)")),
    );
    let mut demuxer = Demuxer::new();
    let mut events = Vec::new();
    for tag in file_tags(&file).unwrap() {
        let event = match tag.kind {
            9 if tracks.contains(&Track::Video) => demuxer.video(tag.timestamp + offset, &tag.body).unwrap(),
            8 if tracks.contains(&Track::Audio) => demuxer.audio(tag.timestamp + offset, &tag.body).unwrap(),
            _ => None,
        };
        events.extend(event.map(BusEvent::Media));
    }
    events
}

fn segment_all(events: Vec<BusEvent>, target_ms: i64) -> Vec<Segment> {
    let mut segmenter = Segmenter::new(target_ms);
    let mut segments: Vec<Segment> = events.into_iter().filter_map(|e| segmenter.push(e)).collect();
    segments.extend(segmenter.finish());
    segments
}

#[derive(Debug, Default, PartialEq)]
struct Contents {
    video_frames: usize,
    keyframe_first: bool,
    audio_frames: usize,
    pids: Vec<u16>,
}

/// Reads a segment with `mpeg2ts`: tables first, then PES packets; counts frames.
fn read(segment: &[u8]) -> Contents {
    assert_eq!(segment.len() % PACKET_LEN, 0);
    let mut packets = TsPacketReader::new(segment);
    let first = packets.read_ts_packet().unwrap().unwrap();
    assert!(
        matches!(first.payload, Some(TsPayload::Pat(_))),
        "a segment opens with the PAT"
    );
    let second = packets.read_ts_packet().unwrap().unwrap();
    let Some(TsPayload::Pmt(pmt)) = second.payload else {
        panic!("then the PMT")
    };
    let pids = pmt.es_info.iter().map(|es| es.elementary_pid.as_u16()).collect();
    let mut contents = Contents {
        pids,
        ..Contents::default()
    };
    let mut pes = PesPacketReader::new(TsPacketReader::new(segment));
    let mut first_video = true;
    while let Some(packet) = pes.read_pes_packet().unwrap() {
        let data = &packet.data;
        if packet.header.stream_id.as_u8() == 0xE0 {
            contents.video_frames += 1;
            if first_video {
                // Annex B: AUD first, then SPS, PPS and an IDR slice.
                assert_eq!(&data[..6], &[0, 0, 0, 1, 9, 0xF0]);
                let types: Vec<u8> = data
                    .windows(5)
                    .filter(|w| w[..4] == [0, 0, 0, 1])
                    .map(|w| w[4] & 0x1F)
                    .collect();
                contents.keyframe_first = types.starts_with(&[9, 7, 8]) && types.contains(&5);
                first_video = false;
            }
        } else {
            // ADTS frames back to back: sync word, then the 13-bit frame length.
            let mut at = 0;
            while at + 7 <= data.len() {
                assert_eq!(data[at], 0xFF);
                assert_eq!(data[at + 1] & 0xF0, 0xF0);
                let len = ((usize::from(data[at + 3]) & 3) << 11)
                    | (usize::from(data[at + 4]) << 3)
                    | (usize::from(data[at + 5]) >> 5);
                contents.audio_frames += 1;
                at += len;
            }
            assert_eq!(at, data.len());
        }
    }
    contents
}

/// Continuity counters rise by one per payload packet of a PID, across segment boundaries too.
fn assert_continuity(segments: &[Segment]) {
    let mut last = std::collections::HashMap::new();
    for segment in segments {
        for packet in segment.data.chunks(PACKET_LEN) {
            let pid = u16::from_be_bytes([packet[1] & 0x1F, packet[2]]);
            let cc = packet[3] & 0x0F;
            if let Some(prev) = last.insert(pid, cc) {
                assert_eq!(cc, (prev + 1) & 0x0F, "PID {pid:#x}");
            }
        }
    }
}

#[test]
fn audio_and_video_segments_start_on_keyframes_and_hold_every_frame() {
    let segments = segment_all(events(&[Track::Video, Track::Audio], 0), 2000);
    // A keyframe every second and a 2 s target: two segments of 2 s.
    let durations: Vec<i64> = segments.iter().map(|s| s.duration_ms).collect();
    assert_eq!(durations.len(), 2, "{durations:?}");
    assert!(
        durations.iter().all(|d| (1900..=2100).contains(d)),
        "{durations:?}"
    );
    let mut video = 0;
    let mut audio = 0;
    for segment in &segments {
        let contents = read(&segment.data);
        assert_eq!(contents.pids, [VIDEO_PID, AUDIO_PID]);
        assert!(contents.keyframe_first);
        video += contents.video_frames;
        audio += contents.audio_frames;
    }
    assert_eq!((video, audio), (120, 189));
    assert_continuity(&segments);
}

#[test]
fn audio_only_and_video_only_streams_carry_only_their_track() {
    let audio_only = segment_all(events(&[Track::Audio], 0), 2000);
    // Cut on time: 2 s each, and the frames past 4 s in a short last one.
    assert!(audio_only.iter().all(|s| s.duration_ms <= 2030), "{audio_only:?}");
    let frames: usize = audio_only
        .iter()
        .map(|s| read(&s.data))
        .inspect(|c| assert_eq!(c.pids, [AUDIO_PID]))
        .map(|c| c.audio_frames)
        .sum();
    assert_eq!(frames, 189);
    let video_only = segment_all(events(&[Track::Video], 0), 2000);
    let frames: usize = video_only
        .iter()
        .map(|s| read(&s.data))
        .inspect(|c| assert_eq!(c.pids, [VIDEO_PID]))
        .map(|c| c.video_frames)
        .sum();
    assert_eq!(frames, 120);
}

#[test]
fn a_keyframe_interval_longer_than_the_target_makes_longer_segments() {
    // Keep only every fourth keyframe: keyframes 4 s apart... the fixture is 4 s, so one long segment.
    let mut seen_keyframes = 0;
    let events: Vec<BusEvent> = events(&[Track::Video, Track::Audio], 0)
        .into_iter()
        .filter(|e| match e {
            BusEvent::Media(MediaEvent::Frame(f)) if f.track == Track::Video && f.keyframe => {
                seen_keyframes += 1;
                seen_keyframes == 1
            }
            _ => true,
        })
        .collect();
    let segments = segment_all(events, 2000);
    assert_eq!(segments.len(), 1);
    assert!(segments[0].duration_ms >= 3900, "{}", segments[0].duration_ms);
}

#[test]
fn a_new_publisher_marks_a_discontinuity() {
    let mut all = events(&[Track::Video, Track::Audio], 0);
    all.push(BusEvent::Discontinuity);
    all.extend(events(&[Track::Video, Track::Audio], 0));
    let segments = segment_all(all, 2000);
    let flags: Vec<bool> = segments.iter().map(|s| s.discontinuity).collect();
    assert_eq!(flags, [false, false, true, false]);
    for segment in &segments {
        assert!(read(&segment.data).keyframe_first);
    }
}

/// The fixture's configurations and first keyframe, then `count` inter frames of `bytes` each,
/// at `step_ms` apart (0: every timestamp the same).
fn one_keyframe_then(count: usize, bytes: usize, step_ms: i64) -> Vec<BusEvent> {
    let mut out = Vec::new();
    let mut keyframe = None;
    for event in events(&[Track::Video, Track::Audio], 0) {
        match event {
            BusEvent::Media(MediaEvent::Frame(f)) if f.track == Track::Video && f.keyframe => {
                keyframe = Some(f);
                break;
            }
            BusEvent::Media(MediaEvent::Frame(_)) => {}
            config => out.push(config),
        }
    }
    let keyframe = keyframe.unwrap();
    out.push(BusEvent::Media(MediaEvent::Frame(keyframe.clone())));
    // One NAL unit (a non-IDR slice) filling the frame: a length prefix, then its bytes.
    let mut nal = (bytes as u32 - 4).to_be_bytes().to_vec();
    nal.push(0x41);
    nal.resize(bytes, 0x5A);
    let nal = Bytes::from(nal);
    for i in 0..count {
        let mut frame = keyframe.clone();
        frame.keyframe = false;
        frame.dts += step_ms * (i as i64 + 1);
        frame.pts = frame.dts;
        frame.data = nal.clone();
        out.push(BusEvent::Media(MediaEvent::Frame(frame)));
    }
    out
}

/// A publisher that sends one keyframe and then only large frames, all at the same timestamp,
/// must not keep one segment open, and its frames in memory, for as long as it publishes.
#[test]
fn without_keyframes_or_advancing_timestamps_segments_close_by_size() {
    let limits = SegmentLimits {
        max_bytes: 8 << 20,
        max_duration: Duration::from_secs(3600),
    };
    let mut segmenter = Segmenter::with_limits(2000, limits);
    let mut segments = Vec::new();
    for event in one_keyframe_then(40, 1 << 20, 0) {
        segments.extend(segmenter.push(event));
    }
    // The keyframe and 40 frames of 1 MiB, closed as each segment reaches 8 MiB: five segments.
    assert_eq!(
        segments.len(),
        5,
        "{:?}",
        segments.iter().map(|s| s.data.len()).collect::<Vec<_>>()
    );
    for segment in &segments {
        // 8 MiB of frames and their TS packaging (about 2%).
        assert!(
            segment.data.len() < (9 << 20) + (9 << 20) / 50,
            "{}",
            segment.data.len()
        );
        assert!(segment.duration_ms >= 1, "{}", segment.duration_ms);
    }
    assert_eq!(segmenter.forced_cuts, 5);
    assert_eq!(segmenter.last_forced, Some(ForcedCut::Size));
    // Every frame is in a segment once: the keyframe and 8 frames, then 8 in each of the others.
    let frames: usize = segments.iter().map(|s| read(&s.data).video_frames).sum();
    assert_eq!(frames, 41);
    assert!(read(&segments[0].data).keyframe_first);
    assert!(!read(&segments[1].data).keyframe_first);
}

#[test]
fn without_keyframes_segments_close_after_the_longest_duration() {
    let limits = SegmentLimits {
        max_bytes: usize::MAX,
        max_duration: Duration::from_secs(6),
    };
    let mut segmenter = Segmenter::with_limits(2000, limits);
    let mut segments = Vec::new();
    // 20 s of small inter frames at 30 fps after one keyframe.
    for event in one_keyframe_then(600, 1000, 33) {
        segments.extend(segmenter.push(event));
    }
    let durations: Vec<i64> = segments.iter().map(|s| s.duration_ms).collect();
    assert_eq!(durations.len(), 3, "{durations:?}");
    assert!(
        durations.iter().all(|d| (6000..=6100).contains(d)),
        "{durations:?}"
    );
    assert_eq!(segmenter.last_forced, Some(ForcedCut::NoKeyframe));
}

#[test]
fn stalled_timestamps_close_a_segment_after_the_longest_duration_of_wall_time() {
    let limits = SegmentLimits {
        max_bytes: usize::MAX,
        max_duration: Duration::from_millis(200),
    };
    let mut segmenter = Segmenter::with_limits(2000, limits);
    let mut segments = Vec::new();
    for (i, event) in one_keyframe_then(4, 1000, 0).into_iter().enumerate() {
        if i > 2 {
            std::thread::sleep(Duration::from_millis(120));
        }
        segments.extend(segmenter.push(event));
    }
    assert!(!segments.is_empty());
    assert_eq!(segmenter.last_forced, Some(ForcedCut::StalledTimestamps));
    // Its length is the wall time it was open, not the zero its timestamps say.
    assert!(segments[0].duration_ms >= 200, "{}", segments[0].duration_ms);
}
