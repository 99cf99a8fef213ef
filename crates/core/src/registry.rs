//! The registry: every change to streams and outputs, and each stream's lifecycle.
//!
//! State changes are serialised by one async lock over the map of running sessions, and each is
//! committed to the store before it is acknowledged. A stream's status is `active` exactly when it
//! has a session here; at start-up there are none.
//!
//! The registry's jobs each have a module: `streams` (creating, changing and deleting streams,
//! and reading their recordings), `outputs` (the same for a stream's outputs), `assets`
//! (recordings across streams: listing, deleting, expiring), and
//! `lifecycle` (active and idle, publishers and takeover, idle timeout and max runtime, with
//! the running part of a session in `session`).

mod assets;
mod keys;
mod lifecycle;
mod outputs;
mod session;
mod streams;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Weak};

use tokio::sync::{Mutex, MutexGuard};

use self::keys::KeyIndex;
pub use self::lifecycle::Publisher;
use self::session::Session;
use crate::bus::{BusLimits, StreamBus};
use crate::ids::StreamId;
use crate::model::{IdleReason, LiveStream, Status};
use crate::notify::Notifier;
use crate::rules::FieldError;
use crate::store::{Store, StoreError};
// What the tests (`use super::*`) use besides the above.
#[cfg(test)]
use {
    crate::model::{NewOutput, NewOutputKind, NewStream, OutputKind, OutputPatch, StreamPatch},
    tokio::time::Duration,
};

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
    /// Where lifecycle events go (webhooks).
    notifier: Notifier,
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
        Self::with_notifier(store, runner, limits, Notifier::default())
    }

    /// A registry that also tells `notifier` when a stream goes active or idle.
    pub fn with_notifier(
        store: Store,
        runner: Arc<dyn OutputRunner>,
        limits: RegistryLimits,
        notifier: Notifier,
    ) -> Result<Arc<Registry>, StoreError> {
        let keys = KeyIndex::new(store.load_stream_keys()?);
        Ok(Arc::new_cyclic(|this| Registry {
            store,
            runner,
            limits,
            notifier,
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
}

fn status_of(sessions: &HashMap<StreamId, Session>, id: &StreamId) -> Status {
    if sessions.contains_key(id) {
        Status::Active
    } else {
        Status::Idle
    }
}

#[cfg(test)]
mod tests;
