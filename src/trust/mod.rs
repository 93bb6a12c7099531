//! The one decision point every query, retrieval and store passes, whatever the front, and
//! its audit trail: exactly one audit record per operation (REFERENCE §2, §4).
//!
//! - [`tls`]: rustls for the listeners and toward the PACS; the verified peer certificate.
//! - [`participants`]: certificate fingerprint → remote gateway (URA, homeCommunityId).
//! - [`claims`], [`jwt`], [`saml`]: who the caller says it is, verified.
//! - [`consent`]: the Mitz-style consent check, and its simulator.
//! - [`policy`]: the decision itself, from all of the above.
//! - [`audit`]: the NEN 7513 store (hash-chained) and PS3.15 audit messages over syslog/TLS.

pub mod audit;
pub mod claims;
pub mod consent;
pub mod jwt;
pub mod participants;
pub mod policy;
pub mod saml;
pub mod tls;

pub use claims::{ClaimSource, Claims};
pub use participants::Participant;
// The clock of the records; also named here for the callers that stamp records.
pub use crate::clock::now_rfc3339;

use crate::config::Config;
use crate::store::Index;
use std::sync::Arc;

// The settings' types live in `config/trust.rs` (config imports no module it configures).
pub use crate::config::trust::TrustConfig;

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error(transparent)]
    Participants(#[from] participants::ParticipantsError),
    #[error("trust.jwt: {0}")]
    Jwt(jwt::TokenError),
    #[error("trust.saml: {0}")]
    Saml(jwt::TokenError),
}

/// Who is asking.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    /// Calling AE title (DIMSE) or client identity (HTTP).
    pub ae_title: String,
    /// Peer socket address.
    pub address: String,
    /// SHA-256 fingerprint of the verified TLS client certificate, if any.
    pub certificate_sha256: Option<String>,
    /// The remote gateway that certificate belongs to, if it is on the participant list.
    pub participant: Option<Arc<Participant>>,
    /// Verified claims (token, assertion, or configured for a DIMSE peer).
    pub claims: Option<Claims>,
    /// Credentials were presented but did not verify: why (refused with 401).
    pub credential_error: Option<String>,
    /// The caller came over DIMSE: only then do `[[dimse.peers]]` claims apply to it.
    pub dimse: bool,
    /// The id of the association or HTTP request in the operations log (`oplog`): its
    /// audit records end their detail with `(request <id>)`.
    pub request_id: Option<String>,
    /// The exchange's correlation id across gateways (`oplog::CORRELATION_HEADER`, the SOAP
    /// `CorrelationID` header): as the calling gateway sent it, or ours for an outgoing
    /// call. Recorded in the audit record (`correlation_id`).
    pub correlation_id: Option<String>,
    /// The W3C trace id of the operation's trace (`telemetry`: the HTTP request's or DIMSE
    /// operation's root span), when traces are exported. Recorded in the audit record
    /// (`trace_id`).
    pub trace_id: Option<String>,
}

impl Caller {
    pub fn new(ae_title: impl Into<String>, address: impl Into<String>) -> Caller {
        Caller {
            ae_title: ae_title.into(),
            address: address.into(),
            ..Default::default()
        }
    }

    /// A DIMSE caller: its calling AE title and address.
    pub fn dimse(ae_title: impl Into<String>, address: impl Into<String>) -> Caller {
        Caller {
            dimse: true,
            ..Caller::new(ae_title, address)
        }
    }
}

/// What they ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Echo,
    Find,
    Store,
    Move,
    Get,
    /// QIDO-RS search (PS3.18 10.6).
    QidoRs,
    /// WADO-RS retrieve (PS3.18 10.4).
    WadoRs,
    /// WADO-URI retrieve of one instance or its rendering (PS3.18 9, IHE RAD-55).
    WadoUri,
    /// STOW-RS store (PS3.18 10.5).
    StowRs,
    /// Reading the audit trail (NEN 7513: access to the log is itself logged).
    AuditRead,
    /// Opening a DIMSE association (PS3.8 7.1); audited when refused.
    Associate,
    /// Deleting studies, series or instances (DICOMweb `DELETE`, `beeldbrug delete`,
    /// retention).
    Delete,
    /// RAD-69 Retrieve Imaging Document Set (XDS-I.b, SOAP).
    Rad69,
    /// RAD-75 Cross Gateway Retrieve Imaging Document Set (XCA-I, SOAP).
    Rad75,
    /// ITI-43 Retrieve Document Set (XDS.b, SOAP).
    Iti43,
    /// ITI-39 Cross Gateway Retrieve (XCA, SOAP).
    Iti39,
    /// WADO-WS RetrieveRenderedImagingDocumentSet (PS3.18 WADO-WS, SOAP).
    WadoWs,
    /// ITI-18 Registry Stored Query (XDS.b, SOAP).
    Iti18,
    /// ITI-38 Cross Gateway Query (XCA, SOAP).
    Iti38,
    /// The operator's console (`/admin`): reading the gateway's state, steering its
    /// transfers and queues ([`Trust::decide`] admits our own administrators only).
    Admin,
    /// An alert of the chain monitoring (`crate::chain`): a peer unreachable, a certificate
    /// near its expiry. Recorded by the gateway itself, never asked for.
    ChainAlert,
    /// The Mitz open question (REFERENCE §2): where may data of this patient be found.
    /// Outgoing only, before the ITI-38 fan-out.
    MitzOpenQuestion,
}

impl Operation {
    pub fn name(self) -> &'static str {
        match self {
            Operation::Echo => "C-ECHO",
            Operation::Find => "C-FIND",
            Operation::Store => "C-STORE",
            Operation::Move => "C-MOVE",
            Operation::Get => "C-GET",
            Operation::QidoRs => "QIDO-RS",
            Operation::WadoRs => "WADO-RS",
            Operation::WadoUri => "WADO-URI",
            Operation::StowRs => "STOW-RS",
            Operation::AuditRead => "AUDIT-READ",
            Operation::Associate => "A-ASSOCIATE",
            Operation::Delete => "DELETE",
            Operation::Rad69 => "RAD-69",
            Operation::Rad75 => "RAD-75",
            Operation::Iti43 => "ITI-43",
            Operation::Iti39 => "ITI-39",
            Operation::WadoWs => "WADO-WS",
            Operation::Iti18 => "ITI-18",
            Operation::Iti38 => "ITI-38",
            Operation::Admin => "ADMIN",
            Operation::ChainAlert => "CHAIN-ALERT",
            Operation::MitzOpenQuestion => "MITZ-OPEN-QUESTION",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Permit,
    /// No or bad credentials (HTTP 401), with the reason (never patient data).
    Unauthenticated(String),
    /// Known caller, not allowed (HTTP 403; DIMSE refusal status), with the reason.
    Deny(String),
    /// Nobody is served now: the audit trail cannot be written (HTTP 503; DIMSE refusal).
    Unavailable(String),
}

impl Decision {
    pub fn is_permit(&self) -> bool {
        matches!(self, Decision::Permit)
    }

    /// The reason of a refusal; empty for Permit.
    pub fn reason(&self) -> &str {
        match self {
            Decision::Permit => "",
            Decision::Unauthenticated(why) | Decision::Deny(why) | Decision::Unavailable(why) => {
                why
            }
        }
    }
}

impl Operation {
    /// Operations that arrive over HTTP (DICOMweb) rather than DIMSE.
    pub fn is_web(self) -> bool {
        matches!(
            self,
            Operation::QidoRs
                | Operation::WadoRs
                | Operation::WadoUri
                | Operation::StowRs
                | Operation::AuditRead
                | Operation::Delete
        ) || self.is_xds()
    }

    /// Operations of the SOAP front (XDS-I.b / XCA-I): every call needs verified claims,
    /// from a remote gateway an XUA assertion ([`Trust::decide`]).
    pub fn is_xds(self) -> bool {
        matches!(
            self,
            Operation::Rad69
                | Operation::Rad75
                | Operation::Iti43
                | Operation::Iti39
                | Operation::WadoWs
                | Operation::Iti18
                | Operation::Iti38
        )
    }
}

/// The caller name of an HTTP request that carries no credentials.
pub const ANONYMOUS: &str = "anonymous";

/// The outcome of one operation, for its audit event.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub patient_ids: Vec<String>,
    pub study_uids: Vec<String>,
    /// "success", "refused", "failure", "cancelled", "partial".
    pub result: String,
    pub detail: String,
    /// On what grounds it was permitted or refused (consent answers, ...), no patient data.
    pub grounds: String,
}

/// The decision point: the configuration and the services it asks.
#[derive(Debug)]
pub struct Trust {
    allow_unknown_callers: bool,
    /// Known AEs with the host each must connect from.
    known_aes: Vec<(String, String)>,
    allow_anonymous_web: bool,
    pub(crate) config: TrustConfig,
    /// DIMSE peers as configured (AE title, address, optional certificate and claims).
    pub(crate) dimse_peers: Vec<crate::config::PeerConfig>,
    pub participants: participants::Participants,
    pub jwt: jwt::JwtVerifier,
    pub saml: saml::SamlVerifier,
    pub consent: consent::Consent,
    pub audit: audit::Audit,
    /// The index, shared by the nodes on one database: token identities seen by any node.
    index: Arc<dyn Index>,
}

impl Trust {
    pub fn new(config: &Config, index: Arc<dyn Index>) -> Result<Self, TrustError> {
        let trust = &config.trust;
        let participants = match &trust.participants_file {
            Some(path) => participants::Participants::load(path)?,
            None => participants::Participants::default(),
        };
        Ok(Trust {
            allow_unknown_callers: config.dimse.allow_unknown_callers,
            known_aes: config
                .dimse
                .peers
                .iter()
                .map(|p| (p.ae_title.clone(), p.host.clone()))
                // The local PACS stores into us (C-MOVE sub-operations, its own sends).
                .chain(
                    config
                        .pacs
                        .iter()
                        .map(|p| (p.ae_title.clone(), p.host.clone())),
                )
                .collect(),
            allow_anonymous_web: config.dicomweb.allow_anonymous,
            config: trust.clone(),
            dimse_peers: config.dimse.peers.clone(),
            participants,
            jwt: jwt::JwtVerifier::new(&trust.jwt).map_err(TrustError::Jwt)?,
            saml: saml::SamlVerifier::new(&trust.saml).map_err(TrustError::Saml)?,
            consent: consent::Consent::new(&{
                // We are the data holder the closed question names.
                let mut c = trust.consent.clone();
                if c.custodian_ura.is_empty() {
                    c.custodian_ura = trust.own_ura.clone();
                }
                c
            }),
            audit: audit::Audit::new(&trust.audit, index.clone()),
            index,
        })
    }

    /// The replay check of a verified token across the nodes sharing the index (issue 16,
    /// item 2): its identity (`jti`, RFC 7519 4.1.7; a SAML assertion ID, SAML core 1.3.4)
    /// is recorded in the index until the token expires, so a token used at one node is
    /// refused at every other. The verifiers' in-memory check has refused a replay at this
    /// node already. An index that cannot say refuses the token (fail closed).
    pub async fn claim_token_across_nodes(&self, claims: &Claims) -> Result<(), String> {
        if claims.source == ClaimSource::Jwt && self.jwt.reusable(&claims.issuer) {
            // A session's access token, accepted again until it expires at every node.
            return Ok(());
        }
        let now = crate::clock::unix_seconds();
        let forget_after = claims.expires_at.saturating_add(jwt::LEEWAY_SECS);
        match self
            .index
            .claim_token_id(&claims.issuer, &claims.token_id, forget_after, now)
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(jwt::TokenError::Replayed.to_string()),
            Err(e) => {
                tracing::error!(error = %e, "cannot check a token against replays");
                Err("the token cannot be checked against replays now".into())
            }
        }
    }

    /// [`Trust::decide`] for an operation about to send data whose audit record is written
    /// when it ends (C-MOVE, C-GET, WADO-RS): permitted only if the audit trail takes a
    /// write now, so that no data goes out while its record could not be written.
    pub async fn decide_before_data(&self, caller: &Caller, operation: Operation) -> Decision {
        match self.decide(caller, operation) {
            Decision::Permit => match self.audit.probe().await {
                Ok(()) => Decision::Permit,
                Err(_) => Decision::Unavailable(
                    "the audit trail cannot be written; try again later".into(),
                ),
            },
            refusal => refusal,
        }
    }

    /// Why nothing may be served now (fail closed, see [`audit::AuditHealth`]), if so.
    pub fn audit_unavailable(&self) -> Option<String> {
        self.audit
            .health()
            .is_failing()
            .then(|| "the audit trail cannot be written; try again later".to_string())
    }

    /// May this caller open an association at all? Inside the hospital a DIMSE caller is
    /// authorised by its AE title and the address it connects from (the host of its
    /// `[[dimse.peers]]` entry); the certificate, where configured, is checked by the
    /// listener. With `allow_unknown_callers` any AE from anywhere is admitted (demo).
    pub fn admit(&self, caller: &Caller) -> Decision {
        if self.allow_unknown_callers {
            return Decision::Permit;
        }
        let ae = caller.ae_title.trim();
        let hosts: Vec<&str> = self
            .known_aes
            .iter()
            .filter(|(a, _)| a == ae)
            .map(|(_, h)| h.as_str())
            .collect();
        if hosts.is_empty() {
            return Decision::Deny(format!("calling AE {ae:?} is not a known peer"));
        }
        let from = caller
            .address
            .parse::<std::net::SocketAddr>()
            .map(|a| a.ip().to_canonical());
        match from {
            Ok(ip) if hosts.iter().any(|h| host_has_address(h, ip)) => Decision::Permit,
            _ => Decision::Deny(format!(
                "calling AE {ae:?} connected from {}, not from its configured host",
                caller.address
            )),
        }
    }

    /// [`Trust::admit`] for an operation on an association already admitted: the AE title
    /// only (the address was checked when the association opened).
    fn admit_ae(&self, caller: &Caller) -> Decision {
        let ae = caller.ae_title.trim();
        if self.allow_unknown_callers || self.known_aes.iter().any(|(a, _)| a == ae) {
            Decision::Permit
        } else {
            Decision::Deny(format!("calling AE {ae:?} is not a known peer"))
        }
    }

    /// The decision for one operation, before any patient is known. Every front calls this
    /// before it answers; [`Trust::patient_access`] then decides per patient.
    pub fn decide(&self, caller: &Caller, operation: Operation) -> Decision {
        if let Some(why) = self.audit_unavailable() {
            return Decision::Unavailable(why);
        }
        match operation {
            Operation::Admin => return self.check_admin(caller),
            Operation::ChainAlert => {
                return Decision::Deny("chain alerts are recorded, not asked for".into())
            }
            _ => {}
        }
        let admitted = if operation.is_xds() {
            self.admit_xds(caller)
        } else if operation.is_web() {
            self.admit_web(caller)
        } else {
            self.admit_ae(caller)
        };
        match admitted {
            Decision::Permit if operation == Operation::AuditRead => self.check_auditor(caller),
            Decision::Permit if operation == Operation::Delete => self.check_deleter(caller),
            Decision::Permit => self.check_claims(caller),
            refusal => refusal,
        }
    }

    /// Acts for our own organisation only: a remote participant or a token of another
    /// organisation is refused (`what` names the act). `Ok(true)`: claims of our own
    /// organisation; `Ok(false)`: no claims at all (anonymous, where that was admitted).
    fn own_organisation(&self, caller: &Caller, what: &str) -> Result<bool, Decision> {
        if caller.participant.is_some() {
            return Err(Decision::Deny(format!("a remote gateway may not {what}")));
        }
        match self.effective_claims(caller) {
            Some(c)
                if self.config.own_ura.is_empty() || c.organisation_ura != self.config.own_ura =>
            {
                Err(Decision::Deny(format!(
                    "only our own organisation may {what}"
                )))
            }
            Some(_) => Ok(true),
            None => Ok(false),
        }
    }

    /// The audit trail is read by our own organisation (NEN 7513 officers, the patient's
    /// care team). In the loopback demo (anonymous allowed, no claims) it is open like
    /// everything else.
    fn check_auditor(&self, caller: &Caller) -> Decision {
        match self.own_organisation(caller, "read the audit trail") {
            Ok(_) => Decision::Permit,
            Err(refusal) => refusal,
        }
    }

    /// Deleting is for our own organisation, as reading the audit trail ([`check_auditor`]),
    /// and stricter for a caller without claims: only from loopback (an operator on the
    /// gateway's own host, or the demo default), never from the network even where
    /// `http.allow_insecure_public` admits anonymous DICOMweb.
    fn check_deleter(&self, caller: &Caller) -> Decision {
        match self.own_organisation(caller, "delete") {
            Ok(true) => Decision::Permit,
            Ok(false) => {
                let loopback = caller
                    .address
                    .parse::<std::net::SocketAddr>()
                    .is_ok_and(|a| a.ip().to_canonical().is_loopback());
                if loopback {
                    Decision::Permit
                } else {
                    Decision::Unauthenticated(
                        "deleting without a token of our own organisation is allowed from loopback only"
                            .into(),
                    )
                }
            }
            Err(refusal) => refusal,
        }
    }

    /// The console is for our own administrators only, and never anonymous, whatever
    /// `dicomweb.allow_anonymous` says: a client certificate listed in
    /// `trust.admin_certificates` (mTLS), or verified claims of our own organisation
    /// (`trust.own_ura`) with a role in `trust.admin_roles`, not bound to one patient.
    /// A remote gateway never is.
    fn check_admin(&self, caller: &Caller) -> Decision {
        if let Some(why) = &caller.credential_error {
            return Decision::Unauthenticated(why.clone());
        }
        if caller.participant.is_some() {
            return Decision::Deny("a remote gateway may not use the console".into());
        }
        if let Some(presented) = &caller.certificate_sha256 {
            if self
                .config
                .admin_certificates
                .iter()
                .any(|listed| tls::same_fingerprint(listed, presented))
            {
                return Decision::Permit;
            }
        }
        let Some(claims) = &caller.claims else {
            if caller.certificate_sha256.is_some() {
                return Decision::Deny(
                    "the client certificate is not listed in trust.admin_certificates".into(),
                );
            }
            return Decision::Unauthenticated(
                "the console needs an admin client certificate or a token of our own organisation with an admin role"
                    .into(),
            );
        };
        let own = self.config.own_ura.trim();
        if own.is_empty() || claims.organisation_ura != own {
            return Decision::Deny("only our own organisation may use the console".into());
        }
        if !self.config.admin_roles.iter().any(|r| r == &claims.role) {
            return Decision::Deny(format!("role {:?} is no admin role", claims.role));
        }
        if claims.patient_bsn.is_some() {
            return Decision::Deny("a token bound to one patient is no admin token".into());
        }
        Decision::Permit
    }

    /// HTTP: a verified certificate must belong to a participant (403 otherwise); claims
    /// that failed to verify are a 401; without credentials only where configured.
    fn admit_web(&self, caller: &Caller) -> Decision {
        if let Some(why) = &caller.credential_error {
            return Decision::Unauthenticated(why.clone());
        }
        if caller.certificate_sha256.is_some() && caller.participant.is_none() {
            return Decision::Deny("the client certificate is not on the participant list".into());
        }
        if caller.claims.is_some() {
            return Decision::Permit;
        }
        if self.config.require_token {
            return Decision::Unauthenticated("a bearer token or XUA assertion is required".into());
        }
        if caller.participant.is_some() || self.allow_anonymous_web {
            Decision::Permit
        } else {
            Decision::Unauthenticated("anonymous DICOMweb access is disabled".into())
        }
    }

    /// SOAP (XDS-I.b / XCA-I): claims are required on every call, whatever
    /// `dicomweb.allow_anonymous` says; a remote gateway (a participant) must present an XUA
    /// assertion in its WS-Security header, bound to it by the SAML verifier; a caller inside
    /// the hospital may use a bearer JWT instead (REFERENCE §2, ITI-40).
    fn admit_xds(&self, caller: &Caller) -> Decision {
        if let Some(why) = &caller.credential_error {
            return Decision::Unauthenticated(why.clone());
        }
        if caller.certificate_sha256.is_some() && caller.participant.is_none() {
            return Decision::Deny("the client certificate is not on the participant list".into());
        }
        match (&caller.participant, &caller.claims) {
            (Some(_), Some(c)) if c.source == ClaimSource::Saml => Decision::Permit,
            (Some(_), _) => Decision::Unauthenticated(
                "a remote gateway must present an XUA assertion in wsse:Security".into(),
            ),
            (None, Some(_)) => Decision::Permit,
            (None, None) => {
                Decision::Unauthenticated("an XUA assertion or a bearer token is required".into())
            }
        }
    }

    /// Verify an HTTP `Authorization` header value: `Bearer <JWT>` (RFC 6750 2.1) or
    /// `SAML <base64 XUA assertion>`. The error is a short reason for the 401.
    pub fn verify_credentials(
        &self,
        header: &[u8],
        gateway: Option<&Participant>,
    ) -> Result<Claims, String> {
        let value = std::str::from_utf8(header).map_err(|_| "malformed Authorization header")?;
        let (scheme, credentials) = value
            .trim()
            .split_once(' ')
            .ok_or("malformed Authorization header")?;
        let credentials = credentials.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            let verified = self.jwt.verify(credentials).map_err(|e| e.to_string());
            crate::metrics::token_verified(scheme, verified.is_ok());
            verified
        } else if scheme.eq_ignore_ascii_case("saml") {
            use base64::Engine;
            let xml = base64::engine::general_purpose::STANDARD
                .decode(credentials)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or("the SAML assertion is not base64 of UTF-8 XML")?;
            let verified = self.saml.verify(&xml, gateway).map_err(|e| e.to_string());
            crate::metrics::token_verified(scheme, verified.is_ok());
            verified
        } else {
            Err(format!("unsupported authorization scheme {scheme:?}"))
        }
    }

    /// Record the one audit record of an operation whose answer has gone out already (or
    /// is a refusal): a failure is logged and closes the gate for the operations after it
    /// ([`audit::AuditHealth`]).
    pub async fn audit(&self, caller: &Caller, operation: Operation, outcome: Outcome) {
        let _ = self.audit_before_answer(caller, operation, outcome).await;
    }

    /// Record the one audit record of an operation before its answer goes out: on `Err`
    /// the caller refuses instead (HTTP 503, DIMSE failure status), so that no answer
    /// leaves unaudited.
    pub async fn audit_before_answer(
        &self,
        caller: &Caller,
        operation: Operation,
        outcome: Outcome,
    ) -> Result<(), audit::AuditError> {
        let configured = self.effective_claims(caller);
        let claims = configured.as_ref();
        let claim = |f: fn(&Claims) -> &String| claims.map(f).cloned().unwrap_or_default();
        let detail = match &caller.request_id {
            Some(id) if outcome.detail.is_empty() => format!("(request {id})"),
            Some(id) => format!("{} (request {id})", outcome.detail),
            None => outcome.detail,
        };
        let entry = audit::AuditEntry {
            time: now_rfc3339(),
            operation: operation.name().to_string(),
            outcome: outcome.result,
            detail,
            gateway: caller
                .participant
                .as_ref()
                .map(|p| p.name.clone())
                .unwrap_or_else(|| caller.ae_title.clone()),
            certificate_sha256: caller.certificate_sha256.clone().unwrap_or_default(),
            organisation_ura: claim(|c| &c.organisation_ura),
            professional_uzi: claim(|c| &c.professional_uzi),
            role: claim(|c| &c.role),
            purpose_of_use: claim(|c| &c.purpose_of_use),
            token_id: claim(|c| &c.token_id),
            source_address: caller.address.clone(),
            grounds: outcome.grounds,
            patient_ids: outcome.patient_ids,
            study_uids: outcome.study_uids,
            correlation_id: caller.correlation_id.clone().unwrap_or_default(),
            trace_id: caller.trace_id.clone().unwrap_or_default(),
        };
        self.audit.record(entry).await
    }
}

/// Retention records through the audit trail of the process.
#[async_trait::async_trait]
impl crate::store::retention::RetentionAudit for Trust {
    type Error = audit::AuditError;

    async fn record_expired(
        &self,
        keep_days: u32,
        deleted: &crate::store::delete::Deleted,
    ) -> Result<(), audit::AuditError> {
        self.audit.record_expired(keep_days, deleted).await
    }
}

/// Does `host` (an IP literal or a name, resolved now) have address `ip`?
fn host_has_address(host: &str, ip: std::net::IpAddr) -> bool {
    use std::net::ToSocketAddrs;
    if let Ok(literal) = host.parse::<std::net::IpAddr>() {
        return literal.to_canonical() == ip;
    }
    let resolve = || {
        (host, 0)
            .to_socket_addrs()
            .map(|mut addrs| addrs.any(|a| a.ip().to_canonical() == ip))
            .unwrap_or(false)
    };
    // A name is resolved with the system resolver, which blocks (up to its timeouts). On a
    // runtime worker (association admission runs there) the worker's other tasks move to
    // another thread meanwhile instead of stalling behind the lookup.
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(resolve)
        }
        _ => resolve(),
    }
}

#[cfg(test)]
mod tests {
    use super::host_has_address;
    use std::net::{IpAddr, Ipv4Addr};

    const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    #[test]
    fn a_host_name_resolves_outside_and_on_either_runtime() {
        assert!(host_has_address("127.0.0.1", LOOPBACK));
        assert!(!host_has_address("127.0.0.2", LOOPBACK));
        assert!(host_has_address("localhost", LOOPBACK));
        // On a multi-threaded runtime the lookup leaves the worker; on a current-thread
        // runtime (where that is not possible) it runs in place.
        let multi = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        assert!(multi.block_on(async {
            tokio::spawn(async { host_has_address("localhost", LOOPBACK) })
                .await
                .unwrap()
        }));
        let single = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert!(single.block_on(async { host_has_address("localhost", LOOPBACK) }));
    }
}
