//! A publishing client session on arbitrary bytes from its server: what a relay reads from a
//! destination it does not control.
//!
//! Input: `[mode, plan0, plan1, plan2, plan3, server bytes...]`. With bit 0 of `mode` set, a valid
//! S0+S1+S2 (version 3, then zeros; the client checks neither S1 nor S2) goes before the server
//! bytes, so the fuzzer spends its time on the chunk stream and the answers rather than on the
//! handshake. Bit 1 gives the client small limits (8 KiB messages, 16 KiB in progress) so that the
//! fuzzer reaches them; otherwise it has `ClientConfig::DEFAULT_LIMITS`. Bits 2-3 pick the
//! handshake scheme (`(mode >> 2) % 3`: simple, digest 0, digest 1). The bytes arrive in pieces cut
//! by `oxcast_rtmp_fuzz::pieces`; outbound bytes are taken after every call, as a socket would send
//! them, and the first error ends the run, as it ends the connection.
//!
//! Checked besides "no panic": the client's first bytes are C0+C1 (1537 bytes, version 3);
//! `Connected` comes at most once and before `Publishing`, which comes at most once and only when
//! `is_publishing()` turns true; and the heap the session holds between calls stays within its
//! limits (messages in progress bounded by `max_buffered`, on top of the unread input and the
//! handshake), measured by a counting allocator.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oxcast_rtmp::handshake::{PACKET_LEN, Scheme};
use oxcast_rtmp::{ClientConfig, ClientEvent, ClientSession, Limits};
use oxcast_rtmp_fuzz::{Counting, after_handshake, header, live_heap, pieces};

const SMALL: Limits = Limits {
    max_message_size: 8 << 10,
    max_chunk_streams: 16,
    max_buffered: 16 << 10,
};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fuzz_target!(|data: &[u8]| {
    let ([mode, plan @ ..], bytes) = header::<5>(data);
    let input = after_handshake(mode, bytes);
    let mut config = ClientConfig::new("live", "rtmp://127.0.0.1/live", "fuzz");
    config.scheme = [Scheme::Simple, Scheme::Digest0, Scheme::Digest1][usize::from((mode >> 2) % 3)];
    if mode & 2 != 0 {
        config.limits = SMALL;
    }
    let limits = config.limits;
    let base = live_heap();
    let mut client = ClientSession::new(config);
    let c0c1 = client.take_outbound();
    assert_eq!(c0c1.len(), 1 + PACKET_LEN);
    assert_eq!(c0c1[0], 3);
    drop(c0c1);

    let (mut connected, mut publishing) = (false, false);
    let mut fed = 0usize;
    for piece in pieces(&plan, &input) {
        fed += piece.len();
        let result = client.handle_input(piece);
        drop(client.take_outbound());
        let Ok(events) = result else {
            check_heap(fed, limits, base);
            return;
        };
        for event in &events {
            match event {
                ClientEvent::Connected => {
                    assert!(!connected, "connected twice");
                    connected = true;
                }
                ClientEvent::Publishing { .. } => {
                    assert!(connected && !publishing, "{events:?}");
                    publishing = true;
                }
                ClientEvent::Status { .. } => {}
            }
        }
        assert_eq!(client.is_publishing(), publishing);
        drop(events);
        check_heap(fed, limits, base);
    }
});

/// Unread input may sit in a buffer up to twice its size (and a message may still share the old
/// one: 4 x fed); messages in progress are reserved at their declared size, together at most
/// `max_buffered`; 64 KiB cover the handshake, the chunk streams' state and the answers queued.
fn check_heap(fed: usize, limits: Limits, base: usize) {
    let held = live_heap().saturating_sub(base);
    let bound = 4 * fed + limits.max_buffered + (64 << 10);
    assert!(
        held <= bound,
        "the client holds {held} heap bytes after {fed} input bytes (bound {bound})"
    );
}
