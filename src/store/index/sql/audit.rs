//! The audit trail in the index: the hash chain of [`AuditRecord`]s, a lookup per patient,
//! and the outbox of syslog messages waiting for the receiver.
//!
//! Appends are serialised on the chain head: a write transaction (`BEGIN IMMEDIATE`) in
//! SQLite, `SELECT ... FOR UPDATE` of the head row in PostgreSQL, so several gateway
//! processes sharing one database append one chain.

use super::sql_impl;
use super::statement::Dialect;
use super::SqlIndex;
use crate::store::index::audit::{patient_key, AuditRecord, OutboxMessage};
use crate::store::index::{AuditEvent, IndexError};
use sqlx::Row;

const RECORD_COLUMNS: &str = "seq, time, operation, outcome, detail, gateway, \
    certificate_sha256, organisation_ura, professional_uzi, role, purpose_of_use, token_id, \
    source_address, grounds, patient_ids, study_uids, prev_hash, hash, correlation_id, trace_id";

fn json_list(values: &[String]) -> String {
    serde_json::to_string(values).unwrap_or_else(|_| "[]".into())
}

/// A list column as stored; a value that is not a JSON list of strings (edited by hand) is
/// kept as one string, so the record still loads and its hash shows the change.
fn parse_list(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_else(|_| vec![text.to_string()])
}

sql_impl! {
    /// Append `record` to the chain (its `seq`, `prev_hash` and `hash` are set here) and, in
    /// the same transaction, queue `syslog` for the sender. Returns the record as stored.
    pub async fn append_audit(
        &self,
        record: &AuditRecord,
        syslog: Option<&str>,
    ) -> Result<AuditRecord, IndexError> {
        let mut stored = self.append_audit_batch(&[(record, syslog)]).await?;
        Ok(stored.remove(0))
    }

    /// [`append_audit`](Self::append_audit) for several records in one transaction (one
    /// commit, one fsync: the group commit of `trust::audit`), chained in the given order.
    pub async fn append_audit_batch(
        &self,
        records: &[(&AuditRecord, Option<&str>)],
    ) -> Result<Vec<AuditRecord>, IndexError> {
        let mut tx = self.begin_write().await?;
        let mut sql = self.sql();
        sql.push("SELECT seq, hash FROM audit_chain_head WHERE id = 1");
        if self.dialect == Dialect::Postgres {
            sql.push(" FOR UPDATE");
        }
        let head = Self::query(&sql).fetch_one(&mut *tx).await?;
        let mut seq = head.try_get::<i64, usize>(0)?;
        let mut prev_hash: String = head.try_get(1usize)?;
        let mut out = Vec::with_capacity(records.len());
        for (record, syslog) in records {
            let mut stored = (*record).clone();
            seq += 1;
            stored.seq = seq;
            stored.prev_hash = std::mem::take(&mut prev_hash);
            stored.hash = stored.chain_hash(&stored.prev_hash);
            prev_hash = stored.hash.clone();
            self.insert_audit_record(&mut tx, &stored, *syslog).await?;
            out.push(stored);
        }
        let mut sql = self.sql();
        sql.push("UPDATE audit_chain_head SET seq = ")
            .bind_int(seq)
            .push(", hash = ")
            .bind(&prev_hash)
            .push(" WHERE id = 1");
        Self::query(&sql).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// The rows of one chained record (its patients, its syslog message) in `tx`.
    async fn insert_audit_record(
        &self,
        tx: &mut sqlx::Transaction<'static, DB>,
        stored: &AuditRecord,
        syslog: Option<&str>,
    ) -> Result<(), IndexError> {
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
            &stored.correlation_id,
            &stored.trace_id,
        ] {
            sql.push(", ").bind(v);
        }
        sql.push(")");
        Self::query(&sql).execute(&mut **tx).await?;

        // One statement for all patients, not one per patient: a QIDO-RS page of 101
        // studies names ~100 patients, each a row of the NEN 7513 lookup. The keys go as
        // one JSON list so that the statement text (and its prepared statement) is the
        // same whatever their number.
        let keys = stored.patient_keys();
        if !keys.is_empty() {
            let mut sql = self.sql();
            sql.push("INSERT INTO audit_record_patient (seq, patient_id) SELECT ")
                .bind_int(stored.seq)
                .push(", value FROM ");
            match self.dialect {
                Dialect::Sqlite => sql.push("json_each(").bind(&json_list(&keys)).push(")"),
                Dialect::Postgres => sql
                    .push("json_array_elements_text(")
                    .bind(&json_list(&keys))
                    .push("::json)"),
            };
            Self::query(&sql).execute(&mut **tx).await?;
        }

        if let Some(message) = syslog {
            let mut sql = self.sql();
            sql.push("INSERT INTO audit_outbox (seq, message, created_at) VALUES (")
                .bind_int(stored.seq)
                .push(", ")
                .bind(message)
                .push(", ")
                .bind(&stored.time)
                .push(")");
            Self::query(&sql).execute(&mut **tx).await?;
        }
        Ok(())
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
            correlation_id: text(18)?,
            trace_id: text(19)?,
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

    /// The chain head: the last record's `seq` and `hash` (0 and
    /// [`GENESIS_HASH`](crate::store::index::GENESIS_HASH) if empty).
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

    pub async fn record_audit(&self, event: &AuditEvent) -> Result<(), IndexError> {
        self.append_audit(&AuditRecord::from(event), None)
            .await
            .map(|_| ())
    }
}
