//! JPEG-LS lossless (`.4.80`) encoding by CharLS, ours to drive.
//!
//! dicom-rs 0.10's adapter (through the `charls` crate) gives CharLS a destination buffer of
//! CharLS's own estimate and leaves the interleave mode at "none" (colour by plane), while
//! the samples it passes are interleaved by pixel (Planar Configuration 0): CharLS codes the
//! pixels as if they were planes, the stream grows past the estimate and the encode fails
//! ("JPEG-LS encoding failed", CharLS error 3, destination buffer too small). Every 8-bit RGB
//! instance asked for in JPEG-LS failed so (a C-GET by `getscu +xt` of an RGB HTJ2K or JPEG XL
//! instance ended in a failed sub-operation). Here colour goes interleaved by sample (planes
//! are interleaved first; Planar Configuration becomes 0) into a buffer that holds the worst
//! case, and grey as a single component, as before.

use super::pixels::{frame_count, native_pixels, put_fragments, uint};
use charls_sys::*;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;

/// One frame of native samples (`bytes` per sample, little endian, interleaved by pixel when
/// `samples` > 1) as a JPEG-LS lossless stream of `bits` bits per sample.
pub fn encode_frame(
    frame: &[u8],
    cols: usize,
    rows: usize,
    samples: usize,
    bytes: usize,
    bits: usize,
) -> Result<Vec<u8>, String> {
    if frame.len() != cols * rows * samples * bytes {
        return Err("frame of another size than the image".into());
    }
    let info = charls_frame_info {
        width: u32::try_from(cols).map_err(|_| "too wide")?,
        height: u32::try_from(rows).map_err(|_| "too high")?,
        bits_per_sample: bits as i32,
        component_count: samples as i32,
    };
    // Worst case: LIMIT bits per sample (at most 4 x 8 for 8-bit samples, 2 x 16 beyond),
    // plus the markers.
    let mut dst = vec![0u8; frame.len() * 4 + 64 * 1024];
    let check = |what: &str, errc: charls_jpegls_errc| {
        if errc == 0 {
            Ok(())
        } else {
            Err(format!("CharLS {what}: error {errc}"))
        }
    };
    // SAFETY: the encoder is created, used and destroyed here; every buffer outlives the
    // calls that use it and is passed with its own length.
    unsafe {
        let encoder = charls_jpegls_encoder_create();
        if encoder.is_null() {
            return Err("CharLS: no encoder".into());
        }
        let result = (|| -> Result<usize, String> {
            check(
                "frame info",
                charls_jpegls_encoder_set_frame_info(encoder, &info),
            )?;
            let mode = if samples > 1 {
                charls_interleave_mode_sample
            } else {
                charls_interleave_mode_none
            };
            check(
                "interleave mode",
                charls_jpegls_encoder_set_interleave_mode(encoder, mode),
            )?;
            check("near", charls_jpegls_encoder_set_near_lossless(encoder, 0))?;
            check(
                "destination",
                charls_jpegls_encoder_set_destination_buffer(
                    encoder,
                    dst.as_mut_ptr().cast(),
                    dst.len(),
                ),
            )?;
            check(
                "encode",
                charls_jpegls_encoder_encode_from_buffer(
                    encoder,
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                ),
            )?;
            let mut written = 0usize;
            check(
                "bytes written",
                charls_jpegls_encoder_get_bytes_written(encoder, &mut written),
            )?;
            Ok(written)
        })();
        charls_jpegls_encoder_destroy(encoder);
        let written = result?;
        dst.truncate(written);
    }
    if dst.len() % 2 == 1 {
        dst.push(0);
    }
    Ok(dst)
}

/// Replace `obj`'s native Pixel Data by JPEG-LS lossless fragments, one per frame, with a
/// basic offset table. Planar Configuration becomes 0; Photometric Interpretation is kept.
pub fn encode_object(obj: &mut DefaultDicomObject) -> Result<(), String> {
    let allocated = uint(obj, tags::BITS_ALLOCATED)?;
    if allocated != 8 && allocated != 16 {
        return Err(format!(
            "JPEG-LS of {allocated}-bit samples is not supported"
        ));
    }
    let bytes = allocated / 8;
    let bits = uint(obj, tags::BITS_STORED).unwrap_or(allocated);
    if !(2..=allocated).contains(&bits) {
        return Err(format!("JPEG-LS of {bits} bits stored is not supported"));
    }
    let rows = uint(obj, tags::ROWS)?;
    let cols = uint(obj, tags::COLUMNS)?;
    let samples = uint(obj, tags::SAMPLES_PER_PIXEL)?;
    let planar = samples > 1 && uint(obj, tags::PLANAR_CONFIGURATION).unwrap_or(0) == 1;
    let frames = frame_count(obj);
    let frame_len = rows * cols * samples * bytes;
    let mut data = native_pixels(obj, frame_len, frames)?;
    data.truncate(frame_len * frames);
    if bits < allocated {
        // Only the stored bits are coded (signed samples carry their sign above them).
        let mask = (1u32 << bits) - 1;
        if bytes == 1 {
            data.iter_mut().for_each(|b| *b &= mask as u8);
        } else {
            for pair in data.chunks_exact_mut(2) {
                let v = u16::from_le_bytes([pair[0], pair[1]]) & mask as u16;
                pair.copy_from_slice(&v.to_le_bytes());
            }
        }
    }
    let mut interleaved = Vec::new();
    let fragments = data
        .chunks_exact(frame_len)
        .map(|frame| {
            let frame = if planar {
                interleave(frame, samples, bytes, &mut interleaved);
                &interleaved[..]
            } else {
                frame
            };
            encode_frame(frame, cols, rows, samples, bytes, bits)
        })
        .collect::<Result<Vec<_>, _>>()?;
    drop(data);
    put_fragments(obj, fragments);
    if samples > 1 {
        obj.put(DataElement::new(
            tags::PLANAR_CONFIGURATION,
            VR::US,
            dicom_core::PrimitiveValue::from(0u16),
        ));
    }
    Ok(())
}

/// Planes (colour by plane) into pixels (colour by pixel).
fn interleave(frame: &[u8], samples: usize, bytes: usize, out: &mut Vec<u8>) {
    let plane = frame.len() / samples;
    out.clear();
    out.resize(frame.len(), 0);
    for s in 0..samples {
        let src = &frame[s * plane..(s + 1) * plane];
        for (i, sample) in src.chunks_exact(bytes).enumerate() {
            let at = (i * samples + s) * bytes;
            out[at..at + bytes].copy_from_slice(sample);
        }
    }
}
