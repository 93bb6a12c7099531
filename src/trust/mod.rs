//! The one decision point every query, retrieval and store passes, whatever the front, and
//! its audit trail: exactly one audit event per operation.
//!
//! Today the decision is by AE title (known peers, or any AE when configured). Later work
//! adds the mTLS peer, the caller's token, consent and policy behind the same [`Trust::decide`].

use crate::config::Config;
use crate::store::{AuditEvent, Index};
use std::sync::Arc;

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Calling AE title (DIMSE) or client identity (HTTP).
    pub ae_title: String,
    /// Peer socket address.
    pub address: String,
}

/// What they ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Echo,
    Find,
    Store,
    Move,
    Get,
    /// QIDO-RS search (PS3.18 10.6).
    QidoRs,
    /// WADO-RS retrieve (PS3.18 10.4).
    WadoRs,
    /// STOW-RS store (PS3.18 10.5).
    StowRs,
}

impl Operation {
    pub fn name(self) -> &'static str {
        match self {
            Operation::Echo => "C-ECHO",
            Operation::Find => "C-FIND",
            Operation::Store => "C-STORE",
            Operation::Move => "C-MOVE",
            Operation::Get => "C-GET",
            Operation::QidoRs => "QIDO-RS",
            Operation::WadoRs => "WADO-RS",
            Operation::StowRs => "STOW-RS",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Permit,
    /// Refused, with the grounds (never patient data).
    Deny(String),
}

impl Decision {
    pub fn is_permit(&self) -> bool {
        matches!(self, Decision::Permit)
    }
}

impl Operation {
    /// Operations that arrive over HTTP (DICOMweb) rather than DIMSE.
    pub fn is_web(self) -> bool {
        matches!(
            self,
            Operation::QidoRs | Operation::WadoRs | Operation::StowRs
        )
    }
}

/// The caller name of an HTTP request that carries no credentials.
pub const ANONYMOUS: &str = "anonymous";

/// The outcome of one operation, for its audit event.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub patient_ids: Vec<String>,
    pub study_uids: Vec<String>,
    /// "success", "refused", "failure", "cancelled", "partial".
    pub result: String,
    pub detail: String,
}

#[derive(Debug)]
pub struct Trust {
    allow_unknown_callers: bool,
    known_aes: Vec<String>,
    allow_anonymous_web: bool,
    index: Arc<dyn Index>,
}

impl Trust {
    pub fn new(config: &Config, index: Arc<dyn Index>) -> Self {
        Trust {
            allow_unknown_callers: config.dimse.allow_unknown_callers,
            known_aes: config
                .dimse
                .peers
                .iter()
                .map(|p| p.ae_title.clone())
                // The local PACS stores into us (C-MOVE sub-operations, its own sends).
                .chain(config.pacs.iter().map(|p| p.ae_title.clone()))
                .collect(),
            allow_anonymous_web: config.dicomweb.allow_anonymous,
            index,
        }
    }

    /// May this caller open an association at all?
    pub fn admit(&self, caller: &Caller) -> Decision {
        if self.allow_unknown_callers || self.known_aes.iter().any(|a| a == caller.ae_title.trim())
        {
            Decision::Permit
        } else {
            Decision::Deny(format!(
                "calling AE {:?} is not a known peer",
                caller.ae_title
            ))
        }
    }

    /// The decision for one operation. Every front calls this before it answers.
    pub fn decide(&self, caller: &Caller, operation: Operation) -> Decision {
        if operation.is_web() {
            // No HTTP credentials exist yet (tokens and mTLS come with the trust issue), so an
            // HTTP caller is anonymous, admitted only where the configuration allows it.
            return if self.allow_anonymous_web {
                Decision::Permit
            } else {
                Decision::Deny("anonymous DICOMweb access is disabled".into())
            };
        }
        self.admit(caller)
    }

    /// Record the one audit event of an operation. An audit failure is logged loudly but
    /// does not undo an operation that already happened.
    pub async fn audit(&self, caller: &Caller, operation: Operation, outcome: Outcome) {
        let event = AuditEvent {
            time: now_rfc3339(),
            operation: operation.name().to_string(),
            actor: caller.ae_title.clone(),
            source: caller.address.clone(),
            patient_ids: outcome.patient_ids.join("\\"),
            study_uids: outcome.study_uids.join("\\"),
            outcome: outcome.result,
            detail: outcome.detail,
        };
        if let Err(e) = self.index.record_audit(&event).await {
            tracing::error!(error = %e, operation = event.operation, "could not record audit event");
        }
    }
}

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
