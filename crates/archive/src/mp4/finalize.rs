//! Turns a fragmented recording into a progressive MP4: `ftyp`, a `moov` with complete sample
//! tables, then one `mdat` holding the media copied file to file (ISO 14496-12 §8.5-§8.7).
//!
//! `moov` comes first so a browser can start playing and seeking from the first bytes it fetches.
//! Each track's samples of one fragment form one chunk, so the media keeps the fragments' order
//! and is copied in as few ranges as the source allows.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::mp4::box_writer::BoxWriter;
use crate::mp4::movie::{self, Handler};
use crate::mp4::recording::{self, RecordedTrack, Recording};
use crate::mp4::{MOVIE_TIMESCALE, Mp4Error, Summary};

/// Reads the fragmented recording at `fragmented` (whole or cut at any byte) and writes its
/// progressive form to `output`, synced to disk. `output` is created or truncated; the caller
/// picks a temporary name and renames it.
pub fn finalize(fragmented: &Path, output: &Path) -> Result<Summary, Mp4Error> {
    // Creating the output truncates it: it must not be the recording itself.
    if output.canonicalize().ok() == Some(fragmented.canonicalize()?) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "the output is the recording").into());
    }
    let mut source = File::open(fragmented)?;
    let recording = recording::read(&mut source)?;
    let timelines = presentation(&recording.tracks);
    let media_len: u64 = recording.ranges.iter().map(|(_, len)| len).sum();
    let mdat_header_len = if media_len + 8 <= u64::from(u32::MAX) {
        8
    } else {
        16
    };

    // The moov's size does not depend on the offsets it holds, only on their width.
    let probe = head(&recording, &timelines, 0, false)?;
    let co64 = probe.len() as u64 + mdat_header_len + media_len > u64::from(u32::MAX);
    let head_len = if co64 {
        head(&recording, &timelines, 0, true)?.len() as u64
    } else {
        probe.len() as u64
    };
    let mut bytes = head(&recording, &timelines, head_len + mdat_header_len, co64)?;
    if mdat_header_len == 8 {
        bytes.extend_from_slice(&u32::try_from(media_len + 8).unwrap_or(u32::MAX).to_be_bytes());
        bytes.extend_from_slice(b"mdat");
    } else {
        bytes.extend_from_slice(&1u32.to_be_bytes());
        bytes.extend_from_slice(b"mdat");
        bytes.extend_from_slice(&(media_len + 16).to_be_bytes());
    }

    let mut out = File::create(output)?;
    out.write_all(&bytes)?;
    for &(start, len) in &recording.ranges {
        source.seek(SeekFrom::Start(start))?;
        // File to file: `io::copy` uses copy_file_range, so the media does not pass through us.
        let copied = io::copy(&mut (&mut source).take(len), &mut out)?;
        if copied != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the recording shrank while finalizing",
            )
            .into());
        }
    }
    out.sync_all()?;

    let frames = |handler| {
        recording
            .tracks
            .iter()
            .filter(|t| t.header.handler == handler)
            .map(|t| t.samples.len() as u64)
            .sum()
    };
    Ok(Summary {
        video_frames: frames(Handler::Video),
        audio_frames: frames(Handler::Audio),
        duration_ms: timelines.iter().map(|t| t.track_duration).max().unwrap_or(0),
        bytes: bytes.len() as u64 + media_len,
        discarded_bytes: recording.discarded_bytes,
    })
}

/// Where a track's samples are shown, and the edit list that puts them there.
#[derive(Debug, Clone, Copy)]
struct Timeline {
    /// Sum of the sample durations, media timescale (`mdhd`).
    media_duration: u64,
    /// Added to every composition offset so that none is negative (`ctts` version 0).
    offset_shift: i64,
    /// Composition time of the first frame shown, media timescale: where the edit starts.
    media_time: u64,
    /// From the first frame shown to the end of the last, media timescale.
    span: u64,
    /// When the first frame is shown on the recording's clock, microseconds.
    shown_at_us: i128,
    /// Movie timescale (ms): nothing shown before the track starts; then the track.
    empty_edit: u64,
    edit: u64,
    /// `tkhd` duration, movie timescale.
    track_duration: u64,
}

impl Timeline {
    fn needs_edit_list(&self) -> bool {
        self.empty_edit > 0 || self.media_time > 0
    }
}

/// Each track's timeline. The track shown first starts at zero; the others keep their distance
/// to it through an empty edit, so audio and video stay in sync.
fn presentation(tracks: &[RecordedTrack]) -> Vec<Timeline> {
    let mut timelines: Vec<Timeline> = tracks.iter().map(timeline).collect();
    let first_shown = timelines.iter().map(|t| t.shown_at_us).min().unwrap_or(0);
    for (timeline, track) in timelines.iter_mut().zip(tracks) {
        let timescale = i128::from(track.header.timescale);
        let movie = i128::from(MOVIE_TIMESCALE);
        let empty = (timeline.shown_at_us - first_shown + 500) / 1000;
        timeline.empty_edit = u64::try_from(empty).unwrap_or(0);
        let span = i128::from(timeline.span);
        timeline.edit = u64::try_from((span * movie + timescale / 2) / timescale).unwrap_or(0);
        timeline.track_duration = if timeline.needs_edit_list() {
            timeline.empty_edit + timeline.edit
        } else {
            let media = i128::from(timeline.media_duration);
            u64::try_from((media * movie + timescale / 2) / timescale).unwrap_or(0)
        };
    }
    timelines
}

fn timeline(track: &RecordedTrack) -> Timeline {
    let min_offset = track
        .samples
        .iter()
        .map(|s| s.composition_offset)
        .min()
        .unwrap_or(0);
    let offset_shift = -i64::from(min_offset.min(0));
    let mut decode_time = 0i128;
    let mut first_shown = i128::MAX;
    let mut last_end = 0i128;
    for sample in &track.samples {
        let shown = decode_time + i128::from(sample.composition_offset) + i128::from(offset_shift);
        first_shown = first_shown.min(shown);
        last_end = last_end.max(shown + i128::from(sample.duration));
        decode_time += i128::from(sample.duration);
    }
    let first_shown = if first_shown == i128::MAX { 0 } else { first_shown };
    // On the recording's clock the track's media starts at its first decode time, and the
    // shift moved every frame later.
    let shown_at = i128::from(track.start) + first_shown - i128::from(offset_shift);
    Timeline {
        media_duration: u64::try_from(decode_time).unwrap_or(u64::MAX),
        offset_shift,
        media_time: u64::try_from(first_shown).unwrap_or(0),
        span: u64::try_from(last_end - first_shown).unwrap_or(0),
        shown_at_us: shown_at * 1_000_000 / i128::from(track.header.timescale),
        empty_edit: 0,
        edit: 0,
        track_duration: 0,
    }
}

/// `ftyp` and `moov`, with chunk offsets counted from `media_start` (the first media byte).
fn head(
    recording: &Recording,
    timelines: &[Timeline],
    media_start: u64,
    co64: bool,
) -> Result<Vec<u8>, Mp4Error> {
    let samples: usize = recording.tracks.iter().map(|t| t.samples.len()).sum();
    let mut w = BoxWriter::with_capacity(4096 + 24 * samples);
    let mut brands: Vec<&[u8; 4]> = vec![b"isom", b"iso2", b"mp41"];
    if recording
        .tracks
        .iter()
        .any(|t| t.stsd.get(20..24) == Some(b"avc1".as_slice()))
    {
        brands.push(b"avc1");
    }
    movie::ftyp(&mut w, &brands);
    w.begin(b"moov");
    let duration = timelines.iter().map(|t| t.track_duration).max().unwrap_or(0);
    let next_track_id = recording
        .tracks
        .iter()
        .map(|t| t.header.id)
        .max()
        .unwrap_or(0)
        .saturating_add(1);
    movie::mvhd(&mut w, duration, next_track_id);
    for (track, timeline) in recording.tracks.iter().zip(timelines) {
        trak(&mut w, track, timeline, media_start, co64);
    }
    w.end();
    w.finish().ok_or(Mp4Error::TooLarge)
}

fn trak(w: &mut BoxWriter, track: &RecordedTrack, timeline: &Timeline, media_start: u64, co64: bool) {
    w.begin(b"trak");
    movie::tkhd(w, &track.header, timeline.track_duration);
    if timeline.needs_edit_list() {
        edit_list(w, timeline);
    }
    w.begin(b"mdia");
    movie::mdhd(w, &track.header, timeline.media_duration);
    movie::hdlr(w, track.header.handler);
    w.begin(b"minf");
    movie::media_information_header(w, track.header.handler);
    w.begin(b"stbl");
    w.bytes(&track.stsd);
    sample_tables(w, track, timeline, media_start, co64);
    w.end(); // stbl
    w.end(); // minf
    w.end(); // mdia
    w.end(); // trak
}

/// `edts`/`elst` (§8.6.6): an empty edit while the track has not started, then the track from
/// its first frame shown, which composition offsets may have put after decode time zero.
fn edit_list(w: &mut BoxWriter, timeline: &Timeline) {
    let mut entries: Vec<(u64, i64)> = Vec::with_capacity(2);
    if timeline.empty_edit > 0 {
        entries.push((timeline.empty_edit, -1));
    }
    entries.push((
        timeline.edit,
        i64::try_from(timeline.media_time).unwrap_or(i64::MAX),
    ));
    let wide = entries
        .iter()
        .any(|(duration, time)| u32::try_from(*duration).is_err() || i32::try_from(*time).is_err());
    w.begin(b"edts");
    w.begin_full(b"elst", u8::from(wide), 0);
    w.u32(entries.len() as u32);
    for (duration, time) in entries {
        if wide {
            w.u64(duration);
            w.u64(u64::from_be_bytes(time.to_be_bytes()));
        } else {
            w.u32(u32::try_from(duration).unwrap_or(u32::MAX));
            w.i32(i32::try_from(time).unwrap_or(i32::MAX));
        }
        w.u16(1); // media_rate 1.0
        w.u16(0);
    }
    w.end();
    w.end();
}

/// `stts`, `ctts`, `stss`, `stsz`, `stsc` and `stco`/`co64` (§8.6.1-§8.7.5).
fn sample_tables(
    w: &mut BoxWriter,
    track: &RecordedTrack,
    timeline: &Timeline,
    media_start: u64,
    co64: bool,
) {
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let stts = run_lengths(track.samples.iter().map(|s| s.duration));
    w.begin_full(b"stts", 0, 0);
    w.u32(count(stts.len()));
    for (samples, duration) in stts {
        w.u32(samples);
        w.u32(duration);
    }
    w.end();

    let shift = timeline.offset_shift;
    let offsets = || {
        track
            .samples
            .iter()
            .map(move |s| u32::try_from(i64::from(s.composition_offset) + shift).unwrap_or(0))
    };
    if offsets().any(|offset| offset != 0) {
        let ctts = run_lengths(offsets());
        w.begin_full(b"ctts", 0, 0);
        w.u32(count(ctts.len()));
        for (samples, offset) in ctts {
            w.u32(samples);
            w.u32(offset);
        }
        w.end();
    }

    if track.header.handler == Handler::Video {
        let sync: Vec<u32> = (1..)
            .zip(&track.samples)
            .filter(|(_, s)| s.sync)
            .map(|(number, _)| number)
            .collect();
        w.begin_full(b"stss", 0, 0);
        w.u32(count(sync.len()));
        for number in sync {
            w.u32(number);
        }
        w.end();
    }

    w.begin_full(b"stsz", 0, 0);
    w.u32(0); // sizes differ: one per sample
    w.u32(count(track.samples.len()));
    for sample in &track.samples {
        w.u32(sample.size);
    }
    w.end();

    // stsc lists the chunks where the samples-per-chunk changes (1-based chunk numbers).
    let mut stsc: Vec<(u32, u32)> = Vec::new();
    for (number, chunk) in (1u32..).zip(&track.chunks) {
        if stsc.last().is_none_or(|(_, samples)| *samples != chunk.samples) {
            stsc.push((number, chunk.samples));
        }
    }
    w.begin_full(b"stsc", 0, 0);
    w.u32(count(stsc.len()));
    for (first_chunk, samples) in stsc {
        w.u32(first_chunk);
        w.u32(samples);
        w.u32(1); // sample description index
    }
    w.end();

    w.begin_full(if co64 { b"co64" } else { b"stco" }, 0, 0);
    w.u32(count(track.chunks.len()));
    for chunk in &track.chunks {
        let offset = media_start + chunk.media_offset;
        if co64 {
            w.u64(offset);
        } else {
            w.u32(u32::try_from(offset).unwrap_or(u32::MAX));
        }
    }
    w.end();
}

/// (count, value) for each run of equal values.
fn run_lengths(values: impl Iterator<Item = u32>) -> Vec<(u32, u32)> {
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for value in values {
        match runs.last_mut() {
            Some((count, last)) if *last == value && *count < u32::MAX => *count += 1,
            _ => runs.push((1, value)),
        }
    }
    runs
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::HashMap;

    use oxcast_media::{Frame, Track};

    use super::*;
    use crate::mp4::box_reader::{BoxReader, children, find, require};
    use crate::mp4::fragment::tests::{audio, seconds, video};
    use crate::mp4::init::tests::tracks;
    use crate::mp4::{FragmentWriter, Tracks, init_segment};

    /// A fragmented recording in memory, and after each fragment: its end and the frames so far.
    pub(crate) fn record(tracks: &Tracks, batches: Vec<Vec<Frame>>) -> (Vec<u8>, Vec<(usize, u64, u64)>) {
        let mut file = init_segment(tracks);
        let mut ends = Vec::new();
        let (mut video, mut audio) = (0, 0);
        let mut writer = FragmentWriter::new(tracks);
        let fragments: Vec<_> = batches
            .into_iter()
            .filter_map(|batch| writer.push(batch))
            .collect();
        for fragment in fragments.into_iter().chain(writer.finish()) {
            fragment.write_to(&mut file).unwrap();
            video += u64::from(fragment.video_frames);
            audio += u64::from(fragment.audio_frames);
            ends.push((file.len(), video, audio));
        }
        (file, ends)
    }

    fn finalize_bytes(fragmented: &[u8]) -> (Result<Summary, Mp4Error>, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let (input, output) = (dir.path().join("in.mp4"), dir.path().join("out.mp4"));
        std::fs::write(&input, fragmented).unwrap();
        let result = finalize(&input, &output);
        (result, std::fs::read(&output).unwrap_or_default())
    }

    /// A track of a progressive file, as a player sees it.
    #[derive(Debug, Default)]
    pub(crate) struct Played {
        pub(crate) handler: Vec<u8>,
        pub(crate) timescale: u32,
        pub(crate) samples: Vec<Vec<u8>>,
        pub(crate) durations: Vec<u32>,
        pub(crate) offsets: Vec<u32>,
        pub(crate) sync: Option<Vec<u32>>,
        /// (segment duration, media time)
        pub(crate) edits: Vec<(u32, i32)>,
        pub(crate) tkhd_duration: u32,
    }

    fn table(stbl: &[u8], kind: &[u8; 4], fields: usize) -> Option<Vec<Vec<u32>>> {
        let mut r = BoxReader::new(find(stbl, kind).unwrap()?.body);
        r.version_flags().unwrap();
        if kind == b"stsz" {
            assert_eq!(r.u32().unwrap(), 0);
        }
        let count = r.u32().unwrap();
        let rows = (0..count)
            .map(|_| (0..fields).map(|_| r.u32().unwrap()).collect())
            .collect();
        assert_eq!(r.remaining(), 0, "{kind:?}");
        Some(rows)
    }

    fn expand(runs: Option<Vec<Vec<u32>>>) -> Vec<u32> {
        runs.unwrap_or_default()
            .iter()
            .flat_map(|row| std::iter::repeat_n(row[1], row[0] as usize))
            .collect()
    }

    /// Reads every track's samples through stsz, stsc and stco, as a player would.
    pub(crate) fn play(file: &[u8]) -> Vec<Played> {
        let top: Vec<[u8; 4]> = children(file).map(|b| b.unwrap().kind).collect();
        assert_eq!(top, [*b"ftyp", *b"moov", *b"mdat"], "faststart layout");
        let moov = require(file, b"moov").unwrap().body;
        let mut tracks = Vec::new();
        for trak in children(moov).map(|b| b.unwrap()).filter(|b| &b.kind == b"trak") {
            let mdia = require(trak.body, b"mdia").unwrap().body;
            let stbl = require(require(mdia, b"minf").unwrap().body, b"stbl")
                .unwrap()
                .body;
            let sizes: Vec<u32> = table(stbl, b"stsz", 1).unwrap().concat();
            let chunks: Vec<u32> = table(stbl, b"stco", 1).unwrap().concat();
            let stsc = table(stbl, b"stsc", 3).unwrap();
            let mut played = Played {
                handler: require(mdia, b"hdlr").unwrap().body[8..12].to_vec(),
                timescale: u32::from_be_bytes(
                    require(mdia, b"mdhd").unwrap().body[12..16].try_into().unwrap(),
                ),
                durations: expand(table(stbl, b"stts", 2)),
                offsets: expand(table(stbl, b"ctts", 2)),
                sync: table(stbl, b"stss", 1).map(|rows| rows.concat()),
                tkhd_duration: u32::from_be_bytes(
                    require(trak.body, b"tkhd").unwrap().body[20..24]
                        .try_into()
                        .unwrap(),
                ),
                ..Played::default()
            };
            if let Some(edts) = find(trak.body, b"edts").unwrap() {
                let mut r = BoxReader::new(require(edts.body, b"elst").unwrap().body);
                assert_eq!(r.version_flags().unwrap(), (0, 0));
                for _ in 0..r.u32().unwrap() {
                    played.edits.push((r.u32().unwrap(), r.i32().unwrap()));
                    assert_eq!(r.u32().unwrap(), 0x0001_0000);
                }
            }
            let mut sample = 0;
            for (index, offset) in chunks.iter().enumerate() {
                let chunk = index as u32 + 1;
                let per_chunk = stsc.iter().rev().find(|row| row[0] <= chunk).unwrap()[1];
                let mut at = *offset as usize;
                for _ in 0..per_chunk {
                    let size = sizes[sample] as usize;
                    played.samples.push(file[at..at + size].to_vec());
                    at += size;
                    sample += 1;
                }
            }
            assert_eq!(sample, sizes.len());
            assert_eq!(played.durations.len(), sizes.len());
            tracks.push(played);
        }
        tracks
    }

    fn payloads(batches: &[Vec<Frame>], track: Track) -> Vec<Vec<u8>> {
        batches
            .iter()
            .flatten()
            .filter(|f| f.track == track)
            .map(|f| f.data.to_vec())
            .collect()
    }

    #[test]
    fn a_recording_becomes_a_progressive_file_with_every_frame() {
        let batches = seconds(3, 5000);
        let (fragmented, ends) = record(&tracks(), batches.clone());
        let (summary, output) = finalize_bytes(&fragmented);
        let summary = summary.unwrap();
        assert_eq!((summary.video_frames, summary.audio_frames), (90, 140));
        assert_eq!((summary.bytes, summary.discarded_bytes), (output.len() as u64, 0));
        assert_eq!(ends.last().unwrap(), &(fragmented.len(), 90, 140));
        let played = play(&output);
        assert_eq!(played.len(), 2);
        let (video, audio) = (&played[0], &played[1]);
        assert_eq!(video.handler, b"vide");
        assert_eq!(video.samples, payloads(&batches, Track::Video));
        assert_eq!(audio.samples, payloads(&batches, Track::Audio));
        // One chunk per track per fragment.
        assert_eq!(
            find(&output, b"moov")
                .unwrap()
                .unwrap()
                .body
                .windows(4)
                .filter(|w| w == b"stco")
                .count(),
            2
        );

        // Video: decode times from ms, offsets shifted by 33 ms to be non-negative, an edit from
        // the first frame shown to the end of the last; keyframes once a second.
        assert_eq!(video.timescale, 90_000);
        assert_eq!(video.durations[..3], [2970, 2970, 3060]);
        assert_eq!(video.offsets[..3], [2970, 5940, 0]);
        assert_eq!(video.sync.as_deref(), Some(&[1, 31, 61][..]));
        assert_eq!(video.edits, [(2999, 2970)]);
        // Audio: exactly 1024 a frame, no offsets, no edit (both tracks start together).
        assert_eq!(audio.timescale, 48_000);
        assert!(audio.durations.iter().all(|d| *d == 1024));
        assert!(audio.offsets.is_empty() && audio.edits.is_empty() && audio.sync.is_none());
        assert_eq!(audio.tkhd_duration, 2987);
        assert_eq!(summary.duration_ms, 2999);
    }

    #[test]
    fn a_track_that_starts_later_keeps_its_distance() {
        // Audio from 1000 ms, video from 1500 ms, no reordering.
        let mut first: Vec<Frame> = (0..47).map(|i| audio(1000 + i * 1024 * 1000 / 48000)).collect();
        first.extend((0..15).map(|i| video(1500 + i * 33, 0, i == 0)));
        first.sort_by_key(|f| f.dts);
        let second: Vec<Frame> = (15..30).map(|i| video(1500 + i * 33, 0, false)).collect();
        let (fragmented, _) = record(&tracks(), vec![first, second]);
        let (summary, output) = finalize_bytes(&fragmented);
        let played = play(&output);
        assert_eq!(played[0].edits, [(500, -1), (990, 0)]);
        assert_eq!(played[0].tkhd_duration, 1490);
        assert!(played[1].edits.is_empty());
        assert_eq!(summary.unwrap().duration_ms, 1490);
    }

    #[test]
    fn a_cut_recording_keeps_its_whole_fragments() {
        let (fragmented, ends) = record(&tracks(), seconds(4, 0));
        let init_len = init_segment(&tracks()).len();
        for cut in (0..fragmented.len())
            .step_by(97)
            .chain([init_len, ends[0].0, ends[0].0 + 1])
        {
            let (result, output) = finalize_bytes(&fragmented[..cut]);
            let whole = ends.iter().rev().find(|(end, _, _)| *end <= cut);
            match (result, whole) {
                (Ok(summary), Some(&(end, video, audio))) => {
                    assert_eq!(
                        (summary.video_frames, summary.audio_frames),
                        (video, audio),
                        "cut at {cut}"
                    );
                    assert_eq!(summary.discarded_bytes, (cut - end) as u64);
                    let played = play(&output);
                    assert_eq!(played[0].samples.len() as u64, video);
                }
                (Err(Mp4Error::NoMedia), None) => {}
                (result, whole) => panic!("cut at {cut}: {result:?} with whole fragments to {whole:?}"),
            }
        }
    }

    #[test]
    fn zeros_after_the_last_fragment_end_the_recording() {
        let (mut fragmented, ends) = record(&tracks(), seconds(2, 0));
        fragmented.resize(fragmented.len() + 4096, 0);
        let (summary, _) = finalize_bytes(&fragmented);
        let summary = summary.unwrap();
        assert_eq!(
            (summary.video_frames, summary.audio_frames),
            (ends.last().unwrap().1, ends.last().unwrap().2)
        );
        assert_eq!(summary.discarded_bytes, 4096);
    }

    #[test]
    fn other_files_are_errors() {
        for bytes in [
            &b""[..],
            b"hello world, this is not an mp4 file",
            &[0, 0, 0, 8, b'f', b't', b'y', b'p'],
        ] {
            assert!(finalize_bytes(bytes).0.is_err());
        }
        // A fragment whose sample points outside its mdat.
        let (mut fragmented, ends) = record(&tracks(), seconds(2, 0));
        let init_len = init_segment(&tracks()).len();
        let trun = init_len
            + fragmented[init_len..ends[0].0]
                .windows(4)
                .position(|w| w == b"trun")
                .unwrap();
        fragmented[trun + 12..trun + 16].copy_from_slice(&u32::MAX.to_be_bytes()[..]);
        assert!(matches!(
            finalize_bytes(&fragmented).0,
            Err(Mp4Error::Malformed(_))
        ));
        let missing = std::path::Path::new("/nonexistent/recording.mp4");
        assert!(matches!(finalize(missing, missing), Err(Mp4Error::Io(_))));
        // Finalizing a recording onto itself would destroy it.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("recording.mp4");
        std::fs::write(&path, record(&tracks(), seconds(1, 0)).0).unwrap();
        assert!(matches!(finalize(&path, &path), Err(Mp4Error::Io(_))));
        assert!(finalize(&path, &dir.path().join("out.mp4")).is_ok());
    }

    #[test]
    fn wide_chunk_offsets_are_co64() {
        let (fragmented, _) = record(&tracks(), seconds(1, 0));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.mp4");
        std::fs::write(&path, fragmented).unwrap();
        let recording = recording::read(&mut File::open(&path).unwrap()).unwrap();
        let timelines = presentation(&recording.tracks);
        let narrow = head(&recording, &timelines, 0, false).unwrap();
        let wide = head(&recording, &timelines, 1 << 33, true).unwrap();
        assert_eq!(
            wide.len() - narrow.len(),
            4 * recording.tracks.iter().map(|t| t.chunks.len()).sum::<usize>()
        );
        let at = wide.windows(4).position(|w| w == b"co64").unwrap();
        assert_eq!(wide[at + 12..at + 20], (1u64 << 33).to_be_bytes());
    }

    /// xorshift64*: deterministic randomness without a dependency.
    pub(crate) struct Random(pub(crate) u64);

    impl Random {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        pub(crate) fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    #[test]
    fn random_bytes_and_damaged_recordings_never_panic() {
        let mut random = Random(0x9E37_79B9_7F4A_7C15);
        let (good, _) = record(&tracks(), seconds(2, 0));
        let mut outcomes: HashMap<&str, usize> = HashMap::new();
        for round in 0..400 {
            let bytes: Vec<u8> = match round % 4 {
                // Noise, sometimes behind a real init segment.
                0 => (0..random.below(2000)).map(|_| random.next() as u8).collect(),
                1 => {
                    let mut bytes = init_segment(&tracks());
                    bytes.extend((0..random.below(2000)).map(|_| random.next() as u8));
                    bytes
                }
                // A real recording with bytes changed, then maybe cut.
                _ => {
                    let mut bytes = good.clone();
                    for _ in 0..1 + random.below(8) {
                        let at = random.below(bytes.len());
                        bytes[at] = random.next() as u8;
                    }
                    if round % 4 == 3 {
                        bytes.truncate(random.below(bytes.len()));
                    }
                    bytes
                }
            };
            let (result, output) = finalize_bytes(&bytes);
            let outcome = match result {
                Ok(summary) => {
                    assert_eq!(summary.bytes, output.len() as u64);
                    "ok"
                }
                Err(Mp4Error::Malformed(_)) => "malformed",
                Err(Mp4Error::NoMedia) => "no media",
                Err(e) => panic!("{e}"),
            };
            *outcomes.entry(outcome).or_default() += 1;
        }
        // The mix exercised both paths.
        assert!(outcomes["ok"] > 20 && outcomes["malformed"] > 20, "{outcomes:?}");
    }
}
