//! Forwarding to the PACS: studies that arrive by STOW-RS from another hospital (a transfer of
//! care) are sent on to the local PACS by C-STORE (PS3.4 B.2), through the durable queue in the
//! index (`forward_job`), so that a PACS that is down loses nothing: its jobs wait, with
//! exponential backoff, across restarts.
//!
//! - [`enqueue_stow`]: what STOW-RS calls once a request's instances are stored and indexed;
//!   it applies `pacs.forward_stow` and `pacs.forward_except` (per sender).
//! - [`run`]: the worker. It takes the due jobs, one association per study (queued on the
//!   PACS's `max_associations` like every other association toward it), C-STOREs each
//!   instance's blob as stored, and records each job `done`, `queued` again with its next
//!   attempt, or `failed` after [`RetryPolicy::max_attempts`].
//!   Each study's attempt is a transfer on the console's [`Board`] (instances and bytes
//!   sent of the located, the rate); cancelled there, it stops before its next instance and
//!   the unsent jobs end `failed` ("cancelled by the operator"), to be re-queued.
//! - [`queue`] / [`job_json`]: the queue as `beeldbrug forward` and `GET /admin/forward` show it.

use super::source::PacsSource as Gateway;
use crate::clock::unix_seconds as now;
use crate::core::transfers::{Board, Running, Start, FORWARD};
use crate::dimse::scu::send::{propose_for_with, send_file_with, Fallback, SendError};
use crate::dimse::status::{self, Category};
use crate::model::{InstanceLocation, Selection};
use crate::store::index::ForwardJob;
use crate::store::{Index, IndexError};
use crate::trust::{Caller, Operation, Outcome, Trust};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Job states in `forward_job.state`.
pub const QUEUED: &str = "queued";
pub const DONE: &str = "done";
pub const FAILED: &str = "failed";

/// Due jobs taken per pass of the worker.
const BATCH: u32 = 500;

/// When a failed job is tried again, and when it is given up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Wait after the 1st, 2nd, ... failed attempt; the last one repeats.
    pub delays: Vec<Duration>,
    /// Attempts after which a job is `failed` (given up; it stays in the queue, visible).
    pub max_attempts: i64,
    /// How often the worker looks for due jobs when nothing wakes it.
    pub poll: Duration,
}

impl Default for RetryPolicy {
    /// 10 s, 30 s, 2 min, 10 min, 30 min, then hourly: 30 attempts span about a day, so a PACS
    /// down for an evening's maintenance loses nothing.
    fn default() -> Self {
        RetryPolicy {
            delays: [10, 30, 120, 600, 1800, 3600]
                .map(Duration::from_secs)
                .to_vec(),
            max_attempts: 30,
            poll: Duration::from_secs(1),
        }
    }
}

impl RetryPolicy {
    /// The wait after a job's `attempts`-th failed attempt (1-based).
    pub fn delay(&self, attempts: i64) -> Duration {
        let i = usize::try_from(attempts.max(1) - 1).unwrap_or(usize::MAX);
        self.delays
            .get(i)
            .or(self.delays.last())
            .copied()
            .unwrap_or(Duration::from_secs(60))
    }
}

/// The worker's wake-up and its retry policy; one per PACS.
#[derive(Debug, Default)]
pub struct Forwarder {
    wake: Notify,
    policy: RwLock<RetryPolicy>,
}

impl Forwarder {
    /// New jobs are queued: look now rather than at the next poll.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub fn policy(&self) -> RetryPolicy {
        self.policy
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Change the retry policy (tests use short delays); applies from the next attempt.
    pub fn set_policy(&self, policy: RetryPolicy) {
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = policy;
    }
}

/// The worker: forward due jobs until `shutdown`. Does nothing without `[pacs]`. A pass in
/// progress at shutdown is dropped; its unfinished jobs stay queued for the next start.
pub async fn run(
    gateway: Arc<Gateway>,
    trust: Arc<Trust>,
    board: Arc<Board>,
    shutdown: CancellationToken,
) {
    tracing::info!(pacs = %gateway.pacs.config.ae_title, "forward queue worker started");
    loop {
        let (lease_until, jobs) = tokio::select! {
            _ = shutdown.cancelled() => break,
            claimed = claim(&gateway) => claimed,
        };
        let ids: Vec<i64> = jobs.iter().map(|j| j.id).collect();
        let more = tokio::select! {
            _ = shutdown.cancelled() => {
                // Unfinished jobs are due again at once (for this node's next start or
                // another node), not only when their lease runs out.
                if let Err(e) = gateway.index.release_forward_jobs(&ids, lease_until, now()).await {
                    tracing::warn!(error = %e, "cannot give back the forward jobs of this pass; their lease runs out");
                }
                break;
            }
            more = pass(&trust, &gateway, &board, jobs) => more,
        };
        if more {
            continue;
        }
        let poll = gateway.pacs.forward.policy().poll;
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = gateway.pacs.forward.wake.notified() => {}
            _ = tokio::time::sleep(poll) => {}
        }
    }
    tracing::info!("forward queue worker stopped");
}

/// How long a claimed job is this node's (issue 16, item 2): nodes sharing the database do
/// not take each other's jobs meanwhile; a node that dies mid-pass leaves its jobs due again
/// after this (sent at least once, as the queue promises).
const LEASE_SECS: i64 = 300;

/// Lease the due jobs (see [`Index::claim_forward_jobs`]): the lease's end and the jobs;
/// none when the index is in trouble (the next poll tries again).
async fn claim(gateway: &Gateway) -> (i64, Vec<ForwardJob>) {
    let now = now();
    let lease_until = now + LEASE_SECS;
    match gateway
        .index
        .claim_forward_jobs(now, lease_until, BATCH)
        .await
    {
        Ok(jobs) => (lease_until, jobs),
        Err(e) => {
            tracing::error!(error = %e, "cannot read the forward queue");
            (lease_until, Vec::new())
        }
    }
}

/// One pass over the claimed jobs, a study at a time. True when a full batch was taken and
/// recorded (more may be due at once); an index in trouble waits for the next poll.
async fn pass(trust: &Trust, gateway: &Gateway, board: &Arc<Board>, jobs: Vec<ForwardJob>) -> bool {
    let mut full = jobs.len() == BATCH as usize;
    // Studies in the order their first job was queued.
    let mut studies: Vec<(String, Vec<ForwardJob>)> = Vec::new();
    for job in jobs {
        match studies
            .iter_mut()
            .find(|(s, _)| *s == job.study_instance_uid)
        {
            Some((_, list)) => list.push(job),
            None => studies.push((job.study_instance_uid.clone(), vec![job])),
        }
    }
    for (study, jobs) in studies {
        full &= forward_study(trust, gateway, board, &study, &jobs).await;
    }
    full
}

/// How one instance's attempt ended.
enum Attempt {
    Sent,
    /// Try again later (or give up after the last attempt).
    Retry(String),
    /// Cannot ever succeed: give up now.
    GiveUp(String),
    /// The operator cancelled the transfer before this instance: given up, to be re-queued.
    Cancelled,
}

/// The last error of a cancelled job.
pub const CANCELLED: &str = "cancelled by the operator";

/// One attempt at a study's due jobs over one association. False when the index could not
/// be read or written.
async fn forward_study(
    trust: &Trust,
    gateway: &Gateway,
    board: &Arc<Board>,
    study: &str,
    jobs: &[ForwardJob],
) -> bool {
    let pacs = &gateway.pacs;
    let selection = Selection {
        study_uids: vec![study.to_string()],
        sop_instance_uids: jobs
            .iter()
            .map(|j| j.sop_instance_uid.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
        ..Default::default()
    };
    // The outcome per SOP Instance UID (a SOP stored twice has two jobs, sent once).
    let mut results: BTreeMap<String, Attempt> = BTreeMap::new();
    let located = match gateway.index.locate(&selection).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, study, "forward: index lookup failed");
            return false;
        }
    };
    for sop in &selection.sop_instance_uids {
        if !located.iter().any(|l| &l.sop_instance_uid == sop) {
            results.insert(
                sop.clone(),
                Attempt::GiveUp("the instance is no longer in the store".into()),
            );
        }
    }
    if !located.is_empty() {
        let started = std::time::Instant::now();
        let transfer = board.start(Start {
            kind: FORWARD,
            source: "cache".into(),
            destination: format!(
                "{} ({}@{}:{})",
                super::source::NAME,
                pacs.config.ae_title,
                pacs.config.host,
                pacs.config.port
            ),
            study_uids: vec![study.to_string()],
            expected: located.len() as u64,
            expected_bytes: located.iter().map(|l| l.size_bytes).sum(),
        });
        send_all(gateway, &located, &mut results, &transfer).await;
        // One real call to the PACS (an association of C-STOREs) for the chain view.
        let failed = results.values().find_map(|a| match a {
            Attempt::Retry(why) => Some(why.clone()),
            _ => None,
        });
        transfer.finish(failed.clone());
        crate::metrics::peer_call(
            "pacs",
            super::source::NAME,
            "forward",
            failed.as_deref().map_or(Ok(()), Err),
            started.elapsed(),
        );
    }

    let policy = pacs.forward.policy();
    let now = now();
    let (mut sent, mut retried, mut given_up) = (0usize, 0usize, 0usize);
    let mut last_error = String::new();
    let mut recorded = true;
    for job in jobs {
        let attempts = job.attempts + 1;
        let (state, next, error) = match results.get(&job.sop_instance_uid) {
            Some(Attempt::Sent) => (DONE, now, ""),
            Some(Attempt::GiveUp(e)) => (FAILED, now, e.as_str()),
            Some(Attempt::Cancelled) => (FAILED, now, CANCELLED),
            Some(Attempt::Retry(e)) if attempts >= policy.max_attempts => (FAILED, now, e.as_str()),
            Some(Attempt::Retry(e)) => {
                let wait = policy.delay(attempts).as_secs().max(1) as i64;
                (QUEUED, now.saturating_add(wait), e.as_str())
            }
            None => (QUEUED, now, "not attempted"),
        };
        match state {
            DONE => sent += 1,
            FAILED => given_up += 1,
            _ => retried += 1,
        }
        if !error.is_empty() {
            last_error = error.to_string();
        }
        if state == FAILED {
            tracing::warn!(job = job.id, sop = %job.sop_instance_uid, attempts, error, "forward to the PACS given up");
        }
        if let Err(e) = gateway
            .index
            .update_forward(job.id, state, next, error)
            .await
        {
            tracing::error!(error = %e, job = job.id, "cannot record a forward attempt");
            recorded = false;
        }
    }
    let instances = results
        .values()
        .filter(|r| matches!(r, Attempt::Sent))
        .count();
    if retried + given_up == 0 {
        tracing::info!(study, instances, pacs = %pacs.config.ae_title, "forwarded to the PACS");
    } else {
        tracing::warn!(
            study, sent, retried, given_up, error = %last_error, pacs = %pacs.config.ae_title,
            "forward to the PACS incomplete"
        );
    }
    // One audit record for what left (or was given up); a retry that sent nothing is in
    // the log and the queue only.
    if instances > 0 || given_up > 0 {
        let senders: BTreeSet<&str> = jobs.iter().map(|j| j.sender.as_str()).collect();
        let senders: Vec<&str> = senders.into_iter().collect();
        let patients: BTreeSet<String> = located
            .iter()
            .map(|l| l.patient_id.clone())
            .filter(|p| !p.is_empty())
            .collect();
        let mut detail = format!(
            "forwarded {instances} instances to PACS {} (received by STOW-RS from {})",
            pacs.config.ae_title,
            senders.join(", ")
        );
        if retried + given_up > 0 {
            detail.push_str(&format!(
                "; {retried} to retry, {given_up} given up: {last_error}"
            ));
        }
        let outcome = Outcome {
            patient_ids: patients.into_iter().collect(),
            study_uids: vec![study.to_string()],
            result: match (instances, retried + given_up) {
                (_, 0) => "success",
                (0, _) => "failure",
                _ => "partial",
            }
            .into(),
            detail,
            grounds: String::new(),
        };
        let us = Caller::new(
            pacs.config.calling_ae(&pacs.our_ae),
            format!("{}:{}", pacs.config.host, pacs.config.port),
        );
        trust.audit(&us, Operation::Store, outcome).await;
    }
    recorded
}

/// C-STORE the located instances over one association (PS3.4 B.2); every outcome goes into
/// `results`.
async fn send_all(
    gateway: &Gateway,
    located: &[InstanceLocation],
    results: &mut BTreeMap<String, Attempt>,
    transfer: &Running,
) {
    // As stored; instances stored uncompressed in `[pacs] wire_syntax` where the PACS
    // accepts it. A compressed instance is never decoded on the way.
    let fallback = match crate::transcode::WireSyntax::parse(&gateway.pacs.config.wire_syntax) {
        Ok(Some(wire)) => Fallback::Wire(wire),
        _ => Fallback::Uncompressed,
    };
    let contexts = propose_for_with(
        located
            .iter()
            .map(|l| (l.sop_class_uid.clone(), l.transfer_syntax_uid.clone())),
        fallback,
    );
    let mut assoc = match gateway.pacs.connect(&contexts).await {
        Ok(a) => a,
        Err(e) => {
            let why = e.to_string();
            for l in located {
                results.insert(l.sop_instance_uid.clone(), Attempt::Retry(why.clone()));
            }
            return;
        }
    };
    let mut lost: Option<String> = None;
    for l in located {
        if let Some(why) = &lost {
            results.insert(l.sop_instance_uid.clone(), Attempt::Retry(why.clone()));
            continue;
        }
        if transfer.is_cancelled() {
            results.insert(l.sop_instance_uid.clone(), Attempt::Cancelled);
            continue;
        }
        // The instance's blob as stored (PS3.10 file), sent as it is.
        // On object storage, this node's copy of it (downloaded when it has none).
        let _ = gateway.blobs.ensure_local(&l.blob_key).await;
        let file = gateway.blobs.path(&l.blob_key);
        let attempt = match send_file_with(&mut assoc.assoc, &file, None, fallback).await {
            Ok(sent) => match status::category(sent.status) {
                Category::Success | Category::Warning => {
                    transfer.advance(1, l.size_bytes);
                    Attempt::Sent
                }
                _ => Attempt::Retry(format!(
                    "PACS answered C-STORE with {}",
                    status::describe(sent.status)
                )),
            },
            Err(SendError::Association(e)) => {
                let why = format!("association lost: {e}");
                lost = Some(why.clone());
                Attempt::Retry(why)
            }
            // The PACS accepted no context for this SOP class / syntax: perhaps after a
            // configuration change on its side, so retried like the rest.
            Err(e) => Attempt::Retry(e.to_string()),
        };
        if let Attempt::Retry(why) = &attempt {
            tracing::warn!(sop = %l.sop_instance_uid, error = %why, "forward C-STORE failed");
        }
        results.insert(l.sop_instance_uid.clone(), attempt);
    }
    if lost.is_none() {
        if let Err(e) = assoc.release().await {
            tracing::debug!(error = %e, "PACS association release failed after forwarding");
        }
    }
}

/// The newest `limit` jobs of every state.
pub async fn queue(index: &dyn Index, limit: u32) -> Result<Vec<ForwardJob>, IndexError> {
    index.forward_jobs(None, limit).await
}

/// A job as JSON (`beeldbrug forward --json`, `GET /admin/forward`). `next_attempt` is
/// RFC 3339 for queued jobs and null otherwise.
pub fn job_json(job: &ForwardJob) -> serde_json::Value {
    json!({
        "id": job.id,
        "state": job.state,
        "attempts": job.attempts,
        "next_attempt_at": job.next_attempt_at,
        "next_attempt": next_attempt(job),
        "last_error": job.last_error,
        "study_instance_uid": job.study_instance_uid,
        "sop_instance_uid": job.sop_instance_uid,
        "sender": job.sender,
        "created_at": job.created_at,
    })
}

/// When a queued job is tried next (RFC 3339, UTC); None for done and failed jobs.
pub fn next_attempt(job: &ForwardJob) -> Option<String> {
    if job.state != QUEUED {
        return None;
    }
    time::OffsetDateTime::from_unix_timestamp(job.next_attempt_at)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
}
