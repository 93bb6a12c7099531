//! The one contract every source behind the cache keeps (DESIGN "sources"): the local PACS
//! today, other hospitals' gateways (`remote`) next. The core asks a source to find, to
//! count and to fetch; it never looks inside how (C-FIND, C-GET, C-MOVE, an XCA query).
//!
//! A fetch stores each instance through the [`Sink`] as it arrives and hands its location
//! on before it asks for the next one: the sink's `out` holds one instance, so a consumer
//! that falls behind holds the source back (pynetdicom's "one narrow streaming contract").

use crate::model::query::{Level, Match, Query};
use crate::model::retrieve::{InstanceLocation, Selection};
use crate::store::ingest::{index_batch, Filled};
use crate::store::{BlobStore, Index, InstanceRecord};
use crate::trust::Caller;
use bytes::Bytes;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Why a source could not answer.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{source_name}: {message}")]
pub struct SourceError {
    /// The source's [`Source::name`].
    pub source_name: &'static str,
    pub kind: SourceErrorKind,
    pub message: String,
}

/// What kind of failure: the fronts answer each differently (502, C000, A702...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceErrorKind {
    /// No connection, refused, timed out.
    Unreachable,
    /// The source does not offer what was asked (no C-GET, no such query level).
    NotSupported,
    /// It answered, with a failure.
    Failed,
    /// The consumer went away and the fetch was cancelled.
    Cancelled,
}

impl SourceError {
    pub fn new(
        source_name: &'static str,
        kind: SourceErrorKind,
        message: impl Into<String>,
    ) -> Self {
        SourceError {
            source_name,
            kind,
            message: message.into(),
        }
    }
}

/// What a source can do, for the core to plan with.
#[derive(Debug, Clone, Default)]
pub struct Capabilities {
    /// Query levels it answers (a PACS without PATIENT level, a remote gateway with STUDY only).
    pub query_levels: Vec<Level>,
    /// Whether it can fetch at all.
    pub retrieve: bool,
    /// Whether it matches person names fuzzily itself; when not, the core matches them.
    pub fuzzy_names: bool,
    /// The transfer syntaxes its instances may arrive in (what a PACS is asked for): a
    /// front that forwards a fetch before it has seen every instance prepares for these.
    pub transfer_syntaxes: Vec<String>,
}

/// The final counts of a fetch, and how many instances reached the store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchReport {
    /// The source's final status (a DIMSE status for a PACS).
    pub status: u16,
    /// The source ended with success or a warning (its own status table decides).
    pub ok: bool,
    pub completed: u16,
    pub failed: u16,
    pub warning: u16,
    /// Instances stored and handed on.
    pub received: usize,
    /// Every storage context proposed compressed was accepted, and the PACS failed all.
    pub compressed_failed: bool,
    /// C-MOVE: sub-operations that came without Move Originator fields.
    pub without_originator: usize,
    /// C-MOVE: the final response came before every sub-operation had arrived.
    pub final_before_subops: bool,
    /// Acknowledged to the source but not stored or not indexed: not in the cache.
    pub not_cached: usize,
}

impl FetchReport {
    /// Did the fetch deliver all of the `reported` instances, durable and indexed?
    pub fn delivered(&self, received: usize, reported: u64) -> bool {
        self.ok && self.failed == 0 && self.not_cached == 0 && received as u64 >= reported
    }
}

/// A data set as received, in the pieces it came in: exactly the stored file's bytes after
/// its meta group (it derefs to those pieces); with `file_start`, the file's bytes before
/// them (preamble and meta group, PS3.10 7.1), so a front can send the whole Part 10 file
/// from memory too.
#[derive(Debug, Clone)]
pub struct DataSet {
    pub pieces: Arc<[Bytes]>,
    pub file_start: Option<Bytes>,
}

impl DataSet {
    /// The stored file's length, when `file_start` is known.
    pub fn file_len(&self) -> Option<u64> {
        let start = self.file_start.as_ref()?.len();
        Some((start + self.pieces.iter().map(Bytes::len).sum::<usize>()) as u64)
    }
}

impl std::ops::Deref for DataSet {
    type Target = [Bytes];
    fn deref(&self) -> &[Bytes] {
        &self.pieces
    }
}

impl From<Vec<Bytes>> for DataSet {
    fn from(pieces: Vec<Bytes>) -> Self {
        DataSet {
            pieces: pieces.into(),
            file_start: None,
        }
    }
}

/// One fetched instance, handed on: where it is stored and, when the source still holds it
/// in memory, its data set, so that a front can pass it on without reading the file back.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub loc: InstanceLocation,
    pub data_set: Option<DataSet>,
}

impl From<InstanceLocation> for Arrival {
    fn from(loc: InstanceLocation) -> Self {
        Arrival {
            loc,
            data_set: None,
        }
    }
}

/// Where fetched instances go: stored in `blobs`, indexed in `index`, then handed to `out`
/// (one slot: back-pressure). `cancel` is set when every consumer left.
pub struct Sink<'a> {
    pub blobs: &'a BlobStore,
    pub index: &'a dyn Index,
    pub out: &'a mpsc::Sender<Arrival>,
    pub cancel: &'a CancellationToken,
}

/// Stored instances indexed together by [`index_behind`]: one transaction per this many,
/// instead of one commit per instance.
pub const INDEX_BATCH: usize = 64;

/// Hand on what a cache fill (`store::ingest::cache_fill`) stored, in order, until it
/// ends: (handed on, not stored). Each goes to the consumer and then to `to_index`.
pub async fn take_filled(
    mut filled: mpsc::Receiver<Filled>,
    sink: &Sink<'_>,
    to_index: mpsc::UnboundedSender<InstanceRecord>,
) -> (usize, usize) {
    let (mut received, mut not_stored) = (0, 0);
    while let Some(one) = filled.recv().await {
        if hand_on(one, sink, &to_index).await {
            received += 1;
        } else {
            not_stored += 1;
        }
    }
    (received, not_stored)
}

/// A stored instance goes to the consumer (waiting for it: back-pressure) and to the
/// indexer (true). One that failed to store leaves the fetch incomplete (false).
pub async fn hand_on(
    filled: Filled,
    sink: &Sink<'_>,
    to_index: &mpsc::UnboundedSender<InstanceRecord>,
) -> bool {
    match filled.stored {
        Ok(ingested) => {
            // The consumer went away: the instance is cached anyway; cancel follows.
            let arrival = Arrival {
                loc: ingested.record.location(),
                data_set: filled.data_set.map(|pieces| DataSet {
                    pieces,
                    file_start: filled.file_start,
                }),
            };
            let _ = sink.out.send(arrival).await;
            let _ = to_index.send(ingested.record);
            true
        }
        Err(f) => {
            let sop = filled.sop_instance;
            tracing::warn!(?sop, status = f.status, reason = %f.reason, "fetched instance not stored");
            false
        }
    }
}

/// Index the records sent to it, [`INDEX_BATCH`] per transaction and the rest when the
/// senders are gone; returns how many could not be indexed (their blobs are removed, so
/// the fetch is not counted complete).
pub async fn index_behind(
    sink: &Sink<'_>,
    mut records: mpsc::UnboundedReceiver<InstanceRecord>,
) -> usize {
    let mut batch = Vec::with_capacity(INDEX_BATCH);
    let mut failed = 0;
    loop {
        let room = INDEX_BATCH - batch.len();
        let n = records.recv_many(&mut batch, room).await;
        if n == 0 || batch.len() >= INDEX_BATCH {
            if let Err(e) = index_batch(sink.blobs, sink.index, &batch).await {
                tracing::error!(reason = %e.reason, n = batch.len(), "cannot index fetched instances");
                failed += batch.len();
            }
            batch.clear();
        }
        if n == 0 {
            return failed;
        }
    }
}

/// A source behind the cache.
#[async_trait::async_trait]
pub trait Source: Send + Sync + std::fmt::Debug {
    /// A short name for logs and audit details ("local PACS").
    fn name(&self) -> &'static str;

    /// What it can do.
    fn capabilities(&self) -> Capabilities;

    /// The SOP classes a fetch of `selection` will deliver, when the source knows them before
    /// the first instance arrives (a remote study's manifest): a front that forwards as the
    /// instances arrive (C-MOVE) proposes its contexts for these rather than for every
    /// common class (PS3.8 9.3.2.2: at most 128 presentation contexts).
    fn classes_for(&self, _selection: &Selection) -> Option<Vec<String>> {
        None
    }

    /// Matches for `query`, at most `window` of them (the query's limit and offset are the
    /// core's business: it pages after merging).
    async fn find(&self, query: &Query, window: usize) -> Result<Vec<Match>, SourceError>;

    /// How many instances the source holds for a selection (0: none).
    async fn count(&self, selection: &Selection) -> Result<u64, SourceError>;

    /// Fetch the selection into the sink, instance by instance.
    async fn fetch(
        &self,
        selection: &Selection,
        sink: &Sink<'_>,
    ) -> Result<FetchReport, SourceError>;

    /// [`Self::find`] on behalf of `caller`: a source that calls out (another hospital's
    /// gateway) carries the caller's identity and asks nothing without one. The others
    /// ignore who asks (the core has decided that).
    async fn find_for(
        &self,
        _caller: &Caller,
        query: &Query,
        window: usize,
    ) -> Result<Vec<Match>, SourceError> {
        self.find(query, window).await
    }

    /// [`Self::find_for`] for a source made of several peers (other hospitals' gateways):
    /// the matches of those that answered, and an error for each that did not, so that the
    /// core answers with what there is and marks the answer partial. By default the one
    /// answer of [`Self::find_for`].
    async fn find_each(
        &self,
        caller: &Caller,
        query: &Query,
        window: usize,
    ) -> (Vec<Match>, Vec<SourceError>) {
        match self.find_for(caller, query, window).await {
            Ok(found) => (found, Vec::new()),
            Err(e) => (Vec::new(), vec![e]),
        }
    }

    /// [`Self::count`] on behalf of `caller`.
    async fn count_for(&self, _caller: &Caller, selection: &Selection) -> Result<u64, SourceError> {
        self.count(selection).await
    }

    /// [`Self::fetch`] on behalf of `caller` (the request that started the shared fetch).
    async fn fetch_for(
        &self,
        _caller: &Caller,
        selection: &Selection,
        sink: &Sink<'_>,
    ) -> Result<FetchReport, SourceError> {
        self.fetch(selection, sink).await
    }

    /// Instances another party stored with us (STOW-RS), indexed already, as
    /// `(study, SOP instance)` pairs: a source that keeps the hospital's archive (the PACS)
    /// may take them on. Nothing by default.
    async fn received(&self, _sender: &str, _items: &[(String, String)]) {}

    /// A harmless exchange that shows the source is reachable (the PACS: C-ECHO), for the
    /// console's peers: what it answered. `None`: nothing to probe.
    async fn probe(&self) -> Option<Result<String, SourceError>> {
        None
    }

    /// An operator put jobs of the source's queues back (the console's re-queue of failed
    /// forward jobs): a source that works a queue looks now. Nothing by default.
    fn queue_changed(&self) {}
}
