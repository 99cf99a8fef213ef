//! Interoperability with real programs: ffmpeg, GStreamer's rtmp2sink and librtmp publish to the
//! `count_server` example (built on `ServerSession`); the `publish_flv` example (built on
//! `ClientSession`) publishes to nginx-rtmp, whose recording ffprobe reads back. A missing program
//! fails the test with the package to install; `scripts/test` installs them all.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn require(program: &str, package: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .output()
        .unwrap();
    assert!(
        found.status.success(),
        "{program} is not installed: `apt-get install {package}` (scripts/test installs it)"
    );
}

fn source_flv() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/rtmp/source.flv")
}

/// Examples are built by `cargo test` next to the test binaries (target/<profile>/examples), except
/// when a single test target is selected; then this builds the one needed.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "oxcast-rtmp", "--example", name])
            .status()
            .unwrap();
        assert!(
            status.success() && path.exists(),
            "example {name} is not built at {}",
            path.display()
        );
    }
    path
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the child and everything it started (its process group) when the test ends, whatever
/// happens: nginx's workers outlive a killed master otherwise.
struct Guard(Child);

impl Guard {
    fn spawn(command: &mut Command) -> Self {
        use std::os::unix::process::CommandExt;
        Self(command.process_group(0).spawn().unwrap())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.0.wait();
    }
}

/// Runs a command to completion within `limit`, returning its stdout; fails the test otherwise.
fn run(command: &mut Command, limit: Duration) -> String {
    let described = format!("{command:?}");
    let mut child = Guard::spawn(command.stdout(Stdio::piped()).stderr(Stdio::piped()));
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            let mut out = String::new();
            let mut err = String::new();
            use std::io::Read;
            child.0.stdout.take().unwrap().read_to_string(&mut out).unwrap();
            child.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            assert!(status.success(), "{described} failed ({status}):\n{err}");
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "{described} did not finish in {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// ffprobe's packet count per codec type, and the codec names.
fn probe(file: &Path) -> (HashMap<String, usize>, Vec<String>) {
    require("ffprobe", "ffmpeg");
    let packets = run(
        Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-show_entries",
                "packet=codec_type",
                "-of",
                "csv=p=0",
            ])
            .arg(file),
        Duration::from_secs(60),
    );
    let mut counts = HashMap::new();
    // A packet carrying side data prints an extra (empty) field and line: only the first field counts.
    for kind in packets
        .lines()
        .filter_map(|l| l.split(',').next())
        .filter(|k| !k.trim().is_empty())
    {
        *counts.entry(kind.trim().to_owned()).or_default() += 1;
    }
    let codecs = run(
        Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-show_entries",
                "stream=codec_name",
                "-of",
                "csv=p=0",
            ])
            .arg(file),
        Duration::from_secs(60),
    );
    (
        counts,
        codecs
            .lines()
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty())
            .collect(),
    )
}

/// The `count_server` example on a free port, with its report lines.
struct CountServer {
    _child: Guard,
    addr: String,
    lines: mpsc::Receiver<String>,
}

impl CountServer {
    fn start() -> Self {
        let mut child = Guard::spawn(
            Command::new(example("count_server"))
                .arg("127.0.0.1:0")
                .stdout(Stdio::piped()),
        );
        let stdout = BufReader::new(child.0.stdout.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let first = lines.recv_timeout(Duration::from_secs(10)).unwrap();
        let addr = first.strip_prefix("listening on ").unwrap().to_owned();
        Self {
            _child: child,
            addr,
            lines,
        }
    }

    /// The next `published …` report as key=value pairs.
    fn report(&self) -> HashMap<String, String> {
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(60))
            .expect("no publish report");
        let fields = line
            .strip_prefix("published ")
            .unwrap_or_else(|| panic!("unexpected line {line}"));
        fields
            .split(' ')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }
}

fn number(report: &HashMap<String, String>, key: &str) -> usize {
    report[key].parse().unwrap()
}

#[test]
fn ffmpeg_publishes_to_server_session_and_every_packet_arrives() {
    require("ffmpeg", "ffmpeg");
    let server = CountServer::start();
    let dir = tempfile::tempdir().unwrap();
    let sent = dir.path().join("sent.flv");
    // One live encode, muxed twice by the tee muxer: to our server and to a file for ffprobe.
    let tee = format!(
        "[f=flv]rtmp://{}/streams/ffmpeg-key|[f=flv]{}",
        server.addr,
        sent.display()
    );
    run(
        Command::new("ffmpeg")
            .args(["-v", "error", "-nostdin"])
            .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30"])
            .args(["-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000"])
            .args(["-t", "5", "-map", "0:v", "-map", "1:a"])
            .args([
                "-c:v", "libx264", "-preset", "veryfast", "-g", "30", "-pix_fmt", "yuv420p",
            ])
            .args(["-c:a", "aac", "-b:a", "96k", "-flvflags", "no_duration_filesize"])
            .args(["-f", "tee", &tee]),
        Duration::from_secs(120),
    );
    let report = server.report();
    let (packets, _) = probe(&sent);
    assert_eq!(report["app"], "streams");
    assert_eq!(report["key"], "ffmpeg-key");
    assert!(packets["video"] >= 140, "{packets:?}");
    assert_eq!(number(&report, "video_frames"), packets["video"], "{report:?}");
    assert_eq!(number(&report, "audio_frames"), packets["audio"], "{report:?}");
    assert!(
        number(&report, "data_messages") >= 1,
        "metadata arrives: {report:?}"
    );
}

fn gst_publish(sink: &str, server: &CountServer, key: &str) {
    require("gst-launch-1.0", "gstreamer1.0-tools");
    // librtmp takes its options inside the location, so that one is quoted for gst-launch's parser.
    let sink_args = match sink {
        "rtmp2sink" => format!(
            "rtmp2sink location=rtmp://{}/streams/{key} chunk-size=128",
            server.addr
        ),
        _ => format!(
            "rtmpsink location=\"rtmp://{}/streams/{key} live=1\"",
            server.addr
        ),
    };
    let pipeline = format!(
        "filesrc location={} ! flvdemux name=d d.video ! queue ! h264parse ! flvmux name=m streamable=true ! \
         {sink_args} d.audio ! queue ! aacparse ! m.",
        source_flv().display(),
    );
    let out = Command::new("gst-launch-1.0")
        .args(["-q", "-e"])
        .args(shell_words(&pipeline))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{sink} failed (is gstreamer1.0-plugins-bad / -good installed?):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Splits on spaces outside double quotes, keeping the quotes (gst-launch parses them itself).
fn shell_words(line: &str) -> Vec<String> {
    let mut words = vec![String::new()];
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                words.last_mut().unwrap().push(c);
            }
            ' ' if !quoted => words.push(String::new()),
            _ => words.last_mut().unwrap().push(c),
        }
    }
    words.retain(|w| !w.is_empty());
    words
}

#[test]
fn gstreamer_rtmp2sink_and_librtmp_publish_to_server_session() {
    let (packets, _) = probe(&source_flv());
    let server = CountServer::start();
    for (sink, key) in [("rtmp2sink", "gst-key"), ("rtmpsink", "librtmp-key")] {
        gst_publish(sink, &server, key);
        let report = server.report();
        assert_eq!(report["key"], key);
        assert_eq!(
            number(&report, "video_frames"),
            packets["video"],
            "{sink}: {report:?}"
        );
        assert_eq!(
            number(&report, "audio_frames"),
            packets["audio"],
            "{sink}: {report:?}"
        );
    }
}

/// nginx-rtmp under its own prefix on a free loopback port, recording everything it receives.
struct Nginx {
    child: Guard,
    dir: tempfile::TempDir,
    port: u16,
}

impl Nginx {
    fn start() -> Self {
        require("nginx", "nginx libnginx-mod-rtmp");
        let module = Path::new("/usr/lib/nginx/modules/ngx_rtmp_module.so");
        assert!(
            module.exists(),
            "nginx-rtmp is not installed: `apt-get install libnginx-mod-rtmp`"
        );
        let dir = tempfile::tempdir().unwrap();
        let rec = dir.path().join("rec");
        std::fs::create_dir(&rec).unwrap();
        // nginx's workers run as nobody and must write the recording.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&rec, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let port = free_port();
        let d = dir.path().display();
        let conf = format!(
            "load_module {module};\ndaemon off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log warn;\n\
             events {{ worker_connections 64; }}\n\
             rtmp {{ server {{ listen 127.0.0.1:{port}; chunk_size 4096;\n\
               application live {{ live on; record all; record_path {d}/rec; }} }} }}\n",
            module = module.display()
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let child = Guard::spawn(
            Command::new("nginx")
                .arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(dir.path().join("nginx.conf"))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx did not listen: {}",
                Self::log(dir.path())
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, dir, port }
    }

    fn log(dir: &Path) -> String {
        std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
    }

    /// Graceful stop (SIGQUIT), so recordings are closed.
    fn stop(mut self) -> tempfile::TempDir {
        let pid = self.child.0.id().to_string();
        let _ = Command::new("kill").args(["-QUIT", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.0.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }
}

#[test]
fn client_session_publishes_an_flv_to_nginx_rtmp_which_records_it_whole() {
    let nginx = Nginx::start();
    let url = format!("rtmp://127.0.0.1:{}/live/oxcast", nginx.port);
    let out = run(
        Command::new(example("publish_flv")).arg(source_flv()).arg(&url),
        Duration::from_secs(60),
    );
    assert!(out.starts_with("published video=122 audio=190 data=1"), "{out}");
    let dir = nginx.stop();
    let recording = dir.path().join("rec/oxcast.flv");
    assert!(
        recording.exists(),
        "nginx recorded nothing: {}",
        Nginx::log(dir.path())
    );
    let (recorded, codecs) = probe(&recording);
    let (source, _) = probe(&source_flv());
    assert_eq!(codecs, ["h264", "aac"]);
    assert_eq!(recorded["video"], source["video"]);
    assert_eq!(recorded["audio"], source["audio"]);
}
