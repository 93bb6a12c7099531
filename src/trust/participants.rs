//! The participant list: which remote gateways (GtKs) may connect, keyed by the SHA-256
//! fingerprint of their client certificate (REFERENCE §2: only qualified GtKs may connect).
//! Loaded from `[trust] participants_file` and reloaded without restart (see
//! `trust::tls::reload`).
//!
//! ```toml
//! [[participant]]
//! name = "Ziekenhuis Oost"
//! ura = "12345678"
//! home_community_id = "urn:oid:2.16.840.1.113883.2.4.6.6.1"
//! certificate_sha256 = "AB:CD:...:EF"   # openssl x509 -noout -fingerprint -sha256
//! # Its gateway's endpoints, for our initiating side (`[remote]`), optional:
//! query_url = "https://gtk.oost.example/xca/query"        # ITI-38
//! retrieve_url = "https://gtk.oost.example/xca/retrieve"  # RAD-75, ITI-39
//! dicomweb_url = "https://gtk.oost.example/dicomweb"      # WADO-RS ([remote] prefer_wado_rs)
//! ```
//!
//! The fingerprint is checked both ways: a client certificate that connects to us, and the
//! server certificate of its gateway when we call it.

use serde::Deserialize;
use std::path::Path;
use std::sync::{Arc, RwLock};

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
    /// Its ITI-38 Cross Gateway Query endpoint (https).
    #[serde(default)]
    pub query_url: Option<String>,
    /// Its RAD-75 / ITI-39 Cross Gateway Retrieve endpoint (https).
    #[serde(default)]
    pub retrieve_url: Option<String>,
    /// Its DICOMweb base URL, if it offers one: the instances are fetched from it by WADO-RS
    /// instead of RAD-75 where `[remote] prefer_wado_rs` allows.
    #[serde(default)]
    pub dicomweb_url: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ParticipantsError {
    #[error("cannot read participants file {0}: {1}")]
    Read(String, std::io::Error),
    #[error("participants file {0}: {1}")]
    Parse(String, String),
}

/// The file's shape.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    participant: Vec<Participant>,
}

/// The loaded list.
#[derive(Debug, Default)]
pub struct Participants {
    entries: RwLock<Vec<Arc<Participant>>>,
}

impl Participants {
    pub fn load(path: &Path) -> Result<Participants, ParticipantsError> {
        Ok(Participants {
            entries: RwLock::new(read(path)?),
        })
    }

    /// Read the file again and replace the list; on error the old list stays. Returns the
    /// number of participants now loaded.
    pub fn reload(&self, path: &Path) -> Result<usize, ParticipantsError> {
        let fresh = read(path)?;
        let n = fresh.len();
        *self.entries.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(n)
    }

    /// A list from entries (tests, tools).
    pub fn from_entries(entries: Vec<Participant>) -> Participants {
        Participants {
            entries: RwLock::new(entries.into_iter().map(Arc::new).collect()),
        }
    }

    /// The participant a verified certificate belongs to.
    pub fn lookup(&self, certificate_sha256: &str) -> Option<Arc<Participant>> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries
            .iter()
            .find(|p| super::tls::same_fingerprint(&p.certificate_sha256, certificate_sha256))
            .cloned()
    }

    /// Every participant, as loaded now.
    pub fn all(&self) -> Vec<Arc<Participant>> {
        self.entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn read(path: &Path) -> Result<Vec<Arc<Participant>>, ParticipantsError> {
    let name = path.display().to_string();
    let text =
        std::fs::read_to_string(path).map_err(|e| ParticipantsError::Read(name.clone(), e))?;
    parse(&text).map_err(|problem| ParticipantsError::Parse(name, problem))
}

fn parse(text: &str) -> Result<Vec<Arc<Participant>>, String> {
    let file: File = toml_from_str(text)?;
    let mut seen: Vec<String> = Vec::new();
    for (i, p) in file.participant.iter().enumerate() {
        let at = |field: &str, problem: &str| format!("participant[{i}].{field}: {problem}");
        for (field, value) in [
            ("name", &p.name),
            ("ura", &p.ura),
            ("home_community_id", &p.home_community_id),
        ] {
            if value.trim().is_empty() {
                return Err(at(field, "must not be empty"));
            }
        }
        let hex: String = p
            .certificate_sha256
            .trim()
            .chars()
            .filter(|c| *c != ':')
            .collect();
        if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(at(
                "certificate_sha256",
                "not a SHA-256 fingerprint (32 hex bytes, as `openssl x509 -fingerprint -sha256` prints)",
            ));
        }
        // Calls to other gateways are mutual TLS only (REFERENCE §2).
        for (field, url) in [
            ("query_url", &p.query_url),
            ("retrieve_url", &p.retrieve_url),
            ("dicomweb_url", &p.dicomweb_url),
        ] {
            if url.as_deref().is_some_and(|u| !u.starts_with("https://")) {
                return Err(at(field, "must be an https:// URL"));
            }
        }
        let hex = hex.to_ascii_uppercase();
        if seen.contains(&hex) {
            return Err(at("certificate_sha256", "listed twice"));
        }
        seen.push(hex);
    }
    Ok(file.participant.into_iter().map(Arc::new).collect())
}

/// TOML through figment (already a dependency), which reports the line of an error.
fn toml_from_str(text: &str) -> Result<File, String> {
    use figment::providers::{Format, Toml};
    figment::Figment::from(Toml::string(text))
        .extract::<File>()
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99";

    fn entry(fp: &str) -> String {
        format!(
            "[[participant]]\nname = \"Oost\"\nura = \"12345678\"\nhome_community_id = \"urn:oid:1.2.3\"\ncertificate_sha256 = \"{fp}\"\n"
        )
    }

    #[test]
    fn lookup_ignores_case_and_colons() {
        let list = parse(&entry(FP)).unwrap();
        let p = Participants {
            entries: RwLock::new(list),
        };
        assert_eq!(p.lookup(&FP.to_lowercase()).unwrap().ura, "12345678");
        assert!(p.lookup(&FP.replace(':', "")).is_some());
        assert!(p.lookup(&FP.replace("AA", "AB")).is_none());
    }

    #[test]
    fn bad_entries_are_named() {
        assert!(parse(&entry("AB:CD"))
            .unwrap_err()
            .contains("participant[0].certificate_sha256"));
        let twice = format!("{}{}", entry(FP), entry(&FP.to_lowercase()));
        assert!(parse(&twice).unwrap_err().contains("listed twice"));
        assert!(parse("[[participant]]\nname = \"x\"\n").is_err());
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn reload_keeps_the_old_list_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(&path, entry(FP)).unwrap();
        let p = Participants::load(&path).unwrap();
        std::fs::write(&path, "[[participant]]\nname = ").unwrap();
        assert!(p.reload(&path).is_err());
        assert_eq!(p.len(), 1);
        std::fs::write(&path, "").unwrap();
        assert_eq!(p.reload(&path).unwrap(), 0);
        assert!(p.lookup(FP).is_none());
    }
}
