//! The metadata of a published study (ITI TF-3 4.2.3.2 DocumentEntry, 4.2.3.3 SubmissionSet,
//! with the Twiin fields of REFERENCE §3): what the publisher registers for each KOS.

use super::Settings;
use crate::ebrim::{
    ns, Association, Classification, Code, ExternalIdentifier, ObjectKind, RegistryObject, Slot,
    Status,
};
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};

/// The BSN assigning authority (REFERENCE §2).
pub const BSN_OID: &str = "2.16.840.1.113883.2.4.6.3";
/// The URA assigning authority.
pub const URA_OID: &str = "2.16.528.1.1007.3.3";
/// formatCode of an XDS-I manifest: the KOS SOP Class in DICOM's coding scheme for SOP
/// classes (RAD TF-3 4.68.4.1.2.3.1).
pub const KOS_FORMAT: (&str, &str, &str) = (
    "1.2.840.10008.5.1.4.1.1.88.59",
    "1.2.840.10008.2.6.1",
    "Key Object Selection Document",
);
/// The coding scheme of modalities in eventCodeList (DICOM CID 29, DCM).
pub const MODALITY_SCHEME: &str = "1.2.840.10008.2.16.4";

/// 128 bits that no other call (here or in another process) returns: a hash of the time,
/// the process, a counter and `salt`.
fn unique_bits(salt: &str) -> u128 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = Sha256::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    h.update(now.as_nanos().to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    h.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    h.update(salt.as_bytes());
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    // A version 4 UUID's fixed bits (RFC 9562 5.4).
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    u128::from_be_bytes(bytes)
}

/// A new `urn:uuid:…` (entryUUIDs, classification and association ids).
pub fn new_uuid() -> String {
    let b = unique_bits("uuid").to_be_bytes();
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// A new DICOM UID / OID under `2.25` (PS3.5 B.2: the UUID as an integer).
pub fn new_uid() -> String {
    format!("2.25.{}", unique_bits("uid"))
}

/// A BSN: 9 digits passing the 11-test (REFERENCE §2).
pub fn is_bsn(value: &str) -> bool {
    crate::trust::policy::is_bsn(value)
}

/// `<BSN>^^^&2.16.840.1.113883.2.4.6.3&ISO`.
pub fn xds_patient_id(bsn: &str) -> String {
    format!("{bsn}^^^&{BSN_OID}&ISO")
}

/// XDS DTM (UTC, `YYYYMMDDhhmmss`) of Unix seconds.
pub fn dtm(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .map(|t| {
            format!(
                "{:04}{:02}{:02}{:02}{:02}{:02}",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            )
        })
        .unwrap_or_default()
}

/// A study's DICOM date and time as a DTM (`YYYYMMDD[hhmm[ss]]`); `None` without a date.
pub fn study_dtm(date: &str, time: &str) -> Option<String> {
    let date: String = date.chars().filter(char::is_ascii_digit).collect();
    if date.len() != 8 {
        return None;
    }
    let time: String = time
        .split('.')
        .next()
        .unwrap_or("")
        .chars()
        .filter(char::is_ascii_digit)
        .take(6)
        .collect();
    Some(match time.len() {
        0 | 1 | 3 | 5 => date,
        _ => format!("{date}{time}"),
    })
}

/// What the DocumentEntry of a study's KOS says about the study and the file.
#[derive(Debug, Clone, Default)]
pub struct StudyFacts {
    pub bsn: String,
    pub patient_name: String,
    pub birth_date: String,
    pub sex: String,
    pub study_instance_uid: String,
    pub accession_number: String,
    pub study_date: String,
    pub study_time: String,
    pub study_description: String,
    pub modalities: Vec<String>,
}

/// The published KOS file.
#[derive(Debug, Clone)]
pub struct Published {
    pub sop_instance_uid: String,
    /// SHA-1 of the file, lowercase hex.
    pub sha1: String,
    pub size: u64,
    /// Unix seconds.
    pub created: i64,
}

/// SHA-1 (hex) of a document's bytes (ITI TF-3 4.2.3.2.18).
pub fn sha1_hex(bytes: &[u8]) -> String {
    use sha1::Digest as _;
    sha1::Sha1::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The authorInstitution XON of our organisation:
/// `Name^^^^^&2.16.528.1.1007.3.3&ISO^^^^<URA>`.
pub fn author_institution(settings: &Settings) -> String {
    format!(
        "{}^^^^^&{URA_OID}&ISO^^^^{}",
        settings.organisation_name.replace('^', " "),
        settings.own_ura
    )
}

fn author(scheme: &str, settings: &Settings) -> Classification {
    Classification {
        id: new_uuid(),
        scheme: Some(scheme.into()),
        node: String::new(),
        slots: vec![Slot::new(
            "authorInstitution",
            [author_institution(settings)],
        )],
        ..Default::default()
    }
}

/// What kind of document an entry describes: its mimeType and the codes that differ between
/// a study's manifest and its reports.
#[derive(Debug, Clone)]
pub struct DocumentCodes {
    pub mime_type: String,
    pub format: Code,
    pub class_code: Code,
    pub type_code: Code,
    /// The entry's title when the study has no description.
    pub title: String,
}

impl DocumentCodes {
    /// The XDS-I manifest (KOS).
    pub fn manifest(settings: &Settings) -> DocumentCodes {
        DocumentCodes {
            mime_type: "application/dicom".into(),
            format: Code::new(KOS_FORMAT.0, KOS_FORMAT.1, KOS_FORMAT.2),
            class_code: settings.class_code.clone(),
            type_code: settings.type_code.clone(),
            title: "Manifest".into(),
        }
    }

    /// A radiology report (REFERENCE §3, Twiin BB "Metadata radiologisch verslag"): an
    /// encapsulated PDF as `application/pdf` with formatCode `urn:ihe:rad:PDF`, or a DICOM SR
    /// as `application/dicom` with its SOP Class as formatCode; typeCode 722124004.
    pub fn report(settings: &Settings, sop_class: &str) -> DocumentCodes {
        let (mime_type, format) = if sop_class == ENCAPSULATED_PDF {
            (
                "application/pdf",
                Code::new("urn:ihe:rad:PDF", "1.3.6.1.4.1.19376.1.2.3", "PDF"),
            )
        } else {
            (
                "application/dicom",
                Code::new(sop_class, KOS_FORMAT.1, "DICOM Structured Report"),
            )
        };
        DocumentCodes {
            mime_type: mime_type.into(),
            format,
            class_code: settings.class_code.clone(),
            type_code: Code::new(REPORT_TYPE, SNOMED, "Radiology report"),
            title: "Verslag".into(),
        }
    }
}

/// Encapsulated PDF Storage.
pub const ENCAPSULATED_PDF: &str = "1.2.840.10008.5.1.4.1.1.104.1";
/// The report typeCode of Twiin BB "Metadata radiologisch verslag" (SNOMED CT).
pub const REPORT_TYPE: &str = "722124004";
const SNOMED: &str = "2.16.840.1.113883.6.96";

/// Is an instance of this SOP class a report published as its own entry: an encapsulated
/// PDF, or a Basic Text, Enhanced or Comprehensive (3D) SR.
pub fn is_report(sop_class: &str) -> bool {
    matches!(
        sop_class,
        ENCAPSULATED_PDF
            | "1.2.840.10008.5.1.4.1.1.88.11"
            | "1.2.840.10008.5.1.4.1.1.88.22"
            | "1.2.840.10008.5.1.4.1.1.88.33"
            | "1.2.840.10008.5.1.4.1.1.88.34"
    )
}

/// The DocumentEntry of a study's KOS ([`DocumentCodes::manifest`]) or report.
pub fn document_entry(
    settings: &Settings,
    study: &StudyFacts,
    kos: &Published,
    codes: &DocumentCodes,
) -> RegistryObject {
    let id = new_uuid();
    let patient = xds_patient_id(&study.bsn);
    let mut slots = vec![
        Slot::new("creationTime", [dtm(kos.created)]),
        Slot::new("hash", [kos.sha1.clone()]),
        Slot::new("languageCode", ["nl-NL"]),
        Slot::new(
            "repositoryUniqueId",
            [settings.repository_unique_id.clone()],
        ),
    ];
    if let Some(start) = study_dtm(&study.study_date, &study.study_time) {
        slots.push(Slot::new("serviceStartTime", [start]));
    }
    slots.push(Slot::new("size", [kos.size.to_string()]));
    slots.push(Slot::new("sourcePatientId", [patient.clone()]));
    // PID-3 only unless configured: the BSN identifies the patient to other communities.
    let mut info = vec![format!("PID-3|{patient}")];
    if settings.publish_demographics {
        for (field, value) in [
            ("PID-5", &study.patient_name),
            ("PID-7", &study.birth_date),
            ("PID-8", &study.sex),
        ] {
            if !value.is_empty() {
                info.push(format!("{field}|{value}"));
            }
        }
    }
    slots.push(Slot::new("sourcePatientInfo", info));
    let mut references = vec![format!(
        "{}^^^^{}",
        study.study_instance_uid,
        ns::REF_STUDY_UID
    )];
    if !study.accession_number.is_empty() {
        references.push(format!(
            "{}^^^&{}&ISO^{}",
            study.accession_number.replace('^', " "),
            settings.source_id,
            ns::REF_ACCESSION
        ));
    }
    slots.push(Slot::new(ns::REFERENCE_ID_LIST, references));
    let mut classifications = vec![
        author(ns::DE_AUTHOR, settings),
        Classification::code(new_uuid(), ns::DE_CLASS_CODE, &codes.class_code),
        Classification::code(
            new_uuid(),
            ns::DE_CONFIDENTIALITY_CODE,
            &settings.confidentiality_code,
        ),
    ];
    for modality in &study.modalities {
        classifications.push(Classification::code(
            new_uuid(),
            ns::DE_EVENT_CODE,
            &Code::new(modality, MODALITY_SCHEME, modality),
        ));
    }
    classifications.extend([
        Classification::code(new_uuid(), ns::DE_FORMAT_CODE, &codes.format),
        Classification::code(
            new_uuid(),
            ns::DE_FACILITY_TYPE_CODE,
            &settings.healthcare_facility_type_code,
        ),
        Classification::code(
            new_uuid(),
            ns::DE_PRACTICE_SETTING_CODE,
            &settings.practice_setting_code,
        ),
        Classification::code(new_uuid(), ns::DE_TYPE_CODE, &codes.type_code),
    ]);
    let name = if study.study_description.trim().is_empty() {
        codes.title.clone()
    } else {
        study.study_description.trim().to_string()
    };
    RegistryObject {
        kind: ObjectKind::DocumentEntry,
        lid: id.clone(),
        id,
        object_type: Some(ns::STABLE_DOCUMENT.into()),
        mime_type: Some(codes.mime_type.clone()),
        status: Status::Approved,
        name: Some(name),
        description: None,
        slots,
        classifications,
        external_identifiers: vec![
            ExternalIdentifier {
                id: new_uuid(),
                scheme: ns::DE_PATIENT_ID.into(),
                value: patient,
                name: "XDSDocumentEntry.patientId".into(),
            },
            ExternalIdentifier {
                id: new_uuid(),
                scheme: ns::DE_UNIQUE_ID.into(),
                value: kos.sop_instance_uid.clone(),
                name: "XDSDocumentEntry.uniqueId".into(),
            },
        ],
    }
}

/// The SubmissionSet of one publication.
pub fn submission_set(settings: &Settings, bsn: &str, created: i64) -> RegistryObject {
    let id = new_uuid();
    RegistryObject {
        kind: ObjectKind::SubmissionSet,
        lid: id.clone(),
        id,
        object_type: None,
        mime_type: None,
        status: Status::Approved,
        name: Some("beeldbrug XDS-I publication".into()),
        description: None,
        slots: vec![Slot::new("submissionTime", [dtm(created)])],
        classifications: vec![
            Classification {
                id: new_uuid(),
                classification_node: Some(ns::SUBMISSION_SET_NODE.into()),
                ..Default::default()
            },
            author(ns::SS_AUTHOR, settings),
            Classification::code(
                new_uuid(),
                ns::SS_CONTENT_TYPE_CODE,
                &settings.content_type_code,
            ),
        ],
        external_identifiers: vec![
            ExternalIdentifier {
                id: new_uuid(),
                scheme: ns::SS_PATIENT_ID.into(),
                value: xds_patient_id(bsn),
                name: "XDSSubmissionSet.patientId".into(),
            },
            ExternalIdentifier {
                id: new_uuid(),
                scheme: ns::SS_SOURCE_ID.into(),
                value: settings.source_id.clone(),
                name: "XDSSubmissionSet.sourceId".into(),
            },
            ExternalIdentifier {
                id: new_uuid(),
                scheme: ns::SS_UNIQUE_ID.into(),
                value: new_uid(),
                name: "XDSSubmissionSet.uniqueId".into(),
            },
        ],
    }
}

/// HasMember from a SubmissionSet to an entry (SubmissionSetStatus Original).
pub fn has_member(set: &str, member: &str) -> Association {
    Association {
        id: new_uuid(),
        assoc_type: ns::HAS_MEMBER.into(),
        source: set.into(),
        target: member.into(),
        status: Status::Approved,
        slots: vec![Slot::new("SubmissionSetStatus", ["Original"])],
    }
}

/// RPLC: `new` replaces `old`.
pub fn replaces(new: &str, old: &str) -> Association {
    Association {
        id: new_uuid(),
        assoc_type: ns::RPLC.into(),
        source: new.into(),
        target: old.into(),
        status: Status::Approved,
        slots: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_times() {
        let a = new_uuid();
        assert_eq!(a.len(), "urn:uuid:".len() + 36);
        assert_ne!(a, new_uuid());
        assert_eq!(&a[23..24], "4");
        assert!(new_uid().starts_with("2.25."));
        assert!(new_uid().len() <= 64);
        assert_eq!(dtm(0), "19700101000000");
        assert_eq!(
            study_dtm("20240131", "101530.123"),
            Some("20240131101530".into())
        );
        assert_eq!(study_dtm("20240131", "1015"), Some("202401311015".into()));
        assert_eq!(study_dtm("", "1015"), None);
        assert_eq!(sha1_hex(b"abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
    }
}
