//! The bounded load test of `benches/load.sh` (issue 16, "Load"): many concurrent DICOMweb
//! clients and DIMSE associations against one or more running gateways for a fixed time,
//! then the gateways' memory and descriptors once the load is gone. Not a timed test: it
//! reports, `load.sh` writes the report down.
//!
//! `cargo bench --bench load -- [options]`:
//!
//! - `--url http://127.0.0.1:P` (repeat for several nodes: each client takes the next, round
//!   robin) and `--pid PID` per node (its `/proc` is read for VmRSS and open descriptors);
//! - `--clients N` DICOMweb clients on their own keep-alive connections, each a loop of
//!   QIDO-RS (patient name with a wildcard), WADO-RS of a whole study, metadata, a rendered
//!   instance; every tenth client is a **slow reader** (a study at 256 KiB/s for at most 5 s,
//!   then it goes) and every tenth a **vanishing client** (64 KiB of a study, then the
//!   connection is dropped);
//! - `--dimse HOST:PORT` and `--assocs N`: N DCMTK processes in a loop, half `storescu` of
//!   `--store-dir` (a re-send of the same instances each time), half `getscu` of a study;
//! - `--seconds S` of load, then `--settle S2` seconds before the last reading.
//!
//! Counts as an error: a well-formed request answered 5xx or cut off (connection error or
//! short body), a DCMTK process that exits non-zero. Slow and vanishing clients count only
//! when the gateway answers them 5xx.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper::Request;
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

const ACCEPT_STUDY: &str = "multipart/related; type=\"application/dicom\"; transfer-syntax=*";
const ACCEPT_JSON: &str = "application/dicom+json";

#[derive(Debug, Clone)]
struct Options {
    urls: Vec<String>,
    pids: Vec<u32>,
    clients: usize,
    dimse: Vec<String>,
    assocs: usize,
    store_dir: Option<String>,
    seconds: u64,
    settle: u64,
}

fn options() -> Options {
    let mut o = Options {
        urls: vec![],
        pids: vec![],
        clients: 200,
        dimse: vec![],
        assocs: 20,
        store_dir: None,
        seconds: 120,
        settle: 15,
    };
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    while let Some(a) = args.next() {
        let mut v = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--url" => o.urls.push(v().trim_end_matches('/').to_string()),
            "--pid" => o.pids.push(v().parse().expect("--pid")),
            "--clients" => o.clients = v().parse().expect("--clients"),
            "--dimse" => o.dimse.push(v()),
            "--assocs" => o.assocs = v().parse().expect("--assocs"),
            "--store-dir" => o.store_dir = Some(v()),
            "--seconds" => o.seconds = v().parse().expect("--seconds"),
            "--settle" => o.settle = v().parse().expect("--settle"),
            other => panic!("unknown option {other}"),
        }
    }
    assert!(!o.urls.is_empty(), "at least one --url");
    o
}

/// One study's instances, from QIDO-RS: (study, series, instance) UIDs.
#[derive(Debug, Clone)]
struct Study {
    uid: String,
    instances: Vec<(String, String)>,
}

#[derive(Default)]
struct Tally {
    /// kind → latencies in seconds of the answered requests.
    latency: BTreeMap<&'static str, Vec<f64>>,
    /// kind → (requests, errors); with the first few error messages.
    counts: BTreeMap<&'static str, (u64, u64)>,
    examples: Vec<String>,
}

impl Tally {
    fn record(&mut self, kind: &'static str, took: Option<f64>, error: Option<String>) {
        let c = self.counts.entry(kind).or_default();
        c.0 += 1;
        if let Some(e) = error {
            c.1 += 1;
            if self.examples.len() < 10 {
                self.examples.push(format!("{kind}: {e}"));
            }
        }
        if let Some(t) = took {
            self.latency.entry(kind).or_default().push(t);
        }
    }
}

fn authority(url: &str) -> &str {
    url.trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or(url)
}

type Sender = http1::SendRequest<Empty<Bytes>>;

async fn connect(url: &str) -> Result<Sender, String> {
    let stream = TcpStream::connect(authority(url))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).ok();
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// How a body is read.
#[derive(Clone, Copy)]
enum Reading {
    Whole,
    /// At most this many bytes per second, for at most 5 s.
    Slow(u64),
    /// This many bytes, then the connection goes.
    Vanish(usize),
}

/// One GET on `sender`; `Ok(status)` when the body was read as `reading` says.
async fn get(
    sender: &mut Sender,
    url: &str,
    path: &str,
    accept: &str,
    reading: Reading,
) -> Result<(u16, u64), String> {
    sender
        .ready()
        .await
        .map_err(|e| format!("not ready: {e}"))?;
    let req = Request::get(path)
        .header(hyper::header::HOST, authority(url))
        .header(hyper::header::ACCEPT, accept)
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let rsp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = rsp.status().as_u16();
    let mut body = rsp.into_body();
    let mut read = 0u64;
    let started = Instant::now();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("body after {read} bytes: {e}"))?;
        if let Some(data) = frame.data_ref() {
            read += data.len() as u64;
        }
        match reading {
            Reading::Whole => {}
            Reading::Slow(rate) => {
                let due = Duration::from_secs_f64(read as f64 / rate as f64);
                if started.elapsed() > Duration::from_secs(5) {
                    return Ok((status, read));
                }
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
            Reading::Vanish(n) if read as usize >= n => return Ok((status, read)),
            Reading::Vanish(_) => {}
        }
    }
    Ok((status, read))
}

async fn discover(url: &str) -> Vec<Study> {
    let mut sender = connect(url).await.expect("connect for discovery");
    let studies = fetch_json(&mut sender, url, "/dicomweb/studies?limit=1000").await;
    let mut out = Vec::new();
    for s in studies.as_array().into_iter().flatten() {
        let Some(uid) = tag(s, "0020000D") else {
            continue;
        };
        let path = format!("/dicomweb/studies/{uid}/instances?limit=10000");
        let rows = fetch_json(&mut sender, url, &path).await;
        let instances = rows
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| Some((tag(r, "0020000E")?, tag(r, "00080018")?)))
            .collect();
        out.push(Study { uid, instances });
    }
    out
}

async fn fetch_json(sender: &mut Sender, url: &str, path: &str) -> serde_json::Value {
    sender.ready().await.expect("ready");
    let req = Request::get(path)
        .header(hyper::header::HOST, authority(url))
        .header(hyper::header::ACCEPT, ACCEPT_JSON)
        .body(Empty::new())
        .unwrap();
    let rsp = sender.send_request(req).await.expect("discovery request");
    let body = rsp.into_body().collect().await.expect("body").to_bytes();
    serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null)
}

fn tag(v: &serde_json::Value, t: &str) -> Option<String> {
    v.get(t)?.get("Value")?.get(0)?.as_str().map(str::to_string)
}

/// A DICOMweb client's loop until `stop`.
async fn client(
    id: usize,
    url: String,
    studies: Arc<Vec<Study>>,
    tally: Arc<Mutex<Tally>>,
    stop: Arc<AtomicBool>,
) {
    let mut sender: Option<Sender> = None;
    let mut n = id;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let study = &studies[n % studies.len()];
        let (kind, path, accept, reading): (&'static str, String, &str, Reading) = match id % 10 {
            0 => (
                "slow reader",
                format!("/dicomweb/studies/{}", study.uid),
                ACCEPT_STUDY,
                Reading::Slow(256 * 1024),
            ),
            1 => (
                "vanishing",
                format!("/dicomweb/studies/{}", study.uid),
                ACCEPT_STUDY,
                Reading::Vanish(64 * 1024),
            ),
            _ => match n % 4 {
                0 => (
                    "QIDO-RS",
                    format!(
                        "/dicomweb/studies?PatientName={}*",
                        ["A", "B", "M", "V"][n % 4]
                    ),
                    ACCEPT_JSON,
                    Reading::Whole,
                ),
                1 => (
                    "WADO-RS study",
                    format!("/dicomweb/studies/{}", study.uid),
                    ACCEPT_STUDY,
                    Reading::Whole,
                ),
                2 => (
                    "metadata",
                    format!("/dicomweb/studies/{}/metadata", study.uid),
                    ACCEPT_JSON,
                    Reading::Whole,
                ),
                _ => {
                    let (series, sop) = &study.instances[n % study.instances.len()];
                    (
                        "rendered",
                        format!(
                            "/dicomweb/studies/{}/series/{series}/instances/{sop}/rendered",
                            study.uid
                        ),
                        "image/jpeg",
                        Reading::Whole,
                    )
                }
            },
        };
        let started = Instant::now();
        let s = match sender.as_mut() {
            Some(s) if !s.is_closed() => s,
            _ => match connect(&url).await {
                Ok(s) => sender.insert(s),
                Err(e) => {
                    tally.lock().unwrap().record(kind, None, Some(e));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let result = get(s, &url, &path, accept, reading).await;
        let took = started.elapsed().as_secs_f64();
        let partial = !matches!(reading, Reading::Whole);
        let error = match &result {
            Ok((status, _)) if *status >= 500 => Some(format!("HTTP {status} for {path}")),
            Ok((status, _)) if *status >= 400 && !partial => {
                Some(format!("HTTP {status} for {path}"))
            }
            Ok(_) => None,
            Err(_) if partial => None,
            Err(e) => Some(e.clone()),
        };
        tally
            .lock()
            .unwrap()
            .record(kind, result.is_ok().then_some(took), error);
        if partial || result.is_err() {
            // The connection is left mid-body: the next request needs a new one.
            sender = None;
        }
    }
}

/// A DCMTK process in a loop until `stop`.
async fn dimse_loop(
    argv: Vec<String>,
    kind: &'static str,
    tally: Arc<Mutex<Tally>>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        let out_dir = tempdir();
        // A blocking thread per run (tokio's `process` feature is not built for one bench).
        let mut cmd = std::process::Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .current_dir(&out_dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let started = Instant::now();
        let result = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .expect("DCMTK run");
        let took = started.elapsed().as_secs_f64();
        let _ = std::fs::remove_dir_all(&out_dir);
        let error = match result {
            Ok(o) if o.status.success() => None,
            Ok(o) => Some(format!(
                "exit {:?}: {}",
                o.status.code(),
                String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            )),
            Err(e) => Some(e.to_string()),
        };
        tally
            .lock()
            .unwrap()
            .record(kind, error.is_none().then_some(took), error);
    }
}

fn tempdir() -> std::path::PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "bb-load-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// (VmRSS in KiB, open descriptors) of a process.
fn reading(pid: u32) -> (u64, usize) {
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    (rss, fds)
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let o = options();
    let studies = Arc::new(discover(&o.urls[0]).await);
    assert!(
        studies.iter().any(|s| !s.instances.is_empty()),
        "no studies with instances at {}",
        o.urls[0]
    );
    let studies: Arc<Vec<Study>> = Arc::new(
        studies
            .iter()
            .filter(|s| !s.instances.is_empty())
            .cloned()
            .collect(),
    );
    let idle: Vec<_> = o.pids.iter().map(|&p| reading(p)).collect();
    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for id in 0..o.clients {
        let url = o.urls[id % o.urls.len()].clone();
        tasks.push(tokio::spawn(client(
            id,
            url,
            studies.clone(),
            tally.clone(),
            stop.clone(),
        )));
    }
    for i in 0..if o.dimse.is_empty() { 0 } else { o.assocs } {
        let (host, port) = o.dimse[i % o.dimse.len()]
            .rsplit_once(':')
            .expect("--dimse HOST:PORT");
        let (argv, kind): (Vec<String>, &'static str) = match (&o.store_dir, i % 2) {
            (Some(dir), 0) => (
                [
                    "/usr/bin/storescu",
                    "-aet",
                    "LOADSTORE",
                    "-aec",
                    "BEELDBRUG",
                    "+sd",
                    "+r",
                ]
                .iter()
                .map(|s| s.to_string())
                .chain([
                    "+sp".into(),
                    "*.dcm".into(),
                    host.into(),
                    port.into(),
                    dir.clone(),
                ])
                .collect(),
                "C-STORE (storescu)",
            ),
            _ => {
                let study = &studies[i % studies.len()].uid;
                (
                    [
                        "/usr/bin/getscu",
                        "-aet",
                        "LOADGET",
                        "-aec",
                        "BEELDBRUG",
                        "-S",
                        "-k",
                    ]
                    .iter()
                    .map(|s| s.to_string())
                    .chain([
                        "QueryRetrieveLevel=STUDY".into(),
                        "-k".into(),
                        format!("StudyInstanceUID={study}"),
                        host.into(),
                        port.into(),
                    ])
                    .collect(),
                    "C-GET (getscu)",
                )
            }
        };
        tasks.push(tokio::spawn(dimse_loop(
            argv,
            kind,
            tally.clone(),
            stop.clone(),
        )));
    }
    // Peak memory and descriptors while the load runs.
    let mut peak: Vec<(u64, usize)> = idle.clone();
    let end = Instant::now() + Duration::from_secs(o.seconds);
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(500)).await;
        for (i, &pid) in o.pids.iter().enumerate() {
            let (rss, fds) = reading(pid);
            peak[i] = (peak[i].0.max(rss), peak[i].1.max(fds));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(60), t).await;
    }
    tokio::time::sleep(Duration::from_secs(o.settle)).await;
    let after: Vec<_> = o.pids.iter().map(|&p| reading(p)).collect();

    let mut t = tally.lock().unwrap();
    println!(
        "{} DICOMweb clients on {} node(s), {} DIMSE associations, {} s of load, {} s to settle\n",
        o.clients,
        o.urls.len(),
        if o.dimse.is_empty() { 0 } else { o.assocs },
        o.seconds,
        o.settle
    );
    println!("| request | done | errors | p50 (ms) | p99 (ms) |\n|---|---:|---:|---:|---:|");
    let counts = t.counts.clone();
    let mut total_errors = 0;
    for (kind, (done, errors)) in &counts {
        total_errors += errors;
        let lat = t.latency.entry(kind).or_default();
        println!(
            "| {kind} | {done} | {errors} | {:.1} | {:.1} |",
            percentile(lat, 0.50) * 1e3,
            percentile(lat, 0.99) * 1e3
        );
    }
    println!("\n| node pid | idle RSS (MiB) | peak RSS | after RSS | after - idle | idle fds | peak fds | after fds |\n|---|---:|---:|---:|---:|---:|---:|---:|");
    for (i, pid) in o.pids.iter().enumerate() {
        println!(
            "| {pid} | {:.1} | {:.1} | {:.1} | {:+.1} | {} | {} | {} |",
            idle[i].0 as f64 / 1024.0,
            peak[i].0 as f64 / 1024.0,
            after[i].0 as f64 / 1024.0,
            (after[i].0 as f64 - idle[i].0 as f64) / 1024.0,
            idle[i].1,
            peak[i].1,
            after[i].1
        );
    }
    for e in &t.examples {
        println!("error: {e}");
    }
    println!("\nerrors: {total_errors}");
}
