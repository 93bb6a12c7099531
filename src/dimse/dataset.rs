//! Data sets on the wire and on disk: identifiers in and out of the negotiated transfer
//! syntax, and the file meta header of stored instances (PS3.10 7.1).

use dicom_core::Tag;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::{FileMetaTable, InMemDicomObject};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use std::io::Read;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("unknown transfer syntax {0}")]
    UnknownTransferSyntax(String),
    #[error("data set does not parse: {0}")]
    Parse(String),
    #[error("data set cannot be encoded: {0}")]
    Encode(String),
    #[error("file {path}: {problem}")]
    File { path: String, problem: String },
}

pub const SPECIFIC_CHARACTER_SET: Tag = Tag(0x0008, 0x0005);
pub const QUERY_RETRIEVE_LEVEL: Tag = Tag(0x0008, 0x0052);
pub const PIXEL_DATA: Tag = Tag(0x7FE0, 0x0010);

fn syntax(ts: &str) -> Result<&'static dicom_encoding::TransferSyntax, DatasetError> {
    TransferSyntaxRegistry
        .get(ts.trim_end_matches('\0'))
        .ok_or_else(|| DatasetError::UnknownTransferSyntax(ts.to_string()))
}

/// Decode a data set received on a context with transfer syntax `ts`. Text is decoded with
/// the data set's own Specific Character Set.
pub fn decode(bytes: &[u8], ts: &str) -> Result<InMemDicomObject, DatasetError> {
    InMemDicomObject::read_dataset_with_ts(bytes, syntax(ts)?)
        .map_err(|e| DatasetError::Parse(e.to_string()))
}

/// Encode a data set in transfer syntax `ts`; text is encoded in the Specific Character
/// Set the object declares.
pub fn encode(obj: &InMemDicomObject, ts: &str) -> Result<Vec<u8>, DatasetError> {
    let mut out = Vec::with_capacity(1024);
    obj.write_dataset_with_ts(&mut out, syntax(ts)?)
        .map_err(|e| DatasetError::Encode(e.to_string()))?;
    Ok(out)
}

/// The preamble, magic code and file meta group for a received instance (PS3.10 7.1).
pub fn file_header(
    sop_class: &str,
    sop_instance: &str,
    ts: &str,
    source_ae: &str,
) -> Result<Vec<u8>, DatasetError> {
    let meta = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(sop_class)
        .media_storage_sop_instance_uid(sop_instance)
        .transfer_syntax(ts)
        .implementation_class_uid(super::negotiate::IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(super::negotiate::IMPLEMENTATION_VERSION)
        .source_application_entity_title(source_ae)
        .build()
        .map_err(|e| DatasetError::Encode(e.to_string()))?;
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    meta.write(&mut out)
        .map_err(|e| DatasetError::Encode(e.to_string()))?;
    Ok(out)
}

/// A stored DICOM file's meta information and where its data set starts.
#[derive(Debug, Clone)]
pub struct FileLayout {
    pub meta: FileMetaTable,
    pub dataset_offset: u64,
    pub file_len: u64,
}

impl FileLayout {
    pub fn dataset_len(&self) -> u64 {
        self.file_len.saturating_sub(self.dataset_offset)
    }
}

/// Read the meta group of a Part 10 file (with preamble) without reading the data set.
pub fn read_layout(path: &Path) -> Result<FileLayout, DatasetError> {
    let err = |problem: String| DatasetError::File {
        path: path.display().to_string(),
        problem,
    };
    let mut file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let file_len = file.metadata().map_err(|e| err(e.to_string()))?.len();
    let mut preamble = [0u8; 128];
    file.read_exact(&mut preamble)
        .map_err(|e| err(format!("no preamble: {e}")))?;
    let meta = FileMetaTable::from_reader(&mut file)
        .map_err(|e| err(format!("no file meta group: {e}")))?;
    // preamble + "DICM" + (0002,0000) UL element (12 bytes) + the rest of the group.
    let dataset_offset = 128 + 4 + 12 + u64::from(meta.information_group_length);
    if dataset_offset > file_len {
        return Err(err("file meta group longer than the file".into()));
    }
    Ok(FileLayout {
        meta,
        dataset_offset,
        file_len,
    })
}

/// Is this text representable in ISO 8859-1 (ISO_IR 100)?
pub fn is_latin1(text: &str) -> bool {
    text.chars().all(|c| (c as u32) < 0x100)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::{DataElement, PrimitiveValue, VR};

    #[test]
    fn latin1_round_trip_keeps_diacritics() {
        let mut obj = InMemDicomObject::new_empty();
        obj.put(DataElement::new(
            SPECIFIC_CHARACTER_SET,
            VR::CS,
            PrimitiveValue::from("ISO_IR 100"),
        ));
        obj.put(DataElement::new(
            Tag(0x0010, 0x0010),
            VR::PN,
            PrimitiveValue::from("Müller^Zoë"),
        ));
        let bytes = encode(&obj, "1.2.840.10008.1.2").unwrap();
        assert!(
            bytes.windows(3).any(|w| w == [b'M', 0xFC, b'l']),
            "Latin-1 bytes expected"
        );
        let back = decode(&bytes, "1.2.840.10008.1.2").unwrap();
        let name = back.element(Tag(0x0010, 0x0010)).unwrap().to_str().unwrap();
        assert_eq!(name.trim_end(), "Müller^Zoë");
    }

    #[test]
    fn header_layout_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.dcm");
        let mut bytes = file_header(
            "1.2.840.10008.5.1.4.1.1.2",
            "1.2.3",
            "1.2.840.10008.1.2.1",
            "AE",
        )
        .unwrap();
        let header_len = bytes.len() as u64;
        bytes.extend_from_slice(&[8, 0, 0x18, 0, b'U', b'I', 2, 0, b'1', 0]);
        std::fs::write(&path, &bytes).unwrap();
        let layout = read_layout(&path).unwrap();
        assert_eq!(layout.dataset_offset, header_len);
        assert_eq!(layout.meta.media_storage_sop_instance_uid(), "1.2.3");
        assert_eq!(layout.dataset_len(), 10);
    }
}
