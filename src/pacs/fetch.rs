//! Retrieves from the PACS into the store: C-GET (PS3.4 C.4.3), where the instances come back
//! as C-STORE sub-operations on our own association, and C-MOVE (PS3.4 C.4.2) to our own
//! Storage SCP. Each instance is made durable and indexed through the ingest path, then
//! handed to `out` before its sub-operation is acknowledged: `out` holds one instance, so a
//! consumer that falls behind holds the PACS back. A cancelled token sends C-CANCEL
//! (PS3.7 9.3.2.3 / 9.3.3.3) and the retrieve ends with the PACS's final response.

use super::{Pacs, PacsError};
use crate::dimse::association::{describe_event, AssociationError};
use crate::dimse::command::{CommandField, CommandSet};
use crate::dimse::dataset::{self, QUERY_RETRIEVE_LEVEL};
use crate::dimse::negotiate::ProposedContext;
use crate::dimse::scp::store::{expected, receive_blob, Failure};
use crate::dimse::status::code;
use crate::dimse::status::{self, Category};
use crate::dimse::{sop, Association, Event};
use crate::model::Selection;
use crate::store::ingest::{index_batch, store_blob_deferred, IngestFailure, Ingested};
use crate::store::InstanceRecord;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_object::InMemDicomObject;
use futures::stream::{FuturesOrdered, StreamExt};
use std::time::Duration;

// A fetch's report and sink are the core's, shared by every source.
pub use crate::core::source::{FetchReport, Sink};

/// The retrieve identifier for a selection (PS3.4 C.6.2.1 unique keys, Study Root).
pub fn identifier(selection: &Selection) -> InMemDicomObject {
    let mut obj = InMemDicomObject::new_empty();
    obj.put(DataElement::new(
        QUERY_RETRIEVE_LEVEL,
        VR::CS,
        PrimitiveValue::from(selection.level().code()),
    ));
    for (tag, list) in [
        (Tag(0x0020, 0x000D), &selection.study_uids),
        (Tag(0x0020, 0x000E), &selection.series_uids),
        (Tag(0x0008, 0x0018), &selection.sop_instance_uids),
    ] {
        if !list.is_empty() {
            obj.put(DataElement::new(
                tag,
                VR::UI,
                PrimitiveValue::Strs(list.iter().cloned().collect()),
            ));
        }
    }
    obj
}

/// Storage contexts for C-GET (we take the SCP role, PS3.7 D.3.3.4): per SOP class one
/// context per uncompressed syntax and, for image classes, per compressed syntax, so that the
/// PACS can send each instance as it holds it (a PACS picks the context whose syntax matches
/// the stored one; with both uncompressed syntaxes in one context it would convert). At most
/// 127 besides the model (PS3.8 9.3.2.2: 128 contexts): the last syntaxes are cut first.
pub fn storage_contexts(syntaxes: &[String], compressed: bool) -> Vec<ProposedContext> {
    let mut out = Vec::new();
    for ts in syntaxes
        .iter()
        .filter(|ts| sop::is_native_le(ts) || compressed)
    {
        let classes = sop::COMMON_STORAGE
            .iter()
            .filter(|c| sop::is_native_le(ts) || sop::is_image_storage(c));
        for class in classes {
            if out.len() >= 127 {
                return out;
            }
            out.push(ProposedContext {
                abstract_syntax: class.to_string(),
                transfer_syntaxes: vec![ts.clone()],
                we_are_scp: true,
            });
        }
    }
    out
}

fn model_context(model: &str) -> ProposedContext {
    ProposedContext {
        abstract_syntax: model.to_string(),
        transfer_syntaxes: crate::dimse::scu::native_syntaxes(),
        we_are_scp: false,
    }
}

fn cancel_rq(message_id: u16) -> CommandSet {
    let mut rq = CommandSet::new(CommandField::CCancelRq);
    rq.message_id_responded = Some(message_id);
    rq
}

/// Apply one C-GET/C-MOVE response to the report; true when it was the final one.
async fn response(
    assoc: &mut Association,
    context_id: u8,
    rsp: &CommandSet,
    report: &mut FetchReport,
) -> Result<bool, AssociationError> {
    if rsp.has_data_set {
        // Failed SOP Instance UID List (PS3.4 C.4.2.1.5): only counted here.
        assoc.receive_data_set(context_id, 16 * 1024 * 1024).await?;
    }
    if status::category(rsp.status()) == Category::Pending {
        return Ok(false);
    }
    report.status = rsp.status();
    report.completed = rsp.completed.unwrap_or(0);
    report.failed = rsp.failed.unwrap_or(0);
    report.warning = rsp.warning.unwrap_or(0);
    Ok(true)
}

/// C-GET the selection. With `compressed` false only uncompressed syntaxes are proposed
/// (the retry for a PACS that accepts compressed syntaxes and then cannot send them).
pub async fn get(
    pacs: &Pacs,
    selection: &Selection,
    compressed: bool,
    sink: &Sink<'_>,
) -> Result<FetchReport, PacsError> {
    let model = sop::STUDY_ROOT_GET;
    let mut contexts = vec![model_context(model)];
    contexts.extend(storage_contexts(&pacs.config.transfer_syntaxes, compressed));
    let mut conn = pacs
        .connect(&contexts)
        .await
        .map_err(|e| e.unsupported_as("C-GET (Study Root)"))?;
    let assoc = &mut conn.assoc;
    let err = |e: AssociationError| pacs.error(e);
    let Some(pc) = assoc.context_for(model, None).cloned() else {
        let _ = conn.release().await;
        return Err(PacsError::NotSupported("C-GET (Study Root)"));
    };
    let compressed_accepted = assoc
        .contexts
        .iter()
        .any(|c| c.requestor_is_scp && !sop::is_native_le(&c.transfer_syntax));
    let id = assoc.next_message_id();
    let bytes = dataset::encode(&identifier(selection), &pc.transfer_syntax)
        .map_err(|e| PacsError::Retrieve(e.to_string()))?;
    let rq = CommandSet::request(CommandField::CGetRq, id, model).with_data_set(true);
    assoc.send_command(pc.id, &rq).await.map_err(err)?;
    assoc.send_data(pc.id, &bytes).await.map_err(err)?;
    let mut report = FetchReport::default();
    let mut unindexed = Vec::new();
    // However the exchange ends, what was stored gets indexed.
    let exchanged = get_responses(assoc, &pc, id, sink, &mut report, &mut unindexed).await;
    index_pending(sink, &mut unindexed, &mut report).await;
    exchanged.map_err(err)?;
    let _ = conn.release().await;
    report.compressed_failed = compressed_accepted
        && report.received == 0
        && report.failed > 0
        && status::category(report.status) != Category::Cancel;
    finish(report, sink)
}

/// Sub-operations received and acknowledged whose instances are still being checked and
/// stored: the PACS sends the next ones meanwhile. Beyond this many the association is not
/// read, so back-pressure still reaches the PACS.
const IN_FLIGHT: usize = 4;

/// Instances stored but not yet indexed: a C-GET indexes them [`INDEX_BATCH`] at a time,
/// one transaction each, instead of one commit per instance.
const INDEX_BATCH: usize = 64;

/// The C-GET exchange after the request, until the final response and every instance
/// stored: each sub-operation's data set goes to a temp file and is acknowledged at once
/// (the PACS holds the original; an instance that then fails to store leaves the retrieve
/// incomplete, never a cached study counted whole), while up to [`IN_FLIGHT`] instances are
/// checked, stored (fsync deferred until the whole retrieve, see the driver), handed on in
/// order and queued for indexing. C-CANCEL is sent once the sink is cancelled.
async fn get_responses(
    assoc: &mut Association,
    pc: &crate::dimse::association::PresentationContext,
    id: u16,
    sink: &Sink<'_>,
    report: &mut FetchReport,
    unindexed: &mut Vec<InstanceRecord>,
) -> Result<(), AssociationError> {
    let mut storing = FuturesOrdered::new();
    let (mut cancel_sent, mut finished) = (false, false);
    loop {
        if finished && storing.is_empty() {
            return Ok(());
        }
        tokio::select! {
            biased;
            Some(stored) = storing.next(), if !storing.is_empty() => {
                hand_on(stored, sink, report, unindexed).await;
            }
            _ = sink.cancel.cancelled(), if !cancel_sent && !finished => {
                cancel_sent = true;
                assoc.send_command(pc.id, &cancel_rq(id)).await?;
            }
            event = assoc.next_event(), if !finished && storing.len() < IN_FLIGHT => match event? {
                Event::Command { context_id, command } if command.field == CommandField::CStoreRq => {
                    let received = receive(assoc, context_id, &command, sink).await?;
                    let status = received.as_ref().err().copied().unwrap_or(code::SUCCESS);
                    let rsp = CommandSet::response_to(&command, CommandField::CStoreRsp, status);
                    if let Ok(blob) = received {
                        let blobs = sink.blobs;
                        storing.push_back(async move {
                            let stored = store_blob_deferred(blobs, blob, expected(&command)).await;
                            (command.affected_sop_instance, stored)
                        });
                    }
                    assoc.send_command(context_id, &rsp).await?;
                }
                Event::Command { context_id, command } if command.field == CommandField::CGetRsp => {
                    finished = response(assoc, context_id, &command, report).await?;
                }
                other => {
                    return Err(AssociationError::Protocol(format!(
                        "unexpected {} during C-GET",
                        describe_event(&other)
                    )))
                }
            },
        }
    }
}

/// Receive one sub-operation's data set into a temp file; `Err` is the failure status.
async fn receive(
    assoc: &mut Association,
    context_id: u8,
    rq: &CommandSet,
    sink: &Sink<'_>,
) -> Result<Result<crate::store::PendingBlob, u16>, AssociationError> {
    let pc = assoc
        .context(context_id)
        .cloned()
        .ok_or_else(|| AssociationError::Protocol("no such context".into()))?;
    Ok(
        match receive_blob(sink.blobs, assoc, context_id, rq, &pc).await? {
            Ok(blob) => Ok(blob),
            Err(Failure(status, why)) => {
                tracing::warn!(sop = ?rq.affected_sop_instance, status, %why, "instance from PACS not received");
                Err(status)
            }
        },
    )
}

/// A stored instance goes to the consumer (waiting for it: back-pressure) and into the next
/// index batch; one that failed to store leaves the retrieve incomplete.
async fn hand_on(
    stored: (Option<String>, Result<Ingested, IngestFailure>),
    sink: &Sink<'_>,
    report: &mut FetchReport,
    unindexed: &mut Vec<InstanceRecord>,
) {
    match stored {
        (_, Ok(ingested)) => {
            report.received += 1;
            // The consumer went away: the instance is cached anyway; cancel follows.
            let _ = sink.out.send(ingested.record.location()).await;
            unindexed.push(ingested.record);
            if unindexed.len() >= INDEX_BATCH {
                index_pending(sink, unindexed, report).await;
            }
        }
        (sop, Err(f)) => {
            tracing::warn!(?sop, status = f.status, reason = %f.reason, "instance from PACS not stored");
            report.not_cached += 1;
        }
    }
}

/// Index the stored instances waiting for it; a failure counts them as failed.
async fn index_pending(
    sink: &Sink<'_>,
    unindexed: &mut Vec<InstanceRecord>,
    report: &mut FetchReport,
) {
    if let Err(e) = index_batch(sink.blobs, sink.index, unindexed).await {
        tracing::error!(reason = %e.reason, n = unindexed.len(), "cannot index instances from the PACS");
        report.not_cached += unindexed.len();
    }
    unindexed.clear();
}

/// C-MOVE the selection to our own Storage SCP, which hands each stored instance over
/// through the [`MoveHub`](super::moves::MoveHub). A final response that comes before all
/// sub-operations have arrived (some PACS send it early) is followed by waiting for the rest,
/// each within the configured gap.
pub async fn move_(
    pacs: &Pacs,
    selection: &Selection,
    sink: &Sink<'_>,
) -> Result<FetchReport, PacsError> {
    let model = sop::STUDY_ROOT_MOVE;
    let mut conn = pacs
        .connect(&[model_context(model)])
        .await
        .map_err(|e| e.unsupported_as("C-MOVE (Study Root)"))?;
    let err = |e: AssociationError| pacs.error(e);
    let gap = Duration::from_secs(pacs.config.move_gap_secs);
    let assoc = &mut conn.assoc;
    let Some(pc) = assoc.context_for(model, None).cloned() else {
        let _ = conn.release().await;
        return Err(PacsError::NotSupported("C-MOVE (Study Root)"));
    };
    // Unique across our associations, so the Move Originator Message ID names this C-MOVE.
    let id = pacs.next_message_id();
    let mut ticket = pacs.moves.expect(id, selection);
    let bytes = dataset::encode(&identifier(selection), &pc.transfer_syntax)
        .map_err(|e| PacsError::Retrieve(e.to_string()))?;
    let mut rq = CommandSet::request(CommandField::CMoveRq, id, model).with_data_set(true);
    rq.move_destination = Some(pacs.our_ae.clone());
    assoc.send_command(pc.id, &rq).await.map_err(err)?;
    assoc.send_data(pc.id, &bytes).await.map_err(err)?;
    let mut report = FetchReport::default();
    let (mut cancel_sent, mut finished) = (false, false);
    // Until the final response, and then until every reported sub-operation has arrived.
    while !finished || report.received < (report.completed + report.warning) as usize {
        if finished && cancel_sent {
            break;
        }
        tokio::select! {
            // Sub-operations first: one our SCP acknowledged may otherwise look late next
            // to a final response that came after it.
            biased;
            arrived = ticket.rx.recv() => {
                if let Some(arrival) = arrived {
                    report.received += 1;
                    report.without_originator += usize::from(!arrival.with_originator);
                    let _ = sink.out.send(arrival.loc).await;
                }
            }
            event = assoc.next_event(), if !finished => match event.map_err(err)? {
                Event::Command { context_id, command } if command.field == CommandField::CMoveRsp => {
                    finished = response(assoc, context_id, &command, &mut report).await.map_err(err)?;
                    report.final_before_subops = finished
                        && report.received < (report.completed + report.warning) as usize;
                }
                other => return Err(err(AssociationError::Protocol(format!(
                    "unexpected {} during C-MOVE",
                    describe_event(&other)
                )))),
            },
            _ = sink.cancel.cancelled(), if !cancel_sent => {
                cancel_sent = true;
                if !finished {
                    assoc.send_command(pc.id, &cancel_rq(id)).await.map_err(err)?;
                }
            }
            _ = tokio::time::sleep(gap), if finished => {
                return Err(PacsError::Retrieve(format!(
                    "C-MOVE reported {} sub-operations completed but only {} arrived within {}s",
                    report.completed + report.warning, report.received, gap.as_secs()
                )));
            }
        }
    }
    drop(ticket);
    let _ = conn.release().await;
    finish(report, sink)
}

/// A cancelled retrieve is an error (the partial study is not complete); otherwise the
/// report, whose status and counts the caller judges.
fn finish(report: FetchReport, sink: &Sink<'_>) -> Result<FetchReport, PacsError> {
    if status::category(report.status) == Category::Cancel || sink.cancel.is_cancelled() {
        return Err(PacsError::Cancelled);
    }
    Ok(report)
}
