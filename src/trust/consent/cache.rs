//! The short-lived decision cache: one answer per whole question, kept `cache_secs`. A
//! consent withdrawn in Mitz is therefore honoured at most `cache_secs` later.

use super::{ConsentDecision, ConsentRequest};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most entries held; above it expired entries are dropped, and if that is not enough the
/// oldest half goes.
const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Default)]
pub struct DecisionCache {
    ttl: Duration,
    entries: Mutex<HashMap<ConsentRequest, (ConsentDecision, Instant)>>,
}

impl DecisionCache {
    /// A cache keeping answers for `ttl`; zero keeps nothing.
    pub fn new(ttl: Duration) -> DecisionCache {
        DecisionCache {
            ttl,
            entries: Mutex::default(),
        }
    }

    pub fn get(&self, request: &ConsentRequest) -> Option<ConsentDecision> {
        if self.ttl.is_zero() {
            return None;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get(request) {
            Some(&(decision, at)) if at.elapsed() < self.ttl => Some(decision),
            Some(_) => {
                entries.remove(request);
                None
            }
            None => None,
        }
    }

    pub fn put(&self, request: &ConsentRequest, decision: ConsentDecision) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_ENTRIES {
            let ttl = self.ttl;
            entries.retain(|_, (_, at)| at.elapsed() < ttl);
            if entries.len() >= MAX_ENTRIES {
                let mut ages: Vec<Instant> = entries.values().map(|(_, at)| *at).collect();
                ages.sort_unstable();
                let cut = ages[ages.len() / 2];
                entries.retain(|_, (_, at)| *at > cut);
            }
        }
        entries.insert(request.clone(), (decision, Instant::now()));
    }

    pub fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(bsn: &str) -> ConsentRequest {
        ConsentRequest {
            bsn: bsn.into(),
            requester_ura: "00000666".into(),
            provider_uzi: "000095254".into(),
            role: "01.015".into(),
            purpose_of_use: "TREATMENT".into(),
        }
    }

    #[test]
    fn keeps_for_ttl_per_whole_request() {
        let cache = DecisionCache::new(Duration::from_millis(200));
        let r = request("999999990");
        cache.put(&r, ConsentDecision::Permit);
        assert_eq!(cache.get(&r), Some(ConsentDecision::Permit));
        let mut other_role = r.clone();
        other_role.role = "30.000".into();
        assert_eq!(cache.get(&other_role), None);
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(cache.get(&r), None);
        assert!(cache.is_empty());
    }

    #[test]
    fn zero_ttl_keeps_nothing() {
        let cache = DecisionCache::new(Duration::ZERO);
        cache.put(&request("1"), ConsentDecision::Deny);
        assert_eq!(cache.get(&request("1")), None);
    }

    #[test]
    fn stays_bounded() {
        let cache = DecisionCache::new(Duration::from_secs(60));
        for i in 0..(MAX_ENTRIES + 10) {
            cache.put(&request(&i.to_string()), ConsentDecision::Permit);
        }
        assert!(cache.len() <= MAX_ENTRIES);
        assert_eq!(
            cache.get(&request(&(MAX_ENTRIES + 9).to_string())),
            Some(ConsentDecision::Permit)
        );
    }
}
