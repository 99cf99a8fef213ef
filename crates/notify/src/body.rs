//! What a receiver gets: the JSON body of an event, and its signature.

use hmac::{Hmac, KeyInit, Mac};
use oxcast_core::model::archive_uri;
use oxcast_core::notify::{Event, Notice};
use serde_json::{Map, Value, json};
use sha2::Sha256;

/// Where recordings are served, for `archive.ready`'s `uri`.
#[derive(Clone, Debug)]
pub struct Links {
    /// Base of delivery URLs, e.g. `http://localhost:8080` (no trailing slash).
    pub public_http_url: String,
    pub cloud_name: String,
}

/// `{id, event, created_at, data}`, as sent (and signed) at every attempt.
pub(crate) fn render(id: &str, notice: &Notice, links: &Links) -> String {
    let data = match &notice.event {
        Event::StreamActive { stream_id, name } => stream(stream_id.as_str(), name.as_deref()),
        Event::StreamIdle {
            stream_id,
            name,
            reason,
        } => {
            let mut data = stream(stream_id.as_str(), name.as_deref());
            data.insert("reason".into(), reason.as_str().into());
            data
        }
        Event::ArchiveReady {
            stream_id,
            public_id,
            version,
            duration_ms,
            bytes,
        } => object(json!({
            "stream_id": stream_id.as_str(),
            "public_id": public_id,
            "version": version,
            "uri": archive_uri(&links.public_http_url, &links.cloud_name, public_id, *version),
            "duration": *duration_ms as f64 / 1000.0,
            "bytes": bytes,
        })),
        Event::SimulcastFailed {
            stream_id,
            output_id,
            destination,
            last_error,
        } => object(json!({
            "stream_id": stream_id.as_str(),
            "output_id": output_id.as_str(),
            "destination": destination,
            "last_error": last_error,
        })),
        Event::SimulcastRecovered {
            stream_id,
            output_id,
            destination,
        } => object(json!({
            "stream_id": stream_id.as_str(),
            "output_id": output_id.as_str(),
            "destination": destination,
        })),
    };
    json!({
        "id": id,
        "event": notice.event.name(),
        "created_at": notice.at,
        "data": data,
    })
    .to_string()
}

/// A stream's id, and its name when it has one (omitted otherwise, as in the API).
fn stream(id: &str, name: Option<&str>) -> Map<String, Value> {
    let mut data = Map::new();
    data.insert("stream_id".into(), id.into());
    if let Some(name) = name {
        data.insert("name".into(), name.into());
    }
    data
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// `sha256=` and the lowercase hex HMAC-SHA256, keyed with `secret`, of `timestamp.body`.
pub fn signature(secret: &str, timestamp: i64, body: &str) -> String {
    // HMAC takes a key of any length.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in digest {
        use std::fmt::Write as _;
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use oxcast_core::{IdleReason, StreamId};

    use super::*;

    #[test]
    fn bodies() {
        let links = Links {
            public_http_url: "http://h:8080".into(),
            cloud_name: "local".into(),
        };
        let stream_id = StreamId::parse("0bd7f11c043da975e2a8ad9ebae0b6ec").unwrap();
        let idle = Notice {
            event: Event::StreamIdle {
                stream_id: stream_id.clone(),
                name: None,
                reason: IdleReason::PublisherLeft,
            },
            at: 1_700_000_000_123,
        };
        let body: Value = serde_json::from_str(&render("e1", &idle, &links)).unwrap();
        assert_eq!(
            body,
            json!({"id": "e1", "event": "live_stream.idle", "created_at": 1_700_000_000_123_i64,
                   "data": {"stream_id": stream_id.as_str(), "reason": "publisher_left"}})
        );
        let ready = Notice {
            event: Event::ArchiveReady {
                stream_id,
                public_id: "shows/a".into(),
                version: 1_700_000_000,
                duration_ms: 12_500,
                bytes: 99,
            },
            at: 1,
        };
        let body: Value = serde_json::from_str(&render("e2", &ready, &links)).unwrap();
        assert_eq!(
            body["data"]["uri"],
            "http://h:8080/local/video/upload/v1700000000/shows/a.mp4"
        );
        assert_eq!(body["data"]["duration"], 12.5);
    }

    /// Checked with `printf '%s' '1700000000.{}' | openssl dgst -sha256 -hmac whsec`.
    #[test]
    fn signatures() {
        assert_eq!(
            signature("whsec", 1_700_000_000, "{}"),
            "sha256=7d44587dddbaf4c7f70fef20f48cd594834ffea1641e3ac227b84408298738af"
        );
    }
}
