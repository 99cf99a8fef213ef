//! The accept loop against real sockets on loopback, and its parts on their own. Limits are set
//! to a second or so; nothing here asserts how long anything took, only what the client sees
//! (a deadline only keeps a broken test from hanging).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

use oxcast_core::{CapExceeded, ConnectionCaps};

use super::caps;
use super::watched::{Activity, Discard, Watched};
use super::{HttpLimits, serve};

/// Long enough for anything here to happen on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(30);
const HOUR: Duration = Duration::from_secs(3600);

fn limits() -> HttpLimits {
    HttpLimits {
        header_timeout: HOUR,
        keep_alive_timeout: HOUR,
        write_timeout: HOUR,
        max_connections: 100,
        max_connections_per_ip: 100,
    }
}

/// A body far larger than the socket buffers on both sides.
const BIG: u64 = 64 << 20;

fn app() -> Router {
    Router::new()
        .route("/", get(|| async { "hello\n" }))
        .route(
            "/big",
            get(|| async {
                let zeros = tokio::io::AsyncReadExt::take(tokio::io::repeat(0), BIG);
                axum::response::Response::builder()
                    .header("content-length", BIG)
                    .body(Body::from_stream(tokio_util::io::ReaderStream::new(zeros)))
                    .unwrap_or_default()
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(500)).await;
                "done\n"
            }),
        )
}

struct Running {
    addr: SocketAddr,
    shutdown: CancellationToken,
    served: tokio::task::JoinHandle<()>,
}

async fn start(limits: HttpLimits) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let served = tokio::spawn(serve(listener, app(), limits, shutdown.clone()));
    Running {
        addr,
        shutdown,
        served,
    }
}

async fn connect_from(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(IpAddr::V4(from), 0)).unwrap();
    socket.connect(to).await.unwrap()
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n";

/// Reads one response to `GET /` (a small body, length-delimited) without waiting for more.
async fn read_response(conn: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).ends_with("hello\n") {
        let n = tokio::time::timeout(DEADLINE, conn.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed mid-response: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(buf.get(..n).unwrap());
    }
    String::from_utf8(got).unwrap()
}

/// Reads until the server closes the connection (EOF or reset); returns the bytes read.
async fn read_until_closed(conn: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout(DEADLINE, conn.read(&mut buf)).await {
            Err(_) => panic!("the server kept the connection open"),
            Ok(Ok(0)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(buf.get(..n).unwrap()),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Ok(Err(e)) => panic!("read: {e}"),
        }
    }
}

/// The counting is `oxcast_core::ConnectionCaps`' (tested there); here, what a refused client reads.
#[test]
fn a_refused_client_reads_a_503_naming_the_cap_and_its_setting() {
    let caps = ConnectionCaps::new(3, 2);
    let response = String::from_utf8(caps::response(CapExceeded::PerPeer, &caps)).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{head}");
    assert!(
        head.contains("\r\nConnection: close") && head.contains("\r\nRetry-After: "),
        "{head}"
    );
    assert!(
        head.contains(&format!("\r\nContent-Length: {}", body.len())),
        "{head}"
    );
    assert!(body.contains("http.max_connections_per_ip = 2"), "{body}");
    assert_eq!(body.lines().count(), 1, "{body}");
    let full = String::from_utf8(caps::response(CapExceeded::Total, &caps)).unwrap();
    assert!(full.contains("(http.max_connections = 3)"), "{full}");
}

/// A socket that records whether its unsent bytes were to be discarded.
struct Pipe {
    inner: tokio::io::DuplexStream,
    discarded: Arc<AtomicBool>,
}

impl Discard for Pipe {
    fn discard_unsent(&self) {
        self.discarded.store(true, Ordering::Relaxed);
    }
}

impl tokio::io::AsyncRead for Pipe {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Pipe {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

fn watched_pipe(
    write_timeout: Duration,
) -> (
    Watched<Pipe>,
    tokio::io::DuplexStream,
    Arc<Activity>,
    Arc<AtomicBool>,
) {
    let (ours, theirs) = tokio::io::duplex(1024);
    let discarded = Arc::new(AtomicBool::new(false));
    let activity = Arc::new(Activity::new());
    let pipe = Pipe {
        inner: ours,
        discarded: Arc::clone(&discarded),
    };
    (
        Watched::new(pipe, Arc::clone(&activity), write_timeout),
        theirs,
        activity,
        discarded,
    )
}

#[tokio::test(start_paused = true)]
async fn a_write_the_reader_never_takes_fails_after_the_write_timeout() {
    let (mut watched, _reader, activity, discarded) = watched_pipe(Duration::from_secs(30));
    let write = watched.write_all(&[7u8; 64 * 1024]);
    let e = tokio::time::timeout(HOUR, write)
        .await
        .expect("the write is still pending an hour later")
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
    assert!(activity.write_timed_out());
    assert!(discarded.load(Ordering::Relaxed), "unsent bytes are discarded");
}

#[tokio::test(start_paused = true)]
async fn a_slow_reader_that_keeps_reading_is_not_cut_off() {
    let timeout = Duration::from_secs(30);
    let (mut watched, mut reader, activity, _) = watched_pipe(timeout);
    let writer = tokio::spawn(async move { watched.write_all(&[7u8; 64 * 1024]).await });
    let mut total = 0;
    let mut buf = [0u8; 512];
    while total < 64 * 1024 {
        // Each pause is most of the timeout: a stall is timed from the last progress.
        tokio::time::sleep(timeout - Duration::from_secs(1)).await;
        total += reader.read(&mut buf).await.unwrap();
    }
    writer.await.unwrap().unwrap();
    assert!(!activity.write_timed_out());
}

#[tokio::test]
async fn a_silent_connection_is_closed_by_the_header_timeout() {
    let server = start(HttpLimits {
        header_timeout: Duration::from_secs(1),
        ..limits()
    })
    .await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    assert!(
        read_until_closed(&mut silent).await.is_empty(),
        "closed without an answer"
    );
    // Half a request head is no better.
    let mut partial = TcpStream::connect(server.addr).await.unwrap();
    partial.write_all(b"GET / HTTP/1.1\r\nHost: te").await.unwrap();
    assert!(read_until_closed(&mut partial).await.is_empty());
}

/// What this module's idle watch is built around: hyper's header timer also runs while a
/// kept-alive connection waits for its next request.
#[tokio::test]
async fn hyper_closes_a_kept_alive_connection_at_the_header_timeout() {
    let server = start(HttpLimits {
        header_timeout: Duration::from_secs(1),
        keep_alive_timeout: HOUR,
        ..limits()
    })
    .await;
    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    conn.write_all(GET).await.unwrap();
    assert!(read_response(&mut conn).await.starts_with("HTTP/1.1 200 OK\r\n"));
    assert!(read_until_closed(&mut conn).await.is_empty());
}

#[tokio::test]
async fn a_kept_alive_connection_is_closed_after_the_keep_alive_timeout() {
    let server = start(HttpLimits {
        keep_alive_timeout: Duration::from_secs(1),
        ..limits()
    })
    .await;
    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    for _ in 0..3 {
        conn.write_all(GET).await.unwrap();
        assert!(read_response(&mut conn).await.starts_with("HTTP/1.1 200 OK\r\n"));
    }
    assert!(read_until_closed(&mut conn).await.is_empty());
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_after_the_write_timeout() {
    let server = start(HttpLimits {
        write_timeout: Duration::from_secs(1),
        ..limits()
    })
    .await;
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut conn = socket.connect(server.addr).await.unwrap();
    conn.write_all(b"GET /big HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 512];
    let n = conn.read(&mut head).await.unwrap();
    assert!(head.get(..n).unwrap().starts_with(b"HTTP/1.1 200 OK\r\n"));
    // Stop reading until the server has given up, then take what the kernel still holds.
    let mut waited = Duration::ZERO;
    while server_still_sending(&conn) && waited < DEADLINE {
        tokio::time::sleep(Duration::from_millis(200)).await;
        waited += Duration::from_millis(200);
    }
    let rest = read_until_closed(&mut conn).await;
    assert!(
        (rest.len() as u64) < BIG / 2,
        "the server gave up long before the end: {} of {BIG} bytes came",
        rest.len()
    );
}

/// Whether the connection is still open from the server's side, judged without reading: a
/// server that dropped it with SO_LINGER 0 has reset it, which shows as an error on the socket.
fn server_still_sending(conn: &TcpStream) -> bool {
    matches!(conn.take_error(), Ok(None))
}

#[tokio::test]
async fn connections_over_a_cap_get_a_503_naming_the_setting() {
    let server = start(HttpLimits {
        max_connections: 2,
        max_connections_per_ip: 1,
        ..limits()
    })
    .await;
    let local = Ipv4Addr::new(127, 0, 0, 1);
    let mut first = connect_from(local, server.addr).await;
    first.write_all(GET).await.unwrap();
    read_response(&mut first).await;

    let mut same_address = connect_from(local, server.addr).await;
    // The 503 may come (and the connection close) before the request is written.
    let _ = same_address.write_all(GET).await;
    let refused = String::from_utf8(read_until_closed(&mut same_address).await).unwrap();
    assert!(
        refused.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{refused}"
    );
    assert!(refused.contains("http.max_connections_per_ip"), "{refused}");

    let mut other = connect_from(Ipv4Addr::new(127, 0, 0, 2), server.addr).await;
    other.write_all(GET).await.unwrap();
    read_response(&mut other).await;

    let mut third = connect_from(Ipv4Addr::new(127, 0, 0, 3), server.addr).await;
    let refused = String::from_utf8(read_until_closed(&mut third).await).unwrap();
    assert!(
        refused.starts_with("HTTP/1.1 503"),
        "refused before asking: {refused}"
    );
    assert!(refused.contains("(http.max_connections = 2)"), "{refused}");

    // A closed connection gives its place back.
    drop(first);
    let mut waited = Duration::ZERO;
    loop {
        let mut again = connect_from(local, server.addr).await;
        let _ = again.write_all(GET).await;
        let answer = String::from_utf8(read_until_closed_or_hello(&mut again).await).unwrap();
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(waited < DEADLINE, "{answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += Duration::from_millis(100);
    }
}

/// A 503 (then closed), or a 200 read up to its body.
async fn read_until_closed_or_hello(conn: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"hello\n") {
        match tokio::time::timeout(DEADLINE, conn.read(&mut buf)).await.unwrap() {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(buf.get(..n).unwrap()),
        }
    }
    got
}

#[tokio::test]
async fn shutdown_finishes_the_request_in_flight_then_stops() {
    let server = start(limits()).await;
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    idle.write_all(GET).await.unwrap();
    read_response(&mut idle).await;
    let mut busy = TcpStream::connect(server.addr).await.unwrap();
    busy.write_all(b"GET /slow HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    // Let the request reach its handler before the shutdown.
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.shutdown.cancel();
    let answer = String::from_utf8(read_until_closed(&mut busy).await).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200 OK\r\n") && answer.ends_with("done\n"),
        "{answer}"
    );
    assert!(
        read_until_closed(&mut idle).await.is_empty(),
        "an idle connection just closes"
    );
    tokio::time::timeout(DEADLINE, server.served)
        .await
        .unwrap()
        .unwrap();
    assert!(
        TcpStream::connect(server.addr).await.is_err(),
        "no longer listening"
    );
}
