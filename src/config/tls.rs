//! `[tls]`: certificates, client CAs and CRLs for the listeners, as `trust::tls` reads them.

use super::ConfigError;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

/// `[tls]`: empty `cert_file` means plain TCP (the loopback demo default).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Our certificate chain (PEM), leaf first. Set: the HTTP listener speaks HTTPS only.
    pub cert_file: Option<PathBuf>,
    /// Our private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// Trusted CAs for client certificates (PEM); set: a client certificate is required on
    /// the HTTP listener and on `dimse_listen`.
    pub client_ca_file: Option<PathBuf>,
    /// CRLs (PEM or DER) checked against client certificates. Every CA in the chain of a
    /// client certificate needs its CRL here once any is set (unknown status is refused).
    pub crl_files: Vec<PathBuf>,
    /// A second DIMSE listener that speaks DICOM TLS only (PS3.15 B.1; IANA port 2762
    /// "dicom-tls"). `dimse.listen` stays plain for the hospital's own modalities and PACS.
    pub dimse_listen: Option<String>,
    /// Rebuild everything (CRLs, certificates, participants) at least this often, seconds.
    pub refresh_secs: u64,
    /// Check the files' modification times this often and rebuild when one changed, seconds.
    pub watch_secs: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert_file: None,
            key_file: None,
            client_ca_file: None,
            crl_files: Vec::new(),
            dimse_listen: None,
            refresh_secs: 3600,
            watch_secs: 30,
        }
    }
}

impl TlsConfig {
    /// Is TLS configured at all (our certificate)?
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some()
    }

    /// Checks serde cannot express; errors name the key. Files are read at start
    /// ([`server_config`](crate::trust::tls::server_config)), where a missing or bad file is
    /// named too.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, problem: &str| ConfigError::Invalid {
            key: format!("tls.{key}"),
            problem: problem.to_string(),
        };
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => return Err(invalid("key_file", "required with tls.cert_file")),
            (None, Some(_)) => return Err(invalid("cert_file", "required with tls.key_file")),
            _ => {}
        }
        if !self.enabled() {
            if self.client_ca_file.is_some() {
                return Err(invalid(
                    "client_ca_file",
                    "needs tls.cert_file and key_file",
                ));
            }
            if !self.crl_files.is_empty() {
                return Err(invalid("crl_files", "needs tls.cert_file and key_file"));
            }
            if self.dimse_listen.is_some() {
                return Err(invalid("dimse_listen", "needs tls.cert_file and key_file"));
            }
        }
        if !self.crl_files.is_empty() && self.client_ca_file.is_none() {
            return Err(invalid(
                "crl_files",
                "CRLs apply to client certificates: set tls.client_ca_file",
            ));
        }
        if let Some(listen) = &self.dimse_listen {
            if listen.parse::<SocketAddr>().is_err() {
                return Err(invalid(
                    "dimse_listen",
                    &format!("{listen:?} is not host:port"),
                ));
            }
        }
        // REFERENCE §2: revocation refreshed at least hourly.
        if !(1..=3600).contains(&self.refresh_secs) {
            return Err(invalid(
                "refresh_secs",
                "must be 1..=3600 (at least hourly)",
            ));
        }
        if self.watch_secs == 0 {
            return Err(invalid("watch_secs", "must be at least 1"));
        }
        Ok(())
    }
}
