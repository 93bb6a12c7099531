//! Query/Retrieve C-MOVE as SCP (PS3.4 C.4.2): the selected instances go by C-STORE over a
//! new association to a configured destination AE, with a pending response after each
//! sub-operation and C-CANCEL checked between them.

use super::retrieve::{self, SubOps, PROGRESS_EVERY};
use super::ScpContext;
use crate::core::{Delivery, InstanceLocation, Retrieval};
use crate::dimse::command::{CommandField, CommandSet};
use crate::dimse::negotiate::ProposedContext;
use crate::dimse::scu::send::Fallback;
use crate::dimse::scu::{self, ScuOptions, SendError};
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
    let Some(selection) = retrieve::read_selection(assoc, &pc, rq, CommandField::CMoveRsp).await?
    else {
        return Ok(());
    };
    let fail = |status: u16, comment: &str| {
        retrieve::failure_response(rq, CommandField::CMoveRsp, status, comment)
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
        Err(e) => {
            let ts = &pc.transfer_syntax;
            return retrieve::send_unstarted(assoc, context_id, ts, rq, CommandField::CMoveRsp, &e)
                .await;
        }
    };
    if let Some(sending) = &retrieval.sending {
        sending.send_to(format!("{destination} (C-MOVE by {})", assoc.calling_ae));
    }
    let from_cache = retrieval.from == "cache";
    let mut counts = SubOps::new(retrieval.expected as usize);
    let mut last_progress: Option<std::time::Instant> = None;
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
        let pairs = queue
            .iter()
            .map(|i| (i.sop_class_uid.clone(), i.transfer_syntax_uid.clone()));
        // Each syntax as stored, and uncompressed for a destination that takes no other.
        let mut contexts = scu::send::propose_for_with(
            pairs,
            Fallback::for_retrieve(&ctx.config.dimse.wire_syntax),
        );
        if let Some(syntaxes) = &retrieval.source_syntaxes {
            // The rest arrive in the syntaxes the source may deliver, of the classes it
            // said it will deliver (or of every common class).
            let common: Vec<String>;
            let classes = match &retrieval.source_classes {
                Some(classes) => classes.as_slice(),
                None => {
                    common = sop::COMMON_STORAGE.iter().map(|c| c.to_string()).collect();
                    common.as_slice()
                }
            };
            contexts = streamed_contexts(contexts, syntaxes, classes);
        }
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
                    // A C-CANCEL from the requestor, or the operator's cancel on the console.
                    let operator = retrieval.sending.as_ref().is_some_and(|s| s.is_cancelled());
                    if operator || assoc.cancel_requested(message_id)? {
                        cancelled = true;
                        break;
                    }
                    let originator = Some((assoc.calling_ae.as_str(), message_id));
                    let data_set = retrieval.instances.take_data_set(&instance);
                    match retrieve::send_instance(ctx, &mut sub, &instance, data_set, originator)
                        .await
                    {
                        Ok(sent) => {
                            counts.record(&instance.sop_instance_uid, Some(sent.status));
                            if let Some(sending) = &retrieval.sending {
                                sending.advance(1, instance.size_bytes);
                            }
                        }
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
                    // Pending responses are optional progress reports (PS3.4 C.4.2.1.6):
                    // the first at once, then at most one per `PROGRESS_EVERY`, not one
                    // write and one wake-up of the requestor per sub-operation.
                    let due = last_progress.is_none_or(|at| at.elapsed() >= PROGRESS_EVERY);
                    if counts.remaining > 0 && due {
                        assoc
                            .send_command(context_id, &counts.pending(rq, CommandField::CMoveRsp))
                            .await?;
                        last_progress = Some(std::time::Instant::now());
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
        sending,
        ..
    } = retrieval;
    drop(instances);
    let sent = retrieve::send_final(
        assoc,
        context_id,
        &pc.transfer_syntax,
        rq,
        CommandField::CMoveRsp,
        &counts,
        cancelled,
    )
    .await;
    let detail = retrieve::detail_of(&counts, &format!("to {destination}: "), from);
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

/// The contexts of a sub-association opened before the instances are known (streamed from a
/// source): after `first` (for the instances at hand), for each syntax the rest may arrive
/// in, a context per common storage class (image classes only for compressed syntaxes),
/// one syntax each, so that each instance goes on as it arrived: with several syntaxes in
/// one context the destination picks one and the others would have to be converted, which
/// is impossible for compressed ones (PS3.8 9.3.2.2). At most 128 contexts: the last
/// syntaxes are cut first.
fn streamed_contexts(
    mut contexts: Vec<ProposedContext>,
    syntaxes: &[String],
    classes: &[String],
) -> Vec<ProposedContext> {
    for ts in syntaxes {
        let classes = classes
            .iter()
            .filter(|c| sop::is_native_le(ts) || sop::is_image_storage(c));
        for class in classes {
            let proposed = ProposedContext {
                abstract_syntax: class.to_string(),
                transfer_syntaxes: vec![ts.clone()],
                we_are_scp: false,
            };
            let known = contexts.iter().any(|c| {
                c.abstract_syntax == proposed.abstract_syntax
                    && c.transfer_syntaxes == proposed.transfer_syntaxes
            });
            if !known {
                contexts.push(proposed);
            }
        }
    }
    contexts.truncate(128);
    contexts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_contexts_propose_each_syntax_alone_and_at_most_128() {
        let first = scu::send::propose_for_with(
            [(
                sop::COMMON_STORAGE[0].to_string(),
                sop::RLE_LOSSLESS.to_string(),
            )],
            Fallback::Transcode(None),
        );
        let syntaxes: Vec<String> = [
            sop::EXPLICIT_VR_LE,
            sop::IMPLICIT_VR_LE,
            sop::JPEG_BASELINE,
            sop::JPEG_LOSSLESS_SV1,
            sop::RLE_LOSSLESS,
            sop::JPEG_2000_LOSSLESS,
            sop::JPEG_2000,
        ]
        .map(String::from)
        .to_vec();
        let common: Vec<String> = sop::COMMON_STORAGE.iter().map(|c| c.to_string()).collect();
        let contexts = streamed_contexts(first.clone(), &syntaxes, &common);
        assert_eq!(
            (&contexts[0].abstract_syntax, &contexts[0].transfer_syntaxes),
            (&first[0].abstract_syntax, &first[0].transfer_syntaxes),
            "the instance at hand first"
        );
        assert_eq!(contexts.len(), 128);
        // One syntax each, but for the uncompressed fallback of the instance at hand (issue 13).
        assert!(contexts.iter().all(
            |c| c.transfer_syntaxes.len() == 1 || c.transfer_syntaxes == scu::native_syntaxes()
        ));
        let has = |class: &str, ts: &str| {
            contexts
                .iter()
                .any(|c| c.abstract_syntax == class && c.transfer_syntaxes == [ts])
        };
        let (ct, sr) = (sop::COMMON_STORAGE[0], "1.2.840.10008.5.1.4.1.1.88.22");
        assert!(has(ct, sop::IMPLICIT_VR_LE) && has(ct, sop::JPEG_LOSSLESS_SV1));
        assert!(has(sr, sop::IMPLICIT_VR_LE));
        assert!(
            !has(sr, sop::RLE_LOSSLESS),
            "no compressed syntax without pixel data"
        );
        let rle_ct = contexts
            .iter()
            .filter(|c| c.abstract_syntax == ct && c.transfer_syntaxes == [sop::RLE_LOSSLESS])
            .count();
        assert_eq!(rle_ct, 1, "no duplicates");
    }
}
