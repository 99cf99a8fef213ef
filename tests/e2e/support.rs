//! What the tests share: starting the server and talking to it, waiting, the external tools, and
//! (in the submodules) the clients and destinations the tests drive. Test modules import from here
//! and never from each other.

// Submodules by path: this file is loaded by `#[path]`, whose submodules would be looked up beside it.
#[path = "support/destination.rs"]
pub mod destination;
#[path = "support/hls.rs"]
pub mod hls;
// One home for the test PostgreSQL server: the store's unit tests use it too.
#[path = "../../crates/core/src/store/tests/postgres_server.rs"]
pub mod postgres;
#[path = "support/probe.rs"]
pub mod probe;
#[path = "support/publisher.rs"]
pub mod publisher;
#[path = "support/recordings.rs"]
pub mod recordings;
#[path = "support/rtmp_client.rs"]
pub mod rtmp_client;
#[path = "support/tools.rs"]
pub mod tools;

use std::fmt::Debug;
use std::io::{BufRead as _, BufReader, Read as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use reqwest::blocking::Client;
use reqwest::header::HeaderMap;
use serde_json::Value;

/// The binary under test, built by cargo for this test run.
pub const BIN: &str = env!("CARGO_BIN_EXE_oxcast");

/// How long the server may take to start, and a process to exit once told to.
const START_LIMIT: Duration = Duration::from_secs(30);

/// Calls `check` every `every` until it returns `Ok`, and returns that value; after `limit`,
/// returns the last `Err`: what `check` saw instead. For a caller that acts on a timeout itself
/// (kills what it waited for, escalates a signal); every other wait is [`wait_until`].
pub fn poll_until<T, S>(
    limit: Duration,
    every: Duration,
    mut check: impl FnMut() -> Result<T, S>,
) -> Result<T, S> {
    let deadline = Instant::now() + limit;
    loop {
        match check() {
            Ok(value) => return Ok(value),
            Err(seen) if Instant::now() >= deadline => return Err(seen),
            Err(_) => std::thread::sleep(every),
        }
    }
}

/// Calls `check` every `every` until it returns `Ok`, and returns that value. After `limit` it
/// panics, naming `what` was awaited and the last thing `check` saw instead (its `Err`).
pub fn wait_until<T, S: Debug>(
    what: &str,
    limit: Duration,
    every: Duration,
    check: impl FnMut() -> Result<T, S>,
) -> T {
    poll_until(limit, every, check)
        .unwrap_or_else(|seen| panic!("waited {limit:?} for {what}; last seen: {seen:#?}"))
}

/// A free loopback port, for a program that must be told its port before it starts (nginx): the
/// OS picked it, and it is released for that program to take, so another may take it first; such
/// a program is started again on a new port when it cannot bind. The server under test takes
/// port 0 instead and says which port it got.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sends a signal (`TERM`, `INT`, `QUIT`, `KILL`) to a process, or to a process group when
/// `group` is true.
pub fn signal(pid: u32, name: &str, group: bool) -> rustix::io::Result<()> {
    use rustix::process::{Pid, Signal, kill_process, kill_process_group};
    let signal = match name {
        "TERM" => Signal::TERM,
        "INT" => Signal::INT,
        "QUIT" => Signal::QUIT,
        "KILL" => Signal::KILL,
        other => panic!("signal {other}: add it here"),
    };
    let pid = Pid::from_raw(i32::try_from(pid).unwrap()).expect("a process id is positive");
    if group {
        kill_process_group(pid, signal)
    } else {
        kill_process(pid, signal)
    }
}

/// A running `oxcast` process.
pub struct Server {
    child: Option<Child>,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    pub http_port: u16,
    pub rtmp_port: u16,
    stdout: Arc<Mutex<String>>,
    options: Options,
    client: Client,
}

/// How to start a server; `Default` is a fresh data directory and no extra settings.
#[derive(Default, Clone)]
pub struct Options {
    /// Extra environment variables, e.g. `OXCAST__API__KEY`.
    pub env: Vec<(String, String)>,
    /// Extra command-line arguments.
    pub args: Vec<String>,
}

impl Options {
    /// Options with these environment variables and no arguments.
    pub fn env(vars: &[(&str, &str)]) -> Options {
        Options {
            env: vars
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            args: Vec::new(),
        }
    }
}

/// The ports the server listens on, as its ready file names them.
#[derive(Clone, Copy)]
struct Ports {
    http: u16,
    rtmp: u16,
}

impl Server {
    pub fn start() -> Server {
        Self::start_with(Options::default())
    }

    /// Starts the server on ports it picks (port 0), which it names in its ready file.
    pub fn start_with(options: Options) -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let mut server = Self::spawn(dir, None, options);
        server._tmp = Some(tmp);
        server
    }

    /// Starts the server again on the same data directory and ports, with the same arguments and
    /// environment, as an operator would.
    pub fn restart(mut self) -> Server {
        assert!(self.child.is_none(), "stop the server before restarting it");
        let tmp = self._tmp.take();
        let ports = Ports {
            http: self.http_port,
            rtmp: self.rtmp_port,
        };
        let mut next = Self::spawn(self.dir.clone(), Some(ports), self.options.clone());
        next._tmp = tmp;
        next
    }

    /// Starts `oxcast` on `ports`, or on ports of its choosing (port 0), and waits until it serves.
    fn spawn(dir: PathBuf, ports: Option<Ports>, options: Options) -> Server {
        let (http, rtmp) = ports.map_or((0, 0), |p| (p.http, p.rtmp));
        // A public URL with port 0 names the port bound.
        let env = [
            ("OXCAST__HTTP__LISTEN", format!("127.0.0.1:{http}")),
            ("OXCAST__RTMP__LISTEN", format!("127.0.0.1:{rtmp}")),
            ("OXCAST__PUBLIC__HTTP_URL", format!("http://127.0.0.1:{http}")),
            ("OXCAST__PUBLIC__RTMP_URL", format!("rtmp://127.0.0.1:{rtmp}")),
            ("OXCAST__STORAGE__DIR", dir.display().to_string()),
            // Test machines may have little free disk; the recordings here are a few MB.
            ("OXCAST__ARCHIVE__MIN_FREE_BYTES", (64 << 20).to_string()),
        ];
        std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
        let ready_file = dir.with_extension("ready.json");
        let _ = std::fs::remove_file(&ready_file);
        let log = std::fs::File::create(dir.with_extension("log")).unwrap();
        let mut child = Command::new(BIN)
            .args(&options.args)
            .arg("--ready-file")
            .arg(&ready_file)
            .envs(env)
            .envs(options.env.iter().cloned())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let stdout = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stdout);
        let pipe = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let client = Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let mut server = Server {
            child: Some(child),
            dir,
            _tmp: None,
            http_port: http,
            rtmp_port: rtmp,
            stdout,
            options,
            client,
        };
        let bound = wait_until("oxcast to write its ready file", START_LIMIT, POLL_START, || {
            server.assert_running();
            read_ready_file(&ready_file)
        });
        if let Some(asked) = ports {
            assert_eq!(
                (bound.http, bound.rtmp),
                (asked.http, asked.rtmp),
                "the ports asked for"
            );
        }
        (server.http_port, server.rtmp_port) = (bound.http, bound.rtmp);
        wait_until(
            "oxcast to answer /healthz with 200",
            START_LIMIT,
            POLL_START,
            || {
                server.assert_running();
                let health = server.client.get(server.url("/healthz")).send();
                match health {
                    Ok(r) if r.status() == 200 => Ok(()),
                    Ok(r) => Err(r.status().to_string()),
                    Err(e) => Err(e.to_string()),
                }
            },
        );
        server
    }

    /// Panics, with the log, if the process has exited.
    fn assert_running(&mut self) {
        if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
            panic!("oxcast exited with {status}:\n{}", self.log());
        }
    }

    /// What the server printed on stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// What the server logged on stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.with_extension("log")).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.as_ref().unwrap().id()).unwrap()
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    /// The generated admin credentials.
    pub fn credentials(&self) -> (String, String) {
        let text = std::fs::read_to_string(self.dir.join("api-credentials")).unwrap();
        let (k, s) = text.trim().split_once(':').unwrap();
        (k.to_owned(), s.to_owned())
    }

    /// Kills the process without warning, as a crash or the OOM killer would.
    pub fn kill(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Sends a signal (`TERM`, `INT`) and waits for the process to exit.
    pub fn signal_and_wait(&mut self, name: &str) -> ExitStatus {
        self.signal(name);
        self.wait_exit(START_LIMIT)
    }

    /// Sends a signal (`TERM`, `INT`), and does not wait.
    pub fn signal(&self, name: &str) {
        let pid = self.child.as_ref().unwrap().id();
        signal(pid, name, false).unwrap_or_else(|e| panic!("SIG{name} to oxcast: {e}"));
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let child = self.child.as_mut().unwrap();
        let status = wait_until("oxcast to exit", limit, POLL_START, || {
            child.try_wait().unwrap().ok_or("still running")
        });
        self.child = None;
        status
    }

    /// An admin request under the contract's base path, with the right credentials.
    pub fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        self.send(
            method,
            &format!("/v2/video/local{path}"),
            Auth::Admin,
            body.map(|b| b.to_string()),
        )
    }

    pub fn get(&self, path: &str) -> Reply {
        self.admin(Method::GET, path, None)
    }

    pub fn post(&self, path: &str, body: Value) -> Reply {
        self.admin(Method::POST, path, Some(body))
    }

    pub fn patch(&self, path: &str, body: Value) -> Reply {
        self.admin(Method::PATCH, path, Some(body))
    }

    pub fn delete(&self, path: &str) -> Reply {
        self.admin(Method::DELETE, path, None)
    }

    /// Any request to any path, with the chosen credentials and a raw body.
    pub fn send(&self, method: Method, path: &str, auth: Auth<'_>, body: Option<String>) -> Reply {
        let mut req = self.client.request(method.clone(), self.url(path));
        req = match auth {
            Auth::Admin => {
                let (k, s) = self.credentials();
                req.basic_auth(k, Some(s))
            }
            Auth::Basic(k, s) => req.basic_auth(k, Some(s)),
            Auth::Header(h) => req.header("authorization", h),
            Auth::None => req,
        };
        if let Some(body) = body {
            req = req.header("content-type", "application/json").body(body);
        }
        let res = req
            .send()
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.log()));
        Reply::read(res, method == Method::HEAD)
    }

    /// Creates a stream and returns its `data`.
    pub fn create_stream(&self, body: Value) -> Value {
        let r = self.post("/live_streams", body);
        r.assert_status(200);
        r.data().clone()
    }

    /// `POST /live_streams/{id}/activate`, which must succeed.
    pub fn activate(&self, id: &str) {
        self.post(&format!("/live_streams/{id}/activate"), serde_json::json!({}))
            .assert_ok_message();
    }

    /// A stream's current `status`.
    pub fn status(&self, id: &str) -> String {
        self.get(&format!("/live_streams/{id}")).data()["status"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Polls a stream until its status is `want`, or panics after `limit`.
    pub fn wait_status(&self, id: &str, want: &str, limit: Duration) {
        wait_until(&format!("stream {id} to be {want}"), limit, POLL_STATUS, || {
            let status = self.status(id);
            if status == want { Ok(()) } else { Err(status) }
        });
    }
}

/// How often the tests look at a process or a port coming up.
const POLL_START: Duration = Duration::from_millis(20);
/// How often [`Server::wait_status`] asks.
const POLL_STATUS: Duration = Duration::from_millis(50);

/// The ports in the server's ready file, once it is there (it is written whole, by a rename).
fn read_ready_file(path: &Path) -> Result<Ports, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let json: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("ready file {text:?}: {e}"));
    let port = |key: &str| {
        let port = json[key]
            .as_u64()
            .unwrap_or_else(|| panic!("no {key} in the ready file: {text}"));
        u16::try_from(port).unwrap()
    };
    Ok(Ports {
        http: port("http_port"),
        rtmp: port("rtmp_port"),
    })
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- oxcast stdout ---\n{}--- oxcast log ---\n{}",
                self.stdout(),
                self.log()
            );
        }
    }
}

/// Which credentials a request carries.
#[derive(Clone, Copy)]
pub enum Auth<'a> {
    Admin,
    Basic(&'a str, &'a str),
    Header(&'a str),
    None,
}

/// A response, checked to be an envelope: `request_id` (32 lowercase hex) equal to `X-Request-Id`,
/// and exactly one of `data` or `error.message`.
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    fn read(res: reqwest::blocking::Response, head: bool) -> Reply {
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let mut text = String::new();
        let mut res = res;
        res.read_to_string(&mut text).unwrap();
        let header_id = headers
            .get("x-request-id")
            .map(|v| v.to_str().unwrap().to_owned());
        let header_id = header_id.unwrap_or_else(|| panic!("no X-Request-Id on a {status}: {text}"));
        assert!(is_hex32(&header_id), "X-Request-Id {header_id:?}");
        if head {
            assert!(text.is_empty());
            return Reply {
                status,
                headers,
                body: Value::Null,
            };
        }
        assert_eq!(headers.get("content-type").unwrap(), "application/json", "{text}");
        let body: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
        assert_eq!(body["request_id"], header_id.as_str(), "{text}");
        let obj = body.as_object().unwrap();
        if (200..300).contains(&status) {
            assert!(obj.contains_key("data") && !obj.contains_key("error"), "{text}");
        } else {
            assert!(
                body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{text}"
            );
            assert!(!obj.contains_key("data"), "{text}");
        }
        Reply {
            status,
            headers,
            body,
        }
    }

    pub fn data(&self) -> &Value {
        assert_eq!(self.status, 200, "{}", self.body);
        &self.body["data"]
    }

    pub fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap()
    }

    pub fn assert_status(&self, status: u16) -> &Self {
        assert_eq!(self.status, status, "{}", self.body);
        self
    }

    /// Asserts an error status whose message contains `text`.
    pub fn assert_error(&self, status: u16, text: &str) {
        self.assert_status(status);
        assert!(
            self.message().contains(text),
            "message {:?} lacks {text:?}",
            self.message()
        );
    }

    pub fn assert_ok_message(&self) {
        assert_eq!(self.data(), &serde_json::json!({"message": "ok"}));
    }
}

pub fn is_hex32(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Runs the binary until it exits by itself (for start-up failures), returning its status, stdout
/// and stderr. Panics if it is still running after 20 s. Its HTTP listener takes a free port
/// (port 0) unless `env` says otherwise; the RTMP one is left to the configuration under test.
pub fn run_to_exit(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .env("OXCAST__STORAGE__DIR", dir.join("data"))
        .env("OXCAST__HTTP__LISTEN", "127.0.0.1:0")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let read = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = pipe.read_to_string(&mut s);
            s
        })
    };
    let out = read(Box::new(child.stdout.take().unwrap()));
    let err = read(Box::new(child.stderr.take().unwrap()));
    let exited = poll_until(Duration::from_secs(20), POLL_START, || {
        child.try_wait().unwrap().ok_or(())
    });
    let Ok(status) = exited else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "oxcast {args:?} {env:?} kept running; expected it to exit\n{}",
            err.join().unwrap()
        );
    };
    (status, out.join().unwrap(), err.join().unwrap())
}
