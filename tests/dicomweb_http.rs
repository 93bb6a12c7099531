//! HTTP-level behaviour of the DICOMweb front, checked with curl (a real HTTP/2 client):
//! HTTP/2 (h2c), gzip for JSON answers only, and CORS for browser viewers.

mod common;

use common::http::{multipart_parts, request, stow_files};
use common::Gateway;
use std::process::Command;

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-s", "-S"])
        .args(args)
        .output()
        .expect("curl must be installed (apt-get install curl)");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn load(gateway: &Gateway) -> Vec<beeldbrug::testdata::GeneratedFile> {
    let data = tempfile::tempdir().unwrap();
    let files = common::generate(data.path(), false);
    let r = stow_files(gateway.http_port, &files).await;
    assert_eq!(r.status, 200, "{}", r.text());
    files
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_gzip_and_cors() {
    let gateway = Gateway::start("[dicomweb]\ncors_origins = [\"http://viewer.example\"]\n").await;
    let files = load(&gateway).await;
    let base = format!("http://127.0.0.1:{}/dicomweb", gateway.http_port);
    let url = format!("{base}/studies");
    let (h2, gzip, plain, cors, preflight) = tokio::task::spawn_blocking(move || {
        let h2 = curl(&[
            "--http2-prior-knowledge",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version}",
            &url,
        ]);
        let gzip = curl(&[
            "-D",
            "-",
            "-o",
            "/dev/null",
            "-H",
            "Accept-Encoding: gzip",
            &url,
        ]);
        let plain = curl(&["--compressed", &url]);
        let cors = curl(&[
            "-D",
            "-",
            "-o",
            "/dev/null",
            "-H",
            "Origin: http://viewer.example",
            &url,
        ]);
        let preflight = curl(&[
            "-D",
            "-",
            "-o",
            "/dev/null",
            "-X",
            "OPTIONS",
            "-H",
            "Origin: http://viewer.example",
            "-H",
            "Access-Control-Request-Method: GET",
            "-H",
            "Access-Control-Request-Headers: accept",
            &url,
        ]);
        (h2, gzip, plain, cors, preflight)
    })
    .await
    .unwrap();
    assert_eq!(h2, "2", "HTTP/2 over cleartext with prior knowledge");
    assert!(
        gzip.to_ascii_lowercase().contains("content-encoding: gzip"),
        "{gzip}"
    );
    let parsed: serde_json::Value = serde_json::from_str(&plain).expect("gzip decodes to JSON");
    assert!(!parsed.as_array().unwrap().is_empty());
    assert!(
        cors.to_ascii_lowercase()
            .contains("access-control-allow-origin: http://viewer.example"),
        "{cors}"
    );
    assert!(
        preflight
            .to_ascii_lowercase()
            .contains("access-control-allow-methods"),
        "{preflight}"
    );

    // DICOM parts are never gzipped: they are large and often compressed already.
    let url = format!("{base}/studies/{}", files[0].study_uid);
    let headers = tokio::task::spawn_blocking(move || {
        curl(&[
            "-D",
            "-",
            "-o",
            "/dev/null",
            "-H",
            "Accept-Encoding: gzip",
            &url,
        ])
    })
    .await
    .unwrap();
    assert!(headers.contains("multipart/related"), "{headers}");
    assert!(
        !headers.to_ascii_lowercase().contains("content-encoding"),
        "{headers}"
    );
    gateway.stop().await;
}

/// A study streams in pages of index rows (`PAGE` = 256 in wado.rs): one of more instances
/// than a page comes back whole, in instance-number order, each part byte for byte.
#[tokio::test(flavor = "multi_thread")]
async fn a_study_larger_than_one_index_page_streams_whole() {
    let gateway = Gateway::start("").await;
    let data = tempfile::tempdir().unwrap();
    let args = beeldbrug::testdata::GenerateArgs {
        patients: 1,
        ct_slices: 0,
        mr_slices: 300,
        ..beeldbrug::testdata::GenerateArgs::with_defaults(data.path())
    };
    let files = beeldbrug::testdata::generate(&args).unwrap();
    let parts: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(&f.path).unwrap())
        .collect();
    let r = stow_files(gateway.http_port, &files).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let accept = "multipart/related; type=\"application/dicom\"; transfer-syntax=*";
    let path = format!("/dicomweb/studies/{}", files[0].study_uid);
    let r = request(gateway.http_port, "GET", &path, &[("Accept", accept)], b"").await;
    assert_eq!(r.status, 200);
    let got = multipart_parts(&r);
    assert_eq!(got.len(), 300, "every instance, across index pages");
    // The metadata of the same study is one JSON array across the same pages.
    let r = request(
        gateway.http_port,
        "GET",
        &format!("{path}/metadata"),
        &[],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    let metadata = r.json();
    let metadata = metadata.as_array().unwrap();
    assert_eq!(metadata.len(), 300);
    assert!(metadata
        .iter()
        .all(|m| m["7FE00010"]["BulkDataURI"].is_string()));
    // Generated slices are written in instance-number order: the same order comes back.
    assert!(
        got == parts,
        "parts differ from the stored files or come in another order"
    );
    gateway.stop().await;
}
