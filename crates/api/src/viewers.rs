//! Who is watching: a viewer is a client (address and user agent) that asked for a stream's
//! playlist recently. Players poll the live playlist every target duration (RFC 8216 §6.3.4), so
//! one that stopped asking has stopped watching.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use oxcast_core::StreamId;
use oxcast_core::sync::lock;
use tokio::time::Instant;

/// A client counts as watching for this long after its last playlist request: several polls of
/// a player with a 2 s target duration, and more than the longest target a player waits for.
pub(crate) const VIEWER_WINDOW: Duration = Duration::from_secs(15);

/// Clients remembered per stream; past this, a flood of made-up clients is not remembered (the
/// count stops growing rather than the memory).
const MAX_PER_STREAM: usize = 100_000;

/// One client: its address and a digest of its user agent (several players behind one address).
type Viewer = (IpAddr, u64);

#[derive(Debug, Default)]
pub(crate) struct Viewers {
    streams: Mutex<HashMap<StreamId, HashMap<Viewer, Instant>>>,
}

impl Viewers {
    /// A playlist request of `stream_id` by a client at `address` with `user_agent`.
    pub(crate) fn seen(&self, stream_id: &StreamId, address: IpAddr, user_agent: &[u8]) {
        let mut hasher = DefaultHasher::new();
        user_agent.hash(&mut hasher);
        let viewer = (address, hasher.finish());
        let now = Instant::now();
        let mut streams = lock(&self.streams);
        let clients = streams.entry(stream_id.clone()).or_default();
        if clients.len() >= MAX_PER_STREAM && !clients.contains_key(&viewer) {
            clients.retain(|_, last| now.duration_since(*last) < VIEWER_WINDOW);
            if clients.len() >= MAX_PER_STREAM {
                return;
            }
        }
        clients.insert(viewer, now);
    }

    /// Clients of `stream_id` that asked within the window.
    pub(crate) fn count(&self, stream_id: &StreamId) -> usize {
        let now = Instant::now();
        let mut streams = lock(&self.streams);
        let Some(clients) = streams.get_mut(stream_id) else {
            return 0;
        };
        clients.retain(|_, last| now.duration_since(*last) < VIEWER_WINDOW);
        let count = clients.len();
        if count == 0 {
            streams.remove(stream_id);
        }
        count
    }

    /// Every stream's count, forgetting the clients that left.
    pub(crate) fn counts(&self) -> Vec<(StreamId, usize)> {
        let now = Instant::now();
        let mut streams = lock(&self.streams);
        streams.retain(|_, clients| {
            clients.retain(|_, last| now.duration_since(*last) < VIEWER_WINDOW);
            !clients.is_empty()
        });
        streams.iter().map(|(id, c)| (id.clone(), c.len())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_viewer_is_a_client_that_asked_recently() {
        let viewers = Viewers::default();
        let id = StreamId::generate();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        viewers.seen(&id, a, b"hls.js");
        viewers.seen(&id, a, b"hls.js");
        viewers.seen(&id, a, b"Safari");
        viewers.seen(&id, b, b"hls.js");
        assert_eq!(viewers.count(&id), 3);
        assert_eq!(viewers.count(&StreamId::generate()), 0);
        tokio::time::advance(VIEWER_WINDOW - Duration::from_secs(1)).await;
        viewers.seen(&id, b, b"hls.js");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(viewers.count(&id), 1);
        assert_eq!(viewers.counts(), vec![(id.clone(), 1)]);
        tokio::time::advance(VIEWER_WINDOW).await;
        assert_eq!(viewers.count(&id), 0);
        assert!(viewers.counts().is_empty());
    }
}
