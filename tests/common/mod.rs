//! Shared test support: a gateway on 127.0.0.1:0 with a temp data dir, and real peers.
#![allow(dead_code)]

pub mod dcmqrscp;
pub mod gateway_mode;
pub mod http;
pub mod ohif;
pub mod orthanc;
pub mod peer;
pub mod pki;
pub mod postgres;
pub mod quirky;
pub mod s3;
pub mod smallfs;

use beeldbrug::config::Config;
use beeldbrug::server::{start, Running};
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Gateway {
    pub running: Option<Running>,
    pub dir: tempfile::TempDir,
    data: PathBuf,
    pub port: u16,
    pub http_port: u16,
}

impl Gateway {
    /// Start a gateway with extra TOML on top of the defaults (listeners on port 0).
    pub async fn start(extra_toml: &str) -> Gateway {
        Self::start_on("127.0.0.1:0", extra_toml).await
    }

    /// Start with the DIMSE listener on a fixed port (a peer must know it in advance, e.g.
    /// as a C-MOVE destination).
    pub async fn start_dimse_on(dimse_port: u16, extra_toml: &str) -> Gateway {
        Self::start_full(
            &format!("127.0.0.1:{dimse_port}"),
            "127.0.0.1:0",
            extra_toml,
        )
        .await
    }

    /// Start with HTTP on a fixed free port whose URL is the DICOMweb `public_url`: clients
    /// such as dicomweb-client send a Host header without the port, so a URL built from
    /// Host would lose it.
    pub async fn start_public(extra_toml: &str) -> Gateway {
        let port = free_port();
        let extra =
            format!("[dicomweb]\npublic_url = \"http://127.0.0.1:{port}/dicomweb\"\n{extra_toml}");
        Self::start_on(&format!("127.0.0.1:{port}"), &extra).await
    }

    /// Start with HTTP on `http_listen` (a fixed port a peer must know in advance).
    pub async fn start_on(http_listen: &str, extra_toml: &str) -> Gateway {
        Self::start_full("127.0.0.1:0", http_listen, extra_toml).await
    }

    /// Start with the data directory at `data_dir` (e.g. on a small filesystem).
    pub async fn start_in(data_dir: &Path, extra_toml: &str) -> Gateway {
        Self::start_with("127.0.0.1:0", "127.0.0.1:0", Some(data_dir), extra_toml).await
    }

    async fn start_full(dimse_listen: &str, http_listen: &str, extra_toml: &str) -> Gateway {
        Self::start_with(dimse_listen, http_listen, None, extra_toml).await
    }

    async fn start_with(
        dimse_listen: &str,
        http_listen: &str,
        data_dir: Option<&Path>,
        extra_toml: &str,
    ) -> Gateway {
        let dir = tempfile::tempdir().expect("temp dir");
        let data_dir = data_dir.map_or_else(|| dir.path().join("data"), Path::to_path_buf);
        let toml = format!(
            "[dimse]\nlisten = \"{dimse_listen}\"\n[http]\nlisten = \"{http_listen}\"\n[storage]\ndata_dir = \"{}\"\n{}",
            data_dir.display(),
            extra_toml
        );
        let config = Config::from_toml(&merge_sections(&toml)).expect("test config");
        let running = start(config).await.expect("gateway starts");
        let port = running.dimse_addr.port();
        let http_port = running.http_addr.port();
        Gateway {
            running: Some(running),
            dir,
            data: data_dir,
            port,
            http_port,
        }
    }

    pub fn dicomweb_url(&self) -> String {
        format!("http://127.0.0.1:{}/dicomweb", self.http_port)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data.clone()
    }

    pub fn context(&self) -> &beeldbrug::server::Context {
        &self.running.as_ref().expect("running").context
    }

    /// C-STORE every file under `dir` into this gateway with DCMTK storescu (recursively,
    /// syntaxes as the files are), which must succeed.
    pub fn store_dir(&self, dir: &Path) {
        let port = self.port.to_string();
        let out = dcmtk(
            "storescu",
            &[
                "-aec",
                "BEELDBRUG",
                "127.0.0.1",
                &port,
                "+sd",
                "+r",
                dir.to_str().unwrap(),
            ],
        );
        assert!(out.status.success(), "storescu: {out:?}");
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
    }
}

/// TOML forbids a table twice; tests pass `[dimse]` keys too, so fold repeated sections.
pub fn merge_sections(toml: &str) -> String {
    let mut sections: Vec<(String, Vec<String>)> = vec![(String::new(), vec![])];
    for line in toml.lines() {
        let t = line.trim();
        if t.starts_with('[') && !t.starts_with("[[") {
            if let Some(pos) = sections.iter().position(|(name, _)| name == t) {
                let s = sections.remove(pos);
                sections.push(s);
            } else {
                sections.push((t.to_string(), vec![]));
            }
        } else if t.starts_with("[[") {
            sections.push((t.to_string(), vec![]));
            // array tables are never merged: give it a unique key
            let last = sections.len() - 1;
            sections[last].0 = format!("{t}#{last}");
        } else {
            let last = sections.len() - 1;
            sections[last].1.push(line.to_string());
        }
    }
    let mut out = String::new();
    for (name, lines) in sections {
        if !name.is_empty() {
            out.push_str(name.split('#').next().unwrap_or(&name));
            out.push('\n');
        }
        for l in lines {
            out.push_str(&l);
            out.push('\n');
        }
    }
    out
}

/// Fail (never skip) when a real peer is missing, saying how to install it.
pub fn require_tool(tool: &str) -> PathBuf {
    let candidates = [format!("/usr/bin/{tool}"), format!("/usr/sbin/{tool}")];
    for c in &candidates {
        if Path::new(c).exists() {
            return PathBuf::from(c);
        }
    }
    panic!("required peer `{tool}` is not installed: run `apt-get install -y dcmtk orthanc` (or `bash .ci/run`, which installs the test peers)");
}

/// Run a DCMTK tool (from /usr/bin, never pynetdicom's shadows) with TCP_NODELAY=1.
pub fn dcmtk(tool: &str, args: &[&str]) -> std::process::Output {
    let path = require_tool(tool);
    Command::new(path)
        .args(args)
        .env("TCP_NODELAY", "1")
        .output()
        .expect("run DCMTK tool")
}

/// C-GET one instance (`[study, series, sop]`) from a gateway on `port` with pynetdicom
/// (`tests/scu/c_get_one.py`), proposing only `storage_syntax` for the storage sub-operations
/// (`None`: Implicit VR Little Endian): its JSON report.
pub async fn c_get_one(
    port: u16,
    [study, series, sop]: [&str; 3],
    storage_syntax: Option<&str>,
) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scu/c_get_one.py");
    let mut args: Vec<String> = vec![
        script.to_str().unwrap().to_string(),
        "127.0.0.1".into(),
        port.to_string(),
        "TEST".into(),
        "BEELDBRUG".into(),
        study.into(),
        series.into(),
        sop.into(),
    ];
    args.extend(storage_syntax.map(String::from));
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        tokio::task::spawn_blocking(move || {
            std::process::Command::new("python3").args(&args).output()
        }),
    )
    .await
    .expect("the pynetdicom C-GET hung")
    .unwrap()
    .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "pynetdicom C-GET report ({e}): {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// A free TCP port on loopback (for peers that cannot bind port 0 themselves).
/// A port for a server that must be told its port before it starts (a peer's C-MOVE
/// destination, Orthanc's config). It comes from below the kernel's ephemeral range
/// (32768–60999 on Linux): a port taken from that range with `bind(0)` and released can be
/// handed to another test's outgoing connection before the server binds it (CI saw
/// AddrInUse). Ports are spread by process id and never handed out twice in one process.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7919);
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOW + start.wrapping_add(n) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {LOW}..{}", LOW + SPAN)
}

/// Generate a small deterministic data set into `dir`.
pub fn generate(dir: &Path, encapsulated: bool) -> Vec<beeldbrug::testdata::GeneratedFile> {
    let args = beeldbrug::testdata::GenerateArgs {
        out: dir.to_path_buf(),
        seed: 7,
        patients: 2,
        ct_slices: 4,
        mr_slices: 2,
        dx: false,
        multiframe_frames: 0,
        frame_size: 64,
        encapsulated,
        implicit: true,
    };
    beeldbrug::testdata::generate(&args).expect("generate test data")
}
