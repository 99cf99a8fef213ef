//! The listeners as bound. A listen port of 0 has the system pick a free port; then whatever names
//! a port names the one bound: a public URL that says port 0, the banner, and the ready file that a
//! supervisor (or a test) reads to learn where the server listens.

use std::net::SocketAddr;
use std::path::Path;

/// Where the HTTP and RTMP listeners are bound.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bound {
    pub(crate) http: SocketAddr,
    pub(crate) rtmp: SocketAddr,
}

impl Bound {
    /// The ready file's content: one JSON object, e.g.
    /// `{"http_addr":"127.0.0.1:8080","http_port":8080,"rtmp_addr":"0.0.0.0:1935","rtmp_port":1935}`.
    fn ready_json(&self) -> String {
        // A socket address prints as digits, dots, colons and brackets: nothing to escape.
        format!(
            "{{\"http_addr\":\"{}\",\"http_port\":{},\"rtmp_addr\":\"{}\",\"rtmp_port\":{}}}\n",
            self.http,
            self.http.port(),
            self.rtmp,
            self.rtmp.port()
        )
    }

    /// Writes the ready file at `path`, whole or not at all: a reader that sees the file sees all
    /// of it (it is written beside `path`, then renamed).
    pub(crate) fn write_ready_file(&self, path: &Path) -> std::io::Result<()> {
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        std::fs::write(&partial, self.ready_json())?;
        std::fs::rename(&partial, path)
    }
}

/// `url` with the port bound in place of a port of 0: `public.rtmp_url = "rtmp://127.0.0.1:0"`
/// names whatever port `rtmp.listen = "127.0.0.1:0"` got. Any other URL is kept as it is.
pub(crate) fn with_bound_port(url: &str, port: u16) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.strip_suffix(":0") {
        Some(host) if !host.is_empty() => format!("{scheme}://{host}:{port}{path}"),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_of_0_in_a_public_url_becomes_the_port_bound() {
        for (url, want) in [
            ("rtmp://127.0.0.1:0", "rtmp://127.0.0.1:41935"),
            ("http://localhost:0/base", "http://localhost:41935/base"),
            ("http://[::1]:0", "http://[::1]:41935"),
            // Other ports, no port, and a 0 elsewhere are not touched.
            ("rtmp://127.0.0.1:1935", "rtmp://127.0.0.1:1935"),
            ("http://10.0.0.0", "http://10.0.0.0"),
            ("http://host:10", "http://host:10"),
            ("http://host/x:0", "http://host/x:0"),
            ("https://cdn.example", "https://cdn.example"),
        ] {
            assert_eq!(with_bound_port(url, 41935), want, "{url}");
        }
    }

    #[test]
    fn the_ready_file_is_json_naming_both_listeners() {
        let bound = Bound {
            http: "127.0.0.1:40001".parse().unwrap(),
            rtmp: "[::]:40002".parse().unwrap(),
        };
        assert_eq!(
            bound.ready_json(),
            "{\"http_addr\":\"127.0.0.1:40001\",\"http_port\":40001,\
             \"rtmp_addr\":\"[::]:40002\",\"rtmp_port\":40002}\n"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ready.json");
        bound.write_ready_file(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), bound.ready_json());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["ready.json"], "nothing left beside it");
    }
}
