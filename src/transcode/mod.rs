//! The transfer syntax of every retrieve, decided in one place, and the one entry that
//! re-encodes a stored instance (issue 13).
//!
//! Every front asks the same two questions and gets the same answers:
//!
//! - [`plan`]: an instance stored as `stored`, asked for in `wanted` (WADO-RS
//!   `transfer-syntax=`, WADO-URI `transferSyntax`, an XDS-I RAD-69 `TransferSyntaxUID`):
//!   [`Plan::AsStored`], [`Plan::Transcode`] into `wanted`, or [`Plan::Impossible`] (406, a
//!   failed sub-operation, a RAD-69 failure). Lossy output only when `wanted` is lossy, i.e.
//!   the client asked for it by name.
//! - [`choose`]: the peer offers several syntaxes (the contexts a C-GET SCU or a C-MOVE
//!   destination accepted): which one an instance goes in. The stored one first, unless a
//!   configured wire syntax ([`WireSyntax`], `[dicomweb]`/`[dimse] wire_syntax`) applies;
//!   else uncompressed; else a lossless compressed syntax this build can encode. Never lossy.
//!
//! [`transcode`] and [`transcode_file`] are the one decode/encode path (WADO-RS, WADO-URI,
//! C-GET/C-MOVE sub-operations); [`decode_frame`] the one frame decoder (`/frames`,
//! `/rendered`). Both turn a codec's panic into an error: dicom-rs 0.10's RLE decoder
//! indexes past the end of a truncated segment. One instance is held in memory at a time,
//! its frames encoded one by one (dicom-rs has no streaming transcoder).
//!
//! Encoders in this build: JPEG-LS (CharLS, lossless `.4.80` driven by [`jls`], and
//! near-lossless `.4.81` through dicom-rs),
//! JPEG baseline `.4.50` (jpeg-encoder, 8-bit only), RLE Lossless `.5` (ours, [`rle`]),
//! Deflated Explicit VR LE `.1.2.1.99` (flate2 through dicom-rs), the uncompressed little
//! endian syntaxes, JPEG 2000 lossless `.4.90` (the `openjp2` port's encoder, ours to
//! drive: dicom-rs 0.10 registers no JPEG 2000 writer, [`j2k`]).

use crate::dataset::{self, DatasetError};
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::{DefaultDicomObject, InMemDicomObject};
use std::path::Path;

pub mod check;
pub mod j2k;
pub mod jls;
mod jpeg;
pub mod jpeg_dct;
pub mod jpeg_lossless;
mod jxl;
mod native;
mod pixels;
pub mod rle;

pub const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
pub const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
pub const DEFLATED_EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1.99";
pub const JPEG_BASELINE: &str = "1.2.840.10008.1.2.4.50";
pub const JPEG_EXTENDED: &str = "1.2.840.10008.1.2.4.51";
pub const JPEG_LOSSLESS: &str = "1.2.840.10008.1.2.4.57";
pub const JPEG_LOSSLESS_SV1: &str = "1.2.840.10008.1.2.4.70";
pub const JPEG_LS_LOSSLESS: &str = "1.2.840.10008.1.2.4.80";
pub const JPEG_LS_NEAR_LOSSLESS: &str = "1.2.840.10008.1.2.4.81";
pub const JPEG_2000_LOSSLESS: &str = "1.2.840.10008.1.2.4.90";
pub const RLE_LOSSLESS: &str = "1.2.840.10008.1.2.5";
pub const JPEG_XL_LOSSLESS: &str = "1.2.840.10008.1.2.4.110";
pub const JPEG_XL_RECOMPRESSION: &str = "1.2.840.10008.1.2.4.111";
pub const JPEG_XL: &str = "1.2.840.10008.1.2.4.112";

/// JPEG XL, decoded by [`jxl`] (not dicom-rs's adapter, which rescales 12-bit samples).
fn is_jpeg_xl(ts: &str) -> bool {
    matches!(ts, JPEG_XL_LOSSLESS | JPEG_XL_RECOMPRESSION | JPEG_XL)
}

/// Syntaxes this build writes from native pixel data.
const ENCODABLE: &[&str] = &[
    EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
    DEFLATED_EXPLICIT_VR_LE,
    JPEG_LS_LOSSLESS,
    RLE_LOSSLESS,
    JPEG_LS_NEAR_LOSSLESS,
    JPEG_BASELINE,
    JPEG_2000_LOSSLESS,
];

/// Lossless compressed syntaxes [`choose`] may fall back to, best compression first.
/// JPEG 2000 last: it compresses about as JPEG-LS does at a fraction of the speed.
const LOSSLESS_ENCODABLE: &[&str] = &[
    JPEG_LS_LOSSLESS,
    RLE_LOSSLESS,
    DEFLATED_EXPLICIT_VR_LE,
    JPEG_2000_LOSSLESS,
];

/// What serving an instance stored in one syntax in another takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// The stored bytes as they are.
    AsStored,
    /// Re-encode into this transfer syntax UID ([`transcode`]).
    Transcode(String),
    /// Not possible in this build.
    Impossible,
}

fn trim(ts: &str) -> &str {
    ts.trim_end_matches('\0').trim()
}

/// Uncompressed little endian (Implicit or Explicit VR).
pub fn is_native_le(ts: &str) -> bool {
    matches!(trim(ts), IMPLICIT_VR_LE | EXPLICIT_VR_LE)
}

/// Can this build read every data set and pixel data of syntax `ts`?
pub fn can_decode(ts: &str) -> bool {
    dataset::can_decode(trim(ts))
}

/// Can this build write syntax `ts` (from any decodable one)?
pub fn can_encode(ts: &str) -> bool {
    ENCODABLE.contains(&trim(ts))
}

/// Lossy syntaxes: JPEG baseline/extended, JPEG-LS near-lossless, JPEG 2000 (not
/// lossless-only), HTJ2K (not lossless-only), JPEG XL (not lossless), MPEG/HEVC video.
pub fn is_lossy(ts: &str) -> bool {
    matches!(
        trim(ts),
        "1.2.840.10008.1.2.4.50"
            | "1.2.840.10008.1.2.4.51"
            | "1.2.840.10008.1.2.4.81"
            | "1.2.840.10008.1.2.4.91"
            | "1.2.840.10008.1.2.4.93"
            | "1.2.840.10008.1.2.4.203"
            | "1.2.840.10008.1.2.4.111"
            | "1.2.840.10008.1.2.4.112"
    ) || trim(ts).starts_with("1.2.840.10008.1.2.4.10")
}

/// An instance stored as `stored`, asked for in `wanted`.
pub fn plan(stored: &str, wanted: &str) -> Plan {
    let (stored, wanted) = (trim(stored), trim(wanted));
    if stored == wanted {
        Plan::AsStored
    } else if can_decode(stored) && can_encode(wanted) {
        Plan::Transcode(wanted.to_string())
    } else {
        Plan::Impossible
    }
}

/// An instance stored as `stored`, for a client that lists the syntaxes it accepts
/// (`None`: it lists none, as stored), in order of preference (RAD-69 / RAD-75
/// TransferSyntaxUIDList, RAD TF-3 4.69): as stored when listed, else the first listed one
/// it can be transcoded to (a lossy one only because the client named it).
pub fn for_listed(stored: &str, listed: Option<&[String]>) -> Plan {
    let Some(list) = listed else {
        return Plan::AsStored;
    };
    if list.iter().any(|s| trim(s) == trim(stored)) {
        return Plan::AsStored;
    }
    list.iter()
        .map(|s| plan(stored, s))
        .find(|p| matches!(p, Plan::Transcode(_)))
        .unwrap_or(Plan::Impossible)
}

/// A configured syntax for the wire (`wire_syntax`): used for instances stored uncompressed
/// (or deflated) when the peer accepts it. Lossless only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireSyntax(&'static str);

impl WireSyntax {
    /// The configuration's value: empty or "as-stored" means none.
    pub fn parse(value: &str) -> Result<Option<WireSyntax>, String> {
        let value = value.trim();
        if value.is_empty() || value.eq_ignore_ascii_case("as-stored") {
            return Ok(None);
        }
        LOSSLESS_ENCODABLE
            .iter()
            .find(|ts| **ts == value)
            .map(|ts| Some(WireSyntax(ts)))
            .ok_or_else(|| {
                format!(
                    "wire_syntax {value:?}: not a lossless syntax this build encodes \
                     (one of {LOSSLESS_ENCODABLE:?}, or empty for as stored)"
                )
            })
    }

    pub fn uid(self) -> &'static str {
        self.0
    }

    /// Does it apply to an instance stored as `stored`? Only to uncompressed (or deflated)
    /// ones: re-encoding compressed pixel data into another codec gains little and costs much.
    pub fn applies_to(self, stored: &str) -> bool {
        (is_native_le(stored) || trim(stored) == DEFLATED_EXPLICIT_VR_LE) && trim(stored) != self.0
    }
}

/// Of the syntaxes a peer accepted (`offered`), the one to send an instance stored as `stored`
/// in, and how: the wire syntax when it applies and is offered; the stored one; uncompressed;
/// a lossless compressed syntax this build encodes. `None`: nothing offered can be made.
/// Lossy syntaxes are never chosen here unless stored so.
pub fn choose<'a>(
    stored: &str,
    offered: &[&'a str],
    wire: Option<WireSyntax>,
) -> Option<(&'a str, Plan)> {
    let find = |want: &str| offered.iter().copied().find(|o| trim(o) == want);
    if let Some(w) = wire.filter(|w| w.applies_to(stored) && can_decode(stored)) {
        if let Some(o) = find(w.uid()) {
            return Some((o, Plan::Transcode(w.uid().to_string())));
        }
    }
    if let Some(o) = find(trim(stored)) {
        return Some((o, Plan::AsStored));
    }
    if !can_decode(stored) {
        return None;
    }
    [EXPLICIT_VR_LE, IMPLICIT_VR_LE]
        .iter()
        .chain(LOSSLESS_ENCODABLE)
        .find_map(|ts| find(ts).map(|o| (o, Plan::Transcode(ts.to_string()))))
}

/// The syntaxes to propose to a destination for instances stored as `stored` (C-MOVE), in
/// order of [`choose`]'s preference, the stored one included.
pub fn to_propose(stored: &str, wire: Option<WireSyntax>) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    if let Some(w) = wire.filter(|w| w.applies_to(stored) && can_decode(stored)) {
        out.push(vec![w.uid().to_string()]);
    }
    out.push(vec![trim(stored).to_string()]);
    if can_decode(stored) {
        out.push(vec![EXPLICIT_VR_LE.to_string(), IMPLICIT_VR_LE.to_string()]);
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum TranscodeError {
    #[error("transfer syntax {0} is unknown")]
    Unknown(String),
    #[error("cannot read the stored instance: {0}")]
    Read(String),
    #[error("cannot transcode to {0}: {1}")]
    Transcode(String, String),
}

impl From<TranscodeError> for DatasetError {
    fn from(e: TranscodeError) -> Self {
        match e {
            TranscodeError::Unknown(uid) => DatasetError::UnknownTransferSyntax(uid),
            other => DatasetError::Encode(other.to_string()),
        }
    }
}

/// Run a codec, its panic an error (dicom-rs 0.10's RLE decoder on a truncated segment).
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .map_err(|_| format!("the codec failed (panicked) on {what}"))?
}

/// The stored Part 10 file at `path`, parsed whole (after the structure check) and
/// re-encoded in memory into `target`: decoding compressed pixel data ([`native`]),
/// inflating a deflated data set (once, in memory), encoding frame by frame into a
/// compressed syntax. Blocking.
pub fn transcode(path: &Path, target: &str) -> Result<DefaultDicomObject, TranscodeError> {
    use dicom_pixeldata::Transcode;
    let target = trim(target);
    if !can_encode(target) {
        return Err(TranscodeError::Transcode(
            target.to_string(),
            "no encoder in this build".into(),
        ));
    }
    let fail = |e: String| TranscodeError::Transcode(target.to_string(), e);
    let (mut obj, mut stored) = match native::inflated(path).map_err(read_error)? {
        Some((mut meta, data_set)) => {
            // Parsed from memory as the Explicit VR LE data set it is (PS3.5 A.5); kept
            // deflated only when asked for as stored.
            let explicit = syntax(EXPLICIT_VR_LE)?;
            let inner = InMemDicomObject::read_dataset_with_ts(&data_set[..], explicit)
                .map_err(|e| TranscodeError::Read(e.to_string()))?;
            if target == DEFLATED_EXPLICIT_VR_LE {
                return Ok(inner.with_exact_meta(meta));
            }
            meta.set_transfer_syntax(explicit);
            (inner.with_exact_meta(meta), EXPLICIT_VR_LE.to_string())
        }
        None => {
            let (obj, _) =
                dataset::open_stored(path, dataset::Extent::Whole).map_err(read_error)?;
            let stored = trim(obj.meta().transfer_syntax()).to_string();
            (obj, stored)
        }
    };
    if stored == target {
        return Ok(obj);
    }
    // Our RLE decoder bounds what it allocates and fails cleanly on a short or lying
    // segment, so it needs no walk of every segment first (`native::decode_rle`).
    if stored != RLE_LOSSLESS {
        check::pixel_data(&obj, &stored).map_err(fail)?;
    }
    if syntax(&stored)?.is_encapsulated_pixel_data() {
        // Native first, by our path (one copy of the decoded bytes, our RLE decoder).
        let native = if target == IMPLICIT_VR_LE {
            IMPLICIT_VR_LE
        } else {
            EXPLICIT_VR_LE
        };
        let ts = syntax(native)?;
        guarded(&stored, || native::decode_in_place(&mut obj, &stored, ts)).map_err(fail)?;
        stored = native.to_string();
        if stored == target {
            return Ok(obj);
        }
    }
    match target {
        RLE_LOSSLESS | DEFLATED_EXPLICIT_VR_LE | JPEG_2000_LOSSLESS | JPEG_LS_LOSSLESS => {
            // Explicit VR LE first, then encode ourselves (RLE, JPEG 2000, JPEG-LS lossless)
            // or let the writer deflate the data set.
            let native = syntax(EXPLICIT_VR_LE)?;
            guarded(&stored, || obj.transcode(native).map_err(|e| e.to_string())).map_err(fail)?;
            match target {
                RLE_LOSSLESS => rle::encode_object(&mut obj).map_err(fail)?,
                JPEG_LS_LOSSLESS => {
                    guarded(&stored, || jls::encode_object(&mut obj)).map_err(fail)?
                }
                JPEG_2000_LOSSLESS => {
                    guarded(&stored, || j2k::encode_object(&mut obj)).map_err(fail)?
                }
                _ => {}
            }
            let ts = syntax(target)?;
            obj.update_meta(|meta| meta.set_transfer_syntax(ts));
        }
        _ => {
            let ts = syntax(target)?;
            guarded(&stored, || obj.transcode(ts).map_err(|e| e.to_string())).map_err(fail)?;
        }
    }
    Ok(obj)
}

fn syntax(uid: &str) -> Result<&'static dicom_encoding::TransferSyntax, TranscodeError> {
    dicom_transfer_syntax_registry::TransferSyntaxRegistry
        .get(uid)
        .ok_or_else(|| TranscodeError::Unknown(uid.to_string()))
}

fn read_error(e: DatasetError) -> TranscodeError {
    match e {
        DatasetError::UnknownTransferSyntax(uid) => TranscodeError::Unknown(uid),
        other => TranscodeError::Read(other.to_string()),
    }
}

/// The whole Part 10 file at `path` in transfer syntax `target` (blocking). A deflated
/// instance asked for in Explicit VR LE is inflated and served without a parse.
pub fn transcode_file(path: &Path, target: &str) -> Result<Vec<u8>, TranscodeError> {
    if trim(target) == EXPLICIT_VR_LE {
        if let Some(file) = native::inflated_explicit_file(path).map_err(read_error)? {
            return Ok(file);
        }
        // Our own decoders write the samples straight into the output.
        let decoded = guarded("the pixel data", || Ok(native::decoded_file(path)))
            .map_err(|e| TranscodeError::Transcode(EXPLICIT_VR_LE.to_string(), e))??;
        if let Some(out) = decoded {
            return Ok(out);
        }
    }
    let obj = transcode(path, target)?;
    // Room for the pixel data at once: no growing (copying) of the largest value.
    let pixels = obj
        .element(dicom_dictionary_std::tags::PIXEL_DATA)
        .ok()
        .and_then(|e| e.header().len.get())
        .unwrap_or(0);
    let mut out = Vec::with_capacity(pixels as usize + 64 * 1024);
    obj.write_all(&mut out)
        .map_err(|e| TranscodeError::Transcode(target.to_string(), e.to_string()))?;
    Ok(out)
}

/// The data set only (no Part 10 header) of the file at `path` in `target`: a C-STORE
/// sub-operation's data (blocking).
pub fn transcode_dataset(path: &Path, target: &str) -> Result<Vec<u8>, TranscodeError> {
    if trim(target) == EXPLICIT_VR_LE {
        if let Some((_, data_set)) = native::inflated(path).map_err(read_error)? {
            return Ok(data_set);
        }
    }
    let obj = transcode(path, target)?;
    dataset::encode(&obj, target)
        .map_err(|e| TranscodeError::Transcode(target.to_string(), e.to_string()))
}

/// Frame `index` (0-based) of `obj` decoded to native pixels, a codec's panic an error.
pub fn decode_frame(
    obj: &DefaultDicomObject,
    index: u32,
) -> Result<dicom_pixeldata::DecodedPixelData<'static>, String> {
    use dicom_pixeldata::PixelDecoder;
    let stored = trim(obj.meta().transfer_syntax());
    check::pixel_data(obj, stored)?;
    if stored == JPEG_EXTENDED || is_jpeg_xl(stored) {
        // dicom-rs's JPEG decoder (`jpeg-decoder`) has no 12-bit DCT and its JPEG XL adapter
        // rescales samples of fewer than 16 bits: our decoders make the instance native
        // first (every frame; such instances hold one or a few).
        let mut native = obj.clone();
        let explicit = syntax(EXPLICIT_VR_LE).map_err(|e| e.to_string())?;
        guarded(stored, || {
            native::decode_in_place(&mut native, stored, explicit)
        })?;
        return guarded("a frame", || {
            native
                .decode_pixel_data_frame(index)
                .map(|d| d.to_owned())
                .map_err(|e| e.to_string())
        });
    }
    guarded("a frame", || {
        obj.decode_pixel_data_frame(index)
            .map(|d| d.to_owned())
            .map_err(|e| e.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listed_syntax_is_as_stored_else_the_first_that_can_be_made() {
        let evrle = "1.2.840.10008.1.2.1".to_string();
        let jpeg = "1.2.840.10008.1.2.4.50".to_string();
        assert_eq!(for_listed(&jpeg, None), Plan::AsStored);
        assert_eq!(
            for_listed(&jpeg, Some(&[evrle.clone(), jpeg.clone()])),
            Plan::AsStored
        );
        assert_eq!(
            for_listed(&jpeg, Some(std::slice::from_ref(&evrle))),
            Plan::Transcode(evrle.clone())
        );
        // No lossy JPEG 2000 encoder in this build: impossible.
        let j2k = "1.2.840.10008.1.2.4.91".to_string();
        assert_eq!(
            for_listed(&evrle, Some(std::slice::from_ref(&j2k))),
            Plan::Impossible
        );
        assert_eq!(
            for_listed(&evrle, Some(&["".to_string()])),
            Plan::Impossible
        );
    }

    #[test]
    fn plans() {
        assert_eq!(plan(EXPLICIT_VR_LE, EXPLICIT_VR_LE), Plan::AsStored);
        assert_eq!(
            plan(JPEG_BASELINE, EXPLICIT_VR_LE),
            Plan::Transcode(EXPLICIT_VR_LE.into())
        );
        for stored in [
            "1.2.840.10008.1.2.4.90",
            "1.2.840.10008.1.2.4.91",
            "1.2.840.10008.1.2.4.80",
            "1.2.840.10008.1.2.4.81",
            "1.2.840.10008.1.2.1.99",
            "1.2.840.10008.1.2.5",
        ] {
            assert_eq!(
                plan(stored, EXPLICIT_VR_LE),
                Plan::Transcode(EXPLICIT_VR_LE.into()),
                "{stored}"
            );
        }
        // JPEG XL (jxl-oxide) decoded; MPEG-4 video not.
        for stored in [
            "1.2.840.10008.1.2.4.110",
            "1.2.840.10008.1.2.4.111",
            "1.2.840.10008.1.2.4.112",
        ] {
            assert_eq!(
                plan(stored, EXPLICIT_VR_LE),
                Plan::Transcode(EXPLICIT_VR_LE.into()),
                "{stored}"
            );
        }
        assert_eq!(
            plan("1.2.840.10008.1.2.4.102", EXPLICIT_VR_LE),
            Plan::Impossible
        );
        // Compressed on request.
        for wanted in [
            JPEG_LS_LOSSLESS,
            RLE_LOSSLESS,
            DEFLATED_EXPLICIT_VR_LE,
            JPEG_2000_LOSSLESS,
        ] {
            assert_eq!(plan(EXPLICIT_VR_LE, wanted), Plan::Transcode(wanted.into()));
        }
        // No encoder for lossy JPEG 2000 or HTJ2K.
        assert_eq!(
            plan(EXPLICIT_VR_LE, "1.2.840.10008.1.2.4.91"),
            Plan::Impossible
        );
        assert_eq!(
            plan(EXPLICIT_VR_LE, "1.2.840.10008.1.2.4.201"),
            Plan::Impossible
        );
    }

    #[test]
    fn chooses_for_peers() {
        let jls = WireSyntax::parse(JPEG_LS_LOSSLESS).unwrap();
        assert!(WireSyntax::parse("1.2.840.10008.1.2.4.50").is_err());
        assert_eq!(WireSyntax::parse("").unwrap(), None);
        let both = [EXPLICIT_VR_LE, JPEG_LS_LOSSLESS];
        // As stored without a wire syntax.
        assert_eq!(
            choose(EXPLICIT_VR_LE, &both, None),
            Some((EXPLICIT_VR_LE, Plan::AsStored))
        );
        // The wire syntax for uncompressed instances.
        assert_eq!(
            choose(EXPLICIT_VR_LE, &both, jls),
            Some((JPEG_LS_LOSSLESS, Plan::Transcode(JPEG_LS_LOSSLESS.into())))
        );
        // Not for compressed ones.
        assert_eq!(
            choose(JPEG_2000_LOSSLESS, &both, jls),
            Some((EXPLICIT_VR_LE, Plan::Transcode(EXPLICIT_VR_LE.into())))
        );
        // A destination accepting only JPEG-LS gets JPEG 2000 re-encoded.
        assert_eq!(
            choose(JPEG_2000_LOSSLESS, &[JPEG_LS_LOSSLESS], None),
            Some((JPEG_LS_LOSSLESS, Plan::Transcode(JPEG_LS_LOSSLESS.into())))
        );
        // Never lossy by fallback.
        assert_eq!(choose(EXPLICIT_VR_LE, &[JPEG_BASELINE], None), None);
        assert_eq!(
            choose("1.2.840.10008.1.2.4.110", &both, None),
            Some((EXPLICIT_VR_LE, Plan::Transcode(EXPLICIT_VR_LE.into())))
        );
        assert_eq!(choose("1.2.840.10008.1.2.4.102", &both, None), None);
    }
}
