//! Several nodes, one database, one bucket (issue 16, item 2): three gateways in this process
//! on one fresh PostgreSQL database and one S3 bucket (moto's standalone server), with DCMTK
//! `storescp` as the hospital's PACS, driven round-robin:
//!
//! - a study stored through one node is served byte for byte by the others (from the bucket);
//! - a bearer token used at one node is refused at the others (the `jti` replay cache lives
//!   in the database);
//! - instances stored through all three are forwarded to the PACS once each, whichever node's
//!   worker takes the job (leases, `FOR UPDATE SKIP LOCKED`).

mod common;
#[path = "common/tokens.rs"]
mod tokens;

use beeldbrug::pacs::forward::RetryPolicy;
use beeldbrug::testdata::{GenerateArgs, GeneratedFile};
use common::http::{request, stow_files};
use common::peer::PeerProcess;
use common::postgres::FreshDatabase;
use common::s3::S3Server;
use common::{free_port, require_tool, Gateway};
use std::time::{Duration, Instant};
use tokens::{mint_jwt, JwtIdp};

const PACS_AE: &str = "PACS";
const BUCKET: &str = "shared";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_database_and_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let db = FreshDatabase::create().await;
    let s3 = S3Server::start(dir.path()).await;
    s3.create_bucket(BUCKET).await;
    let pacs_port = free_port();
    let pacs_out = dir.path().join("pacs");
    std::fs::create_dir_all(&pacs_out).unwrap();
    let args: Vec<String> = [
        "-v",
        "+B",
        "+xa",
        "-aet",
        PACS_AE,
        "-od",
        &pacs_out.display().to_string(),
        &pacs_port.to_string(),
    ]
    .map(String::from)
    .to_vec();
    let mut pacs = PeerProcess::spawn("storescp", &require_tool("storescp"), &args, dir.path());
    pacs.wait_for_port(pacs_port).await;
    let idp = JwtIdp::new(dir.path(), "https://idp.multi.test", "beeldbrug");
    // A viewer's login: its access tokens are reusable until they expire.
    let sessions = JwtIdp::new(dir.path(), "https://login.multi.test", "beeldbrug");

    let toml = format!(
        "{}[storage]\nindex = \"{}\"\n[pacs]\nae_title = \"{PACS_AE}\"\nhost = \"127.0.0.1\"\n\
         port = {pacs_port}\nretrieve = \"c-get\"\nprobe_at_start = false\nconnect_timeout_secs = 2\n{}{}reusable = true\n",
        s3.storage_toml(BUCKET, "hub"),
        db.url,
        idp.config_toml(),
        sessions.config_toml()
    );
    // One at a time: the first runs the migrations.
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let node = Gateway::start(&toml).await;
        let gateway = node.context().gateway.as_ref().expect("gateway mode");
        gateway.pacs.forward.set_policy(RetryPolicy {
            delays: vec![Duration::from_secs(1)],
            max_attempts: 1000,
            poll: Duration::from_millis(100),
        });
        nodes.push(node);
    }

    let mut gen = GenerateArgs::with_defaults(dir.path().join("data"));
    gen.patients = 3;
    gen.ct_slices = 2;
    gen.mr_slices = 1;
    gen.frame_size = 32;
    let files = beeldbrug::testdata::generate(&gen).expect("generate");
    assert!(files.len() >= 9);

    // Round-robin: each study through one node (STOW-RS), read back through the others.
    let mut studies: Vec<(String, Vec<GeneratedFile>)> = Vec::new();
    for f in &files {
        match studies.iter_mut().find(|(s, _)| *s == f.study_uid) {
            Some((_, list)) => list.push(f.clone()),
            None => studies.push((f.study_uid.clone(), vec![f.clone()])),
        }
    }
    for (n, (_, study)) in studies.iter().enumerate() {
        let node = &nodes[n % 3];
        let r = stow_files(node.http_port, study).await;
        assert_eq!(r.status, 200, "STOW-RS at node {}: {}", n % 3, r.text());
    }
    for (n, (_, study)) in studies.iter().enumerate() {
        for other in 1..3 {
            let node = &nodes[(n + other) % 3];
            for f in study {
                let path = format!(
                    "/dicomweb/studies/{}/series/{}/instances/{}",
                    f.study_uid, f.series_uid, f.sop_uid
                );
                let r = request(
                    node.http_port,
                    "GET",
                    &path,
                    &[("Accept", "application/dicom; transfer-syntax=*")],
                    b"",
                )
                .await;
                assert_eq!(r.status, 200, "{}", r.text());
                assert!(
                    r.body == std::fs::read(&f.path).unwrap(),
                    "{} stored at node {} and read at node {}",
                    f.sop_uid,
                    n % 3,
                    (n + other) % 3
                );
            }
        }
    }

    // A token used at one node is refused at every other (an instance from the cache: the
    // PACS here is a storescp, which answers no queries).
    let f = &files[0];
    let path = format!(
        "/dicomweb/studies/{}/series/{}/instances/{}",
        f.study_uid, f.series_uid, f.sop_uid
    );
    for first in 0..3 {
        // Not bound to a patient (no `bsn`): the generated patients have none.
        let token = mint_jwt(&idp, |c| {
            c.as_object_mut().unwrap().remove("bsn");
        });
        let auth = format!("Bearer {token}");
        let ask = |port: u16| {
            let (auth, path) = (auth.clone(), path.clone());
            async move {
                request(
                    port,
                    "GET",
                    &path,
                    &[
                        ("Authorization", &auth),
                        ("Accept", "application/dicom; transfer-syntax=*"),
                    ],
                    b"",
                )
                .await
            }
        };
        let r = ask(nodes[first].http_port).await;
        assert_eq!(r.status, 200, "a fresh token at node {first}: {}", r.text());
        for other in 1..3 {
            let r = ask(nodes[(first + other) % 3].http_port).await;
            assert_eq!(
                r.status,
                401,
                "the token of node {first} replayed at node {}: {}",
                (first + other) % 3,
                r.text()
            );
            assert!(r.text().contains("replayed"), "{}", r.text());
        }
    }

    // A reusable issuer's token (`reusable = true`) goes with every request, to any node,
    // until it expires; the one-use issuer's tokens above stay refused on their second use.
    let session = format!(
        "Bearer {}",
        mint_jwt(&sessions, |c| {
            c.as_object_mut().unwrap().remove("bsn");
        })
    );
    for round in 0..2 {
        for node in &nodes {
            let r = request(
                node.http_port,
                "GET",
                &path,
                &[
                    ("Authorization", &session),
                    ("Accept", "application/dicom; transfer-syntax=*"),
                ],
                b"",
            )
            .await;
            assert_eq!(
                r.status,
                200,
                "a session token, round {round}, node {}: {}",
                node.http_port,
                r.text()
            );
        }
    }

    // Every instance forwarded once, whichever node took its job.
    let ctx = nodes[0].context();
    let deadline = Instant::now() + Duration::from_secs(90);
    let jobs = loop {
        let jobs = ctx.index.forward_jobs(None, 10_000).await.expect("queue");
        if jobs.len() == files.len() && jobs.iter().all(|j| j.state == "done") {
            break jobs;
        }
        assert!(
            Instant::now() < deadline,
            "forwarding did not finish: {jobs:#?}\n{}",
            pacs.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for j in &jobs {
        assert_eq!(j.attempts, 1, "sent once: {j:#?}");
    }
    // Let any duplicate send show before counting.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let log = std::fs::read_to_string(dir.path().join("storescp.log")).unwrap();
    assert_eq!(
        log.matches("Received Store Request").count(),
        files.len(),
        "each instance reached the PACS once\n{}",
        pacs.log_tail()
    );
    for node in nodes {
        node.stop().await;
    }
    db.drop_db().await;
}

/// Single-flight across nodes: two nodes asked for the same uncached study at once retrieve
/// it from the PACS (DCMTK dcmqrscp, by C-GET) once; the other node waits for that fetch (the
/// lease `fetch:<study>` in the shared index) and answers from the cache it filled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_retrieve_a_study_from_the_pacs_once() {
    use common::dcmqrscp::Dcmqrscp;
    use common::gateway_mode::{audit_details, dataset_of, pacs_toml, wado};
    let dir = tempfile::tempdir().unwrap();
    let db = FreshDatabase::create().await;
    let s3 = S3Server::start(dir.path()).await;
    s3.create_bucket(BUCKET).await;
    let files = common::generate(&dir.path().join("src"), false);
    let pacs = Dcmqrscp::start(dir.path(), "DCMQRSCP", &[], &[]).await;
    let loaded = files.clone();
    let pacs = tokio::task::spawn_blocking(move || {
        pacs.load(&loaded);
        pacs
    })
    .await
    .unwrap();
    let toml = format!(
        "{}[storage]\nindex = \"{}\"\n{}",
        s3.storage_toml(BUCKET, "hub"),
        db.url,
        pacs_toml("DCMQRSCP", pacs.port, "c-get", "")
    );
    let a = Gateway::start(&toml).await;
    let b = Gateway::start(&toml).await;
    let study = &files[0].study_uid;
    let mut expected: Vec<String> = files
        .iter()
        .filter(|f| &f.study_uid == study)
        .map(|f| f.sop_uid.clone())
        .collect();
    expected.sort();
    let path = format!("/dicomweb/studies/{study}");
    let accept = "multipart/related; type=\"application/dicom\"; transfer-syntax=*";
    let ((_, from_a), (_, from_b)) = tokio::join!(
        wado(a.http_port, &path, accept),
        wado(b.http_port, &path, accept)
    );
    // Every instance of the study from both nodes, the same bytes (dcmqrscp sends Implicit
    // VR files as Explicit VR: compared between the nodes, not with the files loaded).
    let sorted = |parts: Vec<Vec<u8>>| {
        let mut v: Vec<(String, Vec<u8>)> = parts.iter().map(|p| dataset_of(p)).collect();
        v.sort();
        v
    };
    let (from_a, from_b) = (sorted(from_a), sorted(from_b));
    let uids: Vec<String> = from_a.iter().map(|(uid, _)| uid.clone()).collect();
    assert_eq!(uids, expected);
    assert!(from_a == from_b, "both nodes serve the same bytes");
    // One audit trail (the shared index): two retrieves, one of them from the PACS.
    let audits = audit_details(a.context(), "WADO-RS").await;
    assert_eq!(audits.len(), 2, "{audits:?}");
    assert!(audits.iter().all(|(o, _)| o == "success"), "{audits:?}");
    let from_pacs = audits
        .iter()
        .filter(|(_, d)| d.contains("from the local PACS"))
        .count();
    assert_eq!(
        from_pacs, 1,
        "one node fetched, the other waited: {audits:?}"
    );
    a.stop().await;
    b.stop().await;
    db.drop_db().await;
}
