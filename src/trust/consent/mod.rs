//! Patient consent, Mitz style (REFERENCE §2): before metadata or pixels of a patient leave,
//! the data holder asks the "closed question" — may this requester (URA, UZI, role) see data
//! of this patient (BSN), held by a facility of our type, for this purpose of use? — as an
//! XACML `XACMLAuthzDecisionQuery` (SAML 2.0 profile of XACML v2.0) over SOAP 1.2 with mTLS,
//! answered Permit / Deny / Indeterminate / NotApplicable (XACML 2.0 core §6.11). Answers are
//! kept a short while. Deny and Indeterminate refuse; NotApplicable (no consent registered)
//! refuses unless configured otherwise. A service that is down, slow or answers garbage gives
//! Indeterminate with a logged reason.
//!
//!
//! The requesting side asks the "open question" ([`Consent::locate`]): at which data holders
//! may this requester find data of this patient? Its gateway then queries only those.
//!
//! - [`xacml`]: the messages (query, response, SOAP faults), both directions.
//! - [`client`]: one question over HTTP(S).
//! - [`cache`]: the short-lived decision cache.
//! - [`simulator`]: `beeldbrug mitz-sim`, a test and demo stand-in for Mitz.

pub mod cache;
pub mod client;
pub mod simulator;
pub mod xacml;

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

// The settings' types live in `config/trust.rs` (config imports no module it configures).
pub use crate::config::trust::{ConsentConfig, NotApplicable};

/// What is asked: may `requester` see data of `bsn` for `purpose_of_use`? The whole request
/// is the cache key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConsentRequest {
    pub bsn: String,
    pub requester_ura: String,
    pub provider_uzi: String,
    pub role: String,
    pub purpose_of_use: String,
}

/// The XACML decision (XACML 2.0 core §6.11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConsentDecision {
    Permit,
    Deny,
    Indeterminate,
    NotApplicable,
}

impl ConsentDecision {
    pub fn as_str(self) -> &'static str {
        match self {
            ConsentDecision::Permit => "Permit",
            ConsentDecision::Deny => "Deny",
            ConsentDecision::Indeterminate => "Indeterminate",
            ConsentDecision::NotApplicable => "NotApplicable",
        }
    }

    /// The `<Decision>` text (xs:string enumeration, case-sensitive).
    pub fn parse(text: &str) -> Option<ConsentDecision> {
        [
            ConsentDecision::Permit,
            ConsentDecision::Deny,
            ConsentDecision::Indeterminate,
            ConsentDecision::NotApplicable,
        ]
        .into_iter()
        .find(|d| d.as_str() == text)
    }

    /// Of two results, the one that lets less through (deny-overrides order).
    pub fn stricter(self, other: ConsentDecision) -> ConsentDecision {
        fn rank(d: ConsentDecision) -> u8 {
            match d {
                ConsentDecision::Deny => 3,
                ConsentDecision::Indeterminate => 2,
                ConsentDecision::NotApplicable => 1,
                ConsentDecision::Permit => 0,
            }
        }
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }
}

impl std::fmt::Display for ConsentDecision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A decision and how it came about, for the audit record's grounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentOutcome {
    pub decision: ConsentDecision,
    /// Answered from the cache.
    pub cached: bool,
    /// Why there is no real answer (Indeterminate from an error); never patient data.
    pub reason: Option<String>,
}

/// The consent check with its cache.
#[derive(Debug)]
pub struct Consent {
    config: ConsentConfig,
    cache: cache::DecisionCache,
    /// The endpoint, or why it could not be set up (bad url, unreadable certificate).
    endpoint: Result<client::Endpoint, String>,
}

impl Default for Consent {
    fn default() -> Self {
        Consent::new(&ConsentConfig::default())
    }
}

impl Consent {
    pub fn new(config: &ConsentConfig) -> Consent {
        let endpoint = if config.url.is_empty() {
            Err("no consent service configured".to_string())
        } else {
            client::Endpoint::new(
                &config.url,
                config.ca_file.as_ref(),
                config.cert_file.as_ref(),
                config.key_file.as_ref(),
            )
            .map_err(|e| {
                tracing::error!(error = %e, "trust.consent: every consent decision will be Indeterminate");
                e.to_string()
            })
        };
        Consent {
            config: config.clone(),
            cache: cache::DecisionCache::new(Duration::from_secs(config.cache_secs)),
            endpoint,
        }
    }

    /// Does this purpose of use need a consent check?
    /// Is a consent service configured at all?
    pub fn is_configured(&self) -> bool {
        !self.config.url.is_empty()
    }

    pub fn needed_for(&self, purpose_of_use: &str) -> bool {
        !self.config.url.is_empty()
            && self
                .config
                .purposes
                .iter()
                .any(|p| p == "*" || p.eq_ignore_ascii_case(purpose_of_use))
    }

    /// The decision; a service that cannot be reached gives Indeterminate.
    pub async fn decide(&self, request: &ConsentRequest) -> ConsentDecision {
        self.check(request).await.decision
    }

    /// The decision with how it came about. Answers of the service are cached; Indeterminate
    /// never is (it stands for an error, here or at the service, worth asking again).
    pub async fn check(&self, request: &ConsentRequest) -> ConsentOutcome {
        let outcome = |decision, cached, reason: Option<String>| ConsentOutcome {
            decision,
            cached,
            reason,
        };
        if self.config.url.is_empty() {
            return outcome(ConsentDecision::NotApplicable, false, None);
        }
        if request.bsn.trim().is_empty() {
            // REFERENCE §2: no BSN, no exchange.
            return outcome(
                ConsentDecision::Indeterminate,
                false,
                Some("no BSN to ask consent for".into()),
            );
        }
        if let Some(decision) = self.cache.get(request) {
            return outcome(decision, true, None);
        }
        let endpoint = match &self.endpoint {
            Ok(endpoint) => endpoint,
            Err(why) => {
                tracing::warn!(reason = %why, "consent check: Indeterminate");
                return outcome(ConsentDecision::Indeterminate, false, Some(why.clone()));
            }
        };
        let question = xacml::Question {
            facility_type: self.config.facility_type.clone(),
            custodian_ura: self.config.custodian_ura.clone(),
            ..question_for(request, false)
        };
        let timeout = Duration::from_secs(self.config.timeout_secs.max(1));
        match endpoint.ask(&question, &self.config.issuer, timeout).await {
            Ok(ConsentDecision::Indeterminate) => {
                let why = "the consent service answered Indeterminate".to_string();
                tracing::warn!(query = %question.id, "consent check: {why}");
                outcome(ConsentDecision::Indeterminate, false, Some(why))
            }
            Ok(decision) => {
                tracing::debug!(query = %question.id, %decision, "consent check");
                self.cache.put(request, decision);
                outcome(decision, false, None)
            }
            Err(e) => {
                tracing::warn!(query = %question.id, url = %endpoint.url, error = %e, "consent check failed: Indeterminate");
                outcome(ConsentDecision::Indeterminate, false, Some(e.to_string()))
            }
        }
    }

    /// The open question (REFERENCE §2): at which data holders (URAs) may the requester of
    /// `request` find data of its patient? Not cached: it comes before a fan-out of queries
    /// that costs more. An error (no service, unreachable, a fault, garbage) is the reason
    /// there is no answer.
    pub async fn locate(&self, request: &ConsentRequest) -> Result<Vec<String>, String> {
        let endpoint = self.endpoint.as_ref().map_err(Clone::clone)?;
        if request.bsn.trim().is_empty() {
            return Err("no BSN to ask for".into());
        }
        let question = question_for(request, true);
        let timeout = Duration::from_secs(self.config.timeout_secs.max(1));
        endpoint
            .ask_open(&question, &self.config.issuer, timeout)
            .await
            .map_err(|e| {
                tracing::warn!(query = %question.id, url = %endpoint.url, error = %e, "open question failed");
                e.to_string()
            })
    }

    /// May data leave on this decision? Deny and Indeterminate never; NotApplicable per
    /// configuration.
    pub fn permits(&self, decision: ConsentDecision) -> bool {
        match decision {
            ConsentDecision::Permit => true,
            ConsentDecision::NotApplicable => self.config.not_applicable == NotApplicable::Permit,
            ConsentDecision::Deny | ConsentDecision::Indeterminate => false,
        }
    }
}

/// 16 bytes that differ per call and process (SHA-256 of time, a counter and the process
/// id): identifiers, not secrets.
fn unique_bytes() -> [u8; 16] {
    use sha2::Digest;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = sha2::Sha256::new();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    hasher.update(nanos.to_le_bytes());
    hasher.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    hasher.update(std::process::id().to_le_bytes());
    let digest = hasher.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

/// A SAML ID (xs:ID, an NCName: starts with `_`).
pub(crate) fn new_id() -> String {
    let hex: String = unique_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("_{hex}")
}

/// A version-4-shaped UUID for WS-Addressing MessageIDs.
pub(crate) fn new_uuid() -> String {
    let mut b = unique_bytes();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A question to Mitz about `request`'s patient, with fresh identifiers: the closed one
/// (may this requester see the data here?) or the open one (where is there data?); the
/// closed question's facility and custodian are filled in by the caller.
fn question_for(request: &ConsentRequest, open: bool) -> xacml::Question {
    xacml::Question {
        open,
        id: new_id(),
        message_id: format!("urn:uuid:{}", new_uuid()),
        bsn: request.bsn.trim().to_string(),
        requester_ura: request.requester_ura.clone(),
        provider_uzi: request.provider_uzi.clone(),
        role: request.role.clone(),
        purpose_of_use: request.purpose_of_use.clone(),
        facility_type: String::new(),
        custodian_ura: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigError;

    #[test]
    fn defaults_and_purposes() {
        let off = Consent::new(&ConsentConfig::default());
        assert!(!off.needed_for("TREATMENT"));
        let all = Consent::new(&ConsentConfig {
            url: "http://127.0.0.1:9/".into(),
            ..Default::default()
        });
        assert!(all.needed_for("TREATMENT") && all.needed_for(""));
        let some = Consent::new(&ConsentConfig {
            url: "http://127.0.0.1:9/".into(),
            purposes: vec!["TREATMENT".into(), "COC".into()],
            ..Default::default()
        });
        assert!(some.needed_for("treatment") && some.needed_for("COC"));
        assert!(!some.needed_for("ETREAT"));
    }

    #[test]
    fn permits_per_configuration() {
        let deny = Consent::default();
        assert!(deny.permits(ConsentDecision::Permit));
        assert!(!deny.permits(ConsentDecision::Deny));
        assert!(!deny.permits(ConsentDecision::Indeterminate));
        assert!(!deny.permits(ConsentDecision::NotApplicable));
        let permit = Consent::new(&ConsentConfig {
            not_applicable: NotApplicable::Permit,
            ..Default::default()
        });
        assert!(permit.permits(ConsentDecision::NotApplicable));
        assert!(!permit.permits(ConsentDecision::Indeterminate));
    }

    #[test]
    fn validate_names_the_key() {
        let bad = |c: ConsentConfig| match c.validate() {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("{other:?}"),
        };
        let url = |u: &str| ConsentConfig {
            url: u.into(),
            ..Default::default()
        };
        assert!(ConsentConfig::default().validate().is_ok());
        assert!(url("http://localhost:1/mitz").validate().is_ok());
        assert_eq!(bad(url("ftp://x")), "trust.consent.url");
        assert_eq!(bad(url("https://mitz")), "trust.consent.ca_file");
        assert_eq!(
            bad(ConsentConfig {
                timeout_secs: 0,
                ..url("http://x")
            }),
            "trust.consent.timeout_secs"
        );
    }

    #[test]
    fn ids_are_ncnames_and_unique() {
        let (a, b) = (new_id(), new_id());
        assert_ne!(a, b);
        assert!(a.starts_with('_') && a.len() == 33);
        let u = new_uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
    }

    #[tokio::test]
    async fn unreachable_or_misconfigured_is_indeterminate() {
        let request = ConsentRequest {
            bsn: "999999990".into(),
            requester_ura: "00000666".into(),
            provider_uzi: String::new(),
            role: String::new(),
            purpose_of_use: "TREATMENT".into(),
        };
        let bad_tls = Consent::new(&ConsentConfig {
            url: "https://127.0.0.1:9/".into(),
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        });
        let outcome = bad_tls.check(&request).await;
        assert_eq!(outcome.decision, ConsentDecision::Indeterminate);
        assert!(outcome.reason.is_some());
        let no_bsn = ConsentRequest {
            bsn: " ".into(),
            ..request.clone()
        };
        let plain = Consent::new(&ConsentConfig {
            url: "http://127.0.0.1:9/".into(),
            ..Default::default()
        });
        assert_eq!(plain.decide(&no_bsn).await, ConsentDecision::Indeterminate);
        assert_eq!(
            Consent::default().decide(&request).await,
            ConsentDecision::NotApplicable
        );
    }
}
