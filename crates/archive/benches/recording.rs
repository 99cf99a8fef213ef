//! Recording throughput on a realistic 3 Mbit/s H.264 + AAC stream: media bytes per second
//! written as fragmented MP4, and finalized into a progressive MP4.
//!
//! # The input
//!
//! The frames of `shared/fixtures/rtmp/source.flv` (4.0 s, H.264 640x360 30 fps with a keyframe
//! every second, AAC-LC 48 kHz stereo), read with `oxcast_media::flv::file_tags` and turned into
//! configurations and frames by `oxcast_media::Demuxer`, as the ingest does. As in the TS muxing
//! bench (`crates/hls/benches/ts_mux.rs`), each video frame's AVCC data is repeated whole a fixed
//! number of times to bring video to ~2.9 Mbit/s with the fixture's frame-size pattern; audio is
//! unchanged. With `OXCAST_BENCH_FLV=/path/to.flv` the bench reads that file as it is instead.
//! The frames are cut into batches as the recorder cuts them: a batch closes with the first frame
//! at least 1000 ms after the batch's first.
//!
//! # What is measured
//!
//! Throughput counts the frames' payload bytes (AVCC video data + raw AAC), not the file bytes
//! (`moof`/`mdat` headers add well under 1%; printed at start-up).
//!
//! - `recording/fragments`: one recording of the input, as the recorder makes it: a fresh
//!   `FragmentWriter`, the init segment, then `push` per batch and `finish`, each `Fragment`
//!   written with `Fragment::write_to` (one vectored write) into one file, truncated and
//!   rewritten from its start on every iteration. Nothing is synced: the writes land in the page
//!   cache, so this is the CPU cost of the write path (boxes, the kernel's copy into the page
//!   cache, block allocation).
//! - `recording/fragments_synced`: the same, with `sync_data` after the init segment and after
//!   every fragment, as the recorder does so that a crash loses at most the fragment being
//!   written. This is bound by the disk's flush latency, not by CPU.
//! - `recording/finalize`: `mp4::finalize` of a recording of the input repeated `FINALIZE_PASSES`
//!   times with the timestamps carried on (tens of MB), made and synced once before timing; each
//!   iteration overwrites the same output file. `finalize` reads the fragments, writes the `moov`,
//!   copies the media file to file (`copy_file_range`) and ends with `sync_all`, so this too is
//!   mostly the disk's write speed.
//!
//! The files live in a temporary directory under `OXCAST_BENCH_DIR` if set, else the system's
//! temporary directory (on these machines the same ext4 disk as the data directory). With
//! `OXCAST_BENCH_DIR=/dev/shm` (tmpfs, where a sync does nothing) the figures are the CPU cost
//! alone.
//!
//! Run: `CARGO_TARGET_DIR=/tmp/bench-target cargo bench -p oxcast-archive --bench recording`;
//! the throughput line is payload per second on one core.

// A bench is a test program: a broken fixture should stop it with a message, as in the tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use oxcast_archive::mp4::{self, Fragment, FragmentWriter, Tracks};
use oxcast_media::flv::file_tags;
use oxcast_media::{Demuxer, Frame, MediaEvent, Track};

/// The video bit rate the fixture is scaled to (as in the TS muxing bench).
const VIDEO_BITS_PER_SEC: f64 = 2.9e6;
/// The recorder's batch length (`recorder.rs`, `FRAGMENT_MS`).
const FRAGMENT_MS: i64 = 1000;
/// Passes of the input in the recording `finalize` reads: 20 x 4 s of the scaled fixture is
/// about 30 MB, 80 s of a 3 Mbit/s stream.
const FINALIZE_PASSES: i64 = 20;

struct Input {
    tracks: Tracks,
    frames: Vec<Frame>,
    /// Timestamp step from one pass of the input to the next.
    pass_ms: i64,
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
    // The next pass starts one video frame step after the last frame.
    let pass_ms = frames.iter().map(|f| f.dts).max().unwrap_or(0) + 33;
    let seconds = pass_ms as f64 / 1000.0;
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
    eprintln!(
        "recording input: {} ({}), {} frames over {seconds:.1} s, {:.2} Mbit/s, {payload} payload bytes",
        path.display(),
        if own.is_some() { "as is" } else { "video scaled" },
        frames.len(),
        payload as f64 * 8.0 / seconds / 1e6,
    );
    Input {
        tracks: Tracks {
            video: Some(video.expect("a video configuration")),
            audio: Some(audio.expect("an audio configuration")),
        },
        frames,
        pass_ms,
        payload,
    }
}

/// The input's frames, `passes` times with the timestamps carried on, in the recorder's batches.
fn batches(input: &Input, passes: i64) -> Vec<Vec<Frame>> {
    let mut batches = Vec::new();
    let mut pending: Vec<Frame> = Vec::new();
    let mut last_dts = i64::MIN;
    for pass in 0..passes {
        for frame in &input.frames {
            let mut frame = frame.clone();
            frame.dts += pass * input.pass_ms;
            frame.pts += pass * input.pass_ms;
            last_dts = last_dts.max(frame.dts);
            let start = pending.first().map_or(frame.dts, |f| f.dts);
            pending.push(frame);
            if last_dts - start >= FRAGMENT_MS {
                batches.push(std::mem::take(&mut pending));
            }
        }
    }
    if !pending.is_empty() {
        batches.push(pending);
    }
    batches
}

fn write(file: &mut File, fragment: &Fragment, sync: bool) -> u64 {
    fragment.write_to(file).unwrap();
    if sync {
        file.sync_data().unwrap();
    }
    fragment.len()
}

/// One whole recording of `batches` into `file` from its start; returns the file's length.
fn record(tracks: &Tracks, init: &[u8], batches: &[Vec<Frame>], file: &mut File, sync: bool) -> u64 {
    file.set_len(0).unwrap();
    file.seek(SeekFrom::Start(0)).unwrap();
    file.write_all(init).unwrap();
    if sync {
        file.sync_data().unwrap();
    }
    let mut written = init.len() as u64;
    let mut writer = FragmentWriter::new(tracks);
    for batch in batches {
        // The recorder hands its batch over by value: frames are cloned here (a reference count
        // each), as the bus clones them for each subscriber.
        if let Some(fragment) = writer.push(batch.iter().cloned()) {
            written += write(file, &fragment, sync);
        }
    }
    if let Some(fragment) = writer.finish() {
        written += write(file, &fragment, sync);
    }
    written
}

fn open(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn bench(c: &mut Criterion) {
    let input = load();
    let base = std::env::var_os("OXCAST_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(&base).unwrap_or_else(|e| panic!("{}: {e}", base.display()));
    eprintln!("recording files in {}", dir.path().display());
    let init = mp4::init_segment(&input.tracks);

    let one_pass = batches(&input, 1);
    let mut file = open(&dir.path().join("fragments.mp4"));
    let written = record(&input.tracks, &init, &one_pass, &mut file, false);
    eprintln!(
        "recording/fragments: {} batches, {written} file bytes for {} payload bytes ({:.2}% overhead)",
        one_pass.len(),
        input.payload,
        (written as f64 / input.payload as f64 - 1.0) * 100.0
    );

    // The recording finalize reads, written and synced before anything is timed.
    let long = batches(&input, FINALIZE_PASSES);
    let long_payload: u64 = long.iter().flatten().map(|f| f.data.len() as u64).sum();
    let fragmented = dir.path().join("recording.mp4.part");
    let mut source = open(&fragmented);
    let recorded = record(&input.tracks, &init, &long, &mut source, false);
    source.sync_all().unwrap();
    drop(source);
    let finalized = dir.path().join("recording.mp4");
    let summary = mp4::finalize(&fragmented, &finalized).unwrap();
    eprintln!(
        "recording/finalize: {recorded} bytes of fragmented MP4 ({} s, {} fragments, {long_payload} payload bytes) \
         -> {} bytes of progressive MP4, {} video + {} audio frames",
        summary.duration_ms as f64 / 1000.0,
        long.len(),
        summary.bytes,
        summary.video_frames,
        summary.audio_frames,
    );

    let mut group = c.benchmark_group("recording");
    group.throughput(Throughput::Bytes(input.payload));
    group.bench_function("fragments", |b| {
        b.iter(|| record(&input.tracks, &init, black_box(&one_pass), &mut file, false))
    });
    // Each iteration waits for the disk once per sync: the init segment and each fragment (7).
    group.sample_size(20);
    group.bench_function("fragments_synced", |b| {
        b.iter(|| record(&input.tracks, &init, black_box(&one_pass), &mut file, true))
    });
    group.throughput(Throughput::Bytes(long_payload));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(15));
    group.bench_function("finalize", |b| {
        b.iter(|| mp4::finalize(black_box(&fragmented), &finalized).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
