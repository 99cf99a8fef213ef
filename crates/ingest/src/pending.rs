//! Connections that are not publishing yet, counted per address (`oxcast_core::ConnectionCaps`),
//! so that one host cannot take every connection slot with connections that never publish.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use oxcast_core::{ConnectionCaps, ConnectionSlot, ReportThrottle};

/// Refusals are logged at most this often.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Every address's count of connections that are not publishing yet.
#[derive(Debug)]
pub(crate) struct PendingPeers {
    /// Per address only: the overall cap (`rtmp.max_connections`) counts publishers too.
    caps: Arc<ConnectionCaps>,
    refusals: ReportThrottle,
}

impl PendingPeers {
    pub(crate) fn new(max_per_peer: usize) -> Self {
        Self {
            caps: ConnectionCaps::new(usize::MAX, max_per_peer),
            refusals: ReportThrottle::new(REPORT_EVERY),
        }
    }

    /// Counts a new connection from `ip` until the slot is dropped (at its first publish, or
    /// when it closes); `None` when its address already holds its cap.
    pub(crate) fn admit(&self, ip: IpAddr) -> Option<ConnectionSlot> {
        self.caps.admit(ip).ok()
    }

    /// Logs a refusal, at most once per [`REPORT_EVERY`] with the count held back since.
    pub(crate) fn refused(&self, peer: SocketAddr) {
        crate::refused("max_pending_per_ip");
        if let Some(more) = self.refusals.report() {
            tracing::warn!(%peer, max = self.caps.max_per_peer(), more,
                "RTMP connection refused: its address holds rtmp.max_pending_per_ip connections that are not publishing");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn each_address_has_its_own_cap_and_slots_come_back() {
        let peers = PendingPeers::new(2);
        let a1 = peers.admit(ip("127.0.0.1")).unwrap();
        let _a2 = peers.admit(ip("127.0.0.1")).unwrap();
        assert!(peers.admit(ip("127.0.0.1")).is_none());
        let _b = peers.admit(ip("127.0.0.2")).unwrap();
        drop(a1);
        assert!(peers.admit(ip("127.0.0.1")).is_some());
        assert_eq!(peers.caps.open_from(ip("127.0.0.1")), 1);
    }

    #[test]
    fn ipv6_counts_per_64() {
        let peers = PendingPeers::new(1);
        let _a = peers.admit(ip("2001:db8:1:2::1")).unwrap();
        assert!(peers.admit(ip("2001:db8:1:2:ffff::9")).is_none(), "same /64");
        assert!(peers.admit(ip("2001:db8:1:3::1")).is_some(), "another /64");
    }
}
