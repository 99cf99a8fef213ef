//! The chunk reader on arbitrary post-handshake bytes, delivered in arbitrary pieces, under small
//! limits so that the fuzzer reaches them.
//!
//! Input: `[flags, plan0, plan1, plan2, plan3, chunk stream bytes...]`. Bit 0 of `flags` puts the
//! bytes in through `buffer()` + `count_received()` instead of `feed()`.
//!
//! Checked besides "no panic": every message is at most `max_message_size`; `buffered()` never
//! exceeds the bytes fed, nor does it plus every payload returned; the byte count for
//! acknowledgements is exact; the chunk size stays in 1..=2^31-1; and the heap the reader holds stays
//! within what `Limits` promises (messages in progress bounded by `max_buffered`, on top of the
//! unread input), measured by a counting allocator.
#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use libfuzzer_sys::fuzz_target;
use oxcast_rtmp::{ChunkReader, Limits};
use oxcast_rtmp_fuzz::{header, pieces};

const LIMITS: Limits = Limits {
    max_message_size: 8 << 10,
    max_chunk_streams: 16,
    max_buffered: 16 << 10,
};

/// Live heap bytes of the Rust side (libFuzzer's own C++ allocations do not pass through here).
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            LIVE.fetch_add(new_size, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fuzz_target!(|data: &[u8]| {
    let ([flags, plan @ ..], stream) = header::<5>(data);
    let base = LIVE.load(Ordering::Relaxed);
    let mut reader = ChunkReader::new(LIMITS);
    let mut fed = 0usize;
    let mut returned = 0usize;
    for piece in pieces(&plan, stream) {
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
                    check(&reader, fed, returned, base);
                    return;
                }
            };
            check(&reader, fed, returned, base);
            if !more {
                break;
            }
        }
    }
});

fn check(reader: &ChunkReader, fed: usize, returned: usize, base: usize) {
    assert!(reader.buffered() <= fed, "{} buffered of {fed} fed", reader.buffered());
    assert!(
        reader.buffered() + returned <= fed,
        "{} buffered + {returned} returned > {fed} fed",
        reader.buffered()
    );
    assert!((1..=0x7FFF_FFFF).contains(&reader.chunk_size()));
    // Unread input may sit in a buffer up to twice its size (and one message may still share the
    // old one); messages in progress are reserved at their declared size, all of them together at
    // most `max_buffered`; 4 KiB cover the per-stream state.
    let held = LIVE.load(Ordering::Relaxed).saturating_sub(base);
    let bound = 4 * fed + LIMITS.max_buffered + (4 << 10);
    assert!(
        held <= bound,
        "the reader holds {held} heap bytes after {fed} input bytes (bound {bound})"
    );
}
