//! The queue of instances to forward to the PACS: enqueued on receipt, attempted and retried
//! by `pacs::forward`.

use super::sql_impl;
use super::SqlIndex;
use crate::store::index::{ForwardJob, IndexError};
use sqlx::Row;

sql_impl! {
    /// Queue instances for forwarding, due now.
    pub async fn enqueue_forward(
        &self,
        items: &[(String, String)],
        sender: &str,
        now: i64,
    ) -> Result<(), IndexError> {
        if items.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        let created = crate::clock::now_rfc3339();
        for (study, sop) in items {
            let mut sql = self.sql();
            sql.push(
                "INSERT INTO forward_job (sop_instance_uid, study_instance_uid, sender, state, \
                 attempts, next_attempt_at, last_error, created_at) VALUES (",
            )
            .bind(sop)
            .push(", ")
            .bind(study)
            .push(", ")
            .bind(sender)
            .push(", 'queued', 0, ")
            .bind_int(now)
            .push(", '', ")
            .bind(&created)
            .push(")");
            Self::query(&sql).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Forward jobs, newest first; `due_at`: only queued ones due by then, oldest first.
    pub async fn forward_jobs(
        &self,
        due_at: Option<i64>,
        limit: u32,
    ) -> Result<Vec<ForwardJob>, IndexError> {
        let mut sql = self.sql();
        sql.push(
            "SELECT id, sop_instance_uid, study_instance_uid, sender, state, attempts, \
             next_attempt_at, last_error, created_at FROM forward_job",
        );
        match due_at {
            Some(now) => {
                sql.push(" WHERE state = 'queued' AND next_attempt_at <= ")
                    .bind_int(now)
                    .push(" ORDER BY id");
            }
            None => {
                sql.push(" ORDER BY id DESC");
            }
        }
        sql.limit_offset(Some(limit), 0);
        let rows = Self::query(&sql).fetch_all(&self.pool).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            out.push(ForwardJob {
                id: row.try_get(0usize)?,
                sop_instance_uid: row.try_get(1usize)?,
                study_instance_uid: row.try_get(2usize)?,
                sender: row.try_get(3usize)?,
                state: row.try_get(4usize)?,
                attempts: row.try_get(5usize)?,
                next_attempt_at: row.try_get(6usize)?,
                last_error: row.try_get(7usize)?,
                created_at: row.try_get(8usize)?,
            });
        }
        Ok(out)
    }

    /// Record one attempt of a job: its new state, when to try next, and the error.
    pub async fn update_forward(
        &self,
        id: i64,
        state: &str,
        next_attempt_at: i64,
        error: &str,
    ) -> Result<(), IndexError> {
        let mut sql = self.sql();
        sql.push("UPDATE forward_job SET state = ")
            .bind(state)
            .push(", attempts = attempts + 1, next_attempt_at = ")
            .bind_int(next_attempt_at)
            .push(", last_error = ")
            .bind(error)
            .push(" WHERE id = ")
            .bind_int(id);
        Self::query(&sql).execute(&self.pool).await?;
        Ok(())
    }

    /// Put failed jobs back in the queue, due at `now` with their attempts counted from
    /// zero (an operator's re-queue); `ids` empty: every failed job. Returns how many.
    pub async fn requeue_forward(&self, ids: &[i64], now: i64) -> Result<u64, IndexError> {
        let mut sql = self.sql();
        sql.push("UPDATE forward_job SET state = 'queued', attempts = 0, next_attempt_at = ")
            .bind_int(now)
            .push(" WHERE state = 'failed'");
        if !ids.is_empty() {
            sql.push(" AND id IN (");
            for (i, id) in ids.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.bind_int(*id);
            }
            sql.push(")");
        }
        // RETURNING (PostgreSQL, SQLite 3.35+): the count without a dialect-specific result.
        sql.push(" RETURNING id");
        let requeued = Self::query(&sql).fetch_all(&self.pool).await?;
        Ok(requeued.len() as u64)
    }
}
