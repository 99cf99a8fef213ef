//! The init segment of a live recording: `ftyp` and a `moov` whose tracks have sample
//! descriptions and empty sample tables, with `mvex` announcing fragments (ISO 14496-12 §8.8).

use oxcast_media::{AacConfig, AvcConfig};

use crate::mp4::box_writer::BoxWriter;
use crate::mp4::movie::{self, Handler, LANGUAGE_UNDETERMINED, TrackHeader};
use crate::mp4::{AUDIO_TRACK_ID, Tracks, VIDEO_TIMESCALE, VIDEO_TRACK_ID};

/// `ftyp` and `moov` of a fragmented recording of `tracks`.
pub fn init_segment(tracks: &Tracks) -> Vec<u8> {
    let mut w = BoxWriter::with_capacity(1024);
    // iso6: 64-bit tfdt and signed composition offsets in trun.
    let mut brands: Vec<&[u8; 4]> = vec![b"isom", b"iso6", b"mp41"];
    if tracks.video.is_some() {
        brands.push(b"avc1");
    }
    movie::ftyp(&mut w, &brands);
    w.begin(b"moov");
    movie::mvhd(&mut w, 0, AUDIO_TRACK_ID + 1);
    let headers = track_headers(tracks);
    for (header, config) in &headers {
        w.begin(b"trak");
        movie::tkhd(&mut w, header, 0);
        w.begin(b"mdia");
        movie::mdhd(&mut w, header, 0);
        movie::hdlr(&mut w, header.handler);
        w.begin(b"minf");
        movie::media_information_header(&mut w, header.handler);
        w.begin(b"stbl");
        sample_description(&mut w, config);
        for empty in [b"stts", b"stsc", b"stco"] {
            w.begin_full(empty, 0, 0);
            w.u32(0);
            w.end();
        }
        w.begin_full(b"stsz", 0, 0);
        w.u32(0); // sample_size
        w.u32(0); // sample_count
        w.end();
        w.end(); // stbl
        w.end(); // minf
        w.end(); // mdia
        w.end(); // trak
    }
    w.begin(b"mvex");
    for (header, _) in &headers {
        w.begin_full(b"trex", 0, 0);
        w.u32(header.id);
        w.u32(1); // sample description index
        w.zeros(12); // default duration, size, flags: every trun says its own
        w.end();
    }
    w.end();
    w.end(); // moov
    // Nothing here nears 4 GiB: a configuration comes in one RTMP message (at most 16 MiB).
    w.finish().unwrap_or_default()
}

/// A track's codec configuration, for its sample entry.
enum Config<'a> {
    Avc(&'a AvcConfig),
    Aac(&'a AacConfig),
}

fn track_headers(tracks: &Tracks) -> Vec<(TrackHeader, Config<'_>)> {
    let mut headers = Vec::with_capacity(2);
    if let Some(avc) = &tracks.video {
        headers.push((
            TrackHeader {
                id: VIDEO_TRACK_ID,
                handler: Handler::Video,
                timescale: VIDEO_TIMESCALE,
                width: fixed_16_16(avc.width),
                height: fixed_16_16(avc.height),
                volume: 0,
                language: LANGUAGE_UNDETERMINED,
            },
            Config::Avc(avc),
        ));
    }
    if let Some(aac) = &tracks.audio {
        headers.push((
            TrackHeader {
                id: AUDIO_TRACK_ID,
                handler: Handler::Audio,
                timescale: aac.sample_rate,
                width: 0,
                height: 0,
                volume: 0x0100,
                language: LANGUAGE_UNDETERMINED,
            },
            Config::Aac(aac),
        ));
    }
    headers
}

fn fixed_16_16(pixels: u32) -> u32 {
    pixels.min(0xFFFF) << 16
}

/// `stsd` with the track's one sample entry (§8.5.2).
fn sample_description(w: &mut BoxWriter, config: &Config<'_>) {
    w.begin_full(b"stsd", 0, 0);
    w.u32(1);
    match config {
        Config::Avc(avc) => avc1(w, avc),
        Config::Aac(aac) => mp4a(w, aac),
    }
    w.end();
}

/// `avc1` (ISO 14496-15 §5.4.2): a VisualSampleEntry with the decoder configuration record as
/// received. In-band parameter sets may still appear (encoders repeat them at IDRs), which avc1
/// allows when they equal the record's.
fn avc1(w: &mut BoxWriter, avc: &AvcConfig) {
    w.begin(b"avc1");
    sample_entry_header(w);
    w.zeros(2 + 2 + 12); // pre_defined, reserved, pre_defined
    w.u16(u16::try_from(avc.width).unwrap_or(u16::MAX));
    w.u16(u16::try_from(avc.height).unwrap_or(u16::MAX));
    w.u32(0x0048_0000); // 72 dpi
    w.u32(0x0048_0000);
    w.u32(0);
    w.u16(1); // frame_count
    w.zeros(32); // compressorname
    w.u16(0x0018); // depth: colour, no alpha
    w.u16(0xFFFF); // pre_defined = -1
    w.leaf(b"avcC", &avc.record);
    w.end();
}

/// `mp4a` (ISO 14496-14 §6.7): an AudioSampleEntry with an `esds` (§5.6).
fn mp4a(w: &mut BoxWriter, aac: &AacConfig) {
    w.begin(b"mp4a");
    sample_entry_header(w);
    w.zeros(8);
    // Channel configuration 7 is 7.1: eight channels (ISO 14496-3 Table 1.19).
    w.u16(if aac.channels == 7 {
        8
    } else {
        u16::from(aac.channels)
    });
    w.u16(16); // samplesize
    w.zeros(4); // pre_defined, reserved
    // 16.16 fixed point; a rate above 65535 cannot be said here, and the decoder config has it.
    w.u32(u32::from(u16::try_from(aac.sample_rate).unwrap_or(0)) << 16);
    esds(w, aac);
    w.end();
}

/// The 6 reserved bytes and data_reference_index of every SampleEntry (§8.5.2.2).
fn sample_entry_header(w: &mut BoxWriter) {
    w.zeros(6);
    w.u16(1);
}

/// `esds`: an ES_Descriptor holding a DecoderConfigDescriptor (MPEG-4 audio, with the
/// AudioSpecificConfig as DecoderSpecificInfo) and an SLConfigDescriptor (ISO 14496-1 §7.2.6).
fn esds(w: &mut BoxWriter, aac: &AacConfig) {
    // Descriptor tags (ISO 14496-1 §7.2.2.1).
    const ES: u8 = 0x03;
    const DECODER_CONFIG: u8 = 0x04;
    const DECODER_SPECIFIC: u8 = 0x05;
    const SL_CONFIG: u8 = 0x06;
    let asc = &aac.raw[..];
    // DecoderConfigDescriptor body: 13 fixed bytes, then DecoderSpecificInfo.
    let decoder_config_len = 13 + 5 + asc.len();
    // ES_Descriptor body: ES_ID, flags, then the two descriptors.
    let es_len = 3 + (5 + decoder_config_len) + (5 + 1);
    w.begin_full(b"esds", 0, 0);
    descriptor_header(w, ES, es_len);
    w.u16(0); // ES_ID: zero in MP4 files (ISO 14496-14 §3.1.2)
    w.u8(0); // no dependency, URL or OCR stream
    descriptor_header(w, DECODER_CONFIG, decoder_config_len);
    w.u8(0x40); // objectTypeIndication: MPEG-4 Audio
    w.u8((0x05 << 2) | 1); // streamType audio, upStream 0, reserved 1
    w.u24(0); // bufferSizeDB
    w.u32(0); // maxBitrate
    w.u32(0); // avgBitrate: 0 for variable bit rate
    descriptor_header(w, DECODER_SPECIFIC, asc.len());
    w.bytes(asc);
    descriptor_header(w, SL_CONFIG, 1);
    w.u8(2); // predefined: reserved for MP4 files
    w.end();
}

/// A descriptor tag and its size in the 4-byte expandable form (ISO 14496-1 §8.3.3): 7 bits a byte,
/// the high bit saying more follow. The fixed width keeps the layout independent of the size.
fn descriptor_header(w: &mut BoxWriter, tag: u8, len: usize) {
    let len = u32::try_from(len).unwrap_or(u32::MAX).min((1 << 28) - 1);
    w.u8(tag);
    w.u8(0x80 | ((len >> 21) & 0x7F) as u8);
    w.u8(0x80 | ((len >> 14) & 0x7F) as u8);
    w.u8(0x80 | ((len >> 7) & 0x7F) as u8);
    w.u8((len & 0x7F) as u8);
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::mp4::box_reader::{children, require};

    /// An x264 record (640x360, High profile, level 3.0).
    pub(crate) const AVC_RECORD: &[u8] = &[
        0x01, 0x64, 0x00, 0x1e, 0xff, 0xe1, 0x00, 0x1a, 0x67, 0x64, 0x00, 0x1e, 0xac, 0xd9, 0x40, 0xa0, 0x2f,
        0xf9, 0x70, 0x11, 0x00, 0x00, 0x03, 0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x3c, 0x0f, 0x16, 0x2d, 0x96,
        0x01, 0x00, 0x04, 0x68, 0xef, 0xbc, 0xb0, 0xfd, 0xf8, 0xf8, 0x00,
    ];

    pub(crate) fn tracks() -> Tracks {
        Tracks {
            video: Some(Arc::new(
                AvcConfig::parse(Bytes::from_static(AVC_RECORD)).unwrap(),
            )),
            audio: Some(Arc::new(
                AacConfig::parse(Bytes::from_static(&[0x11, 0x90])).unwrap(),
            )),
        }
    }

    fn path<'a>(data: &'a [u8], path: &[&[u8; 4]]) -> &'a [u8] {
        path.iter()
            .fold(data, |data, kind| require(data, kind).unwrap().body)
    }

    #[test]
    fn init_segment_has_both_tracks_and_their_configs() {
        let init = init_segment(&tracks());
        let top: Vec<_> = children(&init).map(|b| b.unwrap().kind).collect();
        assert_eq!(top, [*b"ftyp", *b"moov"]);
        let moov = path(&init, &[b"moov"]);
        let traks: Vec<_> = children(moov)
            .map(|b| b.unwrap())
            .filter(|b| &b.kind == b"trak")
            .collect();
        assert_eq!(traks.len(), 2);
        let trexes = children(path(moov, &[b"mvex"])).count();
        assert_eq!(trexes, 2);

        let video_stsd = path(traks[0].body, &[b"mdia", b"minf", b"stbl", b"stsd"]);
        let avc1 = require(&video_stsd[8..], b"avc1").unwrap();
        // width and height at offsets 24 and 26 of the VisualSampleEntry body
        assert_eq!(&avc1.body[24..28], &[0x02, 0x80, 0x01, 0x68]);
        assert_eq!(require(&avc1.body[78..], b"avcC").unwrap().body, AVC_RECORD);
        let tkhd = path(traks[0].body, &[b"tkhd"]);
        assert_eq!(&tkhd[tkhd.len() - 8..], &[0x02, 0x80, 0, 0, 0x01, 0x68, 0, 0]);

        let audio_mdia = path(traks[1].body, &[b"mdia"]);
        let mdhd = path(audio_mdia, &[b"mdhd"]);
        assert_eq!(&mdhd[12..16], &48000u32.to_be_bytes());
        assert_eq!(&path(audio_mdia, &[b"hdlr"])[8..12], b"soun");
        let stsd = path(audio_mdia, &[b"minf", b"stbl", b"stsd"]);
        let mp4a = require(&stsd[8..], b"mp4a").unwrap();
        let esds = require(&mp4a.body[28..], b"esds").unwrap().body;
        assert_eq!(
            esds,
            [
                0, 0, 0, 0, // version, flags
                0x03, 0x80, 0x80, 0x80, 0x22, 0, 0, 0, // ES_Descriptor
                0x04, 0x80, 0x80, 0x80, 0x14, 0x40, 0x15, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                0, // DecoderConfig
                0x05, 0x80, 0x80, 0x80, 0x02, 0x11, 0x90, // DecoderSpecificInfo
                0x06, 0x80, 0x80, 0x80, 0x01, 0x02, // SLConfig
            ]
        );
    }

    #[test]
    fn a_single_track_has_only_its_trak() {
        let audio_only = Tracks {
            video: None,
            ..tracks()
        };
        let init = init_segment(&audio_only);
        let moov = path(&init, &[b"moov"]);
        let traks = children(moov)
            .filter(|b| &b.as_ref().unwrap().kind == b"trak")
            .count();
        assert_eq!(traks, 1);
        assert!(!init.windows(4).any(|w| w == b"avc1"));
    }
}
