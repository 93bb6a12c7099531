//! Issue 13: instances in the syntaxes PACS archive in, made by independent encoders (DCMTK
//! `dcmcjpls`, `dcmcjpeg`, `dcmcrle`; pydicom with pylibjpeg-openjpeg for JPEG 2000; pydicom
//! for Deflate, see `tests/codecs/codecs.py`), stored through STOW-RS and C-STORE, then
//! retrieved decoded by WADO-RS (default syntax, `/frames`, `/rendered`, `/thumbnail`) and by
//! DCMTK `getscu` proposing only uncompressed syntaxes. Pixels are checked with pydicom: equal
//! to the source for lossless syntaxes, within the encoder's bound for lossy ones.

mod common;

use common::http::{multipart, multipart_parts, request};
use common::Gateway;
use std::path::{Path, PathBuf};
use std::process::Command;

const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
const DEFLATED: &str = "1.2.840.10008.1.2.1.99";

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/codecs/codecs.py")
}

/// Run the test data script; fail (never skip) when its Python packages are missing.
fn python(args: &[&str]) -> std::process::Output {
    let probe = Command::new("python3")
        .args(["-c", "import pydicom, numpy, pylibjpeg, openjpeg, jpeg_ls"])
        .output()
        .expect("python3 must be installed");
    assert!(
        probe.status.success(),
        "pydicom with pylibjpeg-openjpeg and pyjpegls is needed: run `pip install pydicom numpy \
         pylibjpeg pylibjpeg-openjpeg pyjpegls` (or `bash .ci/run`): {}",
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
    let out = python(&["make", dir.to_str().unwrap()]);
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
#[tokio::test(flavor = "multi_thread")]
async fn wado_rs_decodes_every_stored_syntax() {
    let gw = Gateway::start("").await;
    let dir = tempfile::tempdir().unwrap();
    let mut made = make(dir.path());
    // Deflate is not stored yet.
    made.instances
        .retain(|i| field(i, "transfer_syntax") != DEFLATED);
    let sent: Vec<&Path> = made
        .instances
        .iter()
        .map(|i| Path::new(field(i, "sent")))
        .collect();
    let stored = stow(gw.http_port, &sent).await;
    assert_eq!(stored.status, 200, "STOW-RS: {}", stored.text());

    let mut entries = Vec::new();
    for instance in &made.instances {
        let (name, sop) = (field(instance, "name"), field(instance, "sop"));
        let url = format!(
            "/dicomweb/studies/{}/series/{}/instances/{sop}",
            made.study, made.series
        );
        // As stored: the very bytes that were sent (a deflated data set stays deflated).
        let as_stored = request(
            gw.http_port,
            "GET",
            &url,
            &[(
                "Accept",
                "multipart/related; type=\"application/dicom\"; transfer-syntax=*",
            )],
            b"",
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
        let default = request(
            gw.http_port,
            "GET",
            &url,
            &[("Accept", "multipart/related; type=\"application/dicom\"")],
            b"",
        )
        .await;
        assert_eq!(default.status, 200, "{name} default: {}", default.text());
        assert!(
            String::from_utf8_lossy(&default.body)
                .contains(&format!("transfer-syntax={EXPLICIT_VR_LE}")),
            "{name}: part not in Explicit VR LE"
        );
        let got = dir.path().join(format!("wado-{name}.dcm"));
        std::fs::write(&got, &multipart_parts(&default)[0]).unwrap();
        entries.push(serde_json::json!({
            "source": field(instance, "source"),
            "got": got,
            "tolerance": instance["tolerance"],
        }));

        let rows = instance["rows"].as_u64().unwrap() as u32;
        let columns = instance["columns"].as_u64().unwrap() as u32;
        if field(instance, "transfer_syntax") != DEFLATED {
            // Decoded frames: native pixels, 16 bits little endian.
            let frames = request(
                gw.http_port,
                "GET",
                &format!("{url}/frames/1"),
                &[(
                    "Accept",
                    "multipart/related; type=\"application/octet-stream\"",
                )],
                b"",
            )
            .await;
            assert_eq!(frames.status, 200, "{name} frames: {}", frames.text());
            let frame = multipart_parts(&frames).remove(0);
            assert_eq!(frame.len() as u32, rows * columns * 2, "{name} frame size");
            let raw = dir.path().join(format!("frame-{name}.raw"));
            std::fs::write(&raw, &frame).unwrap();
            entries.push(serde_json::json!({
                "source": field(instance, "source"),
                "got": raw,
                "raw": true,
                "tolerance": instance["tolerance"],
            }));
        }

        // Rendered (PNG, full size) and thumbnail (JPEG).
        let rendered = request(
            gw.http_port,
            "GET",
            &format!("{url}/rendered"),
            &[("Accept", "image/png")],
            b"",
        )
        .await;
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
        let thumbnail = request(
            gw.http_port,
            "GET",
            &format!("{url}/thumbnail"),
            &[("Accept", "image/jpeg")],
            b"",
        )
        .await;
        assert_eq!(thumbnail.status, 200, "{name} thumbnail");
        assert!(
            thumbnail.body.starts_with(&[0xFF, 0xD8]),
            "{name} thumbnail"
        );
    }
    assert_pixels(dir.path(), &entries);
    gw.stop().await;
}
