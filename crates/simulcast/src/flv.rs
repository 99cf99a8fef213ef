//! Frames and codec configurations back into the FLV tag bodies RTMP carries: the relay's one copy
//! of each payload.

use bytes::{BufMut, Bytes, BytesMut};
use oxcast_media::{AacConfig, AvcConfig, Frame, Track};

/// AVC, with the frame type in the high nibble.
const AVC_KEYFRAME: u8 = 0x17;
const AVC_INTER: u8 = 0x27;
/// AAC: FLV always flags it 44 kHz, 16-bit, stereo; the AudioSpecificConfig says the truth.
const AAC: u8 = 0xAF;

/// AVC sequence header: the decoder configuration record.
pub(crate) fn video_config(config: &AvcConfig) -> Bytes {
    let mut tag = BytesMut::with_capacity(5 + config.record.len());
    tag.put_slice(&[AVC_KEYFRAME, 0, 0, 0, 0]);
    tag.put_slice(&config.record);
    tag.freeze()
}

/// AAC sequence header: the AudioSpecificConfig.
pub(crate) fn audio_config(config: &AacConfig) -> Bytes {
    let mut tag = BytesMut::with_capacity(2 + config.raw.len());
    tag.put_slice(&[AAC, 0]);
    tag.put_slice(&config.raw);
    tag.freeze()
}

/// A frame's tag body: AVC NALU packet with its composition offset, or AAC raw.
pub(crate) fn frame(frame: &Frame) -> Bytes {
    match frame.track {
        Track::Video => {
            let mut tag = BytesMut::with_capacity(5 + frame.data.len());
            let cts = (frame.pts - frame.dts).clamp(-(1 << 23), (1 << 23) - 1) as i32;
            let [_, c0, c1, c2] = cts.to_be_bytes();
            tag.put_slice(&[
                if frame.keyframe { AVC_KEYFRAME } else { AVC_INTER },
                1,
                c0,
                c1,
                c2,
            ]);
            tag.put_slice(&frame.data);
            tag.freeze()
        }
        Track::Audio => {
            let mut tag = BytesMut::with_capacity(2 + frame.data.len());
            tag.put_slice(&[AAC, 1]);
            tag.put_slice(&frame.data);
            tag.freeze()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxcast_media::{Demuxer, MediaEvent};

    /// What the ingest demuxes from our tags is what we were given.
    #[test]
    fn tags_demux_back_to_the_same_frames() {
        let video = Frame {
            track: Track::Video,
            dts: 1000,
            pts: 967,
            keyframe: false,
            data: Bytes::from_static(&[0, 0, 0, 2, 0x41, 0x9a]),
        };
        let tag = frame(&video);
        assert_eq!(&tag[..5], &[0x27, 1, 0xff, 0xff, 0xdf]);
        let mut demuxer = Demuxer::new();
        let record = Bytes::from_static(&[
            0x01, 0x64, 0x00, 0x1e, 0xff, 0xe1, 0x00, 0x1a, 0x67, 0x64, 0x00, 0x1e, 0xac, 0xd9, 0x40, 0xa0,
            0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00, 0x03, 0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x3c, 0x0f, 0x16,
            0x2d, 0x96, 0x01, 0x00, 0x04, 0x68, 0xef, 0xbc, 0xb0, 0xfd, 0xf8, 0xf8, 0x00,
        ]);
        let config = AvcConfig::parse(record).unwrap();
        let Ok(Some(MediaEvent::VideoConfig(parsed))) = demuxer.video(0, &video_config(&config)) else {
            panic!("the sequence header demuxes")
        };
        assert_eq!(*parsed, config);
        let Ok(Some(MediaEvent::Frame(back))) = demuxer.video(1000, &tag) else {
            panic!("the frame demuxes")
        };
        assert_eq!(back, video);
        let audio = Frame {
            track: Track::Audio,
            dts: 21,
            pts: 21,
            keyframe: true,
            data: Bytes::from_static(&[0x21, 0x10]),
        };
        let aac = AacConfig::parse(Bytes::from_static(&[0x12, 0x10])).unwrap();
        assert!(matches!(
            demuxer.audio(0, &audio_config(&aac)),
            Ok(Some(MediaEvent::AudioConfig(_)))
        ));
        let Ok(Some(MediaEvent::Frame(back))) = demuxer.audio(21, &frame(&audio)) else {
            panic!("the audio frame demuxes")
        };
        assert_eq!(back, audio);
    }
}
