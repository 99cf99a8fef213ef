//! Raw bytes of a client that speaks RTMP by hand, for the tests that feed a session directly.

/// C0+C1+C2 of the simple scheme: version 3, then zeros (a server does not check C2).
pub(crate) fn simple_handshake() -> Vec<u8> {
    let mut bytes = vec![0u8; 1 + 2 * 1536];
    bytes[0] = 3;
    bytes
}

/// One message cut into chunks of `chunk_size` (128 is the one every peer starts with).
pub(crate) fn chunked(chunk_size: u32, csid: u32, type_id: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
    oxcast_rtmp::chunk::single_message(chunk_size, csid, 0, type_id, stream_id, payload)
}
