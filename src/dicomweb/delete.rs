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

use super::{admit, WebCaller, WebError, WebState};
use crate::core::Selection;
use crate::store::delete;
use crate::trust::{Operation, Outcome};
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
    admit(state, &caller, Operation::Delete).await?;
    let result = delete::delete(state.index.as_ref(), &state.blobs, &selection).await;
    let (outcome, answer) = match result {
        Ok(deleted) if deleted.is_empty() => (
            Outcome {
                study_uids: selection.study_uids.clone(),
                result: "failure".into(),
                detail: "nothing matched".into(),
                ..Default::default()
            },
            Err(WebError::NotFound(
                "no such study, series or instance".into(),
            )),
        ),
        Ok(deleted) => (
            Outcome {
                detail: deleted.describe(),
                patient_ids: deleted.patient_ids,
                study_uids: deleted.study_uids,
                result: "success".into(),
                grounds: "operator delete (DICOMweb)".into(),
            },
            Ok(StatusCode::NO_CONTENT),
        ),
        Err(e) => (
            Outcome {
                study_uids: selection.study_uids.clone(),
                result: "failure".into(),
                detail: e.to_string(),
                ..Default::default()
            },
            Err(WebError::Internal(e.to_string())),
        ),
    };
    state.trust.audit(&caller, Operation::Delete, outcome).await;
    answer
}
