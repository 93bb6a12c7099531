//! The [`Index`](crate::store::index::Index) implementation of each backend: every method
//! forwarded to the [`SqlIndex`](super::SqlIndex) it wraps.

/// The [`Index`](crate::store::index::Index) implementation of a backend that wraps a
/// [`SqlIndex`](super::SqlIndex) in a field `inner`: every method is the `SqlIndex` method of
/// the same name (both backends).
macro_rules! delegate_index_to_inner {
    ($backend:ty) => {
        const _: () = {
            use $crate::model::{InstanceLocation, Match, Query, Selection};
            use $crate::store::index::{
                AssociationRow, AuditEvent, AuditRecord, CachedStudy, ForwardJob, Index,
                IndexError, OutboxMessage, Publication, RegistryLookup, RegistryRow, StudyArrival,
                Submission, UpsertOutcome,
            };
            use $crate::store::InstanceRecord;

            #[async_trait::async_trait]
            impl Index for $backend {
                async fn upsert_instance(
                    &self,
                    record: &InstanceRecord,
                ) -> Result<UpsertOutcome, IndexError> {
                    self.inner.upsert_instance(record).await
                }

                async fn upsert_instances(
                    &self,
                    records: &[InstanceRecord],
                ) -> Result<Vec<UpsertOutcome>, IndexError> {
                    self.inner.upsert_instances(records).await
                }

                async fn upsert_instances_superseding(
                    &self,
                    records: &[InstanceRecord],
                ) -> Result<Vec<String>, IndexError> {
                    self.inner.upsert_instances_superseding(records).await
                }

                async fn upsert_instances_journaled(
                    &self,
                    records: &[InstanceRecord],
                    journal: &str,
                    seq: u64,
                    durable: bool,
                ) -> Result<Vec<String>, IndexError> {
                    let seq = i64::try_from(seq).unwrap_or(i64::MAX);
                    self.inner
                        .upsert_instances_journaled(records, journal, seq, durable)
                        .await
                }

                async fn upsert_instances_gated(
                    &self,
                    records: &[InstanceRecord],
                    journal: &str,
                    gate: tokio::sync::oneshot::Receiver<$crate::store::index::Gate>,
                ) -> Result<Option<$crate::store::index::GatedCommit>, IndexError> {
                    self.inner
                        .upsert_instances_gated(records, journal, gate)
                        .await
                }

                async fn ingest_journal_seq(&self, journal: &str) -> Result<u64, IndexError> {
                    Ok(u64::try_from(self.inner.ingest_journal_seq(journal).await?).unwrap_or(0))
                }

                async fn sync_ingest_journal(
                    &self,
                    journal: &str,
                    seq: u64,
                ) -> Result<(), IndexError> {
                    let seq = i64::try_from(seq).unwrap_or(i64::MAX);
                    self.inner.sync_ingest_journal(journal, seq).await
                }

                async fn find(&self, query: &Query) -> Result<Vec<Match>, IndexError> {
                    self.inner.find(query).await
                }

                async fn locate(
                    &self,
                    selection: &Selection,
                ) -> Result<Vec<InstanceLocation>, IndexError> {
                    self.inner.locate(selection, None).await
                }

                async fn locate_page(
                    &self,
                    selection: &Selection,
                    offset: u32,
                    limit: u32,
                ) -> Result<Vec<InstanceLocation>, IndexError> {
                    self.inner.locate(selection, Some((offset, limit))).await
                }

                async fn transfer_syntaxes(
                    &self,
                    selection: &Selection,
                ) -> Result<Vec<String>, IndexError> {
                    self.inner.transfer_syntaxes(selection).await
                }

                async fn remove_instance(
                    &self,
                    sop_instance_uid: &str,
                ) -> Result<Option<String>, IndexError> {
                    self.inner.remove_instance(sop_instance_uid).await
                }

                async fn count_instances(&self, selection: &Selection) -> Result<u64, IndexError> {
                    self.inner.count_instances(selection).await
                }

                async fn cached_study(
                    &self,
                    study_uid: &str,
                ) -> Result<Option<CachedStudy>, IndexError> {
                    self.inner.cached_study(study_uid).await
                }

                async fn put_cached_study(&self, study: &CachedStudy) -> Result<(), IndexError> {
                    self.inner.put_cached_study(study).await
                }

                async fn cache_lru(&self) -> Result<Vec<(String, u64)>, IndexError> {
                    self.inner.cache_lru().await
                }

                async fn remove_study(&self, study_uid: &str) -> Result<Vec<String>, IndexError> {
                    self.inner.remove_study(study_uid).await
                }

                async fn enqueue_forward(
                    &self,
                    items: &[(String, String)],
                    sender: &str,
                    now: i64,
                ) -> Result<(), IndexError> {
                    self.inner.enqueue_forward(items, sender, now).await
                }

                async fn forward_jobs(
                    &self,
                    due_at: Option<i64>,
                    limit: u32,
                ) -> Result<Vec<ForwardJob>, IndexError> {
                    self.inner.forward_jobs(due_at, limit).await
                }

                async fn requeue_forward(&self, ids: &[i64], now: i64) -> Result<u64, IndexError> {
                    self.inner.requeue_forward(ids, now).await
                }

                async fn claim_forward_jobs(
                    &self,
                    now: i64,
                    lease_until: i64,
                    limit: u32,
                ) -> Result<Vec<ForwardJob>, IndexError> {
                    self.inner.claim_forward_jobs(now, lease_until, limit).await
                }

                async fn release_forward_jobs(
                    &self,
                    ids: &[i64],
                    lease_until: i64,
                    now: i64,
                ) -> Result<(), IndexError> {
                    self.inner.release_forward_jobs(ids, lease_until, now).await
                }

                async fn try_lease(
                    &self,
                    name: &str,
                    owner: &str,
                    now: i64,
                    until: i64,
                ) -> Result<bool, IndexError> {
                    self.inner.try_lease(name, owner, now, until).await
                }

                async fn release_lease(&self, name: &str, owner: &str) -> Result<(), IndexError> {
                    self.inner.release_lease(name, owner).await
                }

                async fn claim_token_id(
                    &self,
                    issuer: &str,
                    token_id: &str,
                    forget_after: i64,
                    now: i64,
                ) -> Result<bool, IndexError> {
                    self.inner
                        .claim_token_id(issuer, token_id, forget_after, now)
                        .await
                }

                async fn update_forward(
                    &self,
                    id: i64,
                    state: &str,
                    next_attempt_at: i64,
                    error: &str,
                ) -> Result<(), IndexError> {
                    self.inner
                        .update_forward(id, state, next_attempt_at, error)
                        .await
                }

                async fn record_audit(&self, event: &AuditEvent) -> Result<(), IndexError> {
                    self.inner.record_audit(event).await
                }

                async fn audit_events(&self, limit: u32) -> Result<Vec<AuditEvent>, IndexError> {
                    self.inner.audit_events(limit).await
                }

                async fn append_audit(
                    &self,
                    record: &AuditRecord,
                    syslog: Option<&str>,
                ) -> Result<AuditRecord, IndexError> {
                    self.inner.append_audit(record, syslog).await
                }

                async fn append_audit_batch(
                    &self,
                    records: &[(&AuditRecord, Option<&str>)],
                ) -> Result<Vec<AuditRecord>, IndexError> {
                    self.inner.append_audit_batch(records).await
                }

                async fn audit_records(
                    &self,
                    after_seq: i64,
                    limit: u32,
                ) -> Result<Vec<AuditRecord>, IndexError> {
                    self.inner.audit_records(after_seq, limit).await
                }

                async fn audit_records_for_patient(
                    &self,
                    patient_id: &str,
                    limit: u32,
                ) -> Result<Vec<AuditRecord>, IndexError> {
                    self.inner
                        .audit_records_for_patient(patient_id, limit)
                        .await
                }

                async fn audit_head(&self) -> Result<(i64, String), IndexError> {
                    self.inner.audit_head().await
                }

                async fn audit_patient_rows(&self) -> Result<i64, IndexError> {
                    self.inner.audit_patient_rows().await
                }

                async fn claim_audit_outbox(
                    &self,
                    owner: &str,
                    now: i64,
                    until: i64,
                    limit: u32,
                ) -> Result<Vec<OutboxMessage>, IndexError> {
                    self.inner
                        .claim_audit_outbox(owner, now, until, limit)
                        .await
                }

                async fn delete_audit_outbox(&self, ids: &[i64]) -> Result<(), IndexError> {
                    self.inner.delete_audit_outbox(ids).await
                }

                async fn retry_audit_outbox(
                    &self,
                    ids: &[i64],
                    retry_at: i64,
                    error: &str,
                ) -> Result<(), IndexError> {
                    self.inner.retry_audit_outbox(ids, retry_at, error).await
                }

                async fn audit_outbox_len(&self) -> Result<u64, IndexError> {
                    self.inner.audit_outbox_len().await
                }

                async fn delete_instances(
                    &self,
                    selection: &Selection,
                    now: i64,
                ) -> Result<Vec<InstanceLocation>, IndexError> {
                    self.inner.delete_instances(selection, now).await
                }

                async fn queued_blob_deletions(
                    &self,
                    limit: u32,
                ) -> Result<Vec<String>, IndexError> {
                    self.inner.queued_blob_deletions(limit).await
                }

                async fn queued_blob_deletions_before(
                    &self,
                    before: i64,
                    limit: u32,
                ) -> Result<Vec<String>, IndexError> {
                    self.inner.queued_blob_deletions_before(before, limit).await
                }

                async fn blob_keys_in_use(
                    &self,
                    keys: &[String],
                ) -> Result<Vec<String>, IndexError> {
                    self.inner.blob_keys_in_use(keys).await
                }

                async fn clear_blob_deletions(&self, keys: &[String]) -> Result<(), IndexError> {
                    self.inner.clear_blob_deletions(keys).await
                }

                async fn note_received(
                    &self,
                    study_uids: &[String],
                    sender: &str,
                    now: i64,
                ) -> Result<(), IndexError> {
                    self.inner.note_received(study_uids, sender, now).await
                }

                async fn received_before(
                    &self,
                    cutoff: i64,
                    limit: u32,
                ) -> Result<Vec<String>, IndexError> {
                    self.inner.received_before(cutoff, limit).await
                }

                async fn forget_received(&self, study_uid: &str) -> Result<(), IndexError> {
                    self.inner.forget_received(study_uid).await
                }

                async fn registry_objects(
                    &self,
                    lookup: &RegistryLookup,
                ) -> Result<Vec<RegistryRow>, IndexError> {
                    self.inner.registry_objects(lookup).await
                }

                async fn registry_associations(
                    &self,
                    uuids: &[String],
                ) -> Result<Vec<AssociationRow>, IndexError> {
                    self.inner.registry_associations(uuids).await
                }

                async fn registry_submit(&self, submission: &Submission) -> Result<(), IndexError> {
                    self.inner.registry_submit(submission).await
                }

                async fn studies_to_publish(
                    &self,
                    quiet_before: i64,
                    limit: u32,
                ) -> Result<Vec<StudyArrival>, IndexError> {
                    self.inner.studies_to_publish(quiet_before, limit).await
                }

                async fn study_arrival(
                    &self,
                    study_uid: &str,
                ) -> Result<Option<StudyArrival>, IndexError> {
                    self.inner.study_arrival(study_uid).await
                }

                async fn publication(
                    &self,
                    study_uid: &str,
                ) -> Result<Option<Publication>, IndexError> {
                    self.inner.publication(study_uid).await
                }

                async fn claim_publication(
                    &self,
                    study_uid: &str,
                    owner: &str,
                    now: i64,
                    until: i64,
                ) -> Result<bool, IndexError> {
                    self.inner
                        .claim_publication(study_uid, owner, now, until)
                        .await
                }

                async fn probe_write(&self) -> Result<(), IndexError> {
                    self.inner.probe_write().await
                }
            }
        };
    };
}
pub(in crate::store::index) use delegate_index_to_inner;
