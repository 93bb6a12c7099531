//! WADO-RS frames and bulk data (PS3.18 10.4.1.1.5, 10.4.1.1.6): only the bytes asked for are
//! read from the stored file, found through [`PixelLayout`] without reading the pixel data.

use super::frames::{parse_frame_list, FrameError, PixelLayout, Ranges};
use super::media::{
    covers, frame_media_type, parse_accept, MediaRange, EXPLICIT_VR_LE, IMPLICIT_VR_LE,
};
use super::multipart::{self, BodySender};
use super::producer::{self, SendError};
use super::wado;
use super::{WebCaller, WebError, WebState};
use crate::core::InstanceLocation;
use crate::core::Stored;
use crate::dimse::dataset::{self, open_stored, Extent, PIXEL_DATA};
use crate::sop::DEFLATED_EXPLICIT_VR_LE;
use crate::trust::Caller;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use dicom_core::value::Value;
use dicom_core::Tag;
use dicom_object::InMemDicomObject;

impl From<FrameError> for WebError {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::BadList(_) => WebError::BadRequest(e.to_string()),
            FrameError::NoSuchFrame(..) | FrameError::NoPixelData => {
                WebError::NotFound(e.to_string())
            }
            _ => WebError::Internal(e.to_string()),
        }
    }
}

/// How frames go out.
#[derive(Debug, Clone, PartialEq, Eq)]
enum FrameForm {
    /// The stored bytes (native slice or compressed bitstream), typed as `media`.
    AsStored { media: String },
    /// Decoded to native pixels (`application/octet-stream`, Explicit VR Little Endian).
    Decoded,
}

/// PS3.18 8.7.3.5.2 / Table 8.7.3-5: choose a frame representation the client accepts.
fn choose_form(accept: &[MediaRange], layout: &PixelLayout) -> Option<FrameForm> {
    let stored_media = frame_media_type(&layout.transfer_syntax);
    for range in accept {
        if !covers(&range.essence, "multipart/related") {
            continue;
        }
        let inner = range
            .param("type")
            .unwrap_or("application/octet-stream")
            .to_ascii_lowercase();
        let ts = range.param("transfer-syntax");
        if layout.inflated {
            // Deflated Explicit VR LE: the stored bytes are the deflated data set, so frames
            // go as the native pixels inflated here, the same bytes in any uncompressed LE
            // syntax (PS3.5 A.5).
            let native = matches!(
                ts,
                None | Some("*" | EXPLICIT_VR_LE | IMPLICIT_VR_LE | DEFLATED_EXPLICIT_VR_LE)
            );
            if covers(&inner, "application/octet-stream") && native {
                return Some(FrameForm::Decoded);
            }
            continue;
        }
        // Native little-endian pixels are the same bytes in either uncompressed LE syntax.
        let native_le = !layout.is_encapsulated()
            && matches!(
                layout.transfer_syntax.as_str(),
                EXPLICIT_VR_LE | IMPLICIT_VR_LE
            )
            && matches!(ts, Some(EXPLICIT_VR_LE | IMPLICIT_VR_LE));
        let ts_as_stored = matches!(ts, None | Some("*"))
            || ts == Some(layout.transfer_syntax.as_str())
            || native_le;
        // A compressed bitstream without a media type of its own is never passed off as
        // native pixels (`application/octet-stream`).
        let unnamed_bitstream =
            layout.is_encapsulated() && stored_media == "application/octet-stream";
        if covers(&inner, stored_media) && ts_as_stored && !unnamed_bitstream {
            return Some(FrameForm::AsStored {
                media: stored_media.to_string(),
            });
        }
        if inner == "application/octet-stream" && ts == Some("*") {
            return Some(FrameForm::AsStored {
                media: stored_media.to_string(),
            });
        }
        let native_wanted = ts.is_none() || ts == Some(EXPLICIT_VR_LE);
        if inner == "application/octet-stream" && native_wanted && layout.is_encapsulated() {
            let decodable = super::transcode::plan(
                &layout.transfer_syntax,
                &super::media::SyntaxRequest::Uid(EXPLICIT_VR_LE.into()),
            ) != super::transcode::Plan::Impossible;
            if decodable {
                return Some(FrameForm::Decoded);
            }
        }
    }
    None
}

/// Read the data set (up to Pixel Data) and the pixel layout of a stored instance.
async fn read_instance(
    stored: &Stored,
    loc: &InstanceLocation,
) -> Result<(InMemDicomObject, Option<PixelLayout>), WebError> {
    stored.ensure_local(loc).await;
    let path = stored.local_file(loc).path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let (obj, _) = open_stored(&path, Extent::UpToPixelData)
            .map_err(|e| WebError::Internal(format!("stored instance does not parse: {e}")))?;
        let obj = obj.into_inner();
        let layout = match PixelLayout::read(&path, &obj) {
            Ok(l) => Some(l),
            Err(FrameError::NoPixelData) => None,
            Err(e) => return Err(e.into()),
        };
        Ok((obj, layout))
    })
    .await
    .map_err(|e| WebError::Internal(e.to_string()))?
}

pub async fn frames(
    State(state): State<WebState>,
    c: WebCaller,
    headers: HeaderMap,
    Path((study, series, sop, list)): Path<(String, String, String, String)>,
) -> Result<Response, WebError> {
    let caller = c.0;
    let numbers = parse_frame_list(&list)?;
    let (loc, mut ticket) = wado::locate_instance(&state, &caller, &study, &series, &sop).await?;
    ticket.touch(std::slice::from_ref(&loc));
    let planned = plan_frames(&state, &loc, &numbers, &headers).await;
    let (layout, ranges, form) = match planned {
        Ok(p) => p,
        Err(e) => {
            ticket.finish("failure", e.to_string()).await;
            return Err(e);
        }
    };
    let boundary = multipart::new_boundary();
    let (tx, body) = multipart::channel_body();
    let (inner, part_type) = match &form {
        FrameForm::AsStored { media } if layout.is_encapsulated() => (
            media.clone(),
            format!("{media}; transfer-syntax={}", layout.transfer_syntax),
        ),
        FrameForm::AsStored { media } => (media.clone(), media.clone()),
        FrameForm::Decoded => (
            "application/octet-stream".to_string(),
            "application/octet-stream".to_string(),
        ),
    };
    let content_type = multipart::content_type(&boundary, &inner, None);
    let path = state.core.stored().local_file(&loc).path().to_path_buf();
    let detail = format!("frames {list} of one instance");
    let decoded = match form {
        FrameForm::Decoded if layout.inflated => {
            match inflated_parts(&path, ranges.clone()).await {
                Ok(frames) => frames,
                Err(problem) => {
                    ticket.finish("failure", problem.clone()).await;
                    return Err(WebError::Internal(problem));
                }
            }
        }
        FrameForm::Decoded => match decode_frames(&path, &numbers).await {
            Ok(frames) => frames,
            Err(problem) => {
                ticket.finish("failure", problem.clone()).await;
                return Err(WebError::NotAcceptable(problem));
            }
        },
        FrameForm::AsStored { .. } => Vec::new(),
    };
    tokio::spawn(async move {
        let result = match form {
            FrameForm::AsStored { .. } => {
                let sender = tx.clone();
                let parts = ranges;
                tokio::task::spawn_blocking(move || {
                    producer::ranges(&path, &parts, &part_type, &boundary, &sender)
                })
                .await
                .unwrap_or_else(|e| Err(SendError::Failed(e.to_string())))
            }
            FrameForm::Decoded => {
                let sent = match send_decoded_frames(&tx, &boundary, decoded).await {
                    Ok(()) => tx
                        .send(multipart::closing(&boundary))
                        .await
                        .map_err(SendError::from),
                    Err(e) => Err(e),
                };
                if let Err(SendError::Failed(problem)) = &sent {
                    tx.fail(problem.clone()).await;
                }
                sent
            }
        };
        let outcome = match result {
            Ok(()) => "success",
            Err(SendError::Disconnected) => "cancelled",
            Err(SendError::Failed(_)) => "failure",
        };
        ticket.finish(outcome, detail).await;
    });
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

/// The frames' layout, their byte ranges and the form they go in; a 4xx when the instance
/// has none of them or the client takes no form offered.
async fn plan_frames(
    state: &WebState,
    loc: &InstanceLocation,
    numbers: &[u32],
    headers: &HeaderMap,
) -> Result<(PixelLayout, Vec<Ranges>, FrameForm), WebError> {
    let (_, layout) = read_instance(state.core.stored(), loc).await?;
    let layout = layout.ok_or(FrameError::NoPixelData)?;
    let ranges: Vec<Ranges> = numbers
        .iter()
        .map(|n| layout.frame(*n))
        .collect::<Result<_, _>>()?;
    let accept = parse_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let Some(form) = choose_form(&accept, &layout) else {
        return Err(WebError::NotAcceptable(format!(
            "frames of this instance are offered as multipart/related; type=\"{}\" (stored, transfer-syntax={}) \
             or decoded where possible as application/octet-stream",
            frame_media_type(&layout.transfer_syntax),
            layout.transfer_syntax
        )));
    };
    Ok((layout, ranges, form))
}

/// Decode compressed frames to native pixels (the whole instance is read: dicom-pixeldata
/// decodes from a data set in memory). Done before the response starts, so a frame that
/// cannot be decoded is a 406 as for `/rendered`, not a stream cut short.
async fn decode_frames(path: &std::path::Path, numbers: &[u32]) -> Result<Vec<Vec<u8>>, String> {
    let path = path.to_path_buf();
    let numbers = numbers.to_vec();
    tokio::task::spawn_blocking(move || -> Result<Vec<Vec<u8>>, String> {
        let (obj, _) = open_stored(&path, Extent::Whole).map_err(|e| e.to_string())?;
        numbers
            .iter()
            .map(|n| {
                crate::transcode::decode_frame(&obj, n - 1)
                    .map(|d| d.data().to_vec())
                    .map_err(|e| format!("cannot decode frame {n}: {e}"))
            })
            .collect()
    })
    .await
    .map_err(|e| e.to_string())?
}

/// The byte ranges `parts` (one entry per part) of the inflated data set of the Deflated
/// Explicit VR LE file at `path` (inflated once, in memory, as a transcode does).
async fn inflated_parts(
    path: &std::path::Path,
    parts: Vec<Ranges>,
) -> Result<Vec<Vec<u8>>, String> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || -> Result<Vec<Vec<u8>>, String> {
        let layout = dataset::read_layout(&path).map_err(|e| e.to_string())?;
        let data_set = dataset::inflate_stored(&path, &layout).map_err(|e| e.to_string())?;
        parts
            .iter()
            .map(|ranges| {
                let mut part = Vec::new();
                for &(offset, len) in ranges {
                    let piece = usize::try_from(offset)
                        .ok()
                        .zip(usize::try_from(offset + len).ok())
                        .and_then(|(from, to)| data_set.get(from..to))
                        .ok_or("pixel data beyond the inflated data set")?;
                    part.extend_from_slice(piece);
                }
                Ok(part)
            })
            .collect()
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Send decoded frames as parts.
async fn send_decoded_frames(
    tx: &BodySender,
    boundary: &str,
    frames: Vec<Vec<u8>>,
) -> Result<(), SendError> {
    for frame in frames {
        tx.send(multipart::part_header(
            boundary,
            "application/octet-stream",
            Some(frame.len() as u64),
        ))
        .await?;
        tx.send(Bytes::from(frame)).await?;
        tx.send(multipart::part_end()).await?;
    }
    Ok(())
}

/// Does the client take a bare `application/octet-stream` body (needed for Range)?
fn wants_bare(accept: &[MediaRange]) -> bool {
    accept
        .first()
        .is_some_and(|r| r.essence == "application/octet-stream")
}

/// Parse a bulk data path: `GGGGEEEE` or `GGGGEEEE/item/GGGGEEEE/...`.
fn parse_tag_path(path: &str) -> Option<(Vec<(Tag, usize)>, Tag)> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    if parts.len().is_multiple_of(2) || parts.len() > 33 {
        return None;
    }
    let tag = |s: &str| -> Option<Tag> {
        (s.len() == 8 && s.bytes().all(|b| b.is_ascii_hexdigit())).then(|| {
            Tag(
                u16::from_str_radix(&s[..4], 16).unwrap_or(0),
                u16::from_str_radix(&s[4..], 16).unwrap_or(0),
            )
        })
    };
    let mut items = Vec::new();
    for pair in parts[..parts.len() - 1].chunks(2) {
        items.push((tag(pair[0])?, pair[1].parse().ok()?));
    }
    Some((items, tag(parts[parts.len() - 1])?))
}

fn value_at(obj: &InMemDicomObject, items: &[(Tag, usize)], last: Tag) -> Option<Vec<u8>> {
    let mut current = obj;
    for (tag, index) in items {
        match current.element(*tag).ok()?.value() {
            Value::Sequence(seq) => current = seq.items().get(*index)?,
            _ => return None,
        }
    }
    match current.element(last).ok()?.value() {
        Value::Primitive(p) => Some(p.to_bytes().into_owned()),
        _ => None,
    }
}

pub async fn bulkdata(
    State(state): State<WebState>,
    c: WebCaller,
    headers: HeaderMap,
    Path((study, series, sop, tag_path)): Path<(String, String, String, String)>,
) -> Result<Response, WebError> {
    let caller: Caller = c.0;
    let (items, last) = parse_tag_path(&tag_path)
        .ok_or_else(|| WebError::BadRequest(format!("invalid bulk data path {tag_path:?}")))?;
    let (loc, mut ticket) = wado::locate_instance(&state, &caller, &study, &series, &sop).await?;
    ticket.touch(std::slice::from_ref(&loc));
    let detail = format!("bulk data {tag_path} of one instance");
    let answered = bulk_response(&state, &loc, (&items, last, &tag_path), &headers).await;
    match &answered {
        Ok(_) => ticket.finish("success", detail).await,
        Err(e) => ticket.finish("failure", e.to_string()).await,
    }
    answered
}

/// One bulk data value: Pixel Data as stored (native: one range of the file, with Range
/// support; encapsulated: one part per frame; deflated: the value inflated), any other value
/// from the parsed data set.
async fn bulk_response(
    state: &WebState,
    loc: &InstanceLocation,
    (items, last, tag_path): (&[(Tag, usize)], Tag, &str),
    headers: &HeaderMap,
) -> Result<Response, WebError> {
    let accept = parse_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let (obj, layout) = read_instance(state.core.stored(), loc).await?;
    let path = state.core.stored().local_file(loc).path().to_path_buf();
    let pixel_data = items.is_empty() && last == PIXEL_DATA;
    let bytes = if pixel_data && layout.as_ref().is_some_and(|l| l.inflated) {
        // Deflated: the value inflated here (no byte range of the file holds it).
        let value = layout.and_then(|l| l.native_value);
        let value = value.ok_or(FrameError::NoPixelData)?;
        inflated_parts(&path, vec![vec![value]])
            .await
            .map_err(WebError::Internal)?
            .remove(0)
    } else if pixel_data {
        let layout = layout.ok_or(FrameError::NoPixelData)?;
        if let Some(value) = layout.native_value {
            return if wants_bare(&accept) {
                super::ranged::file_response(
                    &path,
                    Some(value),
                    "application/octet-stream",
                    headers,
                )
                .await
            } else {
                let ranges = vec![vec![value]];
                Ok(stored_multipart(
                    &path,
                    "application/octet-stream",
                    "application/octet-stream",
                    ranges,
                ))
            };
        }
        // Encapsulated: every frame as stored, one part each.
        let media = frame_media_type(&layout.transfer_syntax);
        let ranges: Vec<Ranges> = (1..=layout.number_of_frames)
            .map(|n| layout.frame(n))
            .collect::<Result<_, _>>()?;
        let part_type = format!("{media}; transfer-syntax={}", layout.transfer_syntax);
        return Ok(stored_multipart(&path, media, &part_type, ranges));
    } else {
        value_at(&obj, items, last)
            .ok_or_else(|| WebError::NotFound(format!("no bulk data at {tag_path}")))?
    };
    if wants_bare(&accept) {
        return super::ranged::bytes_response(
            Bytes::from(bytes),
            "application/octet-stream",
            headers,
        );
    }
    let boundary = multipart::new_boundary();
    let mut body = Vec::with_capacity(bytes.len() + 256);
    body.extend_from_slice(&multipart::part_header(
        &boundary,
        "application/octet-stream",
        Some(bytes.len() as u64),
    ));
    body.extend_from_slice(&bytes);
    body.extend_from_slice(&multipart::part_end());
    body.extend_from_slice(&multipart::closing(&boundary));
    let ct = multipart::content_type(&boundary, "application/octet-stream", None);
    Ok(([(header::CONTENT_TYPE, ct)], body).into_response())
}

/// A multipart body of byte ranges of a stored file, one part per entry of `parts`.
fn stored_multipart(
    path: &std::path::Path,
    inner: &str,
    part_type: &str,
    parts: Vec<Ranges>,
) -> Response {
    let boundary = multipart::new_boundary();
    let (tx, body) = multipart::channel_body();
    let ct = multipart::content_type(&boundary, inner, None);
    let (path, part_type) = (path.to_path_buf(), part_type.to_string());
    tokio::task::spawn_blocking(move || {
        producer::ranges(&path, &parts, &part_type, &boundary, &tx)
    });
    ([(header::CONTENT_TYPE, ct)], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_paths() {
        assert_eq!(parse_tag_path("7FE00010"), Some((vec![], PIXEL_DATA)));
        assert_eq!(
            parse_tag_path("00540016/0/00181072"),
            Some((vec![(Tag(0x0054, 0x0016), 0)], Tag(0x0018, 0x1072)))
        );
        assert_eq!(parse_tag_path("00540016/0"), None);
        assert_eq!(parse_tag_path("zz"), None);
    }
}
