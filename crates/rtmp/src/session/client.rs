//! The client side of a publishing connection, as an encoder speaks it: handshake, `connect`,
//! `releaseStream`, `FCPublish`, `createStream`, `publish`, then metadata, audio and video.

use super::{Link, SessionError, status_of};
use crate::amf0::Value;
use crate::chunk::{Limits, Outbound, Payload, csid};
use crate::handshake::{ClientHandshake, Progress, Scheme};
use crate::message::{Message, type_id};

/// Where and what to publish.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The application: the path of the RTMP URL before the stream key.
    pub app: String,
    /// The URL the server sees as `tcUrl`: `rtmp://host[:port]/app`.
    pub tc_url: String,
    pub stream_key: String,
    pub scheme: Scheme,
    /// Our outgoing chunk size, announced right after the handshake.
    pub chunk_size: u32,
    /// Bounds on what the server may make us hold. A server answers a publisher with control
    /// messages and short commands only, so the default ([`ClientConfig::DEFAULT_LIMITS`]) is small.
    pub limits: Limits,
}

impl ClientConfig {
    /// What a publishing client accepts from the server: nginx-rtmp's largest answer (the `connect`
    /// `_result`) is 190 bytes, so 256 KiB leaves room for any server's without letting a hostile
    /// destination make a relay hold megabytes.
    pub const DEFAULT_LIMITS: Limits = Limits {
        max_message_size: 256 << 10,
        max_chunk_streams: 16,
        max_buffered: 512 << 10,
    };

    pub fn new(app: &str, tc_url: &str, stream_key: &str) -> Self {
        Self {
            app: app.to_owned(),
            tc_url: tc_url.to_owned(),
            stream_key: stream_key.to_owned(),
            scheme: Scheme::Digest0,
            chunk_size: 4096,
            limits: Self::DEFAULT_LIMITS,
        }
    }
}

/// Progress the server acknowledged.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// `connect` succeeded.
    Connected,
    /// `NetStream.Publish.Start`: media may be sent now.
    Publishing { stream_id: u32 },
    /// Any other `onStatus` of level `status` or `warning`.
    Status { code: String, description: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Handshaking,
    Connecting,
    CreatingStream,
    AwaitingPublish(u32),
    Publishing(u32),
    Closed,
}

const CONNECT_TXN: f64 = 1.0;
const CREATE_STREAM_TXN: f64 = 4.0;
const PUBLISH_TXN: f64 = 5.0;

/// A publishing connection, client side. Sans-IO: bytes in, events and bytes out.
#[derive(Debug)]
pub struct ClientSession {
    config: ClientConfig,
    handshake: Option<ClientHandshake>,
    link: Link,
    state: State,
}

impl ClientSession {
    /// Starts a session; C0+C1 are in [`ClientSession::outbound`] already.
    pub fn new(config: ClientConfig) -> Self {
        let mut c0c1 = Vec::new();
        let handshake = ClientHandshake::new(config.scheme, &mut c0c1);
        let mut link = Link::new(config.limits, None);
        link.out.put_slice(&c0c1);
        Self {
            config,
            handshake: Some(handshake),
            link,
            state: State::Handshaking,
        }
    }

    /// Bytes to send to the server.
    pub fn outbound(&mut self) -> &mut Outbound {
        &mut self.link.out
    }

    /// Takes everything to send as one buffer.
    pub fn take_outbound(&mut self) -> Vec<u8> {
        self.link.out.take_all()
    }

    /// The message stream media goes on, once publishing.
    pub fn is_publishing(&self) -> bool {
        matches!(self.state, State::Publishing(_))
    }

    /// Feeds server bytes and returns what they completed. A refusal is an error.
    pub fn handle_input(&mut self, input: &[u8]) -> Result<Vec<ClientEvent>, SessionError> {
        let mut events = Vec::new();
        if let Some(handshake) = &mut self.handshake {
            let mut out = Vec::new();
            let progress = handshake.handle_input(input, &mut out)?;
            self.link.out.put_slice(&out);
            let Progress::Done { remaining } = progress else {
                return Ok(events);
            };
            self.handshake = None;
            self.start();
            self.link.feed(&remaining)?;
        } else {
            self.link.feed(input)?;
        }
        while let Some((_, message)) = self.link.next()? {
            if let Message::Command(command) = message
                && let Some(event) = self.on_command(&command.name, command.transaction_id, &command.args)?
            {
                events.push(event);
            }
        }
        Ok(events)
    }

    fn start(&mut self) {
        self.link.set_chunk_size(self.config.chunk_size);
        let object = Value::object([
            ("app", Value::string(self.config.app.as_str())),
            ("type", Value::string("nonprivate")),
            ("flashVer", Value::string("FMLE/3.0 (compatible; Oxcast)")),
            ("tcUrl", Value::string(self.config.tc_url.as_str())),
        ]);
        self.link.command(0, "connect", CONNECT_TXN, object, vec![]);
        self.state = State::Connecting;
    }

    fn on_command(
        &mut self,
        name: &str,
        txn: f64,
        args: &[Value],
    ) -> Result<Option<ClientEvent>, SessionError> {
        let refused = |command, args: &[Value]| {
            let (_, code, description) = status_of(args);
            SessionError::Refused {
                command,
                code,
                description,
            }
        };
        match (name, self.state) {
            ("_result", State::Connecting) if txn == CONNECT_TXN => {
                let key = Value::string(self.config.stream_key.as_str());
                self.link
                    .command(0, "releaseStream", 2.0, Value::Null, vec![key.clone()]);
                self.link.command(0, "FCPublish", 3.0, Value::Null, vec![key]);
                self.link
                    .command(0, "createStream", CREATE_STREAM_TXN, Value::Null, vec![]);
                self.state = State::CreatingStream;
                Ok(Some(ClientEvent::Connected))
            }
            ("_error", State::Connecting) if txn == CONNECT_TXN => Err(refused("connect", args)),
            ("_result", State::CreatingStream) if txn == CREATE_STREAM_TXN => {
                let stream_id = args.first().and_then(Value::as_number).unwrap_or(0.0);
                if !(1.0..=f64::from(u32::MAX)).contains(&stream_id) {
                    return Err(SessionError::Protocol(
                        "createStream answered without a stream id",
                    ));
                }
                let stream_id = stream_id as u32;
                let args = vec![
                    Value::string(self.config.stream_key.as_str()),
                    Value::string("live"),
                ];
                self.link
                    .command(stream_id, "publish", PUBLISH_TXN, Value::Null, args);
                self.state = State::AwaitingPublish(stream_id);
                Ok(None)
            }
            ("_error", State::CreatingStream) if txn == CREATE_STREAM_TXN => {
                Err(refused("createStream", args))
            }
            ("onStatus", _) | ("_error", State::AwaitingPublish(_)) => {
                let (level, code, description) = status_of(args);
                if level == "error" || name == "_error" {
                    self.state = State::Closed;
                    return Err(SessionError::Refused {
                        command: "publish",
                        code,
                        description,
                    });
                }
                if let (State::AwaitingPublish(stream_id), "NetStream.Publish.Start") =
                    (self.state, code.as_str())
                {
                    self.state = State::Publishing(stream_id);
                    return Ok(Some(ClientEvent::Publishing { stream_id }));
                }
                Ok(Some(ClientEvent::Status { code, description }))
            }
            // onBWDone, onFCPublish, answers to releaseStream/FCPublish: nothing to do.
            _ => Ok(None),
        }
    }

    fn stream_id(&self) -> Result<u32, SessionError> {
        match self.state {
            State::Publishing(id) => Ok(id),
            _ => Err(SessionError::Protocol("not publishing")),
        }
    }

    /// Sends `@setDataFrame onMetaData` with `properties`.
    pub fn send_metadata(&mut self, properties: Value) -> Result<(), SessionError> {
        let message = Message::data(&[
            Value::string("@setDataFrame"),
            Value::string("onMetaData"),
            properties,
        ]);
        let stream_id = self.stream_id()?;
        self.link.send(csid::DATA, 0, stream_id, &message);
        Ok(())
    }

    /// Sends a data message as it was received (its AMF0 bytes).
    pub fn send_data<'a>(
        &mut self,
        timestamp: u32,
        payload: impl Into<Payload<'a>>,
    ) -> Result<(), SessionError> {
        let stream_id = self.stream_id()?;
        self.link.send_payload(
            csid::DATA,
            timestamp,
            type_id::DATA_AMF0,
            stream_id,
            payload.into(),
        );
        Ok(())
    }

    /// Sends an FLV audio tag body: whole, or as its header and the frame (see [`Payload`]).
    pub fn send_audio<'a>(
        &mut self,
        timestamp: u32,
        payload: impl Into<Payload<'a>>,
    ) -> Result<(), SessionError> {
        let stream_id = self.stream_id()?;
        self.link
            .send_payload(csid::AUDIO, timestamp, type_id::AUDIO, stream_id, payload.into());
        Ok(())
    }

    /// Sends an FLV video tag body: whole, or as its header and the frame (see [`Payload`]).
    pub fn send_video<'a>(
        &mut self,
        timestamp: u32,
        payload: impl Into<Payload<'a>>,
    ) -> Result<(), SessionError> {
        let stream_id = self.stream_id()?;
        self.link
            .send_payload(csid::VIDEO, timestamp, type_id::VIDEO, stream_id, payload.into());
        Ok(())
    }

    /// Ends the publish cleanly (`FCUnpublish`, `deleteStream`) so the server ends the broadcast now.
    pub fn unpublish(&mut self) -> Result<(), SessionError> {
        let stream_id = self.stream_id()?;
        let key = Value::string(self.config.stream_key.as_str());
        self.link.command(0, "FCUnpublish", 6.0, Value::Null, vec![key]);
        self.link.command(
            0,
            "deleteStream",
            7.0,
            Value::Null,
            vec![Value::Number(f64::from(stream_id))],
        );
        self.state = State::Closed;
        Ok(())
    }
}
