//! What a valid field value is. Every check returns a [`FieldError`] whose message names the field
//! and says why, so the API can hand it to the user unchanged.

use std::fmt;

/// Default `idle_timeout_sec` of a new stream.
pub const DEFAULT_IDLE_TIMEOUT_SEC: u32 = 120;
/// Default `max_runtime_sec` of a new stream.
pub const DEFAULT_MAX_RUNTIME_SEC: u32 = 10_800;
/// Allowed `idle_timeout_sec`: up to a day.
pub const IDLE_TIMEOUT_SEC: std::ops::RangeInclusive<u32> = 1..=86_400;
/// Allowed `max_runtime_sec`: up to a week.
pub const MAX_RUNTIME_SEC: std::ops::RangeInclusive<u32> = 1..=604_800;
/// Longest `name`, in characters.
pub const NAME_MAX_CHARS: usize = 256;
/// Longest archive `public_id`, in characters.
pub const PUBLIC_ID_MAX_CHARS: usize = 255;
/// Longest simulcast `uri`, in bytes.
pub const URI_MAX_BYTES: usize = 2048;
/// Longest simulcast `stream_key` or `vendor`, in bytes.
pub const TEXT_MAX_BYTES: usize = 1024;

/// A field value that breaks a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// The field's path in the request, e.g. `input.type`.
    pub field: String,
    /// Why the value is refused, phrased to follow the field name.
    pub problem: String,
}

impl FieldError {
    /// A refusal of `field` because of `problem`.
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.field, self.problem)
    }
}

impl std::error::Error for FieldError {}

/// A stream's or output's display name.
pub fn check_name(name: &str) -> Result<(), FieldError> {
    let chars = name.chars().count();
    if chars > NAME_MAX_CHARS {
        return Err(FieldError::new(
            "name",
            format!("must be at most {NAME_MAX_CHARS} characters (got {chars})"),
        ));
    }
    Ok(())
}

/// An archive's asset name: `[A-Za-z0-9_-]` parts joined by single `/`.
pub fn check_public_id(public_id: &str) -> Result<(), FieldError> {
    let err = |why: &str| Err(FieldError::new("public_id", why));
    if public_id.is_empty() {
        return err("must not be empty");
    }
    if public_id.chars().count() > PUBLIC_ID_MAX_CHARS {
        return Err(FieldError::new(
            "public_id",
            format!("must be at most {PUBLIC_ID_MAX_CHARS} characters"),
        ));
    }
    if let Some(c) = public_id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '/')))
    {
        return Err(FieldError::new(
            "public_id",
            format!("may contain only letters, digits, '_', '-' and '/' (found {c:?})"),
        ));
    }
    if public_id.split('/').any(str::is_empty) {
        return err("must not start or end with '/' or contain '//'");
    }
    Ok(())
}

/// The default asset name of a stream's archive.
pub fn default_public_id(stream_id: &crate::StreamId) -> String {
    format!("live_stream_{stream_id}_archive")
}

/// A simulcast destination as an (uri without key, key) pair, for the uniqueness rule.
/// `uri` must already have passed [`check_simulcast`].
pub fn simulcast_destination(uri: &str, stream_key: Option<&str>) -> (String, String) {
    match RtmpUrl::parse(uri, stream_key) {
        Ok(url) => (url.tc_url, url.key),
        // Never stored: compared as given.
        Err(_) => (uri.to_owned(), stream_key.unwrap_or_default().to_owned()),
    }
}

/// A simulcast `uri` (and `stream_key`, which changes what the uri must hold).
pub fn check_simulcast(uri: &str, stream_key: Option<&str>) -> Result<(), FieldError> {
    RtmpUrl::parse(uri, stream_key).map(|_| ())
}

/// An RTMP or RTMPS destination, taken apart in this one place: the API checks a simulcast
/// output's `uri` and `stream_key` with it, and a relay connects and publishes by it.
///
/// `rtmp[s]://host[:port]/app[/instance…][/key]`: the key is the uri's last path segment unless
/// `stream_key` is given, in which case the whole path is the application. The scheme is read
/// without regard to case; an IPv6 host is written in brackets.
#[derive(Clone, PartialEq, Eq)]
pub struct RtmpUrl {
    tls: bool,
    host: String,
    port: u16,
    app: String,
    tc_url: String,
    key: String,
}

impl RtmpUrl {
    /// The port of `rtmp://` when the uri names none.
    pub const DEFAULT_PORT: u16 = 1935;
    /// The port of `rtmps://` when the uri names none.
    pub const DEFAULT_TLS_PORT: u16 = 443;

    /// The destination of a simulcast output.
    pub fn of(target: &crate::SimulcastTarget) -> Result<Self, FieldError> {
        Self::parse(&target.uri, target.stream_key.as_deref())
    }

    /// Takes `uri` (and `stream_key`, when it is given apart) apart, or says what is wrong with
    /// them as the API answers it.
    pub fn parse(uri: &str, stream_key: Option<&str>) -> Result<Self, FieldError> {
        let err = |why: String| Err(FieldError::new("uri", why));
        if uri.len() > URI_MAX_BYTES {
            return err(format!("must be at most {URI_MAX_BYTES} bytes"));
        }
        if uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return err("must not contain spaces or control characters".into());
        }
        let scheme = |name: &str| {
            uri.get(..name.len())
                .is_some_and(|s| s.eq_ignore_ascii_case(name))
                .then(|| uri.get(name.len()..))
                .flatten()
        };
        let (tls, rest) = match (scheme("rtmp://"), scheme("rtmps://")) {
            (Some(rest), _) => (false, rest),
            (None, Some(rest)) => (true, rest),
            (None, None) => return err(format!("must start with rtmp:// or rtmps:// (got {uri:?})")),
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let default_port = if tls {
            Self::DEFAULT_TLS_PORT
        } else {
            Self::DEFAULT_PORT
        };
        let port_of = |port: &str| match port.parse::<u16>().ok().filter(|p| *p != 0) {
            Some(port) => Ok(port),
            None => Err(FieldError::new("uri", format!("has an invalid port {port:?}"))),
        };
        let (host, port) = match authority.strip_prefix('[') {
            // An IPv6 address has colons of its own; a port follows the closing bracket.
            Some(bracketed) => {
                let (v6, after) = bracketed.split_once(']').unwrap_or((bracketed, "?"));
                let port = match after {
                    "" => default_port,
                    after => match after.strip_prefix(':') {
                        Some(port) => port_of(port)?,
                        None => return err(format!("has an invalid IPv6 host {authority:?}")),
                    },
                };
                if v6.parse::<std::net::Ipv6Addr>().is_err() {
                    return err(format!("has an invalid IPv6 host {authority:?}"));
                }
                (v6, port)
            }
            None => {
                let (host, port) = match authority.rsplit_once(':') {
                    Some((host, port)) => (host, port_of(port)?),
                    None => (authority, default_port),
                };
                if host.is_empty() {
                    return err("must name a host".into());
                }
                if host.contains([':', '[', ']']) {
                    return err(format!(
                        "has an invalid host {host:?} (an IPv6 address goes in brackets: [::1])"
                    ));
                }
                (host, port)
            }
        };
        let path = path.split(['?', '#']).next().unwrap_or("");
        let segments = path.split('/').filter(|s| !s.is_empty()).count();
        let no_key = "must end with /<app>/<stream key> when stream_key is not given";
        if stream_key.is_none() && segments < 2 {
            return err(no_key.into());
        }
        if segments < 1 {
            return err("must include the application path, e.g. rtmp://host/live".into());
        }
        let uri = uri.trim_end_matches('/');
        let (tc_url, key) = match stream_key {
            Some(key) => {
                check_text("stream_key", key)?;
                if key.is_empty() {
                    return Err(FieldError::new("stream_key", "must not be empty"));
                }
                (uri, key)
            }
            None => match uri.rsplit_once('/') {
                Some((base, key)) if !key.is_empty() => (base, key),
                _ => return err(no_key.into()),
            },
        };
        // The application is what follows the authority in the uri without the key.
        let scheme_len = if tls { "rtmps://".len() } else { "rtmp://".len() };
        let app = tc_url.get(scheme_len + authority.len() + 1..).unwrap_or_default();
        Ok(Self {
            tls,
            host: host.to_owned(),
            port,
            app: app.to_owned(),
            tc_url: tc_url.to_owned(),
            key: key.to_owned(),
        })
    }

    /// `rtmps://`: the connection is TLS.
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// A name or an address; an IPv6 address without its brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The RTMP application: the path without the key (`live2`, `app/instance`).
    pub fn app(&self) -> &str {
        &self.app
    }

    /// The uri without the key, as `connect` announces it; also what logs and errors show, since
    /// the key is a secret.
    pub fn tc_url(&self) -> &str {
        &self.tc_url
    }

    /// The stream key to publish with.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl fmt::Debug for RtmpUrl {
    // Without the key, which is a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RtmpUrl")
            .field("tc_url", &self.tc_url)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("app", &self.app)
            .finish_non_exhaustive()
    }
}

/// Free text with a size bound and no control characters.
pub fn check_text(field: &str, value: &str) -> Result<(), FieldError> {
    if value.len() > TEXT_MAX_BYTES {
        return Err(FieldError::new(
            field,
            format!("must be at most {TEXT_MAX_BYTES} bytes"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(FieldError::new(field, "must not contain control characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn names() {
        assert!(check_name(&"é".repeat(256)).is_ok());
        assert!(check_name(&"é".repeat(257)).is_err());
    }

    #[test]
    fn public_ids() {
        for ok in ["a", "live/2024/match-1", "A_b-C", &"x".repeat(255)] {
            assert_eq!(check_public_id(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "/a",
            "a/",
            "a//b",
            "../x",
            "a/../b",
            "a.b",
            "a b",
            "é",
            &"x".repeat(256),
        ] {
            assert!(check_public_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn simulcast_uris() {
        assert!(check_simulcast("rtmp://a.rtmp.youtube.com/live2", Some("k")).is_ok());
        assert!(check_simulcast("rtmps://live-api-s.facebook.com:443/rtmp/KEY", None).is_ok());
        assert!(check_simulcast("rtmp://[::1]:1935/live/key", None).is_ok());
        assert!(check_simulcast("RTMP://host/live/key?x=1", None).is_ok());
        for (uri, key) in [
            ("rtmp://[::1/live/key", None),
            ("rtmp://[nope]:1935/live/key", None),
            ("rtmp://::1/live/key", None),
            ("http://host/live/key", None),
            ("rtmp://host/live", None),
            ("rtmp://host", Some("k")),
            ("rtmp:///live/key", None),
            ("rtmp://host:0/live/key", None),
            ("rtmp://host:99999/live/key", None),
            ("rtmp://host/live/ key", None),
            ("rtmp://host/live", Some("")),
        ] {
            assert!(check_simulcast(uri, key).is_err(), "{uri} {key:?}");
        }
    }

    fn url(uri: &str, key: Option<&str>) -> RtmpUrl {
        RtmpUrl::parse(uri, key).unwrap_or_else(|e| panic!("{uri} {key:?}: {e}"))
    }

    /// (tls, host, port, app, tc_url, key)
    fn parts(url: &RtmpUrl) -> (bool, &str, u16, &str, &str, &str) {
        (
            url.tls(),
            url.host(),
            url.port(),
            url.app(),
            url.tc_url(),
            url.key(),
        )
    }

    #[test]
    fn rtmp_urls() {
        let live2 = "rtmp://a.rtmp.youtube.com/live2";
        assert_eq!(
            parts(&url(live2, Some("k-1"))),
            (false, "a.rtmp.youtube.com", 1935, "live2", live2, "k-1")
        );
        assert_eq!(
            parts(&url("rtmps://live-api-s.facebook.com:443/rtmp/KEY", None)),
            (
                true,
                "live-api-s.facebook.com",
                443,
                "rtmp",
                "rtmps://live-api-s.facebook.com:443/rtmp",
                "KEY"
            )
        );
        assert_eq!(
            parts(&url("rtmps://localhost/live/", Some("s"))),
            (true, "localhost", 443, "live", "rtmps://localhost/live", "s")
        );
        // IPv6 in brackets, with and without a port.
        assert_eq!(
            parts(&url("rtmp://[::1]:1936/app/inst/k", None)),
            (false, "::1", 1936, "app/inst", "rtmp://[::1]:1936/app/inst", "k")
        );
        assert_eq!(
            parts(&url("rtmps://[2001:db8::5]/live", Some("k"))),
            (
                true,
                "2001:db8::5",
                443,
                "live",
                "rtmps://[2001:db8::5]/live",
                "k"
            )
        );
        // The scheme in any case; the rest as written.
        assert_eq!(
            parts(&url("RTMPS://Host.Example:8443/Live/Key", None)),
            (
                true,
                "Host.Example",
                8443,
                "Live",
                "RTMPS://Host.Example:8443/Live",
                "Key"
            )
        );
        assert!(!url("rTmP://h/live/k", None).tls());
        // With stream_key given, the whole path is the application; a query stays in the key.
        assert_eq!(
            parts(&url("rtmp://h/live/k", Some("s"))),
            (false, "h", 1935, "live/k", "rtmp://h/live/k", "s")
        );
        assert_eq!(
            url("rtmp://h/live/FB-1?s_bl=1&a=b", None).key(),
            "FB-1?s_bl=1&a=b"
        );
        // The key is a secret: not in logs.
        assert!(!format!("{:?}", url("rtmp://h/live/secret-key", None)).contains("secret-key"));
    }

    #[test]
    fn rtmp_url_refusals_say_why() {
        for (uri, key, message) in [
            (
                "http://host/live/key",
                None,
                "uri must start with rtmp:// or rtmps:// (got \"http://host/live/key\")",
            ),
            (
                "rtmp:/host/live/key",
                None,
                "uri must start with rtmp:// or rtmps:// (got \"rtmp:/host/live/key\")",
            ),
            (
                "rtmp://host/live",
                None,
                "uri must end with /<app>/<stream key> when stream_key is not given",
            ),
            (
                "rtmp://host",
                Some("k"),
                "uri must include the application path, e.g. rtmp://host/live",
            ),
            ("rtmp:///live/key", None, "uri must name a host"),
            ("rtmp://host:0/live/key", None, "uri has an invalid port \"0\""),
            ("rtmp://host:/live/key", None, "uri has an invalid port \"\""),
            (
                "rtmp://[::1]:65536/live/key",
                None,
                "uri has an invalid port \"65536\"",
            ),
            (
                "rtmp://[::1/live/key",
                None,
                "uri has an invalid IPv6 host \"[::1\"",
            ),
            (
                "rtmp://::1/live/key",
                None,
                "uri has an invalid host \":\" (an IPv6 address goes in brackets: [::1])",
            ),
            (
                "rtmp://[::1]x/live/key",
                None,
                "uri has an invalid IPv6 host \"[::1]x\"",
            ),
            ("rtmp://[]/live/key", None, "uri has an invalid IPv6 host \"[]\""),
            (
                "rtmp://host/live/ key",
                None,
                "uri must not contain spaces or control characters",
            ),
            ("rtmp://host/live", Some(""), "stream_key must not be empty"),
            (
                "rtmp://host/live",
                Some("a\u{7}"),
                "stream_key must not contain control characters",
            ),
        ] {
            let error = RtmpUrl::parse(uri, key).map(|u| parts(&u).5.to_owned());
            assert_eq!(
                error.map_err(|e| e.to_string()),
                Err(message.to_owned()),
                "{uri} {key:?}"
            );
        }
    }

    proptest! {
        /// Whatever a request holds, the parser answers without panicking, and what the API accepts
        /// is what a relay can use.
        #[test]
        fn any_uri_parses_or_is_refused(uri in "(?i:rtmps?://)?[a-z0-9:/\\[\\]@?#._-]{0,40}", key in prop::option::of("[a-z0-9?/]{0,8}")) {
            match RtmpUrl::parse(&uri, key.as_deref()) {
                Ok(url) => {
                    prop_assert!(!url.host().is_empty() && !url.key().is_empty() && url.port() != 0);
                    prop_assert!(uri.starts_with(url.tc_url()));
                    prop_assert!(check_simulcast(&uri, key.as_deref()).is_ok());
                }
                Err(_) => prop_assert!(check_simulcast(&uri, key.as_deref()).is_err()),
            }
        }

        /// A uri built from its parts parses back into them, in either form of the key.
        #[test]
        fn parts_round_trip(
            tls in any::<bool>(),
            upper in any::<bool>(),
            host in prop_oneof![
                "[a-z][a-z0-9-]{0,10}(\\.[a-z]{2,5}){0,2}",
                any::<std::net::Ipv4Addr>().prop_map(|ip| ip.to_string()),
                any::<std::net::Ipv6Addr>().prop_map(|ip| format!("[{ip}]")),
            ],
            port in prop::option::of(1u16..),
            app in "[a-zA-Z0-9_-]{1,8}(/[a-zA-Z0-9_-]{1,8}){0,2}",
            key in "[a-zA-Z0-9_-]{1,16}(\\?[a-z]=[0-9])?",
            key_in_path in any::<bool>(),
        ) {
            let scheme = match (tls, upper) {
                (true, true) => "RTMPS",
                (true, false) => "rtmps",
                (false, true) => "Rtmp",
                (false, false) => "rtmp",
            };
            let authority = match port {
                Some(port) => format!("{host}:{port}"),
                None => host.clone(),
            };
            let base = format!("{scheme}://{authority}/{app}");
            let parsed = if key_in_path {
                RtmpUrl::parse(&format!("{base}/{key}"), None)
            } else {
                RtmpUrl::parse(&base, Some(&key))
            };
            let parsed = parsed.map_err(|e| TestCaseError::fail(e.to_string()))?;
            let default = if tls { 443 } else { 1935 };
            prop_assert_eq!(
                parts(&parsed),
                (tls, host.trim_start_matches('[').trim_end_matches(']'), port.unwrap_or(default), &app[..], &base[..], &key[..])
            );
        }
    }

    #[test]
    fn destinations() {
        assert_eq!(
            simulcast_destination("rtmp://h/live/k", None),
            ("rtmp://h/live".to_owned(), "k".to_owned())
        );
        assert_eq!(
            simulcast_destination("rtmp://h/live/", Some("k")),
            ("rtmp://h/live".to_owned(), "k".to_owned())
        );
    }
}
