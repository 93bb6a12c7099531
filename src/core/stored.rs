//! How the fronts read what the cache holds: by instance, never by building a path from a
//! blob key. On the filesystem store an instance's local file is its blob; on object storage
//! (`store::object`) it is this node's copy of the object, downloaded by
//! [`Stored::is_present`] when the node has none yet, so the fronts (and the codecs and
//! renderers they call, which want random access) stay as they are when the store changes.
//! A front calls `is_present` (or [`Stored::open_blocking`]) before it reads a file.

use crate::model::InstanceLocation;
use crate::store::BlobStore;
use std::path::{Path, PathBuf};

/// The cache's instances, for reading.
#[derive(Debug, Clone)]
pub struct Stored {
    blobs: BlobStore,
}

/// An instance's bytes as a local file, readable while this value lives.
#[derive(Debug)]
pub struct LocalFile {
    path: PathBuf,
}

impl LocalFile {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Stored {
    pub(super) fn new(blobs: BlobStore) -> Self {
        Stored { blobs }
    }

    /// The instance as a local file (the DICOM file as stored: meta group and data set).
    pub fn local_file(&self, loc: &InstanceLocation) -> LocalFile {
        LocalFile {
            path: self.blobs.path(&loc.blob_key),
        }
    }

    /// Make the instance's local file be there where it can be (on object storage: download
    /// it when this node has no copy), without a repair note: for the fronts that report a
    /// missing file on their own when reading it fails.
    pub async fn ensure_local(&self, loc: &InstanceLocation) {
        if let Err(e) = self.blobs.ensure_local(&loc.blob_key).await {
            tracing::warn!(sop = %loc.sop_instance_uid, blob_key = %loc.blob_key, error = %e,
                "cannot fetch an instance's file from the blob store");
        }
    }

    /// Whether the instance's file is there, as a local file [`local_file`](Self::local_file)
    /// names: on object storage, a node without a copy downloads it here. When an indexed
    /// instance's file is missing (lost outside the gateway), this logs a repair note once per
    /// call and says `false`: the fronts answer with a clean "not found" or a failed
    /// sub-operation, never a 500. An unreachable bucket says `false` too (logged).
    pub async fn is_present(&self, loc: &InstanceLocation) -> bool {
        Self::judge(loc, self.blobs.ensure_local(&loc.blob_key).await)
    }

    /// [`is_present`](Self::is_present) for blocking code.
    pub fn is_present_blocking(&self, loc: &InstanceLocation) -> bool {
        Self::judge(loc, self.blobs.ensure_local_blocking(&loc.blob_key))
    }

    fn judge(loc: &InstanceLocation, found: Result<bool, crate::store::BlobError>) -> bool {
        match found {
            Ok(true) => true,
            Ok(false) => {
                crate::store::recovery::note_missing_blob(&loc.sop_instance_uid, &loc.blob_key);
                false
            }
            Err(e) => {
                tracing::error!(sop = %loc.sop_instance_uid, blob_key = %loc.blob_key, error = %e,
                    "cannot read an instance's file from the blob store");
                false
            }
        }
    }

    /// Open the instance's local file without fetching it from object storage (call
    /// [`ensure_local`](Self::ensure_local) first there): `Ok(None)` when it is missing,
    /// with the repair note, as [`is_present`](Self::is_present) says. Cheap enough for a
    /// connection's task when the file is there (one `open`).
    pub fn open_local(&self, loc: &InstanceLocation) -> std::io::Result<Option<std::fs::File>> {
        match self.blobs.open_local_blocking(&loc.blob_key) {
            Ok(Some(file)) => Ok(Some(file)),
            Ok(None) => {
                crate::store::recovery::note_missing_blob(&loc.sop_instance_uid, &loc.blob_key);
                Ok(None)
            }
            Err(e) => Err(std::io::Error::other(e)),
        }
    }

    /// Whether instances must be made local ([`ensure_local`](Self::ensure_local)) before
    /// [`open_local`](Self::open_local) finds them: blobs in object storage.
    pub fn downloads(&self) -> bool {
        self.blobs.is_object_storage()
    }

    /// Open the instance for reading, blocking (from a blocking thread).
    pub fn open_blocking(&self, loc: &InstanceLocation) -> std::io::Result<std::fs::File> {
        self.blobs
            .open_read_blocking(&loc.blob_key)
            .map_err(std::io::Error::other)
    }
}
