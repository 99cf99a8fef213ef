//! Where the lifecycle meets the output crates. Until ingest, HLS, archive and simulcast exist,
//! a session has no outputs to run, and this only reports the transitions.

use std::sync::Arc;

use oxcast_core::{IdleReason, LiveStream, OutputRunner, StreamBus, StreamId};

/// Runs each active stream's outputs.
pub(crate) struct Outputs;

impl OutputRunner for Outputs {
    fn stream_active(&self, stream: &LiveStream, _bus: &Arc<StreamBus>) {
        tracing::debug!(stream_id = %stream.id, outputs = stream.outputs.len(), "starting outputs");
    }

    fn stream_idle(&self, stream_id: &StreamId, reason: IdleReason) {
        tracing::debug!(stream_id = %stream_id, %reason, "stopping outputs");
    }
}
