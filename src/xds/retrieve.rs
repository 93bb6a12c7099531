//! RAD-69 Retrieve Imaging Document Set and RAD-75 Cross Gateway Retrieve Imaging Document
//! Set (IHE RAD TF-3 4.69, 4.75): documents are SOP instances, named by Study, Series and SOP
//! Instance UID together; ITI-43 Retrieve Document Set and ITI-39 Cross Gateway Retrieve
//! (ITI TF-2b 3.43, 3.39): a document by its uniqueId alone (the KOS manifest and reports are
//! instances of their study). The answer is a `RetrieveDocumentSetResponse` as MTOM/XOP,
//! streamed.
//!
//! How a call is answered:
//! 1. The request is read into document requests; the repository and community each names are
//!    checked against `[xds]` (XDSUnknownRepositoryId, XDSUnknownCommunity).
//! 2. Which documents exist, and may be seen, is decided before the envelope is written (its
//!    status and errors come first): one core query per requested series, at IMAGE level
//!    with the series' SOP Instance UIDs, over the cache and the sources routed to this front
//!    (the PACS in gateway mode). The core leaves out the instances of patients the caller may
//!    not see (Mitz consent Deny / Indeterminate), so such a document is answered exactly as
//!    one that does not exist. A match counts only when its Study, Series and SOP Instance UIDs
//!    are the requested ones together.
//! 3. One core retrieve of what was found, streamed. From the cache the instances' stored
//!    syntaxes are known before the first byte: each document is sent as stored when its
//!    syntax is listed in TransferSyntaxUIDList, else transcoded to a listed uncompressed
//!    syntax where it can be decoded, else answered with error `urn:dicom:wado:0007`. From a
//!    fetch (gateway mode, cache miss) the parts are written as the PACS delivers the
//!    instances, each planned on arrival.
//! 4. Status: Success when every document comes back, PartialSuccess when some do, Failure when
//!    none (ebRS 3.0 / ITI TF-3 4.2.4.2).
//!
//! A document announced in the envelope that cannot be sent after all (a file unreadable, an
//! instance the PACS does not deliver, or delivers in a syntax that cannot be given) ends the
//! HTTP body broken (the chunked transfer is aborted): the client sees a failed transfer, never a
//! well-formed message with a part missing. The audit record says so.
//!
//! Error codes (docs/xds.md "The SOAP endpoints"): an unknown or unavailable document is
//! `XDSDocumentUniqueIdError` (ITI TF-3 Table 4.2.4.1-2: "the document associated with the
//! uniqueId is not available ... or the requestor is not authorized"), location the SOP Instance
//! UID; `XDSMissingDocument` is, in that table, a Provide and Register error.

use super::mtom;
use super::{Call, XdsError, NS_RS, NS_SOAP12, NS_WSA, NS_XDSB, NS_XDSI};
use crate::core::transfers::Tracked;
use crate::core::{
    query::indexed_attr_by_keyword, Delivery, InstanceLocation, Instances, Level, Matcher, Query,
    Retrieval, Selection, Stored, Ticket,
};
use crate::dicomweb::multipart::{self, BodySender};
use crate::dicomweb::producer::{BlockingBody, SendError, CANCELLED};
use crate::transcode::{for_listed as choose, transcode_file, Plan};
use crate::xml::{escape, Element};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use dicom_core::Tag;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// Most documents in one request.
pub const MAX_DOCUMENTS: usize = 5000;

const SOP_INSTANCE_UID: Tag = Tag(0x0008, 0x0018);
const STUDY_INSTANCE_UID: Tag = Tag(0x0020, 0x000D);
const SERIES_INSTANCE_UID: Tag = Tag(0x0020, 0x000E);

/// ebRS / IHE status URNs.
pub const SUCCESS: &str = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success";
pub const PARTIAL_SUCCESS: &str = "urn:ihe:iti:2007:ResponseStatusType:PartialSuccess";
pub const FAILURE: &str = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure";
pub(super) const SEVERITY_ERROR: &str = "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error";

/// Error codes of the answer.
pub const DOCUMENT_UNIQUE_ID_ERROR: &str = "XDSDocumentUniqueIdError";
pub const UNKNOWN_REPOSITORY: &str = "XDSUnknownRepositoryId";
pub const UNKNOWN_COMMUNITY: &str = "XDSUnknownCommunity";
/// DICOM PS3.18 (WADO-WS): the requested transfer syntax cannot be provided.
pub const SYNTAX_NOT_SUPPORTED: &str = "urn:dicom:wado:0007";

/// One requested document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentRequest {
    /// RAD-69 / RAD-75: the StudyRequest / SeriesRequest it is in; ITI-43 / ITI-39: none.
    pub study: Option<String>,
    pub series: Option<String>,
    pub unique_id: String,
    pub repository: String,
    pub home_community: Option<String>,
}

/// A request as read: its documents and, for RAD-69 / RAD-75, the transfer syntaxes asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub documents: Vec<DocumentRequest>,
    pub syntaxes: Option<Vec<String>>,
}

/// Read a `RetrieveImagingDocumentSetRequest` (RAD-69 / RAD-75, XDSI.b schema).
pub fn read_imaging(body: &Element) -> Result<Request, XdsError> {
    let mut documents = Vec::new();
    for study in body.children_named(NS_XDSI, "StudyRequest") {
        let study_uid = study.attr("studyInstanceUID").unwrap_or_default().trim();
        for series in study.children_named(NS_XDSI, "SeriesRequest") {
            let series_uid = series.attr("seriesInstanceUID").unwrap_or_default().trim();
            for doc in series.children_named(NS_XDSB, "DocumentRequest") {
                let mut d = read_document(doc)?;
                d.study = Some(study_uid.to_string());
                d.series = Some(series_uid.to_string());
                documents.push(d);
                limit(documents.len())?;
            }
        }
    }
    if documents.is_empty() {
        return Err(XdsError::Malformed(
            "RetrieveImagingDocumentSetRequest names no DocumentRequest in a StudyRequest/SeriesRequest"
                .into(),
        ));
    }
    let list = body
        .child(NS_XDSI, "TransferSyntaxUIDList")
        .ok_or_else(|| XdsError::Malformed("TransferSyntaxUIDList is required".into()))?;
    let syntaxes = list
        .children_named(NS_XDSI, "TransferSyntaxUID")
        .map(|t| t.trimmed().to_string())
        .collect::<Vec<_>>();
    if syntaxes.is_empty() {
        return Err(XdsError::Malformed(
            "TransferSyntaxUIDList names no TransferSyntaxUID".into(),
        ));
    }
    Ok(Request {
        documents,
        syntaxes: Some(syntaxes),
    })
}

/// Read a `RetrieveDocumentSetRequest` (ITI-43 / ITI-39, XDS.b schema).
pub fn read_documents(body: &Element) -> Result<Request, XdsError> {
    let mut documents = Vec::new();
    for doc in body.children_named(NS_XDSB, "DocumentRequest") {
        documents.push(read_document(doc)?);
        limit(documents.len())?;
    }
    if documents.is_empty() {
        return Err(XdsError::Malformed(
            "RetrieveDocumentSetRequest names no DocumentRequest".into(),
        ));
    }
    Ok(Request {
        documents,
        syntaxes: None,
    })
}

pub(super) fn limit(n: usize) -> Result<(), XdsError> {
    if n > MAX_DOCUMENTS {
        return Err(XdsError::TooLarge(format!(
            "more than {MAX_DOCUMENTS} documents in one request"
        )));
    }
    Ok(())
}

fn read_document(doc: &Element) -> Result<DocumentRequest, XdsError> {
    let text = |name: &str| doc.child(NS_XDSB, name).map(|e| e.trimmed().to_string());
    let unique_id = text("DocumentUniqueId")
        .ok_or_else(|| XdsError::Malformed("DocumentRequest without DocumentUniqueId".into()))?;
    let repository = text("RepositoryUniqueId")
        .ok_or_else(|| XdsError::Malformed("DocumentRequest without RepositoryUniqueId".into()))?;
    Ok(DocumentRequest {
        study: None,
        series: None,
        unique_id,
        repository,
        home_community: text("HomeCommunityId").filter(|h| !h.is_empty()),
    })
}

/// RAD-69 / RAD-75.
pub async fn imaging(call: Call) -> Result<Response, XdsError> {
    match read_imaging(&call.envelope.body) {
        Ok(request) => answer(call, request).await,
        Err(e) => {
            call.ticket.finish("failure", e.to_string()).await;
            Err(e)
        }
    }
}

/// ITI-43 / ITI-39.
pub async fn documents(call: Call) -> Result<Response, XdsError> {
    match read_documents(&call.envelope.body) {
        Ok(request) => answer(call, request).await,
        Err(e) => {
            call.ticket.finish("failure", e.to_string()).await;
            Err(e)
        }
    }
}

/// One RegistryError of the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryError {
    pub code: &'static str,
    pub context: String,
    pub location: String,
}

/// A document that goes out: its index in the request, and (from the cache) where it is and
/// how it is encoded.
#[derive(Debug, Clone)]
struct Outgoing {
    n: usize,
    located: Option<(InstanceLocation, Plan)>,
}

/// The documents of a request as resolved before anything is written: which are ours to
/// answer, and which exist and may be seen (`found`, by index in the request); the others
/// have their error. Documents with an error already are left as they are.
pub(super) struct Resolved {
    pub documents: Vec<DocumentRequest>,
    pub errors: BTreeMap<usize, RegistryError>,
    pub found: BTreeSet<usize>,
    pub ticket: Ticket,
}

/// The error of a document that is not available (unknown, elsewhere, or not to be seen).
pub(super) fn unavailable(d: &DocumentRequest) -> RegistryError {
    RegistryError {
        code: DOCUMENT_UNIQUE_ID_ERROR,
        context: format!("document {} is not available", d.unique_id),
        location: d.unique_id.clone(),
    }
}

/// Steps 1 and 2 of the module documentation: repository and community, then one core query
/// per series. On `Err` the ticket's record has been written.
pub(super) async fn resolve(
    state: &super::XdsState,
    cross: bool,
    mut ticket: Ticket,
    mut docs: Vec<DocumentRequest>,
    mut errors: BTreeMap<usize, RegistryError>,
    by_unique_id: bool,
) -> Result<Resolved, XdsError> {
    let xds = &state.config.xds;

    // 1. Ours to answer?
    for (n, d) in docs.iter().enumerate() {
        if errors.contains_key(&n) {
            continue;
        }
        let community_ok = match &d.home_community {
            Some(h) => *h == xds.home_community_id,
            None => !cross,
        };
        if d.repository != xds.repository_unique_id {
            errors.insert(
                n,
                RegistryError {
                    code: UNKNOWN_REPOSITORY,
                    context: format!("repository {} is not known here", d.repository),
                    location: d.unique_id.clone(),
                },
            );
        } else if !community_ok {
            errors.insert(
                n,
                RegistryError {
                    code: UNKNOWN_COMMUNITY,
                    context: format!(
                        "homeCommunityId {} is not this community",
                        d.home_community.as_deref().unwrap_or("(none)")
                    ),
                    location: d.unique_id.clone(),
                },
            );
        } else if d.unique_id.is_empty()
            || d.study.as_deref().is_some_and(str::is_empty)
            || d.series.as_deref().is_some_and(str::is_empty)
        {
            errors.insert(n, unavailable(d));
        }
    }

    // ITI-43 / ITI-39: the study and series of each document, from the cache.
    if by_unique_id {
        let wanted: Vec<String> = docs
            .iter()
            .enumerate()
            .filter(|(n, _)| !errors.contains_key(n))
            .map(|(_, d)| d.unique_id.clone())
            .collect();
        let found = match state.core.series_of_instances(&wanted).await {
            Ok(f) => f,
            Err(e) => {
                ticket.finish("failure", e.to_string()).await;
                return Err(XdsError::from(e));
            }
        };
        let by_uid: HashMap<&str, (&str, &str)> = found
            .iter()
            .map(|(st, se, sop)| (sop.as_str(), (st.as_str(), se.as_str())))
            .collect();
        for (n, d) in docs.iter_mut().enumerate() {
            if errors.contains_key(&n) {
                continue;
            }
            match by_uid.get(d.unique_id.as_str()) {
                Some((st, se)) => {
                    d.study = Some(st.to_string());
                    d.series = Some(se.to_string());
                }
                None => {
                    errors.insert(n, unavailable(d));
                }
            }
        }
    }

    // 2. Which exist and may be seen: one query per series.
    let mut groups: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
    for (n, d) in docs.iter().enumerate() {
        if errors.contains_key(&n) {
            continue;
        }
        if let (Some(st), Some(se)) = (&d.study, &d.series) {
            groups.entry((st.clone(), se.clone())).or_default().push(n);
        }
    }
    let mut found: BTreeSet<usize> = BTreeSet::new();
    for ((study, series), members) in &groups {
        let uids: Vec<String> = members.iter().map(|&n| docs[n].unique_id.clone()).collect();
        let query = Query::new(Level::Image)
            .with_key(attr("StudyInstanceUID"), Matcher::Single(study.clone()))
            .with_key(attr("SeriesInstanceUID"), Matcher::Single(series.clone()))
            .with_key(attr("SOPInstanceUID"), Matcher::UidList(uids))
            // Which exist and may be seen: the UIDs (and the patient) are all it needs.
            .unique_keys_only();
        let answered = match state.core.query(ticket, query, members.len()).await {
            Ok(a) => a,
            // The record has been written.
            Err(e) => return Err(XdsError::from(e)),
        };
        ticket = answered.ticket;
        let seen: BTreeSet<&str> = answered
            .matches
            .iter()
            .filter(|m| {
                m.get(&STUDY_INSTANCE_UID).is_none_or(|s| s == study)
                    && m.get(&SERIES_INSTANCE_UID).is_none_or(|s| s == series)
            })
            .filter_map(|m| m.get(&SOP_INSTANCE_UID).map(String::as_str))
            .collect();
        for &n in members {
            if seen.contains(docs[n].unique_id.as_str()) {
                found.insert(n);
            }
        }
    }
    for (n, d) in docs.iter().enumerate() {
        if !errors.contains_key(&n) && !found.contains(&n) {
            errors.insert(n, unavailable(d));
        }
    }

    Ok(Resolved {
        documents: docs,
        errors,
        found,
        ticket,
    })
}

async fn answer(call: Call, request: Request) -> Result<Response, XdsError> {
    let cross = call.cross_community();
    let Call {
        state,
        action,
        envelope,
        ticket,
    } = call;
    let by_unique_id = request.syntaxes.is_none();
    let Resolved {
        documents: docs,
        mut errors,
        found,
        ticket,
    } = resolve(
        &state,
        cross,
        ticket,
        request.documents,
        BTreeMap::new(),
        by_unique_id,
    )
    .await?;
    let xds = &state.config.xds;
    let reply = Reply {
        action: action.reply,
        relates_to: envelope.message_id.clone(),
        home_community: xds.home_community_id.clone(),
        repository: xds.repository_unique_id.clone(),
        cross,
    };
    if found.is_empty() {
        let detail = format!("none of {} documents available", docs.len());
        let body = reply.envelope(&docs, &[], &errors);
        return finish_unstreamed(ticket, "failure", detail, body).await;
    }

    // 3. One retrieve of what was found.
    let selection = Selection {
        study_uids: unique(
            found
                .iter()
                .map(|&n| docs[n].study.clone().unwrap_or_default()),
        ),
        series_uids: unique(
            found
                .iter()
                .map(|&n| docs[n].series.clone().unwrap_or_default()),
        ),
        sop_instance_uids: unique(found.iter().map(|&n| docs[n].unique_id.clone())),
        ..Default::default()
    };
    let mut retrieval = match state
        .core
        .retrieve(ticket, selection, Delivery::Streamed)
        .await
    {
        Ok(r) => r,
        // A patient refused at the retrieve (what the query could not see): as if absent.
        // The record has been written.
        Err(crate::core::CoreError::Refused(crate::core::Refusal::Forbidden(_))) => {
            for &n in &found {
                errors.insert(n, unavailable(&docs[n]));
            }
            let body = reply.envelope(&docs, &[], &errors);
            return Ok(mtom_response(body));
        }
        Err(crate::core::CoreError::NotFound(_)) => {
            // Gone between the query and the retrieve: the record has been written.
            for &n in &found {
                errors.insert(n, unavailable(&docs[n]));
            }
            let body = reply.envelope(&docs, &[], &errors);
            return Ok(mtom_response(body));
        }
        Err(e) => return Err(XdsError::from(e)),
    };
    let syntaxes = request.syntaxes.clone();
    let index: HashMap<(String, String, String), usize> = found
        .iter()
        .map(|&n| {
            let d = &docs[n];
            (
                (
                    d.study.clone().unwrap_or_default(),
                    d.series.clone().unwrap_or_default(),
                    d.unique_id.clone(),
                ),
                n,
            )
        })
        .collect();
    let key = |l: &InstanceLocation| {
        (
            l.study_instance_uid.clone(),
            l.series_instance_uid.clone(),
            l.sop_instance_uid.clone(),
        )
    };

    let mut outgoing: Vec<Outgoing> = Vec::new();
    if retrieval.from == "cache" {
        // Bounded by the request: the selection names its SOP instances.
        let all = match retrieval.instances.rest().await {
            Ok(all) => all,
            Err(e) => {
                retrieval.ticket.finish("failure", e.to_string()).await;
                return Err(XdsError::from(e));
            }
        };
        let mut located: HashMap<usize, InstanceLocation> = HashMap::new();
        for loc in all {
            if let Some(&n) = index.get(&key(&loc)) {
                located.entry(n).or_insert(loc);
            }
        }
        for &n in &found {
            match located.remove(&n) {
                Some(loc) => match choose(&loc.transfer_syntax_uid, syntaxes.as_deref()) {
                    Plan::Impossible => {
                        errors.insert(
                            n,
                            RegistryError {
                                code: SYNTAX_NOT_SUPPORTED,
                                context: format!(
                                    "document {} is stored as {} and cannot be given in a requested transfer syntax",
                                    docs[n].unique_id, loc.transfer_syntax_uid
                                ),
                                location: docs[n].unique_id.clone(),
                            },
                        );
                    }
                    p => outgoing.push(Outgoing {
                        n,
                        located: Some((loc, p)),
                    }),
                },
                None => {
                    errors.insert(n, unavailable(&docs[n]));
                }
            }
        }
    } else {
        outgoing = found
            .iter()
            .map(|&n| Outgoing { n, located: None })
            .collect();
    }

    let sent_docs: Vec<usize> = outgoing.iter().map(|o| o.n).collect();
    let body = reply.envelope(&docs, &sent_docs, &errors);
    if outgoing.is_empty() {
        let Retrieval { ticket, .. } = retrieval;
        return finish_unstreamed(
            ticket,
            "failure",
            format!("none of {} documents available", docs.len()),
            body,
        )
        .await;
    }
    let result = if errors.is_empty() {
        "success"
    } else {
        "partial"
    };
    let boundary = multipart::new_boundary();
    let content_type = mtom::content_type(&boundary);
    let (tx, http_body) = multipart::channel_body();
    let stored = state.core.stored().clone();
    let requested = docs.len();
    tokio::spawn(async move {
        let Retrieval {
            mut instances,
            mut ticket,
            from,
            sending,
            ..
        } = retrieval;
        let head = tx.send(mtom::root_part(&boundary, &body)).await;
        let (outcome, sent) = match head {
            Err(_) => ("cancelled", 0),
            Ok(()) => {
                let stream = Stream {
                    stored: &stored,
                    boundary: &boundary,
                    tx: &tx,
                    syntaxes: syntaxes.as_deref(),
                    progress: sending.as_ref().map(|s| s.tracked.clone()),
                };
                if outgoing[0].located.is_some() {
                    stream.cached(outgoing, &mut ticket).await
                } else {
                    stream
                        .fetched(&mut instances, &index, &outgoing, &mut ticket)
                        .await
                }
            }
        };
        drop(instances);
        if let Some(sending) = sending {
            sending.finish(match outcome {
                "success" => None,
                "cancelled" => Some("the client went away".into()),
                _ => Some(format!("ended broken after {sent} documents")),
            });
        }
        let outcome = match outcome {
            "success" => result,
            other => other,
        };
        let mut detail = format!("{sent} of {requested} documents sent");
        if from != "cache" {
            detail.push_str(&format!(", streamed from the {from}"));
        }
        ticket.finish(outcome, detail).await;
    });
    let mut response = http_body.into_response();
    if let Ok(v) = HeaderValue::from_str(&content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    Ok(response)
}

fn attr(keyword: &str) -> &'static crate::core::IndexedAttr {
    indexed_attr_by_keyword(keyword).expect("indexed attribute")
}

fn unique(values: impl Iterator<Item = String>) -> Vec<String> {
    values
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter(|v| !v.is_empty())
        .collect()
}

/// An answer without documents: the envelope only, as MTOM; the record written first.
pub(super) async fn finish_unstreamed(
    ticket: Ticket,
    result: &str,
    detail: String,
    body: String,
) -> Result<Response, XdsError> {
    if ticket.finish_before_answer(result, detail).await.is_err() {
        return Err(XdsError::Unavailable(
            "the audit trail cannot be written; try again later".into(),
        ));
    }
    Ok(mtom_response(body))
}

pub(super) fn mtom_response(envelope: String) -> Response {
    let boundary = multipart::new_boundary();
    let mut body = mtom::root_part(&boundary, &envelope).to_vec();
    body.extend_from_slice(&mtom::closing(&boundary));
    let mut response = body.into_response();
    if let Ok(v) = HeaderValue::from_str(&mtom::content_type(&boundary)) {
        response.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    response
}

/// What the answer's envelope says besides the documents.
pub(super) struct Reply {
    pub action: &'static str,
    pub relates_to: Option<String>,
    pub home_community: String,
    pub repository: String,
    pub cross: bool,
}

impl Reply {
    /// The envelope up to and with the opening Body tag.
    pub fn head(&self) -> String {
        let mut out = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<env:Envelope xmlns:env=\"{NS_SOAP12}\" xmlns:wsa=\"{NS_WSA}\">\
<env:Header><wsa:Action env:mustUnderstand=\"true\">{}</wsa:Action><wsa:MessageID>urn:uuid:{}</wsa:MessageID>",
            self.action,
            crate::trust::consent::new_uuid()
        );
        if let Some(id) = &self.relates_to {
            out.push_str(&format!("<wsa:RelatesTo>{}</wsa:RelatesTo>", escape(id)));
        }
        out.push_str("</env:Header><env:Body>");
        out
    }

    /// `rs:RegistryResponse` with the status that `sent` documents and `errors` make.
    pub fn registry_response(sent: usize, errors: &BTreeMap<usize, RegistryError>) -> String {
        let status = match (sent == 0, errors.is_empty()) {
            (false, true) => SUCCESS,
            (false, false) => PARTIAL_SUCCESS,
            (true, _) => FAILURE,
        };
        let mut out = format!("<rs:RegistryResponse status=\"{status}\">");
        if !errors.is_empty() {
            out.push_str("<rs:RegistryErrorList>");
            for e in errors.values() {
                out.push_str(&format!(
                    "<rs:RegistryError errorCode=\"{}\" codeContext=\"{}\" location=\"{}\" severity=\"{SEVERITY_ERROR}\"/>",
                    escape(e.code),
                    escape(&e.context),
                    escape(&e.location)
                ));
            }
            out.push_str("</rs:RegistryErrorList>");
        }
        out.push_str("</rs:RegistryResponse>");
        out
    }

    /// The HomeCommunityId of a document's answer: RAD-75 / ITI-39 ours always; RAD-69 /
    /// ITI-43 / WADO-WS only when the request named it.
    pub fn home_of<'a>(&'a self, d: &'a DocumentRequest) -> Option<&'a str> {
        if self.cross {
            Some(self.home_community.as_str())
        } else {
            d.home_community.as_deref()
        }
    }

    /// The envelope's closing tags.
    pub fn tail() -> &'static str {
        "</env:Body></env:Envelope>"
    }

    /// The `RetrieveDocumentSetResponse` envelope: status, errors in request order, then a
    /// DocumentResponse per document sent (its part named by Content-ID).
    fn envelope(
        &self,
        docs: &[DocumentRequest],
        sent: &[usize],
        errors: &BTreeMap<usize, RegistryError>,
    ) -> String {
        let mut out = self.head();
        out.push_str(&format!(
            "<xdsb:RetrieveDocumentSetResponse xmlns:xdsb=\"{NS_XDSB}\" xmlns:rs=\"{NS_RS}\" xmlns:xop=\"{}\">",
            super::NS_XOP
        ));
        out.push_str(&Self::registry_response(sent.len(), errors));
        for &n in sent {
            let d = &docs[n];
            out.push_str("<xdsb:DocumentResponse>");
            if let Some(h) = self.home_of(d) {
                out.push_str(&format!(
                    "<xdsb:HomeCommunityId>{}</xdsb:HomeCommunityId>",
                    escape(h)
                ));
            }
            out.push_str(&format!(
                "<xdsb:RepositoryUniqueId>{}</xdsb:RepositoryUniqueId><xdsb:DocumentUniqueId>{}</xdsb:DocumentUniqueId>\
<xdsb:mimeType>application/dicom</xdsb:mimeType><xdsb:Document><xop:Include href=\"cid:{}\"/></xdsb:Document></xdsb:DocumentResponse>",
                escape(&self.repository),
                escape(&d.unique_id),
                mtom::document_id(n)
            ));
        }
        out.push_str("</xdsb:RetrieveDocumentSetResponse>");
        out.push_str(Self::tail());
        out
    }
}

/// Writing the document parts of one answer.
struct Stream<'a> {
    stored: &'a Stored,
    boundary: &'a str,
    tx: &'a BodySender,
    syntaxes: Option<&'a [String]>,
    /// Its row on the console's transfers board: each document reported, the operator's
    /// cancel looked at before each.
    progress: Option<Arc<Tracked>>,
}

impl Stream<'_> {
    /// Touch a batch of located documents on the ticket and write their parts on a
    /// blocking thread, then, when `close`, the closing delimiter (in the same last chunk):
    /// how many went out, or how the transfer ends ("cancelled", "failure") with how many
    /// were written before (the client may not have had them: the body ends broken).
    async fn write_batch(
        &self,
        located: Vec<(usize, InstanceLocation, Plan)>,
        ticket: &mut Ticket,
        close: bool,
    ) -> Result<usize, (&'static str, usize)> {
        for (_, location, _) in &located {
            ticket.touch(std::slice::from_ref(location));
        }
        let (stored, boundary, tx, progress) = (
            self.stored.clone(),
            self.boundary.to_string(),
            self.tx.clone(),
            self.progress.clone(),
        );
        let written = tokio::task::spawn_blocking(move || {
            write_parts(
                &stored,
                &located,
                &boundary,
                &tx,
                close,
                progress.as_deref(),
            )
        })
        .await;
        match written {
            Ok((n, Ok(()))) => Ok(n),
            Ok((n, Err(SendError::Disconnected))) => Err(("cancelled", n)),
            Ok((n, Err(SendError::Failed(_)))) => Err(("failure", n)),
            Err(_) => Err(("failure", 0)),
        }
    }

    /// From the cache: every document planned already, all written by one blocking
    /// producer, file bytes as they are read, the closing delimiter in the last chunk (as
    /// WADO-RS writes a page): no thread hop and no part-filled chunk between documents.
    async fn cached(&self, outgoing: Vec<Outgoing>, ticket: &mut Ticket) -> (&'static str, usize) {
        let located: Vec<(usize, InstanceLocation, Plan)> = outgoing
            .into_iter()
            .filter_map(|o| o.located.map(|(l, p)| (o.n, l, p)))
            .collect();
        match self.write_batch(located, ticket, true).await {
            Ok(n) => ("success", n),
            Err(failed) => failed,
        }
    }

    /// From a fetch: each instance written as it arrives, when it is a document announced in
    /// the envelope (and not sent yet); every announced one must arrive.
    async fn fetched(
        &self,
        instances: &mut Instances,
        index: &HashMap<(String, String, String), usize>,
        outgoing: &[Outgoing],
        ticket: &mut Ticket,
    ) -> (&'static str, usize) {
        let mut waiting: BTreeSet<usize> = outgoing.iter().map(|o| o.n).collect();
        let mut sent = 0usize;
        while !waiting.is_empty() {
            let batch = match instances.next_batch().await {
                Some(Ok(batch)) => batch,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "retrieve ended incomplete");
                    self.tx.fail(e.to_string()).await;
                    return ("failure", sent);
                }
                None => break,
            };
            let mut located = Vec::new();
            for loc in batch {
                let key = (
                    loc.study_instance_uid.clone(),
                    loc.series_instance_uid.clone(),
                    loc.sop_instance_uid.clone(),
                );
                let Some(&n) = index.get(&key) else { continue };
                if !waiting.remove(&n) {
                    continue;
                }
                let p = choose(&loc.transfer_syntax_uid, self.syntaxes);
                if p == Plan::Impossible {
                    let why = format!(
                        "document {} arrived as {}, which cannot be given in a requested syntax",
                        loc.sop_instance_uid, loc.transfer_syntax_uid
                    );
                    tracing::warn!(%why, "retrieve ended broken");
                    self.tx.fail(why).await;
                    return ("failure", sent);
                }
                located.push((n, loc, p));
            }
            if located.is_empty() {
                continue;
            }
            // An instance the fetch still holds in memory goes out from there, from this
            // task (as WADO-RS sends it): no blocking thread, no file read back.
            if let [(n, loc, Plan::AsStored)] = located.as_slice() {
                if let Some(chunks) = instances
                    .take_data_set(loc)
                    .and_then(|data_set| part_from_memory(*n, &data_set, self.boundary))
                {
                    if self.progress.as_deref().is_some_and(Tracked::is_cancelled) {
                        self.tx.fail(CANCELLED.into()).await;
                        return ("cancelled", sent);
                    }
                    ticket.touch(std::slice::from_ref(loc));
                    for chunk in chunks {
                        if self.tx.send(chunk).await.is_err() {
                            return ("cancelled", sent);
                        }
                    }
                    if let Some(progress) = &self.progress {
                        progress.advance(1, loc.size_bytes);
                    }
                    sent += 1;
                    continue;
                }
            }
            match self.write_batch(located, ticket, false).await {
                Ok(n) => sent += n,
                Err((how, n)) => return (how, sent + n),
            }
        }
        if !waiting.is_empty() {
            let why = format!(
                "{} announced documents did not arrive from the source",
                waiting.len()
            );
            tracing::warn!(%why, "retrieve ended broken");
            self.tx.fail(why).await;
            return ("failure", sent);
        }
        match self.tx.send(mtom::closing(self.boundary)).await {
            Ok(()) => ("success", sent),
            Err(_) => ("cancelled", sent),
        }
    }
}

/// The `n`th document's MTOM part from the data set a fetch still holds in memory (see
/// [`crate::core::source::DataSet`]): the part header with the file's preamble and meta
/// group (one small copy), the data set's pieces as received, the part's end. `None`
/// without the file's start: the part is written from the file.
fn part_from_memory(
    n: usize,
    data_set: &crate::core::source::DataSet,
    boundary: &str,
) -> Option<Vec<Bytes>> {
    let file_start = data_set.file_start.as_ref()?;
    let header = mtom::part_header(boundary, &mtom::document_id(n), "application/dicom");
    let mut first = Vec::with_capacity(header.len() + file_start.len());
    first.extend_from_slice(&header);
    first.extend_from_slice(file_start);
    let mut chunks = Vec::with_capacity(data_set.len() + 2);
    chunks.push(Bytes::from(first));
    chunks.extend(data_set.iter().cloned());
    chunks.push(Bytes::from_static(mtom::part_end()));
    Some(chunks)
}

/// Write each document as its MTOM part (blocking), then, when `close`, the closing
/// delimiter. Returns how many went out whole, and how it ended; a failure ends the body
/// broken.
fn write_parts(
    stored: &Stored,
    documents: &[(usize, InstanceLocation, Plan)],
    boundary: &str,
    tx: &BodySender,
    close: bool,
    progress: Option<&Tracked>,
) -> (usize, Result<(), SendError>) {
    let mut body = BlockingBody::new(tx);
    for (done, (n, loc, p)) in documents.iter().enumerate() {
        // Cancelled on the operator's console: no further document, the body ends broken.
        if progress.is_some_and(Tracked::is_cancelled) {
            body.fail(CANCELLED.into());
            return (done, Err(SendError::Failed(CANCELLED.into())));
        }
        let written = write_part(&mut body, stored, *n, loc, p, boundary);
        if let (Ok(()), Some(progress)) = (&written, progress) {
            progress.advance(1, loc.size_bytes);
        }
        if let Err(e) = written {
            if let SendError::Failed(problem) = &e {
                tracing::error!(sop = %loc.sop_instance_uid, %problem, "SOAP retrieve failed");
                body.fail(problem.clone());
            }
            return (done, Err(e));
        }
    }
    let end = if close {
        body.put(&mtom::closing(boundary))
    } else {
        Ok(())
    }
    .and_then(|()| body.flush());
    (documents.len(), end)
}

fn write_part(
    body: &mut BlockingBody<'_>,
    stored: &Stored,
    n: usize,
    loc: &InstanceLocation,
    p: &Plan,
    boundary: &str,
) -> Result<(), SendError> {
    let header = mtom::part_header(boundary, &mtom::document_id(n), "application/dicom");
    match p {
        Plan::AsStored => {
            let mut file = stored
                .open_blocking(loc)
                .map_err(|e| SendError::Failed(e.to_string()))?;
            let len = file
                .metadata()
                .map_err(|e| SendError::Failed(e.to_string()))?
                .len();
            body.put(&header)?;
            body.copy(&mut file, 0, len)?;
        }
        Plan::Transcode(target) => {
            let bytes = transcode_file(stored.local_file(loc).path(), target)
                .map_err(|e| SendError::Failed(e.to_string()))?;
            body.put(&header)?;
            body.put(&bytes)?;
        }
        Plan::Impossible => {
            return Err(SendError::Failed(format!(
                "cannot give {} in a requested syntax",
                loc.sop_instance_uid
            )))
        }
    }
    body.put(mtom::part_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(xml: &str) -> Element {
        crate::xml::parse(xml.as_bytes()).unwrap()
    }

    #[test]
    fn reads_a_rad69_request() {
        let body = el(&format!(
            r#"<i:RetrieveImagingDocumentSetRequest xmlns:i="{NS_XDSI}" xmlns:b="{NS_XDSB}">
<i:StudyRequest studyInstanceUID="1.2"><i:SeriesRequest seriesInstanceUID="1.2.3">
<b:DocumentRequest><b:RepositoryUniqueId>9.9</b:RepositoryUniqueId><b:DocumentUniqueId> 1.2.3.4 </b:DocumentUniqueId></b:DocumentRequest>
<b:DocumentRequest><b:HomeCommunityId>urn:oid:7</b:HomeCommunityId><b:RepositoryUniqueId>9.9</b:RepositoryUniqueId><b:DocumentUniqueId>1.2.3.5</b:DocumentUniqueId></b:DocumentRequest>
</i:SeriesRequest></i:StudyRequest>
<i:TransferSyntaxUIDList><i:TransferSyntaxUID>1.2.840.10008.1.2.1</i:TransferSyntaxUID></i:TransferSyntaxUIDList>
</i:RetrieveImagingDocumentSetRequest>"#
        ));
        let r = read_imaging(&body).unwrap();
        assert_eq!(r.documents.len(), 2);
        assert_eq!(r.documents[0].unique_id, "1.2.3.4");
        assert_eq!(r.documents[0].study.as_deref(), Some("1.2"));
        assert_eq!(r.documents[0].home_community, None);
        assert_eq!(r.documents[1].home_community.as_deref(), Some("urn:oid:7"));
        assert_eq!(r.syntaxes.unwrap(), ["1.2.840.10008.1.2.1"]);
        let no_list = el(&format!(
            r#"<i:RetrieveImagingDocumentSetRequest xmlns:i="{NS_XDSI}" xmlns:b="{NS_XDSB}"><i:StudyRequest studyInstanceUID="1"><i:SeriesRequest seriesInstanceUID="2"><b:DocumentRequest><b:RepositoryUniqueId>9</b:RepositoryUniqueId><b:DocumentUniqueId>3</b:DocumentUniqueId></b:DocumentRequest></i:SeriesRequest></i:StudyRequest></i:RetrieveImagingDocumentSetRequest>"#
        ));
        assert!(read_imaging(&no_list).is_err());
    }
}
