//! Core: the one place where a query or a retrieve is answered, and where a stored instance
//! comes in, whichever front asked (DESIGN "core"). Fronts only translate their wire into a
//! [`Query`], a [`Selection`] or an instance's bytes and back; [`Core`] does the rest:
//!
//! 1. [`Core::admit`]: the trust decision for the operation; a refusal is audited there, a
//!    permit becomes a [`Ticket`] that owes the operation's one audit record
//!    ([`ticket`]).
//! 2. [`Core::query`]: the query scoped to what the caller may ask, answered by the cache
//!    and the sources its front may reach ([`Routes`]), merged, de-duplicated and paged
//!    after the merge ([`route`]), names matched fuzzily where a source cannot, the series
//!    and instances of a study that a source knows only as a study answered after it is
//!    fetched into the cache ([`query_fill`]), and the answers limited to the patients the
//!    caller may see ([`decide`]).
//! 3. [`Core::retrieve`]: the patients decided before the first byte, then the cache or a
//!    fetch from a source ([`route`]: cache rules in [`cache`]), one fetch per selection
//!    shared by every request, pinned against eviction, cancelled when the last consumer
//!    goes away ([`follow`]); the front reads [`Instances`].
//! 4. [`Core::ingest`]: the one ingest path of C-STORE and STOW-RS ([`ingest`]): the bytes
//!    as they arrive ([`Incoming`]), checked, fsynced and indexed before the front
//!    acknowledges; the ticket (or, for the C-STOREs of an association, [`Stores`]) owes
//!    the record.
//!
//! 4. [`Core::registry_query`]: XDS stored queries (ITI-18, ITI-38) answered by the registry
//!    behind [`registry::Registry`], with the same consent rule and one audit record
//!    ([`registry`]).
//!
//! Sources sit behind one trait ([`source::Source`]): the local PACS (`crate::pacs`) today,
//! other hospitals' gateways next. The core knows the store (the cache) and trust, and
//! nothing of the fronts or of how a source works.

pub mod cache;
pub mod console;
pub mod decide;
pub mod follow;
pub mod ingest;
pub mod instances;
mod query_fill;
pub mod registry;
pub mod reported;
pub mod route;
pub mod source;
pub mod stored;
pub mod ticket;
pub mod transfers;

#[cfg(test)]
mod tests;

pub use cache::CacheRules;
pub use ingest::{Durable, Expected, Incoming, IngestFailure, StoredInstance, Stores};
pub use instances::Instances;
pub use registry::{PublishedDocument, Registry, RegistryAnswer, RegistryScope};
pub use reported::Holdings;
// The models, for the fronts: they speak to the core in its terms.
pub use crate::model::{query, retrieve};
pub use crate::model::{
    AttrKind, IndexedAttr, InstanceLocation, Level, Match, Matcher, Query, QueryKey, Selection,
    INDEXED_ATTRS,
};
pub use source::{Source, SourceError, SourceErrorKind};
pub use stored::{LocalFile, Stored};
pub use ticket::Ticket;

use crate::store::{BlobStore, Index, IndexError};
use crate::trust::{Operation, Trust};
use follow::Fetches;
use route::Answer;
use std::sync::Arc;

/// The fronts, for [`Routes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Front {
    /// DIMSE C-FIND, C-MOVE, C-GET (the hospital's PACS and workstations).
    Dimse,
    /// DICOMweb QIDO-RS and WADO-RS.
    Web,
    /// XDS-I / XCA-I (other hospitals' gateways).
    Xds,
}

impl Front {
    pub fn name(self) -> &'static str {
        match self {
            Front::Dimse => "DIMSE",
            Front::Web => "DICOMweb",
            Front::Xds => "XDS",
        }
    }

    /// The front an operation arrives on.
    pub fn of(operation: Operation) -> Front {
        match operation {
            Operation::Find | Operation::Move | Operation::Get => Front::Dimse,
            op if op.is_xds() => Front::Xds,
            _ => Front::Web,
        }
    }
}

/// Which sources each front may reach, by index into the core's sources: stated here, in one
/// place, rather than implied by which file calls what. The cache answers every front.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes {
    pub dimse: Vec<usize>,
    pub web: Vec<usize>,
    pub xds: Vec<usize>,
}

impl Routes {
    fn of(&self, front: Front) -> &[usize] {
        match front {
            Front::Dimse => &self.dimse,
            Front::Web => &self.web,
            Front::Xds => &self.xds,
        }
    }
}

/// Why a request was refused: each front answers its own way (401/403/503, 0124/A7xx).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No or bad credentials.
    Unauthenticated(String),
    /// Known caller, not allowed (participant, role, patient, consent).
    Forbidden(String),
    /// Nothing is served now (the audit trail cannot be written).
    Unavailable(String),
}

impl Refusal {
    pub fn reason(&self) -> &str {
        match self {
            Refusal::Unauthenticated(r) | Refusal::Forbidden(r) | Refusal::Unavailable(r) => r,
        }
    }
}

/// Why the core could not answer. Every one has been audited by the time a front sees it.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("{}", .0.reason())]
    Refused(Refusal),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Source(#[from] SourceError),
    #[error("index: {0}")]
    Index(#[from] IndexError),
}

/// How a front wants the instances of a retrieve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// From the first instance, as a fetch stores them (multipart, DIMSE sub-operations).
    Streamed,
    /// Only once all are in the cache (metadata, frames, bulk data, rendered, one instance).
    Cached,
}

/// A query's answers, with the ticket whose record the front writes once they went out.
#[derive(Debug)]
pub struct Found {
    pub matches: Vec<Match>,
    pub ticket: Ticket,
    /// Sources that could not answer while the cache or another source did: the matches
    /// may be incomplete, and the front says so (QIDO-RS `Warning: 299`, C-FIND a failure
    /// status after the pending rows). Empty: every source answered.
    pub unanswered: Vec<SourceError>,
}

/// A retrieve under way.
#[derive(Debug)]
pub struct Retrieval {
    pub instances: Instances,
    /// How many instances to expect: the cache's count, or what the source reported.
    pub expected: u64,
    /// "cache", or the name of the source the instances stream from.
    pub from: &'static str,
    /// The transfer syntaxes the instances are stored in, when known before the first byte
    /// (from the cache): a front plans its encoding from them.
    pub stored_syntaxes: Option<Vec<String>>,
    /// Streamed from a source: the syntaxes its instances may arrive in
    /// ([`source::Capabilities::transfer_syntaxes`]).
    pub source_syntaxes: Option<Vec<String>>,
    /// Streamed from a source that knows them: the SOP classes that will arrive
    /// ([`source::Source::classes_for`]).
    pub source_classes: Option<Vec<String>>,
    pub ticket: Ticket,
    /// A study sent to a client (C-MOVE, C-GET, WADO-RS; streamed delivery) on the console's
    /// transfers board: the front reports each instance sent ([`transfers::Tracked::advance`]),
    /// stops sending when the operator cancels it ([`transfers::Tracked::is_cancelled`]) and
    /// ends it ([`transfers::Running::finish`]; dropped unfinished, it ends `incomplete`).
    pub sending: Option<transfers::Running>,
}

/// The core: trust, the cache, the sources and the routes between fronts and sources.
#[derive(Debug)]
pub struct Core {
    trust: Arc<Trust>,
    index: Arc<dyn Index>,
    blobs: BlobStore,
    /// The group commit of C-STORE and STOW-RS (`core::ingest`).
    committer: crate::store::ingest::Committer,
    stored: Stored,
    cache: CacheRules,
    fetches: Fetches,
    /// Forwards and publications, for the console.
    transfers: Arc<transfers::Board>,
    sources: Vec<Arc<dyn Source>>,
    routes: Routes,
    registry: Option<Arc<dyn Registry>>,
    /// This node's name in the leases of the shared index (see `route::FETCH_LEASE_SECS`).
    node: String,
    /// This node's running fetches that hold a study's fetch lease, by study: the lease is
    /// one per node and study, so it is given back only when the last of them ends.
    fetch_leases: route::LeaseHolders,
}

/// Builds a [`Core`] (`server::start` is the composition root).
#[derive(Debug)]
pub struct CoreBuilder {
    core: Core,
}

impl CoreBuilder {
    pub fn cache_rules(mut self, rules: CacheRules) -> Self {
        if let Some(wait) = rules.client_wait {
            self.core.fetches.client_wait = wait;
        }
        self.core.cache = rules;
        self
    }

    /// Add a source, reachable from `fronts`.
    pub fn source(mut self, source: Arc<dyn Source>, fronts: &[Front]) -> Self {
        let at = self.core.sources.len();
        self.core.sources.push(source);
        for front in fronts {
            match front {
                Front::Dimse => self.core.routes.dimse.push(at),
                Front::Web => self.core.routes.web.push(at),
                Front::Xds => self.core.routes.xds.push(at),
            }
        }
        self
    }

    /// The XDS registry (`[xds] enabled`): ITI-18/38 and the documents of ITI-43/RAD-69.
    pub fn registry(mut self, registry: Arc<dyn Registry>) -> Self {
        self.core.registry = Some(registry);
        self
    }

    /// Where forwards and publications report to the console (for the workers and the
    /// registry built before the core).
    pub fn transfer_board(&self) -> Arc<transfers::Board> {
        self.core.transfers.clone()
    }

    pub fn build(self) -> Arc<Core> {
        Arc::new(self.core)
    }
}

/// A name no other node (or other core in this process) has: process id, start time and a
/// counter.
fn node_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{:x}-{nanos:x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

impl Core {
    pub fn builder(trust: Arc<Trust>, index: Arc<dyn Index>, blobs: BlobStore) -> CoreBuilder {
        CoreBuilder {
            core: Core {
                trust,
                stored: Stored::new(blobs.clone()),
                committer: crate::store::ingest::Committer::new(blobs.clone(), index.clone()),
                index,
                blobs,
                cache: CacheRules::default(),
                fetches: Fetches::default(),
                transfers: Arc::default(),
                sources: Vec::new(),
                routes: Routes::default(),
                registry: None,
                node: node_name(),
                fetch_leases: route::LeaseHolders::default(),
            },
        }
    }

    pub fn routes(&self) -> &Routes {
        &self.routes
    }

    /// Where the fronts read the cache's instances.
    pub fn stored(&self) -> &Stored {
        &self.stored
    }

    /// The sources the front of `operation` may reach.
    fn sources_for(&self, operation: Operation) -> Vec<Arc<dyn Source>> {
        self.routes
            .of(Front::of(operation))
            .iter()
            .filter_map(|&i| self.sources.get(i).cloned())
            .collect()
    }

    /// Answer a query: at most `max_results` matches (the query's own limit and offset
    /// page them). On `Err` the ticket's record has been written.
    pub async fn query(
        self: &Arc<Self>,
        mut ticket: Ticket,
        query: Query,
        max_results: usize,
    ) -> Result<Found, CoreError> {
        let query = self.trust.scope_query(ticket.caller(), query);
        let sources = self.sources_for(ticket.operation());
        // The series or instances of a study a source knows only as a study: the study is
        // brought into the cache first ([`query_fill`]); when nothing answered and the source
        // did not know it, the source is asked by the query's patient, and the query again.
        let caller = ticket.caller().clone();
        let mut not_filled = self
            .fill_for_query(&query, &sources, &caller, query_fill::Ask::Known)
            .await;
        let mut merged = self
            .merge_find(&query, max_results, &sources, &caller)
            .await;
        if matches!(&merged, Ok((found, _)) if found.is_empty())
            && not_filled.is_none()
            && Self::may_fill(&query, &sources)
        {
            not_filled = self
                .fill_for_query(&query, &sources, &caller, query_fill::Ask::ByPatient)
                .await;
            merged = self
                .merge_find(&query, max_results, &sources, &caller)
                .await;
        }
        let answered = match merged {
            Ok((matches, mut unanswered)) => {
                unanswered.extend(not_filled);
                self.filter_matches(&mut ticket, &query, matches)
                    .await
                    .map(|matches| (matches, unanswered))
            }
            Err(e) => Err(e),
        };
        match answered {
            Ok((matches, unanswered)) => Ok(Found {
                matches,
                ticket,
                unanswered,
            }),
            Err(e) => Err(fail(ticket, e).await),
        }
    }

    /// Start a retrieve: the patients decided, then the cache or a fetch. On `Err` the
    /// ticket's record has been written (refused, not found, source failed).
    pub async fn retrieve(
        self: &Arc<Self>,
        mut ticket: Ticket,
        selection: Selection,
        delivery: Delivery,
    ) -> Result<Retrieval, CoreError> {
        let sources = self.sources_for(ticket.operation());
        match self.plan(&mut ticket, &selection, &sources, delivery).await {
            Ok(planned) => {
                let sending = self.track_sending(&ticket, &selection, &planned, delivery);
                let mut retrieval = planned.into_retrieval(ticket);
                retrieval.sending = sending;
                Ok(retrieval)
            }
            Err(e) => Err(fail(ticket, e).await),
        }
    }

    /// A retrieve whose instances go to a client one by one (C-MOVE, C-GET, a WADO-RS
    /// multipart retrieve, the imaging documents of RAD-69 and RAD-75) is an outgoing
    /// transfer on the console's board, from where its instances come (`cache`, a source) to
    /// the caller. One instance, metadata and frames are not listed.
    fn track_sending(
        &self,
        ticket: &Ticket,
        selection: &Selection,
        planned: &Planned,
        delivery: Delivery,
    ) -> Option<transfers::Running> {
        let operation = ticket.operation();
        let listed = matches!(
            operation,
            Operation::Move
                | Operation::Get
                | Operation::WadoRs
                | Operation::Rad69
                | Operation::Rad75
        );
        if delivery != Delivery::Streamed || !listed {
            return None;
        }
        let caller = ticket.caller();
        // Another gateway by its participant name; a user by the token's subject; a DIMSE
        // peer by its AE title.
        let who = caller
            .participant
            .as_ref()
            .map(|p| p.name.clone())
            .or_else(|| caller.claims.as_ref().map(|c| c.subject.clone()))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| caller.ae_title.clone());
        let source = match planned.from {
            "cache" => "cache".to_string(),
            source => format!("{source} (via the cache)"),
        };
        Some(self.transfers.start(transfers::Start {
            kind: transfers::SEND,
            source,
            destination: format!("{who} ({})", operation.name()),
            study_uids: selection.study_uids.clone(),
            expected: planned.expected,
            expected_bytes: 0,
        }))
    }

    async fn plan(
        self: &Arc<Self>,
        ticket: &mut Ticket,
        selection: &Selection,
        sources: &[Arc<dyn Source>],
        delivery: Delivery,
    ) -> Result<Planned, CoreError> {
        // Patients are decided on what the cache holds as well: a patient-level selection
        // names no study to look up.
        let located = match self.trust.patient_scoped(ticket.caller()) {
            true => self.index.locate(selection).await?,
            false => Vec::new(),
        };
        self.admit_patients(ticket, selection, sources, &located)
            .await?;
        // A patient named without studies (a PATIENT-level C-GET or C-MOVE): the patient's
        // studies the sources and the cache know, each in turn as a study is answered.
        if selection.level() == Level::Patient
            && !sources.is_empty()
            && delivery == Delivery::Streamed
        {
            let studies = self
                .patient_studies(selection, sources, ticket.caller())
                .await?;
            if !studies.is_empty() {
                let expected = studies.iter().map(|(_, n)| n).sum();
                let uids: Vec<String> = studies.into_iter().map(|(uid, _)| uid).collect();
                let source_syntaxes = sources
                    .iter()
                    .flat_map(|s| s.capabilities().transfer_syntaxes)
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect();
                // The classes to propose are known only when a source knows them for
                // every study (a remote study's manifest); otherwise every common class.
                let source_classes = uids
                    .iter()
                    .map(|uid| {
                        let study = Selection {
                            study_uids: vec![uid.clone()],
                            ..Default::default()
                        };
                        sources.iter().find_map(|s| s.classes_for(&study))
                    })
                    .collect::<Option<Vec<_>>>()
                    .map(|per_study| {
                        per_study
                            .into_iter()
                            .flatten()
                            .collect::<std::collections::BTreeSet<_>>()
                            .into_iter()
                            .collect()
                    });
                let caller = ticket.caller().clone();
                return Ok(Planned {
                    instances: Instances::studies(self.clone(), uids, sources.to_vec(), caller),
                    expected,
                    // Answered through the first source (each study from the cache where
                    // it holds it all).
                    from: sources[0].name(),
                    stored_syntaxes: None,
                    source_syntaxes: Some(source_syntaxes),
                    source_classes,
                });
            }
        }
        if let Answer::Fetch(follower) = self.resolve(selection, sources, ticket.caller()).await? {
            let (name, reported) = (follower.fetch().source_name, follower.fetch().reported);
            match delivery {
                Delivery::Streamed => {
                    crate::metrics::retrieval(name);
                    let source = sources.iter().find(|s| s.name() == name);
                    let source_syntaxes = source.map(|s| s.capabilities().transfer_syntaxes);
                    let source_classes = source.and_then(|s| s.classes_for(selection));
                    return Ok(Planned {
                        instances: Instances::fetch(follower, selection.clone(), name),
                        expected: reported,
                        from: name,
                        stored_syntaxes: None,
                        source_syntaxes,
                        source_classes,
                    });
                }
                Delivery::Cached => {
                    follower
                        .wait_complete()
                        .await
                        .map_err(|why| SourceError::new(name, SourceErrorKind::Failed, why))?;
                }
            }
        }
        let stored = self.index.transfer_syntaxes(selection).await?;
        if stored.is_empty() {
            return Err(CoreError::NotFound(format!(
                "no instances for study {:?} series {:?} instance {:?}",
                selection.study_uids, selection.series_uids, selection.sop_instance_uids
            )));
        }
        let expected = self.index.count_instances(selection).await?;
        crate::metrics::retrieval("cache");
        let pin = selection
            .study_uids
            .first()
            .map(|study| self.fetches.pin(study));
        Ok(Planned {
            instances: Instances::cache(self.index.clone(), selection.clone(), pin),
            expected,
            from: "cache",
            stored_syntaxes: Some(stored),
            source_syntaxes: None,
            source_classes: None,
        })
    }

    /// Delete a selection from the cache (our own organisation only: the trust decision
    /// for [`Operation::Delete`] said so): rows and files in the one delete path
    /// (`store::delete`). Writes the ticket's record; `Ok` with how many instances went.
    pub async fn delete(
        &self,
        mut ticket: Ticket,
        selection: Selection,
    ) -> Result<usize, CoreError> {
        let deleted =
            crate::store::delete::delete(self.index.as_ref(), &self.blobs, &selection).await;
        match deleted {
            Ok(d) if d.is_empty() => {
                ticket.touch_ids(&[], &selection.study_uids);
                ticket.finish("failure", "nothing matched").await;
                Err(CoreError::NotFound(
                    "no such study, series or instance".into(),
                ))
            }
            Ok(d) => {
                ticket.touch_ids(&d.patient_ids, &d.study_uids);
                ticket.set_grounds(format!(
                    "operator delete ({})",
                    Front::of(ticket.operation()).name()
                ));
                ticket.finish("success", d.describe()).await;
                Ok(d.instances)
            }
            Err(crate::store::delete::DeleteError::Index(e)) => {
                ticket.touch_ids(&[], &selection.study_uids);
                ticket.finish("failure", e.to_string()).await;
                Err(CoreError::Index(e))
            }
        }
    }

    /// Instances stored with us by STOW-RS (`(study, SOP instance)` pairs, indexed already):
    /// the sources the web front reaches may take them on (the PACS forwards them), and the
    /// studies' retention (`storage.keep_received_days`) counts from now.
    pub async fn received(&self, sender: &str, items: &[(String, String)]) {
        if items.is_empty() {
            return;
        }
        for source in self.sources_for(Operation::StowRs) {
            source.received(sender, items).await;
        }
        let studies: Vec<String> = items
            .iter()
            .map(|(study, _)| study.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if let Err(e) = self
            .index
            .note_received(&studies, sender, cache::now())
            .await
        {
            tracing::warn!(error = %e, "cannot note the receipt of STOW-RS studies for retention");
        }
    }

    /// The Study and Series Instance UIDs of the instances with these SOP Instance UIDs the
    /// cache holds, as `(study, series, sop)`: for a front whose request names a document by
    /// its uniqueId alone (ITI-43 / ITI-39: the KOS manifest and reports are instances of
    /// their study), to select it by its three UIDs. Nothing leaves here: the query or
    /// retrieve that follows decides who may see it.
    pub async fn series_of_instances(
        &self,
        sop_instance_uids: &[String],
    ) -> Result<Vec<(String, String, String)>, CoreError> {
        if sop_instance_uids.is_empty() {
            return Ok(Vec::new());
        }
        let selection = Selection {
            sop_instance_uids: sop_instance_uids.to_vec(),
            ..Default::default()
        };
        Ok(self
            .index
            .locate(&selection)
            .await?
            .into_iter()
            .map(|l| {
                (
                    l.study_instance_uid,
                    l.series_instance_uid,
                    l.sop_instance_uid,
                )
            })
            .collect())
    }

    /// Every instance of a selection once the cache holds them all (frames, bulk data,
    /// rendered: one instance, or a few). On `Err` the ticket's record has been written.
    pub async fn locate(
        self: &Arc<Self>,
        ticket: Ticket,
        selection: Selection,
    ) -> Result<(Vec<InstanceLocation>, Ticket), CoreError> {
        let mut retrieval = self.retrieve(ticket, selection, Delivery::Cached).await?;
        match retrieval.instances.rest().await {
            Ok(all) => Ok((all, retrieval.ticket)),
            Err(e) => Err(fail(retrieval.ticket, e).await),
        }
    }
}

/// A retrieve planned, before it has its ticket back.
struct Planned {
    instances: Instances,
    expected: u64,
    from: &'static str,
    stored_syntaxes: Option<Vec<String>>,
    source_syntaxes: Option<Vec<String>>,
    source_classes: Option<Vec<String>>,
}

impl Planned {
    fn into_retrieval(self, ticket: Ticket) -> Retrieval {
        Retrieval {
            instances: self.instances,
            expected: self.expected,
            from: self.from,
            stored_syntaxes: self.stored_syntaxes,
            source_syntaxes: self.source_syntaxes,
            source_classes: self.source_classes,
            ticket,
            sending: None,
        }
    }
}

/// Write the record of an operation that ends with `error`, and hand the error on.
async fn fail(ticket: Ticket, error: CoreError) -> CoreError {
    let result = match &error {
        CoreError::Refused(_) => "refused",
        _ => "failure",
    };
    ticket.finish(result, error.to_string()).await;
    error
}
