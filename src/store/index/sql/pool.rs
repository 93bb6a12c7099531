//! What both backends set up their pools with: the hook that drops a connection handed back
//! inside a transaction, and the migrator over SQL compiled into the binary.

/// Pool hook (`after_release`, both backends): a connection that comes back to the pool still
/// inside a transaction is closed instead of being handed to the next caller.
///
/// Every write goes through sqlx's `Transaction` (rolled back on drop); nothing runs a bare
/// `BEGIN` on a pooled connection. But when SQLite fails a statement or the COMMIT with
/// SQLITE_FULL or SQLITE_IOERR it may roll the whole transaction back by itself
/// (sqlite.org/lang_transaction.html, "Response To Errors Within A Transaction"); the later
/// `ROLLBACK` then fails ("no transaction is active") and sqlx's transaction depth stays at 1.
/// Such a connection answered every later write with "attempted to call begin_with at
/// non-zero transaction depth" until restart (issue 12, item 5). A new connection costs a
/// file open; a poisoned one costs every write it is given.
pub(crate) fn release_outside_transaction<C: sqlx::Connection>(
    conn: &mut C,
    _meta: sqlx::pool::PoolConnectionMetadata,
) -> futures::future::BoxFuture<'_, Result<bool, sqlx::Error>> {
    Box::pin(async move {
        if conn.is_in_transaction() {
            // A dropped Transaction queues its ROLLBACK (SQLite: on the connection's worker
            // thread; PostgreSQL: sent with the next message). A ping runs after it.
            conn.ping().await?;
        }
        if conn.is_in_transaction() {
            tracing::warn!(
                "an index connection came back inside a transaction (a failed COMMIT or \
                 ROLLBACK, e.g. on a full disk); closing it"
            );
            return Ok(false);
        }
        Ok(true)
    })
}

/// The migrations of one backend, from SQL compiled into the binary (`(version, name, sql)`).
pub(crate) fn migrator(
    migrations: &[(i64, &'static str, &'static str)],
) -> sqlx::migrate::Migrator {
    use sqlx::migrate::{Migration, MigrationType, Migrator};
    use std::borrow::Cow;
    let migrations = migrations
        .iter()
        .map(|(version, description, sql)| {
            Migration::new(
                *version,
                Cow::Borrowed(*description),
                MigrationType::Simple,
                Cow::Borrowed(*sql),
                false,
            )
        })
        .collect::<Vec<_>>();
    Migrator {
        migrations: Cow::Owned(migrations),
        ..Migrator::DEFAULT
    }
}
