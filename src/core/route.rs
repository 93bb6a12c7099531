//! Where a request is answered from: the cache, or a fetch from one of the sources its front
//! may reach, streamed as it arrives (DESIGN flow 1); and queries merged from the sources
//! and the cache.

use super::cache::{fresh, now};
use super::follow::{End, Fetch, Follower};
use super::source::{Sink, Source, SourceError};
use super::{Core, Selection};
use crate::model::query::{
    computed, indexed_attr_by_keyword, matches_fuzzy, Level, Match, Matcher, Query,
};
use crate::store::index::CachedStudy;
use crate::trust::Caller;
use dicom_core::Tag;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How long a node's fetch of a study keeps the other nodes waiting at most (the lease
/// `fetch:<study>` in the shared index): a longer fetch is joined by a second one.
pub const FETCH_LEASE_SECS: i64 = 300;

fn fetch_lease(study: &str) -> String {
    format!("fetch:{study}")
}

/// This node's fetches that hold each study's fetch lease, by lease name (see
/// [`Core::lease_fetch`]). The lease in the index is one row per study, owned by a node, so
/// two fetches of one study on this node (two RAD-75 requests naming different instances
/// of it, the second sent while the first is read) share it, and the first to end must
/// not give it back under the second. The lock is held across the index call, so that
/// taking it (and counting) and giving it back (at zero) do not interleave.
pub type LeaseHolders = tokio::sync::Mutex<HashMap<String, usize>>;

/// What [`Core::lease_fetch`] found.
enum Leased {
    /// Another node's fetch filled the cache meanwhile.
    Cached,
    /// This node holds the lease: it fetches.
    Held,
    /// No lease (the index failed, or the other node's lease outlived the wait).
    Unknown,
}

/// Where a selection is answered from.
#[derive(Debug)]
pub enum Answer {
    /// The cache holds it all.
    Cache,
    /// A fetch from a source, followed from its first instance.
    Fetch(Follower),
}

impl Core {
    /// Decide where `selection` is answered from; starts or joins a fetch from the first of
    /// `sources` that holds more than the cache when the cache does not hold it all.
    pub(super) async fn resolve(
        self: &Arc<Self>,
        selection: &Selection,
        sources: &[Arc<dyn Source>],
        caller: &Caller,
    ) -> Result<Answer, SourceError> {
        let Some(study) = selection.study_uids.first().cloned() else {
            return Ok(Answer::Cache);
        };
        if sources.is_empty() {
            return Ok(Answer::Cache);
        }
        if let Some(follower) = self.fetches.running(selection) {
            return Ok(Answer::Fetch(follower));
        }
        let cached = self.index.count_instances(selection).await.unwrap_or(0);
        let state = self.index.cached_study(&study).await.ok().flatten();
        let trusted = state
            .as_ref()
            .is_some_and(|s| fresh(s, self.cache.refresh_secs, now()));
        if cached > 0 && (selection.level() == Level::Image || trusted) {
            self.touch(&study).await;
            return Ok(Answer::Cache);
        }
        let mut first_error = None;
        for source in sources {
            let reported = match source.count_for(caller, selection).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, %study, "source cannot count the selection");
                    first_error.get_or_insert(e);
                    continue;
                }
            };
            if reported == 0 {
                continue;
            }
            // The cache holds as much as the source: answered from the cache.
            if cached >= reported {
                if selection.level() == Level::Study {
                    self.record(&study, reported, true).await;
                }
                self.touch(&study).await;
                return Ok(Answer::Cache);
            }
            // Single-flight across the nodes sharing the index: while another node fetches
            // this study, wait for it and answer from the cache it fills.
            let leased = match self.lease_fetch(&study, selection, reported).await {
                Leased::Cached => {
                    self.touch(&study).await;
                    return Ok(Answer::Cache);
                }
                Leased::Held => true,
                Leased::Unknown => false,
            };
            let (core, source, caller) = (self.clone(), source.clone(), caller.clone());
            let (follower, started) = self.fetches.join(
                selection,
                reported,
                source.name(),
                move |fetch| {
                    // The fetch belongs to the trace of the request that started it
                    // (`telemetry`); requests that join it later have traces of their own.
                    tokio::spawn(tracing::Instrument::instrument(
                        async move { core.drive(fetch, source, reported, caller, leased).await },
                        tracing::Span::current(),
                    ));
                },
            );
            // Joined a fetch of this node's instead: that one holds the lease and gives it
            // back; this request's hold goes now.
            if leased && !started {
                self.give_back_fetch_lease(&study).await;
            }
            return Ok(Answer::Fetch(follower));
        }
        match first_error {
            // Unknown to the sources that answered, or none answered but the cache holds
            // some: whatever the cache holds (e.g. received by STOW-RS).
            Some(e) if cached == 0 => Err(e),
            Some(e) => {
                tracing::warn!(error = %e, %study, "source unreachable; answering from the cache");
                Ok(Answer::Cache)
            }
            None => {
                self.touch(&study).await;
                Ok(Answer::Cache)
            }
        }
    }

    /// Take the study's fetch lease, waiting while another node holds it (its fetch fills the
    /// shared cache). [`Leased::Cached`] when the cache holds `reported` instances of
    /// `selection` after the wait.
    async fn lease_fetch(&self, study: &str, selection: &Selection, reported: u64) -> Leased {
        let name = fetch_lease(study);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(FETCH_LEASE_SECS as u64);
        let mut waited = false;
        loop {
            let now = now();
            let mut holders = self.fetch_leases.lock().await;
            match self
                .index
                .try_lease(&name, &self.node, now, now + FETCH_LEASE_SECS)
                .await
            {
                Ok(true) => {
                    if waited {
                        let cached = self.index.count_instances(selection).await.unwrap_or(0);
                        if cached >= reported {
                            if !holders.contains_key(&name) {
                                let _ = self.index.release_lease(&name, &self.node).await;
                            }
                            return Leased::Cached;
                        }
                    }
                    *holders.entry(name).or_default() += 1;
                    return Leased::Held;
                }
                Ok(false) if tokio::time::Instant::now() < deadline => {
                    drop(holders);
                    if !waited {
                        tracing::info!(%study, "another node is fetching this study; waiting for it");
                    }
                    waited = true;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Ok(false) => return Leased::Unknown,
                Err(e) => {
                    tracing::warn!(error = %e, %study, "cannot take the fetch lease; fetching without");
                    return Leased::Unknown;
                }
            }
        }
    }

    /// One fetch of `study` that held its lease ([`Leased::Held`]) ended: the lease goes back
    /// to the index when no other fetch of this node holds it.
    async fn give_back_fetch_lease(&self, study: &str) {
        let name = fetch_lease(study);
        let mut holders = self.fetch_leases.lock().await;
        let Some(n) = holders.get_mut(&name) else {
            return;
        };
        *n -= 1;
        if *n > 0 {
            return;
        }
        holders.remove(&name);
        // The other nodes waiting for this study's fetch find it in the cache now.
        let _ = self.index.release_lease(&name, &self.node).await;
    }

    async fn record(&self, study: &str, reported: u64, complete: bool) {
        let now = now();
        let state = CachedStudy {
            study_instance_uid: study.to_string(),
            pacs_instances: reported,
            complete,
            checked_at: now,
            last_access: now,
        };
        if let Err(e) = self.index.put_cached_study(&state).await {
            tracing::warn!(error = %e, study, "cannot record cache state");
        }
    }

    /// After a series or instance was fetched: the study is complete when the cache now
    /// holds as many instances as the source reports for the whole study (a viewer fetches
    /// series by series). The study's own count is kept, never a series' count.
    async fn record_part(
        &self,
        study: &str,
        source: &dyn Source,
        caller: &Caller,
        fetched_whole: bool,
    ) {
        let previous = self.index.cached_study(study).await.ok().flatten();
        let whole = Selection {
            study_uids: vec![study.to_string()],
            ..Default::default()
        };
        let counted = match fetched_whole {
            true => source.count_for(caller, &whole).await.ok(),
            false => None,
        };
        let (reported, complete) = match counted {
            Some(n) if n > 0 => {
                let cached = self.index.count_instances(&whole).await.unwrap_or(0);
                (n, cached >= n)
            }
            _ => match &previous {
                Some(p) => (p.pacs_instances, p.complete),
                None => (0, false),
            },
        };
        self.record(study, reported, complete).await;
    }

    /// Run one fetch to its end, feeding its followers; then record the cache state, end the
    /// fetch, evict what no longer fits and (when `leased`) give back its hold on the
    /// study's fetch lease.
    async fn drive(
        self: Arc<Self>,
        fetch: Arc<Fetch>,
        source: Arc<dyn Source>,
        reported: u64,
        caller: Caller,
        leased: bool,
    ) {
        let (tx, mut rx) = mpsc::channel(1);
        let result = {
            let sink = Sink {
                blobs: &self.blobs,
                index: self.index.as_ref(),
                out: &tx,
                cancel: &fetch.cancel,
            };
            let run = source.fetch_for(&caller, &fetch.selection, &sink);
            tokio::pin!(run);
            loop {
                tokio::select! {
                    r = &mut run => break r,
                    Some(loc) = rx.recv() => fetch.arrived(loc).await,
                }
            }
        };
        while let Ok(loc) = rx.try_recv() {
            fetch.arrived(loc).await;
        }
        let received = fetch.received();
        let end = match result {
            Ok(report) if report.delivered(received, reported) => End::Complete { received },
            Ok(report) => End::Incomplete(format!(
                "{} delivered {received} of {reported} instances (status 0x{:04X}, {} failed)",
                source.name(),
                report.status,
                report.failed
            )),
            Err(e) => End::Incomplete(e.to_string()),
        };
        tracing::info!(fetch = %fetch.key, source = source.name(), ?end, "fetch ended");
        let streamed_whole = matches!(end, End::Complete { .. });
        // The followers have it all; the cache counts it only once it is durable.
        fetch.finish(end);
        let durable = {
            let (blobs, keys) = (self.blobs.clone(), fetch.blob_keys());
            match tokio::task::spawn_blocking(move || blobs.sync_blocking(&keys)).await {
                Ok(Ok(())) => true,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "cannot make fetched instances durable");
                    false
                }
                Err(_) => false,
            }
        };
        if let Some(study) = fetch.selection.study_uids.first() {
            if fetch.selection.level() == Level::Study {
                self.record(study, reported, streamed_whole && durable)
                    .await;
            } else {
                self.record_part(study, source.as_ref(), &caller, streamed_whole && durable)
                    .await;
            }
        }
        let study = fetch.selection.study_uids.first().map(String::as_str);
        self.evict(study).await;
        if let (true, Some(study)) = (leased, fetch.selection.study_uids.first()) {
            self.give_back_fetch_lease(study).await;
        }
        // Last: while it is listed the study is not evicted, and a request for the same
        // selection follows this fetch (its instances are all there) instead of deciding
        // afresh on a cache state still being written.
        self.fetches.done(&fetch);
    }

    /// A query answered by `sources`, merged with what the cache holds that they do not
    /// (e.g. studies received by STOW-RS): one row per unique key, in unique-key order,
    /// paged by the query's limit and offset after the merge. Without sources, the cache
    /// alone (paged by the index).
    pub(super) async fn merge_find(
        &self,
        query: &Query,
        max_results: usize,
        sources: &[Arc<dyn Source>],
        caller: &Caller,
    ) -> Result<(Vec<Match>, Vec<SourceError>), super::CoreError> {
        if sources.is_empty() {
            let mut found = self.index.find(query).await?;
            found.truncate(max_results);
            return Ok((found, Vec::new()));
        }
        // Rows are merged and ordered by the unique key of the query level (PS3.4 C.6.1).
        let unique = match query.level {
            Level::Patient => PATIENT_ID,
            Level::Study => Tag(0x0020, 0x000D),
            Level::Series => Tag(0x0020, 0x000E),
            Level::Image => Tag(0x0008, 0x0018),
        };
        let window = max_results.saturating_add(query.offset as usize);
        let mut from_sources = Vec::new();
        let (mut asked, mut failed, mut unanswered) = (0, 0, Vec::new());
        for source in sources {
            let capabilities = source.capabilities();
            let levels = &capabilities.query_levels;
            // A source without a PATIENT level (a PACS asked in the Study Root model) is
            // asked for the studies, folded into their patients here (PS3.4 C.6.1.1.2).
            let by_studies = query.level == Level::Patient
                && !levels.contains(&Level::Patient)
                && levels.contains(&Level::Study);
            if !levels.contains(&query.level) && !by_studies {
                continue;
            }
            asked += 1;
            let asked_query = match by_studies {
                true => Query {
                    level: Level::Study,
                    ..query.clone()
                },
                false => query.clone(),
            };
            // A source down leaves the others and the cache to answer, the answer marked
            // incomplete; the query fails only when nothing answered at all (below). A
            // source of several peers answers with those that did.
            let asked_window = match by_studies {
                true => window.saturating_mul(STUDIES_PER_PATIENT),
                false => window,
            };
            let (found, errors) = source.find_each(caller, &asked_query, asked_window).await;
            let mut found = match by_studies {
                true => patients_of(found),
                false => found,
            };
            if !errors.is_empty() {
                for e in &errors {
                    tracing::warn!(source = source.name(), error = %e, "query: a source did not answer");
                }
                if found.is_empty() {
                    failed += 1;
                }
                unanswered.extend(errors);
            }
            // Where a source cannot match names fuzzily, it was asked for more and the core
            // matches (PS3.18 8.3.4.1 fuzzymatching).
            if !capabilities.fuzzy_names {
                found.retain(|m| matches_fuzzy(query, m));
            }
            from_sources.extend(found);
        }
        let mut unpaged = query.clone();
        unpaged.limit = Some(window.min(u32::MAX as usize) as u32);
        unpaged.offset = 0;
        let from_cache = self.index.find(&unpaged).await.unwrap_or_default();
        if asked > 0 && failed == asked && from_cache.is_empty() {
            return Err(unanswered.swap_remove(0).into());
        }
        let mut merged: BTreeMap<String, Match> = BTreeMap::new();
        for m in from_cache.into_iter().chain(from_sources) {
            let Some(key) = m.get(&unique).cloned() else {
                continue;
            };
            // A source's row wins (it comes later), keeping cache values it left empty: an
            // empty value is no value (a remote's QIDO-RS attribute without "Value").
            merged
                .entry(key)
                .and_modify(|old| {
                    old.extend(
                        m.iter()
                            .filter(|(_, v)| has_value(v))
                            .map(|(t, v)| (*t, v.clone())),
                    )
                })
                .or_insert(m);
        }
        // The query's limit, and never more than `max_results` (a query without a limit).
        let limit = query
            .limit
            .map_or(max_results, |l| (l as usize).min(max_results));
        let page = merged
            .into_values()
            .skip(query.offset as usize)
            .take(limit)
            .collect();
        Ok((page, unanswered))
    }
}

impl Core {
    /// The studies of the patients `selection` names (a PATIENT-level retrieve), as the
    /// sources and the cache know them, in study UID order, each with the instances the
    /// answering row reports (0 where it says nothing). A Study Root PACS has no PATIENT
    /// level to retrieve at (PS3.4 C.6.2), so the core asks for the patient's studies
    /// (STUDY level, Patient ID matched, C.6.2.1.1) and retrieves them one by one.
    pub(super) async fn patient_studies(
        &self,
        selection: &Selection,
        sources: &[Arc<dyn Source>],
        caller: &Caller,
    ) -> Result<Vec<(String, u64)>, super::CoreError> {
        let attr = indexed_attr_by_keyword("PatientID").expect("an indexed attribute");
        let mut studies = BTreeMap::new();
        for id in &selection.patient_ids {
            let query = Query::new(Level::Study).with_key(attr, Matcher::Single(id.clone()));
            let (found, _) = self.merge_find(&query, usize::MAX, sources, caller).await?;
            for row in found {
                let Some(study) = row.get(&STUDY_UID) else {
                    continue;
                };
                // Only the patients asked for: a source that matched loosely adds nothing.
                if row.get(&PATIENT_ID).is_some_and(|p| p.trim() != id.trim()) {
                    continue;
                }
                let count = row
                    .get(&computed::NUMBER_OF_STUDY_RELATED_INSTANCES)
                    .and_then(|n| n.trim().parse().ok())
                    .unwrap_or(0);
                studies.insert(study.clone(), count);
            }
        }
        Ok(studies.into_iter().collect())
    }
}

const STUDY_UID: Tag = Tag(0x0020, 0x000D);

/// Studies read per patient asked for when a source's studies are folded into patients.
const STUDIES_PER_PATIENT: usize = 16;

/// Study-level rows folded into one row per Patient ID: the patient attributes of its first
/// study, and the patient's related studies, series and instances counted (PS3.4 C.6.1.1.2
/// Table C.6-1: the series and instances only where every study reported its own).
fn patients_of(studies: Vec<Match>) -> Vec<Match> {
    use crate::model::query::{computed, INDEXED_ATTRS};
    let patient_attrs: Vec<Tag> = INDEXED_ATTRS
        .iter()
        .filter(|a| a.level == Level::Patient)
        .map(|a| a.tag)
        .collect();
    let mut patients: BTreeMap<String, (Match, usize, Option<u64>, Option<u64>)> = BTreeMap::new();
    let count = |m: &Match, tag| m.get(&tag).and_then(|v| v.trim().parse::<u64>().ok());
    for study in studies {
        let Some(id) = study.get(&PATIENT_ID).cloned() else {
            continue;
        };
        let entry = patients.entry(id).or_insert_with(|| {
            let row = patient_attrs
                .iter()
                .filter_map(|t| study.get(t).map(|v| (*t, v.clone())))
                .collect();
            (row, 0, Some(0), Some(0))
        });
        entry.1 += 1;
        let add = |sum: Option<u64>, n: Option<u64>| sum.zip(n).map(|(a, b)| a + b);
        entry.2 = add(
            entry.2,
            count(&study, computed::NUMBER_OF_STUDY_RELATED_SERIES),
        );
        entry.3 = add(
            entry.3,
            count(&study, computed::NUMBER_OF_STUDY_RELATED_INSTANCES),
        );
    }
    patients
        .into_values()
        .map(|(mut row, studies, series, instances)| {
            row.insert(
                computed::NUMBER_OF_PATIENT_RELATED_STUDIES,
                studies.to_string(),
            );
            if let Some(n) = series {
                row.insert(computed::NUMBER_OF_PATIENT_RELATED_SERIES, n.to_string());
            }
            if let Some(n) = instances {
                row.insert(computed::NUMBER_OF_PATIENT_RELATED_INSTANCES, n.to_string());
            }
            row
        })
        .collect()
}

const PATIENT_ID: Tag = Tag(0x0010, 0x0020);

/// Does a value of a match hold anything (`\\`, a multi-valued value of empty values, does not)?
fn has_value(value: &str) -> bool {
    value.split('\\').any(|v| !v.trim().is_empty())
}
