//! The producing side of streamed bodies, on one blocking thread per response: files are read
//! with plain std reads straight into [`CHUNK`]-sized buffers that also carry the part
//! headers, and each full buffer is one channel send. One thread hop per MiB rather than
//! several per instance: a study of thousands of small instances costs little more CPU than
//! one big file (PS3.18 8.7.1.2 multipart framing is written here too).

use super::media::SyntaxRequest;
use super::multipart::{self, BodySender};
use super::transcode::{plan, transcode_file, Plan};
use crate::core::source::DataSet;
use crate::core::InstanceLocation;
use crate::core::Stored;
use bytes::Bytes;
use std::io::{Read, Seek, SeekFrom};

/// What the fronts say of an indexed instance whose file is missing (logged with a repair
/// note by the store): 404, as for an instance that is not there.
pub const MISSING_FILE: &str =
    "the instance is indexed but its file is missing from the store (logged for repair)";

/// Bytes per channel send.
pub const CHUNK: usize = 1024 * 1024;

/// Why a body could not be produced to the end.
#[derive(Debug)]
pub enum SendError {
    /// The client went away.
    Disconnected,
    /// A file could not be read or transcoded: the body ends broken.
    Failed(String),
}

impl From<multipart::Disconnected> for SendError {
    fn from(_: multipart::Disconnected) -> Self {
        SendError::Disconnected
    }
}

fn failed(e: impl std::fmt::Display) -> SendError {
    SendError::Failed(e.to_string())
}

/// Chunk buffers a body has sent and the connection has written, for its next chunks.
type Spares = std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>;

/// At most this many spare buffers per body (about the chunks in flight at once).
const SPARES: usize = 8;

/// A sent chunk: its buffer goes back to the body's spares when the connection has written
/// it and drops it. A fresh 1 MiB buffer per chunk costs a page fault per few KiB of the
/// body (60,000 for a 1 GB study, a fifth of a cache hit's CPU); a reused one is paged in.
struct Recycled {
    buf: Vec<u8>,
    spares: Spares,
}

impl AsRef<[u8]> for Recycled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        let mut buf = std::mem::take(&mut self.buf);
        // A buffer grown for a large part (a transcoded instance) is not kept.
        if buf.capacity() > 2 * CHUNK {
            return;
        }
        buf.clear();
        if let Ok(mut spares) = self.spares.lock() {
            if spares.len() < SPARES {
                spares.push(buf);
            }
        }
    }
}

/// A body written from a blocking thread, in [`CHUNK`]s.
pub struct BlockingBody<'a> {
    tx: &'a BodySender,
    out: Vec<u8>,
    spares: Spares,
}

impl<'a> BlockingBody<'a> {
    pub fn new(tx: &'a BodySender) -> Self {
        BlockingBody {
            tx,
            out: Vec::with_capacity(CHUNK),
            spares: Spares::default(),
        }
    }

    /// A spare buffer when one is back, else a new one.
    fn next_buffer(&self) -> Vec<u8> {
        self.spares
            .lock()
            .ok()
            .and_then(|mut spares| spares.pop())
            .unwrap_or_else(|| Vec::with_capacity(CHUNK))
    }

    pub fn put(&mut self, bytes: &[u8]) -> Result<(), SendError> {
        self.out.extend_from_slice(bytes);
        if self.out.len() >= CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    /// Copy `len` bytes of `file` from `offset`.
    pub fn copy(
        &mut self,
        file: &mut std::fs::File,
        offset: u64,
        len: u64,
    ) -> Result<(), SendError> {
        file.seek(SeekFrom::Start(offset)).map_err(failed)?;
        let mut left = len;
        while left > 0 {
            let room = (CHUNK.saturating_sub(self.out.len()) as u64)
                .max(1)
                .min(left);
            self.out.reserve(room as usize);
            let got = (&mut *file)
                .take(room)
                .read_to_end(&mut self.out)
                .map_err(failed)?;
            if got as u64 != room {
                return Err(SendError::Failed(
                    "stored file is shorter than expected".into(),
                ));
            }
            left -= room;
            if self.out.len() >= CHUNK {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// Send what is buffered.
    pub fn flush(&mut self) -> Result<(), SendError> {
        if !self.out.is_empty() {
            let next = self.next_buffer();
            let buf = std::mem::replace(&mut self.out, next);
            let spares = self.spares.clone();
            self.tx
                .blocking_send(Bytes::from_owner(Recycled { buf, spares }))?;
        }
        Ok(())
    }

    /// End the body broken: the client sees a failed transfer, never a short answer.
    pub fn fail(self, problem: String) {
        self.tx.blocking_fail(problem);
    }
}

/// Every instance as a `multipart/related; type="application/dicom"` part, then, when
/// `close`, the closing delimiter. Returns how many instances went out whole, and how it
/// ended.
pub fn instances(
    stored: &Stored,
    locations: &[InstanceLocation],
    syntax: &SyntaxRequest,
    boundary: &str,
    tx: &BodySender,
    close: bool,
) -> (usize, Result<(), SendError>) {
    let mut body = BlockingBody::new(tx);
    for (sent, loc) in locations.iter().enumerate() {
        if let Err(e) = instance(&mut body, stored, loc, syntax, boundary) {
            if let SendError::Failed(problem) = &e {
                tracing::error!(sop = %loc.sop_instance_uid, %problem, "WADO-RS retrieve failed");
                body.fail(problem.clone());
            }
            return (sent, Err(e));
        }
    }
    let end = if close {
        body.put(&multipart::closing(boundary))
    } else {
        Ok(())
    }
    .and_then(|()| body.flush());
    (locations.len(), end)
}

fn instance(
    body: &mut BlockingBody<'_>,
    stored: &Stored,
    loc: &InstanceLocation,
    syntax: &SyntaxRequest,
    boundary: &str,
) -> Result<(), SendError> {
    match plan(&loc.transfer_syntax_uid, syntax) {
        Plan::AsStored => {
            if !stored.is_present_blocking(loc) {
                return Err(SendError::Failed(MISSING_FILE.into()));
            }
            let mut file = stored.open_blocking(loc).map_err(failed)?;
            let len = file.metadata().map_err(failed)?.len();
            let ct = format!(
                "application/dicom; transfer-syntax={}",
                loc.transfer_syntax_uid
            );
            body.put(&multipart::part_header(boundary, &ct, Some(len)))?;
            body.copy(&mut file, 0, len)?;
        }
        Plan::Transcode(target) => {
            let bytes = transcode_file(stored.local_file(loc).path(), &target).map_err(failed)?;
            let ct = format!("application/dicom; transfer-syntax={target}");
            body.put(&multipart::part_header(
                boundary,
                &ct,
                Some(bytes.len() as u64),
            ))?;
            body.put(&bytes)?;
        }
        Plan::Impossible => {
            return Err(SendError::Failed(format!(
                "cannot produce the requested syntax from {}",
                loc.transfer_syntax_uid
            )))
        }
    }
    body.put(&multipart::part_end())
}

/// An instance a running fetch still holds in memory (see [`DataSet`]), as the chunks of its
/// multipart part, when it goes out as stored: the part header with the file's preamble and
/// meta group (one small copy), the data set's pieces as they were received (no copy, no
/// file read, no blocking thread), the part's end. `None`: produce it from the file.
pub fn part_from_memory(
    loc: &InstanceLocation,
    data_set: &DataSet,
    syntax: &SyntaxRequest,
    boundary: &str,
) -> Option<Vec<Bytes>> {
    if plan(&loc.transfer_syntax_uid, syntax) != Plan::AsStored {
        return None;
    }
    let (file_start, len) = (data_set.file_start.as_ref()?, data_set.file_len()?);
    let ct = format!(
        "application/dicom; transfer-syntax={}",
        loc.transfer_syntax_uid
    );
    let header = multipart::part_header(boundary, &ct, Some(len));
    let mut first = Vec::with_capacity(header.len() + file_start.len());
    first.extend_from_slice(&header);
    first.extend_from_slice(file_start);
    let mut chunks = Vec::with_capacity(data_set.len() + 2);
    chunks.push(Bytes::from(first));
    chunks.extend(data_set.iter().cloned());
    chunks.push(multipart::part_end());
    Some(chunks)
}

/// Byte ranges of one file as parts (frames, bulk data): one part per entry of `parts`.
pub fn ranges(
    path: &std::path::Path,
    parts: &[Vec<(u64, u64)>],
    part_type: &str,
    boundary: &str,
    tx: &BodySender,
) -> Result<(), SendError> {
    let mut body = BlockingBody::new(tx);
    let result = (|| {
        let mut file = std::fs::File::open(path).map_err(failed)?;
        for ranges in parts {
            let len = ranges.iter().map(|r| r.1).sum();
            body.put(&multipart::part_header(boundary, part_type, Some(len)))?;
            for &(offset, len) in ranges {
                body.copy(&mut file, offset, len)?;
            }
            body.put(&multipart::part_end())?;
        }
        body.put(&multipart::closing(boundary))?;
        body.flush()
    })();
    if let Err(SendError::Failed(problem)) = &result {
        body.fail(problem.clone());
    }
    result
}

/// One byte range of a file as a whole body (single-resource responses with `Range`).
pub fn single_range(path: &std::path::Path, offset: u64, len: u64, tx: &BodySender) {
    let mut body = BlockingBody::new(tx);
    let result = std::fs::File::open(path)
        .map_err(failed)
        .and_then(|mut file| body.copy(&mut file, offset, len))
        .and_then(|()| body.flush());
    if let Err(SendError::Failed(problem)) = result {
        body.fail(problem);
    }
}
