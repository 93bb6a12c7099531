//! What the remote source knows of other gateways' studies: each study found by ITI-38
//! (which gateway holds it, for which patient, its manifest's ids and the study-level row),
//! kept in memory and in `remote-studies.jsonl` in the data directory, so that a C-MOVE
//! that names only a Study Instance UID finds its gateway, also after a restart (issue 15
//! §6); and the instances each manifest references, once read.
//!
//! Study rows come from DocumentEntries (ITI TF-3 4.2.3.2; RAD TF-3 4.68.4.1.2.3 for the
//! manifest's metadata): the study from `referenceIdList`, the patient from `patientId`,
//! date and time from `serviceStartTime`, the modalities from `eventCodeList`.

use super::reports::RemoteReport;
use crate::ebrim::{ns, RegistryObject};
use crate::model::query::{Level, Match, Matcher, Query};
use dicom_core::Tag;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub use super::reports::KOS_FORMAT;
/// DCM: the coding scheme of the modalities in eventCodeList.
const DCM_SCHEME: &str = "1.2.840.10008.2.16.4";

pub const PATIENT_ID: Tag = Tag(0x0010, 0x0020);
pub const PATIENT_NAME: Tag = Tag(0x0010, 0x0010);
pub const STUDY_UID: Tag = Tag(0x0020, 0x000D);

/// A study another gateway holds, as its ITI-38 answer described it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteStudy {
    pub study_uid: String,
    /// The BSN.
    pub patient_id: String,
    /// The participant's name (`[[participant]] name`).
    pub peer: String,
    pub home: String,
    pub repository: String,
    /// The KOS manifest's uniqueId (its SOP Instance UID).
    pub manifest: String,
    /// The study-level row, `(group, element, value)`.
    pub row: Vec<(u16, u16, String)>,
    /// The reports the peer publishes for the study as documents of their own
    /// ([`super::reports`]), fetched by ITI-39 unless the manifest references them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reports: Vec<RemoteReport>,
}

impl RemoteStudy {
    /// From a DocumentEntry of a KOS manifest; `None` for any other document or one that
    /// names no study.
    pub fn from_entry(
        entry: &RegistryObject,
        peer: &str,
        home: Option<&str>,
    ) -> Option<RemoteStudy> {
        if !super::reports::is_kos(entry) {
            return None;
        }
        Self::described_by(entry, peer, home)
    }

    /// The study a report's DocumentEntry names ([`RemoteReport::from_entry`]), known by
    /// that report only (the peer publishes no manifest for it): no manifest, the report.
    pub fn of_report(
        entry: &RegistryObject,
        peer: &str,
        home: Option<&str>,
        report: RemoteReport,
    ) -> Option<RemoteStudy> {
        let mut study = Self::described_by(entry, peer, home)?;
        study.manifest = String::new();
        study.reports = vec![report];
        Some(study)
    }

    /// The study a DocumentEntry names (its referenceIdList), with the entry as manifest.
    fn described_by(entry: &RegistryObject, peer: &str, home: Option<&str>) -> Option<RemoteStudy> {
        let references = entry.slot(ns::REFERENCE_ID_LIST);
        let reference = |kind: &str| {
            references.iter().find_map(|r| {
                let mut parts = r.split('^');
                let value = parts.next()?.trim();
                (r.ends_with(kind) && !value.is_empty()).then(|| value.to_string())
            })
        };
        let study_uid =
            reference(ns::REF_STUDY_UID).or_else(|| reference(ns::REF_STUDY_UID_2016))?;
        let patient_id = entry
            .patient_id()?
            .split('^')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        let manifest = entry.unique_id()?.trim().to_string();
        let repository = entry.slot_value("repositoryUniqueId")?.trim().to_string();
        let mut row: Vec<(u16, u16, String)> = vec![
            (0x0010, 0x0020, patient_id.clone()),
            (0x0020, 0x000D, study_uid.clone()),
        ];
        if let Some(accession) = reference(ns::REF_ACCESSION) {
            row.push((0x0008, 0x0050, accession));
        }
        if let Some(start) = entry.slot_value("serviceStartTime") {
            let digits: String = start.chars().take_while(char::is_ascii_digit).collect();
            if digits.len() >= 8 {
                row.push((0x0008, 0x0020, digits[..8].to_string()));
            }
            if digits.len() > 8 {
                row.push((0x0008, 0x0030, digits[8..].to_string()));
            }
        }
        if let Some(title) = entry.name.as_deref().filter(|t| !t.trim().is_empty()) {
            row.push((0x0008, 0x1030, title.to_string()));
        }
        let modalities: Vec<&str> = entry
            .codes(ns::DE_EVENT_CODE)
            .into_iter()
            .filter(|(_, scheme)| *scheme == DCM_SCHEME)
            .map(|(code, _)| code)
            .collect();
        if !modalities.is_empty() {
            row.push((0x0008, 0x0061, modalities.join("\\")));
        }
        // sourcePatientInfo, when the peer publishes demographics (PID-5, -7, -8).
        for info in entry.slot("sourcePatientInfo") {
            let tag = match info.split_once('|') {
                Some(("PID-5", v)) => Some((0x0010, 0x0010, v)),
                Some(("PID-7", v)) => Some((0x0010, 0x0030, v)),
                Some(("PID-8", v)) => Some((0x0010, 0x0040, v)),
                _ => None,
            };
            if let Some((g, e, v)) = tag {
                let v = v.split('^').take(5).collect::<Vec<_>>().join("^");
                row.push((g, e, v.trim_end_matches('^').to_string()));
            }
        }
        Some(RemoteStudy {
            study_uid,
            patient_id,
            peer: peer.to_string(),
            home: home.unwrap_or_default().to_string(),
            repository,
            manifest,
            row,
            reports: Vec::new(),
        })
    }

    /// Add a report of the study (once).
    pub fn add_report(&mut self, report: RemoteReport) {
        if !self.reports.iter().any(|r| r.unique_id == report.unique_id) {
            self.reports.push(report);
        }
    }

    /// The study-level row the core merges.
    pub fn to_match(&self) -> Match {
        self.row
            .iter()
            .map(|(g, e, v)| (Tag(*g, *e), v.clone()))
            .collect()
    }
}

/// Does a study-level row satisfy the query's keys (PS3.4 C.2.2.2)? A key on an attribute
/// the row lacks matches only for the patient's name, which peers leave out by default.
pub fn matches(query: &Query, row: &Match) -> bool {
    if query.level != Level::Study && query.level != Level::Patient {
        return false;
    }
    query.keys.iter().all(|key| {
        let Some(value) = row.get(&key.attr.tag) else {
            return key.attr.tag == PATIENT_NAME
                || key.attr.level != Level::Study && key.attr.level != Level::Patient;
        };
        match &key.matcher {
            Matcher::Universal | Matcher::Fuzzy(_) => true,
            Matcher::Single(s) => value
                .split('\\')
                .any(|v| v.trim().eq_ignore_ascii_case(s.trim())),
            Matcher::UidList(list) => list.iter().any(|u| u == value),
            Matcher::Wildcard(w) => value.split('\\').any(|v| wildcard(w, v.trim())),
            Matcher::Range { from, to } => {
                from.as_deref().is_none_or(|f| value.as_str() >= f)
                    && to.as_deref().is_none_or(|t| value.as_str() <= t)
            }
        }
    })
}

/// `*` and `?` (PS3.4 C.2.2.2.4), case-insensitive.
fn wildcard(pattern: &str, value: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let v: Vec<char> = value.to_lowercase().chars().collect();
    let (mut pi, mut vi, mut star, mut mark) = (0, 0, None, 0);
    while vi < v.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == v[vi]) {
            pi += 1;
            vi += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = vi;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            vi = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// One instance a manifest references: `(series, SOP class, SOP instance)`.
pub type Referenced = (String, String, String);

/// The studies found so far and the manifests read.
#[derive(Debug)]
pub struct KnownStudies {
    file: Option<PathBuf>,
    studies: Mutex<HashMap<String, RemoteStudy>>,
    manifests: Mutex<HashMap<String, Arc<Vec<Referenced>>>>,
}

impl KnownStudies {
    /// Load `file` (JSON lines; the last line of a study wins), if it exists.
    pub fn open(file: Option<PathBuf>) -> KnownStudies {
        let mut studies = HashMap::new();
        if let Some(text) = file.as_ref().and_then(|f| std::fs::read_to_string(f).ok()) {
            for line in text.lines() {
                match serde_json::from_str::<RemoteStudy>(line) {
                    Ok(s) => {
                        studies.insert(s.study_uid.clone(), s);
                    }
                    Err(e) => tracing::warn!(error = %e, "remote-studies: a line cannot be read"),
                }
            }
        }
        KnownStudies {
            file,
            studies: Mutex::new(studies),
            manifests: Mutex::new(HashMap::new()),
        }
    }

    pub fn get(&self, study_uid: &str) -> Option<RemoteStudy> {
        self.studies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(study_uid)
            .cloned()
    }

    /// Remember `study`; written to the file when new or changed.
    pub fn remember(&self, study: &RemoteStudy) {
        let changed = {
            let mut studies = self.studies.lock().unwrap_or_else(|e| e.into_inner());
            let changed = studies.get(&study.study_uid) != Some(study);
            if changed {
                // A new manifest (the study changed at the peer): read it again.
                self.manifests
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&study.study_uid);
                studies.insert(study.study_uid.clone(), study.clone());
            }
            changed
        };
        let Some(file) = self.file.as_ref().filter(|_| changed) else {
            return;
        };
        let line = match serde_json::to_string(study) {
            Ok(l) => l,
            Err(_) => return,
        };
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = written {
            tracing::warn!(error = %e, file = %file.display(), "cannot remember a remote study");
        }
    }

    pub fn manifest(&self, study_uid: &str) -> Option<Arc<Vec<Referenced>>> {
        self.manifests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(study_uid)
            .cloned()
    }

    pub fn set_manifest(
        &self,
        study_uid: &str,
        referenced: Vec<Referenced>,
    ) -> Arc<Vec<Referenced>> {
        let referenced = Arc::new(referenced);
        self.manifests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(study_uid.to_string(), referenced.clone());
        referenced
    }
}

/// The instances a KOS manifest references (PS3.3 C.17.6, Current Requested Procedure
/// Evidence Sequence), from its Part 10 bytes.
pub fn read_manifest(bytes: &[u8], study_uid: &str) -> Result<Vec<Referenced>, String> {
    use dicom_dictionary_std::tags;
    let body = match bytes.get(128..132) {
        Some(b"DICM") => &bytes[128..],
        _ => bytes,
    };
    let obj = dicom_object::from_reader(body).map_err(|e| format!("not a DICOM file: {e}"))?;
    let text = |item: &dicom_object::InMemDicomObject, tag| {
        item.element(tag)
            .ok()
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
    };
    let mut out = Vec::new();
    let evidence = obj
        .element(tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE)
        .map_err(|e| format!("no evidence sequence: {e}"))?;
    for study in evidence.items().unwrap_or_default() {
        if text(study, tags::STUDY_INSTANCE_UID).as_deref() != Some(study_uid) {
            continue;
        }
        let Ok(series_seq) = study.element(tags::REFERENCED_SERIES_SEQUENCE) else {
            continue;
        };
        for series in series_seq.items().unwrap_or_default() {
            let Some(series_uid) = text(series, tags::SERIES_INSTANCE_UID) else {
                continue;
            };
            let Ok(sops) = series.element(tags::REFERENCED_SOP_SEQUENCE) else {
                continue;
            };
            for sop in sops.items().unwrap_or_default() {
                if let (Some(class), Some(instance)) = (
                    text(sop, tags::REFERENCED_SOP_CLASS_UID),
                    text(sop, tags::REFERENCED_SOP_INSTANCE_UID),
                ) {
                    out.push((series_uid.clone(), class, instance));
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_as_dicom_says() {
        assert!(wildcard("CT*", "ct thorax"));
        assert!(wildcard("*thorax", "CT thorax"));
        assert!(wildcard("C?", "CT"));
        assert!(!wildcard("MR*", "CT"));
    }

    #[test]
    fn remembered_studies_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("remote-studies.jsonl");
        let study = RemoteStudy {
            study_uid: "1.2.3".into(),
            patient_id: "999999990".into(),
            peer: "GtK B".into(),
            home: "urn:oid:1.2".into(),
            repository: "1.2.9".into(),
            manifest: "1.2.3.4".into(),
            row: vec![(0x0020, 0x000D, "1.2.3".into())],
            reports: Vec::new(),
        };
        KnownStudies::open(Some(file.clone())).remember(&study);
        assert_eq!(KnownStudies::open(Some(file)).get("1.2.3"), Some(study));
    }
}
