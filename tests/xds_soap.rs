//! Issue 14, the SOAP front: RAD-69 / RAD-75 (and ITI-43 / ITI-39) retrieves answered to an
//! independent SOAP client (zeep, driven by the IHE WSDLs in tests/schemas/ihe/wsdl) over mTLS
//! with an XUA assertion signed by xmlsec1, byte-exact as stored by DCMTK storescu; requests and
//! answers valid against the SOAP 1.2, WS-Addressing, WS-Security, XDS.b and XDS-I.b schemas
//! (xmllint); consent Deny answered like an unknown instance; every refused assertion a Fault
//! with one audit record; bad input a clean Fault while the server keeps serving; a study only
//! the PACS (Orthanc) holds streamed by RAD-75.

mod common;
#[path = "common/mitz.rs"]
mod mitz;
#[path = "common/tokens.rs"]
mod tokens;

use beeldbrug::trust::consent::ConsentDecision;
use common::Gateway;
use mitz::MitzSim;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tokens::{AssertionSpec, JwtIdp, KeyKind, SamlIdp};

const HOME: &str = "urn:oid:1.2.3.4.5.14";
const REPOSITORY: &str = "1.2.3.4.5.14.1";
const OWN_URA: &str = "87654321";
const XUA_ISSUER: &str = "https://xua.gtk-oost.test";
const JWT_ISSUER: &str = "https://auth.hospital.test";
const AUDIENCE: &str = "beeldbrug-soap-test";
const IMPLICIT_LE: &str = "1.2.840.10008.1.2";
const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";

fn xds_toml() -> String {
    format!(
        "[xds]\nenabled = true\nhome_community_id = \"{HOME}\"\nrepository_unique_id = \"{REPOSITORY}\"\n\
         source_id = \"1.2.3.4.5.14.2\"\norganisation_name = \"Ziekenhuis Test\"\n"
    )
}

/// A valid assertion of `issuer` not bound to one patient (the tests' patients are
/// generated, the test BSN is not one of them).
fn spec(issuer: &str) -> AssertionSpec {
    AssertionSpec::valid(issuer).without("resource-id")
}

/// JWT claims not bound to one patient.
fn unbound(claims: &mut Value) {
    claims.as_object_mut().unwrap().remove("bsn");
}

fn wsdl(name: &str) -> PathBuf {
    tokens::schemas_dir().join("ihe/wsdl").join(name)
}

/// How zeep reaches the gateway.
#[derive(Clone)]
struct Client {
    url_base: String,
    cert: Option<(PathBuf, PathBuf, PathBuf)>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tx {
    Rad69,
    Rad75,
    Iti43,
    Iti39,
    Iti38,
}

impl Client {
    /// Run zeep_client.py; the JSON it prints, and the directory with the envelopes.
    fn call(
        &self,
        tx: Tx,
        docs: &Value,
        syntaxes: &[&str],
        assertion: Option<&Path>,
        bearer: Option<&str>,
    ) -> (Value, tempfile::TempDir) {
        let out = tempfile::tempdir().unwrap();
        let (wsdl_file, binding, operation, path, kind) = match tx {
            Tx::Rad69 => (
                "XDS-I.b_ImagingDocumentSource.wsdl",
                "{urn:ihe:rad:xdsi-b:2009}ImagingDocumentSource_Binding",
                "ImagingDocumentSource_RetrieveImagingDocumentSet",
                "/xds/repository",
                "imaging",
            ),
            Tx::Rad75 => (
                "XCA-I-RespondingGateway.wsdl",
                "{urn:ihe:rad:xdsi-b:2009}XCAIRespondingGateway_Binding",
                "RespondingGateway_CrossGatewayRetrieveImagingDocumentSet",
                "/xca/retrieve",
                "imaging",
            ),
            Tx::Iti43 => (
                "XDS.b_DocumentRepository.wsdl",
                "{urn:ihe:iti:xds-b:2007}DocumentRepository_Binding",
                "DocumentRepository_RetrieveDocumentSet",
                "/xds/repository",
                "documents",
            ),
            Tx::Iti39 => (
                "XCARespondingGateway.wsdl",
                "{urn:ihe:iti:xds-b:2007}RespondingGateway_Binding_Soap12",
                "RespondingGateway_CrossGatewayRetrieve",
                "/xca/retrieve",
                "documents",
            ),
            Tx::Iti38 => (
                "XCARespondingGateway.wsdl",
                "{urn:ihe:iti:xds-b:2007}RespondingGateway_Binding_Soap12",
                "RespondingGateway_CrossGatewayQuery",
                "/xca/query",
                "query",
            ),
        };
        let mut req = json!({
            "wsdl": wsdl(wsdl_file),
            "binding": binding,
            "operation": operation,
            "url": format!("{}{path}", self.url_base),
            "kind": kind,
            "syntaxes": syntaxes,
            "out": out.path(),
            "assertion": assertion,
            "bearer": bearer,
        });
        if kind == "imaging" {
            req["studies"] = docs.clone();
        } else if kind == "query" {
            req["query"] = docs.clone();
        } else {
            req["documents"] = docs.clone();
        }
        if let Some((cert, key, ca)) = &self.cert {
            req["cert"] = json!(cert);
            req["key"] = json!(key);
            req["ca"] = json!(ca);
        }
        let file = out.path().join("request.json");
        std::fs::write(&file, req.to_string()).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/xds/zeep_client.py");
        let run = std::process::Command::new("python3")
            .arg(script)
            .arg(&file)
            .output()
            .expect("python3");
        assert!(
            run.status.success(),
            "zeep client failed (pip install zeep): {}",
            String::from_utf8_lossy(&run.stderr)
        );
        let answer: Value = serde_json::from_slice(&run.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&run.stdout)));
        (answer, out)
    }
}

/// xmllint against SOAP 1.2 + WS-Addressing + WS-Security + SAML + ebRS + XDS.b + XDS-I.b
/// (drivers/soap12-ihe-envelope.xsd, offline through the catalog).
fn validate_envelope(file: &Path) {
    let dir = tokens::schemas_dir();
    let out = std::process::Command::new("xmllint")
        .env("XML_CATALOG_FILES", dir.join("catalog.xml"))
        .args(["--nonet", "--noout", "--schema"])
        .arg(dir.join("drivers/soap12-ihe-envelope.xsd"))
        .arg(file)
        .output()
        .expect("xmllint (apt-get install libxml2-utils)");
    assert!(
        out.status.success(),
        "{} is not valid: {}\n{}",
        file.display(),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(file).unwrap_or_default()
    );
}

/// The RAD-69 / RAD-75 request body for these files (grouped by study and series).
fn studies_of(files: &[&beeldbrug::testdata::GeneratedFile], home: Option<&str>) -> Value {
    let mut tree: BTreeMap<&str, BTreeMap<&str, Vec<Value>>> = BTreeMap::new();
    for f in files {
        tree.entry(&f.study_uid)
            .or_default()
            .entry(&f.series_uid)
            .or_default()
            .push(json!({"repository": REPOSITORY, "document": f.sop_uid, "home": home}));
    }
    Value::Array(
        tree.into_iter()
            .map(|(study, series)| {
                json!({"study": study, "series": series.into_iter().map(|(s, d)| json!({"series": s, "documents": d})).collect::<Vec<_>>()})
            })
            .collect(),
    )
}

/// pydicom reads every file and names its SOP Instance UID.
/// An ITI-38 FindDocuments for the patient's Approved entries (the request zeep sends).
fn find_documents(bsn: &str) -> Value {
    json!({
        "id": "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d",
        "slots": {
            "$XDSDocumentEntryPatientId": [format!("'{bsn}^^^&2.16.840.1.113883.2.4.6.3&ISO'")],
            "$XDSDocumentEntryStatus": ["('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')"],
        }
    })
}

/// Give every file this Patient ID (DCMTK dcmodify, in place).
fn set_patient_id(files: &[beeldbrug::testdata::GeneratedFile], patient_id: &str) {
    for f in files {
        let set = format!("(0010,0020)={patient_id}");
        let out = common::dcmtk("dcmodify", &["-nb", "-m", &set, f.path.to_str().unwrap()]);
        assert!(out.status.success(), "dcmodify: {out:?}");
    }
}

/// Gateway mode: `files` stored into an Orthanc that knows our AE, and a gateway (XDS on,
/// `xds_extra` in its `[xds]` table, bearer JWTs of a test IdP) in front of it by C-GET.
async fn before_orthanc(
    dir: &Path,
    files: &[beeldbrug::testdata::GeneratedFile],
    xds_extra: &str,
) -> (common::orthanc::Orthanc, JwtIdp, Gateway) {
    use common::gateway_mode::pacs_toml;
    use common::orthanc::{store, Orthanc};
    let our_port = common::free_port();
    let orthanc = Orthanc::start_with(dir, &[("BEELDBRUG", our_port)]).await;
    store(orthanc.dicom_port, "ORTHANC", files);
    let idp = JwtIdp::new(dir, JWT_ISSUER, AUDIENCE);
    let toml = format!(
        "{}{xds_extra}{}[trust]\nown_ura = \"{}\"\n{}",
        xds_toml(),
        pacs_toml("ORTHANC", orthanc.dicom_port, "c-get", ""),
        tokens::TEST_URA,
        idp.config_toml()
    );
    let gateway = Gateway::start_dimse_on(our_port, &toml).await;
    (orthanc, idp, gateway)
}

/// The (study, series, instance) UIDs a KOS manifest references, as pydicom reads them.
fn kos_references(manifest: &str) -> Vec<Vec<String>> {
    let script = r#"
import sys, pydicom
ds = pydicom.dcmread(sys.argv[1])
for st in ds.CurrentRequestedProcedureEvidenceSequence:
    for se in st.ReferencedSeriesSequence:
        for i in se.ReferencedSOPSequence:
            print(st.StudyInstanceUID, se.SeriesInstanceUID, i.ReferencedSOPInstanceUID)
"#;
    python(script, &[Path::new(manifest)])
        .lines()
        .map(|l| l.split(' ').map(str::to_string).collect())
        .collect()
}

/// Run a Python script with these arguments; its standard output.
fn python(script: &str, args: &[&Path]) -> String {
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .args(args)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn pydicom_uids(files: &[PathBuf]) -> Vec<String> {
    let script = "import sys, pydicom\nfor p in sys.argv[1:]:\n    print(pydicom.dcmread(p).SOPInstanceUID)\n";
    let args: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    python(script, &args).lines().map(str::to_string).collect()
}

async fn audit(gateway: &Gateway, operation: &str) -> Vec<beeldbrug::store::AuditEvent> {
    gateway
        .context()
        .index
        .audit_events(100_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.operation == operation)
        .collect()
}

fn tls_toml(pki: &common::pki::Pki) -> String {
    let participants = pki.path().join("participants.toml");
    std::fs::write(
        &participants,
        common::pki::Pki::participants_toml(&[
            (
                "GtK Oost",
                tokens::TEST_URA,
                "urn:oid:2.16.528.1.1007.3.3.1",
                &pki.client,
            ),
            (
                "GtK West",
                "11112222",
                "urn:oid:2.16.528.1.1007.3.3.2",
                &pki.revoked,
            ),
        ]),
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

/// "Done" of issue 14 on the retrieve side: a second gateway written by no one here (zeep +
/// xmlsec1) with a participant certificate, a valid XUA assertion and consent fetches a study
/// by RAD-69 and RAD-75, byte-exact as stored; consent Deny looks like an unknown instance;
/// every refused assertion is a Fault and one audit record.
#[tokio::test(flavor = "multi_thread")]
async fn remote_gateway_retrieves_by_rad69_and_rad75_with_xua_over_mtls() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = beeldbrug::testdata::GenerateArgs::with_defaults(dir.path().join("data"));
    args.patients = 2;
    args.ct_slices = 3;
    args.mr_slices = 1;
    args.frame_size = 32;
    args.implicit = true;
    let files = beeldbrug::testdata::generate(&args).unwrap();
    let patients: Vec<String> = {
        let mut p: Vec<String> = files.iter().map(|f| f.patient_id.clone()).collect();
        p.dedup();
        p
    };
    assert_eq!(patients.len(), 2);
    let mitz = MitzSim::start(&[
        (patients[0].as_str(), ConsentDecision::Permit),
        (patients[1].as_str(), ConsentDecision::Deny),
    ]);
    let pki = common::pki::Pki::new();
    let xua = SamlIdp::new(dir.path(), XUA_ISSUER, KeyKind::Rsa);
    // Trusted, but only from "GtK West".
    let west = SamlIdp::new(dir.path(), "https://xua.gtk-west.test", KeyKind::Rsa);
    let stranger = SamlIdp::new(dir.path(), "https://xua.stranger.test", KeyKind::Rsa);
    let toml = format!(
        "{}{}\n[trust]\nown_ura = \"{OWN_URA}\"\n{}{}[trust.consent]\nurl = \"{}\"\npurposes = [\"{}\"]\ntimeout_secs = 5\n",
        xds_toml(),
        tls_toml(&pki),
        xua.config_toml(&["GtK Oost"], false),
        west.config_toml(&["GtK West"], false),
        mitz.url,
        tokens::TEST_PURPOSE,
    );
    let gateway = Gateway::start(&toml).await;
    gateway.store_dir(&dir.path().join("data"));

    let client = Client {
        url_base: format!("https://127.0.0.1:{}", gateway.http_port),
        cert: Some((
            pki.client.cert.clone(),
            pki.client.key.clone(),
            pki.ca_file.clone(),
        )),
    };
    let sign = |idp: &SamlIdp, spec: AssertionSpec| {
        let path = dir.path().join(format!("{}.xml", spec.id));
        std::fs::write(&path, idp.sign_xmlsec(&spec)).unwrap();
        path
    };
    let valid = || sign(&xua, spec(XUA_ISSUER));
    let permitted: Vec<&beeldbrug::testdata::GeneratedFile> = files
        .iter()
        .filter(|f| f.patient_id == patients[0])
        .collect();
    let denied: Vec<&beeldbrug::testdata::GeneratedFile> = files
        .iter()
        .filter(|f| f.patient_id == patients[1])
        .collect();
    // The files as the gateway stored them (storescu's sends, as received).
    let ctx = gateway.context();
    let all = ctx
        .index
        .locate(&beeldbrug::core::Selection {
            sop_instance_uids: files.iter().map(|f| f.sop_uid.clone()).collect(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), files.len(), "every instance stored");
    let stored: BTreeMap<String, Vec<u8>> = all
        .iter()
        .map(|l| {
            let path = ctx.core.stored().local_file(l).path().to_path_buf();
            (l.sop_instance_uid.clone(), std::fs::read(path).unwrap())
        })
        .collect();

    // RAD-69 of the permitted patient's studies and one unknown instance: PartialSuccess, the
    // unknown one named, the others byte-exact as stored (asked as stored: Implicit VR LE).
    let mut request = studies_of(&permitted, None);
    request[0]["series"][0]["documents"]
        .as_array_mut()
        .unwrap()
        .push(json!({"repository": REPOSITORY, "document": "1.2.3.999.1"}));
    let as_stored = common::gateway_mode::syntax_of(&stored[&permitted[0].sop_uid]);
    let other = if as_stored == IMPLICIT_LE {
        EXPLICIT_LE
    } else {
        IMPLICIT_LE
    };
    let (answer, envelopes) = client.call(
        Tx::Rad69,
        &request,
        &[IMPLICIT_LE, EXPLICIT_LE],
        Some(&valid()),
        None,
    );
    assert_eq!(
        answer["status"], "urn:ihe:iti:2007:ResponseStatusType:PartialSuccess",
        "{answer}"
    );
    assert_eq!(answer["errors"].as_array().unwrap().len(), 1, "{answer}");
    assert_eq!(answer["errors"][0]["code"], "XDSDocumentUniqueIdError");
    assert_eq!(answer["errors"][0]["location"], "1.2.3.999.1");
    let docs = answer["documents"].as_array().unwrap();
    assert_eq!(docs.len(), permitted.len(), "{answer}");
    let mut paths = Vec::new();
    for d in docs {
        assert_eq!(d["mime"], "application/dicom");
        assert!(
            d["home"].is_null(),
            "RAD-69 without HomeCommunityId: none back"
        );
        assert_eq!(d["repository"], REPOSITORY);
        let bytes = std::fs::read(d["file"].as_str().unwrap()).unwrap();
        let uid = d["uid"].as_str().unwrap();
        assert_eq!(common::gateway_mode::syntax_of(&bytes), as_stored);
        assert!(bytes == stored[uid], "{uid}: byte-exact as stored");
        paths.push(PathBuf::from(d["file"].as_str().unwrap()));
    }
    let mut read = pydicom_uids(&paths);
    read.sort();
    let mut want: Vec<String> = permitted.iter().map(|f| f.sop_uid.clone()).collect();
    want.sort();
    assert_eq!(read, want, "pydicom reads every part");
    validate_envelope(&envelopes.path().join("request.xml"));
    validate_envelope(&envelopes.path().join("response.xml"));

    // RAD-75 with our homeCommunityId, asking the other uncompressed syntax: transcoded,
    // ours named.
    let request = studies_of(&permitted[..1], Some(HOME));
    let (answer, envelopes) = client.call(Tx::Rad75, &request, &[other], Some(&valid()), None);
    assert_eq!(
        answer["status"], "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success",
        "{answer}"
    );
    let d = &answer["documents"][0];
    assert_eq!(d["home"], HOME);
    let bytes = std::fs::read(d["file"].as_str().unwrap()).unwrap();
    assert_eq!(common::gateway_mode::syntax_of(&bytes), other);
    assert_eq!(
        pydicom_uids(&[PathBuf::from(d["file"].as_str().unwrap())]),
        [permitted[0].sop_uid.clone()]
    );
    validate_envelope(&envelopes.path().join("request.xml"));
    validate_envelope(&envelopes.path().join("response.xml"));

    // A syntax that cannot be given (lossy JPEG 2000: no encoder in this build):
    // urn:dicom:wado:0007, Failure.
    let (answer, _) = client.call(
        Tx::Rad75,
        &request,
        &["1.2.840.10008.1.2.4.91"],
        Some(&valid()),
        None,
    );
    assert_eq!(
        answer["status"], "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure",
        "{answer}"
    );
    assert_eq!(answer["errors"][0]["code"], "urn:dicom:wado:0007");

    // A document named in the wrong series is not found.
    let mut wrong = studies_of(&permitted[..1], Some(HOME));
    wrong[0]["series"][0]["series"] = json!(permitted
        .iter()
        .find(|f| f.series_uid != permitted[0].series_uid)
        .map(|f| f.series_uid.clone())
        .unwrap_or_else(|| "1.2.3.4".into()));
    let (answer, _) = client.call(Tx::Rad75, &wrong, &[IMPLICIT_LE], Some(&valid()), None);
    assert_eq!(
        answer["errors"][0]["code"], "XDSDocumentUniqueIdError",
        "{answer}"
    );
    assert!(answer["documents"].as_array().unwrap().is_empty());

    // Consent Deny: exactly the answer for an instance that does not exist.
    let one_denied = studies_of(&denied[..1], Some(HOME));
    let (answer, _) = client.call(Tx::Rad75, &one_denied, &[IMPLICIT_LE], Some(&valid()), None);
    let mut unknown = one_denied.clone();
    unknown[0]["series"][0]["documents"][0]["document"] = json!("1.2.3.999.2");
    let (unknown_answer, _) =
        client.call(Tx::Rad75, &unknown, &[IMPLICIT_LE], Some(&valid()), None);
    let shape = |a: &Value, uid: &str| a.to_string().replace(uid, "UID");
    assert_eq!(
        shape(&answer, &denied[0].sop_uid),
        shape(&unknown_answer, "1.2.3.999.2"),
        "a denied instance is answered like an unknown one"
    );
    assert_eq!(answer["errors"][0]["code"], "XDSDocumentUniqueIdError");

    // ITI-43 of one instance by its uniqueId alone.
    let (answer, _out) = client.call(
        Tx::Iti43,
        &json!([{"repository": REPOSITORY, "document": permitted[0].sop_uid}]),
        &[],
        Some(&valid()),
        None,
    );
    assert_eq!(
        answer["status"], "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success",
        "{answer}"
    );
    let bytes = std::fs::read(answer["documents"][0]["file"].as_str().unwrap()).unwrap();
    assert!(bytes == stored[&permitted[0].sop_uid]);
    assert!(answer["documents"][0]["home"].is_null());

    // ITI-39: our homeCommunityId required and named back; another community's is an error.
    let (answer, envelopes) = client.call(
        Tx::Iti39,
        &json!([
            {"repository": REPOSITORY, "document": permitted[1].sop_uid, "home": HOME},
            {"repository": REPOSITORY, "document": permitted[2].sop_uid, "home": "urn:oid:9.9.9"},
        ]),
        &[],
        Some(&valid()),
        None,
    );
    assert_eq!(
        answer["status"], "urn:ihe:iti:2007:ResponseStatusType:PartialSuccess",
        "{answer}"
    );
    assert_eq!(answer["documents"][0]["home"], HOME);
    assert_eq!(answer["errors"][0]["code"], "XDSUnknownCommunity");
    validate_envelope(&envelopes.path().join("request.xml"));
    validate_envelope(&envelopes.path().join("response.xml"));

    // Refusals: a Fault env:Sender / wsse:FailedAuthentication and one audit record each.
    let before = audit(&gateway, "RAD-75").await;
    let expired = {
        let mut s = spec(XUA_ISSUER);
        s.not_before -= 900;
        s.not_on_or_after -= 900;
        sign(&xua, s)
    };
    let altered = {
        let path = valid();
        let xml = std::fs::read_to_string(&path)
            .unwrap()
            .replace(tokens::TEST_ROLE, "01.016");
        std::fs::write(&path, xml).unwrap();
        path
    };
    let untrusted = sign(&stranger, spec("https://xua.stranger.test"));
    let other_gateway = sign(&west, spec("https://xua.gtk-west.test"));
    let single = studies_of(&permitted[..1], Some(HOME));
    for (what, assertion) in [
        ("missing", None),
        ("expired", Some(expired)),
        ("altered", Some(altered)),
        ("untrusted issuer", Some(untrusted)),
        ("bound to another gateway", Some(other_gateway)),
    ] {
        let (answer, _) = client.call(
            Tx::Rad75,
            &single,
            &[IMPLICIT_LE],
            assertion.as_deref(),
            None,
        );
        let fault = &answer["fault"];
        assert!(fault.is_object(), "{what}: {answer}");
        assert!(
            fault["subcodes"]
                .to_string()
                .contains("FailedAuthentication"),
            "{what}: {answer}"
        );
    }
    let after = audit(&gateway, "RAD-75").await;
    let refused: Vec<_> = after[before.len()..]
        .iter()
        .filter(|e| e.outcome == "refused")
        .collect();
    assert_eq!(refused.len(), 5, "{:?}", &after[before.len()..]);
    assert_eq!(after.len() - before.len(), 5, "one record per call");
    // The permitted calls: one record each, success or partial, by the participant.
    let exports = audit(&gateway, "ITI-39").await;
    assert_eq!(exports.len(), 1, "{exports:?}");
    assert_eq!(exports[0].outcome, "partial");
    let rad69 = audit(&gateway, "RAD-69").await;
    assert_eq!(rad69.len(), 1, "{rad69:?}");
    assert_eq!(rad69[0].outcome, "partial");
    assert_eq!(rad69[0].actor, "GtK Oost");
    gateway.stop().await;
    drop(mitz);
}

/// The bad-input list: each a clean SOAP Fault (never a 500 with internals), and the server
/// keeps serving. A caller inside the hospital, with a bearer JWT, over plain HTTP.
#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_a_clean_fault_and_the_server_keeps_serving() {
    use common::http::request;
    let dir = tempfile::tempdir().unwrap();
    let idp = JwtIdp::new(dir.path(), JWT_ISSUER, AUDIENCE);
    let toml = format!(
        "{}[dicomweb]\nallow_anonymous = false\n[trust]\nown_ura = \"{}\"\n{}",
        xds_toml(),
        tokens::TEST_URA,
        idp.config_toml()
    );
    let gateway = Gateway::start(&toml).await;
    let files = common::generate(&dir.path().join("data"), false);
    gateway.store_dir(&dir.path().join("data"));
    let f = &files[0];
    let envelope = |header: &str, body: &str| {
        format!(
            "<s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\" xmlns:a=\"http://www.w3.org/2005/08/addressing\">\
<s:Header>{header}</s:Header><s:Body>{body}</s:Body></s:Envelope>"
        )
    };
    let action =
        |a: &str| format!("<a:Action>{a}</a:Action><a:MessageID>urn:uuid:test-1</a:MessageID>");
    let rad69 = action("urn:ihe:rad:2009:RetrieveImagingDocumentSet");
    let doc = |uid: &str| {
        format!("<b:DocumentRequest><b:RepositoryUniqueId>{REPOSITORY}</b:RepositoryUniqueId><b:DocumentUniqueId>{uid}</b:DocumentUniqueId></b:DocumentRequest>")
    };
    let retrieve = |docs: &str| {
        format!(
            "<i:RetrieveImagingDocumentSetRequest xmlns:i=\"urn:ihe:rad:xdsi-b:2009\" xmlns:b=\"urn:ihe:iti:xds-b:2007\">\
<i:StudyRequest studyInstanceUID=\"{}\"><i:SeriesRequest seriesInstanceUID=\"{}\">{docs}</i:SeriesRequest></i:StudyRequest>\
<i:TransferSyntaxUIDList><i:TransferSyntaxUID>{IMPLICIT_LE}</i:TransferSyntaxUID><i:TransferSyntaxUID>{EXPLICIT_LE}</i:TransferSyntaxUID></i:TransferSyntaxUIDList>\
</i:RetrieveImagingDocumentSetRequest>",
            f.study_uid, f.series_uid
        )
    };
    let good = envelope(&rad69, &retrieve(&doc(&f.sop_uid)));
    let bearer = || format!("Bearer {}", tokens::mint_jwt(&idp, unbound));
    let soap = "application/soap+xml; charset=utf-8";
    let http = gateway.http_port;
    let post = |path: &'static str, ct: String, body: Vec<u8>, auth: String| async move {
        request(
            http,
            "POST",
            path,
            &[
                ("Content-Type", ct.as_str()),
                ("Authorization", auth.as_str()),
            ],
            &body,
        )
        .await
    };
    // The root part, then an attachment with (or without) a Content-ID.
    let mtom = |boundary: &str, declared: &str, with_id: bool, envelope: &str| {
        let mut b = format!(
            "--{boundary}\r\nContent-Type: application/xop+xml; type=\"application/soap+xml\"\r\nContent-ID: <root>\r\n\r\n{envelope}\r\n"
        );
        b.push_str(&format!(
            "--{boundary}\r\nContent-Type: application/octet-stream\r\n{}\r\nDATA\r\n--{boundary}--\r\n",
            if with_id { "Content-ID: <att@1>\r\n" } else { "" }
        ));
        (
            format!("multipart/related; type=\"application/xop+xml\"; boundary={declared}; start=\"<root>\""),
            b.into_bytes(),
        )
    };
    let many: String = (0..10_000).map(|i| doc(&format!("1.2.3.{i}"))).collect();
    let deep = "<x>".repeat(100) + &"</x>".repeat(100);
    let mut cases: Vec<(&str, &'static str, String, Vec<u8>, &str)> = vec![
        ("malformed XML", "/xds/repository", soap.into(), b"<s:Envelope".to_vec(), "env:Sender"),
        (
            "entity expansion",
            "/xds/repository",
            soap.into(),
            format!("<?xml version=\"1.0\"?><!DOCTYPE s [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;\">]>{}", envelope(&rad69, "<x>&b;</x>")).into_bytes(),
            "env:Sender",
        ),
        ("deep nesting", "/xds/repository", soap.into(), envelope(&rad69, &deep).into_bytes(), "env:Sender"),
        (
            "huge attribute",
            "/xds/repository",
            soap.into(),
            envelope(&rad69, &format!("<x a=\"{}\"/>", "y".repeat(100_000))).into_bytes(),
            "env:Sender",
        ),
        (
            "SOAP 1.1",
            "/xds/repository",
            soap.into(),
            b"<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body/></s:Envelope>".to_vec(),
            "env:VersionMismatch",
        ),
        (
            "wrong body namespace",
            "/xds/repository",
            soap.into(),
            envelope(&rad69, &retrieve(&doc(&f.sop_uid)).replace("urn:ihe:rad:xdsi-b:2009", "urn:example:other")).into_bytes(),
            "env:Sender",
        ),
        (
            "duplicated wsse:Security",
            "/xds/repository",
            soap.into(),
            envelope(
                &format!("{rad69}<w:Security xmlns:w=\"http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd\"/><w:Security xmlns:w=\"http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd\"/>"),
                &retrieve(&doc(&f.sop_uid)),
            )
            .into_bytes(),
            "wsse:InvalidSecurity",
        ),
        (
            "unknown action",
            "/xds/repository",
            soap.into(),
            envelope(&action("urn:example:Nope"), "<x/>").into_bytes(),
            "wsa:ActionNotSupported",
        ),
        (
            "RAD-75 on the repository endpoint",
            "/xds/repository",
            soap.into(),
            envelope(&action("urn:ihe:rad:2011:CrossGatewayRetrieveImagingDocumentSet"), &retrieve(&doc(&f.sop_uid))).into_bytes(),
            "wsa:ActionNotSupported",
        ),
        ("10,000 documents", "/xds/repository", soap.into(), envelope(&rad69, &retrieve(&many)).into_bytes(), "env:Sender"),
        ("no Content-Type", "/xds/repository", "text/plain".into(), good.clone().into_bytes(), "env:Sender"),
    ];
    let (ct, body) = mtom("b1", "b2", true, &good);
    cases.push((
        "MTOM with a wrong boundary",
        "/xds/repository",
        ct,
        body,
        "env:Sender",
    ));
    let (ct, body) = mtom("b1", "b1", false, &good);
    cases.push((
        "MTOM without Content-ID",
        "/xds/repository",
        ct,
        body,
        "env:Sender",
    ));
    for (what, path, ct, body, code) in cases {
        let r = post(path, ct, body, bearer()).await;
        let text = r.text();
        assert!(
            r.status == 400 || r.status == 413,
            "{what}: HTTP {} {text}",
            r.status
        );
        assert!(
            text.contains("env:Fault") || text.contains(":Fault"),
            "{what}: {text}"
        );
        assert!(text.contains(code), "{what}: wants {code}: {text}");
        assert!(
            r.header("content-type")
                .unwrap_or_default()
                .starts_with("application/soap+xml"),
            "{what}"
        );
    }
    // A bearer token refused: Fault, audited.
    let r = post(
        "/xds/repository",
        soap.into(),
        good.clone().into_bytes(),
        "Bearer nope".into(),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("wsse:FailedAuthentication"),
        "{}",
        r.text()
    );
    assert!(
        r.text().contains("urn:uuid:test-1"),
        "RelatesTo the MessageID"
    );
    // Still serving: the good request, plain and as MTOM.
    for (ct, body) in [
        (soap.to_string(), good.clone().into_bytes()),
        mtom("b1", "b1", true, &good),
    ] {
        let r = post("/xds/repository", ct, body, bearer()).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r
            .header("content-type")
            .unwrap_or_default()
            .starts_with("multipart/related"));
        let body = String::from_utf8_lossy(&r.body).into_owned();
        assert!(body.contains("ResponseStatusType:Success"), "{body}");
        assert!(body.contains("<wsa:RelatesTo>urn:uuid:test-1</wsa:RelatesTo>"));
        assert!(r.body.windows(4).any(|w| w == b"DICM"));
    }

    // A document announced in the envelope that cannot be sent after all (its file gone):
    // the transfer ends broken (no closing boundary, no last chunk), never a well-formed
    // message with a part missing; the record says failure.
    let g = files
        .iter()
        .find(|g| g.series_uid == f.series_uid && g.sop_uid != f.sop_uid)
        .expect("two instances in one series");
    let ctx = gateway.context();
    let located = ctx
        .index
        .locate(&beeldbrug::core::Selection {
            sop_instance_uids: vec![g.sop_uid.clone()],
            ..Default::default()
        })
        .await
        .unwrap();
    std::fs::remove_file(ctx.core.stored().local_file(&located[0]).path()).unwrap();
    let two = envelope(&rad69, &retrieve(&(doc(&f.sop_uid) + &doc(&g.sop_uid))));
    let auth = bearer();
    let mut stream = common::http::send(
        http,
        "POST",
        "/xds/repository",
        &[("Content-Type", soap), ("Authorization", auth.as_str())],
        two.as_bytes(),
    )
    .await;
    let mut raw = Vec::new();
    let _ = tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut raw).await;
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    // What reached the client before the abort depends on buffering: never the end.
    assert!(
        !raw.ends_with(b"0\r\n\r\n"),
        "the chunked body must not end cleanly: {text}"
    );
    assert!(!text.contains("--\r\n0\r\n"), "no closing boundary: {text}");
    // The record is written when the stream has ended, just after the client saw it end.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let last = loop {
        let records = audit(&gateway, "RAD-69").await;
        let last = records.last().cloned().unwrap();
        if last.detail.contains("of 2 documents") || std::time::Instant::now() > deadline {
            break last;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(last.outcome, "failure", "{last:?}");
    assert!(last.detail.contains(" of 2 documents sent"), "{last:?}");
    gateway.stop().await;
}

/// Gateway mode: a study only Orthanc holds, retrieved by RAD-75 and streamed from the PACS
/// (a caller inside the hospital with a bearer JWT).
#[tokio::test(flavor = "multi_thread")]
async fn rad75_streams_a_study_only_the_pacs_holds() {
    use common::gateway_mode::dataset_of;
    let dir = tempfile::tempdir().unwrap();
    let files = common::generate(&dir.path().join("src"), false);
    let (orthanc, idp, gateway) = before_orthanc(dir.path(), &files, "").await;
    let study = files[0].study_uid.clone();
    let in_study: Vec<&beeldbrug::testdata::GeneratedFile> =
        files.iter().filter(|f| f.study_uid == study).collect();
    let client = Client {
        url_base: format!("http://127.0.0.1:{}", gateway.http_port),
        cert: None,
    };
    let bearer = tokens::mint_jwt(&idp, unbound);
    // Every instance of the study, and one the PACS does not have either.
    let mut request = studies_of(&in_study, Some(HOME));
    request[0]["series"][0]["documents"]
        .as_array_mut()
        .unwrap()
        .push(json!({"repository": REPOSITORY, "document": "1.2.3.999.3", "home": HOME}));
    let (answer, envelopes) = client.call(
        Tx::Rad75,
        &request,
        &[IMPLICIT_LE, EXPLICIT_LE],
        None,
        Some(&bearer),
    );
    assert_eq!(
        answer["status"], "urn:ihe:iti:2007:ResponseStatusType:PartialSuccess",
        "{answer}"
    );
    assert_eq!(answer["errors"][0]["location"], "1.2.3.999.3", "{answer}");
    let docs = answer["documents"].as_array().unwrap();
    assert_eq!(docs.len(), in_study.len());
    for d in docs {
        let bytes = std::fs::read(d["file"].as_str().unwrap()).unwrap();
        let original = in_study
            .iter()
            .find(|f| f.sop_uid == d["uid"].as_str().unwrap())
            .unwrap();
        let sent = std::fs::read(&original.path).unwrap();
        assert!(dataset_of(&bytes).1 == dataset_of(&sent).1, "byte-exact");
    }
    validate_envelope(&envelopes.path().join("response.xml"));
    let records = audit(&gateway, "RAD-75").await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].outcome, "partial");
    assert!(
        records[0].detail.contains("streamed from the local PACS"),
        "{}",
        records[0].detail
    );
    gateway.stop().await;
    drop(orthanc);
}

/// Gateway mode (issue 14 item 1, "a study the PACS reports"): a study only Orthanc holds is
/// published by the first FindDocuments that names its patient, with a manifest listing every
/// instance Orthanc holds (asked by C-FIND, nothing fetched), and found by that same ITI-38;
/// the next query finds the same entry, not a new one.
#[tokio::test(flavor = "multi_thread")]
async fn iti38_finds_a_study_only_the_pacs_holds() {
    const BSN: &str = "999999990";
    let dir = tempfile::tempdir().unwrap();
    let mut args = beeldbrug::testdata::GenerateArgs::with_defaults(dir.path().join("data"));
    args.patients = 1;
    args.ct_slices = 3;
    args.mr_slices = 2;
    args.frame_size = 32;
    let files = beeldbrug::testdata::generate(&args).unwrap();
    set_patient_id(&files, BSN);
    // Nothing of the study is in the cache: only the query can publish it.
    let (orthanc, idp, gateway) = before_orthanc(dir.path(), &files, "quiet_secs = 1\n").await;
    let client = Client {
        url_base: format!("http://127.0.0.1:{}", gateway.http_port),
        cert: None,
    };
    // A token is good for one request (its jti is remembered).
    let bearer = || tokens::mint_jwt(&idp, unbound);
    let find_documents = find_documents(BSN);
    let (answer, envelopes) = client.call(Tx::Iti38, &find_documents, &[], None, Some(&bearer()));
    validate_envelope(&envelopes.path().join("response.xml"));
    // One manifest per study (the generated patient has a CT and an MR study).
    let studies: std::collections::BTreeSet<&str> =
        files.iter().map(|f| f.study_uid.as_str()).collect();
    let entries = answer["entries"].as_array().unwrap();
    assert_eq!(
        entries.len(),
        studies.len(),
        "found on the first query: {answer}"
    );
    let study = files[0].study_uid.as_str();
    let study_ref = format!("{study}^^^^urn:ihe:iti:xds:2013:studyInstanceUID");
    let kos = entries
        .iter()
        .find(|e| {
            e["referenceIds"]
                .as_array()
                .unwrap()
                .contains(&json!(study_ref))
        })
        .unwrap_or_else(|| panic!("no entry of {study}: {answer}"));
    assert_eq!(kos["formatCode"], "1.2.840.10008.5.1.4.1.1.88.59");

    // The manifest names every instance Orthanc holds, in its series.
    let (answer, _manifest_dir) = client.call(
        Tx::Iti39,
        &json!([{"repository": REPOSITORY, "document": kos["uniqueId"], "home": HOME}]),
        &[],
        None,
        Some(&bearer()),
    );
    let manifest = answer["documents"][0]["file"]
        .as_str()
        .unwrap_or_else(|| panic!("{answer}"));
    let mut referenced: Vec<(String, String)> = kos_references(manifest)
        .into_iter()
        .map(|r| (r[1].clone(), r[2].clone()))
        .collect();
    referenced.sort();
    let mut held: Vec<(String, String)> = files
        .iter()
        .filter(|f| f.study_uid == study)
        .map(|f| (f.series_uid.clone(), f.sop_uid.clone()))
        .collect();
    held.sort();
    assert_eq!(referenced, held, "the manifest names what the PACS holds");
    // Listed by C-FIND: the cache holds the manifest of the study and nothing else.
    let selection = beeldbrug::core::Selection {
        study_uids: vec![study.to_string()],
        ..Default::default()
    };
    let cached = gateway.context().index.locate(&selection).await.unwrap();
    let cached: Vec<&str> = cached.iter().map(|i| i.sop_instance_uid.as_str()).collect();
    assert_eq!(cached, vec![kos["uniqueId"].as_str().unwrap()]);

    // A WADO-RS retrieve fills the cache with the study. Once it is quiet, the publisher
    // finds that the manifest names these instances already: the same entry, its
    // publication now covering the arrivals (no new manifest replacing the first).
    let auth = format!("Bearer {}", bearer());
    let response = common::http::request(
        gateway.http_port,
        "GET",
        &format!("/dicomweb/studies/{study}"),
        &[
            ("Accept", "multipart/related; type=\"application/dicom\""),
            ("Authorization", &auth),
        ],
        b"",
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let index = gateway.context().index.clone();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let arrival = index.study_arrival(study).await.unwrap().unwrap();
        let publication = index.publication(study).await.unwrap().unwrap();
        if arrival.arrivals > 1 && publication.arrivals == arrival.arrivals {
            assert_eq!(publication.entry_uuid, kos["entryUUID"].as_str().unwrap());
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{arrival:?} {publication:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    // Asked again: the same entry, not a new manifest.
    let (again, _) = client.call(Tx::Iti38, &find_documents, &[], None, Some(&bearer()));
    let again = again["entries"].as_array().unwrap();
    assert_eq!(again.len(), studies.len(), "{again:?}");
    assert!(
        again.iter().any(|e| e["uniqueId"] == kos["uniqueId"]),
        "{again:?}"
    );
    gateway.stop().await;
    drop(orthanc);
}

/// Data we did not make: the studies of tests/codecs/codecs.py (pydicom sources encoded by
/// DCMTK dcmcjpls/dcmcjpeg/dcmcrle and pylibjpeg-openjpeg, and a Deflated file), given a BSN
/// by DCMTK dcmodify and stored by storescu, are published, found by ITI-38 (zeep), named by
/// their manifest (ITI-39, pydicom) and retrieved by RAD-75 byte-exact in their own syntaxes.
#[tokio::test(flavor = "multi_thread")]
async fn independently_encoded_instances_are_published_and_retrieved_as_stored() {
    const BSN: &str = "999999990";
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/codecs/codecs.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .args(["make", data.to_str().unwrap()])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let made: Value = serde_json::from_slice(&out.stdout).unwrap();
    let study = made["study"].as_str().unwrap().to_string();
    // Each in its own syntax by DCMTK dcmsend (it sends compressed files as they are; the
    // Deflated one it would inflate first, so it stays out here: tests/codecs.rs has it).
    let sent: Vec<PathBuf> = made["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["name"] != "deflate")
        .map(|i| PathBuf::from(i["sent"].as_str().unwrap()))
        .collect();
    let store = dir.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    for path in &sent {
        let copy = store.join(path.file_name().unwrap());
        std::fs::copy(path, &copy).unwrap();
        let set = format!("(0010,0020)={BSN}");
        let out = common::dcmtk("dcmodify", &["-nb", "-m", &set, copy.to_str().unwrap()]);
        assert!(out.status.success(), "dcmodify: {out:?}");
    }
    let idp = JwtIdp::new(dir.path(), JWT_ISSUER, AUDIENCE);
    let toml = format!(
        "{}quiet_secs = 1\n[trust]\nown_ura = \"{}\"\n{}",
        xds_toml(),
        tokens::TEST_URA,
        idp.config_toml()
    );
    let gateway = Gateway::start(&toml).await;
    let mut args = vec!["-dn", "-aet", "TEST", "-aec", "BEELDBRUG", "127.0.0.1"];
    let port = gateway.port.to_string();
    args.push(&port);
    let copies: Vec<String> = std::fs::read_dir(&store)
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    args.extend(copies.iter().map(String::as_str));
    let out = common::dcmtk("dcmsend", &args);
    assert!(
        out.status.success(),
        "dcmsend: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let client = Client {
        url_base: format!("http://127.0.0.1:{}", gateway.http_port),
        cert: None,
    };
    let bearer = || tokens::mint_jwt(&idp, unbound);
    let find_documents = find_documents(BSN);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let kos = loop {
        let (answer, _) = client.call(Tx::Iti38, &find_documents, &[], None, Some(&bearer()));
        if let Some(entry) = answer["entries"].as_array().unwrap().first() {
            break entry.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never published: {answer}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    let (answer, _manifest_dir) = client.call(
        Tx::Iti39,
        &json!([{"repository": REPOSITORY, "document": kos["uniqueId"], "home": HOME}]),
        &[],
        None,
        Some(&bearer()),
    );
    let manifest = answer["documents"][0]["file"]
        .as_str()
        .unwrap_or_else(|| panic!("{answer}"));
    let referenced = kos_references(manifest);
    assert_eq!(referenced.len(), sent.len(), "{referenced:?}");
    // RAD-75 of every referenced instance, asking for every syntax: each as stored.
    let documents: Vec<Value> = referenced
        .iter()
        .map(|r| json!({"repository": REPOSITORY, "document": r[2], "home": HOME}))
        .collect();
    let request =
        json!([{"study": study, "series": [{"series": referenced[0][1], "documents": documents}]}]);
    let stored: Vec<PathBuf> = std::fs::read_dir(&store)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let syntaxes: Vec<String> = made["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["transfer_syntax"].as_str().unwrap().to_string())
        .collect();
    let asked: Vec<&str> = syntaxes.iter().map(String::as_str).collect();
    let (answer, _documents_dir) = client.call(Tx::Rad75, &request, &asked, None, Some(&bearer()));
    assert_eq!(
        answer["status"], "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success",
        "{answer}"
    );
    let docs = answer["documents"].as_array().unwrap();
    assert_eq!(docs.len(), sent.len(), "{answer}");
    let uids = pydicom_uids(&stored);
    for d in docs {
        let bytes = std::fs::read(d["file"].as_str().unwrap()).unwrap();
        let at = uids
            .iter()
            .position(|u| u == d["uid"].as_str().unwrap())
            .unwrap();
        let original = std::fs::read(&stored[at]).unwrap();
        assert!(
            common::gateway_mode::dataset_of(&bytes).1
                == common::gateway_mode::dataset_of(&original).1,
            "byte-exact: {}",
            d["uid"]
        );
    }
    gateway.stop().await;
}

/// The NIST / IHE sample messages (tests/schemas/samples): whole envelopes are read (their
/// assertions are not ours to verify); the NIST Connectathon request bodies (RAD-69 IDS tests,
/// their exception cases, RAD-75 RIG tests) are answered with a RetrieveDocumentSetResponse
/// naming each document (their repositories and communities are not ours), never a Fault.
#[tokio::test(flavor = "multi_thread")]
async fn the_sample_messages_are_accepted() {
    use beeldbrug::xds::{envelope, retrieve};
    use common::http::request;
    let samples = tokens::schemas_dir().join("samples");
    for (file, imaging) in [
        ("rad-69/dcm4chee-arc_rad69-request_soap.xml", true),
        ("iti-43/epr-ch_ITI-43_request_soap.xml", false),
        ("iti-39/nhn-no_iti39-iti40-request.xml", false),
    ] {
        let bytes = std::fs::read(samples.join(file)).unwrap();
        let e = envelope::read(Some("application/soap+xml"), bytes.into())
            .await
            .unwrap_or_else(|(e, _)| panic!("{file}: {e}"));
        let read = if imaging {
            retrieve::read_imaging(&e.body)
        } else {
            retrieve::read_documents(&e.body)
        };
        assert!(read.is_ok(), "{file}: {read:?}");
    }

    let dir = tempfile::tempdir().unwrap();
    let idp = JwtIdp::new(dir.path(), JWT_ISSUER, AUDIENCE);
    let toml = format!(
        "{}[trust]\nown_ura = \"{}\"\n{}",
        xds_toml(),
        tokens::TEST_URA,
        idp.config_toml()
    );
    let gateway = Gateway::start(&toml).await;
    let mut answered = 0;
    for (folder, action, path) in [
        (
            "rad-69",
            "urn:ihe:rad:2009:RetrieveImagingDocumentSet",
            "/xds/repository",
        ),
        (
            "rad-69/exception-cases",
            "urn:ihe:rad:2009:RetrieveImagingDocumentSet",
            "/xds/repository",
        ),
        (
            "rad-75",
            "urn:ihe:rad:2011:CrossGatewayRetrieveImagingDocumentSet",
            "/xca/retrieve",
        ),
    ] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(samples.join(folder))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        for file in files {
            let body = std::fs::read_to_string(&file).unwrap();
            let body = body.trim_start_matches(|c| c != '<');
            let body = match body.strip_prefix("<?xml") {
                Some(rest) => &rest[rest.find("?>").unwrap() + 2..],
                None => body,
            };
            if !body
                .trim_start()
                .contains("RetrieveImagingDocumentSetRequest")
                || body.contains("Envelope")
            {
                continue;
            }
            let soap = format!(
                "<s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\" xmlns:a=\"http://www.w3.org/2005/08/addressing\">\
<s:Header><a:Action>{action}</a:Action><a:MessageID>urn:uuid:sample</a:MessageID></s:Header><s:Body>{body}</s:Body></s:Envelope>"
            );
            let auth = format!("Bearer {}", tokens::mint_jwt(&idp, unbound));
            let r = request(
                gateway.http_port,
                "POST",
                path,
                &[
                    ("Content-Type", "application/soap+xml; charset=utf-8"),
                    ("Authorization", auth.as_str()),
                ],
                soap.as_bytes(),
            )
            .await;
            let text = r.text();
            assert_eq!(r.status, 200, "{}: {text}", file.display());
            assert!(
                text.contains("RetrieveDocumentSetResponse"),
                "{}: {text}",
                file.display()
            );
            assert!(
                text.contains("RegistryError "),
                "{}: {text}",
                file.display()
            );
            answered += 1;
        }
    }
    assert!(answered >= 20, "{answered} samples answered");
    gateway.stop().await;
}

/// WADO-WS RetrieveRenderedImagingDocumentSet: a JPEG and a PNG rendering (the Dutch 2017
/// element order), a frame out of range (0018) and an unsupported parameter (0013) named per
/// document; PartialSuccess.
#[tokio::test(flavor = "multi_thread")]
async fn wado_ws_renders_images() {
    use common::http::request;
    let dir = tempfile::tempdir().unwrap();
    let idp = JwtIdp::new(dir.path(), JWT_ISSUER, AUDIENCE);
    let toml = format!(
        "{}[trust]\nown_ura = \"{}\"\n{}",
        xds_toml(),
        tokens::TEST_URA,
        idp.config_toml()
    );
    let gateway = Gateway::start(&toml).await;
    let files = common::generate(&dir.path().join("data"), false);
    gateway.store_dir(&dir.path().join("data"));
    let (a, b) = (&files[0], &files[1]);
    assert_eq!((&a.study_uid, &a.series_uid), (&b.study_uid, &b.series_uid));
    let doc = |uid: &str, extra: &str, ct: &str| {
        format!(
            "<w:RenderedDocumentRequest><x:RepositoryUniqueId>{REPOSITORY}</x:RepositoryUniqueId><x:DocumentUniqueId>{uid}</x:DocumentUniqueId>{extra}\
<w:ContentTypeList><w:ContentType>{ct}</w:ContentType></w:ContentTypeList></w:RenderedDocumentRequest>"
        )
    };
    let docs = [
        doc(
            &a.sop_uid,
            "<w:FrameNumber>1</w:FrameNumber><w:Rows>32</w:Rows><w:Columns>32</w:Columns>",
            "image/jpeg",
        ),
        doc(
            &b.sop_uid,
            "<w:WindowCenter>40</w:WindowCenter><w:WindowWidth>400</w:WindowWidth>",
            "image/png",
        ),
        doc(&a.sop_uid, "<w:FrameNumber>7</w:FrameNumber>", "image/jpeg"),
        doc(
            &b.sop_uid,
            "<w:Annotation>patient</w:Annotation>",
            "image/jpeg",
        ),
    ]
    .concat();
    let soap = format!(
        "<s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\" xmlns:a=\"http://www.w3.org/2005/08/addressing\">\
<s:Header><a:Action>urn:dicom:wado:ws:2011:RetrieveRenderedImagingDocumentSet</a:Action><a:MessageID>urn:uuid:wado</a:MessageID></s:Header>\
<s:Body><w:RetrieveRenderedImagingDocumentSetRequest xmlns:w=\"urn:dicom:wado:ws:2011\" xmlns:x=\"urn:ihe:iti:xds-b:2007\">\
<w:StudyRequest studyInstanceUID=\"{}\"><w:SeriesRequest seriesInstanceUID=\"{}\">{docs}</w:SeriesRequest></w:StudyRequest>\
</w:RetrieveRenderedImagingDocumentSetRequest></s:Body></s:Envelope>",
        a.study_uid, a.series_uid
    );
    let auth = format!("Bearer {}", tokens::mint_jwt(&idp, unbound));
    let r = request(
        gateway.http_port,
        "POST",
        "/wado-ws",
        &[
            ("Content-Type", "application/soap+xml"),
            ("Authorization", auth.as_str()),
        ],
        soap.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let ct = r.header("content-type").unwrap().to_string();
    let boundary = ct
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .unwrap()
        .trim_matches('"')
        .to_string();
    let delimiter = format!("--{boundary}");
    let body = &r.body;
    let text = String::from_utf8_lossy(body);
    assert!(text.contains("ResponseStatusType:PartialSuccess"), "{text}");
    assert!(text.contains("RetrieveRenderedImagingDocumentSetResponse"));
    assert!(text.contains("errorCode=\"urn:dicom:wado:0018\""), "{text}");
    assert!(text.contains("errorCode=\"urn:dicom:wado:0013\""), "{text}");
    assert!(text.contains("<wado:FrameNumber>1</wado:FrameNumber>"));
    assert!(text.contains("<xdsb:mimeType>image/png</xdsb:mimeType>"));
    // Parts: the root, a JPEG, a PNG.
    let parts: Vec<&str> = text.split(delimiter.as_str()).collect();
    assert_eq!(
        parts.len(),
        5,
        "preamble, root, two images, closing: {}",
        parts.len()
    );
    let jpeg = body
        .windows(4)
        .position(|w| w == [0xFF, 0xD8, 0xFF, 0xE0] || w == [0xFF, 0xD8, 0xFF, 0xDB]);
    assert!(jpeg.is_some(), "a JPEG part");
    assert!(
        body.windows(8).any(|w| w == b"\x89PNG\r\n\x1a\n"),
        "a PNG part"
    );
    let records = audit(&gateway, "WADO-WS").await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].outcome, "partial");
    gateway.stop().await;
}

/// Measurement, not a check (run with `--ignored --nocapture`): RAD-75 against WADO-RS of the
/// same cached study in one run (MB/s, time to first byte, peak RSS above the idle process,
/// and the gateway's CPU per GB: this process's user + system time, curl being a child
/// process of its own), both with curl over plain HTTP. `BEELDBRUG_BENCH_SLICES` sets the CT
/// slices (512x512x16 bit, 0.5 MB each; default 400), `BEELDBRUG_BENCH_PAIRS` the WADO-RS +
/// RAD-75 pairs (default 2; the median ratio is printed), `BEELDBRUG_BENCH_TLS=1` both over
/// mTLS, `BEELDBRUG_BENCH_HTTP1=1` HTTP/1.1 where curl would choose h2.
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn bench_rad75_against_wado_rs() {
    let slices: u32 = std::env::var("BEELDBRUG_BENCH_SLICES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(400);
    let dir = tempfile::tempdir().unwrap();
    let mut args = beeldbrug::testdata::GenerateArgs::with_defaults(dir.path().join("data"));
    args.patients = 1;
    args.ct_slices = slices;
    args.mr_slices = 1;
    let files = beeldbrug::testdata::generate(&args).unwrap();
    let idp = JwtIdp::new(dir.path(), JWT_ISSUER, AUDIENCE);
    // BEELDBRUG_BENCH_TLS=1: both over mTLS as a participant, RAD-75 with an XUA assertion
    // signed by xmlsec1 (a fresh one per request).
    let tls = std::env::var_os("BEELDBRUG_BENCH_TLS").is_some();
    let pki = common::pki::Pki::new();
    let xua = SamlIdp::new(dir.path(), XUA_ISSUER, KeyKind::Rsa);
    let toml = format!(
        "{}[dicomweb]\nallow_anonymous = true\n[trust]\nown_ura = \"{}\"\n{}{}",
        xds_toml(),
        tokens::TEST_URA,
        idp.config_toml(),
        if tls {
            format!(
                "{}{}",
                tls_toml(&pki),
                xua.config_toml(&["GtK Oost"], false)
            )
        } else {
            String::new()
        }
    );
    let gateway = Gateway::start(&toml).await;
    gateway.store_dir(&dir.path().join("data"));
    let ct: Vec<&beeldbrug::testdata::GeneratedFile> = files
        .iter()
        .filter(|f| f.study_uid == files[0].study_uid)
        .collect();
    let body = {
        let docs: String = ct
            .iter()
            .map(|f| format!("<b:DocumentRequest><b:HomeCommunityId>{HOME}</b:HomeCommunityId><b:RepositoryUniqueId>{REPOSITORY}</b:RepositoryUniqueId><b:DocumentUniqueId>{}</b:DocumentUniqueId></b:DocumentRequest>", f.sop_uid))
            .collect();
        format!(
            "<s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\" xmlns:a=\"http://www.w3.org/2005/08/addressing\">\
<s:Header><a:Action>urn:ihe:rad:2011:CrossGatewayRetrieveImagingDocumentSet</a:Action><a:MessageID>urn:uuid:bench</a:MessageID>SECURITY</s:Header><s:Body>\
<i:RetrieveImagingDocumentSetRequest xmlns:i=\"urn:ihe:rad:xdsi-b:2009\" xmlns:b=\"urn:ihe:iti:xds-b:2007\">\
<i:StudyRequest studyInstanceUID=\"{}\"><i:SeriesRequest seriesInstanceUID=\"{}\">{docs}</i:SeriesRequest></i:StudyRequest>\
<i:TransferSyntaxUIDList><i:TransferSyntaxUID>{IMPLICIT_LE}</i:TransferSyntaxUID><i:TransferSyntaxUID>{EXPLICIT_LE}</i:TransferSyntaxUID></i:TransferSyntaxUIDList>\
</i:RetrieveImagingDocumentSetRequest></s:Body></s:Envelope>",
            ct[0].study_uid, ct[0].series_uid
        )
    };
    let request_file = dir.path().join("rad75.xml");
    let write_request = || {
        let security = if tls {
            let signed = xua.sign_xmlsec(&spec(XUA_ISSUER));
            let signed = signed
                .trim_start()
                .strip_prefix("<?xml version=\"1.0\"?>")
                .unwrap_or(&signed)
                .to_string();
            format!("<w:Security xmlns:w=\"http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd\">{signed}</w:Security>")
        } else {
            String::new()
        };
        std::fs::write(&request_file, body.replace("SECURITY", &security)).unwrap();
    };
    let rss = || -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    // This process's user + system CPU seconds (/proc/self/stat fields 14 and 15, 10 ms ticks).
    let cpu = || -> f64 {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / 100.0
    };
    let run = |name: &str, args: Vec<String>| {
        let idle = rss();
        let cpu_before = cpu();
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(idle));
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = {
            let (peak, done) = (peak.clone(), done.clone());
            std::thread::spawn(move || {
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let now = std::fs::read_to_string("/proc/self/status")
                        .unwrap()
                        .lines()
                        .find_map(|l| l.strip_prefix("VmRSS:"))
                        .and_then(|v| v.split_whitespace().next()?.parse().ok())
                        .unwrap_or(0);
                    peak.fetch_max(now, std::sync::atomic::Ordering::Relaxed);
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            })
        };
        let out = std::process::Command::new(common::require_tool("curl"))
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{size_download} %{time_starttransfer} %{time_total} HTTP/%{http_version}",
            ])
            .args(&args)
            .output()
            .expect("curl");
        let cpu_used = cpu() - cpu_before;
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        sampler.join().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let v: Vec<&str> = text.split_whitespace().collect();
        let (bytes, ttfb, total): (f64, f64, f64) = (
            v[1].parse().unwrap(),
            v[2].parse().unwrap(),
            v[3].parse().unwrap(),
        );
        let extra = peak
            .load(std::sync::atomic::Ordering::Relaxed)
            .saturating_sub(idle)
            / 1024;
        println!(
            "{name}: HTTP {} {} {:.1} MB in {total:.2} s = {:.1} MB/s, first byte {:.0} ms, peak RSS +{extra} MB, gateway CPU {:.2} s/GB",
            v[0],
            v[4],
            bytes / 1e6,
            bytes / 1e6 / total,
            ttfb * 1000.0,
            cpu_used / (bytes / 1e9)
        );
        bytes / total
    };
    let http = gateway.http_port;
    let scheme = if tls { "https" } else { "http" };
    let wado_url = format!(
        "{scheme}://127.0.0.1:{http}/dicomweb/studies/{}",
        ct[0].study_uid
    );
    let client_tls: Vec<String> = if tls {
        vec![
            "--cacert".into(),
            pki.ca_file.display().to_string(),
            "--cert".into(),
            pki.client.cert.display().to_string(),
            "--key".into(),
            pki.client.key.display().to_string(),
        ]
    } else {
        Vec::new()
    };
    // curl speaks h2 over TLS when the server offers it (ALPN); BEELDBRUG_BENCH_HTTP1=1 keeps
    // it to HTTP/1.1.
    let http1 = std::env::var_os("BEELDBRUG_BENCH_HTTP1").is_some();
    let with_tls = |mut args: Vec<String>| {
        args.splice(0..0, client_tls.clone());
        if http1 {
            args.insert(0, "--http1.1".into());
        }
        args
    };
    // Warm the page cache once, then measure each twice, alternating.
    let wado_args = || {
        with_tls(vec![
            "-H".into(),
            format!("Accept: {}", common::gateway_mode::AS_STORED),
            wado_url.clone(),
        ])
    };
    run("warm-up WADO-RS", wado_args());
    let pairs: usize = std::env::var("BEELDBRUG_BENCH_PAIRS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let mut ratios = Vec::new();
    for _ in 0..pairs {
        let w = run("WADO-RS", wado_args());
        write_request();
        let mut args = vec![
            "-H".to_string(),
            "Content-Type: application/soap+xml".into(),
            "--data-binary".into(),
            format!("@{}", request_file.display()),
            format!("{scheme}://127.0.0.1:{http}/xca/retrieve"),
        ];
        if !tls {
            args.splice(
                0..0,
                [
                    "-H".to_string(),
                    format!("Authorization: Bearer {}", tokens::mint_jwt(&idp, unbound)),
                ],
            );
        }
        let r = run("RAD-75", with_tls(args));
        ratios.push(r / w);
    }
    println!("RAD-75 / WADO-RS throughput: {ratios:.2?}");
    let mut sorted = ratios.clone();
    sorted.sort_by(f64::total_cmp);
    let median = if sorted.len() % 2 == 1 {
        sorted[sorted.len() / 2]
    } else {
        (sorted[sorted.len() / 2 - 1] + sorted[sorted.len() / 2]) / 2.0
    };
    println!(
        "RAD-75 / WADO-RS throughput, median of {}: {median:.3}",
        sorted.len()
    );
    gateway.stop().await;
}

/// "Done" of issue 14: a second gateway written by no one here (zeep + xmlsec1), with a
/// participant certificate, a valid XUA assertion and consent, finds a patient's study by
/// ITI-38 FindDocuments (the KOS published after the quiet period), fetches the manifest by
/// ITI-39, reads it with pydicom, and fetches every instance it references by RAD-75,
/// byte-exact as stored; the envelopes validate; each call leaves its audit record. A
/// patient without consent gets the empty answer of an unknown patient.
#[tokio::test(flavor = "multi_thread")]
async fn remote_gateway_finds_by_iti38_and_fetches_by_rad75() {
    const BSN: &str = "999999990";
    const BSN_DENIED: &str = "111222333";
    let dir = tempfile::tempdir().unwrap();
    let mut args = beeldbrug::testdata::GenerateArgs::with_defaults(dir.path().join("data"));
    args.patients = 1;
    args.ct_slices = 3;
    args.mr_slices = 0;
    args.frame_size = 32;
    let files = beeldbrug::testdata::generate(&args).unwrap();
    set_patient_id(&files, BSN);
    let mitz = MitzSim::start(&[
        (BSN, ConsentDecision::Permit),
        (BSN_DENIED, ConsentDecision::Deny),
    ]);
    let pki = common::pki::Pki::new();
    let xua = SamlIdp::new(dir.path(), XUA_ISSUER, KeyKind::Rsa);
    let toml = format!(
        "{}[xds]\nquiet_secs = 1\n{}\n[trust]\nown_ura = \"{OWN_URA}\"\n{}[trust.consent]\nurl = \"{}\"\npurposes = [\"{}\"]\ntimeout_secs = 5\n",
        xds_toml(),
        tls_toml(&pki),
        xua.config_toml(&["GtK Oost"], false),
        mitz.url,
        tokens::TEST_PURPOSE,
    );
    let gateway = Gateway::start(&toml).await;
    gateway.store_dir(&dir.path().join("data"));
    let client = Client {
        url_base: format!("https://127.0.0.1:{}", gateway.http_port),
        cert: Some((
            pki.client.cert.clone(),
            pki.client.key.clone(),
            pki.ca_file.clone(),
        )),
    };
    let mut n = 0;
    let mut assertion = || {
        n += 1;
        let mut spec = spec(XUA_ISSUER);
        spec.id = format!("{}-{n}", spec.id);
        let path = dir.path().join(format!("{}.xml", spec.id));
        std::fs::write(&path, xua.sign_xmlsec(&spec)).unwrap();
        path
    };
    // ITI-38 until the study is published (quiet period of 1 s, then the publisher's turn).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let (answer, envelopes) = loop {
        let (answer, envelopes) = client.call(
            Tx::Iti38,
            &find_documents(BSN),
            &[],
            Some(&assertion()),
            None,
        );
        if !answer["entries"].as_array().unwrap().is_empty() {
            break (answer, envelopes);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never published: {answer}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    assert_eq!(
        answer["status"], "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success",
        "{answer}"
    );
    validate_envelope(&envelopes.path().join("request.xml"));
    validate_envelope(&envelopes.path().join("response.xml"));
    // Other communities get the BSN, not the name, birth date or sex (publish_demographics
    // is off by default).
    let sent = std::fs::read_to_string(envelopes.path().join("response.xml")).unwrap();
    assert!(sent.contains("PID-3|") && !sent.contains("PID-5|") && !sent.contains("PID-7|"));
    let entries = answer["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "one study, one manifest: {answer}");
    let kos = &entries[0];
    assert_eq!(kos["home"], HOME, "ITI-38: our community on every object");
    assert_eq!(kos["mime"], "application/dicom");
    assert_eq!(kos["formatCode"], "1.2.840.10008.5.1.4.1.1.88.59");
    assert_eq!(kos["repository"], REPOSITORY);
    assert_eq!(
        kos["patientId"],
        format!("{BSN}^^^&2.16.840.1.113883.2.4.6.3&ISO")
    );
    let study_ref = format!(
        "{}^^^^urn:ihe:iti:xds:2013:studyInstanceUID",
        files[0].study_uid
    );
    assert!(
        kos["referenceIds"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == &json!(study_ref)),
        "{kos}"
    );

    // ITI-39 of the manifest; pydicom reads the instances it references.
    let (answer, _manifest_dir) = client.call(
        Tx::Iti39,
        &json!([{"repository": REPOSITORY, "document": kos["uniqueId"], "home": HOME}]),
        &[],
        Some(&assertion()),
        None,
    );
    let manifest = answer["documents"][0]["file"]
        .as_str()
        .unwrap_or_else(|| panic!("{answer}"));
    let referenced = kos_references(manifest);
    assert_eq!(
        referenced.len(),
        files.len(),
        "the manifest names every instance"
    );

    // RAD-75 of what the manifest names, as stored: byte-exact.
    let mut tree: BTreeMap<&str, BTreeMap<&str, Vec<Value>>> = BTreeMap::new();
    for r in &referenced {
        tree.entry(&r[0])
            .or_default()
            .entry(&r[1])
            .or_default()
            .push(json!({"repository": REPOSITORY, "document": r[2], "home": HOME}));
    }
    let request: Vec<Value> = tree
        .into_iter()
        .map(|(study, series)| {
            json!({"study": study, "series": series.into_iter().map(|(s, d)| json!({"series": s, "documents": d})).collect::<Vec<_>>()})
        })
        .collect();
    let ctx = gateway.context();
    let stored: BTreeMap<String, Vec<u8>> = ctx
        .index
        .locate(&beeldbrug::core::Selection {
            sop_instance_uids: files.iter().map(|f| f.sop_uid.clone()).collect(),
            ..Default::default()
        })
        .await
        .unwrap()
        .iter()
        .map(|l| {
            let path = ctx.core.stored().local_file(l).path().to_path_buf();
            (l.sop_instance_uid.clone(), std::fs::read(path).unwrap())
        })
        .collect();
    let syntax = common::gateway_mode::syntax_of(&stored[&files[0].sop_uid]);
    let (answer, _parts) = client.call(
        Tx::Rad75,
        &Value::Array(request),
        &[syntax.as_str()],
        Some(&assertion()),
        None,
    );
    assert_eq!(
        answer["status"], "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success",
        "{answer}"
    );
    let docs = answer["documents"].as_array().unwrap();
    assert_eq!(docs.len(), files.len());
    for d in docs {
        let bytes = std::fs::read(d["file"].as_str().unwrap()).unwrap();
        assert!(
            bytes == stored[d["uid"].as_str().unwrap()],
            "byte-exact as stored"
        );
    }

    // No consent: the answer of a patient with nothing published.
    let (denied, _) = client.call(
        Tx::Iti38,
        &find_documents(BSN_DENIED),
        &[],
        Some(&assertion()),
        None,
    );
    let (unknown, _) = client.call(
        Tx::Iti38,
        &find_documents("123456782"),
        &[],
        Some(&assertion()),
        None,
    );
    assert_eq!(denied, unknown);
    assert!(denied["entries"].as_array().unwrap().is_empty());

    // One Query record per ITI-38 call, with the XUA user; RAD-75 and ITI-39 recorded too.
    let queries = audit(&gateway, "ITI-38").await;
    assert!(queries.len() >= 3, "{queries:?}");
    assert_eq!(audit(&gateway, "RAD-75").await.len(), 1);
    assert_eq!(audit(&gateway, "ITI-39").await.len(), 1);
    gateway.stop().await;
}
