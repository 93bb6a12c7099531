//! XDS-I publication and the registry's stored queries (issue 14 items 1–3), with real
//! peers: studies stored by DCMTK `storescu` into a gateway with a one-second quiet period
//! are published as KOS manifests (read back by pydicom and DCMTK `dsrdump`), found by the
//! stored queries through `Core::registry_query`, and every rendered AdhocQueryResponse is
//! validated by `xmllint` against the ebRS 3.0 query schema. A study that grows is published
//! again (old entry Deprecated, RPLC); a study without a BSN is not published; consent Deny
//! answers like a patient without entries. SQLite and PostgreSQL.

mod common;
#[path = "common/mitz.rs"]
mod mitz;

use beeldbrug::core::{Core, RegistryScope};
use beeldbrug::ebrim::query::{QueryId, TARGET_COMMUNITIES};
use beeldbrug::ebrim::{
    codes, ns, render, ObjectKind, Params, QueryResponse, ResponseStatus, ReturnType, Status,
    StoredQuery,
};
use beeldbrug::store::index::RegistryLookup;
use beeldbrug::store::Index;
use beeldbrug::trust::consent::ConsentDecision;
use beeldbrug::trust::{Caller, Operation};
use common::Gateway;
use mitz::MitzSim;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

const BSN_PERMIT: &str = "999999990";
const BSN_DENY: &str = "111222333";
const NO_BSN: &str = "ZH0003";
const HOME: &str = "urn:oid:2.16.528.1.1007.99.1";
const REPOSITORY: &str = "2.16.528.1.1007.99.2";
const SOURCE: &str = "2.16.528.1.1007.99.3";
const OWN_URA: &str = "00000123";
const REMOTE_URA: &str = "00000999";
const KOS_FORMAT: &str = "1.2.840.10008.5.1.4.1.1.88.59";

fn xds_patient(bsn: &str) -> String {
    format!("{bsn}^^^&2.16.840.1.113883.2.4.6.3&ISO")
}

fn schemas_dir() -> PathBuf {
    std::env::var_os("BEELDBRUG_SCHEMAS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemas"))
}

/// `xmllint --noout --schema ebRS/query.xsd`: the rendered response must be valid.
fn validate(xml: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("response.xml");
    std::fs::write(&path, xml).unwrap();
    let schemas = schemas_dir();
    let out = Command::new("xmllint")
        .env("XML_CATALOG_FILES", schemas.join("catalog.xml"))
        .args(["--nonet", "--noout", "--schema"])
        .arg(schemas.join("ihe/schema/ebRS/query.xsd"))
        .arg(&path)
        .output()
        .expect("xmllint (apt-get install libxml2-utils)");
    assert!(
        out.status.success(),
        "xmllint refused the response: {}\n{xml}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The test data: three patients, given our BSNs and a hospital number by `dcmodify`.
struct Data {
    _dir: tempfile::TempDir,
    root: PathBuf,
    /// Study UID → (patient ID as stored, SOP instance UIDs).
    studies: BTreeMap<String, (String, BTreeSet<String>)>,
    /// A file of the Permit patient, to copy as a new instance later.
    sample: PathBuf,
    /// The report: an encapsulated PDF (DCMTK `pdf2dcm`) in the Deny patient's study: its
    /// study, SOP Instance UID and the PDF.
    report: (String, String, Vec<u8>),
}

fn data() -> Data {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let mut args = beeldbrug::testdata::GenerateArgs::with_defaults(&root);
    args.patients = 3;
    args.ct_slices = 3;
    args.mr_slices = 2;
    args.frame_size = 32;
    let files = beeldbrug::testdata::generate(&args).unwrap();
    let mut patients: Vec<String> = files.iter().map(|f| f.patient_id.clone()).collect();
    patients.dedup();
    let patients: Vec<String> = patients
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(patients.len(), 3);
    let new_id: BTreeMap<&str, &str> = [
        (patients[0].as_str(), BSN_PERMIT),
        (patients[1].as_str(), BSN_DENY),
        // The generator makes fictitious BSNs: the third patient gets a hospital number.
        (patients[2].as_str(), NO_BSN),
    ]
    .into_iter()
    .collect();
    let mut studies: BTreeMap<String, (String, BTreeSet<String>)> = BTreeMap::new();
    let mut sample = None;
    for f in &files {
        let id = new_id
            .get(f.patient_id.as_str())
            .copied()
            .unwrap_or(f.patient_id.as_str());
        if id != f.patient_id {
            let out = common::dcmtk(
                "dcmodify",
                &[
                    "-nb",
                    "-m",
                    &format!("(0010,0020)={id}"),
                    f.path.to_str().unwrap(),
                ],
            );
            assert!(out.status.success(), "dcmodify: {out:?}");
        }
        if id == BSN_PERMIT && sample.is_none() {
            sample = Some(f.path.clone());
        }
        studies
            .entry(f.study_uid.clone())
            .or_insert_with(|| (id.to_string(), BTreeSet::new()))
            .1
            .insert(f.sop_uid.clone());
    }
    // A report in the Deny patient's study (its first one).
    let (deny_study, (_, deny_sops)) = studies
        .iter()
        .find(|(_, (p, _))| p == BSN_DENY)
        .map(|(s, v)| (s.clone(), v.clone()))
        .unwrap();
    let deny_file = files
        .iter()
        .find(|f| deny_sops.contains(&f.sop_uid))
        .unwrap()
        .path
        .clone();
    let mut pdf = b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n".to_vec();
    // Even, so the Encapsulated Document needs no pad byte.
    if pdf.len() % 2 == 1 {
        pdf.insert(pdf.len() - 1, b' ');
    }
    let pdf_path = dir.path().join("report.pdf");
    std::fs::write(&pdf_path, &pdf).unwrap();
    let report_path = root.join("report.dcm");
    let out = common::dcmtk(
        "pdf2dcm",
        &[
            "--title",
            "Verslag",
            "--study-from",
            deny_file.to_str().unwrap(),
            pdf_path.to_str().unwrap(),
            report_path.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "pdf2dcm: {out:?}");
    let dump = common::dcmtk(
        "dcmdump",
        &["+P", "0008,0018", report_path.to_str().unwrap()],
    );
    let text = String::from_utf8_lossy(&dump.stdout);
    let report_sop = text
        .split('[')
        .nth(1)
        .and_then(|t| t.split(']').next())
        .expect("the report's SOP Instance UID")
        .to_string();
    studies
        .get_mut(&deny_study)
        .unwrap()
        .1
        .insert(report_sop.clone());
    Data {
        _dir: dir,
        root,
        studies,
        sample: sample.unwrap(),
        report: (deny_study, report_sop, pdf),
    }
}

fn storescu(gw: &Gateway, path: &Path) {
    gw.store_dir(path);
}

fn config(mitz: &MitzSim, extra: &str) -> String {
    format!(
        r#"
[xds]
enabled = true
home_community_id = "{HOME}"
repository_unique_id = "{REPOSITORY}"
source_id = "{SOURCE}"
quiet_secs = 1
organisation_name = "Ziekenhuis Test"
[trust]
own_ura = "{OWN_URA}"
[trust.consent]
url = "{}"
purposes = ["TREATMENT"]
cache_secs = 0
timeout_secs = 5
{extra}
"#,
        mitz.url
    )
}

/// Poll the registry until `check` holds (the publisher runs in the background); the bound
/// is generous and only there to fail instead of hanging.
async fn until<F: Fn(&[beeldbrug::store::index::RegistryRow]) -> bool>(
    index: &Arc<dyn Index>,
    lookup: RegistryLookup,
    check: F,
) -> Vec<beeldbrug::store::index::RegistryRow> {
    for _ in 0..600 {
        let rows = index.registry_objects(&lookup).await.unwrap();
        if check(&rows) {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the registry never reached the expected state for {lookup:?}");
}

fn local_caller() -> Caller {
    Caller::new("XDS-TEST", "127.0.0.1:1")
}

/// Another organisation, treatment: consent is asked.
fn remote_caller() -> Caller {
    let mut claims = beeldbrug::trust::Claims::of_organisation(
        beeldbrug::trust::ClaimSource::Configured,
        "REMOTE_GTK",
        REMOTE_URA,
    );
    claims.role = "01.015".into();
    claims.purpose_of_use = "TREATMENT".into();
    Caller {
        claims: Some(claims),
        ..Caller::new("REMOTE_GTK", "127.0.0.1:2")
    }
}

async fn ask(
    core: &Core,
    caller: &Caller,
    query: &StoredQuery,
    scope: RegistryScope,
) -> QueryResponse {
    let ticket = core
        .admit(caller, Operation::QidoRs)
        .await
        .expect("admitted");
    let answer = core.registry_query(ticket, query, scope).await;
    validate(&render::adhoc_query_response(&answer));
    answer
}

fn query(id: QueryId, params: &[(&str, &[&str])]) -> StoredQuery {
    let mut p = Params::default();
    for (name, values) in params {
        p.insert(name, values.iter().map(|v| v.to_string()).collect());
    }
    StoredQuery::new(id, p)
}

fn find_documents(bsn: &str, extra: &[(&str, &[&str])]) -> StoredQuery {
    let patient = xds_patient(bsn);
    let patient = [patient.as_str()];
    let mut params: Vec<(&str, &[&str])> = vec![
        ("$XDSDocumentEntryPatientId", &patient),
        ("$XDSDocumentEntryStatus", &[ns::STATUS_APPROVED]),
    ];
    params.extend_from_slice(extra);
    query(QueryId::FindDocuments, &params)
}

/// The SOP Instance UIDs a KOS references (pydicom), with the series' retrieve attributes
/// and the document title.
fn pydicom_references(path: &Path) -> serde_json::Value {
    let script = r#"
import json, sys, pydicom
ds = pydicom.dcmread(sys.argv[1])
refs, series = [], []
for study in ds.CurrentRequestedProcedureEvidenceSequence:
    for s in study.ReferencedSeriesSequence:
        series.append({"uid": s.SeriesInstanceUID, "ae": s.RetrieveAETitle, "location": s.RetrieveLocationUID})
        refs += [r.ReferencedSOPInstanceUID for r in s.ReferencedSOPSequence]
content = [i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in ds.ContentSequence]
title = ds.ConceptNameCodeSequence[0]
print(json.dumps({"sop_class": ds.SOPClassUID, "refs": refs, "content": content, "series": series,
  "title": [title.CodeValue, title.CodingSchemeDesignator, title.CodeMeaning],
  "study": ds.StudyInstanceUID, "patient": ds.PatientID}))
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .output()
        .expect("python3 with pydicom");
    assert!(
        out.status.success(),
        "pydicom: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The KOS of an entry, checked by pydicom and dsrdump, its hash and size against the entry.
async fn check_kos(
    gw: &Gateway,
    entry: &beeldbrug::ebrim::RegistryObject,
    expected: &BTreeSet<String>,
) {
    let kos_uid = entry.unique_id().unwrap();
    let selection = beeldbrug::model::Selection {
        sop_instance_uids: vec![kos_uid.to_string()],
        ..Default::default()
    };
    let located = gw.context().index.locate(&selection).await.unwrap();
    assert_eq!(located.len(), 1, "the KOS is an instance of the study");
    let path = gw.context().blobs.path(&located[0].blob_key);
    let bytes = std::fs::read(&path).unwrap();
    let sha1 = {
        use sha1::Digest;
        sha1::Sha1::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    assert_eq!(entry.slot_value("hash"), Some(sha1.as_str()));
    assert_eq!(
        entry.slot_value("size"),
        Some(bytes.len().to_string().as_str())
    );
    let kos = pydicom_references(&path);
    assert_eq!(kos["sop_class"], KOS_FORMAT);
    assert_eq!(
        kos["title"],
        serde_json::json!(["113030", "DCM", "Manifest"])
    );
    let refs: BTreeSet<String> = kos["refs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        &refs, expected,
        "the KOS references every instance of the study"
    );
    let content: BTreeSet<String> = kos["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(&content, expected);
    for s in kos["series"].as_array().unwrap() {
        assert_eq!(s["ae"], "BEELDBRUG");
        assert_eq!(s["location"], REPOSITORY);
    }
    let dump = common::dcmtk("dsrdump", &[path.to_str().unwrap()]);
    assert!(dump.status.success(), "dsrdump: {dump:?}");
    let text = String::from_utf8_lossy(&dump.stdout);
    assert!(text.contains("Key Object Selection"), "{text}");
    assert!(text.contains("Manifest"), "{text}");
}

/// The KOS manifests' DocumentEntries among registry rows, by status.
fn document(
    rows: &[beeldbrug::store::index::RegistryRow],
    status: Status,
) -> Vec<beeldbrug::ebrim::RegistryObject> {
    entries(rows, status)
        .into_iter()
        .filter(|o| o.mime_type.as_deref() == Some("application/dicom"))
        .collect()
}

/// Every DocumentEntry among registry rows, by status.
fn entries(
    rows: &[beeldbrug::store::index::RegistryRow],
    status: Status,
) -> Vec<beeldbrug::ebrim::RegistryObject> {
    rows.iter()
        .map(|r| serde_json::from_str::<beeldbrug::ebrim::RegistryObject>(&r.metadata).unwrap())
        .zip(rows)
        .filter(|(o, r)| o.kind == ObjectKind::DocumentEntry && r.status == status.urn())
        .map(|(o, _)| o)
        .collect()
}

async fn exercise(extra_toml: &str) {
    let data = data();
    let mitz = MitzSim::start(&[
        (BSN_PERMIT, ConsentDecision::Permit),
        (BSN_DENY, ConsentDecision::Deny),
    ]);
    let gw = Gateway::start(&config(&mitz, extra_toml)).await;
    storescu(&gw, &data.root);
    let index = gw.context().index.clone();
    let core = gw.context().core.clone();

    // Every study of a BSN patient is published; the other patient's is not.
    for (study, (patient, instances)) in &data.studies {
        if patient == BSN_PERMIT || patient == BSN_DENY {
            let rows = until(&index, RegistryLookup::Study(study.clone()), |rows| {
                !rows.is_empty()
            })
            .await;
            let entries = document(&rows, Status::Approved);
            assert_eq!(entries.len(), 1, "one entry for study {study}");
            let entry = &entries[0];
            assert_eq!(entry.patient_id(), Some(xds_patient(patient).as_str()));
            assert_eq!(entry.mime_type.as_deref(), Some("application/dicom"));
            assert_eq!(entry.slot_value("repositoryUniqueId"), Some(REPOSITORY));
            assert!(entry
                .slot(ns::REFERENCE_ID_LIST)
                .contains(&format!("{study}^^^^{}", ns::REF_STUDY_UID)));
            let accession = format!("^^^&{SOURCE}&ISO^{}", ns::REF_ACCESSION);
            assert!(
                entry
                    .slot(ns::REFERENCE_ID_LIST)
                    .iter()
                    .any(|r| r.starts_with("BB") && r.ends_with(&accession)),
                "the accession number in referenceIdList: {:?}",
                entry.slot(ns::REFERENCE_ID_LIST)
            );
            assert_eq!(
                entry.codes(ns::DE_FORMAT_CODE),
                [(KOS_FORMAT, "1.2.840.10008.2.6.1")]
            );
            let institution = entry.author_values(ns::DE_AUTHOR, "authorInstitution");
            assert_eq!(
                institution,
                [format!("Ziekenhuis Test^^^^^&2.16.528.1.1007.3.3&ISO^^^^{OWN_URA}").as_str()]
            );
            check_kos(&gw, entry, instances).await;
        }
    }
    // The report: its own entry (the PDF itself), found with the manifest by the study UID.
    let (report_study, report_sop, pdf) = &data.report;
    let rows = index
        .registry_objects(&RegistryLookup::Study(report_study.clone()))
        .await
        .unwrap();
    let report = entries(&rows, Status::Approved)
        .into_iter()
        .find(|o| o.mime_type.as_deref() == Some("application/pdf"))
        .expect("the report's entry");
    assert_eq!(report.unique_id(), Some(report_sop.as_str()));
    assert_eq!(
        report.codes(ns::DE_FORMAT_CODE),
        [("urn:ihe:rad:PDF", "1.3.6.1.4.1.19376.1.2.3")]
    );
    assert_eq!(
        report.codes(ns::DE_TYPE_CODE),
        [("722124004", "2.16.840.1.113883.6.96")]
    );
    assert_eq!(
        report.codes(ns::DE_CLASS_CODE),
        [("9491000146107", "2.16.840.1.113883.6.96")]
    );
    let pdf_sha1 = {
        use sha1::Digest;
        sha1::Sha1::digest(pdf)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    assert_eq!(report.slot_value("hash"), Some(pdf_sha1.as_str()));
    assert_eq!(
        report.slot_value("size"),
        Some(pdf.len().to_string().as_str())
    );
    let reference = format!("{report_study}^^^^{}", ns::REF_STUDY_UID);
    let together = ask(
        &core,
        &local_caller(),
        &query(
            QueryId::FindDocumentsByReferenceId,
            &[
                (
                    "$XDSDocumentEntryPatientId",
                    &[xds_patient(BSN_DENY).as_str()],
                ),
                ("$XDSDocumentEntryStatus", &[ns::STATUS_APPROVED]),
                ("$XDSDocumentEntryReferenceIdList", &[reference.as_str()]),
            ],
        ),
        RegistryScope::Local,
    )
    .await;
    let mimes: BTreeSet<&str> = together
        .objects
        .iter()
        .filter_map(|o| o.mime_type.as_deref())
        .collect();
    assert_eq!(
        mimes,
        BTreeSet::from(["application/dicom", "application/pdf"])
    );

    // The patient without a BSN: looked at (publication noted), nothing registered.
    let (no_bsn_study, _) = data
        .studies
        .iter()
        .find(|(_, (p, _))| p != BSN_PERMIT && p != BSN_DENY)
        .unwrap();
    for _ in 0..600 {
        if index.publication(no_bsn_study).await.unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let skipped = index
        .publication(no_bsn_study)
        .await
        .unwrap()
        .expect("looked at");
    assert_eq!(skipped.entry_uuid, "", "no entry for a study without a BSN");
    assert!(index
        .registry_objects(&RegistryLookup::Study(no_bsn_study.clone()))
        .await
        .unwrap()
        .is_empty());

    let local = local_caller();
    let permit_studies: Vec<&String> = data
        .studies
        .iter()
        .filter(|(_, (p, _))| p == BSN_PERMIT)
        .map(|(s, _)| s)
        .collect();

    // FindDocuments by patient and status.
    let found = ask(
        &core,
        &local,
        &find_documents(BSN_PERMIT, &[]),
        RegistryScope::Local,
    )
    .await;
    assert_eq!(found.status, ResponseStatus::Success);
    assert_eq!(found.objects.len(), permit_studies.len());
    assert!(found
        .objects
        .iter()
        .all(|o| o.kind == ObjectKind::DocumentEntry));
    let entry = found.objects[0].clone();
    let deprecated = ask(
        &core,
        &local,
        &query(
            QueryId::FindDocuments,
            &[
                (
                    "$XDSDocumentEntryPatientId",
                    &[xds_patient(BSN_PERMIT).as_str()],
                ),
                ("$XDSDocumentEntryStatus", &[ns::STATUS_DEPRECATED]),
            ],
        ),
        RegistryScope::Local,
    )
    .await;
    assert!(deprecated.objects.is_empty());
    // ...by creation time (from/to), service start time, formatCode, eventCode.
    let created = entry.slot_value("creationTime").unwrap().to_string();
    let n = |q: &QueryResponse| q.objects.len();
    let by = |extra: &[(&str, &[&str])]| find_documents(BSN_PERMIT, extra);
    assert_eq!(
        n(&ask(
            &core,
            &local,
            &by(&[("$XDSDocumentEntryCreationTimeFrom", &[created.as_str()])]),
            RegistryScope::Local
        )
        .await),
        permit_studies.len()
    );
    assert_eq!(
        n(&ask(
            &core,
            &local,
            &by(&[("$XDSDocumentEntryCreationTimeTo", &["19700101"])]),
            RegistryScope::Local
        )
        .await),
        0
    );
    assert_eq!(
        n(&ask(
            &core,
            &local,
            &by(&[
                ("$XDSDocumentEntryServiceStartTimeFrom", &["1900"]),
                ("$XDSDocumentEntryServiceStartTimeTo", &["2999"])
            ]),
            RegistryScope::Local
        )
        .await),
        permit_studies.len()
    );
    let kos_format = format!("{KOS_FORMAT}^^^1.2.840.10008.2.6.1");
    assert_eq!(
        n(&ask(
            &core,
            &local,
            &by(&[("$XDSDocumentEntryFormatCode", &[kos_format.as_str()])]),
            RegistryScope::Local
        )
        .await),
        permit_studies.len()
    );
    assert_eq!(
        n(&ask(
            &core,
            &local,
            &by(&[(
                "$XDSDocumentEntryFormatCode",
                &["urn:ihe:rad:PDF^^^1.3.6.1.4.1.19376.1.2.3"]
            )]),
            RegistryScope::Local
        )
        .await),
        0
    );
    let modality = entry.codes(ns::DE_EVENT_CODE)[0].0.to_string();
    let event = format!("{modality}^^^1.2.840.10008.2.16.4");
    assert!(
        n(&ask(
            &core,
            &local,
            &by(&[(
                "$XDSDocumentEntryEventCodeList",
                &[event.as_str(), "XA^^^1.2.840.10008.2.16.4"]
            )]),
            RegistryScope::Local
        )
        .await)
            >= 1
    );
    assert_eq!(
        n(&ask(
            &core,
            &local,
            &by(&[
                ("$XDSDocumentEntryEventCodeList", &[event.as_str()]),
                (
                    "$XDSDocumentEntryEventCodeList",
                    &["XA^^^1.2.840.10008.2.16.4"]
                )
            ]),
            RegistryScope::Local
        )
        .await),
        0,
        "two slots are ANDed"
    );

    // FindDocumentsByReferenceId by Study Instance UID.
    let study_uid = entry
        .slot(ns::REFERENCE_ID_LIST)
        .iter()
        .find_map(|r| r.strip_suffix(&format!("^^^^{}", ns::REF_STUDY_UID)))
        .unwrap()
        .to_string();
    let reference = format!("{study_uid}^^^^{}", ns::REF_STUDY_UID);
    let by_reference = ask(
        &core,
        &local,
        &query(
            QueryId::FindDocumentsByReferenceId,
            &[
                (
                    "$XDSDocumentEntryPatientId",
                    &[xds_patient(BSN_PERMIT).as_str()],
                ),
                ("$XDSDocumentEntryStatus", &[ns::STATUS_APPROVED]),
                ("$XDSDocumentEntryReferenceIdList", &[reference.as_str()]),
            ],
        ),
        RegistryScope::Local,
    )
    .await;
    assert_eq!(by_reference.objects.len(), 1);
    assert_eq!(by_reference.objects[0].id, entry.id);

    // GetDocuments by entryUUID and by uniqueId.
    let by_uuid = ask(
        &core,
        &local,
        &query(
            QueryId::GetDocuments,
            &[("$XDSDocumentEntryEntryUUID", &[entry.id.as_str()])],
        ),
        RegistryScope::Local,
    )
    .await;
    assert_eq!(by_uuid.objects, vec![entry.clone()]);
    let by_unique = ask(
        &core,
        &local,
        &query(
            QueryId::GetDocuments,
            &[("$XDSDocumentEntryUniqueId", &[entry.unique_id().unwrap()])],
        ),
        RegistryScope::Local,
    )
    .await;
    assert_eq!(by_unique.objects, vec![entry.clone()]);

    // GetAssociations, GetSubmissionSets, GetSubmissionSetAndContents.
    let assocs = ask(
        &core,
        &local,
        &query(QueryId::GetAssociations, &[("$uuid", &[entry.id.as_str()])]),
        RegistryScope::Local,
    )
    .await;
    assert_eq!(assocs.associations.len(), 1);
    assert_eq!(assocs.associations[0].assoc_type, ns::HAS_MEMBER);
    assert_eq!(assocs.associations[0].target, entry.id);
    let sets = ask(
        &core,
        &local,
        &query(
            QueryId::GetSubmissionSets,
            &[("$uuid", &[entry.id.as_str()])],
        ),
        RegistryScope::Local,
    )
    .await;
    assert_eq!(sets.objects.len(), 1);
    assert_eq!(sets.objects[0].kind, ObjectKind::SubmissionSet);
    assert_eq!(sets.objects[0].external_id(ns::SS_SOURCE_ID), Some(SOURCE));
    assert_eq!(sets.associations.len(), 1);
    let set_id = sets.objects[0].id.clone();
    let contents = ask(
        &core,
        &local,
        &query(
            QueryId::GetSubmissionSetAndContents,
            &[("$XDSSubmissionSetEntryUUID", &[set_id.as_str()])],
        ),
        RegistryScope::Local,
    )
    .await;
    assert_eq!(contents.objects.len(), 2);
    assert_eq!(contents.associations.len(), 1);
    let all = ask(
        &core,
        &local,
        &query(
            QueryId::GetAll,
            &[
                ("$patientId", &[xds_patient(BSN_PERMIT).as_str()]),
                ("$XDSDocumentEntryStatus", &[ns::STATUS_APPROVED]),
                ("$XDSSubmissionSetStatus", &[ns::STATUS_APPROVED]),
                ("$XDSFolderStatus", &[ns::STATUS_APPROVED]),
            ],
        ),
        RegistryScope::Local,
    )
    .await;
    assert_eq!(all.objects.len(), 2 * permit_studies.len());
    assert_eq!(all.associations.len(), permit_studies.len());

    // ObjectRef, and ITI-38: homeCommunityId on every object.
    let mut refs = find_documents(BSN_PERMIT, &[]);
    refs.return_type = ReturnType::ObjectRef;
    let refs = ask(&core, &local, &refs, RegistryScope::CrossGateway).await;
    let xml = render::adhoc_query_response(&refs);
    assert_eq!(xml.matches("<rim:ObjectRef ").count(), permit_studies.len());
    assert_eq!(
        xml.matches(&format!("home=\"{HOME}\"")).count(),
        permit_studies.len()
    );
    let cross = ask(
        &core,
        &local,
        &find_documents(BSN_PERMIT, &[]),
        RegistryScope::CrossGateway,
    )
    .await;
    let xml = render::adhoc_query_response(&cross);
    let elements = xml.matches("<rim:ExtrinsicObject ").count()
        + xml.matches("<rim:Classification ").count()
        + xml.matches("<rim:ExternalIdentifier ").count();
    assert_eq!(xml.matches(&format!("home=\"{HOME}\"")).count(), elements);

    // $targetCommunityIdList: absent, empty, unknown, ours.
    let mut targeted = find_documents(BSN_PERMIT, &[]);
    targeted.target_communities = Some(vec![]);
    let empty = ask(&core, &local, &targeted, RegistryScope::CrossGateway).await;
    assert_eq!(empty.status, ResponseStatus::Failure);
    assert_eq!(empty.errors[0].location, TARGET_COMMUNITIES);
    targeted.target_communities = Some(vec![HOME.into(), "urn:oid:1.2.3.4.5".into()]);
    let partial = ask(&core, &local, &targeted, RegistryScope::CrossGateway).await;
    assert_eq!(partial.status, ResponseStatus::PartialSuccess);
    assert_eq!(partial.objects.len(), permit_studies.len());
    assert_eq!(partial.errors.len(), 1);
    assert_eq!(partial.errors[0].code, codes::UNKNOWN_COMMUNITY);
    assert_eq!(partial.errors[0].location, "urn:oid:1.2.3.4.5");
    targeted.target_communities = Some(vec![HOME.into()]);
    let ours = ask(&core, &local, &targeted, RegistryScope::CrossGateway).await;
    assert_eq!(ours.status, ResponseStatus::Success);
    assert_eq!(ours.objects.len(), permit_studies.len());

    // An unknown stored query: XDSUnknownStoredQuery, through the request reader.
    let request = format!(
        r#"<query:AdhocQueryRequest xmlns:query="{}" xmlns:rim="{}"><query:ResponseOption returnType="LeafClass"/><rim:AdhocQuery id="urn:uuid:00000000-1111-2222-3333-444444444444"/></query:AdhocQueryRequest>"#,
        ns::QUERY,
        ns::RIM
    );
    let element = beeldbrug::xml::parse(request.as_bytes()).unwrap();
    let ticket = core.admit(&local, Operation::QidoRs).await.unwrap();
    let unknown = core
        .registry_request(ticket, &element, RegistryScope::Local)
        .await;
    validate(&render::adhoc_query_response(&unknown));
    assert_eq!(unknown.status, ResponseStatus::Failure);
    assert_eq!(unknown.errors[0].code, codes::UNKNOWN_STORED_QUERY);

    // Consent: Deny answers exactly like a patient without entries; Permit answers.
    let remote = remote_caller();
    let denied = ask(
        &core,
        &remote,
        &find_documents(BSN_DENY, &[]),
        RegistryScope::CrossGateway,
    )
    .await;
    let nobody = ask(
        &core,
        &remote,
        &find_documents("123456782", &[]),
        RegistryScope::CrossGateway,
    )
    .await;
    assert_eq!(
        render::adhoc_query_response(&denied),
        render::adhoc_query_response(&nobody)
    );
    assert!(denied.objects.is_empty());
    let local_view = ask(
        &core,
        &local,
        &find_documents(BSN_DENY, &[]),
        RegistryScope::Local,
    )
    .await;
    assert!(
        !local_view.objects.is_empty(),
        "our own organisation sees the entries"
    );
    let permitted = ask(
        &core,
        &remote,
        &find_documents(BSN_PERMIT, &[]),
        RegistryScope::CrossGateway,
    )
    .await;
    assert_eq!(permitted.objects.len(), permit_studies.len());
    // One audit record per call, naming the patient.
    let before = index.audit_events(1000).await.unwrap().len();
    ask(
        &core,
        &remote,
        &find_documents(BSN_DENY, &[]),
        RegistryScope::CrossGateway,
    )
    .await;
    let events = index.audit_events(1000).await.unwrap();
    assert_eq!(events.len(), before + 1);
    let last = events.last().unwrap();
    assert!(last.patient_ids.contains(BSN_DENY), "{last:?}");

    // The document lookup of ITI-43 / RAD-69.
    let doc = core
        .registry_document(entry.unique_id().unwrap())
        .await
        .expect("published");
    assert_eq!(doc.study_instance_uid, study_uid);
    assert_eq!(doc.sop_instance_uid, entry.unique_id().unwrap());
    assert_eq!(doc.patient_id, BSN_PERMIT);

    // Re-publication: one more instance in the study → a new KOS, the old entry Deprecated
    // and replaced (RPLC).
    let extra_dir = tempfile::tempdir().unwrap();
    let extra = extra_dir.path().join("extra.dcm");
    std::fs::copy(&data.sample, &extra).unwrap();
    let sample_study = &data.studies.iter().find(|(_, (_, sops))| {
        let name = data.sample.file_stem().unwrap().to_str().unwrap();
        sops.contains(name)
    });
    let (grown_study, (_, grown_sops)) = sample_study.expect("the sample's study");
    let new_sop = "2.25.99887766554433221100";
    let out = common::dcmtk(
        "dcmodify",
        &[
            "-nb",
            "-m",
            &format!("(0008,0018)={new_sop}"),
            extra.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let old_rows = index
        .registry_objects(&RegistryLookup::Study(grown_study.clone()))
        .await
        .unwrap();
    let old_entry = document(&old_rows, Status::Approved).remove(0);
    storescu(&gw, &extra);
    let rows = until(&index, RegistryLookup::Study(grown_study.clone()), |rows| {
        rows.iter().filter(|r| r.kind == "DocumentEntry").count() == 2
            && rows.iter().any(|r| r.status == ns::STATUS_DEPRECATED)
    })
    .await;
    let new_entry = document(&rows, Status::Approved).remove(0);
    assert_eq!(document(&rows, Status::Deprecated)[0].id, old_entry.id);
    let mut expected = grown_sops.clone();
    expected.insert(new_sop.to_string());
    check_kos(&gw, &new_entry, &expected).await;
    let related = ask(
        &core,
        &local,
        &query(
            QueryId::GetRelatedDocuments,
            &[
                ("$XDSDocumentEntryEntryUUID", &[new_entry.id.as_str()]),
                ("$AssociationTypes", &[ns::RPLC]),
            ],
        ),
        RegistryScope::Local,
    )
    .await;
    assert_eq!(related.objects.len(), 2);
    assert_eq!(related.associations.len(), 1);
    assert_eq!(related.associations[0].source, new_entry.id);
    assert_eq!(related.associations[0].target, old_entry.id);
    let approved = ask(
        &core,
        &local,
        &find_documents(BSN_PERMIT, &[]),
        RegistryScope::Local,
    )
    .await;
    assert_eq!(approved.objects.len(), permit_studies.len());
    assert!(approved.objects.iter().all(|o| o.id != old_entry.id));
    // Nothing more happens: the new KOS does not make its study look changed.
    let publication = index.publication(grown_study).await.unwrap().unwrap();
    assert_eq!(publication.entry_uuid, new_entry.id);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rows = index
        .registry_objects(&RegistryLookup::Study(grown_study.clone()))
        .await
        .unwrap();
    assert_eq!(rows.iter().filter(|r| r.kind == "DocumentEntry").count(), 2);

    // Deleting an instance makes the study changed: a new manifest without it replaces the
    // last one. Deleting the whole study deprecates every entry of it.
    let deleted = index
        .delete_instances(
            &beeldbrug::model::Selection {
                sop_instance_uids: vec![new_sop.to_string()],
                ..Default::default()
            },
            beeldbrug::clock::unix_seconds(),
        )
        .await
        .unwrap();
    assert_eq!(deleted.len(), 1);
    let rows = until(&index, RegistryLookup::Study(grown_study.clone()), |rows| {
        document(rows, Status::Deprecated).len() == 2 && document(rows, Status::Approved).len() == 1
    })
    .await;
    let third = document(&rows, Status::Approved).remove(0);
    check_kos(&gw, &third, grown_sops).await;
    index
        .delete_instances(
            &beeldbrug::model::Selection {
                study_uids: vec![grown_study.clone()],
                ..Default::default()
            },
            beeldbrug::clock::unix_seconds(),
        )
        .await
        .unwrap();
    let rows = index
        .registry_objects(&RegistryLookup::Study(grown_study.clone()))
        .await
        .unwrap();
    assert!(entries(&rows, Status::Approved).is_empty());
    assert_eq!(entries(&rows, Status::Deprecated).len(), 3);
    assert!(index.publication(grown_study).await.unwrap().is_none());

    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn publication_and_stored_queries_sqlite() {
    exercise("").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn publication_and_stored_queries_postgres() {
    let db = common::postgres::FreshDatabase::create().await;
    exercise(&format!("[storage]\nindex = \"{}\"\n", db.url)).await;
    db.drop_db().await;
}

/// The IHE/NIST sample requests (ITI-18, ITI-38) read as stored queries.
#[test]
fn sample_requests_parse() {
    let mut seen = 0;
    for dir in ["iti-18", "iti-38"] {
        let dir = schemas_dir().join("samples").join(dir);
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            let root = beeldbrug::xml::parse(&bytes).unwrap();
            let Some(request) = root
                .descendants()
                .find(|e| e.is(ns::QUERY, "AdhocQueryRequest"))
            else {
                continue; // a response
            };
            let query = StoredQuery::from_element(request)
                .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
            assert_eq!(query.id, QueryId::FindDocuments, "{}", path.display());
            assert!(query.params.single("$XDSDocumentEntryPatientId").is_some());
            assert!(!query.params.values("$XDSDocumentEntryStatus").is_empty());
            seen += 1;
        }
    }
    assert_eq!(seen, 5, "every sample request read");
}

/// A study that arrives by STOW-RS is published like one from C-STORE (the generator's
/// patients have fictitious BSNs).
#[tokio::test(flavor = "multi_thread")]
async fn a_stow_rs_study_is_published() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = beeldbrug::testdata::GenerateArgs::with_defaults(dir.path().join("data"));
    args.patients = 1;
    args.ct_slices = 3;
    args.mr_slices = 1;
    args.frame_size = 32;
    let files = beeldbrug::testdata::generate(&args).unwrap();
    let study = files[0].study_uid.clone();
    let files: Vec<_> = files.into_iter().filter(|f| f.study_uid == study).collect();
    let expected: BTreeSet<String> = files.iter().map(|f| f.sop_uid.clone()).collect();
    let mitz = MitzSim::start(&[]);
    let gw = Gateway::start(&config(&mitz, "")).await;
    let response = common::http::stow_files(gw.http_port, &files).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let index = gw.context().index.clone();
    let rows = until(&index, RegistryLookup::Study(study.clone()), |rows| {
        !rows.is_empty()
    })
    .await;
    let entry = document(&rows, Status::Approved).remove(0);
    assert_eq!(
        entry.patient_id(),
        Some(xds_patient(&files[0].patient_id).as_str())
    );
    check_kos(&gw, &entry, &expected).await;
    gw.stop().await;
}

/// Measurement, not a check (run with `--ignored --nocapture`): FindDocuments through
/// `Core::registry_query` (evaluation, consent filter, one audit record each) with 10,000
/// published studies of 5,000 patients in the SQLite index; prints p50/p99.
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn find_documents_latency_with_10000_studies() {
    use beeldbrug::registry::metadata::{self, DocumentCodes, Published, StudyFacts};
    use beeldbrug::store::index::Submission;
    let mitz = MitzSim::start(&[]);
    let gw =
        Gateway::start(&config(&mitz, "").replace("quiet_secs = 1\n", "quiet_secs = 3600\n")).await;
    let settings = beeldbrug::registry::Settings::from_config(&gw.context().config);
    let index = gw.context().index.clone();
    let bsn = |n: usize| format!("{:09}", 100_000_000 + n);
    let started = std::time::Instant::now();
    for batch in 0..100 {
        let mut submission = Submission::default();
        for i in 0..100 {
            let n = batch * 100 + i;
            let facts = StudyFacts {
                bsn: bsn(n % 5000),
                study_instance_uid: format!("2.25.{n}"),
                study_date: "20240101".into(),
                modalities: vec!["CT".into()],
                ..Default::default()
            };
            let kos = Published {
                sop_instance_uid: format!("2.25.9{n}"),
                sha1: "0".repeat(40),
                size: 1000,
                created: 1_700_000_000,
            };
            let entry = metadata::document_entry(
                &settings,
                &facts,
                &kos,
                &DocumentCodes::manifest(&settings),
            );
            let set = metadata::submission_set(&settings, &facts.bsn, 1_700_000_000);
            let member = metadata::has_member(&set.id, &entry.id);
            for (object, study) in [(&entry, facts.study_instance_uid.as_str()), (&set, "")] {
                submission
                    .objects
                    .push(beeldbrug::store::index::RegistryRow {
                        entry_uuid: object.id.clone(),
                        kind: object.kind.name().into(),
                        unique_id: object.unique_id().unwrap().into(),
                        patient_id: object.patient_id().unwrap().into(),
                        status: object.status.urn().into(),
                        study_instance_uid: study.into(),
                        metadata: serde_json::to_string(object).unwrap(),
                    });
            }
            submission
                .associations
                .push(beeldbrug::store::index::AssociationRow {
                    entry_uuid: member.id.clone(),
                    association_type: member.assoc_type.clone(),
                    source_uuid: member.source.clone(),
                    target_uuid: member.target.clone(),
                    status: member.status.urn().into(),
                    metadata: serde_json::to_string(&member).unwrap(),
                });
        }
        index.registry_submit(&submission).await.unwrap();
    }
    println!("10,000 studies registered in {:?}", started.elapsed());
    let core = gw.context().core.clone();
    let caller = local_caller();
    let mut times = Vec::new();
    for k in 0..1000 {
        let q = find_documents(&bsn((k * 7919) % 5000), &[]);
        let t = std::time::Instant::now();
        let ticket = core.admit(&caller, Operation::QidoRs).await.unwrap();
        let answer = core
            .registry_query(ticket, &q, RegistryScope::CrossGateway)
            .await;
        let xml = render::adhoc_query_response(&answer);
        times.push(t.elapsed());
        assert_eq!(answer.objects.len(), 2, "{xml}");
    }
    times.sort();
    println!(
        "FindDocuments (2 entries, rendered, audited) over 1000 calls: p50 {:?}, p99 {:?}, max {:?}",
        times[499], times[989], times[999]
    );
    gw.stop().await;
}

/// Gateways sharing an index: one claim on a study at a time, until it expires or the
/// publication is submitted.
async fn claims(index: Arc<dyn Index>) {
    use beeldbrug::store::index::{Publication, Submission};
    let study = "2.25.4242";
    assert!(index.claim_publication(study, "a", 100, 400).await.unwrap());
    assert!(!index.claim_publication(study, "b", 200, 500).await.unwrap());
    assert!(index.claim_publication(study, "a", 200, 500).await.unwrap());
    let claimed = index.publication(study).await.unwrap().unwrap();
    assert_eq!((claimed.entry_uuid.as_str(), claimed.arrivals), ("", 0));
    assert!(
        index.claim_publication(study, "b", 500, 800).await.unwrap(),
        "expired"
    );
    index
        .registry_submit(&Submission {
            publication: Some(Publication {
                study_instance_uid: study.into(),
                entry_uuid: "urn:uuid:1".into(),
                arrivals: 3,
                published_at: 600,
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        index.claim_publication(study, "c", 600, 900).await.unwrap(),
        "submitted"
    );
    let published = index.publication(study).await.unwrap().unwrap();
    assert_eq!(
        (published.entry_uuid.as_str(), published.arrivals),
        ("urn:uuid:1", 3)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn publication_claims_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("index.db").display());
    claims(beeldbrug::store::open_index(&url).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn publication_claims_postgres() {
    let db = common::postgres::FreshDatabase::create().await;
    claims(beeldbrug::store::open_index(&db.url).await.unwrap()).await;
    db.drop_db().await;
}
