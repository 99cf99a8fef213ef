//! The HLS output: each active stream's media, muxed to MPEG-TS, cut into keyframe-aligned segments
//! and listed in a live playlist (RFC 8216), all in memory. [`HlsOutputs`] is the
//! [`oxcast_core::HlsSource`] the HTTP delivery reads.

pub mod playlist;
pub mod segmenter;
pub mod ts;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use oxcast_core::{HlsSource, StreamId, Subscriber};

use crate::playlist::Playlist;
use crate::segmenter::Segmenter;

/// Segment length and window, from the `hls.*` settings.
#[derive(Debug, Clone, Copy)]
pub struct HlsConfig {
    pub segment_duration: Duration,
    /// Segments listed in the playlist.
    pub window: usize,
}

/// Every stream's playlist. A stream keeps its last playlist (ended) until it goes live again.
#[derive(Debug)]
pub struct HlsOutputs {
    config: HlsConfig,
    playlists: Mutex<HashMap<StreamId, Arc<Mutex<Playlist>>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update leaves the state whole, so a panic elsewhere does not make it unusable.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl HlsOutputs {
    pub fn new(config: HlsConfig) -> Self {
        Self {
            config,
            playlists: Mutex::new(HashMap::new()),
        }
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
            let clock = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let previous = playlists.get(stream_id).map_or(0, |p| lock(p).next_sequence());
            let first = clock.max(previous);
            let playlist = Arc::new(Mutex::new(Playlist::new(
                prefix,
                self.config.window,
                target_sec,
                first,
            )));
            playlists.insert(stream_id.clone(), playlist.clone());
            playlist
        };
        let target_ms = self.config.segment_duration.as_millis() as i64;
        tokio::spawn(package(stream_id.clone(), subscriber, playlist, target_ms));
    }

    /// Forgets a deleted stream: its playlist and segments answer 404 from now on.
    pub fn remove(&self, stream_id: &StreamId) {
        lock(&self.playlists).remove(stream_id);
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

    fn segment(&self, stream_id: &StreamId, sequence: u64) -> Option<Bytes> {
        let playlist = self.playlist_of(stream_id)?;
        lock(&playlist).segment(sequence)
    }
}

/// One stream's packaging task: bus events in, segments into the playlist, `EXT-X-ENDLIST` at the end.
async fn package(
    stream_id: StreamId,
    mut subscriber: Subscriber,
    playlist: Arc<Mutex<Playlist>>,
    target_ms: i64,
) {
    let mut segmenter = Segmenter::new(target_ms);
    let mut warned = false;
    while let Some(event) = subscriber.recv().await {
        if let Some(segment) = segmenter.push(event) {
            let raised = lock(&playlist).push(segment);
            if let (Some(target), false) = (raised, warned) {
                warned = true;
                tracing::warn!(stream_id = %stream_id, target_duration_sec = target,
                    "a segment is longer than the HLS segment duration: the encoder's keyframe interval is \
                     too long; set it to the segment duration (e.g. 2 s) for steady latency");
            }
        }
    }
    let mut playlist = lock(&playlist);
    if let Some(segment) = segmenter.finish() {
        playlist.push(segment);
    }
    playlist.end();
    if segmenter.dropped_frames > 0 {
        tracing::warn!(stream_id = %stream_id, frames = segmenter.dropped_frames, "malformed video frames were dropped");
    }
    tracing::debug!(stream_id = %stream_id, "HLS playlist ended");
}
