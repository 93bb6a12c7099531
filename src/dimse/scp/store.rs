//! Storage SOP classes as SCP (PS3.4 Annex B).
//!
//! The data set streams from the association into a temp file behind a Part 10 header; it
//! is fsynced, parsed up to Pixel Data for indexing, renamed into place and indexed, and
//! only then acknowledged. Any failure on the way removes the temp file: nothing half-written
//! stays, and a re-sent instance replaces the old one (same key, index upsert).
//!
//! One exception: a sub-operation of one of our own C-MOVEs, named by its Move Originator
//! fields (see [`MoveArrivals`](crate::dimse::receive::MoveArrivals)), is a copy of what
//! the PACS holds. It goes into that retrieve's cache fill like a C-GET sub-operation:
//! acknowledged once its data set is in, stored behind it without fsync, indexed and made
//! durable by the retrieve, which counts it only then.

use super::ScpContext;
use crate::dimse::command::{CommandField, CommandSet};
use crate::dimse::receive::{drain_data_set, expected, receive_blob, receive_into_fill, Failure};
use crate::dimse::status::code;
use crate::dimse::{Association, AssociationError};
use crate::store::ingest::{persist, Ingested};
use crate::store::InstanceRecord;
use crate::trust::{Caller, Decision, Operation, Outcome, Trust};
use std::collections::BTreeSet;

/// Stores on one association, audited once when it ends (one "instances transferred"
/// event per association, PS3.15 A.5.3.6 style).
#[derive(Debug, Default)]
pub struct StoreTally {
    pub stored: u32,
    pub failed: u32,
    pub patient_ids: BTreeSet<String>,
    pub study_uids: BTreeSet<String>,
}

impl StoreTally {
    pub async fn audit(&self, trust: &Trust, caller: &Caller) {
        if self.stored == 0 && self.failed == 0 {
            return;
        }
        let result = match (self.stored, self.failed) {
            (_, 0) => "success",
            (0, _) => "failure",
            _ => "partial",
        };
        let outcome = Outcome {
            patient_ids: self.patient_ids.iter().cloned().collect(),
            study_uids: self.study_uids.iter().cloned().collect(),
            result: result.into(),
            detail: format!("{} instances stored, {} failed", self.stored, self.failed),
            grounds: String::new(),
        };
        trust.audit(caller, Operation::Store, outcome).await;
    }
}

pub async fn handle(
    ctx: &ScpContext,
    assoc: &mut Association,
    context_id: u8,
    rq: &CommandSet,
    caller: &Caller,
    tally: &mut StoreTally,
) -> Result<(), AssociationError> {
    let result = store(ctx, assoc, context_id, rq, caller).await?;
    let mut rsp;
    match result {
        Ok(Stored::Durable(status, record)) => {
            // Maybe a sub-operation of one of our C-MOVEs whose PACS left out the Move
            // Originator: hand it to the retrieve waiting for it; the response waits until
            // that retrieve took it (back-pressure to the PACS).
            if let Some(arrivals) = &ctx.move_arrivals {
                arrivals
                    .stored(rq.move_originator_id, record.location())
                    .await;
            }
            tally.stored += 1;
            tally.patient_ids.insert(record.patient_id().to_string());
            tally
                .study_uids
                .insert(record.study_instance_uid().to_string());
            rsp = CommandSet::response_to(rq, CommandField::CStoreRsp, status);
        }
        Ok(Stored::Filled) => {
            // Counted; its patient and study are in the audit record of the retrieve.
            tally.stored += 1;
            rsp = CommandSet::response_to(rq, CommandField::CStoreRsp, code::SUCCESS);
        }
        Err(Failure(status, comment)) => {
            tally.failed += 1;
            tracing::warn!(peer = %assoc.peer, sop = ?rq.affected_sop_instance, status, %comment, "C-STORE failed");
            rsp = CommandSet::response_to(rq, CommandField::CStoreRsp, status);
            rsp.error_comment = Some(comment);
        }
    }
    assoc.send_command(context_id, &rsp).await
}

/// How an instance was taken in.
enum Stored {
    /// Durable and indexed: the status (success or warning) and what was indexed.
    Durable(u16, InstanceRecord),
    /// A sub-operation of our own C-MOVE, handed to its retrieve's cache fill.
    Filled,
}

/// Outer `Err`: the association is broken. Inner `Err`: this instance failed, the
/// association goes on.
async fn store(
    ctx: &ScpContext,
    assoc: &mut Association,
    context_id: u8,
    rq: &CommandSet,
    caller: &Caller,
) -> Result<Result<Stored, Failure>, AssociationError> {
    if !rq.has_data_set {
        return Ok(Err(Failure(
            code::CANNOT_UNDERSTAND,
            "C-STORE-RQ without a data set".into(),
        )));
    }
    let pc = assoc
        .context(context_id)
        .cloned()
        .ok_or_else(|| AssociationError::Protocol("no such context".into()))?;
    let sop_class = rq.affected_sop_class.clone().unwrap_or_default();
    // PS3.4 B.2.3: the SOP class must be the one negotiated for this context.
    if sop_class != pc.abstract_syntax {
        drain_data_set(assoc).await?;
        return Ok(Err(Failure(
            code::SOP_CLASS_NOT_SUPPORTED,
            "SOP class differs from presentation context".into(),
        )));
    }
    match ctx.trust.decide(caller, Operation::Store) {
        Decision::Permit => {}
        // Fail closed (audit trail not writable): refused as out of resources, so the
        // sender tries again later (PS3.4 B.2.3: A7xx).
        Decision::Unavailable(why) => {
            drain_data_set(assoc).await?;
            return Ok(Err(Failure(code::OUT_OF_RESOURCES, why)));
        }
        _ => {
            drain_data_set(assoc).await?;
            return Ok(Err(Failure(
                code::NOT_AUTHORIZED,
                "not authorized to store".into(),
            )));
        }
    }
    let fill = ctx.move_arrivals.as_ref().and_then(|a| a.fill_for(rq));
    if let Some(fill) = fill {
        return Ok(receive_into_fill(&fill, assoc, context_id, rq, &pc)
            .await?
            .map(|()| Stored::Filled));
    }
    Ok(
        receive_instance(&ctx.blobs, ctx.index.as_ref(), assoc, context_id, rq, &pc)
            .await?
            .map(|ok| Stored::Durable(ok.status, ok.record)),
    )
}

/// Receive the data set of a C-STORE-RQ from `assoc` and make it durable and indexed
/// (PS3.4 B.2.3 statuses). Outer `Err`: the association is broken; inner: this instance
/// failed.
pub(crate) async fn receive_instance(
    blobs: &crate::store::BlobStore,
    index: &dyn crate::store::Index,
    assoc: &mut Association,
    context_id: u8,
    rq: &CommandSet,
    pc: &crate::dimse::association::PresentationContext,
) -> Result<Result<Ingested, Failure>, AssociationError> {
    let blob = match receive_blob(blobs, assoc, context_id, rq, pc).await? {
        Ok(blob) => blob,
        Err(failure) => return Ok(Err(failure)),
    };
    Ok(persist(blobs, index, blob, expected(rq))
        .await
        .map_err(|f| Failure(f.status, f.reason)))
}
