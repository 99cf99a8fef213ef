//! The HLS output: each active stream's media, muxed to MPEG-TS, cut into keyframe-aligned segments
//! and listed in a live playlist (RFC 8216). Listed segments are served from memory; a segment that
//! leaves the window is written to a file and dropped from memory, then deleted when its retention
//! ends, so memory holds the window and not the retention. [`HlsOutputs`] is the
//! [`oxcast_core::HlsSource`] the HTTP delivery reads.

pub mod playlist;
pub mod segmenter;
pub mod ts;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use oxcast_core::clock::now_ms;
use oxcast_core::sync::lock;
use oxcast_core::{HlsSource, HlsStats, SegmentBody, StreamId, Subscriber};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::playlist::{Playlist, Pushed, Stored};
use crate::segmenter::{SegmentLimits, Segmenter};

/// Segment length and window, from the `hls.*` settings.
#[derive(Debug, Clone, Copy)]
pub struct HlsConfig {
    pub segment_duration: Duration,
    /// Segments listed in the playlist.
    pub window: usize,
    /// How long an ended playlist (and its segments) stays served.
    pub keep_after_end: Duration,
    /// When a segment is closed without a keyframe.
    pub segment_limits: SegmentLimits,
    /// Bytes of one stream's segments kept in memory; older listed ones are served from files.
    pub max_memory_bytes: usize,
}

/// Every stream's playlist. An ended playlist stays served for `keep_after_end`, or until the
/// stream goes live again.
#[derive(Debug)]
pub struct HlsOutputs {
    config: HlsConfig,
    /// Retired segments' files: `<dir>/<stream id>/<sequence>.ts`.
    spill_dir: PathBuf,
    playlists: Arc<Playlists>,
    /// Every stream's packaging task, so shutdown waits for each playlist's last segment.
    packagers: TaskTracker,
    /// Cancelled at shutdown: ended playlists stop waiting out `keep_after_end`.
    closing: CancellationToken,
}

type Playlists = Mutex<HashMap<StreamId, Arc<Mutex<Playlist>>>>;

impl HlsOutputs {
    /// Retired segments go to files under `spill_dir`; what a previous run left there is deleted
    /// (no playlist lists it any more).
    pub fn new(config: HlsConfig, spill_dir: PathBuf) -> std::io::Result<Self> {
        match std::fs::remove_dir_all(&spill_dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        std::fs::create_dir_all(&spill_dir)?;
        Ok(Self {
            config,
            spill_dir,
            playlists: Arc::new(Mutex::new(HashMap::new())),
            packagers: TaskTracker::new(),
            closing: CancellationToken::new(),
        })
    }

    fn stream_dir(&self, stream_id: &StreamId) -> PathBuf {
        self.spill_dir.join(stream_id.as_str())
    }

    /// Starts packaging a stream that went active; `subscriber` is its bus, subscribed already so
    /// no frame is missed. Segment numbers start from the clock (Unix seconds) or continue the
    /// stream's previous session, whichever is later, so a player or cache never sees one name with
    /// two contents, not even across a restart of the server.
    pub fn start(&self, stream_id: &StreamId, subscriber: Subscriber) {
        let prefix = format!("live_stream_{}_hls/", stream_id.as_str());
        let target_sec = self.config.segment_duration.as_secs().max(1);
        let playlist = {
            let mut playlists = lock(&self.playlists);
            let clock = u64::try_from(now_ms() / 1000).unwrap_or(0);
            let previous = playlists.get(stream_id).map_or(0, |p| lock(p).next_sequence());
            let first = clock.max(previous);
            let playlist = Arc::new(Mutex::new(Playlist::with_memory_budget(
                prefix,
                self.config.window,
                target_sec,
                first,
                self.config.max_memory_bytes,
            )));
            playlists.insert(stream_id.clone(), playlist.clone());
            playlist
        };
        let target_ms = i64::try_from(self.config.segment_duration.as_millis()).unwrap_or(i64::MAX);
        // The previous session's retired segments: no playlist lists them now. (This session's
        // first spill is a whole window away.)
        let dir = self.stream_dir(stream_id);
        tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir));
        let stream_dir = self.stream_dir(stream_id);
        let spill = Spill {
            dir: stream_dir.clone(),
            playlist: playlist.clone(),
            failed: Arc::new(AtomicBool::new(false)),
        };
        let stream_id = stream_id.clone();
        let (playlists, keep) = (Arc::clone(&self.playlists), self.config.keep_after_end);
        let segmenter = Segmenter::with_limits(target_ms, self.config.segment_limits);
        let closing = self.closing.clone();
        let metrics = PackagingMetrics::new(&stream_id);
        let task = async move {
            // Weak: a playlist replaced by the stream's next session must not be held (with its
            // segments) until this timer ends. The allocation it points to stays reserved, so the
            // comparison below cannot match a newer playlist at a reused address.
            let ended = Arc::downgrade(&playlist);
            package(subscriber, playlist, spill, segmenter, metrics).await;
            // The ended playlist stays for players finishing it, then goes, unless the stream went
            // live again meanwhile (a new playlist took its place). At shutdown nobody is served.
            tokio::select! {
                () = tokio::time::sleep(keep) => {}
                () = closing.cancelled() => return,
            }
            let mut playlists = lock(&playlists);
            if playlists
                .get(&stream_id)
                .is_some_and(|p| std::ptr::eq(Arc::as_ptr(p), ended.as_ptr()))
            {
                playlists.remove(&stream_id);
                drop(playlists);
                remove_dir(stream_dir, "an ended stream's");
                tracing::debug!("ended HLS playlist removed");
            }
        };
        // Inside the caller's span (the stream's), so every line names the stream.
        self.packagers.spawn(task.instrument(tracing::info_span!("hls")));
    }

    /// Waits (at most `limit`) for every playlist to end: at shutdown, after the streams ended.
    pub async fn wait(&self, limit: Duration) {
        self.closing.cancel();
        self.packagers.close();
        if tokio::time::timeout(limit, self.packagers.wait()).await.is_err() {
            tracing::warn!("HLS packaging still running {limit:?} after the streams ended");
        }
    }

    /// Forgets a deleted stream: its playlist and segments answer 404 from now on.
    pub fn remove(&self, stream_id: &StreamId) {
        lock(&self.playlists).remove(stream_id);
        remove_dir(self.stream_dir(stream_id), "a deleted stream's");
    }

    fn playlist_of(&self, stream_id: &StreamId) -> Option<Arc<Mutex<Playlist>>> {
        lock(&self.playlists).get(stream_id).cloned()
    }
}

impl HlsSource for HlsOutputs {
    fn playlist(&self, stream_id: &StreamId) -> Option<Bytes> {
        let playlist = self.playlist_of(stream_id)?;
        lock(&playlist).text()
    }

    fn segment(&self, stream_id: &StreamId, sequence: u64) -> Option<SegmentBody> {
        let playlist = self.playlist_of(stream_id)?;
        let stored = lock(&playlist).segment(sequence)?;
        Some(match stored {
            Stored::Memory(data) => SegmentBody::Memory(data),
            Stored::Spilled => SegmentBody::File(segment_path(&self.stream_dir(stream_id), sequence)),
        })
    }

    fn stats(&self, stream_id: &StreamId) -> Option<HlsStats> {
        let playlist = self.playlist_of(stream_id)?;
        Some(lock(&playlist).stats())
    }
}

/// Deletes a stream's retired segments, off the async threads.
fn remove_dir(dir: PathBuf, whose: &'static str) {
    tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            tracing::warn!(dir = %dir.display(), "cannot delete {whose} HLS segments: {e}");
        }
        _ => {}
    });
}

fn segment_path(dir: &Path, sequence: u64) -> PathBuf {
    dir.join(format!("{sequence}.ts"))
}

/// Moves one stream's retired segments from memory to files, off the packaging task.
struct Spill {
    dir: PathBuf,
    playlist: Arc<Mutex<Playlist>>,
    /// Set after a failed write (disk full, say): logged once; the segment stays in memory.
    failed: Arc<AtomicBool>,
}

impl Spill {
    fn apply(&self, pushed: Pushed) {
        if pushed.retired.is_empty() && pushed.expired.is_empty() {
            return;
        }
        let (dir, playlist, failed) = (self.dir.clone(), self.playlist.clone(), self.failed.clone());
        // Blocking file I/O goes to tokio's blocking pool: a slow disk delays the spill, not the
        // packaging (until then the segment is served from memory).
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _stream = span.enter();
            for sequence in pushed.expired {
                let _ = std::fs::remove_file(segment_path(&dir, sequence));
            }
            for (sequence, data) in pushed.retired {
                let path = segment_path(&dir, sequence);
                let written = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, &data));
                match written {
                    Ok(()) => {
                        if !lock(&playlist).spilled(sequence) {
                            let _ = std::fs::remove_file(&path);
                        }
                    }
                    Err(e) => {
                        let _ = std::fs::remove_file(&path);
                        if !failed.swap(true, Ordering::Relaxed) {
                            tracing::warn!(path = %path.display(),
                                "cannot write a retired HLS segment; keeping retired segments in memory: {e}");
                        }
                    }
                }
            }
        });
    }
}

/// What `/metrics` counts of one stream's packaging.
struct PackagingMetrics {
    segments: metrics::Counter,
    /// From the arrival of a segment's last frame to its listing: what the packaging adds to a
    /// viewer's delay.
    listing: metrics::Histogram,
}

impl PackagingMetrics {
    fn new(stream_id: &StreamId) -> Self {
        Self {
            segments: metrics::counter!("oxcast_hls_segments_total", "stream_id" => stream_id.to_string()),
            listing: metrics::histogram!("oxcast_hls_segment_listing_seconds"),
        }
    }
}

/// One stream's packaging task: bus events in, segments into the playlist, `EXT-X-ENDLIST` at the end.
async fn package(
    mut subscriber: Subscriber,
    playlist: Arc<Mutex<Playlist>>,
    spill: Spill,
    mut segmenter: Segmenter,
    metrics: PackagingMetrics,
) {
    tracing::info!("HLS packaging started");
    let mut warned = false;
    let mut warned_forced = false;
    // When the event before the current one arrived: a segment is cut at the frame after its last.
    let mut previous_arrival = Instant::now();
    while let Some(event) = subscriber.recv().await {
        let arrival = Instant::now();
        let last_frame_arrival = std::mem::replace(&mut previous_arrival, arrival);
        if let Some(segment) = segmenter.push(event) {
            if let (Some(why), false) = (segmenter.last_forced.take(), warned_forced) {
                warned_forced = true;
                tracing::warn!(
                    "an HLS segment was closed without a keyframe: {why}; \
                    players show no picture until the next keyframe (logged once per session)"
                );
            }
            let pushed = lock(&playlist).push(segment);
            metrics.segments.increment(1);
            metrics.listing.record(last_frame_arrival.elapsed());
            let raised = pushed.raised_target;
            spill.apply(pushed);
            if let (Some(target), false) = (raised, warned) {
                warned = true;
                tracing::warn!(
                    target_duration_sec = target,
                    "a segment is longer than the HLS segment duration: the encoder's keyframe interval is \
                     too long; set it to the segment duration (e.g. 2 s) for steady latency"
                );
            }
        }
    }
    let mut ended = lock(&playlist);
    if let Some(segment) = segmenter.finish() {
        spill.apply(ended.push(segment));
    }
    ended.end();
    if segmenter.forced_cuts > 0 {
        tracing::warn!(
            segments = segmenter.forced_cuts,
            "HLS segments closed without a keyframe"
        );
    }
    if segmenter.dropped_frames > 0 {
        tracing::warn!(
            frames = segmenter.dropped_frames,
            "malformed video frames were dropped"
        );
    }
    tracing::info!("HLS playlist ended");
}

#[cfg(test)]
mod tests {
    use oxcast_core::StreamBus;

    use super::*;

    /// A stream that goes live again replaces its ended playlist; the old one (and its segments)
    /// must go at once, not when its keep-after-end time is up.
    #[tokio::test]
    async fn a_replaced_ended_playlist_is_not_kept_until_its_timer_ends() {
        let dir = tempfile::tempdir().unwrap();
        let config = HlsConfig {
            segment_duration: Duration::from_secs(2),
            window: 6,
            keep_after_end: Duration::from_secs(3600),
            segment_limits: SegmentLimits::default(),
            max_memory_bytes: 32 << 20,
        };
        let outputs = HlsOutputs::new(config, dir.path().join("hls")).unwrap();
        let id = StreamId::generate();
        let first = Arc::new(StreamBus::new());
        outputs.start(&id, first.subscribe());
        let ended = Arc::downgrade(&outputs.playlist_of(&id).unwrap());
        first.end();
        let second = Arc::new(StreamBus::new());
        outputs.start(&id, second.subscribe());
        // The first session's task sees the end and starts its timer.
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert!(ended.upgrade().is_none(), "the replaced playlist is still held");
        assert!(outputs.playlist_of(&id).is_some());
        second.end();
    }
}
