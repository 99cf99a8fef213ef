//! Pages for people: the dashboard at `/` and a public viewer page per stream, with their scripts
//! and the player library, all embedded in the binary (`crates/api/assets/`, no build step).
//!
//! The dashboard is static: it holds no data and signs in to the admin API from the browser, so
//! serving it needs no credentials. The viewer page (`GET /{cloud}/video/player/{id}`) is public
//! like the HLS it plays; it needs only the stream to exist and to have an HLS output.
//!
//! Both pages load scripts and styles from this server only (a `Content-Security-Policy` says so);
//! the dashboard may not be framed, the viewer page may be framed by any site.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::delivery::Delivery;

/// The hls.js build served to both pages: `dist/hls.min.js` of the npm package at the version
/// `tests/browser/package-lock.json` locks, with its license header.
const HLS_JS: &[u8] = include_bytes!("../assets/hls-1.7.4.min.js");
/// Its license, which its header points to, served beside it.
const HLS_JS_LICENSE: &str = include_str!("../assets/hls.js.LICENSE");
/// Versioned, so that it can be cached for good.
pub(crate) const HLS_JS_PATH: &str = "/assets/hls-1.7.4.min.js";

const DASHBOARD_HTML: &str = include_str!("../assets/dashboard.html");
const DASHBOARD_JS: &str = include_str!("../assets/dashboard.js");
const DASHBOARD_CSS: &str = include_str!("../assets/dashboard.css");
const PLAYER_HTML: &str = include_str!("../assets/player.html");
const PLAYER_JS: &str = include_str!("../assets/player.js");
const PLAYER_CSS: &str = include_str!("../assets/player.css");
const ICON: &str = include_str!("../assets/icon.svg");

/// The pages' own files change with Oxcast and are small: revalidated on every load.
const OWN_CACHE: &str = "no-cache";
const LIBRARY_CACHE: &str = "public, max-age=31536000, immutable";
const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";
const TEXT: &str = "text/plain; charset=utf-8";

/// `blob:` for media and workers: hls.js feeds the `<video>` through a MediaSource object URL
/// and runs its transmuxer in a worker made from a blob.
const SELF_ONLY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; media-src 'self' blob:; worker-src 'self' blob:; base-uri 'none'; form-action 'none'";

pub(crate) fn routes(delivery: Delivery) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/assets/{file}", get(asset))
        .route("/{cloud}/video/player/{id}", get(player))
        .with_state(delivery)
}

/// `value` safe inside HTML text and double-quoted attributes.
fn escape_html(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(status: StatusCode, body: String, frame_ancestors: &'static str) -> Response {
    let mut res = (status, body).into_response();
    let headers = res.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(HTML));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(OWN_CACHE));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if let Ok(csp) = HeaderValue::from_str(&format!("{SELF_ONLY}; frame-ancestors {frame_ancestors}")) {
        headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    res
}

async fn dashboard(State(d): State<Delivery>) -> Response {
    let html = DASHBOARD_HTML
        .replace("{{cloud_name}}", &escape_html(&d.cloud_name))
        .replace("{{hls_js}}", HLS_JS_PATH);
    let mut res = page(StatusCode::OK, html, "'none'");
    // For browsers that predate frame-ancestors: the admin pages are never framed.
    res.headers_mut()
        .insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    res
}

async fn asset(Path(file): Path<String>) -> Response {
    let (body, content_type, cache): (&'static [u8], _, _) = match file.as_str() {
        "dashboard.js" => (DASHBOARD_JS.as_bytes(), JS, OWN_CACHE),
        "dashboard.css" => (DASHBOARD_CSS.as_bytes(), CSS, OWN_CACHE),
        "player.js" => (PLAYER_JS.as_bytes(), JS, OWN_CACHE),
        "player.css" => (PLAYER_CSS.as_bytes(), CSS, OWN_CACHE),
        "icon.svg" => (ICON.as_bytes(), SVG, OWN_CACHE),
        "hls.js.LICENSE" => (HLS_JS_LICENSE.as_bytes(), TEXT, OWN_CACHE),
        name if Some(name) == HLS_JS_PATH.strip_prefix("/assets/") => (HLS_JS, JS, LIBRARY_CACHE),
        _ => return (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    };
    let mut res = body.into_response();
    let headers = res.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // The viewer page may be framed by any site and loads these from there.
    headers.insert(
        HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("cross-origin"),
    );
    res
}

/// The viewer page of a stream with an HLS output; a 404 page otherwise. It learns whether the
/// stream is live from the playlist itself (see `assets/player.js`), so it needs no credentials.
async fn player(State(d): State<Delivery>, Path((cloud, id)): Path<(String, String)>) -> Response {
    let not_found = || {
        player_error(
            StatusCode::NOT_FOUND,
            "Stream not found",
            "There is no live stream at this address.",
        )
    };
    let Some(id) = oxcast_core::StreamId::parse(&id).filter(|_| cloud == *d.cloud_name) else {
        return not_found();
    };
    let stream = match d.registry.get_stream(&id).await {
        Ok(stream) => stream,
        Err(oxcast_core::RegistryError::StreamNotFound) => return not_found(),
        Err(e) => {
            tracing::error!(stream_id = %id, "viewer page: cannot look up the stream: {e}");
            return player_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                "The server cannot answer right now. Try again in a moment.",
            );
        }
    };
    if !stream
        .outputs
        .iter()
        .any(|o| matches!(o.kind, oxcast_core::OutputKind::Hls))
    {
        return not_found();
    }
    let title = stream.name.as_deref().unwrap_or("Live stream");
    let html = PLAYER_HTML
        .replace("{{title}}", &escape_html(title))
        .replace("{{playlist}}", &crate::views::hls_path(&id, &d.cloud_name))
        .replace("{{hls_js}}", HLS_JS_PATH);
    page(StatusCode::OK, html, "*")
}

fn player_error(status: StatusCode, title: &str, message: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><link rel=\"icon\" href=\"/assets/icon.svg\" type=\"image/svg+xml\">\
         <link rel=\"stylesheet\" href=\"/assets/player.css\"></head>\
         <body><main class=\"notice\"><h1>{title}</h1><p>{message}</p></main></body></html>\n"
    );
    page(status, html, "*")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_html_reads_as_markup() {
        assert_eq!(
            escape_html(r#"<b a="1">'x' & y</b>"#),
            "&lt;b a=&quot;1&quot;&gt;&#39;x&#39; &amp; y&lt;/b&gt;"
        );
        assert_eq!(escape_html("Café 🎥"), "Café 🎥");
    }

    #[tokio::test]
    async fn assets_have_their_type_and_cache_and_nothing_else_is_served() {
        let hls = asset(Path("hls-1.7.4.min.js".to_owned())).await;
        assert_eq!(hls.status(), StatusCode::OK);
        assert_eq!(hls.headers()[header::CONTENT_TYPE], JS);
        assert_eq!(hls.headers()[header::CACHE_CONTROL], LIBRARY_CACHE);
        assert_eq!(hls.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        for (file, content_type) in [("dashboard.css", CSS), ("player.js", JS), ("icon.svg", SVG)] {
            let res = asset(Path(file.to_owned())).await;
            assert_eq!(res.headers()[header::CONTENT_TYPE], content_type, "{file}");
            assert_eq!(res.headers()[header::CACHE_CONTROL], OWN_CACHE, "{file}");
        }
        let license = asset(Path("hls.js.LICENSE".to_owned())).await;
        assert_eq!(license.headers()[header::CONTENT_TYPE], TEXT);
        for other in [
            "hls.min.js",
            "dashboard.html",
            "..%2Fsrc%2Flib.rs",
            "hls.js.license",
        ] {
            assert_eq!(
                asset(Path(other.to_owned())).await.status(),
                StatusCode::NOT_FOUND,
                "{other}"
            );
        }
    }

    /// The browser tests play with the hls.js they lock; the pages serve the same one.
    #[test]
    fn the_served_hls_js_is_the_version_the_browser_tests_lock() {
        let lock = include_str!("../../../tests/browser/package-lock.json");
        let lock: serde_json::Value = serde_json::from_str(lock).unwrap_or_default();
        let locked = lock["packages"]["node_modules/hls.js"]["version"].as_str();
        let served = HLS_JS_PATH
            .strip_prefix("/assets/hls-")
            .and_then(|v| v.strip_suffix(".min.js"));
        assert_eq!(served, locked);
        let header = format!("/*! hls.js {} |", locked.unwrap_or_default());
        assert!(
            HLS_JS.starts_with(header.as_bytes()),
            "the file carries its license header"
        );
    }
}
