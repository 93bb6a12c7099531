//! `/ready`: may this gateway be sent work now? `/health` only says the process answers
//! (liveness); `/ready` proves each thing an operation needs (issue 12, item 7):
//!
//! - `index`: a committed write (a full disk, a read-only file or a lost PostgreSQL fail it);
//! - `blobs`: a small file written, fsynced and deleted in the data directory (and on
//!   object storage, a small object written and deleted in the bucket);
//! - `disk`: free space of the data directory's filesystem against `storage.min_free_bytes`;
//! - `audit`: the audit trail takes writes (otherwise every operation is refused, fail
//!   closed; see [`crate::trust::audit::AuditHealth`]), with the count of failed writes;
//! - `pacs` (gateway mode only): the local PACS answers C-ECHO.
//!
//! Each check has a short timeout, so a hung disk or PACS fails the check instead of the
//! probe of a load balancer or Kubernetes.

use super::HttpState;
use serde::Serialize;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::time::Duration;

/// Longest one check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// The answer of one check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub ok: bool,
    pub detail: String,
}

/// All checks; ready when every one passed.
#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub checks: BTreeMap<&'static str, Check>,
    /// The names of the checks that failed.
    pub failing: Vec<&'static str>,
}

/// Run every check (concurrently; each bounded by [`CHECK_TIMEOUT`]).
pub async fn check(ctx: &HttpState) -> Readiness {
    let min_free = ctx.web.config.storage.min_free_bytes;
    let data_dir = ctx.blobs.data_dir().to_path_buf();
    let (index, blobs, disk, pacs) = tokio::join!(
        bounded(async {
            ctx.index
                .probe_write()
                .await
                .map(|()| "takes writes".to_string())
                .map_err(|e| e.to_string())
        }),
        bounded(async {
            ctx.blobs
                .probe_write()
                .await
                .map(|()| format!("{} takes writes", ctx.blobs.describe()))
                .map_err(|e| e.to_string())
        }),
        bounded(free_space_check(&data_dir, min_free)),
        async {
            match &ctx.gateway {
                Some(gateway) => Some(
                    bounded(async {
                        let pacs = &gateway.pacs.config;
                        match gateway.pacs.echo().await {
                            Ok(0) => Ok(format!("{} answers C-ECHO", pacs.ae_title)),
                            Ok(status) => Err(format!(
                                "{} answered C-ECHO with status {status:#06x}",
                                pacs.ae_title
                            )),
                            Err(e) => Err(format!("{}: {e}", pacs.ae_title)),
                        }
                    })
                    .await,
                ),
                None => None,
            }
        },
    );
    let health = ctx.web.trust.audit.health();
    let audit = Check {
        ok: !health.is_failing(),
        detail: if health.is_failing() {
            format!(
                "audit writes fail ({} failed since start): every operation is refused",
                health.failures()
            )
        } else {
            format!("{} audit writes failed since start", health.failures())
        },
    };
    let mut checks = BTreeMap::from([
        ("index", index),
        ("blobs", blobs),
        ("disk", disk),
        ("audit", audit),
    ]);
    if let Some(pacs) = pacs {
        checks.insert("pacs", pacs);
    }
    let failing: Vec<&'static str> = checks
        .iter()
        .filter(|(_, c)| !c.ok)
        .map(|(name, _)| *name)
        .collect();
    if !failing.is_empty() {
        tracing::warn!(failing = ?failing, "not ready");
    }
    Readiness {
        ready: failing.is_empty(),
        checks,
        failing,
    }
}

/// One check with the common timeout: `Ok` is what passed, `Err` why not.
async fn bounded(check: impl Future<Output = Result<String, String>>) -> Check {
    match tokio::time::timeout(CHECK_TIMEOUT, check).await {
        Ok(Ok(detail)) => Check { ok: true, detail },
        Ok(Err(detail)) => Check { ok: false, detail },
        Err(_) => Check {
            ok: false,
            detail: format!("no answer within {} s", CHECK_TIMEOUT.as_secs()),
        },
    }
}

async fn free_space_check(dir: &Path, min_free: u64) -> Result<String, String> {
    let free = free_bytes(dir)
        .await
        .map_err(|e| format!("free space of {}: {e}", dir.display()))?;
    let said = format!(
        "{free} bytes free in {} (floor: storage.min_free_bytes = {min_free})",
        dir.display()
    );
    if free < min_free {
        Err(said)
    } else {
        Ok(said)
    }
}

/// Bytes an unprivileged writer may still use on `dir`'s filesystem (statvfs `f_bavail`).
pub async fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || statvfs_available(&dir))
        .await
        .map_err(std::io::Error::other)?
}

#[cfg(unix)]
fn statvfs_available(dir: &Path) -> std::io::Result<u64> {
    let stat = rustix::fs::statvfs(dir)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

#[cfg(not(unix))]
fn statvfs_available(_dir: &Path) -> std::io::Result<u64> {
    Err(std::io::Error::other("free space is only measured on Unix"))
}
