//! WADO-WS RetrieveRenderedImagingDocumentSet (DICOM PS3.18 WADO-WS, Supplement 148; schema
//! `dicom.wado.ws.2011.xsd`): each requested instance (Study, Series and SOP Instance UID
//! together, as in RAD-69) rendered as `image/jpeg` or `image/png`, one frame, with Rows /
//! Columns, WindowCenter / WindowWidth and ImageQuality. The request elements are read by
//! name, so the Dutch 2017 order (FrameNumber right after DocumentUniqueId) is read as the
//! 2011 one.
//!
//! Found, consent and audit as for RAD-69 ([`super::retrieve::resolve`]); the instances are
//! rendered from the cache (a fetch from the PACS is waited for first). Errors per document
//! (PS3.18 WADO-WS error codes):
//! - `urn:dicom:wado:0006`: none of the ContentTypes is one we render (JPEG, PNG);
//! - `urn:dicom:wado:0008`: a multi-frame instance without FrameNumber (a single image format
//!   holds one frame);
//! - `urn:dicom:wado:0012`: an invalid parameter value (Rows, Columns, window, quality, frame);
//! - `urn:dicom:wado:0013`: a parameter we do not support (Region, Annotation, PresentationUID,
//!   PresentationSeriesUID, Anonymize = true);
//! - `urn:dicom:wado:0018`: FrameNumber beyond the instance's frames;
//! - `urn:dicom:wado:0007`: the instance cannot be rendered (no pixel data we decode);
//! - `XDSDocumentUniqueIdError`: not available (unknown, elsewhere, or not to be seen).
//!
//! The answer is a `RetrieveRenderedImagingDocumentSetResponse` as MTOM/XOP, streamed: one
//! image rendered and written at a time.

use super::mtom;
use super::retrieve::{
    finish_unstreamed, limit, mtom_response, resolve, unavailable, DocumentRequest, RegistryError,
    Reply, Resolved,
};
use super::{Call, XdsError, NS_RS, NS_XDSB, NS_XOP};
use crate::core::{Delivery, InstanceLocation, Selection, Stored};
use crate::dicomweb::multipart::{self, BodySender};
use crate::dicomweb::producer::{BlockingBody, SendError};
use crate::dicomweb::rendered::{render, RenderParams};
use crate::xml::{escape, Element};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use dicom_pixeldata::image::ImageFormat;
use dicom_pixeldata::WindowLevel;
use std::collections::{BTreeMap, HashMap};

/// WADO-WS 2011.
pub const NS_WADO: &str = "urn:dicom:wado:ws:2011";

pub const NOT_SUPPORTED_FORMAT: &str = "urn:dicom:wado:0006";
pub const CANNOT_PROVIDE: &str = "urn:dicom:wado:0007";
pub const MULTI_FRAME: &str = "urn:dicom:wado:0008";
pub const INVALID_PARAMETER: &str = "urn:dicom:wado:0012";
pub const UNSUPPORTED_PARAMETER: &str = "urn:dicom:wado:0013";
pub const FRAME_OUT_OF_RANGE: &str = "urn:dicom:wado:0018";

/// Largest Rows / Columns accepted.
const MAX_SIDE: u32 = 8192;
const DEFAULT_QUALITY: u8 = 90;

/// One rendered document asked.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedRequest {
    pub document: DocumentRequest,
    pub frame: Option<u32>,
    /// What to render, or the error code and why it cannot be.
    pub render: Result<Render, (&'static str, String)>,
}

/// How to render one document.
#[derive(Debug, Clone, PartialEq)]
pub struct Render {
    pub params: RenderParams,
    pub format: ImageFormat,
}

/// Read a `RetrieveRenderedImagingDocumentSetRequest`.
pub fn read(body: &Element) -> Result<Vec<RenderedRequest>, XdsError> {
    let mut out = Vec::new();
    for study in body.children_named(NS_WADO, "StudyRequest") {
        let study_uid = study.attr("studyInstanceUID").unwrap_or_default().trim();
        for series in study.children_named(NS_WADO, "SeriesRequest") {
            let series_uid = series.attr("seriesInstanceUID").unwrap_or_default().trim();
            for doc in series.children_named(NS_WADO, "RenderedDocumentRequest") {
                out.push(read_one(doc, study_uid, series_uid)?);
                limit(out.len())?;
            }
        }
    }
    if out.is_empty() {
        return Err(XdsError::Malformed(
            "RetrieveRenderedImagingDocumentSetRequest names no RenderedDocumentRequest".into(),
        ));
    }
    Ok(out)
}

fn read_one(doc: &Element, study: &str, series: &str) -> Result<RenderedRequest, XdsError> {
    let xdsb = |name: &str| doc.child(NS_XDSB, name).map(|e| e.trimmed().to_string());
    let wado = |name: &str| doc.child(NS_WADO, name).map(|e| e.trimmed().to_string());
    let unique_id = xdsb("DocumentUniqueId").ok_or_else(|| {
        XdsError::Malformed("RenderedDocumentRequest without DocumentUniqueId".into())
    })?;
    let document = DocumentRequest {
        study: Some(study.to_string()),
        series: Some(series.to_string()),
        unique_id,
        // Optional here: absent means this source.
        repository: xdsb("RepositoryUniqueId").unwrap_or_default(),
        home_community: xdsb("HomeCommunityId").filter(|h| !h.is_empty()),
    };
    let frame_text = wado("FrameNumber");
    let frame = frame_text
        .as_deref()
        .map(|f| f.parse::<u32>().ok().filter(|n| *n >= 1));
    let render = (|| {
        let invalid = |what: &str, v: &str| (INVALID_PARAMETER, format!("invalid {what} {v:?}"));
        if let Some(None) = frame {
            return Err(invalid(
                "FrameNumber",
                frame_text.as_deref().unwrap_or_default(),
            ));
        }
        for unsupported in [
            "Region",
            "Annotation",
            "PresentationUID",
            "PresentationSeriesUID",
        ] {
            if doc.child(NS_WADO, unsupported).is_some() {
                return Err((
                    UNSUPPORTED_PARAMETER,
                    format!("{unsupported} is not supported"),
                ));
            }
        }
        if wado("Anonymize").is_some_and(|a| a == "true" || a == "1") {
            return Err((UNSUPPORTED_PARAMETER, "Anonymize is not supported".into()));
        }
        let side = |name: &str| -> Result<Option<u32>, (&'static str, String)> {
            match wado(name) {
                None => Ok(None),
                Some(v) => match v.parse::<u32>() {
                    Ok(n) if (1..=MAX_SIDE).contains(&n) => Ok(Some(n)),
                    _ => Err(invalid(name, &v)),
                },
            }
        };
        let (rows, columns) = (side("Rows")?, side("Columns")?);
        let viewport = match (rows, columns) {
            (None, None) => None,
            (Some(r), Some(c)) => Some((c, r)),
            (Some(r), None) => Some((MAX_SIDE, r)),
            (None, Some(c)) => Some((c, MAX_SIDE)),
        };
        let number = |name: &str| -> Result<Option<f64>, (&'static str, String)> {
            match wado(name) {
                None => Ok(None),
                Some(v) => match v.parse::<f64>() {
                    Ok(x) if x.is_finite() => Ok(Some(x)),
                    _ => Err(invalid(name, &v)),
                },
            }
        };
        let window = match (number("WindowCenter")?, number("WindowWidth")?) {
            (None, None) => None,
            (Some(center), Some(width)) if width >= 1.0 => Some(WindowLevel { center, width }),
            (Some(_), Some(w)) => return Err(invalid("WindowWidth", &w.to_string())),
            _ => {
                return Err((
                    INVALID_PARAMETER,
                    "WindowCenter and WindowWidth go together".into(),
                ))
            }
        };
        let quality = match wado("ImageQuality") {
            None => DEFAULT_QUALITY,
            Some(q) => match q.parse::<u8>() {
                Ok(n) if (1..=100).contains(&n) => n,
                _ => return Err(invalid("ImageQuality", &q)),
            },
        };
        let types: Vec<String> = doc
            .child(NS_WADO, "ContentTypeList")
            .map(|l| {
                l.children_named(NS_WADO, "ContentType")
                    .map(|t| t.trimmed().to_ascii_lowercase())
                    .collect()
            })
            .unwrap_or_default();
        let format = types
            .iter()
            .find_map(|t| match t.split(';').next().unwrap_or_default().trim() {
                "image/jpeg" | "image/jpg" | "image/*" | "*/*" => Some(ImageFormat::Jpeg),
                "image/png" => Some(ImageFormat::Png),
                _ => None,
            })
            .ok_or_else(|| {
                (
                    NOT_SUPPORTED_FORMAT,
                    format!("none of the content types {types:?} is rendered here (image/jpeg, image/png)"),
                )
            })?;
        Ok(Render {
            params: RenderParams {
                window,
                viewport,
                quality,
            },
            format,
        })
    })();
    Ok(RenderedRequest {
        document,
        frame: frame.flatten(),
        render,
    })
}

/// One image to render and send.
#[derive(Debug, Clone)]
struct Job {
    n: usize,
    location: InstanceLocation,
    frame: u32,
    render: Render,
}

/// WADO-WS RetrieveRenderedImagingDocumentSet.
pub async fn rendered(call: Call) -> Result<Response, XdsError> {
    let requests = match read(&call.envelope.body) {
        Ok(r) => r,
        Err(e) => {
            call.ticket.finish("failure", e.to_string()).await;
            return Err(e);
        }
    };
    let cross = call.cross_community();
    let Call {
        state,
        action,
        envelope,
        ticket,
    } = call;
    let mut errors: BTreeMap<usize, RegistryError> = BTreeMap::new();
    let mut docs = Vec::with_capacity(requests.len());
    for (n, r) in requests.iter().enumerate() {
        let mut d = r.document.clone();
        if d.repository.is_empty() {
            d.repository = state.config.xds.repository_unique_id.clone();
        }
        if let Err((code, why)) = &r.render {
            errors.insert(
                n,
                RegistryError {
                    code,
                    context: format!("document {}: {why}", d.unique_id),
                    location: d.unique_id.clone(),
                },
            );
        }
        docs.push(d);
    }
    let Resolved {
        documents: docs,
        mut errors,
        found,
        ticket,
    } = resolve(&state, cross, ticket, docs, errors, false).await?;
    let reply = Reply {
        action: action.reply,
        relates_to: envelope.message_id.clone(),
        home_community: state.config.xds.home_community_id.clone(),
        repository: state.config.xds.repository_unique_id.clone(),
        cross,
    };
    if found.is_empty() {
        let body = envelope_of(&reply, &docs, &requests, &[], &errors);
        let detail = format!("none of {} rendered documents available", docs.len());
        return finish_unstreamed(ticket, "failure", detail, body).await;
    }
    let selection = Selection {
        study_uids: unique(found.iter().filter_map(|&n| docs[n].study.clone())),
        series_uids: unique(found.iter().filter_map(|&n| docs[n].series.clone())),
        sop_instance_uids: unique(found.iter().map(|&n| docs[n].unique_id.clone())),
        ..Default::default()
    };
    let mut retrieval = match state
        .core
        .retrieve(ticket, selection, Delivery::Cached)
        .await
    {
        Ok(r) => r,
        Err(crate::core::CoreError::Refused(crate::core::Refusal::Forbidden(_)))
        | Err(crate::core::CoreError::NotFound(_)) => {
            for &n in &found {
                errors.insert(n, unavailable(&docs[n]));
            }
            return Ok(mtom_response(envelope_of(
                &reply,
                &docs,
                &requests,
                &[],
                &errors,
            )));
        }
        Err(e) => return Err(XdsError::from(e)),
    };
    let all = match retrieval.instances.rest().await {
        Ok(all) => all,
        Err(e) => {
            retrieval.ticket.finish("failure", e.to_string()).await;
            return Err(XdsError::from(e));
        }
    };
    let mut by_key: HashMap<(&str, &str, &str), &InstanceLocation> = HashMap::new();
    for l in &all {
        by_key.insert(
            (
                l.study_instance_uid.as_str(),
                l.series_instance_uid.as_str(),
                l.sop_instance_uid.as_str(),
            ),
            l,
        );
    }
    let stored = state.core.stored().clone();
    let mut jobs = Vec::new();
    for &n in &found {
        let d = &docs[n];
        let key = (
            d.study.as_deref().unwrap_or_default(),
            d.series.as_deref().unwrap_or_default(),
            d.unique_id.as_str(),
        );
        let (Some(location), Ok(render)) = (by_key.get(&key), &requests[n].render) else {
            errors.insert(n, unavailable(d));
            continue;
        };
        // Frames checked before the envelope: a frame out of range, or a multi-frame
        // instance without a frame named, is that document's error.
        stored.ensure_local(location).await;
        let path = stored.local_file(location).path().to_path_buf();
        let frames = tokio::task::spawn_blocking(move || number_of_frames(&path))
            .await
            .ok()
            .flatten();
        let Some(frames) = frames else {
            errors.insert(
                n,
                RegistryError {
                    code: CANNOT_PROVIDE,
                    context: format!("document {} has no pixel data to render", d.unique_id),
                    location: d.unique_id.clone(),
                },
            );
            continue;
        };
        let frame = match requests[n].frame {
            Some(f) if f > frames => {
                errors.insert(
                    n,
                    RegistryError {
                        code: FRAME_OUT_OF_RANGE,
                        context: format!("document {} has {frames} frames, not {f}", d.unique_id),
                        location: d.unique_id.clone(),
                    },
                );
                continue;
            }
            Some(f) => f,
            None if frames > 1 => {
                errors.insert(
                    n,
                    RegistryError {
                        code: MULTI_FRAME,
                        context: format!(
                            "document {} has {frames} frames: name one in FrameNumber",
                            d.unique_id
                        ),
                        location: d.unique_id.clone(),
                    },
                );
                continue;
            }
            None => 1,
        };
        jobs.push(Job {
            n,
            location: (*location).clone(),
            frame,
            render: render.clone(),
        });
    }
    let sent: Vec<usize> = jobs.iter().map(|j| j.n).collect();
    let body = envelope_of(&reply, &docs, &requests, &sent, &errors);
    if jobs.is_empty() {
        let detail = format!("none of {} rendered documents available", docs.len());
        return finish_unstreamed(retrieval.ticket, "failure", detail, body).await;
    }
    let result = if errors.is_empty() {
        "success"
    } else {
        "partial"
    };
    let boundary = multipart::new_boundary();
    let content_type = mtom::content_type(&boundary);
    let (tx, http_body) = multipart::channel_body();
    let requested = docs.len();
    let mut ticket = retrieval.ticket;
    tokio::spawn(async move {
        let (outcome, done) = match tx.send(mtom::root_part(&boundary, &body)).await {
            Err(_) => ("cancelled", 0),
            Ok(()) => send_images(&stored, &jobs, &boundary, &tx, &mut ticket).await,
        };
        let outcome = if outcome == "success" {
            result
        } else {
            outcome
        };
        ticket
            .finish(
                outcome,
                format!("{done} of {requested} documents rendered and sent"),
            )
            .await;
    });
    let mut response = http_body.into_response();
    if let Ok(v) = HeaderValue::from_str(&content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    Ok(response)
}

fn unique(values: impl Iterator<Item = String>) -> Vec<String> {
    values
        .filter(|v| !v.is_empty())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Number of Frames of a stored instance with pixel data (1 when absent); `None` without
/// pixel data or when it cannot be read.
fn number_of_frames(path: &std::path::Path) -> Option<u32> {
    use crate::dimse::dataset::{open_stored, Extent};
    let (obj, pixel) = open_stored(path, Extent::UpToPixelData).ok()?;
    pixel?;
    let frames = obj
        .element(dicom_core::Tag(0x0028, 0x0008))
        .ok()
        .and_then(|e| e.to_str().ok())
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(1);
    Some(frames.max(1))
}

/// Render and write each image as its part, one at a time (memory: one image).
async fn send_images(
    stored: &Stored,
    jobs: &[Job],
    boundary: &str,
    tx: &BodySender,
    ticket: &mut crate::core::Ticket,
) -> (&'static str, usize) {
    for (done, job) in jobs.iter().enumerate() {
        ticket.touch(std::slice::from_ref(&job.location));
        let (stored, boundary, tx, job) = (
            stored.clone(),
            boundary.to_string(),
            tx.clone(),
            job.clone(),
        );
        let written = tokio::task::spawn_blocking(move || {
            let mut body = BlockingBody::new(&tx);
            let path = stored.local_file(&job.location).path().to_path_buf();
            let image = render(
                &path,
                job.frame,
                &job.render.params,
                false,
                job.render.format,
            )
            .map_err(SendError::Failed)
            .and_then(|bytes| {
                body.put(&mtom::part_header(
                    &boundary,
                    &mtom::document_id(job.n),
                    mime(job.render.format),
                ))?;
                body.put(&bytes)?;
                body.put(mtom::part_end())?;
                body.flush()
            });
            if let Err(SendError::Failed(problem)) = &image {
                tracing::error!(sop = %job.location.sop_instance_uid, %problem, "WADO-WS rendering failed");
                body.fail(problem.clone());
            }
            image
        })
        .await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(SendError::Disconnected)) => return ("cancelled", done),
            _ => return ("failure", done),
        }
    }
    match tx.send(mtom::closing(boundary)).await {
        Ok(()) => ("success", jobs.len()),
        Err(_) => ("cancelled", jobs.len()),
    }
}

fn mime(format: ImageFormat) -> &'static str {
    if format == ImageFormat::Png {
        "image/png"
    } else {
        "image/jpeg"
    }
}

/// The `RetrieveRenderedImagingDocumentSetResponse` envelope.
fn envelope_of(
    reply: &Reply,
    docs: &[DocumentRequest],
    requests: &[RenderedRequest],
    sent: &[usize],
    errors: &BTreeMap<usize, RegistryError>,
) -> String {
    let mut out = reply.head();
    out.push_str(&format!(
        "<wado:RetrieveRenderedImagingDocumentSetResponse xmlns:wado=\"{NS_WADO}\" xmlns:xdsb=\"{NS_XDSB}\" xmlns:rs=\"{NS_RS}\" xmlns:xop=\"{NS_XOP}\">"
    ));
    out.push_str(&Reply::registry_response(sent.len(), errors));
    for &n in sent {
        let (d, r) = (&docs[n], &requests[n]);
        out.push_str("<wado:RenderedDocumentSetResponse>");
        if let Some(h) = reply.home_of(d) {
            out.push_str(&format!(
                "<xdsb:HomeCommunityId>{}</xdsb:HomeCommunityId>",
                escape(h)
            ));
        }
        out.push_str(&format!(
            "<xdsb:RepositoryUniqueId>{}</xdsb:RepositoryUniqueId><wado:SourceDocumentUniqueId>{}</wado:SourceDocumentUniqueId>",
            escape(&reply.repository),
            escape(&d.unique_id)
        ));
        if let Some(f) = r.frame {
            out.push_str(&format!("<wado:FrameNumber>{f}</wado:FrameNumber>"));
        }
        let format = r
            .render
            .as_ref()
            .map(|r| r.format)
            .unwrap_or(ImageFormat::Jpeg);
        out.push_str(&format!(
            "<xdsb:Document><xop:Include href=\"cid:{}\"/></xdsb:Document><xdsb:mimeType>{}</xdsb:mimeType></wado:RenderedDocumentSetResponse>",
            mtom::document_id(n),
            mime(format)
        ));
    }
    out.push_str("</wado:RetrieveRenderedImagingDocumentSetResponse>");
    out.push_str(Reply::tail());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(inner: &str) -> Element {
        crate::xml::parse(format!(
            r#"<w:RetrieveRenderedImagingDocumentSetRequest xmlns:w="{NS_WADO}" xmlns:b="{NS_XDSB}">
<w:StudyRequest studyInstanceUID="1.2"><w:SeriesRequest seriesInstanceUID="1.2.3">{inner}</w:SeriesRequest></w:StudyRequest>
</w:RetrieveRenderedImagingDocumentSetRequest>"#
        ).as_bytes())
        .unwrap()
    }

    #[test]
    fn reads_both_element_orders_and_names_bad_parameters() {
        // Dutch 2017 order: FrameNumber right after DocumentUniqueId.
        let r = read(&request(
            "<w:RenderedDocumentRequest><b:DocumentUniqueId>1.2.3.4</b:DocumentUniqueId><w:FrameNumber>2</w:FrameNumber>\
<w:Rows>64</w:Rows><w:Columns>32</w:Columns><w:WindowCenter>40</w:WindowCenter><w:WindowWidth>400</w:WindowWidth>\
<w:ImageQuality>80</w:ImageQuality><w:ContentTypeList><w:ContentType>image/png</w:ContentType></w:ContentTypeList></w:RenderedDocumentRequest>",
        ))
        .unwrap();
        assert_eq!(r[0].frame, Some(2));
        let render = r[0].render.as_ref().unwrap();
        assert_eq!(render.format, ImageFormat::Png);
        assert_eq!(render.params.viewport, Some((32, 64)));
        assert_eq!(render.params.quality, 80);
        assert_eq!(r[0].document.repository, "");
        let code = |inner: &str| {
            read(&request(&format!(
                "<w:RenderedDocumentRequest><b:DocumentUniqueId>1</b:DocumentUniqueId>{inner}</w:RenderedDocumentRequest>"
            )))
            .unwrap()[0]
                .render
                .clone()
                .unwrap_err()
                .0
        };
        let jpeg =
            "<w:ContentTypeList><w:ContentType>image/jpeg</w:ContentType></w:ContentTypeList>";
        assert_eq!(
            code("<w:ContentTypeList><w:ContentType>image/gif</w:ContentType></w:ContentTypeList>"),
            NOT_SUPPORTED_FORMAT
        );
        assert_eq!(
            code(&format!("<w:Rows>0</w:Rows>{jpeg}")),
            INVALID_PARAMETER
        );
        assert_eq!(
            code(&format!("<w:FrameNumber>x</w:FrameNumber>{jpeg}")),
            INVALID_PARAMETER
        );
        assert_eq!(
            code(&format!("<w:WindowCenter>1</w:WindowCenter>{jpeg}")),
            INVALID_PARAMETER
        );
        assert_eq!(
            code(&format!("<w:Annotation>patient</w:Annotation>{jpeg}")),
            UNSUPPORTED_PARAMETER
        );
        assert_eq!(
            code(&format!("<w:Anonymize>true</w:Anonymize>{jpeg}")),
            UNSUPPORTED_PARAMETER
        );
        assert!(read(&request("")).is_err());
    }
}
