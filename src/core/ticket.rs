//! The one audit record of an operation (NEN 7513), by construction: [`Core::admit`] hands
//! out a [`Ticket`] for every operation it permits (a refusal is recorded there and then),
//! the ticket gathers the patients and studies the operation touched, and finishing it
//! writes the record. A ticket dropped unfinished (a stream whose consumer went away, a
//! handler that returned early) still writes one record: "failure: ended without outcome".
//!
//! [`Core::admit`]: super::Core::admit

use crate::model::query::Match;
use crate::model::retrieve::InstanceLocation;
use crate::trust::audit::AuditError;
use crate::trust::{Caller, Operation, Outcome, Trust};
use dicom_core::Tag;
use std::collections::BTreeSet;
use std::sync::Arc;

const PATIENT_ID: Tag = Tag(0x0010, 0x0020);
const STUDY_INSTANCE_UID: Tag = Tag(0x0020, 0x000D);

/// One permitted operation, owed one audit record.
#[derive(Debug)]
pub struct Ticket {
    trust: Arc<Trust>,
    caller: Caller,
    operation: Operation,
    patients: BTreeSet<String>,
    studies: BTreeSet<String>,
    grounds: String,
    written: bool,
}

impl Ticket {
    pub(super) fn new(trust: Arc<Trust>, caller: &Caller, operation: Operation) -> Ticket {
        Ticket {
            trust,
            caller: caller.clone(),
            operation,
            patients: BTreeSet::new(),
            studies: BTreeSet::new(),
            grounds: String::new(),
            written: false,
        }
    }

    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    pub fn operation(&self) -> Operation {
        self.operation
    }

    /// The operation sent (or refused) these instances.
    pub fn touch(&mut self, locations: &[InstanceLocation]) {
        for l in locations {
            self.patients.insert(l.patient_id.clone());
            self.studies.insert(l.study_instance_uid.clone());
        }
    }

    /// The operation returned this match.
    pub fn touch_match(&mut self, m: &Match) {
        if let Some(p) = m.get(&PATIENT_ID) {
            self.patients.insert(p.clone());
        }
        if let Some(s) = m.get(&STUDY_INSTANCE_UID) {
            self.studies.insert(s.clone());
        }
    }

    /// Patients and studies the operation touched, by their IDs (a refused selection, what
    /// a store or a delete changed).
    pub fn touch_ids(&mut self, patients: &[String], studies: &[String]) {
        self.patients.extend(patients.iter().cloned());
        self.studies.extend(studies.iter().cloned());
    }

    /// On what grounds the patients were permitted or refused (consent answers).
    pub(super) fn set_grounds(&mut self, grounds: String) {
        self.grounds = grounds;
    }

    fn outcome(&mut self, result: &str, detail: String) -> Outcome {
        self.written = true;
        Outcome {
            patient_ids: std::mem::take(&mut self.patients).into_iter().collect(),
            study_uids: std::mem::take(&mut self.studies).into_iter().collect(),
            result: result.into(),
            detail,
            grounds: std::mem::take(&mut self.grounds),
        }
    }

    /// The operation turned out to be none (the C-STOREs of an association that stored and
    /// failed nothing): no record is owed.
    pub(super) fn discard(mut self) {
        self.written = true;
    }

    /// Write the record: `result` is "success", "failure", "cancelled", "partial" or
    /// "refused"; the patients and studies are those touched.
    pub async fn finish(mut self, result: &str, detail: impl Into<String>) {
        let outcome = self.outcome(result, detail.into());
        self.trust
            .audit(&self.caller, self.operation, outcome)
            .await;
    }

    /// [`Ticket::finish`] before the answer goes out: on `Err` the front refuses instead
    /// (HTTP 503, DIMSE failure), so no answer leaves unaudited.
    pub async fn finish_before_answer(
        mut self,
        result: &str,
        detail: impl Into<String>,
    ) -> Result<(), AuditError> {
        let outcome = self.outcome(result, detail.into());
        self.trust
            .audit_before_answer(&self.caller, self.operation, outcome)
            .await
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.written {
            return;
        }
        tracing::warn!(
            operation = self.operation.name(),
            "operation ended without an outcome; audited as failure"
        );
        let outcome = self.outcome("failure", "ended without outcome".into());
        let (trust, caller, operation) = (self.trust.clone(), self.caller.clone(), self.operation);
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move { trust.audit(&caller, operation, outcome).await });
            }
            Err(_) => tracing::error!(
                operation = operation.name(),
                "no runtime to write the audit record of an operation dropped unfinished"
            ),
        }
    }
}
