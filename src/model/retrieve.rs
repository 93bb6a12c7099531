//! The retrieve model: which instances a C-MOVE / C-GET / WADO-RS request selects
//! (unique-key matching, PS3.4 C.4.2.1.4).

use super::query::Level;

/// Instances selected by unique keys. Empty lists at a level mean "no constraint there",
/// but at least one list is non-empty for a valid selection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    pub patient_ids: Vec<String>,
    pub study_uids: Vec<String>,
    pub series_uids: Vec<String>,
    pub sop_instance_uids: Vec<String>,
}

impl Selection {
    pub fn is_empty(&self) -> bool {
        self.patient_ids.is_empty()
            && self.study_uids.is_empty()
            && self.series_uids.is_empty()
            && self.sop_instance_uids.is_empty()
    }

    /// Does the selection name this instance? (An empty list at a level constrains nothing.)
    pub fn contains(&self, loc: &InstanceLocation) -> bool {
        let within = |list: &[String], uid: &str| list.is_empty() || list.iter().any(|u| u == uid);
        within(&self.patient_ids, &loc.patient_id)
            && within(&self.study_uids, &loc.study_instance_uid)
            && within(&self.series_uids, &loc.series_instance_uid)
            && within(&self.sop_instance_uids, &loc.sop_instance_uid)
    }

    /// The deepest level the selection names.
    pub fn level(&self) -> Level {
        if !self.sop_instance_uids.is_empty() {
            Level::Image
        } else if !self.series_uids.is_empty() {
            Level::Series
        } else if !self.study_uids.is_empty() {
            Level::Study
        } else {
            Level::Patient
        }
    }
}

/// Where a selected instance lives, with what a sender needs to offer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceLocation {
    pub patient_id: String,
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub sop_instance_uid: String,
    pub sop_class_uid: String,
    pub transfer_syntax_uid: String,
    /// Key of the blob in the blob store (a relative path for the filesystem store).
    pub blob_key: String,
    pub size_bytes: u64,
}
