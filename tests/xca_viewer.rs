//! OHIF at hospital A opens a study that only hospital B holds (issue 15 §6, "DICOMweb for
//! local viewers"; the two-gateway test's "OHIF against A opens it").
//!
//! B is a beeldbrug gateway in front of its own Orthanc, publishing to its XDS registry and
//! asking `beeldbrug mitz-sim` for consent; A has the remote source on (mutual TLS to B, its
//! own XUA issuer, Mitz's open question for localisation) and serves DICOMweb inside the
//! hospital (plain HTTP, CORS for the viewer's origin, bearer JWTs of A's identity provider).
//! The prebuilt OHIF viewer runs in headless Chromium (tests/ohif/run.mjs) against A's
//! `/dicomweb`; every request to A carries a token of a local user (UZI, role, purpose of
//! use): one token per request, since A spends a JWT's `jti` on its first use.
//!
//! - A clinician's token (no patient in it): the study list opened for the patient
//!   (`/?mrn=<BSN>`, which OHIF sends as `00100020=*<BSN>*`) shows B's study, asked of B by
//!   ITI-38; selecting it shows its series with a thumbnail (A fetches the study from B by
//!   ITI-39 and RAD-75 for OHIF's series search, then answers from its cache), and the viewer
//!   renders a CT image. No request to A fails; A holds the whole study, fetched once; both
//!   ends audit the exchange.
//! - A token bound to the patient (a viewer launched in the patient's context), against a
//!   fresh A (empty cache, nothing remembered): the list without any filter shows B's study
//!   (the token's patient scopes every search), and the viewer opens it.
//! - Refusals: without a token, and with a token bound to another patient, A asks B nothing.
//!
//! Needs Orthanc (with its DICOMweb plugin), DCMTK, Node.js 20+, `npm ci` in `tests/ohif` and
//! Debian's `chromium` (`bash .ci/run` installs them).

mod common;
#[path = "common/mitz.rs"]
mod mitz;
#[path = "common/tokens.rs"]
mod tokens;
#[path = "common/two_hospitals.rs"]
mod two_hospitals;

use beeldbrug::core::Selection;
use common::gateway_mode::{audit_details, becomes_complete};
use common::http::request;
use common::ohif::{require_ohif_setup, run_viewer_with};
use common::pki::{participant, CertFiles, Pki};
use common::Gateway;
use mitz::MitzSim;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokens::{mint_jwt, JwtIdp, KeyKind, SamlIdp};
use two_hospitals::{b_with_orthanc, study_sized, BSN, HOME_B, ISSUER_A, URA_A, URA_B};

/// Another patient (passes the 11-test), of whom B holds nothing.
const OTHER_BSN: &str = "123456782";
/// Tokens handed to the viewer: more than it makes requests (about 15 for this study).
const TOKENS: usize = 400;

/// Gateway A for viewers inside hospital A: DICOMweb over plain HTTP with CORS, bearer JWTs
/// of `jwt`; the remote source with A's certificate towards B and A's XUA issuer `idp`,
/// localisation by Mitz's open question.
fn a_toml(
    pki: &Pki,
    cert: &CertFiles,
    participants: &Path,
    idp: &SamlIdp,
    jwt: &JwtIdp,
    mitz: &MitzSim,
) -> String {
    format!(
        "[trust]\nparticipants_file = \"{}\"\nown_ura = \"{URA_A}\"\n\
         [trust.saml]\nissuer = \"{ISSUER_A}\"\nsigning_cert_file = \"{}\"\nsigning_key_file = \"{}\"\n\
         [remote]\nenabled = true\ntimeout_secs = 10\nlocalisation = \"mitz\"\n\
         client_cert_file = \"{}\"\nclient_key_file = \"{}\"\nca_file = \"{}\"\n\
         [dicomweb]\ncors_origins = [\"*\"]\n{}{}",
        participants.display(),
        idp.cert_pem.display(),
        idp.key_pem.display(),
        cert.cert.display(),
        cert.key.display(),
        pki.ca_file.display(),
        mitz.config_toml(),
        jwt.config_toml(),
    )
}

/// `n` tokens of a local user of A (UZI, role, purpose of use from the test claims), bound
/// to patient `bsn` or to none, one per line in a file for run.mjs.
fn tokens_file(dir: &Path, jwt: &JwtIdp, bsn: Option<&str>, n: usize) -> PathBuf {
    let tokens: Vec<String> = (0..n).map(|_| token(jwt, bsn)).collect();
    let file = dir.join(format!("tokens-{}.txt", bsn.unwrap_or("clinician")));
    std::fs::write(&file, tokens.join("\n")).unwrap();
    file
}

fn token(jwt: &JwtIdp, bsn: Option<&str>) -> String {
    mint_jwt(jwt, |c| {
        c["ura"] = URA_A.into();
        match bsn {
            Some(bsn) => c["bsn"] = bsn.into(),
            None => {
                c.as_object_mut().unwrap().remove("bsn");
            }
        }
    })
}

/// QIDO-RS at A with one token (or none): (status, Study Instance UIDs).
async fn search(a: &Gateway, path: &str, token: Option<String>) -> (u16, Vec<String>) {
    let authorization = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Accept", "application/dicom+json")];
    if let Some(a) = &authorization {
        headers.push(("Authorization", a));
    }
    let r = request(
        a.http_port,
        "GET",
        &format!("/dicomweb{path}"),
        &headers,
        b"",
    )
    .await;
    let studies = match r.status {
        200 => r
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row["0020000D"]["Value"][0].as_str().unwrap().to_string())
            .collect(),
        _ => Vec::new(),
    };
    (r.status, studies)
}

/// The viewer flow against A: OHIF's result, checked (one study listed, opened, rendered,
/// no failed request to A), and the CT study it opened.
async fn open_in_ohif(a: &Gateway, options: Vec<String>) -> serde_json::Value {
    let ohif = require_ohif_setup();
    let run = run_viewer_with(ohif, a.dicomweb_url(), 60000, options).await;
    let result = run.assert_opened(1);
    // What OHIF asked A for, one example per kind (in the test's output).
    for kind in result["gateway_request_kinds"]
        .as_array()
        .into_iter()
        .flatten()
    {
        eprintln!(
            "OHIF → A: {} {} ({}) × {}: {}",
            kind["method"], kind["resource"], kind["accept"], kind["count"], kind["status"]
        );
    }
    result
}

#[tokio::test(flavor = "multi_thread")]
async fn ohif_at_a_opens_a_study_that_only_b_holds() {
    require_ohif_setup();
    let dir = tempfile::tempdir().unwrap();
    // Six 128 × 128 CT images: enough for the viewport check, small enough to fetch twice.
    let files = study_sized(&dir.path().join("study"), BSN, 6, 128);
    let study = files[0].study_uid.clone();
    let pki = Pki::new();
    let cert_a = pki.issue_server("gateway-a", &["127.0.0.1", "localhost"]);
    let cert_b = pki.issue_server("gateway-b", &["127.0.0.1", "localhost"]);
    let idp_a = SamlIdp::new(dir.path(), ISSUER_A, KeyKind::Rsa);
    // Mitz: the patient permits, and B holds data of the patient (the open question's answer).
    let mitz = MitzSim::start_table(&format!(
        "[[consent]]\nbsn = \"{BSN}\"\nholder_ura = \"{URA_B}\"\ndecision = \"Permit\"\n"
    ));
    let (b, _side_b) =
        b_with_orthanc(dir.path(), &pki, (&cert_a, &cert_b), &idp_a, &mitz, &files).await;
    let base_b = format!("https://127.0.0.1:{}", b.http_port);
    let participants_a = dir.path().join("participants-a.toml");
    std::fs::write(
        &participants_a,
        participant("GtK B", URA_B, HOME_B, &cert_b, Some(&base_b)),
    )
    .unwrap();
    let jwt = JwtIdp::new(dir.path(), "https://idp.ziekenhuis-a.test", "beeldbrug-a");
    let toml_a = a_toml(&pki, &cert_a, &participants_a, &idp_a, &jwt, &mitz);
    let a = Gateway::start_in(&dir.path().join("data-a"), &toml_a).await;

    // B publishes the study (only its PACS holds it) when A first asks for the patient:
    // QIDO-RS at A until B's answer names it.
    let by_patient = format!("/studies?PatientID={BSN}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, found) = search(&a, &by_patient, Some(token(&jwt, None))).await;
        assert!(status == 200 || status == 204, "QIDO-RS at A: {status}");
        if found == std::slice::from_ref(&study) {
            break;
        }
        assert!(found.is_empty(), "only B's study: {found:?}");
        assert!(
            Instant::now() < deadline,
            "B's study never found through A: A's Mitz question {:?}, ITI-38 {:?}",
            audit_details(a.context(), "MITZ-OPEN-QUESTION").await,
            audit_details(a.context(), "ITI-38").await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Without a token, and with a token bound to another patient: nothing from B, and B
    // is not asked.
    let asked_b = audit_details(b.context(), "ITI-38").await.len();
    let (status, found) = search(&a, &by_patient, None).await;
    assert!(found.is_empty(), "no user, no remote study: {status}");
    let (status, found) = search(&a, &by_patient, Some(token(&jwt, Some(OTHER_BSN)))).await;
    // (204: A holds nothing of the patient to refuse; 403 where it does.)
    assert!(
        (status == 204 || status == 403) && found.is_empty(),
        "a token of another patient: {status}"
    );
    assert_eq!(
        audit_details(b.context(), "ITI-38").await.len(),
        asked_b,
        "B was asked without a user for the patient"
    );

    // OHIF with a clinician's tokens, the study list opened for the patient.
    let tokens = tokens_file(dir.path(), &jwt, None, TOKENS);
    let result = open_in_ohif(
        &a,
        vec![
            "--mrn".into(),
            BSN.into(),
            "--bearer-tokens".into(),
            tokens.display().to_string(),
        ],
    )
    .await;
    let pretty = serde_json::to_string_pretty(&result).unwrap();
    assert_eq!(result["ct_study"], study.as_str(), "{pretty}");
    assert!(result["qido_series"].as_u64() >= Some(1), "{pretty}");
    let used = result["bearer_tokens_used"].as_u64().unwrap_or(0);
    assert!(
        used > 0 && used < TOKENS as u64,
        "every request carried a token of its own: {used}"
    );
    // A holds the whole study, fetched from B once (for OHIF's series search; metadata,
    // frames and thumbnails then came from A's cache).
    let ctx = a.context();
    let whole = Selection {
        study_uids: vec![study.clone()],
        ..Default::default()
    };
    assert!(becomes_complete(ctx, &study).await, "A cached the study");
    assert_eq!(
        ctx.index.count_instances(&whole).await.unwrap(),
        files.len() as u64
    );
    let fetched = audit_details(ctx, "RAD-75").await;
    assert!(
        fetched.len() == 1
            && fetched[0].0 == "success"
            && fetched[0].1.contains("outgoing to GtK B"),
        "A fetched the study from B once: {fetched:?}"
    );
    let sent = audit_details(b.context(), "RAD-75").await;
    assert!(
        !sent.is_empty() && sent.iter().all(|(outcome, _)| outcome == "success"),
        "B sent it to A: {sent:?}"
    );
    // OHIF's searches through A were answered, every one as the user's (no refusal).
    let searches = audit_details(ctx, "QIDO-RS").await;
    assert!(
        searches.iter().all(|(outcome, _)| outcome == "success"),
        "{searches:?}"
    );
    a.stop().await;

    // A fresh A (empty cache, no study remembered) whose identity provider issues session
    // tokens (`reusable = true`, the issuer's table is the last of A's configuration): OHIF
    // sends one token, bound to the patient, with every request, and no filter: the
    // token's patient scopes every search, so B is asked and the study opens.
    let toml_session = format!("{toml_a}reusable = true\n");
    let a = Gateway::start_in(&dir.path().join("data-a-fresh"), &toml_session).await;
    let session = token(&jwt, Some(BSN));
    let result = open_in_ohif(&a, vec!["--bearer-token".into(), session]).await;
    assert!(
        result["bearer_tokens_used"].as_u64().unwrap_or(0) > 1,
        "one token, many requests: {}",
        result["bearer_tokens_used"]
    );
    assert_eq!(result["ct_study"], study.as_str());
    assert!(becomes_complete(a.context(), &study).await, "A cached it");
    a.stop().await;
    b.stop().await;
}
