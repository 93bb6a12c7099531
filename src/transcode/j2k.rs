//! JPEG 2000 lossless encoding (PS3.5 A.4.4, `1.2.840.10008.1.2.4.90`; ISO/IEC 15444-1
//! reversible 5-3 wavelet, one quality layer) by the `openjp2` port of OpenJPEG that
//! dicom-rs already builds for decoding. dicom-rs 0.10 registers no JPEG 2000 writer, so
//! the port's own encoder is driven here through its safe `Codec` API. That API writes a
//! codestream only to a file (its in-memory streams take raw C callbacks), so each frame
//! goes through a temporary file of its own, read back and removed at once.
//!
//! Grey and colour images of 8 or 16 bits allocated; colour without the reversible
//! component transform (Photometric Interpretation stays RGB, PS3.5 8.2.4 allows it), so
//! any decoder reads the samples back as they were.

use super::pixels::{frame_count, native_pixels, put_fragments, uint};
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;
use openjp2::{opj_cparameters_t, opj_image, opj_image_comptparm, Codec, Stream};

/// The shape of the native frames being encoded.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub rows: usize,
    pub cols: usize,
    pub samples: usize,
    /// Bytes per sample: 1 or 2.
    pub bytes: usize,
    pub bits_stored: usize,
    pub signed: bool,
    /// Planar Configuration 1: all of a frame's first samples, then the second, ...
    pub planar: bool,
}

impl Layout {
    fn frame_len(&self) -> usize {
        self.rows * self.cols * self.samples * self.bytes
    }

    /// Sample `s` of pixel `p` of a native little-endian frame.
    fn sample(&self, frame: &[u8], p: usize, s: usize) -> i32 {
        let pixels = self.rows * self.cols;
        let index = if self.planar {
            s * pixels + p
        } else {
            p * self.samples + s
        };
        match (self.bytes, self.signed) {
            (1, false) => frame[index] as i32,
            (1, true) => frame[index] as i8 as i32,
            (_, false) => u16::from_le_bytes([frame[2 * index], frame[2 * index + 1]]) as i32,
            (_, true) => i16::from_le_bytes([frame[2 * index], frame[2 * index + 1]]) as i32,
        }
    }
}

/// One native frame as a JPEG 2000 codestream (J2K, no JP2 wrapper: PS3.5 A.4.4).
pub fn encode_frame(frame: &[u8], layout: Layout) -> Result<Vec<u8>, String> {
    if !(layout.bytes == 1 || layout.bytes == 2) || !(layout.samples == 1 || layout.samples == 3) {
        return Err(format!(
            "JPEG 2000 of {} samples of {} bytes is not supported",
            layout.samples, layout.bytes
        ));
    }
    if frame.len() < layout.frame_len() {
        return Err("a frame shorter than Rows x Columns".into());
    }
    let pixels = layout.rows * layout.cols;
    let (w, h) = (layout.cols as u32, layout.rows as u32);
    // Samples are coded at the precision they hold: Bits Stored, unless a value uses the
    // bits above it (overlays in the high bits), which a lossless code must keep too.
    let values = |s: usize| (0..pixels).map(move |p| layout.sample(frame, p, s));
    let fits = |prec: usize| {
        let (low, high) = if layout.signed {
            (-(1i64 << (prec - 1)), (1i64 << (prec - 1)) - 1)
        } else {
            (0, (1i64 << prec) - 1)
        };
        (0..layout.samples).all(|s| values(s).all(|v| (low..=high).contains(&(v as i64))))
    };
    let stored = layout.bits_stored.clamp(1, 8 * layout.bytes);
    let prec = if fits(stored) {
        stored
    } else {
        8 * layout.bytes
    };
    let component = opj_image_comptparm {
        dx: 1,
        dy: 1,
        w,
        h,
        x0: 0,
        y0: 0,
        prec: prec as u32,
        bpp: prec as u32,
        sgnd: layout.signed as u32,
    };
    let colour = if layout.samples == 3 {
        openjp2::OPJ_CLRSPC_SRGB
    } else {
        openjp2::OPJ_CLRSPC_GRAY
    };
    let mut image =
        opj_image::create(&vec![component; layout.samples], colour).ok_or("JPEG 2000: no image")?;
    (image.x0, image.y0, image.x1, image.y1) = (0, 0, w, h);
    for (s, data) in image
        .comps_data_mut_iter()
        .ok_or("JPEG 2000: no components")?
        .enumerate()
    {
        for (to, value) in data.iter_mut().zip(values(s)) {
            *to = value;
        }
    }
    // The defaults are lossless: reversible 5-3 wavelet, one layer at rate 0, 64 x 64
    // code blocks. No component transform: RGB stays RGB. Each resolution halves the image: 2^(levels - 1) may not exceed its smaller side
    // (ISO/IEC 15444-1 B.5), so a small image gets fewer.
    let side = layout.rows.min(layout.cols);
    let mut levels = 1;
    while levels < 6 && (1usize << levels) <= side {
        levels += 1;
    }
    let mut parameters = opj_cparameters_t {
        tcp_mct: 0,
        numresolution: levels,
        ..Default::default()
    };
    let mut codec = Codec::new_encoder(openjp2::OPJ_CODEC_J2K).ok_or("JPEG 2000: no encoder")?;
    let file = tempfile::Builder::new()
        .prefix("beeldbrug-j2k-")
        .tempfile()
        .map_err(|e| format!("JPEG 2000: temporary file: {e}"))?;
    {
        let mut stream = Stream::new_file(file.path(), 1 << 20, false)
            .map_err(|e| format!("JPEG 2000: temporary file: {e}"))?;
        let ok = codec.setup_encoder(&mut parameters, &mut image) != 0
            && codec.start_compress(&mut image, &mut stream) != 0
            && codec.encode(&mut stream) != 0
            && codec.end_compress(&mut stream) != 0;
        if !ok {
            return Err("JPEG 2000: the encoder failed".into());
        }
        stream
            .flush()
            .map_err(|e| format!("JPEG 2000: temporary file: {e}"))?;
    }
    let mut codestream =
        std::fs::read(file.path()).map_err(|e| format!("JPEG 2000: temporary file: {e}"))?;
    // Fragments have an even length (PS3.5 A.4); J2K decoders stop at EOC.
    if codestream.len() % 2 == 1 {
        codestream.push(0);
    }
    Ok(codestream)
}

/// Replace `obj`'s native Pixel Data by JPEG 2000 lossless fragments, one per frame,
/// with a basic offset table (PS3.5 A.4). Planar Configuration becomes 0
/// (colour by pixel, PS3.5 8.2.4); Photometric Interpretation is kept.
pub fn encode_object(obj: &mut DefaultDicomObject) -> Result<(), String> {
    let allocated = uint(obj, tags::BITS_ALLOCATED)?;
    if allocated != 8 && allocated != 16 {
        return Err(format!(
            "JPEG 2000 of {allocated}-bit samples is not supported"
        ));
    }
    let samples = uint(obj, tags::SAMPLES_PER_PIXEL)?;
    let layout = Layout {
        rows: uint(obj, tags::ROWS)?,
        cols: uint(obj, tags::COLUMNS)?,
        samples,
        bytes: allocated / 8,
        bits_stored: uint(obj, tags::BITS_STORED).unwrap_or(allocated),
        signed: uint(obj, tags::PIXEL_REPRESENTATION).unwrap_or(0) == 1,
        planar: samples > 1 && uint(obj, tags::PLANAR_CONFIGURATION).unwrap_or(0) == 1,
    };
    let frames = frame_count(obj);
    let data = native_pixels(obj, layout.frame_len(), frames)?;
    let fragments = data
        .chunks_exact(layout.frame_len())
        .take(frames)
        .map(|frame| encode_frame(frame, layout))
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

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::value::PixelFragmentSequence;
    use dicom_core::Length;
    use dicom_pixeldata::PixelDecoder;

    /// Our codestream, decoded by the decoder dicom-rs registers (OpenJPEG's), gives the
    /// samples back; the independent check (pydicom with pylibjpeg-openjpeg) is in
    /// tests/codecs.rs.
    fn round_trip(layout: Layout, frame: &[u8]) -> Vec<u8> {
        let codestream = encode_frame(frame, layout).unwrap();
        assert_eq!(&codestream[..2], &[0xFF, 0x4F], "starts with SOC");
        let mut obj = dicom_object::InMemDicomObject::new_empty();
        obj.put(DataElement::new(
            tags::ROWS,
            VR::US,
            dicom_core::PrimitiveValue::from(layout.rows as u16),
        ));
        obj.put(DataElement::new(
            tags::COLUMNS,
            VR::US,
            dicom_core::PrimitiveValue::from(layout.cols as u16),
        ));
        obj.put(DataElement::new(
            tags::SAMPLES_PER_PIXEL,
            VR::US,
            dicom_core::PrimitiveValue::from(layout.samples as u16),
        ));
        let bits = (8 * layout.bytes) as u16;
        obj.put(DataElement::new(
            tags::BITS_ALLOCATED,
            VR::US,
            dicom_core::PrimitiveValue::from(bits),
        ));
        obj.put(DataElement::new(
            tags::BITS_STORED,
            VR::US,
            dicom_core::PrimitiveValue::from(layout.bits_stored as u16),
        ));
        obj.put(DataElement::new(
            tags::HIGH_BIT,
            VR::US,
            dicom_core::PrimitiveValue::from(layout.bits_stored as u16 - 1),
        ));
        obj.put(DataElement::new(
            tags::PIXEL_REPRESENTATION,
            VR::US,
            dicom_core::PrimitiveValue::from(layout.signed as u16),
        ));
        let photometric = if layout.samples == 3 {
            "RGB"
        } else {
            "MONOCHROME2"
        };
        obj.put(DataElement::new(
            tags::PHOTOMETRIC_INTERPRETATION,
            VR::CS,
            photometric,
        ));
        obj.put(DataElement::new_with_len(
            tags::PIXEL_DATA,
            VR::OB,
            Length::UNDEFINED,
            PixelFragmentSequence::new(vec![0u32], vec![codestream]),
        ));
        let meta = dicom_object::FileMetaTableBuilder::new()
            .transfer_syntax(super::super::JPEG_2000_LOSSLESS)
            .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.7")
            .media_storage_sop_instance_uid("1.2.3")
            .build()
            .unwrap();
        let obj = obj.with_exact_meta(meta);
        obj.decode_pixel_data().unwrap().data().to_vec()
    }

    #[test]
    fn grey_16_bit_signed_and_unsigned_round_trip() {
        for signed in [false, true] {
            let layout = Layout {
                rows: 37,
                cols: 53,
                samples: 1,
                bytes: 2,
                bits_stored: 12,
                signed,
                planar: false,
            };
            let frame: Vec<u8> = (0..37 * 53)
                .flat_map(|i: i32| {
                    let v = (i * 37 % 4096) - if signed { 2048 } else { 0 };
                    (v as i16).to_le_bytes()
                })
                .collect();
            assert_eq!(round_trip(layout, &frame), frame, "signed {signed}");
        }
    }

    #[test]
    fn high_bits_beyond_bits_stored_are_kept() {
        let layout = Layout {
            rows: 8,
            cols: 8,
            samples: 1,
            bytes: 2,
            bits_stored: 12,
            signed: false,
            planar: false,
        };
        let frame: Vec<u8> = (0..64u16).flat_map(|i| (i * 1000).to_le_bytes()).collect();
        assert_eq!(round_trip(layout, &frame), frame);
    }

    #[test]
    fn rgb_8_bit_round_trips_by_pixel_and_by_plane() {
        let pixels = 20 * 30;
        let by_pixel: Vec<u8> = (0..pixels * 3).map(|i| (i * 13 % 256) as u8).collect();
        let layout = Layout {
            rows: 20,
            cols: 30,
            samples: 3,
            bytes: 1,
            bits_stored: 8,
            signed: false,
            planar: false,
        };
        assert_eq!(round_trip(layout, &by_pixel), by_pixel);
        let by_plane: Vec<u8> = (0..3)
            .flat_map(|s| (0..pixels).map(move |p| (p, s)))
            .map(|(p, s)| by_pixel[p * 3 + s])
            .collect();
        let planar = Layout {
            planar: true,
            ..layout
        };
        assert_eq!(round_trip(planar, &by_plane), by_pixel);
    }

    #[test]
    fn refuses_what_it_cannot_code() {
        let layout = Layout {
            rows: 4,
            cols: 4,
            samples: 2,
            bytes: 2,
            bits_stored: 16,
            signed: false,
            planar: false,
        };
        assert!(encode_frame(&[0; 64], layout).is_err());
        let short = Layout {
            samples: 1,
            ..layout
        };
        assert!(encode_frame(&[0; 30], short).is_err());
    }
}
