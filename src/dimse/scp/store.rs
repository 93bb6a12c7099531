//! Storage SOP classes as SCP (PS3.4 Annex B).
//!
//! The data set streams from the association into a temp file behind a Part 10 header; it
//! is fsynced, parsed up to Pixel Data for indexing, renamed into place and indexed, and
//! only then acknowledged. Any failure on the way removes the temp file: nothing half-written
//! stays, and a re-sent instance replaces the old one (same key, index upsert).

use super::{drain_data_set, ScpContext};
use crate::dimse::command::{CommandField, CommandSet};
use crate::dimse::dataset::file_header;
use crate::dimse::status::code;
use crate::dimse::{Association, AssociationError, Event};
use crate::store::ingest::{persist, Expected, Ingested};
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

/// Why a store failed, as the C-STORE status and an error comment.
pub(crate) struct Failure(pub u16, pub String);

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
        Ok((status, record)) => {
            // A sub-operation of one of our C-MOVEs: hand it to the retrieve waiting for it;
            // the response waits until that retrieve took it (back-pressure to the PACS).
            if let Some(gateway) = &ctx.gateway {
                let loc = record.location();
                if let Some(tx) = gateway.pacs.moves.route(rq.move_originator_id, &loc) {
                    let with_originator = rq.move_originator_id.is_some();
                    let arrival = crate::pacs::moves::Arrival {
                        loc,
                        with_originator,
                    };
                    let _ = tx.send(arrival).await;
                }
            }
            tally.stored += 1;
            tally.patient_ids.insert(record.patient_id().to_string());
            tally
                .study_uids
                .insert(record.study_instance_uid().to_string());
            rsp = CommandSet::response_to(rq, CommandField::CStoreRsp, status);
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

/// Outer `Err`: the association is broken. Inner `Err`: this instance failed, the
/// association goes on.
async fn store(
    ctx: &ScpContext,
    assoc: &mut Association,
    context_id: u8,
    rq: &CommandSet,
    caller: &Caller,
) -> Result<Result<(u16, InstanceRecord), Failure>, AssociationError> {
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
    Ok(
        receive_instance(&ctx.blobs, ctx.index.as_ref(), assoc, context_id, rq, &pc)
            .await?
            .map(|ok| (ok.status, ok.record)),
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

/// What a C-STORE-RQ says about its instance, to check against the data set.
pub(crate) fn expected(rq: &CommandSet) -> Expected<'_> {
    Expected {
        sop_class: rq.affected_sop_class.as_deref(),
        sop_instance: rq.affected_sop_instance.as_deref(),
        study_uid: None,
    }
}

/// Receive the data set of a C-STORE-RQ into a temp file behind a Part 10 header (used by
/// the Storage SCP and by C-GET retrieves from the PACS).
pub(crate) async fn receive_blob(
    blobs: &crate::store::BlobStore,
    assoc: &mut Association,
    context_id: u8,
    rq: &CommandSet,
    pc: &crate::dimse::association::PresentationContext,
) -> Result<Result<crate::store::PendingBlob, Failure>, AssociationError> {
    let sop_class = rq.affected_sop_class.clone().unwrap_or_default();
    let sop_instance = rq.affected_sop_instance.clone().unwrap_or_default();
    let header = match file_header(
        &sop_class,
        &sop_instance,
        &pc.transfer_syntax,
        &assoc.calling_ae,
    ) {
        Ok(h) => h,
        Err(e) => {
            drain_data_set(assoc).await?;
            return Ok(Err(Failure(code::CANNOT_UNDERSTAND, e.to_string())));
        }
    };
    let mut blob = match blobs.begin().await {
        Ok(b) => b,
        Err(e) => {
            drain_data_set(assoc).await?;
            return Ok(Err(Failure(code::OUT_OF_RESOURCES, e.to_string())));
        }
    };
    // Receive: a dropped `blob` (association error) removes the temp file.
    let mut write_error = blob.write(&header).await.err();
    loop {
        match assoc.next_event().await? {
            Event::Data(pdv) => {
                if pdv.context_id != context_id {
                    return Err(AssociationError::Protocol(
                        "data set fragment on another context".into(),
                    ));
                }
                if write_error.is_none() {
                    write_error = blob.write(&pdv.data).await.err();
                }
                if pdv.is_last {
                    break;
                }
            }
            Event::Aborted => return Err(AssociationError::Aborted),
            other => {
                return Err(AssociationError::Protocol(format!(
                    "expected C-STORE data set, got {}",
                    crate::dimse::association::describe_event(&other)
                )))
            }
        }
    }
    if let Some(e) = write_error {
        blob.abort().await;
        return Ok(Err(Failure(
            code::OUT_OF_RESOURCES,
            format!("cannot write: {e}"),
        )));
    }
    Ok(Ok(blob))
}
