//! The one path by which an instance enters the store: a received Part 10 file in a
//! [`PendingBlob`] is checked and parsed up to Pixel Data, fsynced, renamed into place and
//! indexed; only then is it acknowledged. Any failure removes the temp file, so nothing
//! half-written stays. The fronts (C-STORE, STOW-RS) come here through the core
//! (`core::ingest`) and its [`Committer`], which makes the instances of all associations and
//! requests durable and indexed in groups (one flush round — the ingest journal's
//! `fdatasync` or the files' fsyncs — and one index transaction per group); what is no
//! front (a publisher storing instances it made) may call [`persist`] directly.
//!
//! The cache fill of a PACS retrieve ([`cache_fill`]) runs the same checks on copies of what
//! the PACS holds, without an fsync per instance, behind the sub-operations' answers.

use super::blob::BlockingBlob;
use super::index::Gate;
use super::{BlobStore, Index, InstanceRecord, PendingBlob};
use crate::dimse::dataset::{
    layout_in_memory, parse_in_memory_until, pixel_data_in, pixel_data_in_memory, read_layout,
    DatasetError, PIXEL_DATA,
};
use crate::dimse::status::code;
use bytes::Bytes;
use dicom_core::Tag;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

pub use crate::model::ingest::{Expected, IngestFailure};

/// [`IngestFailure::naming`] the instance of a meta group.
trait NamedBy {
    fn of(self, meta: &dicom_object::FileMetaTable) -> Self;
}

impl NamedBy for IngestFailure {
    fn of(self, meta: &dicom_object::FileMetaTable) -> Self {
        self.naming(
            meta.media_storage_sop_class_uid(),
            meta.media_storage_sop_instance_uid(),
        )
    }
}

/// Most bytes of received instances the whole process holds in memory, from their arrival
/// to the start of their group commit (see [`MemoryHold`]): an instance that would pass it
/// is written to a temp file as it arrives instead, so that many STOW-RS requests (each with
/// up to 16 parts in flight) and associations at once stay within it.
pub const MEMORY_BUDGET: u64 = 32 * 1024 * 1024;

/// Bytes of received instances held in memory now, process-wide.
static HELD_IN_MEMORY: AtomicU64 = AtomicU64::new(0);

/// Held by the tests that take or count on the process-wide budget, so that one taking all
/// of it does not starve another's assertion (the tests of one binary share the process).
#[cfg(test)]
pub(crate) static BUDGET_TESTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A share of [`MEMORY_BUDGET`], given back when dropped (with the bytes it stands for).
#[derive(Debug, Default)]
pub struct MemoryHold(u64);

impl MemoryHold {
    /// Count `more` bytes too; `false`, and nothing counted, when the budget would be passed.
    pub fn grow(&mut self, more: u64) -> bool {
        let mut held = HELD_IN_MEMORY.load(Ordering::Relaxed);
        loop {
            if held + more > MEMORY_BUDGET {
                return false;
            }
            match HELD_IN_MEMORY.compare_exchange_weak(
                held,
                held + more,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    self.0 += more;
                    return true;
                }
                Err(now) => held = now,
            }
        }
    }
}

impl Drop for MemoryHold {
    fn drop(&mut self) {
        HELD_IN_MEMORY.fetch_sub(self.0, Ordering::Relaxed);
    }
}

/// The whole Part 10 file of a small instance in memory, with its share of the budget.
#[derive(Debug)]
pub struct InMemory {
    pub pieces: Vec<Bytes>,
    pub hold: MemoryHold,
}

/// An instance's bytes as a front received them, for the [`Committer`].
#[derive(Debug)]
pub enum Received {
    /// The whole Part 10 file in memory (a small instance): written to a temp file in one
    /// `writev` and checked and parsed from memory, on the ingest's blocking thread.
    Memory(InMemory),
    /// Streamed into a temp file (a large instance).
    File(PendingBlob),
}

/// A stored instance: the success or warning status and what was indexed.
#[derive(Debug, Clone)]
pub struct Ingested {
    pub status: u16,
    pub record: InstanceRecord,
}

/// Make a received Part 10 file durable and indexed: check and parse it, fsync and rename it
/// into place (all on one blocking thread), then upsert it into the index.
pub async fn persist(
    blobs: &BlobStore,
    index: &dyn Index,
    blob: PendingBlob,
    expected: Expected<'_>,
) -> Result<Ingested, IngestFailure> {
    let stored = store_blob(blobs, blob, expected).await?;
    index_batch(blobs, index, std::slice::from_ref(&stored.record)).await?;
    Ok(stored)
}

/// The first half of [`persist`]: the instance is durable in the blob store but not yet in
/// the index, so not yet to be acknowledged; [`index_batch`] completes it.
pub async fn store_blob(
    blobs: &BlobStore,
    blob: PendingBlob,
    expected: Expected<'_>,
) -> Result<Ingested, IngestFailure> {
    let blob = blob
        .into_blocking()
        .await
        .map_err(|e| IngestFailure::new(code::OUT_OF_RESOURCES, format!("cannot write: {e}")))?;
    let owned = OwnedExpected::from(&expected);
    let store = blobs.clone();
    tokio::task::spawn_blocking(move || check_and_commit(&store, blob, &owned, true, None))
        .await
        .map_err(|e| {
            IngestFailure::new(code::PROCESSING_FAILURE, format!("ingest task failed: {e}"))
        })?
}

/// The second half of [`persist`] for any number of stored instances, in one index
/// transaction (one commit). Each instance's blob has a key of its own (a re-send does not
/// touch the acknowledged version's file): the commit switches the rows to the new files in
/// one step and queues the files of the versions they replace, which are removed
/// [`SUPERSEDED_GRACE`](super::delete::SUPERSEDED_GRACE) later (a reader may still hold
/// their keys).
/// If the index refuses, the new files are removed (not indexed means not acknowledged) —
/// but never a file a row names; where the index cannot even say which those are, they
/// stay for the orphan sweep at the next start (`store::recovery`).
pub async fn index_batch(
    blobs: &BlobStore,
    index: &dyn Index,
    records: &[InstanceRecord],
) -> Result<(), IngestFailure> {
    if records.is_empty() {
        return Ok(());
    }
    match index.upsert_instances_superseding(records).await {
        // The replaced versions' files stay queued for `SUPERSEDED_GRACE`: a reader that
        // located the instance a moment ago still reads the old file
        // (`store::delete::sweep_superseded` removes them).
        Ok(_superseded) => Ok(()),
        Err(e) => {
            remove_unindexed(blobs, index, records).await;
            Err(cannot_index(&e))
        }
    }
}

fn cannot_index(e: &super::IndexError) -> IngestFailure {
    IngestFailure::new(code::OUT_OF_RESOURCES, format!("cannot index: {e}"))
}

/// After an index write failed: remove the new files of `records` — but never a file a row
/// names; where the index cannot even say which those are, they stay for the orphan sweep
/// at the next start (`store::recovery`).
async fn remove_unindexed(blobs: &BlobStore, index: &dyn Index, records: &[InstanceRecord]) {
    let keys: Vec<String> = records.iter().map(|r| r.blob_key.clone()).collect();
    match index.blob_keys_in_use(&keys).await {
        Ok(in_use) => {
            for key in keys.iter().filter(|k| !in_use.contains(*k)) {
                let _ = blobs.remove(key).await;
            }
        }
        Err(_) => tracing::warn!(
            files = keys.len(),
            "index unreachable: files of instances not indexed are left to the orphan sweep"
        ),
    }
}

/// Most instances of one group commit.
const MAX_GROUP: usize = 256;

/// Group commit of the fronts' ingest (issue 16 section 5): the instances that C-STORE
/// associations and STOW-RS requests have received and checked are made durable and
/// indexed together, and each caller answers its sender only once its group is.
///
/// One task takes what is queued: when nothing else is, an instance is committed at once
/// (no timer); what arrives while a group commits forms the next group. For a group, on the
/// filesystem, the files are renamed into place; those received in memory are recorded in
/// the ingest journal, made durable by one in-place `fdatasync` of it, their files fsynced
/// later in bulk ([`BlobStore::commit_journaled_blocking`], `store::journal`); the others
/// are fsynced with their directories at once ([`BlobStore::commit_group_blocking`]: one
/// file-system journal commit for the lot). Then the instances to index are upserted in
/// one index transaction (one commit, one WAL fsync). On object storage the caller uploads
/// its blob itself (each is durable once uploaded) and the group shares the index commit.
///
/// Re-sends stay safe: every version has a key of its own, and the index switches a row to
/// the new one only in the group's transaction, after the new file is durable (section 4).
/// A crash between rename and index commit leaves an orphan for `store::recovery`. A group
/// the index refuses is indexed again instance by instance (one bad instance does not fail
/// the others), but not when the index is unreachable: then all fail at once.
///
/// A caller that goes away (a broken association) does not stop its instance's commit: it
/// is stored, only not acknowledged, as when the connection breaks just before the answer.
pub struct Committer {
    blobs: BlobStore,
    index: Arc<dyn Index>,
    /// Started on first use, on the runtime of the caller.
    queue: std::sync::OnceLock<mpsc::UnboundedSender<Job>>,
}

impl std::fmt::Debug for Committer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committer")
            .field("blobs", &self.blobs)
            .finish_non_exhaustive()
    }
}

/// An instance waiting for its group.
struct Job {
    /// The temp file to make durable (filesystem), or `None` when it is durable already
    /// (uploaded to object storage).
    blob: Option<BlockingBlob>,
    /// The file's bytes, when the instance came in memory: recorded in the ingest journal.
    pieces: Option<InMemory>,
    ingested: Ingested,
    sop_class: String,
    sop_instance: String,
    /// Indexed in the group's transaction; otherwise only made durable (the caller indexes).
    index: bool,
    reply: oneshot::Sender<Result<Ingested, IngestFailure>>,
}

impl Job {
    fn fail(self, status: u16, reason: String) {
        let failure =
            IngestFailure::new(status, reason).naming(&self.sop_class, &self.sop_instance);
        let _ = self.reply.send(Err(failure));
    }
}

impl Committer {
    pub fn new(blobs: BlobStore, index: Arc<dyn Index>) -> Self {
        Committer {
            blobs,
            index,
            queue: std::sync::OnceLock::new(),
        }
    }

    /// [`persist`] in a group: checked, durable and indexed when it returns `Ok`.
    pub async fn persist(
        &self,
        received: Received,
        expected: Expected<'_>,
    ) -> Result<Ingested, IngestFailure> {
        self.submit(received, expected, true).await
    }

    /// [`store_blob`] in a group: checked and durable, not yet indexed ([`index_batch`]
    /// completes it; STOW-RS indexes a request's parts in one transaction).
    pub async fn store_blob(
        &self,
        received: Received,
        expected: Expected<'_>,
    ) -> Result<Ingested, IngestFailure> {
        self.submit(received, expected, false).await
    }

    async fn submit(
        &self,
        received: Received,
        expected: Expected<'_>,
        index: bool,
    ) -> Result<Ingested, IngestFailure> {
        let cannot_write = |e: super::BlobError| {
            IngestFailure::new(code::OUT_OF_RESOURCES, format!("cannot write: {e}"))
        };
        let received = match received {
            Received::File(blob) => Ok(blob.into_blocking().await.map_err(cannot_write)?),
            Received::Memory(in_memory) => Err(in_memory),
        };
        let owned = OwnedExpected::from(&expected);
        let store = self.blobs.clone();
        // The write (of an instance held in memory), check and parse on a blocking thread of
        // the caller's; on object storage the upload too (each blob durable on its own).
        let checked = tokio::task::spawn_blocking(move || {
            let (blob, pieces) = match received {
                Ok(blob) => (blob, None),
                Err(in_memory) => {
                    let mut blob = store.begin_blocking().map_err(cannot_write)?;
                    let slices: Vec<&[u8]> = in_memory.pieces.iter().map(|b| &b[..]).collect();
                    blob.write_all_vectored(&slices).map_err(cannot_write)?;
                    (blob, Some(in_memory))
                }
            };
            let Checked {
                blob,
                ingested,
                sop_class,
                sop_instance,
            } = check(blob, &owned, pieces.as_ref().map(|m| m.pieces.as_slice()))?;
            let blob = if store.is_remote() {
                blob.commit(&store, &ingested.record.blob_key)
                    .map_err(|e| {
                        IngestFailure::new(code::OUT_OF_RESOURCES, format!("cannot store: {e}"))
                            .naming(&sop_class, &sop_instance)
                    })?;
                None
            } else {
                Some(blob)
            };
            Ok::<_, IngestFailure>((blob, pieces, ingested, sop_class, sop_instance))
        })
        .await
        .map_err(|e| {
            IngestFailure::new(code::PROCESSING_FAILURE, format!("ingest task failed: {e}"))
        })??;
        let (blob, pieces, ingested, sop_class, sop_instance) = checked;
        let (reply, answer) = oneshot::channel();
        let job = Job {
            blob,
            pieces,
            ingested,
            sop_class,
            sop_instance,
            index,
            reply,
        };
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(run_commits(self.blobs.clone(), self.index.clone(), rx));
            tx
        });
        if let Err(mpsc::error::SendError(job)) = queue.send(job) {
            job.fail(
                code::PROCESSING_FAILURE,
                "the ingest committer has stopped".into(),
            );
            return Err(IngestFailure::new(
                code::PROCESSING_FAILURE,
                "the ingest committer has stopped",
            ));
        }
        answer.await.unwrap_or_else(|_| {
            Err(IngestFailure::new(
                code::PROCESSING_FAILURE,
                "the ingest committer has stopped",
            ))
        })
    }
}

/// The committer's task: one group at a time, of everything queued (see [`Committer`]).
/// Ends when the committer is dropped.
async fn run_commits(
    blobs: BlobStore,
    index: Arc<dyn Index>,
    mut jobs: mpsc::UnboundedReceiver<Job>,
) {
    while let Some(first) = jobs.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        commit_group(&blobs, index.as_ref(), group).await;
    }
}

/// Make `group` durable, index those to be indexed, answer each job.
///
/// With the ingest journal, the index transaction's statements run while the files are
/// made durable (the journal's `fdatasync`), and it commits only after that: what is left
/// between the flush and the answers is the journal mark and the commit. When a file
/// commit fails, or the transaction does, the rows are written after the files instead.
async fn commit_group(blobs: &BlobStore, index: &dyn Index, group: Vec<Job>) {
    crate::metrics::ingest_group(group.len());
    // The files first (those not durable yet), all at once: those held in memory through
    // the ingest journal (`store::journal`), the others fsynced.
    let mut files = Vec::new();
    let mut journaled = Vec::new();
    let mut waiting = Vec::with_capacity(group.len());
    let mut waiting_journaled = Vec::new();
    let mut ready = Vec::with_capacity(group.len());
    // An instance to index whose bytes no journal record of this group holds: the index
    // commit must then wait for its own flush (nothing could index it again at start).
    let mut unjournaled = false;
    for mut job in group {
        match (job.blob.take(), job.pieces.take()) {
            // The journal takes the bytes; their share of the budget is given back.
            (Some(blob), Some(InMemory { pieces, .. })) => {
                let key = job.ingested.record.blob_key.clone();
                journaled.push((blob, key, pieces, job.index));
                waiting_journaled.push(job);
            }
            (Some(blob), None) => {
                unjournaled |= job.index;
                files.push((blob, job.ingested.record.blob_key.clone()));
                waiting.push(job);
            }
            (None, _) => {
                unjournaled |= job.index;
                ready.push(job)
            }
        }
    }
    waiting_journaled.extend(waiting);
    let waiting = waiting_journaled;
    // The rows written early, in a transaction the file commit's outcome opens or closes.
    let journal = blobs.journal().cloned();
    let early: Vec<InstanceRecord> = match &journal {
        Some(_) if !ready.iter().any(|j| j.index) => waiting
            .iter()
            .filter(|j| j.index)
            .map(|j| j.ingested.record.clone())
            .collect(),
        _ => Vec::new(),
    };
    let (gate, gated) = oneshot::channel();
    let to_index_early = early.len();
    let commit_files = async {
        let mut appended = None;
        if files.is_empty() && journaled.is_empty() {
            drop(gate);
            return (ready, appended, unjournaled);
        }
        let store = blobs.clone();
        let any_journaled = !journaled.is_empty();
        let committed = tokio::task::spawn_blocking(move || {
            let (mut results, appended) = store.commit_journaled_blocking(journaled);
            if !files.is_empty() {
                results.extend(store.commit_group_blocking(files));
            }
            (results, appended)
        });
        let mut ready = ready;
        let mut unjournaled = unjournaled;
        let mut indexed_ok = 0;
        match committed.await {
            Ok((results, journal)) => {
                appended = journal;
                // The journal refused them: their files were fsynced instead.
                unjournaled |= any_journaled && appended.is_none();
                for (job, result) in waiting.into_iter().zip(results) {
                    match result {
                        Ok(_) => {
                            indexed_ok += usize::from(job.index);
                            ready.push(job)
                        }
                        Err(e) => job.fail(code::OUT_OF_RESOURCES, format!("cannot store: {e}")),
                    }
                }
            }
            // The files stay where they got to: not indexed, orphans for the next start.
            Err(e) => {
                for job in waiting {
                    job.fail(code::PROCESSING_FAILURE, format!("ingest task failed: {e}"));
                }
            }
        }
        if to_index_early > 0 && indexed_ok == to_index_early {
            if let Some(journal) = blobs.journal() {
                let durable = unjournaled || appended.is_none_or(|a| a.switched);
                let _ = gate.send(Gate {
                    seq: journal.last_seq(),
                    durable,
                });
            }
        }
        (ready, appended, unjournaled)
    };
    let index_early = async {
        match &journal {
            Some(journal) if !early.is_empty() => Some(
                index
                    .upsert_instances_gated(&early, journal.id(), gated)
                    .await,
            ),
            _ => None,
        }
    };
    let ((ready, appended, unjournaled), early_result) = tokio::join!(commit_files, index_early);
    // Then the index: those that asked for it, in one transaction.
    let (to_index, durable_only): (Vec<Job>, Vec<Job>) = ready.into_iter().partition(|j| j.index);
    for job in durable_only {
        let _ = job.reply.send(Ok(job.ingested));
    }
    if to_index.is_empty() {
        return;
    }
    if let (Some(Ok(Some(committed))), Some(journal)) = (early_result, &journal) {
        if committed.durable {
            journal.index_durable(committed.seq);
        }
        for job in to_index {
            let _ = job.reply.send(Ok(job.ingested));
        }
        return;
    }
    let records: Vec<InstanceRecord> = to_index.iter().map(|j| j.ingested.record.clone()).collect();
    let committed = match &journal {
        // The journal is the index's redo log (`store::journal`): the commit need not wait
        // for the database's flush when every instance has a durable record — unless the
        // journal went on in its other file, whose records' rows must be durable before it
        // is written over (then this commit flushes them all).
        Some(journal) => {
            let seq = journal.last_seq();
            let durable = unjournaled || appended.is_none_or(|a| a.switched);
            let committed = index
                .upsert_instances_journaled(&records, journal.id(), seq, durable)
                .await;
            if durable && committed.is_ok() {
                journal.index_durable(seq);
            }
            committed
        }
        None => index.upsert_instances_superseding(&records).await,
    };
    match committed {
        Ok(_superseded) => {
            for job in to_index {
                let _ = job.reply.send(Ok(job.ingested));
            }
        }
        Err(e) if to_index.len() > 1 && !e.is_unavailable() => {
            // One by one: each its own answer.
            for job in to_index {
                match index_batch(blobs, index, std::slice::from_ref(&job.ingested.record)).await {
                    Ok(()) => {
                        let _ = job.reply.send(Ok(job.ingested));
                    }
                    Err(f) => job.fail(f.status, f.reason),
                }
            }
        }
        Err(e) => {
            remove_unindexed(blobs, index, &records).await;
            let failure = cannot_index(&e);
            for job in to_index {
                job.fail(failure.status, failure.reason.clone());
            }
        }
    }
}

/// [`Expected`] with owned values, for the blocking half.
#[derive(Debug, Default, Clone)]
pub struct OwnedExpected {
    sop_class: Option<String>,
    sop_instance: Option<String>,
    study_uid: Option<String>,
}

impl From<&Expected<'_>> for OwnedExpected {
    fn from(e: &Expected<'_>) -> Self {
        OwnedExpected {
            sop_class: e.sop_class.map(str::to_string),
            sop_instance: e.sop_instance.map(str::to_string),
            study_uid: e.study_uid.map(str::to_string),
        }
    }
}

/// The blocking half of [`persist`]: [`check`], then fsync and rename. Any failure drops
/// `blob`, which removes the temp file.
/// `in_memory`: the whole file as written to `blob`, checked and parsed from there instead
/// of opening and reading the file back three times (the cache fill has it at hand).
fn check_and_commit(
    store: &BlobStore,
    blob: BlockingBlob,
    expected: &OwnedExpected,
    sync: bool,
    in_memory: Option<&[Bytes]>,
) -> Result<Ingested, IngestFailure> {
    let Checked {
        blob,
        mut ingested,
        sop_class,
        sop_instance,
    } = check(blob, expected, in_memory)?;
    let key = ingested.record.blob_key.clone();
    let committed = if sync {
        blob.commit(store, &key)
    } else {
        blob.commit_unsynced(store, &key)
    };
    ingested.record.size_bytes = committed.map_err(|e| {
        IngestFailure::new(code::OUT_OF_RESOURCES, format!("cannot store: {e}"))
            .naming(&sop_class, &sop_instance)
    })?;
    Ok(ingested)
}

/// A received instance that passed [`check`]: its temp file, not yet durable or in place,
/// and what it is to be indexed as (a fresh blob key, the status to answer).
#[derive(Debug)]
struct Checked {
    blob: BlockingBlob,
    ingested: Ingested,
    /// From the meta group, to name the instance in a later failure.
    sop_class: String,
    sop_instance: String,
}

/// A data set that does not parse: Cannot Understand (PS3.4 Table B.2-1).
fn unparsable(problem: String) -> IngestFailure {
    IngestFailure::new(
        code::CANNOT_UNDERSTAND,
        format!("data set does not parse: {problem}"),
    )
}

/// [`unparsable`] of a structure or parse failure.
fn parse_error(e: DatasetError) -> IngestFailure {
    match e {
        DatasetError::Parse(problem) | DatasetError::File { problem, .. } => unparsable(problem),
        other => unparsable(other.to_string()),
    }
}

/// What an instance whose whole Part 10 file is `pieces` is indexed as (checked and parsed
/// as [`check`] does; the caller sets its key and size): the ingest journal's redo at start
/// (`store::journal`) indexes an instance again from the bytes of its record this way.
pub(super) fn record_of(pieces: &[Bytes]) -> Result<InstanceRecord, IngestFailure> {
    let layout = layout_in_memory(pieces).map_err(parse_error)?;
    pixel_data_in_memory(pieces, &layout).map_err(parse_error)?;
    let obj = parse_in_memory_until(pieces, PIXEL_DATA).map_err(unparsable)?;
    let mut record = InstanceRecord::from_object(&obj);
    record.transfer_syntax_uid = layout
        .meta
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_string();
    Ok(record)
}

/// Structure check, parse up to Pixel Data, the checks of `expected`, a fresh key. Any
/// failure drops `blob`, which removes the temp file.
fn check(
    blob: BlockingBlob,
    expected: &OwnedExpected,
    in_memory: Option<&[Bytes]>,
) -> Result<Checked, IngestFailure> {
    let path = blob.temp_path().to_path_buf();
    // Lengths and nesting first: the parser trusts both (see `check_structure`).
    let (layout, obj) = match in_memory {
        Some(pieces) => {
            let layout = layout_in_memory(pieces).map_err(parse_error)?;
            pixel_data_in_memory(pieces, &layout).map_err(|e| parse_error(e).of(&layout.meta))?;
            let obj = parse_in_memory_until(pieces, PIXEL_DATA)
                .map_err(|e| unparsable(e).of(&layout.meta))?;
            (layout, obj)
        }
        None => {
            let layout = read_layout(&path).map_err(parse_error)?;
            pixel_data_in(&path, &layout).map_err(|e| parse_error(e).of(&layout.meta))?;
            let obj = dicom_object::OpenFileOptions::new()
                .read_until(PIXEL_DATA)
                .open_file(&path)
                .map_err(|e| unparsable(e.to_string()).of(&layout.meta))?;
            (layout, obj)
        }
    };
    let meta = &layout.meta;
    let transfer_syntax = meta.transfer_syntax().trim_end_matches('\0').to_string();
    let mut record = InstanceRecord::from_object(&obj);
    let borrowed = Expected {
        sop_class: expected.sop_class.as_deref(),
        sop_instance: expected.sop_instance.as_deref(),
        study_uid: expected.study_uid.as_deref(),
    };
    if let Some(failure) = mismatch(&record, &borrowed) {
        return Err(failure.of(meta));
    }
    let key = BlobStore::key_for(
        record.study_instance_uid(),
        record.series_instance_uid(),
        record.sop_instance_uid(),
    )
    .map_err(|e| {
        IngestFailure::new(
            code::CANNOT_UNDERSTAND,
            format!("missing or invalid UIDs: {e}"),
        )
        .of(meta)
    })?;
    record.blob_key = key;
    record.size_bytes = blob.len();
    record.transfer_syntax_uid = transfer_syntax;
    // PS3.4 B.2.3: B007 when the data set's SOP class is not the one in the command.
    let dataset_class = record.get(SOP_CLASS_UID).unwrap_or("");
    let status = match &expected.sop_class {
        Some(class) if class != dataset_class => code::WARNING_DATASET_MISMATCH,
        _ => code::SUCCESS,
    };
    Ok(Checked {
        blob,
        ingested: Ingested { status, record },
        sop_class: meta.media_storage_sop_class_uid().to_string(),
        sop_instance: meta.media_storage_sop_instance_uid().to_string(),
    })
}

const SOP_CLASS_UID: Tag = Tag(0x0008, 0x0016);

/// Bytes of an instance collected before they go to the fill's thread as one piece: most
/// instances travel whole, in one hand-off; a large one in pieces of about this size.
const PIECE_BYTES: usize = 2 * 1024 * 1024;

/// Pieces queued for the fill's thread. With [`PIECE_BYTES`] this bounds what one retrieve
/// holds in memory (~16 MiB). When the disk or the consumer is slower than the PACS, the
/// receiver waits here and stops reading the association: back-pressure reaches the PACS.
const PIECES_QUEUED: usize = 8;

/// Stored instances waiting to be handed on.
const RESULTS_QUEUED: usize = 4;

/// Sends instances to a cache fill (see [`cache_fill`]); clones share the fill.
#[derive(Debug, Clone)]
pub struct FillWriter {
    tx: mpsc::Sender<Piece>,
    next_id: Arc<AtomicU64>,
    /// Instances whose data set was complete and given to the thread: what the receiver
    /// has acknowledged, whether or not the thread has stored it yet.
    finished: Arc<AtomicU64>,
}

/// See [`FillWriter::finished_count`].
#[derive(Debug, Clone)]
pub struct FinishedCount(Arc<AtomicU64>);

impl FinishedCount {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

/// One instance's result from a cache fill, in the order the instances were finished.
#[derive(Debug)]
pub struct Filled {
    /// The SOP Instance UID the sender named (for the log when it failed).
    pub sop_instance: Option<String>,
    pub stored: Result<Ingested, IngestFailure>,
    /// The data set as received, exactly the stored file's bytes after its meta group, when
    /// the instance came in one piece and its data set names the SOP class the sender did:
    /// what passes it on can send these instead of reading the file back.
    pub data_set: Option<Arc<[Bytes]>>,
    /// With `data_set`: the stored file's bytes before it (preamble and meta group).
    pub file_start: Option<Bytes>,
}

/// Part of one instance on its way to the fill's thread.
#[derive(Debug)]
struct Piece {
    instance: u64,
    /// The first piece: the Part 10 header the temp file starts with.
    header: Option<Bytes>,
    chunks: Vec<Bytes>,
    /// The last piece: what the sender said of the instance.
    end: Option<OwnedExpected>,
    /// The sender gave up on the instance (association broken): remove its temp file.
    abandon: bool,
}

/// The fill's thread has stopped (its results are no longer taken).
#[derive(Debug, thiserror::Error)]
#[error("the cache fill has stopped")]
pub struct FillStopped;

/// Start the cache fill of one PACS retrieve. The instances given to the [`FillWriter`] are
/// written to temp files, checked, parsed up to Pixel Data and renamed into place on one
/// blocking thread of their own, with plain `std::fs` calls; their results come out of the
/// receiver in the order they were finished. The receiver of the data (a C-GET exchange, the
/// Storage SCP for a C-MOVE) only collects the PDVs as they arrive (no copy) and can answer
/// each sub-operation as soon as its data set is in, while the thread writes it: per
/// instance one hand-off instead of one per write, flush and step.
///
/// Nothing is fsynced: the instances are copies of what the PACS holds, renamed into place
/// without fsync (they may not survive a power loss yet) and made durable in one pass
/// ([`BlobStore::sync_blocking`]) before the retrieve counts the study as cached. The thread ends when every writer is gone and what it was given is
/// done, or when the receiver is dropped.
pub fn cache_fill(blobs: &BlobStore) -> (FillWriter, mpsc::Receiver<Filled>) {
    let (tx, pieces) = mpsc::channel(PIECES_QUEUED);
    let (results, rx) = mpsc::channel(RESULTS_QUEUED);
    let store = blobs.clone();
    tokio::task::spawn_blocking(move || run_fill(&store, pieces, results));
    let writer = FillWriter {
        tx,
        next_id: Arc::new(AtomicU64::new(0)),
        finished: Arc::new(AtomicU64::new(0)),
    };
    (writer, rx)
}

impl FillWriter {
    /// A count of the instances given to the fill complete (acknowledged to their sender;
    /// the thread may still be storing them). It does not keep the fill open, as a writer
    /// would.
    pub fn finished_count(&self) -> FinishedCount {
        FinishedCount(self.finished.clone())
    }

    /// Start an instance whose Part 10 file begins with `header`.
    pub fn begin(&self, header: Vec<u8>) -> FillInstance<'_> {
        FillInstance {
            writer: self,
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            len: header.len(),
            header: Some(Bytes::from(header)),
            chunks: Vec::new(),
            sent: false,
            finished: false,
        }
    }
}

/// One instance being given to a cache fill. Dropped unfinished, its temp file is removed.
#[derive(Debug)]
pub struct FillInstance<'a> {
    writer: &'a FillWriter,
    id: u64,
    header: Option<Bytes>,
    chunks: Vec<Bytes>,
    /// Bytes collected and not yet sent.
    len: usize,
    /// A piece went to the thread (which then holds a temp file for it).
    sent: bool,
    finished: bool,
}

impl FillInstance<'_> {
    /// Add the next bytes of the data set.
    pub async fn push(&mut self, data: Bytes) -> Result<(), FillStopped> {
        self.len += data.len();
        self.chunks.push(data);
        if self.len >= PIECE_BYTES {
            self.send(None).await?;
        }
        Ok(())
    }

    /// The data set is complete: the thread stores it and reports the result.
    pub async fn finish(mut self, expected: &Expected<'_>) -> Result<(), FillStopped> {
        let sent = self.send(Some(OwnedExpected::from(expected))).await;
        self.finished = true;
        if sent.is_ok() {
            self.writer.finished.fetch_add(1, Ordering::AcqRel);
        }
        sent
    }

    async fn send(&mut self, end: Option<OwnedExpected>) -> Result<(), FillStopped> {
        let piece = Piece {
            instance: self.id,
            header: self.header.take(),
            chunks: std::mem::take(&mut self.chunks),
            end,
            abandon: false,
        };
        self.len = 0;
        self.sent = true;
        self.writer.tx.send(piece).await.map_err(|_| FillStopped)
    }
}

impl Drop for FillInstance<'_> {
    fn drop(&mut self) {
        if self.sent && !self.finished {
            // If the queue is full the temp file goes when the fill ends.
            let _ = self.writer.tx.try_send(Piece {
                instance: self.id,
                header: None,
                chunks: Vec::new(),
                end: None,
                abandon: true,
            });
        }
    }
}

/// The fill's thread (see [`cache_fill`]).
fn run_fill(store: &BlobStore, mut pieces: mpsc::Receiver<Piece>, results: mpsc::Sender<Filled>) {
    let cannot_write = |e: super::BlobError| {
        IngestFailure::new(code::OUT_OF_RESOURCES, format!("cannot write: {e}"))
    };
    // Instances begun and not finished: more than one only when several associations
    // deliver to one retrieve (C-MOVE). Dropping a blob removes its temp file.
    let mut open: HashMap<u64, Result<BlockingBlob, IngestFailure>> = HashMap::new();
    while let Some(piece) = pieces.blocking_recv() {
        if piece.abandon {
            open.remove(&piece.instance);
            continue;
        }
        if piece.header.is_some() {
            open.insert(piece.instance, store.begin_blocking().map_err(cannot_write));
        }
        let Some(entry) = open.get_mut(&piece.instance) else {
            continue;
        };
        if let Ok(blob) = entry {
            let pieces: Vec<&[u8]> = piece
                .header
                .iter()
                .chain(piece.chunks.iter())
                .map(|b| &b[..])
                .collect();
            if let Err(e) = blob.write_all_vectored(&pieces) {
                *entry = Err(cannot_write(e));
            }
        }
        let Some(expected) = piece.end else {
            continue;
        };
        // Whole in one piece: checked and parsed from memory, and its data set can be passed
        // on from memory.
        let whole: Option<Vec<Bytes>> = piece.header.clone().map(|header| {
            std::iter::once(header)
                .chain(piece.chunks.iter().cloned())
                .collect()
        });
        let stored = match open.remove(&piece.instance) {
            Some(Ok(blob)) => check_and_commit(store, blob, &expected, false, whole.as_deref()),
            Some(Err(failure)) => Err(failure),
            None => continue,
        };
        // The file's meta group then says what the record does (class, instance, syntax).
        let same_class = |i: &Ingested| {
            expected.sop_instance.is_some()
                && expected.sop_class.as_deref() == Some(i.record.get(SOP_CLASS_UID).unwrap_or(""))
        };
        let (data_set, file_start) = match &stored {
            Ok(ingested) if whole.is_some() && same_class(ingested) => {
                (Some(piece.chunks.into()), piece.header)
            }
            _ => (None, None),
        };
        let filled = Filled {
            sop_instance: expected.sop_instance,
            stored,
            data_set,
            file_start,
        };
        if results.blocking_send(filled).is_err() {
            // Nobody takes the results any more: the retrieve is over.
            return;
        }
    }
}

/// A failure when the data set contradicts what the sender said about it.
fn mismatch(record: &InstanceRecord, expected: &Expected<'_>) -> Option<IngestFailure> {
    let no_class = expected.sop_class.is_none() && record.get(SOP_CLASS_UID).is_none();
    if record.sop_instance_uid().is_empty() || no_class {
        // PS3.18 10.5.3: an instance without SOP Class/Instance UID cannot be stored.
        return Some(IngestFailure::new(
            code::CANNOT_UNDERSTAND,
            "data set has no SOP Class UID or SOP Instance UID",
        ));
    }
    if let Some(sop) = expected.sop_instance {
        if record.sop_instance_uid() != sop {
            return Some(IngestFailure::new(
                code::CANNOT_UNDERSTAND,
                "SOP Instance UID differs from the command",
            ));
        }
    }
    if let Some(study) = expected.study_uid {
        if record.study_instance_uid() != study {
            // PS3.18 10.5.3.2: an instance of another study than the target is a failure.
            return Some(IngestFailure::new(
                code::IDENTIFIER_MISMATCH,
                format!(
                    "Study Instance UID {} differs from the study in the URL {study}",
                    record.study_instance_uid()
                ),
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The process never holds more than [`MEMORY_BUDGET`] of received instances in memory:
    /// a share that would pass it is refused (nothing counted), and a dropped share is
    /// given back.
    #[test]
    fn memory_holds_stay_within_the_budget() {
        let _alone = BUDGET_TESTS.blocking_lock();
        let mut refused = MemoryHold::default();
        assert!(!refused.grow(MEMORY_BUDGET + 1));
        assert_eq!(refused.0, 0);
        let mut hold = MemoryHold::default();
        assert!(hold.grow(1 << 20));
        assert!(HELD_IN_MEMORY.load(Ordering::Relaxed) >= 1 << 20);
        // With this hold counted, the whole budget more is always past it.
        assert!(!hold.grow(MEMORY_BUDGET), "past the budget");
        assert_eq!(hold.0, 1 << 20);
        drop(hold);
        drop(refused);
    }

    fn tmp_entries(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir.join("tmp")).unwrap().count()
    }

    /// Two generated CT slices as Part 10 files, with their SOP Instance UIDs.
    fn two_instances(dir: &std::path::Path) -> Vec<(Vec<u8>, String)> {
        let args = crate::testdata::GenerateArgs {
            ct_slices: 2,
            mr_slices: 0,
            patients: 1,
            ..crate::testdata::GenerateArgs::with_defaults(dir)
        };
        crate::testdata::generate(&args)
            .unwrap()
            .into_iter()
            .map(|f| (std::fs::read(&f.path).unwrap(), f.sop_uid))
            .collect()
    }

    /// Give `file` to the fill: its first 400 bytes as the header, the rest in 3 chunks.
    async fn give(fill: &FillWriter, file: &[u8], sop: &str) {
        let mut instance = fill.begin(file[..400].to_vec());
        let rest = Bytes::copy_from_slice(&file[400..]);
        let third = rest.len() / 3;
        for chunk in [
            rest.slice(..third),
            rest.slice(third..2 * third),
            rest.slice(2 * third..),
        ] {
            instance.push(chunk).await.unwrap();
        }
        let expected = Expected {
            sop_instance: Some(sop),
            ..Default::default()
        };
        instance.finish(&expected).await.unwrap();
    }

    /// Many instances at once through one committer (the shape of several associations):
    /// each caller gets its own instance back, durable at its key with the bytes sent and
    /// indexed; one that does not parse fails alone; nothing stays in `tmp/`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_committer_stores_and_indexes_concurrent_instances() {
        let dir = tempfile::tempdir().unwrap();
        let args = crate::testdata::GenerateArgs {
            ct_slices: 24,
            mr_slices: 0,
            patients: 1,
            frame_size: 64,
            ..crate::testdata::GenerateArgs::with_defaults(dir.path().join("src"))
        };
        let files: Vec<(Vec<u8>, String)> = crate::testdata::generate(&args)
            .unwrap()
            .into_iter()
            .map(|f| (std::fs::read(&f.path).unwrap(), f.sop_uid))
            .collect();
        let store = BlobStore::open(&dir.path().join("data")).await.unwrap();
        let url = format!("sqlite://{}", dir.path().join("index.db").display());
        let index: Arc<dyn Index> =
            Arc::new(crate::store::index::SqliteIndex::open(&url).await.unwrap());
        let committer = Arc::new(Committer::new(store.clone(), index.clone()));
        let send = |bytes: Vec<u8>, sop: Option<String>| {
            let (store, committer) = (store.clone(), committer.clone());
            tokio::spawn(async move {
                // Half of them streamed to a temp file, half held in memory.
                let received = if bytes.len().is_multiple_of(2) {
                    let mut blob = store.begin().await.unwrap();
                    blob.write(&bytes).await.unwrap();
                    Received::File(blob)
                } else {
                    let half = bytes.len() / 2;
                    let bytes = Bytes::from(bytes);
                    Received::Memory(InMemory {
                        pieces: vec![bytes.slice(..half), bytes.slice(half..)],
                        hold: MemoryHold::default(),
                    })
                };
                let expected = Expected {
                    sop_instance: sop.as_deref(),
                    ..Default::default()
                };
                committer.persist(received, expected).await
            })
        };
        let mut tasks = Vec::new();
        for (bytes, sop) in &files {
            tasks.push((
                Some(bytes.clone()),
                sop.clone(),
                send(bytes.clone(), Some(sop.clone())),
            ));
        }
        let broken = files[0].0[..files[0].0.len() / 3].to_vec();
        tasks.push((None, String::new(), send(broken, None)));
        for (bytes, sop, task) in tasks {
            let result = task.await.unwrap();
            let Some(bytes) = bytes else {
                let failure = result.unwrap_err();
                assert_eq!(failure.status, code::CANNOT_UNDERSTAND);
                continue;
            };
            let ingested = result.unwrap();
            assert_eq!(ingested.record.sop_instance_uid(), sop);
            let path = store.path(&ingested.record.blob_key);
            assert_eq!(std::fs::read(path).unwrap(), bytes, "byte-exact");
            let located = index
                .locate(&crate::model::Selection {
                    sop_instance_uids: vec![sop.clone()],
                    ..Default::default()
                })
                .await
                .unwrap();
            assert_eq!(located.len(), 1, "{sop} indexed");
            assert_eq!(located[0].blob_key, ingested.record.blob_key);
            assert_eq!(located[0].size_bytes, bytes.len() as u64);
        }
        assert_eq!(tmp_entries(&dir.path().join("data")), 0);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_fill_stores_in_order_checks_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let files = two_instances(&dir.path().join("src"));
        let store = BlobStore::open(&dir.path().join("data")).await.unwrap();
        let (fill, mut filled) = cache_fill(&store);

        // Two instances begun at once (two associations of one C-MOVE), the second finished
        // first: results come in the order finished.
        let (first, second) = (&files[0], &files[1]);
        let mut a = fill.begin(first.0[..400].to_vec());
        a.push(Bytes::copy_from_slice(&first.0[400..]))
            .await
            .unwrap();
        give(&fill, &second.0, &second.1).await;
        let expected = Expected {
            sop_instance: Some(&first.1),
            ..Default::default()
        };
        a.finish(&expected).await.unwrap();
        for (file, sop) in [second, first] {
            let got = filled.recv().await.unwrap();
            let ingested = got.stored.unwrap();
            assert_eq!(ingested.record.sop_instance_uid(), sop);
            assert_eq!(ingested.status, code::SUCCESS);
            let path = store.path(&ingested.record.blob_key);
            assert_eq!(&std::fs::read(path).unwrap(), file, "byte-exact");
        }

        // A data set that does not parse, and one that is not the instance the command named.
        let truncated = &first.0[..first.0.len() / 2];
        give(&fill, truncated, &first.1).await;
        let failure = filled.recv().await.unwrap().stored.unwrap_err();
        assert_eq!(failure.status, code::CANNOT_UNDERSTAND);
        give(&fill, &first.0, "1.2.3.4").await;
        let failure = filled.recv().await.unwrap().stored.unwrap_err();
        assert_eq!(failure.status, code::CANNOT_UNDERSTAND);

        // An instance given up half-way (its association broke) after a piece went out.
        let mut dropped = fill.begin(first.0[..400].to_vec());
        dropped
            .push(Bytes::from(vec![0u8; PIECE_BYTES]))
            .await
            .unwrap();
        drop(dropped);

        // The fill ends once its writers are gone; no temp file stays.
        drop(fill);
        assert!(filled.recv().await.is_none());
        assert_eq!(tmp_entries(&dir.path().join("data")), 0);
    }
}
