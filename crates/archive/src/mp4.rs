//! The MP4 box layer of the recorder (ISO 14496-12, ISO 14496-14, ISO 14496-15).
//!
//! While live, a recording is a fragmented MP4: [`init_segment`] once, then one `moof` + `mdat`
//! per [`Fragment`] from a [`FragmentWriter`]. Every fragment is self-contained, so a file cut at
//! any byte (crash, full disk) is usable up to its last whole fragment. At the end, [`finalize`]
//! turns such a file, whole or cut, into a progressive MP4 with `moov` before `mdat` ("faststart")
//! that browsers, QuickTime and ffmpeg play and seek.
//!
//! The boxes are written and read by hand rather than with an MP4 crate: the layer is small, and
//! it needs byte-exact control over the fragment layout and payloads that are never copied into a
//! muxer buffer (a fragment is its header bytes plus the frames' own `Bytes`, written with one
//! vectored write; finalizing copies media file to file).

mod box_reader;
mod box_writer;
mod finalize;
mod fragment;
mod init;
mod movie;
mod recording;

use thiserror::Error;

pub use finalize::finalize;
pub use fragment::{Fragment, FragmentWriter};
pub use init::init_segment;

/// Track ids in the files we write: fixed, so a recovery knows which is which.
pub const VIDEO_TRACK_ID: u32 = 1;
pub const AUDIO_TRACK_ID: u32 = 2;
/// Video timescale: the MPEG 90 kHz clock, exact for milliseconds and for common frame rates.
pub const VIDEO_TIMESCALE: u32 = 90_000;
/// Movie timescale (`mvhd`, `tkhd`, `elst` durations): milliseconds.
pub(crate) const MOVIE_TIMESCALE: u32 = 1000;

/// The codec configurations of a recording; a track is present when its configuration is.
pub use oxcast_media::Tracks;

/// What [`finalize`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub video_frames: u64,
    pub audio_frames: u64,
    /// The longest track's, from the start of the recording.
    pub duration_ms: u64,
    /// Size of the progressive MP4.
    pub bytes: u64,
    /// Bytes at the end of the fragmented file that held no whole fragment (a cut recording).
    pub discarded_bytes: u64,
}

/// Why a recording could not be finalized.
#[derive(Debug, Error)]
pub enum Mp4Error {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a recording: {0}")]
    Malformed(String),
    #[error("the recording holds no whole fragment")]
    NoMedia,
    #[error("the recording is too large for an MP4 box")]
    TooLarge,
}

impl Mp4Error {
    fn malformed(why: impl Into<String>) -> Self {
        Self::Malformed(why.into())
    }
}

/// For the recorder's tests: a known H.264 configuration and a player's view of a finalized file.
#[cfg(test)]
pub(crate) mod testing {
    pub(crate) use super::finalize::tests::{Played, play};
    pub(crate) use super::init::tests::AVC_RECORD;
}
