//! The live media playlist (RFC 8216 §4.3.3, §6.2.1): a sliding window of segments, rendered once
//! per change. Segments are held in memory until a file holds them: retired ones always, listed
//! ones once the stream's segments in memory pass its memory budget (oldest first).

use std::collections::VecDeque;
use std::fmt::Write as _;

use bytes::Bytes;
use oxcast_core::HlsStats;
use oxcast_core::clock::{now_ms, utc_rfc3339_millis};

/// One finished segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Milliseconds of media.
    pub duration_ms: i64,
    /// Timestamps or codecs change at this segment's start (`EXT-X-DISCONTINUITY`).
    pub discontinuity: bool,
    /// Wall-clock time of the segment's first frame (`EXT-X-PROGRAM-DATE-TIME`), in Unix epoch
    /// milliseconds.
    pub started_at: i64,
    pub data: Bytes,
}

#[derive(Debug, Clone)]
struct Listed {
    sequence: u64,
    duration_ms: i64,
    discontinuity: bool,
    started_at: i64,
    /// `None` once a file holds its bytes (see [`Playlist::spilled`]).
    data: Option<Bytes>,
    /// Its bytes were handed out to be written to a file.
    spilling: bool,
}

/// A segment that left the window.
#[derive(Debug)]
struct Retired {
    sequence: u64,
    /// `None` once its bytes are in a file (see [`Playlist::spilled`]).
    data: Option<Bytes>,
}

/// Where a listed or retired segment's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    Memory(Bytes),
    Spilled,
}

/// What [`Playlist::push`] did besides listing the segment.
#[derive(Debug, Default)]
pub struct Pushed {
    /// The new target duration, when this segment raised it (its rounded duration exceeds the old
    /// one: RFC 8216 §4.3.3.1).
    pub raised_target: Option<u64>,
    /// Segments to write to files: those that left the window, and listed ones over the memory
    /// budget. Served from memory until [`Playlist::spilled`] says a file holds them.
    pub retired: Vec<(u64, Bytes)>,
    /// Spilled segments past their retention: their files can go.
    pub expired: Vec<u64>,
}

/// A stream's playlist and the segments it lists (plus a few just retired, which players that read
/// the previous version may still fetch: RFC 8216 §6.2.2).
#[derive(Debug)]
pub struct Playlist {
    /// URI prefix of segments, relative to the playlist: `live_stream_<id>_hls/`.
    prefix: String,
    window: usize,
    /// Bytes of segments held in memory past which the oldest listed ones go to files.
    max_memory: usize,
    target_duration: u64,
    listed: VecDeque<Listed>,
    retired: VecDeque<Retired>,
    next_sequence: u64,
    discontinuity_sequence: u64,
    ended: bool,
    rendered: Option<Bytes>,
    /// What the API shows of this session's segments.
    stats: HlsStats,
}

impl Playlist {
    /// An empty playlist whose first segment gets `first_sequence`; no memory budget.
    pub fn new(prefix: String, window: usize, target_duration_sec: u64, first_sequence: u64) -> Self {
        Self::with_memory_budget(prefix, window, target_duration_sec, first_sequence, usize::MAX)
    }

    /// An empty playlist that keeps at most about `max_memory` bytes of segments in memory: past
    /// that, the oldest listed segments (never the newest) are handed out to be written to files.
    pub fn with_memory_budget(
        prefix: String,
        window: usize,
        target_duration_sec: u64,
        first_sequence: u64,
        max_memory: usize,
    ) -> Self {
        Self {
            prefix,
            window: window.max(1),
            max_memory,
            target_duration: target_duration_sec.max(1),
            listed: VecDeque::new(),
            retired: VecDeque::new(),
            next_sequence: first_sequence,
            discontinuity_sequence: 0,
            ended: false,
            rendered: None,
            stats: HlsStats::default(),
        }
    }

    /// The sequence number the next segment will get.
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    pub fn target_duration(&self) -> u64 {
        self.target_duration
    }

    /// Segments made, and when the newest was listed.
    pub fn stats(&self) -> HlsStats {
        self.stats
    }

    /// Appends a segment, sliding the window.
    pub fn push(&mut self, segment: Segment) -> Pushed {
        let mut pushed = Pushed::default();
        self.stats.segments += 1;
        self.stats.last_segment_at = Some(now_ms());
        let rounded = ((segment.duration_ms + 500) / 1000).max(0) as u64;
        if rounded > self.target_duration {
            self.target_duration = rounded;
            pushed.raised_target = Some(rounded);
        }
        self.listed.push_back(Listed {
            sequence: self.next_sequence,
            duration_ms: segment.duration_ms,
            discontinuity: segment.discontinuity,
            started_at: segment.started_at,
            data: Some(segment.data),
            spilling: false,
        });
        self.next_sequence += 1;
        while self.listed.len() > self.window {
            if let Some(old) = self.listed.pop_front() {
                // Leaving the window with its tag: the count moves to the sequence (§4.3.3.3).
                if old.discontinuity {
                    self.discontinuity_sequence += 1;
                }
                if let (Some(data), false) = (&old.data, old.spilling) {
                    pushed.retired.push((old.sequence, data.clone()));
                }
                self.retired.push_back(Retired {
                    sequence: old.sequence,
                    data: old.data,
                });
            }
        }
        self.keep_to_memory_budget(&mut pushed);
        // RFC 8216 §6.2.2: a removed segment stays available for its own duration plus the
        // playlist's, so one segment more than the window.
        while self.retired.len() > self.window + 1 {
            if let Some(Retired { sequence, data: None }) = self.retired.pop_front() {
                pushed.expired.push(sequence);
            }
        }
        self.render();
        pushed
    }

    /// Hands the oldest listed segments held in memory out to files while the segments in
    /// memory weigh more than the budget. The newest stays: players ask for it first.
    fn keep_to_memory_budget(&mut self, pushed: &mut Pushed) {
        // Segments already handed out (retired ones, writes in flight) are counted as gone: each
        // is handed out once, and a failed write leaves it in memory rather than lose it.
        let mut memory: usize = self
            .listed
            .iter()
            .filter(|l| !l.spilling)
            .map(|l| l.data.as_ref().map_or(0, Bytes::len))
            .sum();
        let newest = self.listed.len().saturating_sub(1);
        for listed in self.listed.iter_mut().take(newest) {
            if memory <= self.max_memory {
                break;
            }
            if let (Some(data), false) = (&listed.data, listed.spilling) {
                listed.spilling = true;
                memory = memory.saturating_sub(data.len());
                pushed.retired.push((listed.sequence, data.clone()));
            }
        }
    }

    /// A file now holds this segment: its memory can go. False if it expired meanwhile (the file
    /// is not needed).
    pub fn spilled(&mut self, sequence: u64) -> bool {
        if let Some(listed) = self.listed.iter_mut().find(|l| l.sequence == sequence) {
            listed.data = None;
            return true;
        }
        match self.retired.iter_mut().find(|r| r.sequence == sequence) {
            Some(retired) => {
                retired.data = None;
                true
            }
            None => false,
        }
    }

    /// The stream ended: `EXT-X-ENDLIST`.
    pub fn end(&mut self) {
        self.ended = true;
        self.render();
    }

    /// The playlist text, once it lists a segment.
    pub fn text(&self) -> Option<Bytes> {
        self.rendered.clone()
    }

    /// A listed or recently retired segment.
    pub fn segment(&self, sequence: u64) -> Option<Stored> {
        if let Some(listed) = self.listed.iter().find(|l| l.sequence == sequence) {
            return Some(listed.data.clone().map_or(Stored::Spilled, Stored::Memory));
        }
        let retired = self.retired.iter().find(|r| r.sequence == sequence)?;
        Some(retired.data.clone().map_or(Stored::Spilled, Stored::Memory))
    }

    fn render(&mut self) {
        let Some(first) = self.listed.front() else { return };
        let mut text = String::with_capacity(128 + self.listed.len() * 128);
        let _ = write!(
            text,
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-TARGETDURATION:{}\n\
             #EXT-X-MEDIA-SEQUENCE:{}\n#EXT-X-DISCONTINUITY-SEQUENCE:{}\n",
            self.target_duration, first.sequence, self.discontinuity_sequence
        );
        for listed in &self.listed {
            if listed.discontinuity {
                text.push_str("#EXT-X-DISCONTINUITY\n");
            }
            let _ = write!(
                text,
                "#EXT-X-PROGRAM-DATE-TIME:{}\n#EXTINF:{}.{:03},\n{}{}.ts\n",
                utc_rfc3339_millis(listed.started_at),
                listed.duration_ms / 1000,
                listed.duration_ms % 1000,
                self.prefix,
                listed.sequence
            );
        }
        if self.ended {
            text.push_str("#EXT-X-ENDLIST\n");
        }
        self.rendered = Some(Bytes::from(text));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(duration_ms: i64, discontinuity: bool) -> Segment {
        Segment {
            duration_ms,
            discontinuity,
            started_at: 1_764_320_000_123,
            data: Bytes::from_static(b"ts"),
        }
    }

    #[test]
    fn the_window_slides_and_counts_discontinuities_that_leave_it() {
        let mut playlist = Playlist::new("p/".into(), 2, 2, 10);
        assert_eq!(playlist.text(), None);
        playlist.push(segment(2000, false));
        playlist.push(segment(2000, true));
        playlist.push(segment(1990, false));
        let text = String::from_utf8(playlist.text().unwrap().to_vec()).unwrap();
        assert_eq!(
            text,
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-TARGETDURATION:2\n\
             #EXT-X-MEDIA-SEQUENCE:11\n#EXT-X-DISCONTINUITY-SEQUENCE:0\n\
             #EXT-X-DISCONTINUITY\n#EXT-X-PROGRAM-DATE-TIME:2025-11-28T08:53:20.123Z\n#EXTINF:2.000,\np/11.ts\n\
             #EXT-X-PROGRAM-DATE-TIME:2025-11-28T08:53:20.123Z\n#EXTINF:1.990,\np/12.ts\n"
        );
        playlist.push(segment(2000, false));
        let text = String::from_utf8(playlist.text().unwrap().to_vec()).unwrap();
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:12\n#EXT-X-DISCONTINUITY-SEQUENCE:1\n"));
        assert!(!text.contains("#EXT-X-DISCONTINUITY\n"));
        // Retired segments stay fetchable for a while: the window's length plus one.
        assert!(playlist.segment(11).is_some() && playlist.segment(10).is_some());
        assert!(playlist.spilled(10));
        assert_eq!(playlist.segment(10), Some(Stored::Spilled));
        let pushed = playlist.push(segment(2000, false));
        assert_eq!(pushed.retired.iter().map(|r| r.0).collect::<Vec<_>>(), [12]);
        assert!(pushed.expired.is_empty());
        // 10 expires: it was spilled, so its file can go.
        let pushed = playlist.push(segment(2000, false));
        assert_eq!(pushed.expired, [10]);
        assert!(playlist.segment(10).is_none() && playlist.segment(11).is_some());
        assert!(!playlist.spilled(10), "an expired segment needs no file");
        playlist.end();
        assert!(
            String::from_utf8(playlist.text().unwrap().to_vec())
                .unwrap()
                .ends_with("#EXT-X-ENDLIST\n")
        );
    }

    fn weighing(bytes: usize) -> Segment {
        Segment {
            data: Bytes::from(vec![0x47; bytes]),
            ..segment(2000, false)
        }
    }

    /// Whatever the segments weigh, the playlist holds about its budget in memory: the oldest
    /// listed segments go to files (still listed, served from there), the newest never does.
    #[test]
    fn listed_segments_over_the_memory_budget_go_to_files_oldest_first() {
        let mut playlist = Playlist::with_memory_budget("p/".into(), 6, 2, 0, 2500);
        assert!(playlist.push(weighing(1000)).retired.is_empty());
        assert!(playlist.push(weighing(1000)).retired.is_empty());
        let pushed = playlist.push(weighing(1000));
        assert_eq!(pushed.retired.iter().map(|r| r.0).collect::<Vec<_>>(), [0]);
        // Not handed out twice while its write is in flight.
        assert_eq!(
            playlist
                .push(weighing(1000))
                .retired
                .iter()
                .map(|r| r.0)
                .collect::<Vec<_>>(),
            [1]
        );
        assert!(playlist.spilled(0));
        assert_eq!(playlist.segment(0), Some(Stored::Spilled));
        assert!(matches!(playlist.segment(3), Some(Stored::Memory(_))));
        let text = String::from_utf8(playlist.text().unwrap().to_vec()).unwrap();
        assert!(text.contains("p/0.ts\n"), "still listed: {text}");
        // A single segment over the budget stays in memory: it is the newest.
        let mut big = Playlist::with_memory_budget("p/".into(), 6, 2, 0, 10);
        assert!(big.push(weighing(1000)).retired.is_empty());
        assert_eq!(
            big.push(weighing(1000))
                .retired
                .iter()
                .map(|r| r.0)
                .collect::<Vec<_>>(),
            [0]
        );
    }

    #[test]
    fn a_long_segment_raises_the_target_duration() {
        let mut playlist = Playlist::new("p/".into(), 6, 2, 0);
        assert_eq!(playlist.push(segment(2400, false)).raised_target, None);
        assert_eq!(playlist.push(segment(5005, false)).raised_target, Some(5));
        assert_eq!(playlist.push(segment(2000, false)).raised_target, None);
        assert_eq!(playlist.target_duration(), 5);
    }
}
