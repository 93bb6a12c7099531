//! The SQLite index backend (embedded default): one database file in WAL mode.

use super::sql::{
    delegate_index_to_inner, migrator, release_outside_transaction, Dialect, SqlIndex,
};
use super::IndexError;
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
    (
        3,
        "gateway",
        include_str!("migrations/sqlite/0003_gateway.sql"),
    ),
    (
        4,
        "audit_chain",
        include_str!("migrations/sqlite/0004_audit_chain.sql"),
    ),
    (
        5,
        "delete",
        include_str!("migrations/sqlite/0005_delete.sql"),
    ),
    (
        6,
        "readiness",
        include_str!("migrations/sqlite/0006_readiness.sql"),
    ),
    (
        7,
        "registry",
        include_str!("migrations/sqlite/0007_registry.sql"),
    ),
    (8, "nodes", include_str!("migrations/sqlite/0008_nodes.sql")),
    (
        9,
        "audit_correlation",
        include_str!("migrations/sqlite/0009_audit_correlation.sql"),
    ),
    (
        10,
        "national_scale",
        include_str!("migrations/sqlite/0010_national_scale.sql"),
    ),
    (
        11,
        "audit_trace",
        include_str!("migrations/sqlite/0011_audit_trace.sql"),
    ),
    (
        12,
        "ingest_journal",
        include_str!("migrations/sqlite/0012_ingest_journal.sql"),
    ),
    (
        13,
        "study_values",
        include_str!("migrations/sqlite/0013_study_values.sql"),
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
    /// timeout, and case-sensitive LIKE (as in PostgreSQL) — except the one connection of
    /// the ingest journal's transactions (`synchronous=NORMAL`, see
    /// [`Index::upsert_instances_journaled`](super::Index::upsert_instances_journaled)).
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
        let mut pool = SqlitePoolOptions::new()
            .max_connections(if in_memory { 1 } else { 4 })
            .after_release(release_outside_transaction);
        if in_memory {
            pool = pool.idle_timeout(None).max_lifetime(None);
        }
        let pool = pool.connect_with(options.clone()).await?;
        migrator(MIGRATIONS).run(&pool).await?;
        let mut inner = SqlIndex::new(pool, Dialect::Sqlite);
        if !in_memory {
            // The ingest journal's transactions (`store::journal`): their durability comes
            // from the journal's flush before them and the redo at start, not from a WAL
            // fsync of their own. One connection: the group commit runs one at a time.
            let deferred = SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(0)
                .after_release(release_outside_transaction)
                .connect_lazy_with(options.synchronous(SqliteSynchronous::Normal));
            inner = inner.with_deferred(deferred);
        }
        Ok(SqliteIndex { inner })
    }

    /// The connection pool (for the admin CLI and tests).
    pub fn pool(&self) -> &SqlitePool {
        &self.inner.pool
    }

    /// Close every connection (checkpointing the WAL).
    pub async fn close(&self) {
        if let Some(deferred) = &self.inner.deferred {
            deferred.close().await;
        }
        self.inner.pool.close().await;
    }
}

delegate_index_to_inner!(SqliteIndex);
