//! How the fronts read what the cache holds: by instance, never by building a path from a
//! blob key. On the filesystem store an instance's local file is its blob; an object store
//! or a part still arriving from a remote gateway would hand over a local copy here, so the
//! fronts (and the codecs and renderers they call, which want random access) stay as they
//! are when the store changes.

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

    /// Whether the instance's file is there. When an indexed instance's file is missing
    /// (lost outside the gateway), this logs a repair note once per call and says `false`:
    /// the fronts answer with a clean "not found" or a failed sub-operation, never a 500.
    pub async fn is_present(&self, loc: &InstanceLocation) -> bool {
        let present = self.blobs.exists(&loc.blob_key).await;
        if !present {
            crate::store::recovery::note_missing_blob(&loc.sop_instance_uid, &loc.blob_key);
        }
        present
    }

    /// [`is_present`](Self::is_present) for blocking code.
    pub fn is_present_blocking(&self, loc: &InstanceLocation) -> bool {
        let present = self.blobs.path(&loc.blob_key).is_file();
        if !present {
            crate::store::recovery::note_missing_blob(&loc.sop_instance_uid, &loc.blob_key);
        }
        present
    }

    /// Open the instance for reading, blocking (from a blocking thread).
    pub fn open_blocking(&self, loc: &InstanceLocation) -> std::io::Result<std::fs::File> {
        self.blobs
            .open_read_blocking(&loc.blob_key)
            .map_err(std::io::Error::other)
    }
}
