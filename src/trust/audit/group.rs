//! Group commit of audit records: the records that arrive while one transaction writes go
//! into the next, one transaction (one fsync) for all of them.
//!
//! Every DICOMweb request and association writes a record, and every record was a write
//! transaction of its own, serialised on the chain head: under 200 concurrent readers the
//! index did little but commit audit records one by one, and the C-STOREs' index writes
//! queued behind them (issue 16, load test: a re-send of 40 instances took 11 s with 50
//! readers, 42-122 s with 200). Now a caller queues its record and waits for the writer
//! lock; the first through takes the whole queue and writes it as one batch
//! ([`Index::append_audit_batch`]); the others find their record written when it is their
//! turn. No task of its own, so it works wherever an [`Audit`](super::Audit) is used.
//!
//! A batch the index refuses is written again record by record, so that each caller gets
//! its own answer (and one bad record does not fail the others). A caller that goes away
//! while it writes a batch (a cancelled request) leaves the others' records unwritten:
//! they notice and write their own.

use crate::store::index::AuditRecord;
use crate::store::{Index, IndexError};
use std::sync::Mutex;
use tokio::sync::oneshot;

/// Largest batch of one transaction.
const MAX_BATCH: usize = 512;

type Reply = oneshot::Sender<Result<AuditRecord, IndexError>>;

/// A record waiting for its batch.
struct Queued {
    record: AuditRecord,
    syslog: Option<String>,
    reply: Reply,
}

/// The queue and the writer lock of one audit trail.
#[derive(Default)]
pub(super) struct GroupCommit {
    queue: Mutex<Vec<Queued>>,
    /// Held by the caller writing a batch (FIFO: the others wait their turn in order).
    writer: tokio::sync::Mutex<()>,
}

impl GroupCommit {
    /// Append `record` (with its syslog message) to the chain in `index`, in a batch with
    /// whatever else is queued; the stored record.
    pub(super) async fn append(
        &self,
        index: &dyn Index,
        record: AuditRecord,
        syslog: Option<String>,
    ) -> Result<AuditRecord, IndexError> {
        let (reply, mut answer) = oneshot::channel();
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Queued {
                record: record.clone(),
                syslog: syslog.clone(),
                reply,
            });
        loop {
            let _turn = self.writer.lock().await;
            match answer.try_recv() {
                Ok(result) => return result,
                Err(oneshot::error::TryRecvError::Closed) => {
                    // Taken by a batch whose writer went away: on our own.
                    return index.append_audit(&record, syslog.as_deref()).await;
                }
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            let batch: Vec<Queued> = {
                let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                let n = queue.len().min(MAX_BATCH);
                queue.drain(..n).collect()
            };
            if batch.is_empty() {
                // Our record is in a batch being answered right now: wait for it.
                drop(_turn);
                return match answer.await {
                    Ok(result) => result,
                    Err(_) => index.append_audit(&record, syslog.as_deref()).await,
                };
            }
            write(index, batch).await;
        }
    }
}

/// Write `batch` in one transaction and answer each caller; record by record when the
/// batch is refused, but not when the database cannot be reached: then every caller gets
/// that answer at once (each record again would wait the pool's timeout once more, in turn:
/// a QIDO-RS with PostgreSQL down took 15 s to get its 503).
async fn write(index: &dyn Index, batch: Vec<Queued>) {
    let items: Vec<(&AuditRecord, Option<&str>)> = batch
        .iter()
        .map(|q| (&q.record, q.syslog.as_deref()))
        .collect();
    match index.append_audit_batch(&items).await {
        Ok(stored) if stored.len() == batch.len() => {
            for (q, s) in batch.into_iter().zip(stored) {
                let _ = q.reply.send(Ok(s));
            }
        }
        Err(e) if e.is_unavailable() => {
            for q in batch {
                let _ = q.reply.send(Err(unavailable_like(&e)));
            }
        }
        _ => {
            for q in batch {
                let result = index.append_audit(&q.record, q.syslog.as_deref()).await;
                let _ = q.reply.send(result);
            }
        }
    }
}

/// An error that says what `e` says, for another caller ([`IndexError`] is not `Clone`):
/// still [`IndexError::is_unavailable`], so each front answers 503 as for its own.
fn unavailable_like(e: &IndexError) -> IndexError {
    match e {
        IndexError::Database(sqlx::Error::PoolTimedOut) => {
            IndexError::Database(sqlx::Error::PoolTimedOut)
        }
        IndexError::Database(sqlx::Error::PoolClosed) => {
            IndexError::Database(sqlx::Error::PoolClosed)
        }
        IndexError::Database(sqlx::Error::Io(io)) => IndexError::Database(sqlx::Error::Io(
            std::io::Error::new(io.kind(), io.to_string()),
        )),
        other => IndexError::Database(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            other.to_string(),
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{chain, Audit, AuditConfig, AuditEntry};
    use crate::store::index::SqliteIndex;
    use crate::store::Index;
    use std::collections::BTreeSet;
    use std::sync::Arc;

    /// Many records at once (the shape of many concurrent requests): each caller gets its
    /// own record back with a place of its own, in one chain that verifies, each with its
    /// patient lookup and its syslog message.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_records_share_transactions_and_keep_one_chain() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("index.db").display());
        let index: Arc<dyn Index> = Arc::new(SqliteIndex::open(&url).await.unwrap());
        let config = AuditConfig {
            syslog_host: Some("127.0.0.1".into()),
            ..Default::default()
        };
        let audit = Arc::new(Audit::queue_only(&config, index.clone()));
        let n = 120;
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let audit = audit.clone();
                tokio::spawn(async move {
                    let stored = audit
                        .append(AuditEntry {
                            time: crate::clock::now_rfc3339(),
                            operation: "QIDO-RS".into(),
                            outcome: "success".into(),
                            detail: format!("request {i}"),
                            patient_ids: vec!["999999990".into()],
                            ..Default::default()
                        })
                        .await
                        .unwrap();
                    (i, stored)
                })
            })
            .collect();
        let mut seqs = BTreeSet::new();
        for t in tasks {
            let (i, stored) = t.await.unwrap();
            assert_eq!(stored.detail, format!("request {i}"), "its own record back");
            assert!(seqs.insert(stored.seq), "seq {} twice", stored.seq);
        }
        assert_eq!(seqs, (1..=n as i64).collect::<BTreeSet<_>>());
        let v = chain::verify(index.as_ref()).await.unwrap();
        assert!(v.ok, "{v:?}");
        assert_eq!(v.records, n as i64);
        let patient = index
            .audit_records_for_patient("999999990", 10_000)
            .await
            .unwrap();
        assert_eq!(patient.len(), n);
        assert_eq!(index.audit_outbox_len().await.unwrap(), n as u64);
    }
}
