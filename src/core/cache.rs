//! The cache rules: when the cache may answer for a selection, and eviction. They hold for
//! every source behind the cache alike.
//!
//! - A study counts as complete only once a fetch delivered as many instances as the PACS
//!   reported (or the cache already held that many); a partial fetch stays incomplete and is
//!   fetched again next time.
//! - A complete study is trusted for `cache.refresh_secs`; after that its instance count is
//!   checked against the PACS again, and a study whose count changed is fetched again.
//! - Above `cache.max_bytes`, the least recently used fetched studies are removed, skipping
//!   studies being fetched or streamed. Studies that only arrived by C-STORE or STOW-RS have
//!   no cache state and are never evicted.

use super::Core;
use crate::store::index::CachedStudy;

/// `[cache]`: how long a complete study is trusted and how much is kept.
#[derive(Debug, Clone, Default)]
pub struct CacheRules {
    /// Most bytes of fetched studies kept; least recently used studies are evicted above it.
    /// 0: no limit.
    pub max_bytes: u64,
    /// A complete cached study is re-checked against its source's instance count after this
    /// many seconds.
    pub refresh_secs: u64,
    /// How long a fetch waits for its slowest client per instance before it runs ahead into
    /// the cache; `None`: [`super::follow::CLIENT_WAIT`].
    pub client_wait: Option<std::time::Duration>,
}

/// Unix seconds now.
pub use crate::clock::unix_seconds as now;

/// Is a complete cached study still fresh?
pub fn fresh(state: &CachedStudy, refresh_secs: u64, now: i64) -> bool {
    state.complete && now.saturating_sub(state.checked_at) < refresh_secs as i64
}

impl Core {
    /// Note that a cached study was used (least-recently-used order).
    pub async fn touch(&self, study: &str) {
        if let Ok(Some(mut state)) = self.index.cached_study(study).await {
            state.last_access = now();
            if let Err(e) = self.index.put_cached_study(&state).await {
                tracing::warn!(error = %e, "cannot update cache access time");
            }
        }
    }

    /// Remove least recently used studies until the cache is within `max_bytes`, never
    /// `keep` (the study just fetched, wanted now). Returns the studies removed.
    pub async fn evict(&self, keep: Option<&str>) -> Vec<String> {
        let max = self.cache.max_bytes;
        if max == 0 {
            return Vec::new();
        }
        let lru = match self.index.cache_lru().await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the cache for eviction");
                return Vec::new();
            }
        };
        let mut total: u64 = lru.iter().map(|(_, b)| b).sum();
        let mut removed = Vec::new();
        for (study, bytes) in lru {
            if total <= max {
                break;
            }
            if keep == Some(study.as_str()) || self.fetches.pinned(&study) {
                continue;
            }
            // The one delete path (store::delete): rows and queued files in one transaction,
            // so a crash mid-eviction leaves no file behind for good.
            let selection = crate::core::Selection {
                study_uids: vec![study.clone()],
                ..Default::default()
            };
            let deleted =
                crate::store::delete::delete(self.index.as_ref(), &self.blobs, &selection)
                    .await
                    .map(|_| ());
            // A cached study whose instances are gone already still has its cache row.
            let deleted = match deleted {
                Ok(()) => self.index.remove_study(&study).await.map(|_| ()),
                Err(crate::store::delete::DeleteError::Index(e)) => Err(e),
            };
            match deleted {
                Ok(()) => {
                    total = total.saturating_sub(bytes);
                    tracing::info!(%study, bytes, "evicted from the cache");
                    removed.push(study);
                }
                Err(e) => tracing::warn!(%study, error = %e, "cannot evict"),
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freshness() {
        let mut s = CachedStudy {
            study_instance_uid: "1".into(),
            pacs_instances: 3,
            complete: true,
            checked_at: 1000,
            last_access: 1000,
        };
        assert!(fresh(&s, 300, 1299));
        assert!(!fresh(&s, 300, 1300));
        s.complete = false;
        assert!(!fresh(&s, 300, 1001));
    }
}
