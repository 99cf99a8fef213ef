//! One encoder's connection: the RTMP session over a byte stream, the deadlines that close it, the
//! stream key checked against the registry, and the media put on the stream's bus.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use oxcast_core::{ConnectionSlot, InputMeter, PublishRefused, Publisher, Registry, StoreError};
use oxcast_media::{Demuxer, MediaEvent, TimestampGuard};
use oxcast_rtmp::{PublishRejection, ServerEvent, ServerSession, SessionError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;

use crate::listener::IngestConfig;
use crate::low_water::{LowWater, ReceiveLowWater};

#[cfg(test)]
mod tests;

/// A socket write that takes longer than this means the encoder stopped reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes asked of the socket per read.
pub(crate) const READ_SIZE: usize = 64 * 1024;
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
#[derive(Debug, thiserror::Error)]
enum Close {
    #[error("the encoder closed the connection")]
    PeerClosed,
    #[error("RTMP connection lost: {0}")]
    Io(std::io::Error),
    #[error("RTMP protocol error: {0}")]
    Protocol(SessionError),
    #[error("RTMP handshake not finished in time")]
    HandshakeTimeout,
    /// Connected for the whole publish deadline without an accepted publish.
    #[error("not publishing within the publish deadline")]
    PublishTimeout,
    #[error("no media")]
    NoMedia,
    #[error("unknown application {0:?}")]
    WrongApp(String),
    #[error("unknown stream key")]
    UnknownKey,
    #[error("store unavailable: {0}")]
    StoreFailed(StoreError),
    /// Another encoder took the stream over, the publisher was kicked, or the stream went idle.
    #[error("the stream was taken over, the publisher kicked, or the stream went idle")]
    Replaced,
    #[error("the server is shutting down")]
    Shutdown,
}

impl Close {
    /// The rule a connection was refused or closed by, for `/metrics`.
    fn refusal(&self) -> Option<&'static str> {
        Some(match self {
            Close::HandshakeTimeout => "handshake_timeout",
            Close::PublishTimeout => "publish_timeout",
            Close::NoMedia => "no_media_timeout",
            Close::WrongApp(_) => "unknown_app",
            Close::UnknownKey => "unknown_stream_key",
            Close::Protocol(_) => "protocol_error",
            _ => return None,
        })
    }
}

/// One connection counted in `oxcast_rtmp_connections{state}` while it lasts.
struct StateGauge(metrics::Gauge);

impl StateGauge {
    fn new(state: &'static str) -> Self {
        let gauge = metrics::gauge!("oxcast_rtmp_connections", "state" => state);
        gauge.increment(1);
        Self(gauge)
    }

    fn set(&mut self, state: &'static str) {
        *self = Self::new(state);
    }
}

impl Drop for StateGauge {
    fn drop(&mut self) {
        self.0.decrement(1);
    }
}

/// An encoder's connection over `S`: a TCP socket, or an in-process pipe in tests. Its peer's
/// address is on the span it runs in.
pub(crate) struct Connection<S> {
    socket: S,
    registry: Arc<Registry>,
    config: Arc<IngestConfig>,
    session: ServerSession,
    demuxer: Demuxer,
    /// Keeps the publisher's timestamps sane for the outputs.
    timestamps: TimestampGuard,
    publisher: Option<Publisher>,
    /// Measures what the publisher sends, for the stream's live figures.
    meter: Option<InputMeter>,
    /// Counts the publisher's bytes for `/metrics`.
    bytes_in: Option<metrics::Counter>,
    /// The encoder's address, shown in the stream's live figures.
    peer: Option<std::net::SocketAddr>,
    /// The encoder's name from its connect command (`flashVer`), until `onMetaData` names it.
    flash_ver: Option<String>,
    /// This connection in `/metrics`' count of connections by state.
    state: StateGauge,
    /// Counts this connection against its address's cap until a publish is accepted.
    pending: Option<ConnectionSlot>,
    /// When the connection was accepted: the publish deadline runs from here.
    accepted: Instant,
    /// When the connection last made progress: handshake, commands, media.
    progress: Instant,
    timestamp_jumps_logged: bool,
    media_error_logged: bool,
    skipped_logged: bool,
    /// Set once publishing starts, on a socket that has the mark: see [`crate::low_water`].
    low_water: Option<LowWater>,
}

/// Milliseconds on a monotonic clock, for the timestamp guard.
fn clock_ms() -> i64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    i64::try_from(start.elapsed().as_millis()).unwrap_or(i64::MAX)
}

impl<S> Connection<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + ReceiveLowWater,
{
    pub(crate) fn new(
        socket: S,
        registry: Arc<Registry>,
        config: Arc<IngestConfig>,
        session: ServerSession,
        pending: ConnectionSlot,
    ) -> Self {
        Self {
            socket,
            registry,
            config,
            session,
            demuxer: Demuxer::new(),
            timestamps: TimestampGuard::new(),
            publisher: None,
            meter: None,
            bytes_in: None,
            peer: None,
            flash_ver: None,
            state: StateGauge::new("connecting"),
            pending: Some(pending),
            accepted: Instant::now(),
            progress: Instant::now(),
            timestamp_jumps_logged: false,
            media_error_logged: false,
            skipped_logged: false,
            low_water: None,
        }
    }

    /// The encoder's address, for the stream's live figures.
    pub(crate) fn with_peer(mut self, peer: std::net::SocketAddr) -> Self {
        self.peer = Some(peer);
        self
    }

    /// Serves the encoder until the connection ends, then closes it and lets the stream know its
    /// publisher is gone.
    pub(crate) async fn serve(mut self, shutdown: &CancellationToken) {
        let close = self.run(shutdown).await;
        self.finish(close).await;
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
                        Some(low_water) => low_water.tick().await,
                        None => std::future::pending().await,
                    }
                } => {
                    if let Err(close) = self.read_under_mark().await {
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
                low_water.read();
            }
            if let Err(close) = self.handle(input).await {
                return close;
            }
        }
    }

    /// At a low-water tick: handles whatever waited under the mark.
    async fn read_under_mark(&mut self) -> Result<(), Close> {
        let Some(low_water) = &mut self.low_water else {
            return Ok(());
        };
        let read = match low_water.read_under_mark() {
            None => return Ok(()),
            Some(Ok(0)) => return Err(Close::PeerClosed),
            Some(Ok(n)) => n,
            Some(Err(e)) => return Err(Close::Io(e)),
        };
        let scratch = low_water.take_scratch();
        let handled = self
            .handle(Input::Bytes(scratch.get(..read).unwrap_or_default()))
            .await;
        if let Some(low_water) = &mut self.low_water {
            low_water.return_scratch(scratch);
        }
        handled
    }

    async fn handle(&mut self, input: Input<'_>) -> Result<(), Close> {
        let was_handshaking = self.session.is_handshaking();
        if let Some(meter) = &mut self.meter {
            let n = match input {
                Input::Bytes(bytes) => bytes.len(),
                Input::Received(n) => n,
            };
            meter.received(n);
            if let Some(counter) = &self.bytes_in {
                counter.increment(n as u64);
            }
        }
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
            ServerEvent::ConnectRequested { app, object, .. } => {
                self.progress = Instant::now();
                self.flash_ver = object.get("flashVer").and_then(|v| v.as_str()).map(str::to_owned);
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
                let address = self.peer.map(|p| p.to_string()).unwrap_or_default();
                match self.registry.publish_started_from(key, address).await {
                    Ok(publisher) => self.publishing(publisher)?,
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
                        return Err(Close::StoreFailed(e));
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
            ServerEvent::Metadata { properties, .. } => {
                if let (Some(meter), Some(encoder)) =
                    (&self.meter, properties.get("encoder").and_then(|v| v.as_str()))
                {
                    meter.encoder(encoder);
                }
            }
            ServerEvent::Data { .. } => {}
            ServerEvent::Unpublished { .. } => {
                if let Some(publisher) = self.publisher.take() {
                    tracing::info!("unpublished");
                    publisher.end().await;
                }
            }
        }
        Ok(())
    }

    /// The registry accepted the publish: tell the encoder, and take its media from now on.
    fn publishing(&mut self, publisher: Publisher) -> Result<(), Close> {
        self.session.accept_publish().map_err(Close::Protocol)?;
        // Every later line of this connection names the stream.
        tracing::Span::current().record("stream_id", tracing::field::display(publisher.stream_id()));
        tracing::info!("publishing");
        self.demuxer = Demuxer::new();
        self.timestamps = TimestampGuard::new();
        let meter = InputMeter::new(publisher.input().clone());
        if let Some(flash_ver) = &self.flash_ver {
            meter.encoder(flash_ver);
        }
        self.meter = Some(meter);
        self.bytes_in = Some(metrics::counter!("oxcast_stream_bytes_in_total",
            "stream_id" => publisher.stream_id().to_string()));
        self.publisher = Some(publisher);
        // A publisher no longer counts against its address's cap.
        self.pending = None;
        self.state.set("publishing");
        if self.low_water.is_none() {
            match self.socket.start_low_water() {
                Some(Ok(low_water)) => self.low_water = Some(low_water),
                // That only costs wake-ups: every message wakes the connection.
                Some(Err(e)) => tracing::debug!("no receive low-water mark: {e}"),
                None => {}
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
                    tracing::warn!(track = ?frame.track, from_ms = jump.from, to_ms = jump.to,
                        "the encoder's timestamps jumped; the stream goes on from where it was \
                         (further jumps of this publisher are fixed without a log line)");
                }
                if let Some(meter) = &mut self.meter {
                    match &event {
                        MediaEvent::Frame(frame) => meter.frame(frame),
                        MediaEvent::VideoConfig(config) => meter.video_config(config),
                        MediaEvent::AudioConfig(config) => meter.audio_config(config),
                    }
                }
                publisher.bus().publish(event);
            }
            Ok(None) => {
                if let Some(meter) = &mut self.meter {
                    meter.skipped(self.demuxer.dropped_frames());
                }
                if let (false, Some(what)) = (self.skipped_logged, self.demuxer.skipped()) {
                    self.skipped_logged = true;
                    tracing::warn!("{what} is not supported yet; its frames are dropped");
                }
            }
            // A bad frame costs that frame; the log says so once per connection.
            Err(e) => {
                if let Some(meter) = &mut self.meter {
                    meter.unusable();
                }
                if !self.media_error_logged {
                    self.media_error_logged = true;
                    tracing::warn!("unusable media: {e}");
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
        if let Some(reason) = close.refusal() {
            crate::refused(reason);
        }
        match &close {
            Close::PeerClosed | Close::Replaced | Close::Shutdown => {
                tracing::debug!(?close, "RTMP connection closed")
            }
            Close::UnknownKey => tracing::warn!("publish refused: unknown stream key"),
            Close::WrongApp(app) => {
                tracing::warn!(app, expected = %self.config.app, "connect refused: unknown application")
            }
            Close::HandshakeTimeout => tracing::info!("RTMP handshake not finished in time; closed"),
            Close::PublishTimeout => tracing::info!(timeout = ?self.config.publish_timeout,
                "not publishing within rtmp.publish_timeout_sec of connecting; closed"),
            Close::NoMedia => {
                tracing::info!(timeout = ?self.config.no_media_timeout, "no media; closed")
            }
            Close::Io(_) => tracing::info!("{close}"),
            Close::Protocol(_) => tracing::warn!("{close}"),
            Close::StoreFailed(e) => tracing::error!("publish refused: store unavailable: {e}"),
        }
        let _ = self.socket.shutdown().await;
        if let Some(publisher) = self.publisher.take() {
            if !matches!(close, Close::Replaced) {
                tracing::info!("publisher disconnected");
            }
            publisher.end().await;
        }
    }
}
