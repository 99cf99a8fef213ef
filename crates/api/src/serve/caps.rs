//! Caps on open connections: overall, and per client address (an IPv4 address, or an IPv6 /64,
//! the smallest network a subscriber is given), and the canned 503 a refused client gets.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use oxcast_core::PeerAddress;

use super::RETRY_AFTER_SEC;

/// The settings behind the caps, named in the 503 and in the log.
const MAX_CONNECTIONS_KEY: &str = "http.max_connections";
const MAX_CONNECTIONS_PER_IP_KEY: &str = "http.max_connections_per_ip";

/// Why a connection was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The server has `max_connections` open.
    Full,
    /// The client's address has `max_connections_per_ip` open.
    PeerFull,
}

impl Refusal {
    /// One line naming the limit and its setting.
    pub(crate) fn reason(&self, caps: &Caps) -> String {
        match self {
            Refusal::Full => format!(
                "the server has as many HTTP connections open as it allows ({MAX_CONNECTIONS_KEY} = {})",
                caps.max
            ),
            Refusal::PeerFull => format!(
                "too many HTTP connections from one address ({MAX_CONNECTIONS_PER_IP_KEY} = {})",
                caps.per_peer
            ),
        }
    }

    /// The whole HTTP/1.1 response, written before the request is read.
    pub(crate) fn response(&self, caps: &Caps) -> Vec<u8> {
        let body = format!("503 Service Unavailable: {}; retry shortly\n", self.reason(caps));
        format!(
            "HTTP/1.1 503 Service Unavailable\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\
             Content-Length: {}\r\n\
             Retry-After: {RETRY_AFTER_SEC}\r\n\
             Connection: close\r\n\
             \r\n\
             {body}",
            body.len()
        )
        .into_bytes()
    }
}

/// Counts open connections against the caps.
pub(crate) struct Caps {
    max: usize,
    per_peer: usize,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    total: usize,
    by_peer: HashMap<PeerAddress, usize>,
}

impl Caps {
    pub(crate) fn new(max: usize, per_peer: usize) -> Caps {
        Caps {
            max,
            per_peer,
            open: Mutex::new(Open::default()),
        }
    }

    fn open(&self) -> MutexGuard<'_, Open> {
        // Nothing panics while holding the lock; the counts stay right even if something did.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for a connection from `ip`, held until the connection closes; or why not.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refusal> {
        let peer = PeerAddress::of(ip);
        let mut open = self.open();
        if open.total >= self.max {
            return Err(Refusal::Full);
        }
        if open.by_peer.get(&peer).copied().unwrap_or(0) >= self.per_peer {
            return Err(Refusal::PeerFull);
        }
        *open.by_peer.entry(peer).or_insert(0) += 1;
        open.total += 1;
        Ok(Slot {
            caps: Arc::clone(self),
            peer,
        })
    }

    #[cfg(test)]
    pub(crate) fn open_count(&self) -> usize {
        let open = self.open();
        debug_assert_eq!(open.total, open.by_peer.values().sum::<usize>());
        open.total
    }
}

/// An open connection's place under the caps, given back when it is dropped.
pub(crate) struct Slot {
    caps: Arc<Caps>,
    peer: PeerAddress,
}

impl Drop for Slot {
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
