//! A real peer (DCMTK, Orthanc) as a child process in its own process group, with its output
//! in a log file that failures quote; killed and reaped when dropped.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A peer process, killed (and reaped) when dropped; its output goes to a log file that
/// failures quote.
pub struct PeerProcess {
    name: &'static str,
    pub child: Child,
    log: PathBuf,
}

impl PeerProcess {
    pub fn spawn(name: &'static str, program: &Path, args: &[String], dir: &Path) -> PeerProcess {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("create peer log");
        let err = out.try_clone().expect("clone peer log");
        // Its own process group, so the guard also ends the children a forking peer starts.
        let child = Command::new(program)
            .process_group(0)
            .args(args)
            .current_dir(dir)
            .env("TCP_NODELAY", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        PeerProcess { name, child, log }
    }

    /// The last few KB of the peer's output, for failure messages.
    pub fn log_tail(&self) -> String {
        let text =
            String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned();
        let start = text.len().saturating_sub(6000);
        let start = (start..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(text.len());
        format!(
            "--- {} log ({}) ---\n{}",
            self.name,
            self.log.display(),
            &text[start..]
        )
    }

    /// Wait until `port` on loopback accepts connections; fail if the peer exits first.
    pub async fn wait_for_port(&mut self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}) before port {port} answered\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not open port {port} within 30 s\n{}",
                self.name,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        // The group is ours (process_group(0) above): its id is the child's pid.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
