//! The XDS-I manifest of a study: a Key Object Selection document (SOP Class
//! 1.2.840.10008.5.1.4.1.1.88.59; PS3.3 A.35.4 Key Object Selection Document IOD, TID 2010;
//! RAD TF-3 4.68.4.1.2 "XDS-I Manifest"), built with dicom-rs's object API and written as a
//! Part 10 file in Explicit VR Little Endian.
//!
//! - Patient and General Study modules from the index (as stored);
//! - a Key Object Document Series of its own (Modality KO) with the SR Document General
//!   Equipment;
//! - Key Object Document: the Referenced Request Sequence (when the study has an accession
//!   number) and the Current Requested Procedure Evidence Sequence (0040,A375) with the
//!   study and, per series, Retrieve AE Title (0008,0054) and Retrieve Location UID
//!   (0040,E011) = `xds.repository_unique_id`, and every instance of the series;
//! - SR Document Content: the CONTAINER with document title (113030, DCM, "Manifest"),
//!   template TID 2010, and one IMAGE, WAVEFORM or COMPOSITE (documents, SR and other
//!   non-images) content item per instance.

use crate::model::InstanceLocation;
use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use std::collections::{BTreeMap, BTreeSet};

/// Key Object Selection Document Storage.
pub const KOS_SOP_CLASS: &str = "1.2.840.10008.5.1.4.1.1.88.59";
const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";

/// The study-level values the KOS copies (as the index holds them).
#[derive(Debug, Clone, Default)]
pub struct StudyHeader {
    pub patient_name: String,
    pub patient_id: String,
    pub issuer_of_patient_id: String,
    pub birth_date: String,
    pub sex: String,
    pub study_instance_uid: String,
    pub study_date: String,
    pub study_time: String,
    pub accession_number: String,
    pub study_id: String,
    pub study_description: String,
    pub referring_physician_name: String,
}

/// What to put in the manifest's references.
#[derive(Debug, Clone)]
pub struct Manifest<'a> {
    pub study: &'a StudyHeader,
    /// Every instance the manifest references (of `study`).
    pub instances: &'a [InstanceLocation],
    /// Retrieve AE Title of every referenced series.
    pub retrieve_ae_title: &'a str,
    /// Retrieve Location UID of every referenced series (`xds.repository_unique_id`).
    pub retrieve_location_uid: &'a str,
    pub sop_instance_uid: &'a str,
    pub series_instance_uid: &'a str,
    /// DICOM DA and TM of the content (local time of creation).
    pub content_date: &'a str,
    pub content_time: &'a str,
}

#[derive(Debug, thiserror::Error)]
pub enum KosError {
    #[error("a manifest needs at least one instance")]
    Empty,
    #[error("cannot write the manifest: {0}")]
    Write(String),
}

fn put(obj: &mut InMemDicomObject, tag: Tag, vr: VR, value: &str) {
    obj.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
}

fn put_seq(obj: &mut InMemDicomObject, tag: Tag, items: Vec<InMemDicomObject>) {
    obj.put(DataElement::new(tag, VR::SQ, DataSetSequence::from(items)));
}

fn code_item(value: &str, scheme: &str, meaning: &str) -> InMemDicomObject {
    let mut item = InMemDicomObject::new_empty();
    put(&mut item, tags::CODE_VALUE, VR::SH, value);
    put(&mut item, tags::CODING_SCHEME_DESIGNATOR, VR::SH, scheme);
    put(&mut item, tags::CODE_MEANING, VR::LO, meaning);
    item
}

fn sop_ref(class: &str, instance: &str) -> InMemDicomObject {
    let mut item = InMemDicomObject::new_empty();
    put(&mut item, tags::REFERENCED_SOP_CLASS_UID, VR::UI, class);
    put(
        &mut item,
        tags::REFERENCED_SOP_INSTANCE_UID,
        VR::UI,
        instance,
    );
    item
}

/// The TID 2010 value type of a reference to an instance of this SOP class: IMAGE for
/// images, WAVEFORM for waveforms (1.2.840.10008.5.1.4.1.1.9.*), COMPOSITE for the rest
/// (structured reports, documents, presentation states, registrations, …).
fn value_type(sop_class: &str) -> &'static str {
    let Some(rest) = sop_class.strip_prefix("1.2.840.10008.5.1.4.1.1.") else {
        return "COMPOSITE";
    };
    match rest.split('.').next().unwrap_or("") {
        "9" => "WAVEFORM",
        "11" | "66" | "67" | "68" | "88" | "104" | "481" => "COMPOSITE",
        _ => "IMAGE",
    }
}

/// The SOP Instance UIDs a manifest references (Current Requested Procedure Evidence
/// Sequence > Referenced Series Sequence > Referenced SOP Sequence, PS3.3 C.17.2.1).
pub fn referenced(obj: &InMemDicomObject) -> BTreeSet<String> {
    let items = |o: &InMemDicomObject, tag: Tag| -> Vec<InMemDicomObject> {
        o.element(tag)
            .ok()
            .and_then(|e| e.items().map(<[_]>::to_vec))
            .unwrap_or_default()
    };
    let mut uids = BTreeSet::new();
    for study in items(obj, tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE) {
        for series in items(&study, tags::REFERENCED_SERIES_SEQUENCE) {
            for sop in items(&series, tags::REFERENCED_SOP_SEQUENCE) {
                let uid = sop.element(tags::REFERENCED_SOP_INSTANCE_UID);
                if let Some(uid) = uid.ok().and_then(|e| e.to_str().ok()) {
                    uids.insert(uid.trim_end_matches('\0').trim().to_string());
                }
            }
        }
    }
    uids
}

/// The manifest as a Part 10 file.
pub fn build(m: &Manifest<'_>) -> Result<Vec<u8>, KosError> {
    if m.instances.is_empty() {
        return Err(KosError::Empty);
    }
    let s = m.study;
    let mut obj = InMemDicomObject::new_empty();
    put(&mut obj, tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192");
    put(
        &mut obj,
        tags::INSTANCE_CREATION_DATE,
        VR::DA,
        m.content_date,
    );
    put(
        &mut obj,
        tags::INSTANCE_CREATION_TIME,
        VR::TM,
        m.content_time,
    );
    put(&mut obj, tags::SOP_CLASS_UID, VR::UI, KOS_SOP_CLASS);
    put(&mut obj, tags::SOP_INSTANCE_UID, VR::UI, m.sop_instance_uid);
    // General Study (Type 2 values may be empty).
    put(&mut obj, tags::STUDY_DATE, VR::DA, &s.study_date);
    put(&mut obj, tags::CONTENT_DATE, VR::DA, m.content_date);
    put(&mut obj, tags::STUDY_TIME, VR::TM, &s.study_time);
    put(&mut obj, tags::CONTENT_TIME, VR::TM, m.content_time);
    put(
        &mut obj,
        tags::ACCESSION_NUMBER,
        VR::SH,
        &s.accession_number,
    );
    put(&mut obj, tags::MODALITY, VR::CS, "KO");
    put(&mut obj, tags::MANUFACTURER, VR::LO, "beeldbrug");
    put(
        &mut obj,
        tags::REFERRING_PHYSICIAN_NAME,
        VR::PN,
        &s.referring_physician_name,
    );
    if !s.study_description.is_empty() {
        put(
            &mut obj,
            tags::STUDY_DESCRIPTION,
            VR::LO,
            &s.study_description,
        );
    }
    put_seq(
        &mut obj,
        tags::REFERENCED_PERFORMED_PROCEDURE_STEP_SEQUENCE,
        Vec::new(),
    );
    // Patient.
    put(&mut obj, tags::PATIENT_NAME, VR::PN, &s.patient_name);
    put(&mut obj, tags::PATIENT_ID, VR::LO, &s.patient_id);
    if !s.issuer_of_patient_id.is_empty() {
        put(
            &mut obj,
            tags::ISSUER_OF_PATIENT_ID,
            VR::LO,
            &s.issuer_of_patient_id,
        );
    }
    put(&mut obj, tags::PATIENT_BIRTH_DATE, VR::DA, &s.birth_date);
    put(&mut obj, tags::PATIENT_SEX, VR::CS, &s.sex);
    put(
        &mut obj,
        tags::STUDY_INSTANCE_UID,
        VR::UI,
        &s.study_instance_uid,
    );
    put(
        &mut obj,
        tags::SERIES_INSTANCE_UID,
        VR::UI,
        m.series_instance_uid,
    );
    put(&mut obj, tags::STUDY_ID, VR::SH, &s.study_id);
    put(&mut obj, tags::SERIES_NUMBER, VR::IS, "9999");
    put(&mut obj, tags::INSTANCE_NUMBER, VR::IS, "1");

    // SR Document Content: the root CONTAINER.
    put(&mut obj, tags::VALUE_TYPE, VR::CS, "CONTAINER");
    put_seq(
        &mut obj,
        tags::CONCEPT_NAME_CODE_SEQUENCE,
        vec![code_item("113030", "DCM", "Manifest")],
    );
    put(&mut obj, tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE");
    let mut template = InMemDicomObject::new_empty();
    put(&mut template, tags::MAPPING_RESOURCE, VR::CS, "DCMR");
    put(&mut template, tags::TEMPLATE_IDENTIFIER, VR::CS, "2010");
    put_seq(&mut obj, tags::CONTENT_TEMPLATE_SEQUENCE, vec![template]);

    // Key Object Document: the request the study fulfils, when it has an accession number
    // (Referenced Request Sequence, PS3.3 C.17.6.2.1; RAD TF-3 4.68.4.1.2.3).
    if !s.accession_number.trim().is_empty() {
        let mut request = InMemDicomObject::new_empty();
        put(
            &mut request,
            tags::ACCESSION_NUMBER,
            VR::SH,
            &s.accession_number,
        );
        put(
            &mut request,
            tags::STUDY_INSTANCE_UID,
            VR::UI,
            &s.study_instance_uid,
        );
        put(
            &mut request,
            tags::REQUESTED_PROCEDURE_DESCRIPTION,
            VR::LO,
            &s.study_description,
        );
        put_seq(
            &mut request,
            tags::REQUESTED_PROCEDURE_CODE_SEQUENCE,
            Vec::new(),
        );
        put(&mut request, tags::REQUESTED_PROCEDURE_ID, VR::SH, "");
        put(
            &mut request,
            tags::PLACER_ORDER_NUMBER_IMAGING_SERVICE_REQUEST,
            VR::LO,
            "",
        );
        put(
            &mut request,
            tags::FILLER_ORDER_NUMBER_IMAGING_SERVICE_REQUEST,
            VR::LO,
            "",
        );
        put_seq(&mut obj, tags::REFERENCED_REQUEST_SEQUENCE, vec![request]);
    }

    // Key Object Document: the evidence, grouped by series (in first-seen order).
    let mut order: Vec<&str> = Vec::new();
    let mut by_series: BTreeMap<&str, Vec<&InstanceLocation>> = BTreeMap::new();
    for i in m.instances {
        let series = i.series_instance_uid.as_str();
        if !by_series.contains_key(series) {
            order.push(series);
        }
        by_series.entry(series).or_default().push(i);
    }
    let mut series_items = Vec::with_capacity(order.len());
    for series in &order {
        let mut item = InMemDicomObject::new_empty();
        put(
            &mut item,
            tags::RETRIEVE_AE_TITLE,
            VR::AE,
            m.retrieve_ae_title,
        );
        put(&mut item, tags::SERIES_INSTANCE_UID, VR::UI, series);
        let refs = by_series[series]
            .iter()
            .map(|i| sop_ref(&i.sop_class_uid, &i.sop_instance_uid))
            .collect();
        put_seq(&mut item, tags::REFERENCED_SOP_SEQUENCE, refs);
        put(
            &mut item,
            tags::RETRIEVE_LOCATION_UID,
            VR::UI,
            m.retrieve_location_uid,
        );
        series_items.push(item);
    }
    let mut study_item = InMemDicomObject::new_empty();
    put_seq(
        &mut study_item,
        tags::REFERENCED_SERIES_SEQUENCE,
        series_items,
    );
    put(
        &mut study_item,
        tags::STUDY_INSTANCE_UID,
        VR::UI,
        &s.study_instance_uid,
    );
    put_seq(
        &mut obj,
        tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE,
        vec![study_item],
    );

    // One content item per instance (TID 2010 rows 5–7).
    let content = m
        .instances
        .iter()
        .map(|i| {
            let mut item = InMemDicomObject::new_empty();
            put(&mut item, tags::RELATIONSHIP_TYPE, VR::CS, "CONTAINS");
            put(
                &mut item,
                tags::VALUE_TYPE,
                VR::CS,
                value_type(&i.sop_class_uid),
            );
            put_seq(
                &mut item,
                tags::REFERENCED_SOP_SEQUENCE,
                vec![sop_ref(&i.sop_class_uid, &i.sop_instance_uid)],
            );
            item
        })
        .collect();
    put_seq(&mut obj, tags::CONTENT_SEQUENCE, content);

    let meta = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(KOS_SOP_CLASS)
        .media_storage_sop_instance_uid(m.sop_instance_uid)
        .transfer_syntax(EXPLICIT_VR_LE)
        .implementation_class_uid(crate::sop::IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(crate::sop::IMPLEMENTATION_VERSION)
        .build()
        .map_err(|e| KosError::Write(e.to_string()))?;
    let ts = TransferSyntaxRegistry
        .get(EXPLICIT_VR_LE)
        .ok_or_else(|| KosError::Write("no Explicit VR Little Endian".into()))?;
    let mut out = Vec::with_capacity(1024 + 200 * m.instances.len());
    out.extend_from_slice(&[0u8; 128]);
    out.extend_from_slice(b"DICM");
    meta.write(&mut out)
        .map_err(|e| KosError::Write(e.to_string()))?;
    obj.write_dataset_with_ts(&mut out, ts)
        .map_err(|e| KosError::Write(e.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_reads_back_with_every_reference() {
        let study = StudyHeader {
            patient_name: "Müller^Zoë".into(),
            patient_id: "999999990".into(),
            study_instance_uid: "1.2.3".into(),
            accession_number: "ACC1".into(),
            ..Default::default()
        };
        let instances: Vec<InstanceLocation> = (0..3)
            .map(|i| InstanceLocation {
                patient_id: "999999990".into(),
                study_instance_uid: "1.2.3".into(),
                series_instance_uid: format!("1.2.3.{}", i % 2),
                sop_instance_uid: format!("1.2.3.9.{i}"),
                sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
                transfer_syntax_uid: EXPLICIT_VR_LE.into(),
                blob_key: String::new(),
                size_bytes: 0,
            })
            .collect();
        let bytes = build(&Manifest {
            study: &study,
            instances: &instances,
            retrieve_ae_title: "BEELDBRUG",
            retrieve_location_uid: "1.2.3.4",
            sop_instance_uid: "2.25.1",
            series_instance_uid: "2.25.2",
            content_date: "20250101",
            content_time: "120000",
        })
        .unwrap();
        let obj = dicom_object::from_reader(&bytes[128..]).unwrap();
        let evidence = obj
            .element(tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE)
            .unwrap();
        let series = evidence.items().unwrap()[0]
            .element(tags::REFERENCED_SERIES_SEQUENCE)
            .unwrap()
            .items()
            .unwrap()
            .len();
        assert_eq!(series, 2);
        let mut named: Vec<String> = instances
            .iter()
            .map(|i| i.sop_instance_uid.clone())
            .collect();
        named.sort();
        assert_eq!(referenced(&obj).into_iter().collect::<Vec<_>>(), named);
        let content = obj
            .element(tags::CONTENT_SEQUENCE)
            .unwrap()
            .items()
            .unwrap()
            .len();
        assert_eq!(content, 3);
        assert_eq!(
            obj.element(tags::PATIENT_NAME).unwrap().to_str().unwrap(),
            "Müller^Zoë"
        );
        assert_eq!(value_type("1.2.840.10008.5.1.4.1.1.2"), "IMAGE");
        assert_eq!(value_type("1.2.840.10008.5.1.4.1.1.9.1.1"), "WAVEFORM");
        assert_eq!(value_type("1.2.840.10008.5.1.4.1.1.104.1"), "COMPOSITE");
        assert_eq!(value_type("1.2.840.10008.5.1.4.1.1.88.22"), "COMPOSITE");
        assert!(build(&Manifest {
            instances: &[],
            ..Manifest {
                study: &study,
                instances: &instances,
                retrieve_ae_title: "",
                retrieve_location_uid: "",
                sop_instance_uid: "",
                series_instance_uid: "",
                content_date: "",
                content_time: "",
            }
        })
        .is_err());
    }
}
