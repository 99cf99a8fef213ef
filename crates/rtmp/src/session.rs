//! Session state machines on top of the chunk stream: [`server::ServerSession`] for encoders that
//! publish to us, [`client::ClientSession`] for publishing to another server.

pub mod client;
pub mod server;

use thiserror::Error;

use crate::amf0::Value;
use crate::chunk::{
    ChunkError, ChunkReader, ChunkWriter, Limits, Outbound, Payload, RawMessage, SharedBudget, csid,
};
use crate::handshake::HandshakeError;
use crate::message::{Command, Message, MessageError, UserControl};

/// Why a session cannot go on. The connection should be closed.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum SessionError {
    #[error("handshake failed: {0}")]
    Handshake(#[from] HandshakeError),
    #[error("chunk stream: {0}")]
    Chunk(#[from] ChunkError),
    #[error("message on chunk stream {csid}: {source}")]
    Message { csid: u32, source: MessageError },
    #[error("{0} bytes buffered while waiting for a decision on a request; the peer is not waiting")]
    Flooded(usize),
    /// The peer answered a request with an error (`_error`, or an `onStatus` of level `error`).
    #[error("{command} refused: {code} ({description})")]
    Refused {
        command: &'static str,
        code: String,
        description: String,
    },
    #[error("{0}")]
    Protocol(&'static str),
}

/// The connection underneath a session: chunk reader and writer, acknowledgements, pings.
#[derive(Debug)]
struct Link {
    reader: ChunkReader,
    writer: ChunkWriter,
    out: Outbound,
    /// The peer's Window Acknowledgement Size: we acknowledge after that many bytes.
    ack_window: Option<u32>,
    acked: u64,
    /// The Window Acknowledgement Size we announced, if any.
    announced_window: Option<u32>,
    /// While a decision is pending, the limits the input waiting for it will be read with once it
    /// is taken, when they are not the reader's current ones (a publish being decided).
    pending_limits: Option<Limits>,
}

impl Link {
    fn new(limits: Limits, budget: Option<SharedBudget>) -> Self {
        Self {
            reader: match budget {
                Some(budget) => ChunkReader::with_budget(limits, budget),
                None => ChunkReader::new(limits),
            },
            writer: ChunkWriter::new(),
            out: Outbound::new(),
            ack_window: None,
            acked: 0,
            announced_window: None,
            pending_limits: None,
        }
    }

    fn feed(&mut self, input: &[u8]) -> Result<(), SessionError> {
        self.reader.feed(input);
        self.check_flood(input.len())
    }

    /// `n` bytes were read straight into the reader's buffer.
    fn received(&mut self, n: usize) -> Result<(), SessionError> {
        self.reader.count_received(n);
        self.check_flood(n)
    }

    /// Called as `arrived` more bytes are buffered. The reader drains everything it can on each
    /// poll, leaving at most one incomplete chunk (whose body is at most a message); more than
    /// that left over from before these bytes means the caller is not polling (a decision is
    /// pending) while the peer keeps sending. What arrives in one piece is the caller's to size.
    fn check_flood(&self, arrived: usize) -> Result<(), SessionError> {
        let bound = |limits: Limits| {
            limits
                .max_buffered
                .saturating_add(limits.max_message_size as usize)
        };
        // Input held for a pending decision is read with the limits that follow it: an encoder that
        // sends its first keyframe right after `publish`, without waiting for the answer (as some
        // do), must not be cut off by the smaller limits that apply until the publish is accepted.
        let limit = bound(self.reader.limits()).max(self.pending_limits.map_or(0, bound));
        let left_over = self.reader.buffered().saturating_sub(arrived);
        if arrived > 0 && left_over > limit {
            return Err(SessionError::Flooded(self.reader.buffered()));
        }
        Ok(())
    }

    fn send(&mut self, csid: u32, timestamp: u32, stream_id: u32, message: &Message) {
        self.writer.write(
            csid,
            timestamp,
            message.type_id(),
            stream_id,
            &message.encode(),
            &mut self.out,
        );
    }

    fn send_payload(&mut self, csid: u32, timestamp: u32, type_id: u8, stream_id: u32, payload: Payload<'_>) {
        self.writer
            .write(csid, timestamp, type_id, stream_id, payload, &mut self.out);
    }

    fn control(&mut self, message: Message) {
        self.send(csid::CONTROL, 0, 0, &message);
    }

    fn command(&mut self, stream_id: u32, name: &str, transaction_id: f64, object: Value, args: Vec<Value>) {
        let command = Message::Command(Command::new(name, transaction_id, object, args));
        self.send(csid::COMMAND, 0, stream_id, &command);
    }

    /// Asks the peer to acknowledge every `size` bytes it receives from us.
    fn announce_window(&mut self, size: u32) {
        self.control(Message::WindowAckSize(size));
        self.announced_window = Some(size);
    }

    /// Announces and starts using an outgoing chunk size.
    fn set_chunk_size(&mut self, size: u32) {
        self.control(Message::SetChunkSize(size));
        self.writer.set_chunk_size(size);
    }

    /// The next message the session layer has to act on. Chunk-level control (chunk size, abort)
    /// is applied by the reader; window sizes, acknowledgements and pings are handled here.
    fn next(&mut self) -> Result<Option<(RawMessage, Message)>, SessionError> {
        loop {
            let Some(raw) = self.reader.next_message()? else {
                self.acknowledge();
                return Ok(None);
            };
            let message = Message::decode(&raw).map_err(|source| SessionError::Message {
                csid: raw.csid,
                source,
            })?;
            match message {
                Message::WindowAckSize(size) => self.ack_window = Some(size.max(1)),
                Message::UserControl(UserControl::PingRequest(time)) => {
                    self.control(Message::UserControl(UserControl::PingResponse(time)));
                }
                // The peer limits our output: answer with a matching window if ours differs (§5.4.5).
                Message::SetPeerBandwidth { size, .. } => {
                    if self.announced_window != Some(size) {
                        self.announce_window(size);
                    }
                }
                Message::SetChunkSize(_) | Message::Abort { .. } | Message::Acknowledgement { .. } => {}
                message => return Ok(Some((raw, message))),
            }
        }
    }

    /// Acknowledgement with the cumulative byte count, once per window (RTMP 1.0 §5.4.3).
    fn acknowledge(&mut self) {
        let Some(window) = self.ack_window else { return };
        let received = self.reader.bytes_received();
        if received - self.acked >= u64::from(window) {
            self.acked = received;
            // The sequence number wraps at 2^32 (§5.4.3).
            self.control(Message::Acknowledgement {
                sequence: received as u32,
            });
        }
    }
}

/// `code` and `description` from an `onStatus`/`_result`/`_error` information object.
fn status_of(args: &[Value]) -> (String, String, String) {
    let info = args.first();
    let field = |name| {
        info.and_then(|i| i.get(name))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    (field("level"), field("code"), field("description"))
}

fn status_object(level: &str, code: &str, description: &str) -> Value {
    Value::object([
        ("level", Value::string(level)),
        ("code", Value::string(code)),
        ("description", Value::string(description)),
    ])
}
