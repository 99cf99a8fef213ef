//! The server side of a publishing connection: handshake, `connect`, `createStream`, `publish`, then
//! metadata, audio and video until `FCUnpublish`/`deleteStream`.
//!
//! Requests need a decision: after [`ServerEvent::ConnectRequested`] or [`ServerEvent::PublishRequested`]
//! the session reads nothing further until the caller calls `accept_*` or `reject_*`; bytes that
//! arrive meanwhile stay buffered, and the next [`ServerSession::poll`] (or `handle_input(&[])`) goes on.
//!
//! Until a publish is accepted the peer is a stranger: the chunk stream is read with
//! [`ServerConfig::pre_publish`] (small messages, few chunk streams), data messages are dropped
//! without being decoded, and media is ignored. [`ServerSession::accept_publish`] switches to
//! [`ServerConfig::limits`], sized for media.

use bytes::{Bytes, BytesMut};

use super::{Link, SessionError, status_object};
use crate::amf0::{self, Value};
use crate::chunk::{Limits, Outbound, RawMessage, SharedBudget};
use crate::handshake::{Progress, ServerHandshake};
use crate::message::{BandwidthLimit, Command, Message, UserControl};

/// Settings of a server session.
#[derive(Debug, Clone, Copy)]
pub struct ServerConfig {
    /// Our outgoing chunk size, announced right after `connect` is accepted.
    pub chunk_size: u32,
    /// Window Acknowledgement Size and Set Peer Bandwidth we announce.
    pub window_ack_size: u32,
    /// Bounds once a publish is accepted, sized for media (keyframes of several MiB).
    pub limits: Limits,
    /// Bounds until a publish is accepted: anyone who can open a connection gets this far, and
    /// needs only commands of a few hundred bytes (see [`ServerConfig::DEFAULT_PRE_PUBLISH`]).
    pub pre_publish: Limits,
    /// `createStream` calls one connection may make.
    pub max_streams: u32,
}

impl ServerConfig {
    /// The default [`ServerConfig::pre_publish`]. An encoder's largest message before its publish is
    /// accepted is its `connect` (91 to 223 bytes in the captures of ffmpeg, GStreamer, librtmp and
    /// node-media-server) and it uses three or four chunk streams: 64 KiB messages, 16 chunk streams
    /// and 128 KiB in progress leave room for any of them while a stranger's connection costs at
    /// most a few hundred KiB.
    pub const DEFAULT_PRE_PUBLISH: Limits = Limits {
        max_message_size: 64 << 10,
        max_chunk_streams: 16,
        max_buffered: 128 << 10,
    };
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            chunk_size: 4096,
            window_ack_size: 2_500_000,
            limits: Limits::default(),
            pre_publish: Self::DEFAULT_PRE_PUBLISH,
            max_streams: 8,
        }
    }
}

/// How a publisher wants its stream kept (`publish` command's type argument).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishMode {
    Live,
    Record,
    Append,
}

impl PublishMode {
    /// Case-insensitive, as encoders differ ("live", "LIVE"); a missing type means live.
    fn parse(value: Option<&Value>) -> Option<Self> {
        let Some(text) = value.and_then(Value::as_str) else {
            return Some(PublishMode::Live);
        };
        match text.to_ascii_lowercase().as_str() {
            "live" | "" => Some(PublishMode::Live),
            "record" => Some(PublishMode::Record),
            "append" => Some(PublishMode::Append),
            _ => None,
        }
    }
}

/// Why a publish is refused; each maps to the `onStatus` code clients know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishRejection {
    /// `NetStream.Publish.BadName`: no such stream, or it is taken.
    BadName,
    /// `NetStream.Publish.Unauthorized`: the key is not accepted.
    Unauthorized,
}

/// What the encoder did.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerEvent {
    /// `connect`: answer with [`ServerSession::accept_connect`] or [`ServerSession::reject_connect`].
    ConnectRequested {
        app: String,
        tc_url: Option<String>,
        object: Value,
    },
    /// `publish`: answer with [`ServerSession::accept_publish`] or [`ServerSession::reject_publish`].
    PublishRequested {
        app: String,
        stream_key: String,
        mode: PublishMode,
        stream_id: u32,
    },
    /// `@setDataFrame onMetaData` or a bare `onMetaData`: the properties (an ECMA array or object).
    Metadata { timestamp: u32, properties: Value },
    /// Any other data message of the published stream, undecoded beyond AMF0.
    Data {
        timestamp: u32,
        values: Vec<Value>,
        payload: Bytes,
    },
    /// An FLV audio tag body.
    Audio { timestamp: u32, payload: Bytes },
    /// An FLV video tag body.
    Video { timestamp: u32, payload: Bytes },
    /// The encoder stopped publishing (`FCUnpublish`, `closeStream` or `deleteStream`).
    Unpublished { stream_key: String },
}

#[derive(Debug)]
enum Pending {
    None,
    Connect {
        transaction_id: f64,
        app: String,
    },
    Publish {
        stream_id: u32,
        stream_key: String,
    },
    /// A request was refused: nothing more is read; the caller closes the connection.
    Refused,
}

/// A publishing connection, server side. Sans-IO: bytes in, events and bytes out.
#[derive(Debug)]
pub struct ServerSession {
    config: ServerConfig,
    handshake: Option<ServerHandshake>,
    link: Link,
    app: Option<String>,
    pending: Pending,
    streams_created: u32,
    publishing: Option<(u32, String)>,
}

impl ServerSession {
    /// A session whose messages in progress are bounded by its own limits alone.
    pub fn new(config: ServerConfig) -> Self {
        Self::build(config, None)
    }

    /// A session whose multi-chunk messages in progress also draw on `budget`, shared with every
    /// other session (and reader) given a clone of it: [`crate::chunk::ChunkError::SharedBudgetFull`]
    /// when it is spent. What a session holds is given back as messages complete and when it is
    /// dropped.
    pub fn with_budget(config: ServerConfig, budget: SharedBudget) -> Self {
        Self::build(config, Some(budget))
    }

    fn build(config: ServerConfig, budget: Option<SharedBudget>) -> Self {
        Self {
            config,
            handshake: Some(ServerHandshake::new()),
            link: Link::new(config.pre_publish, budget),
            app: None,
            pending: Pending::None,
            streams_created: 0,
            publishing: None,
        }
    }

    /// True until the handshake is complete: an I/O layer times out a session stuck here.
    pub fn is_handshaking(&self) -> bool {
        self.handshake.is_some()
    }

    /// The stream key being published, once a publish was accepted.
    pub fn publishing(&self) -> Option<&str> {
        self.publishing.as_ref().map(|(_, key)| key.as_str())
    }

    /// Bytes to send to the encoder.
    pub fn outbound(&mut self) -> &mut Outbound {
        &mut self.link.out
    }

    /// Takes everything to send as one buffer.
    pub fn take_outbound(&mut self) -> Vec<u8> {
        self.link.out.take_all()
    }

    /// Feeds bytes and returns the events they complete (up to a request that needs a decision).
    pub fn handle_input(&mut self, input: &[u8]) -> Result<Vec<ServerEvent>, SessionError> {
        self.feed(input)?;
        let mut events = Vec::new();
        while let Some(event) = self.poll()? {
            events.push(event);
        }
        Ok(events)
    }

    /// Feeds bytes without decoding them; [`ServerSession::poll`] decodes.
    pub fn feed(&mut self, input: &[u8]) -> Result<(), SessionError> {
        match &mut self.handshake {
            Some(handshake) => {
                let mut out = Vec::new();
                let progress = handshake.handle_input(input, &mut out)?;
                self.link.out.put_slice(&out);
                if let Progress::Done { remaining } = progress {
                    self.handshake = None;
                    self.link.feed(&remaining)?;
                }
                Ok(())
            }
            None => self.link.feed(input),
        }
    }

    /// After the handshake, the buffer to read socket bytes into, so they are not copied again:
    /// append to it (e.g. `read_buf`), then report the count with [`ServerSession::received`].
    pub fn read_buffer(&mut self) -> Option<&mut BytesMut> {
        match self.handshake {
            Some(_) => None,
            None => Some(self.link.reader.buffer()),
        }
    }

    /// `n` bytes were appended to [`ServerSession::read_buffer`]; [`ServerSession::poll`] decodes them.
    pub fn received(&mut self, n: usize) -> Result<(), SessionError> {
        self.link.received(n)
    }

    /// The next event, or `None` when more input (or a decision on a request) is needed.
    pub fn poll(&mut self) -> Result<Option<ServerEvent>, SessionError> {
        if self.handshake.is_some() || !matches!(self.pending, Pending::None) {
            return Ok(None);
        }
        while let Some((raw, message)) = self.link.next()? {
            if let Some(event) = self.on_message(&raw, message)? {
                return Ok(Some(event));
            }
            if !matches!(self.pending, Pending::None) {
                return Ok(None);
            }
        }
        Ok(None)
    }

    fn on_message(
        &mut self,
        raw: &RawMessage,
        message: Message,
    ) -> Result<Option<ServerEvent>, SessionError> {
        // Media counts once a publish is accepted, whatever message stream id it carries:
        // node-media-server's client sends it on stream 0. One connection publishes one stream.
        let publishing = self.publishing.is_some();
        Ok(match message {
            Message::Command(command) => self.on_command(raw.stream_id, command)?,
            Message::Audio(payload) if publishing => Some(ServerEvent::Audio {
                timestamp: raw.timestamp,
                payload,
            }),
            Message::Video(payload) if publishing => Some(ServerEvent::Video {
                timestamp: raw.timestamp,
                payload,
            }),
            // Decoded only for an accepted publisher: a stranger's data is dropped as bytes.
            Message::Data(payload) if publishing => Some(data_event(raw.timestamp, payload)),
            _ => None,
        })
    }

    fn on_command(&mut self, stream_id: u32, command: Command) -> Result<Option<ServerEvent>, SessionError> {
        let txn = command.transaction_id;
        let arg_str = |i: usize| {
            command
                .args
                .get(i)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        match command.name.as_str() {
            "connect" => {
                if self.app.is_some() {
                    return Err(SessionError::Protocol("second connect on one connection"));
                }
                let text = |name| {
                    command
                        .object
                        .get(name)
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                };
                let app = text("app").unwrap_or_default();
                self.pending = Pending::Connect {
                    transaction_id: txn,
                    app: app.clone(),
                };
                Ok(Some(ServerEvent::ConnectRequested {
                    app,
                    tc_url: text("tcUrl"),
                    object: command.object,
                }))
            }
            _ if self.app.is_none() => Err(SessionError::Protocol("command before connect")),
            "releaseStream" => {
                self.link
                    .command(0, "_result", txn, Value::Null, vec![Value::Undefined]);
                Ok(None)
            }
            "FCPublish" => {
                let info = status_object("status", "NetStream.Publish.Start", &arg_str(0));
                self.link.command(0, "onFCPublish", 0.0, Value::Null, vec![info]);
                Ok(None)
            }
            "createStream" => {
                if self.streams_created >= self.config.max_streams {
                    return Err(SessionError::Protocol("too many createStream calls"));
                }
                self.streams_created += 1;
                let id = self.streams_created;
                self.link
                    .command(0, "_result", txn, Value::Null, vec![Value::Number(f64::from(id))]);
                Ok(None)
            }
            "publish" => {
                if self.publishing.is_some() {
                    self.status(
                        stream_id,
                        "error",
                        "NetStream.Publish.BadName",
                        "already publishing",
                    );
                    return Ok(None);
                }
                let stream_key = arg_str(0);
                let Some(mode) = PublishMode::parse(command.args.get(1)) else {
                    self.status(
                        stream_id,
                        "error",
                        "NetStream.Publish.BadName",
                        "unknown publish type",
                    );
                    return Ok(None);
                };
                if stream_id == 0 || stream_id > self.streams_created {
                    self.status(
                        stream_id,
                        "error",
                        "NetStream.Publish.BadName",
                        "publish before createStream",
                    );
                    return Ok(None);
                }
                self.pending = Pending::Publish {
                    stream_id,
                    stream_key: stream_key.clone(),
                };
                // What arrives while this is decided is read with `limits` if it is accepted.
                self.link.pending_limits = Some(self.config.limits);
                let app = self.app.clone().unwrap_or_default();
                Ok(Some(ServerEvent::PublishRequested {
                    app,
                    stream_key,
                    mode,
                    stream_id,
                }))
            }
            "FCUnpublish" | "closeStream" | "deleteStream" => Ok(self.unpublish(stream_id, &command)),
            "play" | "play2" => {
                self.status(
                    stream_id,
                    "error",
                    "NetStream.Play.Failed",
                    "this server takes publishers only",
                );
                Ok(None)
            }
            // getStreamLength, _checkbw, and anything unknown: nothing to do.
            _ => Ok(None),
        }
    }

    fn unpublish(&mut self, stream_id: u32, command: &Command) -> Option<ServerEvent> {
        let (id, _) = self.publishing.as_ref()?;
        let target = match command.name.as_str() {
            "deleteStream" => command
                .args
                .first()
                .and_then(Value::as_number)
                .map_or(*id, |n| n as u32),
            "closeStream" => stream_id,
            _ => *id,
        };
        if target != *id {
            return None;
        }
        let (id, stream_key) = self.publishing.take()?;
        if command.name != "deleteStream" {
            self.status(id, "status", "NetStream.Unpublish.Success", &stream_key);
        }
        Some(ServerEvent::Unpublished { stream_key })
    }

    fn status(&mut self, stream_id: u32, level: &str, code: &str, description: &str) {
        let info = status_object(level, code, description);
        self.link
            .command(stream_id, "onStatus", 0.0, Value::Null, vec![info]);
    }

    /// Accepts the pending `connect`: window size, bandwidth, chunk size, then `_result` with the
    /// enhanced-RTMP capabilities (hvc1, av01, vp09 are forwarded as they come).
    pub fn accept_connect(&mut self) -> Result<(), SessionError> {
        let Pending::Connect { transaction_id, app } =
            self.take_pending(|p| matches!(p, Pending::Connect { .. }))
        else {
            return Err(SessionError::Protocol("no connect request to accept"));
        };
        let window = self.config.window_ack_size;
        self.link.announce_window(window);
        self.link.control(Message::SetPeerBandwidth {
            size: window,
            limit: BandwidthLimit::Dynamic,
        });
        self.link.set_chunk_size(self.config.chunk_size);
        let fourccs = ["hvc1", "av01", "vp09"];
        // FourCcInfoMask CanForward (0x04): the media passes through untouched.
        let info_map = Value::Object(
            fourccs
                .iter()
                .map(|f| ((*f).to_owned(), Value::Number(4.0)))
                .collect(),
        );
        let properties = Value::object([
            ("fmsVer", Value::string("FMS/3,5,1,1")),
            ("capabilities", Value::Number(31.0)),
            ("mode", Value::Number(1.0)),
            (
                "fourCcList",
                Value::StrictArray(fourccs.iter().map(|f| Value::string(*f)).collect()),
            ),
            ("videoFourCcInfoMap", info_map),
            // No extended capability (reconnect, multitrack, ModEx, nano offsets) is offered.
            ("capsEx", Value::Number(0.0)),
        ]);
        let mut info = status_object("status", "NetConnection.Connect.Success", "Connection succeeded.");
        if let Value::Object(props) = &mut info {
            props.push(("objectEncoding".into(), Value::Number(0.0)));
        }
        self.link
            .command(0, "_result", transaction_id, properties, vec![info]);
        self.app = Some(app);
        Ok(())
    }

    /// Refuses the pending `connect` with `NetConnection.Connect.Rejected`; close the connection after
    /// sending the outbound bytes.
    pub fn reject_connect(&mut self, description: &str) -> Result<(), SessionError> {
        let Pending::Connect { transaction_id, .. } = self.pending else {
            return Err(SessionError::Protocol("no connect request to reject"));
        };
        self.pending = Pending::Refused;
        let info = status_object("error", "NetConnection.Connect.Rejected", description);
        self.link
            .command(0, "_error", transaction_id, Value::Null, vec![info]);
        Ok(())
    }

    /// Takes the pending request if `wanted` says it is the one being answered; otherwise leaves
    /// it in place and gives `Pending::None`.
    fn take_pending(&mut self, wanted: impl Fn(&Pending) -> bool) -> Pending {
        if wanted(&self.pending) {
            std::mem::replace(&mut self.pending, Pending::None)
        } else {
            Pending::None
        }
    }

    /// Accepts the pending `publish`: Stream Begin, then `NetStream.Publish.Start`.
    pub fn accept_publish(&mut self) -> Result<(), SessionError> {
        let Pending::Publish {
            stream_id,
            stream_key,
        } = self.take_pending(|p| matches!(p, Pending::Publish { .. }))
        else {
            return Err(SessionError::Protocol("no publish request to accept"));
        };
        self.link
            .control(Message::UserControl(UserControl::StreamBegin(stream_id)));
        self.status(
            stream_id,
            "status",
            "NetStream.Publish.Start",
            &format!("{stream_key} is now published"),
        );
        self.publishing = Some((stream_id, stream_key));
        // From here on the peer is a publisher we accepted: media-sized messages. The reader stopped
        // right after `publish`, so whatever followed it is read with these limits.
        self.link.reader.set_limits(self.config.limits);
        self.link.pending_limits = None;
        Ok(())
    }

    /// Refuses the pending `publish`; close the connection after sending the outbound bytes.
    pub fn reject_publish(&mut self, why: PublishRejection, description: &str) -> Result<(), SessionError> {
        let Pending::Publish { stream_id, .. } = self.pending else {
            return Err(SessionError::Protocol("no publish request to reject"));
        };
        self.pending = Pending::Refused;
        self.link.pending_limits = None;
        let code = match why {
            PublishRejection::BadName => "NetStream.Publish.BadName",
            PublishRejection::Unauthorized => "NetStream.Publish.Unauthorized",
        };
        self.status(stream_id, "error", code, description);
        Ok(())
    }
}

/// `@setDataFrame` wraps what the encoder wants stored; `onMetaData` under it (or bare) is metadata.
/// The values readable (at most `amf0::MAX_VALUES`) are kept: an odd one must not end a publish.
fn data_event(timestamp: u32, payload: Bytes) -> ServerEvent {
    let values = amf0::read_prefix(&payload);
    let skip = usize::from(values.first().and_then(Value::as_str) == Some("@setDataFrame"));
    let mut rest = values.iter().skip(skip);
    if rest.next().and_then(Value::as_str) == Some("onMetaData")
        && let Some(properties) = rest.next()
    {
        return ServerEvent::Metadata {
            timestamp,
            properties: properties.clone(),
        };
    }
    ServerEvent::Data {
        timestamp,
        values,
        payload,
    }
}
