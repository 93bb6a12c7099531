//! Series and instance queries (QIDO-RS `/studies/{uid}/series`, `…/instances`; C-FIND at
//! SERIES or IMAGE level) of one study that a source knows only as a study. Another
//! gateway's ITI-38 finds documents, one per study (RAD TF-3 4.68.4.1.2.3), and its manifest
//! names series and instances by UID only, without what a viewer lists (Modality, Series
//! Description, Instance Number). So the study is fetched into the cache first, as a
//! retrieve of it would be (joining a running fetch; the source audits its own outgoing
//! calls), and the cache answers: a viewer that lists a study's series is about to open
//! them (issue 15 §6: OHIF opens a study that only the other hospital holds). Which gateway
//! holds it is what the source knows from an earlier query; only when nothing answered is
//! it asked by the query's patient ([`Ask`]), so that a study the hospital's own PACS holds
//! sends no query to other hospitals.

use super::cache::{fresh, now};
use super::route::Answer;
use super::source::{Source, SourceError, SourceErrorKind};
use super::Core;
use crate::model::query::{Level, Matcher, Query};
use crate::model::Selection;
use crate::trust::Caller;
use dicom_core::Tag;
use std::sync::Arc;

const STUDY_UID: Tag = Tag(0x0020, 0x000D);

/// Whom [`Core::fill_for_query`] may ask which source holds the study.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ask {
    /// Only what the sources know already (no call goes out): the study's UID alone.
    Known,
    /// The sources, with the query's patient and study keys: another gateway is asked by
    /// the patient's BSN (ITI-38). Only when the cache and the other sources found nothing,
    /// so that a study the hospital's own PACS holds sends no query to other hospitals.
    ByPatient,
}

impl Core {
    /// Bring the one study `query` names into the cache when the query is below the study
    /// level and one of `sources` may hold the study but cannot answer that level.
    /// `Some(error)`: it could not be brought (the cache answers with what it holds, and the
    /// answer is marked incomplete).
    pub(super) async fn fill_for_query(
        self: &Arc<Self>,
        query: &Query,
        sources: &[Arc<dyn Source>],
        caller: &Caller,
        ask: Ask,
    ) -> Option<SourceError> {
        if query.level < Level::Series {
            return None;
        }
        let study = one_study(query)?;
        let by_study = by_study(query, sources);
        if by_study.is_empty() {
            return None;
        }
        // Held whole and fresh: the cache answers as it is, nobody is asked.
        let state = self.index.cached_study(&study).await.ok().flatten();
        if state
            .as_ref()
            .is_some_and(|s| fresh(s, self.cache.refresh_secs, now()))
        {
            return None;
        }
        // Which gateway holds it: known from an earlier query, or (`Ask::ByPatient`) asked
        // now.
        let study_query = match ask {
            Ask::Known => study_level(query, Level::Study),
            Ask::ByPatient => study_level(query, Level::Patient),
        };
        let mut first_error = None;
        let mut known = false;
        for source in &by_study {
            let (found, errors) = source.find_each(caller, &study_query, 1).await;
            known |= !found.is_empty();
            if first_error.is_none() {
                first_error = errors.into_iter().next();
            }
        }
        if !known {
            return first_error;
        }
        // Fetched only for a patient the caller may see (the answer is filtered anyway; no
        // data is brought in for one it may not).
        if self.trust.patient_scoped(caller) {
            let selection = Selection {
                study_uids: vec![study.clone()],
                ..Default::default()
            };
            let patients = self.patients_of(&selection, &by_study, caller).await.ok()?;
            let decisions = self
                .trust
                .patients_access(caller, patients.iter().map(String::as_str))
                .await;
            if decisions.values().any(|d| !d.decision.is_permit()) {
                return None;
            }
        }
        let selection = Selection {
            study_uids: vec![study],
            ..Default::default()
        };
        match self.resolve(&selection, &by_study, caller).await {
            Ok(Answer::Cache) => None,
            Ok(Answer::Fetch(follower)) => {
                let name = follower.fetch().source_name;
                follower
                    .wait_complete()
                    .await
                    .err()
                    .map(|why| SourceError::new(name, SourceErrorKind::Failed, why))
            }
            Err(e) => Some(e),
        }
    }

    /// Whether [`Core::fill_for_query`] with [`Ask::ByPatient`] may bring the study of
    /// `query` from one of `sources`.
    pub(super) fn may_fill(query: &Query, sources: &[Arc<dyn Source>]) -> bool {
        query.level >= Level::Series
            && one_study(query).is_some()
            && !by_study(query, sources).is_empty()
    }
}

/// The sources that may hold the study but cannot answer `query`'s level: they find
/// studies only (another gateway's ITI-38).
fn by_study(query: &Query, sources: &[Arc<dyn Source>]) -> Vec<Arc<dyn Source>> {
    sources
        .iter()
        .filter(|s| {
            let c = s.capabilities();
            c.retrieve
                && c.query_levels.contains(&Level::Study)
                && !c.query_levels.contains(&query.level)
        })
        .cloned()
        .collect()
}

/// The one Study Instance UID a query names (a single value, or a list of one).
fn one_study(query: &Query) -> Option<String> {
    let mut named = query
        .keys
        .iter()
        .filter(|k| k.attr.tag == STUDY_UID)
        .filter_map(|k| match &k.matcher {
            Matcher::Single(v) => Some(vec![v.trim().to_string()]),
            Matcher::UidList(list) => Some(list.clone()),
            _ => None,
        });
    match (named.next(), named.next()) {
        (Some(list), None) if list.len() == 1 && !list[0].is_empty() => list.into_iter().next(),
        _ => None,
    }
}

/// The study-level part of a query, at STUDY level: its keys of the levels from `from` to
/// the study (`Level::Patient`: the patient's keys too; `Level::Study`: the study's only).
fn study_level(query: &Query, from: Level) -> Query {
    let mut study = Query::new(Level::Study);
    study.keys = query
        .keys
        .iter()
        .filter(|k| from <= k.attr.level && k.attr.level <= Level::Study)
        .cloned()
        .collect();
    study
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::query::indexed_attr_by_keyword;

    fn key(keyword: &str, matcher: Matcher) -> crate::model::query::QueryKey {
        crate::model::query::QueryKey {
            attr: indexed_attr_by_keyword(keyword).expect("indexed"),
            matcher,
        }
    }

    #[test]
    fn only_a_query_naming_one_study_names_it() {
        let mut q = Query::new(Level::Series);
        assert_eq!(one_study(&q), None);
        q.keys
            .push(key("StudyInstanceUID", Matcher::Single("1.2.3".into())));
        assert_eq!(one_study(&q).as_deref(), Some("1.2.3"));
        let mut two = Query::new(Level::Series);
        two.keys.push(key(
            "StudyInstanceUID",
            Matcher::UidList(vec!["1.2.3".into(), "1.2.4".into()]),
        ));
        assert_eq!(one_study(&two), None, "two studies: not one to fetch");
        let mut wild = Query::new(Level::Series);
        wild.keys
            .push(key("StudyInstanceUID", Matcher::Wildcard("1.2.*".into())));
        assert_eq!(one_study(&wild), None);
    }

    #[test]
    fn the_study_query_keeps_the_patient_and_study_keys_or_the_study_only() {
        let mut q = Query::new(Level::Image);
        q.keys
            .push(key("PatientID", Matcher::Single("999999990".into())));
        q.keys
            .push(key("StudyInstanceUID", Matcher::Single("1.2.3".into())));
        q.keys.push(key("Modality", Matcher::Single("CT".into())));
        q.keys
            .push(key("SOPInstanceUID", Matcher::Single("1.2.3.4".into())));
        let study = study_level(&q, Level::Patient);
        assert_eq!(study.level, Level::Study);
        let keywords: Vec<&str> = study.keys.iter().map(|k| k.attr.keyword).collect();
        assert_eq!(keywords, ["PatientID", "StudyInstanceUID"]);
        // What a source knows already is asked by the study alone: no patient, no call out.
        let known = study_level(&q, Level::Study);
        let keywords: Vec<&str> = known.keys.iter().map(|k| k.attr.keyword).collect();
        assert_eq!(keywords, ["StudyInstanceUID"]);
    }
}
