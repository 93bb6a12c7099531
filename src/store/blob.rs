//! Filesystem blob store: one file per instance under `data_dir/blobs/study/series/sop.dcm`.
//!
//! Writes go to a fresh temp file under `data_dir/tmp` ([`PendingBlob`]), are fsynced, and
//! are renamed into place ([`PendingBlob::commit`]), after which the parent directory is
//! fsynced too: a blob is either whole or absent, also after a crash. Whatever a crash leaves
//! in `tmp` is deleted by [`BlobStore::open`]. In the serving process the fronts' small
//! instances are made durable through the ingest journal instead (`store::journal`): their
//! files are fsynced later, in bulk, and written again from the journal at start if a power
//! loss took them.
//!
//! Every stored version of an instance has a key of its own
//! (`study/series/sop.VERSION.dcm`, [`BlobStore::key_for`]): a file, once renamed into
//! place, is never overwritten; the index says which version is the instance, and a file no
//! row names is an orphan that `store::recovery` removes at the next start.

use super::object::{Remote, S3Url};
use crate::config::StorageConfig;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncWriteExt, BufWriter};

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob store I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid blob key: {0}")]
    BadKey(String),
    #[error("object storage error on {key:?}: {message}")]
    Remote { key: String, message: String },
}

impl From<super::object::ObjectError> for BlobError {
    fn from(e: super::object::ObjectError) -> Self {
        match e {
            super::object::ObjectError::Remote { key, message } => {
                BlobError::Remote { key, message }
            }
            super::object::ObjectError::Io { path, source } => BlobError::Io { path, source },
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BlobError + '_ {
    move |source| BlobError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Size of the write buffer of a [`PendingBlob`].
const WRITE_BUFFER: usize = 256 * 1024;

/// Longest UID accepted in a key (UIDs are at most 64 characters; some systems exceed that).
const MAX_UID_LEN: usize = 128;

/// Most directories remembered as durable (see `BlobStore::durable_dirs`); past it the set
/// starts again (one entry per series directory).
pub(super) const DURABLE_DIRS_REMEMBERED: usize = 100_000;

/// Threads that fsync the files and directories of one group commit at once
/// ([`BlobStore::commit_group_blocking`]); they wait on the disk, not the CPU.
const FSYNC_THREADS: usize = 16;

/// Most bytes per `writev` of a blob ([`BlockingBlob::write_all_vectored`]), each write
/// starting at a multiple of it. The page cache sizes the folio it allocates for a write by
/// the write's length (ext4 with large folios, Linux 6.x): one writev of a whole 512 KiB
/// instance asks for an order-7 folio, which on a host whose free memory is fragmented (a
/// page cache full of other files) sends every such allocation into direct compaction (up
/// to 22 % of beeldbrug's CPU on a cache fill), and the copy into large folios was slow
/// even without it (12-45 % of the samples, against 6-9 % into small ones). At 32 KiB a
/// folio is at most order 3, the largest the allocator does not count as costly
/// (`PAGE_ALLOC_COSTLY_ORDER`); 16 and 64 KiB measured the same as 32 (docs/performance.md,
/// "The cache fill without direct compaction").
const WRITE_MAX: usize = 32 * 1024;

/// Distinguishes temp files created by this process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The blob store the fronts and sources share, whatever holds the blobs: the filesystem
/// (`data_dir/blobs`), or an S3-compatible bucket (`storage.blobs = "s3://..."`,
/// [`super::object`]) with `data_dir/blobs` as this node's local copies. Either way a blob
/// is read as a local file (`core::stored`), written through a [`PendingBlob`] and made
/// durable by its commit, so no front knows which backend it is.
#[derive(Debug, Clone)]
pub struct BlobStore {
    /// `data_dir/blobs`
    root: PathBuf,
    /// `data_dir/tmp`
    tmp: PathBuf,
    /// The bucket, when blobs live in object storage.
    remote: Option<Arc<Remote>>,
    /// Directories under the root whose own entry a group commit has made durable (their
    /// parent fsynced after they were created): a later group need not fsync the parent
    /// again for them ([`commit_group_blocking`](Self::commit_group_blocking)).
    durable_dirs: Arc<std::sync::Mutex<std::collections::HashSet<PathBuf>>>,
    /// The ingest journal of the serving process (`store::journal`): a group commit makes
    /// the instances it holds in memory durable there instead of fsyncing their files.
    journal: Option<Arc<dyn BlobLog>>,
    /// Downloads from object storage in progress, by key: concurrent readers of one instance
    /// this node has no copy of wait for one download instead of each fetching the object
    /// (under load every request for a study not yet here did, multiplying the bucket's work).
    fetching: Arc<std::sync::Mutex<Fetching>>,
}

/// One gate per key being downloaded; an entry dies with the last caller holding its gate.
type Fetching = std::collections::HashMap<String, std::sync::Weak<tokio::sync::Mutex<()>>>;

/// A download's temp file, removed unless placed: also when the reading request goes away
/// mid-download (its future dropped), which would otherwise leave it in `tmp/` until a restart.
struct TempGuard(Option<PathBuf>);

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A UID usable as a path component: dot-separated runs of digits.
fn valid_uid(uid: &str) -> bool {
    !uid.is_empty()
        && uid.len() <= MAX_UID_LEN
        && uid
            .split('.')
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
}

/// A key that stays inside the root: relative, `/`-separated components of
/// `[0-9A-Za-z._-]` that do not start with a dot.
fn check_key(key: &str) -> Result<(), BlobError> {
    let ok = !key.is_empty()
        && key.split('/').all(|c| {
            !c.is_empty()
                && !c.starts_with('.')
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        })
        && Path::new(key)
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
    if ok {
        Ok(())
    } else {
        Err(BlobError::BadKey(key.to_string()))
    }
}

/// fsync a directory, so that entries created or renamed in it are durable.
fn sync_dir_blocking(dir: &Path) -> Result<(), BlobError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

impl BlobStore {
    /// Open the store under `data_dir`, creating `blobs` and `tmp` as needed, and delete
    /// everything left in `tmp` (half-written blobs of a previous run).
    pub async fn open(data_dir: &Path) -> Result<Self, BlobError> {
        let root = data_dir.join("blobs");
        let tmp = data_dir.join("tmp");
        for dir in [&root, &tmp] {
            tokio::fs::create_dir_all(dir).await.map_err(io_err(dir))?;
        }
        let mut entries = tokio::fs::read_dir(&tmp).await.map_err(io_err(&tmp))?;
        while let Some(entry) = entries.next_entry().await.map_err(io_err(&tmp))? {
            let path = entry.path();
            let is_dir = entry.file_type().await.map(|t| t.is_dir()).unwrap_or(false);
            let removed = if is_dir {
                tokio::fs::remove_dir_all(&path).await
            } else {
                tokio::fs::remove_file(&path).await
            };
            match removed {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(BlobError::Io { path, source: e }),
            }
        }
        Ok(BlobStore {
            root,
            tmp,
            remote: None,
            durable_dirs: Arc::default(),
            journal: None,
            fetching: Arc::default(),
        })
    }

    /// Open the store `storage` configures: [`open`](Self::open) under `data_dir`, with the
    /// bucket of `storage.blobs = "s3://bucket/prefix"` as the blobs' durable home when set.
    pub async fn open_config(storage: &StorageConfig) -> Result<Self, BlobError> {
        let mut store = Self::open(&storage.data_dir).await?;
        if let Some(url) = S3Url::parse(&storage.blobs) {
            let url = url.map_err(|message| BlobError::Remote {
                key: String::new(),
                message,
            })?;
            store.remote = Some(Arc::new(Remote::open(url, &storage.s3)?));
        }
        Ok(store)
    }

    /// This store with the ingest journal `journal` (opened and recovered on it): the group
    /// commits of the fronts' ingest record small instances there (`store::journal`).
    pub fn with_journal(mut self, journal: impl BlobLog + 'static) -> Self {
        self.journal = Some(Arc::new(journal));
        self
    }

    pub(super) fn durable_dirs_handle(
        &self,
    ) -> Arc<std::sync::Mutex<std::collections::HashSet<PathBuf>>> {
        self.durable_dirs.clone()
    }

    pub(super) fn root(&self) -> &Path {
        &self.root
    }

    /// [`path`](Self::path) of a checked key.
    pub(super) fn checked_path(&self, key: &str) -> Result<PathBuf, BlobError> {
        check_key(key)?;
        Ok(self.path(key))
    }

    /// Where the blobs live, for logs and `/ready`.
    pub fn describe(&self) -> String {
        match &self.remote {
            Some(remote) => remote.describe(),
            None => self.root.display().to_string(),
        }
    }

    /// Whether the blobs live in object storage (the local tree holds copies).
    pub fn is_remote(&self) -> bool {
        self.remote.is_some()
    }

    /// Make sure the blob of `key` is in the local tree: on object storage, download it when
    /// this node has no copy yet (streamed into `tmp/`, then renamed into place). `Ok(false)`
    /// when there is no such blob.
    pub async fn ensure_local(&self, key: &str) -> Result<bool, BlobError> {
        check_key(key)?;
        let path = self.path(key);
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Ok(true);
        }
        let Some(remote) = &self.remote else {
            return Ok(false);
        };
        let gate = self.fetch_gate(key);
        let _turn = gate.lock().await;
        // Whoever held the gate before may have placed it.
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Ok(true);
        }
        let mut temp = TempGuard(Some(self.fresh_temp_path()));
        let temp_path = temp.0.clone().expect("just set");
        match remote.download(key, &temp_path).await? {
            false => Ok(false),
            true => {
                let parent = path.parent().unwrap_or(&self.root).to_path_buf();
                tokio::fs::create_dir_all(&parent)
                    .await
                    .map_err(io_err(&parent))?;
                tokio::fs::rename(&temp_path, &path)
                    .await
                    .map_err(io_err(&path))?;
                temp.0 = None;
                Ok(true)
            }
        }
    }

    /// The gate of `key`'s download, shared with every concurrent caller for that key.
    fn fetch_gate(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut fetching = self.fetching.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(gate) = fetching.get(key).and_then(std::sync::Weak::upgrade) {
            return gate;
        }
        // Forget finished downloads now and then, so the map stays as small as what runs.
        if fetching.len() >= 64 {
            fetching.retain(|_, gate| gate.strong_count() > 0);
        }
        let gate = Arc::new(tokio::sync::Mutex::new(()));
        fetching.insert(key.to_string(), Arc::downgrade(&gate));
        gate
    }

    /// [`ensure_local`](Self::ensure_local) for blocking code.
    pub fn ensure_local_blocking(&self, key: &str) -> Result<bool, BlobError> {
        check_key(key)?;
        if self.path(key).is_file() {
            return Ok(true);
        }
        match &self.remote {
            Some(remote) => remote.block_on(self.ensure_local(key)),
            None => Ok(false),
        }
    }

    /// A byte range of the blob of `key`: from the local copy when there is one, otherwise a
    /// ranged read of the object (without the rest of it).
    pub async fn read_range(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
    ) -> Result<bytes::Bytes, BlobError> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        check_key(key)?;
        let path = self.path(key);
        match (tokio::fs::File::open(&path).await, &self.remote) {
            (Ok(mut file), _) => {
                let mut buf = vec![0u8; range.end.saturating_sub(range.start) as usize];
                file.seek(std::io::SeekFrom::Start(range.start))
                    .await
                    .map_err(io_err(&path))?;
                file.read_exact(&mut buf).await.map_err(io_err(&path))?;
                Ok(buf.into())
            }
            (Err(e), Some(remote)) if e.kind() == std::io::ErrorKind::NotFound => {
                remote.get_range(key, range).await.map_err(BlobError::from)
            }
            (Err(e), _) => Err(io_err(&path)(e)),
        }
    }

    /// A fresh key for a new version of an instance's blob:
    /// `study/series/sop.VERSION.dcm`, where VERSION (time, process, counter) differs for
    /// every call. A key is never reused: a re-sent instance gets a file of its own beside
    /// the acknowledged one, which stays untouched until the index row points to the new
    /// one (see [`crate::store::ingest::index_batch`]). Each UID must be dot-separated
    /// digits (so that no key can leave the root).
    pub fn key_for(study_uid: &str, series_uid: &str, sop_uid: &str) -> Result<String, BlobError> {
        for uid in [study_uid, series_uid, sop_uid] {
            if !valid_uid(uid) {
                return Err(BlobError::BadKey(format!("{uid:?} is not a UID")));
            }
        }
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let pid = std::process::id();
        Ok(format!(
            "{study_uid}/{series_uid}/{sop_uid}.{nanos:x}-{pid:x}-{n:x}.dcm"
        ))
    }

    /// Keys of the blob files whose last modification is before `cutoff` (blocking; walks
    /// the whole tree). Files this process writes are newer than its start, so with the
    /// start as cutoff no blob of a running ingest is listed.
    /// On object storage: the objects last modified before `cutoff`, and the local copies.
    pub fn keys_modified_before(
        &self,
        cutoff: std::time::SystemTime,
    ) -> Result<Vec<String>, BlobError> {
        let mut keys = self.local_keys_modified_before(cutoff)?;
        if let Some(remote) = &self.remote {
            keys.extend(remote.block_on(remote.keys_modified_before(cutoff))?);
            keys.sort();
            keys.dedup();
        }
        Ok(keys)
    }

    fn local_keys_modified_before(
        &self,
        cutoff: std::time::SystemTime,
    ) -> Result<Vec<String>, BlobError> {
        let mut keys = Vec::new();
        let mut dirs = vec![self.root.clone()];
        while let Some(dir) = dirs.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(BlobError::Io {
                        path: dir,
                        source: e,
                    })
                }
            };
            for entry in entries {
                let entry = entry.map_err(io_err(&dir))?;
                let path = entry.path();
                let Ok(meta) = entry.metadata() else { continue };
                if meta.is_dir() {
                    dirs.push(path);
                    continue;
                }
                let old = meta.modified().map(|m| m < cutoff).unwrap_or(false);
                let key = path
                    .strip_prefix(&self.root)
                    .ok()
                    .and_then(|k| k.to_str())
                    .map(|k| k.replace(std::path::MAIN_SEPARATOR, "/"));
                if let (true, Some(key)) = (old, key) {
                    keys.push(key);
                }
            }
        }
        keys.sort();
        Ok(keys)
    }

    /// Remove the directories under the root left empty (blocking, best effort): the
    /// study and series folders of removed blobs.
    pub fn remove_empty_dirs(&self) -> usize {
        fn walk(dir: &Path, root: &Path) -> usize {
            let mut removed = 0;
            if let Ok(entries) = std::fs::read_dir(dir) {
                for entry in entries.flatten() {
                    if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        removed += walk(&entry.path(), root);
                    }
                }
            }
            if dir != root && std::fs::remove_dir(dir).is_ok() {
                removed += 1;
            }
            removed
        }
        walk(&self.root, &self.root)
    }

    /// Where the blob of `key` lives (the key is not checked here).
    pub fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    /// A temp file name not used before by this process.
    fn fresh_temp_path(&self) -> PathBuf {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        self.tmp
            .join(format!("{}-{nanos}-{n}.part", std::process::id()))
    }

    /// [`begin`](Self::begin) for blocking code: the temp file is written with plain
    /// `std::fs` writes (into the page cache: a memory copy, no hand-off per write).
    pub fn begin_blocking(&self) -> Result<BlockingBlob, BlobError> {
        loop {
            let path = self.fresh_temp_path();
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(file) => {
                    return Ok(BlockingBlob {
                        file,
                        path,
                        len: 0,
                        done: false,
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(BlobError::Io { path, source: e }),
            }
        }
    }

    /// Start writing a new blob into a fresh temp file.
    pub async fn begin(&self) -> Result<PendingBlob, BlobError> {
        loop {
            let path = self.fresh_temp_path();
            match tokio::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .await
            {
                Ok(file) => {
                    return Ok(PendingBlob {
                        file: BufWriter::with_capacity(WRITE_BUFFER, file),
                        path,
                        len: 0,
                        done: false,
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(BlobError::Io { path, source: e }),
            }
        }
    }

    /// Prove the store takes writes: a small temp file written, fsynced (a full disk may
    /// only refuse the blocks then) and deleted. For `/ready`.
    pub async fn probe_write(&self) -> Result<(), BlobError> {
        let mut blob = self.begin().await?;
        blob.write(b"beeldbrug readiness probe\n").await?;
        let blob = blob.into_blocking().await?;
        let path = blob.temp_path().to_path_buf();
        let synced = tokio::task::spawn_blocking(move || {
            let result = blob.file.sync_all();
            drop(blob); // removes the temp file
            result
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r);
        synced.map_err(|source| BlobError::Io { path, source })?;
        match &self.remote {
            Some(remote) => remote.probe_write().await.map_err(BlobError::from),
            None => Ok(()),
        }
    }

    /// Upload the local copies of `keys` (skipping those gone meanwhile: superseded).
    async fn upload_all(&self, remote: &Remote, keys: &[String]) -> Result<(), BlobError> {
        use futures::TryStreamExt;
        futures::stream::iter(keys.iter().map(Ok::<_, BlobError>))
            .try_for_each_concurrent(4, |key| async move {
                check_key(key)?;
                let path = self.path(key);
                if !tokio::fs::try_exists(&path).await.unwrap_or(false) {
                    return Ok(());
                }
                remote
                    .upload_file(&path, key)
                    .await
                    .map_err(BlobError::from)
            })
            .await
    }

    /// The data directory (parent of `blobs` and `tmp`).
    pub fn data_dir(&self) -> &Path {
        self.root.parent().unwrap_or(&self.root)
    }

    pub async fn open_read(&self, key: &str) -> Result<tokio::fs::File, BlobError> {
        check_key(key)?;
        if self.remote.is_some() {
            self.ensure_local(key).await?;
        }
        let path = self.path(key);
        tokio::fs::File::open(&path).await.map_err(io_err(&path))
    }

    /// [`open_read`](Self::open_read) for blocking code.
    /// Make blobs stored unsynced durable: fsync each file, then each directory holding
    /// them (blocking; one pass for a whole retrieve).
    /// On object storage: upload them (a few at a time), the local copies need no fsync.
    pub fn sync_blocking(&self, keys: &[String]) -> Result<(), BlobError> {
        if let Some(remote) = &self.remote {
            return remote.block_on(self.upload_all(remote, keys));
        }
        let mut dirs = std::collections::BTreeSet::new();
        for key in keys {
            let path = self.path(key);
            match std::fs::File::open(&path).and_then(|f| f.sync_all()) {
                Ok(()) => {}
                // Superseded by a newer version of the instance meanwhile (and removed).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(BlobError::Io { path, source: e }),
            }
            let mut dir = path.parent();
            while let Some(d) = dir {
                if !dirs.insert(d.to_path_buf()) || d == self.root {
                    break;
                }
                dir = d.parent();
            }
        }
        for dir in dirs.iter().rev() {
            sync_dir_blocking(dir)?;
        }
        Ok(())
    }

    /// The local copy of the blob of `key`, opened for reading without fetching it from
    /// object storage; `Ok(None)` when there is none.
    pub fn open_local_blocking(&self, key: &str) -> Result<Option<std::fs::File>, BlobError> {
        check_key(key)?;
        let path = self.path(key);
        match std::fs::File::open(&path) {
            Ok(file) => Ok(Some(file)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Whether blobs live in object storage (a node reads its local copies, fetched on demand).
    pub fn is_object_storage(&self) -> bool {
        self.remote.is_some()
    }

    /// Make a group of written temp files durable under their keys (fresh keys from
    /// [`key_for`](Self::key_for): nothing is replaced), the group commit of the fronts'
    /// ingest (`store::ingest::Committer`, issue 16 section 5). Blocking; one result per
    /// item, in order. On the filesystem only (on object storage each blob is durable once
    /// uploaded, [`BlockingBlob::commit`]).
    ///
    /// Each file is first renamed into place (creating its series directory when needed),
    /// then all files and every directory whose entries changed are fsynced **at once**, from
    /// [`FSYNC_THREADS`] threads: the filesystem commits them in one journal transaction
    /// with one cache flush, where one `fsync` after another pays a flush each (ext4 on this
    /// VM: ~0.5 ms per instance in a batch of 8 against ~3.4 ms; see docs/performance.md).
    /// A file whose data is not durable yet sits at its key, but no index row names it: a
    /// crash leaves an orphan, removed at the next start (`store::recovery`). An item whose
    /// file or directory cannot be made durable has its file removed again and fails.
    pub fn commit_group_blocking(
        &self,
        group: Vec<(BlockingBlob, String)>,
    ) -> Vec<Result<u64, BlobError>> {
        let mut results: Vec<Result<u64, BlobError>> = Vec::with_capacity(group.len());
        // The placed files: their position in `results`, the open temp file, its new path.
        let mut placed: Vec<(usize, BlockingBlob, PathBuf)> = Vec::with_capacity(group.len());
        let mut dirs = std::collections::BTreeSet::new();
        // Directories whose own entry this group makes durable (their parent is in `dirs`).
        let mut entries = std::collections::BTreeSet::new();
        for (at, (mut blob, key)) in group.into_iter().enumerate() {
            match self.place(&mut blob, &key, &mut dirs, &mut entries) {
                Ok(target) => {
                    results.push(Ok(blob.len));
                    placed.push((at, blob, target));
                }
                // Dropped: its temp file is removed.
                Err(e) => results.push(Err(e)),
            }
        }
        let dir_files: Vec<(PathBuf, std::io::Result<std::fs::File>)> = dirs
            .into_iter()
            .map(|d| {
                let f = std::fs::File::open(&d);
                (d, f)
            })
            .collect();
        // Every file and directory to fsync, in one list the threads take from.
        enum Target<'a> {
            File(usize),
            Dir(&'a Path, &'a std::fs::File),
        }
        let mut targets: Vec<Target<'_>> = (0..placed.len()).map(Target::File).collect();
        let mut dir_failure: Option<BlobError> = None;
        for (dir, file) in &dir_files {
            match file {
                Ok(f) => targets.push(Target::Dir(dir, f)),
                Err(e) => {
                    dir_failure.get_or_insert_with(|| BlobError::Io {
                        path: dir.clone(),
                        source: std::io::Error::new(e.kind(), e.to_string()),
                    });
                }
            }
        }
        let file_errors: Vec<std::sync::Mutex<Option<std::io::Error>>> =
            placed.iter().map(|_| std::sync::Mutex::new(None)).collect();
        let dir_errors = std::sync::Mutex::new(Vec::new());
        let next = AtomicU64::new(0);
        let threads = targets.len().min(FSYNC_THREADS);
        let work = || loop {
            let i = next.fetch_add(1, Ordering::Relaxed) as usize;
            let Some(target) = targets.get(i) else { break };
            match target {
                Target::File(n) => {
                    if let Err(e) = placed[*n].1.file.sync_all() {
                        *file_errors[*n].lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                    }
                }
                Target::Dir(dir, f) => {
                    if let Err(e) = f.sync_all() {
                        dir_errors
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(BlobError::Io {
                                path: dir.to_path_buf(),
                                source: e,
                            });
                    }
                }
            }
        };
        if threads <= 1 {
            work();
        } else {
            std::thread::scope(|scope| {
                for _ in 1..threads {
                    scope.spawn(work);
                }
                work();
            });
        }
        let dir_failure = dir_failure.or_else(|| {
            dir_errors
                .into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .into_iter()
                .next()
        });
        if dir_failure.is_none() {
            let mut durable = self.durable_dirs.lock().unwrap_or_else(|e| e.into_inner());
            if durable.len() + entries.len() > DURABLE_DIRS_REMEMBERED {
                durable.clear();
            }
            durable.extend(entries);
        }
        for ((at, blob, target), error) in placed.into_iter().zip(file_errors) {
            let error = error.into_inner().unwrap_or_else(|e| e.into_inner());
            let failure = match (error, &dir_failure) {
                (Some(e), _) => Some(BlobError::Io {
                    path: target.clone(),
                    source: e,
                }),
                (None, Some(BlobError::Io { path, source })) => Some(BlobError::Io {
                    path: path.clone(),
                    source: std::io::Error::new(source.kind(), source.to_string()),
                }),
                _ => None,
            };
            if let Some(failure) = failure {
                // Not durable, so not to be indexed: its fresh key names no row.
                let _ = std::fs::remove_file(&target);
                results[at] = Err(failure);
            }
            drop(blob);
        }
        results
    }

    /// [`commit_group_blocking`](Self::commit_group_blocking) for instances held in memory
    /// (`pieces`: the whole file as written to the temp file), with the ingest journal
    /// (`store::journal`): the files are renamed into place and their bytes recorded in the
    /// journal, whose one `fdatasync` makes them durable; the files and directories are
    /// fsynced later, at the journal's checkpoint. Without a journal, or when it cannot take
    /// them, the files and directories are fsynced now, all at once.
    pub fn commit_journaled_blocking(
        &self,
        group: Vec<(BlockingBlob, String, Vec<bytes::Bytes>, bool)>,
    ) -> (Vec<Result<u64, BlobError>>, Option<Appended>) {
        let mut results: Vec<Result<u64, BlobError>> = Vec::with_capacity(group.len());
        let mut placed = Vec::with_capacity(group.len());
        let mut dirs = std::collections::BTreeSet::new();
        let mut entries = std::collections::BTreeSet::new();
        for (mut blob, key, pieces, redo) in group {
            match self.place(&mut blob, &key, &mut dirs, &mut entries) {
                Ok(target) => {
                    results.push(Ok(blob.len));
                    placed.push((results.len() - 1, (key, redo), pieces, target));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        if placed.is_empty() {
            return (results, None);
        }
        let journaled = match &self.journal {
            Some(journal) => {
                let records: Vec<PlacedBlob<'_>> = placed
                    .iter()
                    .map(|(_, (key, redo), pieces, target)| PlacedBlob {
                        key,
                        pieces,
                        path: target,
                        redo: *redo,
                    })
                    .collect();
                match journal.append(&records, &dirs, &entries) {
                    Ok(appended) => Some(appended),
                    Err(e) => {
                        tracing::warn!(error = %e, "ingest journal: fsyncing the files instead");
                        None
                    }
                }
            }
            None => None,
        };
        if journaled.is_some() {
            return (results, journaled);
        }
        let files: Vec<PathBuf> = placed.iter().map(|(_, _, _, t)| t.clone()).collect();
        match fsync_all_at_once(&files, &dirs) {
            Ok(()) => {
                let mut durable = self.durable_dirs.lock().unwrap_or_else(|e| e.into_inner());
                if durable.len() + entries.len() > DURABLE_DIRS_REMEMBERED {
                    durable.clear();
                }
                durable.extend(entries);
            }
            Err((path, source)) => {
                // Not durable, so not to be indexed: their fresh keys name no row.
                let message = source.to_string();
                for (at, _, _, target) in placed {
                    let _ = std::fs::remove_file(&target);
                    results[at] = Err(BlobError::Io {
                        path: path.clone(),
                        source: std::io::Error::new(source.kind(), message.clone()),
                    });
                }
            }
        }
        (results, None)
    }

    /// The ingest journal attached to this store, if any.
    pub fn journal(&self) -> Option<&Arc<dyn BlobLog>> {
        self.journal.as_ref()
    }

    /// Rename `blob` to `key`, creating the directories on the way; `dirs` collects the
    /// directories to fsync, `entries` those whose own entry that makes durable.
    fn place(
        &self,
        blob: &mut BlockingBlob,
        key: &str,
        dirs: &mut std::collections::BTreeSet<PathBuf>,
        entries: &mut std::collections::BTreeSet<PathBuf>,
    ) -> Result<PathBuf, BlobError> {
        check_key(key)?;
        let target = self.path(key);
        let parent = target.parent().unwrap_or(&self.root).to_path_buf();
        match std::fs::rename(&blob.path, &target) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(&parent).map_err(io_err(&parent))?;
                std::fs::rename(&blob.path, &target).map_err(io_err(&target))?;
            }
            Err(e) => return Err(io_err(&target)(e)),
        }
        blob.done = true;
        // The file's directory always (its new entry); and for each directory above it
        // not known durable, its parent: it may have been created just now, by this group
        // or by another path (a cache fill) that has not fsynced it yet.
        dirs.insert(parent.clone());
        let durable = self.durable_dirs.lock().unwrap_or_else(|e| e.into_inner());
        let mut dir = parent.as_path();
        while dir != self.root && !durable.contains(dir) {
            let Some(up) = dir.parent() else { break };
            dirs.insert(up.to_path_buf());
            entries.insert(dir.to_path_buf());
            dir = up;
        }
        Ok(target)
    }

    pub fn open_read_blocking(&self, key: &str) -> Result<std::fs::File, BlobError> {
        check_key(key)?;
        if self.remote.is_some() {
            self.ensure_local_blocking(key)?;
        }
        let path = self.path(key);
        std::fs::File::open(&path).map_err(io_err(&path))
    }

    /// Delete a blob (the object and the local copy); a missing blob is not an error.
    pub async fn remove(&self, key: &str) -> Result<(), BlobError> {
        check_key(key)?;
        if let Some(remote) = &self.remote {
            remote.delete(key).await?;
        }
        let path = self.path(key);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(BlobError::Io { path, source: e }),
        }
    }

    /// Whether the blob is there (locally, or in the bucket; an unreachable bucket says no).
    pub async fn exists(&self, key: &str) -> bool {
        if check_key(key).is_err() {
            return false;
        }
        if tokio::fs::try_exists(self.path(key)).await.unwrap_or(false) {
            return true;
        }
        match &self.remote {
            Some(remote) => remote.exists(key).await.unwrap_or(false),
            None => false,
        }
    }
}

/// A blob being written. Dropped without [`commit`](Self::commit) or [`abort`](Self::abort),
/// its temp file is removed.
pub struct PendingBlob {
    file: BufWriter<tokio::fs::File>,
    path: PathBuf,
    len: u64,
    /// Committed or aborted: nothing left for `Drop` to clean up.
    done: bool,
}

impl std::fmt::Debug for PendingBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingBlob")
            .field("path", &self.path)
            .field("len", &self.len)
            .finish()
    }
}

impl PendingBlob {
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), BlobError> {
        self.file
            .write_all(bytes)
            .await
            .map_err(io_err(&self.path))?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn temp_path(&self) -> &Path {
        &self.path
    }

    /// Flush the buffer to the temp file (no fsync); after this it can be read by path.
    pub async fn flush(&mut self) -> Result<(), BlobError> {
        self.file.flush().await.map_err(io_err(&self.path))
    }

    /// Make the blob durable under `key` (a fresh key from [`BlobStore::key_for`]); returns
    /// its size. On error the temp file is removed.
    pub async fn commit(self, store: &BlobStore, key: &str) -> Result<u64, BlobError> {
        check_key(key)?;
        let blob = self.into_blocking().await?;
        let target = store.path(key);
        let (store, key) = (store.clone(), key.to_string());
        tokio::task::spawn_blocking(move || blob.commit(&store, &key))
            .await
            .map_err(|e| BlobError::Io {
                path: target,
                source: std::io::Error::other(e),
            })?
    }

    /// Flush the buffer and hand the temp file to blocking code, so that the rest of an
    /// ingest (fsync, parse, rename) runs on one thread rather than hopping per step.
    pub async fn into_blocking(mut self) -> Result<BlockingBlob, BlobError> {
        self.file.flush().await.map_err(io_err(&self.path))?;
        let file = self
            .file
            .get_ref()
            .try_clone()
            .await
            .map_err(io_err(&self.path))?
            .into_std()
            .await;
        // From here the BlockingBlob owns the temp file and its cleanup.
        self.done = true;
        Ok(BlockingBlob {
            file,
            path: std::mem::take(&mut self.path),
            len: self.len,
            done: false,
        })
    }

    /// Give up: delete the temp file.
    pub async fn abort(mut self) {
        self.done = true;
        let _ = tokio::fs::remove_file(&self.path).await;
    }
}

/// A written temp file in blocking hands. Dropped without [`commit`](Self::commit), it is
/// removed.
#[derive(Debug)]
pub struct BlockingBlob {
    file: std::fs::File,
    path: PathBuf,
    len: u64,
    done: bool,
}

impl BlockingBlob {
    pub fn temp_path(&self) -> &Path {
        &self.path
    }

    /// Append to the temp file (no buffer: callers write large pieces).
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), BlobError> {
        use std::io::Write;
        self.file.write_all(bytes).map_err(io_err(&self.path))?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Append several pieces in `writev` calls of [`WRITE_MAX`] bytes (the last shorter)
    /// instead of a `write` per piece.
    pub fn write_all_vectored(&mut self, pieces: &[&[u8]]) -> Result<(), BlobError> {
        // Below IOV_MAX (1024 on Linux): a writev with more slices fails.
        for group in pieces.chunks(512) {
            self.write_group(group)?;
        }
        Ok(())
    }

    fn write_group(&mut self, pieces: &[&[u8]]) -> Result<(), BlobError> {
        let max = WRITE_MAX;
        let mut batch: Vec<&[u8]> = Vec::new();
        let mut in_batch = 0;
        for piece in pieces {
            let mut rest: &[u8] = piece;
            while !rest.is_empty() {
                let take = rest.len().min(max - in_batch);
                batch.push(&rest[..take]);
                in_batch += take;
                rest = &rest[take..];
                if in_batch == max {
                    self.write_slices(&batch)?;
                    batch.clear();
                    in_batch = 0;
                }
            }
        }
        if !batch.is_empty() {
            self.write_slices(&batch)?;
        }
        Ok(())
    }

    /// One `writev` of `pieces` (more where the kernel takes less).
    fn write_slices(&mut self, pieces: &[&[u8]]) -> Result<(), BlobError> {
        use std::io::{IoSlice, Write};
        let mut slices: Vec<IoSlice<'_>> = pieces.iter().map(|p| IoSlice::new(p)).collect();
        let mut left = &mut slices[..];
        IoSlice::advance_slices(&mut left, 0);
        while !left.is_empty() {
            match self.file.write_vectored(left) {
                Ok(0) => {
                    return Err(BlobError::Io {
                        path: self.path.clone(),
                        source: std::io::ErrorKind::WriteZero.into(),
                    })
                }
                Ok(n) => {
                    self.len += n as u64;
                    IoSlice::advance_slices(&mut left, n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err(&self.path)(e)),
            }
        }
        Ok(())
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// fdatasync the temp file.
    pub(super) fn sync_data(&mut self) -> Result<(), BlobError> {
        self.file.sync_data().map_err(io_err(&self.path))
    }

    /// Rename the temp file to `target`, replacing what is there (the journal's recovery
    /// writing a lost blob again; `target`'s directory exists).
    pub(super) fn replace(mut self, target: &Path) -> Result<(), BlobError> {
        std::fs::rename(&self.path, target).map_err(io_err(target))?;
        self.done = true;
        Ok(())
    }

    /// fsync the temp file, rename it to `key` (a fresh key: nothing is replaced) and
    /// fsync the directories whose entries changed; returns the size.
    pub fn commit(self, store: &BlobStore, key: &str) -> Result<u64, BlobError> {
        self.commit_with(store, key, true)
    }

    /// Rename into place without the fsyncs (see [`BlobStore::sync_blocking`]).
    pub fn commit_unsynced(self, store: &BlobStore, key: &str) -> Result<u64, BlobError> {
        self.commit_with(store, key, false)
    }

    fn commit_with(self, store: &BlobStore, key: &str, sync: bool) -> Result<u64, BlobError> {
        check_key(key)?;
        if let (Some(remote), true) = (&store.remote, sync) {
            // Object storage: durable once the upload completed (no fsync of the local copy,
            // which is only a copy); then the temp file becomes the local copy.
            remote.block_on(remote.upload_file(&self.path, key))?;
            return self.commit_with_local(store, key, false);
        }
        self.commit_with_local(store, key, sync)
    }

    fn commit_with_local(
        mut self,
        store: &BlobStore,
        key: &str,
        sync: bool,
    ) -> Result<u64, BlobError> {
        if sync {
            self.file.sync_all().map_err(io_err(&self.path))?;
        }
        let target = store.path(key);
        if !sync {
            // Most instances of a retrieve go into a series directory that is there by
            // now: the rename alone, no look-ups first. (Nothing to make durable here: the
            // retrieve's one-pass sync fsyncs the directories too.)
            match std::fs::rename(&self.path, &target) {
                Ok(()) => {
                    self.done = true;
                    return Ok(self.len);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&target)(e)),
            }
        }
        let parent = target.parent().unwrap_or(&store.root).to_path_buf();
        // Directories about to be created: their entries must be made durable as well.
        let mut missing = Vec::new();
        let mut dir = parent.as_path();
        while dir != store.root && !dir.exists() {
            missing.push(dir.to_path_buf());
            match dir.parent() {
                Some(up) => dir = up,
                None => break,
            }
        }
        std::fs::create_dir_all(&parent).map_err(io_err(&parent))?;
        std::fs::rename(&self.path, &target).map_err(io_err(&target))?;
        self.done = true;
        if !sync {
            return Ok(self.len);
        }
        sync_dir_blocking(&parent)?;
        for created in missing.iter().rev() {
            if let Some(up) = created.parent() {
                sync_dir_blocking(up)?;
            }
        }
        Ok(self.len)
    }
}

impl Drop for BlockingBlob {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Drop for PendingBlob {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// What [`BlobLog::append`] did (the ingest journal, `store::journal`): the number of the
/// last record it wrote, and whether it went on in the other file (then the group's index
/// transaction should wait for its flush, so that the full file can be written over later).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Appended {
    pub last_seq: u64,
    pub switched: bool,
}

/// Where a group commit records the bytes of the blobs it placed without fsyncing them (the
/// ingest journal, `store::journal`): once [`append`](BlobLog::append) returns, they are
/// durable, and the log fsyncs the files and directories later.
pub trait BlobLog: Send + Sync + std::fmt::Debug {
    fn append(
        &self,
        records: &[PlacedBlob<'_>],
        dirs: &std::collections::BTreeSet<PathBuf>,
        entries: &std::collections::BTreeSet<PathBuf>,
    ) -> Result<Appended, Box<dyn std::error::Error + Send + Sync>>;

    /// The log's id (its row in the index's `ingest_journal`).
    fn id(&self) -> &str;

    /// The number of the last record written (0: none since the log was opened empty).
    fn last_seq(&self) -> u64;

    /// The index rows of every record up to `seq` are durable now: files holding only
    /// such records may be written over.
    fn index_durable(&self, seq: u64);
}

/// An instance to record: its blob key and its bytes (the whole Part 10 file).
#[derive(Debug)]
pub struct PlacedBlob<'a> {
    pub key: &'a str,
    pub pieces: &'a [bytes::Bytes],
    /// The blob file at its key (renamed into place, not yet fsynced).
    pub path: &'a Path,
    /// Indexed by the group commit with the journal's mark, so indexed again at start when
    /// that commit was lost (`store::journal`); `false` for an instance its caller indexes
    /// itself with a flushed commit (STOW-RS), which is never indexed again from the journal.
    pub redo: bool,
}

/// fsync `files` and `dirs` from up to [`FSYNC_THREADS`] threads at once (the file system
/// commits them together). A file or directory gone meanwhile (a replaced version's blob,
/// an emptied directory) needs nothing.
pub(super) fn fsync_all_at_once(
    files: &[PathBuf],
    dirs: &std::collections::BTreeSet<PathBuf>,
) -> Result<(), (PathBuf, std::io::Error)> {
    let targets: Vec<&PathBuf> = files.iter().chain(dirs.iter()).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failure = std::sync::Mutex::new(None);
    let work = || loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(path) = targets.get(i) else { break };
        match std::fs::File::open(path).and_then(|f| f.sync_all()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                failure
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert(((*path).clone(), e));
            }
        }
    };
    let threads = targets.len().min(FSYNC_THREADS);
    if threads <= 1 {
        work();
    } else {
        std::thread::scope(|scope| {
            for _ in 1..threads {
                scope.spawn(work);
            }
            work();
        });
    }
    match failure.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(failed) => Err(failed),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn tmp_entries(dir: &Path) -> usize {
        std::fs::read_dir(dir.join("tmp")).unwrap().count()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn commit_makes_blob_appear() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).await.unwrap();
        let key = BlobStore::key_for("1.2.3", "1.2.3.4", "1.2.3.4.5").unwrap();
        assert!(key.starts_with("1.2.3/1.2.3.4/1.2.3.4.5."), "{key}");
        assert!(key.ends_with(".dcm"), "{key}");
        assert!(!store.exists(&key).await);
        let mut blob = store.begin().await.unwrap();
        blob.write(b"DICM").await.unwrap();
        blob.write(&[7u8; 300_000]).await.unwrap();
        assert_eq!(blob.len(), 300_004);
        blob.flush().await.unwrap();
        assert_eq!(std::fs::metadata(blob.temp_path()).unwrap().len(), 300_004);
        assert_eq!(blob.commit(&store, &key).await.unwrap(), 300_004);
        assert!(store.exists(&key).await);
        let content = std::fs::read(store.path(&key)).unwrap();
        assert_eq!(&content[..4], b"DICM");
        assert_eq!(content.len(), 300_004);
        let mut f = store.open_read(&key).await.unwrap();
        let mut read = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut f, &mut read)
            .await
            .unwrap();
        assert_eq!(read, content);
        assert_eq!(tmp_entries(dir.path()).await, 0);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn unsynced_commits_write_vectored_and_make_missing_directories() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).await.unwrap();
        // The first into a new series directory, the second into the one now there, the
        // third a new version of the second.
        let mut keys = Vec::new();
        for (sop, content) in [("3", &b"first"[..]), ("4", b"second"), ("4", b"third")] {
            let key = BlobStore::key_for("1", "2", sop).unwrap();
            let mut blob = store.begin_blocking().unwrap();
            let (head, tail) = content.split_at(2);
            blob.write_all_vectored(&[head, &[], tail]).unwrap();
            assert_eq!(
                blob.commit_unsynced(&store, &key).unwrap(),
                content.len() as u64
            );
            assert_eq!(std::fs::read(store.path(&key)).unwrap(), content);
            keys.push(key);
        }
        store.sync_blocking(&keys).unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }

    /// Pieces of every size, across the boundaries of the writes: the file holds them in
    /// order, byte for byte.
    #[tokio::test]
    async fn vectored_writes_of_any_pieces_keep_every_byte() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).await.unwrap();
        let sizes = [
            132,
            70_000,
            0,
            WRITE_MAX - 132,
            1,
            WRITE_MAX,
            3 * WRITE_MAX + 7,
            5,
        ];
        let pieces: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(n, len)| (0..*len).map(|i| (i * 7 + n) as u8).collect())
            .collect();
        let slices: Vec<&[u8]> = pieces.iter().map(Vec::as_slice).collect();
        let mut blob = store.begin_blocking().unwrap();
        blob.write_all_vectored(&slices).unwrap();
        assert_eq!(blob.len(), sizes.iter().sum::<usize>() as u64);
        let key = BlobStore::key_for("1", "2", "3").unwrap();
        blob.commit_unsynced(&store, &key).unwrap();
        assert_eq!(std::fs::read(store.path(&key)).unwrap(), pieces.concat());
    }

    /// Each version of an instance gets a key of its own: committing a second version
    /// leaves the first untouched (the index decides which one is the instance).
    #[tokio::test(flavor = "multi_thread")]
    async fn each_version_has_its_own_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).await.unwrap();
        let mut keys = Vec::new();
        for content in [&b"first version"[..], b"second"] {
            let key = BlobStore::key_for("1", "2", "3").unwrap();
            let mut blob = store.begin().await.unwrap();
            blob.write(content).await.unwrap();
            blob.commit(&store, &key).await.unwrap();
            keys.push(key);
        }
        assert_ne!(keys[0], keys[1]);
        assert_eq!(
            std::fs::read(store.path(&keys[0])).unwrap(),
            b"first version"
        );
        assert_eq!(std::fs::read(store.path(&keys[1])).unwrap(), b"second");
        let future = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
        let mut listed = store.keys_modified_before(future).unwrap();
        listed.sort();
        let mut expected = keys.clone();
        expected.sort();
        assert_eq!(listed, expected);
        let past = std::time::SystemTime::UNIX_EPOCH;
        assert!(store.keys_modified_before(past).unwrap().is_empty());
        for key in &keys {
            store.remove(key).await.unwrap();
            assert!(!store.exists(key).await);
            store.remove(key).await.unwrap();
        }
        assert_eq!(store.remove_empty_dirs(), 2);
        assert_eq!(
            std::fs::read_dir(dir.path().join("blobs")).unwrap().count(),
            0
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn drop_and_abort_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).await.unwrap();
        let mut blob = store.begin().await.unwrap();
        blob.write(b"partial").await.unwrap();
        let temp = blob.temp_path().to_path_buf();
        assert!(temp.exists());
        drop(blob);
        assert!(!temp.exists());
        let mut blob = store.begin().await.unwrap();
        blob.write(b"partial").await.unwrap();
        blob.abort().await;
        assert_eq!(tmp_entries(dir.path()).await, 0);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn open_cleans_leftover_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).await.unwrap();
        let mut blob = store.begin().await.unwrap();
        blob.write(b"half").await.unwrap();
        blob.flush().await.unwrap();
        std::mem::forget(blob); // as if the process died
        std::fs::write(dir.path().join("tmp/stray"), b"x").unwrap();
        assert_eq!(tmp_entries(dir.path()).await, 2);
        let _store = BlobStore::open(dir.path()).await.unwrap();
        assert_eq!(tmp_entries(dir.path()).await, 0);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn bad_keys_are_rejected() {
        for (study, series, sop) in [
            ("../x", "1", "2"),
            ("1.2/3", "1", "2"),
            ("", "1", "2"),
            ("1", "..", "2"),
            ("1", "2", "."),
            ("1", "2", "1.2a"),
            ("1", "2", "1..2"),
        ] {
            assert!(
                matches!(
                    BlobStore::key_for(study, series, sop),
                    Err(BlobError::BadKey(_))
                ),
                "{study:?} {series:?} {sop:?}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).await.unwrap();
        for key in ["../x", "/etc/passwd", "a/../../b", "", "a//b", ".hidden"] {
            assert!(
                matches!(store.open_read(key).await, Err(BlobError::BadKey(_))),
                "{key:?}"
            );
            assert!(
                matches!(store.remove(key).await, Err(BlobError::BadKey(_))),
                "{key:?}"
            );
            assert!(!store.exists(key).await);
            let blob = store.begin().await.unwrap();
            assert!(matches!(
                blob.commit(&store, key).await,
                Err(BlobError::BadKey(_))
            ));
        }
        assert_eq!(tmp_entries(dir.path()).await, 0);
    }
}
