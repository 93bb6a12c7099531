//! "May they?": the trust decision of every query and retrieve, asked in one place (issue 5).
//! The fronts say who is asking (the `WebCaller` extractor, the DIMSE association policy);
//! the core decides, before any data: the operation first ([`Core::admit`]), then the
//! patients, whose answers may only be those the caller may see (token binding, BSN,
//! consent).

use super::source::Source;
use super::ticket::Ticket;
use super::{Core, CoreError, Match, Matcher, Refusal, Selection};
use crate::model::query::{indexed_attr_by_keyword, Level, Query};
use crate::trust::{policy, Caller, Decision, Operation, Outcome};
use dicom_core::Tag;
use std::collections::BTreeSet;
use std::sync::Arc;

const PATIENT_ID: Tag = Tag(0x0010, 0x0020);

/// Operations about to send data, whose record is written when they end: permitted only
/// while the audit trail takes a write ([`crate::trust::Trust::decide_before_data`]).
fn sends_data(operation: Operation) -> bool {
    matches!(
        operation,
        Operation::WadoRs | Operation::WadoUri | Operation::Get | Operation::Move
    ) || operation.is_xds()
}

impl Core {
    /// Ask the decision point for `operation`. A refusal is audited here (one record) and
    /// returned; a permit becomes the operation's [`Ticket`], owed its one record.
    pub async fn admit(&self, caller: &Caller, operation: Operation) -> Result<Ticket, CoreError> {
        let decision = if sends_data(operation) {
            self.trust.decide_before_data(caller, operation).await
        } else {
            self.trust.decide(caller, operation)
        };
        let refusal = match decision {
            Decision::Permit => return Ok(Ticket::new(self.trust.clone(), caller, operation)),
            Decision::Unauthenticated(why) => Refusal::Unauthenticated(why),
            Decision::Deny(why) => Refusal::Forbidden(why),
            Decision::Unavailable(why) => Refusal::Unavailable(why),
        };
        // "unauthenticated: ..." grounds make the audit message a User Authentication
        // (PS3.15 A.5.3.11) rather than a Security Alert.
        let grounds = match &refusal {
            Refusal::Unauthenticated(why) => format!("unauthenticated: {why}"),
            _ => String::new(),
        };
        let outcome = Outcome {
            result: "refused".into(),
            detail: refusal.reason().to_string(),
            grounds,
            ..Default::default()
        };
        self.trust.audit(caller, operation, outcome).await;
        Err(CoreError::Refused(refusal))
    }

    /// A query's answers limited to the patients the caller may see; a query that names a
    /// refused patient is refused as a whole (audited, no patient data in the answer).
    pub(super) async fn filter_matches(
        &self,
        ticket: &mut Ticket,
        query: &Query,
        matches: Vec<Match>,
    ) -> Result<Vec<Match>, CoreError> {
        let (matches, decisions) = self.trust.filter_matches(ticket.caller(), matches).await;
        ticket.set_grounds(policy::grounds(&decisions));
        if let Some(refused) = policy::named_patient_refused(query, &decisions) {
            let patients: Vec<String> = decisions.keys().cloned().collect();
            ticket.touch_ids(&patients, &[]);
            return Err(CoreError::Refused(Refusal::Forbidden(refused)));
        }
        Ok(matches)
    }

    /// The per-patient decision for a retrieve, before the first byte: every patient of the
    /// selection must be one the caller may see. The patients are those the selection names,
    /// those of its studies (from the cache, else from the sources), and `located` (the
    /// instances the cache holds for it). A study nobody knows counts as the empty patient:
    /// a patient-scoped caller is refused it rather than let through unchecked.
    pub(super) async fn admit_patients(
        &self,
        ticket: &mut Ticket,
        selection: &Selection,
        sources: &[Arc<dyn Source>],
        located: &[super::InstanceLocation],
    ) -> Result<(), CoreError> {
        if !self.trust.patient_scoped(ticket.caller()) {
            return Ok(());
        }
        let mut patients: BTreeSet<String> = selection.patient_ids.iter().cloned().collect();
        patients.extend(
            self.patients_of(selection, sources, ticket.caller())
                .await?,
        );
        patients.extend(located.iter().map(|l| l.patient_id.clone()));
        let patients: Vec<String> = patients.into_iter().collect();
        let decisions = self
            .trust
            .patients_access(ticket.caller(), patients.iter().map(String::as_str))
            .await;
        let Some(refused) = decisions.values().find(|d| !d.decision.is_permit()) else {
            return Ok(());
        };
        let reason = refused.decision.reason().to_string();
        ticket.touch_ids(&patients, &selection.study_uids);
        ticket.set_grounds(policy::grounds(&decisions));
        Err(CoreError::Refused(Refusal::Forbidden(reason)))
    }

    /// The patients of the selected studies: from the cache, else from the sources.
    pub(super) async fn patients_of(
        &self,
        selection: &Selection,
        sources: &[Arc<dyn Source>],
        caller: &crate::trust::Caller,
    ) -> Result<Vec<String>, CoreError> {
        let attr = indexed_attr_by_keyword("StudyInstanceUID").expect("indexed");
        let mut patients = BTreeSet::new();
        for study in &selection.study_uids {
            let query = Query::new(Level::Study).with_key(attr, Matcher::Single(study.clone()));
            let mut found = self.index.find(&query).await?;
            if found.is_empty() && !sources.is_empty() {
                for source in sources {
                    found.extend(source.find_for(caller, &query, 1).await?);
                }
                if found.is_empty() {
                    patients.insert(String::new());
                }
            }
            patients.extend(patient_ids(&found));
        }
        Ok(patients.into_iter().collect())
    }
}

/// The Patient ID of each match; the empty ID where a match has none.
fn patient_ids(found: &[Match]) -> impl Iterator<Item = String> + '_ {
    found
        .iter()
        .map(|m| m.get(&PATIENT_ID).cloned().unwrap_or_default())
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
