//! The HTTP listener: `/health` (liveness), `/ready` (readiness, [`ready`]), `/metrics`
//! (Prometheus, behind the same trust decision as `/admin`),
//! DICOMweb under `/dicomweb` (and WADO-URI at `/wado`) with gzip for JSON answers and CORS for browser viewers where
//! configured, read-only admin views under `/admin/forward` and `/admin/audit`, and the
//! operator's console under `/admin` (`crate::admin`).

pub mod ready;

use crate::dicomweb::{self, WebState};
use crate::pacs::source::PacsSource;
use crate::store::{BlobStore, Index};
use axum::extract::FromRef;
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use std::sync::Arc;
use tower_http::compression::predicate::{Predicate, SizeAbove};
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// What the HTTP listener serves from: the DICOMweb front's state (the core and trust), and
/// for `/ready` and `/admin`, which are no front, the index, the blobs and the PACS they
/// check and read themselves.
#[derive(Debug, Clone)]
pub struct HttpState {
    pub web: WebState,
    pub index: Arc<dyn Index>,
    pub blobs: BlobStore,
    /// Gateway mode: the local PACS (`/ready` asks it for C-ECHO).
    pub gateway: Option<Arc<PacsSource>>,
    /// Chain monitoring, for the console.
    pub chain: Arc<crate::chain::Monitor>,
}

impl FromRef<HttpState> for WebState {
    fn from_ref(state: &HttpState) -> WebState {
        state.web.clone()
    }
}

pub fn router(state: HttpState) -> Router {
    let cors = cors_layer(&state.web.config.dicomweb.cors_origins);
    // The operator's console, where the listener is not open to the world.
    let console = crate::admin::mounted(&state.web)
        .then(|| crate::admin::router(state.web.clone(), state.chain.clone()));
    if console.is_none() {
        tracing::warn!(
            "the console (/admin) is not served: the HTTP listener is beyond loopback without TLS"
        );
    }
    let admin = Router::new()
        .route("/admin/forward", get(forward_queue))
        .route("/admin/audit", get(audit_trail))
        .route("/metrics", get(metrics))
        .with_state(state.clone());
    let probes = Router::new()
        .route("/ready", get(ready))
        .with_state(state.clone());
    let soap = state
        .web
        .config
        .xds
        .enabled
        .then(|| crate::xds::router(state.web.clone()));
    let mut wado_uri = Router::new()
        .route("/wado", get(dicomweb::wado_uri::retrieve))
        .with_state(state.web.clone());
    let mut web =
        dicomweb::router(state.web).layer(CompressionLayer::new().gzip(true).compress_when(
            // DICOM and images are compressed already or too big to gain: JSON only.
            SizeAbove::new(512).and(|_, _, headers: &HeaderMap, _: &_| is_json(headers)),
        ));
    if let Some(cors) = cors {
        wado_uri = wado_uri.layer(cors.clone());
        web = web.layer(cors);
    }
    let router = Router::new()
        .route("/health", get(health))
        .merge(probes)
        .merge(admin)
        .nest("/dicomweb", web)
        .merge(wado_uri);
    let router = match console {
        Some(console) => router.merge(console),
        None => router,
    };
    // The SOAP endpoints (XDS-I.b / XCA-I) with `[xds] enabled`.
    let router = match soap {
        Some(soap) => router.merge(soap),
        None => router,
    };
    router
        // One operations-log line per request, with its id (oplog).
        .layer(axum::middleware::from_fn(crate::oplog::http_requests))
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

/// `GET /ready`: 200 when every check of [`ready`] passes, else 503 naming the
/// failing ones; the body has each check's result either way.
async fn ready(
    axum::extract::State(state): axum::extract::State<HttpState>,
) -> (axum::http::StatusCode, Json<serde_json::Value>) {
    let readiness = ready::check(&state).await;
    let status = if readiness.ready {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if readiness.ready { "ready" } else { "unavailable" },
            "failing": readiness.failing,
            "checks": readiness.checks,
        })),
    )
}

/// Query of `GET /admin/forward`.
#[derive(Debug, serde::Deserialize)]
struct QueueQuery {
    limit: Option<u32>,
}

/// `GET /admin/forward`: the queue of instances forwarded to the PACS, newest first
/// (`?limit=`, default 100). Behind the same trust decision as DICOMweb: a caller without
/// credentials only where `dicomweb.allow_anonymous`.
async fn forward_queue(
    axum::extract::State(state): axum::extract::State<HttpState>,
    caller: dicomweb::WebCaller,
    axum::extract::Query(q): axum::extract::Query<QueueQuery>,
) -> Result<Json<serde_json::Value>, dicomweb::WebError> {
    dicomweb::admit(&state.web, &caller.0, crate::trust::Operation::QidoRs).await?;
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let jobs = crate::pacs::forward::queue(state.index.as_ref(), limit)
        .await
        .map_err(|e| dicomweb::WebError::Internal(e.to_string()))?;
    let pacs = state.web.config.pacs.as_ref();
    Ok(Json(json!({
        "pacs": pacs.map(|p| json!({
            "ae_title": p.ae_title,
            "host": p.host,
            "port": p.port,
            "forward_stow": p.forward_stow,
            "forward_except": p.forward_except,
        })),
        "jobs": jobs.iter().map(crate::pacs::forward::job_json).collect::<Vec<_>>(),
    })))
}

/// Items read per queue for `/metrics` (a deeper queue shows as this many).
const QUEUE_DEPTH_CAP: u32 = 100_000;

/// `GET /metrics`: every metric in the OpenMetrics text format (`crate::metrics`), with the
/// queue depths and the cache size read from the index now. Behind the same trust decision
/// as `/admin` (no patient data in it, but the volumes of a hospital's traffic): a scraper
/// without credentials only where `dicomweb.allow_anonymous`; with mTLS, a participant
/// certificate.
async fn metrics(
    axum::extract::State(state): axum::extract::State<HttpState>,
    caller: dicomweb::WebCaller,
) -> Result<axum::response::Response, dicomweb::WebError> {
    use axum::response::IntoResponse;
    dicomweb::admit(&state.web, &caller.0, crate::trust::Operation::QidoRs).await?;
    let index = state.index.as_ref();
    let now = crate::clock::unix_seconds();
    if let Ok(jobs) = index.forward_jobs(Some(i64::MAX), QUEUE_DEPTH_CAP).await {
        crate::metrics::set_queue_depth("forward", jobs.len() as u64);
    }
    if state.web.config.xds.enabled {
        if let Ok(studies) = index.studies_to_publish(now, QUEUE_DEPTH_CAP).await {
            crate::metrics::set_queue_depth("publication", studies.len() as u64);
        }
    }
    if let Ok(waiting) = index.audit_outbox_len().await {
        crate::metrics::set_queue_depth("syslog_outbox", waiting);
    }
    if let Ok(cached) = index.cache_lru().await {
        let bytes = cached.iter().map(|(_, b)| *b).sum();
        crate::metrics::set_cache(cached.len() as u64, bytes);
    }
    Ok((
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        crate::metrics::render(),
    )
        .into_response())
}

/// Query of `GET /admin/audit`.
#[derive(Debug, serde::Deserialize)]
struct AuditQuery {
    bsn: Option<String>,
    limit: Option<u32>,
}

/// `GET /admin/audit?bsn=...`: one patient's audit records (NEN 7513: who saw their data),
/// oldest first (`?limit=` newest, default 1000), with the verification of the whole hash
/// chain. Behind the trust decision for `AuditRead`; the read itself is recorded.
async fn audit_trail(
    axum::extract::State(state): axum::extract::State<WebState>,
    caller: dicomweb::WebCaller,
    axum::extract::Query(q): axum::extract::Query<AuditQuery>,
) -> Result<Json<serde_json::Value>, dicomweb::WebError> {
    use crate::trust::{Operation, Outcome};
    dicomweb::admit(&state, &caller.0, Operation::AuditRead).await?;
    let Some(bsn) = q
        .bsn
        .map(|b| b.trim().to_string())
        .filter(|b| !b.is_empty())
    else {
        let outcome = Outcome {
            result: "failure".into(),
            detail: "no bsn given".into(),
            ..Default::default()
        };
        state
            .trust
            .audit(&caller.0, Operation::AuditRead, outcome)
            .await;
        return Err(dicomweb::WebError::BadRequest("give ?bsn=".into()));
    };
    // A token bound to one patient reads that patient's trail only.
    let access = state.trust.patient_access(&caller.0, &bsn).await;
    if !access.decision.is_permit() {
        let why = access.decision.reason().to_string();
        let outcome = Outcome {
            patient_ids: vec![bsn],
            result: "refused".into(),
            detail: why.clone(),
            ..Default::default()
        };
        state
            .trust
            .audit(&caller.0, Operation::AuditRead, outcome)
            .await;
        return Err(dicomweb::WebError::Forbidden(why));
    }
    let limit = q.limit.unwrap_or(1000).clamp(1, 100_000);
    let trail = match state.trust.audit.patient_trail(&bsn, limit).await {
        Ok(t) => t,
        Err(e) => {
            let outcome = Outcome {
                patient_ids: vec![bsn],
                result: "failure".into(),
                detail: e.to_string(),
                ..Default::default()
            };
            state
                .trust
                .audit(&caller.0, Operation::AuditRead, outcome)
                .await;
            return Err(dicomweb::WebError::Internal(e.to_string()));
        }
    };
    let outcome = Outcome {
        patient_ids: vec![bsn],
        result: "success".into(),
        detail: format!(
            "{} audit records of one patient read; {}",
            trail.records.len(),
            crate::trust::audit::cli::describe(&trail.verification)
        ),
        ..Default::default()
    };
    state
        .trust
        .audit(&caller.0, Operation::AuditRead, outcome)
        .await;
    Ok(Json(json!({
        "patient_id": trail.patient_id,
        "records": trail.records,
        "verification": trail.verification,
    })))
}
