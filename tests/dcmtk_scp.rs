//! Real DCMTK tools (echoscu, storescu, findscu, movescu, getscu, storescp) against a running
//! beeldbrug. Every test starts its own gateway on port 0 with a temp data dir; the DCMTK
//! commands block, so they run on `spawn_blocking` while the gateway keeps serving.
//!
//! The tools come from /usr/bin (DCMTK 3.6.7 in CI); a missing tool fails the test with an
//! install hint (`common::require_tool`).

mod common;

use beeldbrug::core::{Level, Query, Selection};
use beeldbrug::dimse::dataset::{read_layout, PIXEL_DATA};
use beeldbrug::testdata::{
    GeneratedFile, EXPLICIT_VR_LE, IMPLICIT_VR_LE, JPEG_BASELINE, MR_IMAGE_STORAGE, RLE_LOSSLESS,
};
use common::{free_port, generate, require_tool, Gateway};
use dicom_core::header::Header;
use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const AE: &str = "BEELDBRUG";
/// Network timeouts for every SCU run, so a stuck exchange fails instead of hanging.
const TIMEOUTS: [&str; 6] = ["-to", "15", "-ta", "30", "-td", "60"];

// ---------------------------------------------------------------------------------------------
// Running DCMTK

/// The output of one DCMTK run: exit status and stdout + stderr as text.
struct Run {
    ok: bool,
    code: Option<i32>,
    text: String,
}

impl Run {
    fn of(output: Output) -> Run {
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        Run {
            ok: output.status.success(),
            code: output.status.code(),
            text,
        }
    }

    #[track_caller]
    fn assert_ok(&self, what: &str) -> &Self {
        assert!(self.ok, "{what}: exit code {:?}\n{}", self.code, self.text);
        self
    }
}

/// Arguments as OS strings (one of them may be Latin-1 bytes).
fn os_args(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

/// Run a DCMTK tool (from /usr/bin, TCP_NODELAY=1) on a blocking thread.
async fn dcmtk(tool: &'static str, args: Vec<OsString>) -> Run {
    let path = require_tool(tool);
    let output = tokio::task::spawn_blocking(move || {
        Command::new(path)
            .args(&args)
            .env("TCP_NODELAY", "1")
            .output()
            .expect("run DCMTK tool")
    })
    .await
    .expect("blocking task");
    Run::of(output)
}

/// Run an SCU tool against the gateway: `tool -aec <called> 127.0.0.1 <port> <timeouts> <args>`
/// (DCMTK takes options anywhere, but positional parameters in order: peer, port, files).
async fn scu(gw: &Gateway, tool: &'static str, called_ae: &str, args: Vec<OsString>) -> Run {
    let mut all = os_args(&["-aec", called_ae, "127.0.0.1", &gw.port.to_string()]);
    all.extend(os_args(&TIMEOUTS));
    all.extend(args);
    dcmtk(tool, all).await
}

/// `-k KEY` pairs for a query/retrieve identifier.
fn keys(list: &[&str]) -> Vec<OsString> {
    list.iter()
        .flat_map(|k| [OsString::from("-k"), OsString::from(k)])
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Files and the gateway's store

/// The data set bytes of a Part 10 file: everything after the file meta group.
fn dataset_bytes(path: &Path) -> Vec<u8> {
    let layout = read_layout(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let bytes = std::fs::read(path).expect("read file");
    bytes[layout.dataset_offset as usize..].to_vec()
}

/// Transfer syntax and SOP Instance UID from a Part 10 file's meta group.
fn meta_of(path: &Path) -> (String, String) {
    let layout = read_layout(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let clean = |s: &str| s.trim_end_matches(['\0', ' ']).to_string();
    (
        clean(layout.meta.transfer_syntax()),
        clean(layout.meta.media_storage_sop_instance_uid()),
    )
}

/// A text attribute of a data set ("" when absent), decoded with its Specific Character Set.
fn text(obj: &DefaultDicomObject, tag: Tag) -> String {
    obj.element(tag)
        .ok()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches([' ', '\0']).to_string())
        .unwrap_or_default()
}

/// A generated file's data set, parsed up to Pixel Data (for expected attribute values).
fn open_header(path: &Path) -> DefaultDicomObject {
    OpenFileOptions::new()
        .read_until(PIXEL_DATA)
        .open_file(path)
        .expect("open generated file")
}

/// Every regular file below `dir`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
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

/// Every instance the gateway's index holds.
async fn indexed_count(gw: &Gateway) -> usize {
    gw.context()
        .index
        .find(&Query::new(Level::Image))
        .await
        .expect("index query")
        .len()
}

/// Where the gateway stored an instance, and in which transfer syntax (says the index).
async fn stored_instance(gw: &Gateway, sop_uid: &str) -> (PathBuf, String) {
    let selection = Selection {
        sop_instance_uids: vec![sop_uid.to_string()],
        ..Default::default()
    };
    let found = gw
        .context()
        .index
        .locate(&selection)
        .await
        .expect("index locate");
    assert_eq!(found.len(), 1, "instance {sop_uid} indexed once");
    (
        gw.context().blobs.path(&found[0].blob_key),
        found[0].transfer_syntax_uid.clone(),
    )
}

/// The storescu option that makes it send files of `ts` unchanged. The default proposal
/// (explicit VR first) would convert Implicit VR files to Explicit VR on the way.
fn storescu_option(ts: &str) -> Option<&'static str> {
    match ts {
        EXPLICIT_VR_LE => None,
        IMPLICIT_VR_LE => Some("-xi"),
        RLE_LOSSLESS => Some("-xr"),
        JPEG_BASELINE => Some("-xy"),
        other => panic!("no storescu option for transfer syntax {other}"),
    }
}

/// Store files with storescu, one association per transfer syntax.
async fn store(gw: &Gateway, files: &[GeneratedFile]) {
    let mut by_ts: BTreeMap<&str, Vec<&GeneratedFile>> = BTreeMap::new();
    for f in files {
        by_ts.entry(f.transfer_syntax.as_str()).or_default().push(f);
    }
    for (ts, group) in by_ts {
        let mut args = Vec::new();
        args.extend(storescu_option(ts).map(OsString::from));
        args.extend(group.iter().map(|f| f.path.clone().into_os_string()));
        let run = scu(gw, "storescu", AE, args).await;
        run.assert_ok(&format!("storescu of {} files in {ts}", group.len()));
        assert!(
            !run.text.contains("E:"),
            "storescu reported an error:\n{}",
            run.text
        );
    }
}

/// A gateway with the generated studies stored in it by storescu.
async fn gateway_with_studies(
    extra_toml: &str,
    encapsulated: bool,
) -> (Gateway, tempfile::TempDir, Vec<GeneratedFile>) {
    let gw = Gateway::start(extra_toml).await;
    let src = tempfile::tempdir().expect("temp dir");
    let files = generate(src.path(), encapsulated);
    store(&gw, &files).await;
    assert_eq!(
        indexed_count(&gw).await,
        files.len(),
        "every generated instance indexed"
    );
    (gw, src, files)
}

/// The generated files of one study / series, in SOP Instance UID order.
fn of_study<'a>(files: &'a [GeneratedFile], study: &str) -> Vec<&'a GeneratedFile> {
    let mut v: Vec<_> = files.iter().filter(|f| f.study_uid == study).collect();
    v.sort_by(|a, b| a.sop_uid.cmp(&b.sop_uid));
    v
}

fn of_series<'a>(files: &'a [GeneratedFile], series: &str) -> Vec<&'a GeneratedFile> {
    let mut v: Vec<_> = files.iter().filter(|f| f.series_uid == series).collect();
    v.sort_by(|a, b| a.sop_uid.cmp(&b.sop_uid));
    v
}

/// Compare received files (any names) with their sources by SOP Instance UID: same set,
/// same transfer syntax, byte-equal data sets.
fn assert_received_equal(dir: &Path, expected: &[&GeneratedFile]) {
    let received: BTreeMap<String, (PathBuf, String)> = files_under(dir)
        .into_iter()
        .map(|p| {
            let (ts, sop) = meta_of(&p);
            (sop, (p, ts))
        })
        .collect();
    let wanted: BTreeSet<&str> = expected.iter().map(|f| f.sop_uid.as_str()).collect();
    let got: BTreeSet<&str> = received.keys().map(String::as_str).collect();
    assert_eq!(got, wanted, "received instances in {}", dir.display());
    for f in expected {
        let (path, ts) = &received[&f.sop_uid];
        assert_eq!(
            ts, &f.transfer_syntax,
            "transfer syntax of received {}",
            f.sop_uid
        );
        assert!(
            dataset_bytes(path) == dataset_bytes(&f.path),
            "data set of {} differs from the source",
            f.sop_uid
        );
    }
}

// ---------------------------------------------------------------------------------------------
// findscu

/// A C-FIND by findscu (`model` is `-P` or `-S`): the responses (written with `-X` into a
/// temp dir, read back with dicom-object) and the tool's output.
async fn find(gw: &Gateway, model: &str, query: Vec<OsString>) -> (Vec<DefaultDicomObject>, Run) {
    let out = tempfile::tempdir().expect("temp dir");
    let mut args = os_args(&["-v", model, "-X", "-od"]);
    args.push(out.path().as_os_str().to_owned());
    args.extend(query);
    let run = scu(gw, "findscu", AE, args).await;
    let responses = files_under(out.path())
        .iter()
        .map(|p| {
            dicom_object::open_file(p).unwrap_or_else(|e| panic!("response {}: {e}", p.display()))
        })
        .collect();
    (responses, run)
}

/// A C-FIND that must end in success; its responses.
async fn find_ok(gw: &Gateway, model: &str, query: &[&str]) -> Vec<DefaultDicomObject> {
    find_ok_os(gw, model, keys(query)).await
}

async fn find_ok_os(gw: &Gateway, model: &str, query: Vec<OsString>) -> Vec<DefaultDicomObject> {
    let (responses, run) = find(gw, model, query).await;
    run.assert_ok("findscu");
    assert!(
        run.text.contains("Received Final Find Response (Success)"),
        "C-FIND did not succeed:\n{}",
        run.text
    );
    responses
}

/// The values of `tag` over all responses, sorted.
fn values(responses: &[DefaultDicomObject], tag: Tag) -> Vec<String> {
    let mut v: Vec<String> = responses.iter().map(|r| text(r, tag)).collect();
    v.sort();
    v
}

fn sorted<I: IntoIterator<Item = S>, S: Into<String>>(items: I) -> Vec<String> {
    let mut v: Vec<String> = items.into_iter().map(Into::into).collect();
    v.sort();
    v.dedup();
    v
}

fn assert_level(responses: &[DefaultDicomObject], level: &str) {
    for r in responses {
        assert_eq!(text(r, tags::QUERY_RETRIEVE_LEVEL), level);
    }
}

/// Attributes of the generated studies the queries are checked against.
struct Studies {
    /// patient ID → birth date
    patients: BTreeMap<String, String>,
    /// study UID → (patient ID, study date, accession number, modality)
    studies: BTreeMap<String, (String, String, String, String)>,
}

impl Studies {
    fn read(files: &[GeneratedFile]) -> Studies {
        let mut patients = BTreeMap::new();
        let mut studies = BTreeMap::new();
        for f in files {
            if studies.contains_key(&f.study_uid) {
                continue;
            }
            let obj = open_header(&f.path);
            patients.insert(f.patient_id.clone(), text(&obj, tags::PATIENT_BIRTH_DATE));
            let study = (
                f.patient_id.clone(),
                text(&obj, tags::STUDY_DATE),
                text(&obj, tags::ACCESSION_NUMBER),
                text(&obj, tags::MODALITY),
            );
            studies.insert(f.study_uid.clone(), study);
        }
        Studies { patients, studies }
    }

    fn study_uids_where(&self, keep: impl Fn(&str, &str) -> bool) -> Vec<String> {
        sorted(
            self.studies
                .iter()
                .filter(|(_, (p, date, _, _))| keep(p, date))
                .map(|(uid, _)| uid.clone()),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// storescp as a C-MOVE destination

/// A DCMTK storescp the test started; killed when dropped.
struct StoreScp {
    child: Child,
    port: u16,
}

impl StoreScp {
    /// `storescp` accepting every transfer syntax it knows and writing data sets as received.
    async fn start(ae_title: &str, dir: &Path) -> StoreScp {
        let port = free_port();
        let child = Command::new(require_tool("storescp"))
            .args(["+B", "+xa", "-aet", ae_title, "--output-directory"])
            .arg(dir)
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start storescp");
        let scp = StoreScp { child, port };
        // Ready when it answers a C-ECHO.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let args = os_args(&["-to", "2", "-aec", ae_title, "127.0.0.1", &port.to_string()]);
            if dcmtk("echoscu", args).await.ok {
                return scp;
            }
            assert!(
                Instant::now() < deadline,
                "storescp did not come up on port {port}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for StoreScp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// 1. C-ECHO

#[tokio::test(flavor = "multi_thread")]
async fn echoscu_succeeds_and_wrong_called_ae_is_refused() {
    let gw = Gateway::start("").await;

    scu(&gw, "echoscu", AE, vec![])
        .await
        .assert_ok("echoscu with our AE title");

    // check_called_ae is on by default: the association is rejected, not the C-ECHO.
    let wrong = scu(&gw, "echoscu", "NOT_BEELDBRUG", os_args(&["-v"])).await;
    assert!(
        !wrong.ok,
        "echoscu to a wrong called AE must fail:\n{}",
        wrong.text
    );
    assert!(
        wrong.text.contains("Association Rejected"),
        "{}",
        wrong.text
    );
    assert!(
        wrong.text.contains("Called AE Title Not Recognized"),
        "{}",
        wrong.text
    );

    gw.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 2. C-STORE in four transfer syntaxes

#[tokio::test(flavor = "multi_thread")]
async fn storescu_in_four_transfer_syntaxes_stores_data_sets_byte_exact() {
    let (gw, _src, files) = gateway_with_studies("", true).await;
    let syntaxes: BTreeSet<&str> = files.iter().map(|f| f.transfer_syntax.as_str()).collect();
    assert_eq!(
        syntaxes,
        BTreeSet::from([EXPLICIT_VR_LE, IMPLICIT_VR_LE, JPEG_BASELINE, RLE_LOSSLESS]),
        "the generated studies cover all four transfer syntaxes"
    );

    for f in &files {
        let (stored, indexed_ts) = stored_instance(&gw, &f.sop_uid).await;
        // `blobs/study/series/sop.VERSION.dcm`: each stored version has a file of its own.
        let series_dir = gw
            .data_dir()
            .join("blobs")
            .join(&f.study_uid)
            .join(&f.series_uid);
        assert_eq!(
            stored.parent(),
            Some(series_dir.as_path()),
            "blob folder of {}",
            f.sop_uid
        );
        let name = stored.file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with(&format!("{}.", f.sop_uid)) && name.ends_with(".dcm"),
            "blob name of {}: {name}",
            f.sop_uid
        );
        let (meta_ts, meta_sop) = meta_of(&stored);
        assert_eq!(
            meta_ts, f.transfer_syntax,
            "stored meta transfer syntax of {}",
            f.sop_uid
        );
        assert_eq!(
            indexed_ts, f.transfer_syntax,
            "indexed transfer syntax of {}",
            f.sop_uid
        );
        assert_eq!(meta_sop, f.sop_uid);
        assert!(
            dataset_bytes(&stored) == dataset_bytes(&f.path),
            "stored data set of {} ({}) differs from the one sent",
            f.sop_uid,
            f.transfer_syntax
        );
    }

    // Re-sending replaces: no duplicates in the index or on disk.
    let blobs_before = files_under(&gw.data_dir().join("blobs")).len();
    assert_eq!(blobs_before, files.len());
    store(&gw, &files).await;
    assert_eq!(
        indexed_count(&gw).await,
        files.len(),
        "re-sent instances are not duplicated in the index"
    );
    // The replaced versions' files wait out a grace period (a reader may still hold their
    // keys), queued for deletion: nothing else is extra.
    let queued = gw
        .context()
        .index
        .queued_blob_deletions(1000)
        .await
        .unwrap();
    assert_eq!(queued.len(), files.len(), "each replaced version queued");
    assert_eq!(
        files_under(&gw.data_dir().join("blobs")).len(),
        blobs_before + queued.len(),
        "no extra blobs"
    );
    let f = &files[0];
    assert!(dataset_bytes(&stored_instance(&gw, &f.sop_uid).await.0) == dataset_bytes(&f.path));

    gw.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 3. C-FIND

#[tokio::test(flavor = "multi_thread")]
async fn findscu_patient_and_study_levels() {
    let (gw, _src, files) = gateway_with_studies("", false).await;
    let info = Studies::read(&files);
    let patient_ids: Vec<String> = info.patients.keys().cloned().collect();
    assert_eq!(patient_ids.len(), 2);
    let all_studies = sorted(info.studies.keys().cloned());

    // PATIENT, universal keys come back filled.
    let r = find_ok(
        &gw,
        "-P",
        &[
            "QueryRetrieveLevel=PATIENT",
            "PatientID",
            "PatientName",
            "PatientBirthDate",
            "NumberOfPatientRelatedStudies",
        ],
    )
    .await;
    assert_level(&r, "PATIENT");
    assert_eq!(values(&r, tags::PATIENT_ID), patient_ids);
    for resp in &r {
        let id = text(resp, tags::PATIENT_ID);
        assert_eq!(text(resp, tags::PATIENT_NAME), "Müller^Zoë");
        assert_eq!(text(resp, tags::PATIENT_BIRTH_DATE), info.patients[&id]);
        let studies = info.studies.values().filter(|s| s.0 == id).count();
        assert_eq!(
            text(resp, tags::NUMBER_OF_PATIENT_RELATED_STUDIES),
            studies.to_string()
        );
    }

    // PATIENT, single value, `*` and `?` wildcards (PatientID is LO: case-sensitive).
    let first = &patient_ids[0];
    let r = find_ok(
        &gw,
        "-P",
        &[
            "QueryRetrieveLevel=PATIENT",
            &format!("PatientID={first}"),
            "PatientBirthDate",
        ],
    )
    .await;
    assert_eq!(values(&r, tags::PATIENT_ID), vec![first.clone()]);
    assert_eq!(text(&r[0], tags::PATIENT_BIRTH_DATE), info.patients[first]);
    let r = find_ok(
        &gw,
        "-P",
        &["QueryRetrieveLevel=PATIENT", "PatientID=9999*"],
    )
    .await;
    assert_eq!(values(&r, tags::PATIENT_ID), patient_ids);
    let one_unknown = format!("{}?{}", &first[..4], &first[5..]);
    let r = find_ok(
        &gw,
        "-P",
        &[
            "QueryRetrieveLevel=PATIENT",
            &format!("PatientID={one_unknown}"),
        ],
    )
    .await;
    assert_eq!(values(&r, tags::PATIENT_ID), vec![first.clone()]);
    let r = find_ok(
        &gw,
        "-P",
        &["QueryRetrieveLevel=PATIENT", "PatientID=1234*"],
    )
    .await;
    assert!(r.is_empty(), "no patient ID starts with 1234");

    // PATIENT, birth date range with an open start (the two birth dates differ).
    let births = sorted(info.patients.values().cloned());
    assert_eq!(births.len(), 2);
    let r = find_ok(
        &gw,
        "-P",
        &[
            "QueryRetrieveLevel=PATIENT",
            &format!("PatientBirthDate=-{}", births[0]),
            "PatientID",
        ],
    )
    .await;
    let older: Vec<String> = info
        .patients
        .iter()
        .filter(|(_, b)| **b == births[0])
        .map(|(p, _)| p.clone())
        .collect();
    assert_eq!(values(&r, tags::PATIENT_ID), older);

    // The Study Root model has no PATIENT level: no matches, a failure status.
    let (r, run) = find(
        &gw,
        "-S",
        keys(&["QueryRetrieveLevel=PATIENT", "PatientID"]),
    )
    .await;
    assert!(r.is_empty(), "Study Root PATIENT level must not match");
    assert!(
        !run.text.contains("Final Find Response (Success)"),
        "{}",
        run.text
    );

    // STUDY (Study Root), universal: every study, with its date and modality filled in.
    let r = find_ok(
        &gw,
        "-S",
        &[
            "QueryRetrieveLevel=STUDY",
            "StudyInstanceUID",
            "StudyDate",
            "PatientID",
            "ModalitiesInStudy",
        ],
    )
    .await;
    assert_level(&r, "STUDY");
    assert_eq!(values(&r, tags::STUDY_INSTANCE_UID), all_studies);
    for resp in &r {
        let (patient, date, _, modality) = &info.studies[&text(resp, tags::STUDY_INSTANCE_UID)];
        assert_eq!(&text(resp, tags::STUDY_DATE), date);
        assert_eq!(&text(resp, tags::PATIENT_ID), patient);
        assert_eq!(&text(resp, tags::MODALITIES_IN_STUDY), modality);
    }

    // STUDY, single value date.
    let (uid0, (_, date0, acc0, _)) = info.studies.iter().next().expect("a study");
    let r = find_ok(
        &gw,
        "-S",
        &[
            "QueryRetrieveLevel=STUDY",
            &format!("StudyDate={date0}"),
            "StudyInstanceUID",
        ],
    )
    .await;
    assert_eq!(
        values(&r, tags::STUDY_INSTANCE_UID),
        info.study_uids_where(|_, d| d == date0)
    );

    // STUDY, date ranges: closed, open end, open start.
    let r = find_ok(
        &gw,
        "-S",
        &[
            "QueryRetrieveLevel=STUDY",
            "StudyDate=20200101-20301231",
            "StudyInstanceUID",
        ],
    )
    .await;
    assert_eq!(values(&r, tags::STUDY_INSTANCE_UID), all_studies);
    let r = find_ok(
        &gw,
        "-S",
        &[
            "QueryRetrieveLevel=STUDY",
            "StudyDate=19000101-19991231",
            "StudyInstanceUID",
        ],
    )
    .await;
    assert!(r.is_empty(), "no study in the 20th century");
    let dates = sorted(info.studies.values().map(|s| s.1.clone()));
    assert!(
        dates.len() >= 3,
        "the studies have distinct dates: {dates:?}"
    );
    let mid = &dates[1];
    let r = find_ok(
        &gw,
        "-S",
        &[
            "QueryRetrieveLevel=STUDY",
            &format!("StudyDate={mid}-"),
            "StudyInstanceUID",
        ],
    )
    .await;
    assert_eq!(
        values(&r, tags::STUDY_INSTANCE_UID),
        info.study_uids_where(|_, d| d >= mid.as_str())
    );
    let r = find_ok(
        &gw,
        "-S",
        &[
            "QueryRetrieveLevel=STUDY",
            &format!("StudyDate=-{mid}"),
            "StudyInstanceUID",
        ],
    )
    .await;
    assert_eq!(
        values(&r, tags::STUDY_INSTANCE_UID),
        info.study_uids_where(|_, d| d <= mid.as_str())
    );

    // STUDY, UID list.
    let two = [
        all_studies[0].clone(),
        all_studies[all_studies.len() - 1].clone(),
    ];
    let r = find_ok(
        &gw,
        "-S",
        &[
            "QueryRetrieveLevel=STUDY",
            &format!("StudyInstanceUID={}\\{}", two[0], two[1]),
            "StudyDate",
        ],
    )
    .await;
    assert_eq!(values(&r, tags::STUDY_INSTANCE_UID), sorted(two.clone()));

    // STUDY, wildcard on the accession number, and a single value one.
    let r = find_ok(
        &gw,
        "-S",
        &[
            "QueryRetrieveLevel=STUDY",
            "AccessionNumber=BB*",
            "StudyInstanceUID",
        ],
    )
    .await;
    assert_eq!(values(&r, tags::STUDY_INSTANCE_UID), all_studies);
    let r = find_ok(
        &gw,
        "-S",
        &[
            "QueryRetrieveLevel=STUDY",
            &format!("AccessionNumber={acc0}"),
            "StudyInstanceUID",
        ],
    )
    .await;
    assert_eq!(values(&r, tags::STUDY_INSTANCE_UID), vec![uid0.clone()]);

    // STUDY (Patient Root): the studies of one patient.
    let r = find_ok(
        &gw,
        "-P",
        &[
            "QueryRetrieveLevel=STUDY",
            &format!("PatientID={first}"),
            "StudyInstanceUID",
            "StudyDate",
        ],
    )
    .await;
    assert_level(&r, "STUDY");
    assert_eq!(
        values(&r, tags::STUDY_INSTANCE_UID),
        info.study_uids_where(|p, _| p == first)
    );
    assert_eq!(values(&r, tags::PATIENT_ID), vec![first.clone(); r.len()]);

    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn findscu_series_and_image_levels() {
    let (gw, _src, files) = gateway_with_studies("", false).await;
    // The first patient's CT study: an Explicit VR and an Implicit VR series.
    let ct = files
        .iter()
        .find(|f| f.transfer_syntax == IMPLICIT_VR_LE)
        .expect("an implicit VR CT");
    let (patient, study) = (ct.patient_id.clone(), ct.study_uid.clone());
    let study_files = of_study(&files, &study);
    let series_uids = sorted(study_files.iter().map(|f| f.series_uid.clone()));
    assert_eq!(series_uids.len(), 2);
    let header = |f: &GeneratedFile| open_header(&f.path);

    // SERIES (Study Root), universal keys returned filled.
    let r = find_ok(
        &gw,
        "-S",
        &[
            "QueryRetrieveLevel=SERIES",
            &format!("StudyInstanceUID={study}"),
            "SeriesInstanceUID",
            "Modality",
            "SeriesNumber",
            "SeriesDescription",
            "NumberOfSeriesRelatedInstances",
        ],
    )
    .await;
    assert_level(&r, "SERIES");
    assert_eq!(values(&r, tags::SERIES_INSTANCE_UID), series_uids);
    for resp in &r {
        let series = text(resp, tags::SERIES_INSTANCE_UID);
        let members = of_series(&files, &series);
        let h = header(members[0]);
        assert_eq!(text(resp, tags::STUDY_INSTANCE_UID), study);
        assert_eq!(text(resp, tags::MODALITY), "CT");
        assert_eq!(
            text(resp, tags::SERIES_NUMBER),
            text(&h, tags::SERIES_NUMBER)
        );
        assert_eq!(
            text(resp, tags::SERIES_DESCRIPTION),
            text(&h, tags::SERIES_DESCRIPTION)
        );
        assert_eq!(
            text(resp, tags::NUMBER_OF_SERIES_RELATED_INSTANCES),
            members.len().to_string()
        );
    }

    // SERIES, single value and wildcards.
    let implicit_series = &ct.series_uid;
    let implicit_number = text(&header(ct), tags::SERIES_NUMBER);
    let r = find_ok(
        &gw,
        "-S",
        &[
            "QueryRetrieveLevel=SERIES",
            &format!("StudyInstanceUID={study}"),
            &format!("SeriesNumber={implicit_number}"),
            "SeriesInstanceUID",
        ],
    )
    .await;
    assert_eq!(
        values(&r, tags::SERIES_INSTANCE_UID),
        vec![implicit_series.clone()]
    );
    let r = find_ok(
        &gw,
        "-S",
        &[
            "QueryRetrieveLevel=SERIES",
            &format!("StudyInstanceUID={study}"),
            "SeriesDescription=*(Implicit VR)",
            "SeriesInstanceUID",
        ],
    )
    .await;
    assert_eq!(
        values(&r, tags::SERIES_INSTANCE_UID),
        vec![implicit_series.clone()]
    );
    let mr = files
        .iter()
        .find(|f| f.patient_id == patient && f.sop_class_uid == MR_IMAGE_STORAGE)
        .expect("an MR study");
    let r = find_ok(
        &gw,
        "-S",
        &[
            "QueryRetrieveLevel=SERIES",
            &format!("StudyInstanceUID={}", mr.study_uid),
            "Modality=?R",
            "SeriesInstanceUID",
        ],
    )
    .await;
    assert_eq!(
        values(&r, tags::SERIES_INSTANCE_UID),
        vec![mr.series_uid.clone()],
        "Modality=?R matches the MR series"
    );
    let r = find_ok(
        &gw,
        "-S",
        &[
            "QueryRetrieveLevel=SERIES",
            &format!("StudyInstanceUID={study}"),
            "Modality=?R",
            "SeriesInstanceUID",
        ],
    )
    .await;
    assert!(r.is_empty(), "no MR series in the CT study");

    // SERIES, date ranges: closed around the study date, and one before any study.
    let date = text(&header(ct), tags::SERIES_DATE);
    let r = find_ok(
        &gw,
        "-S",
        &[
            "QueryRetrieveLevel=SERIES",
            &format!("StudyInstanceUID={study}"),
            &format!("SeriesDate={date}-{date}"),
            "SeriesInstanceUID",
        ],
    )
    .await;
    assert_eq!(values(&r, tags::SERIES_INSTANCE_UID), series_uids);
    let r = find_ok(
        &gw,
        "-S",
        &[
            "QueryRetrieveLevel=SERIES",
            &format!("StudyInstanceUID={study}"),
            "SeriesDate=-19991231",
            "SeriesInstanceUID",
        ],
    )
    .await;
    assert!(r.is_empty(), "no series before 2000");

    // SERIES (Patient Root), with a UID list.
    let r = find_ok(
        &gw,
        "-P",
        &[
            "QueryRetrieveLevel=SERIES",
            &format!("PatientID={patient}"),
            &format!("StudyInstanceUID={study}"),
            &format!("SeriesInstanceUID={}\\{}", series_uids[0], series_uids[1]),
            "Modality",
        ],
    )
    .await;
    assert_eq!(values(&r, tags::SERIES_INSTANCE_UID), series_uids);
    assert_eq!(
        values(&r, tags::PATIENT_ID),
        vec![patient.clone(), patient.clone()]
    );

    // IMAGE (Study Root), universal keys returned filled.
    let members = of_series(&files, implicit_series);
    let r = find_ok(
        &gw,
        "-S",
        &[
            "QueryRetrieveLevel=IMAGE",
            &format!("StudyInstanceUID={study}"),
            &format!("SeriesInstanceUID={implicit_series}"),
            "SOPInstanceUID",
            "SOPClassUID",
            "InstanceNumber",
            "Rows",
        ],
    )
    .await;
    assert_level(&r, "IMAGE");
    assert_eq!(
        values(&r, tags::SOP_INSTANCE_UID),
        sorted(members.iter().map(|f| f.sop_uid.clone()))
    );
    for resp in &r {
        let sop = text(resp, tags::SOP_INSTANCE_UID);
        let f = members
            .iter()
            .find(|f| f.sop_uid == sop)
            .expect("known instance");
        let h = header(f);
        assert_eq!(text(resp, tags::SOP_CLASS_UID), f.sop_class_uid);
        assert_eq!(
            text(resp, tags::INSTANCE_NUMBER),
            text(&h, tags::INSTANCE_NUMBER)
        );
        assert_eq!(text(resp, tags::ROWS), text(&h, tags::ROWS));
    }

    // IMAGE, single value and UID list.
    let third = members
        .iter()
        .find(|f| text(&header(f), tags::INSTANCE_NUMBER) == "3")
        .expect("instance 3");
    let r = find_ok(
        &gw,
        "-S",
        &[
            "QueryRetrieveLevel=IMAGE",
            &format!("StudyInstanceUID={study}"),
            &format!("SeriesInstanceUID={implicit_series}"),
            "InstanceNumber=3",
            "SOPInstanceUID",
        ],
    )
    .await;
    assert_eq!(
        values(&r, tags::SOP_INSTANCE_UID),
        vec![third.sop_uid.clone()]
    );
    let list = format!(
        "SOPInstanceUID={}\\{}",
        members[0].sop_uid, members[1].sop_uid
    );
    let r = find_ok(
        &gw,
        "-S",
        &[
            "QueryRetrieveLevel=IMAGE",
            &format!("StudyInstanceUID={study}"),
            &format!("SeriesInstanceUID={implicit_series}"),
            &list,
            "InstanceNumber",
        ],
    )
    .await;
    assert_eq!(
        values(&r, tags::SOP_INSTANCE_UID),
        sorted([members[0].sop_uid.clone(), members[1].sop_uid.clone()])
    );

    // IMAGE (Patient Root), single SOP Instance UID.
    let r = find_ok(
        &gw,
        "-P",
        &[
            "QueryRetrieveLevel=IMAGE",
            &format!("PatientID={patient}"),
            &format!("StudyInstanceUID={study}"),
            &format!("SeriesInstanceUID={implicit_series}"),
            &format!("SOPInstanceUID={}", third.sop_uid),
            "InstanceNumber",
        ],
    )
    .await;
    assert_eq!(
        values(&r, tags::SOP_INSTANCE_UID),
        vec![third.sop_uid.clone()]
    );
    assert_eq!(text(&r[0], tags::INSTANCE_NUMBER), "3");

    gw.stop().await;
}

/// Latin-1 (ISO_IR 100) bytes of a string.
fn latin1(s: &str) -> Vec<u8> {
    s.chars()
        .map(|c| u8::try_from(u32::from(c)).expect("Latin-1 character"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn findscu_finds_both_muller_zoe_in_utf8_and_latin1() {
    let (gw, _src, files) = gateway_with_studies("", false).await;
    const NAME: &str = "Müller^Zoë";
    // One stored in ISO_IR 100, one in ISO_IR 192.
    let muller: BTreeMap<String, String> = files
        .iter()
        .filter(|f| f.patient_name == NAME)
        .map(|f| (f.patient_id.clone(), f.charset.clone()))
        .collect();
    assert_eq!(
        sorted(muller.values().cloned()),
        vec!["ISO_IR 100", "ISO_IR 192"]
    );
    let both = sorted(muller.keys().cloned());

    // UTF-8 query, Patient Root.
    let r = find_ok(
        &gw,
        "-P",
        &[
            "QueryRetrieveLevel=PATIENT",
            "SpecificCharacterSet=ISO_IR 192",
            &format!("PatientName={NAME}"),
            "PatientID",
        ],
    )
    .await;
    assert_eq!(values(&r, tags::PATIENT_ID), both, "UTF-8 query finds both");
    for resp in &r {
        assert_eq!(text(resp, tags::SPECIFIC_CHARACTER_SET), "ISO_IR 192");
        assert_eq!(text(resp, tags::PATIENT_NAME), NAME);
    }

    // Latin-1 query (the argument itself is Latin-1 bytes), Patient Root and Study Root.
    let latin1_key = |key: &str| {
        let mut arg = format!("{key}=").into_bytes();
        arg.extend(latin1(NAME));
        OsStr::from_bytes(&arg).to_owned()
    };
    for (model, level) in [("-P", "PATIENT"), ("-S", "STUDY")] {
        let mut query = keys(&[
            &format!("QueryRetrieveLevel={level}"),
            "SpecificCharacterSet=ISO_IR 100",
            "PatientID",
        ]);
        query.extend([OsString::from("-k"), latin1_key("PatientName")]);
        let r = find_ok_os(&gw, model, query).await;
        assert_eq!(
            sorted(values(&r, tags::PATIENT_ID)),
            both,
            "Latin-1 query at {level} finds both"
        );
        for resp in &r {
            assert_eq!(
                text(resp, tags::SPECIFIC_CHARACTER_SET),
                "ISO_IR 100",
                "answered in the requester's character set"
            );
            assert_eq!(text(resp, tags::PATIENT_NAME), NAME);
        }
    }

    // Wildcards across diacritics: `?` is one character, not one byte.
    let r = find_ok(
        &gw,
        "-S",
        &[
            "QueryRetrieveLevel=STUDY",
            "SpecificCharacterSet=ISO_IR 192",
            "PatientName=M?ller^Zo?",
            "PatientID",
            "StudyInstanceUID",
        ],
    )
    .await;
    assert_eq!(sorted(values(&r, tags::PATIENT_ID)), both);
    assert_eq!(
        r.len(),
        Studies::read(&files).studies.len(),
        "every study of both patients"
    );
    for resp in &r {
        assert_eq!(text(resp, tags::PATIENT_NAME), NAME);
    }

    // No character set in the request: the non-ASCII answer comes in UTF-8, declared.
    let r = find_ok(
        &gw,
        "-P",
        &["QueryRetrieveLevel=PATIENT", "PatientName=M*", "PatientID"],
    )
    .await;
    assert_eq!(values(&r, tags::PATIENT_ID), both);
    for resp in &r {
        assert_eq!(text(resp, tags::SPECIFIC_CHARACTER_SET), "ISO_IR 192");
        assert_eq!(text(resp, tags::PATIENT_NAME), NAME);
    }

    gw.stop().await;
}

/// Issue 12 item 11: a query with non-ASCII bytes and no Specific Character Set is read with
/// `dimse.default_charset`. ISO_IR 100 by default (as many systems send Latin-1 without
/// saying so): a Latin-1 `Müller*` finds both `Müller^Zoë`, answered in Latin-1 declared as
/// such, the character set the peer evidently uses. A peer that sends UTF-8 without saying so
/// is served by setting the key to ISO_IR 192.
#[tokio::test(flavor = "multi_thread")]
async fn findscu_without_charset_is_read_as_the_default() {
    let (gw, _src, files) = gateway_with_studies("", false).await;
    let both = sorted(
        files
            .iter()
            .filter(|f| f.patient_name == "Müller^Zoë")
            .map(|f| f.patient_id.clone()),
    );
    assert_eq!(both.len(), 2);
    // No SpecificCharacterSet key: findscu sends no (0008,0005).
    let query_with_bytes = |name_bytes: Vec<u8>| {
        let mut name = b"PatientName=".to_vec();
        name.extend(name_bytes);
        let mut query = keys(&["QueryRetrieveLevel=STUDY", "PatientID"]);
        query.extend([OsString::from("-k"), OsStr::from_bytes(&name).to_owned()]);
        query
    };
    let r = find_ok_os(&gw, "-S", query_with_bytes(latin1("Müller*"))).await;
    assert_eq!(
        sorted(values(&r, tags::PATIENT_ID)),
        both,
        "{} answers",
        r.len()
    );
    for resp in &r {
        assert_eq!(text(resp, tags::SPECIFIC_CHARACTER_SET), "ISO_IR 100");
        assert_eq!(text(resp, tags::PATIENT_NAME), "Müller^Zoë");
    }
    // UTF-8 bytes read as Latin-1 are "MÃ¼ller*": no match (and the log says what was assumed).
    let r = find_ok_os(&gw, "-S", query_with_bytes("Müller*".as_bytes().to_vec())).await;
    assert!(r.is_empty(), "{} answers", r.len());
    gw.stop().await;

    // A site whose systems send UTF-8 without saying so.
    let (gw, _src, _files) =
        gateway_with_studies("[dimse]\ndefault_charset = \"ISO_IR 192\"\n", false).await;
    let r = find_ok_os(&gw, "-S", query_with_bytes("Müller*".as_bytes().to_vec())).await;
    assert_eq!(
        sorted(values(&r, tags::PATIENT_ID)),
        both,
        "{} answers",
        r.len()
    );
    for resp in &r {
        assert_eq!(text(resp, tags::SPECIFIC_CHARACTER_SET), "ISO_IR 192");
        assert_eq!(text(resp, tags::PATIENT_NAME), "Müller^Zoë");
    }
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 4. C-MOVE to a DCMTK storescp

#[tokio::test(flavor = "multi_thread")]
async fn movescu_study_to_storescp_arrives_byte_exact() {
    let dest_dir = tempfile::tempdir().expect("temp dir");
    let scp = StoreScp::start("DEST", dest_dir.path()).await;
    let peers = format!(
        "[[dimse.peers]]\nae_title = \"DEST\"\nhost = \"127.0.0.1\"\nport = {}\n",
        scp.port
    );
    let (gw, _src, files) = gateway_with_studies(&peers, true).await;

    // The CT study holds all four transfer syntaxes; each goes as stored.
    let ct = files
        .iter()
        .find(|f| f.transfer_syntax == RLE_LOSSLESS)
        .expect("an RLE CT");
    let study = of_study(&files, &ct.study_uid);
    assert_eq!(
        sorted(study.iter().map(|f| f.transfer_syntax.clone())).len(),
        4
    );
    let run = scu(
        &gw,
        "movescu",
        AE,
        [
            os_args(&["-v", "-S", "-aem", "DEST"]),
            keys(&[
                "QueryRetrieveLevel=STUDY",
                &format!("StudyInstanceUID={}", ct.study_uid),
            ]),
        ]
        .concat(),
    )
    .await;
    run.assert_ok("movescu");
    assert!(
        run.text.contains("Received Final Move Response (Success)"),
        "{}",
        run.text
    );
    assert_received_equal(dest_dir.path(), &study);

    // Patient Root, SERIES level: one more series arrives (files are overwritten by name).
    let mr = files
        .iter()
        .find(|f| f.sop_class_uid == MR_IMAGE_STORAGE)
        .expect("an MR");
    let run = scu(
        &gw,
        "movescu",
        AE,
        [
            os_args(&["-v", "-P", "-aem", "DEST"]),
            keys(&[
                "QueryRetrieveLevel=SERIES",
                &format!("PatientID={}", mr.patient_id),
                &format!("StudyInstanceUID={}", mr.study_uid),
                &format!("SeriesInstanceUID={}", mr.series_uid),
            ]),
        ]
        .concat(),
    )
    .await;
    run.assert_ok("movescu of a series");
    assert!(
        run.text.contains("Received Final Move Response (Success)"),
        "{}",
        run.text
    );
    let mut expected = study.clone();
    expected.extend(of_series(&files, &mr.series_uid));
    assert_received_equal(dest_dir.path(), &expected);

    gw.stop().await;
    drop(scp);
}

#[tokio::test(flavor = "multi_thread")]
async fn movescu_to_unknown_destination_is_refused_a801() {
    let (gw, _src, files) = gateway_with_studies("", false).await;
    let run = scu(
        &gw,
        "movescu",
        AE,
        [
            os_args(&["-d", "-S", "-aem", "NOWHERE"]),
            keys(&[
                "QueryRetrieveLevel=STUDY",
                &format!("StudyInstanceUID={}", files[0].study_uid),
            ]),
        ]
        .concat(),
    )
    .await;
    // movescu -d prints "DIMSE Status : 0xa801: Refused: Move Destination unknown".
    assert!(
        run.text.to_lowercase().contains("0xa801"),
        "status A801 expected:\n{}",
        run.text
    );
    assert!(run.text.contains("MoveDestinationUnknown"), "{}", run.text);
    assert!(
        !run.text.contains("Final Move Response (Success)"),
        "{}",
        run.text
    );
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 5. C-GET

#[tokio::test(flavor = "multi_thread")]
async fn getscu_study_arrives_byte_exact() {
    let (gw, _src, files) = gateway_with_studies("", false).await;
    let get = |model: &'static str, dir: PathBuf, query: Vec<String>| {
        let gw = &gw;
        async move {
            let mut args = os_args(&["-v", model, "-od"]);
            args.push(dir.into_os_string());
            args.extend(keys(&query.iter().map(String::as_str).collect::<Vec<_>>()));
            let run = scu(gw, "getscu", AE, args).await;
            run.assert_ok("getscu");
            assert!(
                !run.text.contains("E:") && !run.text.contains("W:"),
                "getscu reported a problem:\n{}",
                run.text
            );
            run
        }
    };

    // An MR study (Explicit VR only): getscu offers Explicit VR Little Endian.
    let mr = files
        .iter()
        .find(|f| f.sop_class_uid == MR_IMAGE_STORAGE)
        .expect("an MR");
    let study = of_study(&files, &mr.study_uid);
    assert!(study.iter().all(|f| f.transfer_syntax == EXPLICIT_VR_LE));
    let dir = tempfile::tempdir().expect("temp dir");
    get(
        "-S",
        dir.path().to_path_buf(),
        vec![
            "QueryRetrieveLevel=STUDY".into(),
            format!("StudyInstanceUID={}", mr.study_uid),
        ],
    )
    .await;
    assert_received_equal(dir.path(), &study);

    // Patient Root, SERIES level: the Explicit VR CT series.
    let ct = files
        .iter()
        .find(|f| f.sop_class_uid != MR_IMAGE_STORAGE && f.transfer_syntax == EXPLICIT_VR_LE)
        .expect("an explicit VR CT");
    let dir = tempfile::tempdir().expect("temp dir");
    get(
        "-P",
        dir.path().to_path_buf(),
        vec![
            "QueryRetrieveLevel=SERIES".into(),
            format!("PatientID={}", ct.patient_id),
            format!("StudyInstanceUID={}", ct.study_uid),
            format!("SeriesInstanceUID={}", ct.series_uid),
        ],
    )
    .await;
    assert_received_equal(dir.path(), &of_series(&files, &ct.series_uid));

    // The Implicit VR series: getscu 3.6.7 offers only Explicit VR for storage, so the gateway
    // re-encodes. Not byte-equal, but every element with the same value.
    let implicit = files
        .iter()
        .find(|f| f.transfer_syntax == IMPLICIT_VR_LE)
        .expect("an implicit VR CT");
    let dir = tempfile::tempdir().expect("temp dir");
    get(
        "-S",
        dir.path().to_path_buf(),
        vec![
            "QueryRetrieveLevel=SERIES".into(),
            format!("StudyInstanceUID={}", implicit.study_uid),
            format!("SeriesInstanceUID={}", implicit.series_uid),
        ],
    )
    .await;
    let received = files_under(dir.path());
    let members = of_series(&files, &implicit.series_uid);
    assert_eq!(received.len(), members.len());
    for path in received {
        let (ts, sop) = meta_of(&path);
        assert_eq!(ts, EXPLICIT_VR_LE, "re-encoded for getscu");
        let source = members
            .iter()
            .find(|f| f.sop_uid == sop)
            .expect("a requested instance");
        let (got, want) = (
            dicom_object::open_file(&path).expect("received"),
            dicom_object::open_file(&source.path).expect("source"),
        );
        let got_tags: Vec<Tag> = got.iter().map(|e| e.tag()).collect();
        let want_tags: Vec<Tag> = want.iter().map(|e| e.tag()).collect();
        assert_eq!(got_tags, want_tags, "elements of {sop}");
        for element in want.iter() {
            let tag = element.tag();
            assert_eq!(
                got.element(tag).expect("element").value(),
                element.value(),
                "value of {tag} in {sop}"
            );
        }
    }

    gw.stop().await;
}
