//! The DICOMweb front (DICOM PS3.18) under `/dicomweb`: QIDO-RS search, WADO-RS retrieve and
//! STOW-RS store, answered from beeldbrug's own store and streamed.
//!
//! - [`qido`] / [`qido_params`]: search at study, series and instance level (PS3.18 10.6).
//! - [`wado`]: instances, metadata and bulk data (PS3.18 10.4); [`frames`] finds frames inside
//!   a stored file; [`rendered`] makes JPEG/PNG images; [`transcode`] changes syntaxes.
//! - [`wado_uri`]: WADO-URI (PS3.18 9) at `/wado`, one instance as DICOM or rendered.
//! - [`stow`]: store over HTTP (PS3.18 10.5), through the same ingest path as C-STORE.
//! - [`delete`]: `DELETE` of a study, series or instance (our own organisation only).
//! - [`media`], [`json`], [`multipart`]: media types, the DICOM JSON model, multipart bodies;
//!   [`producer`] writes streamed bodies from one blocking thread per response.
//!
//! Searches and retrieves are answered by the core (`crate::core`), which asks the trust
//! decision point and owes each request its one audit event; this front translates HTTP into
//! its queries and selections and writes the answers.

pub mod bulk;
pub mod delete;
pub mod frames;
pub mod json;
pub mod media;
pub mod multipart;
pub mod producer;
pub mod qido;
pub mod qido_params;
pub mod ranged;
pub mod rendered;
pub mod stored_parts;
pub mod stow;
pub mod transcode;
pub mod wado;
pub mod wado_uri;

use crate::dimse::scp::ScpContext;
use crate::trust::{Caller, Operation, Outcome, ANONYMOUS};
use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::net::SocketAddr;
use std::sync::Arc;

/// Shared state of the DICOMweb handlers: the same core and trust as the DIMSE side.
pub type WebState = Arc<ScpContext>;

/// A request that cannot be answered, as an HTTP status and a readable message.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    /// Authenticated, not allowed (participant list, role, patient, consent).
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    NotAcceptable(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The local PACS (gateway mode) could not answer.
    #[error("{0}")]
    BadGateway(String),
    #[error("requested range not satisfiable")]
    RangeNotSatisfiable(u64),
    #[error("{0}")]
    Internal(String),
    /// Nothing is served now (the audit trail cannot be written): 503, try again later.
    #[error("{0}")]
    Unavailable(String),
}

impl WebError {
    pub fn status(&self) -> StatusCode {
        match self {
            WebError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WebError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            WebError::Forbidden(_) => StatusCode::FORBIDDEN,
            WebError::NotFound(_) => StatusCode::NOT_FOUND,
            WebError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            WebError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            WebError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            WebError::RangeNotSatisfiable(_) => StatusCode::RANGE_NOT_SATISFIABLE,
            WebError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            WebError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            WebError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "DICOMweb request failed");
        }
        let mut response = (status, format!("{self}\n")).into_response();
        let headers = response.headers_mut();
        match &self {
            WebError::Unauthorized(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            WebError::Unavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            WebError::RangeNotSatisfiable(len) => {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                    headers.insert(header::CONTENT_RANGE, v);
                }
            }
            _ => {}
        }
        response
    }
}

impl From<crate::core::CoreError> for WebError {
    fn from(e: crate::core::CoreError) -> Self {
        use crate::core::{CoreError, Refusal};
        match e {
            CoreError::Refused(Refusal::Unauthenticated(why)) => WebError::Unauthorized(why),
            CoreError::Refused(Refusal::Forbidden(why)) => WebError::Forbidden(why),
            CoreError::Refused(Refusal::Unavailable(why)) => WebError::Unavailable(why),
            CoreError::NotFound(why) => WebError::NotFound(why),
            CoreError::Source(e) => WebError::BadGateway(format!(
                "the {} could not answer: {}",
                e.source_name, e.message
            )),
            CoreError::Index(e) if e.is_unavailable() => WebError::Unavailable(e.to_string()),
            CoreError::Index(e) => WebError::Internal(e.to_string()),
        }
    }
}

/// The caller of an HTTP request: its address, the verified TLS client certificate and the
/// participant it belongs to, and the claims of its token (`Authorization: Bearer <JWT>`, or
/// `Authorization: SAML <base64 XUA assertion>`). Credentials that fail to verify are kept as
/// `credential_error`: [`admit`] answers 401 and audits it.
#[derive(Debug, Clone)]
pub struct WebCaller(pub Caller);

impl<S> FromRequestParts<S> for WebCaller
where
    S: Send + Sync,
    WebState: FromRef<S>,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = WebState::from_ref(state);
        let address = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(a)| a.to_string())
            .unwrap_or_default();
        let mut caller = Caller::new(ANONYMOUS, address);
        caller.request_id = parts
            .extensions
            .get::<crate::oplog::RequestId>()
            .map(|r| r.0.clone());
        // The request's root span (`oplog::http_requests`) is the current span here.
        caller.trace_id = crate::telemetry::current_trace_id();
        caller.correlation_id = parts
            .headers
            .get(crate::oplog::CORRELATION_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(crate::oplog::correlation_from_peer);
        if let Some(peer) = parts.extensions.get::<crate::trust::tls::TlsPeer>() {
            caller.certificate_sha256 = Some(peer.certificate_sha256.clone());
            caller.participant = state.trust.participants.lookup(&peer.certificate_sha256);
            caller.ae_title = match &caller.participant {
                Some(p) => p.name.clone(),
                None => peer.subject.clone(),
            };
        }
        if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
            let verified = state
                .trust
                .verify_credentials(value.as_bytes(), caller.participant.as_deref());
            let verified = match verified {
                Ok(claims) => state
                    .trust
                    .claim_token_across_nodes(&claims)
                    .await
                    .map(|()| claims),
                Err(why) => Err(why),
            };
            match verified {
                Ok(claims) => {
                    if caller.participant.is_none() {
                        caller.ae_title = claims.subject.clone();
                    }
                    caller.claims = Some(claims);
                }
                Err(why) => caller.credential_error = Some(why),
            }
        }
        Ok(WebCaller(caller))
    }
}

/// Ask the decision point; a refusal is audited here and answered 401.
pub async fn admit(
    state: &WebState,
    caller: &Caller,
    operation: Operation,
) -> Result<(), WebError> {
    let decision = if matches!(operation, Operation::WadoRs | Operation::WadoUri) {
        state.trust.decide_before_data(caller, operation).await
    } else {
        state.trust.decide(caller, operation)
    };
    match decision {
        crate::trust::Decision::Permit => Ok(()),
        refusal => {
            // "unauthenticated: ..." grounds make the audit message a User Authentication
            // (PS3.15 A.5.3.11) rather than a Security Alert.
            let grounds = match &refusal {
                crate::trust::Decision::Unauthenticated(why) => format!("unauthenticated: {why}"),
                _ => String::new(),
            };
            let outcome = Outcome {
                result: "refused".into(),
                detail: refusal.reason().to_string(),
                grounds,
                ..Default::default()
            };
            state.trust.audit(caller, operation, outcome).await;
            Err(match refusal {
                crate::trust::Decision::Unauthenticated(why) => WebError::Unauthorized(why),
                crate::trust::Decision::Unavailable(why) => WebError::Unavailable(why),
                _ => WebError::Forbidden(refusal.reason().to_string()),
            })
        }
    }
}

/// The base URL of this service for RetrieveURL and BulkDataURI (`.../dicomweb`).
pub fn base_url(state: &WebState, headers: &HeaderMap) -> String {
    let configured = state
        .config
        .dicomweb
        .public_url
        .trim()
        .trim_end_matches('/');
    if !configured.is_empty() {
        return configured.to_string();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .unwrap_or("localhost");
    format!("http://{host}/dicomweb")
}

/// The `/dicomweb` routes (PS3.18 Table 10.3-1 resources).
pub fn router(state: WebState) -> Router {
    let instance = "/studies/{study}/series/{series}/instances/{instance}";
    Router::new()
        .route("/studies", get(qido::studies).post(stow::store_any))
        .route(
            "/studies/{study}",
            get(wado::study)
                .post(stow::store_study)
                .delete(delete::study),
        )
        .route("/studies/{study}/metadata", get(wado::study_metadata))
        .route("/studies/{study}/thumbnail", get(rendered::study_thumbnail))
        .route(
            "/studies/{study}/series/{series}/thumbnail",
            get(rendered::series_thumbnail),
        )
        .route("/studies/{study}/series", get(qido::study_series))
        .route("/studies/{study}/instances", get(qido::study_instances))
        .route(
            "/studies/{study}/series/{series}",
            get(wado::series).delete(delete::series),
        )
        .route(
            "/studies/{study}/series/{series}/metadata",
            get(wado::series_metadata),
        )
        .route(
            "/studies/{study}/series/{series}/instances",
            get(qido::series_instances),
        )
        .route(instance, get(wado::instance).delete(delete::instance))
        .route(
            &format!("{instance}/metadata"),
            get(wado::instance_metadata),
        )
        .route(&format!("{instance}/rendered"), get(rendered::instance))
        .route(
            &format!("{instance}/thumbnail"),
            get(rendered::instance_thumbnail),
        )
        .route(&format!("{instance}/frames/{{frames}}"), get(bulk::frames))
        .route(
            &format!("{instance}/frames/{{frames}}/rendered"),
            get(rendered::frame),
        )
        .route(
            &format!("{instance}/frames/{{frames}}/thumbnail"),
            get(rendered::frame_thumbnail),
        )
        .route(
            &format!("{instance}/bulkdata/{{*path}}"),
            get(bulk::bulkdata),
        )
        .route("/series", get(qido::all_series))
        .route("/instances", get(qido::all_instances))
        // Unknown resources get their 404 inside the layers (CORS included), so a browser
        // sees the 404 rather than a CORS failure.
        .fallback(|| async { WebError::NotFound("no such DICOMweb resource".into()) })
        .with_state(state)
}
