//! One stream's recorder: bus events in, fragments written to the recording as they complete.

use std::fs::File;
use std::sync::Arc;

use oxcast_core::{BusEvent, Store, StreamId, Subscriber};
use oxcast_media::{Frame, MediaEvent, Track};
use tokio_util::task::TaskTracker;

use crate::mp4::{self, Fragment, FragmentWriter, Tracks};
use crate::{ArchiveConfig, Unfinished, finalize};

/// A fragment is written once it holds this much media.
const FRAGMENT_MS: i64 = 1000;

/// What a recorder needs to know about its stream.
pub(crate) struct Recording {
    pub(crate) config: Arc<ArchiveConfig>,
    pub(crate) store: Store,
    pub(crate) stream_id: StreamId,
    pub(crate) public_id: String,
    /// Finalizing runs beside the recorder, which may go on with a new file.
    pub(crate) finalizers: TaskTracker,
}

/// The file being written.
struct Open {
    unfinished: Unfinished,
    /// `None` while a write is in flight (the file is in the blocking pool).
    file: Option<File>,
    writer: FragmentWriter,
    /// Frames of the next fragment.
    pending: Vec<Frame>,
    /// Added to a frame's timestamps so a reconnected publisher, whose clock starts again from
    /// zero, continues the timeline instead of going back.
    shift: i64,
    /// Decode time of the latest frame, after `shift`.
    last_dts: i64,
    /// The publisher changed: the next frame sets a new `shift`.
    rebase: bool,
    /// Video is recorded from its first keyframe on (audio may have started the file).
    video_started: bool,
}

/// Records until the stream ends; each run of unchanged codec configurations is one file.
pub(crate) async fn record(recording: Recording, mut subscriber: Subscriber) {
    let mut tracks = Tracks::default();
    let mut open: Option<Open> = None;
    // Out of disk space: nothing more is recorded for this session.
    let mut stopped = false;
    while let Some(event) = subscriber.recv().await {
        match event {
            BusEvent::Media(MediaEvent::VideoConfig(config)) => {
                if tracks.video.as_deref() != Some(&config) {
                    tracks.video = Some(config);
                    close(&recording, open.take()).await;
                }
            }
            BusEvent::Media(MediaEvent::AudioConfig(config)) => {
                if tracks.audio.as_deref() != Some(&config) {
                    tracks.audio = Some(config);
                    close(&recording, open.take()).await;
                }
            }
            BusEvent::Media(MediaEvent::Frame(frame)) if !stopped => {
                if open.is_none() {
                    match start(&recording, &tracks, &frame).await {
                        Ok(started) => open = started,
                        Err(Stop::NoSpace(why)) => {
                            tracing::warn!(stream_id = %recording.stream_id, "not recording: {why}");
                            stopped = true;
                            continue;
                        }
                        Err(Stop::Failed(why)) => {
                            tracing::error!(stream_id = %recording.stream_id, "cannot record: {why}");
                            stopped = true;
                            continue;
                        }
                    }
                }
                let Some(current) = &mut open else { continue };
                if let Err(stop) = add(&recording, current, frame).await {
                    stopped = true;
                    match stop {
                        Stop::NoSpace(why) => tracing::warn!(stream_id = %recording.stream_id,
                            "recording stopped, what was recorded is kept: {why}"),
                        Stop::Failed(why) => tracing::error!(stream_id = %recording.stream_id,
                            "recording stopped, what was recorded is kept: {why}"),
                    }
                    close(&recording, open.take()).await;
                }
            }
            BusEvent::Media(MediaEvent::Frame(_)) => {}
            BusEvent::Discontinuity => {
                if let Some(current) = &mut open {
                    current.rebase = true;
                }
            }
            BusEvent::End => break,
        }
    }
    close(&recording, open.take()).await;
}

enum Stop {
    NoSpace(String),
    Failed(String),
}

/// Opens a recording at its first usable frame: video starts on a keyframe; a frame of a track
/// whose configuration has not arrived cannot be recorded.
async fn start(recording: &Recording, tracks: &Tracks, frame: &Frame) -> Result<Option<Open>, Stop> {
    let usable = match frame.track {
        Track::Video => tracks.video.is_some() && frame.keyframe,
        Track::Audio => tracks.audio.is_some(),
    };
    if !usable {
        return Ok(None);
    }
    let started_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let (config, stream_id, public_id) = (
        Arc::clone(&recording.config),
        recording.stream_id.clone(),
        recording.public_id.clone(),
    );
    let init = mp4::init_segment(tracks);
    let created = tokio::task::spawn_blocking(move || -> Result<(Unfinished, File), Stop> {
        check_space(&config)?;
        Unfinished::create(&config, &stream_id, &public_id, started_ms, &init)
            .map_err(|e| Stop::Failed(format!("cannot create the recording: {e}")))
    })
    .await
    .map_err(|e| Stop::Failed(e.to_string()))??;
    let (unfinished, file) = created;
    tracing::info!(stream_id = %recording.stream_id, path = %unfinished.part.display(), "recording");
    Ok(Some(Open {
        unfinished,
        file: Some(file),
        writer: FragmentWriter::new(tracks),
        pending: Vec::new(),
        shift: 0,
        last_dts: 0,
        rebase: false,
        video_started: false,
    }))
}

/// Adds a frame; writes a fragment when one is due.
async fn add(recording: &Recording, open: &mut Open, mut frame: Frame) -> Result<(), Stop> {
    if frame.track == Track::Video && !open.video_started {
        if !frame.keyframe {
            return Ok(());
        }
        open.video_started = true;
    }
    if open.rebase {
        open.rebase = false;
        // One frame interval after the last frame, so the two parts do not overlap.
        open.shift = open.last_dts + 33 - frame.dts;
    }
    frame.dts += open.shift;
    frame.pts += open.shift;
    open.last_dts = open.last_dts.max(frame.dts);
    let start = open.pending.first().map_or(frame.dts, |f| f.dts);
    open.pending.push(frame);
    if open.last_dts - start >= FRAGMENT_MS {
        let frames = std::mem::take(&mut open.pending);
        if let Some(fragment) = open.writer.push(frames) {
            write(&mut open.file, fragment, Some(&recording.config)).await?;
        }
    }
    Ok(())
}

/// Writes the held-back frames and hands the file to be finalized.
async fn close(recording: &Recording, open: Option<Open>) {
    let Some(Open {
        unfinished,
        mut file,
        mut writer,
        pending,
        ..
    }) = open
    else {
        return;
    };
    let fragments = [writer.push(pending), writer.finish()];
    for fragment in fragments.into_iter().flatten() {
        if let Err(Stop::NoSpace(why) | Stop::Failed(why)) = write(&mut file, fragment, None).await {
            tracing::error!(stream_id = %recording.stream_id, "the recording's last second is lost: {why}");
            break;
        }
    }
    drop(file);
    let (config, store) = (Arc::clone(&recording.config), recording.store.clone());
    recording
        .finalizers
        .spawn(async move { finalize(&config, &store, unfinished).await });
}

/// One fragment, header and payloads, in one vectored write, then flushed to the disk so a crash
/// loses at most the fragment being written. With `space`, the free space is checked first, in
/// the same trip to the blocking pool.
async fn write(
    slot: &mut Option<File>,
    fragment: Fragment,
    space: Option<&Arc<ArchiveConfig>>,
) -> Result<(), Stop> {
    let Some(mut file) = slot.take() else {
        return Err(Stop::Failed("the recording file is gone".into()));
    };
    let space = space.map(Arc::clone);
    let written = tokio::task::spawn_blocking(move || -> (File, Result<(), Stop>) {
        let result = space.as_deref().map_or(Ok(()), check_space).and_then(|()| {
            fragment
                .write_to(&mut file)
                .and_then(|()| file.sync_data())
                .map_err(|e| Stop::Failed(format!("write failed: {e}")))
        });
        (file, result)
    })
    .await;
    match written {
        Ok((file, result)) => {
            *slot = Some(file);
            result
        }
        Err(e) => Err(Stop::Failed(e.to_string())),
    }
}

/// Blocking: reads the disk's free space.
fn check_space(config: &ArchiveConfig) -> Result<(), Stop> {
    let min = config.min_free_bytes;
    let free = crate::free_bytes(&config.dir)
        .map_err(|e| Stop::Failed(format!("cannot read the free space: {e}")))?;
    if free < min {
        return Err(Stop::NoSpace(format!(
            "{free} bytes free on the storage disk, below archive.min_free_bytes ({min})"
        )));
    }
    Ok(())
}
