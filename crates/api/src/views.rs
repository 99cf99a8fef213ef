//! The JSON shapes of the contract. Optional members are omitted, never `null`; field order
//! follows the contract's examples.

use oxcast_core::{Archive, LiveStream, Output, OutputKind, RelayStatus, RelayStatusSource, StreamId};
use serde::Serialize;

use crate::ApiConfig;

/// What the views read besides the stored objects.
#[derive(Clone, Copy)]
pub(crate) struct ViewContext<'a> {
    pub(crate) config: &'a ApiConfig,
    pub(crate) relays: &'a dyn RelayStatusSource,
}

#[derive(Serialize)]
pub(crate) struct LiveStreamView<'a> {
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    input: InputView<'a>,
    status: &'static str,
    outputs: Vec<OutputView<'a>>,
    idle_timeout_sec: u32,
    max_runtime_sec: u32,
    created_at: i64,
    updated_at: i64,
}

#[derive(Serialize)]
struct InputView<'a> {
    r#type: &'static str,
    uri: String,
    stream_key: &'a str,
}

#[derive(Serialize)]
pub(crate) struct OutputView<'a> {
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    r#type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    uri: Option<String>,
    /// HLS outputs only: the public viewer page (an Oxcast extension).
    #[serde(skip_serializing_if = "Option::is_none")]
    player_uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    vendor: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    public_id: Option<&'a str>,
    /// Simulcast outputs only: what the relay is doing (an Oxcast extension).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    relay: Option<RelayView>,
    created_at: i64,
    updated_at: i64,
}

#[derive(Serialize)]
struct RelayView {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    connected_at: Option<i64>,
    bytes_sent: u64,
    dropped_frames: u64,
}

impl From<RelayStatus> for RelayView {
    fn from(status: RelayStatus) -> Self {
        RelayView {
            status: status.state.as_str(),
            last_error: status.last_error,
            connected_at: status.connected_at,
            bytes_sent: status.bytes_sent,
            dropped_frames: status.dropped_frames,
        }
    }
}

impl<'a> LiveStreamView<'a> {
    pub(crate) fn new(stream: &'a LiveStream, context: ViewContext<'_>) -> Self {
        let config = context.config;
        LiveStreamView {
            id: stream.id.as_str(),
            name: stream.name.as_deref(),
            input: InputView {
                r#type: "rtmp",
                uri: oxcast_core::model::ingest_uri(&config.public_rtmp_url),
                stream_key: stream.stream_key.as_str(),
            },
            status: stream.status.as_str(),
            outputs: stream
                .outputs
                .iter()
                .map(|o| OutputView::new(&stream.id, o, context))
                .collect(),
            idle_timeout_sec: stream.idle_timeout_sec,
            max_runtime_sec: stream.max_runtime_sec,
            created_at: stream.created_at,
            updated_at: stream.updated_at,
        }
    }
}

impl<'a> OutputView<'a> {
    pub(crate) fn new(stream_id: &StreamId, output: &'a Output, context: ViewContext<'_>) -> Self {
        let mut view = OutputView {
            id: output.id.as_str(),
            name: output.name.as_deref(),
            r#type: output.kind.output_type().as_str(),
            uri: None,
            player_uri: None,
            stream_key: None,
            vendor: None,
            public_id: None,
            relay: None,
            created_at: output.created_at,
            updated_at: output.updated_at,
        };
        match &output.kind {
            OutputKind::Hls => {
                view.uri = Some(hls_url(stream_id, context.config));
                view.player_uri = Some(player_url(stream_id, context.config));
            }
            OutputKind::Archive { public_id } => view.public_id = Some(public_id),
            OutputKind::Simulcast(target) => {
                view.uri = Some(target.uri.clone());
                view.stream_key = target.stream_key.as_deref();
                view.vendor = target.vendor.as_deref();
                let status = context
                    .relays
                    .relay_status(&output.id)
                    .unwrap_or(RelayStatus::IDLE);
                view.relay = Some(status.into());
            }
        }
        view
    }
}

/// Where players find a stream's HLS.
pub(crate) fn hls_url(stream_id: &StreamId, config: &ApiConfig) -> String {
    format!(
        "{}{}",
        config.public_http_url,
        hls_path(stream_id, &config.cloud_name)
    )
}

/// The path of a stream's HLS playlist on this server.
pub(crate) fn hls_path(stream_id: &StreamId, cloud_name: &str) -> String {
    format!("/{cloud_name}/video/live/live_stream_{stream_id}_hls.m3u8")
}

/// A stream's public viewer page (see `pages`).
pub(crate) fn player_url(stream_id: &StreamId, config: &ApiConfig) -> String {
    format!(
        "{}/{}/video/player/{stream_id}",
        config.public_http_url, config.cloud_name
    )
}

/// A recording, as `GET …/live_streams/{id}/archives` lists it (an Oxcast extension).
#[derive(Serialize)]
pub(crate) struct ArchiveView<'a> {
    public_id: &'a str,
    version: i64,
    uri: String,
    duration_sec: f64,
    bytes: i64,
    created_at: i64,
}

impl<'a> ArchiveView<'a> {
    pub(crate) fn new(archive: &'a Archive, config: &ApiConfig) -> Self {
        ArchiveView {
            public_id: &archive.public_id,
            version: archive.version,
            uri: format!(
                "{}/{}/video/upload/v{}/{}.mp4",
                config.public_http_url, config.cloud_name, archive.version, archive.public_id
            ),
            duration_sec: archive.duration_ms as f64 / 1000.0,
            bytes: archive.bytes,
            created_at: archive.created_at,
        }
    }
}
