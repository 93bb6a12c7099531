//! DICOMweb bad input: each malformed request gets its 4xx with a readable message, leaves
//! nothing behind (no temp files, nothing indexed), and the server keeps serving — also after a
//! client walks away in the middle of a large retrieve.

mod common;

use common::http::{multipart, request, send, stow_files};
use common::Gateway;
use std::path::Path;
use tokio::io::AsyncReadExt;

const DICOM_PARTS: &str = "multipart/related; type=\"application/dicom\"; boundary=XyZ";

fn tmp_entries(gateway: &Gateway) -> usize {
    std::fs::read_dir(gateway.data_dir().join("tmp")).map_or(0, |d| d.count())
}

async fn instance_count(gateway: &Gateway) -> usize {
    let r = request(gateway.http_port, "GET", "/dicomweb/instances", &[], b"").await;
    match r.status {
        204 => 0,
        200 => r.json().as_array().map_or(0, Vec::len),
        other => panic!("QIDO /instances answered {other}: {}", r.text()),
    }
}

fn small_files(dir: &Path) -> Vec<beeldbrug::testdata::GeneratedFile> {
    common::generate(dir, false)
}

async fn stow(
    port: u16,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> common::http::HttpResponse {
    request(port, "POST", path, &[("Content-Type", content_type)], body).await
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_stow_requests_are_rejected_and_leave_nothing() {
    let gateway = Gateway::start("").await;
    let port = gateway.http_port;
    let data = tempfile::tempdir().unwrap();
    let files = small_files(data.path());
    let file = std::fs::read(&files[0].path).unwrap();
    let good = multipart("XyZ", &[("application/dicom", &file)]);

    let cases: Vec<(&str, String, Vec<u8>, u16)> = vec![
        (
            "no boundary",
            "multipart/related; type=\"application/dicom\"".into(),
            good.clone(),
            400,
        ),
        (
            "wrong boundary",
            "multipart/related; type=\"application/dicom\"; boundary=Other".into(),
            good.clone(),
            400,
        ),
        (
            "not multipart",
            "application/dicom".into(),
            file.clone(),
            415,
        ),
        ("JSON body", "application/json".into(), b"{}".to_vec(), 415),
        (
            "metadata and bulk data",
            "multipart/related; type=\"application/dicom+json\"; boundary=XyZ".into(),
            good.clone(),
            415,
        ),
        (
            "truncated part",
            DICOM_PARTS.into(),
            good[..good.len() / 2].to_vec(),
            400,
        ),
        (
            "no closing delimiter",
            DICOM_PARTS.into(),
            good[..good.len() - 9].to_vec(),
            400,
        ),
        ("empty body", DICOM_PARTS.into(), Vec::new(), 400),
    ];
    for (what, content_type, body, status) in cases {
        let r = stow(port, "/dicomweb/studies", &content_type, &body).await;
        assert_eq!(r.status, status, "{what}: {}", r.text());
        assert!(!r.text().trim().is_empty(), "{what}: a readable message");
        assert_eq!(tmp_entries(&gateway), 0, "{what}: no temp file left");
    }
    assert_eq!(instance_count(&gateway).await, 0, "nothing was stored");
    // Still serving: the good request goes through.
    let r = stow(port, "/dicomweb/studies", DICOM_PARTS, &good).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(instance_count(&gateway).await, 1);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stow_reports_each_failed_part() {
    let gateway = Gateway::start("").await;
    let port = gateway.http_port;
    let data = tempfile::tempdir().unwrap();
    let files = small_files(data.path());
    let file = std::fs::read(&files[0].path).unwrap();
    let mut short = file.clone();
    short.truncate(file.len() - 1000); // a data set that ends inside Pixel Data
    let body = multipart(
        "XyZ",
        &[
            ("application/dicom", &file),
            ("application/dicom", b"this is not DICOM"),
            ("text/plain", b"neither is this"),
            ("application/dicom", &short),
        ],
    );
    let r = stow(port, "/dicomweb/studies", DICOM_PARTS, &body).await;
    assert_eq!(r.status, 202, "some stored, some failed: {}", r.text());
    let json = r.json();
    assert_eq!(json["00081199"]["Value"].as_array().unwrap().len(), 1);
    let failed = json["00081198"]["Value"].as_array().unwrap();
    assert_eq!(failed.len(), 3);
    for item in failed {
        // PS3.18 10.5.3 / PS3.4 B.2.3: 0xC000 cannot understand.
        assert_eq!(item["00081197"]["Value"][0], 0xC000, "{item}");
    }
    // The cut-short file still names its instance (from its meta group); the others cannot.
    assert_eq!(
        failed[2]["00081155"]["Value"][0], files[0].sop_uid,
        "{:?}",
        failed
    );
    assert!(failed[0]["00081155"].get("Value").is_none());
    assert_eq!(r.headers_named("Warning").len(), 3, "reasons as warnings");
    assert_eq!(instance_count(&gateway).await, 1);

    // An instance of another study than the URL names: 409, FailureReason A900.
    let other = format!("/dicomweb/studies/{}", "1.2.826.0.1.3680043.2.1143.1");
    let one = multipart(
        "XyZ",
        &[("application/dicom", &std::fs::read(&files[1].path).unwrap())],
    );
    let r = stow(port, &other, DICOM_PARTS, &one).await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(
        r.json()["00081198"]["Value"][0]["00081197"]["Value"][0],
        0xA900
    );
    assert_eq!(instance_count(&gateway).await, 1);
    assert_eq!(tmp_entries(&gateway), 0);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stow_size_limits_give_413() {
    let gateway =
        Gateway::start("[dicomweb]\nmax_request_bytes = 2000000\nmax_instance_bytes = 100000\n")
            .await;
    let port = gateway.http_port;
    let data = tempfile::tempdir().unwrap();
    let files = small_files(data.path());
    let ct = files
        .iter()
        .find(|f| f.path.metadata().unwrap().len() > 100_000)
        .unwrap();
    let body = multipart(
        "XyZ",
        &[("application/dicom", &std::fs::read(&ct.path).unwrap())],
    );
    let r = stow(port, "/dicomweb/studies", DICOM_PARTS, &body).await;
    assert_eq!(r.status, 413, "instance over the limit: {}", r.text());
    let big = vec![0u8; 2_100_000];
    let r = stow(port, "/dicomweb/studies", DICOM_PARTS, &big).await;
    assert_eq!(r.status, 413, "request over the limit: {}", r.text());
    assert_eq!(tmp_entries(&gateway), 0);
    assert_eq!(instance_count(&gateway).await, 0);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_uids_bad_queries_and_unacceptable_media() {
    let gateway = Gateway::start("[dicomweb]\nmax_results = 3\n").await;
    let port = gateway.http_port;
    let data = tempfile::tempdir().unwrap();
    let files = small_files(data.path());
    assert_eq!(stow_files(port, &files).await.status, 200);
    let f = &files[0];
    let unknown = "1.2.3.4.5.6.7.8.9";
    for path in [
        format!("/dicomweb/studies/{unknown}"),
        format!("/dicomweb/studies/{unknown}/metadata"),
        format!("/dicomweb/studies/{}/series/{unknown}", f.study_uid),
        format!(
            "/dicomweb/studies/{}/series/{}/instances/{unknown}",
            f.study_uid, f.series_uid
        ),
        format!(
            "/dicomweb/studies/{}/series/{}/instances/{unknown}/frames/1",
            f.study_uid, f.series_uid
        ),
        format!(
            "/dicomweb/studies/{unknown}/series/{}/instances/{}/rendered",
            f.series_uid, f.sop_uid
        ),
    ] {
        let r = request(port, "GET", &path, &[], b"").await;
        assert_eq!(r.status, 404, "{path}: {}", r.text());
    }
    let instance = format!(
        "/dicomweb/studies/{}/series/{}/instances/{}",
        f.study_uid, f.series_uid, f.sop_uid
    );
    for (path, status) in [
        ("/dicomweb/studies?StudyDate=2020-13-45".to_string(), 400),
        ("/dicomweb/studies?StudyDate=20201345".into(), 400),
        ("/dicomweb/studies?0010001Z=x".into(), 400),
        ("/dicomweb/studies?NotAnAttribute=x".into(), 400),
        ("/dicomweb/studies?limit=-5".into(), 400),
        ("/dicomweb/studies?fuzzymatching=maybe".into(), 400),
        (format!("{instance}/frames/0"), 400),
        (format!("{instance}/frames/99"), 404),
        (format!("{instance}/rendered?window=40"), 400),
        (format!("{instance}/rendered?viewport=0,0"), 400),
    ] {
        let r = request(port, "GET", &path, &[], b"").await;
        assert_eq!(r.status, status, "{path}: {}", r.text());
        assert!(!r.text().trim().is_empty(), "{path}: a readable message");
    }
    // limit=100000000 is cut to max_results, with a warning (PS3.18 8.3.4.5).
    let r = request(port, "GET", "/dicomweb/instances?limit=100000000", &[], b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json().as_array().unwrap().len(), 3);
    assert!(
        r.header("Warning").unwrap().starts_with("299 "),
        "{:?}",
        r.headers
    );
    // A transfer syntax that cannot be produced from the stored one (lossy JPEG 2000: no
    // encoder here): 406, never a wrong answer.
    let jp2 =
        "multipart/related; type=\"application/dicom\"; transfer-syntax=1.2.840.10008.1.2.4.91";
    let r = request(
        port,
        "GET",
        &format!("/dicomweb/studies/{}", f.study_uid),
        &[("Accept", jp2)],
        b"",
    )
    .await;
    assert_eq!(r.status, 406, "{}", r.text());
    let r = request(
        port,
        "GET",
        &format!("{instance}/metadata"),
        &[("Accept", "application/dicom+xml")],
        b"",
    )
    .await;
    assert_eq!(r.status, 406, "{}", r.text());
    let r = request(
        port,
        "GET",
        "/dicomweb/studies",
        &[("Accept", "application/dicom+xml")],
        b"",
    )
    .await;
    assert_eq!(r.status, 406, "QIDO as XML: {}", r.text());
    let r = request(
        port,
        "GET",
        &format!("{instance}/rendered"),
        &[("Accept", "image/gif")],
        b"",
    )
    .await;
    assert_eq!(r.status, 406, "{}", r.text());
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn single_instances_resume_with_range_and_etag() {
    let gateway = Gateway::start("").await;
    let port = gateway.http_port;
    let data = tempfile::tempdir().unwrap();
    let files = small_files(data.path());
    let f = files
        .iter()
        .find(|f| f.transfer_syntax == "1.2.840.10008.1.2.1")
        .unwrap();
    let bytes = std::fs::read(&f.path).unwrap();
    let body = multipart("XyZ", &[("application/dicom", &bytes)]);
    assert_eq!(
        stow(port, "/dicomweb/studies", DICOM_PARTS, &body)
            .await
            .status,
        200
    );
    let path = format!(
        "/dicomweb/studies/{}/series/{}/instances/{}",
        f.study_uid, f.series_uid, f.sop_uid
    );
    let accept = ("Accept", "application/dicom; transfer-syntax=*");
    let whole = request(port, "GET", &path, &[accept], b"").await;
    assert_eq!(whole.status, 200);
    assert_eq!(whole.body, bytes, "as stored, byte for byte");
    assert_eq!(
        whole.header("Content-Length").unwrap(),
        bytes.len().to_string()
    );
    let etag = whole.header("ETag").unwrap().to_string();
    let part = request(port, "GET", &path, &[accept, ("Range", "bytes=1000-")], b"").await;
    assert_eq!(part.status, 206);
    assert_eq!(part.body, bytes[1000..]);
    assert_eq!(
        part.header("Content-Range").unwrap(),
        format!("bytes 1000-{}/{}", bytes.len() - 1, bytes.len())
    );
    let cached = request(port, "GET", &path, &[accept, ("If-None-Match", &etag)], b"").await;
    assert_eq!(cached.status, 304);
    let beyond = request(
        port,
        "GET",
        &path,
        &[accept, ("Range", "bytes=99999999-")],
        b"",
    )
    .await;
    assert_eq!(beyond.status, 416);

    // Bulk data resumes too: Pixel Data as a bare octet stream, a range of it.
    let (_, at) = beeldbrug::dimse::dataset::locate_pixel_data(&f.path).unwrap();
    let at = at.expect("the CT has Pixel Data");
    let start = at.value_offset as usize;
    let pixels = &bytes[start..start + at.len.unwrap() as usize];
    let bulk = format!("{path}/bulkdata/7FE00010");
    let octets = ("Accept", "application/octet-stream");
    let part = request(
        port,
        "GET",
        &bulk,
        &[octets, ("Range", "bytes=100-299")],
        b"",
    )
    .await;
    assert_eq!(part.status, 206, "{}", part.text());
    assert_eq!(part.body, pixels[100..300]);
    let all = request(port, "GET", &bulk, &[octets], b"").await;
    assert_eq!(all.body, pixels);
    gateway.stop().await;
}

/// Files under `dir` this process holds open (other tests run alongside, so only this
/// gateway's own files count).
fn open_files_under(dir: &Path) -> usize {
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter(|target| target.starts_with(dir))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_walks_away_mid_retrieve_frees_everything() {
    let gateway = Gateway::start("").await;
    let port = gateway.http_port;
    let data = tempfile::tempdir().unwrap();
    // One study of ~128 MiB (64 frames of 1024x1024 16-bit) plus the usual small ones.
    let args = beeldbrug::testdata::GenerateArgs {
        multiframe_frames: 64,
        frame_size: 1024,
        ct_slices: 0,
        mr_slices: 0,
        patients: 1,
        ..beeldbrug::testdata::GenerateArgs::with_defaults(data.path())
    };
    let files = beeldbrug::testdata::generate(&args).unwrap();
    let big = &files[0];
    let bytes = std::fs::read(&big.path).unwrap();
    assert!(bytes.len() > 100_000_000);
    let body = multipart("XyZ", &[("application/dicom", &bytes)]);
    drop(bytes);
    assert_eq!(
        stow(port, "/dicomweb/studies", DICOM_PARTS, &body)
            .await
            .status,
        200
    );
    drop(body);
    // Blobs only: the index database opens files as its connection pool grows.
    let data_dir = gateway.data_dir().join("blobs").canonicalize().unwrap();
    let before = open_files_under(&data_dir);
    let path = format!("/dicomweb/studies/{}", big.study_uid);
    let accept = (
        "Accept",
        "multipart/related; type=\"application/dicom\"; transfer-syntax=*",
    );
    for _ in 0..3 {
        let mut stream = send(port, "GET", &path, &[accept], b"").await;
        let mut buf = vec![0u8; 1 << 20];
        stream.read_exact(&mut buf).await.unwrap();
        // The check below can see a blob held open: this one is, while its client reads.
        assert!(
            open_files_under(&data_dir) > before,
            "the blob is open while streaming"
        );
        drop(stream); // gone, 1 MiB into 128
    }
    // The producers notice, close their files and audit the cancellation.
    let mut cancelled = 0;
    for _ in 0..100 {
        let events = gateway.context().index.audit_events(100).await.unwrap();
        cancelled = events
            .iter()
            .filter(|e| e.operation == "WADO-RS" && e.outcome == "cancelled")
            .count();
        if cancelled == 3 && open_files_under(&data_dir) <= before {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        cancelled, 3,
        "each abandoned retrieve is audited as cancelled"
    );
    assert!(
        open_files_under(&data_dir) <= before,
        "file handles released: {} > {before}",
        open_files_under(&data_dir)
    );
    // And the server keeps serving, the whole study included.
    let r = request(port, "GET", &path, &[accept], b"").await;
    assert_eq!(r.status, 200);
    assert!(r.body.len() > 100_000_000);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn anonymous_access_can_be_refused() {
    let gateway = Gateway::start("[dicomweb]\nallow_anonymous = false\n").await;
    let r = request(gateway.http_port, "GET", "/dicomweb/studies", &[], b"").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("WWW-Authenticate"), Some("Bearer"));
    let r = stow(gateway.http_port, "/dicomweb/studies", DICOM_PARTS, b"").await;
    assert_eq!(r.status, 401);
    let events = gateway.context().index.audit_events(10).await.unwrap();
    assert_eq!(events.iter().filter(|e| e.outcome == "refused").count(), 2);
    gateway.stop().await;
}
