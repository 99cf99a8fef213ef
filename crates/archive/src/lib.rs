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
//! once finalized. A name that is taken gets a sequence number (`…-<start ms>-1.mp4.part`,
//! `…-<stream id>-1.mp4`): names are claimed with create-new and no-replace renames, so two
//! recordings never share one. Every name is synced into its directory once its data is synced
//! (`oxcast_core::durable`), so a power cut loses neither a recording nor its public_id.
//!
//! Limits a publisher cannot get around (all settings, see `config/default.toml`): a codec
//! configuration change starts a new recording at most once per `min_recording_interval`;
//! a fragment is written at `max_fragment_bytes` or `max_fragment_wait` whatever the publisher's
//! timestamps do; a recording starts, goes on and is finalized only with `min_free_bytes` to spare.

pub mod mp4;
mod recorder;

use crate::recorder::RecordingBoard;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oxcast_core::clock::now_ms;
use oxcast_core::durable;
use oxcast_core::sync::lock;
use oxcast_core::{Archive, Event, Notifier, RecordingSource, RecordingStats, Store, StreamId, Subscriber};
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// Settings from `archive.*`.
#[derive(Debug, Clone)]
pub struct ArchiveConfig {
    /// Where recordings go: `<storage dir>/archive`.
    pub dir: PathBuf,
    /// The storage directory, which the store's paths are relative to.
    pub storage_dir: PathBuf,
    /// Below this much free disk space a recorder stops (keeping what it has), and a recording
    /// is finalized only with this much to spare besides its own size.
    pub min_free_bytes: u64,
    /// A codec configuration change starts a new recording at once only if no change did within
    /// this interval; otherwise the recording goes on without the frames in the new configuration.
    pub min_recording_interval: Duration,
    /// A fragment is written once it holds this many bytes of media: what a recorder holds.
    pub max_fragment_bytes: u64,
    /// A fragment is written once its first frame arrived this long ago, whatever the timestamps.
    pub max_fragment_wait: Duration,
}

impl ArchiveConfig {
    /// Recordings under `<storage_dir>/archive` (where the store's paths say they are), with the
    /// defaults of `config/default.toml`.
    pub fn in_storage(storage_dir: &Path) -> Self {
        Self {
            dir: storage_dir.join(ARCHIVE_DIR),
            storage_dir: storage_dir.to_owned(),
            min_free_bytes: 1 << 30,
            min_recording_interval: Duration::from_secs(60),
            max_fragment_bytes: 8 << 20,
            max_fragment_wait: Duration::from_secs(2),
        }
    }
}

/// Every stream's recorder.
pub struct Archives {
    config: Arc<ArchiveConfig>,
    store: Store,
    notifier: Notifier,
    recorders: TaskTracker,
    /// Each recording stream's recording in progress.
    boards: Arc<Mutex<HashMap<StreamId, Arc<RecordingBoard>>>>,
}

impl Archives {
    pub fn new(config: ArchiveConfig, store: Store) -> std::io::Result<Self> {
        durable::create_dirs(&config.dir.join(RECORDING_DIR))?;
        Ok(Self {
            config: Arc::new(config),
            store,
            notifier: Notifier::default(),
            recorders: TaskTracker::new(),
            boards: Arc::default(),
        })
    }

    /// Tells `notifier` of every recording listed (`archive.ready`), recovered ones included.
    pub fn with_notifier(self, notifier: Notifier) -> Self {
        Self { notifier, ..self }
    }

    /// Starts recording a stream that went active; `subscriber` is its bus, subscribed already.
    pub fn start(&self, stream_id: &StreamId, public_id: String, subscriber: Subscriber) {
        let recorder = recorder::Recorder {
            config: Arc::clone(&self.config),
            store: self.store.clone(),
            notifier: self.notifier.clone(),
            stream_id: stream_id.clone(),
            public_id,
            finalizers: self.recorders.clone(),
            board: Arc::default(),
            bytes_written: metrics::counter!("oxcast_archive_bytes_total", "stream_id" => stream_id.to_string()),
        };
        let board = Arc::clone(&recorder.board);
        lock(&self.boards).insert(stream_id.clone(), Arc::clone(&board));
        let (boards, stream_id) = (Arc::clone(&self.boards), stream_id.clone());
        // Inside the caller's span (the stream's), so every line names the stream.
        let span = tracing::info_span!("archive", public_id = %recorder.public_id);
        self.recorders.spawn(
            async move {
                recorder::record(recorder, subscriber).await;
                // Unless the stream's next session has its own already.
                let mut boards = lock(&boards);
                if boards.get(&stream_id).is_some_and(|b| Arc::ptr_eq(b, &board)) {
                    boards.remove(&stream_id);
                }
            }
            .instrument(span),
        );
    }

    /// Finalizes and lists every recording a previous process left unfinished (killed, the
    /// machine lost power, or the disk was too full to finalize it). Call before streams can go
    /// live.
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
            // In its stream's span, as when the stream's own recorder finalizes.
            let span = tracing::info_span!("stream", stream_id = %unfinished.stream_id);
            finalize(&self.config, &self.store, &self.notifier, unfinished)
                .instrument(span)
                .await;
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

/// Recordings' directory in the storage directory (the store's paths start with it).
pub const ARCHIVE_DIR: &str = "archive";
const RECORDING_DIR: &str = "recording";
const PART_SUFFIX: &str = ".mp4.part";
const PUBLIC_ID_SUFFIX: &str = ".public_id";
/// Names tried after a taken one: more recordings of one stream in one millisecond than this
/// is not a clock, it is a bug.
const MAX_SEQUENCE: u32 = 1000;

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

/// Blocking: the free space of the disk holding `dir`.
pub(crate) fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    #[cfg(test)]
    if let Some(free) = tests::free_bytes(dir) {
        return Ok(free);
    }
    let stat = rustix::fs::statvfs(dir)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// A recording being written, or left unfinished.
#[derive(Debug, Clone)]
pub(crate) struct Unfinished {
    pub(crate) stream_id: StreamId,
    /// Unix epoch milliseconds.
    pub(crate) started_ms: i64,
    /// 0, or what made the name free when another recording of the stream started in the same
    /// millisecond.
    pub(crate) sequence: u32,
    pub(crate) public_id: String,
    pub(crate) part: PathBuf,
}

impl Unfinished {
    /// Claims the first free name for a new recording and creates it holding `init`. The
    /// public_id file comes first and is synced into the directory before the recording exists,
    /// so a crash cannot leave a recording whose asset name is unknown; then the recording is
    /// synced into the directory, so the fragments synced into it later cannot lose their file.
    pub(crate) fn create(
        config: &ArchiveConfig,
        stream_id: &StreamId,
        public_id: &str,
        started_ms: i64,
        init: &[u8],
    ) -> io::Result<(Self, std::fs::File)> {
        let dir = config.dir.join(RECORDING_DIR);
        for sequence in 0..=MAX_SEQUENCE {
            let stem = part_stem(stream_id, started_ms, sequence);
            let public_id_file = dir.join(format!("{stem}{PUBLIC_ID_SUFFIX}"));
            match durable::write_new(&public_id_file, public_id.as_bytes()) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
            let part = dir.join(format!("{stem}{PART_SUFFIX}"));
            let created = durable::sync_dir(&dir)
                .and_then(|()| durable::write_new(&part, init))
                .and_then(|file| durable::sync_dir(&dir).map(|()| file));
            match created {
                Ok(file) => {
                    let unfinished = Self {
                        stream_id: stream_id.clone(),
                        started_ms,
                        sequence,
                        public_id: public_id.to_owned(),
                        part,
                    };
                    return Ok((unfinished, file));
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&public_id_file);
                    // A recording without its public_id file (not ours) holds this name.
                    if e.kind() == io::ErrorKind::AlreadyExists {
                        continue;
                    }
                    return Err(e);
                }
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("every name for a recording started at {started_ms} is taken"),
        ))
    }

    /// Parses `<stream id>-<start ms>[-<sequence>].mp4.part` and reads its public_id file.
    fn from_path(part: &Path) -> Option<Self> {
        let name = part.file_name()?.to_str()?;
        let stem = name.strip_suffix(PART_SUFFIX)?;
        let mut fields = stem.split('-');
        let (id, started) = (fields.next()?, fields.next()?);
        let sequence = match fields.next() {
            None => 0,
            Some(n) => n.parse().ok().filter(|n| (1..=MAX_SEQUENCE).contains(n))?,
        };
        if fields.next().is_some() {
            return None;
        }
        let public_id =
            std::fs::read_to_string(part.with_file_name(format!("{stem}{PUBLIC_ID_SUFFIX}"))).ok()?;
        oxcast_core::rules::check_public_id(&public_id).ok()?;
        Some(Self {
            stream_id: StreamId::parse(id)?,
            started_ms: started.parse().ok()?,
            sequence,
            public_id,
            part: part.to_owned(),
        })
    }

    fn public_id_file(&self) -> PathBuf {
        let stem = part_stem(&self.stream_id, self.started_ms, self.sequence);
        self.part.with_file_name(format!("{stem}{PUBLIC_ID_SUFFIX}"))
    }

    /// The finalized file's name, relative to the storage directory: `archive/<public_id>/<start
    /// ms>-<stream id>[-<sequence>].mp4`.
    fn asset(&self, sequence: u32) -> PathBuf {
        let mut name = format!("{}-{}", self.started_ms, self.stream_id.as_str());
        if sequence > 0 {
            name.push_str(&format!("-{sequence}"));
        }
        name.push_str(".mp4");
        PathBuf::from(ARCHIVE_DIR).join(&self.public_id).join(name)
    }
}

fn part_stem(stream_id: &StreamId, started_ms: i64, sequence: u32) -> String {
    match sequence {
        0 => format!("{}-{started_ms}", stream_id.as_str()),
        n => format!("{}-{started_ms}-{n}", stream_id.as_str()),
    }
}

/// How finalizing went, short of listing.
enum Finalized {
    /// The asset, relative to the storage directory.
    Done(mp4::Summary, PathBuf),
    NoMedia,
}

/// Why a recording is not finalized now: it stays as it is, for the next start (or a person).
#[derive(Debug, thiserror::Error)]
enum FinalizeError {
    /// Not an error of the recording: the disk is too full for its asset.
    #[error(
        "{free} bytes free on the storage disk; finalizing needs the recording's {part_len} again \
         plus archive.min_free_bytes ({min_free})"
    )]
    NoRoom { free: u64, part_len: u64, min_free: u64 },
    #[error("cannot read the free space: {0}")]
    FreeSpace(io::Error),
    #[error("{}: {source}", path.display())]
    File { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Mp4(mp4::Mp4Error),
    #[error("every name like {} is taken", .0.display())]
    NamesTaken(PathBuf),
    #[error("finalizing failed: {0}")]
    Blocking(#[from] tokio::task::JoinError),
}

impl FinalizeError {
    fn file(path: &Path) -> impl FnOnce(io::Error) -> Self + '_ {
        move |source| Self::File {
            path: path.to_owned(),
            source,
        }
    }
}

/// Turns a fragmented recording into its asset: progressive MP4 under a temporary name, synced,
/// renamed to a free name, that name synced, then listed in the store; then the fragmented file
/// goes. A recording with no whole fragment (the stream sent nothing) leaves no asset. Without
/// room for the asset (its size again, plus `min_free_bytes`), or on an error, the recording is
/// kept as it is and finalized at the next start.
pub(crate) async fn finalize(
    config: &ArchiveConfig,
    store: &Store,
    notifier: &Notifier,
    unfinished: Unfinished,
) {
    let started = std::time::Instant::now();
    let job = (config.clone(), unfinished.clone());
    let done = tokio::task::spawn_blocking(move || {
        let (config, unfinished) = job;
        finalize_file(&config, &unfinished)
    })
    .await
    .unwrap_or_else(|e| Err(e.into()));
    let (summary, relative) = match done {
        Ok(Finalized::Done(summary, relative)) => (summary, relative),
        Ok(Finalized::NoMedia) => {
            tracing::info!("recording holds no media; no asset made");
            remove_unfinished(&unfinished);
            return;
        }
        Err(why @ (FinalizeError::NoRoom { .. } | FinalizeError::Blocking(_))) => {
            tracing::warn!(path = %unfinished.part.display(),
                "recording kept unfinished, to be finalized at the next start: {why}");
            return;
        }
        Err(e) => {
            // Kept for the next start (or a person) to try again.
            tracing::error!(path = %unfinished.part.display(),
                "cannot finalize the recording: {e}");
            return;
        }
    };
    let version = now_ms() / 1000;
    let archive = Archive {
        public_id: unfinished.public_id.clone(),
        version,
        stream_id: unfinished.stream_id.clone(),
        path: relative.to_string_lossy().into_owned(),
        duration_ms: summary.duration_ms as i64,
        bytes: summary.bytes as i64,
        created_at: unfinished.started_ms,
    };
    let (duration_ms, bytes) = (archive.duration_ms, archive.bytes);
    match store.insert_archive(archive).await {
        Ok(version) => {
            metrics::histogram!("oxcast_archive_finalize_seconds").record(started.elapsed());
            notifier.notify(Event::ArchiveReady {
                stream_id: unfinished.stream_id.clone(),
                public_id: unfinished.public_id.clone(),
                version,
                duration_ms,
                bytes,
            });
            tracing::info!(public_id = %unfinished.public_id, version,
                duration_ms = summary.duration_ms, video_frames = summary.video_frames,
                audio_frames = summary.audio_frames, "recording finalized");
            remove_unfinished(&unfinished);
        }
        Err(e) => tracing::error!("recording finalized but not listed (retried at the next start): {e}"),
    }
}

/// Blocking: checks the space, writes the asset and renames it into place.
fn finalize_file(config: &ArchiveConfig, unfinished: &Unfinished) -> Result<Finalized, FinalizeError> {
    let part = &unfinished.part;
    let part_len = std::fs::metadata(part).map_err(FinalizeError::file(part))?.len();
    let free = free_bytes(&config.dir).map_err(FinalizeError::FreeSpace)?;
    let min_free = config.min_free_bytes;
    if free < part_len.saturating_add(min_free) {
        return Err(FinalizeError::NoRoom {
            free,
            part_len,
            min_free,
        });
    }
    let first = unfinished.asset(unfinished.sequence);
    let target = config.storage_dir.join(&first);
    // The asset's path is storage_dir/archive/<public_id>/<name>: it has a directory.
    let dir = target.parent().unwrap_or(&config.storage_dir);
    durable::create_dirs(dir).map_err(FinalizeError::file(dir))?;
    // Unique while the recording is: its name is.
    let temporary = target.with_extension("mp4.tmp");
    let summary = match mp4::finalize(part, &temporary) {
        Ok(summary) => summary,
        Err(mp4::Mp4Error::NoMedia) => {
            let _ = std::fs::remove_file(&temporary);
            return Ok(Finalized::NoMedia);
        }
        Err(e) => {
            let _ = std::fs::remove_file(&temporary);
            return Err(FinalizeError::Mp4(e));
        }
    };
    // The first free name: one is taken only if the clock went back to this same millisecond.
    for sequence in unfinished.sequence..=unfinished.sequence.saturating_add(MAX_SEQUENCE) {
        let relative = unfinished.asset(sequence);
        let target = config.storage_dir.join(&relative);
        match durable::rename_new(&temporary, &target) {
            Ok(()) => return Ok(Finalized::Done(summary, relative)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                let _ = std::fs::remove_file(&temporary);
                return Err(FinalizeError::file(&target)(e));
            }
        }
    }
    let _ = std::fs::remove_file(&temporary);
    Err(FinalizeError::NamesTaken(target))
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

impl RecordingSource for Archives {
    fn recording(&self, stream_id: &StreamId) -> Option<RecordingStats> {
        lock(&self.boards).get(stream_id).map(|board| board.stats())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use bytes::Bytes;
    use oxcast_core::StreamBus;
    use oxcast_core::sync::lock;
    use oxcast_media::{AacConfig, AvcConfig, Frame, MediaEvent, Track};

    use super::*;
    use crate::mp4::testing::{AVC_RECORD, Played, play};
    use crate::mp4::{FragmentWriter, Tracks};

    /// Free space to report for directories under a path, instead of the disk's.
    static FREE_BYTES: Mutex<Vec<(PathBuf, u64)>> = Mutex::new(Vec::new());

    pub(super) fn free_bytes(dir: &Path) -> Option<u64> {
        let reported = lock(&FREE_BYTES);
        reported
            .iter()
            .find(|(under, _)| dir.starts_with(under))
            .map(|(_, free)| *free)
    }

    fn report_free_bytes(under: &Path, free: u64) {
        let mut reported = lock(&FREE_BYTES);
        reported.retain(|(dir, _)| dir != under);
        reported.push((under.to_owned(), free));
    }

    /// A storage directory with its store and recorders, and one stream's bus.
    struct Fixture {
        _tmp: tempfile::TempDir,
        config: ArchiveConfig,
        store: Store,
        archives: Archives,
        stream_id: StreamId,
        bus: Arc<StreamBus>,
    }

    const PUBLIC_ID: &str = "shows/live";

    impl Fixture {
        fn new(adjust: impl FnOnce(&mut ArchiveConfig)) -> Fixture {
            let tmp = tempfile::tempdir().unwrap();
            let storage = tmp.path().join("data");
            let mut config = ArchiveConfig {
                min_free_bytes: 0,
                ..ArchiveConfig::in_storage(&storage)
            };
            adjust(&mut config);
            let store = Store::open(&storage).unwrap();
            let archives = Archives::new(config.clone(), store.clone()).unwrap();
            Fixture {
                _tmp: tmp,
                config,
                store,
                archives,
                stream_id: StreamId::generate(),
                bus: Arc::new(StreamBus::new()),
            }
        }

        /// Starts the stream's recorder, as the stream going live does.
        fn go_live(&self) {
            self.archives
                .start(&self.stream_id, PUBLIC_ID.to_owned(), self.bus.subscribe());
        }

        /// Ends the stream and waits for its recordings to be finalized.
        async fn end(&self) {
            self.bus.end();
            self.archives.wait(Duration::from_secs(600)).await;
        }

        /// The stream's listed recordings, each as a player reads it, in recording order.
        async fn recordings(&self) -> Vec<(Archive, Vec<Played>)> {
            let mut listed: Vec<_> = self
                .store
                .stream_archives(&self.stream_id)
                .await
                .unwrap()
                .into_iter()
                .map(|archive| {
                    let file = std::fs::read(self.config.storage_dir.join(&archive.path)).unwrap();
                    (archive, play(&file))
                })
                .collect();
            // Started in the same millisecond, the later one has the higher sequence number.
            let sequence = |archive: &Archive| -> u32 {
                let name = archive.path.rsplit('/').next().unwrap().trim_end_matches(".mp4");
                name.split('-').nth(2).map_or(0, |n| n.parse().unwrap())
            };
            listed.sort_by_key(|(archive, _)| (archive.created_at, sequence(archive)));
            listed
        }

        /// One second of media starting at `second` s, 30 frames of audio named `a<dts>` and, with
        /// `video`, a GOP named `<video><dts>`; then that second passes.
        async fn publish_second(&self, second: i64, video: Option<&str>) {
            for i in 0..30 {
                let dts = second * 1000 + i * 33;
                if let Some(name) = video {
                    self.bus
                        .publish(frame(Track::Video, dts, i == 0, format!("{name}{dts}")));
                }
                self.bus
                    .publish(frame(Track::Audio, dts, true, format!("a{dts}")));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }

        fn parts(&self) -> Vec<PathBuf> {
            list_parts(&self.config.dir.join(RECORDING_DIR)).unwrap()
        }
    }

    /// The test record (640x360), or the same at another level: another configuration.
    fn avc(level: u8) -> Arc<AvcConfig> {
        let mut record = AVC_RECORD.to_vec();
        record[3] = level; // the record's AVCLevelIndication
        record[11] = level; // the SPS's level_idc
        Arc::new(AvcConfig::parse(Bytes::from(record)).unwrap())
    }

    fn aac() -> Arc<AacConfig> {
        Arc::new(AacConfig::parse(Bytes::from_static(&[0x11, 0x90])).unwrap())
    }

    fn frame(track: Track, dts: i64, keyframe: bool, data: impl Into<Bytes>) -> MediaEvent {
        MediaEvent::Frame(Frame {
            track,
            dts,
            pts: dts,
            keyframe,
            data: data.into(),
        })
    }

    fn video_track(played: &[Played]) -> &Played {
        played.iter().find(|t| t.handler == b"vide").unwrap()
    }

    fn audio_track(played: &[Played]) -> Option<&Played> {
        played.iter().find(|t| t.handler == b"soun")
    }

    /// A publisher switching between two configurations at every keyframe, with the clock paused
    /// so a minute passes at once: one new recording per min_recording_interval, each holding
    /// its own configuration's video only, and every audio frame in one recording or the next.
    #[tokio::test(start_paused = true)]
    async fn configuration_changes_start_at_most_one_recording_per_interval() {
        let fixture = Fixture::new(|_| {});
        fixture.go_live();
        let (a, b) = (avc(0x1e), avc(0x1f));
        let name = |config: &Arc<AvcConfig>| if Arc::ptr_eq(config, &a) { "A" } else { "B" };
        fixture.bus.publish(MediaEvent::AudioConfig(aac()));
        // One GOP a second: A and B in turn up to 70 s, then B until 130 s.
        let mut current: Option<Arc<AvcConfig>> = None;
        for gop in 0..=130i64 {
            let config = if gop < 70 && gop % 2 == 0 { &a } else { &b };
            if current.as_ref().is_none_or(|c| !Arc::ptr_eq(c, config)) {
                fixture.bus.publish(MediaEvent::VideoConfig(config.clone()));
                current = Some(config.clone());
            }
            fixture.publish_second(gop, Some(name(config))).await;
        }
        fixture.end().await;

        let recordings = fixture.recordings().await;
        let gops = |name: &str, gops: &[i64]| -> Vec<Vec<u8>> {
            gops.iter()
                .flat_map(|gop| (0..30).map(move |i| format!("{name}{}", gop * 1000 + i * 33).into_bytes()))
                .collect()
        };
        let odd = |from: i64, to: i64| (from..=to).filter(|g| g % 2 == 1).collect::<Vec<_>>();
        let expected = [
            // Until the first change, which starts the next recording at once.
            gops("A", &[0]),
            // A's GOPs are left out for a minute after that start; B's go on.
            gops("B", &odd(1, 61)),
            // At 62 s the change to A is allowed again: A's GOPs, while B's wait.
            gops("A", &[62, 64, 66, 68]),
            // B stays: a minute after the last start, its next keyframe starts the next one.
            gops("B", &(122..=130).collect::<Vec<_>>()),
        ];
        assert_eq!(
            recordings.len(),
            expected.len(),
            "{:?}",
            recordings.iter().map(|r| &r.0).collect::<Vec<_>>()
        );
        let mut audio_frames = 0;
        for ((archive, played), expected) in recordings.iter().zip(expected) {
            let video = video_track(played);
            assert_eq!(video.samples, expected, "{}", archive.path);
            assert_eq!(video.sync.as_ref().unwrap()[0], 1, "opens with a keyframe");
            audio_frames += audio_track(played).unwrap().samples.len();
        }
        assert_eq!(audio_frames, 131 * 30, "every audio frame is recorded");
    }

    /// A publisher that sends audio before its video configuration: the video track's arrival
    /// starts the next recording, and does not count against the interval: a resolution change
    /// right after it still starts one at once.
    #[tokio::test(start_paused = true)]
    async fn a_track_that_appears_does_not_count_against_the_interval() {
        let fixture = Fixture::new(|_| {});
        fixture.go_live();
        fixture.bus.publish(MediaEvent::AudioConfig(aac()));
        for (second, video) in [
            (0, None),
            (1, Some(("A", avc(0x1e)))),
            (2, Some(("B", avc(0x1f)))),
        ] {
            if let Some((_, config)) = &video {
                fixture.bus.publish(MediaEvent::VideoConfig(config.clone()));
            }
            fixture
                .publish_second(second, video.as_ref().map(|(name, _)| *name))
                .await;
        }
        fixture.end().await;
        let recordings = fixture.recordings().await;
        let videos: Vec<Option<Vec<u8>>> = recordings
            .iter()
            .map(|(_, played)| {
                let video = played.iter().find(|t| t.handler == b"vide");
                video.map(|v| v.samples[0].clone())
            })
            .collect();
        assert_eq!(videos, [None, Some(b"A1000".to_vec()), Some(b"B2000".to_vec())]);
    }

    /// Two recordings of one stream started in the same millisecond: both get a name of their
    /// own, both are finalized (one as the recorder does, one by the recovery at start-up), and a
    /// finalized file already holding the first name is left as it is.
    #[tokio::test]
    async fn recordings_started_in_the_same_millisecond_both_survive() {
        let fixture = Fixture::new(|_| {});
        let tracks = Tracks {
            video: Some(avc(0x1e)),
            audio: None,
        };
        let started_ms = 1_700_000_000_123;
        let mut recordings = Vec::new();
        for name in ["first", "second"] {
            let (unfinished, mut file) = Unfinished::create(
                &fixture.config,
                &fixture.stream_id,
                PUBLIC_ID,
                started_ms,
                &crate::mp4::init_segment(&tracks),
            )
            .unwrap();
            let mut writer = FragmentWriter::new(&tracks);
            let frames = (0..10).map(|i| Frame {
                track: Track::Video,
                dts: i * 100,
                pts: i * 100,
                keyframe: i == 0,
                data: Bytes::from(format!("{name}{i}")),
            });
            for fragment in [writer.push(frames), writer.finish()].into_iter().flatten() {
                fragment.write_to(&mut file).unwrap();
            }
            recordings.push(unfinished);
        }
        let [first, second] = <[Unfinished; 2]>::try_from(recordings).unwrap();
        assert_ne!(first.part, second.part);
        let mut parts = fixture.parts();
        parts.sort_by_key(|part| part != &first.part);
        assert_eq!(parts, [first.part.clone(), second.part.clone()]);
        // Both names parse back, as the recovery at start-up reads them.
        for unfinished in [&first, &second] {
            let parsed = Unfinished::from_path(&unfinished.part).unwrap();
            assert_eq!(
                (
                    parsed.stream_id,
                    parsed.started_ms,
                    parsed.sequence,
                    parsed.public_id
                ),
                (
                    fixture.stream_id.clone(),
                    started_ms,
                    unfinished.sequence,
                    PUBLIC_ID.to_owned()
                )
            );
        }
        // A file under the first asset name (the clock went back, say) is not replaced.
        let taken = fixture.config.storage_dir.join(first.asset(0));
        durable::create_dirs(taken.parent().unwrap()).unwrap();
        std::fs::write(&taken, "an older recording").unwrap();

        finalize(&fixture.config, &fixture.store, &Notifier::default(), first).await;
        fixture.archives.recover().await;
        assert!(fixture.parts().is_empty());
        assert_eq!(std::fs::read(&taken).unwrap(), b"an older recording");
        let recordings = fixture.recordings().await;
        assert_eq!(recordings.len(), 2);
        assert_ne!(recordings[0].0.path, recordings[1].0.path);
        let first_frames: Vec<Vec<u8>> = recordings
            .iter()
            .map(|(_, played)| video_track(played).samples[0].clone())
            .collect();
        assert!(first_frames.contains(&b"first0".to_vec()) && first_frames.contains(&b"second0".to_vec()));
    }

    /// Finalizing writes the recording's size again: without that much free besides
    /// min_free_bytes, the recording is kept unfinished and unlisted, and the next start, with
    /// room, finalizes it.
    #[tokio::test]
    async fn without_room_to_finalize_the_recording_is_kept_for_the_next_start() {
        let fixture = Fixture::new(|config| config.min_free_bytes = 1 << 20);
        let storage = fixture.config.storage_dir.clone();
        // Enough to record (min_free_bytes), not to finalize.
        report_free_bytes(&storage, (1 << 20) + 1);
        fixture.go_live();
        fixture.bus.publish(MediaEvent::VideoConfig(avc(0x1e)));
        for i in 0..90 {
            fixture
                .bus
                .publish(frame(Track::Video, i * 33, i % 30 == 0, vec![7u8; 10_000]));
            tokio::task::yield_now().await;
        }
        fixture.end().await;
        let part = fixture.parts().pop().expect("the recording is kept");
        let recorded = std::fs::metadata(&part).unwrap().len();
        // The next start, still one byte short.
        report_free_bytes(&storage, (1 << 20) + recorded - 1);
        fixture.archives.recover().await;
        assert!(fixture.recordings().await.is_empty(), "nothing is listed");
        assert_eq!(
            fixture.parts(),
            std::slice::from_ref(&part),
            "the recording is kept"
        );
        assert_eq!(std::fs::metadata(&part).unwrap().len(), recorded, "as it was");
        assert!(Unfinished::from_path(&part).is_some(), "with its public_id");
        assert!(
            !storage.join(ARCHIVE_DIR).join("shows").exists(),
            "no asset was started"
        );

        report_free_bytes(&storage, (1 << 20) + recorded);
        fixture.archives.recover().await;
        let recordings = fixture.recordings().await;
        assert_eq!(recordings.len(), 1);
        assert_eq!(video_track(&recordings[0].1).samples.len(), 90);
        assert!(fixture.parts().is_empty());
    }

    /// The recording being written, once it exists.
    async fn wait_for_part(fixture: &Fixture) -> PathBuf {
        loop {
            if let Some(part) = fixture.parts().pop() {
                return part;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// (type, size) of each top-level box of a file.
    fn boxes(path: &Path) -> Vec<([u8; 4], u64)> {
        let data = std::fs::read(path).unwrap();
        let mut boxes = Vec::new();
        let mut at = 0;
        while let Some(header) = data.get(at..at + 8) {
            let size = u32::from_be_bytes(header[..4].try_into().unwrap()) as usize;
            boxes.push((header[4..8].try_into().unwrap(), size as u64));
            at += size;
        }
        boxes
    }

    /// Every decode time after the one before, in every track.
    fn decode_times_rise(played: &[Played]) -> bool {
        played.iter().all(|track| track.durations.iter().all(|d| *d > 0))
    }

    /// A publisher whose every timestamp is 0: its frames are written every max_fragment_wait
    /// while it sends them (not held until the stream ends), and the recording plays.
    #[tokio::test(start_paused = true)]
    async fn frames_that_all_have_timestamp_zero_are_written_as_they_wait() {
        let fixture = Fixture::new(|_| {});
        fixture.go_live();
        fixture.bus.publish(MediaEvent::VideoConfig(avc(0x1e)));
        fixture.bus.publish(MediaEvent::AudioConfig(aac()));
        for i in 0..100u32 {
            let data = format!("frame{i}");
            fixture.bus.publish(frame(Track::Video, 0, i % 30 == 0, data));
            fixture.bus.publish(frame(Track::Audio, 0, true, vec![1u8; 50]));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // 10 s of frames: a fragment every 2 s.
        let part = wait_for_part(&fixture).await;
        let fragments = boxes(&part).iter().filter(|(kind, _)| kind == b"moof").count();
        assert!(fragments >= 4, "{fragments} fragments written while live");
        fixture.end().await;
        let recordings = fixture.recordings().await;
        assert_eq!(recordings.len(), 1);
        let played = &recordings[0].1;
        let video: Vec<Vec<u8>> = (0..100).map(|i| format!("frame{i}").into_bytes()).collect();
        assert_eq!(video_track(played).samples, video);
        assert_eq!(audio_track(played).unwrap().samples.len(), 100);
        assert!(decode_times_rise(played));
    }

    /// 1 MiB frames all at timestamp 0: fragments are written at max_fragment_bytes, so the
    /// recorder never holds more than that (and the frame each track holds back for its
    /// duration); the recording plays.
    #[tokio::test(start_paused = true)]
    async fn large_frames_are_written_at_max_fragment_bytes() {
        const MIB: usize = 1 << 20;
        let fixture = Fixture::new(|config| config.max_fragment_bytes = 4 << 20);
        fixture.go_live();
        fixture.bus.publish(MediaEvent::VideoConfig(avc(0x1e)));
        let published = 20;
        for i in 0..published {
            fixture
                .bus
                .publish(frame(Track::Video, 0, i % 10 == 0, vec![i as u8; MIB]));
        }
        // Less than max_fragment_wait: any fragment written now was written for its size.
        tokio::time::sleep(Duration::from_millis(10)).await;
        let part = wait_for_part(&fixture).await;
        let mdats: Vec<u64> = boxes(&part)
            .into_iter()
            .filter(|(kind, _)| kind == b"mdat")
            .map(|(_, size)| size - 8)
            .collect();
        assert!(mdats.iter().all(|&media| media <= 4 << 20), "{mdats:?}");
        let written: u64 = mdats.iter().sum();
        let held = (published * MIB) as u64 - written;
        assert!(held <= (4 << 20) + MIB as u64, "{held} bytes held: {mdats:?}");
        fixture.end().await;
        let recordings = fixture.recordings().await;
        assert_eq!(recordings.len(), 1);
        let played = &recordings[0].1;
        let video: Vec<Vec<u8>> = (0..published).map(|i| vec![i as u8; MIB]).collect();
        assert!(video_track(played).samples == video, "every frame, in order");
        assert!(decode_times_rise(played));
    }
}
