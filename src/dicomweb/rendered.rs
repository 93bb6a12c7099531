//! WADO-RS rendered and thumbnail resources (PS3.18 10.4.1.1.3, 10.4.1.1.4, 8.3.5.1): one
//! frame (of a representative instance, for study and series thumbnails) as `image/jpeg`
//! (default) or `image/png`, with `window`, `viewport` and `quality`.
//! Without `window` the instance's own first window (or its VOI LUT) is used, and min-max
//! normalisation where it has none.

use super::frames::parse_frame_list;
use super::media::{covers, parse_accept};
use super::wado::{self, selection};
use super::{WebCaller, WebError, WebState};
use crate::core::{InstanceLocation, Selection, Ticket};
use crate::dimse::dataset::{open_stored, Extent};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use dicom_pixeldata::image::{self, imageops::FilterType, DynamicImage};
use dicom_pixeldata::{ConvertOptions, VoiLutOption, WindowLevel};

/// Longest side of a thumbnail when no viewport is given.
const THUMBNAIL_SIZE: u32 = 128;
/// Default JPEG quality (PS3.18 8.3.5.1.3 leaves it to the origin server).
const DEFAULT_QUALITY: u8 = 90;
/// Largest viewport side accepted.
const MAX_VIEWPORT: u32 = 8192;

/// Rendering parameters (PS3.18 8.3.5.1).
#[derive(Debug, Clone, PartialEq)]
pub struct RenderParams {
    pub window: Option<WindowLevel>,
    pub viewport: Option<(u32, u32)>,
    pub quality: u8,
}

pub fn parse_params(raw: &str) -> Result<RenderParams, WebError> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(raw).map_err(|e| WebError::BadRequest(e.to_string()))?;
    let bad = |name: &str, v: &str, want: &str| {
        WebError::BadRequest(format!("invalid {name} {v:?}: expected {want}"))
    };
    let mut params = RenderParams {
        window: None,
        viewport: None,
        quality: DEFAULT_QUALITY,
    };
    for (k, v) in &pairs {
        match k.as_str() {
            "window" => {
                let parts: Vec<&str> = v.split(',').collect();
                let nums: Option<Vec<f64>> = parts
                    .iter()
                    .take(2)
                    .map(|p| p.trim().parse().ok())
                    .collect();
                match nums.as_deref() {
                    Some([center, width])
                        if center.is_finite()
                            && width.is_finite()
                            && *width > 0.0
                            && parts.len() <= 3 =>
                    {
                        params.window = Some(WindowLevel {
                            center: *center,
                            width: *width,
                        })
                    }
                    _ => return Err(bad("window", v, "center,width[,function] with width > 0")),
                }
            }
            "viewport" => {
                let nums: Option<Vec<u32>> = v
                    .split(',')
                    .take(2)
                    .map(|p| p.trim().parse().ok())
                    .collect();
                match nums.as_deref() {
                    Some([w, h])
                        if (1..=MAX_VIEWPORT).contains(w) && (1..=MAX_VIEWPORT).contains(h) =>
                    {
                        params.viewport = Some((*w, *h))
                    }
                    _ => return Err(bad("viewport", v, "vw,vh between 1 and 8192")),
                }
            }
            "quality" => match v.trim().parse::<u8>() {
                Ok(q) if (1..=100).contains(&q) => params.quality = q,
                _ => return Err(bad("quality", v, "an integer 1..100")),
            },
            // annotation, charset, iccprofile ...: optional, ignored (PS3.18 8.3.5.1).
            _ => {}
        }
    }
    Ok(params)
}

/// Output format from the Accept header: JPEG unless PNG is preferred.
fn output_format(headers: &HeaderMap) -> Result<image::ImageFormat, WebError> {
    let accept = parse_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    for r in &accept {
        if covers(&r.essence, "image/jpeg") {
            return Ok(image::ImageFormat::Jpeg);
        }
        if r.essence == "image/png" {
            return Ok(image::ImageFormat::Png);
        }
    }
    Err(WebError::NotAcceptable(
        "rendered images are offered as image/jpeg or image/png".into(),
    ))
}

/// Decode, window, scale and encode one frame (blocking).
pub fn render(
    path: &std::path::Path,
    frame: u32,
    params: &RenderParams,
    thumbnail: bool,
    format: image::ImageFormat,
) -> Result<Vec<u8>, String> {
    let (obj, _) = open_stored(path, Extent::Whole).map_err(|e| e.to_string())?;
    let decoded = crate::transcode::decode_frame(&obj, frame - 1)
        .map_err(|e| format!("cannot decode frame {frame}: {e}"))?;
    let voi = match params.window {
        Some(w) => VoiLutOption::Custom(w),
        None => VoiLutOption::First,
    };
    let options = ConvertOptions::new().with_voi_lut(voi).force_8bit();
    let mut img: DynamicImage = decoded
        .to_dynamic_image_with_options(0, &options)
        .map_err(|e| format!("cannot render frame {frame}: {e}"))?;
    if let Some((w, h)) = params.viewport {
        img = img.resize(w, h, FilterType::Triangle);
    } else if thumbnail {
        img = img.thumbnail(THUMBNAIL_SIZE, THUMBNAIL_SIZE);
    }
    let img = if img.color().has_color() {
        DynamicImage::ImageRgb8(img.to_rgb8())
    } else {
        DynamicImage::ImageLuma8(img.to_luma8())
    };
    let mut out = Vec::new();
    match format {
        image::ImageFormat::Jpeg => {
            let encoder =
                image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, params.quality);
            img.write_with_encoder(encoder).map_err(|e| e.to_string())?;
        }
        _ => img
            .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .map_err(|e| e.to_string())?,
    }
    Ok(out)
}

/// The instance that stands for a study or series: the middle one of its largest series.
fn representative(locations: &[InstanceLocation]) -> &InstanceLocation {
    let mut best: &[InstanceLocation] = &locations[..1];
    for series in locations.chunk_by(|a, b| a.series_instance_uid == b.series_instance_uid) {
        if series.len() > best.len() {
            best = series;
        }
    }
    &best[best.len() / 2]
}

async fn respond(
    state: WebState,
    caller: WebCaller,
    headers: HeaderMap,
    selection: Selection,
    frame: u32,
    raw: Option<String>,
    thumbnail: bool,
) -> Result<Response, WebError> {
    let caller = caller.0;
    // Admitted (and audited when refused) before anything else; a bad request is then a
    // failure with its own record, like every other request.
    let (found, ticket) = wado::locate(&state, &caller, &selection).await?;
    let request = RenderRequest {
        frame,
        raw: raw.unwrap_or_default(),
        thumbnail,
    };
    render_found(&state, &headers, found, ticket, request).await
}

/// What to render: the frame (from 1), the rendering parameters as a query string
/// (`window`, `viewport`, `quality`), and whether a thumbnail is asked.
pub(super) struct RenderRequest {
    pub frame: u32,
    pub raw: String,
    pub thumbnail: bool,
}

/// Render the representative of the located instances; the ticket gets the record.
pub(super) async fn render_found(
    state: &WebState,
    headers: &HeaderMap,
    found: Vec<InstanceLocation>,
    ticket: Ticket,
    request: RenderRequest,
) -> Result<Response, WebError> {
    let RenderRequest {
        frame,
        raw,
        thumbnail,
    } = request;
    let checked = parse_params(&raw).and_then(|params| Ok((params, output_format(headers)?)));
    let (params, format) = match checked {
        Ok(ok) => ok,
        Err(e) => {
            ticket.finish("failure", e.to_string()).await;
            return Err(e);
        }
    };
    let chosen = representative(&found).clone();
    let mut ticket = super::wado::present(state, &chosen, ticket).await?;
    ticket.touch(std::slice::from_ref(&chosen));
    let path = state.core.stored().local_file(&chosen).path().to_path_buf();
    let rendered =
        tokio::task::spawn_blocking(move || render(&path, frame, &params, thumbnail, format))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r);
    match rendered {
        Ok(bytes) => {
            ticket
                .finish("success", format!("rendered frame {frame}"))
                .await;
            let ct = if format == image::ImageFormat::Png {
                "image/png"
            } else {
                "image/jpeg"
            };
            Ok(([(header::CONTENT_TYPE, ct)], bytes).into_response())
        }
        Err(problem) => {
            ticket.finish("failure", problem.clone()).await;
            Err(WebError::NotAcceptable(problem))
        }
    }
}

fn single_frame(list: &str) -> Result<u32, WebError> {
    match parse_frame_list(list)?.as_slice() {
        [one] => Ok(*one),
        _ => Err(WebError::BadRequest(
            "a rendered frame resource names exactly one frame".into(),
        )),
    }
}

pub async fn instance(
    State(s): State<WebState>,
    c: WebCaller,
    h: HeaderMap,
    Path(ids): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
) -> Result<Response, WebError> {
    respond(s, c, h, instance_selection(ids), 1, q, false).await
}

pub async fn instance_thumbnail(
    State(s): State<WebState>,
    c: WebCaller,
    h: HeaderMap,
    Path(ids): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
) -> Result<Response, WebError> {
    respond(s, c, h, instance_selection(ids), 1, q, true).await
}

fn instance_selection(ids: (String, String, String)) -> Selection {
    selection(&ids.0, Some(&ids.1), Some(&ids.2))
}

/// A study's thumbnail: its representative instance (PS3.18 10.4.1.1.4).
pub async fn study_thumbnail(
    State(s): State<WebState>,
    c: WebCaller,
    h: HeaderMap,
    Path(study): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, WebError> {
    respond(s, c, h, selection(&study, None, None), 1, q, true).await
}

/// A series' thumbnail: its middle instance (PS3.18 10.4.1.1.4).
pub async fn series_thumbnail(
    State(s): State<WebState>,
    c: WebCaller,
    h: HeaderMap,
    Path((study, series)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Result<Response, WebError> {
    respond(s, c, h, selection(&study, Some(&series), None), 1, q, true).await
}

pub async fn frame(
    State(s): State<WebState>,
    c: WebCaller,
    h: HeaderMap,
    Path((st, se, sop, list)): Path<(String, String, String, String)>,
    RawQuery(q): RawQuery,
) -> Result<Response, WebError> {
    let n = single_frame(&list)?;
    respond(s, c, h, instance_selection((st, se, sop)), n, q, false).await
}

pub async fn frame_thumbnail(
    State(s): State<WebState>,
    c: WebCaller,
    h: HeaderMap,
    Path((st, se, sop, list)): Path<(String, String, String, String)>,
    RawQuery(q): RawQuery,
) -> Result<Response, WebError> {
    let n = single_frame(&list)?;
    respond(s, c, h, instance_selection((st, se, sop)), n, q, true).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params() {
        let p = parse_params("window=40,400,linear&viewport=256,256&quality=70").unwrap();
        assert_eq!(
            p.window,
            Some(WindowLevel {
                center: 40.0,
                width: 400.0
            })
        );
        assert_eq!(p.viewport, Some((256, 256)));
        assert_eq!(p.quality, 70);
        for bad in [
            "window=40",
            "window=40,0",
            "window=NaN,10",
            "window=0,inf",
            "viewport=0,10",
            "quality=0",
            "quality=abc",
            "viewport=99999,1",
        ] {
            assert!(parse_params(bad).is_err(), "{bad}");
        }
    }
}
