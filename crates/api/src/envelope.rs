//! The response envelope. Handlers answer [`Data`] or [`ApiError`]; the [`envelope`] middleware
//! gives every response, including the router's own 404/405, a fresh request id (body field
//! `request_id` and header `X-Request-Id`) and the `{"data": …}` / `{"error": {"message": …}}` shape.

use std::time::Instant;

use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use oxcast_core::RegistryError;
use serde::Serialize;

/// Response header carrying the request id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// What a handler answered, kept in the response's extensions until the middleware wraps it.
#[derive(Clone)]
enum Payload {
    /// Serialized JSON of the `data` member.
    Data(String),
    /// The error message.
    Error(String),
    /// A whole body, sent as it is: Cloudinary's Admin API answers without the envelope.
    Bare(String),
}

/// A successful answer: 200 with `data`.
pub struct Data(String);

impl Data {
    /// `value` as the `data` member.
    pub fn new<T: Serialize>(value: &T) -> Result<Data, ApiError> {
        serde_json::to_string(value)
            .map(Data)
            .map_err(|e| ApiError::internal(format!("serializing the response failed: {e}")))
    }

    /// `{"message": "ok"}`, the answer of actions and deletions.
    pub fn ok() -> Data {
        Data(r#"{"message":"ok"}"#.to_owned())
    }
}

impl IntoResponse for Data {
    fn into_response(self) -> Response {
        let mut res = StatusCode::OK.into_response();
        res.extensions_mut().insert(Payload::Data(self.0));
        res
    }
}

/// A successful answer sent without the envelope (still with a request id header): 200 with
/// `value` as the whole body.
pub(crate) struct Bare(String);

impl Bare {
    pub(crate) fn new<T: Serialize>(value: &T) -> Result<Bare, ApiError> {
        serde_json::to_string(value)
            .map(Bare)
            .map_err(|e| ApiError::internal(format!("serializing the response failed: {e}")))
    }
}

impl IntoResponse for Bare {
    fn into_response(self) -> Response {
        let mut res = StatusCode::OK.into_response();
        res.extensions_mut().insert(Payload::Bare(self.0));
        res
    }
}

/// A refused request: a status and a message that names what is wrong.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    /// An error with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// 400: the request is malformed or a field is invalid.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 500: a bug.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// The status this error answers with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The message this error answers with.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = self.status.into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Basic realm="oxcast""#),
            );
        }
        // The rest of an oversized body is never read, so the connection cannot carry another
        // request; saying so keeps clients from reusing it and failing their next request.
        if self.status == StatusCode::PAYLOAD_TOO_LARGE {
            res.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        res.extensions_mut().insert(Payload::Error(self.message));
        res
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        let status = match &e {
            RegistryError::StreamNotFound | RegistryError::OutputNotFound => StatusCode::NOT_FOUND,
            RegistryError::StreamActive | RegistryError::Conflict(_) | RegistryError::Limit(_) => {
                StatusCode::CONFLICT
            }
            RegistryError::Invalid(_) => StatusCode::BAD_REQUEST,
            // The disk or database failed: not a bug in the request, and worth retrying later.
            RegistryError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        let message = match &e {
            RegistryError::Store(e) => format!("storage unavailable: {e}"),
            other => other.to_string(),
        };
        ApiError::new(status, message)
    }
}

/// Wraps every response in the envelope and logs the request.
pub async fn envelope(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = oxcast_core::ids::random_hex128();
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let no_challenge = crate::auth::wants_no_challenge(req.headers());
    let mut res = next.run(req).await;
    let status = res.status();
    let body = match res.extensions_mut().remove::<Payload>() {
        Some(Payload::Data(data)) => format!(r#"{{"request_id":"{request_id}","data":{data}}}"#),
        Some(Payload::Error(message)) => error_body(&request_id, &message),
        Some(Payload::Bare(body)) => body,
        // The router's own answers (no such route, wrong method).
        None => error_body(&request_id, &router_message(&res, &method, &path)),
    };
    if status.is_server_error() {
        tracing::error!(%request_id, %method, %path, status = status.as_u16(), "request failed: {body}");
    } else if path == "/healthz" {
        // Load balancers ask every few seconds; not worth a line each.
        tracing::debug!(%request_id, status = status.as_u16(), "health check");
    } else {
        tracing::info!(%request_id, %method, %path, status = status.as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64, "admin request");
    }
    let headers = res.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.remove(header::CONTENT_LENGTH);
    if no_challenge {
        headers.remove(header::WWW_AUTHENTICATE);
    }
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        headers.insert(REQUEST_ID_HEADER, v);
    }
    let (parts, _) = res.into_parts();
    Response::from_parts(parts, body.into())
}

fn error_body(request_id: &str, message: &str) -> String {
    #[derive(Serialize)]
    struct Message<'a> {
        message: &'a str,
    }
    #[derive(Serialize)]
    struct Envelope<'a> {
        request_id: &'a str,
        error: Message<'a>,
    }
    serde_json::to_string(&Envelope {
        request_id,
        error: Message { message },
    })
    .unwrap_or_else(|_| format!(r#"{{"request_id":"{request_id}","error":{{"message":"error"}}}}"#))
}

fn router_message(res: &Response, method: &Method, path: &str) -> String {
    match res.status() {
        StatusCode::METHOD_NOT_ALLOWED => {
            let allowed = res
                .headers()
                .get(header::ALLOW)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            format!("method {method} is not allowed on {path} (allowed: {allowed})")
        }
        StatusCode::NOT_FOUND => format!("no endpoint at {path}"),
        other => other.canonical_reason().unwrap_or("error").to_lowercase(),
    }
}
