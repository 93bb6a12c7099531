//! C-GET as SCU (PS3.4 C.4.3): the instances come back as C-STORE sub-operations on the
//! same association, for which we take the SCP role (SCU/SCP role selection, PS3.7 D.3.3.4).

use super::move_::{failed_uids, MoveReport};
use super::{connect, native_syntaxes, ScuOptions};
use crate::dimse::association::{Association, AssociationError};
use crate::dimse::command::{CommandField, CommandSet};
use crate::dimse::dataset::{self, file_header};
use crate::dimse::negotiate::ProposedContext;
use crate::dimse::status::{self, code, Category};
use crate::dimse::{sop, Event};
use dicom_object::InMemDicomObject;
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

pub type GetReport = (MoveReport, Vec<PathBuf>);

fn get_contexts(model: &str) -> Vec<ProposedContext> {
    let mut contexts = vec![ProposedContext {
        abstract_syntax: model.to_string(),
        transfer_syntaxes: native_syntaxes(),
        we_are_scp: false,
    }];
    for class in sop::COMMON_STORAGE {
        for tss in [
            native_syntaxes(),
            vec![sop::JPEG_BASELINE.to_string()],
            vec![sop::RLE_LOSSLESS.to_string()],
        ] {
            contexts.push(ProposedContext {
                abstract_syntax: class.to_string(),
                transfer_syntaxes: tss,
                we_are_scp: true,
            });
        }
    }
    contexts
}

/// Retrieve the instances named by `identifier` into `out_dir` as Part 10 files.
pub async fn get(
    opts: &ScuOptions,
    model: &str,
    identifier: &InMemDicomObject,
    out_dir: &Path,
) -> Result<GetReport, AssociationError> {
    tokio::fs::create_dir_all(out_dir)
        .await
        .map_err(crate::dimse::pdu::PduError::Io)?;
    let mut assoc = connect(opts, &get_contexts(model)).await?;
    let pc = assoc
        .context_for(model, None)
        .cloned()
        .ok_or(AssociationError::NoContexts)?;
    let bytes = dataset::encode(identifier, &pc.transfer_syntax)
        .map_err(|e| AssociationError::Protocol(e.to_string()))?;
    let id = assoc.next_message_id();
    assoc
        .send_command(
            pc.id,
            &CommandSet::request(CommandField::CGetRq, id, model).with_data_set(true),
        )
        .await?;
    assoc.send_data(pc.id, &bytes).await?;
    let mut report = MoveReport::default();
    let mut files = Vec::new();
    loop {
        match assoc.next_event().await? {
            Event::Command {
                context_id,
                command,
            } if command.field == CommandField::CStoreRq => {
                let (status, path) =
                    receive_store(&mut assoc, context_id, &command, out_dir).await?;
                files.extend(path);
                let rsp = CommandSet::response_to(&command, CommandField::CStoreRsp, status);
                assoc.send_command(context_id, &rsp).await?;
            }
            Event::Command { command, .. } if command.field == CommandField::CGetRsp => {
                let data = if command.has_data_set {
                    Some(assoc.receive_data_set(pc.id, 16 * 1024 * 1024).await?)
                } else {
                    None
                };
                if status::category(command.status()) == Category::Pending {
                    report.pending.push(command.remaining.unwrap_or(0));
                    continue;
                }
                report.status = command.status();
                report.completed = command.completed.unwrap_or(0);
                report.failed = command.failed.unwrap_or(0);
                report.warning = command.warning.unwrap_or(0);
                if let Some(d) = data {
                    report.failed_uids = failed_uids(&d, &pc.transfer_syntax);
                }
                break;
            }
            Event::Aborted => return Err(AssociationError::Aborted),
            other => {
                return Err(AssociationError::Protocol(format!(
                    "unexpected {} during C-GET",
                    crate::dimse::association::describe_event(&other)
                )))
            }
        }
    }
    assoc.release().await?;
    Ok((report, files))
}

/// Write one incoming sub-operation to `out_dir/<SOP Instance UID>.dcm` (via a temp name).
async fn receive_store(
    assoc: &mut Association,
    context_id: u8,
    rq: &CommandSet,
    out_dir: &Path,
) -> Result<(u16, Option<PathBuf>), AssociationError> {
    let pc = assoc
        .context(context_id)
        .cloned()
        .ok_or_else(|| AssociationError::Protocol("no such context".into()))?;
    let sop_uid = rq.affected_sop_instance.clone().unwrap_or_default();
    let safe = !sop_uid.is_empty() && sop_uid.chars().all(|c| c.is_ascii_digit() || c == '.');
    let header = file_header(
        rq.affected_sop_class.as_deref().unwrap_or(""),
        &sop_uid,
        &pc.transfer_syntax,
        &assoc.called_ae,
    );
    let target = out_dir.join(format!("{sop_uid}.dcm"));
    let temp = out_dir.join(format!(".{sop_uid}.part"));
    let mut file = match (safe, header) {
        (true, Ok(h)) => match tokio::fs::File::create(&temp).await {
            Ok(mut f) => f.write_all(&h).await.ok().map(|_| f),
            Err(_) => None,
        },
        _ => None,
    };
    loop {
        match assoc.next_event().await? {
            Event::Data(pdv) => {
                if let Some(f) = file.as_mut() {
                    if f.write_all(&pdv.data).await.is_err() {
                        file = None;
                    }
                }
                if pdv.is_last {
                    break;
                }
            }
            Event::Aborted => return Err(AssociationError::Aborted),
            other => {
                return Err(AssociationError::Protocol(format!(
                    "expected C-STORE data, got {}",
                    crate::dimse::association::describe_event(&other)
                )))
            }
        }
    }
    let Some(mut f) = file else {
        let _ = tokio::fs::remove_file(&temp).await;
        return Ok((code::OUT_OF_RESOURCES, None));
    };
    if f.flush().await.is_err()
        || f.sync_all().await.is_err()
        || tokio::fs::rename(&temp, &target).await.is_err()
    {
        let _ = tokio::fs::remove_file(&temp).await;
        return Ok((code::OUT_OF_RESOURCES, None));
    }
    Ok((code::SUCCESS, Some(target)))
}
