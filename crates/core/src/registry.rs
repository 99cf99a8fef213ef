//! The registry: every change to streams and outputs, and each stream's lifecycle.
//!
//! State changes are serialised by one async lock over the map of running sessions, and each is
//! committed to the store before it is acknowledged. A stream's status is `active` exactly when it
//! has a session here; at start-up there are none.

mod keys;
mod session;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use tokio::sync::{Mutex, MutexGuard, watch};
use tokio::time::{Duration, Instant};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use self::keys::KeyIndex;
use self::session::{PublisherSlot, Session, watch_deadline};
use crate::bus::{BusLimits, StreamBus};
use crate::clock::now_ms;
use crate::ids::{OutputId, StreamId, StreamKey};
use crate::model::{
    Archive, IdleReason, LiveStream, NewOutput, NewOutputKind, NewStream, Output, OutputKind, OutputPatch,
    Status, StreamPatch,
};
use crate::rules::{self, FieldError};
use crate::store::{Store, StoreError};

/// Starts and stops a stream's outputs. The server implements it with the output crates.
///
/// Called while the registry holds its lock: implementations must return quickly (spawn the work)
/// and must not call back into the registry before returning.
pub trait OutputRunner: Send + Sync + 'static {
    /// The stream went active: start its outputs, which read the publisher's media from `bus`.
    fn stream_active(&self, stream: &LiveStream, bus: &Arc<StreamBus>);
    /// The stream went idle: stop its outputs (end the playlist, finalize the archive, close relays).
    fn stream_idle(&self, stream_id: &StreamId, reason: IdleReason);
    /// The stream was deleted: forget what its outputs still serve (an ended playlist).
    fn stream_deleted(&self, _stream_id: &StreamId) {}
    /// A simulcast output of an active stream was added, changed or deleted: `stream` holds its
    /// outputs as they are now.
    fn outputs_changed(&self, _stream: &LiveStream, _bus: &Arc<StreamBus>) {}
}

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("live stream not found")]
    StreamNotFound,
    #[error("live stream output not found")]
    OutputNotFound,
    #[error("live stream is active")]
    StreamActive,
    #[error("{0}")]
    Conflict(String),
    /// A limit of the server's (a setting) would be crossed.
    #[error("{0}")]
    Limit(String),
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a publish attempt was refused.
#[derive(Debug, thiserror::Error)]
pub enum PublishRefused {
    #[error("unknown stream key")]
    UnknownKey,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The right to publish to a stream, held by one ingest connection.
///
/// Ending it (by [`Publisher::end`] or by dropping it) starts the stream's idle countdown, unless
/// another publisher has taken over since.
pub struct Publisher {
    stream_id: StreamId,
    bus: Arc<StreamBus>,
    id: u64,
    stop: CancellationToken,
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

    /// Resolves when the connection must close: another publisher took over, or the stream went idle.
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

/// What the registry lets grow, from the `limits.*` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistryLimits {
    /// Streams that may exist.
    pub max_streams: usize,
    /// Outputs one stream may have, the default two included.
    pub max_outputs_per_stream: usize,
    /// What each active stream's bus holds for outputs that fall behind.
    pub bus: BusLimits,
}

impl Default for RegistryLimits {
    fn default() -> Self {
        Self {
            max_streams: 10_000,
            max_outputs_per_stream: 20,
            bus: BusLimits::default(),
        }
    }
}

/// Streams, outputs and sessions.
pub struct Registry {
    store: Store,
    runner: Arc<dyn OutputRunner>,
    limits: RegistryLimits,
    keys: KeyIndex,
    sessions: Mutex<HashMap<StreamId, Session>>,
    next_id: AtomicU64,
    this: Weak<Registry>,
}

type Sessions<'a> = MutexGuard<'a, HashMap<StreamId, Session>>;

impl Registry {
    /// A registry over `store` with the default limits; every stream starts idle.
    pub fn new(store: Store, runner: Arc<dyn OutputRunner>) -> Result<Arc<Registry>, StoreError> {
        Self::with_limits(store, runner, RegistryLimits::default())
    }

    /// A registry over `store`; reads every stream's key once (blocking: call it at start-up).
    pub fn with_limits(
        store: Store,
        runner: Arc<dyn OutputRunner>,
        limits: RegistryLimits,
    ) -> Result<Arc<Registry>, StoreError> {
        let keys = KeyIndex::new(store.load_stream_keys()?);
        Ok(Arc::new_cyclic(|this| Registry {
            store,
            runner,
            limits,
            keys,
            sessions: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            this: this.clone(),
        }))
    }

    /// The store behind the registry.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Creates a stream with a fresh key and the two default outputs.
    pub async fn create_stream(&self, new: NewStream) -> Result<LiveStream, RegistryError> {
        // Held so that concurrent creations cannot pass the limit together.
        let _sessions = self.sessions.lock().await;
        let max = self.limits.max_streams;
        if self.keys.len() >= max {
            return Err(RegistryError::Limit(format!(
                "the server holds its limit of {max} live streams (limits.max_streams): delete one first"
            )));
        }
        let now = now_ms();
        let id = StreamId::generate();
        let output = |name: &str, kind| Output {
            id: OutputId::generate(),
            name: Some(name.to_owned()),
            kind,
            created_at: now,
            updated_at: now,
        };
        let stream = LiveStream {
            name: new.name,
            stream_key: StreamKey::generate(),
            status: Status::Idle,
            idle_timeout_sec: new.idle_timeout_sec.unwrap_or(rules::DEFAULT_IDLE_TIMEOUT_SEC),
            max_runtime_sec: new.max_runtime_sec.unwrap_or(rules::DEFAULT_MAX_RUNTIME_SEC),
            created_at: now,
            updated_at: now,
            outputs: vec![
                output("default hls", OutputKind::Hls),
                output(
                    "default archive",
                    OutputKind::Archive {
                        public_id: rules::default_public_id(&id),
                    },
                ),
            ],
            id,
        };
        self.store.insert_stream(stream.clone()).await?;
        self.keys.insert(&stream.stream_key, stream.id.clone());
        tracing::info!(stream_id = %stream.id, "live stream created");
        Ok(stream)
    }

    /// Every stream, oldest first.
    pub async fn list_streams(&self) -> Result<Vec<LiveStream>, RegistryError> {
        let mut streams = self.store.list_streams().await?;
        let sessions = self.sessions.lock().await;
        for stream in &mut streams {
            stream.status = status_of(&sessions, &stream.id);
        }
        Ok(streams)
    }

    /// One stream.
    pub async fn get_stream(&self, id: &StreamId) -> Result<LiveStream, RegistryError> {
        let sessions = self.sessions.lock().await;
        self.load(&sessions, id).await
    }

    /// Changes a stream's name or timeouts. New timeouts apply to a running session at once.
    pub async fn update_stream(
        &self,
        id: &StreamId,
        patch: StreamPatch,
    ) -> Result<LiveStream, RegistryError> {
        let mut sessions = self.sessions.lock().await;
        let mut stream = self.load(&sessions, id).await?;
        if let Some(name) = patch.name {
            stream.name = name;
        }
        if let Some(sec) = patch.idle_timeout_sec {
            stream.idle_timeout_sec = sec;
        }
        if let Some(sec) = patch.max_runtime_sec {
            stream.max_runtime_sec = sec;
        }
        stream.updated_at = now_ms().max(stream.created_at);
        self.store.update_stream(&stream).await?;
        if let Some(session) = sessions.get_mut(id) {
            session.idle_timeout = Duration::from_secs(stream.idle_timeout_sec.into());
            session.max_runtime = Duration::from_secs(stream.max_runtime_sec.into());
            session.reschedule();
        }
        Ok(stream)
    }

    /// Deletes a stream, ending its session first.
    pub async fn delete_stream(&self, id: &StreamId) -> Result<(), RegistryError> {
        let mut sessions = self.sessions.lock().await;
        self.load(&sessions, id).await?;
        if sessions.contains_key(id) {
            self.end_session(&mut sessions, id, IdleReason::Deleted).await?;
        }
        if !self.store.delete_stream(id).await? {
            return Err(RegistryError::StreamNotFound);
        }
        self.keys.remove(id);
        self.runner.stream_deleted(id);
        tracing::info!(stream_id = %id, "live stream deleted");
        Ok(())
    }

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
        };
        let bus = match sessions.get_mut(&id) {
            Some(session) => {
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
            registry: self.this.clone(),
            ended: false,
        })
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

    /// Every output of a stream.
    pub async fn list_outputs(&self, id: &StreamId) -> Result<Vec<Output>, RegistryError> {
        Ok(self.get_stream(id).await?.outputs)
    }

    /// A stream's recordings, newest first.
    pub async fn archives(&self, id: &StreamId) -> Result<Vec<Archive>, RegistryError> {
        self.get_stream(id).await?;
        Ok(self.store.stream_archives(id).await?)
    }

    /// The file of a recording of `public_id` (the given version, or the newest).
    pub async fn archive_file(
        &self,
        public_id: &str,
        version: Option<i64>,
    ) -> Result<Option<(Archive, std::path::PathBuf)>, StoreError> {
        let archive = self.store.archive(public_id, version).await?;
        Ok(archive.map(|a| {
            let path = self.store.dir().join(&a.path);
            (a, path)
        }))
    }

    /// One output of a stream.
    pub async fn get_output(&self, id: &StreamId, output_id: &OutputId) -> Result<Output, RegistryError> {
        let stream = self.get_stream(id).await?;
        stream
            .outputs
            .into_iter()
            .find(|o| o.id == *output_id)
            .ok_or(RegistryError::OutputNotFound)
    }

    /// Adds an output. `hls` and `archive` exist at most once and only change while idle.
    pub async fn create_output(&self, id: &StreamId, new: NewOutput) -> Result<Output, RegistryError> {
        let sessions = self.sessions.lock().await;
        let stream = self.load(&sessions, id).await?;
        let kind = match new.kind {
            NewOutputKind::Hls => OutputKind::Hls,
            NewOutputKind::Archive { public_id } => OutputKind::Archive {
                public_id: public_id.unwrap_or_else(|| rules::default_public_id(id)),
            },
            NewOutputKind::Simulcast(target) => OutputKind::Simulcast(target),
        };
        let max = self.limits.max_outputs_per_stream;
        if stream.outputs.len() >= max {
            return Err(RegistryError::Limit(format!(
                "live stream has its limit of {max} outputs (limits.max_outputs_per_stream)"
            )));
        }
        let output_type = kind.output_type();
        if output_type.is_singleton() {
            if stream.status == Status::Active {
                return Err(RegistryError::StreamActive);
            }
            if stream.outputs.iter().any(|o| o.kind.output_type() == output_type) {
                return Err(RegistryError::Conflict(format!(
                    "live stream already has an {} output",
                    output_type.as_str()
                )));
            }
        }
        check_unique_destination(&stream, None, &kind)?;
        let now = now_ms();
        let output = Output {
            id: OutputId::generate(),
            name: new.name,
            kind,
            created_at: now,
            updated_at: now,
        };
        self.store.insert_output(id, output.clone()).await?;
        tracing::info!(stream_id = %id, output_id = %output.id, r#type = output_type.as_str(), "output created");
        self.notify_outputs_changed(&sessions, id).await;
        Ok(output)
    }

    /// Changes an output's settings; only the fields its type has may be given.
    pub async fn update_output(
        &self,
        id: &StreamId,
        output_id: &OutputId,
        patch: OutputPatch,
    ) -> Result<Output, RegistryError> {
        let sessions = self.sessions.lock().await;
        let stream = self.load(&sessions, id).await?;
        let mut output = stream
            .outputs
            .iter()
            .find(|o| o.id == *output_id)
            .cloned()
            .ok_or(RegistryError::OutputNotFound)?;
        let output_type = output.kind.output_type();
        if output_type.is_singleton() && stream.status == Status::Active {
            return Err(RegistryError::StreamActive);
        }
        let not_for = |field: &str| {
            RegistryError::Invalid(FieldError::new(
                field,
                format!("does not apply to {} outputs", output_type.as_str()),
            ))
        };
        match &mut output.kind {
            OutputKind::Hls => {
                if patch.uri.is_some() {
                    return Err(RegistryError::Invalid(FieldError::new(
                        "uri",
                        "of an hls output is its playback URL, generated by the server; it cannot be set",
                    )));
                }
                if patch.stream_key.is_some() {
                    return Err(not_for("stream_key"));
                }
                if patch.public_id.is_some() {
                    return Err(not_for("public_id"));
                }
            }
            OutputKind::Archive { public_id } => {
                if patch.uri.is_some() {
                    return Err(not_for("uri"));
                }
                if patch.stream_key.is_some() {
                    return Err(not_for("stream_key"));
                }
                if let Some(new) = patch.public_id {
                    *public_id = new;
                }
            }
            OutputKind::Simulcast(target) => {
                if patch.public_id.is_some() {
                    return Err(not_for("public_id"));
                }
                if let Some(uri) = patch.uri {
                    target.uri = uri;
                }
                if let Some(key) = patch.stream_key {
                    target.stream_key = key;
                }
                rules::check_simulcast(&target.uri, target.stream_key.as_deref())?;
            }
        }
        if let Some(name) = patch.name {
            output.name = name;
        }
        check_unique_destination(&stream, Some(output_id), &output.kind)?;
        output.updated_at = now_ms().max(output.created_at);
        self.store.update_output(output.clone()).await?;
        self.notify_outputs_changed(&sessions, id).await;
        Ok(output)
    }

    /// Removes an output. `hls` and `archive` only while idle.
    pub async fn delete_output(&self, id: &StreamId, output_id: &OutputId) -> Result<(), RegistryError> {
        let sessions = self.sessions.lock().await;
        let stream = self.load(&sessions, id).await?;
        let output = stream
            .outputs
            .iter()
            .find(|o| o.id == *output_id)
            .ok_or(RegistryError::OutputNotFound)?;
        if output.kind.output_type().is_singleton() && stream.status == Status::Active {
            return Err(RegistryError::StreamActive);
        }
        if !self.store.delete_output(id, output_id).await? {
            return Err(RegistryError::OutputNotFound);
        }
        tracing::info!(stream_id = %id, output_id = %output_id, "output deleted");
        self.notify_outputs_changed(&sessions, id).await;
        Ok(())
    }

    /// Lets a live stream's outputs follow a change of its simulcast outputs at once.
    async fn notify_outputs_changed(&self, sessions: &Sessions<'_>, id: &StreamId) {
        let Some(bus) = sessions.get(id).map(|s| s.bus.clone()) else {
            return;
        };
        match self.load(sessions, id).await {
            Ok(stream) => self.runner.outputs_changed(&stream, &bus),
            Err(e) => tracing::error!(stream_id = %id, "outputs changed but cannot be reloaded: {e}"),
        }
    }

    /// A stream as stored, with its live status.
    async fn load(&self, sessions: &Sessions<'_>, id: &StreamId) -> Result<LiveStream, RegistryError> {
        let mut stream = self
            .store
            .get_stream(id)
            .await?
            .ok_or(RegistryError::StreamNotFound)?;
        stream.status = status_of(sessions, id);
        Ok(stream)
    }

    async fn start_session(
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
            publisher,
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
        tracing::info!(stream_id = %stream.id, by_publish, "live stream active");
        Ok(bus)
    }

    /// Ends a session. A transition the user asked for is refused if it cannot be recorded; one the
    /// server decided (timeouts, deletion, shutdown) happens anyway, since at start-up every stream
    /// is idle regardless of what the store says.
    async fn end_session(
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
        if let Some(session) = sessions.remove(id) {
            session.bus.end();
            if let Some(publisher) = session.publisher {
                publisher.stop.cancel();
            }
        }
        self.runner.stream_idle(id, reason);
        tracing::info!(stream_id = %id, %reason, "live stream idle");
        Ok(())
    }

    /// Called by a session's deadline watcher. Ends the session if its deadline has passed;
    /// returns whether the watcher should keep watching.
    async fn expire(&self, id: &StreamId, generation: u64) -> bool {
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

fn status_of(sessions: &HashMap<StreamId, Session>, id: &StreamId) -> Status {
    if sessions.contains_key(id) {
        Status::Active
    } else {
        Status::Idle
    }
}

/// Two simulcast outputs of one stream may not publish to the same place.
fn check_unique_destination(
    stream: &LiveStream,
    except: Option<&OutputId>,
    kind: &OutputKind,
) -> Result<(), RegistryError> {
    let OutputKind::Simulcast(target) = kind else {
        return Ok(());
    };
    let wanted = rules::simulcast_destination(&target.uri, target.stream_key.as_deref());
    let taken = stream
        .outputs
        .iter()
        .filter(|o| Some(&o.id) != except)
        .any(|o| match &o.kind {
            OutputKind::Simulcast(t) => {
                rules::simulcast_destination(&t.uri, t.stream_key.as_deref()) == wanted
            }
            _ => false,
        });
    if taken {
        return Err(RegistryError::Conflict(
            "live stream already has a simulcast output with this uri and stream_key".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
