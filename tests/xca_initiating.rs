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
#[path = "common/tokens.rs"]
mod tokens;

use beeldbrug::trust::consent::ConsentDecision;
use common::gateway_mode::{audit_details, dataset_of, syntax_of};
use common::peer::PeerProcess;
use common::pki::{CertFiles, Pki};
use common::{free_port, require_tool, Gateway};
use mitz::MitzSim;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokens::{KeyKind, SamlIdp, TEST_PURPOSE, TEST_ROLE, TEST_UZI};

const BSN: &str = "999999990";
const URA_A: &str = "11110000";
const URA_B: &str = "22220000";
const HOME_A: &str = "urn:oid:1.2.3.4.5.21";
const HOME_B: &str = "urn:oid:1.2.3.4.5.22";
const REPOSITORY_B: &str = "1.2.3.4.5.22.1";
const ISSUER_A: &str = "https://xua.gateway-a.test";
/// The workstation at A (a local user: UZI, role, purpose of use configured), the C-MOVE
/// destination, and an AE without user claims.
const WORKSTATION: &str = "WORKSTATION";
const DEST: &str = "DEST";
const ANONYMOUS: &str = "ANONYMOUS";
const TIMEOUTS: [&str; 6] = ["-to", "15", "-ta", "30", "-td", "60"];
/// `[remote] timeout_secs` at A.
const PEER_TIMEOUT_SECS: u64 = 3;

/// Instances by SOP Instance UID: (transfer syntax, data set bytes after the file meta).
type Held = BTreeMap<String, (String, Vec<u8>)>;

fn participant(name: &str, ura: &str, home: &str, cert: &CertFiles, base: Option<&str>) -> String {
    let mut entry = format!(
        "[[participant]]\nname = \"{name}\"\nura = \"{ura}\"\nhome_community_id = \"{home}\"\ncertificate_sha256 = \"{}\"\n",
        cert.fingerprint
    );
    if let Some(base) = base {
        entry.push_str(&format!(
            "query_url = \"{base}/xca/query\"\nretrieve_url = \"{base}/xca/retrieve\"\n"
        ));
    }
    entry
}

fn tls_toml(pki: &Pki, own: &CertFiles, participants: &Path) -> String {
    format!(
        "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nclient_ca_file = \"{}\"\ncrl_files = [\"{}\"]\n\
         [trust]\nparticipants_file = \"{}\"\n",
        own.cert.display(),
        own.key.display(),
        pki.ca_file.display(),
        pki.crl_file.display(),
        participants.display()
    )
}

fn xds_toml(home: &str, repository: &str) -> String {
    format!(
        "[xds]\nenabled = true\nhome_community_id = \"{home}\"\nrepository_unique_id = \"{repository}\"\n\
         source_id = \"{repository}.2\"\norganisation_name = \"Ziekenhuis {home}\"\nquiet_secs = 1\n"
    )
}

/// Gateway A's configuration: the remote source on, our assertion issuer, the workstation
/// as a local user, the C-MOVE destination.
fn a_toml(
    pki: &Pki,
    cert: &CertFiles,
    participants: &Path,
    idp: &SamlIdp,
    dest_port: u16,
) -> String {
    format!(
        "{tls}[trust]\nown_ura = \"{URA_A}\"\n[trust.saml]\nissuer = \"{ISSUER_A}\"\nsigning_cert_file = \"{}\"\nsigning_key_file = \"{}\"\n\
         [remote]\nenabled = true\ntimeout_secs = {PEER_TIMEOUT_SECS}\n\
         [[dimse.peers]]\nae_title = \"{WORKSTATION}\"\nhost = \"127.0.0.1\"\nport = 1\norganisation_ura = \"{URA_A}\"\n\
         role = \"{TEST_ROLE}\"\npurpose_of_use = \"{TEST_PURPOSE}\"\nuzi = \"{TEST_UZI}\"\n\
         [[dimse.peers]]\nae_title = \"{DEST}\"\nhost = \"127.0.0.1\"\nport = {dest_port}\n",
        idp.cert_pem.display(),
        idp.key_pem.display(),
        tls = tls_toml(pki, cert, participants),
    )
}

/// Gateway B's configuration: publishing, A's issuer trusted for A's certificate, consent.
fn b_toml(
    pki: &Pki,
    cert: &CertFiles,
    participants: &Path,
    idp: &SamlIdp,
    mitz: &MitzSim,
) -> String {
    format!(
        "{tls}{xds}[trust]\nown_ura = \"{URA_B}\"\n{issuer}[trust.consent]\nurl = \"{}\"\npurposes = [\"{TEST_PURPOSE}\"]\ntimeout_secs = 5\n",
        mitz.url,
        tls = tls_toml(pki, cert, participants),
        xds = xds_toml(HOME_B, REPOSITORY_B),
        issuer = idp.config_toml(&["GtK A"], false),
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

/// A Study Root C-FIND at STUDY level by Patient ID: (the Study Instance UIDs found, the
/// final status line seen, the whole output).
async fn find_studies(aet: &str, port: u16) -> (Vec<String>, bool, String) {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().display().to_string();
    let keys = vec![
        "QueryRetrieveLevel=STUDY".to_string(),
        format!("PatientID={BSN}"),
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
    let mut args = beeldbrug::testdata::GenerateArgs::with_defaults(dir.to_path_buf());
    args.patients = 1;
    args.ct_slices = 4;
    args.mr_slices = 0;
    args.frame_size = 32;
    let files = beeldbrug::testdata::generate(&args).unwrap();
    for f in &files {
        let set = format!("(0010,0020)={BSN}");
        let out = common::dcmtk("dcmodify", &["-nb", "-m", &set, f.path.to_str().unwrap()]);
        assert!(out.status.success(), "dcmodify: {out:?}");
    }
    let study = files[0].study_uid.clone();
    assert!(files.iter().all(|f| f.study_uid == study), "one study");
    (study, part10_under(dir))
}

/// A TCP listener that accepts connections and never says a word (a hanging peer).
async fn silent_peer() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (port, task)
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_a_finds_and_moves_a_study_that_gateway_b_holds() {
    let dir = tempfile::tempdir().unwrap();
    let (study, held) = study_files(&dir.path().join("study"));
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

    // A hanging peer: the C-FIND answers with the study (B's row, and A's cache now holds
    // it too) and a failure status (incomplete) within the timeout.
    let (silent_port, _silent) = silent_peer().await;
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
