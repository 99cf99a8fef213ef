//! The chunk reader against the chunk writer, and against an independent encoder that interleaves
//! chunk streams the way the writer never does.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use bytes::Bytes;
use oxcast_rtmp::chunk::{
    ChunkError, ChunkReader, ChunkWriter, Limits, Outbound, Payload, RawMessage, SharedBudget,
};
use proptest::prelude::*;

fn message() -> impl Strategy<Value = RawMessage> {
    (
        prop_oneof![2u32..10, 60u32..70, 300u32..330, Just(65599u32)],
        prop_oneof![0u32..5000, 0xFF_FFF0u32..0x100_0010, Just(u32::MAX)],
        prop_oneof![Just(8u8), Just(9u8), Just(18u8), Just(20u8)],
        0u32..3,
        prop_oneof![0usize..300, 300usize..5000],
    )
        .prop_map(|(csid, timestamp, type_id, stream_id, len)| RawMessage {
            csid,
            timestamp,
            type_id,
            stream_id,
            payload: Bytes::from((0..len).map(|i| (i * 7 + len) as u8).collect::<Vec<_>>()),
        })
}

/// Feeds `bytes` in pieces of the given sizes (cycled) and collects every message.
fn read_all(reader: &mut ChunkReader, bytes: &[u8], pieces: &[usize]) -> Vec<RawMessage> {
    let mut out = Vec::new();
    let mut rest = bytes;
    let mut sizes = pieces.iter().cycle();
    while !rest.is_empty() {
        let n = (*sizes.next().unwrap()).clamp(1, rest.len());
        let (piece, tail) = rest.split_at(n);
        rest = tail;
        reader.feed(piece);
        while let Some(message) = reader.next_message().unwrap() {
            out.push(message);
        }
    }
    out
}

/// Timestamps must rise per chunk stream for relative headers to carry them; give each chunk
/// stream a non-decreasing sequence, as a real publisher does (going back forces a type-0 header).
fn ordered(mut messages: Vec<RawMessage>) -> Vec<RawMessage> {
    let mut last: std::collections::HashMap<u32, u32> = Default::default();
    for m in &mut messages {
        if let Some(prev) = last.get(&m.csid)
            && m.timestamp < *prev
            && m.timestamp % 3 != 0
        {
            m.timestamp = *prev;
        }
        last.insert(m.csid, m.timestamp);
    }
    messages
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn writer_to_reader_round_trips(
        messages in prop::collection::vec(message(), 1..40),
        chunk_size in prop_oneof![1u32..16, 100u32..200, Just(4096u32), Just(0x7FFF_FFFF)],
        pieces in prop::collection::vec(1usize..3000, 1..8),
    ) {
        let messages = ordered(messages);
        let mut writer = ChunkWriter::new();
        let mut out = Outbound::new();
        // The chunk size is announced in-band, as a session does it.
        writer.write(2, 0, 1, 0, &Bytes::copy_from_slice(&chunk_size.to_be_bytes()), &mut out);
        writer.set_chunk_size(chunk_size);
        for m in &messages {
            writer.write(m.csid, m.timestamp, m.type_id, m.stream_id, &m.payload, &mut out);
        }
        let bytes = out.take_all();
        let mut reader = ChunkReader::default();
        let read = read_all(&mut reader, &bytes, &pieces);
        prop_assert_eq!(read.len(), messages.len() + 1);
        prop_assert_eq!(reader.chunk_size(), chunk_size);
        prop_assert_eq!(&read[1..], &messages[..]);
        prop_assert_eq!(reader.buffered(), 0);
    }

    #[test]
    fn interleaved_chunk_streams_reassemble(
        messages in prop::collection::vec(message(), 1..12),
        chunk_size in 1u32..300,
        order in prop::collection::vec(any::<prop::sample::Index>(), 0..400),
    ) {
        // One message in flight per chunk stream at a time, like real peers.
        let mut by_csid: Vec<(u32, Vec<RawMessage>)> = Vec::new();
        for mut m in messages {
            // Chunk stream 2 carries the Set Chunk Size this test starts with.
            m.csid = m.csid.max(3);
            match by_csid.iter_mut().find(|(c, _)| *c == m.csid) {
                Some((_, list)) => list.push(m),
                None => by_csid.push((m.csid, vec![m])),
            }
        }
        let mut queues: Vec<std::collections::VecDeque<Vec<u8>>> = by_csid
            .iter()
            .map(|(_, list)| list.iter().flat_map(|m| chunks_of(m, chunk_size)).collect())
            .collect();
        // Set Chunk Size first, then the chunks in the drawn order.
        let mut bytes = [vec![0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0], chunk_size.to_be_bytes().to_vec()].concat();
        let mut picks = order.iter();
        while queues.iter().any(|q| !q.is_empty()) {
            let live: Vec<usize> = (0..queues.len()).filter(|i| !queues[*i].is_empty()).collect();
            let i = picks.next().map_or(live[0], |ix| live[ix.index(live.len())]);
            bytes.extend(queues[i].pop_front().unwrap());
        }
        let mut reader = ChunkReader::default();
        let read = read_all(&mut reader, &bytes, &[7, 100, 1]);
        for (csid, list) in &by_csid {
            let got: Vec<&RawMessage> = read.iter().filter(|m| m.csid == *csid).collect();
            prop_assert_eq!(got.len(), list.len());
            for (g, want) in got.iter().zip(list) {
                prop_assert_eq!(*g, want);
            }
        }
    }

    #[test]
    fn any_bytes_end_in_a_message_none_or_an_error(bytes in prop::collection::vec(any::<u8>(), 0..2000)) {
        let limits = Limits { max_message_size: 4096, max_chunk_streams: 4, max_buffered: 8192 };
        let mut reader = ChunkReader::new(limits);
        reader.feed(&bytes);
        for _ in 0..bytes.len() + 1 {
            match reader.next_message() {
                Ok(Some(m)) => prop_assert!(m.payload.len() <= 4096),
                Ok(None) | Err(_) => break,
            }
        }
        prop_assert!(reader.buffered() <= bytes.len());
    }

    /// Several readers share one budget, each reading its own interleaved chunk streams with
    /// Aborts, replaced messages and a cut-off end, fed in turns and in pieces, until each ends
    /// or fails. At every step the budget holds exactly what the readers hold, never more than its
    /// maximum; once they are dropped it is back at 0.
    #[test]
    fn a_shared_budget_is_never_leaked(
        connections in prop::collection::vec(
            (
                prop::collection::vec(message(), 1..10),
                prop_oneof![1u32..200, Just(4096u32), Just(0x7FFF_FFFF)],
                prop::collection::vec(any::<prop::sample::Index>(), 0..200),
                prop::collection::vec(0u8..8, 0..200),
                any::<prop::sample::Index>(),
            ),
            1..5,
        ),
        max_bytes in prop_oneof![0usize..2000, 2000usize..20_000, Just(usize::MAX)],
        turns in prop::collection::vec((any::<prop::sample::Index>(), 1usize..3000), 1..60),
    ) {
        let budget = SharedBudget::new(max_bytes);
        let limits = Limits { max_message_size: 6000, max_chunk_streams: 64, max_buffered: 12_000 };
        let mut readers: Vec<(ChunkReader, Vec<u8>, bool)> = connections
            .iter()
            .map(|(messages, chunk_size, order, events, cut)| {
                let bytes = interleaved(messages, *chunk_size, order, events);
                let end = cut.index(bytes.len() + 1);
                let mut bytes = bytes;
                bytes.truncate(end);
                (ChunkReader::with_budget(limits, budget.clone()), bytes, false)
            })
            .collect();
        for (pick, size) in turns {
            let i = pick.index(readers.len());
            let (reader, bytes, failed) = &mut readers[i];
            if !*failed && !bytes.is_empty() {
                let piece: Vec<u8> = bytes.drain(..size.min(bytes.len())).collect();
                reader.feed(&piece);
                loop {
                    match reader.next_message() {
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(_) => {
                            *failed = true;
                            break;
                        }
                    }
                }
            }
            let held: usize = readers.iter().map(|(r, _, _)| r.reserved()).sum();
            prop_assert_eq!(budget.in_use(), held);
            prop_assert!(held <= max_bytes);
            prop_assert!(readers.iter().all(|(r, _, _)| r.reserved() <= limits.max_buffered));
        }
        drop(readers);
        prop_assert_eq!(budget.in_use(), 0);
    }
}

/// A connection's chunk stream: Set Chunk Size, then the messages' chunks interleaved in the drawn
/// order, with, between chunks, an Abort of a random chunk stream (event 0), a fresh one-chunk
/// message with a type-0 header on a stream that may be mid-message (event 1), or nothing.
fn interleaved(
    messages: &[RawMessage],
    chunk_size: u32,
    order: &[prop::sample::Index],
    events: &[u8],
) -> Vec<u8> {
    let csids: Vec<u32> = messages.iter().map(|m| m.csid.max(3)).collect();
    let mut queues: Vec<std::collections::VecDeque<Vec<u8>>> = Vec::new();
    let mut queue_csid: Vec<u32> = Vec::new();
    for (m, csid) in messages.iter().zip(&csids) {
        let m = RawMessage {
            csid: *csid,
            ..m.clone()
        };
        match queue_csid.iter().position(|c| c == csid) {
            Some(q) => queues[q].extend(chunks_of(&m, chunk_size)),
            None => {
                queue_csid.push(*csid);
                queues.push(chunks_of(&m, chunk_size).into());
            }
        }
    }
    let mut bytes = [
        vec![0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0],
        chunk_size.to_be_bytes().to_vec(),
    ]
    .concat();
    let mut picks = order.iter();
    let mut events = events.iter().cycle();
    while queues.iter().any(|q| !q.is_empty()) {
        let live: Vec<usize> = (0..queues.len()).filter(|i| !queues[*i].is_empty()).collect();
        let i = picks.next().map_or(live[0], |ix| live[ix.index(live.len())]);
        bytes.extend(queues[i].pop_front().unwrap());
        let target = queue_csid[i.min(queue_csid.len() - 1)];
        match events.next() {
            Some(0) => bytes.extend(
                [0x02, 0, 0, 0, 0, 0, 4, 2, 0, 0, 0, 0]
                    .iter()
                    .chain(&target.to_be_bytes()),
            ),
            Some(1) => {
                let m = RawMessage {
                    csid: target,
                    timestamp: 0,
                    type_id: 8,
                    stream_id: 1,
                    payload: Bytes::from_static(b"x"),
                };
                bytes.extend(chunks_of(&m, chunk_size).concat());
            }
            _ => {}
        }
    }
    bytes
}

/// An encoder written from the spec, independent of `ChunkWriter`: every message starts with a
/// type-0 header and continues with type-3 chunks, extended timestamps repeated on each.
fn chunks_of(m: &RawMessage, chunk_size: u32) -> Vec<Vec<u8>> {
    let basic = |fmt: u8| -> Vec<u8> {
        match m.csid {
            2..=63 => vec![fmt << 6 | m.csid as u8],
            64..=319 => vec![fmt << 6, (m.csid - 64) as u8],
            _ => vec![
                fmt << 6 | 1,
                ((m.csid - 64) & 0xFF) as u8,
                ((m.csid - 64) >> 8) as u8,
            ],
        }
    };
    let extended = m.timestamp >= 0xFF_FFFF;
    let mut first = basic(0);
    first.extend_from_slice(&m.timestamp.min(0xFF_FFFF).to_be_bytes()[1..]);
    first.extend_from_slice(&(m.payload.len() as u32).to_be_bytes()[1..]);
    first.push(m.type_id);
    first.extend_from_slice(&m.stream_id.to_le_bytes());
    let mut out = Vec::new();
    let mut header = first;
    let mut pieces = m.payload.chunks(chunk_size as usize).peekable();
    if pieces.peek().is_none() {
        if extended {
            header.extend_from_slice(&m.timestamp.to_be_bytes());
        }
        return vec![header];
    }
    for piece in pieces {
        if extended {
            header.extend_from_slice(&m.timestamp.to_be_bytes());
        }
        header.extend_from_slice(piece);
        out.push(std::mem::replace(&mut header, basic(3)));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// A payload given as a head and a body goes on the wire byte for byte as the two joined, with
    /// the same header compression for the messages after it: at any split (empty head, empty body,
    /// on a chunk boundary, straddling one) and any chunk size.
    #[test]
    fn a_payload_in_two_parts_is_written_as_the_whole(
        messages in prop::collection::vec((message(), any::<prop::sample::Index>()), 1..20),
        chunk_size in prop_oneof![1u32..16, 100u32..200, Just(4096u32)],
        near_boundary in any::<bool>(),
    ) {
        let messages: Vec<(RawMessage, prop::sample::Index)> = {
            let (raw, splits): (Vec<_>, Vec<_>) = messages.into_iter().unzip();
            ordered(raw).into_iter().zip(splits).collect()
        };
        let (mut whole, mut parts) = (ChunkWriter::new(), ChunkWriter::new());
        whole.set_chunk_size(chunk_size);
        parts.set_chunk_size(chunk_size);
        let (mut whole_out, mut parts_out) = (Outbound::new(), Outbound::new());
        for (m, split) in &messages {
            let len = m.payload.len();
            // Half the cases split within a byte of a chunk boundary, where the head's last chunk
            // and the body's first meet.
            let at = if near_boundary && len > 0 {
                let boundary = (split.index(len / chunk_size as usize + 1) * chunk_size as usize).min(len);
                (boundary + split.index(3)).saturating_sub(1).min(len)
            } else {
                split.index(len + 1)
            };
            whole.write(m.csid, m.timestamp, m.type_id, m.stream_id, &m.payload, &mut whole_out);
            let body = m.payload.slice(at..);
            let payload = Payload { head: &m.payload[..at], body: &body };
            parts.write(m.csid, m.timestamp, m.type_id, m.stream_id, payload, &mut parts_out);
        }
        prop_assert_eq!(parts_out.len(), whole_out.len());
        prop_assert_eq!(parts_out.take_all(), whole_out.take_all());
    }
}

/// The body of a two-part payload is queued by reference, as a whole payload is: the relay's frames
/// are not copied before the socket.
#[test]
fn the_body_of_a_two_part_payload_is_not_copied() {
    let mut writer = ChunkWriter::new();
    writer.set_chunk_size(4096);
    let mut out = Outbound::new();
    let frame = Bytes::from(vec![7u8; 3000]);
    writer.write(
        6,
        0,
        9,
        1,
        Payload {
            head: &[0x17, 1, 0, 0, 0],
            body: &frame,
        },
        &mut out,
    );
    let segments: Vec<Bytes> = std::iter::from_fn(|| out.pop()).collect();
    assert_eq!(segments.len(), 2, "headers and tag header, then the frame");
    assert_eq!(segments[0].len(), 12 + 5);
    assert_eq!(segments[1].as_ptr(), frame.as_ptr());
    assert_eq!(segments[1].len(), frame.len());
}

#[test]
fn single_chunk_messages_are_slices_of_the_input() {
    let mut writer = ChunkWriter::new();
    let mut out = Outbound::new();
    let payload = Bytes::from(vec![9u8; 100]);
    writer.write(6, 40, 9, 1, &payload, &mut out);
    let mut reader = ChunkReader::default();
    reader.feed(&out.take_all());
    let before = reader.buffer().as_ptr();
    let message = reader.next_message().unwrap().unwrap();
    // The payload points into the input buffer: 12 header bytes past its start.
    assert_eq!(message.payload.as_ptr(), before.wrapping_add(12));
    assert_eq!(message.payload, payload);
}

#[test]
fn limits_are_errors_not_allocations() {
    let limits = Limits {
        max_message_size: 1000,
        max_chunk_streams: 2,
        max_buffered: 1500,
    };
    // Declared length over the message limit.
    let mut reader = ChunkReader::new(limits);
    reader.feed(&[0x03, 0, 0, 0, 0, 0x10, 0, 9, 1, 0, 0, 0]);
    assert_eq!(
        reader.next_message(),
        Err(ChunkError::MessageTooLarge {
            size: 0x1000,
            limit: 1000
        })
    );
    // A third chunk stream.
    let mut reader = ChunkReader::new(limits);
    for csid in 3..=5u8 {
        reader.feed(&[csid, 0, 0, 0, 0, 0, 1, 9, 1, 0, 0, 0, 0xAA]);
    }
    assert_eq!(reader.next_message().unwrap().unwrap().csid, 3);
    assert_eq!(reader.next_message().unwrap().unwrap().csid, 4);
    assert_eq!(reader.next_message(), Err(ChunkError::TooManyChunkStreams(2)));
    // Two messages in progress together over the buffer budget (128-byte chunks: both unfinished).
    let mut reader = ChunkReader::new(limits);
    for csid in 3..=4u8 {
        let mut chunk = vec![csid, 0, 0, 0, 0, 0x03, 0xE8, 9, 1, 0, 0, 0];
        chunk.extend([0; 128]);
        reader.feed(&chunk);
    }
    assert_eq!(reader.next_message(), Err(ChunkError::BufferLimit(1500)));
    // Set Chunk Size 0, and a continuation with no message before it.
    let mut reader = ChunkReader::new(limits);
    reader.feed(&[0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(reader.next_message(), Err(ChunkError::InvalidChunkSize(0)));
    let mut reader = ChunkReader::new(limits);
    reader.feed(&[0xC3, 1, 2, 3]);
    assert_eq!(reader.next_message(), Err(ChunkError::NoPreviousHeader(3)));
}

#[test]
fn abort_drops_the_message_in_progress() {
    let mut reader = ChunkReader::default();
    let mut bytes = vec![0x06, 0, 0, 10, 0, 1, 0, 9, 1, 0, 0, 0];
    bytes.extend([1; 128]);
    // Abort Message for chunk stream 6, then a fresh one-chunk message on it.
    bytes.extend([0x02, 0, 0, 0, 0, 0, 4, 2, 0, 0, 0, 0, 0, 0, 0, 6]);
    bytes.extend([0x06, 0, 0, 20, 0, 0, 2, 9, 1, 0, 0, 0, 7, 7]);
    let read = read_all(&mut reader, &bytes, &[1000]);
    assert_eq!(read.len(), 2);
    assert_eq!(read[0].type_id, 2);
    assert_eq!((read[1].timestamp, &read[1].payload[..]), (20, &[7u8, 7][..]));
}
