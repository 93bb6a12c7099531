//! The audit trail (issue 5): PS3.15 A.5 messages valid against the DICOM schema, exactly one
//! record per operation through a real gateway (DCMTK and HTTP), a hash chain that shows an
//! edited record, per-patient reading over HTTP and the CLI (itself recorded), every message
//! delivered over RFC 5425 TLS after the receiver was down, and two writers on one
//! PostgreSQL chain.

mod common;
#[path = "common/syslog.rs"]
mod syslog;

use beeldbrug::store::index::{AuditRecord, PostgresIndex, SqliteIndex};
use beeldbrug::store::Index;
use beeldbrug::trust::audit::{self, Audit, AuditConfig, AuditEntry};
use common::http::request;
use common::postgres::FreshDatabase;
use common::{dcmtk, free_port, generate, Gateway};
use sqlx::Connection;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use syslog::SyslogReceiver;

/// The schema: the vendored copy in `tests/schemas`, or where `BEELDBRUG_SCHEMAS` says.
fn schema() -> String {
    let dir = std::env::var("BEELDBRUG_SCHEMAS")
        .unwrap_or_else(|_| format!("{}/tests/schemas", env!("CARGO_MANIFEST_DIR")));
    let path = format!("{dir}/dicom-audit/DICOM-PS3.15-2020.rng");
    assert!(
        Path::new(&path).exists(),
        "DICOM audit schema not found at {path}"
    );
    path
}

/// Validate with `xmllint --relaxng`; `Err` carries xmllint's complaint.
fn validate(xml: &str) -> Result<(), String> {
    let xmllint = common::require_tool("xmllint");
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("message.xml");
    std::fs::write(&file, xml).expect("write message");
    let out = Command::new(xmllint)
        .args(["--noout", "--nonet", "--relaxng", &schema()])
        .arg(&file)
        .output()
        .expect("run xmllint");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn record(operation: &str, outcome: &str, grounds: &str) -> AuditRecord {
    AuditRecord {
        seq: 7,
        time: "2025-03-04T15:16:11.168123456Z".into(),
        operation: operation.into(),
        outcome: outcome.into(),
        detail: "2 studies <matched> & \"sent\"".into(),
        gateway: "REMOTE_GW".into(),
        certificate_sha256: "AB:CD".into(),
        organisation_ura: "12345678".into(),
        professional_uzi: "900012345".into(),
        role: "01.015".into(),
        purpose_of_use: "TREATMENT".into(),
        token_id: "jti-1".into(),
        source_address: "[::1]:40000".into(),
        grounds: grounds.into(),
        patient_ids: vec!["999999990".into(), "P-not-a-bsn".into()],
        study_uids: vec!["1.2.3.4".into(), "1.2.3.5".into()],
        ..Default::default()
    }
}

async fn sqlite_audit(dir: &Path, config: &AuditConfig) -> (Arc<dyn Index>, Audit) {
    let url = format!("sqlite://{}", dir.join("index.db").display());
    let index: Arc<dyn Index> = Arc::new(SqliteIndex::open(&url).await.expect("index"));
    let audit = Audit::queue_only(config, index.clone());
    (index, audit)
}

/// A correlation id across gateways a peer could send (issue 17).
const CORRELATION: &str = "beeldbrug:test-peer:qido-17";

/// Every kind of message, with and without claims, validates; a message the schema forbids
/// does not (the check can fail).
#[tokio::test(flavor = "multi_thread")]
async fn messages_validate_against_the_ps3_15_schema() {
    let dir = tempfile::tempdir().unwrap();
    let (_index, audit) = sqlite_audit(dir.path(), &AuditConfig::default()).await;
    let cases = [
        ("C-FIND", "success", "", "110112"),
        ("QIDO-RS", "success", "", "110112"),
        ("C-MOVE", "partial", "", "110104"),
        ("C-GET", "failure", "", "110104"),
        ("WADO-RS", "success", "", "110104"),
        ("STOW-RS", "success", "", "110104"),
        ("C-STORE", "success", "", "110104"),
        ("WADO-RS", "refused", "no consent (Mitz: Deny)", "110113"),
        ("QIDO-RS", "refused", "unauthenticated: bad token", "110114"),
        ("AUDIT-READ", "success", "", "110101"),
        ("C-ECHO", "refused", "", "110113"),
        ("RAD-75", "partial", "", "110104"),
        ("ITI-43", "success", "", "110106"),
        (
            "ITI-39",
            "refused",
            "unauthenticated: XUA assertion: expired",
            "110114",
        ),
    ];
    for (op, outcome, grounds, code) in cases {
        for bare in [false, true] {
            let mut r = record(op, outcome, grounds);
            if bare {
                // An anonymous caller, no patient, no study: the least a message holds.
                r = AuditRecord {
                    seq: 1,
                    time: "2025-03-04T15:16:11Z".into(),
                    operation: op.into(),
                    outcome: outcome.into(),
                    grounds: grounds.into(),
                    ..Default::default()
                };
            }
            let xml = audit
                .dicom_message(&r)
                .unwrap_or_else(|| panic!("{op} {outcome}: no message"));
            assert!(
                xml.contains(&format!("<EventID csd-code=\"{code}\"")),
                "{op} {outcome}: {xml}"
            );
            if let Err(why) = validate(&xml) {
                panic!("{op} {outcome} (bare: {bare}) does not validate: {why}\n{xml}");
            }
        }
    }
    let xml = audit
        .dicom_message(&record("WADO-RS", "success", ""))
        .unwrap();
    assert!(
        xml.contains("ParticipantObjectID=\"999999990^^^&amp;2.16.840.1.113883.2.4.6.3&amp;ISO\"")
    );
    assert!(xml.contains("ParticipantObjectID=\"P-not-a-bsn\""));
    assert!(xml.contains("ParticipantObjectID=\"1.2.3.5\""));
    assert!(xml.contains("UserID=\"900012345^^^&amp;2.16.528.1.1007.3.1&amp;ISO\""));
    assert!(xml.contains("NetworkAccessPointID=\"::1\""));
    assert!(audit
        .dicom_message(&record("C-ECHO", "success", ""))
        .is_none());
    assert!(
        !xml.contains("CorrelationID"),
        "no correlation id, no object: {xml}"
    );

    // With a correlation id across gateways: one more participant object, still valid.
    for op in ["ITI-38", "RAD-75", "QIDO-RS", "C-MOVE"] {
        for outcome in ["success", "refused"] {
            let mut r = record(op, outcome, "");
            r.correlation_id = "urn:uuid:3c96afed-528b-4e85-8d0b-69f71f4aa2ed".into();
            let with = audit.dicom_message(&r).unwrap();
            assert!(
                with.contains(
                    "<ParticipantObjectIdentification ParticipantObjectID=\"urn:uuid:3c96afed-528b-4e85-8d0b-69f71f4aa2ed\" \
                     ParticipantObjectTypeCode=\"2\" ParticipantObjectTypeCodeRole=\"20\">"
                ),
                "{with}"
            );
            if let Err(why) = validate(&with) {
                panic!("{op} {outcome} with a correlation id does not validate: {why}\n{with}");
            }
        }
    }

    // Negative control: no ActiveParticipant is not a valid AuditMessage.
    let start = xml.find("<ActiveParticipant").unwrap();
    let end = xml.find("<AuditSourceIdentification").unwrap();
    let broken = format!("{}{}", &xml[..start], &xml[end..]);
    assert!(validate(&broken).is_err(), "xmllint accepted {broken}");
}

fn dimse(tool: &str, aet: &str, port: u16, extra: &[&str]) {
    let port = port.to_string();
    let mut args = vec!["-aet", aet, "-aec", "BEELDBRUG"];
    args.extend_from_slice(extra);
    args.extend(["127.0.0.1", port.as_str()]);
    let out = dcmtk(tool, &args);
    assert!(
        out.status.success(),
        "{tool}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn cli(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_beeldbrug"))
        .arg("audit")
        .arg("-c")
        .arg(config)
        .args(args)
        .output()
        .expect("run beeldbrug audit")
}

async fn wait_outbox_empty(index: &dyn Index, timeout: Duration) -> u64 {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let n = index.audit_outbox_len().await.unwrap();
        if n == 0 || tokio::time::Instant::now() >= deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A scripted session of mixed operations leaves exactly one record each; the chain
/// verifies; the per-patient reads (HTTP, CLI) return only that patient and are recorded;
/// the messages queued while the syslog receiver was down all arrive once it is up, valid;
/// an edited record is found.
#[tokio::test(flavor = "multi_thread")]
async fn session_one_record_per_operation_chain_and_syslog() {
    let pki = common::pki::Pki::new();
    let syslog_port = free_port();
    let audit_toml = format!(
        "[trust.audit]\nsyslog_host = \"127.0.0.1\"\nsyslog_port = {syslog_port}\n\
         ca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\nhostname = \"gw-test\"\n\
         site_id = \"87654321\"\nretry_max_secs = 1\npoll_secs = 1\n",
        pki.ca_file.display(),
        pki.client.cert.display(),
        pki.client.key.display()
    );
    let gw = Gateway::start(&audit_toml).await;
    let index = gw.context().index.clone();
    let data = tempfile::tempdir().unwrap();
    let files = generate(data.path(), false);
    let bsn = files[0].patient_id.clone();
    let other_bsn = files
        .iter()
        .map(|f| f.patient_id.clone())
        .find(|p| *p != bsn)
        .expect("two patients");
    let study = files[0].study_uid.clone();

    // The session: C-ECHO, one C-STORE association, QIDO-RS, WADO-RS, a refused request.
    dimse("echoscu", "ECHOSCU", gw.port, &[]);
    let paths: Vec<String> = files.iter().map(|f| f.path.display().to_string()).collect();
    let mut store_args: Vec<&str> = vec![];
    store_args.extend(paths.iter().map(String::as_str));
    // storescu wants the peer before the files.
    let out = dcmtk(
        "storescu",
        &[
            &[
                "-aet",
                "STORESCU",
                "-aec",
                "BEELDBRUG",
                "127.0.0.1",
                &gw.port.to_string(),
            ][..],
            &store_args[..],
        ]
        .concat(),
    );
    assert!(
        out.status.success(),
        "storescu: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let qido = request(
        gw.http_port,
        "GET",
        &format!("/dicomweb/studies?PatientID={bsn}"),
        // A peer gateway's correlation id (issue 17): recorded, and in the syslog message.
        &[
            ("Accept", "application/dicom+json"),
            ("X-Correlation-ID", CORRELATION),
        ],
        b"",
    )
    .await;
    assert_eq!(qido.status, 200, "{}", qido.text());
    let wado = request(
        gw.http_port,
        "GET",
        &format!("/dicomweb/studies/{study}"),
        &[("Accept", "multipart/related; type=\"application/dicom\"")],
        b"",
    )
    .await;
    assert_eq!(wado.status, 200, "{}", wado.text());
    let refused = request(
        gw.http_port,
        "GET",
        "/dicomweb/studies",
        &[("Authorization", "Bearer not-a-token")],
        b"",
    )
    .await;
    assert_eq!(refused.status, 401, "{}", refused.text());

    // The patient's trail over HTTP: only that patient, the chain verified; then recorded.
    let trail = request(
        gw.http_port,
        "GET",
        &format!("/admin/audit?bsn={bsn}"),
        &[],
        b"",
    )
    .await;
    assert_eq!(trail.status, 200, "{}", trail.text());
    let trail = trail.json();
    assert_eq!(trail["verification"]["ok"], true, "{trail}");
    let records = trail["records"].as_array().expect("records");
    let ops: Vec<&str> = records
        .iter()
        .map(|r| r["operation"].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["C-STORE", "QIDO-RS", "WADO-RS"], "{trail}");
    for r in records {
        let patients = r["patient_ids"].as_array().unwrap();
        assert!(patients.iter().any(|p| p == bsn.as_str()), "{r}");
    }

    let events = index.audit_events(1000).await.unwrap();
    let got: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e.operation.as_str(), e.outcome.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("C-ECHO", "success"),
            ("C-STORE", "success"),
            ("QIDO-RS", "success"),
            ("WADO-RS", "success"),
            ("QIDO-RS", "refused"),
            ("AUDIT-READ", "success"),
        ],
        "{events:#?}"
    );
    let records = index.audit_records(0, 1000).await.unwrap();
    assert_eq!(
        records
            .iter()
            .filter(|r| r.correlation_id == CORRELATION)
            .map(|r| r.operation.as_str())
            .collect::<Vec<_>>(),
        ["QIDO-RS"],
        "the peer's correlation id recorded"
    );
    assert_eq!(events[1].actor, "STORESCU");
    assert!(
        events[1].patient_ids.contains(&other_bsn),
        "{:?}",
        events[1]
    );
    assert_eq!(events[5].patient_ids, bsn);
    let verification = audit::chain::verify(index.as_ref()).await.unwrap();
    assert!(verification.ok, "{verification:?}");
    assert_eq!(verification.records, 6);

    // The CLI reads the same trail from the same index (another process), and is recorded.
    let config_file = gw.dir.path().join("cli.toml");
    std::fs::write(
        &config_file,
        format!(
            "[storage]\ndata_dir = \"{}\"\n{audit_toml}",
            gw.data_dir().display()
        ),
    )
    .unwrap();
    let out = cli(&config_file, &["--bsn", &other_bsn, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(answer["verification"]["ok"], true, "{answer}");
    let ops: Vec<&str> = answer["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["operation"].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["C-STORE"], "{answer}");
    let events = index.audit_events(1000).await.unwrap();
    assert_eq!(events.len(), 7);
    assert_eq!(
        (
            events[6].operation.as_str(),
            events[6].patient_ids.as_str(),
            events[6].actor.as_str()
        ),
        ("AUDIT-READ", other_bsn.as_str(), "beeldbrug-cli")
    );

    // The receiver was down all along: every message but the C-ECHO's waits in the outbox.
    assert_eq!(index.audit_outbox_len().await.unwrap(), 6);
    let receiver =
        SyslogReceiver::start(syslog_port, &pki.ca_file, &pki.server.cert, &pki.server.key).await;
    let messages = receiver.wait_for(6, Duration::from_secs(30)).await;
    assert_eq!(messages.len(), 6, "{messages:#?}");
    assert_eq!(
        wait_outbox_empty(index.as_ref(), Duration::from_secs(10)).await,
        0
    );
    let mut codes = Vec::new();
    for m in &messages {
        let parts = syslog::split_rfc5424(m);
        assert_eq!(&parts[..2], ["85", "1"], "{m}");
        assert!(parts[2].ends_with('Z'), "UTC timestamp: {m}");
        assert_eq!(parts[3], "gw-test");
        assert_eq!(parts[4], "beeldbrug");
        assert_eq!(parts[6], "IHE+RFC-3881");
        assert_eq!(parts[7], "-");
        let xml = parts[8]
            .strip_prefix('\u{feff}')
            .expect("MSG starts with the BOM");
        if let Err(why) = validate(xml) {
            panic!("received message does not validate: {why}\n{xml}");
        }
        let at = xml.find("<EventID csd-code=\"").unwrap() + 19;
        codes.push(xml[at..at + 6].to_string());
        assert!(xml.contains("AuditEnterpriseSiteID=\"87654321\""), "{xml}");
    }
    codes.sort();
    let mut expected = vec!["110104", "110112", "110104", "110101", "110101"];
    // The refused request: User Authentication where the front says it was about
    // credentials, else Security Alert.
    let refusal = if codes.contains(&"110114".to_string()) {
        "110114"
    } else {
        "110113"
    };
    expected.push(refusal);
    expected.sort();
    assert_eq!(codes, expected, "{messages:#?}");
    let store = messages
        .iter()
        .find(|m| m.contains("csd-code=\"110104\"") && m.contains("EventActionCode=\"C\""))
        .expect("C-STORE message");
    assert!(
        store.contains(&format!("{bsn}^^^&amp;2.16.840.1.113883.2.4.6.3&amp;ISO")),
        "{store}"
    );
    assert!(
        store.contains(&format!("ParticipantObjectID=\"{study}\"")),
        "{store}"
    );
    // The QIDO-RS message names the exchange's correlation id (a Job system object), and
    // only that one does.
    let with_id: Vec<&String> = messages
        .iter()
        .filter(|m| m.contains(&format!("ParticipantObjectID=\"{CORRELATION}\"")))
        .collect();
    assert_eq!(with_id.len(), 1, "{messages:#?}");
    assert!(with_id[0].contains("csd-code=\"110112\""), "{}", with_id[0]);
    assert!(
        with_id[0]
            .contains("csd-code=\"CorrelationID\" codeSystemName=\"urn:beeldbrug:correlation:1\""),
        "{}",
        with_id[0]
    );
    receiver.stop();
    // Stop the gateway but keep its data directory.
    let Gateway { running, dir, .. } = gw;
    if let Some(running) = running {
        running.stop().await;
    }

    // Tampering: one record edited in the database file is found, by the CLI and the library.
    let db = index_path(&config_file);
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query("UPDATE audit_record SET detail = 'nothing happened' WHERE seq = 3")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let out = cli(&config_file, &["--verify", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(answer["verification"]["ok"], false, "{answer}");
    assert_eq!(answer["verification"]["broken"]["seq"], 3, "{answer}");
    assert_eq!(answer["verification"]["records"], 2, "{answer}");
    let out = cli(&config_file, &["--verify"]);
    drop(dir);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("chain: BROKEN at record 3"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The SQLite file the gateway's default index lives in (under `data_dir`).
fn index_path(config_file: &Path) -> std::path::PathBuf {
    let config = beeldbrug::config::Config::load(Some(config_file)).unwrap();
    let url = config.index_url();
    std::path::PathBuf::from(
        url.trim_start_matches("sqlite://")
            .split('?')
            .next()
            .unwrap(),
    )
}

fn entry(writer: usize, i: usize) -> AuditEntry {
    AuditEntry {
        time: beeldbrug::trust::now_rfc3339(),
        operation: "WADO-RS".into(),
        outcome: "success".into(),
        detail: format!("writer {writer} record {i}"),
        gateway: format!("GW{writer}"),
        patient_ids: vec![if i.is_multiple_of(2) {
            "999999990"
        } else {
            "999999989"
        }
        .into()],
        study_uids: vec![format!("1.2.{writer}.{i}")],
        // Some with a correlation id (issue 17): the chain verifies only if the column
        // round-trips (the hash covers it when set).
        correlation_id: if i.is_multiple_of(3) {
            format!("beeldbrug:test:{writer}-{i}")
        } else {
            String::new()
        },
        ..Default::default()
    }
}

/// Two writers (two connection pools, as two gateway processes) append to one chain
/// concurrently: it stays whole and gapless; an edit and a removal are found.
async fn two_writers(a: Arc<dyn Index>, b: Arc<dyn Index>, n: usize) {
    // A syslog host queues a message with each record (queue_only starts no sender).
    let config = AuditConfig {
        syslog_host: Some("127.0.0.1".into()),
        ..Default::default()
    };
    let writers = [a.clone(), b.clone()]
        .into_iter()
        .enumerate()
        .map(|(w, index)| {
            let audit = Audit::queue_only(&config, index);
            tokio::spawn(async move {
                for i in 0..n {
                    audit.append(entry(w, i)).await.expect("append");
                }
            })
        });
    for w in futures::future::join_all(writers).await {
        w.expect("writer");
    }
    let v = audit::chain::verify(a.as_ref()).await.unwrap();
    assert!(v.ok, "{v:?}");
    let correlated = a
        .audit_records(0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.correlation_id.starts_with("beeldbrug:test:"))
        .count();
    assert_eq!(
        correlated,
        2 * n.div_ceil(3),
        "correlation ids stored and read back"
    );
    assert_eq!(v.records, 2 * n as i64);
    assert_eq!(v.head_seq, 2 * n as i64);
    let patient = a
        .audit_records_for_patient("999999990", 10_000)
        .await
        .unwrap();
    assert_eq!(patient.len(), n);
    assert!(patient.iter().all(|r| r.patient_ids == ["999999990"]));

    // The outbox: two senders claiming at once never get the same message.
    let total = 2 * n as u64;
    assert_eq!(a.audit_outbox_len().await.unwrap(), total);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let (x, y) = tokio::join!(
        a.claim_audit_outbox("sender-a", now, now + 60, 1000),
        b.claim_audit_outbox("sender-b", now, now + 60, 1000)
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    let mut ids: Vec<i64> = x.iter().chain(&y).map(|m| m.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len() as u64, total, "{} + {} claimed", x.len(), y.len());
    assert!(x
        .iter()
        .chain(&y)
        .all(|m| m.message.contains("<AuditMessage>")));
    // Claimed: nothing is due; a failed batch is due again when its retry time comes.
    assert!(a
        .claim_audit_outbox("c", now, now + 60, 1000)
        .await
        .unwrap()
        .is_empty());
    let x_ids: Vec<i64> = x.iter().map(|m| m.id).collect();
    let y_ids: Vec<i64> = y.iter().map(|m| m.id).collect();
    a.retry_audit_outbox(&x_ids, now + 5, "receiver down")
        .await
        .unwrap();
    b.delete_audit_outbox(&y_ids).await.unwrap();
    assert_eq!(a.audit_outbox_len().await.unwrap(), x_ids.len() as u64);
    assert!(a
        .claim_audit_outbox("d", now, now + 60, 1000)
        .await
        .unwrap()
        .is_empty());
    let again = a
        .claim_audit_outbox("e", now + 5, now + 65, 1000)
        .await
        .unwrap();
    assert_eq!(again.len(), x_ids.len());
    assert!(again.iter().all(|m| m.attempts == 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_chain_with_two_writers() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("index.db").display());
    let a: Arc<dyn Index> = Arc::new(SqliteIndex::open(&url).await.unwrap());
    let b: Arc<dyn Index> = Arc::new(SqliteIndex::open(&url).await.unwrap());
    two_writers(a.clone(), b, 30).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_chain_with_two_writers() {
    let db = FreshDatabase::create().await;
    let a = Arc::new(PostgresIndex::open(&db.url).await.unwrap());
    let b = Arc::new(PostgresIndex::open(&db.url).await.unwrap());
    two_writers(a.clone(), b.clone(), 40).await;

    // An edited record is found; put back, the chain is whole again; a removed one is found.
    let original = a.audit_records(16, 1).await.unwrap().remove(0);
    sqlx::query("UPDATE audit_record SET gateway = 'SOMEONE_ELSE' WHERE seq = 17")
        .execute(a.pool())
        .await
        .unwrap();
    let v = audit::chain::verify(a.as_ref()).await.unwrap();
    assert_eq!(v.broken.as_ref().map(|b| b.seq), Some(17), "{v:?}");
    assert_eq!(v.records, 16);
    sqlx::query("UPDATE audit_record SET gateway = $1 WHERE seq = 17")
        .bind(&original.gateway)
        .execute(a.pool())
        .await
        .unwrap();
    assert!(audit::chain::verify(a.as_ref()).await.unwrap().ok);
    sqlx::query("DELETE FROM audit_record_patient WHERE seq = 30")
        .execute(a.pool())
        .await
        .unwrap();
    sqlx::query("DELETE FROM audit_record WHERE seq = 30")
        .execute(a.pool())
        .await
        .unwrap();
    let v = audit::chain::verify(a.as_ref()).await.unwrap();
    assert_eq!(v.broken.as_ref().map(|b| b.seq), Some(30), "{v:?}");
    a.close().await;
    b.close().await;
    db.drop_db().await;
}

/// Issue 12 item 1: one C-STORE association of five patients (DCMTK storescu), then one
/// patient's trail read with curl over `/admin/audit` and with `beeldbrug audit --bsn`: the
/// C-STORE record is shown with the other four patients and their studies removed, while
/// the stored record keeps them all and the chain still verifies against it.
async fn trail_of_one_patient_hides_the_others(index_url: Option<&str>) {
    let index_line = index_url
        .map(|u| format!("index = \"{u}\"\n"))
        .unwrap_or_default();
    let gw = Gateway::start(&format!("[storage]\n{index_line}")).await;
    let index = gw.context().index.clone();
    let data = tempfile::tempdir().unwrap();
    let files = beeldbrug::testdata::generate(&beeldbrug::testdata::GenerateArgs {
        out: data.path().to_path_buf(),
        seed: 12,
        patients: 5,
        ct_slices: 1,
        mr_slices: 1,
        dx: false,
        multiframe_frames: 0,
        frame_size: 32,
        encapsulated: false,
        implicit: false,
    })
    .expect("generate");
    let patients: std::collections::BTreeSet<String> =
        files.iter().map(|f| f.patient_id.clone()).collect();
    assert_eq!(patients.len(), 5);
    let studies_of = |bsn: &str| -> Vec<String> {
        let set: std::collections::BTreeSet<String> = files
            .iter()
            .filter(|f| f.patient_id == bsn)
            .map(|f| f.study_uid.clone())
            .collect();
        set.into_iter().collect()
    };

    let port = gw.port.to_string();
    let mut args = vec!["-aet", "STORESCU", "-aec", "BEELDBRUG", "127.0.0.1", &port];
    let paths: Vec<String> = files.iter().map(|f| f.path.display().to_string()).collect();
    args.extend(paths.iter().map(String::as_str));
    let out = dcmtk("storescu", &args);
    assert!(
        out.status.success(),
        "storescu: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The association's one record is written when it ends.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let stored = loop {
        let events = index.audit_events(100).await.unwrap();
        if let Some(e) = events.iter().find(|e| e.operation == "C-STORE") {
            break e.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "no C-STORE record");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for p in &patients {
        assert!(stored.patient_ids.contains(p.as_str()), "{stored:?}");
    }

    let check = |answer: &serde_json::Value, bsn: &str| {
        assert_eq!(answer["verification"]["ok"], true, "{answer}");
        let records = answer["records"].as_array().expect("records");
        let store = records
            .iter()
            .find(|r| r["operation"] == "C-STORE")
            .unwrap_or_else(|| panic!("no C-STORE record for {bsn}: {answer}"));
        assert_eq!(store["patient_ids"], serde_json::json!([bsn]), "{store}");
        assert_eq!(
            store["study_uids"],
            serde_json::json!(studies_of(bsn)),
            "{store}"
        );
        assert_eq!(store["redacted"], true, "{store}");
        assert!(store.get("hash").is_none(), "{store}");
        let text = answer.to_string();
        for other in patients.iter().filter(|p| *p != bsn) {
            assert!(!text.contains(other.as_str()), "{other} shown: {text}");
            for study in studies_of(other) {
                assert!(!text.contains(&study), "{study} shown: {text}");
            }
        }
    };

    // curl, as an operator or a patient's portal would read it.
    let bsn = patients.iter().next().unwrap().clone();
    let out = Command::new("curl")
        .args(["-sS", "-f"])
        .arg(format!(
            "http://127.0.0.1:{}/admin/audit?bsn={bsn}",
            gw.http_port
        ))
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    check(&answer, &bsn);

    // The CLI, another process on the same index, for another patient.
    let config_file = gw.dir.path().join("cli.toml");
    std::fs::write(
        &config_file,
        format!(
            "[storage]\ndata_dir = \"{}\"\n{index_line}",
            gw.data_dir().display()
        ),
    )
    .unwrap();
    let other = patients.iter().nth(3).unwrap().clone();
    let out = cli(&config_file, &["--bsn", &other, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    check(&answer, &other);

    // The stored record is untouched: all five patients, and the chain verifies over it.
    let records = index.audit_records(0, 100).await.unwrap();
    let store = records.iter().find(|r| r.operation == "C-STORE").unwrap();
    assert_eq!(store.patient_keys().len(), 5, "{store:?}");
    let out = cli(&config_file, &["--verify", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(answer["verification"]["ok"], true, "{answer}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_trail_of_one_patient_hides_the_others() {
    trail_of_one_patient_hides_the_others(None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_trail_of_one_patient_hides_the_others() {
    let db = FreshDatabase::create().await;
    trail_of_one_patient_hides_the_others(Some(&db.url)).await;
    db.drop_db().await;
}
