//! Where a relay publishes: the output's `uri` and `stream_key` taken apart, and which addresses
//! it may reach.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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

/// What kind of non-public address `ip` is, or `None` for a public (globally routed) one.
///
/// A destination is named by whoever holds the admin credentials; without this check a relay
/// would let them reach the server's own ports, its cloud's metadata service (169.254.169.254)
/// or the private network it sits in, and read what answers from `last_error`.
pub(crate) fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => non_public_v6(v6),
    }
}

fn non_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (127, ..) => "a loopback address",
        (10, ..) | (172, 16..=31, _) | (192, 168, _) => "a private address",
        (169, 254, _) => "a link-local address",
        (100, 64..=127, _) => "a carrier-grade NAT address",
        (0, ..) => "an unspecified address",
        (224..=239, ..) => "a multicast address",
        (240..=255, ..) => "a reserved address",
        (192, 0, 0) | (192, 0, 2) | (198, 51, 100) | (203, 0, 113) | (198, 18..=19, _) => {
            "a special-purpose address"
        }
        _ => return None,
    })
}

fn non_public_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return non_public_v4(v4);
    }
    let segments = ip.segments();
    // NAT64 (RFC 6052): the IPv4 address the gateway reaches decides.
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [.., hi, lo] = segments;
        return non_public_v4(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)));
    }
    Some(match segments[0] {
        _ if ip.is_loopback() => "a loopback address",
        _ if ip.is_unspecified() => "an unspecified address",
        0xfc00..=0xfdff => "a private address",
        0xfe80..=0xfebf => "a link-local address",
        0xfec0..=0xfeff => "a site-local address",
        0xff00..=0xffff => "a multicast address",
        0x2001 if segments[1] == 0x0db8 => "a documentation address",
        // The rest of ::/8 (IPv4-compatible and reserved addresses).
        0x0000..=0x00ff => "a reserved address",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_a_relay_may_not_reach_by_default() {
        for (ip, kind) in [
            ("127.0.0.1", "a loopback address"),
            ("127.8.9.1", "a loopback address"),
            ("10.1.2.3", "a private address"),
            ("172.16.0.1", "a private address"),
            ("172.31.255.255", "a private address"),
            ("192.168.1.1", "a private address"),
            ("169.254.169.254", "a link-local address"),
            ("100.64.0.1", "a carrier-grade NAT address"),
            ("0.0.0.0", "an unspecified address"),
            ("224.0.0.1", "a multicast address"),
            ("255.255.255.255", "a reserved address"),
            ("::1", "a loopback address"),
            ("::", "an unspecified address"),
            ("::ffff:127.0.0.1", "a loopback address"),
            ("::ffff:169.254.169.254", "a link-local address"),
            ("64:ff9b::a00:1", "a private address"),
            ("fd00::1", "a private address"),
            ("fe80::1", "a link-local address"),
            ("ff02::1", "a multicast address"),
            ("2001:db8::1", "a documentation address"),
            ("::127.0.0.1", "a reserved address"),
        ] {
            assert_eq!(non_public(ip.parse().unwrap()), Some(kind), "{ip}");
        }
        for ip in [
            "8.8.8.8",
            "142.250.74.14",
            "172.32.0.1",
            "100.128.0.1",
            "2a00:1450:4001:82a::200e",
            "64:ff9b::808:808",
            "::ffff:8.8.8.8",
        ] {
            assert_eq!(non_public(ip.parse().unwrap()), None, "{ip}");
        }
    }

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
