//! C-FIND as SCU (PS3.4 C.4.1).

use super::{connect, native_syntaxes, ScuOptions};
use crate::dimse::association::AssociationError;
use crate::dimse::command::{CommandField, CommandSet};
use crate::dimse::dataset;
use crate::dimse::negotiate::ProposedContext;
use crate::dimse::status::{self, Category};
use crate::dimse::Event;
use dicom_object::InMemDicomObject;

/// Send `identifier` under `model` (a Find SOP class) and collect the matches.
/// Returns the matches and the final status.
pub async fn find(
    opts: &ScuOptions,
    model: &str,
    identifier: &InMemDicomObject,
) -> Result<(Vec<InMemDicomObject>, u16), AssociationError> {
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
    let rq = CommandSet::request(CommandField::CFindRq, id, model).with_data_set(true);
    assoc.send_command(pc.id, &rq).await?;
    assoc.send_data(pc.id, &bytes).await?;
    let mut results = Vec::new();
    let status = loop {
        let rsp = match assoc.next_event().await? {
            Event::Command { command, .. } if command.field == CommandField::CFindRsp => command,
            Event::Aborted => return Err(AssociationError::Aborted),
            other => {
                return Err(AssociationError::Protocol(format!(
                    "expected C-FIND-RSP, got {}",
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
            if let Some(d) = data {
                results.push(
                    dataset::decode(&d, &pc.transfer_syntax)
                        .map_err(|e| AssociationError::Protocol(e.to_string()))?,
                );
            }
        } else {
            break rsp.status();
        }
    };
    assoc.release().await?;
    Ok((results, status))
}
