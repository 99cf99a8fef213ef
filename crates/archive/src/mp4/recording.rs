//! Reads a fragmented recording back: the tracks of its `moov`, then every whole `moof` + `mdat`
//! pair as sample tables that point into the file (ISO 14496-12 §8.8).
//!
//! The file may have been cut at any byte by a crash. A box that runs past the end of the file
//! ends the recording at the fragment before it; a file that is not a recording is an error.
//! Sizes read from the file are checked against the file's length before anything is read or
//! allocated for them.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use crate::mp4::Mp4Error;
use crate::mp4::box_reader::{BoxReader, ChildBox, children, find, fourcc_name, require};
use crate::mp4::movie::{Handler, TrackHeader};

/// `moov` and `moof` are read whole: ours are kilobytes; this only bounds what a bad size costs.
const MAX_HEADER_BOX: u64 = 64 << 20;
/// Samples one `trun` may declare when it carries no per-sample fields to bound the count.
const MAX_RUN_SAMPLES: u32 = 1 << 20;
/// `tfhd` flags (§8.8.7.1).
const BASE_DATA_OFFSET_PRESENT: u32 = 0x1;
const SAMPLE_DESCRIPTION_INDEX_PRESENT: u32 = 0x2;
const DEFAULT_SAMPLE_DURATION_PRESENT: u32 = 0x8;
const DEFAULT_SAMPLE_SIZE_PRESENT: u32 = 0x10;
const DEFAULT_SAMPLE_FLAGS_PRESENT: u32 = 0x20;
const DEFAULT_BASE_IS_MOOF: u32 = 0x02_0000;
/// `trun` flags (§8.8.8.1).
const DATA_OFFSET_PRESENT: u32 = 0x1;
const FIRST_SAMPLE_FLAGS_PRESENT: u32 = 0x4;
const SAMPLE_DURATION_PRESENT: u32 = 0x100;
const SAMPLE_SIZE_PRESENT: u32 = 0x200;
const SAMPLE_FLAGS_PRESENT: u32 = 0x400;
const SAMPLE_COMPOSITION_TIME_OFFSETS_PRESENT: u32 = 0x800;
/// `sample_is_non_sync_sample` in sample flags.
const NON_SYNC: u32 = 0x1_0000;

/// A recording as read: its tracks and where its media lies in the file.
#[derive(Debug)]
pub(super) struct Recording {
    pub(super) tracks: Vec<RecordedTrack>,
    /// Media ranges of the file in the order the finalized file holds them: (offset, length).
    pub(super) ranges: Vec<(u64, u64)>,
    /// Bytes after the last whole fragment.
    pub(super) discarded_bytes: u64,
}

#[derive(Debug)]
pub(super) struct RecordedTrack {
    pub(super) header: TrackHeader,
    /// The `stsd` box, header included, copied to the finalized file as is.
    pub(super) stsd: Vec<u8>,
    defaults: SampleDefaults,
    /// Decode time of the first sample, in the track's timescale, from the recording's zero.
    pub(super) start: u64,
    /// Decode time after the last sample.
    next_decode_time: u64,
    pub(super) samples: Vec<Sample>,
    pub(super) chunks: Vec<Chunk>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Sample {
    pub(super) duration: u32,
    pub(super) size: u32,
    pub(super) composition_offset: i32,
    pub(super) sync: bool,
}

/// A run of samples stored together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Chunk {
    pub(super) samples: u32,
    /// Where the chunk starts among the media of the finalized file (not counting its header).
    pub(super) media_offset: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct SampleDefaults {
    duration: u32,
    size: u32,
    flags: u32,
}

/// Reads the recording in `file`.
pub(super) fn read(file: &mut File) -> Result<Recording, Mp4Error> {
    let file_len = file.metadata()?.len();
    let mut tracks: Option<Vec<RecordedTrack>> = None;
    let mut ranges = Vec::new();
    let mut media_len = 0u64;
    let mut at = 0u64;
    // End of the last whole fragment (or of the moov before any).
    let mut whole_until = 0u64;
    let mut first = true;
    while let Some(header) = read_header(file, at, file_len)? {
        if first && header.kind != *b"ftyp" {
            return Err(Mp4Error::malformed("it does not open with ftyp"));
        }
        first = false;
        match &header.kind {
            b"moov" => {
                if tracks.is_some() {
                    return Err(Mp4Error::malformed("a second moov"));
                }
                let body = read_body(file, &header)?;
                tracks = Some(read_moov(&body)?);
                whole_until = header.end();
                at = header.end();
            }
            b"moof" => {
                let Some(tracks) = tracks.as_mut() else {
                    return Err(Mp4Error::malformed("a moof before the moov"));
                };
                let body = read_body(file, &header)?;
                let Some(mdat) = read_header(file, header.end(), file_len)? else {
                    break;
                };
                if mdat.kind != *b"mdat" {
                    return Err(Mp4Error::malformed(format!(
                        "a moof followed by {}",
                        fourcc_name(&mdat.kind)
                    )));
                }
                let fragment = read_moof(&body, header.start, &mdat, tracks)?;
                commit(fragment, tracks, &mut ranges, &mut media_len);
                whole_until = mdat.end();
                at = mdat.end();
            }
            // Anything else (free, sidx, a stray mdat) is skipped whole.
            _ => {
                whole_until = header.end();
                at = header.end();
            }
        }
    }
    // A file that ends before its moov was cut while the recording started.
    let mut tracks = tracks.ok_or(Mp4Error::NoMedia)?;
    tracks.retain(|track| !track.samples.is_empty());
    if tracks.is_empty() {
        return Err(Mp4Error::NoMedia);
    }
    Ok(Recording {
        tracks,
        ranges,
        discarded_bytes: file_len.saturating_sub(whole_until),
    })
}

/// A top-level box's place in the file.
#[derive(Debug, Clone, Copy)]
struct Header {
    kind: [u8; 4],
    start: u64,
    header_len: u64,
    size: u64,
}

impl Header {
    fn end(&self) -> u64 {
        self.start + self.size
    }

    fn body_start(&self) -> u64 {
        self.start + self.header_len
    }
}

/// The header of the box at `at`, or `None` where the recording ends: at the end of the file,
/// at a box cut by it, or at zeros a crash left where data was never written.
fn read_header(file: &mut File, at: u64, file_len: u64) -> Result<Option<Header>, Mp4Error> {
    let left = file_len.saturating_sub(at);
    if left < 8 {
        return Ok(None);
    }
    let mut bytes = [0u8; 16];
    let wanted = bytes.len().min(usize::try_from(left).unwrap_or(16));
    read_at(file, at, bytes.get_mut(..wanted).unwrap_or_default())?;
    let mut reader = BoxReader::new(&bytes);
    let size = reader.u32()?;
    let kind = reader.fourcc()?;
    if size == 0 && kind == [0; 4] {
        return Ok(None);
    }
    if !kind.iter().all(|b| b.is_ascii_alphanumeric() || *b == b' ') {
        return Err(Mp4Error::malformed(format!(
            "box type {:02x?} at byte {at}",
            kind
        )));
    }
    let (header_len, size) = match size {
        0 => (8, left),
        1 if left < 16 => return Ok(None),
        1 => (16, reader.u64()?),
        size => (8, u64::from(size)),
    };
    if size < header_len {
        return Err(Mp4Error::malformed(format!(
            "box {} of {size} bytes at byte {at}",
            fourcc_name(&kind)
        )));
    }
    if size > left {
        tracing::debug!(box_type = %fourcc_name(&kind), at, "the recording ends in a cut box");
        return Ok(None);
    }
    Ok(Some(Header {
        kind,
        start: at,
        header_len,
        size,
    }))
}

fn read_body(file: &mut File, header: &Header) -> Result<Vec<u8>, Mp4Error> {
    let len = header.size - header.header_len;
    if len > MAX_HEADER_BOX {
        return Err(Mp4Error::malformed(format!(
            "a {} of {len} bytes",
            fourcc_name(&header.kind)
        )));
    }
    let mut body = vec![0; usize::try_from(len).map_err(|_| Mp4Error::TooLarge)?];
    read_at(file, header.body_start(), &mut body)?;
    Ok(body)
}

fn read_at(file: &mut File, at: u64, buf: &mut [u8]) -> Result<(), Mp4Error> {
    file.seek(SeekFrom::Start(at))?;
    file.read_exact(buf)?;
    Ok(())
}

/// The tracks of a `moov`: their headers, sample descriptions and `trex` defaults.
fn read_moov(moov: &[u8]) -> Result<Vec<RecordedTrack>, Mp4Error> {
    let mut tracks = Vec::new();
    for child in children(moov) {
        let child = child?;
        if &child.kind == b"trak"
            && let Some(track) = read_trak(child.body)?
        {
            if tracks
                .iter()
                .any(|t: &RecordedTrack| t.header.id == track.header.id)
            {
                return Err(Mp4Error::malformed(format!(
                    "two tracks with id {}",
                    track.header.id
                )));
            }
            tracks.push(track);
        }
    }
    if let Some(mvex) = find(moov, b"mvex")? {
        for trex in children(mvex.body) {
            let trex = trex?;
            if &trex.kind != b"trex" {
                continue;
            }
            let mut r = BoxReader::new(trex.body);
            r.version_flags()?;
            let id = r.u32()?;
            r.u32()?; // sample description index
            let defaults = SampleDefaults {
                duration: r.u32()?,
                size: r.u32()?,
                flags: r.u32()?,
            };
            if let Some(track) = tracks.iter_mut().find(|t| t.header.id == id) {
                track.defaults = defaults;
            }
        }
    }
    Ok(tracks)
}

/// A `trak`, or `None` for a kind of track this recorder does not write (skipped, not an error).
fn read_trak(trak: &[u8]) -> Result<Option<RecordedTrack>, Mp4Error> {
    let mut tkhd = BoxReader::new(require(trak, b"tkhd")?.body);
    let (version, _) = tkhd.version_flags()?;
    tkhd.skip(if version == 1 { 16 } else { 8 })?; // creation, modification times
    let id = tkhd.u32()?;
    tkhd.skip(4)?;
    tkhd.u32_or_u64(version)?; // duration
    tkhd.skip(8 + 2 + 2)?; // reserved, layer, alternate_group
    let volume = tkhd.u16()?;
    tkhd.skip(2 + 36)?; // reserved, matrix
    let width = tkhd.u32()?;
    let height = tkhd.u32()?;

    let mdia = require(trak, b"mdia")?.body;
    let mut hdlr = BoxReader::new(require(mdia, b"hdlr")?.body);
    hdlr.skip(4 + 4)?; // version and flags, pre_defined
    let Some(handler) = Handler::from_fourcc(hdlr.fourcc()?) else {
        tracing::warn!(track_id = id, "a track that is neither video nor audio, skipped");
        return Ok(None);
    };
    let mut mdhd = BoxReader::new(require(mdia, b"mdhd")?.body);
    let (version, _) = mdhd.version_flags()?;
    mdhd.skip(if version == 1 { 16 } else { 8 })?;
    let timescale = mdhd.u32()?;
    mdhd.u32_or_u64(version)?;
    let language = mdhd.u16()?;
    if timescale == 0 {
        return Err(Mp4Error::malformed(format!("track {id} has timescale 0")));
    }
    let stbl = require(require(mdia, b"minf")?.body, b"stbl")?.body;
    let stsd: ChildBox<'_> = require(stbl, b"stsd")?;
    Ok(Some(RecordedTrack {
        header: TrackHeader {
            id,
            handler,
            timescale,
            width,
            height,
            volume,
            language,
        },
        stsd: stsd.whole.to_vec(),
        defaults: SampleDefaults::default(),
        start: 0,
        next_decode_time: 0,
        samples: Vec::new(),
        chunks: Vec::new(),
    }))
}

/// One track's samples in a fragment, with where each lies in the file.
#[derive(Debug)]
struct TrackFragment {
    track: usize,
    base_decode_time: Option<u64>,
    samples: Vec<(u64, Sample)>,
}

/// The samples of a `moof` whose media is in `mdat`. Every sample must lie inside that `mdat`.
fn read_moof(
    moof: &[u8],
    moof_start: u64,
    mdat: &Header,
    tracks: &[RecordedTrack],
) -> Result<Vec<TrackFragment>, Mp4Error> {
    let media = mdat.body_start()..mdat.end();
    let mut fragments = Vec::new();
    let mut media_bytes = 0u64;
    // Without a base offset or default-base-is-moof, a traf's data follows the previous one's (§8.8.7.1).
    let mut previous_end = moof_start;
    for traf in children(moof) {
        let traf = traf?;
        if &traf.kind != b"traf" {
            continue;
        }
        let mut tfhd = BoxReader::new(require(traf.body, b"tfhd")?.body);
        let (_, flags) = tfhd.version_flags()?;
        let id = tfhd.u32()?;
        let track = tracks
            .iter()
            .position(|t| t.header.id == id)
            .ok_or_else(|| Mp4Error::malformed(format!("a fragment of unknown track {id}")))?;
        let mut defaults = tracks.get(track).map(|t| t.defaults).unwrap_or_default();
        let mut base = if flags & BASE_DATA_OFFSET_PRESENT != 0 {
            tfhd.u64()?
        } else if flags & DEFAULT_BASE_IS_MOOF != 0 || fragments.is_empty() {
            moof_start
        } else {
            previous_end
        };
        if flags & SAMPLE_DESCRIPTION_INDEX_PRESENT != 0 {
            tfhd.u32()?;
        }
        if flags & DEFAULT_SAMPLE_DURATION_PRESENT != 0 {
            defaults.duration = tfhd.u32()?;
        }
        if flags & DEFAULT_SAMPLE_SIZE_PRESENT != 0 {
            defaults.size = tfhd.u32()?;
        }
        if flags & DEFAULT_SAMPLE_FLAGS_PRESENT != 0 {
            defaults.flags = tfhd.u32()?;
        }
        let base_decode_time = match find(traf.body, b"tfdt")? {
            Some(tfdt) => {
                let mut tfdt = BoxReader::new(tfdt.body);
                let (version, _) = tfdt.version_flags()?;
                Some(tfdt.u32_or_u64(version)?)
            }
            None => None,
        };
        let audio = tracks
            .get(track)
            .is_some_and(|t| t.header.handler == Handler::Audio);
        let mut samples = Vec::new();
        for trun in children(traf.body) {
            let trun = trun?;
            if &trun.kind != b"trun" {
                continue;
            }
            base = read_trun(
                trun.body,
                base,
                &defaults,
                audio,
                &media,
                &mut media_bytes,
                &mut samples,
            )?;
        }
        previous_end = base;
        fragments.push(TrackFragment {
            track,
            base_decode_time,
            samples,
        });
    }
    Ok(fragments)
}

/// The samples of a `trun`, appended to `samples`; returns where its data ends.
fn read_trun(
    trun: &[u8],
    base: u64,
    defaults: &SampleDefaults,
    audio: bool,
    media: &std::ops::Range<u64>,
    media_bytes: &mut u64,
    samples: &mut Vec<(u64, Sample)>,
) -> Result<u64, Mp4Error> {
    let mut r = BoxReader::new(trun);
    let (version, flags) = r.version_flags()?;
    let count = r.u32()?;
    let mut at = if flags & DATA_OFFSET_PRESENT != 0 {
        base.checked_add_signed(i64::from(r.i32()?))
            .ok_or_else(|| Mp4Error::malformed("a data offset before the file"))?
    } else {
        base
    };
    let first_flags = if flags & FIRST_SAMPLE_FLAGS_PRESENT != 0 {
        Some(r.u32()?)
    } else {
        None
    };
    let per_sample = [
        SAMPLE_DURATION_PRESENT,
        SAMPLE_SIZE_PRESENT,
        SAMPLE_FLAGS_PRESENT,
        SAMPLE_COMPOSITION_TIME_OFFSETS_PRESENT,
    ]
    .iter()
    .filter(|f| flags & **f != 0)
    .count()
        * 4;
    // The count is bounded by the bytes that describe the samples, or by a fixed limit.
    let bounded = if per_sample > 0 {
        u64::from(count) * per_sample as u64 <= r.remaining() as u64
    } else {
        count <= MAX_RUN_SAMPLES
    };
    if !bounded {
        return Err(Mp4Error::malformed(format!("a trun of {count} samples")));
    }
    samples.reserve(usize::try_from(count).unwrap_or(0));
    for index in 0..count {
        let duration = if flags & SAMPLE_DURATION_PRESENT != 0 {
            r.u32()?
        } else {
            defaults.duration
        };
        let size = if flags & SAMPLE_SIZE_PRESENT != 0 {
            r.u32()?
        } else {
            defaults.size
        };
        let sample_flags = if flags & SAMPLE_FLAGS_PRESENT != 0 {
            r.u32()?
        } else {
            match first_flags {
                Some(first) if index == 0 => first,
                _ => defaults.flags,
            }
        };
        let composition_offset = if flags & SAMPLE_COMPOSITION_TIME_OFFSETS_PRESENT != 0 {
            // Version 0 offsets are unsigned; ours never pass i32::MAX.
            let raw = r.u32()?;
            if version == 0 {
                i32::try_from(raw).unwrap_or(i32::MAX)
            } else {
                i32::from_be_bytes(raw.to_be_bytes())
            }
        } else {
            0
        };
        let end = at.saturating_add(u64::from(size));
        *media_bytes = media_bytes.saturating_add(u64::from(size));
        // Inside the mdat, and no more bytes of samples than the mdat holds, so sample tables
        // stay proportional to the file.
        if size == 0 || at < media.start || end > media.end || *media_bytes > media.end - media.start {
            return Err(Mp4Error::malformed(format!(
                "a sample of {size} bytes at byte {at}, outside its mdat"
            )));
        }
        samples.push((
            at,
            Sample {
                duration,
                size,
                composition_offset,
                sync: audio || sample_flags & NON_SYNC == 0,
            },
        ));
        at = end;
    }
    Ok(at)
}

/// Adds a whole fragment to the tracks: samples, chunks (runs of adjacent samples) and the
/// media ranges to copy.
fn commit(
    fragment: Vec<TrackFragment>,
    tracks: &mut [RecordedTrack],
    ranges: &mut Vec<(u64, u64)>,
    media_len: &mut u64,
) {
    for part in fragment {
        let Some(track) = tracks.get_mut(part.track) else {
            continue;
        };
        if part.samples.is_empty() {
            continue;
        }
        let decode_time = part.base_decode_time.unwrap_or(track.next_decode_time);
        if track.samples.is_empty() {
            track.start = decode_time;
            track.next_decode_time = decode_time;
        } else if decode_time > track.next_decode_time {
            // A gap in the track: the sample before it lasts until this fragment starts.
            let gap = decode_time - track.next_decode_time;
            if let Some(last) = track.samples.last_mut() {
                last.duration = last
                    .duration
                    .saturating_add(u32::try_from(gap).unwrap_or(u32::MAX));
            }
            track.next_decode_time = decode_time;
        }
        // A fragment that overlaps the one before keeps its samples, played right after.
        let mut previous_end: Option<u64> = None;
        for (at, sample) in part.samples {
            if previous_end != Some(at) {
                track.chunks.push(Chunk {
                    samples: 0,
                    media_offset: *media_len,
                });
                match ranges.last_mut() {
                    Some((start, len)) if *start + *len == at => {}
                    _ => ranges.push((at, 0)),
                }
            }
            if let Some(chunk) = track.chunks.last_mut() {
                chunk.samples += 1;
            }
            if let Some((_, len)) = ranges.last_mut() {
                *len += u64::from(sample.size);
            }
            *media_len += u64::from(sample.size);
            previous_end = Some(at + u64::from(sample.size));
            track.next_decode_time = track.next_decode_time.saturating_add(u64::from(sample.duration));
            track.samples.push(sample);
        }
    }
}
