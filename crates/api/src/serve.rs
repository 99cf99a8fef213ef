//! The HTTP accept loop. Each connection is served by hyper's HTTP/1 connection (through
//! hyper-util's builder) with a timer, so that its header-read timeout works, and is watched for
//! what hyper does not bound: a kept-alive connection idle between requests, and a client that
//! stops reading its response. Connections are capped overall and per client address; one over a
//! cap is answered a canned 503 without its request being read, and closed.
//!
//! `axum::serve` builds hyper's connection without a timer, which silently turns hyper's own
//! 30-second header-read timeout off (hyper's `Time::check` ignores a default timeout when no
//! timer is set), and reads the protocol version before hyper starts, with no timeout at all: a
//! connection that sends nothing stays open forever there.

mod caps;
mod watched;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use oxcast_core::{Acceptor, CapExceeded, ConnectionCaps, ConnectionSlot, ReportThrottle};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

use self::watched::{Activity, Tracked, Watched};

/// The limits that protect the HTTP server from clients that hold connections without using them.
/// The server fills them from the `[http]` settings, whose names the messages below quote.
#[derive(Clone, Debug)]
pub struct HttpLimits {
    /// A connection must deliver a whole request head within this, counted from when it opens
    /// and, on a kept-alive connection, from the end of the previous response.
    pub header_timeout: Duration,
    /// A kept-alive connection with no request in flight and no byte moving for this long is
    /// closed. Only useful below `header_timeout`, which also runs while a connection waits for
    /// its next request.
    pub keep_alive_timeout: Duration,
    /// A write to the socket that stays pending this long (the client stopped reading) drops the
    /// connection, unsent bytes and all.
    pub write_timeout: Duration,
    /// Connections open at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// Connections open at once from one IPv4 address or one IPv6 /64.
    pub max_connections_per_ip: usize,
}

/// The settings (in `config/default.toml`) behind each limit, named in refusals and logs so that
/// a client or an operator who meets a limit knows which one.
const HEADER_TIMEOUT_KEY: &str = "http.header_timeout_sec";
const WRITE_TIMEOUT_KEY: &str = "http.write_timeout_sec";

/// What a refused client is told to wait before trying again, in seconds.
const RETRY_AFTER_SEC: u32 = 5;

/// Refusals and dropped responses are logged at most once per reason in this time.
const REPORT_EVERY: Duration = Duration::from_secs(5);

/// What one server shares with its connection tasks.
struct Shared {
    router: Router,
    limits: HttpLimits,
    builder: auto::Builder<TokioExecutor>,
    caps: Arc<ConnectionCaps>,
    refused_full: ReportThrottle,
    refused_peer: ReportThrottle,
    write_timed_out: ReportThrottle,
}

/// Serves `router` on `listener` until `shutdown` is cancelled; then stops accepting, lets each
/// connection finish the request it is serving (closing it afterwards), and returns when all have
/// closed. The caller bounds that wait.
pub async fn serve(listener: TcpListener, router: Router, limits: HttpLimits, shutdown: CancellationToken) {
    // HTTP/1 only, served at once: otherwise hyper-util first reads the bytes that tell HTTP/1
    // from HTTP/2, with no timeout.
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let shared = Arc::new(Shared {
        router,
        builder,
        caps: ConnectionCaps::new(limits.max_connections, limits.max_connections_per_ip),
        limits,
        refused_full: ReportThrottle::new(REPORT_EVERY),
        refused_peer: ReportThrottle::new(REPORT_EVERY),
        write_timed_out: ReportThrottle::new(REPORT_EVERY),
    });
    let tracker = TaskTracker::new();
    let acceptor = Acceptor::new(listener, "HTTP");
    while let Some((socket, peer)) = acceptor.next(&shutdown).await {
        match shared.caps.admit(peer.ip()) {
            Ok(slot) => {
                tracker.spawn(connection(
                    socket,
                    peer,
                    slot,
                    Arc::clone(&shared),
                    shutdown.clone(),
                ));
            }
            Err(refusal) => refuse(&shared, socket, peer, refusal),
        }
    }
    drop(acceptor);
    tracker.close();
    tracker.wait().await;
}

/// Answers a connection over a cap with a canned 503 and closes it, without waiting: the response
/// goes out in one non-blocking write (a fresh socket's send buffer is empty), whatever part of
/// the request already arrived is read and discarded (so that the close is a FIN after the 503,
/// not a reset that could make the client's kernel discard it), and the socket is closed.
fn refuse(shared: &Shared, socket: TcpStream, peer: SocketAddr, refusal: CapExceeded) {
    use std::io::{Read as _, Write as _};
    if let Ok(mut socket) = socket.into_std() {
        let _ = socket.write(&caps::response(refusal, &shared.caps));
        let mut scratch = [0u8; 2048];
        // Bounded: a client cannot keep the accept loop here by sending fast.
        for _ in 0..8 {
            match socket.read(&mut scratch) {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
    }
    let (throttle, reason) = match refusal {
        CapExceeded::Total => (&shared.refused_full, "max_connections"),
        CapExceeded::PerPeer => (&shared.refused_peer, "max_connections_per_ip"),
    };
    metrics::counter!("oxcast_refused_connections_total", "listener" => "http", "reason" => reason)
        .increment(1);
    if let Some(more) = throttle.report() {
        tracing::warn!(
            %peer,
            "HTTP connection refused with 503: {} ({more} more refused for this reason since the last report)",
            caps::reason(refusal, &shared.caps),
        );
    }
}

/// Serves one connection until it closes, a limit closes it, or shutdown lets it finish.
async fn connection(
    socket: TcpStream,
    peer: SocketAddr,
    slot: ConnectionSlot,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let _slot = slot;
    let open = metrics::gauge!("oxcast_http_connections");
    open.increment(1);
    let _open = scopeguard(move || open.decrement(1));
    // Responses are written whole by hyper; a small last piece must not wait for an ACK.
    let _ = socket.set_nodelay(true);
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched::new(
        socket,
        Arc::clone(&activity),
        shared.limits.write_timeout,
    ));
    let router = shared.router.clone();
    let tracked = Arc::clone(&activity);
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ClientAddress(peer));
        let busy = tracked.request_started();
        let router = router.clone();
        async move {
            let Ok(response) = router.oneshot(request.map(Body::new)).await;
            Ok::<_, Infallible>(response.map(|body| Tracked::new(body, busy)))
        }
    });
    let conn = shared.builder.serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let mut idle = std::pin::pin!(idle_expired(&activity, shared.limits.keep_alive_timeout));
    let mut draining = false;
    let ended = loop {
        tokio::select! {
            ended = conn.as_mut() => break Some(ended),
            () = &mut idle => break None,
            // Finish the request in flight (the limits still apply), then close; an idle
            // connection closes at once.
            () = shutdown.cancelled(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    };
    match ended {
        None => tracing::debug!(
            "HTTP connection closed: idle for {:?} between requests",
            shared.limits.keep_alive_timeout
        ),
        Some(Ok(())) => {}
        Some(Err(_)) if activity.write_timed_out() => {
            if let Some(more) = shared.write_timed_out.report() {
                tracing::info!(
                    "HTTP connection dropped: the client read nothing of its response for {:?} \
                     ({WRITE_TIMEOUT_KEY}) ({more} more since the last report)",
                    shared.limits.write_timeout
                );
            }
        }
        Some(Err(e))
            if e.downcast_ref::<hyper::Error>()
                .is_some_and(hyper::Error::is_timeout) =>
        {
            // Only a partial head gets here: hyper ends a connection that sent nothing at all as
            // if the client had closed it. Browsers open connections they never use, and mobile
            // links stall, so neither is a sign of trouble.
            tracing::debug!(
                "HTTP connection closed: no whole request head within {:?} ({HEADER_TIMEOUT_KEY})",
                shared.limits.header_timeout
            );
        }
        Some(Err(e)) => tracing::debug!("HTTP connection ended: {e}"),
    }
}

/// Completes once the connection has been idle for `keep_alive`: a response was finished, no
/// request is in flight, no write is pending and no byte has moved either way since.
///
/// hyper's header-read timer (hyper 1.12, `proto/h1/conn.rs`): `poll_read_head` starts it when
/// the connection starts waiting for a request head, and after each response `State::idle` sets
/// `notify_read` so that the wait for the next head starts at once, bytes or not. So a kept-alive
/// connection that sends nothing is already closed `header_timeout` after its last response
/// (hyper then ends the connection as if the client had closed it, and sends nothing); this watch
/// closes it sooner when `keep_alive` is shorter.
async fn idle_expired(activity: &Activity, keep_alive: Duration) {
    // Until the first response, a connection is waiting for its first request: the header
    // timeout's business.
    activity.first_response().await;
    loop {
        let wake = match activity.idle_since() {
            Some(since) if since + keep_alive <= Instant::now() => return,
            Some(since) => since + keep_alive,
            None => Instant::now() + keep_alive,
        };
        tokio::time::sleep_until(wake).await;
    }
}

/// The address of the client a request came from, put in each request's extensions.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ClientAddress(pub(crate) SocketAddr);

/// Runs `f` when dropped: a connection's gauge goes down however the connection ends.
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

#[cfg(test)]
mod tests;
