//! The Prometheus exporter behind `/metrics`: every crate records through the `metrics` facade
//! where its event happens; this installs the recorder that keeps the figures, describes each
//! metric (its HELP line), and gives the API a way to render them.

use std::sync::Arc;
use std::time::Duration;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Bucket bounds, in seconds, of every histogram (all of them measure time).
const SECONDS_BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// How often the exporter folds recent histogram samples in, so they do not pile up between scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Installs the process-wide recorder; `None` when another one is installed already.
pub(crate) fn install(token: Option<String>) -> anyhow::Result<oxcast_api::MetricsExport> {
    let recorder = PrometheusBuilder::new()
        .set_buckets(&SECONDS_BUCKETS)?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)
        .map_err(|_| anyhow::anyhow!("a metrics recorder is installed already"))?;
    describe();
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(UPKEEP_EVERY);
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(oxcast_api::MetricsExport {
        render: Arc::new(move || PrometheusHandle::render(&handle)),
        token,
    })
}

fn describe() {
    describe_gauge!(
        "oxcast_rtmp_connections",
        "RTMP connections open, by state (connecting: not publishing yet)."
    );
    describe_gauge!("oxcast_http_connections", "HTTP connections open.");
    describe_counter!(
        "oxcast_refused_connections_total",
        "Connections refused or closed by a rule, by listener and reason (a setting's name, or what the client got wrong)."
    );
    describe_counter!(
        "oxcast_refused_requests_total",
        "HTTP requests refused, by reason (unauthorized: wrong or missing admin credentials; metrics_token)."
    );
    describe_gauge!("oxcast_streams", "Live streams, by status.");
    describe_counter!(
        "oxcast_stream_bytes_in_total",
        Unit::Bytes,
        "Bytes received from a stream's publishers, RTMP framing included."
    );
    describe_counter!(
        "oxcast_stream_bytes_out_total",
        Unit::Bytes,
        "Bytes sent of a stream, by output (hls: playlists and segments served; simulcast: to destinations)."
    );
    describe_counter!("oxcast_hls_segments_total", "HLS segments made, by stream.");
    describe_histogram!(
        "oxcast_hls_segment_listing_seconds",
        Unit::Seconds,
        "Time from the arrival of a segment's last frame to the segment's listing in the playlist."
    );
    describe_counter!(
        "oxcast_hls_requests_total",
        "Media requests, by kind (playlist, segment, asset) and HTTP status."
    );
    describe_gauge!(
        "oxcast_hls_viewers",
        "Clients (address and user agent) that asked for a stream's playlist in the last 15 seconds."
    );
    describe_gauge!(
        "oxcast_simulcast_state",
        "1 for a simulcast output's current state (idle, connecting, live, retrying), 0 for the others."
    );
    describe_counter!(
        "oxcast_simulcast_reconnects_total",
        "Failed simulcast connections, each followed by a new attempt, by output."
    );
    describe_counter!(
        "oxcast_archive_bytes_total",
        Unit::Bytes,
        "Bytes written to recordings, by stream."
    );
    describe_counter!(
        "oxcast_recordings_deleted_total",
        "Recordings deleted, by reason (request: the Admin API; retention: archive.retention_days)."
    );
    describe_counter!(
        "oxcast_recordings_deleted_bytes_total",
        Unit::Bytes,
        "Bytes of recordings deleted, by reason."
    );
    describe_histogram!(
        "oxcast_archive_finalize_seconds",
        Unit::Seconds,
        "Time to turn a finished recording into its MP4 asset."
    );
}
