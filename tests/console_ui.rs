//! The operator's console (issue 17) in headless Chromium: `tests/console/run.mjs`, driven by
//! playwright-core (the one `npm ci` in `tests/ohif` installs), against a gateway in gateway
//! mode whose PACS is a real DCMTK dcmqrscp.
//!
//! The PACS is down when a study arrives by STOW-RS, so its forward jobs fail (one attempt);
//! then it comes up with two patients named Müller^Zoë (a 60-slice CT and a 5-slice MR study
//! each). In the browser: without credentials, and with a token that has no admin role, every
//! API route answers 401 and the app shows its login form only; with the admin token each page
//! loads without console errors, `muller` finds Müller^Zoë with non-blank series thumbnails, a
//! WADO-RS retrieve the script starts and reads slowly shows partial progress and then
//! completes, another one is cancelled from the transfers page, the failed forward jobs are re-queued from the queues page and sent, the
//! patient's audit trail shows a verified chain and exports as CSV, the PACS is probed on the
//! peers page. Here: the PACS then holds the forwarded instances.
//!
//! The third test: DCMTK movescu of two studies from the cache to a slow storescp; the page
//! follows the sends (C-MOVE to `DEST`), cancels the first (movescu gets a Cancel status) and
//! sees the second complete. The fourth: a publication failing while the PACS is down is
//! listed failed with why on the queues page and, once the PACS is up, published now.
//!
//! Screenshots: `target/tmp/console-screenshots/` (CARGO_TARGET_TMPDIR). Needs Node.js 20+,
//! `npm ci` in tests/ohif, Debian's `chromium` and DCMTK (`bash .ci/run` installs them).

mod common;
#[path = "common/tokens.rs"]
mod tokens;

use beeldbrug::pacs::forward::RetryPolicy;
use common::dcmqrscp::Dcmqrscp;
use common::{free_port, Gateway};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};
use tokens::{mint_jwt, JwtIdp, TEST_URA};

const PACS_AE: &str = "PACS";
/// The role the test configures as an admin role (`trust.admin_roles`).
const ADMIN_ROLE: &str = "beheerder";

/// The result a console script (`tests/console/SCRIPT`) printed as its last JSON line,
/// checked: the script ran to the end and everything it checked on `page` held. `context`
/// (a peer's log, what a DCMTK tool printed) goes into the message of a failure.
fn passed(
    script: &str,
    page: &str,
    (status, stdout, stderr): (Option<i32>, String, String),
    context: &str,
) -> Value {
    let result: Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!("tests/console/{script} (exit {status:?}) printed no JSON\nstdout: {stdout}\nstderr: {stderr}\n{context}")
        });
    let pretty = serde_json::to_string_pretty(&result).unwrap();
    assert!(
        status == Some(0) && result["ok"] == Value::Bool(true),
        "{page} in Chromium (exit {status:?}): {}\n\nfull result: {pretty}\nstderr: {stderr}\n{context}",
        result["failures"]
    );
    result
}

/// Where the console scripts put their screenshots (test artefacts).
fn screenshots_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots")
}

/// A console script's arguments: the gateway's URL and an admin token of our organisation,
/// the script's own `extra` ones, where screenshots go and its timeout.
fn script_args(gw: &Gateway, idp: &JwtIdp, extra: &[(&str, String)]) -> Vec<String> {
    let admin = mint_jwt(idp, |c| {
        c["role"] = ADMIN_ROLE.into();
        c.as_object_mut().unwrap().remove("bsn");
    });
    let mut args = vec![
        "--base".to_string(),
        format!("http://127.0.0.1:{}", gw.http_port),
        "--admin-token".into(),
        admin,
    ];
    for (flag, value) in extra {
        args.push(flag.to_string());
        args.push(value.clone());
    }
    args.extend([
        "--out".into(),
        screenshots_dir().display().to_string(),
        "--timeout-ms".into(),
        "45000".into(),
    ]);
    args
}

fn require_setup() -> std::path::PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let install = "run `apt-get install -y chromium nodejs npm` and `npm ci` in tests/ohif (or `bash .ci/run`)";
    let node = std::process::Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|o| o.status.success()),
        "Node.js (`node`) is not on PATH: {install}"
    );
    assert!(
        root.join("tests/ohif/node_modules/playwright-core/package.json")
            .exists(),
        "tests/ohif/node_modules/playwright-core is missing: {install}"
    );
    let chromium = std::env::var_os("CHROMIUM")
        .map_or_else(|| "/usr/bin/chromium".into(), std::path::PathBuf::from);
    assert!(
        chromium.exists(),
        "{} is missing: {install}",
        chromium.display()
    );
    root.join("tests/console")
}

/// The gateway-mode configuration of these tests: an admin role of our organisation, XDS
/// publishing, the PACS (not running yet) at `pacs_port`, STOW-RS forwarded to it or not;
/// `extra` adds tables.
fn gateway_mode_toml(idp: &JwtIdp, pacs_port: u16, forward_stow: bool, extra: &str) -> String {
    format!(
        "[trust]\nown_ura = \"{TEST_URA}\"\nadmin_roles = [\"{ADMIN_ROLE}\"]\n{extra}\
         [xds]\nenabled = true\nhome_community_id = \"urn:oid:1.2.3.4.5.17\"\n\
         repository_unique_id = \"1.2.3.4.5.17.1\"\nsource_id = \"1.2.3.4.5.17.2\"\n\
         organisation_name = \"Ziekenhuis Console\"\nquiet_secs = 1\n\
         [pacs]\nae_title = \"{PACS_AE}\"\nhost = \"127.0.0.1\"\nport = {pacs_port}\n\
         retrieve = \"c-get\"\nprobe_at_start = false\nforward_stow = {forward_stow}\n\
         connect_timeout_secs = 2\n{}",
        idp.config_toml()
    )
}

/// The gateway started, its forwards tried once, a second after they are queued.
async fn start_with_quick_forwards(toml: &str) -> Gateway {
    let gw = Gateway::start(toml).await;
    let gateway = gw.context().gateway.clone().expect("gateway mode");
    gateway.pacs.forward.set_policy(RetryPolicy {
        delays: vec![Duration::from_secs(1)],
        max_attempts: 1,
        poll: Duration::from_millis(200),
    });
    gw
}

async fn forward_states(gw: &Gateway) -> Vec<String> {
    gw.context()
        .index
        .forward_jobs(None, 10_000)
        .await
        .expect("forward queue")
        .into_iter()
        .map(|j| j.state)
        .collect()
}

async fn wait_forward(gw: &Gateway, state: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let states = forward_states(gw).await;
        if states.len() == n && states.iter().all(|s| s == state) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "forward jobs not all {state}: {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .expect("PACS storage")
        .filter_map(Result::ok)
        .filter(|e| e.file_name() != "index.dat")
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_in_chromium_searches_follows_requeues_and_refuses_strangers() {
    let script_dir = require_setup();
    let keys = tempfile::tempdir().unwrap();
    let idp = JwtIdp::new(keys.path(), "https://idp.test", "beeldbrug");
    let pacs_port = free_port();
    let gw = start_with_quick_forwards(&gateway_mode_toml(
        &idp,
        pacs_port,
        true,
        "[cache]\nclient_wait_secs = 120\n",
    ))
    .await;

    // A transfer of care arrives while the PACS is down: its forward jobs fail.
    let arriving = tempfile::tempdir().unwrap();
    let mut args = beeldbrug::testdata::GenerateArgs::with_defaults(arriving.path());
    args.seed = 7;
    args.patients = 1;
    args.ct_slices = 2;
    args.mr_slices = 1;
    let stowed = beeldbrug::testdata::generate(&args).expect("generate");
    let r = common::http::stow_files(gw.http_port, &stowed).await;
    assert_eq!(r.status, 200, "STOW-RS: {}", r.text());
    wait_forward(&gw, "failed", stowed.len()).await;

    // The PACS comes up with two patients (Müller^Zoë both).
    let pacs_dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut args = beeldbrug::testdata::GenerateArgs::with_defaults(data.path());
    args.ct_slices = 60;
    args.mr_slices = 5;
    let files = beeldbrug::testdata::generate(&args).expect("generate");
    let pacs = Dcmqrscp::start_on(pacs_port, pacs_dir.path(), PACS_AE, &[], &[]).await;
    {
        let files = files.clone();
        let pacs_ref = &pacs;
        tokio::task::block_in_place(move || pacs_ref.load(&files));
    }
    let loaded = files_in(&pacs.storage);
    // The study the script opens (patient A's MR) and the one it retrieves (patient B's CT).
    let first = files[0].patient_id.clone();
    let study_of = |same_patient: bool, sop_class: &str| {
        files
            .iter()
            .find(|f| (f.patient_id == first) == same_patient && f.sop_class_uid == sop_class)
            .map(|f| f.study_uid.clone())
            .expect("generated study")
    };
    let open_study = study_of(true, "1.2.840.10008.5.1.4.1.1.4");
    let transfer_study = study_of(false, "1.2.840.10008.5.1.4.1.1.2");
    // And the one it cancels (patient A's CT).
    let cancel_study = study_of(true, "1.2.840.10008.5.1.4.1.1.2");

    let other = mint_jwt(&idp, |c| {
        c.as_object_mut().unwrap().remove("bsn");
    });
    let node_args = script_args(
        &gw,
        &idp,
        &[
            ("--other-token", other),
            ("--open-study", open_study),
            ("--transfer-study", transfer_study.clone()),
            ("--cancel-study", cancel_study.clone()),
        ],
    );
    let run = tokio::task::spawn_blocking(move || common::ohif::run_node(&script_dir, &node_args))
        .await
        .unwrap();
    let result = passed(
        "run.mjs",
        "the console",
        run,
        &format!("PACS: {}", pacs.log_tail()),
    );
    let pretty = serde_json::to_string_pretty(&result).unwrap();
    eprintln!(
        "console: {} ms in the browser; screenshots in {}",
        result["t_total_ms"],
        screenshots_dir().display()
    );

    // What the UI showed happened: the re-queued jobs were sent to the PACS.
    wait_forward(&gw, "done", stowed.len()).await;
    assert_eq!(
        files_in(&pacs.storage),
        loaded + stowed.len(),
        "the PACS holds the forwarded instances\n{}",
        pacs.log_tail()
    );
    // The transfer the script followed is complete in the cache.
    assert_eq!(result["transfer_done"]["study"], transfer_study.as_str());
    assert!(
        common::gateway_mode::becomes_complete(gw.context(), &transfer_study).await,
        "{pretty}"
    );
    // The cancelled one is not complete in the cache.
    let cached = gw
        .context()
        .index
        .cached_study(&cancel_study)
        .await
        .unwrap();
    assert!(!cached.is_some_and(|c| c.complete), "{pretty}");
    assert!(
        result["transfer_cancelled"]["state"] == "cancelled",
        "{pretty}"
    );
    // The admin's reads are in the trail: the search (ADMIN, naming the patients), the audit
    // view and its export (AUDIT-READ), the re-queue.
    let events = gw.context().index.audit_events(10_000).await.unwrap();
    let admin_details: Vec<&str> = events
        .iter()
        .filter(|e| e.operation == "ADMIN" && e.outcome == "success")
        .map(|e| e.detail.as_str())
        .collect();
    assert!(
        admin_details
            .iter()
            .any(|d| d.starts_with("console study search")),
        "{admin_details:?}"
    );
    assert!(
        admin_details
            .iter()
            .any(|d| d.contains("failed forward jobs re-queued")),
        "{admin_details:?}"
    );
    assert!(events
        .iter()
        .any(|e| e.operation == "AUDIT-READ" && e.detail.starts_with("console audit export")));
    assert!(
        events
            .iter()
            .any(|e| e.operation == "ADMIN" && e.outcome == "refused"),
        "the strangers' requests were refused on the record"
    );
    gw.stop().await;
}

/// DCMTK `storescp` as the PACS, sleeping `sleep` seconds after each C-STORE (`--sleep-during` would sleep per PDU): a forward runs
/// long enough to be watched and cancelled.
async fn slow_storescp(
    port: u16,
    ae_title: &str,
    out: &Path,
    logs: &Path,
    sleep: u32,
) -> common::peer::PeerProcess {
    std::fs::create_dir_all(out).expect("PACS output dir");
    let args: Vec<String> = [
        "+B",
        "--sleep-after",
        &sleep.to_string(),
        "-aet",
        ae_title,
        "-od",
        &out.display().to_string(),
        &port.to_string(),
    ]
    .map(String::from)
    .to_vec();
    let mut pacs = common::peer::PeerProcess::spawn(
        "storescp",
        &common::require_tool("storescp"),
        &args,
        logs,
    );
    pacs.wait_for_port(port).await;
    pacs
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_follows_forwards_and_publications_and_cancels_a_forward() {
    let script_dir = require_setup();
    let keys = tempfile::tempdir().unwrap();
    let idp = JwtIdp::new(keys.path(), "https://idp.test", "beeldbrug");
    let pacs_port = free_port();
    let gw = start_with_quick_forwards(&gateway_mode_toml(&idp, pacs_port, true, "")).await;

    // Two studies (a CT of 6 slices, an MR of 4) arrive while the PACS is down: their
    // forward jobs fail; the publisher publishes both once they are quiet.
    let arriving = tempfile::tempdir().unwrap();
    let mut args = beeldbrug::testdata::GenerateArgs::with_defaults(arriving.path());
    args.seed = 17;
    args.patients = 1;
    args.ct_slices = 6;
    args.mr_slices = 4;
    let stowed = beeldbrug::testdata::generate(&args).expect("generate");
    let studies: Vec<String> = stowed
        .iter()
        .map(|f| f.study_uid.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(studies.len(), 2);
    let r = common::http::stow_files(gw.http_port, &stowed).await;
    assert_eq!(r.status, 200, "STOW-RS: {}", r.text());
    wait_forward(&gw, "failed", stowed.len()).await;

    // The PACS comes up, slow: a second in each C-STORE.
    let logs = tempfile::tempdir().unwrap();
    let received = logs.path().join("received");
    let pacs = slow_storescp(pacs_port, PACS_AE, &received, logs.path(), 1).await;

    let node_args = script_args(&gw, &idp, &[("--studies", studies.join(","))]);
    let run = tokio::task::spawn_blocking(move || {
        common::ohif::run_script(&script_dir, "forwards.mjs", &node_args)
    })
    .await
    .unwrap();
    let result = passed(
        "forwards.mjs",
        "the transfers page",
        run,
        &format!("PACS: {}", pacs.log_tail()),
    );
    let pretty = serde_json::to_string_pretty(&result).unwrap();

    // What the page showed happened: the completed study's jobs are done, the cancelled
    // one's unsent jobs failed as cancelled (to be re-queued), and the PACS holds exactly
    // what was sent.
    let cancelled = result["cancelled_study"].as_str().expect("cancelled study");
    let completed = result["completed_study"].as_str().expect("completed study");
    let jobs = gw.context().index.forward_jobs(None, 10_000).await.unwrap();
    let of = |study: &str| -> Vec<_> {
        jobs.iter()
            .filter(|j| j.study_instance_uid == study)
            .collect()
    };
    assert!(
        of(completed).iter().all(|j| j.state == "done"),
        "{:#?}",
        of(completed)
    );
    let stopped: Vec<_> = of(cancelled)
        .into_iter()
        .filter(|j| j.state != "done")
        .collect();
    assert!(!stopped.is_empty(), "{pretty}");
    assert!(
        stopped
            .iter()
            .all(|j| j.state == "failed" && j.last_error == beeldbrug::pacs::forward::CANCELLED),
        "{stopped:#?}"
    );
    let done = jobs.iter().filter(|j| j.state == "done").count();
    // The cancelled forward as it ended (the page saw it cancelled while the C-STORE under
    // way still finished).
    let cancelled_id: u64 = result["forward_cancelled"]["id"]
        .as_str()
        .and_then(|n| n.parse().ok())
        .expect("id of the cancelled forward");
    let ended = gw
        .context()
        .core
        .transfers()
        .into_iter()
        .find(|t| t.id == cancelled_id)
        .expect("the cancelled forward is listed");
    assert_eq!(ended.state, "cancelled", "{ended:?}");
    assert!(ended.received < ended.expected, "{ended:?}");
    let sent_cancelled = ended.received;
    assert_eq!(
        done,
        of(completed).len() + sent_cancelled as usize,
        "{pretty}"
    );
    let files = std::fs::read_dir(&received).unwrap().count();
    assert_eq!(
        files,
        done,
        "the PACS holds what was sent\n{}",
        pacs.log_tail()
    );
    // The cancel is on the record.
    let events = gw.context().index.audit_events(10_000).await.unwrap();
    assert!(events
        .iter()
        .any(|e| e.operation == "ADMIN" && e.detail.contains("cancelled")));
    gw.stop().await;
}

/// DCMTK movescu of one study to `destination`, with its output (stdout and stderr).
fn movescu(gw_port: u16, destination: &str, study: &str) -> (Option<i32>, String) {
    let out = std::process::Command::new(common::require_tool("movescu"))
        .args(["-v", "-S", "-aec", "BEELDBRUG", "-aem", destination])
        .args(["-to", "15", "-ta", "30", "-td", "60"])
        .args(["127.0.0.1", &gw_port.to_string()])
        .args(["-k", "QueryRetrieveLevel=STUDY"])
        .args(["-k", &format!("StudyInstanceUID={study}")])
        .output()
        .expect("run movescu");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_follows_a_c_move_to_a_slow_destination_and_cancels_one() {
    let script_dir = require_setup();
    let keys = tempfile::tempdir().unwrap();
    let idp = JwtIdp::new(keys.path(), "https://idp.test", "beeldbrug");
    let dest_port = free_port();
    let toml = format!(
        "[trust]\nown_ura = \"{TEST_URA}\"\nadmin_roles = [\"{ADMIN_ROLE}\"]\n\
         [[dimse.peers]]\nae_title = \"DEST\"\nhost = \"127.0.0.1\"\nport = {dest_port}\n\
         {}",
        idp.config_toml()
    );
    let gw = Gateway::start(&toml).await;
    // A CT of 20 slices (the one cancelled) and an MR of 3 (the one sent whole), in the cache.
    let data = tempfile::tempdir().unwrap();
    let mut args = beeldbrug::testdata::GenerateArgs::with_defaults(data.path());
    args.seed = 23;
    args.patients = 1;
    args.ct_slices = 20;
    args.mr_slices = 3;
    let files = beeldbrug::testdata::generate(&args).expect("generate");
    let r = common::http::stow_files(gw.http_port, &files).await;
    assert_eq!(r.status, 200, "STOW-RS: {}", r.text());
    let study_with = |n: usize| {
        let mut counts = std::collections::BTreeMap::<&str, usize>::new();
        for f in &files {
            *counts.entry(f.study_uid.as_str()).or_default() += 1;
        }
        counts
            .into_iter()
            .find(|(_, c)| *c == n)
            .map(|(s, _)| s.to_string())
            .expect("generated study")
    };
    let (cancel_study, complete_study) = (study_with(20), study_with(3));

    // The destination: a second after each C-STORE.
    let logs = tempfile::tempdir().unwrap();
    let received = logs.path().join("received");
    let dest = slow_storescp(dest_port, "DEST", &received, logs.path(), 1).await;

    // movescu of the CT, then (once it ended) of the MR, while the page watches.
    let port = gw.port;
    let moves = {
        let (a, b) = (cancel_study.clone(), complete_study.clone());
        tokio::task::spawn_blocking(move || (movescu(port, "DEST", &a), movescu(port, "DEST", &b)))
    };
    let node_args = script_args(
        &gw,
        &idp,
        &[
            ("--cancel-study", cancel_study.clone()),
            ("--complete-study", complete_study.clone()),
        ],
    );
    let run = tokio::task::spawn_blocking(move || {
        common::ohif::run_script(&script_dir, "sends.mjs", &node_args)
    })
    .await
    .unwrap();
    let ((_, first), (_, second)) = moves.await.unwrap();
    passed(
        "sends.mjs",
        "the transfers page",
        run,
        &format!(
            "movescu: {first}\n{second}\ndestination: {}",
            dest.log_tail()
        ),
    );

    // What the page showed happened: the requestor of the cancelled move got a Cancel
    // final status, the other a Success; the destination holds what was sent.
    assert!(
        first.contains("Final Move Response (Cancel"),
        "movescu of the cancelled study: {first}"
    );
    assert!(
        second.contains("Final Move Response (Success)"),
        "movescu of the other study: {second}"
    );
    let transfers = gw.context().core.transfers();
    let sent = |study: &str| {
        transfers
            .iter()
            .find(|t| t.kind == "send" && t.study_uids == [study])
            .unwrap_or_else(|| panic!("no send of {study}: {transfers:#?}"))
    };
    let (cancelled, complete) = (sent(&cancel_study), sent(&complete_study));
    assert_eq!(
        (cancelled.state, complete.state),
        ("cancelled", "complete"),
        "{transfers:#?}"
    );
    assert!(
        cancelled.received > 0 && cancelled.received < 20,
        "{cancelled:?}"
    );
    assert_eq!((complete.received, complete.expected), (3, 3));
    let files = std::fs::read_dir(&received).unwrap().count() as u64;
    assert_eq!(
        files,
        cancelled.received + 3,
        "the destination holds what was sent\n{}",
        dest.log_tail()
    );
    // The cancel is on the record.
    let events = gw.context().index.audit_events(10_000).await.unwrap();
    assert!(events
        .iter()
        .any(|e| e.operation == "ADMIN" && e.detail.contains("cancelled")));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_publication_shows_why_and_is_published_now_from_the_queues_page() {
    let script_dir = require_setup();
    let keys = tempfile::tempdir().unwrap();
    let idp = JwtIdp::new(keys.path(), "https://idp.test", "beeldbrug");
    let pacs_port = free_port();
    let gw = Gateway::start(&gateway_mode_toml(&idp, pacs_port, false, "")).await;
    // A study arrives while the PACS is down: in gateway mode its publication asks the PACS
    // what it holds of the study, and fails.
    let arriving = tempfile::tempdir().unwrap();
    let mut args = beeldbrug::testdata::GenerateArgs::with_defaults(arriving.path());
    args.seed = 29;
    args.patients = 1;
    args.ct_slices = 2;
    args.mr_slices = 1;
    let stowed = beeldbrug::testdata::generate(&args).expect("generate");
    let study = stowed
        .iter()
        .find(|f| f.sop_class_uid == "1.2.840.10008.5.1.4.1.1.2")
        .map(|f| f.study_uid.clone())
        .expect("a CT");
    let r = common::http::stow_files(gw.http_port, &stowed).await;
    assert_eq!(r.status, 200, "STOW-RS: {}", r.text());

    // The PACS comes up once four attempts failed (the publisher then waits 8 s).
    let board = gw.context().core.transfer_board();
    let pacs_dir = tempfile::tempdir().unwrap();
    let pacs = {
        let (board, study) = (board.clone(), study.clone());
        let dir = pacs_dir.path().to_path_buf();
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while board.failing(&study).is_none_or(|f| f.attempts < 4) {
                assert!(
                    Instant::now() < deadline,
                    "the publication did not fail 4 times"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Dcmqrscp::start_on(pacs_port, &dir, PACS_AE, &[], &[]).await
        })
    };

    let node_args = script_args(&gw, &idp, &[("--study", study.clone())]);
    let run = tokio::task::spawn_blocking(move || {
        common::ohif::run_script(&script_dir, "publications.mjs", &node_args)
    })
    .await
    .unwrap();
    let pacs = pacs.await.expect("the PACS started");
    let result = passed(
        "publications.mjs",
        "the queues page",
        run,
        &format!("PACS: {}", pacs.log_tail()),
    );
    let pretty = serde_json::to_string_pretty(&result).unwrap();
    // What the page showed happened: the study is published, its failures cleared, and
    // the operator's request is on the record.
    let publication = gw.context().index.publication(&study).await.unwrap();
    assert!(publication.is_some_and(|p| p.published_at > 0), "{pretty}");
    assert!(board.failing(&study).is_none());
    let events = gw.context().index.audit_events(10_000).await.unwrap();
    let wanted = format!("console: publication of study {study} asked for now");
    assert!(
        events
            .iter()
            .any(|e| e.operation == "ADMIN" && e.detail.starts_with(&wanted)),
        "{wanted} not on the record"
    );
    gw.stop().await;
}
