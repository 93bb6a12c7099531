//! The XDS-I registry's rows (`crate::registry` reads and writes them through the
//! [`Index`](super::Index)): registry objects and associations as JSON with the columns the
//! stored queries select on, the publication of each study, and the arrival time and count
//! the publisher reads to find complete, unpublished or changed studies.

/// A DocumentEntry, SubmissionSet or Folder (`kind`), its metadata the ebRIM object as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryRow {
    pub entry_uuid: String,
    /// `DocumentEntry`, `SubmissionSet` or `Folder`.
    pub kind: String,
    pub unique_id: String,
    /// XDS form (`<BSN>^^^&2.16.840.1.113883.2.4.6.3&ISO`).
    pub patient_id: String,
    /// availabilityStatus URN.
    pub status: String,
    /// The study it publishes ('' for a SubmissionSet).
    pub study_instance_uid: String,
    pub metadata: String,
}

/// An Association between two registry objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssociationRow {
    pub entry_uuid: String,
    pub association_type: String,
    pub source_uuid: String,
    pub target_uuid: String,
    pub status: String,
    pub metadata: String,
}

/// Which registry objects to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryLookup {
    /// Every object of one kind of one patient (XDS form).
    Patient { kind: String, patient_id: String },
    /// By entryUUID.
    Uuids(Vec<String>),
    /// By uniqueId.
    UniqueIds(Vec<String>),
    /// Every object publishing one study.
    Study(String),
}

/// A study's arrivals: when its last instance came, and how many came in all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StudyArrival {
    pub study_instance_uid: String,
    /// Unix seconds.
    pub last_arrival: i64,
    pub arrivals: i64,
}

/// The last publication of a study.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    pub study_instance_uid: String,
    /// The DocumentEntry of the KOS; '' when the study was skipped (no valid BSN).
    pub entry_uuid: String,
    /// The study's arrivals this publication covers.
    pub arrivals: i64,
    /// Unix seconds.
    pub published_at: i64,
}

/// One submission to the registry, written in one transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Submission {
    pub objects: Vec<RegistryRow>,
    pub associations: Vec<AssociationRow>,
    /// entryUUIDs whose status becomes Deprecated (replaced by this submission).
    pub deprecate: Vec<String>,
    pub publication: Option<Publication>,
}
