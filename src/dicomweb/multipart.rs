//! `multipart/related` response bodies (RFC 2387, PS3.18 8.7.1.2): part headers, the closing
//! delimiter, and a bounded channel that turns a producer task into a streamed body.
//!
//! The channel holds a few chunks at most, so a slow client slows the producer (back-pressure)
//! and a client that goes away ends it: its next send fails, its files close.

use axum::body::Body;
use bytes::Bytes;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc;

/// Chunks buffered between producer and socket.
const CHANNEL_DEPTH: usize = 4;

static BOUNDARY_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A boundary that cannot occur in DICOM data by accident (RFC 2046 5.1.1: up to 70 chars).
pub fn new_boundary() -> String {
    let n = BOUNDARY_COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("beeldbrug-{nanos:x}-{n:x}")
}

/// The `Content-Type` of a multipart/related response whose root parts are `inner`.
pub fn content_type(boundary: &str, inner: &str, transfer_syntax: Option<&str>) -> String {
    let mut ct = format!("multipart/related; type=\"{inner}\"; boundary={boundary}");
    if let Some(ts) = transfer_syntax {
        ct.push_str(&format!("; transfer-syntax={ts}"));
    }
    ct
}

/// The delimiter and headers that open one part.
pub fn part_header(boundary: &str, content_type: &str, length: Option<u64>) -> Bytes {
    let mut h = format!("--{boundary}\r\nContent-Type: {content_type}\r\n");
    if let Some(len) = length {
        h.push_str(&format!("Content-Length: {len}\r\n"));
    }
    h.push_str("\r\n");
    Bytes::from(h)
}

/// The CRLF that ends a part's body.
pub fn part_end() -> Bytes {
    Bytes::from_static(b"\r\n")
}

/// The closing delimiter.
pub fn closing(boundary: &str) -> Bytes {
    Bytes::from(format!("--{boundary}--\r\n"))
}

/// The sending side of a streamed body.
#[derive(Debug, Clone)]
pub struct BodySender(mpsc::Sender<Result<Bytes, std::io::Error>>);

/// The client went away; the producer should stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disconnected;

impl BodySender {
    pub async fn send(&self, chunk: Bytes) -> Result<(), Disconnected> {
        self.0.send(Ok(chunk)).await.map_err(|_| Disconnected)
    }

    /// [`send`](Self::send) from a blocking thread (never from async code).
    pub fn blocking_send(&self, chunk: Bytes) -> Result<(), Disconnected> {
        self.0.blocking_send(Ok(chunk)).map_err(|_| Disconnected)
    }

    /// [`fail`](Self::fail) from a blocking thread.
    pub fn blocking_fail(&self, problem: String) {
        let _ = self.0.blocking_send(Err(std::io::Error::other(problem)));
    }

    /// End the body with an error: the client sees a broken transfer, never a short
    /// but well-formed answer.
    pub async fn fail(&self, problem: String) {
        let _ = self.0.send(Err(std::io::Error::other(problem))).await;
    }
}

/// A body fed by a producer through a bounded channel.
pub fn channel_body() -> (BodySender, Body) {
    let (tx, mut rx) = mpsc::channel(CHANNEL_DEPTH);
    // poll_recv keeps answering None once closed: safe to poll again (unlike `unfold`).
    let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    (BodySender(tx), Body::from_stream(stream))
}
