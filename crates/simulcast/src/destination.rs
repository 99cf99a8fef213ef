//! Where a relay publishes: the output's `uri` and `stream_key` taken apart.

use oxcast_core::SimulcastTarget;
use oxcast_core::rules;

/// A parsed simulcast destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Destination {
    pub(crate) tls: bool,
    pub(crate) host: String,
    pub(crate) port: u16,
    /// The RTMP application: the uri's path without the key (`live2`, `app/instance`).
    pub(crate) app: String,
    /// The uri without the key, as `connect` announces it.
    pub(crate) tc_url: String,
    pub(crate) key: String,
}

impl Destination {
    /// `None` for a uri the API would have refused.
    pub(crate) fn parse(target: &SimulcastTarget) -> Option<Self> {
        let (base, key) = rules::simulcast_destination(&target.uri, target.stream_key.as_deref());
        let lower = base.to_ascii_lowercase();
        let (tls, rest) = if lower.starts_with("rtmps://") {
            (true, base.get("rtmps://".len()..)?)
        } else if lower.starts_with("rtmp://") {
            (false, base.get("rtmp://".len()..)?)
        } else {
            return None;
        };
        let (authority, app) = rest.split_once('/').unwrap_or((rest, ""));
        let default_port = if tls { 443 } else { 1935 };
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !authority.ends_with(']') => (host, port.parse().ok()?),
            _ => (authority, default_port),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || key.is_empty() {
            return None;
        }
        Some(Self {
            tls,
            host: host.to_owned(),
            port,
            app: app.to_owned(),
            tc_url: base,
            key,
        })
    }

    /// For logs and errors: the uri without the key, which is a secret.
    pub(crate) fn describe(&self) -> &str {
        &self.tc_url
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(uri: &str, key: Option<&str>) -> SimulcastTarget {
        SimulcastTarget {
            uri: uri.into(),
            stream_key: key.map(Into::into),
            vendor: None,
        }
    }

    #[test]
    fn destinations() {
        let d = Destination::parse(&target("rtmp://a.rtmp.youtube.com/live2", Some("k-1"))).unwrap();
        assert_eq!(
            (d.tls, d.host.as_str(), d.port, d.app.as_str(), d.key.as_str()),
            (false, "a.rtmp.youtube.com", 1935, "live2", "k-1")
        );
        assert_eq!(d.tc_url, "rtmp://a.rtmp.youtube.com/live2");
        let d = Destination::parse(&target("rtmps://live-api-s.facebook.com:443/rtmp/KEY", None)).unwrap();
        assert_eq!(
            (d.tls, d.port, d.app.as_str(), d.key.as_str()),
            (true, 443, "rtmp", "KEY")
        );
        let d = Destination::parse(&target("rtmps://localhost/live", Some("s"))).unwrap();
        assert_eq!((d.port, d.host.as_str()), (443, "localhost"));
        let d = Destination::parse(&target("rtmp://[::1]:1936/app/inst", Some("k"))).unwrap();
        assert_eq!(
            (d.host.as_str(), d.port, d.app.as_str()),
            ("::1", 1936, "app/inst")
        );
        assert_eq!(Destination::parse(&target("rtmp://host/app", Some(""))), None);
        assert_eq!(Destination::parse(&target("http://host/app", Some("k"))), None);
    }
}
