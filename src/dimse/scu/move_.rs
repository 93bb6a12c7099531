//! C-MOVE as SCU (PS3.4 C.4.2).

use super::{connect, native_syntaxes, ScuOptions};
use crate::dimse::association::AssociationError;
use crate::dimse::command::{CommandField, CommandSet};
use crate::dimse::dataset;
use crate::dimse::negotiate::ProposedContext;
use crate::dimse::status::{self, Category};
use crate::dimse::Event;
use dicom_object::InMemDicomObject;

/// Final status and sub-operation counts of a C-MOVE or C-GET.
#[derive(Debug, Clone, Default)]
pub struct MoveReport {
    pub status: u16,
    pub completed: u16,
    pub failed: u16,
    pub warning: u16,
    /// Pending responses seen (with their remaining counts).
    pub pending: Vec<u16>,
    pub failed_uids: Vec<String>,
}

/// Ask the peer to move the instances named by `identifier` to `destination`.
pub async fn move_study(
    opts: &ScuOptions,
    model: &str,
    identifier: &InMemDicomObject,
    destination: &str,
) -> Result<MoveReport, AssociationError> {
    let ctx = ProposedContext {
        abstract_syntax: model.to_string(),
        transfer_syntaxes: native_syntaxes(),
        we_are_scp: false,
    };
    let mut assoc = connect(opts, &[ctx]).await?;
    let pc = assoc.contexts[0].clone();
    let bytes = dataset::encode(identifier, &pc.transfer_syntax)
        .map_err(|e| AssociationError::Protocol(e.to_string()))?;
    let id = assoc.next_message_id();
    let mut rq = CommandSet::request(CommandField::CMoveRq, id, model).with_data_set(true);
    rq.move_destination = Some(destination.to_string());
    assoc.send_command(pc.id, &rq).await?;
    assoc.send_data(pc.id, &bytes).await?;
    let mut report = MoveReport::default();
    loop {
        let rsp = match assoc.next_event().await? {
            Event::Command { command, .. } if command.field == CommandField::CMoveRsp => command,
            Event::Aborted => return Err(AssociationError::Aborted),
            other => {
                return Err(AssociationError::Protocol(format!(
                    "expected C-MOVE-RSP, got {}",
                    crate::dimse::association::describe_event(&other)
                )))
            }
        };
        let data = if rsp.has_data_set {
            Some(assoc.receive_data_set(pc.id, 16 * 1024 * 1024).await?)
        } else {
            None
        };
        if status::category(rsp.status()) == Category::Pending {
            report.pending.push(rsp.remaining.unwrap_or(0));
            continue;
        }
        report.status = rsp.status();
        report.completed = rsp.completed.unwrap_or(0);
        report.failed = rsp.failed.unwrap_or(0);
        report.warning = rsp.warning.unwrap_or(0);
        if let Some(d) = data {
            report.failed_uids = failed_uids(&d, &pc.transfer_syntax);
        }
        break;
    }
    assoc.release().await?;
    Ok(report)
}

pub(crate) fn failed_uids(data: &[u8], ts: &str) -> Vec<String> {
    dataset::decode(data, ts)
        .ok()
        .and_then(|o| {
            o.element(dicom_core::Tag(0x0008, 0x0058))
                .ok()
                .and_then(|e| e.to_str().ok().map(|s| s.to_string()))
        })
        .map(|s| {
            s.split('\\')
                .map(|p| p.trim_end_matches('\0').to_string())
                .collect()
        })
        .unwrap_or_default()
}
