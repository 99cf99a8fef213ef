//! `GET /healthz`: 200 while the store answers, 503 otherwise. No credentials, for load balancers.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use crate::AppState;
use crate::envelope::{ApiError, Data};

pub(crate) fn routes(state: AppState) -> Router {
    Router::new().route("/healthz", get(healthz)).with_state(state)
}

async fn healthz(State(state): State<AppState>) -> Result<Data, ApiError> {
    match state.registry.store().check().await {
        Ok(()) => Data::new(&serde_json::json!({"status": "ok"})),
        // Anyone may ask: the store's own words (paths, SQLite's messages) go to the log only.
        Err(e) => {
            tracing::error!("health check: the store does not answer: {e}");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage unavailable",
            ))
        }
    }
}
