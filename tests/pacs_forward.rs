//! Forwarding to the PACS (gateway mode): studies received by STOW-RS go on to the local PACS
//! by C-STORE through the durable queue. The PACS is a real DCMTK `storescp`, started by the
//! test on a free port, writing what it receives bit for bit (`+B`).

mod common;

use beeldbrug::config::Config;
use beeldbrug::dimse::dataset::read_layout;
use beeldbrug::pacs::forward::RetryPolicy;
use beeldbrug::store::index::ForwardJob;
use beeldbrug::testdata::GeneratedFile;
use common::http::{request, stow_files};
use common::peer::PeerProcess;
use common::{free_port, generate, require_tool, Gateway};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const PACS_AE: &str = "PACS";

/// `storescp` as the hospital's PACS: every transfer syntax it knows, data sets kept as
/// received, files under `out`.
async fn start_pacs(port: u16, out: &Path, logs: &Path) -> PeerProcess {
    std::fs::create_dir_all(out).expect("PACS output dir");
    let args: Vec<String> = [
        "+B",
        "+xa",
        "-aet",
        PACS_AE,
        "-od",
        &out.display().to_string(),
        &port.to_string(),
    ]
    .map(String::from)
    .to_vec();
    let mut pacs = PeerProcess::spawn("storescp", &require_tool("storescp"), &args, logs);
    pacs.wait_for_port(port).await;
    pacs
}

/// `[pacs]` toward `port`, no start-up probe (storescp answers C-STORE only).
fn pacs_toml(port: u16, extra: &str) -> String {
    format!(
        "[pacs]\nae_title = \"{PACS_AE}\"\nhost = \"127.0.0.1\"\nport = {port}\n\
         retrieve = \"c-get\"\nprobe_at_start = false\nconnect_timeout_secs = 2\n{extra}\n"
    )
}

/// Retry after one second, poll five times a second: a test waits seconds, not minutes.
fn fast_retries(ctx: &beeldbrug::server::Context) {
    let gateway = ctx.gateway.as_ref().expect("gateway mode");
    gateway.pacs.forward.set_policy(RetryPolicy {
        delays: vec![Duration::from_secs(1)],
        max_attempts: 1000,
        poll: Duration::from_millis(200),
    });
}

async fn jobs(ctx: &beeldbrug::server::Context) -> Vec<ForwardJob> {
    ctx.index.forward_jobs(None, 10_000).await.expect("queue")
}

/// Wait until `done(jobs)` holds; fail with the queue after `secs`.
async fn wait_queue(
    ctx: &beeldbrug::server::Context,
    secs: u64,
    what: &str,
    done: impl Fn(&[ForwardJob]) -> bool,
) -> Vec<ForwardJob> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let now = jobs(ctx).await;
        if done(&now) {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "queue did not reach: {what} within {secs} s\n{now:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
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

/// A Part 10 file's transfer syntax, SOP Instance UID and data set bytes (after the meta).
fn part10(path: &Path) -> (String, String, Vec<u8>) {
    let layout = read_layout(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let bytes = std::fs::read(path).expect("read file");
    let clean = |s: &str| s.trim_end_matches(['\0', ' ']).to_string();
    (
        clean(layout.meta.transfer_syntax()),
        clean(layout.meta.media_storage_sop_instance_uid()),
        bytes[layout.dataset_offset as usize..].to_vec(),
    )
}

/// The PACS holds exactly `expected`, each in its own transfer syntax with its data set
/// unchanged.
fn assert_pacs_holds(dir: &Path, expected: &[GeneratedFile], pacs: &PeerProcess) {
    let received: BTreeMap<String, (String, Vec<u8>)> = files_under(dir)
        .iter()
        .map(|p| {
            let (ts, sop, data) = part10(p);
            (sop, (ts, data))
        })
        .collect();
    let wanted: BTreeSet<&str> = expected.iter().map(|f| f.sop_uid.as_str()).collect();
    let got: BTreeSet<&str> = received.keys().map(String::as_str).collect();
    assert_eq!(got, wanted, "instances at the PACS\n{}", pacs.log_tail());
    for f in expected {
        let (ts, data) = &received[&f.sop_uid];
        assert_eq!(ts, &f.transfer_syntax, "transfer syntax of {}", f.sop_uid);
        let (_, _, source) = part10(&f.path);
        assert!(
            *data == source,
            "data set of {} differs from what was sent by STOW-RS",
            f.sop_uid
        );
    }
}

fn studies(files: &[GeneratedFile]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for f in files {
        *out.entry(f.study_uid.clone()).or_insert(0) += 1;
    }
    out
}

/// A config file for the CLI naming the same data directory (and so the same index).
fn cli_config(dir: &Path, data_dir: &Path, pacs_port: u16) -> PathBuf {
    let path = dir.join("cli.toml");
    let toml = format!(
        "[storage]\ndata_dir = \"{}\"\n{}",
        data_dir.display(),
        pacs_toml(pacs_port, "")
    );
    std::fs::write(&path, toml).expect("write CLI config");
    path
}

fn beeldbrug(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_beeldbrug"))
        .args(args)
        .env("BEELDBRUG_LOG", "warn")
        .output()
        .expect("run beeldbrug");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn stow_study_is_forwarded_to_the_pacs_byte_exact_and_listed() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let files = generate(&tmp.path().join("src"), true);
    let port = free_port();
    let pacs = start_pacs(port, &tmp.path().join("pacs"), tmp.path()).await;
    let gw = Gateway::start(&pacs_toml(port, "")).await;
    fast_retries(gw.context());

    let r = stow_files(gw.http_port, &files).await;
    assert_eq!(r.status, 200, "STOW-RS: {}", r.text());

    let done = wait_queue(gw.context(), 60, "every job done", |jobs| {
        jobs.len() == files.len() && jobs.iter().all(|j| j.state == "done")
    })
    .await;
    assert!(done
        .iter()
        .all(|j| j.sender == "anonymous" && j.attempts == 1));
    assert!(done.iter().all(|j| j.last_error.is_empty()));
    assert_pacs_holds(&tmp.path().join("pacs"), &files, &pacs);

    // One audit record per study, naming the PACS and the count.
    let audit = gw.context().index.audit_events(1000).await.expect("audit");
    let per_study = studies(&files);
    for (study, n) in &per_study {
        let records: Vec<_> = audit
            .iter()
            .filter(|e| e.operation == "C-STORE" && e.study_uids == *study)
            .collect();
        assert_eq!(records.len(), 1, "audit of study {study}: {audit:#?}");
        assert_eq!(records[0].outcome, "success");
        assert!(
            records[0]
                .detail
                .starts_with(&format!("forwarded {n} instances to PACS {PACS_AE}")),
            "{}",
            records[0].detail
        );
    }

    // The admin view and the CLI show the same queue.
    let r = request(gw.http_port, "GET", "/admin/forward?limit=1000", &[], b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let view = r.json();
    assert_eq!(view["pacs"]["ae_title"], PACS_AE);
    let listed = view["jobs"].as_array().expect("jobs");
    assert_eq!(listed.len(), files.len());
    assert!(listed.iter().all(|j| j["state"] == "done"));

    let config = cli_config(tmp.path(), &gw.data_dir(), port);
    let config = config.display().to_string();
    let (ok, stdout, stderr) = beeldbrug(&["forward", "-c", &config, "--json", "--limit", "1000"]);
    assert!(ok, "beeldbrug forward --json failed: {stderr}");
    let rows: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(rows.len(), files.len(), "{stdout}");
    let sops: BTreeSet<&str> = rows
        .iter()
        .map(|r| r["sop_instance_uid"].as_str().expect("sop"))
        .collect();
    let sent: BTreeSet<&str> = files.iter().map(|f| f.sop_uid.as_str()).collect();
    assert_eq!(sops, sent);
    for row in &rows {
        assert_eq!(row["state"], "done", "{row}");
        assert_eq!(row["attempts"], 1, "{row}");
        assert_eq!(row["sender"], "anonymous", "{row}");
        assert_eq!(row["last_error"], "", "{row}");
        assert!(row["next_attempt"].is_null(), "{row}");
        assert!(row["id"].as_i64().is_some() && row["study_instance_uid"].is_string());
    }
    let (ok, table, stderr) = beeldbrug(&["forward", "-c", &config, "--limit", "3"]);
    assert!(ok, "beeldbrug forward failed: {stderr}");
    assert!(table.starts_with("ID"), "{table}");
    assert_eq!(table.lines().count(), 4, "header and three jobs: {table}");

    gw.stop().await;
    drop(pacs);
}

#[tokio::test(flavor = "multi_thread")]
async fn pacs_down_keeps_jobs_queued_across_a_restart_until_it_is_up() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let files = generate(&tmp.path().join("src"), false);
    let port = free_port(); // nothing listens there yet
    let mut gw = Gateway::start(&pacs_toml(port, "")).await;
    fast_retries(gw.context());

    let r = stow_files(gw.http_port, &files).await;
    assert_eq!(
        r.status,
        200,
        "STOW-RS does not wait for the PACS: {}",
        r.text()
    );
    let waiting = wait_queue(gw.context(), 30, "every job tried twice", |jobs| {
        jobs.len() == files.len() && jobs.iter().all(|j| j.attempts >= 2)
    })
    .await;
    for j in &waiting {
        assert_eq!(j.state, "queued", "{j:#?}");
        assert!(j.last_error.contains(PACS_AE), "{j:#?}");
    }
    let r = request(gw.http_port, "GET", "/admin/forward", &[], b"").await;
    assert_eq!(r.status, 200);
    let view = r.json();
    let first = &view["jobs"][0];
    assert_eq!(first["state"], "queued", "{first}");
    assert!(first["next_attempt"].is_string(), "{first}");
    assert!(!first["last_error"].as_str().unwrap_or("").is_empty());

    // Stop beeldbrug with the PACS still down: the queue is in the index, not in memory.
    gw.running.take().expect("running").stop().await;
    let pacs = start_pacs(port, &tmp.path().join("pacs"), tmp.path()).await;
    let toml = format!(
        "[dimse]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
         [storage]\ndata_dir = \"{}\"\n{}",
        gw.data_dir().display(),
        pacs_toml(port, "")
    );
    let running = beeldbrug::server::start(Config::from_toml(&toml).expect("config"))
        .await
        .expect("restart");
    fast_retries(&running.context);
    let done = wait_queue(&running.context, 60, "every job done", |jobs| {
        jobs.len() == files.len() && jobs.iter().all(|j| j.state == "done")
    })
    .await;
    assert!(done
        .iter()
        .all(|j| j.attempts >= 3 && j.last_error.is_empty()));
    assert_pacs_holds(&tmp.path().join("pacs"), &files, &pacs);
    running.stop().await;
    drop(pacs);
}

#[tokio::test(flavor = "multi_thread")]
async fn senders_left_out_and_forwarding_off_queue_nothing() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let files = generate(&tmp.path().join("src"), false);
    let port = free_port();
    for extra in [
        "forward_except = [\"other-hospital\", \"anonymous\"]",
        "forward_stow = false",
    ] {
        let gw = Gateway::start(&pacs_toml(port, extra)).await;
        fast_retries(gw.context());
        let r = stow_files(gw.http_port, &files[..3]).await;
        assert_eq!(r.status, 200, "{extra}: {}", r.text());
        // The queue is written before the STOW-RS response goes out: nothing to wait for.
        assert!(jobs(gw.context()).await.is_empty(), "{extra}: queued");
        let r = request(gw.http_port, "GET", "/admin/forward", &[], b"").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["jobs"], serde_json::json!([]), "{extra}");
        gw.stop().await;
    }

    // The admin view is behind the same decision as DICOMweb.
    let gw = Gateway::start(&format!(
        "[dicomweb]\nallow_anonymous = false\n{}",
        pacs_toml(port, "")
    ))
    .await;
    let r = request(gw.http_port, "GET", "/admin/forward", &[], b"").await;
    assert_eq!(r.status, 401, "{}", r.text());
    gw.stop().await;
}

/// `[pacs] wire_syntax` (issue 13): the forward sends instances stored uncompressed in
/// JPEG-LS lossless to a PACS that accepts it (storescp `+xa`), pixel-equal per pydicom
/// (pyjpegls); compressed instances go as stored, byte-exact.
#[tokio::test(flavor = "multi_thread")]
async fn wire_syntax_compresses_uncompressed_instances_toward_the_pacs() {
    const JLS: &str = "1.2.840.10008.1.2.4.80";
    let tmp = tempfile::tempdir().expect("temp dir");
    let files = generate(&tmp.path().join("src"), true);
    let port = free_port();
    let pacs = start_pacs(port, &tmp.path().join("pacs"), tmp.path()).await;
    let gw = Gateway::start(&pacs_toml(port, &format!("wire_syntax = \"{JLS}\""))).await;
    fast_retries(gw.context());
    let r = stow_files(gw.http_port, &files).await;
    assert_eq!(r.status, 200, "STOW-RS: {}", r.text());
    wait_queue(gw.context(), 60, "every job done", |jobs| {
        jobs.len() == files.len() && jobs.iter().all(|j| j.state == "done")
    })
    .await;
    let received: BTreeMap<String, (String, PathBuf)> = files_under(&tmp.path().join("pacs"))
        .into_iter()
        .map(|p| {
            let (ts, sop, _) = part10(&p);
            (sop, (ts, p))
        })
        .collect();
    assert_eq!(received.len(), files.len(), "{}", pacs.log_tail());
    let mut pairs = Vec::new();
    for f in &files {
        let (ts, path) = &received[&f.sop_uid];
        let uncompressed = matches!(
            f.transfer_syntax.as_str(),
            "1.2.840.10008.1.2" | "1.2.840.10008.1.2.1"
        );
        if uncompressed {
            assert_eq!(ts, JLS, "{} stored as {}", f.sop_uid, f.transfer_syntax);
            pairs.push(format!("{}\t{}", f.path.display(), path.display()));
        } else {
            assert_eq!(ts, &f.transfer_syntax, "{} not as stored", f.sop_uid);
            assert!(part10(path).2 == part10(&f.path).2, "{} changed", f.sop_uid);
        }
    }
    assert!(!pairs.is_empty(), "no uncompressed instance generated");
    let check = "import sys, numpy, pydicom\n\
        for line in sys.stdin:\n\
        \x20   a, b = line.strip().split('\\t')\n\
        \x20   assert numpy.array_equal(pydicom.dcmread(a).pixel_array, pydicom.dcmread(b).pixel_array), b\n";
    let mut child = std::process::Command::new("python3")
        .args(["-c", check])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(pairs.join("\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "pixels differ: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    gw.stop().await;
}
