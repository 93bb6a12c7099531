//! The real binary with traces (issue 16 item 3): `beeldbrug serve` as a child process, the
//! OTLP/HTTP receiver (tests/otlp/receiver.py, the official `opentelemetry-proto` messages)
//! and what it wrote, and the audit records a stopped gateway left in its index. Included by
//! `#[path]` where used (tests/telemetry.rs, tests/xca_initiating.rs).
#![allow(dead_code)]

use beeldbrug::store::index::{AuditRecord, SqliteIndex};
use beeldbrug::store::Index;
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The OTLP receiver on a free port: (process, port).
pub fn receiver(out: &Path) -> (Killed, u16) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/otlp/receiver.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg(out)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start tests/otlp/receiver.py");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().parse().unwrap_or_else(|_| {
        panic!("receiver.py printed {line:?} (pip install opentelemetry-proto==1.45.2)")
    });
    (Killed(child), port)
}

/// `beeldbrug serve` with `toml`, stderr to `stderr`: (process, DIMSE port, HTTP port).
pub fn serve(config: &Path, stderr: &Path) -> (Killed, u16, u16) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_beeldbrug"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .env_remove("BEELDBRUG_LOG")
        .env_remove("BEELDBRUG_LOG_FORMAT")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(stderr).unwrap())
        .spawn()
        .expect("start beeldbrug serve");
    // "beeldbrug: DIMSE on 127.0.0.1:P, HTTP on 127.0.0.1:Q"
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = |label: &str| -> u16 {
        let rest = line
            .split(label)
            .nth(1)
            .unwrap_or_else(|| panic!("no {label} in {line:?}"));
        let addr = rest.split([',', '\n']).next().unwrap().trim();
        addr.rsplit(':').next().unwrap().parse().unwrap()
    };
    let (dimse, http) = (port("DIMSE on "), port("HTTP on "));
    (Killed(child), dimse, http)
}

/// One exported span as the receiver wrote it.
#[derive(Debug, Clone)]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    pub parent: String,
    pub name: String,
    pub kind: String,
    pub status: String,
    pub service: String,
}

pub fn spans(file: &Path) -> Vec<Span> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .map(|l| {
            let v: Json = serde_json::from_str(l).unwrap();
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            Span {
                trace_id: s("trace_id"),
                span_id: s("span_id"),
                parent: s("parent_span_id"),
                name: s("name"),
                kind: s("kind"),
                status: s("status"),
                service: s("service"),
            }
        })
        .collect()
}

/// The spans of one trace by span id.
pub fn trace(all: &[Span], trace_id: &str) -> BTreeMap<String, Span> {
    all.iter()
        .filter(|s| s.trace_id == trace_id)
        .map(|s| (s.span_id.clone(), s.clone()))
        .collect()
}

/// Whether `ancestor` is `span`'s parent, grandparent, ... within `trace`.
pub fn descends(trace: &BTreeMap<String, Span>, span: &Span, ancestor: &str) -> bool {
    let mut at = span.parent.clone();
    while let Some(parent) = trace.get(&at) {
        if parent.span_id == ancestor {
            return true;
        }
        at = parent.parent.clone();
    }
    false
}

pub async fn audit_records(data_dir: &Path) -> Vec<AuditRecord> {
    let url = format!("sqlite://{}", data_dir.join("index.db").display());
    let index = SqliteIndex::open(&url).await.unwrap();
    let records = index.audit_records(0, 10_000).await.unwrap();
    index.close().await;
    records
}

/// SIGTERM and wait: whatever is still queued is exported before the process ends.
pub async fn stop(process: &mut Killed) {
    let _ = Command::new("kill")
        .args(["-TERM", &process.0.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while process.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
