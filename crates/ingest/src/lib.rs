//! The RTMP ingest: encoders publish to `rtmp://HOST/streams` with a stream key; each connection is
//! a task driving `oxcast_rtmp::ServerSession`, checking the key against the registry, and putting
//! the demuxed media on the stream's bus.
//!
//! A connection that does not finish the handshake in time, is not publishing within its
//! deadline, or sends no media for a while, is closed; so is one whose key is unknown (after
//! telling the encoder why). One address may hold only so many connections that are not
//! publishing yet, so nobody takes every slot. Nothing one connection does reaches another: a bad
//! key, a parse error or a slow socket costs only that connection.

mod pending;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use oxcast_core::{Acceptor, PublishRefused, Publisher, Registry, ReportThrottle};
use oxcast_media::{Demuxer, MediaEvent, TimestampGuard};
use oxcast_rtmp::{PublishRejection, ServerConfig, ServerEvent, ServerSession, SessionError, SharedBudget};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How the ingest behaves.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// The application encoders publish to: the path of every stream's `input.uri`.
    pub app: String,
    /// A connection must finish the RTMP handshake within this.
    pub handshake_timeout: Duration,
    /// A connection that sends no media (or, before publishing, makes no progress) for this long is closed.
    pub no_media_timeout: Duration,
    /// From accept to an accepted publish, whatever the connection does meanwhile.
    pub publish_timeout: Duration,
    /// Connections served at once; more are closed on accept.
    pub max_connections: usize,
    /// Connections from one address (IPv6: one /64) that are not publishing yet; more are closed
    /// on accept.
    pub max_pending_per_ip: usize,
    /// Message size limits before and after a publish is accepted.
    pub session: ServerConfig,
    /// Bytes of messages being reassembled, all connections together.
    pub partial_messages_budget: usize,
}

/// A socket write that takes longer than this means the encoder stopped reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connections get to close after shutdown is requested.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Accepts encoders on `listener` until `shutdown` is cancelled, then closes every connection.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    config: IngestConfig,
    shutdown: CancellationToken,
) {
    let config = Arc::new(config);
    let permits = Arc::new(Semaphore::new(config.max_connections));
    let pending = pending::PendingPeers::new(config.max_pending_per_ip);
    let budget = SharedBudget::new(config.partial_messages_budget);
    // Refusals under a flood: a log line every few seconds, not one per connection.
    let full = ReportThrottle::new(Duration::from_secs(10));
    let tracker = TaskTracker::new();
    let acceptor = Acceptor::new(listener, "RTMP");
    while let Some((socket, peer)) = acceptor.next(&shutdown).await {
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            if let Some(more) = full.report() {
                tracing::warn!(%peer, max = config.max_connections, more,
                    "RTMP connection refused: too many connections (rtmp.max_connections)");
            }
            continue;
        };
        let Some(slot) = pending.admit(peer.ip()) else {
            pending.refused(peer);
            continue;
        };
        let (registry, config, shutdown) = (registry.clone(), config.clone(), shutdown.clone());
        let session = ServerSession::with_budget(config.session, budget.clone());
        tracker.spawn(async move {
            let _permit = permit;
            let _ = socket.set_nodelay(true);
            let mut connection = Connection::new(socket, peer, registry, config, session, slot);
            let result = connection.run(&shutdown).await;
            connection.finish(result).await;
        });
    }
    tracker.close();
    if timeout(SHUTDOWN_GRACE, tracker.wait()).await.is_err() {
        tracing::warn!("RTMP connections still open {SHUTDOWN_GRACE:?} after shutdown");
    }
}

/// Bytes asked of the socket per read.
const READ_SIZE: usize = 64 * 1024;
/// Bytes asked of the socket per read during the handshake: C0+C1 and C2 are 3073 bytes in all.
const HANDSHAKE_READ: usize = 4096;

/// Media messages shorter than this are copied out of the read buffer they arrived in.
const PIN_LIMIT: usize = 4 * 1024;

/// A one-chunk message is a slice of the socket's read buffer (no copy), and keeps all of it
/// alive for as long as the frame lives: the stream's GOP cache holds two seconds of frames, so
/// small audio frames alone would keep every read buffer of those two seconds (as many bytes as
/// the GOP again). Copying the small ones (a few KiB a second) frees the buffers; large frames
/// fill most of the buffers they pin.
fn unpinned(payload: Bytes) -> Bytes {
    if payload.len() < PIN_LIMIT {
        Bytes::copy_from_slice(&payload)
    } else {
        payload
    }
}

/// What a read produced: bytes to feed, or a count of bytes already in the session's buffer.
enum Input<'a> {
    Bytes(&'a [u8]),
    Received(usize),
}

/// Why a connection ended.
#[derive(Debug)]
enum Close {
    /// The encoder closed the connection.
    PeerClosed,
    Io(std::io::Error),
    Protocol(SessionError),
    HandshakeTimeout,
    /// Connected for the whole publish deadline without an accepted publish.
    PublishTimeout,
    NoMedia,
    WrongApp(String),
    UnknownKey,
    StoreFailed(String),
    /// Another encoder took the stream over, or the stream went idle.
    Replaced,
    Shutdown,
}

struct Connection {
    socket: TcpStream,
    peer: SocketAddr,
    registry: Arc<Registry>,
    config: Arc<IngestConfig>,
    session: ServerSession,
    demuxer: Demuxer,
    /// Keeps the publisher's timestamps sane for the outputs.
    timestamps: TimestampGuard,
    publisher: Option<Publisher>,
    /// Counts this connection against its address's cap until a publish is accepted.
    pending: Option<oxcast_core::ConnectionSlot>,
    /// When the connection was accepted: the publish deadline runs from here.
    accepted: Instant,
    /// When the connection last made progress: handshake, commands, media.
    progress: Instant,
    timestamp_jumps_logged: bool,
    media_error_logged: bool,
    skipped_logged: bool,
    /// Set once publishing starts: see [`LowWater`].
    low_water: Option<LowWater>,
}

/// While a publisher publishes, the kernel wakes the connection only once `LOW_WATER` bytes wait
/// instead of for every message: a 3 Mbit/s publisher sends ~80 messages a second, most of them
/// small audio frames, and each wake-up costs more than the bytes it delivers. The mark is below
/// any 720p keyframe, so the keyframe that closes a segment is read as it arrives. What stays under
/// the mark (the audio of an audio-only stream, a final FCUnpublish) is read by a tick at most
/// `LOW_WATER_TICK` after the previous read. The ticks of all connections fall on the same
/// instants, so they share their wake-ups.
struct LowWater {
    /// The same socket, read past tokio's readiness (which knows only of wake-ups at the mark).
    socket: std::net::TcpStream,
    tick: tokio::time::Interval,
    last_read: Instant,
    scratch: Box<[u8]>,
}

const LOW_WATER: usize = 16 * 1024;
/// Longer than a video frame interval (33 ms at 30 fps), so a video stream is never read by it.
const LOW_WATER_TICK: Duration = Duration::from_millis(50);

impl LowWater {
    fn start(socket: &TcpStream) -> std::io::Result<Self> {
        set_receive_low_water(socket, LOW_WATER)?;
        let mirror = std::net::TcpStream::from(std::os::fd::AsFd::as_fd(socket).try_clone_to_owned()?);
        // Every connection's ticks on the same grid, so one wake-up serves them all.
        static GRID: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        let grid = *GRID.get_or_init(Instant::now);
        let tick_ms = LOW_WATER_TICK.as_millis();
        let next = (grid.elapsed().as_millis() / tick_ms + 1) * tick_ms;
        let first = grid + Duration::from_millis(u64::try_from(next).unwrap_or(u64::MAX));
        let mut tick = tokio::time::interval_at(first, LOW_WATER_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        Ok(Self {
            socket: mirror,
            tick,
            last_read: Instant::now(),
            scratch: vec![0; READ_SIZE].into_boxed_slice(),
        })
    }

    /// At a tick: whatever waits under the mark, if nothing was read for a whole tick.
    fn read_under_mark(&mut self) -> Option<std::io::Result<usize>> {
        if self.last_read.elapsed() < LOW_WATER_TICK {
            return None;
        }
        match std::io::Read::read(&mut self.socket, &mut self.scratch) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
            result => Some(result),
        }
    }
}

/// Milliseconds on a monotonic clock, for the timestamp guard.
fn clock_ms() -> i64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    i64::try_from(start.elapsed().as_millis()).unwrap_or(i64::MAX)
}

/// SO_RCVLOWAT: epoll reports the socket readable only once this many bytes wait.
#[allow(unsafe_code)]
fn set_receive_low_water(socket: &TcpStream, bytes: usize) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    let len = libc::socklen_t::try_from(size_of::<libc::c_int>()).unwrap_or(4);
    // SAFETY: the descriptor stays open for the call (`socket` is borrowed), and the option value
    // is a live c_int whose size is passed with it.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&raw const value).cast(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl Connection {
    fn new(
        socket: TcpStream,
        peer: SocketAddr,
        registry: Arc<Registry>,
        config: Arc<IngestConfig>,
        session: ServerSession,
        pending: oxcast_core::ConnectionSlot,
    ) -> Self {
        Self {
            socket,
            peer,
            registry,
            config,
            session,
            demuxer: Demuxer::new(),
            timestamps: TimestampGuard::new(),
            publisher: None,
            pending: Some(pending),
            accepted: Instant::now(),
            progress: Instant::now(),
            timestamp_jumps_logged: false,
            media_error_logged: false,
            skipped_logged: false,
            low_water: None,
        }
    }

    async fn run(&mut self, shutdown: &CancellationToken) -> Close {
        // Only the handshake (3 KiB) is read through this; everything after goes straight into the
        // session's buffer.
        let mut buf = [0u8; HANDSHAKE_READ];
        loop {
            let handshaking = self.session.is_handshaking();
            let publish_due = self.accepted + self.config.publish_timeout;
            let (deadline, expired) = if handshaking {
                (
                    self.accepted + self.config.handshake_timeout,
                    Close::HandshakeTimeout,
                )
            } else if self.pending.is_some() && publish_due < self.progress + self.config.no_media_timeout {
                // Until its first publish, commands keep a connection alive only until its publish
                // deadline. (One that published, with a key, may unpublish and publish again.)
                (publish_due, Close::PublishTimeout)
            } else {
                (self.progress + self.config.no_media_timeout, Close::NoMedia)
            };
            let stopped = async {
                match &self.publisher {
                    Some(publisher) => publisher.stopped().await,
                    None => std::future::pending().await,
                }
            };
            // After the handshake, bytes go straight into the session's buffer: no copy.
            let direct = self.session.read_buffer().is_some();
            let read = tokio::select! {
                read = async {
                    match self.session.read_buffer() {
                        Some(buffer) => {
                            // Reserve only when room runs low: a reserve while a message slice
                            // still holds the buffer allocates a new one.
                            if buffer.capacity() - buffer.len() < READ_SIZE / 4 {
                                buffer.reserve(READ_SIZE);
                            }
                            self.socket.read_buf(buffer).await
                        }
                        None => self.socket.read(&mut buf).await,
                    }
                } => read,
                () = sleep_until(deadline) => return expired,
                () = stopped => return Close::Replaced,
                () = shutdown.cancelled() => return Close::Shutdown,
                () = async {
                    match &mut self.low_water {
                        Some(low_water) => { low_water.tick.tick().await; }
                        None => std::future::pending().await,
                    }
                } => {
                    let Some(low_water) = &mut self.low_water else { continue };
                    let read = match low_water.read_under_mark() {
                        None => continue,
                        Some(Ok(0)) => return Close::PeerClosed,
                        Some(Ok(n)) => n,
                        Some(Err(e)) => return Close::Io(e),
                    };
                    low_water.last_read = Instant::now();
                    let scratch = std::mem::take(&mut low_water.scratch);
                    let handled = self.handle(Input::Bytes(scratch.get(..read).unwrap_or_default())).await;
                    if let Some(low_water) = &mut self.low_water {
                        low_water.scratch = scratch;
                    }
                    if let Err(close) = handled {
                        return close;
                    }
                    continue;
                }
            };
            let n = match read {
                Ok(0) => return Close::PeerClosed,
                Ok(n) => n,
                Err(e) => return Close::Io(e),
            };
            let input = if direct {
                Input::Received(n)
            } else {
                Input::Bytes(buf.get(..n).unwrap_or_default())
            };
            if let Some(low_water) = &mut self.low_water {
                low_water.last_read = Instant::now();
            }
            if let Err(close) = self.handle(input).await {
                return close;
            }
        }
    }

    async fn handle(&mut self, input: Input<'_>) -> Result<(), Close> {
        let was_handshaking = self.session.is_handshaking();
        match input {
            Input::Bytes(bytes) => self.session.feed(bytes),
            Input::Received(n) => self.session.received(n),
        }
        .map_err(Close::Protocol)?;
        if was_handshaking && !self.session.is_handshaking() {
            self.progress = Instant::now();
        }
        let result = self.drain_events().await;
        // Whatever happened, the encoder gets our answers (a refusal included) before we close.
        self.flush().await?;
        result
    }

    async fn drain_events(&mut self) -> Result<(), Close> {
        while let Some(event) = self.session.poll().map_err(Close::Protocol)? {
            self.on_event(event).await?;
        }
        Ok(())
    }

    async fn on_event(&mut self, event: ServerEvent) -> Result<(), Close> {
        match event {
            ServerEvent::ConnectRequested { app, .. } => {
                self.progress = Instant::now();
                // Some encoders send the app with a trailing slash.
                if app.trim_end_matches('/') != self.config.app {
                    let _ = self
                        .session
                        .reject_connect(&format!("unknown application {app:?}"));
                    return Err(Close::WrongApp(app));
                }
                self.session.accept_connect().map_err(Close::Protocol)?;
            }
            ServerEvent::PublishRequested { stream_key, .. } => {
                self.progress = Instant::now();
                // Keys are alphanumeric; anything after '?' is an encoder's query string.
                let key = stream_key.split('?').next().unwrap_or_default();
                match self.registry.publish_started(key).await {
                    Ok(publisher) => {
                        self.session.accept_publish().map_err(Close::Protocol)?;
                        tracing::info!(peer = %self.peer, stream_id = %publisher.stream_id(), "publishing");
                        self.demuxer = Demuxer::new();
                        self.timestamps = TimestampGuard::new();
                        self.publisher = Some(publisher);
                        // A publisher no longer counts against its address's cap.
                        self.pending = None;
                        if self.low_water.is_none() {
                            match LowWater::start(&self.socket) {
                                Ok(low_water) => self.low_water = Some(low_water),
                                // That only costs wake-ups: every message wakes the connection.
                                Err(e) => {
                                    tracing::debug!(peer = %self.peer, "no receive low-water mark: {e}")
                                }
                            }
                        }
                    }
                    Err(PublishRefused::UnknownKey) => {
                        let _ = self
                            .session
                            .reject_publish(PublishRejection::Unauthorized, "unknown stream key");
                        return Err(Close::UnknownKey);
                    }
                    Err(PublishRefused::Store(e)) => {
                        let _ = self
                            .session
                            .reject_publish(PublishRejection::BadName, "server error");
                        return Err(Close::StoreFailed(e.to_string()));
                    }
                }
            }
            ServerEvent::Video { timestamp, payload } => {
                let event = self.demuxer.video(timestamp, &unpinned(payload));
                self.on_media(event);
            }
            ServerEvent::Audio { timestamp, payload } => {
                let event = self.demuxer.audio(timestamp, &unpinned(payload));
                self.on_media(event);
            }
            ServerEvent::Metadata { .. } | ServerEvent::Data { .. } => {}
            ServerEvent::Unpublished { .. } => {
                if let Some(publisher) = self.publisher.take() {
                    tracing::info!(peer = %self.peer, stream_id = %publisher.stream_id(), "unpublished");
                    publisher.end().await;
                }
            }
        }
        Ok(())
    }

    fn on_media(&mut self, event: Result<Option<MediaEvent>, oxcast_media::MediaError>) {
        self.progress = Instant::now();
        let Some(publisher) = &self.publisher else { return };
        match event {
            Ok(Some(mut event)) => {
                if let MediaEvent::Frame(frame) = &mut event
                    && let Some(jump) = self.timestamps.admit(frame, clock_ms())
                    && !std::mem::replace(&mut self.timestamp_jumps_logged, true)
                {
                    tracing::warn!(peer = %self.peer, stream_id = %publisher.stream_id(),
                        track = ?frame.track, from_ms = jump.from, to_ms = jump.to,
                        "the encoder's timestamps jumped; the stream goes on from where it was \
                         (further jumps of this publisher are fixed without a log line)");
                }
                publisher.bus().publish(event);
            }
            Ok(None) => {
                if let (false, Some(what)) = (self.skipped_logged, self.demuxer.skipped()) {
                    self.skipped_logged = true;
                    tracing::warn!(peer = %self.peer, stream_id = %publisher.stream_id(),
                        "{what} is not supported yet; its frames are dropped");
                }
            }
            // A bad frame costs that frame; the log says so once per connection.
            Err(e) => {
                if !self.media_error_logged {
                    self.media_error_logged = true;
                    tracing::warn!(peer = %self.peer, stream_id = %publisher.stream_id(), "unusable media: {e}");
                }
            }
        }
    }

    async fn flush(&mut self) -> Result<(), Close> {
        while let Some(bytes) = self.session.outbound().pop() {
            match timeout(WRITE_TIMEOUT, self.socket.write_all(&bytes)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(Close::Io(e)),
                Err(_) => return Err(Close::Io(std::io::ErrorKind::TimedOut.into())),
            }
        }
        Ok(())
    }

    /// Logs why the connection ended and lets the stream know its publisher is gone.
    async fn finish(mut self, close: Close) {
        let peer = self.peer;
        match &close {
            Close::PeerClosed | Close::Replaced | Close::Shutdown => {
                tracing::debug!(%peer, ?close, "RTMP connection closed")
            }
            Close::UnknownKey => tracing::warn!(%peer, "publish refused: unknown stream key"),
            Close::WrongApp(app) => {
                tracing::warn!(%peer, app, expected = %self.config.app, "connect refused: unknown application")
            }
            Close::HandshakeTimeout => tracing::info!(%peer, "RTMP handshake not finished in time; closed"),
            Close::PublishTimeout => tracing::info!(%peer, timeout = ?self.config.publish_timeout,
                "not publishing within rtmp.publish_timeout_sec of connecting; closed"),
            Close::NoMedia => {
                tracing::info!(%peer, timeout = ?self.config.no_media_timeout, "no media; closed")
            }
            Close::Io(e) => tracing::info!(%peer, "RTMP connection lost: {e}"),
            Close::Protocol(e) => tracing::warn!(%peer, "RTMP protocol error: {e}"),
            Close::StoreFailed(e) => tracing::error!(%peer, "publish refused: store unavailable: {e}"),
        }
        let _ = self.socket.shutdown().await;
        if let Some(publisher) = self.publisher.take() {
            if !matches!(close, Close::Replaced) {
                tracing::info!(%peer, stream_id = %publisher.stream_id(), "publisher disconnected");
            }
            publisher.end().await;
        }
    }
}
