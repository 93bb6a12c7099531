//! The view of one patient's audit trail (NEN 7513 art. 5: a patient may see who accessed
//! *their* data, not who accessed anyone else's). A record that touches several patients (one
//! C-STORE association, a search with several matches) is shown with the other patients
//! removed: their identifiers, the studies that are theirs or not known to be this
//! patient's, and any of those values quoted in the free-text fields.
//!
//! The stored record is never changed, so the hash chain still verifies against it; the
//! view of a redacted record carries no hash, because a hash over a record with one unknown
//! 9-digit BSN in it can be brute-forced back to that BSN.

use crate::store::index::audit::patient_key;
use crate::store::index::AuditRecord;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// What replaces another patient's identifier or study UID quoted in a free-text field.
const REMOVED: &str = "[removed: another patient]";

/// One record as a reader of one patient's trail sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordView {
    /// Position in the chain (as stored; `beeldbrug audit --verify` checks the stored one).
    pub seq: i64,
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
    /// This patient's identifiers in the record, as recorded.
    pub patient_ids: Vec<String>,
    /// The record's studies that are known to be this patient's (all of them when the
    /// record names no other patient).
    pub study_uids: Vec<String>,
    /// The exchange's correlation id across gateways (empty when none).
    pub correlation_id: String,
    /// The trace id of the operation (empty when not traced).
    pub trace_id: String,
    /// The stored record's hash; only on a record shown as stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// True when other patients were removed: the view differs from the stored record.
    pub redacted: bool,
}

/// Which patient a study belongs to (its Patient ID as the index has it), for the studies
/// of the records to redact. A study missing here is not known to be the reader's.
pub type StudyPatients = BTreeMap<String, String>;

/// The studies whose owner [`view`] must know: those of records that name another patient.
pub fn studies_to_resolve<'a>(
    records: &'a [AuditRecord],
    patient_id: &'a str,
) -> impl Iterator<Item = &'a str> + 'a {
    let key = patient_key(patient_id);
    records
        .iter()
        .filter(move |r| names_others(r, &key))
        .flat_map(|r| r.study_uids.iter().map(String::as_str))
}

fn names_others(record: &AuditRecord, key: &str) -> bool {
    record.patient_keys().iter().any(|k| k != key)
}

/// `record` as the reader of `patient_id`'s trail may see it.
pub fn view(record: &AuditRecord, patient_id: &str, studies: &StudyPatients) -> RecordView {
    let key = patient_key(patient_id);
    let redacted = names_others(record, &key);
    let (patient_ids, study_uids, detail, grounds) = if redacted {
        let (own_ids, other_ids): (Vec<&String>, Vec<&String>) = record
            .patient_ids
            .iter()
            .partition(|p| patient_key(p) == key);
        let (own_studies, other_studies): (Vec<&String>, Vec<&String>) =
            record.study_uids.iter().partition(|s| {
                studies
                    .get(s.as_str())
                    .is_some_and(|owner| patient_key(owner) == key)
            });
        // Longest first, so an XDS-form ID is replaced whole before its bare number.
        let mut removed: BTreeSet<&str> = other_studies.iter().map(|s| s.as_str()).collect();
        for id in &other_ids {
            removed.insert(id.as_str());
            if let Some(bare) = id.split('^').next() {
                removed.insert(bare.trim());
            }
        }
        let mut removed: Vec<&str> = removed.into_iter().filter(|s| !s.is_empty()).collect();
        removed.sort_by_key(|s| std::cmp::Reverse(s.len()));
        let scrub = |text: &str| {
            removed
                .iter()
                .fold(text.to_string(), |t, other| t.replace(other, REMOVED))
        };
        (
            own_ids.into_iter().cloned().collect(),
            own_studies.into_iter().cloned().collect(),
            scrub(&record.detail),
            scrub(&record.grounds),
        )
    } else {
        (
            record.patient_ids.clone(),
            record.study_uids.clone(),
            record.detail.clone(),
            record.grounds.clone(),
        )
    };
    RecordView {
        seq: record.seq,
        time: record.time.clone(),
        operation: record.operation.clone(),
        outcome: record.outcome.clone(),
        detail,
        gateway: record.gateway.clone(),
        certificate_sha256: record.certificate_sha256.clone(),
        organisation_ura: record.organisation_ura.clone(),
        professional_uzi: record.professional_uzi.clone(),
        role: record.role.clone(),
        purpose_of_use: record.purpose_of_use.clone(),
        token_id: record.token_id.clone(),
        source_address: record.source_address.clone(),
        grounds,
        patient_ids,
        study_uids,
        correlation_id: record.correlation_id.clone(),
        trace_id: record.trace_id.clone(),
        hash: (!redacted).then(|| record.hash.clone()),
        redacted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_of_two() -> AuditRecord {
        AuditRecord {
            seq: 4,
            operation: "C-STORE".into(),
            detail: "stored; last error for 111222333: disk full (1.2.3.2)".into(),
            grounds: "2 patient(s) permitted".into(),
            patient_ids: vec![
                "999999990^^^&2.16.840.1.113883.2.4.6.3&ISO".into(),
                "111222333".into(),
            ],
            study_uids: vec!["1.2.3.1".into(), "1.2.3.2".into(), "1.2.3.9".into()],
            hash: "ab".repeat(32),
            ..Default::default()
        }
    }

    #[test]
    fn other_patients_and_their_studies_are_removed() {
        let studies: StudyPatients = [
            ("1.2.3.1".to_string(), "999999990".to_string()),
            ("1.2.3.2".to_string(), "111222333".to_string()),
        ]
        .into();
        let record = store_of_two();
        let v = view(&record, "999999990", &studies);
        assert!(v.redacted);
        assert_eq!(
            v.patient_ids,
            ["999999990^^^&2.16.840.1.113883.2.4.6.3&ISO"]
        );
        // 1.2.3.9's owner is unknown: not shown.
        assert_eq!(v.study_uids, ["1.2.3.1"]);
        assert_eq!(v.hash, None);
        let json = serde_json::to_string(&v).unwrap();
        for other in ["111222333", "1.2.3.2", "1.2.3.9"] {
            assert!(!json.contains(other), "{other} in {json}");
        }
        assert!(v.detail.contains(REMOVED), "{}", v.detail);
        assert_eq!(v.grounds, record.grounds);

        let other = view(&record, "111222333", &studies);
        assert_eq!(other.patient_ids, ["111222333"]);
        assert_eq!(other.study_uids, ["1.2.3.2"]);
        assert!(!serde_json::to_string(&other).unwrap().contains("999999990"));
    }

    #[test]
    fn a_record_of_one_patient_is_shown_as_stored() {
        let mut record = store_of_two();
        record.patient_ids.truncate(1);
        record.patient_ids.push("999999990".into());
        let v = view(&record, "999999990", &StudyPatients::new());
        assert!(!v.redacted);
        assert_eq!(v.patient_ids, record.patient_ids);
        assert_eq!(v.study_uids, record.study_uids);
        assert_eq!(v.detail, record.detail);
        assert_eq!(v.hash.as_deref(), Some(record.hash.as_str()));
    }
}
