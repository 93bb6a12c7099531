//! The HTTP listener: `/health` today; DICOMweb joins it under `/dicomweb`.

use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

pub fn router() -> Router {
    Router::new().route("/health", get(health))
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok", "service": "beeldbrug", "version": env!("CARGO_PKG_VERSION") }))
}
