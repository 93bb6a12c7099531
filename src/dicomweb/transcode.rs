//! Changing a stored instance's transfer syntax for WADO-RS (PS3.18 8.7.3.5): only to the
//! uncompressed little-endian syntaxes, decoding compressed pixel data where dicom-pixeldata
//! has a decoder. Anything else is refused up front (406), never answered wrongly.
//!
//! Transcoding works on the whole instance in memory (dicom-rs has no streaming transcoder);
//! instances that need no change are streamed from disk untouched.

use super::media::{SyntaxRequest, EXPLICIT_VR_LE, IMPLICIT_VR_LE};
use crate::dimse::dataset::{open_stored, Extent};
use dicom_encoding::TransferSyntaxIndex;
use dicom_pixeldata::Transcode;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
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
    match TransferSyntaxRegistry.get(stored) {
        Some(ts) if ts.can_decode_all() => Plan::Transcode(target.to_string()),
        _ => Plan::Impossible,
    }
}

/// The whole Part 10 file at `path` in transfer syntax `target` (blocking: call from
/// `spawn_blocking`).
pub fn transcode_file(path: &Path, target: &str) -> Result<Vec<u8>, TranscodeError> {
    let ts = TransferSyntaxRegistry
        .get(target)
        .ok_or_else(|| TranscodeError::Unknown(target.to_string()))?;
    let (mut obj, _) =
        open_stored(path, Extent::Whole).map_err(|e| TranscodeError::Read(e.to_string()))?;
    obj.transcode(ts)
        .map_err(|e| TranscodeError::Transcode(target.to_string(), e.to_string()))?;
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
        // JPEG 2000: no decoder in this build.
        assert_eq!(plan("1.2.840.10008.1.2.4.90", &evrle), Plan::Impossible);
        // Encoding into a compressed syntax is not offered.
        let jpeg = SyntaxRequest::Uid("1.2.840.10008.1.2.4.50".into());
        assert_eq!(plan(EXPLICIT_VR_LE, &jpeg), Plan::Impossible);
    }
}
