//! Where the lifecycle meets the output crates: when a stream goes active, each of its outputs
//! subscribes to the stream's bus; when it goes idle, the bus ends and so do they.

use std::sync::Arc;

use oxcast_archive::Archives;
use oxcast_core::{IdleReason, LiveStream, OutputKind, OutputRunner, StreamBus, StreamId};
use oxcast_hls::HlsOutputs;
use oxcast_simulcast::Relays;

/// Runs each active stream's outputs.
pub(crate) struct Outputs {
    pub(crate) hls: Arc<HlsOutputs>,
    pub(crate) archives: Arc<Archives>,
    pub(crate) relays: Arc<Relays>,
}

/// The span every output task of a stream runs in, whoever started it (the publisher's
/// connection, an API request adding an output): one filter on `stream_id` reads its story.
fn stream_span(stream_id: &StreamId) -> tracing::Span {
    tracing::info_span!(parent: None, "stream", stream_id = %stream_id)
}

impl OutputRunner for Outputs {
    fn stream_active(&self, stream: &LiveStream, bus: &Arc<StreamBus>) {
        let _stream = stream_span(&stream.id).entered();
        tracing::debug!(outputs = stream.outputs.len(), "starting outputs");
        if stream.outputs.iter().any(|o| matches!(o.kind, OutputKind::Hls)) {
            // Subscribed here, before the publisher's first frame can be published.
            self.hls.start(&stream.id, bus.subscribe());
        }
        for output in &stream.outputs {
            if let OutputKind::Archive { public_id } = &output.kind {
                self.archives
                    .start(&stream.id, public_id.clone(), bus.subscribe());
            }
        }
        self.relays.sync(stream, bus);
    }

    fn outputs_changed(&self, stream: &LiveStream, bus: &Arc<StreamBus>) {
        let _stream = stream_span(&stream.id).entered();
        self.relays.sync(stream, bus);
    }

    fn stream_deleted(&self, stream_id: &StreamId) {
        self.hls.remove(stream_id);
        self.relays.stream_deleted(stream_id);
    }

    fn stream_idle(&self, stream_id: &StreamId, reason: IdleReason) {
        // The bus has ended: each output finishes on its own (the playlist gets EXT-X-ENDLIST, the
        // recording is finalized).
        tracing::debug!(stream_id = %stream_id, %reason, "stopping outputs");
        self.relays.stream_idle(stream_id);
    }
}
