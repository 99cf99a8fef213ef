//! The RTMP protocol, sans-IO: no sockets, no runtime. Feed bytes in, take bytes and events out.
//!
//! | specification | what is implemented |
//! |---|---|
//! | Adobe RTMP 1.0 (2012), §5.2 handshake | version 3, simple scheme and the Flash Player 9 digest scheme (both offsets), server and client ([`handshake`]) |
//! | RTMP 1.0 §5.3, §5.4 chunk stream, protocol control | the four header formats, extended timestamps (also on type-3 chunks), per-chunk-stream reassembly, Set Chunk Size, Abort, Acknowledgement, Window Acknowledgement Size, Set Peer Bandwidth ([`chunk`]) |
//! | RTMP 1.0 §6, §7 messages | user control, commands, data, audio, video ([`message`]) |
//! | AMF0 (Adobe, 2007) | every type encoders send, with limits on nesting and on values per read ([`amf0`]) |
//! | Enhanced RTMP v1/v2 (Veovera) | `fourCcList`, `videoFourCcInfoMap` and `capsEx` in the `connect` answer; FourCC media passes through untouched |
//!
//! Payloads are [`bytes::Bytes`]: a message that arrives in one chunk is a slice of the input, one in
//! several chunks is copied once; the writer sends payloads by reference. Every input either advances
//! or returns a typed error.
//!
//! Memory is bounded at every level, since every port faces the internet:
//!
//! - Per connection, by [`chunk::Limits`]: the largest message, the chunk streams, the bytes of
//!   messages in progress. A [`ServerSession`] reads a peer with [`ServerConfig::pre_publish`]
//!   (64 KiB messages) until it accepts a publish, then with [`ServerConfig::limits`] (16 MiB);
//!   before that, data messages are dropped undecoded and media is ignored. A [`ClientSession`]
//!   reads its server with [`ClientConfig::DEFAULT_LIMITS`] (256 KiB): a server sends only commands.
//!   Input that piles up while the caller decides on a request is bounded too
//!   ([`SessionError::Flooded`]).
//! - Per process, by a [`chunk::SharedBudget`] given to [`ServerSession::with_budget`] (or
//!   [`ChunkReader::with_budget`]): the messages in progress of every connection together.
//! - Per AMF0 read, by [`amf0::MAX_VALUES`] values and [`amf0::MAX_DEPTH`] levels; nothing is
//!   reserved from a count read off the wire.
//!
//! ```
//! use oxcast_rtmp::session::client::{ClientConfig, ClientSession};
//! use oxcast_rtmp::session::server::{ServerConfig, ServerEvent, ServerSession};
//!
//! let mut server = ServerSession::new(ServerConfig::default());
//! let mut client = ClientSession::new(ClientConfig::new("streams", "rtmp://localhost/streams", "key"));
//! let mut events = Vec::new();
//! for _ in 0..8 {
//!     let bytes = client.take_outbound();
//!     for event in server.handle_input(&bytes).unwrap() {
//!         match &event {
//!             ServerEvent::ConnectRequested { .. } => server.accept_connect().unwrap(),
//!             ServerEvent::PublishRequested { .. } => server.accept_publish().unwrap(),
//!             _ => {}
//!         }
//!         events.push(event);
//!     }
//!     events.extend(server.handle_input(&[]).unwrap());
//!     client.handle_input(&server.take_outbound()).unwrap();
//! }
//! assert!(client.is_publishing());
//! assert!(matches!(events.last(), Some(ServerEvent::PublishRequested { stream_key, .. }) if stream_key == "key"));
//! ```

pub mod amf0;
pub mod chunk;
pub mod handshake;
pub mod message;
pub mod session;

/// Big-endian integer at `at`, if the bytes are there.
pub(crate) fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_be_bytes(b))
}

pub use chunk::{ChunkReader, ChunkWriter, Limits, Outbound, Payload, RawMessage, SharedBudget};
pub use message::{Command, Message};
pub use session::SessionError;
pub use session::client::{ClientConfig, ClientEvent, ClientSession};
pub use session::server::{PublishMode, PublishRejection, ServerConfig, ServerEvent, ServerSession};
