//! The HTTP listener: `/health`, and DICOMweb under `/dicomweb` with gzip for JSON answers and
//! CORS for browser viewers where configured.

use crate::dicomweb::{self, WebState};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tower_http::compression::predicate::{Predicate, SizeAbove};
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};

pub fn router(state: WebState) -> Router {
    let cors = cors_layer(&state.config.dicomweb.cors_origins);
    let mut web = dicomweb::router(state).layer(CompressionLayer::new().gzip(true).compress_when(
        // DICOM and images are compressed already or too big to gain: JSON only.
        SizeAbove::new(512).and(|_, _, headers: &HeaderMap, _: &_| is_json(headers)),
    ));
    if let Some(cors) = cors {
        web = web.layer(cors);
    }
    Router::new()
        .route("/health", get(health))
        .nest("/dicomweb", web)
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.starts_with("application/dicom+json") || ct.starts_with("application/json")
        })
}

fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
            .allow_headers([
                header::ACCEPT,
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                header::RANGE,
            ])
            .expose_headers([
                header::CONTENT_TYPE,
                header::CONTENT_LENGTH,
                header::CONTENT_RANGE,
                header::ETAG,
                header::WARNING,
            ]),
    )
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok", "service": "beeldbrug", "version": env!("CARGO_PKG_VERSION") }))
}
