//! The per-patient part of the trust decision for DICOMweb retrieves (issue 5): before any
//! metadata or pixels of a study leave, its patient must be one the caller may see (token
//! binding, BSN, consent). Skipped entirely when the caller's answers are not patient-scoped.

use super::{WebError, WebState};
use crate::core::query::{indexed_attr_by_keyword, Level, Query};
use crate::core::{Match, Matcher, Selection};
use crate::trust::{policy, Caller, Operation, Outcome};
use dicom_core::Tag;
use std::collections::BTreeSet;

const PATIENT_ID: Tag = Tag(0x0010, 0x0020);

/// The patients of the selected studies: from the index, else (gateway mode) from the PACS.
/// A match without a Patient ID counts as the empty ID, and in gateway mode so does a study
/// the PACS did not find (its retrieve may still deliver instances): a patient-scoped caller
/// is refused those rather than let through unchecked.
async fn patients_of(state: &WebState, selection: &Selection) -> Result<Vec<String>, WebError> {
    let attr = indexed_attr_by_keyword("StudyInstanceUID").expect("indexed");
    let mut patients = BTreeSet::new();
    for study in &selection.study_uids {
        let query = Query::new(Level::Study).with_key(attr, Matcher::Single(study.clone()));
        let mut found = state.index.find(&query).await?;
        if found.is_empty() {
            if let Some(gateway) = &state.gateway {
                found = gateway
                    .find(&query, 1)
                    .await
                    .map_err(|e| WebError::BadGateway(e.to_string()))?;
                if found.is_empty() {
                    patients.insert(String::new());
                }
            }
        }
        patients.extend(patient_ids(&found));
    }
    Ok(patients.into_iter().collect())
}

/// The Patient ID of each match; the empty ID where a match has none.
fn patient_ids(found: &[Match]) -> impl Iterator<Item = String> + '_ {
    found
        .iter()
        .map(|m| m.get(&PATIENT_ID).cloned().unwrap_or_default())
}

/// 403 (audited, no patient data in the answer) when a patient of the selection may not be
/// seen by this caller.
pub async fn admit_patients(
    state: &WebState,
    caller: &Caller,
    operation: Operation,
    selection: &Selection,
) -> Result<(), WebError> {
    if !state.trust.patient_scoped(caller) {
        return Ok(());
    }
    let patients = patients_of(state, selection).await?;
    let decisions = state
        .trust
        .patients_access(caller, patients.iter().map(String::as_str))
        .await;
    let refused = decisions.values().find(|d| !d.decision.is_permit());
    let Some(refused) = refused else {
        return Ok(());
    };
    let reason = refused.decision.reason().to_string();
    let outcome = Outcome {
        patient_ids: patients,
        study_uids: selection.study_uids.clone(),
        result: "refused".into(),
        detail: reason.clone(),
        grounds: policy::grounds(&decisions),
    };
    state.trust.audit(caller, operation, outcome).await;
    Err(WebError::Forbidden(reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_match_without_patient_id_is_the_empty_patient() {
        let mut with = Match::new();
        with.insert(PATIENT_ID, "999999990".into());
        let without = Match::new();
        let ids: Vec<String> = patient_ids(&[with, without]).collect();
        // The empty ID is refused for a patient-scoped caller (no BSN, not the bound one):
        // dropping it would let a study with no Patient ID through unchecked.
        assert_eq!(ids, ["999999990", ""]);
    }
}
