//! Delete and retention (issue 12 item 10): DICOMweb `DELETE`, `beeldbrug delete` and
//! `storage.keep_received_days`, on SQLite and PostgreSQL. Instances go in with DCMTK storescu
//! (or STOW-RS), come out with curl `DELETE`, and then QIDO-RS, WADO-RS, findscu and the blob
//! directory must show nothing; each delete leaves one audit record naming the patient.

mod common;
#[path = "common/tokens.rs"]
mod tokens;

use beeldbrug::config::Config;
use beeldbrug::core::Selection;
use beeldbrug::testdata::GeneratedFile;
use common::http::request;
use common::postgres::FreshDatabase;
use common::Gateway;
use std::path::Path;
use std::process::Command;

// ---------------------------------------------------------------------------------------------
// Helpers

/// storescu every file into the gateway; they must all be stored.
fn storescu(gw: &Gateway, files: &[GeneratedFile]) {
    let port = gw.port.to_string();
    let mut args = vec!["-aec", "BEELDBRUG", "127.0.0.1", port.as_str()];
    let paths: Vec<String> = files.iter().map(|f| f.path.display().to_string()).collect();
    args.extend(paths.iter().map(String::as_str));
    let out = common::dcmtk("storescu", &args);
    assert!(
        out.status.success(),
        "storescu: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// curl with a method; (HTTP status, body).
fn curl(method: &str, url: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-X", method, "-w", "\n%{http_code}", url])
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.trim().parse().unwrap_or(0), body.to_string())
}

/// findscu at STUDY level for one study: the number of matches.
fn findscu_matches(gw: &Gateway, study: &str) -> usize {
    let out_dir = tempfile::tempdir().unwrap();
    let port = gw.port.to_string();
    let key = format!("0020,000D={study}");
    let out = common::dcmtk(
        "findscu",
        &[
            "-S",
            "-aec",
            "BEELDBRUG",
            "-X",
            "-od",
            out_dir.path().to_str().unwrap(),
            "-k",
            "0008,0052=STUDY",
            "-k",
            &key,
            "127.0.0.1",
            &port,
        ],
    );
    assert!(
        out.status.success(),
        "findscu: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_dir(out_dir.path()).unwrap().count()
}

fn files_under(dir: &Path) -> usize {
    if !dir.exists() {
        return 0;
    }
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        n += if path.is_dir() { files_under(&path) } else { 1 };
    }
    n
}

fn study_files<'a>(files: &'a [GeneratedFile], study: &str) -> Vec<&'a GeneratedFile> {
    files.iter().filter(|f| f.study_uid == study).collect()
}

fn studies(files: &[GeneratedFile]) -> Vec<String> {
    let mut s: Vec<String> = files.iter().map(|f| f.study_uid.clone()).collect();
    s.sort();
    s.dedup();
    s
}

/// The newest `DELETE` audit record.
async fn last_audit(gw: &Gateway) -> beeldbrug::store::index::AuditRecord {
    let index = &gw.context().index;
    index
        .audit_records(0, 100_000)
        .await
        .unwrap()
        .into_iter()
        .rev()
        .find(|r| r.operation == "DELETE")
        .expect("a DELETE audit record")
}

// ---------------------------------------------------------------------------------------------
// DICOMweb DELETE

async fn delete_over_dicomweb(index_toml: &str) {
    let gw = Gateway::start(index_toml).await;
    let data = tempfile::tempdir().unwrap();
    let files = common::generate(data.path(), false);
    let all = studies(&files);
    assert!(all.len() >= 2, "the test data has several studies");
    tokio::task::block_in_place(|| storescu(&gw, &files));
    let base = gw.dicomweb_url();
    let blobs = gw.data_dir().join("blobs");
    let (study, other) = (&all[0], &all[1]);
    assert_eq!(
        tokio::task::block_in_place(|| findscu_matches(&gw, study)),
        1
    );
    assert!(files_under(&blobs.join(study)) > 0);

    // The whole study.
    let (status, _) = curl("DELETE", &format!("{base}/studies/{study}"));
    assert_eq!(status, 204);
    let (status, _) = curl("GET", &format!("{base}/studies?StudyInstanceUID={study}"));
    assert_eq!(status, 204, "QIDO-RS finds no match");
    let (status, _) = curl("GET", &format!("{base}/studies/{study}/instances"));
    assert_eq!(status, 204);
    let (status, _) = curl("GET", &format!("{base}/studies/{study}"));
    assert_eq!(status, 404, "WADO-RS has nothing to send");
    assert_eq!(
        tokio::task::block_in_place(|| findscu_matches(&gw, study)),
        0
    );
    assert_eq!(files_under(&blobs.join(study)), 0, "the files are gone");
    assert!(!blobs.join(study).exists(), "and their directories");
    let record = last_audit(&gw).await;
    assert_eq!(record.operation, "DELETE");
    assert_eq!(record.outcome, "success");
    let patient = &study_files(&files, study)[0].patient_id;
    assert_eq!(&record.patient_ids, &vec![patient.clone()]);
    assert_eq!(&record.study_uids, &vec![study.clone()]);

    // Gone is gone: 404, audited as a failure.
    let (status, _) = curl("DELETE", &format!("{base}/studies/{study}"));
    assert_eq!(status, 404);
    assert_eq!(last_audit(&gw).await.outcome, "failure");

    // One instance, then its whole series, of the other study.
    let in_other = study_files(&files, other);
    let first = in_other[0];
    let url = format!(
        "{base}/studies/{other}/series/{}/instances/{}",
        first.series_uid, first.sop_uid
    );
    assert_eq!(curl("DELETE", &url).0, 204);
    assert_eq!(curl("GET", &url).0, 404);
    let before = files_under(&blobs.join(other));
    assert_eq!(before, in_other.len() - 1);
    let series_url = format!("{base}/studies/{other}/series/{}", first.series_uid);
    // A series UID under the wrong study matches nothing.
    let wrong = format!("{base}/studies/{study}/series/{}", first.series_uid);
    assert_eq!(curl("DELETE", &wrong).0, 404);
    assert_eq!(curl("DELETE", &series_url).0, 204);
    let in_series = in_other
        .iter()
        .filter(|f| f.series_uid == first.series_uid)
        .count();
    assert_eq!(files_under(&blobs.join(other)), before - (in_series - 1));
    assert_eq!(curl("GET", &series_url).0, 404);
    // The rest of the other study is still served.
    if in_series < in_other.len() {
        assert_eq!(curl("GET", &format!("{base}/studies/{other}")).0, 200);
    }
    assert!(gw
        .context()
        .index
        .queued_blob_deletions(10)
        .await
        .unwrap()
        .is_empty());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_over_dicomweb_sqlite() {
    delete_over_dicomweb("").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_over_dicomweb_postgres() {
    let db = FreshDatabase::create().await;
    delete_over_dicomweb(&format!("[storage]\nindex = \"{}\"\n", db.url)).await;
    db.drop_db().await;
}

/// Only our own organisation deletes: a token of another organisation gets 403, no token
/// where anonymous access is off gets 401; nothing is removed either way.
#[tokio::test(flavor = "multi_thread")]
async fn only_our_own_organisation_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let idp = tokens::JwtIdp::new(dir.path(), "https://idp.test", "beeldbrug");
    let config = format!(
        "[trust]\nown_ura = \"{}\"\n[dicomweb]\nallow_anonymous = false\n{}",
        tokens::TEST_URA,
        idp.config_toml()
    );
    let gw = Gateway::start(&config).await;
    let data = tempfile::tempdir().unwrap();
    let files = common::generate(data.path(), false);
    tokio::task::block_in_place(|| storescu(&gw, &files));
    let study = &files[0].study_uid;
    let path = format!("/dicomweb/studies/{study}");

    let response = request(gw.http_port, "DELETE", &path, &[], b"").await;
    assert_eq!(response.status, 401);
    let other = tokens::mint_jwt(&idp, |c| c["ura"] = "87654321".into());
    let bearer = format!("Bearer {other}");
    let response = request(
        gw.http_port,
        "DELETE",
        &path,
        &[("Authorization", &bearer)],
        b"",
    )
    .await;
    assert_eq!(response.status, 403, "{}", response.text());
    let record = last_audit(&gw).await;
    assert_eq!(
        (record.operation.as_str(), record.outcome.as_str()),
        ("DELETE", "refused")
    );
    let selection = Selection {
        study_uids: vec![study.clone()],
        ..Default::default()
    };
    assert!(
        gw.context()
            .index
            .count_instances(&selection)
            .await
            .unwrap()
            > 0
    );

    let ours = tokens::mint_jwt(&idp, |_| {});
    let bearer = format!("Bearer {ours}");
    let response = request(
        gw.http_port,
        "DELETE",
        &path,
        &[("Authorization", &bearer)],
        b"",
    )
    .await;
    assert_eq!(response.status, 204, "{}", response.text());
    assert_eq!(
        gw.context()
            .index
            .count_instances(&selection)
            .await
            .unwrap(),
        0
    );
    let record = last_audit(&gw).await;
    assert_eq!(record.organisation_ura, tokens::TEST_URA);
    assert_eq!(record.outcome, "success");
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------------
// beeldbrug delete

#[tokio::test(flavor = "multi_thread")]
async fn cli_delete_removes_rows_and_files_and_is_audited() {
    let gw = Gateway::start("").await;
    let data = tempfile::tempdir().unwrap();
    let files = common::generate(data.path(), false);
    tokio::task::block_in_place(|| storescu(&gw, &files));
    let study = studies(&files)[0].clone();
    let config = gw.dir.path().join("cli.toml");
    std::fs::write(
        &config,
        format!("[storage]\ndata_dir = \"{}\"\n", gw.data_dir().display()),
    )
    .unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_beeldbrug"))
            .args(args)
            .output()
            .expect("run beeldbrug")
    };
    let config_arg = config.to_str().unwrap();
    let out = tokio::task::block_in_place(|| {
        run(&["delete", "-c", config_arg, "--study", study.as_str()])
    });
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n = study_files(&files, &study).len();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("{n} instances")),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let selection = Selection {
        study_uids: vec![study.clone()],
        ..Default::default()
    };
    assert_eq!(
        gw.context()
            .index
            .count_instances(&selection)
            .await
            .unwrap(),
        0
    );
    assert_eq!(files_under(&gw.data_dir().join("blobs").join(&study)), 0);
    assert_eq!(
        tokio::task::block_in_place(|| findscu_matches(&gw, &study)),
        0
    );
    let record = last_audit(&gw).await;
    assert_eq!(record.operation, "DELETE");
    assert_eq!(record.gateway, "beeldbrug-cli");
    assert_eq!(
        record.patient_ids,
        vec![study_files(&files, &study)[0].patient_id.clone()]
    );

    // Nothing matched: an error, nothing audited.
    let out = tokio::task::block_in_place(|| {
        run(&["delete", "-c", config_arg, "--study", study.as_str()])
    });
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing matched"));
    // --instance needs --series.
    let out = tokio::task::block_in_place(|| {
        run(&[
            "delete",
            "-c",
            config_arg,
            "--study",
            "1.2",
            "--instance",
            "1.2.3",
        ])
    });
    assert!(!out.status.success());
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Retention

async fn retention(index_toml: &str) {
    let gw = Gateway::start(&format!("[storage]\nkeep_received_days = 2\n{index_toml}")).await;
    let data = tempfile::tempdir().unwrap();
    let files = common::generate(data.path(), false);
    let all = studies(&files);
    // One study arrives by STOW-RS (another hospital), the rest by C-STORE (our own PACS).
    let received: Vec<GeneratedFile> = files
        .iter()
        .filter(|f| f.study_uid == all[0])
        .cloned()
        .collect();
    let local: Vec<GeneratedFile> = files
        .iter()
        .filter(|f| f.study_uid != all[0])
        .cloned()
        .collect();
    let response = common::http::stow_files(gw.http_port, &received).await;
    assert_eq!(response.status, 200, "{}", response.text());
    tokio::task::block_in_place(|| storescu(&gw, &local));

    let ctx = gw.context();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let expire = |at: i64| {
        beeldbrug::store::retention::expire_received(
            ctx.index.as_ref(),
            &ctx.blobs,
            &ctx.trust.audit,
            2,
            at,
        )
    };
    // A day later: still within two days.
    assert!(expire(now + 86_400).await.unwrap().is_empty());
    assert!(expire(now + 3 * 86_400).await.is_ok());
    let everything = Selection {
        study_uids: all.clone(),
        ..Default::default()
    };
    let left = ctx.index.locate(&everything).await.unwrap();
    assert!(left.iter().all(|l| l.study_instance_uid != all[0]));
    assert_eq!(left.len(), local.len(), "studies stored by C-STORE stay");
    assert_eq!(files_under(&gw.data_dir().join("blobs").join(&all[0])), 0);
    let record = last_audit(&gw).await;
    assert_eq!(record.operation, "DELETE");
    assert_eq!(record.gateway, "beeldbrug-retention");
    assert_eq!(record.study_uids, vec![all[0].clone()]);
    assert_eq!(record.patient_ids, vec![received[0].patient_id.clone()]);
    // Nothing left to expire.
    assert!(expire(now + 30 * 86_400).await.unwrap().is_empty());
    // Keeping for ever (0) deletes nothing.
    assert!(beeldbrug::store::retention::expire_received(
        ctx.index.as_ref(),
        &ctx.blobs,
        &ctx.trust.audit,
        0,
        now + 1000 * 86_400
    )
    .await
    .unwrap()
    .is_empty());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_deletes_received_studies_sqlite() {
    retention("").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_deletes_received_studies_postgres() {
    let db = FreshDatabase::create().await;
    retention(&format!("[storage]\nindex = \"{}\"\n", db.url)).await;
    db.drop_db().await;
}

// ---------------------------------------------------------------------------------------------
// Crash safety

/// A crash after the index transaction and before the files went (simulated by running only
/// the first step): nothing is served meanwhile, and the next start removes the files.
#[tokio::test(flavor = "multi_thread")]
async fn a_restart_finishes_an_interrupted_delete() {
    let gw = Gateway::start("").await;
    let data = tempfile::tempdir().unwrap();
    let files = common::generate(data.path(), false);
    tokio::task::block_in_place(|| storescu(&gw, &files));
    let study = studies(&files)[0].clone();
    let selection = Selection {
        study_uids: vec![study.clone()],
        ..Default::default()
    };
    let removed = gw
        .context()
        .index
        .delete_instances(&selection, 0)
        .await
        .unwrap();
    assert_eq!(removed.len(), study_files(&files, &study).len());
    let blobs = gw.data_dir().join("blobs").join(&study);
    assert!(files_under(&blobs) > 0, "the files are still there");
    assert_eq!(
        curl("GET", &format!("{}/studies/{study}", gw.dicomweb_url())).0,
        404,
        "but not served"
    );
    let data_dir = gw.data_dir();
    let Gateway { running, dir, .. } = gw;
    running.unwrap().stop().await;

    let config = Config::from_toml(&format!(
        "[dimse]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n[storage]\ndata_dir = \"{}\"\n",
        data_dir.display()
    ))
    .unwrap();
    let running = beeldbrug::server::start(config).await.unwrap();
    assert_eq!(files_under(&blobs), 0, "the start removed the files");
    assert!(running
        .context
        .index
        .queued_blob_deletions(10)
        .await
        .unwrap()
        .is_empty());
    running.stop().await;
    drop(dir);
}
