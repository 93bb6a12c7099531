//! TLS for the HTTP and DIMSE listeners and toward the PACS (rustls): the server
//! configuration with the trusted client CA bundle and CRLs, TLS 1.2/1.3 with NCSC
//! "good"/"sufficient" suites only, reloaded without restart (CRLs at least hourly,
//! certificate rotation), and the verified peer certificate's SHA-256 fingerprint.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `[tls]`: empty `cert_file` means plain TCP (the loopback demo default).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Our certificate chain (PEM).
    pub cert_file: Option<PathBuf>,
    /// Our private key (PEM).
    pub key_file: Option<PathBuf>,
    /// Trusted CAs for client certificates (PEM); set: a client certificate is required.
    pub client_ca_file: Option<PathBuf>,
    /// CRLs (PEM or DER) checked against client certificates.
    pub crl_files: Vec<PathBuf>,
}

/// The verified client certificate of a TLS connection, handed to the request handlers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPeer {
    /// Colon-separated upper-case hex SHA-256 of the certificate's DER, as
    /// `openssl x509 -fingerprint -sha256` prints it.
    pub certificate_sha256: String,
    /// The certificate's subject, for logs.
    pub subject: String,
}

/// The SHA-256 fingerprint of a DER certificate in `openssl x509 -fingerprint -sha256` form.
pub fn fingerprint(der: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(der);
    digest
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}
