//! DCMTK dcmqrscp as a real PACS: one AE title with a storage area, C-MOVE destinations in
//! its HostTable, started on a free port with a generated configuration file (format:
//! /etc/dcmtk/dcmqrscp.cfg, `man dcmqrscp`), loaded by storescu. Killed when dropped.
//!
//! dcmqrscp is strict where other PACSs are lenient: it answers only hierarchical C-FINDs
//! (PS3.4 C.4.1.3.1.1: a unique key, possibly universal, for every level above the query
//! level), returns only the attributes its index holds (no Number of ... Related
//! Instances, no Modalities in Study) and, by default, accepts and proposes uncompressed
//! transfer syntaxes only (Implicit VR files go out as Explicit VR).

use super::peer::PeerProcess;
use super::{free_port, require_tool};
use std::path::{Path, PathBuf};

/// A running dcmqrscp on 127.0.0.1; killed (with the children it forks per association)
/// when dropped.
pub struct Dcmqrscp {
    pub process: PeerProcess,
    pub port: u16,
    pub ae_title: String,
    /// Where it writes what it receives.
    pub storage: PathBuf,
}

/// The configuration file: `ae_title` serving `storage` to any peer, `destinations`
/// (AE title, port on 127.0.0.1) known as C-MOVE destinations, and storescu's default AE
/// title known too.
pub fn config(port: u16, ae_title: &str, storage: &Path, destinations: &[(&str, u16)]) -> String {
    let mut hosts = String::new();
    for (i, (ae, dest_port)) in destinations.iter().enumerate() {
        hosts.push_str(&format!("dest{i} = ({ae}, 127.0.0.1, {dest_port})\n"));
    }
    hosts.push_str("storescu = (STORESCU, 127.0.0.1, 104)\n");
    format!(
        "NetworkTCPPort  = {port}\nMaxPDUSize      = 16384\nMaxAssociations = 16\n\n\
         HostTable BEGIN\n{hosts}HostTable END\n\n\
         VendorTable BEGIN\nVendorTable END\n\n\
         AETable BEGIN\n{ae_title} {} RW (100, 1024mb) ANY\nAETable END\n",
        storage.display()
    )
}

impl Dcmqrscp {
    /// Start it as `ae_title` in `dir` (config, storage area, log), knowing `destinations`,
    /// with extra command-line `flags` (e.g. `--disable-get`). Waits until its port answers.
    pub async fn start(
        dir: &Path,
        ae_title: &str,
        destinations: &[(&str, u16)],
        flags: &[&str],
    ) -> Dcmqrscp {
        Self::start_on(free_port(), dir, ae_title, destinations, flags).await
    }

    /// [`Dcmqrscp::start`] on a port chosen before (a gateway configured toward it while it
    /// was still down).
    pub async fn start_on(
        port: u16,
        dir: &Path,
        ae_title: &str,
        destinations: &[(&str, u16)],
        flags: &[&str],
    ) -> Dcmqrscp {
        let program = require_tool("dcmqrscp");
        let storage = dir.join("dcmqrscp-storage").join(ae_title);
        std::fs::create_dir_all(&storage).expect("dcmqrscp storage area");
        let cfg = dir.join("dcmqrscp.cfg");
        std::fs::write(&cfg, config(port, ae_title, &storage, destinations)).expect("config");
        let mut args: Vec<String> = vec!["-c".into(), cfg.display().to_string(), "-v".into()];
        args.extend(flags.iter().map(|f| f.to_string()));
        args.push(port.to_string());
        let mut process = PeerProcess::spawn("dcmqrscp", &program, &args, dir);
        process.wait_for_port(port).await;
        Dcmqrscp {
            process,
            port,
            ae_title: ae_title.to_string(),
            storage,
        }
    }

    /// C-STORE `files` (uncompressed syntaxes only: dcmqrscp accepts no other by default)
    /// with DCMTK storescu as STORESCU.
    pub fn load(&self, files: &[beeldbrug::testdata::GeneratedFile]) {
        for f in files {
            assert!(
                beeldbrug::dimse::sop::is_native_le(&f.transfer_syntax),
                "dcmqrscp accepts uncompressed syntaxes only: {}",
                f.path.display()
            );
        }
        super::orthanc::store(self.port, &self.ae_title, files);
        let stored = std::fs::read_dir(&self.storage)
            .expect("storage area")
            .filter_map(Result::ok)
            .filter(|e| e.file_name() != "index.dat")
            .count();
        assert_eq!(
            stored,
            files.len(),
            "dcmqrscp stored every file\n{}",
            self.log_tail()
        );
    }

    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }
}

/// `path` converted by DCMTK dcmconv to `syntax` (Explicit or Implicit VR Little Endian): what
/// dcmqrscp sends of a file it holds in the other one.
pub fn dcmconv(path: &std::path::Path, syntax: &str) -> Vec<u8> {
    let flag = match syntax {
        beeldbrug::dimse::sop::EXPLICIT_VR_LE => "+te",
        beeldbrug::dimse::sop::IMPLICIT_VR_LE => "+ti",
        other => panic!("dcmqrscp sent {} in {other}", path.display()),
    };
    let out = path.with_extension(format!("{}.dcm", &flag[1..]));
    let (src, dst) = (path.display().to_string(), out.display().to_string());
    let run = super::dcmtk("dcmconv", &[flag, &src, &dst]);
    assert!(
        run.status.success(),
        "dcmconv {flag} {src}: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    std::fs::read(&out).unwrap()
}
