//! Cuts the stream into segments: at the first video keyframe after the target duration (so each
//! segment starts with a keyframe and PAT/PMT), or on time for audio-only streams.
//!
//! A publisher that sends no keyframe, or timestamps that do not advance, would keep one segment
//! open, and its frames in memory, for as long as it publishes: a segment is also closed without
//! a keyframe once it holds [`SegmentLimits::max_bytes`] of media or has been open for
//! [`SegmentLimits::max_duration`] (of media time or of wall time). The next segment then starts
//! on whatever frame comes, which players decode once a keyframe arrives.
//!
//! An open segment holds its frames (references to the payloads the stream's GOP cache holds
//! anyway) and is muxed to MPEG-TS when it closes, in one pass: holding the growing TS instead
//! would keep every byte of the current GOP twice. Muxing a 2 s segment takes about 0.1 ms.

use std::time::{Duration, Instant};

use oxcast_core::BusEvent;
use oxcast_core::clock::now_ms;
use oxcast_media::timeline::DEFAULT_FRAME_STEP_MS;
use oxcast_media::{Frame, MediaEvent, Track, Tracks};

use crate::playlist::Segment;
use crate::ts::{MAX_AUDIO_PES_PAYLOAD, PACKET_LEN, TsMuxer};

/// AAC frames per PES packet: about 100 ms at 48 kHz, fewer PES headers without hurting latency.
const AUDIO_FRAMES_PER_PES: usize = 5;

/// What the open segment will contain, in order.
#[derive(Debug)]
enum Pes {
    Video(Frame),
    /// AAC frames that share one PES packet.
    Audio(Vec<Frame>),
}

#[derive(Debug)]
struct Open {
    content: Vec<Pes>,
    start_dts: i64,
    last_dts: i64,
    discontinuity: bool,
    /// Unix epoch milliseconds.
    started_at: i64,
    /// When it opened, for the wall-time bound.
    opened: Instant,
    /// Media bytes in it.
    bytes: usize,
}

/// When a segment is closed even without a keyframe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentLimits {
    pub max_bytes: usize,
    pub max_duration: Duration,
}

impl Default for SegmentLimits {
    fn default() -> Self {
        Self {
            max_bytes: 16 << 20,
            max_duration: Duration::from_secs(10),
        }
    }
}

/// Why a segment was closed without a keyframe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForcedCut {
    /// It reached [`SegmentLimits::max_bytes`].
    Size,
    /// It lasted [`SegmentLimits::max_duration`] of media time without a keyframe.
    NoKeyframe,
    /// It was open for [`SegmentLimits::max_duration`] of wall time: the timestamps do not advance.
    StalledTimestamps,
}

impl std::fmt::Display for ForcedCut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ForcedCut::Size => "it reached hls.max_segment_bytes without a keyframe",
            ForcedCut::NoKeyframe => "the encoder sent no keyframe for hls.max_segment_sec",
            ForcedCut::StalledTimestamps => {
                "the encoder's timestamps did not advance for hls.max_segment_sec of wall time"
            }
        })
    }
}

/// Turns bus events into finished segments.
#[derive(Debug)]
pub struct Segmenter {
    target_ms: i64,
    limits: SegmentLimits,
    /// The last segment was closed without a keyframe: the next frame, whatever it is, opens one.
    open_on_any_frame: bool,
    tracks: Tracks,
    muxer: Option<TsMuxer>,
    open: Option<Open>,
    audio_batch: AudioBatch,
    /// The next segment starts a new program (codecs changed) or follows a break.
    discontinuity: bool,
    tracks_changed: bool,
    /// Video frame spacing, to give the last segment of a stream its duration.
    frame_step_ms: i64,
    last_video_dts: Option<i64>,
    /// Expected bytes per segment, so buffers are allocated once.
    capacity_hint: usize,
    /// Frames that could not be muxed (a malformed NAL unit length): counted, not fatal.
    pub dropped_frames: u64,
    /// Segments closed without a keyframe, and why the last one was.
    pub forced_cuts: u64,
    pub last_forced: Option<ForcedCut>,
}

impl Segmenter {
    pub fn new(target_ms: i64) -> Self {
        Self::with_limits(target_ms, SegmentLimits::default())
    }

    pub fn with_limits(target_ms: i64, limits: SegmentLimits) -> Self {
        Self {
            target_ms: target_ms.max(1),
            limits,
            open_on_any_frame: false,
            tracks: Tracks::default(),
            muxer: None,
            open: None,
            audio_batch: AudioBatch::default(),
            discontinuity: false,
            tracks_changed: false,
            frame_step_ms: DEFAULT_FRAME_STEP_MS,
            last_video_dts: None,
            capacity_hint: 64 * PACKET_LEN,
            dropped_frames: 0,
            forced_cuts: 0,
            last_forced: None,
        }
    }

    /// Feeds one event; returns the segment it closed, if any.
    pub fn push(&mut self, event: BusEvent) -> Option<Segment> {
        match event {
            BusEvent::Media(config @ (MediaEvent::VideoConfig(_) | MediaEvent::AudioConfig(_))) => {
                if self.tracks.update(&config) {
                    self.tracks_changed = true;
                }
                None
            }
            BusEvent::Discontinuity => {
                let closed = self.close(None);
                if closed.is_some() {
                    self.discontinuity = true;
                }
                // A new publisher starts from scratch: its configurations come again.
                self.muxer = None;
                self.tracks_changed = true;
                self.last_video_dts = None;
                closed
            }
            BusEvent::End => self.finish(),
            BusEvent::Media(MediaEvent::Frame(frame)) => match frame.track {
                Track::Video => self.video_frame(frame),
                Track::Audio => self.audio_frame(frame),
            },
        }
    }

    /// Closes the open segment at the end of the stream.
    pub fn finish(&mut self) -> Option<Segment> {
        self.close(None)
    }

    fn video_frame(&mut self, frame: Frame) -> Option<Segment> {
        self.tracks.video.as_ref()?;
        let closed = if frame.keyframe {
            self.cut_if_due(frame.dts)
        } else {
            None
        };
        if let Some(last) = self.last_video_dts.replace(frame.dts) {
            self.frame_step_ms = (frame.dts - last).clamp(1, 1000);
        }
        self.open_if_forced(frame.dts);
        let open = self.open.as_mut()?;
        open.last_dts = open.last_dts.max(frame.dts);
        open.bytes += frame.data.len();
        // Audio that arrived first is older: it goes out before this frame.
        self.audio_batch.flush(&mut open.content);
        open.content.push(Pes::Video(frame));
        closed.or_else(|| self.cut_if_over_limits())
    }

    fn audio_frame(&mut self, frame: Frame) -> Option<Segment> {
        self.tracks.audio.as_ref()?;
        // Audio only: every frame is a possible start; cut on time.
        let closed = if self.tracks.video.is_none() {
            self.cut_if_due(frame.dts)
        } else {
            None
        };
        self.open_if_forced(frame.dts);
        // With video, audio waits for the first keyframe's segment.
        let open = self.open.as_mut()?;
        open.last_dts = open.last_dts.max(frame.dts);
        open.bytes += frame.data.len();
        if self.audio_batch.push(frame) {
            self.audio_batch.flush(&mut open.content);
        }
        closed.or_else(|| self.cut_if_over_limits())
    }

    /// After a segment closed without a keyframe, the next frame opens the next one.
    fn open_if_forced(&mut self, dts: i64) {
        if self.open.is_none() && std::mem::take(&mut self.open_on_any_frame) {
            self.start(dts);
        }
    }

    /// Closes the open segment, keyframe or not, when it is over a limit.
    fn cut_if_over_limits(&mut self) -> Option<Segment> {
        let open = self.open.as_ref()?;
        let limits = self.limits;
        let max_ms = i64::try_from(limits.max_duration.as_millis()).unwrap_or(i64::MAX);
        let why = if open.bytes >= limits.max_bytes {
            ForcedCut::Size
        } else if open.last_dts - open.start_dts >= max_ms {
            ForcedCut::NoKeyframe
        } else if open.opened.elapsed() >= limits.max_duration {
            ForcedCut::StalledTimestamps
        } else {
            return None;
        };
        self.forced_cuts += 1;
        self.last_forced = Some(why);
        self.open_on_any_frame = true;
        self.close(None)
    }

    /// At a possible segment start: closes the open segment and starts the next when the target
    /// duration is reached (or none is open, or the codecs changed).
    fn cut_if_due(&mut self, dts: i64) -> Option<Segment> {
        let due = self
            .open
            .as_ref()
            .is_none_or(|o| dts - o.start_dts >= self.target_ms);
        if !due && !self.tracks_changed {
            return None;
        }
        let closed = self.close(Some(dts));
        self.start(dts);
        closed
    }

    fn start(&mut self, dts: i64) {
        if self.tracks_changed || self.muxer.is_none() {
            // A change of codecs mid-stream is a new program: players must reset their decoders.
            if self.muxer.is_some() {
                self.discontinuity = true;
            }
            self.muxer = Some(TsMuxer::new(self.tracks.video.clone(), self.tracks.audio.clone()));
            self.tracks_changed = false;
        }
        self.open = Some(Open {
            content: Vec::new(),
            start_dts: dts,
            last_dts: dts,
            discontinuity: std::mem::take(&mut self.discontinuity),
            started_at: now_ms(),
            opened: Instant::now(),
            bytes: 0,
        });
    }

    /// Closes the open segment; it lasts until `next_start`, or one frame past its last frame.
    fn close(&mut self, next_start: Option<i64>) -> Option<Segment> {
        let mut open = self.open.take()?;
        self.audio_batch.flush(&mut open.content);
        // The last frame's length: the video frame spacing, or one AAC frame for audio only.
        let step = match (&self.tracks.video, &self.tracks.audio) {
            (None, Some(audio)) => i64::from(audio.frame_samples()) * 1000 / i64::from(audio.sample_rate),
            _ => self.frame_step_ms,
        };
        let end = next_start.unwrap_or(open.last_dts + step);
        // Timestamps that did not move say nothing of the segment's length: the wall clock does.
        let duration_ms = if open.last_dts > open.start_dts || next_start.is_some() {
            end - open.start_dts
        } else {
            i64::try_from(open.opened.elapsed().as_millis()).unwrap_or(i64::MAX)
        };
        let data = self.mux(open.content);
        Some(Segment {
            duration_ms: duration_ms.max(1),
            discontinuity: open.discontinuity,
            started_at: open.started_at,
            data: data.into(),
        })
    }

    /// The segment's transport stream: PAT/PMT, then its PES packets in order.
    fn mux(&mut self, content: Vec<Pes>) -> Vec<u8> {
        // Unused capacity costs address space only: the pages of a buffer this large are not
        // touched (nor resident) until written.
        let mut buf = Vec::with_capacity(self.capacity_hint);
        if let Some(muxer) = &mut self.muxer {
            muxer.write_tables(&mut buf);
            for pes in content {
                match pes {
                    Pes::Video(frame) => {
                        if muxer.write_video(&frame, &mut buf).is_err() {
                            self.dropped_frames += 1;
                        }
                    }
                    Pes::Audio(frames) => muxer.write_audio(&frames, &mut buf),
                }
            }
        }
        self.capacity_hint = buf.len() + buf.len() / 4;
        buf
    }
}

/// AAC frames waiting to share one PES packet.
#[derive(Debug, Default)]
struct AudioBatch {
    frames: Vec<Frame>,
    /// Their PES payload: each frame plus its 7-byte ADTS header.
    bytes: usize,
}

impl AudioBatch {
    /// Adds a frame; true when the batch is full and should be flushed.
    fn push(&mut self, frame: Frame) -> bool {
        self.bytes += frame.data.len() + 7;
        self.frames.push(frame);
        self.frames.len() >= AUDIO_FRAMES_PER_PES || self.bytes > MAX_AUDIO_PES_PAYLOAD / 2
    }

    fn flush(&mut self, content: &mut Vec<Pes>) {
        if !self.frames.is_empty() {
            content.push(Pes::Audio(std::mem::take(&mut self.frames)));
            self.bytes = 0;
        }
    }
}
