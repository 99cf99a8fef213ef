//! Cuts messages into chunks with the smallest header the previous one on the same chunk stream
//! allows (§5.3.1.2). Payloads are never copied: each chunk body is a slice of the message's `Bytes`,
//! so one message goes to any number of connections by reference count, each with its own headers.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use super::{DEFAULT_CHUNK_SIZE, EXTENDED_TIMESTAMP, MAX_CHUNK_SIZE};

/// Payloads shorter than this are copied next to their header: one small copy costs less than a
/// separate buffer segment.
const INLINE_PAYLOAD: usize = 256;

/// Bytes waiting to be sent, as a queue of buffers (headers and payload slices).
#[derive(Debug, Default)]
pub struct Outbound {
    segments: VecDeque<Bytes>,
    /// Headers and small payloads gather here until a payload slice or a read needs them.
    pending: BytesMut,
    len: usize,
}

impl Outbound {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes queued in all.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queues bytes by copying them.
    pub fn put_slice(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
        self.len += bytes.len();
    }

    /// Queues bytes by reference.
    pub fn put_bytes(&mut self, bytes: Bytes) {
        if bytes.len() < INLINE_PAYLOAD {
            self.put_slice(&bytes);
            return;
        }
        self.seal();
        self.len += bytes.len();
        self.segments.push_back(bytes);
    }

    fn seal(&mut self) {
        if !self.pending.is_empty() {
            self.segments.push_back(self.pending.split().freeze());
        }
    }

    /// Takes the next buffer to send, in order.
    pub fn pop(&mut self) -> Option<Bytes> {
        if self.segments.is_empty() {
            self.seal();
        }
        let next = self.segments.pop_front()?;
        self.len -= next.len();
        Some(next)
    }

    /// Takes everything queued as one contiguous buffer.
    pub fn take_all(&mut self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len);
        while let Some(segment) = self.pop() {
            out.extend_from_slice(&segment);
        }
        out
    }
}

/// A message payload as the writer takes it: `head`, copied in front, then `body`, sent by
/// reference. A relay puts the few bytes of an FLV tag header in front of a frame this way, and the
/// frame stays the slice of what the publisher sent (no buffer of the two joined).
#[derive(Debug, Clone, Copy)]
pub struct Payload<'a> {
    pub head: &'a [u8],
    pub body: &'a Bytes,
}

impl<'a> From<&'a Bytes> for Payload<'a> {
    fn from(body: &'a Bytes) -> Self {
        Payload { head: &[], body }
    }
}

impl Payload<'_> {
    /// Bytes in all.
    pub fn len(&self) -> usize {
        self.head.len() + self.body.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug)]
struct OutStream {
    csid: u32,
    /// False until the first message: the first header must be type 0.
    known: bool,
    timestamp: u32,
    /// The delta a type-3 header would repeat; `None` after a type-0 header, whose field some
    /// receivers (nginx-rtmp) and others (ffmpeg) read differently when repeated.
    delta: Option<u32>,
    extended: bool,
    length: u32,
    type_id: u8,
    stream_id: u32,
}

/// The outgoing half of a chunk stream.
#[derive(Debug)]
pub struct ChunkWriter {
    chunk_size: u32,
    streams: Vec<OutStream>,
}

impl Default for ChunkWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkWriter {
    pub fn new() -> Self {
        Self {
            chunk_size: DEFAULT_CHUNK_SIZE,
            streams: Vec::new(),
        }
    }

    /// The chunk size in use. Change it only right after queueing the Set Chunk Size message that
    /// announces it.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    pub fn set_chunk_size(&mut self, size: u32) {
        self.chunk_size = size.clamp(1, MAX_CHUNK_SIZE);
    }

    /// Queues one message on chunk stream `csid` (2..=65599): a whole payload (`&Bytes`), or a
    /// [`Payload`] in two parts, which goes on the wire exactly as the two joined would.
    pub fn write<'a>(
        &mut self,
        csid: u32,
        timestamp: u32,
        type_id: u8,
        stream_id: u32,
        payload: impl Into<Payload<'a>>,
        out: &mut Outbound,
    ) {
        let Payload { head, body } = payload.into();
        let length = (head.len() + body.len()) as u32;
        let index = match self.streams.iter().position(|s| s.csid == csid) {
            Some(i) => i,
            None => {
                self.streams.push(OutStream {
                    csid,
                    known: false,
                    timestamp: 0,
                    delta: None,
                    extended: false,
                    length: 0,
                    type_id: 0,
                    stream_id: 0,
                });
                self.streams.len() - 1
            }
        };
        let Some(stream) = self.streams.get_mut(index) else {
            return;
        };
        // Timestamps only move forward within a message stream; going back needs an absolute value.
        let (fmt, field) = if !stream.known || stream.stream_id != stream_id || timestamp < stream.timestamp {
            (0u8, timestamp)
        } else {
            let delta = timestamp - stream.timestamp;
            if stream.length != length || stream.type_id != type_id {
                (1, delta)
            } else if stream.delta == Some(delta) {
                (3, delta)
            } else {
                (2, delta)
            }
        };
        let extended = if fmt == 3 {
            stream.extended
        } else {
            field >= EXTENDED_TIMESTAMP
        };
        *stream = OutStream {
            csid,
            known: true,
            timestamp,
            delta: (fmt != 0).then_some(field),
            extended,
            length,
            type_id,
            stream_id,
        };

        put_basic_header(out, fmt, csid);
        let field24 = if extended { EXTENDED_TIMESTAMP } else { field };
        if fmt <= 2 {
            out.put_slice(&field24.to_be_bytes()[1..]);
        }
        if fmt <= 1 {
            out.put_slice(&length.to_be_bytes()[1..]);
            out.put_slice(&[type_id]);
        }
        if fmt == 0 {
            out.put_slice(&stream_id.to_le_bytes());
        }
        if extended {
            out.put_slice(&field.to_be_bytes());
        }

        let chunk = self.chunk_size as usize;
        let total = head.len() + body.len();
        let mut offset = 0;
        loop {
            let end = (offset + chunk).min(total);
            // The chunk's share of the head, then of the body: either may be empty.
            out.put_slice(
                head.get(offset.min(head.len())..end.min(head.len()))
                    .unwrap_or_default(),
            );
            let (from, to) = (offset.saturating_sub(head.len()), end.saturating_sub(head.len()));
            if to > from {
                out.put_bytes(body.slice(from..to));
            }
            offset = end;
            if offset >= total {
                break;
            }
            // Continuation: type-3 basic header, plus the extended timestamp again if there is one.
            put_basic_header(out, 3, csid);
            if extended {
                out.put_slice(&field.to_be_bytes());
            }
        }
    }
}

fn put_basic_header(out: &mut Outbound, fmt: u8, csid: u32) {
    let fmt = fmt << 6;
    match csid {
        0..=63 => out.put_slice(&[fmt | csid as u8]),
        64..=319 => out.put_slice(&[fmt, (csid - 64) as u8]),
        _ => {
            let v = csid.saturating_sub(64).min(0xFFFF);
            out.put_slice(&[fmt | 1, (v & 0xFF) as u8, (v >> 8) as u8]);
        }
    }
}
