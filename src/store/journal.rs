//! The ingest journal (issue 16 section 5): a received instance is made durable before its
//! acknowledgement without a file-system journal commit per instance.
//!
//! A new blob file is durable only once the file and its directory are fsynced, and that
//! makes the file system commit its own journal (the new inode, its blocks, the directory
//! entry) with its cache flushes: 2-7 ms per instance on the VM of docs/performance.md, even
//! with file and directory fsynced at once. An overwrite in place of a file whose blocks are
//! allocated and written needs no metadata: `fdatasync` writes the data and flushes the disk
//! cache (0.2-0.6 ms there). So the [`Committer`](super::ingest::Committer) writes each
//! instance it holds in memory as a record into one of two preallocated journal files
//! (`data_dir/journal/ingest-{0,1}.journal`), fdatasyncs the journal once per group, and only
//! then commits the index rows and acknowledges. The blob files (renamed into place, in the
//! page cache) and their directories are fsynced later, all at once, on a thread of their
//! own, when the journal file they are recorded in is full and the committer goes on in the
//! other one (the file's checkpoint).
//!
//! The journal is the index's redo log too: every record has a number, and the group
//! commit's index transaction writes the number of the group's last record into the index
//! (`ingest_journal`, migration 0012) without waiting for the database's flush (SQLite
//! `synchronous=NORMAL` on its own connection, PostgreSQL `synchronous_commit = off`). A
//! `kill -9` loses nothing of such a commit (it is in the database's log, in the page cache
//! or the server); a power loss may take the last ones — a suffix of the database's
//! transactions, never one without the later ones, since both databases' logs are written
//! and replayed in order.
//!
//! What keeps an acknowledged instance through a power loss, not only a `kill -9`:
//! - an index row is committed only after the journal record of its blob is durable (the
//!   group's fdatasync comes before its index transaction);
//! - a journal file is written over only after every blob recorded in it, and the
//!   directories holding them, have been fsynced (its checkpoint has finished), and after
//!   the index rows of its records are durable (the group that goes on in the other file
//!   commits its index transaction with a flush, which makes all before it durable too);
//! - each record starts on a page boundary: writing one never rewrites a page of an earlier,
//!   acknowledged record, so a torn write cannot damage it;
//! - an instance whose bytes are in no record of its group (too large for memory, or the
//!   journal refused it) has its file fsynced and its index commit flushed, as before.
//!
//! At start ([`Journal::open`]) every valid record (magic, lengths, CRC-32) whose key an index
//! row names is compared with the blob file: one that is missing, of another length or with
//! other bytes is written again from the journal. A record numbered after the index's mark
//! whose key no row names lost its index transaction (or never had one: then it was not
//! acknowledged, and indexing it is as if its answer got lost): its blob is made whole and
//! it is parsed from the journal's bytes and indexed again (only records of instances the
//! group commit indexes: a STOW-RS request indexes its parts itself, with a flushed commit,
//! and its records are never indexed again). A record up to the mark that no
//! row names was replaced or deleted since, and is left alone: keys are never reused
//! ([`BlobStore::key_for`]), so a record can never hold other bytes than its key's file.
//! Then every such blob and its directories are fsynced, the index is flushed with the mark
//! past every record, and the journal starts over.

use super::{BlobError, BlobStore, Index, IndexError};
use std::collections::{BTreeSet, HashSet};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("ingest journal I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("ingest journal: {0}")]
    Unusable(String),
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error(transparent)]
    Index(#[from] IndexError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Size of each of the two journal files (written with zeros once, when made): ~30 CT slices
/// of 0.5 MB each before the committer switches files and the full one is checkpointed. At
/// most a sixteenth of the free space when made (small test filesystems).
pub const JOURNAL_FILE_BYTES: u64 = 16 << 20;

/// Smallest journal file worth having; below it there is no journal.
const MIN_FILE_BYTES: u64 = 1 << 20;

/// What starts every record.
const MAGIC: &[u8; 8] = b"BBJRNL02";

/// What started a record before records had numbers: still read (restored, never redone).
const MAGIC_V1: &[u8; 8] = b"BBJRNL01";

/// Record header: magic, key length (u32), CRC-32 (u32) of the lengths, number, flags, key
/// and data, data length (u64), the record's number (u64), flags (u32, [`REDO`]), 4 bytes
/// zero; little endian. The key and the data follow. (Version 1 had no number: 24 bytes.)
const HEADER: u64 = 40;

/// Flag of a record whose instance the group commit indexes (with the mark): indexed
/// again at start when its commit was lost. Without it (STOW-RS: the request indexes its
/// parts itself, with a flushed commit) a record is never indexed again.
const REDO: u32 = 1;
const HEADER_V1: u64 = 24;

/// Records start on page boundaries (see the module documentation).
const PAGE: u64 = 4096;

/// Longest key a record may hold (keys are three UIDs and a version).
const MAX_KEY: u64 = 1024;

fn record_len(key: &str, data: u64) -> u64 {
    record_len_with(HEADER, key, data)
}

fn record_len_with(header: u64, key: &str, data: u64) -> u64 {
    (header + key.len() as u64 + data).div_ceil(PAGE) * PAGE
}

/// The CRC of a record; `seq` (number and flags) is `None` for a version 1 record.
fn crc_of(key: &[u8], pieces: &[&[u8]], data_len: u64, seq: Option<(u64, u32)>) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&(key.len() as u32).to_le_bytes());
    crc.update(&data_len.to_le_bytes());
    if let Some((seq, flags)) = seq {
        crc.update(&seq.to_le_bytes());
        crc.update(&flags.to_le_bytes());
    }
    crc.update(key);
    for piece in pieces {
        crc.update(piece);
    }
    crc.finalize()
}

pub use super::blob::Appended;
pub use super::blob::PlacedBlob as Record;

/// Blobs recorded in one journal file and not yet fsynced, with their directories.
#[derive(Debug, Default)]
struct Unsynced {
    files: Vec<PathBuf>,
    dirs: BTreeSet<PathBuf>,
    /// Directories whose own entry the checkpoint makes durable (see `BlobStore::place`).
    entries: BTreeSet<PathBuf>,
}

impl Unsynced {
    fn is_empty(&self) -> bool {
        self.files.is_empty() && self.dirs.is_empty()
    }
}

/// A checkpoint that failed: why, and the blobs still to fsync.
type CheckpointFailure = Box<(JournalError, Unsynced)>;

type Checkpoint = std::thread::JoinHandle<Result<(), CheckpointFailure>>;

#[derive(Debug)]
struct State {
    /// The file records go to now, and where the next one starts in it.
    current: usize,
    head: u64,
    unsynced: [Unsynced; 2],
    /// The checkpoint of the other file, when one runs.
    checkpoint: Option<Checkpoint>,
    /// A checkpoint thread died: its blobs' state is unknown, the journal is not used again.
    broken: bool,
    /// The number the next record gets (numbers only grow, across starts too).
    next_seq: u64,
    /// The highest number recorded in each file since the start (0: none).
    max_seq: [u64; 2],
    /// Records up to this number have their index rows durable (the committer says so
    /// after a commit that waited for its flush, [`Journal::index_durable`]): a file is
    /// written over only when all of its records are.
    durable_through: u64,
}

/// The ingest journal of one data directory (see the module documentation). Used by the
/// serving process only (`server::start` opens it and attaches it to the blob store).
#[derive(Debug)]
pub struct Journal {
    /// The journal's id (`journal/ingest.id`): its row in the index's `ingest_journal`.
    id: String,
    paths: [PathBuf; 2],
    files: [std::fs::File; 2],
    sizes: [u64; 2],
    durable_dirs: Arc<Mutex<HashSet<PathBuf>>>,
    state: Mutex<State>,
}

/// A valid record found at start.
#[derive(Debug)]
struct Found {
    file: usize,
    key: String,
    data_at: u64,
    data_len: u64,
    crc: u32,
    /// The record's number (`None`: a version 1 record, without one).
    seq: Option<u64>,
    flags: u32,
}

/// What the start's recovery did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Valid records in the journal.
    pub records: usize,
    /// Blob files of indexed instances written again from the journal.
    pub restored: usize,
    /// Instances indexed again from the journal (their index transaction was lost).
    pub reindexed: usize,
}

impl super::blob::BlobLog for Journal {
    fn append(
        &self,
        records: &[Record<'_>],
        dirs: &BTreeSet<PathBuf>,
        entries: &BTreeSet<PathBuf>,
    ) -> Result<Appended, Box<dyn std::error::Error + Send + Sync>> {
        Journal::append(self, records, dirs, entries).map_err(Into::into)
    }

    fn id(&self) -> &str {
        &self.id
    }

    fn last_seq(&self) -> u64 {
        self.lock().next_seq - 1
    }

    fn index_durable(&self, seq: u64) {
        let mut state = self.lock();
        state.durable_through = state.durable_through.max(seq);
    }
}

impl Journal {
    /// Recover from the journal of `store` (filesystem blobs) against `index` (see the
    /// module documentation), then make it ready to record: `None` when there is no room for
    /// it on the data directory's filesystem (the group commits then fsync each file).
    pub async fn open(
        store: &BlobStore,
        index: &dyn Index,
    ) -> Result<(Option<Journal>, Recovered), JournalError> {
        let dir = store.data_dir().join("journal");
        let scanned = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || {
                let id = journal_id(&dir)?;
                let mut found = Vec::new();
                let mut files = Vec::new();
                for i in 0..2 {
                    let path = file_path(&dir, i);
                    let file = match std::fs::File::open(&path) {
                        Ok(file) => file,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(io_err(&path)(e)),
                    };
                    scan(i, &path, &file, &mut found)?;
                    files.push((i, file));
                }
                Ok::<_, JournalError>((id, files, found))
            })
            .await
            .map_err(task_failed)??
        };
        let (id, files, found) = scanned;
        // The index holds the rows of every record up to `indexed` (a power loss takes
        // only a suffix of its transactions); those after it lost theirs, or never had them.
        let indexed = index.ingest_journal_seq(&id).await?;
        let mut keys: Vec<String> = found.iter().map(|f| f.key.clone()).collect();
        keys.sort();
        keys.dedup();
        let mut in_use = HashSet::new();
        for chunk in keys.chunks(500) {
            in_use.extend(index.blob_keys_in_use(chunk).await?);
        }
        let redo_keys: HashSet<String> = found
            .iter()
            .filter(|f| f.flags & REDO != 0 && f.seq.is_some_and(|seq| seq > indexed))
            .filter(|f| !in_use.contains(&f.key))
            .map(|f| f.key.clone())
            .collect();
        let last = found.iter().filter_map(|f| f.seq).max().unwrap_or(0);
        let records = found.len();
        let (store2, dir2) = (store.clone(), dir.clone());
        // The blobs of indexed instances and of those to index again, whole and durable;
        // the bytes of those to index again.
        let (files, restored, again) = tokio::task::spawn_blocking(move || {
            let wanted = |f: &Found| in_use.contains(&f.key) || redo_keys.contains(&f.key);
            let restored = restore(&store2, &files, &found, wanted)?;
            let mut again = Vec::new();
            for record in found.iter().filter(|f| redo_keys.contains(&f.key)) {
                if again.iter().any(|(k, _, _)| k == &record.key) {
                    continue;
                }
                let Some((_, journal)) = files.iter().find(|(i, _)| *i == record.file) else {
                    continue;
                };
                let mut data = vec![0u8; record.data_len as usize];
                journal
                    .read_exact_at(&mut data, record.data_at)
                    .map_err(io_err(&file_path(&dir2, record.file)))?;
                again.push((record.key.clone(), record.seq, bytes::Bytes::from(data)));
            }
            again.sort_by_key(|(_, seq, _)| *seq);
            Ok::<_, JournalError>((files, restored, again))
        })
        .await
        .map_err(task_failed)??;
        let reindexed = reindex(index, &id, again).await?;
        // Whatever the index holds now is made durable (after a `kill -9` the last
        // transactions may be in the page cache only) before any record is written over.
        let next_seq = indexed.max(last) + 1;
        index.sync_ingest_journal(&id, next_seq - 1).await?;
        let store = store.clone();
        let journal = tokio::task::spawn_blocking(move || {
            drop(files);
            let journal = make_files(&dir)?.map(|(paths, files, sizes)| Journal {
                id,
                paths,
                files,
                sizes,
                durable_dirs: store.durable_dirs_handle(),
                state: Mutex::new(State {
                    current: 0,
                    head: 0,
                    unsynced: Default::default(),
                    checkpoint: None,
                    broken: false,
                    next_seq,
                    max_seq: [0; 2],
                    durable_through: next_seq - 1,
                }),
            });
            Ok::<_, JournalError>(journal)
        })
        .await
        .map_err(task_failed)??;
        let recovered = Recovered {
            records,
            restored,
            reindexed,
        };
        if restored > 0 {
            tracing::warn!(
                restored,
                records,
                "ingest journal: blob files of acknowledged instances were lost (power loss?) \
                 and have been written again from the journal"
            );
        }
        if reindexed > 0 {
            tracing::warn!(
                reindexed,
                records,
                "ingest journal: index rows of stored instances were lost (power loss?) and \
                 have been written again from the journal"
            );
        }
        if journal.is_none() {
            tracing::warn!(
                "no room for the ingest journal on the data directory's filesystem: each \
                 stored instance's file is fsynced before its answer instead"
            );
        }
        Ok((journal, recovered))
    }

    /// Record `records` (blobs placed at their keys, not yet fsynced) and make the records
    /// durable: one `fdatasync` of the journal (two when the group fills a file). `dirs` are
    /// the directories whose entries changed, `entries` those whose own entry a checkpoint
    /// makes durable. `Err`: nothing can be said of the records; the caller makes the
    /// blobs durable itself.
    pub fn append(
        &self,
        records: &[Record<'_>],
        dirs: &BTreeSet<PathBuf>,
        entries: &BTreeSet<PathBuf>,
    ) -> Result<Appended, JournalError> {
        let mut state = self.lock();
        if state.broken {
            return Err(JournalError::Unusable("a checkpoint failed".into()));
        }
        let mut appended = Appended::default();
        let mut written = [false; 2];
        for record in records {
            let data_len: u64 = record.pieces.iter().map(|p| p.len() as u64).sum();
            let len = record_len(record.key, data_len);
            if len > self.sizes[0].min(self.sizes[1]) || record.key.len() as u64 > MAX_KEY {
                return Err(JournalError::Unusable(format!(
                    "record of {len} bytes does not fit"
                )));
            }
            if state.head + len > self.sizes[state.current] {
                let full = state.current;
                if written[full] {
                    self.files[full]
                        .sync_data()
                        .map_err(io_err(&self.paths[full]))?;
                    written[full] = false;
                }
                self.switch(&mut state)?;
                appended.switched = true;
            }
            let (at, file, seq) = (state.head, state.current, state.next_seq);
            state.next_seq += 1;
            self.write_record(file, at, record, data_len, seq)?;
            state.head += len;
            state.max_seq[file] = seq;
            appended.last_seq = seq;
            written[file] = true;
            let unsynced = &mut state.unsynced[file];
            unsynced.files.push(record.path.to_path_buf());
            unsynced.dirs.extend(dirs.iter().cloned());
            unsynced.entries.extend(entries.iter().cloned());
        }
        for (file, written) in written.into_iter().enumerate() {
            if written {
                self.files[file]
                    .sync_data()
                    .map_err(io_err(&self.paths[file]))?;
            }
        }
        Ok(appended)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn write_record(
        &self,
        file: usize,
        at: u64,
        record: &Record<'_>,
        data_len: u64,
        seq: u64,
    ) -> Result<(), JournalError> {
        let key = record.key.as_bytes();
        let pieces: Vec<&[u8]> = record.pieces.iter().map(|p| &p[..]).collect();
        let flags = if record.redo { REDO } else { 0 };
        let crc = crc_of(key, &pieces, data_len, Some((seq, flags)));
        let mut head = Vec::with_capacity(HEADER as usize + key.len());
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&(key.len() as u32).to_le_bytes());
        head.extend_from_slice(&crc.to_le_bytes());
        head.extend_from_slice(&data_len.to_le_bytes());
        head.extend_from_slice(&seq.to_le_bytes());
        head.extend_from_slice(&flags.to_le_bytes());
        head.extend_from_slice(&[0; 4]);
        head.extend_from_slice(key);
        let (journal, path) = (&self.files[file], &self.paths[file]);
        journal.write_all_at(&head, at).map_err(io_err(path))?;
        let mut offset = at + head.len() as u64;
        for piece in pieces {
            journal.write_all_at(piece, offset).map_err(io_err(path))?;
            offset += piece.len() as u64;
        }
        Ok(())
    }

    /// The current file is full: checkpoint it on a thread of its own and go on in the
    /// other, once that one's checkpoint has finished.
    fn switch(&self, state: &mut State) -> Result<(), JournalError> {
        let other = 1 - state.current;
        if state.max_seq[other] > state.durable_through {
            // Its records' index rows may still be lost to a power cut: the caller makes
            // this group durable on its own, and its index commit waits for its flush.
            return Err(JournalError::Unusable(format!(
                "the index rows of the records in {} are not durable yet",
                self.paths[other].display()
            )));
        }
        if let Some(running) = state.checkpoint.take() {
            match running.join() {
                Ok(Ok(())) => {}
                Ok(Err(failure)) => {
                    let (e, back) = *failure;
                    tracing::warn!(error = %e, "ingest journal checkpoint failed; retrying");
                    state.unsynced[other] = back;
                }
                Err(_) => {
                    state.broken = true;
                    return Err(JournalError::Unusable("a checkpoint thread died".into()));
                }
            }
        }
        if !state.unsynced[other].is_empty() {
            // A failed checkpoint: again, now; the file stays until it succeeds.
            let unsynced = std::mem::take(&mut state.unsynced[other]);
            if let Err(failure) = checkpoint(unsynced, &self.durable_dirs) {
                let (e, back) = *failure;
                state.unsynced[other] = back;
                return Err(e);
            }
        }
        let full = state.current;
        let unsynced = std::mem::take(&mut state.unsynced[full]);
        let durable_dirs = self.durable_dirs.clone();
        state.checkpoint = Some(std::thread::spawn(move || {
            checkpoint(unsynced, &durable_dirs)
        }));
        state.current = other;
        state.head = 0;
        state.max_seq[other] = 0;
        Ok(())
    }
}

/// Write the blobs of the `wanted` records (indexed instances, and those to index again)
/// that are not whole from their records (`files`: the journal files found, by number), then
/// fsync every such blob and its directories.
fn restore(
    store: &BlobStore,
    files: &[(usize, std::fs::File)],
    found: &[Found],
    wanted: impl Fn(&Found) -> bool,
) -> Result<usize, JournalError> {
    let mut restored = 0;
    let mut blobs = Vec::new();
    let mut dirs = BTreeSet::new();
    for record in found.iter().filter(|f| wanted(f)) {
        let path = store.checked_path(&record.key)?;
        if !is_whole(&path, record) {
            let Some((_, journal)) = files.iter().find(|(i, _)| *i == record.file) else {
                continue;
            };
            let mut data = vec![0u8; record.data_len as usize];
            journal
                .read_exact_at(&mut data, record.data_at)
                .map_err(io_err(&path))?;
            let mut blob = store.begin_blocking()?;
            blob.write(&data)?;
            blob.sync_data()?;
            let parent = path.parent().unwrap_or(store.root()).to_path_buf();
            std::fs::create_dir_all(&parent).map_err(io_err(&parent))?;
            blob.replace(&path)?;
            restored += 1;
        }
        let mut dir = path.parent();
        while let Some(d) = dir {
            dirs.insert(d.to_path_buf());
            if d == store.root() {
                break;
            }
            dir = d.parent();
        }
        blobs.push(path);
    }
    super::blob::fsync_all_at_once(&blobs, &dirs)
        .map_err(|(path, source)| JournalError::Io { path, source })?;
    Ok(restored)
}

fn task_failed(e: tokio::task::JoinError) -> JournalError {
    JournalError::Unusable(format!("recovery task failed: {e}"))
}

/// The journal's id, made (random, durable) the first time.
fn journal_id(dir: &Path) -> Result<String, JournalError> {
    let path = dir.join("ingest.id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&path)(e)),
    }
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    // 128 bits from the OS random source (the hasher's keys) and the time.
    let id: String = (0..2u64)
        .map(|i| {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(i);
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or_default(),
            );
            format!("{:016x}", h.finish())
        })
        .collect();
    let made = dir.join("ingest.id.new");
    std::fs::write(&made, &id).map_err(io_err(&made))?;
    std::fs::File::open(&made)
        .and_then(|f| f.sync_all())
        .map_err(io_err(&made))?;
    std::fs::rename(&made, &path).map_err(io_err(&path))?;
    sync_dir(dir)?;
    if let Some(up) = dir.parent() {
        sync_dir(up)?;
    }
    Ok(id)
}

/// Index again the instances whose journal records (`again`: key, number, Part 10 bytes, in
/// record order) have no index row after the mark: parsed from the journal's bytes and
/// upserted as the ingest would, in one transaction that waits for its flush; one by one
/// when the index refuses the lot (an instance it refuses again is left out, logged).
async fn reindex(
    index: &dyn Index,
    id: &str,
    again: Vec<(String, Option<u64>, bytes::Bytes)>,
) -> Result<usize, JournalError> {
    let Some(last) = again.iter().filter_map(|(_, seq, _)| *seq).max() else {
        return Ok(0);
    };
    let mut records = Vec::with_capacity(again.len());
    for (key, _, data) in again {
        match super::ingest::record_of(std::slice::from_ref(&data)) {
            Ok(mut record) => {
                record.blob_key = key;
                record.size_bytes = data.len() as u64;
                records.push(record);
            }
            Err(failure) => tracing::warn!(
                key,
                reason = %failure.reason,
                "ingest journal: a record does not parse; not indexed again"
            ),
        }
    }
    if records.is_empty() {
        return Ok(0);
    }
    if index
        .upsert_instances_journaled(&records, id, last, true)
        .await
        .is_ok()
    {
        return Ok(records.len());
    }
    let mut reindexed = 0;
    for record in &records {
        match index
            .upsert_instances_journaled(std::slice::from_ref(record), id, 0, true)
            .await
        {
            Ok(_) => reindexed += 1,
            Err(e) if e.is_unavailable() => return Err(e.into()),
            Err(e) => tracing::warn!(
                key = record.blob_key,
                error = %e,
                "ingest journal: the index refuses an instance of the journal"
            ),
        }
    }
    Ok(reindexed)
}

fn file_path(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("ingest-{i}.journal"))
}

/// fsync the blobs and directories recorded in a full journal file, all at once.
fn checkpoint(
    unsynced: Unsynced,
    durable_dirs: &Mutex<HashSet<PathBuf>>,
) -> Result<(), CheckpointFailure> {
    match super::blob::fsync_all_at_once(&unsynced.files, &unsynced.dirs) {
        Ok(()) => {
            let mut durable = durable_dirs.lock().unwrap_or_else(|e| e.into_inner());
            if durable.len() + unsynced.entries.len() > super::blob::DURABLE_DIRS_REMEMBERED {
                durable.clear();
            }
            durable.extend(unsynced.entries);
            Ok(())
        }
        Err((path, source)) => Err(Box::new((JournalError::Io { path, source }, unsynced))),
    }
}

/// Open the two journal files under `dir` for recording, making or growing them (written
/// with zeros from their end, fsynced, their entries fsynced) to
/// `min(JOURNAL_FILE_BYTES, free space / 16)`; content already there is never written over
/// (a file larger than that keeps its size). `None` when a file would stay below
/// [`MIN_FILE_BYTES`] (a nearly full filesystem).
#[allow(clippy::type_complexity)]
fn make_files(
    dir: &Path,
) -> Result<Option<([PathBuf; 2], [std::fs::File; 2], [u64; 2])>, JournalError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let available = rustix::fs::statvfs(dir)
        .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
        .map_err(|e| io_err(dir)(e.into()))?;
    let target = JOURNAL_FILE_BYTES.min(available / 16) / PAGE * PAGE;
    let mut made = Vec::new();
    for i in 0..2 {
        let path = file_path(dir, i);
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let size = (len / PAGE * PAGE).max(target);
        if size < MIN_FILE_BYTES {
            return Ok(None);
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err(&path))?;
        if len < size {
            // Blocks allocated and written now, so that a record's fdatasync later changes
            // no metadata (no file-system journal commit).
            let zeros = vec![0u8; 1 << 20];
            let mut at = len;
            while at < size {
                let n = (size - at).min(zeros.len() as u64) as usize;
                if let Err(e) = file.write_all_at(&zeros[..n], at) {
                    if e.raw_os_error() == Some(28) {
                        // ENOSPC: no journal; what was there stays.
                        let _ = file.set_len(len);
                        return Ok(None);
                    }
                    return Err(io_err(&path)(e));
                }
                at += n as u64;
            }
            file.sync_all().map_err(io_err(&path))?;
            sync_dir(dir)?;
            if let Some(up) = dir.parent() {
                sync_dir(up)?;
            }
        }
        made.push((path, file, size));
    }
    let [(p0, f0, s0), (p1, f1, s1)]: [(PathBuf, std::fs::File, u64); 2] = made
        .try_into()
        .map_err(|_| JournalError::Unusable("two journal files".into()))?;
    Ok(Some(([p0, p1], [f0, f1], [s0, s1])))
}

fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// The valid records of journal file `i`, from its start to the first that is not.
fn scan(
    i: usize,
    path: &Path,
    file: &std::fs::File,
    found: &mut Vec<Found>,
) -> Result<(), JournalError> {
    let size = file.metadata().map_err(io_err(path))?.len();
    let mut at = 0u64;
    let mut head = [0u8; HEADER as usize];
    while at + HEADER <= size {
        file.read_exact_at(&mut head, at).map_err(io_err(path))?;
        let header = match &head[..8] {
            m if m == MAGIC => HEADER,
            m if m == MAGIC_V1 => HEADER_V1,
            _ => break,
        };
        let key_len = u32::from_le_bytes(head[8..12].try_into().unwrap_or_default()) as u64;
        let crc = u32::from_le_bytes(head[12..16].try_into().unwrap_or_default());
        let data_len = u64::from_le_bytes(head[16..24].try_into().unwrap_or_default());
        let (seq, flags) = if header == HEADER {
            let seq = u64::from_le_bytes(head[24..32].try_into().unwrap_or_default());
            let flags = u32::from_le_bytes(head[32..36].try_into().unwrap_or_default());
            (Some(seq), flags)
        } else {
            (None, 0)
        };
        let fits =
            key_len <= MAX_KEY && data_len <= size && at + header + key_len + data_len <= size;
        if !fits {
            break;
        }
        let mut key = vec![0u8; key_len as usize];
        file.read_exact_at(&mut key, at + header)
            .map_err(io_err(path))?;
        let data_at = at + header + key_len;
        let mut data = vec![0u8; data_len as usize];
        file.read_exact_at(&mut data, data_at)
            .map_err(io_err(path))?;
        if crc_of(&key, &[&data], data_len, seq.map(|s| (s, flags))) != crc {
            break;
        }
        let Ok(key) = String::from_utf8(key) else {
            break;
        };
        at += record_len_with(header, &key, data_len);
        found.push(Found {
            file: i,
            key,
            data_at,
            data_len,
            crc,
            seq,
            flags,
        });
    }
    Ok(())
}

/// Whether the blob file at `path` holds exactly the record's bytes.
fn is_whole(path: &Path, record: &Found) -> bool {
    let Ok(data) = std::fs::read(path) else {
        return false;
    };
    data.len() as u64 == record.data_len
        && crc_of(
            record.key.as_bytes(),
            &[&data],
            record.data_len,
            record.seq.map(|s| (s, record.flags)),
        ) == record.crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// Records survive what a power loss can do to the blob files and to the index's last
    /// transactions: after blobs were lost or truncated, opening the journal writes the
    /// indexed ones again; a record after the index's mark whose row was lost is indexed
    /// again (its blob written too); a record up to the mark that no row names (deleted
    /// since) is left alone; a torn record ends the scan.
    #[tokio::test(flavor = "multi_thread")]
    async fn open_restores_indexed_blobs_from_their_records() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(&dir.path().join("data")).await.unwrap();
        let url = format!("sqlite://{}", dir.path().join("index.db").display());
        let index = crate::store::index::SqliteIndex::open(&url).await.unwrap();
        let args = crate::testdata::GenerateArgs {
            ct_slices: 3,
            mr_slices: 0,
            patients: 1,
            frame_size: 64,
            ..crate::testdata::GenerateArgs::with_defaults(dir.path().join("src"))
        };
        let files = crate::testdata::generate(&args).unwrap();
        let (journal, recovered) = Journal::open(&store, &index).await.unwrap();
        let journal = journal.expect("room for a journal");
        assert_eq!(recovered, Recovered::default());
        let mut stored = Vec::new();
        for file in &files {
            let bytes = Bytes::from(std::fs::read(&file.path).unwrap());
            let obj = dicom_object::open_file(&file.path).unwrap();
            let mut record = crate::store::InstanceRecord::from_object(&obj);
            record.blob_key = BlobStore::key_for(
                record.study_instance_uid(),
                record.series_instance_uid(),
                record.sop_instance_uid(),
            )
            .unwrap();
            record.size_bytes = bytes.len() as u64;
            let path = store.path(&record.blob_key);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
            let pieces = [bytes.slice(..100), bytes.slice(100..)];
            journal
                .append(
                    &[Record {
                        key: &record.blob_key,
                        pieces: &pieces,
                        path: &path,
                        redo: true,
                    }],
                    &BTreeSet::new(),
                    &BTreeSet::new(),
                )
                .unwrap();
            stored.push((record, bytes, path));
        }
        // The first two are indexed with the mark (records 1 and 2) and the second is
        // deleted since; the third's index transaction was lost to the power cut.
        index
            .upsert_instances_journaled(
                &[stored[0].0.clone(), stored[1].0.clone()],
                &journal.id,
                2,
                false,
            )
            .await
            .unwrap();
        index
            .remove_instance(stored[1].0.sop_instance_uid())
            .await
            .unwrap();
        // What a power loss may leave: one file gone, one short, one gone.
        std::fs::remove_file(&stored[0].2).unwrap();
        std::fs::write(&stored[1].2, &stored[1].1[..10]).unwrap();
        std::fs::remove_file(&stored[2].2).unwrap();
        // A torn record after them: ignored, and it ends the scan.
        journal.files[0]
            .write_all_at(MAGIC, journal.state.lock().unwrap().head)
            .unwrap();
        drop(journal);

        let (journal, recovered) = Journal::open(&store, &index).await.unwrap();
        assert_eq!(
            recovered,
            Recovered {
                records: 3,
                restored: 2,
                reindexed: 1,
            }
        );
        for i in [0, 2] {
            let (record, bytes, path) = &stored[i];
            assert_eq!(&std::fs::read(path).unwrap(), bytes, "restored byte-exact");
            let located = index
                .locate(&crate::model::Selection {
                    sop_instance_uids: vec![record.sop_instance_uid().to_string()],
                    ..Default::default()
                })
                .await
                .unwrap();
            assert_eq!(located.len(), 1, "indexed");
            assert_eq!(located[0].blob_key, record.blob_key);
            assert_eq!(located[0].size_bytes, bytes.len() as u64);
        }
        assert_eq!(
            std::fs::read(&stored[1].2).unwrap().len(),
            10,
            "a deleted instance's record is not restored"
        );
        let deleted = index
            .locate(&crate::model::Selection {
                sop_instance_uids: vec![stored[1].0.sop_instance_uid().to_string()],
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(deleted.is_empty(), "nor indexed again");
        assert_eq!(
            std::fs::read_dir(dir.path().join("data/tmp"))
                .unwrap()
                .count(),
            0
        );
        drop(journal);
        // Whole files, the mark past every record: nothing to do the next time.
        let (_, recovered) = Journal::open(&store, &index).await.unwrap();
        assert_eq!((recovered.restored, recovered.reindexed), (0, 0));
    }

    /// Records fill one file, the committer goes on in the other and the full one is
    /// checkpointed; records never straddle the end of a file; a file is written over only
    /// once the index rows of its records are durable.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_full_file_is_checkpointed_and_the_other_used() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(&dir.path().join("data")).await.unwrap();
        let url = format!("sqlite://{}", dir.path().join("index.db").display());
        let index = crate::store::index::SqliteIndex::open(&url).await.unwrap();
        let (journal, _) = Journal::open(&store, &index).await.unwrap();
        let journal = journal.expect("room for a journal");
        let data = Bytes::from(vec![7u8; 3 << 20]);
        let path = store.path("1.2/3.4/5.6.x.dcm");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &data).unwrap();
        for _ in 0..12 {
            let appended = journal
                .append(
                    &[Record {
                        key: "1.2/3.4/5.6.x.dcm",
                        pieces: std::slice::from_ref(&data),
                        path: &path,
                        redo: true,
                    }],
                    &BTreeSet::from([path.parent().unwrap().to_path_buf()]),
                    &BTreeSet::new(),
                )
                .unwrap();
            // The committer's index commit after a switch waits for its flush.
            if appended.switched {
                super::super::blob::BlobLog::index_durable(&journal, appended.last_seq);
            }
        }
        // A file whose records' index rows are not durable is not written over.
        let mut state = journal.lock();
        state.durable_through = 0;
        assert!(journal.switch(&mut state).is_err());
        state.durable_through = u64::MAX;
        drop(state);
        let state = journal.state.lock().unwrap();
        // 5 records of 3 MiB fit in a 16 MiB file: 12 went to files 0, 1, 0.
        assert_eq!(state.current, 0);
        assert_eq!(state.head, 2 * record_len("1.2/3.4/5.6.x.dcm", 3 << 20));
        assert!(!state.broken);
    }
}
