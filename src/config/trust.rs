//! `[trust]`: participants, tokens (JWT, SAML), consent and audit, as `trust` reads them.

use super::ConfigError;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `[trust]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrustConfig {
    /// TOML file of `[[participant]]` entries: the remote gateways that may connect.
    pub participants_file: Option<PathBuf>,
    /// Our own organisation (URA). Callers of another organisation are outside the hospital.
    pub own_ura: String,
    /// HTTP callers must present a valid bearer JWT or XUA assertion (production: true).
    pub require_token: bool,
    /// RoleCodeNL codes that may see image data; empty: any role.
    pub allowed_roles: Vec<String>,
    /// Roles whose tokens (of our own organisation, `own_ura`) may use the operator's
    /// console under `/admin`; empty: no token may.
    pub admin_roles: Vec<String>,
    /// SHA-256 fingerprints (hex) of client certificates that may use the console over
    /// mTLS.
    pub admin_certificates: Vec<String>,
    pub jwt: JwtConfig,
    pub saml: SamlConfig,
    pub consent: ConsentConfig,
    pub audit: AuditConfig,
}

/// `[trust.jwt]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtConfig {
    /// Trusted issuers; empty: bearer JWTs are not accepted.
    pub issuers: Vec<IssuerConfig>,
    /// A token whose `exp` lies further ahead than this is refused (bounds the replay
    /// cache and the harm of a leaked token). Seconds; default 3600.
    pub max_lifetime_secs: i64,
}

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            issuers: Vec::new(),
            max_lifetime_secs: 3600,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// `iss` value.
    pub issuer: String,
    /// The issuer's JSON Web Key Set (RFC 7517), a file; read again when it changes.
    pub jwks_file: std::path::PathBuf,
    /// Required `aud`.
    pub audience: String,
    /// The issuer's tokens are access tokens of a viewer's session (RFC 6750): the same
    /// token may come with every request until it expires, at any node. Default false:
    /// each `jti` is accepted once (a token is a one-request credential).
    #[serde(default)]
    pub reusable: bool,
}

/// `[trust.saml]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamlConfig {
    /// Issuers whose assertions we accept; empty: XUA assertions are not accepted.
    pub trusted_issuers: Vec<TrustedIssuerConfig>,
    /// If set, an incoming assertion must be restricted to this audience (SAML core
    /// 2.5.1.4 AudienceRestriction).
    pub audience: Option<String>,
    /// Our own issuer name in the assertions we issue (`<saml2:Issuer>`).
    pub issuer: String,
    /// Our signing certificate (PEM) for the assertions we issue.
    pub signing_cert_file: Option<PathBuf>,
    /// Its private key (PEM, PKCS#8 or PKCS#1 RSA, or EC P-256).
    pub signing_key_file: Option<PathBuf>,
    /// Validity of the assertions we issue, seconds (1..=600; default 300).
    pub validity_secs: Option<i64>,
}

/// One `[[trust.saml.trusted_issuers]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedIssuerConfig {
    /// The assertion's `<saml2:Issuer>`.
    pub issuer: String,
    /// The issuer's signing certificate(s), PEM (several for a rollover). Only these keys
    /// verify its assertions; a certificate in the message's KeyInfo is never trusted.
    pub cert_file: PathBuf,
    /// The remote gateways (participant name or certificate SHA-256 fingerprint) its
    /// assertions may arrive from over mTLS.
    #[serde(default)]
    pub gateways: Vec<String>,
    /// Its assertions may also arrive from a caller that is not a remote gateway (inside
    /// the hospital). Default false.
    #[serde(default)]
    pub local: bool,
}

/// What NotApplicable (no consent or refusal registered for this patient) means here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotApplicable {
    Permit,
    /// Mitz: without the patient's explicit consent nothing is made available.
    #[default]
    Deny,
}

/// `[trust.consent]`; empty `url`: no consent service (no check needed, every decision
/// NotApplicable).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsentConfig {
    /// The Mitz (or simulator) endpoint: `https://…` (mTLS) or `http://…` (local tests).
    pub url: String,
    /// Purposes of use that need consent; `"*"` (the default) is every purpose, an absent
    /// one included. Compared without regard to ASCII case.
    pub purposes: Vec<String>,
    /// `"deny"` (default) or `"permit"`.
    pub not_applicable: NotApplicable,
    /// How long an answer is kept, seconds; 0 keeps none.
    pub cache_secs: u64,
    /// The whole exchange (connect, TLS, answer), seconds.
    pub timeout_secs: u64,
    /// Our facility type (healthcare-facility-type-code, 2.16.840.1.113883.2.4.15.1060),
    /// e.g. `Z3` (ziekenhuis).
    pub facility_type: String,
    /// Our own URA as the data holder (`author-institution:id`); empty: left out.
    pub custodian_ura: String,
    /// `saml:Issuer` of our queries.
    pub issuer: String,
    /// CAs trusted for the Mitz server certificate (PEM); required for `https`.
    pub ca_file: Option<PathBuf>,
    /// Our client certificate chain (PEM) for mTLS.
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    pub key_file: Option<PathBuf>,
}

impl Default for ConsentConfig {
    fn default() -> Self {
        ConsentConfig {
            url: String::new(),
            purposes: vec!["*".into()],
            not_applicable: NotApplicable::Deny,
            cache_secs: 60,
            timeout_secs: 5,
            facility_type: "Z3".into(),
            custodian_ura: String::new(),
            issuer: "beeldbrug".into(),
            ca_file: None,
            cert_file: None,
            key_file: None,
        }
    }
}

impl ConsentConfig {
    /// Checks serde cannot express; errors name the key. Certificate files are read in
    /// [`Consent::new`](crate::trust::consent::Consent::new), which logs a bad one (every
    /// decision is then Indeterminate).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, problem: &str| ConfigError::Invalid {
            key: format!("trust.consent.{key}"),
            problem: problem.to_string(),
        };
        if self.url.is_empty() {
            return Ok(());
        }
        let https = self.url.starts_with("https://");
        if !https && !self.url.starts_with("http://") {
            return Err(invalid("url", "must start with https:// or http://"));
        }
        if https && self.ca_file.is_none() {
            return Err(invalid("ca_file", "required with an https url"));
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(invalid("cert_file", "cert_file and key_file go together"));
        }
        if self.timeout_secs == 0 {
            return Err(invalid("timeout_secs", "must be at least 1"));
        }
        if self.purposes.is_empty() {
            return Err(invalid("purposes", "empty: nothing would be checked"));
        }
        Ok(())
    }
}

/// `[trust.audit]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// The syslog receiver (RFC 5425 over TLS). Unset: no audit messages are queued or sent;
    /// the local chain is still written.
    pub syslog_host: Option<String>,
    /// RFC 5425 port.
    pub syslog_port: u16,
    /// The name the receiver's certificate must carry (default: `syslog_host`).
    pub syslog_server_name: Option<String>,
    /// CAs trusted for the receiver's certificate (PEM). Required with `syslog_host`.
    pub ca_file: Option<PathBuf>,
    /// Our client certificate and key (PEM) for mutual TLS with the receiver.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// RFC 5424 APP-NAME, and the PS3.15 AuditSourceID.
    pub app_name: String,
    /// RFC 5424 HOSTNAME and our NetworkAccessPointID (default: the system host name).
    pub hostname: Option<String>,
    /// PS3.15 AuditEnterpriseSiteID: our organisation (URA), if set.
    pub site_id: String,
    /// Longest wait between attempts while the receiver is down, seconds.
    pub retry_max_secs: u64,
    /// How often the outbox is looked at without new records, seconds.
    pub poll_secs: u64,
    /// Messages per connection.
    pub batch: u32,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            syslog_host: None,
            syslog_port: 6514,
            syslog_server_name: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            app_name: "beeldbrug".into(),
            hostname: None,
            site_id: String::new(),
            retry_max_secs: 300,
            poll_secs: 5,
            batch: 100,
        }
    }
}
