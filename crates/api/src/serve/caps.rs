//! What a client over a connection cap (`oxcast_core::ConnectionCaps`: overall, and per IPv4
//! address or IPv6 /64) is told: the canned 503, and the line the log gets.

use oxcast_core::{CapExceeded, ConnectionCaps};

use super::RETRY_AFTER_SEC;

/// The settings behind the caps, named in the 503 and in the log.
const MAX_CONNECTIONS_KEY: &str = "http.max_connections";
const MAX_CONNECTIONS_PER_IP_KEY: &str = "http.max_connections_per_ip";

/// One line naming the limit and its setting.
pub(crate) fn reason(exceeded: CapExceeded, caps: &ConnectionCaps) -> String {
    match exceeded {
        CapExceeded::Total => format!(
            "the server has as many HTTP connections open as it allows ({MAX_CONNECTIONS_KEY} = {})",
            caps.max_total()
        ),
        CapExceeded::PerPeer => format!(
            "too many HTTP connections from one address ({MAX_CONNECTIONS_PER_IP_KEY} = {})",
            caps.max_per_peer()
        ),
    }
}

/// The whole HTTP/1.1 response, written before the request is read.
pub(crate) fn response(exceeded: CapExceeded, caps: &ConnectionCaps) -> Vec<u8> {
    let body = format!(
        "503 Service Unavailable: {}; retry shortly\n",
        reason(exceeded, caps)
    );
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
