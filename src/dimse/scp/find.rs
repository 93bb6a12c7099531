//! Query/Retrieve C-FIND as SCP, Patient Root and Study Root (PS3.4 C.4.1, C.6).
//!
//! The identifier becomes a core [`Query`]; each match goes back as a pending response with
//! the requested keys filled in, and C-CANCEL is checked between matches (PS3.4 C.4.1.3.2).

use super::ScpContext;
use crate::core::query::{computed, indexed_attr, Level, Match, Matcher, Query};
use crate::core::{CoreError, Found};
use crate::dimse::command::{CommandField, CommandSet};
use crate::dimse::dataset::decode_with_default_charset;
use crate::dimse::dataset::{self, is_latin1, QUERY_RETRIEVE_LEVEL, SPECIFIC_CHARACTER_SET};
use crate::dimse::status::code;
use crate::dimse::{sop, Association, AssociationError};
use crate::trust::{Caller, Operation};
use dicom_core::header::Header;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_object::InMemDicomObject;

/// A parsed C-FIND identifier: the query, and the keys to return with their VRs.
#[derive(Debug)]
pub struct FindRequest {
    pub query: Query,
    pub return_keys: Vec<(Tag, VR)>,
    /// ModalitiesInStudy as a matching key (PS3.4 C.6.2.1.2): matched after the index.
    pub modalities: Option<Vec<String>>,
    pub charset: String,
}

/// Interpret an identifier for `model` (a Find SOP class). `Err` is (status, comment).
pub fn parse_identifier(obj: &InMemDicomObject, model: &str) -> Result<FindRequest, (u16, String)> {
    let level = obj
        .element(QUERY_RETRIEVE_LEVEL)
        .ok()
        .and_then(|e| e.to_str().ok())
        .and_then(|s| Level::from_code(&s))
        .ok_or((
            code::IDENTIFIER_MISMATCH,
            "missing or invalid Query/Retrieve Level".to_string(),
        ))?;
    // PS3.4 C.6.2: the Study Root model has no PATIENT level.
    if level == Level::Patient
        && (model == sop::STUDY_ROOT_FIND
            || model == sop::STUDY_ROOT_MOVE
            || model == sop::STUDY_ROOT_GET)
    {
        return Err((
            code::IDENTIFIER_MISMATCH,
            "PATIENT level is not in the Study Root model".into(),
        ));
    }
    let charset = obj
        .element(SPECIFIC_CHARACTER_SET)
        .ok()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let mut query = Query::new(level);
    let mut return_keys = Vec::new();
    let mut modalities = None;
    for element in obj.iter() {
        let tag = element.tag();
        if tag == QUERY_RETRIEVE_LEVEL || tag == SPECIFIC_CHARACTER_SET || tag.element() == 0x0000 {
            continue;
        }
        return_keys.push((tag, element.vr()));
        let value = if element.vr() == VR::SQ {
            String::new()
        } else {
            element.to_str().map(|s| s.to_string()).unwrap_or_default()
        };
        if tag == computed::MODALITIES_IN_STUDY && !value.trim().is_empty() {
            modalities = Some(value.split('\\').map(|m| m.trim().to_string()).collect());
            continue;
        }
        // PS3.4 C.4.1.2.1: keys below the query level are not matched on.
        if let Some(attr) = indexed_attr(tag).filter(|a| a.level <= level) {
            query = query.with_key(attr, Matcher::parse(attr.kind, &value));
        }
    }
    Ok(FindRequest {
        query,
        return_keys,
        modalities,
        charset,
    })
}

/// The response identifier for one match, in the requester's character set where it can
/// carry the values, else UTF-8 (ISO_IR 192).
pub fn response_identifier(req: &FindRequest, m: &Match) -> InMemDicomObject {
    let values: Vec<(Tag, VR, String)> = req
        .return_keys
        .iter()
        .map(|&(tag, vr)| (tag, vr, m.get(&tag).cloned().unwrap_or_default()))
        .collect();
    let all_ascii = values.iter().all(|(_, _, v)| v.is_ascii());
    let charset = if all_ascii && req.charset.is_empty() {
        None
    } else if req.charset.contains("ISO_IR 100") && values.iter().all(|(_, _, v)| is_latin1(v)) {
        Some("ISO_IR 100")
    } else if all_ascii {
        Some(req.charset.as_str()).filter(|c| !c.is_empty())
    } else {
        Some("ISO_IR 192")
    };
    let mut obj = InMemDicomObject::new_empty();
    if let Some(cs) = charset {
        obj.put(DataElement::new(
            SPECIFIC_CHARACTER_SET,
            VR::CS,
            PrimitiveValue::from(cs),
        ));
    }
    obj.put(DataElement::new(
        QUERY_RETRIEVE_LEVEL,
        VR::CS,
        PrimitiveValue::from(req.query.level.code()),
    ));
    for (tag, vr, value) in values {
        obj.put(DataElement::new(tag, vr, typed_value(vr, &value)));
    }
    obj
}

fn typed_value(vr: VR, value: &str) -> PrimitiveValue {
    if value.is_empty() || vr == VR::SQ {
        return PrimitiveValue::Empty;
    }
    let parts = value.split('\\');
    match vr {
        VR::US => PrimitiveValue::U16(parts.filter_map(|p| p.trim().parse().ok()).collect()),
        VR::UL => PrimitiveValue::U32(parts.filter_map(|p| p.trim().parse().ok()).collect()),
        VR::SS => PrimitiveValue::I16(parts.filter_map(|p| p.trim().parse().ok()).collect()),
        VR::SL => PrimitiveValue::I32(parts.filter_map(|p| p.trim().parse().ok()).collect()),
        _ => PrimitiveValue::Strs(parts.map(str::to_string).collect()),
    }
}

fn modality_filter(modalities: &Option<Vec<String>>, m: &Match) -> bool {
    let Some(wanted) = modalities else {
        return true;
    };
    let have = m
        .get(&computed::MODALITIES_IN_STUDY)
        .map(String::as_str)
        .unwrap_or("");
    have.split('\\').any(|h| wanted.iter().any(|w| w == h))
}

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
    let message_id = rq.message_id.unwrap_or(0);
    let final_rsp = |status: u16, comment: Option<String>| {
        let mut rsp = CommandSet::response_to(rq, CommandField::CFindRsp, status);
        rsp.error_comment = comment;
        rsp
    };
    if !rq.has_data_set {
        return assoc
            .send_command(
                context_id,
                &final_rsp(code::CANNOT_UNDERSTAND, Some("no identifier".into())),
            )
            .await;
    }
    let bytes = assoc
        .receive_data_set(context_id, super::MAX_IDENTIFIER)
        .await?;
    let default_charset = ctx.config.dimse.default_charset.trim();
    let request = match decode_with_default_charset(&bytes, &pc.transfer_syntax, default_charset)
        .map_err(|e| (code::CANNOT_UNDERSTAND, e))
        .and_then(|(obj, assumed)| {
            if assumed {
                // Latin-1 text with accents is almost never valid UTF-8: a hint for the
                // operator whose peers send UTF-8 unannounced (then set ISO_IR 192).
                let valid_utf8 = std::str::from_utf8(&bytes).is_ok();
                tracing::info!(
                    calling_ae = %assoc.calling_ae,
                    peer = %assoc.peer,
                    charset = %default_charset,
                    valid_utf8,
                    "C-FIND identifier has non-ASCII values but no Specific Character Set \
                     (0008,0005): read as dimse.default_charset"
                );
            }
            parse_identifier(&obj, &pc.abstract_syntax)
        }) {
        Ok(r) => r,
        Err((status, comment)) => {
            return assoc
                .send_command(context_id, &final_rsp(status, Some(comment)))
                .await
        }
    };
    let answered = match ctx.core.admit(caller, Operation::Find).await {
        Ok(ticket) => {
            ctx.core
                .query(ticket, request.query.clone(), usize::MAX)
                .await
        }
        Err(e) => Err(e),
    };
    let Found {
        matches,
        mut ticket,
        unanswered,
    } = match answered {
        Ok(found) => found,
        Err(e) => {
            if let CoreError::Index(e) = &e {
                tracing::error!(error = %e, "C-FIND index query failed");
            }
            let (status, comment) = super::retrieve::status_of(&e, CommandField::CFindRsp);
            let comment = (status != code::NOT_AUTHORIZED).then_some(comment);
            return assoc
                .send_command(context_id, &final_rsp(status, comment))
                .await;
        }
    };
    let mut sent = 0u32;
    let mut cancelled = false;
    for m in matches
        .iter()
        .filter(|m| modality_filter(&request.modalities, m))
    {
        if assoc.cancel_requested(message_id)? {
            cancelled = true;
            break;
        }
        let identifier = response_identifier(&request, m);
        let data = match dataset::encode(&identifier, &pc.transfer_syntax) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode C-FIND response");
                continue;
            }
        };
        let pending =
            CommandSet::response_to(rq, CommandField::CFindRsp, code::PENDING).with_data_set(true);
        assoc.send_command(context_id, &pending).await?;
        assoc.send_data(context_id, &data).await?;
        sent += 1;
        ticket.touch_match(m);
    }
    let mut detail = format!(
        "{} level, {} matches returned",
        request.query.level.code(),
        sent
    );
    // A source that did not answer: the pending rows are what the others hold, and the
    // final response says the answer is incomplete (PS3.4 C.4.1.1.4: a failure status may
    // follow pending responses), naming the source in its Error Comment.
    let (status, comment, result) = match (cancelled, unanswered.first()) {
        (true, _) => (code::CANCEL, None, "cancelled"),
        (false, None) => (code::SUCCESS, None, "success"),
        (false, Some(e)) => {
            detail.push_str(&format!(", not answered by: {}", e.source_name));
            // Cxxx "unable to process": the rows that came are good, the set is not whole.
            (code::CANNOT_UNDERSTAND, Some(e.to_string()), "partial")
        }
    };
    assoc
        .send_command(context_id, &final_rsp(status, comment))
        .await?;
    ticket.finish(result, detail).await;
    Ok(())
}
