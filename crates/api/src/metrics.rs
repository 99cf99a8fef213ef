//! `GET /metrics`: every metric the crates record through the `metrics` facade, in Prometheus
//! text format, rendered by the exporter the server installed. Figures that are states rather
//! than events (streams by status, viewers) are read when scraped.

use std::fmt;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::AppState;

/// How `/metrics` is served: the exporter's rendering, and the bearer token a scraper must send.
#[derive(Clone)]
pub struct MetricsExport {
    /// The exposition text of everything recorded so far.
    pub render: Arc<dyn Fn() -> String + Send + Sync>,
    /// When set, scrapes must carry `Authorization: Bearer <token>`.
    pub token: Option<String>,
}

impl fmt::Debug for MetricsExport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsExport")
            .field("token", &self.token.as_ref().map(|_| "…"))
            .finish_non_exhaustive()
    }
}

/// Prometheus text exposition format 0.0.4.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub(crate) fn routes(state: AppState) -> Router {
    match state.sources.metrics.is_some() {
        true => Router::new().route("/metrics", get(scrape)).with_state(state),
        false => Router::new(),
    }
}

async fn scrape(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(export) = &state.sources.metrics else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if let Some(token) = &export.token
        && !bearer_matches(&headers, token)
    {
        metrics::counter!("oxcast_refused_requests_total", "reason" => "metrics_token").increment(1);
        let mut res = (
            StatusCode::UNAUTHORIZED,
            "metrics.token is set: send it as `Authorization: Bearer <token>`\n",
        )
            .into_response();
        res.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return res;
    }
    let (active, all) = state.registry.stream_counts().await;
    metrics::gauge!("oxcast_streams", "status" => "active").set(active as f64);
    metrics::gauge!("oxcast_streams", "status" => "idle").set(all.saturating_sub(active) as f64);
    for (stream_id, viewers) in state.viewers.counts() {
        metrics::gauge!("oxcast_hls_viewers", "stream_id" => stream_id.to_string()).set(viewers as f64);
    }
    let text = (export.render)();
    let mut res = text.into_response();
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    res
}

/// Compares digests, so the time taken says nothing about the token.
fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    let Some(presented) = presented else {
        return false;
    };
    let (a, b) = (
        Sha256::digest(presented.as_bytes()),
        Sha256::digest(token.as_bytes()),
    );
    a.ct_eq(&b).into()
}
