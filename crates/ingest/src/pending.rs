//! Connections that are not publishing yet, counted per address, so that one host cannot take
//! every connection slot with connections that never publish.
//!
//! IPv6 addresses count per /64: one host is usually given a whole /64, and could otherwise use a
//! fresh address for every connection.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Refusals are logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// An IPv4 address, or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Peer {
    V4(u32),
    V6(u64),
}

impl Peer {
    fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::V4(u32::from(v4)),
                None => Self::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    by_peer: HashMap<Peer, usize>,
    refused: u64,
    logged_at: Option<Instant>,
}

/// Every address's count of connections that are not publishing yet.
#[derive(Debug, Clone)]
pub(crate) struct PendingPeers {
    max_per_peer: usize,
    counts: Arc<Mutex<Counts>>,
}

/// One connection counted against its address until it publishes or closes (dropped).
#[derive(Debug)]
pub(crate) struct PendingSlot {
    peer: Peer,
    counts: Arc<Mutex<Counts>>,
}

fn lock(counts: &Mutex<Counts>) -> MutexGuard<'_, Counts> {
    // Every update is one increment or decrement: a poisoned lock still holds whole counts.
    counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl PendingPeers {
    pub(crate) fn new(max_per_peer: usize) -> Self {
        Self {
            max_per_peer,
            counts: Arc::default(),
        }
    }

    /// Counts a new connection from `ip`; `None` when its address already holds its cap.
    pub(crate) fn admit(&self, ip: IpAddr) -> Option<PendingSlot> {
        let peer = Peer::of(ip);
        let mut counts = lock(&self.counts);
        let count = counts.by_peer.entry(peer).or_default();
        if *count >= self.max_per_peer {
            return None;
        }
        *count += 1;
        Some(PendingSlot {
            peer,
            counts: Arc::clone(&self.counts),
        })
    }

    /// Logs a refusal, at most once per [`LOG_EVERY`] with the count since the last line.
    pub(crate) fn refused(&self, peer: SocketAddr) {
        let mut counts = lock(&self.counts);
        counts.refused += 1;
        if counts.logged_at.is_some_and(|at| at.elapsed() < LOG_EVERY) {
            return;
        }
        counts.logged_at = Some(Instant::now());
        let refused = std::mem::take(&mut counts.refused);
        drop(counts);
        tracing::warn!(%peer, max = self.max_per_peer, refused,
            "RTMP connection refused: its address holds rtmp.max_pending_per_ip connections that are not publishing");
    }

    #[cfg(test)]
    fn count(&self, ip: IpAddr) -> usize {
        lock(&self.counts)
            .by_peer
            .get(&Peer::of(ip))
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        let mut counts = lock(&self.counts);
        if let Some(count) = counts.by_peer.get_mut(&self.peer) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.by_peer.remove(&self.peer);
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
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let peers = PendingPeers::new(1);
        let _a = peers.admit(ip("2001:db8:1:2::1")).unwrap();
        assert!(peers.admit(ip("2001:db8:1:2:ffff::9")).is_none(), "same /64");
        assert!(peers.admit(ip("2001:db8:1:3::1")).is_some(), "another /64");
        let _v4 = peers.admit(ip("192.0.2.7")).unwrap();
        assert!(peers.admit(ip("::ffff:192.0.2.7")).is_none());
        // An IPv6 /64 whose low bits spell an IPv4 address is not that address.
        assert!(peers.admit(ip("::c000:207")).is_some());
    }
}
