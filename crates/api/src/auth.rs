//! HTTP Basic authentication of admin requests against the configured `api_key:api_secret`.

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

use crate::AppState;
use crate::envelope::ApiError;

/// The admin credentials.
#[derive(Clone)]
pub struct Credentials {
    /// The Basic auth user name.
    pub key: String,
    /// The Basic auth password.
    pub secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// Checks `Authorization` headers against the configured pair, which it keeps as SHA-256 digests.
///
/// The pair given in a request is hashed too and the digests are compared in constant time:
/// comparing the raw bytes would return early on a length mismatch (`ct_eq` on slices of
/// different lengths does), telling a client how long the key and the secret are.
pub(crate) struct Verifier {
    key: [u8; 32],
    secret: [u8; 32],
}

fn digest(part: &[u8]) -> [u8; 32] {
    Sha256::digest(part).into()
}

impl Verifier {
    pub(crate) fn new(credentials: &Credentials) -> Self {
        Verifier {
            key: digest(credentials.key.as_bytes()),
            secret: digest(credentials.secret.as_bytes()),
        }
    }

    /// Checks an `Authorization` header value.
    pub(crate) fn check(&self, authorization: Option<&[u8]>) -> Result<(), ApiError> {
        let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, m);
        let Some(value) = authorization else {
            return Err(unauthorized(
                "missing credentials: use HTTP Basic auth with api_key:api_secret",
            ));
        };
        let malformed =
            || unauthorized("malformed Authorization header: expected Basic base64(api_key:api_secret)");
        let value = std::str::from_utf8(value).map_err(|_| malformed())?.trim();
        let (scheme, encoded) = value.split_once(' ').ok_or_else(malformed)?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(malformed());
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| malformed())?;
        let colon = decoded.iter().position(|b| *b == b':').ok_or_else(malformed)?;
        let (key, secret) = decoded.split_at(colon);
        let secret = secret.get(1..).unwrap_or_default();
        // Both compared in full, so timing reveals neither which part nor how much was right.
        let ok = digest(key).ct_eq(&self.key) & digest(secret).ct_eq(&self.secret);
        if bool::from(ok) {
            Ok(())
        } else {
            Err(unauthorized("invalid api_key or api_secret"))
        }
    }
}

/// Whether a request asks for its 401 without `WWW-Authenticate`: browsers answer that header with
/// a sign-in dialog of their own, even to `fetch()`, so the dashboard (which has its own form)
/// marks its requests `X-Requested-With: XMLHttpRequest`. Other clients get the challenge.
pub(crate) fn wants_no_challenge(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get("x-requested-with")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"XMLHttpRequest"))
}

/// Middleware: admin routes answer 401 unless the request carries the credentials.
pub(crate) async fn require_credentials(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let authorization = req.headers().get(header::AUTHORIZATION).map(|v| v.as_bytes());
    match state.verifier.check(authorization) {
        Ok(()) => next.run(req).await,
        Err(e) => {
            metrics::counter!("oxcast_refused_requests_total", "reason" => "unauthorized").increment(1);
            e.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(s: &str) -> Vec<u8> {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(s)).into_bytes()
    }

    #[test]
    fn accepts_only_the_exact_pair() {
        let c = Verifier::new(&Credentials {
            key: "123".into(),
            secret: "s:cr3t".into(),
        });
        assert!(c.check(Some(&basic("123:s:cr3t"))).is_ok());
        assert!(
            c.check(Some(b"basic MTIzOnM6Y3IzdA==")).is_ok(),
            "scheme is case-insensitive"
        );
        for bad in ["123:s:cr3", "123:s:cr3tt", "12:s:cr3t", ":", "", "123", "123:"] {
            let e = c.check(Some(&basic(bad))).unwrap_err();
            assert_eq!(e.status(), StatusCode::UNAUTHORIZED, "{bad}");
        }
        for header in [&b"Bearer abc"[..], b"Basic", b"Basic !!!", b"\xff\xfe"] {
            assert!(c.check(Some(header)).unwrap_err().message().contains("malformed"));
        }
        assert!(c.check(None).unwrap_err().message().contains("missing"));
    }
}
