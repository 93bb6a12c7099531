//! The operations log of the real binary (issue 12 item 9): `beeldbrug serve` with DCMTK
//! echoscu/storescu associations and curl requests, its stderr read back. One line per
//! association and per HTTP request, with the request id its audit records carry, no patient
//! data in HTTP lines, no colour codes off a terminal, and JSON lines on request.

mod common;

use beeldbrug::store::index::SqliteIndex;
use beeldbrug::store::Index;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A running `beeldbrug serve` with stderr going to a file.
struct Served {
    child: Child,
    /// Kept open: the gateway may print more.
    _stdout: BufReader<std::process::ChildStdout>,
    dir: tempfile::TempDir,
    stderr: PathBuf,
    dimse_port: u16,
    http_port: u16,
}

fn serve(log_format: Option<&str>) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("beeldbrug.toml");
    std::fs::write(
        &config,
        format!(
            "[dimse]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
             [storage]\ndata_dir = \"{}\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let stderr = dir.path().join("stderr.log");
    let mut command = Command::new(env!("CARGO_BIN_EXE_beeldbrug"));
    command
        .args(["serve", "--config", config.to_str().unwrap()])
        .env_remove("BEELDBRUG_LOG")
        .env_remove("BEELDBRUG_LOG_FORMAT")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr).unwrap());
    if let Some(format) = log_format {
        command.env("BEELDBRUG_LOG_FORMAT", format);
    }
    let mut child = command.spawn().expect("start beeldbrug serve");
    // "beeldbrug: DIMSE on 127.0.0.1:P, HTTP on 127.0.0.1:Q"
    let mut line = String::new();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    stdout.read_line(&mut line).unwrap();
    let port = |label: &str| -> u16 {
        let rest = line
            .split(label)
            .nth(1)
            .unwrap_or_else(|| panic!("no {label} in {line:?}"));
        rest.split([',', '\n'])
            .next()
            .unwrap()
            .trim()
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (dimse_port, http_port) = (port("DIMSE on "), port("HTTP on "));
    Served {
        child,
        _stdout: stdout,
        dir,
        stderr,
        dimse_port,
        http_port,
    }
}

impl Served {
    /// SIGTERM, wait, and the log.
    fn stop(mut self) -> (String, tempfile::TempDir) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        (std::fs::read_to_string(&self.stderr).unwrap(), self.dir)
    }
}

fn dcmtk_ok(tool: &str, args: &[&str]) {
    let out = common::dcmtk(tool, args);
    assert!(
        out.status.success(),
        "{tool}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// curl GET: (status, X-Request-Id).
fn curl_get(url: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-D", "-", url])
        .output()
        .expect("run curl");
    let head = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let id = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("x-request-id")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    (status, id)
}

/// Traffic: an echo, a store of `files`, a rejected association (wrong called AE), a QIDO
/// with a patient name in the query string and a WADO of a series. Returns the HTTP
/// request id of the WADO.
fn traffic(s: &Served, files: &[beeldbrug::testdata::GeneratedFile]) -> String {
    let port = s.dimse_port.to_string();
    dcmtk_ok(
        "echoscu",
        &["-aet", "ECHOSCU", "-aec", "BEELDBRUG", "127.0.0.1", &port],
    );
    let mut args = vec!["-aet", "STORESCU", "-aec", "BEELDBRUG", "127.0.0.1", &port];
    let paths: Vec<String> = files.iter().map(|f| f.path.display().to_string()).collect();
    args.extend(paths.iter().map(String::as_str));
    dcmtk_ok("storescu", &args);
    let out = common::dcmtk(
        "echoscu",
        &["-aet", "ECHOSCU", "-aec", "NOT_US", "127.0.0.1", &port],
    );
    assert!(!out.status.success(), "a wrong called AE is rejected");
    let f = &files[0];
    let base = format!("http://127.0.0.1:{}/dicomweb", s.http_port);
    let (status, _) = curl_get(&format!(
        "{base}/studies/{}/series?PatientName=Secret^Name",
        f.study_uid
    ));
    assert_eq!(status, 204, "no such patient name");
    let (status, id) = curl_get(&format!(
        "{base}/studies/{}/series/{}",
        f.study_uid, f.series_uid
    ));
    assert_eq!(status, 200);
    assert!(!id.is_empty(), "X-Request-Id is sent");
    id
}

fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {name}="))? + name.len() + 2;
    line[start..].split(' ').next()
}

/// Audit records whose detail names this request id.
async fn audited_with(data_dir: &Path, id: &str) -> usize {
    let url = format!("sqlite://{}", data_dir.join("index.db").display());
    let index = SqliteIndex::open(&url).await.unwrap();
    let records = index.audit_records(0, 10_000).await.unwrap();
    index.close().await;
    records
        .iter()
        .filter(|r| r.detail.ends_with(&format!("(request {id})")))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn one_text_line_per_association_and_request() {
    let data = tempfile::tempdir().unwrap();
    let files = common::generate(data.path(), false);
    let s = serve(None);
    let wado_id = tokio::task::block_in_place(|| traffic(&s, &files));
    let (log, dir) = s.stop();

    assert!(
        !log.contains("\x1b["),
        "no ANSI codes off a terminal:\n{log}"
    );
    let lines: Vec<&str> = log.lines().collect();
    let associations: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.contains(" association ") || l.ends_with(" association"))
        .filter(|l| l.contains("outcome="))
        .collect();
    let echo = associations
        .iter()
        .find(|l| field(l, "calling_ae") == Some("ECHOSCU") && l.contains("outcome=released"))
        .unwrap_or_else(|| panic!("no echo association line in\n{log}"));
    assert_eq!(field(echo, "echoes"), Some("1"), "{echo}");
    assert!(field(echo, "peer").unwrap().starts_with("127.0.0.1:"));
    assert!(field(echo, "duration_ms").is_some());
    assert!(field(echo, "request_id").is_some());
    let n = files.len().to_string();
    let store = associations
        .iter()
        .find(|l| field(l, "calling_ae") == Some("STORESCU"))
        .unwrap_or_else(|| panic!("no store association line in\n{log}"));
    assert_eq!(field(store, "stores"), Some(n.as_str()), "{store}");
    assert_eq!(field(store, "stored"), Some(n.as_str()), "{store}");
    assert_eq!(field(store, "outcome"), Some("released"));
    let store_id = field(store, "request_id").unwrap();
    assert!(
        associations
            .iter()
            .any(|l| field(l, "calling_ae") == Some("ECHOSCU")
                && field(l, "outcome") == Some("rejected")),
        "a rejected association is logged:\n{log}"
    );

    let requests: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.contains("http request"))
        .collect();
    let wado = requests
        .iter()
        .find(|l| field(l, "request_id") == Some(wado_id.as_str()))
        .unwrap_or_else(|| panic!("no line for request {wado_id} in\n{log}"));
    assert_eq!(
        field(wado, "route"),
        Some("/dicomweb/studies/{study}/series/{series}")
    );
    assert_eq!(field(wado, "method"), Some("GET"));
    assert_eq!(field(wado, "status"), Some("200"));
    assert!(field(wado, "bytes").unwrap().parse::<u64>().unwrap() > 1000);
    assert!(field(wado, "duration_ms").is_some());
    for line in &requests {
        for secret in [
            files[0].study_uid.as_str(),
            files[0].series_uid.as_str(),
            "Secret",
            files[0].patient_id.as_str(),
        ] {
            assert!(!line.contains(secret), "patient data {secret:?} in {line}");
        }
    }
    assert!(requests
        .iter()
        .any(|l| field(l, "route") == Some("/dicomweb/studies/{study}/series")));

    // The same ids are in the audit records of that request and that association.
    let data_dir = dir.path().join("data");
    assert_eq!(audited_with(&data_dir, &wado_id).await, 1);
    assert_eq!(audited_with(&data_dir, store_id).await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn json_lines_on_request() {
    let data = tempfile::tempdir().unwrap();
    let files = common::generate(data.path(), false);
    let s = serve(Some("json"));
    let wado_id = tokio::task::block_in_place(|| traffic(&s, &files));
    let (log, _dir) = s.stop();

    let mut events = Vec::new();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        events.push(value);
    }
    let association = events
        .iter()
        .find(|e| e["message"] == "association" && e["calling_ae"] == "STORESCU")
        .unwrap_or_else(|| panic!("no association event in\n{log}"));
    assert_eq!(association["outcome"], "released");
    assert_eq!(association["stored"], files.len() as u64);
    let request = events
        .iter()
        .find(|e| e["message"] == "http request" && e["request_id"] == wado_id.as_str())
        .unwrap_or_else(|| panic!("no request event in\n{log}"));
    assert_eq!(
        request["route"],
        "/dicomweb/studies/{study}/series/{series}"
    );
    assert_eq!(request["status"], 200);
    assert_eq!(request["level"], "INFO");
}
