//! Blobs in S3-compatible object storage (issue 16, item 1), through the `object_store` crate.
//!
//! The object store is the durable home of every blob; the data directory's `blobs/` tree
//! becomes a node-local copy of the objects this node wrote or read (the fronts, codecs and
//! renderers want random access to a local file, see `core::stored`). So:
//!
//! - an ingest writes its temp file as on the filesystem store, then uploads it under its
//!   versioned key (`prefix/study/series/sop.VERSION.dcm`): in one PUT when it is small, as a
//!   streaming multipart upload in [`PART_BYTES`] parts otherwise (at most [`PARTS_IN_FLIGHT`]
//!   parts in memory). Only after the upload completed is the instance indexed, and only after
//!   that acknowledged (`store::ingest`);
//! - a read of an instance this node has no copy of downloads the object into `tmp/` in
//!   pieces as they arrive (bounded memory), then renames it into the local tree;
//! - [`Remote::get_range`] reads a byte range of an object without the rest;
//! - the orphan sweep lists the bucket (objects older than the sweep's cutoff) and deletes
//!   the keys no index row names; deletes remove the object and the local copy.
//!
//! Configuration: `[storage] blobs = "s3://bucket/prefix"` and `[storage.s3]` (endpoint,
//! region, credentials); what `[storage.s3]` leaves empty comes from the usual `AWS_*`
//! environment variables (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, ...).

use crate::config::S3Config;
pub use crate::config::S3Url;
use bytes::Bytes;
use futures::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, PutPayload, RetryConfig, WriteMultipart};
use std::future::Future;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Size of one part of a multipart upload (S3 wants at least 5 MiB for all but the last),
/// and the largest blob uploaded in one PUT.
pub const PART_BYTES: usize = 8 * 1024 * 1024;

/// Parts of one upload in flight at once: with [`PART_BYTES`] this bounds the memory of an
/// upload to about 24 MiB whatever the blob's size.
pub const PARTS_IN_FLIGHT: usize = 2;

/// Bytes read from the temp file per read during an upload.
const READ_BYTES: usize = 1024 * 1024;

/// What went wrong with the bucket, or with the local file an upload reads or a download
/// writes (`store::blob` turns it into its `BlobError`).
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("object storage error on {key:?}: {message}")]
    Remote { key: String, message: String },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The bucket (and prefix) blobs live in.
#[derive(Debug)]
pub struct Remote {
    store: AmazonS3,
    url: S3Url,
    /// The runtime the store's client runs on, for the blocking halves of ingest and reads.
    handle: tokio::runtime::Handle,
    /// `[storage.s3] orphan_grace_secs`, in milliseconds.
    orphan_grace_ms: i64,
}

fn remote_err(key: &str, e: impl std::fmt::Display) -> ObjectError {
    ObjectError::Remote {
        key: key.to_string(),
        message: e.to_string(),
    }
}

fn is_not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

impl Remote {
    /// Build the client for `url` with `config` over the `AWS_*` environment variables. No
    /// request is made here: an unreachable bucket shows in `/ready` and in the operations.
    pub fn open(url: S3Url, config: &S3Config) -> Result<Remote, ObjectError> {
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(&url.bucket);
        let set = |v: &str| !v.trim().is_empty();
        if set(&config.endpoint) {
            builder = builder.with_endpoint(config.endpoint.trim());
        }
        if set(&config.region) {
            builder = builder.with_region(config.region.trim());
        }
        if set(&config.access_key_id) {
            builder = builder.with_access_key_id(config.access_key_id.trim());
        }
        if set(&config.secret_access_key) {
            builder = builder.with_secret_access_key(config.secret_access_key.trim());
        }
        let timeout = Duration::from_secs(config.timeout_secs.max(1));
        let allow_http = config.allow_http
            || std::env::var("AWS_ALLOW_HTTP").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
        if config.virtual_hosted_style {
            builder = builder.with_virtual_hosted_style_request(true);
        }
        builder = builder
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(allow_http)
                    .with_timeout(timeout)
                    .with_connect_timeout(Duration::from_secs(config.connect_timeout_secs.max(1))),
            )
            .with_retry(RetryConfig {
                max_retries: config.max_retries,
                retry_timeout: timeout,
                ..RetryConfig::default()
            });
        let store = builder
            .build()
            .map_err(|e| remote_err("", format!("cannot configure s3://{}: {e}", url.bucket)))?;
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|e| remote_err("", format!("no async runtime for the S3 client: {e}")))?;
        Ok(Remote {
            store,
            url,
            handle,
            orphan_grace_ms: (config.orphan_grace_secs as i64).saturating_mul(1000),
        })
    }

    /// `s3://bucket/prefix`, for logs and `/ready`.
    pub fn describe(&self) -> String {
        if self.url.prefix.is_empty() {
            format!("s3://{}", self.url.bucket)
        } else {
            format!("s3://{}/{}", self.url.bucket, self.url.prefix)
        }
    }

    fn location(&self, key: &str) -> ObjectPath {
        if self.url.prefix.is_empty() {
            ObjectPath::from(key)
        } else {
            ObjectPath::from(format!("{}/{key}", self.url.prefix))
        }
    }

    /// The blob key of an object in the bucket; `None` for objects outside the prefix.
    fn key_of(&self, location: &ObjectPath) -> Option<String> {
        let full = location.as_ref();
        if self.url.prefix.is_empty() {
            return Some(full.to_string());
        }
        full.strip_prefix(&self.url.prefix)?
            .strip_prefix('/')
            .map(str::to_string)
    }

    /// Run `future` on the store's runtime from blocking code (a `spawn_blocking` thread or
    /// a thread of its own; never from async code).
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                // On a worker thread by mistake: step out of it rather than panic.
                tokio::task::block_in_place(|| self.handle.block_on(future))
            }
            _ => self.handle.block_on(future),
        }
    }

    /// Upload the file at `path` as the object of `key`: one PUT up to [`PART_BYTES`], a
    /// streaming multipart upload beyond (aborted on failure, so no parts are left behind).
    /// Returns when the object is complete in the bucket.
    pub async fn upload_file(&self, path: &Path, key: &str) -> Result<(), ObjectError> {
        let io = |source| ObjectError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = tokio::fs::File::open(path).await.map_err(io)?;
        let len = file.metadata().await.map_err(io)?.len();
        let location = self.location(key);
        if len <= PART_BYTES as u64 {
            let mut bytes = Vec::with_capacity(len as usize);
            file.read_to_end(&mut bytes).await.map_err(io)?;
            self.store
                .put(&location, PutPayload::from(bytes))
                .await
                .map_err(|e| remote_err(key, e))?;
            return Ok(());
        }
        let upload = self
            .store
            .put_multipart(&location)
            .await
            .map_err(|e| remote_err(key, e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        let mut buf = vec![0u8; READ_BYTES];
        let result: Result<(), ObjectError> = async {
            loop {
                let n = file.read(&mut buf).await.map_err(io)?;
                if n == 0 {
                    return Ok(());
                }
                writer
                    .wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .map_err(|e| remote_err(key, e))?;
                writer.write(&buf[..n]);
            }
        }
        .await;
        match result {
            Ok(()) => {
                writer.finish().await.map_err(|e| remote_err(key, e))?;
                Ok(())
            }
            Err(e) => {
                let _ = writer.abort().await;
                Err(e)
            }
        }
    }

    /// Download the object of `key` into the new file `dest` (written as the pieces arrive);
    /// `Ok(false)` when there is no such object.
    pub async fn download(&self, key: &str, dest: &Path) -> Result<bool, ObjectError> {
        let got = match self.store.get(&self.location(key)).await {
            Ok(got) => got,
            Err(e) if is_not_found(&e) => return Ok(false),
            Err(e) => return Err(remote_err(key, e)),
        };
        let io = |source| ObjectError::Io {
            path: dest.to_path_buf(),
            source,
        };
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dest)
            .await
            .map_err(io)?;
        let mut stream = got.into_stream();
        while let Some(piece) = stream.next().await {
            let piece = piece.map_err(|e| remote_err(key, e))?;
            file.write_all(&piece).await.map_err(io)?;
        }
        file.flush().await.map_err(io)?;
        Ok(true)
    }

    /// Bytes `range` of the object of `key`.
    pub async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, ObjectError> {
        self.store
            .get_range(&self.location(key), range)
            .await
            .map_err(|e| remote_err(key, e))
    }

    /// Whether the object of `key` exists (an unreachable store is an error).
    pub async fn exists(&self, key: &str) -> Result<bool, ObjectError> {
        match self.store.head(&self.location(key)).await {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(remote_err(key, e)),
        }
    }

    /// Delete the object of `key`; a missing object is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), ObjectError> {
        match self.store.delete(&self.location(key)).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(remote_err(key, e)),
        }
    }

    /// Keys of the objects under the prefix last modified before `cutoff`, less the grace
    /// (`orphan_grace_secs`) and less a second: S3 reports modification times truncated to
    /// the second, so an object written just after `cutoff` can carry an earlier time.
    pub async fn keys_modified_before(
        &self,
        cutoff: SystemTime,
    ) -> Result<Vec<String>, ObjectError> {
        let cutoff_ms = cutoff
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let prefix =
            (!self.url.prefix.is_empty()).then(|| ObjectPath::from(self.url.prefix.as_str()));
        let mut listing = self.store.list(prefix.as_ref());
        let mut keys = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|e| remote_err("", e))?;
            let modified_ms = meta.last_modified.timestamp_millis();
            if modified_ms.saturating_add(1000 + self.orphan_grace_ms) > cutoff_ms {
                continue;
            }
            if let Some(key) = self.key_of(&meta.location) {
                keys.push(key);
            }
        }
        keys.sort();
        Ok(keys)
    }

    /// Prove the bucket takes writes: a small probe object written and deleted (`/ready`).
    pub async fn probe_write(&self) -> Result<(), ObjectError> {
        let key = format!(
            "readiness-probe-{:x}-{:x}",
            std::process::id(),
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        );
        let location = self.location(&key);
        self.store
            .put(
                &location,
                PutPayload::from_static(b"beeldbrug readiness probe\n"),
            )
            .await
            .map_err(|e| remote_err(&key, e))?;
        self.store
            .delete(&location)
            .await
            .map_err(|e| remote_err(&key, e))
    }
}

/// A shared [`Remote`].
pub type SharedRemote = Arc<Remote>;
