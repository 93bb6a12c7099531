//! STOW-RS (PS3.18 10.5): `multipart/related; type="application/dicom"` parsed as a stream
//! (multer, boundary from the media type), each part written into the core as it arrives and
//! stored through the same ingest path as C-STORE (`core::ingest`: checked, parsed, fsynced
//! and renamed in group commits; up to 16 parts at once while the next arrive), then indexed
//! in batches of one transaction each — durable and indexed before the response.
//!
//! Status (PS3.18 10.5.3): 200 all stored, 202 some failed or stored with warnings, 409 none
//! stored, 400 a malformed request, 415 an unsupported media type, 413 over the size limits.
//! A part that breaks off leaves nothing: its temp file is removed.

use super::json::{put, tag_key};
use super::media::parse_media_type;
use super::{base_url, WebCaller, WebError, WebState};
use crate::core::{Durable, Expected, Incoming, Ticket};
use crate::dimse::status::code;
use crate::trust::{Caller, Operation};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use dicom_core::{Tag, VR};
use futures::StreamExt;
use serde_json::{Map, Value as Json};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const RETRIEVE_URL: Tag = Tag(0x0008, 0x1190);
const FAILED_SOP_SEQUENCE: Tag = Tag(0x0008, 0x1198);
const REFERENCED_SOP_SEQUENCE: Tag = Tag(0x0008, 0x1199);
const REFERENCED_SOP_CLASS: Tag = Tag(0x0008, 0x1150);
const REFERENCED_SOP_INSTANCE: Tag = Tag(0x0008, 0x1155);
const FAILURE_REASON: Tag = Tag(0x0008, 0x1197);
const WARNING_REASON: Tag = Tag(0x0008, 0x1196);

/// The outcome of one part.
#[derive(Debug, Clone)]
struct PartResult {
    sop_class: String,
    sop_instance: String,
    study: String,
    series: String,
    /// 0 success, Bxxx warning, other failure (C-STORE statuses, PS3.18 10.5.3.2).
    status: u16,
    reason: String,
    /// Durable, waiting to be indexed with the rest of its batch.
    unindexed: Option<Durable>,
}

impl PartResult {
    fn failed(&self) -> bool {
        !(self.status == code::SUCCESS || (0xB000..=0xBFFF).contains(&self.status))
    }
}

pub async fn store_any(
    State(s): State<WebState>,
    c: WebCaller,
    h: HeaderMap,
    body: Body,
) -> Result<Response, WebError> {
    store(s, c.0, h, None, body).await
}

pub async fn store_study(
    State(s): State<WebState>,
    c: WebCaller,
    h: HeaderMap,
    Path(study): Path<String>,
    body: Body,
) -> Result<Response, WebError> {
    store(s, c.0, h, Some(study), body).await
}

/// The boundary of an acceptable request, or why it is not acceptable.
pub fn request_boundary(content_type: Option<&str>) -> Result<String, WebError> {
    let unsupported = || {
        WebError::UnsupportedMediaType(
            "STOW-RS takes multipart/related; type=\"application/dicom\" (PS3.18 10.5.1.2)".into(),
        )
    };
    let media = content_type
        .and_then(parse_media_type)
        .ok_or_else(unsupported)?;
    if media.essence != "multipart/related" {
        return Err(unsupported());
    }
    if !media
        .param("type")
        .unwrap_or("application/dicom")
        .eq_ignore_ascii_case("application/dicom")
    {
        return Err(WebError::UnsupportedMediaType(
            "only application/dicom parts are accepted; metadata with bulk data is not supported"
                .into(),
        ));
    }
    match media.param("boundary") {
        Some(b) if !b.is_empty() && b.len() <= 70 => Ok(b.to_string()),
        _ => Err(WebError::BadRequest(
            "multipart/related without a valid boundary parameter".into(),
        )),
    }
}

async fn store(
    state: WebState,
    caller: Caller,
    headers: HeaderMap,
    study: Option<String>,
    body: Body,
) -> Result<Response, WebError> {
    let mut ticket = state.core.admit(&caller, Operation::StowRs).await?;
    // The ticket learns the patients and studies of the parts as they are indexed.
    let result = receive(&state, &mut ticket, &headers, study.as_deref(), body).await;
    let (parts, error) = match result {
        Ok(parts) => (parts, None),
        Err((parts, e)) => (parts, Some(e)),
    };
    let stored = parts.iter().filter(|p| !p.failed()).count();
    // Another hospital sent these: in gateway mode they go on to the local PACS, and
    // storage.keep_received_days counts from now (retention).
    let items: Vec<(String, String)> = parts
        .iter()
        .filter(|p| !p.failed())
        .map(|p| (p.study.clone(), p.sop_instance.clone()))
        .collect();
    state.core.received(&caller.ae_title, &items).await;
    let result = match (stored, parts.len() - stored, &error) {
        (_, 0, None) => "success",
        (0, _, _) => "failure",
        _ => "partial",
    };
    let detail = match &error {
        Some(e) => format!("{stored} instances stored, then: {e}"),
        None => format!("{stored} of {} instances stored", parts.len()),
    };
    // Fail closed: without its audit record the store is not acknowledged (503). What was
    // stored stays; the client sends again and the same instances replace themselves.
    if let Err(e) = ticket.finish_before_answer(result, detail).await {
        return Err(WebError::Unavailable(e.to_string()));
    }
    if let Some(e) = error {
        return Err(e);
    }
    if parts.is_empty() {
        return Err(WebError::BadRequest(
            "the request holds no parts (check the boundary)".into(),
        ));
    }
    Ok(response(
        &base_url(&state, &headers),
        &parts,
        study.as_deref(),
    ))
}

/// Parts being stored while the next ones arrive: each is parsed on a task of its own and
/// made durable in a group commit (`store::ingest::Committer`), so that disk work overlaps
/// with receiving and the parts in flight share their fsyncs (the more, the fewer rounds).
const PARTS_IN_FLIGHT: usize = 16;

/// A part's outcome, known now or once its store task ends.
enum Part {
    Done(Box<PartResult>),
    Storing(tokio::task::JoinHandle<PartResult>),
}

/// The outcomes in request order (waiting for the parts still being stored).
async fn settle(parts: Vec<Part>) -> Vec<PartResult> {
    let mut out = Vec::with_capacity(parts.len());
    for part in parts {
        out.push(match part {
            Part::Done(r) => *r,
            Part::Storing(task) => task.await.unwrap_or_else(|e| {
                PartResult::failure(code::PROCESSING_FAILURE, format!("store task failed: {e}"))
            }),
        });
    }
    out
}

impl PartResult {
    fn failure(status: u16, reason: String) -> PartResult {
        PartResult {
            sop_class: String::new(),
            sop_instance: String::new(),
            study: String::new(),
            series: String::new(),
            status,
            reason,
            unindexed: None,
        }
    }
}

/// Read every part. On a request-level error, the parts stored before it are returned too.
async fn receive(
    state: &WebState,
    ticket: &mut Ticket,
    headers: &HeaderMap,
    study: Option<&str>,
    body: Body,
) -> Result<Vec<PartResult>, (Vec<PartResult>, WebError)> {
    let limits = &state.config.dicomweb;
    let boundary = request_boundary(
        headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    )
    .map_err(|e| (vec![], e))?;
    let too_large = |what: &str, limit: u64| {
        WebError::PayloadTooLarge(format!("{what} exceeds the limit of {limit} bytes"))
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_request_bytes) {
        return Err((vec![], too_large("the request", limits.max_request_bytes)));
    }
    // Count what arrives; past the limit, the stream ends in an error that multer reports.
    let over_limit = Arc::new(AtomicBool::new(false));
    let flag = over_limit.clone();
    let max = limits.max_request_bytes;
    let mut seen = 0u64;
    let stream = body.into_data_stream().map(move |chunk| {
        let chunk = chunk.map_err(std::io::Error::other)?;
        seen += chunk.len() as u64;
        if seen > max {
            flag.store(true, Ordering::Relaxed);
            return Err(std::io::Error::other("request body over the size limit"));
        }
        Ok(chunk)
    });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut parts: Vec<Part> = Vec::new();
    let in_flight = Arc::new(tokio::sync::Semaphore::new(PARTS_IN_FLIGHT));
    let malformed = |e: multer::Error, flag: &AtomicBool| {
        if flag.load(Ordering::Relaxed) {
            too_large("the request", max)
        } else {
            WebError::BadRequest(format!("malformed multipart body: {e}"))
        }
    };
    let error = loop {
        let mut field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break None,
            Err(e) => break Some(malformed(e, &over_limit)),
        };
        let part_type = field
            .content_type()
            .map(|m| m.essence_str().to_ascii_lowercase());
        let mut incoming = match state.core.incoming().await {
            Ok(i) => i,
            Err(f) => break Some(WebError::Internal(f.reason)),
        };
        let mut write_error = None;
        let mut head = Vec::with_capacity(132);
        let broken = loop {
            match field.chunk().await {
                Ok(Some(chunk)) => {
                    if head.len() < 132 {
                        let take = (132 - head.len()).min(chunk.len());
                        head.extend_from_slice(&chunk[..take]);
                    }
                    if incoming.len() + chunk.len() as u64 > limits.max_instance_bytes {
                        break Some(too_large("an instance", limits.max_instance_bytes));
                    }
                    if write_error.is_none() {
                        write_error = incoming.push(chunk).await.err();
                    }
                }
                Ok(None) => break None,
                Err(e) => break Some(malformed(e, &over_limit)),
            }
        };
        if broken.is_some() {
            // The part broke off: `incoming` drops here and nothing of it stays.
            break broken;
        }
        let rejected = if part_type
            .as_deref()
            .is_some_and(|t| t != "application/dicom")
        {
            Some(PartResult::failure(
                code::CANNOT_UNDERSTAND,
                format!(
                    "part is {}, not application/dicom",
                    part_type.unwrap_or_default()
                ),
            ))
        } else if head.len() < 132 || &head[128..132] != b"DICM" {
            Some(PartResult::failure(
                code::CANNOT_UNDERSTAND,
                "part is not a DICOM Part 10 file".into(),
            ))
        } else {
            write_error.map(|f| PartResult::failure(f.status, f.reason))
        };
        if let Some(result) = rejected {
            incoming.abort().await;
            parts.push(Part::Done(Box::new(result)));
            continue;
        }
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break Some(WebError::Internal("store tasks closed".into()));
        };
        let (state, study) = (state.clone(), study.map(str::to_string));
        parts.push(Part::Storing(tokio::spawn(async move {
            let result = store_part(&state, incoming, study.as_deref()).await;
            drop(permit);
            result
        })));
    };
    let mut parts = settle(parts).await;
    index_parts(state, ticket, &mut parts).await;
    match error {
        None => Ok(parts),
        Some(e) => Err((parts, e)),
    }
}

/// Store one received part through the shared ingest path (durable; indexed by
/// [`index_parts`]).
async fn store_part(state: &WebState, incoming: Incoming, study: Option<&str>) -> PartResult {
    let expected = Expected {
        study_uid: study,
        ..Default::default()
    };
    match state.core.ingest_durable(incoming, expected).await {
        Ok(durable) => {
            let l = durable.location();
            PartResult {
                sop_class: l.sop_class_uid,
                sop_instance: l.sop_instance_uid,
                study: l.study_instance_uid,
                series: l.series_instance_uid,
                status: durable.status(),
                reason: String::new(),
                unindexed: Some(durable),
            }
        }
        // The meta group names the instance even when the data set turns out bad.
        Err(f) => PartResult {
            sop_class: f.sop_class,
            sop_instance: f.sop_instance,
            ..PartResult::failure(f.status, f.reason)
        },
    }
}

/// Parts indexed per transaction: one commit (one WAL fsync) per batch, not per instance.
const INDEX_BATCH: usize = 256;

/// Index the stored parts a batch at a time; each is durable and indexed before the response
/// goes out (PS3.18 10.5.3). A batch that cannot be indexed fails all its parts.
async fn index_parts(state: &WebState, ticket: &mut Ticket, parts: &mut [PartResult]) {
    let mut stored: Vec<&mut PartResult> =
        parts.iter_mut().filter(|p| p.unindexed.is_some()).collect();
    for batch in stored.chunks_mut(INDEX_BATCH) {
        let durable: Vec<Durable> = batch
            .iter_mut()
            .filter_map(|p| p.unindexed.take())
            .collect();
        if let Err(f) = state.core.index(ticket, durable).await {
            for part in batch.iter_mut() {
                part.status = f.status;
                part.reason = f.reason.clone();
            }
        }
    }
}

/// The STOW-RS response body and status (PS3.18 10.5.3, Table 10.5.3-1).
fn response(base: &str, parts: &[PartResult], study: Option<&str>) -> Response {
    let mut body = Map::new();
    let studies: BTreeSet<&str> = parts
        .iter()
        .filter(|p| !p.failed())
        .map(|p| p.study.as_str())
        .collect();
    if let Some(one) =
        study.or_else(|| (studies.len() == 1).then(|| *studies.iter().next().expect("one")))
    {
        put(
            &mut body,
            RETRIEVE_URL,
            VR::UR,
            &format!("{base}/studies/{one}"),
        );
    }
    let mut referenced = Vec::new();
    let mut failed = Vec::new();
    for p in parts {
        let mut item = Map::new();
        put(&mut item, REFERENCED_SOP_CLASS, VR::UI, &p.sop_class);
        put(&mut item, REFERENCED_SOP_INSTANCE, VR::UI, &p.sop_instance);
        if p.failed() {
            put(&mut item, FAILURE_REASON, VR::US, &p.status.to_string());
            failed.push(Json::Object(item));
        } else {
            let url = format!(
                "{base}/studies/{}/series/{}/instances/{}",
                p.study, p.series, p.sop_instance
            );
            put(&mut item, RETRIEVE_URL, VR::UR, &url);
            if p.status != code::SUCCESS {
                put(&mut item, WARNING_REASON, VR::US, &p.status.to_string());
            }
            referenced.push(Json::Object(item));
        }
    }
    if !failed.is_empty() {
        body.insert(
            tag_key(FAILED_SOP_SEQUENCE),
            serde_json::json!({"vr": "SQ", "Value": failed}),
        );
    }
    if !referenced.is_empty() {
        body.insert(
            tag_key(REFERENCED_SOP_SEQUENCE),
            serde_json::json!({"vr": "SQ", "Value": referenced}),
        );
    }
    let n_failed = parts.iter().filter(|p| p.failed()).count();
    let warnings = parts
        .iter()
        .any(|p| p.status != code::SUCCESS && !p.failed());
    let status = if n_failed == parts.len() {
        StatusCode::CONFLICT
    } else if n_failed > 0 || warnings {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "application/dicom+json")],
        Json::Object(body).to_string(),
    )
        .into_response();
    // The FailureReason codes say little: the reasons go along as warnings (RFC 7234 5.5).
    for p in parts.iter().filter(|p| p.failed()).take(20) {
        tracing::warn!(sop = %p.sop_instance, status = p.status, reason = %p.reason, "STOW-RS part failed");
        let text = format!(
            "299 beeldbrug: \"{}: {}\"",
            p.sop_instance,
            p.reason.replace('"', "'")
        );
        if let Ok(v) = axum::http::HeaderValue::from_str(&text) {
            response.headers_mut().append(header::WARNING, v);
        }
    }
    response
}
