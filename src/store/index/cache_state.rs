//! The cache state of a study fetched from the local PACS (gateway mode): what completeness,
//! refresh and least-recently-used eviction decide on.

/// What the cache knows of a study fetched from the PACS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedStudy {
    pub study_instance_uid: String,
    /// Instances the PACS reported when last checked.
    pub pacs_instances: u64,
    /// The cache held all of them after a fetch.
    pub complete: bool,
    /// Unix seconds.
    pub checked_at: i64,
    pub last_access: i64,
}
