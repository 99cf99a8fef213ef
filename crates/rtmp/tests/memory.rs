//! What hostile input makes the crate allocate, measured by a counting allocator: the peak heap of
//! the test's own thread while the input is read (tests run on threads of their own, so they do not
//! see each other's allocations).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
// A global allocator is unsafe to implement; this one only counts and forwards to the system's.
#![allow(unsafe_code)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::Bytes;
use common::{chunked, simple_handshake};
use oxcast_rtmp::amf0::{self, Amf0Error, Value};
use oxcast_rtmp::chunk::ChunkError;
use oxcast_rtmp::{ClientConfig, ClientSession, ServerConfig, ServerEvent, ServerSession, SessionError};

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

/// Feeds `input` in pieces until the first error, returning it.
fn feed_until_error(server: &mut ServerSession, input: &[u8], piece: usize) -> Option<SessionError> {
    input
        .chunks(piece)
        .find_map(|bytes| server.handle_input(bytes).err())
}

#[test]
fn a_16_mib_data_message_right_after_the_handshake_costs_a_few_kib() {
    let mut input = simple_handshake();
    input.extend(chunked(128, 3, 18, 0, &null_bomb((16 << 20) - 6)));
    let mut server = ServerSession::new(ServerConfig::default());
    let (error, peak) = peak_heap(|| feed_until_error(&mut server, &input, 64 << 10));
    assert!(
        matches!(
            error,
            Some(SessionError::Chunk(ChunkError::MessageTooLarge {
                limit: 65536,
                ..
            }))
        ),
        "{error:?}"
    );
    // The first 64 KiB piece, the handshake's buffers, and little else.
    assert!(peak <= 256 << 10, "{peak} bytes");
}

/// Client and server back to back until neither has anything to say; requests are accepted.
fn pump(client: &mut ClientSession, server: &mut ServerSession) -> Vec<ServerEvent> {
    let mut events = Vec::new();
    loop {
        let to_server = client.take_outbound();
        let mut batch = server.handle_input(&to_server).unwrap();
        loop {
            match batch.last() {
                Some(ServerEvent::ConnectRequested { .. }) => server.accept_connect().unwrap(),
                Some(ServerEvent::PublishRequested { .. }) => server.accept_publish().unwrap(),
                _ => break,
            }
            events.append(&mut batch);
            batch = server.handle_input(&[]).unwrap();
        }
        events.append(&mut batch);
        let to_client = server.take_outbound();
        if to_server.is_empty() && to_client.is_empty() {
            return events;
        }
        client.handle_input(&to_client).unwrap();
    }
}

#[test]
fn data_before_publish_is_dropped_without_being_decoded() {
    // A connected client (no publish yet) sends a 60 KB data message of nulls: decoding it would
    // hold 1.9 MB of values.
    let mut client = ClientSession::new(ClientConfig::new("streams", "rtmp://h/streams", "k"));
    let mut server = ServerSession::new(ServerConfig::default());
    let first = client.take_outbound();
    server.handle_input(&first).unwrap();
    client.handle_input(&server.take_outbound()).unwrap();
    let mut input = client.take_outbound();
    let connect = server.handle_input(&input).unwrap();
    assert!(matches!(
        connect.last(),
        Some(ServerEvent::ConnectRequested { .. })
    ));
    server.accept_connect().unwrap();
    // The client announced 4096-byte chunks.
    input = chunked(4096, 5, 18, 1, &null_bomb(60_000));
    let (events, peak) = peak_heap(|| server.handle_input(&input).unwrap());
    assert_eq!(events, vec![]);
    // The reassembly buffer of the 60 KB message, and no values.
    assert!(peak <= 160 << 10, "{peak} bytes");
}

#[test]
fn a_publishers_data_bomb_is_decoded_within_the_ceiling() {
    let mut client = ClientSession::new(ClientConfig::new("streams", "rtmp://h/streams", "k"));
    let mut server = ServerSession::new(ServerConfig::default());
    pump(&mut client, &mut server);
    assert!(client.is_publishing());
    // 8 MiB of nulls after "onTextData": the values stop at `MAX_VALUES`.
    let mut payload = amf0::encode(&[Value::string("onTextData")]);
    payload.extend(null_bomb(8 << 20));
    client.send_data(0, &Bytes::from(payload)).unwrap();
    let input = client.take_outbound();
    let (events, peak) = peak_heap(|| {
        let mut events = Vec::new();
        for piece in input.chunks(64 << 10) {
            events.extend(server.handle_input(piece).unwrap());
        }
        events
    });
    let [ServerEvent::Data { values, payload, .. }] = &events[..] else {
        panic!("{events:?}")
    };
    assert_eq!(values, &[Value::string("onTextData")]);
    assert!(payload.len() > 8 << 20);
    // The reassembled message (8 MiB), at most 3 MiB of values while it was read, and the input
    // buffer's pieces. Decoding it before `MAX_VALUES` held 256 MiB of values.
    assert!(peak <= payload.len() + 3 * MIB + (256 << 10), "{peak} bytes");
}
