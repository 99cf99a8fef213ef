//! Accepting encoders: the caps on connections, one task per connection, and shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use oxcast_core::{Acceptor, Registry, ReportThrottle};
use oxcast_rtmp::{ServerConfig, ServerSession, SharedBudget};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::connection::Connection;
use crate::pending;

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
            crate::refused("max_connections");
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
        tracker.spawn(
            async move {
                let _permit = permit;
                let _ = socket.set_nodelay(true);
                Connection::new(socket, registry, config, session, slot)
                    .with_peer(peer)
                    .serve(&shutdown)
                    .await;
            }
            .instrument(connection_span(peer)),
        );
    }
    tracker.close();
    if timeout(SHUTDOWN_GRACE, tracker.wait()).await.is_err() {
        tracing::warn!("RTMP connections still open {SHUTDOWN_GRACE:?} after shutdown");
    }
}

/// The span every log line of one connection carries; `stream_id` is filled in when a publish is
/// accepted.
pub(crate) fn connection_span(peer: SocketAddr) -> tracing::Span {
    // Process-wide, so a conn_id names one connection in the whole log.
    static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);
    let conn_id = NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed);
    tracing::info_span!("rtmp", conn_id, peer = %peer, stream_id = tracing::field::Empty)
}
