//! One HLS reader: polls a live playlist every few milliseconds, notes when each new segment is
//! first listed, and fetches it, as a player does (without decoding).

use std::time::{Duration, Instant};

use crate::http::{Client, Url};

const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Errors kept word for word; the rest are only counted.
const KEEP_ERRORS: usize = 5;

#[derive(Debug, Default)]
pub(crate) struct ReaderReport {
    pub(crate) polls: u64,
    pub(crate) segments: u64,
    pub(crate) segment_bytes: u64,
    pub(crate) errors: u64,
    pub(crate) first_errors: Vec<String>,
    /// Segments that left the window before this reader saw them listed.
    pub(crate) missed: u64,
    /// Each segment that appeared while this reader watched: its sequence number and when the
    /// playlist that first listed it arrived.
    pub(crate) seen: Vec<(u64, Instant)>,
    /// The longest wait between two new segments, and the playlist's target duration.
    pub(crate) max_interval: Duration,
    pub(crate) target_duration: Duration,
    pub(crate) connects: u64,
}

impl ReaderReport {
    fn error(&mut self, e: String) {
        self.errors += 1;
        if self.first_errors.len() < KEEP_ERRORS {
            self.first_errors.push(e);
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Listing {
    media_sequence: u64,
    target_duration: u64,
    uris: Vec<String>,
    ended: bool,
}

fn parse_playlist(text: &str) -> Result<Listing, String> {
    if !text.starts_with("#EXTM3U") {
        return Err("not an M3U8 playlist".to_owned());
    }
    let mut listing = Listing {
        media_sequence: 0,
        target_duration: 0,
        uris: Vec::new(),
        ended: false,
    };
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            listing.media_sequence = v.parse().map_err(|_| format!("bad media sequence {v:?}"))?;
        } else if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            listing.target_duration = v.parse().map_err(|_| format!("bad target duration {v:?}"))?;
        } else if line == "#EXT-X-ENDLIST" {
            listing.ended = true;
        } else if !line.is_empty() && !line.starts_with('#') {
            listing.uris.push(line.to_owned());
        }
    }
    Ok(listing)
}

/// Follows `playlist` until `end`, polling every `poll`.
pub(crate) fn run(playlist: &str, poll: Duration, start: Instant, end: Instant) -> ReaderReport {
    let mut report = ReaderReport::default();
    let url = match Url::parse(playlist) {
        Ok(url) => url,
        Err(e) => {
            report.error(e);
            return report;
        }
    };
    let mut client = match Client::new(&url.authority, HTTP_TIMEOUT) {
        Ok(c) => c,
        Err(e) => {
            report.error(e);
            return report;
        }
    };
    std::thread::sleep(start.saturating_duration_since(Instant::now()));
    // Highest sequence number listed so far, and whether that listing had ended.
    let mut last: Option<u64> = None;
    let mut last_ended = false;
    let mut not_found_first = false;
    let mut ever_listed = false;
    let mut last_new: Option<Instant> = None;
    while Instant::now() < end {
        report.polls += 1;
        let response = client.get(&url.path);
        let at = Instant::now();
        match response {
            Err(e) => report.error(e),
            // No playlist until the first segment is finished, also when an ended stream goes
            // live again.
            Ok(r) if r.status == 404 && (!ever_listed || last_ended) => not_found_first = true,
            Ok(r) if r.status != 200 => report.error(format!("GET {playlist}: status {}", r.status)),
            Ok(r) => match std::str::from_utf8(&r.body)
                .map_err(|_| "not UTF-8".to_owned())
                .and_then(parse_playlist)
            {
                Err(e) => report.error(format!("{playlist}: {e}")),
                Ok(listing) => {
                    // What is listed at the first look was there before we came, unless we
                    // watched it appear (a 404 first).
                    let baseline = !ever_listed && !not_found_first;
                    ever_listed = true;
                    report.target_duration = Duration::from_secs(listing.target_duration);
                    let first = listing.media_sequence;
                    let count = listing.uris.len() as u64;
                    if let Some(l) = last {
                        if count > 0 && first + count <= l && !listing.ended {
                            // The numbering went back: a new publishing session that does not
                            // continue the old one. Follow it from here.
                            last = None;
                        } else if first > l + 1 && !last_ended && !baseline {
                            report.missed += first - l - 1;
                        }
                    }
                    for (i, uri) in listing.uris.iter().enumerate() {
                        let sequence = first + i as u64;
                        if last.is_some_and(|l| sequence <= l) {
                            continue;
                        }
                        last = Some(sequence);
                        if baseline {
                            continue;
                        }
                        report.seen.push((sequence, at));
                        if let Some(previous) = last_new.replace(at) {
                            report.max_interval = report.max_interval.max(at - previous);
                        }
                        fetch_segment(&mut client, &url, uri, &mut report);
                    }
                    last_ended = listing.ended;
                }
            },
        }
        std::thread::sleep(poll);
    }
    report.connects = client.connects;
    report
}

fn fetch_segment(client: &mut Client, playlist: &Url, uri: &str, report: &mut ReaderReport) {
    let url = match playlist.join(uri) {
        Ok(url) => url,
        Err(e) => return report.error(e),
    };
    match client.get(&url.path) {
        Err(e) => report.error(e),
        Ok(r) if r.status != 200 => report.error(format!("GET {}: status {}", url.path, r.status)),
        Ok(r) if r.body.is_empty() || r.body.len() % 188 != 0 || r.body.first() != Some(&0x47) => {
            report.error(format!(
                "GET {}: {} bytes that are not whole TS packets",
                url.path,
                r.body.len()
            ));
        }
        Ok(r) => {
            report.segments += 1;
            report.segment_bytes += r.body.len() as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn playlists_parse() {
        let text = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:7\n\
                    #EXTINF:2.000,\ns/7.ts\n#EXT-X-DISCONTINUITY\n#EXTINF:1.990,\ns/8.ts\n#EXT-X-ENDLIST\n";
        assert_eq!(
            parse_playlist(text).unwrap(),
            Listing {
                media_sequence: 7,
                target_duration: 2,
                uris: vec!["s/7.ts".into(), "s/8.ts".into()],
                ended: true,
            }
        );
        assert!(parse_playlist("<html>").is_err());
    }
}
