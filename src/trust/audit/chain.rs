//! Walking the audit hash chain (NEN 7513: the log must show tampering): every record's
//! `seq` follows the one before, its `prev_hash` is that record's hash, its `hash` is what
//! its content gives, and the last one is the chain head.

use crate::store::index::{AuditRecord, GENESIS_HASH};
use crate::store::{Index, IndexError};
use serde::Serialize;

/// Records read per query while walking.
const PAGE: u32 = 1000;

/// The first record that does not fit the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Broken {
    /// The record's `seq` (or the missing one's).
    pub seq: i64,
    pub reason: String,
}

/// What a walk of the chain found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    pub ok: bool,
    /// Records checked.
    pub records: i64,
    /// The head's `seq` (the last record appended).
    pub head_seq: i64,
    pub broken: Option<Broken>,
}

/// Check one record against the one before it (`prev` = its seq and hash).
pub fn check(record: &AuditRecord, prev: (i64, &str)) -> Option<Broken> {
    let broken = |reason: String| {
        Some(Broken {
            seq: record.seq,
            reason,
        })
    };
    if record.seq != prev.0 + 1 {
        return Some(Broken {
            seq: prev.0 + 1,
            reason: format!(
                "record {} is missing (the next one is {})",
                prev.0 + 1,
                record.seq
            ),
        });
    }
    if record.prev_hash != prev.1 {
        return broken("its previous hash is not the hash of the record before".into());
    }
    if record.chain_hash(&record.prev_hash) != record.hash {
        return broken("its content does not give its hash (the record was changed)".into());
    }
    None
}

/// Walk the whole chain in `index` and report the first broken record.
pub async fn verify(index: &dyn Index) -> Result<Verification, IndexError> {
    let (head_seq, head_hash) = index.audit_head().await?;
    let mut prev_seq = 0i64;
    let mut prev_hash = GENESIS_HASH.to_string();
    let mut records = 0i64;
    let mut patient_rows = 0i64;
    let mut broken = None;
    'walk: loop {
        let page = index.audit_records(prev_seq, PAGE).await?;
        if page.is_empty() {
            break;
        }
        for record in &page {
            if let Some(b) = check(record, (prev_seq, &prev_hash)) {
                broken = Some(b);
                break 'walk;
            }
            records += 1;
            patient_rows += record.patient_keys().len() as i64;
            prev_seq = record.seq;
            prev_hash.clone_from(&record.hash);
        }
    }
    if broken.is_none() && (prev_seq != head_seq || prev_hash != head_hash) {
        broken = Some(Broken {
            seq: prev_seq + 1,
            reason: format!(
                "the chain ends at record {prev_seq} but its head names record {head_seq} \
                 (records were removed, or the head was changed)"
            ),
        });
    }
    if broken.is_none() && index.audit_patient_rows().await? != patient_rows {
        broken = Some(Broken {
            seq: 0,
            reason: "the per-patient lookup does not match the records (rows were added or \
                     removed)"
                .into(),
        });
    }
    Ok(Verification {
        ok: broken.is_none(),
        records,
        head_seq,
        broken,
    })
}
