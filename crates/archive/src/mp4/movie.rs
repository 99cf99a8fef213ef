//! The boxes that describe a movie and its tracks (ISO 14496-12 §8.2-§8.7), shared by the init
//! segment of a live recording and the finalized file.

use crate::mp4::box_writer::BoxWriter;

/// The unity transformation matrix of `mvhd` and `tkhd` (§8.2.2).
const MATRIX: [u32; 9] = [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000];
/// ISO 639-2 "und", packed as three 5-bit letters (§8.4.2).
pub(super) const LANGUAGE_UNDETERMINED: u16 = 0x55C4;

/// What a track holds, from its handler type (§8.4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Handler {
    Video,
    Audio,
}

impl Handler {
    pub(super) fn from_fourcc(kind: [u8; 4]) -> Option<Self> {
        match &kind {
            b"vide" => Some(Self::Video),
            b"soun" => Some(Self::Audio),
            _ => None,
        }
    }
}

/// The per-track fields of `tkhd`, `mdhd` and `hdlr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TrackHeader {
    pub(super) id: u32,
    pub(super) handler: Handler,
    /// Media timescale, ticks per second.
    pub(super) timescale: u32,
    /// Display size, 16.16 fixed point; zero for audio.
    pub(super) width: u32,
    pub(super) height: u32,
    /// 8.8 fixed point: 1.0 for audio, 0 for video.
    pub(super) volume: u16,
    pub(super) language: u16,
}

/// `ftyp` (§4.3).
pub(super) fn ftyp(w: &mut BoxWriter, compatible: &[&[u8; 4]]) {
    w.begin(b"ftyp");
    w.bytes(b"isom");
    w.u32(0x200);
    for brand in compatible {
        w.bytes(*brand);
    }
    w.end();
}

/// `mvhd` (§8.2.2); `duration` in [`crate::mp4::MOVIE_TIMESCALE`] units.
pub(super) fn mvhd(w: &mut BoxWriter, duration: u64, next_track_id: u32) {
    let version = version_for(duration);
    w.begin_full(b"mvhd", version, 0);
    times(w, version);
    w.u32(crate::mp4::MOVIE_TIMESCALE);
    duration_field(w, version, duration);
    w.u32(0x0001_0000); // rate 1.0
    w.u16(0x0100); // volume 1.0
    w.zeros(2 + 8);
    for value in MATRIX {
        w.u32(value);
    }
    w.zeros(6 * 4); // pre_defined
    w.u32(next_track_id);
    w.end();
}

/// `tkhd` (§8.3.2); `duration` in movie timescale units.
pub(super) fn tkhd(w: &mut BoxWriter, track: &TrackHeader, duration: u64) {
    let version = version_for(duration);
    // Enabled and in the movie.
    w.begin_full(b"tkhd", version, 0x3);
    times(w, version);
    w.u32(track.id);
    w.zeros(4);
    duration_field(w, version, duration);
    w.zeros(8);
    w.u16(0); // layer
    w.u16(0); // alternate_group
    w.u16(track.volume);
    w.zeros(2);
    for value in MATRIX {
        w.u32(value);
    }
    w.u32(track.width);
    w.u32(track.height);
    w.end();
}

/// `mdhd` (§8.4.2), `hdlr` (§8.4.3), then `minf` is the caller's, with [`media_information_header`].
pub(super) fn mdhd(w: &mut BoxWriter, track: &TrackHeader, duration: u64) {
    let version = version_for(duration);
    w.begin_full(b"mdhd", version, 0);
    times(w, version);
    w.u32(track.timescale);
    duration_field(w, version, duration);
    w.u16(track.language);
    w.u16(0);
    w.end();
}

pub(super) fn hdlr(w: &mut BoxWriter, handler: Handler) {
    let (kind, name): (&[u8; 4], &[u8]) = match handler {
        Handler::Video => (b"vide", b"VideoHandler\0"),
        Handler::Audio => (b"soun", b"SoundHandler\0"),
    };
    w.begin_full(b"hdlr", 0, 0);
    w.u32(0); // pre_defined
    w.bytes(kind);
    w.zeros(12);
    w.bytes(name);
    w.end();
}

/// `vmhd` or `smhd` (§12.1.2, §12.2.2), then `dinf` with a self-contained `dref` (§8.7.1).
pub(super) fn media_information_header(w: &mut BoxWriter, handler: Handler) {
    match handler {
        Handler::Video => {
            // Flags 1 is required for vmhd.
            w.begin_full(b"vmhd", 0, 1);
            w.zeros(8); // graphicsmode, opcolor
            w.end();
        }
        Handler::Audio => {
            w.begin_full(b"smhd", 0, 0);
            w.zeros(4); // balance, reserved
            w.end();
        }
    }
    w.begin(b"dinf");
    w.begin_full(b"dref", 0, 0);
    w.u32(1);
    // Flag 1: the media is in this file.
    w.begin_full(b"url ", 0, 1);
    w.end();
    w.end();
    w.end();
}

fn version_for(duration: u64) -> u8 {
    if u32::try_from(duration).is_ok() { 0 } else { 1 }
}

/// Creation and modification times: zero, as the recording's wall-clock time lives in the store
/// and a fixed value keeps files reproducible.
fn times(w: &mut BoxWriter, version: u8) {
    w.zeros(if version == 1 { 16 } else { 8 });
}

fn duration_field(w: &mut BoxWriter, version: u8, duration: u64) {
    match u32::try_from(duration) {
        Ok(duration) if version == 0 => w.u32(duration),
        _ => w.u64(duration),
    }
}
