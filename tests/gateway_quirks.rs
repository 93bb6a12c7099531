//! Gateway mode against a quirky PACS (tests/pacs/quirky_pacs.py, pynetdicom): streaming from
//! the first byte, a client that leaves, two clients sharing one retrieve, and each PACS quirk
//! of the issue survived.

mod common;

use common::gateway_mode::{
    audit_details, becomes_complete, datasets, pacs_toml, syntax_of, wado, AS_STORED,
};
use common::http::{dechunk, send};
use common::quirky::QuirkyPacs;
use common::{free_port, generate, Gateway};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

/// Generated studies and the largest one's UID and instance count.
fn data(dir: &std::path::Path) -> (Vec<beeldbrug::testdata::GeneratedFile>, String, usize) {
    let files = generate(dir, false);
    let mut per_study: BTreeMap<String, usize> = BTreeMap::new();
    for f in &files {
        *per_study.entry(f.study_uid.clone()).or_default() += 1;
    }
    let (study, n) = per_study.into_iter().max_by_key(|(_, n)| *n).unwrap();
    (files, study, n)
}

struct Setup {
    _dir: tempfile::TempDir,
    files: Vec<beeldbrug::testdata::GeneratedFile>,
    study: String,
    count: usize,
    pacs: QuirkyPacs,
    gateway: Gateway,
}

/// A quirky PACS with `flags` that knows beeldbrug as C-MOVE destination, and a gateway in
/// front of it retrieving by `retrieve`, with `extra` `[pacs]` keys.
async fn setup(flags: &[&str], retrieve: &str, extra: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let (files, study, count) = data(&dir.path().join("src"));
    let our_port = free_port();
    let pacs = QuirkyPacs::start_with_destinations(
        &dir.path().join("src"),
        "QUIRKY",
        flags,
        &[("BEELDBRUG", our_port)],
    );
    let gateway =
        Gateway::start_dimse_on(our_port, &pacs_toml("QUIRKY", pacs.port(), retrieve, extra)).await;
    Setup {
        _dir: dir,
        files,
        study,
        count,
        pacs,
        gateway,
    }
}

impl Setup {
    /// Retrieve the big study as stored and check it is whole, and byte-exact where the
    /// PACS sent an instance in its stored syntax (in C-MOVE the PACS picks the syntax it
    /// proposes; pynetdicom converts Implicit VR files to Explicit VR).
    async fn retrieve_whole(&self) {
        let path = format!("/dicomweb/studies/{}", self.study);
        let (_, parts) = wado(self.gateway.http_port, &path, AS_STORED).await;
        let syntaxes: BTreeMap<String, String> = parts
            .iter()
            .map(|p| (common::gateway_mode::dataset_of(p).0, syntax_of(p)))
            .collect();
        let got = datasets(&parts);
        assert_eq!(
            got.len(),
            self.count,
            "every instance\n{}",
            self.pacs.log_tail()
        );
        for f in self.files.iter().filter(|f| f.study_uid == self.study) {
            if syntaxes[&f.sop_uid] != f.transfer_syntax {
                continue;
            }
            let source = std::fs::read(&f.path).unwrap();
            let (_, expected) = common::gateway_mode::dataset_of(&source);
            assert!(got[&f.sop_uid] == expected, "{} byte-exact", f.sop_uid);
        }
    }

    async fn complete(&self) -> bool {
        becomes_complete(self.gateway.context(), &self.study).await
    }

    async fn complete_now(&self) -> bool {
        let index = &self.gateway.context().index;
        matches!(index.cached_study(&self.study).await, Ok(Some(s)) if s.complete)
    }

    fn log_count(&self, needle: &str) -> usize {
        self.pacs.log_tail().matches(needle).count()
    }
}

/// Whether `body` (dechunked) holds the whole first part of a multipart response: its
/// head and as many bytes as its Content-Length says.
fn first_part_whole(body: &[u8]) -> bool {
    let Some(head_end) = body.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&body[..head_end]);
    let len: Option<usize> = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.trim().parse().ok());
    len.is_some_and(|len| body.len() >= head_end + 4 + len)
}

/// Read a streamed multipart response until its first part is whole; the elapsed time.
async fn first_part_after(
    port: u16,
    path: &str,
    started: Instant,
) -> (tokio::net::TcpStream, Duration) {
    let mut stream = send(port, "GET", path, &[("Accept", AS_STORED)], b"").await;
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "response ended before one part");
        raw.extend_from_slice(&buf[..n]);
        // Response head, then the chunked body whose first part starts at its delimiter.
        if let Some(head_end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            if first_part_whole(&dechunk(&raw[head_end + 4..])) {
                return (stream, started.elapsed());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn first_instance_reaches_the_client_before_the_pacs_sends_the_second() {
    for retrieve in ["c-get", "c-move"] {
        let s = setup(&["--pause", "1.5"], retrieve, "").await;
        let path = format!("/dicomweb/studies/{}", s.study);
        let started = Instant::now();
        let (mut stream, first) = first_part_after(s.gateway.http_port, &path, started).await;
        // The PACS sleeps 1.5 s before each sub-operation: the second leaves at >= 3 s.
        assert!(
            first < Duration::from_millis(2900),
            "{retrieve}: first part after {first:?}\n{}",
            s.pacs.log_tail()
        );
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.unwrap();
        let total = started.elapsed();
        assert!(
            total >= Duration::from_millis(1500 * s.count as u64 - 200),
            "{total:?}"
        );
        assert!(s.complete().await, "{retrieve}: complete after the stream");
        s.gateway.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_leaves_cancels_the_pacs_retrieve() {
    let s = setup(&["--pause", "0.7"], "c-get", "").await;
    let path = format!("/dicomweb/studies/{}", s.study);
    let (stream, _) = first_part_after(s.gateway.http_port, &path, Instant::now()).await;
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(15);
    while s.log_count("C-CANCEL received") == 0 {
        assert!(
            Instant::now() < deadline,
            "no C-CANCEL\n{}",
            s.pacs.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The audit says cancelled; the partial study is not complete.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let audits = audit_details(s.gateway.context(), "WADO-RS").await;
        if audits.iter().any(|(o, _)| o == "cancelled") {
            break;
        }
        assert!(Instant::now() < deadline, "{audits:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!s.complete_now().await, "a cancelled fetch is not complete");
    // The next request gets the whole study.
    s.retrieve_whole().await;
    assert!(s.complete().await);
    s.gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_clients_share_one_pacs_retrieve() {
    let s = setup(&["--pause", "0.3"], "c-get", "").await;
    let (a, b) = tokio::join!(s.retrieve_whole(), async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        s.retrieve_whole().await
    });
    let _ = (a, b);
    assert_eq!(
        s.log_count("C-GET at STUDY level"),
        1,
        "{}",
        s.pacs.log_tail()
    );
    s.gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pacs_with_only_c_move_is_used_by_c_move() {
    let s = setup(&["--services", "echo,find,move"], "auto", "").await;
    s.retrieve_whole().await;
    let gateway = s.gateway.context().gateway.as_ref().unwrap();
    assert_eq!(gateway.pacs.mode(), beeldbrug::config::RetrieveMode::CMove);
    s.gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pacs_with_only_c_get_serves_by_c_get() {
    let s = setup(&["--services", "echo,find,get"], "auto", "").await;
    s.retrieve_whole().await;
    assert_eq!(s.log_count("C-GET at STUDY level"), 1);
    s.gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sub_operations_without_move_originator_are_matched_by_uid() {
    let s = setup(&["--no-move-originator"], "c-move", "").await;
    s.retrieve_whole().await;
    assert!(s.complete().await);
    s.gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_final_c_move_response_before_the_sub_operations_is_waited_out() {
    let s = setup(&["--early-final", "--pause", "0.3"], "c-move", "").await;
    s.retrieve_whole().await;
    assert!(s.complete().await);
    s.gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn compressed_accepted_then_failed_is_retried_uncompressed() {
    let s = setup(&["--fail-compressed"], "c-get", "").await;
    let path = format!("/dicomweb/studies/{}", s.study);
    let (_, parts) = wado(s.gateway.http_port, &path, AS_STORED).await;
    assert_eq!(parts.len(), s.count, "{}", s.pacs.log_tail());
    assert_eq!(s.log_count("--fail-compressed: requestor accepted"), 1);
    assert_eq!(
        s.log_count("C-GET at STUDY level"),
        2,
        "one failed, one retried"
    );
    assert!(s.complete().await);
    s.gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pacs_allowing_one_association_queues_requests() {
    let s = setup(&["--max-associations", "1", "--pause", "0.2"], "c-get", "").await;
    let studies: Vec<String> = {
        let mut v: Vec<String> = s.files.iter().map(|f| f.study_uid.clone()).collect();
        v.sort();
        v.dedup();
        v
    };
    assert!(studies.len() >= 2);
    let fetch = |study: String| {
        let port = s.gateway.http_port;
        async move {
            let path = format!("/dicomweb/studies/{study}");
            let (_, parts) = wado(port, &path, AS_STORED).await;
            parts.len()
        }
    };
    let (a, b) = tokio::join!(fetch(studies[0].clone()), fetch(studies[1].clone()));
    assert!(a > 0 && b > 0, "both studies served\n{}", s.pacs.log_tail());
    s.gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn long_pauses_between_sub_operations_within_the_gap_are_waited_for() {
    // The PDU timeout is 1 s, the allowed gap 5 s, the PACS pauses 2 s per sub-operation.
    let s = setup(
        &["--pause", "2"],
        "c-move",
        "timeout_secs = 1\nmove_gap_secs = 5",
    )
    .await;
    s.retrieve_whole().await;
    assert!(s.complete().await);
    s.gateway.stop().await;
}
