//! `storage.keep_received_days`: studies another hospital sent us (STOW-RS) are deleted that
//! many days after their last receipt, through the one delete path ([`super::delete`]),
//! with one audit record per study. Studies fetched from the local PACS have their own rule
//! (`cache.max_bytes`, least recently used); what the hospital stored itself by C-STORE is
//! never expired. A study with instances still queued for the PACS waits until they went.

use super::delete::{self, DeleteError, Deleted};
use super::{BlobStore, Index};
use crate::model::Selection;
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the retention pass (and the sweep of interrupted deletes) runs.
pub const PASS_INTERVAL: Duration = Duration::from_secs(3600);

/// Studies per pass; the rest wait for the next.
const STUDIES_PER_PASS: u32 = 1000;

/// Where retention records each study it deleted: the audit trail, one record per study
/// (`trust::audit::Audit` and `trust::Trust` implement it). A trait of the store's, because
/// the audit trail is written to the store: the store names no part of the trust layer.
#[async_trait]
pub trait RetentionAudit: Send + Sync {
    type Error: std::fmt::Display;

    /// Record that `deleted` (one received study) went under `storage.keep_received_days`.
    async fn record_expired(&self, keep_days: u32, deleted: &Deleted) -> Result<(), Self::Error>;
}

/// Delete the received studies whose last receipt is more than `keep_days` before `now`
/// (Unix seconds; a parameter so tests need not wait days). Returns what each delete
/// removed, per study. `keep_days` 0 keeps everything.
pub async fn expire_received<A: RetentionAudit + ?Sized>(
    index: &dyn Index,
    blobs: &BlobStore,
    audit: &A,
    keep_days: u32,
    now: i64,
) -> Result<Vec<(String, Deleted)>, DeleteError> {
    if keep_days == 0 {
        return Ok(Vec::new());
    }
    let cutoff = now.saturating_sub(i64::from(keep_days) * 86_400);
    let mut out = Vec::new();
    for study in index.received_before(cutoff, STUDIES_PER_PASS).await? {
        let selection = Selection {
            study_uids: vec![study.clone()],
            ..Default::default()
        };
        let deleted = delete::delete(index, blobs, &selection).await?;
        if deleted.is_empty() {
            // Gone already (evicted, or deleted by an operator): only the receipt remains.
            index.forget_received(&study).await?;
            continue;
        }
        tracing::info!(
            instances = deleted.instances,
            bytes = deleted.bytes,
            keep_days,
            "retention: deleted a received study"
        );
        // The study is gone either way; a failed record marks the trail unwritable (fail
        // closed, see `AuditHealth`) and is logged there.
        if let Err(e) = audit.record_expired(keep_days, &deleted).await {
            tracing::error!(error = %e, "retention: the delete's audit record was not written");
        }
        out.push((study, deleted));
    }
    Ok(out)
}

/// Every [`PASS_INTERVAL`] (the first pass at once): finish interrupted deletes, then
/// expire received studies, until `shutdown`.
pub async fn run<A: RetentionAudit + 'static>(
    index: Arc<dyn Index>,
    blobs: BlobStore,
    audit: Arc<A>,
    keep_days: u32,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(PASS_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let now = crate::clock::unix_seconds();
        if let Err(e) = delete::sweep_superseded(index.as_ref(), &blobs, now).await {
            tracing::warn!(error = %e, "cannot finish interrupted deletes");
        }
        if let Err(e) =
            expire_received(index.as_ref(), &blobs, audit.as_ref(), keep_days, now).await
        {
            tracing::warn!(error = %e, "retention pass failed; tried again next pass");
        }
    }
}
