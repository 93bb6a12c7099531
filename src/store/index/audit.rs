//! The audit trail's records: NEN 7513 records (who, patient, what, when, from where, on what
//! grounds, outcome) chained by hash, and the syslog messages waiting in the outbox. The
//! SQL that stores them is in `sql/audit.rs`.
//!
//! Each record's hash is SHA-256 over the previous record's hash and the record's canonical
//! serialisation ([`AuditRecord::canonical`]), so changing, removing or inserting a record
//! breaks the chain from there on.

use super::AuditEvent;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The `prev_hash` of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One record of the chain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct AuditRecord {
    /// Position in the chain, from 1 (set on append).
    pub seq: i64,
    /// UTC, RFC 3339.
    pub time: String,
    pub operation: String,
    pub outcome: String,
    pub detail: String,
    pub gateway: String,
    pub certificate_sha256: String,
    pub organisation_ura: String,
    pub professional_uzi: String,
    pub role: String,
    pub purpose_of_use: String,
    pub token_id: String,
    pub source_address: String,
    pub grounds: String,
    pub patient_ids: Vec<String>,
    pub study_uids: Vec<String>,
    /// The exchange's correlation id across gateways (issue 17 item 2); empty when the
    /// exchange had none (and in every record written before migration 9).
    #[serde(default)]
    pub correlation_id: String,
    /// The W3C trace id of the operation's trace (`telemetry`); empty without one (tracing
    /// off, and every record written before migration 11).
    #[serde(default)]
    pub trace_id: String,
    /// Hash of the record before (hex); [`GENESIS_HASH`] for the first.
    pub prev_hash: String,
    /// SHA-256 (hex) of `prev_hash`, `:` and [`canonical`](Self::canonical).
    pub hash: String,
}

/// The hashed content of a record, in a fixed field order.
#[derive(Serialize)]
struct Canonical<'a> {
    v: u32,
    seq: i64,
    time: &'a str,
    operation: &'a str,
    outcome: &'a str,
    detail: &'a str,
    gateway: &'a str,
    certificate_sha256: &'a str,
    organisation_ura: &'a str,
    professional_uzi: &'a str,
    role: &'a str,
    purpose_of_use: &'a str,
    token_id: &'a str,
    source_address: &'a str,
    grounds: &'a str,
    patient_ids: &'a [String],
    study_uids: &'a [String],
    /// Left out when empty, so that records written before the column existed keep their
    /// hash.
    #[serde(skip_serializing_if = "is_empty")]
    correlation_id: &'a str,
    /// The same for the trace id.
    #[serde(skip_serializing_if = "is_empty")]
    trace_id: &'a str,
}

fn is_empty(s: &&str) -> bool {
    s.is_empty()
}

impl AuditRecord {
    /// The canonical serialisation: compact JSON of every field but the hashes, in
    /// declaration order, with a format version (`"v":1`); `correlation_id` and `trace_id`
    /// only when set (a record without them hashes as before the fields existed).
    pub fn canonical(&self) -> String {
        let c = Canonical {
            v: 1,
            seq: self.seq,
            time: &self.time,
            operation: &self.operation,
            outcome: &self.outcome,
            detail: &self.detail,
            gateway: &self.gateway,
            certificate_sha256: &self.certificate_sha256,
            organisation_ura: &self.organisation_ura,
            professional_uzi: &self.professional_uzi,
            role: &self.role,
            purpose_of_use: &self.purpose_of_use,
            token_id: &self.token_id,
            source_address: &self.source_address,
            grounds: &self.grounds,
            patient_ids: &self.patient_ids,
            study_uids: &self.study_uids,
            correlation_id: &self.correlation_id,
            trace_id: &self.trace_id,
        };
        // Serialising strings and integers cannot fail.
        serde_json::to_string(&c).unwrap_or_default()
    }

    /// The hash this record should carry after `prev_hash`.
    pub fn chain_hash(&self, prev_hash: &str) -> String {
        let mut h = Sha256::new();
        h.update(prev_hash.as_bytes());
        h.update(b":");
        h.update(self.canonical().as_bytes());
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The patients of the record as the per-patient lookup keys them.
    pub fn patient_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .patient_ids
            .iter()
            .map(|p| patient_key(p))
            .filter(|p| !p.is_empty())
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }
}

/// A patient identifier as the lookup keys it: a BSN in XDS form
/// (`999999990^^^&2.16.840.1.113883.2.4.6.3&ISO`) becomes its bare number.
pub fn patient_key(id: &str) -> String {
    id.split('^').next().unwrap_or("").trim().to_string()
}

impl From<&AuditEvent> for AuditRecord {
    fn from(e: &AuditEvent) -> Self {
        let split = |s: &str| -> Vec<String> {
            s.split('\\')
                .filter(|v| !v.is_empty())
                .map(str::to_string)
                .collect()
        };
        AuditRecord {
            time: e.time.clone(),
            operation: e.operation.clone(),
            outcome: e.outcome.clone(),
            detail: e.detail.clone(),
            gateway: e.actor.clone(),
            source_address: e.source.clone(),
            patient_ids: split(&e.patient_ids),
            study_uids: split(&e.study_uids),
            ..Default::default()
        }
    }
}

impl From<&AuditRecord> for AuditEvent {
    fn from(r: &AuditRecord) -> Self {
        AuditEvent {
            time: r.time.clone(),
            operation: r.operation.clone(),
            actor: r.gateway.clone(),
            source: r.source_address.clone(),
            patient_ids: r.patient_ids.join("\\"),
            study_uids: r.study_uids.join("\\"),
            outcome: r.outcome.clone(),
            detail: r.detail.clone(),
        }
    }
}

/// A syslog message claimed from the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    pub id: i64,
    /// The chain record it reports.
    pub seq: i64,
    /// The whole RFC 5424 message.
    pub message: String,
    pub attempts: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_covers_every_field_and_the_previous_hash() {
        let r = AuditRecord {
            seq: 1,
            time: "2025-01-01T10:00:00Z".into(),
            operation: "C-FIND".into(),
            patient_ids: vec!["999999990".into()],
            ..Default::default()
        };
        let h = r.chain_hash(GENESIS_HASH);
        assert_eq!(h.len(), 64);
        assert_ne!(h, r.chain_hash(&"1".repeat(64)));
        let mut changed = r.clone();
        changed.detail = "x".into();
        assert_ne!(h, changed.chain_hash(GENESIS_HASH));
        let mut moved = r.clone();
        moved.seq = 2;
        assert_ne!(h, moved.chain_hash(GENESIS_HASH));
        // Lists are delimited: ["a\\b"] differs from ["a", "b"].
        let a = AuditRecord {
            patient_ids: vec!["a\\b".into()],
            ..r.clone()
        };
        let b = AuditRecord {
            patient_ids: vec!["a".into(), "b".into()],
            ..r
        };
        assert_ne!(a.canonical(), b.canonical());
    }

    #[test]
    fn the_correlation_id_is_hashed_when_set_only() {
        let r = AuditRecord {
            seq: 3,
            operation: "ITI-38".into(),
            ..Default::default()
        };
        assert!(!r.canonical().contains("correlation_id"));
        let with = AuditRecord {
            correlation_id: "urn:uuid:1".into(),
            ..r.clone()
        };
        assert!(with
            .canonical()
            .ends_with(r#","correlation_id":"urn:uuid:1"}"#));
        assert_ne!(r.chain_hash(GENESIS_HASH), with.chain_hash(GENESIS_HASH));
        // The trace id likewise, after the correlation id.
        assert!(!with.canonical().contains("trace_id"));
        let traced = AuditRecord {
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            ..with.clone()
        };
        assert!(traced.canonical().ends_with(
            r#","correlation_id":"urn:uuid:1","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"}"#
        ));
        assert_ne!(
            with.chain_hash(GENESIS_HASH),
            traced.chain_hash(GENESIS_HASH)
        );
    }

    #[test]
    fn patient_keys_strip_the_xds_form() {
        let r = AuditRecord {
            patient_ids: vec![
                "999999990^^^&2.16.840.1.113883.2.4.6.3&ISO".into(),
                "999999990".into(),
                String::new(),
                "P1".into(),
            ],
            ..Default::default()
        };
        assert_eq!(r.patient_keys(), vec!["999999990", "P1"]);
    }
}
