//! Shutdown with a deadline (issue 12, item 8), against the real binary and real peers: an
//! idle association (pynetdicom) no longer holds the process past `server.shutdown_grace_secs`
//! (it gets an A-ABORT), a second SIGTERM stops at once, and whether the deadline aborts a
//! storescu in the middle of its transfer or the process is killed while draining, every
//! instance that got a success status is on disk and in the index after a restart.

mod common;

use beeldbrug::core::Selection;
use common::{require_tool, Gateway};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// `beeldbrug serve` as a child process, with the DIMSE port it bound.
struct Served {
    child: Child,
    dimse_port: u16,
    _config: tempfile::TempDir,
}

impl Served {
    fn start(data_dir: &Path, grace_secs: u64) -> Served {
        let config = tempfile::tempdir().unwrap();
        let file = config.path().join("beeldbrug.toml");
        std::fs::write(
            &file,
            format!(
                "[dimse]\nlisten = \"127.0.0.1:0\"\ntimeout_secs = 300\n\
                 [http]\nlisten = \"127.0.0.1:0\"\n\
                 [storage]\ndata_dir = \"{}\"\nmin_free_bytes = 0\n\
                 [server]\nshutdown_grace_secs = {grace_secs}\n",
                data_dir.display()
            ),
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_beeldbrug"))
            .args(["serve", "--config"])
            .arg(&file)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run beeldbrug serve");
        // "beeldbrug: DIMSE on 127.0.0.1:X, HTTP on 127.0.0.1:Y"
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("read the serving line");
        let port_after = |what: &str| -> u16 {
            line.split(what)
                .nth(1)
                .and_then(|rest| rest.split(|c: char| c == ',' || c.is_whitespace()).next())
                .and_then(|addr| addr.rsplit(':').next())
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("no {what} port in {line:?}"))
        };
        Served {
            dimse_port: port_after("DIMSE on "),
            child,
            _config: config,
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name}");
    }

    /// Wait for the process to end; how long it took, or `None` after `limit`.
    fn exits_within(&mut self, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        loop {
            if self.child.try_wait().unwrap().is_some() {
                return Some(start.elapsed());
            }
            if start.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The lines a child process prints (stdout and stderr together), as they come.
fn lines_of(mut child: Child) -> (Child, mpsc::Receiver<String>) {
    let (tx, rx) = mpsc::channel();
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    (child, rx)
}

/// Wait for a line containing `what` (at most `limit`).
fn wait_for_line(rx: &mpsc::Receiver<String>, what: &str, limit: Duration) -> Vec<String> {
    let start = Instant::now();
    let mut seen = Vec::new();
    while start.elapsed() < limit {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            let found = line.contains(what);
            seen.push(line);
            if found {
                return seen;
            }
        }
    }
    panic!("no line with {what:?} within {limit:?}; saw: {seen:#?}");
}

/// An association (pynetdicom) that is opened and then left idle: prints "associated",
/// and once the association ends, "aborted" (A-ABORT or the connection closed) or "released".
const IDLE_ASSOCIATION: &str = r#"
import sys, time
from pynetdicom import AE
ae = AE(ae_title="IDLE")
ae.add_requested_context("1.2.840.10008.1.1")
ae.network_timeout = 600
ae.acse_timeout = 10
assoc = ae.associate("127.0.0.1", int(sys.argv[1]), ae_title="BEELDBRUG")
print("associated" if assoc.is_established else "refused", flush=True)
while assoc.is_established:
    time.sleep(0.05)
print("aborted" if assoc.is_aborted else "released" if assoc.is_released else "ended", flush=True)
"#;

fn idle_association(port: u16) -> (Child, mpsc::Receiver<String>) {
    let child = Command::new("python3")
        .args(["-c", IDLE_ASSOCIATION, &port.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 with pynetdicom");
    let (child, rx) = lines_of(child);
    wait_for_line(&rx, "associated", Duration::from_secs(20));
    (child, rx)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_association_is_aborted_at_the_deadline() {
    let data = tempfile::tempdir().unwrap();
    let grace = Duration::from_secs(2);
    let mut gw = Served::start(data.path(), grace.as_secs());
    let (mut idle, rx) = idle_association(gw.dimse_port);

    gw.signal("TERM");
    let took = gw
        .exits_within(grace + Duration::from_secs(5))
        .expect("the process ends within the deadline and a margin");
    assert!(
        took >= grace - Duration::from_millis(500),
        "the idle association was given the deadline to finish, not cut at once ({took:?})"
    );
    let seen = wait_for_line(&rx, "aborted", Duration::from_secs(5));
    assert!(!seen.iter().any(|l| l.contains("released")), "{seen:?}");
    let _ = idle.kill();
    let _ = idle.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_signal_stops_at_once() {
    let data = tempfile::tempdir().unwrap();
    let mut gw = Served::start(data.path(), 60);
    let (mut idle, _rx) = idle_association(gw.dimse_port);

    gw.signal("TERM");
    assert!(
        gw.exits_within(Duration::from_secs(1)).is_none(),
        "draining: the idle association keeps the process within its deadline"
    );
    gw.signal("TERM");
    gw.exits_within(Duration::from_secs(3))
        .expect("a second SIGTERM stops at once");
    let _ = idle.kill();
    let _ = idle.wait();

    // Ctrl-C twice likewise.
    let mut gw = Served::start(data.path(), 60);
    let (mut idle, _rx) = idle_association(gw.dimse_port);
    gw.signal("INT");
    assert!(gw.exits_within(Duration::from_secs(1)).is_none());
    gw.signal("INT");
    gw.exits_within(Duration::from_secs(3))
        .expect("a second SIGINT stops at once");
    let _ = idle.kill();
    let _ = idle.wait();
}

/// storescu sending the test files over and over on one association (`-v`: one "Received
/// Store Response" line per file); the files it got a success status for.
struct Sender {
    child: Child,
    rx: mpsc::Receiver<String>,
    log: Vec<String>,
}

impl Sender {
    fn start(port: u16, files: &[PathBuf], rounds: usize) -> Sender {
        let mut cmd = Command::new(require_tool("storescu"));
        cmd.env("TCP_NODELAY", "1").args([
            "-v",
            "-aec",
            "BEELDBRUG",
            "127.0.0.1",
            &port.to_string(),
        ]);
        for _ in 0..rounds {
            cmd.args(files);
        }
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run storescu");
        let (child, rx) = lines_of(child);
        Sender {
            child,
            rx,
            log: Vec::new(),
        }
    }

    /// Wait until `n` responses came back.
    fn wait_for_responses(&mut self, n: usize) {
        let start = Instant::now();
        while self.responses() < n {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "storescu got no {n} responses: {:#?}",
                self.log
            );
            if let Ok(line) = self.rx.recv_timeout(Duration::from_millis(100)) {
                self.log.push(line);
            }
        }
    }

    fn responses(&self) -> usize {
        self.log
            .iter()
            .filter(|l| l.contains("Received Store Response"))
            .count()
    }

    /// Let storescu end, then the files each success status answered.
    fn acknowledged(mut self) -> (Vec<PathBuf>, usize) {
        let _ = self.child.wait();
        while let Ok(line) = self.rx.recv_timeout(Duration::from_millis(500)) {
            self.log.push(line);
        }
        let mut acknowledged = Vec::new();
        let mut sending: Option<PathBuf> = None;
        for line in &self.log {
            if let Some(file) = line.split("Sending file: ").nth(1) {
                sending = Some(PathBuf::from(file.trim()));
            } else if line.contains("Received Store Response (Success)") {
                acknowledged.extend(sending.take());
            } else if line.contains("Received Store Response") {
                sending = None;
            }
        }
        let responses = self.responses();
        (acknowledged, responses)
    }
}

/// After a restart on the same data directory: every acknowledged file's instance is in the
/// index and its blob is a whole DICOM file (dcmdump reads it).
async fn acknowledged_are_kept(
    data_dir: &Path,
    files: &[beeldbrug::testdata::GeneratedFile],
    acknowledged: &[PathBuf],
) {
    assert!(
        !acknowledged.is_empty(),
        "storescu got no success status at all"
    );
    let gw = Gateway::start_in(data_dir, "[storage]\nmin_free_bytes = 0\n").await;
    let dcmdump = require_tool("dcmdump");
    for path in acknowledged {
        let file = files.iter().find(|f| &f.path == path).expect("a test file");
        let selection = Selection {
            sop_instance_uids: vec![file.sop_uid.clone()],
            ..Default::default()
        };
        let located = gw.context().index.locate(&selection).await.unwrap();
        assert_eq!(
            located.len(),
            1,
            "acknowledged instance {} is not in the index after restart",
            file.sop_uid
        );
        let blob = gw.context().blobs.path(&located[0].blob_key);
        let dump = Command::new(&dcmdump)
            .arg("-q")
            .arg(&blob)
            .output()
            .unwrap();
        assert!(
            dump.status.success(),
            "the blob of acknowledged instance {} is not a whole DICOM file: {}",
            file.sop_uid,
            String::from_utf8_lossy(&dump.stderr)
        );
    }
    gw.stop().await;
}

/// The deadline passes while storescu is sending: its association is aborted; what it was
/// told was stored is there after a restart.
#[tokio::test(flavor = "multi_thread")]
async fn the_deadline_aborts_a_transfer_and_loses_nothing_acknowledged() {
    let src = tempfile::tempdir().unwrap();
    let files = common::generate(src.path(), false);
    let paths: Vec<PathBuf> = files.iter().map(|f| f.path.clone()).collect();
    let data = tempfile::tempdir().unwrap();
    let grace = Duration::from_secs(1);
    let mut gw = Served::start(data.path(), grace.as_secs());
    let mut sender = Sender::start(gw.dimse_port, &paths, 400);
    sender.wait_for_responses(20);

    gw.signal("TERM");
    gw.exits_within(grace + Duration::from_secs(5))
        .expect("the process ends within the deadline and a margin");
    let (acknowledged, responses) = sender.acknowledged();
    assert!(
        responses < paths.len() * 400,
        "the transfer was cut by the deadline (else this test proves nothing)"
    );
    drop(gw);
    acknowledged_are_kept(data.path(), &files, &acknowledged).await;
}

/// SIGKILL while draining with storescu sending: every instance it got a success status for
/// is on disk and in the index after a restart.
#[tokio::test(flavor = "multi_thread")]
async fn a_kill_during_the_drain_loses_nothing_acknowledged() {
    let src = tempfile::tempdir().unwrap();
    let files = common::generate(src.path(), false);
    let paths: Vec<PathBuf> = files.iter().map(|f| f.path.clone()).collect();
    let data = tempfile::tempdir().unwrap();
    let mut gw = Served::start(data.path(), 60);
    let mut sender = Sender::start(gw.dimse_port, &paths, 400);
    sender.wait_for_responses(20);

    gw.signal("TERM");
    // Draining: the association in flight goes on.
    let before = sender.responses();
    sender.wait_for_responses(before + 20);
    gw.signal("KILL");
    gw.exits_within(Duration::from_secs(5)).expect("killed");
    let (acknowledged, _) = sender.acknowledged();
    drop(gw);
    acknowledged_are_kept(data.path(), &files, &acknowledged).await;
}
