//! The quirky PACS (tests/pacs/quirky_pacs.py, pynetdicom) as a child process: a Q/R SCP
//! serving a folder of Part 10 files, switchable into the ways real PACSs misbehave
//! (`--early-final`, `--fail-compressed`, `--no-move-originator`, `--services move`, ...;
//! the script's docstring lists every switch). Killed when dropped.

use super::peer::PeerProcess;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long the PACS may take to index its folder and print `READY <port>`.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A running quirky PACS on 127.0.0.1; killed (and reaped) when dropped.
pub struct QuirkyPacs {
    peer: PeerProcess,
    port: u16,
    ae_title: String,
    _dir: tempfile::TempDir,
}

impl QuirkyPacs {
    /// Start it serving `storage` as `ae_title`, with extra switches such as
    /// `&["--early-final", "--pause", "0.5"]`. Blocks (briefly, up to 20 s) until it prints
    /// `READY <port>`; panics with its log when it exits or does not get ready.
    pub fn start(storage: &Path, ae_title: &str, flags: &[&str]) -> QuirkyPacs {
        Self::start_with_destinations(storage, ae_title, flags, &[])
    }

    /// As [`start`](Self::start), knowing C-MOVE destinations `(AE title, port)` on
    /// 127.0.0.1 (any other Move Destination gets 0xA801).
    pub fn start_with_destinations(
        storage: &Path,
        ae_title: &str,
        flags: &[&str],
        destinations: &[(&str, u16)],
    ) -> QuirkyPacs {
        let dir = tempfile::tempdir().expect("temp dir");
        let storage = storage
            .canonicalize()
            .unwrap_or_else(|e| panic!("quirky PACS storage {}: {e}", storage.display()));
        let port = super::free_port();
        let mut args: Vec<String> = vec![
            script().display().to_string(),
            "--port".into(),
            port.to_string(),
            "--ae-title".into(),
            ae_title.into(),
            "--storage".into(),
            storage.display().to_string(),
        ];
        for (ae, dest_port) in destinations {
            args.push("--destination".into());
            args.push(destination(ae, *dest_port));
        }
        args.extend(flags.iter().map(|f| f.to_string()));
        let mut peer = PeerProcess::spawn("quirky-pacs", Path::new("python3"), &args, dir.path());
        wait_ready(&mut peer, port);
        QuirkyPacs {
            peer,
            port,
            ae_title: ae_title.to_string(),
            _dir: dir,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn ae_title(&self) -> &str {
        &self.ae_title
    }

    /// The last few KB of its log (associations, sub-operations), for failure messages.
    pub fn log_tail(&self) -> String {
        self.peer.log_tail()
    }
}

/// `--destination` value for a C-MOVE destination on loopback: `AE=127.0.0.1:PORT`.
pub fn destination(ae: &str, port: u16) -> String {
    format!("{ae}=127.0.0.1:{port}")
}

/// tests/pacs/quirky_pacs.py in this checkout.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pacs/quirky_pacs.py")
}

/// Wait for the `READY <port>` line in the peer's log (stdout and stderr share it).
fn wait_ready(peer: &mut PeerProcess, port: u16) {
    let ready = format!("READY {port}\n");
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if peer.log_tail().contains(&ready) {
            return;
        }
        if let Ok(Some(status)) = peer.child.try_wait() {
            panic!(
                "quirky PACS exited ({status}) before it was ready (needs python3 with \
                 `pip install pynetdicom==3.0.4 pydicom==3.0.2 numpy pillow`)\n{}",
                peer.log_tail()
            );
        }
        assert!(
            Instant::now() < deadline,
            "quirky PACS not ready on port {port} within {} s\n{}",
            READY_TIMEOUT.as_secs(),
            peer.log_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
