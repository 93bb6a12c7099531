//! The write probe of `/ready`: proof that the index still takes writes.

use super::sql_impl;
use super::SqlIndex;
use crate::clock::now_rfc3339;
use crate::store::index::IndexError;

sql_impl! {
    pub async fn probe_write(&self) -> Result<(), IndexError> {
        // A value that differs every time: SQLite skips writing a row whose bytes are
        // unchanged, and such a probe would pass on a full disk.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let mut tx = self.begin_write().await?;
        let mut sql = self.sql();
        sql.push("INSERT INTO readiness_probe (id, probed_at) VALUES (1, ")
            .bind(&format!("{} {nanos}", now_rfc3339()))
            .push(") ON CONFLICT (id) DO UPDATE SET probed_at = excluded.probed_at");
        Self::query(&sql).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }
}
