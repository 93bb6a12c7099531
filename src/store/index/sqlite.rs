//! The SQLite index backend (embedded default): one database file in WAL mode.

use super::sql::{migrator, Dialect, SqlIndex};
use super::{AuditEvent, Index, IndexError, UpsertOutcome};
use crate::core::{InstanceLocation, Match, Query, Selection};
use crate::store::InstanceRecord;
use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::str::FromStr;
use std::time::Duration;

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("migrations/sqlite/0001_init.sql")),
    (
        2,
        "bits_allocated",
        include_str!("migrations/sqlite/0002_bits_allocated.sql"),
    ),
];

/// The index in a SQLite database (`sqlite://path/to/index.db`).
#[derive(Debug, Clone)]
pub struct SqliteIndex {
    inner: SqlIndex<sqlx::Sqlite>,
}

impl SqliteIndex {
    /// Open (creating the file if missing) and migrate. Every connection runs in WAL mode with
    /// `synchronous=FULL` (an acknowledged store survives power loss), foreign keys on, a busy
    /// timeout, and case-sensitive LIKE (as in PostgreSQL).
    pub async fn open(url: &str) -> Result<Self, IndexError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(30))
            .pragma("case_sensitive_like", "ON");
        // Each connection to an in-memory database is a database of its own: keep one.
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let mut pool = SqlitePoolOptions::new().max_connections(if in_memory { 1 } else { 4 });
        if in_memory {
            pool = pool.idle_timeout(None).max_lifetime(None);
        }
        let pool = pool.connect_with(options).await?;
        migrator(MIGRATIONS).run(&pool).await?;
        Ok(SqliteIndex {
            inner: SqlIndex::new(pool, Dialect::Sqlite),
        })
    }

    /// The connection pool (for the admin CLI and tests).
    pub fn pool(&self) -> &SqlitePool {
        &self.inner.pool
    }

    /// Close every connection (checkpointing the WAL).
    pub async fn close(&self) {
        self.inner.pool.close().await;
    }
}

#[async_trait]
impl Index for SqliteIndex {
    async fn upsert_instance(&self, record: &InstanceRecord) -> Result<UpsertOutcome, IndexError> {
        self.inner.upsert_instance(record).await
    }

    async fn upsert_instances(
        &self,
        records: &[InstanceRecord],
    ) -> Result<Vec<UpsertOutcome>, IndexError> {
        self.inner.upsert_instances(records).await
    }

    async fn find(&self, query: &Query) -> Result<Vec<Match>, IndexError> {
        self.inner.find(query).await
    }

    async fn locate(&self, selection: &Selection) -> Result<Vec<InstanceLocation>, IndexError> {
        self.inner.locate(selection, None).await
    }

    async fn locate_page(
        &self,
        selection: &Selection,
        offset: u32,
        limit: u32,
    ) -> Result<Vec<InstanceLocation>, IndexError> {
        self.inner.locate(selection, Some((offset, limit))).await
    }

    async fn transfer_syntaxes(&self, selection: &Selection) -> Result<Vec<String>, IndexError> {
        self.inner.transfer_syntaxes(selection).await
    }

    async fn remove_instance(&self, sop_instance_uid: &str) -> Result<Option<String>, IndexError> {
        self.inner.remove_instance(sop_instance_uid).await
    }

    async fn record_audit(&self, event: &AuditEvent) -> Result<(), IndexError> {
        self.inner.record_audit(event).await
    }

    async fn audit_events(&self, limit: u32) -> Result<Vec<AuditEvent>, IndexError> {
        self.inner.audit_events(limit).await
    }
}
