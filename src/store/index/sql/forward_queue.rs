//! The queue of instances to forward to the PACS: enqueued on receipt, attempted and retried
//! by `pacs::forward`.

use super::sql_impl;
use super::SqlIndex;
use crate::store::index::{ForwardJob, IndexError};
use sqlx::Row;

sql_impl! {
    /// A job from a row of `id, sop_instance_uid, study_instance_uid, sender, state,
    /// attempts, next_attempt_at, last_error, created_at`.
    fn job_from_row(row: &DB::Row) -> Result<ForwardJob, IndexError> {
        Ok(ForwardJob {
            id: row.try_get(0usize)?,
            sop_instance_uid: row.try_get(1usize)?,
            study_instance_uid: row.try_get(2usize)?,
            sender: row.try_get(3usize)?,
            state: row.try_get(4usize)?,
            attempts: row.try_get(5usize)?,
            next_attempt_at: row.try_get(6usize)?,
            last_error: row.try_get(7usize)?,
            created_at: row.try_get(8usize)?,
        })
    }

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
        let out = rows
            .iter()
            .map(Self::job_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(out)
    }

    /// Lease the due queued jobs: their `next_attempt_at` moves to `lease_until`, so that no
    /// other node's claim takes them meanwhile; the attempt's record sets it again. On
    /// PostgreSQL the rows are locked `FOR UPDATE SKIP LOCKED` (concurrent claims skip each
    /// other's rows instead of waiting for them); SQLite has one writer at a time.
    pub async fn claim_forward_jobs(
        &self,
        now: i64,
        lease_until: i64,
        limit: u32,
    ) -> Result<Vec<ForwardJob>, IndexError> {
        let mut sql = self.sql();
        sql.push("UPDATE forward_job SET next_attempt_at = ")
            .bind_int(lease_until)
            .push(
                " WHERE id IN (SELECT id FROM forward_job WHERE state = 'queued'                  AND next_attempt_at <= ",
            )
            .bind_int(now)
            .push(&format!(" ORDER BY id LIMIT {limit}"));
        if self.dialect == super::Dialect::Postgres {
            sql.push(" FOR UPDATE SKIP LOCKED");
        }
        sql.push(
            ") RETURNING id, sop_instance_uid, study_instance_uid, sender, state, attempts,              next_attempt_at, last_error, created_at",
        );
        let rows = Self::query(&sql).fetch_all(&self.pool).await?;
        let mut out = rows
            .iter()
            .map(Self::job_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_by_key(|j| j.id);
        Ok(out)
    }

    /// Jobs still under the lease `lease_until` are due again at `now`.
    pub async fn release_forward_jobs(
        &self,
        ids: &[i64],
        lease_until: i64,
        now: i64,
    ) -> Result<(), IndexError> {
        for chunk in ids.chunks(500) {
            let mut sql = self.sql();
            sql.push("UPDATE forward_job SET next_attempt_at = ")
                .bind_int(now)
                .push(" WHERE state = 'queued' AND next_attempt_at = ")
                .bind_int(lease_until)
                .push(" AND id IN (");
            for (n, id) in chunk.iter().enumerate() {
                if n > 0 {
                    sql.push(", ");
                }
                sql.bind_int(*id);
            }
            sql.push(")");
            Self::query(&sql).execute(&self.pool).await?;
        }
        Ok(())
    }

    /// Take or renew a lease: the upsert replaces the row only when it is the owner's or
    /// past its end, so of concurrent takers (on any node) exactly one gets a row back.
    pub async fn try_lease(
        &self,
        name: &str,
        owner: &str,
        now: i64,
        until: i64,
    ) -> Result<bool, IndexError> {
        let mut sql = self.sql();
        sql.push("INSERT INTO node_lease (name, owner, until_at) VALUES (")
            .bind(name)
            .push(", ")
            .bind(owner)
            .push(", ")
            .bind_int(until)
            .push(
                ") ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, \
                 until_at = excluded.until_at WHERE node_lease.owner = excluded.owner \
                 OR node_lease.until_at <= ",
            )
            .bind_int(now)
            .push(" RETURNING name");
        Ok(Self::query(&sql).fetch_optional(&self.pool).await?.is_some())
    }

    pub async fn release_lease(&self, name: &str, owner: &str) -> Result<(), IndexError> {
        let mut sql = self.sql();
        sql.push("DELETE FROM node_lease WHERE name = ")
            .bind(name)
            .push(" AND owner = ")
            .bind(owner);
        Self::query(&sql).execute(&self.pool).await?;
        Ok(())
    }

    /// Record a token identity unless a row for it has not expired yet: the upsert replaces
    /// only an expired row, so exactly one of concurrent claims (on any node) gets a row back.
    /// Expired rows are purged on the way.
    pub async fn claim_token_id(
        &self,
        issuer: &str,
        token_id: &str,
        forget_after: i64,
        now: i64,
    ) -> Result<bool, IndexError> {
        let mut purge = self.sql();
        purge
            .push("DELETE FROM token_replay WHERE forget_after < ")
            .bind_int(now);
        Self::query(&purge).execute(&self.pool).await?;
        let mut sql = self.sql();
        sql.push("INSERT INTO token_replay (issuer, token_id, forget_after) VALUES (")
            .bind(issuer)
            .push(", ")
            .bind(token_id)
            .push(", ")
            .bind_int(forget_after)
            .push(
                ") ON CONFLICT (issuer, token_id) DO UPDATE SET \
                 forget_after = excluded.forget_after WHERE token_replay.forget_after < ",
            )
            .bind_int(now)
            .push(" RETURNING token_id");
        let claimed = Self::query(&sql).fetch_optional(&self.pool).await?;
        Ok(claimed.is_some())
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
