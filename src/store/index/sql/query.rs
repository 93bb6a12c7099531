//! Matching and locating: the main query of C-FIND and QIDO-RS with its keys (PS3.4
//! C.2.2.2) and computed attributes (PS3.4 C.6.1.1.x), the instances a selection names,
//! their transfer syntaxes and their count.

use super::schema::{
    alias, chain, child, norm_column, normalize_name, parent_fk, qualified, unique_column,
};
use super::sql_impl;
use super::statement::{Dialect, Sql};
use super::SqlIndex;
use crate::model::query::{
    computed, AttrKind, IndexedAttr, Level, Match, Matcher, Query, INDEXED_ATTRS,
};
use crate::model::{InstanceLocation, Selection};
use crate::store::index::IndexError;
use dicom_core::Tag;
use sqlx::Row;
use std::collections::BTreeMap;

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
        Matcher::Fuzzy(value) if attr.column == "patient_name" => {
            // The suffixes of the normalised name that start a component or word (migration
            // 0010): one prefix LIKE on an index instead of a scan of every patient.
            let p = like_pattern(&normalize_name(value.trim()));
            sql.push(&format!(
                "{}.id IN (SELECT w.patient_pk FROM patient_name_word w WHERE w.word LIKE ",
                alias(attr.level)
            ))
            .bind(&format!("{p}%"))
            .push(" ESCAPE '\\')");
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

/// The computed attributes of `level` (PS3.4 C.6.1.1.x), as aggregate queries over the ids
/// of one page of matches (`{ids}` stands for the comma-separated row ids), each yielding
/// rows `(id, count, count, ...)`: one count per tag. Computing them per page, not per row
/// in the main query, keeps paging cheap whatever the plan.
fn computed_queries(level: Level) -> &'static [(&'static [Tag], &'static str)] {
    const PATIENT: &[Tag] = &[
        computed::NUMBER_OF_PATIENT_RELATED_STUDIES,
        computed::NUMBER_OF_PATIENT_RELATED_SERIES,
        computed::NUMBER_OF_PATIENT_RELATED_INSTANCES,
    ];
    const SERIES: &[Tag] = &[computed::NUMBER_OF_SERIES_RELATED_INSTANCES];
    match level {
        // From the studies' own values (migration 0013), not their instance rows.
        Level::Patient => &[(
            PATIENT,
            "SELECT patient_pk, COUNT(*), CAST(SUM(num_series) AS BIGINT), \
             CAST(SUM(num_instances) AS BIGINT) \
             FROM study WHERE patient_pk IN ({ids}) GROUP BY patient_pk",
        )],
        // Kept on the study row: selected with it (`stored_computed`).
        Level::Study => &[],
        Level::Series => &[(
            SERIES,
            "SELECT series_pk, COUNT(*) FROM instance WHERE series_pk IN ({ids}) GROUP BY series_pk",
        )],
        Level::Image => &[],
    }
}

/// The computed attributes of `level` kept on its row (migration 0013), with their columns:
/// integers for the counts, text for the value lists.
fn stored_computed(level: Level) -> &'static [(Tag, &'static str, bool)] {
    match level {
        Level::Study => &[
            (
                computed::NUMBER_OF_STUDY_RELATED_SERIES,
                "st.num_series",
                true,
            ),
            (
                computed::NUMBER_OF_STUDY_RELATED_INSTANCES,
                "st.num_instances",
                true,
            ),
            (computed::MODALITIES_IN_STUDY, "st.modalities", false),
            (computed::SOP_CLASSES_IN_STUDY, "st.sop_classes", false),
        ],
        _ => &[],
    }
}

/// The main query of [`Index::find`](crate::store::index::Index::find). Columns: [`returned_attrs`],
/// the row id of the level's table (for [`computed_queries`]), then [`stored_computed`].
///
/// A page (a query with a limit) is chosen first by the row ids alone, sorted by the
/// unique key, and only its rows are read: the matches are sorted from index entries
/// (migration 0013 puts StudyInstanceUID in the study indexes by patient and by date)
/// rather than from every matching row, which a broad search (a common surname) has by the
/// thousand. Which rows a page holds and their order are those of the one-step query.
pub(crate) fn find_sql(dialect: Dialect, query: &Query) -> Sql {
    let level = query.level;
    let mut sql = Sql::new(dialect);
    sql.push("SELECT ");
    let mut columns: Vec<String> = returned_attrs(level).iter().map(|a| qualified(a)).collect();
    columns.push(format!("{}.id", alias(level)));
    columns.extend(stored_computed(level).iter().map(|(_, c, _)| c.to_string()));
    sql.push(&columns.join(", "));
    sql.push(" FROM ").push(&chain(level, Level::Patient));
    let order = format!(" ORDER BY {}.{}", alias(level), unique_column(level));
    if query.limit.is_some() {
        // The ids need only the tables the keys name (a study has its patient: the foreign
        // key), e.g. a date range reads no patient row for each match.
        let top = query
            .keys
            .iter()
            .filter(|k| k.matcher != Matcher::Universal && k.attr.level <= level)
            .map(|k| k.attr.level)
            .min()
            .unwrap_or(level);
        sql.push(&format!(
            " WHERE {}.id IN (SELECT {0}.id FROM ",
            alias(level)
        ))
        .push(&chain(level, top));
        push_where(&mut sql, query);
        sql.push(&order);
        sql.limit_offset(query.limit, query.offset);
        sql.push(")").push(&order);
        return sql;
    }
    push_where(&mut sql, query);
    sql.push(&order);
    sql.limit_offset(query.limit, query.offset);
    sql
}

/// The `WHERE` of [`find_sql`]: the keys of the query level and above, and an `EXISTS` for
/// those below.
fn push_where(sql: &mut Sql, query: &Query) {
    let level = query.level;
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
        and(sql);
        push_condition(sql, key.attr, &key.matcher);
    }
    // Keys on attributes below the query level: some entity below must match them all.
    let below: Vec<_> = keys.iter().filter(|k| k.attr.level > level).collect();
    if let (Some(deepest), Some(next)) = (below.iter().map(|k| k.attr.level).max(), child(level)) {
        and(sql);
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
            push_condition(sql, key.attr, &key.matcher);
        }
        sql.push(")");
    }
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

/// The query of [`Index::locate`](crate::store::index::Index::locate); `None` for an empty selection.
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

sql_impl! {
    pub async fn find(&self, query: &Query) -> Result<Vec<Match>, IndexError> {
        let sql = find_sql(self.dialect, query);
        let rows = Self::query(&sql).fetch_all(&self.pool).await?;
        let attrs = returned_attrs(query.level);
        let mut matches = Vec::with_capacity(rows.len());
        let mut ids = Vec::with_capacity(rows.len());
        let stored = stored_computed(query.level);
        for row in &rows {
            let mut m = Match::new();
            for (i, attr) in attrs.iter().enumerate() {
                m.insert(attr.tag, row.try_get::<String, usize>(i)?);
            }
            ids.push(row.try_get::<i64, usize>(attrs.len())?);
            for (j, (tag, _, count)) in stored.iter().enumerate() {
                let at = attrs.len() + 1 + j;
                let value = match count {
                    true => row.try_get::<i64, usize>(at)?.to_string(),
                    false => row.try_get::<String, usize>(at)?,
                };
                m.insert(*tag, value);
            }
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
            for (tags, _) in queries {
                m.extend(tags.iter().map(|t| (*t, "0".to_string())));
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
            for (tags, text) in queries {
                let text = text.replace("{ids}", &list);
                let rows = sqlx::query::<DB>(&text)
                    .persistent(false)
                    .fetch_all(&self.pool)
                    .await?;
                for row in rows {
                    let Some(&at) = position.get(&row.try_get::<i64, usize>(0)?) else {
                        continue;
                    };
                    for (j, tag) in tags.iter().enumerate() {
                        let count: i64 = row.try_get(j + 1)?;
                        matches[at].insert(*tag, count.to_string());
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
        rows.iter().map(Self::location).collect()
    }

    /// An instance's location from the first eight columns of a row, in the order
    /// `locate_sql` selects them (the delete selects them first too).
    pub(super) fn location(row: &DB::Row) -> Result<InstanceLocation, IndexError> {
        Ok(InstanceLocation {
            patient_id: row.try_get(0usize)?,
            study_instance_uid: row.try_get(1usize)?,
            series_instance_uid: row.try_get(2usize)?,
            sop_instance_uid: row.try_get(3usize)?,
            sop_class_uid: row.try_get(4usize)?,
            transfer_syntax_uid: row.try_get(5usize)?,
            blob_key: row.try_get(6usize)?,
            size_bytes: u64::try_from(row.try_get::<i64, usize>(7)?).unwrap_or(0),
        })
    }

    pub async fn count_instances(&self, selection: &Selection) -> Result<u64, IndexError> {
        let Some(sql) = selection_sql(self.dialect, "SELECT COUNT(*)", selection) else {
            return Ok(0);
        };
        let row = Self::query(&sql).fetch_one(&self.pool).await?;
        Ok(u64::try_from(row.try_get::<i64, usize>(0)?).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::query::indexed_attr_by_keyword;

    #[test]
    fn like_patterns_escape_literals() {
        assert_eq!(like_pattern("Mül*"), "Mül%");
        assert_eq!(like_pattern("a?b"), "a_b");
        assert_eq!(like_pattern("100%_\\*"), "100\\%\\_\\\\%");
    }

    #[test]
    fn a_page_is_chosen_by_ids_from_the_tables_its_keys_name() {
        let date = indexed_attr_by_keyword("StudyDate").unwrap();
        let q = Query {
            limit: Some(101),
            ..Query::new(Level::Study).with_key(
                date,
                Matcher::Range {
                    from: Some("20240101".into()),
                    to: None,
                },
            )
        };
        let s = find_sql(Dialect::Sqlite, &q);
        assert!(
            s.text
                .contains("WHERE st.id IN (SELECT st.id FROM study st WHERE (st.study_date <> ''"),
            "{}",
            s.text
        );
        assert!(
            s.text
                .ends_with("LIMIT 101) ORDER BY st.study_instance_uid"),
            "{}",
            s.text
        );
        let name = indexed_attr_by_keyword("PatientName").unwrap();
        let q = Query {
            limit: Some(101),
            ..Query::new(Level::Study).with_key(name, Matcher::Wildcard("Jans*".into()))
        };
        let s = find_sql(Dialect::Postgres, &q);
        assert!(
            s.text.contains(
                "(SELECT st.id FROM study st JOIN patient p ON p.id = st.patient_pk WHERE p.patient_name LIKE $1"
            ),
            "{}",
            s.text
        );
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
}
