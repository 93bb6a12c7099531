//! The policy (issue 5, item 4): one decision for every query and retrieval, on every front.
//!
//! [`Trust::decide`](super::Trust::decide) admits the caller before anything is read: peer
//! authenticated (participant certificate, or a known AE inside the hospital), claims valid,
//! role allowed. Then, for each patient whose data would leave, [`Trust::patient_access`]:
//! the patient is the one the token is bound to (if it is bound), the patient has a BSN, and
//! consent permits (REFERENCE §2: "no BSN, no exchange"; Deny and Indeterminate refuse).

use super::consent::{ConsentDecision, ConsentRequest};
use super::{Caller, ClaimSource, Claims, Decision, Trust};
use std::collections::{BTreeMap, BTreeSet};

/// A patient's decision with the grounds that go into the audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatientDecision {
    pub decision: Decision,
    /// The consent answer, when consent was asked.
    pub consent: Option<ConsentDecision>,
    /// Why the consent service gave no usable answer (for the audit grounds only: the caller
    /// is told just the decision).
    pub consent_failure: Option<String>,
}

impl PatientDecision {
    fn permit(consent: Option<ConsentDecision>) -> Self {
        PatientDecision {
            decision: Decision::Permit,
            consent,
            consent_failure: None,
        }
    }

    fn deny(why: impl Into<String>, consent: Option<ConsentDecision>) -> Self {
        PatientDecision {
            decision: Decision::Deny(why.into()),
            consent,
            consent_failure: None,
        }
    }
}

/// Is this a BSN: nine ASCII digits d1..d9 passing the 11-test (elfproef, REFERENCE §2),
/// 9·d1 + 8·d2 + … + 2·d8 − d9 ≡ 0 (mod 11) with a sum that is not zero? The one 11-test of
/// the crate: the policy, the token claims, the audit messages and the test data use it.
pub fn is_bsn(value: &str) -> bool {
    let b = value.as_bytes();
    if b.len() != 9 || !b.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let weighted: i64 = b[..8]
        .iter()
        .zip((2..=9).rev())
        .map(|(&c, w)| i64::from(c - b'0') * w)
        .sum();
    let sum = weighted - i64::from(b[8] - b'0');
    sum != 0 && sum % 11 == 0
}

impl Trust {
    /// The claims that count for this caller: verified claims, else those configured for its
    /// `[[dimse.peers]]` entry (a DIMSE caller inside or outside the hospital).
    pub fn effective_claims(&self, caller: &Caller) -> Option<Claims> {
        if let Some(claims) = &caller.claims {
            return Some(claims.clone());
        }
        if let Some(participant) = &caller.participant {
            // A remote gateway without a token is still another organisation: its patient
            // answers need consent (no purpose claimed, so whatever the purposes list says).
            return Some(Claims::of_organisation(
                ClaimSource::Participant,
                &participant.name,
                &participant.ura,
            ));
        }
        if !caller.dimse {
            return None;
        }
        let peer = self
            .dimse_peers
            .iter()
            .find(|p| p.ae_title == caller.ae_title.trim())?;
        let ura = peer.organisation_ura.as_deref()?;
        let mut claims = Claims::of_organisation(ClaimSource::Configured, &peer.ae_title, ura);
        claims.role = peer.role.clone().unwrap_or_default();
        claims.purpose_of_use = peer.purpose_of_use.clone().unwrap_or_default();
        claims.professional_uzi = peer.uzi.clone().unwrap_or_default();
        Some(claims)
    }

    /// Checks on the claims alone, before any data is read: the role may see images.
    pub(super) fn check_claims(&self, caller: &Caller) -> Decision {
        let Some(claims) = self.effective_claims(caller) else {
            return Decision::Permit;
        };
        let roles = &self.config.allowed_roles;
        if !roles.is_empty() && !roles.iter().any(|r| r == &claims.role) {
            return Decision::Deny(format!("role {:?} may not see image data", claims.role));
        }
        Decision::Permit
    }

    /// Whether the answer depends on the patient: the claims bind a patient, or the caller is
    /// another organisation asking for a purpose that needs consent. When false, the fronts
    /// skip the per-patient checks (and their lookups) entirely.
    pub fn patient_scoped(&self, caller: &Caller) -> bool {
        match self.effective_claims(caller) {
            Some(claims) => claims.patient_bsn.is_some() || self.needs_consent(&claims),
            None => false,
        }
    }

    fn needs_consent(&self, claims: &Claims) -> bool {
        let own = self.config.own_ura.trim();
        let other_organisation = own.is_empty() || claims.organisation_ura != own;
        let purpose_needs_consent = self.consent.needed_for(&claims.purpose_of_use)
            // No claimed purpose: consent is asked whenever a consent service is configured.
            || (claims.source == ClaimSource::Participant && self.consent.is_configured());
        other_organisation && purpose_needs_consent
    }

    /// May data of this patient (the data set's Patient ID) go to this caller?
    pub async fn patient_access(&self, caller: &Caller, patient_id: &str) -> PatientDecision {
        let Some(claims) = self.effective_claims(caller) else {
            return PatientDecision::permit(None);
        };
        let patient_id = patient_id.trim();
        if let Some(bound) = &claims.patient_bsn {
            if bound != patient_id {
                return PatientDecision::deny("the token is bound to another patient", None);
            }
        }
        if !self.needs_consent(&claims) {
            return PatientDecision::permit(None);
        }
        if !is_bsn(patient_id) {
            return PatientDecision::deny("the patient has no BSN: no exchange", None);
        }
        let request = ConsentRequest {
            bsn: patient_id.to_string(),
            requester_ura: claims.organisation_ura.clone(),
            provider_uzi: claims.professional_uzi.clone(),
            role: claims.role.clone(),
            purpose_of_use: claims.purpose_of_use.clone(),
        };
        let checked = self.consent.check(&request).await;
        let answer = checked.decision;
        crate::metrics::consent_answer(&format!("{answer:?}"));
        if self.consent.permits(answer) {
            PatientDecision::permit(Some(answer))
        } else {
            let mut refusal = PatientDecision::deny(format!("consent: {answer:?}"), Some(answer));
            refusal.consent_failure = checked.reason;
            refusal
        }
    }

    /// [`Trust::patient_access`] for several patients at once: the consent questions of a
    /// search's page go out together, not one round trip after another.
    pub async fn patients_access<'a>(
        &self,
        caller: &Caller,
        patient_ids: impl IntoIterator<Item = &'a str>,
    ) -> BTreeMap<String, PatientDecision> {
        let distinct: BTreeSet<&str> = patient_ids.into_iter().collect();
        let decisions =
            futures::future::join_all(distinct.iter().map(|id| self.patient_access(caller, id)))
                .await;
        distinct
            .into_iter()
            .map(str::to_string)
            .zip(decisions)
            .collect()
    }
}

impl Trust {
    /// A query of a caller whose claims are bound to one patient asks for that patient only
    /// (so paging counts only what may be returned); a query naming another patient stays
    /// as it is and is refused by [`Trust::filter_matches`].
    pub fn scope_query(
        &self,
        caller: &Caller,
        query: crate::model::query::Query,
    ) -> crate::model::query::Query {
        let Some(bsn) = self.effective_claims(caller).and_then(|c| c.patient_bsn) else {
            return query;
        };
        let names_patient = query.keys.iter().any(|k| k.attr.keyword == "PatientID");
        match crate::model::query::indexed_attr_by_keyword("PatientID") {
            Some(attr) if !names_patient => {
                query.with_key(attr, crate::model::Matcher::Single(bsn))
            }
            _ => query,
        }
    }

    /// Keep the query matches whose patient this caller may see (PS3.4 C.4.1 / PS3.18 10.6:
    /// a withheld patient's matches are simply not returned). Returns the decisions too, for
    /// the audit record. Matches without a Patient ID are withheld when the answer is
    /// patient-scoped.
    pub async fn filter_matches(
        &self,
        caller: &Caller,
        matches: Vec<crate::model::query::Match>,
    ) -> (
        Vec<crate::model::query::Match>,
        BTreeMap<String, PatientDecision>,
    ) {
        if !self.patient_scoped(caller) {
            return (matches, BTreeMap::new());
        }
        const PATIENT_ID: dicom_core::Tag = dicom_core::Tag(0x0010, 0x0020);
        let decisions = self
            .patients_access(
                caller,
                matches
                    .iter()
                    .map(|m| m.get(&PATIENT_ID).map(String::as_str).unwrap_or("")),
            )
            .await;
        let kept = matches
            .into_iter()
            .filter(|m| {
                let id = m.get(&PATIENT_ID).map(String::as_str).unwrap_or("");
                decisions.get(id).is_some_and(|d| d.decision.is_permit())
            })
            .collect();
        (kept, decisions)
    }
}

/// The refusal of the one patient a query names by a single-valued PatientID, if refused:
/// such a query is answered with a refusal rather than an empty result.
pub fn named_patient_refused(
    query: &crate::model::query::Query,
    decisions: &BTreeMap<String, PatientDecision>,
) -> Option<String> {
    let named = query.keys.iter().find_map(|k| match &k.matcher {
        crate::model::Matcher::Single(v) if k.attr.keyword == "PatientID" => Some(v.clone()),
        _ => None,
    })?;
    match decisions.get(&named) {
        Some(d) if !d.decision.is_permit() => Some(d.decision.reason().to_string()),
        _ => None,
    }
}

/// The grounds of a set of patient decisions, for the audit record (no patient data).
pub fn grounds(decisions: &BTreeMap<String, PatientDecision>) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for d in decisions.values() {
        let key = match (&d.decision, d.consent) {
            (Decision::Permit, Some(c)) => format!("permitted (consent {c:?})"),
            (Decision::Permit, None) => "permitted".to_string(),
            (refusal, _) => match &d.consent_failure {
                Some(failure) => format!("refused ({}: {failure})", refusal.reason()),
                None => format!("refused ({})", refusal.reason()),
            },
        };
        *counts.entry(key).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|(k, n)| format!("{n} patient(s) {k}"))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bsn_eleven_test() {
        assert!(is_bsn("999999990"));
        assert!(is_bsn("123456782"));
        assert!(is_bsn("111222333"));
        assert!(!is_bsn("123456789"));
        assert!(!is_bsn("12345678"));
        assert!(!is_bsn("000000000"));
        assert!(!is_bsn("12345678a"));
        assert!(!is_bsn("PAT-0001"));
        // a zero sum is no BSN even though 0 ≡ 0 (mod 11)
        assert!(!is_bsn("100000009"));
        assert!(!is_bsn("000000012"));
        assert!(!is_bsn("99999999\u{e9}"));
    }
}
