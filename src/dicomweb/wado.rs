//! WADO-RS instance and metadata retrieval (PS3.18 10.4): studies, series and instances as
//! `multipart/related; type="application/dicom"` streamed part by part from the blob store,
//! and `/metadata` as a streamed DICOM JSON array with BulkDataURIs.

use super::json::{dataset_json, tag_key, BulkData};
use super::media::{instance_choices, parse_accept, Framing, SyntaxRequest};
use super::multipart;
use super::producer::{self, SendError};
use super::transcode::{plan, transcode_file, Plan};
use super::{admit, base_url, WebCaller, WebError, WebState};
use crate::core::{InstanceLocation, Selection};
use crate::dimse::dataset::{open_stored, Extent, PIXEL_DATA};
use crate::pacs::gateway::Source;
use crate::store::BlobStore;
use crate::trust::{Caller, Operation, Outcome};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::Value as Json;
use std::collections::BTreeSet;

pub fn selection(study: &str, series: Option<&str>, instance: Option<&str>) -> Selection {
    Selection {
        study_uids: vec![study.to_string()],
        series_uids: series.map(|s| vec![s.to_string()]).unwrap_or_default(),
        sop_instance_uids: instance.map(|s| vec![s.to_string()]).unwrap_or_default(),
        ..Default::default()
    }
}

/// Audit one WADO-RS operation over `locations`.
pub async fn audit(
    state: &WebState,
    caller: &Caller,
    locations: &[InstanceLocation],
    result: &str,
    detail: String,
) {
    let mut touched = Touched::default();
    touched.add(locations);
    touched.audit(state, caller, result, detail).await;
}

/// The patients and studies a retrieve touched, gathered page by page for its audit event.
#[derive(Debug, Default)]
pub struct Touched {
    patients: BTreeSet<String>,
    studies: BTreeSet<String>,
}

impl Touched {
    pub fn add(&mut self, locations: &[InstanceLocation]) {
        for l in locations {
            self.patients.insert(l.patient_id.clone());
            self.studies.insert(l.study_instance_uid.clone());
        }
    }

    pub async fn audit(self, state: &WebState, caller: &Caller, result: &str, detail: String) {
        let outcome = Outcome {
            patient_ids: self.patients.into_iter().collect(),
            study_uids: self.studies.into_iter().collect(),
            result: result.into(),
            detail,
            grounds: String::new(),
        };
        state.trust.audit(caller, Operation::WadoRs, outcome).await;
    }
}

/// 404 for a selection that names no stored instance (audited).
async fn not_found(state: &WebState, caller: &Caller, selection: &Selection) -> WebError {
    let what = format!(
        "no instances for study {:?} series {:?} instance {:?}",
        selection.study_uids, selection.series_uids, selection.sop_instance_uids
    );
    audit(state, caller, &[], "failure", what.clone()).await;
    WebError::NotFound(what)
}

/// The whole decision for a retrieve: the caller, then the patients of the selection.
async fn admit_retrieve(
    state: &WebState,
    caller: &Caller,
    selection: &Selection,
) -> Result<(), WebError> {
    admit(state, caller, Operation::WadoRs).await?;
    super::guard::admit_patients(state, caller, Operation::WadoRs, selection).await
}

/// Admit the caller and find the selected instances; 404 (audited) when there are none.
pub async fn locate(
    state: &WebState,
    caller: &Caller,
    selection: &Selection,
) -> Result<Vec<InstanceLocation>, WebError> {
    admit_retrieve(state, caller, selection).await?;
    super::passthrough::ensure_cached(state, caller, selection).await?;
    let locations = state.index.locate(selection).await?;
    if locations.is_empty() {
        return Err(not_found(state, caller, selection).await);
    }
    Ok(locations)
}

/// [`locate`] for one instance named by its three UIDs.
pub async fn locate_instance(
    state: &WebState,
    caller: &Caller,
    study: &str,
    series: &str,
    sop: &str,
) -> Result<InstanceLocation, WebError> {
    let sel = selection(study, Some(series), Some(sop));
    let mut found = locate(state, caller, &sel).await?;
    Ok(found.swap_remove(0))
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

/// Instances per index page while a study streams: the instance list in memory stays
/// bounded whatever the study's size.
const PAGE: u32 = 256;

/// The instances of a selection, [`PAGE`] index rows at a time, in `locate` order.
struct Pages {
    selection: Selection,
    offset: u32,
    done: bool,
}

impl Pages {
    fn new(selection: Selection) -> Self {
        Pages {
            selection,
            offset: 0,
            done: false,
        }
    }

    /// The next page; `None` after the last one.
    async fn next(
        &mut self,
        index: &dyn crate::store::Index,
    ) -> Result<Option<Vec<InstanceLocation>>, crate::store::IndexError> {
        if self.done {
            return Ok(None);
        }
        let page = index
            .locate_page(&self.selection, self.offset, PAGE)
            .await?;
        self.offset += PAGE;
        self.done = page.len() < PAGE as usize;
        Ok(Some(page))
    }

    /// Whether the page just returned was the last one.
    fn at_end(&self) -> bool {
        self.done
    }
}

/// Admit the caller and check that the selection names stored instances (404, audited, when
/// not); returns their distinct transfer syntaxes.
async fn admit_stored(
    state: &WebState,
    caller: &Caller,
    selection: &Selection,
) -> Result<Vec<String>, WebError> {
    admit(state, caller, Operation::WadoRs).await?;
    let stored = state.index.transfer_syntaxes(selection).await?;
    if stored.is_empty() {
        return Err(not_found(state, caller, selection).await);
    }
    Ok(stored)
}

async fn retrieve(
    state: WebState,
    caller: Caller,
    headers: HeaderMap,
    selection: Selection,
    single_resource: bool,
) -> Result<Response, WebError> {
    admit_retrieve(&state, &caller, &selection).await?;
    let mut pin = None;
    if let (Some(gateway), Some(study)) = (state.gateway.clone(), selection.study_uids.first()) {
        match gateway.resolve(&selection).await {
            Ok(Source::Pacs(follower)) => {
                let streamed = super::passthrough::retrieve(
                    state.clone(),
                    caller.clone(),
                    &headers,
                    selection.clone(),
                    single_resource,
                    follower,
                )
                .await?;
                if let Some(response) = streamed {
                    return Ok(response);
                }
            }
            Ok(Source::Cache) => {}
            Err(e) => {
                let e = super::passthrough::pacs_failed(&state, &caller, Operation::WadoRs, e);
                return Err(e.await);
            }
        }
        // Streamed from the cache: not evicted meanwhile.
        pin = Some(gateway.fetches.pin(study));
    }
    let stored = admit_stored(&state, &caller, &selection).await?;
    let accept = parse_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let choices = instance_choices(&accept, single_resource);
    if choices.is_empty() {
        return Err(WebError::NotAcceptable(
            "acceptable: multipart/related; type=\"application/dicom\" (PS3.18 10.4.1.2)".into(),
        ));
    }
    // Decided before the first byte: a syntax some instance cannot be given in is a 406.
    let producible = |ts: &SyntaxRequest| stored.iter().all(|s| plan(s, ts) != Plan::Impossible);
    let Some((framing, syntax)) = choices.iter().find(|(_, ts)| producible(ts)).cloned() else {
        let detail = format!(
            "cannot produce the requested transfer syntax from instances stored as {stored:?}; \
             ask for transfer-syntax=* to get them as stored"
        );
        let locations = state.index.locate(&selection).await?;
        audit(&state, &caller, &locations, "failure", detail.clone()).await;
        return Err(WebError::NotAcceptable(detail));
    };
    if framing == Framing::Single {
        let locations = state.index.locate(&selection).await?;
        let Some(loc) = locations.into_iter().next() else {
            return Err(not_found(&state, &caller, &selection).await);
        };
        return single_instance(&state, &caller, &headers, loc, &syntax).await;
    }
    let boundary = multipart::new_boundary();
    let (tx, body) = multipart::channel_body();
    let content_type = multipart::content_type(&boundary, "application/dicom", None);
    tokio::spawn(async move {
        let _pin = pin;
        let (mut touched, mut sent) = (Touched::default(), 0usize);
        let mut pages = Pages::new(selection);
        let result = loop {
            let page = match pages.next(state.index.as_ref()).await {
                Ok(Some(page)) => page,
                Ok(None) => break "success",
                Err(e) => {
                    tx.fail(e.to_string()).await;
                    break "failure";
                }
            };
            touched.add(&page);
            let last = pages.at_end();
            let (blobs, syntax, boundary, tx) = (
                state.blobs.clone(),
                syntax.clone(),
                boundary.clone(),
                tx.clone(),
            );
            let produced = tokio::task::spawn_blocking(move || {
                producer::instances(&blobs, &page, &syntax, &boundary, &tx, last)
            })
            .await;
            let Ok((page_sent, end)) = produced else {
                break "failure";
            };
            sent += page_sent;
            match end {
                Ok(()) if last => break "success",
                Ok(()) => {}
                Err(SendError::Disconnected) => break "cancelled",
                Err(SendError::Failed(_)) => break "failure",
            }
        };
        let detail = format!("{sent} instances sent");
        touched.audit(&state, &caller, result, detail).await;
    });
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

async fn transcode_blob(
    blobs: &BlobStore,
    loc: &InstanceLocation,
    target: &str,
) -> Result<Vec<u8>, String> {
    let path = blobs.path(&loc.blob_key);
    let target = target.to_string();
    tokio::task::spawn_blocking(move || transcode_file(&path, &target))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// A single-instance resource as a bare `application/dicom` body, with ETag and Range.
async fn single_instance(
    state: &WebState,
    caller: &Caller,
    headers: &HeaderMap,
    loc: InstanceLocation,
    syntax: &SyntaxRequest,
) -> Result<Response, WebError> {
    let locations = [loc.clone()];
    let response = match plan(&loc.transfer_syntax_uid, syntax) {
        Plan::AsStored => {
            let ct = format!(
                "application/dicom; transfer-syntax={}",
                loc.transfer_syntax_uid
            );
            let path = state.blobs.path(&loc.blob_key);
            super::ranged::file_response(&path, None, &ct, headers).await?
        }
        Plan::Transcode(target) => {
            let bytes = transcode_blob(&state.blobs, &loc, &target)
                .await
                .map_err(WebError::Internal)?;
            let ct = format!("application/dicom; transfer-syntax={target}");
            super::ranged::bytes_response(Bytes::from(bytes), &ct, headers)?
        }
        Plan::Impossible => {
            return Err(WebError::NotAcceptable(
                "cannot produce the requested transfer syntax".into(),
            ))
        }
    };
    audit(
        state,
        caller,
        &locations,
        "success",
        "1 instance sent".into(),
    )
    .await;
    Ok(response)
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
    admit_retrieve(&state, &caller, &selection).await?;
    super::passthrough::ensure_cached(&state, &caller, &selection).await?;
    admit_stored(&state, &caller, &selection).await?;
    let accept = parse_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    if !accept.iter().any(|r| {
        super::media::covers(&r.essence, "application/dicom+json")
            || r.essence == "application/json"
    }) {
        return Err(WebError::NotAcceptable(
            "metadata is offered as application/dicom+json".into(),
        ));
    }
    let base = base_url(&state, &headers);
    let (tx, body) = multipart::channel_body();
    tokio::spawn(async move {
        let (mut touched, mut sent) = (Touched::default(), 0usize);
        let mut pages = Pages::new(selection);
        // One JSON array over all pages: `[` before the first instance, `,` between.
        let result = 'pages: loop {
            let page = match pages.next(state.index.as_ref()).await {
                Ok(Some(page)) => page,
                Ok(None) => break "success",
                Err(e) => {
                    tx.fail(e.to_string()).await;
                    break "failure";
                }
            };
            touched.add(&page);
            for loc in &page {
                let json = match instance_json(&state.blobs, loc, &base).await {
                    Ok(j) => j,
                    Err(problem) => {
                        tracing::error!(sop = %loc.sop_instance_uid, %problem, "metadata failed");
                        tx.fail(problem).await;
                        break 'pages "failure";
                    }
                };
                let mut chunk = Vec::with_capacity(4096);
                chunk.push(if sent == 0 { b'[' } else { b',' });
                if serde_json::to_writer(&mut chunk, &json).is_err() {
                    tx.fail("metadata does not serialize".into()).await;
                    break 'pages "failure";
                }
                if tx.send(Bytes::from(chunk)).await.is_err() {
                    break 'pages "cancelled";
                }
                sent += 1;
            }
            if pages.at_end() {
                break "success";
            }
        };
        let close: &'static [u8] = if sent == 0 { b"[]" } else { b"]" };
        let result = match result {
            "success" if tx.send(Bytes::from_static(close)).await.is_err() => "cancelled",
            other => other,
        };
        let detail = format!("metadata of {sent} instances");
        touched.audit(&state, &caller, result, detail).await;
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
    blobs: &BlobStore,
    loc: &InstanceLocation,
    base: &str,
) -> Result<Json, String> {
    let path = blobs.path(&loc.blob_key);
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
