//! What the operator's console (`crate::admin`, issue 17) reads and steers, through the core
//! like every other front: the retrieves running now ([`follow::Fetches`]) and their cancel,
//! the forward and publication queues with the re-queue of failed forward jobs, and where a
//! study lives (the cache, each source, the XDS registry). The console's trust decision
//! ([`Operation::Admin`](crate::trust::Operation::Admin)) is taken before any of these is
//! called; what touches patients is recorded with the console's ticket.
//!
//! [`follow::Fetches`]: super::follow::Fetches

use super::follow::TransferInfo;
use super::transfers::Board;
use super::{Core, CoreError, Selection};
use crate::trust::Caller;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// Most ended transfers the console lists.
const RECENT: usize = 100;

/// How long the console waits for one source to say whether it holds a study.
const HOLDING_TIMEOUT: Duration = Duration::from_secs(10);

/// One job of the forward queue (STOW-RS instances on their way to the PACS).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ForwardJobView {
    pub id: i64,
    /// `queued`, `done` or `failed` (given up).
    pub state: String,
    pub attempts: i64,
    /// Unix seconds (queued jobs: when tried next).
    pub next_attempt_at: i64,
    pub last_error: String,
    pub study_instance_uid: String,
    pub sop_instance_uid: String,
    pub sender: String,
    pub created_at: String,
}

/// A study waiting for its publication (XDS-I KOS manifest), with the last one if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingPublication {
    pub study_instance_uid: String,
    /// Unix seconds of the last arrival of an instance.
    pub last_arrival: i64,
    pub arrivals: i64,
    /// Unix seconds of the last publication (None: never published).
    pub published_at: Option<i64>,
    /// Its publication attempts fail: how often since the last success, the last error,
    /// and when the publisher tries again by itself (None: no failed attempt).
    pub failing: Option<super::transfers::Failing>,
}

/// What one source says it holds of a study.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceHolding {
    pub source: &'static str,
    /// Instances it holds (None: it could not say, see `error`).
    pub instances: Option<u64>,
    pub error: Option<String>,
}

/// Where a study lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StudyWhere {
    pub study_instance_uid: String,
    /// Instances the cache holds.
    pub cache_instances: u64,
    /// Whether the cache holds all the source reported when it last fetched.
    pub cache_complete: bool,
    /// Each source the web front reaches (the PACS, other hospitals' gateways).
    pub sources: Vec<SourceHolding>,
    /// With an XDS registry: whether the study's KOS manifest is published.
    pub kos_published: Option<bool>,
}

/// One source's probe: its answer or why it gave none, and how long it took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceProbe {
    pub source: &'static str,
    pub ok: bool,
    pub detail: String,
    pub latency_ms: u64,
}

impl Core {
    /// Probe every source that has a probe (each within [`HOLDING_TIMEOUT`]).
    pub async fn probe_sources(&self) -> Vec<SourceProbe> {
        let probes = self.sources.iter().map(|s| async move {
            let started = std::time::Instant::now();
            let answer = tokio::time::timeout(HOLDING_TIMEOUT, s.probe()).await;
            let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            let (ok, detail) = match answer {
                Ok(None) => return None,
                Ok(Some(Ok(said))) => (true, said),
                Ok(Some(Err(e))) => (false, e.to_string()),
                Err(_) => (false, format!("no answer in {HOLDING_TIMEOUT:?}")),
            };
            Some(SourceProbe {
                source: s.name(),
                ok,
                detail,
                latency_ms,
            })
        });
        futures::future::join_all(probes)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// The retrieves, forwards and publications running now (oldest first), then the last
    /// ended ones (newest first, at most [`RECENT`]).
    pub fn transfers(&self) -> Vec<TransferInfo> {
        let (mut running, mut ended) = self.fetches.transfers();
        let (r, e) = self.transfers.list();
        running.extend(r);
        running.sort_by_key(|t| t.id);
        ended.extend(e);
        ended.sort_by_key(|t| std::cmp::Reverse(t.id));
        ended.truncate(RECENT);
        running.extend(ended);
        running
    }

    /// Cancel a running transfer: a retrieve (its source is told: a PACS gets a C-CANCEL),
    /// a forward or a publication (stopped before its next instance); false when none of
    /// that id runs.
    pub fn cancel_transfer(&self, id: u64) -> bool {
        self.fetches.cancel(id) || self.transfers.cancel(id)
    }

    /// Where forwards and publications report their progress (the workers get it from
    /// the composition root).
    pub fn transfer_board(&self) -> Arc<Board> {
        self.transfers.clone()
    }

    /// The newest `limit` forward jobs of every state.
    pub async fn forward_queue(&self, limit: u32) -> Result<Vec<ForwardJobView>, CoreError> {
        let jobs = self.index.forward_jobs(None, limit).await?;
        Ok(jobs
            .into_iter()
            .map(|j| ForwardJobView {
                id: j.id,
                state: j.state,
                attempts: j.attempts,
                next_attempt_at: j.next_attempt_at,
                last_error: j.last_error,
                study_instance_uid: j.study_instance_uid,
                sop_instance_uid: j.sop_instance_uid,
                sender: j.sender,
                created_at: j.created_at,
            })
            .collect())
    }

    /// Put failed forward jobs back in the queue (`ids`; empty: every failed job), due now
    /// with their attempts counted afresh, and wake the sources' workers. Returns how many.
    pub async fn requeue_failed(&self, ids: &[i64]) -> Result<u64, CoreError> {
        let n = self
            .index
            .requeue_forward(ids, crate::clock::unix_seconds())
            .await?;
        for source in &self.sources {
            source.queue_changed();
        }
        Ok(n)
    }

    /// Studies waiting for their publication (none without an XDS registry).
    pub async fn publication_queue(
        &self,
        limit: u32,
    ) -> Result<Vec<PendingPublication>, CoreError> {
        if self.registry.is_none() {
            return Ok(Vec::new());
        }
        let studies = self
            .index
            .studies_to_publish(crate::clock::unix_seconds(), limit)
            .await?;
        let mut out = Vec::with_capacity(studies.len());
        for s in studies {
            let last = self.index.publication(&s.study_instance_uid).await?;
            out.push(PendingPublication {
                last_arrival: s.last_arrival,
                arrivals: s.arrivals,
                published_at: last.map(|p| p.published_at),
                failing: self.transfers.failing(&s.study_instance_uid),
                study_instance_uid: s.study_instance_uid,
            });
        }
        Ok(out)
    }

    /// "Publish now": the publisher tries the study at once, whether it is quiet yet or
    /// backing off after failures. False when no registry is configured or the study does
    /// not wait for its publication.
    pub async fn publish_now(&self, study_uid: &str) -> Result<bool, CoreError> {
        if self.registry.is_none() {
            return Ok(false);
        }
        let waiting = self
            .index
            .studies_to_publish(crate::clock::unix_seconds(), 10_000)
            .await?;
        if !waiting.iter().any(|s| s.study_instance_uid == study_uid) {
            return Ok(false);
        }
        self.transfers.request_publication(study_uid);
        Ok(true)
    }

    /// Where a study lives: the cache's count, each source's count (on behalf of
    /// `caller`, each within [`HOLDING_TIMEOUT`]) and the registry's publication.
    pub async fn study_where(&self, caller: &Caller, study_uid: &str) -> StudyWhere {
        let selection = Selection {
            study_uids: vec![study_uid.to_string()],
            ..Default::default()
        };
        let cache_instances = self.index.count_instances(&selection).await.unwrap_or(0);
        let cache_complete = matches!(
            self.index.cached_study(study_uid).await,
            Ok(Some(s)) if s.complete
        );
        let sources = self.sources_for(crate::trust::Operation::Admin);
        let counts = sources.iter().map(|s| {
            let selection = &selection;
            async move {
                let counted =
                    tokio::time::timeout(HOLDING_TIMEOUT, s.count_for(caller, selection)).await;
                let (instances, error) = match counted {
                    Ok(Ok(n)) => (Some(n), None),
                    Ok(Err(e)) => (None, Some(e.to_string())),
                    Err(_) => (None, Some(format!("no answer in {HOLDING_TIMEOUT:?}"))),
                };
                SourceHolding {
                    source: s.name(),
                    instances,
                    error,
                }
            }
        });
        let sources = futures::future::join_all(counts).await;
        let kos_published = match &self.registry {
            Some(r) => r.is_published(study_uid).await.ok(),
            None => None,
        };
        StudyWhere {
            study_instance_uid: study_uid.to_string(),
            cache_instances,
            cache_complete: cache_complete || (cache_instances > 0 && sources.is_empty()),
            sources,
            kos_published,
        }
    }
}
