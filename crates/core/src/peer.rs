//! What the RTMP and HTTP listeners' limits share: who a client is as far as a per-address cap
//! counts, and a throttle for the log lines that refusals would otherwise flood.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

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
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
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
