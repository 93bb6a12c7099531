//! The publisher (issue 14 item 1): a background task that registers each complete study.
//!
//! A study is complete once no instance arrived for `xds.quiet_secs` (the index keeps each
//! study's last arrival time and arrival count). A complete study that was never published,
//! or got instances since its publication, gets:
//!
//! 1. a KOS manifest ([`super::kos`]) referencing every instance of the study except our own
//!    earlier manifests, stored as an instance of the study through the store's one ingest
//!    path ([`crate::store::ingest::persist`], called in [`store_manifest`] only);
//! 2. a DocumentEntry for it and a SubmissionSet with a HasMember association; the study's
//!    previous entry, if any, is Deprecated and replaced (RPLC), all in one index
//!    transaction with the study's publication record.
//!
//! Reports in the study (an encapsulated PDF, or a text, enhanced or comprehensive SR) get an
//! entry of their own in the same SubmissionSet the first time they are seen: the PDF itself
//! (`application/pdf`, formatCode `urn:ihe:rad:PDF`) or the SR instance (`application/dicom`),
//! typeCode 722124004, with the study's referenceIdList, so FindDocumentsByReferenceId finds
//! manifest and report together; the manifest references the report instance too.
//!
//! Gateways sharing one (PostgreSQL) index each run a publisher; a study is published by the
//! one that claims it first (`Index::claim_publication`, 300 s, ended by the submission).
//!
//! A study whose Patient ID is not a valid BSN is not published (logged once per change: the
//! publication record notes it with an empty entry). Storing the KOS counts as an arrival;
//! the publication records the count including it, so the manifest does not make its study
//! look changed.

use super::kos::{self, Manifest, StudyHeader};
use super::metadata::{self, DocumentCodes, Published, StudyFacts, KOS_FORMAT};
use super::{objects, row_of, Settings};
use crate::core::transfers::{Board, Running, Start, PUBLICATION};
use crate::core::Holdings;
use crate::ebrim::{ns, ObjectKind, RegistryObject, Status};
use crate::model::query::{indexed_attr_by_keyword, Level, Match, Matcher, Query};
use crate::model::{InstanceLocation, Selection};
use crate::store::index::{Publication, RegistryLookup, StudyArrival, Submission};
use crate::store::ingest::{self, Expected};
use crate::store::{BlobStore, Index};
use dicom_core::Tag;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Studies looked at per pass.
const BATCH: u32 = 32;
/// How long a claim on a study holds (a publisher that died mid-publication frees it then).
const CLAIM_SECS: i64 = 300;

/// What one pass did with one study.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A new KOS and entry (with the entry it replaced, if any).
    Published {
        entry_uuid: String,
        kos_uid: String,
        replaced: Option<String>,
    },
    /// The study's manifest already names exactly these instances: its publication now
    /// covers the new arrivals (a part of a published PACS study fetched into the cache).
    Unchanged { entry_uuid: String },
    /// Not published: why.
    Skipped(String),
}

/// The publisher: the index, the blobs its manifests go to, and the settings.
#[derive(Debug, Clone)]
pub struct Publisher {
    pub index: Arc<dyn Index>,
    pub blobs: BlobStore,
    pub settings: Arc<Settings>,
    /// Who claims studies ([`Publisher::owner_id`]: unique per process).
    pub owner: String,
    /// Gateway mode: where the instances the cache does not hold are listed (the core, over
    /// the PACS), so a manifest names every instance of the study, not only the cached ones.
    pub holdings: Option<Arc<dyn Holdings>>,
    /// The operator's console lists each publication there while it runs.
    pub transfers: Option<Arc<Board>>,
}

/// End a publication's transfer as its outcome says.
fn end(t: Running, result: &Result<Outcome, String>) {
    match result {
        Ok(Outcome::Published { .. }) => t.finish(None),
        Ok(Outcome::Unchanged { .. }) => {
            t.note("the published manifest names these instances already");
            t.finish(None)
        }
        Ok(Outcome::Skipped(why)) => {
            t.note(format!("not published: {why}"));
            t.finish(None)
        }
        Err(e) => t.finish(Some(e.clone())),
    }
}

/// Stop a publication the operator cancelled.
fn cancelled(transfer: Option<&Running>) -> Result<(), String> {
    match transfer {
        Some(t) if t.is_cancelled() => Err("cancelled by the operator".into()),
        _ => Ok(()),
    }
}

impl Publisher {
    /// A claim owner unique to this process.
    pub fn owner_id() -> String {
        format!("publisher-{}", metadata::new_uid())
    }

    /// Run until `shutdown`: a pass every quarter of the quiet period (1 to 30 s).
    pub async fn run(self, shutdown: CancellationToken) {
        let every = Duration::from_secs((self.settings.quiet_secs / 4).clamp(1, 30));
        tracing::info!(
            quiet_secs = self.settings.quiet_secs,
            "XDS-I publisher started"
        );
        let board = self.transfers.clone().unwrap_or_default();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(every) => {}
                // The operator's "publish now" (console): a pass at once.
                _ = board.wake_publisher.notified() => {}
            }
            if let Err(e) = self.pass(&shutdown).await {
                tracing::warn!(error = %e, "XDS-I publication pass failed; retried next pass");
            }
        }
        tracing::info!("XDS-I publisher stopped");
    }

    /// One pass: every study due now (up to a batch), oldest first.
    pub async fn pass(
        &self,
        shutdown: &CancellationToken,
    ) -> Result<Vec<(String, Outcome)>, String> {
        let quiet = i64::try_from(self.settings.quiet_secs).unwrap_or(i64::MAX);
        let now = crate::clock::unix_seconds();
        let cutoff = now.saturating_sub(quiet);
        let mut due = self
            .index
            .studies_to_publish(cutoff, BATCH)
            .await
            .map_err(|e| e.to_string())?;
        // Asked for on the console: first, whether quiet or backing off.
        let requested = match &self.transfers {
            Some(board) => board.take_publication_requests(),
            None => Default::default(),
        };
        if !requested.is_empty() {
            let waiting = self
                .index
                .studies_to_publish(now, 10_000)
                .await
                .map_err(|e| e.to_string())?;
            due.retain(|s| !requested.contains(&s.study_instance_uid));
            let asked = waiting
                .into_iter()
                .filter(|s| requested.contains(&s.study_instance_uid));
            due.splice(0..0, asked);
        }
        let mut done = Vec::with_capacity(due.len());
        for study in due {
            if shutdown.is_cancelled() {
                break;
            }
            let asked = requested.contains(&study.study_instance_uid);
            // A study whose publication keeps failing waits out its back-off.
            let backing_off = self
                .transfers
                .as_ref()
                .is_some_and(|b| !b.publication_due(&study.study_instance_uid, now));
            if backing_off && !asked {
                continue;
            }
            // Gateways sharing one index: the one that claims the study publishes it.
            let now = crate::clock::unix_seconds();
            match self
                .index
                .claim_publication(
                    &study.study_instance_uid,
                    &self.owner,
                    now,
                    now + CLAIM_SECS,
                )
                .await
            {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "XDS-I: cannot claim a study for publication");
                    continue;
                }
            }
            match self.publish_as(&study, asked).await {
                Ok(outcome) => done.push((study.study_instance_uid.clone(), outcome)),
                Err(e) => tracing::warn!(
                    study = %study.study_instance_uid,
                    error = %e,
                    "XDS-I publication failed; retried next pass"
                ),
            }
        }
        Ok(done)
    }

    /// Publish one study the index holds (or note why not): a study that went quiet. The
    /// attempt is a transfer on the console's board (with [`Publisher::transfers`]): it
    /// ends complete (published, or unchanged, or not to be published, with why),
    /// incomplete with the error (tried again next pass), or cancelled by the operator
    /// (before the manifest is stored or registered; tried again next pass too).
    pub async fn publish(&self, arrival: &StudyArrival) -> Result<Outcome, String> {
        self.publish_as(arrival, false).await
    }

    /// [`Publisher::publish`], `asked` for by the operator ("publish now" on the console).
    async fn publish_as(&self, arrival: &StudyArrival, asked: bool) -> Result<Outcome, String> {
        let transfer = self.transfers.as_ref().map(|board| {
            board.start(Start {
                kind: PUBLICATION,
                source: match asked {
                    true => "cache (publish now, by the operator)".into(),
                    false => "cache".into(),
                },
                destination: "XDS registry".into(),
                study_uids: vec![arrival.study_instance_uid.clone()],
                expected: 0,
                expected_bytes: 0,
            })
        });
        let result = self.publish_study(arrival, transfer.as_ref()).await;
        if let Some(t) = transfer {
            end(t, &result);
        }
        result
    }

    async fn publish_study(
        &self,
        arrival: &StudyArrival,
        transfer: Option<&Running>,
    ) -> Result<Outcome, String> {
        let study_uid = arrival.study_instance_uid.as_str();
        let e = |e: crate::store::IndexError| e.to_string();
        let uid_attr = indexed_attr_by_keyword("StudyInstanceUID").expect("indexed");
        let query = Query::new(Level::Study).with_key(uid_attr, Matcher::Single(study_uid.into()));
        let Some(found) = self.index.find(&query).await.map_err(e)?.into_iter().next() else {
            return Ok(Outcome::Skipped("the study is gone".into()));
        };
        let header = header_of(&found, study_uid);
        if !metadata::is_bsn(header.patient_id.trim()) {
            tracing::info!(
                study = %study_uid,
                "XDS-I: study not published: its Patient ID is not a valid BSN (9 digits, 11-test)"
            );
            self.skip(arrival).await?;
            return Ok(Outcome::Skipped("no valid BSN".into()));
        }
        let selection = Selection {
            study_uids: vec![study_uid.into()],
            ..Default::default()
        };
        let mut instances = self.index.locate(&selection).await.map_err(e)?;
        let mut modalities = self.modalities(study_uid).await?;
        if let Some(holdings) = &self.holdings {
            // Gateway mode: the cache may hold a part of the study; the PACS names the rest.
            let reported = holdings.study_instances(study_uid).await?;
            modalities.extend(modalities_of(&reported));
            add_reported(&mut instances, &reported);
        }
        let published = self
            .publish_contents(
                &header,
                instances,
                modalities,
                Some(arrival.arrivals),
                transfer,
            )
            .await?;
        if matches!(published, Outcome::Skipped(_)) {
            self.skip(arrival).await?;
        }
        Ok(published)
    }

    /// Whether a study has a publication record (a manifest, or a note that it was skipped).
    pub async fn is_published(&self, study_uid: &str) -> Result<bool, String> {
        let publication = self
            .index
            .publication(study_uid)
            .await
            .map_err(|e| e.to_string())?;
        Ok(publication.is_some_and(|p| p.published_at > 0))
    }

    /// Publish a study only a source holds (gateway mode: a study the PACS reports), from its
    /// study-level row and the image-level rows of its instances.
    pub async fn publish_reported(
        &self,
        study: &Match,
        reported: &[Match],
    ) -> Result<Outcome, String> {
        let transfer = self.transfers.as_ref().map(|board| {
            board.start(Start {
                kind: PUBLICATION,
                source: "PACS (C-FIND report)".into(),
                destination: "XDS registry".into(),
                study_uids: study
                    .get(&Tag(0x0020, 0x000D))
                    .cloned()
                    .into_iter()
                    .collect(),
                expected: reported.len() as u64,
                expected_bytes: 0,
            })
        });
        let result = self
            .publish_reported_study(study, reported, transfer.as_ref())
            .await;
        if let Some(t) = transfer {
            end(t, &result);
        }
        result
    }

    async fn publish_reported_study(
        &self,
        study: &Match,
        reported: &[Match],
        transfer: Option<&Running>,
    ) -> Result<Outcome, String> {
        let Some(study_uid) = study.get(&Tag(0x0020, 0x000D)) else {
            return Ok(Outcome::Skipped("no Study Instance UID".into()));
        };
        let header = header_of(study, study_uid);
        if !metadata::is_bsn(header.patient_id.trim()) {
            return Ok(Outcome::Skipped("no valid BSN".into()));
        }
        // Gateways sharing one index: the one that claims the study publishes it.
        let now = crate::clock::unix_seconds();
        let claimed = self
            .index
            .claim_publication(study_uid, &self.owner, now, now + CLAIM_SECS)
            .await
            .map_err(|e| e.to_string())?;
        if !claimed {
            return Ok(Outcome::Skipped("another gateway publishes it".into()));
        }
        let selection = Selection {
            study_uids: vec![study_uid.clone()],
            ..Default::default()
        };
        let mut instances = self
            .index
            .locate(&selection)
            .await
            .map_err(|e| e.to_string())?;
        add_reported(&mut instances, reported);
        let mut modalities = self.modalities(study_uid).await?;
        modalities.extend(modalities_of(reported));
        self.publish_contents(&header, instances, modalities, None, transfer)
            .await
    }

    /// Make, store and register the manifest of a study with these instances (and entries
    /// for its new reports), unless its manifest names exactly these already. `arrivals`: the
    /// study's arrivals as looked at (a stored manifest is one more); `None` for the study's
    /// count once the manifest is stored.
    async fn publish_contents(
        &self,
        header: &StudyHeader,
        instances: Vec<InstanceLocation>,
        modalities: BTreeSet<String>,
        arrivals: Option<i64>,
        transfer: Option<&Running>,
    ) -> Result<Outcome, String> {
        let study_uid = header.study_instance_uid.as_str();
        let e = |e: crate::store::IndexError| e.to_string();
        // Our earlier entries of the study: their manifests are not referenced again, the
        // Approved manifest is replaced, and reports published already stay as they are.
        let ours = objects(
            self.index.as_ref(),
            &RegistryLookup::Study(study_uid.into()),
        )
        .await
        .map_err(e)?;
        let is_manifest = |o: &RegistryObject| {
            o.codes(ns::DE_FORMAT_CODE)
                .iter()
                .any(|(c, _)| *c == KOS_FORMAT.0)
        };
        let our_uids: BTreeSet<String> = ours
            .iter()
            .filter_map(|o| o.unique_id().map(str::to_string))
            .collect();
        let our_manifests: BTreeSet<String> = ours
            .iter()
            .filter(|o| is_manifest(o))
            .filter_map(|o| o.unique_id().map(str::to_string))
            .collect();
        let replaced = ours
            .iter()
            .filter(|o| {
                o.kind == ObjectKind::DocumentEntry
                    && o.status == Status::Approved
                    && is_manifest(o)
            })
            .map(|o| o.id.clone())
            .collect::<Vec<_>>();
        let (manifests, instances): (Vec<_>, Vec<_>) = instances
            .into_iter()
            .partition(|i| our_manifests.contains(&i.sop_instance_uid));
        if instances.is_empty() {
            return Ok(Outcome::Skipped(
                "no instances besides our manifests".into(),
            ));
        }
        let new_reports: Vec<&InstanceLocation> = instances
            .iter()
            .filter(|i| {
                // A report only the PACS holds is referenced by the manifest; its own entry
                // waits until its bytes are here (its hash and size are of the document).
                metadata::is_report(&i.sop_class_uid)
                    && !our_uids.contains(&i.sop_instance_uid)
                    && !i.blob_key.is_empty()
            })
            .collect();
        if let [current] = replaced.as_slice() {
            let approved = ours
                .iter()
                .find(|o| &o.id == current)
                .and_then(|o| o.unique_id())
                .and_then(|uid| manifests.iter().find(|m| m.sop_instance_uid == uid));
            let unchanged = match approved {
                Some(manifest) => self.names_exactly(manifest, &instances).await,
                None => false,
            };
            if new_reports.is_empty() && unchanged {
                let arrivals = match arrivals {
                    Some(arrivals) => arrivals,
                    None => self.arrivals(study_uid).await?,
                };
                let submission = Submission {
                    publication: Some(Publication {
                        study_instance_uid: study_uid.to_string(),
                        entry_uuid: current.clone(),
                        arrivals,
                        published_at: crate::clock::unix_seconds(),
                    }),
                    ..Default::default()
                };
                self.index.registry_submit(&submission).await.map_err(e)?;
                return Ok(Outcome::Unchanged {
                    entry_uuid: current.clone(),
                });
            }
        }
        // The instances the manifest names, for the console (its cancel stops the
        // publication before the manifest is stored or registered).
        if let Some(t) = transfer {
            t.expect(instances.len() as u64, 0);
        }
        let result: Result<Outcome, String> = async {
            let modalities: Vec<String> = modalities.into_iter().filter(|m| m != "KO").collect();

            let now = crate::clock::unix_seconds();
            let created = metadata::dtm(now);
            let kos_uid = metadata::new_uid();
            let series_uid = metadata::new_uid();
            let bytes = kos::build(&Manifest {
                study: header,
                instances: &instances,
                retrieve_ae_title: &self.settings.ae_title,
                retrieve_location_uid: &self.settings.repository_unique_id,
                sop_instance_uid: &kos_uid,
                series_instance_uid: &series_uid,
                content_date: &created[..8],
                content_time: &created[8..],
            })
            .map_err(|e| e.to_string())?;
            let published = Published {
                sop_instance_uid: kos_uid.clone(),
                sha1: metadata::sha1_hex(&bytes),
                size: bytes.len() as u64,
                created: now,
            };
            if let Some(t) = transfer {
                t.advance(instances.len() as u64, bytes.len() as u64);
            }
            cancelled(transfer)?;
            self.store_manifest(&bytes, &kos_uid).await?;
            let arrivals = match arrivals {
                // The manifest just stored is one more arrival.
                Some(arrivals) => arrivals + 1,
                None => self.arrivals(study_uid).await?,
            };

            let facts = StudyFacts {
                bsn: header.patient_id.trim().to_string(),
                patient_name: header.patient_name.clone(),
                birth_date: header.birth_date.clone(),
                sex: header.sex.clone(),
                study_instance_uid: study_uid.to_string(),
                accession_number: header.accession_number.trim().to_string(),
                study_date: header.study_date.clone(),
                study_time: header.study_time.clone(),
                study_description: header.study_description.clone(),
                modalities,
            };
            let entry = metadata::document_entry(
                &self.settings,
                &facts,
                &published,
                &DocumentCodes::manifest(&self.settings),
            );
            let set = metadata::submission_set(&self.settings, &facts.bsn, now);
            let mut associations = vec![metadata::has_member(&set.id, &entry.id)];
            for old in &replaced {
                associations.push(metadata::replaces(&entry.id, old));
            }
            let mut rows = vec![row_of(&entry, study_uid)];
            // Reports: each its own entry in the same SubmissionSet, found with the manifest by
            // the study's referenceIdList (and referenced by the manifest itself).
            for report in new_reports {
                let bytes = match self.report_bytes(report).await {
                    Ok(bytes) => bytes,
                    Err(why) => {
                        tracing::warn!(study = %study_uid, sop = %report.sop_instance_uid, error = %why, "XDS-I: report not published");
                        continue;
                    }
                };
                let document = Published {
                    sop_instance_uid: report.sop_instance_uid.clone(),
                    sha1: metadata::sha1_hex(&bytes),
                    size: bytes.len() as u64,
                    created: now,
                };
                let codes = DocumentCodes::report(&self.settings, &report.sop_class_uid);
                let report_entry = metadata::document_entry(&self.settings, &facts, &document, &codes);
                associations.push(metadata::has_member(&set.id, &report_entry.id));
                rows.push(row_of(&report_entry, study_uid));
            }
            rows.push(row_of(&set, ""));
            let submission = Submission {
                objects: rows,
                associations: associations.iter().map(super::association_row).collect(),
                deprecate: replaced.clone(),
                publication: Some(Publication {
                    study_instance_uid: study_uid.to_string(),
                    entry_uuid: entry.id.clone(),
                    arrivals,
                    published_at: now,
                }),
            };
            cancelled(transfer)?;
            self.index.registry_submit(&submission).await.map_err(e)?;
            tracing::info!(
                study = %study_uid,
                entry = %entry.id,
                kos = %kos_uid,
                instances = instances.len(),
                replaced = ?replaced,
                "XDS-I: study published"
            );
            Ok(Outcome::Published {
                entry_uuid: entry.id,
                kos_uid,
                replaced: replaced.into_iter().next(),
            })
        }
        .await;
        result
    }

    /// The study's arrivals now.
    async fn arrivals(&self, study_uid: &str) -> Result<i64, String> {
        let arrival = self
            .index
            .study_arrival(study_uid)
            .await
            .map_err(|e| e.to_string())?;
        Ok(arrival.map_or(0, |a| a.arrivals))
    }

    /// Whether a stored manifest references exactly these instances (an unreadable one does
    /// not: it is replaced).
    async fn names_exactly(
        &self,
        manifest: &InstanceLocation,
        instances: &[InstanceLocation],
    ) -> bool {
        let _ = self.blobs.ensure_local(&manifest.blob_key).await;
        let Ok(bytes) = tokio::fs::read(self.blobs.path(&manifest.blob_key)).await else {
            return false;
        };
        // Part 10: the data set after the preamble and "DICM" (PS3.10 7.1).
        let Some(Ok(obj)) = bytes.get(128..).map(dicom_object::from_reader) else {
            return false;
        };
        let named = kos::referenced(&obj);
        named.len() == instances.len()
            && instances
                .iter()
                .all(|i| named.contains(&i.sop_instance_uid))
    }

    /// Store the manifest as an instance of its study: the store's one ingest path.
    async fn store_manifest(&self, bytes: &[u8], kos_uid: &str) -> Result<(), String> {
        let mut blob = self.blobs.begin().await.map_err(|e| e.to_string())?;
        if let Err(e) = blob.write(bytes).await {
            blob.abort().await;
            return Err(e.to_string());
        }
        let expected = Expected {
            sop_class: Some(kos::KOS_SOP_CLASS),
            sop_instance: Some(kos_uid),
            study_uid: None,
        };
        ingest::persist(&self.blobs, self.index.as_ref(), blob, expected)
            .await
            .map(|_| ())
            .map_err(|f| format!("cannot store the manifest: {}", f.reason))
    }

    /// The document a report entry describes: the PDF inside an encapsulated PDF instance
    /// (Encapsulated Document, cut to Encapsulated Document Length when given), or the SR
    /// instance's file.
    async fn report_bytes(&self, report: &InstanceLocation) -> Result<Vec<u8>, String> {
        let _ = self.blobs.ensure_local(&report.blob_key).await;
        let path = self.blobs.path(&report.blob_key);
        let pdf = report.sop_class_uid == metadata::ENCAPSULATED_PDF;
        tokio::task::spawn_blocking(move || {
            if !pdf {
                return std::fs::read(&path).map_err(|e| e.to_string());
            }
            let obj = dicom_object::open_file(&path).map_err(|e| e.to_string())?;
            let mut bytes = obj
                .element(Tag(0x0042, 0x0011))
                .map_err(|e| e.to_string())?
                .to_bytes()
                .map_err(|e| e.to_string())?
                .into_owned();
            if let Some(length) = obj
                .element_opt(Tag(0x0042, 0x0015))
                .ok()
                .flatten()
                .and_then(|e| e.to_int::<u32>().ok())
            {
                bytes.truncate(length as usize);
            }
            Ok(bytes)
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// Note that a study was looked at and not published, until it changes.
    async fn skip(&self, arrival: &StudyArrival) -> Result<(), String> {
        let publication = Publication {
            study_instance_uid: arrival.study_instance_uid.clone(),
            entry_uuid: String::new(),
            arrivals: arrival.arrivals,
            published_at: crate::clock::unix_seconds(),
        };
        let submission = Submission {
            publication: Some(publication),
            ..Default::default()
        };
        self.index
            .registry_submit(&submission)
            .await
            .map_err(|e| e.to_string())
    }

    /// The modalities of the study's cached series (eventCodeList), without KO and duplicates.
    async fn modalities(&self, study_uid: &str) -> Result<BTreeSet<String>, String> {
        let uid_attr = indexed_attr_by_keyword("StudyInstanceUID").expect("indexed");
        let query = Query::new(Level::Series).with_key(uid_attr, Matcher::Single(study_uid.into()));
        let series = self.index.find(&query).await.map_err(|e| e.to_string())?;
        let modalities: BTreeSet<String> = series
            .iter()
            .filter_map(|m| m.get(&Tag(0x0008, 0x0060)))
            .flat_map(|v| v.split('\\').map(|s| s.trim().to_string()))
            .filter(|m| !m.is_empty() && m != "KO")
            .collect();
        Ok(modalities)
    }
}

/// The modalities named by image-level rows (each carries its series' Modality).
fn modalities_of(rows: &[Match]) -> BTreeSet<String> {
    rows.iter()
        .filter_map(|m| m.get(&Tag(0x0008, 0x0060)))
        .flat_map(|v| v.split('\\').map(|s| s.trim().to_string()))
        .filter(|m| !m.is_empty())
        .collect()
}

/// Add to the cached instances those only a source reported (image-level rows), as locations
/// without a blob: the manifest needs their series, SOP Class and SOP Instance UIDs only.
fn add_reported(instances: &mut Vec<InstanceLocation>, reported: &[Match]) {
    let held: BTreeSet<String> = instances
        .iter()
        .map(|i| i.sop_instance_uid.clone())
        .collect();
    let get = |m: &Match, g: u16, e: u16| m.get(&Tag(g, e)).map(|v| v.trim().to_string());
    for row in reported {
        let (Some(sop), Some(class), Some(series), Some(study)) = (
            get(row, 0x0008, 0x0018),
            get(row, 0x0008, 0x0016),
            get(row, 0x0020, 0x000E),
            get(row, 0x0020, 0x000D),
        ) else {
            continue;
        };
        if held.contains(&sop) || sop.is_empty() || class.is_empty() {
            continue;
        }
        instances.push(InstanceLocation {
            patient_id: get(row, 0x0010, 0x0020).unwrap_or_default(),
            study_instance_uid: study,
            series_instance_uid: series,
            sop_instance_uid: sop,
            sop_class_uid: class,
            transfer_syntax_uid: String::new(),
            blob_key: String::new(),
            size_bytes: 0,
        });
    }
}

/// The study's header from an index match.
fn header_of(m: &Match, study_uid: &str) -> StudyHeader {
    let get = |g: u16, e: u16| m.get(&Tag(g, e)).cloned().unwrap_or_default();
    StudyHeader {
        patient_name: get(0x0010, 0x0010),
        patient_id: get(0x0010, 0x0020),
        issuer_of_patient_id: get(0x0010, 0x0021),
        birth_date: get(0x0010, 0x0030),
        sex: get(0x0010, 0x0040),
        study_instance_uid: study_uid.to_string(),
        study_date: get(0x0008, 0x0020),
        study_time: get(0x0008, 0x0030),
        accession_number: get(0x0008, 0x0050),
        study_id: get(0x0020, 0x0010),
        study_description: get(0x0008, 0x1030),
        referring_physician_name: get(0x0008, 0x0090),
    }
}
