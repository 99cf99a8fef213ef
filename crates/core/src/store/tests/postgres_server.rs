//! A real PostgreSQL server for tests, from Debian's `postgresql` package, in a temporary data
//! directory on a free loopback port. Shared by the store's unit tests and the end-to-end tests
//! (which include this file by path); standard library and `tempfile` only.
//!
//! PostgreSQL refuses to run as root, and tests run as root (CI): then the server runs as the
//! `postgres` user (as the caller otherwise), under a small shell that stops it (SIGINT, by PID) and removes its directory when its
//! standard input closes, that is when the server value is dropped or the test process ends,
//! however it ends.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a fresh server may take to accept connections.
const START_LIMIT: Duration = Duration::from_secs(60);

pub struct PostgresServer {
    pub port: u16,
    bin: PathBuf,
    dir: PathBuf,
    watchdog: Child,
}

impl PostgresServer {
    /// Initializes a data directory and starts the server; panics, naming what is missing or
    /// with the server's log, when it cannot.
    pub fn start() -> PostgresServer {
        let bin = server_bin();
        let user = server_user();
        let dir = tempfile::Builder::new()
            .prefix("oxcast-pg")
            .tempdir()
            .expect("a temporary directory")
            .keep();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown to postgres");
        }
        let data = dir.join("data");
        let init = as_user(Command::new(bin.join("initdb")), user)
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "-D"])
            .arg(&data)
            .current_dir(&dir)
            .output()
            .expect("run initdb");
        assert!(
            init.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        let port = free_port();
        let log = std::fs::File::create(dir.join("postgres.log")).expect("the server's log");
        let watchdog = as_user(Command::new("sh"), user)
            .arg("-c")
            .arg(
                r#""$1/postgres" -D "$2/data" -p "$3" -k "$2" -c listen_addresses=127.0.0.1 & pg=$!
                   cat >/dev/null
                   kill -INT "$pg"; wait "$pg"; rm -rf "$2""#,
            )
            .arg("sh")
            .arg(&bin)
            .arg(&dir)
            .arg(port.to_string())
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start postgres");
        let server = PostgresServer {
            port,
            bin,
            dir,
            watchdog,
        };
        let started = Instant::now();
        while !server.ready() {
            assert!(
                started.elapsed() < START_LIMIT,
                "postgres did not accept connections within {START_LIMIT:?}:\n{}",
                std::fs::read_to_string(server.dir.join("postgres.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn ready(&self) -> bool {
        Command::new(self.bin.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
            .status()
            .is_ok_and(|s| s.success())
    }

    /// The URL of database `name` on this server.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates an empty database `name`.
    pub fn create_database(&self, name: &str) {
        let out = Command::new(self.bin.join("createdb"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                name,
            ])
            .output()
            .expect("run createdb");
        assert!(
            out.status.success(),
            "createdb {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The rows `sql` returns from database `name`, a line each, columns separated by `|`.
    pub fn query(&self, name: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-A",
                "-t",
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(["-d", name, "-c", sql])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        // Closing its input tells the shell to stop the server and remove the directory.
        if let Some(mut stdin) = self.watchdog.stdin.take() {
            let _ = stdin.flush();
        }
        let _ = self.watchdog.wait();
    }
}

/// The newest installed server's programs, e.g. /usr/lib/postgresql/15/bin.
fn server_bin() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "the PostgreSQL server is missing ({}/*/bin/postgres): `apt-get install postgresql` \
             (scripts/test installs the tests' tools)",
            root.display()
        ),
    }
}

/// Whom the server runs as: the `postgres` user's uid and gid when we are root, else ourselves.
fn server_user() -> Option<(u32, u32)> {
    (id(&["-u"]) == 0).then(|| (id(&["-u", "postgres"]), id(&["-g", "postgres"])))
}

fn as_user(mut command: Command, user: Option<(u32, u32)>) -> Command {
    if let Some((uid, gid)) = user {
        command.uid(uid).gid(gid);
    }
    command
}

/// `id ARGS`: a uid or gid.
fn id(args: &[&str]) -> u32 {
    let out = Command::new("id").args(args).output().expect("run id");
    assert!(
        out.status.success(),
        "no `postgres` user: `apt-get install postgresql` (scripts/test installs the tests' tools)"
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a numeric id")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}
