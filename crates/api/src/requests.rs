//! Request bodies: read with a size bound, parsed as a JSON object, and turned field by field into
//! the registry's request types, so that every refusal names the field and says why.
//! Unknown fields are ignored, as the contract says.

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use oxcast_core::model::{NewOutputKind, OutputType, SimulcastTarget};
use oxcast_core::rules::{self, FieldError};
use oxcast_core::{NewOutput, NewStream, OutputPatch, StreamPatch};
use serde_json::{Map, Value};

use crate::envelope::ApiError;

/// Largest accepted request body.
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;

/// A request body that is a JSON object.
pub(crate) struct JsonObject(pub(crate) Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        parse_object(&read_body(req).await?).map(JsonObject)
    }
}

/// The request's body, at most [`MAX_BODY_BYTES`] (413 beyond).
pub(crate) async fn read_body(req: Request) -> Result<bytes::Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than {} KiB", MAX_BODY_BYTES / 1024),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(Body::new(req.into_body()), MAX_BODY_BYTES)
        .await
        .map_err(|e| {
            let inner = e.into_inner();
            if inner.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                too_large()
            } else {
                ApiError::bad_request(format!("reading the request body failed: {inner}"))
            }
        })?;
    Ok(bytes)
}

fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "request body is empty: expected a JSON object",
        ));
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(ApiError::bad_request(format!(
            "request body must be a JSON object, not {}",
            json_type(&other)
        ))),
        Err(e) => Err(ApiError::bad_request(format!(
            "request body is not valid JSON: {e}"
        ))),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ApiError::bad_request(e.to_string())
    }
}

/// Typed access to the members of one JSON object; `prefix` makes nested names like `input.type`.
struct Fields<'a> {
    map: &'a Map<String, Value>,
    prefix: &'static str,
}

impl<'a> Fields<'a> {
    fn new(map: &'a Map<String, Value>) -> Self {
        Fields { map, prefix: "" }
    }

    fn err(&self, name: &str, problem: impl Into<String>) -> FieldError {
        FieldError::new(format!("{}{name}", self.prefix), problem)
    }

    /// Absent, or explicitly null.
    fn is_absent(&self, name: &str) -> bool {
        matches!(self.map.get(name), None | Some(Value::Null))
    }

    /// `None` when absent, `Some(None)` when null, `Some(Some(s))` for a string.
    fn nullable_string(&self, name: &str) -> Result<Option<Option<&'a str>>, FieldError> {
        match self.map.get(name) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(Value::String(s)) => Ok(Some(Some(s))),
            Some(other) => Err(self.err(name, format!("must be a string, not {}", json_type(other)))),
        }
    }

    /// A string; absent and null both give `None`.
    fn string(&self, name: &str) -> Result<Option<&'a str>, FieldError> {
        Ok(self.nullable_string(name)?.flatten())
    }

    /// A string that must be there.
    fn required_string(&self, name: &str, example: &str) -> Result<&'a str, FieldError> {
        self.string(name)?
            .ok_or_else(|| self.err(name, format!("is required, e.g. {example}")))
    }

    /// An integer within `range`; absent and null both give `None`.
    fn integer(&self, name: &str, range: &std::ops::RangeInclusive<u32>) -> Result<Option<u32>, FieldError> {
        let Some(value) = self.map.get(name).filter(|v| !v.is_null()) else {
            return Ok(None);
        };
        // JSON has one number type: 60.0 is an integer, 1.5 and "60" are not.
        let as_integer = match value {
            Value::Number(n) => n
                .as_i64()
                .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
            _ => None,
        };
        as_integer
            .and_then(|i| u32::try_from(i).ok())
            .filter(|v| range.contains(v))
            .map(Some)
            .ok_or_else(|| {
                self.err(
                    name,
                    format!(
                        "must be an integer from {} to {} (got {value})",
                        range.start(),
                        range.end()
                    ),
                )
            })
    }

    /// A member that must be an object.
    fn object(&self, name: &str, prefix: &'static str) -> Result<Option<Fields<'a>>, FieldError> {
        match self.map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(map)) => Ok(Some(Fields { map, prefix })),
            Some(other) => Err(self.err(name, format!("must be an object, not {}", json_type(other)))),
        }
    }

    /// A name: checked, and `None` when absent.
    fn name(&self) -> Result<Option<Option<String>>, FieldError> {
        let name = self.nullable_string("name")?;
        if let Some(Some(n)) = name {
            rules::check_name(n)?;
        }
        Ok(name.map(|n| n.map(str::to_owned)))
    }

    /// Refuses a field that must not be given (null counts as not given).
    fn refuse(&self, name: &str, why: &str) -> Result<(), FieldError> {
        if self.is_absent(name) {
            Ok(())
        } else {
            Err(self.err(name, why))
        }
    }
}

/// `POST /live_streams`.
pub(crate) fn new_stream(body: &Map<String, Value>) -> Result<NewStream, ApiError> {
    let f = Fields::new(body);
    let input = f
        .object("input", "input.")?
        .ok_or_else(|| FieldError::new("input", r#"is required, e.g. {"input": {"type": "rtmp"}}"#))?;
    let input_type = input.required_string("type", r#""rtmp""#)?;
    if input_type != "rtmp" {
        return Err(input
            .err("type", format!(r#"must be "rtmp" (got {input_type:?})"#))
            .into());
    }
    Ok(NewStream {
        name: f.name()?.flatten(),
        idle_timeout_sec: f.integer("idle_timeout_sec", &rules::IDLE_TIMEOUT_SEC)?,
        max_runtime_sec: f.integer("max_runtime_sec", &rules::MAX_RUNTIME_SEC)?,
    })
}

/// `PATCH /live_streams/{id}`.
pub(crate) fn stream_patch(body: &Map<String, Value>) -> Result<StreamPatch, ApiError> {
    let f = Fields::new(body);
    f.refuse(
        "input",
        "cannot be changed after a stream is created; create a new stream instead",
    )?;
    Ok(StreamPatch {
        name: f.name()?,
        idle_timeout_sec: f.integer("idle_timeout_sec", &rules::IDLE_TIMEOUT_SEC)?,
        max_runtime_sec: f.integer("max_runtime_sec", &rules::MAX_RUNTIME_SEC)?,
    })
}

/// `POST /live_streams/{id}/outputs`.
pub(crate) fn new_output(body: &Map<String, Value>) -> Result<NewOutput, ApiError> {
    let f = Fields::new(body);
    let type_name = f.required_string("type", r#""simulcast""#)?;
    let output_type = OutputType::parse(type_name).ok_or_else(|| {
        f.err(
            "type",
            format!(r#"must be one of "hls", "archive", "simulcast" (got {type_name:?})"#),
        )
    })?;
    let not_for = format!("does not apply to {type_name} outputs");
    let kind = match output_type {
        OutputType::Hls => {
            f.refuse(
                "uri",
                "of an hls output is its playback URL, generated by the server; it cannot be set",
            )?;
            for field in ["stream_key", "vendor", "public_id"] {
                f.refuse(field, &not_for)?;
            }
            NewOutputKind::Hls
        }
        OutputType::Archive => {
            for field in ["uri", "stream_key", "vendor"] {
                f.refuse(field, &not_for)?;
            }
            let public_id = f.string("public_id")?;
            if let Some(p) = public_id {
                rules::check_public_id(p)?;
            }
            NewOutputKind::Archive {
                public_id: public_id.map(str::to_owned),
            }
        }
        OutputType::Simulcast => {
            f.refuse("public_id", &not_for)?;
            let uri = f.required_string("uri", r#""rtmp://a.rtmp.youtube.com/live2""#)?;
            let stream_key = f.string("stream_key")?;
            rules::check_simulcast(uri, stream_key)?;
            let vendor = f.string("vendor")?;
            if let Some(v) = vendor {
                rules::check_text("vendor", v)?;
            }
            NewOutputKind::Simulcast(SimulcastTarget {
                uri: uri.to_owned(),
                stream_key: stream_key.map(str::to_owned),
                vendor: vendor.map(str::to_owned),
            })
        }
    };
    Ok(NewOutput {
        name: f.name()?.flatten(),
        kind,
    })
}

/// `PATCH /live_streams/{id}/outputs/{oid}`. Whether a field fits the output's type is the
/// registry's to check, since only it knows the type.
pub(crate) fn output_patch(body: &Map<String, Value>) -> Result<OutputPatch, ApiError> {
    let f = Fields::new(body);
    f.refuse("type", "cannot be changed; delete the output and create another")?;
    f.refuse(
        "vendor",
        "cannot be changed; delete the output and create another",
    )?;
    let uri = match f.nullable_string("uri")? {
        Some(None) => return Err(f.err("uri", "cannot be null").into()),
        other => other.flatten(),
    };
    let public_id = match f.nullable_string("public_id")? {
        Some(None) => return Err(f.err("public_id", "cannot be null").into()),
        other => other.flatten(),
    };
    if let Some(p) = public_id {
        rules::check_public_id(p)?;
    }
    let stream_key = f.nullable_string("stream_key")?;
    if let Some(Some(k)) = stream_key {
        rules::check_text("stream_key", k)?;
        if k.is_empty() {
            return Err(f
                .err(
                    "stream_key",
                    "must not be empty; use null to take the key from the uri",
                )
                .into());
        }
    }
    Ok(OutputPatch {
        name: f.name()?,
        uri: uri.map(str::to_owned),
        stream_key: stream_key.map(|k| k.map(str::to_owned)),
        public_id: public_id.map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    fn message(r: Result<impl std::fmt::Debug, ApiError>) -> String {
        let e = r.unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        e.message().to_owned()
    }

    #[test]
    fn bodies_must_be_json_objects() {
        assert!(message(parse_object(b"")).contains("empty"));
        assert!(message(parse_object(b"{")).contains("not valid JSON"));
        assert!(message(parse_object(b"[1]")).contains("not an array"));
        assert!(message(parse_object(b"\"x\"")).contains("not a string"));
        assert_eq!(parse_object(b" {\"a\":1} ").unwrap().len(), 1);
    }

    #[test]
    fn stream_creation() {
        let s = new_stream(&obj(
            json!({"input": {"type": "rtmp"}, "name": "n", "idle_timeout_sec": 5, "x": 1}),
        ))
        .unwrap();
        assert_eq!(
            (s.name.as_deref(), s.idle_timeout_sec, s.max_runtime_sec),
            (Some("n"), Some(5), None)
        );
        let float_integer = new_stream(&obj(json!({"input": {"type": "rtmp"}, "max_runtime_sec": 60.0})));
        assert_eq!(float_integer.unwrap().max_runtime_sec, Some(60));

        for (body, wanted) in [
            (json!({}), "input is required"),
            (json!({"input": "rtmp"}), "input must be an object"),
            (json!({"input": {}}), "input.type is required"),
            (
                json!({"input": {"type": "srt"}}),
                r#"input.type must be "rtmp" (got "srt")"#,
            ),
            (json!({"input": {"type": 1}}), "input.type must be a string"),
            (
                json!({"input": {"type": "rtmp"}, "idle_timeout_sec": 0}),
                "idle_timeout_sec must be an integer from 1 to 86400 (got 0)",
            ),
            (
                json!({"input": {"type": "rtmp"}, "idle_timeout_sec": -5}),
                "idle_timeout_sec must be",
            ),
            (
                json!({"input": {"type": "rtmp"}, "idle_timeout_sec": 1.5}),
                "idle_timeout_sec must be",
            ),
            (
                json!({"input": {"type": "rtmp"}, "idle_timeout_sec": "10"}),
                "idle_timeout_sec must be",
            ),
            (
                json!({"input": {"type": "rtmp"}, "max_runtime_sec": 604801}),
                "max_runtime_sec must be an integer from 1 to 604800",
            ),
            (
                json!({"input": {"type": "rtmp"}, "max_runtime_sec": 1e300}),
                "max_runtime_sec must be",
            ),
            (
                json!({"input": {"type": "rtmp"}, "max_runtime_sec": 18446744073709551615u64}),
                "max_runtime_sec must be",
            ),
            (
                json!({"input": {"type": "rtmp"}, "name": 5}),
                "name must be a string",
            ),
            (
                json!({"input": {"type": "rtmp"}, "name": "x".repeat(257)}),
                "name must be at most 256",
            ),
        ] {
            let m = message(new_stream(&obj(body.clone())));
            assert!(m.contains(wanted), "{body}: {m}");
        }
    }

    #[test]
    fn stream_patches() {
        let p = stream_patch(&obj(json!({"name": null, "idle_timeout_sec": 9}))).unwrap();
        assert_eq!(
            p,
            StreamPatch {
                name: Some(None),
                idle_timeout_sec: Some(9),
                max_runtime_sec: None
            }
        );
        assert!(
            message(stream_patch(&obj(json!({"input": {"type": "rtmp"}}))))
                .contains("input cannot be changed")
        );
    }

    #[test]
    fn output_creation() {
        let o = new_output(&obj(
            json!({"type": "simulcast", "uri": "rtmp://h/live", "stream_key": "k", "vendor": "youtube"}),
        ))
        .unwrap();
        assert!(matches!(o.kind, NewOutputKind::Simulcast(ref t) if t.vendor.as_deref() == Some("youtube")));
        let a = new_output(&obj(json!({"type": "archive", "public_id": "shows/one"}))).unwrap();
        assert_eq!(
            a.kind,
            NewOutputKind::Archive {
                public_id: Some("shows/one".into())
            }
        );

        for (body, wanted) in [
            (json!({}), "type is required"),
            (
                json!({"type": "dash"}),
                r#"type must be one of "hls", "archive", "simulcast" (got "dash")"#,
            ),
            (json!({"type": "hls", "uri": "http://x"}), "uri of an hls output"),
            (
                json!({"type": "hls", "public_id": "x"}),
                "public_id does not apply to hls outputs",
            ),
            (
                json!({"type": "archive", "public_id": "../x"}),
                "public_id may contain only",
            ),
            (
                json!({"type": "archive", "uri": "rtmp://h/a/b"}),
                "uri does not apply to archive outputs",
            ),
            (json!({"type": "simulcast"}), "uri is required"),
            (
                json!({"type": "simulcast", "uri": "http://h/a/b"}),
                "uri must start with rtmp:// or rtmps://",
            ),
            (
                json!({"type": "simulcast", "uri": "rtmp://h/live"}),
                "stream_key is not given",
            ),
            (
                json!({"type": "simulcast", "uri": "rtmp://h/live/k", "public_id": "p"}),
                "public_id does not apply",
            ),
        ] {
            let m = message(new_output(&obj(body.clone())));
            assert!(m.contains(wanted), "{body}: {m}");
        }
    }

    #[test]
    fn output_patches() {
        let p = output_patch(&obj(json!({"stream_key": null, "uri": "rtmp://h/a/k"}))).unwrap();
        assert_eq!(p.stream_key, Some(None));
        for (body, wanted) in [
            (json!({"type": "hls"}), "type cannot be changed"),
            (json!({"vendor": "x"}), "vendor cannot be changed"),
            (json!({"uri": null}), "uri cannot be null"),
            (json!({"uri": 3}), "uri must be a string"),
            (json!({"public_id": "a//b"}), "public_id must not"),
            (json!({"stream_key": ""}), "stream_key must not be empty"),
        ] {
            let m = message(output_patch(&obj(body.clone())));
            assert!(m.contains(wanted), "{body}: {m}");
        }
    }

    fn any_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            prop_oneof![
                Just("rtmp".to_owned()),
                Just("simulcast".to_owned()),
                Just("rtmp://h/a/k".to_owned()),
                ".*"
            ]
            .prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            let key = prop_oneof![
                Just("input".to_owned()),
                Just("type".to_owned()),
                Just("name".to_owned()),
                Just("uri".to_owned()),
                Just("stream_key".to_owned()),
                Just("public_id".to_owned()),
                Just("idle_timeout_sec".to_owned()),
                Just("max_runtime_sec".to_owned()),
                ".{0,8}",
            ];
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(key, inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// Whatever JSON arrives, the parsers answer (Ok or a 400) without panicking.
        #[test]
        fn any_json_gets_an_answer(v in any_json()) {
            let map = match v { Value::Object(m) => m, other => Map::from_iter([("input".to_owned(), other)]) };
            let errors = [new_stream(&map).err(), stream_patch(&map).err(), new_output(&map).err(), output_patch(&map).err()];
            for e in errors.into_iter().flatten() {
                proptest::prop_assert_eq!(e.status(), StatusCode::BAD_REQUEST);
            }
        }

        #[test]
        fn any_bytes_get_an_answer(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = parse_object(&bytes);
        }
    }
}
