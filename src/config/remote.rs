//! `[remote]`: the XCA-I initiating gateway: other hospitals' gateways (the participants
//! with endpoints) asked on behalf of our own users (docs/xds.md "Initiating gateway").
//! Off unless `enabled`.

use super::ConfigError;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// How the gateways to ask for a patient are found (REFERENCE §2 "open question").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Localisation {
    /// Every `[[participant]]` with a `query_url`.
    #[default]
    Participants,
    /// Ask Mitz (`[trust.consent] url`) where data for the BSN may be found.
    Mitz,
}

/// `[remote]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemoteConfig {
    /// Ask other gateways (ITI-38) and fetch from them (ITI-39, RAD-75).
    pub enabled: bool,
    pub localisation: Localisation,
    /// Per peer and per call: connect plus answer for a query, the gap between two parts
    /// of a retrieve. A peer slower than this makes the answer partial.
    pub timeout_secs: u64,
    /// Our client certificate (PEM); default `tls.cert_file`.
    pub client_cert_file: Option<PathBuf>,
    /// Its key (PEM); default `tls.key_file`.
    pub client_key_file: Option<PathBuf>,
    /// CAs for the peers' server certificates; default `tls.client_ca_file`. The CRLs are
    /// `tls.crl_files`, as for incoming connections.
    pub ca_file: Option<PathBuf>,
    /// Largest document part of a RAD-75 / ITI-39 answer, in bytes: a part that grows past
    /// it fails (what was written of it is removed) and the retrieve ends incomplete, so a
    /// peer sending without end fills neither memory nor disk. As
    /// `dicomweb.max_instance_bytes`.
    pub max_instance_bytes: u64,
    /// Fetch a study's instances by WADO-RS (PS3.18 10.4, `multipart/related;
    /// type="application/dicom"`) from a participant whose entry has a `dicomweb_url`,
    /// instead of RAD-75. Off by default: RAD-75 is the inter-gateway transaction of
    /// the agreements today (REFERENCE §1), DICOMweb between gateways a bilateral choice,
    /// and a `dicomweb_url` on a participant entry (also probed by the self-test and the
    /// chain view) says the peer offers DICOMweb, not that it agreed to serve us by it.
    /// The same client certificate and a fresh XUA assertion (`Authorization: SAML`) go
    /// with every request; the manifest is still read by ITI-39.
    pub prefer_wado_rs: bool,
}

impl Default for RemoteConfig {
    fn default() -> Self {
        RemoteConfig {
            enabled: false,
            localisation: Localisation::Participants,
            timeout_secs: 10,
            client_cert_file: None,
            client_key_file: None,
            ca_file: None,
            max_instance_bytes: 8 << 30,
            prefer_wado_rs: false,
        }
    }
}

impl RemoteConfig {
    /// Checks serde cannot express, on the configuration with its `[tls]` defaults
    /// ([`Self::with_defaults`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.enabled {
            return Ok(());
        }
        let invalid = |key: &str, problem: &str| ConfigError::Invalid {
            key: format!("remote.{key}"),
            problem: problem.to_string(),
        };
        if !(1..=600).contains(&self.timeout_secs) {
            return Err(invalid("timeout_secs", "must be 1..=600"));
        }
        if self.max_instance_bytes < 1024 {
            return Err(invalid("max_instance_bytes", "must be at least 1024"));
        }
        if self.client_cert_file.is_none() || self.client_key_file.is_none() {
            return Err(invalid(
                "client_cert_file",
                "required (or tls.cert_file and key_file): calls to other gateways are mutual TLS",
            ));
        }
        if self.ca_file.is_none() {
            return Err(invalid(
                "ca_file",
                "required (or tls.client_ca_file): the peers' server certificates are checked",
            ));
        }
        Ok(())
    }

    /// The client identity with the `[tls]` defaults filled in.
    pub fn with_defaults(&self, tls: &super::TlsConfig) -> RemoteConfig {
        let mut out = self.clone();
        if out.client_cert_file.is_none() {
            out.client_cert_file = tls.cert_file.clone();
            if out.client_key_file.is_none() {
                out.client_key_file = tls.key_file.clone();
            }
        }
        if out.ca_file.is_none() {
            out.ca_file = tls.client_ca_file.clone();
        }
        out
    }
}
