//! Storage SOP classes as SCP (PS3.4 Annex B).
//!
//! The data set streams from the association behind a Part 10 header into the core's ingest
//! path (`core::ingest`, shared with STOW-RS): fsynced, parsed up to Pixel Data for
//! indexing, renamed into place and indexed, and only then acknowledged — in a group commit
//! with what the other associations store meanwhile (`store::ingest::Committer`). Any
//! failure on the way leaves nothing half-written, and a re-sent instance replaces the old
//! one once the new version is durable and indexed (a key of its own, index upsert). Each C-STORE is decided as it arrives; the association's stores share one
//! audit record ([`Stores`]).
//!
//! One exception: a sub-operation of one of our own C-MOVEs, named by its Move Originator
//! fields (see [`MoveArrivals`](crate::dimse::receive::MoveArrivals)), is a copy of what
//! the PACS holds. It goes into that retrieve's cache fill like a C-GET sub-operation:
//! acknowledged once its data set is in, stored behind it without fsync, indexed and made
//! durable by the retrieve, which counts it only then.

use super::ScpContext;
use crate::core::{Incoming, Refusal, Stores};
use crate::dimse::association::PresentationContext;
use crate::dimse::command::{CommandField, CommandSet};
use crate::dimse::receive::{
    drain_data_set, expected, header_for, next_fragment, receive_into_fill, Failure,
};
use crate::dimse::status::code;
use crate::dimse::{Association, AssociationError};
use crate::model::InstanceLocation;

pub async fn handle(
    ctx: &ScpContext,
    assoc: &mut Association,
    context_id: u8,
    rq: &CommandSet,
    stores: &mut Stores,
) -> Result<(), AssociationError> {
    let result = store(ctx, assoc, context_id, rq, stores).await?;
    let mut rsp;
    match result {
        Ok(Stored::Durable(status, location)) => {
            // Maybe a sub-operation of one of our C-MOVEs whose PACS left out the Move
            // Originator: hand it to the retrieve waiting for it; the response waits until
            // that retrieve took it (back-pressure to the PACS).
            if let Some(arrivals) = &ctx.move_arrivals {
                arrivals.stored(rq.move_originator_id, location).await;
            }
            stores.stored();
            rsp = CommandSet::response_to(rq, CommandField::CStoreRsp, status);
        }
        Ok(Stored::Filled) => {
            // Counted; its patient and study are in the audit record of the retrieve.
            stores.stored();
            rsp = CommandSet::response_to(rq, CommandField::CStoreRsp, code::SUCCESS);
        }
        Err(Failure(status, comment)) => {
            stores.failed();
            tracing::warn!(peer = %assoc.peer, sop = ?rq.affected_sop_instance, status, %comment, "C-STORE failed");
            rsp = CommandSet::response_to(rq, CommandField::CStoreRsp, status);
            rsp.error_comment = Some(comment);
        }
    }
    assoc.send_command(context_id, &rsp).await
}

/// How an instance was taken in.
enum Stored {
    /// Durable and indexed: the status (success or warning) and where it is.
    Durable(u16, InstanceLocation),
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
    stores: &mut Stores,
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
    let ticket = match stores.admit() {
        Ok(ticket) => ticket,
        // Fail closed (audit trail not writable): refused as out of resources, so the
        // sender tries again later (PS3.4 B.2.3: A7xx).
        Err(Refusal::Unavailable(why)) => {
            drain_data_set(assoc).await?;
            return Ok(Err(Failure(code::OUT_OF_RESOURCES, why)));
        }
        Err(_) => {
            drain_data_set(assoc).await?;
            return Ok(Err(Failure(
                code::NOT_AUTHORIZED,
                "not authorized to store".into(),
            )));
        }
    };
    let fill = ctx.move_arrivals.as_ref().and_then(|a| a.fill_for(rq));
    if let Some(fill) = fill {
        return Ok(receive_into_fill(&fill, assoc, context_id, rq, &pc)
            .await?
            .map(|()| Stored::Filled));
    }
    let incoming = match receive_incoming(ctx, assoc, context_id, rq, &pc).await? {
        Ok(incoming) => incoming,
        Err(failure) => return Ok(Err(failure)),
    };
    Ok(ctx
        .core
        .ingest(ticket, incoming, expected(rq))
        .await
        .map(|stored| Stored::Durable(stored.status, stored.location))
        .map_err(|f| Failure(f.status, f.reason)))
}

/// Receive the data set of a C-STORE-RQ behind a Part 10 header into a new instance of the
/// core's. Outer `Err`: the association is broken (the instance is dropped, and nothing of
/// it stays); inner: this instance failed, the association goes on.
async fn receive_incoming(
    ctx: &ScpContext,
    assoc: &mut Association,
    context_id: u8,
    rq: &CommandSet,
    pc: &PresentationContext,
) -> Result<Result<Incoming, Failure>, AssociationError> {
    let header = match header_for(assoc, rq, pc) {
        Ok(h) => h,
        Err(failure) => {
            drain_data_set(assoc).await?;
            return Ok(Err(failure));
        }
    };
    let mut incoming = match ctx.core.incoming().await {
        Ok(i) => i,
        Err(f) => {
            drain_data_set(assoc).await?;
            return Ok(Err(Failure(f.status, f.reason)));
        }
    };
    let mut write_error = incoming.push(header.into()).await.err();
    loop {
        let (data, is_last) = next_fragment(assoc, context_id).await?;
        if write_error.is_none() {
            write_error = incoming.push(data).await.err();
        }
        if is_last {
            break;
        }
    }
    if let Some(f) = write_error {
        incoming.abort().await;
        return Ok(Err(Failure(f.status, f.reason)));
    }
    Ok(Ok(incoming))
}
