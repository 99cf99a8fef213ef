//! Publishing to the server under test with a real encoder (ffmpeg), and the tools' checks.

use std::io::Read as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Fails (never skips) when a program the tests run is missing, naming the package to install.
pub fn require(program: &str, package: &str) {
    let found = Command::new(program)
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    assert!(
        found.is_ok_and(|s| s.success()),
        "{program} is not installed: `apt-get install {package}` (scripts/test installs it)"
    );
}

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
    let mut fast = Command::new("ffmpeg");
    fast.args(args).args(["-y", "-f", "flv"]).arg(path);
    let out = fast.output().unwrap();
    assert!(
        out.status.success(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn encode(seconds: u32, size: &str, gop_sec: u32, tracks: &str) -> Command {
    require("ffmpeg", "ffmpeg");
    let gop = (30 * gop_sec).to_string();
    let mut cmd = Command::new("ffmpeg");
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

/// What `ffprobe -v error ARGS INPUT` prints; it must succeed.
pub fn ffprobe(args: &[&str], input: &str) -> String {
    require("ffprobe", "ffmpeg");
    let out = Command::new("ffprobe")
        .args(["-v", "error"])
        .args(args)
        .arg(input)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ffprobe {input}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Video and audio frames in a media file or URL, and its duration in seconds, by ffprobe.
pub fn count_frames(input: &str) -> (u64, u64, f64) {
    let out = ffprobe(
        &[
            "-count_frames",
            "-show_entries",
            "stream=codec_type,nb_read_frames:format=duration",
            "-of",
            "json",
        ],
        input,
    );
    let json: Value = serde_json::from_str(&out).unwrap();
    let count = |kind: &str| {
        json["streams"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["codec_type"] == kind)
            .map(|s| s["nb_read_frames"].as_str().unwrap().parse::<u64>().unwrap())
            .sum::<u64>()
    };
    let duration = json["format"]["duration"]
        .as_str()
        .map_or(0.0, |d| d.parse().unwrap());
    (count("video"), count("audio"), duration)
}

/// A small live encode (320x240, keyframe every second, H.264 + AAC): enough to drive the ingest.
pub fn small_encoder(url: &str, seconds: u32) -> Child {
    encoder(url, seconds, "320x240", 1, "va")
}

/// Waits for a child to exit; returns whether it succeeded and its stderr.
pub fn wait_child(child: &mut Child, limit: Duration) -> (bool, String) {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            return (status.success(), err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("child did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn publish_url(stream: &Value) -> String {
    let input = &stream["input"];
    format!(
        "{}/{}",
        input["uri"].as_str().unwrap(),
        input["stream_key"].as_str().unwrap()
    )
}
