//! The audit trail in the index: a hash chain of NEN 7513 records (who, patient, what, when,
//! from where, on what grounds, outcome), a lookup per patient, and the outbox of syslog
//! messages waiting for the receiver.
//!
//! Each record's hash is SHA-256 over the previous record's hash and the record's canonical
//! serialisation ([`AuditRecord::canonical`]), so changing, removing or inserting a record
//! breaks the chain from there on. Appends are serialised on the chain head: a write
//! transaction (`BEGIN IMMEDIATE`) in SQLite, `SELECT ... FOR UPDATE` of the head row in
//! PostgreSQL, so several gateway processes sharing one database append one chain.

use super::sql::{Dialect, SqlIndex};
use super::{AuditEvent, IndexError};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Row, Type};

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
}

impl AuditRecord {
    /// The canonical serialisation: compact JSON of every field but the hashes, in
    /// declaration order, with a format version (`"v":1`).
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

const RECORD_COLUMNS: &str = "seq, time, operation, outcome, detail, gateway, \
    certificate_sha256, organisation_ura, professional_uzi, role, purpose_of_use, token_id, \
    source_address, grounds, patient_ids, study_uids, prev_hash, hash";

fn json_list(values: &[String]) -> String {
    serde_json::to_string(values).unwrap_or_else(|_| "[]".into())
}

/// A list column as stored; a value that is not a JSON list of strings (edited by hand) is
/// kept as one string, so the record still loads and its hash shows the change.
fn parse_list(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_else(|_| vec![text.to_string()])
}

impl<DB> SqlIndex<DB>
where
    DB: Database + sqlx::database::HasStatementCache,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> String: Encode<'q, DB>,
    for<'q> i64: Encode<'q, DB>,
    for<'r> String: Decode<'r, DB>,
    for<'r> i64: Decode<'r, DB>,
    String: Type<DB>,
    i64: Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    /// Append `record` to the chain (its `seq`, `prev_hash` and `hash` are set here) and, in
    /// the same transaction, queue `syslog` for the sender. Returns the record as stored.
    pub async fn append_audit(
        &self,
        record: &AuditRecord,
        syslog: Option<&str>,
    ) -> Result<AuditRecord, IndexError> {
        let mut tx = self.begin_write().await?;
        let mut sql = self.sql();
        sql.push("SELECT seq, hash FROM audit_chain_head WHERE id = 1");
        if self.dialect == Dialect::Postgres {
            sql.push(" FOR UPDATE");
        }
        let head = Self::query(&sql).fetch_one(&mut *tx).await?;
        let mut stored = record.clone();
        stored.seq = head.try_get::<i64, usize>(0)? + 1;
        stored.prev_hash = head.try_get(1usize)?;
        stored.hash = stored.chain_hash(&stored.prev_hash);

        let mut sql = self.sql();
        sql.push(&format!(
            "INSERT INTO audit_record ({RECORD_COLUMNS}) VALUES ("
        ));
        sql.bind_int(stored.seq);
        for v in [
            &stored.time,
            &stored.operation,
            &stored.outcome,
            &stored.detail,
            &stored.gateway,
            &stored.certificate_sha256,
            &stored.organisation_ura,
            &stored.professional_uzi,
            &stored.role,
            &stored.purpose_of_use,
            &stored.token_id,
            &stored.source_address,
            &stored.grounds,
            &json_list(&stored.patient_ids),
            &json_list(&stored.study_uids),
            &stored.prev_hash,
            &stored.hash,
        ] {
            sql.push(", ").bind(v);
        }
        sql.push(")");
        Self::query(&sql).execute(&mut *tx).await?;

        for key in stored.patient_keys() {
            let mut sql = self.sql();
            sql.push("INSERT INTO audit_record_patient (seq, patient_id) VALUES (")
                .bind_int(stored.seq)
                .push(", ")
                .bind(&key)
                .push(")");
            Self::query(&sql).execute(&mut *tx).await?;
        }

        let mut sql = self.sql();
        sql.push("UPDATE audit_chain_head SET seq = ")
            .bind_int(stored.seq)
            .push(", hash = ")
            .bind(&stored.hash)
            .push(" WHERE id = 1");
        Self::query(&sql).execute(&mut *tx).await?;

        if let Some(message) = syslog {
            let mut sql = self.sql();
            sql.push("INSERT INTO audit_outbox (seq, message, created_at) VALUES (")
                .bind_int(stored.seq)
                .push(", ")
                .bind(message)
                .push(", ")
                .bind(&stored.time)
                .push(")");
            Self::query(&sql).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(stored)
    }

    fn record_from_row(row: &DB::Row) -> Result<AuditRecord, IndexError> {
        let text = |i: usize| row.try_get::<String, usize>(i);
        Ok(AuditRecord {
            seq: row.try_get(0usize)?,
            time: text(1)?,
            operation: text(2)?,
            outcome: text(3)?,
            detail: text(4)?,
            gateway: text(5)?,
            certificate_sha256: text(6)?,
            organisation_ura: text(7)?,
            professional_uzi: text(8)?,
            role: text(9)?,
            purpose_of_use: text(10)?,
            token_id: text(11)?,
            source_address: text(12)?,
            grounds: text(13)?,
            patient_ids: parse_list(&text(14)?),
            study_uids: parse_list(&text(15)?),
            prev_hash: text(16)?,
            hash: text(17)?,
        })
    }

    /// Up to `limit` records after `after_seq`, in chain order (for walking the chain).
    pub async fn audit_records(
        &self,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, IndexError> {
        let mut sql = self.sql();
        sql.push(&format!(
            "SELECT {RECORD_COLUMNS} FROM audit_record WHERE seq > "
        ))
        .bind_int(after_seq)
        .push(" ORDER BY seq");
        sql.limit_offset(Some(limit), 0);
        let rows = Self::query(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(Self::record_from_row).collect()
    }

    /// The newest `limit` records of one patient (bare BSN or its XDS form), oldest first.
    pub async fn audit_records_for_patient(
        &self,
        patient_id: &str,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, IndexError> {
        let columns = RECORD_COLUMNS
            .split(", ")
            .map(|c| format!("r.{}", c.trim()))
            .collect::<Vec<_>>()
            .join(", ");
        let mut sql = self.sql();
        sql.push(&format!(
            "SELECT * FROM (SELECT {columns} FROM audit_record r \
             JOIN audit_record_patient p ON p.seq = r.seq WHERE p.patient_id = "
        ))
        .bind(&patient_key(patient_id))
        .push(" ORDER BY r.seq DESC");
        sql.limit_offset(Some(limit), 0);
        sql.push(") newest ORDER BY seq");
        let rows = Self::query(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(Self::record_from_row).collect()
    }

    /// The chain head: the last record's `seq` and `hash` (0 and [`GENESIS_HASH`] if empty).
    pub async fn audit_head(&self) -> Result<(i64, String), IndexError> {
        let mut sql = self.sql();
        sql.push("SELECT seq, hash FROM audit_chain_head WHERE id = 1");
        let row = Self::query(&sql).fetch_one(&self.pool).await?;
        Ok((row.try_get(0usize)?, row.try_get(1usize)?))
    }

    /// How many rows the per-patient lookup holds (the chain walk checks it).
    pub async fn audit_patient_rows(&self) -> Result<i64, IndexError> {
        let mut sql = self.sql();
        sql.push("SELECT COUNT(*) FROM audit_record_patient");
        let row = Self::query(&sql).fetch_one(&self.pool).await?;
        Ok(row.try_get(0usize)?)
    }

    pub async fn audit_events(&self, limit: u32) -> Result<Vec<AuditEvent>, IndexError> {
        let mut sql = self.sql();
        sql.push(&format!(
            "SELECT * FROM (SELECT {RECORD_COLUMNS} FROM audit_record ORDER BY seq DESC"
        ));
        sql.limit_offset(Some(limit), 0);
        sql.push(") newest ORDER BY seq");
        let rows = Self::query(&sql).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| Self::record_from_row(row).map(|r| AuditEvent::from(&r)))
            .collect()
    }

    /// Claim up to `limit` due outbox messages for `owner` until `until` (Unix seconds),
    /// oldest first. A message claimed by another sender is due again once its claim ran out.
    pub async fn claim_audit_outbox(
        &self,
        owner: &str,
        now: i64,
        until: i64,
        limit: u32,
    ) -> Result<Vec<OutboxMessage>, IndexError> {
        let mut tx = self.begin_write().await?;
        let mut sql = self.sql();
        sql.push("UPDATE audit_outbox SET claimed_by = ")
            .bind(owner)
            .push(", claimed_until = ")
            .bind_int(until)
            .push(" WHERE claimed_until <= ")
            // Checked again on the locked row (PostgreSQL), so two senders never both claim.
            .bind_int(now)
            .push(" AND id IN (SELECT id FROM audit_outbox WHERE claimed_until <= ")
            .bind_int(now)
            .push(" ORDER BY id");
        sql.limit_offset(Some(limit), 0);
        sql.push(")");
        Self::query(&sql).execute(&mut *tx).await?;
        let mut sql = self.sql();
        sql.push("SELECT id, seq, message, attempts FROM audit_outbox WHERE claimed_by = ")
            .bind(owner)
            .push(" AND claimed_until = ")
            .bind_int(until)
            .push(" ORDER BY id");
        let rows = Self::query(&sql).fetch_all(&mut *tx).await?;
        tx.commit().await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            out.push(OutboxMessage {
                id: row.try_get(0usize)?,
                seq: row.try_get(1usize)?,
                message: row.try_get(2usize)?,
                attempts: row.try_get(3usize)?,
            });
        }
        Ok(out)
    }

    /// Remove messages that reached the receiver.
    pub async fn delete_audit_outbox(&self, ids: &[i64]) -> Result<(), IndexError> {
        for chunk in ids.chunks(500) {
            let mut sql = self.sql();
            sql.push("DELETE FROM audit_outbox WHERE id IN (");
            for (i, id) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.bind_int(*id);
            }
            sql.push(")");
            Self::query(&sql).execute(&self.pool).await?;
        }
        Ok(())
    }

    /// Messages whose write failed: due again at `retry_at` (Unix seconds).
    pub async fn retry_audit_outbox(
        &self,
        ids: &[i64],
        retry_at: i64,
        error: &str,
    ) -> Result<(), IndexError> {
        for chunk in ids.chunks(500) {
            let mut sql = self.sql();
            sql.push("UPDATE audit_outbox SET attempts = attempts + 1, claimed_by = '', claimed_until = ")
                .bind_int(retry_at)
                .push(", last_error = ")
                .bind(error)
                .push(" WHERE id IN (");
            for (i, id) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.bind_int(*id);
            }
            sql.push(")");
            Self::query(&sql).execute(&self.pool).await?;
        }
        Ok(())
    }

    /// Messages waiting in the outbox.
    pub async fn audit_outbox_len(&self) -> Result<u64, IndexError> {
        let mut sql = self.sql();
        sql.push("SELECT COUNT(*) FROM audit_outbox");
        let row = Self::query(&sql).fetch_one(&self.pool).await?;
        Ok(u64::try_from(row.try_get::<i64, usize>(0)?).unwrap_or(0))
    }
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
