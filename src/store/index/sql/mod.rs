//! What the SQLite and PostgreSQL backends share: [`SqlIndex`], the [`Index`](super::Index)
//! logic written once over any sqlx database, one file per concern. The backends only add
//! their connection options, migrations and [`Dialect`] (placeholders, `LIMIT` quirks, how a
//! write transaction begins).
//!
//! - [`statement`]: SQL text and its bound parameters, per dialect;
//! - [`schema`]: the tables and columns of the four query levels, the name normalisation;
//! - [`query`]: C-FIND/QIDO matching, locating and counting instances;
//! - [`instances`]: storing and removing instances (with their emptied parents);
//! - [`ingest_journal`]: the ingest journal's transactions, whose flush the journal stands in
//!   for, and its redo mark;
//! - [`cache_state`], [`forward_queue`]: the gateway mode's tables;
//! - [`audit`]: the audit hash chain, its per-patient lookup and the syslog outbox;
//! - [`delete`]: deletion with its blob queue, and the studies received by STOW-RS;
//! - [`readiness`]: the write probe of `/ready`;
//! - [`registry`]: the XDS-I registry's objects, associations and publications, and the
//!   studies due for publication;
//! - [`pool`]: the pool hook and the migrator both backends use;
//! - [`delegate`]: the `Index` implementation of a backend, forwarded to its `SqlIndex`.

mod audit;
mod cache_state;
mod delegate;
mod delete;
mod forward_queue;
mod ingest_journal;
mod instances;
mod pool;
mod query;
mod readiness;
mod registry;
mod schema;
mod statement;

pub(super) use delegate::delegate_index_to_inner;
pub(super) use pool::{migrator, release_outside_transaction};
pub(crate) use statement::Dialect;

use super::IndexError;
use sqlx::{Database, Pool, Transaction};
use statement::{Bind, Sql};

/// The [`Index`](super::Index) logic over one sqlx database; the backends wrap it.
#[derive(Debug)]
pub(crate) struct SqlIndex<DB: Database> {
    pub pool: Pool<DB>,
    pub dialect: Dialect,
    /// SQLite: one connection with `synchronous=NORMAL` for the ingest's transactions
    /// whose flush the ingest journal stands in for ([`ingest_journal`]); `None` elsewhere
    /// (PostgreSQL turns `synchronous_commit` off in the transaction instead).
    pub deferred: Option<Pool<DB>>,
}

impl<DB: Database> Clone for SqlIndex<DB> {
    fn clone(&self) -> Self {
        SqlIndex {
            pool: self.pool.clone(),
            dialect: self.dialect,
            deferred: self.deferred.clone(),
        }
    }
}

/// `impl<DB> SqlIndex<DB>` with the bounds every query needs of a sqlx database (SQLite
/// and PostgreSQL meet them): written once here, used by each concern's file.
macro_rules! sql_impl {
    ($($body:tt)*) => {
        impl<DB> SqlIndex<DB>
        where
            DB: ::sqlx::Database + ::sqlx::database::HasStatementCache,
            for<'c> &'c mut DB::Connection: ::sqlx::Executor<'c, Database = DB>,
            for<'c> &'c ::sqlx::Pool<DB>: ::sqlx::Executor<'c, Database = DB>,
            for<'q> DB::Arguments<'q>: ::sqlx::IntoArguments<'q, DB>,
            for<'q> String: ::sqlx::Encode<'q, DB>,
            for<'q> i64: ::sqlx::Encode<'q, DB>,
            for<'r> String: ::sqlx::Decode<'r, DB>,
            for<'r> i64: ::sqlx::Decode<'r, DB>,
            String: ::sqlx::Type<DB>,
            i64: ::sqlx::Type<DB>,
            usize: ::sqlx::ColumnIndex<DB::Row>,
        {
            $($body)*
        }
    };
}
pub(crate) use sql_impl;

sql_impl! {
    pub fn new(pool: Pool<DB>, dialect: Dialect) -> Self {
        SqlIndex {
            pool,
            dialect,
            deferred: None,
        }
    }

    /// This index with `deferred` for the transactions that need not wait for their flush.
    pub fn with_deferred(mut self, deferred: Pool<DB>) -> Self {
        self.deferred = Some(deferred);
        self
    }

    pub(super) fn query(sql: &Sql) -> sqlx::query::Query<'_, DB, DB::Arguments<'_>> {
        let mut q = sqlx::query::<DB>(&sql.text);
        for b in &sql.binds {
            q = match b {
                Bind::Text(s) => q.bind(s.clone()),
                Bind::Int(n) => q.bind(*n),
            };
        }
        q
    }

    /// A write transaction. SQLite takes the write lock up front (`BEGIN IMMEDIATE`) so that
    /// a transaction which reads first never fails to upgrade under concurrent writers.
    pub(super) async fn begin_write(&self) -> Result<Transaction<'static, DB>, IndexError> {
        Ok(match self.dialect {
            Dialect::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Dialect::Postgres => self.pool.begin().await?,
        })
    }

    pub(super) fn sql(&self) -> Sql {
        Sql::new(self.dialect)
    }
}
