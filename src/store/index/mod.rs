//! The index: patients, studies, series and instances with the attributes C-FIND and QIDO
//! match on. Two backends share one trait and one test suite: SQLite (embedded default) and
//! PostgreSQL (for several gateway processes sharing one database).
//!
//! This file holds the trait and the types it speaks in (with `audit.rs`, `cache_state.rs`,
//! `forward_queue.rs` and `registry.rs`); `sql/` implements it once for both backends, one file per
//! concern; `sqlite.rs` and `postgres.rs` add their connections and migrations.

use crate::model::{InstanceLocation, Match, Query, Selection};
use crate::store::InstanceRecord;
use async_trait::async_trait;

pub mod audit;
mod cache_state;
mod forward_queue;
mod postgres;
pub mod registry;
mod sql;
mod sqlite;

pub use crate::model::query::normalize_name;
pub use audit::{AuditRecord, OutboxMessage, GENESIS_HASH};
pub use cache_state::CachedStudy;
pub use forward_queue::ForwardJob;
pub use postgres::PostgresIndex;
pub use registry::{
    AssociationRow, Publication, RegistryLookup, RegistryRow, StudyArrival, Submission,
};
pub use sqlite::SqliteIndex;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("index database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("index migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported index URL {0:?}: expected sqlite://... or postgres://...")]
    UnsupportedUrl(String),
    #[error("instance record is missing {0}")]
    MissingKey(&'static str),
}

impl IndexError {
    /// The database cannot be reached now (no connection within the pool's wait, the server
    /// gone or shutting down, SQLSTATE class 08 or 57P0x): a 503 to try again later, not a
    /// fault of the request or of the gateway (issue 16, item 4: a PostgreSQL restart).
    pub fn is_unavailable(&self) -> bool {
        match self {
            IndexError::Database(e) => match e {
                sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
                sqlx::Error::Database(db) => db
                    .code()
                    .is_some_and(|c| c.starts_with("08") || c.starts_with("57P0")),
                _ => false,
            },
            _ => false,
        }
    }
}

/// Whether an upsert added a new instance or replaced one with the same SOP Instance UID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpsertOutcome {
    Inserted,
    Replaced,
}

/// One audit event (the trust seam writes exactly one per operation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// UTC, RFC 3339.
    pub time: String,
    /// e.g. "C-FIND", "C-STORE", "C-MOVE", "C-GET", "C-ECHO".
    pub operation: String,
    /// Who asked: the calling AE title (later: organisation / professional).
    pub actor: String,
    /// From where: peer socket address.
    pub source: String,
    /// Patient IDs concerned, joined with `\` (may be empty).
    pub patient_ids: String,
    /// Study Instance UIDs concerned, joined with `\` (may be empty).
    pub study_uids: String,
    /// "success", "refused", "failure" ...
    pub outcome: String,
    /// Free text: the grounds for the decision, counts, error.
    pub detail: String,
}

/// What the ingest's file commit tells a gated index transaction
/// ([`Index::upsert_instances_gated`]): the files are durable, with journal records up to
/// `seq`; `durable`: the commit must wait for its flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gate {
    pub seq: u64,
    pub durable: bool,
}

/// A gated index transaction that committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatedCommit {
    pub seq: u64,
    pub durable: bool,
    /// The blob keys the rows no longer name.
    pub superseded: Vec<String>,
}

#[async_trait]
pub trait Index: Send + Sync + std::fmt::Debug {
    /// Insert or replace one instance (and create/update its patient, study and series rows).
    /// Re-sending an instance replaces the old row: no duplicates.
    async fn upsert_instance(&self, record: &InstanceRecord) -> Result<UpsertOutcome, IndexError>;

    /// [`upsert_instance`](Self::upsert_instance) for several instances in one transaction:
    /// all are indexed or none (a request's worth of STOW-RS parts, one commit).
    async fn upsert_instances(
        &self,
        records: &[InstanceRecord],
    ) -> Result<Vec<UpsertOutcome>, IndexError>;

    /// [`upsert_instances`](Self::upsert_instances) for the ingest path: also queues, in
    /// the same transaction, the blob keys that re-sent instances' old rows named, and
    /// returns them (their files are removed once this commits; a crash before that leaves
    /// them to `store::delete::sweep`). A key an instance row names is never among them.
    async fn upsert_instances_superseding(
        &self,
        records: &[InstanceRecord],
    ) -> Result<Vec<String>, IndexError>;

    /// Matches at `query.level`, in a stable order (by the level's unique key), honouring
    /// limit and offset.
    /// The ingest journal's group commit (`store::journal`, migration 0012):
    /// [`upsert_instances_superseding`](Index::upsert_instances_superseding) and, in the same
    /// transaction, journal `journal`'s records up to `seq` marked as indexed. With
    /// `durable == false` the commit does not wait for the database's flush (the journal
    /// holds the records; a power loss may take this transaction and later ones, never an
    /// earlier one without them).
    async fn upsert_instances_journaled(
        &self,
        records: &[InstanceRecord],
        journal: &str,
        seq: u64,
        durable: bool,
    ) -> Result<Vec<String>, IndexError>;

    /// [`upsert_instances_journaled`](Index::upsert_instances_journaled) with the rows written
    /// before the journal records are durable: the transaction writes them, then waits for
    /// `gate` (sent once the group's files are durable) and only then marks and commits,
    /// waiting for its flush when the gate says `durable`. A dropped gate rolls it back:
    /// `Ok(None)`.
    async fn upsert_instances_gated(
        &self,
        records: &[InstanceRecord],
        journal: &str,
        gate: tokio::sync::oneshot::Receiver<Gate>,
    ) -> Result<Option<GatedCommit>, IndexError>;

    /// The number of journal `journal`'s last record whose index rows are committed (0: none).
    async fn ingest_journal_seq(&self, journal: &str) -> Result<u64, IndexError>;

    /// Raise journal `journal`'s mark to `seq` in a transaction that waits for its flush:
    /// every transaction committed before is durable once this returns.
    async fn sync_ingest_journal(&self, journal: &str, seq: u64) -> Result<(), IndexError>;

    async fn find(&self, query: &Query) -> Result<Vec<Match>, IndexError>;

    /// Every instance the selection names, ordered by study, series, instance number.
    async fn locate(&self, selection: &Selection) -> Result<Vec<InstanceLocation>, IndexError>;

    /// One page (`limit` from `offset`) of [`locate`](Self::locate)'s answer, so that a large
    /// study streams with a bounded instance list in memory.
    async fn locate_page(
        &self,
        selection: &Selection,
        offset: u32,
        limit: u32,
    ) -> Result<Vec<InstanceLocation>, IndexError>;

    /// The distinct transfer syntaxes of the instances a selection names (empty: none).
    async fn transfer_syntaxes(&self, selection: &Selection) -> Result<Vec<String>, IndexError>;

    /// Remove one instance; empty series/studies/patients are removed too.
    /// Returns the removed instance's blob key, if it existed.
    async fn remove_instance(&self, sop_instance_uid: &str) -> Result<Option<String>, IndexError>;

    /// How many instances a selection names.
    async fn count_instances(&self, selection: &Selection) -> Result<u64, IndexError>;

    /// The cache state of a study fetched from the local PACS.
    async fn cached_study(&self, study_uid: &str) -> Result<Option<CachedStudy>, IndexError>;

    /// Insert or replace a study's cache state.
    async fn put_cached_study(&self, study: &CachedStudy) -> Result<(), IndexError>;

    /// Cached studies, least recently used first, with the bytes each holds.
    async fn cache_lru(&self) -> Result<Vec<(String, u64)>, IndexError>;

    /// Remove a whole study and its cache state; returns its blob keys.
    async fn remove_study(&self, study_uid: &str) -> Result<Vec<String>, IndexError>;

    /// Queue `(study, sop instance)` pairs for forwarding to the PACS, due at `now`.
    async fn enqueue_forward(
        &self,
        items: &[(String, String)],
        sender: &str,
        now: i64,
    ) -> Result<(), IndexError>;

    /// Forward jobs: with `due_at`, the queued ones due by then (oldest first); else the
    /// newest `limit` of every state.
    async fn forward_jobs(
        &self,
        due_at: Option<i64>,
        limit: u32,
    ) -> Result<Vec<ForwardJob>, IndexError>;

    /// Put failed forward jobs (`ids`; empty: all) back in the queue, due at `now`, their
    /// attempts counted afresh; returns how many.
    async fn requeue_forward(&self, ids: &[i64], now: i64) -> Result<u64, IndexError>;

    /// Lease the queued forward jobs due by `now` (oldest first, at most `limit`) to the
    /// caller until `lease_until`: they are not due for anyone else (another node on the same
    /// database) until the attempt is recorded or the lease runs out (PostgreSQL: `FOR UPDATE
    /// SKIP LOCKED`, so concurrent claims take disjoint jobs).
    async fn claim_forward_jobs(
        &self,
        now: i64,
        lease_until: i64,
        limit: u32,
    ) -> Result<Vec<ForwardJob>, IndexError>;

    /// Give back the jobs of a [`claim_forward_jobs`](Self::claim_forward_jobs) still under
    /// its lease (`lease_until`): due again at `now` (a pass dropped at shutdown).
    async fn release_forward_jobs(
        &self,
        ids: &[i64],
        lease_until: i64,
        now: i64,
    ) -> Result<(), IndexError>;

    /// Take or renew the lease `name` for `owner` until `until`: true when it was free
    /// (never taken, released, or past its end at `now`) or already `owner`'s.
    async fn try_lease(
        &self,
        name: &str,
        owner: &str,
        now: i64,
        until: i64,
    ) -> Result<bool, IndexError>;

    /// Give up `owner`'s lease `name` (nothing when another holds it).
    async fn release_lease(&self, name: &str, owner: &str) -> Result<(), IndexError>;

    /// Record a token identity (`jti`, SAML assertion ID) of `issuer`, kept until
    /// `forget_after`; false when any node recorded it before and it has not expired (a
    /// replay).
    async fn claim_token_id(
        &self,
        issuer: &str,
        token_id: &str,
        forget_after: i64,
        now: i64,
    ) -> Result<bool, IndexError>;

    /// Record an attempt of a forward job.
    async fn update_forward(
        &self,
        id: i64,
        state: &str,
        next_attempt_at: i64,
        error: &str,
    ) -> Result<(), IndexError>;

    /// Append one audit event to the chain (the fields it lacks stay empty).
    async fn record_audit(&self, event: &AuditEvent) -> Result<(), IndexError>;

    /// The newest `limit` audit records as events, newest last (for tests and the admin CLI).
    async fn audit_events(&self, limit: u32) -> Result<Vec<AuditEvent>, IndexError>;

    /// Append a record to the audit hash chain, serialised against every other writer of the
    /// database, and queue its syslog message (if any) in the same transaction. Returns the
    /// record with its `seq`, `prev_hash` and `hash`.
    async fn append_audit(
        &self,
        record: &AuditRecord,
        syslog: Option<&str>,
    ) -> Result<AuditRecord, IndexError>;

    /// [`append_audit`](Self::append_audit) for several records in one transaction, chained
    /// in the given order: all or none.
    async fn append_audit_batch(
        &self,
        records: &[(&AuditRecord, Option<&str>)],
    ) -> Result<Vec<AuditRecord>, IndexError>;

    /// Up to `limit` chain records after `after_seq`, in chain order.
    async fn audit_records(
        &self,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, IndexError>;

    /// The newest `limit` records naming one patient (BSN, bare or in XDS form), oldest first.
    async fn audit_records_for_patient(
        &self,
        patient_id: &str,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, IndexError>;

    /// The chain head: last `seq` and `hash` (0 and [`GENESIS_HASH`] while empty).
    async fn audit_head(&self) -> Result<(i64, String), IndexError>;

    /// Rows of the per-patient lookup (checked by the chain walk).
    async fn audit_patient_rows(&self) -> Result<i64, IndexError>;

    /// Claim due syslog messages for `owner` until `until` (Unix seconds), oldest first.
    async fn claim_audit_outbox(
        &self,
        owner: &str,
        now: i64,
        until: i64,
        limit: u32,
    ) -> Result<Vec<OutboxMessage>, IndexError>;

    /// Remove syslog messages the receiver took.
    async fn delete_audit_outbox(&self, ids: &[i64]) -> Result<(), IndexError>;

    /// Syslog messages whose write failed: due again at `retry_at`.
    async fn retry_audit_outbox(
        &self,
        ids: &[i64],
        retry_at: i64,
        error: &str,
    ) -> Result<(), IndexError>;

    /// Syslog messages waiting.
    async fn audit_outbox_len(&self) -> Result<u64, IndexError>;

    /// Remove every instance the selection names, with the series, studies and patients
    /// left empty, and queue their blob keys for deletion, in one transaction: once this
    /// returns nothing of it is found or served. Returns the removed instances.
    async fn delete_instances(
        &self,
        selection: &Selection,
        now: i64,
    ) -> Result<Vec<InstanceLocation>, IndexError>;

    /// Up to `limit` blob keys queued for deletion, oldest first.
    async fn queued_blob_deletions(&self, limit: u32) -> Result<Vec<String>, IndexError>;

    /// Up to `limit` blob keys queued before `before` (Unix seconds), oldest first: the
    /// superseded versions of re-sent instances wait out a grace period there
    /// (`store::delete::SUPERSEDED_GRACE`).
    async fn queued_blob_deletions_before(
        &self,
        before: i64,
        limit: u32,
    ) -> Result<Vec<String>, IndexError>;

    /// Which of `keys` an instance row references (stored again since it was queued).
    async fn blob_keys_in_use(&self, keys: &[String]) -> Result<Vec<String>, IndexError>;

    /// Take keys off the deletion queue.
    async fn clear_blob_deletions(&self, keys: &[String]) -> Result<(), IndexError>;

    /// Note that studies were received by STOW-RS from `sender` at `now` (Unix seconds).
    async fn note_received(
        &self,
        study_uids: &[String],
        sender: &str,
        now: i64,
    ) -> Result<(), IndexError>;

    /// Received studies last received before `cutoff`, oldest first, without instances
    /// still queued for the PACS.
    async fn received_before(&self, cutoff: i64, limit: u32) -> Result<Vec<String>, IndexError>;

    /// Forget the receipt of a study that is no longer in the index.
    async fn forget_received(&self, study_uid: &str) -> Result<(), IndexError>;

    /// Registry objects (the XDS-I registry, `crate::registry`), ordered by when they were
    /// registered.
    async fn registry_objects(
        &self,
        lookup: &RegistryLookup,
    ) -> Result<Vec<RegistryRow>, IndexError>;

    /// Associations whose source or target is one of `uuids`.
    async fn registry_associations(
        &self,
        uuids: &[String],
    ) -> Result<Vec<AssociationRow>, IndexError>;

    /// Register objects and associations, deprecate replaced entries and record the study's
    /// publication, in one transaction.
    async fn registry_submit(&self, submission: &Submission) -> Result<(), IndexError>;

    /// Studies whose last instance arrived at or before `quiet_before` (Unix seconds) and
    /// that were never published or got instances since, oldest first.
    async fn studies_to_publish(
        &self,
        quiet_before: i64,
        limit: u32,
    ) -> Result<Vec<StudyArrival>, IndexError>;

    /// When a study's instances last arrived and how many arrived (`None`: not in the index).
    async fn study_arrival(&self, study_uid: &str) -> Result<Option<StudyArrival>, IndexError>;

    /// The last publication of a study.
    async fn publication(&self, study_uid: &str) -> Result<Option<Publication>, IndexError>;

    /// Claim a study for publication by `owner` until `until` (Unix seconds): `false` when
    /// another owner holds an unexpired claim (gateways sharing one index publish a study
    /// once). [`registry_submit`](Self::registry_submit) of its publication ends the claim.
    async fn claim_publication(
        &self,
        study_uid: &str,
        owner: &str,
        now: i64,
        until: i64,
    ) -> Result<bool, IndexError>;

    /// Prove the index takes writes: rewrite one row and commit (a full disk, a read-only
    /// file or a lost database connection fail it). For `/ready` and the audit trail.
    async fn probe_write(&self) -> Result<(), IndexError>;
}

/// Open (and migrate) the index named by a `sqlite://...` or `postgres://...` URL.
pub async fn open_index(url: &str) -> Result<std::sync::Arc<dyn Index>, IndexError> {
    if url.starts_with("sqlite:") {
        Ok(std::sync::Arc::new(SqliteIndex::open(url).await?))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(std::sync::Arc::new(PostgresIndex::open(url).await?))
    } else {
        Err(IndexError::UnsupportedUrl(url.to_string()))
    }
}
