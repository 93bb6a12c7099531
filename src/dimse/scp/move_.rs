//! Query/Retrieve C-MOVE as SCP (PS3.4 C.4.2): the selected instances go by C-STORE over a
//! new association to a configured destination AE, with a pending response after each
//! sub-operation and C-CANCEL checked between them.

use super::retrieve::{self, selection_from, SubOps};
use super::ScpContext;
use crate::dimse::command::{CommandField, CommandSet};
use crate::dimse::dataset;
use crate::dimse::scu::{self, send_stored, ScuOptions, SendError};
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
        let mut rsp = CommandSet::response_to(rq, CommandField::CMoveRsp, status);
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
    let destination = rq.move_destination.clone().unwrap_or_default();
    // PS3.4 C.4.2.1.5: A801 when the destination is not a known AE.
    let Some(peer) = ctx.config.peer(&destination).cloned() else {
        ctx.trust
            .audit(
                caller,
                Operation::Move,
                Outcome {
                    result: "failure".into(),
                    detail: format!("unknown destination {destination:?}"),
                    ..Default::default()
                },
            )
            .await;
        return assoc
            .send_command(
                context_id,
                &fail(code::MOVE_DESTINATION_UNKNOWN, "move destination unknown"),
            )
            .await;
    };
    let decision = ctx.trust.decide_before_data(caller, Operation::Move).await;
    if !decision.is_permit() {
        ctx.trust
            .audit(
                caller,
                Operation::Move,
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
            tracing::error!(error = %e, "C-MOVE index lookup failed");
            return assoc
                .send_command(
                    context_id,
                    &fail(code::OUT_OF_RESOURCES_MATCHES, "index unavailable"),
                )
                .await;
        }
    };
    if let Some(refusal) = super::retrieve::patients_refused(&ctx.trust, caller, &instances).await {
        ctx.trust.audit(caller, Operation::Move, refusal).await;
        return assoc
            .send_command(context_id, &fail(code::NOT_AUTHORIZED, "not authorized"))
            .await;
    }
    let mut counts = SubOps::new(instances.len());
    let mut cancelled = false;
    let message_id = rq.message_id.unwrap_or(0);
    if !instances.is_empty() {
        let mut opts = ScuOptions::new(
            &peer.host,
            peer.port,
            &ctx.config.dimse.ae_title,
            &peer.ae_title,
        );
        opts.link = ctx.link.clone();
        if peer.certificate_sha256.is_some() {
            // A destination pinned to a certificate talks DICOM TLS both ways (PS3.15 B.1).
            opts.tls = ctx.tls.peer_client();
            opts.require_tls = true;
        }
        let contexts = scu::send::propose_for(
            instances
                .iter()
                .map(|i| (i.sop_class_uid.clone(), i.transfer_syntax_uid.clone())),
        );
        match scu::connect(&opts, &contexts).await {
            Err(e) => {
                tracing::warn!(destination, error = %e, "cannot open association to move destination");
                let uids: Vec<String> = instances
                    .iter()
                    .map(|i| i.sop_instance_uid.clone())
                    .collect();
                counts.fail_remaining(&uids);
            }
            Ok(mut sub) => {
                let mut lost = false;
                for (n, instance) in instances.iter().enumerate() {
                    if assoc.cancel_requested(message_id)? {
                        cancelled = true;
                        break;
                    }
                    let originator = Some((assoc.calling_ae.as_str(), message_id));
                    match send_stored(&mut sub, &ctx.blobs, instance, originator).await {
                        Ok(sent) => counts.record(&instance.sop_instance_uid, Some(sent.status)),
                        Err(SendError::Association(e)) => {
                            tracing::warn!(destination, error = %e, "move destination association lost");
                            let rest: Vec<String> = instances[n..]
                                .iter()
                                .map(|i| i.sop_instance_uid.clone())
                                .collect();
                            counts.fail_remaining(&rest);
                            lost = true;
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(sop = %instance.sop_instance_uid, error = %e, "C-MOVE sub-operation failed");
                            counts.record(&instance.sop_instance_uid, None);
                        }
                    }
                    if counts.remaining > 0 {
                        assoc
                            .send_command(context_id, &counts.pending(rq, CommandField::CMoveRsp))
                            .await?;
                    }
                }
                if !lost {
                    let _ = sub.release().await;
                }
            }
        }
    }
    retrieve::send_final(
        assoc,
        context_id,
        &pc.transfer_syntax,
        rq,
        CommandField::CMoveRsp,
        &counts,
        cancelled,
    )
    .await?;
    let outcome = retrieve::outcome(
        &instances,
        &counts,
        cancelled,
        &format!("to {destination}: "),
    );
    ctx.trust.audit(caller, Operation::Move, outcome).await;
    assoc.instances_sent = assoc
        .instances_sent
        .saturating_add(u32::from(counts.completed));
    Ok(())
}
