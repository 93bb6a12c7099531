//! Retrieves from the PACS into the store: C-GET (PS3.4 C.4.3), where the instances come back
//! as C-STORE sub-operations on our own association, and C-MOVE (PS3.4 C.4.2) to our own
//! Storage SCP. Each sub-operation's data set goes into the retrieve's cache fill
//! (`store::ingest::cache_fill`) and is acknowledged once it is in; the fill's thread writes,
//! checks and renames it behind, in order, and the retrieve hands each stored instance to
//! `out` and indexes it in batches, concurrently with the next transfer. The queues between
//! them are bounded and `out` holds one instance, so a consumer that falls behind holds the
//! PACS back. A cancelled token sends C-CANCEL (PS3.7 9.3.2.3 / 9.3.3.3) and the retrieve
//! ends with the PACS's final response.

use super::{Pacs, PacsError};
use crate::dimse::association::{describe_event, AssociationError};
use crate::dimse::command::{CommandField, CommandSet};
use crate::dimse::dataset::{self, QUERY_RETRIEVE_LEVEL};
use crate::dimse::negotiate::ProposedContext;
use crate::dimse::receive::{receive_into_fill, Failure};
use crate::dimse::status::code;
use crate::dimse::status::{self, Category};
use crate::dimse::{sop, Association, Event};
use crate::model::Selection;
use crate::store::ingest::{cache_fill, FillWriter, Filled};
use crate::store::InstanceRecord;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_object::InMemDicomObject;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::Instrument;

// A fetch's report and sink are the core's, shared by every source, and so is handing on
// and indexing what a cache fill stored.
use crate::core::source::{hand_on, index_behind, take_filled};
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
    let span = crate::telemetry::peer_call("C-GET", &pacs.config.ae_title);
    traced(get_untraced(pacs, selection, compressed, sink), span).await
}

/// Run a C-GET or C-MOVE in its span (`telemetry::peer_call`), marked failed on an error or
/// a failure status.
async fn traced(
    retrieve: impl std::future::Future<Output = Result<FetchReport, PacsError>>,
    span: tracing::Span,
) -> Result<FetchReport, PacsError> {
    let result = retrieve.instrument(span.clone()).await;
    let failed = match &result {
        Ok(report) => status::category(report.status) == Category::Failure,
        Err(_) => true,
    };
    if failed {
        crate::telemetry::failed(&span);
    }
    result
}

async fn get_untraced(
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
    let (fill, filled) = cache_fill(sink.blobs);
    let (to_index, indexing) = mpsc::unbounded_channel();
    // Three at once: the exchange with the PACS, handing on what the fill stored, and
    // indexing it. However the exchange ends, what was stored gets handed on and indexed.
    let (exchanged, (received, not_stored), not_indexed) = tokio::join!(
        get_responses(assoc, &pc, id, sink, fill, &mut report),
        take_filled(filled, sink, to_index),
        index_behind(sink, indexing),
    );
    report.received = received;
    report.not_cached = not_stored + not_indexed;
    exchanged.map_err(err)?;
    let _ = conn.release().await;
    report.compressed_failed = compressed_accepted
        && report.received == 0
        && report.failed > 0
        && status::category(report.status) != Category::Cancel;
    finish(report, sink)
}

/// The C-GET exchange after the request, until the final response: each sub-operation's
/// data set goes into the cache fill and is acknowledged once it is all there (the PACS
/// holds the original; an instance that then fails to store leaves the retrieve
/// incomplete, never a cached study counted whole). The fill's bounded queue is the
/// back-pressure: while it is full, the association is not read. C-CANCEL is sent once
/// the sink is cancelled. `fill` is dropped on return, which ends the fill once it has
/// stored what it was given.
async fn get_responses(
    assoc: &mut Association,
    pc: &crate::dimse::association::PresentationContext,
    id: u16,
    sink: &Sink<'_>,
    fill: FillWriter,
    report: &mut FetchReport,
) -> Result<(), AssociationError> {
    let mut cancel_sent = false;
    loop {
        tokio::select! {
            biased;
            _ = sink.cancel.cancelled(), if !cancel_sent => {
                cancel_sent = true;
                assoc.send_command(pc.id, &cancel_rq(id)).await?;
            }
            event = assoc.next_event() => match event? {
                Event::Command { context_id, command } if command.field == CommandField::CStoreRq => {
                    // One span per sub-operation (PS3.4 C.4.3.3: a C-STORE on this association).
                    let span = crate::telemetry::sub_operation("C-STORE");
                    let status = receive(assoc, context_id, &command, &fill)
                        .instrument(span.clone())
                        .await?;
                    span.record("dicom.status", status);
                    let rsp = CommandSet::response_to(&command, CommandField::CStoreRsp, status);
                    assoc.send_command(context_id, &rsp).await?;
                }
                Event::Command { context_id, command } if command.field == CommandField::CGetRsp => {
                    if response(assoc, context_id, &command, report).await? {
                        return Ok(());
                    }
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

/// Receive one sub-operation's data set into the cache fill; the C-STORE status to answer.
async fn receive(
    assoc: &mut Association,
    context_id: u8,
    rq: &CommandSet,
    fill: &FillWriter,
) -> Result<u16, AssociationError> {
    let pc = assoc
        .context(context_id)
        .cloned()
        .ok_or_else(|| AssociationError::Protocol("no such context".into()))?;
    Ok(
        match receive_into_fill(fill, assoc, context_id, rq, &pc).await? {
            Ok(()) => code::SUCCESS,
            Err(Failure(status, why)) => {
                tracing::warn!(sop = ?rq.affected_sop_instance, status, %why, "instance from PACS not received");
                status
            }
        },
    )
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
    let span = crate::telemetry::peer_call("C-MOVE", &pacs.config.ae_title);
    traced(move_untraced(pacs, selection, sink), span).await
}

async fn move_untraced(
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
    // The sub-operations that name this C-MOVE go into the fill, the others are stored by
    // the SCP and arrive on the ticket (see `MoveHub`).
    let (fill, mut filled) = cache_fill(sink.blobs);
    // What our SCP took in for this C-MOVE, stored yet or not: to tell a final response
    // that truly comes before its sub-operations from one that only overtook the fill.
    let acknowledged = fill.finished_count();
    let mut ticket = pacs.moves.expect_into(id, selection, &pacs.our_ae, fill);
    let bytes = dataset::encode(&identifier(selection), &pc.transfer_syntax)
        .map_err(|e| PacsError::Retrieve(e.to_string()))?;
    let mut rq = CommandSet::request(CommandField::CMoveRq, id, model).with_data_set(true);
    rq.move_destination = Some(pacs.our_ae.clone());
    assoc.send_command(pc.id, &rq).await.map_err(err)?;
    assoc.send_data(pc.id, &bytes).await.map_err(err)?;
    let mut report = FetchReport::default();
    let (to_index, indexing) = mpsc::unbounded_channel();
    let exchange = async {
        // Acknowledged by our SCP but not stored (failed the fill's checks).
        let mut not_stored = 0usize;
        // Sub-operations stored by the SCP and matched by their UIDs (no originator).
        let mut by_ticket = 0usize;
        let (mut cancel_sent, mut finished) = (false, false);
        // Until the final response, and then until every reported sub-operation has arrived.
        let result = loop {
            let reported = (report.completed + report.warning) as usize;
            if finished && (cancel_sent || report.received + not_stored >= reported) {
                break Ok(());
            }
            tokio::select! {
                // Sub-operations first: one our SCP acknowledged may otherwise look late next
                // to a final response that came after it.
                biased;
                Some(one) = filled.recv() => {
                    // A sub-operation of ours (PS3.4 C.4.2.3: a C-STORE our SCP took in),
                    // in a span of its own as it is handed on.
                    let span = crate::telemetry::sub_operation("C-STORE");
                    match take_moved(one, selection, sink, &to_index).instrument(span).await {
                        Taken::HandedOn => report.received += 1,
                        Taken::NotStored => not_stored += 1,
                        Taken::Foreign => {}
                    }
                }
                arrived = ticket.rx.recv() => {
                    if let Some(arrival) = arrived {
                        report.received += 1;
                        by_ticket += 1;
                        report.without_originator += usize::from(!arrival.with_originator);
                        let _ = sink.out.send(arrival.loc.into()).await;
                    }
                }
                event = assoc.next_event(), if !finished => match event {
                    Ok(Event::Command { context_id, command }) if command.field == CommandField::CMoveRsp => {
                        finished = match response(assoc, context_id, &command, &mut report).await {
                            Ok(f) => f,
                            Err(e) => break Err(err(e)),
                        };
                        let taken_in = acknowledged.get() as usize + by_ticket;
                        report.final_before_subops = finished
                            && taken_in < (report.completed + report.warning) as usize;
                    }
                    Ok(other) => break Err(err(AssociationError::Protocol(format!(
                        "unexpected {} during C-MOVE",
                        describe_event(&other)
                    )))),
                    Err(e) => break Err(err(e)),
                },
                _ = sink.cancel.cancelled(), if !cancel_sent => {
                    cancel_sent = true;
                    if !finished {
                        if let Err(e) = assoc.send_command(pc.id, &cancel_rq(id)).await {
                            break Err(err(e));
                        }
                    }
                }
                _ = tokio::time::sleep(gap), if finished => {
                    break Err(PacsError::Retrieve(format!(
                        "C-MOVE reported {} sub-operations completed but only {} arrived within {}s",
                        report.completed + report.warning, report.received, gap.as_secs()
                    )));
                }
            }
        };
        // No more sub-operations go into the fill; those it still holds (acknowledged, so
        // not in the PACS's counts if the exchange broke) are handed on and indexed too.
        drop(ticket);
        loop {
            tokio::select! {
                one = filled.recv() => match one {
                    Some(one) => {
                        if let Taken::HandedOn = take_moved(one, selection, sink, &to_index).await {
                            report.received += 1;
                        }
                    }
                    None => break,
                },
                _ = tokio::time::sleep(gap) => break,
            }
        }
        drop(to_index);
        (result, not_stored)
    };
    let ((result, not_stored), not_indexed) = tokio::join!(exchange, index_behind(sink, indexing));
    report.not_cached += not_stored + not_indexed;
    result?;
    let _ = conn.release().await;
    finish(report, sink)
}

/// What became of a sub-operation of our C-MOVE that went into the fill.
enum Taken {
    HandedOn,
    /// It failed the checks or could not be written.
    NotStored,
    /// Stored, but outside the selection: not ours after all (another system's C-MOVE to
    /// us with the same Message ID and no Move Originator AE title). Kept as an ordinary
    /// C-STORE: synced and indexed, not handed on.
    Foreign,
}

async fn take_moved(
    one: Filled,
    selection: &Selection,
    sink: &Sink<'_>,
    to_index: &mpsc::UnboundedSender<InstanceRecord>,
) -> Taken {
    let foreign = match &one.stored {
        Ok(ingested) if !selection.contains(&ingested.record.location()) => {
            Some(ingested.record.clone())
        }
        _ => None,
    };
    if let Some(record) = foreign {
        let (blobs, keys) = (sink.blobs.clone(), vec![record.blob_key.clone()]);
        match tokio::task::spawn_blocking(move || blobs.sync_blocking(&keys)).await {
            Ok(Ok(())) => {
                let _ = to_index.send(record);
            }
            Ok(Err(e)) => tracing::error!(error = %e, "cannot make a received instance durable"),
            Err(e) => tracing::error!(error = %e, "cannot make a received instance durable"),
        }
        return Taken::Foreign;
    }
    if hand_on(one, sink, to_index).await {
        Taken::HandedOn
    } else {
        Taken::NotStored
    }
}

/// A cancelled retrieve is an error (the partial study is not complete); otherwise the
/// report, whose status and counts the caller judges.
fn finish(report: FetchReport, sink: &Sink<'_>) -> Result<FetchReport, PacsError> {
    if status::category(report.status) == Category::Cancel || sink.cancel.is_cancelled() {
        return Err(PacsError::Cancelled);
    }
    Ok(report)
}
