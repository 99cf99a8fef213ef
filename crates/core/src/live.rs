//! What a live stream is doing now, measured where the bytes pass: the ingest measures what it
//! receives ([`InputMeter`], shown through [`LiveInput`]), each output what it makes. The API reads
//! the figures through the registry and the output traits; nothing here is stored.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use oxcast_media::{AacConfig, AvcConfig, Frame, Track};

use crate::sync::lock;

/// The span of the measured rates: bitrate and frame rate over the last five seconds.
pub const RATE_WINDOW_MS: i64 = 5_000;

/// How often (in media time) the input's figures are published for readers.
const SAMPLE_EVERY_MS: i64 = 1_000;

/// Who is publishing.
#[derive(Clone, Debug, PartialEq)]
pub struct PublisherInfo {
    /// The encoder's address, `ip:port`.
    pub address: String,
    /// Unix epoch milliseconds of the accepted publish.
    pub connected_at: i64,
    /// The encoder's name, from `onMetaData` (`encoder`) or the connect command (`flashVer`).
    pub encoder: Option<String>,
}

/// The video being received.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VideoStats {
    /// RFC 6381 codec string, e.g. `avc1.64001f`.
    pub codec: String,
    pub width: u32,
    pub height: u32,
    /// Frames per second of media time, over the last five seconds.
    pub fps: f64,
    /// Over the last five seconds of media time.
    pub bitrate_kbps: f64,
    /// Between the last two keyframes.
    pub keyframe_interval_sec: Option<f64>,
}

/// The audio being received.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AudioStats {
    /// RFC 6381 codec string, e.g. `mp4a.40.2`.
    pub codec: String,
    pub sample_rate: u32,
    pub channels: u8,
    /// Over the last five seconds of media time.
    pub bitrate_kbps: f64,
}

/// What the current publisher sends, as last measured (about once a second).
#[derive(Clone, Debug, PartialEq)]
pub struct LiveInput {
    pub publisher: PublisherInfo,
    pub video: Option<VideoStats>,
    pub audio: Option<AudioStats>,
    /// Bytes read from the encoder's connection since the publish, RTMP framing included.
    pub bytes_in: u64,
    /// Media messages the server could not use (malformed, or a codec it does not take).
    pub dropped_frames: u64,
}

/// The input figures readers see: written by the ingest connection about once a second.
#[derive(Debug)]
pub struct InputBoard(Mutex<LiveInput>);

impl InputBoard {
    pub fn new(publisher: PublisherInfo) -> Arc<Self> {
        Arc::new(Self(Mutex::new(LiveInput {
            publisher,
            video: None,
            audio: None,
            bytes_in: 0,
            dropped_frames: 0,
        })))
    }

    /// The figures as last published.
    pub fn snapshot(&self) -> LiveInput {
        lock(&self.0).clone()
    }

    fn update(&self, change: impl FnOnce(&mut LiveInput)) {
        change(&mut lock(&self.0));
    }
}

/// A running total sampled over time, giving its rate over the last [`RATE_WINDOW_MS`].
#[derive(Debug, Default, Clone)]
pub struct RateWindow {
    /// `(time_ms, total)`, oldest first, spanning at most the window.
    samples: VecDeque<(i64, u64)>,
}

impl RateWindow {
    /// Records the total at `time_ms`. Samples are expected about once a second; a time that goes
    /// backwards (a new publisher's clock) starts the window afresh.
    pub fn record(&mut self, time_ms: i64, total: u64) {
        if self.samples.back().is_some_and(|&(t, _)| time_ms < t) {
            self.samples.clear();
        }
        self.samples.push_back((time_ms, total));
        while self
            .samples
            .get(1)
            .is_some_and(|&(t, _)| time_ms - t >= RATE_WINDOW_MS)
        {
            self.samples.pop_front();
        }
    }

    /// Units per second over the window; `None` until two samples a moment apart exist.
    pub fn per_second(&self) -> Option<f64> {
        let (&(t0, v0), &(t1, v1)) = (self.samples.front()?, self.samples.back()?);
        let span = t1 - t0;
        (span > 0).then(|| v1.saturating_sub(v0) as f64 * 1000.0 / span as f64)
    }
}

/// One track's counts, kept by the connection that receives it.
#[derive(Debug, Default)]
struct TrackMeter {
    frames: u64,
    bytes: u64,
    frame_rate: RateWindow,
    byte_rate: RateWindow,
    next_sample_ms: Option<i64>,
    last_keyframe_ms: Option<i64>,
    keyframe_interval_ms: Option<i64>,
}

impl TrackMeter {
    /// Counts a frame; true when a sample was taken (about once a second of media time).
    fn frame(&mut self, frame: &Frame) -> bool {
        self.frames += 1;
        self.bytes += frame.data.len() as u64;
        if frame.keyframe {
            if let Some(last) = self.last_keyframe_ms.filter(|&last| frame.dts > last) {
                self.keyframe_interval_ms = Some(frame.dts - last);
            }
            self.last_keyframe_ms = Some(frame.dts);
        }
        let due = self
            .next_sample_ms
            .is_none_or(|at| frame.dts >= at || frame.dts < at - 2 * SAMPLE_EVERY_MS);
        if due {
            self.frame_rate.record(frame.dts, self.frames);
            self.byte_rate.record(frame.dts, self.bytes);
            self.next_sample_ms = Some(frame.dts + SAMPLE_EVERY_MS);
        }
        due
    }

    fn kbps(&self) -> f64 {
        self.byte_rate
            .per_second()
            .map_or(0.0, |b| round1(b * 8.0 / 1000.0))
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Measures one publisher's input and publishes the figures to its [`InputBoard`]. Owned by the
/// connection: counting a frame is a few additions; the board is written about once a second.
#[derive(Debug)]
pub struct InputMeter {
    board: Arc<InputBoard>,
    video: TrackMeter,
    audio: TrackMeter,
    video_config: Option<Arc<AvcConfig>>,
    audio_config: Option<Arc<AacConfig>>,
    bytes_in: u64,
    /// Media messages that could not be parsed.
    unusable: u64,
    /// Frames the demuxer dropped (before a configuration, or of a codec not supported).
    skipped: u64,
}

impl InputMeter {
    pub fn new(board: Arc<InputBoard>) -> Self {
        Self {
            board,
            video: TrackMeter::default(),
            audio: TrackMeter::default(),
            video_config: None,
            audio_config: None,
            bytes_in: 0,
            unusable: 0,
            skipped: 0,
        }
    }

    /// Bytes read from the connection.
    pub fn received(&mut self, bytes: usize) {
        self.bytes_in += bytes as u64;
    }

    /// A media message that could not be parsed.
    pub fn unusable(&mut self) {
        self.unusable += 1;
    }

    /// The demuxer's count of frames it dropped so far.
    pub fn skipped(&mut self, total: u64) {
        self.skipped = total;
    }

    /// The encoder named itself.
    pub fn encoder(&self, name: &str) {
        let name: String = name.chars().take(200).collect();
        self.board.update(|input| input.publisher.encoder = Some(name));
    }

    pub fn video_config(&mut self, config: &Arc<AvcConfig>) {
        self.video_config = Some(config.clone());
        self.publish();
    }

    pub fn audio_config(&mut self, config: &Arc<AacConfig>) {
        self.audio_config = Some(config.clone());
        self.publish();
    }

    pub fn frame(&mut self, frame: &Frame) {
        let sampled = match frame.track {
            Track::Video => self.video.frame(frame),
            // With video, the board follows the video's samples.
            Track::Audio => self.audio.frame(frame) && self.video_config.is_none(),
        };
        if sampled {
            self.publish();
        }
    }

    /// Writes the current figures to the board.
    pub fn publish(&self) {
        let video = self.video_config.as_ref().map(|config| VideoStats {
            codec: config.codec_string(),
            width: config.width,
            height: config.height,
            fps: self.video.frame_rate.per_second().map_or(0.0, round1),
            bitrate_kbps: self.video.kbps(),
            keyframe_interval_sec: self.video.keyframe_interval_ms.map(|ms| ms as f64 / 1000.0),
        });
        let audio = self.audio_config.as_ref().map(|config| AudioStats {
            codec: config.codec_string(),
            sample_rate: config.sample_rate,
            channels: config.channels,
            bitrate_kbps: self.audio.kbps(),
        });
        let (bytes_in, dropped_frames) = (self.bytes_in, self.unusable + self.skipped);
        self.board.update(|input| {
            input.video = video;
            input.audio = audio;
            input.bytes_in = bytes_in;
            input.dropped_frames = dropped_frames;
        });
    }
}

/// An HLS output's figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HlsStats {
    /// Segments made in this session.
    pub segments: u64,
    /// Unix epoch milliseconds of the newest segment's listing.
    pub last_segment_at: Option<i64>,
}

/// The recording in progress.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordingStats {
    /// Bytes written so far.
    pub bytes: u64,
    /// Media time recorded so far.
    pub duration_ms: u64,
}

/// Reads the archive output's recordings in progress, so `api` depends on `core` alone.
pub trait RecordingSource: Send + Sync + 'static {
    /// The recording a stream is making now, if any.
    fn recording(&self, stream_id: &crate::StreamId) -> Option<RecordingStats>;
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn frame(track: Track, dts: i64, keyframe: bool, len: usize) -> Frame {
        Frame {
            track,
            dts,
            pts: dts,
            keyframe,
            data: Bytes::from(vec![0u8; len]),
        }
    }

    #[test]
    fn a_rate_is_measured_over_the_last_five_seconds() {
        let mut window = RateWindow::default();
        assert_eq!(window.per_second(), None);
        for second in 0..=20 {
            // 100 a second for ten seconds, then 300 a second.
            let total = if second <= 10 {
                second * 100
            } else {
                1000 + (second - 10) * 300
            };
            window.record(second * 1000, total as u64);
        }
        assert_eq!(window.per_second(), Some(300.0));
    }

    #[test]
    fn a_clock_that_goes_back_starts_the_window_afresh() {
        let mut window = RateWindow::default();
        window.record(10_000, 1000);
        window.record(11_000, 2000);
        window.record(0, 2000);
        assert_eq!(window.per_second(), None);
        window.record(1000, 2500);
        assert_eq!(window.per_second(), Some(500.0));
    }

    #[test]
    fn the_meter_reports_frame_rate_bitrate_and_keyframe_interval() {
        let board = InputBoard::new(PublisherInfo {
            address: "127.0.0.1:5000".into(),
            connected_at: 0,
            encoder: None,
        });
        let mut meter = InputMeter::new(board.clone());
        // 30 fps, 12,500 bytes a frame (3 Mbit/s), a keyframe every 2 s, for 10 s.
        for n in 0..300i64 {
            let dts = n * 1000 / 30;
            meter.frame(&frame(Track::Video, dts, n % 60 == 0, 12_500));
        }
        meter.received(4_000_000);
        meter.unusable();
        meter.skipped(2);
        meter.encoder("Lavf59.27.100");
        meter.publish();
        let live = board.snapshot();
        assert_eq!(live.publisher.encoder.as_deref(), Some("Lavf59.27.100"));
        assert_eq!(live.bytes_in, 4_000_000);
        assert_eq!(live.dropped_frames, 3);
        // No configuration yet: no video figures to show.
        assert_eq!(live.video, None);
        let meter_video = &meter.video;
        let fps = meter_video.frame_rate.per_second().unwrap();
        assert!((fps - 30.0).abs() < 0.5, "fps {fps}");
        let kbps = meter_video.kbps();
        assert!((kbps - 3000.0).abs() < 60.0, "kbps {kbps}");
        assert_eq!(meter_video.keyframe_interval_ms, Some(2000));
    }
}
