//! Reading tags: RTMP audio/video message payloads classified, legacy and Enhanced RTMP, and the
//! tags of an FLV file. Parsing slices the message's `Bytes`: no payload is copied.

use bytes::Bytes;

use crate::MediaError;

/// Video codecs by their E-RTMP FourCC; AVC also by its legacy codec id 7.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    Avc,
    Hevc,
    Av1,
    Vp9,
    /// Any other legacy codec id or FourCC: carried, not decoded.
    Other([u8; 4]),
}

impl VideoCodec {
    fn from_fourcc(fourcc: [u8; 4]) -> Self {
        match &fourcc {
            b"avc1" => VideoCodec::Avc,
            b"hvc1" => VideoCodec::Hevc,
            b"av01" => VideoCodec::Av1,
            b"vp09" => VideoCodec::Vp9,
            _ => VideoCodec::Other(fourcc),
        }
    }
}

/// A video tag, classified.
#[derive(Debug, Clone, PartialEq)]
pub enum VideoTag {
    /// The decoder configuration (AVCDecoderConfigurationRecord for AVC, hvcC for HEVC, ...).
    SequenceStart {
        codec: VideoCodec,
        config: Bytes,
    },
    /// One coded frame. For AVC/HEVC `data` is length-prefixed NAL units.
    Frame {
        codec: VideoCodec,
        keyframe: bool,
        composition_time: i32,
        data: Bytes,
    },
    SequenceEnd {
        codec: VideoCodec,
    },
    /// Video info/command frames, metadata, multitrack and other packets: nothing to show.
    Other,
}

/// A sign-extended 24-bit big-endian integer (composition time offsets can be negative).
fn si24(b: &[u8]) -> Option<i32> {
    let [b0, b1, b2] = *b.get(..3)? else { return None };
    Some(i32::from_be_bytes([b0, b1, b2, 0]) >> 8)
}

fn short(what: &'static str) -> MediaError {
    MediaError::Truncated(what)
}

/// Classifies an RTMP video message payload.
pub fn parse_video(payload: &Bytes) -> Result<VideoTag, MediaError> {
    let first = *payload.first().ok_or(short("video tag"))?;
    if first & 0x80 != 0 {
        return parse_ex_video(payload, first);
    }
    let frame_type = first >> 4;
    let codec_id = first & 0x0F;
    // Frame type 5 is a video info/command frame, not a picture.
    if frame_type == 5 {
        return Ok(VideoTag::Other);
    }
    let keyframe = frame_type == 1;
    let codec = match codec_id {
        7 => VideoCodec::Avc,
        // 12 is the pre-E-RTMP HEVC id some Chinese CDNs and encoders use.
        12 => VideoCodec::Hevc,
        other => VideoCodec::Other([0, 0, 0, other]),
    };
    if !matches!(codec, VideoCodec::Avc | VideoCodec::Hevc) {
        let data = payload.slice(1..);
        return Ok(VideoTag::Frame {
            codec,
            keyframe,
            composition_time: 0,
            data,
        });
    }
    let packet_type = *payload.get(1).ok_or(short("AVC packet type"))?;
    let composition_time = si24(payload.get(2..).unwrap_or_default()).ok_or(short("composition time"))?;
    let body = payload.slice(5..);
    Ok(match packet_type {
        0 => VideoTag::SequenceStart { codec, config: body },
        1 => VideoTag::Frame {
            codec,
            keyframe,
            composition_time,
            data: body,
        },
        2 => VideoTag::SequenceEnd { codec },
        _ => VideoTag::Other,
    })
}

/// E-RTMP: bit 7 set, frame type in bits 4-6, packet type in bits 0-3, then a FourCC.
fn parse_ex_video(payload: &Bytes, first: u8) -> Result<VideoTag, MediaError> {
    let frame_type = (first >> 4) & 0x07;
    let packet_type = first & 0x0F;
    let fourcc: [u8; 4] = payload
        .get(1..5)
        .and_then(|b| b.try_into().ok())
        .ok_or(short("FourCC"))?;
    let codec = VideoCodec::from_fourcc(fourcc);
    let keyframe = frame_type == 1;
    Ok(match (packet_type, frame_type) {
        (_, 5) => VideoTag::Other,
        (0, _) => VideoTag::SequenceStart {
            codec,
            config: payload.slice(5..),
        },
        // CodedFrames: AVC and HEVC carry a composition time; other codecs do not.
        (1, _) if matches!(codec, VideoCodec::Avc | VideoCodec::Hevc) => {
            let composition_time =
                si24(payload.get(5..).unwrap_or_default()).ok_or(short("composition time"))?;
            VideoTag::Frame {
                codec,
                keyframe,
                composition_time,
                data: payload.slice(8..),
            }
        }
        (1, _) | (3, _) => VideoTag::Frame {
            codec,
            keyframe,
            composition_time: 0,
            data: payload.slice(5..),
        },
        (2, _) => VideoTag::SequenceEnd { codec },
        _ => VideoTag::Other,
    })
}

/// Audio codecs: AAC by its legacy sound format 10; others carried undecoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioCodec {
    Aac,
    /// Legacy sound format (MP3 = 2, ...) or, for E-RTMP audio, a FourCC.
    Other([u8; 4]),
}

/// An audio tag, classified.
#[derive(Debug, Clone, PartialEq)]
pub enum AudioTag {
    /// AAC AudioSpecificConfig.
    AacConfig(Bytes),
    /// One raw AAC frame (no ADTS header).
    AacFrame(Bytes),
    /// Another codec's data, passed through.
    Other { codec: AudioCodec, data: Bytes },
}

/// Classifies an RTMP audio message payload.
pub fn parse_audio(payload: &Bytes) -> Result<AudioTag, MediaError> {
    let first = *payload.first().ok_or(short("audio tag"))?;
    let format = first >> 4;
    match format {
        10 => {
            let packet_type = *payload.get(1).ok_or(short("AAC packet type"))?;
            let body = payload.slice(2..);
            Ok(if packet_type == 0 {
                AudioTag::AacConfig(body)
            } else {
                AudioTag::AacFrame(body)
            })
        }
        // E-RTMP audio (sound format 9): a packet type, then a FourCC.
        9 => {
            let fourcc: [u8; 4] = payload
                .get(1..5)
                .and_then(|b| b.try_into().ok())
                .ok_or(short("FourCC"))?;
            Ok(AudioTag::Other {
                codec: AudioCodec::Other(fourcc),
                data: payload.slice(5..),
            })
        }
        other => Ok(AudioTag::Other {
            codec: AudioCodec::Other([0, 0, 0, other]),
            data: payload.slice(1..),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_avc_tags() {
        let config = Bytes::from_static(&[0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1F]);
        assert_eq!(
            parse_video(&config).unwrap(),
            VideoTag::SequenceStart {
                codec: VideoCodec::Avc,
                config: Bytes::from_static(&[1, 0x64, 0, 0x1F])
            }
        );
        // Inter frame with a negative composition time (-1 = 0xFFFFFF).
        let frame = Bytes::from_static(&[0x27, 1, 0xFF, 0xFF, 0xFF, 0, 0, 0, 1, 9]);
        assert_eq!(
            parse_video(&frame).unwrap(),
            VideoTag::Frame {
                codec: VideoCodec::Avc,
                keyframe: false,
                composition_time: -1,
                data: Bytes::from_static(&[0, 0, 0, 1, 9])
            }
        );
        assert_eq!(
            parse_video(&Bytes::from_static(&[0x17, 2, 0, 0, 0])).unwrap(),
            VideoTag::SequenceEnd {
                codec: VideoCodec::Avc
            }
        );
        assert_eq!(
            parse_video(&Bytes::from_static(&[0x57, 0])).unwrap(),
            VideoTag::Other
        );
    }

    #[test]
    fn enhanced_rtmp_tags_are_recognised() {
        let start = Bytes::from_static(b"\x90hvc1\x01\x02");
        assert_eq!(
            parse_video(&start).unwrap(),
            VideoTag::SequenceStart {
                codec: VideoCodec::Hevc,
                config: Bytes::from_static(&[1, 2])
            }
        );
        let coded = Bytes::from_static(b"\x91hvc1\x00\x00\x21\x00\x00\x00\x02\xAA\xBB");
        assert!(matches!(parse_video(&coded).unwrap(),
            VideoTag::Frame { codec: VideoCodec::Hevc, keyframe: true, composition_time: 33, data } if data.len() == 6));
        let av1 = Bytes::from_static(b"\xA3av01\x12\x00");
        assert!(matches!(
            parse_video(&av1).unwrap(),
            VideoTag::Frame {
                codec: VideoCodec::Av1,
                keyframe: false,
                composition_time: 0,
                ..
            }
        ));
    }

    #[test]
    fn aac_tags() {
        assert_eq!(
            parse_audio(&Bytes::from_static(&[0xAF, 0, 0x11, 0x90])).unwrap(),
            AudioTag::AacConfig(Bytes::from_static(&[0x11, 0x90]))
        );
        assert_eq!(
            parse_audio(&Bytes::from_static(&[0xAF, 1, 0x21])).unwrap(),
            AudioTag::AacFrame(Bytes::from_static(&[0x21]))
        );
        assert!(matches!(
            parse_audio(&Bytes::from_static(&[0x2F, 0xFF])).unwrap(),
            AudioTag::Other { .. }
        ));
    }

    #[test]
    fn short_tags_are_errors() {
        for bytes in [&[][..], &[0x17], &[0x17, 1, 0], &[0x90, b'h']] {
            assert!(parse_video(&Bytes::copy_from_slice(bytes)).is_err(), "{bytes:?}");
        }
        for bytes in [&[][..], &[0xAF], &[0x90, b'O']] {
            assert!(parse_audio(&Bytes::copy_from_slice(bytes)).is_err(), "{bytes:?}");
        }
    }
}

/// One tag of an FLV file (Adobe FLV v10.1 §E.4.1): what a publisher replays as RTMP messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileTag {
    /// 8 audio, 9 video, 18 script data.
    pub kind: u8,
    /// Milliseconds.
    pub timestamp: u32,
    pub body: Bytes,
}

/// The tags of an FLV file, bodies as slices of `file`. A truncated last tag is left out.
pub fn file_tags(file: &Bytes) -> Result<Vec<FileTag>, MediaError> {
    if file.get(..3) != Some(b"FLV") {
        return Err(MediaError::Truncated("FLV signature"));
    }
    let header_len = file
        .get(5..9)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
        .unwrap_or(9) as usize;
    let mut tags = Vec::new();
    // The header, then a 4-byte PreviousTagSize0.
    let mut at = header_len + 4;
    while let Some(&[kind, s0, s1, s2, t0, t1, t2, t3, ..]) = file.get(at..at + 11) {
        let size = u32::from_be_bytes([0, s0, s1, s2]) as usize;
        let body = at + 11..at + 11 + size;
        if body.end > file.len() {
            break;
        }
        // The fourth timestamp byte extends the other three upward (§E.4.1).
        let timestamp = u32::from_be_bytes([t3, t0, t1, t2]);
        tags.push(FileTag {
            kind: kind & 0x1F,
            timestamp,
            body: file.slice(body.clone()),
        });
        at = body.end + 4;
    }
    Ok(tags)
}

#[cfg(test)]
mod file_tests {
    use super::*;

    #[test]
    fn the_fixture_file_has_its_tags() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/fixtures/rtmp/source.flv"
        );
        let file =
            Bytes::from(std::fs::read(path).unwrap_or_else(|e| {
                panic!("fixture {path}: {e} (../shared must sit beside the repository)")
            }));
        let tags = file_tags(&file).unwrap();
        let count = |kind| tags.iter().filter(|t| t.kind == kind).count();
        // 120 frames + the AVC configuration + end of sequence; 189 frames + the AAC configuration.
        assert_eq!((count(9), count(8), count(18)), (122, 190, 1));
        assert!(tags.windows(2).all(|w| w[1].timestamp + 100 >= w[0].timestamp));
        assert!(file_tags(&Bytes::from_static(b"MP4")).is_err());
    }
}
