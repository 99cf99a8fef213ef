//! What a media file or URL holds, by ffprobe and ffmpeg: an independent reader of what the server
//! wrote.

use std::path::Path;

use serde_json::Value;

use super::tools::{command, run};

/// What `ffprobe -v error ARGS INPUT` prints; it must succeed.
pub fn ffprobe(args: &[&str], input: &str) -> String {
    let out = run(command("ffprobe").args(["-v", "error"]).args(args).arg(input));
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

/// Width and height of the video in a media file, by ffprobe: `"640,360"`.
pub fn video_size(path: &Path) -> String {
    let args = [
        "-select_streams",
        "v",
        "-show_entries",
        "stream=width,height",
        "-of",
        "csv=p=0",
    ];
    ffprobe(&args, path.to_str().unwrap()).trim().to_owned()
}

/// `ffmpeg -v error -i FILE -f null -` succeeds without a word.
pub fn assert_decodes_cleanly(file: &Path) {
    let decode = command("ffmpeg")
        .args(["-v", "error", "-i", file.to_str().unwrap(), "-f", "null", "-"])
        .output()
        .unwrap();
    assert!(
        decode.status.success() && decode.stderr.is_empty(),
        "ffmpeg decodes {} with errors: {}",
        file.display(),
        String::from_utf8_lossy(&decode.stderr)
    );
}
