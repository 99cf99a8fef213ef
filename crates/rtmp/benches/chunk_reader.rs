//! The chunk reader on a realistic 3 Mbit/s publish: throughput (MB/s) and allocations per message.
//!
//! # The input
//!
//! The media of a 3 Mbit/s publish, as a client's chunk stream after the `publish` command, built at
//! start-up from the committed fixture `shared/fixtures/rtmp/source.flv` (4.0 s, H.264 640x360 30 fps
//! with a keyframe every second, AAC-LC 48 kHz stereo; see the README there):
//!
//! - Its FLV tags are read by the small reader below. Every video frame (AVC NALU packet) is enlarged
//!   by repeating its own bytes, all by one factor, so that video averages 2.9 Mbit/s over the
//!   4.0 s: the frame-size pattern of a real encode is kept (keyframes large, the frames after them
//!   small). The AVC sequence header, the end-of-sequence packet, the 189 AAC frames (~98 kbit/s)
//!   and `onMetaData` are unchanged. Video + audio come to ~3.0 Mbit/s; 313 messages (314 with
//!   Set Chunk Size).
//! - The tags become RTMP messages the way ffmpeg and OBS send them (video on chunk stream 6, audio
//!   on 4, data on 5, message stream 1) and are cut into chunks by our `ChunkWriter`, at chunk size
//!   4096 (what ffmpeg and OBS announce; the stream starts with that Set Chunk Size) and at 128
//!   (the default, which librtmp never changes).
//!
//! Why not the captures in the same folder: they are real, but at ~0.9 Mbit/s, where messages are
//! three times smaller than at 3 Mbit/s, which changes the share of per-message against per-byte work.
//! Why not a real 720p encode: its FLV is ~3.8 MB for 10 s, too large to commit, and making it at
//! bench time would need ffmpeg wherever the bench runs. The reader parses headers and copies
//! payloads without looking inside them, so repeated bytes cost what encoded bytes cost. Checked
//! against one (ffmpeg, `-f lavfi testsrc2` 1280x720 30 fps, libx264 `-g 60 -b:v 2900k -maxrate 3000k
//! -bufsize 3000k`, AAC 128k, 10 s): keyframes 27-31 KB against 25-38 KB here, median frame 10.9 KB
//! against 10.4 KB; MB/s 1-7% lower over two quiet runs, and allocations/message within 0.01. Run
//! the bench on such a file, unscaled, with `OXCAST_BENCH_FLV=/path/to.flv`.
//!
//! # What is measured
//!
//! `chunk_reader/4096` and `chunk_reader/128`: a fresh `ChunkReader` gets the whole stream in
//! 64 KiB reads the way `oxcast-ingest` gives it bytes after the handshake: reserve 64 KiB in
//! `ChunkReader::buffer`, let the socket append (`read_buf`; here, a copy of the next 64 KiB of the
//! stream stands in for the kernel's copy), `count_received`; `next_message` is drained after each
//! read and every message dropped. Giving the same bytes to `ChunkReader::feed` (what ingest did
//! before, from its own read buffer) runs the same `extend_from_slice` here, as the bytes come from
//! memory either way; in three quiet runs side by side the two were the same within noise (medians
//! 87.1-89.2 against 88.6-90.5 µs at 4096, 175.8-193.4 against 178.0-183.2 µs at 128), so only the
//! ingest path is benched. In a server, `feed` costs one more copy of every byte, which this bench
//! cannot show.
//!
//! Before criterion starts, one pass per case runs under a counting global allocator and prints
//! allocations and bytes allocated per message (criterion's own work is not counted; the report
//! goes to stderr, since stdout must stay criterion's own, which cargo-nextest parses). Cases: both
//! paths, 64 KiB reads and 4 KiB reads (a live stream read as it arrives), messages dropped at once
//! or held to the end (as a relay, a GOP cache or a segmenter holds them).
//!
//! What to expect: a message that arrives in one chunk is a slice of the input buffer (no
//! allocation); a message in several chunks gets exactly one buffer, of its size. Besides those, a
//! connection allocates its first 64 KiB input buffer, its growth to 128 KiB (a partial chunk left
//! over plus the next read), the chunk-stream table (256 bytes) and `bytes`' 40-byte shared header
//! when the first slice is cut: four allocations in all. A held slice keeps its input buffer alive,
//! so that buffer cannot be reused: the next read that needs room gets a new one (and a new shared
//! header). Through `buffer`, which reserves 64 KiB before every read, that new buffer is 64 KiB or
//! more however small the reads are: with 4 KiB reads at 4096, 124 such buffers in 367 reads.
//!
//! Run: `CARGO_TARGET_DIR=/tmp/bench-target cargo bench -p oxcast-rtmp --bench chunk_reader`.

// The workspace denies unsafe code. A counting allocator has to implement `GlobalAlloc`, an
// unsafe trait whose methods are unsafe functions, so it cannot be written without `unsafe`; the
// only unsafe code here forwards to `std::alloc::System` unchanged.
#![allow(unsafe_code)]
// A bench is a test program: a broken fixture should stop it with a message, as in the tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use oxcast_rtmp::chunk::{ChunkReader, ChunkWriter, Outbound, RawMessage, csid};

/// What one socket read gives at most (`oxcast-ingest` reserves and asks for this much).
const PIECE: usize = 64 * 1024;
/// What a socket read gives a live 3 Mbit/s stream (375 bytes a millisecond) woken up often.
const SMALL_READ: usize = 4 * 1024;
/// The video bit rate the fixture is scaled to.
const VIDEO_BITS_PER_SECOND: f64 = 2_900_000.0;
/// The publishing stream's message stream id, as servers hand out in answer to `createStream`.
const STREAM_ID: u32 = 1;

// ---- Counting allocator ----------------------------------------------------------------------

/// `System`, counting every allocation and reallocation and the bytes each asked for.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static ALLOCATED_BYTES: AtomicU64 = AtomicU64::new(0);

fn count(bytes: usize) {
    ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    ALLOCATED_BYTES.fetch_add(bytes as u64, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        // SAFETY: `ptr` and `layout` came from this allocator, which is `System`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as for `realloc`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocation_counters() -> (u64, u64) {
    (
        ALLOCATIONS.load(Ordering::Relaxed),
        ALLOCATED_BYTES.load(Ordering::Relaxed),
    )
}

// ---- FLV ---------------------------------------------------------------------------------------

const TAG_AUDIO: u8 = 8;
const TAG_VIDEO: u8 = 9;
const TAG_SCRIPT: u8 = 18;

struct Tag {
    kind: u8,
    /// Milliseconds.
    timestamp: u32,
    data: Vec<u8>,
}

/// The tags of an FLV file (FLV 10.1 annex E): a header of `DataOffset` bytes (9 in version 1)
/// and PreviousTagSize0, then per tag: type (1), data size (3), timestamp (3) + its upper byte (1),
/// stream id (3), data, previous tag size (4).
fn flv_tags(flv: &[u8]) -> Vec<Tag> {
    assert_eq!(&flv[..3], b"FLV", "not an FLV file");
    let data_offset = u32::from_be_bytes(flv[5..9].try_into().unwrap()) as usize;
    let mut pos = data_offset + 4;
    let mut tags = Vec::new();
    while pos < flv.len() {
        let header = &flv[pos..pos + 11];
        let be24 = |at: usize| u32::from_be_bytes([0, header[at], header[at + 1], header[at + 2]]);
        let size = be24(1) as usize;
        let timestamp = be24(4) | u32::from(header[7]) << 24;
        let data = flv[pos + 11..pos + 11 + size].to_vec();
        pos += 11 + size;
        let previous = u32::from_be_bytes(flv[pos..pos + 4].try_into().unwrap()) as usize;
        assert_eq!(
            previous,
            11 + size,
            "PreviousTagSize does not match the tag at {pos}"
        );
        pos += 4;
        tags.push(Tag {
            kind: header[0] & 0x1F,
            timestamp,
            data,
        });
    }
    tags
}

/// An AVC video frame, as opposed to the sequence header and the end-of-sequence packet: codec id 7
/// and AVCPacketType 1 (NALU).
fn is_video_frame(tag: &Tag) -> bool {
    tag.kind == TAG_VIDEO && tag.data.len() > 1 && tag.data[0] & 0x0F == 7 && tag.data[1] == 1
}

/// From the first video frame to the end of the last one (4.0 s for the fixture).
fn video_seconds(tags: &[Tag]) -> f64 {
    let frames: Vec<u32> = tags
        .iter()
        .filter(|t| is_video_frame(t))
        .map(|t| t.timestamp)
        .collect();
    let (first, last) = (frames[0], frames[frames.len() - 1]);
    f64::from(last - first) * frames.len() as f64 / (frames.len() - 1) as f64 / 1000.0
}

/// Enlarges every video frame by one factor, repeating its bytes, so video averages `bits_per_second`.
fn scale_video(tags: &mut [Tag], bits_per_second: f64) {
    let seconds = video_seconds(tags);
    let video_bytes = |tags: &[Tag], frames_only: bool| -> usize {
        tags.iter()
            .filter(|t| t.kind == TAG_VIDEO && is_video_frame(t) == frames_only)
            .map(|t| t.data.len())
            .sum()
    };
    let target = bits_per_second / 8.0 * seconds - video_bytes(tags, false) as f64;
    let factor = target / video_bytes(tags, true) as f64;
    for tag in tags.iter_mut().filter(|t| is_video_frame(t)) {
        let len = (tag.data.len() as f64 * factor).round() as usize;
        tag.data = tag.data.iter().copied().cycle().take(len).collect();
    }
}

// ---- The chunk stream --------------------------------------------------------------------------

struct Input {
    chunk_size: u32,
    stream: Vec<u8>,
    /// Payload length of every message, in order.
    lengths: Vec<usize>,
    media_seconds: f64,
}

/// The tags as a publisher's chunk stream at `chunk_size`, announced first if not the default.
fn chunk_stream(tags: &[Tag], chunk_size: u32) -> Input {
    let mut writer = ChunkWriter::new();
    let mut out = Outbound::new();
    let mut lengths = Vec::new();
    if chunk_size != writer.chunk_size() {
        let size = Bytes::copy_from_slice(&chunk_size.to_be_bytes());
        writer.write(csid::CONTROL, 0, 1, 0, &size, &mut out);
        writer.set_chunk_size(chunk_size);
        lengths.push(size.len());
    }
    for tag in tags {
        let csid = match tag.kind {
            TAG_AUDIO => csid::AUDIO,
            TAG_VIDEO => csid::VIDEO,
            TAG_SCRIPT => csid::DATA,
            other => panic!("FLV tag type {other}"),
        };
        let payload = Bytes::copy_from_slice(&tag.data);
        writer.write(csid, tag.timestamp, tag.kind, STREAM_ID, &payload, &mut out);
        lengths.push(payload.len());
    }
    Input {
        chunk_size,
        stream: out.take_all(),
        lengths,
        media_seconds: video_seconds(tags),
    }
}

/// The scaled fixture, or the FLV named by `OXCAST_BENCH_FLV` as it is.
fn inputs() -> Vec<Input> {
    let own = std::env::var_os("OXCAST_BENCH_FLV").map(PathBuf::from);
    let path = own.clone().unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/rtmp/source.flv")
    });
    let flv = std::fs::read(&path).unwrap_or_else(|e| panic!("FLV {} is missing: {e}", path.display()));
    let mut tags = flv_tags(&flv);
    if own.is_none() {
        scale_video(&mut tags, VIDEO_BITS_PER_SECOND);
    }
    eprintln!(
        "input: {}{}",
        path.display(),
        if own.is_none() { ", video scaled" } else { "" }
    );
    [4096, 128]
        .into_iter()
        .map(|size| chunk_stream(&tags, size))
        .collect()
}

// ---- Reading -----------------------------------------------------------------------------------

/// How bytes reach the reader.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    /// As `oxcast-ingest` does after the handshake: reserve `PIECE` bytes in `ChunkReader::buffer`,
    /// let the socket append to it (`read_buf`; here a copy of the next piece), `count_received`.
    Buffer,
    /// `ChunkReader::feed` from the caller's own read buffer, as ingest did before.
    Feed,
}

/// Gives `stream` to a fresh reader in reads of `read` bytes, drains every message after each one
/// and hands it to `sink`. Returns the number of messages.
fn read(stream: &[u8], read: usize, path: Path, mut sink: impl FnMut(RawMessage)) -> usize {
    let mut reader = ChunkReader::default();
    let mut messages = 0;
    for piece in stream.chunks(read) {
        match path {
            Path::Buffer => {
                let buffer = reader.buffer();
                buffer.reserve(PIECE);
                buffer.extend_from_slice(piece);
                reader.count_received(piece.len());
            }
            Path::Feed => reader.feed(piece),
        }
        while let Some(message) = reader.next_message().expect("the stream is valid") {
            sink(message);
            messages += 1;
        }
    }
    messages
}

/// One pass outside criterion, counting allocations: with messages dropped as soon as they are read
/// or all held to the end (in a vector allocated beforehand), as a relay, a GOP cache or a segmenter
/// holds them. Returns (allocations, bytes allocated).
fn count_allocations(input: &Input, read_size: usize, path: Path, held: bool) -> (u64, u64) {
    let mut kept = Vec::with_capacity(if held { input.lengths.len() } else { 0 });
    let (calls, bytes) = allocation_counters();
    let messages = read(&input.stream, read_size, path, |message| {
        if held {
            kept.push(message);
        } else {
            drop(black_box(message));
        }
    });
    let (calls_after, bytes_after) = allocation_counters();
    assert_eq!(
        messages,
        input.lengths.len(),
        "every message written is read back"
    );
    (calls_after - calls, bytes_after - bytes)
}

fn report_allocations(input: &Input) {
    // Only Set Chunk Size (4 bytes) is read before the chunk size changes.
    let multi: Vec<usize> = input
        .lengths
        .iter()
        .copied()
        .filter(|&n| n > input.chunk_size as usize)
        .collect();
    let messages = input.lengths.len();
    let media_bytes: usize = input.lengths.iter().sum();
    eprintln!(
        "chunk_reader/{}: {} bytes of chunk stream, {messages} messages ({} of them in more than one \
         chunk, {} bytes together), {:.2} Mbit/s of payload over {:.2} s",
        input.chunk_size,
        input.stream.len(),
        multi.len(),
        multi.iter().sum::<usize>(),
        media_bytes as f64 * 8.0 / input.media_seconds / 1e6,
        input.media_seconds,
    );
    eprintln!(
        "  reads   path    messages         allocations  bytes allocated  per message: allocations  bytes"
    );
    for (read_size, path, held) in [
        (PIECE, Path::Buffer, false),
        (PIECE, Path::Buffer, true),
        (PIECE, Path::Feed, false),
        (PIECE, Path::Feed, true),
        (SMALL_READ, Path::Buffer, false),
        (SMALL_READ, Path::Buffer, true),
        (SMALL_READ, Path::Feed, false),
        (SMALL_READ, Path::Feed, true),
    ] {
        let (calls, bytes) = count_allocations(input, read_size, path, held);
        eprintln!(
            "  {:>2} KiB  {:<6}  {:<15}  {calls:>11}  {bytes:>15}  {:>24.3}  {:>5.0}",
            read_size / 1024,
            if path == Path::Buffer { "buffer" } else { "feed" },
            if held {
                "held to the end"
            } else {
                "dropped at once"
            },
            calls as f64 / messages as f64,
            bytes as f64 / messages as f64,
        );
    }
}

fn bench(c: &mut Criterion) {
    let inputs = inputs();
    for input in &inputs {
        report_allocations(input);
    }
    let mut group = c.benchmark_group("chunk_reader");
    for input in &inputs {
        group.throughput(Throughput::Bytes(input.stream.len() as u64));
        group.bench_function(input.chunk_size.to_string(), |b| {
            b.iter(|| {
                let messages = read(black_box(&input.stream), PIECE, Path::Buffer, |m| {
                    drop(black_box(m))
                });
                assert_eq!(messages, input.lengths.len());
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
