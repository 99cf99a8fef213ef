//! Fragments of a live recording: one `moof` + `mdat` per batch of frames (ISO 14496-12 §8.8).
//!
//! Timing: every decode time is counted from one zero, the earliest frame of the first batch of
//! either track, so the tracks keep their relative start. Video ticks at 90 kHz from the frames'
//! millisecond timestamps. Audio ticks at its sample rate and advances exactly one AAC frame per
//! frame, so millisecond rounding cannot make it drift. A sample's duration is the gap to the next
//! frame's decode time, so each track's last frame is held back until the next batch shows it.

use std::io::{self, IoSlice, Write};

use bytes::Bytes;
use oxcast_media::{Frame, Track};

use crate::mp4::box_writer::BoxWriter;
use crate::mp4::{AUDIO_TRACK_ID, Tracks, VIDEO_TIMESCALE, VIDEO_TRACK_ID};

/// `sample_flags` (§8.8.3.1): a sync sample depends on no other...
const SYNC_SAMPLE: u32 = 0x0200_0000;
/// ...and any other depends on others and is not a sync sample.
const NON_SYNC_SAMPLE: u32 = 0x0101_0000;
/// `tfhd` flag: data offsets count from the start of the `moof` (§8.8.7.1).
const DEFAULT_BASE_IS_MOOF: u32 = 0x02_0000;
/// `trun` flags (§8.8.8.1).
const DATA_OFFSET_PRESENT: u32 = 0x1;
const SAMPLE_DURATION_PRESENT: u32 = 0x100;
const SAMPLE_SIZE_PRESENT: u32 = 0x200;
const SAMPLE_FLAGS_PRESENT: u32 = 0x400;
const SAMPLE_COMPOSITION_TIME_OFFSETS_PRESENT: u32 = 0x800;
/// A lone video frame at the end lasts one frame at 30 fps.
const DEFAULT_VIDEO_DURATION: u32 = VIDEO_TIMESCALE / 30;
/// Audio decode time follows the frame count; only a gap of more than this many frames in the
/// timestamps (the publisher dropped audio) moves it to the timestamps again.
const AUDIO_GAP_FRAMES: u64 = 2;

/// One fragment: `moof` and the `mdat` header, then the frames' payloads in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fragment {
    pub header: Vec<u8>,
    /// Written after `header`, in order; not copied into it.
    pub payloads: Vec<Bytes>,
    pub video_frames: u32,
    pub audio_frames: u32,
}

impl Fragment {
    /// Bytes in the file: header and payloads.
    pub fn len(&self) -> u64 {
        let payloads: u64 = self.payloads.iter().map(|p| p.len() as u64).sum();
        self.header.len() as u64 + payloads
    }

    /// Never true: a fragment has at least one frame.
    pub fn is_empty(&self) -> bool {
        self.header.is_empty()
    }

    /// Header and payloads, for one vectored write.
    pub fn io_slices(&self) -> Vec<IoSlice<'_>> {
        let mut slices = Vec::with_capacity(1 + self.payloads.len());
        slices.push(IoSlice::new(&self.header));
        slices.extend(self.payloads.iter().map(|p| IoSlice::new(p)));
        slices
    }

    /// Writes the whole fragment with vectored writes, resuming after partial ones.
    pub fn write_to<W: Write + ?Sized>(&self, out: &mut W) -> io::Result<()> {
        let mut all = self.io_slices();
        let mut slices = &mut all[..];
        let mut left = self.len();
        while left > 0 {
            match out.write_vectored(slices) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => {
                    // A writer claiming more than it was given would make `advance_slices` panic.
                    let written = written.min(usize::try_from(left).unwrap_or(usize::MAX));
                    left -= written as u64;
                    IoSlice::advance_slices(&mut slices, written);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Turns batches of frames (about a second of both tracks, in arrival order) into fragments.
#[derive(Debug)]
pub struct FragmentWriter {
    /// `mfhd` sequence number of the last fragment.
    sequence: u32,
    /// Milliseconds timestamp that is decode time zero.
    origin: Option<i64>,
    video: Option<TrackClock>,
    audio: Option<TrackClock>,
}

impl FragmentWriter {
    /// A writer for the tracks of the init segment; frames of other tracks are ignored.
    pub fn new(tracks: &Tracks) -> Self {
        Self {
            sequence: 0,
            origin: None,
            video: tracks.video.as_ref().map(|_| TrackClock::new(Clock::Video)),
            audio: tracks.audio.as_ref().map(|aac| {
                TrackClock::new(Clock::Audio {
                    rate: aac.sample_rate,
                    frame_samples: u64::from(aac.frame_samples()),
                })
            }),
        }
    }

    /// The fragment for a batch: every frame received so far except each track's last, which
    /// waits for its duration. `None` when no frame is ready yet.
    ///
    /// Fragments run one frame behind the batches: for fragments that open with a keyframe, end
    /// each batch with the keyframe that starts the next group of pictures.
    pub fn push(&mut self, frames: impl IntoIterator<Item = Frame>) -> Option<Fragment> {
        let (has_video, has_audio) = (self.video.is_some(), self.audio.is_some());
        let frames: Vec<Frame> = frames
            .into_iter()
            .filter(|frame| match frame.track {
                Track::Video => has_video,
                Track::Audio => has_audio,
            })
            .filter(|frame| {
                // A sample size is 32 bits; RTMP messages are at most 16 MiB, so this never drops.
                let fits = u32::try_from(frame.data.len()).is_ok();
                if !fits {
                    tracing::warn!(bytes = frame.data.len(), "frame too large for MP4, dropped");
                }
                fits
            })
            .collect();
        // An empty batch leaves every frame held back: nothing to write.
        let first = frames.iter().map(|f| f.dts).min()?;
        let origin = *self.origin.get_or_insert(first);
        let mut video = Run::default();
        let mut audio = Run::default();
        for frame in frames {
            let run = match frame.track {
                Track::Video => &mut video,
                Track::Audio => &mut audio,
            };
            if let Some(clock) = self.clock(frame.track) {
                clock.push(frame, origin, run);
            }
        }
        self.fragment(video, audio)
    }

    /// The last fragment: the frames held back, the last of each track lasting as long as the one
    /// before it.
    pub fn finish(mut self) -> Option<Fragment> {
        let mut runs = [Run::default(), Run::default()];
        for (clock, run) in [self.video.as_mut(), self.audio.as_mut()]
            .into_iter()
            .zip(&mut runs)
        {
            if let Some(clock) = clock {
                clock.flush(run);
            }
        }
        let [video, audio] = runs;
        self.fragment(video, audio)
    }

    fn clock(&mut self, track: Track) -> Option<&mut TrackClock> {
        match track {
            Track::Video => self.video.as_mut(),
            Track::Audio => self.audio.as_mut(),
        }
    }

    fn fragment(&mut self, video: Run, audio: Run) -> Option<Fragment> {
        let runs: Vec<(u32, Run)> = [(VIDEO_TRACK_ID, video), (AUDIO_TRACK_ID, audio)]
            .into_iter()
            .filter(|(_, run)| !run.samples.is_empty())
            .collect();
        if runs.is_empty() {
            return None;
        }
        self.sequence = self.sequence.wrapping_add(1);
        let samples: usize = runs.iter().map(|(_, run)| run.samples.len()).sum();
        // A moof holds 16 bytes a sample: a batch would need 2^28 frames to pass 4 GiB.
        let mut w = BoxWriter::with_capacity(64 + 100 * runs.len() + 16 * samples);
        w.begin(b"moof");
        w.begin_full(b"mfhd", 0, 0);
        w.u32(self.sequence);
        w.end();
        let mut data_offsets = Vec::with_capacity(runs.len());
        for (track_id, run) in &runs {
            data_offsets.push(traf(&mut w, *track_id, run));
        }
        w.end();

        let payload_len: u64 = runs
            .iter()
            .flat_map(|(_, run)| &run.samples)
            .map(|s| u64::from(s.size))
            .sum();
        let moof_len = w.len() as u64;
        // A 32-bit mdat size when it fits, else the 64-bit form (§4.2).
        let mdat_header_len = if payload_len + 8 <= u64::from(u32::MAX) {
            8
        } else {
            16
        };
        let mut data_start = moof_len + mdat_header_len;
        for ((_, run), at) in runs.iter().zip(data_offsets) {
            // Fragments are about a second: far below the 2 GiB a signed offset reaches.
            w.patch_u32(at, u32::try_from(data_start).unwrap_or(u32::MAX));
            data_start += run.samples.iter().map(|s| u64::from(s.size)).sum::<u64>();
        }
        if let Ok(size) = u32::try_from(payload_len + 8) {
            w.u32(size);
            w.bytes(b"mdat");
        } else {
            w.u32(1);
            w.bytes(b"mdat");
            w.u64(payload_len + 16);
        }
        let count = |track| {
            runs.iter()
                .find(|(id, _)| *id == track)
                .map_or(0, |(_, run)| u32::try_from(run.samples.len()).unwrap_or(u32::MAX))
        };
        let (video_frames, audio_frames) = (count(VIDEO_TRACK_ID), count(AUDIO_TRACK_ID));
        let payloads = runs
            .into_iter()
            .flat_map(|(_, run)| run.samples)
            .map(|sample| sample.data)
            .collect();
        Some(Fragment {
            header: w.finish()?,
            payloads,
            video_frames,
            audio_frames,
        })
    }
}

/// `traf` for one track's run of samples; returns where its `trun` data offset goes.
fn traf(w: &mut BoxWriter, track_id: u32, run: &Run) -> usize {
    w.begin(b"traf");
    w.begin_full(b"tfhd", 0, DEFAULT_BASE_IS_MOOF);
    w.u32(track_id);
    w.end();
    w.begin_full(b"tfdt", 1, 0);
    w.u64(run.base_decode_time);
    w.end();
    // Version 1 makes composition offsets signed: a frame may be shown before its decode time
    // (pts < dts) without shifting every offset.
    let offsets = run.samples.iter().any(|s| s.composition_offset != 0);
    let mut flags =
        DATA_OFFSET_PRESENT | SAMPLE_DURATION_PRESENT | SAMPLE_SIZE_PRESENT | SAMPLE_FLAGS_PRESENT;
    if offsets {
        flags |= SAMPLE_COMPOSITION_TIME_OFFSETS_PRESENT;
    }
    w.begin_full(b"trun", u8::from(offsets), flags);
    w.u32(u32::try_from(run.samples.len()).unwrap_or(u32::MAX));
    let data_offset = w.position();
    w.u32(0);
    for sample in &run.samples {
        w.u32(sample.duration);
        w.u32(sample.size);
        w.u32(if sample.sync { SYNC_SAMPLE } else { NON_SYNC_SAMPLE });
        if offsets {
            w.i32(sample.composition_offset);
        }
    }
    w.end();
    w.end();
    data_offset
}

#[derive(Debug, Clone, Copy)]
enum Clock {
    Video,
    Audio { rate: u32, frame_samples: u64 },
}

/// One track's timing: its held-back frame and the decode time of the frame before.
#[derive(Debug)]
struct TrackClock {
    clock: Clock,
    held: Option<Held>,
    last_duration: Option<u32>,
}

#[derive(Debug)]
struct Held {
    decode_time: u64,
    composition_offset: i32,
    sync: bool,
    data: Bytes,
}

/// A track's samples in one fragment.
#[derive(Debug, Default)]
struct Run {
    base_decode_time: u64,
    samples: Vec<Sample>,
}

#[derive(Debug)]
struct Sample {
    duration: u32,
    size: u32,
    composition_offset: i32,
    sync: bool,
    data: Bytes,
}

impl Run {
    fn push(&mut self, held: Held, duration: u32) {
        if self.samples.is_empty() {
            self.base_decode_time = held.decode_time;
        }
        self.samples.push(Sample {
            duration,
            size: u32::try_from(held.data.len()).unwrap_or(u32::MAX),
            composition_offset: held.composition_offset,
            sync: held.sync,
            data: held.data,
        });
    }
}

impl TrackClock {
    fn new(clock: Clock) -> Self {
        Self {
            clock,
            held: None,
            last_duration: None,
        }
    }

    fn push(&mut self, frame: Frame, origin: i64, run: &mut Run) {
        let last = self.held.as_ref().map(|held| held.decode_time);
        let decode_time = match self.clock {
            // Strictly increasing, whatever the publisher's timestamps do.
            Clock::Video => {
                let at = ticks(frame.dts.saturating_sub(origin), VIDEO_TIMESCALE);
                last.map_or(at, |last| at.max(last.saturating_add(1)))
            }
            Clock::Audio { rate, frame_samples } => {
                let at = ticks(frame.dts.saturating_sub(origin), rate);
                match last {
                    None => at,
                    Some(last) if at > last.saturating_add((AUDIO_GAP_FRAMES + 1) * frame_samples) => at,
                    Some(last) => last.saturating_add(frame_samples),
                }
            }
        };
        let composition_offset = match self.clock {
            Clock::Video => {
                let presentation =
                    (i128::from(frame.pts) - i128::from(origin)) * i128::from(VIDEO_TIMESCALE) / 1000;
                let offset = presentation - i128::from(decode_time);
                i32::try_from(offset.clamp(i128::from(i32::MIN), i128::from(i32::MAX))).unwrap_or(0)
            }
            Clock::Audio { .. } => 0,
        };
        if let Some(held) = self.held.take() {
            let duration = u32::try_from(decode_time.saturating_sub(held.decode_time)).unwrap_or(u32::MAX);
            self.last_duration = Some(duration);
            run.push(held, duration);
        }
        self.held = Some(Held {
            decode_time,
            composition_offset,
            sync: frame.keyframe || matches!(self.clock, Clock::Audio { .. }),
            data: frame.data,
        });
    }

    fn flush(&mut self, run: &mut Run) {
        if let Some(held) = self.held.take() {
            let duration = self.last_duration.unwrap_or(match self.clock {
                Clock::Video => DEFAULT_VIDEO_DURATION,
                Clock::Audio { frame_samples, .. } => u32::try_from(frame_samples).unwrap_or(1024),
            });
            run.push(held, duration);
        }
    }
}

/// Milliseconds after the origin in `timescale` ticks; a time before the origin is zero.
fn ticks(ms: i64, timescale: u32) -> u64 {
    let ticks = i128::from(ms.max(0)) * i128::from(timescale) / 1000;
    u64::try_from(ticks).unwrap_or(u64::MAX)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::mp4::box_reader::{BoxReader, children, require};
    use crate::mp4::init::tests::tracks;

    pub(crate) fn video(dts: i64, offset: i64, keyframe: bool) -> Frame {
        Frame {
            track: Track::Video,
            dts,
            pts: dts + offset,
            keyframe,
            data: Bytes::from(format!("video{dts}")),
        }
    }

    pub(crate) fn audio(dts: i64) -> Frame {
        Frame {
            track: Track::Audio,
            dts,
            pts: dts,
            keyframe: true,
            data: Bytes::from(format!("audio{dts}")),
        }
    }

    /// `count` seconds of 30 fps video with composition offsets of 0, +33 and -33 ms (reordered
    /// pairs, decode times not delayed) and 48 kHz AAC (21.33 ms frames, timestamps rounded to ms
    /// like RTMP's), in batches of one second, starting at `start` ms.
    pub(crate) fn seconds(count: i64, start: i64) -> Vec<Vec<Frame>> {
        (0..count)
            .map(|second| {
                let mut frames = Vec::new();
                for i in second * 30..(second + 1) * 30 {
                    let dts = start + i * 1000 / 30;
                    let offset = [0, 33, -33][(i % 3) as usize];
                    frames.push(video(dts, offset, i % 30 == 0));
                }
                for i in (second * 48000 / 1024)..((second + 1) * 48000 / 1024) {
                    frames.push(audio(start + i * 1024 * 1000 / 48000));
                }
                frames.sort_by_key(|f| f.dts);
                frames
            })
            .collect()
    }

    /// Duration, size, flags, composition offset, and the bytes the data offset points to.
    type SampleSummary = (u32, u32, u32, i32, Vec<u8>);
    /// Track id, tfdt, trun version, samples.
    type TrafSummary = (u32, u64, u8, Vec<SampleSummary>);

    /// Each traf of a fragment, read back.
    fn parse(fragment: &Fragment) -> Vec<TrafSummary> {
        let mut file = fragment.header.clone();
        for payload in &fragment.payloads {
            file.extend_from_slice(payload);
        }
        let moof = require(&file, b"moof").unwrap();
        let mut trafs = Vec::new();
        for traf in children(moof.body)
            .map(|c| c.unwrap())
            .filter(|c| &c.kind == b"traf")
        {
            let mut tfhd = BoxReader::new(require(traf.body, b"tfhd").unwrap().body);
            assert_eq!(tfhd.version_flags().unwrap(), (0, DEFAULT_BASE_IS_MOOF));
            let id = tfhd.u32().unwrap();
            let mut tfdt = BoxReader::new(require(traf.body, b"tfdt").unwrap().body);
            assert_eq!(tfdt.version_flags().unwrap().0, 1);
            let base = tfdt.u64().unwrap();
            let mut trun = BoxReader::new(require(traf.body, b"trun").unwrap().body);
            let (version, flags) = trun.version_flags().unwrap();
            let count = trun.u32().unwrap();
            let mut at = trun.i32().unwrap() as usize;
            let mut samples = Vec::new();
            for _ in 0..count {
                let duration = trun.u32().unwrap();
                let size = trun.u32().unwrap();
                let flags_ = trun.u32().unwrap();
                let offset = if flags & SAMPLE_COMPOSITION_TIME_OFFSETS_PRESENT != 0 {
                    trun.i32().unwrap()
                } else {
                    0
                };
                samples.push((
                    duration,
                    size,
                    flags_,
                    offset,
                    file[at..at + size as usize].to_vec(),
                ));
                at += size as usize;
            }
            assert_eq!(trun.remaining(), 0);
            trafs.push((id, base, version, samples));
        }
        trafs
    }

    #[test]
    fn the_last_frame_of_each_track_waits_for_the_next_batch() {
        let mut writer = FragmentWriter::new(&tracks());
        let first = writer
            .push([
                video(1000, 67, true),
                audio(1000),
                video(1033, 133, false),
                audio(1021),
                audio(1043),
            ])
            .unwrap();
        assert_eq!((first.video_frames, first.audio_frames), (1, 2));
        let trafs = parse(&first);
        assert_eq!(trafs.len(), 2);
        let (id, base, version, samples) = &trafs[0];
        assert_eq!((*id, *base, *version), (VIDEO_TRACK_ID, 0, 1));
        assert_eq!(
            samples[0],
            (33 * 90, 9, SYNC_SAMPLE, 67 * 90, b"video1000".to_vec())
        );
        let (id, base, version, samples) = &trafs[1];
        assert_eq!((*id, *base, *version), (AUDIO_TRACK_ID, 0, 0));
        assert_eq!(samples.len(), 2);
        assert!(samples.iter().all(|s| s.0 == 1024 && s.2 == SYNC_SAMPLE));
        assert_eq!(samples[1].4, b"audio1021");

        let second = writer.push([video(1067, 33, false)]).unwrap();
        let trafs = parse(&second);
        assert_eq!(trafs.len(), 1);
        assert_eq!(trafs[0].1, 33 * 90);
        assert_eq!(
            trafs[0].3[0],
            (34 * 90, 9, NON_SYNC_SAMPLE, 133 * 90, b"video1033".to_vec())
        );

        // The end: the held frames, each as long as the one before it.
        let last = writer.finish().unwrap();
        let trafs = parse(&last);
        assert_eq!((trafs[0].1, trafs[0].3[0].0), (67 * 90, 34 * 90));
        assert_eq!((trafs[1].1, trafs[1].3[0].0), (2048, 1024));
        assert_eq!(trafs[1].3[0].4, b"audio1043");
        // Sequence numbers rise by one per fragment.
        let sequence = |f: &Fragment| f.header[20..24].to_vec();
        assert_eq!(
            [sequence(&first), sequence(&second), sequence(&last)],
            [[0, 0, 0, 1], [0, 0, 0, 2], [0, 0, 0, 3]]
        );
    }

    #[test]
    fn audio_counts_frames_not_rounded_milliseconds_and_resyncs_after_a_gap() {
        let mut writer = FragmentWriter::new(&tracks());
        // The first frame of the recording is video: audio starts 10 ms later.
        let mut batch = vec![video(500, 0, true)];
        batch.extend((0..100).map(|i| audio(510 + i * 1024 * 1000 / 48000)));
        let fragment = writer.push(batch).unwrap();
        let trafs = parse(&fragment);
        // The video frame is held back: only audio is in this fragment.
        assert_eq!(trafs.len(), 1);
        let (_, base, _, samples) = &trafs[0];
        assert_eq!(*base, 480);
        assert_eq!(samples.len(), 99);
        assert!(samples.iter().all(|s| s.0 == 1024));
        // 200 ms without audio: the frame before the gap lasts until the next one.
        let resumed = 510 + 100 * 1024 * 1000 / 48000 + 200;
        let fragment = writer.push([audio(resumed), audio(resumed + 21)]).unwrap();
        let trafs = parse(&fragment);
        let (_, base, _, samples) = &trafs[0];
        assert_eq!(*base, 480 + 99 * 1024);
        assert_eq!(samples[0].0, (resumed - 500) as u32 * 48 - (480 + 99 * 1024));
        assert_eq!(samples[1].0, 1024);
    }

    #[test]
    fn video_decode_times_only_rise_and_payloads_are_not_copied() {
        let mut writer = FragmentWriter::new(&Tracks {
            audio: None,
            ..tracks()
        });
        // A timestamp going back, and a repeated one.
        let frames = [
            video(0, 0, true),
            video(40, 0, false),
            video(30, 0, false),
            video(30, 0, false),
            video(80, 0, false),
        ];
        let data: Vec<Bytes> = frames.iter().map(|f| f.data.clone()).collect();
        let fragment = writer.push(frames).unwrap();
        let trafs = parse(&fragment);
        let durations: Vec<u32> = trafs[0].3.iter().map(|s| s.0).collect();
        assert_eq!(durations, [3600, 1, 1, 80 * 90 - 3602]);
        // Composition offsets keep each frame's presentation time.
        let offsets: Vec<i32> = trafs[0].3.iter().map(|s| s.3).collect();
        assert_eq!(offsets, [0, 0, -901, -902]);
        assert!(
            fragment
                .payloads
                .iter()
                .zip(&data)
                .all(|(a, b)| a.as_ptr() == b.as_ptr())
        );
        // Audio frames for a recording without audio are ignored; an empty batch gives nothing.
        assert!(writer.push([audio(90)]).is_none());
        assert!(writer.push([]).is_none());
    }

    #[test]
    fn vectored_writes_resume_after_partial_writes() {
        /// Takes at most 5 bytes a call.
        struct Trickle(Vec<u8>);
        impl Write for Trickle {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                let n = buf.len().min(5);
                self.0.extend_from_slice(&buf[..n]);
                Ok(n)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut writer = FragmentWriter::new(&tracks());
        let fragment = seconds(1, 0)
            .into_iter()
            .find_map(|batch| writer.push(batch))
            .unwrap();
        let mut out = Trickle(Vec::new());
        fragment.write_to(&mut out).unwrap();
        let mut expected = fragment.header.clone();
        fragment
            .payloads
            .iter()
            .for_each(|p| expected.extend_from_slice(p));
        assert_eq!(out.0, expected);
        assert_eq!(fragment.len(), expected.len() as u64);
        // The mdat header closes the header and sizes the payloads.
        let mdat_size = u32::from_be_bytes(
            fragment.header[fragment.header.len() - 8..][..4]
                .try_into()
                .unwrap(),
        );
        assert_eq!(
            u64::from(mdat_size),
            8 + fragment.payloads.iter().map(|p| p.len() as u64).sum::<u64>()
        );
    }
}
