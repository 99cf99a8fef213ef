//! TS muxing throughput on a realistic 3 Mbit/s H.264 + AAC stream: payload bytes per second.
//!
//! # The input
//!
//! The frames of `shared/fixtures/rtmp/source.flv` (4.0 s, H.264 640x360 30 fps with a keyframe
//! every second, AAC-LC 48 kHz stereo), read with `oxcast_media::flv::file_tags` and turned into
//! configurations and frames by `oxcast_media::Demuxer`, exactly as the ingest does. The fixture is
//! ~0.8 Mbit/s of video; each video frame's AVCC data is repeated whole a fixed number of times
//! (a run of length-prefixed NAL units repeated is still one), which brings video to ~3 Mbit/s
//! while keeping the real frame-size pattern (large keyframes, small frames after them) and NAL
//! structure (SEI, slices). Audio is unchanged. With `OXCAST_BENCH_FLV=/path/to.flv` the bench
//! reads that file as it is instead (e.g. the 720p 3 Mbit/s file `benches/compare-nginx.sh`
//! encodes into target/oxcast-bench/).
//!
//! # What is measured
//!
//! Throughput counts the frames' payload bytes (AVCC video data + raw AAC), not the TS bytes
//! written (those are ~3% more: packet headers, PES headers, ADTS, Annex B start codes, AUDs,
//! SPS/PPS before each IDR).
//!
//! - `ts_mux/segmenter`: the whole HLS path of one stream in its steady state: `Segmenter::push`
//!   for every frame (2 s target; the input fed again and again with the timestamps carried on),
//!   keyframe-aligned segments with PAT/PMT, audio batched into PES packets, each segment's buffer
//!   allocated as the server allocates it and the last 12 segments held, as the playlist holds
//!   them, so the allocator and page-fault costs of segment buffers are in the figure.
//! - `ts_mux/muxer`: `TsMuxer::write_video`/`write_audio` alone into one reused buffer: the
//!   per-byte and per-frame cost of the muxer without segment buffers.
//!
//! Run: `CARGO_TARGET_DIR=/tmp/bench-target cargo bench -p oxcast-hls --bench ts_mux`; the
//! throughput line's GB/s is payload per second on one core.

// A bench is a test program: a broken fixture should stop it with a message, as in the tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::VecDeque;
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use oxcast_core::BusEvent;
use oxcast_hls::playlist::Segment;
use oxcast_hls::segmenter::Segmenter;
use oxcast_hls::ts::TsMuxer;
use oxcast_media::flv::file_tags;
use oxcast_media::{AacConfig, AvcConfig, Demuxer, Frame, MediaEvent, Track};

/// The video bit rate the fixture is scaled to.
const VIDEO_BITS_PER_SEC: f64 = 2.9e6;

struct Input {
    video: Arc<AvcConfig>,
    audio: Arc<AacConfig>,
    frames: Vec<Frame>,
    payload: u64,
}

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/rtmp/source.flv")
}

fn load() -> Input {
    let own = std::env::var_os("OXCAST_BENCH_FLV").map(PathBuf::from);
    let path = own.clone().unwrap_or_else(fixture);
    let file = Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())));
    let mut demuxer = Demuxer::new();
    let (mut video, mut audio, mut frames) = (None, None, Vec::new());
    for tag in file_tags(&file).unwrap() {
        let event = match tag.kind {
            8 => demuxer.audio(tag.timestamp, &tag.body),
            9 => demuxer.video(tag.timestamp, &tag.body),
            _ => continue,
        };
        match event.unwrap() {
            Some(MediaEvent::VideoConfig(c)) => video = Some(c),
            Some(MediaEvent::AudioConfig(c)) => audio = Some(c),
            Some(MediaEvent::Frame(f)) => frames.push(f),
            None => {}
        }
    }
    let seconds = frames.last().map_or(1.0, |f| (f.dts + 33) as f64 / 1000.0);
    let video_bytes: usize = frames
        .iter()
        .filter(|f| f.track == Track::Video)
        .map(|f| f.data.len())
        .sum();
    if own.is_none() {
        let factor = (VIDEO_BITS_PER_SEC * seconds / 8.0 / video_bytes as f64)
            .round()
            .max(1.0) as usize;
        for frame in frames.iter_mut().filter(|f| f.track == Track::Video) {
            let mut data = BytesMut::with_capacity(frame.data.len() * factor);
            for _ in 0..factor {
                data.extend_from_slice(&frame.data);
            }
            frame.data = data.freeze();
        }
    }
    let payload: u64 = frames.iter().map(|f| f.data.len() as u64).sum();
    let video_bytes: u64 = frames
        .iter()
        .filter(|f| f.track == Track::Video)
        .map(|f| f.data.len() as u64)
        .sum();
    eprintln!(
        "ts_mux input: {} ({}), {} frames over {seconds:.1} s, {:.2} Mbit/s ({:.2} video), {:.1} KB per video frame",
        path.display(),
        if own.is_some() { "as is" } else { "video scaled" },
        frames.len(),
        payload as f64 * 8.0 / seconds / 1e6,
        video_bytes as f64 * 8.0 / seconds / 1e6,
        video_bytes as f64 / frames.iter().filter(|f| f.track == Track::Video).count().max(1) as f64 / 1e3,
    );
    Input {
        video: video.expect("a video configuration"),
        audio: audio.expect("an audio configuration"),
        frames,
        payload,
    }
}

/// One stream's segmenter in its steady state: fed the input over and over with the timestamps
/// carried on, holding the last `WINDOW` segments as the playlist does (6 listed, 6 retired), so
/// segment buffers are allocated and freed as in the server, with a learned capacity.
struct Steady<'a> {
    input: &'a Input,
    segmenter: Segmenter,
    window: VecDeque<Segment>,
    pass: i64,
    pass_ms: i64,
}

const WINDOW: usize = 12;

impl<'a> Steady<'a> {
    fn new(input: &'a Input) -> Self {
        let mut segmenter = Segmenter::new(2000);
        segmenter.push(BusEvent::Media(MediaEvent::VideoConfig(input.video.clone())));
        segmenter.push(BusEvent::Media(MediaEvent::AudioConfig(input.audio.clone())));
        // The next pass starts one video frame step after the last frame.
        let pass_ms = input.frames.iter().map(|f| f.dts).max().unwrap_or(0) + 33;
        Self {
            input,
            segmenter,
            window: VecDeque::with_capacity(WINDOW + 1),
            pass: 0,
            pass_ms,
        }
    }

    /// Feeds one pass; returns the TS bytes of the segments it closed.
    fn pass(&mut self) -> usize {
        let offset = self.pass * self.pass_ms;
        self.pass += 1;
        let mut written = 0;
        for frame in &self.input.frames {
            let mut frame = frame.clone();
            frame.dts += offset;
            frame.pts += offset;
            if let Some(segment) = self.segmenter.push(BusEvent::Media(MediaEvent::Frame(frame))) {
                written += segment.data.len();
                self.window.push_back(segment);
                if self.window.len() > WINDOW {
                    black_box(self.window.pop_front());
                }
            }
        }
        written
    }
}

fn mux_all(input: &Input, out: &mut Vec<u8>) -> usize {
    out.clear();
    let mut muxer = TsMuxer::new(Some(input.video.clone()), Some(input.audio.clone()));
    muxer.write_tables(out);
    for frame in &input.frames {
        match frame.track {
            Track::Video => muxer.write_video(frame, out).unwrap(),
            Track::Audio => muxer.write_audio(std::slice::from_ref(frame), out),
        }
    }
    out.len()
}

fn bench(c: &mut Criterion) {
    let input = load();
    let mut steady = Steady::new(&input);
    // Warm up: the window fills and the segment size is learned.
    for _ in 0..8 {
        steady.pass();
    }
    let mut out = Vec::new();
    let ts = mux_all(&input, &mut out);
    eprintln!(
        "ts_mux output: {ts} TS bytes for {} payload bytes ({:.1}% overhead)",
        input.payload,
        (ts as f64 / input.payload as f64 - 1.0) * 100.0
    );
    let mut group = c.benchmark_group("ts_mux");
    group.throughput(Throughput::Bytes(input.payload));
    group.bench_function("segmenter", |b| b.iter(|| steady.pass()));
    group.bench_function("muxer", |b| b.iter(|| mux_all(black_box(&input), &mut out)));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
