//! The console's single-page app, embedded: `admin-ui/dist/` as Vite built it (committed with
//! `admin-ui/package-lock.json`, so that `cargo build` needs no npm; rebuild with
//! `cd admin-ui && npm ci && npm run build` after changing `admin-ui/src/`). Fixed file
//! names, served with `Cache-Control: no-cache` and an ETag of the build, and a Content
//! Security Policy that allows our own scripts and styles only.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::LazyLock;

const INDEX_HTML: &str = include_str!("../../admin-ui/dist/index.html");
const APP_JS: &str = include_str!("../../admin-ui/dist/assets/app.js");
const APP_CSS: &str = include_str!("../../admin-ui/dist/assets/app.css");

/// Own scripts, styles, API calls and (blob) images; no framing, no plugins, no forms to
/// elsewhere.
const CSP: &str =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; \
     connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The ETag of this build: the SHA-256 of the files, shortened.
static ETAG: LazyLock<String> = LazyLock::new(|| {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in [INDEX_HTML, APP_JS, APP_CSS] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let hex: String = h.finalize()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("\"{hex}\"")
});

fn serve(headers: &HeaderMap, content_type: &'static str, body: &'static str) -> Response {
    let etag = ETAG.as_str();
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let common = [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::ETAG,
            HeaderValue::from_str(etag).unwrap_or_else(|_| HeaderValue::from_static("\"0\"")),
        ),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        common,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}

/// `GET /admin`: the app (its login form when there is no session; the data is behind the
/// API's decision).
pub async fn index(headers: HeaderMap) -> Response {
    serve(&headers, "text/html; charset=utf-8", INDEX_HTML)
}

/// `GET /admin/assets/{file}`.
pub async fn asset(headers: HeaderMap, Path(file): Path<String>) -> Response {
    match file.as_str() {
        "app.js" => serve(&headers, "text/javascript; charset=utf-8", APP_JS),
        "app.css" => serve(&headers, "text/css; charset=utf-8", APP_CSS),
        _ => (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    }
}
