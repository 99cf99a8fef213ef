//! The MP4 layer on a real encoder's output: x264 with B-frames and AAC from ffmpeg, recorded as
//! fragments, finalized, and checked with ffprobe and ffmpeg (independent readers and decoders).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use oxcast_archive::mp4::{FragmentWriter, Mp4Error, Tracks, finalize, init_segment};
use oxcast_media::flv::file_tags;
use oxcast_media::{Demuxer, Frame, MediaEvent, Track};

/// Runs a tool and returns its stdout and stderr; a missing tool fails the test with a hint.
fn run(tool: &str, args: &[&str]) -> (String, String) {
    let output = Command::new(tool).args(args).output().unwrap_or_else(|e| {
        panic!(
            "cannot run {tool}: {e}. Install ffmpeg (Debian: apt-get install ffmpeg), which provides {tool}"
        )
    });
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{tool} {args:?} failed: {stderr}");
    (stdout, stderr)
}

/// Four seconds of 320x240 H.264 with two B-frames and a GOP a second, and AAC, as FLV.
fn encode(dir: &Path) -> PathBuf {
    let flv = dir.join("source.flv");
    run(
        "ffmpeg",
        &[
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine=sample_rate=48000",
            "-t",
            "4",
            "-c:v",
            "libx264",
            "-g",
            "30",
            "-bf",
            "2",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-f",
            "flv",
            flv.to_str().unwrap(),
        ],
    );
    flv
}

/// The FLV's configurations and frames, as the ingest hands them to the recorder.
fn demux(flv: &Path) -> (Tracks, Vec<Frame>) {
    let file = Bytes::from(std::fs::read(flv).unwrap());
    let mut demuxer = Demuxer::new();
    let mut tracks = Tracks::default();
    let mut frames = Vec::new();
    for tag in file_tags(&file).unwrap() {
        let event = match tag.kind {
            9 => demuxer.video(tag.timestamp, &tag.body).unwrap(),
            8 => demuxer.audio(tag.timestamp, &tag.body).unwrap(),
            _ => None,
        };
        match event {
            Some(MediaEvent::VideoConfig(config)) => tracks.video = Some(config),
            Some(MediaEvent::AudioConfig(config)) => tracks.audio = Some(config),
            Some(MediaEvent::Frame(frame)) => frames.push(frame),
            None => {}
        }
    }
    (tracks, frames)
}

/// Records `frames` in batches that end at each keyframe after a second (so that fragments, one
/// frame behind the batches, open with keyframes). Returns the end of each fragment in the file
/// with the video and audio frames up to it.
fn record(tracks: &Tracks, frames: &[Frame], path: &Path) -> Vec<(u64, u64, u64)> {
    let mut file = std::fs::File::create(path).unwrap();
    let init = init_segment(tracks);
    std::io::Write::write_all(&mut file, &init).unwrap();
    let mut writer = FragmentWriter::new(tracks);
    let mut fragments = Vec::new();
    let mut batch: Vec<Frame> = Vec::new();
    for frame in frames {
        let cut = frame.track == Track::Video
            && frame.keyframe
            && batch.first().is_some_and(|first| frame.dts - first.dts >= 1000);
        batch.push(frame.clone());
        if cut {
            fragments.extend(writer.push(std::mem::take(&mut batch)));
        }
    }
    fragments.extend(writer.push(batch));
    fragments.extend(writer.finish());
    let (mut end, mut video, mut audio) = (init.len() as u64, 0, 0);
    let mut ends = Vec::new();
    for fragment in fragments {
        // One vectored write per fragment, as the recorder does.
        fragment.write_to(&mut file).unwrap();
        end += fragment.len();
        video += u64::from(fragment.video_frames);
        audio += u64::from(fragment.audio_frames);
        ends.push((end, video, audio));
    }
    file.sync_all().unwrap();
    ends
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Stream {
    frames: u64,
    duration: Option<f64>,
    start: f64,
}

/// (video, audio) as ffprobe sees them; `count` decodes every frame, else the container's counts.
fn probe(path: &Path, count: bool) -> (Stream, Stream) {
    let entries = if count {
        "stream=codec_type,nb_read_frames,duration,start_time"
    } else {
        "stream=codec_type,nb_frames,duration,start_time"
    };
    let mut args = vec!["-v", "error"];
    if count {
        args.push("-count_frames");
    }
    args.extend([
        "-show_entries",
        entries,
        "-of",
        "csv=p=0:nk=0",
        path.to_str().unwrap(),
    ]);
    let (stdout, stderr) = run("ffprobe", &args);
    assert!(stderr.is_empty(), "ffprobe {}: {stderr}", path.display());
    let mut video = None;
    let mut audio = None;
    for line in stdout.lines() {
        let fields: std::collections::HashMap<&str, &str> = line
            .split(',')
            .filter_map(|field| field.split_once('='))
            .collect();
        let stream = Stream {
            frames: fields[if count { "nb_read_frames" } else { "nb_frames" }]
                .parse()
                .unwrap(),
            duration: fields["duration"].parse().ok(),
            start: fields["start_time"].parse().unwrap(),
        };
        match fields["codec_type"] {
            "video" => video = Some(stream),
            "audio" => audio = Some(stream),
            other => panic!("unexpected stream {other}"),
        }
    }
    (video.unwrap(), audio.unwrap())
}

fn top_level_boxes(path: &Path) -> Vec<String> {
    let file = std::fs::read(path).unwrap();
    let mut at = 0;
    let mut boxes = Vec::new();
    while at + 8 <= file.len() {
        let size = u32::from_be_bytes(file[at..at + 4].try_into().unwrap()) as usize;
        boxes.push(String::from_utf8_lossy(&file[at + 4..at + 8]).into_owned());
        assert!(size >= 8, "box size {size}");
        at += size;
    }
    assert_eq!(at, file.len());
    boxes
}

fn assert_decodes_cleanly(path: &Path) {
    let (_, stderr) = run(
        "ffmpeg",
        &["-v", "error", "-i", path.to_str().unwrap(), "-f", "null", "-"],
    );
    assert!(stderr.is_empty(), "decoding {}: {stderr}", path.display());
}

#[test]
fn a_recording_of_a_real_encode_plays_like_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let flv = encode(dir.path());
    let (tracks, frames) = demux(&flv);
    let video_frames: Vec<&Frame> = frames.iter().filter(|f| f.track == Track::Video).collect();
    assert!(
        video_frames.windows(2).any(|w| w[1].pts < w[0].pts),
        "the source has no B-frames"
    );
    let (source_video, source_audio) = probe(&flv, true);
    // ffmpeg's own MP4 of the same stream, for durations.
    let reference = dir.path().join("reference.mp4");
    run(
        "ffmpeg",
        &[
            "-v",
            "error",
            "-i",
            flv.to_str().unwrap(),
            "-c",
            "copy",
            reference.to_str().unwrap(),
        ],
    );
    let (reference_video, reference_audio) = probe(&reference, false);

    let fragmented = dir.path().join("recording.mp4.part");
    let ends = record(&tracks, &frames, &fragmented);
    assert!(ends.len() >= 4, "{} fragments", ends.len());

    // The live file itself is readable.
    let (video, audio) = probe(&fragmented, true);
    assert_eq!(
        (video.frames, audio.frames),
        (source_video.frames, source_audio.frames)
    );
    assert_decodes_cleanly(&fragmented);

    let output = dir.path().join("recording.mp4");
    let summary = finalize(&fragmented, &output).unwrap();
    assert_eq!(
        (summary.video_frames, summary.audio_frames),
        (source_video.frames, source_audio.frames)
    );
    assert_eq!(summary.bytes, std::fs::metadata(&output).unwrap().len());
    assert_eq!(summary.discarded_bytes, 0);
    assert_eq!(top_level_boxes(&output), ["ftyp", "moov", "mdat"]);
    assert_decodes_cleanly(&output);

    let (video, audio) = probe(&output, true);
    assert_eq!(
        (video.frames, audio.frames),
        (source_video.frames, source_audio.frames)
    );
    for (ours, theirs) in [(video, reference_video), (audio, reference_audio)] {
        let (ours, theirs) = (ours.duration.unwrap(), theirs.duration.unwrap());
        assert!(
            (ours - theirs).abs() < 0.1,
            "duration {ours} against ffmpeg's {theirs}"
        );
    }
    // A/V sync: the video starts as long after the audio as in the source.
    let lead = |video: Stream, audio: Stream| video.start - audio.start;
    assert!(
        (lead(video, audio) - lead(source_video, source_audio)).abs() < 0.002,
        "video - audio start: {video:?} {audio:?} against the source's {source_video:?} {source_audio:?}"
    );
    assert!(
        video.start.min(audio.start).abs() < 0.001,
        "the first frame shown at 0: {video:?} {audio:?}"
    );
    let longest = video.duration.unwrap().max(audio.duration.unwrap() + audio.start);
    assert!(
        (summary.duration_ms as f64 / 1000.0 - longest).abs() < 0.05,
        "{summary:?} against {longest}"
    );
}

#[test]
fn a_recording_cut_anywhere_finalizes_to_its_whole_fragments() {
    let dir = tempfile::tempdir().unwrap();
    let flv = encode(dir.path());
    let (tracks, frames) = demux(&flv);
    let fragmented = dir.path().join("recording.mp4.part");
    let ends = record(&tracks, &frames, &fragmented);
    let whole = std::fs::read(&fragmented).unwrap();
    let cut_path = dir.path().join("cut.mp4.part");
    let output = dir.path().join("cut.mp4");
    let mut finalized = 0;
    for (round, cut) in (0..whole.len()).step_by(997).enumerate() {
        std::fs::write(&cut_path, &whole[..cut]).unwrap();
        let result = finalize(&cut_path, &output);
        let last_whole = ends.iter().rev().find(|(end, _, _)| *end <= cut as u64);
        match (result, last_whole) {
            (Ok(summary), Some(&(end, video, audio))) => {
                assert_eq!(
                    (summary.video_frames, summary.audio_frames),
                    (video, audio),
                    "cut at {cut}"
                );
                assert_eq!(summary.discarded_bytes, cut as u64 - end);
                // Every cut is read by ffprobe; every fifth is decoded whole.
                let (probed_video, probed_audio) = probe(&output, false);
                assert_eq!(
                    (probed_video.frames, probed_audio.frames),
                    (video, audio),
                    "cut at {cut}"
                );
                if round % 5 == 0 {
                    assert_decodes_cleanly(&output);
                }
                finalized += 1;
            }
            (Err(Mp4Error::NoMedia), None) => {}
            (result, last_whole) => panic!("cut at {cut}: {result:?}, whole fragments to {last_whole:?}"),
        }
    }
    assert!(finalized > 100, "{finalized} cuts finalized");
}
