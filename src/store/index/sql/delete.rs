//! Index side of delete and retention: removing instances with their emptied parents while
//! queueing their blobs for deletion in the same transaction, the queue itself, and the
//! studies received by STOW-RS (for `storage.keep_received_days`).
//!
//! Why a queue (`blob_deletion`) rather than a sweep of the blob directory for files without
//! a row: the rows go first, in one transaction, so nothing deleted is served once it
//! commits; the queue names exactly the files still to remove, so the sweep after a crash is
//! a short query rather than a walk of every blob, and it never mistakes a blob an ingest has
//! just renamed into place (its row not yet committed) for an orphan.

use super::instances::Parents;
use super::query::selection_sql;
use super::sql_impl;
use super::statement::Sql;
use super::SqlIndex;
use crate::model::{InstanceLocation, Selection};
use crate::store::index::IndexError;
use sqlx::Row;
use std::collections::BTreeSet;

/// availabilityStatus of a registry entry whose document is gone.
const DEPRECATED: &str = "urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated";

/// Rows per statement where a list of ids or keys is inlined or bound.
const CHUNK: usize = 500;

/// `(v1, v2, ...)` as bound parameters.
fn push_list(sql: &mut Sql, values: &[String]) {
    sql.push("(");
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.bind(v);
    }
    sql.push(")");
}

sql_impl! {
    /// Remove every instance the selection names, prune the series, studies and patients
    /// left empty (with a removed study's cache and receipt rows), stop queued forwards of
    /// the removed instances, and queue their blob keys in `blob_deletion`: one transaction.
    /// Returns the removed instances (empty: nothing matched).
    pub async fn delete_instances(
        &self,
        selection: &Selection,
        now: i64,
    ) -> Result<Vec<InstanceLocation>, IndexError> {
        let Some(mut sql) = selection_sql(
            self.dialect,
            "SELECT p.patient_id, st.study_instance_uid, se.series_instance_uid, \
             i.sop_instance_uid, i.sop_class_uid, i.transfer_syntax_uid, i.blob_key, \
             i.size_bytes, i.id, se.id, st.id, p.id",
            selection,
        ) else {
            return Ok(Vec::new());
        };
        sql.push(" ORDER BY i.id");
        let mut tx = self.begin_write().await?;
        let rows = Self::query(&sql).fetch_all(&mut *tx).await?;
        let mut removed = Vec::with_capacity(rows.len());
        let mut ids = Vec::with_capacity(rows.len());
        let mut parents = Parents::default();
        for row in &rows {
            removed.push(Self::location(row)?);
            ids.push(row.try_get::<i64, usize>(8)?);
            parents.series.push(row.try_get(9usize)?);
            parents.studies.push(row.try_get(10usize)?);
            parents.patients.push(row.try_get(11usize)?);
        }
        drop(rows);
        if removed.is_empty() {
            tx.rollback().await?;
            return Ok(removed);
        }
        for loc in &removed {
            let mut sql = self.sql();
            sql.push("INSERT INTO blob_deletion (blob_key, queued_at) VALUES (")
                .bind(&loc.blob_key)
                .push(", ")
                .bind_int(now)
                .push(") ON CONFLICT (blob_key) DO NOTHING");
            Self::query(&sql).execute(&mut *tx).await?;
        }
        for chunk in ids.chunks(CHUNK) {
            // Row ids come from the database itself: safe to inline.
            let list = chunk
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            let mut sql = self.sql();
            sql.push(&format!("DELETE FROM instance WHERE id IN ({list})"));
            Self::query(&sql).execute(&mut *tx).await?;
        }
        let sops: Vec<String> = removed.iter().map(|l| l.sop_instance_uid.clone()).collect();
        for chunk in sops.chunks(CHUNK) {
            let mut sql = self.sql();
            sql.push(
                "UPDATE forward_job SET state = 'failed', \
                 last_error = 'deleted before it was forwarded' \
                 WHERE state = 'queued' AND sop_instance_uid IN ",
            );
            push_list(&mut sql, chunk);
            Self::query(&sql).execute(&mut *tx).await?;
        }
        let touched: BTreeSet<i64> = parents.studies.iter().copied().collect();
        self.prune(&mut tx, parents).await?;
        // The computed values of the studies that keep instances (migration 0013).
        for study in touched {
            self.refresh_study(&mut tx, study).await?;
        }
        let studies: BTreeSet<&str> = removed
            .iter()
            .map(|l| l.study_instance_uid.as_str())
            .collect();
        // The XDS registry (migration 0007): a deleted document's entry is Deprecated; a study
        // that lost instances counts as changed (the publisher makes a new manifest), and one
        // that is gone has every entry Deprecated and its publication forgotten.
        for chunk in sops.chunks(CHUNK) {
            let mut sql = self.sql();
            sql.push("UPDATE xds_object SET status = ")
                .bind(DEPRECATED)
                .push(" WHERE unique_id IN ");
            push_list(&mut sql, chunk);
            Self::query(&sql).execute(&mut *tx).await?;
        }
        for study in &studies {
            let mut sql = self.sql();
            sql.push("UPDATE study SET arrivals = arrivals + 1, last_arrival = ")
                .bind_int(now)
                .push(" WHERE study_instance_uid = ")
                .bind(study);
            Self::query(&sql).execute(&mut *tx).await?;
            let gone = |sql: &mut Sql| {
                sql.push(" AND NOT EXISTS (SELECT 1 FROM study WHERE study_instance_uid = ")
                    .bind(study)
                    .push(")");
            };
            let mut sql = self.sql();
            sql.push("UPDATE xds_object SET status = ")
                .bind(DEPRECATED)
                .push(" WHERE study_instance_uid = ")
                .bind(study);
            gone(&mut sql);
            Self::query(&sql).execute(&mut *tx).await?;
            let mut sql = self.sql();
            sql.push("DELETE FROM xds_publication WHERE study_instance_uid = ")
                .bind(study);
            gone(&mut sql);
            Self::query(&sql).execute(&mut *tx).await?;
        }
        for study in studies {
            for table in ["cached_study", "received_study"] {
                let mut sql = self.sql();
                sql.push(&format!("DELETE FROM {table} WHERE study_instance_uid = "))
                    .bind(study)
                    .push(" AND NOT EXISTS (SELECT 1 FROM study WHERE study_instance_uid = ")
                    .bind(study)
                    .push(")");
                Self::query(&sql).execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        Ok(removed)
    }

    /// Up to `limit` blob keys queued for deletion, oldest first.
    pub async fn queued_blob_deletions(&self, limit: u32) -> Result<Vec<String>, IndexError> {
        self.queued_blob_deletions_before(i64::MAX, limit).await
    }

    /// Up to `limit` blob keys queued for deletion before `before` (Unix seconds), oldest
    /// first.
    pub async fn queued_blob_deletions_before(
        &self,
        before: i64,
        limit: u32,
    ) -> Result<Vec<String>, IndexError> {
        let mut sql = self.sql();
        sql.push("SELECT blob_key FROM blob_deletion WHERE queued_at < ")
            .bind_int(before)
            .push(" ORDER BY queued_at, blob_key");
        sql.limit_offset(Some(limit), 0);
        let rows = Self::query(&sql).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| r.try_get::<String, usize>(0).map_err(IndexError::from))
            .collect()
    }

    /// Which of `keys` an instance row references (an instance stored again since).
    pub async fn blob_keys_in_use(&self, keys: &[String]) -> Result<Vec<String>, IndexError> {
        let mut out = Vec::new();
        for chunk in keys.chunks(CHUNK) {
            let mut sql = self.sql();
            sql.push("SELECT blob_key FROM instance WHERE blob_key IN ");
            push_list(&mut sql, chunk);
            for row in Self::query(&sql).fetch_all(&self.pool).await? {
                out.push(row.try_get::<String, usize>(0)?);
            }
        }
        Ok(out)
    }

    /// Take keys off the deletion queue (their files are gone, or in use again).
    pub async fn clear_blob_deletions(&self, keys: &[String]) -> Result<(), IndexError> {
        for chunk in keys.chunks(CHUNK) {
            let mut sql = self.sql();
            sql.push("DELETE FROM blob_deletion WHERE blob_key IN ");
            push_list(&mut sql, chunk);
            Self::query(&sql).execute(&self.pool).await?;
        }
        Ok(())
    }

    /// Note that these studies were received (STOW-RS) from `sender` at `now`.
    pub async fn note_received(
        &self,
        study_uids: &[String],
        sender: &str,
        now: i64,
    ) -> Result<(), IndexError> {
        if study_uids.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        for study in study_uids {
            let mut sql = self.sql();
            sql.push(
                "INSERT INTO received_study (study_instance_uid, sender, received_at) VALUES (",
            )
            .bind(study)
            .push(", ")
            .bind(sender)
            .push(", ")
            .bind_int(now)
            .push(
                ") ON CONFLICT (study_instance_uid) DO UPDATE SET \
                     sender = excluded.sender, received_at = excluded.received_at",
            );
            Self::query(&sql).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Up to `limit` received studies whose last receipt was before `cutoff` (Unix seconds),
    /// oldest first, leaving out those with instances still queued for the PACS.
    pub async fn received_before(
        &self,
        cutoff: i64,
        limit: u32,
    ) -> Result<Vec<String>, IndexError> {
        let mut sql = self.sql();
        sql.push("SELECT r.study_instance_uid FROM received_study r WHERE r.received_at < ")
            .bind_int(cutoff)
            .push(
                " AND NOT EXISTS (SELECT 1 FROM forward_job f WHERE \
                 f.study_instance_uid = r.study_instance_uid AND f.state = 'queued') \
                 ORDER BY r.received_at, r.study_instance_uid",
            );
        sql.limit_offset(Some(limit), 0);
        let rows = Self::query(&sql).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| r.try_get::<String, usize>(0).map_err(IndexError::from))
            .collect()
    }

    /// Forget a receipt whose study is no longer in the index (retention found it empty).
    pub async fn forget_received(&self, study_uid: &str) -> Result<(), IndexError> {
        let mut sql = self.sql();
        sql.push("DELETE FROM received_study WHERE study_instance_uid = ")
            .bind(study_uid);
        Self::query(&sql).execute(&self.pool).await?;
        Ok(())
    }
}
