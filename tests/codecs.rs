//! Issue 13: instances in the syntaxes PACS archive in, made by independent encoders (DCMTK
//! `dcmcjpls`, `dcmcjpeg`, `dcmcrle`; pydicom with pyjpegls for JPEG-LS and pylibjpeg-openjpeg
//! for JPEG 2000; OpenJPH through imagecodecs for HTJ2K; libjxl through imagecodecs for JPEG
//! XL; pydicom for Deflate, see `tests/codecs/codecs.py`), stored through STOW-RS and C-STORE,
//! then retrieved decoded by WADO-RS (default syntax, `/frames`, `/rendered`, `/thumbnail`) and by
//! DCMTK `getscu` proposing only uncompressed syntaxes, and by WADO-URI (PS3.18 9) beside
//! Orthanc's WADO-URI of the same files. Pixels are checked with pydicom: equal
//! to the source for lossless syntaxes, within the encoder's bound for lossy ones.

mod common;

use common::http::{get, multipart, multipart_parts, request};
use common::orthanc::Orthanc;
use common::peer::PeerProcess;
use common::{dcmtk, Gateway};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
const DEFLATED: &str = "1.2.840.10008.1.2.1.99";

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/codecs/codecs.py")
}

/// Run the test data script; fail (never skip) when its Python packages are missing.
fn python(args: &[&str]) -> std::process::Output {
    let probe = Command::new("python3")
        .args([
            "-c",
            "import pydicom, numpy, pylibjpeg, openjpeg, jpeg_ls, imagecodecs",
        ])
        .output()
        .expect("python3 must be installed");
    assert!(
        probe.status.success(),
        "pydicom with pylibjpeg-openjpeg, pyjpegls and imagecodecs is needed: run `pip install \
         pydicom numpy pylibjpeg pylibjpeg-openjpeg pyjpegls imagecodecs` (or `bash .ci/run`): {}",
        String::from_utf8_lossy(&probe.stderr)
    );
    Command::new("python3")
        .arg(script())
        .args(args)
        .output()
        .expect("run python3")
}

struct Made {
    study: String,
    series: String,
    instances: Vec<serde_json::Value>,
}

/// The uncompressed sources and their encoded copies, made in `dir`.
fn make(dir: &Path) -> Made {
    made_by(dir, "make")
}

/// The manifest of `codecs.py COMMAND dir` (`make`, `htj2k`, `jpegxl`).
fn made_by(dir: &Path, command: &str) -> Made {
    let out = python(&[command, dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "test data: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest: serde_json::Value = serde_json::from_slice(&out.stdout).expect("manifest");
    Made {
        study: manifest["study"].as_str().unwrap().to_string(),
        series: manifest["series"].as_str().unwrap().to_string(),
        instances: manifest["instances"].as_array().unwrap().clone(),
    }
}

fn field<'a>(instance: &'a serde_json::Value, name: &str) -> &'a str {
    instance[name].as_str().unwrap_or_else(|| panic!("{name}"))
}

/// Compare received pixels with their sources (entries as `codecs.py compare` takes them).
/// A decoded frame written to `dir`, as an entry for [`assert_pixels`] (compared with the
/// instance's source pixels within its tolerance).
fn raw_frame_entry(
    dir: &Path,
    name: &str,
    instance: &serde_json::Value,
    frame: &[u8],
) -> serde_json::Value {
    let raw = dir.join(format!("frame-{name}.raw"));
    std::fs::write(&raw, frame).unwrap();
    serde_json::json!({
        "source": field(instance, "source"),
        "got": raw,
        "raw": true,
        "tolerance": instance["tolerance"],
    })
}

fn assert_pixels(dir: &Path, entries: &[serde_json::Value]) {
    let manifest = dir.join(format!("compare-{}.json", entries.len()));
    std::fs::write(&manifest, serde_json::to_vec(entries).unwrap()).unwrap();
    let out = python(&["compare", manifest.to_str().unwrap()]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pixels differ:\n{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report.lines().count(), entries.len(), "{report}");
    eprintln!("{report}");
}

/// Every instance `made` sent, in one STOW-RS request that must succeed.
async fn stow_all(port: u16, made: &Made) {
    let sent: Vec<&Path> = made
        .instances
        .iter()
        .map(|i| Path::new(field(i, "sent")))
        .collect();
    let stored = stow(port, &sent).await;
    assert_eq!(stored.status, 200, "STOW-RS: {}", stored.text());
}

async fn stow(port: u16, files: &[&Path]) -> common::http::HttpResponse {
    let bytes: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    let parts: Vec<(&str, &[u8])> = bytes
        .iter()
        .map(|b| ("application/dicom", b.as_slice()))
        .collect();
    let ct = "multipart/related; type=\"application/dicom\"; boundary=Codecs";
    request(
        port,
        "POST",
        "/dicomweb/studies",
        &[("Content-Type", ct)],
        &multipart("Codecs", &parts),
    )
    .await
}

/// STOW-RS every encoded instance; WADO-RS gives each back as stored with `transfer-syntax=*`,
/// decoded by default, as decoded frames, rendered and as a thumbnail.
/// A DCMTK tool on a blocking thread, at most two minutes: its output.
async fn run_tool(tool: &'static str, args: Vec<String>) -> std::process::Output {
    tokio::time::timeout(
        Duration::from_secs(120),
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            dcmtk(tool, &args)
        }),
    )
    .await
    .unwrap_or_else(|_| panic!("{tool} hung"))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn wado_rs_decodes_every_stored_syntax() {
    let gw = Gateway::start("").await;
    let dir = tempfile::tempdir().unwrap();
    let made = make(dir.path());
    stow_all(gw.http_port, &made).await;

    let mut entries = Vec::new();
    for instance in &made.instances {
        let (name, sop) = (field(instance, "name"), field(instance, "sop"));
        let url = format!(
            "/dicomweb/studies/{}/series/{}/instances/{sop}",
            made.study, made.series
        );
        // As stored: the very bytes that were sent (a deflated data set stays deflated).
        let as_stored = get(
            gw.http_port,
            &url,
            "multipart/related; type=\"application/dicom\"; transfer-syntax=*",
        )
        .await;
        assert_eq!(as_stored.status, 200, "{name} as stored");
        let parts = multipart_parts(&as_stored);
        assert_eq!(parts.len(), 1, "{name}");
        assert!(
            parts[0] == std::fs::read(field(instance, "sent")).unwrap(),
            "{name}: not the stored bytes"
        );

        // Default syntax: Explicit VR Little Endian, decoded here (PS3.18 8.7.3.5.2).
        let got = default_syntax_part(gw.http_port, &url, name, dir.path()).await;
        entries.push(serde_json::json!({
            "source": field(instance, "source"),
            "got": got,
            "tolerance": instance["tolerance"],
        }));

        let rows = instance["rows"].as_u64().unwrap() as u32;
        let columns = instance["columns"].as_u64().unwrap() as u32;
        // Decoded frames: native pixels, 16 bits little endian (a deflated instance's
        // inflated here: the stored bytes are the deflated data set).
        let frame = first_frame(gw.http_port, &url, name).await;
        assert_eq!(frame.len() as u32, rows * columns * 2, "{name} frame size");
        entries.push(raw_frame_entry(dir.path(), name, instance, &frame));
        if field(instance, "transfer_syntax") == DEFLATED {
            // Pixel Data bulk data (PS3.18 10.4.1.1.5): the inflated value, bare and in a
            // multipart body.
            let bulk = format!("{url}/bulkdata/7FE00010");
            let bare = get(gw.http_port, &bulk, "application/octet-stream").await;
            assert_eq!(bare.status, 200, "{name} bulk data: {}", bare.text());
            assert!(bare.body == frame, "{name}: bulk data is not the pixels");
            let parts = get(
                gw.http_port,
                &bulk,
                "multipart/related; type=\"application/octet-stream\"",
            )
            .await;
            assert_eq!(parts.status, 200, "{name} bulk data: {}", parts.text());
            assert!(
                multipart_parts(&parts)[0] == frame,
                "{name}: bulk data part"
            );
        }

        // Rendered (PNG, full size) and thumbnail (JPEG).
        let rendered = get(gw.http_port, &format!("{url}/rendered"), "image/png").await;
        assert_eq!(rendered.status, 200, "{name} rendered: {}", rendered.text());
        assert_eq!(rendered.header("Content-Type"), Some("image/png"), "{name}");
        assert!(rendered.body.starts_with(b"\x89PNG\r\n\x1a\n"), "{name}");
        // IHDR: width and height, big endian, after the signature and chunk header.
        let size = |at: usize| u32::from_be_bytes(rendered.body[at..at + 4].try_into().unwrap());
        assert_eq!(
            (size(16), size(20)),
            (columns, rows),
            "{name} rendered size"
        );
        let thumbnail = get(gw.http_port, &format!("{url}/thumbnail"), "image/jpeg").await;
        assert_eq!(thumbnail.status, 200, "{name} thumbnail");
        assert!(
            thumbnail.body.starts_with(&[0xFF, 0xD8]),
            "{name} thumbnail"
        );
    }
    assert_pixels(dir.path(), &entries);
    gw.stop().await;
}

/// Store every instance made: the compressed ones by C-STORE (DCMTK dcmsend, told never to
/// decompress: each file goes in its own syntax), the deflated one by STOW-RS (DCMTK inflates
/// it before sending, see issue 13).
async fn store_all(gw: &Gateway, made: &Made) {
    let (deflated, compressed): (Vec<_>, Vec<_>) = made
        .instances
        .iter()
        .partition(|i| field(i, "transfer_syntax") == DEFLATED);
    let mut args: Vec<String> = ["-dn", "-aet", "TEST", "-aec", "BEELDBRUG", "127.0.0.1"]
        .map(String::from)
        .to_vec();
    args.push(gw.port.to_string());
    args.extend(compressed.iter().map(|i| field(i, "sent").to_string()));
    let store = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        dcmtk("dcmsend", &args)
    })
    .await
    .unwrap();
    assert!(
        store.status.success(),
        "dcmsend: {}",
        String::from_utf8_lossy(&store.stderr)
    );
    let deflated_files: Vec<&Path> = deflated
        .iter()
        .map(|i| Path::new(field(i, "sent")))
        .collect();
    assert_eq!(stow(gw.http_port, &deflated_files).await.status, 200);
}

/// Pair each made instance with the received file named after its SOP Instance UID (DCMTK
/// getscu and storescp prefix a modality code).
fn received_pairs(made: &Made, dir: &Path, log: &str) -> Vec<serde_json::Value> {
    let received: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    assert_eq!(received.len(), made.instances.len(), "{received:?} {log}");
    made.instances
        .iter()
        .map(|instance| {
            let sop = field(instance, "sop");
            let got = received
                .iter()
                .find(|p| p.file_name().unwrap().to_string_lossy().ends_with(sop))
                .unwrap_or_else(|| panic!("{sop} not received: {log}"));
            serde_json::json!({
                "source": field(instance, "source"),
                "got": got,
                "tolerance": instance["tolerance"],
                "uncompressed": true,
            })
        })
        .collect()
}

/// C-GET of the whole study by DCMTK `getscu` proposing only uncompressed syntaxes (`-xe`):
/// every instance arrives, re-encoded by beeldbrug, pixel-equal to its source. Before issue
/// 13 this ended in "Out of Resources – Sub-operations" with nothing received.
#[tokio::test(flavor = "multi_thread")]
async fn getscu_proposing_only_uncompressed_receives_every_instance_decoded() {
    let gw = Gateway::start("").await;
    let dir = tempfile::tempdir().unwrap();
    let made = make(dir.path());
    store_all(&gw, &made).await;

    let out_dir = dir.path().join("received");
    let log = get_study(&gw, &made.study, "-xe", &out_dir).await;
    let entries = received_pairs(&made, &out_dir, &log);
    assert_pixels(dir.path(), &entries);
    gw.stop().await;
}

/// A C-GET SCU that proposes for the storage sub-operations only a syntax beeldbrug cannot
/// produce (HTJ2K lossless, 1.2.840.10008.1.2.4.201: the `openjp2` crate has no HTJ2K
/// encoder; pynetdicom, since DCMTK 3.6.7 does not know the syntax) gets no bytes and a
/// final response with status A702 and the instance in its Failed SOP Instance UID List
/// (PS3.4 C.4.3.1.3.1, C.4.3.3: the sub-operation fails before anything is sent).
#[tokio::test(flavor = "multi_thread")]
async fn c_get_of_a_syntax_that_cannot_be_produced_fails_with_the_failed_sop_list() {
    const HTJ2K_LOSSLESS: &str = "1.2.840.10008.1.2.4.201";
    let gw = Gateway::start("").await;
    let dir = tempfile::tempdir().unwrap();
    let made = make(dir.path());
    store_all(&gw, &made).await;
    // Any of them: none is stored as HTJ2K, and none can be encoded to it.
    let sop = field(&made.instances[0], "sop");
    let report = common::c_get_one(
        gw.port,
        [&made.study, &made.series, sop],
        Some(HTJ2K_LOSSLESS),
    )
    .await;
    assert_eq!(report["received"], serde_json::json!([]), "{report}");
    let statuses = report["statuses"].as_array().expect("statuses");
    assert_eq!(
        statuses.last(),
        Some(&serde_json::json!(0xA702)),
        "{report}"
    );
    assert_eq!(report["counts"]["failed"], 1, "{report}");
    assert_eq!(report["failed_sops"], serde_json::json!([sop]), "{report}");
    gw.stop().await;
}

/// The first frame of the instance at `url` (WADO-RS `/frames/1`, native pixels), which
/// must be answered with 200 (`what` names the instance in a failure).
async fn first_frame(port: u16, url: &str, what: &str) -> Vec<u8> {
    let frames = get(
        port,
        &format!("{url}/frames/1"),
        "multipart/related; type=\"application/octet-stream\"",
    )
    .await;
    assert_eq!(frames.status, 200, "{what} frames: {}", frames.text());
    multipart_parts(&frames).remove(0)
}

/// getscu of `study` from the gateway proposing the syntaxes `syntax_flag` asks for (`-xe`,
/// `+xt`, ...), into `out_dir` (made here), which must succeed: its log.
async fn get_study(gw: &Gateway, study: &str, syntax_flag: &str, out_dir: &Path) -> String {
    std::fs::create_dir(out_dir).unwrap();
    let args: Vec<String> = [
        syntax_flag,
        "-to",
        "20",
        "-ta",
        "20",
        "-td",
        "60",
        "-aet",
        "TEST",
        "-aec",
        "BEELDBRUG",
        "-od",
        out_dir.to_str().unwrap(),
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        &format!("StudyInstanceUID={study}"),
        "127.0.0.1",
        &gw.port.to_string(),
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let get = run_tool("getscu", args).await;
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&get.stdout),
        String::from_utf8_lossy(&get.stderr)
    );
    assert!(get.status.success(), "getscu {syntax_flag}: {log}");
    log
}

/// The gateway's configuration of the C-MOVE destination "DEST" listening on `port`.
fn dest_peer(port: u16) -> String {
    format!("[[dimse.peers]]\nae_title = \"DEST\"\nhost = \"127.0.0.1\"\nport = {port}\n")
}

/// A DCMTK storescp as C-MOVE destination "DEST" with `options` (none: uncompressed
/// syntaxes only), writing into `dir/received`: the process, its port, that directory.
async fn destination(dir: &Path, options: &[&str]) -> (PeerProcess, u16, PathBuf) {
    let out_dir = dir.join("received");
    std::fs::create_dir(&out_dir).unwrap();
    let dest_port = common::free_port();
    let mut args: Vec<String> = options.iter().map(|o| o.to_string()).collect();
    args.extend(
        [
            "-aet",
            "DEST",
            "--output-directory",
            out_dir.to_str().unwrap(),
        ]
        .map(String::from),
    );
    args.push(dest_port.to_string());
    let mut storescp =
        PeerProcess::spawn("storescp", &common::require_tool("storescp"), &args, dir);
    storescp.wait_for_port(dest_port).await;
    (storescp, dest_port, out_dir)
}

/// movescu of `study` from the gateway to "DEST", which must succeed: its log and the
/// destination's.
async fn move_study(gw: &Gateway, study: &str, storescp: &PeerProcess) -> String {
    let args: Vec<String> = [
        "-aet",
        "TEST",
        "-aec",
        "BEELDBRUG",
        "-aem",
        "DEST",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        &format!("StudyInstanceUID={study}"),
        "127.0.0.1",
        &gw.port.to_string(),
    ]
    .map(String::from)
    .to_vec();
    let run = run_tool("movescu", args).await;
    let log = format!(
        "{}{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr),
        storescp.log_tail()
    );
    assert!(run.status.success(), "movescu: {log}");
    log
}

/// C-MOVE of the whole study to a DCMTK storescp left on its defaults (uncompressed syntaxes
/// only): every instance arrives decoded, pixel-equal to its source.
#[tokio::test(flavor = "multi_thread")]
async fn movescu_to_an_uncompressed_only_destination_delivers_every_instance_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let (storescp, dest_port, out_dir) = destination(dir.path(), &[]).await;
    let gw = Gateway::start(&dest_peer(dest_port)).await;
    let made = make(dir.path());
    store_all(&gw, &made).await;
    let log = move_study(&gw, &made.study, &storescp).await;
    let entries = received_pairs(&made, &out_dir, &log);
    assert_pixels(dir.path(), &entries);
    gw.stop().await;
}

/// Deflate in (issue 13): a deflated instance arrives by C-STORE (pynetdicom) and by STOW-RS,
/// is stored deflated and indexed (QIDO-RS finds it); a truncated or
/// corrupted deflate stream is refused cleanly (409, FailureReason 0xC000) and the gateway
/// goes on serving.
#[tokio::test(flavor = "multi_thread")]
async fn deflated_instances_are_indexed_and_broken_streams_refused() {
    let gw = Gateway::start("").await;
    let dir = tempfile::tempdir().unwrap();
    let made = make(dir.path());
    let deflated = made
        .instances
        .iter()
        .find(|i| field(i, "transfer_syntax") == DEFLATED)
        .expect("a deflated instance");
    let bytes = std::fs::read(field(deflated, "sent")).unwrap();
    // The data set starts after the meta group (its length at bytes 140..144, PS3.10 7.1):
    // cut the deflate stream short, or flip bits in its first block header and code tables.
    let group_len = u32::from_le_bytes(bytes[140..144].try_into().unwrap()) as usize;
    let meta_end = 144 + group_len;
    let truncated = dir.path().join("truncated.dcm");
    std::fs::write(&truncated, &bytes[..bytes.len() - 100]).unwrap();
    let mut corrupt = bytes.clone();
    for b in &mut corrupt[meta_end..meta_end + 16] {
        *b ^= 0x5A;
    }
    let corrupted = dir.path().join("corrupted.dcm");
    std::fs::write(&corrupted, &corrupt).unwrap();
    for broken in [&truncated, &corrupted] {
        let refused = stow(gw.http_port, &[broken.as_path()]).await;
        assert_eq!(
            refused.status,
            409,
            "{}: {}",
            broken.display(),
            refused.text()
        );
        let failed = &refused.json()["00081198"]["Value"][0];
        assert_eq!(failed["00081197"]["Value"][0], 0xC000, "{}", refused.text());
    }
    // C-STORE in Deflated Explicit VR LE: pynetdicom proposes the file's own syntax only (-cx)
    // and sends the data set deflated (DCMTK storescu would inflate it first).
    let port = gw.port.to_string();
    let file = field(deflated, "sent").to_string();
    let store = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args(["-m", "pynetdicom", "storescu", "-cx", "-d"])
            .args([
                "-aet",
                "TEST",
                "-aec",
                "BEELDBRUG",
                "127.0.0.1",
                &port,
                &file,
            ])
            .output()
            .expect("run pynetdicom storescu")
    })
    .await
    .unwrap();
    let log = String::from_utf8_lossy(&store.stderr).to_string();
    assert!(
        log.contains("Deflated Explicit VR Little Endian") && log.contains("Accepted"),
        "the context was not deflated: {log}"
    );
    assert!(
        store.status.success() && log.contains("Status: 0x0000"),
        "C-STORE: {log}"
    );
    // Stored as received, deflated; decoded for Explicit VR LE.
    let url = format!(
        "/dicomweb/studies/{}/series/{}/instances/{}",
        made.study,
        made.series,
        field(deflated, "sop")
    );
    let as_stored = get(
        gw.http_port,
        &url,
        "multipart/related; type=\"application/dicom\"; transfer-syntax=*",
    )
    .await;
    assert!(
        String::from_utf8_lossy(&as_stored.body).contains(&format!("transfer-syntax={DEFLATED}")),
        "not stored deflated"
    );
    let default = get(
        gw.http_port,
        &url,
        "multipart/related; type=\"application/dicom\"",
    )
    .await;
    assert_eq!(default.status, 200, "{}", default.text());
    let got = dir.path().join("c-store-deflated.dcm");
    std::fs::write(&got, &multipart_parts(&default)[0]).unwrap();
    assert_pixels(
        dir.path(),
        &[serde_json::json!({ "source": field(deflated, "source"), "got": got })],
    );
    // STOW-RS of the same instance replaces it.
    let stored = stow(gw.http_port, &[Path::new(field(deflated, "sent"))]).await;
    assert_eq!(stored.status, 200, "{}", stored.text());
    let found = request(
        gw.http_port,
        "GET",
        &format!(
            "/dicomweb/studies/{}/instances?SOPInstanceUID={}",
            made.study,
            field(deflated, "sop")
        ),
        &[("Accept", "application/dicom+json")],
        b"",
    )
    .await;
    assert_eq!(found.status, 200, "{}", found.text());
    let found = found.json();
    assert_eq!(found.as_array().map(Vec::len), Some(1), "{found}");
    // Attributes read from the inflated data set.
    assert_eq!(found[0]["00280010"]["Value"][0], 96, "{found}");
    assert_eq!(found[0]["00200013"]["Value"][0], 7, "{found}");
    gw.stop().await;
}

/// Issue 13: a truncated or garbled codestream inside a well-formed data set (stored as is:
/// ingest does not decode) fails the request that decodes it, cleanly: never a panic, never a
/// hung response, and the gateway goes on serving.
#[tokio::test(flavor = "multi_thread")]
async fn broken_codestreams_fail_cleanly_on_every_decoding_path() {
    let gw = Gateway::start("").await;
    let dir = tempfile::tempdir().unwrap();
    let made = make(dir.path());
    let out = python(&["broken", dir.path().to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let broken: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let files: Vec<&Path> = broken.iter().map(|b| Path::new(field(b, "sent"))).collect();
    let stored = stow(gw.http_port, &files).await;
    assert_eq!(stored.status, 200, "{}", stored.text());
    for instance in &broken {
        let (name, sop) = (field(instance, "name"), field(instance, "sop"));
        let url = format!(
            "/dicomweb/studies/{}/series/{}/instances/{sop}",
            made.study, made.series
        );
        for (path, accept) in [
            (url.clone(), "multipart/related; type=\"application/dicom\""),
            (
                format!("{url}/frames/1"),
                "multipart/related; type=\"application/octet-stream\"",
            ),
            (format!("{url}/rendered"), "image/png"),
        ] {
            let answer =
                tokio::time::timeout(Duration::from_secs(30), get(gw.http_port, &path, accept))
                    .await
                    .unwrap_or_else(|_| panic!("{name} {path}: no answer"));
            // A decoder may make something of a garbled stream; of a truncated one no whole
            // answer: an error status, or a multipart body broken off before its closing
            // delimiter (the client sees a failed transfer, PS3.18 8.7.1.2 framing).
            if name.starts_with("truncated") {
                let whole = answer.status == 200 && answer.body.ends_with(b"--\r\n");
                let rendered = answer.status == 200 && path.ends_with("rendered");
                assert!(
                    !whole && !rendered,
                    "{name} {path}: a whole answer from half a codestream ({})",
                    answer.status
                );
                // Decoded frames are decoded before the answer starts: a 406, as /rendered.
                if path.contains("/frames/") {
                    assert_eq!(answer.status, 406, "{name} {path}: {}", answer.text());
                }
            }
        }
    }
    // C-GET proposing only Explicit VR LE: the sub-operations of the truncated instances
    // fail (each named, PS3.4 C.4.3.1.3.1), the association goes on and ends properly.
    let out_dir = dir.path().join("received");
    std::fs::create_dir(&out_dir).unwrap();
    let args: Vec<String> = [
        "-v",
        "-xe",
        "-aet",
        "TEST",
        "-aec",
        "BEELDBRUG",
        "-od",
        out_dir.to_str().unwrap(),
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        &format!("StudyInstanceUID={}", made.study),
        "127.0.0.1",
        &gw.port.to_string(),
    ]
    .map(String::from)
    .to_vec();
    let get = run_tool("getscu", args).await;
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&get.stdout),
        String::from_utf8_lossy(&get.stderr)
    );
    let truncated = broken
        .iter()
        .filter(|b| field(b, "name").starts_with("truncated"))
        .count();
    let count = |what: &str| -> usize {
        log.lines()
            .filter_map(|l| l.split_once(&format!("Number of {what} Suboperations")))
            .filter_map(|(_, n)| n.trim_start_matches([' ', ':']).trim().parse().ok())
            .next_back()
            .unwrap_or_else(|| panic!("no {what} count: {log}"))
    };
    // Garbled JPEG-LS and JPEG lossless streams fail to decode too; J2K and RLE decoders
    // make an image of theirs.
    assert!(
        count("Failed") >= truncated,
        "each truncated instance a failed sub-operation: {log}"
    );
    assert_eq!(count("Completed") + count("Failed"), broken.len(), "{log}");
    let received = std::fs::read_dir(&out_dir).unwrap().count();
    assert_eq!(received, count("Completed"), "{log}");
    let alive =
        common::http::get(gw.http_port, "/dicomweb/studies", "application/dicom+json").await;
    assert_eq!(alive.status, 200);
    gw.stop().await;
}

/// The size of a baseline or extended JPEG (its SOF0/SOF1 segment): (width, height).
fn jpeg_size(jpeg: &[u8]) -> (u16, u16) {
    assert!(jpeg.starts_with(&[0xFF, 0xD8]), "not a JPEG");
    let mut at = 2;
    while at + 9 < jpeg.len() {
        assert_eq!(jpeg[at], 0xFF, "JPEG segment");
        let (marker, len) = (
            jpeg[at + 1],
            u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]]),
        );
        if marker == 0xC0 || marker == 0xC1 {
            let height = u16::from_be_bytes([jpeg[at + 5], jpeg[at + 6]]);
            let width = u16::from_be_bytes([jpeg[at + 7], jpeg[at + 8]]);
            return (width, height);
        }
        at += 2 + len as usize;
    }
    panic!("no SOF segment")
}

/// A Key Object Selection without pixels, made by pydicom, in the study of `made`.
fn kos(dir: &Path, made: &Made) -> (PathBuf, String) {
    let path = dir.join("kos.dcm");
    let code = r#"
import sys
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
ds = Dataset()
ds.file_meta = FileMetaDataset()
ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.59"
ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
ds.StudyInstanceUID, ds.SeriesInstanceUID = sys.argv[2], generate_uid()
ds.PatientID, ds.PatientName, ds.Modality = "CODEC-13", "Codec^Test", "KO"
ds.save_as(sys.argv[1], enforce_file_format=True)
print(ds.SeriesInstanceUID + " " + ds.SOPInstanceUID)
"#;
    let out = Command::new("python3")
        .args(["-c", code, path.to_str().unwrap(), &made.study])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids = String::from_utf8(out.stdout).unwrap().trim().to_string();
    (path, ids)
}

/// WADO-URI answers each stored syntax as Orthanc's WADO-URI does where both define the
/// answer (the stored file), decodes to Explicit VR Little Endian by default, renders a
/// JPEG within rows/columns, answers a KOS as DICOM without `contentType`, and refuses what
/// it does not offer.
#[tokio::test(flavor = "multi_thread")]
async fn wado_uri_gives_each_stored_syntax_like_orthanc() {
    let gw = Gateway::start("").await;
    let dir = tempfile::tempdir().unwrap();
    let made = make(dir.path());
    let (kos_path, kos_ids) = kos(dir.path(), &made);
    let mut sent: Vec<&Path> = made
        .instances
        .iter()
        .map(|i| Path::new(field(i, "sent")))
        .collect();
    sent.push(&kos_path);
    let stored = stow(gw.http_port, &sent).await;
    assert_eq!(stored.status, 200, "STOW-RS: {}", stored.text());
    let orthanc_dir = tempfile::tempdir().unwrap();
    let wado = serde_json::json!({ "DicomWeb": {
        "Enable": true, "Root": "/dicom-web/", "EnableWado": true, "WadoRoot": "/wado" } });
    let orthanc = Orthanc::start_configured(orthanc_dir.path(), &[], wado).await;
    for file in &sent {
        let up = request(
            orthanc.http_port,
            "POST",
            "/instances",
            &[("Content-Type", "application/dicom")],
            &std::fs::read(file).unwrap(),
        )
        .await;
        assert_eq!(up.status, 200, "Orthanc upload: {}", up.text());
    }
    let get = |port: u16, query: String| async move {
        request(port, "GET", &format!("/wado?{query}"), &[], b"").await
    };

    let mut entries = Vec::new();
    for instance in &made.instances {
        let (name, sop) = (field(instance, "name"), field(instance, "sop"));
        let ids = format!(
            "requestType=WADO&studyUID={}&seriesUID={}&objectUID={sop}",
            made.study, made.series
        );
        let ours = get(
            gw.http_port,
            format!("{ids}&contentType=application/dicom&transferSyntax=*"),
        )
        .await;
        let theirs = get(
            orthanc.http_port,
            format!("{ids}&contentType=application/dicom"),
        )
        .await;
        assert_eq!(ours.status, 200, "{name}: {}", ours.text());
        assert_eq!(theirs.status, 200, "{name} Orthanc: {}", orthanc.log_tail());
        let original = std::fs::read(field(instance, "sent")).unwrap();
        assert!(theirs.body == original, "{name}: Orthanc changed the file");
        assert!(ours.body == original, "{name}: not the stored bytes");
        assert!(
            ours.header("Content-Type")
                .unwrap()
                .starts_with("application/dicom"),
            "{name}"
        );

        let decoded = get(gw.http_port, format!("{ids}&contentType=application/dicom")).await;
        assert_eq!(decoded.status, 200, "{name} decoded: {}", decoded.text());
        let got = dir.path().join(format!("uri-{name}.dcm"));
        std::fs::write(&got, &decoded.body).unwrap();
        let mut entry = instance.clone();
        entry["got"] = serde_json::json!(got);
        entry["uncompressed"] = serde_json::json!(true);
        entries.push(entry);

        // No contentType: an image, so a JPEG (PS3.18's default; Orthanc 1.10 answers PNG);
        // rows/columns bound it with the aspect kept (80×96, as Orthanc renders it whole).
        let jpeg = get(gw.http_port, format!("{ids}&rows=48")).await;
        assert_eq!(jpeg.status, 200, "{name} rendered: {}", jpeg.text());
        assert_eq!(jpeg.header("Content-Type"), Some("image/jpeg"), "{name}");
        assert_eq!(jpeg_size(&jpeg.body), (40, 48), "{name}");
        let whole = get(gw.http_port, format!("{ids}&contentType=image/jpeg")).await;
        assert_eq!(whole.status, 200, "{name}: {}", whole.text());
        // Orthanc 1.10 (Debian) has no JPEG 2000 decoder: it renders the others.
        if !name.starts_with("j2k") {
            let theirs = get(orthanc.http_port, format!("{ids}&contentType=image/jpeg")).await;
            assert_eq!(theirs.status, 200, "{name}: {}", theirs.text());
            // Orthanc 1.10 sends a JPEG labelled image/png: compare what the bytes are.
            assert_eq!(jpeg_size(&whole.body), jpeg_size(&theirs.body), "{name}");
        }
        let png = get(
            gw.http_port,
            format!("{ids}&contentType=image/png&columns=40&windowCenter=2000&windowWidth=4000"),
        )
        .await;
        assert_eq!(
            png.header("Content-Type"),
            Some("image/png"),
            "{name}: {}",
            png.text()
        );
    }
    assert_pixels(dir.path(), &entries);

    // A KOS has no pixels: DICOM by default, the stored bytes when asked as stored.
    let (kos_series, kos_sop) = kos_ids.split_once(' ').unwrap();
    let ids = format!(
        "requestType=WADO&studyUID={}&seriesUID={kos_series}&objectUID={kos_sop}",
        made.study
    );
    let kos = get(gw.http_port, format!("{ids}&transferSyntax=*")).await;
    assert_eq!(kos.status, 200, "KOS: {}", kos.text());
    assert!(kos.body == std::fs::read(&kos_path).unwrap(), "KOS bytes");

    // Refused with a reason, nothing answered wrongly; an unknown object is not found.
    let first = field(&made.instances[0], "sop");
    let base = format!(
        "studyUID={}&seriesUID={}&objectUID={first}",
        made.study, made.series
    );
    for (query, status) in [
        (base.clone(), 400),
        (format!("requestType=WADO&{base}&anonymize=yes"), 400),
        (format!("requestType=WADO&{base}&region=0,0,0.5,0.5"), 400),
        (
            format!("requestType=WADO&{base}&contentType=video/mpeg"),
            406,
        ),
        (
            format!(
                "requestType=WADO&studyUID={}&seriesUID={}&objectUID=1.2.3.999",
                made.study, made.series
            ),
            404,
        ),
        (
            format!(
                "requestType=WADO&studyUID={}&seriesUID={kos_series}&objectUID={first}",
                made.study
            ),
            404,
        ),
    ] {
        let r = get(gw.http_port, query.clone()).await;
        assert_eq!(r.status, status, "{query}: {}", r.text());
    }
    gw.stop().await;
}

/// The instances `compress_on_request` stores: the uncompressed sources (Explicit VR LE) of
/// the lossless codecs (their encoders keep the SOP Instance UID; DCMTK's lossy ones make a
/// new one), but the JPEG 2000 lossless one as encoded.
fn uncompressed_and_j2k(made: &Made) -> Vec<(String, PathBuf, serde_json::Value)> {
    made.instances
        .iter()
        .filter(|i| i["tolerance"].as_u64() == Some(0))
        .map(|i| {
            let file = if field(i, "name") == "j2k-lossless" {
                field(i, "sent")
            } else {
                field(i, "source")
            };
            (field(i, "sop").to_string(), PathBuf::from(file), i.clone())
        })
        .collect()
}

const JPEG_LS_LOSSLESS: &str = "1.2.840.10008.1.2.4.80";
const RLE_LOSSLESS: &str = "1.2.840.10008.1.2.5";
const J2K_LOSSLESS: &str = "1.2.840.10008.1.2.4.90";

/// Compression on the wire when asked (issue 13, item 3): WADO-RS with `transfer-syntax=`
/// JPEG-LS lossless, RLE Lossless, Deflated Explicit VR LE or JPEG 2000 lossless gets each
/// instance encoded here (uncompressed ones, and a JPEG 2000 one re-encoded), decoded by
/// independent decoders (pydicom with pyjpegls / pylibjpeg-openjpeg / its RLE and Deflate
/// readers, and DCMTK `dcmdjpls`/`dcmdrle`) pixel-equal to the source; JPEG-LS is smaller
/// on the wire than Explicit VR LE; a syntax with no encoder here (lossy JPEG 2000) is a
/// 406 before the first byte; WADO-URI's `transferSyntax=` likewise. DCMTK `getscu`
/// preferring JPEG-LS (`+xt`), RLE (`+xr`) or JPEG 2000 lossless (`+xv`) receives the
/// study in it.
#[tokio::test(flavor = "multi_thread")]
async fn compress_on_request_for_wado_rs_and_c_get() {
    let gw = Gateway::start("").await;
    let dir = tempfile::tempdir().unwrap();
    let made = make(dir.path());
    let stored = uncompressed_and_j2k(&made);
    let files: Vec<&Path> = stored.iter().map(|(_, p, _)| p.as_path()).collect();
    let stow_answer = stow(gw.http_port, &files).await;
    assert_eq!(stow_answer.status, 200, "STOW-RS: {}", stow_answer.text());

    let mut entries = Vec::new();
    let mut bytes = std::collections::BTreeMap::<&str, usize>::new();
    for target in [
        EXPLICIT_VR_LE,
        JPEG_LS_LOSSLESS,
        RLE_LOSSLESS,
        DEFLATED,
        J2K_LOSSLESS,
    ] {
        for (sop, _, instance) in &stored {
            let name = field(instance, "name");
            let url = format!(
                "/dicomweb/studies/{}/series/{}/instances/{sop}",
                made.study, made.series
            );
            let accept =
                format!("multipart/related; type=\"application/dicom\"; transfer-syntax={target}");
            let answer = get(gw.http_port, &url, &accept).await;
            assert_eq!(answer.status, 200, "{name} as {target}: {}", answer.text());
            assert!(
                String::from_utf8_lossy(&answer.body)
                    .contains(&format!("transfer-syntax={target}")),
                "{name}: part not in {target}"
            );
            let part = multipart_parts(&answer).remove(0);
            *bytes.entry(target).or_default() += part.len();
            if target == EXPLICIT_VR_LE {
                continue;
            }
            let got = dir.path().join(format!("wire-{name}-{target}.dcm"));
            std::fs::write(&got, &part).unwrap();
            entries.push(serde_json::json!({
                "source": field(instance, "source"),
                "got": got,
                "tolerance": instance["tolerance"],
                "expect_ts": target,
            }));
            // DCMTK decodes it too.
            let tool = match target {
                JPEG_LS_LOSSLESS => "dcmdjpls",
                RLE_LOSSLESS => "dcmdrle",
                _ => continue,
            };
            let decoded = dir.path().join(format!("dcmtk-{name}-{target}.dcm"));
            let out = run_tool(
                tool,
                vec![got.display().to_string(), decoded.display().to_string()],
            )
            .await;
            assert!(
                out.status.success(),
                "{tool} {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            entries.push(serde_json::json!({
                "source": field(instance, "source"),
                "got": decoded,
                "tolerance": instance["tolerance"],
                "uncompressed": true,
            }));
        }
    }
    // WADO-URI (PS3.18 9) asks the same way: transferSyntax=.
    for (sop, _, instance) in &stored {
        let name = field(instance, "name");
        let url = format!(
            "/wado?requestType=WADO&studyUID={}&seriesUID={}&objectUID={sop}\
             &contentType=application%2Fdicom&transferSyntax={JPEG_LS_LOSSLESS}",
            made.study, made.series
        );
        let answer = request(gw.http_port, "GET", &url, &[], b"").await;
        assert_eq!(answer.status, 200, "WADO-URI {name}: {}", answer.text());
        let got = dir.path().join(format!("uri-{name}-jls.dcm"));
        std::fs::write(&got, &answer.body).unwrap();
        entries.push(serde_json::json!({
            "source": field(instance, "source"),
            "got": got,
            "tolerance": 0,
            "expect_ts": JPEG_LS_LOSSLESS,
        }));
    }
    assert_pixels(dir.path(), &entries);
    eprintln!("bytes on the wire per syntax: {bytes:?}");
    assert!(
        bytes[JPEG_LS_LOSSLESS] * 3 < bytes[EXPLICIT_VR_LE] * 2,
        "JPEG-LS not smaller: {bytes:?}"
    );

    // No lossy JPEG 2000 encoder: 406 for the study, before the first byte.
    let study = format!("/dicomweb/studies/{}", made.study);
    let j2k = get(
        gw.http_port,
        &study,
        "multipart/related; type=\"application/dicom\"; transfer-syntax=1.2.840.10008.1.2.4.91",
    )
    .await;
    assert_eq!(j2k.status, 406, "{}", j2k.text());

    // C-GET by a peer preferring JPEG-LS lossless, RLE, then JPEG 2000 lossless: the
    // study in that syntax.
    for (flag, target) in [
        ("+xt", JPEG_LS_LOSSLESS),
        ("+xr", RLE_LOSSLESS),
        ("+xv", J2K_LOSSLESS),
    ] {
        let out_dir = dir.path().join(format!("get{flag}"));
        let log = get_study(&gw, &made.study, flag, &out_dir).await;
        let lossless = Made {
            study: made.study.clone(),
            series: made.series.clone(),
            instances: stored.iter().map(|(_, _, i)| i.clone()).collect(),
        };
        let entries: Vec<serde_json::Value> = received_pairs(&lossless, &out_dir, &log)
            .into_iter()
            .map(|mut e| {
                e["uncompressed"] = false.into();
                e["expect_ts"] = target.into();
                e
            })
            .collect();
        assert_pixels(dir.path(), &entries);
    }
    gw.stop().await;
}

/// `wire_syntax` (issue 13, item 3): with `[dimse] wire_syntax` JPEG-LS lossless, a C-MOVE to
/// a DCMTK storescp that accepts JPEG-LS (`+xt`) delivers the uncompressed study in JPEG-LS,
/// pixel-equal to the source (not the JPEG 2000 instance: the wire syntax is for uncompressed
/// instances only, and storescp takes no JPEG 2000, so it is decoded); with `[dicomweb] wire_syntax`, a WADO-RS client whose Accept
/// lists Explicit VR LE first and JPEG-LS second gets JPEG-LS.
#[tokio::test(flavor = "multi_thread")]
async fn wire_syntax_is_used_toward_peers_that_accept_it() {
    let dir = tempfile::tempdir().unwrap();
    let (storescp, dest_port, out_dir) = destination(dir.path(), &["+xt"]).await;
    let gw = Gateway::start(&format!(
        "[dimse]\nwire_syntax = \"{JPEG_LS_LOSSLESS}\"\n[dicomweb]\nwire_syntax = \"{JPEG_LS_LOSSLESS}\"\n{}",
        dest_peer(dest_port)
    ))
    .await;
    let made = make(dir.path());
    let stored = uncompressed_and_j2k(&made);
    let files: Vec<&Path> = stored.iter().map(|(_, p, _)| p.as_path()).collect();
    assert_eq!(stow(gw.http_port, &files).await.status, 200);

    let log = move_study(&gw, &made.study, &storescp).await;
    let lossless = Made {
        study: made.study.clone(),
        series: made.series.clone(),
        instances: stored.iter().map(|(_, _, i)| i.clone()).collect(),
    };
    let entries: Vec<serde_json::Value> = received_pairs(&lossless, &out_dir, &log)
        .into_iter()
        .zip(&lossless.instances)
        .map(|(mut e, i)| {
            e["uncompressed"] = false.into();
            // storescp +xt takes no JPEG 2000: that instance is decoded (uncompressed comes
            // before re-encoding into another codec).
            e["expect_ts"] = if field(i, "name") == "j2k-lossless" {
                EXPLICIT_VR_LE.into()
            } else {
                JPEG_LS_LOSSLESS.into()
            };
            e
        })
        .collect();
    assert_pixels(dir.path(), &entries);

    // WADO-RS: the client lists Explicit VR LE first; the wire syntax is listed too.
    let accept = format!(
        "multipart/related; type=\"application/dicom\"; transfer-syntax={EXPLICIT_VR_LE}, \
         multipart/related; type=\"application/dicom\"; transfer-syntax={JPEG_LS_LOSSLESS}"
    );
    let (sop, _, _) = stored
        .iter()
        .find(|(_, _, i)| field(i, "name") == "rle")
        .unwrap();
    let url = format!(
        "/dicomweb/studies/{}/series/{}/instances/{sop}",
        made.study, made.series
    );
    let answer = get(gw.http_port, &url, &accept).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(
        String::from_utf8_lossy(&answer.body)
            .contains(&format!("transfer-syntax={JPEG_LS_LOSSLESS}")),
        "not the wire syntax"
    );
    // Without the wire syntax listed: the client's choice.
    let plain = get(
        gw.http_port,
        &url,
        "multipart/related; type=\"application/dicom\"",
    )
    .await;
    assert!(
        String::from_utf8_lossy(&plain.body).contains(&format!("transfer-syntax={EXPLICIT_VR_LE}"))
    );
    gw.stop().await;
}

/// The pixel bytes of a Part 10 file's native Pixel Data.
fn native_pixels(path: &Path) -> Vec<u8> {
    let obj = dicom_object::open_file(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    obj.element(dicom_dictionary_std::tags::PIXEL_DATA)
        .unwrap()
        .to_bytes()
        .unwrap()
        .into_owned()
}

/// Issue 13: the decoders we wrote (JPEG lossless, RLE) against DCMTK's encoders in every
/// shape their code tells apart (`codecs.py variants`: selection values 1-7, a point
/// transform, 8 and 16 bits, 16 bits stored, RGB, frames over several fragments): each
/// decodes through the one decode entry to the source's pixels, byte for byte, and our JPEG
/// lossless decoder (not the `jpeg-decoder` fallback) takes every one of DCMTK's streams.
#[test]
fn our_decoders_give_the_pixels_dcmtk_encoded() {
    use beeldbrug::transcode::{jpeg_lossless, transcode_file};
    let dir = tempfile::tempdir().unwrap();
    let out = python(&["variants", dir.path().to_str().unwrap()]);
    assert!(
        out.status.success(),
        "test data: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let made: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(made.len(), 42);
    for variant in &made {
        let what = field(variant, "what");
        let encoded = Path::new(field(variant, "encoded"));
        let decoded =
            transcode_file(encoded, EXPLICIT_VR_LE).unwrap_or_else(|e| panic!("{what}: {e}"));
        let path = dir.path().join("decoded.dcm");
        std::fs::write(&path, &decoded).unwrap();
        let mut want = native_pixels(Path::new(field(variant, "source")));
        if what.ends_with("pt2") {
            // A point transform of 2 drops the two low bits (T.81 H.1.2.1).
            for pair in want.chunks_exact_mut(2) {
                pair[0] &= !3;
            }
        }
        assert!(native_pixels(&path) == want, "{what}: pixels differ");
        if !what.ends_with("rle") {
            let obj = dicom_object::open_file(encoded).unwrap();
            let pixel_data = obj.element(dicom_dictionary_std::tags::PIXEL_DATA).unwrap();
            let fragments = pixel_data.value().fragments().unwrap();
            if fragments.len() > 1 && what.ends_with("fs1") {
                continue;
            }
            let bytes = if what.starts_with("grey8") || what.starts_with("rgb8") {
                1
            } else {
                2
            };
            let frame = want.len() / fragments.len();
            let mut out = vec![0; frame];
            let ours = jpeg_lossless::decode(&fragments[0], bytes, &mut out).unwrap();
            assert!(ours.is_some(), "{what}: left to jpeg-decoder");
            assert!(
                out == want[..frame],
                "{what}: our decoder's first frame differs"
            );
        }
    }
}

/// The sequential DCT JPEG decoder we wrote (JPEG Baseline and Extended, 8 and 12 bits)
/// against encoders we did not (`codecs.py lossy`: DCMTK `dcmcjpeg +ee` and `+eb` of grey
/// 12-bit, 8-bit, an odd size, three frames one fragment each and over 1 KB fragments, RGB
/// kept RGB; Pillow's libjpeg with restart markers, wrapped by `img2dcm`): through the one
/// decode entry each decodes to DCMTK `dcmdjpeg`'s pixels within +-1 per sample (the
/// tolerance for IDCT rounding; both use IJG's islow arithmetic, so most are exact), and our
/// decoder (not the `jpeg-decoder` fallback) takes DCMTK's streams. YCbCr (`+s4`) is left to
/// `jpeg-decoder` (it converts colour); that path still decodes.
/// DCMTK `dcmcjpeg`'s lossy JPEG encodings and `dcmdjpeg`'s decodings of them, made in
/// `dir` (`codecs.py lossy`): {"reference", "encoded", "what", "ours"} each.
fn lossy(dir: &Path) -> Vec<serde_json::Value> {
    let out = python(&["lossy", dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "test data: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn our_jpeg_dct_decoder_gives_dcmtk_s_pixels() {
    use beeldbrug::transcode::{jpeg_dct, transcode_file};
    let dir = tempfile::tempdir().unwrap();
    let made = lossy(dir.path());
    assert_eq!(made.len(), 12);
    const TOLERANCE: i32 = 1;
    for variant in &made {
        let what = field(variant, "what");
        let encoded = Path::new(field(variant, "encoded"));
        let decoded =
            transcode_file(encoded, EXPLICIT_VR_LE).unwrap_or_else(|e| panic!("{what}: {e}"));
        let path = dir.path().join("decoded.dcm");
        std::fs::write(&path, &decoded).unwrap();
        let got = native_pixels(&path);
        let want = native_pixels(Path::new(field(variant, "reference")));
        assert_eq!(got.len(), want.len(), "{what}: size");
        let wide = !what.contains('8');
        let samples = |b: &[u8]| -> Vec<i32> {
            if wide {
                b.chunks_exact(2)
                    .map(|p| u16::from_le_bytes([p[0], p[1]]) as i32)
                    .collect()
            } else {
                b.iter().map(|&v| v as i32).collect()
            }
        };
        let (got, want) = (samples(&got), samples(&want));
        let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).max();
        let differing = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        eprintln!(
            "{what}: largest difference from dcmdjpeg {worst:?}, {differing} of {} samples differ",
            got.len()
        );
        if variant["ours"] != true {
            continue;
        }
        assert!(
            worst.unwrap() <= TOLERANCE,
            "{what}: differs from dcmdjpeg by {worst:?}"
        );
        let obj = dicom_object::open_file(encoded).unwrap();
        let pixel_data = obj.element(dicom_dictionary_std::tags::PIXEL_DATA).unwrap();
        let fragments = pixel_data.value().fragments().unwrap();
        let frames = if what.starts_with("multi") { 3 } else { 1 };
        if fragments.len() != frames {
            continue;
        }
        let bytes = if wide { 2 } else { 1 };
        let mut out = vec![0; got.len() * bytes / frames];
        let ours = jpeg_dct::decode(&fragments[0], bytes, &mut out).unwrap();
        assert!(ours.is_some(), "{what}: left to jpeg-decoder");
    }
}

/// 12-bit JPEG extended (`.4.51`, DCMTK `dcmcjpeg +ee`) stored by STOW-RS comes back through
/// WADO-RS as decoded frames equal to DCMTK `dcmdjpeg`'s pixels (within the IDCT's ±1) and
/// as a rendered PNG of its size: dicom-rs's JPEG decoder cannot read 12-bit DCT, ours can.
#[tokio::test(flavor = "multi_thread")]
async fn twelve_bit_jpeg_frames_and_rendered_through_wado_rs() {
    use dicom_dictionary_std::tags;
    let dir = tempfile::tempdir().unwrap();
    let made = lossy(dir.path());
    let twelve: Vec<&serde_json::Value> = made
        .iter()
        .filter(|v| ["grey12 ee", "odd12 ee", "multi12 ee"].contains(&field(v, "what")))
        .collect();
    assert_eq!(twelve.len(), 3);
    let gw = Gateway::start("").await;
    let files: Vec<&Path> = twelve
        .iter()
        .map(|v| Path::new(field(v, "encoded")))
        .collect();
    let stored = stow(gw.http_port, &files).await;
    assert_eq!(stored.status, 200, "STOW-RS: {}", stored.text());
    for variant in twelve {
        let what = field(variant, "what");
        let obj = dicom_object::open_file(field(variant, "encoded")).unwrap();
        let text = |tag| {
            obj.element(tag)
                .unwrap()
                .to_str()
                .unwrap()
                .trim()
                .to_string()
        };
        let number = |tag| obj.element(tag).unwrap().to_int::<u32>().unwrap();
        assert_eq!(
            obj.meta().transfer_syntax().trim_end_matches('\0'),
            "1.2.840.10008.1.2.4.51"
        );
        let url = format!(
            "/dicomweb/studies/{}/series/{}/instances/{}",
            text(tags::STUDY_INSTANCE_UID),
            text(tags::SERIES_INSTANCE_UID),
            text(tags::SOP_INSTANCE_UID)
        );
        let (rows, columns) = (number(tags::ROWS), number(tags::COLUMNS));
        let reference = native_pixels(Path::new(field(variant, "reference")));
        let frame_len = (rows * columns * 2) as usize;
        let frame = first_frame(gw.http_port, &url, what).await;
        assert_eq!(frame.len(), frame_len, "{what}: frame size");
        let worst = frame
            .chunks_exact(2)
            .zip(reference[..frame_len].chunks_exact(2))
            .map(|(a, b)| {
                (u16::from_le_bytes([a[0], a[1]]) as i32 - u16::from_le_bytes([b[0], b[1]]) as i32)
                    .abs()
            })
            .max()
            .unwrap();
        assert!(
            worst <= 1,
            "{what}: frame 1 differs from dcmdjpeg by {worst}"
        );
        let rendered = get(gw.http_port, &format!("{url}/rendered"), "image/png").await;
        assert_eq!(rendered.status, 200, "{what} rendered: {}", rendered.text());
        let size = |at: usize| u32::from_be_bytes(rendered.body[at..at + 4].try_into().unwrap());
        assert_eq!(
            (size(16), size(20)),
            (columns, rows),
            "{what} rendered size"
        );
    }
    gw.stop().await;
}

/// JPEG baseline (`.4.50`, 8-bit grey and RGB) and extended (`.4.51`, 12-bit, one frame and
/// three frames over 1 KB fragments) made by DCMTK `dcmcjpeg`, stored by DCMTK `storescu`
/// proposing their own syntax (`-xy`, `-xx`) and kept in it, then retrieved by `getscu`
/// proposing only Explicit VR LE and by C-MOVE to a `storescp` that accepts only uncompressed
/// syntaxes: every instance arrives decoded by beeldbrug, within 1 of DCMTK `dcmdjpeg`'s
/// pixels (the IDCT's rounding), checked with pydicom.
#[tokio::test(flavor = "multi_thread")]
async fn lossy_jpeg_through_c_get_and_c_move_as_dcmdjpeg_decodes_it() {
    use dicom_dictionary_std::tags;
    let dir = tempfile::tempdir().unwrap();
    let (storescp, dest_port, moved_dir) = destination(dir.path(), &[]).await;
    let gw = Gateway::start(&dest_peer(dest_port)).await;
    let chosen = ["grey8 eb", "rgb8 eb-cr", "grey12 ee", "multi12 ee-fs1"];
    let mut sent = Vec::new();
    for variant in lossy(dir.path()) {
        if !chosen.contains(&field(&variant, "what")) {
            continue;
        }
        let obj = dicom_object::open_file(field(&variant, "encoded")).unwrap();
        let text = |tag| {
            obj.element(tag)
                .unwrap()
                .to_str()
                .unwrap()
                .trim()
                .to_string()
        };
        let syntax = obj
            .meta()
            .transfer_syntax()
            .trim_end_matches('\0')
            .to_string();
        // One study per source: a Made of its own, its pixels as dcmdjpeg decodes them.
        let made = Made {
            study: text(tags::STUDY_INSTANCE_UID),
            series: text(tags::SERIES_INSTANCE_UID),
            instances: vec![serde_json::json!({
                "sop": text(tags::SOP_INSTANCE_UID),
                "source": field(&variant, "reference"),
                "sent": field(&variant, "encoded"),
                "tolerance": 1,
            })],
        };
        sent.push((field(&variant, "what").to_string(), syntax, made));
    }
    assert_eq!(sent.len(), chosen.len());
    for (flag, syntax) in [
        ("-xy", "1.2.840.10008.1.2.4.50"),
        ("-xx", "1.2.840.10008.1.2.4.51"),
    ] {
        let mut args: Vec<String> = [flag, "-aet", "TEST", "-aec", "BEELDBRUG", "127.0.0.1"]
            .map(String::from)
            .to_vec();
        args.push(gw.port.to_string());
        let files = sent.iter().filter(|(_, ts, _)| ts == syntax);
        args.extend(files.map(|(_, _, made)| field(&made.instances[0], "sent").to_string()));
        let store = run_tool("storescu", args).await;
        assert!(
            store.status.success(),
            "storescu {flag}: {}",
            String::from_utf8_lossy(&store.stderr)
        );
    }

    let mut entries = Vec::new();
    let mut move_logs = String::new();
    for (n, (what, syntax, made)) in sent.iter().enumerate() {
        // Stored as sent: the lossy syntax, not decompressed by storescu on the way.
        let url = format!(
            "/dicomweb/studies/{}/series/{}/instances/{}",
            made.study,
            made.series,
            field(&made.instances[0], "sop")
        );
        let as_stored = get(
            gw.http_port,
            &url,
            "multipart/related; type=\"application/dicom\"; transfer-syntax=*",
        )
        .await;
        assert_eq!(as_stored.status, 200, "{what} as stored");
        let stored = dir.path().join(format!("stored-{n}.dcm"));
        std::fs::write(&stored, multipart_parts(&as_stored).remove(0)).unwrap();
        let stored = dicom_object::open_file(&stored).unwrap();
        assert_eq!(
            stored.meta().transfer_syntax().trim_end_matches('\0'),
            syntax,
            "{what} stored"
        );

        let got_dir = dir.path().join(format!("got-{n}"));
        let log = get_study(&gw, &made.study, "-xe", &got_dir).await;
        entries.extend(received_pairs(made, &got_dir, &log));
        move_logs.push_str(&move_study(&gw, &made.study, &storescp).await);
    }
    let all = Made {
        study: String::new(),
        series: String::new(),
        instances: sent
            .iter()
            .map(|(_, _, m)| m.instances[0].clone())
            .collect(),
    };
    entries.extend(received_pairs(&all, &moved_dir, &move_logs));
    assert_eq!(entries.len(), 2 * chosen.len());
    assert_pixels(dir.path(), &entries);
    gw.stop().await;
}

/// The `beeldbrug` binary itself (jemalloc its global allocator; the other tests run the
/// gateway in process, on the system allocator) serves a 512 x 512 JPEG 2000 lossless CT
/// (pydicom with pylibjpeg-openjpeg, as `benches/codecs_study.sh` makes its study) decoded by
/// WADO-RS, pixel-equal to pydicom's decoding: `openjp2` frees never-decoded code blocks of an
/// image this size with a null pointer, which corrupted jemalloc and aborted the server at the
/// first instance (`src/main.rs`).
#[tokio::test(flavor = "multi_thread")]
async fn the_binary_serves_a_512_square_jpeg_2000_ct_decoded() {
    use dicom_dictionary_std::tags;
    let dir = tempfile::tempdir().unwrap();
    let study_dir = dir.path().join("study");
    std::fs::create_dir(&study_dir).unwrap();
    let out = python(&["study", study_dir.to_str().unwrap(), "j2k", "0.2", "1"]);
    assert!(
        out.status.success(),
        "test data: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = study_dir.join("000000.dcm");
    let (dimse_port, http_port) = (common::free_port(), common::free_port());
    let config = dir.path().join("beeldbrug.toml");
    std::fs::write(
        &config,
        format!(
            "[dimse]\nlisten = \"127.0.0.1:{dimse_port}\"\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n\
             [storage]\ndata_dir = {:?}\n",
            dir.path().join("data")
        ),
    )
    .unwrap();
    let args = ["serve", "--config", config.to_str().unwrap()].map(String::from);
    let mut server = PeerProcess::spawn(
        "beeldbrug",
        Path::new(env!("CARGO_BIN_EXE_beeldbrug")),
        &args,
        dir.path(),
    );
    server.wait_for_port(http_port).await;
    let stored = stow(http_port, &[&file]).await;
    assert_eq!(stored.status, 200, "STOW-RS: {}", stored.text());
    let obj = dicom_object::open_file(&file).unwrap();
    let text = |tag| {
        obj.element(tag)
            .unwrap()
            .to_str()
            .unwrap()
            .trim()
            .to_string()
    };
    let url = format!(
        "/dicomweb/studies/{}/series/{}/instances/{}",
        text(tags::STUDY_INSTANCE_UID),
        text(tags::SERIES_INSTANCE_UID),
        text(tags::SOP_INSTANCE_UID)
    );
    let got = default_syntax_part(http_port, &url, "j2k-512", dir.path()).await;
    let entry = serde_json::json!({
        "source": file,
        "got": got,
        "tolerance": 0,
        "uncompressed": true,
    });
    assert_pixels(dir.path(), &[entry]);
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", http_port))
            .await
            .is_ok(),
        "the server died: {}",
        server.log_tail()
    );
}

/// C-STORE every instance `made` sent with pynetdicom's storescu, proposing each file's own
/// syntax only (`-cx`): DCMTK 3.6.7 knows neither HTJ2K nor JPEG XL ("Unknown Transfer
/// Syntax" from dcmsend, a failed conversion from storescu). Every store must answer 0x0000.
async fn c_store_by_pynetdicom(port: u16, made: &Made) {
    let mut args: Vec<String> = ["-m", "pynetdicom", "storescu", "-cx", "-d"]
        .map(String::from)
        .to_vec();
    args.extend(["-aet", "TEST", "-aec", "BEELDBRUG", "127.0.0.1"].map(String::from));
    args.push(port.to_string());
    args.extend(made.instances.iter().map(|i| field(i, "sent").to_string()));
    let store = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::task::spawn_blocking(move || {
            Command::new("python3")
                .args(&args)
                .output()
                .expect("run pynetdicom storescu")
        }),
    )
    .await
    .expect("pynetdicom storescu hung")
    .unwrap();
    let log = String::from_utf8_lossy(&store.stderr).to_string();
    assert!(store.status.success(), "C-STORE: {log}");
    // Each file's own syntax only was proposed (pynetdicom logs them by name): all accepted,
    // no uncompressed context (Deflated Explicit VR Little Endian is a file's own syntax).
    let uncompressed_proposed = log.lines().any(|l| {
        l.ends_with("Little Endian") && !l.ends_with("Deflated Explicit VR Little Endian")
    });
    assert!(
        log.contains("(Accepted)") && !log.contains("(Rejected") && !uncompressed_proposed,
        "contexts: {log}"
    );
    assert_eq!(
        log.matches("Status: 0x0000").count(),
        made.instances.len(),
        "not every C-STORE succeeded: {log}"
    );
}

/// One set of instances (`codecs.py COMMAND`) through every front, twice: stored by STOW-RS
/// into one gateway and by C-STORE (pynetdicom storescu) into another. From each: WADO-RS
/// default syntax (Explicit VR LE), `/frames/1` (native), `/rendered` (PNG, full size) and
/// `/thumbnail`; WADO-URI default (DICOM, uncompressed) and rendered (JPEG); C-GET by DCMTK
/// `getscu -xe` (uncompressed only) and `getscu +xt` (JPEG-LS lossless preferred: re-encoded
/// here, then decoded by pydicom with pyjpegls and by DCMTK `dcmdjpls`); C-MOVE to a DCMTK
/// storescp on its defaults (uncompressed only). Pixels per pydicom equal to the source, the
/// lossy instances within their stated tolerance.
async fn every_front(command: &str) {
    for how in ["stow-rs", "c-store"] {
        let dir = tempfile::tempdir().unwrap();
        let made = made_by(dir.path(), command);
        let dest_dir = dir.path().join("move");
        std::fs::create_dir(&dest_dir).unwrap();
        let (storescp, dest_port, moved_dir) = destination(&dest_dir, &[]).await;
        let gw = Gateway::start(&dest_peer(dest_port)).await;
        if how == "stow-rs" {
            stow_all(gw.http_port, &made).await;
        } else {
            c_store_by_pynetdicom(gw.port, &made).await;
        }
        let mut entries = Vec::new();
        for instance in &made.instances {
            let (name, sop) = (field(instance, "name"), field(instance, "sop"));
            let name = format!("{how}-{name}");
            let url = format!(
                "/dicomweb/studies/{}/series/{}/instances/{sop}",
                made.study, made.series
            );
            let as_stored = get(
                gw.http_port,
                &url,
                "multipart/related; type=\"application/dicom\"; transfer-syntax=*",
            )
            .await;
            assert_eq!(as_stored.status, 200, "{name} as stored");
            assert!(
                String::from_utf8_lossy(&as_stored.body).contains(&format!(
                    "transfer-syntax={}",
                    field(instance, "transfer_syntax")
                )),
                "{name}: not as stored"
            );
            let got = default_syntax_part(gw.http_port, &url, &name, dir.path()).await;
            entries.push(serde_json::json!({
                "source": field(instance, "source"),
                "got": got,
                "tolerance": instance["tolerance"],
                "uncompressed": true,
            }));
            let rows = instance["rows"].as_u64().unwrap() as usize;
            let columns = instance["columns"].as_u64().unwrap() as usize;
            let frames = get(
                gw.http_port,
                &format!("{url}/frames/1"),
                "multipart/related; type=\"application/octet-stream\"",
            )
            .await;
            assert_eq!(frames.status, 200, "{name} frames: {}", frames.text());
            let frame = multipart_parts(&frames).remove(0);
            if instance["samples"] == 1 {
                assert_eq!(
                    frame.len(),
                    rows * columns * 2,
                    "{name} frame size ({})",
                    frames.header("Content-Type").unwrap_or("")
                );
                entries.push(raw_frame_entry(dir.path(), &name, instance, &frame));
            } else {
                assert_eq!(frame.len(), rows * columns * 3, "{name} frame size");
            }
            let rendered = get(gw.http_port, &format!("{url}/rendered"), "image/png").await;
            assert_eq!(rendered.status, 200, "{name} rendered: {}", rendered.text());
            assert!(rendered.body.starts_with(b"\x89PNG\r\n\x1a\n"), "{name}");
            let size =
                |at: usize| u32::from_be_bytes(rendered.body[at..at + 4].try_into().unwrap());
            assert_eq!(
                (size(16) as usize, size(20) as usize),
                (columns, rows),
                "{name} rendered size"
            );
            let thumbnail = get(gw.http_port, &format!("{url}/thumbnail"), "image/jpeg").await;
            assert_eq!(thumbnail.status, 200, "{name} thumbnail");
            assert!(
                thumbnail.body.starts_with(&[0xFF, 0xD8]),
                "{name} thumbnail"
            );

            // WADO-URI (PS3.18 9): DICOM decoded by default, and a rendered JPEG.
            let ids = format!(
                "/wado?requestType=WADO&studyUID={}&seriesUID={}&objectUID={sop}",
                made.study, made.series
            );
            let uri = request(
                gw.http_port,
                "GET",
                &format!("{ids}&contentType=application%2Fdicom"),
                &[],
                b"",
            )
            .await;
            assert_eq!(uri.status, 200, "{name} WADO-URI: {}", uri.text());
            let got = dir.path().join(format!("uri-{name}.dcm"));
            std::fs::write(&got, &uri.body).unwrap();
            entries.push(serde_json::json!({
                "source": field(instance, "source"),
                "got": got,
                "tolerance": instance["tolerance"],
                "uncompressed": true,
            }));
            let jpeg = request(gw.http_port, "GET", &format!("{ids}&rows=48"), &[], b"").await;
            assert_eq!(
                jpeg.status,
                200,
                "{name} WADO-URI rendered: {}",
                jpeg.text()
            );
            assert_eq!(jpeg.header("Content-Type"), Some("image/jpeg"), "{name}");
            assert_eq!(jpeg_size(&jpeg.body), (40, 48), "{name}");
        }

        // C-GET proposing only uncompressed syntaxes: decoded here.
        let out_dir = dir.path().join("get-xe");
        let log = get_study(&gw, &made.study, "-xe", &out_dir).await;
        entries.extend(received_pairs(&made, &out_dir, &log));
        // C-GET preferring JPEG-LS lossless: decoded and re-encoded here; DCMTK decodes it.
        let out_dir = dir.path().join("get-xt");
        let log = get_study(&gw, &made.study, "+xt", &out_dir).await;
        for mut entry in received_pairs(&made, &out_dir, &log) {
            entry["uncompressed"] = false.into();
            entry["expect_ts"] = JPEG_LS_LOSSLESS.into();
            let got = entry["got"].as_str().unwrap().to_string();
            let decoded = format!("{got}.dcmdjpls");
            let out = run_tool("dcmdjpls", vec![got, decoded.clone()]).await;
            assert!(
                out.status.success(),
                "dcmdjpls: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let mut by_dcmtk = entry.clone();
            by_dcmtk["got"] = decoded.into();
            by_dcmtk["expect_ts"] = serde_json::Value::Null;
            by_dcmtk["uncompressed"] = true.into();
            entries.push(entry);
            entries.push(by_dcmtk);
        }
        // C-MOVE to a destination that accepts only uncompressed syntaxes.
        let log = move_study(&gw, &made.study, &storescp).await;
        entries.extend(received_pairs(&made, &moved_dir, &log));
        assert_pixels(dir.path(), &entries);
        gw.stop().await;
    }
}

/// The syntaxes of `codecs.py make` (JPEG-LS lossless by DCMTK and by pyjpegls, JPEG-LS
/// near-lossless, JPEG lossless, RLE, JPEG 2000 lossless and lossy, Deflate) through every
/// front ([`every_front`]), stored by STOW-RS and by C-STORE in their own syntax.
#[tokio::test(flavor = "multi_thread")]
async fn every_made_syntax_through_every_front() {
    every_front("make").await;
}

/// HTJ2K (`.4.201` lossless, `.4.202` lossless RPCL with TLM, `.4.203` lossy; grey 12-bit
/// and 8-bit RGB) made by OpenJPH through imagecodecs, an encoder independent of the OpenJPEG
/// port (`openjp2`) that decodes it here, each stream first checked by pylibjpeg-openjpeg,
/// through every front ([`every_front`]): pixel-equal to the source (the lossy one within 4).
#[tokio::test(flavor = "multi_thread")]
async fn htj2k_made_by_openjph_through_every_front() {
    every_front("htj2k").await;
}

/// JPEG XL (`.4.110` lossless, grey 12-bit and 8-bit RGB; `.4.112` lossy at distance 0.1)
/// made by libjxl through imagecodecs, an encoder independent of jxl-oxide that decodes it
/// here, each stream first checked by libjxl, through every front ([`every_front`]):
/// pixel-equal to the source (the lossy one within 32 of 4096 levels).
#[tokio::test(flavor = "multi_thread")]
async fn jpeg_xl_made_by_libjxl_through_every_front() {
    every_front("jpegxl").await;
}

/// WADO-RS of `url` in the default syntax: Explicit VR Little Endian, decoded by the gateway
/// (PS3.18 8.7.3.5.2); its one part written to `dir/wado-NAME.dcm`, whose path is returned.
async fn default_syntax_part(
    port: u16,
    url: &str,
    name: &str,
    dir: &std::path::Path,
) -> std::path::PathBuf {
    let default = get(port, url, "multipart/related; type=\"application/dicom\"").await;
    assert_eq!(default.status, 200, "{name} default: {}", default.text());
    assert!(
        String::from_utf8_lossy(&default.body)
            .contains(&format!("transfer-syntax={EXPLICIT_VR_LE}")),
        "{name}: part not in Explicit VR LE"
    );
    let got = dir.join(format!("wado-{name}.dcm"));
    std::fs::write(&got, &multipart_parts(&default)[0]).unwrap();
    got
}
