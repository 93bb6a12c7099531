//! The one path by which an instance enters the store, whatever the front (C-STORE, STOW-RS):
//! a received Part 10 file in a [`PendingBlob`] is checked and parsed up to Pixel Data,
//! fsynced, renamed into place and indexed; only then is it acknowledged. Any failure removes
//! the temp file, so nothing half-written stays.

use super::blob::BlockingBlob;
use super::{BlobStore, Index, InstanceRecord, PendingBlob};
use crate::dimse::dataset::{pixel_data_in, read_layout, DatasetError, PIXEL_DATA};
use crate::dimse::status::code;
use dicom_core::Tag;

/// What the sender claimed about the instance; each given value must match the data set.
#[derive(Debug, Clone, Default)]
pub struct Expected<'a> {
    /// SOP Class UID of the command (C-STORE) — a mismatch is warning B007, not a failure.
    pub sop_class: Option<&'a str>,
    /// SOP Instance UID of the command (C-STORE).
    pub sop_instance: Option<&'a str>,
    /// Study Instance UID of the request URL (STOW-RS `/studies/{study}`).
    pub study_uid: Option<&'a str>,
}

/// Why an instance was not stored: the C-STORE status (PS3.4 B.2.3), also used as the STOW-RS
/// FailureReason (PS3.18 10.5.3), and a readable reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestFailure {
    pub status: u16,
    pub reason: String,
    /// SOP Class and Instance UIDs from the file's meta group, when it could be read (so that
    /// a STOW-RS FailedSOPSequence item can name the instance).
    pub sop_class: String,
    pub sop_instance: String,
}

impl IngestFailure {
    pub fn new(status: u16, reason: impl Into<String>) -> Self {
        IngestFailure {
            status,
            reason: reason.into(),
            sop_class: String::new(),
            sop_instance: String::new(),
        }
    }

    /// The same failure, naming the instance of `meta`.
    fn of(mut self, meta: &dicom_object::FileMetaTable) -> Self {
        self.sop_class = meta
            .media_storage_sop_class_uid()
            .trim_end_matches('\0')
            .into();
        self.sop_instance = meta
            .media_storage_sop_instance_uid()
            .trim_end_matches('\0')
            .into();
        self
    }
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
    store_blob_with(blobs, blob, expected, true).await
}

/// [`store_blob`] without the fsyncs: the file is renamed into place but may not survive a
/// power loss yet. For copies of data held elsewhere (the cache of PACS retrieves), made
/// durable in one pass with [`BlobStore::sync_blocking`] before they count.
pub async fn store_blob_deferred(
    blobs: &BlobStore,
    blob: PendingBlob,
    expected: Expected<'_>,
) -> Result<Ingested, IngestFailure> {
    store_blob_with(blobs, blob, expected, false).await
}

async fn store_blob_with(
    blobs: &BlobStore,
    blob: PendingBlob,
    expected: Expected<'_>,
    sync: bool,
) -> Result<Ingested, IngestFailure> {
    let blob = blob
        .into_blocking()
        .await
        .map_err(|e| IngestFailure::new(code::OUT_OF_RESOURCES, format!("cannot write: {e}")))?;
    let owned = OwnedExpected::from(&expected);
    let store = blobs.clone();
    let record = tokio::task::spawn_blocking(move || check_and_commit(&store, blob, &owned, sync))
        .await
        .map_err(|e| {
            IngestFailure::new(code::PROCESSING_FAILURE, format!("ingest task failed: {e}"))
        })??;
    // PS3.4 B.2.3: B007 when the data set's SOP class is not the one in the command.
    let dataset_class = record.get(SOP_CLASS_UID).unwrap_or("");
    let status = match expected.sop_class {
        Some(class) if class != dataset_class => code::WARNING_DATASET_MISMATCH,
        _ => code::SUCCESS,
    };
    Ok(Ingested { status, record })
}

/// The second half of [`persist`] for any number of stored instances, in one index
/// transaction (one commit). If it fails, their blobs are removed: not indexed means not
/// acknowledged, and the store stays consistent.
pub async fn index_batch(
    blobs: &BlobStore,
    index: &dyn Index,
    records: &[InstanceRecord],
) -> Result<(), IngestFailure> {
    if records.is_empty() {
        return Ok(());
    }
    if let Err(e) = index.upsert_instances(records).await {
        for record in records {
            let _ = blobs.remove(&record.blob_key).await;
        }
        return Err(IngestFailure::new(
            code::OUT_OF_RESOURCES,
            format!("cannot index: {e}"),
        ));
    }
    Ok(())
}

/// [`Expected`] with owned values, for the blocking half.
#[derive(Debug, Default)]
struct OwnedExpected {
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

/// The blocking half of [`persist`]: structure check, parse up to Pixel Data, the checks of
/// `expected`, then fsync and rename. Any failure drops `blob`, which removes the temp file.
fn check_and_commit(
    store: &BlobStore,
    blob: BlockingBlob,
    expected: &OwnedExpected,
    sync: bool,
) -> Result<InstanceRecord, IngestFailure> {
    let path = blob.temp_path().to_path_buf();
    let unparsable = |problem: String| {
        IngestFailure::new(
            code::CANNOT_UNDERSTAND,
            format!("data set does not parse: {problem}"),
        )
    };
    let parse_error = |e: DatasetError| match e {
        DatasetError::Parse(problem) | DatasetError::File { problem, .. } => unparsable(problem),
        other => unparsable(other.to_string()),
    };
    let layout = read_layout(&path).map_err(parse_error)?;
    let meta = &layout.meta;
    // Lengths and nesting first: the parser trusts both (see `check_structure`).
    pixel_data_in(&path, &layout).map_err(|e| parse_error(e).of(meta))?;
    let transfer_syntax = meta.transfer_syntax().trim_end_matches('\0').to_string();
    let obj = dicom_object::OpenFileOptions::new()
        .read_until(PIXEL_DATA)
        .open_file(&path)
        .map_err(|e| unparsable(e.to_string()).of(meta))?;
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
    let committed = if sync {
        blob.commit(store, &key)
    } else {
        blob.commit_unsynced(store, &key)
    };
    let size = committed.map_err(|e| {
        IngestFailure::new(code::OUT_OF_RESOURCES, format!("cannot store: {e}")).of(meta)
    })?;
    record.blob_key = key;
    record.size_bytes = size;
    record.transfer_syntax_uid = transfer_syntax;
    Ok(record)
}

const SOP_CLASS_UID: Tag = Tag(0x0008, 0x0016);

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
