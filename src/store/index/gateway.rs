//! Index tables of gateway mode: the cache state of studies fetched from the local PACS
//! (for completeness, refresh and least-recently-used eviction) and the queue of instances
//! to forward to the PACS.

use super::sql::{selection_sql, Parents, SqlIndex};
use super::IndexError;
use crate::model::Selection;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Row, Type};

/// What the cache knows of a study fetched from the PACS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedStudy {
    pub study_instance_uid: String,
    /// Instances the PACS reported when last checked.
    pub pacs_instances: u64,
    /// The cache held all of them after a fetch.
    pub complete: bool,
    /// Unix seconds.
    pub checked_at: i64,
    pub last_access: i64,
}

/// One instance waiting to be (or that was) forwarded to the PACS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardJob {
    pub id: i64,
    pub sop_instance_uid: String,
    pub study_instance_uid: String,
    /// Who sent it to us (the STOW-RS caller).
    pub sender: String,
    /// `queued`, `done` or `failed` (gave up).
    pub state: String,
    pub attempts: i64,
    /// Unix seconds.
    pub next_attempt_at: i64,
    pub last_error: String,
    pub created_at: String,
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
    pub async fn count_instances(&self, selection: &Selection) -> Result<u64, IndexError> {
        let Some(sql) = selection_sql(self.dialect, "SELECT COUNT(*)", selection) else {
            return Ok(0);
        };
        let row = Self::query(&sql).fetch_one(&self.pool).await?;
        Ok(u64::try_from(row.try_get::<i64, usize>(0)?).unwrap_or(0))
    }

    pub async fn cached_study(&self, study: &str) -> Result<Option<CachedStudy>, IndexError> {
        let mut sql = self.sql();
        sql.push(
            "SELECT study_instance_uid, pacs_instances, complete, checked_at, last_access \
             FROM cached_study WHERE study_instance_uid = ",
        )
        .bind(study);
        let Some(row) = Self::query(&sql).fetch_optional(&self.pool).await? else {
            return Ok(None);
        };
        Ok(Some(CachedStudy {
            study_instance_uid: row.try_get(0usize)?,
            pacs_instances: u64::try_from(row.try_get::<i64, usize>(1)?).unwrap_or(0),
            complete: row.try_get::<i64, usize>(2)? != 0,
            checked_at: row.try_get(3usize)?,
            last_access: row.try_get(4usize)?,
        }))
    }

    pub async fn put_cached_study(&self, study: &CachedStudy) -> Result<(), IndexError> {
        let mut sql = self.sql();
        sql.push(
            "INSERT INTO cached_study (study_instance_uid, pacs_instances, complete, \
             checked_at, last_access) VALUES (",
        )
        .bind(&study.study_instance_uid)
        .push(", ")
        .bind_int(i64::try_from(study.pacs_instances).unwrap_or(i64::MAX))
        .push(", ")
        .bind_int(study.complete as i64)
        .push(", ")
        .bind_int(study.checked_at)
        .push(", ")
        .bind_int(study.last_access)
        .push(
            ") ON CONFLICT (study_instance_uid) DO UPDATE SET \
             pacs_instances = excluded.pacs_instances, complete = excluded.complete, \
             checked_at = excluded.checked_at, last_access = excluded.last_access",
        );
        Self::query(&sql).execute(&self.pool).await?;
        Ok(())
    }

    /// Cached studies, least recently used first, with the bytes each holds.
    pub async fn cache_lru(&self) -> Result<Vec<(String, u64)>, IndexError> {
        let mut sql = self.sql();
        sql.push(
            "SELECT c.study_instance_uid, CAST(COALESCE(SUM(i.size_bytes), 0) AS BIGINT) FROM cached_study c \
             LEFT JOIN study st ON st.study_instance_uid = c.study_instance_uid \
             LEFT JOIN series se ON se.study_pk = st.id \
             LEFT JOIN instance i ON i.series_pk = se.id \
             GROUP BY c.study_instance_uid, c.last_access ORDER BY c.last_access, \
             c.study_instance_uid",
        );
        let rows = Self::query(&sql).fetch_all(&self.pool).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let bytes: i64 = row.try_get(1usize)?;
            out.push((row.try_get(0usize)?, u64::try_from(bytes).unwrap_or(0)));
        }
        Ok(out)
    }

    /// Remove a whole study from the index (and its cache state); returns its blob keys.
    pub async fn remove_study(&self, study: &str) -> Result<Vec<String>, IndexError> {
        let mut tx = self.begin_write().await?;
        let mut sql = self.sql();
        sql.push(
            "SELECT i.blob_key FROM instance i JOIN series se ON se.id = i.series_pk \
             JOIN study st ON st.id = se.study_pk WHERE st.study_instance_uid = ",
        )
        .bind(study);
        let mut keys = Vec::new();
        for row in Self::query(&sql).fetch_all(&mut *tx).await? {
            keys.push(row.try_get::<String, usize>(0)?);
        }
        let mut sql = self.sql();
        sql.push("SELECT patient_pk FROM study WHERE study_instance_uid = ")
            .bind(study);
        let patient: Option<i64> = match Self::query(&sql).fetch_optional(&mut *tx).await? {
            Some(row) => Some(row.try_get(0usize)?),
            None => None,
        };
        for statement in [
            "DELETE FROM instance WHERE series_pk IN (SELECT se.id FROM series se \
             JOIN study st ON st.id = se.study_pk WHERE st.study_instance_uid = ",
            "DELETE FROM series WHERE study_pk IN (SELECT id FROM study WHERE \
             study_instance_uid = ",
        ] {
            let mut sql = self.sql();
            sql.push(statement).bind(study).push(")");
            Self::query(&sql).execute(&mut *tx).await?;
        }
        for statement in [
            "DELETE FROM study WHERE study_instance_uid = ",
            "DELETE FROM cached_study WHERE study_instance_uid = ",
        ] {
            let mut sql = self.sql();
            sql.push(statement).bind(study);
            Self::query(&sql).execute(&mut *tx).await?;
        }
        let parents = Parents {
            patients: patient.into_iter().collect(),
            ..Default::default()
        };
        self.prune(&mut tx, parents).await?;
        tx.commit().await?;
        Ok(keys)
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
        let created = crate::trust::now_rfc3339();
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
}
