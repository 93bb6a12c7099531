//! Query/Retrieve C-GET as SCP (PS3.4 C.4.3): the selected instances go back as C-STORE
//! sub-operations on the same association, on contexts where the requestor took the SCP role.

use super::retrieve::{self, selection_from, SubOps};
use super::ScpContext;
use crate::dimse::command::{CommandField, CommandSet};
use crate::dimse::dataset;
use crate::dimse::scu::{send_stored, SendError};
use crate::dimse::status::code;
use crate::dimse::{Association, AssociationError};
use crate::trust::{Caller, Decision, Operation, Outcome};

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
    let fail = |status: u16, comment: &str| {
        let mut rsp = CommandSet::response_to(rq, CommandField::CGetRsp, status);
        rsp.error_comment = Some(comment.to_string());
        rsp
    };
    if !rq.has_data_set {
        return assoc
            .send_command(context_id, &fail(code::CANNOT_UNDERSTAND, "no identifier"))
            .await;
    }
    let bytes = assoc
        .receive_data_set(context_id, super::find::MAX_IDENTIFIER)
        .await?;
    let selection = match dataset::decode(&bytes, &pc.transfer_syntax)
        .map_err(|e| (code::CANNOT_UNDERSTAND, e.to_string()))
        .and_then(|obj| selection_from(&obj))
    {
        Ok(s) => s,
        Err((status, comment)) => {
            return assoc
                .send_command(context_id, &fail(status, &comment))
                .await
        }
    };
    let decision = ctx.trust.decide_before_data(caller, Operation::Get).await;
    if !decision.is_permit() {
        ctx.trust
            .audit(
                caller,
                Operation::Get,
                Outcome {
                    result: "refused".into(),
                    ..Default::default()
                },
            )
            .await;
        // Fail closed (audit trail not writable): out of resources, try later (PS3.4
        // C.4.2.1.4 / C.4.3.1.4: A702).
        let (status, comment) = match &decision {
            Decision::Unavailable(why) => (code::OUT_OF_RESOURCES_SUBOPS, why.as_str()),
            _ => (code::NOT_AUTHORIZED, "not authorized"),
        };
        return assoc.send_command(context_id, &fail(status, comment)).await;
    }
    let instances = match ctx.index.locate(&selection).await {
        Ok(i) => i,
        Err(e) => {
            tracing::error!(error = %e, "C-GET index lookup failed");
            return assoc
                .send_command(
                    context_id,
                    &fail(code::OUT_OF_RESOURCES_MATCHES, "index unavailable"),
                )
                .await;
        }
    };
    if let Some(refusal) = super::retrieve::patients_refused(&ctx.trust, caller, &instances).await {
        ctx.trust.audit(caller, Operation::Get, refusal).await;
        return assoc
            .send_command(context_id, &fail(code::NOT_AUTHORIZED, "not authorized"))
            .await;
    }
    let message_id = rq.message_id.unwrap_or(0);
    let mut counts = SubOps::new(instances.len());
    let mut cancelled = false;
    for instance in &instances {
        // The cancel may arrive between sub-operations or while we wait for a C-STORE-RSP.
        if cancelled || assoc.cancel_requested(message_id)? {
            cancelled = true;
            break;
        }
        match send_stored(assoc, &ctx.blobs, instance, None).await {
            Ok(sent) => {
                counts.record(&instance.sop_instance_uid, Some(sent.status));
                cancelled = sent.cancel_for == Some(message_id);
            }
            Err(SendError::Association(e)) => return Err(e),
            Err(e) => {
                tracing::warn!(sop = %instance.sop_instance_uid, error = %e, "C-GET sub-operation failed");
                counts.record(&instance.sop_instance_uid, None);
            }
        }
        if counts.remaining > 0 && !cancelled {
            assoc
                .send_command(context_id, &counts.pending(rq, CommandField::CGetRsp))
                .await?;
        }
    }
    retrieve::send_final(
        assoc,
        context_id,
        &pc.transfer_syntax,
        rq,
        CommandField::CGetRsp,
        &counts,
        cancelled,
    )
    .await?;
    let outcome = retrieve::outcome(&instances, &counts, cancelled, "");
    ctx.trust.audit(caller, Operation::Get, outcome).await;
    assoc.instances_sent = assoc
        .instances_sent
        .saturating_add(u32::from(counts.completed));
    Ok(())
}
