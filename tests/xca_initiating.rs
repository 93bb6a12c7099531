//! The XCA-I initiating gateway (issue 15) between two beeldbrug gateways, A and B, each
//! with its own certificate from the test CA, its own participant list naming the other,
//! mutual TLS between them, and its own XUA: A issues assertions for its local users, B
//! trusts A's issuer for A's certificate only. B holds a study (stored by DCMTK storescu)
//! and publishes it (KOS, XDS registry); B asks `beeldbrug mitz-sim` for consent.
//!
//! - A workstation (DCMTK findscu, as an AE configured at A with UZI, role and purpose of
//!   use) C-FINDs gateway A by Patient ID (the BSN) and finds B's study: A asked B by
//!   ITI-38 with an assertion for that user.
//! - movescu C-MOVEs it from A to DCMTK storescp: A fetches the manifest by ITI-39 and the
//!   instances by RAD-75 over mTLS, streamed into its cache and on by C-STORE; storescp
//!   receives every instance byte-exact (data set and transfer syntax as stored at B).
//! - Both ends audit: A one record per outgoing call naming its user, the peer and the
//!   patient; B the incoming ITI-38 / ITI-39 / RAD-75 as A's gateway.
//! - After a restart of A the C-MOVE still finds B (the study is remembered on disk).
//! - Refusals: an AE without user claims gets no remote studies and B sees no call; a peer
//!   that accepts the connection and never answers makes the C-FIND partial (a failure
//!   status after the rows) within the timeout; B's certificate revoked: B is not called.

mod common;
#[path = "common/mitz.rs"]
mod mitz;
#[path = "common/otlp.rs"]
mod otlp;
#[path = "common/tls_front.rs"]
mod tls_front;
#[path = "common/tokens.rs"]
mod tokens;
#[path = "common/two_hospitals.rs"]
mod two_hospitals;

use beeldbrug::trust::consent::ConsentDecision;
use common::gateway_mode::{
    audit_details, becomes_complete, dataset_of, pacs_toml, syntax_of, AS_STORED,
};
use common::http::{multipart_parts, request};
use common::orthanc::Orthanc;
use common::peer::PeerProcess;
use common::pki::{participant, tls_toml, CertFiles, Pki};
use common::{free_port, require_tool, Gateway};
use mitz::MitzSim;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tls_front::TlsFront;
use tokens::{mint_jwt, JwtIdp, KeyKind, SamlIdp, TEST_PURPOSE, TEST_ROLE, TEST_UZI};
use two_hospitals::{
    b_toml, b_with_orthanc, hospital_b, orthanc_holds, study_sized, Held, BSN, HOME_A, HOME_B,
    ISSUER_A, URA_A, URA_B,
};
/// The workstation at A (a local user: UZI, role, purpose of use configured), the C-MOVE
/// destination, and an AE without user claims.
const WORKSTATION: &str = "WORKSTATION";
const DEST: &str = "DEST";
const ANONYMOUS: &str = "ANONYMOUS";
const TIMEOUTS: [&str; 6] = ["-to", "15", "-ta", "30", "-td", "60"];
/// `[remote] timeout_secs` at A.
const PEER_TIMEOUT_SECS: u64 = 3;
/// A's `[remote] max_instance_bytes`: larger than any test instance.
const MAX_INSTANCE_BYTES: u64 = 4 << 20;

/// Gateway A's configuration: the remote source on, our assertion issuer, the workstation
/// as a local user, the C-MOVE destination.
fn a_toml(
    pki: &Pki,
    cert: &CertFiles,
    participants: &Path,
    idp: &SamlIdp,
    dest_port: u16,
) -> String {
    a_toml_localised(pki, cert, participants, idp, dest_port, None)
}

/// [`a_toml`], with `localisation = "mitz"` at `mitz` when given.
fn a_toml_localised(
    pki: &Pki,
    cert: &CertFiles,
    participants: &Path,
    idp: &SamlIdp,
    dest_port: u16,
    mitz: Option<&MitzSim>,
) -> String {
    let (localisation, consent) = match mitz {
        Some(mitz) => ("mitz", mitz.config_toml()),
        None => ("participants", String::new()),
    };
    format!(
        "{tls}[trust]\nown_ura = \"{URA_A}\"\n[trust.saml]\nissuer = \"{ISSUER_A}\"\nsigning_cert_file = \"{}\"\nsigning_key_file = \"{}\"\n\
         [remote]\nenabled = true\ntimeout_secs = {PEER_TIMEOUT_SECS}\nlocalisation = \"{localisation}\"\nmax_instance_bytes = {MAX_INSTANCE_BYTES}\n\
         [[dimse.peers]]\nae_title = \"{WORKSTATION}\"\nhost = \"127.0.0.1\"\nport = 1\norganisation_ura = \"{URA_A}\"\n\
         role = \"{TEST_ROLE}\"\npurpose_of_use = \"{TEST_PURPOSE}\"\nuzi = \"{TEST_UZI}\"\n\
         [[dimse.peers]]\nae_title = \"{DEST}\"\nhost = \"127.0.0.1\"\nport = {dest_port}\n{consent}",
        idp.cert_pem.display(),
        idp.key_pem.display(),
        tls = tls_toml(pki, cert, participants),
    )
}

/// Run a DCMTK tool on a blocking thread: (success, stdout + stderr).
async fn dcmtk(tool: &'static str, args: Vec<String>) -> (bool, String) {
    let out = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        common::dcmtk(tool, &args)
    })
    .await
    .expect("blocking task");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn scu_args(aet: &str, port: u16, options: &[&str], keys: &[String]) -> Vec<String> {
    let mut args: Vec<String> = ["-aet", aet, "-aec", "BEELDBRUG"]
        .iter()
        .chain(TIMEOUTS.iter())
        .chain(options)
        .map(|s| s.to_string())
        .collect();
    for k in keys {
        args.extend(["-k".to_string(), k.clone()]);
    }
    args.extend(["127.0.0.1".to_string(), port.to_string()]);
    args
}

/// C-FIND at the gateway on `port` by the BSN until it finds exactly `study` (B publishes
/// after a quiet period), at most a minute.
async fn wait_until_found(port: u16, study: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (studies, success, text) = find_studies(WORKSTATION, port).await;
        assert!(success, "findscu at A:\n{text}");
        if studies == [study] {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "B's study never found through A:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `movescu` of `study` as `aet` at the gateway on `port` to [`DEST`]: whether it ended in
/// a final Success, and the tool's output.
async fn move_study(aet: &str, port: u16, study: &str) -> (bool, String) {
    let keys = vec![
        "QueryRetrieveLevel=STUDY".to_string(),
        format!("StudyInstanceUID={study}"),
    ];
    let mut options = vec!["-v", "-S", "-aem", DEST];
    options.extend(TIMEOUTS);
    let (ok, out) = dcmtk("movescu", scu_args(aet, port, &options, &keys)).await;
    (
        ok && out.contains("Received Final Move Response (Success)"),
        out,
    )
}

/// A Study Root C-FIND at STUDY level by Patient ID: (the Study Instance UIDs found, the
/// final status line seen, the whole output).
async fn find_studies(aet: &str, port: u16) -> (Vec<String>, bool, String) {
    find_studies_of(aet, port, BSN).await
}

/// [`find_studies`] of patient `bsn`.
async fn find_studies_of(aet: &str, port: u16, bsn: &str) -> (Vec<String>, bool, String) {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().display().to_string();
    let keys = vec![
        "QueryRetrieveLevel=STUDY".to_string(),
        format!("PatientID={bsn}"),
        "StudyInstanceUID".to_string(),
        "StudyDate".to_string(),
        "ModalitiesInStudy".to_string(),
    ];
    let (_, text) = dcmtk(
        "findscu",
        scu_args(aet, port, &["-v", "-S", "-X", "-od", &dir], &keys),
    )
    .await;
    let success = text.contains("Received Final Find Response (Success)");
    let mut studies: Vec<String> = files_under(out.path())
        .iter()
        .map(|p| {
            let obj = dicom_object::open_file(p).unwrap();
            obj.element(dicom_dictionary_std::tags::STUDY_INSTANCE_UID)
                .unwrap()
                .to_str()
                .unwrap()
                .trim_end_matches(['\0', ' '])
                .to_string()
        })
        .collect();
    studies.sort();
    (studies, success, text)
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn part10_under(dir: &Path) -> Held {
    files_under(dir)
        .into_iter()
        .filter_map(|p| std::fs::read(p).ok())
        .filter(|bytes| bytes.len() > 132 && &bytes[128..132] == b"DICM")
        .map(|bytes| {
            let (uid, dataset) = dataset_of(&bytes);
            (uid, (syntax_of(&bytes), dataset))
        })
        .collect()
}

/// DCMTK storescp as the C-MOVE destination, bit-preserving.
async fn storescp(dir: &Path, port: u16) -> (PeerProcess, PathBuf) {
    let received = dir.join("storescp-received");
    std::fs::create_dir_all(&received).unwrap();
    let args: Vec<String> = vec![
        "+B".into(),
        "+xa".into(),
        "-aet".into(),
        DEST.into(),
        "-od".into(),
        received.display().to_string(),
        port.to_string(),
    ];
    let mut process = PeerProcess::spawn("storescp", &require_tool("storescp"), &args, dir);
    process.wait_for_port(port).await;
    (process, received)
}

/// The study's instances as generated (the BSN set by dcmodify): what B holds.
fn study_files(dir: &Path) -> (String, Held) {
    study_files_of(dir, BSN)
}

/// A study of patient `bsn` (its UIDs from a seed of its BSN: two patients, two studies).
fn study_files_of(dir: &Path, bsn: &str) -> (String, Held) {
    let mut args = beeldbrug::testdata::GenerateArgs::with_defaults(dir.to_path_buf());
    if bsn != BSN {
        args.seed = bsn.parse().unwrap();
    }
    args.patients = 1;
    // More than a fetch's first RAD-75 request takes (4): the rest comes in a second
    // request, sent while the first answer's last parts are read.
    args.ct_slices = 7;
    args.mr_slices = 0;
    args.frame_size = 32;
    let files = beeldbrug::testdata::generate(&args).unwrap();
    for f in &files {
        let set = format!("(0010,0020)={bsn}");
        let out = common::dcmtk("dcmodify", &["-nb", "-m", &set, f.path.to_str().unwrap()]);
        assert!(out.status.success(), "dcmodify: {out:?}");
    }
    let study = files[0].study_uid.clone();
    assert!(files.iter().all(|f| f.study_uid == study), "one study");
    (study, part10_under(dir))
}

/// Add an encapsulated PDF of [`REPORT_PDF`] (DCMTK `pdf2dcm`, the study's attributes from
/// one of its files) to the study in `dir`: what `dir` holds then.
fn with_pdf_report(dir: &Path) -> Held {
    let first = files_under(dir)
        .into_iter()
        .next()
        .expect("a file of the study");
    let pdf = dir.with_extension("pdf");
    std::fs::write(&pdf, REPORT_PDF).unwrap();
    let out = common::dcmtk(
        "pdf2dcm",
        &[
            "--title",
            "Verslag",
            "--study-from",
            first.to_str().unwrap(),
            pdf.to_str().unwrap(),
            dir.join("report.dcm").to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "pdf2dcm: {out:?}");
    part10_under(dir)
}

/// A TCP listener that accepts connections and never says a word (a hanging peer), and
/// how many connections it accepted.
async fn silent_peer() -> (u16, tokio::task::JoinHandle<()>, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::Relaxed);
            held.push(socket);
        }
    });
    (port, task, accepted)
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_a_finds_and_moves_a_study_that_gateway_b_holds() {
    let dir = tempfile::tempdir().unwrap();
    let (study, _) = study_files(&dir.path().join("study"));
    // B's report of the study (an encapsulated PDF): B publishes it as a document of its
    // own and references it in the manifest, so A fetches it by RAD-75 with the images.
    let held = with_pdf_report(&dir.path().join("study"));
    let pki = Pki::new();
    let cert_a = pki.issue_server("gateway-a", &["127.0.0.1", "localhost"]);
    let cert_b = pki.issue_server("gateway-b", &["127.0.0.1", "localhost"]);
    let idp_a = SamlIdp::new(dir.path(), ISSUER_A, KeyKind::Rsa);
    let mitz = MitzSim::start(&[(BSN, ConsentDecision::Permit)]);

    // B: its participant list names A (no endpoints: B does not call A here).
    let participants_b = dir.path().join("participants-b.toml");
    std::fs::write(
        &participants_b,
        participant("GtK A", URA_A, HOME_A, &cert_a, None),
    )
    .unwrap();
    let b = Gateway::start(&b_toml(&pki, &cert_b, &participants_b, &idp_a, &mitz)).await;
    b.store_dir(&dir.path().join("study"));
    let base_b = format!("https://127.0.0.1:{}", b.http_port);

    // A: its participant list names B with B's endpoints.
    let participants_a = dir.path().join("participants-a.toml");
    std::fs::write(
        &participants_a,
        participant("GtK B", URA_B, HOME_B, &cert_b, Some(&base_b)),
    )
    .unwrap();
    let dest_port = free_port();
    let (_scp, received) = storescp(dir.path(), dest_port).await;
    let data_a = dir.path().join("data-a");
    let toml_a = a_toml(&pki, &cert_a, &participants_a, &idp_a, dest_port);
    let a = Gateway::start_in(&data_a, &toml_a).await;

    // C-FIND at A by the BSN, until B has published the study (1 s quiet period).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (studies, success, text) = find_studies(WORKSTATION, a.port).await;
        assert!(success, "findscu at A:\n{text}");
        if studies == std::slice::from_ref(&study) {
            break;
        }
        assert!(studies.is_empty(), "only B's study: {studies:?}");
        assert!(
            Instant::now() < deadline,
            "B's study never found through A:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // No user claims at A: nothing remote, and B sees no call.
    let queries_at_b = audit_details(b.context(), "ITI-38").await.len();
    let (studies, _, text) = find_studies(ANONYMOUS, a.port).await;
    assert!(
        studies.is_empty(),
        "an AE without user claims sees no remote study:\n{text}"
    );
    assert_eq!(
        audit_details(b.context(), "ITI-38").await.len(),
        queries_at_b,
        "no outgoing call"
    );

    // C-MOVE at A to storescp: the instances B holds, byte-exact.
    let keys = vec![
        "QueryRetrieveLevel=STUDY".to_string(),
        format!("StudyInstanceUID={study}"),
    ];
    let mut options = vec!["-v", "-S", "-aem", DEST];
    options.extend(TIMEOUTS);
    let (ok, out) = dcmtk("movescu", scu_args(WORKSTATION, a.port, &options, &keys)).await;
    assert!(
        ok && out.contains("Received Final Move Response (Success)"),
        "movescu at A:\n{out}"
    );
    let got = part10_under(&received);
    assert_eq!(got.len(), held.len(), "every instance B holds");
    for (uid, (syntax, data)) in &held {
        let (got_syntax, got_data) = got.get(uid).unwrap_or_else(|| panic!("{uid} not moved"));
        assert_eq!(got_syntax, syntax, "{uid}: transfer syntax as stored");
        assert!(got_data == data, "{uid}: data set bytes as stored");
    }

    // B's report entry is known with the study; its manifest references the report, so
    // it came by RAD-75 with the images: one ITI-39 (the manifest), none for the report.
    let remembered = std::fs::read_to_string(beeldbrug::remote::studies_file(&data_a)).unwrap();
    assert!(
        remembered.contains("\"reports\"") && remembered.contains("application/pdf"),
        "B's report is known with its study: {remembered}"
    );
    assert_eq!(
        audit_details(a.context(), "ITI-39").await.len(),
        1,
        "the manifest only"
    );

    // Audit at A: the outgoing calls, each naming our user and the peer; at B the
    // incoming ones as A's gateway.
    let ctx_a = a.context();
    for (operation, count) in [("ITI-38", 1), ("ITI-39", 1), ("RAD-75", 1)] {
        let records = audit_details(ctx_a, operation).await;
        assert!(records.len() >= count, "{operation} at A: {records:?}");
        assert!(
            records
                .iter()
                .all(|(o, d)| o == "success" && d.contains("outgoing to GtK B")),
            "{operation} at A: {records:?}"
        );
    }
    let events_a = ctx_a.index.audit_events(10_000).await.unwrap();
    let outgoing = events_a.iter().find(|e| e.operation == "RAD-75").unwrap();
    assert_eq!(outgoing.actor, WORKSTATION, "the local user's AE is named");
    assert_eq!(outgoing.patient_ids, BSN, "and the patient");
    let ctx_b = b.context();
    for operation in ["ITI-38", "ITI-39", "RAD-75"] {
        let records = audit_details(ctx_b, operation).await;
        assert!(
            !records.is_empty() && records.iter().all(|(o, _)| o == "success"),
            "{operation} at B: {records:?}"
        );
    }
    let events_b = ctx_b.index.audit_events(10_000).await.unwrap();
    assert!(
        events_b
            .iter()
            .filter(|e| e.operation == "RAD-75")
            .all(|e| e.actor == "GtK A"),
        "B records A's gateway: {events_b:?}"
    );

    // One exchange followed from A's audit record to B's (issue 17 item 2): every outgoing
    // call's record at A carries the correlation id the call sent, and B's record of that
    // call carries the same one.
    let records_a = ctx_a.index.audit_records(0, 100_000).await.unwrap();
    let records_b = ctx_b.index.audit_records(0, 100_000).await.unwrap();
    for operation in ["ITI-38", "ITI-39", "RAD-75"] {
        let outgoing: Vec<_> = records_a
            .iter()
            .filter(|r| r.operation == operation && r.detail.contains("outgoing to GtK B"))
            .collect();
        assert!(!outgoing.is_empty(), "{operation} at A");
        for r in outgoing {
            assert!(
                !r.correlation_id.is_empty(),
                "{operation} at A has a correlation id: {r:?}"
            );
            assert!(
                records_b.iter().any(|at_b| at_b.operation == operation
                    && at_b.gateway == "GtK A"
                    && at_b.correlation_id == r.correlation_id),
                "{operation}: B's record carries A's correlation id {}: {records_b:#?}",
                r.correlation_id
            );
        }
    }
    // Real traffic per peer (issue 17 item 3): A's chain view counts the calls to B, their
    // failures and latencies, and the metrics have them.
    let chain = ctx_a.chain.snapshot();
    let traffic = chain["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == "gateway" && p["name"] == "GtK B")
        .map(|p| p["traffic"].clone())
        .unwrap_or_else(|| panic!("GtK B in the chain view: {chain:#}"));
    // (The metrics are the process's: other tests here call a "GtK B" of their own.)
    let calls = traffic["calls"].as_u64().unwrap();
    assert!(calls >= 3, "{traffic:#}");
    assert!(
        traffic["failures"].as_u64().unwrap() < calls
            && traffic["error_rate"].as_f64().unwrap() < 1.0,
        "{traffic:#}"
    );
    assert!(traffic["last_call"].is_string(), "{traffic:#}");
    let metrics = beeldbrug::metrics::render();
    for call in ["iti38", "iti39", "rad75"] {
        let line = format!(
            "beeldbrug_peer_calls_total{{kind=\"gateway\",peer=\"GtK B\",call=\"{call}\",outcome=\"ok\"}}"
        );
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
    assert!(metrics
        .contains("beeldbrug_peer_call_duration_seconds_count{kind=\"gateway\",peer=\"GtK B\"}"));

    // A hanging peer: the C-FIND answers with the study (B's row, and A's cache now holds
    // it too) and a failure status (incomplete) within the timeout.
    let (silent_port, _silent, _) = silent_peer().await;
    let mut list = participant("GtK B", URA_B, HOME_B, &cert_b, Some(&base_b));
    list.push_str(&participant(
        "GtK Stil",
        "33330000",
        "urn:oid:1.2.3.4.5.23",
        &pki.issue_server("gateway-stil", &["127.0.0.1"]),
        Some(&format!("https://127.0.0.1:{silent_port}")),
    ));
    std::fs::write(&participants_a, list).unwrap();
    ctx_a.trust.participants.reload(&participants_a).unwrap();
    let started = Instant::now();
    let (studies, success, text) = find_studies(WORKSTATION, a.port).await;
    let took = started.elapsed();
    assert_eq!(
        studies,
        std::slice::from_ref(&study),
        "the study once:\n{text}"
    );
    assert!(!success, "the answer is marked incomplete:\n{text}");
    assert!(
        took < Duration::from_secs(PEER_TIMEOUT_SECS + 5),
        "within the timeout: {took:?}"
    );
    let failed: Vec<_> = audit_details(ctx_a, "ITI-38")
        .await
        .into_iter()
        .filter(|(o, d)| o == "failure" && d.contains("GtK Stil"))
        .collect();
    assert_eq!(failed.len(), 1, "the hanging peer is audited");
    let chain = ctx_a.chain.snapshot();
    let stil = chain["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == "gateway" && p["name"] == "GtK Stil")
        .map(|p| p["traffic"].clone())
        .unwrap_or_else(|| panic!("GtK Stil in the chain view: {chain:#}"));
    assert_eq!(stil["calls"], 1, "{stil:#}");
    assert_eq!(stil["error_rate"], 1.0, "{stil:#}");
    assert!(
        stil["mean_latency_ms"].as_u64().unwrap() >= 1000 * (PEER_TIMEOUT_SECS - 1),
        "the timeout's latency: {stil:#}"
    );
    assert!(stil["last_failure"]["error"]
        .as_str()
        .unwrap()
        .starts_with("iti38: "));

    // A restarted with an empty cache and only what it remembered of other gateways'
    // studies: a C-MOVE by Study Instance UID alone still finds B and fetches from it.
    std::fs::write(
        &participants_a,
        participant("GtK B", URA_B, HOME_B, &cert_b, Some(&base_b)),
    )
    .unwrap();
    a.stop().await;
    let data_a2 = dir.path().join("data-a2");
    std::fs::create_dir_all(&data_a2).unwrap();
    std::fs::copy(
        beeldbrug::remote::studies_file(&data_a),
        beeldbrug::remote::studies_file(&data_a2),
    )
    .expect("A remembers B's study on disk");
    let a = Gateway::start_in(&data_a2, &toml_a).await;
    std::fs::remove_dir_all(&received).unwrap();
    std::fs::create_dir_all(&received).unwrap();
    // First the AE without user claims: A knows where the study is, but fetches nothing
    // for it (B sees no ITI-39 or RAD-75; nothing reaches the destination).
    let retrieves_at_b = |ctx| async move {
        audit_details(ctx, "ITI-39").await.len() + audit_details(ctx, "RAD-75").await.len()
    };
    let before = retrieves_at_b(b.context()).await;
    // (The C-MOVE matches nothing it may fetch: a Success with no sub-operation.)
    let (_, out) = dcmtk("movescu", scu_args(ANONYMOUS, a.port, &options, &keys)).await;
    assert!(
        part10_under(&received).is_empty(),
        "no user claims: nothing moved:\n{out}"
    );
    assert_eq!(
        retrieves_at_b(b.context()).await,
        before,
        "no user claims: no outgoing retrieve"
    );
    let (ok, out) = dcmtk("movescu", scu_args(WORKSTATION, a.port, &options, &keys)).await;
    assert!(
        ok && out.contains("Received Final Move Response (Success)"),
        "movescu after a restart:\n{out}"
    );
    assert_eq!(
        part10_under(&received).len(),
        held.len(),
        "every instance again, from B"
    );

    // B's certificate revoked (the CRL on disk, read for every call): A does not call B; the
    // C-FIND answers from A's cache, marked incomplete.
    let queries_at_b = audit_details(b.context(), "ITI-38").await.len();
    pki.write_crl(&[&pki.revoked, &cert_b]);
    let (studies, success, text) = find_studies(WORKSTATION, a.port).await;
    assert_eq!(
        studies,
        std::slice::from_ref(&study),
        "from A's cache:\n{text}"
    );
    assert!(!success, "marked incomplete:\n{text}");
    assert_eq!(
        audit_details(b.context(), "ITI-38").await.len(),
        queries_at_b,
        "a revoked peer is not called"
    );

    a.stop().await;
    b.stop().await;
}

/// The other BSN (passes the 11-test): its consent row at B is Deny.
const BSN_DENIED: &str = "123456782";
const URA_C: &str = "33330000";

/// `[remote] localisation = "mitz"`: A asks mitz-sim's open question before it fans out and
/// queries only the gateways named (REFERENCE §2). The consent table names B as the holder
/// of both patients' data, Permit for one, Deny for the other; a third participant C (a
/// gateway that would hang) is never named.
///
/// - The permitted patient: A asks Mitz, then B only; the study is found, the answer
///   complete (C, which would hang, is not called), A audits the open question and its
///   ITI-38 to B, B audits A's query.
/// - The denied patient: Mitz names nobody; nothing is found, B sees no call, A's patient
///   trail (what `beeldbrug audit --bsn` lists) shows the open question and no ITI-38.
/// - The same patient asked by a gateway A' that does not localise (`"participants"`): B
///   asks Mitz's closed question, gets Deny and releases nothing; both trails show it.
#[tokio::test(flavor = "multi_thread")]
async fn mitz_localisation_queries_only_the_gateways_named() {
    let dir = tempfile::tempdir().unwrap();
    let (study, _) = study_files_of(&dir.path().join("permitted"), BSN);
    let (denied_study, _) = study_files_of(&dir.path().join("denied"), BSN_DENIED);
    let pki = Pki::new();
    let cert_a = pki.issue_server("gateway-a", &["127.0.0.1", "localhost"]);
    let cert_b = pki.issue_server("gateway-b", &["127.0.0.1", "localhost"]);
    let cert_c = pki.issue_server("gateway-c", &["127.0.0.1"]);
    let idp_a = SamlIdp::new(dir.path(), ISSUER_A, KeyKind::Rsa);
    let mitz = MitzSim::start_table(&format!(
        "[[consent]]\nbsn = \"{BSN}\"\nholder_ura = \"{URA_B}\"\ndecision = \"Permit\"\n\n\
         [[consent]]\nbsn = \"{BSN_DENIED}\"\nholder_ura = \"{URA_B}\"\ndecision = \"Deny\"\n"
    ));

    let participants_b = dir.path().join("participants-b.toml");
    std::fs::write(
        &participants_b,
        participant("GtK A", URA_A, HOME_A, &cert_a, None),
    )
    .unwrap();
    let b = Gateway::start(&b_toml(&pki, &cert_b, &participants_b, &idp_a, &mitz)).await;
    b.store_dir(&dir.path().join("permitted"));
    b.store_dir(&dir.path().join("denied"));
    let base_b = format!("https://127.0.0.1:{}", b.http_port);

    let (silent_port, _silent, c_calls) = silent_peer().await;
    let participants_a = dir.path().join("participants-a.toml");
    let mut list = participant("GtK B", URA_B, HOME_B, &cert_b, Some(&base_b));
    list.push_str(&participant(
        "GtK C",
        URA_C,
        "urn:oid:1.2.3.4.5.23",
        &cert_c,
        Some(&format!("https://127.0.0.1:{silent_port}")),
    ));
    std::fs::write(&participants_a, &list).unwrap();
    let toml_a = a_toml_localised(&pki, &cert_a, &participants_a, &idp_a, 1, Some(&mitz));
    let a = Gateway::start(&toml_a).await;

    // The permitted patient: found at B (once B has published), complete: C not asked.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (studies, success, text) = find_studies(WORKSTATION, a.port).await;
        assert!(success, "complete (C is not asked):\n{text}");
        if studies == std::slice::from_ref(&study) {
            break;
        }
        assert!(studies.is_empty(), "only B's study: {studies:?}");
        if Instant::now() > deadline {
            panic!(
                "never found through A:\n{text}\nA: {:#?}\nB: {:#?}",
                a.context().index.audit_events(10_000).await.unwrap(),
                b.context().index.audit_events(10_000).await.unwrap()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(c_calls.load(Ordering::Relaxed), 0, "C is never called");
    assert!(mitz.open_queries() >= 1, "A asked the open question");
    let trail_a = a
        .context()
        .trust
        .audit
        .patient_trail(BSN, 1000)
        .await
        .unwrap();
    let located: Vec<_> = trail_a
        .records
        .iter()
        .filter(|r| r.operation == "MITZ-OPEN-QUESTION")
        .collect();
    assert!(
        located.iter().any(|r| r.outcome == "success"
            && r.detail.contains("outgoing to Mitz")
            && r.detail.contains("asking [GtK B]")),
        "A audits the open question: {located:?}"
    );
    assert!(
        trail_a
            .records
            .iter()
            .filter(|r| r.operation == "ITI-38")
            .all(|r| r.detail.contains("outgoing to GtK B")),
        "A's queries went to B only: {:?}",
        trail_a.records
    );
    assert!(
        !audit_details(b.context(), "ITI-38").await.is_empty(),
        "B audits A's query"
    );

    // The denied patient: Mitz names nobody; nothing found, complete, B and C not called.
    let queries_at_b = audit_details(b.context(), "ITI-38").await.len();
    let open_before = mitz.open_queries();
    let (studies, success, text) = find_studies_of(WORKSTATION, a.port, BSN_DENIED).await;
    assert!(studies.is_empty(), "nothing found:\n{text}");
    assert!(
        success,
        "a complete answer: nobody was to be asked:\n{text}"
    );
    assert_eq!(mitz.open_queries(), open_before + 1, "asked Mitz");
    assert_eq!(
        audit_details(b.context(), "ITI-38").await.len(),
        queries_at_b,
        "B is not called"
    );
    assert_eq!(c_calls.load(Ordering::Relaxed), 0, "C is not called");
    let trail_a = a
        .context()
        .trust
        .audit
        .patient_trail(BSN_DENIED, 1000)
        .await
        .unwrap();
    assert!(trail_a.verification.ok, "{:?}", trail_a.verification);
    let operations: Vec<(&str, &str)> = trail_a
        .records
        .iter()
        .map(|r| (r.operation.as_str(), r.detail.as_str()))
        .collect();
    assert!(
        operations.iter().any(|(o, d)| *o == "MITZ-OPEN-QUESTION"
            && d.contains("0 data holders permitted, asking []")),
        "A's trail of the denied patient shows the open question: {operations:?}"
    );
    assert!(
        !operations.iter().any(|(o, _)| *o == "ITI-38"),
        "and no query: {operations:?}"
    );

    // A' asks every participant (no localisation): B asks Mitz's closed question, Deny, and
    // releases nothing; both ends audit it. Once B has published the denied study: before
    // that B holds nothing to release for the patient and has no consent to ask (under load
    // the publication of this second study can trail the first's).
    let deadline = Instant::now() + Duration::from_secs(60);
    while b
        .context()
        .index
        .publication(&denied_study)
        .await
        .unwrap()
        .is_none_or(|p| p.published_at <= 0)
    {
        assert!(
            Instant::now() < deadline,
            "B never published {denied_study}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    std::fs::write(
        &participants_a,
        participant("GtK B", URA_B, HOME_B, &cert_b, Some(&base_b)),
    )
    .unwrap();
    let a_unlocalised = Gateway::start(&a_toml(&pki, &cert_a, &participants_a, &idp_a, 1)).await;
    let (studies, _, text) = find_studies_of(WORKSTATION, a_unlocalised.port, BSN_DENIED).await;
    assert!(studies.is_empty(), "B releases nothing:\n{text}");
    assert!(
        !text.contains(&denied_study),
        "not even the study's UID:\n{text}"
    );
    let trail_b = b
        .context()
        .trust
        .audit
        .patient_trail(BSN_DENIED, 1000)
        .await
        .unwrap();
    let at_b: Vec<_> = trail_b
        .records
        .iter()
        .filter(|r| r.operation == "ITI-38")
        .collect();
    assert!(
        at_b.iter()
            .any(|r| r.gateway == "GtK A" && r.grounds.contains("Deny")),
        "B audits the refusal on Mitz's Deny: {at_b:?}"
    );
    let trail_a = a_unlocalised
        .context()
        .trust
        .audit
        .patient_trail(BSN_DENIED, 1000)
        .await
        .unwrap();
    assert!(
        trail_a
            .records
            .iter()
            .any(|r| r.operation == "ITI-38" && r.detail.contains("outgoing to GtK B")),
        "A' audits its query to B: {:?}",
        trail_a.records
    );

    a_unlocalised.stop().await;
    a.stop().await;
    b.stop().await;
}

/// Orthanc at both ends (issue 15, "each with its own Orthanc as PACS"): B's study lives only
/// in B's Orthanc (stored by DCMTK storescu), and B publishes it on A's first query for the
/// patient (docs/xds.md "A study only the PACS holds"); A's PACS is another Orthanc that
/// knows gateway A as a modality, and gateway A knows it as a local user's AE.
///
/// - Orthanc A C-FINDs gateway A (its REST `/modalities/…/query`) and finds B's study, then
///   C-MOVEs it to itself: every instance arrives byte-exact in the syntax B's Orthanc holds.
/// - A fresh gateway A (empty cache): getscu C-FINDs and C-GETs the study through it, from B.
/// - Another fresh A (HTTP for local viewers): QIDO-RS with a JWT of a local user finds the
///   study (asked of B), and
///   WADO-RS `transfer-syntax=*` delivers it byte-exact (fetched from B by RAD-75); with a
///   second peer that hangs, QIDO-RS still answers with the study and a `Warning` naming
///   the failure, within the timeout.
#[tokio::test(flavor = "multi_thread")]
async fn orthanc_at_both_ends() {
    let dir = tempfile::tempdir().unwrap();
    let files = study_generated(&dir.path().join("study"), BSN);
    let study = files[0].study_uid.clone();
    let pki = Pki::new();
    let cert_a = pki.issue_server("gateway-a", &["127.0.0.1", "localhost"]);
    let cert_b = pki.issue_server("gateway-b", &["127.0.0.1", "localhost"]);
    let idp_a = SamlIdp::new(dir.path(), ISSUER_A, KeyKind::Rsa);
    let mitz = MitzSim::start(&[(BSN, ConsentDecision::Permit)]);

    // B with its Orthanc (fetched from by C-GET); the study only in that Orthanc.
    let (b, side_b) =
        b_with_orthanc(dir.path(), &pki, (&cert_a, &cert_b), &idp_a, &mitz, &files).await;
    let held = side_b.held.clone();
    std::fs::create_dir_all(dir.path().join("orthanc-a")).unwrap();
    let base_b = format!("https://127.0.0.1:{}", b.http_port);

    // A with its Orthanc: Orthanc A knows gateway A (BEELDBRUG) as a modality; gateway A
    // knows Orthanc A (ORTHANC) as a local user's AE and C-MOVE destination, and as its PACS.
    let a_dimse_port = free_port();
    let orthanc_a = Orthanc::start_with(
        &dir.path().join("orthanc-a"),
        &[("BEELDBRUG", a_dimse_port)],
    )
    .await;
    let participants_a = dir.path().join("participants-a.toml");
    std::fs::write(
        &participants_a,
        participant("GtK B", URA_B, HOME_B, &cert_b, Some(&base_b)),
    )
    .unwrap();
    let jwt = JwtIdp::new(dir.path(), "https://idp.ziekenhuis-a.test", "beeldbrug-a");
    let toml_a = format!(
        "{}[[dimse.peers]]\nae_title = \"ORTHANC\"\nhost = \"127.0.0.1\"\nport = {}\n\
         organisation_ura = \"{URA_A}\"\nrole = \"{TEST_ROLE}\"\npurpose_of_use = \"{TEST_PURPOSE}\"\nuzi = \"{TEST_UZI}\"\n\
         {}{}",
        a_toml(&pki, &cert_a, &participants_a, &idp_a, 1),
        orthanc_a.dicom_port,
        pacs_toml("ORTHANC", orthanc_a.dicom_port, "c-get", ""),
        jwt.config_toml(),
    );
    let a = Gateway::start_dimse_on(a_dimse_port, &toml_a).await;

    // Orthanc A C-FINDs gateway A by the BSN until B has published the study.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found = orthanc_find(orthanc_a.http_port, "BEELDBRUG", BSN).await;
        if found == std::slice::from_ref(&study) {
            break;
        }
        assert!(found.is_empty(), "only B's study: {found:?}");
        assert!(
            Instant::now() < deadline,
            "Orthanc A never found B's study through A:\n{}",
            orthanc_a.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // B's operator's console lists that publication (of a study only its PACS holds): the
    // instances its PACS reported named in the manifest (issue 17, transfers page).
    let publication = b
        .context()
        .core
        .transfers()
        .into_iter()
        .find(|t| {
            t.kind == "publication" && t.study_uids == [study.clone()] && t.state == "complete"
        })
        .unwrap_or_else(|| {
            panic!(
                "B lists the publication: {:#?}",
                b.context().core.transfers()
            )
        });
    assert!(
        publication.expected > 0
            && publication.received == publication.expected
            && publication.bytes > 0,
        "{publication:?}"
    );
    // …and C-MOVEs it to itself: byte-exact, in the syntax B's Orthanc holds.
    let body = serde_json::json!({
        "Level": "Study",
        "Resources": [{ "StudyInstanceUID": study }],
        "TargetAet": "ORTHANC",
        "Synchronous": true,
        "Timeout": 60,
    })
    .to_string();
    let r = request(
        orthanc_a.http_port,
        "POST",
        "/modalities/BEELDBRUG/move",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "Orthanc A's C-MOVE: {}", r.text());
    assert_same_instances(
        &orthanc_holds(orthanc_a.http_port).await,
        &held,
        "Orthanc A",
    );
    let moved = audit_details(a.context(), "RAD-75").await;
    assert!(
        moved
            .iter()
            .any(|(o, d)| o == "success" && d.contains("outgoing to GtK B")),
        "A fetched from B: {moved:?}"
    );
    // B's console lists what it sent A by RAD-75: one send per RAD-75 answer, every
    // instance of the study counted (issue 17, transfers page).
    let sends: Vec<_> = b
        .context()
        .core
        .transfers()
        .into_iter()
        .filter(|t| t.kind == "send" && t.destination == "GtK A (RAD-75)")
        .collect();
    assert!(
        !sends.is_empty()
            && sends.iter().all(|t| t.state == "complete" && t.bytes > 0)
            && sends.iter().map(|t| t.received).sum::<u64>() >= held.len() as u64,
        "B lists its RAD-75 sends to A, {} instances in all: {sends:#?}",
        held.len()
    );
    // B's fetches from its Orthanc for those answers ended complete: none cancelled because
    // its answer ended after the last document, before Orthanc's final C-GET response.
    let deadline = Instant::now() + Duration::from_secs(10);
    let retrieves = loop {
        let retrieves: Vec<_> = b
            .context()
            .core
            .transfers()
            .into_iter()
            .filter(|t| t.kind == "retrieve")
            .collect();
        if retrieves.iter().all(|t| t.state != "running") || Instant::now() > deadline {
            break retrieves;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        !retrieves.is_empty() && retrieves.iter().all(|t| t.state == "complete"),
        "B's fetches for A ended complete: {retrieves:#?}"
    );
    a.stop().await;
    // A's own PACS forgets it again: what follows comes from B or not at all.
    orthanc_delete_study(orthanc_a.http_port, &study).await;
    assert!(orthanc_holds(orthanc_a.http_port).await.is_empty());

    // A fresh A (empty cache): getscu C-FIND then C-GET through A, fetched from B.
    let a = Gateway::start_dimse_on(a_dimse_port, &toml_a).await;
    let (studies, success, text) = find_studies(WORKSTATION, a.port).await;
    assert!(
        success && studies == std::slice::from_ref(&study),
        "findscu:\n{text}"
    );
    let got_dir = tempfile::tempdir().unwrap();
    let od = got_dir.path().display().to_string();
    let keys = vec![
        "QueryRetrieveLevel=STUDY".to_string(),
        format!("StudyInstanceUID={study}"),
    ];
    let (ok, text) = dcmtk(
        "getscu",
        scu_args(WORKSTATION, a.port, &["-v", "-S", "-od", &od], &keys),
    )
    .await;
    assert!(ok && !text.contains("E:"), "getscu through A:\n{text}");
    assert_same_instances(&part10_under(got_dir.path()), &held, "getscu");
    assert_eq!(
        audit_details(a.context(), "RAD-75").await.len(),
        1,
        "C-GET fetched from B"
    );
    a.stop().await;

    // Another fresh A, its HTTP listener inside the hospital (plain: with `[tls]` it would
    // take participants' certificates only), its outgoing identity in `[remote]`: QIDO-RS
    // and WADO-RS of a local user (a JWT).
    let tls_a = tls_toml(&pki, &cert_a, &participants_a);
    let toml_a_web = toml_a
        .replacen(
            &tls_a,
            &format!(
                "[trust]\nparticipants_file = \"{}\"\n",
                participants_a.display()
            ),
            1,
        )
        .replacen(
            "[remote]\nenabled = true\n",
            &format!(
                "[remote]\nenabled = true\nclient_cert_file = \"{}\"\nclient_key_file = \"{}\"\nca_file = \"{}\"\n",
                cert_a.cert.display(),
                cert_a.key.display(),
                pki.ca_file.display()
            ),
            1,
        );
    assert_ne!(toml_a_web, toml_a);
    let a = Gateway::start_dimse_on(a_dimse_port, &toml_a_web).await;
    let web = |path: String, accept: &'static str| {
        let token = mint_jwt(&jwt, |c| c["ura"] = URA_A.into());
        let port = a.http_port;
        async move {
            let authorization = format!("Bearer {token}");
            request(
                port,
                "GET",
                &format!("/dicomweb{path}"),
                &[("Authorization", &authorization), ("Accept", accept)],
                b"",
            )
            .await
        }
    };
    let r = web(
        format!("/studies?PatientID={BSN}"),
        "application/dicom+json",
    )
    .await;
    assert_eq!(r.status, 200, "QIDO-RS through A: {}", r.text());
    let rows = r.json();
    assert_eq!(
        rows.as_array().map(|r| r.len()),
        Some(1),
        "B's study: {rows}"
    );
    assert_eq!(rows[0]["0020000D"]["Value"][0], study.as_str());
    assert!(r.header("Warning").is_none(), "complete: {r:?}");
    let r = web(format!("/studies/{study}"), AS_STORED).await;
    assert_eq!(r.status, 200, "WADO-RS through A: {}", r.text());
    let parts: Held = multipart_parts(&r)
        .iter()
        .map(|p| {
            let (uid, data) = dataset_of(p);
            (uid, (syntax_of(p), data))
        })
        .collect();
    assert_same_instances(&parts, &held, "WADO-RS");
    let fetched = audit_details(a.context(), "RAD-75").await;
    assert!(
        fetched.len() == 1 && fetched[0].0 == "success",
        "WADO-RS fetched from B: {fetched:?}"
    );

    // A second peer that hangs: QIDO-RS answers with B's study and a Warning, in time.
    let (silent_port, _silent, _) = silent_peer().await;
    let mut list = participant("GtK B", URA_B, HOME_B, &cert_b, Some(&base_b));
    list.push_str(&participant(
        "GtK Stil",
        "33330000",
        "urn:oid:1.2.3.4.5.23",
        &pki.issue_server("gateway-stil", &["127.0.0.1"]),
        Some(&format!("https://127.0.0.1:{silent_port}")),
    ));
    std::fs::write(&participants_a, list).unwrap();
    a.context()
        .trust
        .participants
        .reload(&participants_a)
        .unwrap();
    let started = Instant::now();
    let r = web(
        format!("/studies?PatientID={BSN}"),
        "application/dicom+json",
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(PEER_TIMEOUT_SECS + 5),
        "within the timeout: {:?}",
        started.elapsed()
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()[0]["0020000D"]["Value"][0], study.as_str());
    let warning = r
        .header("Warning")
        .unwrap_or_else(|| panic!("a Warning header: {r:?}"));
    assert!(
        warning.starts_with("299") && warning.contains("GtK Stil"),
        "{warning}"
    );

    a.stop().await;
    b.stop().await;
}

/// Generated instances of one study of patient `bsn` (set by dcmodify), for storescu.
fn study_generated(dir: &Path, bsn: &str) -> Vec<beeldbrug::testdata::GeneratedFile> {
    study_sized(dir, bsn, 4, 32)
}

/// Delete a study from an Orthanc (REST: `/tools/lookup`, then `DELETE /studies/{id}`).
async fn orthanc_delete_study(http_port: u16, study: &str) {
    let r = request(http_port, "POST", "/tools/lookup", &[], study.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let found = r.json();
    let id = found[0]["ID"].as_str().expect("the study's Orthanc ID");
    let r = request(http_port, "DELETE", &format!("/studies/{id}"), &[], b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// An Orthanc's C-FIND (STUDY, by Patient ID) of `modality`: the Study Instance UIDs.
async fn orthanc_find(http_port: u16, modality: &str, bsn: &str) -> Vec<String> {
    let body = serde_json::json!({
        "Level": "Study",
        "Query": { "PatientID": bsn, "StudyInstanceUID": "" },
    })
    .to_string();
    let r = request(
        http_port,
        "POST",
        &format!("/modalities/{modality}/query"),
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "Orthanc's C-FIND: {}", r.text());
    let id = r.json()["ID"].as_str().expect("query ID").to_string();
    let r = request(
        http_port,
        "GET",
        &format!("/queries/{id}/answers?expand&simplify"),
        &[],
        b"",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut found: Vec<String> = r
        .json()
        .as_array()
        .expect("answers")
        .iter()
        .filter_map(|a| a["StudyInstanceUID"].as_str().map(str::to_string))
        .collect();
    found.sort();
    found
}

/// `got` holds exactly the instances of `held`, each in its syntax with its data set bytes.
#[track_caller]
fn assert_same_instances(got: &Held, held: &Held, what: &str) {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        held.keys().collect::<Vec<_>>(),
        "{what}: every instance"
    );
    for (uid, (syntax, data)) in held {
        let (got_syntax, got_data) = &got[uid];
        assert_eq!(
            got_syntax, syntax,
            "{what} {uid}: transfer syntax as stored"
        );
        assert!(got_data == data, "{what} {uid}: data set bytes as stored");
    }
}

/// The study of the Python peer: pydicom's test files (made by other vendors' tools, five
/// transfer syntaxes among them) given one patient and one study by DCMTK dcmodify.
fn foreign_study(dir: &Path) -> (String, Held) {
    std::fs::create_dir_all(dir).unwrap();
    let names = [
        "CT_small.dcm",
        "MR_small.dcm",
        "SC_rgb_rle.dcm",
        "JPEG2000.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
    ];
    let script =
        format!("from pydicom.data import get_testdata_file as g\nfor n in {names:?}: print(g(n))");
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3");
    assert!(out.status.success(), "pydicom test data: {out:?}");
    let study = "1.2.826.0.1.3680043.8.498.15015015015";
    for (n, source) in String::from_utf8(out.stdout).unwrap().lines().enumerate() {
        let target = dir.join(format!("{n}.dcm"));
        std::fs::copy(source, &target).unwrap();
        // Two of the files share their SOP Instance UID: each gets its own.
        for set in [
            format!("(0010,0020)={BSN}"),
            format!("(0020,000D)={study}"),
            format!("(0008,0018)={study}.{n}"),
        ] {
            let out = common::dcmtk("dcmodify", &["-nb", "-m", &set, target.to_str().unwrap()]);
            assert!(out.status.success(), "dcmodify: {out:?}");
        }
    }
    (study.to_string(), part10_under(dir))
}

/// tests/xca/responding_gateway.py on a free port, serving `study_dir` with `cert`.
async fn python_peer(
    dir: &Path,
    name: &'static str,
    pki: &Pki,
    cert: &CertFiles,
    idp: &SamlIdp,
    study_dir: &Path,
    mode_file: &Path,
) -> (PeerProcess, u16) {
    python_peer_with(dir, name, pki, cert, idp, study_dir, mode_file, &[]).await
}

/// [`python_peer`] with more arguments (`--report-pdf`, `--report-sr`).
#[allow(clippy::too_many_arguments)]
async fn python_peer_with(
    dir: &Path,
    name: &'static str,
    pki: &Pki,
    cert: &CertFiles,
    idp: &SamlIdp,
    study_dir: &Path,
    mode_file: &Path,
    extra: &[String],
) -> (PeerProcess, u16) {
    let port = free_port();
    let work = dir.join(format!("{name}-work"));
    std::fs::create_dir_all(&work).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/xca/responding_gateway.py");
    let args: Vec<String> = vec![
        script.display().to_string(),
        "--port".into(),
        port.to_string(),
        "--cert".into(),
        cert.cert.display().to_string(),
        "--key".into(),
        cert.key.display().to_string(),
        "--client-ca".into(),
        pki.ca_file.display().to_string(),
        "--xua-cert".into(),
        idp.cert_pem.display().to_string(),
        "--study-dir".into(),
        study_dir.display().to_string(),
        "--work-dir".into(),
        work.display().to_string(),
        "--home".into(),
        PYTHON_HOME.into(),
        "--repository".into(),
        "1.2.3.4.5.24.1".into(),
        "--mode-file".into(),
        mode_file.display().to_string(),
    ];
    let args: Vec<String> = args.into_iter().chain(extra.iter().cloned()).collect();
    let mut process = PeerProcess::spawn(name, Path::new("python3"), &args, dir);
    process.wait_for_port(port).await;
    (process, port)
}

const PYTHON_HOME: &str = "urn:oid:1.2.3.4.5.24";
const URA_PYTHON: &str = "44440000";

/// A responding gateway that is not beeldbrug (tests/xca/responding_gateway.py: lxml,
/// pydicom, signxml; written from the IHE schemas), holding a study of files made by other
/// tools in five transfer syntaxes. A's initiating side against it:
///
/// - C-FIND at A finds the study; with a second Python peer that hangs, the answer is
///   partial (a failure status after the row) within the timeout.
/// - Hostile or malformed RAD-75 answers (cut off mid-part, a part the envelope does not
///   name, an HTML page for an instance, a 4 MiB envelope, multipart without a boundary, a
///   part without end): the C-MOVE ends without every instance, A audits the failure, and
///   A keeps serving. The part without end fails at `[remote] max_instance_bytes` (4 MiB
///   here), its bytes removed from A's disk, long before the peer would stop sending.
/// - A correct answer: movescu from A to storescp receives every instance byte-exact in
///   the syntax the peer holds it in.
#[tokio::test(flavor = "multi_thread")]
async fn a_python_responding_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let study_dir = dir.path().join("foreign-study");
    let (study, held) = foreign_study(&study_dir);
    assert_eq!(held.len(), 5);
    let pki = Pki::new();
    let cert_a = pki.issue_server("gateway-a", &["127.0.0.1", "localhost"]);
    let cert_p = pki.issue_server("gateway-python", &["127.0.0.1", "localhost"]);
    let cert_h = pki.issue_server("gateway-python-hangs", &["127.0.0.1", "localhost"]);
    let idp_a = SamlIdp::new(dir.path(), ISSUER_A, KeyKind::Rsa);
    let mode = dir.path().join("mode");
    let hang = dir.path().join("mode-hang");
    std::fs::write(&hang, "hang").unwrap();
    let (peer, port) = python_peer(
        dir.path(),
        "python-peer",
        &pki,
        &cert_p,
        &idp_a,
        &study_dir,
        &mode,
    )
    .await;
    let (_hanging, hang_port) = python_peer(
        dir.path(),
        "python-peer-hangs",
        &pki,
        &cert_h,
        &idp_a,
        &study_dir,
        &hang,
    )
    .await;
    let base = format!("https://127.0.0.1:{port}");
    let participants_a = dir.path().join("participants-a.toml");
    let only_python = participant("GtK Python", URA_PYTHON, PYTHON_HOME, &cert_p, Some(&base));
    let mut with_hanging = only_python.clone();
    with_hanging.push_str(&participant(
        "GtK Python hangs",
        "55550000",
        "urn:oid:1.2.3.4.5.25",
        &cert_h,
        Some(&format!("https://127.0.0.1:{hang_port}")),
    ));
    std::fs::write(&participants_a, &with_hanging).unwrap();
    let dest_port = free_port();
    let (_scp, received) = storescp(dir.path(), dest_port).await;
    let toml_a = a_toml(&pki, &cert_a, &participants_a, &idp_a, dest_port);

    // C-FIND: the study, and partial (the hanging peer) within the timeout.
    let a = Gateway::start(&toml_a).await;
    let started = Instant::now();
    let (studies, success, text) = find_studies(WORKSTATION, a.port).await;
    assert_eq!(
        studies,
        std::slice::from_ref(&study),
        "the Python peer's study:\n{text}\n{}",
        peer.log_tail()
    );
    assert!(!success, "partial: a peer hangs:\n{text}");
    assert!(
        started.elapsed() < Duration::from_secs(PEER_TIMEOUT_SECS + 5),
        "within the timeout: {:?}",
        started.elapsed()
    );
    a.stop().await;
    std::fs::write(&participants_a, &only_python).unwrap();

    let keys = vec![
        "QueryRetrieveLevel=STUDY".to_string(),
        format!("StudyInstanceUID={study}"),
    ];
    let mut options = vec!["-v", "-S", "-aem", DEST];
    options.extend(TIMEOUTS);

    // Hostile and malformed RAD-75 answers, each against a fresh A (empty cache).
    for hostile in [
        "truncated",
        "unknown-part",
        "not-dicom",
        "huge-envelope",
        "no-boundary",
        "endless",
    ] {
        std::fs::write(&mode, hostile).unwrap();
        std::fs::remove_dir_all(&received).unwrap();
        std::fs::create_dir_all(&received).unwrap();
        let a = Gateway::start(&toml_a).await;
        let (studies, success, text) = find_studies(WORKSTATION, a.port).await;
        assert!(success && studies.len() == 1, "{hostile}: C-FIND:\n{text}");
        let (_, out) = dcmtk("movescu", scu_args(WORKSTATION, a.port, &options, &keys)).await;
        assert!(
            !out.contains("Received Final Move Response (Success)"),
            "{hostile}: not a success:\n{out}"
        );
        let got = part10_under(&received);
        assert!(got.len() < held.len(), "{hostile}: not every instance");
        for (uid, (syntax, data)) in &got {
            let (want_syntax, want) = &held[uid];
            assert!(
                syntax == want_syntax && data == want,
                "{hostile}: {uid} arrives intact: {syntax} {} bytes, held {want_syntax} {} bytes",
                data.len(),
                want.len()
            );
        }
        let fetches = audit_details(a.context(), "RAD-75").await;
        assert!(
            fetches.len() == 1 && fetches[0].0 != "success",
            "{hostile}: audited as not a success: {fetches:?}"
        );
        if hostile == "endless" {
            assert!(
                fetches[0].1.contains("max_instance_bytes"),
                "endless: failed at the limit: {fetches:?}"
            );
            // Bounded: nothing of the endless part stays on A's disk (its temp file is
            // removed), and the peer did not get to send its cap. (The ingest journal's
            // preallocated files, `journal/`, hold no part.)
            let journal = a.data_dir().join("journal");
            let on_disk: u64 = files_under(&a.data_dir())
                .iter()
                .filter(|f| !f.starts_with(&journal))
                .filter_map(|f| std::fs::metadata(f).ok())
                .map(|m| m.len())
                .sum();
            assert!(
                on_disk < MAX_INSTANCE_BYTES,
                "endless: {on_disk} bytes on A's disk"
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            while !peer.log_tail().contains("endless part: the client hung up") {
                assert!(
                    Instant::now() < deadline,
                    "endless: A hung up:\n{}",
                    peer.log_tail()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        // A keeps serving: the next C-FIND answers.
        let (studies, success, text) = find_studies(WORKSTATION, a.port).await;
        assert!(
            success && studies.len() == 1,
            "{hostile}: A still serves:\n{text}"
        );
        a.stop().await;
    }

    // A correct answer: every instance, byte-exact in its syntax.
    std::fs::write(&mode, "good").unwrap();
    std::fs::remove_dir_all(&received).unwrap();
    std::fs::create_dir_all(&received).unwrap();
    let a = Gateway::start(&toml_a).await;
    let (studies, success, text) = find_studies(WORKSTATION, a.port).await;
    assert!(success && studies.len() == 1, "C-FIND:\n{text}");
    let (ok, out) = dcmtk("movescu", scu_args(WORKSTATION, a.port, &options, &keys)).await;
    assert!(
        ok && out.contains("Received Final Move Response (Success)"),
        "movescu:\n{out}\n{}\nreceived {:?}\nRAD-75 {:?}\nC-MOVE {:?}",
        peer.log_tail(),
        part10_under(&received).keys().collect::<Vec<_>>(),
        audit_details(a.context(), "RAD-75").await,
        audit_details(a.context(), "C-MOVE").await,
    );
    assert_same_instances(&part10_under(&received), &held, "from the Python peer");
    let syntaxes: std::collections::BTreeSet<&str> =
        held.values().map(|(ts, _)| ts.as_str()).collect();
    assert_eq!(syntaxes.len(), 4, "{syntaxes:?}");
    a.stop().await;
}

/// A PDF of odd length (the Encapsulated Document gets a pad byte).
const REPORT_PDF: &[u8] = b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n";

/// An SR of `study` (pydicom's test-SR.dcm given the patient and study), outside the study
/// directory: not in the peer's manifest.
fn foreign_sr(dir: &Path, study: &str) -> (String, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "from pydicom.data import get_testdata_file as g\nprint(g('test-SR.dcm'))",
        ])
        .output()
        .expect("python3");
    assert!(out.status.success(), "pydicom test data: {out:?}");
    let source = String::from_utf8(out.stdout).unwrap();
    let target = dir.join("sr.dcm");
    std::fs::copy(source.trim(), &target).unwrap();
    let sop = format!("{study}.99");
    for set in [
        format!("(0010,0020)={BSN}"),
        format!("(0020,000D)={study}"),
        format!("(0008,0018)={sop}"),
    ] {
        let out = common::dcmtk("dcmodify", &["-nb", "-m", &set, target.to_str().unwrap()]);
        assert!(out.status.success(), "dcmodify: {out:?}");
    }
    (sop, target)
}

/// Reports by ITI-39 (issue 15 item 5): the Python peer publishes, besides the study's KOS,
/// a PDF report (`application/pdf`) and a DICOM SR (`application/dicom`) as documents of
/// their own, which its manifest does not reference.
///
/// - C-FIND at A finds one study (the reports belong to it, not studies of their own).
/// - movescu C-MOVEs the study from A: the images come by RAD-75, then both reports by one
///   ITI-39; storescp receives the images and the SR byte-exact, and the PDF as an
///   Encapsulated PDF instance of the study (the PDF's bytes unchanged in it); A audits the
///   ITI-39 of the reports (2 of 2) besides the manifest's.
/// - The peer answers the PDF report with an HTML page: a fresh A delivers the images and
///   the SR, not the page; the C-MOVE is not a success, the ITI-39 audited as partial.
#[tokio::test(flavor = "multi_thread")]
async fn reports_by_iti39_from_a_python_peer() {
    let dir = tempfile::tempdir().unwrap();
    let study_dir = dir.path().join("foreign-study");
    let (study, held) = foreign_study(&study_dir);
    let (sr_sop, sr_path) = foreign_sr(&dir.path().join("reports"), &study);
    let pdf_path = dir.path().join("report.pdf");
    std::fs::write(&pdf_path, REPORT_PDF).unwrap();
    let pki = Pki::new();
    let cert_a = pki.issue_server("gateway-a", &["127.0.0.1", "localhost"]);
    let cert_p = pki.issue_server("gateway-python", &["127.0.0.1", "localhost"]);
    let idp_a = SamlIdp::new(dir.path(), ISSUER_A, KeyKind::Rsa);
    let mode = dir.path().join("mode");
    let (peer, port) = python_peer_with(
        dir.path(),
        "python-peer",
        &pki,
        &cert_p,
        &idp_a,
        &study_dir,
        &mode,
        &[
            "--report-pdf".into(),
            pdf_path.display().to_string(),
            "--report-sr".into(),
            sr_path.display().to_string(),
        ],
    )
    .await;
    let participants_a = dir.path().join("participants-a.toml");
    std::fs::write(
        &participants_a,
        participant(
            "GtK Python",
            URA_PYTHON,
            PYTHON_HOME,
            &cert_p,
            Some(&format!("https://127.0.0.1:{port}")),
        ),
    )
    .unwrap();
    let dest_port = free_port();
    let (_scp, received) = storescp(dir.path(), dest_port).await;
    let toml_a = a_toml(&pki, &cert_a, &participants_a, &idp_a, dest_port);
    let keys = vec![
        "QueryRetrieveLevel=STUDY".to_string(),
        format!("StudyInstanceUID={study}"),
    ];
    let mut options = vec!["-v", "-S", "-aem", DEST];
    options.extend(TIMEOUTS);
    let sr = part10_under(&dir.path().join("reports"));

    let a = Gateway::start(&toml_a).await;
    let (studies, success, text) = find_studies(WORKSTATION, a.port).await;
    assert!(
        success && studies == std::slice::from_ref(&study),
        "one study, its reports with it:\n{text}\n{}",
        peer.log_tail()
    );
    let (ok, out) = dcmtk("movescu", scu_args(WORKSTATION, a.port, &options, &keys)).await;
    assert!(
        ok && out.contains("Received Final Move Response (Success)"),
        "movescu at A:\n{out}\nITI-39 at A: {:?}\n{}",
        audit_details(a.context(), "ITI-39").await,
        peer.log_tail()
    );
    let mut got = part10_under(&received);
    let (pdf_sop, pdf) = wrapped_pdf(&received, &study);
    got.remove(&pdf_sop);
    let mut want = held.clone();
    want.extend(sr.clone());
    assert_same_instances(&got, &want, "the images and the SR");
    assert_eq!(pdf, REPORT_PDF, "the PDF as the peer sent it");
    assert!(got.contains_key(&sr_sop));
    let iti39 = audit_details(a.context(), "ITI-39").await;
    assert!(
        iti39.len() == 2
            && iti39
                .iter()
                .any(|(o, d)| o == "success" && d.contains("reports: 2 of 2")),
        "the manifest and the reports by ITI-39: {iti39:?}"
    );
    a.stop().await;

    // The PDF answered with an HTML page: not stored, the rest delivered.
    std::fs::write(&mode, "report-html").unwrap();
    std::fs::remove_dir_all(&received).unwrap();
    std::fs::create_dir_all(&received).unwrap();
    let a = Gateway::start(&toml_a).await;
    let (studies, _, text) = find_studies(WORKSTATION, a.port).await;
    assert_eq!(studies, std::slice::from_ref(&study), "{text}");
    let (_, out) = dcmtk("movescu", scu_args(WORKSTATION, a.port, &options, &keys)).await;
    assert!(
        !out.contains("Received Final Move Response (Success)"),
        "a report missing: not a success:\n{out}"
    );
    assert_same_instances(&part10_under(&received), &want, "without the PDF");
    let iti39 = audit_details(a.context(), "ITI-39").await;
    assert!(
        iti39
            .iter()
            .any(|(o, d)| o == "partial" && d.contains("reports: 1 of 2")),
        "audited as partial: {iti39:?}"
    );
    a.stop().await;
}

/// The Encapsulated PDF instance among `dir`'s files: its SOP Instance UID and document
/// (cut to its Encapsulated Document Length), checked to be of `study` and patient [`BSN`].
fn wrapped_pdf(dir: &Path, study: &str) -> (String, Vec<u8>) {
    use dicom_dictionary_std::tags;
    let mut found = Vec::new();
    for path in files_under(dir) {
        let Ok(obj) = dicom_object::open_file(&path) else {
            continue;
        };
        if obj.meta().media_storage_sop_class_uid() != "1.2.840.10008.5.1.4.1.1.104.1" {
            continue;
        }
        let text = |tag| {
            obj.element(tag)
                .unwrap()
                .to_str()
                .unwrap()
                .trim_end_matches(['\0', ' '])
                .to_string()
        };
        assert_eq!(text(tags::STUDY_INSTANCE_UID), study);
        assert_eq!(text(tags::PATIENT_ID), BSN);
        let length = obj
            .element(tags::ENCAPSULATED_DOCUMENT_LENGTH)
            .unwrap()
            .to_int::<u32>()
            .unwrap() as usize;
        let mut pdf = obj
            .element(tags::ENCAPSULATED_DOCUMENT)
            .unwrap()
            .to_bytes()
            .unwrap()
            .into_owned();
        pdf.truncate(length);
        found.push((text(tags::SOP_INSTANCE_UID), pdf));
    }
    assert_eq!(found.len(), 1, "one Encapsulated PDF in {}", dir.display());
    found.remove(0)
}

/// A TCP relay to `upstream` that passes the client's bytes on and at most `limit` bytes of
/// the answers back, then closes both sides: a peer whose answer breaks off mid-stream (the
/// TLS session passes through untouched, so the certificate checks are the real ones).
async fn cutting_relay(upstream: u16, limit: usize) -> (u16, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    return;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let up = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                });
                let mut passed = 0usize;
                let mut buf = vec![0u8; 16 << 10];
                while passed < limit {
                    let n = match server_read.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n.min(limit - passed),
                    };
                    if client_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    passed += n;
                }
                up.abort();
            });
        }
    });
    (port, task)
}

/// `[remote] prefer_wado_rs` (issue 15 item 5): gateway B in front of its Orthanc offers
/// DICOMweb (`dicomweb_url` on A's participant entry for B), and A fetches the instances of
/// B's study by WADO-RS instead of RAD-75, over the same mutual TLS, with its local user's
/// XUA assertion (`Authorization: SAML`), the manifest still by ITI-39.
///
/// - movescu C-MOVEs the study from A to storescp: every instance arrives byte-exact in the
///   syntax B's Orthanc holds; A audits one outgoing WADO-RS naming B, its user and the
///   patient, and no RAD-75; B audits the incoming WADO-RS as A's gateway, with A's
///   correlation id.
/// - B's answer breaks off mid-stream (a relay that closes the connection after part of
///   it): the C-MOVE ends without success, what arrived is intact and fewer than all, A
///   audits the failure, and the study is not cached as complete: the next C-MOVE (B
///   reached directly again) fetches it from B once more and delivers every instance.
#[tokio::test(flavor = "multi_thread")]
async fn wado_rs_from_a_peer_that_offers_dicomweb() {
    let dir = tempfile::tempdir().unwrap();
    // Six 128 × 128 CT images (32 KiB each): an answer long enough to break off inside.
    let files = study_sized(&dir.path().join("study"), BSN, 6, 128);
    let study = files[0].study_uid.clone();
    let pki = Pki::new();
    let cert_a = pki.issue_server("gateway-a", &["127.0.0.1", "localhost"]);
    let cert_b = pki.issue_server("gateway-b", &["127.0.0.1", "localhost"]);
    let idp_a = SamlIdp::new(dir.path(), ISSUER_A, KeyKind::Rsa);
    let mitz = MitzSim::start(&[(BSN, ConsentDecision::Permit)]);

    // B with its Orthanc (fetched from by C-GET); the study only in that Orthanc.
    let (b, side_b) =
        b_with_orthanc(dir.path(), &pki, (&cert_a, &cert_b), &idp_a, &mitz, &files).await;
    let held = side_b.held.clone();
    let base_b = format!("https://127.0.0.1:{}", b.http_port);
    let b_with_dicomweb = |dicomweb: &str| {
        format!(
            "{}dicomweb_url = \"{dicomweb}/dicomweb\"\n",
            participant("GtK B", URA_B, HOME_B, &cert_b, Some(&base_b))
        )
    };

    // A: B's entry with its DICOMweb URL, and the policy that allows WADO-RS.
    let participants_a = dir.path().join("participants-a.toml");
    std::fs::write(&participants_a, b_with_dicomweb(&base_b)).unwrap();
    let dest_port = free_port();
    let (_scp, received) = storescp(dir.path(), dest_port).await;
    let toml_a = a_toml(&pki, &cert_a, &participants_a, &idp_a, dest_port).replacen(
        "[remote]\nenabled = true\n",
        "[remote]\nenabled = true\nprefer_wado_rs = true\n",
        1,
    );
    let a = Gateway::start(&toml_a).await;
    wait_until_found(a.port, &study).await;
    let (moved, out) = move_study(WORKSTATION, a.port, &study).await;
    assert!(moved, "movescu at A:\n{out}");
    assert_same_instances(&part10_under(&received), &held, "by WADO-RS from B");

    // A audits one outgoing WADO-RS to B for its user and the patient, and no RAD-75.
    let ctx_a = a.context();
    let fetched = audit_details(ctx_a, "WADO-RS").await;
    assert!(
        fetched.len() == 1
            && fetched[0].0 == "success"
            && fetched[0].1.contains("outgoing to GtK B")
            && fetched[0]
                .1
                .contains(&format!("{} of {}", held.len(), held.len())),
        "A's WADO-RS from B: {fetched:?}"
    );
    assert!(audit_details(ctx_a, "RAD-75").await.is_empty(), "no RAD-75");
    let records_a = ctx_a.index.audit_records(0, 100_000).await.unwrap();
    let outgoing = records_a.iter().find(|r| r.operation == "WADO-RS").unwrap();
    assert_eq!(outgoing.gateway, WORKSTATION, "the local user's AE");
    assert_eq!(outgoing.professional_uzi, TEST_UZI, "and its UZI");
    assert_eq!(outgoing.patient_ids, [BSN], "and the patient");
    // B: the incoming WADO-RS of A's gateway, the user's claims from A's assertion, A's
    // correlation id.
    let records_b = b.context().index.audit_records(0, 100_000).await.unwrap();
    let at_b: Vec<_> = records_b
        .iter()
        .filter(|r| r.operation == "WADO-RS")
        .collect();
    assert!(
        !at_b.is_empty()
            && at_b.iter().all(|r| r.outcome == "success"
                && r.gateway == "GtK A"
                && r.professional_uzi == TEST_UZI
                && r.correlation_id == outgoing.correlation_id),
        "B's WADO-RS records: {at_b:#?} (A's: {outgoing:#?})"
    );
    a.stop().await;

    // B's answer breaks off mid-stream: a fresh A reaches B's DICOMweb through a relay that
    // passes about half the study's bytes back.
    let study_bytes: usize = files
        .iter()
        .map(|f| std::fs::metadata(&f.path).unwrap().len() as usize)
        .sum();
    let (relay, _relay) = cutting_relay(b.http_port, study_bytes / 2).await;
    std::fs::write(
        &participants_a,
        b_with_dicomweb(&format!("https://127.0.0.1:{relay}")),
    )
    .unwrap();
    std::fs::remove_dir_all(&received).unwrap();
    std::fs::create_dir_all(&received).unwrap();
    let a = Gateway::start(&toml_a).await;
    let (studies, success, text) = find_studies(WORKSTATION, a.port).await;
    assert!(
        success && studies == std::slice::from_ref(&study),
        "findscu:\n{text}"
    );
    let (_, out) = move_study(WORKSTATION, a.port, &study).await;
    assert!(
        !out.contains("Received Final Move Response (Success)"),
        "cut off: not a success:\n{out}"
    );
    let got = part10_under(&received);
    assert!(got.len() < held.len(), "cut off: not every instance");
    for (uid, (syntax, data)) in &got {
        let (want_syntax, want) = held
            .get(uid)
            .unwrap_or_else(|| panic!("cut off: {uid} is none of B's: {:?}", held.keys()));
        assert!(
            syntax == want_syntax && data == want,
            "cut off: {uid} arrives intact"
        );
    }
    let ctx_a = a.context();
    let fetched = audit_details(ctx_a, "WADO-RS").await;
    assert!(
        fetched.len() == 1 && fetched[0].0 == "failure" && fetched[0].1.contains("GtK B"),
        "cut off: audited as a failure naming B: {fetched:?}"
    );
    assert!(
        !becomes_complete(ctx_a, &study).await,
        "cut off: the study is not cached as complete"
    );

    // B reached directly again: the next C-MOVE fetches from B once more, every instance.
    std::fs::write(&participants_a, b_with_dicomweb(&base_b)).unwrap();
    ctx_a.trust.participants.reload(&participants_a).unwrap();
    std::fs::remove_dir_all(&received).unwrap();
    std::fs::create_dir_all(&received).unwrap();
    let (moved, out) = move_study(WORKSTATION, a.port, &study).await;
    assert!(
        moved,
        "movescu after the failure:\n{out}\nWADO-RS {:?}\nC-MOVE {:?}\nB {:?}",
        audit_details(ctx_a, "WADO-RS").await,
        audit_details(ctx_a, "C-MOVE").await,
        audit_details(b.context(), "WADO-RS").await,
    );
    assert_same_instances(&part10_under(&received), &held, "after the failure");
    let fetched = audit_details(ctx_a, "WADO-RS").await;
    assert!(
        fetched.len() == 2 && fetched.iter().any(|(o, _)| o == "success"),
        "fetched from B again: {fetched:?}"
    );
    assert!(becomes_complete(ctx_a, &study).await, "now complete");
    a.stop().await;
    b.stop().await;
}

/// `[remote] prefer_wado_rs` toward a DICOMweb server that is not beeldbrug: the
/// participant's `dicomweb_url` is Orthanc's DICOMweb plugin itself (B's PACS), behind a
/// TLS front (a reverse proxy, as a hospital puts before such a server: it presents B's
/// certificate and requires a client certificate from the CA). Gateway B answers ITI-38 and
/// the manifest (ITI-39); the instances come from Orthanc by WADO-RS.
///
/// - movescu C-MOVEs the study from A to storescp: every instance byte-exact as Orthanc
///   stores it; A audits one outgoing WADO-RS (n of n); B sees no WADO-RS and no RAD-75;
///   the front saw A's client certificate.
/// - A front presenting another certificate from the same CA (not the one on B's entry):
///   A does not fetch from it (the C-MOVE fails, the WADO-RS audited as a failure), and no
///   request reaches Orthanc through it.
#[tokio::test(flavor = "multi_thread")]
async fn wado_rs_from_orthanc_as_the_peers_dicomweb() {
    let dir = tempfile::tempdir().unwrap();
    let files = study_sized(&dir.path().join("study"), BSN, 4, 64);
    let study = files[0].study_uid.clone();
    let pki = Pki::new();
    let cert_a = pki.issue_server("gateway-a", &["127.0.0.1", "localhost"]);
    let cert_b = pki.issue_server("gateway-b", &["127.0.0.1", "localhost"]);
    let idp_a = SamlIdp::new(dir.path(), ISSUER_A, KeyKind::Rsa);
    let mitz = MitzSim::start(&[(BSN, ConsentDecision::Permit)]);

    let (b, side_b) =
        b_with_orthanc(dir.path(), &pki, (&cert_a, &cert_b), &idp_a, &mitz, &files).await;
    let (orthanc_b, held) = (&side_b.orthanc, side_b.held.clone());
    let base_b = format!("https://127.0.0.1:{}", b.http_port);
    // Orthanc's DICOMweb behind a TLS front with B's certificate.
    let front = TlsFront::start(orthanc_b.http_port, &pki.ca_file, &cert_b.cert, &cert_b.key).await;
    let b_entry = |front: u16| {
        format!(
            "{}dicomweb_url = \"https://127.0.0.1:{front}/dicom-web\"\n",
            participant("GtK B", URA_B, HOME_B, &cert_b, Some(&base_b))
        )
    };
    let participants_a = dir.path().join("participants-a.toml");
    std::fs::write(&participants_a, b_entry(front.port)).unwrap();
    let dest_port = free_port();
    let (_scp, received) = storescp(dir.path(), dest_port).await;
    let toml_a = a_toml(&pki, &cert_a, &participants_a, &idp_a, dest_port).replacen(
        "[remote]\nenabled = true\n",
        "[remote]\nenabled = true\nprefer_wado_rs = true\n",
        1,
    );
    let a = Gateway::start(&toml_a).await;
    wait_until_found(a.port, &study).await;
    let (moved, out) = move_study(WORKSTATION, a.port, &study).await;
    assert!(
        moved,
        "movescu at A:\n{out}\nWADO-RS at A: {:?}\n{}",
        audit_details(a.context(), "WADO-RS").await,
        orthanc_b.log_tail()
    );
    assert_same_instances(&part10_under(&received), &held, "by WADO-RS from Orthanc");
    let fetched = audit_details(a.context(), "WADO-RS").await;
    assert!(
        fetched.len() == 1
            && fetched[0].0 == "success"
            && fetched[0].1.contains("outgoing to GtK B")
            && fetched[0]
                .1
                .contains(&format!("{} of {}", held.len(), held.len())),
        "A's WADO-RS from Orthanc: {fetched:?}"
    );
    assert!(
        audit_details(a.context(), "RAD-75").await.is_empty(),
        "no RAD-75"
    );
    for operation in ["WADO-RS", "RAD-75"] {
        assert!(
            audit_details(b.context(), operation).await.is_empty(),
            "B itself serves no {operation}: the instances came from Orthanc"
        );
    }
    assert!(
        front
            .clients
            .lock()
            .unwrap()
            .iter()
            .all(|f| *f == cert_a.fingerprint)
            && !front.clients.lock().unwrap().is_empty(),
        "the front saw A's client certificate: {:?}",
        front.clients.lock().unwrap()
    );
    a.stop().await;

    // A front with another certificate of the same CA: not B's, so not fetched from.
    let impostor = pki.issue_server("not-gateway-b", &["127.0.0.1", "localhost"]);
    let other = TlsFront::start(
        orthanc_b.http_port,
        &pki.ca_file,
        &impostor.cert,
        &impostor.key,
    )
    .await;
    std::fs::write(&participants_a, b_entry(other.port)).unwrap();
    std::fs::remove_dir_all(&received).unwrap();
    std::fs::create_dir_all(&received).unwrap();
    let a = Gateway::start(&toml_a).await;
    let (studies, success, text) = find_studies(WORKSTATION, a.port).await;
    assert!(
        success && studies == std::slice::from_ref(&study),
        "findscu:\n{text}"
    );
    let (_, out) = move_study(WORKSTATION, a.port, &study).await;
    assert!(
        !out.contains("Received Final Move Response (Success)"),
        "another certificate: not a success:\n{out}"
    );
    assert!(
        part10_under(&received).is_empty(),
        "nothing from the impostor"
    );
    let fetched = audit_details(a.context(), "WADO-RS").await;
    assert!(
        fetched.len() == 1
            && fetched[0].0 == "failure"
            && fetched[0]
                .1
                .contains("not the one on its participant entry"),
        "audited as a failure: {fetched:?}"
    );
    a.stop().await;
    b.stop().await;
}

/// One trace across two gateways (issue 16 item 3), the real binaries: `beeldbrug serve` as
/// A and as B (B in front of Orthanc as its PACS), both exporting their spans to one
/// OTLP receiver (tests/otlp/receiver.py) under their own `service_name`.
///
/// movescu C-MOVEs at A a study B's PACS holds (found by C-FIND first): A's C-MOVE is the
/// root of one trace, which holds A's RAD-75 call, B's `POST /xca/retrieve` as its child
/// (the `traceparent` A sent), and B's C-GET from its PACS under that; A's records of the
/// C-MOVE and of its outgoing RAD-75 and B's record of the incoming RAD-75 name that trace.
/// Then a fresh A with `prefer_wado_rs`: the same with B's `GET /dicomweb/studies/{study}`
/// as the child of A's WADO-RS call.
#[tokio::test(flavor = "multi_thread")]
async fn one_trace_across_two_gateways() {
    let dir = tempfile::tempdir().unwrap();
    let files = study_generated(&dir.path().join("study"), BSN);
    let study = files[0].study_uid.clone();
    let pki = Pki::new();
    let cert_a = pki.issue_server("gateway-a", &["127.0.0.1", "localhost"]);
    let cert_b = pki.issue_server("gateway-b", &["127.0.0.1", "localhost"]);
    let idp_a = SamlIdp::new(dir.path(), ISSUER_A, KeyKind::Rsa);
    let mitz = MitzSim::start(&[(BSN, ConsentDecision::Permit)]);
    // B's side: its Orthanc with the study; gateway B runs as a process (its spans exported).
    let side_b = hospital_b(dir.path(), &pki, (&cert_a, &cert_b), &idp_a, &mitz, &files).await;
    let spans_file = dir.path().join("spans.jsonl");
    let (_receiver, otlp_port) = otlp::receiver(&spans_file);
    // A gateway's configuration file: listeners on free ports, its data, JSON logs and
    // spans to the receiver as `service`, then `toml`.
    let config = |name: &str, service: &str, toml: &str| -> PathBuf {
        let file = dir.path().join(format!("{name}.toml"));
        let text = format!(
            "[dimse]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
             [storage]\ndata_dir = \"{}\"\n[log]\nformat = \"json\"\n\
             [telemetry]\notlp_endpoint = \"http://127.0.0.1:{otlp_port}\"\nservice_name = \"{service}\"\n{toml}",
            dir.path().join(format!("data-{name}")).display()
        );
        std::fs::write(&file, common::merge_sections(&text)).unwrap();
        file
    };

    let (mut b, _, http_b) = otlp::serve(
        &config("b", "beeldbrug-b", &side_b.toml),
        &dir.path().join("b.log"),
    );
    let base_b = format!("https://127.0.0.1:{http_b}");
    let participants_a = dir.path().join("participants-a.toml");
    std::fs::write(
        &participants_a,
        format!(
            "{}dicomweb_url = \"{base_b}/dicomweb\"\n",
            participant("GtK B", URA_B, HOME_B, &cert_b, Some(&base_b))
        ),
    )
    .unwrap();
    let dest_port = free_port();
    let (_scp, received) = storescp(dir.path(), dest_port).await;
    let toml_a = a_toml(&pki, &cert_a, &participants_a, &idp_a, dest_port);
    let keys = vec![
        "QueryRetrieveLevel=STUDY".to_string(),
        format!("StudyInstanceUID={study}"),
    ];
    let mut options = vec!["-v", "-S", "-aem", DEST];
    options.extend(TIMEOUTS);
    // Gateway `name` (`toml`): C-FIND at it until B's study is found, then C-MOVE it to
    // storescp, every instance; stopped after (its spans exported).
    let find_and_move = |name: &'static str, toml: String| {
        let (config, log) = (
            config(name, &format!("beeldbrug-{name}"), &toml),
            dir.path().join(format!("{name}.log")),
        );
        let (keys, options, received) = (keys.clone(), options.clone(), received.clone());
        let (study, count) = (study.clone(), files.len());
        let spans_file = spans_file.clone();
        async move {
            let (mut a, a_port, _) = otlp::serve(&config, &log);
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let (studies, success, text) = find_studies(WORKSTATION, a_port).await;
                assert!(success, "findscu at {name}:\n{text}");
                if studies == std::slice::from_ref(&study) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "never found at {name}:\n{text}\n{name}'s log:\n{}\nB's log:\n{}",
                    log_tail(&log),
                    log_tail(&log.with_file_name("b.log"))
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            std::fs::remove_dir_all(&received).unwrap();
            std::fs::create_dir_all(&received).unwrap();
            let (ok, out) = dcmtk("movescu", scu_args(WORKSTATION, a_port, &options, &keys)).await;
            assert!(
                ok && out.contains("Received Final Move Response (Success)"),
                "movescu at {name}:\n{out}"
            );
            assert_eq!(
                part10_under(&received).len(),
                count,
                "{name}: every instance"
            );
            // The batch exporter sends every few seconds, and a span still open when the
            // process stops is lost: wait for the C-MOVE's span.
            let service = format!("beeldbrug-{name}");
            let deadline = Instant::now() + Duration::from_secs(30);
            while !otlp::spans(&spans_file)
                .iter()
                .any(|s| s.service == service && s.name == "C-MOVE")
            {
                assert!(
                    Instant::now() < deadline,
                    "{name}: the C-MOVE's span was not exported"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            otlp::stop(&mut a).await;
        }
    };
    find_and_move("a", toml_a.clone()).await;
    let toml_a_wado = toml_a.replacen(
        "[remote]\nenabled = true\n",
        "[remote]\nenabled = true\nprefer_wado_rs = true\n",
        1,
    );
    find_and_move("a-wado", toml_a_wado).await;
    otlp::stop(&mut b).await;

    let all = otlp::spans(&spans_file);
    let data = |name: &str| dir.path().join(format!("data-{name}"));
    let records_b = otlp::audit_records(&data("b")).await;
    // (A's call, B's server span, the operation audited; whether B fetched from its PACS:
    // the second time B answers from its cache.)
    for (service, call, at_b, operation, from_pacs) in [
        (
            "beeldbrug-a",
            "CrossGatewayRetrieveImagingDocumentSet",
            "POST /xca/retrieve",
            "RAD-75",
            true,
        ),
        (
            "beeldbrug-a-wado",
            "WADO-RS",
            "GET /dicomweb/studies/{study}",
            "WADO-RS",
            false,
        ),
    ] {
        // A's C-MOVE: a root span, the trace.
        let moves: Vec<&otlp::Span> = all
            .iter()
            .filter(|s| s.service == service && s.name == "C-MOVE" && s.parent.is_empty())
            .collect();
        assert_eq!(moves.len(), 1, "{service}: one C-MOVE root span: {all:#?}");
        let trace_id = moves[0].trace_id.clone();
        let in_trace = otlp::trace(&all, &trace_id);
        let calls: Vec<&otlp::Span> = in_trace
            .values()
            .filter(|s| s.service == service && s.name == call)
            .collect();
        assert_eq!(calls.len(), 1, "{service}: one {call} call: {in_trace:#?}");
        let call_span = calls[0];
        assert_eq!(call_span.kind, "SPAN_KIND_CLIENT");
        assert!(
            otlp::descends(&in_trace, call_span, &moves[0].span_id),
            "{service}: the {call} belongs to the C-MOVE: {in_trace:#?}"
        );
        // B's server span continues A's call (traceparent), B's C-GET from its PACS under it.
        let server = in_trace
            .values()
            .find(|s| s.service == "beeldbrug-b" && s.name == at_b && s.parent == call_span.span_id)
            .unwrap_or_else(|| panic!("{service}: B's {at_b} under A's {call}: {all:#?}"));
        assert_eq!(server.kind, "SPAN_KIND_SERVER");
        if from_pacs {
            assert!(
                in_trace.values().any(|s| s.service == "beeldbrug-b"
                    && s.name == "C-GET"
                    && otlp::descends(&in_trace, s, &server.span_id)),
                "{service}: B's C-GET from its PACS in the trace: {in_trace:#?}"
            );
        }
        // The audit records at both ends name the trace: A's C-MOVE and its outgoing call,
        // B's record of A's gateway's call.
        let records_a = otlp::audit_records(&data(service.trim_start_matches("beeldbrug-"))).await;
        let named = |records: &[beeldbrug::store::index::AuditRecord], what: &str, by: &str| {
            records.iter().any(|r| {
                r.operation == what && r.trace_id == trace_id && (by.is_empty() || r.gateway == by)
            })
        };
        assert!(
            named(&records_a, "C-MOVE", WORKSTATION),
            "{service}: A's C-MOVE in {trace_id}: {records_a:#?}"
        );
        assert!(
            records_a.iter().any(|r| r.operation == operation
                && r.detail.contains("outgoing to GtK B")
                && r.trace_id == trace_id),
            "{service}: A's outgoing {operation} in {trace_id}: {records_a:#?}"
        );
        assert!(
            named(&records_b, operation, "GtK A"),
            "{service}: B's {operation} in {trace_id}: {records_b:#?}"
        );
    }
}

/// The last lines of a log file.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
