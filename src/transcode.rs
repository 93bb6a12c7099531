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
//! Encoders in this build: JPEG-LS (CharLS, lossless `.4.80` and near-lossless `.4.81`),
//! JPEG baseline `.4.50` (jpeg-encoder, 8-bit only), RLE Lossless `.5` (ours, [`rle`]),
//! Deflated Explicit VR LE `.1.2.1.99` (flate2 through dicom-rs), the uncompressed little
//! endian syntaxes. JPEG 2000 encoding is not offered: dicom-rs 0.10 registers no JPEG 2000
//! writer and the `openjp2` port's encoder writes only to a file path or through raw C
//! callbacks (unsafe).

use crate::dataset::{self, DatasetError};
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::DefaultDicomObject;
use std::path::Path;

pub const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
pub const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
pub const DEFLATED_EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1.99";
pub const JPEG_BASELINE: &str = "1.2.840.10008.1.2.4.50";
pub const JPEG_LS_LOSSLESS: &str = "1.2.840.10008.1.2.4.80";
pub const JPEG_LS_NEAR_LOSSLESS: &str = "1.2.840.10008.1.2.4.81";
pub const JPEG_2000_LOSSLESS: &str = "1.2.840.10008.1.2.4.90";
pub const RLE_LOSSLESS: &str = "1.2.840.10008.1.2.5";

/// Syntaxes this build writes from native pixel data.
const ENCODABLE: &[&str] = &[
    EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
    DEFLATED_EXPLICIT_VR_LE,
    JPEG_LS_LOSSLESS,
    RLE_LOSSLESS,
    JPEG_LS_NEAR_LOSSLESS,
    JPEG_BASELINE,
];

/// Lossless compressed syntaxes [`choose`] may fall back to, best compression first.
const LOSSLESS_ENCODABLE: &[&str] = &[JPEG_LS_LOSSLESS, RLE_LOSSLESS, DEFLATED_EXPLICIT_VR_LE];

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
/// re-encoded in memory into `target`: decoding compressed pixel data, inflating a deflated
/// data set, encoding frame by frame into a compressed syntax. Blocking.
pub fn transcode(path: &Path, target: &str) -> Result<DefaultDicomObject, TranscodeError> {
    use dicom_pixeldata::Transcode;
    let target = trim(target);
    if !can_encode(target) {
        return Err(TranscodeError::Transcode(
            target.to_string(),
            "no encoder in this build".into(),
        ));
    }
    let (mut obj, _) = dataset::open_stored(path, dataset::Extent::Whole).map_err(|e| match e {
        DatasetError::UnknownTransferSyntax(uid) => TranscodeError::Unknown(uid),
        other => TranscodeError::Read(other.to_string()),
    })?;
    let fail = |e: String| TranscodeError::Transcode(target.to_string(), e);
    let stored = obj
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_string();
    if stored == target {
        return Ok(obj);
    }
    check::pixel_data(&obj, &stored).map_err(fail)?;
    let syntax = |uid: &str| {
        dicom_transfer_syntax_registry::TransferSyntaxRegistry
            .get(uid)
            .ok_or_else(|| TranscodeError::Unknown(uid.to_string()))
    };
    match target {
        RLE_LOSSLESS | DEFLATED_EXPLICIT_VR_LE => {
            // Decode to Explicit VR LE first, then encode ourselves (RLE) or let the writer
            // deflate the data set.
            let native = syntax(EXPLICIT_VR_LE)?;
            guarded(&stored, || obj.transcode(native).map_err(|e| e.to_string())).map_err(fail)?;
            if target == RLE_LOSSLESS {
                rle::encode_object(&mut obj).map_err(fail)?;
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

/// The whole Part 10 file at `path` in transfer syntax `target` (blocking).
pub fn transcode_file(path: &Path, target: &str) -> Result<Vec<u8>, TranscodeError> {
    let obj = transcode(path, target)?;
    let mut out = Vec::new();
    obj.write_all(&mut out)
        .map_err(|e| TranscodeError::Transcode(target.to_string(), e.to_string()))?;
    Ok(out)
}

/// The data set only (no Part 10 header) of the file at `path` in `target`: a C-STORE
/// sub-operation's data (blocking).
pub fn transcode_dataset(path: &Path, target: &str) -> Result<Vec<u8>, TranscodeError> {
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
    check::pixel_data(obj, obj.meta().transfer_syntax())?;
    guarded("a frame", || {
        obj.decode_pixel_data_frame(index)
            .map(|d| d.to_owned())
            .map_err(|e| e.to_string())
    })
}

/// Checks of encapsulated pixel data before any decoder sees it: a codestream that lies
/// about its size or is cut short fails here with a reason, never reaching a codec that
/// would panic (dicom-rs 0.10's RLE decoder indexes past a short segment or a header shorter
/// than it claims) or allocate what a forged header announces (a JPEG 2000 SIZ, a JPEG SOF
/// of 65535 x 65535 on a 96 x 80 image).
pub mod check {
    use super::tags;
    use dicom_object::DefaultDicomObject;

    fn uint(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> Option<u32> {
        obj.element(tag).ok()?.to_int::<u32>().ok()
    }

    /// The encapsulated pixel data of `obj` (stored as `ts`) against its Rows, Columns,
    /// Samples per Pixel and Bits Allocated: RLE headers, segment offsets and lengths; the
    /// image size in JPEG, JPEG-LS and JPEG 2000 frame headers. Native pixel data passes.
    pub fn pixel_data(obj: &DefaultDicomObject, ts: &str) -> Result<(), String> {
        let Ok(element) = obj.element(tags::PIXEL_DATA) else {
            return Ok(());
        };
        let Some(fragments) = element.value().fragments() else {
            return Ok(());
        };
        let rows = uint(obj, tags::ROWS).ok_or("no Rows")?;
        let cols = uint(obj, tags::COLUMNS).ok_or("no Columns")?;
        let samples = uint(obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1);
        let allocated = uint(obj, tags::BITS_ALLOCATED).ok_or("no Bits Allocated")?;
        let ts = ts.trim_end_matches('\0');
        for (n, fragment) in fragments.iter().enumerate() {
            let n = n + 1;
            if ts == super::RLE_LOSSLESS {
                let segments = samples as usize * (allocated as usize).div_ceil(8);
                rle(fragment, segments, rows as usize * cols as usize)
                    .map_err(|e| format!("RLE fragment {n}: {e}"))?;
            } else if let Some((w, h)) = frame_size(fragment)? {
                // A frame spans fragments: only those starting a codestream carry a header.
                if w != cols || (h != rows && h != 0) {
                    return Err(format!(
                        "fragment {n}: its codestream is {w} x {h}, the image {cols} x {rows}"
                    ));
                }
            }
        }
        Ok(())
    }

    fn u32le(b: &[u8], at: usize) -> Option<usize> {
        Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?) as usize)
    }

    /// An RLE frame (PS3.5 G.5): its header names `segments` segments in order within the
    /// fragment, each decoding to at least `pixels` bytes.
    pub fn rle(fragment: &[u8], segments: usize, pixels: usize) -> Result<(), String> {
        let count = u32le(fragment, 0).ok_or("shorter than its header")?;
        if fragment.len() < 64 {
            return Err("shorter than its header".into());
        }
        if count != segments {
            return Err(format!("{count} segments, {segments} expected"));
        }
        let mut offsets = (0..count)
            .map(|i| u32le(fragment, 4 + 4 * i).unwrap_or(usize::MAX))
            .collect::<Vec<_>>();
        offsets.push(fragment.len());
        for pair in offsets.windows(2) {
            let (start, end) = (pair[0], pair[1]);
            if start < 64 || start > end || end > fragment.len() {
                return Err(format!("segment at {start}..{end} outside the fragment"));
            }
            let decoded = packbits_len(&fragment[start..end], pixels);
            if decoded < pixels {
                return Err(format!("a segment decodes to {decoded} of {pixels} bytes"));
            }
        }
        Ok(())
    }

    /// How many bytes a PackBits segment decodes to (stopping at `enough`), reading only
    /// what is there.
    fn packbits_len(mut seg: &[u8], enough: usize) -> usize {
        let mut out = 0;
        while out < enough {
            let Some((&h, rest)) = seg.split_first() else {
                break;
            };
            let h = h as i8;
            if h >= 0 {
                let k = h as usize + 1;
                if rest.len() < k {
                    return out + rest.len();
                }
                out += k;
                seg = &rest[k..];
            } else if h != -128 {
                if rest.is_empty() {
                    break;
                }
                out += (1 - h as isize) as usize;
                seg = &rest[1..];
            } else {
                seg = rest;
            }
        }
        out
    }

    /// The image size a fragment's codestream announces, when it starts one: JPEG and
    /// JPEG-LS (SOI, then the SOFn or SOF55 segment), JPEG 2000 (SOC SIZ, or a JP2 file
    /// with its codestream box). `None`: a continuation fragment.
    pub fn frame_size(fragment: &[u8]) -> Result<Option<(u32, u32)>, String> {
        let be16 = |at: usize| -> Option<u32> {
            Some(u16::from_be_bytes(fragment.get(at..at + 2)?.try_into().ok()?) as u32)
        };
        let be32 = |at: usize| -> Option<u32> {
            Some(u32::from_be_bytes(
                fragment.get(at..at + 4)?.try_into().ok()?,
            ))
        };
        if fragment.starts_with(&[0xFF, 0xD8]) {
            let mut at = 2;
            loop {
                let marker = be16(at).ok_or("JPEG stream ends before its frame header")?;
                if marker >> 8 != 0xFF {
                    return Err("JPEG stream without a frame header".into());
                }
                let marker = marker as u8;
                match marker {
                    0xC0..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF | 0xF7 => {
                        let h = be16(at + 5).ok_or("JPEG frame header cut short")?;
                        let w = be16(at + 7).ok_or("JPEG frame header cut short")?;
                        return Ok(Some((w, h)));
                    }
                    0xDA | 0xD9 => return Err("JPEG stream without a frame header".into()),
                    0xFF => at += 1,
                    0x01 | 0xD0..=0xD7 => at += 2,
                    _ => {
                        let len = be16(at + 2).ok_or("JPEG segment cut short")? as usize;
                        at += 2 + len;
                    }
                }
            }
        }
        let soc = if fragment.starts_with(&[0xFF, 0x4F, 0xFF, 0x51]) {
            Some(0)
        } else if fragment.starts_with(&[0, 0, 0, 0x0C, 0x6A, 0x50, 0x20, 0x20]) {
            let within = &fragment[..fragment.len().min(1 << 16)];
            Some(
                within
                    .windows(4)
                    .position(|w| w == [0xFF, 0x4F, 0xFF, 0x51])
                    .ok_or("JP2 file without a codestream")?,
            )
        } else {
            None
        };
        let Some(soc) = soc else { return Ok(None) };
        // SIZ: FF51 Lsiz Rsiz Xsiz Ysiz XOsiz YOsiz.
        let siz = soc + 2;
        let field = |i: usize| be32(siz + 6 + 4 * i).ok_or("JPEG 2000 SIZ cut short");
        let (x, y, xo, yo) = (field(0)?, field(1)?, field(2)?, field(3)?);
        if xo > x || yo > y {
            return Err("JPEG 2000 SIZ with its origin beyond the image".into());
        }
        Ok(Some((x - xo, y - yo)))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn rle_frames_are_checked() {
            let frame =
                super::super::rle::encode_frame(&[1, 0, 2, 0, 3, 0], 3, 1, 2, false).unwrap();
            assert_eq!(rle(&frame, 2, 3), Ok(()));
            assert!(rle(&frame[..frame.len() - 2], 2, 3).is_err());
            assert!(rle(&frame[..40], 2, 3).is_err());
            assert!(rle(&frame, 1, 3).is_err());
            assert!(rle(&frame, 2, 4).is_err());
            let mut lying = frame.clone();
            lying[8..12].copy_from_slice(&9999u32.to_le_bytes());
            assert!(rle(&lying, 2, 3).is_err());
        }

        #[test]
        fn codestream_sizes() {
            // JPEG: SOI, APP0 of 4 bytes, SOF0 of 16 x 8.
            let jpeg = [
                0xFF, 0xD8, 0xFF, 0xE0, 0, 4, 0, 0, 0xFF, 0xC0, 0, 11, 8, 0, 8, 0, 16, 1,
            ];
            assert_eq!(frame_size(&jpeg), Ok(Some((16, 8))));
            assert!(frame_size(&jpeg[..12]).is_err());
            let mut j2k = vec![0xFF, 0x4F, 0xFF, 0x51, 0, 41, 0, 0];
            for v in [100u32, 50, 4, 0] {
                j2k.extend_from_slice(&v.to_be_bytes());
            }
            assert_eq!(frame_size(&j2k), Ok(Some((96, 50))));
            assert_eq!(frame_size(&[1, 2, 3]), Ok(None));
        }
    }
}

/// RLE Lossless (PS3.5 Annex G) encoding: dicom-rs 0.10 decodes RLE but has no encoder.
pub mod rle {
    use super::tags;
    use dicom_core::value::PixelFragmentSequence;
    use dicom_core::{DataElement, Length, VR};
    use dicom_object::DefaultDicomObject;

    /// PackBits one byte plane (PS3.5 G.3.1): literal runs of up to 128 bytes, replicate
    /// runs of 2..=128; the segment padded to an even length.
    pub fn pack_bits(plane: &[u8], out: &mut Vec<u8>) {
        let mut i = 0;
        while i < plane.len() {
            let mut run = 1;
            while i + run < plane.len() && run < 128 && plane[i + run] == plane[i] {
                run += 1;
            }
            if run >= 2 {
                out.push((257 - run) as u8);
                out.push(plane[i]);
                i += run;
                continue;
            }
            // A literal run, up to the next repeat of two or more.
            let start = i;
            while i < plane.len() && i - start < 128 {
                if i + 1 < plane.len() && plane[i + 1] == plane[i] {
                    break;
                }
                i += 1;
            }
            if i == start {
                // unreachable in practice: a repeat starts here; take one byte literally
                i += 1;
            }
            out.push((i - start - 1) as u8);
            out.extend_from_slice(&plane[start..i]);
        }
        if out.len() % 2 == 1 {
            out.push(0);
        }
    }

    /// One frame of native little-endian pixels: `samples` per pixel of `bytes` each,
    /// interleaved (`planar` false) or by plane. Segments per PS3.5 G.2: per sample, most
    /// significant byte first.
    pub fn encode_frame(
        frame: &[u8],
        pixels: usize,
        samples: usize,
        bytes: usize,
        planar: bool,
    ) -> Result<Vec<u8>, String> {
        let segments = samples * bytes;
        if segments == 0 || segments > 15 {
            return Err(format!("RLE holds at most 15 segments, not {segments}"));
        }
        if frame.len() < pixels * segments {
            return Err("pixel data shorter than its frames".into());
        }
        let mut out = vec![0u8; 64];
        out[..4].copy_from_slice(&(segments as u32).to_le_bytes());
        let mut plane = Vec::with_capacity(pixels);
        for s in 0..samples {
            for b in (0..bytes).rev() {
                let n = s * bytes + (bytes - 1 - b);
                let offset = out.len() as u32;
                out[4 + 4 * n..8 + 4 * n].copy_from_slice(&offset.to_le_bytes());
                plane.clear();
                plane.extend((0..pixels).map(|p| {
                    let at = if planar {
                        (s * pixels + p) * bytes + b
                    } else {
                        (p * samples + s) * bytes + b
                    };
                    frame[at]
                }));
                pack_bits(&plane, &mut out);
            }
        }
        Ok(out)
    }

    fn uint(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> Result<usize, String> {
        obj.element(tag)
            .ok()
            .and_then(|e| e.to_int::<u32>().ok())
            .map(|v| v as usize)
            .ok_or_else(|| format!("no usable {tag}"))
    }

    /// Replace `obj`'s native Pixel Data by RLE fragments, one per frame, with a basic
    /// offset table. The caller sets the transfer syntax. Colour images keep their Planar
    /// Configuration (segments are by sample whatever it says, PS3.5 G.2); only grey-scale
    /// images are tested.
    pub fn encode_object(obj: &mut DefaultDicomObject) -> Result<(), String> {
        let rows = uint(obj, tags::ROWS)?;
        let cols = uint(obj, tags::COLUMNS)?;
        let samples = uint(obj, tags::SAMPLES_PER_PIXEL)?;
        let allocated = uint(obj, tags::BITS_ALLOCATED)?;
        if allocated % 8 != 0 {
            return Err(format!("RLE of {allocated}-bit samples is not supported"));
        }
        let planar = samples > 1 && uint(obj, tags::PLANAR_CONFIGURATION).unwrap_or(0) == 1;
        let frames = obj
            .element(tags::NUMBER_OF_FRAMES)
            .ok()
            .and_then(|e| e.to_int::<u32>().ok())
            .unwrap_or(1)
            .max(1) as usize;
        let bytes = allocated / 8;
        let pixels = rows * cols;
        let frame_len = pixels * samples * bytes;
        let data = obj
            .element(tags::PIXEL_DATA)
            .map_err(|e| e.to_string())?
            .to_bytes()
            .map_err(|e| e.to_string())?
            .into_owned();
        if data.len() < frame_len * frames {
            return Err("pixel data shorter than its frames".into());
        }
        let mut fragments = Vec::with_capacity(frames);
        let mut offsets = Vec::with_capacity(frames);
        let mut at = 0u32;
        for f in 0..frames {
            let frame = &data[f * frame_len..(f + 1) * frame_len];
            let encoded = encode_frame(frame, pixels, samples, bytes, planar)?;
            offsets.push(at);
            at += encoded.len() as u32 + 8;
            fragments.push(encoded);
        }
        drop(data);
        obj.put(DataElement::new_with_len(
            tags::PIXEL_DATA,
            VR::OB,
            Length::UNDEFINED,
            PixelFragmentSequence::new(offsets, fragments),
        ));
        Ok(())
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// PS3.5 G.3.2's decoder, to check our encoder against.
        fn unpack(mut seg: &[u8], n: usize) -> Vec<u8> {
            let mut out = Vec::new();
            while out.len() < n && !seg.is_empty() {
                let h = seg[0] as i8;
                seg = &seg[1..];
                if h >= 0 {
                    let k = h as usize + 1;
                    out.extend_from_slice(&seg[..k]);
                    seg = &seg[k..];
                } else if h != -128 {
                    out.extend(std::iter::repeat_n(seg[0], (1 - h as isize) as usize));
                    seg = &seg[1..];
                }
            }
            out
        }

        #[test]
        fn pack_bits_round_trips() {
            let cases: Vec<Vec<u8>> = vec![
                vec![],
                vec![7],
                vec![1, 2],
                vec![5; 300],
                (0..=255u8).cycle().take(700).collect(),
                [vec![1, 2, 3], vec![9; 129], vec![4, 4, 5], vec![6; 2]].concat(),
            ];
            for plane in cases {
                let mut seg = Vec::new();
                pack_bits(&plane, &mut seg);
                assert_eq!(seg.len() % 2, 0);
                assert_eq!(unpack(&seg, plane.len()), plane);
            }
        }

        #[test]
        fn frame_segments_msb_first() {
            let frame = [0x34u8, 0x12, 0x78, 0x56]; // two 16-bit pixels
            let enc = encode_frame(&frame, 2, 1, 2, false).unwrap();
            assert_eq!(u32::from_le_bytes(enc[..4].try_into().unwrap()), 2);
            let first = u32::from_le_bytes(enc[4..8].try_into().unwrap()) as usize;
            let second = u32::from_le_bytes(enc[8..12].try_into().unwrap()) as usize;
            assert_eq!(first, 64);
            assert_eq!(unpack(&enc[first..second], 2), vec![0x12, 0x56]);
            assert_eq!(unpack(&enc[second..], 2), vec![0x34, 0x78]);
        }
    }
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
        // No JPEG 2000 encoder in this build : impossible.
        let j2k = "1.2.840.10008.1.2.4.90".to_string();
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
        // No JPEG XL decoder in this build.
        assert_eq!(
            plan("1.2.840.10008.1.2.4.110", EXPLICIT_VR_LE),
            Plan::Impossible
        );
        // Compressed on request.
        for wanted in [JPEG_LS_LOSSLESS, RLE_LOSSLESS, DEFLATED_EXPLICIT_VR_LE] {
            assert_eq!(plan(EXPLICIT_VR_LE, wanted), Plan::Transcode(wanted.into()));
        }
        // No JPEG 2000 encoder.
        assert_eq!(plan(EXPLICIT_VR_LE, JPEG_2000_LOSSLESS), Plan::Impossible);
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
        assert_eq!(choose("1.2.840.10008.1.2.4.110", &both, None), None);
    }
}
