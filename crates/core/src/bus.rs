//! The per-stream bus: one publisher's media, fanned out to every output of an active stream.
//!
//! Events sit in one ring that every subscriber reads at its own pace (frames are `Bytes`
//! underneath: fan-out costs a reference count). An event leaves the ring once every subscriber
//! has read it, or when the ring is over its budget — a number of events and a number of bytes
//! ([`BusLimits`]) — so what a slow subscriber makes the bus hold is bounded whatever the frames
//! weigh. A subscriber whose unread events were dropped is told so (a
//! [`BusEvent::Discontinuity`]) and resumes at the next keyframe; it never slows the publisher.
//!
//! The bus also keeps the latest codec configurations and the current GOP, so an output that
//! subscribes late starts on a keyframe instead of waiting for the next one.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use oxcast_media::{Frame, MediaEvent, Track, Tracks};
use tokio::sync::Notify;

use crate::sync;

/// What a stream's bus may hold for subscribers that fall behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusLimits {
    /// Events: 1,024 is about 13 s of 30 fps video with AAC audio.
    pub max_events: usize,
    /// Bytes of the events held (frames' payloads): past it, the slowest subscriber skips ahead.
    pub max_bytes: usize,
}

impl Default for BusLimits {
    fn default() -> Self {
        Self {
            max_events: 1024,
            max_bytes: 64 << 20,
        }
    }
}

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

impl BusEvent {
    /// What the event holds in memory, for the byte budget.
    fn weight(&self) -> usize {
        match self {
            BusEvent::Media(MediaEvent::Frame(frame)) => frame.data.len(),
            BusEvent::Media(MediaEvent::VideoConfig(config)) => config.record.len(),
            BusEvent::Media(MediaEvent::AudioConfig(config)) => config.raw.len(),
            BusEvent::Discontinuity | BusEvent::End => 0,
        }
    }
}

#[derive(Debug, Default)]
struct Snapshot {
    tracks: Tracks,
    /// From the last video keyframe on, audio included; empty for audio-only streams.
    gop: Vec<Frame>,
    gop_bytes: usize,
    ended: bool,
}

#[derive(Debug)]
struct Slot {
    event: BusEvent,
    weight: usize,
    /// Subscribers that have yet to read it.
    unread: usize,
}

/// Events not yet read by every subscriber, oldest first.
#[derive(Debug, Default)]
struct Ring {
    slots: VecDeque<Slot>,
    /// Position (in the stream of every event ever sent) of `slots[0]`.
    head: u64,
    bytes: usize,
    /// Subscribers that read events sent from now on.
    readers: usize,
}

impl Ring {
    fn tail(&self) -> u64 {
        self.head + self.slots.len() as u64
    }

    fn push(&mut self, event: BusEvent, limits: &BusLimits) {
        if self.readers == 0 {
            // Nobody would read it; the snapshot keeps what late subscribers need.
            self.head += 1;
            return;
        }
        let weight = event.weight();
        self.bytes += weight;
        self.slots.push_back(Slot {
            event,
            weight,
            unread: self.readers,
        });
        // Over budget: the oldest events go, unread or not; whoever had not read them lags.
        while self.slots.len() > 1 && (self.slots.len() > limits.max_events || self.bytes > limits.max_bytes)
        {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some(slot) = self.slots.pop_front() {
            self.bytes -= slot.weight;
            self.head += 1;
        }
    }

    /// Events every subscriber has read leave at once, so the ring holds only the backlog.
    fn trim(&mut self) {
        while self.slots.front().is_some_and(|s| s.unread == 0) {
            self.pop_front();
        }
    }

    /// A subscriber at `position` reads the next event, or learns how many it missed.
    fn read(&mut self, position: &mut u64) -> Read {
        if *position < self.head {
            let missed = self.head - *position;
            *position = self.head;
            return Read::Missed(missed);
        }
        let index = usize::try_from(*position - self.head).unwrap_or(usize::MAX);
        let Some(slot) = self.slots.get_mut(index) else {
            return Read::Nothing;
        };
        slot.unread = slot.unread.saturating_sub(1);
        let event = slot.event.clone();
        *position += 1;
        if index == 0 {
            self.trim();
        }
        Read::Event(event)
    }

    /// A subscriber at `position` is gone: it will read nothing more.
    fn leave(&mut self, position: u64) {
        self.readers = self.readers.saturating_sub(1);
        let from = usize::try_from(position.saturating_sub(self.head)).unwrap_or(usize::MAX);
        for slot in self.slots.iter_mut().skip(from) {
            slot.unread = slot.unread.saturating_sub(1);
        }
        self.trim();
    }
}

enum Read {
    Event(BusEvent),
    Missed(u64),
    Nothing,
}

#[derive(Debug, Default)]
struct State {
    snapshot: Snapshot,
    ring: Ring,
}

/// One active stream's media fan-out.
#[derive(Debug)]
pub struct StreamBus {
    limits: BusLimits,
    state: Mutex<State>,
    /// Wakes subscribers waiting for the next event.
    sent: Notify,
}

impl Default for StreamBus {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamBus {
    /// A bus with the default [`BusLimits`].
    pub fn new() -> Self {
        Self::with_limits(BusLimits::default())
    }

    pub fn with_limits(limits: BusLimits) -> Self {
        Self {
            limits,
            state: Mutex::new(State::default()),
            sent: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked: no update spans a panic point.
        sync::lock(&self.state)
    }

    fn send(&self, state: &mut State, event: BusEvent) {
        state.ring.push(event, &self.limits);
        self.sent.notify_waiters();
    }

    /// Publishes one event to every subscriber.
    pub fn publish(&self, event: MediaEvent) {
        let mut state = self.lock();
        if state.snapshot.ended {
            return;
        }
        match &event {
            MediaEvent::Frame(frame) => remember(&mut state.snapshot, frame),
            // Every configuration event goes out; the snapshot keeps the latest of each track.
            config => {
                state.snapshot.tracks.update(config);
            }
        }
        // Under the same lock as the snapshot, so a subscriber's snapshot and its first live
        // event never overlap.
        self.send(&mut state, BusEvent::Media(event));
    }

    /// A new publisher continues the stream: its timestamps start afresh.
    pub fn discontinuity(&self) {
        let mut state = self.lock();
        if state.snapshot.ended {
            return;
        }
        state.snapshot.gop.clear();
        state.snapshot.gop_bytes = 0;
        self.send(&mut state, BusEvent::Discontinuity);
    }

    /// The stream ended: subscribers receive what is queued, then `None`.
    pub fn end(&self) {
        let mut state = self.lock();
        state.snapshot.ended = true;
        state.snapshot.gop.clear();
        state.snapshot.gop_bytes = 0;
        self.send(&mut state, BusEvent::End);
    }

    /// Subscribes: the current configurations and GOP first, then live events.
    pub fn subscribe(self: &Arc<Self>) -> Subscriber {
        let mut state = self.lock();
        let snapshot = &state.snapshot;
        let mut backlog = VecDeque::new();
        let ended = snapshot.ended;
        // Mid-GOP without a cached GOP: start at the next keyframe (configurations come with it).
        let resync = !ended && snapshot.tracks.video.is_some() && snapshot.gop.is_empty();
        if !ended && !resync {
            push_configs(snapshot, &mut backlog);
            backlog.extend(
                snapshot
                    .gop
                    .iter()
                    .map(|f| BusEvent::Media(MediaEvent::Frame(f.clone()))),
            );
        }
        let position = state.ring.tail();
        if !ended {
            state.ring.readers += 1;
        }
        drop(state);
        Subscriber {
            bus: self.clone(),
            backlog,
            position,
            resync,
            ended,
            delivered: false,
            dropped: 0,
        }
    }
}

fn push_configs(snapshot: &Snapshot, backlog: &mut VecDeque<BusEvent>) {
    if let Some(video) = &snapshot.tracks.video {
        backlog.push_back(BusEvent::Media(MediaEvent::VideoConfig(video.clone())));
    }
    if let Some(audio) = &snapshot.tracks.audio {
        backlog.push_back(BusEvent::Media(MediaEvent::AudioConfig(audio.clone())));
    }
}

fn remember(snapshot: &mut Snapshot, frame: &Frame) {
    if snapshot.tracks.video.is_none() {
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
    /// The next event to read from the ring.
    position: u64,
    /// Lagged (or joined mid-GOP): skip to the next keyframe.
    resync: bool,
    /// The end was read (or the bus had ended when this subscribed): no longer one of the ring's
    /// readers.
    ended: bool,
    /// Whether anything was delivered yet: a first resync is a start, not a break.
    delivered: bool,
    /// Events this subscriber missed by falling behind, and frames skipped to the next keyframe.
    dropped: u64,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        if !self.ended {
            self.bus.lock().ring.leave(self.position);
        }
    }
}

impl Subscriber {
    /// Events lost because this subscriber fell behind (dropped before it read them, or
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

    /// The next event of the ring, waiting for one.
    async fn receive(&mut self) -> Read {
        loop {
            // Events often come in bursts (one socket read holds several): take what is there
            // before registering to be woken.
            match self.bus.lock().ring.read(&mut self.position) {
                Read::Nothing => {}
                read => return read,
            }
            let sent = self.bus.sent.notified();
            tokio::pin!(sent);
            // Registered before looking again, so an event sent in between still wakes us.
            sent.as_mut().enable();
            match self.bus.lock().ring.read(&mut self.position) {
                Read::Nothing => {}
                read => return read,
            }
            sent.await;
        }
    }

    async fn next(&mut self) -> Option<BusEvent> {
        if let Some(event) = self.backlog.pop_front() {
            return Some(event);
        }
        if self.ended {
            return None;
        }
        loop {
            let event = match self.receive().await {
                Read::Event(BusEvent::End) => {
                    // The end was read: this subscriber no longer holds anything in the ring.
                    self.ended = true;
                    self.bus.lock().ring.leave(self.position);
                    return None;
                }
                Read::Event(event) => event,
                Read::Missed(missed) => {
                    tracing::debug!(
                        missed,
                        "output fell behind the stream; resuming at the next keyframe"
                    );
                    self.resync = true;
                    self.dropped += missed;
                    continue;
                }
                Read::Nothing => continue,
            };
            if !self.resync {
                return Some(event);
            }
            // Only a frame a decoder can start from ends the wait (any frame of a stream without
            // video); configurations come from the snapshot.
            let state = self.bus.lock();
            let resumes = match &event {
                BusEvent::Media(MediaEvent::Frame(f)) => {
                    (f.track == Track::Video && f.keyframe) || state.snapshot.tracks.video.is_none()
                }
                _ => false,
            };
            if !resumes {
                drop(state);
                // Counted only after a lag: joining mid-GOP is a start, not a loss.
                if self.delivered && matches!(event, BusEvent::Media(MediaEvent::Frame(_))) {
                    self.dropped += 1;
                }
                continue;
            }
            self.resync = false;
            // Configurations may have changed while this subscriber was behind: repeat the current ones.
            let mut configs = VecDeque::new();
            push_configs(&state.snapshot, &mut configs);
            drop(state);
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
    use oxcast_media::AvcConfig;

    const CAPACITY: usize = BusLimits {
        max_events: 1024,
        max_bytes: 64 << 20,
    }
    .max_events;

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

    fn heavy_frame(dts: i64, keyframe: bool, bytes: usize) -> MediaEvent {
        MediaEvent::Frame(Frame {
            track: Track::Video,
            dts,
            pts: dts,
            keyframe,
            data: Bytes::from(vec![0; bytes]),
        })
    }

    fn held(bus: &StreamBus) -> (usize, usize) {
        let state = bus.lock();
        (state.ring.slots.len(), state.ring.bytes)
    }

    /// A subscriber that stops reading must not make the bus hold more than its byte budget,
    /// however large the frames (1,024 frames of 1 MiB would be a gigabyte).
    #[tokio::test]
    async fn a_stalled_subscriber_holds_at_most_the_byte_budget_then_skips_to_a_keyframe() {
        let limits = BusLimits {
            max_events: 1024,
            max_bytes: 8 << 20,
        };
        let bus = Arc::new(StreamBus::with_limits(limits));
        let mut stalled = bus.subscribe();
        bus.publish(avc());
        bus.publish(heavy_frame(0, true, 1 << 20));
        assert!(stalled.recv().await.is_some());
        assert_eq!(dts(&stalled.recv().await.unwrap()), Some(0));
        for i in 1..100 {
            bus.publish(heavy_frame(i, i == 95, 1 << 20));
            let (_, bytes) = held(&bus);
            assert!(bytes <= limits.max_bytes, "{bytes} bytes held after frame {i}");
        }
        bus.end();
        // The oldest frames went unread: a break, the configuration again, and the stream from
        // the next keyframe still held on.
        assert_eq!(stalled.recv().await, Some(BusEvent::Discontinuity));
        assert!(matches!(
            stalled.recv().await,
            Some(BusEvent::Media(MediaEvent::VideoConfig(_)))
        ));
        let mut rest = Vec::new();
        while let Some(event) = stalled.recv().await {
            rest.push(dts(&event).unwrap());
        }
        assert_eq!(rest, (95..100).collect::<Vec<_>>());
        assert_eq!(stalled.dropped(), 94);
    }

    /// Events every subscriber has read are let go at once: the ring holds only the backlog.
    #[tokio::test]
    async fn read_events_are_released_and_a_dropped_subscriber_holds_nothing() {
        let bus = Arc::new(StreamBus::new());
        let mut reader = bus.subscribe();
        let idle = bus.subscribe();
        bus.publish(avc());
        for i in 0..10 {
            bus.publish(heavy_frame(i, i == 0, 1000));
        }
        for _ in 0..11 {
            reader.recv().await.unwrap();
        }
        // The idle subscriber has read nothing: everything is still held for it.
        assert_eq!(held(&bus).0, 11);
        drop(idle);
        assert_eq!(held(&bus), (0, 0));
        bus.publish(heavy_frame(10, false, 1000));
        assert_eq!(held(&bus).0, 1);
        reader.recv().await.unwrap();
        assert_eq!(held(&bus), (0, 0));
        // Without subscribers nothing is held at all.
        drop(reader);
        bus.publish(heavy_frame(11, false, 1000));
        assert_eq!(held(&bus), (0, 0));
    }

    /// A subscriber waiting on an empty bus is woken by the next event, from another task.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiting_subscriber_is_woken_by_each_event() {
        let bus = Arc::new(StreamBus::new());
        let mut sub = bus.subscribe();
        let publisher = {
            let bus = Arc::clone(&bus);
            tokio::spawn(async move {
                // Fewer than the ring holds: however the tasks are scheduled, nothing is dropped.
                for i in 0..1000 {
                    bus.publish(frame(Track::Audio, i, true));
                    if i % 7 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                bus.end();
            })
        };
        let mut count = 0;
        // A lost wake-up would leave the subscriber waiting for ever: fail instead of hanging.
        let received = tokio::time::timeout(std::time::Duration::from_secs(30), async {
            while let Some(event) = sub.recv().await {
                assert_eq!(dts(&event), Some(count));
                count += 1;
            }
        });
        received.await.expect("the subscriber was woken for every event");
        publisher.await.unwrap();
        assert_eq!(count, 1000);
    }
}
