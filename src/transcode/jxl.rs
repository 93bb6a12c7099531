//! JPEG XL (`.4.110` lossless, `.4.111` JPEG recompression, `.4.112`) decoded by jxl-oxide,
//! samples as the codestream holds them.
//!
//! dicom-rs 0.10's adapter (its `jpegxl` feature) asks jxl-oxide for 16-bit output, which
//! jxl-oxide scales to the full 16-bit range whatever the codestream's bit depth: a 12-bit CT
//! made by libjxl comes out with every sample times 65535/4095. Here the samples are read as
//! jxl-oxide's nominal floats and scaled back to the codestream's own bit depth (exact for
//! integer samples: the float carries 24 bits). The image size, the channel count and what
//! jxl-oxide may allocate are bounded by the data set before any pixel is decoded
//! (`check::frame_size` has already compared the size header with Rows and Columns).

use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;
use jxl_oxide::{AllocTracker, JxlImage};

/// Every frame of `obj`'s encapsulated Pixel Data (one fragment per frame, as PS3.5 A.4.12
/// has it for JPEG XL) decoded into native little endian samples of `bytes` bytes each,
/// interleaved (`samples` per pixel), `pixels` (Rows x Columns) per frame.
pub fn decode(
    obj: &DefaultDicomObject,
    pixels: usize,
    samples: usize,
    bytes: usize,
) -> Result<Vec<u8>, String> {
    let element = obj
        .element(tags::PIXEL_DATA)
        .map_err(|_| "no Pixel Data".to_string())?;
    let fragments = element
        .value()
        .fragments()
        .ok_or("JPEG XL Pixel Data not encapsulated")?;
    let frames = obj
        .element(tags::NUMBER_OF_FRAMES)
        .ok()
        .and_then(|e| e.to_int::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    if fragments.len() != frames {
        return Err(format!(
            "JPEG XL: {} fragments for {frames} frame(s), one per frame expected",
            fragments.len()
        ));
    }
    let frame_len = pixels * samples * bytes;
    let mut out = Vec::with_capacity(frame_len * frames);
    let mut floats = vec![0f32; pixels * samples];
    for (n, fragment) in fragments.iter().enumerate() {
        decode_frame(fragment, pixels, samples, bytes, &mut floats, &mut out)
            .map_err(|e| format!("JPEG XL frame {}: {e}", n + 1))?;
    }
    Ok(out)
}

fn decode_frame(
    fragment: &[u8],
    pixels: usize,
    samples: usize,
    bytes: usize,
    floats: &mut [f32],
    out: &mut Vec<u8>,
) -> Result<(), String> {
    // What jxl-oxide may allocate for one frame: its f32 planes and their group buffers,
    // a few times the decoded floats, never what a lying header would ask for.
    let limit = floats.len() * 4 * 8 + (8 << 20);
    let image = JxlImage::builder()
        .alloc_tracker(AllocTracker::with_limit(limit))
        .read(fragment)
        .map_err(|e| e.to_string())?;
    let size = image.width() as usize * image.height() as usize;
    if size != pixels {
        return Err(format!(
            "the codestream is {} x {}, the image has {pixels} pixels",
            image.width(),
            image.height()
        ));
    }
    let bits = match image.image_header().metadata.bit_depth {
        jxl_oxide::image::BitDepth::IntegerSample { bits_per_sample } => bits_per_sample,
        jxl_oxide::image::BitDepth::FloatSample { .. } => {
            return Err("floating-point samples have no DICOM form".into())
        }
    };
    if bits == 0 || bits > 8 * bytes as u32 {
        return Err(format!(
            "{bits}-bit samples do not fit Bits Allocated {}",
            8 * bytes
        ));
    }
    let render = image.render_frame(0).map_err(|e| e.to_string())?;
    let mut stream = render.stream();
    if stream.channels() as usize != samples {
        return Err(format!(
            "{} channels, Samples per Pixel is {samples}",
            stream.channels()
        ));
    }
    let written = stream.write_to_buffer(floats);
    if written != floats.len() {
        return Err(format!("{written} of {} samples decoded", floats.len()));
    }
    let max = ((1u64 << bits) - 1) as f32;
    if bytes == 1 {
        out.extend(
            floats
                .iter()
                .map(|v| (v * max).round().clamp(0.0, max) as u8),
        );
    } else {
        for v in floats.iter() {
            let s = (v * max).round().clamp(0.0, max) as u16;
            out.extend_from_slice(&s.to_le_bytes());
        }
    }
    Ok(())
}
