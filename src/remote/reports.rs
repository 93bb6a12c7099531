//! Reports another gateway publishes as documents of their own (issue 15 item 5: "ITI-39
//! for reports"; REFERENCE §3, Twiin BB "Metadata radiologisch verslag"): a PDF
//! (`application/pdf`, formatCode `urn:ihe:rad:PDF`), a DICOM SR or other DICOM document
//! (`application/dicom`, formatCode its SOP class), or a CDA document (`text/xml`). Their
//! DocumentEntries in an ITI-38 answer name the study in their referenceIdList; they belong
//! to that study (a study known only by a report has no manifest).
//!
//! A fetch of the study (or of the report by its SOP Instance UID) asks the peer for them
//! by ITI-39 Cross Gateway Retrieve, after the images, unless the study's manifest
//! references the document already (a beeldbrug peer's manifest references its report
//! instances: they come by RAD-75 with the images, as stored). Each answer part, read
//! whole (at most [`REPORT_LIMIT`]), becomes an instance of the study in the cache and for
//! the consumer, so the DIMSE and DICOMweb fronts hand it on as any instance:
//!
//! - a DICOM Part 10 file (an SR, an encapsulated PDF as the peer stores it): as sent;
//! - a PDF: an Encapsulated PDF instance (PS3.3 A.45.1), a CDA document an Encapsulated CDA
//!   instance (A.45.2), with the study's patient and study attributes as the ITI-38 answer
//!   gave them, in a series of its own (Modality DOC, Conversion Type WSD), the document
//!   bytes unchanged in Encapsulated Document (0042,0011) with their length in (0042,0015).
//!   Its UIDs are derived from the peer's community, the document's uniqueId and the study
//!   (UUID-derived, `2.25.`), so fetching it again makes the same instance;
//! - anything else fails that document (the fetch is partial).

use crate::ebrim::{ns, RegistryObject};
use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use serde::{Deserialize, Serialize};

/// The KOS manifest's formatCode (RAD TF-3 4.68.4.1.2.3.1, REFERENCE §3).
pub const KOS_FORMAT: &str = "1.2.840.10008.5.1.4.1.1.88.59";

/// Largest report read (it is read whole, to be wrapped).
pub const REPORT_LIMIT: usize = 32 << 20;

/// Encapsulated PDF Storage.
pub const ENCAPSULATED_PDF: &str = "1.2.840.10008.5.1.4.1.1.104.1";
/// Encapsulated CDA Storage.
pub const ENCAPSULATED_CDA: &str = "1.2.840.10008.5.1.4.1.1.104.2";
const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";

/// What kind of document a report is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportKind {
    Pdf,
    Cda,
    Dicom,
}

/// A report of a remote study, as its DocumentEntry describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteReport {
    /// The document's uniqueId (for a DICOM document its SOP Instance UID).
    pub unique_id: String,
    pub repository: String,
    pub kind: ReportKind,
    pub mime_type: String,
    /// The entry's title.
    #[serde(default)]
    pub title: String,
    /// The instance it becomes in the cache: its SOP class ("" when a DICOM document's
    /// formatCode does not say), SOP Instance UID and series ("" for a DICOM document: known
    /// once it arrives).
    pub sop_class: String,
    pub sop_instance: String,
    #[serde(default)]
    pub series: String,
}

impl RemoteReport {
    /// From a DocumentEntry that is no manifest: `(study, report)`, when it names a study
    /// and is a PDF, CDA or DICOM document. `home`: the peer's community (part of the
    /// derived UIDs).
    pub fn from_entry(entry: &RegistryObject, home: &str) -> Option<(String, RemoteReport)> {
        if is_kos(entry) {
            return None;
        }
        let study = study_of(entry)?;
        let unique_id = entry.unique_id()?.trim().to_string();
        let repository = entry.slot_value("repositoryUniqueId")?.trim().to_string();
        let mime_type = entry.mime_type.clone().unwrap_or_default();
        let kind = match mime_type.trim().to_ascii_lowercase().as_str() {
            "application/pdf" => ReportKind::Pdf,
            "text/xml" | "application/xml" | "application/hl7-v3+xml" => ReportKind::Cda,
            "application/dicom" => ReportKind::Dicom,
            _ => return None,
        };
        let format = entry
            .codes(ns::DE_FORMAT_CODE)
            .first()
            .map(|(code, _)| code.to_string())
            .unwrap_or_default();
        let (sop_class, sop_instance, series) = match kind {
            ReportKind::Dicom => (
                if format.starts_with("1.2.840.10008.5.1.4.1.1.") && is_uid(&format) {
                    format
                } else {
                    String::new()
                },
                unique_id.clone(),
                String::new(),
            ),
            ReportKind::Pdf | ReportKind::Cda => (
                if kind == ReportKind::Pdf {
                    ENCAPSULATED_PDF
                } else {
                    ENCAPSULATED_CDA
                }
                .to_string(),
                derived_uid(&[home, &unique_id, "instance"]),
                derived_uid(&[home, &study, "reports"]),
            ),
        };
        let title = entry.name.clone().unwrap_or_default();
        Some((
            study,
            RemoteReport {
                unique_id,
                repository,
                kind,
                mime_type,
                title,
                sop_class,
                sop_instance,
                series,
            },
        ))
    }
}

/// Is the entry a KOS manifest (its formatCode)?
pub fn is_kos(entry: &RegistryObject) -> bool {
    entry
        .codes(ns::DE_FORMAT_CODE)
        .iter()
        .any(|(code, _)| *code == KOS_FORMAT)
}

/// The Study Instance UID an entry's referenceIdList names.
pub fn study_of(entry: &RegistryObject) -> Option<String> {
    let references = entry.slot(ns::REFERENCE_ID_LIST);
    let reference = |kind: &str| {
        references.iter().find_map(|r| {
            let value = r.split('^').next()?.trim();
            (r.ends_with(kind) && !value.is_empty()).then(|| value.to_string())
        })
    };
    reference(ns::REF_STUDY_UID).or_else(|| reference(ns::REF_STUDY_UID_2016))
}

/// Digits and dots, at most 64 (PS3.5 9.1).
fn is_uid(uid: &str) -> bool {
    !uid.is_empty() && uid.len() <= 64 && uid.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// A UID under `2.25` from a name-based UUID (RFC 9562 version 8, SHA-256 of `parts`).
pub fn derived_uid(parts: &[&str]) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    format!("2.25.{}", u128::from_be_bytes(bytes))
}

/// Is `bytes` a DICOM Part 10 file (preamble and "DICM")?
pub fn is_part10(bytes: &[u8]) -> bool {
    bytes.get(128..132) == Some(b"DICM")
}

/// The study a report is wrapped into: its patient, UID and study-level row (what the
/// peer's ITI-38 answer gave, `(group, element, value)`).
#[derive(Debug, Clone, Copy)]
pub struct StudyOf<'a> {
    pub patient_id: &'a str,
    pub study_uid: &'a str,
    pub row: &'a [(u16, u16, String)],
}

fn put(obj: &mut InMemDicomObject, tag: Tag, vr: VR, value: &str) {
    obj.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
}

/// The Encapsulated PDF or CDA instance (a Part 10 file, Explicit VR Little Endian) that
/// carries `document` of `report` in `study` (see the module documentation).
pub fn encapsulate(
    report: &RemoteReport,
    study: &StudyOf<'_>,
    document: &[u8],
) -> Result<Vec<u8>, String> {
    let (mime, class) = match report.kind {
        ReportKind::Pdf => ("application/pdf", ENCAPSULATED_PDF),
        ReportKind::Cda => ("text/XML", ENCAPSULATED_CDA),
        ReportKind::Dicom => return Err("not a DICOM Part 10 file".into()),
    };
    // What was sent must be what the entry says: a PDF has its header within its first
    // 1024 bytes (ISO 32000-1 7.5.2 as readers take it), a CDA document is XML.
    let head = &document[..document.len().min(1024)];
    let fits = match report.kind {
        ReportKind::Pdf => head.windows(5).any(|w| w == b"%PDF-"),
        _ => {
            let text = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
            text.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'<')
        }
    };
    if !fits {
        return Err(format!("the document is no {}", report.mime_type));
    }
    let value = |tag: Tag| {
        study
            .row
            .iter()
            .find(|(g, e, _)| Tag(*g, *e) == tag)
            .map(|(_, _, v)| v.as_str())
            .unwrap_or_default()
    };
    let now = time::OffsetDateTime::now_utc();
    let date = format!(
        "{:04}{:02}{:02}",
        now.year(),
        u8::from(now.month()),
        now.day()
    );
    let time_of_day = format!("{:02}{:02}{:02}", now.hour(), now.minute(), now.second());
    let mut obj = InMemDicomObject::new_empty();
    put(&mut obj, tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192");
    put(&mut obj, tags::SOP_CLASS_UID, VR::UI, class);
    put(
        &mut obj,
        tags::SOP_INSTANCE_UID,
        VR::UI,
        &report.sop_instance,
    );
    // Patient and General Study: as the peer's ITI-38 answer gave them.
    put(
        &mut obj,
        tags::PATIENT_NAME,
        VR::PN,
        value(tags::PATIENT_NAME),
    );
    put(&mut obj, tags::PATIENT_ID, VR::LO, study.patient_id);
    put(
        &mut obj,
        tags::PATIENT_BIRTH_DATE,
        VR::DA,
        value(tags::PATIENT_BIRTH_DATE),
    );
    put(
        &mut obj,
        tags::PATIENT_SEX,
        VR::CS,
        value(tags::PATIENT_SEX),
    );
    put(&mut obj, tags::STUDY_INSTANCE_UID, VR::UI, study.study_uid);
    put(&mut obj, tags::STUDY_DATE, VR::DA, value(tags::STUDY_DATE));
    put(&mut obj, tags::STUDY_TIME, VR::TM, value(tags::STUDY_TIME));
    put(&mut obj, tags::REFERRING_PHYSICIAN_NAME, VR::PN, "");
    put(&mut obj, tags::STUDY_ID, VR::SH, "");
    put(
        &mut obj,
        tags::ACCESSION_NUMBER,
        VR::SH,
        value(tags::ACCESSION_NUMBER),
    );
    put(
        &mut obj,
        tags::STUDY_DESCRIPTION,
        VR::LO,
        value(tags::STUDY_DESCRIPTION),
    );
    // Encapsulated Document Series, General and SC Equipment.
    put(&mut obj, tags::MODALITY, VR::CS, "DOC");
    put(&mut obj, tags::SERIES_INSTANCE_UID, VR::UI, &report.series);
    put(&mut obj, tags::SERIES_NUMBER, VR::IS, "9001");
    put(&mut obj, tags::MANUFACTURER, VR::LO, "");
    put(&mut obj, tags::CONVERSION_TYPE, VR::CS, "WSD");
    // Encapsulated Document.
    put(&mut obj, tags::INSTANCE_NUMBER, VR::IS, "1");
    put(&mut obj, tags::CONTENT_DATE, VR::DA, &date);
    put(&mut obj, tags::CONTENT_TIME, VR::TM, &time_of_day);
    put(&mut obj, tags::ACQUISITION_DATE_TIME, VR::DT, "");
    put(&mut obj, tags::BURNED_IN_ANNOTATION, VR::CS, "YES");
    let title: String = report.title.chars().take(1024).collect();
    put(&mut obj, tags::DOCUMENT_TITLE, VR::ST, &title);
    obj.put(DataElement::new(
        tags::CONCEPT_NAME_CODE_SEQUENCE,
        VR::SQ,
        DataSetSequence::from(Vec::<InMemDicomObject>::new()),
    ));
    if report.kind == ReportKind::Cda {
        put(
            &mut obj,
            tags::HL7_INSTANCE_IDENTIFIER,
            VR::ST,
            &report.unique_id,
        );
    }
    put(
        &mut obj,
        tags::MIME_TYPE_OF_ENCAPSULATED_DOCUMENT,
        VR::LO,
        mime,
    );
    let length = u32::try_from(document.len()).map_err(|_| "document too large")?;
    obj.put(DataElement::new(
        tags::ENCAPSULATED_DOCUMENT_LENGTH,
        VR::UL,
        PrimitiveValue::from(length),
    ));
    // OB of even length: a pad byte when needed (the length above says where it ends).
    let mut bytes = document.to_vec();
    if bytes.len() % 2 == 1 {
        bytes.push(0);
    }
    obj.put(DataElement::new(
        tags::ENCAPSULATED_DOCUMENT,
        VR::OB,
        PrimitiveValue::U8(bytes.into()),
    ));
    let meta = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(class)
        .media_storage_sop_instance_uid(report.sop_instance.as_str())
        .transfer_syntax(EXPLICIT_VR_LE)
        .implementation_class_uid(crate::sop::IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(crate::sop::IMPLEMENTATION_VERSION)
        .build()
        .map_err(|e| e.to_string())?;
    let ts = TransferSyntaxRegistry
        .get(EXPLICIT_VR_LE)
        .ok_or("no Explicit VR Little Endian")?;
    let mut out = Vec::with_capacity(document.len() + 2048);
    out.extend_from_slice(&[0u8; 128]);
    out.extend_from_slice(b"DICM");
    meta.write(&mut out).map_err(|e| e.to_string())?;
    obj.write_dataset_with_ts(&mut out, ts)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> Vec<(u16, u16, String)> {
        vec![
            (0x0010, 0x0010, "Test^Patient".into()),
            (0x0008, 0x0020, "20260101".into()),
            (0x0008, 0x0050, "ACC1".into()),
        ]
    }

    #[test]
    fn a_pdf_becomes_an_encapsulated_pdf_of_its_study() {
        let report = RemoteReport {
            unique_id: "1.2.3.99".into(),
            repository: "1.2.9".into(),
            kind: ReportKind::Pdf,
            mime_type: "application/pdf".into(),
            title: "Verslag".into(),
            sop_class: ENCAPSULATED_PDF.into(),
            sop_instance: derived_uid(&["urn:oid:1.2", "1.2.3.99", "instance"]),
            series: derived_uid(&["urn:oid:1.2", "1.2.3", "reports"]),
        };
        let pdf = b"%PDF-1.4\n%%EOF\n1";
        let row = row();
        let study = StudyOf {
            patient_id: "999999990",
            study_uid: "1.2.3",
            row: &row,
        };
        let file = encapsulate(&report, &study, pdf).unwrap();
        assert!(is_part10(&file));
        let obj = dicom_object::from_reader(&file[128..]).unwrap();
        let text = |tag| obj.element(tag).unwrap().to_str().unwrap().to_string();
        assert_eq!(text(tags::SOP_CLASS_UID), ENCAPSULATED_PDF);
        assert_eq!(text(tags::STUDY_INSTANCE_UID), "1.2.3");
        assert_eq!(text(tags::PATIENT_ID), "999999990");
        assert_eq!(text(tags::ACCESSION_NUMBER), "ACC1");
        assert_eq!(text(tags::MODALITY), "DOC");
        let length = obj
            .element(tags::ENCAPSULATED_DOCUMENT_LENGTH)
            .unwrap()
            .to_int::<u32>()
            .unwrap() as usize;
        let doc = obj
            .element(tags::ENCAPSULATED_DOCUMENT)
            .unwrap()
            .to_bytes()
            .unwrap();
        assert_eq!(&doc[..length], pdf, "the PDF as sent");
        // The same document makes the same UIDs; another makes others.
        assert_eq!(
            report.sop_instance,
            derived_uid(&["urn:oid:1.2", "1.2.3.99", "instance"])
        );
        assert_ne!(
            report.sop_instance,
            derived_uid(&["urn:oid:1.2", "1.2.3.98", "instance"])
        );
        assert!(report.sop_instance.len() <= 64 && is_uid(&report.sop_instance));
    }
}
