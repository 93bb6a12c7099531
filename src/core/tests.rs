//! The core's own tests (issue 11 "Done means"): the retrieve and query paths against an
//! in-memory [`FakeSource`], over a real SQLite index, a real filesystem blob store and the
//! trust layer built from the embedded default configuration. The fake keeps real DICOM
//! files (from `crate::testdata`) in memory and stores them through the one ingest path, as
//! the PACS fetch does; it counts its calls and can be slowed, stalled or taken down.

use super::source::{Capabilities, FetchReport, Sink, Source, SourceError, SourceErrorKind};
use super::{CacheRules, Core, CoreError, Delivery, Front, Retrieval};
use crate::config::Config;
use crate::model::query::{indexed_attr_by_keyword, Level, Match, Matcher, Query};
use crate::model::retrieve::{InstanceLocation, Selection};
use crate::store::ingest::{self, Expected};
use crate::store::{open_index, AuditEvent, BlobStore, Index};
use crate::trust::{Caller, Operation, Trust};
use dicom_core::Tag;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;

const PATIENT_NAME: Tag = Tag(0x0010, 0x0010);
const PATIENT_ID: Tag = Tag(0x0010, 0x0020);
const STUDY_UID: Tag = Tag(0x0020, 0x000D);
const ACCESSION_NUMBER: Tag = Tag(0x0008, 0x0050);
const STUDY_DESCRIPTION: Tag = Tag(0x0008, 0x1030);

/// How long a test waits for something that happens in the background.
const PATIENCE: Duration = Duration::from_secs(10);

/// One instance the fake source holds: its Part 10 bytes and its identity.
#[derive(Debug, Clone)]
struct HeldInstance {
    bytes: Vec<u8>,
    patient_id: String,
    study_uid: String,
    series_uid: String,
    sop_uid: String,
}

impl HeldInstance {
    fn selected_by(&self, selection: &Selection) -> bool {
        selection.contains(&InstanceLocation {
            patient_id: self.patient_id.clone(),
            study_instance_uid: self.study_uid.clone(),
            series_instance_uid: self.series_uid.clone(),
            sop_instance_uid: self.sop_uid.clone(),
            sop_class_uid: String::new(),
            transfer_syntax_uid: String::new(),
            blob_key: String::new(),
            size_bytes: 0,
        })
    }
}

/// What the fake source was asked, and what it saw.
#[derive(Debug, Default)]
struct Calls {
    find: AtomicUsize,
    count: AtomicUsize,
    fetch: AtomicUsize,
    /// Instances stored into a sink, over all fetches.
    stored: AtomicUsize,
    /// A fetch saw its sink's cancel token fire.
    cancelled: AtomicBool,
}

/// A source held in memory.
#[derive(Debug)]
struct FakeSource {
    instances: Vec<HeldInstance>,
    /// Query answers by level (the keys are not matched: like a PACS without fuzzy
    /// matching, the core is left to filter names).
    rows: Vec<(Level, Match)>,
    /// The query levels it answers (all three unless [`FakeSource::study_only`]).
    levels: Vec<Level>,
    /// Its rows answer only a query that names a patient (another gateway, asked by BSN).
    by_patient_only: bool,
    /// Its rows answer a query that names a Study Instance UID only when they are of it.
    matches_study: bool,
    fuzzy_names: bool,
    /// Waited before each instance is stored.
    delay: Duration,
    /// Waited after the last instance before the fetch reports (a PACS's final C-GET
    /// response coming after its last sub-operation).
    end_delay: Duration,
    /// Every call fails as unreachable.
    unreachable: AtomicBool,
    /// After this many instances a fetch stores nothing more until it is cancelled.
    stall_after: AtomicUsize,
    /// After this many instances a fetch fails (the association to the PACS dropped).
    fail_after: AtomicUsize,
    calls: Calls,
}

const NAME: &str = "fake source";
const NO_STALL: usize = usize::MAX;

impl FakeSource {
    fn new(instances: Vec<HeldInstance>) -> Self {
        FakeSource {
            instances,
            rows: Vec::new(),
            levels: vec![Level::Study, Level::Series, Level::Image],
            by_patient_only: false,
            matches_study: false,
            fuzzy_names: false,
            delay: Duration::ZERO,
            end_delay: Duration::ZERO,
            unreachable: AtomicBool::new(false),
            stall_after: AtomicUsize::new(NO_STALL),
            fail_after: AtomicUsize::new(NO_STALL),
            calls: Calls::default(),
        }
    }

    fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    fn with_end_delay(mut self, delay: Duration) -> Self {
        self.end_delay = delay;
        self
    }

    /// Answers study-level queries only (another gateway: ITI-38 finds studies).
    fn study_only(mut self) -> Self {
        self.levels = vec![Level::Study];
        self
    }

    fn with_rows(mut self, rows: Vec<(Level, Match)>) -> Self {
        self.rows = rows;
        self
    }

    fn down(&self) -> Result<(), SourceError> {
        match self.unreachable.load(Ordering::SeqCst) {
            true => Err(SourceError::new(
                NAME,
                SourceErrorKind::Unreachable,
                "connection refused",
            )),
            false => Ok(()),
        }
    }

    fn finds(&self) -> usize {
        self.calls.find.load(Ordering::SeqCst)
    }

    fn counts(&self) -> usize {
        self.calls.count.load(Ordering::SeqCst)
    }

    fn fetches(&self) -> usize {
        self.calls.fetch.load(Ordering::SeqCst)
    }

    fn stored(&self) -> usize {
        self.calls.stored.load(Ordering::SeqCst)
    }

    /// Store one instance through the sink: the one ingest path, then handed on.
    async fn store(&self, instance: &HeldInstance, sink: &Sink<'_>) -> Result<(), SourceError> {
        let failed = |why: String| SourceError::new(NAME, SourceErrorKind::Failed, why);
        let mut blob = sink
            .blobs
            .begin()
            .await
            .map_err(|e| failed(e.to_string()))?;
        blob.write(&instance.bytes)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let expected = Expected {
            sop_instance: Some(&instance.sop_uid),
            ..Default::default()
        };
        let ingested = ingest::persist(sink.blobs, sink.index, blob, expected)
            .await
            .map_err(|e| failed(e.reason))?;
        self.calls.stored.fetch_add(1, Ordering::SeqCst);
        // A consumer that went away closes nothing here: the cancel token says so.
        let _ = sink.out.send(ingested.record.location().into()).await;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Source for FakeSource {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            query_levels: self.levels.clone(),
            retrieve: true,
            fuzzy_names: self.fuzzy_names,
            transfer_syntaxes: vec![crate::sop::EXPLICIT_VR_LE.to_string()],
        }
    }

    async fn find(&self, query: &Query, window: usize) -> Result<Vec<Match>, SourceError> {
        self.calls.find.fetch_add(1, Ordering::SeqCst);
        self.down()?;
        if self.by_patient_only && !query.keys.iter().any(|k| k.attr.tag == PATIENT_ID) {
            return Ok(Vec::new());
        }
        let study = query.keys.iter().find_map(|k| match &k.matcher {
            Matcher::Single(uid) if k.attr.tag == STUDY_UID => Some(uid),
            _ => None,
        });
        Ok(self
            .rows
            .iter()
            .filter(|(level, _)| *level == query.level)
            .filter(|(_, row)| {
                !self.matches_study || study.is_none_or(|uid| row.get(&STUDY_UID) == Some(uid))
            })
            .map(|(_, m)| m.clone())
            .take(window)
            .collect())
    }

    async fn count(&self, selection: &Selection) -> Result<u64, SourceError> {
        self.calls.count.fetch_add(1, Ordering::SeqCst);
        self.down()?;
        Ok(self
            .instances
            .iter()
            .filter(|i| i.selected_by(selection))
            .count() as u64)
    }

    async fn fetch(
        &self,
        selection: &Selection,
        sink: &Sink<'_>,
    ) -> Result<FetchReport, SourceError> {
        self.calls.fetch.fetch_add(1, Ordering::SeqCst);
        self.down()?;
        let mut report = FetchReport {
            ok: true,
            ..Default::default()
        };
        let selected = self.instances.iter().filter(|i| i.selected_by(selection));
        for (n, instance) in selected.enumerate() {
            if n >= self.fail_after.load(Ordering::SeqCst) {
                return Err(SourceError::new(
                    NAME,
                    SourceErrorKind::Unreachable,
                    "association aborted",
                ));
            }
            let stalled = n >= self.stall_after.load(Ordering::SeqCst);
            let delay = self.delay;
            let wait = async move {
                match stalled {
                    true => std::future::pending::<()>().await,
                    false => tokio::time::sleep(delay).await,
                }
            };
            tokio::select! {
                biased;
                _ = sink.cancel.cancelled() => {
                    self.calls.cancelled.store(true, Ordering::SeqCst);
                    return Err(SourceError::new(NAME, SourceErrorKind::Cancelled, "cancelled"));
                }
                _ = wait => {}
            }
            self.store(instance, sink).await?;
            report.completed += 1;
            report.received += 1;
        }
        tokio::select! {
            biased;
            _ = sink.cancel.cancelled() => {
                self.calls.cancelled.store(true, Ordering::SeqCst);
                return Err(SourceError::new(NAME, SourceErrorKind::Cancelled, "cancelled"));
            }
            _ = tokio::time::sleep(self.end_delay) => {}
        }
        Ok(report)
    }
}

/// One MR series of `n` real instances (256×256, Explicit VR Little Endian), in memory,
/// in instance-number order; another `seed`, another patient and study.
fn mr_series(seed: u64, n: u32) -> Vec<HeldInstance> {
    let dir = tempfile::tempdir().expect("temp dir");
    let args = crate::testdata::GenerateArgs {
        seed,
        patients: 1,
        ct_slices: 0,
        mr_slices: n,
        ..crate::testdata::GenerateArgs::with_defaults(dir.path())
    };
    crate::testdata::generate(&args)
        .expect("generate")
        .into_iter()
        .map(|f| HeldInstance {
            bytes: std::fs::read(&f.path).expect("read generated file"),
            patient_id: f.patient_id,
            study_uid: f.study_uid,
            series_uid: f.series_uid,
            sop_uid: f.sop_uid,
        })
        .collect()
}

/// A real index, blob store and trust layer in a temp dir (the default configuration:
/// anonymous DICOMweb and unknown DIMSE callers admitted, as in the loopback demo).
struct Harness {
    _dir: TempDir,
    index: Arc<dyn Index>,
    blobs: BlobStore,
    trust: Arc<Trust>,
}

impl Harness {
    async fn new() -> Harness {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = Config::from_toml(&format!(
            "[storage]\ndata_dir = \"{}\"\n",
            dir.path().display()
        ))
        .expect("config");
        let index = open_index(&config.index_url()).await.expect("index");
        let blobs = BlobStore::open(&config.storage.data_dir)
            .await
            .expect("blob store");
        let trust = Arc::new(Trust::new(&config, index.clone()).expect("trust"));
        Harness {
            _dir: dir,
            index,
            blobs,
            trust,
        }
    }

    /// A core with `source` routed to `fronts`; a complete study is trusted for 5 minutes.
    fn core(&self, source: &Arc<FakeSource>, fronts: &[Front]) -> Arc<Core> {
        Core::builder(self.trust.clone(), self.index.clone(), self.blobs.clone())
            .cache_rules(CacheRules {
                max_bytes: 0,
                refresh_secs: 300,
                client_wait: None,
            })
            .source(source.clone(), fronts)
            .build()
    }

    /// Store instances into the cache directly (as STOW-RS or an earlier fetch would have).
    async fn cache(&self, instances: &[HeldInstance]) {
        for instance in instances {
            let mut blob = self.blobs.begin().await.expect("begin");
            blob.write(&instance.bytes).await.expect("write");
            ingest::persist(&self.blobs, self.index.as_ref(), blob, Expected::default())
                .await
                .expect("persist");
        }
    }

    async fn audit(&self) -> Vec<AuditEvent> {
        self.index.audit_events(1000).await.expect("audit events")
    }

    /// Wait until the audit trail holds `n` records, then a little longer to see that no
    /// more come (a dropped ticket writes its record from a spawned task).
    async fn audit_settled(&self, n: usize) -> Vec<AuditEvent> {
        wait_for("audit records", || async { self.audit().await.len() >= n }).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.audit().await
    }
}

fn web_caller() -> Caller {
    Caller::new("tester", "127.0.0.1:40000")
}

fn dimse_caller() -> Caller {
    Caller::dimse("WORKSTATION", "127.0.0.1:40001")
}

fn study_of(instances: &[HeldInstance]) -> Selection {
    Selection {
        study_uids: vec![instances[0].study_uid.clone()],
        ..Default::default()
    }
}

fn sops(instances: &[HeldInstance]) -> Vec<String> {
    instances.iter().map(|i| i.sop_uid.clone()).collect()
}

/// Poll `condition` until it holds; fail the test after [`PATIENCE`].
async fn wait_for<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every instance of a retrieval, in the order they came, and finish its ticket.
async fn drain(mut retrieval: Retrieval) -> Vec<String> {
    let mut got = Vec::new();
    while let Some(batch) = retrieval.instances.next_batch().await {
        got.extend(
            batch
                .expect("batch")
                .into_iter()
                .map(|l| l.sop_instance_uid),
        );
    }
    retrieval.ticket.finish("success", "").await;
    got
}

async fn retrieve(
    core: &Arc<Core>,
    caller: &Caller,
    operation: Operation,
    selection: &Selection,
) -> Result<Retrieval, CoreError> {
    let ticket = core.admit(caller, operation).await.expect("admitted");
    core.retrieve(ticket, selection.clone(), Delivery::Streamed)
        .await
}

/// The fetch of a study has ended and its cache state is written (the study is no longer
/// held by a running fetch, so the next request decides afresh).
async fn fetch_ended(core: &Arc<Core>, study: &str) {
    wait_for("the fetch to end", || async { !core.fetches.pinned(study) }).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_retrieve_is_answered_from_the_cache() {
    let h = Harness::new().await;
    let held = mr_series(1, 4);
    let source = Arc::new(FakeSource::new(held.clone()));
    let core = h.core(&source, &[Front::Web]);
    let study = study_of(&held);

    let first = retrieve(&core, &web_caller(), Operation::WadoRs, &study)
        .await
        .expect("first retrieve");
    assert_eq!(first.from, NAME);
    assert_eq!(drain(first).await, sops(&held));
    fetch_ended(&core, &study.study_uids[0]).await;
    let state = h.index.cached_study(&study.study_uids[0]).await.unwrap();
    assert!(state.is_some_and(|s| s.complete && s.pacs_instances == 4));

    let second = retrieve(&core, &web_caller(), Operation::WadoRs, &study)
        .await
        .expect("second retrieve");
    assert_eq!(second.from, "cache");
    assert_eq!(second.expected, 4);
    assert_eq!(
        second.stored_syntaxes.as_deref(),
        Some(&[crate::testdata::EXPLICIT_VR_LE.to_string()][..])
    );
    assert_eq!(drain(second).await, sops(&held));
    assert_eq!(source.fetches(), 1, "the source was fetched from again");
    // A complete study within refresh_secs is trusted without asking the source.
    assert_eq!(source.counts(), 1, "the source was asked to count again");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_miss_streams_from_the_first_instance() {
    let h = Harness::new().await;
    let held = mr_series(1, 6);
    let source = Arc::new(FakeSource::new(held.clone()).with_delay(Duration::from_millis(150)));
    let core = h.core(&source, &[Front::Web]);
    let study = study_of(&held);

    let mut retrieval = retrieve(&core, &web_caller(), Operation::WadoRs, &study)
        .await
        .expect("retrieve");
    assert_eq!(retrieval.from, NAME);
    assert_eq!(retrieval.expected, 6);
    // Not known before the first byte: nothing of it is in the cache yet.
    assert_eq!(retrieval.stored_syntaxes, None);

    let first = retrieval
        .instances
        .next_batch()
        .await
        .expect("an instance")
        .expect("no error");
    let stored_then = source.stored();
    assert!(
        stored_then < held.len(),
        "the first instance came out only after the source stored all {stored_then}"
    );
    let mut got: Vec<String> = first.into_iter().map(|l| l.sop_instance_uid).collect();
    got.extend(drain(retrieval).await);
    assert_eq!(got, sops(&held), "every instance, in the source's order");
    assert_eq!(source.fetches(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_requests_share_one_fetch() {
    let h = Harness::new().await;
    let held = mr_series(1, 6);
    let source = Arc::new(FakeSource::new(held.clone()).with_delay(Duration::from_millis(50)));
    let core = h.core(&source, &[Front::Web]);
    let study = study_of(&held);

    let caller = web_caller();
    let (a, b) = tokio::join!(
        retrieve(&core, &caller, Operation::WadoRs, &study),
        retrieve(&core, &caller, Operation::WadoRs, &study),
    );
    let (a, b) = (a.expect("first retrieve"), b.expect("second retrieve"));
    // Both follow the fetch (neither waited for the other to fill the cache).
    assert_eq!((a.from, b.from), (NAME, NAME));
    let (a, b) = tokio::join!(drain(a), drain(b));
    assert_eq!(a, sops(&held));
    assert_eq!(b, sops(&held));
    assert_eq!(source.fetches(), 1, "one fetch for both requests");
    assert_eq!(source.stored(), held.len(), "each instance stored once");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_consumer_gone_cancels_the_fetch() {
    let h = Harness::new().await;
    let held = mr_series(1, 6);
    let source = Arc::new(FakeSource::new(held.clone()));
    source.stall_after.store(2, Ordering::SeqCst);
    let core = h.core(&source, &[Front::Web]);
    let study = study_of(&held);
    let uid = study.study_uids[0].clone();

    let mut retrieval = retrieve(&core, &web_caller(), Operation::WadoRs, &study)
        .await
        .expect("retrieve");
    let first = retrieval.instances.next_batch().await.expect("an instance");
    assert_eq!(first.expect("no error").len(), 1);
    drop(retrieval);

    wait_for("the source to see the cancel", || async {
        source.calls.cancelled.load(Ordering::SeqCst)
    })
    .await;
    fetch_ended(&core, &uid).await;
    let state = h.index.cached_study(&uid).await.unwrap();
    assert!(
        !state.as_ref().is_some_and(|s| s.complete),
        "a cancelled fetch recorded the study complete: {state:?}"
    );

    // The next request fetches again rather than serve the part as the whole.
    source.stall_after.store(NO_STALL, Ordering::SeqCst);
    let again = retrieve(&core, &web_caller(), Operation::WadoRs, &study)
        .await
        .expect("retrieve again");
    assert_eq!(again.from, NAME);
    assert_eq!(drain(again).await, sops(&held));
    assert_eq!(source.fetches(), 2);
}

/// The instances `held[range]` named one by one, as a RAD-75 request names its documents.
fn named(held: &[HeldInstance]) -> Selection {
    Selection {
        study_uids: vec![held[0].study_uid.clone()],
        series_uids: vec![held[0].series_uid.clone()],
        sop_instance_uids: sops(held),
        ..Default::default()
    }
}

/// A consumer that stops once it has every instance it asked for (a RAD-75 answer ends
/// after its last document) before the source's final response: the fetch is not
/// cancelled; it ends complete, and the study's cache state says what it holds.
#[tokio::test(flavor = "multi_thread")]
async fn a_consumer_that_took_every_instance_lets_the_fetch_complete() {
    let h = Harness::new().await;
    let held = mr_series(1, 4);
    let source = Arc::new(FakeSource::new(held.clone()).with_end_delay(Duration::from_millis(300)));
    let core = h.core(&source, &[Front::Web]);
    let selection = named(&held);
    let uid = selection.study_uids[0].clone();

    let ticket = core
        .admit(&web_caller(), Operation::WadoRs)
        .await
        .expect("admitted");
    let Retrieval {
        mut instances,
        ticket,
        from,
        ..
    } = core
        .retrieve(ticket, selection, Delivery::Streamed)
        .await
        .expect("retrieve");
    assert_eq!(from, NAME);
    let mut got = Vec::new();
    while got.len() < held.len() {
        let batch = instances.next_batch().await.expect("an instance");
        got.extend(
            batch
                .expect("no error")
                .into_iter()
                .map(|l| l.sop_instance_uid),
        );
    }
    assert_eq!(got, sops(&held));
    // Gone before the source's end, as the RAD-75 answer goes after its closing delimiter.
    drop(instances);
    ticket.finish("success", "").await;

    fetch_ended(&core, &uid).await;
    assert!(
        !source.calls.cancelled.load(Ordering::SeqCst),
        "the fetch was cancelled although its consumer took every instance"
    );
    let (running, ended) = core.fetches.transfers();
    assert!(running.is_empty());
    assert_eq!(ended[0].state, "complete", "{:?}", ended[0]);
    assert_eq!(ended[0].received, 4);
}

/// Two fetches of one study on this node (two RAD-75 requests naming different instances,
/// the second sent while the first is read) share the study's fetch lease: the first to
/// end does not give it back under the second, which another node would then duplicate.
#[tokio::test(flavor = "multi_thread")]
async fn overlapping_fetches_of_a_study_hold_its_lease_until_the_last_ends() {
    let h = Harness::new().await;
    let held = mr_series(1, 6);
    let source = Arc::new(FakeSource::new(held.clone()));
    // The second fetch (4 instances) stalls after 2; the first (2 instances) completes.
    source.stall_after.store(2, Ordering::SeqCst);
    let core = h.core(&source, &[Front::Web]);
    let (first, second) = (named(&held[..2]), named(&held[2..]));
    let lease = format!("fetch:{}", first.study_uids[0]);
    let other_node_takes_it = || async {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64;
        let taken = h
            .index
            .try_lease(&lease, "another node", now, now + 300)
            .await
            .expect("lease");
        if taken {
            h.index.release_lease(&lease, "another node").await.unwrap();
        }
        taken
    };

    let a = retrieve(&core, &web_caller(), Operation::WadoRs, &first)
        .await
        .expect("first retrieve");
    let mut b = retrieve(&core, &web_caller(), Operation::WadoRs, &second)
        .await
        .expect("second retrieve");
    assert_eq!((a.from, b.from), (NAME, NAME));
    assert_eq!(drain(a).await, sops(&held[..2]));
    for _ in 0..2 {
        b.instances
            .next_batch()
            .await
            .expect("an instance")
            .unwrap();
    }
    assert_eq!(source.fetches(), 2);
    wait_for("the first fetch to end", || async {
        core.fetches.transfers().1.len() == 1
    })
    .await;
    assert!(
        !other_node_takes_it().await,
        "the study's lease was given back while its second fetch still ran"
    );

    // The second ends (its consumer leaves): now the lease goes back.
    drop(b);
    wait_for("the second fetch to end", || async {
        core.fetches.transfers().0.is_empty()
    })
    .await;
    wait_for("the lease to be given back", || async {
        other_node_takes_it().await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_source_down_leaves_what_the_cache_holds() {
    let h = Harness::new().await;
    let held = mr_series(1, 5);
    let source = Arc::new(FakeSource::new(held.clone()));
    source.unreachable.store(true, Ordering::SeqCst);
    let core = h.core(&source, &[Front::Web]);
    let study = study_of(&held);
    h.cache(&held[..2]).await;

    let partial = retrieve(&core, &web_caller(), Operation::WadoRs, &study)
        .await
        .expect("answered from the cache");
    assert_eq!(partial.from, "cache");
    assert_eq!(partial.expected, 2);
    assert_eq!(drain(partial).await, sops(&held[..2]));
    assert!(source.counts() >= 1, "the source was not asked");
    assert_eq!(source.fetches(), 0);

    // Nothing cached: the source's failure is the answer.
    let unknown = Selection {
        study_uids: vec!["2.25.4242".into()],
        ..Default::default()
    };
    match retrieve(&core, &web_caller(), Operation::WadoRs, &unknown).await {
        Err(CoreError::Source(e)) => assert_eq!(e.kind, SourceErrorKind::Unreachable),
        other => panic!("expected the source's error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_audit_record_per_operation() {
    let h = Harness::new().await;
    let held = mr_series(1, 4);
    let source = Arc::new(FakeSource::new(held.clone()).with_delay(Duration::from_millis(50)));
    let core = h.core(&source, &[Front::Web]);
    let study = study_of(&held);

    // Admitted, retrieved, finished.
    let retrieval = retrieve(&core, &web_caller(), Operation::WadoRs, &study)
        .await
        .expect("retrieve");
    assert_eq!(drain(retrieval).await.len(), 4);
    let records = h.audit_settled(1).await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(
        (records[0].operation.as_str(), records[0].outcome.as_str()),
        ("WADO-RS", "success")
    );

    // Refused at admission.
    let bad_token = Caller {
        credential_error: Some("token expired".into()),
        ..web_caller()
    };
    let refused = core.admit(&bad_token, Operation::WadoRs).await;
    assert!(matches!(refused, Err(CoreError::Refused(_))));
    let records = h.audit_settled(2).await;
    assert_eq!(records.len(), 2, "{records:?}");
    assert_eq!(records[1].outcome, "refused");

    // A retrieve that fails (nothing anywhere) is recorded where it fails.
    let nowhere = Selection {
        study_uids: vec!["2.25.4242".into()],
        ..Default::default()
    };
    let failed = retrieve(&core, &web_caller(), Operation::WadoRs, &nowhere).await;
    assert!(matches!(failed, Err(CoreError::NotFound(_))), "{failed:?}");
    let records = h.audit_settled(3).await;
    assert_eq!(records.len(), 3, "{records:?}");
    assert_eq!(records[2].outcome, "failure");

    // A stream dropped unfinished (its consumer went away).
    let other = mr_series(2, 6);
    let source = Arc::new(FakeSource::new(other.clone()).with_delay(Duration::from_millis(50)));
    let core = h.core(&source, &[Front::Web]);
    let mut retrieval = retrieve(&core, &web_caller(), Operation::WadoRs, &study_of(&other))
        .await
        .expect("retrieve");
    assert_eq!(retrieval.from, NAME);
    retrieval
        .instances
        .next_batch()
        .await
        .expect("an instance")
        .expect("no error");
    drop(retrieval);
    let records = h.audit_settled(4).await;
    assert_eq!(records.len(), 4, "{records:?}");
    assert_eq!(records[3].outcome, "failure");
    assert!(
        records[3].detail.contains("ended without outcome"),
        "{:?}",
        records[3].detail
    );
}

fn study_row(uid: &str, values: &[(Tag, &str)]) -> (Level, Match) {
    let mut m = Match::from([(STUDY_UID, uid.to_string())]);
    m.extend(values.iter().map(|(t, v)| (*t, v.to_string())));
    (Level::Study, m)
}

fn uids_of(matches: &[Match]) -> Vec<String> {
    matches.iter().map(|m| m[&STUDY_UID].clone()).collect()
}

async fn query(core: &Arc<Core>, caller: &Caller, operation: Operation, q: Query) -> Vec<Match> {
    let ticket = core.admit(caller, operation).await.expect("admitted");
    let found = core.query(ticket, q, 100).await.expect("query");
    found.ticket.finish("success", "").await;
    found.matches
}

#[tokio::test(flavor = "multi_thread")]
async fn a_query_with_a_source_down_answers_from_the_cache_marked_incomplete() {
    let h = Harness::new().await;
    let cached = mr_series(1, 2);
    let source = Arc::new(FakeSource::new(Vec::new()).with_rows(vec![study_row("2.25.77", &[])]));
    source.unreachable.store(true, Ordering::SeqCst);
    let core = h.core(&source, &[Front::Web]);

    // Nothing cached and the only source down: the source's failure is the answer.
    let ticket = core.admit(&web_caller(), Operation::QidoRs).await.unwrap();
    match core.query(ticket, Query::new(Level::Study), 100).await {
        Err(CoreError::Source(e)) => assert_eq!(e.kind, SourceErrorKind::Unreachable),
        other => panic!("expected the source's error, got {other:?}"),
    }

    // The cache holds a study: it is answered, and the answer names the silent source.
    h.cache(&cached).await;
    let ticket = core.admit(&web_caller(), Operation::QidoRs).await.unwrap();
    let found = core
        .query(ticket, Query::new(Level::Study), 100)
        .await
        .expect("answered from the cache");
    assert_eq!(uids_of(&found.matches), vec![cached[0].study_uid.clone()]);
    assert_eq!(found.unanswered.len(), 1);
    assert_eq!(found.unanswered[0].kind, SourceErrorKind::Unreachable);
    found.ticket.finish("partial", "").await;

    // Up again: complete, and the source's study is there too.
    source.unreachable.store(false, Ordering::SeqCst);
    let ticket = core.admit(&web_caller(), Operation::QidoRs).await.unwrap();
    let found = core
        .query(ticket, Query::new(Level::Study), 100)
        .await
        .unwrap();
    assert!(found.unanswered.is_empty());
    assert_eq!(found.matches.len(), 2);
    found.ticket.finish("success", "").await;
}

/// A series or instance query of a study that a study-only source holds (another gateway:
/// a viewer lists the series of a study found by ITI-38): the study is fetched into the
/// cache first and the cache answers, with the attributes only the instances carry; the
/// next query is answered by the cache alone. The source down: what the cache holds,
/// marked incomplete.
#[tokio::test(flavor = "multi_thread")]
async fn a_series_query_of_a_study_only_sources_study_fetches_it_first() {
    let h = Harness::new().await;
    let held = mr_series(1, 3);
    let (study, series) = (held[0].study_uid.clone(), held[0].series_uid.clone());
    let source = Arc::new(
        FakeSource::new(held.clone())
            .study_only()
            .with_rows(vec![study_row(&study, &[])]),
    );
    let core = h.core(&source, &[Front::Web]);
    let of_study = |level, uid: &str| {
        Query::new(level).with_key(
            indexed_attr_by_keyword("StudyInstanceUID").unwrap(),
            Matcher::Single(uid.to_string()),
        )
    };
    const SERIES_UID: Tag = Tag(0x0020, 0x000E);
    const MODALITY: Tag = Tag(0x0008, 0x0060);

    let rows = query(
        &core,
        &web_caller(),
        Operation::QidoRs,
        of_study(Level::Series, &study),
    )
    .await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].get(&SERIES_UID), Some(&series));
    assert_eq!(rows[0].get(&MODALITY).map(String::as_str), Some("MR"));
    assert_eq!(source.fetches(), 1, "fetched before the answer");
    fetch_ended(&core, &study).await;

    let instances = query(
        &core,
        &web_caller(),
        Operation::QidoRs,
        of_study(Level::Image, &study),
    )
    .await;
    assert_eq!(instances.len(), 3);
    assert_eq!(source.fetches(), 1, "the cache answered");

    // A study the source does not hold: nothing fetched, nothing found.
    let other = query(
        &core,
        &web_caller(),
        Operation::QidoRs,
        of_study(Level::Series, "2.25.1"),
    )
    .await;
    assert!(other.is_empty());
    assert_eq!(source.fetches(), 1);

    // Another core on the same cache, the study not trusted as fresh, the source down: the
    // cache's series, the answer marked incomplete.
    let core = Core::builder(h.trust.clone(), h.index.clone(), h.blobs.clone())
        .source(source.clone(), &[Front::Web])
        .build();
    h.index
        .put_cached_study(&crate::store::index::CachedStudy {
            study_instance_uid: study.clone(),
            pacs_instances: 3,
            complete: true,
            checked_at: 0,
            last_access: 0,
        })
        .await
        .unwrap();
    source.unreachable.store(true, Ordering::SeqCst);
    let ticket = core.admit(&web_caller(), Operation::QidoRs).await.unwrap();
    let found = core
        .query(ticket, of_study(Level::Series, &study), 100)
        .await
        .expect("the cache answers");
    assert_eq!(found.matches.len(), 1);
    assert_eq!(found.unanswered.len(), 1, "{:?}", found.unanswered);
    assert_eq!(found.unanswered[0].kind, SourceErrorKind::Unreachable);
    found.ticket.finish("partial", "").await;
}

/// A study-only source is asked by the query's patient (an ITI-38 to other hospitals) only
/// when nothing else answered a series query: a study the hospital's PACS holds sends no
/// query out; one that nobody knew is found by its patient, fetched and answered.
#[tokio::test(flavor = "multi_thread")]
async fn a_study_only_source_is_asked_by_patient_only_when_nothing_answered() {
    let h = Harness::new().await;
    let local = mr_series(1, 2);
    let remote = mr_series(2, 3);
    const SERIES_UID: Tag = Tag(0x0020, 0x000E);
    let mut local_series = Match::new();
    local_series.insert(STUDY_UID, local[0].study_uid.clone());
    local_series.insert(SERIES_UID, local[0].series_uid.clone());
    let mut pacs = FakeSource::new(local.clone()).with_rows(vec![(Level::Series, local_series)]);
    pacs.matches_study = true;
    let pacs = Arc::new(pacs);
    let mut gateway = FakeSource::new(remote.clone())
        .study_only()
        .with_rows(vec![study_row(
            &remote[0].study_uid,
            &[(PATIENT_ID, remote[0].patient_id.as_str())],
        )]);
    gateway.by_patient_only = true;
    let gateway = Arc::new(gateway);
    let core = Core::builder(h.trust.clone(), h.index.clone(), h.blobs.clone())
        .source(pacs.clone(), &[Front::Web])
        .source(gateway.clone(), &[Front::Web])
        .build();
    let series_of = |held: &[HeldInstance]| {
        Query::new(Level::Series)
            .with_key(
                indexed_attr_by_keyword("PatientID").unwrap(),
                Matcher::Single(held[0].patient_id.clone()),
            )
            .with_key(
                indexed_attr_by_keyword("StudyInstanceUID").unwrap(),
                Matcher::Single(held[0].study_uid.clone()),
            )
    };

    // The PACS's study: answered by the PACS; the gateway asked only what it knows.
    let rows = query(&core, &web_caller(), Operation::QidoRs, series_of(&local)).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        gateway.finds(),
        1,
        "asked by the study alone, not by the patient"
    );
    assert_eq!(gateway.fetches(), 0);

    // A study nobody knew: the gateway asked by the patient, the study fetched, its series
    // answered from the cache.
    let rows = query(&core, &web_caller(), Operation::QidoRs, series_of(&remote)).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].get(&SERIES_UID), Some(&remote[0].series_uid));
    assert_eq!(gateway.finds(), 3, "by the study, then by the patient");
    assert_eq!(gateway.fetches(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_patient_query_folds_a_study_only_source_into_patients() {
    use crate::model::query::computed;
    let h = Harness::new().await;
    let series = Tag(0x0020, 0x1206);
    let instances = Tag(0x0020, 0x1208);
    let source = Arc::new(FakeSource::new(Vec::new()).with_rows(vec![
        study_row(
            "2.25.1",
            &[
                (PATIENT_ID, "P1"),
                (PATIENT_NAME, "Jansen^Piet"),
                (series, "2"),
                (instances, "10"),
            ],
        ),
        study_row(
            "2.25.2",
            &[
                (PATIENT_ID, "P1"),
                (PATIENT_NAME, "Jansen^Piet"),
                (series, "1"),
                (instances, "5"),
            ],
        ),
        study_row("2.25.3", &[(PATIENT_ID, "P2"), (PATIENT_NAME, "Bakker^An")]),
    ]));
    let core = h.core(&source, &[Front::Web]);
    let found = query(
        &core,
        &web_caller(),
        Operation::QidoRs,
        Query::new(Level::Patient),
    )
    .await;
    let ids: Vec<&str> = found.iter().map(|m| m[&PATIENT_ID].as_str()).collect();
    assert_eq!(ids, ["P1", "P2"], "one row per patient, by Patient ID");
    let p1 = &found[0];
    assert_eq!(p1[&PATIENT_NAME], "Jansen^Piet");
    assert_eq!(p1[&computed::NUMBER_OF_PATIENT_RELATED_STUDIES], "2");
    assert_eq!(p1[&computed::NUMBER_OF_PATIENT_RELATED_SERIES], "3");
    assert_eq!(p1[&computed::NUMBER_OF_PATIENT_RELATED_INSTANCES], "15");
    assert!(
        !p1.contains_key(&STUDY_UID),
        "no study attribute at patient level"
    );
    // P2's study reported no counts: the patient's are not made up.
    assert_eq!(found[1][&computed::NUMBER_OF_PATIENT_RELATED_STUDIES], "1");
    assert!(!found[1].contains_key(&computed::NUMBER_OF_PATIENT_RELATED_INSTANCES));
}

#[tokio::test(flavor = "multi_thread")]
async fn queries_merge_the_cache_and_the_source() {
    let h = Harness::new().await;
    let cached = mr_series(1, 2);
    h.cache(&cached).await;
    let cached_uid = cached[0].study_uid.clone();
    let cached_row = h
        .index
        .find(&Query::new(Level::Study))
        .await
        .expect("index find")
        .remove(0);
    let description = cached_row[&STUDY_DESCRIPTION].clone();
    assert!(!description.is_empty(), "the generator writes one");

    let source = Arc::new(FakeSource::new(Vec::new()).with_rows(vec![
        study_row("2.25.77", &[(PATIENT_NAME, "Jansen^Pieter")]),
        study_row("2.25.88", &[(PATIENT_NAME, "MULLER^ANNA")]),
        // The cached study as the source sees it: its accession number differs, and it
        // leaves the description empty. Last, so that a window of two leaves it out.
        study_row(
            &cached_uid,
            &[
                (ACCESSION_NUMBER, "SRC-ACC"),
                (STUDY_DESCRIPTION, ""),
                (PATIENT_NAME, "Müller^Zoë"),
            ],
        ),
    ]));
    let core = h.core(&source, &[Front::Web]);
    let mut all_uids = vec![cached_uid.clone(), "2.25.77".into(), "2.25.88".into()];
    all_uids.sort();

    let all = query(
        &core,
        &web_caller(),
        Operation::QidoRs,
        Query::new(Level::Study),
    )
    .await;
    assert_eq!(uids_of(&all), all_uids, "one row per study, by unique key");
    let merged = all.iter().find(|m| m[&STUDY_UID] == cached_uid).unwrap();
    assert_eq!(
        merged[&ACCESSION_NUMBER], "SRC-ACC",
        "the source's row wins"
    );
    assert_eq!(
        merged[&STUDY_DESCRIPTION], description,
        "a value the source left empty is the cache's"
    );
    assert_eq!(merged[&PATIENT_ID], cached[0].patient_id);

    // Paged after the merge.
    let page = Query {
        limit: Some(2),
        offset: 1,
        ..Query::new(Level::Study)
    };
    let page = query(&core, &web_caller(), Operation::QidoRs, page).await;
    assert_eq!(uids_of(&page), all_uids[1..3]);

    // At most max_results, with or without a limit: the source's first two and the
    // cache's one are three rows, two go out.
    let ticket = core.admit(&web_caller(), Operation::QidoRs).await.unwrap();
    let found = core
        .query(ticket, Query::new(Level::Study), 2)
        .await
        .unwrap();
    assert_eq!(uids_of(&found.matches), all_uids[..2]);
    found.ticket.finish("success", "").await;

    // Fuzzy names: the source cannot, so the core matches its rows (the cache matches its
    // own): "muller" finds both Müllers, not Jansen.
    let name = indexed_attr_by_keyword("PatientName").unwrap();
    let fuzzy = Query::new(Level::Study).with_key(name, Matcher::Fuzzy("muller".into()));
    let found = query(&core, &web_caller(), Operation::QidoRs, fuzzy).await;
    let mut expected = vec![cached_uid.clone(), "2.25.88".to_string()];
    expected.sort();
    assert_eq!(uids_of(&found), expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_decide_which_fronts_reach_a_source() {
    let held = mr_series(1, 3);
    let study = study_of(&held);
    let row = study_row(&study.study_uids[0], &[(PATIENT_NAME, "Müller^Zoë")]);

    // Web only: DIMSE operations are answered by the cache alone.
    let h = Harness::new().await;
    let source = Arc::new(FakeSource::new(held.clone()).with_rows(vec![row.clone()]));
    let core = h.core(&source, &[Front::Web]);
    let found = query(
        &core,
        &dimse_caller(),
        Operation::Find,
        Query::new(Level::Study),
    )
    .await;
    assert!(found.is_empty());
    assert_eq!(source.finds(), 0, "C-FIND reached a web-only source");
    let got = retrieve(&core, &dimse_caller(), Operation::Get, &study).await;
    assert!(matches!(got, Err(CoreError::NotFound(_))), "{got:?}");
    assert_eq!(
        (source.counts(), source.fetches()),
        (0, 0),
        "C-GET reached a web-only source"
    );
    // The web front does reach it.
    let found = query(
        &core,
        &web_caller(),
        Operation::QidoRs,
        Query::new(Level::Study),
    )
    .await;
    assert_eq!(uids_of(&found), study.study_uids);
    assert_eq!(source.finds(), 1);

    // Routed to DIMSE too (`[dimse] proxy_pacs`): C-FIND and C-GET reach it.
    let h = Harness::new().await;
    let source = Arc::new(FakeSource::new(held.clone()).with_rows(vec![row]));
    let core = h.core(&source, &[Front::Web, Front::Dimse]);
    let found = query(
        &core,
        &dimse_caller(),
        Operation::Find,
        Query::new(Level::Study),
    )
    .await;
    assert_eq!(uids_of(&found), study.study_uids);
    assert_eq!(source.finds(), 1);
    let got = retrieve(&core, &dimse_caller(), Operation::Get, &study)
        .await
        .expect("C-GET through the source");
    assert_eq!(got.from, NAME);
    assert_eq!(drain(got).await, sops(&held));
    assert_eq!(source.fetches(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_consumer_leaving_does_not_cancel_the_other() {
    let h = Harness::new().await;
    let held = mr_series(1, 6);
    let source = Arc::new(FakeSource::new(held.clone()).with_delay(Duration::from_millis(50)));
    let core = h.core(&source, &[Front::Web]);
    let study = study_of(&held);

    let caller = web_caller();
    let (a, b) = tokio::join!(
        retrieve(&core, &caller, Operation::WadoRs, &study),
        retrieve(&core, &caller, Operation::WadoRs, &study),
    );
    let (mut a, b) = (a.expect("first retrieve"), b.expect("second retrieve"));
    a.instances
        .next_batch()
        .await
        .expect("an instance")
        .expect("no error");
    drop(a);
    assert_eq!(drain(b).await, sops(&held));
    assert!(!source.calls.cancelled.load(Ordering::SeqCst));
    assert_eq!(source.fetches(), 1);
    fetch_ended(&core, &study.study_uids[0]).await;
    let state = h.index.cached_study(&study.study_uids[0]).await.unwrap();
    assert!(state.is_some_and(|s| s.complete));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cached_delivery_waits_for_the_whole_fetch() {
    let h = Harness::new().await;
    let held = mr_series(1, 4);
    let source = Arc::new(FakeSource::new(held.clone()).with_delay(Duration::from_millis(20)));
    let core = h.core(&source, &[Front::Web]);
    // One instance (frames, rendered): only once it is in the cache.
    let one = Selection {
        study_uids: vec![held[2].study_uid.clone()],
        series_uids: vec![held[2].series_uid.clone()],
        sop_instance_uids: vec![held[2].sop_uid.clone()],
        ..Default::default()
    };
    let ticket = core.admit(&web_caller(), Operation::WadoRs).await.unwrap();
    let (located, ticket) = core.locate(ticket, one).await.expect("located");
    ticket.finish("success", "").await;
    assert_eq!(located.len(), 1);
    assert_eq!(located[0].sop_instance_uid, held[2].sop_uid);
    assert!(core.blobs.exists(&located[0].blob_key).await);
    assert_eq!((source.fetches(), source.stored()), (1, 1));

    // A study, delivered cached: planned from what the cache then holds.
    let ticket = core.admit(&web_caller(), Operation::WadoRs).await.unwrap();
    let whole = core
        .retrieve(ticket, study_of(&held), Delivery::Cached)
        .await
        .expect("retrieve");
    assert_eq!(whole.from, "cache");
    assert_eq!(whole.expected, 4);
    assert!(whole.stored_syntaxes.is_some());
    assert_eq!(source.stored(), 1 + 4, "the whole study was fetched before");
    assert_eq!(drain(whole).await, sops(&held));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_study_streamed_from_the_cache_is_not_evicted() {
    let h = Harness::new().await;
    let (a, b, c) = (mr_series(1, 2), mr_series(2, 2), mr_series(3, 2));
    let one_study: u64 = a.iter().map(|i| i.bytes.len() as u64).sum();
    let source = Arc::new(FakeSource::new([a.clone(), b.clone(), c.clone()].concat()));
    // Room for about one study.
    let core = Core::builder(h.trust.clone(), h.index.clone(), h.blobs.clone())
        .cache_rules(CacheRules {
            max_bytes: one_study + one_study / 2,
            refresh_secs: 300,
            client_wait: None,
        })
        .source(source.clone(), &[Front::Web])
        .build();
    let held = |study: &Selection| {
        let index = h.index.clone();
        let study = study.clone();
        async move { index.count_instances(&study).await.unwrap() }
    };
    let fetch = |study: Selection| {
        let core = core.clone();
        async move {
            let retrieval = retrieve(&core, &web_caller(), Operation::WadoRs, &study)
                .await
                .expect("retrieve");
            assert_eq!(retrieval.from, NAME);
            drain(retrieval).await;
            fetch_ended(&core, &study.study_uids[0]).await;
        }
    };

    fetch(study_of(&a)).await;
    // A streams from the cache (pinned) while B is fetched: B is over the limit, but A
    // is being read and B was just wanted.
    let streaming = retrieve(&core, &web_caller(), Operation::WadoRs, &study_of(&a))
        .await
        .expect("retrieve");
    assert_eq!(streaming.from, "cache");
    fetch(study_of(&b)).await;
    assert_eq!(held(&study_of(&a)).await, 2, "evicted while streamed");
    assert_eq!(held(&study_of(&b)).await, 2);
    assert_eq!(drain(streaming).await, sops(&a));

    // Unpinned, the least recently used go once the next fetch ends.
    fetch(study_of(&c)).await;
    assert_eq!(held(&study_of(&a)).await, 0);
    assert_eq!(held(&study_of(&b)).await, 0);
    assert_eq!(
        held(&study_of(&c)).await,
        2,
        "the study just fetched was evicted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fetch_that_fails_midway_ends_the_stream_with_the_error() {
    let h = Harness::new().await;
    let held = mr_series(1, 5);
    let source = Arc::new(FakeSource::new(held.clone()));
    source.fail_after.store(3, Ordering::SeqCst);
    let core = h.core(&source, &[Front::Web]);
    let study = study_of(&held);

    let mut retrieval = retrieve(&core, &web_caller(), Operation::WadoRs, &study)
        .await
        .expect("retrieve");
    let mut got = Vec::new();
    let error = loop {
        match retrieval.instances.next_batch().await {
            Some(Ok(batch)) => got.extend(batch.into_iter().map(|l| l.sop_instance_uid)),
            Some(Err(e)) => break e,
            None => panic!("the stream ended as if complete after {got:?}"),
        }
    };
    assert_eq!(got, sops(&held[..3]), "what came before the failure");
    assert!(matches!(error, CoreError::Source(_)), "{error:?}");
    assert!(error.to_string().contains("association aborted"), "{error}");
    retrieval.ticket.finish("failure", error.to_string()).await;
    fetch_ended(&core, &study.study_uids[0]).await;
    let state = h.index.cached_study(&study.study_uids[0]).await.unwrap();
    assert!(!state.is_some_and(|s| s.complete));

    // The part is cached, not served as the whole: the next request fetches again.
    source.fail_after.store(NO_STALL, Ordering::SeqCst);
    let again = retrieve(&core, &web_caller(), Operation::WadoRs, &study)
        .await
        .expect("retrieve again");
    assert_eq!(again.from, NAME);
    assert_eq!(drain(again).await, sops(&held));
}

/// Give the core an instance's bytes in three pieces, as a front does while they arrive.
async fn incoming(core: &Core, bytes: &[u8]) -> super::Incoming {
    let mut incoming = core.incoming().await.expect("incoming");
    let third = bytes.len() / 3;
    for piece in [
        &bytes[..third],
        &bytes[third..2 * third],
        &bytes[2 * third..],
    ] {
        incoming.write(piece).await.expect("write");
    }
    assert_eq!(incoming.len(), bytes.len() as u64);
    incoming
}

fn temp_files(h: &Harness) -> usize {
    std::fs::read_dir(h.blobs.data_dir().join("tmp"))
        .expect("tmp dir")
        .count()
}

/// A received instance is held in memory only while the process-wide budget
/// (`store::ingest::MEMORY_BUDGET`) has room: with the budget taken by others in flight,
/// the next instance goes to a temp file as it arrives, and is stored all the same.
#[tokio::test(flavor = "multi_thread")]
async fn an_instance_goes_to_a_temp_file_when_the_memory_budget_is_taken() {
    let _alone = ingest::BUDGET_TESTS.lock().await;
    let h = Harness::new().await;
    let held = mr_series(5, 1);
    let source = Arc::new(FakeSource::new(Vec::new()));
    let core = h.core(&source, &[Front::Web]);

    // With room: held in memory while it arrives, no temp file.
    let in_memory = incoming(&core, &held[0].bytes).await;
    assert_eq!(temp_files(&h), 0, "held in memory");
    in_memory.abort().await;

    // The whole budget taken (in halving shares until not one byte more fits).
    let mut taken = ingest::MemoryHold::default();
    let mut share = ingest::MEMORY_BUDGET;
    while share > 0 {
        if !taken.grow(share) {
            share /= 2;
        }
    }
    let spilled = incoming(&core, &held[0].bytes).await;
    assert_eq!(temp_files(&h), 1, "written to a temp file as it arrived");
    let mut ticket = core
        .admit(&web_caller(), Operation::StowRs)
        .await
        .expect("admitted");
    let expected = Expected {
        sop_instance: Some(&held[0].sop_uid),
        ..Default::default()
    };
    let stored = core
        .ingest(&mut ticket, spilled, expected)
        .await
        .expect("stored from its temp file");
    assert_eq!(stored.status, crate::status::code::SUCCESS);
    assert_eq!(temp_files(&h), 0, "the temp file became the blob");
    drop(taken);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_is_acknowledged_durable_and_indexed() {
    let h = Harness::new().await;
    let held = mr_series(3, 3);
    let source = Arc::new(FakeSource::new(Vec::new()));
    let core = h.core(&source, &[Front::Web]);
    let mut ticket = core
        .admit(&web_caller(), Operation::StowRs)
        .await
        .expect("admitted");

    // One instance at once (C-STORE): checked against what the sender said, then indexed.
    let first = &held[0];
    let expected = Expected {
        sop_instance: Some(&first.sop_uid),
        sop_class: Some("1.2.840.10008.5.1.4.1.1.4"),
        ..Default::default()
    };
    let stored = core
        .ingest(&mut ticket, incoming(&core, &first.bytes).await, expected)
        .await
        .expect("stored");
    assert_eq!(stored.status, crate::status::code::SUCCESS);
    assert_eq!(stored.location.sop_instance_uid, first.sop_uid);
    assert_eq!(stored.location.study_instance_uid, first.study_uid);
    let file = core.stored().local_file(&stored.location);
    assert_eq!(
        std::fs::read(file.path()).unwrap(),
        first.bytes,
        "byte-exact"
    );

    // A SOP class other than the command's is stored with warning B007.
    let second = &held[1];
    let other_class = Expected {
        sop_class: Some("1.2.840.10008.5.1.4.1.1.2"),
        ..Default::default()
    };
    let warned = core
        .ingest(
            &mut ticket,
            incoming(&core, &second.bytes).await,
            other_class,
        )
        .await
        .expect("stored with a warning");
    assert_eq!(warned.status, crate::status::code::WARNING_DATASET_MISMATCH);

    // Not the instance the sender named, another study than the URL's, bytes that do not
    // parse, bytes given up on: failures that leave nothing behind.
    let third = &held[2];
    let wrong_sop = Expected {
        sop_instance: Some("1.2.3.4"),
        ..Default::default()
    };
    let failure = core
        .ingest(&mut ticket, incoming(&core, &third.bytes).await, wrong_sop)
        .await
        .unwrap_err();
    assert_eq!(failure.status, crate::status::code::CANNOT_UNDERSTAND);
    assert_eq!(
        failure.sop_instance, third.sop_uid,
        "named from the meta group"
    );
    let wrong_study = Expected {
        study_uid: Some("1.2.3.4"),
        ..Default::default()
    };
    let failure = core
        .ingest(
            &mut ticket,
            incoming(&core, &third.bytes).await,
            wrong_study,
        )
        .await
        .unwrap_err();
    assert_eq!(failure.status, crate::status::code::IDENTIFIER_MISMATCH);
    let half = &third.bytes[..third.bytes.len() / 2];
    let failure = core
        .ingest(
            &mut ticket,
            incoming(&core, half).await,
            Expected::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(failure.status, crate::status::code::CANNOT_UNDERSTAND);
    incoming(&core, &third.bytes).await.abort().await;
    drop(incoming(&core, &third.bytes).await);
    assert_eq!(temp_files(&h), 0, "nothing half-written stays");
    assert_eq!(
        h.index.count_instances(&study_of(&held)).await.unwrap(),
        2,
        "only what was acknowledged is indexed"
    );

    // Many at once (STOW-RS): durable first, then indexed in one batch.
    let durable = core
        .ingest_durable(incoming(&core, &third.bytes).await, Expected::default())
        .await
        .expect("durable");
    assert_eq!(durable.location().sop_instance_uid, third.sop_uid);
    assert_eq!(h.index.count_instances(&study_of(&held)).await.unwrap(), 2);
    core.index(&mut ticket, vec![durable])
        .await
        .expect("indexed");
    assert_eq!(h.index.count_instances(&study_of(&held)).await.unwrap(), 3);

    // The ticket learnt the patient and study of what was stored.
    ticket.finish("success", "3 stored").await;
    let records = h.audit_settled(1).await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].operation, "STOW-RS");
    assert_eq!(records[0].patient_ids, first.patient_id);
    assert_eq!(records[0].study_uids, first.study_uid);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stores_of_an_association_share_one_record() {
    let h = Harness::new().await;
    let held = mr_series(4, 2);
    let source = Arc::new(FakeSource::new(Vec::new()));
    let core = h.core(&source, &[Front::Web]);

    // Two stored, one failed: one record when the association ends.
    let mut stores = core.stores(&dimse_caller());
    for instance in &held {
        let ticket = stores.admit().expect("permitted");
        core.ingest(
            ticket,
            incoming(&core, &instance.bytes).await,
            Expected::default(),
        )
        .await
        .expect("stored");
        stores.stored();
    }
    stores.failed();
    assert_eq!(stores.stored_count(), 2);
    stores.finish().await;
    let records = h.audit_settled(1).await;
    assert_eq!(records.len(), 1, "{records:?}");
    let record = &records[0];
    assert_eq!(
        (record.operation.as_str(), record.outcome.as_str()),
        ("C-STORE", "partial")
    );
    assert_eq!(record.detail, "2 instances stored, 1 failed");
    assert_eq!(record.patient_ids, held[0].patient_id);
    assert_eq!(record.study_uids, held[0].study_uid);

    // An association that stored nothing, or was cut off before its first instance was in,
    // owes no record; one whose stores all failed owes a failure.
    core.stores(&dimse_caller()).finish().await;
    let mut cut_off = core.stores(&dimse_caller());
    cut_off.admit().expect("permitted");
    cut_off.finish().await;
    let mut refused = core.stores(&dimse_caller());
    refused.failed();
    refused.finish().await;
    let records = h.audit_settled(2).await;
    assert_eq!(records.len(), 2, "{records:?}");
    assert_eq!(records[1].outcome, "failure");
    assert_eq!(records[1].detail, "0 instances stored, 1 failed");
}
