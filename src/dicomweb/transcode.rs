//! Changing a stored instance's transfer syntax for WADO-RS (PS3.18 8.7.3.5): only to the
//! uncompressed little-endian syntaxes, decoding compressed pixel data where dicom-pixeldata
//! has a decoder (JPEG, JPEG-LS, JPEG 2000, RLE; a deflated data set is inflated). Anything
//! else is refused up front (406), never answered wrongly.
//!
//! Transcoding works on the whole instance in memory (dicom-rs has no streaming transcoder);
//! instances that need no change are streamed from disk untouched.

use super::media::{SyntaxRequest, EXPLICIT_VR_LE, IMPLICIT_VR_LE};
use crate::dimse::dataset::{can_decode, transcode_stored};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum TranscodeError {
    #[error("transfer syntax {0} is unknown")]
    Unknown(String),
    #[error("cannot read the stored instance: {0}")]
    Read(String),
    #[error("cannot transcode to {0}: {1}")]
    Transcode(String, String),
}

/// What serving `stored` as `wanted` takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// The stored bytes as they are.
    AsStored,
    /// Re-encode into this transfer syntax UID.
    Transcode(String),
    /// Not possible here.
    Impossible,
}

pub fn plan(stored: &str, wanted: &SyntaxRequest) -> Plan {
    let target = match wanted {
        SyntaxRequest::AsStored => return Plan::AsStored,
        SyntaxRequest::Uid(uid) if uid == stored => return Plan::AsStored,
        SyntaxRequest::Uid(uid) => uid.as_str(),
    };
    if target != EXPLICIT_VR_LE && target != IMPLICIT_VR_LE {
        return Plan::Impossible;
    }
    if can_decode(stored) {
        Plan::Transcode(target.to_string())
    } else {
        Plan::Impossible
    }
}

/// The whole Part 10 file at `path` in transfer syntax `target` (blocking: call from
/// `spawn_blocking`).
pub fn transcode_file(path: &Path, target: &str) -> Result<Vec<u8>, TranscodeError> {
    use crate::dimse::dataset::DatasetError;
    let obj = transcode_stored(path, target).map_err(|e| match e {
        DatasetError::UnknownTransferSyntax(uid) => TranscodeError::Unknown(uid),
        DatasetError::Encode(problem) => TranscodeError::Transcode(target.to_string(), problem),
        other => TranscodeError::Read(other.to_string()),
    })?;
    let mut out = Vec::new();
    obj.write_all(&mut out)
        .map_err(|e| TranscodeError::Transcode(target.to_string(), e.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans() {
        let evrle = SyntaxRequest::Uid(EXPLICIT_VR_LE.into());
        assert_eq!(plan(EXPLICIT_VR_LE, &evrle), Plan::AsStored);
        assert_eq!(
            plan("1.2.840.10008.1.2.4.50", &SyntaxRequest::AsStored),
            Plan::AsStored
        );
        assert_eq!(
            plan("1.2.840.10008.1.2.4.50", &evrle),
            Plan::Transcode(EXPLICIT_VR_LE.into())
        );
        assert_eq!(
            plan(IMPLICIT_VR_LE, &evrle),
            Plan::Transcode(EXPLICIT_VR_LE.into())
        );
        // JPEG 2000, JPEG-LS and Deflate are decoded in this build (issue 13).
        for stored in [
            "1.2.840.10008.1.2.4.90",
            "1.2.840.10008.1.2.4.91",
            "1.2.840.10008.1.2.4.80",
            "1.2.840.10008.1.2.4.81",
            "1.2.840.10008.1.2.1.99",
        ] {
            assert_eq!(
                plan(stored, &evrle),
                Plan::Transcode(EXPLICIT_VR_LE.into()),
                "{stored}"
            );
        }
        // No JPEG XL decoder in this build.
        assert_eq!(plan("1.2.840.10008.1.2.4.110", &evrle), Plan::Impossible);
        // Encoding into a compressed syntax is not offered.
        let jpeg = SyntaxRequest::Uid("1.2.840.10008.1.2.4.50".into());
        assert_eq!(plan(EXPLICIT_VR_LE, &jpeg), Plan::Impossible);
    }
}
