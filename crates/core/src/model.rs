//! The domain model: live streams, their outputs, and the requests that create or change them.

use std::fmt;

use crate::ids::{OutputId, StreamId, StreamKey};

/// The RTMP application encoders publish to: the path of every stream's `input.uri`.
pub const INGEST_APP: &str = "streams";

/// A stream's `input.uri`: the ingest application under the server's public RTMP URL (given
/// without a trailing slash).
pub fn ingest_uri(public_rtmp_url: &str) -> String {
    format!("{public_rtmp_url}/{INGEST_APP}")
}

/// A recording's address: `{public_http_url}/{cloud_name}/video/upload/v{version}/{public_id}.mp4`.
pub fn archive_uri(public_http_url: &str, cloud_name: &str, public_id: &str, version: i64) -> String {
    format!("{public_http_url}/{cloud_name}/video/upload/v{version}/{public_id}.mp4")
}

/// Whether a stream is live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// No session: nothing is published or served live.
    Idle,
    /// A session is running (published to, or activated by hand and waiting for input).
    Active,
}

impl Status {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Idle => "idle",
            Status::Active => "active",
        }
    }
}

/// Why a stream went idle; logged and passed to the output runners.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdleReason {
    /// `POST …/idle`.
    Requested,
    /// No input for `idle_timeout_sec` since activation: nobody published.
    IdleTimeout,
    /// No input for `idle_timeout_sec` since the publisher left.
    PublisherLeft,
    /// `max_runtime_sec` passed since activation.
    MaxRuntime,
    /// The stream was deleted while active.
    Deleted,
    /// The server is shutting down.
    Shutdown,
}

impl IdleReason {
    /// The `reason` of a `live_stream.idle` webhook.
    pub fn as_str(self) -> &'static str {
        match self {
            IdleReason::Requested => "manual",
            IdleReason::IdleTimeout => "idle_timeout",
            IdleReason::PublisherLeft => "publisher_left",
            IdleReason::MaxRuntime => "max_runtime",
            IdleReason::Deleted => "deleted",
            IdleReason::Shutdown => "shutdown",
        }
    }
}

impl fmt::Display for IdleReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IdleReason::Requested => "idle requested",
            IdleReason::IdleTimeout => "idle timeout",
            IdleReason::PublisherLeft => "idle timeout after the publisher left",
            IdleReason::MaxRuntime => "max runtime reached",
            IdleReason::Deleted => "stream deleted",
            IdleReason::Shutdown => "server shutting down",
        })
    }
}

/// A live stream as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveStream {
    pub id: StreamId,
    pub name: Option<String>,
    pub stream_key: StreamKey,
    pub status: Status,
    pub idle_timeout_sec: u32,
    pub max_runtime_sec: u32,
    /// Unix epoch milliseconds.
    pub created_at: i64,
    /// Unix epoch milliseconds.
    pub updated_at: i64,
    /// In creation order.
    pub outputs: Vec<Output>,
}

/// A finished recording: an MP4 asset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Archive {
    pub public_id: String,
    /// The finalize time in Unix seconds; unique per `public_id`.
    pub version: i64,
    pub stream_id: StreamId,
    /// The file, relative to the storage directory.
    pub path: String,
    pub duration_ms: i64,
    pub bytes: i64,
    /// Unix epoch milliseconds: when the recording started.
    pub created_at: i64,
}

/// One output of a live stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    pub id: OutputId,
    pub name: Option<String>,
    pub kind: OutputKind,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What an output does, with the settings that only make sense for its type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutputKind {
    /// HLS served by Oxcast; its playback URL is derived, not stored.
    Hls,
    /// The recording, stored as an asset named `public_id`.
    Archive { public_id: String },
    /// A relay to another RTMP(S) server.
    Simulcast(SimulcastTarget),
}

/// Where a simulcast output publishes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimulcastTarget {
    /// `rtmp://` or `rtmps://` URL, as the user gave it.
    pub uri: String,
    /// When absent, the uri's last path segment is the key.
    pub stream_key: Option<String>,
    /// Free text such as `youtube`.
    pub vendor: Option<String>,
}

/// The output types of the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputType {
    Hls,
    Archive,
    Simulcast,
}

impl OutputType {
    /// Every type, in the order error messages list them.
    pub const ALL: [OutputType; 3] = [OutputType::Hls, OutputType::Archive, OutputType::Simulcast];

    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            OutputType::Hls => "hls",
            OutputType::Archive => "archive",
            OutputType::Simulcast => "simulcast",
        }
    }

    /// Parses the API's spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// `hls` and `archive` belong to the stream's session and exist at most once per stream.
    pub fn is_singleton(self) -> bool {
        matches!(self, OutputType::Hls | OutputType::Archive)
    }
}

impl OutputKind {
    /// The output's type.
    pub fn output_type(&self) -> OutputType {
        match self {
            OutputKind::Hls => OutputType::Hls,
            OutputKind::Archive { .. } => OutputType::Archive,
            OutputKind::Simulcast(_) => OutputType::Simulcast,
        }
    }
}

/// A request to create a stream; absent values take the defaults of [`crate::rules`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewStream {
    pub name: Option<String>,
    pub idle_timeout_sec: Option<u32>,
    pub max_runtime_sec: Option<u32>,
}

/// A change to a stream; `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamPatch {
    /// `Some(None)` removes the name.
    pub name: Option<Option<String>>,
    pub idle_timeout_sec: Option<u32>,
    pub max_runtime_sec: Option<u32>,
}

/// A request to add an output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewOutput {
    pub name: Option<String>,
    pub kind: NewOutputKind,
}

/// The type-specific part of [`NewOutput`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NewOutputKind {
    Hls,
    /// `None`: the default `live_stream_<id>_archive`.
    Archive {
        public_id: Option<String>,
    },
    Simulcast(SimulcastTarget),
}

/// A change to an output; `None` leaves a field as it is. Which fields apply depends on the
/// output's type, which only the registry knows, so it checks them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutputPatch {
    /// `Some(None)` removes the name.
    pub name: Option<Option<String>>,
    pub uri: Option<String>,
    /// `Some(None)` removes the key (the uri's last segment becomes the key).
    pub stream_key: Option<Option<String>>,
    pub public_id: Option<String>,
}

impl OutputPatch {
    /// True when the patch changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == OutputPatch::default()
    }
}
