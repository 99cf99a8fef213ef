//! What the fuzz targets share: cutting one input into the pieces a socket might deliver, and a
//! counting allocator to check what the parsers hold.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Splits `data` into consecutive pieces whose sizes come from `plan`, used cyclically: a plan byte
/// of 0 takes everything left, 1..=127 takes that many bytes, 128..=255 takes `(b - 127) * 64`
/// (64 to 8192). An empty plan gives `data` in one piece. The pieces always cover all of `data`.
pub fn pieces<'a>(plan: &'a [u8], mut data: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut step = plan.iter().cycle();
    std::iter::from_fn(move || {
        if data.is_empty() {
            return None;
        }
        let size = match step.next().copied() {
            None | Some(0) => data.len(),
            Some(b @ 1..=127) => usize::from(b),
            Some(b) => usize::from(b - 127) * 64,
        };
        let (piece, rest) = data.split_at(size.min(data.len()));
        data = rest;
        Some(piece)
    })
}

/// Splits off the first `N` bytes of the input as control bytes; short inputs give zeros.
pub fn header<const N: usize>(data: &[u8]) -> ([u8; N], &[u8]) {
    let mut head = [0u8; N];
    let n = N.min(data.len());
    head[..n].copy_from_slice(&data[..n]);
    (head, &data[n..])
}

/// A whole handshake from the other side in the simple scheme (version 3, then zeros), so that a
/// target reaches the chunk stream without the fuzzer having to find 3073 bytes first.
pub const HANDSHAKE: usize = 1 + 2 * oxcast_rtmp::handshake::PACKET_LEN;

/// `bytes`, after a valid [`HANDSHAKE`] when bit 0 of `mode` is set.
pub fn after_handshake(mode: u8, bytes: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(HANDSHAKE + bytes.len());
    if mode & 1 == 1 {
        input.resize(HANDSHAKE, 0);
        input[0] = 3;
    }
    input.extend_from_slice(bytes);
    input
}

/// A global allocator that counts the live heap bytes of the Rust side (libFuzzer's own C++
/// allocations do not pass through it). A target installs it with
/// `#[global_allocator] static ALLOCATOR: Counting = Counting;` and reads [`live_heap`].
pub struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

/// Heap bytes allocated through [`Counting`] and not yet freed.
pub fn live_heap() -> usize {
    LIVE.load(Ordering::Relaxed)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_the_input() {
        let data: Vec<u8> = (0..=255).cycle().take(20_000).collect();
        for plan in [&[][..], &[0], &[1], &[3, 200, 0], &[128, 255, 7]] {
            let joined: Vec<u8> = pieces(plan, &data).flatten().copied().collect();
            assert_eq!(joined, data);
        }
        assert_eq!(
            pieces(&[2], b"abcde").collect::<Vec<_>>(),
            [&b"ab"[..], b"cd", b"e"]
        );
    }
}
