//! Keeps one publisher's timestamps sane for every output.
//!
//! A live encoder's timestamps move with the wall clock: they may run ahead of it (a burst after a
//! stall, a file sent faster than real time) only a frame at a time, and go back only by the small
//! steps between audio and video or B-frames. A step that no live encoder makes — back by more
//! than [`MAX_STEP_BACK_MS`], or forward by more than the wall time that passed plus
//! [`MAX_STEP_AHEAD_MS`] — would give players a segment hours long or a timeline that goes back;
//! it is taken as a break instead: the track goes on from its previous frame, one frame interval
//! later, and the rest of the publisher's frames keep that shift. (One frame interval rather than
//! the wall time that passed: frames arrive with network and scheduling jitter, which would open a
//! gap in the timeline.)
//!
//! An output whose timeline outlives one publisher (a recording, a relay) puts each frame on it
//! with a [`Rebaser`]: a new publisher's clock starts again, and its first frame goes on one frame
//! step after the previous publisher's last.

use crate::frame::{Frame, Track};

/// The frame interval assumed where one publisher's timeline is joined to the next: one frame
/// at 30 fps, so the two parts neither overlap nor leave a gap a player would notice.
pub const DEFAULT_FRAME_STEP_MS: i64 = 33;

/// The furthest one track's decode time may step back.
pub const MAX_STEP_BACK_MS: i64 = 1_000;
/// The furthest one track's decode time may step ahead of the wall clock.
pub const MAX_STEP_AHEAD_MS: i64 = 10_000;

/// A step that was taken as a break: where the track was, and where the publisher said it went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Jump {
    pub track: Track,
    pub from: i64,
    pub to: i64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Last {
    /// Decode time of the track's latest frame, as given to the outputs.
    dts: i64,
    /// When it arrived, in milliseconds on the caller's clock.
    at: i64,
    /// The track's latest step forward (its frame interval), at least 1 ms.
    step: i64,
}

/// One publisher's timestamp guard: [`TimestampGuard::admit`] every frame, in arrival order.
#[derive(Debug, Default, Clone)]
pub struct TimestampGuard {
    /// Added to every timestamp the publisher sends.
    shift: i64,
    video: Option<Last>,
    audio: Option<Last>,
}

impl TimestampGuard {
    pub fn new() -> Self {
        Self::default()
    }

    /// Shifts `frame` onto the guarded timeline; `now_ms` is a monotonic clock in milliseconds.
    /// Returns the jump when this frame's step was taken as a break.
    pub fn admit(&mut self, frame: &mut Frame, now_ms: i64) -> Option<Jump> {
        let shift = self.shift;
        let last = match frame.track {
            Track::Video => &mut self.video,
            Track::Audio => &mut self.audio,
        };
        let mut dts = frame.dts.saturating_add(shift);
        let mut jump = None;
        let mut interval = 1;
        if let Some(previous) = *last {
            let step = dts.saturating_sub(previous.dts);
            let waited = now_ms.saturating_sub(previous.at).max(0);
            interval = previous.step;
            if step < -MAX_STEP_BACK_MS || step > waited.saturating_add(MAX_STEP_AHEAD_MS) {
                jump = Some(Jump {
                    track: frame.track,
                    from: previous.dts,
                    to: dts,
                });
                let resumed = previous.dts.saturating_add(previous.step);
                self.shift = shift.saturating_add(resumed.saturating_sub(dts));
                dts = resumed;
            } else if step > 0 {
                interval = step.min(MAX_STEP_BACK_MS);
            }
        }
        let moved = dts.saturating_sub(frame.dts);
        frame.dts = dts;
        frame.pts = frame.pts.saturating_add(moved);
        *last = Some(Last {
            dts,
            at: now_ms,
            step: interval,
        });
        jump
    }
}

/// One output's timeline, continuous across publishers: [`Rebaser::rebase`] when the publisher
/// changes (the bus says so with a discontinuity), then each frame's decode time goes
/// through [`Rebaser::map`] (or the whole frame through [`Rebaser::place`]).
#[derive(Debug, Clone)]
pub struct Rebaser {
    /// Added to every decode time; `None` until the first frame of a timeline that starts at 0.
    shift: Option<i64>,
    /// The latest decode time given out (0 before the first).
    last: i64,
    /// The publisher changed: the next frame sets a new shift.
    rebase: bool,
}

impl Rebaser {
    /// A timeline whose first frame is at 0: a relay's destination sees a broadcast start.
    pub fn from_zero() -> Self {
        Self {
            shift: None,
            last: 0,
            rebase: false,
        }
    }

    /// A timeline that keeps the first publisher's decode times: a recording starts where the
    /// publisher's clock is.
    pub fn as_published() -> Self {
        Self {
            shift: Some(0),
            ..Self::from_zero()
        }
    }

    /// The publisher changed: its clock starts again, and its next frame goes on
    /// [`DEFAULT_FRAME_STEP_MS`] after the latest one, so the two parts do not overlap.
    pub fn rebase(&mut self) {
        self.rebase = true;
    }

    /// `dts` on this timeline. Audio and video interleave with small steps back between them:
    /// those are kept as they are.
    pub fn map(&mut self, dts: i64) -> i64 {
        let shift = match self.shift {
            Some(shift) if !self.rebase => shift,
            Some(_) => self
                .last
                .saturating_add(DEFAULT_FRAME_STEP_MS)
                .saturating_sub(dts),
            None => dts.saturating_neg(),
        };
        self.rebase = false;
        self.shift = Some(shift);
        let out = dts.saturating_add(shift);
        self.last = self.last.max(out);
        out
    }

    /// Moves `frame` (decode and presentation time) onto this timeline.
    pub fn place(&mut self, frame: &mut Frame) {
        let dts = self.map(frame.dts);
        frame.pts = frame.pts.saturating_add(dts.saturating_sub(frame.dts));
        frame.dts = dts;
    }

    /// The latest decode time given out, 0 before the first.
    pub fn last(&self) -> i64 {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn frame(track: Track, dts: i64) -> Frame {
        Frame {
            track,
            dts,
            pts: dts + 66,
            keyframe: false,
            data: Bytes::new(),
        }
    }

    /// Admits (track, dts, arrival ms) in order; returns the decode times given out and the jumps.
    fn run(frames: &[(Track, i64, i64)]) -> (Vec<i64>, usize) {
        let mut guard = TimestampGuard::new();
        let mut out = Vec::new();
        let mut jumps = 0;
        for &(track, dts, at) in frames {
            let mut f = frame(track, dts);
            jumps += usize::from(guard.admit(&mut f, at).is_some());
            assert_eq!(f.pts - f.dts, 66, "the composition offset is kept");
            out.push(f.dts);
        }
        (out, jumps)
    }

    #[test]
    fn an_honest_timeline_is_untouched() {
        use Track::*;
        // Interleaved audio slightly behind video, a burst sent faster than real time, a stall
        // of 20 s after which the timestamps go on where they were.
        let frames = [
            (Video, 0, 0),
            (Audio, 0, 1),
            (Video, 33, 33),
            (Audio, 21, 34),
            (Video, 66, 35),
            (Video, 100, 36),
            (Video, 133, 20_000),
            (Audio, 42, 20_001),
        ];
        let (out, jumps) = run(&frames);
        assert_eq!(out, frames.iter().map(|f| f.1).collect::<Vec<_>>());
        assert_eq!(jumps, 0);
    }

    #[test]
    fn a_jump_ahead_or_back_continues_from_where_the_track_was() {
        use Track::*;
        let (out, jumps) = run(&[
            (Video, 1_000, 0),
            (Video, 1_033, 33),
            // Three hours ahead, after a second of jitter: goes on one frame interval later, and
            // so do the frames after it.
            (Video, 10_801_066, 1_066),
            (Video, 10_801_100, 1_100),
            // Back to zero: goes on one frame interval later again.
            (Video, 0, 1_133),
            (Video, 33, 1_166),
        ]);
        assert_eq!(out, [1_000, 1_033, 1_066, 1_100, 1_134, 1_167]);
        assert_eq!(jumps, 2);
    }

    #[test]
    fn timestamps_that_do_not_move_are_not_a_jump() {
        use Track::*;
        let (out, jumps) = run(&[(Video, 0, 0), (Video, 0, 33), (Video, 0, 66)]);
        assert_eq!(out, [0, 0, 0]);
        assert_eq!(jumps, 0);
    }

    #[test]
    fn far_jumps_still_rise() {
        use Track::*;
        let (out, jumps) = run(&[(Audio, 1 << 60, 0), (Audio, -(1 << 60), 10), (Audio, 0, 20)]);
        assert_eq!(jumps, 2);
        assert!(out.windows(2).all(|w| w[1] > w[0]), "{out:?}");
    }

    #[test]
    fn a_relay_timeline_starts_at_zero_and_goes_on_across_a_new_publisher() {
        let mut timeline = Rebaser::from_zero();
        assert_eq!(timeline.map(5000), 0);
        assert_eq!(timeline.map(5033), 33);
        assert_eq!(
            timeline.map(5021),
            21,
            "audio a little behind video keeps its time"
        );
        assert_eq!(timeline.map(5066), 66);
        assert_eq!(timeline.last(), 66);
        // A new publisher: its clock starts again near zero, one frame step after the latest.
        timeline.rebase();
        assert_eq!(timeline.map(0), 66 + DEFAULT_FRAME_STEP_MS);
        assert_eq!(timeline.map(33), 132);
        assert_eq!(timeline.last(), 132);
    }

    #[test]
    fn a_recording_timeline_keeps_the_first_publisher_times_then_goes_on() {
        let mut timeline = Rebaser::as_published();
        assert_eq!(timeline.last(), 0);
        assert_eq!(timeline.map(5000), 5000);
        assert_eq!(timeline.map(5033), 5033);
        timeline.rebase();
        assert_eq!(timeline.map(120), 5033 + DEFAULT_FRAME_STEP_MS);
        assert_eq!(timeline.map(153), 5099);
        // A second new publisher, whose clock is ahead: still one frame step after the latest.
        timeline.rebase();
        assert_eq!(timeline.map(900_000), 5099 + DEFAULT_FRAME_STEP_MS);
    }

    #[test]
    fn a_rebase_before_the_first_frame_still_starts_at_zero() {
        let mut timeline = Rebaser::from_zero();
        timeline.rebase();
        assert_eq!(timeline.map(7000), 0);
        assert_eq!(timeline.map(7040), 40);
    }

    #[test]
    fn a_placed_frame_keeps_its_composition_offset() {
        let mut timeline = Rebaser::from_zero();
        let mut first = frame(Track::Video, 1000);
        timeline.place(&mut first);
        assert_eq!((first.dts, first.pts), (0, 66));
        timeline.rebase();
        let mut next = frame(Track::Video, 0);
        timeline.place(&mut next);
        assert_eq!(
            (next.dts, next.pts),
            (DEFAULT_FRAME_STEP_MS, DEFAULT_FRAME_STEP_MS + 66)
        );
    }
}
