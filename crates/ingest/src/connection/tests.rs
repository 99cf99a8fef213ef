//! A connection served over an in-process pipe, against a real registry over a temporary store,
//! with the RTMP client an encoder would be. Time is paused: a deadline passes when nothing else
//! can happen, so no test waits for a clock.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use oxcast_core::model::INGEST_APP;
use oxcast_core::{
    ConnectionCaps, IdleReason, LiveStream, NewStream, OutputRunner, Status, Store, StreamBus, StreamId,
};
use oxcast_rtmp::{ClientConfig, ClientEvent, ClientSession, ServerConfig};
use tokio::io::DuplexStream;
use tokio::task::JoinHandle;
use tracing::Instrument as _;

use super::*;

/// Long enough that no deadline but the one a test is about ends a connection.
const LONG: Duration = Duration::from_secs(24 * 3600);
/// How long an encoder waits for an answer or a close that should come at once. Paused time gets
/// here only when the connection has nothing left to do.
const PATIENCE: Duration = Duration::from_secs(60);
/// A stream's idle timeout in these tests.
const IDLE_TIMEOUT_SEC: u32 = 1;

/// Outputs are not the ingest's business.
struct NoOutputs;

impl OutputRunner for NoOutputs {
    fn stream_active(&self, _: &LiveStream, _: &Arc<StreamBus>) {}
    fn stream_idle(&self, _: &StreamId, _: IdleReason) {}
}

/// The ingest's side: a registry, and connections served as the listener serves them.
struct Ingest {
    registry: Arc<Registry>,
    config: Arc<IngestConfig>,
    caps: Arc<ConnectionCaps>,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Ingest {
    fn new() -> Self {
        Self::with(|_| {})
    }

    fn with(configure: impl FnOnce(&mut IngestConfig)) -> Self {
        let mut config = IngestConfig {
            app: INGEST_APP.to_owned(),
            handshake_timeout: LONG,
            no_media_timeout: LONG,
            publish_timeout: LONG,
            max_connections: 16,
            max_pending_per_ip: 16,
            session: ServerConfig::default(),
            partial_messages_budget: 1 << 20,
        };
        configure(&mut config);
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::new(Store::open(dir.path()).unwrap(), Arc::new(NoOutputs)).unwrap();
        Self {
            registry,
            config: Arc::new(config),
            caps: ConnectionCaps::new(usize::MAX, 16),
            shutdown: CancellationToken::new(),
            _dir: dir,
        }
    }

    async fn stream(&self) -> LiveStream {
        self.registry
            .create_stream(NewStream {
                idle_timeout_sec: Some(IDLE_TIMEOUT_SEC),
                ..NewStream::default()
            })
            .await
            .unwrap()
    }

    async fn status(&self, stream: &LiveStream) -> Status {
        self.registry.get_stream(&stream.id).await.unwrap().status
    }

    /// A new connection being served; the pipe is the encoder's end of it.
    fn connect(&self) -> (DuplexStream, JoinHandle<()>) {
        let (encoder, server) = tokio::io::duplex(64 * 1024);
        let slot = self.caps.admit(IpAddr::V4(Ipv4Addr::LOCALHOST)).unwrap();
        let session = ServerSession::new(self.config.session);
        let connection = Connection::new(server, self.registry.clone(), self.config.clone(), session, slot);
        let shutdown = self.shutdown.clone();
        let span = crate::listener::connection_span(SocketAddr::from((Ipv4Addr::LOCALHOST, 50_000)));
        let task = tokio::spawn(async move { connection.serve(&shutdown).await }.instrument(span));
        (encoder, task)
    }

    /// An encoder publishing to `stream`, with its key, on a new connection.
    async fn publisher(&self, stream: &LiveStream) -> (Encoder, JoinHandle<()>) {
        let (mut encoder, task) = self.encoder(stream.stream_key.as_str());
        encoder.publish().await.unwrap();
        (encoder, task)
    }

    /// An encoder with `key` on a new connection.
    fn encoder(&self, key: &str) -> (Encoder, JoinHandle<()>) {
        let (io, task) = self.connect();
        (Encoder::new(io, INGEST_APP, key), task)
    }
}

/// How an encoder's attempt ended, as the encoder sees it.
#[derive(Debug, PartialEq)]
enum Ended {
    /// The server said no, with this `onStatus`/`_error` code.
    Refused(String),
    /// The server closed the connection without a word.
    Closed,
}

/// An encoder: the RTMP client session on its end of the pipe.
struct Encoder {
    io: DuplexStream,
    session: ClientSession,
}

impl Encoder {
    fn new(io: DuplexStream, app: &str, key: &str) -> Self {
        let tc_url = format!("rtmp://localhost/{app}");
        Self {
            io,
            session: ClientSession::new(ClientConfig::new(app, &tc_url, key)),
        }
    }

    async fn send(&mut self) -> Result<(), Ended> {
        let bytes = self.session.take_outbound();
        self.io.write_all(&bytes).await.map_err(|_| Ended::Closed)
    }

    /// Reads the server's next answer; what it completed.
    async fn receive(&mut self) -> Result<Vec<ClientEvent>, Ended> {
        let mut buf = vec![0; 16 * 1024];
        let n = timeout(PATIENCE, self.io.read(&mut buf))
            .await
            .expect("the server neither answers nor closes");
        match n {
            Ok(0) | Err(_) => Err(Ended::Closed),
            Ok(n) => self.session.handle_input(&buf[..n]).map_err(|e| match e {
                SessionError::Refused { code, .. } => Ended::Refused(code),
                e => panic!("the server's answer is not RTMP: {e}"),
            }),
        }
    }

    /// Talks to the server until it acknowledges `what`.
    async fn until(&mut self, what: impl Fn(&ClientEvent) -> bool) -> Result<(), Ended> {
        loop {
            self.send().await?;
            if self.receive().await?.iter().any(&what) {
                return Ok(());
            }
        }
    }

    /// Handshake and `connect`, and nothing more.
    async fn connect(&mut self) -> Result<(), Ended> {
        self.until(|e| *e == ClientEvent::Connected).await
    }

    /// Everything up to `NetStream.Publish.Start`.
    async fn publish(&mut self) -> Result<(), Ended> {
        self.until(|e| matches!(e, ClientEvent::Publishing { .. })).await
    }

    /// Whether the server closes the connection (whatever it says first) while the encoder waits.
    async fn is_closed(&mut self) -> bool {
        let mut buf = vec![0; 16 * 1024];
        loop {
            match timeout(PATIENCE, self.io.read(&mut buf)).await {
                Err(_) => return false,
                Ok(Ok(0) | Err(_)) => return true,
                Ok(Ok(_)) => {}
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_publish_with_an_unknown_key_is_refused_and_closed() {
    let ingest = Ingest::new();
    let stream = ingest.stream().await;
    let (mut encoder, task) = ingest.encoder("not-the-key");
    assert_eq!(
        encoder.publish().await,
        Err(Ended::Refused("NetStream.Publish.Unauthorized".into()))
    );
    assert!(encoder.is_closed().await, "a refused encoder is disconnected");
    task.await.unwrap();
    assert_eq!(ingest.status(&stream).await, Status::Idle);
}

#[tokio::test(start_paused = true)]
async fn a_connect_to_another_application_is_refused_and_closed() {
    let ingest = Ingest::new();
    let stream = ingest.stream().await;
    let (io, task) = ingest.connect();
    let mut encoder = Encoder::new(io, "live", stream.stream_key.as_str());
    assert_eq!(
        encoder.publish().await,
        Err(Ended::Refused("NetConnection.Connect.Rejected".into()))
    );
    assert!(encoder.is_closed().await);
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_publish_with_the_key_makes_the_stream_active() {
    let ingest = Ingest::new();
    let stream = ingest.stream().await;
    let (_encoder, _task) = ingest.publisher(&stream).await;
    assert_eq!(ingest.status(&stream).await, Status::Active);
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_never_publishes_is_closed_at_the_publish_deadline() {
    let ingest = Ingest::with(|c| c.publish_timeout = Duration::from_secs(10));
    let (mut encoder, task) = ingest.encoder("any");
    encoder.connect().await.unwrap();
    assert!(encoder.is_closed().await, "closed at the publish deadline");
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_publish_deadline_spares_a_publisher() {
    let ingest = Ingest::with(|c| c.publish_timeout = Duration::from_secs(10));
    let stream = ingest.stream().await;
    let (mut encoder, _task) = ingest.publisher(&stream).await;
    assert!(
        !encoder.is_closed().await,
        "a publisher outlives the publish deadline"
    );
    assert_eq!(ingest.status(&stream).await, Status::Active);
}

#[tokio::test(start_paused = true)]
async fn a_second_publisher_with_the_same_key_takes_over() {
    let ingest = Ingest::new();
    let stream = ingest.stream().await;
    let (mut first, first_task) = ingest.publisher(&stream).await;
    let (mut second, _second_task) = ingest.publisher(&stream).await;
    assert!(first.is_closed().await, "the first publisher is disconnected");
    first_task.await.unwrap();
    // Past the idle timeout: the stream is still published, by the second encoder.
    tokio::time::sleep(Duration::from_secs(u64::from(IDLE_TIMEOUT_SEC) * 5)).await;
    assert_eq!(ingest.status(&stream).await, Status::Active);
    assert!(!second.is_closed().await, "the second publisher stays connected");
}

#[tokio::test(start_paused = true)]
async fn unpublishing_lets_the_stream_go_idle_after_its_idle_timeout() {
    let ingest = Ingest::new();
    let stream = ingest.stream().await;
    let (mut encoder, _task) = ingest.publisher(&stream).await;
    encoder.session.unpublish().unwrap();
    encoder.send().await.unwrap();
    // The connection stays open; the stream waits its idle timeout for a publisher to come back.
    tokio::time::sleep(Duration::from_secs(u64::from(IDLE_TIMEOUT_SEC) * 5)).await;
    assert_eq!(ingest.status(&stream).await, Status::Idle);
    assert!(
        !encoder.is_closed().await,
        "unpublishing does not close the connection"
    );
}

/// Bytes no encoder sends: a repeating scramble.
fn garbage(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x9E37_79B9;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x.to_le_bytes()[0]
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn garbage_instead_of_a_handshake_is_closed() {
    let ingest = Ingest::new();
    for junk in [
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".repeat(100),
        vec![0xFF; 4096],
    ] {
        let (io, task) = ingest.connect();
        let mut encoder = Encoder::new(io, INGEST_APP, "k");
        encoder.io.write_all(&junk).await.unwrap();
        assert!(encoder.is_closed().await);
        task.await.expect("the connection ends without a panic");
    }
}

#[tokio::test(start_paused = true)]
async fn garbage_after_connecting_is_closed() {
    let ingest = Ingest::new();
    let stream = ingest.stream().await;
    for junk in [garbage(64 * 1024), vec![0xFF; 4096], vec![0x03; 4096]] {
        let (mut encoder, task) = ingest.encoder(stream.stream_key.as_str());
        encoder.connect().await.unwrap();
        // The pipe may close while the junk is still being written.
        let _ = encoder.io.write_all(&junk).await;
        assert!(encoder.is_closed().await);
        task.await.expect("the connection ends without a panic");
    }
    assert_eq!(ingest.status(&stream).await, Status::Idle);
}

#[tokio::test(start_paused = true)]
async fn shutdown_closes_a_publishing_connection() {
    let ingest = Ingest::new();
    let stream = ingest.stream().await;
    let (mut encoder, task) = ingest.publisher(&stream).await;
    ingest.shutdown.cancel();
    assert!(encoder.is_closed().await);
    task.await.unwrap();
}

/// What the connections of one test log, as the server's log shows it.
#[derive(Clone, Default)]
struct Log(Arc<std::sync::Mutex<Vec<u8>>>);

thread_local! {
    /// The log of the test running on this thread (a paused-time test runs its tasks on its own
    /// thread), if it reads its log.
    static THREAD_LOG: std::cell::RefCell<Option<Log>> = const { std::cell::RefCell::new(None) };
}

/// Writes to the log of the test on the writing thread; other tests' lines go nowhere.
struct ThreadLog;

impl std::io::Write for ThreadLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        THREAD_LOG.with_borrow(|log| {
            if let Some(log) = log {
                log.0.lock().unwrap().extend_from_slice(buf);
            }
        });
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    /// Collects what this thread logs from now on. One subscriber for the whole process: a
    /// subscriber per test (`set_default`) races with the other tests' threads over which
    /// call sites are enabled, and loses lines.
    fn capture() -> Self {
        static SUBSCRIBER: std::sync::Once = std::sync::Once::new();
        SUBSCRIBER.call_once(|| {
            let subscriber = tracing_subscriber::fmt()
                .with_writer(|| ThreadLog)
                .with_ansi(false)
                .finish();
            tracing::subscriber::set_global_default(subscriber).unwrap();
        });
        let log = Self::default();
        THREAD_LOG.set(Some(log.clone()));
        log
    }

    fn lines(&self) -> Vec<String> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }
}

#[tokio::test(start_paused = true)]
async fn a_publishing_connections_lines_name_the_connection_and_the_stream() {
    let log = Log::capture();
    let ingest = Ingest::new();
    let stream = ingest.stream().await;
    let (mut refused, task) = ingest.encoder("not-the-key");
    let _ = refused.publish().await;
    task.await.unwrap();
    let (mut encoder, task) = ingest.publisher(&stream).await;
    encoder.session.unpublish().unwrap();
    encoder.send().await.unwrap();
    drop(encoder);
    task.await.unwrap();

    let lines = log.lines();
    let line = |what: &str| {
        lines
            .iter()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no {what:?} in {lines:#?}"))
            .clone()
    };
    // Tests run side by side, and conn_ids count every connection of the process.
    let conn_id = |line: &str| {
        let (_, rest) = line
            .split_once("conn_id=")
            .unwrap_or_else(|| panic!("no conn_id: {line}"));
        rest.split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    let stream_id = format!("stream_id={}", stream.id);
    let publishing = line("publishing");
    for line in [&publishing, &line("unpublished")] {
        assert!(line.contains(&stream_id), "{line}");
        assert_eq!(line.matches("stream_id=").count(), 1, "{line}");
        assert_eq!(conn_id(line), conn_id(&publishing));
    }
    let refusal = line("publish refused");
    assert!(
        refusal.contains("peer=127.0.0.1:") && !refusal.contains("stream_id"),
        "{refusal}"
    );
    assert_ne!(
        conn_id(&refusal),
        conn_id(&publishing),
        "each connection has its own id"
    );
}
