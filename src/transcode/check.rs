//! Checks of encapsulated pixel data before any decoder sees it: a codestream that lies
//! about its size or is cut short fails here with a reason, never reaching a codec that
//! would panic (dicom-rs 0.10's RLE decoder indexes past a short segment or a header shorter
//! than it claims) or allocate what a forged header announces (a JPEG 2000 SIZ, a JPEG SOF
//! of 65535 x 65535 on a 96 x 80 image).

use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;

fn uint(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> Option<u32> {
    obj.element(tag).ok()?.to_int::<u32>().ok()
}

/// The encapsulated pixel data of `obj` (stored as `ts`) against its Rows, Columns,
/// Samples per Pixel and Bits Allocated: RLE headers, segment offsets and lengths; the
/// image size in JPEG, JPEG-LS and JPEG 2000 frame headers. Native pixel data passes, once
/// its [`sample_bits`] do.
pub fn pixel_data(obj: &DefaultDicomObject, ts: &str) -> Result<(), String> {
    let Ok(element) = obj.element(tags::PIXEL_DATA) else {
        return Ok(());
    };
    let Some(fragments) = element.value().fragments() else {
        return sample_bits(obj);
    };
    encapsulated(obj, ts, fragments)?;
    let ts = ts.trim_end_matches('\0');
    if matches!(ts, super::JPEG_LS_LOSSLESS | super::JPEG_LS_NEAR_LOSSLESS) {
        jpeg_ls_frames_end(obj)?;
    }
    Ok(())
}

/// [`pixel_data`]'s checks of `fragments`, the encapsulated Pixel Data of `obj` held apart
/// from it (borrowed from a mapped file): the sample bits and each fragment's header, but
/// not the JPEG-LS end of frame, which our decoders do not need.
pub fn encapsulated<F: AsRef<[u8]>>(
    obj: &DefaultDicomObject,
    ts: &str,
    fragments: &[F],
) -> Result<(), String> {
    sample_bits(obj)?;
    let rows = uint(obj, tags::ROWS).ok_or("no Rows")?;
    let cols = uint(obj, tags::COLUMNS).ok_or("no Columns")?;
    let samples = uint(obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1);
    let allocated = uint(obj, tags::BITS_ALLOCATED).ok_or("no Bits Allocated")?;
    let ts = ts.trim_end_matches('\0');
    for (n, fragment) in fragments.iter().enumerate() {
        let (n, fragment) = (n + 1, fragment.as_ref());
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

/// Bits Stored from 1 to Bits Allocated (PS3.3 C.7.6.3.1.1; PS3.5 8.1.1). dicom-pixeldata
/// 0.10 sizes its rendering LUTs by the power of two at or above Bits Stored, a shift that
/// overflows past 31 (a panic with overflow checks on, a wrong LUT without): a data set with
/// Bits Stored 1036 and Bits Allocated 16 (`fuzz/corpus/stored_dataset/bits-stored-1036`)
/// fails here, before any decoder or LUT.
fn sample_bits(obj: &DefaultDicomObject) -> Result<(), String> {
    let (Some(allocated), Some(stored)) = (
        uint(obj, tags::BITS_ALLOCATED),
        uint(obj, tags::BITS_STORED),
    ) else {
        return Ok(());
    };
    if stored == 0 || stored > allocated {
        return Err(format!(
            "Bits Stored {stored} is not within Bits Allocated {allocated}"
        ));
    }
    Ok(())
}

/// Every JPEG-LS frame of `obj`, as the decoder will be given it (dicom-rs's frame mapping:
/// one fragment per frame, or the basic offset table), ends with an EOI marker (FF D9, ISO/IEC
/// 14495-1 C.1), a NULL padding byte allowed after it (PS3.5 A.4). CharLS 2.4 needs it: its
/// bit reader stops at a marker, but at the end of a buffer without one it goes on reading
/// zero bits into a negative bit count, and a forged Golomb code then loops some 2^32 times
/// (seconds per frame; `fuzz/corpus/codestream/jpeg-ls-no-eoi`) before its "invalid data".
/// Every stream CharLS decodes has the EOI after its scan (it reads it after the last one),
/// and encoders (CharLS, DCMTK, pyjpegls) write it last, so nothing decodable is refused.
fn jpeg_ls_frames_end(obj: &DefaultDicomObject) -> Result<(), String> {
    use dicom_encoding::adapters::PixelDataObject;
    let frames = obj.number_of_frames().unwrap_or(1).max(1);
    for frame in 0..frames {
        // No such frame: the decoder fails on it by itself, quickly.
        let Some(data) = obj.frame_pixel_data(frame) else {
            break;
        };
        let end = data.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        if !data[..end].ends_with(&[0xFF, 0xD9]) {
            return Err(format!(
                "JPEG-LS frame {} does not end with an EOI marker",
                frame + 1
            ));
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
/// JPEG-LS (SOI, then the SOFn or SOF55 segment), JPEG 2000 and HTJ2K (SOC SIZ, or a JP2
/// file with its codestream box), JPEG XL (its SizeHeader, naked or in its container).
/// `None`: a continuation fragment.
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
    if let Some(size) = jxl_size(fragment)? {
        return Ok(Some(size));
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

/// The JPEG XL container's signature box (ISO 18181-2).
const JXL_CONTAINER: [u8; 12] = [
    0, 0, 0, 0x0C, b'J', b'X', b'L', b' ', 0x0D, 0x0A, 0x87, 0x0A,
];

/// The image size (width, height) of a JPEG XL codestream (ISO 18181-1 D.2, the SizeHeader
/// after the 0xFF0A signature), naked or in the `jxlc`/first `jxlp` box of a container.
/// `None`: not JPEG XL. jxl-oxide allocates what this header announces before it reads any
/// pixel, so a header lying about the size must not reach it.
fn jxl_size(fragment: &[u8]) -> Result<Option<(u32, u32)>, String> {
    let codestream = if fragment.starts_with(&[0xFF, 0x0A]) {
        &fragment[2..]
    } else if fragment.starts_with(&JXL_CONTAINER) {
        let mut at = JXL_CONTAINER.len();
        loop {
            let head = fragment
                .get(at..at + 8)
                .ok_or("JPEG XL container without a codestream box")?;
            let size = u32::from_be_bytes(head[..4].try_into().unwrap()) as usize;
            let (start, end) = match size {
                0 => (at + 8, fragment.len()),
                1 => {
                    let large = fragment
                        .get(at + 8..at + 16)
                        .ok_or("JPEG XL box cut short")?;
                    let large = u64::from_be_bytes(large.try_into().unwrap());
                    let end = usize::try_from(large)
                        .ok()
                        .and_then(|l| at.checked_add(l))
                        .ok_or("JPEG XL box beyond the fragment")?;
                    (at + 16, end)
                }
                n if n < 8 => return Err("JPEG XL box shorter than its header".into()),
                n => (at + 8, at.saturating_add(n)),
            };
            match &head[4..] {
                b"jxlc" => break fragment.get(start..).unwrap_or_default(),
                b"jxlp" => break fragment.get(start + 4..).unwrap_or_default(),
                _ => {}
            }
            if end <= at || end >= fragment.len() {
                return Err("JPEG XL container without a codestream box".into());
            }
            at = end;
        }
    } else {
        return Ok(None);
    };
    let codestream = codestream
        .strip_prefix(&[0xFF, 0x0A][..])
        .unwrap_or(codestream);
    // Bits are read least significant first (ISO 18181-1 B.2.1).
    let mut bit = 0usize;
    let mut read = |n: usize| -> Result<u32, String> {
        let mut value = 0u32;
        for i in 0..n {
            let byte = codestream
                .get(bit / 8)
                .ok_or("JPEG XL size header cut short")?;
            value |= u32::from((byte >> (bit % 8)) & 1) << i;
            bit += 1;
        }
        Ok(value)
    };
    fn dimension(
        read: &mut impl FnMut(usize) -> Result<u32, String>,
        small: bool,
    ) -> Result<u64, String> {
        if small {
            return Ok((u64::from(read(5)?) + 1) * 8);
        }
        let bits = [9, 13, 18, 30][read(2)? as usize];
        Ok(u64::from(read(bits)?) + 1)
    }
    let small = read(1)? == 1;
    let height = dimension(&mut read, small)?;
    let ratio = read(3)?;
    let width = match ratio {
        0 => dimension(&mut read, small)?,
        r => {
            let (num, den) =
                [(1, 1), (12, 10), (4, 3), (3, 2), (16, 9), (5, 4), (2, 1)][r as usize - 1];
            height * num / den
        }
    };
    let fit = |v: u64| u32::try_from(v).map_err(|_| "JPEG XL image beyond 2^32 pixels wide");
    Ok(Some((fit(width)?, fit(height)?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rle_frames_are_checked() {
        let frame =
            crate::transcode::rle::encode_frame(&[1, 0, 2, 0, 3, 0], 3, 1, 2, false).unwrap();
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
        // JPEG XL as libjxl writes a 80 x 96 image: small header, height 12 x 8, ratio 0,
        // width 10 x 8; then 1000 x 1 (not small, U32 selector 0, 9 bits) and a 2:1 ratio.
        assert_eq!(
            frame_size(&[0xFF, 0x0A, 0x17, 0x12, 0x0C]),
            Ok(Some((80, 96)))
        );
        assert!(frame_size(&[0xFF, 0x0A, 0x17]).is_err());
        let mut contained = JXL_CONTAINER.to_vec();
        contained.extend_from_slice(&[0, 0, 0, 20, b'f', b't', b'y', b'p']);
        contained.extend_from_slice(b"jxl \0\0\0\0jxl ");
        contained.extend_from_slice(&[0, 0, 0, 0, b'j', b'x', b'l', b'c', 0xFF, 0x0A, 0x17, 0x12]);
        assert_eq!(frame_size(&contained), Ok(Some((80, 96))));
        // height 1 (selector 0, 9 bits of 0), ratio 7 (2:1): 2 x 1.
        assert_eq!(frame_size(&[0xFF, 0x0A, 0x00, 0x70]), Ok(Some((2, 1))));
    }
}
