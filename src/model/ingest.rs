//! The ingest model: what a sender says about an instance it stores ([`Expected`]) and why an
//! instance was not stored ([`IngestFailure`]). The fronts (C-STORE, STOW-RS) speak it to the
//! core, the store checks and reports in it; it knows nothing of either.

/// What the sender claimed about the instance; each given value must match the data set.
#[derive(Debug, Clone, Default)]
pub struct Expected<'a> {
    /// SOP Class UID of the command (C-STORE) — a mismatch is warning B007, not a failure.
    pub sop_class: Option<&'a str>,
    /// SOP Instance UID of the command (C-STORE).
    pub sop_instance: Option<&'a str>,
    /// Study Instance UID of the request URL (STOW-RS `/studies/{study}`).
    pub study_uid: Option<&'a str>,
}

/// Why an instance was not stored: the C-STORE status (PS3.4 B.2.3), also used as the STOW-RS
/// FailureReason (PS3.18 10.5.3), and a readable reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestFailure {
    pub status: u16,
    pub reason: String,
    /// SOP Class and Instance UIDs from the file's meta group, when it could be read (so that
    /// a STOW-RS FailedSOPSequence item can name the instance).
    pub sop_class: String,
    pub sop_instance: String,
}

impl IngestFailure {
    pub fn new(status: u16, reason: impl Into<String>) -> Self {
        IngestFailure {
            status,
            reason: reason.into(),
            sop_class: String::new(),
            sop_instance: String::new(),
        }
    }

    /// The same failure, naming the instance (from its meta group).
    pub fn naming(mut self, sop_class: &str, sop_instance: &str) -> Self {
        self.sop_class = sop_class.trim_end_matches('\0').into();
        self.sop_instance = sop_instance.trim_end_matches('\0').into();
        self
    }
}
