//! Other hospitals' gateways as a source behind the cache: the XCA-I initiating gateway
//! (IHE XCA-I, RAD TF-1 18; issue 15). On behalf of a local user the core asks it to
//!
//! - **find**: ITI-38 Cross Gateway Query FindDocuments by the patient's BSN, to every
//!   participant with a `query_url` (`[remote] localisation = "participants"`), or only to
//!   those whose organisation (URA) Mitz names in its answer to the open question
//!   (`localisation = "mitz"`, REFERENCE §2: the requesting gateway asks where data exists
//!   before it fans out), in parallel, each within `[remote] timeout_secs`; each KOS manifest's DocumentEntry becomes a
//!   study-level row ([`studies`]). A peer that fails or is too slow is an error of its own
//!   ([`Source::find_each`]): the core answers with the rest, marked partial.
//! - **count**: the instances the study's manifest references, the manifest fetched once by
//!   ITI-39 (a study is known from an earlier find, also after a restart: [`studies`]).
//! - **fetch**: RAD-75 Cross Gateway Retrieve Imaging Document Set of those instances (or
//!   WADO-RS where the peer offers DICOMweb and `[remote] prefer_wado_rs` allows: [`wado`]), the
//!   MTOM/XOP answer read part by part ([`soap::MtomStream`]) into a cache fill as its bytes
//!   arrive (`store::ingest::cache_fill`, as a PACS retrieve: checked, parsed and renamed
//!   into place on the fill's thread without an fsync per instance), each stored instance
//!   handed on through the [`Sink`] with its data set still in memory and indexed 64 at a
//!   time behind; the core syncs them all before it counts the study as cached. The call is
//!   dropped (the connection closed) when the consumers leave.
//!
//! Every call is mutual TLS ([`client`]: the peer's certificate against the CAs, CRLs and its
//! participant entry) and carries a fresh XUA assertion ([`SamlIssuer`], ≤ 10 minutes, bound
//! to the one patient asked about: ITI TF-2b 3.40) for the local user: the caller's verified
//! claims (a JWT) or those configured for its DIMSE AE, with a UZI number, role and purpose
//! of use. Without such a user nothing goes out. Each outgoing call leaves one audit record
//! naming the user, the peer and the patient.

pub mod client;
pub mod reports;
pub mod soap;
mod source;
pub mod studies;
mod wado;

use crate::config::{Localisation, RemoteConfig};
use crate::core::source::{
    index_behind, take_filled, Capabilities, FetchReport, Sink, Source, SourceError,
    SourceErrorKind,
};
use crate::ebrim::{ns, QueryId, Slot};
use crate::model::query::{Level, Match, Matcher, Query};
use crate::model::Selection;
use crate::store::ingest::{cache_fill, Expected, FillInstance, FillWriter};
use crate::trust::claims::{ClaimSource, Claims};
use crate::trust::consent::ConsentRequest;
use crate::trust::participants::Participant;
use crate::trust::saml::SamlIssuer;
use crate::trust::{Caller, Operation, Outcome, Trust};
use bytes::Bytes;
use client::PeerClient;
use futures::future::join_all;
use soap::DocumentRequest;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use studies::{KnownStudies, Referenced, RemoteStudy, PATIENT_ID, STUDY_UID};
use tokio::sync::mpsc;

/// The name the remote gateways go by in logs, audit details and errors.
pub const NAME: &str = "remote gateways";

/// The BSN's OID in an XDS patient id (REFERENCE §2).
const BSN_OID: &str = "2.16.840.1.113883.2.4.6.3";

/// Documents per RAD-75 request (a responding gateway limits a request's list).
const DOCUMENTS_PER_REQUEST: usize = 500;

/// Documents in a fetch's first RAD-75 request: few, so that the peer resolves and starts
/// fetching them (from its PACS: a C-FIND and a C-GET naming each) at once and the first
/// instance is on its way within a round trip; the rest go [`DOCUMENTS_PER_REQUEST`] at a
/// time.
const FIRST_REQUEST: usize = 4;

/// The next RAD-75 request goes out when this many parts of the current answer are left
/// to read: the peer resolves it (and asks its PACS) while the last parts arrive, so the
/// stream does not pause between requests, and holds its PACS back for a few instances
/// only.
const NEXT_REQUEST_AT: usize = 8;

/// Largest manifest read into memory (ITI-39).
const MANIFEST_LIMIT: usize = 64 << 20;

/// The transfer syntaxes a RAD-75 asks for: every common one, so that the peer sends each
/// instance as stored (RAD TF-3 4.69.4.1.2: it may send any of the listed syntaxes).
pub const SYNTAXES: &[&str] = &[
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.51",
    "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.201",
    "1.2.840.10008.1.2.4.202",
    "1.2.840.10008.1.2.4.203",
    "1.2.840.10008.1.2.5",
    "1.2.840.10008.1.2.4.100",
    "1.2.840.10008.1.2.4.101",
    "1.2.840.10008.1.2.4.102",
    "1.2.840.10008.1.2.4.103",
];

/// The syntaxes a front prepares for before the first instance arrives (its C-STORE
/// contexts toward a C-MOVE destination, for the classes the manifest names: [`Source::
/// classes_for`]): the usual ones of PACS archives; the rest as they come.
const USUAL_SYNTAXES: &[&str] = &[
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.5",
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.57",
];

/// Why a call to another gateway failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("remote: {0}")]
    Config(String),
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("SOAP Fault: {0}")]
    Fault(String),
    #[error("malformed answer: {0}")]
    Malformed(String),
    #[error("{0}")]
    Refused(String),
    #[error("cannot store: {0}")]
    Store(String),
    #[error("cancelled: every consumer left")]
    Cancelled,
}

impl RemoteError {
    fn kind(&self) -> SourceErrorKind {
        match self {
            RemoteError::Unreachable(_) | RemoteError::Tls(_) | RemoteError::Timeout(_) => {
                SourceErrorKind::Unreachable
            }
            RemoteError::Config(_) | RemoteError::Refused(_) => SourceErrorKind::NotSupported,
            RemoteError::Cancelled => SourceErrorKind::Cancelled,
            _ => SourceErrorKind::Failed,
        }
    }

    /// As a source error naming the peer.
    fn at(self, peer: &str) -> SourceError {
        SourceError::new(NAME, self.kind(), format!("{peer}: {self}"))
    }
}

/// The remote gateways (`[remote] enabled`).
pub struct RemoteSource {
    trust: Arc<Trust>,
    issuer: SamlIssuer,
    client: PeerClient,
    known: KnownStudies,
    /// Our own community: a participant entry of ourselves is never asked.
    own_home: String,
    timeout: Duration,
    localisation: Localisation,
    /// Largest document part of an answer (`[remote] max_instance_bytes`).
    max_instance_bytes: u64,
    /// Instances by WADO-RS from peers with a `dicomweb_url` (`[remote] prefer_wado_rs`).
    prefer_wado_rs: bool,
}

impl std::fmt::Debug for RemoteSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteSource")
            .field("own_home", &self.own_home)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl RemoteSource {
    /// From the configuration: the client identity and CAs (`[remote]` with its `[tls]`
    /// defaults), the CRLs (`tls.crl_files`), the assertion issuer (`[trust.saml] issuer`,
    /// `signing_cert_file`, `signing_key_file`), the studies known from earlier runs.
    pub fn new(
        config: &crate::config::Config,
        trust: Arc<Trust>,
    ) -> Result<RemoteSource, RemoteError> {
        let remote: RemoteConfig = config.remote.with_defaults(&config.tls);
        if remote.localisation == Localisation::Mitz && config.trust.consent.url.is_empty() {
            return Err(RemoteError::Config(
                "localisation = \"mitz\" asks the open question at [trust.consent] url, which is not set".into(),
            ));
        }
        let (Some(cert), Some(key), Some(ca)) = (
            &remote.client_cert_file,
            &remote.client_key_file,
            &remote.ca_file,
        ) else {
            return Err(RemoteError::Config(
                "client_cert_file, client_key_file and ca_file (or their [tls] defaults) are required".into(),
            ));
        };
        let files = client::ClientFiles {
            ca: ca.clone(),
            crls: config.tls.crl_files.clone(),
            cert: cert.clone(),
            key: key.clone(),
        };
        let issuer = SamlIssuer::new(&config.trust.saml).map_err(|e| {
            RemoteError::Config(format!("trust.saml (to issue XUA assertions): {e}"))
        })?;
        let timeout = Duration::from_secs(remote.timeout_secs);
        Ok(RemoteSource {
            trust,
            issuer,
            client: PeerClient::new(files, timeout)?,
            known: KnownStudies::open(Some(studies_file(&config.storage.data_dir))),
            own_home: config.xds.home_community_id.clone(),
            timeout,
            localisation: remote.localisation,
            max_instance_bytes: remote.max_instance_bytes,
            prefer_wado_rs: remote.prefer_wado_rs,
        })
    }

    /// The user on whose behalf we may call out for `bsn`, as claims for the assertion:
    /// a professional (UZI) with a role and purpose of use, ours (not another gateway's
    /// call passed on), not bound to another patient. `None`: nothing goes out.
    fn outgoing_claims(&self, caller: &Caller, bsn: &str) -> Option<Claims> {
        let mut claims = self.trust.effective_claims(caller)?;
        if claims.source == ClaimSource::Participant || caller.participant.is_some() {
            return None;
        }
        if [
            &claims.professional_uzi,
            &claims.role,
            &claims.purpose_of_use,
        ]
        .iter()
        .any(|v| v.trim().is_empty())
        {
            return None;
        }
        if claims.patient_bsn.as_deref().is_some_and(|b| b != bsn) {
            return None;
        }
        claims.patient_bsn = Some(bsn.to_string());
        Some(claims)
    }

    /// The gateways to ask: every participant with a query endpoint but ourselves.
    fn peers(&self) -> Vec<Arc<Participant>> {
        self.trust
            .participants
            .all()
            .into_iter()
            .filter(|p| p.query_url.is_some() && p.home_community_id != self.own_home)
            .collect()
    }

    /// The gateways to ask about `bsn` for `claims`: every peer ([`Self::peers`]), or with
    /// `localisation = "mitz"` those whose organisation Mitz names in its answer to the open
    /// question (REFERENCE §2), that answer audited as one outgoing call. No answer from
    /// Mitz: nobody is asked, and the error makes the caller's answer partial.
    async fn gateways_for(
        &self,
        caller: &Caller,
        claims: &Claims,
        bsn: &str,
    ) -> Result<Vec<Arc<Participant>>, SourceError> {
        let peers = self.peers();
        if self.localisation == Localisation::Participants {
            return Ok(peers);
        }
        let request = ConsentRequest {
            bsn: bsn.to_string(),
            requester_ura: claims.organisation_ura.clone(),
            provider_uzi: claims.professional_uzi.clone(),
            role: claims.role.clone(),
            purpose_of_use: claims.purpose_of_use.clone(),
        };
        let answer = self.trust.consent.locate(&request).await;
        let (result, detail, gateways) = match answer {
            Ok(holders) => {
                let named: Vec<Arc<Participant>> = peers
                    .into_iter()
                    .filter(|p| holders.iter().any(|h| *h == p.ura))
                    .collect();
                let without_gateway: Vec<&String> = holders
                    .iter()
                    .filter(|h| !named.iter().any(|p| p.ura == **h))
                    .collect();
                if !without_gateway.is_empty() {
                    tracing::info!(holders = ?without_gateway, "Mitz names holders that are no participant with a query_url: not asked");
                }
                let names: Vec<&str> = named.iter().map(|p| p.name.as_str()).collect();
                let detail = format!(
                    "open question: {} data holders permitted, asking [{}]",
                    holders.len(),
                    names.join(", ")
                );
                ("success", detail, Ok(named))
            }
            Err(why) => (
                "failure",
                format!("open question: {why}"),
                Err(SourceError::new(
                    NAME,
                    SourceErrorKind::Unreachable,
                    format!("Mitz (open question): {why}"),
                )),
            ),
        };
        let outcome = Outcome {
            patient_ids: vec![bsn.to_string()],
            study_uids: Vec::new(),
            result: result.to_string(),
            detail,
            grounds: String::new(),
        };
        let correlation = correlation_of(caller);
        self.audit(
            caller,
            Operation::MitzOpenQuestion,
            "Mitz",
            &correlation,
            outcome,
        )
        .await;
        gateways
    }

    fn peer(&self, name: &str) -> Result<Arc<Participant>, RemoteError> {
        self.trust
            .participants
            .all()
            .into_iter()
            .find(|p| p.name == name)
            .ok_or_else(|| RemoteError::Refused(format!("{name} is no longer a participant")))
    }

    /// One SOAP call: a fresh assertion for `claims`, the envelope with the exchange's
    /// correlation id, the answer's head.
    async fn call(
        &self,
        peer: &Participant,
        url: &str,
        action: &str,
        claims: &Claims,
        correlation: &str,
        body: &str,
    ) -> Result<hyper::Response<hyper::body::Incoming>, RemoteError> {
        let assertion = self
            .issuer
            .issue(claims, Some(&peer.home_community_id))
            .map_err(|e| RemoteError::Config(format!("cannot issue an XUA assertion: {e}")))?;
        let envelope = soap::envelope(action, url, Some(correlation), &assertion, body);
        self.client
            .post_soap(peer, url, action, correlation, envelope)
            .await
    }

    /// ITI-38 FindDocuments for `bsn` at one peer: the studies of its KOS manifests.
    async fn query_peer(
        &self,
        peer: &Participant,
        claims: &Claims,
        correlation: &str,
        bsn: &str,
    ) -> Result<Vec<RemoteStudy>, RemoteError> {
        let url = peer.query_url.as_deref().unwrap_or_default();
        let body = crate::ebrim::response::adhoc_query_request(
            QueryId::FindDocuments,
            &[
                Slot::new(
                    "$XDSDocumentEntryPatientId",
                    [format!("'{bsn}^^^&{BSN_OID}&ISO'")],
                ),
                Slot::new(
                    "$XDSDocumentEntryStatus",
                    [format!("('{}')", ns::STATUS_APPROVED)],
                ),
            ],
        );
        let call = async {
            let response = self
                .call(peer, url, soap::ACTION_ITI38, claims, correlation, &body)
                .await?;
            let element = soap::read_answer(response, self.timeout).await?;
            crate::ebrim::response::adhoc_query_response(&element)
                .map_err(|e| RemoteError::Malformed(e.to_string()))
        };
        let answer = tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| {
                RemoteError::Timeout(format!("no answer within {} s", self.timeout.as_secs()))
            })??;
        if answer.status == crate::ebrim::ResponseStatus::Failure {
            let why: Vec<String> = answer
                .errors
                .iter()
                .map(|e| format!("{} {}", e.code, e.context))
                .collect();
            return Err(RemoteError::Fault(format!("Failure: {}", why.join("; "))));
        }
        let home = answer.home.as_deref().unwrap_or(&peer.home_community_id);
        let mut found: Vec<RemoteStudy> = answer
            .objects
            .iter()
            .filter_map(|o| RemoteStudy::from_entry(o, &peer.name, Some(home)))
            .filter(|s| s.patient_id == bsn)
            .collect();
        // Reports (documents of their own): with their study, or a study of their own
        // when the peer publishes no manifest for it.
        for entry in &answer.objects {
            let Some((study_uid, report)) = reports::RemoteReport::from_entry(entry, home) else {
                continue;
            };
            match found.iter_mut().find(|s| s.study_uid == study_uid) {
                Some(study) => study.add_report(report),
                None => found.extend(
                    RemoteStudy::of_report(entry, &peer.name, Some(home), report)
                        .filter(|s| s.patient_id == bsn),
                ),
            }
        }
        Ok(found)
    }

    /// Audit one outgoing call (PS3.15 A.5: Query 110112 for ITI-38, Export / Instances
    /// Transferred for ITI-39 / RAD-75), naming the local user (the caller and its claims),
    /// the peer, the patient and the correlation id the call carried.
    async fn audit(
        &self,
        caller: &Caller,
        operation: Operation,
        peer: &str,
        correlation: &str,
        mut outcome: Outcome,
    ) {
        outcome.detail = format!("outgoing to {peer}: {}", outcome.detail);
        let mut caller = caller.clone();
        caller.correlation_id = Some(correlation.to_string());
        self.trust.audit(&caller, operation, outcome).await;
    }

    /// The instances the study's manifest references, fetched by ITI-39 the first time.
    async fn manifest(
        &self,
        caller: &Caller,
        claims: &Claims,
        study: &RemoteStudy,
    ) -> Result<Arc<Vec<Referenced>>, RemoteError> {
        if let Some(known) = self.known.manifest(&study.study_uid) {
            return Ok(known);
        }
        if study.manifest.is_empty() {
            // Known by its reports only: nothing to read.
            return Ok(self.known.set_manifest(&study.study_uid, Vec::new()));
        }
        let peer = self.peer(&study.peer)?;
        let url = peer
            .retrieve_url
            .clone()
            .ok_or_else(|| RemoteError::Config(format!("{} has no retrieve_url", peer.name)))?;
        let body = soap::iti39_body(&[DocumentRequest {
            home: study.home.clone(),
            repository: study.repository.clone(),
            document: study.manifest.clone(),
            study: study.study_uid.clone(),
            series: String::new(),
        }]);
        let correlation = correlation_of(caller);
        let started = std::time::Instant::now();
        let read = async {
            let response = self
                .call(&peer, &url, soap::ACTION_ITI39, claims, &correlation, &body)
                .await?;
            let mut answer = soap::open_retrieve(response, self.timeout).await?;
            let mut bytes = Vec::new();
            while let Some((_, mut part)) = answer.next_part().await? {
                while let Some(chunk) = part
                    .chunk()
                    .await
                    .map_err(|e| RemoteError::Malformed(format!("MTOM: {e}")))?
                {
                    if bytes.len() + chunk.len() > MANIFEST_LIMIT {
                        return Err(RemoteError::Malformed("manifest too large".into()));
                    }
                    bytes.extend_from_slice(&chunk);
                }
                if !bytes.is_empty() {
                    break;
                }
            }
            if bytes.is_empty() {
                let (status, errors, _) = answer.documents();
                return Err(RemoteError::Fault(format!(
                    "no manifest ({status}: {})",
                    errors.join("; ")
                )));
            }
            studies::read_manifest(&bytes, &study.study_uid).map_err(RemoteError::Malformed)
        };
        let result = tokio::time::timeout(self.timeout, read)
            .await
            .unwrap_or_else(|_| {
                Err(RemoteError::Timeout(
                    "the manifest did not arrive in time".into(),
                ))
            });
        let (outcome, detail) = match &result {
            Ok(r) => (
                "success",
                format!("manifest {} ({} instances)", study.manifest, r.len()),
            ),
            Err(e) => ("failure", e.to_string()),
        };
        traffic(&peer.name, "iti39", &result, started);
        self.audit(
            caller,
            Operation::Iti39,
            &peer.name,
            &correlation,
            outcome_of(study, outcome, detail),
        )
        .await;
        Ok(self.known.set_manifest(&study.study_uid, result?))
    }

    /// The known study a selection names, with the claims to fetch it for `caller`.
    fn selected(
        &self,
        caller: &Caller,
        selection: &Selection,
    ) -> Option<(RemoteStudy, Option<Claims>)> {
        let study = self.known.get(selection.study_uids.first()?)?;
        if !selection.patient_ids.is_empty() && !selection.patient_ids.contains(&study.patient_id) {
            return None;
        }
        let claims = self.outgoing_claims(caller, &study.patient_id);
        Some((study, claims))
    }

    /// Send a RAD-75 request for `documents` and open its answer (the envelope read, the
    /// parts still to come).
    async fn open_batch(
        &self,
        peer: &Participant,
        claims: &Claims,
        correlation: &str,
        documents: &[DocumentRequest],
    ) -> Result<soap::MtomStream, RemoteError> {
        let url = peer
            .retrieve_url
            .clone()
            .ok_or_else(|| RemoteError::Config(format!("{} has no retrieve_url", peer.name)))?;
        let body = soap::rad75_body(documents, SYNTAXES);
        let response = self
            .call(peer, &url, soap::ACTION_RAD75, claims, correlation, &body)
            .await?;
        soap::open_retrieve(response, self.timeout).await
    }

    /// The `wanted` reports of `study` by ITI-39 into the cache and on to the consumers
    /// ([`reports`]): each answer part read whole (at most [`reports::REPORT_LIMIT`] and
    /// `max_instance_bytes`), a DICOM file stored as sent, a PDF or CDA document as the
    /// instance that encapsulates it; a part that is neither is left out (counted missing).
    #[allow(clippy::too_many_arguments)]
    async fn read_reports(
        &self,
        peer: &Participant,
        claims: &Claims,
        correlation: &str,
        study: &RemoteStudy,
        wanted: &[reports::RemoteReport],
        sink: &Sink<'_>,
        report: &mut FetchReport,
    ) -> Result<(), RemoteError> {
        let url = peer
            .retrieve_url
            .clone()
            .ok_or_else(|| RemoteError::Config(format!("{} has no retrieve_url", peer.name)))?;
        let requests: Vec<DocumentRequest> = wanted
            .iter()
            .map(|r| DocumentRequest {
                home: study.home.clone(),
                repository: r.repository.clone(),
                document: r.unique_id.clone(),
                study: study.study_uid.clone(),
                series: String::new(),
            })
            .collect();
        let body = soap::iti39_body(&requests);
        let limit = reports::REPORT_LIMIT
            .min(usize::try_from(self.max_instance_bytes).unwrap_or(usize::MAX));
        let timeout = self.timeout;
        let cancel = sink.cancel;
        self.fill_cache(sink, report, |fill| async move {
            let stopped = |_| RemoteError::Store("the cache fill has stopped".into());
            let response = self
                .call(peer, &url, soap::ACTION_ITI39, claims, correlation, &body)
                .await?;
            let mut answer = soap::open_retrieve(response, timeout).await?;
            let (status, errors, by_part) = answer.documents();
            if !errors.is_empty() {
                tracing::warn!(%status, errors = ?errors, "ITI-39 (reports): the peer reports errors");
            }
            loop {
                let next = tokio::select! {
                    _ = cancel.cancelled() => return Err(RemoteError::Cancelled),
                    next = tokio::time::timeout(timeout, answer.next_part()) => next
                        .map_err(|_| RemoteError::Timeout("the next report did not arrive in time".into()))??,
                };
                let Some((cid, mut part)) = next else {
                    return Ok(());
                };
                let Some(asked) = by_part
                    .get(&cid)
                    .and_then(|d| wanted.iter().find(|r| r.unique_id == d.document))
                else {
                    return Err(RemoteError::Malformed(format!(
                        "part {cid:?} is no report asked for"
                    )));
                };
                let mut bytes = Vec::new();
                loop {
                    let chunk = tokio::select! {
                        _ = cancel.cancelled() => return Err(RemoteError::Cancelled),
                        chunk = tokio::time::timeout(timeout, part.chunk()) => chunk,
                    };
                    match chunk {
                        Ok(Ok(Some(c))) if bytes.len() + c.len() > limit => {
                            return Err(RemoteError::Malformed(format!(
                                "report {} is larger than {limit} bytes",
                                asked.unique_id
                            )))
                        }
                        Ok(Ok(Some(c))) => bytes.extend_from_slice(&c),
                        Ok(Ok(None)) => break,
                        Ok(Err(e)) => {
                            return Err(RemoteError::Malformed(format!("part {cid:?}: {e}")))
                        }
                        Err(_) => return Err(RemoteError::Timeout(format!("part {cid:?} stalled"))),
                    }
                }
                // A DICOM file as sent; a PDF or CDA document wrapped.
                let (mut file, wrapped) = if reports::is_part10(&bytes) {
                    (bytes, false)
                } else {
                    let of = reports::StudyOf {
                        patient_id: &study.patient_id,
                        study_uid: &study.study_uid,
                        row: &study.row,
                    };
                    match reports::encapsulate(asked, &of, &bytes) {
                        Ok(file) => (file, true),
                        Err(why) => {
                            tracing::warn!(document = %asked.unique_id, %why, "ITI-39: a report that cannot be stored");
                            continue;
                        }
                    }
                };
                let whole = header_len(&file).filter(|n| *n <= file.len());
                let rest = file.split_off(whole.unwrap_or(file.len()));
                let mut one = fill.begin(file);
                if !rest.is_empty() {
                    one.push(Bytes::from(rest)).await.map_err(stopped)?;
                }
                let expected = Expected {
                    sop_class: (wrapped && whole.is_some()).then_some(asked.sop_class.as_str()),
                    sop_instance: wrapped.then_some(asked.sop_instance.as_str()),
                    study_uid: Some(&study.study_uid),
                };
                one.finish(&expected).await.map_err(stopped)?;
            }
        })
        .await
    }

    /// A RAD-75 answer's parts into the sink, part by part: each part goes into a cache fill
    /// (`store::ingest::cache_fill`) as its bytes arrive; the fill's thread checks, parses
    /// and renames it into place without an fsync (the study counts as cached only after
    /// the core's end-of-fetch sync), and it is handed on with its data set in memory while
    /// the next part is read, and indexed [`INDEX_BATCH`](crate::core::source::INDEX_BATCH)
    /// at a time. `classes`: the SOP Class UID of each document, from the manifest.
    /// `near_end` is sent when at most [`NEXT_REQUEST_AT`] parts are left to read.
    async fn read_batch(
        &self,
        mut answer: soap::MtomStream,
        study: &RemoteStudy,
        classes: &HashMap<String, String>,
        sink: &Sink<'_>,
        report: &mut FetchReport,
        near_end: tokio::sync::oneshot::Sender<()>,
    ) -> Result<(), RemoteError> {
        let (status, errors, by_part) = answer.documents();
        if !errors.is_empty() {
            tracing::warn!(%status, errors = ?errors, "RAD-75: the peer reports errors");
        }
        let parts = Parts {
            study_uid: &study.study_uid,
            classes,
            timeout: self.timeout,
            max_bytes: self.max_instance_bytes,
        };
        self.fill_cache(sink, report, |fill| {
            parts.read(&mut answer, &by_part, fill, sink.cancel, near_end)
        })
        .await
    }

    /// Run `read` with a cache fill (`store::ingest::cache_fill`) and, at the same time, hand
    /// on what the fill stored and index it behind, as a PACS retrieve does. However the
    /// reading ends, what was stored is handed on and indexed; `report` counts it.
    async fn fill_cache<'s, F, Fut>(
        &self,
        sink: &Sink<'s>,
        report: &mut FetchReport,
        read: F,
    ) -> Result<(), RemoteError>
    where
        F: FnOnce(FillWriter) -> Fut,
        Fut: std::future::Future<Output = Result<(), RemoteError>>,
    {
        let (fill, filled) = cache_fill(sink.blobs);
        let (to_index, indexing) = mpsc::unbounded_channel();
        let (read, (received, _not_stored), not_indexed) = tokio::join!(
            read(fill),
            take_filled(filled, sink, to_index),
            index_behind(sink, indexing),
        );
        // An instance that failed the checks is missing from `received` (the caller counts
        // it failed); one not indexed was handed on but is not in the cache.
        report.received += received;
        report.completed = report
            .completed
            .saturating_add(u16::try_from(received).unwrap_or(u16::MAX));
        report.not_cached += not_indexed;
        if read.is_ok() && sink.cancel.is_cancelled() {
            return Err(RemoteError::Cancelled);
        }
        read
    }
}

/// Reading an answer's document parts (RAD-75 MTOM, WADO-RS multipart) into a cache fill.
struct Parts<'a> {
    study_uid: &'a str,
    /// The SOP Class UID of each instance, from the manifest.
    classes: &'a HashMap<String, String>,
    timeout: Duration,
    /// Largest part: one that grows past it fails the read (`[remote] max_instance_bytes`).
    max_bytes: u64,
}

/// Longest Part 10 header (preamble and meta group) looked for at the start of a part.
const HEADER_LIMIT: usize = 64 << 10;

impl Parts<'_> {
    /// Every part of a RAD-75 answer into `fill`, each as its bytes arrive, named by the
    /// envelope's DocumentResponse of its Content-ID (`by_part`); `fill` is dropped at the
    /// end, which ends the fill once it has stored what it was given.
    async fn read(
        &self,
        answer: &mut soap::MtomStream,
        by_part: &HashMap<String, soap::DocumentResponse>,
        fill: FillWriter,
        cancel: &tokio_util::sync::CancellationToken,
        near_end: tokio::sync::oneshot::Sender<()>,
    ) -> Result<(), RemoteError> {
        let mut near_end = Some(near_end);
        let mut seen = 0usize;
        loop {
            if by_part.len().saturating_sub(seen) <= NEXT_REQUEST_AT {
                if let Some(tx) = near_end.take() {
                    let _ = tx.send(());
                }
            }
            seen += 1;
            let next = tokio::select! {
                _ = cancel.cancelled() => return Err(RemoteError::Cancelled),
                next = tokio::time::timeout(self.timeout, answer.next_part()) => next
                    .map_err(|_| RemoteError::Timeout("the next document did not arrive in time".into()))??,
            };
            let Some((cid, mut part)) = next else {
                return Ok(());
            };
            let Some(document) = by_part.get(&cid) else {
                return Err(RemoteError::Malformed(format!(
                    "part {cid:?} is not in the envelope"
                )));
            };
            self.read_part(&mut part, &cid, &fill, cancel, Some(&document.document))
                .await?;
        }
    }

    /// One part into `fill` as its bytes arrive. `document`: the SOP Instance UID the
    /// answer names for it (RAD-75), or `None`: the one its Part 10 header names (WADO-RS
    /// parts carry no other name); a part whose header names an instance the manifest does
    /// not is left unread (the multipart reader skips it).
    async fn read_part(
        &self,
        part: &mut multer::Field<'static>,
        name: &str,
        fill: &FillWriter,
        cancel: &tokio_util::sync::CancellationToken,
        document: Option<&str>,
    ) -> Result<(), RemoteError> {
        // The part's first bytes until its Part 10 header (preamble and meta group) is
        // whole: the fill keeps the header and the data set apart, so that the data set
        // can be passed on from memory as it came. Dropped unfinished (an error, a
        // cancel), the instance's temp file is removed.
        let mut head: Vec<u8> = Vec::new();
        let mut instance: Option<(FillInstance<'_>, bool)> = None;
        let mut named: Option<String> = document.map(str::to_string);
        let mut part_bytes = 0u64;
        loop {
            let chunk = tokio::select! {
                _ = cancel.cancelled() => return Err(RemoteError::Cancelled),
                chunk = tokio::time::timeout(self.timeout, part.chunk()) => chunk,
            };
            let chunk = match chunk {
                Ok(Ok(Some(c))) => c,
                Ok(Ok(None)) => break,
                Ok(Err(e)) => return Err(RemoteError::Malformed(format!("part {name:?}: {e}"))),
                Err(_) => return Err(RemoteError::Timeout(format!("part {name:?} stalled"))),
            };
            // A part without end (a hostile or broken peer): it fails here, its temp
            // file removed as `instance` drops, before it fills the disk.
            part_bytes += chunk.len() as u64;
            if part_bytes > self.max_bytes {
                return Err(RemoteError::Malformed(format!(
                    "part {name:?} is larger than remote.max_instance_bytes ({} bytes)",
                    self.max_bytes
                )));
            }
            let stopped = |_| RemoteError::Store("the cache fill has stopped".into());
            match &mut instance {
                Some((one, _)) => one.push(chunk).await.map_err(stopped)?,
                None => {
                    head.extend_from_slice(&chunk);
                    let split = match header_len(&head) {
                        Some(n) if n <= head.len() => Some((n, true)),
                        // More to come before the header is whole.
                        Some(n) if n <= HEADER_LIMIT => None,
                        None if head.len() < 144 => None,
                        // No Part 10 header (or an absurd one): all of it goes as the
                        // header, and the file is read back when it is passed on.
                        _ => Some((head.len(), false)),
                    };
                    if let Some((n, whole)) = split {
                        let rest = head.split_off(n);
                        if whole && named.is_none() {
                            named = sop_instance_of(&head);
                            // Not in the manifest (a WADO-RS answer holds whatever the
                            // peer has of the study now, its own KOS among it): not part of
                            // what it published; the rest of the part is skipped.
                            if let Some(uid) =
                                named.as_ref().filter(|u| !self.classes.contains_key(*u))
                            {
                                tracing::debug!(%uid, part = %name, "not in the manifest: skipped");
                                return Ok(());
                            }
                        }
                        let mut one = fill.begin(std::mem::take(&mut head));
                        if !rest.is_empty() {
                            one.push(Bytes::from(rest)).await.map_err(stopped)?;
                        }
                        instance = Some((one, whole));
                    }
                }
            }
        }
        let (one, whole) = match instance {
            Some(i) => i,
            // A short part: the fill's checks judge it.
            None => (fill.begin(std::mem::take(&mut head)), false),
        };
        // With the class the manifest names, the fill keeps the data set for the
        // consumer (when the stored file says the same); without, it is read back.
        let expected = Expected {
            sop_class: whole
                .then(|| named.as_ref().and_then(|uid| self.classes.get(uid)))
                .flatten()
                .map(String::as_str),
            sop_instance: named.as_deref(),
            study_uid: Some(self.study_uid),
        };
        one.finish(&expected)
            .await
            .map_err(|_| RemoteError::Store("the cache fill has stopped".into()))
    }
}

/// The Media Storage SOP Instance UID (0002,0003) of a whole Part 10 header (PS3.10 7.1).
fn sop_instance_of(header: &[u8]) -> Option<String> {
    let layout = crate::dataset::layout_in_memory(&[Bytes::copy_from_slice(header)]).ok()?;
    let uid = layout
        .meta
        .media_storage_sop_instance_uid
        .trim_end_matches(['\0', ' '])
        .to_string();
    (!uid.is_empty()).then_some(uid)
}

/// The length of a Part 10 file's preamble and meta group (PS3.10 7.1): 128 bytes, "DICM",
/// the (0002,0000) group length element in Explicit VR Little Endian, then the rest of the
/// group, as [`crate::dataset::layout_in_memory`] takes it. `None` while `head` is too
/// short to say, or when it is no Part 10 file.
fn header_len(head: &[u8]) -> Option<usize> {
    const GROUP_LENGTH: [u8; 8] = [0x02, 0x00, 0x00, 0x00, b'U', b'L', 0x04, 0x00];
    if head.len() < 144 || &head[128..132] != b"DICM" || head[132..140] != GROUP_LENGTH {
        return None;
    }
    let length = u32::from_le_bytes([head[140], head[141], head[142], head[143]]);
    144usize.checked_add(length as usize)
}

/// Where the studies found at other gateways are remembered.
pub fn studies_file(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("remote-studies.jsonl")
}

/// The one BSN a query asks for, if any: PatientID as a single value, or as a BSN between
/// `*` wildcards (a viewer's patient filter: OHIF sends `00100020=*<id>*`), which matches
/// that BSN only, since every Patient ID another gateway answers with is a BSN (nine digits).
fn queried_bsn(query: &Query) -> Option<String> {
    query
        .keys
        .iter()
        .find_map(|k| match (&k.matcher, k.attr.tag) {
            (Matcher::Single(v) | Matcher::Wildcard(v), PATIENT_ID) => {
                let bsn = v.trim().trim_matches('*');
                crate::trust::policy::is_bsn(bsn).then(|| bsn.to_string())
            }
            _ => None,
        })
}

/// The Study Instance UIDs a query names, if any.
fn queried_studies(query: &Query) -> Vec<String> {
    query
        .keys
        .iter()
        .filter(|k| k.attr.tag == STUDY_UID)
        .flat_map(|k| match &k.matcher {
            Matcher::Single(v) => vec![v.clone()],
            Matcher::UidList(list) => list.clone(),
            _ => Vec::new(),
        })
        .collect()
}

/// The correlation id of the exchange `caller` started (issue 17 item 2): the one it
/// brought, else one derived from its request (so every call of one request shares it).
fn correlation_of(caller: &Caller) -> String {
    caller
        .correlation_id
        .clone()
        .unwrap_or_else(|| crate::oplog::new_correlation(caller.request_id.as_deref()))
}

/// A real call to a peer gateway, for its error rate and latency (`metrics::peer_call`).
fn traffic<T>(
    peer: &str,
    call: &'static str,
    result: &Result<T, RemoteError>,
    started: std::time::Instant,
) {
    let why = result.as_ref().err().map(|e| e.to_string());
    crate::metrics::peer_call(
        "gateway",
        peer,
        call,
        why.as_deref().map_or(Ok(()), Err),
        started.elapsed(),
    );
}

/// The audit outcome of a call about one study.
fn outcome_of(study: &RemoteStudy, result: &str, detail: String) -> Outcome {
    Outcome {
        patient_ids: vec![study.patient_id.clone()],
        study_uids: vec![study.study_uid.clone()],
        result: result.to_string(),
        detail,
        grounds: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::query::{indexed_attr_by_keyword, QueryKey};

    fn by_patient(matcher: Matcher) -> Query {
        let mut query = Query::new(Level::Study);
        query.keys.push(QueryKey {
            attr: indexed_attr_by_keyword("PatientID").expect("indexed"),
            matcher,
        });
        query
    }

    #[test]
    fn a_viewers_wildcard_patient_filter_asks_for_that_bsn() {
        let bsn = |m: Matcher| queried_bsn(&by_patient(m));
        assert_eq!(
            bsn(Matcher::Single("999999990".into())).as_deref(),
            Some("999999990")
        );
        // OHIF's work list filter (`?mrn=`), with the data source's supportsWildcard.
        assert_eq!(
            bsn(Matcher::Wildcard("*999999990*".into())).as_deref(),
            Some("999999990")
        );
        assert_eq!(
            bsn(Matcher::Wildcard("999999990*".into())).as_deref(),
            Some("999999990")
        );
        // Not one BSN: nobody is asked.
        assert_eq!(bsn(Matcher::Wildcard("*99999999*".into())), None);
        assert_eq!(bsn(Matcher::Wildcard("9999*9990".into())), None);
        assert_eq!(bsn(Matcher::Wildcard("?99999990".into())), None);
        assert_eq!(
            bsn(Matcher::Single("123456789".into())),
            None,
            "fails the 11-test"
        );
        assert_eq!(bsn(Matcher::Universal), None);
    }
}
