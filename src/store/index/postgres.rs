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
];

/// The index in a PostgreSQL database (`postgres://user@host/db`).
#[derive(Debug, Clone)]
pub struct PostgresIndex {
    inner: SqlIndex<sqlx::Postgres>,
}

impl PostgresIndex {
    /// Connect (pool of 8) and migrate (migrations take an advisory lock, so several
    /// gateways may start at once).
    pub async fn open(url: &str) -> Result<Self, IndexError> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(30))
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
