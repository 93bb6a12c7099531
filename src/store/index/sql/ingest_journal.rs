//! The ingest journal's side of the index (issue 16 section 5, `store::journal`, migration
//! 0012): the group commit's transactions whose flush the journal stands in for, and the
//! mark of the last journal record the index holds.

use super::instances::Written;
use super::sql_impl;
use super::statement::Dialect;
use super::SqlIndex;
use crate::store::index::{Gate, GatedCommit, IndexError};
use crate::store::InstanceRecord;
use sqlx::Row;
use sqlx::Transaction;

sql_impl! {
    /// Upsert `records` (as [`upsert_instances_superseding`](Self::upsert_instances_superseding))
    /// and mark journal `journal`'s records up to `seq` as indexed, in one transaction. With
    /// `durable == false` the commit does not wait for its flush (SQLite: on the connection
    /// with `synchronous=NORMAL`; PostgreSQL: `synchronous_commit = off` for it): a `kill -9`
    /// loses nothing (the commit is in the database's log in the page cache, or the server
    /// has it), a power loss may take this and later transactions, and the journal's records
    /// after the surviving mark are indexed again at start. Returns the superseded keys.
    pub async fn upsert_instances_journaled(
        &self,
        records: &[InstanceRecord],
        journal: &str,
        seq: i64,
        durable: bool,
    ) -> Result<Vec<String>, IndexError> {
        let mut tx = match (&self.deferred, durable) {
            (Some(deferred), false) => deferred.begin_with("BEGIN IMMEDIATE").await?,
            _ => self.begin_write().await?,
        };
        if !durable && self.dialect == Dialect::Postgres {
            sqlx::query("SET LOCAL synchronous_commit = off")
                .execute(&mut *tx)
                .await?;
        }
        let mut written = Written::default();
        let superseded = self.upsert_all(&mut tx, records, &mut written).await?;
        self.flush(&mut tx, written).await?;
        self.mark_in(&mut tx, journal, seq, false).await?;
        tx.commit().await?;
        Ok(superseded)
    }

    /// See [`Index::upsert_instances_gated`](crate::store::index::Index::upsert_instances_gated).
    pub async fn upsert_instances_gated(
        &self,
        records: &[InstanceRecord],
        journal: &str,
        gate: tokio::sync::oneshot::Receiver<Gate>,
    ) -> Result<Option<GatedCommit>, IndexError> {
        let mut tx = match &self.deferred {
            Some(deferred) => deferred.begin_with("BEGIN IMMEDIATE").await?,
            None => self.begin_write().await?,
        };
        let mut written = Written::default();
        let superseded = self.upsert_all(&mut tx, records, &mut written).await?;
        self.flush(&mut tx, written).await?;
        let Ok(Gate { seq, durable }) = gate.await else {
            tx.rollback().await?;
            return Ok(None);
        };
        let seq_i64 = i64::try_from(seq).unwrap_or(i64::MAX);
        if !durable && self.dialect == Dialect::Postgres {
            sqlx::query("SET LOCAL synchronous_commit = off")
                .execute(&mut *tx)
                .await?;
        }
        self.mark_in(&mut tx, journal, seq_i64, false).await?;
        tx.commit().await?;
        if durable && self.deferred.is_some() {
            // Committed on the connection that does not flush: flushed now.
            self.sync_ingest_journal(journal, seq_i64).await?;
        }
        Ok(Some(GatedCommit {
            seq,
            durable,
            superseded,
        }))
    }

    async fn mark_in(
        &self,
        tx: &mut Transaction<'static, DB>,
        journal: &str,
        seq: i64,
        sync: bool,
    ) -> Result<(), IndexError> {
        let mut sql = self.sql();
        sql.push("INSERT INTO ingest_journal (journal, indexed_seq) VALUES (")
            .bind(journal)
            .push(", ")
            .bind_int(seq)
            .push(") ON CONFLICT (journal) DO UPDATE SET indexed_seq = CASE WHEN ")
            .push("excluded.indexed_seq > ingest_journal.indexed_seq THEN excluded.indexed_seq ")
            .push("ELSE ingest_journal.indexed_seq END");
        if sync {
            // Always a change, so always a commit that writes (and flushes).
            sql.push(", syncs = ingest_journal.syncs + 1");
        }
        Self::query(&sql).execute(&mut **tx).await?;
        Ok(())
    }

    /// The mark of journal `journal`: the number of the last record whose index rows a
    /// committed transaction holds (0: none).
    pub async fn ingest_journal_seq(&self, journal: &str) -> Result<i64, IndexError> {
        let mut sql = self.sql();
        sql.push("SELECT indexed_seq FROM ingest_journal WHERE journal = ")
            .bind(journal);
        match Self::query(&sql).fetch_optional(&self.pool).await? {
            Some(row) => Ok(row.try_get::<i64, usize>(0)?),
            None => Ok(0),
        }
    }

    /// Raise the mark of `journal` to `seq` (never lower it) in a transaction that waits
    /// for its flush: once this returns, every transaction committed before it is durable
    /// too (the database's log is written in order).
    pub async fn sync_ingest_journal(&self, journal: &str, seq: i64) -> Result<(), IndexError> {
        let mut tx = self.begin_write().await?;
        self.mark_in(&mut tx, journal, seq, true).await?;
        tx.commit().await?;
        Ok(())
    }
}
