//! WADO-RS in gateway mode when the cache does not hold the selection: the instances are
//! written into the multipart response as the PACS retrieve stores them, from the first one
//! (DESIGN flow 1). The response follows the shared retrieve ([`Follower`]); a client that
//! goes away drops its follower, and the last one gone cancels the PACS retrieve.

use super::media::{instance_choices, parse_accept, Framing};
use super::multipart;
use super::producer::{self, SendError};
use super::wado::Touched;
use super::{WebError, WebState};
use crate::core::Selection;
use crate::pacs::shared::Follower;
use crate::pacs::PacsError;
use crate::trust::{Caller, Operation, Outcome};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};

/// A PACS that could not answer: 502, audited.
pub async fn pacs_failed(
    state: &WebState,
    caller: &Caller,
    operation: Operation,
    error: PacsError,
) -> WebError {
    let outcome = Outcome {
        result: "failure".into(),
        detail: format!("local PACS: {error}"),
        ..Default::default()
    };
    state.trust.audit(caller, operation, outcome).await;
    WebError::BadGateway(format!("the local PACS could not answer: {error}"))
}

/// Make sure the cache holds `selection` before answering from it (metadata, frames, bulk
/// data, rendered): in gateway mode, a missing study is fetched first.
pub async fn ensure_cached(
    state: &WebState,
    caller: &Caller,
    selection: &Selection,
) -> Result<(), WebError> {
    let Some(gateway) = &state.gateway else {
        return Ok(());
    };
    match gateway.ensure_cached(selection).await {
        Ok(()) => Ok(()),
        Err(e) => Err(pacs_failed(state, caller, Operation::WadoRs, e).await),
    }
}

/// Stream a selection from a running PACS retrieve. `None`: the request wants a single
/// `application/dicom` body, which the caller answers from the cache once the retrieve is
/// done.
pub async fn retrieve(
    state: WebState,
    caller: Caller,
    headers: &HeaderMap,
    selection: Selection,
    single_resource: bool,
    mut follower: Follower,
) -> Result<Option<Response>, WebError> {
    let accept = parse_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let choices = instance_choices(&accept, single_resource);
    let Some((framing, syntax)) = choices.first().cloned() else {
        return Err(WebError::NotAcceptable(
            "acceptable: multipart/related; type=\"application/dicom\" (PS3.18 10.4.1.2)".into(),
        ));
    };
    if framing == Framing::Single {
        follower
            .wait_complete()
            .await
            .map_err(|e| WebError::BadGateway(format!("the local PACS could not answer: {e}")))?;
        return Ok(None);
    }
    let boundary = multipart::new_boundary();
    let (tx, body) = multipart::channel_body();
    let content_type = multipart::content_type(&boundary, "application/dicom", None);
    tokio::spawn(async move {
        let (mut touched, mut sent) = (Touched::default(), 0usize);
        let result = loop {
            let loc = match follower.next().await {
                Ok(Some(loc)) if selection.contains(&loc) => loc,
                Ok(Some(_)) => continue,
                Ok(None) => {
                    let close = multipart::closing(&boundary);
                    if tx.send(close).await.is_err() {
                        break "cancelled";
                    }
                    break "success";
                }
                Err(why) => {
                    tracing::warn!(%why, "PACS retrieve ended incomplete");
                    tx.fail(why).await;
                    break "failure";
                }
            };
            touched.add(std::slice::from_ref(&loc));
            let (blobs, syntax, boundary, tx) = (
                state.blobs.clone(),
                syntax.clone(),
                boundary.clone(),
                tx.clone(),
            );
            // One instance per producer call: it is flushed to the client at once.
            let produced = tokio::task::spawn_blocking(move || {
                producer::instances(&blobs, &[loc], &syntax, &boundary, &tx, false)
            })
            .await;
            match produced {
                Ok((n, Ok(()))) => sent += n,
                Ok((_, Err(SendError::Disconnected))) => break "cancelled",
                Ok((_, Err(SendError::Failed(_)))) | Err(_) => break "failure",
            }
        };
        drop(follower);
        let detail = format!("{sent} instances sent, streamed from the local PACS");
        touched.audit(&state, &caller, result, detail).await;
    });
    Ok(Some(
        ([(header::CONTENT_TYPE, content_type)], body).into_response(),
    ))
}
