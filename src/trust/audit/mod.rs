//! The audit trail: exactly one record per query, retrieval, store and refusal.
//!
//! Every record goes to the local NEN 7513 store (who, patient, what, when in UTC, from
//! where, on what grounds, outcome), a hash chain in the index ([`chain`]), and as a DICOM
//! PS3.15 A.5 audit message ([`dicom`]) to a syslog receiver over TLS ([`syslog`]), through
//! a durable outbox in the index. docs/audit.md has the mapping and the configuration.
//!
//! - [`chain`]: verifying the hash chain.
//! - [`dicom`]: the PS3.15 audit message of a record.
//! - [`syslog`]: RFC 5424 messages, RFC 5425 framing over TLS, the background sender.
//! - [`redact`]: one patient's view of a record that names other patients too.
//! - [`cli`]: `beeldbrug audit`.

pub mod chain;
pub mod cli;
pub mod dicom;
mod group;
pub mod redact;
pub mod syslog;

pub use chain::{Broken, Verification};

use crate::store::delete::Deleted;
use crate::store::index::AuditRecord;
use crate::store::retention::RetentionAudit;
use crate::store::{Index, IndexError};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// How often a failing audit trail is tried again (a write in the index).
const RECOVERY_PROBE: Duration = Duration::from_secs(1);

// The settings' types live in `config/trust.rs` (config imports no module it configures).
pub use crate::config::trust::AuditConfig;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit trail: {0}")]
    Index(#[from] IndexError),
}

/// One audit record, as the fronts and the decision point describe it.
#[derive(Debug, Clone, Default)]
pub struct AuditEntry {
    /// RFC 3339, UTC.
    pub time: String,
    /// "C-FIND", "WADO-RS", ... (`Operation::name`).
    pub operation: String,
    /// "success", "refused", "failure", "cancelled", "partial" ("unauthenticated": refused
    /// for missing or bad credentials).
    pub outcome: String,
    /// Free text without patient data.
    pub detail: String,
    /// The calling gateway or AE: participant name, or the calling AE title.
    pub gateway: String,
    /// Verified client certificate, if any.
    pub certificate_sha256: String,
    pub organisation_ura: String,
    pub professional_uzi: String,
    pub role: String,
    pub purpose_of_use: String,
    /// Token (`jti`) or assertion ID the claims came from.
    pub token_id: String,
    /// Peer address.
    pub source_address: String,
    /// On what grounds: the decision and its reasons (consent outcome, ...). A refusal for
    /// credentials starts with "unauthenticated".
    pub grounds: String,
    /// Patients (BSN) and studies concerned.
    pub patient_ids: Vec<String>,
    pub study_uids: Vec<String>,
    /// The exchange's correlation id across gateways, if any (issue 17 item 2).
    pub correlation_id: String,
    /// The W3C trace id of the operation's trace, if it is traced (`telemetry`).
    pub trace_id: String,
}

impl From<AuditEntry> for AuditRecord {
    fn from(e: AuditEntry) -> Self {
        AuditRecord {
            seq: 0,
            time: e.time,
            operation: e.operation,
            outcome: e.outcome,
            detail: e.detail,
            gateway: e.gateway,
            certificate_sha256: e.certificate_sha256,
            organisation_ura: e.organisation_ura,
            professional_uzi: e.professional_uzi,
            role: e.role,
            purpose_of_use: e.purpose_of_use,
            token_id: e.token_id,
            source_address: e.source_address,
            grounds: e.grounds,
            patient_ids: e.patient_ids,
            study_uids: e.study_uids,
            correlation_id: e.correlation_id,
            trace_id: e.trace_id,
            prev_hash: String::new(),
            hash: String::new(),
        }
    }
}

/// One patient's records (other patients removed, [`redact`]) and the state of the whole
/// chain (walked over the stored records).
#[derive(Debug, Clone, Serialize)]
pub struct PatientTrail {
    pub patient_id: String,
    pub records: Vec<redact::RecordView>,
    pub verification: Verification,
}

/// Whether the audit trail can be written. NEN 7513 wants every access recorded, so the
/// gateway fails closed: after a write failed, the decision point refuses every operation
/// (DIMSE: association refused, transient; HTTP: 503) and `/ready` fails, until a write in
/// the index succeeds again (tried every second).
#[derive(Debug, Default)]
pub struct AuditHealth {
    failing: AtomicBool,
    failures: AtomicU64,
    recovering: AtomicBool,
}

impl AuditHealth {
    /// The last audit write failed and no write has succeeded since.
    pub fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Acquire)
    }

    /// Audit writes that failed since start.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }
}

/// Writes audit records.
pub struct Audit {
    index: Arc<dyn Index>,
    health: Arc<AuditHealth>,
    source: dicom::Source,
    header: syslog::Header,
    /// Syslog configured: queue a message with each record.
    queue: bool,
    wake: Arc<Notify>,
    /// Records written together (`group`).
    group: group::GroupCommit,
    /// When a write in the index last committed (a record or a probe), for [`Audit::probe`].
    last_write: std::sync::Mutex<Option<std::time::Instant>>,
    /// Held while a probe writes, so that a burst of retrievals waits for one probe.
    probing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit")
            .field("source", &self.source)
            .field("queue", &self.queue)
            .finish()
    }
}

impl Audit {
    /// The audit trail over `index`; with `syslog_host` set, also the background sender
    /// (spawned here on the current tokio runtime).
    pub fn new(config: &AuditConfig, index: Arc<dyn Index>) -> Audit {
        let audit = Self::queue_only(config, index);
        if let Some(host) = config.syslog_host.clone().filter(|h| !h.trim().is_empty()) {
            let target = syslog::Target {
                server_name: config
                    .syslog_server_name
                    .clone()
                    .unwrap_or_else(|| host.clone()),
                host,
                port: config.syslog_port,
                ca_file: config.ca_file.clone(),
                cert_file: config.cert_file.clone(),
                key_file: config.key_file.clone(),
                retry_max: Duration::from_secs(config.retry_max_secs.max(1)),
                poll: Duration::from_secs(config.poll_secs.max(1)),
                batch: config.batch.clamp(1, 10_000),
            };
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    let sender =
                        syslog::Sender::new(audit.index.clone(), target, audit.wake.clone());
                    runtime.spawn(sender.run());
                }
                Err(_) => tracing::error!(
                    "AUDIT: no async runtime to send audit messages on; they stay queued"
                ),
            }
        }
        audit
    }

    /// The audit trail without a sender: records (and, with `syslog_host`, queued messages
    /// for a running gateway to send). For short-lived commands.
    pub fn queue_only(config: &AuditConfig, index: Arc<dyn Index>) -> Audit {
        let host = config
            .hostname
            .clone()
            .unwrap_or_else(syslog::system_hostname);
        Audit {
            index,
            health: Arc::default(),
            source: dicom::Source {
                app_name: if config.app_name.trim().is_empty() {
                    "beeldbrug".into()
                } else {
                    config.app_name.clone()
                },
                site_id: config.site_id.clone(),
                host: host.clone(),
            },
            header: syslog::Header {
                hostname: host,
                app_name: config.app_name.clone(),
                procid: std::process::id().to_string(),
            },
            queue: config
                .syslog_host
                .as_deref()
                .is_some_and(|h| !h.trim().is_empty()),
            wake: Arc::new(Notify::new()),
            group: group::GroupCommit::default(),
            last_write: std::sync::Mutex::new(None),
            probing: tokio::sync::Mutex::new(()),
        }
    }

    /// Record one entry. A failure is logged at error, counted, and closes the gate (see
    /// [`AuditHealth`]): the operations after it are refused until the trail is writable.
    /// The caller learns of it when its answer has not gone out yet and refuses then too.
    pub async fn record(&self, entry: AuditEntry) -> Result<(), AuditError> {
        self.append(entry).await.map(|_| ())
    }

    /// Record one entry; the stored record (with its place in the chain) or why not.
    pub async fn append(&self, entry: AuditEntry) -> Result<AuditRecord, AuditError> {
        let record = AuditRecord::from(entry);
        let message = if self.queue {
            match dicom::message(&record, &self.source) {
                Ok(xml) => xml.map(|xml| syslog::message(&self.header, &record.time, &xml)),
                Err(e) => {
                    tracing::error!(error = %e, operation = record.operation, "AUDIT: no syslog message for a record");
                    None
                }
            }
        } else {
            None
        };
        let stored = match self
            .group
            .append(self.index.as_ref(), record.clone(), message.clone())
            .await
        {
            Ok(stored) => stored,
            Err(e) => {
                self.write_failed(&record, &e);
                return Err(e.into());
            }
        };
        self.health.failing.store(false, Ordering::Release);
        self.note_write();
        if message.is_some() {
            self.wake.notify_one();
        }
        Ok(stored)
    }

    /// Prove the trail takes a write now (a write in the index, not a record): a
    /// retrieval's record is written when the transfer ends, with its counts, so this is
    /// asked before its data goes out. A failure counts and closes the gate like a record's.
    /// A write that committed after this call began (another retrieval's probe, a record)
    /// is that proof too: concurrent retrievals wait for one probe rather than each
    /// writing one, serialised on the index's write lock.
    pub async fn probe(&self) -> Result<(), AuditError> {
        let asked = std::time::Instant::now();
        let _probing = self.probing.lock().await;
        if self.last_write().is_some_and(|t| t > asked) && !self.health.is_failing() {
            return Ok(());
        }
        match self.index.probe_write().await {
            Ok(()) => {
                self.note_write();
                Ok(())
            }
            Err(e) => {
                self.note_failure(&e, "probe before a retrieval");
                Err(e.into())
            }
        }
    }

    fn note_write(&self) {
        *self.last_write.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(std::time::Instant::now());
    }

    fn last_write(&self) -> Option<std::time::Instant> {
        *self.last_write.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the trail can be written (shared with the decision point and `/ready`).
    pub fn health(&self) -> &AuditHealth {
        &self.health
    }

    /// A write failed: say so at error level (what was done by whom, without patient data:
    /// the log is no place for BSNs), count it, close the gate and start trying again.
    fn write_failed(&self, record: &AuditRecord, error: &IndexError) {
        tracing::error!(
            %error,
            time = %record.time,
            operation = %record.operation,
            outcome = %record.outcome,
            gateway = %record.gateway,
            source = %record.source_address,
            patients = record.patient_ids.len(),
            studies = record.study_uids.len(),
            "AUDIT WRITE FAILED: this record is not in the audit trail"
        );
        self.note_failure(error, "record");
    }

    /// Count a failed write, close the gate and start trying again.
    fn note_failure(&self, error: &IndexError, what: &str) {
        let failures = self.health.failures.fetch_add(1, Ordering::Relaxed) + 1;
        self.health.failing.store(true, Ordering::Release);
        tracing::error!(
            %error,
            failures,
            what,
            "AUDIT WRITE FAILED: operations are refused until the audit trail can be written"
        );
        if self.health.recovering.swap(true, Ordering::AcqRel) {
            return;
        }
        let (index, health) = (self.index.clone(), self.health.clone());
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            health.recovering.store(false, Ordering::Release);
            return;
        };
        runtime.spawn(async move {
            loop {
                while health.is_failing() {
                    tokio::time::sleep(RECOVERY_PROBE).await;
                    match index.probe_write().await {
                        Ok(()) => {
                            health.failing.store(false, Ordering::Release);
                            tracing::info!("audit trail writable again: operations resume");
                        }
                        Err(e) => tracing::debug!(error = %e, "audit trail still not writable"),
                    }
                }
                health.recovering.store(false, Ordering::Release);
                // A failure between the last probe and here found `recovering` still set.
                if !health.is_failing() || health.recovering.swap(true, Ordering::AcqRel) {
                    break;
                }
            }
        });
    }

    /// Walk the whole chain.
    pub async fn verify(&self) -> Result<Verification, AuditError> {
        Ok(chain::verify(self.index.as_ref()).await?)
    }

    /// The newest `limit` records of one patient, and the chain's verification. The caller
    /// records the read itself (an AUDIT-READ entry naming the patient).
    pub async fn patient_trail(
        &self,
        patient_id: &str,
        limit: u32,
    ) -> Result<PatientTrail, AuditError> {
        let mut records = self
            .index
            .audit_records_for_patient(patient_id, limit)
            .await?;
        // The lookup table is outside the chain: keep only records whose (hashed) content
        // names the patient.
        let key = crate::store::index::audit::patient_key(patient_id);
        records.retain(|r| r.patient_keys().contains(&key));
        let studies = self
            .study_patients(redact::studies_to_resolve(&records, patient_id))
            .await?;
        Ok(PatientTrail {
            patient_id: patient_id.to_string(),
            records: records
                .iter()
                .map(|r| redact::view(r, patient_id, &studies))
                .collect(),
            verification: self.verify().await?,
        })
    }

    /// The Patient ID of each of `studies` the index knows (the ones it does not know are
    /// left out, and so not shown to a reader of one patient's trail).
    async fn study_patients<'a>(
        &self,
        studies: impl Iterator<Item = &'a str>,
    ) -> Result<redact::StudyPatients, AuditError> {
        use crate::model::query::{indexed_attr_by_keyword, Level, Query};
        let studies: std::collections::BTreeSet<&str> = studies.collect();
        let studies: Vec<String> = studies.into_iter().map(str::to_string).collect();
        let study_attr = indexed_attr_by_keyword("StudyInstanceUID").expect("indexed");
        let mut owners = redact::StudyPatients::new();
        for chunk in studies.chunks(500) {
            let query = Query::new(Level::Study)
                .with_key(study_attr, crate::model::Matcher::UidList(chunk.to_vec()));
            for found in self.index.find(&query).await? {
                if let (Some(study), Some(patient)) = (
                    found.get(&dicom_core::Tag(0x0020, 0x000D)),
                    found.get(&dicom_core::Tag(0x0010, 0x0020)),
                ) {
                    owners.insert(study.clone(), patient.clone());
                }
            }
        }
        Ok(owners)
    }

    /// The PS3.15 message a record maps to (for tests and tools).
    pub fn dicom_message(&self, record: &AuditRecord) -> Option<String> {
        dicom::message(record, &self.source).ok().flatten()
    }
}

/// Retention's record of a received study it deleted (`storage.keep_received_days`).
#[async_trait::async_trait]
impl RetentionAudit for Audit {
    type Error = AuditError;

    async fn record_expired(&self, keep_days: u32, deleted: &Deleted) -> Result<(), AuditError> {
        self.record(AuditEntry {
            time: crate::clock::now_rfc3339(),
            operation: super::Operation::Delete.name().into(),
            outcome: "success".into(),
            detail: format!("retention: {}", deleted.describe()),
            gateway: "beeldbrug-retention".into(),
            source_address: "local".into(),
            grounds: format!("storage.keep_received_days = {keep_days}"),
            patient_ids: deleted.patient_ids.clone(),
            study_uids: deleted.study_uids.clone(),
            ..Default::default()
        })
        .await
    }
}
