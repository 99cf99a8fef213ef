//! The admin endpoints of the contract, mounted under both base paths
//! (`/v2/video/{cloud_name}` and the SDK's `/v2/{cloud_name}/video`).

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use oxcast_core::{OutputId, Status, StreamId};

use crate::AppState;
use crate::envelope::{ApiError, Data};
use crate::requests::{self, JsonObject};
use crate::views::{ArchiveView, LiveStreamView, OutputView};

/// The contract's two base paths.
const BASES: [&str; 2] = ["/v2/video/{cloud_name}", "/v2/{cloud_name}/video"];

pub(crate) fn routes(state: AppState) -> Router {
    let mut router = Router::new();
    for base in BASES {
        router = router
            .route(
                &format!("{base}/live_streams"),
                get(list_streams).post(create_stream),
            )
            .route(
                &format!("{base}/live_streams/{{id}}"),
                get(get_stream).patch(update_stream).delete(delete_stream),
            )
            .route(&format!("{base}/live_streams/{{id}}/activate"), post(activate))
            .route(&format!("{base}/live_streams/{{id}}/idle"), post(idle))
            .route(&format!("{base}/live_streams/{{id}}/kick"), post(kick))
            .route(
                &format!("{base}/live_streams/{{id}}/outputs"),
                get(list_outputs).post(create_output),
            )
            .route(
                &format!("{base}/live_streams/{{id}}/outputs/{{oid}}"),
                get(get_output).patch(update_output).delete(delete_output),
            )
            .route(
                &format!("{base}/live_streams/{{id}}/archives"),
                get(list_archives),
            )
            .route(&format!("{base}/notifications"), get(crate::notifications::list));
    }
    // Layers run outside-in: credentials first, then the cloud name.
    router
        .route_layer(middleware::from_fn_with_state(state.clone(), check_cloud_name))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            crate::auth::require_credentials,
        ))
        .with_state(state)
}

/// Another cloud's name is a 404, as if the path did not exist.
pub(crate) async fn check_cloud_name(
    State(state): State<AppState>,
    Path(params): Path<HashMap<String, String>>,
    req: Request,
    next: Next,
) -> Response {
    match params.get("cloud_name") {
        Some(name) if *name == state.config.cloud_name => next.run(req).await,
        other => ApiError::new(
            StatusCode::NOT_FOUND,
            format!("unknown cloud name {:?}", other.map(String::as_str).unwrap_or("")),
        )
        .into_response(),
    }
}

/// The ids in a path; the cloud name was checked by the middleware.
#[derive(serde::Deserialize)]
struct Ids {
    id: String,
    oid: Option<String>,
}

impl Ids {
    /// A malformed id names no stream: 404, like an unknown one.
    fn stream(&self) -> Result<StreamId, ApiError> {
        StreamId::parse(&self.id).ok_or_else(|| oxcast_core::RegistryError::StreamNotFound.into())
    }

    fn output(&self) -> Result<OutputId, ApiError> {
        self.oid
            .as_deref()
            .and_then(OutputId::parse)
            .ok_or_else(|| oxcast_core::RegistryError::OutputNotFound.into())
    }
}

async fn list_streams(State(s): State<AppState>) -> Result<Data, ApiError> {
    let streams = s.registry.list_streams().await?;
    let mut live = s.registry.live_inputs().await;
    let views: Vec<_> = streams
        .iter()
        .map(|st| LiveStreamView::new(st, s.views(), live.remove(&st.id)))
        .collect();
    Data::new(&views)
}

async fn create_stream(State(s): State<AppState>, JsonObject(body): JsonObject) -> Result<Data, ApiError> {
    let new = requests::new_stream(&body)?;
    let stream = s.registry.create_stream(new).await?;
    Data::new(&LiveStreamView::new(&stream, s.views(), None))
}

async fn get_stream(State(s): State<AppState>, Path(ids): Path<Ids>) -> Result<Data, ApiError> {
    let stream = s.registry.get_stream(&ids.stream()?).await?;
    let live = s.registry.live_input(&stream.id).await;
    Data::new(&LiveStreamView::new(&stream, s.views(), live))
}

async fn update_stream(
    State(s): State<AppState>,
    Path(ids): Path<Ids>,
    JsonObject(body): JsonObject,
) -> Result<Data, ApiError> {
    let id = ids.stream()?;
    let patch = requests::stream_patch(&body)?;
    let stream = s.registry.update_stream(&id, patch).await?;
    let live = s.registry.live_input(&id).await;
    Data::new(&LiveStreamView::new(&stream, s.views(), live))
}

async fn delete_stream(State(s): State<AppState>, Path(ids): Path<Ids>) -> Result<Data, ApiError> {
    s.registry.delete_stream(&ids.stream()?).await?;
    Ok(Data::ok())
}

async fn activate(State(s): State<AppState>, Path(ids): Path<Ids>) -> Result<Data, ApiError> {
    s.registry.activate(&ids.stream()?).await?;
    Ok(Data::ok())
}

async fn idle(State(s): State<AppState>, Path(ids): Path<Ids>) -> Result<Data, ApiError> {
    s.registry.idle(&ids.stream()?).await?;
    Ok(Data::ok())
}

/// Disconnects the publisher (an Oxcast extension); the idle timeout then runs as after any
/// disconnect.
async fn kick(State(s): State<AppState>, Path(ids): Path<Ids>) -> Result<Data, ApiError> {
    s.registry.kick(&ids.stream()?).await?;
    Ok(Data::ok())
}

/// Whether the stream is active now, for its outputs' live figures.
async fn status_of(s: &AppState, id: &StreamId) -> Result<Status, ApiError> {
    Ok(s.registry.get_stream(id).await?.status)
}

async fn list_outputs(State(s): State<AppState>, Path(ids): Path<Ids>) -> Result<Data, ApiError> {
    let id = ids.stream()?;
    let stream = s.registry.get_stream(&id).await?;
    let views: Vec<_> = stream
        .outputs
        .iter()
        .map(|o| OutputView::new(&id, stream.status, o, s.views()))
        .collect();
    Data::new(&views)
}

async fn create_output(
    State(s): State<AppState>,
    Path(ids): Path<Ids>,
    JsonObject(body): JsonObject,
) -> Result<Data, ApiError> {
    let id = ids.stream()?;
    let new = requests::new_output(&body)?;
    let output = s.registry.create_output(&id, new).await?;
    let status = status_of(&s, &id).await?;
    Data::new(&OutputView::new(&id, status, &output, s.views()))
}

async fn get_output(State(s): State<AppState>, Path(ids): Path<Ids>) -> Result<Data, ApiError> {
    let id = ids.stream()?;
    let output = s.registry.get_output(&id, &ids.output()?).await?;
    let status = status_of(&s, &id).await?;
    Data::new(&OutputView::new(&id, status, &output, s.views()))
}

async fn update_output(
    State(s): State<AppState>,
    Path(ids): Path<Ids>,
    JsonObject(body): JsonObject,
) -> Result<Data, ApiError> {
    let id = ids.stream()?;
    let output_id = ids.output()?;
    let patch = requests::output_patch(&body)?;
    let output = s.registry.update_output(&id, &output_id, patch).await?;
    let status = status_of(&s, &id).await?;
    Data::new(&OutputView::new(&id, status, &output, s.views()))
}

async fn delete_output(State(s): State<AppState>, Path(ids): Path<Ids>) -> Result<Data, ApiError> {
    s.registry.delete_output(&ids.stream()?, &ids.output()?).await?;
    Ok(Data::ok())
}

/// Recordings arrive with the archive; until then every stream has none.
async fn list_archives(State(s): State<AppState>, Path(ids): Path<Ids>) -> Result<Data, ApiError> {
    let archives = s.registry.archives(&ids.stream()?).await?;
    let views: Vec<_> = archives.iter().map(|a| ArchiveView::new(a, &s.config)).collect();
    Data::new(&views)
}
