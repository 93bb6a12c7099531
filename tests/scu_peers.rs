//! beeldbrug as SCU against real peers: DCMTK `dcmqrscp` and Orthanc.
//!
//! Each test starts its peer in a temp dir on a free port (the process is killed by a guard
//! when the test ends, pass or fail), then drives it with the library SCU functions
//! (`beeldbrug::dimse::scu::{echo, store_files, find, move_study, get}`) and, for echo and
//! store, with the built `beeldbrug` binary. A C-MOVE goes to a beeldbrug gateway started
//! in-process as the destination AE `BBDEST`; its index must then hold the moved instances.
//! A missing peer is a failure, never a skip.
//!
//! dcmqrscp runs in its default fork-per-association mode: DCMTK 3.6.7's `--single-process`
//! segfaults after the first association (see `start_dcmqrscp`). It supports C-GET.

mod common;

use beeldbrug::core::Selection;
use beeldbrug::dimse::scu::{self, ScuOptions};
use beeldbrug::dimse::sop;
use beeldbrug::testdata::GeneratedFile;
use common::peer::PeerProcess;
use common::{free_port, generate, require_tool, Gateway};
use dicom_core::value::Value as DicomValue;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Our calling AE title.
const SCU_AE: &str = "BBSCU";
/// The beeldbrug gateway that receives C-MOVE sub-operations.
const DEST_AE: &str = "BBDEST";
const DCMQRSCP_AE: &str = "QRSCP";
const ORTHANC_AE: &str = "ORTHANC";

// ---------------------------------------------------------------------------------------------
// Peer processes

/// DCMTK `dcmqrscp` with one AE (`QRSCP`, read/write storage area, any peer) and a host
/// table that names our SCU and the C-MOVE destination.
async fn start_dcmqrscp(dir: &Path, dest_port: u16) -> (PeerProcess, u16) {
    let program = require_tool("dcmqrscp");
    let port = free_port();
    let storage = dir.join("qrscp-storage");
    std::fs::create_dir_all(&storage).expect("storage area");
    let cfg = format!(
        "NetworkTCPPort  = {port}\n\
         MaxPDUSize      = 65536\n\
         MaxAssociations = 16\n\
         \n\
         HostTable BEGIN\n\
         bbscu  = ({SCU_AE}, 127.0.0.1, {unused})\n\
         bbdest = ({DEST_AE}, 127.0.0.1, {dest_port})\n\
         HostTable END\n\
         \n\
         VendorTable BEGIN\n\
         VendorTable END\n\
         \n\
         AETable BEGIN\n\
         {DCMQRSCP_AE} {storage} RW (100, 1024mb) ANY\n\
         AETable END\n",
        unused = free_port(),
        storage = storage.display(),
    );
    let cfg_path = dir.join("dcmqrscp.cfg");
    std::fs::write(&cfg_path, cfg).expect("write dcmqrscp.cfg");
    // Not `--single-process`: DCMTK 3.6.7 (Debian/Ubuntu dcmtk 3.6.7) segfaults in
    // DUL_DropAssociation after the first association in that mode, whoever the peer is
    // (DCMTK's own echoscu included). The default forks one child per association.
    let args = vec![
        "-c".to_string(),
        cfg_path.display().to_string(),
        "-v".to_string(),
    ];
    let mut peer = PeerProcess::spawn("dcmqrscp", &program, &args, dir);
    peer.wait_for_port(port).await;
    (peer, port)
}

/// Orthanc with a fresh SQLite index, every DIMSE service allowed to unknown callers, and
/// `BBDEST` (the gateway on `dest_port`) as a known modality for C-MOVE.
async fn start_orthanc(dir: &Path, dest_port: u16) -> (PeerProcess, u16, u16) {
    let program = require_tool("Orthanc");
    let (dicom_port, http_port) = (free_port(), free_port());
    let storage = dir.join("orthanc-storage");
    let config = serde_json::json!({
        "Name": "beeldbrug-test",
        "StorageDirectory": storage,
        "IndexDirectory": storage,
        "Plugins": [],
        "HttpPort": http_port,
        "RemoteAccessAllowed": false,
        "AuthenticationEnabled": false,
        "DicomServerEnabled": true,
        "DicomAet": ORTHANC_AE,
        "DicomPort": dicom_port,
        "DicomCheckCalledAet": false,
        "DicomAlwaysAllowEcho": true,
        "DicomAlwaysAllowStore": true,
        "DicomAlwaysAllowFind": true,
        "DicomAlwaysAllowGet": true,
        "DicomAlwaysAllowMove": true,
        "UnknownSopClassAccepted": true,
        "DicomModalities": { "bb": [DEST_AE, "127.0.0.1", dest_port] },
        "DicomAssociationCloseDelay": 0,
        "SaveJobs": false,
    });
    let cfg_path = dir.join("orthanc.json");
    std::fs::write(&cfg_path, serde_json::to_vec_pretty(&config).expect("json"))
        .expect("write orthanc.json");
    let mut peer = PeerProcess::spawn("orthanc", &program, &[cfg_path.display().to_string()], dir);
    peer.wait_for_port(http_port).await;
    peer.wait_for_port(dicom_port).await;
    (peer, dicom_port, http_port)
}

/// A plain HTTP/1.0 GET on loopback returning the JSON body (Orthanc's REST API).
async fn http_get_json(port: u16, path: &str) -> serde_json::Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect HTTP");
    s.write_all(
        format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("send HTTP request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.expect("read HTTP response");
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("malformed HTTP response: {text}"));
    assert!(
        head.starts_with("HTTP/1.") && head.contains(" 200 "),
        "GET {path}: {head}"
    );
    serde_json::from_str(body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"))
}

// ---------------------------------------------------------------------------------------------
// Data and identifiers

/// The generated data set (2 patients, each a CT study with an explicit and an implicit VR
/// series and an MR study: 20 instances in 4 studies), split by patient so the library
/// stores one half and the binary the other.
struct Fixture {
    _dir: tempfile::TempDir,
    files: Vec<GeneratedFile>,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let files = generate(dir.path(), false);
        assert_eq!(files.len(), 20, "fixture shape changed");
        Fixture { _dir: dir, files }
    }

    /// The same plus a JPEG Baseline and an RLE Lossless copy of each CT series (36
    /// instances; each CT study has 16).
    fn with_encapsulated() -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let files = generate(dir.path(), true);
        assert_eq!(files.len(), 36, "fixture shape changed");
        Fixture { _dir: dir, files }
    }

    fn patients(&self) -> Vec<String> {
        let set: BTreeSet<String> = self.files.iter().map(|f| f.patient_id.clone()).collect();
        set.into_iter().collect()
    }

    fn paths_of(&self, patient_id: &str) -> Vec<PathBuf> {
        self.files
            .iter()
            .filter(|f| f.patient_id == patient_id)
            .map(|f| f.path.clone())
            .collect()
    }

    /// Study UID → its instances.
    fn studies(&self) -> BTreeMap<String, Vec<&GeneratedFile>> {
        let mut out: BTreeMap<String, Vec<&GeneratedFile>> = BTreeMap::new();
        for f in &self.files {
            out.entry(f.study_uid.clone()).or_default().push(f);
        }
        out
    }

    /// The CT study of `patient_id` (the one with the most instances).
    fn ct_study(&self, patient_id: &str) -> (String, BTreeSet<String>) {
        let (uid, files) = self
            .studies()
            .into_iter()
            .filter(|(_, fs)| {
                fs[0].patient_id == patient_id
                    && fs[0].sop_class_uid == beeldbrug::testdata::CT_IMAGE_STORAGE
            })
            .max_by_key(|(_, fs)| fs.len())
            .expect("a CT study");
        (uid, files.iter().map(|f| f.sop_uid.clone()).collect())
    }
}

fn put_str(obj: &mut InMemDicomObject, tag: Tag, vr: VR, value: &str) {
    let v = if value.is_empty() {
        PrimitiveValue::Empty
    } else {
        PrimitiveValue::from(value)
    };
    obj.put(DataElement::new(tag, vr, v));
}

/// Study-level C-FIND identifier asking for the patient and study keys.
fn study_find_identifier() -> InMemDicomObject {
    let mut obj = InMemDicomObject::new_empty();
    put_str(&mut obj, tags::QUERY_RETRIEVE_LEVEL, VR::CS, "STUDY");
    put_str(&mut obj, tags::STUDY_INSTANCE_UID, VR::UI, "");
    put_str(&mut obj, tags::PATIENT_NAME, VR::PN, "");
    put_str(&mut obj, tags::PATIENT_ID, VR::LO, "");
    put_str(&mut obj, tags::STUDY_DATE, VR::DA, "");
    obj
}

/// Study-level retrieve identifier for one study.
fn study_retrieve_identifier(study_uid: &str) -> InMemDicomObject {
    let mut obj = InMemDicomObject::new_empty();
    put_str(&mut obj, tags::QUERY_RETRIEVE_LEVEL, VR::CS, "STUDY");
    put_str(&mut obj, tags::STUDY_INSTANCE_UID, VR::UI, study_uid);
    obj
}

fn text(obj: &InMemDicomObject, tag: Tag) -> String {
    obj.element(tag)
        .ok()
        .and_then(|e| {
            e.to_str()
                .ok()
                .map(|s| s.trim_end_matches([' ', '\0']).to_string())
        })
        .unwrap_or_default()
}

fn options(port: u16, called: &str) -> ScuOptions {
    ScuOptions::new("127.0.0.1", port, SCU_AE, called)
}

/// Run the built `beeldbrug` binary (off the async runtime) and return its output.
async fn beeldbrug_cli(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_beeldbrug"))
            .args(&args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .expect("run beeldbrug binary")
    })
    .await
    .expect("join")
}

fn peer_args(port: u16, called: &str) -> Vec<String> {
    [
        "--aet",
        SCU_AE,
        "--aec",
        called,
        "--host",
        "127.0.0.1",
        "--port",
        &port.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn describe(out: &std::process::Output) -> String {
    format!(
        "exit {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

// ---------------------------------------------------------------------------------------------
// The scenario every peer goes through

/// Echo (library and binary) against a peer.
async fn echo_both_ways(peer: &PeerProcess, port: u16, called: &str) {
    let status = scu::echo(&options(port, called))
        .await
        .unwrap_or_else(|e| panic!("C-ECHO to {called}: {e}\n{}", peer.log_tail()));
    assert_eq!(status, 0x0000, "C-ECHO status\n{}", peer.log_tail());

    let mut args = vec!["echo".to_string()];
    args.extend(peer_args(port, called));
    let out = beeldbrug_cli(args).await;
    assert!(
        out.status.success(),
        "beeldbrug echo: {}\n{}",
        describe(&out),
        peer.log_tail()
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("C-ECHO {called}")),
        "beeldbrug echo printed: {stdout}"
    );
}

/// Store patient A's files with the library and patient B's with the binary.
async fn store_both_ways(peer: &PeerProcess, port: u16, called: &str, fx: &Fixture) {
    let patients = fx.patients();
    let (a, b) = (fx.paths_of(&patients[0]), fx.paths_of(&patients[1]));

    let mut progress = 0usize;
    let report = scu::store_files(&options(port, called), &a, |_, _| progress += 1)
        .await
        .unwrap_or_else(|e| panic!("C-STORE to {called}: {e}\n{}", peer.log_tail()));
    assert!(
        report.failed.is_empty(),
        "C-STORE failures: {:?}\n{}",
        report.failed,
        peer.log_tail()
    );
    assert_eq!(
        report.sent as usize,
        a.len(),
        "all of patient A's files stored"
    );
    assert_eq!(progress, a.len(), "progress called once per file");
    let size: u64 = a
        .iter()
        .map(|p| std::fs::metadata(p).expect("stat").len())
        .sum();
    assert_eq!(report.bytes, size);

    let mut args = vec!["store".to_string()];
    args.extend(peer_args(port, called));
    args.extend(b.iter().map(|p| p.display().to_string()));
    let out = beeldbrug_cli(args).await;
    assert!(
        out.status.success(),
        "beeldbrug store: {}\n{}",
        describe(&out),
        peer.log_tail()
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let expected = format!("stored {n} of {n} files", n = b.len());
    assert!(
        stdout.contains(&expected),
        "beeldbrug store printed: {stdout}"
    );
}

/// A study-level C-FIND returns exactly the four stored studies, each with its patient's
/// name (decoded per the response's Specific Character Set) and ID.
async fn find_studies(peer: &PeerProcess, port: u16, called: &str, fx: &Fixture) {
    let (matches, status) = scu::find(
        &options(port, called),
        sop::STUDY_ROOT_FIND,
        &study_find_identifier(),
    )
    .await
    .unwrap_or_else(|e| panic!("C-FIND to {called}: {e}\n{}", peer.log_tail()));
    assert_eq!(status, 0x0000, "final C-FIND status\n{}", peer.log_tail());
    let studies = fx.studies();
    let found: BTreeMap<String, (String, String)> = matches
        .iter()
        .map(|m| {
            (
                text(m, tags::STUDY_INSTANCE_UID),
                (text(m, tags::PATIENT_NAME), text(m, tags::PATIENT_ID)),
            )
        })
        .collect();
    assert_eq!(
        matches.len(),
        studies.len(),
        "one match per study: {found:?}"
    );
    for (uid, files) in &studies {
        let (name, id) = found
            .get(uid)
            .unwrap_or_else(|| panic!("study {uid} not found: {found:?}"));
        assert_eq!(
            name, &files[0].patient_name,
            "PatientName of study {uid} (stored as {:?})",
            files[0].charset
        );
        assert_eq!(id, &files[0].patient_id, "PatientID of study {uid}");
    }
}

/// C-MOVE patient A's CT study to the gateway; the gateway's index must then hold exactly
/// its instances.
async fn move_to_gateway(
    peer: &PeerProcess,
    port: u16,
    called: &str,
    fx: &Fixture,
    gateway: &Gateway,
) {
    let patients = fx.patients();
    let (study, sops) = fx.ct_study(&patients[0]);
    let report = scu::move_study(
        &options(port, called),
        sop::STUDY_ROOT_MOVE,
        &study_retrieve_identifier(&study),
        DEST_AE,
    )
    .await
    .unwrap_or_else(|e| panic!("C-MOVE via {called}: {e}\n{}", peer.log_tail()));
    assert_eq!(
        report.status,
        0x0000,
        "C-MOVE final status: {report:?}\n{}",
        peer.log_tail()
    );
    assert_eq!(
        usize::from(report.completed),
        sops.len(),
        "completed sub-operations: {report:?}"
    );
    assert_eq!(report.failed, 0, "{report:?}");
    let selection = Selection {
        study_uids: vec![study.clone()],
        ..Default::default()
    };
    let located = gateway
        .context()
        .index
        .locate(&selection)
        .await
        .expect("gateway index");
    let got: BTreeSet<String> = located.iter().map(|l| l.sop_instance_uid.clone()).collect();
    assert_eq!(got, sops, "the gateway indexed the moved study");
    for l in &located {
        assert!(
            gateway.context().blobs.path(&l.blob_key).is_file(),
            "blob {} on disk",
            l.blob_key
        );
    }
}

/// C-GET patient B's CT study into a temp dir: one readable Part 10 file per instance.
async fn get_into_dir(peer: &PeerProcess, port: u16, called: &str, fx: &Fixture) {
    let patients = fx.patients();
    let (study, sops) = fx.ct_study(&patients[1]);
    let out = tempfile::tempdir().expect("temp dir");
    let (report, files) = scu::get(
        &options(port, called),
        sop::STUDY_ROOT_GET,
        &study_retrieve_identifier(&study),
        out.path(),
    )
    .await
    .unwrap_or_else(|e| panic!("C-GET from {called}: {e}\n{}", peer.log_tail()));
    assert_eq!(
        report.status,
        0x0000,
        "C-GET final status: {report:?}\n{}",
        peer.log_tail()
    );
    assert_eq!(
        usize::from(report.completed),
        sops.len(),
        "completed sub-operations: {report:?}"
    );
    assert_eq!(report.failed, 0, "{report:?}");
    assert_eq!(files.len(), sops.len(), "one file per instance: {files:?}");
    let mut got = BTreeSet::new();
    for f in &files {
        let obj = dicom_object::open_file(f)
            .unwrap_or_else(|e| panic!("{} is not a readable Part 10 file: {e}", f.display()));
        assert_eq!(text(&obj, tags::STUDY_INSTANCE_UID), study);
        assert_eq!(text(&obj, tags::PATIENT_ID), patients[1]);
        let sop_uid = text(&obj, tags::SOP_INSTANCE_UID);
        assert_eq!(
            obj.meta()
                .media_storage_sop_instance_uid()
                .trim_end_matches('\0'),
            sop_uid
        );
        got.insert(sop_uid);
    }
    assert_eq!(got, sops, "the retrieved instances are the study's");
    let leftovers: Vec<_> = std::fs::read_dir(out.path())
        .expect("read out dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temp files left behind: {leftovers:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// DCMTK dcmqrscp

#[tokio::test(flavor = "multi_thread")]
async fn dcmqrscp_echo_library_and_binary() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (peer, port) = start_dcmqrscp(dir.path(), free_port()).await;
    echo_both_ways(&peer, port, DCMQRSCP_AE).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dcmqrscp_store_find_move_get() {
    let gateway = Gateway::start(&format!("[dimse]\nae_title = \"{DEST_AE}\"\n")).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (peer, port) = start_dcmqrscp(dir.path(), gateway.port).await;
    let fx = Fixture::new();
    store_both_ways(&peer, port, DCMQRSCP_AE, &fx).await;
    find_studies(&peer, port, DCMQRSCP_AE, &fx).await;
    move_to_gateway(&peer, port, DCMQRSCP_AE, &fx, &gateway).await;
    get_into_dir(&peer, port, DCMQRSCP_AE, &fx).await;
    drop(peer);
    gateway.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Orthanc

#[tokio::test(flavor = "multi_thread")]
async fn orthanc_echo_library_and_binary() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (peer, port, _) = start_orthanc(dir.path(), free_port()).await;
    echo_both_ways(&peer, port, ORTHANC_AE).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn orthanc_store_find_move_get() {
    let gateway = Gateway::start(&format!("[dimse]\nae_title = \"{DEST_AE}\"\n")).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (peer, port, http_port) = start_orthanc(dir.path(), gateway.port).await;
    let fx = Fixture::new();
    store_both_ways(&peer, port, ORTHANC_AE, &fx).await;
    let stats = http_get_json(http_port, "/statistics").await;
    assert_eq!(
        stats["CountInstances"],
        serde_json::json!(fx.files.len()),
        "Orthanc holds every instance: {stats}"
    );
    assert_eq!(
        stats["CountStudies"],
        serde_json::json!(fx.studies().len()),
        "{stats}"
    );
    find_studies(&peer, port, ORTHANC_AE, &fx).await;
    move_to_gateway(&peer, port, ORTHANC_AE, &fx, &gateway).await;
    get_into_dir(&peer, port, ORTHANC_AE, &fx).await;
    drop(peer);
    gateway.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Compressed transfer syntaxes

/// Pixel Data as bytes: the value of a native element (whatever VR the reader chose), or
/// the offset table and fragments of an encapsulated one.
fn pixel_bytes(value: &DicomValue<InMemDicomObject, Vec<u8>>) -> Vec<Vec<u8>> {
    match value {
        DicomValue::Primitive(p) => vec![p.to_bytes().into_owned()],
        DicomValue::PixelSequence(seq) => {
            let table: Vec<u8> = seq
                .offset_table()
                .iter()
                .flat_map(|o| o.to_le_bytes())
                .collect();
            std::iter::once(table)
                .chain(seq.fragments().iter().cloned())
                .collect()
        }
        DicomValue::Sequence(_) => panic!("Pixel Data is a sequence"),
    }
}

fn is_compressed(f: &GeneratedFile) -> bool {
    !sop::is_native_le(&f.transfer_syntax)
}

/// dcmqrscp (default options) accepts only uncompressed syntaxes for storage: the JPEG
/// Baseline and RLE files must fail one by one, with the reason, while the rest of the
/// association goes on; with nothing acceptable the binary fails cleanly.
#[tokio::test(flavor = "multi_thread")]
async fn dcmqrscp_refused_syntax_fails_per_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (peer, port) = start_dcmqrscp(dir.path(), free_port()).await;
    let fx = Fixture::with_encapsulated();
    let paths: Vec<PathBuf> = fx.files.iter().map(|f| f.path.clone()).collect();
    let compressed: BTreeSet<PathBuf> = fx
        .files
        .iter()
        .filter(|f| is_compressed(f))
        .map(|f| f.path.clone())
        .collect();
    assert_eq!(compressed.len(), 16);

    let report = scu::store_files(&options(port, DCMQRSCP_AE), &paths, |_, _| {})
        .await
        .unwrap_or_else(|e| panic!("C-STORE to dcmqrscp: {e}\n{}", peer.log_tail()));
    assert_eq!(
        report.sent as usize,
        paths.len() - compressed.len(),
        "every native file stored: {:?}",
        report.failed
    );
    let failed: BTreeSet<PathBuf> = report.failed.iter().map(|(p, _)| p.clone()).collect();
    assert_eq!(failed, compressed, "exactly the compressed files fail");
    for (path, why) in &report.failed {
        assert!(
            why.contains("accepted no context"),
            "{}: {why}",
            path.display()
        );
    }

    let mut args = vec!["store".to_string()];
    args.extend(peer_args(port, DCMQRSCP_AE));
    args.extend(compressed.iter().map(|p| p.display().to_string()));
    let out = beeldbrug_cli(args).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no presentation context"),
        "{}",
        describe(&out)
    );
}

/// Orthanc stores JPEG Baseline and RLE Lossless as received; a C-GET of the CT study
/// brings every syntax back (we propose them in SCP role) with the pixel data unchanged.
#[tokio::test(flavor = "multi_thread")]
async fn orthanc_store_and_get_compressed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (peer, port, http_port) = start_orthanc(dir.path(), free_port()).await;
    let fx = Fixture::with_encapsulated();
    let paths: Vec<PathBuf> = fx.files.iter().map(|f| f.path.clone()).collect();
    let report = scu::store_files(&options(port, ORTHANC_AE), &paths, |_, _| {})
        .await
        .unwrap_or_else(|e| panic!("C-STORE to Orthanc: {e}\n{}", peer.log_tail()));
    assert!(
        report.failed.is_empty(),
        "{:?}\n{}",
        report.failed,
        peer.log_tail()
    );
    assert_eq!(report.sent as usize, paths.len());
    let stats = http_get_json(http_port, "/statistics").await;
    assert_eq!(
        stats["CountInstances"],
        serde_json::json!(paths.len()),
        "{stats}"
    );

    let patients = fx.patients();
    let (study, sops) = fx.ct_study(&patients[0]);
    assert_eq!(sops.len(), 16);
    let out = tempfile::tempdir().expect("temp dir");
    let (report, files) = scu::get(
        &options(port, ORTHANC_AE),
        sop::STUDY_ROOT_GET,
        &study_retrieve_identifier(&study),
        out.path(),
    )
    .await
    .unwrap_or_else(|e| panic!("C-GET from Orthanc: {e}\n{}", peer.log_tail()));
    assert_eq!(report.status, 0x0000, "{report:?}\n{}", peer.log_tail());
    assert_eq!(usize::from(report.completed), sops.len(), "{report:?}");
    assert_eq!(files.len(), sops.len());

    let originals: BTreeMap<&str, &GeneratedFile> =
        fx.files.iter().map(|f| (f.sop_uid.as_str(), f)).collect();
    let mut syntaxes = BTreeSet::new();
    for f in &files {
        let got = dicom_object::open_file(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let sop_uid = text(&got, tags::SOP_INSTANCE_UID);
        let original = originals[sop_uid.as_str()];
        let ts = got
            .meta()
            .transfer_syntax()
            .trim_end_matches('\0')
            .to_string();
        if is_compressed(original) {
            assert_eq!(
                ts, original.transfer_syntax,
                "{sop_uid} came back in its stored syntax"
            );
        } else {
            // A native file may come back in either native syntax (we propose both).
            assert!(sop::is_native_le(&ts), "{sop_uid} came back in {ts}");
        }
        syntaxes.insert(ts.clone());
        let want = dicom_object::open_file(&original.path).expect("original");
        let (a, b) = (
            want.element(tags::PIXEL_DATA).expect("original pixel data"),
            got.element(tags::PIXEL_DATA).expect("retrieved pixel data"),
        );
        assert!(
            pixel_bytes(a.value()) == pixel_bytes(b.value()),
            "pixel data of {sop_uid} ({ts}) changed"
        );
    }
    assert!(
        syntaxes.iter().any(|ts| sop::is_native_le(ts)),
        "{syntaxes:?}"
    );
    syntaxes.retain(|ts| !sop::is_native_le(ts));
    let expected: BTreeSet<String> = [sop::JPEG_BASELINE, sop::RLE_LOSSLESS]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(syntaxes, expected);
}
