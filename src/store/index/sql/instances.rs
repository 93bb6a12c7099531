//! Storing and removing instances: the upserts of an instance with its patient, study and
//! series rows, and the pruning of parents an instance left empty.

use super::schema::{
    child, name_words, norm_column, normalize_name, parent_fk, table, unique_column,
};
use super::sql_impl;
use super::statement::{Bind, Dialect, Sql};
use super::SqlIndex;
use crate::clock::now_rfc3339;
use crate::model::query::{IndexedAttr, Level, INDEXED_ATTRS};
use crate::store::index::{IndexError, UpsertOutcome};
use crate::store::InstanceRecord;
use sqlx::Row;
use sqlx::Transaction;
use std::collections::{BTreeMap, BTreeSet};

/// `INSERT ... ON CONFLICT DO UPDATE ... RETURNING id` for the patient, study or series row of
/// a record. Newer non-empty values replace older ones; an absent value keeps the old one.
fn upsert_entity_sql(
    dialect: Dialect,
    level: Level,
    record: &InstanceRecord,
    parent_id: Option<i64>,
) -> Sql {
    let tbl = table(level);
    let key = unique_column(level);
    let attrs: Vec<&IndexedAttr> = INDEXED_ATTRS.iter().filter(|a| a.level == level).collect();
    let mut names: Vec<&str> = Vec::new();
    let mut values: Vec<Bind> = Vec::new();
    let mut set: Vec<String> = Vec::new();
    for attr in &attrs {
        let value = record.get(attr.tag).unwrap_or("");
        names.push(attr.column);
        values.push(Bind::Text(value.to_string()));
        if let Some(norm) = norm_column(attr) {
            names.push(norm);
            values.push(Bind::Text(normalize_name(value)));
            set.push(format!(
                "{norm} = CASE WHEN excluded.{c} <> '' THEN excluded.{norm} ELSE {tbl}.{norm} END",
                c = attr.column
            ));
        }
        if attr.column != key {
            set.push(format!(
                "{c} = CASE WHEN excluded.{c} <> '' THEN excluded.{c} ELSE {tbl}.{c} END",
                c = attr.column
            ));
        }
    }
    if let Some(id) = parent_id {
        let fk = parent_fk(level);
        names.push(fk);
        values.push(Bind::Int(id));
        set.push(format!("{fk} = excluded.{fk}"));
    }
    let mut sql = Sql::new(dialect);
    sql.push(&format!(
        "INSERT INTO {tbl} ({}) VALUES (",
        names.join(", ")
    ));
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        match value {
            Bind::Text(t) => sql.bind(t),
            Bind::Int(n) => sql.bind_int(*n),
        };
    }
    // The patient row also returns its normalised name as it now stands, for its words.
    let returning = match level {
        Level::Patient => "id, patient_name_norm",
        _ => "id",
    };
    sql.push(&format!(
        ") ON CONFLICT ({key}) DO UPDATE SET {} RETURNING {returning}",
        set.join(", ")
    ));
    sql
}

/// `INSERT ... ON CONFLICT (sop_instance_uid) DO UPDATE` for the instance row: a re-sent
/// instance replaces every value of the old row, including its series.
fn upsert_instance_sql(
    dialect: Dialect,
    record: &InstanceRecord,
    series_id: i64,
    stored_at: &str,
) -> Sql {
    let mut sql = upsert_instance_rows_sql(dialect, &[(record, series_id)], stored_at);
    sql.push(" RETURNING id");
    sql
}

/// [`upsert_instance_sql`] of several instances in one statement (one row each, no two with
/// the same SOP Instance UID: PostgreSQL refuses to update a row twice in one statement).
fn upsert_instance_rows_sql(
    dialect: Dialect,
    rows: &[(&InstanceRecord, i64)],
    stored_at: &str,
) -> Sql {
    let mut cols: Vec<&str> = Vec::new();
    let mut sql = Sql::new(dialect);
    let attrs: Vec<&IndexedAttr> = INDEXED_ATTRS
        .iter()
        .filter(|a| a.level == Level::Image)
        .collect();
    for a in &attrs {
        cols.push(a.column);
    }
    cols.extend([
        "instance_number_int",
        "series_pk",
        "transfer_syntax_uid",
        "blob_key",
        "size_bytes",
        "stored_at",
    ]);
    sql.push(&format!(
        "INSERT INTO instance ({}) VALUES ",
        cols.join(", ")
    ));
    for (n, (record, series_id)) in rows.iter().enumerate() {
        sql.push(if n == 0 { "(" } else { "), (" });
        for a in &attrs {
            sql.bind(record.get(a.tag).unwrap_or("")).push(", ");
        }
        let number = record
            .column("instance_number")
            .trim()
            .parse::<i64>()
            .unwrap_or(i64::MAX);
        sql.bind_int(number).push(", ");
        sql.bind_int(*series_id).push(", ");
        sql.bind(&record.transfer_syntax_uid).push(", ");
        sql.bind(&record.blob_key).push(", ");
        sql.bind_int(i64::try_from(record.size_bytes).unwrap_or(i64::MAX))
            .push(", ");
        sql.bind(stored_at);
    }
    let set: Vec<String> = cols
        .iter()
        .filter(|c| **c != "sop_instance_uid")
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    sql.push(&format!(
        ") ON CONFLICT (sop_instance_uid) DO UPDATE SET {}",
        set.join(", ")
    ));
    sql
}

/// The columns of `level`'s row a record's upsert writes, in order, with the value it
/// would leave there: `None` where the record has no value (the upsert keeps the stored one).
fn level_values(level: Level, record: &InstanceRecord) -> Vec<(&'static str, Option<String>)> {
    let mut out = Vec::new();
    for attr in INDEXED_ATTRS.iter().filter(|a| a.level == level) {
        let value = record.get(attr.tag).unwrap_or("");
        let given = (!value.is_empty()).then(|| value.to_string());
        if let Some(norm) = norm_column(attr) {
            out.push((norm, given.as_ref().map(|v| normalize_name(v))));
        }
        out.push((attr.column, given));
    }
    out
}

/// One `SELECT` for where a record goes: the instance's row as it hangs now (series,
/// study, patient ids and blob key) and the patient, study and series rows its UIDs name,
/// with every column an upsert would write. From it the upserts that would change nothing
/// are left out ([`SqlIndex::upsert_in`]).
fn lookup_sql(dialect: Dialect, record: &InstanceRecord) -> Sql {
    let mut cols = vec![
        "i.series_pk".to_string(),
        "ise.study_pk".to_string(),
        "ist.patient_pk".to_string(),
        "i.blob_key".to_string(),
        "i.sop_class_uid".to_string(),
    ];
    for (alias, level, fk) in [
        ("p", Level::Patient, None),
        ("st", Level::Study, Some("patient_pk")),
        ("se", Level::Series, Some("study_pk")),
    ] {
        cols.push(format!("{alias}.id"));
        if let Some(fk) = fk {
            cols.push(format!("{alias}.{fk}"));
        }
        for (column, _) in level_values(level, record) {
            cols.push(format!("{alias}.{column}"));
        }
    }
    let mut sql = Sql::new(dialect);
    sql.push(&format!(
        "SELECT {} FROM (SELECT 1 AS one) AS x \
         LEFT JOIN instance i ON i.sop_instance_uid = ",
        cols.join(", ")
    ))
    .bind(record.sop_instance_uid())
    .push(
        " LEFT JOIN series ise ON ise.id = i.series_pk \
         LEFT JOIN study ist ON ist.id = ise.study_pk \
         LEFT JOIN patient p ON p.patient_id = ",
    )
    .bind(
        INDEXED_ATTRS
            .iter()
            .find(|a| a.column == unique_column(Level::Patient))
            .and_then(|a| record.get(a.tag))
            .unwrap_or(""),
    )
    .push(" LEFT JOIN study st ON st.study_instance_uid = ")
    .bind(record.study_instance_uid())
    .push(" LEFT JOIN series se ON se.series_instance_uid = ")
    .bind(record.series_instance_uid());
    sql
}

/// What the upserts of one transaction have written so far: the patient, study and series
/// rows of the last instance (the statements, with a placeholder parent id, and the row
/// ids), so the next instance of the same series does not write them again; the instances
/// per study row not yet added to its `arrivals`; and what they change in the studies'
/// computed values ([`flush`](SqlIndex::flush)).
#[derive(Debug, Default)]
pub(super) struct Written {
    last: Option<([Sql; 3], [i64; 3])>,
    arrivals: BTreeMap<i64, i64>,
    studies: BTreeMap<i64, StudyChange>,
}

/// What one transaction changes in a study row's computed values (migration 0013).
#[derive(Debug, Default)]
struct StudyChange {
    /// New instance rows in the study.
    instances: i64,
    /// Their SOP classes.
    classes: BTreeSet<String>,
    /// A series row was written (new, or its modality may have changed): the series count
    /// and modalities are read again from the study's series rows (a handful).
    series: bool,
    /// An instance or series left the study or changed its SOP class: every value is
    /// counted again from the rows.
    recount: bool,
}

/// The computed values of a study as kept on its row (migration 0013): distinct non-empty
/// values, sorted, joined with `\`.
fn join_values<'a>(values: impl IntoIterator<Item = &'a str>) -> String {
    let set: BTreeSet<&str> = values.into_iter().filter(|v| !v.is_empty()).collect();
    set.into_iter().collect::<Vec<_>>().join("\\")
}

/// Most instance rows in one multi-row `INSERT` ([`SqlIndex::upsert_all`]): 13 parameters
/// each, far below SQLite's 32,766 and PostgreSQL's 65,535.
const ROWS_PER_INSERT: usize = 256;

/// Where an existing instance, series or study hangs (row ids), to prune emptied parents.
#[derive(Debug, Default)]
pub(super) struct Parents {
    pub series: Vec<i64>,
    pub studies: Vec<i64>,
    pub patients: Vec<i64>,
}

sql_impl! {
    async fn fetch_ids(
        tx: &mut Transaction<'static, DB>,
        sql: &Sql,
    ) -> Result<Option<Vec<i64>>, IndexError> {
        let row = Self::query(sql).fetch_optional(&mut **tx).await?;
        match row {
            None => Ok(None),
            Some(row) => {
                let mut ids = Vec::with_capacity(row.len());
                for i in 0..row.len() {
                    ids.push(row.try_get::<i64, usize>(i)?);
                }
                Ok(Some(ids))
            }
        }
    }

    async fn insert_returning_id(
        tx: &mut Transaction<'static, DB>,
        sql: &Sql,
    ) -> Result<i64, IndexError> {
        let row = Self::query(sql).fetch_one(&mut **tx).await?;
        Ok(row.try_get::<i64, usize>(0)?)
    }

    /// The study rows' arrival counts and times and their computed values (migration 0013)
    /// after a transaction's upserts (one statement per study, more where a value changed),
    /// before it commits.
    pub(super) async fn flush(
        &self,
        tx: &mut Transaction<'static, DB>,
        written: Written,
    ) -> Result<(), IndexError> {
        let Written {
            arrivals,
            mut studies,
            ..
        } = written;
        let ids: BTreeSet<i64> = arrivals.keys().chain(studies.keys()).copied().collect();
        // In id order: two transactions touching the same studies lock them in one order.
        for study_id in ids {
            let change = studies.remove(&study_id).unwrap_or_default();
            // The first statement also locks the row (PostgreSQL), so what is counted below
            // includes every committed instance and concurrent additions wait.
            let added = if change.recount { 0 } else { change.instances };
            let mut sql = self.sql();
            sql.push("UPDATE study SET num_instances = num_instances + ")
                .bind_int(added);
            if let Some(n) = arrivals.get(&study_id) {
                sql.push(", last_arrival = ")
                    .bind_int(crate::clock::unix_seconds())
                    .push(", arrivals = arrivals + ")
                    .bind_int(*n);
            }
            sql.push(" WHERE id = ")
                .bind_int(study_id)
                .push(" RETURNING sop_classes");
            let Some(row) = Self::query(&sql).fetch_optional(&mut **tx).await? else {
                continue; // pruned
            };
            let stored: String = row.try_get(0usize)?;
            if change.recount {
                self.recount_study(tx, study_id).await?;
                continue;
            }
            let known: BTreeSet<&str> = stored.split('\\').collect();
            let classes = (!change.classes.iter().all(|c| known.contains(c.as_str())))
                .then(|| join_values(known.iter().copied().chain(change.classes.iter().map(String::as_str))));
            let series = match change.series {
                true => Some(self.series_values(tx, study_id).await?),
                false => None,
            };
            if classes.is_none() && series.is_none() {
                continue;
            }
            let mut sql = self.sql();
            sql.push("UPDATE study SET ");
            if let Some(classes) = &classes {
                sql.push("sop_classes = ").bind(classes);
            }
            if let Some((count, modalities)) = &series {
                if classes.is_some() {
                    sql.push(", ");
                }
                sql.push("num_series = ")
                    .bind_int(*count)
                    .push(", modalities = ")
                    .bind(modalities);
            }
            sql.push(" WHERE id = ").bind_int(study_id);
            Self::query(&sql).execute(&mut **tx).await?;
        }
        Ok(())
    }

    /// A study's series count and modalities from its series rows.
    async fn series_values(
        &self,
        tx: &mut Transaction<'static, DB>,
        study_id: i64,
    ) -> Result<(i64, String), IndexError> {
        let mut sql = self.sql();
        sql.push("SELECT modality FROM series WHERE study_pk = ")
            .bind_int(study_id);
        let rows = Self::query(&sql).fetch_all(&mut **tx).await?;
        let mut modalities = Vec::with_capacity(rows.len());
        for row in &rows {
            modalities.push(row.try_get::<String, usize>(0)?);
        }
        let count = i64::try_from(modalities.len()).unwrap_or(i64::MAX);
        Ok((count, join_values(modalities.iter().map(String::as_str))))
    }

    /// Count a study's computed values (migration 0013) again from its rows: after
    /// instances or series left it, moved, or changed SOP class. Reads every instance of
    /// the study, once per transaction that does so (deletes, re-sends that move).
    pub(super) async fn recount_study(
        &self,
        tx: &mut Transaction<'static, DB>,
        study_id: i64,
    ) -> Result<(), IndexError> {
        let (series, modalities) = self.series_values(tx, study_id).await?;
        let mut sql = self.sql();
        sql.push(
            "SELECT i.sop_class_uid, COUNT(*) FROM instance i \
             JOIN series se ON se.id = i.series_pk WHERE se.study_pk = ",
        )
        .bind_int(study_id)
        .push(" GROUP BY i.sop_class_uid");
        let mut instances = 0;
        let mut classes = Vec::new();
        for row in Self::query(&sql).fetch_all(&mut **tx).await? {
            classes.push(row.try_get::<String, usize>(0)?);
            instances += row.try_get::<i64, usize>(1)?;
        }
        let mut sql = self.sql();
        sql.push("UPDATE study SET num_series = ")
            .bind_int(series)
            .push(", modalities = ")
            .bind(&modalities)
            .push(", num_instances = ")
            .bind_int(instances)
            .push(", sop_classes = ")
            .bind(&join_values(classes.iter().map(String::as_str)))
            .push(" WHERE id = ")
            .bind_int(study_id);
        Self::query(&sql).execute(&mut **tx).await?;
        Ok(())
    }

    /// Lock a study row (PostgreSQL; a SQLite write transaction holds the database) and
    /// count its computed values again: after a delete.
    pub(super) async fn refresh_study(
        &self,
        tx: &mut Transaction<'static, DB>,
        study_id: i64,
    ) -> Result<(), IndexError> {
        let mut sql = self.sql();
        sql.push("SELECT id FROM study WHERE id = ").bind_int(study_id);
        if self.dialect == Dialect::Postgres {
            sql.push(" FOR UPDATE");
        }
        if Self::query(&sql).fetch_optional(&mut **tx).await?.is_some() {
            self.recount_study(tx, study_id).await?;
        }
        Ok(())
    }

    /// Bring the patient's rows in `patient_name_word` (migration 0010, fuzzy name search) in
    /// line with its normalised name: read them (one index lookup), rewrite only when the name
    /// changed. The upsert before holds the patient row, so writers of one patient take turns.
    async fn write_name_words(
        &self,
        tx: &mut Transaction<'static, DB>,
        patient_id: i64,
        name_norm: &str,
    ) -> Result<(), IndexError> {
        let mut sql = self.sql();
        sql.push("SELECT word FROM patient_name_word WHERE patient_pk = ")
            .bind_int(patient_id);
        let mut stored = Vec::new();
        for row in Self::query(&sql).fetch_all(&mut **tx).await? {
            stored.push(row.try_get::<String, usize>(0)?);
        }
        let mut wanted = name_words(name_norm);
        stored.sort();
        wanted.sort();
        if stored == wanted {
            return Ok(());
        }
        if !stored.is_empty() {
            let mut sql = self.sql();
            sql.push("DELETE FROM patient_name_word WHERE patient_pk = ")
                .bind_int(patient_id);
            Self::query(&sql).execute(&mut **tx).await?;
        }
        if !wanted.is_empty() {
            let mut sql = self.sql();
            sql.push("INSERT INTO patient_name_word (word, patient_pk) VALUES ");
            for (i, word) in wanted.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.push("(").bind(word).push(", ").bind_int(patient_id).push(")");
            }
            sql.push(" ON CONFLICT DO NOTHING");
            Self::query(&sql).execute(&mut **tx).await?;
        }
        Ok(())
    }

    /// Delete the given series, studies and patients where they no longer have children.
    pub(super) async fn prune(
        &self,
        tx: &mut Transaction<'static, DB>,
        parents: Parents,
    ) -> Result<(), IndexError> {
        for (level, ids) in [
            (Level::Series, parents.series),
            (Level::Study, parents.studies),
            (Level::Patient, parents.patients),
        ] {
            let ids: BTreeSet<i64> = ids.into_iter().collect();
            let Some(below) = child(level) else { continue };
            for id in ids {
                let mut sql = self.sql();
                sql.push(&format!("DELETE FROM {} WHERE id = ", table(level)))
                    .bind_int(id);
                sql.push(&format!(
                    " AND NOT EXISTS (SELECT 1 FROM {} WHERE {} = ",
                    table(below),
                    parent_fk(below)
                ));
                sql.bind_int(id).push(")");
                Self::query(&sql).execute(&mut **tx).await?;
            }
        }
        Ok(())
    }

    pub async fn upsert_instance(
        &self,
        record: &InstanceRecord,
    ) -> Result<UpsertOutcome, IndexError> {
        let mut tx = self.begin_write().await?;
        let mut written = Written::default();
        let (outcome, _) = self.upsert_in(&mut tx, record, &mut written).await?;
        self.flush(&mut tx, written).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    /// Several instances in one transaction (one commit, one WAL fsync): all or none.
    pub async fn upsert_instances(
        &self,
        records: &[InstanceRecord],
    ) -> Result<Vec<UpsertOutcome>, IndexError> {
        let mut tx = self.begin_write().await?;
        let mut outcomes = Vec::with_capacity(records.len());
        let mut written = Written::default();
        for record in records {
            outcomes.push(self.upsert_in(&mut tx, record, &mut written).await?.0);
        }
        self.flush(&mut tx, written).await?;
        tx.commit().await?;
        Ok(outcomes)
    }

    /// [`upsert_instances`](Self::upsert_instances), returning the blob keys the rows no
    /// longer name (older versions of re-sent instances): queued in `blob_deletion` in the
    /// same transaction, so a crash before their files go leaves them to the next sweep.
    pub async fn upsert_instances_superseding(
        &self,
        records: &[InstanceRecord],
    ) -> Result<Vec<String>, IndexError> {
        let mut tx = self.begin_write().await?;
        let mut written = Written::default();
        let superseded = self.upsert_all(&mut tx, records, &mut written).await?;
        self.flush(&mut tx, written).await?;
        tx.commit().await?;
        Ok(superseded)
    }

    /// [`upsert_in`](Self::upsert_in) of every record in turn, with the same outcome in
    /// fewer statements: an instance the index does not hold yet whose patient, study and
    /// series rows the one before it has just written (a batch of one series, as a retrieve
    /// or an association delivers it) needs neither the lookup nor the parents' upserts, so
    /// those instances are inserted together, many rows per statement. One query first
    /// tells which of the batch the index holds. Each statement is a round trip to the
    /// database (for SQLite, to its worker thread and back: two thread switches).
    /// Returns the superseded blob keys.
    pub(super) async fn upsert_all(
        &self,
        tx: &mut Transaction<'static, DB>,
        records: &[InstanceRecord],
        written: &mut Written,
    ) -> Result<Vec<String>, IndexError> {
        let mut superseded = Vec::new();
        let known = self.held_instances(tx, records).await?;
        // SOP Instance UIDs of this batch inserted or queued already: a second copy in the
        // batch takes the long way, after the first is written.
        let mut seen: std::collections::HashSet<&str> = std::collections::HashSet::new();
        let mut queued: Vec<(&InstanceRecord, i64)> = Vec::new();
        let stored_at = now_rfc3339();
        for record in records {
            let sop = record.sop_instance_uid();
            let fresh = !sop.is_empty() && !known.contains(sop) && !seen.contains(sop);
            let rows = match &written.last {
                Some((same, ids)) if fresh && !record.study_instance_uid().is_empty() => {
                    let entities = [
                        upsert_entity_sql(self.dialect, Level::Patient, record, None),
                        upsert_entity_sql(self.dialect, Level::Study, record, Some(-1)),
                        upsert_entity_sql(self.dialect, Level::Series, record, Some(-1)),
                    ];
                    (*same == entities && !record.series_instance_uid().is_empty())
                        .then_some(*ids)
                }
                _ => None,
            };
            seen.insert(sop);
            if let Some([_, study_id, series_id]) = rows {
                *written.arrivals.entry(study_id).or_default() += 1;
                // A new instance of a series written just before: it adds to the study's
                // computed values as in `upsert_in` (migration 0013).
                let change = written.studies.entry(study_id).or_default();
                change.instances += 1;
                let class = record.column("sop_class_uid");
                if !class.is_empty() {
                    change.classes.insert(class.to_string());
                }
                queued.push((record, series_id));
                if queued.len() >= ROWS_PER_INSERT {
                    self.insert_rows(tx, &mut queued, &stored_at).await?;
                }
                continue;
            }
            self.insert_rows(tx, &mut queued, &stored_at).await?;
            superseded.extend(self.upsert_in(tx, record, written).await?.1);
        }
        self.insert_rows(tx, &mut queued, &stored_at).await?;
        Ok(superseded)
    }

    /// The SOP Instance UIDs of `records` the index holds, in one query per
    /// [`ROWS_PER_INSERT`].
    async fn held_instances(
        &self,
        tx: &mut Transaction<'static, DB>,
        records: &[InstanceRecord],
    ) -> Result<BTreeSet<String>, IndexError> {
        let mut held = BTreeSet::new();
        let uids: Vec<String> = records
            .iter()
            .map(|r| r.sop_instance_uid().to_string())
            .filter(|uid| !uid.is_empty())
            .collect();
        for chunk in uids.chunks(ROWS_PER_INSERT) {
            let mut sql = self.sql();
            sql.push("SELECT sop_instance_uid FROM instance WHERE sop_instance_uid IN ")
                .bind_list(chunk);
            for row in Self::query(&sql).fetch_all(&mut **tx).await? {
                held.insert(row.try_get::<String, usize>(0)?);
            }
        }
        Ok(held)
    }

    /// Insert the queued instance rows (see [`upsert_all`](Self::upsert_all)) in one statement.
    async fn insert_rows(
        &self,
        tx: &mut Transaction<'static, DB>,
        queued: &mut Vec<(&InstanceRecord, i64)>,
        stored_at: &str,
    ) -> Result<(), IndexError> {
        if queued.is_empty() {
            return Ok(());
        }
        let sql = upsert_instance_rows_sql(self.dialect, queued, stored_at);
        Self::query(&sql).execute(&mut **tx).await?;
        queued.clear();
        Ok(())
    }

    /// Upsert one instance; with the outcome, the blob key its old row named when that
    /// differs from the new one (queued for deletion here, in `tx`).
    pub(super) async fn upsert_in(
        &self,
        tx: &mut Transaction<'static, DB>,
        record: &InstanceRecord,
        written: &mut Written,
    ) -> Result<(UpsertOutcome, Option<String>), IndexError> {
        let study_uid = record.study_instance_uid();
        let series_uid = record.series_instance_uid();
        let sop_uid = record.sop_instance_uid();
        if study_uid.is_empty() {
            return Err(IndexError::MissingKey("StudyInstanceUID"));
        }
        if series_uid.is_empty() {
            return Err(IndexError::MissingKey("SeriesInstanceUID"));
        }
        if sop_uid.is_empty() {
            return Err(IndexError::MissingKey("SOPInstanceUID"));
        }

        // Where the instance hangs now (it may move), and the blob of the version it
        // replaces: its file goes once this commits; and the patient, study and series
        // rows as they stand.
        let lookup = lookup_sql(self.dialect, record);
        let row = Self::query(&lookup).fetch_one(&mut **tx).await?;
        let old_instance = match row.try_get::<Option<i64>, usize>(0)? {
            Some(series_pk) => Some((
                [
                    series_pk,
                    row.try_get::<Option<i64>, usize>(1)?.unwrap_or(0),
                    row.try_get::<Option<i64>, usize>(2)?.unwrap_or(0),
                ],
                row.try_get::<Option<String>, usize>(3)?.unwrap_or_default(),
            )),
            None => None,
        };
        let old_class = row.try_get::<Option<String>, usize>(4)?.unwrap_or_default();
        // The rows already hold what the upserts would write, linked as they would link
        // them: their ids, and no upsert.
        let mut at = 5;
        let mut ids = [None::<i64>; 3];
        let mut parents = [None::<i64>; 3];
        let mut unchanged = true;
        for (n, level) in [Level::Patient, Level::Study, Level::Series]
            .into_iter()
            .enumerate()
        {
            ids[n] = row.try_get::<Option<i64>, usize>(at)?;
            at += 1;
            if level != Level::Patient {
                parents[n] = row.try_get::<Option<i64>, usize>(at)?;
                at += 1;
            }
            for (_, value) in level_values(level, record) {
                let stored = row.try_get::<Option<String>, usize>(at)?;
                at += 1;
                if value.is_some() && stored != value {
                    unchanged = false;
                }
            }
        }
        let linked = ids.iter().all(Option::is_some)
            && parents[1] == ids[0]
            && parents[2] == ids[1];
        let in_place = match (unchanged && linked, ids) {
            (true, [Some(p), Some(st), Some(se)]) => Some([p, st, se]),
            _ => None,
        };

        let old_key = old_instance
            .as_ref()
            .map(|(_, key)| key.clone())
            .filter(|key| !key.is_empty() && *key != record.blob_key);
        if let Some(key) = &old_key {
            let mut sql = self.sql();
            sql.push("INSERT INTO blob_deletion (blob_key, queued_at) VALUES (")
                .bind(key)
                .push(", ")
                .bind_int(crate::clock::unix_seconds())
                .push(") ON CONFLICT (blob_key) DO NOTHING");
            Self::query(&sql).execute(&mut **tx).await?;
        }

        // The patient, study and series rows: written once per transaction while they stay
        // the same (a batch of one series' instances), not once per instance.
        let entities = [
            upsert_entity_sql(self.dialect, Level::Patient, record, None),
            upsert_entity_sql(self.dialect, Level::Study, record, Some(-1)),
            upsert_entity_sql(self.dialect, Level::Series, record, Some(-1)),
        ];
        let (patient_id, study_id, series_id, old_series, old_study) = match &written.last {
            Some((same, ids)) if *same == entities => (ids[0], ids[1], ids[2], None, None),
            _ if in_place.is_some() => {
                let [p, st, se] = in_place.unwrap_or_default();
                written.last = Some((entities, [p, st, se]));
                (p, st, se, None, None)
            }
            _ => {
                let mut sql = self.sql();
                sql.push(
                    "SELECT se.study_pk, st.patient_pk FROM series se \
                     JOIN study st ON st.id = se.study_pk WHERE se.series_instance_uid = ",
                )
                .bind(series_uid);
                let old_series = Self::fetch_ids(tx, &sql).await?;
                let mut sql = self.sql();
                sql.push("SELECT patient_pk FROM study WHERE study_instance_uid = ")
                    .bind(study_uid);
                let old_study = Self::fetch_ids(tx, &sql).await?;
                let sql = upsert_entity_sql(self.dialect, Level::Patient, record, None);
                let row = Self::query(&sql).fetch_one(&mut **tx).await?;
                let patient_id: i64 = row.try_get(0usize)?;
                let name_norm: String = row.try_get(1usize)?;
                self.write_name_words(tx, patient_id, &name_norm).await?;
                let sql = upsert_entity_sql(self.dialect, Level::Study, record, Some(patient_id));
                let study_id = Self::insert_returning_id(tx, &sql).await?;
                let sql = upsert_entity_sql(self.dialect, Level::Series, record, Some(study_id));
                let series_id = Self::insert_returning_id(tx, &sql).await?;
                written.last = Some((entities, [patient_id, study_id, series_id]));
                // The series may be new or have a new modality; a series that came from
                // another study took its instances along.
                written.studies.entry(study_id).or_default().series = true;
                if let Some(&[from, _]) = old_series.as_deref() {
                    if from != study_id {
                        written.studies.entry(from).or_default().recount = true;
                        written.studies.entry(study_id).or_default().recount = true;
                    }
                }
                (patient_id, study_id, series_id, old_series, old_study)
            }
        };
        // The study's computed values (migration 0013): a new instance adds to them; a
        // re-send in place with the same SOP class changes none; anything else (the
        // instance moved, or changed class) has its old and new study counted again.
        let class = record.column("sop_class_uid");
        match &old_instance {
            None => {
                let change = written.studies.entry(study_id).or_default();
                change.instances += 1;
                if !class.is_empty() {
                    change.classes.insert(class.to_string());
                }
            }
            Some(([old_series_pk, _, _], _)) if *old_series_pk == series_id && old_class == class => {}
            Some(([_, old_study_pk, _], _)) => {
                written.studies.entry(*old_study_pk).or_default().recount = true;
                written.studies.entry(study_id).or_default().recount = true;
            }
        }
        // The publisher's view of the study (migration 0007): when it last got an instance,
        // and how many it got; counted here, written once per study by `Written::flush`.
        *written.arrivals.entry(study_id).or_default() += 1;
        let sql = upsert_instance_sql(self.dialect, record, series_id, &now_rfc3339());
        Self::insert_returning_id(tx, &sql).await?;

        let mut parents = Parents::default();
        if let Some((ids, _)) = &old_instance {
            parents.series.push(ids[0]);
            parents.studies.push(ids[1]);
            parents.patients.push(ids[2]);
        }
        if let Some(ids) = &old_series {
            parents.studies.push(ids[0]);
            parents.patients.push(ids[1]);
        }
        if let Some(ids) = &old_study {
            parents.patients.push(ids[0]);
        }
        parents.series.retain(|id| *id != series_id);
        parents.studies.retain(|id| *id != study_id);
        parents.patients.retain(|id| *id != patient_id);
        self.prune(tx, parents).await?;
        let outcome = if old_instance.is_some() {
            UpsertOutcome::Replaced
        } else {
            UpsertOutcome::Inserted
        };
        Ok((outcome, old_key))
    }

    pub async fn remove_instance(
        &self,
        sop_instance_uid: &str,
    ) -> Result<Option<String>, IndexError> {
        let mut tx = self.begin_write().await?;
        let mut sql = self.sql();
        sql.push(
            "SELECT i.id, i.series_pk, se.study_pk, st.patient_pk, i.blob_key FROM instance i \
             JOIN series se ON se.id = i.series_pk JOIN study st ON st.id = se.study_pk \
             WHERE i.sop_instance_uid = ",
        )
        .bind(sop_instance_uid);
        let Some(row) = Self::query(&sql).fetch_optional(&mut *tx).await? else {
            tx.rollback().await?;
            return Ok(None);
        };
        let id: i64 = row.try_get(0usize)?;
        let parents = Parents {
            series: vec![row.try_get(1usize)?],
            studies: vec![row.try_get(2usize)?],
            patients: vec![row.try_get(3usize)?],
        };
        let blob_key: String = row.try_get(4usize)?;
        let study = parents.studies[0];
        let mut sql = self.sql();
        sql.push("DELETE FROM instance WHERE id = ").bind_int(id);
        Self::query(&sql).execute(&mut *tx).await?;
        self.prune(&mut tx, parents).await?;
        self.refresh_study(&mut tx, study).await?;
        tx.commit().await?;
        Ok(Some(blob_key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::Tag;

    #[test]
    fn upsert_sql_numbers_placeholders() {
        let mut r = InstanceRecord::default();
        r.values.insert(Tag(0x0010, 0x0010), "A^B".into());
        let s = upsert_entity_sql(Dialect::Postgres, Level::Patient, &r, None);
        assert!(
            s.text.contains("VALUES ($1, $2, $3, $4, $5, $6)"),
            "{}",
            s.text
        );
        assert_eq!(s.binds.len(), 6);
    }
}
