//! Durability under `kill -9` (issue 16, item 4), against the real binary and real peers:
//! concurrent C-STORE (DCMTK storescu) and STOW-RS (multipart POSTs) keep re-sending the same
//! SOP instances with different bytes while the gateway is killed with SIGKILL at random
//! moments and restarted on the same data directory. After the last restart:
//!
//! - every acknowledged instance is indexed, and its file holds exactly the data set of the
//!   last acknowledged version (or of the one re-send in flight at a kill, which may have
//!   committed without its acknowledgement reaching the sender — never anything older);
//! - the index and the blobs agree: every row's file is there with the indexed size, and
//!   every blob file is named by a row (no orphans, once the start's sweep is done);
//! - nothing is left in `tmp/` and the deletion queue is empty;
//! - WADO-RS serves the indexed version's bytes.
//!
//! A node's start on a shared store leaves unindexed files younger than
//! `storage.orphan_grace_secs` (another node's ingest about to commit) and sweeps older ones.
//!
//! On SQLite with the filesystem, and on PostgreSQL. `SOAK_SECS` sets the
//! total time under load (default 40 s per backend); `benches/soak.sh` runs it longer.
//!
//! And the group commit of ingest (issue 16 section 5): instances of four concurrent
//! associations are all acknowledged, and a `kill -9` right after the last acknowledgement
//! loses none of them — nor does a power cut then (simulated: the blob files not yet
//! fsynced are lost or cut short, and in one test the index's transactions since the start
//! are lost too; they come back from the ingest journal).

mod common;

use beeldbrug::core::Selection;
use beeldbrug::store::Index;
use common::postgres::FreshDatabase;
use common::{free_port, require_tool};
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
const IMAGE_COMMENTS: Tag = Tag(0x0020, 0x4000);

/// `beeldbrug serve` as a child process on fixed ports (the same across restarts).
struct Served {
    child: Child,
}

struct Setup {
    data_dir: PathBuf,
    config: PathBuf,
    dimse_port: u16,
    http_port: u16,
}

impl Setup {
    fn new(dir: &Path, index_url: &str) -> Setup {
        let data_dir = dir.join("data");
        let (dimse_port, http_port) = (free_port(), free_port());
        let config = dir.join("beeldbrug.toml");
        std::fs::write(
            &config,
            format!(
                "[dimse]\nlisten = \"127.0.0.1:{dimse_port}\"\n\
                 [http]\nlisten = \"127.0.0.1:{http_port}\"\n\
                 [storage]\ndata_dir = \"{}\"\nindex = \"{index_url}\"\nmin_free_bytes = 0\norphan_grace_secs = 0\n",
                data_dir.display()
            ),
        )
        .unwrap();
        Setup {
            data_dir,
            config,
            dimse_port,
            http_port,
        }
    }

    /// The gateway's log (appended to across restarts).
    fn log(&self) -> Stdio {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_dir.with_file_name("gateway.log"))
            .map_or_else(|_| Stdio::null(), Stdio::from)
    }

    /// Start the gateway and wait for its serving line (its listeners are bound then).
    fn start(&self) -> Served {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut child = Command::new(env!("CARGO_BIN_EXE_beeldbrug"))
                .args(["serve", "--config"])
                .arg(&self.config)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::piped())
                .stderr(self.log())
                .spawn()
                .expect("run beeldbrug serve");
            let mut line = String::new();
            let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
            if line.contains("DIMSE on") {
                return Served { child };
            }
            // The port of the killed process may still be held for a moment.
            let _ = child.kill();
            let _ = child.wait();
            assert!(
                Instant::now() < deadline,
                "the gateway does not start again: {line:?}\n{}",
                std::fs::read_to_string(self.data_dir.with_file_name("gateway.log"))
                    .unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Served {
    fn kill9(mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// An instance the test keeps re-sending: its base file, the last version acknowledged, and
/// the version being sent now (acknowledged or not, it may be what the store holds).
#[derive(Debug, Clone)]
struct Tracked {
    base: PathBuf,
    study_uid: String,
    series_uid: String,
    acknowledged: Option<u32>,
    attempt: Option<u32>,
}

/// Version `v` of a base file: its Image Comments say so, with a length that differs per
/// version (so the indexed size tells versions apart too).
fn version_bytes(base: &Path, v: u32) -> Vec<u8> {
    let mut obj = dicom_object::open_file(base).expect("open base file");
    // Never a trailing space: LT padding is insignificant and a sender may drop it (DCMTK
    // storescu did, for every version that is a multiple of 97).
    let comment = format!("version {v} {}", "x".repeat(1 + (v % 97) as usize));
    obj.put(DataElement::new(
        IMAGE_COMMENTS,
        VR::LT,
        PrimitiveValue::from(comment),
    ));
    let mut out = Vec::new();
    obj.write_all(&mut out).expect("write version");
    out
}

/// The data set of a Part 10 file: what follows the file meta group.
fn data_set(bytes: &[u8]) -> &[u8] {
    // Preamble (128) + "DICM" + (0002,0000) UL: tag 4, VR 2, length 2, value 4.
    assert!(
        bytes.len() > 144 && &bytes[128..132] == b"DICM",
        "a Part 10 file"
    );
    let group_len = u32::from_le_bytes(bytes[140..144].try_into().unwrap()) as usize;
    &bytes[144 + group_len..]
}

type Shared = Arc<Mutex<BTreeMap<String, Tracked>>>;

/// Every instance of `files`, none acknowledged yet.
fn track(files: &[beeldbrug::testdata::GeneratedFile]) -> Shared {
    Arc::new(Mutex::new(
        files
            .iter()
            .map(|f| {
                let t = Tracked {
                    base: f.path.clone(),
                    study_uid: f.study_uid.clone(),
                    series_uid: f.series_uid.clone(),
                    acknowledged: None,
                    attempt: None,
                };
                (f.sop_uid.clone(), t)
            })
            .collect(),
    ))
}

/// Pick the next version of `sop` to send: the attempt again when it was not acknowledged,
/// else a new one.
fn next_version(tracked: &Shared, sop: &str, counter: &AtomicU64) -> (PathBuf, u32) {
    let mut all = tracked.lock().unwrap();
    let t = all.get_mut(sop).unwrap();
    let v = match (t.attempt, t.acknowledged) {
        (Some(a), ack) if ack != Some(a) => a,
        _ => counter.fetch_add(1, Ordering::Relaxed) as u32 + 1,
    };
    t.attempt = Some(v);
    (t.base.clone(), v)
}

fn acknowledge(tracked: &Shared, sop: &str, v: u32) {
    let mut all = tracked.lock().unwrap();
    let t = all.get_mut(sop).unwrap();
    if t.attempt == Some(v) {
        t.acknowledged = Some(v);
    }
}

/// C-STORE one version of each of `sops` with storescu (one association); the instances it
/// reports stored with success are acknowledged.
fn cstore_round(setup: &Setup, tracked: &Shared, sops: &[String], work: &Path, n: &AtomicU64) {
    let mut files = Vec::new();
    for sop in sops {
        let (base, v) = next_version(tracked, sop, n);
        let path = work.join(format!("{sop}.v{v}.dcm"));
        std::fs::write(&path, version_bytes(&base, v)).unwrap();
        files.push((sop.clone(), v, path));
    }
    let storescu = require_tool("storescu");
    let output = Command::new(storescu)
        .args([
            "-v",
            "-to",
            "10",
            "-ta",
            "10",
            "-td",
            "10",
            "-aec",
            "BEELDBRUG",
        ])
        .arg("127.0.0.1")
        .arg(setup.dimse_port.to_string())
        .args(files.iter().map(|f| &f.2))
        .env("TCP_NODELAY", "1")
        .output()
        .expect("run storescu");
    let log = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    // "Sending Store Request (MsgID 1, CT)" ... "Received Store Response (Success)", in order.
    let mut responses = log
        .lines()
        .filter(|l| l.contains("Received Store Response"))
        .map(|l| l.contains("(Success)"));
    for (sop, v, path) in files {
        if responses.next() == Some(true) {
            acknowledge(tracked, &sop, v);
        }
        let _ = std::fs::remove_file(path);
    }
}

/// STOW-RS one version of each of `sops` (one study per request); on 200 every part was
/// stored and all are acknowledged.
async fn stow_round(setup: &Setup, tracked: &Shared, sops: &[String], study: &str, n: &AtomicU64) {
    let mut parts = Vec::new();
    let mut sent = Vec::new();
    for sop in sops {
        let (base, v) = next_version(tracked, sop, n);
        parts.push(version_bytes(&base, v));
        sent.push((sop.clone(), v));
    }
    let boundary = "soak-boundary-7f3a";
    let refs: Vec<(&str, &[u8])> = parts
        .iter()
        .map(|p| ("application/dicom", p.as_slice()))
        .collect();
    let body = common::http::multipart(boundary, &refs);
    let content_type =
        format!("multipart/related; type=\"application/dicom\"; boundary={boundary}");
    let path = format!("/dicomweb/studies/{study}");
    let port = setup.http_port;
    let answer = tokio::time::timeout(Duration::from_secs(20), async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
             Content-Type: {content_type}\r\nAccept: application/dicom+json\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.ok()?;
        stream.write_all(&body).await.ok()?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.ok()?;
        let text = String::from_utf8_lossy(&raw[..raw.len().min(64)]).into_owned();
        text.split(' ').nth(1).and_then(|s| s.parse::<u16>().ok())
    })
    .await
    .ok()
    .flatten();
    if answer == Some(200) {
        for (sop, v) in sent {
            acknowledge(tracked, &sop, v);
        }
    }
}

/// Files under `dir`, as keys relative to it.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if let Ok(rel) = p.strip_prefix(dir) {
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

/// Blob files no row names (the start's sweep removes them in the background).
async fn orphans(index: &dyn Index, data_dir: &Path) -> Vec<String> {
    let files = files_under(&data_dir.join("blobs"));
    let named = index.blob_keys_in_use(&files).await.unwrap();
    files.into_iter().filter(|f| !named.contains(f)).collect()
}

/// The checks of every restart: each acknowledged instance is indexed, its file holds the
/// acknowledged version (or the one in flight) with the indexed size, and (with `wado`)
/// WADO-RS serves it. Returns how many instances were acknowledged.
async fn check_instances(
    index: &dyn Index,
    setup: &Setup,
    all: &BTreeMap<String, Tracked>,
    wado: bool,
) -> usize {
    let mut acknowledged = 0;
    for (sop, t) in all {
        let located = index
            .locate(&Selection {
                sop_instance_uids: vec![sop.clone()],
                ..Default::default()
            })
            .await
            .unwrap();
        let Some(ack) = t.acknowledged else {
            // Never acknowledged: it may be there (a lost answer) or not, but whole.
            if let Some(loc) = located.first() {
                let bytes = std::fs::read(setup.data_dir.join("blobs").join(&loc.blob_key))
                    .unwrap_or_else(|e| panic!("{sop}: indexed file missing: {e}"));
                assert_eq!(bytes.len() as u64, loc.size_bytes, "{sop}: size");
            }
            continue;
        };
        acknowledged += 1;
        assert_eq!(located.len(), 1, "acknowledged instance {sop} is indexed");
        let loc = &located[0];
        assert_eq!(
            (&loc.study_instance_uid, &loc.series_instance_uid),
            (&t.study_uid, &t.series_uid)
        );
        let stored = std::fs::read(setup.data_dir.join("blobs").join(&loc.blob_key))
            .unwrap_or_else(|e| panic!("{sop}: the acknowledged instance's file: {e}"));
        assert_eq!(stored.len() as u64, loc.size_bytes, "{sop}: indexed size");
        let mut candidates = vec![ack];
        candidates.extend(t.attempt.filter(|a| *a != ack));
        let matches = candidates
            .iter()
            .find(|v| data_set(&version_bytes(&t.base, **v)) == data_set(&stored));
        assert!(
            matches.is_some(),
            "{sop}: the stored data set is neither the acknowledged version {ack} nor the \
             one in flight {:?}",
            t.attempt
        );
        if !wado {
            continue;
        }
        // WADO-RS serves the indexed file.
        let path = format!(
            "/dicomweb/studies/{}/series/{}/instances/{sop}",
            t.study_uid, t.series_uid
        );
        let got = common::http::get(setup.http_port, &path, "application/dicom").await;
        assert_eq!(got.status, 200, "{sop}: WADO-RS {}", got.text());
        assert_eq!(
            data_set(&got.body),
            data_set(&stored),
            "{sop}: WADO-RS bytes"
        );
    }
    acknowledged
}

async fn soak(index_url: &str) {
    require_tool("storescu");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let files: Vec<_> = common::generate(&src, false)
        .into_iter()
        .filter(|f| f.transfer_syntax == EXPLICIT_LE)
        .collect();
    assert!(files.len() >= 8, "generated {} files", files.len());
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let setup = Arc::new(Setup::new(dir.path(), index_url));
    let tracked = track(&files);
    // Each instance has one sender at a time (so "the last acknowledged" is well defined):
    // the instances of the first study go by C-STORE, the others by STOW-RS, in two halves
    // each with a worker of its own.
    let first_study = files[0].study_uid.clone();
    let (by_cstore, by_stow): (Vec<_>, Vec<_>) =
        files.iter().partition(|f| f.study_uid == first_study);
    let halves = |list: &[&beeldbrug::testdata::GeneratedFile]| -> Vec<Vec<(String, String)>> {
        let pairs: Vec<(String, String)> = list
            .iter()
            .map(|f| (f.sop_uid.clone(), f.study_uid.clone()))
            .collect();
        let mid = pairs.len() / 2;
        vec![pairs[..mid].to_vec(), pairs[mid..].to_vec()]
    };
    let cstore_groups = halves(&by_cstore);
    let stow_groups = halves(&by_stow);

    let soak_secs: u64 = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let versions = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut kills = 0;
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15 ^ u64::from(std::process::id());
    let mut random = move |below: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % below
    };
    while started.elapsed() < Duration::from_secs(soak_secs) {
        let served = setup.start();
        // Before the load resumes: what the last kill left is consistent (a later re-send
        // would otherwise heal a broken instance before the final check sees it).
        let index = beeldbrug::store::open_index(index_url).await.unwrap();
        let snapshot = tracked.lock().unwrap().clone();
        check_instances(index.as_ref(), &setup, &snapshot, false).await;
        drop(index);
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = tokio::task::JoinSet::new();
        for group in cstore_groups.iter().filter(|g| !g.is_empty()) {
            let (setup, tracked, stop, n, work) = (
                setup.clone(),
                tracked.clone(),
                stop.clone(),
                versions.clone(),
                work.clone(),
            );
            let sops: Vec<String> = group.iter().map(|(s, _)| s.clone()).collect();
            workers.spawn_blocking(move || {
                while !stop.load(Ordering::Relaxed) {
                    cstore_round(&setup, &tracked, &sops, &work, &n);
                }
            });
        }
        for group in stow_groups.iter().filter(|g| !g.is_empty()) {
            let (setup, tracked, stop, n) = (
                setup.clone(),
                tracked.clone(),
                stop.clone(),
                versions.clone(),
            );
            // STOW-RS parts of one request are of one study.
            let mut by_study: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (sop, study) in group {
                by_study.entry(study.clone()).or_default().push(sop.clone());
            }
            workers.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    for (study, sops) in &by_study {
                        stow_round(&setup, &tracked, sops, study, &n).await;
                    }
                }
            });
        }
        // Kill at a random moment of the load.
        tokio::time::sleep(Duration::from_millis(300 + random(2500))).await;
        served.kill9();
        kills += 1;
        stop.store(true, Ordering::Relaxed);
        while workers.join_next().await.is_some() {}
    }

    // The last start: recovery, then the checks.
    let served = setup.start();
    let index = beeldbrug::store::open_index(index_url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut left = orphans(index.as_ref(), &setup.data_dir).await;
    while !left.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        left = orphans(index.as_ref(), &setup.data_dir).await;
    }
    assert!(
        left.is_empty(),
        "orphaned blob files after recovery: {left:?}"
    );
    assert!(
        files_under(&setup.data_dir.join("tmp")).is_empty(),
        "temp files left"
    );
    assert!(
        index.queued_blob_deletions(10).await.unwrap().is_empty(),
        "deletions left queued"
    );

    let all = tracked.lock().unwrap().clone();
    let acknowledged = check_instances(index.as_ref(), &setup, &all, true).await;
    // Every indexed instance's file is there with its size (the test's and others').
    let everything = index
        .locate(&Selection {
            study_uids: all.values().map(|t| t.study_uid.clone()).collect(),
            ..Default::default()
        })
        .await
        .unwrap();
    for loc in &everything {
        let meta = std::fs::metadata(setup.data_dir.join("blobs").join(&loc.blob_key))
            .unwrap_or_else(|e| panic!("{}: indexed file: {e}", loc.sop_instance_uid));
        assert_eq!(meta.len(), loc.size_bytes);
    }
    served.stop();
    eprintln!(
        "soak: {kills} kills, {} versions sent, {acknowledged} of {} instances acknowledged, {} s",
        versions.load(Ordering::Relaxed),
        all.len(),
        started.elapsed().as_secs()
    );
    assert!(kills >= 3, "only {kills} kills");
    assert!(acknowledged > 0, "nothing was acknowledged");
}

#[tokio::test(flavor = "multi_thread")]
async fn kill9_soak_sqlite_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("index.db").display());
    soak(&url).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill9_soak_postgres() {
    let db = FreshDatabase::create().await;
    soak(&db.url).await;
    db.drop_db().await;
}

/// Several nodes share one blob store: a node's start must not sweep a file another node has
/// just written and not yet indexed. The start's orphan sweep takes only files older than
/// `storage.orphan_grace_secs` before the start; a younger one stays, an older one goes.
#[tokio::test(flavor = "multi_thread")]
async fn the_start_sweep_leaves_files_younger_than_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let blobs = data_dir.join("blobs").join("1.2.3").join("1.2.3.4");
    std::fs::create_dir_all(&blobs).unwrap();
    // Neither is named by an index row: one another node renamed into place a moment ago
    // (its row about to commit), one a crash left ten minutes ago.
    let young = blobs.join("1.2.3.4.5.a-1-0.dcm");
    let old = blobs.join("1.2.3.4.6.a-1-0.dcm");
    std::fs::write(&young, b"written by another node, row not committed yet").unwrap();
    std::fs::write(&old, b"left by a crash").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(600))
        .unwrap();

    let gw = common::Gateway::start_in(&data_dir, "[storage]\norphan_grace_secs = 120\n").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while old.exists() {
        assert!(Instant::now() < deadline, "the old orphan was not swept");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        young.exists(),
        "a file younger than the grace is not an orphan yet"
    );
    gw.stop().await;

    // With no grace (a store of one node), the same file is an orphan at the next start.
    let gw = common::Gateway::start_in(&data_dir, "[storage]\norphan_grace_secs = 0\n").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while young.exists() {
        assert!(
            Instant::now() < deadline,
            "the orphan was not swept without a grace"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gw.stop().await;
}

/// Four storescu associations at once (the C-STOREs of one group commit come from several
/// associations): every instance is acknowledged with success; the gateway is killed with
/// SIGKILL as soon as the last association has its answers, and after the restart every
/// instance is indexed under its study and series, its file holds the data set sent, WADO-RS
/// serves it, and no orphan or temp file is left.
/// With a power cut, what it may leave right after the last acknowledgement is made on top
/// of the kill ([`lose_blob_files`], and with [`Cut::PowerLossIndexTail`] the index's
/// transactions since the start too, [`IndexSnapshot`]): the acknowledged instances must
/// then come back from the ingest journal (`store::journal`).
async fn concurrent_associations_durable(index_url: &str, cut: Cut) {
    require_tool("storescu");
    let dir = tempfile::tempdir().unwrap();
    let args = beeldbrug::testdata::GenerateArgs {
        ct_slices: 24,
        mr_slices: 8,
        patients: 2,
        frame_size: 64,
        implicit: false,
        ..beeldbrug::testdata::GenerateArgs::with_defaults(dir.path().join("src"))
    };
    let files: Vec<_> = beeldbrug::testdata::generate(&args)
        .unwrap()
        .into_iter()
        .filter(|f| f.transfer_syntax == EXPLICIT_LE)
        .collect();
    assert!(files.len() >= 40, "generated {} files", files.len());
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let setup = Arc::new(Setup::new(dir.path(), index_url));
    let tracked = track(&files);
    let snapshot = if cut == Cut::PowerLossIndexTail {
        // The index as the first start leaves it, flushed.
        setup.start().stop();
        Some(IndexSnapshot::take(index_url).await)
    } else {
        None
    };
    let served = setup.start();
    let versions = Arc::new(AtomicU64::new(0));
    // Dealt out in turn: each association stores into every series.
    let associations = 4;
    let mut senders = Vec::new();
    for a in 0..associations {
        let sops: Vec<String> = files
            .iter()
            .skip(a)
            .step_by(associations)
            .map(|f| f.sop_uid.clone())
            .collect();
        let (setup, tracked, versions, work) = (
            setup.clone(),
            tracked.clone(),
            versions.clone(),
            work.clone(),
        );
        senders.push(std::thread::spawn(move || {
            cstore_round(&setup, &tracked, &sops, &work, &versions)
        }));
    }
    for s in senders {
        s.join().unwrap();
    }
    served.kill9();
    let all = tracked.lock().unwrap().clone();
    let unacknowledged: Vec<&String> = all
        .iter()
        .filter(|(_, t)| t.acknowledged.is_none())
        .map(|(sop, _)| sop)
        .collect();
    assert!(
        unacknowledged.is_empty(),
        "not acknowledged: {unacknowledged:?}\n{}",
        std::fs::read_to_string(setup.data_dir.with_file_name("gateway.log")).unwrap_or_default()
    );

    if cut != Cut::Kill {
        lose_blob_files(&setup.data_dir);
    }
    if let Some(snapshot) = snapshot {
        snapshot.restore().await;
    }

    let served = setup.start();
    let index = beeldbrug::store::open_index(index_url).await.unwrap();
    let acknowledged = check_instances(index.as_ref(), &setup, &all, true).await;
    assert_eq!(acknowledged, files.len());
    assert!(
        orphans(index.as_ref(), &setup.data_dir).await.is_empty(),
        "orphaned blob files"
    );
    assert!(
        files_under(&setup.data_dir.join("tmp")).is_empty(),
        "temp files left"
    );
    served.stop();
}

/// How the gateway goes down right after the last acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// SIGKILL.
    Kill,
    /// SIGKILL, then what a power cut may do to the blob files not yet fsynced.
    PowerLoss,
    /// That, and the index loses every transaction since the start: the ingest's index
    /// commits do not wait for the database's flush (SQLite `synchronous=NORMAL`,
    /// PostgreSQL `synchronous_commit = off`), the journal's records stand in for them. More than a power cut could take (the start's own flushed
    /// writes, audit records written with a flush since), so every acknowledged instance
    /// must be indexed again from the journal.
    PowerLossIndexTail,
}

/// A copy of the index taken while no gateway runs: SQLite's files, or a PostgreSQL
/// database copied as a template.
enum IndexSnapshot {
    Sqlite(Vec<(PathBuf, Option<Vec<u8>>)>),
    Postgres { admin_url: String, name: String },
}

impl IndexSnapshot {
    async fn take(index_url: &str) -> IndexSnapshot {
        if let Some(db) = index_url.strip_prefix("sqlite://") {
            let files = ["", "-wal", "-shm"]
                .iter()
                .map(|suffix| {
                    let path = PathBuf::from(format!("{db}{suffix}"));
                    let bytes = std::fs::read(&path).ok();
                    (path, bytes)
                })
                .collect();
            return IndexSnapshot::Sqlite(files);
        }
        let admin_url = common::postgres::postgres_url();
        let name = index_url
            .rsplit('/')
            .next()
            .unwrap()
            .split('?')
            .next()
            .unwrap()
            .to_string();
        // The stopped gateway's sessions may take a moment to end.
        pg_admin(
            &admin_url,
            &[format!("CREATE DATABASE {name}_snap TEMPLATE {name}")],
        )
        .await;
        IndexSnapshot::Postgres { admin_url, name }
    }

    /// Put the index back as it was.
    async fn restore(self) {
        match self {
            IndexSnapshot::Sqlite(files) => {
                for (path, bytes) in files {
                    match bytes {
                        Some(bytes) => std::fs::write(&path, bytes).unwrap(),
                        None => {
                            let _ = std::fs::remove_file(&path);
                        }
                    }
                }
            }
            IndexSnapshot::Postgres { admin_url, name } => {
                pg_admin(
                    &admin_url,
                    &[
                        format!("DROP DATABASE {name} WITH (FORCE)"),
                        format!("CREATE DATABASE {name} TEMPLATE {name}_snap"),
                        format!("DROP DATABASE {name}_snap"),
                    ],
                )
                .await;
            }
        }
    }
}

/// Run `statements` on the PostgreSQL server, each retried for a while (a database in use
/// as a template cannot be copied until its last session has ended).
async fn pg_admin(admin_url: &str, statements: &[String]) {
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(admin_url).await.unwrap();
    for statement in statements {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match sqlx::query(statement).execute(&mut admin).await {
                Ok(_) => break,
                Err(e) => {
                    assert!(Instant::now() < deadline, "{statement}: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
    let _ = admin.close().await;
}

/// What a power cut may do to blob files that were acknowledged but not yet fsynced (their
/// bytes durable only in the ingest journal, `store::journal`): every blob file of the run
/// is lost (removed), cut short (truncated to half) or lost with its series directory, in
/// turn. The index commits are durable (fsynced before the answers) and stay. The run's
/// instances (under 1 MB in all) fit in the journal, so every one of them must come back.
fn lose_blob_files(data_dir: &Path) {
    let blobs = data_dir.join("blobs");
    let files = files_under(&blobs);
    assert!(!files.is_empty());
    for (i, key) in files.iter().enumerate() {
        let path = blobs.join(key);
        // (A file may be gone already with its directory.)
        match i % 3 {
            0 => {
                let _ = std::fs::remove_file(&path);
            }
            1 => {
                if let Ok(file) = std::fs::OpenOptions::new().write(true).open(&path) {
                    let len = file.metadata().unwrap().len();
                    file.set_len(len / 2).unwrap();
                }
            }
            _ => {
                let _ = std::fs::remove_dir_all(path.parent().unwrap());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_associations_durable_sqlite_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("index.db").display());
    concurrent_associations_durable(&url, Cut::Kill).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_associations_durable_postgres() {
    let db = FreshDatabase::create().await;
    concurrent_associations_durable(&db.url, Cut::Kill).await;
    db.drop_db().await;
}

/// The acknowledged instances survive a power cut right after the answers, not only a kill:
/// their files come back from the ingest journal at the next start.
#[tokio::test(flavor = "multi_thread")]
async fn power_loss_after_acknowledgement_sqlite_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("index.db").display());
    concurrent_associations_durable(&url, Cut::PowerLoss).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn power_loss_after_acknowledgement_postgres() {
    let db = FreshDatabase::create().await;
    concurrent_associations_durable(&db.url, Cut::PowerLoss).await;
    db.drop_db().await;
}

/// The ingest's index commits do not wait for their flush (the journal stands in for it):
/// a power cut right after the answers may take them with the blob files. Every
/// acknowledged instance is indexed again from the ingest journal at the next start,
/// byte-identical, served by WADO-RS, with no orphan left.
#[tokio::test(flavor = "multi_thread")]
async fn power_loss_of_index_commits_after_acknowledgement_sqlite_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("index.db").display());
    concurrent_associations_durable(&url, Cut::PowerLossIndexTail).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn power_loss_of_index_commits_after_acknowledgement_postgres() {
    let db = FreshDatabase::create().await;
    concurrent_associations_durable(&db.url, Cut::PowerLossIndexTail).await;
    db.drop_db().await;
}
