//! Each stream's lifecycle: activation by hand or by a publisher, a publisher taking over from
//! another, and the session's end by hand, by idle timeout, by max runtime, or at shutdown.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use tokio::sync::watch;
use tokio::time::{Duration, Instant};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use super::session::{self, PublisherSlot, Session, watch_deadline};
use super::{PublishRefused, Registry, RegistryError, Sessions};
use crate::bus::StreamBus;
use crate::clock::now_ms;
use crate::ids::StreamId;
use crate::live::{InputBoard, LiveInput, PublisherInfo};
use crate::model::{IdleReason, LiveStream, Status};
use crate::notify::Event;
use crate::store::StoreError;

/// The right to publish to a stream, held by one ingest connection.
///
/// Ending it (by [`Publisher::end`] or by dropping it) starts the stream's idle countdown, unless
/// another publisher has taken over since.
pub struct Publisher {
    stream_id: StreamId,
    bus: Arc<StreamBus>,
    id: u64,
    stop: CancellationToken,
    input: Arc<InputBoard>,
    registry: Weak<Registry>,
    ended: bool,
}

impl Publisher {
    /// The stream this publisher feeds.
    pub fn stream_id(&self) -> &StreamId {
        &self.stream_id
    }

    /// Where this publisher's media goes.
    pub fn bus(&self) -> &Arc<StreamBus> {
        &self.bus
    }

    /// Where the connection publishes what it measures of its input (see [`crate::live`]).
    pub fn input(&self) -> &Arc<InputBoard> {
        &self.input
    }

    /// Resolves when the connection must close: another publisher took over, the publisher was
    /// kicked, or the stream went idle.
    pub fn stopped(&self) -> WaitForCancellationFuture<'_> {
        self.stop.cancelled()
    }

    /// True once [`Publisher::stopped`] has resolved.
    pub fn is_stopped(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// The publisher's connection is gone.
    pub async fn end(mut self) {
        self.ended = true;
        if let Some(registry) = self.registry.upgrade() {
            registry.publish_ended(&self.stream_id, self.id).await;
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let (Some(registry), Ok(runtime)) = (self.registry.upgrade(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let (stream_id, id) = (self.stream_id.clone(), self.id);
        runtime.spawn(async move { registry.publish_ended(&stream_id, id).await });
    }
}

impl Registry {
    /// Starts a session by hand; a no-op when one is running.
    pub async fn activate(&self, id: &StreamId) -> Result<(), RegistryError> {
        let mut sessions = self.sessions.lock().await;
        let stream = self.load(&sessions, id).await?;
        if stream.status == Status::Idle {
            self.start_session(&mut sessions, &stream, None).await?;
        }
        Ok(())
    }

    /// Ends the session by hand; a no-op when there is none.
    pub async fn idle(&self, id: &StreamId) -> Result<(), RegistryError> {
        let mut sessions = self.sessions.lock().await;
        let stream = self.load(&sessions, id).await?;
        if stream.status == Status::Active {
            self.end_session(&mut sessions, id, IdleReason::Requested).await?;
        }
        Ok(())
    }

    /// Ends every session (the server is stopping).
    pub async fn shutdown(&self) {
        let mut sessions = self.sessions.lock().await;
        let ids: Vec<StreamId> = sessions.keys().cloned().collect();
        for id in ids {
            if let Err(e) = self.end_session(&mut sessions, &id, IdleReason::Shutdown).await {
                tracing::warn!(stream_id = %id, "recording idle state at shutdown failed: {e}");
            }
        }
    }

    /// An encoder asks to publish with `key`. A stream that is idle becomes active; a stream with a
    /// publisher changes hands (the old publisher is told to stop) and its session continues.
    pub async fn publish_started(&self, key: &str) -> Result<Publisher, PublishRefused> {
        self.publish_started_from(key, String::new()).await
    }

    /// [`Registry::publish_started`] by an encoder at `address` (`ip:port`), which the stream's
    /// live figures show.
    pub async fn publish_started_from(
        &self,
        key: &str,
        address: String,
    ) -> Result<Publisher, PublishRefused> {
        // No trip to the store for a key nobody has: anyone can try keys.
        let id = self.keys.find(key).ok_or(PublishRefused::UnknownKey)?;
        let mut sessions = self.sessions.lock().await;
        let stream = match self.load(&sessions, &id).await {
            Ok(stream) => stream,
            Err(RegistryError::Store(e)) => return Err(PublishRefused::Store(e)),
            Err(_) => return Err(PublishRefused::UnknownKey), // deleted meanwhile
        };
        let slot = PublisherSlot {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            stop: CancellationToken::new(),
            input: InputBoard::new(PublisherInfo {
                address,
                connected_at: now_ms(),
                encoder: None,
            }),
        };
        let bus = match sessions.get_mut(&id) {
            Some(session) => {
                session.had_publisher = true;
                if let Some(old) = session.publisher.replace(slot.clone()) {
                    old.stop.cancel();
                    tracing::info!(stream_id = %id, "new publisher took over the stream");
                }
                session.reschedule();
                // The session goes on with another encoder: its timestamps start afresh.
                session.bus.discontinuity();
                session.bus.clone()
            }
            None => {
                self.start_session(&mut sessions, &stream, Some(slot.clone()))
                    .await?
            }
        };
        Ok(Publisher {
            stream_id: id,
            bus,
            id: slot.id,
            stop: slot.stop,
            input: slot.input,
            registry: self.this.clone(),
            ended: false,
        })
    }

    /// Disconnects the stream's publisher; the stream then follows its idle timeout as after any
    /// disconnect. Refused when nothing publishes.
    pub async fn kick(&self, id: &StreamId) -> Result<(), RegistryError> {
        let sessions = self.sessions.lock().await;
        let stream = self.load(&sessions, id).await?;
        let publisher = sessions.get(&stream.id).and_then(|s| s.publisher.as_ref());
        let Some(publisher) = publisher else {
            return Err(RegistryError::Conflict(
                "no publisher is connected to this live stream".into(),
            ));
        };
        publisher.stop.cancel();
        tracing::info!(stream_id = %id, "publisher kicked");
        Ok(())
    }

    /// What the stream's publisher sends now; `None` when nothing publishes.
    pub async fn live_input(&self, id: &StreamId) -> Option<LiveInput> {
        let sessions = self.sessions.lock().await;
        let publisher = sessions.get(id)?.publisher.as_ref()?;
        Some(publisher.input.snapshot())
    }

    /// [`Registry::live_input`] of every stream that has a publisher.
    pub async fn live_inputs(&self) -> HashMap<StreamId, LiveInput> {
        let sessions = self.sessions.lock().await;
        sessions
            .iter()
            .filter_map(|(id, s)| Some((id.clone(), s.publisher.as_ref()?.input.snapshot())))
            .collect()
    }

    /// How many streams are active, and how many exist.
    pub async fn stream_counts(&self) -> (usize, usize) {
        let active = self.sessions.lock().await.len();
        (active, self.keys.len().max(active))
    }

    async fn publish_ended(&self, stream_id: &StreamId, publisher_id: u64) {
        let mut sessions = self.sessions.lock().await;
        let Some(session) = sessions.get_mut(stream_id) else {
            return;
        };
        if session.publisher.as_ref().is_some_and(|p| p.id == publisher_id) {
            session.publisher = None;
            session.input_lost_at = Instant::now();
            session.reschedule();
            tracing::info!(stream_id = %stream_id, idle_timeout_sec = session.idle_timeout.as_secs(),
                "publisher gone; waiting for it to reconnect");
        }
    }

    pub(super) async fn start_session(
        &self,
        sessions: &mut Sessions<'_>,
        stream: &LiveStream,
        publisher: Option<PublisherSlot>,
    ) -> Result<Arc<StreamBus>, StoreError> {
        self.store
            .set_status(&stream.id, Status::Active, Some(now_ms()))
            .await?;
        let now = Instant::now();
        let generation = self.next_id.fetch_add(1, Ordering::Relaxed);
        let by_publish = publisher.is_some();
        let bus = Arc::new(StreamBus::with_limits(self.limits.bus));
        let session = Session {
            bus: bus.clone(),
            generation,
            activated_at: now,
            input_lost_at: now,
            had_publisher: publisher.is_some(),
            publisher,
            name: stream.name.clone(),
            idle_timeout: Duration::from_secs(stream.idle_timeout_sec.into()),
            max_runtime: Duration::from_secs(stream.max_runtime_sec.into()),
            deadline_tx: watch::Sender::new(session::Deadline {
                at: now,
                reason: IdleReason::MaxRuntime,
            }),
        };
        let deadline_rx = session.deadline_tx.subscribe();
        session.reschedule();
        sessions.insert(stream.id.clone(), session);
        tokio::spawn(watch_deadline(
            self.this.clone(),
            stream.id.clone(),
            generation,
            deadline_rx,
        ));
        let mut active = stream.clone();
        active.status = Status::Active;
        self.runner.stream_active(&active, &bus);
        self.notifier.notify(Event::StreamActive {
            stream_id: stream.id.clone(),
            name: stream.name.clone(),
        });
        tracing::info!(stream_id = %stream.id, by_publish, "live stream active");
        Ok(bus)
    }

    /// Ends a session. A transition the user asked for is refused if it cannot be recorded; one the
    /// server decided (timeouts, deletion, shutdown) happens anyway, since at start-up every stream
    /// is idle regardless of what the store says.
    pub(super) async fn end_session(
        &self,
        sessions: &mut Sessions<'_>,
        id: &StreamId,
        reason: IdleReason,
    ) -> Result<(), RegistryError> {
        if let Err(e) = self.store.set_status(id, Status::Idle, None).await {
            if reason == IdleReason::Requested {
                return Err(e.into());
            }
            tracing::warn!(stream_id = %id, "recording idle state failed: {e}");
        }
        let mut name = None;
        if let Some(session) = sessions.remove(id) {
            session.bus.end();
            if let Some(publisher) = session.publisher {
                publisher.stop.cancel();
            }
            name = session.name;
        }
        self.runner.stream_idle(id, reason);
        self.notifier.notify(Event::StreamIdle {
            stream_id: id.clone(),
            name,
            reason,
        });
        tracing::info!(stream_id = %id, %reason, "live stream idle");
        Ok(())
    }

    /// Called by a session's deadline watcher. Ends the session if its deadline has passed;
    /// returns whether the watcher should keep watching.
    pub(super) async fn expire(&self, id: &StreamId, generation: u64) -> bool {
        let mut sessions = self.sessions.lock().await;
        let Some(session) = sessions.get(id).filter(|s| s.generation == generation) else {
            return false;
        };
        let deadline = session.deadline();
        if Instant::now() < deadline.at {
            return true;
        }
        // Only Requested can fail, and this is not that.
        let _ = self.end_session(&mut sessions, id, deadline.reason).await;
        false
    }
}
