//! A publishing server session on arbitrary encoder bytes, with requests accepted or rejected.
//!
//! Input: `[mode, decisions, plan0, plan1, plan2, plan3, encoder bytes...]`. With bit 0 of `mode`
//! set, a valid C0+C1+C2 (version 3, then zeros: the simple scheme) goes before the encoder bytes,
//! so the fuzzer spends its time on the chunk stream and the commands rather than on the handshake.
//! With bit 1 set, the session draws on a `SharedBudget` (`ServerSession::with_budget`).
//! The bytes arrive in pieces cut by `oxcast_rtmp_fuzz::pieces`. The n-th request
//! (`ConnectRequested`/`PublishRequested`) is rejected if bit `n % 8` of `decisions` is set, accepted
//! otherwise; then `handle_input(&[])` goes on. Outbound bytes are taken after every call.
//!
//! Errors are fine. Checked besides "no panic": a request event can always be answered; with no
//! request pending, `accept_*`/`reject_*` refuse; an accepted publish shows in `publishing()`; after
//! a rejection no further event comes; the server's first bytes are a 3073-byte S0+S1+S2; no
//! metadata, data, audio or video event comes before a publish is accepted; until then the heap the
//! session holds between calls stays within the pre-publish limits (`ServerConfig::pre_publish`:
//! messages in progress, on top of the unread input and the handshake), and after it within the
//! publishing ones; the shared budget is back at 0 once the session is dropped.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oxcast_rtmp::{Limits, PublishRejection, ServerConfig, ServerEvent, ServerSession, SharedBudget};
use oxcast_rtmp_fuzz::{Counting, HANDSHAKE, after_handshake, header, live_heap, pieces};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fuzz_target!(|data: &[u8]| {
    let ([mode, decisions, plan @ ..], bytes) = header::<6>(data);
    let input = after_handshake(mode, bytes);
    let budget = SharedBudget::new(1 << 20);
    let base = live_heap();
    let server = if mode & 2 == 0 {
        ServerSession::new(ServerConfig::default())
    } else {
        ServerSession::with_budget(ServerConfig::default(), budget.clone())
    };
    run(server, decisions, &plan, &input, base);
    assert_eq!(
        budget.in_use(),
        0,
        "the dropped session kept part of the shared budget"
    );
});

fn run(mut server: ServerSession, decisions: u8, plan: &[u8], input: &[u8], base: usize) {
    let mut requests = 0u32;
    let mut refused = false;
    let mut accepted = false;
    let mut sent = 0usize;
    let mut fed = 0usize;
    for piece in pieces(plan, input) {
        fed += piece.len();
        let Ok(mut events) = server.handle_input(piece) else {
            return;
        };
        loop {
            assert!(
                !refused || events.is_empty(),
                "events after a rejection: {events:?}"
            );
            assert!(
                accepted || !events.iter().any(is_published),
                "published before a publish was accepted: {events:?}"
            );
            let reject = decisions >> (requests % 8) & 1 == 1;
            match events.last() {
                Some(ServerEvent::ConnectRequested { .. }) => {
                    requests += 1;
                    if reject {
                        server
                            .reject_connect("fuzz")
                            .expect("a connect request can be rejected");
                        refused = true;
                    } else {
                        server
                            .accept_connect()
                            .expect("a connect request can be accepted");
                    }
                }
                Some(ServerEvent::PublishRequested { stream_key, .. }) => {
                    requests += 1;
                    if reject {
                        server
                            .reject_publish(PublishRejection::Unauthorized, "fuzz")
                            .expect("a publish request can be rejected");
                        refused = true;
                    } else {
                        server
                            .accept_publish()
                            .expect("a publish request can be accepted");
                        assert_eq!(server.publishing(), Some(stream_key.as_str()));
                        accepted = true;
                    }
                }
                _ => break,
            }
            sent += take(&mut server, sent);
            match server.handle_input(&[]) {
                Ok(more) => events = more,
                Err(_) => return,
            }
        }
        assert!(
            server.accept_connect().is_err(),
            "accepted a connect nobody asked for"
        );
        assert!(
            server.accept_publish().is_err(),
            "accepted a publish nobody asked for"
        );
        assert!(server.reject_connect("x").is_err());
        assert!(server.reject_publish(PublishRejection::BadName, "x").is_err());
        sent += take(&mut server, sent);
        drop(events);
        check_heap(fed, accepted, base);
    }
}

fn is_published(event: &ServerEvent) -> bool {
    matches!(
        event,
        ServerEvent::Metadata { .. }
            | ServerEvent::Data { .. }
            | ServerEvent::Audio { .. }
            | ServerEvent::Video { .. }
    )
}

/// Between calls a session holds its unread input (in a buffer up to twice its size, and a
/// message may still share the old one: 4 x fed), its messages in progress (at most
/// `max_buffered` of the limits in force) and the handshake's and chunk streams' state (64 KiB).
fn check_heap(fed: usize, accepted: bool, base: usize) {
    let config = ServerConfig::default();
    let limits: Limits = if accepted {
        config.limits
    } else {
        config.pre_publish
    };
    let held = live_heap().saturating_sub(base);
    let bound = 4 * fed + limits.max_buffered + (64 << 10);
    assert!(
        held <= bound,
        "the session holds {held} heap bytes after {fed} input bytes (bound {bound}, accepted: {accepted})"
    );
}

/// Drains the outbound bytes; the very first ones are S0+S1+S2.
fn take(server: &mut ServerSession, sent: usize) -> usize {
    let out = server.take_outbound();
    if sent == 0 && !out.is_empty() {
        assert!(out.len() >= HANDSHAKE, "{} bytes before S0+S1+S2", out.len());
        assert_eq!(out[0], 3);
    }
    assert!(server.take_outbound().is_empty());
    out.len()
}
