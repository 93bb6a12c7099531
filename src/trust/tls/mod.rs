//! TLS for the HTTP and DIMSE listeners and toward the PACS (rustls with ring): the server
//! configuration with the trusted client CA bundle and CRLs, TLS 1.2/1.3 with NCSC
//! "good"/"sufficient" suites only, reloaded without restart (CRLs at least hourly,
//! certificate rotation), and the verified peer certificate's SHA-256 fingerprint.
//!
//! - [`listener`]: the HTTPS accept loop (axum router over tokio-rustls + hyper-util).
//! - [`reload`]: the live configurations and the task that rebuilds them.
//! - [`der`]: just enough DER to name a certificate's subject in logs.
//!
//! Protocol choices (NCSC "ICT-beveiligingsrichtlijnen voor TLS" 2021, REFERENCE §2):
//! TLS 1.3 (RFC 8446) and TLS 1.2 (RFC 5246) only; TLS 1.3 suites AES-GCM and
//! ChaCha20-Poly1305; TLS 1.2 only ECDHE with AES-GCM or ChaCha20-Poly1305 (no CBC, no
//! static RSA, no DHE); key exchange X25519, secp256r1, secp384r1. DICOM TLS is PS3.15 B.1
//! (the "BCP 195" profile is the same set).

pub mod der;
pub mod listener;
pub mod reload;

pub use reload::{TlsState, Watcher};

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{CipherSuite, RootCertStore, SupportedCipherSuite};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

// The settings' types live in `config/tls.rs` (config imports no module it configures).
pub use crate::config::tls::TlsConfig;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    #[error("{0}: not valid PEM ({1})")]
    Pem(String, String),
    #[error("{0}: no certificate in it")]
    NoCertificate(String),
    #[error("{0}: no private key in it")]
    NoKey(String),
    #[error("{0}: no usable CA certificate in it")]
    NoCa(String),
    #[error("tls.{0} is required here")]
    Missing(&'static str),
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Our own `tls.cert_file`/`key_file` pair, and what is built from it.
type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// The suites allowed (NCSC 2021 "good" and "sufficient"; no CBC, no static RSA).
/// In our order of preference: AES-128-GCM first (all of these are NCSC "good"; 128-bit AES
/// costs about a third less CPU per byte than 256-bit on a multi-GB retrieve), the server's
/// order deciding (`ignore_client_order`).
const ALLOWED_SUITES: &[CipherSuite] = &[
    CipherSuite::TLS13_AES_128_GCM_SHA256,
    CipherSuite::TLS13_AES_256_GCM_SHA384,
    CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
];

/// TLS 1.3 and 1.2 only (NCSC: 1.0/1.1 "insufficient"; rustls never speaks them anyway).
const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// ring's provider restricted to [`ALLOWED_SUITES`].
pub fn provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .retain(|s: &SupportedCipherSuite| ALLOWED_SUITES.contains(&s.suite()));
    let rank = |s: &SupportedCipherSuite| ALLOWED_SUITES.iter().position(|a| *a == s.suite());
    provider.cipher_suites.sort_by_key(rank);
    // ring's groups are X25519, secp256r1 and secp384r1: all NCSC "good".
    Arc::new(provider)
}

/// The server side for the HTTP listener and the DIMSE TLS listener: our certificate, a
/// client certificate required (and checked against the CRLs) when `client_ca_file` is set.
/// ALPN is left empty; the HTTPS listener adds h2 and http/1.1 on its copy.
pub fn server_config(cfg: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let (chain, key) = identity(cfg)?;
    let provider = provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(VERSIONS)?;
    let builder = match &cfg.client_ca_file {
        Some(ca_file) => {
            let roots = Arc::new(roots(ca_file)?);
            let crls = cfg
                .crl_files
                .iter()
                .map(|p| load_crls(p))
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .flatten()
                .collect::<Vec<_>>();
            // Without CRLs there is nothing to check; with them, a certificate whose issuer
            // has no CRL here is refused (webpki's default), and so is an expired CRL: the
            // files are refreshed from the CAs' distribution points by an outside job.
            let mut verifier = WebPkiClientVerifier::builder_with_provider(roots, provider);
            if !crls.is_empty() {
                verifier = verifier.with_crls(crls).enforce_revocation_expiration();
            }
            builder.with_client_cert_verifier(verifier.build()?)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key)?;
    // Stateless tickets would outlive a CRL update; session IDs are kept in memory only.
    config.send_tls13_tickets = 0;
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}

/// The client side toward the PACS or another service (Mitz, syslog): the server verified
/// against `ca_file`, our certificate presented when given (mutual TLS). Same versions and
/// suites as the listeners.
pub fn client_config(
    ca_file: &Path,
    client_cert: Option<(&Path, &Path)>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let roots = roots(ca_file)?;
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)?
        .with_root_certificates(roots);
    let config = match client_cert {
        Some((cert, key)) => builder.with_client_auth_cert(load_certs(cert)?, load_key(key)?)?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The client side toward another hospital's gateway (REFERENCE §2): its server
/// certificate checked against `ca_file` and, when `crl_files` are given, against them with
/// the rules of incoming client certificates (an issuer without a CRL here, or an expired
/// CRL, is refused); our certificate presented. The caller checks the certificate's
/// fingerprint against the participant entry after the handshake ([`fingerprint`]).
pub fn gateway_client_config(
    ca_file: &Path,
    crl_files: &[std::path::PathBuf],
    cert: &Path,
    key: &Path,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let provider = provider();
    let roots = Arc::new(roots(ca_file)?);
    let crls = crl_files
        .iter()
        .map(|p| load_crls(p))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .collect::<Vec<_>>();
    let mut verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider.clone());
    if !crls.is_empty() {
        verifier = verifier.with_crls(crls).enforce_revocation_expiration();
    }
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(VERSIONS)?
        .with_webpki_verifier(verifier.build()?)
        .with_client_auth_cert(load_certs(cert)?, load_key(key)?)?;
    Ok(Arc::new(config))
}

fn identity(cfg: &TlsConfig) -> Result<Identity, TlsError> {
    let cert = cfg
        .cert_file
        .as_deref()
        .ok_or(TlsError::Missing("cert_file"))?;
    let key = cfg
        .key_file
        .as_deref()
        .ok_or(TlsError::Missing("key_file"))?;
    Ok((load_certs(cert)?, load_key(key)?))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Read(path.display().to_string(), e))
}

/// All certificates of a PEM file, in order.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem(path.display().to_string(), e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.display().to_string()));
    }
    Ok(certs)
}

/// The first private key of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoKey(path.display().to_string()),
        e => TlsError::Pem(path.display().to_string(), e.to_string()),
    })
}

/// A trust store from a PEM bundle; every certificate must be usable as a trust anchor.
pub fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in load_certs(path)? {
        store
            .add(cert)
            .map_err(|e| TlsError::Pem(path.display().to_string(), e.to_string()))?;
    }
    if store.is_empty() {
        return Err(TlsError::NoCa(path.display().to_string()));
    }
    Ok(store)
}

/// The CRLs of a file: PEM (`-----BEGIN X509 CRL-----`, any number) or one DER CRL.
pub fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let bytes = read(path)?;
    if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
        let crls = CertificateRevocationListDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Pem(path.display().to_string(), e.to_string()))?;
        if crls.is_empty() {
            return Err(TlsError::Pem(
                path.display().to_string(),
                "no X509 CRL in it".into(),
            ));
        }
        Ok(crls)
    } else {
        Ok(vec![CertificateRevocationListDer::from(bytes)])
    }
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

impl TlsPeer {
    /// The end-entity certificate a handshake verified, if the peer sent one. rustls only
    /// completes the handshake after the verifier accepted the chain.
    pub fn of(conn: &rustls::CommonState) -> Option<TlsPeer> {
        let leaf = conn.peer_certificates()?.first()?;
        Some(TlsPeer {
            certificate_sha256: fingerprint(leaf),
            subject: der::subject(leaf).unwrap_or_else(|| "(unparsed subject)".into()),
        })
    }
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

/// Fingerprints compare case-insensitively, with or without the colons.
pub fn same_fingerprint(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        s.chars()
            .filter(|c| *c != ':')
            .map(|c| c.to_ascii_uppercase())
            .collect::<String>()
    };
    norm(a.trim()) == norm(b.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allowed_suites_remain() {
        let p = provider();
        assert!(!p.cipher_suites.is_empty());
        for s in &p.cipher_suites {
            assert!(ALLOWED_SUITES.contains(&s.suite()), "{:?}", s.suite());
        }
    }

    #[test]
    fn fingerprints_compare_loosely() {
        assert!(same_fingerprint("AB:cd:01", "abcd01"));
        assert!(!same_fingerprint("AB:cd:01", "AB:cd:02"));
    }

    #[test]
    fn validate_names_the_key() {
        let cfg = TlsConfig {
            cert_file: Some("a.pem".into()),
            ..Default::default()
        };
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("tls.key_file"));
        let cfg = TlsConfig {
            crl_files: vec!["c.pem".into()],
            ..Default::default()
        };
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("tls.crl_files"));
        let cfg = TlsConfig {
            refresh_secs: 7200,
            ..Default::default()
        };
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("tls.refresh_secs"));
        assert!(TlsConfig::default().validate().is_ok());
    }

    #[test]
    fn missing_files_are_named() {
        let cfg = TlsConfig {
            cert_file: Some("/nonexistent/cert.pem".into()),
            key_file: Some("/nonexistent/key.pem".into()),
            ..Default::default()
        };
        let err = server_config(&cfg).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/cert.pem"), "{err}");
    }
}
