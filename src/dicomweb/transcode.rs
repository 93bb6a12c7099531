//! WADO-RS's view of the one transfer-syntax plan ([`crate::transcode`]): a request's
//! `transfer-syntax` parameter ([`SyntaxRequest`]: `*` or a UID) planned for a stored
//! instance. Instances that need no change are streamed from disk untouched; the others are
//! re-encoded one at a time in memory (decoded, or encoded frame by frame into JPEG-LS,
//! RLE or Deflate on request).

use super::media::SyntaxRequest;
pub use crate::transcode::{transcode_file, Plan, TranscodeError};

pub fn plan(stored: &str, wanted: &SyntaxRequest) -> Plan {
    match wanted {
        SyntaxRequest::AsStored => Plan::AsStored,
        SyntaxRequest::Uid(uid) => crate::transcode::plan(stored, uid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcode::{EXPLICIT_VR_LE, JPEG_2000_LOSSLESS, JPEG_LS_LOSSLESS};

    #[test]
    fn plans() {
        assert_eq!(
            plan("1.2.840.10008.1.2.4.50", &SyntaxRequest::AsStored),
            Plan::AsStored
        );
        let jls = SyntaxRequest::Uid(JPEG_LS_LOSSLESS.into());
        assert_eq!(
            plan(EXPLICIT_VR_LE, &jls),
            Plan::Transcode(JPEG_LS_LOSSLESS.into())
        );
        let j2k = SyntaxRequest::Uid(JPEG_2000_LOSSLESS.into());
        assert_eq!(
            plan(EXPLICIT_VR_LE, &j2k),
            Plan::Transcode(JPEG_2000_LOSSLESS.into())
        );
        let lossy_j2k = SyntaxRequest::Uid("1.2.840.10008.1.2.4.91".into());
        assert_eq!(plan(EXPLICIT_VR_LE, &lossy_j2k), Plan::Impossible);
    }
}
