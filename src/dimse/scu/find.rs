//! C-FIND as SCU (PS3.4 C.4.1).

use super::{connect, native_syntaxes, ScuOptions};
use crate::dimse::association::{Association, AssociationError};
use crate::dimse::command::{CommandField, CommandSet};
use crate::dimse::dataset;
use crate::dimse::negotiate::ProposedContext;
use crate::dimse::status::{self, Category};
use crate::dimse::Event;
use dicom_object::InMemDicomObject;

/// The presentation context a C-FIND under `model` needs.
pub fn find_context(model: &str) -> ProposedContext {
    ProposedContext {
        abstract_syntax: model.to_string(),
        transfer_syntaxes: native_syntaxes(),
        we_are_scp: false,
    }
}

/// Send `identifier` under `model` (a Find SOP class) and collect the matches.
/// Returns the matches and the final status.
pub async fn find(
    opts: &ScuOptions,
    model: &str,
    identifier: &InMemDicomObject,
) -> Result<(Vec<InMemDicomObject>, u16), AssociationError> {
    let mut assoc = connect(opts, &[find_context(model)]).await?;
    let (raw, status, ts) = find_raw(&mut assoc, model, identifier, usize::MAX).await?;
    assoc.release().await?;
    let results = raw
        .iter()
        .map(|d| dataset::decode(d, &ts).map_err(|e| AssociationError::Protocol(e.to_string())))
        .collect::<Result<_, _>>()?;
    Ok((results, status))
}

/// C-FIND on an open association: the encoded match identifiers (the caller decodes them,
/// e.g. with a character set of its choosing), the final status, and the transfer syntax.
/// After `max_results` matches a C-CANCEL is sent (PS3.4 C.4.1.2.3) and the rest dropped.
pub async fn find_raw(
    assoc: &mut Association,
    model: &str,
    identifier: &InMemDicomObject,
    max_results: usize,
) -> Result<(Vec<Vec<u8>>, u16, String), AssociationError> {
    let pc = assoc
        .context_for(model, None)
        .cloned()
        .ok_or(AssociationError::NoContexts)?;
    let bytes = dataset::encode(identifier, &pc.transfer_syntax)
        .map_err(|e| AssociationError::Protocol(e.to_string()))?;
    let id = assoc.next_message_id();
    let rq = CommandSet::request(CommandField::CFindRq, id, model).with_data_set(true);
    assoc.send_command(pc.id, &rq).await?;
    assoc.send_data(pc.id, &bytes).await?;
    let mut results = Vec::new();
    let mut cancelled = false;
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
        if status::category(rsp.status()) != Category::Pending {
            break rsp.status();
        }
        match data {
            Some(d) if results.len() < max_results => results.push(d),
            _ if !cancelled && results.len() >= max_results => {
                cancelled = true;
                let mut cancel = CommandSet::new(CommandField::CCancelRq);
                cancel.message_id_responded = Some(id);
                assoc.send_command(pc.id, &cancel).await?;
            }
            _ => {}
        }
    };
    Ok((results, status, pc.transfer_syntax))
}
