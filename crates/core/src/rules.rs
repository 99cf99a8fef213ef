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

/// A simulcast destination as an (uri without key, key) pair, for the uniqueness rule and the relay.
/// `uri` must already have passed [`check_simulcast`].
pub fn simulcast_destination(uri: &str, stream_key: Option<&str>) -> (String, String) {
    let uri = uri.trim_end_matches('/');
    match stream_key {
        Some(key) => (uri.to_owned(), key.to_owned()),
        None => match uri.rsplit_once('/') {
            Some((base, key)) => (base.to_owned(), key.to_owned()),
            None => (uri.to_owned(), String::new()),
        },
    }
}

/// A simulcast `uri` (and `stream_key`, which changes what the uri must hold).
pub fn check_simulcast(uri: &str, stream_key: Option<&str>) -> Result<(), FieldError> {
    let err = |why: String| Err(FieldError::new("uri", why));
    if uri.len() > URI_MAX_BYTES {
        return err(format!("must be at most {URI_MAX_BYTES} bytes"));
    }
    if uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return err("must not contain spaces or control characters".into());
    }
    let lower = uri.to_ascii_lowercase();
    let Some(rest) = lower
        .strip_prefix("rtmp://")
        .or_else(|| lower.strip_prefix("rtmps://"))
    else {
        return err(format!("must start with rtmp:// or rtmps:// (got {uri:?})"));
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host = match authority.rsplit_once(':') {
        // `[::1]` has colons of its own; a port follows the closing bracket.
        Some((host, port)) if !authority.ends_with(']') => {
            if port.parse::<u16>().ok().filter(|p| *p != 0).is_none() {
                return err(format!("has an invalid port {port:?}"));
            }
            host
        }
        _ => authority,
    };
    if host.is_empty() {
        return err("must name a host".into());
    }
    let path = path.split(['?', '#']).next().unwrap_or("");
    let segments = path.split('/').filter(|s| !s.is_empty()).count();
    if stream_key.is_none() && segments < 2 {
        return err("must end with /<app>/<stream key> when stream_key is not given".into());
    }
    if segments < 1 {
        return err("must include the application path, e.g. rtmp://host/live".into());
    }
    if let Some(key) = stream_key {
        check_text("stream_key", key)?;
        if key.is_empty() {
            return Err(FieldError::new("stream_key", "must not be empty"));
        }
    }
    Ok(())
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
