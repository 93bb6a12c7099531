//! WADO-RS instance and metadata retrieval (PS3.18 10.4): studies, series and instances as
//! `multipart/related; type="application/dicom"` streamed part by part, and `/metadata` as a
//! streamed DICOM JSON array with BulkDataURIs. Where the instances come from (the cache, or
//! a fetch from the PACS streamed as it arrives) is the core's business: this front reads
//! [`Instances`] and writes them.

use super::json::{dataset_json, tag_key, BulkData};
use super::media::{instance_choices, parse_accept, Framing, SyntaxRequest};
use super::multipart;
use super::producer::{self, SendError, MISSING_FILE};
use super::stored_parts::{self, Ended, Feed, Feeder};
use super::transcode::{plan, transcode_file, Plan};
use super::{base_url, WebCaller, WebError, WebState};
use crate::core::transfers::Tracked;
use crate::core::{Delivery, InstanceLocation, Instances, Retrieval, Selection, Stored, Ticket};
use crate::dimse::dataset::{open_stored, Extent, PIXEL_DATA};
use crate::trust::{Caller, Operation};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::Value as Json;
use std::sync::Arc;

pub fn selection(study: &str, series: Option<&str>, instance: Option<&str>) -> Selection {
    Selection {
        study_uids: vec![study.to_string()],
        series_uids: series.map(|s| vec![s.to_string()]).unwrap_or_default(),
        sop_instance_uids: instance.map(|s| vec![s.to_string()]).unwrap_or_default(),
        ..Default::default()
    }
}

/// Admit the caller and find the selected instances once the cache holds them all (frames,
/// bulk data, rendered); 404 when there are none. Refusals and failures are audited by the
/// core; on success the ticket owes the request's record.
pub async fn locate(
    state: &WebState,
    caller: &Caller,
    selection: &Selection,
) -> Result<(Vec<InstanceLocation>, Ticket), WebError> {
    locate_as(state, caller, Operation::WadoRs, selection).await
}

/// [`locate`] audited as `operation` (WADO-URI shares the WADO-RS paths).
pub async fn locate_as(
    state: &WebState,
    caller: &Caller,
    operation: Operation,
    selection: &Selection,
) -> Result<(Vec<InstanceLocation>, Ticket), WebError> {
    let ticket = state.core.admit(caller, operation).await?;
    Ok(state.core.locate(ticket, selection.clone()).await?)
}

/// [`locate`] for one instance named by its three UIDs.
pub async fn locate_instance(
    state: &WebState,
    caller: &Caller,
    study: &str,
    series: &str,
    sop: &str,
) -> Result<(InstanceLocation, Ticket), WebError> {
    let sel = selection(study, Some(series), Some(sop));
    let (mut found, ticket) = locate(state, caller, &sel).await?;
    let loc = found.swap_remove(0);
    let ticket = present(state, &loc, ticket).await?;
    Ok((loc, ticket))
}

/// The ticket back when the instance's file is there; otherwise the request fails with 404
/// (and is audited so) instead of a 500 when the file is read.
pub(super) async fn present(
    state: &WebState,
    loc: &InstanceLocation,
    mut ticket: Ticket,
) -> Result<Ticket, WebError> {
    if state.core.stored().is_present(loc).await {
        return Ok(ticket);
    }
    ticket.touch(std::slice::from_ref(loc));
    ticket.finish("failure", MISSING_FILE).await;
    Err(WebError::NotFound(MISSING_FILE.into()))
}

pub async fn study(
    State(s): State<WebState>,
    c: WebCaller,
    h: HeaderMap,
    Path(study): Path<String>,
) -> Result<Response, WebError> {
    retrieve(s, c.0, h, selection(&study, None, None), false).await
}

pub async fn series(
    State(s): State<WebState>,
    c: WebCaller,
    h: HeaderMap,
    Path((study, series)): Path<(String, String)>,
) -> Result<Response, WebError> {
    retrieve(s, c.0, h, selection(&study, Some(&series), None), false).await
}

pub async fn instance(
    State(s): State<WebState>,
    c: WebCaller,
    h: HeaderMap,
    Path((study, series, sop)): Path<(String, String, String)>,
) -> Result<Response, WebError> {
    retrieve(
        s,
        c.0,
        h,
        selection(&study, Some(&series), Some(&sop)),
        true,
    )
    .await
}

const NOT_ACCEPTABLE: &str =
    "acceptable: multipart/related; type=\"application/dicom\" (PS3.18 10.4.1.2)";

async fn retrieve(
    state: WebState,
    caller: Caller,
    headers: HeaderMap,
    selection: Selection,
    single_resource: bool,
) -> Result<Response, WebError> {
    let ticket = state.core.admit(&caller, Operation::WadoRs).await?;
    let accept = parse_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let choices = instance_choices(&accept, single_resource);
    if choices.is_empty() {
        ticket.finish("failure", NOT_ACCEPTABLE).await;
        return Err(WebError::NotAcceptable(NOT_ACCEPTABLE.into()));
    }
    // A single `application/dicom` body is answered once the instance is cached; parts
    // stream from the first instance.
    let delivery = match choices[0].0 {
        Framing::Single => Delivery::Cached,
        _ => Delivery::Streamed,
    };
    let mut retrieval = state.core.retrieve(ticket, selection, delivery).await?;
    // Decided before the first byte where the stored syntaxes are known: a syntax some
    // instance cannot be given in is a 406. Instances streamed from a fetch are planned one
    // by one (the first choice; one that cannot be produced fails its part).
    let choices = prefer_wire_syntax(
        choices,
        &state.config.dicomweb.wire_syntax,
        retrieval.stored_syntaxes.as_deref(),
    );
    let chosen = match &retrieval.stored_syntaxes {
        Some(stored) => {
            let producible =
                |ts: &SyntaxRequest| stored.iter().all(|s| plan(s, ts) != Plan::Impossible);
            choices.iter().find(|(_, ts)| producible(ts)).cloned()
        }
        None => choices.first().cloned(),
    };
    let Some((framing, syntax)) = chosen else {
        let detail = format!(
            "cannot produce the requested transfer syntax from instances stored as {:?}; \
             ask for transfer-syntax=* to get them as stored",
            retrieval.stored_syntaxes.unwrap_or_default()
        );
        if let Ok(all) = retrieval.instances.rest().await {
            retrieval.ticket.touch(&all);
        }
        retrieval.ticket.finish("failure", detail.clone()).await;
        return Err(WebError::NotAcceptable(detail));
    };
    if framing == Framing::Single {
        let first = match retrieval.instances.next_batch().await {
            Some(Ok(batch)) => batch.into_iter().next(),
            _ => None,
        };
        let Some(loc) = first else {
            retrieval.ticket.finish("failure", "no instance").await;
            return Err(WebError::NotFound("no instance".into()));
        };
        return single_instance(&state, retrieval.ticket, &headers, loc, &syntax).await;
    }
    let boundary = multipart::new_boundary();
    let content_type = multipart::content_type(&boundary, "application/dicom", None);
    let as_stored = retrieval
        .stored_syntaxes
        .as_deref()
        .is_some_and(|stored| stored.iter().all(|s| plan(s, &syntax) == Plan::AsStored));
    if retrieval.from == "cache" && as_stored {
        let body = from_cache_as_stored(&state, retrieval, boundary);
        return Ok(([(header::CONTENT_TYPE, content_type)], body).into_response());
    }
    let (tx, body) = multipart::channel_body();
    // The sending task stays in the request's span (`telemetry`).
    let span = tracing::Span::current();
    tokio::spawn(tracing::Instrument::instrument(
        async move {
            let Retrieval {
                mut instances,
                mut ticket,
                from,
                sending,
                ..
            } = retrieval;
            let progress = sending.as_ref().map(|s| s.tracked.clone());
            let out = Out {
                syntax: &syntax,
                boundary: &boundary,
                tx: &tx,
                progress,
            };
            let (result, sent) = send_instances(&state, &mut instances, &mut ticket, &out).await;
            // A fetch whose last follower leaves is cancelled: before the record is written.
            drop(instances);
            if let Some(sending) = sending {
                sending.finish(match result {
                    "success" => None,
                    "cancelled" => Some("the client went away".into()),
                    _ => Some(format!("ended broken after {sent} instances")),
                });
            }
            let mut detail = format!("{sent} instances sent");
            if from != "cache" {
                detail.push_str(&format!(", streamed from the {from}"));
            }
            ticket.finish(result, detail).await;
        },
        span,
    ));
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

/// A retrieve the cache answers with every instance as stored (a cache hit): the body reads
/// the files itself on the connection's task ([`stored_parts`]); this task pages the index
/// into it and writes the audit record when the body has ended.
fn from_cache_as_stored(
    state: &WebState,
    retrieval: Retrieval,
    boundary: String,
) -> axum::body::Body {
    let stored = state.core.stored().clone();
    let Retrieval {
        mut instances,
        mut ticket,
        sending,
        ..
    } = retrieval;
    let progress = sending.as_ref().map(|s| s.tracked.clone());
    let (feeder, body) = stored_parts::stored_parts(stored.clone(), boundary, progress);
    // The paging task stays in the request's span (`telemetry`): the audit record's trace id.
    let span = tracing::Span::current();
    tokio::spawn(tracing::Instrument::instrument(
        async move {
            let Feeder {
                batches,
                ended,
                recorded,
            } = feeder;
            loop {
                let feed = match instances.next_batch().await {
                    Some(Ok(batch)) if stored.downloads() => {
                        ticket.touch(&batch);
                        // On object storage, one instance at a time, fetched just ahead of
                        // the body (the channel's depth): the first part goes out after one
                        // download rather than a page's, and a client that leaves stops the
                        // downloads instead of leaving them to fetch the rest of the page.
                        let mut gone = false;
                        for loc in batch {
                            stored.ensure_local(&loc).await;
                            if batches.send(Feed::Batch(vec![loc])).await.is_err() {
                                gone = true;
                                break;
                            }
                        }
                        if gone {
                            break;
                        }
                        continue;
                    }
                    Some(Ok(batch)) => {
                        ticket.touch(&batch);
                        Feed::Batch(batch)
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "WADO-RS retrieve ended incomplete");
                        Feed::Fail(e.to_string())
                    }
                    None => break,
                };
                let failed = matches!(feed, Feed::Fail(_));
                if batches.send(feed).await.is_err() || failed {
                    break;
                }
            }
            // The closed channel ends the body with the closing delimiter.
            drop(batches);
            let ended = ended.await.unwrap_or(Ended::Gone(0));
            drop(instances);
            let (result, sent, failure) = match ended {
                Ended::Complete(n) => ("success", n, None),
                Ended::Gone(n) => ("cancelled", n, Some("the client went away".to_string())),
                Ended::Cancelled(n) => ("cancelled", n, Some(producer::CANCELLED.to_string())),
                Ended::Failed(n, _) => (
                    "failure",
                    n,
                    Some(format!("ended broken after {n} instances")),
                ),
            };
            if let Some(sending) = sending {
                sending.finish(failure);
            }
            ticket
                .finish(result, format!("{sent} instances sent"))
                .await;
            // A complete body sends its closing delimiter now.
            let _ = recorded.send(());
        },
        span,
    ));
    axum::body::Body::new(body)
}

/// `[dicomweb] wire_syntax`: when the client's Accept lists it and every instance is stored
/// uncompressed (known before the first byte), it goes first; otherwise the client's order.
fn prefer_wire_syntax(
    mut choices: Vec<(Framing, SyntaxRequest)>,
    configured: &str,
    stored: Option<&[String]>,
) -> Vec<(Framing, SyntaxRequest)> {
    let Ok(Some(wire)) = crate::transcode::WireSyntax::parse(configured) else {
        return choices;
    };
    let applies = stored.is_some_and(|s| !s.is_empty() && s.iter().all(|s| wire.applies_to(s)));
    let listed = choices
        .iter()
        .position(|(_, ts)| matches!(ts, SyntaxRequest::Uid(uid) if uid == wire.uid()));
    if let (true, Some(at)) = (applies, listed) {
        let wanted = choices.remove(at);
        choices.insert(0, wanted);
    }
    choices
}

/// Where and how a multipart retrieve goes.
struct Out<'a> {
    syntax: &'a SyntaxRequest,
    boundary: &'a str,
    tx: &'a multipart::BodySender,
    /// Its row on the console's transfers board: each instance reported, the operator's
    /// cancel looked at before each.
    progress: Option<Arc<Tracked>>,
}

impl Out<'_> {
    fn cancelled(&self) -> bool {
        self.progress.as_deref().is_some_and(Tracked::is_cancelled)
    }
}

/// Write every instance as a part, a batch per blocking producer call (a page from the
/// cache; one instance from a fetch, flushed to the client at once); then the closing
/// boundary. Returns the audit result and the instances sent. Cancelled on the console, the
/// body ends broken before the next instance.
async fn send_instances(
    state: &WebState,
    instances: &mut Instances,
    ticket: &mut Ticket,
    out: &Out<'_>,
) -> (&'static str, usize) {
    let (syntax, boundary, tx) = (out.syntax, out.boundary, out.tx);
    let mut sent = 0usize;
    loop {
        if out.cancelled() {
            tx.fail(producer::CANCELLED.into()).await;
            return ("cancelled", sent);
        }
        let batch = match instances.next_batch().await {
            Some(Ok(batch)) => batch,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "WADO-RS retrieve ended incomplete");
                tx.fail(e.to_string()).await;
                return ("failure", sent);
            }
            None => {
                if tx.send(multipart::closing(boundary)).await.is_err() {
                    return ("cancelled", sent);
                }
                return ("success", sent);
            }
        };
        ticket.touch(&batch);
        let last = instances.at_end();
        // An instance a fetch still holds in memory goes out from there, from this task.
        let from_memory = match batch.as_slice() {
            [loc] => instances
                .take_data_set(loc)
                .and_then(|data_set| producer::part_from_memory(loc, &data_set, syntax, boundary))
                .map(|chunks| (chunks, loc.size_bytes)),
            _ => None,
        };
        if let Some((chunks, size)) = from_memory {
            if out.cancelled() {
                tx.fail(producer::CANCELLED.into()).await;
                return ("cancelled", sent);
            }
            for chunk in chunks {
                if tx.send(chunk).await.is_err() {
                    return ("cancelled", sent);
                }
            }
            sent += 1;
            if let Some(progress) = &out.progress {
                progress.advance(1, size);
            }
            if last {
                if tx.send(multipart::closing(boundary)).await.is_err() {
                    return ("cancelled", sent);
                }
                return ("success", sent);
            }
            continue;
        }
        let (stored, syntax, boundary_owned, tx_owned) = (
            state.core.stored().clone(),
            syntax.clone(),
            boundary.to_string(),
            tx.clone(),
        );
        let progress = out.progress.clone();
        let produced = tokio::task::spawn_blocking(move || {
            let progress = progress.as_deref();
            producer::instances(
                &stored,
                &batch,
                &syntax,
                &boundary_owned,
                &tx_owned,
                last,
                progress,
            )
        })
        .await;
        let Ok((batch_sent, end)) = produced else {
            return ("failure", sent);
        };
        sent += batch_sent;
        match end {
            Ok(()) if last => return ("success", sent),
            Ok(()) => {}
            Err(SendError::Disconnected) => return ("cancelled", sent),
            Err(SendError::Failed(_)) if out.cancelled() => return ("cancelled", sent),
            Err(SendError::Failed(_)) => return ("failure", sent),
        }
    }
}

async fn transcode_blob(
    stored: &Stored,
    loc: &InstanceLocation,
    target: &str,
) -> Result<Vec<u8>, String> {
    let path = stored.local_file(loc).path().to_path_buf();
    let target = target.to_string();
    tokio::task::spawn_blocking(move || transcode_file(&path, &target))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// A single-instance resource as a bare `application/dicom` body, with ETag and Range.
pub(super) async fn single_instance(
    state: &WebState,
    ticket: Ticket,
    headers: &HeaderMap,
    loc: InstanceLocation,
    syntax: &SyntaxRequest,
) -> Result<Response, WebError> {
    let mut ticket = present(state, &loc, ticket).await?;
    ticket.touch(std::slice::from_ref(&loc));
    let stored = state.core.stored();
    let response = match plan(&loc.transfer_syntax_uid, syntax) {
        Plan::AsStored => {
            let ct = format!(
                "application/dicom; transfer-syntax={}",
                loc.transfer_syntax_uid
            );
            let file = stored.local_file(&loc);
            super::ranged::file_response(file.path(), None, &ct, headers).await
        }
        Plan::Transcode(target) => {
            let bytes = match transcode_blob(stored, &loc, &target).await {
                Ok(b) => b,
                Err(problem) => {
                    ticket.finish("failure", problem.clone()).await;
                    return Err(WebError::Internal(problem));
                }
            };
            let ct = format!("application/dicom; transfer-syntax={target}");
            super::ranged::bytes_response(Bytes::from(bytes), &ct, headers)
        }
        Plan::Impossible => Err(WebError::NotAcceptable(
            "cannot produce the requested transfer syntax".into(),
        )),
    };
    match &response {
        Ok(_) => ticket.finish("success", "1 instance sent").await,
        Err(e) => ticket.finish("failure", e.to_string()).await,
    }
    response
}

pub async fn study_metadata(
    State(s): State<WebState>,
    c: WebCaller,
    h: HeaderMap,
    Path(study): Path<String>,
) -> Result<Response, WebError> {
    metadata(s, c.0, h, selection(&study, None, None)).await
}

pub async fn series_metadata(
    State(s): State<WebState>,
    c: WebCaller,
    h: HeaderMap,
    Path((study, series)): Path<(String, String)>,
) -> Result<Response, WebError> {
    metadata(s, c.0, h, selection(&study, Some(&series), None)).await
}

pub async fn instance_metadata(
    State(s): State<WebState>,
    c: WebCaller,
    h: HeaderMap,
    Path((study, series, sop)): Path<(String, String, String)>,
) -> Result<Response, WebError> {
    metadata(s, c.0, h, selection(&study, Some(&series), Some(&sop))).await
}

/// The metadata of the selected instances as one JSON array, streamed instance by instance.
async fn metadata(
    state: WebState,
    caller: Caller,
    headers: HeaderMap,
    selection: Selection,
) -> Result<Response, WebError> {
    let ticket = state.core.admit(&caller, Operation::WadoRs).await?;
    let accept = parse_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    if !accept.iter().any(|r| {
        super::media::covers(&r.essence, "application/dicom+json")
            || r.essence == "application/json"
    }) {
        let why = "metadata is offered as application/dicom+json";
        ticket.finish("failure", why).await;
        return Err(WebError::NotAcceptable(why.into()));
    }
    let retrieval = state
        .core
        .retrieve(ticket, selection, Delivery::Cached)
        .await?;
    let base = base_url(&state, &headers);
    let (tx, body) = multipart::channel_body();
    tokio::spawn(async move {
        let Retrieval {
            mut instances,
            mut ticket,
            ..
        } = retrieval;
        let mut sent = 0usize;
        // One JSON array over all batches: `[` before the first instance, `,` between.
        let result = 'batches: loop {
            let batch = match instances.next_batch().await {
                Some(Ok(batch)) => batch,
                None => break "success",
                Some(Err(e)) => {
                    tx.fail(e.to_string()).await;
                    break "failure";
                }
            };
            ticket.touch(&batch);
            for loc in &batch {
                let json = match instance_json(state.core.stored(), loc, &base).await {
                    Ok(j) => j,
                    Err(problem) => {
                        tracing::error!(sop = %loc.sop_instance_uid, %problem, "metadata failed");
                        tx.fail(problem).await;
                        break 'batches "failure";
                    }
                };
                let mut chunk = Vec::with_capacity(4096);
                chunk.push(if sent == 0 { b'[' } else { b',' });
                if serde_json::to_writer(&mut chunk, &json).is_err() {
                    tx.fail("metadata does not serialize".into()).await;
                    break 'batches "failure";
                }
                if tx.send(Bytes::from(chunk)).await.is_err() {
                    break 'batches "cancelled";
                }
                sent += 1;
            }
        };
        let close: &'static [u8] = if sent == 0 { b"[]" } else { b"]" };
        let result = match result {
            "success" if tx.send(Bytes::from_static(close)).await.is_err() => "cancelled",
            other => other,
        };
        ticket
            .finish(result, format!("metadata of {sent} instances"))
            .await;
    });
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/dicom+json"),
        )],
        body,
    )
        .into_response())
}

/// The base of an instance's bulk data URIs.
pub fn bulk_base(base: &str, loc: &InstanceLocation) -> String {
    format!(
        "{base}/studies/{}/series/{}/instances/{}/bulkdata",
        loc.study_instance_uid, loc.series_instance_uid, loc.sop_instance_uid
    )
}

/// One instance's metadata: its data set up to Pixel Data, and Pixel Data as a BulkDataURI.
async fn instance_json(
    stored: &Stored,
    loc: &InstanceLocation,
    base: &str,
) -> Result<Json, String> {
    if !stored.is_present(loc).await {
        return Err(MISSING_FILE.into());
    }
    let path = stored.local_file(loc).path().to_path_buf();
    let bulk = bulk_base(base, loc);
    tokio::task::spawn_blocking(move || {
        let (obj, pixel) =
            open_stored(&path, Extent::UpToPixelData).map_err(|e| e.to_string())?;
        let mut json = dataset_json(&obj, &BulkData { base: &bulk }, "");
        if let (Some(at), Json::Object(map)) = (pixel, &mut json) {
            let key = tag_key(PIXEL_DATA);
            map.insert(
                key.clone(),
                serde_json::json!({ "vr": at.vr.to_string(), "BulkDataURI": format!("{bulk}/{key}") }),
            );
        }
        Ok(json)
    })
    .await
    .map_err(|e| e.to_string())?
}
