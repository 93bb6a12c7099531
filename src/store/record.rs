//! The attributes of one instance that the index stores.

use crate::model::query::{Level, INDEXED_ATTRS};
use dicom_core::Tag;
use std::collections::BTreeMap;

/// Indexed attributes of one stored instance, as UTF-8 strings (decoded from the instance's
/// Specific Character Set), plus where its blob is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceRecord {
    /// Values by tag for the attributes in [`INDEXED_ATTRS`]; a missing attribute is absent.
    pub values: BTreeMap<Tag, String>,
    pub transfer_syntax_uid: String,
    pub blob_key: String,
    pub size_bytes: u64,
}

impl InstanceRecord {
    pub fn get(&self, tag: Tag) -> Option<&str> {
        self.values.get(&tag).map(String::as_str)
    }

    /// Value of an attribute by the index column name, or `""` when absent.
    pub fn column(&self, column: &str) -> &str {
        INDEXED_ATTRS
            .iter()
            .find(|a| a.column == column)
            .and_then(|a| self.get(a.tag))
            .unwrap_or("")
    }

    /// The values of one level, as (column, value) pairs, absent values as `""`.
    pub fn level_columns(&self, level: Level) -> Vec<(&'static str, &str)> {
        INDEXED_ATTRS
            .iter()
            .filter(|a| a.level == level)
            .map(|a| (a.column, self.get(a.tag).unwrap_or("")))
            .collect()
    }

    pub fn sop_instance_uid(&self) -> &str {
        self.get(Tag(0x0008, 0x0018)).unwrap_or("")
    }
    pub fn study_instance_uid(&self) -> &str {
        self.get(Tag(0x0020, 0x000D)).unwrap_or("")
    }
    pub fn series_instance_uid(&self) -> &str {
        self.get(Tag(0x0020, 0x000E)).unwrap_or("")
    }
    pub fn patient_id(&self) -> &str {
        self.get(Tag(0x0010, 0x0020)).unwrap_or("")
    }
}

impl InstanceRecord {
    /// Extract the indexed attributes from a parsed data set. Text is already UTF-8: the
    /// parser decoded it with the data set's Specific Character Set.
    pub fn from_object(obj: &dicom_object::InMemDicomObject) -> InstanceRecord {
        let mut values = BTreeMap::new();
        for attr in INDEXED_ATTRS {
            // `get`, not `element`: dicom-object's error for a missing element captures a
            // backtrace (snafu, `Backtrace::force_capture`), a stack walk per attribute an
            // instance lacks, on every instance a retrieve caches.
            let Some(element) = obj.get(attr.tag) else {
                continue;
            };
            let Ok(parts) = element.value().to_multi_str() else {
                continue;
            };
            let joined = parts
                .iter()
                .map(|s| s.trim_matches(|c: char| c == ' ' || c == '\0'))
                .collect::<Vec<_>>()
                .join("\\");
            if !joined.is_empty() {
                values.insert(attr.tag, joined);
            }
        }
        InstanceRecord {
            values,
            ..Default::default()
        }
    }
}

impl InstanceRecord {
    /// Where this (stored) instance lives, as the retrieve model names it.
    pub fn location(&self) -> crate::model::InstanceLocation {
        crate::model::InstanceLocation {
            patient_id: self.patient_id().to_string(),
            study_instance_uid: self.study_instance_uid().to_string(),
            series_instance_uid: self.series_instance_uid().to_string(),
            sop_instance_uid: self.sop_instance_uid().to_string(),
            sop_class_uid: self.get(Tag(0x0008, 0x0016)).unwrap_or("").to_string(),
            transfer_syntax_uid: self.transfer_syntax_uid.clone(),
            blob_key: self.blob_key.clone(),
            size_bytes: self.size_bytes,
        }
    }
}
