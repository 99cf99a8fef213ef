//! `oxcast --health-check`: asks the server running with the same settings for `GET /healthz`
//! on `http.listen`, for a container's HEALTHCHECK. Built in, so the runtime image needs no curl
//! (and its libraries) just for that, and the check follows `OXCAST__HTTP__LISTEN` by itself.

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// Connecting, sending and reading the answer each get this long.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Ok when the server at `listen` answers `GET /healthz` with 200; otherwise what went wrong.
pub(crate) fn check(listen: SocketAddr) -> Result<(), String> {
    if listen.port() == 0 {
        return Err("http.listen has port 0: the port the server took is in its --ready-file".into());
    }
    // A server listening on every address is reached on loopback.
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let addr = SocketAddr::new(ip, listen.port());
    let failed = |e: std::io::Error| format!("http://{addr}/healthz: {e}");
    let mut conn = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(failed)?;
    conn.set_read_timeout(Some(TIMEOUT)).map_err(failed)?;
    conn.set_write_timeout(Some(TIMEOUT)).map_err(failed)?;
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(failed)?;
    // The status line is all that matters; it comes first, in the first few bytes.
    let mut head = [0u8; 64];
    let mut got = 0;
    while got < 12 {
        let Some(rest) = head.get_mut(got..) else { break };
        match conn.read(rest).map_err(failed)? {
            0 => break,
            n => got += n,
        }
    }
    let head = String::from_utf8_lossy(head.get(..got).unwrap_or_default());
    let status_line = head.lines().next().unwrap_or_default();
    match status_line.split(' ').nth(1) {
        Some("200") => Ok(()),
        _ => Err(format!("http://{addr}/healthz answered {status_line:?}")),
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    /// A server that answers one request with `answer`.
    fn answering(answer: &'static str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = [0u8; 256];
            let _ = conn.read(&mut request).unwrap();
            conn.write_all(answer.as_bytes()).unwrap();
        });
        addr
    }

    #[test]
    fn healthy_only_on_a_200() {
        let ok = answering("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
        assert_eq!(
            check(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), ok.port())),
            Ok(())
        );
        let down = answering("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n");
        assert!(check(down).unwrap_err().contains("503"));
        let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        assert!(check(closed).unwrap_err().contains("/healthz"));
        assert!(
            check("0.0.0.0:0".parse().unwrap())
                .unwrap_err()
                .contains("port 0")
        );
    }
}
