//! Connections that are not publishing yet, counted per address, so that one host cannot take
//! every connection slot with connections that never publish.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use oxcast_core::{PeerAddress, ReportThrottle};

/// Refusals are logged at most this often.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Every address's count of connections that are not publishing yet.
#[derive(Debug, Clone)]
pub(crate) struct PendingPeers {
    max_per_peer: usize,
    counts: Arc<Mutex<HashMap<PeerAddress, usize>>>,
    refusals: Arc<ReportThrottle>,
}

/// One connection counted against its address until it publishes or closes (dropped).
#[derive(Debug)]
pub(crate) struct PendingSlot {
    peer: PeerAddress,
    counts: Arc<Mutex<HashMap<PeerAddress, usize>>>,
}

fn lock(counts: &Mutex<HashMap<PeerAddress, usize>>) -> MutexGuard<'_, HashMap<PeerAddress, usize>> {
    // Every update is one increment or decrement: a poisoned lock still holds whole counts.
    counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl PendingPeers {
    pub(crate) fn new(max_per_peer: usize) -> Self {
        Self {
            max_per_peer,
            counts: Arc::default(),
            refusals: Arc::new(ReportThrottle::new(REPORT_EVERY)),
        }
    }

    /// Counts a new connection from `ip`; `None` when its address already holds its cap.
    pub(crate) fn admit(&self, ip: IpAddr) -> Option<PendingSlot> {
        let peer = PeerAddress::of(ip);
        let mut counts = lock(&self.counts);
        let count = counts.entry(peer).or_default();
        if *count >= self.max_per_peer {
            return None;
        }
        *count += 1;
        Some(PendingSlot {
            peer,
            counts: Arc::clone(&self.counts),
        })
    }

    /// Logs a refusal, at most once per [`REPORT_EVERY`] with the count held back since.
    pub(crate) fn refused(&self, peer: SocketAddr) {
        if let Some(more) = self.refusals.report() {
            tracing::warn!(%peer, max = self.max_per_peer, more,
                "RTMP connection refused: its address holds rtmp.max_pending_per_ip connections that are not publishing");
        }
    }

    #[cfg(test)]
    fn count(&self, ip: IpAddr) -> usize {
        lock(&self.counts).get(&PeerAddress::of(ip)).copied().unwrap_or(0)
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        let mut counts = lock(&self.counts);
        if let Some(count) = counts.get_mut(&self.peer) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.peer);
            }
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
        assert_eq!(peers.count(ip("127.0.0.1")), 1);
    }

    #[test]
    fn ipv6_counts_per_64() {
        let peers = PendingPeers::new(1);
        let _a = peers.admit(ip("2001:db8:1:2::1")).unwrap();
        assert!(peers.admit(ip("2001:db8:1:2:ffff::9")).is_none(), "same /64");
        assert!(peers.admit(ip("2001:db8:1:3::1")).is_some(), "another /64");
    }
}
