//! WADO-URI (PS3.18 9, formerly "WADO"; IHE RAD-55 WADO Retrieve): one instance named by
//! `requestType=WADO&studyUID=…&seriesUID=…&objectUID=…`, as DICOM or rendered, for older
//! viewers and the XDS-I profile. Served at `/wado`.
//!
//! It is a translation onto the WADO-RS resources, audited as WADO-URI:
//! - `contentType=application/dicom` is the WADO-RS instance resource with `Accept:
//!   application/dicom; transfer-syntax=<transferSyntax>`; without `transferSyntax` the
//!   instance comes as Explicit VR Little Endian (PS3.18 9.1.2.1.9), transcoded where needed.
//! - `contentType=image/jpeg` or `image/png` is the rendered resource: `frameNumber` the
//!   frame, `rows`/`columns` the largest size keeping the aspect ratio (the `viewport`),
//!   `windowCenter`/`windowWidth` the `window`, `imageQuality` the JPEG `quality`.
//! - Without `contentType`: `image/jpeg` for an object with pixels, `application/dicom` for
//!   one without (a report, a KOS manifest, a presentation state), as PS3.18 9.1.2.1.5 asks.
//!
//! What we do not offer is refused with 400 and a reason rather than answered wrongly:
//! `anonymize=yes`, `region`, and a presentation state to apply (`presentationUID`).

use super::media::{parse_accept, SyntaxRequest};
use super::rendered::{render_found, RenderRequest};
use super::wado::{locate_as, selection, single_instance};
use super::{WebCaller, WebError, WebState};
use crate::sop::{self, EXPLICIT_VR_LE};
use crate::trust::Operation;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::Response;

/// A WADO-URI request read from its query string.
#[derive(Debug, Clone, PartialEq)]
pub struct WadoUriRequest {
    pub study: String,
    pub series: String,
    pub object: String,
    /// What to answer with; `None`: the default for the object.
    pub content: Option<Content>,
    /// For `application/dicom`: the asked syntax (`*`: as stored).
    pub transfer_syntax: Option<String>,
    /// For a rendering: the frame, from 1.
    pub frame: u32,
    /// For a rendering: the WADO-RS rendering parameters they stand for.
    pub render_query: String,
}

/// The answer's media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    Dicom,
    Jpeg,
    Png,
}

impl Content {
    fn media_type(self) -> &'static str {
        match self {
            Content::Dicom => "application/dicom",
            Content::Jpeg => "image/jpeg",
            Content::Png => "image/png",
        }
    }
}

/// Read and check the parameters (PS3.18 Table 9.1-1 and 9.1.2).
pub fn parse(raw: &str) -> Result<WadoUriRequest, WebError> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(raw).map_err(|e| WebError::BadRequest(e.to_string()))?;
    let one = |name: &str| -> Result<Option<String>, WebError> {
        let mut values = pairs.iter().filter(|(k, _)| k == name).map(|(_, v)| v);
        let first = values.next().map(|v| v.trim().to_string());
        if values.next().is_some() {
            return Err(WebError::BadRequest(format!("{name} given more than once")));
        }
        Ok(first)
    };
    match one("requestType")?.as_deref() {
        Some("WADO") => {}
        Some(other) => {
            return Err(WebError::BadRequest(format!(
                "requestType {other:?} is not supported: WADO only"
            )))
        }
        None => return Err(WebError::BadRequest("requestType=WADO is required".into())),
    }
    let uid = |name: &str, v: Option<String>| -> Result<String, WebError> {
        match v {
            Some(v) if is_uid(&v) => Ok(v),
            Some(v) => Err(WebError::BadRequest(format!("{name} {v:?} is not a UID"))),
            None => Err(WebError::BadRequest(format!("{name} is required"))),
        }
    };
    let study = uid("studyUID", one("studyUID")?)?;
    let series = uid("seriesUID", one("seriesUID")?)?;
    let object = uid("objectUID", one("objectUID")?)?;
    if one("anonymize")?.is_some_and(|v| v.eq_ignore_ascii_case("yes")) {
        return Err(WebError::BadRequest(
            "anonymize=yes is not offered: ask for the instance as it is".into(),
        ));
    }
    for unsupported in ["region", "presentationUID", "presentationSeriesUID"] {
        if one(unsupported)?.is_some() {
            return Err(WebError::BadRequest(format!(
                "{unsupported} is not supported"
            )));
        }
    }
    let content = match one("contentType")? {
        None => None,
        Some(list) => Some(content_of(&list)?),
    };
    let transfer_syntax = one("transferSyntax")?;
    if let Some(ts) = &transfer_syntax {
        if ts != "*" && !is_uid(ts) {
            return Err(WebError::BadRequest(format!(
                "transferSyntax {ts:?} is not a UID"
            )));
        }
    }
    let number = |name: &str, v: &str, max: u32| -> Result<u32, WebError> {
        v.parse::<u32>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| WebError::BadRequest(format!("{name} {v:?}: expected 1..{max}")))
    };
    let frame = match one("frameNumber")? {
        Some(v) => number("frameNumber", &v, u32::MAX)?,
        None => 1,
    };
    let mut render = Vec::new();
    let (rows, columns) = (one("rows")?, one("columns")?);
    if rows.is_some() || columns.is_some() {
        let side = |name, v: Option<String>| match v {
            Some(v) => number(name, &v, MAX_SIDE),
            None => Ok(MAX_SIDE),
        };
        let (h, w) = (side("rows", rows)?, side("columns", columns)?);
        render.push(format!("viewport={w},{h}"));
    }
    match (one("windowCenter")?, one("windowWidth")?) {
        (Some(c), Some(w)) => render.push(format!("window={c},{w}")),
        (None, None) => {}
        _ => {
            return Err(WebError::BadRequest(
                "windowCenter and windowWidth come together".into(),
            ))
        }
    }
    if let Some(q) = one("imageQuality")? {
        render.push(format!("quality={}", number("imageQuality", &q, 100)?));
    }
    let render_query = render.join("&");
    if content == Some(Content::Dicom) && !render_query.is_empty() {
        return Err(WebError::BadRequest(
            "rows, columns, window and imageQuality apply to images, not to application/dicom"
                .into(),
        ));
    }
    if transfer_syntax.is_some() && matches!(content, Some(Content::Jpeg | Content::Png)) {
        return Err(WebError::BadRequest(
            "transferSyntax applies to application/dicom only".into(),
        ));
    }
    Ok(WadoUriRequest {
        study,
        series,
        object,
        content,
        transfer_syntax,
        frame,
        render_query,
    })
}

/// Largest rendered side, as the rendered resource allows.
const MAX_SIDE: u32 = 8192;

/// The first media type of `contentType` we offer, in the client's order of preference.
fn content_of(list: &str) -> Result<Content, WebError> {
    for range in parse_accept(Some(list)) {
        match range.essence.as_str() {
            "application/dicom" => return Ok(Content::Dicom),
            "image/jpeg" | "image/*" | "*/*" => return Ok(Content::Jpeg),
            "image/png" => return Ok(Content::Png),
            _ => {}
        }
    }
    Err(WebError::NotAcceptable(format!(
        "contentType {list:?}: offered are application/dicom, image/jpeg and image/png"
    )))
}

fn is_uid(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 64
        && v.split('.')
            .all(|arc| !arc.is_empty() && arc.bytes().all(|b| b.is_ascii_digit()))
}

/// `GET /wado?requestType=WADO&…`: admitted and audited as WADO-URI, located (fetched into
/// the cache first in gateway mode, as a single WADO-RS instance is), then sent or rendered.
pub async fn retrieve(
    State(state): State<WebState>,
    caller: WebCaller,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, WebError> {
    let request = parse(raw.as_deref().unwrap_or(""))?;
    let sel = selection(&request.study, Some(&request.series), Some(&request.object));
    let (mut found, ticket) = locate_as(&state, &caller.0, Operation::WadoUri, &sel).await?;
    let content = request.content.unwrap_or_else(|| {
        if sop::has_pixel_data(&found[0].sop_class_uid) {
            Content::Jpeg
        } else {
            Content::Dicom
        }
    });
    match content {
        Content::Dicom => {
            let syntax = SyntaxRequest::from_param(Some(
                request.transfer_syntax.as_deref().unwrap_or(EXPLICIT_VR_LE),
            ));
            // Range requests are honoured as on WADO-RS.
            single_instance(&state, ticket, &headers, found.swap_remove(0), &syntax).await
        }
        image => {
            let mut headers = headers;
            headers.insert(header::ACCEPT, HeaderValue::from_static(image.media_type()));
            let render = RenderRequest {
                frame: request.frame,
                raw: request.render_query,
                thumbnail: false,
            };
            render_found(&state, &headers, found, ticket, render).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDS: &str = "requestType=WADO&studyUID=1.2.3&seriesUID=1.2.3.4&objectUID=1.2.3.4.5";

    #[test]
    fn the_three_uids_and_request_type_are_required() {
        let r = parse(IDS).unwrap();
        assert_eq!(
            (r.study.as_str(), r.object.as_str()),
            ("1.2.3", "1.2.3.4.5")
        );
        assert_eq!((r.content, r.frame, r.render_query.as_str()), (None, 1, ""));
        for bad in [
            "studyUID=1.2.3&seriesUID=1.2.3.4&objectUID=1.2.3.4.5",
            "requestType=WADO-RS&studyUID=1.2.3&seriesUID=1.2.3.4&objectUID=1.2.3.4.5",
            "requestType=WADO&studyUID=1.2.3&seriesUID=1.2.3.4",
            "requestType=WADO&studyUID=1.2.x&seriesUID=1.2.3.4&objectUID=1",
            "requestType=WADO&requestType=WADO&studyUID=1&seriesUID=1&objectUID=1",
        ] {
            assert!(matches!(parse(bad), Err(WebError::BadRequest(_))), "{bad}");
        }
    }

    #[test]
    fn image_parameters_become_the_rendered_resource_parameters() {
        let r = parse(&format!(
            "{IDS}&contentType=image/png&rows=256&windowCenter=40&windowWidth=400&imageQuality=70&frameNumber=3"
        ))
        .unwrap();
        assert_eq!(r.content, Some(Content::Png));
        assert_eq!(r.frame, 3);
        assert_eq!(r.render_query, "viewport=8192,256&window=40,400&quality=70");
        let r = parse(&format!("{IDS}&columns=100&rows=50")).unwrap();
        assert_eq!(r.render_query, "viewport=100,50");
    }

    #[test]
    fn content_type_lists_pick_the_first_offered_media_type() {
        let r = parse(&format!("{IDS}&contentType=image/gif,application/dicom")).unwrap();
        assert_eq!(r.content, Some(Content::Dicom));
        let r = parse(&format!(
            "{IDS}&contentType=application/dicom;q=0.5,image/jpeg"
        ))
        .unwrap();
        assert_eq!(r.content, Some(Content::Jpeg));
        assert!(matches!(
            parse(&format!("{IDS}&contentType=video/mpeg")),
            Err(WebError::NotAcceptable(_))
        ));
    }

    #[test]
    fn what_is_not_offered_is_refused_not_ignored() {
        for extra in [
            "anonymize=yes",
            "region=0,0,0.5,0.5",
            "presentationUID=1.2",
            "windowCenter=40",
            "imageQuality=0",
            "frameNumber=0",
            "contentType=application/dicom&rows=10",
            "contentType=image/jpeg&transferSyntax=1.2.840.10008.1.2",
            "transferSyntax=abc",
        ] {
            assert!(parse(&format!("{IDS}&{extra}")).is_err(), "{extra}");
        }
        let r = parse(&format!(
            "{IDS}&contentType=application/dicom&transferSyntax=*"
        ))
        .unwrap();
        assert_eq!(r.transfer_syntax.as_deref(), Some("*"));
    }
}
