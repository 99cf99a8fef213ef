//! The chunk stream (RTMP 1.0 §5.3): messages cut into chunks, interleaved by chunk stream id.

mod budget;
mod reader;
mod writer;

pub use budget::SharedBudget;
pub use reader::{ChunkError, ChunkReader, Limits};
pub use writer::{ChunkWriter, Outbound, Payload};

use bytes::Bytes;

/// Every peer starts with 128-byte chunks (RTMP 1.0 §5.4.1).
pub const DEFAULT_CHUNK_SIZE: u32 = 128;
/// The largest chunk size Set Chunk Size may announce (RTMP 1.0 §5.4.1: 31 bits).
pub const MAX_CHUNK_SIZE: u32 = 0x7FFF_FFFF;
/// A timestamp field with this value means a 4-byte extended timestamp follows (§5.3.1.3).
const EXTENDED_TIMESTAMP: u32 = 0xFF_FFFF;

/// Chunk stream ids the sessions use: 2 is reserved for protocol control (§5.3.1.1).
pub mod csid {
    pub const CONTROL: u32 = 2;
    pub const COMMAND: u32 = 3;
    pub const AUDIO: u32 = 4;
    pub const VIDEO: u32 = 6;
    pub const DATA: u32 = 5;
}

/// One reassembled message with its header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMessage {
    /// The chunk stream it travelled on.
    pub csid: u32,
    /// Milliseconds, modulo 2^32.
    pub timestamp: u32,
    pub type_id: u8,
    pub stream_id: u32,
    pub payload: Bytes,
}

/// One message as a fresh connection's writer sends it in chunks of `chunk_size`: a type-0 header,
/// then type-3 continuations. For tools and tests that speak raw RTMP.
pub fn single_message(
    chunk_size: u32,
    csid: u32,
    timestamp: u32,
    type_id: u8,
    stream_id: u32,
    payload: &[u8],
) -> Vec<u8> {
    let mut writer = ChunkWriter::new();
    writer.set_chunk_size(chunk_size);
    let mut out = Outbound::new();
    writer.write(
        csid,
        timestamp,
        type_id,
        stream_id,
        &Bytes::copy_from_slice(payload),
        &mut out,
    );
    out.take_all()
}
