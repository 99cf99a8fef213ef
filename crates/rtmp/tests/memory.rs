//! What hostile input makes the crate allocate, measured by a counting allocator: the peak heap of
//! the test's own thread while the input is read (tests run on threads of their own, so they do not
//! see each other's allocations).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
// A global allocator is unsafe to implement; this one only counts and forwards to the system's.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use oxcast_rtmp::amf0::{self, Amf0Error};

struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    // `try_with`: a thread being torn down has no counters left, and must still allocate.
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        count(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // Counted as the copy a moving realloc makes: old and new are both live for a moment.
            count(new_size as isize);
            count(-(layout.size() as isize));
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns its result with the most heap it held at once, above what was live before.
fn peak_heap<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|peak| peak.set(base));
    let out = f();
    let peak = PEAK.with(Cell::get);
    (out, (peak - base).max(0) as usize)
}

const MIB: usize = 1 << 20;

fn strict_array_header(count: u32) -> Vec<u8> {
    let mut bytes = vec![0x0A];
    bytes.extend(count.to_be_bytes());
    bytes
}

/// A strict array of `count` one-byte nulls.
fn null_bomb(count: u32) -> Vec<u8> {
    let mut bytes = strict_array_header(count);
    bytes.resize(bytes.len() + count as usize, 0x05);
    bytes
}

#[test]
fn a_4_mib_null_bomb_holds_at_most_the_values_of_max_values() {
    let bomb = null_bomb(4 << 20);
    let (result, peak) = peak_heap(|| amf0::read_all(&bomb));
    assert_eq!(result, Err(Amf0Error::TooManyValues));
    // 65,536 32-byte values are 2 MiB, 3 MiB while the vector last doubled. Reserving from the
    // count took 128 MiB.
    assert!(peak <= 3 * MIB + 4096, "{peak} bytes");
    let (values, peak) = peak_heap(|| amf0::read_prefix(&bomb));
    assert!(values.is_empty());
    assert!(peak <= 3 * MIB + 4096, "{peak} bytes");
}

#[test]
fn nested_null_bombs_hold_at_most_the_values_of_max_values() {
    // 32 levels, each holding the next and 4000 nulls and claiming every byte after its header.
    let mut bytes = Vec::new();
    for _ in 0..32 {
        let mut level = strict_array_header(bytes.len() as u32 + 4000);
        level.append(&mut bytes);
        level.extend([0x05; 4000]);
        bytes = level;
    }
    let (result, peak) = peak_heap(|| amf0::read_all(&bytes));
    assert_eq!(result, Err(Amf0Error::TooManyValues));
    assert!(peak <= 4 * MIB, "{peak} bytes");
}

#[test]
fn a_count_is_never_reserved_up_front() {
    // Claims 1 Mi elements and has the bytes for them, but the second element is unreadable: only
    // what was read was ever allocated.
    let mut bytes = strict_array_header(1 << 20);
    bytes.push(0x05);
    bytes.resize(bytes.len() + (1 << 20), 0x11);
    let (result, peak) = peak_heap(|| amf0::read_all(&bytes));
    assert_eq!(result, Err(Amf0Error::UnsupportedType(0x11)));
    assert!(peak <= 1024, "{peak} bytes");
}
