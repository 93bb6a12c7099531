//! Query/Retrieve C-GET as SCP (PS3.4 C.4.3): the selected instances go back as C-STORE
//! sub-operations on the same association, on contexts where the requestor took the SCP role.

use super::retrieve::{self, SubOps, PROGRESS_EVERY};
use super::ScpContext;
use crate::core::{Delivery, Retrieval};
use crate::dimse::command::{CommandField, CommandSet};
use crate::dimse::scu::SendError;
use crate::dimse::{Association, AssociationError};
use crate::trust::{Caller, Operation};

pub async fn handle(
    ctx: &ScpContext,
    assoc: &mut Association,
    context_id: u8,
    rq: &CommandSet,
    caller: &Caller,
) -> Result<(), AssociationError> {
    let pc = assoc
        .context(context_id)
        .cloned()
        .ok_or_else(|| AssociationError::Protocol("no such context".into()))?;
    let Some(selection) = retrieve::read_selection(assoc, &pc, rq, CommandField::CGetRsp).await?
    else {
        return Ok(());
    };
    let message_id = rq.message_id.unwrap_or(0);
    let answered = match ctx.core.admit(caller, Operation::Get).await {
        Ok(ticket) => {
            ctx.core
                .retrieve(ticket, selection, Delivery::Streamed)
                .await
        }
        Err(e) => Err(e),
    };
    let mut retrieval = match answered {
        Ok(r) => r,
        Err(e) => {
            let ts = &pc.transfer_syntax;
            return retrieve::send_unstarted(assoc, context_id, ts, rq, CommandField::CGetRsp, &e)
                .await;
        }
    };
    let mut counts = SubOps::new(retrieval.expected as usize);
    let mut last_progress: Option<std::time::Instant> = None;
    let mut cancelled = false;
    'batches: while let Some(batch) = retrieval.instances.next_batch().await {
        let batch = match batch {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "C-GET retrieve ended early");
                counts.fail_remaining(&[]);
                break;
            }
        };
        retrieval.ticket.touch(&batch);
        for instance in &batch {
            // The cancel may arrive between sub-operations or while we wait for a C-STORE-RSP.
            // A C-CANCEL from the requestor, or the operator's cancel on the console.
            let operator = retrieval.sending.as_ref().is_some_and(|s| s.is_cancelled());
            if cancelled || operator || assoc.cancel_requested(message_id)? {
                cancelled = true;
                break 'batches;
            }
            let data_set = retrieval.instances.take_data_set(instance);
            match retrieve::send_instance(ctx, assoc, instance, data_set, None).await {
                Ok(sent) => {
                    counts.record(&instance.sop_instance_uid, Some(sent.status));
                    cancelled = sent.cancel_for == Some(message_id);
                    if let Some(sending) = &retrieval.sending {
                        sending.advance(1, instance.size_bytes);
                    }
                }
                Err(SendError::Association(e)) => return Err(e),
                Err(e) => {
                    tracing::warn!(sop = %instance.sop_instance_uid, error = %e, "C-GET sub-operation failed");
                    counts.record(&instance.sop_instance_uid, None);
                }
            }
            // The first pending response at once, then at most one per `PROGRESS_EVERY`.
            let due = last_progress.is_none_or(|at| at.elapsed() >= PROGRESS_EVERY);
            if counts.remaining > 0 && !cancelled && due {
                assoc
                    .send_command(context_id, &counts.pending(rq, CommandField::CGetRsp))
                    .await?;
                last_progress = Some(std::time::Instant::now());
            }
        }
    }
    // A fetch stops when its last follower goes: C-CANCEL toward the PACS on a cancel.
    let Retrieval {
        instances,
        ticket,
        from,
        sending,
        ..
    } = retrieval;
    drop(instances);
    let sent = retrieve::send_final(
        assoc,
        context_id,
        &pc.transfer_syntax,
        rq,
        CommandField::CGetRsp,
        &counts,
        cancelled,
    )
    .await;
    let detail = retrieve::detail_of(&counts, "", from);
    if let Some(sending) = sending {
        sending.finish(retrieve::failure_of(&counts, &detail));
    }
    sent?;
    ticket
        .finish(retrieve::result_of(&counts, cancelled), detail)
        .await;
    assoc.instances_sent = assoc
        .instances_sent
        .saturating_add(u32::from(counts.completed));
    Ok(())
}
