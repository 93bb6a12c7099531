//! `[pacs]`: the hospital's own PACS that gateway mode answers from, and `[cache]`: how long
//! and how much of what was fetched from it beeldbrug keeps.

use super::{check_ae_title, ConfigError};
use crate::sop;
use serde::{Deserialize, Serialize};

/// How instances are fetched from the PACS (PS3.4 C.4.2 C-MOVE, C.4.3 C-GET).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RetrieveMode {
    /// C-GET: the instances come back on our own association (no inbound port needed).
    CGet,
    /// C-MOVE to our own C-STORE SCP (`dimse.ae_title`), which the PACS must know.
    CMove,
    /// Whatever the capability probe found to work, C-GET first.
    Auto,
}

/// The local PACS.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PacsConfig {
    pub ae_title: String,
    pub host: String,
    pub port: u16,
    #[serde(default = "defaults::retrieve")]
    pub retrieve: RetrieveMode,
    /// Our calling AE title toward the PACS; empty: `dimse.ae_title` (also the C-MOVE
    /// destination, so the PACS must know it with our DIMSE listener's address).
    #[serde(default)]
    pub calling_ae: String,
    /// DICOM TLS toward the PACS (PS3.15 B.1): the PACS's certificate is verified against
    /// `ca_file`; ours is `[tls] cert_file`/`key_file` when set (mutual TLS).
    #[serde(default)]
    pub tls: bool,
    /// CAs (PEM) trusted for the PACS's certificate; required with `tls`.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// The name checked against the PACS's certificate; empty: `host`.
    #[serde(default)]
    pub server_name: String,
    /// Associations open to the PACS at once; more requests wait in a queue.
    #[serde(default = "defaults::max_associations")]
    pub max_associations: usize,
    #[serde(default = "defaults::connect_timeout_secs")]
    pub connect_timeout_secs: u64,
    /// Read timeout per PDU on an association with the PACS.
    #[serde(default = "defaults::timeout_secs")]
    pub timeout_secs: u64,
    /// Longest gap allowed between two C-MOVE responses or sub-operations (some PACS pause
    /// for minutes while they fetch from tape).
    #[serde(default = "defaults::move_gap_secs")]
    pub move_gap_secs: u64,
    /// Specific Character Set assumed when the PACS sends none (PS3.5 6.1.2.3 says ASCII;
    /// many PACS send Latin-1 without saying so).
    #[serde(default = "defaults::charset")]
    pub default_charset: String,
    /// Transfer syntaxes proposed for the instances (C-GET storage contexts), in order of
    /// preference. The first uncompressed ones are the fallback when a PACS fails to send a
    /// compressed syntax it accepted.
    #[serde(default = "defaults::transfer_syntaxes")]
    pub transfer_syntaxes: Vec<String>,
    /// Forward studies received by STOW-RS to the PACS by C-STORE.
    #[serde(default = "defaults::yes")]
    pub forward_stow: bool,
    /// The transfer syntax the forward sends instances stored uncompressed in when the PACS
    /// accepts it: lossless, one this build encodes (JPEG-LS lossless
    /// `1.2.840.10008.1.2.4.80`, RLE `1.2.840.10008.1.2.5`, Deflate
    /// `1.2.840.10008.1.2.1.99`); empty: as stored. Compressed instances go as stored.
    #[serde(default)]
    pub wire_syntax: String,
    /// STOW-RS senders (client names) whose studies are not forwarded.
    #[serde(default)]
    pub forward_except: Vec<String>,
    /// Run the capability probe at start-up and log it.
    #[serde(default = "defaults::yes")]
    pub probe_at_start: bool,
}

/// `[cache]`: instances fetched from the PACS.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Most bytes of fetched studies kept; least recently used studies are evicted above it.
    /// 0: no limit.
    pub max_bytes: u64,
    /// A complete cached study is re-checked against the PACS's instance count after this
    /// many seconds; a study whose count changed is fetched again.
    pub refresh_secs: u64,
    /// How long a fetch from the PACS waits, per instance, for its slowest client to catch
    /// up before it runs ahead into the cache (the client then reads from disk). Keep it
    /// well below the PACS's timeout on its C-STORE-RSP (Orthanc: `DicomScpTimeout`, 30 s).
    #[serde(default = "default_client_wait_secs")]
    pub client_wait_secs: u64,
}

fn default_client_wait_secs() -> u64 {
    10
}

impl PacsConfig {
    /// Checks serde cannot express; errors name the key.
    pub fn validate(&self, our_ae: &str) -> Result<(), ConfigError> {
        let invalid = |key: &str, problem: String| ConfigError::Invalid {
            key: format!("pacs.{key}"),
            problem,
        };
        check_ae_title(&self.ae_title).map_err(|p| invalid("ae_title", p))?;
        crate::transcode::WireSyntax::parse(&self.wire_syntax)
            .map_err(|p| invalid("wire_syntax", p))?;
        check_ae_title(self.calling_ae(our_ae)).map_err(|p| invalid("calling_ae", p))?;
        if self.host.trim().is_empty() {
            return Err(invalid("host", "must not be empty".into()));
        }
        if self.port == 0 {
            return Err(invalid("port", "must not be 0".into()));
        }
        if self.tls && self.ca_file.is_none() {
            return Err(invalid(
                "ca_file",
                "required with pacs.tls (the CAs that sign the PACS's certificate)".into(),
            ));
        }
        if !self.tls && (self.ca_file.is_some() || !self.server_name.is_empty()) {
            return Err(invalid(
                "tls",
                "ca_file and server_name need tls = true".into(),
            ));
        }
        if self.max_associations == 0 {
            return Err(invalid("max_associations", "must be at least 1".into()));
        }
        for (key, v) in [
            ("connect_timeout_secs", self.connect_timeout_secs),
            ("timeout_secs", self.timeout_secs),
            ("move_gap_secs", self.move_gap_secs),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1".into()));
            }
        }
        if !self
            .transfer_syntaxes
            .iter()
            .any(|ts| sop::is_native_le(ts))
        {
            return Err(invalid(
                "transfer_syntaxes",
                "must include Explicit or Implicit VR Little Endian (the fallback)".into(),
            ));
        }
        if let Some(ts) = self
            .transfer_syntaxes
            .iter()
            .find(|ts| !sop::can_store_syntax(ts))
        {
            return Err(invalid(
                "transfer_syntaxes",
                format!("{ts:?} is not a transfer syntax beeldbrug can store"),
            ));
        }
        Ok(())
    }

    /// The name the PACS's certificate must carry (PS3.15 B.1: the server is authenticated).
    pub fn tls_server_name(&self) -> &str {
        if self.server_name.trim().is_empty() {
            self.host.trim()
        } else {
            self.server_name.trim()
        }
    }

    /// Our AE title toward the PACS.
    pub fn calling_ae<'a>(&'a self, ours: &'a str) -> &'a str {
        if self.calling_ae.trim().is_empty() {
            ours
        } else {
            self.calling_ae.trim()
        }
    }
}

mod defaults {
    use super::*;

    pub fn retrieve() -> RetrieveMode {
        RetrieveMode::Auto
    }
    pub fn max_associations() -> usize {
        4
    }
    pub fn connect_timeout_secs() -> u64 {
        10
    }
    pub fn timeout_secs() -> u64 {
        60
    }
    pub fn move_gap_secs() -> u64 {
        120
    }
    pub fn charset() -> String {
        "ISO_IR 100".into()
    }
    pub fn yes() -> bool {
        true
    }
    pub fn transfer_syntaxes() -> Vec<String> {
        [
            sop::EXPLICIT_VR_LE,
            sop::IMPLICIT_VR_LE,
            sop::JPEG_BASELINE,
            sop::JPEG_LOSSLESS_SV1,
            sop::RLE_LOSSLESS,
            sop::JPEG_2000_LOSSLESS,
            sop::JPEG_2000,
        ]
        .map(String::from)
        .to_vec()
    }
}
