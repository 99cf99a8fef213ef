//! Simulcast destinations the tests start and stop: nginx-rtmp recording everything it is sent
//! (optionally behind TLS, for `rtmps://`), and a "black hole" that accepts connections and never
//! answers. The TESTING recipe; nginx and its modules are Debian's.

use std::io::Read as _;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::publisher::{count_frames, encoder, encoder_with_copy, wait_child};
use crate::support::free_port;

const RTMP_MODULE: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";
const STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

/// Fails (never skips) when a program is missing, naming the package to install.
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

fn require_file(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: `apt-get install {package}` (scripts/test installs it)"
    );
}

/// nginx-rtmp under its own prefix on a free loopback port: application `live`, recording every
/// stream it is sent to `rec/{stream name}-{unix time}.flv` (a new file per publish session).
pub struct Destination {
    dir: tempfile::TempDir,
    port: u16,
    tls: Option<Tls>,
    /// The nginx master (`daemon off`), leader of its own process group; `None` while stopped.
    master: Option<Child>,
}

/// The TLS front of a [`Destination::start_tls`].
struct Tls {
    port: u16,
    ca_file: PathBuf,
}

impl Destination {
    /// A plain RTMP destination at [`Destination::url`].
    pub fn start() -> Destination {
        Self::start_inner(false)
    }

    /// The same, and nginx's `stream` module terminating TLS on [`Destination::tls_port`] in front
    /// of it, with a certificate for `localhost` and `127.0.0.1` signed by a CA of its own
    /// ([`Destination::ca_file`]).
    pub fn start_tls() -> Destination {
        Self::start_inner(true)
    }

    fn start_inner(tls: bool) -> Destination {
        require("nginx", "nginx libnginx-mod-rtmp");
        require_file(RTMP_MODULE, "libnginx-mod-rtmp");
        if tls {
            require_file(STREAM_MODULE, "libnginx-mod-stream");
            require("openssl", "openssl");
        }
        let dir = tempfile::tempdir().unwrap();
        let rec = dir.path().join("rec");
        std::fs::create_dir(&rec).unwrap();
        // The workers run as nobody: they must reach the prefix and write the recordings.
        std::fs::set_permissions(&rec, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let port = free_port();
        let d = dir.path().display();
        let mut conf = format!("load_module {RTMP_MODULE};\n");
        let tls = tls.then(|| {
            conf.push_str(&format!("load_module {STREAM_MODULE};\n"));
            let (ca_file, cert, key) = make_certificate(dir.path());
            (
                Tls {
                    port: free_port(),
                    ca_file,
                },
                cert,
                key,
            )
        });
        conf.push_str(&format!(
            "daemon off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log info;\n\
             events {{ worker_connections 256; }}\n\
             rtmp {{ server {{ listen 127.0.0.1:{port}; chunk_size 4096;\n\
               application live {{ live on; record all; record_path {d}/rec;\n\
                 record_unique on; record_append on; }} }} }}\n"
        ));
        if let Some((tls, cert, key)) = &tls {
            conf.push_str(&format!(
                "stream {{ server {{ listen 127.0.0.1:{tls_port} ssl;\n\
                   ssl_certificate {cert}; ssl_certificate_key {key};\n\
                   proxy_pass 127.0.0.1:{port}; }} }}\n",
                tls_port = tls.port,
                cert = cert.display(),
                key = key.display(),
            ));
        }
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let mut destination = Destination {
            dir,
            port,
            tls: tls.map(|(tls, _, _)| tls),
            master: None,
        };
        destination.spawn();
        destination
    }

    fn spawn(&mut self) {
        let dir = self.dir.path();
        let stderr = std::fs::File::create(dir.join("stderr.log")).unwrap();
        // Its own process group, so that whatever happens its workers go with it (see `Drop`).
        let mut master = Command::new("nginx")
            .arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let ports: Vec<u16> = std::iter::once(self.port)
            .chain(self.tls.as_ref().map(|t| t.port))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        for port in ports {
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                if let Some(status) = master.try_wait().unwrap() {
                    panic!("nginx exited with {status}: {}", self.log());
                }
                assert!(
                    Instant::now() < deadline,
                    "nginx does not listen on {port}: {}",
                    self.log()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.master = Some(master);
    }

    /// `rtmp://127.0.0.1:PORT/live`: a simulcast `uri`, the stream key to go with it.
    pub fn url(&self) -> String {
        format!("rtmp://127.0.0.1:{}/live", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `rtmps://localhost:TLSPORT/live`, for a destination started with [`Destination::start_tls`].
    pub fn tls_url(&self) -> String {
        format!("rtmps://localhost:{}/live", self.tls_port())
    }

    pub fn tls_port(&self) -> u16 {
        self.tls.as_ref().expect("started with start_tls").port
    }

    /// The PEM certificate of the CA that signed the TLS front's certificate: what a client must
    /// trust to reach it.
    pub fn ca_file(&self) -> &Path {
        &self.tls.as_ref().expect("started with start_tls").ca_file
    }

    /// Everything nginx wrote to its error log (and stderr) so far.
    pub fn log(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("{}{}", read("stderr.log"), read("error.log"))
    }

    /// The FLV recordings so far, by name: `{stream name}-{unix time}.flv`, so one stream's files
    /// sort in the order they were started.
    pub fn recordings(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path().join("rec"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "flv"))
            .collect();
        files.sort();
        files
    }

    /// The recordings of the stream named `key` (the stream key a publisher used).
    pub fn recordings_of(&self, key: &str) -> Vec<PathBuf> {
        let prefix = format!("{key}-");
        self.recordings()
            .into_iter()
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix))
            })
            .collect()
    }

    /// Stops nginx and waits for it; the recordings stay. A graceful stop (SIGQUIT to the master
    /// named by the pid file) closes them cleanly, but nginx-rtmp's graceful stop waits for
    /// publishers to leave (`worker_shutdown_timeout` does not reach RTMP sessions); so after 2 s
    /// the fast stop (SIGTERM) closes their connections, as a destination going down would.
    pub fn stop(&mut self) {
        let stopped = self.stop_quietly();
        assert!(stopped, "nginx did not stop: {}", self.log());
    }

    /// Starts nginx again on the same ports with the same configuration and recording directory.
    pub fn restart(&mut self) {
        if self.master.is_some() {
            self.stop();
        }
        self.spawn();
    }

    fn stop_quietly(&mut self) -> bool {
        let Some(mut master) = self.master.take() else {
            return true;
        };
        let pid = std::fs::read_to_string(self.dir.path().join("nginx.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
            .unwrap_or(master.id());
        let signal = |name: &str, target: &str| {
            let _ = Command::new("kill")
                .args([name, "--", target])
                .stderr(Stdio::null())
                .status();
        };
        let exited = |master: &mut Child, limit: Duration| {
            let deadline = Instant::now() + limit;
            loop {
                if !matches!(master.try_wait(), Ok(None)) {
                    return true;
                }
                if Instant::now() > deadline {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        };
        signal("-QUIT", &pid.to_string());
        if exited(&mut master, Duration::from_secs(2)) {
            return true;
        }
        signal("-TERM", &pid.to_string());
        if exited(&mut master, Duration::from_secs(10)) {
            return true;
        }
        signal("-KILL", &format!("-{}", master.id()));
        let _ = master.wait();
        false
    }
}

impl Drop for Destination {
    fn drop(&mut self) {
        let _ = self.stop_quietly();
        if std::thread::panicking() {
            eprintln!("--- nginx destination {} ---\n{}", self.port, self.log());
        }
    }
}

/// A CA and a certificate it signs for `localhost` and `127.0.0.1`, in `dir/tls`: returns (CA
/// certificate, server certificate, server key). Not one self-signed certificate: that one is a CA
/// (`openssl req -x509` marks it so), and WebPKI verifiers (rustls) refuse a CA as a server's
/// certificate.
fn make_certificate(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let tls = dir.join("tls");
    std::fs::create_dir(&tls).unwrap();
    let ca = tls.join("ca.pem");
    let ca_key = tls.join("ca.key");
    let cert = tls.join("localhost.pem");
    let key = tls.join("localhost.key");
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&tls)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=Oxcast test CA",
        "-days",
        "1",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-days",
        "1",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-addext",
        "subjectAltName=DNS:localhost,IP:127.0.0.1",
        "-addext",
        "basicConstraints=critical,CA:FALSE",
        "-addext",
        "extendedKeyUsage=serverAuth",
        "-keyout",
        "localhost.key",
        "-out",
        "localhost.pem",
    ]);
    assert!(ca_key.exists());
    (ca, cert, key)
}

/// A TCP listener that accepts connections and never answers: they stay open, unread, until it is
/// dropped. A destination whose RTMP handshake never completes.
pub struct BlackHole {
    port: u16,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl BlackHole {
    pub fn start() -> BlackHole {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // Non-blocking, so the thread can see `stop`.
        listener.set_nonblocking(true).unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let accepted = Arc::clone(&accepted);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut held = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((conn, _)) => {
                            held.push(conn);
                            accepted.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(50)),
                    }
                }
            })
        };
        BlackHole {
            port,
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    /// `rtmp://127.0.0.1:PORT/live`.
    pub fn url(&self) -> String {
        format!("rtmp://127.0.0.1:{}/live", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// How many connections it has taken so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The fixtures themselves, with ffmpeg as the publisher: what the simulcast tests rely on.
#[test]
fn destination_fixture_records_what_ffmpeg_publishes() {
    const LIMIT: Duration = Duration::from_secs(60);
    let work = tempfile::tempdir().unwrap();
    let mut plain = Destination::start();
    let tls = Destination::start_tls();

    // Plain and TLS at once; ffmpeg does not verify the certificate.
    let copies = [work.path().join("x.flv"), work.path().join("y.flv")];
    let mut encoders = [
        encoder_with_copy(&format!("{}/x", plain.url()), 6, "640x360", 2, &copies[0]),
        encoder_with_copy(&format!("{}/y", tls.tls_url()), 6, "640x360", 2, &copies[1]),
    ];
    for ffmpeg in &mut encoders {
        let (ok, err) = wait_child(ffmpeg, LIMIT);
        assert!(ok, "{err}");
    }
    std::thread::sleep(Duration::from_millis(500));
    for ((destination, key), copy) in [(&plain, "x"), (&tls, "y")].into_iter().zip(&copies) {
        let files = destination.recordings();
        assert_eq!(
            files,
            destination.recordings_of(key),
            "one recording, named by the key: {}",
            destination.log()
        );
        assert_eq!(files.len(), 1, "{files:?}");
        let source = count_frames(copy.to_str().unwrap());
        let recorded = count_frames(files[0].to_str().unwrap());
        assert!(source.0 >= 170 && source.1 >= 270, "{source:?}");
        assert_eq!((recorded.0, recorded.1), (source.0, source.1), "{key}");
    }

    // The certificate verifies as a strict client would check it, by name and by address.
    for host in ["localhost", "127.0.0.1"] {
        let out = Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{}", tls.tls_port())])
            .args(["-servername", "localhost", "-verify_return_error"])
            .arg("-CAfile")
            .arg(tls.ca_file())
            .args(if host == "localhost" {
                ["-verify_hostname", host]
            } else {
                ["-verify_ip", host]
            })
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("Verify return code: 0 (ok)"),
            "{host}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // A stop while a publisher is connected cuts it off (an outage), and a restart on the same
    // port records the next session in a new file.
    plain.stop();
    assert!(
        TcpStream::connect(("127.0.0.1", plain.port())).is_err(),
        "stopped"
    );
    plain.restart();
    let mut ffmpeg = encoder(&format!("{}/x", plain.url()), 20, "320x240", 1, "va");
    let deadline = Instant::now() + LIMIT;
    while plain.recordings().len() < 2 {
        assert!(Instant::now() < deadline, "no second recording: {}", plain.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(3));
    plain.stop();
    // ffmpeg succeeds only if it published its whole 20 s.
    let (ok, _) = wait_child(&mut ffmpeg, LIMIT);
    assert!(!ok, "the publisher was cut off by the stop");
    let files = plain.recordings_of("x");
    assert_eq!(files.len(), 2, "{files:?}");
    let (video, _, _) = count_frames(files[1].to_str().unwrap());
    assert!(
        video >= 60,
        "the second session was recorded up to the stop: {video}"
    );

    // The black hole takes connections and says nothing.
    let hole = BlackHole::start();
    let mut conn = TcpStream::connect(("127.0.0.1", hole.port())).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    std::io::Write::write_all(&mut conn, &[3; 1537]).unwrap();
    let mut buf = [0u8; 1];
    let read = conn.read(&mut buf);
    assert!(
        read.as_ref().is_err_and(|e| matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        )),
        "no answer, connection still open: {read:?}"
    );
    assert_eq!(hole.accepted(), 1);
}
