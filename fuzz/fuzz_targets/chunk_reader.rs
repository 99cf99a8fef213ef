//! The chunk reader on arbitrary post-handshake bytes, delivered in arbitrary pieces, under small
//! limits so that the fuzzer reaches them.
//!
//! Input: `[flags, plan0, plan1, plan2, plan3, chunk stream bytes...]`. Bit 0 of `flags` puts the
//! bytes in through `buffer()` + `count_received()` instead of `feed()`; bit 1 gives the reader a
//! `SharedBudget` smaller than its `max_buffered` (`ChunkReader::with_budget`).
//!
//! Checked besides "no panic": every message is at most `max_message_size`; `buffered()` never
//! exceeds the bytes fed, nor does it plus every payload returned; the byte count for
//! acknowledgements is exact; the chunk size stays in 1..=2^31-1; the heap the reader holds stays
//! within what `Limits` promises (messages in progress bounded by `max_buffered`, on top of the
//! unread input), measured by a counting allocator; what it reserves stays within `max_buffered`,
//! the shared budget holds exactly what the reader reserved, and is back at 0 once it is dropped.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oxcast_rtmp::{ChunkReader, Limits, SharedBudget};
use oxcast_rtmp_fuzz::{Counting, header, live_heap, pieces};

const LIMITS: Limits = Limits {
    max_message_size: 8 << 10,
    max_chunk_streams: 16,
    max_buffered: 16 << 10,
};

/// Smaller than `max_buffered`, so that the shared budget refuses before the reader's own limit.
const SHARED_BYTES: usize = 12 << 10;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fuzz_target!(|data: &[u8]| {
    let ([flags, plan @ ..], stream) = header::<5>(data);
    let budget = SharedBudget::new(SHARED_BYTES);
    let shared = flags & 2 != 0;
    let base = live_heap();
    let reader = if shared {
        ChunkReader::with_budget(LIMITS, budget.clone())
    } else {
        ChunkReader::new(LIMITS)
    };
    let check = |reader: &ChunkReader, fed, returned| {
        check_bounds(reader, fed, returned, base);
        assert!(reader.reserved() <= LIMITS.max_buffered);
        let expected = if shared { reader.reserved() } else { 0 };
        assert_eq!(
            budget.in_use(),
            expected,
            "the shared budget is not what the reader holds"
        );
    };
    read(reader, flags, &plan, stream, check);
    assert_eq!(
        budget.in_use(),
        0,
        "the dropped reader kept part of the shared budget"
    );
});

/// Reads `stream` to its end or to the first error, checking after every step; drops the reader.
fn read(
    mut reader: ChunkReader,
    flags: u8,
    plan: &[u8],
    stream: &[u8],
    check: impl Fn(&ChunkReader, usize, usize),
) {
    let mut fed = 0usize;
    let mut returned = 0usize;
    for piece in pieces(plan, stream) {
        fed += piece.len();
        if flags & 1 == 0 {
            reader.feed(piece);
        } else {
            reader.buffer().extend_from_slice(piece);
            reader.count_received(piece.len());
        }
        assert_eq!(reader.bytes_received(), fed as u64);
        loop {
            // The message is dropped at the end of its arm, before the heap is measured.
            let more = match reader.next_message() {
                Ok(Some(message)) => {
                    assert!(
                        message.payload.len() <= LIMITS.max_message_size as usize,
                        "{}-byte message",
                        message.payload.len()
                    );
                    returned += message.payload.len();
                    true
                }
                Ok(None) => false,
                // Every error ends the connection: nothing more is read.
                Err(_) => {
                    check(&reader, fed, returned);
                    return;
                }
            };
            check(&reader, fed, returned);
            if !more {
                break;
            }
        }
    }
}

fn check_bounds(reader: &ChunkReader, fed: usize, returned: usize, base: usize) {
    assert!(
        reader.buffered() <= fed,
        "{} buffered of {fed} fed",
        reader.buffered()
    );
    assert!(
        reader.buffered() + returned <= fed,
        "{} buffered + {returned} returned > {fed} fed",
        reader.buffered()
    );
    assert!((1..=0x7FFF_FFFF).contains(&reader.chunk_size()));
    // Unread input may sit in a buffer up to twice its size (and one message may still share the
    // old one); messages in progress are reserved at their declared size, all of them together at
    // most `max_buffered`; 4 KiB cover the per-stream state.
    let held = live_heap().saturating_sub(base);
    let bound = 4 * fed + LIMITS.max_buffered + (4 << 10);
    assert!(
        held <= bound,
        "the reader holds {held} heap bytes after {fed} input bytes (bound {bound})"
    );
}
