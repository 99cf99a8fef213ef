//! The per-stream bus: one publisher's media, fanned out to every output of an active stream.
//!
//! A `tokio::sync::broadcast` carries the events (frames are `Bytes` underneath: fan-out costs a
//! reference count). The bus also keeps the latest codec configurations and the current GOP, so an
//! output that subscribes late starts on a keyframe instead of waiting for the next one. A
//! subscriber that falls behind is told so (a [`BusEvent::Discontinuity`]) and resumes at the next
//! keyframe; it never slows the publisher.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use oxcast_media::{AacConfig, AvcConfig, Frame, MediaEvent, Track};
use tokio::sync::broadcast;

/// Events a subscriber can hold before it lags: about 13 s of 30 fps video with AAC audio.
const CAPACITY: usize = 1024;
/// The GOP kept for late subscribers is dropped past this size (an encoder with a very long
/// keyframe interval): late subscribers then wait for the next keyframe.
const MAX_GOP_BYTES: usize = 16 << 20;

/// What travels on the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusEvent {
    Media(MediaEvent),
    /// Continuity is broken: a new publisher (timestamps restart) or this subscriber lagged.
    Discontinuity,
    /// The stream went idle; nothing follows.
    End,
}

#[derive(Debug, Default)]
struct Snapshot {
    video: Option<Arc<AvcConfig>>,
    audio: Option<Arc<AacConfig>>,
    /// From the last video keyframe on, audio included; empty for audio-only streams.
    gop: Vec<Frame>,
    gop_bytes: usize,
    ended: bool,
}

/// One active stream's media fan-out.
#[derive(Debug)]
pub struct StreamBus {
    tx: broadcast::Sender<BusEvent>,
    snapshot: Mutex<Snapshot>,
}

impl Default for StreamBus {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamBus {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(CAPACITY);
        Self {
            tx,
            snapshot: Mutex::new(Snapshot::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Snapshot> {
        // The snapshot stays consistent even if a holder panicked: every update is one assignment.
        self.snapshot
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Publishes one event to every subscriber.
    pub fn publish(&self, event: MediaEvent) {
        let mut snapshot = self.lock();
        if snapshot.ended {
            return;
        }
        match &event {
            MediaEvent::VideoConfig(config) => snapshot.video = Some(config.clone()),
            MediaEvent::AudioConfig(config) => snapshot.audio = Some(config.clone()),
            MediaEvent::Frame(frame) => remember(&mut snapshot, frame),
        }
        // Sent under the lock, so a subscriber's snapshot and its first live event never overlap.
        let _ = self.tx.send(BusEvent::Media(event));
    }

    /// A new publisher continues the stream: its timestamps start afresh.
    pub fn discontinuity(&self) {
        let mut snapshot = self.lock();
        if snapshot.ended {
            return;
        }
        snapshot.gop.clear();
        snapshot.gop_bytes = 0;
        let _ = self.tx.send(BusEvent::Discontinuity);
    }

    /// The stream ended: subscribers receive what is queued, then `None`.
    pub fn end(&self) {
        let mut snapshot = self.lock();
        snapshot.ended = true;
        snapshot.gop.clear();
        let _ = self.tx.send(BusEvent::End);
    }

    /// Subscribes: the current configurations and GOP first, then live events.
    pub fn subscribe(self: &Arc<Self>) -> Subscriber {
        let snapshot = self.lock();
        let rx = self.tx.subscribe();
        let mut backlog = VecDeque::new();
        let ended = snapshot.ended;
        // Mid-GOP without a cached GOP: start at the next keyframe (configurations come with it).
        let resync = !ended && snapshot.video.is_some() && snapshot.gop.is_empty();
        if !ended && !resync {
            push_configs(&snapshot, &mut backlog);
            backlog.extend(
                snapshot
                    .gop
                    .iter()
                    .map(|f| BusEvent::Media(MediaEvent::Frame(f.clone()))),
            );
        }
        drop(snapshot);
        Subscriber {
            bus: self.clone(),
            backlog,
            rx,
            resync,
            ended,
            delivered: false,
            dropped: 0,
        }
    }
}

fn push_configs(snapshot: &Snapshot, backlog: &mut VecDeque<BusEvent>) {
    if let Some(video) = &snapshot.video {
        backlog.push_back(BusEvent::Media(MediaEvent::VideoConfig(video.clone())));
    }
    if let Some(audio) = &snapshot.audio {
        backlog.push_back(BusEvent::Media(MediaEvent::AudioConfig(audio.clone())));
    }
}

fn remember(snapshot: &mut Snapshot, frame: &Frame) {
    if snapshot.video.is_none() {
        return;
    }
    if frame.track == Track::Video && frame.keyframe {
        snapshot.gop.clear();
        snapshot.gop_bytes = 0;
    } else if snapshot.gop.is_empty() {
        return;
    }
    snapshot.gop_bytes += frame.data.len();
    if snapshot.gop_bytes > MAX_GOP_BYTES {
        snapshot.gop.clear();
        snapshot.gop_bytes = 0;
        return;
    }
    snapshot.gop.push(frame.clone());
}

/// One output's view of the bus.
#[derive(Debug)]
pub struct Subscriber {
    bus: Arc<StreamBus>,
    backlog: VecDeque<BusEvent>,
    rx: broadcast::Receiver<BusEvent>,
    /// Lagged (or joined mid-GOP): skip to the next keyframe.
    resync: bool,
    ended: bool,
    /// Whether anything was delivered yet: a first resync is a start, not a break.
    delivered: bool,
    /// Events this subscriber missed by falling behind, and frames skipped to the next keyframe.
    dropped: u64,
}

impl Subscriber {
    /// Events lost because this subscriber fell behind (overwritten before it read them, or
    /// skipped while waiting for the next keyframe).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The next event; `None` once the stream has ended.
    pub async fn recv(&mut self) -> Option<BusEvent> {
        let event = self.next().await;
        self.delivered |= event.is_some();
        event
    }

    async fn next(&mut self) -> Option<BusEvent> {
        if let Some(event) = self.backlog.pop_front() {
            return Some(event);
        }
        if self.ended {
            return None;
        }
        loop {
            let event = match self.rx.recv().await {
                Ok(BusEvent::End) | Err(broadcast::error::RecvError::Closed) => {
                    self.ended = true;
                    return None;
                }
                Ok(event) => event,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(
                        missed,
                        "output fell behind the stream; resuming at the next keyframe"
                    );
                    self.resync = true;
                    self.dropped += missed;
                    continue;
                }
            };
            if !self.resync {
                return Some(event);
            }
            // Only a frame a decoder can start from ends the wait (any frame of a stream without
            // video); configurations come from the snapshot.
            let resumes = match &event {
                BusEvent::Media(MediaEvent::Frame(f)) => {
                    (f.track == Track::Video && f.keyframe) || self.bus.lock().video.is_none()
                }
                _ => false,
            };
            if !resumes {
                // Counted only after a lag: joining mid-GOP is a start, not a loss.
                if self.delivered && matches!(event, BusEvent::Media(MediaEvent::Frame(_))) {
                    self.dropped += 1;
                }
                continue;
            }
            self.resync = false;
            // Configurations may have changed while this subscriber was behind: repeat the current ones.
            let mut configs = VecDeque::new();
            push_configs(&self.bus.lock(), &mut configs);
            configs.push_back(event);
            self.backlog = configs;
            if !self.delivered {
                return self.backlog.pop_front();
            }
            return Some(BusEvent::Discontinuity);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn frame(track: Track, dts: i64, keyframe: bool) -> MediaEvent {
        MediaEvent::Frame(Frame {
            track,
            dts,
            pts: dts,
            keyframe,
            data: Bytes::from_static(b"x"),
        })
    }

    fn avc() -> MediaEvent {
        const RECORD: &[u8] = &[
            0x01, 0x64, 0x00, 0x1e, 0xff, 0xe1, 0x00, 0x1a, 0x67, 0x64, 0x00, 0x1e, 0xac, 0xd9, 0x40, 0xa0,
            0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00, 0x03, 0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x3c, 0x0f, 0x16,
            0x2d, 0x96, 0x01, 0x00, 0x04, 0x68, 0xef, 0xbc, 0xb0, 0xfd, 0xf8, 0xf8, 0x00,
        ];
        MediaEvent::VideoConfig(Arc::new(AvcConfig::parse(Bytes::from_static(RECORD)).unwrap()))
    }

    fn dts(event: &BusEvent) -> Option<i64> {
        match event {
            BusEvent::Media(MediaEvent::Frame(f)) => Some(f.dts),
            _ => None,
        }
    }

    #[tokio::test]
    async fn a_late_subscriber_starts_with_configs_and_the_current_gop() {
        let bus = Arc::new(StreamBus::new());
        bus.publish(avc());
        bus.publish(frame(Track::Video, 0, true));
        bus.publish(frame(Track::Video, 33, false));
        bus.publish(frame(Track::Video, 66, true));
        bus.publish(frame(Track::Audio, 70, true));
        let mut sub = bus.subscribe();
        bus.publish(frame(Track::Video, 100, false));
        bus.end();
        assert!(matches!(
            sub.recv().await,
            Some(BusEvent::Media(MediaEvent::VideoConfig(_)))
        ));
        let mut seen = Vec::new();
        while let Some(event) = sub.recv().await {
            seen.push(dts(&event).unwrap());
        }
        assert_eq!(seen, [66, 70, 100]);
    }

    #[tokio::test]
    async fn a_lagging_subscriber_resumes_at_a_keyframe_after_a_discontinuity() {
        let bus = Arc::new(StreamBus::new());
        let mut sub = bus.subscribe();
        bus.publish(avc());
        bus.publish(frame(Track::Video, 0, true));
        assert!(matches!(
            sub.recv().await,
            Some(BusEvent::Media(MediaEvent::VideoConfig(_)))
        ));
        assert_eq!(dts(&sub.recv().await.unwrap()), Some(0));
        for i in 1..(CAPACITY as i64 + 10) {
            bus.publish(frame(Track::Video, i, i % 300 == 0));
        }
        bus.end();
        // Frames were overwritten in the ring: after the break come the configuration and a keyframe.
        assert_eq!(sub.recv().await, Some(BusEvent::Discontinuity));
        assert!(matches!(
            sub.recv().await,
            Some(BusEvent::Media(MediaEvent::VideoConfig(_)))
        ));
        let first = sub.recv().await.unwrap();
        assert_eq!(dts(&first), Some(300));
        let mut last = 300;
        while let Some(event) = sub.recv().await {
            let d = dts(&event).unwrap();
            assert_eq!(d, last + 1);
            last = d;
        }
        assert_eq!(last, CAPACITY as i64 + 9);
        // Frames 1 to 299: overwritten in the ring, then skipped to the keyframe.
        assert_eq!(sub.dropped(), 299);
    }

    #[tokio::test]
    async fn audio_only_streams_need_no_keyframe_and_end_reaches_everyone() {
        let bus = Arc::new(StreamBus::new());
        let mut sub = bus.subscribe();
        bus.publish(frame(Track::Audio, 1, true));
        bus.discontinuity();
        bus.publish(frame(Track::Audio, 0, true));
        bus.end();
        assert_eq!(dts(&sub.recv().await.unwrap()), Some(1));
        assert_eq!(sub.recv().await, Some(BusEvent::Discontinuity));
        assert_eq!(dts(&sub.recv().await.unwrap()), Some(0));
        assert_eq!(sub.recv().await, None);
        assert!(bus.subscribe().recv().await.is_none());
    }
}
