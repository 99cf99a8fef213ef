//! What HTTP delivery reads from the output crates, so `api` depends on `core` alone.

use bytes::Bytes;

use crate::ids::StreamId;

/// A stream's HLS playlist and segments, served from memory.
pub trait HlsSource: Send + Sync + 'static {
    /// The current playlist, once it lists a segment; after the stream ended, its final version.
    fn playlist(&self, stream_id: &StreamId) -> Option<Bytes>;
    /// A segment the playlist lists (or listed moments ago).
    fn segment(&self, stream_id: &StreamId, sequence: u64) -> Option<Bytes>;
}
