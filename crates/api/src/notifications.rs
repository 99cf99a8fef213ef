//! `GET …/notifications` (an Oxcast extension): the webhook outbox, newest first, with each
//! delivery's attempts and outcome.

use std::collections::HashMap;

use axum::extract::{Query, State};
use oxcast_core::RegistryError;
use oxcast_core::store::Delivery;
use serde::Serialize;

use crate::AppState;
use crate::envelope::{ApiError, Data};

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

/// One event's delivery to one receiver.
#[derive(Serialize)]
struct DeliveryView<'a> {
    /// The event's id, as in the body the receiver gets; with `url`, it names the delivery.
    id: &'a str,
    event: &'a str,
    url: &'a str,
    created_at: i64,
    attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    delivered_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_attempt_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<&'a str>,
}

impl<'a> From<&'a Delivery> for DeliveryView<'a> {
    fn from(d: &'a Delivery) -> Self {
        DeliveryView {
            id: &d.event_id,
            event: &d.event,
            url: &d.url,
            created_at: d.created_at,
            attempts: d.attempts,
            delivered_at: d.delivered_at,
            next_attempt_at: d.next_attempt_at,
            last_error: d.last_error.as_deref(),
        }
    }
}

pub(crate) async fn list(
    State(s): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Data, ApiError> {
    let limit = match query.get("limit") {
        None => DEFAULT_LIMIT,
        Some(text) => text
            .parse()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| ApiError::bad_request(format!("limit {text:?}: use 1 to {MAX_LIMIT}")))?,
    };
    let deliveries = s
        .registry
        .store()
        .deliveries(limit)
        .await
        .map_err(|e| ApiError::from(RegistryError::Store(e)))?;
    let views: Vec<DeliveryView<'_>> = deliveries.iter().map(DeliveryView::from).collect();
    Data::new(&views)
}
