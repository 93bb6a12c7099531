//! Sources of stored data: blobs (the DICOM files) and the index (what they contain).
//!
//! - [`blob`]: the filesystem blob store; writes go to a temp file, are fsynced and renamed
//!   into place so a blob is either whole or absent.
//! - [`object`]: blobs in S3-compatible object storage behind the same [`BlobStore`].
//! - [`index`]: the [`Index`] trait with SQLite (embedded default) and PostgreSQL backends.
//! - [`ingest`]: the one path by which an instance enters the store (C-STORE and STOW-RS).
//! - [`journal`]: the ingest journal: instances made durable by one in-place `fdatasync`
//!   per group commit, their files fsynced later in bulk.
//! - [`record`]: [`InstanceRecord`], the indexed attributes extracted from one instance.
//! - [`delete`]: the one delete path (index rows, then blobs; crash-safe with a queue).
//! - [`retention`]: `storage.keep_received_days` for studies received by STOW-RS.
//! - [`recovery`]: after a crash, the blob files no index row names (orphans) are removed,
//!   and a missing file is reported with what to do about it.

pub mod blob;
pub mod delete;
pub mod index;
pub mod ingest;
pub mod journal;
pub mod object;
pub mod record;
pub mod recovery;
pub mod retention;

pub use blob::{BlobError, BlobStore, PendingBlob};
pub use index::{open_index, AuditEvent, Index, IndexError, UpsertOutcome};
pub use record::InstanceRecord;
