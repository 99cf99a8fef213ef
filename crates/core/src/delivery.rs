//! What HTTP delivery reads from the output crates, so `api` depends on `core` alone.

use std::path::PathBuf;

use bytes::Bytes;

use crate::ids::StreamId;
use crate::live::HlsStats;

/// A stream's HLS playlist and segments.
pub trait HlsSource: Send + Sync + 'static {
    /// The current playlist, once it lists a segment; after the stream ended, its final version.
    fn playlist(&self, stream_id: &StreamId) -> Option<Bytes>;
    /// A segment the playlist lists (or listed moments ago).
    fn segment(&self, stream_id: &StreamId, sequence: u64) -> Option<SegmentBody>;
    /// What the stream's current (or last) session made.
    fn stats(&self, stream_id: &StreamId) -> Option<HlsStats>;
}

/// Where a segment's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentBody {
    /// Listed segments are served from memory.
    Memory(Bytes),
    /// One that left the playlist waits out its last minutes in a file; gone means expired.
    File(PathBuf),
}
