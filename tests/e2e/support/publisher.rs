//! Publishing to the server under test with a real encoder (ffmpeg).

use std::io::Read as _;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::poll_until;
use super::tools::{command, run};

/// An encode like the TESTING recipe: a keyframe exactly every `gop_sec` seconds.
pub fn encoder(url: &str, seconds: u32, size: &str, gop_sec: u32, tracks: &str) -> Child {
    let mut cmd = encode(seconds, size, gop_sec, tracks);
    cmd.args(["-flvflags", "no_duration_filesize", "-f", "flv", url]);
    cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap()
}

/// The same encode, published to `url` and written to the FLV file `copy`: what was published,
/// for counting. The file goes on if the server goes away.
pub fn encoder_with_copy(url: &str, seconds: u32, size: &str, gop_sec: u32, copy: &std::path::Path) -> Child {
    let mut cmd = encode(seconds, size, gop_sec, "va");
    // Behind tee the encoders cannot tell that FLV wants the codec configuration out of band.
    cmd.args([
        "-flags",
        "+global_header",
        "-map",
        "0:v",
        "-map",
        "1:a",
        "-f",
        "tee",
    ]);
    cmd.arg(format!(
        "[f=flv:flvflags=no_duration_filesize:onfail=ignore]{url}|[f=flv]{}",
        copy.display()
    ));
    cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap()
}

/// The same encode written to the FLV file `path` as fast as it goes, for tests that publish its
/// tags with a client of their own.
pub fn encode_flv(path: &std::path::Path, seconds: u32, size: &str, gop_sec: u32, tracks: &str) {
    let cmd = encode(seconds, size, gop_sec, tracks);
    let args: Vec<_> = cmd
        .get_args()
        .filter(|a| *a != "-re")
        .map(ToOwned::to_owned)
        .collect();
    run(command("ffmpeg").args(args).args(["-y", "-f", "flv"]).arg(path));
}

fn encode(seconds: u32, size: &str, gop_sec: u32, tracks: &str) -> Command {
    let gop = (30 * gop_sec).to_string();
    let mut cmd = command("ffmpeg");
    cmd.args(["-v", "error", "-nostdin", "-re"]);
    if tracks.contains('v') {
        cmd.args(["-f", "lavfi", "-i", &format!("testsrc2=size={size}:rate=30")]);
    }
    if tracks.contains('a') {
        cmd.args(["-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000"]);
    }
    cmd.args(["-t", &seconds.to_string()]);
    if tracks.contains('v') {
        cmd.args(["-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency"]);
        cmd.args([
            "-g",
            &gop,
            "-keyint_min",
            &gop,
            "-sc_threshold",
            "0",
            "-b:v",
            "1500k",
            "-pix_fmt",
            "yuv420p",
        ]);
    }
    if tracks.contains('a') {
        cmd.args(["-c:a", "aac", "-b:a", "128k", "-ar", "48000", "-ac", "2"]);
    }
    cmd
}

/// A small live encode (320x240, keyframe every second, H.264 + AAC): enough to drive the ingest.
pub fn small_encoder(url: &str, seconds: u32) -> Child {
    encoder(url, seconds, "320x240", 1, "va")
}

/// Waits for a child (with its stderr piped) to exit; returns whether it succeeded and its
/// stderr. One still running after `limit` is killed, and the test fails.
pub fn wait_child(child: &mut Child, limit: Duration) -> (bool, String) {
    let exited = poll_until(limit, Duration::from_millis(50), || {
        child.try_wait().unwrap().ok_or("running")
    });
    let Ok(status) = exited else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("process {} did not exit within {limit:?}", child.id());
    };
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (status.success(), err)
}

pub fn publish_url(stream: &Value) -> String {
    let input = &stream["input"];
    format!(
        "{}/{}",
        input["uri"].as_str().unwrap(),
        input["stream_key"].as_str().unwrap()
    )
}
