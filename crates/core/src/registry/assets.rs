//! Recordings as assets, across streams: listing them, deleting them, and expiring old ones.
//!
//! A deletion removes the rows first, in one transaction that also lists their files as pending
//! deletions; then the files go, then their entries. From the commit on, the API neither lists
//! nor serves the recording (a reader that already opened the file finishes: the open file
//! outlives its name). A crash before the files are gone leaves them on the list, and the next
//! [`Registry::finish_deletions`] removes them. Removing the files first would instead leave, after
//! a crash, listed recordings whose URLs fail.

use std::path::Path;
use std::time::Duration;

use super::{Registry, RegistryError};
use crate::clock::now_ms;
use crate::durable;
use crate::model::Archive;

impl Registry {
    /// The newest recording of each public_id starting with `prefix`, after the public_id
    /// `after`, in public_id order; at most `limit`.
    pub async fn newest_assets(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Archive>, RegistryError> {
        Ok(self.store.newest_archives(prefix, after, limit).await?)
    }

    /// Deletes every recording of each public_id, rows then files; returns how many each had
    /// (0: none, or none any more).
    pub async fn delete_assets(&self, public_ids: &[String]) -> Result<Vec<usize>, RegistryError> {
        let removed = self.store.remove_archives(public_ids.to_vec()).await?;
        for archive in &removed {
            tracing::info!(public_id = %archive.public_id, version = archive.version, "recording deleted");
        }
        deleted("request", &removed);
        self.remove_files(&removed).await?;
        Ok(public_ids
            .iter()
            .map(|id| removed.iter().filter(|a| a.public_id == *id).count())
            .collect())
    }

    /// Deletes the recordings finalized more than `max_age` ago (their version is their finalize
    /// time) and returns them.
    pub async fn expire_assets(&self, max_age: Duration) -> Result<Vec<Archive>, RegistryError> {
        let max_age_ms = i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
        // A version is whole seconds: one below the cutoff second finished before the cutoff.
        let cutoff = now_ms().saturating_sub(max_age_ms).div_euclid(1000);
        let removed = self.store.remove_archives_before(cutoff).await?;
        for archive in &removed {
            tracing::info!(public_id = %archive.public_id, version = archive.version,
                retention_sec = max_age.as_secs_f64(), "recording expired and deleted");
        }
        deleted("retention", &removed);
        self.remove_files(&removed).await?;
        Ok(removed)
    }

    /// Removes the files of recordings deleted before a crash (or whose removal failed); returns
    /// how many went.
    pub async fn finish_deletions(&self) -> Result<usize, RegistryError> {
        let pending = self.store.pending_deletions().await?;
        if pending.is_empty() {
            return Ok(0);
        }
        tracing::info!(files = pending.len(), "removing the files of deleted recordings");
        self.remove_listed(pending).await
    }

    async fn remove_files(&self, removed: &[Archive]) -> Result<usize, RegistryError> {
        self.remove_listed(removed.iter().map(|a| a.path.clone()).collect())
            .await
    }

    /// Removes files listed as pending deletions, then takes the removed ones off the list; one
    /// that cannot be removed stays listed for the next try.
    async fn remove_listed(&self, paths: Vec<String>) -> Result<usize, RegistryError> {
        if paths.is_empty() {
            return Ok(0);
        }
        let dir = self.store.dir().to_owned();
        let removed = tokio::task::spawn_blocking(move || remove_and_sync(&dir, paths))
            .await
            .unwrap_or_default();
        let count = removed.len();
        self.store.deletions_done(removed).await?;
        Ok(count)
    }
}

/// Blocking: removes each file (one already gone counts as removed) and syncs the directories
/// that held them, so that the removals are durable before they are taken off the list.
fn remove_and_sync(dir: &Path, paths: Vec<String>) -> Vec<String> {
    let mut removed = Vec::new();
    let mut parents = Vec::new();
    for relative in paths {
        let path = dir.join(&relative);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot remove a deleted recording's file (tried again later): {e}");
                continue;
            }
        }
        if let Some(parent) = path.parent()
            && !parents.iter().any(|p: &std::path::PathBuf| p == parent)
        {
            parents.push(parent.to_owned());
        }
        removed.push(relative);
    }
    for parent in parents {
        if let Err(e) = durable::sync_dir(&parent) {
            // The files are unlinked; a power cut may bring the names back, and they are on the
            // list until the next sweep removes them again.
            tracing::warn!(dir = %parent.display(), "cannot sync the directory of removed recordings: {e}");
            return Vec::new();
        }
    }
    removed
}

/// Counts deleted recordings and their bytes for `/metrics`, by why they went.
fn deleted(reason: &'static str, removed: &[Archive]) {
    metrics::counter!("oxcast_recordings_deleted_total", "reason" => reason).increment(removed.len() as u64);
    let bytes: u64 = removed.iter().map(|a| u64::try_from(a.bytes).unwrap_or(0)).sum();
    metrics::counter!("oxcast_recordings_deleted_bytes_total", "reason" => reason).increment(bytes);
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::ids::StreamId;
    use crate::model::{IdleReason, LiveStream};
    use crate::store::Store;
    use crate::{OutputRunner, StreamBus};

    struct NoOutputs;

    impl OutputRunner for NoOutputs {
        fn stream_active(&self, _: &LiveStream, _: &Arc<StreamBus>) {}
        fn stream_idle(&self, _: &StreamId, _: IdleReason) {}
    }

    struct Fixture {
        registry: Arc<Registry>,
        dir: tempfile::TempDir,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::new(Store::open(dir.path()).unwrap(), Arc::new(NoOutputs)).unwrap();
        Fixture { registry, dir }
    }

    impl Fixture {
        /// Lists a recording of `public_id` finalized at `version`, with a file.
        async fn record(&self, public_id: &str, version: i64) -> String {
            let path = format!("archive/{public_id}/{version}.mp4");
            let file = self.dir.path().join(&path);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, b"mp4").unwrap();
            let archive = Archive {
                public_id: public_id.to_owned(),
                version,
                stream_id: StreamId::generate(),
                path: path.clone(),
                duration_ms: 1000,
                bytes: 3,
                created_at: version * 1000 - 1000,
            };
            assert_eq!(
                self.registry.store().insert_archive(archive).await.unwrap(),
                version
            );
            path
        }

        async fn listed(&self, prefix: &str, after: Option<&str>, limit: usize) -> Vec<(String, i64)> {
            let assets = self.registry.newest_assets(prefix, after, limit).await.unwrap();
            assets.into_iter().map(|a| (a.public_id, a.version)).collect()
        }

        fn exists(&self, path: &str) -> bool {
            self.dir.path().join(path).exists()
        }
    }

    fn pairs(list: &[(&str, i64)]) -> Vec<(String, i64)> {
        list.iter().map(|(p, v)| ((*p).to_owned(), *v)).collect()
    }

    #[tokio::test]
    async fn lists_the_newest_recording_of_each_public_id_in_public_id_order() {
        let f = fixture();
        f.record("b", 10).await;
        f.record("a", 11).await;
        f.record("a", 12).await;
        f.record("shows/x", 5).await;
        f.record("a_b", 1).await;
        f.record("axb", 1).await;
        let all = pairs(&[("a", 12), ("a_b", 1), ("axb", 1), ("b", 10), ("shows/x", 5)]);
        assert_eq!(f.listed("", None, 10).await, all);
        // Page by page, each continuing after the last public_id of the one before.
        let mut paged = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = f.listed("", after.as_deref(), 2).await;
            let Some(last) = page.last() else { break };
            after = Some(last.0.clone());
            paged.extend(page);
        }
        assert_eq!(paged, all);
        // `_` is no wildcard, and a prefix can be a folder.
        assert_eq!(f.listed("a_", None, 10).await, pairs(&[("a_b", 1)]));
        assert_eq!(f.listed("shows/", None, 10).await, pairs(&[("shows/x", 5)]));
        assert_eq!(
            f.listed("a", Some("a"), 10).await,
            pairs(&[("a_b", 1), ("axb", 1)])
        );
        assert_eq!(f.listed("z", None, 10).await, vec![]);
        // A newer recording of a public_id already listed does not move it, and the page's last
        // public_id going away does not lose the place.
        f.record("a", 13).await;
        f.registry.delete_assets(&["a_b".to_owned()]).await.unwrap();
        assert_eq!(
            f.listed("", Some("a_b"), 10).await,
            pairs(&[("axb", 1), ("b", 10), ("shows/x", 5)])
        );
    }

    #[tokio::test]
    async fn deleting_removes_every_version_rows_and_files() {
        let f = fixture();
        let a1 = f.record("a", 1).await;
        let a2 = f.record("a", 2).await;
        let b = f.record("b", 1).await;
        let counts = f
            .registry
            .delete_assets(&["a".to_owned(), "nothing".to_owned()])
            .await
            .unwrap();
        assert_eq!(counts, [2, 0]);
        assert!(!f.exists(&a1) && !f.exists(&a2) && f.exists(&b));
        assert_eq!(f.registry.archive_file("a", None).await.unwrap(), None);
        assert_eq!(f.listed("", None, 10).await, pairs(&[("b", 1)]));
        assert_eq!(
            f.registry.store().pending_deletions().await.unwrap(),
            Vec::<String>::new()
        );
    }

    #[tokio::test]
    async fn files_left_by_a_crash_go_at_the_next_finish() {
        let f = fixture();
        let a = f.record("a", 1).await;
        let reused = f.record("b", 1).await;
        // The rows went and the process died before the files did.
        let store = f.registry.store();
        store
            .remove_archives(vec!["a".to_owned(), "b".to_owned()])
            .await
            .unwrap();
        assert!(f.exists(&a));
        assert_eq!(f.registry.archive_file("a", None).await.unwrap(), None);
        // A new recording took one of the names meanwhile: its file is not removed.
        f.record("b", 1).await;
        assert_eq!(store.pending_deletions().await.unwrap(), std::slice::from_ref(&a));
        assert_eq!(f.registry.finish_deletions().await.unwrap(), 1);
        assert!(!f.exists(&a) && f.exists(&reused));
        assert_eq!(f.registry.finish_deletions().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn expiry_deletes_what_was_finalized_before_the_retention() {
        let f = fixture();
        let now = now_ms() / 1000;
        let old = f.record("old", now - 100).await;
        let new = f.record("new", now).await;
        let expired = f.registry.expire_assets(Duration::from_secs(50)).await.unwrap();
        assert_eq!(
            expired.iter().map(|a| a.public_id.as_str()).collect::<Vec<_>>(),
            ["old"]
        );
        assert!(!f.exists(&old) && f.exists(&new));
        assert_eq!(f.listed("", None, 10).await, pairs(&[("new", now)]));
    }
}
