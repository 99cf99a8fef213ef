//! One relay: a simulcast output of an active stream, publishing to its destination until the
//! stream ends or the output goes, reconnecting after any failure.

use std::io::IoSlice;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use oxcast_core::clock::now_ms;
use oxcast_core::live::RateWindow;
use oxcast_core::rules::RtmpUrl;
use oxcast_core::sync::lock;
use oxcast_core::{
    BusEvent, Event, Notifier, OutputId, RelayState, RelayStatus, StreamBus, StreamId, Subscriber,
};
use oxcast_media::{MediaEvent, Rebaser, Track, flv};
use oxcast_rtmp::amf0::Value;
use oxcast_rtmp::{ClientConfig, ClientSession, Payload, SessionError};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::rustls;
use tokio_util::sync::CancellationToken;

use crate::destination;

/// TCP connect, and TLS with it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// From connected to publishing: handshake, connect, createStream, publish.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);
/// A write the destination does not take within this long fails the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Events already waiting that one write may carry (a few frames' worth, so a write stays short).
const MAX_EVENTS_PER_WRITE: usize = 32;
const FIRST_RETRY: Duration = Duration::from_secs(1);
const LAST_RETRY: Duration = Duration::from_secs(30);

pub(crate) struct Relay {
    pub(crate) destination: RtmpUrl,
    pub(crate) status: Arc<Mutex<RelayStatus>>,
    /// The output was deleted or changed: close at once.
    pub(crate) stop: CancellationToken,
    pub(crate) tls: Arc<rustls::ClientConfig>,
    /// May connect to non-public addresses.
    pub(crate) allow_private: bool,
    pub(crate) metrics: RelayMetrics,
    pub(crate) health: Health,
}

/// What `/metrics` shows of one relay.
pub(crate) struct RelayMetrics {
    /// One gauge per state, 1 for the current one.
    states: [(RelayState, metrics::Gauge); 4],
    reconnects: metrics::Counter,
    bytes_out: metrics::Counter,
}

impl RelayMetrics {
    pub(crate) fn new(stream_id: &StreamId, output_id: &OutputId) -> Self {
        let labels = [
            ("stream_id", stream_id.to_string()),
            ("output_id", output_id.to_string()),
        ];
        Self {
            states: RelayState::ALL.map(|state| {
                let mut labels = labels.to_vec();
                labels.push(("state", state.as_str().to_owned()));
                (state, metrics::gauge!("oxcast_simulcast_state", &labels))
            }),
            reconnects: metrics::counter!("oxcast_simulcast_reconnects_total", &labels),
            bytes_out: metrics::counter!("oxcast_stream_bytes_out_total",
                "stream_id" => stream_id.to_string(), "output" => "simulcast"),
        }
    }

    fn state(&self, now: RelayState) {
        for (state, gauge) in &self.states {
            gauge.set(if *state == now { 1.0 } else { 0.0 });
        }
    }
}

/// The bitrate out, sampled about once a second of wall time.
struct BitrateOut {
    window: RateWindow,
    next_sample: Instant,
}

impl BitrateOut {
    fn new() -> Self {
        Self {
            window: RateWindow::default(),
            next_sample: Instant::now(),
        }
    }

    /// The bitrate, when a new sample of `total` bytes was due.
    fn sample(&mut self, total: u64) -> Option<f64> {
        let now = Instant::now();
        if now < self.next_sample {
            return None;
        }
        self.next_sample = now + Duration::from_secs(1);
        self.window.record(now_ms(), total);
        Some(
            self.window
                .per_second()
                .map_or(0.0, |b| (b * 8.0 / 100.0).round() / 10.0),
        )
    }
}

/// Whether the relay is in a failure streak, for the webhooks: `simulcast.failed` at a streak's
/// first failure, `simulcast.recovered` when it is live again.
pub(crate) struct Health {
    notifier: Notifier,
    stream_id: StreamId,
    output_id: OutputId,
    failing: AtomicBool,
}

impl Health {
    pub(crate) fn new(notifier: Notifier, stream_id: StreamId, output_id: OutputId) -> Self {
        Self {
            notifier,
            stream_id,
            output_id,
            failing: AtomicBool::new(false),
        }
    }

    fn failed(&self, destination: &RtmpUrl, error: &RelayError) {
        if !self.failing.swap(true, Ordering::Relaxed) {
            self.notifier.notify(Event::SimulcastFailed {
                stream_id: self.stream_id.clone(),
                output_id: self.output_id.clone(),
                destination: destination.tc_url().to_owned(),
                last_error: error.to_string(),
            });
        }
    }

    fn live(&self, destination: &RtmpUrl) {
        if self.failing.swap(false, Ordering::Relaxed) {
            self.notifier.notify(Event::SimulcastRecovered {
                stream_id: self.stream_id.clone(),
                output_id: self.output_id.clone(),
                destination: destination.tc_url().to_owned(),
            });
        }
    }
}

/// How a connection ended.
enum Outcome {
    /// The stream ended; the destination was told.
    Ended,
    Failed {
        error: RelayError,
        was_live: bool,
    },
}

/// Why a connection to a destination failed. The text is the output's `last_error`: it names the
/// destination's host, never its key.
#[derive(Debug, Error)]
pub(crate) enum RelayError {
    #[error("no connection within {0:?}")]
    ConnectTimeout(Duration),
    #[error("cannot resolve {host}: {source}")]
    Resolve { host: String, source: std::io::Error },
    #[error("{host} resolves to no address")]
    NoAddress { host: String },
    #[error(
        "refused to connect to {host}: it resolves to {ip}, {kind}; relays reach only public \
         addresses unless simulcast.allow_private_destinations is true"
    )]
    NonPublic {
        host: String,
        ip: IpAddr,
        kind: &'static str,
    },
    #[error("connect {host}:{port} ({ip}): {source}")]
    Connect {
        host: String,
        port: u16,
        ip: IpAddr,
        source: std::io::Error,
    },
    #[error("TLS server name {host:?}: {source}")]
    ServerName {
        host: String,
        source: rustls_pki_types::InvalidDnsNameError,
    },
    #[error("TLS with {host}: {source}")]
    Tls { host: String, source: std::io::Error },
    #[error("no answer to the RTMP handshake and publish within {0:?}")]
    PublishTimeout(Duration),
    #[error("the destination refused: {0}")]
    Refused(SessionError),
    #[error("the destination said: {0}")]
    Said(SessionError),
    /// Something we were to send did not fit the session (a bug, or a state it was not in).
    #[error("{0}")]
    Send(SessionError),
    #[error("the destination closed the connection")]
    Closed,
    #[error("read: {0}")]
    Read(std::io::Error),
    #[error("write: {0}")]
    Write(std::io::Error),
    #[error("the destination took nothing for {0:?}")]
    WriteTimeout(Duration),
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

impl Relay {
    fn update(&self, f: impl FnOnce(&mut RelayStatus)) {
        let mut status = lock(&self.status);
        f(&mut status);
        self.metrics.state(status.state);
    }
}

/// Relays until the stream ends or the output goes.
pub(crate) async fn run(relay: Relay, bus: Arc<StreamBus>) {
    let mut retry = FIRST_RETRY;
    loop {
        relay.update(|s| s.state = RelayState::Connecting);
        // A new subscription per connection: it starts with the configurations and the current
        // GOP, so the destination starts on a keyframe.
        let subscriber = bus.subscribe();
        let outcome = tokio::select! {
            outcome = publish(&relay, subscriber) => outcome,
            () = relay.stop.cancelled() => {
                tracing::info!("simulcast stopped");
                return;
            }
        };
        let (error, was_live) = match outcome {
            Outcome::Ended => {
                tracing::info!("simulcast ended with the stream");
                relay.update(|s| {
                    s.state = RelayState::Idle;
                    s.connected_at = None;
                    s.bitrate_kbps = 0.0;
                });
                return;
            }
            Outcome::Failed { error, was_live } => (error, was_live),
        };
        if was_live {
            retry = FIRST_RETRY;
        }
        relay.metrics.reconnects.increment(1);
        let pause = jittered(retry);
        retry = (retry * 2).min(LAST_RETRY);
        tracing::warn!(destination = relay.destination.tc_url(), retry_in = ?pause, "simulcast failed: {error}");
        relay.health.failed(&relay.destination, &error);
        relay.update(|s| {
            s.state = RelayState::Retrying;
            s.last_error = Some(error.to_string());
            s.connected_at = None;
            s.bitrate_kbps = 0.0;
        });
        // Waits out the pause, unless the stream ends or the output goes meanwhile.
        let mut watch = bus.subscribe();
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = async { while watch.recv().await.is_some() {} } => {
                relay.update(|s| s.state = RelayState::Idle);
                return;
            }
            () = relay.stop.cancelled() => return,
        }
    }
}

/// ±25%, so destinations that failed together do not retry together.
fn jittered(base: Duration) -> Duration {
    let factor = 0.75 + rand::random::<f64>() * 0.5;
    base.mul_f64(factor)
}

/// One connection: connect, publish, relay until the stream ends or something fails.
async fn publish(relay: &Relay, mut subscriber: Subscriber) -> Outcome {
    let failed = |error: RelayError| Outcome::Failed {
        error,
        was_live: false,
    };
    let destination = &relay.destination;
    let stream = match timeout(
        CONNECT_TIMEOUT,
        connect(destination, &relay.tls, relay.allow_private),
    )
    .await
    {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return failed(e),
        Err(_) => return failed(RelayError::ConnectTimeout(CONNECT_TIMEOUT)),
    };
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut session = ClientSession::new(ClientConfig::new(
        destination.app(),
        destination.tc_url(),
        destination.key(),
    ));
    let mut buf = vec![0u8; 16 * 1024];
    let mut sent = 0u64;
    let handshake = async {
        while !session.is_publishing() {
            sent += flush(&mut session, &mut writer).await?;
            let n = reader.read(&mut buf).await.map_err(RelayError::Read)?;
            if n == 0 {
                return Err(RelayError::Closed);
            }
            session
                .handle_input(buf.get(..n).unwrap_or_default())
                .map_err(RelayError::Refused)?;
        }
        Ok(())
    };
    match timeout(PUBLISH_TIMEOUT, handshake).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return failed(e),
        Err(_) => return failed(RelayError::PublishTimeout(PUBLISH_TIMEOUT)),
    }
    let connected_at = now_ms();
    tracing::info!(destination = destination.tc_url(), "simulcast live");
    relay.health.live(destination);
    relay.update(|s| {
        s.state = RelayState::Live;
        s.last_error = None;
        s.connected_at = Some(connected_at);
        s.bytes_sent += sent;
    });
    relay.metrics.bytes_out.increment(sent);
    let mut bitrate = BitrateOut::new();
    let dropped_before = lock(&relay.status).dropped_frames;
    // Destination timestamps: from 0 at the connection's first frame, and onward across a
    // publisher reconnect (whose clock starts again).
    let mut timeline = Rebaser::from_zero();
    let mut metadata_sent = false;
    let live_failed = |error: RelayError| Outcome::Failed {
        error,
        was_live: true,
    };
    loop {
        tokio::select! {
            event = subscriber.recv() => {
                let Some(event) = event else {
                    // The stream ended: tell the destination, so it ends the broadcast now.
                    let _ = session.unpublish();
                    if flush(&mut session, &mut writer).await.is_ok() {
                        close(&mut reader, &mut writer, &mut buf).await;
                    }
                    return Outcome::Ended;
                };
                // Events come in bursts (one read of the publisher's socket holds several): what
                // is there already goes in the same write, one system call instead of one each.
                let mut next = Some(event);
                for taken in 1..=MAX_EVENTS_PER_WRITE {
                    let Some(event) = next.take() else { break };
                    if let Err(e) = send(&mut session, event, &mut timeline, &mut metadata_sent) {
                        return live_failed(RelayError::Send(e));
                    }
                    if taken < MAX_EVENTS_PER_WRITE {
                        next = ready(subscriber.recv()).flatten();
                    }
                }
                match flush(&mut session, &mut writer).await {
                    Ok(n) => {
                        let dropped = dropped_before + subscriber.dropped();
                        relay.metrics.bytes_out.increment(n);
                        relay.update(|s| {
                            s.bytes_sent += n;
                            s.dropped_frames = dropped;
                            if let Some(kbps) = bitrate.sample(s.bytes_sent) {
                                s.bitrate_kbps = kbps;
                            }
                        });
                    }
                    Err(e) => return live_failed(e),
                }
            }
            read = reader.read(&mut buf) => {
                let input = match read {
                    Ok(0) => return live_failed(RelayError::Closed),
                    Ok(n) => buf.get(..n).unwrap_or_default(),
                    Err(e) => return live_failed(RelayError::Read(e)),
                };
                // Acknowledgements, pings, a late refusal.
                if let Err(e) = session.handle_input(input) {
                    return live_failed(RelayError::Said(e));
                }
                if let Err(e) = flush(&mut session, &mut writer).await {
                    return live_failed(e);
                }
            }
        }
    }
}

async fn connect(
    destination: &RtmpUrl,
    tls: &Arc<rustls::ClientConfig>,
    allow_private: bool,
) -> Result<Box<dyn Io>, RelayError> {
    let tcp = connect_tcp(destination, allow_private).await?;
    let _ = tcp.set_nodelay(true);
    if !destination.tls() {
        return Ok(Box::new(tcp));
    }
    let host = destination.host();
    let name =
        rustls_pki_types::ServerName::try_from(host.to_owned()).map_err(|source| RelayError::ServerName {
            host: host.to_owned(),
            source,
        })?;
    let stream = tokio_rustls::TlsConnector::from(Arc::clone(tls))
        .connect(name, tcp)
        .await
        .map_err(|source| RelayError::Tls {
            host: host.to_owned(),
            source,
        })?;
    Ok(Box::new(stream))
}

/// A TCP connection to one of the addresses the destination's host resolves to. Addresses are
/// checked after resolution, and the connection goes to the checked address (no second lookup a
/// DNS answer could change in between).
async fn connect_tcp(destination: &RtmpUrl, allow_private: bool) -> Result<TcpStream, RelayError> {
    let (host, port) = (destination.host(), destination.port());
    let resolved: Vec<_> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|source| RelayError::Resolve {
            host: host.to_owned(),
            source,
        })?
        .collect();
    let mut refused = None;
    let mut last_error = None;
    for address in resolved {
        if !allow_private && let Some(kind) = destination::non_public(address.ip()) {
            refused.get_or_insert(RelayError::NonPublic {
                host: host.to_owned(),
                ip: address.ip(),
                kind,
            });
            continue;
        }
        match TcpStream::connect(address).await {
            Ok(tcp) => return Ok(tcp),
            Err(source) => {
                last_error = Some(RelayError::Connect {
                    host: host.to_owned(),
                    port,
                    ip: address.ip(),
                    source,
                });
            }
        }
    }
    Err(last_error.or(refused).unwrap_or_else(|| RelayError::NoAddress {
        host: host.to_owned(),
    }))
}

/// Closes our side and reads until the destination closes its own. Dropping a socket with unread
/// input (acknowledgements the destination sent while we were writing) resets the connection, and
/// a reset throws away what is still queued to send: the unpublish, behind the last frames.
async fn close(
    reader: &mut (impl AsyncRead + Unpin),
    writer: &mut (impl AsyncWrite + Unpin),
    buf: &mut [u8],
) {
    let drained = async {
        let _ = writer.shutdown().await;
        while matches!(reader.read(buf).await, Ok(n) if n > 0) {}
    };
    if timeout(WRITE_TIMEOUT, drained).await.is_err() {
        tracing::debug!("the destination did not close its side within {WRITE_TIMEOUT:?}");
    }
}

/// Writes what the session has to send, all its pieces (chunk headers, payload slices) in vectored
/// writes rather than a system call each; returns the bytes written.
async fn flush(
    session: &mut ClientSession,
    writer: &mut (impl AsyncWrite + Unpin),
) -> Result<u64, RelayError> {
    let mut pieces: Vec<Bytes> = Vec::new();
    while let Some(bytes) = session.outbound().pop() {
        pieces.push(bytes);
    }
    let total: u64 = pieces.iter().map(|p| p.len() as u64).sum();
    let write = async {
        let mut slices: Vec<IoSlice<'_>> = pieces.iter().map(|p| IoSlice::new(p)).collect();
        let mut rest = slices.as_mut_slice();
        while !rest.is_empty() {
            let n = writer.write_vectored(rest).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut rest, n);
        }
        writer.flush().await
    };
    match timeout(WRITE_TIMEOUT, write).await {
        Ok(Ok(())) => Ok(total),
        Ok(Err(e)) => Err(RelayError::Write(e)),
        Err(_) => Err(RelayError::WriteTimeout(WRITE_TIMEOUT)),
    }
}

/// Puts one bus event on the session. A frame goes as its FLV tag header and its data, apart: the
/// data is not copied before it reaches the socket.
fn send(
    session: &mut ClientSession,
    event: BusEvent,
    timeline: &mut Rebaser,
    metadata_sent: &mut bool,
) -> Result<(), SessionError> {
    match event {
        BusEvent::Media(MediaEvent::VideoConfig(config)) => {
            session.send_video(timeline.last() as u32, &flv::avc_sequence_start(&config))
        }
        BusEvent::Media(MediaEvent::AudioConfig(config)) => {
            session.send_audio(timeline.last() as u32, &flv::aac_sequence_start(&config))
        }
        BusEvent::Media(MediaEvent::Frame(frame)) => {
            if !*metadata_sent {
                *metadata_sent = true;
                session.send_metadata(Value::object([("encoder", Value::string("Oxcast"))]))?;
            }
            let timestamp = timeline.map(frame.dts).max(0) as u32;
            let header = flv::frame_header(&frame);
            let tag = Payload {
                head: header.as_bytes(),
                body: &frame.data,
            };
            match frame.track {
                Track::Video => session.send_video(timestamp, tag),
                Track::Audio => session.send_audio(timestamp, tag),
            }
        }
        BusEvent::Discontinuity => {
            timeline.rebase();
            Ok(())
        }
        BusEvent::End => Ok(()),
    }
}

/// What `future` gives if it is ready now, without waiting; `None` if it would wait. The bus's
/// `recv` gives up nothing when dropped unfinished, so asking it this way loses no event (a
/// `None` ending is seen again by the next `recv`).
fn ready<T>(future: impl std::future::Future<Output = T>) -> Option<T> {
    let mut future = std::pin::pin!(future);
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut context) {
        std::task::Poll::Ready(value) => Some(value),
        std::task::Poll::Pending => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The relay asks the bus for events already there without waiting: an unfinished ask gives
    /// up nothing, so the events published after it, and the stream's end, all arrive in order.
    #[test]
    fn asking_for_a_ready_event_loses_none() {
        let bus = Arc::new(StreamBus::new());
        let mut subscriber = bus.subscribe();
        assert!(ready(subscriber.recv()).is_none(), "nothing is there yet");
        for dts in [0, 33, 66] {
            bus.publish(MediaEvent::Frame(oxcast_media::Frame {
                track: Track::Audio,
                dts,
                pts: dts,
                keyframe: true,
                data: Bytes::from_static(b"aac"),
            }));
        }
        let mut got = Vec::new();
        while let Some(Some(BusEvent::Media(MediaEvent::Frame(frame)))) = ready(subscriber.recv()) {
            got.push(frame.dts);
        }
        assert_eq!(got, [0, 33, 66]);
        assert!(ready(subscriber.recv()).is_none(), "and nothing more");
        bus.end();
        assert!(matches!(ready(subscriber.recv()), Some(None)), "the end is seen");
        assert!(matches!(ready(subscriber.recv()), Some(None)), "and seen again");
    }

    /// `last_error` reads as it always has: the e2e tests and users look for these words.
    #[test]
    fn errors_read_as_last_error_shows_them() {
        let refused = RelayError::NonPublic {
            host: "localhost".into(),
            ip: IpAddr::from([127, 0, 0, 1]),
            kind: "a loopback address",
        };
        assert_eq!(
            refused.to_string(),
            "refused to connect to localhost: it resolves to 127.0.0.1, a loopback address; relays \
             reach only public addresses unless simulcast.allow_private_destinations is true"
        );
        assert_eq!(
            RelayError::PublishTimeout(PUBLISH_TIMEOUT).to_string(),
            "no answer to the RTMP handshake and publish within 10s"
        );
        assert_eq!(
            RelayError::WriteTimeout(WRITE_TIMEOUT).to_string(),
            "the destination took nothing for 10s"
        );
        assert_eq!(
            RelayError::Closed.to_string(),
            "the destination closed the connection"
        );
    }
}
