//! Media delivery to players, without credentials: HLS playlists and segments (the listed ones from
//! memory, the just-retired ones streamed from their files), and recorded MP4 assets.
//!
//! `GET`/`HEAD /{cloud}/video/live/live_stream_<id>_hls.m3u8` and
//! `…/live_stream_<id>_hls/<sequence>.ts`. Any origin may read them (CORS `*`), segments honour
//! byte ranges, and an unknown or expired name is a 404.
//!
//! `GET`/`HEAD /{cloud}/video/upload/{public_id}.mp4` (the newest recording) and
//! `…/upload/v{version}/{public_id}.mp4`: streamed from the file, with byte ranges, so players seek.
//! A deleted recording is a 404 from the moment its row goes; a download already under way
//! reads to its end (the open file outlives its name).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use oxcast_core::{HlsSource, Registry, SegmentBody, StreamId, rules};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::serve::ClientAddress;
use crate::viewers::Viewers;

#[derive(Clone)]
pub(crate) struct Delivery {
    pub(crate) cloud_name: Arc<str>,
    pub(crate) hls: Arc<dyn HlsSource>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) viewers: Arc<Viewers>,
}

/// Counts a request for `/metrics`, by kind and answer.
fn counted(kind: &'static str, res: Response) -> Response {
    metrics::counter!("oxcast_hls_requests_total", "kind" => kind, "status" => res.status().as_str().to_owned())
        .increment(1);
    res
}

/// Counts bytes served of a stream's HLS for `/metrics`.
fn served(stream_id: &StreamId, res: &Response) {
    if let Some(len) = res
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
    {
        metrics::counter!("oxcast_stream_bytes_out_total",
            "stream_id" => stream_id.to_string(), "output" => "hls")
        .increment(len);
    }
}

pub(crate) fn routes(delivery: Delivery) -> Router {
    Router::new()
        .route("/{cloud}/video/live/{file}", get(playlist).options(preflight))
        .route(
            "/{cloud}/video/live/{dir}/{segment}",
            get(segment).options(preflight),
        )
        .route("/{cloud}/video/upload/{*asset}", get(asset).options(preflight))
        .with_state(delivery)
}

const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";
const SEGMENT_TYPE: &str = "video/mp2t";
/// A live playlist changes every segment; players poll it.
const PLAYLIST_CACHE: &str = "max-age=1";
/// A segment's name is never reused (sequence numbers start from the clock), so it can be kept.
const SEGMENT_CACHE: &str = "public, max-age=86400, immutable";
const MP4_TYPE: &str = "video/mp4";
/// Bytes read from a file per step of a streamed body: each read is a trip to tokio's blocking
/// pool, so ReaderStream's default 4 KiB made a 1 MB segment 250 of them.
const FILE_READ: usize = 64 * 1024;
/// A versioned asset never changes; the unversioned name moves to each new recording.
const VERSIONED_CACHE: &str = "public, max-age=31536000, immutable";
const NEWEST_CACHE: &str = "max-age=60";

fn not_found(what: &str) -> Response {
    let mut res = (StatusCode::NOT_FOUND, format!("{what} not found\n")).into_response();
    cors(res.headers_mut());
    res
}

fn cors(headers: &mut HeaderMap) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Content-Length, Content-Range, Accept-Ranges"),
    );
}

/// Browsers ask before a cross-origin request with a `Range` header.
async fn preflight() -> Response {
    let mut res = StatusCode::NO_CONTENT.into_response();
    let headers = res.headers_mut();
    cors(headers);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, OPTIONS"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Range"),
    );
    headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
    res
}

/// The stream id in `live_stream_<id>_hls` followed by `suffix`.
fn stream_of(name: &str, suffix: &str) -> Option<StreamId> {
    let id = name.strip_prefix("live_stream_")?.strip_suffix(suffix)?;
    StreamId::parse(id)
}

async fn playlist(
    State(d): State<Delivery>,
    Path((cloud, file)): Path<(String, String)>,
    client: Option<Extension<ClientAddress>>,
    request: HeaderMap,
) -> Response {
    let Some(id) = stream_of(&file, "_hls.m3u8").filter(|_| cloud == *d.cloud_name) else {
        return counted("playlist", not_found("playlist"));
    };
    let Some(text) = d.hls.playlist(&id) else {
        return counted(
            "playlist",
            not_found("playlist (the stream is not live, or has no segment yet)"),
        );
    };
    if let Some(Extension(ClientAddress(peer))) = client {
        let agent = request.get(header::USER_AGENT).map_or(&b""[..], |v| v.as_bytes());
        d.viewers.seen(&id, peer.ip(), agent);
    }
    let mut res = Response::new(Body::from(text.clone()));
    let headers = res.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PLAYLIST_TYPE));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(PLAYLIST_CACHE));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(text.len()));
    cors(headers);
    served(&id, &res);
    counted("playlist", res)
}

async fn segment(
    State(d): State<Delivery>,
    Path((cloud, dir, file)): Path<(String, String, String)>,
    request: HeaderMap,
) -> Response {
    let sequence = file.strip_suffix(".ts").and_then(|n| n.parse::<u64>().ok());
    let (Some(id), Some(sequence)) = (
        stream_of(&dir, "_hls").filter(|_| cloud == *d.cloud_name),
        sequence,
    ) else {
        return counted("segment", not_found("segment"));
    };
    let res = segment_of(&d, &id, sequence, request.get(header::RANGE)).await;
    served(&id, &res);
    counted("segment", res)
}

async fn segment_of(d: &Delivery, id: &StreamId, sequence: u64, range: Option<&HeaderValue>) -> Response {
    const GONE: &str = "segment (expired or not yet written)";
    match d.hls.segment(id, sequence) {
        Some(SegmentBody::Memory(data)) => ranged(data, SEGMENT_TYPE, SEGMENT_CACHE, range),
        // Streamed from the file, never read whole per request. A file can expire between the
        // lookup and the open: that is a 404 too (once open, it reads to the end even if deleted).
        Some(SegmentBody::File(path)) => match tokio::fs::File::open(&path).await {
            Ok(file) => serve_file(file, SEGMENT_TYPE, SEGMENT_CACHE, range).await,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => not_found(GONE),
            Err(e) => {
                tracing::error!(path = %path.display(), "cannot open an HLS segment: {e}");
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            }
        },
        None => not_found(GONE),
    }
}

/// `v{version}/{public_id}.mp4` or `{public_id}.mp4`.
fn asset_name(path: &str) -> Option<(&str, Option<i64>)> {
    let name = path.strip_suffix(".mp4")?;
    let versioned = name
        .split_once('/')
        .and_then(|(v, rest)| Some((rest, v.strip_prefix('v')?.parse::<i64>().ok()?)));
    let (public_id, version) = match versioned {
        Some((public_id, version)) => (public_id, Some(version)),
        None => (name, None),
    };
    rules::check_public_id(public_id).ok()?;
    Some((public_id, version))
}

async fn asset(
    State(d): State<Delivery>,
    Path((cloud, path)): Path<(String, String)>,
    request: HeaderMap,
) -> Response {
    counted("asset", asset_of(&d, &cloud, &path, &request).await)
}

async fn asset_of(d: &Delivery, cloud: &str, path: &str, request: &HeaderMap) -> Response {
    let Some((public_id, version)) = asset_name(path).filter(|_| *cloud == *d.cloud_name) else {
        return not_found("asset");
    };
    let (archive, file) = match d.registry.archive_file(public_id, version).await {
        Ok(Some(found)) => found,
        Ok(None) => return not_found("asset"),
        Err(e) => {
            tracing::error!("cannot look up asset {public_id:?}: {e}");
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    };
    let opened = match tokio::fs::File::open(&file).await {
        Ok(opened) => opened,
        // Deleted between the lookup and the open: gone, as for the next request.
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                && matches!(
                    d.registry.archive_file(public_id, Some(archive.version)).await,
                    Ok(None)
                ) =>
        {
            return not_found("asset");
        }
        Err(e) => {
            tracing::error!(path = %file.display(), "recording {public_id} v{} unreadable: {e}", archive.version);
            return not_found("asset");
        }
    };
    let cache = if version.is_some() {
        VERSIONED_CACHE
    } else {
        NEWEST_CACHE
    };
    serve_file(opened, MP4_TYPE, cache, request.get(header::RANGE)).await
}

/// A file, whole or the one byte range asked for, streamed from disk.
async fn serve_file(
    mut file: tokio::fs::File,
    content_type: &'static str,
    cache: &'static str,
    range: Option<&HeaderValue>,
) -> Response {
    let len = match file.metadata().await {
        Ok(meta) => meta.len(),
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    let (status, start, end) = match wanted_range(range, len) {
        Wanted::Whole => (StatusCode::OK, 0, len),
        Wanted::Part(first, last) => (StatusCode::PARTIAL_CONTENT, first, last + 1),
        Wanted::Unsatisfiable(res) => return res,
    };
    if start > 0 && file.seek(std::io::SeekFrom::Start(start)).await.is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
        file.take(end - start),
        FILE_READ,
    ));
    let mut res = Response::new(body);
    *res.status_mut() = status;
    let content_range =
        (status == StatusCode::PARTIAL_CONTENT).then(|| format!("bytes {start}-{}/{len}", end - 1));
    body_headers(res.headers_mut(), content_type, cache, end - start, content_range);
    res
}

enum Wanted {
    Whole,
    /// First and last byte, inclusive.
    Part(u64, u64),
    Unsatisfiable(Response),
}

fn wanted_range(range: Option<&HeaderValue>, len: u64) -> Wanted {
    let wanted = range
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_range(v, len));
    match wanted {
        None => Wanted::Whole,
        Some(Ok((first, last))) => Wanted::Part(first, last),
        Some(Err(())) => {
            let mut res = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                res.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            cors(res.headers_mut());
            Wanted::Unsatisfiable(res)
        }
    }
}

fn body_headers(
    headers: &mut HeaderMap,
    content_type: &'static str,
    cache: &'static str,
    body_len: u64,
    content_range: Option<String>,
) {
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body_len));
    if let Some(v) = content_range.and_then(|r| HeaderValue::from_str(&r).ok()) {
        headers.insert(header::CONTENT_RANGE, v);
    }
    cors(headers);
}

/// A whole body, or the one byte range asked for (RFC 9110 §14). Several ranges get the whole body.
pub(crate) fn ranged(
    data: Bytes,
    content_type: &'static str,
    cache: &'static str,
    range: Option<&HeaderValue>,
) -> Response {
    let len = data.len() as u64;
    let (status, body, content_range) = match wanted_range(range, len) {
        Wanted::Whole => (StatusCode::OK, data, None),
        Wanted::Unsatisfiable(res) => return res,
        Wanted::Part(start, end) => (
            StatusCode::PARTIAL_CONTENT,
            data.slice(start as usize..=end as usize),
            Some(format!("bytes {start}-{end}/{len}")),
        ),
    };
    let body_len = body.len() as u64;
    let mut res = Response::new(Body::from(body));
    *res.status_mut() = status;
    body_headers(res.headers_mut(), content_type, cache, body_len, content_range);
    res
}

/// `bytes=a-b`, `bytes=a-`, `bytes=-n` against a body of `len` bytes: `None` to ignore the header
/// (malformed, or several ranges), `Some(Err)` when nothing of the body is in range.
fn parse_range(value: &str, len: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    let range = if first.is_empty() {
        let suffix: u64 = last.parse().ok()?;
        if suffix == 0 || len == 0 {
            return Some(Err(()));
        }
        (len.saturating_sub(suffix), len - 1)
    } else {
        let start: u64 = first.parse().ok()?;
        let end: u64 = if last.is_empty() {
            u64::MAX
        } else {
            last.parse().ok()?
        };
        if end < start {
            return None;
        }
        if start >= len {
            return Some(Err(()));
        }
        (start, end.min(len - 1))
    };
    Some(Ok(range))
}

#[cfg(test)]
mod tests {
    use super::{asset_name, parse_range};

    #[test]
    fn asset_names() {
        assert_eq!(asset_name("a.mp4"), Some(("a", None)));
        assert_eq!(asset_name("v1795861651/a.mp4"), Some(("a", Some(1_795_861_651))));
        assert_eq!(
            asset_name("shows/2026/a_b-c.mp4"),
            Some(("shows/2026/a_b-c", None))
        );
        assert_eq!(asset_name("v12/shows/a.mp4"), Some(("shows/a", Some(12))));
        for bad in [
            "a.m3u8",
            "a",
            ".mp4",
            "v1/.mp4",
            "../a.mp4",
            "a/../b.mp4",
            "a//b.mp4",
            "a b.mp4",
        ] {
            assert_eq!(asset_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-99", 1000), Some(Ok((0, 99))));
        assert_eq!(parse_range("bytes=900-", 1000), Some(Ok((900, 999))));
        assert_eq!(parse_range("bytes=-100", 1000), Some(Ok((900, 999))));
        assert_eq!(parse_range("bytes=500-5000", 1000), Some(Ok((500, 999))));
        assert_eq!(parse_range("bytes=1000-", 1000), Some(Err(())));
        assert_eq!(parse_range("bytes=-0", 1000), Some(Err(())));
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), None);
        assert_eq!(parse_range("bytes=9-3", 1000), None);
        assert_eq!(parse_range("items=0-1", 1000), None);
        assert_eq!(parse_range("bytes=x-", 1000), None);
    }
}
