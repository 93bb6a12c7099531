//! A test PKI made with rcgen: a CA, a server certificate for 127.0.0.1/localhost, client
//! certificates (valid, from an unknown CA, expired, revoked) and the CA's CRL, written as
//! PEM files into a temp dir. Fingerprints are `beeldbrug::trust::tls::fingerprint(der)`.
//!
//! Stable API (used by the TLS, Mitz and syslog tests):
//! - [`Pki::new`]; fields `ca_file`, `crl_file`, `server`, `client`, `unknown_ca_file`,
//!   `unknown`, `expired`, `revoked`;
//! - [`Pki::issue_client`], [`Pki::issue_server`]: more certificates from the same CA;
//! - [`Pki::write_crl`]: rewrite `crl_file` listing the given certificates;
//! - [`Pki::participants_toml`]: a `[[participant]]` file body for `[trust] participants_file`.
//! - [`mtls_acceptor`]: a TLS acceptor requiring a client certificate from a CA (test servers).
//!
//! All keys are ECDSA P-256; every certificate is valid from yesterday for 30 days except
//! `expired` (ended yesterday).
#![allow(dead_code)]

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevocationReason, RevokedCertParams, SerialNumber,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use time::{Duration, OffsetDateTime};

/// One issued certificate: its files and identity.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub name: String,
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM, PKCS#8).
    pub key: PathBuf,
    /// Certificate and key in one PEM file (for tools that want one file).
    pub bundle: PathBuf,
    pub der: Vec<u8>,
    /// `openssl x509 -fingerprint -sha256` form.
    pub fingerprint: String,
    pub serial: u64,
}

/// A CA that can issue.
struct Ca {
    params: CertificateParams,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> (Ca, String) {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name = dn(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(2);
        params.not_after = now + Duration::days(365);
        params.serial_number = Some(SerialNumber::from(1u64));
        let key = KeyPair::generate().expect("CA key");
        let pem = params.self_signed(&key).expect("CA self-signed").pem();
        (Ca { params, key }, pem)
    }

    fn issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::from_params(&self.params, &self.key)
    }
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, "beeldbrug test");
    dn.push(DnType::CountryName, "NL");
    dn
}

/// The whole test PKI in its own temp dir (removed on drop).
pub struct Pki {
    pub dir: tempfile::TempDir,
    /// The trusted test CA (PEM): `[tls] client_ca_file`, `curl --cacert`, `echoscu +cf`.
    pub ca_file: PathBuf,
    /// The test CA's CRL (PEM), listing `revoked` at first.
    pub crl_file: PathBuf,
    /// Server certificate for 127.0.0.1 and localhost (serverAuth and clientAuth: the
    /// gateway's own certificate is also its client certificate toward the PACS).
    pub server: CertFiles,
    /// A valid client certificate.
    pub client: CertFiles,
    /// Another CA, not trusted by anything.
    pub unknown_ca_file: PathBuf,
    /// A client certificate from the unknown CA.
    pub unknown: CertFiles,
    /// A client certificate of the test CA that ended yesterday.
    pub expired: CertFiles,
    /// A client certificate of the test CA on its CRL.
    pub revoked: CertFiles,
    ca: Ca,
    other: Ca,
    serial: AtomicU64,
    crl_number: AtomicU64,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("pki temp dir");
        let (ca, ca_pem) = Ca::new("beeldbrug test CA");
        let (other, other_pem) = Ca::new("unknown test CA");
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca_pem).expect("write CA");
        let unknown_ca_file = dir.path().join("unknown-ca.pem");
        std::fs::write(&unknown_ca_file, other_pem).expect("write unknown CA");
        let serial = AtomicU64::new(100);
        let now = OffsetDateTime::now_utc();
        let valid = (now - Duration::days(1), now + Duration::days(30));
        let next = || serial.fetch_add(1, Ordering::Relaxed);
        let server = issue(
            dir.path(),
            &ca,
            "server",
            &["127.0.0.1", "localhost"],
            true,
            valid,
            next(),
        );
        let client = issue(dir.path(), &ca, "client", &[], false, valid, next());
        let unknown = issue(dir.path(), &other, "unknown", &[], false, valid, next());
        let expired = issue(
            dir.path(),
            &ca,
            "expired",
            &[],
            false,
            (now - Duration::days(10), now - Duration::days(1)),
            next(),
        );
        let revoked = issue(dir.path(), &ca, "revoked", &[], false, valid, next());
        let crl_file = dir.path().join("crl.pem");
        let pki = Pki {
            dir,
            ca_file,
            crl_file,
            server,
            client,
            unknown_ca_file,
            unknown,
            expired,
            revoked,
            ca,
            other,
            serial,
            crl_number: AtomicU64::new(1),
        };
        pki.write_crl(&[&pki.revoked]);
        pki
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A new valid client certificate (clientAuth) from the test CA.
    pub fn issue_client(&self, name: &str) -> CertFiles {
        let now = OffsetDateTime::now_utc();
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        issue(
            self.path(),
            &self.ca,
            name,
            &[],
            false,
            (now - Duration::days(1), now + Duration::days(30)),
            serial,
        )
    }

    /// A new valid server certificate (serverAuth and clientAuth) for `hosts` (names or IPs).
    pub fn issue_server(&self, name: &str, hosts: &[&str]) -> CertFiles {
        let now = OffsetDateTime::now_utc();
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        issue(
            self.path(),
            &self.ca,
            name,
            hosts,
            true,
            (now - Duration::days(1), now + Duration::days(30)),
            serial,
        )
    }

    /// [`Pki::issue_server`] valid from yesterday for `days` days from now (a certificate
    /// about to expire).
    pub fn issue_server_for_days(&self, name: &str, hosts: &[&str], days: i64) -> CertFiles {
        let now = OffsetDateTime::now_utc();
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        issue(
            self.path(),
            &self.ca,
            name,
            hosts,
            true,
            (now - Duration::days(1), now + Duration::days(days)),
            serial,
        )
    }

    /// Rewrite `crl_file` (atomically: temp file and rename) listing `revoked`, with a new
    /// CRL number, valid from a minute ago for a day.
    pub fn write_crl(&self, revoked: &[&CertFiles]) {
        let now = OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now - Duration::minutes(1),
            next_update: now + Duration::days(1),
            crl_number: SerialNumber::from(self.crl_number.fetch_add(1, Ordering::Relaxed)),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|c| RevokedCertParams {
                    serial_number: SerialNumber::from(c.serial),
                    revocation_time: now - Duration::minutes(1),
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.ca.issuer()).expect("sign CRL");
        let tmp = self.path().join("crl.pem.tmp");
        std::fs::write(&tmp, crl.pem().expect("CRL PEM")).expect("write CRL");
        std::fs::rename(&tmp, &self.crl_file).expect("replace CRL");
    }

    /// A participants file body: one `[[participant]]` per (name, URA, homeCommunityId, cert).
    pub fn participants_toml(entries: &[(&str, &str, &str, &CertFiles)]) -> String {
        entries
            .iter()
            .map(|(name, ura, hcid, cert)| {
                format!(
                    "[[participant]]\nname = \"{name}\"\nura = \"{ura}\"\nhome_community_id = \"{hcid}\"\ncertificate_sha256 = \"{}\"\n",
                    cert.fingerprint
                )
            })
            .collect()
    }
}

impl Default for Pki {
    fn default() -> Self {
        Pki::new()
    }
}

fn issue(
    dir: &Path,
    ca: &Ca,
    name: &str,
    hosts: &[&str],
    server: bool,
    (not_before, not_after): (OffsetDateTime, OffsetDateTime),
    serial: u64,
) -> CertFiles {
    let sans: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
    let mut params = CertificateParams::new(sans).expect("params");
    params.distinguished_name = dn(name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = if server {
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ]
    } else {
        vec![ExtendedKeyUsagePurpose::ClientAuth]
    };
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(SerialNumber::from(serial));
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &ca.issuer()).expect("sign");
    let (cert_path, key_path, bundle) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}-key.pem")),
        dir.join(format!("{name}-bundle.pem")),
    );
    std::fs::write(&cert_path, cert.pem()).expect("write cert");
    std::fs::write(&key_path, key.serialize_pem()).expect("write key");
    std::fs::write(&bundle, format!("{}{}", cert.pem(), key.serialize_pem()))
        .expect("write bundle");
    let der = cert.der().to_vec();
    CertFiles {
        name: name.to_string(),
        cert: cert_path,
        key: key_path,
        bundle,
        fingerprint: beeldbrug::trust::tls::fingerprint(&der),
        der,
        serial,
    }
}

/// A `[[participant]]` entry of a participants file for the gateway holding `cert`; with
/// `base`, its ITI-38 and RAD-75 endpoints under that URL.
pub fn participant(
    name: &str,
    ura: &str,
    home: &str,
    cert: &CertFiles,
    base: Option<&str>,
) -> String {
    let mut entry = format!(
        "[[participant]]\nname = \"{name}\"\nura = \"{ura}\"\nhome_community_id = \"{home}\"\ncertificate_sha256 = \"{}\"\n",
        cert.fingerprint
    );
    if let Some(base) = base {
        entry.push_str(&format!(
            "query_url = \"{base}/xca/query\"\nretrieve_url = \"{base}/xca/retrieve\"\n"
        ));
    }
    entry
}

/// The `[tls]` and `[trust] participants_file` lines of a gateway using `own` as its
/// certificate, trusting the test CA and its CRL.
pub fn tls_toml(pki: &Pki, own: &CertFiles, participants: &Path) -> String {
    format!(
        "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nclient_ca_file = \"{}\"\ncrl_files = [\"{}\"]\n\
         [trust]\nparticipants_file = \"{}\"\n",
        own.cert.display(),
        own.key.display(),
        pki.ca_file.display(),
        pki.crl_file.display(),
        participants.display()
    )
}

/// A TLS acceptor for a test server: `cert`/`key` (PEM) presented, a client certificate
/// issued by `ca` required (mutual TLS, as the gateway's own endpoints do).
pub fn mtls_acceptor(ca: &Path, cert: &Path, key: &Path) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).expect("CA file") {
        roots.add(c.expect("CA cert")).expect("add CA");
    }
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider.clone())
            .build()
            .expect("client verifier");
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .expect("cert file")
        .map(|c| c.expect("cert"))
        .collect();
    let key = PrivateKeyDer::from_pem_file(key).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .expect("server config");
    tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config))
}
