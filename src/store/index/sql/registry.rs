//! The XDS-I registry's tables (migration 0007): registry objects and associations, the
//! publication of each study, and the studies due for publication.

use super::sql_impl;
use super::SqlIndex;
use crate::store::index::{
    AssociationRow, IndexError, Publication, RegistryLookup, RegistryRow, StudyArrival, Submission,
};
use sqlx::Row;

const OBJECT_COLUMNS: &str =
    "entry_uuid, kind, unique_id, patient_id, status, study_instance_uid, metadata";
const ASSOCIATION_COLUMNS: &str =
    "entry_uuid, association_type, source_uuid, target_uuid, status, metadata";
const DEPRECATED: &str = "urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated";

sql_impl! {
    pub async fn registry_objects(
        &self,
        lookup: &RegistryLookup,
    ) -> Result<Vec<RegistryRow>, IndexError> {
        let mut sql = self.sql();
        sql.push(&format!("SELECT {OBJECT_COLUMNS} FROM xds_object WHERE "));
        match lookup {
            RegistryLookup::Patient { kind, patient_id } => {
                sql.push("patient_id = ").bind(patient_id).push(" AND kind = ").bind(kind);
            }
            RegistryLookup::Uuids(ids) | RegistryLookup::UniqueIds(ids) if ids.is_empty() => {
                return Ok(Vec::new());
            }
            RegistryLookup::Uuids(ids) => {
                sql.push("entry_uuid IN ").bind_list(ids);
            }
            RegistryLookup::UniqueIds(ids) => {
                sql.push("unique_id IN ").bind_list(ids);
            }
            RegistryLookup::Study(study) => {
                sql.push("study_instance_uid = ").bind(study);
            }
        }
        sql.push(" ORDER BY id");
        let rows = Self::query(&sql).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                Ok(RegistryRow {
                    entry_uuid: row.try_get(0usize)?,
                    kind: row.try_get(1usize)?,
                    unique_id: row.try_get(2usize)?,
                    patient_id: row.try_get(3usize)?,
                    status: row.try_get(4usize)?,
                    study_instance_uid: row.try_get(5usize)?,
                    metadata: row.try_get(6usize)?,
                })
            })
            .collect()
    }

    pub async fn registry_associations(
        &self,
        uuids: &[String],
    ) -> Result<Vec<AssociationRow>, IndexError> {
        if uuids.is_empty() {
            return Ok(Vec::new());
        }
        let mut sql = self.sql();
        sql.push(&format!(
            "SELECT {ASSOCIATION_COLUMNS} FROM xds_association WHERE source_uuid IN "
        ))
        .bind_list(uuids)
        .push(" OR target_uuid IN ")
        .bind_list(uuids)
        .push(" ORDER BY id");
        let rows = Self::query(&sql).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                Ok(AssociationRow {
                    entry_uuid: row.try_get(0usize)?,
                    association_type: row.try_get(1usize)?,
                    source_uuid: row.try_get(2usize)?,
                    target_uuid: row.try_get(3usize)?,
                    status: row.try_get(4usize)?,
                    metadata: row.try_get(5usize)?,
                })
            })
            .collect()
    }

    pub async fn registry_submit(&self, submission: &Submission) -> Result<(), IndexError> {
        let mut tx = self.begin_write().await?;
        for o in &submission.objects {
            let mut sql = self.sql();
            sql.push(&format!("INSERT INTO xds_object ({OBJECT_COLUMNS}) VALUES ("))
                .bind(&o.entry_uuid)
                .push(", ")
                .bind(&o.kind)
                .push(", ")
                .bind(&o.unique_id)
                .push(", ")
                .bind(&o.patient_id)
                .push(", ")
                .bind(&o.status)
                .push(", ")
                .bind(&o.study_instance_uid)
                .push(", ")
                .bind(&o.metadata)
                .push(")");
            Self::query(&sql).execute(&mut *tx).await?;
        }
        for a in &submission.associations {
            let mut sql = self.sql();
            sql.push(&format!("INSERT INTO xds_association ({ASSOCIATION_COLUMNS}) VALUES ("))
                .bind(&a.entry_uuid)
                .push(", ")
                .bind(&a.association_type)
                .push(", ")
                .bind(&a.source_uuid)
                .push(", ")
                .bind(&a.target_uuid)
                .push(", ")
                .bind(&a.status)
                .push(", ")
                .bind(&a.metadata)
                .push(")");
            Self::query(&sql).execute(&mut *tx).await?;
        }
        if !submission.deprecate.is_empty() {
            let mut sql = self.sql();
            sql.push("UPDATE xds_object SET status = ")
                .bind(DEPRECATED)
                .push(" WHERE entry_uuid IN ")
                .bind_list(&submission.deprecate);
            Self::query(&sql).execute(&mut *tx).await?;
        }
        if let Some(p) = &submission.publication {
            let mut sql = self.sql();
            sql.push(
                "INSERT INTO xds_publication (study_instance_uid, entry_uuid, arrivals, \
                 published_at) VALUES (",
            )
            .bind(&p.study_instance_uid)
            .push(", ")
            .bind(&p.entry_uuid)
            .push(", ")
            .bind_int(p.arrivals)
            .push(", ")
            .bind_int(p.published_at)
            .push(
                ") ON CONFLICT (study_instance_uid) DO UPDATE SET \
                 entry_uuid = excluded.entry_uuid, arrivals = excluded.arrivals, \
                 published_at = excluded.published_at, claimed_by = '', claimed_until = 0",
            );
            Self::query(&sql).execute(&mut *tx).await?;
            // What studies_to_publish finds by its partial index (migration 0010).
            let mut sql = self.sql();
            sql.push("UPDATE study SET published_arrivals = ")
                .bind_int(p.arrivals)
                .push(" WHERE study_instance_uid = ")
                .bind(&p.study_instance_uid);
            Self::query(&sql).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn studies_to_publish(
        &self,
        quiet_before: i64,
        limit: u32,
    ) -> Result<Vec<StudyArrival>, IndexError> {
        let mut sql = self.sql();
        sql.push(
            "SELECT s.study_instance_uid, s.last_arrival, s.arrivals FROM study s \
             LEFT JOIN xds_publication p ON p.study_instance_uid = s.study_instance_uid \
             WHERE s.arrivals > s.published_arrivals AND s.last_arrival <= ",
        )
        .bind_int(quiet_before)
        .push(
            " AND s.arrivals > 0 AND (p.study_instance_uid IS NULL OR p.arrivals < s.arrivals) \
             ORDER BY s.last_arrival, s.id",
        )
        .limit_offset(Some(limit), 0);
        let rows = Self::query(&sql).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                Ok(StudyArrival {
                    study_instance_uid: row.try_get(0usize)?,
                    last_arrival: row.try_get(1usize)?,
                    arrivals: row.try_get(2usize)?,
                })
            })
            .collect()
    }

    pub async fn claim_publication(
        &self,
        study_uid: &str,
        owner: &str,
        now: i64,
        until: i64,
    ) -> Result<bool, IndexError> {
        // A study never looked at gets a row that covers no arrivals: still due.
        let mut sql = self.sql();
        sql.push(
            "INSERT INTO xds_publication (study_instance_uid, entry_uuid, arrivals, \
             published_at, claimed_by, claimed_until) VALUES (",
        )
        .bind(study_uid)
        .push(", '', 0, 0, ")
        .bind(owner)
        .push(", ")
        .bind_int(until)
        .push(
            ") ON CONFLICT (study_instance_uid) DO UPDATE SET \
             claimed_by = excluded.claimed_by, claimed_until = excluded.claimed_until \
             WHERE xds_publication.claimed_by = excluded.claimed_by \
             OR xds_publication.claimed_until <= ",
        )
        .bind_int(now)
        .push(" RETURNING study_instance_uid");
        let claimed = Self::query(&sql).fetch_optional(&self.pool).await?;
        Ok(claimed.is_some())
    }

    pub async fn study_arrival(&self, study_uid: &str) -> Result<Option<StudyArrival>, IndexError> {
        let mut sql = self.sql();
        sql.push("SELECT study_instance_uid, last_arrival, arrivals FROM study WHERE study_instance_uid = ")
            .bind(study_uid);
        let Some(row) = Self::query(&sql).fetch_optional(&self.pool).await? else {
            return Ok(None);
        };
        Ok(Some(StudyArrival {
            study_instance_uid: row.try_get(0usize)?,
            last_arrival: row.try_get(1usize)?,
            arrivals: row.try_get(2usize)?,
        }))
    }

    pub async fn publication(&self, study_uid: &str) -> Result<Option<Publication>, IndexError> {
        let mut sql = self.sql();
        sql.push(
            "SELECT study_instance_uid, entry_uuid, arrivals, published_at FROM xds_publication \
             WHERE study_instance_uid = ",
        )
        .bind(study_uid);
        let Some(row) = Self::query(&sql).fetch_optional(&self.pool).await? else {
            return Ok(None);
        };
        Ok(Some(Publication {
            study_instance_uid: row.try_get(0usize)?,
            entry_uuid: row.try_get(1usize)?,
            arrivals: row.try_get(2usize)?,
            published_at: row.try_get(3usize)?,
        }))
    }
}
