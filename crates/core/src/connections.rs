//! What the RTMP and HTTP listeners share: their accept loop, who a client is as far as a
//! per-address cap counts, the caps on open connections, and a throttle for the log lines that
//! refusals would otherwise flood.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::sync;

/// After a failed accept, the listener waits this long: failing again at once would spin.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// Failed accepts are logged at most this often.
const ACCEPT_FAILURES_EVERY: Duration = Duration::from_secs(10);

/// A listener's accept loop, as both listeners run it: the next connection, or `None` once
/// `shutdown` is cancelled. A client that gave up before the accept is skipped; any other failure
/// (out of file descriptors, usually) is logged at most every ten seconds and retried after a
/// pause.
#[derive(Debug)]
pub struct Acceptor {
    listener: TcpListener,
    /// What listens, for the log: "RTMP", "HTTP".
    name: &'static str,
    failures: ReportThrottle,
}

impl Acceptor {
    pub fn new(listener: TcpListener, name: &'static str) -> Self {
        Self {
            listener,
            name,
            failures: ReportThrottle::new(ACCEPT_FAILURES_EVERY),
        }
    }

    pub async fn next(&self, shutdown: &CancellationToken) -> Option<(TcpStream, SocketAddr)> {
        use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
        loop {
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                () = shutdown.cancelled() => return None,
            };
            match accepted {
                Ok(accepted) => return Some(accepted),
                Err(e) if matches!(e.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) => {}
                Err(e) => {
                    if let Some(more) = self.failures.report() {
                        tracing::error!(more, "{} accept failed: {e}", self.name);
                    }
                    tokio::select! {
                        () = tokio::time::sleep(ACCEPT_PAUSE) => {}
                        () = shutdown.cancelled() => return None,
                    }
                }
            }
        }
    }
}

/// Where a connection comes from, as per-address caps count it: an IPv4 address, or an IPv6 /64
/// (the smallest network one subscriber is given: a host could otherwise use a fresh address for
/// every connection).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PeerAddress {
    V4(Ipv4Addr),
    /// The first 64 bits of the address.
    V6Net(u64),
}

impl PeerAddress {
    pub fn of(ip: IpAddr) -> PeerAddress {
        // A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d.
        match ip.to_canonical() {
            IpAddr::V4(v4) => PeerAddress::V4(v4),
            IpAddr::V6(v6) => PeerAddress::V6Net(u64::try_from(v6.to_bits() >> 64).unwrap_or(u64::MAX)),
        }
    }
}

/// Which cap a connection would cross.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapExceeded {
    /// As many connections are open as [`ConnectionCaps`] allows in all.
    Total,
    /// As many are open from the client's [`PeerAddress`] as it allows from one.
    PerPeer,
}

/// Counts open connections, in all and per [`PeerAddress`]; each is held by a
/// [`ConnectionSlot`] until it is dropped.
#[derive(Debug)]
pub struct ConnectionCaps {
    max_total: usize,
    max_per_peer: usize,
    open: Mutex<OpenConnections>,
}

#[derive(Debug, Default)]
struct OpenConnections {
    total: usize,
    by_peer: HashMap<PeerAddress, usize>,
}

impl ConnectionCaps {
    pub fn new(max_total: usize, max_per_peer: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_peer,
            open: Mutex::default(),
        })
    }

    pub fn max_total(&self) -> usize {
        self.max_total
    }

    pub fn max_per_peer(&self) -> usize {
        self.max_per_peer
    }

    fn open(&self) -> MutexGuard<'_, OpenConnections> {
        // Every update is one increment or decrement: a poisoned lock still holds whole counts.
        sync::lock(&self.open)
    }

    /// A slot for a connection from `ip`, held until it is dropped; or the cap it would cross.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionSlot, CapExceeded> {
        let peer = PeerAddress::of(ip);
        let mut open = self.open();
        if open.total >= self.max_total {
            return Err(CapExceeded::Total);
        }
        let from_peer = open.by_peer.entry(peer).or_insert(0);
        if *from_peer >= self.max_per_peer {
            return Err(CapExceeded::PerPeer);
        }
        *from_peer += 1;
        open.total += 1;
        Ok(ConnectionSlot {
            caps: Arc::clone(self),
            peer,
        })
    }

    /// Connections open in all.
    pub fn open_count(&self) -> usize {
        self.open().total
    }

    /// Connections open from `ip`'s [`PeerAddress`].
    pub fn open_from(&self, ip: IpAddr) -> usize {
        self.open()
            .by_peer
            .get(&PeerAddress::of(ip))
            .copied()
            .unwrap_or(0)
    }
}

/// An open connection's place under its [`ConnectionCaps`], given back when it is dropped.
#[derive(Debug)]
pub struct ConnectionSlot {
    caps: Arc<ConnectionCaps>,
    peer: PeerAddress,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.caps.open();
        open.total = open.total.saturating_sub(1);
        if let Some(from_peer) = open.by_peer.get_mut(&self.peer) {
            *from_peer = from_peer.saturating_sub(1);
            if *from_peer == 0 {
                open.by_peer.remove(&self.peer);
            }
        }
    }
}

/// A log line per reason at most every few seconds, however often the reason occurs: a flood of
/// refused connections must not become a flood of log lines.
#[derive(Debug)]
pub struct ReportThrottle {
    every: Duration,
    /// When the last report was made, and how many occurrences went unreported since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl ReportThrottle {
    /// At most one report per `every`.
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            state: Mutex::new((None, 0)),
        }
    }

    /// Called at each occurrence: `Some(occurrences held back since the last report)` when this
    /// one is to be reported.
    pub fn report(&self) -> Option<u64> {
        // A poisoned lock still holds a time and a count.
        let mut state = sync::lock(&self.state);
        let (last, held_back) = &mut *state;
        let now = Instant::now();
        if last.is_some_and(|last| now < last + self.every) {
            *held_back += 1;
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(held_back))
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;

    #[test]
    fn peers_are_counted_per_ipv4_address_and_per_ipv6_64() {
        let v6 = |s: &str| PeerAddress::of(IpAddr::V6(s.parse::<Ipv6Addr>().unwrap()));
        assert_eq!(v6("2001:db8:1:2:aaaa::1"), v6("2001:db8:1:2:ffff::9"));
        assert_ne!(v6("2001:db8:1:2::1"), v6("2001:db8:1:3::1"));
        let v4 = PeerAddress::of(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)));
        assert_eq!(
            v6("::ffff:192.0.2.7"),
            v4,
            "an IPv4 client of a dual-stack listener"
        );
        assert_ne!(PeerAddress::of(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 8))), v4);
        // An IPv6 /64 whose low bits spell an IPv4 address is not that address.
        assert_ne!(v6("::c000:207"), v4);
    }

    #[test]
    fn caps_refuse_over_either_limit_and_free_slots_on_close() {
        let caps = ConnectionCaps::new(3, 2);
        let a = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let b = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
        let first = caps.admit(a).unwrap();
        let _second = caps.admit(a).unwrap();
        assert_eq!(caps.admit(a).err(), Some(CapExceeded::PerPeer));
        let _third = caps.admit(b).unwrap();
        assert_eq!(caps.admit(b).err(), Some(CapExceeded::Total));
        assert_eq!(caps.open_count(), 3);
        drop(first);
        assert_eq!((caps.open_count(), caps.open_from(a)), (2, 1));
        let _again = caps.admit(a).unwrap();
        // Refusals hold nothing.
        assert_eq!((caps.open_count(), caps.open_from(a)), (3, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn the_throttle_reports_once_per_period_and_counts_the_rest() {
        let throttle = ReportThrottle::new(Duration::from_secs(5));
        assert_eq!(throttle.report(), Some(0));
        assert_eq!(throttle.report(), None);
        assert_eq!(throttle.report(), None);
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(throttle.report(), Some(2));
        assert_eq!(throttle.report(), None);
    }
}
