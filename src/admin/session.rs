//! Console sessions: a bearer token is verified once (its `jti` is then spent), and the
//! browser carries a random session id in an `HttpOnly`, `SameSite=Strict` cookie, scoped to
//! `/admin`, that lives no longer than the token did. The claims are kept with the id and
//! decided again on every request ([`super::Admin`]). In memory: a restart logs everyone out.

use super::{refuse, AdminError, AdminState};
use crate::dicomweb::WebCaller;
use crate::trust::{Claims, Operation};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::collections::HashMap;
use std::sync::Mutex;

/// The cookie's name.
pub const COOKIE: &str = "beeldbrug_console";

/// Longest session, whatever the token's expiry (seconds).
const MAX_SESSION_SECS: i64 = 8 * 3600;

/// Most sessions kept at once; the oldest go first.
const MAX_SESSIONS: usize = 1000;

#[derive(Debug, Clone)]
struct Session {
    claims: Claims,
    expires_at: i64,
}

/// The live sessions by id.
#[derive(Debug, Default)]
pub struct Sessions(Mutex<HashMap<String, Session>>);

impl Sessions {
    /// A new session for verified claims; its id and expiry (Unix seconds).
    pub fn create(&self, claims: Claims) -> Result<(String, i64), AdminError> {
        let mut bytes = [0u8; 32];
        crate::trust::tls::provider()
            .secure_random
            .fill(&mut bytes)
            .map_err(|_| AdminError::Internal("no random source for a session id".into()))?;
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let now = crate::clock::unix_seconds();
        let expires_at = claims.expires_at.min(now + MAX_SESSION_SECS);
        let mut sessions = self.0.lock().unwrap_or_else(|e| e.into_inner());
        sessions.retain(|_, s| s.expires_at > now);
        if sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires_at)
                .map(|(k, _)| k.clone())
            {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(id.clone(), Session { claims, expires_at });
        Ok((id, expires_at))
    }

    /// The claims of a live session.
    pub fn get(&self, id: &str) -> Option<Claims> {
        let now = crate::clock::unix_seconds();
        let mut sessions = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match sessions.get(id) {
            Some(s) if s.expires_at > now => Some(s.claims.clone()),
            Some(_) => {
                sessions.remove(id);
                None
            }
            None => None,
        }
    }

    pub fn remove(&self, id: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    }
}

/// The session id in a request's `Cookie` header(s).
pub fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().to_string())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `POST /admin/api/session` with `Authorization: Bearer <token>`: the token must pass the
/// console's decision and carry claims (a client certificate needs no session); answers
/// with the session cookie.
pub async fn login(
    State(state): State<AdminState>,
    WebCaller(caller): WebCaller,
) -> Result<Response, AdminError> {
    let decision = state.web.trust.decide(&caller, Operation::Admin);
    refuse(&state.web, &caller, decision).await?;
    let Some(claims) = caller.claims.clone() else {
        // Admitted by its certificate: every request carries it, no session needed.
        return Ok(Json(serde_json::json!({ "session": false })).into_response());
    };
    let (id, expires_at) = state.sessions.create(claims)?;
    super::record(&state.web, &caller, "console session started".into()).await;
    let secure = if state.web.tls.http().is_some() {
        "; Secure"
    } else {
        ""
    };
    let max_age = (expires_at - crate::clock::unix_seconds()).max(0);
    let cookie =
        format!("{COOKIE}={id}; Path=/admin; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}");
    let cookie = HeaderValue::from_str(&cookie)
        .map_err(|e| AdminError::Internal(format!("session cookie: {e}")))?;
    Ok((
        [(header::SET_COOKIE, cookie)],
        Json(serde_json::json!({ "session": true, "expires_at": expires_at })),
    )
        .into_response())
}

/// `DELETE /admin/api/session`: forget the session, clear the cookie.
pub async fn logout(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    if let Some(id) = cookie(&headers) {
        state.sessions.remove(&id);
    }
    (
        [(
            header::SET_COOKIE,
            HeaderValue::from_static(
                "beeldbrug_console=; Path=/admin; HttpOnly; SameSite=Strict; Max-Age=0",
            ),
        )],
        Json(serde_json::json!({ "session": false })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::ClaimSource;

    fn claims(expires_at: i64) -> Claims {
        let mut c = Claims::of_organisation(ClaimSource::Configured, "admin", "12345678");
        c.expires_at = expires_at;
        c
    }

    #[test]
    fn a_session_ends_with_its_token_and_ids_are_random_hex() {
        let sessions = Sessions::default();
        let now = crate::clock::unix_seconds();
        let (a, until) = sessions.create(claims(now + 60)).unwrap();
        let (b, _) = sessions.create(claims(now + 60)).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert_eq!(until, now + 60);
        assert!(sessions.get(&a).is_some());
        let (gone, _) = sessions.create(claims(now - 1)).unwrap();
        assert!(sessions.get(&gone).is_none(), "an expired token's session");
        sessions.remove(&a);
        assert!(sessions.get(&a).is_none());
        // Capped at MAX_SESSION_SECS even for a long-lived credential.
        let (_, capped) = sessions
            .create(claims(now + 10 * MAX_SESSION_SECS))
            .unwrap();
        assert!(capped <= now + MAX_SESSION_SECS + 1);
    }

    #[test]
    fn the_cookie_is_found_among_others_and_checked() {
        let id = "ab".repeat(32);
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("x=1; {COOKIE}={id}; y=2")).unwrap(),
        );
        assert_eq!(cookie(&h), Some(id));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("beeldbrug_console=../../etc"),
        );
        assert_eq!(cookie(&h), None);
    }
}
