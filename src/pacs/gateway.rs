//! What the fronts ask of gateway mode: where a selection is answered from (the cache, or a
//! PACS retrieve streamed as it arrives), and queries merged from the PACS and the cache.

use super::cache::{fresh, now};
use super::config::{CacheConfig, RetrieveMode};
use super::fetch::{self, FetchReport, Sink};
use super::shared::{End, Fetch, Fetches, Follower};
use super::{Pacs, PacsError};
use crate::core::query::{Level, Match, Query};
use crate::core::Selection;
use crate::dimse::status::{self, Category};
use crate::store::index::CachedStudy;
use crate::store::{BlobStore, Index};
use dicom_core::Tag;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Gateway mode: the PACS, the retrieves running, and the cache they fill.
#[derive(Debug)]
pub struct Gateway {
    pub pacs: Pacs,
    pub fetches: Fetches,
    pub blobs: BlobStore,
    pub index: Arc<dyn Index>,
    pub cache: CacheConfig,
}

/// Where a selection is answered from.
#[derive(Debug)]
pub enum Source {
    /// The cache holds it all.
    Cache,
    /// A PACS retrieve, followed from its first instance.
    Pacs(Follower),
}

impl Gateway {
    /// Decide where `selection` (study, series or instance) is answered from; starts or joins
    /// a PACS retrieve when the cache does not hold it all.
    pub async fn resolve(self: &Arc<Self>, selection: &Selection) -> Result<Source, PacsError> {
        let Some(study) = selection.study_uids.first().cloned() else {
            return Ok(Source::Cache);
        };
        if let Some(follower) = self.fetches.running(selection) {
            return Ok(Source::Pacs(follower));
        }
        let cached = self.index.count_instances(selection).await.unwrap_or(0);
        let state = self.index.cached_study(&study).await.ok().flatten();
        let now = now();
        let trusted = state
            .as_ref()
            .is_some_and(|s| fresh(s, self.cache.refresh_secs, now));
        if cached > 0 && (selection.level() == Level::Image || trusted) {
            self.touch(&study).await;
            return Ok(Source::Cache);
        }
        let reported = match self.pacs.count(selection).await {
            Ok(n) => n,
            Err(e) if cached > 0 => {
                tracing::warn!(error = %e, %study, "PACS unreachable; answering from the cache");
                return Ok(Source::Cache);
            }
            Err(e) => return Err(e),
        };
        // Unknown to the PACS: whatever the cache holds (e.g. received by STOW-RS).
        if reported == 0 || cached >= reported {
            if reported > 0 && selection.level() == Level::Study {
                self.record(&study, reported, true).await;
            }
            self.touch(&study).await;
            return Ok(Source::Cache);
        }
        let gateway = self.clone();
        let (follower, _) = self.fetches.join(selection, move |fetch| {
            tokio::spawn(async move { gateway.drive(fetch, reported).await });
        });
        Ok(Source::Pacs(follower))
    }

    /// Make sure the cache holds `selection` (metadata, frames, rendered): fetch and wait.
    pub async fn ensure_cached(self: &Arc<Self>, selection: &Selection) -> Result<(), PacsError> {
        match self.resolve(selection).await? {
            Source::Cache => Ok(()),
            Source::Pacs(follower) => follower
                .wait_complete()
                .await
                .map(|_| ())
                .map_err(PacsError::Retrieve),
        }
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
    /// holds as many instances as the PACS reports for the whole study (a viewer fetches
    /// series by series). The study's own count is kept, never a series' count.
    async fn record_part(&self, study: &str, fetched_whole: bool) {
        let previous = self.index.cached_study(study).await.ok().flatten();
        let whole = Selection {
            study_uids: vec![study.to_string()],
            ..Default::default()
        };
        let counted = match fetched_whole {
            true => self.pacs.count(&whole).await.ok(),
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

    /// Run one retrieve to its end, feeding its followers; then record the cache state,
    /// end the fetch and evict what no longer fits.
    async fn drive(self: Arc<Self>, fetch: Arc<Fetch>, reported: u64) {
        let (tx, mut rx) = mpsc::channel(1);
        let result = {
            let sink = Sink {
                blobs: &self.blobs,
                index: self.index.as_ref(),
                out: &tx,
                cancel: &fetch.cancel,
            };
            let run = self.retrieve(&fetch.selection, &sink);
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
            Ok(report) if delivered(&report, received, reported) => End::Complete { received },
            Ok(report) => End::Incomplete(format!(
                "PACS delivered {received} of {reported} instances (status 0x{:04X}, {} failed)",
                report.status, report.failed
            )),
            Err(e) => End::Incomplete(e.to_string()),
        };
        tracing::info!(fetch = %fetch.key, ?end, "PACS retrieve ended");
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
                self.record_part(study, streamed_whole && durable).await;
            }
        }
        self.fetches.done(&fetch);
        let study = fetch.selection.study_uids.first().map(String::as_str);
        self.evict(study).await;
    }

    /// C-GET or C-MOVE as configured or probed; C-GET retried uncompressed when the PACS
    /// accepted compressed syntaxes and then failed every sub-operation.
    async fn retrieve(
        &self,
        selection: &Selection,
        sink: &Sink<'_>,
    ) -> Result<FetchReport, PacsError> {
        let mode = self.pacs.mode();
        if mode == RetrieveMode::CMove {
            return fetch::move_(&self.pacs, selection, sink).await;
        }
        let got = match fetch::get(&self.pacs, selection, true, sink).await {
            Ok(r) if r.compressed_failed => {
                tracing::warn!("PACS failed every instance in a compressed syntax it accepted; retrying uncompressed");
                fetch::get(&self.pacs, selection, false, sink).await
            }
            other => other,
        };
        match got {
            Err(PacsError::NotSupported(_)) if mode == RetrieveMode::Auto => {
                tracing::info!("PACS does not offer C-GET; using C-MOVE from now on");
                self.pacs.set_mode(RetrieveMode::CMove);
                fetch::move_(&self.pacs, selection, sink).await
            }
            other => other,
        }
    }

    /// A query answered by the PACS, merged with what the cache holds that the PACS does not
    /// (e.g. studies received by STOW-RS): one row per unique key, in unique-key order,
    /// paged by the query's limit and offset.
    pub async fn find(&self, query: &Query, max_results: usize) -> Result<Vec<Match>, PacsError> {
        // Rows are merged and ordered by the unique key of the query level (PS3.4 C.6.1).
        let unique = match query.level {
            Level::Patient => Tag(0x0010, 0x0020),
            Level::Study => Tag(0x0020, 0x000D),
            Level::Series => Tag(0x0020, 0x000E),
            Level::Image => Tag(0x0008, 0x0018),
        };
        let window = max_results.saturating_add(query.offset as usize);
        let from_pacs = self.pacs.find(query, window).await?;
        let mut unpaged = query.clone();
        unpaged.limit = Some(window.min(u32::MAX as usize) as u32);
        unpaged.offset = 0;
        let from_cache = self.index.find(&unpaged).await.unwrap_or_default();
        let mut merged: std::collections::BTreeMap<String, Match> =
            std::collections::BTreeMap::new();
        for m in from_cache.into_iter().chain(from_pacs) {
            let Some(key) = m.get(&unique).cloned() else {
                continue;
            };
            // The PACS row wins (it comes second), keeping cache values it left empty.
            merged
                .entry(key)
                .and_modify(|old| old.extend(m.clone()))
                .or_insert(m);
        }
        let limit = query.limit.map_or(usize::MAX, |l| l as usize);
        Ok(merged
            .into_values()
            .skip(query.offset as usize)
            .take(limit)
            .collect())
    }
}

/// Did a retrieve deliver the whole selection?
fn delivered(report: &FetchReport, received: usize, reported: u64) -> bool {
    matches!(
        status::category(report.status),
        Category::Success | Category::Warning
    ) && report.failed == 0
        && report.not_cached == 0
        && received as u64 >= reported
}
