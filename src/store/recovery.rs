//! Recovery of the blob store against the index after a crash (issue 16, item 4).
//!
//! What a `kill -9` can leave, and who cleans it:
//!
//! - a half-written temp file in `tmp/`: removed by [`BlobStore::open`];
//! - the file of an instance version that was renamed into place but whose index row never
//!   committed (not acknowledged): an **orphan**, a blob file that no instance row names,
//!   removed by [`sweep_orphans`];
//! - the file of a version that a committed re-send replaced, or of a deleted instance: its key
//!   is queued in `blob_deletion` in the same transaction, removed by `store::delete::sweep`.
//!
//! The orphan sweep only considers files modified before a cutoff — the start of this
//! process less `[storage] orphan_grace_secs` (default 120 s) — so that it never takes the
//! file of an ingest running now (renamed into place, its row about to commit) for an
//! orphan: neither one of this process (newer than its start) nor one another node sharing
//! the blob directory or bucket wrote just before this start (younger than the grace).

use super::{BlobStore, Index, IndexError};
use std::collections::BTreeSet;
use std::time::SystemTime;

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Blob(#[from] super::BlobError),
    #[error("recovery task failed: {0}")]
    Task(String),
}

/// What an orphan sweep found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Swept {
    /// Blob files looked at (modified before the cutoff).
    pub files: usize,
    /// Files no instance row named, removed.
    pub orphans_removed: usize,
    /// Orphans whose removal failed (left for the next sweep).
    pub orphans_left: usize,
}

/// Keys checked against the index per query.
const BATCH: usize = 500;

/// Remove the blob files modified before `cutoff` that no instance row names, then the
/// directories left empty. Blocking work (the walk, the removals) runs off the runtime.
pub async fn sweep_orphans(
    index: &dyn Index,
    blobs: &BlobStore,
    cutoff: SystemTime,
) -> Result<Swept, RecoveryError> {
    let store = blobs.clone();
    let keys = tokio::task::spawn_blocking(move || store.keys_modified_before(cutoff))
        .await
        .map_err(|e| RecoveryError::Task(e.to_string()))??;
    let mut swept = Swept {
        files: keys.len(),
        ..Default::default()
    };
    for chunk in keys.chunks(BATCH) {
        let in_use: BTreeSet<String> = index.blob_keys_in_use(chunk).await?.into_iter().collect();
        for key in chunk.iter().filter(|k| !in_use.contains(*k)) {
            match blobs.remove(key).await {
                Ok(()) => swept.orphans_removed += 1,
                Err(e) => {
                    tracing::warn!(%key, error = %e, "cannot remove an orphaned blob file");
                    swept.orphans_left += 1;
                }
            }
        }
    }
    crate::metrics::orphans_removed(swept.orphans_removed);
    if swept.orphans_removed > 0 {
        let store = blobs.clone();
        let _ = tokio::task::spawn_blocking(move || store.remove_empty_dirs()).await;
    }
    Ok(swept)
}

/// The recovery of a start: finish interrupted deletes and replacements
/// (`store::delete::sweep`), then remove orphans older than `cutoff`; logs what it did.
pub async fn recover(
    index: &dyn Index,
    blobs: &BlobStore,
    cutoff: SystemTime,
) -> Result<Swept, RecoveryError> {
    super::delete::sweep(index, blobs)
        .await
        .map_err(|super::delete::DeleteError::Index(e)| e)?;
    let swept = sweep_orphans(index, blobs, cutoff).await?;
    if swept.orphans_removed > 0 || swept.orphans_left > 0 {
        tracing::info!(
            files = swept.files,
            orphans_removed = swept.orphans_removed,
            orphans_left = swept.orphans_left,
            "blob store recovered: removed files of instance versions never indexed"
        );
    }
    Ok(swept)
}

/// Log that an indexed instance's file is missing, with what to do about it; for the
/// fronts that meet it (WADO-RS, C-GET, C-MOVE answer with a clean error, never a 500).
pub fn note_missing_blob(sop_instance_uid: &str, blob_key: &str) {
    crate::metrics::missing_blob();
    tracing::error!(
        sop = %sop_instance_uid,
        %blob_key,
        "an indexed instance's file is missing from the blob store; repair: send the instance \
         again (C-STORE or STOW-RS), or delete it (`beeldbrug delete`) so that it is no longer \
         found; restore the data directory from a backup if more are missing"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::index::SqliteIndex;
    use crate::store::ingest::index_batch;
    use crate::store::InstanceRecord;
    use std::time::Duration;

    fn record(key: &str, sop: &str) -> InstanceRecord {
        let mut r = InstanceRecord::default();
        r.values
            .insert(dicom_core::Tag(0x0010, 0x0020), "P1".into());
        r.values
            .insert(dicom_core::Tag(0x0020, 0x000D), "1.2".to_string());
        r.values
            .insert(dicom_core::Tag(0x0020, 0x000E), "1.2.1".to_string());
        r.values
            .insert(dicom_core::Tag(0x0008, 0x0018), sop.to_string());
        r.blob_key = key.to_string();
        r.size_bytes = 4;
        r
    }

    /// A store and an index holding one acknowledged instance (SOP 1.2.1.1, bytes "v1"): its
    /// key. The directory lives as long as the returned guard.
    async fn acknowledged_v1() -> (tempfile::TempDir, BlobStore, SqliteIndex, String) {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path()).await.unwrap();
        let url = format!("sqlite://{}", dir.path().join("index.db").display());
        let index = SqliteIndex::open(&url).await.unwrap();
        let acknowledged = put(&blobs, "1.2.1.1", b"v1").await;
        index_batch(&blobs, &index, &[record(&acknowledged, "1.2.1.1")])
            .await
            .unwrap();
        (dir, blobs, index, acknowledged)
    }

    async fn put(blobs: &BlobStore, sop: &str, bytes: &[u8]) -> String {
        let key = BlobStore::key_for("1.2", "1.2.1", sop).unwrap();
        let mut blob = blobs.begin().await.unwrap();
        blob.write(bytes).await.unwrap();
        blob.commit(blobs, &key).await.unwrap();
        key
    }

    /// A re-send that crashed between its file and its index row leaves the acknowledged
    /// version as it was (row and bytes), and an orphan that the next start removes; a
    /// re-send that completes switches the row and removes the old version's file.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_crashed_resend_leaves_the_acknowledged_version_and_an_orphan() {
        let (_dir, blobs, index, acknowledged) = acknowledged_v1().await;
        // The re-send: durable, then the process dies before the index commit.
        let crashed = put(&blobs, "1.2.1.1", b"v2").await;
        assert_ne!(crashed, acknowledged);
        assert_eq!(std::fs::read(blobs.path(&acknowledged)).unwrap(), b"v1");

        // The next start: the cutoff is its start time, after the crashed write.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let swept = recover(&index, &blobs, SystemTime::now()).await.unwrap();
        assert_eq!(swept.files, 2);
        assert_eq!(swept.orphans_removed, 1);
        assert!(!blobs.exists(&crashed).await);
        assert_eq!(std::fs::read(blobs.path(&acknowledged)).unwrap(), b"v1");
        let selection = crate::model::Selection {
            sop_instance_uids: vec!["1.2.1.1".into()],
            ..Default::default()
        };
        let located = index.locate(&selection).await.unwrap();
        assert_eq!(located[0].blob_key, acknowledged);

        // A re-send that completes: the row names the new file; the old one is queued and
        // goes after the grace period (a reader may hold its key), then nothing is queued
        // or orphaned.
        let second = put(&blobs, "1.2.1.1", b"v3").await;
        index_batch(&blobs, &index, &[record(&second, "1.2.1.1")])
            .await
            .unwrap();
        assert_eq!(std::fs::read(blobs.path(&second)).unwrap(), b"v3");
        assert_eq!(
            index.queued_blob_deletions(10).await.unwrap(),
            vec![acknowledged.clone()]
        );
        let later = crate::clock::unix_seconds()
            + crate::store::delete::SUPERSEDED_GRACE.as_secs() as i64
            + 1;
        crate::store::delete::sweep_superseded(&index, &blobs, later)
            .await
            .unwrap();
        assert!(!blobs.exists(&acknowledged).await);
        assert!(index.queued_blob_deletions(10).await.unwrap().is_empty());
        let located = index.locate(&selection).await.unwrap();
        assert_eq!(located[0].blob_key, second);

        // A file written after the cutoff (an ingest running during the sweep) is left.
        let cutoff = SystemTime::now() - Duration::from_secs(1);
        let running = put(&blobs, "1.2.1.2", b"in flight").await;
        let swept = sweep_orphans(&index, &blobs, cutoff).await.unwrap();
        assert_eq!(swept.orphans_removed, 0);
        assert!(blobs.exists(&running).await);
        index.close().await;
    }

    /// A failed index write removes the new version's file only, never the one the
    /// existing row names.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_failed_index_write_keeps_the_acknowledged_file() {
        let (_dir, blobs, index, acknowledged) = acknowledged_v1().await;
        let resent = put(&blobs, "1.2.1.1", b"v2").await;
        // A record the index refuses (no Study Instance UID), in the same batch as the
        // re-send and a record naming the acknowledged file: the whole batch fails.
        let mut refused = record(&resent, "1.2.1.1");
        refused.values.remove(&dicom_core::Tag(0x0020, 0x000D));
        let again = record(&acknowledged, "1.2.1.1");
        let failed = index_batch(&blobs, &index, &[again, refused]).await;
        assert!(failed.is_err());
        assert!(!blobs.exists(&resent).await);
        assert_eq!(std::fs::read(blobs.path(&acknowledged)).unwrap(), b"v1");
        index.close().await;
    }
}
