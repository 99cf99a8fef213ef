//! The handshake in both roles, on arbitrary peer bytes delivered in arbitrary pieces.
//!
//! Input: `[scheme, plan0, plan1, plan2, plan3, peer bytes...]`. The same peer bytes go to a
//! `ServerHandshake` (as C0+C1+C2 and what follows) and to a `ClientHandshake` started in
//! `scheme % 3` (as S0+S1+S2 and what follows), cut by `oxcast_rtmp_fuzz::pieces`.
//!
//! Checked besides "no panic": S0+S1+S2 appear exactly when C0+C1 is complete; `Done` comes exactly
//! after 3073 bytes and hands back the bytes after them; a simple-scheme S2 echoes C1 and a
//! simple-scheme C2 echoes S1; a version error names the first byte; after `Done`, more input is
//! `Finished`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oxcast_rtmp::handshake::{
    ClientHandshake, HandshakeError, PACKET_LEN, Progress, Scheme, ServerHandshake,
};
use oxcast_rtmp_fuzz::{header, pieces};

const C0C1: usize = 1 + PACKET_LEN;
const WHOLE: usize = 1 + 2 * PACKET_LEN;

fuzz_target!(|data: &[u8]| {
    let ([scheme, plan @ ..], peer) = header::<5>(data);
    server(&plan, peer);
    let scheme = [Scheme::Simple, Scheme::Digest0, Scheme::Digest1][usize::from(scheme % 3)];
    client(scheme, &plan, peer);
});

fn server(plan: &[u8], input: &[u8]) {
    let mut server = ServerHandshake::new();
    let mut out = Vec::new();
    let mut fed = 0;
    for piece in pieces(plan, input) {
        fed += piece.len();
        match server.handle_input(piece, &mut out) {
            Ok(Progress::Waiting) => assert!(fed < WHOLE, "waiting after {fed} bytes"),
            Ok(Progress::Done { remaining }) => {
                assert_eq!(fed - remaining.len(), WHOLE);
                assert_eq!(&remaining[..], &input[WHOLE..fed]);
                assert_eq!(
                    server.handle_input(b"more", &mut out),
                    Err(HandshakeError::Finished)
                );
                check_server_answer(&server, input, &out);
                return;
            }
            Err(HandshakeError::UnsupportedVersion(v)) => {
                assert_eq!(v, input[0]);
                assert_ne!(v, 3);
                assert!(fed >= C0C1);
                assert!(out.is_empty());
                return;
            }
            Err(HandshakeError::Finished) => panic!("Finished before Done"),
        }
        if fed >= C0C1 {
            check_server_answer(&server, input, &out);
        } else {
            assert!(out.is_empty(), "answered before C1 was complete");
            assert_eq!(server.scheme(), None);
        }
    }
}

fn check_server_answer(server: &ServerHandshake, input: &[u8], out: &[u8]) {
    assert_eq!(out.len(), WHOLE, "S0+S1+S2 is 3073 bytes");
    assert_eq!(out[0], 3);
    match server.scheme() {
        None => panic!("no scheme after C1"),
        Some(Scheme::Simple) => assert_eq!(&out[C0C1..], &input[1..C0C1], "S2 echoes C1"),
        Some(_) => {}
    }
}

fn client(scheme: Scheme, plan: &[u8], input: &[u8]) {
    let mut c0c1 = Vec::new();
    let mut client = ClientHandshake::new(scheme, &mut c0c1);
    assert_eq!(c0c1.len(), C0C1);
    assert_eq!(c0c1[0], 3);
    let mut c2 = Vec::new();
    let mut fed = 0;
    for piece in pieces(plan, input) {
        fed += piece.len();
        match client.handle_input(piece, &mut c2) {
            Ok(Progress::Waiting) => {
                assert!(fed < WHOLE, "waiting after {fed} bytes");
                assert!(c2.is_empty());
            }
            Ok(Progress::Done { remaining }) => {
                assert_eq!(fed - remaining.len(), WHOLE);
                assert_eq!(&remaining[..], &input[WHOLE..fed]);
                assert_eq!(c2.len(), PACKET_LEN);
                if scheme == Scheme::Simple {
                    assert_eq!(&c2[..], &input[1..C0C1], "C2 echoes S1");
                }
                assert_eq!(
                    client.handle_input(b"more", &mut c2),
                    Err(HandshakeError::Finished)
                );
                return;
            }
            Err(HandshakeError::UnsupportedVersion(v)) => {
                assert_eq!(v, input[0]);
                assert_ne!(v, 3);
                assert!(fed >= WHOLE);
                assert!(c2.is_empty());
                return;
            }
            Err(HandshakeError::Finished) => panic!("Finished before Done"),
        }
    }
}
