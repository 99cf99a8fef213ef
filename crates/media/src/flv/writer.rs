//! Writing tags: frames and codec configurations back into the legacy FLV tag bodies RTMP carries
//! (Adobe FLV v10.1 §E.4.2.1 AUDIODATA/AACAUDIODATA, §E.4.3.1 VIDEODATA/AVCVIDEOPACKET).
//!
//! A frame's tag is its [`TagHeader`] followed by the frame's data: the two are kept apart, so
//! the data is sent by reference and never copied to put a few bytes in front of it.
//! Configurations are rare and small, and are built whole.

use bytes::{BufMut, Bytes, BytesMut};

use crate::{AacConfig, AvcConfig, Frame, Track};

/// Frame type (high nibble: 1 keyframe, 2 inter frame) and codec id 7 (AVC).
const AVC_KEYFRAME: u8 = 0x17;
const AVC_INTER: u8 = 0x27;
/// AVCPacketType.
const AVC_SEQUENCE_HEADER: u8 = 0;
const AVC_NALU: u8 = 1;
/// Sound format 10 (AAC); FLV always flags AAC 44 kHz, 16-bit, stereo, and the
/// AudioSpecificConfig says the truth.
const AAC: u8 = 0xAF;
/// AACPacketType.
const AAC_SEQUENCE_HEADER: u8 = 0;
const AAC_RAW: u8 = 1;
/// The composition time is a signed 24-bit field.
const COMPOSITION_TIME: std::ops::RangeInclusive<i64> = -(1 << 23)..=(1 << 23) - 1;

/// The bytes that go in front of a frame's data to make its tag: 5 for video, 2 for audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TagHeader {
    bytes: [u8; 5],
    len: usize,
}

impl TagHeader {
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or_default()
    }
}

/// The AVC sequence header: the decoder configuration record.
pub fn avc_sequence_start(config: &AvcConfig) -> Bytes {
    let mut tag = BytesMut::with_capacity(5 + config.record.len());
    tag.put_slice(&[AVC_KEYFRAME, AVC_SEQUENCE_HEADER, 0, 0, 0]);
    tag.put_slice(&config.record);
    tag.freeze()
}

/// The AAC sequence header: the AudioSpecificConfig.
pub fn aac_sequence_start(config: &AacConfig) -> Bytes {
    let mut tag = BytesMut::with_capacity(2 + config.raw.len());
    tag.put_slice(&[AAC, AAC_SEQUENCE_HEADER]);
    tag.put_slice(&config.raw);
    tag.freeze()
}

/// What goes in front of `frame.data`: an AVC NALU packet header with the frame's composition
/// offset (clamped to what 24 bits hold), or the AAC raw packet header.
pub fn frame_header(frame: &Frame) -> TagHeader {
    match frame.track {
        Track::Video => {
            let offset = (frame.pts - frame.dts).clamp(*COMPOSITION_TIME.start(), *COMPOSITION_TIME.end());
            let [_, c0, c1, c2] = (offset as i32).to_be_bytes();
            let kind = if frame.keyframe { AVC_KEYFRAME } else { AVC_INTER };
            TagHeader {
                bytes: [kind, AVC_NALU, c0, c1, c2],
                len: 5,
            }
        }
        Track::Audio => TagHeader {
            bytes: [AAC, AAC_RAW, 0, 0, 0],
            len: 2,
        },
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::avc::tests::RECORD;
    use crate::{Demuxer, MediaEvent};

    /// A frame's whole tag, as the receiving end sees it once the two parts are on the wire.
    fn tag(frame: &Frame) -> Bytes {
        [frame_header(frame).as_bytes(), &frame.data].concat().into()
    }

    /// A demuxer that has seen our sequence headers, as an RTMP server will have.
    fn configured() -> Demuxer {
        let mut demuxer = Demuxer::new();
        let avc = AvcConfig::parse(Bytes::from_static(RECORD)).unwrap();
        let Ok(Some(MediaEvent::VideoConfig(parsed))) = demuxer.video(0, &avc_sequence_start(&avc)) else {
            panic!("the AVC sequence header demuxes")
        };
        assert_eq!(*parsed, avc);
        let aac = AacConfig::parse(Bytes::from_static(&[0x12, 0x10])).unwrap();
        let Ok(Some(MediaEvent::AudioConfig(parsed))) = demuxer.audio(0, &aac_sequence_start(&aac)) else {
            panic!("the AAC sequence header demuxes")
        };
        assert_eq!(*parsed, aac);
        demuxer
    }

    /// What the ingest demuxes from our tags is what we were given.
    #[test]
    fn tags_demux_back_to_the_same_frames() {
        let mut demuxer = configured();
        let video = Frame {
            track: Track::Video,
            dts: 1000,
            pts: 967,
            keyframe: false,
            data: Bytes::from_static(&[0, 0, 0, 2, 0x41, 0x9a]),
        };
        assert_eq!(frame_header(&video).as_bytes(), &[0x27, 1, 0xff, 0xff, 0xdf]);
        let Ok(Some(MediaEvent::Frame(back))) = demuxer.video(1000, &tag(&video)) else {
            panic!("the frame demuxes")
        };
        assert_eq!(back, video);
        let audio = Frame {
            track: Track::Audio,
            dts: 1021,
            pts: 1021,
            keyframe: true,
            data: Bytes::from_static(&[0x21, 0x10]),
        };
        assert_eq!(frame_header(&audio).as_bytes(), &[0xAF, 1]);
        let Ok(Some(MediaEvent::Frame(back))) = demuxer.audio(1021, &tag(&audio)) else {
            panic!("the audio frame demuxes")
        };
        assert_eq!(back, audio);
    }

    proptest! {
        /// Any frame the bus can carry comes back from its tag, composition offsets of either sign
        /// included.
        #[test]
        fn any_frame_round_trips(
            video in any::<bool>(),
            dts in 0i64..1_000_000,
            offset in prop_oneof![-2000i64..2000, Just(*COMPOSITION_TIME.start()), Just(*COMPOSITION_TIME.end())],
            keyframe in any::<bool>(),
            data in prop::collection::vec(any::<u8>(), 1..200),
        ) {
            let frame = Frame {
                track: if video { Track::Video } else { Track::Audio },
                dts,
                pts: if video { dts + offset } else { dts },
                keyframe: keyframe || !video,
                data: data.into(),
            };
            let mut demuxer = configured();
            // The demuxer unwraps 32-bit timestamps against the last one it saw (0).
            let back = if video {
                demuxer.video(dts as u32, &tag(&frame))
            } else {
                demuxer.audio(dts as u32, &tag(&frame))
            };
            prop_assert_eq!(back, Ok(Some(MediaEvent::Frame(frame))));
        }
    }
}
