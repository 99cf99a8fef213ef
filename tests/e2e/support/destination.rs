//! Simulcast destinations the tests start and stop: nginx-rtmp recording everything it is sent
//! (optionally behind TLS, for `rtmps://`), and a "black hole" that accepts connections and never
//! answers. The TESTING recipe; nginx and its modules are Debian's.

use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::tools::{command, require, run};
use super::{free_port, poll_until, signal, wait_until};

const RTMP_MODULE: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";
const STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";
/// Tries at starting nginx on ports picked for it, which another process may take first.
const PORT_TRIES: usize = 5;
/// How long nginx may take to listen, or to stop.
const LIMIT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(50);

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
        require("nginx");
        require(RTMP_MODULE);
        if tls {
            require(STREAM_MODULE);
        }
        let dir = tempfile::tempdir().unwrap();
        let rec = dir.path().join("rec");
        std::fs::create_dir(&rec).unwrap();
        // The workers run as nobody: they must reach the prefix and write the recordings.
        std::fs::set_permissions(&rec, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        // (CA certificate, server certificate, server key)
        let certificates = tls.then(|| make_certificate(dir.path()));
        let mut destination = Destination {
            dir,
            port: 0,
            tls: None,
            master: None,
        };
        // nginx must be told its ports: picked free, they may be taken before it binds them.
        for attempt in 1..=PORT_TRIES {
            destination.port = free_port();
            destination.tls = certificates.as_ref().map(|(ca_file, _, _)| Tls {
                port: free_port(),
                ca_file: ca_file.clone(),
            });
            let front = certificates
                .as_ref()
                .map(|(_, cert, key)| (cert.as_path(), key.as_path()));
            let conf = destination.config(front);
            std::fs::write(destination.dir.path().join("nginx.conf"), conf).unwrap();
            // Each try's own log: whether it could bind is read there.
            let _ = std::fs::remove_file(destination.dir.path().join("error.log"));
            match destination.spawn() {
                Ok(()) => return destination,
                Err(log) if attempt < PORT_TRIES && log.contains("Address already in use") => {
                    eprintln!("nginx could not bind its ports, trying others: {log}");
                }
                Err(log) => panic!("nginx did not start: {log}"),
            }
        }
        unreachable!("the last try returns or panics")
    }

    /// The configuration: the RTMP server recording everything, and the TLS front (`front`: its
    /// certificate and key) when there is one.
    fn config(&self, front: Option<(&Path, &Path)>) -> String {
        let d = self.dir.path().display();
        let port = self.port;
        let mut conf = format!("load_module {RTMP_MODULE};\n");
        if front.is_some() {
            conf.push_str(&format!("load_module {STREAM_MODULE};\n"));
        }
        conf.push_str(&format!(
            "daemon off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log info;\n\
             events {{ worker_connections 256; }}\n\
             rtmp {{ server {{ listen 127.0.0.1:{port}; chunk_size 4096;\n\
               application live {{ live on; record all; record_path {d}/rec;\n\
                 record_unique on; record_append on; }} }} }}\n"
        ));
        if let (Some(tls), Some((cert, key))) = (&self.tls, front) {
            conf.push_str(&format!(
                "stream {{ server {{ listen 127.0.0.1:{tls_port} ssl;\n\
                   ssl_certificate {cert}; ssl_certificate_key {key};\n\
                   proxy_pass 127.0.0.1:{port}; }} }}\n",
                tls_port = tls.port,
                cert = cert.display(),
                key = key.display(),
            ));
        }
        conf
    }

    /// Starts nginx and waits until it listens on its ports; `Err` with its log if it exited.
    fn spawn(&mut self) -> Result<(), String> {
        let dir = self.dir.path();
        let stderr = std::fs::File::create(dir.join("stderr.log")).unwrap();
        // Its own process group, so that whatever happens its workers go with it (see `Drop`).
        let mut master = command("nginx")
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
        for port in ports {
            wait_until(&format!("nginx to listen on {port}"), LIMIT, POLL, || {
                if let Some(status) = master.try_wait().unwrap() {
                    return Ok(Err(format!("nginx exited with {status}: {}", self.log())));
                }
                TcpStream::connect(("127.0.0.1", port))
                    .map(|_| Ok(()))
                    .map_err(|e| e.to_string())
            })?;
        }
        self.master = Some(master);
        Ok(())
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
        if let Err(log) = self.spawn() {
            panic!("nginx did not start again on port {}: {log}", self.port);
        }
    }

    fn stop_quietly(&mut self) -> bool {
        let Some(mut master) = self.master.take() else {
            return true;
        };
        let pid = std::fs::read_to_string(self.dir.path().join("nginx.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
            .unwrap_or(master.id());
        let exited = |master: &mut Child, limit: Duration| {
            poll_until(limit, POLL, || match master.try_wait() {
                Ok(None) => Err(()),
                _ => Ok(()),
            })
            .is_ok()
        };
        let _ = signal(pid, "QUIT", false);
        if exited(&mut master, Duration::from_secs(2)) {
            return true;
        }
        let _ = signal(pid, "TERM", false);
        if exited(&mut master, LIMIT) {
            return true;
        }
        let _ = signal(master.id(), "KILL", true);
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
    // A new key and a certificate for it, valid for a day: `name.key`, `name.pem`.
    let issue = |name: &str, subject: &str, extra: &[&str]| {
        let (keyout, out) = (format!("{name}.key"), format!("{name}.pem"));
        let mut openssl = command("openssl");
        openssl.args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]);
        openssl.args(["-subj", subject, "-keyout", &keyout, "-out", &out]);
        run(openssl.args(extra).current_dir(&tls));
    };
    issue("ca", "/CN=Oxcast test CA", &[]);
    issue(
        "localhost",
        "/CN=localhost",
        &[
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
        ],
    );
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
