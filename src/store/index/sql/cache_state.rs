//! The cache state of studies fetched from the local PACS (for completeness, refresh and
//! least-recently-used eviction), and removing a whole cached study.

use super::instances::Parents;
use super::sql_impl;
use super::SqlIndex;
use crate::store::index::{CachedStudy, IndexError};
use sqlx::Row;

sql_impl! {
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
}
