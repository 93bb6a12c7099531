//! Compressed pixel data made native, the first half of every transcode out of a compressed
//! syntax, and the Deflated Explicit VR LE data set inflated once.
//!
//! dicom-rs 0.10's `Transcode` decodes into bytes, copies them into a `Vec<u16>` and puts
//! that as the Pixel Data value, which its writer then encodes one sample at a time; here
//! the decoded bytes are the value (OW, little endian, as PS3.5 A.2 has it), written in one
//! piece. RLE Lossless is decoded by our own [`super::rle`] decoder, JPEG lossless by our
//! [`super::jpeg_lossless`], JPEG Baseline and Extended by our [`super::jpeg_dct`] (which
//! `jpeg-decoder` cannot do at 12 bits), JPEG XL by our [`super::jxl`] (which keeps the
//! codestream's bit depth) (what they leave, and every other syntax, by the decoder dicom-rs
//! registers).
//!
//! A Deflated Explicit VR LE data set (PS3.5 A.5) inflates to the Explicit VR LE data set
//! itself: [`inflated`] makes that one inflation (checked by the structure walk on the
//! bytes in memory), which [`inflated_explicit_file`] writes behind a new file meta group
//! without parsing the data set at all.

use crate::dataset::{self, DatasetError};
use dicom_core::{DataElement, Length, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, FileMetaTable};
use std::path::Path;

fn uint(obj: &DefaultDicomObject, tag: Tag) -> Result<usize, String> {
    obj.element(tag)
        .ok()
        .and_then(|e| e.to_int::<u32>().ok())
        .map(|v| v as usize)
        .ok_or_else(|| format!("no usable {tag}"))
}

/// Decode `obj`'s encapsulated Pixel Data (stored as `stored`) to native in place and set
/// its transfer syntax to `native` (Explicit or Implicit VR LE). Photometric Interpretation
/// follows the decoded samples as dicom-rs's decoders deliver them (one sample: MONOCHROME1,
/// MONOCHROME2 or PALETTE COLOR kept, anything else MONOCHROME2; three: RGB); our RLE
/// decoder interleaves colour samples (Planar Configuration 0). No Pixel Data: only the
/// syntax changes. Runs the codec; the caller guards against its panics.
pub fn decode_in_place(
    obj: &mut DefaultDicomObject,
    stored: &str,
    native: &'static dicom_encoding::TransferSyntax,
) -> Result<(), String> {
    if obj.element(tags::PIXEL_DATA).is_err() {
        obj.update_meta(|meta| meta.set_transfer_syntax(native));
        return Ok(());
    }
    let rows = uint(obj, tags::ROWS)?;
    let cols = uint(obj, tags::COLUMNS)?;
    let samples = uint(obj, tags::SAMPLES_PER_PIXEL)?;
    let allocated = uint(obj, tags::BITS_ALLOCATED)?;
    if allocated != 8 && allocated != 16 {
        return Err(format!("{allocated}-bit samples are not supported"));
    }
    let bytes = allocated / 8;
    let frame_len = rows * cols * samples * bytes;
    let pixels = match stored {
        super::RLE_LOSSLESS => decode_rle(obj, rows * cols, samples, bytes)?,
        super::JPEG_LOSSLESS | super::JPEG_LOSSLESS_SV1 => {
            match decode_jpeg(obj, frame_len, bytes, Jpeg::Lossless)? {
                Some(pixels) => pixels,
                None => decode_registered(obj, bytes)?,
            }
        }
        super::JPEG_BASELINE | super::JPEG_EXTENDED => {
            match decode_jpeg(obj, frame_len, bytes, Jpeg::Dct)? {
                Some(pixels) => pixels,
                None => decode_registered(obj, bytes)?,
            }
        }
        s if super::is_jpeg_xl(s) => super::jxl::decode(obj, rows * cols, samples, bytes)?,
        _ => decode_registered(obj, bytes)?,
    };
    // A codec that gave other than Rows x Columns x Samples per Pixel per frame (a JPEG XL
    // stream with more channels than the data set says) would make a data set that lies.
    let frames = obj
        .element(tags::NUMBER_OF_FRAMES)
        .ok()
        .and_then(|e| e.to_int::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    if pixels.len() != frame_len * frames {
        return Err(format!(
            "decoded to {} bytes, the data set announces {frames} frame(s) of {frame_len}",
            pixels.len()
        ));
    }
    let len = u32::try_from(pixels.len()).map_err(|_| "decoded pixel data beyond 4 GiB")?;
    obj.put(DataElement::new_with_len(
        tags::PIXEL_DATA,
        VR::OW,
        Length::defined(len),
        PrimitiveValue::from(pixels),
    ));
    describe_native(obj, stored, samples, native);
    Ok(())
}

/// The attributes that follow decoded samples (Photometric Interpretation, Planar
/// Configuration after our RLE decoder) and the transfer syntax `native`.
fn describe_native(
    obj: &mut DefaultDicomObject,
    stored: &str,
    samples: usize,
    native: &'static dicom_encoding::TransferSyntax,
) {
    if samples == 1 {
        let monochrome = obj
            .element(tags::PHOTOMETRIC_INTERPRETATION)
            .ok()
            .and_then(|e| e.to_str().ok())
            .is_some_and(|p| matches!(p.trim(), "MONOCHROME1" | "MONOCHROME2" | "PALETTE COLOR"));
        if !monochrome {
            obj.put(DataElement::new(
                tags::PHOTOMETRIC_INTERPRETATION,
                VR::CS,
                "MONOCHROME2",
            ));
        }
    } else if samples == 3 {
        obj.put(DataElement::new(
            tags::PHOTOMETRIC_INTERPRETATION,
            VR::CS,
            "RGB",
        ));
        if stored == super::RLE_LOSSLESS {
            obj.put(DataElement::new(
                tags::PLANAR_CONFIGURATION,
                VR::US,
                PrimitiveValue::from(0u16),
            ));
        }
    }
    obj.update_meta(|meta| meta.set_transfer_syntax(native));
}

/// Every frame of an RLE Lossless Pixel Data, one fragment each (PS3.5 A.4.2, G).
fn decode_rle(
    obj: &DefaultDicomObject,
    pixels: usize,
    samples: usize,
    bytes: usize,
) -> Result<Vec<u8>, String> {
    let frames = frames(obj);
    let fragments = obj
        .element(tags::PIXEL_DATA)
        .ok()
        .and_then(|e| e.value().fragments())
        .ok_or("no encapsulated Pixel Data")?;
    let frame_len = pixels * samples * bytes;
    check_rle(fragments, frames, frame_len)?;
    let mut out = vec![0u8; frame_len * frames];
    decode_rle_into(fragments, pixels, samples, bytes, &mut out)?;
    Ok(out)
}

/// The RLE fragments of `frames` frames could decode to `frame_len` bytes each.
fn check_rle<F: AsRef<[u8]>>(
    fragments: &[F],
    frames: usize,
    frame_len: usize,
) -> Result<(), String> {
    if fragments.len() < frames {
        return Err(format!(
            "{frames} frames but {} RLE fragments",
            fragments.len()
        ));
    }
    // Bounded before allocating: PackBits makes at most 64 times its size, so a header
    // that claims more lies (our decoder then fails cleanly on the short segment).
    for (n, fragment) in fragments.iter().take(frames).enumerate() {
        if !super::rle::plausible(fragment.as_ref().len(), frame_len) {
            return Err(format!(
                "RLE frame {}: {} bytes cannot decode to {frame_len}",
                n + 1,
                fragment.as_ref().len()
            ));
        }
    }
    Ok(())
}

/// Every frame into `out` (frames one after the other), after [`check_rle`].
fn decode_rle_into<F: AsRef<[u8]>>(
    fragments: &[F],
    pixels: usize,
    samples: usize,
    bytes: usize,
    out: &mut [u8],
) -> Result<(), String> {
    let frame_len = pixels * samples * bytes;
    if frame_len == 0 {
        return Err("RLE: an empty image".into());
    }
    let mut planes = Vec::new();
    for (n, (frame, fragment)) in out.chunks_exact_mut(frame_len).zip(fragments).enumerate() {
        super::rle::decode_frame(
            fragment.as_ref(),
            pixels,
            samples,
            bytes,
            frame,
            &mut planes,
        )
        .map_err(|e| format!("RLE frame {}: {e}", n + 1))?;
    }
    Ok(())
}

fn frames(obj: &DefaultDicomObject) -> usize {
    obj.element(tags::NUMBER_OF_FRAMES)
        .ok()
        .and_then(|e| e.to_int::<u32>().ok())
        .unwrap_or(1)
        .max(1) as usize
}

/// A frame decoder of ours: codestream, bytes per sample, the frame's bytes to fill.
type FrameDecoder = fn(&[u8], usize, &mut [u8]) -> Result<Option<super::jpeg::Frame>, String>;

/// Our JPEG decoders.
#[derive(Clone, Copy)]
enum Jpeg {
    Lossless,
    Dct,
}

/// Every frame of a JPEG Pixel Data by our decoder: one fragment per frame, or the
/// fragments joined and the frames one after the other (as dicom-rs reads them). `None`: a
/// frame our decoder leaves to `jpeg-decoder`.
fn decode_jpeg(
    obj: &DefaultDicomObject,
    frame_len: usize,
    bytes: usize,
    which: Jpeg,
) -> Result<Option<Vec<u8>>, String> {
    let frames = frames(obj);
    let fragments = obj
        .element(tags::PIXEL_DATA)
        .ok()
        .and_then(|e| e.value().fragments())
        .ok_or("no encapsulated Pixel Data")?;
    let mut out = vec![0u8; frame_len * frames];
    Ok(decode_jpeg_into(fragments, frame_len, bytes, which, &mut out)?.then_some(out))
}

/// [`decode_jpeg`] into `out` (as many frames as it holds). `false`: a frame our decoder
/// leaves to `jpeg-decoder`.
fn decode_jpeg_into<F: AsRef<[u8]>>(
    fragments: &[F],
    frame_len: usize,
    bytes: usize,
    which: Jpeg,
    out: &mut [u8],
) -> Result<bool, String> {
    let (decode, name): (FrameDecoder, _) = match which {
        Jpeg::Lossless => (super::jpeg_lossless::decode, "JPEG lossless"),
        Jpeg::Dct => (super::jpeg_dct::decode, "JPEG"),
    };
    if frame_len == 0 {
        return Err(format!("{name}: an empty image"));
    }
    let frames = out.len() / frame_len;
    let failed = |n: usize| move |e: String| format!("{name} frame {}: {e}", n + 1);
    if fragments.len() == frames {
        for (n, (frame, fragment)) in out.chunks_exact_mut(frame_len).zip(fragments).enumerate() {
            if decode(fragment.as_ref(), bytes, frame)
                .map_err(failed(n))?
                .is_none()
            {
                return Ok(false);
            }
        }
        return Ok(true);
    }
    let joined: Vec<u8> = fragments.iter().flat_map(|f| f.as_ref()).copied().collect();
    let mut at = 0;
    for (n, frame) in out.chunks_exact_mut(frame_len).enumerate() {
        // The next frame starts at the next SOI.
        at += joined[at..]
            .windows(2)
            .position(|w| w == [0xFF, 0xD8])
            .ok_or_else(|| format!("{name} frame {}: missing", n + 1))?;
        match decode(&joined[at..], bytes, frame).map_err(failed(n))? {
            Some(decoded) => at += decoded.end,
            None => return Ok(false),
        }
    }
    Ok(true)
}

/// The whole Part 10 file at `path` in Explicit VR LE when it is stored in a syntax our own
/// decoders take (JPEG baseline, extended and lossless, RLE): the data set written without
/// its Pixel Data, then the Pixel Data header, then every frame decoded straight into the
/// output (no intermediate buffer, no copy of the decoded samples). `None`: another
/// syntax, a frame our JPEG decoder leaves to `jpeg-decoder`, no encapsulated Pixel Data
/// or elements after it; the caller takes the general path. Runs the codec; the caller
/// guards against its panics.
pub fn decoded_file(path: &Path) -> Result<Option<Vec<u8>>, super::TranscodeError> {
    let layout = dataset::read_layout(path).map_err(super::read_error)?;
    let stored = layout.meta.transfer_syntax().trim_end_matches('\0').trim();
    let which = match stored {
        super::RLE_LOSSLESS => None,
        super::JPEG_LOSSLESS | super::JPEG_LOSSLESS_SV1 => Some(Jpeg::Lossless),
        super::JPEG_BASELINE | super::JPEG_EXTENDED => Some(Jpeg::Dct),
        _ => return Ok(None),
    };
    let stored = stored.to_string();
    // The data set up to its Pixel Data is parsed; the fragments are read where they lie
    // in the mapped file (no copy of the compressed data, no allocation per fragment).
    let (mut obj, pixel) =
        dataset::open_stored(path, dataset::Extent::UpToPixelData).map_err(super::read_error)?;
    let Some(pixel) = pixel.filter(|p| p.len.is_none()) else {
        return Ok(None);
    };
    let file_error = |e: std::io::Error| {
        super::read_error(DatasetError::File {
            path: path.display().to_string(),
            problem: e.to_string(),
        })
    };
    let file = std::fs::File::open(path).map_err(file_error)?;
    // SAFETY: a blob file is never written or truncated once renamed into place (as
    // `dicomweb::producer::mapped` says); only read here.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(file_error)?;
    let fail = |e: String| super::TranscodeError::Transcode(super::EXPLICIT_VR_LE.to_string(), e);
    let items = dataset::encapsulated_items(&map, pixel.value_offset as usize).map_err(fail)?;
    if items.end != map.len() {
        // Elements after the Pixel Data: the general path keeps them.
        return Ok(None);
    }
    let fragments = &items.fragments;
    let rows = uint(&obj, tags::ROWS).map_err(fail)?;
    let cols = uint(&obj, tags::COLUMNS).map_err(fail)?;
    let samples = uint(&obj, tags::SAMPLES_PER_PIXEL).map_err(fail)?;
    let allocated = uint(&obj, tags::BITS_ALLOCATED).map_err(fail)?;
    if allocated != 8 && allocated != 16 {
        return Err(fail(format!("{allocated}-bit samples are not supported")));
    }
    let bytes = allocated / 8;
    let frame_len = rows * cols * samples * bytes;
    let frames = frames(&obj);
    match which {
        Some(_) => super::check::encapsulated(&obj, &stored, fragments).map_err(fail)?,
        None => check_rle(fragments, frames, frame_len).map_err(fail)?,
    }
    let total = frame_len
        .checked_mul(frames)
        .filter(|&t| t < u32::MAX as usize - 1)
        .ok_or_else(|| fail("decoded pixel data beyond 4 GiB".into()))?;
    let explicit = dataset::syntax(super::EXPLICIT_VR_LE).map_err(super::read_error)?;
    describe_native(&mut obj, &stored, samples, explicit);
    let mut head = Vec::with_capacity(64 * 1024);
    obj.write_all(&mut head).map_err(|e| fail(e.to_string()))?;
    // Pixel Data, OW, defined length (PS3.5 7.1.2): an even length, padded.
    let padded = total + total % 2;
    head.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00, b'O', b'W', 0, 0]);
    head.extend_from_slice(&(padded as u32).to_le_bytes());
    // Allocated zeroed (`calloc`: fresh pages come zeroed from the kernel) rather than
    // grown and filled: no pass over the output before the decoder writes it.
    let start = head.len();
    let mut out = vec![0u8; start + padded];
    out[..start].copy_from_slice(&head);
    let pixels = &mut out[start..start + total];
    match which {
        None => decode_rle_into(fragments, rows * cols, samples, bytes, pixels).map_err(fail)?,
        Some(jpeg) => {
            if !decode_jpeg_into(fragments, frame_len, bytes, jpeg, pixels).map_err(fail)? {
                return Ok(None);
            }
        }
    }
    Ok(Some(out))
}

/// Every frame, by the decoder dicom-rs registers for the syntax; 16-bit samples in little
/// endian order.
fn decode_registered(obj: &DefaultDicomObject, bytes: usize) -> Result<Vec<u8>, String> {
    use dicom_pixeldata::PixelDecoder;
    let mut data = obj
        .decode_pixel_data()
        .map_err(|e| e.to_string())?
        .into_data();
    if bytes == 2 && cfg!(target_endian = "big") {
        for pair in data.chunks_exact_mut(2) {
            pair.swap(0, 1);
        }
    }
    Ok(data)
}

/// The file meta group and the inflated data set of the Part 10 file at `path` when it is
/// stored as Deflated Explicit VR LE (inflated once, checked by the structure walk in
/// memory). `None`: stored in another syntax.
pub fn inflated(path: &Path) -> Result<Option<(FileMetaTable, Vec<u8>)>, DatasetError> {
    let layout = dataset::read_layout(path)?;
    if layout.meta.transfer_syntax().trim_end_matches('\0') != super::DEFLATED_EXPLICIT_VR_LE {
        return Ok(None);
    }
    let data_set = dataset::inflate_stored(path, &layout)?;
    Ok(Some((layout.meta, data_set)))
}

/// The Part 10 file at `path` in Explicit VR LE when it is stored as Deflated Explicit VR LE:
/// its file meta group with the transfer syntax changed, nothing else, and the data set
/// inflated right behind it (once, checked by the structure walk in memory, never parsed or
/// copied). `None`: stored in another syntax.
pub fn inflated_explicit_file(path: &Path) -> Result<Option<Vec<u8>>, DatasetError> {
    let layout = dataset::read_layout(path)?;
    if layout.meta.transfer_syntax().trim_end_matches('\0') != super::DEFLATED_EXPLICIT_VR_LE {
        return Ok(None);
    }
    let mut meta = layout.meta.clone();
    meta.set_transfer_syntax(dataset::syntax(super::EXPLICIT_VR_LE)?);
    let mut header = Vec::with_capacity(1024);
    header.extend_from_slice(&[0u8; 128]);
    header.extend_from_slice(b"DICM");
    meta.write(&mut header)
        .map_err(|e| DatasetError::Encode(e.to_string()))?;
    dataset::inflate_stored_after(path, &layout, header).map(Some)
}
