//! Starting the server and talking to it.

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

/// A free loopback port (the OS picked it; we release it for the server to take).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `oxcast` process.
pub struct Server {
    child: Option<Child>,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    pub http_port: u16,
    pub rtmp_port: u16,
    stdout: Arc<Mutex<String>>,
    env: Vec<(String, String)>,
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

impl Server {
    pub fn start() -> Server {
        Self::start_with(Options::default())
    }

    pub fn start_with(options: Options) -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let mut server = Self::spawn(dir, free_port(), free_port(), options);
        server._tmp = Some(tmp);
        server
    }

    /// Starts the server again on the same data directory and ports, as an operator would.
    pub fn restart(mut self) -> Server {
        assert!(self.child.is_none(), "stop the server before restarting it");
        let tmp = self._tmp.take();
        let options = Options {
            env: std::mem::take(&mut self.env),
            args: Vec::new(),
        };
        let mut next = Self::spawn(self.dir.clone(), self.http_port, self.rtmp_port, options);
        next._tmp = tmp;
        next
    }

    fn spawn(dir: PathBuf, http_port: u16, rtmp_port: u16, options: Options) -> Server {
        let mut env = vec![
            (
                "OXCAST__HTTP__LISTEN".to_owned(),
                format!("127.0.0.1:{http_port}"),
            ),
            (
                "OXCAST__RTMP__LISTEN".to_owned(),
                format!("127.0.0.1:{rtmp_port}"),
            ),
            (
                "OXCAST__PUBLIC__HTTP_URL".to_owned(),
                format!("http://127.0.0.1:{http_port}"),
            ),
            (
                "OXCAST__PUBLIC__RTMP_URL".to_owned(),
                format!("rtmp://127.0.0.1:{rtmp_port}"),
            ),
            ("OXCAST__STORAGE__DIR".to_owned(), dir.display().to_string()),
            // Test machines may have little free disk; the recordings here are a few MB.
            (
                "OXCAST__ARCHIVE__MIN_FREE_BYTES".to_owned(),
                (64 << 20).to_string(),
            ),
        ];
        env.extend(options.env);
        std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
        let log = std::fs::File::create(dir.with_extension("log")).unwrap();
        let mut child = Command::new(BIN)
            .args(&options.args)
            .envs(env.iter().cloned())
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
            http_port,
            rtmp_port,
            stdout,
            env,
            client,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self
                .client
                .get(self.url("/healthz"))
                .send()
                .is_ok_and(|r| r.status() == 200)
            {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("oxcast exited with {status} before it was ready:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "oxcast not ready after 30 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
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

    /// Sends a signal and waits for the process to exit.
    pub fn signal_and_wait(&mut self, signal: &str) -> ExitStatus {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        self.wait_exit(Duration::from_secs(30))
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "oxcast still running after {limit:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
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
        let deadline = Instant::now() + limit;
        loop {
            let status = self.status(id);
            if status == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "stream {id} still {status} after {limit:?}, want {want}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
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
/// and stderr. Panics if it is still running after 20 s.
pub fn run_to_exit(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .env("OXCAST__STORAGE__DIR", dir.join("data"))
        .env("OXCAST__HTTP__LISTEN", format!("127.0.0.1:{}", free_port()))
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
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "oxcast {args:?} {env:?} kept running; expected it to exit\n{}",
                err.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, out.join().unwrap(), err.join().unwrap())
}
