//! The one delete path (DICOMweb `DELETE`, `beeldbrug delete`, retention): index rows first,
//! then blobs.
//!
//! 1. One index transaction removes the instances (and the series, studies and patients left
//!    empty) and queues their blob keys in `blob_deletion`. From its commit on, nothing of
//!    it is found (C-FIND, QIDO-RS) or located for a retrieve (C-MOVE, C-GET, WADO-RS).
//! 2. The blob files are removed, then their keys leave the queue.
//!
//! A crash between 1 and 2 leaves files that nothing serves, named in the queue;
//! [`sweep`] (at every start, and with each retention pass) removes them. The reverse order
//! (files first) could leave rows whose files are gone: found by a search, failing on
//! retrieve. A key that an instance row references again (the instance was sent anew after
//! the delete) is only taken off the queue, its file kept.

use super::{BlobStore, Index, IndexError};
use crate::clock::unix_seconds;
use crate::model::{InstanceLocation, Selection};
use std::collections::BTreeSet;

#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// What a delete removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deleted {
    pub instances: usize,
    pub bytes: u64,
    /// Distinct patients and studies of the removed instances.
    pub patient_ids: Vec<String>,
    pub study_uids: Vec<String>,
    /// Blob files whose removal failed: they stay queued for the next [`sweep`].
    pub blobs_left: usize,
}

impl Deleted {
    pub fn is_empty(&self) -> bool {
        self.instances == 0
    }

    /// "N instances (B bytes) of S studies deleted" for audit details and logs.
    pub fn describe(&self) -> String {
        let mut text = format!(
            "{} instances ({} bytes) of {} studies deleted",
            self.instances,
            self.bytes,
            self.study_uids.len()
        );
        if self.blobs_left > 0 {
            text.push_str(&format!(
                "; {} files left for the next sweep",
                self.blobs_left
            ));
        }
        text
    }
}

/// Delete what the selection names (an empty selection deletes nothing).
pub async fn delete(
    index: &dyn Index,
    blobs: &BlobStore,
    selection: &Selection,
) -> Result<Deleted, DeleteError> {
    if selection.is_empty() {
        return Ok(Deleted::default());
    }
    let removed = index.delete_instances(selection, unix_seconds()).await?;
    let keys: Vec<String> = removed.iter().map(|l| l.blob_key.clone()).collect();
    let blobs_left = purge(index, blobs, &keys).await?;
    Ok(summarise(&removed, blobs_left))
}

fn summarise(removed: &[InstanceLocation], blobs_left: usize) -> Deleted {
    let distinct = |f: fn(&InstanceLocation) -> &String| {
        removed
            .iter()
            .map(f)
            .filter(|v| !v.is_empty())
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
    };
    Deleted {
        instances: removed.len(),
        bytes: removed.iter().map(|l| l.size_bytes).sum(),
        patient_ids: distinct(|l| &l.patient_id),
        study_uids: distinct(|l| &l.study_instance_uid),
        blobs_left,
    }
}

/// Remove the files of queued keys and take them off the queue; returns how many could not
/// be removed (they stay queued). Also the ingest path's removal of replaced versions.
pub(crate) async fn purge(
    index: &dyn Index,
    blobs: &BlobStore,
    keys: &[String],
) -> Result<usize, IndexError> {
    if keys.is_empty() {
        return Ok(0);
    }
    let in_use: BTreeSet<String> = index.blob_keys_in_use(keys).await?.into_iter().collect();
    let mut done = Vec::with_capacity(keys.len());
    let mut left = 0;
    for key in keys {
        if in_use.contains(key) {
            done.push(key.clone());
            continue;
        }
        match blobs.remove(key).await {
            Ok(()) => {
                remove_empty_parents(blobs, key).await;
                done.push(key.clone());
            }
            Err(super::BlobError::BadKey(_)) => done.push(key.clone()),
            Err(e) => {
                tracing::warn!(error = %e, "cannot remove a deleted instance's file; retried at the next sweep");
                left += 1;
            }
        }
    }
    index.clear_blob_deletions(&done).await?;
    Ok(left)
}

/// Remove the series and study directories a removed blob leaves empty (best effort: a
/// directory that an ingest fills again meanwhile is simply not empty).
async fn remove_empty_parents(blobs: &BlobStore, key: &str) {
    let path = blobs.path(key);
    let root = blobs.path("");
    let mut dir = path.parent();
    while let Some(d) = dir {
        if d == root || !d.starts_with(&root) || tokio::fs::remove_dir(d).await.is_err() {
            break;
        }
        dir = d.parent();
    }
}

/// How long the file of a replaced instance version stays after the re-send that replaced
/// it was indexed. A reader that located the instance just before (on this node or on
/// another node of the same index and bucket) still holds the old key and reads that file,
/// a moment or a whole slow response later; removing it at once answered such a reader 404
/// for an instance that exists (the load test of issue 16, three nodes). The periodic
/// [`sweep_superseded`] removes the files once they are older than this.
pub const SUPERSEDED_GRACE: std::time::Duration = std::time::Duration::from_secs(120);

/// How often a node runs [`sweep_superseded`].
pub const SUPERSEDED_SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

/// Finish deletions a crash interrupted: remove the files still queued. Returns how many
/// keys were taken off the queue.
pub async fn sweep(index: &dyn Index, blobs: &BlobStore) -> Result<usize, DeleteError> {
    sweep_queued_before(index, blobs, i64::MAX).await
}

/// Remove the queued files queued before `now - SUPERSEDED_GRACE` (Unix seconds): the
/// replaced versions of re-sent instances once no reader can still hold their keys, and
/// what an interrupted delete left. Every node may run it: removing a missing file and
/// clearing a cleared key are no-ops.
pub async fn sweep_superseded(
    index: &dyn Index,
    blobs: &BlobStore,
    now: i64,
) -> Result<usize, DeleteError> {
    sweep_queued_before(
        index,
        blobs,
        now.saturating_sub(SUPERSEDED_GRACE.as_secs() as i64),
    )
    .await
}

/// [`sweep_superseded`] every [`SUPERSEDED_SWEEP_INTERVAL`] until `shutdown`.
pub async fn run_superseded_sweeps(
    index: std::sync::Arc<dyn Index>,
    blobs: BlobStore,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut ticks = tokio::time::interval(SUPERSEDED_SWEEP_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        if let Err(e) = sweep_superseded(index.as_ref(), &blobs, unix_seconds()).await {
            tracing::warn!(error = %e, "cannot remove the files of replaced instance versions yet");
        }
    }
}

async fn sweep_queued_before(
    index: &dyn Index,
    blobs: &BlobStore,
    before: i64,
) -> Result<usize, DeleteError> {
    const BATCH: u32 = 1000;
    let mut cleared = 0;
    loop {
        let keys = index.queued_blob_deletions_before(before, BATCH).await?;
        if keys.is_empty() {
            break;
        }
        let left = purge(index, blobs, &keys).await?;
        cleared += keys.len() - left;
        if left > 0 {
            // Files that cannot be removed now: try again at the next sweep.
            break;
        }
    }
    if cleared > 0 {
        tracing::debug!(
            files = cleared,
            "removed the queued files of deleted instances and replaced instance versions"
        );
    }
    Ok(cleared)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::index::SqliteIndex;
    use crate::store::InstanceRecord;

    fn record(study: &str, series: &str, sop: &str) -> InstanceRecord {
        let mut r = InstanceRecord::default();
        r.values
            .insert(dicom_core::Tag(0x0010, 0x0020), "P1".to_string());
        r.values
            .insert(dicom_core::Tag(0x0020, 0x000D), study.to_string());
        r.values
            .insert(dicom_core::Tag(0x0020, 0x000E), series.to_string());
        r.values
            .insert(dicom_core::Tag(0x0008, 0x0018), sop.to_string());
        r.blob_key = BlobStore::key_for(study, series, sop).unwrap();
        r.size_bytes = 4;
        r
    }

    /// Store (and index) a version of instance 1.2.1.1 through `store`: its key.
    async fn store_version(store: &BlobStore, index: &SqliteIndex, content: &[u8]) -> String {
        let r = record("1.2", "1.2.1", "1.2.1.1");
        let mut blob = store.begin().await.unwrap();
        blob.write(content).await.unwrap();
        blob.commit(store, &r.blob_key).await.unwrap();
        crate::store::ingest::index_batch(store, index, std::slice::from_ref(&r))
            .await
            .unwrap();
        r.blob_key
    }

    /// Two nodes on one index and one blob directory: node B locates an instance, node A
    /// stores it again (a new version, indexed); B then reads the key it located. The load
    /// test of issue 16 saw this answered 404 when the replaced version's file went with
    /// the re-send's commit. It stays for `SUPERSEDED_GRACE`, then a sweep (any node's)
    /// removes it.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_reader_holding_a_replaced_version_still_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let node_a = BlobStore::open(dir.path()).await.unwrap();
        let node_b = BlobStore::open(dir.path()).await.unwrap();
        let url = format!("sqlite://{}", dir.path().join("index.db").display());
        let index = SqliteIndex::open(&url).await.unwrap();
        let first = store_version(&node_a, &index, b"v1").await;
        let selection = Selection {
            sop_instance_uids: vec!["1.2.1.1".into()],
            ..Default::default()
        };
        let located = index.locate(&selection).await.unwrap();
        assert_eq!(located[0].blob_key, first);

        let second = store_version(&node_a, &index, b"v2").await;
        assert_eq!(index.locate(&selection).await.unwrap()[0].blob_key, second);
        // B reads what it located before the re-send.
        let mut read = Vec::new();
        let mut file = node_b.open_read(&located[0].blob_key).await.unwrap();
        tokio::io::AsyncReadExt::read_to_end(&mut file, &mut read)
            .await
            .unwrap();
        assert_eq!(read, b"v1");

        // A sweep within the grace period keeps it; one after removes it, not the new one.
        let now = unix_seconds();
        assert_eq!(sweep_superseded(&index, &node_b, now).await.unwrap(), 0);
        assert!(node_b.exists(&first).await);
        let later = now + SUPERSEDED_GRACE.as_secs() as i64 + 1;
        assert_eq!(sweep_superseded(&index, &node_b, later).await.unwrap(), 1);
        assert!(!node_a.exists(&first).await);
        assert!(node_a.exists(&second).await);
        assert!(index.queued_blob_deletions(10).await.unwrap().is_empty());
        index.close().await;
    }

    /// A crash after the index transaction and before the files went: the rows are gone
    /// (nothing is served), the files are queued, and the sweep at the next start removes
    /// them — but not a file whose instance was stored again meanwhile.
    #[tokio::test(flavor = "multi_thread")]
    async fn sweep_finishes_an_interrupted_delete() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path()).await.unwrap();
        let url = format!("sqlite://{}", dir.path().join("index.db").display());
        let index = SqliteIndex::open(&url).await.unwrap();
        let records = [
            record("1.2", "1.2.1", "1.2.1.1"),
            record("1.2", "1.2.1", "1.2.1.2"),
        ];
        for r in &records {
            let mut blob = blobs.begin().await.unwrap();
            blob.write(b"DICM").await.unwrap();
            blob.commit(&blobs, &r.blob_key).await.unwrap();
            index.upsert_instance(r).await.unwrap();
        }
        let selection = Selection {
            study_uids: vec!["1.2".into()],
            ..Default::default()
        };
        // Step 1 only, as if the process died right after the commit.
        let removed = index
            .delete_instances(&selection, unix_seconds())
            .await
            .unwrap();
        assert_eq!(removed.len(), 2);
        assert!(index.locate(&selection).await.unwrap().is_empty());
        assert_eq!(index.queued_blob_deletions(10).await.unwrap().len(), 2);
        // The second instance is sent again before the restart.
        index.upsert_instance(&records[1]).await.unwrap();

        assert_eq!(sweep(&index, &blobs).await.unwrap(), 2);
        assert!(!blobs.exists(&records[0].blob_key).await);
        assert!(blobs.exists(&records[1].blob_key).await);
        assert!(index.queued_blob_deletions(10).await.unwrap().is_empty());
        assert_eq!(sweep(&index, &blobs).await.unwrap(), 0);

        // The full path removes rows, files and the emptied directories.
        let deleted = delete(&index, &blobs, &selection).await.unwrap();
        assert_eq!(deleted.instances, 1);
        assert_eq!(deleted.patient_ids, vec!["P1".to_string()]);
        assert!(!dir.path().join("blobs/1.2").exists());
        assert!(delete(&index, &blobs, &selection).await.unwrap().is_empty());
        index.close().await;
    }
}
