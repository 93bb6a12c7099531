//! SOP classes and transfer syntaxes beeldbrug knows (PS3.4 Annex B/C, PS3.6 Annex A): the UIDs
//! the DIMSE front negotiates and the configuration checks. Also named `dimse::sop`.

pub const VERIFICATION: &str = "1.2.840.10008.1.1";
pub const PATIENT_ROOT_FIND: &str = "1.2.840.10008.5.1.4.1.2.1.1";
pub const PATIENT_ROOT_MOVE: &str = "1.2.840.10008.5.1.4.1.2.1.2";
pub const PATIENT_ROOT_GET: &str = "1.2.840.10008.5.1.4.1.2.1.3";
pub const STUDY_ROOT_FIND: &str = "1.2.840.10008.5.1.4.1.2.2.1";
pub const STUDY_ROOT_MOVE: &str = "1.2.840.10008.5.1.4.1.2.2.2";
pub const STUDY_ROOT_GET: &str = "1.2.840.10008.5.1.4.1.2.2.3";

pub const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
pub const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
pub const DEFLATED_EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1.99";
pub const EXPLICIT_VR_BE: &str = "1.2.840.10008.1.2.2";
pub const JPEG_BASELINE: &str = "1.2.840.10008.1.2.4.50";
pub const RLE_LOSSLESS: &str = "1.2.840.10008.1.2.5";
pub const JPEG_LOSSLESS_SV1: &str = "1.2.840.10008.1.2.4.70";
pub const JPEG_2000_LOSSLESS: &str = "1.2.840.10008.1.2.4.90";
pub const JPEG_2000: &str = "1.2.840.10008.1.2.4.91";

/// Storage SOP classes live under this root (PS3.4 B.5, PS3.6 Annex A), KOS and SR included.
const STORAGE_ROOT: &str = "1.2.840.10008.5.1.4.1.1.";

/// Is this a Storage SOP class we accept (PS3.4 B.5)?
pub fn is_storage(sop_class: &str) -> bool {
    sop_class.starts_with(STORAGE_ROOT)
        && sop_class[STORAGE_ROOT.len()..]
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.')
}

pub fn is_find(sop_class: &str) -> bool {
    matches!(sop_class, PATIENT_ROOT_FIND | STUDY_ROOT_FIND)
}

pub fn is_move(sop_class: &str) -> bool {
    matches!(sop_class, PATIENT_ROOT_MOVE | STUDY_ROOT_MOVE)
}

pub fn is_get(sop_class: &str) -> bool {
    matches!(sop_class, PATIENT_ROOT_GET | STUDY_ROOT_GET)
}

/// Uncompressed little-endian syntaxes that any data set can be re-encoded into.
pub fn is_native_le(ts: &str) -> bool {
    matches!(ts, IMPLICIT_VR_LE | EXPLICIT_VR_LE)
}

/// Transfer syntaxes we can receive and store as received: every syntax the registry knows
/// whose data set encoding we can parse for indexing (Deflated Explicit VR LE included: it is
/// inflated for the checks and the index, and stored deflated).
pub fn can_store_syntax(ts: &str) -> bool {
    use dicom_encoding::TransferSyntaxIndex;
    dicom_transfer_syntax_registry::TransferSyntaxRegistry
        .get(ts)
        .is_some()
}

/// Storage classes with pixel data among [`COMMON_STORAGE`]: the others (SR, KOS, PDF,
/// raw data) have nothing to compress.
pub fn is_image_storage(sop_class: &str) -> bool {
    is_storage(sop_class) && has_pixel_data(sop_class)
}

/// Objects without pixels (PS3.4 B.5): structured reports (KOS included), encapsulated
/// documents, presentation states, waveforms, raw data, registrations, fiducials, surfaces
/// and tractography, RT plans, structure sets and treatment records.
pub fn has_pixel_data(sop_class: &str) -> bool {
    const FAMILIES: [&str; 6] = [
        "1.2.840.10008.5.1.4.1.1.88.",
        "1.2.840.10008.5.1.4.1.1.104.",
        "1.2.840.10008.5.1.4.1.1.11.",
        "1.2.840.10008.5.1.4.1.1.9.",
        "1.2.840.10008.5.1.4.1.1.481.",
        "1.2.840.10008.5.1.4.34.",
    ];
    const IMAGES_AMONG_THEM: [&str; 2] = [
        "1.2.840.10008.5.1.4.1.1.481.1", // RT Image
        "1.2.840.10008.5.1.4.1.1.481.2", // RT Dose
    ];
    const CLASSES: [&str; 6] = [
        "1.2.840.10008.5.1.4.1.1.66",
        "1.2.840.10008.5.1.4.1.1.66.1",
        "1.2.840.10008.5.1.4.1.1.66.2",
        "1.2.840.10008.5.1.4.1.1.66.3",
        "1.2.840.10008.5.1.4.1.1.66.5",
        "1.2.840.10008.5.1.4.1.1.66.6",
    ];
    if IMAGES_AMONG_THEM.contains(&sop_class) {
        return true;
    }
    !(CLASSES.contains(&sop_class) || FAMILIES.iter().any(|p| sop_class.starts_with(p)))
}

/// Common storage SOP classes proposed when we act as the C-GET SCU storage SCP.
pub const COMMON_STORAGE: &[&str] = &[
    "1.2.840.10008.5.1.4.1.1.2",     // CT
    "1.2.840.10008.5.1.4.1.1.2.1",   // Enhanced CT
    "1.2.840.10008.5.1.4.1.1.4",     // MR
    "1.2.840.10008.5.1.4.1.1.4.1",   // Enhanced MR
    "1.2.840.10008.5.1.4.1.1.1",     // CR
    "1.2.840.10008.5.1.4.1.1.1.1",   // DX for presentation
    "1.2.840.10008.5.1.4.1.1.1.1.1", // DX for processing
    "1.2.840.10008.5.1.4.1.1.1.2",   // MG for presentation
    "1.2.840.10008.5.1.4.1.1.6.1",   // US
    "1.2.840.10008.5.1.4.1.1.3.1",   // US multi-frame
    "1.2.840.10008.5.1.4.1.1.7",     // SC
    "1.2.840.10008.5.1.4.1.1.7.2",   // SC multi-frame byte
    "1.2.840.10008.5.1.4.1.1.7.3",   // SC multi-frame word
    "1.2.840.10008.5.1.4.1.1.7.4",   // SC multi-frame true colour
    "1.2.840.10008.5.1.4.1.1.12.1",  // XA
    "1.2.840.10008.5.1.4.1.1.20",    // NM
    "1.2.840.10008.5.1.4.1.1.128",   // PET
    "1.2.840.10008.5.1.4.1.1.88.11", // Basic Text SR
    "1.2.840.10008.5.1.4.1.1.88.22", // Enhanced SR
    "1.2.840.10008.5.1.4.1.1.88.33", // Comprehensive SR
    "1.2.840.10008.5.1.4.1.1.88.59", // Key Object Selection
    "1.2.840.10008.5.1.4.1.1.104.1", // Encapsulated PDF
    "1.2.840.10008.5.1.4.1.1.481.1", // RT Image
    "1.2.840.10008.5.1.4.1.1.66",    // Raw data
];

/// Our implementation class UID and version name: in the A-ASSOCIATE-RQ/AC (PS3.7 D.3.3.2)
/// and in the file meta of what we write (PS3.10 7.1).
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.167357264195187632104622547151208377125";
pub const IMPLEMENTATION_VERSION: &str = "BEELDBRUG_010";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_and_manifests_have_no_pixels() {
        assert!(!has_pixel_data("1.2.840.10008.5.1.4.1.1.88.59"));
        assert!(!has_pixel_data("1.2.840.10008.5.1.4.1.1.104.1"));
        assert!(has_pixel_data("1.2.840.10008.5.1.4.1.1.2"));
        assert!(has_pixel_data("1.2.840.10008.5.1.4.1.1.481.2"));
        assert!(has_pixel_data("1.2.840.10008.5.1.4.1.1.66.4")); // segmentation
        assert!(!has_pixel_data("1.2.840.10008.5.1.4.1.1.66"));
        assert!(!has_pixel_data("1.2.840.10008.5.1.4.1.1.481.5"));
        // The storage classes we propose: only SR, KOS, PDF and raw data are not images.
        for c in COMMON_STORAGE {
            let text = c.starts_with("1.2.840.10008.5.1.4.1.1.88.")
                || matches!(
                    *c,
                    "1.2.840.10008.5.1.4.1.1.104.1" | "1.2.840.10008.5.1.4.1.1.66"
                );
            assert_eq!(is_image_storage(c), !text, "{c}");
        }
    }

    #[test]
    fn classifies_sop_classes() {
        assert!(is_storage("1.2.840.10008.5.1.4.1.1.2"));
        assert!(is_storage("1.2.840.10008.5.1.4.1.1.88.59"));
        assert!(!is_storage("1.2.840.10008.5.1.4.1.2.2.1"));
        assert!(!is_storage("1.2.3.4"));
        assert!(is_find(STUDY_ROOT_FIND) && is_move(PATIENT_ROOT_MOVE) && is_get(STUDY_ROOT_GET));
        assert!(can_store_syntax(JPEG_BASELINE) && can_store_syntax(RLE_LOSSLESS));
        assert!(can_store_syntax(DEFLATED_EXPLICIT_VR_LE) && can_store_syntax(JPEG_2000));
        assert!(!can_store_syntax("1.2.3.4.5"));
    }
}
