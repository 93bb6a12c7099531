//! Blobs in S3-compatible object storage (issue 16, item 1) against a real S3 server, moto's
//! standalone server (PyPI `moto[server]`, started here on a port of the kernel's choosing),
//! with DCMTK `storescu` and raw HTTP as the clients:
//!
//! - STOW-RS and C-STORE land in the bucket under versioned keys (a 18 MiB instance as a
//!   multipart upload); with the node's local copies gone, WADO-RS (whole instance, a Range
//!   of it, a frame, a range of bulk data) and C-GET-free reads come back byte for byte from
//!   the bucket;
//! - a re-send supersedes: one object for the instance, the new one; the old is deleted;
//! - orphans (objects no index row names) are swept from the bucket at the next start;
//! - the bucket down: nothing is acknowledged (STOW-RS fails, C-STORE answers a failure),
//!   nothing indexed, `/ready` names `blobs`, and a read gives a clean 404, not a 500.

mod common;

use beeldbrug::model::Selection;
use beeldbrug::testdata::{GenerateArgs, GeneratedFile};
use common::gateway_mode::dataset_of;
use common::http::{multipart_parts, request, stow_files};
use common::s3::{self, S3Server};
use common::{dcmtk, Gateway};
use object_store::ObjectStore;
use std::path::Path;
use std::time::{Duration, Instant};

const BUCKET: &str = "beeldbrug";
const PREFIX: &str = "node";

fn generate(dir: &Path, dx: bool) -> Vec<GeneratedFile> {
    beeldbrug::testdata::generate(&GenerateArgs {
        out: dir.to_path_buf(),
        seed: 16,
        patients: 1,
        ct_slices: 2,
        mr_slices: 1,
        dx,
        multiframe_frames: 3,
        frame_size: 64,
        encapsulated: false,
        implicit: false,
    })
    .expect("generate")
}

/// C-STORE `files` with storescu; the log (`-v`: one "Received Store Response" per file).
fn storescu(port: u16, files: &[&GeneratedFile]) -> String {
    let port = port.to_string();
    let mut args = vec!["-v", "-aec", "BEELDBRUG", "127.0.0.1", &port];
    let paths: Vec<String> = files.iter().map(|f| f.path.display().to_string()).collect();
    args.extend(paths.iter().map(String::as_str));
    let out = dcmtk("storescu", &args);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The blob key the index has for one instance.
async fn indexed_key(gw: &Gateway, f: &GeneratedFile) -> Option<String> {
    let selection = Selection {
        study_uids: vec![f.study_uid.clone()],
        sop_instance_uids: vec![f.sop_uid.clone()],
        ..Default::default()
    };
    let found = gw.context().index.locate(&selection).await.expect("locate");
    found.into_iter().next().map(|l| l.blob_key)
}

fn instance_path(f: &GeneratedFile) -> String {
    format!(
        "/dicomweb/studies/{}/series/{}/instances/{}",
        f.study_uid, f.series_uid, f.sop_uid
    )
}

async fn ready(port: u16) -> (u16, String) {
    let r = request(port, "GET", "/ready", &[], b"").await;
    (r.status, r.text())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stow_and_c_store_go_to_the_bucket_and_come_back_byte_exact() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3Server::start(dir.path()).await;
    s3.create_bucket(BUCKET).await;
    let gw = Gateway::start(&s3.storage_toml(BUCKET, PREFIX)).await;
    let files = generate(&dir.path().join("data"), true);
    assert!(files.len() >= 5, "{}", files.len());
    // Half by STOW-RS (the DX among them: a multipart upload), half by C-STORE.
    let (mut stowed, mut stored) = (Vec::new(), Vec::new());
    for (n, f) in files.iter().enumerate() {
        if n % 2 == 0 || f.sop_class_uid == "1.2.840.10008.5.1.4.1.1.1.1" {
            stowed.push(f);
        } else {
            stored.push(f);
        }
    }
    let big = files
        .iter()
        .map(|f| std::fs::metadata(&f.path).unwrap().len())
        .max()
        .unwrap();
    assert!(
        big > 2 * beeldbrug::store::object::PART_BYTES as u64,
        "one instance must take a multipart upload of several parts: {big}"
    );
    let owned: Vec<GeneratedFile> = stowed.iter().map(|f| (*f).clone()).collect();
    let r = stow_files(gw.http_port, &owned).await;
    assert_eq!(r.status, 200, "STOW-RS: {}", r.text());
    let log = storescu(gw.port, &stored);
    assert_eq!(
        log.matches("Received Store Response (Success)").count(),
        stored.len(),
        "C-STORE:\n{log}"
    );

    // Every instance: one object, under the key the index names, the file as stored (what
    // was sent: STOW-RS keeps the Part 10 file; C-STORE the data set, with a meta group the
    // gateway writes).
    let client = s3.client(BUCKET);
    let objects = s3::list(&client, PREFIX).await;
    assert_eq!(objects.len(), files.len(), "{objects:?}");
    let mut stored_bytes = Vec::new();
    for f in &files {
        let key = indexed_key(&gw, f).await.expect("indexed");
        assert!(key.starts_with(&format!("{}/{}/{}.", f.study_uid, f.series_uid, f.sop_uid)));
        assert!(objects.contains(&key), "{key} not in {objects:?}");
        let object = s3::get(&client, PREFIX, &key).await;
        let sent = std::fs::read(&f.path).unwrap();
        if stowed.contains(&f) {
            assert!(object == sent, "object {key} is the file sent");
        } else {
            assert!(
                dataset_of(&object) == dataset_of(&sent),
                "object {key}: the data set sent"
            );
        }
        let local = std::fs::read(gw.data_dir().join("blobs").join(&key)).unwrap();
        assert!(object == local, "the local copy of {key}");
        stored_bytes.push(object);
    }

    // Without the node's local copies every read comes from the bucket.
    std::fs::remove_dir_all(gw.data_dir().join("blobs")).unwrap();
    let accept = ("Accept", "application/dicom; transfer-syntax=*");
    for (f, object) in files.iter().zip(&stored_bytes) {
        let whole = request(gw.http_port, "GET", &instance_path(f), &[accept], b"").await;
        assert_eq!(whole.status, 200, "{}", whole.text());
        assert!(whole.body == *object, "WADO-RS {} byte for byte", f.sop_uid);
    }
    std::fs::remove_dir_all(gw.data_dir().join("blobs")).unwrap();
    let dx = files
        .iter()
        .max_by_key(|f| std::fs::metadata(&f.path).unwrap().len())
        .unwrap();
    assert!(stowed.contains(&dx));
    let sent = std::fs::read(&dx.path).unwrap();
    let range = format!("bytes={}-{}", 9_000_000, 9_000_999);
    let part = request(
        gw.http_port,
        "GET",
        &instance_path(dx),
        &[accept, ("Range", &range)],
        b"",
    )
    .await;
    assert_eq!(part.status, 206, "{}", part.text());
    assert!(part.body == sent[9_000_000..9_001_000], "Range of the DX");

    // A frame of the multi-frame instance, and a range of its bulk data.
    std::fs::remove_dir_all(gw.data_dir().join("blobs")).unwrap();
    let mf = files
        .iter()
        .find(|f| f.sop_class_uid == "1.2.840.10008.5.1.4.1.1.7.3")
        .expect("a multi-frame instance");
    let bytes = std::fs::read(&mf.path).unwrap();
    let (_, at) = beeldbrug::dimse::dataset::locate_pixel_data(&mf.path).unwrap();
    let at = at.expect("pixel data");
    let start = at.value_offset as usize;
    let pixels = &bytes[start..start + at.len.unwrap() as usize];
    let frame_len = pixels.len() / 3;
    let frame = request(
        gw.http_port,
        "GET",
        &format!("{}/frames/2", instance_path(mf)),
        &[(
            "Accept",
            "multipart/related; type=\"application/octet-stream\"",
        )],
        b"",
    )
    .await;
    assert_eq!(frame.status, 200, "{}", frame.text());
    let parts = multipart_parts(&frame);
    assert_eq!(parts.len(), 1);
    assert!(parts[0] == pixels[frame_len..2 * frame_len], "frame 2");
    let bulk = request(
        gw.http_port,
        "GET",
        &format!("{}/bulkdata/7FE00010", instance_path(mf)),
        &[
            ("Accept", "application/octet-stream"),
            ("Range", "bytes=100-299"),
        ],
        b"",
    )
    .await;
    assert_eq!(bulk.status, 206, "{}", bulk.text());
    assert!(bulk.body == pixels[100..300], "bulk data range");

    let (status, body) = ready(gw.http_port).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&format!("s3://{BUCKET}/{PREFIX}")), "{body}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resend_supersedes_and_orphans_are_swept_from_the_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3Server::start(dir.path()).await;
    s3.create_bucket(BUCKET).await;
    let data_dir = dir.path().join("gateway");
    // One node alone: its start's sweep may take orphans of any age (no other node writes).
    let toml = s3.storage_toml(BUCKET, PREFIX).replacen(
        "[storage]\n",
        "[storage]\norphan_grace_secs = 0\n",
        1,
    );
    let gw = Gateway::start_in(&data_dir, &toml).await;
    let files = generate(&dir.path().join("data"), false);
    let ct = files[0].clone();
    let client = s3.client(BUCKET);

    let r = stow_files(gw.http_port, std::slice::from_ref(&ct)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let first = indexed_key(&gw, &ct).await.expect("indexed");
    assert_eq!(s3::list(&client, PREFIX).await, vec![first.clone()]);
    // The same instance again, by C-STORE: a new version under a key of its own; the
    // acknowledged one's object stays for the grace period (a reader on another node may
    // hold its key) and goes at the latest with the next start's sweep.
    let log = storescu(gw.port, &[&ct]);
    assert!(log.contains("Received Store Response (Success)"), "{log}");
    let second = indexed_key(&gw, &ct).await.expect("indexed");
    assert_ne!(first, second);
    let mut both = vec![first.clone(), second.clone()];
    both.sort();
    assert_eq!(s3::list(&client, PREFIX).await, both);
    gw.stop().await;

    // What a crash between upload and index commit leaves: an object no row names, in the
    // bucket only (another node's) and with a local copy too (this node's).
    let orphan = format!("{}/{}/1.2.3.4.5.6.a-1-0.dcm", ct.study_uid, ct.series_uid);
    let local_orphan = format!("{}/{}/1.2.3.4.5.7.a-1-0.dcm", ct.study_uid, ct.series_uid);
    for key in [&orphan, &local_orphan] {
        client
            .put(
                &object_store::path::Path::from(format!("{PREFIX}/{key}")),
                b"not indexed".to_vec().into(),
            )
            .await
            .unwrap();
    }
    let local = data_dir.join("blobs").join(&local_orphan);
    std::fs::create_dir_all(local.parent().unwrap()).unwrap();
    std::fs::write(&local, b"not indexed").unwrap();
    assert_eq!(s3::list(&client, PREFIX).await.len(), 4);
    // Object times have a resolution of a second: the restart must come after them.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let gw = Gateway::start_in(&data_dir, &toml).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while s3::list(&client, PREFIX).await.len() > 1 {
        assert!(
            Instant::now() < deadline,
            "orphans not swept: {:?}",
            s3::list(&client, PREFIX).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(s3::list(&client, PREFIX).await, vec![second.clone()]);
    assert!(!local.exists(), "the local copy of an orphan goes too");
    // The acknowledged version (the C-STOREd data set) is intact and served.
    let sent = std::fs::read(&ct.path).unwrap();
    let object = s3::get(&client, PREFIX, &second).await;
    assert!(dataset_of(&object) == dataset_of(&sent));
    let whole = request(
        gw.http_port,
        "GET",
        &instance_path(&ct),
        &[("Accept", "application/dicom; transfer-syntax=*")],
        b"",
    )
    .await;
    assert_eq!(whole.status, 200);
    assert!(whole.body == object);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_down_means_no_acknowledgement_and_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let mut s3 = S3Server::start(dir.path()).await;
    s3.create_bucket(BUCKET).await;
    let gw = Gateway::start(&s3.storage_toml(BUCKET, PREFIX)).await;
    let files = generate(&dir.path().join("data"), false);
    let r = stow_files(gw.http_port, std::slice::from_ref(&files[0])).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let (status, body) = ready(gw.http_port).await;
    assert_eq!(status, 200, "{body}");

    s3.kill();
    let r = stow_files(gw.http_port, std::slice::from_ref(&files[1])).await;
    assert_ne!(r.status, 200, "STOW-RS acknowledged with the bucket down");
    assert!(
        r.status < 500 || r.status == 503,
        "a clean failure: {} {}",
        r.status,
        r.text()
    );
    let log = storescu(gw.port, &[&files[2]]);
    assert!(log.contains("Received Store Response ("), "{log}");
    assert!(
        !log.contains("Received Store Response (Success)"),
        "C-STORE acknowledged with the bucket down:\n{log}"
    );
    for f in &files[1..3] {
        assert_eq!(
            indexed_key(&gw, f).await,
            None,
            "not indexed: {}",
            f.sop_uid
        );
    }
    let (status, body) = ready(gw.http_port).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"blobs\""), "{body}");
    // An instance this node has no copy of: a clean 404, no 500.
    std::fs::remove_dir_all(gw.data_dir().join("blobs")).unwrap();
    let whole = request(
        gw.http_port,
        "GET",
        &instance_path(&files[0]),
        &[("Accept", "application/dicom; transfer-syntax=*")],
        b"",
    )
    .await;
    assert_eq!(whole.status, 404, "{}", whole.text());
    // No temp files left behind.
    let tmp = std::fs::read_dir(gw.data_dir().join("tmp"))
        .unwrap()
        .count();
    assert_eq!(tmp, 0);
    gw.stop().await;
}

/// The `.dcm` files under `dir`, recursively: a node's local copies.
fn local_copies(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let path = e.path();
            if path.is_dir() {
                local_copies(&path)
            } else {
                usize::from(path.extension().is_some_and(|x| x == "dcm"))
            }
        })
        .sum()
}

/// A study retrieved by a node without local copies is fetched from the bucket just ahead of
/// its client, not a page (up to 256 instances) before the first byte: a client that stops
/// reading, then goes, leaves the rest of the study in the bucket and no temp file behind;
/// concurrent retrieves of the study still come back whole (one download per instance).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retrieve_from_the_bucket_fetches_just_ahead_of_its_client() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3Server::start(dir.path()).await;
    s3.create_bucket(BUCKET).await;
    let gw = Gateway::start(&s3.storage_toml(BUCKET, PREFIX)).await;
    let files = beeldbrug::testdata::generate(&GenerateArgs {
        out: dir.path().join("data"),
        seed: 17,
        patients: 1,
        ct_slices: 40,
        mr_slices: 0,
        dx: false,
        multiframe_frames: 0,
        frame_size: 64,
        encapsulated: false,
        implicit: false,
    })
    .expect("generate");
    let study = files[0].study_uid.clone();
    let in_study: Vec<&GeneratedFile> = files.iter().filter(|f| f.study_uid == study).collect();
    assert!(in_study.len() >= 40, "{}", in_study.len());
    let log = storescu(gw.port, &in_study);
    assert_eq!(
        log.matches("Received Store Response (Success)").count(),
        in_study.len(),
        "C-STORE:\n{log}"
    );
    let blobs = gw.data_dir().join("blobs");
    std::fs::remove_dir_all(&blobs).unwrap();

    // A client that reads the first 64 KiB (about a tenth of an instance) and then nothing.
    let mut client = tokio::net::TcpStream::connect(("127.0.0.1", gw.http_port))
        .await
        .unwrap();
    let get = format!(
        "GET /dicomweb/studies/{study} HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Accept: multipart/related; type=\"application/dicom\"; transfer-syntax=*\r\n\r\n"
    );
    client.write_all(get.as_bytes()).await.unwrap();
    let mut got = 0usize;
    let mut buf = vec![0u8; 16 * 1024];
    let first = Instant::now();
    while got < 64 * 1024 {
        let n = tokio::time::timeout(Duration::from_secs(30), client.read(&mut buf))
            .await
            .expect("the first bytes within 30 s")
            .unwrap();
        assert!(n > 0, "the answer ended after {got} bytes");
        got += n;
    }
    let first = first.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let fetched = local_copies(&blobs);
    // What the socket buffers take, and a few instances queued ahead: far less than the study
    // (before: the whole page, every instance of it, downloaded before the first byte).
    assert!(
        fetched < in_study.len() / 2,
        "{fetched} of {} instances downloaded for a client that read 64 KiB ({first:?} to the first bytes)",
        in_study.len()
    );
    drop(client);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = local_copies(&blobs);
    assert!(
        after <= fetched + 1,
        "downloads went on after the client left: {fetched} then {after}"
    );
    let tmp = std::fs::read_dir(gw.data_dir().join("tmp"))
        .unwrap()
        .count();
    assert_eq!(tmp, 0, "temp files left behind");

    // Three concurrent retrieves of the whole study, every instance byte for byte.
    std::fs::remove_dir_all(&blobs).unwrap();
    let path = format!("/dicomweb/studies/{study}");
    let accept = (
        "Accept",
        "multipart/related; type=\"application/dicom\"; transfer-syntax=*",
    );
    let headers = [accept];
    let (a, b, c) = tokio::join!(
        request(gw.http_port, "GET", &path, &headers, b""),
        request(gw.http_port, "GET", &path, &headers, b""),
        request(gw.http_port, "GET", &path, &headers, b""),
    );
    let mut sent: Vec<_> = in_study
        .iter()
        .map(|f| dataset_of(&std::fs::read(&f.path).unwrap()))
        .collect();
    sent.sort();
    for r in [&a, &b, &c] {
        assert_eq!(r.status, 200, "{}", r.text());
        let mut parts: Vec<_> = multipart_parts(r).iter().map(|p| dataset_of(p)).collect();
        parts.sort();
        assert!(parts == sent, "the study's instances, byte for byte");
    }
    assert_eq!(local_copies(&blobs), in_study.len());
    let tmp = std::fs::read_dir(gw.data_dir().join("tmp"))
        .unwrap()
        .count();
    assert_eq!(tmp, 0, "temp files left behind");
    gw.stop().await;
}
