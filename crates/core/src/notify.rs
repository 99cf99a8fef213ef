//! Events for webhooks, said where they happen: the registry (a stream going active or idle),
//! the archive (a recording listed as an asset), the simulcast relays (failing, recovering).
//!
//! Whoever sees an event hands it to a [`Notifier`], which never waits: the event goes down a
//! channel to the webhook outbox (`oxcast-notify`), which records and delivers it off the media
//! path. The output crates share this one seam and stay independent of each other and of HTTP.

use tokio::sync::mpsc;

use crate::clock::now_ms;
use crate::ids::{OutputId, StreamId};
use crate::model::IdleReason;

/// Something a webhook receiver is told about.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// `live_stream.active`: a session started (a publish, or activation by hand).
    StreamActive {
        stream_id: StreamId,
        name: Option<String>,
    },
    /// `live_stream.idle`: the session ended, and why.
    StreamIdle {
        stream_id: StreamId,
        name: Option<String>,
        reason: IdleReason,
    },
    /// `archive.ready`: a recording was finalized and listed.
    ArchiveReady {
        stream_id: StreamId,
        public_id: String,
        version: i64,
        duration_ms: i64,
        bytes: i64,
    },
    /// `simulcast.failed`: a relay that was connecting or live failed (once per failure streak).
    SimulcastFailed {
        stream_id: StreamId,
        output_id: OutputId,
        /// The destination without its stream key.
        destination: String,
        last_error: String,
    },
    /// `simulcast.recovered`: the relay is live again after failing.
    SimulcastRecovered {
        stream_id: StreamId,
        output_id: OutputId,
        destination: String,
    },
}

impl Event {
    /// The event's name in webhook bodies and the API.
    pub fn name(&self) -> &'static str {
        match self {
            Event::StreamActive { .. } => "live_stream.active",
            Event::StreamIdle { .. } => "live_stream.idle",
            Event::ArchiveReady { .. } => "archive.ready",
            Event::SimulcastFailed { .. } => "simulcast.failed",
            Event::SimulcastRecovered { .. } => "simulcast.recovered",
        }
    }
}

/// An event and when it happened.
#[derive(Clone, Debug, PartialEq)]
pub struct Notice {
    pub event: Event,
    /// Unix epoch milliseconds.
    pub at: i64,
}

/// Where events go; cheap to clone. The default one drops them (no webhooks configured).
#[derive(Clone, Debug, Default)]
pub struct Notifier {
    tx: Option<mpsc::UnboundedSender<Notice>>,
}

impl Notifier {
    /// A notifier and the receiving end its events arrive at, in order.
    pub fn channel() -> (Notifier, mpsc::UnboundedReceiver<Notice>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Notifier { tx: Some(tx) }, rx)
    }

    /// Hands `event` on without waiting. Events are a few per stream session, never per frame,
    /// so the channel needs no bound.
    pub fn notify(&self, event: Event) {
        let Some(tx) = &self.tx else { return };
        let name = event.name();
        if tx.send(Notice { event, at: now_ms() }).is_err() {
            tracing::warn!(event = name, "webhook event dropped: the outbox has stopped");
        }
    }
}
