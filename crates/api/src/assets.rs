//! The part of Cloudinary's Admin API that manages recordings as video assets, so that code
//! written with Cloudinary's SDKs lists and deletes them with only its base URL changed:
//!
//! - `GET /v1_1/{cloud}/resources/video[/upload]` with `prefix`, `max_results` (1 to 500,
//!   default 10) and `next_cursor`: `{resources: [...], next_cursor?}`; or with `public_ids[]`
//!   (at most 100), those that exist.
//! - `DELETE /v1_1/{cloud}/resources/video/upload` with `public_ids[]` (at most 100), in the query
//!   string (older Python SDKs), a form body (the Node SDK) or a JSON body (newer Python SDKs):
//!   `{deleted: {id: "deleted" | "not_found"}, deleted_counts, partial: false}`.
//!
//! As in Cloudinary, a resource is a public_id, shown with its newest recording (its other
//! recordings are its older versions: `GET …/live_streams/{id}/archives` lists them), and a
//! deletion removes every version. Resources come in public_id order, which is how Cloudinary
//! sorts a listing with a prefix; the cursor is the last public_id of the page, so a listing
//! continued while recordings come and go neither repeats nor skips a public_id that was there
//! throughout. Answers have Cloudinary's shapes, without the envelope; errors keep it, with the
//! `error.message` the SDKs read.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::{RawQuery, Request, State};
use axum::http::header;
use axum::middleware;
use axum::routing::get;
use base64::Engine as _;
use oxcast_core::Archive;
use oxcast_core::clock::utc_iso8601;
use serde::Serialize;
use serde_json::Value;

use crate::AppState;
use crate::envelope::{ApiError, Bare};
use crate::requests::read_body;
use crate::views::asset_url;

/// Resources per page when the request does not say (Cloudinary's default).
const DEFAULT_MAX_RESULTS: usize = 10;
/// Most resources per page (Cloudinary's maximum).
const MAX_RESULTS: usize = 500;
/// Most public IDs per deletion or lookup (Cloudinary's maximum).
const MAX_PUBLIC_IDS: usize = 100;

pub(crate) fn routes(state: AppState) -> Router {
    Router::new()
        // The SDKs leave the delivery type out of a listing unless told it.
        .route("/v1_1/{cloud_name}/resources/video", get(list))
        .route(
            "/v1_1/{cloud_name}/resources/video/upload",
            get(list).delete(delete),
        )
        // As for the admin API: credentials first, then the cloud name.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            crate::admin::check_cloud_name,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            crate::auth::require_credentials,
        ))
        .with_state(state)
}

/// A resource as Cloudinary's Admin API lists it.
#[derive(Serialize)]
struct Resource<'a> {
    public_id: &'a str,
    format: &'static str,
    version: i64,
    resource_type: &'static str,
    r#type: &'static str,
    /// When the recording started.
    created_at: String,
    bytes: i64,
    duration: f64,
    url: String,
    /// The same address: Oxcast serves one scheme, that of `public.http_url`.
    secure_url: String,
}

#[derive(Serialize)]
struct Resources<'a> {
    resources: Vec<Resource<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

async fn list(State(s): State<AppState>, RawQuery(query): RawQuery) -> Result<Bare, ApiError> {
    let mut prefix = String::new();
    let mut max_results = DEFAULT_MAX_RESULTS;
    let mut after = None;
    let mut wanted = Vec::new();
    for (name, value) in form_pairs(query.as_deref().unwrap_or_default().as_bytes(), "query string")? {
        match name.as_str() {
            "prefix" => prefix = value,
            "max_results" => {
                max_results = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_RESULTS).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "max_results must be an integer from 1 to {MAX_RESULTS}, not {value:?}"
                        ))
                    })?;
            }
            "next_cursor" if !value.is_empty() => after = Some(Cursor::decode(&value)?),
            // The SDKs' `resources_by_ids` asks the same path with the public IDs it wants.
            "public_ids[]" | "public_ids" => add_public_id(&mut wanted, value)?,
            // Filters Oxcast cannot apply: answering without them would list what was not asked.
            "start_at" => {
                return Err(ApiError::bad_request(
                    "start_at is not supported: list by prefix and next_cursor",
                ));
            }
            // Cloudinary ignores what it does not know, and so does this: `direction` (created_at
            // order, which Cloudinary too ignores with a prefix), `tags`, `context`, ….
            _ => {}
        }
    }
    if !wanted.is_empty() {
        return by_ids(&s, &wanted).await;
    }
    let mut page = s
        .registry
        .newest_assets(&prefix, after.as_ref().map(|c| c.0.as_str()), max_results + 1)
        .await?;
    let next_cursor = (page.len() > max_results).then(|| {
        page.truncate(max_results);
        page.last().map(|a| Cursor(a.public_id.clone()).encode())
    });
    let resources = page.iter().map(|a| resource(a, &s)).collect();
    Bare::new(&Resources {
        resources,
        next_cursor: next_cursor.flatten(),
    })
}

/// The resources of these public IDs that exist, in the order asked.
async fn by_ids(s: &AppState, public_ids: &[String]) -> Result<Bare, ApiError> {
    let mut found = Vec::new();
    for public_id in public_ids {
        let newest = s.registry.archive_file(public_id, None).await;
        if let Some((archive, _)) = newest.map_err(oxcast_core::RegistryError::from)? {
            found.push(archive);
        }
    }
    let resources = found.iter().map(|a| resource(a, s)).collect();
    Bare::new(&Resources {
        resources,
        next_cursor: None,
    })
}

/// Adds a public ID asked for, once; more than [`MAX_PUBLIC_IDS`] is a 400. Checked as they come,
/// so the duplicate check stays small.
fn add_public_id(public_ids: &mut Vec<String>, value: String) -> Result<(), ApiError> {
    if public_ids.contains(&value) {
        return Ok(());
    }
    if public_ids.len() == MAX_PUBLIC_IDS {
        return Err(ApiError::bad_request(format!(
            "public_ids[] holds more than {MAX_PUBLIC_IDS} public IDs; at most {MAX_PUBLIC_IDS} per request"
        )));
    }
    public_ids.push(value);
    Ok(())
}

fn resource<'a>(archive: &'a Archive, s: &AppState) -> Resource<'a> {
    let url = asset_url(&s.config, &archive.public_id, archive.version);
    Resource {
        public_id: &archive.public_id,
        format: "mp4",
        version: archive.version,
        resource_type: "video",
        r#type: "upload",
        created_at: utc_iso8601(archive.created_at.div_euclid(1000)),
        bytes: archive.bytes,
        duration: archive.duration_ms as f64 / 1000.0,
        secure_url: url.clone(),
        url,
    }
}

/// Where a listing goes on: after this public_id. Opaque to clients (base64 of a tagged form),
/// so that its form can change without breaking their code.
#[derive(Debug, PartialEq, Eq)]
struct Cursor(String);

const CURSOR_TAG: &str = "1:";

impl Cursor {
    fn encode(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{CURSOR_TAG}{}", self.0))
    }

    fn decode(text: &str) -> Result<Cursor, ApiError> {
        let bad = || {
            ApiError::bad_request(format!(
                "next_cursor {text:?} is not one this server gave: pass next_cursor from a listing's answer as it is"
            ))
        };
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| bad())?;
        let text = String::from_utf8(bytes).map_err(|_| bad())?;
        let public_id = text.strip_prefix(CURSOR_TAG).ok_or_else(bad)?;
        oxcast_core::rules::check_public_id(public_id).map_err(|_| bad())?;
        Ok(Cursor(public_id.to_owned()))
    }
}

#[derive(Serialize)]
struct Deleted {
    deleted: BTreeMap<String, &'static str>,
    deleted_counts: BTreeMap<String, Counts>,
    partial: bool,
}

#[derive(Serialize)]
struct Counts {
    original: usize,
    derived: usize,
}

async fn delete(State(s): State<AppState>, req: Request) -> Result<Bare, ApiError> {
    let mut params = form_pairs(req.uri().query().unwrap_or_default().as_bytes(), "query string")?;
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    let body = read_body(req).await?;
    if body.iter().any(|b| !b.is_ascii_whitespace()) {
        if is_json {
            params.extend(json_pairs(&body)?);
        } else {
            params.extend(form_pairs(&body, "form body")?);
        }
    }
    let mut public_ids: Vec<String> = Vec::new();
    let mut other = None;
    for (name, value) in params {
        match name.as_str() {
            "public_ids[]" | "public_ids" => add_public_id(&mut public_ids, value)?,
            "keep_original" if matches!(value.as_str(), "true" | "1") => {
                return Err(ApiError::bad_request(
                    "keep_original=true deletes derived assets only, and Oxcast keeps none: nothing to delete",
                ));
            }
            "prefix" | "all" | "tag" => other = Some(name),
            _ => {}
        }
    }
    if public_ids.is_empty() {
        let why = match other {
            Some(name) => format!("deleting by {name} is not supported: "),
            None => String::new(),
        };
        return Err(ApiError::bad_request(format!(
            "{why}public_ids[] is required: the public IDs to delete (at most {MAX_PUBLIC_IDS})"
        )));
    }
    let counts = s.registry.delete_assets(&public_ids).await?;
    let mut answer = Deleted {
        deleted: BTreeMap::new(),
        deleted_counts: BTreeMap::new(),
        partial: false,
    };
    for (id, count) in public_ids.into_iter().zip(counts) {
        answer
            .deleted
            .insert(id.clone(), if count > 0 { "deleted" } else { "not_found" });
        answer.deleted_counts.insert(
            id,
            Counts {
                original: count,
                derived: 0,
            },
        );
    }
    Bare::new(&answer)
}

/// `name=value&…` pairs, repeated names kept.
fn form_pairs(text: &[u8], what: &str) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_bytes(text)
        .map_err(|e| ApiError::bad_request(format!("the {what} is malformed: {e}")))
}

/// The members of a JSON object body as name/value pairs: a string as one, an array of strings
/// as one each (so `public_ids` may be either); other members are left out.
fn json_pairs(body: &[u8]) -> Result<Vec<(String, String)>, ApiError> {
    let object = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => object,
        Ok(_) => return Err(ApiError::bad_request("request body must be a JSON object")),
        Err(e) => {
            return Err(ApiError::bad_request(format!(
                "request body is not valid JSON: {e}"
            )));
        }
    };
    let mut pairs = Vec::new();
    for (name, value) in object {
        match value {
            Value::String(s) => pairs.push((name, s)),
            Value::Bool(b) => pairs.push((name, b.to_string())),
            Value::Array(items) => {
                for item in items {
                    let Value::String(s) = item else {
                        return Err(ApiError::bad_request(format!(
                            "{name} must hold strings, not {item}"
                        )));
                    };
                    pairs.push((name.clone(), s));
                }
            }
            _ => {}
        }
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_a_400() {
        for id in [
            "a",
            "live_stream_0bd7f11c043da975e2a8ad9ebae0b6ec_archive",
            "shows/2026/x-y",
        ] {
            let cursor = Cursor(id.to_owned());
            let text = cursor.encode();
            assert!(
                text.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{text}"
            );
            assert_eq!(Cursor::decode(&text).unwrap(), cursor);
        }
        let encode = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        for bad in [
            "!!!".to_owned(),
            "a".to_owned(),
            "MTph=".to_owned(),
            encode("a"),
            encode("1:"),
            encode("2:a"),
            encode("1:../x"),
            encode("1:a b"),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([b'1', b':', 0xff, 0xfe]),
            "x".repeat(10_000),
        ] {
            let e = Cursor::decode(&bad).unwrap_err();
            assert_eq!(e.status(), StatusCode::BAD_REQUEST);
            assert!(e.message().starts_with("next_cursor"), "{}", e.message());
        }
    }

    proptest::proptest! {
        #[test]
        fn any_cursor_text_decodes_or_is_a_400(text in ".{0,300}") {
            if let Err(e) = Cursor::decode(&text) {
                proptest::prop_assert_eq!(e.status(), StatusCode::BAD_REQUEST);
            }
        }

        #[test]
        fn any_public_id_survives_its_cursor(id in "[A-Za-z0-9_-]{1,20}(/[A-Za-z0-9_-]{1,20}){0,3}") {
            let cursor = Cursor(id);
            proptest::prop_assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), cursor);
        }
    }

    #[test]
    fn public_ids_come_from_json_strings_or_arrays() {
        let pairs = json_pairs(br#"{"public_ids": ["a", "b"], "invalidate": true, "n": 1}"#).unwrap();
        let names: Vec<_> = pairs.iter().map(|(n, v)| format!("{n}={v}")).collect();
        assert_eq!(names, ["invalidate=true", "public_ids=a", "public_ids=b"]);
        assert_eq!(
            json_pairs(br#"{"public_ids": "a"}"#).unwrap(),
            [("public_ids".to_owned(), "a".to_owned())]
        );
        for bad in [&br#"{"public_ids": [1]}"#[..], b"[]", b"{"] {
            assert_eq!(json_pairs(bad).unwrap_err().status(), StatusCode::BAD_REQUEST);
        }
        let form = form_pairs(b"public_ids%5B%5D=a&public_ids%5B%5D=b%2Fc", "form body").unwrap();
        assert_eq!(
            form,
            [
                ("public_ids[]".to_owned(), "a".to_owned()),
                ("public_ids[]".to_owned(), "b/c".to_owned())
            ]
        );
    }
}
