//! Two hospitals, A and B, for the XCA-I tests (issue 15): their identities, and B as a
//! beeldbrug gateway in front of its own Orthanc, publishing to its XDS registry (the study
//! only in that Orthanc, fetched by C-GET when A asks), asking `beeldbrug mitz-sim` for
//! consent, trusting A's XUA issuer for A's certificate only.
//!
//! Included with `#[path]` next to `mod common`, `mod mitz` and `mod tokens` (it uses them):
//! ```ignore
//! #[path = "common/two_hospitals.rs"]
//! mod two_hospitals;
//! ```
#![allow(dead_code)]

use crate::common::gateway_mode::{dataset_of, pacs_toml, syntax_of};
use crate::common::http::request;
use crate::common::orthanc::{self, Orthanc};
use crate::common::pki::{participant, tls_toml, CertFiles, Pki};
use crate::common::Gateway;
use crate::mitz::MitzSim;
use crate::tokens::{SamlIdp, TEST_PURPOSE};
use std::collections::BTreeMap;
use std::path::Path;

/// The patient (a test BSN that passes the 11-test).
pub const BSN: &str = "999999990";
pub const URA_A: &str = "11110000";
pub const URA_B: &str = "22220000";
pub const HOME_A: &str = "urn:oid:1.2.3.4.5.21";
pub const HOME_B: &str = "urn:oid:1.2.3.4.5.22";
pub const REPOSITORY_B: &str = "1.2.3.4.5.22.1";
/// A's XUA issuer: the assertions A issues for its local users.
pub const ISSUER_A: &str = "https://xua.gateway-a.test";

/// Instances by SOP Instance UID: (transfer syntax, data set bytes after the file meta).
pub type Held = BTreeMap<String, (String, Vec<u8>)>;

/// `[xds]`: publishing as community `home`, repository `repository`, after 1 s of quiet.
pub fn xds_toml(home: &str, repository: &str) -> String {
    format!(
        "[xds]\nenabled = true\nhome_community_id = \"{home}\"\nrepository_unique_id = \"{repository}\"\n\
         source_id = \"{repository}.2\"\norganisation_name = \"Ziekenhuis {home}\"\nquiet_secs = 1\n"
    )
}

/// Gateway B's configuration: publishing, A's issuer trusted for A's certificate, consent.
pub fn b_toml(
    pki: &Pki,
    cert: &CertFiles,
    participants: &Path,
    idp: &SamlIdp,
    mitz: &MitzSim,
) -> String {
    format!(
        "{tls}{xds}[trust]\nown_ura = \"{URA_B}\"\n{issuer}[trust.consent]\nurl = \"{}\"\npurposes = [\"{TEST_PURPOSE}\"]\ntimeout_secs = 5\ncache_secs = 0\ncustodian_ura = \"{URA_B}\"\n",
        mitz.url,
        tls = tls_toml(pki, cert, participants),
        xds = xds_toml(HOME_B, REPOSITORY_B),
        issuer = idp.config_toml(&["GtK A"], false),
    )
}

/// Hospital B's side: its Orthanc holding the study, what that Orthanc holds, and gateway
/// B's configuration in front of it (its participant list naming A, without endpoints: B
/// does not call A).
pub struct HospitalB {
    pub orthanc: Orthanc,
    pub held: Held,
    pub toml: String,
}

/// [`HospitalB`] in `dir` (`orthanc-b/`, `participants-b.toml`): `files` stored into its
/// Orthanc by storescu, B's PACS fetched from by C-GET.
pub async fn hospital_b(
    dir: &Path,
    pki: &Pki,
    (cert_a, cert_b): (&CertFiles, &CertFiles),
    idp_a: &SamlIdp,
    mitz: &MitzSim,
    files: &[beeldbrug::testdata::GeneratedFile],
) -> HospitalB {
    let dir_orthanc = dir.join("orthanc-b");
    std::fs::create_dir_all(&dir_orthanc).unwrap();
    let orthanc = Orthanc::start(&dir_orthanc).await;
    orthanc::store(orthanc.dicom_port, "ORTHANC", files);
    let held = orthanc_holds(orthanc.http_port).await;
    assert_eq!(held.len(), files.len(), "B's Orthanc holds the study");
    let participants = dir.join("participants-b.toml");
    std::fs::write(
        &participants,
        participant("GtK A", URA_A, HOME_A, cert_a, None),
    )
    .unwrap();
    let toml = format!(
        "{}{}",
        b_toml(pki, cert_b, &participants, idp_a, mitz),
        pacs_toml("ORTHANC", orthanc.dicom_port, "c-get", "")
    );
    HospitalB {
        orthanc,
        held,
        toml,
    }
}

/// Gateway B running in front of its Orthanc ([`hospital_b`]); its base URL is
/// `https://127.0.0.1:{b.http_port}`.
pub async fn b_with_orthanc(
    dir: &Path,
    pki: &Pki,
    certs: (&CertFiles, &CertFiles),
    idp_a: &SamlIdp,
    mitz: &MitzSim,
    files: &[beeldbrug::testdata::GeneratedFile],
) -> (Gateway, HospitalB) {
    let side = hospital_b(dir, pki, certs, idp_a, mitz, files).await;
    let b = Gateway::start(&side.toml).await;
    (b, side)
}

/// A study of patient `bsn` (set by dcmodify) of `slices` CT images of `frame` × `frame`
/// pixels, for storescu.
pub fn study_sized(
    dir: &Path,
    bsn: &str,
    slices: u32,
    frame: u32,
) -> Vec<beeldbrug::testdata::GeneratedFile> {
    let mut args = beeldbrug::testdata::GenerateArgs::with_defaults(dir.to_path_buf());
    args.patients = 1;
    args.ct_slices = slices;
    args.mr_slices = 0;
    args.frame_size = frame;
    let files = beeldbrug::testdata::generate(&args).unwrap();
    for f in &files {
        let set = format!("(0010,0020)={bsn}");
        let out = crate::common::dcmtk("dcmodify", &["-nb", "-m", &set, f.path.to_str().unwrap()]);
        assert!(out.status.success(), "dcmodify: {out:?}");
    }
    files
}

/// What an Orthanc holds, read back over its REST API (`/instances/{id}/file`).
pub async fn orthanc_holds(http_port: u16) -> Held {
    let r = request(http_port, "GET", "/instances", &[], b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let ids: Vec<String> = serde_json::from_value(r.json()).expect("instance ids");
    let mut held = Held::new();
    for id in ids {
        let r = request(http_port, "GET", &format!("/instances/{id}/file"), &[], b"").await;
        assert_eq!(r.status, 200, "{}", r.text());
        let (uid, dataset) = dataset_of(&r.body);
        held.insert(uid, (syntax_of(&r.body), dataset));
    }
    held
}
