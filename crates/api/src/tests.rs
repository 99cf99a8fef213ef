//! In-process checks of what the end-to-end tests cannot provoke: a store that stops working.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use oxcast_core::{IdleReason, LiveStream, OutputRunner, Registry, Store, StreamId};
use tower::ServiceExt as _;

use super::*;

struct NoOutputs;

struct NoHls;

struct NoRelays;

impl oxcast_core::RelayStatusSource for NoRelays {
    fn relay_status(&self, _: &oxcast_core::OutputId) -> Option<oxcast_core::RelayStatus> {
        None
    }
}

impl oxcast_core::HlsSource for NoHls {
    fn playlist(&self, _: &oxcast_core::StreamId) -> Option<bytes::Bytes> {
        None
    }
    fn segment(&self, _: &oxcast_core::StreamId, _: u64) -> Option<oxcast_core::SegmentBody> {
        None
    }
    fn stats(&self, _: &oxcast_core::StreamId) -> Option<oxcast_core::HlsStats> {
        None
    }
}

struct NoRecordings;

impl oxcast_core::RecordingSource for NoRecordings {
    fn recording(&self, _: &oxcast_core::StreamId) -> Option<oxcast_core::RecordingStats> {
        None
    }
}

/// The outputs' side of the API, `hls` aside.
fn sources(hls: Arc<dyn oxcast_core::HlsSource>) -> Sources {
    Sources {
        hls,
        relays: Arc::new(NoRelays),
        recordings: Arc::new(NoRecordings),
        metrics: None,
    }
}

impl OutputRunner for NoOutputs {
    fn stream_active(&self, _: &LiveStream, _: &std::sync::Arc<oxcast_core::StreamBus>) {}
    fn stream_idle(&self, _: &StreamId, _: IdleReason) {}
}

fn config() -> ApiConfig {
    ApiConfig {
        cloud_name: "local".into(),
        public_rtmp_url: "rtmp://localhost:1935".into(),
        public_http_url: "http://localhost:8080".into(),
        credentials: Credentials {
            key: "k".into(),
            secret: "s".into(),
        },
    }
}

async fn call(app: &Router, method: &str, path: &str, body: &str) -> (StatusCode, serde_json::Value) {
    let auth = base64::engine::general_purpose::STANDARD.encode("k:s");
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Basic {auth}"))
        .body(Body::from(body.to_owned()))
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn a_failed_store_answers_503_and_health_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let registry = Registry::new(store.clone(), Arc::new(NoOutputs)).unwrap();
    let app = router(registry, config(), sources(Arc::new(NoHls)));
    assert_eq!(call(&app, "GET", "/healthz", "").await.0, StatusCode::OK);

    store.close().unwrap();
    let store_says = store.check().await.unwrap_err().to_string();
    let (status, body) = call(&app, "GET", "/healthz", "").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    // Anyone may ask for /healthz: it says what is wrong, not what the store said.
    assert_eq!(body["error"]["message"], "storage unavailable", "{body}");
    assert!(
        !body.to_string().contains(&store_says),
        "{body} shows {store_says:?}"
    );
    let (status, body) = call(
        &app,
        "POST",
        "/v2/video/local/live_streams",
        r#"{"input":{"type":"rtmp"}}"#,
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let (status, _) = call(&app, "GET", "/v2/video/local/live_streams", "").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

/// Every segment is a retired one, waiting in `dir/<sequence>.ts`.
struct FileHls {
    dir: std::path::PathBuf,
}

impl oxcast_core::HlsSource for FileHls {
    fn playlist(&self, _: &oxcast_core::StreamId) -> Option<bytes::Bytes> {
        None
    }
    fn segment(&self, _: &oxcast_core::StreamId, sequence: u64) -> Option<oxcast_core::SegmentBody> {
        Some(oxcast_core::SegmentBody::File(
            self.dir.join(format!("{sequence}.ts")),
        ))
    }
    fn stats(&self, _: &oxcast_core::StreamId) -> Option<oxcast_core::HlsStats> {
        None
    }
}

async fn get_raw(app: &Router, path: &str, range: Option<&str>) -> axum::response::Response {
    let mut req = Request::builder().uri(path);
    if let Some(range) = range {
        req = req.header("range", range);
    }
    app.clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_retired_segment_is_streamed_from_its_file_with_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    let registry = Registry::new(store, Arc::new(NoOutputs)).unwrap();
    let segments = dir.path().join("segments");
    std::fs::create_dir(&segments).unwrap();
    let data: Vec<u8> = (0..188 * 1000).map(|i| (i % 251) as u8).collect();
    std::fs::write(segments.join("7.ts"), &data).unwrap();
    let app = router(
        registry,
        config(),
        sources(Arc::new(FileHls {
            dir: segments.clone(),
        })),
    );
    let id = "0123456789abcdef0123456789abcdef";
    let path = format!("/local/video/live/live_stream_{id}_hls/7.ts");

    let whole = get_raw(&app, &path, None).await;
    assert_eq!(whole.status(), StatusCode::OK);
    assert_eq!(whole.headers()["content-type"], "video/mp2t");
    assert_eq!(whole.headers()["content-length"], data.len().to_string().as_str());
    let body = whole.into_body();
    // Streamed: the body does not know its bytes up front, only their number.
    assert_eq!(axum::body::HttpBody::size_hint(&body).exact(), None);
    assert_eq!(axum::body::to_bytes(body, usize::MAX).await.unwrap(), data);

    let part = get_raw(&app, &path, Some("bytes=188-375")).await;
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        part.headers()["content-range"],
        format!("bytes 188-375/{}", data.len()).as_str()
    );
    let bytes = axum::body::to_bytes(part.into_body(), usize::MAX).await.unwrap();
    assert_eq!(bytes, data.get(188..376).unwrap());

    let beyond = get_raw(&app, &path, Some(&format!("bytes={}-", data.len()))).await;
    assert_eq!(beyond.status(), StatusCode::RANGE_NOT_SATISFIABLE);

    // The file expired between the lookup and the read.
    std::fs::remove_file(segments.join("7.ts")).unwrap();
    assert_eq!(get_raw(&app, &path, None).await.status(), StatusCode::NOT_FOUND);
}

async fn call_with(
    app: &Router,
    method: &str,
    path: &str,
    auth: Option<&str>,
    content_type: Option<&str>,
    body: &str,
) -> (StatusCode, serde_json::Value) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(auth) = auth {
        let auth = base64::engine::general_purpose::STANDARD.encode(auth);
        req = req.header("authorization", format!("Basic {auth}"));
    }
    if let Some(content_type) = content_type {
        req = req.header("content-type", content_type);
    }
    let res = app
        .clone()
        .oneshot(req.body(Body::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn the_assets_api_has_cloudinarys_shapes_and_refuses_what_it_cannot_do() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for (public_id, version) in [("shows/a", 1_719_304_891), ("shows/a", 1_719_304_999), ("b", 5)] {
        let archive = oxcast_core::Archive {
            public_id: public_id.into(),
            version,
            stream_id: StreamId::generate(),
            path: format!("archive/{public_id}/{version}.mp4"),
            duration_ms: 2500,
            bytes: 1000,
            created_at: 1_719_304_881_000,
        };
        store.insert_archive(archive).await.unwrap();
    }
    let registry = Registry::new(store, Arc::new(NoOutputs)).unwrap();
    let app = router(registry, config(), sources(Arc::new(NoHls)));
    let list = "/v1_1/local/resources/video/upload";
    let get = |path: String| {
        let app = app.clone();
        async move { call_with(&app, "GET", &path, Some("k:s"), None, "").await }
    };

    let (status, body) = get(format!("{list}?prefix=shows/")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        serde_json::json!({"resources": [{
            "public_id": "shows/a", "format": "mp4", "version": 1_719_304_999,
            "resource_type": "video", "type": "upload", "created_at": "2024-06-25T08:41:21Z",
            "bytes": 1000, "duration": 2.5,
            "url": "http://localhost:8080/local/video/upload/v1719304999/shows/a.mp4",
            "secure_url": "http://localhost:8080/local/video/upload/v1719304999/shows/a.mp4"}]})
    );
    // Without the delivery type, as the SDKs ask by default.
    let (status, body) = get("/v1_1/local/resources/video?max_results=1".into()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["resources"][0]["public_id"], "b");
    let cursor = body["next_cursor"].as_str().unwrap().to_owned();
    let (_, body) = get(format!("{list}?max_results=1&next_cursor={cursor}")).await;
    assert_eq!(body["resources"][0]["public_id"], "shows/a");
    assert!(body.get("next_cursor").is_none(), "{body}");

    // The SDKs' resources_by_ids: those that exist, in the order asked.
    let (status, body) = get(format!(
        "{list}?public_ids[]=shows/a&public_ids[]=nope&public_ids[]=b"
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ids: Vec<_> = body["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["public_id"].clone())
        .collect();
    assert_eq!(ids, ["shows/a", "b"]);
    assert_eq!(body["resources"][0]["version"], 1_719_304_999);

    for (query, says) in [
        ("max_results=0", "max_results must be an integer from 1 to 500"),
        ("max_results=501", "max_results"),
        ("max_results=ten", "max_results"),
        (
            "next_cursor=garbage!",
            "next_cursor \"garbage!\" is not one this server gave",
        ),
        ("start_at=2024-01-01", "start_at is not supported"),
    ] {
        let (status, body) = get(format!("{list}?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(says),
            "{body}"
        );
    }
    let (status, body) = call_with(&app, "GET", list, None, None, "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("missing credentials")
    );
    let (status, _) = call_with(&app, "GET", list, Some("k:wrong"), None, "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = get("/v1_1/other/resources/video/upload".into()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown cloud name")
    );

    let delete = |content_type: Option<&'static str>, query: &'static str, body: String| {
        let app = app.clone();
        async move {
            call_with(
                &app,
                "DELETE",
                &format!("{list}{query}"),
                Some("k:s"),
                content_type,
                &body,
            )
            .await
        }
    };
    let many: Vec<String> = (0..101).map(|i| format!("x{i}")).collect();
    let (status, body) = delete(
        Some("application/json"),
        "",
        serde_json::json!({"public_ids": many}).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"].as_str().unwrap().contains("at most 100"),
        "{body}"
    );
    for (query, says) in [
        ("", "public_ids[] is required"),
        ("?prefix=shows", "deleting by prefix is not supported"),
        ("?public_ids[]=b&keep_original=true", "keep_original"),
    ] {
        let (status, body) = delete(None, query, String::new()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(says),
            "{body}"
        );
    }
    let (status, body) = delete(Some("application/json"), "", "{\"public_ids\": [1]}".into()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // The Node SDK's form body; every version goes.
    let (status, body) = delete(
        Some("application/x-www-form-urlencoded"),
        "",
        "public_ids%5B%5D=shows%2Fa&public_ids%5B%5D=nope".into(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        serde_json::json!({
            "deleted": {"nope": "not_found", "shows/a": "deleted"},
            "deleted_counts": {"nope": {"original": 0, "derived": 0}, "shows/a": {"original": 2, "derived": 0}},
            "partial": false})
    );
    let (_, body) = get(list.into()).await;
    assert_eq!(body["resources"].as_array().unwrap().len(), 1, "{body}");
}

#[tokio::test]
async fn a_download_under_way_finishes_after_its_recording_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let data: Vec<u8> = (0..1_000_000).map(|i| (i % 253) as u8).collect();
    let path = "archive/show/1.mp4";
    std::fs::create_dir_all(dir.path().join("archive/show")).unwrap();
    std::fs::write(dir.path().join(path), &data).unwrap();
    let archive = oxcast_core::Archive {
        public_id: "show".into(),
        version: 1_700_000_000,
        stream_id: StreamId::generate(),
        path: path.into(),
        duration_ms: 1000,
        bytes: data.len() as i64,
        created_at: 1_700_000_000_000,
    };
    store.insert_archive(archive).await.unwrap();
    let registry = Registry::new(store, Arc::new(NoOutputs)).unwrap();
    let app = router(Arc::clone(&registry), config(), sources(Arc::new(NoHls)));
    let url = "/local/video/upload/v1700000000/show.mp4";

    // The file is open and nothing of it read yet: the body streams as the player reads.
    let under_way = get_raw(&app, url, None).await;
    assert_eq!(under_way.status(), StatusCode::OK);
    assert_eq!(registry.delete_assets(&["show".to_owned()]).await.unwrap(), [1]);
    assert!(!dir.path().join(path).exists());
    let body = axum::body::to_bytes(under_way.into_body(), usize::MAX)
        .await
        .unwrap();
    assert_eq!(body, data);
    assert_eq!(get_raw(&app, url, None).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        get_raw(&app, "/local/video/upload/show.mp4", None).await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn notifications_list_the_outbox_newest_first_under_both_bases() {
    use oxcast_core::store::{Attempt, NewDelivery};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for (id, at) in [("e1", 10), ("e2", 20)] {
        let event = NewDelivery {
            event_id: id.into(),
            event: "live_stream.active".into(),
            body: "{}".into(),
            created_at: at,
        };
        store
            .insert_deliveries(event, vec!["http://r/".into()])
            .await
            .unwrap();
    }
    let first = store.next_delivery("http://r/").await.unwrap().unwrap();
    store
        .delivery_attempted(first.seq, 30, Attempt::Delivered)
        .await
        .unwrap();
    let registry = Registry::new(store, Arc::new(NoOutputs)).unwrap();
    let app = router(registry, config(), sources(Arc::new(NoHls)));
    for base in ["/v2/video/local", "/v2/local/video"] {
        let (status, body) = call(&app, "GET", &format!("{base}/notifications"), "").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            body["data"],
            serde_json::json!([
                {"id": "e2", "event": "live_stream.active", "url": "http://r/", "created_at": 20,
                 "attempts": 0, "next_attempt_at": 20},
                {"id": "e1", "event": "live_stream.active", "url": "http://r/", "created_at": 10,
                 "attempts": 1, "delivered_at": 30},
            ])
        );
    }
    let (_, body) = call(&app, "GET", "/v2/video/local/notifications?limit=1", "").await;
    assert_eq!(body["data"].as_array().unwrap().len(), 1);
    for bad in ["0", "1001", "x"] {
        let (status, body) = call(
            &app,
            "GET",
            &format!("/v2/video/local/notifications?limit={bad}"),
            "",
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap().starts_with("limit"),
            "{body}"
        );
    }
}
