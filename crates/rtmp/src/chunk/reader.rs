//! Reassembles messages from chunks, each chunk stream on its own (interleaving is allowed), with
//! memory bounded by [`Limits`] and, across readers, by a [`SharedBudget`].

use bytes::{Buf, BytesMut};
use thiserror::Error;

use super::{DEFAULT_CHUNK_SIZE, EXTENDED_TIMESTAMP, MAX_CHUNK_SIZE, RawMessage, SharedBudget};

/// Bounds on what one peer can make the reader hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest message accepted. A 1080p keyframe at 20 Mbit/s is well under 4 MiB.
    pub max_message_size: u32,
    /// Chunk streams one connection may use; encoders use four or five.
    pub max_chunk_streams: usize,
    /// Bytes held for messages in progress, all chunk streams together.
    pub max_buffered: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_size: 16 << 20,
            max_chunk_streams: 64,
            max_buffered: 32 << 20,
        }
    }
}

/// Why the chunk stream cannot be read further. Every one ends the connection.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChunkError {
    #[error("message of {size} bytes is over the {limit}-byte limit")]
    MessageTooLarge { size: u32, limit: u32 },
    #[error("more than {0} chunk streams in use")]
    TooManyChunkStreams(usize),
    #[error("messages in progress would hold more than {0} bytes")]
    BufferLimit(usize),
    /// The [`SharedBudget`] all readers draw from cannot hold `size` more bytes.
    #[error(
        "the server-wide budget for messages in progress ({max_bytes} bytes) is full: {size} more bytes refused"
    )]
    SharedBudgetFull { size: usize, max_bytes: usize },
    #[error("chunk stream {0} continues a message it never started")]
    NoPreviousHeader(u32),
    #[error("Set Chunk Size of {0} is outside 1..=2147483647")]
    InvalidChunkSize(u32),
    #[error("protocol control message type {type_id} is {len} bytes, too short")]
    ShortControlMessage { type_id: u8, len: usize },
}

/// What a chunk stream remembers between chunks (§5.3.1.2: later headers omit what did not change).
#[derive(Debug)]
struct ChunkStream {
    csid: u32,
    timestamp: u32,
    /// The delta (or, after a type-0 header, the absolute value) a type-3 header repeats.
    timestamp_field: u32,
    extended: bool,
    length: u32,
    type_id: u8,
    stream_id: u32,
    /// The message being reassembled; empty between messages.
    partial: BytesMut,
    /// Bytes of the current message still to come; 0 between messages.
    remaining: u32,
    has_header: bool,
}

impl ChunkStream {
    fn new(csid: u32) -> Self {
        Self {
            csid,
            timestamp: 0,
            timestamp_field: 0,
            extended: false,
            length: 0,
            type_id: 0,
            stream_id: 0,
            partial: BytesMut::new(),
            remaining: 0,
            has_header: false,
        }
    }
}

/// A chunk body larger than this that is still arriving is reserved like a message in progress:
/// after a large Set Chunk Size, a whole message is one chunk, and it waits in the input buffer
/// until its last byte is there. Smaller ones are not, to keep the shared counter out of the common
/// case (encoders use chunks of 128 to 4096 bytes).
const UNRESERVED_CHUNK: usize = 64 << 10;

/// What this reader holds of its `max_buffered`, and the same amount of the shared budget, if
/// there is one: the declared lengths of its multi-chunk messages in progress (what their buffers
/// may grow to), and a large chunk body still arriving.
#[derive(Debug)]
struct Reservations {
    messages: usize,
    pending_chunk: usize,
    shared: Option<SharedBudget>,
}

impl Reservations {
    fn held(&self) -> usize {
        self.messages + self.pending_chunk
    }

    /// Takes `bytes` from `max_buffered`, then from the shared budget; on error, nothing.
    fn take(&mut self, bytes: usize, max_buffered: usize) -> Result<(), ChunkError> {
        if self.held().saturating_add(bytes) > max_buffered {
            return Err(ChunkError::BufferLimit(max_buffered));
        }
        if let Some(shared) = &self.shared
            && !shared.try_reserve(bytes)
        {
            return Err(ChunkError::SharedBudgetFull {
                size: bytes,
                max_bytes: shared.max_bytes(),
            });
        }
        Ok(())
    }

    fn give_back(&self, bytes: usize) {
        if let Some(shared) = &self.shared
            && bytes > 0
        {
            shared.release(bytes);
        }
    }

    fn reserve_message(&mut self, length: u32, max_buffered: usize) -> Result<(), ChunkError> {
        self.take(length as usize, max_buffered)?;
        self.messages += length as usize;
        Ok(())
    }

    /// Never gives back more than is held, so a reader cannot release what another one reserved.
    fn release_message(&mut self, length: u32) {
        let amount = (length as usize).min(self.messages);
        self.messages -= amount;
        self.give_back(amount);
    }

    /// The same chunk is asked for again on every call until it is whole: reserved once.
    fn reserve_pending_chunk(&mut self, body_len: usize, max_buffered: usize) -> Result<(), ChunkError> {
        if self.pending_chunk == body_len {
            return Ok(());
        }
        self.release_pending_chunk();
        self.take(body_len, max_buffered)?;
        self.pending_chunk = body_len;
        Ok(())
    }

    fn release_pending_chunk(&mut self) {
        let amount = std::mem::take(&mut self.pending_chunk);
        self.give_back(amount);
    }
}

impl Drop for Reservations {
    /// A connection that ends mid-message gives what it held back to the other connections.
    fn drop(&mut self) {
        self.give_back(self.held());
    }
}

/// The incoming half of a chunk stream.
///
/// Bytes go in through [`ChunkReader::feed`] (or straight into [`ChunkReader::buffer`] from a
/// socket read); [`ChunkReader::next_message`] returns complete messages. A message that arrived as one
/// chunk is a slice of the input buffer, not a copy; a message in several chunks is copied once, into
/// a buffer of exactly its size. Set Chunk Size and Abort Message are applied here, and still returned.
///
/// A multi-chunk message reserves its declared length when its first chunk is read, from
/// [`Limits::max_buffered`] and from the [`SharedBudget`] given to [`ChunkReader::with_budget`], and
/// gives it back when it completes, is aborted or replaced, or the reader is dropped (a chunk body
/// over 64 KiB is reserved the same way while it arrives).
#[derive(Debug)]
pub struct ChunkReader {
    input: BytesMut,
    streams: Vec<ChunkStream>,
    chunk_size: u32,
    limits: Limits,
    reservations: Reservations,
    received: u64,
}

impl Default for ChunkReader {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

const CONTROL_SET_CHUNK_SIZE: u8 = 1;
const CONTROL_ABORT: u8 = 2;

impl ChunkReader {
    /// A reader bounded by `limits` alone.
    pub fn new(limits: Limits) -> Self {
        Self::with_shared(limits, None)
    }

    /// A reader bounded by `limits` and, together with every reader sharing `budget`, by it.
    pub fn with_budget(limits: Limits, budget: SharedBudget) -> Self {
        Self::with_shared(limits, Some(budget))
    }

    fn with_shared(limits: Limits, shared: Option<SharedBudget>) -> Self {
        Self {
            input: BytesMut::new(),
            streams: Vec::new(),
            chunk_size: DEFAULT_CHUNK_SIZE,
            limits,
            reservations: Reservations {
                messages: 0,
                pending_chunk: 0,
                shared,
            },
            received: 0,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Changes the limits for what is read from now on: a server lifts them once a publish is
    /// accepted. Messages already in progress keep their reservations; lowering `max_buffered` or
    /// `max_chunk_streams` below what is in use only refuses new messages and chunk streams.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// What this reader holds of `max_buffered`, and of the shared budget if it has one: the
    /// declared lengths of its multi-chunk messages in progress, and a chunk body over 64 KiB that
    /// is still arriving.
    pub fn reserved(&self) -> usize {
        self.reservations.held()
    }

    /// Appends bytes from the peer.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.received += bytes.len() as u64;
        self.input.extend_from_slice(bytes);
    }

    /// The input buffer, to read from a socket into without a copy. Call [`ChunkReader::count_received`]
    /// with the number of bytes read so acknowledgements stay right.
    pub fn buffer(&mut self) -> &mut BytesMut {
        &mut self.input
    }

    /// Counts bytes placed directly into [`ChunkReader::buffer`].
    pub fn count_received(&mut self, n: usize) {
        self.received += n as u64;
    }

    /// Every byte received so far, for Acknowledgement (§5.4.3).
    pub fn bytes_received(&self) -> u64 {
        self.received
    }

    /// Bytes received but not yet part of a returned message or a message in progress.
    pub fn buffered(&self) -> usize {
        self.input.len()
    }

    /// The peer's current chunk size.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Returns the next complete message, `Ok(None)` when more input is needed.
    pub fn next_message(&mut self) -> Result<Option<RawMessage>, ChunkError> {
        loop {
            match self.next_chunk()? {
                Chunk::NeedMore => return Ok(None),
                Chunk::Partial => continue,
                Chunk::Message(message) => {
                    self.apply_control(&message)?;
                    return Ok(Some(message));
                }
            }
        }
    }

    fn apply_control(&mut self, message: &RawMessage) -> Result<(), ChunkError> {
        let value = || {
            crate::be_u32(&message.payload, 0).ok_or(ChunkError::ShortControlMessage {
                type_id: message.type_id,
                len: message.payload.len(),
            })
        };
        match message.type_id {
            CONTROL_SET_CHUNK_SIZE => {
                // The top bit must be zero (§5.4.1); some peers set it anyway, so it is masked off.
                let size = value()? & MAX_CHUNK_SIZE;
                if size == 0 {
                    return Err(ChunkError::InvalidChunkSize(size));
                }
                self.chunk_size = size;
            }
            CONTROL_ABORT => {
                let csid = value()?;
                // Only a message in progress holds a reservation: aborting a finished one (or the
                // same one twice) must not give back budget that messages in progress still use.
                let in_progress = self
                    .streams
                    .iter_mut()
                    .find(|s| s.csid == csid && s.remaining > 0);
                if let Some(stream) = in_progress {
                    self.reservations.release_message(stream.length);
                    stream.partial = BytesMut::new();
                    stream.remaining = 0;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn stream_index(&mut self, csid: u32) -> Result<usize, ChunkError> {
        if let Some(i) = self.streams.iter().position(|s| s.csid == csid) {
            return Ok(i);
        }
        if self.streams.len() >= self.limits.max_chunk_streams {
            return Err(ChunkError::TooManyChunkStreams(self.limits.max_chunk_streams));
        }
        self.streams.push(ChunkStream::new(csid));
        Ok(self.streams.len() - 1)
    }

    /// Parses one chunk if all of it is buffered.
    fn next_chunk(&mut self) -> Result<Chunk, ChunkError> {
        let Some((fmt, csid, basic_len)) = basic_header(&self.input) else {
            return Ok(Chunk::NeedMore);
        };
        let header_len = basic_len + message_header_len(fmt);
        // Zero-padded to the longest header, so fields a short header lacks read as zero.
        let mut header = [0u8; 12];
        let Some(bytes) = self.input.get(basic_len..header_len) else {
            return Ok(Chunk::NeedMore);
        };
        header.iter_mut().zip(bytes).for_each(|(slot, b)| *slot = *b);
        let u24 = |at: usize| crate::be_u32(&header, at).map_or(0, |v| v >> 8);

        let index = self.stream_index(csid)?;
        let chunk_size = self.chunk_size;
        let max_message_size = self.limits.max_message_size;
        let Some(stream) = self.streams.get_mut(index) else {
            return Ok(Chunk::NeedMore);
        };
        if fmt != 0 && !stream.has_header {
            return Err(ChunkError::NoPreviousHeader(csid));
        }
        // The timestamp field of this header, or, for type 3, the one it repeats.
        let (field, extended) = if fmt < 3 {
            let field = u24(0);
            (field, field == EXTENDED_TIMESTAMP)
        } else {
            (stream.timestamp_field, stream.extended)
        };
        let mut pos = header_len;
        let field = if extended {
            // Type-3 chunks repeat the extended timestamp after a header that had one (§5.3.1.3).
            let Some(value) = crate::be_u32(&self.input, pos) else {
                return Ok(Chunk::NeedMore);
            };
            pos += 4;
            value
        } else {
            field
        };
        let (length, type_id) = if fmt <= 1 {
            (u24(3), header[6])
        } else {
            (stream.length, stream.type_id)
        };
        // The one little-endian field of RTMP (§5.3.1.2.1).
        let stream_id = if fmt == 0 {
            crate::be_u32(&header, 7).map_or(0, u32::swap_bytes)
        } else {
            stream.stream_id
        };

        let continuing = fmt == 3 && stream.remaining > 0;
        if !continuing && length > max_message_size {
            return Err(ChunkError::MessageTooLarge {
                size: length,
                limit: max_message_size,
            });
        }
        let remaining = if continuing { stream.remaining } else { length };
        let body_len = remaining.min(chunk_size) as usize;
        if self.input.len() < pos + body_len {
            if body_len > UNRESERVED_CHUNK {
                self.reservations
                    .reserve_pending_chunk(body_len, self.limits.max_buffered)?;
            }
            return Ok(Chunk::NeedMore);
        }
        self.reservations.release_pending_chunk();

        // The whole chunk is here: commit the header, then take the body.
        if !continuing {
            if stream.remaining > 0 {
                // A new header in the middle of a message drops the unfinished one, as Abort would.
                self.reservations.release_message(stream.length);
                stream.partial = BytesMut::new();
                stream.remaining = 0;
            }
            let multi_chunk = length > chunk_size;
            if multi_chunk {
                // Before the header is committed: a refusal leaves no message in progress.
                self.reservations
                    .reserve_message(length, self.limits.max_buffered)?;
                stream.partial = BytesMut::with_capacity(length as usize);
            }
            stream.timestamp = match fmt {
                0 => field,
                _ => stream.timestamp.wrapping_add(field),
            };
            stream.timestamp_field = field;
            stream.extended = extended;
            stream.length = length;
            stream.type_id = type_id;
            stream.stream_id = stream_id;
            stream.has_header = true;
            stream.remaining = length;
        }
        self.input.advance(pos);

        if !continuing && length <= chunk_size {
            // The whole message is one chunk: hand out a slice of the input, no copy.
            let payload = self.input.split_to(body_len).freeze();
            stream.remaining = 0;
            return Ok(Chunk::Message(message_of(stream, payload)));
        }
        stream
            .partial
            .extend_from_slice(self.input.get(..body_len).unwrap_or_default());
        self.input.advance(body_len);
        stream.remaining -= body_len as u32;
        if stream.remaining > 0 {
            return Ok(Chunk::Partial);
        }
        self.reservations.release_message(stream.length);
        let payload = std::mem::take(&mut stream.partial).freeze();
        Ok(Chunk::Message(message_of(stream, payload)))
    }
}

/// Message header sizes for formats 0..=3 (§5.3.1.2).
fn message_header_len(fmt: u8) -> usize {
    match fmt {
        0 => 11,
        1 => 7,
        2 => 3,
        _ => 0,
    }
}

/// The basic header (§5.3.1.1): format, chunk stream id, and its own length (1 to 3 bytes).
fn basic_header(input: &[u8]) -> Option<(u8, u32, usize)> {
    let first = *input.first()?;
    let fmt = first >> 6;
    Some(match first & 0x3F {
        0 => (fmt, 64 + u32::from(*input.get(1)?), 2),
        1 => (
            fmt,
            64 + u32::from(*input.get(1)?) + 256 * u32::from(*input.get(2)?),
            3,
        ),
        n => (fmt, u32::from(n), 1),
    })
}

fn message_of(stream: &ChunkStream, payload: bytes::Bytes) -> RawMessage {
    RawMessage {
        csid: stream.csid,
        timestamp: stream.timestamp,
        type_id: stream.type_id,
        stream_id: stream.stream_id,
        payload,
    }
}

enum Chunk {
    NeedMore,
    /// A chunk was consumed; its message is not complete yet.
    Partial,
    Message(RawMessage),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A type-0 chunk: `length` declared, `body` its first (or only) chunk's bytes.
    fn chunk(csid: u8, length: u32, type_id: u8, body: &[u8]) -> Vec<u8> {
        let mut bytes = vec![csid, 0, 0, 0];
        bytes.extend_from_slice(&length.to_be_bytes()[1..]);
        bytes.extend_from_slice(&[type_id, 1, 0, 0, 0]);
        bytes.extend_from_slice(body);
        bytes
    }

    fn abort(csid: u8) -> Vec<u8> {
        chunk(2, 4, CONTROL_ABORT, &[0, 0, 0, csid])
    }

    /// The `chunk_reader` fuzz target's heap check, minimized (fuzz/corpus/chunk_reader/
    /// regression-abort-reservation): Abort gave back the reservation of a chunk stream with no
    /// message in progress, so aborting one stream again and again let any number of declared-size
    /// buffers be held at once, past `max_buffered`.
    #[test]
    fn abort_without_a_message_in_progress_frees_no_budget() {
        let mut reader = ChunkReader::new(Limits {
            max_message_size: 8192,
            max_chunk_streams: 16,
            max_buffered: 16384,
        });
        let mut bytes = chunk(3, 8192, 9, &[0; 128]);
        bytes.extend(chunk(4, 8192, 9, &[0; 128]));
        bytes.extend(abort(3));
        bytes.extend(chunk(5, 8192, 9, &[0; 128]));
        // Stream 3 has nothing in progress any more: this must not release a reservation.
        bytes.extend(abort(3));
        bytes.extend(chunk(6, 8192, 9, &[0; 128]));
        reader.feed(&bytes);
        assert_eq!(reader.next_message().unwrap().unwrap().type_id, CONTROL_ABORT);
        assert_eq!(reader.next_message().unwrap().unwrap().type_id, CONTROL_ABORT);
        assert_eq!(reader.reserved(), 16384);
        assert_eq!(reader.next_message(), Err(ChunkError::BufferLimit(16384)));
    }

    #[test]
    fn abort_of_a_one_chunk_message_frees_no_budget() {
        let mut reader = ChunkReader::new(Limits {
            max_message_size: 1000,
            max_chunk_streams: 8,
            max_buffered: 1000,
        });
        let mut bytes = chunk(3, 1000, 9, &[0; 128]);
        bytes.extend(chunk(4, 100, 9, &[0; 100]));
        bytes.extend(abort(4));
        reader.feed(&bytes);
        assert_eq!(reader.next_message().unwrap().unwrap().csid, 4);
        assert_eq!(reader.next_message().unwrap().unwrap().type_id, CONTROL_ABORT);
        assert_eq!(reader.reserved(), 1000);
    }

    fn limits(max_message_size: u32, max_buffered: usize) -> Limits {
        Limits {
            max_message_size,
            max_chunk_streams: 16,
            max_buffered,
        }
    }

    /// The first 128-byte chunk of a message of `length` bytes, then its remaining chunks.
    fn first_and_rest(csid: u8, length: u32) -> (Vec<u8>, Vec<u8>) {
        let first = chunk(csid, length, 9, &[7; 128]);
        let mut rest = Vec::new();
        let mut left = length as usize - 128;
        while left > 0 {
            rest.push(0xC0 | csid);
            rest.extend(std::iter::repeat_n(7, left.min(128)));
            left -= left.min(128);
        }
        (first, rest)
    }

    #[test]
    fn a_multi_chunk_message_holds_the_shared_budget_until_it_completes() {
        let budget = SharedBudget::new(10_000);
        let mut reader = ChunkReader::with_budget(limits(4000, 8000), budget.clone());
        // A one-chunk message reserves nothing: it is a slice of the input.
        reader.feed(&chunk(3, 100, 9, &[1; 100]));
        assert!(reader.next_message().unwrap().is_some());
        assert_eq!(budget.in_use(), 0);
        let (first, rest) = first_and_rest(4, 1000);
        reader.feed(&first);
        assert_eq!(reader.next_message(), Ok(None));
        assert_eq!((budget.in_use(), reader.reserved()), (1000, 1000));
        reader.feed(&rest);
        assert_eq!(reader.next_message().unwrap().unwrap().payload.len(), 1000);
        assert_eq!((budget.in_use(), reader.reserved()), (0, 0));
    }

    #[test]
    fn abort_and_a_new_header_give_the_shared_budget_back() {
        let budget = SharedBudget::new(10_000);
        let mut reader = ChunkReader::with_budget(limits(4000, 8000), budget.clone());
        reader.feed(&first_and_rest(3, 1000).0);
        reader.feed(&first_and_rest(4, 2000).0);
        assert_eq!(reader.next_message(), Ok(None));
        assert_eq!(budget.in_use(), 3000);
        reader.feed(&abort(3));
        assert_eq!(reader.next_message().unwrap().unwrap().type_id, CONTROL_ABORT);
        assert_eq!(budget.in_use(), 2000);
        // Aborting it again gives nothing back: nothing is in progress on it.
        reader.feed(&abort(3));
        assert!(reader.next_message().unwrap().is_some());
        assert_eq!(budget.in_use(), 2000);
        // A type-0 header on stream 4 replaces its unfinished message with a one-chunk one.
        reader.feed(&chunk(4, 10, 9, &[2; 10]));
        assert_eq!(reader.next_message().unwrap().unwrap().payload.len(), 10);
        assert_eq!((budget.in_use(), reader.reserved()), (0, 0));
    }

    #[test]
    fn dropping_a_reader_gives_its_share_back() {
        let budget = SharedBudget::new(10_000);
        let mut one = ChunkReader::with_budget(limits(4000, 8000), budget.clone());
        let mut two = ChunkReader::with_budget(limits(4000, 8000), budget.clone());
        one.feed(&first_and_rest(3, 3000).0);
        two.feed(&first_and_rest(3, 4000).0);
        assert_eq!((one.next_message(), two.next_message()), (Ok(None), Ok(None)));
        assert_eq!(budget.in_use(), 7000);
        drop(one);
        assert_eq!(budget.in_use(), 4000);
        drop(two);
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn a_spent_shared_budget_is_a_typed_error_that_holds_nothing() {
        let budget = SharedBudget::new(5000);
        let mut one = ChunkReader::with_budget(limits(4000, 8000), budget.clone());
        let mut two = ChunkReader::with_budget(limits(4000, 8000), budget.clone());
        one.feed(&first_and_rest(3, 4000).0);
        assert_eq!(one.next_message(), Ok(None));
        two.feed(&first_and_rest(3, 1001).0);
        let error = two.next_message().unwrap_err();
        assert_eq!(
            error,
            ChunkError::SharedBudgetFull {
                size: 1001,
                max_bytes: 5000
            }
        );
        assert_eq!(
            error.to_string(),
            "the server-wide budget for messages in progress (5000 bytes) is full: 1001 more bytes refused"
        );
        // The refused message was not started: the reader holds nothing, the budget only `one`'s.
        assert_eq!((two.reserved(), budget.in_use()), (0, 4000));
        // Its own `max_buffered` is checked first.
        let mut small = ChunkReader::with_budget(limits(4000, 500), budget.clone());
        small.feed(&first_and_rest(3, 501).0);
        assert_eq!(small.next_message(), Err(ChunkError::BufferLimit(500)));
        assert_eq!(budget.in_use(), 4000);
    }

    /// After a large Set Chunk Size a whole message is one chunk, waiting in the input buffer until
    /// its last byte: a large one is reserved like a message in progress while it arrives.
    #[test]
    fn a_large_chunk_still_arriving_is_reserved() {
        let budget = SharedBudget::new(1 << 20);
        let mut reader = ChunkReader::with_budget(limits(1 << 20, 1 << 20), budget.clone());
        reader.feed(&chunk(
            2,
            4,
            CONTROL_SET_CHUNK_SIZE,
            &0x7FFF_FFFFu32.to_be_bytes(),
        ));
        assert!(reader.next_message().unwrap().is_some());
        let body = vec![3u8; 600 << 10];
        let whole = chunk(6, body.len() as u32, 9, &body);
        let (head, tail) = whole.split_at(100 << 10);
        reader.feed(head);
        assert_eq!(reader.next_message(), Ok(None));
        assert_eq!(reader.next_message(), Ok(None), "reserved once");
        assert_eq!((reader.reserved(), budget.in_use()), (600 << 10, 600 << 10));
        // Another reader's large chunk does not fit beside it.
        let mut other = ChunkReader::with_budget(limits(1 << 20, 1 << 20), budget.clone());
        other.feed(&chunk(
            2,
            4,
            CONTROL_SET_CHUNK_SIZE,
            &0x7FFF_FFFFu32.to_be_bytes(),
        ));
        other.feed(&chunk(6, 500 << 10, 9, &[0; 100]));
        assert!(other.next_message().unwrap().is_some());
        assert_eq!(
            other.next_message(),
            Err(ChunkError::SharedBudgetFull {
                size: 500 << 10,
                max_bytes: 1 << 20
            })
        );
        reader.feed(tail);
        assert_eq!(reader.next_message().unwrap().unwrap().payload, body);
        assert_eq!((reader.reserved(), budget.in_use()), (0, 0));
        // Chunks up to 64 KiB are not: encoders' chunks stay off the shared counter.
        let small = chunk(6, 64 << 10, 9, &[0; 1000]);
        reader.feed(&small);
        assert_eq!(reader.next_message(), Ok(None));
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn new_limits_apply_to_what_is_read_after_them() {
        // Raised: a message the old limits refused is read; a lowered `max_buffered` refuses new
        // messages while one in progress keeps its reservation.
        let mut reader = ChunkReader::new(limits(1000, 4000));
        let (first, rest) = first_and_rest(3, 1000);
        reader.feed(&first);
        assert_eq!(reader.next_message(), Ok(None));
        reader.set_limits(limits(8000, 1500));
        assert_eq!(reader.limits(), limits(8000, 1500));
        reader.feed(&first_and_rest(4, 5000).0);
        assert_eq!(reader.next_message(), Err(ChunkError::BufferLimit(1500)));
        assert_eq!(reader.reserved(), 1000);

        // Lowered: the message in progress completes; the next one is measured by the new limits.
        let mut reader = ChunkReader::new(limits(1000, 4000));
        reader.feed(&first);
        assert_eq!(reader.next_message(), Ok(None));
        reader.set_limits(limits(500, 4000));
        reader.feed(&rest);
        assert_eq!(reader.next_message().unwrap().unwrap().payload.len(), 1000);
        reader.feed(&chunk(3, 600, 9, &[0; 128]));
        assert_eq!(
            reader.next_message(),
            Err(ChunkError::MessageTooLarge {
                size: 600,
                limit: 500
            })
        );
    }
}
