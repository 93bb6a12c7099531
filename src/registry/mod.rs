//! The XDS-I.b registry and repository of this gateway (issue 14), on the index database.
//!
//! - [`XdsRegistry`]: the registry behind [`crate::core::Registry`]: DocumentEntries,
//!   SubmissionSets and Associations (HasMember, RPLC) stored through the index
//!   ([`crate::store::index::registry`], tables `xds_object`, `xds_association`,
//!   `xds_publication`), and the stored queries over them ([`stored`]).
//! - [`kos`]: the study's XDS-I manifest, a Key Object Selection document (PS3.3 A.35.4, RAD
//!   TF-3 4.68) referencing every instance per series, with Retrieve AE Title and Retrieve
//!   Location UID.
//! - [`metadata`]: the DocumentEntry and SubmissionSet of a published KOS (ITI TF-3 4.2.3.2,
//!   4.2.3.3; the Twiin fields of REFERENCE §3).
//! - [`publish`]: the background publisher: studies without a new instance for
//!   `xds.quiet_secs`, never published or changed since, get a new KOS (stored through
//!   `store::ingest::persist`, like any instance) and a new entry; the old one is Deprecated
//!   and replaced (RPLC). Studies without a valid BSN are not published.
//!
//! The fronts reach the registry only through the core (`Core::registry_query`,
//! `Core::registry_document`).

pub mod kos;
pub mod metadata;
pub mod publish;
pub mod stored;

use crate::config::{Config, XdsCode};
use crate::core::registry::{bare_patient_id, PublishedDocument, Registry, RegistryAnswer};
use crate::ebrim::{self, Association, Code, ObjectKind, RegistryObject, StoredQuery};
use crate::model::query::Match;
use crate::model::Selection;
use crate::store::index::{AssociationRow, RegistryLookup, RegistryRow};
use crate::store::{BlobStore, Index, IndexError};
use async_trait::async_trait;
use std::sync::Arc;

/// What publication and the answers need of the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub home_community_id: String,
    pub repository_unique_id: String,
    pub source_id: String,
    pub quiet_secs: u64,
    pub organisation_name: String,
    /// `trust.own_ura`: the organisation in authorInstitution.
    pub own_ura: String,
    /// The DICOM AE title instances are retrieved from (the KOS Retrieve AE Title).
    pub ae_title: String,
    pub class_code: Code,
    pub type_code: Code,
    pub confidentiality_code: Code,
    pub healthcare_facility_type_code: Code,
    pub practice_setting_code: Code,
    pub content_type_code: Code,
    /// `xds.publish_demographics`: name, birth date and sex in sourcePatientInfo.
    pub publish_demographics: bool,
}

fn code(c: &XdsCode) -> Code {
    Code::new(&c.code, &c.scheme, &c.display)
}

impl Settings {
    pub fn from_config(config: &Config) -> Settings {
        let x = &config.xds;
        Settings {
            home_community_id: x.home_community_id.clone(),
            repository_unique_id: x.repository_unique_id.clone(),
            source_id: x.source_id.clone(),
            quiet_secs: x.quiet_secs,
            organisation_name: x.organisation_name.clone(),
            own_ura: config.trust.own_ura.clone(),
            ae_title: config.dimse.ae_title.clone(),
            class_code: code(&x.class_code),
            type_code: code(&x.type_code),
            confidentiality_code: code(&x.confidentiality_code),
            healthcare_facility_type_code: code(&x.healthcare_facility_type_code),
            practice_setting_code: code(&x.practice_setting_code),
            content_type_code: code(&x.content_type_code),
            publish_demographics: x.publish_demographics,
        }
    }
}

/// The registry on the index.
#[derive(Debug)]
pub struct XdsRegistry {
    index: Arc<dyn Index>,
    settings: Arc<Settings>,
    /// Publishes the studies the PACS reports when the core asks (gateway mode).
    publisher: publish::Publisher,
}

impl XdsRegistry {
    pub fn new(
        index: Arc<dyn Index>,
        blobs: BlobStore,
        settings: Arc<Settings>,
        transfers: Option<Arc<crate::core::transfers::Board>>,
    ) -> Arc<XdsRegistry> {
        let publisher = publish::Publisher {
            index: index.clone(),
            blobs,
            settings: settings.clone(),
            owner: publish::Publisher::owner_id(),
            holdings: None,
            transfers,
        };
        Arc::new(XdsRegistry {
            index,
            settings,
            publisher,
        })
    }

    pub fn settings(&self) -> &Arc<Settings> {
        &self.settings
    }
}

#[async_trait]
impl Registry for XdsRegistry {
    fn home_community_id(&self) -> &str {
        &self.settings.home_community_id
    }

    async fn query(&self, query: &StoredQuery) -> Result<RegistryAnswer, String> {
        stored::evaluate(self.index.as_ref(), query)
            .await
            .map_err(|e| e.to_string())
    }

    async fn is_published(&self, study_uid: &str) -> Result<bool, String> {
        self.publisher.is_published(study_uid).await
    }

    async fn publish_reported(&self, study: &Match, instances: &[Match]) -> Result<(), String> {
        match self.publisher.publish_reported(study, instances).await? {
            publish::Outcome::Published { .. } | publish::Outcome::Unchanged { .. } => Ok(()),
            publish::Outcome::Skipped(why) => {
                tracing::info!(why, "XDS-I: a study the PACS reports was not published");
                Ok(())
            }
        }
    }

    async fn document(&self, unique_id: &str) -> Result<Option<PublishedDocument>, String> {
        let lookup = RegistryLookup::UniqueIds(vec![unique_id.to_string()]);
        let rows = self
            .index
            .registry_objects(&lookup)
            .await
            .map_err(|e| e.to_string())?;
        let Some(entry) = rows
            .iter()
            .filter_map(object_of)
            .find(|o| o.kind == ObjectKind::DocumentEntry)
        else {
            return Ok(None);
        };
        let selection = Selection {
            sop_instance_uids: vec![unique_id.to_string()],
            ..Default::default()
        };
        let located = self
            .index
            .locate(&selection)
            .await
            .map_err(|e| e.to_string())?;
        let Some(instance) = located.into_iter().next() else {
            return Ok(None);
        };
        Ok(Some(PublishedDocument {
            entry_uuid: entry.id.clone(),
            unique_id: unique_id.to_string(),
            status: entry.status.urn().to_string(),
            mime_type: entry.mime_type.clone().unwrap_or_default(),
            patient_id: bare_patient_id(entry.patient_id().unwrap_or("")).to_string(),
            study_instance_uid: instance.study_instance_uid,
            series_instance_uid: instance.series_instance_uid,
            sop_instance_uid: instance.sop_instance_uid,
            repository_unique_id: entry
                .slot_value("repositoryUniqueId")
                .unwrap_or(&self.settings.repository_unique_id)
                .to_string(),
        }))
    }
}

/// A stored row as its ebRIM object (the row's status wins); `None` for an unreadable row
/// (logged).
pub(crate) fn object_of(row: &RegistryRow) -> Option<RegistryObject> {
    match serde_json::from_str::<RegistryObject>(&row.metadata) {
        Ok(mut o) => {
            if let Some(status) = ebrim::Status::from_urn(&row.status) {
                o.status = status;
            }
            Some(o)
        }
        Err(e) => {
            tracing::error!(entry = %row.entry_uuid, error = %e, "unreadable registry object");
            None
        }
    }
}

/// A stored association as its ebRIM object.
pub(crate) fn association_of(row: &AssociationRow) -> Option<Association> {
    match serde_json::from_str::<Association>(&row.metadata) {
        Ok(mut a) => {
            if let Some(status) = ebrim::Status::from_urn(&row.status) {
                a.status = status;
            }
            Some(a)
        }
        Err(e) => {
            tracing::error!(entry = %row.entry_uuid, error = %e, "unreadable registry association");
            None
        }
    }
}

/// An ebRIM object as the row that stores it.
pub(crate) fn row_of(object: &RegistryObject, study_uid: &str) -> RegistryRow {
    RegistryRow {
        entry_uuid: object.id.clone(),
        kind: object.kind.name().to_string(),
        unique_id: object.unique_id().unwrap_or("").to_string(),
        patient_id: object.patient_id().unwrap_or("").to_string(),
        status: object.status.urn().to_string(),
        study_instance_uid: study_uid.to_string(),
        metadata: serde_json::to_string(object).unwrap_or_default(),
    }
}

/// An association as the row that stores it.
pub(crate) fn association_row(a: &Association) -> AssociationRow {
    AssociationRow {
        entry_uuid: a.id.clone(),
        association_type: a.assoc_type.clone(),
        source_uuid: a.source.clone(),
        target_uuid: a.target.clone(),
        status: a.status.urn().to_string(),
        metadata: serde_json::to_string(a).unwrap_or_default(),
    }
}

/// Registry objects by lookup, readable ones only.
pub(crate) async fn objects(
    index: &dyn Index,
    lookup: &RegistryLookup,
) -> Result<Vec<RegistryObject>, IndexError> {
    Ok(index
        .registry_objects(lookup)
        .await?
        .iter()
        .filter_map(object_of)
        .collect())
}

/// Associations with one end in `uuids`.
pub(crate) async fn associations(
    index: &dyn Index,
    uuids: &[String],
) -> Result<Vec<Association>, IndexError> {
    Ok(index
        .registry_associations(uuids)
        .await?
        .iter()
        .filter_map(association_of)
        .collect())
}
