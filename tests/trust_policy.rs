//! Issue 5, end to end: one decision for every query and retrieval on every front. A remote
//! organisation with a valid token asks QIDO-RS, WADO-RS, C-FIND and C-MOVE for patients whose
//! consent the Mitz simulator answers Permit / Deny / Indeterminate / NotApplicable; a token
//! bound to one patient cannot reach another; a role that may not see images is refused; and
//! every refusal leaves exactly one audit record.

mod common;
#[path = "common/mitz.rs"]
mod mitz;
#[path = "common/tokens.rs"]
mod tokens;

use beeldbrug::trust::consent::ConsentDecision;
use common::http::request;
use common::Gateway;
use mitz::MitzSim;
use std::collections::BTreeMap;
use tokens::{mint_jwt, JwtIdp};

const ISSUER: &str = "https://auth.test.example";
const AUDIENCE: &str = "beeldbrug-policy-test";
const OWN_URA: &str = "12345678";
const REMOTE_URA: &str = "87654321";
const SPECIALIST: &str = "01.015";
/// HL7 v3 PurposeOfUse (2.16.840.1.113883.1.11.20448): treatment.
const PURPOSE: &str = "TREAT";

/// Tokens of the test issuer for the remote organisation: a fresh `jti` each.
struct Issuer(JwtIdp);

impl Issuer {
    fn token(&self, role: &str, bsn: Option<&str>) -> String {
        self.token_of(REMOTE_URA, role, bsn)
    }

    fn token_of(&self, ura: &str, role: &str, bsn: Option<&str>) -> String {
        mint_jwt(&self.0, |c| {
            c["ura"] = ura.into();
            c["role"] = role.into();
            c["purpose_of_use"] = PURPOSE.into();
            match bsn {
                Some(bsn) => c["bsn"] = bsn.into(),
                None => {
                    c.as_object_mut().unwrap().remove("bsn");
                }
            }
        })
    }
}

struct Setup {
    gateway: Gateway,
    _mitz: MitzSim,
    issuer: Issuer,
    /// Patient (BSN) → its study UIDs; patients[0..4] get Permit, Deny, Indeterminate,
    /// NotApplicable.
    studies: BTreeMap<String, Vec<String>>,
    patients: Vec<String>,
    _dir: tempfile::TempDir,
}

const DECISIONS: [ConsentDecision; 4] = [
    ConsentDecision::Permit,
    ConsentDecision::Deny,
    ConsentDecision::Indeterminate,
    ConsentDecision::NotApplicable,
];

/// Tokens required, specialists only.
const STRICT: &str = "[trust]\nrequire_token = true\nallowed_roles = [\"01.015\"]\n";

async fn setup(move_destination_port: u16) -> Setup {
    setup_with(move_destination_port, STRICT).await
}

async fn setup_with(move_destination_port: u16, extra_toml: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let mut args = beeldbrug::testdata::GenerateArgs::with_defaults(dir.path().join("data"));
    args.patients = 4;
    args.ct_slices = 2;
    args.mr_slices = 1;
    args.frame_size = 32;
    let files = beeldbrug::testdata::generate(&args).unwrap();
    let mut studies: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut patients = Vec::new();
    for f in &files {
        if !patients.contains(&f.patient_id) {
            patients.push(f.patient_id.clone());
        }
        let list = studies.entry(f.patient_id.clone()).or_default();
        if !list.contains(&f.study_uid) {
            list.push(f.study_uid.clone());
        }
    }
    assert_eq!(patients.len(), 4, "four patients generated");
    let rows: Vec<(&str, ConsentDecision)> =
        patients.iter().map(String::as_str).zip(DECISIONS).collect();
    let mitz = MitzSim::start(&rows);
    let issuer = Issuer(JwtIdp::new(dir.path(), ISSUER, AUDIENCE));
    let toml = format!(
        r#"
[[dimse.peers]]
ae_title = "REMOTE_GTK"
host = "127.0.0.1"
port = {move_destination_port}
organisation_ura = "{REMOTE_URA}"
role = "{SPECIALIST}"
purpose_of_use = "{PURPOSE}"
[dicomweb]
allow_anonymous = false
[trust]
own_ura = "{OWN_URA}"
{}
[trust.consent]
url = "{}"
purposes = ["{PURPOSE}"]
cache_secs = 30
timeout_secs = 5
{extra_toml}
"#,
        issuer.0.config_toml(),
        mitz.url
    );
    let gateway = Gateway::start(&toml).await;
    let port = gateway.port.to_string();
    let mut store_args = vec!["-aec", "BEELDBRUG", "127.0.0.1", port.as_str(), "+sd", "+r"];
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    store_args.push(data);
    let out = common::dcmtk("storescu", &store_args);
    assert!(out.status.success(), "storescu: {out:?}");
    Setup {
        gateway,
        _mitz: mitz,
        issuer,
        studies,
        patients,
        _dir: dir,
    }
}

async fn get(s: &Setup, path: &str, token: &str, accept: &str) -> common::http::HttpResponse {
    let auth = format!("Bearer {token}");
    request(
        s.gateway.http_port,
        "GET",
        path,
        &[("Authorization", auth.as_str()), ("Accept", accept)],
        b"",
    )
    .await
}

/// A GET with a fresh specialist's token (each token once: the `jti` replay cache).
async fn get_as_specialist(s: &Setup, path: &str, accept: &str) -> common::http::HttpResponse {
    get(s, path, &s.issuer.token(SPECIALIST, None), accept).await
}

const MULTIPART: &str = "multipart/related; type=\"application/dicom\"";
const JSON: &str = "application/dicom+json";

async fn audit_records(s: &Setup) -> Vec<beeldbrug::store::AuditEvent> {
    s.gateway
        .context()
        .index
        .audit_events(100_000)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn qido_and_wado_follow_consent() {
    let s = setup(common::free_port()).await;
    for (patient, decision) in s.patients.iter().zip(DECISIONS) {
        let study = &s.studies[patient][0];
        let before = audit_records(&s).await.len();
        let qido =
            get_as_specialist(&s, &format!("/dicomweb/studies?PatientID={patient}"), JSON).await;
        let wado = get_as_specialist(&s, &format!("/dicomweb/studies/{study}"), MULTIPART).await;
        let metadata =
            get_as_specialist(&s, &format!("/dicomweb/studies/{study}/metadata"), JSON).await;
        if decision == ConsentDecision::Permit {
            assert_eq!(qido.status, 200, "{decision:?}: {}", qido.text());
            let found = qido.json();
            assert_eq!(found.as_array().unwrap().len(), s.studies[patient].len());
            assert_eq!(wado.status, 200, "{decision:?}: {}", wado.text());
            assert!(!common::http::multipart_parts(&wado).is_empty());
            assert_eq!(metadata.status, 200);
        } else {
            for r in [&qido, &wado, &metadata] {
                assert_eq!(r.status, 403, "{decision:?}: {}", r.text());
                assert!(
                    !r.text().contains(patient.as_str()),
                    "no patient data in a refusal"
                );
            }
            assert!(wado.text().contains("consent"), "{}", wado.text());
        }
        // Exactly one audit record per request, refusals included.
        let records = audit_records(&s).await;
        assert_eq!(records.len() - before, 3, "{decision:?}: {records:?}");
    }
    // A search without a patient key returns only the patients that consented.
    let all = get_as_specialist(&s, "/dicomweb/studies", JSON).await;
    assert_eq!(all.status, 200, "{}", all.text());
    let ids: Vec<String> = all
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["00100020"]["Value"][0].as_str().unwrap().to_string())
        .collect();
    assert!(!ids.is_empty());
    assert!(ids.iter().all(|id| id == &s.patients[0]), "{ids:?}");
    s.gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn token_bound_to_one_patient_cannot_reach_another() {
    let s = setup(common::free_port()).await;
    let (a, b) = (&s.patients[0], &s.patients[1]);
    let own = get(
        &s,
        &format!("/dicomweb/studies/{}", s.studies[a][0]),
        &s.issuer.token(SPECIALIST, Some(a)),
        MULTIPART,
    )
    .await;
    assert_eq!(own.status, 200, "{}", own.text());
    let other = get(
        &s,
        &format!("/dicomweb/studies/{}", s.studies[b][0]),
        &s.issuer.token(SPECIALIST, Some(a)),
        MULTIPART,
    )
    .await;
    assert_eq!(other.status, 403, "{}", other.text());
    assert!(other.text().contains("another patient"), "{}", other.text());
    // A search is narrowed to the bound patient; naming another one is refused.
    let search = get(
        &s,
        "/dicomweb/studies",
        &s.issuer.token(SPECIALIST, Some(a)),
        JSON,
    )
    .await;
    assert_eq!(search.status, 200);
    assert!(search
        .json()
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["00100020"]["Value"][0] == a.as_str()));
    let named = get(
        &s,
        &format!("/dicomweb/studies?PatientID={b}"),
        &s.issuer.token(SPECIALIST, Some(a)),
        JSON,
    )
    .await;
    assert_eq!(named.status, 403);
    s.gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_and_roles_are_checked_before_anything_is_read() {
    let s = setup(common::free_port()).await;
    let study = &s.studies[&s.patients[0]][0];
    let path = format!("/dicomweb/studies/{study}");
    let before = audit_records(&s).await.len();
    // No token at all.
    let none = request(
        s.gateway.http_port,
        "GET",
        &path,
        &[("Accept", MULTIPART)],
        b"",
    )
    .await;
    assert_eq!(none.status, 401);
    // A token that does not verify (signature cut off).
    let good = s.issuer.token(SPECIALIST, None);
    let cut = &good[..good.rfind('.').unwrap() + 4];
    assert_eq!(get(&s, &path, cut, MULTIPART).await.status, 401);
    // The same token twice: the second use is a replay.
    assert_eq!(get(&s, &path, &good, MULTIPART).await.status, 200);
    assert_eq!(get(&s, &path, &good, MULTIPART).await.status, 401);
    // A role that may not see images.
    let nurse = get(&s, &path, &s.issuer.token("30.000", None), MULTIPART).await;
    assert_eq!(nurse.status, 403, "{}", nurse.text());
    let records = audit_records(&s).await;
    let new = &records[before..];
    assert_eq!(new.len(), 5, "{new:?}");
    assert_eq!(
        new.iter().filter(|r| r.outcome == "refused").count(),
        4,
        "{new:?}"
    );
    s.gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dimse_find_and_move_follow_consent() {
    let destination = common::free_port();
    let s = setup(destination).await;
    let recv = tempfile::tempdir().unwrap();
    let dest_port = destination.to_string();
    let recv_path = recv.path().to_str().unwrap().to_string();
    // The remote organisation's own Storage SCP, the C-MOVE destination.
    let _storescp = common::peer::PeerProcess::spawn(
        "storescp",
        &common::require_tool("storescp"),
        &[
            "-aet".into(),
            "REMOTE_GTK".into(),
            "-od".into(),
            recv_path.clone(),
            dest_port.clone(),
        ],
        recv.path(),
    );
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let port = s.gateway.port.to_string();
    for (patient, decision) in s.patients.iter().zip(DECISIONS) {
        let find = common::dcmtk(
            "findscu",
            &[
                "-v",
                "-S",
                "-aet",
                "REMOTE_GTK",
                "-aec",
                "BEELDBRUG",
                "127.0.0.1",
                &port,
                "-k",
                "QueryRetrieveLevel=STUDY",
                "-k",
                &format!("PatientID={patient}"),
                "-k",
                "StudyInstanceUID",
            ],
        );
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&find.stdout),
            String::from_utf8_lossy(&find.stderr)
        );
        let answers = log.matches("(Pending)").count();
        let study = &s.studies[patient][0];
        let before = std::fs::read_dir(recv.path()).unwrap().count();
        let mv = common::dcmtk(
            "movescu",
            &[
                "-v",
                "-S",
                "-aet",
                "REMOTE_GTK",
                "-aec",
                "BEELDBRUG",
                "-aem",
                "REMOTE_GTK",
                "127.0.0.1",
                &port,
                "-k",
                "QueryRetrieveLevel=STUDY",
                "-k",
                &format!("StudyInstanceUID={study}"),
            ],
        );
        let mv_log = format!(
            "{}{}",
            String::from_utf8_lossy(&mv.stdout),
            String::from_utf8_lossy(&mv.stderr)
        );
        let received = std::fs::read_dir(recv.path()).unwrap().count() - before;
        if decision == ConsentDecision::Permit {
            assert!(log.contains(study.as_str()), "{decision:?}: {log}");
            assert_eq!(answers, s.studies[patient].len(), "{decision:?}: {log}");
            assert!(received > 0, "{decision:?}: {mv_log}");
        } else {
            assert!(!log.contains(study.as_str()), "{decision:?}: {log}");
            // PS3.7 C.5: 0124H "Refused: not authorized" (DCMTK does not name it).
            assert!(
                log.contains("Status: 0x124"),
                "{decision:?}: {answers} {log}"
            );
            assert!(mv_log.contains("Status: 0x124"), "{decision:?}: {mv_log}");
            assert_eq!(received, 0, "{decision:?}: {mv_log}");
        }
    }
    s.gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_association_is_audited_once() {
    let gateway = Gateway::start(
        "[dimse]\nallow_unknown_callers = false\n\
         [[dimse.peers]]\nae_title = \"NEARBY\"\nhost = \"localhost\"\nport = 104\n\
         [[dimse.peers]]\nae_title = \"FARAWAY\"\nhost = \"192.0.2.1\"\nport = 104\n",
    )
    .await;
    let port = gateway.port.to_string();
    // A known AE from its host is admitted (and C-ECHO leaves no record)...
    let near = common::dcmtk(
        "echoscu",
        &["-aet", "NEARBY", "-aec", "BEELDBRUG", "127.0.0.1", &port],
    );
    assert!(near.status.success(), "{near:?}");
    // ...a known AE from another address is not.
    let far = common::dcmtk(
        "echoscu",
        &["-aet", "FARAWAY", "-aec", "BEELDBRUG", "127.0.0.1", &port],
    );
    assert!(!far.status.success(), "{far:?}");
    let echo = common::dcmtk(
        "echoscu",
        &["-aet", "STRANGER", "-aec", "BEELDBRUG", "127.0.0.1", &port],
    );
    assert!(!echo.status.success(), "{echo:?}");
    let mut records = Vec::new();
    for _ in 0..50 {
        records = gateway.context().index.audit_events(100).await.unwrap();
        if records
            .iter()
            .filter(|r| r.operation == "A-ASSOCIATE")
            .count()
            >= 2
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let refused: Vec<_> = records
        .iter()
        .filter(|r| r.operation == "A-ASSOCIATE")
        .collect();
    assert_eq!(refused.len(), 2, "{records:?}");
    assert!(refused.iter().all(|r| r.outcome == "refused"));
    let actors: Vec<&str> = refused.iter().map(|r| r.actor.as_str()).collect();
    assert!(
        actors.contains(&"STRANGER") && actors.contains(&"FARAWAY"),
        "{actors:?}"
    );
    gateway.stop().await;
}

/// The whole path of issue 5's "done": a remote gateway with a participant certificate (mTLS),
/// a valid token and consent retrieves a study over HTTPS with curl; without consent it is
/// refused; the audit record names the participant and the organisation.
#[tokio::test(flavor = "multi_thread")]
async fn remote_gateway_with_certificate_token_and_consent_retrieves_a_study() {
    let pki = common::pki::Pki::new();
    let tls = tls_toml(&pki);
    let s = setup_with(common::free_port(), &format!("{tls}{STRICT}")).await;
    let curl = |study: &str, token: &str| curl_study(&pki, s.gateway.http_port, study, Some(token));
    let permitted = &s.studies[&s.patients[0]][0];
    let (status, body) = curl(permitted, &s.issuer.token(SPECIALIST, None));
    assert_eq!(status, "200", "{}", String::from_utf8_lossy(&body));
    assert!(
        body.windows(4).any(|w| w == b"DICM"),
        "a DICOM part arrived"
    );
    let denied = &s.studies[&s.patients[1]][0];
    let (status, _) = curl(denied, &s.issuer.token(SPECIALIST, None));
    assert_eq!(status, "403");
    let records = audit_records(&s).await;
    let wado: Vec<_> = records
        .iter()
        .filter(|r| r.operation == "WADO-RS")
        .collect();
    assert_eq!(wado.len(), 2, "{wado:?}");
    assert_eq!(wado[0].outcome, "success");
    assert_eq!(wado[0].actor, "GtK Oost", "the participant is the actor");
    assert_eq!(wado[1].outcome, "refused");
    s.gateway.stop().await;
}

/// NEN 7513: the trail per patient is for our own organisation; a remote caller is refused,
/// and each read (refusals too) is itself recorded.
#[tokio::test(flavor = "multi_thread")]
async fn only_our_own_organisation_reads_the_audit_trail() {
    let s = setup(common::free_port()).await;
    let patient = &s.patients[0];
    let path = format!("/admin/audit?bsn={patient}");
    let remote = get_as_specialist(&s, &path, JSON).await;
    assert_eq!(remote.status, 403, "{}", remote.text());
    let own = get(
        &s,
        &path,
        &s.issuer.token_of(OWN_URA, SPECIALIST, None),
        JSON,
    )
    .await;
    assert_eq!(own.status, 200, "{}", own.text());
    let trail = own.json();
    assert!(trail.to_string().contains("C-STORE"), "{trail}");
    // A token bound to another patient does not read this one's trail.
    let bound = get(
        &s,
        &path,
        &s.issuer.token_of(OWN_URA, SPECIALIST, Some(&s.patients[1])),
        JSON,
    )
    .await;
    assert_eq!(bound.status, 403, "{}", bound.text());
    let reads = audit_records(&s)
        .await
        .into_iter()
        .filter(|r| r.operation == "AUDIT-READ")
        .count();
    assert_eq!(reads, 3);
    s.gateway.stop().await;
}

/// `[tls]` (mTLS with the test PKI) and a participants file naming the test client as
/// "GtK Oost" of the remote organisation.
fn tls_toml(pki: &common::pki::Pki) -> String {
    let participants = pki.path().join("participants.toml");
    std::fs::write(
        &participants,
        common::pki::Pki::participants_toml(&[(
            "GtK Oost",
            REMOTE_URA,
            "urn:oid:2.16.528.1.1007.3.3.87654321",
            &pki.client,
        )]),
    )
    .unwrap();
    format!(
        "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nclient_ca_file = \"{}\"\ncrl_files = [\"{}\"]\n\
         [trust]\nparticipants_file = \"{}\"\n",
        pki.server.cert.display(),
        pki.server.key.display(),
        pki.ca_file.display(),
        pki.crl_file.display(),
        participants.display()
    )
}

/// GET a study over HTTPS with curl as the test client ("GtK Oost"): the status and body.
fn curl_study(
    pki: &common::pki::Pki,
    port: u16,
    study: &str,
    token: Option<&str>,
) -> (String, Vec<u8>) {
    let out_dir = tempfile::tempdir().unwrap();
    let body = out_dir.path().join("body");
    let mut cmd = std::process::Command::new(common::require_tool("curl"));
    cmd.args(["-sS", "--max-time", "20", "-o"])
        .arg(&body)
        .args(["-w", "%{http_code}", "--cacert"])
        .arg(&pki.ca_file)
        .arg("--cert")
        .arg(&pki.client.cert)
        .arg("--key")
        .arg(&pki.client.key)
        .args(["-H", &format!("Accept: {MULTIPART}")]);
    if let Some(token) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {token}")]);
    }
    let out = cmd
        .arg(format!("https://127.0.0.1:{port}/dicomweb/studies/{study}"))
        .output()
        .expect("curl");
    let status = String::from_utf8_lossy(&out.stdout).to_string();
    (status, std::fs::read(&body).unwrap_or_default())
}

/// A participant that presents no token (tokens not required) is still another
/// organisation: its retrieves need the patient's consent like a token holder's.
#[tokio::test(flavor = "multi_thread")]
async fn a_participant_without_a_token_still_needs_consent() {
    let pki = common::pki::Pki::new();
    let s = setup_with(common::free_port(), &tls_toml(&pki)).await;
    let port = s.gateway.http_port;
    let (status, body) = curl_study(&pki, port, &s.studies[&s.patients[0]][0], None);
    assert_eq!(status, "200", "{}", String::from_utf8_lossy(&body));
    let (status, body) = curl_study(&pki, port, &s.studies[&s.patients[1]][0], None);
    assert_eq!(status, "403", "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("consent"));
    s.gateway.stop().await;
}
