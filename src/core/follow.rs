//! One fetch per selection, shared by every request that needs it (DESIGN flow 1).
//!
//! A [`Fetch`] collects the instances of one running retrieve as they become durable; each
//! request follows it with a [`Follower`], from the first instance, whenever it joined.
//! Back-pressure: the retrieve waits before acknowledging the next sub-operation while the
//! slowest follower is more than [`WINDOW`] instances behind, so a slow client slows the PACS
//! and nothing piles up. It waits at most [`Fetches::client_wait`] per instance, well inside
//! a PACS's own timeout on its C-STORE-RSP (Orthanc's `DicomScpTimeout` is 30 s): then the
//! retrieve runs ahead into the cache, and the slow client reads what it has not taken from
//! disk later, rather than the PACS failing the sub-operations it waited on. When the last
//! follower goes away before the end, the retrieve is cancelled (a PACS gets a C-CANCEL),
//! unless it took every instance the source reported (the fetch is then as good as done).

use crate::core::source::{Arrival, DataSet};
use crate::core::{InstanceLocation, Selection};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How far the retrieve may run ahead of its slowest follower, in instances.
pub const WINDOW: usize = 4;

/// How a retrieve ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The PACS delivered what it reported (the counts), `received` instances.
    Complete { received: usize },
    /// Ended early or failed: the instances so far are cached but the whole is not served
    /// as complete.
    Incomplete(String),
}

#[derive(Debug, Default)]
struct State {
    arrived: Vec<InstanceLocation>,
    /// Bytes of the instances arrived (their stored size).
    bytes: u64,
    /// The data sets of the instances from `kept_from` on, as far as the source gave them:
    /// kept until every follower has taken the instance (at most [`KEPT`]), so followers
    /// send them from memory; a follower that joins later, or lags, reads the files.
    data_sets: std::collections::VecDeque<Option<DataSet>>,
    kept_from: usize,
    end: Option<End>,
    /// Follower id → instances it has taken.
    followers: BTreeMap<u64, usize>,
    next_id: u64,
}

/// One running retrieve.
#[derive(Debug)]
pub struct Fetch {
    pub key: String,
    pub selection: Selection,
    /// How many instances the source reported for the selection.
    pub reported: u64,
    /// The source it comes from ([`crate::core::Source::name`]).
    pub source_name: &'static str,
    state: Mutex<State>,
    /// Bumped on every change; everyone waits on it.
    changed: watch::Sender<u64>,
    pub cancel: CancellationToken,
    /// Longest wait for the slowest follower per instance.
    client_wait: Duration,
    /// A number for the operator's console (`Core::transfers`, `Core::cancel_transfer`).
    pub id: u64,
    started: std::time::Instant,
    started_at: String,
}

/// A number for a transfer the console lists (retrieves, forwards, publications: one id
/// space, so `DELETE /admin/api/transfers/{id}` names one).
pub fn next_transfer_id() -> u64 {
    static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// A transfer as the operator's console shows it: running, or among the last ended ones.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TransferInfo {
    pub id: u64,
    /// "retrieve": a fetch from a source into the cache; "forward": STOW-RS instances to
    /// the PACS; "publication": a study's KOS manifest registered (XDS-I).
    pub kind: &'static str,
    /// Where it comes from and goes to.
    pub source: String,
    pub destination: String,
    pub study_uids: Vec<String>,
    pub series_uids: Vec<String>,
    /// Instances the source reported for the selection (a forward: to send; a
    /// publication: to name in the manifest).
    pub expected: u64,
    /// Bytes expected (0: not known beforehand, as for a retrieve).
    pub expected_bytes: u64,
    pub received: u64,
    pub bytes: u64,
    pub started_at: String,
    pub elapsed_ms: u64,
    /// Bytes per second since the start.
    pub rate: u64,
    /// "running", "complete", "incomplete" or "cancelled".
    pub state: &'static str,
    pub detail: String,
    /// Requests following it now.
    pub followers: usize,
}

impl Fetch {
    fn new(
        key: String,
        selection: Selection,
        reported: u64,
        source_name: &'static str,
        client_wait: Duration,
    ) -> Arc<Fetch> {
        Arc::new(Fetch {
            key,
            selection,
            reported,
            source_name,
            state: Mutex::new(State::default()),
            changed: watch::channel(0).0,
            cancel: CancellationToken::new(),
            client_wait,
            id: next_transfer_id(),
            started: std::time::Instant::now(),
            started_at: crate::clock::now_rfc3339(),
        })
    }

    /// Where the retrieve stands, for the operator's console.
    pub fn info(&self) -> TransferInfo {
        let state = self.lock();
        let elapsed = self.started.elapsed();
        let (name, detail) = match &state.end {
            None if self.cancel.is_cancelled() => ("cancelled", String::new()),
            None => ("running", String::new()),
            Some(End::Complete { .. }) => ("complete", String::new()),
            Some(End::Incomplete(_)) if self.cancel.is_cancelled() => {
                ("cancelled", "cancelled".to_string())
            }
            Some(End::Incomplete(why)) => ("incomplete", why.clone()),
        };
        let secs = elapsed.as_secs_f64();
        TransferInfo {
            id: self.id,
            kind: "retrieve",
            source: self.source_name.to_string(),
            destination: "cache".to_string(),
            study_uids: self.selection.study_uids.clone(),
            series_uids: self.selection.series_uids.clone(),
            expected: self.reported,
            expected_bytes: 0,
            received: state.arrived.len() as u64,
            bytes: state.bytes,
            started_at: self.started_at.clone(),
            elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            rate: if secs > 0.0 {
                (state.bytes as f64 / secs) as u64
            } else {
                0
            },
            state: name,
            detail,
            followers: state.followers.len(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Start following from the first instance.
    pub fn follow(self: &Arc<Self>) -> Follower {
        let id = {
            let mut state = self.lock();
            state.next_id += 1;
            let id = state.next_id;
            state.followers.insert(id, 0);
            id
        };
        Follower {
            fetch: self.clone(),
            id,
            next: 0,
            seen: self.changed.subscribe(),
        }
    }

    /// The retrieve stored one more instance: wait while the slowest follower is more than
    /// [`WINDOW`] behind, at most `client_wait` (or until cancelled).
    pub async fn arrived(&self, arrival: impl Into<Arrival>) {
        let Arrival { loc, data_set } = arrival.into();
        let mut seen = self.changed.subscribe();
        {
            let mut state = self.lock();
            state.bytes += loc.size_bytes;
            state.arrived.push(loc);
            state.data_sets.push_back(data_set);
            state.forget_taken();
        }
        self.bump();
        let deadline = tokio::time::sleep(self.client_wait);
        tokio::pin!(deadline);
        loop {
            {
                let state = self.lock();
                let slowest = state.followers.values().min().copied();
                let ahead = slowest.map_or(0, |s| state.arrived.len().saturating_sub(s));
                if ahead <= WINDOW || self.cancel.is_cancelled() {
                    return;
                }
            }
            tokio::select! {
                r = seen.changed() => if r.is_err() { return },
                _ = self.cancel.cancelled() => return,
                _ = &mut deadline => {
                    tracing::info!(fetch = %self.key, "a client lags; the retrieve runs ahead into the cache");
                    return;
                }
            }
        }
    }

    pub fn finish(&self, end: End) {
        self.lock().end = Some(end);
        self.bump();
    }

    /// The blob keys of the instances stored so far.
    pub fn blob_keys(&self) -> Vec<String> {
        self.lock()
            .arrived
            .iter()
            .map(|l| l.blob_key.clone())
            .collect()
    }

    pub fn received(&self) -> usize {
        self.lock().arrived.len()
    }
}

/// Most data sets a fetch keeps in memory: the window and a few. A retrieve that ran ahead of
/// a lagging follower (after `client_wait`) keeps no more; that follower reads the files.
const KEPT: usize = WINDOW + 2;

impl State {
    /// Drop the data sets every follower has taken (all of them when none follows), and any
    /// beyond the last [`KEPT`].
    fn forget_taken(&mut self) {
        let slowest = self.followers.values().min().copied();
        let taken = slowest
            .unwrap_or(self.arrived.len())
            .max(self.arrived.len().saturating_sub(KEPT));
        while self.kept_from < taken {
            if self.data_sets.pop_front().is_none() {
                break;
            }
            self.kept_from += 1;
        }
    }
}

/// One request's view of a [`Fetch`].
#[derive(Debug)]
pub struct Follower {
    fetch: Arc<Fetch>,
    id: u64,
    next: usize,
    seen: watch::Receiver<u64>,
}

impl Follower {
    pub fn fetch(&self) -> &Arc<Fetch> {
        &self.fetch
    }

    /// The next instance; `Ok(None)` when the retrieve ended complete, `Err` when it ended
    /// incomplete.
    pub async fn next(&mut self) -> Result<Option<InstanceLocation>, String> {
        Ok(self.next_arrival().await?.map(|a| a.loc))
    }

    /// [`next`](Self::next) with the instance's data set when it is still in memory.
    pub async fn next_arrival(&mut self) -> Result<Option<Arrival>, String> {
        loop {
            self.seen.borrow_and_update();
            {
                let mut state = self.fetch.lock();
                if let Some(loc) = state.arrived.get(self.next).cloned() {
                    let data_set = self
                        .next
                        .checked_sub(state.kept_from)
                        .and_then(|i| state.data_sets.get(i).cloned().flatten());
                    self.next += 1;
                    state.followers.insert(self.id, self.next);
                    state.forget_taken();
                    drop(state);
                    self.fetch.bump();
                    return Ok(Some(Arrival { loc, data_set }));
                }
                match &state.end {
                    Some(End::Complete { .. }) => return Ok(None),
                    Some(End::Incomplete(why)) => return Err(why.clone()),
                    None => {}
                }
            }
            if self.seen.changed().await.is_err() {
                return Err("retrieve went away".into());
            }
        }
    }

    /// Follow to the end (metadata, frames and rendered requests need the instances cached
    /// before they answer).
    pub async fn wait_complete(mut self) -> Result<usize, String> {
        let mut n = 0;
        while self.next().await?.is_some() {
            n += 1;
        }
        Ok(n)
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let last_gone = {
            let mut state = self.fetch.lock();
            state.followers.remove(&self.id);
            state.forget_taken();
            // One that took every instance the source reported has what it came for: a
            // RAD-75 answer names its documents and ends after the last one, before the
            // source's own end (a PACS's final C-GET response); the fetch ends by itself.
            let took_all = self.fetch.reported > 0 && self.next as u64 >= self.fetch.reported;
            state.followers.is_empty() && state.end.is_none() && !took_all
        };
        if last_gone {
            tracing::info!(fetch = %self.fetch.key, "every client left; cancelling the PACS retrieve");
            self.fetch.cancel.cancel();
        }
        self.fetch.bump();
    }
}

/// How many ended retrieves the console still lists.
const RECENT: usize = 50;

/// The retrieves running now, by selection.
#[derive(Debug)]
pub struct Fetches {
    active: Mutex<HashMap<String, Arc<Fetch>>>,
    /// The last [`RECENT`] ended retrieves, newest last.
    recent: Mutex<std::collections::VecDeque<TransferInfo>>,
    /// Studies being streamed from the cache (pinned against eviction), with a count.
    pins: Arc<Mutex<HashMap<String, usize>>>,
    /// How long a retrieve waits for its slowest follower per instance (`[cache]
    /// client_wait_secs`).
    pub client_wait: Duration,
}

/// The default [`Fetches::client_wait`]: a third of the shortest PACS timeout seen (30 s).
pub const CLIENT_WAIT: Duration = Duration::from_secs(10);

impl Default for Fetches {
    fn default() -> Self {
        Fetches {
            active: Mutex::default(),
            recent: Mutex::default(),
            pins: Arc::default(),
            client_wait: CLIENT_WAIT,
        }
    }
}

/// A stable key for a selection.
pub fn key(selection: &Selection) -> String {
    format!(
        "{}|{}|{}",
        selection.study_uids.join("\\"),
        selection.series_uids.join("\\"),
        selection.sop_instance_uids.join("\\")
    )
}

/// Keeps a study from eviction while it is streamed.
#[derive(Debug)]
pub struct Pin {
    pins: Arc<Mutex<HashMap<String, usize>>>,
    study: String,
}

impl Drop for Pin {
    fn drop(&mut self) {
        let mut pins = self.pins.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = pins.get_mut(&self.study) {
            *n -= 1;
            if *n == 0 {
                pins.remove(&self.study);
            }
        }
    }
}

impl Fetches {
    /// Follow the running retrieve of `selection`, or start one with `start` (which gets the
    /// new [`Fetch`] to drive, after the first follower is registered).
    pub fn join(
        &self,
        selection: &Selection,
        reported: u64,
        source_name: &'static str,
        start: impl FnOnce(Arc<Fetch>),
    ) -> (Follower, bool) {
        let key = key(selection);
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(fetch) = active.get(&key) {
            if !fetch.cancel.is_cancelled() {
                return (fetch.follow(), false);
            }
        }
        let fetch = Fetch::new(
            key.clone(),
            selection.clone(),
            reported,
            source_name,
            self.client_wait,
        );
        let follower = fetch.follow();
        active.insert(key, fetch.clone());
        drop(active);
        start(fetch);
        (follower, true)
    }

    /// Follow a running retrieve of exactly this selection, if there is one.
    pub fn running(&self, selection: &Selection) -> Option<Follower> {
        let active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        active
            .get(&key(selection))
            .filter(|f| !f.cancel.is_cancelled())
            .map(|f| f.follow())
    }

    /// The retrieve ended: later requests decide afresh.
    pub fn done(&self, fetch: &Arc<Fetch>) {
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        if active
            .get(&fetch.key)
            .is_some_and(|f| Arc::ptr_eq(f, fetch))
        {
            active.remove(&fetch.key);
        }
        drop(active);
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() >= RECENT {
            recent.pop_front();
        }
        recent.push_back(fetch.info());
    }

    /// The running retrieves, and the last ended ones (newest first).
    pub fn transfers(&self) -> (Vec<TransferInfo>, Vec<TransferInfo>) {
        let running: Vec<TransferInfo> = self
            .active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|f| f.info())
            .collect();
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        (running, recent.iter().rev().cloned().collect())
    }

    /// Cancel the running retrieve `id` (a PACS gets a C-CANCEL); false if none runs.
    pub fn cancel(&self, id: u64) -> bool {
        let active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        match active.values().find(|f| f.id == id) {
            Some(fetch) => {
                tracing::info!(fetch = %fetch.key, "retrieve cancelled by the operator");
                fetch.cancel.cancel();
                fetch.bump();
                true
            }
            None => false,
        }
    }

    pub fn pin(&self, study: &str) -> Pin {
        let mut pins = self.pins.lock().unwrap_or_else(|e| e.into_inner());
        *pins.entry(study.to_string()).or_default() += 1;
        Pin {
            pins: self.pins.clone(),
            study: study.to_string(),
        }
    }

    /// Is the study streamed or being fetched now?
    pub fn pinned(&self, study: &str) -> bool {
        let pinned = self
            .pins
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(study);
        pinned
            || self
                .active
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .any(|f| f.selection.study_uids.iter().any(|s| s == study))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn loc(n: usize) -> InstanceLocation {
        InstanceLocation {
            patient_id: "P".into(),
            study_instance_uid: "1.2".into(),
            series_instance_uid: "1.2.3".into(),
            sop_instance_uid: format!("1.2.3.{n}"),
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
            transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
            blob_key: format!("k{n}"),
            size_bytes: 4,
        }
    }

    fn arrival(n: usize) -> Arrival {
        Arrival {
            loc: loc(n),
            data_set: Some(vec![Bytes::from(vec![n as u8; 4])].into()),
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_lagging_follower_is_waited_for_client_wait_then_read_from_disk() {
        let wait = std::time::Duration::from_millis(50);
        let fetch = Fetch::new("k".into(), Selection::default(), 40, "fake", wait);
        let mut slow = fetch.follow();
        let started = std::time::Instant::now();
        for n in 0..40 {
            fetch.arrived(arrival(n)).await;
        }
        // Waited only for the instances beyond the window, at most `wait` each.
        assert!(started.elapsed() >= wait * (40 - WINDOW as u32 - 1));
        assert!(fetch.lock().data_sets.len() <= KEPT, "memory stays bounded");
        fetch.finish(End::Complete { received: 40 });
        // The lagging follower still gets every instance: the old ones from disk (no data
        // set), the last few from memory.
        let mut from_memory = 0;
        for n in 0..40 {
            let got = slow.next_arrival().await.unwrap().unwrap();
            assert_eq!(got.loc, loc(n));
            from_memory += usize::from(got.data_set.is_some());
        }
        assert!(from_memory <= KEPT, "{from_memory}");
        assert!(slow.next_arrival().await.unwrap().is_none());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn data_sets_go_to_every_follower_and_are_dropped_once_all_took_them() {
        let fetch = Fetch::new("k".into(), Selection::default(), 3, "fake", CLIENT_WAIT);
        let mut a = fetch.follow();
        let mut b = fetch.follow();
        fetch.arrived(arrival(0)).await;
        fetch.arrived(arrival(1)).await;
        let first = a.next_arrival().await.unwrap().unwrap();
        assert_eq!(first.loc, loc(0));
        assert_eq!(&first.data_set.unwrap()[0][..], &[0u8; 4]);
        assert_eq!(
            fetch.lock().data_sets.len(),
            2,
            "b has not taken the first yet"
        );
        let first_b = b.next_arrival().await.unwrap().unwrap();
        assert!(first_b.data_set.is_some());
        assert_eq!(fetch.lock().data_sets.len(), 1, "both took the first");
        // One who joins now starts from the first instance, whose data set is gone: it
        // reads the file. The one both have not taken yet is still there for it.
        let mut late = fetch.follow();
        let late_first = late.next_arrival().await.unwrap().unwrap();
        assert_eq!(late_first.loc, loc(0));
        assert!(late_first.data_set.is_none());
        assert!(late
            .next_arrival()
            .await
            .unwrap()
            .unwrap()
            .data_set
            .is_some());
        drop((a, b, late));
        fetch.finish(End::Complete { received: 2 });
        assert!(fetch.lock().data_sets.is_empty(), "nobody follows any more");
        // Without followers nothing is kept at all.
        fetch.arrived(arrival(2)).await;
        assert!(fetch.lock().data_sets.is_empty());
        assert_eq!(fetch.received(), 3);
    }
}
