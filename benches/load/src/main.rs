//! `oxcast-load`: the load harness. N publishers, each an `oxcast_rtmp::ClientSession` over std TCP,
//! replay one FLV file in real time (looped, timestamps carried on) to any RTMP server; M readers
//! follow the resulting HLS playlists as players do, polling every few milliseconds.
//!
//! Reports publish and HTTP errors, missed segments and stalls (and exits 1 on any), and the segment
//! availability latency: for each segment, the time from the publisher finishing the write of the
//! keyframe that closes it (the first keyframe of the next segment) to a reader receiving a playlist
//! that lists it. A segment is attributed to the last keyframe whose write had begun when the
//! playlist arrived, which is right as long as the latency is below one GOP; a second segment on
//! the same keyframe, or one before any closing keyframe, is counted as unattributed instead.
//!
//! ```text
//! oxcast-load --rtmp rtmp://127.0.0.1:1935/streams --keys K1,K2 --ids ID1,ID2 --flv src.flv \
//!   --duration 60 --readers 2 \
//!   --hls-url-template 'http://127.0.0.1:8080/local/video/live/live_stream_{id}_hls.m3u8'
//! oxcast-load --rtmp rtmp://127.0.0.1:1936/live --key-prefix k --publishers 16 --flv src.flv \
//!   --duration 60 --readers 16 --hls-url-template 'http://127.0.0.1:8081/hls/{key}.m3u8'
//! ```
//! Used by `benches/compare-nginx.sh`, which runs it against Oxcast and nginx-rtmp in turn.

mod http;
mod publisher;
mod reader;
mod source;

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;

use crate::publisher::{PublisherReport, Target};
use crate::reader::ReaderReport;
use crate::source::Source;

/// N RTMP publishers replaying an FLV in real time, M HLS readers, errors and segment latency.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// RTMP base URL, `rtmp://host[:port]/app`: each publisher publishes to `<base>/<key>`.
    #[arg(long)]
    rtmp: String,
    /// Stream keys, one publisher each.
    #[arg(long, value_delimiter = ',', conflicts_with = "key_prefix")]
    keys: Vec<String>,
    /// Instead of --keys: keys `<prefix>0` … `<prefix>N-1` for --publishers N.
    #[arg(long, requires = "publishers")]
    key_prefix: Option<String>,
    /// Number of publishers with --key-prefix (with --keys, must match their count if given).
    #[arg(long)]
    publishers: Option<usize>,
    /// Ids that go with --keys, in the same order, for `{id}` in --hls-url-template.
    #[arg(long, value_delimiter = ',')]
    ids: Vec<String>,
    /// The FLV file to replay (H.264 + AAC); a whole number of GOPs long loops cleanly.
    #[arg(long)]
    flv: PathBuf,
    /// Seconds of publishing, from the first publisher's start.
    #[arg(long, default_value_t = 60.0)]
    duration: f64,
    /// A stream's playlist URL, with `{key}` and/or `{id}`; needed when --readers > 0.
    #[arg(long)]
    hls_url_template: Option<String>,
    /// HLS readers, spread over the streams in turn (reader j follows stream j mod N).
    #[arg(long, default_value_t = 0)]
    readers: usize,
    /// Milliseconds between a reader's playlist polls.
    #[arg(long, default_value_t = 2)]
    poll_ms: u64,
    /// Milliseconds between publisher starts; default: one GOP of the file divided by N, so the
    /// publishers' keyframes are spread evenly, as independent encoders' are.
    #[arg(long)]
    stagger_ms: Option<u64>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// A name for this run in the report.
    #[arg(long, default_value = "")]
    label: String,
}

struct Stream {
    key: String,
    id: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("oxcast-load: {e}");
            ExitCode::from(2)
        }
    }
}

/// `rtmp://host[:port]/app` into `host:port` and app.
fn split_rtmp(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("rtmp://")
        .ok_or_else(|| format!("--rtmp {url}: must start with rtmp://"))?;
    let (authority, app) = rest
        .split_once('/')
        .ok_or_else(|| format!("--rtmp {url}: no application"))?;
    let app = app.trim_end_matches('/');
    if authority.is_empty() || app.is_empty() {
        return Err(format!("--rtmp {url}: expected rtmp://host[:port]/app"));
    }
    let host = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:1935")
    };
    Ok((host, app.to_owned()))
}

fn streams(cli: &Cli) -> Result<Vec<Stream>, String> {
    let keys: Vec<String> = match (&cli.key_prefix, cli.publishers) {
        (Some(prefix), Some(n)) => (0..n).map(|i| format!("{prefix}{i}")).collect(),
        _ => {
            if let Some(n) = cli.publishers.filter(|&n| n != cli.keys.len()) {
                return Err(format!("--publishers {n} but {} --keys", cli.keys.len()));
            }
            cli.keys.clone()
        }
    };
    if keys.is_empty() {
        return Err("no publishers: give --keys or --key-prefix with --publishers".to_owned());
    }
    if !cli.ids.is_empty() && cli.ids.len() != keys.len() {
        return Err(format!("{} --ids for {} keys", cli.ids.len(), keys.len()));
    }
    Ok(keys
        .into_iter()
        .enumerate()
        .map(|(i, key)| Stream {
            key,
            id: cli.ids.get(i).cloned(),
        })
        .collect())
}

fn playlist_url(template: &str, stream: &Stream) -> Result<String, String> {
    let mut url = template.replace("{key}", &stream.key);
    if url.contains("{id}") {
        let id = stream
            .id
            .as_deref()
            .ok_or("--hls-url-template has {id}: give --ids")?;
        url = url.replace("{id}", id);
    }
    Ok(url)
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len().max(1)) - 1).copied()
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Latencies of the segments the readers saw appear, and how many could not be attributed.
struct Latency {
    values: Vec<Duration>,
    unattributed: u64,
    after_stop: u64,
}

fn attribute(publishers: &[PublisherReport], readers: &[(usize, ReaderReport)]) -> Latency {
    let mut latency = Latency {
        values: Vec::new(),
        unattributed: 0,
        after_stop: 0,
    };
    for (stream, reader) in readers {
        let Some(publisher) = publishers.get(*stream) else {
            continue;
        };
        let keyframes = &publisher.keyframes;
        let mut used = HashSet::new();
        for &(_, seen) in &reader.seen {
            // The last segment is closed by the end of the stream, not by a keyframe.
            if publisher.stopped.is_some_and(|stop| seen > stop) {
                latency.after_stop += 1;
                continue;
            }
            let closing = keyframes.partition_point(|k| k.start <= seen);
            // Index 0 opens the first segment; it closes none.
            match closing.checked_sub(1).filter(|&k| k > 0) {
                Some(k) if used.insert(k) => {
                    if let Some(keyframe) = keyframes.get(k) {
                        latency.values.push(seen.saturating_duration_since(keyframe.end));
                    }
                }
                _ => latency.unattributed += 1,
            }
        }
    }
    latency.values.sort();
    latency
}

fn run(cli: &Cli) -> Result<bool, String> {
    let (host, app) = split_rtmp(&cli.rtmp)?;
    let streams = streams(cli)?;
    let source = Source::read(&cli.flv)?;
    let mut playlists = Vec::new();
    if cli.readers > 0 {
        let template = cli
            .hls_url_template
            .as_deref()
            .ok_or("--readers needs --hls-url-template")?;
        for stream in &streams {
            playlists.push(playlist_url(template, stream)?);
        }
    }
    if !(cli.duration > 0.0 && cli.duration < 86_400.0) {
        return Err("--duration must be positive".to_owned());
    }
    let n = streams.len();
    let stagger = Duration::from_millis(cli.stagger_ms.unwrap_or(u64::from(source.gop_ms) / n as u64));
    let poll = Duration::from_millis(cli.poll_ms);
    println!(
        "oxcast-load {}: {n} publishers -> rtmp://{host}/{app}, {} readers every {} ms, {:.0} s of {} \
         ({:.2} Mbit/s, {} ms per pass, GOP {} ms), starts {} ms apart",
        cli.label,
        cli.readers,
        cli.poll_ms,
        cli.duration,
        cli.flv.display(),
        source.bitrate() / 1e6,
        source.pass_ms,
        source.gop_ms,
        stagger.as_millis(),
    );

    let t0 = Instant::now() + Duration::from_millis(200);
    let end = t0 + Duration::from_secs_f64(cli.duration);
    let wall = Instant::now();
    let (publishers, readers) = std::thread::scope(|scope| {
        let publishing: Vec<_> = streams
            .iter()
            .enumerate()
            .map(|(i, stream)| {
                let target = Target {
                    host: host.clone(),
                    app: app.clone(),
                    key: stream.key.clone(),
                };
                let start = t0 + stagger * i as u32;
                let source = &source;
                scope.spawn(move || publisher::run(&target, source, start, end))
            })
            .collect();
        let reading: Vec<_> = (0..cli.readers)
            .filter_map(|j| {
                let stream = j % n;
                let url = playlists.get(stream)?.clone();
                Some((stream, scope.spawn(move || reader::run(&url, poll, t0, end))))
            })
            .collect();
        let publishers: Vec<PublisherReport> = publishing
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect();
        let readers: Vec<(usize, ReaderReport)> = reading
            .into_iter()
            .map(|(s, h)| (s, h.join().unwrap_or_default()))
            .collect();
        (publishers, readers)
    });
    let elapsed = wall.elapsed();
    report(cli, &streams, &source, &publishers, &readers, elapsed)
}

fn report(
    cli: &Cli,
    streams: &[Stream],
    source: &Source,
    publishers: &[PublisherReport],
    readers: &[(usize, ReaderReport)],
    elapsed: Duration,
) -> Result<bool, String> {
    let publish_errors: Vec<&str> = publishers.iter().filter_map(|p| p.error.as_deref()).collect();
    let published = publishers.iter().filter(|p| p.published).count();
    let bytes: u64 = publishers.iter().map(|p| p.bytes).sum();
    let messages: u64 = publishers.iter().map(|p| p.messages).sum();
    let keyframes: usize = publishers.iter().map(|p| p.keyframes.len()).sum();
    let max_lag = publishers.iter().map(|p| p.max_lag).max().unwrap_or_default();

    let sum = |f: fn(&ReaderReport) -> u64| readers.iter().map(|(_, r)| f(r)).sum::<u64>();
    let http_errors = sum(|r| r.errors);
    let missed = sum(|r| r.missed);
    let first_errors: Vec<&str> = readers
        .iter()
        .flat_map(|(_, r)| r.first_errors.iter().map(String::as_str))
        .take(10)
        .collect();
    // A reader that waits more than three target durations for a new segment saw a stall.
    let stalls = readers
        .iter()
        .filter(|(_, r)| !r.target_duration.is_zero() && r.max_interval > r.target_duration * 3)
        .count() as u64;
    let max_interval = readers
        .iter()
        .map(|(_, r)| r.max_interval)
        .max()
        .unwrap_or_default();
    let latency = attribute(publishers, readers);
    let lat = |p| percentile(&latency.values, p).map(ms);

    let errors =
        publish_errors.len() as u64 + (streams.len() - published) as u64 + http_errors + missed + stalls;
    let seconds = elapsed.as_secs_f64().max(1e-9);
    println!(
        "publishers: {published}/{} published, {messages} messages, {:.1} MB ({:.2} Mbit/s each), \
         {keyframes} keyframes, max lag behind real time {:.1} ms, errors {}",
        streams.len(),
        bytes as f64 / 1e6,
        bytes as f64 * 8.0 / seconds / 1e6 / streams.len().max(1) as f64,
        ms(max_lag),
        publish_errors.len()
    );
    for e in &publish_errors {
        println!("  publish error: {e}");
    }
    if !readers.is_empty() {
        println!(
            "readers: {} polls, {} segments fetched ({:.1} MB), HTTP errors {http_errors}, missed segments \
             {missed}, stalls {stalls} (longest wait for a new segment {:.0} ms), connections {}",
            sum(|r| r.polls),
            sum(|r| r.segments),
            sum(|r| r.segment_bytes) as f64 / 1e6,
            ms(max_interval),
            sum(|r| r.connects),
        );
        for e in &first_errors {
            println!("  HTTP error: {e}");
        }
        let show = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
        println!(
            "segment availability latency: n={} p50={} p90={} p99={} max={} ms \
             (unattributed {}, after the publisher stopped {})",
            latency.values.len(),
            show(lat(50.0)),
            show(lat(90.0)),
            show(lat(99.0)),
            show(lat(100.0)),
            latency.unattributed,
            latency.after_stop,
        );
    }
    println!("errors: {errors}");

    if let Some(path) = &cli.json {
        let value = json!({
            "label": cli.label,
            "publishers": streams.len(),
            "readers": cli.readers,
            "duration_s": cli.duration,
            "elapsed_s": seconds,
            "poll_ms": cli.poll_ms,
            "source": {
                "file": cli.flv.display().to_string(),
                "bitrate_bps": source.bitrate().round(),
                "pass_ms": source.pass_ms,
                "gop_ms": source.gop_ms,
            },
            "publish": {
                "published": published,
                "errors": publish_errors,
                "messages": messages,
                "bytes": bytes,
                "keyframes": keyframes,
                "max_lag_ms": ms(max_lag),
            },
            "read": {
                "polls": sum(|r| r.polls),
                "segments": sum(|r| r.segments),
                "segment_bytes": sum(|r| r.segment_bytes),
                "http_errors": http_errors,
                "first_errors": first_errors,
                "missed_segments": missed,
                "stalls": stalls,
                "max_interval_ms": ms(max_interval),
                "connections": sum(|r| r.connects),
            },
            "latency_ms": {
                "count": latency.values.len(),
                "p50": lat(50.0),
                "p90": lat(90.0),
                "p99": lat(99.0),
                "max": lat(100.0),
                "unattributed": latency.unattributed,
                "after_stop": latency.after_stop,
            },
            "errors": errors,
        });
        let text = serde_json::to_string_pretty(&value).map_err(|e| e.to_string())?;
        std::fs::write(path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(errors == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publisher::KeyframeSent;

    #[test]
    fn rtmp_bases_split() {
        assert_eq!(
            split_rtmp("rtmp://127.0.0.1:1936/streams").unwrap(),
            ("127.0.0.1:1936".to_owned(), "streams".to_owned())
        );
        assert_eq!(split_rtmp("rtmp://h/live/").unwrap().0, "h:1935");
        assert!(split_rtmp("http://h/live").is_err());
        assert!(split_rtmp("rtmp://h").is_err());
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&values, 50.0), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&values, 99.0), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&values, 100.0), Some(Duration::from_millis(100)));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn segments_are_attributed_to_the_keyframe_that_closed_them() {
        let t = Instant::now();
        let at = |ms| t + Duration::from_millis(ms);
        let keyframes = [0, 2000, 4000]
            .map(|ms| KeyframeSent {
                start: at(ms),
                end: at(ms + 3),
            })
            .to_vec();
        let publisher = PublisherReport {
            keyframes,
            stopped: Some(at(5000)),
            ..Default::default()
        };
        let reader = ReaderReport {
            // Before any closing keyframe; on time; a second one on the same keyframe; on time;
            // after the end.
            seen: vec![
                (1, at(1000)),
                (1, at(2005)),
                (2, at(2010)),
                (3, at(4001)),
                (4, at(5100)),
            ],
            ..Default::default()
        };
        let latency = attribute(&[publisher], &[(0, reader)]);
        assert_eq!(
            latency.values,
            vec![Duration::ZERO, Duration::from_millis(2)],
            "a playlist that arrives while the keyframe is still being written counts as 0"
        );
        assert_eq!((latency.unattributed, latency.after_stop), (2, 1));
    }
}
