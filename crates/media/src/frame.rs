//! The media model every output consumes: codec configurations and frames with 64-bit timestamps,
//! and the demuxer that turns one publisher's RTMP audio/video messages into them.

use std::sync::Arc;

use bytes::Bytes;

use crate::MediaError;
use crate::aac::AacConfig;
use crate::avc::AvcConfig;
use crate::flv::{AudioTag, VideoCodec, VideoTag, parse_audio, parse_video};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Track {
    Video,
    Audio,
}

/// One coded frame. Timestamps are milliseconds on the publisher's clock, unwrapped to 64 bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub track: Track,
    /// Decode time.
    pub dts: i64,
    /// Presentation time: `dts` plus the composition offset, which may be negative.
    pub pts: i64,
    /// A video frame a decoder can start from (IDR). Audio frames are all key frames.
    pub keyframe: bool,
    /// Video: length-prefixed NAL units (AVCC). Audio: one raw AAC frame.
    pub data: Bytes,
}

/// What a publisher's stream is made of, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    VideoConfig(Arc<AvcConfig>),
    AudioConfig(Arc<AacConfig>),
    Frame(Frame),
}

/// Extends 32-bit millisecond timestamps (which wrap after 49.7 days) to 64 bits: a step back of
/// more than half the range is a wrap, anything smaller is jitter between audio and video.
#[derive(Debug, Default, Clone)]
pub struct TimestampUnwrapper {
    last: Option<u32>,
    base: i64,
}

impl TimestampUnwrapper {
    pub fn unwrap(&mut self, timestamp: u32) -> i64 {
        if let Some(last) = self.last {
            let step = timestamp.wrapping_sub(last) as i32;
            if step >= 0 && timestamp < last {
                self.base += 1 << 32;
            } else if step < 0 && timestamp > last {
                self.base -= 1 << 32;
            }
        }
        self.last = Some(timestamp);
        self.base + i64::from(timestamp)
    }
}

/// Turns RTMP audio/video payloads of one publisher into [`MediaEvent`]s: H.264 and AAC now; other
/// codecs are recognised and skipped (the caller learns which from [`Demuxer::skipped`]).
#[derive(Debug, Default)]
pub struct Demuxer {
    clock: TimestampUnwrapper,
    video: Option<Arc<AvcConfig>>,
    audio: Option<Arc<AacConfig>>,
    skipped: Option<String>,
    dropped_frames: u64,
}

impl Demuxer {
    pub fn new() -> Self {
        Self::default()
    }

    /// The last codec that was skipped as unsupported, for a log line.
    pub fn skipped(&self) -> Option<&str> {
        self.skipped.as_deref()
    }

    /// Frames no output can use: before their track's configuration, empty, or of a codec that is
    /// not supported.
    pub fn dropped_frames(&self) -> u64 {
        self.dropped_frames
    }

    /// A video message. A configuration equal to the current one yields nothing (encoders repeat it).
    pub fn video(&mut self, timestamp: u32, payload: &Bytes) -> Result<Option<MediaEvent>, MediaError> {
        let dts = self.clock.unwrap(timestamp);
        Ok(match parse_video(payload)? {
            VideoTag::SequenceStart {
                codec: VideoCodec::Avc,
                config,
            } => {
                if self.video.as_ref().is_some_and(|c| c.record == config) {
                    return Ok(None);
                }
                let config = Arc::new(AvcConfig::parse(config)?);
                self.video = Some(config.clone());
                Some(MediaEvent::VideoConfig(config))
            }
            VideoTag::Frame {
                codec: VideoCodec::Avc,
                keyframe,
                composition_time,
                data,
            } => {
                // Frames before a configuration cannot be decoded by anyone.
                if self.video.is_none() || data.is_empty() {
                    self.dropped_frames += 1;
                    return Ok(None);
                }
                let pts = dts + i64::from(composition_time);
                Some(MediaEvent::Frame(Frame {
                    track: Track::Video,
                    dts,
                    pts,
                    keyframe,
                    data,
                }))
            }
            VideoTag::SequenceStart { codec, .. } => {
                self.skipped = Some(format!("video codec {codec:?}"));
                None
            }
            VideoTag::Frame { codec, .. } => {
                self.skipped = Some(format!("video codec {codec:?}"));
                self.dropped_frames += 1;
                None
            }
            VideoTag::SequenceEnd { .. } | VideoTag::Other => None,
        })
    }

    /// An audio message.
    pub fn audio(&mut self, timestamp: u32, payload: &Bytes) -> Result<Option<MediaEvent>, MediaError> {
        let dts = self.clock.unwrap(timestamp);
        Ok(match parse_audio(payload)? {
            AudioTag::AacConfig(raw) => {
                if self.audio.as_ref().is_some_and(|c| c.raw == raw) {
                    return Ok(None);
                }
                let config = Arc::new(AacConfig::parse(raw)?);
                self.audio = Some(config.clone());
                Some(MediaEvent::AudioConfig(config))
            }
            AudioTag::AacFrame(data) => {
                if self.audio.is_none() || data.is_empty() {
                    self.dropped_frames += 1;
                    return Ok(None);
                }
                Some(MediaEvent::Frame(Frame {
                    track: Track::Audio,
                    dts,
                    pts: dts,
                    keyframe: true,
                    data,
                }))
            }
            AudioTag::Other { codec, .. } => {
                self.skipped = Some(format!("audio codec {codec:?}"));
                self.dropped_frames += 1;
                None
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::avc::tests::RECORD;

    #[test]
    fn timestamps_unwrap_across_the_32_bit_boundary_and_tolerate_jitter() {
        let mut clock = TimestampUnwrapper::default();
        assert_eq!(clock.unwrap(u32::MAX - 10), i64::from(u32::MAX) - 10);
        assert_eq!(clock.unwrap(5), (1 << 32) + 5);
        // Audio slightly behind video, across the wrap.
        assert_eq!(clock.unwrap(u32::MAX - 2), i64::from(u32::MAX) - 2);
        assert_eq!(clock.unwrap(40), (1 << 32) + 40);
        assert_eq!(clock.unwrap(30), (1 << 32) + 30);
    }

    #[test]
    fn demuxer_yields_configs_once_and_frames_with_composition_offsets() {
        let mut demuxer = Demuxer::new();
        let mut config = vec![0x17, 0, 0, 0, 0];
        config.extend_from_slice(RECORD);
        let config = Bytes::from(config);
        // A frame before any configuration is dropped.
        let frame = Bytes::from_static(&[0x17, 1, 0, 0, 66, 0, 0, 0, 1, 0x65]);
        assert_eq!(demuxer.video(0, &frame).unwrap(), None);
        assert!(
            matches!(demuxer.video(0, &config).unwrap(), Some(MediaEvent::VideoConfig(c)) if c.width == 640)
        );
        assert_eq!(demuxer.video(0, &config).unwrap(), None);
        let Some(MediaEvent::Frame(f)) = demuxer.video(100, &frame).unwrap() else {
            panic!()
        };
        assert_eq!(
            (f.dts, f.pts, f.keyframe, f.track),
            (100, 166, true, Track::Video)
        );
        let aac = Bytes::from_static(&[0xAF, 0, 0x11, 0x90]);
        assert!(
            matches!(demuxer.audio(0, &aac).unwrap(), Some(MediaEvent::AudioConfig(c)) if c.sample_rate == 48000)
        );
        let Some(MediaEvent::Frame(a)) = demuxer.audio(110, &Bytes::from_static(&[0xAF, 1, 0x21])).unwrap()
        else {
            panic!()
        };
        assert_eq!((a.dts, a.track, &a.data[..]), (110, Track::Audio, &[0x21][..]));
        assert_eq!(
            demuxer
                .video(120, &Bytes::from_static(b"\x91hvc1\x00\x00\x00\x01"))
                .unwrap(),
            None
        );
        assert_eq!(demuxer.skipped(), Some("video codec Hevc"));
    }
}
