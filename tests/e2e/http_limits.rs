//! The HTTP server's limits, against the real binary: clients that open connections and send
//! nothing, trickle their request, idle between requests, stop reading a response, or open too
//! many; and what the rest of the server does meanwhile. Limits are set to a few seconds here;
//! the tests assert what each client sees, never how long it took (deadlines only keep a broken
//! server from hanging a test).

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::hls::{fetch_playlist, hls_url, wait_ended, wait_segments};
use crate::support::publisher::{publish_url, small_encoder, wait_child};
use crate::support::recordings::wait_archives;
use crate::support::tools::command;
use crate::support::{BIN, Options, Server, poll_until, wait_until};

const LIMIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(200);

/// Raises this process's open-file limit to its hard limit, which must allow `needed` files.
fn raise_own_open_file_limit(needed: u64) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    assert!(
        limit.maximum.is_none_or(|hard| hard >= needed),
        "this test holds {needed} sockets, over the hard open-file limit {:?}: raise it \
         (ulimit -Hn, or LimitNOFILE= for a systemd service running the tests)",
        limit.maximum
    );
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        },
    )
    .unwrap();
}

/// A TCP connection from `from` (any 127.x address is this machine) to `to`, with a receive
/// buffer of about `receive_buffer` bytes when given (set before connecting, so that the window
/// offered to the server stays that small).
fn connect(from: Ipv4Addr, to: SocketAddr, receive_buffer: Option<usize>) -> TcpStream {
    use rustix::net::{AddressFamily, SocketType, bind, connect, socket, sockopt};
    let fd = socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
    if let Some(size) = receive_buffer {
        sockopt::set_socket_recv_buffer_size(&fd, size).unwrap();
    }
    bind(&fd, &SocketAddr::new(IpAddr::V4(from), 0)).unwrap();
    connect(&fd, &to).unwrap();
    TcpStream::from(fd)
}

fn http_addr(server: &Server) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], server.http_port))
}

const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// Whether the server has closed the connection (EOF or reset), waiting for it until `deadline`;
/// panics if the server sent anything instead.
fn closed_by(conn: &mut TcpStream, deadline: Instant) -> bool {
    let mut buf = [0u8; 1024];
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return false;
    }
    conn.set_read_timeout(Some(left)).unwrap();
    match conn.read(&mut buf) {
        Ok(0) => true,
        Ok(n) => panic!(
            "the server answered instead of closing: {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => true,
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
        Err(e) => panic!("read: {e}"),
    }
}

/// Everything the server sends until it closes the connection (EOF or reset).
fn read_until_closed(conn: &mut TcpStream) -> String {
    conn.set_read_timeout(Some(LIMIT)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("read: {e}"),
        }
    }
    String::from_utf8(got).unwrap()
}

/// Reads one whole response (head and a Content-Length body) off a kept-alive connection.
fn read_response(conn: &mut TcpStream) -> (String, Vec<u8>) {
    conn.set_read_timeout(Some(LIMIT)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = conn.read(&mut buf).unwrap();
        assert!(n > 0, "closed mid-head: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8(got[..head_end].to_vec()).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no Content-Length: {head}"));
    let mut body = got[head_end..].to_vec();
    while body.len() < length {
        let n = conn.read(&mut buf).unwrap();
        assert!(n > 0, "closed mid-body");
        body.extend_from_slice(&buf[..n]);
    }
    (head, body)
}

#[test]
fn two_thousand_silent_connections_are_closed_by_the_header_timeout_and_block_nothing() {
    // 2,000 sockets here, and as many in the server, which inherits the same hard limit.
    raise_own_open_file_limit(2500);
    let server = Server::start_with(Options::env(&[
        ("OXCAST__HTTP__HEADER_TIMEOUT_SEC", "8"),
        ("OXCAST__HTTP__KEEP_ALIVE_TIMEOUT_SEC", "8"),
    ]));
    let live = server.create_stream(json!({"input": {"type": "rtmp"}}));
    let mut live_encoder = small_encoder(&publish_url(&live), 60);
    wait_segments(&hls_url(&live), 1, LIMIT);

    // 500 from each of four addresses (the per-address cap is 1000): half send nothing at all,
    // half the start of a request head and then nothing.
    let to = http_addr(&server);
    let mut silent: Vec<TcpStream> = (0..2000u16)
        .map(|i| {
            let from = Ipv4Addr::new(127, 0, 0, 2 + u8::try_from(i % 4).unwrap());
            let mut conn = connect(from, to, None);
            if i % 2 == 1 {
                conn.write_all(b"GET / HTTP/1.1\r\nHost: 127.0").unwrap();
            }
            conn
        })
        .collect();
    let opened = Instant::now();

    // Meanwhile: the admin API, a live playlist, and a new publish with its own playlist.
    server.get("/live_streams").assert_status(200);
    let listing = fetch_playlist(&hls_url(&live)).expect("the live playlist is served");
    assert!(!listing.segments.is_empty());
    let next = server.create_stream(json!({"input": {"type": "rtmp"}}));
    let mut next_encoder = small_encoder(&publish_url(&next), 4);
    wait_segments(&hls_url(&next), 1, LIMIT);
    let (ok, err) = wait_child(&mut next_encoder, LIMIT);
    assert!(ok, "the new publish went through: {err}");
    eprintln!(
        "admin, HLS and a new publish checked {:?} after the silent connections opened",
        opened.elapsed()
    );

    let deadline = Instant::now() + LIMIT;
    let still_open = silent
        .iter_mut()
        .map(|conn| closed_by(conn, deadline))
        .filter(|closed| !closed)
        .count();
    assert_eq!(still_open, 0, "connections the header timeout left open");
    server.get("/live_streams").assert_status(200);
    let _ = live_encoder.kill();
    let _ = live_encoder.wait();
}

#[test]
fn a_request_head_trickled_a_byte_a_second_is_closed_by_the_header_timeout() {
    let server = Server::start_with(Options::env(&[
        ("OXCAST__HTTP__HEADER_TIMEOUT_SEC", "3"),
        ("OXCAST__HTTP__KEEP_ALIVE_TIMEOUT_SEC", "3"),
    ]));
    let head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: a-byte-a-second/1.0\r\n\r\n";
    let mut conn = connect(LOCALHOST, http_addr(&server), None);
    let mut sent = 0;
    let closed = loop {
        if sent == head.len() {
            break false;
        }
        // A write into a connection the server closed may still succeed once; the read sees it.
        if conn.write_all(&head[sent..=sent]).is_err() {
            break true;
        }
        sent += 1;
        if closed_by(&mut conn, Instant::now() + Duration::from_secs(1)) {
            break true;
        }
    };
    assert!(
        closed,
        "the whole head went through a byte a second: {} bytes",
        head.len()
    );
    assert!(sent < head.len());
}

#[test]
fn an_idle_kept_alive_connection_is_closed_after_the_keep_alive_timeout() {
    // The header timeout (which also runs between requests) is an hour: only the keep-alive
    // timeout can close this connection within the test's deadline.
    let server = Server::start_with(Options::env(&[
        ("OXCAST__HTTP__HEADER_TIMEOUT_SEC", "3600"),
        ("OXCAST__HTTP__KEEP_ALIVE_TIMEOUT_SEC", "2"),
    ]));
    let mut conn = connect(LOCALHOST, http_addr(&server), None);
    for _ in 0..2 {
        conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .unwrap();
        let (head, body) = read_response(&mut conn);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(String::from_utf8_lossy(&body).contains("\"ok\""));
    }
    assert!(
        closed_by(&mut conn, Instant::now() + LIMIT),
        "the idle connection stayed open"
    );
}

/// Publishes `seconds` of incompressible 320x240 video at real time: about 2 MB a second.
fn noise_encoder(url: &str, seconds: u32) -> Child {
    command("ffmpeg")
        .args(["-v", "error", "-nostdin", "-re"])
        .args([
            "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", "320x240", "-r", "30",
        ])
        .args(["-i", "/dev/urandom", "-t", &seconds.to_string()])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-qp", "30", "-g", "30"])
        .args(["-flvflags", "no_duration_filesize", "-f", "flv", url])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn a_player_that_stops_reading_a_recording_is_dropped_after_the_write_timeout() {
    let server = Server::start_with(Options::env(&[("OXCAST__HTTP__WRITE_TIMEOUT_SEC", "2")]));
    let s = server.create_stream(json!({"input": {"type": "rtmp"}, "idle_timeout_sec": 1}));
    let id = s["id"].as_str().unwrap();
    let (ok, err) = wait_child(&mut noise_encoder(&publish_url(&s), 8), LIMIT);
    assert!(ok, "{err}");
    let archive = wait_archives(&server, id, 1).remove(0);
    let size = archive["bytes"].as_u64().unwrap();
    // Far more than the kernel buffers between the two (4 MiB at most on the sending side).
    assert!(size > 12 << 20, "the recording is only {size} bytes");

    let mut player = connect(LOCALHOST, http_addr(&server), Some(4096));
    let public_id = archive["public_id"].as_str().unwrap();
    write!(
        player,
        "GET /local/video/upload/{public_id}.mp4 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    )
    .unwrap();
    let mut first = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    player.set_read_timeout(Some(LIMIT)).unwrap();
    while !first.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = player.read(&mut buf[..1024]).unwrap();
        assert!(n > 0, "closed before the head");
        first.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&first).into_owned();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains(&format!("content-length: {size}\r\n")), "{head}");

    // The player stops reading. The server says why it lets go.
    wait_until("the write timeout in the log", LIMIT, POLL, || {
        let log = server.log();
        if log.contains("http.write_timeout_sec") {
            Ok(())
        } else {
            Err(log)
        }
    });
    let mut rest = 0u64;
    loop {
        match player.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => rest += n as u64,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("read: {e}"),
        }
    }
    let came = first.len() as u64 + rest;
    assert!(
        came < size,
        "the response was not cut short: {came} of {size} bytes came"
    );
    server.get("/live_streams").assert_status(200);
}

#[test]
fn connections_over_the_per_address_cap_get_a_503_that_names_the_setting() {
    let server = Server::start_with(Options::env(&[
        ("OXCAST__HTTP__MAX_CONNECTIONS_PER_IP", "2"),
        ("OXCAST__HTTP__HEADER_TIMEOUT_SEC", "60"),
    ]));
    let busy = Ipv4Addr::new(127, 0, 0, 3);
    let _held = [
        connect(busy, http_addr(&server), None),
        connect(busy, http_addr(&server), None),
    ];
    // Connections are accepted in the order they arrived: the two held ones are counted first.
    // The client sends its request at once, as every HTTP client does; the 503 does not wait
    // for it, and on loopback may even arrive before it is sent (hyper's client then reports
    // an unexpected message, which a network's round trip rules out), so it is read raw here.
    let mut refused = connect(busy, http_addr(&server), None);
    let _ = refused.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    let answer = read_until_closed(&mut refused);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    assert!(
        head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{answer}"
    );
    assert!(head.contains("\r\nConnection: close"), "{head}");
    assert!(head.contains("\r\nRetry-After: "), "{head}");
    assert!(
        head.contains(&format!("\r\nContent-Length: {}", body.len())),
        "{answer}"
    );
    assert!(body.contains("http.max_connections_per_ip = 2"), "{body}");
    assert_eq!(body.lines().count(), 1, "{body}");

    let client = |from: Ipv4Addr| {
        reqwest::blocking::Client::builder()
            .local_address(IpAddr::V4(from))
            .timeout(LIMIT)
            .build()
            .unwrap()
    };
    let other = client(Ipv4Addr::new(127, 0, 0, 4))
        .get(server.url("/healthz"))
        .send()
        .unwrap();
    assert_eq!(other.status(), 200, "another address is served");
    server.get("/live_streams").assert_status(200);
    assert!(
        server.log().contains("http.max_connections_per_ip"),
        "the refusal is logged"
    );
}

/// Bytes the process has read through system calls so far (`rchar` in /proc/PID/io).
fn bytes_read(pid: i32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn a_range_of_a_retired_segment_is_read_from_its_file_and_not_the_whole_file() {
    // Short segments and a short window, so that segments retire within seconds.
    let server = Server::start_with(Options::env(&[
        ("OXCAST__HLS__SEGMENT_DURATION_SEC", "1"),
        ("OXCAST__HLS__WINDOW", "2"),
    ]));
    let s = server.create_stream(json!({"input": {"type": "rtmp"}, "idle_timeout_sec": 1}));
    let id = s["id"].as_str().unwrap();
    let url = hls_url(&s);
    let (ok, err) = wait_child(&mut small_encoder(&publish_url(&s), 8), LIMIT);
    assert!(ok, "{err}");
    server.wait_status(id, "idle", LIMIT);
    let ended = wait_ended(&url, LIMIT);
    // The segment that left the window last: retired, and fetchable for a while yet.
    let sequence = ended.sequence - 1;
    let file = server.dir.join("hls").join(id).join(format!("{sequence}.ts"));
    let segment_url = format!("{}/{sequence}.ts", url.trim_end_matches(".m3u8"));
    let client = reqwest::blocking::Client::new();

    // Once its memory is let go, the whole segment is read from the file, byte for byte.
    let pid = server.pid();
    let on_disk = wait_until("the segment to be served from its file", LIMIT, POLL, || {
        let on_disk = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        let before = bytes_read(pid);
        let whole = client.get(&segment_url).send().unwrap();
        assert_eq!(whole.status(), 200, "{segment_url}");
        assert_eq!(whole.bytes().unwrap(), on_disk);
        let read = bytes_read(pid) - before;
        if read >= on_disk.len() as u64 {
            Ok(on_disk)
        } else {
            Err(format!("{read} bytes read from files to serve it"))
        }
    });

    let before = bytes_read(pid);
    let part = client
        .get(&segment_url)
        .header("Range", "bytes=188-375")
        .send()
        .unwrap();
    let read = bytes_read(pid) - before;
    assert_eq!(part.status(), 206);
    assert_eq!(
        part.headers()["content-range"],
        format!("bytes 188-375/{}", on_disk.len()).as_str()
    );
    assert_eq!(part.bytes().unwrap(), on_disk[188..376]);
    assert!(
        read < on_disk.len() as u64 / 2,
        "the server read {read} bytes to serve 188 of a {}-byte segment",
        on_disk.len()
    );
}

#[test]
fn the_open_file_limit_is_raised_to_the_hard_limit_and_caps_that_do_not_fit_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let log_path = tmp.path().join("oxcast.log");
    // A shell lowers the soft limit, as a login session's default of 1024 would, then becomes
    // the server.
    let mut child = Command::new("sh")
        .args(["-c", "ulimit -S -n 256 && exec \"$0\"", BIN])
        .env("OXCAST__STORAGE__DIR", tmp.path().join("data"))
        .env("OXCAST__HTTP__LISTEN", "127.0.0.1:0")
        .env("OXCAST__RTMP__LISTEN", "127.0.0.1:0")
        .env("OXCAST__HTTP__MAX_CONNECTIONS", "100000000")
        .env("OXCAST__ARCHIVE__MIN_FREE_BYTES", (64u64 << 20).to_string())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let found = poll_until(LIMIT, POLL, || {
        if log().contains("HTTP listening") {
            Ok(())
        } else {
            Err(())
        }
    });
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(found.is_ok(), "the server did not start:\n{}", log());
    let open_files: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .collect();
    let (soft, hard) = (open_files[3], open_files[4]);
    assert_eq!(soft, hard, "{limits}");
    let log = log();
    assert!(
        log.contains(&format!("open-file limit {soft} (was 256; hard limit {hard})")),
        "{log}"
    );
    assert!(
        log.contains("http.max_connections (100000000) + rtmp.max_connections")
            && log.contains("exceed the open-file limit"),
        "{log}"
    );
}
