//! Recovery (issue 12, items 5–7) on a real, size-limited filesystem (tmpfs), with DCMTK and
//! curl as the peers:
//!
//! - a full disk during ingest, then space freed: every later operation succeeds without a
//!   restart (SQLite index and blobs on the small filesystem; PostgreSQL index with an
//!   index-side failure in the middle of transactions and the blobs on the small filesystem);
//! - an audit trail that cannot be written closes the gateway (DIMSE refused, HTTP 503,
//!   `/ready` failing with the count) until it can be written again;
//! - `/ready` names each failing check (disk floor, read-only data directory), and a start on
//!   an existing read-only data directory fails with the path named.

mod common;

use beeldbrug::core::{Level, Query};
use common::postgres::{FreshDatabase, PrivatePostgres};
use common::smallfs::SmallFs;
use common::{dcmtk, Gateway};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const MIB: u64 = 1024 * 1024;

/// These tests fill, remount and free small filesystems and time their recovery: run alone,
/// one at a time, so that no other test's processes or writes touch their disks meanwhile.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `curl` a URL on the gateway: status and body.
fn curl(port: u16, path: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-m", "20", "-w", "\n%{http_code}"])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect("run curl (apt-get install -y curl)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// Wait until `/ready` answers 200 (at most `within`); the last answer otherwise.
async fn becomes_ready(port: u16, within: Duration) -> Result<(), String> {
    let start = Instant::now();
    loop {
        let (status, body) = curl(port, "/ready");
        if status == 200 {
            return Ok(());
        }
        if start.elapsed() > within {
            return Err(format!("{status} {body}"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What storescu said about each file it sent: `(file, status text)`.
struct StoreRun {
    responses: Vec<(PathBuf, String)>,
    log: String,
}

impl StoreRun {
    fn succeeded(&self) -> Vec<&Path> {
        self.responses
            .iter()
            .filter(|(_, s)| s == "Success")
            .map(|(p, _)| p.as_path())
            .collect()
    }

    fn all_succeeded(&self, files: usize) -> bool {
        self.responses.len() == files && self.succeeded().len() == files
    }
}

/// Parse `storescu -v`: each "Sending file" and the "Received Store Response (...)" after it.
fn parse_storescu(log: &str) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut sending: Option<PathBuf> = None;
    for line in log.lines() {
        if let Some(file) = line.split("Sending file: ").nth(1) {
            sending = Some(PathBuf::from(file.trim()));
        } else if let Some(rest) = line.split("Received Store Response (").nth(1) {
            if let Some(file) = sending.take() {
                out.push((file, rest.trim_end_matches(')').trim().to_string()));
            }
        }
    }
    out
}

fn storescu(port: u16, files: &[PathBuf]) -> StoreRun {
    let port = port.to_string();
    let mut args = vec!["-v", "-aec", "BEELDBRUG", "127.0.0.1", &port];
    let paths: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    args.extend(paths.iter().map(String::as_str));
    let out = dcmtk("storescu", &args);
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    StoreRun {
        responses: parse_storescu(&log),
        log,
    }
}

fn echoscu(port: u16) -> bool {
    dcmtk(
        "echoscu",
        &["-aec", "BEELDBRUG", "127.0.0.1", &port.to_string()],
    )
    .status
    .success()
}

/// The instances the index holds.
async fn indexed(gw: &Gateway) -> usize {
    gw.context()
        .index
        .find(&Query::new(Level::Image))
        .await
        .expect("index query")
        .len()
}

async fn assert_chain_verifies(gw: &Gateway) {
    let verification = gw.context().trust.audit.verify().await.expect("verify");
    assert!(
        verification.ok && verification.broken.is_none(),
        "audit chain: {verification:?}"
    );
    assert!(verification.records > 0);
}

/// Every operation a client can ask, several times over (more than the index's pool has
/// connections): each must succeed.
async fn everything_succeeds(gw: &Gateway, files: &[PathBuf]) {
    let run = storescu(gw.port, files);
    assert!(
        run.all_succeeded(files.len()),
        "after space was freed, every C-STORE must succeed:\n{}",
        run.log
    );
    for round in 0..10 {
        assert!(echoscu(gw.port), "C-ECHO {round} after recovery failed");
        let (status, body) = curl(gw.http_port, "/dicomweb/studies");
        assert_eq!(status, 200, "QIDO-RS {round} after recovery: {body}");
        let findscu = dcmtk(
            "findscu",
            &[
                "-S",
                "-aec",
                "BEELDBRUG",
                "-k",
                "QueryRetrieveLevel=STUDY",
                "-k",
                "StudyInstanceUID",
                "127.0.0.1",
                &gw.port.to_string(),
            ],
        );
        assert!(
            findscu.status.success(),
            "C-FIND {round} after recovery: {}",
            String::from_utf8_lossy(&findscu.stderr)
        );
    }
}

/// Two small data sets with different UIDs: 4 and 12 files, 1.3 and 3 MiB (512×512 CT,
/// 256×256 MR slices).
fn two_data_sets(dir: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let set = |name: &str, seed: u64, patients: u32, mr_slices: u32| {
        let args = beeldbrug::testdata::GenerateArgs {
            out: dir.join(name),
            seed,
            patients,
            ct_slices: 2,
            mr_slices,
            dx: false,
            multiframe_frames: 0,
            frame_size: 64,
            encapsulated: false,
            implicit: false,
        };
        let files = beeldbrug::testdata::generate(&args).expect("generate");
        files.into_iter().map(|f| f.path).collect::<Vec<_>>()
    };
    (set("a", 7, 1, 2), set("b", 11, 2, 4))
}

/// One instance record for the index alone (`n` makes the UIDs; a long description makes
/// each row take room, so that a few fill a page).
fn instance(n: usize) -> beeldbrug::store::InstanceRecord {
    use beeldbrug::core::query::indexed_attr_by_keyword;
    let mut r = beeldbrug::store::InstanceRecord {
        transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
        ..Default::default()
    };
    let study = format!("1.2.826.0.1.3680043.10.1.{}", n / 50);
    let series = format!("{study}.{}", n / 10);
    let sop = format!("{series}.{n}");
    for (keyword, value) in [
        ("PatientID", format!("P{}", n / 50)),
        ("PatientName", format!("Test^Patient{}", n / 50)),
        ("StudyInstanceUID", study.clone()),
        ("StudyDescription", "x".repeat(2000)),
        ("SeriesInstanceUID", series.clone()),
        ("Modality", "CT".to_string()),
        ("SOPInstanceUID", sop.clone()),
        ("SOPClassUID", "1.2.840.10008.5.1.4.1.1.2".to_string()),
    ] {
        let attr = indexed_attr_by_keyword(keyword).unwrap_or_else(|| panic!("{keyword}"));
        r.values.insert(attr.tag, value);
    }
    r.blob_key = format!("{study}/{series}/{sop}.dcm");
    r.size_bytes = 1000;
    r
}

fn audit_record(n: usize) -> beeldbrug::store::index::AuditRecord {
    beeldbrug::store::index::AuditRecord {
        time: "2026-01-01T00:00:00Z".into(),
        operation: "C-STORE".into(),
        outcome: "success".into(),
        detail: format!("record {n} {}", "y".repeat(2000)),
        gateway: "TEST".into(),
        ..Default::default()
    }
}

/// Item 5 at the index alone: a SQLite index on a small filesystem that fills up. Writes fail
/// while it is full (SQLite rolls back their transactions itself, at the COMMIT); once space
/// is freed, every write on every connection of the pool succeeds (before the fix, the
/// connections whose failed COMMIT left sqlx's transaction depth at 1 answered "attempted
/// to call begin_with at non-zero transaction depth" for good).
#[tokio::test(flavor = "multi_thread")]
async fn sqlite_index_writes_recover_after_the_disk_was_full() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    use beeldbrug::store::index::SqliteIndex;
    use beeldbrug::store::Index;
    // Room enough that the writes after the filler is gone do not fill it again (the WAL
    // grows with them).
    let fs = SmallFs::mount(16 * MIB);
    let url = format!("sqlite://{}", fs.path().join("index.db").display());
    let index = std::sync::Arc::new(SqliteIndex::open(&url).await.expect("open"));
    for n in 0..20 {
        index.upsert_instance(&instance(n)).await.expect("upsert");
    }
    let filler = fs.fill();
    let mut failures = 0;
    for round in 0..6 {
        let writes = (0..8).map(|i| {
            let index = index.clone();
            let n = 1000 + round * 8 + i;
            async move {
                let a = index.upsert_instance(&instance(n)).await.is_err();
                let b = index.append_audit(&audit_record(n), None).await.is_err();
                usize::from(a) + usize::from(b)
            }
        });
        failures += futures::future::join_all(writes)
            .await
            .into_iter()
            .sum::<usize>();
    }
    assert!(failures > 0, "writes on a full disk must fail");

    std::fs::remove_file(&filler).expect("free space");
    let mut errors = Vec::new();
    for round in 0..6 {
        let writes = (0..8).map(|i| {
            let index = index.clone();
            let n = 2000 + round * 8 + i;
            async move {
                let mut errors = Vec::new();
                if let Err(e) = index.upsert_instance(&instance(n)).await {
                    errors.push(format!("upsert: {e}"));
                }
                if let Err(e) = index.append_audit(&audit_record(n), None).await {
                    errors.push(format!("audit: {e}"));
                }
                if let Err(e) = index.probe_write().await {
                    errors.push(format!("probe: {e}"));
                }
                errors
            }
        });
        errors.extend(
            futures::future::join_all(writes)
                .await
                .into_iter()
                .flatten(),
        );
    }
    assert!(
        errors.is_empty(),
        "after space was freed every write must succeed; {} failed: {:#?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    let verification = beeldbrug::trust::audit::chain::verify(index.as_ref())
        .await
        .expect("verify");
    assert!(verification.ok, "{verification:?}");
    index.close().await;
}

/// Item 5, SQLite: the index and the blobs on a 32 MiB filesystem that fills up while
/// storescu sends; with space freed, everything works again without a restart (before the
/// fix, connections handed back after a failed COMMIT answered "attempted to call begin_with
/// at non-zero transaction depth" until restart).
#[tokio::test(flavor = "multi_thread")]
async fn sqlite_gateway_recovers_after_the_disk_was_full() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let fs = SmallFs::mount(32 * MIB);
    let src = tempfile::tempdir().unwrap();
    let (first, second) = two_data_sets(src.path());
    let gw = Gateway::start_in(
        &fs.path().join("data"),
        "[storage]\nmin_free_bytes = 65536\n",
    )
    .await;
    becomes_ready(gw.http_port, Duration::from_secs(5))
        .await
        .expect("ready at start");
    let run = storescu(gw.port, &first);
    assert!(run.all_succeeded(first.len()), "{}", run.log);

    // The disk fills up: stores fail, and so do the index and audit writes behind them.
    let filler = fs.fill();
    let run = storescu(gw.port, &second);
    assert!(
        run.succeeded().len() < second.len(),
        "with the disk full some C-STORE must fail:\n{}",
        run.log
    );
    for _ in 0..4 {
        let _ = echoscu(gw.port);
        let _ = curl(gw.http_port, "/dicomweb/studies");
    }
    let (status, body) = curl(gw.http_port, "/ready");
    assert_eq!(status, 503, "not ready with the disk full: {body}");
    // Let the audit trail's recovery probe try (and fail) a few times on the full disk.
    tokio::time::sleep(Duration::from_secs(3)).await;

    std::fs::remove_file(&filler).expect("free space");
    becomes_ready(gw.http_port, Duration::from_secs(15))
        .await
        .expect("ready again once space is free, without a restart");
    everything_succeeds(&gw, &second).await;
    everything_succeeds(&gw, &first).await;
    assert_eq!(indexed(&gw).await, first.len() + second.len());
    assert_chain_verifies(&gw).await;
    gw.stop().await;
}

/// Item 5, PostgreSQL: the blobs on a small filesystem that fills up, and index writes that
/// fail in the middle of their transactions (a trigger raising `disk_full`, SQLSTATE 53100,
/// on the instance, audit and readiness rows); once both are fixed, everything works again
/// without a restart, on every connection of the pool.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_gateway_recovers_after_failed_transactions() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let db = FreshDatabase::create().await;
    let fs = SmallFs::mount(32 * MIB);
    let src = tempfile::tempdir().unwrap();
    let (first, second) = two_data_sets(src.path());
    let gw = Gateway::start_in(
        &fs.path().join("data"),
        &format!(
            "[storage]\nindex = \"{}\"\nmin_free_bytes = 65536\n",
            db.url
        ),
    )
    .await;
    let admin = sqlx::PgPool::connect(&db.url).await.expect("connect");
    for statement in [
        "CREATE TABLE test_fault (failing BOOLEAN NOT NULL)",
        "INSERT INTO test_fault VALUES (false)",
        "CREATE FUNCTION test_fail() RETURNS trigger AS $$ BEGIN \
           IF (SELECT failing FROM test_fault) THEN \
             RAISE EXCEPTION 'could not extend file (test)' USING ERRCODE = 'disk_full'; \
           END IF; RETURN NEW; END $$ LANGUAGE plpgsql",
        "CREATE TRIGGER fail_instance BEFORE INSERT ON instance \
           FOR EACH ROW EXECUTE FUNCTION test_fail()",
        "CREATE TRIGGER fail_audit BEFORE INSERT ON audit_record \
           FOR EACH ROW EXECUTE FUNCTION test_fail()",
        "CREATE TRIGGER fail_probe BEFORE INSERT ON readiness_probe \
           FOR EACH ROW EXECUTE FUNCTION test_fail()",
    ] {
        sqlx::query(statement)
            .execute(&admin)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    let result = async {
        let run = storescu(gw.port, &first[..2]);
        assert!(run.all_succeeded(2), "{}", run.log);

        sqlx::query("UPDATE test_fault SET failing = true")
            .execute(&admin)
            .await
            .unwrap();
        let run = storescu(gw.port, &first[2..]);
        assert!(
            run.succeeded().len() < first.len() - 2,
            "with index writes failing some C-STORE must fail:\n{}",
            run.log
        );
        let filler = fs.fill();
        let run = storescu(gw.port, &second);
        assert!(run.succeeded().len() < second.len(), "{}", run.log);
        for _ in 0..10 {
            let _ = echoscu(gw.port);
            let _ = curl(gw.http_port, "/dicomweb/studies");
        }
        let (status, body) = curl(gw.http_port, "/ready");
        assert_eq!(status, 503, "{body}");
        tokio::time::sleep(Duration::from_secs(3)).await;

        sqlx::query("UPDATE test_fault SET failing = false")
            .execute(&admin)
            .await
            .unwrap();
        std::fs::remove_file(&filler).expect("free space");
        becomes_ready(gw.http_port, Duration::from_secs(15))
            .await
            .expect("ready again without a restart");
        everything_succeeds(&gw, &second).await;
        everything_succeeds(&gw, &first).await;
        assert_eq!(indexed(&gw).await, first.len() + second.len());
        assert_chain_verifies(&gw).await;
    };
    let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(result)).await;
    gw.stop().await;
    admin.close().await;
    db.drop_db().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Issue 16, item 4: PostgreSQL restarted while the gateway runs (a private server of this
/// test's own, stopped with `pg_ctl -m fast`, which ends the gateway's sessions as a restart or
/// failover does). Meanwhile `/ready` is 503 naming `index`, `/health` stays 200, QIDO-RS gets
/// an error status (no hang, no empty success), C-STORE is not acknowledged and the process
/// keeps running; once the server is back on the same address the gateway reconnects by
/// itself: ready again, every operation succeeds, nothing stored before is lost and the audit
/// chain verifies.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_restart_during_operation() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let pg = PrivatePostgres::start();
    let src = tempfile::tempdir().unwrap();
    let (first, second) = two_data_sets(src.path());
    let gw = Gateway::start(&format!("[storage]\nindex = \"{}\"\n", pg.url())).await;
    let result = async {
        let run = storescu(gw.port, &first);
        assert!(run.all_succeeded(first.len()), "{}", run.log);
        becomes_ready(gw.http_port, Duration::from_secs(10))
            .await
            .expect("ready with PostgreSQL up");

        pg.stop_server();
        let (status, body) = curl(gw.http_port, "/ready");
        assert_eq!(status, 503, "/ready with PostgreSQL down: {body}");
        let ready: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert!(
            ready["failing"]
                .as_array()
                .is_some_and(|f| f.iter().any(|c| c == "index")),
            "{body}"
        );
        assert_eq!(curl(gw.http_port, "/health").0, 200);
        for round in 0..3 {
            let started = Instant::now();
            let (status, body) = curl(gw.http_port, "/dicomweb/studies");
            assert_eq!(
                status, 503,
                "QIDO-RS {round} with PostgreSQL down: {status} {body}"
            );
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "QIDO-RS {round} took {:?}",
                started.elapsed()
            );
        }
        let run = storescu(gw.port, &second[..2]);
        assert!(
            run.succeeded().is_empty(),
            "no C-STORE may be acknowledged without the index:\n{}",
            run.log
        );
        let (status, _) = curl(gw.http_port, "/ready");
        assert_eq!(status, 503);

        pg.start_server();
        becomes_ready(gw.http_port, Duration::from_secs(30))
            .await
            .expect("ready again once PostgreSQL is back, without a restart");
        everything_succeeds(&gw, &second).await;
        assert_eq!(indexed(&gw).await, first.len() + second.len());
        assert_chain_verifies(&gw).await;
    };
    let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(result)).await;
    gw.stop().await;
    drop(pg);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Open the gateway's SQLite index file directly (as an operator's tool would).
async fn sqlite_admin(data_dir: &Path) -> sqlx::SqlitePool {
    sqlx::SqlitePool::connect(&format!("sqlite://{}", data_dir.join("index.db").display()))
        .await
        .expect("open index.db")
}

/// Item 6: when the audit trail cannot be written, nothing is served (DIMSE association
/// refused, C-STORE not acknowledged, QIDO-RS/WADO-RS 503) and `/ready` says so with the
/// count of failed writes; a retrieval checks the trail before any data goes out, a search
/// is not answered when its record fails; once the trail takes writes again, so does the
/// gateway.
#[tokio::test(flavor = "multi_thread")]
async fn an_unwritable_audit_trail_closes_the_gateway_until_it_recovers() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let src = tempfile::tempdir().unwrap();
    let (first, second) = two_data_sets(src.path());
    let gw = Gateway::start("[storage]\nmin_free_bytes = 0\n").await;
    let run = storescu(gw.port, &first);
    assert!(run.all_succeeded(first.len()), "{}", run.log);
    let chain_before = gw.context().trust.audit.verify().await.unwrap().records;
    let study = common::generate(&src.path().join("c"), false);
    let study = &study[0].study_uid;

    // Writes into the index fail (triggers, as a full or broken database would): the audit
    // records (`audit`) and the write probe (`probe`) each on their own switch.
    let admin = sqlite_admin(&gw.data_dir()).await;
    let fail = "BEGIN SELECT RAISE(ABORT, 'index write refused (test)'); END";
    for statement in [
        "CREATE TABLE test_fault (audit INTEGER NOT NULL, probe INTEGER NOT NULL)".to_string(),
        "INSERT INTO test_fault VALUES (0, 0)".into(),
        format!("CREATE TRIGGER fail_audit BEFORE INSERT ON audit_record WHEN (SELECT audit FROM test_fault) {fail}"),
        format!("CREATE TRIGGER fail_probe BEFORE INSERT ON readiness_probe WHEN (SELECT probe FROM test_fault) {fail}"),
        format!("CREATE TRIGGER fail_probe_update BEFORE UPDATE ON readiness_probe WHEN (SELECT probe FROM test_fault) {fail}"),
    ] {
        sqlx::query(&statement)
            .execute(&admin)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    let switch = |audit: bool, probe: bool| {
        let admin = admin.clone();
        async move {
            sqlx::query("UPDATE test_fault SET audit = ?, probe = ?")
                .bind(audit)
                .bind(probe)
                .execute(&admin)
                .await
                .unwrap();
        }
    };

    // The index stops taking writes. A retrieval asks first: refused before any data.
    switch(true, true).await;
    let (status, body) = curl(gw.http_port, &format!("/dicomweb/studies/{study}"));
    assert_eq!(
        status, 503,
        "WADO-RS must be refused before any data goes out: {body}"
    );
    // From now on nothing is served at all.
    assert!(
        !echoscu(gw.port),
        "association admitted without an audit trail"
    );
    let run = storescu(gw.port, &second);
    assert!(
        run.succeeded().is_empty(),
        "a C-STORE acknowledged without an audit trail:\n{}",
        run.log
    );
    let get = tempfile::tempdir().unwrap();
    let getscu = dcmtk(
        "getscu",
        &[
            "-S",
            "-aec",
            "BEELDBRUG",
            "-od",
            &get.path().display().to_string(),
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            &format!("StudyInstanceUID={study}"),
            "127.0.0.1",
            &gw.port.to_string(),
        ],
    );
    assert_eq!(
        std::fs::read_dir(get.path()).unwrap().count(),
        0,
        "C-GET sent data without an audit trail: {}",
        String::from_utf8_lossy(&getscu.stderr)
    );
    let (status, _) = curl(gw.http_port, "/dicomweb/studies");
    assert_eq!(status, 503);
    let (status, body) = curl(gw.http_port, "/ready");
    assert_eq!(status, 503, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    let failing = ready["failing"].as_array().unwrap();
    assert!(failing.iter().any(|f| f == "audit"), "{ready}");
    assert_eq!(ready["checks"]["audit"]["ok"], false, "{ready}");
    assert!(
        gw.context().trust.audit.health().failures() >= 1,
        "failed writes are counted"
    );
    assert!(
        ready["checks"]["audit"]["detail"]
            .as_str()
            .unwrap()
            .contains("failed since start"),
        "{ready}"
    );

    // Only the audit records fail now: the probe reopens the gate, but a search whose
    // record cannot be written is not answered.
    switch(true, false).await;
    becomes_ready(gw.http_port, Duration::from_secs(10))
        .await
        .expect("the write probe passes again");
    let (status, body) = curl(gw.http_port, "/dicomweb/studies");
    assert_eq!(
        status, 503,
        "QIDO-RS answered without its audit record: {body}"
    );

    // Everything takes writes again: within seconds the gateway serves again.
    switch(false, false).await;
    becomes_ready(gw.http_port, Duration::from_secs(10))
        .await
        .expect("ready again once the audit trail takes writes");
    everything_succeeds(&gw, &second).await;
    let verification = gw.context().trust.audit.verify().await.unwrap();
    assert!(verification.ok, "{verification:?}");
    assert!(verification.records > chain_before);
    admin.close().await;
    gw.stop().await;
}

/// Item 7: `/ready` answers 200 with each check, and 503 naming the one that fails: the
/// free-space floor, and a data directory whose filesystem filled up (and then had room).
#[tokio::test(flavor = "multi_thread")]
async fn ready_names_the_failing_check() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let gw = Gateway::start("[storage]\nmin_free_bytes = 0\n").await;
    let (status, body) = curl(gw.http_port, "/ready");
    assert_eq!(status, 200, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["status"], "ready");
    for check in ["index", "blobs", "disk", "audit"] {
        assert_eq!(ready["checks"][check]["ok"], true, "{check}: {ready}");
    }
    assert!(ready["checks"].get("pacs").is_none(), "no PACS configured");
    gw.stop().await;

    // A floor above what any disk has.
    let gw = Gateway::start("[storage]\nmin_free_bytes = 9000000000000000000\n").await;
    let (status, body) = curl(gw.http_port, "/ready");
    assert_eq!(status, 503, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["failing"], serde_json::json!(["disk"]), "{ready}");
    assert!(ready["checks"]["disk"]["detail"]
        .as_str()
        .unwrap()
        .contains("storage.min_free_bytes"));
    let (status, _) = curl(gw.http_port, "/health");
    assert_eq!(status, 200, "liveness is not readiness");
    gw.stop().await;

    // The data directory's filesystem fills up under a running gateway (a read-only remount
    // is refused while the index is open for writing; the start check below covers that).
    let fs = SmallFs::mount(8 * MIB);
    let gw = Gateway::start_in(
        &fs.path().join("data"),
        "[storage]\nmin_free_bytes = 65536\n",
    )
    .await;
    becomes_ready(gw.http_port, Duration::from_secs(5))
        .await
        .expect("ready on a filesystem with room");
    let filler = fs.fill();
    let (status, body) = curl(gw.http_port, "/ready");
    assert_eq!(status, 503, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    let failing: Vec<&str> = ready["failing"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f.as_str())
        .collect();
    assert!(
        failing.contains(&"blobs") && failing.contains(&"disk"),
        "{ready}"
    );
    std::fs::remove_file(&filler).unwrap();
    becomes_ready(gw.http_port, Duration::from_secs(10))
        .await
        .expect("ready again once space is free");
    gw.stop().await;
}

/// Item 7, gateway mode: `/ready` includes the PACS (C-ECHO to DCMTK dcmqrscp) and names
/// it when the PACS is down.
#[tokio::test(flavor = "multi_thread")]
async fn ready_checks_the_pacs_in_gateway_mode() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let pacs = common::dcmqrscp::Dcmqrscp::start(dir.path(), "PACS", &[], &[]).await;
    let toml = format!(
        "[storage]\nmin_free_bytes = 0\n{}",
        common::gateway_mode::pacs_toml("PACS", pacs.port, "c-get", "")
    );
    let gw = Gateway::start(&toml).await;
    let (status, body) = curl(gw.http_port, "/ready");
    assert_eq!(status, 200, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["checks"]["pacs"]["ok"], true, "{ready}");
    gw.stop().await;
    let port = pacs.port;
    drop(pacs);

    let toml = format!(
        "[storage]\nmin_free_bytes = 0\n{}",
        common::gateway_mode::pacs_toml("PACS", port, "c-get", "connect_timeout_secs = 2")
    );
    let gw = Gateway::start(&toml).await;
    let (status, body) = curl(gw.http_port, "/ready");
    assert_eq!(status, 503, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["failing"], serde_json::json!(["pacs"]), "{ready}");
    gw.stop().await;
}

/// Item 7: `beeldbrug serve` on an existing data directory that is read-only stops at start
/// and names the path (a read-only mount: root ignores permission bits).
#[tokio::test(flavor = "multi_thread")]
async fn serve_refuses_a_read_only_data_directory() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let fs = SmallFs::mount(8 * MIB);
    let data = fs.path().join("data");
    // A data directory as a previous run left it.
    let gw = Gateway::start_in(&data, "").await;
    gw.stop().await;
    fs.remount_read_only();
    let config = tempfile::tempdir().unwrap();
    let file = config.path().join("beeldbrug.toml");
    std::fs::write(
        &file,
        format!(
            "[dimse]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
             [storage]\ndata_dir = \"{}\"\n",
            data.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_beeldbrug"))
        .args(["serve", "--config"])
        .arg(&file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run beeldbrug");
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("beeldbrug serve kept running on a read-only data directory");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&data.display().to_string()) && stderr.contains("not writable"),
        "the error names the path: {stderr}"
    );
    fs.remount_writable();
}
