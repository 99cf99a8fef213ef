//! The JSON shapes of the contract. Optional members are omitted, never `null`; field order
//! follows the contract's examples.

use oxcast_core::live::{AudioStats, PublisherInfo, VideoStats};
use oxcast_core::{Archive, LiveInput, LiveStream, Output, OutputKind, RelayStatus, Status, StreamId};
use serde::Serialize;

use crate::viewers::Viewers;
use crate::{ApiConfig, Sources};

/// What the views read besides the stored objects.
#[derive(Clone, Copy)]
pub(crate) struct ViewContext<'a> {
    pub(crate) config: &'a ApiConfig,
    pub(crate) sources: &'a Sources,
    pub(crate) viewers: &'a Viewers,
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
    /// What the publisher sends now (an Oxcast extension).
    #[serde(skip_serializing_if = "Option::is_none")]
    live: Option<LiveView>,
}

/// `live`: the publisher's input, as measured.
#[derive(Serialize)]
struct LiveView {
    publisher: PublisherView,
    #[serde(skip_serializing_if = "Option::is_none")]
    video: Option<VideoView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    audio: Option<AudioView>,
    bytes_in: u64,
    dropped_frames: u64,
}

#[derive(Serialize)]
struct PublisherView {
    address: String,
    connected_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    encoder: Option<String>,
}

#[derive(Serialize)]
struct VideoView {
    codec: String,
    width: u32,
    height: u32,
    fps: f64,
    bitrate_kbps: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    keyframe_interval_sec: Option<f64>,
}

#[derive(Serialize)]
struct AudioView {
    codec: String,
    sample_rate: u32,
    channels: u8,
    bitrate_kbps: f64,
}

impl From<LiveInput> for LiveView {
    fn from(live: LiveInput) -> Self {
        let PublisherInfo {
            address,
            connected_at,
            encoder,
        } = live.publisher;
        LiveView {
            publisher: PublisherView {
                address,
                connected_at,
                encoder,
            },
            video: live.video.map(|v: VideoStats| VideoView {
                codec: v.codec,
                width: v.width,
                height: v.height,
                fps: v.fps,
                bitrate_kbps: v.bitrate_kbps,
                keyframe_interval_sec: v.keyframe_interval_sec,
            }),
            audio: live.audio.map(|a: AudioStats| AudioView {
                codec: a.codec,
                sample_rate: a.sample_rate,
                channels: a.channels,
                bitrate_kbps: a.bitrate_kbps,
            }),
            bytes_in: live.bytes_in,
            dropped_frames: live.dropped_frames,
        }
    }
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
    /// HLS outputs of an active stream: what the packaging made, and who watches.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    hls: Option<HlsView>,
    /// Archive outputs of an active stream: the recording in progress.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    recording: Option<RecordingView>,
    created_at: i64,
    updated_at: i64,
}

#[derive(Serialize)]
struct HlsView {
    segments: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_segment_at: Option<i64>,
    viewers: usize,
}

#[derive(Serialize)]
struct RecordingView {
    recording_bytes: u64,
    recording_duration_sec: f64,
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
    bitrate_kbps: f64,
}

impl From<RelayStatus> for RelayView {
    fn from(status: RelayStatus) -> Self {
        RelayView {
            status: status.state.as_str(),
            last_error: status.last_error,
            connected_at: status.connected_at,
            bytes_sent: status.bytes_sent,
            dropped_frames: status.dropped_frames,
            bitrate_kbps: status.bitrate_kbps,
        }
    }
}

impl<'a> LiveStreamView<'a> {
    /// `live`: the publisher's figures, while one publishes.
    pub(crate) fn new(stream: &'a LiveStream, context: ViewContext<'_>, live: Option<LiveInput>) -> Self {
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
                .map(|o| OutputView::new(&stream.id, stream.status, o, context))
                .collect(),
            idle_timeout_sec: stream.idle_timeout_sec,
            max_runtime_sec: stream.max_runtime_sec,
            created_at: stream.created_at,
            updated_at: stream.updated_at,
            live: live
                .filter(|_| stream.status == Status::Active)
                .map(LiveView::from),
        }
    }
}

impl<'a> OutputView<'a> {
    /// The live figures of an output are shown while its stream (`status`) is active.
    pub(crate) fn new(
        stream_id: &StreamId,
        status: Status,
        output: &'a Output,
        context: ViewContext<'_>,
    ) -> Self {
        let active = status == Status::Active;
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
            hls: None,
            recording: None,
            created_at: output.created_at,
            updated_at: output.updated_at,
        };
        match &output.kind {
            OutputKind::Hls => {
                view.uri = Some(hls_url(stream_id, context.config));
                view.player_uri = Some(player_url(stream_id, context.config));
                if active {
                    let stats = context.sources.hls.stats(stream_id).unwrap_or_default();
                    view.hls = Some(HlsView {
                        segments: stats.segments,
                        last_segment_at: stats.last_segment_at,
                        viewers: context.viewers.count(stream_id),
                    });
                }
            }
            OutputKind::Archive { public_id } => {
                view.public_id = Some(public_id);
                if active {
                    let stats = context
                        .sources
                        .recordings
                        .recording(stream_id)
                        .unwrap_or_default();
                    view.recording = Some(RecordingView {
                        recording_bytes: stats.bytes,
                        recording_duration_sec: stats.duration_ms as f64 / 1000.0,
                    });
                }
            }
            OutputKind::Simulcast(target) => {
                view.uri = Some(target.uri.clone());
                view.stream_key = target.stream_key.as_deref();
                view.vendor = target.vendor.as_deref();
                let status = context
                    .sources
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
            uri: asset_url(config, &archive.public_id, archive.version),
            duration_sec: archive.duration_ms as f64 / 1000.0,
            bytes: archive.bytes,
            created_at: archive.created_at,
        }
    }
}

/// Where players find one recording of `public_id`.
pub(crate) fn asset_url(config: &ApiConfig, public_id: &str, version: i64) -> String {
    oxcast_core::model::archive_uri(&config.public_http_url, &config.cloud_name, public_id, version)
}
