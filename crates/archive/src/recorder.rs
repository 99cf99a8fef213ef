//! One stream's recorder: bus events in, fragments written to the recording as they complete.
//!
//! A recording holds one set of codec configurations. A change of configuration starts the next
//! recording at once, unless a change already did within `min_recording_interval`: then the
//! recording goes on, the frames of the track whose configuration differs from the file's are
//! left out (the other track goes on being recorded), and the file takes that track's frames
//! again, from a keyframe, if the configuration comes back to the file's. Once the interval is
//! over, the next frame a recording can start with (a video keyframe; any frame of a stream
//! without video) starts the next recording in the current configuration. A publisher switching
//! configurations at every keyframe thus makes one recording per interval, not one per switch.
//! A track that appears (its configuration comes after the other track's first frames) starts
//! the next recording at once and does not count: that happens at most once per track.

use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use oxcast_core::clock::now_ms;
use oxcast_core::{BusEvent, Notifier, RecordingStats, Store, StreamId, Subscriber};
use oxcast_media::{Frame, MediaEvent, Rebaser, Track};
use tokio::time::{Duration, Instant};
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::mp4::{self, Fragment, FragmentWriter, Tracks};
use crate::{ArchiveConfig, Unfinished, finalize};

/// A fragment is written once its frames' timestamps span this much media...
const FRAGMENT_MS: i64 = 1000;
/// ...and a wall-clock-bound write counts as a publisher whose clock is stuck (rather than one
/// that paused) when its last frame arrived less than this long before.
const STILL_SENDING: Duration = Duration::from_secs(1);

/// What a recorder needs to know about its stream.
pub(crate) struct Recorder {
    pub(crate) config: Arc<ArchiveConfig>,
    pub(crate) store: Store,
    /// Told when a recording is listed (`archive.ready`).
    pub(crate) notifier: Notifier,
    pub(crate) stream_id: StreamId,
    pub(crate) public_id: String,
    /// Finalizing runs beside the recorder, which may go on with a new file.
    pub(crate) finalizers: TaskTracker,
    /// What the API shows of the recording in progress.
    pub(crate) board: Arc<RecordingBoard>,
    /// Bytes written, for `/metrics`.
    pub(crate) bytes_written: metrics::Counter,
}

/// The recording in progress, as the API shows it: updated after each fragment is written.
#[derive(Debug, Default)]
pub(crate) struct RecordingBoard {
    bytes: AtomicU64,
    duration_ms: AtomicU64,
}

impl RecordingBoard {
    pub(crate) fn stats(&self) -> RecordingStats {
        RecordingStats {
            bytes: self.bytes.load(Ordering::Relaxed),
            duration_ms: self.duration_ms.load(Ordering::Relaxed),
        }
    }

    /// A new file starts.
    fn restart(&self) {
        self.bytes.store(0, Ordering::Relaxed);
        self.duration_ms.store(0, Ordering::Relaxed);
    }
}

/// The recorder's state across its files.
#[derive(Default)]
struct Session {
    /// The stream's current codec configurations.
    tracks: Tracks,
    open: Option<Open>,
    /// Out of disk space: nothing more is recorded for this session.
    stopped: bool,
    /// When a configuration change last started a recording.
    last_switch: Option<Instant>,
}

/// The file being written.
struct Open {
    unfinished: Unfinished,
    /// `None` while a write is in flight (the file is in the blocking pool).
    file: Option<File>,
    writer: FragmentWriter,
    /// The codec configurations the file was made with.
    tracks: Tracks,
    /// Frames of the next fragment, their payload bytes, and when the first of them arrived.
    pending: Vec<Frame>,
    pending_bytes: u64,
    pending_since: Option<Instant>,
    last_arrival: Option<Instant>,
    /// The recording's timeline: a reconnected publisher, whose clock starts again from zero,
    /// continues it instead of going back.
    timeline: Rebaser,
    /// Video is recorded from a keyframe: at the start (audio may have started the file), and
    /// after frames in another configuration were left out.
    video_started: bool,
    /// Frames left out because their track's configuration was not the file's.
    left_out: u64,
    /// The first frame's time on the recording's timeline: the duration so far counts from it.
    first_dts: Option<i64>,
    /// Each warning is logged once per recording.
    warned_size: bool,
    warned_clock: bool,
    warned_changes: bool,
}

/// Records until the stream ends.
pub(crate) async fn record(recorder: Recorder, mut subscriber: Subscriber) {
    let mut session = Session::default();
    // Writes a fragment whose first frame arrived max_fragment_wait ago, whatever the timestamps.
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    let mut armed = None;
    loop {
        let due = session
            .open
            .as_ref()
            .and_then(|open| open.pending_since)
            .map(|since| since + recorder.config.max_fragment_wait);
        if due != armed {
            if let Some(due) = due {
                timer.as_mut().reset(due);
            }
            armed = due;
        }
        let event = tokio::select! {
            // First, so a due fragment is written before the next frame is looked at.
            biased;
            () = &mut timer, if armed.is_some() => {
                armed = None;
                if let Some(open) = &mut session.open
                    && let Err(stop) = write_pending(&recorder, open, Cut::Waited).await
                {
                    stopped(&recorder, &mut session, stop).await;
                }
                continue;
            }
            event = subscriber.recv() => event,
        };
        let Some(event) = event else { break };
        match event {
            BusEvent::Media(config @ (MediaEvent::VideoConfig(_) | MediaEvent::AudioConfig(_))) => {
                if session.tracks.update(&config) {
                    configuration_changed(&recorder, &mut session).await;
                }
            }
            BusEvent::Media(MediaEvent::Frame(frame)) if !session.stopped => {
                frame_arrived(&recorder, &mut session, frame).await;
            }
            BusEvent::Media(MediaEvent::Frame(_)) => {}
            BusEvent::Discontinuity => {
                if let Some(current) = &mut session.open {
                    current.timeline.rebase();
                }
            }
            BusEvent::End => break,
        }
    }
    close(&recorder, session.open.take()).await;
}

/// The stream's configurations changed: the next recording starts now if allowed; otherwise the
/// file goes on without the frames in the new configuration.
async fn configuration_changed(recorder: &Recorder, session: &mut Session) {
    let now = Instant::now();
    let allowed = switch_allowed(recorder, session, now);
    let Some(open) = &mut session.open else {
        return;
    };
    if open.tracks == session.tracks {
        // Back to the file's own configuration: its frames are recorded again.
        return;
    }
    if allowed || only_added(&open.tracks, &session.tracks) {
        switch(recorder, session, now).await;
        return;
    }
    if open.tracks.video != session.tracks.video {
        open.video_started = false;
    }
    if !open.warned_changes {
        open.warned_changes = true;
        let interval = recorder.config.min_recording_interval.as_secs();
        tracing::warn!(
            "codec configuration changed again within archive.min_recording_interval_sec ({interval}): \
             the recording goes on without the frames in the new configuration until the interval is over"
        );
    }
}

fn switch_allowed(recorder: &Recorder, session: &Session, now: Instant) -> bool {
    session
        .last_switch
        .is_none_or(|last| now.saturating_duration_since(last) >= recorder.config.min_recording_interval)
}

/// Closes the file so that the next one starts in the stream's configurations. A track that
/// appears (a publisher that sent audio before its video configuration, say) does not count
/// against the interval: a configuration, once known, never goes away, so that happens at most
/// once per track.
async fn switch(recorder: &Recorder, session: &mut Session, now: Instant) {
    if let Some(open) = &session.open
        && !only_added(&open.tracks, &session.tracks)
    {
        session.last_switch = Some(now);
    }
    tracing::info!("codec configuration changed: the next recording starts");
    close(recorder, session.open.take()).await;
}

async fn frame_arrived(recorder: &Recorder, session: &mut Session, frame: Frame) {
    let now = Instant::now();
    // The interval is over and the configuration is still another: switch where a file can start.
    if let Some(open) = &session.open
        && open.tracks != session.tracks
        && starts_recording(&session.tracks, &frame)
        && switch_allowed(recorder, session, now)
    {
        switch(recorder, session, now).await;
    }
    if session.open.is_none() {
        match start(recorder, &session.tracks, &frame).await {
            Ok(started) => session.open = started,
            Err(stop @ Stop::NoSpace { .. }) => {
                tracing::warn!("not recording: {stop}");
                session.stopped = true;
                return;
            }
            Err(stop) => {
                tracing::error!("cannot record: {stop}");
                session.stopped = true;
                return;
            }
        }
    }
    let Some(open) = &mut session.open else {
        return;
    };
    let recorded = match frame.track {
        Track::Video => open.tracks.video == session.tracks.video,
        Track::Audio => open.tracks.audio == session.tracks.audio,
    };
    if !recorded {
        open.left_out += 1;
        return;
    }
    if let Err(stop) = add(recorder, open, frame, now).await {
        stopped(recorder, session, stop).await;
    }
}

/// A write failed: what was recorded is kept and finalized; nothing more is recorded.
async fn stopped(recorder: &Recorder, session: &mut Session, stop: Stop) {
    session.stopped = true;
    match stop {
        Stop::NoSpace { .. } => tracing::warn!("recording stopped, what was recorded is kept: {stop}"),
        _ => tracing::error!("recording stopped, what was recorded is kept: {stop}"),
    }
    close(recorder, session.open.take()).await;
}

/// Whether the stream's `now` differs from the file's `then` only by tracks the file lacks.
fn only_added(then: &Tracks, now: &Tracks) -> bool {
    (then.video.is_none() || then.video == now.video) && (then.audio.is_none() || then.audio == now.audio)
}

/// Whether a recording of `tracks` can start with `frame`: a video keyframe, or any frame of a
/// stream without video.
fn starts_recording(tracks: &Tracks, frame: &Frame) -> bool {
    match frame.track {
        Track::Video => tracks.video.is_some() && frame.keyframe,
        Track::Audio => tracks.video.is_none() && tracks.audio.is_some(),
    }
}

/// Why a recording stops (or does not start): the disk is too full, or writing failed.
#[derive(Debug, thiserror::Error)]
enum Stop {
    #[error("{free} bytes free on the storage disk, below archive.min_free_bytes ({min})")]
    NoSpace { free: u64, min: u64 },
    #[error("cannot read the free space: {0}")]
    FreeSpace(std::io::Error),
    #[error("cannot create the recording: {0}")]
    Create(std::io::Error),
    #[error("write failed: {0}")]
    Write(std::io::Error),
    #[error("the recording file is gone")]
    FileGone,
    #[error("the blocking pool failed: {0}")]
    Blocking(#[from] tokio::task::JoinError),
}

/// Opens a recording at its first usable frame: video starts on a keyframe; a frame of a track
/// whose configuration has not arrived cannot be recorded.
async fn start(recorder: &Recorder, tracks: &Tracks, frame: &Frame) -> Result<Option<Open>, Stop> {
    let usable = match frame.track {
        Track::Video => tracks.video.is_some() && frame.keyframe,
        Track::Audio => tracks.audio.is_some(),
    };
    if !usable {
        return Ok(None);
    }
    recorder.board.restart();
    let started_ms = now_ms();
    let (config, stream_id, public_id) = (
        Arc::clone(&recorder.config),
        recorder.stream_id.clone(),
        recorder.public_id.clone(),
    );
    let init = mp4::init_segment(tracks);
    let created = tokio::task::spawn_blocking(move || -> Result<(Unfinished, File), Stop> {
        check_space(&config)?;
        Unfinished::create(&config, &stream_id, &public_id, started_ms, &init).map_err(Stop::Create)
    })
    .await??;
    let (unfinished, file) = created;
    tracing::info!(path = %unfinished.part.display(), "recording");
    Ok(Some(Open {
        unfinished,
        file: Some(file),
        writer: FragmentWriter::new(tracks),
        tracks: tracks.clone(),
        pending: Vec::new(),
        pending_bytes: 0,
        pending_since: None,
        last_arrival: None,
        timeline: Rebaser::as_published(),
        video_started: false,
        left_out: 0,
        first_dts: None,
        warned_size: false,
        warned_clock: false,
        warned_changes: false,
    }))
}

/// Why a fragment is written now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// Its timestamps span a second.
    Time,
    /// It holds `max_fragment_bytes`.
    Size,
    /// Its first frame arrived `max_fragment_wait` ago.
    Waited,
}

/// Adds a frame; writes a fragment when one is due. The frames held never pass
/// `max_fragment_bytes` (a larger frame is a fragment of its own).
async fn add(recorder: &Recorder, open: &mut Open, mut frame: Frame, now: Instant) -> Result<(), Stop> {
    if frame.track == Track::Video && !open.video_started {
        if !frame.keyframe {
            return Ok(());
        }
        open.video_started = true;
    }
    open.timeline.place(&mut frame);
    let bytes = frame.data.len() as u64;
    let max = recorder.config.max_fragment_bytes;
    if !open.pending.is_empty() && open.pending_bytes.saturating_add(bytes) > max {
        write_pending(recorder, open, Cut::Size).await?;
    }
    let start = open.pending.first().map_or(frame.dts, |f| f.dts);
    open.pending.push(frame);
    open.pending_bytes += bytes;
    open.pending_since.get_or_insert(now);
    open.last_arrival = Some(now);
    if open.timeline.last() - start >= FRAGMENT_MS {
        write_pending(recorder, open, Cut::Time).await?;
    } else if open.pending_bytes >= max {
        write_pending(recorder, open, Cut::Size).await?;
    }
    Ok(())
}

/// Writes the held frames as a fragment (all but each track's last, which waits for its
/// duration), with a warning, once per recording, when a publisher's timestamps make it cut
/// fragments on size or time.
async fn write_pending(recorder: &Recorder, open: &mut Open, cut: Cut) -> Result<(), Stop> {
    let span = match (open.pending.first(), open.pending.iter().map(|f| f.dts).max()) {
        (Some(first), Some(last)) => last - first.dts,
        _ => 0,
    };
    let config = &recorder.config;
    match cut {
        Cut::Time => {}
        Cut::Size if !open.warned_size => {
            open.warned_size = true;
            tracing::warn!(
                bytes = open.pending_bytes,
                media_ms = span,
                "a fragment reached archive.max_fragment_bytes ({}) within {span} ms of media and is \
                 written early: the publisher's timestamps are not advancing, or its bitrate is above \
                 what the setting allows for",
                config.max_fragment_bytes
            );
        }
        Cut::Size => {}
        Cut::Waited => {
            let still_sending = open
                .last_arrival
                .is_some_and(|last| last.elapsed() < STILL_SENDING);
            if still_sending && !open.warned_clock {
                open.warned_clock = true;
                tracing::warn!(
                    media_ms = span,
                    "the publisher's timestamps are not advancing: {span} ms of media over {:?} of \
                     frames; fragments are written every archive.max_fragment_wait_sec instead",
                    config.max_fragment_wait
                );
            }
        }
    }
    let frames = std::mem::take(&mut open.pending);
    open.pending_bytes = 0;
    open.pending_since = None;
    let last_dts = frames.iter().map(|f| f.dts).max();
    if let Some(first) = frames.first() {
        open.first_dts.get_or_insert(first.dts);
    }
    let Some(fragment) = open.writer.push(frames) else {
        return Ok(());
    };
    let bytes = fragment.len();
    write(&mut open.file, fragment, Some(config)).await?;
    recorder.board.bytes.fetch_add(bytes, Ordering::Relaxed);
    recorder.bytes_written.increment(bytes);
    if let (Some(first), Some(last)) = (open.first_dts, last_dts) {
        let duration = u64::try_from(last - first).unwrap_or(0);
        recorder.board.duration_ms.store(duration, Ordering::Relaxed);
    }
    Ok(())
}

/// Writes the held-back frames and hands the file to be finalized.
async fn close(recorder: &Recorder, open: Option<Open>) {
    let Some(Open {
        unfinished,
        mut file,
        mut writer,
        pending,
        left_out,
        ..
    }) = open
    else {
        return;
    };
    let fragments = [writer.push(pending), writer.finish()];
    for fragment in fragments.into_iter().flatten() {
        if let Err(stop) = write(&mut file, fragment, None).await {
            tracing::error!("the recording's last second is lost: {stop}");
            break;
        }
    }
    drop(file);
    if left_out > 0 {
        tracing::info!(path = %unfinished.part.display(), left_out,
            "frames in another codec configuration than the recording's were left out of it");
    }
    let (config, store) = (Arc::clone(&recorder.config), recorder.store.clone());
    let notifier = recorder.notifier.clone();
    recorder
        .finalizers
        .spawn(async move { finalize(&config, &store, &notifier, unfinished).await }.in_current_span());
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
        return Err(Stop::FileGone);
    };
    let space = space.map(Arc::clone);
    let written = tokio::task::spawn_blocking(move || -> (File, Result<(), Stop>) {
        let result = space.as_deref().map_or(Ok(()), check_space).and_then(|()| {
            fragment
                .write_to(&mut file)
                .and_then(|()| file.sync_data())
                .map_err(Stop::Write)
        });
        (file, result)
    })
    .await;
    match written {
        Ok((file, result)) => {
            *slot = Some(file);
            result
        }
        Err(e) => Err(Stop::Blocking(e)),
    }
}

/// Blocking: reads the disk's free space.
fn check_space(config: &ArchiveConfig) -> Result<(), Stop> {
    let min = config.min_free_bytes;
    let free = crate::free_bytes(&config.dir).map_err(Stop::FreeSpace)?;
    if free < min {
        return Err(Stop::NoSpace { free, min });
    }
    Ok(())
}
