//! The RTMP handshake (RTMP 1.0 §5.2): C0/C1/C2 and S0/S1/S2, version 3, in both roles.
//!
//! Two schemes are in use. The simple one carries random bytes and echoes them. The digest scheme
//! (Flash Player 9 and later, used by ffmpeg, OBS builds and Flash Media Server) hides an HMAC-SHA256
//! digest in C1/S1 at one of two offsets ("scheme 0": offset from bytes 8..12, "scheme 1": from bytes
//! 772..776). A server answers in the scheme the client used; a client can use either.
//!
//! Both state machines are sans-IO: feed bytes, collect bytes to send, and read [`Progress`]. Timing out
//! a handshake that stays in [`Progress::Waiting`] is the I/O layer's job.

use bytes::{Bytes, BytesMut};
use hmac::{Hmac, KeyInit, Mac};
use rand::Rng;
use sha2::Sha256;
use thiserror::Error;

/// C1, C2, S1 and S2 are all this long.
pub const PACKET_LEN: usize = 1536;
const VERSION: u8 = 3;
const DIGEST_LEN: usize = 32;

/// "Genuine Adobe Flash Player 001" followed by the 32 constant bytes both sides share.
const PLAYER_KEY: [u8; 62] = *b"Genuine Adobe Flash Player 001\
\xF0\xEE\xC2\x4A\x80\x68\xBE\xE8\x2E\x00\xD0\xD1\x02\x9E\x7E\x57\x6E\xEC\x5D\x2D\x29\x80\x6F\xAB\x93\xB8\xE6\x36\xCF\xEB\x31\xAE";
/// "Genuine Adobe Flash Media Server 001" followed by the same 32 bytes.
const SERVER_KEY: [u8; 68] = *b"Genuine Adobe Flash Media Server 001\
\xF0\xEE\xC2\x4A\x80\x68\xBE\xE8\x2E\x00\xD0\xD1\x02\x9E\x7E\x57\x6E\xEC\x5D\x2D\x29\x80\x6F\xAB\x93\xB8\xE6\x36\xCF\xEB\x31\xAE";
/// The text-only prefixes sign C1 and S1; the full keys derive the keys that sign C2 and S2.
const PLAYER_TEXT_LEN: usize = 30;
const SERVER_TEXT_LEN: usize = 36;

/// Version fields: what Flash Media Server 3.5 and ffmpeg's client announce in the digest scheme.
const SERVER_VERSION: [u8; 4] = [3, 5, 1, 1];
const CLIENT_VERSION: [u8; 4] = [9, 0, 124, 2];

/// Where C1/S1 carry their digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// No digest: random bytes, echoed back.
    Simple,
    /// Digest whose offset is computed from bytes 8..12.
    Digest0,
    /// Digest whose offset is computed from bytes 772..776.
    Digest1,
}

/// Whether a handshake has finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// More bytes from the peer are needed.
    Waiting,
    /// Done; any bytes that followed the handshake in the input are the first chunk-stream bytes.
    Done { remaining: Bytes },
}

/// Why a handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HandshakeError {
    #[error("peer asked for RTMP version {0}, only version 3 is spoken")]
    UnsupportedVersion(u8),
    #[error("handshake already finished")]
    Finished,
}

fn digest_offset(packet: &[u8; PACKET_LEN], scheme: Scheme) -> usize {
    let base = match scheme {
        Scheme::Digest1 => 772,
        _ => 8,
    };
    let sum: usize = packet
        .get(base..base + 4)
        .unwrap_or_default()
        .iter()
        .map(|b| usize::from(*b))
        .sum();
    sum % 728 + base + 4
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; DIGEST_LEN] {
    // HMAC accepts keys of any length, so this cannot fail; the fallback keeps the code panic-free.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return [0; DIGEST_LEN];
    };
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// The digest of a C1/S1 packet: HMAC over the packet with the digest's own 32 bytes left out.
fn packet_digest(packet: &[u8; PACKET_LEN], offset: usize, key: &[u8]) -> [u8; DIGEST_LEN] {
    let before = packet.get(..offset).unwrap_or_default();
    let after = packet.get(offset + DIGEST_LEN..).unwrap_or_default();
    hmac(key, &[before, after])
}

fn stored_digest(packet: &[u8; PACKET_LEN], offset: usize) -> &[u8] {
    packet.get(offset..offset + DIGEST_LEN).unwrap_or_default()
}

/// Finds which digest scheme, if any, signed `packet` with `key`.
fn find_scheme(packet: &[u8; PACKET_LEN], key: &[u8]) -> Option<(Scheme, [u8; DIGEST_LEN])> {
    [Scheme::Digest0, Scheme::Digest1].into_iter().find_map(|scheme| {
        let offset = digest_offset(packet, scheme);
        let digest = packet_digest(packet, offset, key);
        (stored_digest(packet, offset) == digest).then_some((scheme, digest))
    })
}

/// Builds a C1/S1: time, version, random bytes, and the digest where the scheme puts it.
fn signed_packet(scheme: Scheme, version: [u8; 4], key: &[u8]) -> Box<[u8; PACKET_LEN]> {
    let mut packet = Box::new([0u8; PACKET_LEN]);
    rand::rng().fill_bytes(packet.as_mut_slice());
    let version = if scheme == Scheme::Simple { [0; 4] } else { version };
    // Time 0, then the version field; zero marks the simple scheme.
    packet
        .iter_mut()
        .zip([0, 0, 0, 0].iter().chain(&version))
        .for_each(|(slot, b)| *slot = *b);
    if scheme == Scheme::Simple {
        return packet;
    }
    let offset = digest_offset(&packet, scheme);
    let digest = packet_digest(&packet, offset, key);
    if let Some(slot) = packet.get_mut(offset..offset + DIGEST_LEN) {
        slot.copy_from_slice(&digest);
    }
    packet
}

/// C2/S2 in the digest scheme: random bytes whose last 32 are signed with a key derived from the
/// peer's C1/S1 digest.
fn signed_response(peer_digest: &[u8; DIGEST_LEN], full_key: &[u8]) -> Box<[u8; PACKET_LEN]> {
    let mut packet = Box::new([0u8; PACKET_LEN]);
    rand::rng().fill_bytes(packet.as_mut_slice());
    let key = hmac(full_key, &[peer_digest]);
    let (body, tail) = packet.split_at_mut(PACKET_LEN - DIGEST_LEN);
    tail.copy_from_slice(&hmac(&key, &[body]));
    packet
}

/// Collects exactly `PACKET_LEN` bytes, or C0 plus a packet.
#[derive(Debug, Default)]
struct Collector {
    buf: BytesMut,
}

impl Collector {
    /// Takes bytes from `input` until `want` are held; returns them when complete.
    fn fill(&mut self, input: &mut &[u8], want: usize) -> Option<BytesMut> {
        let need = want.saturating_sub(self.buf.len());
        let n = need.min(input.len());
        let (head, rest) = input.split_at(n);
        self.buf.extend_from_slice(head);
        *input = rest;
        (self.buf.len() == want).then(|| self.buf.split())
    }
}

fn as_packet(bytes: &[u8]) -> Box<[u8; PACKET_LEN]> {
    let mut packet = Box::new([0u8; PACKET_LEN]);
    packet.iter_mut().zip(bytes).for_each(|(slot, b)| *slot = *b);
    packet
}

#[derive(Debug)]
enum ServerState {
    AwaitC0C1,
    AwaitC2,
    Done,
}

/// The server side: reads C0+C1, answers S0+S1+S2 at once, then reads (and does not check) C2, as
/// every mainstream server does: clients differ too much in what they put there.
#[derive(Debug)]
pub struct ServerHandshake {
    state: ServerState,
    collector: Collector,
    scheme: Option<Scheme>,
}

impl Default for ServerHandshake {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerHandshake {
    pub fn new() -> Self {
        Self {
            state: ServerState::AwaitC0C1,
            collector: Collector::default(),
            scheme: None,
        }
    }

    /// The scheme the client used, once C1 has arrived.
    pub fn scheme(&self) -> Option<Scheme> {
        self.scheme
    }

    /// Consumes client bytes; appends S0+S1+S2 to `out` once C1 is complete.
    pub fn handle_input(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<Progress, HandshakeError> {
        loop {
            match self.state {
                ServerState::AwaitC0C1 => {
                    let Some(c0c1) = self.collector.fill(&mut input, 1 + PACKET_LEN) else {
                        return Ok(Progress::Waiting);
                    };
                    let version = c0c1.first().copied().unwrap_or_default();
                    if version != VERSION {
                        return Err(HandshakeError::UnsupportedVersion(version));
                    }
                    let c1 = as_packet(c0c1.get(1..).unwrap_or_default());
                    self.respond(&c1, out);
                    self.state = ServerState::AwaitC2;
                }
                ServerState::AwaitC2 => {
                    if self.collector.fill(&mut input, PACKET_LEN).is_none() {
                        return Ok(Progress::Waiting);
                    }
                    self.state = ServerState::Done;
                    return Ok(Progress::Done {
                        remaining: Bytes::copy_from_slice(input),
                    });
                }
                ServerState::Done => return Err(HandshakeError::Finished),
            }
        }
    }

    fn respond(&mut self, c1: &[u8; PACKET_LEN], out: &mut Vec<u8>) {
        out.push(VERSION);
        // A zero version field means the client speaks the simple scheme; so does a digest that
        // does not verify (old clients fill the field without signing).
        let found = if c1.get(4..8) == Some(&[0; 4]) {
            None
        } else {
            find_scheme(c1, &PLAYER_KEY[..PLAYER_TEXT_LEN])
        };
        match found {
            None => {
                self.scheme = Some(Scheme::Simple);
                out.extend_from_slice(signed_packet(Scheme::Simple, SERVER_VERSION, &[]).as_slice());
                out.extend_from_slice(c1);
            }
            Some((scheme, client_digest)) => {
                self.scheme = Some(scheme);
                let s1 = signed_packet(scheme, SERVER_VERSION, &SERVER_KEY[..SERVER_TEXT_LEN]);
                out.extend_from_slice(s1.as_slice());
                out.extend_from_slice(signed_response(&client_digest, &SERVER_KEY).as_slice());
            }
        }
    }
}

#[derive(Debug)]
enum ClientState {
    AwaitS0S1S2,
    Done,
}

/// The client side: [`ClientHandshake::new`] gives C0+C1; S0+S1+S2 are answered with C2.
#[derive(Debug)]
pub struct ClientHandshake {
    state: ClientState,
    collector: Collector,
    scheme: Scheme,
}

impl ClientHandshake {
    /// Starts a handshake in `scheme`; appends C0+C1 to `out`.
    pub fn new(scheme: Scheme, out: &mut Vec<u8>) -> Self {
        out.push(VERSION);
        out.extend_from_slice(
            signed_packet(scheme, CLIENT_VERSION, &PLAYER_KEY[..PLAYER_TEXT_LEN]).as_slice(),
        );
        Self {
            state: ClientState::AwaitS0S1S2,
            collector: Collector::default(),
            scheme,
        }
    }

    /// Consumes server bytes; appends C2 to `out` once S1 and S2 are complete.
    pub fn handle_input(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<Progress, HandshakeError> {
        match self.state {
            ClientState::AwaitS0S1S2 => {
                let Some(packets) = self.collector.fill(&mut input, 1 + 2 * PACKET_LEN) else {
                    return Ok(Progress::Waiting);
                };
                let version = packets.first().copied().unwrap_or_default();
                if version != VERSION {
                    return Err(HandshakeError::UnsupportedVersion(version));
                }
                let s1 = as_packet(packets.get(1..=PACKET_LEN).unwrap_or_default());
                // Servers that do not sign S1 get their S1 echoed, as in the simple scheme.
                let signed = match self.scheme {
                    Scheme::Simple => None,
                    _ => find_scheme(&s1, &SERVER_KEY[..SERVER_TEXT_LEN]),
                };
                match signed {
                    Some((_, server_digest)) => {
                        out.extend_from_slice(signed_response(&server_digest, &PLAYER_KEY).as_slice())
                    }
                    None => out.extend_from_slice(s1.as_slice()),
                }
                self.state = ClientState::Done;
                Ok(Progress::Done {
                    remaining: Bytes::copy_from_slice(input),
                })
            }
            ClientState::Done => Err(HandshakeError::Finished),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(scheme: Scheme, step: usize) -> (Scheme, Vec<u8>) {
        let mut c0c1 = Vec::new();
        let mut client = ClientHandshake::new(scheme, &mut c0c1);
        let mut server = ServerHandshake::new();
        let mut s_out = Vec::new();
        for piece in c0c1.chunks(step) {
            assert_eq!(server.handle_input(piece, &mut s_out).unwrap(), Progress::Waiting);
        }
        let mut c2 = Vec::new();
        let mut done = None;
        for piece in s_out.chunks(step) {
            if let Progress::Done { remaining } = client.handle_input(piece, &mut c2).unwrap() {
                done = Some(remaining);
            }
        }
        assert_eq!(done, Some(Bytes::new()));
        c2.extend_from_slice(b"after");
        let mut none = Vec::new();
        let mut finished = None;
        for piece in c2.chunks(c2.len()) {
            if let Progress::Done { remaining } = server.handle_input(piece, &mut none).unwrap() {
                finished = Some(remaining);
            }
        }
        assert_eq!(finished, Some(Bytes::from_static(b"after")));
        assert!(none.is_empty());
        (server.scheme().unwrap(), s_out)
    }

    #[test]
    fn server_answers_in_the_clients_scheme() {
        for scheme in [Scheme::Simple, Scheme::Digest0, Scheme::Digest1] {
            for step in [1, 7, 1000, 5000] {
                let (seen, s_out) = run(scheme, step);
                assert_eq!(seen, scheme);
                assert_eq!(s_out.len(), 1 + 2 * PACKET_LEN);
                let s1 = as_packet(&s_out[1..=PACKET_LEN]);
                let signed = find_scheme(&s1, &SERVER_KEY[..SERVER_TEXT_LEN]).map(|(s, _)| s);
                match scheme {
                    Scheme::Simple => assert_eq!(signed, None),
                    _ => assert_eq!(signed, Some(scheme)),
                }
            }
        }
    }

    #[test]
    fn digest_s2_is_signed_with_the_key_derived_from_c1() {
        let mut c0c1 = Vec::new();
        ClientHandshake::new(Scheme::Digest1, &mut c0c1);
        let c1 = as_packet(&c0c1[1..]);
        let (_, client_digest) = find_scheme(&c1, &PLAYER_KEY[..PLAYER_TEXT_LEN]).unwrap();
        let mut out = Vec::new();
        ServerHandshake::new().handle_input(&c0c1, &mut out).unwrap();
        let s2 = &out[1 + PACKET_LEN..];
        let key = hmac(&SERVER_KEY, &[&client_digest]);
        assert_eq!(
            hmac(&key, &[&s2[..PACKET_LEN - DIGEST_LEN]]),
            s2[PACKET_LEN - DIGEST_LEN..]
        );
    }

    #[test]
    fn wrong_version_is_an_error() {
        let mut out = Vec::new();
        let err = ServerHandshake::new()
            .handle_input(&[6; 1537], &mut out)
            .unwrap_err();
        assert_eq!(err, HandshakeError::UnsupportedVersion(6));
    }

    #[test]
    fn unsigned_c1_with_a_version_falls_back_to_simple() {
        let mut c0c1 = vec![3; 1537];
        c0c1[1..5].fill(0);
        let mut out = Vec::new();
        let mut server = ServerHandshake::new();
        server.handle_input(&c0c1, &mut out).unwrap();
        assert_eq!(server.scheme(), Some(Scheme::Simple));
        assert_eq!(&out[1 + PACKET_LEN..], &c0c1[1..]);
    }
}
