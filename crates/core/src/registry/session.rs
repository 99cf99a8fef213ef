//! The running part of an active stream: who publishes, and when it must go idle.

use std::sync::{Arc, Weak};

use tokio::sync::watch;
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use super::Registry;
use crate::bus::StreamBus;
use crate::ids::StreamId;
use crate::live::InputBoard;
use crate::model::IdleReason;

/// The connection currently publishing to a session.
#[derive(Clone)]
pub(super) struct PublisherSlot {
    pub(super) id: u64,
    /// Cancelled when the publisher must go: taken over, kicked, or the stream went idle.
    pub(super) stop: CancellationToken,
    /// What the connection measures of its input.
    pub(super) input: Arc<InputBoard>,
}

/// When a session ends unless something changes, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Deadline {
    pub(super) at: Instant,
    pub(super) reason: IdleReason,
}

/// An active stream's session.
pub(super) struct Session {
    /// The publisher's media, fanned out to the outputs.
    pub(super) bus: Arc<StreamBus>,
    /// Distinguishes this session from an earlier one of the same stream.
    pub(super) generation: u64,
    pub(super) activated_at: Instant,
    /// Since when no publisher is connected: activation, or the last publisher's end.
    pub(super) input_lost_at: Instant,
    pub(super) publisher: Option<PublisherSlot>,
    /// Whether any publisher has fed this session: its idle timeout then means the publisher left.
    pub(super) had_publisher: bool,
    /// The stream's name, for the webhook that tells the session ended.
    pub(super) name: Option<String>,
    pub(super) idle_timeout: Duration,
    pub(super) max_runtime: Duration,
    /// Wakes the session's deadline watcher; dropping it ends the watcher.
    pub(super) deadline_tx: watch::Sender<Deadline>,
}

impl Session {
    /// The earlier of max runtime (from activation) and idle timeout (while nothing publishes).
    pub(super) fn deadline(&self) -> Deadline {
        let max_runtime = Deadline {
            at: self.activated_at + self.max_runtime,
            reason: IdleReason::MaxRuntime,
        };
        match &self.publisher {
            Some(_) => max_runtime,
            None => {
                let idle = Deadline {
                    at: self.input_lost_at + self.idle_timeout,
                    reason: if self.had_publisher {
                        IdleReason::PublisherLeft
                    } else {
                        IdleReason::IdleTimeout
                    },
                };
                if idle.at < max_runtime.at {
                    idle
                } else {
                    max_runtime
                }
            }
        }
    }

    /// Tells the watcher that the deadline may have moved.
    pub(super) fn reschedule(&self) {
        self.deadline_tx.send_replace(self.deadline());
    }
}

/// Sleeps until the session's deadline, then asks the registry to end the session if it is
/// still due. Ends when the session does (its sender is dropped) or the registry is gone.
pub(super) async fn watch_deadline(
    registry: Weak<Registry>,
    stream_id: StreamId,
    generation: u64,
    mut deadline_rx: watch::Receiver<Deadline>,
) {
    loop {
        let deadline = *deadline_rx.borrow_and_update();
        tokio::select! {
            () = tokio::time::sleep_until(deadline.at) => {
                let Some(registry) = registry.upgrade() else { return };
                if !registry.expire(&stream_id, generation).await {
                    return;
                }
            }
            changed = deadline_rx.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}
