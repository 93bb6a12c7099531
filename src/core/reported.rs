//! Studies the PACS reports, for XDS-I publication in gateway mode (issue 14 item 1: "and, in
//! gateway mode, a study the PACS reports").
//!
//! The publisher makes a manifest from what the cache holds. In gateway mode the cache holds a
//! part of the PACS at most, so a manifest made from it alone would miss instances (a study of
//! which one series was viewed) or never exist (a study nobody fetched yet). Here the core
//! lists a study's instances from the cache merged with the sources the XDS front reaches, and
//! publishes the studies of a patient that those sources report before a FindDocuments for
//! that patient is answered, so another hospital finds them on its first query.
//!
//! The sources are asked as a Study Root C-FIND is: the study's series first, then the
//! instances of each series with both higher unique keys given (PS3.4 C.6.2.1.2: hierarchical
//! search below the STUDY level needs the unique keys of the levels above).

use super::registry::Registry;
use super::{Core, CoreError, Front};
use crate::model::query::{indexed_attr_by_keyword, Level, Match, Matcher, Query};
use crate::trust::Caller;
use async_trait::async_trait;
use dicom_core::Tag;
use std::sync::Arc;

/// At most this many series per study and instances per series are listed for a manifest.
const MANIFEST_WINDOW: usize = 100_000;
/// At most this many of a patient's studies are looked at per FindDocuments.
const STUDIES_PER_PATIENT: usize = 200;

const STUDY_INSTANCE_UID: Tag = Tag(0x0020, 0x000D);
const SERIES_INSTANCE_UID: Tag = Tag(0x0020, 0x000E);

/// What the XDS-I publisher asks the core: every instance of a study, wherever it is held
/// (implemented by [`Core`]; the publisher runs without it outside gateway mode).
#[async_trait]
pub trait Holdings: Send + Sync + std::fmt::Debug {
    /// Image-level rows (with the Patient, Study and Series attributes above them) of every
    /// instance of the study that the cache or a source of the XDS front holds. An error when
    /// a source did not answer: a manifest must not leave out what a PACS holds.
    async fn study_instances(&self, study_uid: &str) -> Result<Vec<Match>, String>;
}

#[async_trait]
impl Holdings for Core {
    async fn study_instances(&self, study_uid: &str) -> Result<Vec<Match>, String> {
        // The publisher asks on its own behalf: no user, so no remote gateway is asked.
        let publisher = Caller::new("xds-publisher", "local");
        Core::study_instances(self, study_uid, &publisher)
            .await
            .map_err(|e| e.to_string())
    }
}

impl Core {
    /// The sources reachable from the XDS front (the PACS in gateway mode).
    pub(super) fn xds_sources(&self) -> Vec<Arc<dyn super::Source>> {
        self.routes
            .of(Front::Xds)
            .iter()
            .filter_map(|&i| self.sources.get(i).cloned())
            .collect()
    }

    /// Every instance of a study in the cache or a source of the XDS front: image-level rows,
    /// merged by SOP Instance UID ([`Holdings::study_instances`]).
    pub async fn study_instances(
        &self,
        study_uid: &str,
        caller: &Caller,
    ) -> Result<Vec<Match>, CoreError> {
        let sources = self.xds_sources();
        let study_attr = indexed_attr_by_keyword("StudyInstanceUID").expect("indexed");
        let series_attr = indexed_attr_by_keyword("SeriesInstanceUID").expect("indexed");
        let study = Matcher::Single(study_uid.to_string());
        let series_query = Query::new(Level::Series).with_key(study_attr, study.clone());
        let (series, unanswered) = self
            .merge_find(&series_query, MANIFEST_WINDOW, &sources, caller)
            .await?;
        if let Some(e) = unanswered.into_iter().next() {
            return Err(e.into());
        }
        let mut instances = Vec::new();
        for row in series {
            let Some(series_uid) = row.get(&SERIES_INSTANCE_UID) else {
                continue;
            };
            let query = Query::new(Level::Image)
                .with_key(study_attr, study.clone())
                .with_key(series_attr, Matcher::Single(series_uid.clone()));
            let (found, unanswered) = self
                .merge_find(&query, MANIFEST_WINDOW, &sources, caller)
                .await?;
            if let Some(e) = unanswered.into_iter().next() {
                return Err(e.into());
            }
            // A source answering an image-level C-FIND may leave the higher levels' keys out
            // (PS3.4 C.4.1.3.1.1); the row belongs to this study and series.
            instances.extend(found.into_iter().map(|mut m| {
                m.entry(STUDY_INSTANCE_UID)
                    .or_insert_with(|| study_uid.to_string());
                m.entry(SERIES_INSTANCE_UID)
                    .or_insert_with(|| series_uid.clone());
                for (tag, value) in &row {
                    m.entry(*tag).or_insert_with(|| value.clone());
                }
                m
            }));
        }
        Ok(instances)
    }

    /// Before a FindDocuments for `bsn` is answered (gateway mode): publish each study of the
    /// patient that a source of the XDS front reports and the registry has no manifest of.
    /// Failures are logged and leave the answer to what is published already.
    pub(super) async fn publish_reported(
        &self,
        registry: &Arc<dyn Registry>,
        bsn: &str,
        caller: &Caller,
    ) {
        let sources = self.xds_sources();
        if sources.is_empty() || !crate::trust::policy::is_bsn(bsn) {
            return;
        }
        let patient_attr = indexed_attr_by_keyword("PatientID").expect("indexed");
        let query =
            Query::new(Level::Study).with_key(patient_attr, Matcher::Single(bsn.to_string()));
        let studies = match self
            .merge_find(&query, STUDIES_PER_PATIENT, &sources, caller)
            .await
        {
            Ok((studies, _unanswered)) => studies,
            Err(e) => {
                tracing::warn!(error = %e, "XDS-I: cannot ask the PACS for the patient's studies");
                return;
            }
        };
        for study in studies {
            let Some(study_uid) = study.get(&STUDY_INSTANCE_UID) else {
                continue;
            };
            match registry.is_published(study_uid).await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(study = %study_uid, error = %e, "XDS-I: cannot read the publication");
                    continue;
                }
            }
            let instances = match self.study_instances(study_uid, caller).await {
                Ok(instances) => instances,
                Err(e) => {
                    tracing::warn!(study = %study_uid, error = %e, "XDS-I: cannot list a PACS study");
                    continue;
                }
            };
            if let Err(e) = registry.publish_reported(&study, &instances).await {
                tracing::warn!(study = %study_uid, error = %e, "XDS-I: a PACS study was not published");
            }
        }
    }
}
