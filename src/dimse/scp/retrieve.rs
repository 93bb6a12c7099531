//! What C-MOVE and C-GET share (PS3.4 C.4.2, C.4.3): selecting instances by unique keys,
//! counting sub-operations, and the pending/final responses.

use super::ScpContext;
use crate::core::source::DataSet;
use crate::core::{CoreError, InstanceLocation, Refusal, Selection};
use crate::dimse::association::PresentationContext;
use crate::dimse::command::{CommandField, CommandSet};
use crate::dimse::dataset;
use crate::dimse::dataset::QUERY_RETRIEVE_LEVEL;
use crate::dimse::scu::send::{send_data_set, send_file_with, Fallback, Sent};
use crate::dimse::scu::SendError;
use crate::dimse::status::{self, code, Category};
use crate::dimse::{Association, AssociationError};
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_object::InMemDicomObject;

/// Failed SOP Instance UID List (PS3.4 C.4.2.1.5).
pub const FAILED_SOP_INSTANCE_UID_LIST: Tag = Tag(0x0008, 0x0058);

/// Unique keys of a retrieve identifier (PS3.4 C.4.2.2.1) as a core selection.
pub fn selection_from(obj: &InMemDicomObject) -> Result<Selection, (u16, String)> {
    let list = |tag: Tag| -> Vec<String> {
        obj.element(tag)
            .ok()
            .and_then(|e| e.to_str().ok())
            .map(|s| {
                s.split('\\')
                    .map(|p| p.trim_matches(|c: char| c == ' ' || c == '\0').to_string())
                    .filter(|p| !p.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    };
    if obj.element(QUERY_RETRIEVE_LEVEL).is_err() {
        return Err((
            code::IDENTIFIER_MISMATCH,
            "missing Query/Retrieve Level".into(),
        ));
    }
    let selection = Selection {
        patient_ids: list(Tag(0x0010, 0x0020)),
        study_uids: list(Tag(0x0020, 0x000D)),
        series_uids: list(Tag(0x0020, 0x000E)),
        sop_instance_uids: list(Tag(0x0008, 0x0018)),
    };
    if selection.is_empty() {
        return Err((
            code::IDENTIFIER_MISMATCH,
            "identifier has no unique key".into(),
        ));
    }
    Ok(selection)
}

/// A failure response to a C-GET or C-MOVE request (`field`: its response), with the reason
/// in Error Comment (PS3.7 C.4.2.1.5 / C.4.3.1.4 status classes).
pub(super) fn failure_response(
    rq: &CommandSet,
    field: CommandField,
    status: u16,
    comment: &str,
) -> CommandSet {
    let mut rsp = CommandSet::response_to(rq, field, status);
    rsp.error_comment = Some(comment.to_string());
    rsp
}

/// Read a C-GET or C-MOVE request's identifier (PS3.4 C.4.2.1.3 / C.4.3.1.3) and the
/// selection it names. `None`: the request had none or it named nothing retrievable, and the
/// failure response (`field`) has been sent.
pub(super) async fn read_selection(
    assoc: &mut Association,
    pc: &PresentationContext,
    rq: &CommandSet,
    field: CommandField,
) -> Result<Option<Selection>, AssociationError> {
    let context_id = pc.id;
    let refused = if !rq.has_data_set {
        (code::CANNOT_UNDERSTAND, "no identifier".to_string())
    } else {
        let bytes = assoc
            .receive_data_set(context_id, super::MAX_IDENTIFIER)
            .await?;
        match dataset::decode(&bytes, &pc.transfer_syntax)
            .map_err(|e| (code::CANNOT_UNDERSTAND, e.to_string()))
            .and_then(|obj| selection_from(&obj))
        {
            Ok(selection) => return Ok(Some(selection)),
            Err(refused) => refused,
        }
    };
    let rsp = failure_response(rq, field, refused.0, &refused.1);
    assoc.send_command(context_id, &rsp).await?;
    Ok(None)
}

/// Least time between two pending C-MOVE or C-GET responses after the first: they are
/// optional progress reports (PS3.4 C.4.2.1.6, C.4.2.2 and C.4.3.2: the SCP "may optionally
/// generate" them), so not one write and one wake-up of the requestor per sub-operation.
pub(super) const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// Sub-operation counters (PS3.4 C.4.2.1.6).
#[derive(Debug, Default, Clone)]
pub struct SubOps {
    pub remaining: u16,
    pub completed: u16,
    pub failed: u16,
    pub warning: u16,
    pub failed_uids: Vec<String>,
}

impl SubOps {
    pub fn new(total: usize) -> Self {
        SubOps {
            remaining: total.min(u16::MAX as usize) as u16,
            ..Default::default()
        }
    }

    pub fn record(&mut self, sop_uid: &str, status: Option<u16>) {
        self.remaining = self.remaining.saturating_sub(1);
        match status.map(status::category) {
            Some(Category::Success) => self.completed += 1,
            Some(Category::Warning) => self.warning += 1,
            _ => {
                self.failed += 1;
                self.failed_uids.push(sop_uid.to_string());
            }
        }
    }

    /// Everything not yet done counts as failed (connection lost, cancel does not count).
    pub fn fail_remaining(&mut self, uids: &[String]) {
        self.failed += self.remaining;
        self.failed_uids.extend(uids.iter().cloned());
        self.remaining = 0;
    }

    pub fn pending(&self, rq: &CommandSet, field: CommandField) -> CommandSet {
        let mut rsp = CommandSet::response_to(rq, field, code::PENDING);
        rsp.remaining = Some(self.remaining);
        rsp.completed = Some(self.completed);
        rsp.failed = Some(self.failed);
        rsp.warning = Some(self.warning);
        rsp
    }

    /// The final response (PS3.4 C.4.2.1.5): success, warning B000 when some failed,
    /// A702 when all failed, FE00 when cancelled; with the failed UID list as data set.
    pub fn final_response(
        &self,
        rq: &CommandSet,
        field: CommandField,
        cancelled: bool,
    ) -> (CommandSet, Option<InMemDicomObject>) {
        let status = if cancelled {
            code::CANCEL
        } else if self.failed == 0 && self.warning == 0 {
            code::SUCCESS
        } else if self.completed == 0 && self.warning == 0 {
            code::OUT_OF_RESOURCES_SUBOPS
        } else {
            code::WARNING_SUBOPS_FAILED
        };
        let mut rsp = CommandSet::response_to(rq, field, status);
        // PS3.4 C.4.2.1.6: remaining is only present in the final response when cancelled.
        if cancelled {
            rsp.remaining = Some(self.remaining);
        }
        rsp.completed = Some(self.completed);
        rsp.failed = Some(self.failed);
        rsp.warning = Some(self.warning);
        let data = (!self.failed_uids.is_empty()).then(|| {
            let mut obj = InMemDicomObject::new_empty();
            obj.put(DataElement::new(
                FAILED_SOP_INSTANCE_UID_LIST,
                VR::UI,
                PrimitiveValue::Strs(self.failed_uids.iter().cloned().collect()),
            ));
            obj
        });
        rsp.has_data_set = data.is_some();
        (rsp, data)
    }
}

/// Send the final C-MOVE/C-GET response, with the failed UID list as its data set.
pub async fn send_final(
    assoc: &mut crate::dimse::Association,
    context_id: u8,
    transfer_syntax: &str,
    rq: &CommandSet,
    field: CommandField,
    counts: &SubOps,
    cancelled: bool,
) -> Result<(), crate::dimse::AssociationError> {
    let (rsp, data) = counts.final_response(rq, field, cancelled);
    assoc.send_command(context_id, &rsp).await?;
    if let Some(obj) = data {
        let bytes = crate::dimse::dataset::encode(&obj, transfer_syntax)
            .map_err(|e| crate::dimse::AssociationError::Protocol(e.to_string()))?;
        assoc.send_data(context_id, &bytes).await?;
    }
    Ok(())
}

/// The status of a C-FIND, C-MOVE or C-GET the core could not answer, and its comment
/// (PS3.4 C.4.1.1.4, C.4.2.1.5, C.4.3.1.4; PS3.7 C.5). Nothing about a patient goes in the
/// comment of a refusal.
pub fn status_of(error: &CoreError, field: CommandField) -> (u16, String) {
    let find = field == CommandField::CFindRsp;
    match error {
        CoreError::Refused(Refusal::Unavailable(why)) => {
            // Fail closed (audit trail not writable): out of resources, try later.
            let status = if find {
                code::OUT_OF_RESOURCES
            } else {
                code::OUT_OF_RESOURCES_SUBOPS
            };
            (status, why.clone())
        }
        CoreError::Refused(_) => (code::NOT_AUTHORIZED, "not authorized".into()),
        CoreError::Index(_) if find => (code::OUT_OF_RESOURCES, "index unavailable".into()),
        CoreError::Index(_) => (code::OUT_OF_RESOURCES_MATCHES, "index unavailable".into()),
        CoreError::Source(e) if find => (code::OUT_OF_RESOURCES, e.to_string()),
        // Cxxx: unable to process (PS3.4 C.4.2.1.5).
        CoreError::Source(e) => (code::CANNOT_UNDERSTAND, e.to_string()),
        CoreError::NotFound(why) => (code::SUCCESS, why.clone()),
    }
}

/// Answer a C-MOVE or C-GET the core could not start (its record is written): nothing
/// selected is a final response without sub-operations (PS3.4 C.4.2.1.5: success, 0
/// completed); anything else a failure status with its comment ([`status_of`]).
pub async fn send_unstarted(
    assoc: &mut crate::dimse::Association,
    context_id: u8,
    transfer_syntax: &str,
    rq: &CommandSet,
    field: CommandField,
    error: &CoreError,
) -> Result<(), crate::dimse::AssociationError> {
    if let CoreError::NotFound(_) = error {
        let counts = SubOps::new(0);
        return send_final(
            assoc,
            context_id,
            transfer_syntax,
            rq,
            field,
            &counts,
            false,
        )
        .await;
    }
    let (status, comment) = status_of(error, field);
    let mut rsp = CommandSet::response_to(rq, field, status);
    rsp.error_comment = Some(comment);
    assoc.send_command(context_id, &rsp).await
}

/// The audit result of a retrieve from its counts.
pub fn result_of(counts: &SubOps, cancelled: bool) -> &'static str {
    if cancelled {
        "cancelled"
    } else if counts.failed == 0 {
        "success"
    } else if counts.completed == 0 {
        "failure"
    } else {
        "partial"
    }
}

/// How a send ended, for the console's transfers board: `None` when every sub-operation
/// succeeded (or ended with a warning), else the detail.
pub fn failure_of(counts: &SubOps, detail: &str) -> Option<String> {
    (counts.failed > 0 || counts.remaining > 0).then(|| detail.to_string())
}

/// The audit detail of a retrieve: its counts, and where the instances came from when not
/// from the cache.
pub fn detail_of(counts: &SubOps, prefix: &str, from: &str) -> String {
    let mut detail = format!(
        "{prefix}{} completed, {} failed, {} warning",
        counts.completed, counts.failed, counts.warning
    );
    if from != "cache" {
        detail.push_str(&format!(", streamed from the {from}"));
    }
    detail
}

/// Send one instance as a C-STORE sub-operation: from memory when the source's data set is
/// at hand and the peer takes it as it is (and no `[dimse] wire_syntax` asks for another),
/// else from the stored file, transcoded as [`Fallback::for_retrieve`] decides (a peer
/// proposing only uncompressed syntaxes gets compressed instances decoded).
pub(super) async fn send_instance(
    ctx: &ScpContext,
    assoc: &mut Association,
    instance: &InstanceLocation,
    data_set: Option<DataSet>,
    originator: Option<(&str, u16)>,
) -> Result<Sent, SendError> {
    // From memory only as the source sent it: a configured wire syntax may want it encoded.
    let wire = &ctx.config.dimse.wire_syntax;
    if let Some(data_set) = data_set.filter(|_| wire.is_empty()) {
        let sent = send_data_set(
            assoc,
            &instance.sop_class_uid,
            &instance.sop_instance_uid,
            &instance.transfer_syntax_uid,
            &data_set,
            originator,
        )
        .await?;
        if let Some(sent) = sent {
            return Ok(sent);
        }
    }
    ctx.core.stored().ensure_local(instance).await;
    let path = ctx.core.stored().local_file(instance).path().to_path_buf();
    let sent = send_file_with(assoc, &path, originator, Fallback::for_retrieve(wire)).await;
    // A failed sub-operation (PS3.4 C.4.2.1.4 / C.4.3.1.4); a missing file gets a repair note.
    if sent.as_ref().is_err_and(|e| !e.is_fatal()) {
        ctx.core.stored().is_present(instance).await;
    }
    sent
}
