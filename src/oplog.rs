//! The operations log: what an operator reads to see the gateway at work, at `info`, one line
//! per DIMSE association and one per HTTP request, each with the request id that the audit
//! records of that association or request carry too (their detail ends in
//! `(request <id>)`). No patient data: an HTTP line names the route template
//! (`/dicomweb/studies/{study}`), never the UIDs or the query string.
//!
//! Output: text, with colours only on a terminal, or JSON lines (`[log] format = "json"` or
//! `BEELDBRUG_LOG_FORMAT=json`); the filter is `BEELDBRUG_LOG` (default `info`).
//! docs/operations.md lists the fields. The subscriber and the log's layer are in `telemetry`.

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, Response};
use axum::middleware::Next;
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Instant;

/// The response header carrying the request id (also in the log line and the audit detail).
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The HTTP header carrying an exchange's correlation id between gateways (issue 17 item 2):
/// on our outgoing DICOMweb and SOAP requests, read from incoming ones; recorded in the audit
/// record at both ends.
pub const CORRELATION_HEADER: &str = "x-correlation-id";

/// The SOAP header element carrying the correlation id (`<bb:CorrelationID>` in this
/// namespace, no `mustUnderstand`: a peer that does not know it ignores it).
pub const NS_CORRELATION: &str = "urn:beeldbrug:correlation:1";
pub const CORRELATION_ELEMENT: &str = "CorrelationID";

/// Longest correlation id taken from a peer.
const CORRELATION_MAX: usize = 128;

/// A correlation id as a peer sent it, if it is one we record: 1 to 128 visible ASCII
/// characters (no spaces, quotes, angle brackets or backslashes: it goes into logs, XML and
/// CSV as is).
pub fn correlation_from_peer(value: &str) -> Option<String> {
    let v = value.trim();
    let ok = !v.is_empty()
        && v.len() <= CORRELATION_MAX
        && v.bytes().all(|b| {
            b.is_ascii_graphic() && !matches!(b, b'"' | b'\'' | b'<' | b'>' | b'&' | b'\\')
        });
    ok.then(|| v.to_string())
}

/// The correlation id of an exchange this process starts: `urn:uuid:` of a fresh random
/// UUID when there is no request id, else one derived from this process's random
/// instance id and the request id (all calls of one request share it).
pub fn new_correlation(request_id: Option<&str>) -> String {
    static INSTANCE: OnceLock<String> = OnceLock::new();
    match request_id {
        Some(id) => {
            let instance = INSTANCE.get_or_init(random_hex);
            format!("beeldbrug:{instance}:{id}")
        }
        None => {
            let h = random_hex();
            format!(
                "urn:uuid:{}-{}-4{}-8{}-{}",
                &h[0..8],
                &h[8..12],
                &h[13..16],
                &h[17..20],
                &h[20..32]
            )
        }
    }
}

/// 32 random hex digits (the OS random source through the hasher's keys, the time and a
/// counter).
fn random_hex() -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut out = String::with_capacity(32);
    for _ in 0..2 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

/// A new request id: unique within this process and, with the start time in it, across
/// restarts (`<start seconds, hex>-<sequence>`).
pub fn request_id() -> String {
    static START: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let start = *START.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    });
    format!("{start:x}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The request id of an HTTP request (a request extension set by [`http_requests`]).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// What one DIMSE association did, counted as it runs.
#[derive(Debug, Clone, Default)]
pub struct AssociationActivity {
    pub echo: u32,
    pub find: u32,
    pub store: u32,
    pub move_: u32,
    pub get: u32,
    /// Instances stored (C-STORE successes).
    pub stored: u32,
    /// Instances sent (C-GET and C-MOVE sub-operations completed).
    pub sent: u32,
}

/// The one line of an association: `outcome` is accepted (still open: never logged),
/// rejected, aborted or released.
pub fn association(
    id: &str,
    calling_ae: &str,
    peer: &str,
    outcome: &str,
    activity: &AssociationActivity,
    started: Instant,
) {
    crate::metrics::dimse_association(
        outcome,
        &[
            ("echo", activity.echo),
            ("find", activity.find),
            ("store", activity.store),
            ("move", activity.move_),
            ("get", activity.get),
        ],
        &[("stored", activity.stored), ("sent", activity.sent)],
        started.elapsed(),
    );
    tracing::info!(
        target: "beeldbrug::oplog",
        request_id = %id,
        calling_ae = %calling_ae,
        peer = %peer,
        outcome = %outcome,
        echoes = activity.echo,
        finds = activity.find,
        stores = activity.store,
        moves = activity.move_,
        gets = activity.get,
        stored = activity.stored,
        sent = activity.sent,
        duration_ms = started.elapsed().as_millis() as u64,
        "association"
    );
}

/// Axum middleware: give the request an id (extension and `X-Request-Id` response header)
/// and log its line once the response body has been sent (or dropped).
pub async fn http_requests(mut request: Request, next: Next) -> Response<Body> {
    let started = Instant::now();
    let id = request_id();
    let method = request.method().to_string();
    // The route template, never the path: the path holds UIDs (patient data).
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "(no route)".into());
    request.extensions_mut().insert(RequestId(id.clone()));
    // The trace of the request (`telemetry`): its root span, continuing the caller's
    // `traceparent`; it ends with the response body.
    let span = crate::telemetry::http_request(&method, &route, request.headers());
    let response = tracing::Instrument::instrument(next.run(request), span.clone()).await;
    let (mut parts, body) = response.into_parts();
    span.record("http.response.status_code", parts.status.as_u16());
    if parts.status.is_server_error() {
        crate::telemetry::failed(&span);
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        parts.headers.insert(REQUEST_ID_HEADER, v);
    }
    let line = RequestLine {
        id,
        method,
        route,
        status: parts.status.as_u16(),
        bytes: 0,
        started,
        logged: false,
        span,
    };
    Response::from_parts(parts, Body::new(CountedBody { inner: body, line }))
}

/// The fields of one HTTP log line, logged when the body ends or is dropped.
struct RequestLine {
    id: String,
    method: String,
    route: String,
    status: u16,
    bytes: u64,
    started: Instant,
    logged: bool,
    /// The request's root span, closed when the line is dropped (after the body).
    span: tracing::Span,
}

impl RequestLine {
    fn log(&mut self, complete: bool) {
        if self.logged {
            return;
        }
        self.logged = true;
        let elapsed = self.started.elapsed();
        crate::metrics::http_request(&self.route, self.status, self.bytes, elapsed, complete);
        tracing::info!(
            target: "beeldbrug::oplog",
            request_id = %self.id,
            method = %self.method,
            route = %self.route,
            status = self.status,
            bytes = self.bytes,
            complete,
            duration_ms = elapsed.as_millis() as u64,
            "http request"
        );
    }
}

/// A response body that counts the bytes it yields and logs the request's line at its end.
struct CountedBody {
    inner: Body,
    line: RequestLine,
}

impl HttpBody for CountedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.line.bytes += data.len() as u64;
                }
            }
            Poll::Ready(None) => self.line.log(true),
            Poll::Ready(Some(Err(_))) => {
                crate::telemetry::failed(&self.line.span);
                self.line.log(false)
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for CountedBody {
    fn drop(&mut self) {
        // A body that ended is logged already; one dropped early (client gone) is not
        // complete. An empty body may never be polled.
        let complete = self.inner.is_end_stream();
        self.line.log(complete);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correlation_ids_are_checked_and_distinct() {
        assert_eq!(
            correlation_from_peer(" urn:uuid:1234 ").as_deref(),
            Some("urn:uuid:1234")
        );
        assert_eq!(correlation_from_peer(""), None);
        assert_eq!(correlation_from_peer("a b"), None);
        assert_eq!(correlation_from_peer("<x>"), None);
        assert_eq!(correlation_from_peer(&"a".repeat(129)), None);
        let a = new_correlation(None);
        assert!(a.starts_with("urn:uuid:") && a.len() == 45, "{a}");
        assert_ne!(a, new_correlation(None));
        let r = new_correlation(Some("5f-1"));
        assert!(r.starts_with("beeldbrug:") && r.ends_with(":5f-1"), "{r}");
        assert_eq!(r, new_correlation(Some("5f-1")));
        assert!(correlation_from_peer(&r).is_some());
    }

    #[test]
    fn request_ids_are_distinct() {
        let a = request_id();
        let b = request_id();
        assert_ne!(a, b);
        assert!(a.contains('-'));
    }
}
