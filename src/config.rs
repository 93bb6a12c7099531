//! Typed configuration: the embedded default (`config/beeldbrug.toml`), an optional file, and
//! `BEELDBRUG_<SECTION>__<KEY>` environment variables, merged in that order and validated at
//! start. An error names the key and the problem.
//!
//! The sections that other modules own ([`pacs`], [`tls`], [`trust`], [`xds`]) have their types here
//! too, in files of their own: the configuration is read before anything it configures and
//! imports none of it.

pub mod pacs;
pub mod remote;
pub mod tls;
pub mod trust;
pub mod xds;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
pub use pacs::{CacheConfig, PacsConfig, RetrieveMode};
pub use remote::{Localisation, RemoteConfig};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
pub use tls::TlsConfig;
pub use trust::TrustConfig;
pub use xds::{XdsCode, XdsConfig};

/// The embedded default configuration.
pub const EMBEDDED_DEFAULT: &str = include_str!("../config/beeldbrug.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// What the loader found wrong, each problem once, with its key as written (the file's
    /// key path, or the environment variable's name).
    #[error("configuration: {0}")]
    Load(String),
    #[error("configuration file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("configuration key `{key}`: {problem}")]
    Invalid { key: String, problem: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub dimse: DimseConfig,
    pub http: HttpConfig,
    pub storage: StorageConfig,
    pub dicomweb: DicomwebConfig,
    pub cache: CacheConfig,
    /// The local PACS (gateway mode); absent: beeldbrug answers from its own store only.
    #[serde(default)]
    pub pacs: Option<PacsConfig>,
    /// TLS on the listeners (absent: plain TCP, the loopback demo default).
    #[serde(default)]
    pub tls: TlsConfig,
    /// Participants, tokens, consent and audit.
    #[serde(default)]
    pub trust: TrustConfig,
    /// The process as a whole (shutdown).
    #[serde(default)]
    pub server: ServerConfig,
    /// XDS-I publication and the XCA-I responding gateway (off by default).
    #[serde(default)]
    pub xds: XdsConfig,
    /// The XCA-I initiating gateway: other hospitals' gateways as a source (off by default).
    #[serde(default)]
    pub remote: RemoteConfig,
    /// The operations log's format (`BEELDBRUG_LOG_FORMAT` overrides it).
    #[serde(default)]
    pub log: LogConfig,
    /// Traces: OpenTelemetry spans exported by OTLP/HTTP (off by default).
    #[serde(default)]
    pub telemetry: TelemetryConfig,
}

/// `[log]`: the operations log (`oplog`). The filter stays `BEELDBRUG_LOG`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` (coloured only on a terminal) or `json` (one JSON object a line).
    pub format: LogFormat,
}

/// The operations log's format, as configured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `[telemetry]`: one trace per transfer across protocols (`crate::telemetry`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// The OpenTelemetry collector's OTLP/HTTP base URL (`http://collector:4318`); spans go
    /// to `<endpoint>/v1/traces` as protobuf. Empty: no spans are made or exported.
    pub otlp_endpoint: String,
    /// `service.name` of the exported spans (one per node is clearer: `beeldbrug-node1`).
    pub service_name: String,
    /// Share of new traces recorded (0.0 to 1.0); a trace begun by a caller's `traceparent`
    /// follows the caller's sampling decision.
    pub sample_ratio: f64,
    /// Seconds an export may take before it is given up (the spans are dropped).
    pub timeout_secs: u64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            otlp_endpoint: String::new(),
            service_name: "beeldbrug".into(),
            sample_ratio: 1.0,
            timeout_secs: 10,
        }
    }
}

impl TelemetryConfig {
    /// Whether spans are exported at all.
    pub fn enabled(&self) -> bool {
        !self.otlp_endpoint.trim().is_empty()
    }

    /// The URL the spans are posted to: the endpoint with `/v1/traces` (OTLP/HTTP's path for
    /// traces) unless it names that path already.
    pub fn traces_url(&self) -> String {
        let base = self.otlp_endpoint.trim().trim_end_matches('/');
        if base.ends_with("/v1/traces") {
            base.to_string()
        } else {
            format!("{base}/v1/traces")
        }
    }
}

/// `[server]`: what concerns both listeners.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// On SIGTERM/SIGINT: how long associations and HTTP requests in flight may take to
    /// finish, in seconds; then associations get an A-ABORT and connections are closed. Below
    /// Kubernetes' 30 s and systemd's 90 s, so the process ends before it is killed.
    pub shutdown_grace_secs: u64,
    /// Chain monitoring (`crate::chain`, issue 17): probe the PACS, the remote gateways and
    /// Mitz every this many seconds; 0: only when the console asks.
    pub chain_probe_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            shutdown_grace_secs: 20,
            chain_probe_secs: 300,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DimseConfig {
    pub ae_title: String,
    pub listen: String,
    pub max_associations: usize,
    /// Associations one source address may hold at once (the rest stay for other peers).
    pub max_associations_per_address: usize,
    /// ARTIM (PS3.8 9.1.5): seconds from TCP accept (a TLS handshake included) within which
    /// the whole A-ASSOCIATE-RQ must arrive; otherwise the connection is closed.
    pub artim_secs: u64,
    /// Connections still waiting for their A-ASSOCIATE-RQ, from all addresses and from one;
    /// beyond either the oldest is closed. They hold no association slot.
    pub max_pending: usize,
    pub max_pending_per_address: usize,
    pub max_pdu: u32,
    pub timeout_secs: u64,
    pub allow_unknown_callers: bool,
    pub check_called_ae: bool,
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    /// Allow a DIMSE listener beyond loopback that admits any caller
    /// (`allow_unknown_callers`), as `http.allow_insecure_public` does for HTTP (a demo in a
    /// container). Otherwise such a configuration is refused at start.
    #[serde(default)]
    pub allow_insecure_public: bool,
    /// The character set assumed for a C-FIND identifier with non-ASCII bytes and no
    /// Specific Character Set (PS3.5 6.1.2.3 would make it ASCII; Latin-1 is the usual truth).
    #[serde(default = "default_dimse_charset")]
    pub default_charset: String,
    /// Route DIMSE C-FIND, C-MOVE and C-GET to the `[pacs]` as well as the cache, for a
    /// workstation that can reach only one AE: it finds and retrieves what only the PACS
    /// holds through beeldbrug, streamed through (`core::Routes`).
    #[serde(default)]
    pub proxy_pacs: bool,
    /// The transfer syntax for C-GET/C-MOVE sub-operations of instances stored uncompressed,
    /// when the destination accepts it: a lossless one this build encodes (JPEG-LS lossless
    /// `1.2.840.10008.1.2.4.80`, RLE `1.2.840.10008.1.2.5`, Deflate
    /// `1.2.840.10008.1.2.1.99`); empty: as stored (`crate::transcode::WireSyntax`).
    #[serde(default)]
    pub wire_syntax: String,
}

fn default_dimse_charset() -> String {
    "ISO_IR 100".into()
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    pub ae_title: String,
    pub host: String,
    pub port: u16,
    /// When set, this AE must connect over DICOM TLS with the certificate of this SHA-256
    /// fingerprint (`openssl x509 -fingerprint -sha256`).
    #[serde(default)]
    pub certificate_sha256: Option<String>,
    /// Claims of this AE's requests, for a peer that is another organisation (consent and
    /// patient checks apply): its URA, RoleCodeNL role and purpose of use.
    #[serde(default)]
    pub organisation_ura: Option<String>,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub purpose_of_use: Option<String>,
    /// The professional (UZI number) on whose behalf this AE asks: with it, its queries and
    /// retrieves may reach other hospitals' gateways (`[remote]`, an XUA assertion issued
    /// for it); without it, they stay local.
    #[serde(default)]
    pub uzi: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: String,
    /// Allow a listener beyond loopback without mTLS or with anonymous DICOMweb (a demo in a
    /// container). Otherwise such a configuration is refused at start: secure by default.
    #[serde(default)]
    pub allow_insecure_public: bool,
}

/// DICOMweb (PS3.18) under `/dicomweb` on the HTTP listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DicomwebConfig {
    /// Serve requests that carry no credentials (demo default; production: false).
    pub allow_anonymous: bool,
    /// Base URL written into RetrieveURL and BulkDataURI; empty: taken from the Host header.
    pub public_url: String,
    /// Most QIDO-RS results per request; a larger `limit` is cut and answered with a warning.
    pub max_results: u32,
    /// Largest STOW-RS request body, in bytes (413 above it).
    pub max_request_bytes: u64,
    /// Largest single instance in a STOW-RS request, in bytes (413 above it).
    pub max_instance_bytes: u64,
    /// Origins allowed by CORS (browser viewers); `["*"]` allows any, empty disables CORS.
    #[serde(default)]
    pub cors_origins: Vec<String>,
    /// The transfer syntax WADO-RS sends instances stored uncompressed in when the client's
    /// Accept lists it among others (as `[dimse] wire_syntax`); empty: the client's first.
    #[serde(default)]
    pub wire_syntax: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    pub data_dir: PathBuf,
    pub index: String,
    /// Days a study received by STOW-RS (sent by another hospital) is kept after its last
    /// receipt, then deleted (audited); 0: kept for ever.
    #[serde(default)]
    pub keep_received_days: u32,
    /// `/ready` fails when the data directory's filesystem has less free space, in bytes.
    #[serde(default = "default_min_free_bytes")]
    pub min_free_bytes: u64,
    /// Where the blobs (the DICOM files) live: empty for `data_dir/blobs` on the filesystem,
    /// or `s3://bucket/prefix` for S3-compatible object storage (`store::object`), with
    /// `[storage.s3]` (or the `AWS_*` environment variables) saying how to reach it.
    #[serde(default)]
    pub blobs: String,
    #[serde(default)]
    pub s3: S3Config,
    /// The orphan sweep at start (`store::recovery`) takes only blob files older than this,
    /// in seconds before the start, for orphans: on nodes sharing the store, a file another
    /// node has just written is not indexed yet. 0 for a store of one node alone.
    #[serde(default = "default_orphan_grace_secs")]
    pub orphan_grace_secs: u64,
}

/// As long as a replaced version's file is kept (`store::delete::SUPERSEDED_GRACE`): the
/// longest a file may wait for its index row, with room for the nodes' clocks.
fn default_orphan_grace_secs() -> u64 {
    120
}

/// A parsed `s3://bucket/prefix` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Url {
    pub bucket: String,
    /// Without leading or trailing `/`; empty for the bucket's root.
    pub prefix: String,
}

impl S3Url {
    /// `None` when `url` is not an `s3://` URL; an error when it is one without a bucket.
    pub fn parse(url: &str) -> Option<Result<S3Url, String>> {
        let rest = url.trim().strip_prefix("s3://")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty()
            || !bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        {
            return Some(Err(format!("{url:?}: no valid bucket name after s3://")));
        }
        let prefix = prefix.trim_matches('/').to_string();
        if prefix
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..")
            && !prefix.is_empty()
        {
            return Some(Err(format!(
                "{url:?}: the prefix has an empty or dot segment"
            )));
        }
        Some(Ok(S3Url {
            bucket: bucket.to_string(),
            prefix,
        }))
    }
}

/// `[storage.s3]`: how to reach the bucket of `storage.blobs = "s3://..."`. Empty strings
/// fall back to the `AWS_*` environment variables (`AWS_ENDPOINT_URL`, `AWS_REGION`,
/// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    /// e.g. `https://s3.eu-central-1.amazonaws.com` or a MinIO/Ceph endpoint.
    pub endpoint: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Allow a plain `http://` endpoint (a server on loopback or in a private network).
    pub allow_http: bool,
    /// `bucket.endpoint` host names instead of `endpoint/bucket` paths.
    pub virtual_hosted_style: bool,
    /// Longest a request (with its retries) may take, in seconds.
    pub timeout_secs: u64,
    pub connect_timeout_secs: u64,
    /// Retries of a failed request (with backoff) within `timeout_secs`.
    pub max_retries: usize,
    /// The orphan sweep leaves objects younger than this (before the sweep's start): another
    /// node may have uploaded one whose index row it is about to commit. On top of
    /// `storage.orphan_grace_secs`: an allowance for the bucket's clock.
    pub orphan_grace_secs: u64,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            endpoint: String::new(),
            region: String::new(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            allow_http: false,
            virtual_hosted_style: false,
            timeout_secs: 30,
            connect_timeout_secs: 5,
            max_retries: 3,
            orphan_grace_secs: 60,
        }
    }
}

/// 1 GiB: room for a few studies in flight and the index's write-ahead log.
fn default_min_free_bytes() -> u64 {
    1 << 30
}

impl Config {
    /// Load the embedded default, then `file` (if given), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Toml::string(EMBEDDED_DEFAULT));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::MissingFile(path.to_path_buf()));
            }
            figment = figment.merge(Toml::file(path));
        }
        // BEELDBRUG_LOG and BEELDBRUG_LOG_FORMAT set up logging (main.rs) before any
        // configuration is read: they are not configuration keys.
        figment = figment.merge(
            Env::prefixed("BEELDBRUG_")
                .ignore(&["log", "log_format"])
                .split("__"),
        );
        Self::from_figment(figment)
    }

    /// Load from TOML text on top of the embedded default (tests).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Self::from_figment(Figment::from(Toml::string(EMBEDDED_DEFAULT)).merge(Toml::string(text)))
    }

    fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        let config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Load(describe_load_error(e)))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks that serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, problem: String| ConfigError::Invalid {
            key: key.into(),
            problem,
        };
        check_ae_title(&self.dimse.ae_title).map_err(|p| invalid("dimse.ae_title", p))?;
        crate::transcode::WireSyntax::parse(&self.dimse.wire_syntax)
            .map_err(|p| invalid("dimse.wire_syntax", p))?;
        crate::transcode::WireSyntax::parse(&self.dicomweb.wire_syntax)
            .map_err(|p| invalid("dicomweb.wire_syntax", p))?;
        self.dimse.listen.parse::<SocketAddr>().map_err(|e| {
            invalid(
                "dimse.listen",
                format!("{:?} is not host:port ({e})", self.dimse.listen),
            )
        })?;
        self.http.listen.parse::<SocketAddr>().map_err(|e| {
            invalid(
                "http.listen",
                format!("{:?} is not host:port ({e})", self.http.listen),
            )
        })?;
        self.check_secure_by_default()
            .map_err(|p| invalid("http.listen", p))?;
        self.check_dimse_secure_by_default()?;
        self.xds.validate()?;
        if self.dimse.max_associations == 0 {
            return Err(invalid(
                "dimse.max_associations",
                "must be at least 1".into(),
            ));
        }
        for (key, value) in [
            (
                "dimse.max_associations_per_address",
                self.dimse.max_associations_per_address,
            ),
            ("dimse.max_pending", self.dimse.max_pending),
            (
                "dimse.max_pending_per_address",
                self.dimse.max_pending_per_address,
            ),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1".into()));
            }
        }
        if self.dimse.artim_secs == 0 {
            return Err(invalid("dimse.artim_secs", "must be at least 1".into()));
        }
        // PS3.8 D.1: below 4 KiB is impractical; 16 MiB bounds what one peer can make us buffer.
        if !(4096..=16 * 1024 * 1024).contains(&self.dimse.max_pdu) {
            return Err(invalid(
                "dimse.max_pdu",
                format!("{} is outside 4096..=16777216", self.dimse.max_pdu),
            ));
        }
        if dicom_encoding::text::SpecificCharacterSet::from_code(self.dimse.default_charset.trim())
            .is_none()
        {
            return Err(invalid(
                "dimse.default_charset",
                format!(
                    "{:?} is not a Specific Character Set (PS3.3 C.12.1.1.2), e.g. \"ISO_IR 100\"",
                    self.dimse.default_charset
                ),
            ));
        }
        if self.dimse.timeout_secs == 0 {
            return Err(invalid("dimse.timeout_secs", "must be at least 1".into()));
        }
        for (i, peer) in self.dimse.peers.iter().enumerate() {
            check_ae_title(&peer.ae_title)
                .map_err(|p| invalid(&format!("dimse.peers[{i}].ae_title"), p))?;
            if peer.host.trim().is_empty() {
                return Err(invalid(
                    &format!("dimse.peers[{i}].host"),
                    "must not be empty".into(),
                ));
            }
        }
        if self.dicomweb.max_results == 0 {
            return Err(invalid("dicomweb.max_results", "must be at least 1".into()));
        }
        if self.dicomweb.max_instance_bytes > self.dicomweb.max_request_bytes {
            return Err(invalid(
                "dicomweb.max_instance_bytes",
                "must not exceed dicomweb.max_request_bytes".into(),
            ));
        }
        let public = self.dicomweb.public_url.trim();
        if !(public.is_empty() || public.starts_with("http://") || public.starts_with("https://")) {
            return Err(invalid(
                "dicomweb.public_url",
                format!("{public:?} is not an http(s) URL"),
            ));
        }
        let otlp = self.telemetry.otlp_endpoint.trim();
        if !(otlp.is_empty() || otlp.starts_with("http://") || otlp.starts_with("https://")) {
            return Err(invalid(
                "telemetry.otlp_endpoint",
                format!("{otlp:?} is not an http(s) URL"),
            ));
        }
        if !(0.0..=1.0).contains(&self.telemetry.sample_ratio) {
            return Err(invalid(
                "telemetry.sample_ratio",
                "must be between 0.0 and 1.0".into(),
            ));
        }
        if let Some(pacs) = &self.pacs {
            pacs.validate(&self.dimse.ae_title)?;
        }
        self.tls.validate()?;
        self.remote.with_defaults(&self.tls).validate()?;
        self.trust.consent.validate()?;
        let blobs = self.storage.blobs.trim();
        if !blobs.is_empty() {
            let problem = match S3Url::parse(blobs) {
                Some(Ok(_)) => None,
                Some(Err(problem)) => Some(problem),
                None => Some(format!(
                    "{blobs:?} is not s3://bucket/prefix (empty: data_dir/blobs)"
                )),
            };
            if let Some(problem) = problem {
                return Err(invalid("storage.blobs", problem));
            }
        }
        let index = self.index_url();
        if !(index.starts_with("sqlite:")
            || index.starts_with("postgres:")
            || index.starts_with("postgresql:"))
        {
            return Err(invalid(
                "storage.index",
                format!("{index:?} is neither sqlite://... nor postgres://..."),
            ));
        }
        Ok(())
    }

    /// REFERENCE §2: other gateways reach us only over mTLS with a token. An HTTP listener
    /// beyond loopback therefore needs `[tls]` with a client CA and no anonymous DICOMweb,
    /// unless `http.allow_insecure_public` says this is a demo.
    fn check_secure_by_default(&self) -> Result<(), String> {
        let Ok(addr) = self.http.listen.parse::<SocketAddr>() else {
            return Ok(()); // reported as a bad address by validate
        };
        if addr.ip().is_loopback() || self.http.allow_insecure_public {
            return Ok(());
        }
        let mtls = self.tls.cert_file.is_some() && self.tls.client_ca_file.is_some();
        if !mtls {
            return Err(format!(
                "{addr} is reachable beyond loopback but [tls] has no cert_file and client_ca_file (mTLS); \
                 configure them, bind 127.0.0.1, or set http.allow_insecure_public = true for a demo"
            ));
        }
        if self.dicomweb.allow_anonymous && !self.trust.require_token {
            return Err(format!(
                "{addr} is reachable beyond loopback with dicomweb.allow_anonymous = true; \
                 set it false (and trust.require_token = true), or http.allow_insecure_public = true for a demo"
            ));
        }
        Ok(())
    }

    /// The rule of [`Self::check_secure_by_default`] for DIMSE: a listener beyond loopback
    /// must check its callers (`allow_unknown_callers = false`: known AE titles from their
    /// configured hosts; on the DICOM TLS listener, a client certificate also does), unless
    /// `dimse.allow_insecure_public` says this is a demo.
    fn check_dimse_secure_by_default(&self) -> Result<(), ConfigError> {
        if !self.dimse.allow_unknown_callers || self.dimse.allow_insecure_public {
            return Ok(());
        }
        let beyond_loopback =
            |listen: &str| matches!(listen.parse::<SocketAddr>(), Ok(a) if !a.ip().is_loopback());
        let refuse = |key: &str, addr: &str, how: &str| ConfigError::Invalid {
            key: key.into(),
            problem: format!(
                "{addr} is reachable beyond loopback and dimse.allow_unknown_callers = true \
                 admits any caller; set it false and list the callers in [[dimse.peers]]{how}, \
                 bind 127.0.0.1, or set dimse.allow_insecure_public = true for a demo"
            ),
        };
        if beyond_loopback(&self.dimse.listen) {
            return Err(refuse("dimse.listen", &self.dimse.listen, ""));
        }
        if let Some(tls_listen) = &self.tls.dimse_listen {
            if beyond_loopback(tls_listen) && self.tls.client_ca_file.is_none() {
                return Err(refuse(
                    "tls.dimse_listen",
                    tls_listen,
                    " (or require client certificates: tls.client_ca_file)",
                ));
            }
        }
        Ok(())
    }

    /// The index URL, defaulting to a SQLite file in the data directory.
    pub fn index_url(&self) -> String {
        if self.storage.index.trim().is_empty() {
            format!(
                "sqlite://{}",
                self.storage.data_dir.join("index.db").display()
            )
        } else {
            self.storage.index.trim().to_string()
        }
    }

    pub fn peer(&self, ae_title: &str) -> Option<&PeerConfig> {
        self.dimse
            .peers
            .iter()
            .find(|p| p.ae_title == ae_title.trim())
    }
}

/// Each problem of a failed load once, as "key `dimse.max_pdu` (environment variable
/// BEELDBRUG_DIMSE__MAX_PDU): invalid type ...": the key path, and where it came from as the
/// user wrote it (figment lowercases environment keys; its metadata names the variable).
fn describe_load_error(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| {
            let path = &e.path;
            let key = path.join(".");
            let origin = e.metadata.as_ref().and_then(|m| match &m.source {
                Some(figment::Source::File(file)) => Some(format!("in {}", file.display())),
                _ if m.name.contains("environment") && !path.is_empty() => {
                    Some(format!("environment variable {}", env_var_name(path)))
                }
                _ => None,
            });
            match (key.is_empty(), origin) {
                (true, _) => e.kind.to_string(),
                (false, Some(origin)) => format!("key `{key}` ({origin}): {}", e.kind),
                (false, None) => format!("key `{key}`: {}", e.kind),
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The environment variable that set `path`, spelled as in the environment (figment matches
/// names without regard to case and reports them lowercased).
fn env_var_name(path: &[String]) -> String {
    let wanted = format!("BEELDBRUG_{}", path.join("__"));
    std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .find(|name| name.eq_ignore_ascii_case(&wanted))
        .unwrap_or_else(|| wanted.to_ascii_uppercase())
}

/// PS3.5 6.2 (AE): 1-16 characters, no backslash or control characters, not all spaces.
pub fn check_ae_title(ae: &str) -> Result<(), String> {
    if ae.trim().is_empty() {
        return Err("an AE title must not be empty".into());
    }
    if ae.len() > 16 {
        return Err(format!("{ae:?} is longer than 16 characters"));
    }
    if ae
        .chars()
        .any(|c| c == '\\' || c.is_control() || !c.is_ascii())
    {
        return Err(format!(
            "{ae:?} contains a backslash, control or non-ASCII character"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_urls() {
        assert_eq!(S3Url::parse("/var/lib/beeldbrug"), None);
        assert_eq!(S3Url::parse(""), None);
        assert_eq!(
            S3Url::parse("s3://bucket").unwrap().unwrap(),
            S3Url {
                bucket: "bucket".into(),
                prefix: String::new()
            }
        );
        assert_eq!(
            S3Url::parse("s3://my-bucket/a/b/").unwrap().unwrap(),
            S3Url {
                bucket: "my-bucket".into(),
                prefix: "a/b".into()
            }
        );
        for bad in [
            "s3://",
            "s3:///x",
            "s3://Bucket",
            "s3://b/a//c",
            "s3://b/../c",
        ] {
            assert!(S3Url::parse(bad).unwrap().is_err(), "{bad}");
        }
        let err = Config::from_toml("[storage]\nblobs = \"/srv/blobs\"").unwrap_err();
        assert!(err.to_string().contains("storage.blobs"), "{err}");
        let config = Config::from_toml(
            "[storage]\nblobs = \"s3://b/p\"\n[storage.s3]\nendpoint = \"http://127.0.0.1:9\"\nallow_http = true",
        )
        .unwrap();
        assert!(config.storage.s3.allow_http);
        assert_eq!(config.storage.s3.max_retries, 3);
    }

    #[test]
    fn embedded_default_is_valid_and_loopback() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.dimse.ae_title, "BEELDBRUG");
        assert!(c.dimse.listen.starts_with("127.0.0.1:"));
        assert!(c.http.listen.starts_with("127.0.0.1:"));
        assert!(c.index_url().starts_with("sqlite://"));
    }

    #[test]
    fn errors_name_the_key() {
        let err =
            Config::from_toml("[dimse]\nae_title = \"THIS_AE_TITLE_IS_TOO_LONG\"").unwrap_err();
        assert!(err.to_string().contains("dimse.ae_title"), "{err}");
        let err = Config::from_toml("[dimse]\nmax_pdu = \"big\"").unwrap_err();
        assert!(err.to_string().contains("max_pdu"), "{err}");
        let err = Config::from_toml("[storage]\nindex = \"mysql://x\"").unwrap_err();
        assert!(err.to_string().contains("storage.index"), "{err}");
        let err = Config::from_toml("[dimse]\nlisten = \"nowhere\"").unwrap_err();
        assert!(err.to_string().contains("dimse.listen"), "{err}");
    }

    #[test]
    fn public_listener_needs_mtls_and_no_anonymous_access() {
        let err = Config::from_toml("[http]\nlisten = \"0.0.0.0:8080\"").unwrap_err();
        assert!(err.to_string().contains("mTLS"), "{err}");
        let tls =
            "[tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\nclient_ca_file = \"ca.pem\"\n";
        let err =
            Config::from_toml(&format!("{tls}[http]\nlisten = \"0.0.0.0:8080\"")).unwrap_err();
        assert!(err.to_string().contains("allow_anonymous"), "{err}");
        Config::from_toml(&format!(
            "{tls}[http]\nlisten = \"0.0.0.0:8080\"\n[dicomweb]\nallow_anonymous = false\n"
        ))
        .unwrap();
        Config::from_toml("[http]\nlisten = \"0.0.0.0:8080\"\nallow_insecure_public = true")
            .unwrap();
    }

    #[test]
    fn public_dimse_listener_needs_a_caller_check() {
        let err = Config::from_toml("[dimse]\nlisten = \"0.0.0.0:11112\"").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("dimse.listen"), "{err}");
        assert!(text.contains("dimse.allow_insecure_public"), "{err}");
        Config::from_toml("[dimse]\nlisten = \"0.0.0.0:11112\"\nallow_unknown_callers = false")
            .unwrap();
        Config::from_toml("[dimse]\nlisten = \"0.0.0.0:11112\"\nallow_insecure_public = true")
            .unwrap();
        // The DICOM TLS listener: a required client certificate is a caller check.
        let tls =
            "[tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\ndimse_listen = \"0.0.0.0:2762\"\n";
        let err = Config::from_toml(tls).unwrap_err();
        assert!(err.to_string().contains("tls.dimse_listen"), "{err}");
        Config::from_toml(&format!("{tls}client_ca_file = \"ca.pem\"\n")).unwrap();
    }

    #[test]
    fn peers_parse() {
        let c = Config::from_toml(
            "[[dimse.peers]]\nae_title = \"STORESCP\"\nhost = \"127.0.0.1\"\nport = 4242\n",
        )
        .unwrap();
        assert_eq!(c.peer("STORESCP").unwrap().port, 4242);
        assert!(c.peer("OTHER").is_none());
    }

    #[test]
    fn log_format_and_telemetry_parse_and_are_checked() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.log.format, LogFormat::Text);
        assert!(!c.telemetry.enabled(), "traces are off by default");
        assert_eq!(c.storage.orphan_grace_secs, 120);
        let c = Config::from_toml(
            "[log]\nformat = \"json\"\n[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318\"\n",
        )
        .unwrap();
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.telemetry.traces_url(), "http://127.0.0.1:4318/v1/traces");
        let err = Config::from_toml("[log]\nformat = \"xml\"").unwrap_err();
        assert!(err.to_string().contains("format"), "{err}");
        let err = Config::from_toml("[telemetry]\notlp_endpoint = \"collector:4317\"").unwrap_err();
        assert!(err.to_string().contains("telemetry.otlp_endpoint"), "{err}");
        let err = Config::from_toml("[telemetry]\nsample_ratio = 1.5").unwrap_err();
        assert!(err.to_string().contains("telemetry.sample_ratio"), "{err}");
    }
}
