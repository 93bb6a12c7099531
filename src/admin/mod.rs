//! The operator's console (issue 17): a JSON API under `/admin/api` and the single-page app
//! under `/admin` that reads it (`admin-ui/`, built by Vite and embedded here, [`assets`]).
//!
//! A front like the others: it translates HTTP into the core's terms ([`crate::core::Core`]
//! for studies, transfers and queues) and the trust layer's (the audit trail), and imports
//! no source. Who may use it is [`Operation::Admin`]'s decision
//! (`Trust::check_admin`): an admin client certificate (mTLS, `trust.admin_certificates`)
//! or a token of our own organisation with an admin role (`trust.admin_roles`), never
//! anonymous. A bearer token is single-use (its `jti`), so the app presents it once to
//! `POST /admin/api/session` and gets a session cookie ([`session`]) that lives no longer
//! than the token; requests that change something also need the `X-Beeldbrug-Console`
//! header, which another origin cannot send without a CORS preflight we never grant.
//!
//! The HTTP listener mounts the console only where it is not open to the world
//! ([`mounted`]): on loopback, or with TLS.

pub mod api;
pub mod assets;
pub mod peers;
pub mod session;

use crate::dicomweb::{WebCaller, WebState};
use crate::trust::{Caller, Decision, Operation, Outcome};
use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use std::sync::Arc;

/// The header a changing request must carry (CSRF: another origin cannot set it).
pub const CSRF_HEADER: &str = "x-beeldbrug-console";

/// The console's state: the fronts' context (core, trust, configuration) and its sessions.
#[derive(Debug, Clone)]
pub struct AdminState {
    pub web: WebState,
    pub sessions: Arc<session::Sessions>,
    /// Chain monitoring (the peers page, `GET /admin/chain`).
    pub chain: Arc<crate::chain::Monitor>,
}

impl FromRef<AdminState> for WebState {
    fn from_ref(state: &AdminState) -> WebState {
        state.web.clone()
    }
}

/// Whether the console is served on this listener: on loopback, or over TLS. An HTTP
/// listener beyond loopback without TLS (`http.allow_insecure_public`, a demo) never
/// serves it.
pub fn mounted(web: &WebState) -> bool {
    let loopback = web
        .config
        .http
        .listen
        .parse::<std::net::SocketAddr>()
        .is_ok_and(|a| a.ip().is_loopback());
    loopback || web.tls.http().is_some()
}

/// `/admin` and `/admin/api/...`.
pub fn router(web: WebState, chain: Arc<crate::chain::Monitor>) -> Router {
    let state = AdminState {
        web,
        sessions: Arc::new(session::Sessions::default()),
        chain,
    };
    Router::new()
        .route("/admin", get(assets::index))
        .route("/admin/", get(assets::index))
        .route("/admin/assets/{file}", get(assets::asset))
        .route(
            "/admin/api/session",
            post(session::login).delete(session::logout),
        )
        .route("/admin/api/whoami", get(api::whoami))
        .route("/admin/api/studies", get(api::studies))
        .route("/admin/api/studies/{study}", get(api::study))
        .route(
            "/admin/api/studies/{study}/series/{series}/thumbnail",
            get(api::thumbnail),
        )
        .route("/admin/api/transfers", get(api::transfers))
        .route("/admin/api/transfers/events", get(api::transfer_events))
        .route("/admin/api/transfers/{id}", delete(api::cancel_transfer))
        .route("/admin/api/queues", get(api::queues))
        .route("/admin/api/queues/forward/requeue", post(api::requeue))
        .route(
            "/admin/api/queues/publication/{study}/publish",
            post(api::publish_now),
        )
        .route("/admin/api/audit", get(api::audit))
        .route("/admin/api/audit.csv", get(api::audit_csv))
        .route("/admin/api/peers", get(peers::peers))
        .route("/admin/chain", get(peers::chain))
        .route("/admin/api/config", get(api::config))
        .with_state(state)
}

/// Why a console request was not answered.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let status = match &self {
            AdminError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            AdminError::Forbidden(_) => StatusCode::FORBIDDEN,
            AdminError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AdminError::NotFound(_) => StatusCode::NOT_FOUND,
            AdminError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AdminError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::error!(error = %self, "console request failed");
        }
        (
            status,
            [(header::CACHE_CONTROL, "no-store")],
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}

impl From<crate::core::CoreError> for AdminError {
    fn from(e: crate::core::CoreError) -> Self {
        use crate::core::{CoreError, Refusal};
        match e {
            CoreError::Refused(Refusal::Unauthenticated(why)) => AdminError::Unauthorized(why),
            CoreError::Refused(Refusal::Forbidden(why)) => AdminError::Forbidden(why),
            CoreError::Refused(Refusal::Unavailable(why)) => AdminError::Unavailable(why),
            CoreError::NotFound(why) => AdminError::NotFound(why),
            other => AdminError::Internal(other.to_string()),
        }
    }
}

/// A console request's caller and the console's decision on it, not yet acted on (for
/// `whoami`, which tells the app whether to show its login form). The caller's credentials
/// are those of the request (client certificate, `Authorization`) or, without an
/// `Authorization` header, those of its session cookie.
#[derive(Debug)]
pub struct Checked(pub Caller, pub Decision);

impl FromRequestParts<AdminState> for Checked {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AdminState,
    ) -> Result<Self, Self::Rejection> {
        let Ok(WebCaller(mut caller)) = WebCaller::from_request_parts(parts, state).await;
        if !parts.headers.contains_key(header::AUTHORIZATION) {
            if let Some(claims) =
                session::cookie(&parts.headers).and_then(|id| state.sessions.get(&id))
            {
                caller.ae_title = claims.subject.clone();
                caller.claims = Some(claims);
            }
        }
        let changes = !matches!(parts.method, Method::GET | Method::HEAD);
        let decision = match state.web.trust.decide(&caller, Operation::Admin) {
            Decision::Permit if changes && !parts.headers.contains_key(CSRF_HEADER) => {
                Decision::Deny(format!(
                    "a changing console request needs the {CSRF_HEADER} header"
                ))
            }
            decision => decision,
        };
        Ok(Checked(caller, decision))
    }
}

/// An admitted administrator: the caller of a request that [`Operation::Admin`] permits
/// ([`Checked`]); a refusal is audited and answered 401, 403 or 503.
#[derive(Debug)]
pub struct Admin(pub Caller);

impl FromRequestParts<AdminState> for Admin {
    type Rejection = AdminError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AdminState,
    ) -> Result<Self, Self::Rejection> {
        let Ok(Checked(caller, decision)) = Checked::from_request_parts(parts, state).await;
        refuse(&state.web, &caller, decision).await?;
        Ok(Admin(caller))
    }
}

/// Audit a refusal of the console and answer it; `Ok` for a permit.
pub(crate) async fn refuse(
    web: &WebState,
    caller: &Caller,
    decision: Decision,
) -> Result<(), AdminError> {
    let (error, grounds) = match decision {
        Decision::Permit => return Ok(()),
        Decision::Unauthenticated(why) => (
            AdminError::Unauthorized(why.clone()),
            format!("unauthenticated: {why}"),
        ),
        Decision::Deny(why) => (AdminError::Forbidden(why), String::new()),
        Decision::Unavailable(why) => (AdminError::Unavailable(why), String::new()),
    };
    let outcome = Outcome {
        result: "refused".into(),
        detail: error.to_string(),
        grounds,
        ..Default::default()
    };
    web.trust.audit(caller, Operation::Admin, outcome).await;
    Err(error)
}

/// Record one console action that changes something (or reads patient data outside the
/// core's tickets) in the audit trail.
pub(crate) async fn record(web: &WebState, caller: &Caller, detail: String) {
    let outcome = Outcome {
        result: "success".into(),
        detail,
        grounds: "operator console".into(),
        ..Default::default()
    };
    web.trust.audit(caller, Operation::Admin, outcome).await;
}
