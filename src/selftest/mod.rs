//! The qualification self-test (kwalificatie, issue 17 item 3): `beeldbrug selftest --peer
//! <url>` runs a scripted conformance suite against another gateway (or this one) the way a
//! node joining Twiin is checked, and reports each requirement with the REFERENCE section it
//! comes from, pass / fail / skip and the evidence (text, JSON, or a self-contained HTML page
//! a vendor can hand to Twiin; [`report`]).
//!
//! One module per group of checks, each reusing what the gateway itself uses:
//!
//! - [`tls`]: TLS versions and cipher suites offered and accepted (rustls with our client
//!   identity for the good ones; a raw ClientHello for TLS 1.0 / 1.1 and the weak suites,
//!   which rustls never speaks), the peer's certificate chain, its revocation against our
//!   CRLs, its fingerprint against our participant list, and a connection without a client
//!   certificate.
//! - [`xca`]: the XUA refusal cases (ITI-38 without an assertion, with an expired one, an
//!   unsigned one, one whose signature does not match), then ITI-38 FindDocuments, ITI-39 of
//!   the manifest and RAD-75 of an instance for a fictitious test BSN, with assertions from
//!   our own issuer (`trust::saml::SamlIssuer`) and the SOAP code of the initiating gateway
//!   (`remote::soap`).
//! - [`dicomweb`]: QIDO-RS and WADO-RS basics where the peer has a DICOMweb URL.
//! - [`audit`]: whether the peer recorded those exchanges, by their correlation ids in its
//!   audit trail, where it hands the trail over (admin access to a beeldbrug's console API);
//!   otherwise reported as not checkable.
//! - [`pacs`]: with `--pacs`, the PACS probe's report (`pacs::probe`) as checks.
//!
//! Every call carries a correlation id (`oplog::CORRELATION_HEADER`, the SOAP
//! `CorrelationID` header); the report lists them, so the peer's operator can find this run
//! in their audit trail (issue 17 item 2).

pub mod audit;
pub mod dicomweb;
mod http;
pub mod pacs;
pub mod report;
pub mod tls;
pub mod xca;

pub use report::{Check, Report, Status};

use crate::config::Config;
use crate::trust::claims::{ClaimSource, Claims};
use crate::trust::participants::{Participant, Participants};
use crate::trust::saml::SamlIssuer;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What to test and as whom.
#[derive(Debug, Clone)]
pub struct Options {
    /// The peer's base URL (`https://host:port`); its endpoints are `/xca/query`,
    /// `/xca/retrieve` below it unless the participant list or the options name others.
    pub peer: String,
    pub query_url: Option<String>,
    pub retrieve_url: Option<String>,
    /// Its DICOMweb base URL (default: the participant entry's `dicomweb_url`).
    pub dicomweb_url: Option<String>,
    /// The fictitious test patient.
    pub bsn: String,
    /// The test user the assertions name.
    pub uzi: String,
    pub role: String,
    pub purpose_of_use: String,
    /// Longest wait for one step.
    pub timeout: Duration,
    /// How the peer's audit trail is read (audit record presence).
    pub audit: audit::Access,
}

/// Where the peer is and who we are toward it.
pub struct Suite {
    pub options: Options,
    pub host: String,
    pub port: u16,
    pub query_url: String,
    pub retrieve_url: String,
    pub dicomweb_url: Option<String>,
    /// The peer's entry on our participant list, when one names its URL.
    pub participant: Option<Participant>,
    /// The peers' CAs, their CRLs, our client certificate and key.
    pub ca: Option<PathBuf>,
    pub crls: Vec<PathBuf>,
    pub identity: Option<(PathBuf, PathBuf)>,
    pub issuer: Result<SamlIssuer, String>,
    pub claims: Claims,
}

impl Suite {
    /// From our configuration (`[remote]` with its `[tls]` defaults, `tls.crl_files`,
    /// `[trust] participants_file`, `own_ura`, `[trust.saml]`) and the options.
    pub fn new(config: &Config, options: Options) -> Result<Suite, String> {
        let base = options.peer.trim_end_matches('/').to_string();
        let uri: hyper::Uri = base.parse().map_err(|e| format!("--peer {base:?}: {e}"))?;
        if uri.scheme_str() != Some("https") {
            return Err(format!(
                "--peer {base:?}: must be an https URL (gateways speak mutual TLS)"
            ));
        }
        let host = uri
            .host()
            .ok_or_else(|| format!("--peer {base:?} has no host"))?
            .trim_matches(['[', ']'])
            .to_string();
        let port = uri.port_u16().unwrap_or(443);
        let participant = config
            .trust
            .participants_file
            .as_deref()
            .and_then(|f| Participants::load(f).ok())
            .and_then(|list| {
                list.all().into_iter().find(|p| {
                    [&p.query_url, &p.retrieve_url, &p.dicomweb_url]
                        .iter()
                        .any(|u| u.as_deref().is_some_and(|u| u.starts_with(&base)))
                })
            })
            .map(|p| (*p).clone());
        let entry = |f: fn(&Participant) -> &Option<String>| {
            participant.as_ref().and_then(|p| f(p).clone())
        };
        let query_url = options
            .query_url
            .clone()
            .or_else(|| entry(|p| &p.query_url))
            .unwrap_or_else(|| format!("{base}/xca/query"));
        let retrieve_url = options
            .retrieve_url
            .clone()
            .or_else(|| entry(|p| &p.retrieve_url))
            .unwrap_or_else(|| format!("{base}/xca/retrieve"));
        let dicomweb_url = options
            .dicomweb_url
            .clone()
            .or_else(|| entry(|p| &p.dicomweb_url));
        let remote = config.remote.with_defaults(&config.tls);
        let identity = match (&remote.client_cert_file, &remote.client_key_file) {
            (Some(c), Some(k)) => Some((c.clone(), k.clone())),
            _ => None,
        };
        let issuer = SamlIssuer::new(&config.trust.saml)
            .map_err(|e| format!("no assertions can be issued ([trust.saml]): {e}"));
        let claims = Claims {
            source: ClaimSource::Saml,
            issuer: config.trust.saml.issuer.clone(),
            subject: options.uzi.clone(),
            organisation_ura: config.trust.own_ura.clone(),
            professional_uzi: options.uzi.clone(),
            role: options.role.clone(),
            purpose_of_use: options.purpose_of_use.clone(),
            patient_bsn: Some(options.bsn.clone()),
            token_id: String::new(),
            expires_at: 0,
        };
        Ok(Suite {
            host,
            port,
            query_url,
            retrieve_url,
            dicomweb_url,
            participant,
            ca: remote.ca_file.clone(),
            crls: config.tls.crl_files.clone(),
            identity,
            issuer,
            claims,
            options,
        })
    }

    /// A fresh assertion for the test user and patient (the peer as audience when known).
    pub fn assertion(&self) -> Result<String, String> {
        self.assertion_at(crate::clock::unix_seconds())
    }

    /// An assertion issued at `now` (in the past: an expired one).
    pub fn assertion_at(&self, now: i64) -> Result<String, String> {
        let issuer = self.issuer.as_ref().map_err(Clone::clone)?;
        let audience = self
            .participant
            .as_ref()
            .map(|p| p.home_community_id.as_str());
        issuer
            .issue_at(&self.claims, audience, now)
            .map_err(|e| format!("cannot issue an assertion: {e}"))
    }
}

/// Run every check against the peer; `pacs` is the PACS probe's report (`--pacs`).
pub async fn run(
    config: &Config,
    options: Options,
    pacs: Option<&crate::pacs::probe::ProbeReport>,
) -> Report {
    let started_at = crate::clock::now_rfc3339();
    let peer = options.peer.clone();
    let mut checks = Vec::new();
    match Suite::new(config, options) {
        Ok(suite) => {
            checks.extend(tls::run(&suite).await);
            checks.extend(xca::run(&suite).await);
            checks.extend(dicomweb::run(&suite).await);
            let audit = audit::run(&suite, &checks).await;
            checks.push(audit);
        }
        Err(why) => checks.push(Check::new(&SETUP, Status::Fail, why, Instant::now())),
    }
    if let Some(report) = pacs {
        checks.extend(pacs::checks(report));
    }
    Report::new(peer, started_at, checks)
}

/// A requirement the suite checks: its id, its text, the REFERENCE section it comes from.
#[derive(Debug, Clone, Copy)]
pub struct Requirement {
    pub id: &'static str,
    pub text: &'static str,
    pub reference: &'static str,
}

const SETUP: Requirement = Requirement {
    id: "setup",
    text: "The peer URL and our own TLS and XUA configuration can be used for the test",
    reference: "REFERENCE §2 Trust",
};
