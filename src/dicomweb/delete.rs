//! `DELETE` of a study, series or instance. PS3.18 (2024) defines no delete transaction; the
//! resources and answers follow common practice (dcm4chee-arc, Orthanc): `DELETE` on
//! `/studies/{study}`, `/studies/{study}/series/{series}` and
//! `/studies/{study}/series/{series}/instances/{instance}`; 204 when removed, 404 when
//! nothing matched.
//!
//! Who may: our own organisation only (a token whose URA is `trust.own_ura`), or a caller
//! without credentials from loopback where anonymous DICOMweb is allowed (the demo, or an
//! operator on the host); never a remote gateway (`Trust::decide`, [`Operation::Delete`]).
//! Each request leaves one audit record naming the patients and studies removed.

use super::{WebCaller, WebError, WebState};
use crate::core::Selection;
use crate::trust::Operation;
use axum::extract::{Path, State};
use axum::http::StatusCode;

pub async fn study(
    State(state): State<WebState>,
    caller: WebCaller,
    Path(study): Path<String>,
) -> Result<StatusCode, WebError> {
    let selection = Selection {
        study_uids: vec![study],
        ..Default::default()
    };
    remove(&state, caller, selection).await
}

pub async fn series(
    State(state): State<WebState>,
    caller: WebCaller,
    Path((study, series)): Path<(String, String)>,
) -> Result<StatusCode, WebError> {
    let selection = Selection {
        study_uids: vec![study],
        series_uids: vec![series],
        ..Default::default()
    };
    remove(&state, caller, selection).await
}

pub async fn instance(
    State(state): State<WebState>,
    caller: WebCaller,
    Path((study, series, instance)): Path<(String, String, String)>,
) -> Result<StatusCode, WebError> {
    let selection = Selection {
        study_uids: vec![study],
        series_uids: vec![series],
        sop_instance_uids: vec![instance],
        ..Default::default()
    };
    remove(&state, caller, selection).await
}

async fn remove(
    state: &WebState,
    WebCaller(caller): WebCaller,
    selection: Selection,
) -> Result<StatusCode, WebError> {
    let ticket = state.core.admit(&caller, Operation::Delete).await?;
    state.core.delete(ticket, selection).await?;
    Ok(StatusCode::NO_CONTENT)
}
