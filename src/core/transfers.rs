//! The transfers that are not retrieves, for the operator's console (issue 17): forwards of
//! STOW-RS studies to the PACS (`pacs::forward`) and XDS-I publications
//! (`registry::publish`). Each registers itself on the [`Board`] while it runs, reports its
//! progress (instances and bytes of the expected) and ends; the console lists them next to
//! the retrieves ([`super::follow::Fetches`]) in one id space and cancels them by their
//! [`Tracked::cancel`] token, which the worker looks at between instances.

use super::follow::{next_transfer_id, TransferInfo};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// How many ended transfers the board still lists.
const RECENT: usize = 50;

/// A forward to the PACS.
pub const FORWARD: &str = "forward";
/// An XDS-I publication (KOS manifest stored and registered).
pub const PUBLICATION: &str = "publication";
/// A study sent to a client: C-MOVE to its destination AE, C-GET, WADO-RS (registered by
/// `Core::retrieve`, reported by the front instance by instance).
pub const SEND: &str = "send";

#[derive(Debug, Default)]
struct Progress {
    expected: u64,
    expected_bytes: u64,
    received: u64,
    bytes: u64,
    /// Said of a complete one (`manifest unchanged`).
    note: String,
    /// Where it goes (a C-MOVE's destination is named by the front).
    destination: String,
    /// `complete`, `incomplete` or `cancelled`, and why.
    end: Option<(&'static str, String)>,
}

/// One running forward or publication.
#[derive(Debug)]
pub struct Tracked {
    pub id: u64,
    kind: &'static str,
    source: String,
    study_uids: Vec<String>,
    progress: Mutex<Progress>,
    /// Cancelled by the operator (the worker stops before its next instance).
    pub cancel: CancellationToken,
    started: std::time::Instant,
    started_at: String,
}

impl Tracked {
    fn lock(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What it will move, once known (0: not known).
    pub fn expect(&self, instances: u64, bytes: u64) {
        let mut p = self.lock();
        p.expected = instances;
        p.expected_bytes = bytes;
    }

    /// Where it goes, once the front knows better than the core (a C-MOVE's destination).
    pub fn send_to(&self, destination: impl Into<String>) {
        self.lock().destination = destination.into();
    }

    /// A word on how it went, shown when it completes.
    pub fn note(&self, note: impl Into<String>) {
        self.lock().note = note.into();
    }

    /// One more instance done, of `bytes`.
    pub fn advance(&self, instances: u64, bytes: u64) {
        let mut p = self.lock();
        p.received += instances;
        p.bytes += bytes;
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    pub fn info(&self) -> TransferInfo {
        let p = self.lock();
        let elapsed = self.started.elapsed();
        let secs = elapsed.as_secs_f64();
        let (state, detail) = match &p.end {
            Some(("complete", _)) => ("complete", p.note.clone()),
            Some((state, detail)) => (*state, detail.clone()),
            None if self.cancel.is_cancelled() => ("cancelled", String::new()),
            None => ("running", String::new()),
        };
        TransferInfo {
            id: self.id,
            kind: self.kind,
            source: self.source.clone(),
            destination: p.destination.clone(),
            study_uids: self.study_uids.clone(),
            series_uids: Vec::new(),
            expected: p.expected,
            expected_bytes: p.expected_bytes,
            received: p.received,
            bytes: p.bytes,
            started_at: self.started_at.clone(),
            elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            rate: if secs > 0.0 {
                (p.bytes as f64 / secs) as u64
            } else {
                0
            },
            state,
            detail,
            followers: 0,
        }
    }
}

/// What a transfer is, when it starts.
#[derive(Debug, Clone, Default)]
pub struct Start {
    pub kind: &'static str,
    /// Where the data comes from (`cache`) and goes (`local PACS (PACS@host:port)`,
    /// `XDS registry`).
    pub source: String,
    pub destination: String,
    pub study_uids: Vec<String>,
    /// Instances and bytes it will move (0: not known).
    pub expected: u64,
    pub expected_bytes: u64,
}

/// The forwards and publications running now, and the last ended ones.
#[derive(Debug, Default)]
pub struct Board {
    active: Mutex<BTreeMap<u64, Arc<Tracked>>>,
    recent: Mutex<VecDeque<TransferInfo>>,
    /// Studies whose publication keeps failing, by Study Instance UID (until one succeeds).
    failing: Mutex<BTreeMap<String, Failing>>,
    /// Studies the operator asked to publish now, and the publisher's wake-up.
    publish_now: Mutex<BTreeSet<String>>,
    pub wake_publisher: tokio::sync::Notify,
}

/// A study whose publication attempts failed, each one since the last that succeeded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Failing {
    pub attempts: u32,
    pub last_error: String,
    /// Unix seconds of the last attempt, and when the publisher tries again by itself.
    pub last_attempt_at: i64,
    pub next_attempt_at: i64,
}

/// Longest wait between a failing publication's attempts.
pub const MAX_BACKOFF_SECS: i64 = 300;

impl Failing {
    /// After `attempts` failures the publisher waits 2^(attempts-1) seconds (1, 2, 4, ...
    /// at most [`MAX_BACKOFF_SECS`]) before it tries again by itself.
    fn backoff(attempts: u32) -> i64 {
        1i64.checked_shl(attempts.saturating_sub(1).min(20))
            .unwrap_or(MAX_BACKOFF_SECS)
            .min(MAX_BACKOFF_SECS)
    }
}

/// A running transfer on the [`Board`]; ends with [`Running::finish`], or `incomplete` when
/// dropped before (the worker went away).
#[derive(Debug)]
pub struct Running {
    board: Arc<Board>,
    pub tracked: Arc<Tracked>,
    ended: bool,
}

impl std::ops::Deref for Running {
    type Target = Tracked;
    fn deref(&self) -> &Tracked {
        &self.tracked
    }
}

impl Running {
    /// End it: `complete` when `failure` is None, `cancelled` when the operator cancelled it,
    /// else `incomplete` with the failure.
    pub fn finish(mut self, failure: Option<String>) {
        let end = match failure {
            _ if self.tracked.is_cancelled() => ("cancelled", "cancelled by the operator".into()),
            None => ("complete", String::new()),
            Some(why) => ("incomplete", why),
        };
        self.end(end);
    }

    fn end(&mut self, end: (&'static str, String)) {
        self.ended = true;
        self.tracked.lock().end = Some(end);
        self.board.ended(&self.tracked);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.ended {
            self.end(("incomplete", "ended early".into()));
        }
    }
}

impl Board {
    /// Register a transfer that starts now.
    pub fn start(self: &Arc<Self>, start: Start) -> Running {
        let tracked = Arc::new(Tracked {
            id: next_transfer_id(),
            kind: start.kind,
            source: start.source,
            study_uids: start.study_uids,
            progress: Mutex::new(Progress {
                destination: start.destination,
                expected: start.expected,
                expected_bytes: start.expected_bytes,
                ..Default::default()
            }),
            cancel: CancellationToken::new(),
            started: std::time::Instant::now(),
            started_at: crate::clock::now_rfc3339(),
        });
        self.active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(tracked.id, tracked.clone());
        Running {
            board: self.clone(),
            tracked,
            ended: false,
        }
    }

    fn ended(&self, tracked: &Tracked) {
        self.active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&tracked.id);
        let info = tracked.info();
        if info.kind == PUBLICATION {
            self.note_publication(&info);
        }
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        // A worker that tries again (a PACS down, each retry) is listed with its latest
        // attempt: the earlier failed ones of the same study go.
        // Sends to clients are each their own request, all listed.
        recent.retain(|t| {
            info.kind == SEND
                || !(t.state == "incomplete"
                    && t.kind == info.kind
                    && t.study_uids == info.study_uids)
        });
        if recent.len() >= RECENT {
            recent.pop_front();
        }
        recent.push_back(info);
    }

    /// A publication ended: a failure counts toward its study's back-off, a success (or a
    /// study not to be published) clears it; a cancel is neither.
    fn note_publication(&self, info: &TransferInfo) {
        let Some(study) = info.study_uids.first() else {
            return;
        };
        let mut failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        match info.state {
            "complete" => {
                failing.remove(study);
            }
            "incomplete" => {
                let now = crate::clock::unix_seconds();
                let f = failing.entry(study.clone()).or_insert(Failing {
                    attempts: 0,
                    last_error: String::new(),
                    last_attempt_at: now,
                    next_attempt_at: now,
                });
                f.attempts += 1;
                f.last_error = info.detail.clone();
                f.last_attempt_at = now;
                f.next_attempt_at = now + Failing::backoff(f.attempts);
            }
            _ => {}
        }
    }

    /// Why a study's publication keeps failing (None: it did not fail since it last
    /// succeeded).
    pub fn failing(&self, study: &str) -> Option<Failing> {
        let failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        failing.get(study).cloned()
    }

    /// Whether the publisher may try a study now by itself: not failing, or its back-off
    /// over.
    pub fn publication_due(&self, study: &str, now: i64) -> bool {
        self.failing(study).is_none_or(|f| now >= f.next_attempt_at)
    }

    /// The operator asks for a study's publication now (its quiet period and back-off
    /// skipped): the publisher is woken.
    pub fn request_publication(&self, study: &str) {
        self.publish_now
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(study.to_string());
        self.wake_publisher.notify_one();
    }

    /// The studies the operator asked to publish now, taken.
    pub fn take_publication_requests(&self) -> BTreeSet<String> {
        std::mem::take(&mut *self.publish_now.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The running ones (oldest first) and the ended ones (newest first).
    pub fn list(&self) -> (Vec<TransferInfo>, Vec<TransferInfo>) {
        let running = self
            .active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|t| t.info())
            .collect();
        let ended = self
            .recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .rev()
            .cloned()
            .collect();
        (running, ended)
    }

    /// Cancel the running transfer `id`; false if none runs.
    pub fn cancel(&self, id: u64) -> bool {
        let active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        match active.get(&id) {
            Some(t) => {
                tracing::info!(id, kind = t.kind, "transfer cancelled by the operator");
                t.cancel.cancel();
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transfer_runs_reports_progress_and_ends_in_the_recent_list() {
        let board = Arc::new(Board::default());
        let run = board.start(Start {
            kind: FORWARD,
            source: "cache".into(),
            destination: "PACS".into(),
            study_uids: vec!["1.2".into()],
            expected: 3,
            expected_bytes: 30,
        });
        run.advance(1, 10);
        let (running, ended) = board.list();
        assert_eq!(running.len(), 1);
        assert!(ended.is_empty());
        assert_eq!(
            (running[0].state, running[0].received, running[0].bytes),
            ("running", 1, 10)
        );
        let id = run.id;
        assert!(!board.cancel(id + 1000));
        assert!(board.cancel(id));
        run.finish(None);
        let (running, ended) = board.list();
        assert!(running.is_empty());
        assert_eq!(ended[0].state, "cancelled");
        assert!(
            !board.cancel(id),
            "an ended transfer is not cancelled again"
        );

        let run = board.start(Start {
            kind: PUBLICATION,
            ..Default::default()
        });
        run.finish(Some("registry down".into()));
        let dropped = board.start(Start::default());
        drop(dropped);
        // Tried again: listed once, the latest attempt.
        let again = board.start(Start {
            kind: PUBLICATION,
            ..Default::default()
        });
        let again_id = again.id;
        again.finish(Some("registry down".into()));
        let done = board.start(Start {
            kind: PUBLICATION,
            study_uids: vec!["1.3".into()],
            ..Default::default()
        });
        done.expect(4, 0);
        done.advance(4, 100);
        done.note("manifest unchanged");
        done.finish(None);
        let (_, ended) = board.list();
        assert_eq!(
            ended
                .iter()
                .map(|t| (t.state, t.detail.as_str()))
                .collect::<Vec<_>>(),
            [
                ("complete", "manifest unchanged"),
                ("incomplete", "registry down"),
                ("incomplete", "ended early"),
                ("cancelled", "cancelled by the operator")
            ]
        );
        assert_eq!(ended[1].id, again_id);
        // The study without UIDs is not tracked; one with a study is, until it succeeds.
        let study = |n: u32| {
            let run = board.start(Start {
                kind: PUBLICATION,
                study_uids: vec!["1.4".into()],
                ..Default::default()
            });
            run.finish((n > 0).then(|| format!("PACS down {n}")));
        };
        study(1);
        study(2);
        let f = board.failing("1.4").expect("failing");
        assert_eq!((f.attempts, f.last_error.as_str()), (2, "PACS down 2"));
        assert_eq!(f.next_attempt_at - f.last_attempt_at, 2);
        assert!(!board.publication_due("1.4", f.last_attempt_at + 1));
        assert!(board.publication_due("1.4", f.next_attempt_at));
        assert_eq!(Failing::backoff(30), MAX_BACKOFF_SECS);
        board.request_publication("1.4");
        assert_eq!(board.take_publication_requests().len(), 1);
        assert!(board.take_publication_requests().is_empty());
        study(0);
        assert!(board.failing("1.4").is_none());
        assert_eq!((ended[0].expected, ended[0].received), (4, 4));
    }
}
