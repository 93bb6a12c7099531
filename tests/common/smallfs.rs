//! A real, size-limited filesystem for disk-full and read-only tests: a tmpfs mounted on a
//! temp directory (`mount -t tmpfs -o size=...`). Mounting needs root (CI runs as root);
//! without it the test fails and says why, it is never skipped.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct SmallFs {
    dir: tempfile::TempDir,
}

fn run(what: &str, args: &[&str], at: &Path) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .arg(at)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", args[0]));
    assert!(
        out.status.success(),
        "cannot {what} {}: {}\nThese tests need a real size-limited filesystem, which takes \
         root (mount -t tmpfs); run them as root, as CI does.",
        at.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

impl SmallFs {
    /// Mount a tmpfs of `bytes` bytes.
    pub fn mount(bytes: u64) -> SmallFs {
        let dir = tempfile::tempdir().expect("temp dir");
        let size = format!("size={bytes}");
        run(
            "mount a size-limited tmpfs on",
            &["mount", "-t", "tmpfs", "-o", &size, "tmpfs"],
            dir.path(),
        );
        SmallFs { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Make the filesystem read-only (root ignores permission bits, not a read-only mount).
    pub fn remount_read_only(&self) {
        run(
            "remount read-only",
            &["mount", "-o", "remount,ro"],
            self.path(),
        );
    }

    pub fn remount_writable(&self) {
        run(
            "remount read-write",
            &["mount", "-o", "remount,rw"],
            self.path(),
        );
    }

    /// Fill the filesystem up with one file (written until ENOSPC); returns its path.
    pub fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).expect("create filler");
        let chunk = vec![0xAAu8; 16 * 1024];
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
        // The last partial blocks.
        for size in [4096usize, 512, 1] {
            while file.write_all(&chunk[..size]).is_ok() {}
        }
        let _ = file.sync_all();
        path
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        // Lazy: a process that still has a file open there must not keep the mount.
        let _ = Command::new("umount").arg("-l").arg(self.path()).output();
    }
}
