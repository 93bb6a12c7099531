//! Single-resource bodies with `ETag`, `If-None-Match`, `Content-Length` and one byte
//! `Range` (RFC 9110 13.1.2, 14), so that a broken transfer of a large instance or bulk value
//! resumes where it stopped.

use super::multipart;
use super::producer;
use super::WebError;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use std::path::Path;

/// A satisfiable byte range `start..start+len` of a `total`-byte representation; `None`
/// when the header is absent, not a single bytes range, or refers to another ETag (serve
/// everything then, RFC 9110 14.2).
pub fn parse_range(
    headers: &HeaderMap,
    total: u64,
    etag: &str,
) -> Result<Option<(u64, u64)>, WebError> {
    let Some(spec) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    if let Some(if_range) = headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) {
        if if_range != etag {
            return Ok(None);
        }
    }
    let Some(set) = spec.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if set.contains(',') {
        return Ok(None);
    }
    let (first, last) = set
        .split_once('-')
        .ok_or(WebError::RangeNotSatisfiable(total))?;
    let parse = |s: &str| {
        s.trim()
            .parse::<u64>()
            .map_err(|_| WebError::RangeNotSatisfiable(total))
    };
    let (start, end) = match (first.trim().is_empty(), last.trim().is_empty()) {
        (false, true) => (parse(first)?, total.saturating_sub(1)),
        (false, false) => (parse(first)?, parse(last)?.min(total.saturating_sub(1))),
        (true, false) => {
            let suffix = parse(last)?.min(total);
            (total - suffix, total.saturating_sub(1))
        }
        (true, true) => return Err(WebError::RangeNotSatisfiable(total)),
    };
    if total == 0 || start > end || start >= total {
        return Err(WebError::RangeNotSatisfiable(total));
    }
    Ok(Some((start, end - start + 1)))
}

fn base_headers(response: &mut Response, content_type: &str, etag: &str, len: u64) {
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
}

fn content_range(response: &mut Response, start: u64, len: u64, total: u64) {
    if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{total}", start + len - 1)) {
        response.headers_mut().insert(header::CONTENT_RANGE, v);
    }
    *response.status_mut() = StatusCode::PARTIAL_CONTENT;
}

fn matches_etag(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
}

fn not_modified(etag: &str) -> Response {
    let mut r = StatusCode::NOT_MODIFIED.into_response();
    if let Ok(v) = HeaderValue::from_str(etag) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r
}

/// The file at `path`, or the `(offset, len)` slice of it, as one resource (a stored instance,
/// or a bulk value inside one). The ETag changes whenever the file is replaced.
pub async fn file_response(
    path: &Path,
    slice: Option<(u64, u64)>,
    content_type: &str,
    headers: &HeaderMap,
) -> Result<Response, WebError> {
    let meta = tokio::fs::metadata(path)
        .await
        .map_err(|e| WebError::Internal(format!("cannot read stored instance: {e}")))?;
    let (offset, total) = slice.unwrap_or((0, meta.len()));
    let modified = meta
        .modified()
        .ok()
        .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let etag = format!("\"{:x}-{offset:x}-{total:x}-{modified:x}\"", meta.len());
    if matches_etag(headers, &etag) {
        return Ok(not_modified(&etag));
    }
    let range = parse_range(headers, total, &etag)?;
    let (start, len) = range.unwrap_or((0, total));
    let (tx, body) = multipart::channel_body();
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || producer::single_range(&path, offset + start, len, &tx));
    let mut response = body.into_response();
    base_headers(&mut response, content_type, &etag, len);
    if range.is_some() {
        content_range(&mut response, start, len, total);
    }
    Ok(response)
}

/// An in-memory representation (a transcoded instance) with the same ETag/Range handling.
pub fn bytes_response(
    bytes: Bytes,
    content_type: &str,
    headers: &HeaderMap,
) -> Result<Response, WebError> {
    let total = bytes.len() as u64;
    let digest = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    });
    let etag = format!("\"{total:x}-{digest:x}\"");
    if matches_etag(headers, &etag) {
        return Ok(not_modified(&etag));
    }
    let range = parse_range(headers, total, &etag)?;
    let (start, len) = range.unwrap_or((0, total));
    let mut response = bytes
        .slice(start as usize..(start + len) as usize)
        .into_response();
    base_headers(&mut response, content_type, &etag, len);
    if range.is_some() {
        content_range(&mut response, start, len, total);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(spec: &str, total: u64) -> Result<Option<(u64, u64)>, WebError> {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_str(spec).unwrap());
        parse_range(&h, total, "\"e\"")
    }

    #[test]
    fn byte_ranges() {
        assert_eq!(range("bytes=0-9", 100).unwrap(), Some((0, 10)));
        assert_eq!(range("bytes=90-", 100).unwrap(), Some((90, 10)));
        assert_eq!(range("bytes=-5", 100).unwrap(), Some((95, 5)));
        assert_eq!(range("bytes=50-1000", 100).unwrap(), Some((50, 50)));
        assert_eq!(range("bytes=0-1,5-6", 100).unwrap(), None);
        assert_eq!(range("items=0-1", 100).unwrap(), None);
        assert!(range("bytes=100-", 100).is_err());
        assert!(range("bytes=5-2", 100).is_err());
        assert!(range("bytes=x-2", 100).is_err());
    }
}
