//! RTMP messages (RTMP 1.0 §5.4, §6, §7): protocol control, user control, commands, data, audio, video.

use bytes::Bytes;
use thiserror::Error;

use crate::amf0::{self, Amf0Error, Value};
use crate::chunk::RawMessage;

/// Message type ids (RTMP 1.0 §5.4, §7.1).
pub mod type_id {
    pub const SET_CHUNK_SIZE: u8 = 1;
    pub const ABORT: u8 = 2;
    pub const ACKNOWLEDGEMENT: u8 = 3;
    pub const USER_CONTROL: u8 = 4;
    pub const WINDOW_ACK_SIZE: u8 = 5;
    pub const SET_PEER_BANDWIDTH: u8 = 6;
    pub const AUDIO: u8 = 8;
    pub const VIDEO: u8 = 9;
    pub const DATA_AMF3: u8 = 15;
    pub const COMMAND_AMF3: u8 = 17;
    pub const DATA_AMF0: u8 = 18;
    pub const COMMAND_AMF0: u8 = 20;
    pub const AGGREGATE: u8 = 22;
}

/// User control events (RTMP 1.0 §7.1.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserControl {
    StreamBegin(u32),
    StreamEof(u32),
    StreamDry(u32),
    SetBufferLength {
        stream_id: u32,
        millis: u32,
    },
    StreamIsRecorded(u32),
    PingRequest(u32),
    PingResponse(u32),
    /// An event type this stack does not act on.
    Other {
        event: u16,
        data: [u8; 8],
        len: u8,
    },
}

/// How the peer limits our output bandwidth (§5.4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BandwidthLimit {
    Hard,
    Soft,
    Dynamic,
}

/// A command: name, transaction id, command object, and further arguments (§7.1.1).
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub name: String,
    pub transaction_id: f64,
    pub object: Value,
    pub args: Vec<Value>,
}

impl Command {
    pub fn new(name: &str, transaction_id: f64, object: Value, args: Vec<Value>) -> Self {
        Self {
            name: name.to_owned(),
            transaction_id,
            object,
            args,
        }
    }

    fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(64);
        amf0::write(&mut out, &Value::String(self.name.clone()));
        amf0::write(&mut out, &Value::Number(self.transaction_id));
        amf0::write(&mut out, &self.object);
        for arg in &self.args {
            amf0::write(&mut out, arg);
        }
        Bytes::from(out)
    }

    fn decode(payload: &[u8]) -> Result<Self, MessageError> {
        // One read for the whole command, so all its values count against one `amf0::MAX_VALUES`.
        let mut values = amf0::read_all(payload)?.into_iter();
        let name = match values.next() {
            Some(Value::String(name)) => name,
            _ => return Err(MessageError::MalformedCommand("the command name is not a string")),
        };
        // A bare name is a command too (some clients end FCUnpublish early); missing fields read as null.
        let transaction_id = values.next().and_then(|v| v.as_number()).unwrap_or(0.0);
        let object = values.next().unwrap_or(Value::Null);
        let args = values.collect();
        Ok(Self {
            name,
            transaction_id,
            object,
            args,
        })
    }
}

/// One message, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    SetChunkSize(u32),
    Abort {
        csid: u32,
    },
    Acknowledgement {
        sequence: u32,
    },
    UserControl(UserControl),
    WindowAckSize(u32),
    SetPeerBandwidth {
        size: u32,
        limit: BandwidthLimit,
    },
    /// An FLV audio tag body, untouched.
    Audio(Bytes),
    /// An FLV video tag body, untouched.
    Video(Bytes),
    /// A data message (`@setDataFrame`, `onMetaData`, ...): its AMF0 bytes, undecoded (an AMF3 data
    /// message's leading format byte is left out). What it holds is informational: whoever wants the
    /// values reads them with [`amf0::read_prefix`], and only if the message is worth it.
    Data(Bytes),
    Command(Command),
    /// Any other type (shared objects, aggregates): passed on undecoded.
    Other {
        type_id: u8,
        payload: Bytes,
    },
}

/// Why a message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MessageError {
    #[error("message type {type_id} needs {need} bytes, got {got}")]
    Short { type_id: u8, need: usize, got: usize },
    #[error("malformed AMF0: {0}")]
    Amf0(#[from] Amf0Error),
    #[error("malformed command: {0}")]
    MalformedCommand(&'static str),
}

fn u32_at(payload: &[u8], at: usize, type_id: u8) -> Result<u32, MessageError> {
    crate::be_u32(payload, at).ok_or(MessageError::Short {
        type_id,
        need: at + 4,
        got: payload.len(),
    })
}

impl Message {
    /// The message type id this message is sent with.
    pub fn type_id(&self) -> u8 {
        use type_id::*;
        match self {
            Message::SetChunkSize(_) => SET_CHUNK_SIZE,
            Message::Abort { .. } => ABORT,
            Message::Acknowledgement { .. } => ACKNOWLEDGEMENT,
            Message::UserControl(_) => USER_CONTROL,
            Message::WindowAckSize(_) => WINDOW_ACK_SIZE,
            Message::SetPeerBandwidth { .. } => SET_PEER_BANDWIDTH,
            Message::Audio(_) => AUDIO,
            Message::Video(_) => VIDEO,
            Message::Data(_) => DATA_AMF0,
            Message::Command(_) => COMMAND_AMF0,
            Message::Other { type_id, .. } => *type_id,
        }
    }

    /// Decodes a reassembled message. Audio, video and data payloads are kept as the same `Bytes`,
    /// undecoded; commands are read as AMF0.
    pub fn decode(raw: &RawMessage) -> Result<Message, MessageError> {
        use type_id::*;
        let payload = &raw.payload;
        let t = raw.type_id;
        Ok(match t {
            SET_CHUNK_SIZE => Message::SetChunkSize(u32_at(payload, 0, t)? & 0x7FFF_FFFF),
            ABORT => Message::Abort {
                csid: u32_at(payload, 0, t)?,
            },
            ACKNOWLEDGEMENT => Message::Acknowledgement {
                sequence: u32_at(payload, 0, t)?,
            },
            WINDOW_ACK_SIZE => Message::WindowAckSize(u32_at(payload, 0, t)?),
            SET_PEER_BANDWIDTH => {
                let size = u32_at(payload, 0, t)?;
                let limit = match payload.get(4) {
                    Some(0) => BandwidthLimit::Hard,
                    Some(1) => BandwidthLimit::Soft,
                    Some(2) => BandwidthLimit::Dynamic,
                    _ => {
                        return Err(MessageError::Short {
                            type_id: t,
                            need: 5,
                            got: payload.len(),
                        });
                    }
                };
                Message::SetPeerBandwidth { size, limit }
            }
            USER_CONTROL => Message::UserControl(decode_user_control(payload)?),
            AUDIO => Message::Audio(raw.payload.clone()),
            VIDEO => Message::Video(raw.payload.clone()),
            // Not read as AMF0 here: a session decodes data only from a publisher it accepted.
            DATA_AMF0 => Message::Data(raw.payload.clone()),
            // AMF3 data and commands that hold AMF0 values after a leading format byte (§7.1.1-2).
            DATA_AMF3 => Message::Data(raw.payload.slice(payload.len().min(1)..)),
            COMMAND_AMF0 => Message::Command(Command::decode(payload)?),
            COMMAND_AMF3 => Message::Command(Command::decode(payload.get(1..).unwrap_or_default())?),
            _ => Message::Other {
                type_id: t,
                payload: raw.payload.clone(),
            },
        })
    }

    /// The payload to send for this message.
    pub fn encode(&self) -> Bytes {
        let be = |v: u32| Bytes::copy_from_slice(&v.to_be_bytes());
        match self {
            Message::SetChunkSize(size) => be(*size & 0x7FFF_FFFF),
            Message::Abort { csid } => be(*csid),
            Message::Acknowledgement { sequence } => be(*sequence),
            Message::WindowAckSize(size) => be(*size),
            Message::SetPeerBandwidth { size, limit } => {
                let mut out = size.to_be_bytes().to_vec();
                out.push(match limit {
                    BandwidthLimit::Hard => 0,
                    BandwidthLimit::Soft => 1,
                    BandwidthLimit::Dynamic => 2,
                });
                Bytes::from(out)
            }
            Message::UserControl(event) => encode_user_control(event),
            Message::Audio(payload)
            | Message::Video(payload)
            | Message::Data(payload)
            | Message::Other { payload, .. } => payload.clone(),
            Message::Command(command) => command.encode(),
        }
    }

    /// A data message from values, encoded once.
    pub fn data(values: &[Value]) -> Message {
        Message::Data(Bytes::from(amf0::encode(values)))
    }
}

fn decode_user_control(payload: &[u8]) -> Result<UserControl, MessageError> {
    let short = |need| MessageError::Short {
        type_id: type_id::USER_CONTROL,
        need,
        got: payload.len(),
    };
    let event = match payload {
        [a, b, ..] => u16::from_be_bytes([*a, *b]),
        _ => return Err(short(2)),
    };
    let arg = |at| u32_at(payload, at, type_id::USER_CONTROL);
    Ok(match event {
        0 => UserControl::StreamBegin(arg(2)?),
        1 => UserControl::StreamEof(arg(2)?),
        2 => UserControl::StreamDry(arg(2)?),
        3 => UserControl::SetBufferLength {
            stream_id: arg(2)?,
            millis: arg(6)?,
        },
        4 => UserControl::StreamIsRecorded(arg(2)?),
        6 => UserControl::PingRequest(arg(2)?),
        7 => UserControl::PingResponse(arg(2)?),
        _ => {
            let rest = payload.get(2..).unwrap_or_default();
            let len = rest.len().min(8);
            let mut data = [0; 8];
            data.iter_mut().zip(rest).for_each(|(slot, b)| *slot = *b);
            UserControl::Other {
                event,
                data,
                len: len as u8,
            }
        }
    })
}

fn encode_user_control(event: &UserControl) -> Bytes {
    let mut out = Vec::with_capacity(10);
    let (code, args): (u16, &[u32]) = match event {
        UserControl::StreamBegin(id) => (0, std::slice::from_ref(id)),
        UserControl::StreamEof(id) => (1, std::slice::from_ref(id)),
        UserControl::StreamDry(id) => (2, std::slice::from_ref(id)),
        UserControl::SetBufferLength { stream_id, millis } => {
            out.extend_from_slice(&3u16.to_be_bytes());
            out.extend_from_slice(&stream_id.to_be_bytes());
            out.extend_from_slice(&millis.to_be_bytes());
            return Bytes::from(out);
        }
        UserControl::StreamIsRecorded(id) => (4, std::slice::from_ref(id)),
        UserControl::PingRequest(t) => (6, std::slice::from_ref(t)),
        UserControl::PingResponse(t) => (7, std::slice::from_ref(t)),
        UserControl::Other { event, data, len } => {
            out.extend_from_slice(&event.to_be_bytes());
            out.extend_from_slice(data.get(..usize::from(*len)).unwrap_or_default());
            return Bytes::from(out);
        }
    };
    out.extend_from_slice(&code.to_be_bytes());
    for arg in args {
        out.extend_from_slice(&arg.to_be_bytes());
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(message: Message) {
        let raw = RawMessage {
            csid: 3,
            timestamp: 0,
            type_id: message.type_id(),
            stream_id: 0,
            payload: message.encode(),
        };
        assert_eq!(Message::decode(&raw).unwrap(), message);
    }

    #[test]
    fn every_message_type_reads_what_was_written() {
        let status = Value::object([
            ("level", Value::string("status")),
            ("code", Value::string("NetStream.Publish.Start")),
        ]);
        let commands = [
            Command::new(
                "connect",
                1.0,
                Value::object([("app", Value::string("live"))]),
                vec![],
            ),
            Command::new("releaseStream", 2.0, Value::Null, vec![Value::string("key")]),
            Command::new("FCPublish", 3.0, Value::Null, vec![Value::string("key")]),
            Command::new("createStream", 4.0, Value::Null, vec![]),
            Command::new(
                "publish",
                5.0,
                Value::Null,
                vec![Value::string("key"), Value::string("live")],
            ),
            Command::new("FCUnpublish", 6.0, Value::Null, vec![Value::string("key")]),
            Command::new("deleteStream", 7.0, Value::Null, vec![Value::Number(1.0)]),
            Command::new("_result", 4.0, Value::Null, vec![Value::Number(1.0)]),
            Command::new("_error", 1.0, Value::Null, vec![status.clone()]),
            Command::new("onStatus", 0.0, Value::Null, vec![status]),
            Command::new("onBWDone", 0.0, Value::Null, vec![Value::Number(8192.0)]),
            Command::new("_checkbw", 5.0, Value::Null, vec![]),
        ];
        for command in commands {
            round_trip(Message::Command(command));
        }
        for message in [
            Message::SetChunkSize(4096),
            Message::Abort { csid: 6 },
            Message::Acknowledgement { sequence: 2_500_000 },
            Message::WindowAckSize(2_500_000),
            Message::SetPeerBandwidth {
                size: 2_500_000,
                limit: BandwidthLimit::Dynamic,
            },
            Message::Audio(Bytes::from_static(&[0xAF, 1, 2, 3])),
            Message::Video(Bytes::from_static(&[0x17, 1, 0, 0, 0, 9])),
            Message::data(&[
                Value::string("@setDataFrame"),
                Value::string("onMetaData"),
                Value::EcmaArray(vec![("width".into(), Value::Number(640.0))]),
            ]),
            Message::data(&[Value::string("onMetaData"), Value::EcmaArray(vec![])]),
            Message::Other {
                type_id: 22,
                payload: Bytes::from_static(b"agg"),
            },
        ] {
            round_trip(message);
        }
        for event in [
            UserControl::StreamBegin(1),
            UserControl::StreamEof(1),
            UserControl::StreamDry(1),
            UserControl::SetBufferLength {
                stream_id: 1,
                millis: 3000,
            },
            UserControl::StreamIsRecorded(1),
            UserControl::PingRequest(77),
            UserControl::PingResponse(77),
            UserControl::Other {
                event: 31,
                data: [1, 2, 3, 4, 0, 0, 0, 0],
                len: 4,
            },
        ] {
            round_trip(Message::UserControl(event));
        }
    }

    #[test]
    fn short_and_odd_commands_do_not_panic() {
        for payload in [
            &[][..],
            &[0x02, 0, 0],
            &[0x02, 0, 4, b'p', b'l', b'a', b'y'],
            &[0x00, 0, 0, 0, 0, 0, 0, 0, 0],
        ] {
            let raw = RawMessage {
                csid: 3,
                timestamp: 0,
                type_id: 20,
                stream_id: 0,
                payload: Bytes::copy_from_slice(payload),
            };
            let _ = Message::decode(&raw);
        }
        let empty_data = RawMessage {
            csid: 3,
            timestamp: 0,
            type_id: 18,
            stream_id: 1,
            payload: Bytes::new(),
        };
        assert_eq!(Message::decode(&empty_data).unwrap(), Message::Data(Bytes::new()));
    }
}
