//! Replay protection for token identities: a `jti` (RFC 7519 4.1.7) or an assertion `ID`
//! (SAML core 1.3.4) seen before, within the token's lifetime, is refused.
//!
//! Memory is bounded by expiry: an entry is kept until its token expires (plus the clock
//! leeway) and is purged then. The verifiers also cap how far ahead a token may expire, so
//! an entry never outlives that cap.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

type Key = (String, String);

/// Seen token identities, keyed by (issuer, id), with the time (Unix seconds) after which
/// the entry may be forgotten; ordered by that time too, so a purge costs only what it
/// removes.
#[derive(Debug, Default)]
pub struct ReplayCache {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    seen: HashMap<Key, i64>,
    by_expiry: BTreeSet<(i64, Key)>,
}

impl ReplayCache {
    /// Record `id` of `issuer`, kept until `forget_after`. Returns false when it was already
    /// recorded and has not expired yet (a replay).
    pub fn check_and_insert(&self, issuer: &str, id: &str, forget_after: i64, now: i64) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(first) = inner.by_expiry.first() {
            if first.0 >= now {
                break;
            }
            if let Some((_, key)) = inner.by_expiry.pop_first() {
                inner.seen.remove(&key);
            }
        }
        let key = (issuer.to_string(), id.to_string());
        if inner.seen.contains_key(&key) {
            return false;
        }
        inner.seen.insert(key.clone(), forget_after);
        inner.by_expiry.insert((forget_after, key));
        true
    }

    /// Entries held (after the last purge).
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .seen
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_refused_until_expiry_then_forgotten() {
        let cache = ReplayCache::default();
        assert!(cache.check_and_insert("iss", "a", 100, 0));
        assert!(!cache.check_and_insert("iss", "a", 100, 50));
        // Another issuer's id is another token.
        assert!(cache.check_and_insert("other", "a", 100, 50));
        // After expiry the entry is purged (memory bounded by expiry).
        assert!(cache.check_and_insert("iss", "b", 300, 200));
        assert_eq!(cache.len(), 1);
        assert!(cache.check_and_insert("iss", "a", 300, 200));
    }
}
