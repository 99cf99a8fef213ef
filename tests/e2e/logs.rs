//! The log an operator reads: one stream's story, from its publisher's connection to each of its
//! outputs, found with one filter on its `stream_id`.

use std::time::Duration;

use serde_json::json;

use crate::support::destination::Destination;
use crate::support::publisher::{encoder, publish_url, wait_child};
use crate::support::{Options, Server, wait_until};

/// The crates whose lines belong to a stream once it is published, by the target `tracing`
/// prints before each message.
const STREAM_TARGETS: [&str; 4] = [
    "oxcast_ingest",
    "oxcast_hls",
    "oxcast_archive",
    "oxcast_simulcast",
];

/// The target of a line as the server prints it: `<time> <LEVEL> <spans>: <target>: <message>`.
fn target(line: &str) -> Option<&str> {
    STREAM_TARGETS
        .into_iter()
        .find(|t| line.contains(&format!(" {t}: ")) || line.contains(&format!(" {t}::")))
}

#[test]
fn every_line_of_a_published_streams_tasks_carries_its_stream_id() {
    let mut destination = Destination::start();
    let server = Server::start_with(Options::env(&[(
        "OXCAST__SIMULCAST__ALLOW_PRIVATE_DESTINATIONS",
        "true",
    )]));
    // A new stream has HLS and archive outputs; a relay makes the fourth task.
    let s = server.create_stream(json!({"input": {"type": "rtmp"}, "idle_timeout_sec": 2}));
    let id = s["id"].as_str().unwrap().to_owned();
    server.post(
        &format!("/live_streams/{id}/outputs"),
        json!({"type": "simulcast", "uri": destination.url(), "stream_key": "logs"}),
    );
    let mut ffmpeg = encoder(&publish_url(&s), 6, "320x240", 2, "va");
    let (ok, err) = wait_child(&mut ffmpeg, Duration::from_secs(60));
    assert!(ok, "ffmpeg published: {err}");
    server.wait_status(&id, "idle", Duration::from_secs(30));
    // The playlist has ended and the recording is finalized: every task has spoken.
    let log = wait_until(
        "every task's lines, the playlist's end and the recording's finalizing",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let log = server.log();
            let seen = STREAM_TARGETS.map(|t| log.lines().any(|l| target(l) == Some(t)));
            let ended = log.contains("HLS playlist ended") && log.contains("recording finalized");
            if seen.iter().all(|s| *s) && ended {
                Ok(log)
            } else {
                Err(log)
            }
        },
    );
    destination.stop();

    let tag = format!("stream_id={id}");
    // The ingest's lines from the accepted publish on; the outputs' lines, all of them.
    let published = log
        .lines()
        .position(|l| target(l) == Some("oxcast_ingest") && l.contains("publishing"))
        .unwrap_or_else(|| panic!("the ingest logged the publish:\n{log}"));
    let mut counted = std::collections::BTreeMap::new();
    for (n, line) in log.lines().enumerate() {
        let Some(t) = target(line) else { continue };
        if t == "oxcast_ingest" && n < published {
            continue;
        }
        assert!(
            line.contains(&tag),
            "a line of {t} without {tag}: {line}\n\nthe whole log:\n{log}"
        );
        *counted.entry(t).or_insert(0) += 1;
    }
    for t in STREAM_TARGETS {
        assert!(
            counted.get(t).is_some_and(|n| *n > 0),
            "{t} logged for the stream:\n{log}"
        );
    }
}
