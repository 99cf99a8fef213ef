//! The archive output: every live session recorded as a complete, playable MP4 asset.
//!
//! While a stream is live its recorder writes fragmented MP4 (an init segment, then a `moof` +
//! `mdat` per second of media, each written as it completes), so a file cut at any byte, by a crash
//! or a full disk, still holds everything up to its last whole fragment. When the stream goes idle
//! the recording is finalized: rewritten as a progressive MP4 with `moov` before `mdat`, under a
//! temporary name, then renamed into place and listed. Recordings a killed process left behind are
//! finalized the same way at start-up ([`Archives::recover`]).
//!
//! The MP4 boxes are our own ([`mp4`]): a small, dependency-free writer and reader that lays out
//! fragments exactly as crash safety needs, writes payloads straight from the frames' `Bytes` with
//! one vectored write per fragment, and reads back only files it wrote (with every size checked).
//! mp4-atom, the closest crate, encodes and decodes single atoms without interpreting them (an
//! `Mdat` owns its bytes, which would cost a copy per frame), so the sample tables and the
//! recovery of a cut file would be ours to write anyway.
//!
//! Layout under the archive directory: `recording/<stream id>-<start ms>.mp4.part` (with the asset's
//! public_id beside it in `….public_id`) while recording, `<public_id>/<start ms>-<stream id>.mp4`
//! once finalized. Every name is synced into its directory once its data is synced
//! (`durable.rs`), so a power cut loses neither a recording nor its public_id.

mod durable;
pub mod mp4;
mod recorder;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use oxcast_core::{Archive, Store, StreamId, Subscriber};
use tokio_util::task::TaskTracker;

/// Settings from `archive.*`.
#[derive(Debug, Clone)]
pub struct ArchiveConfig {
    /// Where recordings go: `<storage dir>/archive`.
    pub dir: PathBuf,
    /// The storage directory, which the store's paths are relative to.
    pub storage_dir: PathBuf,
    /// Below this much free disk space a recorder stops (keeping what it has).
    pub min_free_bytes: u64,
}

/// Every stream's recorder.
pub struct Archives {
    config: Arc<ArchiveConfig>,
    store: Store,
    recorders: TaskTracker,
}

impl Archives {
    pub fn new(config: ArchiveConfig, store: Store) -> std::io::Result<Self> {
        durable::create_dirs(&config.dir.join(RECORDING_DIR))?;
        Ok(Self {
            config: Arc::new(config),
            store,
            recorders: TaskTracker::new(),
        })
    }

    /// Starts recording a stream that went active; `subscriber` is its bus, subscribed already.
    pub fn start(&self, stream_id: &StreamId, public_id: String, subscriber: Subscriber) {
        let recording = recorder::Recording {
            config: Arc::clone(&self.config),
            store: self.store.clone(),
            stream_id: stream_id.clone(),
            public_id,
            finalizers: self.recorders.clone(),
        };
        self.recorders.spawn(recorder::record(recording, subscriber));
    }

    /// Finalizes and lists every recording a previous process left unfinished (killed, or the
    /// machine lost power). Call before streams can go live.
    pub async fn recover(&self) {
        let dir = self.config.dir.join(RECORDING_DIR);
        let parts = match list_parts(&dir) {
            Ok(parts) => parts,
            Err(e) => {
                tracing::error!(dir = %dir.display(), "cannot look for unfinished recordings: {e}");
                return;
            }
        };
        for part in parts {
            let Some(unfinished) = Unfinished::from_path(&part) else {
                tracing::warn!(path = %part.display(), "not a recording of ours; left alone");
                continue;
            };
            tracing::info!(stream_id = %unfinished.stream_id, path = %part.display(), "finalizing a recording left unfinished");
            finalize(&self.config, &self.store, unfinished).await;
        }
    }

    /// Waits (at most `limit`) for the recorders to finalize: at shutdown, after the streams ended.
    pub async fn wait(&self, limit: Duration) {
        self.recorders.close();
        if tokio::time::timeout(limit, self.recorders.wait()).await.is_err() {
            tracing::warn!(
                "recordings still finalizing after {limit:?}; they are finalized at the next start"
            );
        }
    }
}

const RECORDING_DIR: &str = "recording";
const PART_SUFFIX: &str = ".mp4.part";
const PUBLIC_ID_SUFFIX: &str = ".public_id";

fn list_parts(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut parts = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.to_str().is_some_and(|p| p.ends_with(PART_SUFFIX)) {
            parts.push(path);
        }
    }
    parts.sort();
    Ok(parts)
}

/// A recording being written, or left unfinished.
#[derive(Debug, Clone)]
pub(crate) struct Unfinished {
    pub(crate) stream_id: StreamId,
    /// Unix epoch milliseconds.
    pub(crate) started_ms: i64,
    pub(crate) public_id: String,
    pub(crate) part: PathBuf,
}

impl Unfinished {
    /// Creates a new recording holding `init`. The public_id file comes first and is synced
    /// into the directory before the recording exists, so a crash cannot leave a recording whose
    /// asset name is unknown; then the recording is synced into the directory, so the fragments
    /// synced into it later cannot lose their file.
    pub(crate) fn create(
        config: &ArchiveConfig,
        stream_id: &StreamId,
        public_id: &str,
        started_ms: i64,
        init: &[u8],
    ) -> std::io::Result<(Self, std::fs::File)> {
        let dir = config.dir.join(RECORDING_DIR);
        let stem = format!("{}-{started_ms}", stream_id.as_str());
        let public_id_file = dir.join(format!("{stem}{PUBLIC_ID_SUFFIX}"));
        durable::write_new(&public_id_file, public_id.as_bytes())?;
        let part = dir.join(format!("{stem}{PART_SUFFIX}"));
        let created = durable::sync_dir(&dir)
            .and_then(|()| durable::write_new(&part, init))
            .and_then(|file| durable::sync_dir(&dir).map(|()| file));
        match created {
            Ok(file) => {
                let unfinished = Self {
                    stream_id: stream_id.clone(),
                    started_ms,
                    public_id: public_id.to_owned(),
                    part,
                };
                Ok((unfinished, file))
            }
            Err(e) => {
                let _ = std::fs::remove_file(&public_id_file);
                Err(e)
            }
        }
    }

    fn from_path(part: &Path) -> Option<Self> {
        let name = part.file_name()?.to_str()?;
        let stem = name.strip_suffix(PART_SUFFIX)?;
        let (id, started) = stem.split_once('-')?;
        let public_id =
            std::fs::read_to_string(part.with_file_name(format!("{stem}{PUBLIC_ID_SUFFIX}"))).ok()?;
        oxcast_core::rules::check_public_id(&public_id).ok()?;
        Some(Self {
            stream_id: StreamId::parse(id)?,
            started_ms: started.parse().ok()?,
            public_id,
            part: part.to_owned(),
        })
    }

    fn public_id_file(&self) -> PathBuf {
        let name = self.part.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let stem = name.strip_suffix(PART_SUFFIX).unwrap_or(name);
        self.part.with_file_name(format!("{stem}{PUBLIC_ID_SUFFIX}"))
    }
}

/// Turns a fragmented recording into its asset: progressive MP4 under a temporary name, synced,
/// renamed into place, that name synced, then listed in the store; then the fragmented file
/// goes. A recording with no whole fragment (the stream sent nothing) leaves no asset.
pub(crate) async fn finalize(config: &ArchiveConfig, store: &Store, unfinished: Unfinished) {
    let relative = PathBuf::from("archive").join(&unfinished.public_id).join(format!(
        "{}-{}.mp4",
        unfinished.started_ms,
        unfinished.stream_id.as_str()
    ));
    let target = config.storage_dir.join(&relative);
    let part = unfinished.part.clone();
    let done = tokio::task::spawn_blocking(move || -> Result<Option<mp4::Summary>, String> {
        let dir = target.parent().ok_or("no directory")?;
        durable::create_dirs(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let temporary = target.with_extension("mp4.tmp");
        let summary = match mp4::finalize(&part, &temporary) {
            Ok(summary) => summary,
            Err(mp4::Mp4Error::NoMedia) => {
                let _ = std::fs::remove_file(&temporary);
                return Ok(None);
            }
            Err(e) => {
                let _ = std::fs::remove_file(&temporary);
                return Err(e.to_string());
            }
        };
        if let Err(e) = durable::rename_new(&temporary, &target) {
            let _ = std::fs::remove_file(&temporary);
            return Err(format!("{}: {e}", target.display()));
        }
        Ok(Some(summary))
    })
    .await
    .unwrap_or_else(|e| Err(format!("finalizing failed: {e}")));
    let summary = match done {
        Ok(Some(summary)) => summary,
        Ok(None) => {
            tracing::info!(stream_id = %unfinished.stream_id, "recording holds no media; no asset made");
            remove_unfinished(&unfinished);
            return;
        }
        Err(e) => {
            // Kept for the next start (or a person) to try again.
            tracing::error!(stream_id = %unfinished.stream_id, path = %unfinished.part.display(),
                "cannot finalize the recording: {e}");
            return;
        }
    };
    let version = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let archive = Archive {
        public_id: unfinished.public_id.clone(),
        version,
        stream_id: unfinished.stream_id.clone(),
        path: relative.to_string_lossy().into_owned(),
        duration_ms: summary.duration_ms as i64,
        bytes: summary.bytes as i64,
        created_at: unfinished.started_ms,
    };
    match store.insert_archive(archive).await {
        Ok(version) => {
            tracing::info!(stream_id = %unfinished.stream_id, public_id = %unfinished.public_id, version,
                duration_ms = summary.duration_ms, video_frames = summary.video_frames,
                audio_frames = summary.audio_frames, "recording finalized");
            remove_unfinished(&unfinished);
        }
        Err(e) => tracing::error!(stream_id = %unfinished.stream_id,
            "recording finalized but not listed (retried at the next start): {e}"),
    }
}

/// After the asset is listed: the recording and its public_id go, and that is synced too, so a
/// power cut does not bring the recording back to be finalized a second time.
fn remove_unfinished(unfinished: &Unfinished) {
    let _ = std::fs::remove_file(&unfinished.part);
    let _ = std::fs::remove_file(unfinished.public_id_file());
    if let Some(dir) = unfinished.part.parent()
        && let Err(e) = durable::sync_dir(dir)
    {
        tracing::warn!(dir = %dir.display(), "cannot sync the recording directory: {e}");
    }
}
