//! Cuts the stream into segments: at the first video keyframe after the target duration (so each
//! segment starts with a keyframe and PAT/PMT), or on time for audio-only streams.
//!
//! An open segment holds its frames (references to the payloads the stream's GOP cache holds
//! anyway) and is muxed to MPEG-TS when it closes, in one pass: holding the growing TS instead
//! would keep every byte of the current GOP twice. Muxing a 2 s segment takes about 0.1 ms.

use std::sync::Arc;
use std::time::SystemTime;

use oxcast_core::BusEvent;
use oxcast_media::{AacConfig, AvcConfig, Frame, MediaEvent, Track};

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
    started_at: SystemTime,
}

/// Turns bus events into finished segments.
#[derive(Debug)]
pub struct Segmenter {
    target_ms: i64,
    video: Option<Arc<AvcConfig>>,
    audio: Option<Arc<AacConfig>>,
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
}

impl Segmenter {
    pub fn new(target_ms: i64) -> Self {
        Self {
            target_ms: target_ms.max(1),
            video: None,
            audio: None,
            muxer: None,
            open: None,
            audio_batch: AudioBatch::default(),
            discontinuity: false,
            tracks_changed: false,
            frame_step_ms: 33,
            last_video_dts: None,
            capacity_hint: 64 * PACKET_LEN,
            dropped_frames: 0,
        }
    }

    /// Feeds one event; returns the segment it closed, if any.
    pub fn push(&mut self, event: BusEvent) -> Option<Segment> {
        match event {
            BusEvent::Media(MediaEvent::VideoConfig(config)) => {
                if self.video.as_deref() != Some(&config) {
                    self.video = Some(config);
                    self.tracks_changed = true;
                }
                None
            }
            BusEvent::Media(MediaEvent::AudioConfig(config)) => {
                if self.audio.as_deref() != Some(&config) {
                    self.audio = Some(config);
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
        self.video.as_ref()?;
        let closed = if frame.keyframe {
            self.cut_if_due(frame.dts)
        } else {
            None
        };
        if let Some(last) = self.last_video_dts.replace(frame.dts) {
            self.frame_step_ms = (frame.dts - last).clamp(1, 1000);
        }
        let open = self.open.as_mut()?;
        open.last_dts = open.last_dts.max(frame.dts);
        // Audio that arrived first is older: it goes out before this frame.
        self.audio_batch.flush(&mut open.content);
        open.content.push(Pes::Video(frame));
        closed
    }

    fn audio_frame(&mut self, frame: Frame) -> Option<Segment> {
        self.audio.as_ref()?;
        // Audio only: every frame is a possible start; cut on time.
        let closed = if self.video.is_none() {
            self.cut_if_due(frame.dts)
        } else {
            None
        };
        // With video, audio waits for the first keyframe's segment.
        let open = self.open.as_mut()?;
        open.last_dts = open.last_dts.max(frame.dts);
        if self.audio_batch.push(frame) {
            self.audio_batch.flush(&mut open.content);
        }
        closed
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
            self.muxer = Some(TsMuxer::new(self.video.clone(), self.audio.clone()));
            self.tracks_changed = false;
        }
        self.open = Some(Open {
            content: Vec::new(),
            start_dts: dts,
            last_dts: dts,
            discontinuity: std::mem::take(&mut self.discontinuity),
            started_at: SystemTime::now(),
        });
    }

    /// Closes the open segment; it lasts until `next_start`, or one frame past its last frame.
    fn close(&mut self, next_start: Option<i64>) -> Option<Segment> {
        let mut open = self.open.take()?;
        self.audio_batch.flush(&mut open.content);
        // The last frame's length: the video frame spacing, or one AAC frame for audio only.
        let step = match (&self.video, &self.audio) {
            (None, Some(audio)) => i64::from(audio.frame_samples()) * 1000 / i64::from(audio.sample_rate),
            _ => self.frame_step_ms,
        };
        let end = next_start.unwrap_or(open.last_dts + step);
        let data = self.mux(open.content);
        Some(Segment {
            duration_ms: (end - open.start_dts).max(1),
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
