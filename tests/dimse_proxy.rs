//! The DIMSE proxy option, `[dimse] proxy_pacs = true` (issue 11 item 4), against real
//! peers: a workstation that can reach only beeldbrug finds and retrieves, with DCMTK
//! findscu, getscu and movescu, studies that only the PACS holds, streamed through.
//!
//! "Byte-exact" here: for every instance, the transfer syntax the client wrote in its file
//! meta is the one the PACS sent the instance in, and the data set bytes after the file meta
//! group equal those the PACS sent. What the PACS sent is its own copy (Orthanc's
//! `/instances/{id}/file`, dcmqrscp's storage area) where it sends as it holds; where
//! dcmqrscp converts on the way out, what DCMTK dcmconv makes of its copy. The file meta
//! group is each writer's own (PS3.10 7.1) and is not compared.
//!
//! - Orthanc as the PACS (fetched by C-GET, and by C-MOVE): C-FIND at STUDY, SERIES and
//!   IMAGE level finds the PACS-only studies with their attributes, merged with a study only
//!   the cache holds, each once; getscu (uncompressed, DCMTK-made RLE and JPEG Lossless) and
//!   movescu to storescp (a study in two syntaxes among them) retrieve them byte-exact; one
//!   audit record per operation, each retrieve saying it was streamed from the PACS.
//! - A PATIENT-level C-GET and C-MOVE (Patient Root) of a patient only Orthanc holds: the
//!   patient's two studies, byte-exact, nothing of the other patient; the studies complete
//!   in the cache, one audit record each naming the patient and its studies; with Orthanc
//!   gone the same C-GET from the cache; an unknown patient a success without sub-operations.
//! - The same gateway without proxy_pacs: C-FIND and C-GET reach the cache only (QIDO-RS
//!   still reaches the PACS).
//! - dcmqrscp as the PACS (by C-GET, and by C-MOVE): the same C-FIND and C-GET, byte-exact.
//! - Orthanc ending a C-GET early: what it sent arrives byte-exact, the rest is counted as
//!   failed (B000), audited as partial, and the study is not complete in the cache.
//! - Patient Root C-FIND at PATIENT level: the PACS's studies folded into their patient.
//! - The PACS down: findscu and QIDO-RS get what the cache holds, marked incomplete (a
//!   failure status after the pending rows; a `Warning: 299`), audited as partial; with
//!   nothing cached the query fails as before.
//! - A C-MOVE destination slower than Orthanc's timeout: the fetch runs ahead into the cache
//!   after `[cache] client_wait_secs`, Orthanc fails nothing, the destination gets it all.
//! - A C-CANCEL of a C-MOVE and a getscu killed mid C-GET (Orthanc fetched by C-GET, and by
//!   C-MOVE): beeldbrug keeps answering, the fetch from the PACS stops (the cache neither
//!   fills up nor calls the study complete) and the next C-GET retrieves all of it.

mod common;

use beeldbrug::dimse::sop;
use beeldbrug::testdata::{GenerateArgs, GeneratedFile, MR_IMAGE_STORAGE};
use common::dcmqrscp::{dcmconv, Dcmqrscp};
use common::gateway_mode::{audit_details, dataset_of, pacs_toml, syntax_of};
use common::http::request;
use common::orthanc::{store, Orthanc};
use common::peer::PeerProcess;
use common::{free_port, generate, require_tool, Gateway};
use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The workstation's AE title, and the C-MOVE destination's.
const WORKSTATION: &str = "WORKSTATION";
const DEST: &str = "DEST";
/// Network timeouts for every DCMTK run, so a stuck exchange fails instead of hanging.
const TIMEOUTS: [&str; 6] = ["-to", "15", "-ta", "30", "-td", "60"];

/// Instances by SOP Instance UID: (transfer syntax, data set bytes after the file meta).
type Held = BTreeMap<String, (String, Vec<u8>)>;

// ---------------------------------------------------------------------------------------------
// DCMTK against beeldbrug

/// Run a DCMTK tool on a blocking thread: (exit status success, stdout + stderr).
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

/// `tool` as the workstation against beeldbrug on `port`: options, then `-k` keys.
fn scu_args(port: u16, options: &[&str], keys: &[String]) -> Vec<String> {
    let mut args: Vec<String> = ["-aet", WORKSTATION, "-aec", "BEELDBRUG"]
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

/// A Study Root C-FIND by findscu that must succeed: its responses (`-X` files).
async fn find(port: u16, keys: &[String]) -> Vec<DefaultDicomObject> {
    find_in(port, "-S", keys).await
}

/// [`find`] in `model`: `-S` Study Root, `-P` Patient Root.
async fn find_in(port: u16, model: &str, keys: &[String]) -> Vec<DefaultDicomObject> {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().display().to_string();
    let (ok, text) = dcmtk(
        "findscu",
        scu_args(port, &["-v", model, "-X", "-od", &dir], keys),
    )
    .await;
    assert!(
        ok && text.contains("Received Final Find Response (Success)"),
        "findscu {keys:?}:\n{text}"
    );
    files_under(out.path())
        .iter()
        .map(|p| dicom_object::open_file(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .collect()
}

/// A Study Root C-GET by getscu (with `options`, e.g. a preferred syntax) that must succeed
/// without errors or warnings: what it wrote.
async fn get(port: u16, options: &[&str], keys: &[String]) -> Held {
    get_in(port, "-S", options, keys).await
}

/// [`get`] in `model`: `-S` Study Root, `-P` Patient Root.
async fn get_in(port: u16, model: &str, options: &[&str], keys: &[String]) -> Held {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().display().to_string();
    let mut all = vec!["-v", model, "-od", &dir];
    all.extend(options);
    let (ok, text) = dcmtk("getscu", scu_args(port, &all, keys)).await;
    assert!(
        ok && !text.contains("E:") && !text.contains("W:"),
        "getscu {options:?} {keys:?}:\n{text}"
    );
    part10_under(out.path())
}

fn study_keys(level: &str, study: &str) -> Vec<String> {
    vec![
        format!("QueryRetrieveLevel={level}"),
        format!("StudyInstanceUID={study}"),
    ]
}

fn series_keys(f: &GeneratedFile) -> Vec<String> {
    let mut keys = study_keys("SERIES", &f.study_uid);
    keys.push(format!("SeriesInstanceUID={}", f.series_uid));
    keys
}

/// A text attribute of a response ("" when absent), decoded with its character set.
fn text(obj: &DefaultDicomObject, tag: Tag) -> String {
    obj.element(tag)
        .ok()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches([' ', '\0']).to_string())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Files

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

/// The Part 10 files under `dir` (others, such as dcmqrscp's index.dat, are skipped).
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

/// The Part 10 file under `dir` whose SOP Instance UID is `uid`.
fn stored_file(dir: &Path, uid: &str) -> Vec<u8> {
    files_under(dir)
        .into_iter()
        .filter_map(|p| std::fs::read(p).ok())
        .find(|b| b.len() > 132 && &b[128..132] == b"DICM" && dataset_of(b).0 == uid)
        .unwrap_or_else(|| panic!("no file of {uid} in {}", dir.display()))
}

/// `got` holds exactly the instances `wanted`, each in the syntax and with the data set
/// bytes the PACS sent (`sent`).
#[track_caller]
fn assert_byte_exact(got: &Held, sent: &Held, wanted: &[&GeneratedFile], what: &str) {
    let wanted: BTreeSet<&str> = wanted.iter().map(|f| f.sop_uid.as_str()).collect();
    assert_eq!(
        got.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        wanted,
        "{what}: every instance, once"
    );
    for (uid, (syntax, dataset)) in got {
        let (sent_syntax, sent_dataset) = &sent[uid];
        assert_eq!(syntax, sent_syntax, "{what}: transfer syntax of {uid}");
        assert!(
            dataset == sent_dataset,
            "{what}: data set of {uid} differs from the PACS's ({} bytes against {})",
            dataset.len(),
            sent_dataset.len()
        );
    }
}

/// `files` re-encoded by a DCMTK tool (`dcmcrle`, `dcmcjpeg`) into `syntax`, beside them.
fn dcmtk_encoded(files: &mut [GeneratedFile], tool: &str, syntax: &str) {
    for f in files {
        let out = f.path.with_extension(format!("{tool}.dcm"));
        let (src, dst) = (f.path.display().to_string(), out.display().to_string());
        let run = common::dcmtk(tool, &[&src, &dst]);
        assert!(
            run.status.success(),
            "{tool} {src}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        assert_eq!(syntax_of(&std::fs::read(&out).unwrap()), syntax, "{tool}");
        f.path = out;
        f.transfer_syntax = syntax.to_string();
    }
}

/// Generated studies of two patients (CT: an Explicit and an Implicit VR series; MR), the
/// second patient's CT Explicit VR series RLE-encoded by DCMTK dcmcrle and MR study
/// JPEG Lossless-encoded by dcmcjpeg: compressed bytes beeldbrug's generator did not write.
fn studies_with_dcmtk_encodings(dir: &Path) -> Vec<GeneratedFile> {
    let files = generate(&dir.join("src"), false);
    let first = files[0].patient_id.clone();
    let (mut mine, mut second): (Vec<_>, Vec<_>) =
        files.into_iter().partition(|f| f.patient_id == first);
    let (mut mr, mut ct): (Vec<_>, Vec<_>) = second
        .drain(..)
        .partition(|f| f.sop_class_uid == MR_IMAGE_STORAGE);
    let (mut explicit, implicit): (Vec<_>, Vec<_>) = ct
        .drain(..)
        .partition(|f| f.transfer_syntax == sop::EXPLICIT_VR_LE);
    dcmtk_encoded(&mut explicit, "dcmcrle", sop::RLE_LOSSLESS);
    dcmtk_encoded(&mut mr, "dcmcjpeg", sop::JPEG_LOSSLESS_SV1);
    mine.extend(explicit.into_iter().chain(implicit).chain(mr));
    mine
}

fn of_study<'a>(files: &'a [GeneratedFile], study: &str) -> Vec<&'a GeneratedFile> {
    files.iter().filter(|f| f.study_uid == study).collect()
}

fn of_series<'a>(files: &'a [GeneratedFile], series: &str) -> Vec<&'a GeneratedFile> {
    files.iter().filter(|f| f.series_uid == series).collect()
}

/// The header of a generated file (for expected attribute values).
fn header(f: &GeneratedFile) -> DefaultDicomObject {
    OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(&f.path)
        .expect("open generated file")
}

// ---------------------------------------------------------------------------------------------
// Peers and the gateway

/// What Orthanc holds, read back over its REST API (`/instances/{id}/file`: the file as it
/// stored it, which is what it sends by C-STORE in the same syntax).
async fn orthanc_holds(orthanc: &Orthanc) -> Held {
    let r = request(orthanc.http_port, "GET", "/instances", &[], b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let ids: Vec<String> = serde_json::from_value(r.json()).expect("instance ids");
    let mut held = Held::new();
    for id in ids {
        let r = request(
            orthanc.http_port,
            "GET",
            &format!("/instances/{id}/file"),
            &[],
            b"",
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let (uid, dataset) = dataset_of(&r.body);
        held.insert(uid, (syntax_of(&r.body), dataset));
    }
    held
}

/// DCMTK storescp as a C-MOVE destination: every syntax it knows, written bit-preserving.
struct StoreScp {
    _process: PeerProcess,
    port: u16,
    dir: PathBuf,
}

impl StoreScp {
    async fn start(dir: &Path, extra: &[&str]) -> StoreScp {
        let received = dir.join("storescp-received");
        std::fs::create_dir_all(&received).unwrap();
        let port = free_port();
        let mut args: Vec<String> = ["+B", "+xa", "-aet", DEST, "-od"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.push(received.display().to_string());
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(port.to_string());
        let mut process = PeerProcess::spawn("storescp", &require_tool("storescp"), &args, dir);
        process.wait_for_port(port).await;
        StoreScp {
            _process: process,
            port,
            dir: received,
        }
    }

    fn peer_toml(&self) -> String {
        format!(
            "[[dimse.peers]]\nae_title = \"{DEST}\"\nhost = \"127.0.0.1\"\nport = {}\n",
            self.port
        )
    }
}

const PROXY: &str = "[dimse]\nproxy_pacs = true\n";

/// C-STORE `files` into beeldbrug (the cache) with storescu.
fn store_in_cache(gateway: &Gateway, files: &[GeneratedFile]) {
    let port = gateway.port.to_string();
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

/// Instances of `study` in beeldbrug's cache, and whether it calls the study complete.
async fn cache_state(gateway: &Gateway, study: &str) -> (u64, bool) {
    let index = &gateway.context().index;
    let selection = beeldbrug::core::Selection {
        study_uids: vec![study.to_string()],
        ..Default::default()
    };
    let count = index.count_instances(&selection).await.unwrap();
    let complete = index
        .cached_study(study)
        .await
        .unwrap()
        .is_some_and(|s| s.complete);
    (count, complete)
}

// ---------------------------------------------------------------------------------------------
// 1. Orthanc

/// Orthanc as the PACS, fetched from by `retrieve` (`c-get` or `c-move`).
async fn orthanc_through_the_proxy(retrieve: &str) {
    let dir = tempfile::tempdir().unwrap();
    let files = studies_with_dcmtk_encodings(dir.path());
    let our_port = free_port();
    let orthanc = Orthanc::start_with(dir.path(), &[("BEELDBRUG", our_port)]).await;
    store(orthanc.dicom_port, "ORTHANC", &files);
    let held = orthanc_holds(&orthanc).await;
    assert_eq!(held.len(), files.len(), "Orthanc holds every file");
    let syntaxes: BTreeSet<&str> = held.values().map(|(ts, _)| ts.as_str()).collect();
    for ts in [
        sop::EXPLICIT_VR_LE,
        sop::IMPLICIT_VR_LE,
        sop::RLE_LOSSLESS,
        sop::JPEG_LOSSLESS_SV1,
    ] {
        assert!(syntaxes.contains(ts), "Orthanc holds {ts}: {syntaxes:?}");
    }
    let scp = StoreScp::start(dir.path(), &[]).await;
    let pacs = pacs_toml("ORTHANC", orthanc.dicom_port, retrieve, "");
    let gateway =
        Gateway::start_dimse_on(our_port, &format!("{pacs}{PROXY}{}", scp.peer_toml())).await;
    let port = gateway.port;

    // A study only the cache holds (its own seed: its own UIDs).
    let cache_only = {
        let args = GenerateArgs {
            seed: 11,
            patients: 1,
            ct_slices: 1,
            mr_slices: 1,
            ..GenerateArgs::with_defaults(dir.path().join("cache-only"))
        };
        beeldbrug::testdata::generate(&args).expect("generate")
    };
    store_in_cache(&gateway, &cache_only);

    // STUDY level: the PACS's studies with their attributes, and the cache's, each once.
    let study_query = |extra: &[&str]| {
        let mut keys: Vec<String> = [
            "QueryRetrieveLevel=STUDY",
            "StudyInstanceUID",
            "PatientID",
            "PatientName",
            "StudyDate",
            "AccessionNumber",
            "ModalitiesInStudy",
            "NumberOfStudyRelatedSeries",
            "NumberOfStudyRelatedInstances",
        ]
        .map(String::from)
        .to_vec();
        keys.extend(extra.iter().map(|s| s.to_string()));
        keys
    };
    let expected_studies: BTreeSet<&str> = files
        .iter()
        .chain(&cache_only)
        .map(|f| f.study_uid.as_str())
        .collect();
    let found = find(port, &study_query(&[])).await;
    let found_uids: Vec<String> = found
        .iter()
        .map(|r| text(r, tags::STUDY_INSTANCE_UID))
        .collect();
    assert_eq!(
        found_uids
            .iter()
            .map(String::as_str)
            .collect::<BTreeSet<_>>(),
        expected_studies,
        "PACS and cache studies"
    );
    assert_eq!(found_uids.len(), expected_studies.len(), "each study once");
    for r in &found {
        let study = text(r, tags::STUDY_INSTANCE_UID);
        let members: Vec<&GeneratedFile> = files
            .iter()
            .chain(&cache_only)
            .filter(|f| f.study_uid == study)
            .collect();
        let h = header(members[0]);
        assert_eq!(text(r, tags::PATIENT_ID), members[0].patient_id, "{study}");
        assert_eq!(
            text(r, tags::PATIENT_NAME),
            members[0].patient_name,
            "{study}"
        );
        for tag in [tags::STUDY_DATE, tags::ACCESSION_NUMBER] {
            assert_eq!(text(r, tag), text(&h, tag), "{study}: {tag}");
        }
        assert_eq!(
            text(r, tags::MODALITIES_IN_STUDY),
            text(&h, tags::MODALITY),
            "{study}"
        );
        let series: BTreeSet<&str> = members.iter().map(|f| f.series_uid.as_str()).collect();
        assert_eq!(
            text(r, tags::NUMBER_OF_STUDY_RELATED_SERIES),
            series.len().to_string(),
            "{study}"
        );
        assert_eq!(
            text(r, tags::NUMBER_OF_STUDY_RELATED_INSTANCES),
            members.len().to_string(),
            "{study}"
        );
    }
    // Matching on a key goes to the PACS too.
    let second = files.last().unwrap();
    let by_patient = find(
        port,
        &study_query(&[&format!("PatientID={}", second.patient_id)]),
    )
    .await
    .iter()
    .map(|r| text(r, tags::STUDY_INSTANCE_UID))
    .collect::<BTreeSet<_>>();
    let of_second: BTreeSet<String> = files
        .iter()
        .filter(|f| f.patient_id == second.patient_id)
        .map(|f| f.study_uid.clone())
        .collect();
    assert_eq!(
        by_patient, of_second,
        "studies of patient {}",
        second.patient_id
    );
    // The same in the Patient Root model, as many workstations ask.
    let patient_root = find_in(
        port,
        "-P",
        &study_query(&[&format!("PatientID={}", second.patient_id)]),
    )
    .await
    .iter()
    .map(|r| text(r, tags::STUDY_INSTANCE_UID))
    .collect::<BTreeSet<_>>();
    assert_eq!(patient_root, of_second, "Patient Root, STUDY level");

    // SERIES and IMAGE level in the PACS-only CT study of the second patient.
    let rle = files
        .iter()
        .find(|f| f.transfer_syntax == sop::RLE_LOSSLESS)
        .expect("an RLE CT")
        .clone();
    let mut keys = study_keys("SERIES", &rle.study_uid);
    keys.extend(
        [
            "SeriesInstanceUID",
            "Modality",
            "SeriesNumber",
            "NumberOfSeriesRelatedInstances",
        ]
        .map(String::from),
    );
    let series = find(port, &keys).await;
    let want: BTreeMap<String, usize> =
        of_study(&files, &rle.study_uid)
            .iter()
            .fold(BTreeMap::new(), |mut m, f| {
                *m.entry(f.series_uid.clone()).or_default() += 1;
                m
            });
    let got: BTreeMap<String, usize> = series
        .iter()
        .map(|r| {
            assert_eq!(text(r, tags::MODALITY), "CT");
            let n = text(r, tags::NUMBER_OF_SERIES_RELATED_INSTANCES);
            (
                text(r, tags::SERIES_INSTANCE_UID),
                n.parse().unwrap_or_else(|_| panic!("count {n:?}")),
            )
        })
        .collect();
    assert_eq!(got, want, "series of {}", rle.study_uid);
    let mut keys = series_keys(&rle);
    keys[0] = "QueryRetrieveLevel=IMAGE".into();
    keys.extend(["SOPInstanceUID", "SOPClassUID", "InstanceNumber"].map(String::from));
    let images = find(port, &keys).await;
    let got: BTreeSet<(String, String)> = images
        .iter()
        .map(|r| {
            (
                text(r, tags::SOP_INSTANCE_UID),
                text(r, tags::SOP_CLASS_UID),
            )
        })
        .collect();
    let want: BTreeSet<(String, String)> = of_series(&files, &rle.series_uid)
        .iter()
        .map(|f| (f.sop_uid.clone(), f.sop_class_uid.clone()))
        .collect();
    assert_eq!(got, want, "instances of {}", rle.series_uid);

    // C-GET by getscu, streamed from Orthanc: uncompressed, then compressed by DCMTK.
    let first_mr = files
        .iter()
        .find(|f| f.sop_class_uid == MR_IMAGE_STORAGE && f.transfer_syntax == sop::EXPLICIT_VR_LE)
        .expect("an Explicit VR MR");
    let got = get(port, &[], &study_keys("STUDY", &first_mr.study_uid)).await;
    let mr_study = of_study(&files, &first_mr.study_uid);
    assert_byte_exact(&got, &held, &mr_study, "getscu MR study");
    // The RLE series in the Patient Root model (PS3.4 C.6.1: the patient's key too).
    let mut keys = series_keys(&rle);
    keys.push(format!("PatientID={}", rle.patient_id));
    let got = get_in(port, "-P", &["+xr"], &keys).await;
    assert_byte_exact(
        &got,
        &held,
        &of_series(&files, &rle.series_uid),
        "getscu -P RLE series (dcmcrle)",
    );
    let jpeg = files
        .iter()
        .find(|f| f.transfer_syntax == sop::JPEG_LOSSLESS_SV1)
        .expect("a JPEG Lossless MR");
    let got = get(port, &["+xs"], &study_keys("STUDY", &jpeg.study_uid)).await;
    assert_byte_exact(
        &got,
        &held,
        &of_study(&files, &jpeg.study_uid),
        "getscu JPEG Lossless study (dcmcjpeg)",
    );

    // C-MOVE by movescu to storescp: the first patient's CT study, Explicit and Implicit VR.
    let ct = files
        .iter()
        .find(|f| f.patient_id == files[0].patient_id && f.sop_class_uid != MR_IMAGE_STORAGE)
        .expect("a CT");
    let mut options = vec!["-v", "-S", "-aem", DEST];
    options.extend(TIMEOUTS);
    let (ok, out) = dcmtk(
        "movescu",
        scu_args(port, &options, &study_keys("STUDY", &ct.study_uid)),
    )
    .await;
    assert!(
        ok && out.contains("Received Final Move Response (Success)"),
        "movescu:\n{out}"
    );
    assert_byte_exact(
        &part10_under(&scp.dir),
        &held,
        &of_study(&files, &ct.study_uid),
        "movescu CT study to storescp",
    );

    // The second patient's CT study, RLE (dcmcrle) and Implicit VR series: a streamed
    // C-MOVE does not know the syntaxes before the first instance arrives, yet each goes on
    // as Orthanc sent it.
    let (ok, out) = dcmtk(
        "movescu",
        scu_args(port, &options, &study_keys("STUDY", &rle.study_uid)),
    )
    .await;
    assert!(
        ok && out.contains("Received Final Move Response (Success)"),
        "movescu of a study in two syntaxes:\n{out}"
    );
    let mut moved = of_study(&files, &ct.study_uid);
    moved.extend(of_study(&files, &rle.study_uid));
    assert_byte_exact(
        &part10_under(&scp.dir),
        &held,
        &moved,
        "movescu RLE and Implicit VR CT study to storescp",
    );

    // After the retrieves, a study now in the cache as well is still found once.
    let again = find(port, &study_query(&[])).await;
    assert_eq!(again.len(), expected_studies.len(), "each study once");

    // One audit record per operation; each retrieve streamed from the PACS.
    let ctx = gateway.context();
    let finds = audit_details(ctx, "C-FIND").await;
    assert_eq!(finds.len(), 6, "{finds:?}");
    assert!(finds.iter().all(|(o, _)| o == "success"), "{finds:?}");
    for (operation, count) in [("C-GET", 3), ("C-MOVE", 2)] {
        let records = audit_details(ctx, operation).await;
        assert_eq!(records.len(), count, "{operation}: {records:?}");
        assert!(
            records
                .iter()
                .all(|(o, d)| o == "success" && d.contains("streamed from the local PACS")),
            "{operation}: {records:?}"
        );
    }
    // Each retrieve's record names the patient and study it streamed (PS3.15 A.5.3.1).
    let retrieved: Vec<(String, String, String)> = ctx
        .index
        .audit_events(10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.operation == "C-GET" || e.operation == "C-MOVE")
        .map(|e| (e.operation, e.patient_ids, e.study_uids))
        .collect();
    let expected: Vec<(String, String, String)> = [
        ("C-GET", first_mr),
        ("C-GET", &rle),
        ("C-GET", jpeg),
        ("C-MOVE", ct),
        ("C-MOVE", &rle),
    ]
    .iter()
    .map(|(op, f)| (op.to_string(), f.patient_id.clone(), f.study_uid.clone()))
    .collect();
    assert_eq!(
        retrieved, expected,
        "patients and studies in the audit trail"
    );
    gateway.stop().await;

    // Without proxy_pacs, DIMSE reaches the cache only; DICOMweb still reaches the PACS.
    let plain = Gateway::start(&pacs).await;
    let found = find(plain.port, &study_query(&[])).await;
    assert!(
        found.is_empty(),
        "DIMSE -> cache only: {:?}",
        found
            .iter()
            .map(|r| text(r, tags::STUDY_INSTANCE_UID))
            .collect::<Vec<_>>()
    );
    let got = get(plain.port, &[], &study_keys("STUDY", &first_mr.study_uid)).await;
    assert!(
        got.is_empty(),
        "C-GET from the cache only: {:?}",
        got.keys()
    );
    let qido = request(plain.http_port, "GET", "/dicomweb/studies", &[], b"").await;
    assert_eq!(qido.status, 200, "{}", qido.text());
    assert_eq!(
        qido.json().as_array().map(Vec::len),
        Some(study_count(&files)),
        "QIDO-RS reaches the PACS"
    );
    plain.stop().await;
    drop(orthanc);
}

#[tokio::test(flavor = "multi_thread")]
async fn orthanc_by_c_get_pacs_only_studies_found_and_retrieved_through_beeldbrug() {
    orthanc_through_the_proxy("c-get").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn orthanc_by_c_move_pacs_only_studies_found_and_retrieved_through_beeldbrug() {
    orthanc_through_the_proxy("c-move").await;
}

/// How many studies `files` hold.
fn study_count(files: &[GeneratedFile]) -> usize {
    files
        .iter()
        .map(|f| f.study_uid.as_str())
        .collect::<BTreeSet<_>>()
        .len()
}

// ---------------------------------------------------------------------------------------------
// 1b. PATIENT level

/// A PATIENT-level C-GET and C-MOVE (Patient Root, PS3.4 C.6.1.2) of a patient only Orthanc
/// holds, fetched from it by `retrieve`: Orthanc retrieves in the Study Root model only, so
/// beeldbrug finds the patient's studies (C-FIND at STUDY level by Patient ID) and streams
/// them one after the other. Every instance of the patient arrives byte-exact and nothing of
/// the other patient; the studies end up complete in the cache; one audit record per
/// retrieve names the patient and both studies; with Orthanc gone, the same C-GET is answered
/// from the cache; a patient nobody holds gets a success without sub-operations.
async fn orthanc_patient_level(retrieve: &str) {
    let dir = tempfile::tempdir().unwrap();
    // Explicit VR only: getscu proposes one context per class, whose first syntax (Explicit
    // VR LE) beeldbrug accepts, so every instance goes to it as Orthanc sent it.
    let files = beeldbrug::testdata::generate(&GenerateArgs {
        seed: 7,
        patients: 2,
        ct_slices: 4,
        mr_slices: 2,
        implicit: false,
        ..GenerateArgs::with_defaults(dir.path().join("src"))
    })
    .expect("generate");
    let our_port = free_port();
    let orthanc = Orthanc::start_with(dir.path(), &[("BEELDBRUG", our_port)]).await;
    store(orthanc.dicom_port, "ORTHANC", &files);
    let held = orthanc_holds(&orthanc).await;
    assert_eq!(held.len(), files.len(), "Orthanc holds every file");
    let scp = StoreScp::start(dir.path(), &[]).await;
    let pacs = pacs_toml("ORTHANC", orthanc.dicom_port, retrieve, "");
    let gateway =
        Gateway::start_dimse_on(our_port, &format!("{pacs}{PROXY}{}", scp.peer_toml())).await;
    let port = gateway.port;
    let patients: BTreeSet<&str> = files.iter().map(|f| f.patient_id.as_str()).collect();
    let [first, second] = patients.into_iter().collect::<Vec<_>>()[..] else {
        panic!("two patients")
    };
    let of_patient =
        |id: &str| -> Vec<&GeneratedFile> { files.iter().filter(|f| f.patient_id == id).collect() };
    let studies_of = |id: &str| -> BTreeSet<String> {
        of_patient(id).iter().map(|f| f.study_uid.clone()).collect()
    };
    assert_eq!(studies_of(first).len(), 2, "a CT and an MR study");
    let patient_keys = |id: &str| {
        vec![
            "QueryRetrieveLevel=PATIENT".to_string(),
            format!("PatientID={id}"),
        ]
    };

    // C-GET of the first patient: both studies, streamed from Orthanc.
    let got = get_in(port, "-P", &[], &patient_keys(first)).await;
    assert_byte_exact(&got, &held, &of_patient(first), "getscu -P PATIENT level");
    // C-MOVE of the second patient to storescp.
    let mut options = vec!["-v", "-P", "-aem", DEST];
    options.extend(TIMEOUTS);
    let (ok, out) = dcmtk("movescu", scu_args(port, &options, &patient_keys(second))).await;
    assert!(
        ok && out.contains("Received Final Move Response (Success)"),
        "movescu -P PATIENT level:\n{out}"
    );
    assert_byte_exact(
        &part10_under(&scp.dir),
        &held,
        &of_patient(second),
        "movescu -P PATIENT level to storescp",
    );

    // Each study is complete in the cache (once its fetch has synced the files).
    for study in studies_of(first).iter().chain(&studies_of(second)) {
        let want = of_study(&files, study).len() as u64;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (count, complete) = cache_state(&gateway, study).await;
            if count == want && complete {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{study}: {count} of {want} cached, complete {complete}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // One record per retrieve, naming the patient and the studies it streamed.
    let records: Vec<(String, String, String, String)> = gateway
        .context()
        .index
        .audit_events(10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.operation == "C-GET" || e.operation == "C-MOVE")
        .map(|e| (e.operation, e.outcome, e.patient_ids, e.study_uids))
        .collect();
    assert_eq!(records.len(), 2, "{records:?}");
    for ((operation, outcome, patient, studies), (want_op, id)) in
        records.iter().zip([("C-GET", first), ("C-MOVE", second)])
    {
        assert_eq!((operation.as_str(), outcome.as_str()), (want_op, "success"));
        assert_eq!(patient, id, "{operation}");
        for study in studies_of(id) {
            assert!(
                studies.contains(&study),
                "{operation}: {studies} lacks {study}"
            );
        }
    }

    // A patient nobody holds: success, no sub-operations.
    let none = get_in(port, "-P", &[], &patient_keys("NOBODY")).await;
    assert!(none.is_empty(), "{:?}", none.keys());

    // Orthanc gone: the patient's studies come from the cache, still byte-exact.
    drop(orthanc);
    let got = get_in(port, "-P", &[], &patient_keys(first)).await;
    assert_byte_exact(&got, &held, &of_patient(first), "getscu -P from the cache");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn orthanc_by_c_get_a_pacs_only_patient_retrieved_at_patient_level() {
    orthanc_patient_level("c-get").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn orthanc_by_c_move_a_pacs_only_patient_retrieved_at_patient_level() {
    orthanc_patient_level("c-move").await;
}

// ---------------------------------------------------------------------------------------------
// 2. dcmqrscp

/// dcmqrscp as the PACS, fetched from by `retrieve` (`c-get` or `c-move`).
async fn dcmqrscp_through_the_proxy(retrieve: &str) {
    let dir = tempfile::tempdir().unwrap();
    let files = generate(&dir.path().join("src"), false);
    let our_port = free_port();
    let pacs = Dcmqrscp::start(dir.path(), "DCMQRSCP", &[("BEELDBRUG", our_port)], &[]).await;
    let loaded = files.clone();
    let pacs = tokio::task::spawn_blocking(move || {
        pacs.load(&loaded);
        pacs
    })
    .await
    .unwrap();
    let stored = part10_under(&pacs.storage);
    // dcmqrscp's copies by SOP Instance UID, copied out of its storage area (dcmconv writes
    // beside its input).
    let copies = dir.path().join("dcmqrscp-copies");
    std::fs::create_dir_all(&copies).unwrap();
    let copy_of = |uid: &str| {
        let path = copies.join(format!("{uid}.dcm"));
        std::fs::write(&path, stored_file(&pacs.storage, uid)).unwrap();
        path
    };
    let toml = pacs_toml("DCMQRSCP", pacs.port, retrieve, "");
    let gateway = Gateway::start_dimse_on(our_port, &format!("{toml}{PROXY}")).await;
    let port = gateway.port;

    // STUDY and SERIES level (dcmqrscp answers hierarchical queries only).
    let found = find(
        port,
        &[
            "QueryRetrieveLevel=STUDY",
            "StudyInstanceUID",
            "PatientID",
            "StudyDate",
        ]
        .map(String::from),
    )
    .await;
    let got: BTreeSet<(String, String)> = found
        .iter()
        .map(|r| (text(r, tags::STUDY_INSTANCE_UID), text(r, tags::PATIENT_ID)))
        .collect();
    let want: BTreeSet<(String, String)> = files
        .iter()
        .map(|f| (f.study_uid.clone(), f.patient_id.clone()))
        .collect();
    assert_eq!(got, want, "studies\n{}", pacs.log_tail());
    assert_eq!(found.len(), want.len(), "each study once");
    let ct = files
        .iter()
        .find(|f| f.transfer_syntax == sop::IMPLICIT_VR_LE)
        .expect("an Implicit VR CT");
    let mut keys = study_keys("SERIES", &ct.study_uid);
    keys.push("SeriesInstanceUID".into());
    let series: BTreeSet<String> = find(port, &keys)
        .await
        .iter()
        .map(|r| text(r, tags::SERIES_INSTANCE_UID))
        .collect();
    let want: BTreeSet<String> = of_study(&files, &ct.study_uid)
        .iter()
        .map(|f| f.series_uid.clone())
        .collect();
    assert_eq!(series, want, "series of {}", ct.study_uid);

    // C-GET of every study by getscu: as dcmqrscp sent each instance. It sends as stored
    // where the syntax is accepted and converts otherwise; what it sent in another syntax
    // is what DCMTK dcmconv makes of its copy.
    for study in files.iter().map(|f| &f.study_uid).collect::<BTreeSet<_>>() {
        let got = get(port, &[], &study_keys("STUDY", study)).await;
        let mut sent = Held::new();
        for (uid, (syntax, _)) in &got {
            let (stored_syntax, dataset) = &stored[uid];
            let dataset = match syntax == stored_syntax {
                true => dataset.clone(),
                false => dataset_of(&dcmconv(&copy_of(uid), syntax)).1,
            };
            sent.insert(uid.clone(), (syntax.clone(), dataset));
        }
        assert_byte_exact(
            &got,
            &sent,
            &of_study(&files, study),
            &format!("getscu {study}\n{}", pacs.log_tail()),
        );
    }
    let gets = audit_details(gateway.context(), "C-GET").await;
    assert_eq!(gets.len(), study_count(&files), "{gets:?}");
    assert!(
        gets.iter()
            .all(|(o, d)| o == "success" && d.contains("streamed from the local PACS")),
        "{gets:?}"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dcmqrscp_by_c_get_pacs_only_studies_found_and_retrieved_through_beeldbrug() {
    dcmqrscp_through_the_proxy("c-get").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dcmqrscp_by_c_move_pacs_only_studies_found_and_retrieved_through_beeldbrug() {
    dcmqrscp_through_the_proxy("c-move").await;
}

// ---------------------------------------------------------------------------------------------
// 3. A PACS that gives up mid-retrieve

/// VL Photographic Image Storage: a storage class beeldbrug does not propose to the PACS
/// (not among `sop::COMMON_STORAGE`), so Orthanc cannot send it by C-GET.
const VL_PHOTOGRAPHIC: &str = "1.2.840.10008.5.1.4.1.1.77.1.4";

/// Orthanc 1.10.1 ends a C-GET at an instance it has no presentation context for ("No
/// presentation context for: (VLp)"). Through the proxy: what it sent arrives byte-exact,
/// the workstation hears the retrieve was not whole, the audit record says so and the cache
/// does not call the study complete.
#[tokio::test(flavor = "multi_thread")]
async fn a_pacs_down_leaves_the_cache_answering_queries_marked_incomplete() {
    let dir = tempfile::tempdir().unwrap();
    let generated = |seed: u64, sub: &str| {
        let args = GenerateArgs {
            seed,
            patients: 1,
            ct_slices: 1,
            mr_slices: 1,
            ..GenerateArgs::with_defaults(dir.path().join(sub))
        };
        beeldbrug::testdata::generate(&args).expect("generate")
    };
    let (pacs_only, cache_only) = (generated(21, "pacs"), generated(22, "cache"));
    let orthanc = Orthanc::start(dir.path()).await;
    store(orthanc.dicom_port, "ORTHANC", &pacs_only);
    let pacs = pacs_toml("ORTHANC", orthanc.dicom_port, "c-get", "");
    let gateway = Gateway::start(&format!("{pacs}{PROXY}")).await;
    let keys = study_keys("STUDY", "");
    let studies = |found: &[DefaultDicomObject]| -> BTreeSet<String> {
        found
            .iter()
            .map(|o| text(o, tags::STUDY_INSTANCE_UID))
            .collect()
    };

    // Up, nothing cached: the PACS's study. Then down, nothing cached: the query fails.
    assert_eq!(
        studies(&find(gateway.port, &keys).await),
        pacs_only.iter().map(|f| f.study_uid.clone()).collect()
    );
    // Patient Root at PATIENT level: the PACS is asked in the Study Root model, and its
    // studies come back folded into their patient, counted.
    let patient_keys: Vec<String> = [
        "QueryRetrieveLevel=PATIENT",
        "PatientID",
        "PatientName",
        "NumberOfPatientRelatedStudies",
    ]
    .map(String::from)
    .to_vec();
    let patients = find_in(gateway.port, "-P", &patient_keys).await;
    assert_eq!(patients.len(), 1, "one patient");
    assert_eq!(
        text(&patients[0], tags::PATIENT_ID),
        pacs_only[0].patient_id
    );
    let pacs_studies: BTreeSet<&str> = pacs_only.iter().map(|f| f.study_uid.as_str()).collect();
    assert_eq!(
        text(&patients[0], tags::NUMBER_OF_PATIENT_RELATED_STUDIES),
        pacs_studies.len().to_string()
    );
    drop(orthanc);
    let (ok, text_out) = dcmtk("findscu", scu_args(gateway.port, &["-v", "-S"], &keys)).await;
    assert!(
        !text_out.contains("Received Final Find Response (Success)")
            && text_out.contains("Received Final Find Response"),
        "findscu with the PACS down and nothing cached ({ok}):\n{text_out}"
    );

    // Down, a study cached: its row comes, then a failure naming the PACS.
    store_in_cache(&gateway, &cache_only);
    let out = tempfile::tempdir().unwrap();
    let od = out.path().display().to_string();
    let (_, text_out) = dcmtk(
        "findscu",
        scu_args(gateway.port, &["-v", "-S", "-X", "-od", &od], &keys),
    )
    .await;
    assert!(
        text_out.contains("Received Final Find Response (Failed: UnableToProcess)"),
        "findscu with the PACS down:\n{text_out}"
    );
    let rows: Vec<DefaultDicomObject> = files_under(out.path())
        .iter()
        .map(|p| dicom_object::open_file(p).unwrap())
        .collect();
    assert_eq!(
        studies(&rows),
        cache_only.iter().map(|f| f.study_uid.clone()).collect()
    );

    // QIDO-RS: the cached study, 200, with a warning that the answer may be incomplete.
    let qido = request(
        gateway.http_port,
        "GET",
        "/dicomweb/studies",
        &[("Accept", "application/dicom+json")],
        b"",
    )
    .await;
    assert_eq!(qido.status, 200, "{}", qido.text());
    assert!(
        qido.text().contains(&cache_only[0].study_uid),
        "{}",
        qido.text()
    );
    let warnings = qido.headers_named("Warning");
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("299 ") && w.contains("local PACS") && w.contains("incomplete")),
        "{warnings:?}"
    );
    let partial = |records: Vec<(String, String)>| {
        records
            .iter()
            .filter(|(outcome, detail)| outcome == "partial" && detail.contains("local PACS"))
            .count()
    };
    assert_eq!(partial(audit_details(gateway.context(), "C-FIND").await), 1);
    assert_eq!(
        partial(audit_details(gateway.context(), "QIDO-RS").await),
        1
    );
    gateway.stop().await;
}

/// A C-MOVE destination far slower than the PACS's timeout on its C-STORE-RSP (dcmqrscp
/// with a 3 s DIMSE timeout, fetched by C-GET; storescp sleeping in every PDU, some 4 s per
/// slice): the fetch waits at most `client_wait_secs` (1 s) per instance for it, then runs
/// ahead into the cache, so dcmqrscp fails nothing, the study is complete in the cache, and
/// the slow destination still gets every instance, from disk. (With the wait at 60 s,
/// dcmqrscp times out on our responses and ends its C-GET failed: the study stays
/// incomplete in the cache.)
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_client_does_not_hold_the_pacs_past_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let args = GenerateArgs {
        seed: 31,
        patients: 1,
        ct_slices: 8,
        mr_slices: 0,
        ..GenerateArgs::with_defaults(dir.path().join("src"))
    };
    let files = beeldbrug::testdata::generate(&args).expect("generate");
    let study = files[0].study_uid.clone();
    let pacs = Dcmqrscp::start(dir.path(), "DCMQRSCP", &[], &["-td", "3"]).await;
    let loaded = files.clone();
    let pacs = tokio::task::spawn_blocking(move || {
        pacs.load(&loaded);
        pacs
    })
    .await
    .unwrap();
    // About 1 s per 128 KB PDU: some 4 s per 512 KB slice, past dcmqrscp's 3 s.
    let scp = StoreScp::start(dir.path(), &["--sleep-during", "1", "-pdu", "131072"]).await;
    let toml = pacs_toml("DCMQRSCP", pacs.port, "c-get", "");
    let gateway = Gateway::start(&format!(
        "{toml}{PROXY}{}[cache]\nclient_wait_secs = 1\n",
        scp.peer_toml()
    ))
    .await;
    let mut options = vec!["-v", "-S", "-aem", DEST];
    options.extend(TIMEOUTS);
    let (ok, out) = dcmtk(
        "movescu",
        scu_args(gateway.port, &options, &study_keys("STUDY", &study)),
    )
    .await;
    assert!(
        ok && out.contains("Received Final Move Response (Success)"),
        "movescu to a slow destination:\n{out}\ndcmqrscp:\n{}",
        pacs.process.log_tail()
    );
    let received = part10_under(&scp.dir);
    let sops: BTreeSet<&String> = received.keys().collect();
    assert_eq!(
        sops,
        files.iter().map(|f| &f.sop_uid).collect(),
        "every instance"
    );
    assert_eq!(
        cache_state(&gateway, &study).await,
        (files.len() as u64, true),
        "the whole study in the cache, complete"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pacs_that_gives_up_mid_retrieve_leaves_a_partial_answer() {
    let dir = tempfile::tempdir().unwrap();
    let args = GenerateArgs {
        seed: 5,
        patients: 1,
        ct_slices: 5,
        mr_slices: 1,
        ..GenerateArgs::with_defaults(dir.path().join("src"))
    };
    let mut files = beeldbrug::testdata::generate(&args).expect("generate");
    files.retain(|f| f.sop_class_uid != MR_IMAGE_STORAGE);
    // One slice in a class beeldbrug does not ask the PACS for (dcmodify also updates the
    // file meta).
    let odd = &mut files[2];
    let path = odd.path.display().to_string();
    let tag = format!("(0008,0016)={VL_PHOTOGRAPHIC}");
    let run = common::dcmtk("dcmodify", &["-nb", "-m", &tag, &path]);
    assert!(
        run.status.success(),
        "dcmodify: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    odd.sop_class_uid = VL_PHOTOGRAPHIC.into();
    let odd = odd.sop_uid.clone();
    let study = files[0].study_uid.clone();
    let total = files.len() as u64;
    let orthanc = Orthanc::start(dir.path()).await;
    store(orthanc.dicom_port, "ORTHANC", &files);
    let held = orthanc_holds(&orthanc).await;
    assert_eq!(held.len(), files.len());
    let pacs = pacs_toml("ORTHANC", orthanc.dicom_port, "c-get", "");
    let gateway = Gateway::start(&format!("{pacs}{PROXY}")).await;

    let out = tempfile::tempdir().unwrap();
    let od = out.path().display().to_string();
    let (_, text) = dcmtk(
        "getscu",
        scu_args(
            gateway.port,
            &["-v", "-S", "-od", &od],
            &study_keys("STUDY", &study),
        ),
    )
    .await;
    let context = format!("{text}\n{}", orthanc.log_tail());
    let got = part10_under(out.path());
    assert!(!got.contains_key(&odd), "{context}");
    let sent: Vec<&GeneratedFile> = files
        .iter()
        .filter(|f| got.contains_key(&f.sop_uid))
        .collect();
    assert_byte_exact(&got, &held, &sent, &format!("what Orthanc sent\n{context}"));
    // B000 with the counts (PS3.4 C.4.3.1.4): what arrived completed, the rest failed.
    let failed = total as usize - got.len();
    for line in [
        "Received C-GET Response (Warning: SubOperationsCompleteOneOrMoreFailures)".to_string(),
        format!("Number of Completed Suboperations : {}", got.len()),
        format!("Number of Failed Suboperations    : {failed}"),
    ] {
        assert!(text.contains(&line), "{line}\n{context}");
    }
    let gets = audit_details(gateway.context(), "C-GET").await;
    assert_eq!(gets.len(), 1, "{gets:?}");
    assert_eq!(gets[0].0, "partial", "{gets:?}");
    let (count, complete) = cache_state(&gateway, &study).await;
    assert!(
        count < total && !complete,
        "cache: {count} of {total}, complete {complete}"
    );
    gateway.stop().await;
    drop(orthanc);
}

// ---------------------------------------------------------------------------------------------
// 4. Cancel, and a client that goes away

/// Whether the cache, a few seconds after a retrieve was given up, holds fewer than `total`
/// instances of `study` and does not call it complete (the fetch was stopped).
async fn fetch_stopped(gateway: &Gateway, study: &str, total: u64) -> (u64, bool) {
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (count, complete) = cache_state(gateway, study).await;
    (count, count < total && !complete)
}

/// A C-CANCEL, then a client that goes away, with Orthanc fetched from by `retrieve`.
async fn cancelled_or_abandoned(retrieve: &str) {
    let dir = tempfile::tempdir().unwrap();
    // One CT study of 40 slices of 512 KB: more than loopback buffers hold.
    let args = GenerateArgs {
        seed: 7,
        patients: 1,
        ct_slices: 40,
        mr_slices: 1,
        ..GenerateArgs::with_defaults(dir.path().join("src"))
    };
    let files = beeldbrug::testdata::generate(&args).expect("generate");
    let ct = files
        .iter()
        .find(|f| f.sop_class_uid != MR_IMAGE_STORAGE)
        .unwrap()
        .clone();
    let total = of_study(&files, &ct.study_uid).len() as u64;
    let our_port = free_port();
    let orthanc = Orthanc::start_with(dir.path(), &[("BEELDBRUG", our_port)]).await;
    store(orthanc.dicom_port, "ORTHANC", &files);
    // A destination that pauses a second after each instance: the cancel comes mid-retrieve.
    let scp = StoreScp::start(dir.path(), &["--sleep-after", "1"]).await;
    let pacs = pacs_toml("ORTHANC", orthanc.dicom_port, retrieve, "");
    let gateway =
        Gateway::start_dimse_on(our_port, &format!("{pacs}{PROXY}{}", scp.peer_toml())).await;
    let port = gateway.port;
    let echo = || async {
        let (ok, out) = dcmtk("echoscu", scu_args(port, &[], &[])).await;
        assert!(ok, "echoscu after the retrieve was given up:\n{out}");
    };

    // C-MOVE cancelled after the first pending response (PS3.4 C.4.2.3.2).
    let mut options = vec!["-v", "-S", "-aem", DEST, "--cancel", "1"];
    options.extend(TIMEOUTS);
    let (_, out) = dcmtk(
        "movescu",
        scu_args(port, &options, &study_keys("STUDY", &ct.study_uid)),
    )
    .await;
    assert!(
        out.contains("Received Final Move Response (Cancel"),
        "movescu --cancel 1:\n{out}"
    );
    echo().await;
    let (count, stopped) = fetch_stopped(&gateway, &ct.study_uid, total).await;
    assert!(
        stopped,
        "the fetch went on after the C-CANCEL: {count} of {total} in the cache"
    );
    let moves = audit_details(gateway.context(), "C-MOVE").await;
    assert_eq!(moves.len(), 1, "{moves:?}");
    assert_eq!(moves[0].0, "cancelled", "{moves:?}");

    // getscu stopped after its first instance, then killed: the association goes away.
    let received = dir.path().join("getscu-killed");
    std::fs::create_dir_all(&received).unwrap();
    let mut getscu = std::process::Command::new(require_tool("getscu"))
        .args(scu_args(
            port,
            &["-S", "-od", &received.display().to_string()],
            &study_keys("STUDY", &ct.study_uid),
        ))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start getscu");
    let deadline = Instant::now() + Duration::from_secs(30);
    while files_under(&received).is_empty() {
        assert!(Instant::now() < deadline, "getscu received nothing");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let pid = getscu.id().to_string();
    let stop = std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap();
    assert!(stop.success());
    tokio::time::sleep(Duration::from_millis(500)).await;
    getscu.kill().unwrap();
    getscu.wait().unwrap();
    let got = files_under(&received).len() as u64;
    assert!(
        got < total,
        "getscu had it all ({got}) before it was stopped"
    );
    echo().await;
    let (count, stopped) = fetch_stopped(&gateway, &ct.study_uid, total).await;
    assert!(
        stopped,
        "the fetch went on after the client went away: {count} of {total} in the cache"
    );
    let gets = audit_details(gateway.context(), "C-GET").await;
    assert_eq!(
        gets.len(),
        1,
        "one record for the abandoned C-GET: {gets:?}"
    );
    assert_ne!(gets[0].0, "success", "{gets:?}");

    // The next C-GET of the study retrieves all of it, and the cache then has it whole.
    let got = get(port, &[], &study_keys("STUDY", &ct.study_uid)).await;
    assert_eq!(got.len() as u64, total);
    assert!(
        common::gateway_mode::becomes_complete(gateway.context(), &ct.study_uid).await,
        "{:?}",
        cache_state(&gateway, &ct.study_uid).await
    );
    gateway.stop().await;
    drop(orthanc);
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelled_or_abandoned_retrieve_by_c_get_through_the_proxy_stops_the_fetch() {
    cancelled_or_abandoned("c-get").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelled_or_abandoned_retrieve_by_c_move_through_the_proxy_stops_the_fetch() {
    cancelled_or_abandoned("c-move").await;
}
