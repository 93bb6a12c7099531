//! The PostgreSQL index backend, for several gateway processes sharing one database.

use super::sql::{
    delegate_index_to_inner, migrator, release_outside_transaction, Dialect, SqlIndex,
};
use super::IndexError;
use sqlx::postgres::{PgPool, PgPoolOptions};
use std::time::Duration;

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("migrations/postgres/0001_init.sql")),
    (
        2,
        "bits_allocated",
        include_str!("migrations/postgres/0002_bits_allocated.sql"),
    ),
    (
        3,
        "gateway",
        include_str!("migrations/postgres/0003_gateway.sql"),
    ),
    (
        4,
        "audit_chain",
        include_str!("migrations/postgres/0004_audit_chain.sql"),
    ),
    (
        5,
        "delete",
        include_str!("migrations/postgres/0005_delete.sql"),
    ),
    (
        6,
        "readiness",
        include_str!("migrations/postgres/0006_readiness.sql"),
    ),
    (
        7,
        "registry",
        include_str!("migrations/postgres/0007_registry.sql"),
    ),
    (
        8,
        "nodes",
        include_str!("migrations/postgres/0008_nodes.sql"),
    ),
    (
        9,
        "audit_correlation",
        include_str!("migrations/postgres/0009_audit_correlation.sql"),
    ),
    (
        10,
        "national_scale",
        include_str!("migrations/postgres/0010_national_scale.sql"),
    ),
    (
        11,
        "audit_trace",
        include_str!("migrations/postgres/0011_audit_trace.sql"),
    ),
    (
        12,
        "ingest_journal",
        include_str!("migrations/postgres/0012_ingest_journal.sql"),
    ),
    (
        13,
        "study_values",
        include_str!("migrations/postgres/0013_study_values.sql"),
    ),
];

/// How long an index call waits for a connection (a free one from the pool, or a new one
/// while the server refuses them) before it fails. Generous for a busy pool (a wait of
/// seconds means hundreds of transactions queued), short enough that a request during a
/// PostgreSQL outage fails within a client's patience (issue 16, item 4).
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The index in a PostgreSQL database (`postgres://user@host/db`).
#[derive(Debug, Clone)]
pub struct PostgresIndex {
    inner: SqlIndex<sqlx::Postgres>,
}

impl PostgresIndex {
    /// Connect (pool of 8) and migrate (migrations take an advisory lock, so several
    /// gateways may start at once).
    ///
    /// A connection is waited for at most [`ACQUIRE_TIMEOUT`]: while the server is down
    /// (restart, failover) sqlx keeps retrying a refused connection until then, so a request
    /// in that window either gets its connection once the server is back or fails after
    /// those seconds, instead of hanging (every index call of a request would wait again).
    pub async fn open(url: &str) -> Result<Self, IndexError> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .after_release(release_outside_transaction)
            .connect(url)
            .await?;
        migrator(MIGRATIONS).run(&pool).await?;
        Ok(PostgresIndex {
            inner: SqlIndex::new(pool, Dialect::Postgres),
        })
    }

    /// The connection pool (for the admin CLI and tests).
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// Close every connection.
    pub async fn close(&self) {
        self.inner.pool.close().await;
    }
}

delegate_index_to_inner!(PostgresIndex);
