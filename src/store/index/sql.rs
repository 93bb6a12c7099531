//! What the SQLite and PostgreSQL backends share: the SQL text builders, the name
//! normalisation for fuzzy matching, and [`SqlIndex`], the [`Index`](super::Index) logic
//! written once over any sqlx database. The backends only add their connection options,
//! migrations and [`Dialect`] (placeholders, `LIMIT` quirks, how a write transaction begins).

use super::{AuditEvent, IndexError, UpsertOutcome};
use crate::model::query::{
    computed, normalize_name, AttrKind, IndexedAttr, Level, Match, Matcher, Query, INDEXED_ATTRS,
};
use crate::model::{InstanceLocation, Selection};
use crate::store::InstanceRecord;
use dicom_core::Tag;
use sqlx::{
    ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Row, Transaction, Type,
};
use std::collections::{BTreeMap, BTreeSet};

/// The SQL differences between the backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

/// One bound parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Bind {
    Text(String),
    Int(i64),
}

/// SQL text with its parameters, built in one pass so placeholders and binds stay in step.
#[derive(Debug, Clone)]
pub(crate) struct Sql {
    dialect: Dialect,
    pub text: String,
    pub binds: Vec<Bind>,
}

impl Sql {
    pub fn new(dialect: Dialect) -> Self {
        Sql {
            dialect,
            text: String::with_capacity(256),
            binds: Vec::new(),
        }
    }

    pub fn push(&mut self, s: &str) -> &mut Self {
        self.text.push_str(s);
        self
    }

    fn placeholder(&mut self) {
        match self.dialect {
            Dialect::Sqlite => self.text.push('?'),
            Dialect::Postgres => {
                self.text.push('$');
                self.text.push_str(&self.binds.len().to_string());
            }
        }
    }

    /// Append a placeholder for a text value. NUL characters are dropped: they are never
    /// meaningful in DICOM text and PostgreSQL refuses them.
    pub fn bind(&mut self, value: &str) -> &mut Self {
        let value = if value.contains('\0') {
            value.replace('\0', "")
        } else {
            value.to_string()
        };
        self.binds.push(Bind::Text(value));
        self.placeholder();
        self
    }

    pub fn bind_int(&mut self, value: i64) -> &mut Self {
        self.binds.push(Bind::Int(value));
        self.placeholder();
        self
    }

    /// `(?, ?, ...)` for a non-empty list.
    fn bind_list(&mut self, values: &[String]) -> &mut Self {
        self.push("(");
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.bind(v);
        }
        self.push(")")
    }

    /// `LIMIT x OFFSET y`, as each backend accepts it.
    pub(super) fn limit_offset(&mut self, limit: Option<u32>, offset: u32) -> &mut Self {
        match (limit, offset, self.dialect) {
            (Some(l), 0, _) => self.push(&format!(" LIMIT {l}")),
            (Some(l), o, _) => self.push(&format!(" LIMIT {l} OFFSET {o}")),
            (None, 0, _) => self,
            (None, o, Dialect::Sqlite) => self.push(&format!(" LIMIT -1 OFFSET {o}")),
            (None, o, Dialect::Postgres) => self.push(&format!(" OFFSET {o}")),
        }
    }
}

/// A DICOM wildcard value (`*`, `?`) as a LIKE pattern with `\` as escape character.
fn like_pattern(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 4);
    for c in value.chars() {
        match c {
            '*' => out.push('%'),
            '?' => out.push('_'),
            '%' | '_' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

fn table(level: Level) -> &'static str {
    match level {
        Level::Patient => "patient",
        Level::Study => "study",
        Level::Series => "series",
        Level::Image => "instance",
    }
}

fn alias(level: Level) -> &'static str {
    match level {
        Level::Patient => "p",
        Level::Study => "st",
        Level::Series => "se",
        Level::Image => "i",
    }
}

/// The column of `level`'s table that references its parent's `id`.
fn parent_fk(level: Level) -> &'static str {
    match level {
        Level::Patient => "",
        Level::Study => "patient_pk",
        Level::Series => "study_pk",
        Level::Image => "series_pk",
    }
}

fn parent(level: Level) -> Option<Level> {
    match level {
        Level::Patient => None,
        Level::Study => Some(Level::Patient),
        Level::Series => Some(Level::Study),
        Level::Image => Some(Level::Series),
    }
}

fn child(level: Level) -> Option<Level> {
    match level {
        Level::Patient => Some(Level::Study),
        Level::Study => Some(Level::Series),
        Level::Series => Some(Level::Image),
        Level::Image => None,
    }
}

/// The level's unique key column (and its stable sort order).
fn unique_column(level: Level) -> &'static str {
    match level {
        Level::Patient => "patient_id",
        Level::Study => "study_instance_uid",
        Level::Series => "series_instance_uid",
        Level::Image => "sop_instance_uid",
    }
}

/// The normalised companion column of a person-name column.
fn norm_column(attr: &IndexedAttr) -> Option<&'static str> {
    match attr.column {
        "patient_name" => Some("patient_name_norm"),
        "referring_physician_name" => Some("referring_physician_name_norm"),
        _ => None,
    }
}

/// `table alias JOIN parent ... ` from `from` up to and including `to` (`to` above `from`).
fn chain(from: Level, to: Level) -> String {
    let mut s = format!("{} {}", table(from), alias(from));
    let mut level = from;
    while level > to {
        let Some(up) = parent(level) else { break };
        s.push_str(&format!(
            " JOIN {} {} ON {}.id = {}.{}",
            table(up),
            alias(up),
            alias(up),
            alias(level),
            parent_fk(level)
        ));
        level = up;
    }
    s
}

fn qualified(attr: &IndexedAttr) -> String {
    format!("{}.{}", alias(attr.level), attr.column)
}

/// Append the condition one key puts on its attribute (PS3.4 C.2.2.2).
fn push_condition(sql: &mut Sql, attr: &IndexedAttr, matcher: &Matcher) {
    let col = qualified(attr);
    match matcher {
        Matcher::Universal => {
            sql.push("1 = 1");
        }
        Matcher::Single(value) if attr.kind == AttrKind::PersonName => {
            // Trailing empty components are insignificant: "A^B" equals "A^B^^^".
            let base = value.trim_end_matches('^');
            let variants: Vec<String> =
                (0..5).map(|n| format!("{base}{}", "^".repeat(n))).collect();
            sql.push(&col).push(" IN ").bind_list(&variants);
        }
        Matcher::Single(value) => {
            sql.push(&col).push(" = ").bind(value);
        }
        Matcher::Wildcard(value) => {
            sql.push(&col)
                .push(" LIKE ")
                .bind(&like_pattern(value))
                .push(" ESCAPE '\\'");
        }
        Matcher::Range { from, to } => {
            // An empty stored value has no date to compare: it never matches a range.
            sql.push("(").push(&col).push(" <> ''");
            if let Some(from) = from {
                sql.push(" AND ").push(&col).push(" >= ").bind(from);
            }
            if let Some(to) = to {
                sql.push(" AND ").push(&col).push(" <= ").bind(to);
            }
            sql.push(")");
        }
        Matcher::UidList(uids) => {
            let uids: Vec<String> = uids.iter().filter(|u| !u.is_empty()).cloned().collect();
            if uids.is_empty() {
                sql.push("1 = 0");
            } else {
                sql.push(&col).push(" IN ").bind_list(&uids);
            }
        }
        Matcher::Fuzzy(value) => match norm_column(attr) {
            Some(norm) => {
                // Prefix of the whole name, of any component, or of any word in one.
                let norm = format!("{}.{norm}", alias(attr.level));
                let p = like_pattern(&normalize_name(value.trim()));
                sql.push("(");
                for (i, pattern) in [format!("{p}%"), format!("%^{p}%"), format!("% {p}%")]
                    .iter()
                    .enumerate()
                {
                    if i > 0 {
                        sql.push(" OR ");
                    }
                    sql.push(&norm)
                        .push(" LIKE ")
                        .bind(pattern)
                        .push(" ESCAPE '\\'");
                }
                sql.push(")");
            }
            None => {
                sql.push(&col).push(" = ").bind(value);
            }
        },
    }
}

/// The indexed attributes returned at `level`: its own and those of the levels above.
fn returned_attrs(level: Level) -> Vec<&'static IndexedAttr> {
    INDEXED_ATTRS.iter().filter(|a| a.level <= level).collect()
}

/// What one aggregate query over a page of matches yields.
#[derive(Debug, Clone, Copy)]
enum Aggregate {
    /// Rows `(id, count, count, ...)`: one count per tag.
    Counts(&'static [Tag]),
    /// Rows `(id, value)`: the distinct non-empty values, sorted, joined with `\`.
    Values(Tag),
}

/// The computed attributes of `level` (PS3.4 C.6.1.1.x), as aggregate queries over the ids
/// of one page of matches (`{ids}` stands for the comma-separated row ids). Computing them
/// per page, not per row in the main query, keeps paging cheap whatever the plan.
fn computed_queries(level: Level) -> &'static [(Aggregate, &'static str)] {
    const PATIENT: &[Tag] = &[
        computed::NUMBER_OF_PATIENT_RELATED_STUDIES,
        computed::NUMBER_OF_PATIENT_RELATED_SERIES,
        computed::NUMBER_OF_PATIENT_RELATED_INSTANCES,
    ];
    const STUDY: &[Tag] = &[
        computed::NUMBER_OF_STUDY_RELATED_SERIES,
        computed::NUMBER_OF_STUDY_RELATED_INSTANCES,
    ];
    const SERIES: &[Tag] = &[computed::NUMBER_OF_SERIES_RELATED_INSTANCES];
    match level {
        Level::Patient => &[(
            Aggregate::Counts(PATIENT),
            "SELECT st.patient_pk, COUNT(DISTINCT st.id), COUNT(DISTINCT se.id), COUNT(i.id) \
             FROM study st LEFT JOIN series se ON se.study_pk = st.id \
             LEFT JOIN instance i ON i.series_pk = se.id \
             WHERE st.patient_pk IN ({ids}) GROUP BY st.patient_pk",
        )],
        Level::Study => &[
            (
                Aggregate::Counts(STUDY),
                "SELECT se.study_pk, COUNT(DISTINCT se.id), COUNT(i.id) \
                 FROM series se LEFT JOIN instance i ON i.series_pk = se.id \
                 WHERE se.study_pk IN ({ids}) GROUP BY se.study_pk",
            ),
            (
                Aggregate::Values(computed::MODALITIES_IN_STUDY),
                "SELECT DISTINCT study_pk, modality FROM series WHERE study_pk IN ({ids})",
            ),
            (
                Aggregate::Values(computed::SOP_CLASSES_IN_STUDY),
                "SELECT DISTINCT se.study_pk, i.sop_class_uid FROM instance i \
                 JOIN series se ON se.id = i.series_pk WHERE se.study_pk IN ({ids})",
            ),
        ],
        Level::Series => &[(
            Aggregate::Counts(SERIES),
            "SELECT series_pk, COUNT(*) FROM instance WHERE series_pk IN ({ids}) GROUP BY series_pk",
        )],
        Level::Image => &[],
    }
}

/// The main query of [`Index::find`](super::Index::find). Columns: [`returned_attrs`], then
/// the row id of the level's table (for [`computed_queries`]).
pub(crate) fn find_sql(dialect: Dialect, query: &Query) -> Sql {
    let level = query.level;
    let mut sql = Sql::new(dialect);
    sql.push("SELECT ");
    let mut columns: Vec<String> = returned_attrs(level).iter().map(|a| qualified(a)).collect();
    columns.push(format!("{}.id", alias(level)));
    sql.push(&columns.join(", "));
    sql.push(" FROM ").push(&chain(level, Level::Patient));

    let keys: Vec<_> = query
        .keys
        .iter()
        .filter(|k| k.matcher != Matcher::Universal)
        .collect();
    let mut first = true;
    let mut and = |sql: &mut Sql| {
        sql.push(if first { " WHERE " } else { " AND " });
        first = false;
    };
    for key in keys.iter().filter(|k| k.attr.level <= level) {
        and(&mut sql);
        push_condition(&mut sql, key.attr, &key.matcher);
    }
    // Keys on attributes below the query level: some entity below must match them all.
    let below: Vec<_> = keys.iter().filter(|k| k.attr.level > level).collect();
    if let (Some(deepest), Some(next)) = (below.iter().map(|k| k.attr.level).max(), child(level)) {
        and(&mut sql);
        sql.push("EXISTS (SELECT 1 FROM ")
            .push(&chain(deepest, next));
        sql.push(&format!(
            " WHERE {}.{} = {}.id",
            alias(next),
            parent_fk(next),
            alias(level)
        ));
        for key in below {
            sql.push(" AND ");
            push_condition(&mut sql, key.attr, &key.matcher);
        }
        sql.push(")");
    }
    sql.push(&format!(
        " ORDER BY {}.{}",
        alias(level),
        unique_column(level)
    ));
    sql.limit_offset(query.limit, query.offset);
    sql
}

/// `SELECT <columns> FROM ... WHERE ...` over the instances a selection names; `None` for an
/// empty selection.
pub(super) fn selection_sql(dialect: Dialect, columns: &str, selection: &Selection) -> Option<Sql> {
    if selection.is_empty() {
        return None;
    }
    let mut sql = Sql::new(dialect);
    sql.push(columns).push(" FROM ");
    sql.push(&chain(Level::Image, Level::Patient));
    let mut first = true;
    for (col, values) in [
        ("p.patient_id", &selection.patient_ids),
        ("st.study_instance_uid", &selection.study_uids),
        ("se.series_instance_uid", &selection.series_uids),
        ("i.sop_instance_uid", &selection.sop_instance_uids),
    ] {
        if values.is_empty() {
            continue;
        }
        sql.push(if first { " WHERE " } else { " AND " });
        first = false;
        sql.push(col).push(" IN ").bind_list(values);
    }
    Some(sql)
}

/// The query of [`Index::locate`](super::Index::locate); `None` for an empty selection.
/// With `page` = (offset, limit): one page of the same order.
pub(crate) fn locate_sql(
    dialect: Dialect,
    selection: &Selection,
    page: Option<(u32, u32)>,
) -> Option<Sql> {
    let mut sql = selection_sql(
        dialect,
        "SELECT p.patient_id, st.study_instance_uid, se.series_instance_uid, i.sop_instance_uid, \
         i.sop_class_uid, i.transfer_syntax_uid, i.blob_key, i.size_bytes",
        selection,
    )?;
    sql.push(
        " ORDER BY st.study_instance_uid, se.series_instance_uid, i.instance_number_int, \
         i.instance_number, i.sop_instance_uid",
    );
    if let Some((offset, limit)) = page {
        sql.limit_offset(Some(limit), offset);
    }
    Some(sql)
}

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
    sql.push(&format!(
        ") ON CONFLICT ({key}) DO UPDATE SET {} RETURNING id",
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
        "INSERT INTO instance ({}) VALUES (",
        cols.join(", ")
    ));
    for a in &attrs {
        sql.bind(record.get(a.tag).unwrap_or("")).push(", ");
    }
    let number = record
        .column("instance_number")
        .trim()
        .parse::<i64>()
        .unwrap_or(i64::MAX);
    sql.bind_int(number).push(", ");
    sql.bind_int(series_id).push(", ");
    sql.bind(&record.transfer_syntax_uid).push(", ");
    sql.bind(&record.blob_key).push(", ");
    sql.bind_int(i64::try_from(record.size_bytes).unwrap_or(i64::MAX))
        .push(", ");
    sql.bind(stored_at);
    let set: Vec<String> = cols
        .iter()
        .filter(|c| **c != "sop_instance_uid")
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    sql.push(&format!(
        ") ON CONFLICT (sop_instance_uid) DO UPDATE SET {} RETURNING id",
        set.join(", ")
    ));
    sql
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Pool hook (`after_release`, both backends): a connection that comes back to the pool still
/// inside a transaction is closed instead of being handed to the next caller.
///
/// Every write goes through sqlx's `Transaction` (rolled back on drop); nothing runs a bare
/// `BEGIN` on a pooled connection. But when SQLite fails a statement or the COMMIT with
/// SQLITE_FULL or SQLITE_IOERR it may roll the whole transaction back by itself
/// (sqlite.org/lang_transaction.html, "Response To Errors Within A Transaction"); the later
/// `ROLLBACK` then fails ("no transaction is active") and sqlx's transaction depth stays at 1.
/// Such a connection answered every later write with "attempted to call begin_with at
/// non-zero transaction depth" until restart (issue 12, item 5). A new connection costs a
/// file open; a poisoned one costs every write it is given.
pub(crate) fn release_outside_transaction<C: sqlx::Connection>(
    conn: &mut C,
    _meta: sqlx::pool::PoolConnectionMetadata,
) -> futures::future::BoxFuture<'_, Result<bool, sqlx::Error>> {
    Box::pin(async move {
        if conn.is_in_transaction() {
            // A dropped Transaction queues its ROLLBACK (SQLite: on the connection's worker
            // thread; PostgreSQL: sent with the next message). A ping runs after it.
            conn.ping().await?;
        }
        if conn.is_in_transaction() {
            tracing::warn!(
                "an index connection came back inside a transaction (a failed COMMIT or \
                 ROLLBACK, e.g. on a full disk); closing it"
            );
            return Ok(false);
        }
        Ok(true)
    })
}

/// The migrations of one backend, from SQL compiled into the binary (`(version, name, sql)`).
pub(crate) fn migrator(
    migrations: &[(i64, &'static str, &'static str)],
) -> sqlx::migrate::Migrator {
    use sqlx::migrate::{Migration, MigrationType, Migrator};
    use std::borrow::Cow;
    let migrations = migrations
        .iter()
        .map(|(version, description, sql)| {
            Migration::new(
                *version,
                Cow::Borrowed(*description),
                MigrationType::Simple,
                Cow::Borrowed(*sql),
                false,
            )
        })
        .collect::<Vec<_>>();
    Migrator {
        migrations: Cow::Owned(migrations),
        ..Migrator::DEFAULT
    }
}

/// The [`Index`](super::Index) logic over one sqlx database; the backends wrap it.
#[derive(Debug)]
pub(crate) struct SqlIndex<DB: Database> {
    pub pool: Pool<DB>,
    pub dialect: Dialect,
}

impl<DB: Database> Clone for SqlIndex<DB> {
    fn clone(&self) -> Self {
        SqlIndex {
            pool: self.pool.clone(),
            dialect: self.dialect,
        }
    }
}

/// Where an existing instance, series or study hangs (row ids), to prune emptied parents.
#[derive(Debug, Default)]
pub(super) struct Parents {
    pub series: Vec<i64>,
    pub studies: Vec<i64>,
    pub patients: Vec<i64>,
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
    pub fn new(pool: Pool<DB>, dialect: Dialect) -> Self {
        SqlIndex { pool, dialect }
    }

    pub(super) fn query(sql: &Sql) -> sqlx::query::Query<'_, DB, DB::Arguments<'_>> {
        let mut q = sqlx::query::<DB>(&sql.text);
        for b in &sql.binds {
            q = match b {
                Bind::Text(s) => q.bind(s.clone()),
                Bind::Int(n) => q.bind(*n),
            };
        }
        q
    }

    /// A write transaction. SQLite takes the write lock up front (`BEGIN IMMEDIATE`) so that
    /// a transaction which reads first never fails to upgrade under concurrent writers.
    pub(super) async fn begin_write(&self) -> Result<Transaction<'static, DB>, IndexError> {
        Ok(match self.dialect {
            Dialect::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Dialect::Postgres => self.pool.begin().await?,
        })
    }

    pub(super) fn sql(&self) -> Sql {
        Sql::new(self.dialect)
    }

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
        let outcome = self.upsert_in(&mut tx, record).await?;
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
        for record in records {
            outcomes.push(self.upsert_in(&mut tx, record).await?);
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    async fn upsert_in(
        &self,
        tx: &mut Transaction<'static, DB>,
        record: &InstanceRecord,
    ) -> Result<UpsertOutcome, IndexError> {
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

        // Where the instance, its series and its study hang now (they may move).
        let mut sql = self.sql();
        sql.push(
            "SELECT i.series_pk, se.study_pk, st.patient_pk FROM instance i \
             JOIN series se ON se.id = i.series_pk JOIN study st ON st.id = se.study_pk \
             WHERE i.sop_instance_uid = ",
        )
        .bind(sop_uid);
        let old_instance = Self::fetch_ids(tx, &sql).await?;
        let mut sql = self.sql();
        sql.push(
            "SELECT se.study_pk, st.patient_pk FROM series se JOIN study st ON st.id = se.study_pk \
             WHERE se.series_instance_uid = ",
        )
        .bind(series_uid);
        let old_series = Self::fetch_ids(tx, &sql).await?;
        let mut sql = self.sql();
        sql.push("SELECT patient_pk FROM study WHERE study_instance_uid = ")
            .bind(study_uid);
        let old_study = Self::fetch_ids(tx, &sql).await?;

        let sql = upsert_entity_sql(self.dialect, Level::Patient, record, None);
        let patient_id = Self::insert_returning_id(tx, &sql).await?;
        let sql = upsert_entity_sql(self.dialect, Level::Study, record, Some(patient_id));
        let study_id = Self::insert_returning_id(tx, &sql).await?;
        let sql = upsert_entity_sql(self.dialect, Level::Series, record, Some(study_id));
        let series_id = Self::insert_returning_id(tx, &sql).await?;
        let sql = upsert_instance_sql(self.dialect, record, series_id, &now_rfc3339());
        Self::insert_returning_id(tx, &sql).await?;

        let mut parents = Parents::default();
        if let Some(ids) = &old_instance {
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
        Ok(if old_instance.is_some() {
            UpsertOutcome::Replaced
        } else {
            UpsertOutcome::Inserted
        })
    }

    pub async fn find(&self, query: &Query) -> Result<Vec<Match>, IndexError> {
        let sql = find_sql(self.dialect, query);
        let rows = Self::query(&sql).fetch_all(&self.pool).await?;
        let attrs = returned_attrs(query.level);
        let mut matches = Vec::with_capacity(rows.len());
        let mut ids = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut m = Match::new();
            for (i, attr) in attrs.iter().enumerate() {
                m.insert(attr.tag, row.try_get::<String, usize>(i)?);
            }
            ids.push(row.try_get::<i64, usize>(attrs.len())?);
            matches.push(m);
        }
        drop(rows);
        self.add_computed(query.level, &ids, &mut matches).await?;
        Ok(matches)
    }

    /// Fill in the computed attributes of `matches` (whose row ids are `ids`): a few
    /// aggregate queries per 500 matches.
    async fn add_computed(
        &self,
        level: Level,
        ids: &[i64],
        matches: &mut [Match],
    ) -> Result<(), IndexError> {
        let queries = computed_queries(level);
        for m in matches.iter_mut() {
            for (aggregate, _) in queries {
                match aggregate {
                    Aggregate::Counts(tags) => m.extend(tags.iter().map(|t| (*t, "0".to_string()))),
                    Aggregate::Values(tag) => {
                        m.insert(*tag, String::new());
                    }
                }
            }
        }
        if queries.is_empty() {
            return Ok(());
        }
        let position: BTreeMap<i64, usize> =
            ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        for chunk in ids.chunks(500) {
            // Row ids are integers from the database itself: safe to inline.
            let list = chunk
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            for (aggregate, text) in queries {
                let text = text.replace("{ids}", &list);
                let rows = sqlx::query::<DB>(&text)
                    .persistent(false)
                    .fetch_all(&self.pool)
                    .await?;
                let mut sets: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
                for row in rows {
                    let Some(&at) = position.get(&row.try_get::<i64, usize>(0)?) else {
                        continue;
                    };
                    match aggregate {
                        Aggregate::Counts(tags) => {
                            for (j, tag) in tags.iter().enumerate() {
                                let count: i64 = row.try_get(j + 1)?;
                                matches[at].insert(*tag, count.to_string());
                            }
                        }
                        Aggregate::Values(_) => {
                            let value: String = row.try_get(1usize)?;
                            if !value.is_empty() {
                                sets.entry(at).or_default().insert(value);
                            }
                        }
                    }
                }
                if let Aggregate::Values(tag) = aggregate {
                    for (at, values) in sets {
                        matches[at].insert(*tag, values.into_iter().collect::<Vec<_>>().join("\\"));
                    }
                }
            }
        }
        Ok(())
    }

    pub async fn transfer_syntaxes(
        &self,
        selection: &Selection,
    ) -> Result<Vec<String>, IndexError> {
        let columns = "SELECT DISTINCT i.transfer_syntax_uid";
        let Some(sql) = selection_sql(self.dialect, columns, selection) else {
            return Ok(Vec::new());
        };
        let rows = Self::query(&sql).fetch_all(&self.pool).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            out.push(row.try_get::<String, usize>(0)?);
        }
        Ok(out)
    }

    pub async fn locate(
        &self,
        selection: &Selection,
        page: Option<(u32, u32)>,
    ) -> Result<Vec<InstanceLocation>, IndexError> {
        let Some(sql) = locate_sql(self.dialect, selection, page) else {
            return Ok(Vec::new());
        };
        let rows = Self::query(&sql).fetch_all(&self.pool).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            out.push(InstanceLocation {
                patient_id: row.try_get(0usize)?,
                study_instance_uid: row.try_get(1usize)?,
                series_instance_uid: row.try_get(2usize)?,
                sop_instance_uid: row.try_get(3usize)?,
                sop_class_uid: row.try_get(4usize)?,
                transfer_syntax_uid: row.try_get(5usize)?,
                blob_key: row.try_get(6usize)?,
                size_bytes: u64::try_from(row.try_get::<i64, usize>(7)?).unwrap_or(0),
            });
        }
        Ok(out)
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
        let mut sql = self.sql();
        sql.push("DELETE FROM instance WHERE id = ").bind_int(id);
        Self::query(&sql).execute(&mut *tx).await?;
        self.prune(&mut tx, parents).await?;
        tx.commit().await?;
        Ok(Some(blob_key))
    }

    pub async fn probe_write(&self) -> Result<(), IndexError> {
        // A value that differs every time: SQLite skips writing a row whose bytes are
        // unchanged, and such a probe would pass on a full disk.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let mut tx = self.begin_write().await?;
        let mut sql = self.sql();
        sql.push("INSERT INTO readiness_probe (id, probed_at) VALUES (1, ")
            .bind(&format!("{} {nanos}", now_rfc3339()))
            .push(") ON CONFLICT (id) DO UPDATE SET probed_at = excluded.probed_at");
        Self::query(&sql).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn record_audit(&self, event: &AuditEvent) -> Result<(), IndexError> {
        self.append_audit(&super::audit::AuditRecord::from(event), None)
            .await
            .map(|_| ())
    }
}

/// The [`Index`](super::Index) implementation of a backend that wraps a [`SqlIndex`] in a
/// field `inner`: every method is the `SqlIndex` method of the same name (both backends).
macro_rules! delegate_index_to_inner {
    ($backend:ty) => {
        const _: () = {
            use $crate::model::{InstanceLocation, Match, Query, Selection};
            use $crate::store::index::{
                AuditEvent, AuditRecord, CachedStudy, ForwardJob, Index, IndexError, OutboxMessage,
                UpsertOutcome,
            };
            use $crate::store::InstanceRecord;

            #[async_trait::async_trait]
            impl Index for $backend {
                async fn upsert_instance(
                    &self,
                    record: &InstanceRecord,
                ) -> Result<UpsertOutcome, IndexError> {
                    self.inner.upsert_instance(record).await
                }

                async fn upsert_instances(
                    &self,
                    records: &[InstanceRecord],
                ) -> Result<Vec<UpsertOutcome>, IndexError> {
                    self.inner.upsert_instances(records).await
                }

                async fn find(&self, query: &Query) -> Result<Vec<Match>, IndexError> {
                    self.inner.find(query).await
                }

                async fn locate(
                    &self,
                    selection: &Selection,
                ) -> Result<Vec<InstanceLocation>, IndexError> {
                    self.inner.locate(selection, None).await
                }

                async fn locate_page(
                    &self,
                    selection: &Selection,
                    offset: u32,
                    limit: u32,
                ) -> Result<Vec<InstanceLocation>, IndexError> {
                    self.inner.locate(selection, Some((offset, limit))).await
                }

                async fn transfer_syntaxes(
                    &self,
                    selection: &Selection,
                ) -> Result<Vec<String>, IndexError> {
                    self.inner.transfer_syntaxes(selection).await
                }

                async fn remove_instance(
                    &self,
                    sop_instance_uid: &str,
                ) -> Result<Option<String>, IndexError> {
                    self.inner.remove_instance(sop_instance_uid).await
                }

                async fn count_instances(&self, selection: &Selection) -> Result<u64, IndexError> {
                    self.inner.count_instances(selection).await
                }

                async fn cached_study(
                    &self,
                    study_uid: &str,
                ) -> Result<Option<CachedStudy>, IndexError> {
                    self.inner.cached_study(study_uid).await
                }

                async fn put_cached_study(&self, study: &CachedStudy) -> Result<(), IndexError> {
                    self.inner.put_cached_study(study).await
                }

                async fn cache_lru(&self) -> Result<Vec<(String, u64)>, IndexError> {
                    self.inner.cache_lru().await
                }

                async fn remove_study(&self, study_uid: &str) -> Result<Vec<String>, IndexError> {
                    self.inner.remove_study(study_uid).await
                }

                async fn enqueue_forward(
                    &self,
                    items: &[(String, String)],
                    sender: &str,
                    now: i64,
                ) -> Result<(), IndexError> {
                    self.inner.enqueue_forward(items, sender, now).await
                }

                async fn forward_jobs(
                    &self,
                    due_at: Option<i64>,
                    limit: u32,
                ) -> Result<Vec<ForwardJob>, IndexError> {
                    self.inner.forward_jobs(due_at, limit).await
                }

                async fn update_forward(
                    &self,
                    id: i64,
                    state: &str,
                    next_attempt_at: i64,
                    error: &str,
                ) -> Result<(), IndexError> {
                    self.inner
                        .update_forward(id, state, next_attempt_at, error)
                        .await
                }

                async fn record_audit(&self, event: &AuditEvent) -> Result<(), IndexError> {
                    self.inner.record_audit(event).await
                }

                async fn audit_events(&self, limit: u32) -> Result<Vec<AuditEvent>, IndexError> {
                    self.inner.audit_events(limit).await
                }

                async fn append_audit(
                    &self,
                    record: &AuditRecord,
                    syslog: Option<&str>,
                ) -> Result<AuditRecord, IndexError> {
                    self.inner.append_audit(record, syslog).await
                }

                async fn audit_records(
                    &self,
                    after_seq: i64,
                    limit: u32,
                ) -> Result<Vec<AuditRecord>, IndexError> {
                    self.inner.audit_records(after_seq, limit).await
                }

                async fn audit_records_for_patient(
                    &self,
                    patient_id: &str,
                    limit: u32,
                ) -> Result<Vec<AuditRecord>, IndexError> {
                    self.inner
                        .audit_records_for_patient(patient_id, limit)
                        .await
                }

                async fn audit_head(&self) -> Result<(i64, String), IndexError> {
                    self.inner.audit_head().await
                }

                async fn audit_patient_rows(&self) -> Result<i64, IndexError> {
                    self.inner.audit_patient_rows().await
                }

                async fn claim_audit_outbox(
                    &self,
                    owner: &str,
                    now: i64,
                    until: i64,
                    limit: u32,
                ) -> Result<Vec<OutboxMessage>, IndexError> {
                    self.inner
                        .claim_audit_outbox(owner, now, until, limit)
                        .await
                }

                async fn delete_audit_outbox(&self, ids: &[i64]) -> Result<(), IndexError> {
                    self.inner.delete_audit_outbox(ids).await
                }

                async fn retry_audit_outbox(
                    &self,
                    ids: &[i64],
                    retry_at: i64,
                    error: &str,
                ) -> Result<(), IndexError> {
                    self.inner.retry_audit_outbox(ids, retry_at, error).await
                }

                async fn audit_outbox_len(&self) -> Result<u64, IndexError> {
                    self.inner.audit_outbox_len().await
                }

                async fn delete_instances(
                    &self,
                    selection: &Selection,
                    now: i64,
                ) -> Result<Vec<InstanceLocation>, IndexError> {
                    self.inner.delete_instances(selection, now).await
                }

                async fn queued_blob_deletions(
                    &self,
                    limit: u32,
                ) -> Result<Vec<String>, IndexError> {
                    self.inner.queued_blob_deletions(limit).await
                }

                async fn blob_keys_in_use(
                    &self,
                    keys: &[String],
                ) -> Result<Vec<String>, IndexError> {
                    self.inner.blob_keys_in_use(keys).await
                }

                async fn clear_blob_deletions(&self, keys: &[String]) -> Result<(), IndexError> {
                    self.inner.clear_blob_deletions(keys).await
                }

                async fn note_received(
                    &self,
                    study_uids: &[String],
                    sender: &str,
                    now: i64,
                ) -> Result<(), IndexError> {
                    self.inner.note_received(study_uids, sender, now).await
                }

                async fn received_before(
                    &self,
                    cutoff: i64,
                    limit: u32,
                ) -> Result<Vec<String>, IndexError> {
                    self.inner.received_before(cutoff, limit).await
                }

                async fn forget_received(&self, study_uid: &str) -> Result<(), IndexError> {
                    self.inner.forget_received(study_uid).await
                }

                async fn probe_write(&self) -> Result<(), IndexError> {
                    self.inner.probe_write().await
                }
            }
        };
    };
}
pub(super) use delegate_index_to_inner;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::query::indexed_attr_by_keyword;

    #[test]
    fn normalizes_names() {
        assert_eq!(normalize_name("Müller^Zoë"), "muller^zoe");
        assert_eq!(normalize_name("Øster^Straße"), "oster^strasse");
        assert_eq!(normalize_name("ÉLODIE Łukasz"), "elodie lukasz");
        assert_eq!(normalize_name("Zoe\u{0308}"), "zoe");
    }

    #[test]
    fn like_patterns_escape_literals() {
        assert_eq!(like_pattern("Mül*"), "Mül%");
        assert_eq!(like_pattern("a?b"), "a_b");
        assert_eq!(like_pattern("100%_\\*"), "100\\%\\_\\\\%");
    }

    #[test]
    fn placeholders_follow_dialect() {
        let attr = indexed_attr_by_keyword("PatientID").unwrap();
        let q = Query::new(Level::Study).with_key(attr, Matcher::Single("P1".into()));
        let s = find_sql(Dialect::Postgres, &q);
        assert!(s.text.contains("p.patient_id = $1"), "{}", s.text);
        let s = find_sql(Dialect::Sqlite, &q);
        assert!(s.text.contains("p.patient_id = ?"), "{}", s.text);
        let q = Query {
            offset: 5,
            ..Query::new(Level::Patient)
        };
        assert!(find_sql(Dialect::Sqlite, &q)
            .text
            .ends_with("LIMIT -1 OFFSET 5"));
        assert!(find_sql(Dialect::Postgres, &q).text.ends_with(" OFFSET 5"));
    }

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
