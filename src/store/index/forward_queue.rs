//! The queue of instances received by STOW-RS that wait to be forwarded to the PACS
//! (gateway mode).

/// One instance waiting to be (or that was) forwarded to the PACS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardJob {
    pub id: i64,
    pub sop_instance_uid: String,
    pub study_instance_uid: String,
    /// Who sent it to us (the STOW-RS caller).
    pub sender: String,
    /// `queued`, `done` or `failed` (gave up).
    pub state: String,
    pub attempts: i64,
    /// Unix seconds.
    pub next_attempt_at: i64,
    pub last_error: String,
    pub created_at: String,
}
