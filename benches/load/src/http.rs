//! A minimal HTTP/1.1 GET client over one kept-alive std TCP connection: enough to poll a playlist
//! every few milliseconds without a runtime, a connection pool or a proxy lookup in the way, so the
//! time a reader notices a segment is the time the server listed it plus one loopback round trip.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Longest body we accept: a segment of a few seconds at a few Mbit/s is well under this.
const MAX_BODY: usize = 64 << 20;
const MAX_HEADER_LINE: usize = 8 << 10;

/// `http://host:port/path` split into what a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Url {
    /// `host:port`, as the `Host` header and for connecting.
    pub(crate) authority: String,
    /// From the first `/`, query included.
    pub(crate) path: String,
}

impl Url {
    pub(crate) fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url}: only http:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(at) => (rest.get(..at).unwrap_or_default(), rest.get(at..).unwrap_or("/")),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            return Err(format!("{url}: no host"));
        }
        let authority = if authority.contains(':') {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        Ok(Self {
            authority,
            path: path.to_owned(),
        })
    }

    /// A URI from a playlist, resolved against this one (RFC 3986 §5.2, the cases playlists use:
    /// absolute `http://`, absolute path, relative path).
    pub(crate) fn join(&self, uri: &str) -> Result<Self, String> {
        if uri.starts_with("http://") {
            return Self::parse(uri);
        }
        if uri.starts_with('/') {
            return Ok(Self {
                authority: self.authority.clone(),
                path: uri.to_owned(),
            });
        }
        let dir = self.path.split('?').next().unwrap_or_default();
        let dir = dir.rsplit_once('/').map_or("", |(d, _)| d);
        Ok(Self {
            authority: self.authority.clone(),
            path: format!("{dir}/{uri}"),
        })
    }
}

#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
}

/// One connection to one server, reopened when the server closes it.
#[derive(Debug)]
pub(crate) struct Client {
    authority: String,
    addr: SocketAddr,
    timeout: Duration,
    conn: Option<BufReader<TcpStream>>,
    /// Connections opened, for the report (a server that closes kept-alive connections shows here).
    pub(crate) connects: u64,
}

impl Client {
    pub(crate) fn new(authority: &str, timeout: Duration) -> Result<Self, String> {
        let addr = authority
            .to_socket_addrs()
            .map_err(|e| format!("{authority}: {e}"))?
            .next()
            .ok_or_else(|| format!("{authority}: no address"))?;
        Ok(Self {
            authority: authority.to_owned(),
            addr,
            timeout,
            conn: None,
            connects: 0,
        })
    }

    /// `GET path`. A kept-alive connection the server closed in between is retried once on a new one.
    pub(crate) fn get(&mut self, path: &str) -> Result<Response, String> {
        let reused = self.conn.is_some();
        match self.try_get(path) {
            Ok(r) => Ok(r),
            Err(e) if reused && e.kind() != std::io::ErrorKind::TimedOut => {
                self.conn = None;
                self.try_get(path).map_err(|e| format!("GET {path}: {e}"))
            }
            Err(e) => {
                self.conn = None;
                Err(format!("GET {path}: {e}"))
            }
        }
    }

    fn try_get(&mut self, path: &str) -> std::io::Result<Response> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => {
                let stream = TcpStream::connect_timeout(&self.addr, self.timeout)?;
                stream.set_nodelay(true)?;
                stream.set_read_timeout(Some(self.timeout))?;
                stream.set_write_timeout(Some(self.timeout))?;
                self.connects += 1;
                self.conn.insert(BufReader::with_capacity(64 << 10, stream))
            }
        };
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: oxcast-load\r\nAccept: */*\r\n\r\n",
            self.authority
        );
        conn.get_mut().write_all(request.as_bytes())?;
        let (response, keep) = read_response(conn)?;
        if !keep {
            self.conn = None;
        }
        Ok(response)
    }
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned())
}

fn read_line(conn: &mut impl BufRead) -> std::io::Result<String> {
    let mut line = Vec::new();
    let n = conn
        .by_ref()
        .take(MAX_HEADER_LINE as u64)
        .read_until(b'\n', &mut line)?;
    if n == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed",
        ));
    }
    if line.last() != Some(&b'\n') {
        return Err(invalid("header line too long or cut off"));
    }
    String::from_utf8(line)
        .map(|s| s.trim_end().to_owned())
        .map_err(|_| invalid("header is not UTF-8"))
}

/// Reads one response; returns it and whether the connection may be reused.
fn read_response(conn: &mut impl BufRead) -> std::io::Result<(Response, bool)> {
    let status_line = read_line(conn)?;
    let mut parts = status_line.split(' ');
    let version = parts.next().unwrap_or_default();
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid("bad status line"))?;
    let mut keep = version == "HTTP/1.1";
    let mut length = None;
    let mut chunked = false;
    loop {
        let line = read_line(conn)?;
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(invalid("bad header line"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| invalid("bad content-length"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            keep = !value.eq_ignore_ascii_case("close");
        }
    }
    let body = if chunked {
        read_chunked(conn)?
    } else if let Some(length) = length {
        if length > MAX_BODY {
            return Err(invalid("body too large"));
        }
        let mut body = vec![0; length];
        conn.read_exact(&mut body)?;
        body
    } else if status == 204 || status == 304 {
        Vec::new()
    } else {
        // Delimited by the end of the connection.
        keep = false;
        let mut body = Vec::new();
        conn.by_ref().take(MAX_BODY as u64).read_to_end(&mut body)?;
        body
    };
    Ok((Response { status, body }, keep))
}

fn read_chunked(conn: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = read_line(conn)?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| invalid("bad chunk size"))?;
        if size == 0 {
            // Trailers, then the blank line.
            while !read_line(conn)?.is_empty() {}
            return Ok(body);
        }
        if body.len() + size > MAX_BODY {
            return Err(invalid("body too large"));
        }
        let start = body.len();
        body.resize(start + size, 0);
        conn.read_exact(body.get_mut(start..).unwrap_or_default())?;
        if !read_line(conn)?.is_empty() {
            return Err(invalid("chunk not followed by CRLF"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_and_join() {
        let url = Url::parse("http://127.0.0.1:8080/local/video/live/live_stream_ab_hls.m3u8").unwrap();
        assert_eq!(url.authority, "127.0.0.1:8080");
        assert_eq!(
            url.join("live_stream_ab_hls/17.ts").unwrap().path,
            "/local/video/live/live_stream_ab_hls/17.ts"
        );
        assert_eq!(url.join("/hls/k-3.ts").unwrap().path, "/hls/k-3.ts");
        assert_eq!(Url::parse("http://h/x.m3u8").unwrap().authority, "h:80");
        assert!(Url::parse("https://h/x").is_err());
    }

    #[test]
    fn responses_by_length_and_by_chunks() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 404 Not Found\r\n\
                    Transfer-Encoding: chunked\r\n\r\n2\r\nno\r\n1;x=y\r\n!\r\n0\r\n\r\n\
                    HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
        let mut conn = &raw[..];
        let (r, keep) = read_response(&mut conn).unwrap();
        assert_eq!((r.status, r.body.as_slice(), keep), (200, &b"abc"[..], true));
        let (r, keep) = read_response(&mut conn).unwrap();
        assert_eq!((r.status, r.body.as_slice(), keep), (404, &b"no!"[..], true));
        let (r, keep) = read_response(&mut conn).unwrap();
        assert_eq!((r.status, r.body.len(), keep), (200, 0, false));
        assert!(read_response(&mut conn).is_err());
    }
}
