//! A recording survives a power cut at any moment: its data is synced before a name points to
//! it, and each name is synced into its directory before anything relies on it. Checked on the
//! system calls themselves: the recording path runs under strace (`-y` prints the path behind
//! each file descriptor), which needs no privilege to trace its own child.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use oxcast_archive::{ARCHIVE_DIR, ArchiveConfig, Archives};
use oxcast_core::{Store, StreamBus, StreamId};
use oxcast_media::{AvcConfig, Frame, MediaEvent, Track};

/// Where the traced run keeps its storage directory.
const STORAGE_VAR: &str = "OXCAST_TEST_DURABILITY_STORAGE";
const PUBLIC_ID: &str = "shows/live";
/// The traced run's storage directory is `<temporary directory>/<this>`.
const STORAGE_MARK: &str = "oxcast-storage";

/// An x264 record (640x360, High profile, level 3.0).
const AVC_RECORD: &[u8] = &[
    0x01, 0x64, 0x00, 0x1e, 0xff, 0xe1, 0x00, 0x1a, 0x67, 0x64, 0x00, 0x1e, 0xac, 0xd9, 0x40, 0xa0, 0x2f,
    0xf9, 0x70, 0x11, 0x00, 0x00, 0x03, 0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x3c, 0x0f, 0x16, 0x2d, 0x96,
    0x01, 0x00, 0x04, 0x68, 0xef, 0xbc, 0xb0, 0xfd, 0xf8, 0xf8, 0x00,
];

/// The recording path: a stream goes live, sends three seconds of video, ends; its recording is
/// finalized and listed. Run on its own, and under strace by the test below.
#[tokio::test]
async fn a_stream_is_recorded_and_listed() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = std::env::var_os(STORAGE_VAR).map_or_else(|| tmp.path().join("data"), PathBuf::from);
    let store = Store::open(&storage).unwrap();
    let config = ArchiveConfig {
        min_free_bytes: 0,
        ..ArchiveConfig::in_storage(&storage)
    };
    let archives = Archives::new(config, store.clone()).unwrap();
    let stream_id = StreamId::generate();
    let bus = Arc::new(StreamBus::new());
    archives.start(&stream_id, PUBLIC_ID.to_owned(), bus.subscribe());
    let avc = AvcConfig::parse(Bytes::from_static(AVC_RECORD)).unwrap();
    bus.publish(MediaEvent::VideoConfig(Arc::new(avc)));
    for i in 0..90 {
        bus.publish(MediaEvent::Frame(Frame {
            track: Track::Video,
            dts: i * 33,
            pts: i * 33,
            keyframe: i % 30 == 0,
            data: Bytes::from(vec![1u8; 1000]),
        }));
        tokio::task::yield_now().await;
    }
    bus.end();
    archives.wait(Duration::from_secs(60)).await;
    let listed = store.stream_archives(&stream_id).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(storage.join(&listed[0].path).is_file());
}

/// One system call from strace's log, with its arguments and result.
struct Call {
    name: String,
    text: String,
}

/// The calls of a `strace -f` log in the order they returned; a call another thread interrupted
/// (`<unfinished ...>`, then `<... name resumed>`) is joined into one.
fn calls(log: &str) -> Vec<Call> {
    let mut unfinished: Vec<(String, String)> = Vec::new();
    let mut calls = Vec::new();
    for line in log.lines() {
        let Some((pid, rest)) = line.split_once(' ') else {
            continue;
        };
        let rest = rest.trim_start();
        if let Some(started) = rest.strip_suffix(" <unfinished ...>") {
            unfinished.push((pid.to_owned(), started.to_owned()));
            continue;
        }
        let text = if rest.starts_with("<... ") {
            let Some(at) = unfinished.iter().position(|(p, _)| p == pid) else {
                continue;
            };
            let (_, started) = unfinished.remove(at);
            let tail = rest.split_once(" resumed>").map_or("", |(_, tail)| tail);
            format!("{started}{tail}")
        } else {
            rest.to_owned()
        };
        let Some((name, _)) = text.split_once('(') else {
            continue;
        };
        calls.push(Call {
            name: name.to_owned(),
            text,
        });
    }
    calls
}

/// The index of the first call at or after `from` that matches.
fn find(calls: &[Call], from: usize, what: &str, matches: impl Fn(&Call) -> bool) -> usize {
    calls
        .iter()
        .enumerate()
        .skip(from)
        .find(|(_, call)| matches(call))
        .map(|(at, _)| at)
        .unwrap_or_else(|| {
            // The calls on the storage directory, not the loader's and the harness's.
            let log: Vec<String> = calls
                .iter()
                .enumerate()
                .filter(|(_, c)| c.text.contains(STORAGE_MARK))
                .map(|(at, c)| format!("{at}: {}", c.text))
                .collect();
            panic!("no {what} after call {from} in:\n{}", log.join("\n"))
        })
}

/// A flush of the file descriptor open on `path` (strace -y shows it as `N</path>`).
fn synced(call: &Call, path: impl Fn(&str) -> bool) -> bool {
    (call.name == "fsync" || call.name == "fdatasync")
        && call
            .text
            .split_once('<')
            .and_then(|(_, rest)| rest.split_once('>'))
            .is_some_and(|(fd_path, _)| path(fd_path))
}

/// A successful call that names `path` among its string arguments.
fn names(call: &Call, name: &str, path: impl Fn(&str) -> bool) -> bool {
    call.name == name && !call.text.contains("= -1") && call.text.split('"').skip(1).step_by(2).any(path)
}

#[test]
fn recordings_and_their_names_are_synced_before_anything_relies_on_them() {
    let found = Command::new("strace").arg("-V").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "strace is not installed: `apt-get install strace` (scripts/test installs it)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let storage = root.join(STORAGE_MARK);
    let log = root.join("strace.log");
    let traced = Command::new("strace")
        .args(["-f", "-y", "-qq", "-o"])
        .arg(&log)
        .args([
            "-e",
            "trace=openat,fsync,fdatasync,rename,renameat,renameat2,mkdir,mkdirat,unlink,unlinkat",
            "--",
        ])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "a_stream_is_recorded_and_listed", "--test-threads=1"])
        .env(STORAGE_VAR, &storage)
        .output()
        .unwrap();
    assert!(
        traced.status.success(),
        "{}{}",
        String::from_utf8_lossy(&traced.stdout),
        String::from_utf8_lossy(&traced.stderr)
    );
    let calls = calls(&std::fs::read_to_string(&log).unwrap());
    let dir = |path: &Path| path.to_str().unwrap().to_owned();
    let archive_dir = storage.join(ARCHIVE_DIR);
    let (archive, recording) = (dir(&archive_dir), dir(&archive_dir.join("recording")));
    let (shows, asset_dir) = (
        dir(&archive_dir.join("shows")),
        dir(&archive_dir.join("shows/live")),
    );

    // Starting: the public_id file is written and synced, and its name synced into the directory,
    // before the recording exists; then the recording's own name is synced.
    let public_id = find(&calls, 0, "public_id file created", |c| {
        names(c, "openat", |p| p.ends_with(".public_id")) && c.text.contains("O_CREAT")
    });
    let at = find(&calls, public_id, "public_id file synced", |c| {
        synced(c, |p| p.ends_with(".public_id"))
    });
    let at = find(&calls, at, "recording directory synced", |c| {
        synced(c, |p| p == recording)
    });
    let part = find(&calls, 0, "recording created", |c| {
        names(c, "openat", |p| p.ends_with(".mp4.part")) && c.text.contains("O_CREAT")
    });
    assert!(
        part > at,
        "the recording was created before its public_id was durable"
    );
    let at = find(&calls, part, "recording synced", |c| {
        synced(c, |p| p.ends_with(".mp4.part"))
    });
    find(&calls, at, "recording directory synced", |c| {
        synced(c, |p| p == recording)
    });

    // Finalizing: each new directory synced into its parent; the asset synced under its
    // temporary name, renamed, and the new name synced into its directory; listed (the store
    // commits); only then does the recording go, and its removal is synced too.
    let made = find(&calls, part, "asset directory made", |c| {
        names(c, "mkdir", |p| p == shows) || names(c, "mkdirat", |p| p == shows)
    });
    find(&calls, made, "archive directory synced", |c| {
        synced(c, |p| p == archive)
    });
    let made = find(&calls, made, "asset directory made", |c| {
        names(c, "mkdir", |p| p == asset_dir) || names(c, "mkdirat", |p| p == asset_dir)
    });
    find(&calls, made, "new directory's parent synced", |c| {
        synced(c, |p| p == shows)
    });
    let temporary = find(&calls, part, "finalized file synced", |c| {
        synced(c, |p| p.ends_with(".mp4.tmp"))
    });
    let renamed = find(&calls, part, "finalized file renamed", |c| {
        ["rename", "renameat", "renameat2"].iter().any(|name| {
            names(c, name, |p| p.ends_with(".mp4.tmp")) && names(c, name, |p| p.ends_with(".mp4"))
        })
    });
    assert!(
        temporary < renamed,
        "the finalized file was renamed before it was synced"
    );
    let at = find(&calls, renamed, "asset directory synced", |c| {
        synced(c, |p| p == asset_dir)
    });
    let removed = find(&calls, part, "recording removed", |c| {
        names(c, "unlink", |p| p.ends_with(".mp4.part")) || names(c, "unlinkat", |p| p.ends_with(".mp4.part"))
    });
    assert!(
        removed > at,
        "the recording was removed before its asset was durable"
    );
    let listed = find(&calls, at, "listing committed", |c| {
        synced(c, |p| p.ends_with("oxcast.db-wal"))
    });
    assert!(
        removed > listed,
        "the recording was removed before its asset was listed"
    );
    find(&calls, removed, "recording directory synced", |c| {
        synced(c, |p| p == recording)
    });
}
