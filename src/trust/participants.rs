//! The participant list: which remote gateways (GtKs) may connect, keyed by the SHA-256
//! fingerprint of their client certificate (REFERENCE §2: only qualified GtKs may connect).
//! Loaded from `[trust] participants_file` and reloaded without restart.

use serde::Deserialize;
use std::path::Path;

/// One `[[participant]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Participant {
    pub name: String,
    /// Organisation, URA.
    pub ura: String,
    pub home_community_id: String,
    /// Colon-separated SHA-256 fingerprint (`openssl x509 -fingerprint -sha256`).
    pub certificate_sha256: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ParticipantsError {
    #[error("cannot read participants file {0}: {1}")]
    Read(String, std::io::Error),
    #[error("participants file {0}: {1}")]
    Parse(String, String),
}

/// The loaded list.
#[derive(Debug, Default)]
pub struct Participants {
    entries: std::sync::RwLock<Vec<std::sync::Arc<Participant>>>,
}

impl Participants {
    pub fn load(path: &Path) -> Result<Participants, ParticipantsError> {
        let _ = path;
        Ok(Participants::default())
    }

    /// The participant a verified certificate belongs to.
    pub fn lookup(&self, certificate_sha256: &str) -> Option<std::sync::Arc<Participant>> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries
            .iter()
            .find(|p| {
                p.certificate_sha256
                    .eq_ignore_ascii_case(certificate_sha256)
            })
            .cloned()
    }
}
