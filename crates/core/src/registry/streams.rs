//! Creating, reading, changing and deleting streams, and reading their recordings.

use tokio::time::Duration;

use super::{Registry, RegistryError, status_of};
use crate::clock::now_ms;
use crate::ids::{OutputId, StreamId, StreamKey};
use crate::model::{Archive, IdleReason, LiveStream, NewStream, Output, OutputKind, Status, StreamPatch};
use crate::rules;
use crate::store::StoreError;

impl Registry {
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
            session.name.clone_from(&stream.name);
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
}
