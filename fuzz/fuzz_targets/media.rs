//! The media crate on arbitrary publisher data: FLV tag bodies as RTMP audio/video messages carry
//! them, FLV files, and the AVC and AAC decoder configurations inside them.
//!
//! Input: `[mode, data...]`, by `mode % 4`:
//! - 0: `data` is an FLV file: `flv::file_tags`, then every audio (8) and video (9) tag goes to a
//!   `Demuxer` with its timestamp.
//! - 1: `data` is a sequence of tags, each `[kind, timestamp (4 bytes), length (2 bytes), body]`
//!   (a short last one takes what is left): `Demuxer::audio` for an even `kind`, `Demuxer::video` for
//!   an odd one.
//! - 2: `AvcConfig::parse(data)`, then `nal_units` over `data` with its NAL length size.
//! - 3: `AacConfig::parse(data)`, then an ADTS header for a few frame lengths.
//!
//! Checked besides "no panic": every tag body, configuration, parameter set, NAL unit and frame
//! payload is a slice of the bytes it came from (the zero-copy rule: nothing is copied); a frame
//! has data, its track matches the message's, and its composition offset fits the 24 bits it was
//! read from; a configuration event comes only for a configuration tag.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use oxcast_media::avc::nal_units;
use oxcast_media::flv::file_tags;
use oxcast_media::{AacConfig, AvcConfig, Demuxer, MediaEvent, Track};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let input = Bytes::copy_from_slice(rest);
    match mode % 4 {
        0 => file(&input),
        1 => tags(&input),
        2 => avc(&input),
        _ => aac(&input),
    }
});

/// True if `inner` lies within `outer`'s bytes (an empty slice may point anywhere).
fn is_slice_of(inner: &[u8], outer: &[u8]) -> bool {
    let (start, end) = (outer.as_ptr() as usize, outer.as_ptr() as usize + outer.len());
    let at = inner.as_ptr() as usize;
    inner.is_empty() || (at >= start && at + inner.len() <= end)
}

fn file(input: &Bytes) {
    let Ok(tags) = file_tags(input) else {
        assert!(!input.starts_with(b"FLV"), "a file with the signature is read");
        return;
    };
    let mut demuxer = Demuxer::new();
    for tag in tags {
        assert!(is_slice_of(&tag.body, input), "tag body copied");
        assert!(tag.kind <= 0x1F);
        match tag.kind {
            8 => demux(&mut demuxer, Track::Audio, tag.timestamp, &tag.body),
            9 => demux(&mut demuxer, Track::Video, tag.timestamp, &tag.body),
            _ => {}
        }
    }
}

fn tags(input: &Bytes) {
    let mut demuxer = Demuxer::new();
    let mut at = 0;
    while let Some(&[kind, t0, t1, t2, t3, l0, l1]) = input.get(at..at + 7) {
        let start = at + 7;
        let end = (start + usize::from(u16::from_be_bytes([l0, l1]))).min(input.len());
        let body = input.slice(start..end);
        let track = if kind % 2 == 0 { Track::Audio } else { Track::Video };
        demux(&mut demuxer, track, u32::from_be_bytes([t0, t1, t2, t3]), &body);
        at = end;
    }
}

fn demux(demuxer: &mut Demuxer, track: Track, timestamp: u32, body: &Bytes) {
    let result = match track {
        Track::Audio => demuxer.audio(timestamp, body),
        Track::Video => demuxer.video(timestamp, body),
    };
    let Ok(Some(event)) = result else {
        return;
    };
    match event {
        MediaEvent::Frame(frame) => {
            assert_eq!(frame.track, track);
            assert!(!frame.data.is_empty());
            assert!(is_slice_of(&frame.data, body), "frame payload copied");
            // The composition offset is a signed 24-bit field (FLV v10.1 §E.4.3.1).
            assert!((-(1 << 23)..1 << 23).contains(&(frame.pts - frame.dts)));
            if track == Track::Audio {
                assert_eq!(frame.pts, frame.dts);
            }
        }
        MediaEvent::VideoConfig(config) => {
            assert_eq!(track, Track::Video);
            assert!(is_slice_of(&config.record, body), "AVC record copied");
            check_avc(&config);
        }
        MediaEvent::AudioConfig(config) => {
            assert_eq!(track, Track::Audio);
            assert!(is_slice_of(&config.raw, body), "AudioSpecificConfig copied");
            check_aac(&config);
        }
    }
}

fn avc(input: &Bytes) {
    if let Ok(config) = AvcConfig::parse(input.clone()) {
        assert_eq!(config.record, *input);
        check_avc(&config);
        for unit in nal_units(input, config.nal_length_size).flatten() {
            assert!(is_slice_of(unit, input));
        }
    }
}

fn check_avc(config: &AvcConfig) {
    assert!(matches!(config.nal_length_size, 1 | 2 | 4));
    assert!(!config.sps.is_empty());
    for set in config.sps.iter().chain(&config.pps) {
        assert!(is_slice_of(set, &config.record), "parameter set copied");
    }
    assert!(config.codec_string().starts_with("avc1."));
}

fn aac(input: &Bytes) {
    if let Ok(config) = AacConfig::parse(input.clone()) {
        assert_eq!(config.raw, *input);
        check_aac(&config);
    }
}

fn check_aac(config: &AacConfig) {
    assert!((1..=7).contains(&config.channels));
    for len in [0, 1, 100, 8184] {
        let header = config.adts_header(len);
        assert_eq!(&header[..2], &[0xFF, 0xF1]);
    }
    assert!(config.codec_string().starts_with("mp4a.40."));
}
