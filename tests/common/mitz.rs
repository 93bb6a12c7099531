//! A Mitz simulator for tests: `beeldbrug mitz-sim` as a child process on 127.0.0.1:0
//! (killed on drop), or the same simulator in-process.
//!
//! ```ignore
//! let mitz = MitzSim::start(&[("999999990", ConsentDecision::Permit)]);
//! let toml = format!("[trust.consent]\nurl = \"{}\"\n", mitz.url);   // or mitz.config_toml()
//! assert_eq!(mitz.queries(), 0);
//! ```
#![allow(dead_code)]

use beeldbrug::trust::consent::simulator::{self, ConsentTable, Simulator};
use beeldbrug::trust::consent::ConsentDecision;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

/// `beeldbrug mitz-sim` running as a child process.
pub struct MitzSim {
    /// `http://127.0.0.1:PORT/` (or `https://…` from [`MitzSim::start_tls`]).
    pub url: String,
    pub addr: std::net::SocketAddr,
    child: Child,
    /// Holds the consent table file.
    pub dir: tempfile::TempDir,
}

impl MitzSim {
    /// One row per BSN, for any requester and purpose; other BSNs are NotApplicable.
    pub fn start(rows: &[(&str, ConsentDecision)]) -> MitzSim {
        MitzSim::start_table(&table_toml(rows))
    }

    /// A simulator answering from a TOML consent table (`[[consent]]` rows).
    pub fn start_table(toml: &str) -> MitzSim {
        MitzSim::spawn(toml, &[])
    }

    /// Over HTTPS with `cert`/`key`; with `client_ca`, a client certificate is required.
    pub fn start_tls(toml: &str, cert: &Path, key: &Path, client_ca: Option<&Path>) -> MitzSim {
        let mut args = vec![
            "--cert".to_string(),
            cert.display().to_string(),
            "--key".to_string(),
            key.display().to_string(),
        ];
        if let Some(ca) = client_ca {
            args.push("--client-ca".into());
            args.push(ca.display().to_string());
        }
        MitzSim::spawn(toml, &args)
    }

    fn spawn(toml: &str, extra: &[String]) -> MitzSim {
        let dir = tempfile::tempdir().expect("temp dir");
        let table = dir.path().join("consents.toml");
        std::fs::write(&table, toml).expect("write consent table");
        let log = dir.path().join("mitz-sim.log");
        let stderr = std::fs::File::create(&log).expect("log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_beeldbrug"))
            .arg("mitz-sim")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--consents")
            .arg(&table)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start beeldbrug mitz-sim");
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        stdout.read_line(&mut line).expect("read mitz-sim stdout");
        // Keep draining, so a later write never meets a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        let Some(url) = line
            .split_whitespace()
            .last()
            .filter(|u| u.starts_with("http"))
        else {
            let _ = child.kill();
            let _ = child.wait();
            let err = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("mitz-sim did not start: {line:?} {err}");
        };
        let url = url.to_string();
        let addr = url
            .split("//")
            .nth(1)
            .and_then(|rest| rest.trim_end_matches('/').parse().ok())
            .expect("mitz-sim address");
        MitzSim {
            url,
            addr,
            child,
            dir,
        }
    }

    /// `[trust.consent]` pointing at this simulator (plain HTTP), answers not cached.
    pub fn config_toml(&self) -> String {
        format!(
            "[trust.consent]\nurl = \"{}\"\ncache_secs = 0\ntimeout_secs = 5\n",
            self.url
        )
    }

    /// Queries answered so far (`GET /stats`; plain HTTP simulators only).
    pub fn queries(&self) -> u64 {
        stats(self.addr)
    }

    /// Open questions (where may data be found) answered so far.
    pub fn open_queries(&self) -> u64 {
        stat(self.addr, "open_queries")
    }
}

impl Drop for MitzSim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The simulator in this process (plain HTTP or with a rustls server configuration).
pub struct InProcessMitz {
    pub url: String,
    pub simulator: Arc<Simulator>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl InProcessMitz {
    pub async fn start(
        table: ConsentTable,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> InProcessMitz {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let scheme = if tls.is_some() { "https" } else { "http" };
        let simulator = Simulator::new(table);
        let task = tokio::spawn(simulator::serve(listener, simulator.clone(), tls));
        InProcessMitz {
            url: format!("{scheme}://{addr}/"),
            simulator,
            task,
        }
    }

    pub fn queries(&self) -> u64 {
        self.simulator.queries()
    }
}

impl Drop for InProcessMitz {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A consent table of one row per BSN.
pub fn table_toml(rows: &[(&str, ConsentDecision)]) -> String {
    rows.iter()
        .map(|(bsn, d)| format!("[[consent]]\nbsn = \"{bsn}\"\ndecision = \"{d}\"\n\n"))
        .collect()
}

/// `GET /stats` → queries.
pub fn stats(addr: std::net::SocketAddr) -> u64 {
    stat(addr, "queries")
}

/// One counter of `GET /stats`.
pub fn stat(addr: std::net::SocketAddr, key: &str) -> u64 {
    let (status, body) = raw_http(
        addr,
        &format!("GET /stats HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("stats JSON");
    json[key].as_u64().expect(key)
}

/// One raw HTTP/1.1 exchange (the request must say `Connection: close`): status and body.
pub fn raw_http(addr: std::net::SocketAddr, request: &str) -> (u16, String) {
    let mut tcp = std::net::TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    tcp.write_all(request.as_bytes()).expect("write");
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).expect("read");
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}
