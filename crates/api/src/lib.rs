//! Oxcast's HTTP surface: the Live Streams admin API (`../shared/spec/live-streams-api.md`) under
//! both of its base paths, and `GET /healthz`.
//!
//! Every admin response is an envelope with a fresh request id ([`envelope`]); requests are
//! authenticated with HTTP Basic ([`auth`]); JSON bodies are read and checked field by field so
//! that a 400 names the field ([`requests`]). The crate holds no state of its own: it calls
//! `oxcast_core::Registry` for everything. Players read media without credentials ([`delivery`]):
//! HLS from the output crates through `oxcast_core::HlsSource`. Recordings are also managed
//! through the part of Cloudinary's Admin API that lists and deletes video assets ([`assets`]).
//! People get pages ([`pages`]): the dashboard at `/` and a viewer page per stream. [`serve`] runs
//! the application on a listener with the limits that keep idle or stalled clients from holding
//! connections ([`HttpLimits`]).

mod admin;
mod assets;
pub mod auth;
mod delivery;
pub mod envelope;
mod health;
mod metrics;
mod notifications;
mod pages;
mod requests;
mod serve;
mod viewers;
mod views;

use std::sync::Arc;

use axum::Router;
use oxcast_core::{HlsSource, RecordingSource, Registry, RelayStatusSource};

pub use auth::Credentials;
pub use metrics::MetricsExport;
pub use serve::{HttpLimits, serve};

/// What the API reads of the outputs (through `core`'s traits) and of the server.
#[derive(Clone)]
pub struct Sources {
    pub hls: Arc<dyn HlsSource>,
    pub relays: Arc<dyn RelayStatusSource>,
    pub recordings: Arc<dyn RecordingSource>,
    /// `/metrics`, when exposed.
    pub metrics: Option<MetricsExport>,
}

/// What the API needs to know about the server it belongs to.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// The only cloud name the API answers to.
    pub cloud_name: String,
    /// Base of `input.uri`, e.g. `rtmp://localhost:1935` (no trailing slash).
    pub public_rtmp_url: String,
    /// Base of delivery URLs, e.g. `http://localhost:8080` (no trailing slash).
    pub public_http_url: String,
    /// The admin credentials.
    pub credentials: Credentials,
}

#[derive(Clone)]
struct AppState {
    registry: Arc<Registry>,
    config: Arc<ApiConfig>,
    verifier: Arc<auth::Verifier>,
    sources: Sources,
    viewers: Arc<viewers::Viewers>,
}

impl AppState {
    fn views(&self) -> views::ViewContext<'_> {
        views::ViewContext {
            config: &self.config,
            sources: &self.sources,
            viewers: &self.viewers,
        }
    }
}

/// The whole HTTP application: media delivery, `/metrics`, and the enveloped admin API for
/// everything else.
pub fn router(registry: Arc<Registry>, config: ApiConfig, sources: Sources) -> Router {
    let viewers = Arc::new(viewers::Viewers::default());
    let delivery = delivery::Delivery {
        cloud_name: config.cloud_name.as_str().into(),
        hls: Arc::clone(&sources.hls),
        registry: Arc::clone(&registry),
        viewers: Arc::clone(&viewers),
    };
    let state = AppState {
        registry,
        verifier: Arc::new(auth::Verifier::new(&config.credentials)),
        config: Arc::new(config),
        sources,
        viewers,
    };
    let metrics = metrics::routes(state.clone());
    let routes = admin::routes(state.clone())
        .merge(assets::routes(state.clone()))
        .merge(health::routes(state));
    // As one service, so the envelope sees the router's finished answers (a 405 with its Allow header).
    let admin = Router::new()
        .fallback_service(routes)
        .layer(axum::middleware::from_fn(envelope::envelope));
    delivery::routes(delivery.clone())
        .merge(pages::routes(delivery))
        .merge(metrics)
        .fallback_service(admin)
}

#[cfg(test)]
mod tests;
