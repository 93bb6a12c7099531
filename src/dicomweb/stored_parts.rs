//! A `multipart/related` body of cached instances sent as stored, read when the connection
//! asks for its next bytes: each instance's file is opened and mapped on the connection's
//! own task, so a cache hit costs no thread hand-off per instance (the blocking producer of
//! [`super::producer`] costs two wake-ups of another thread per instance, which on a small
//! machine wait for a CPU the client holds). A window whose pages are not in the page cache
//! is mapped on a blocking thread instead: the connection's task never waits for the disk.
//!
//! The instances arrive in batches (index pages) from the task that pages the index, and
//! that task learns how the body ended ([`Ended`]) for the audit record. PS3.18 8.7.1.2
//! framing: each part `--boundary`, its headers, the file, CRLF; then `--boundary--`.

use super::multipart;
use super::producer::{mapped, CANCELLED, MAP_AT_LEAST, MAP_WINDOW, MISSING_FILE};
use crate::core::transfers::Tracked;
use crate::core::{InstanceLocation, Stored};
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Index pages queued ahead of the connection.
const BATCHES_AHEAD: usize = 2;

/// What the paging task hands the body.
pub enum Feed {
    /// The next instances, in order.
    Batch(Vec<InstanceLocation>),
    /// The instances cannot be listed further: the body ends broken.
    Fail(String),
}

/// How the body ended, and how many instances went out whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// Every instance and the closing delimiter were handed to the connection.
    Complete(usize),
    /// The client went away (the body was dropped before its end).
    Gone(usize),
    /// An instance could not be read, or the listing failed: the body ended broken.
    Failed(usize, String),
    /// Cancelled on the operator's console: the body ended broken.
    Cancelled(usize),
}

/// The feeding side: batches in, how the body ended out.
pub struct Feeder {
    pub batches: mpsc::Sender<Feed>,
    pub ended: oneshot::Receiver<Ended>,
    /// Sent (or dropped) once the retrieve's audit record is written: only then does a
    /// complete body send its closing delimiter, so no whole answer leaves unaudited (the
    /// record precedes the answer's end, as `Trust::audit_before_answer` has it).
    pub recorded: oneshot::Sender<()>,
}

/// The instance being sent: its file and the range still to go.
struct Open {
    file: Arc<std::fs::File>,
    at: u64,
    end: u64,
}

pub struct StoredParts {
    stored: Stored,
    boundary: String,
    batches: mpsc::Receiver<Feed>,
    queue: VecDeque<InstanceLocation>,
    /// Framing (and small files) waiting to go out before the next window.
    small: Vec<u8>,
    open: Option<Open>,
    /// A window being mapped on a blocking thread (its pages were not in memory).
    mapping: Option<JoinHandle<std::io::Result<Bytes>>>,
    progress: Option<Arc<Tracked>>,
    sent: usize,
    /// Size of the instance being sent, for the console's progress.
    sending_size: u64,
    ended: Option<oneshot::Sender<Ended>>,
    /// Every instance went out: waiting for the audit record before the closing delimiter.
    recorded: oneshot::Receiver<()>,
    done: bool,
}

/// A body for the instances fed through the returned [`Feeder`].
pub fn stored_parts(
    stored: Stored,
    boundary: String,
    progress: Option<Arc<Tracked>>,
) -> (Feeder, StoredParts) {
    let (tx, rx) = mpsc::channel(BATCHES_AHEAD);
    let (ended_tx, ended_rx) = oneshot::channel();
    let (recorded_tx, recorded_rx) = oneshot::channel();
    let body = StoredParts {
        stored,
        boundary,
        batches: rx,
        queue: VecDeque::new(),
        small: Vec::new(),
        open: None,
        mapping: None,
        progress,
        sent: 0,
        sending_size: 0,
        ended: Some(ended_tx),
        recorded: recorded_rx,
        done: false,
    };
    (
        Feeder {
            batches: tx,
            ended: ended_rx,
            recorded: recorded_tx,
        },
        body,
    )
}

/// Whether the pages of `file` at `offset` are in the page cache (a one-byte read that may
/// not wait for the disk, RWF_NOWAIT). Checked at a window's first and last page: a window
/// of a file read before is resident as a whole.
fn resident(file: &std::fs::File, offset: u64) -> bool {
    let mut byte = [0u8; 1];
    let mut bufs = [std::io::IoSliceMut::new(&mut byte)];
    rustix::io::preadv2(file, &mut bufs, offset, rustix::io::ReadWriteFlags::NOWAIT)
        .is_ok_and(|n| n == 1)
}

impl StoredParts {
    fn end(&mut self, how: Ended) {
        self.done = true;
        if let Some(tx) = self.ended.take() {
            let _ = tx.send(how);
        }
    }

    fn fail(&mut self, problem: String) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        tracing::error!(%problem, "WADO-RS retrieve failed");
        self.end(Ended::Failed(self.sent, problem.clone()));
        Poll::Ready(Some(Err(std::io::Error::other(problem))))
    }

    fn take_small(&mut self) -> Option<Frame<Bytes>> {
        (!self.small.is_empty()).then(|| Frame::data(Bytes::from(std::mem::take(&mut self.small))))
    }

    /// Begin the next instance: its part header, and its file open (small files read whole).
    fn begin(&mut self, loc: InstanceLocation) -> Result<(), String> {
        let file = match self.stored.open_local(&loc) {
            Ok(Some(file)) => file,
            Ok(None) => return Err(MISSING_FILE.into()),
            Err(e) => return Err(e.to_string()),
        };
        let len = file.metadata().map_err(|e| e.to_string())?.len();
        let ct = format!(
            "application/dicom; transfer-syntax={}",
            loc.transfer_syntax_uid
        );
        self.small
            .extend_from_slice(&multipart::part_header(&self.boundary, &ct, Some(len)));
        self.sending_size = loc.size_bytes;
        if len < MAP_AT_LEAST {
            use std::io::Read;
            let before = self.small.len();
            (&file)
                .take(len)
                .read_to_end(&mut self.small)
                .map_err(|e| e.to_string())?;
            if (self.small.len() - before) as u64 != len {
                return Err("stored file is shorter than expected".into());
            }
            self.finish_instance();
        } else {
            self.open = Some(Open {
                file: Arc::new(file),
                at: 0,
                end: len,
            });
        }
        Ok(())
    }

    fn finish_instance(&mut self) {
        self.small.extend_from_slice(&multipart::part_end());
        self.sent += 1;
        if let Some(progress) = &self.progress {
            progress.advance(1, self.sending_size);
        }
    }
}

impl HttpBody for StoredParts {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            // Every instance is out and the paging task told: the closing delimiter once the
            // audit record is written (the last part's framing goes out meanwhile).
            if this.ended.is_none() {
                if let Some(frame) = this.take_small() {
                    return Poll::Ready(Some(Ok(frame)));
                }
                if Pin::new(&mut this.recorded).poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.done = true;
                let closing = multipart::closing(&this.boundary);
                return Poll::Ready(Some(Ok(Frame::data(closing))));
            }
            // A window mapped on a blocking thread: the framing before it goes first.
            if this.mapping.is_some() {
                if let Some(frame) = this.take_small() {
                    return Poll::Ready(Some(Ok(frame)));
                }
                let handle = this.mapping.as_mut().expect("checked above");
                let window = match Pin::new(handle).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(Ok(bytes))) => bytes,
                    Poll::Ready(Ok(Err(e))) => return this.fail(e.to_string()),
                    Poll::Ready(Err(e)) => return this.fail(e.to_string()),
                };
                this.mapping = None;
                return Poll::Ready(Some(Ok(Frame::data(window))));
            }
            if let Some(open) = this.open.as_ref() {
                if open.at >= open.end {
                    this.open = None;
                    this.finish_instance();
                    continue;
                }
                if let Some(frame) = this.take_small() {
                    return Poll::Ready(Some(Ok(frame)));
                }
                let open = this.open.as_mut().expect("checked above");
                let len = (open.end - open.at).min(MAP_WINDOW);
                let (file, at) = (open.file.clone(), open.at);
                open.at += len;
                if resident(&file, at) && resident(&file, at + len - 1) {
                    match mapped(&file, at, len as usize, false) {
                        Ok(bytes) => return Poll::Ready(Some(Ok(Frame::data(bytes)))),
                        Err(e) => return this.fail(e.to_string()),
                    }
                }
                this.mapping = Some(tokio::task::spawn_blocking(move || {
                    mapped(&file, at, len as usize, true)
                }));
                continue;
            }
            if let Some(loc) = this.queue.pop_front() {
                if this.progress.as_deref().is_some_and(Tracked::is_cancelled) {
                    this.end(Ended::Cancelled(this.sent));
                    return Poll::Ready(Some(Err(std::io::Error::other(CANCELLED))));
                }
                let sop = loc.sop_instance_uid.clone();
                if let Err(problem) = this.begin(loc) {
                    tracing::error!(%sop, "cannot send a cached instance");
                    return this.fail(problem);
                }
                continue;
            }
            match this.batches.poll_recv(cx) {
                Poll::Ready(Some(Feed::Batch(batch))) => this.queue.extend(batch),
                Poll::Ready(Some(Feed::Fail(problem))) => return this.fail(problem),
                Poll::Ready(None) => {
                    if let Some(tx) = this.ended.take() {
                        let _ = tx.send(Ended::Complete(this.sent));
                    }
                    continue;
                }
                Poll::Pending => {
                    // Framing of the last instance goes out while the next page is read.
                    if let Some(frame) = this.take_small() {
                        return Poll::Ready(Some(Ok(frame)));
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

impl Drop for StoredParts {
    fn drop(&mut self) {
        if let Some(handle) = self.mapping.take() {
            handle.abort();
        }
        let sent = self.sent;
        self.end(Ended::Gone(sent));
    }
}
