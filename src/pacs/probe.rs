//! The capability probe (`beeldbrug probe`, and at start-up with `[pacs] probe_at_start`):
//! what the local PACS does of what gateway mode needs, one check at a time, as a report a
//! PACS vendor can read as an interoperability statement (text, or JSON for tools).
//!
//! Checks: association negotiation (the services and storage transfer syntaxes it accepts,
//! its maximum PDU and implementation), C-ECHO, C-FIND at each level with the return keys
//! beeldbrug asks for (which it fills), the character sets its answers use, a real C-GET and
//! a real C-MOVE (to our own Storage SCP) of one instance: the syntax it sends, whether it
//! names the Move Originator and whether its final C-MOVE response waits for the
//! sub-operations. Each check has its own timeout and reports its own failure; the others
//! still run. With `retrieve = "auto"` the gateway takes its retrieve mode from
//! [`ProbeReport::recommended`].

mod association;
mod find;
mod report;
mod retrieve;

pub use report::*;

use association::{check_association, check_echo};
use find::check_find;
use retrieve::{check_get, check_move, Store};

use super::config::RetrieveMode;
use super::source::PacsSource as Gateway;
use super::{Pacs, PacsError};
use crate::dimse::association::AssociationError;
use crate::store::{BlobStore, Index};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How the probe runs.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// Longest time one check may take.
    pub check_timeout: Duration,
    /// Most C-FIND matches read per query (a C-CANCEL ends the rest, PS3.4 C.4.1.2.3).
    pub max_matches: usize,
    /// The study used below STUDY level and for the retrieves; default: one the PACS lists.
    pub study: Option<String>,
    /// Where our DIMSE listener is (for the hint when the PACS does not know us).
    pub our_address: Option<String>,
    /// Why the C-MOVE check cannot run (no Storage SCP of ours is listening), if so.
    pub skip_move: Option<String>,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            check_timeout: Duration::from_secs(30),
            max_matches: 200,
            study: None,
            our_address: None,
            skip_move: None,
        }
    }
}

/// Probe the gateway's PACS, fetching into the gateway's store (the C-MOVE instance arrives
/// through its Storage SCP, which must be listening).
pub async fn run_gateway(gateway: &Gateway, options: &ProbeOptions) -> ProbeReport {
    run(
        &gateway.pacs,
        &gateway.blobs,
        gateway.index.as_ref(),
        options,
    )
    .await
}

/// Probe `pacs`; retrieved instances go into `blobs` / `index`.
pub async fn run(
    pacs: &Pacs,
    blobs: &BlobStore,
    index: &dyn Index,
    options: &ProbeOptions,
) -> ProbeReport {
    let started_at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let (association, mut transfer_syntaxes) = check_association(pacs, options).await;
    let echo = check_echo(pacs, options).await;
    // No association at all (down, unreachable, refuses us): the rest would only time out.
    let unreachable = (association.check.outcome == Outcome::Failed
        && echo.check.outcome == Outcome::Failed)
        .then(|| format!("not run: no association ({})", association.check.detail));
    let skip = unreachable.as_deref();
    let (find, character_sets, selection) = check_find(pacs, options, skip).await;
    let store = Store { blobs, index };
    let get = check_get(pacs, &store, selection.as_ref(), options, skip).await;
    let move_ = check_move(pacs, &store, selection.as_ref(), options, skip).await;
    transfer_syntaxes.sent_by_get = get.result.as_ref().and_then(|r| r.transfer_syntax.clone());
    transfer_syntaxes.sent_by_move = move_
        .result
        .as_ref()
        .and_then(|r| r.transfer_syntax.clone());
    let recommended = if get.check.outcome.works() {
        Some(RetrieveMode::CGet)
    } else if move_.check.outcome.works() {
        Some(RetrieveMode::CMove)
    } else {
        None
    };
    let mut report = ProbeReport {
        beeldbrug_version: env!("CARGO_PKG_VERSION").to_string(),
        started_at,
        pacs: Peer {
            ae_title: pacs.config.ae_title.clone(),
            host: pacs.config.host.clone(),
            port: pacs.config.port,
            calling_ae: pacs.config.calling_ae(&pacs.our_ae).to_string(),
            move_destination: pacs.our_ae.clone(),
        },
        association,
        echo,
        find,
        character_sets,
        transfer_syntaxes,
        get,
        move_,
        quirks: Vec::new(),
        configured_retrieve: pacs.config.retrieve,
        recommended,
    };
    report.quirks = quirks(&report);
    report
}

/// `serve` with `[pacs] probe_at_start`: once the listeners are up, probe, log the report,
/// and with `retrieve = "auto"` take the recommended retrieve mode. Ends with `shutdown`.
pub fn spawn_at_start(gateway: Arc<Gateway>, our_address: String, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let options = ProbeOptions {
            our_address: Some(our_address),
            ..ProbeOptions::default()
        };
        let report = tokio::select! {
            r = run_gateway(&gateway, &options) => r,
            _ = shutdown.cancelled() => return,
        };
        tracing::info!("PACS capability probe\n{report}");
        if gateway.pacs.config.retrieve != RetrieveMode::Auto {
            return;
        }
        match report.recommended {
            Some(mode) => {
                gateway.pacs.set_mode(mode);
                tracing::info!(?mode, "retrieve mode chosen by the capability probe");
            }
            None => tracing::warn!(
                "capability probe: neither C-GET nor C-MOVE worked; retrieve mode stays auto \
                 (C-GET, then C-MOVE)"
            ),
        }
    });
}

/// Run a check within `limit`; `None` when it did not end in time.
async fn within<T>(limit: Duration, fut: impl Future<Output = T>) -> Option<T> {
    tokio::time::timeout(limit, fut).await.ok()
}

fn timed_out(limit: Duration) -> String {
    format!("no answer within {} s", limit.as_secs_f32())
}

fn rejected_context(e: &PacsError) -> bool {
    matches!(
        e,
        PacsError::NotSupported(_)
            | PacsError::Association {
                source: AssociationError::NoContexts,
                ..
            }
    )
}

fn quirks(report: &ProbeReport) -> Vec<String> {
    let mut out = Vec::new();
    if report.move_.move_originator == Some(false) {
        out.push(
            "C-MOVE sub-operations carry no Move Originator AE Title / Message ID (PS3.7 \
             9.3.1.1): beeldbrug matches them to the retrieve by their UIDs"
                .to_string(),
        );
    }
    if report.move_.final_waits == Some(false) {
        out.push(
            "the final C-MOVE response comes before the sub-operations (PS3.4 C.4.2.3): \
             beeldbrug waits for the reported number of instances"
                .to_string(),
        );
    }
    if report.character_sets.non_ascii_without_charset > 0 {
        out.push(format!(
            "C-FIND answers hold non-ASCII text without Specific Character Set (PS3.5 \
             6.1.2.3): read as {} (pacs.default_charset)",
            report.character_sets.assumed_when_missing
        ));
    }
    if report.character_sets.undecodable_text > 0 {
        out.push(
            "C-FIND answers hold text their Specific Character Set cannot decode (e.g. the \
             query's ISO_IR 192 echoed over Latin-1 bytes, PS3.5 6.1.2.5)"
                .to_string(),
        );
    }
    if report.get.retried_uncompressed && report.get.check.outcome.works() {
        out.push(
            "C-GET: accepts compressed storage syntaxes and then fails every sub-operation: \
             beeldbrug retries with uncompressed syntaxes"
                .to_string(),
        );
    }
    if report.get.storage_role_accepted == Some(false) && report.get.check.outcome.works() {
        out.push("C-GET works without accepting our SCP/SCU role selection (PS3.7 D.3.3.4)".into());
    }
    let series = |relational: bool| {
        report
            .find
            .iter()
            .find(|s| s.level.starts_with("SERIES") && s.level.contains('(') == relational)
    };
    if let (Some(hierarchical), Some(relational)) = (series(false), series(true)) {
        if hierarchical.check.outcome.works() && !relational.check.outcome.works() {
            out.push(format!(
                "C-FIND SERIES without StudyInstanceUID: {}",
                relational.check.detail
            ));
        }
    }
    out
}
