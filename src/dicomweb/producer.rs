//! The producing side of streamed bodies, on one blocking thread per response: small ranges
//! of files are read with plain std reads straight into [`CHUNK`]-sized buffers that also
//! carry the part headers, and each full buffer is one channel send; large ranges (a whole
//! instance, a frame) go out as mapped windows of the file, which the connection writes
//! from the page cache without a copy of ours. One thread hop per MiB rather than
//! several per instance: a study of thousands of small instances costs little more CPU than
//! one big file (PS3.18 8.7.1.2 multipart framing is written here too).

use super::media::SyntaxRequest;
use super::multipart::{self, BodySender};
use super::transcode::{plan, transcode_file, Plan};
use crate::core::source::DataSet;
use crate::core::transfers::Tracked;
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

/// Ranges at least this long go out as mapped windows of their file rather than read
/// into the chunk buffer.
pub(super) const MAP_AT_LEAST: u64 = 64 * 1024;

/// Bytes per mapped window: a large instance is mapped a window at a time, so that what a
/// body holds mapped stays bounded by the channel's depth, whatever the instance's size.
pub(super) const MAP_WINDOW: u64 = 4 * 1024 * 1024;

/// `len` bytes of `file` from `offset`, mapped read-only. `populate`: every page faulted in
/// by this call (one system call rather than a fault per 64 KiB; it may wait for the disk);
/// otherwise the socket write faults them in itself, 16 pages a fault from the page cache
/// (`fault_around_bytes`), which costs less than populating a page at a time for pages known
/// to be in memory (`stored_parts`; docs/performance.md, "The hit without hand-offs").
///
/// Safe to map because a blob file is never changed once renamed into place
/// (`store::blob`: every stored version has a fresh key; deleting unlinks, which leaves a
/// mapping intact) and the range was checked against the file's length; a file truncated
/// behind the gateway's back would raise SIGBUS, as in any server that maps its files.
pub(super) fn mapped(
    file: &std::fs::File,
    offset: u64,
    len: usize,
    populate: bool,
) -> std::io::Result<Bytes> {
    let mut options = memmap2::MmapOptions::new();
    options.offset(offset).len(len);
    if populate {
        options.populate();
    }
    // SAFETY: see above: the mapped range of the file is never written or truncated.
    let map = unsafe { options.map(file)? };
    Ok(Bytes::from_owner(map))
}

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

    /// Copy `len` bytes of `file` from `offset`: small ranges into the buffer, large ones
    /// as windows of the file mapped into memory ([`mapped`]), which the connection writes
    /// to the socket straight from the page cache: one copy of the bytes instead of two.
    pub fn copy(
        &mut self,
        file: &mut std::fs::File,
        offset: u64,
        len: u64,
    ) -> Result<(), SendError> {
        if len < MAP_AT_LEAST {
            return self.read(file, offset, len);
        }
        let file_len = file.metadata().map_err(failed)?.len();
        if offset.checked_add(len).is_none_or(|end| end > file_len) {
            return Err(SendError::Failed(
                "stored file is shorter than expected".into(),
            ));
        }
        self.flush()?;
        let mut at = offset;
        while at < offset + len {
            let window = (offset + len - at).min(MAP_WINDOW);
            let bytes = mapped(file, at, window as usize, true).map_err(failed)?;
            self.tx.blocking_send(bytes)?;
            at += window;
        }
        Ok(())
    }

    /// Copy `len` bytes of `file` from `offset` with reads into the buffer.
    fn read(&mut self, file: &mut std::fs::File, offset: u64, len: u64) -> Result<(), SendError> {
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

/// Why a send cancelled on the operator's console ends broken.
pub const CANCELLED: &str = "cancelled by the operator";

/// Every instance as a `multipart/related; type="application/dicom"` part, then, when
/// `close`, the closing delimiter; each reported to `progress` (the console's transfers
/// board), which is looked at before each instance for the operator's cancel. Returns how many instances went out whole, and how it
/// ended.
pub fn instances(
    stored: &Stored,
    locations: &[InstanceLocation],
    syntax: &SyntaxRequest,
    boundary: &str,
    tx: &BodySender,
    close: bool,
    progress: Option<&Tracked>,
) -> (usize, Result<(), SendError>) {
    let mut body = BlockingBody::new(tx);
    for (sent, loc) in locations.iter().enumerate() {
        // Cancelled on the operator's console: no further instance, the body ends broken.
        if progress.is_some_and(Tracked::is_cancelled) {
            body.fail(CANCELLED.into());
            return (sent, Err(SendError::Failed(CANCELLED.into())));
        }
        let done = instance(&mut body, stored, loc, syntax, boundary);
        if let (Ok(()), Some(progress)) = (&done, progress) {
            progress.advance(1, loc.size_bytes);
        }
        if let Err(e) = done {
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

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// A file of `len` bytes that differ from their neighbours.
    fn file_of(len: usize) -> (tempfile::TempDir, std::path::PathBuf, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob.dcm");
        let bytes: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        (dir, path, bytes)
    }

    /// Run `produce` on a blocking thread and collect the body it sends.
    async fn body_of(
        produce: impl FnOnce(&BodySender) -> Result<(), SendError> + Send + 'static,
    ) -> (Result<(), String>, Vec<u8>) {
        let (tx, body) = multipart::channel_body();
        let producer = tokio::task::spawn_blocking(move || match produce(&tx) {
            Err(SendError::Failed(problem)) => Err(problem),
            Err(SendError::Disconnected) => Err("disconnected".into()),
            Ok(()) => Ok(()),
        });
        let collected = body.collect().await.map(|b| b.to_bytes().to_vec());
        let result = producer.await.unwrap();
        (result, collected.unwrap_or_default())
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn ranges_small_and_large_come_out_byte_exact() {
        // Larger than a mapped window, so that a range spans several windows and the
        // buffer: a small range is read, a large one mapped.
        let (_dir, path, bytes) = file_of(9 * 1024 * 1024 + 4096);
        let ranges = [(5u64, 100u64), (1000, 9 * 1024 * 1024), (17, 70_000)];
        let (result, out) = body_of(move |tx| {
            let mut body = BlockingBody::new(tx);
            let mut file = std::fs::File::open(&path).unwrap();
            for (offset, len) in ranges {
                body.copy(&mut file, offset, len)?;
            }
            body.flush()
        })
        .await;
        assert_eq!(result, Ok(()));
        let expected: Vec<u8> = ranges
            .iter()
            .flat_map(|&(o, l)| bytes[o as usize..(o + l) as usize].to_vec())
            .collect();
        assert_eq!(out.len(), expected.len());
        assert!(out == expected, "the body is the ranges, in order");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_range_past_the_end_of_the_file_fails_cleanly() {
        // A lying offset (frames, bulk data) past the end: never mapped (SIGBUS), a clean
        // failure for both the read and the mapped copy.
        let (_dir, path, _) = file_of(200_000);
        for (offset, len) in [
            (150_000u64, 100_000u64),
            (199_990, 100),
            (u64::MAX - 10, 100_000),
        ] {
            let path = path.clone();
            let (result, _) = body_of(move |tx| {
                let mut body = BlockingBody::new(tx);
                let mut file = std::fs::File::open(&path).unwrap();
                body.copy(&mut file, offset, len)?;
                body.flush()
            })
            .await;
            assert!(
                result.as_ref().is_err_and(|p| p.contains("shorter")),
                "{offset}+{len}: {result:?}"
            );
        }
    }
}
