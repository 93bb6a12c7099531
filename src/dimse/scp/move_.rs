//! Query/Retrieve C-MOVE as SCP (PS3.4 C.4.2): the selected instances go by C-STORE over a
//! new association to a configured destination AE, with a pending response after each
//! sub-operation and C-CANCEL checked between them.

use super::retrieve::{self, selection_from, SubOps};
use super::ScpContext;
use crate::core::{CoreError, Delivery, InstanceLocation, Retrieval};
use crate::dimse::command::{CommandField, CommandSet};
use crate::dimse::dataset;
use crate::dimse::scu::{self, send_file, ScuOptions, SendError};
use crate::dimse::sop;
use crate::dimse::status::code;
use crate::dimse::{Association, AssociationError};
use crate::trust::{Caller, Operation};
use std::collections::VecDeque;

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
    let ticket = match ctx.core.admit(caller, Operation::Move).await {
        Ok(t) => t,
        Err(e) => {
            let (status, comment) = retrieve::status_of(&e, CommandField::CMoveRsp);
            return assoc
                .send_command(context_id, &fail(status, &comment))
                .await;
        }
    };
    // PS3.4 C.4.2.1.5: A801 when the destination is not a known AE.
    let Some(peer) = ctx.config.peer(&destination).cloned() else {
        ticket
            .finish("failure", format!("unknown destination {destination:?}"))
            .await;
        return assoc
            .send_command(
                context_id,
                &fail(code::MOVE_DESTINATION_UNKNOWN, "move destination unknown"),
            )
            .await;
    };
    let mut retrieval = match ctx
        .core
        .retrieve(ticket, selection, Delivery::Streamed)
        .await
    {
        Ok(r) => r,
        // Nothing selected: a C-MOVE with no sub-operations (audited by the core).
        Err(CoreError::NotFound(_)) => {
            let counts = SubOps::new(0);
            return retrieve::send_final(
                assoc,
                context_id,
                &pc.transfer_syntax,
                rq,
                CommandField::CMoveRsp,
                &counts,
                false,
            )
            .await;
        }
        Err(e) => {
            let (status, comment) = retrieve::status_of(&e, CommandField::CMoveRsp);
            return assoc
                .send_command(context_id, &fail(status, &comment))
                .await;
        }
    };
    let from_cache = retrieval.from == "cache";
    let mut counts = SubOps::new(retrieval.expected as usize);
    let mut cancelled = false;
    let message_id = rq.message_id.unwrap_or(0);
    // From the cache every instance is known now: the sub-association proposes exactly what
    // they need. A fetch is sent on as it arrives: the first instance, and the common
    // storage classes uncompressed, are proposed.
    let mut queue: VecDeque<InstanceLocation> = VecDeque::new();
    let first = match from_cache {
        true => retrieval.instances.rest().await,
        false => retrieval
            .instances
            .next_batch()
            .await
            .unwrap_or(Ok(Vec::new())),
    };
    match first {
        Ok(batch) => queue.extend(batch),
        Err(e) => {
            tracing::warn!(error = %e, "C-MOVE retrieve ended early");
            counts.fail_remaining(&[]);
        }
    }
    retrieval.ticket.touch(queue.make_contiguous());
    if !queue.is_empty() {
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
        let mut pairs: Vec<(String, String)> = queue
            .iter()
            .map(|i| (i.sop_class_uid.clone(), i.transfer_syntax_uid.clone()))
            .collect();
        if !from_cache {
            pairs.extend(
                sop::COMMON_STORAGE
                    .iter()
                    .map(|c| (c.to_string(), sop::EXPLICIT_VR_LE.to_string())),
            );
        }
        let contexts = scu::send::propose_for(pairs);
        match scu::connect(&opts, &contexts).await {
            Err(e) => {
                tracing::warn!(destination, error = %e, "cannot open association to move destination");
                let uids: Vec<String> = queue.iter().map(|i| i.sop_instance_uid.clone()).collect();
                counts.fail_remaining(&uids);
            }
            Ok(mut sub) => {
                let mut lost = false;
                loop {
                    let instance = match queue.pop_front() {
                        Some(i) => i,
                        None => match retrieval.instances.next_batch().await {
                            Some(Ok(batch)) => {
                                retrieval.ticket.touch(&batch);
                                queue.extend(batch);
                                continue;
                            }
                            Some(Err(e)) => {
                                tracing::warn!(error = %e, "C-MOVE retrieve ended early");
                                counts.fail_remaining(&[]);
                                break;
                            }
                            None => break,
                        },
                    };
                    if assoc.cancel_requested(message_id)? {
                        cancelled = true;
                        break;
                    }
                    let originator = Some((assoc.calling_ae.as_str(), message_id));
                    match send_file(
                        &mut sub,
                        ctx.core.stored().local_file(&instance).path(),
                        originator,
                    )
                    .await
                    {
                        Ok(sent) => counts.record(&instance.sop_instance_uid, Some(sent.status)),
                        Err(SendError::Association(e)) => {
                            tracing::warn!(destination, error = %e, "move destination association lost");
                            let rest: Vec<String> = std::iter::once(&instance)
                                .chain(queue.iter())
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
    // A fetch stops when its last follower goes: C-CANCEL toward the PACS on a cancel.
    let Retrieval {
        instances,
        ticket,
        from,
        ..
    } = retrieval;
    drop(instances);
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
    let detail = retrieve::detail_of(&counts, &format!("to {destination}: "), from);
    ticket
        .finish(retrieve::result_of(&counts, cancelled), detail)
        .await;
    assoc.instances_sent = assoc
        .instances_sent
        .saturating_add(u32::from(counts.completed));
    Ok(())
}
