//! A real C-GET (PS3.4 C.4.3) and C-MOVE (PS3.4 C.4.2) of one instance into the store.

use super::association::negotiate;
use super::report::*;
use super::{rejected_context, timed_out, within, ProbeOptions};
use crate::dimse::negotiate::ProposedContext;
use crate::dimse::scu::native_syntaxes;
use crate::dimse::sop;
use crate::dimse::status::{self, Category};
use crate::model::{InstanceLocation, Selection};
use crate::pacs::fetch::{self, FetchReport, Sink};
use crate::pacs::{Pacs, PacsError};
use crate::store::{BlobStore, Index};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------------------------------------
// Retrieves

pub(super) struct Store<'a> {
    pub(super) blobs: &'a BlobStore,
    pub(super) index: &'a dyn Index,
}

#[derive(Clone, Copy)]
enum Retrieve {
    Get { compressed: bool },
    Move,
}

/// Run a retrieve within `limit`, taking what it hands on; on timeout, cancel it (C-CANCEL)
/// and give it a few seconds to end. `None`: it did not end in time.
async fn retrieve(
    pacs: &Pacs,
    store: &Store<'_>,
    selection: &Selection,
    how: Retrieve,
    limit: Duration,
) -> (
    Option<Result<FetchReport, PacsError>>,
    Vec<InstanceLocation>,
) {
    let (tx, mut rx) = mpsc::channel(4);
    let cancel = CancellationToken::new();
    let mut arrived = Vec::new();
    let sink = Sink {
        blobs: store.blobs,
        index: store.index,
        out: &tx,
        cancel: &cancel,
    };
    let fut = async {
        match how {
            Retrieve::Get { compressed } => fetch::get(pacs, selection, compressed, &sink).await,
            Retrieve::Move => fetch::move_(pacs, selection, &sink).await,
        }
    };
    tokio::pin!(fut);
    let deadline = tokio::time::sleep(limit);
    tokio::pin!(deadline);
    let result = loop {
        tokio::select! {
            r = &mut fut => break Some(r),
            Some(a) = rx.recv() => arrived.push(a.loc),
            _ = &mut deadline => break None,
        }
    };
    if result.is_none() {
        // C-CANCEL, and a few seconds for the PACS's final response.
        cancel.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                tokio::select! {
                    _ = &mut fut => break,
                    Some(a) = rx.recv() => arrived.push(a.loc),
                }
            }
        })
        .await;
    }
    while let Ok(arrival) = rx.try_recv() {
        arrived.push(arrival.loc);
    }
    (result, arrived)
}

fn describe(selection: &Selection) -> String {
    match (
        selection.sop_instance_uids.first(),
        selection.study_uids.first(),
    ) {
        (Some(sop), _) => format!("SOPInstanceUID={sop}"),
        (None, Some(study)) => format!("StudyInstanceUID={study}"),
        (None, None) => "-".into(),
    }
}

fn retrieved(report: &FetchReport, arrived: &[InstanceLocation]) -> Retrieved {
    Retrieved {
        status: report.status,
        completed: report.completed,
        failed: report.failed,
        warning: report.warning,
        received: report.received,
        transfer_syntax: arrived.first().map(|l| Syntax::of(&l.transfer_syntax_uid)),
    }
}

fn counts(report: &FetchReport) -> String {
    format!(
        "final {}: {} completed, {} failed, {} warning; {} received",
        status::describe(report.status),
        report.completed,
        report.failed,
        report.warning,
        report.received
    )
}

fn delivered(report: &FetchReport) -> bool {
    matches!(
        status::category(report.status),
        Category::Success | Category::Warning
    ) && report.failed == 0
        && report.received > 0
}

pub(super) async fn check_get(
    pacs: &Pacs,
    store: &Store<'_>,
    selection: Option<&Selection>,
    options: &ProbeOptions,
    skip: Option<&str>,
) -> GetSection {
    let started = Instant::now();
    let mut section = GetSection {
        check: Check::new(Outcome::Skipped, "", started),
        selection: selection.map(describe),
        storage_role_accepted: None,
        retried_uncompressed: false,
        result: None,
    };
    if let Some(why) = skip {
        section.check.detail = why.to_string();
        return section;
    }
    // Is the C-GET model offered, and our SCP role for storage (PS3.7 D.3.3.4)?
    let proposed = [
        ProposedContext {
            abstract_syntax: sop::STUDY_ROOT_GET.into(),
            transfer_syntaxes: native_syntaxes(),
            we_are_scp: false,
        },
        ProposedContext {
            abstract_syntax: CT_IMAGE_STORAGE.into(),
            transfer_syntaxes: native_syntaxes(),
            we_are_scp: true,
        },
    ];
    match within(options.check_timeout, negotiate(pacs, &proposed)).await {
        Some(Ok(n)) if n.accepted[0].is_none() => {
            section.check = Check::new(
                Outcome::NotSupported,
                "Study Root C-GET not offered (presentation context rejected)",
                started,
            );
            return section;
        }
        Some(Ok(n)) => {
            section.storage_role_accepted =
                Some(n.scp_roles.iter().any(|c| c == CT_IMAGE_STORAGE) && n.accepted[1].is_some())
        }
        Some(Err(_)) | None => {}
    }
    let Some(selection) = selection else {
        section.check.detail = "no instance to retrieve (C-FIND found none)".into();
        return section;
    };
    let limit = options.check_timeout;
    let how = Retrieve::Get { compressed: true };
    let (mut result, mut arrived) = retrieve(pacs, store, selection, how, limit).await;
    if let Some(Ok(r)) = &result {
        if r.compressed_failed {
            section.retried_uncompressed = true;
            let how = Retrieve::Get { compressed: false };
            (result, arrived) = retrieve(pacs, store, selection, how, limit).await;
        }
    }
    section.check = match result {
        None => Check::new(Outcome::Failed, timed_out(limit), started),
        Some(Err(e)) if rejected_context(&e) => Check::new(
            Outcome::NotSupported,
            "Study Root C-GET not offered (presentation context rejected)",
            started,
        ),
        Some(Err(e)) => Check::new(Outcome::Failed, e.to_string(), started),
        Some(Ok(r)) => {
            section.result = Some(retrieved(&r, &arrived));
            let mut detail = counts(&r);
            if let Some(ts) = arrived.first() {
                detail.push_str(&format!(
                    "; sent as {}",
                    Syntax::of(&ts.transfer_syntax_uid)
                ));
            }
            let outcome = if !delivered(&r) {
                Outcome::Failed
            } else if section.retried_uncompressed {
                detail.push_str(
                    "; the first attempt failed every instance in the compressed syntaxes \
                     it had accepted, the retry with uncompressed syntaxes worked",
                );
                Outcome::Warning
            } else {
                Outcome::Ok
            };
            Check::new(outcome, detail, started)
        }
    };
    section
}

pub(super) async fn check_move(
    pacs: &Pacs,
    store: &Store<'_>,
    selection: Option<&Selection>,
    options: &ProbeOptions,
    skip: Option<&str>,
) -> MoveSection {
    let started = Instant::now();
    let mut section = MoveSection {
        check: Check::new(Outcome::Skipped, "", started),
        selection: selection.map(describe),
        destination: pacs.our_ae.clone(),
        destination_known: None,
        move_originator: None,
        without_originator: None,
        final_waits: None,
        result: None,
    };
    if let Some(why) = skip.or(options.skip_move.as_deref()) {
        section.check.detail = why.to_string();
        return section;
    }
    let Some(selection) = selection else {
        section.check.detail = "no instance to retrieve (C-FIND found none)".into();
        return section;
    };
    let limit = options.check_timeout;
    let (mut result, mut arrived) = retrieve(pacs, store, selection, Retrieve::Move, limit).await;
    // A final response seen before a sub-operation that was already acknowledged can be a
    // scheduling accident here; it counts when a second C-MOVE shows it too.
    if let Some(Ok(first)) = &result {
        if first.final_before_subops && delivered(first) {
            let (again, more) = retrieve(pacs, store, selection, Retrieve::Move, limit).await;
            if let Some(Ok(second)) = &again {
                if delivered(second) && !second.final_before_subops {
                    (result, arrived) = (again, more);
                }
            }
        }
    }
    let ours = options
        .our_address
        .as_deref()
        .map(|a| format!(" at {a}"))
        .unwrap_or_default();
    section.check = match result {
        None if arrived.is_empty() => Check::new(
            Outcome::Failed,
            format!(
                "{}; nothing arrived at our Storage SCP (does the PACS know {}{ours}?)",
                timed_out(limit),
                pacs.our_ae
            ),
            started,
        ),
        None => Check::new(Outcome::Failed, timed_out(limit), started),
        Some(Err(e)) if rejected_context(&e) => Check::new(
            Outcome::NotSupported,
            "Study Root C-MOVE not offered (presentation context rejected)",
            started,
        ),
        Some(Err(e)) => Check::new(
            Outcome::Failed,
            format!(
                "{e} (the sub-operations did not reach us: does the PACS know {}{ours}?)",
                pacs.our_ae
            ),
            started,
        ),
        Some(Ok(r)) if r.status == 0xA801 => {
            section.destination_known = Some(false);
            section.result = Some(retrieved(&r, &arrived));
            Check::new(
                Outcome::Failed,
                format!(
                    "refused: {}: register AE {}{ours} at the PACS",
                    status::describe(r.status),
                    pacs.our_ae
                ),
                started,
            )
        }
        Some(Ok(r)) => {
            section.destination_known = Some(true);
            section.result = Some(retrieved(&r, &arrived));
            let mut detail = counts(&r);
            if let Some(ts) = arrived.first() {
                detail.push_str(&format!(
                    "; sent as {}",
                    Syntax::of(&ts.transfer_syntax_uid)
                ));
            }
            let mut outcome = Outcome::Failed;
            if delivered(&r) {
                outcome = Outcome::Ok;
                section.without_originator = Some(r.without_originator);
                section.move_originator = Some(r.without_originator == 0);
                section.final_waits = Some(!r.final_before_subops);
                if r.without_originator > 0 {
                    outcome = Outcome::Warning;
                    detail.push_str("; no Move Originator in the sub-operations");
                }
                if r.final_before_subops {
                    outcome = Outcome::Warning;
                    detail.push_str("; final response before the sub-operations arrived");
                }
            } else if r.received == 0 && r.failed > 0 {
                detail.push_str("; every sub-operation failed on the PACS's side");
            }
            Check::new(outcome, detail, started)
        }
    };
    section
}
