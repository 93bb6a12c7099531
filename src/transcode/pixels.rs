//! What every encoder into an encapsulated syntax reads of a native image and writes back:
//! the image attributes, the frames of the Pixel Data, and the fragments with their basic
//! offset table (PS3.5 A.4).

use dicom_core::value::PixelFragmentSequence;
use dicom_core::{DataElement, Length, VR};
use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;

/// An image attribute as a number, or why it cannot be used.
pub fn uint(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> Result<usize, String> {
    obj.element(tag)
        .ok()
        .and_then(|e| e.to_int::<u32>().ok())
        .map(|v| v as usize)
        .ok_or_else(|| format!("no usable {tag}"))
}

/// Number of Frames, 1 when absent.
pub fn frame_count(obj: &DefaultDicomObject) -> usize {
    obj.element(tags::NUMBER_OF_FRAMES)
        .ok()
        .and_then(|e| e.to_int::<u32>().ok())
        .unwrap_or(1)
        .max(1) as usize
}

/// The native Pixel Data of `obj`, checked to hold `frames` frames of `frame_len` bytes.
pub fn native_pixels(
    obj: &DefaultDicomObject,
    frame_len: usize,
    frames: usize,
) -> Result<Vec<u8>, String> {
    let data = obj
        .element(tags::PIXEL_DATA)
        .map_err(|e| e.to_string())?
        .to_bytes()
        .map_err(|e| e.to_string())?
        .into_owned();
    if frame_len == 0 || data.len() < frame_len * frames {
        return Err("pixel data shorter than its frames".into());
    }
    Ok(data)
}

/// Replace the Pixel Data by `fragments`, one per frame, with the basic offset table of
/// their positions (each item's 8-byte header counted).
pub fn put_fragments(obj: &mut DefaultDicomObject, fragments: Vec<Vec<u8>>) {
    let mut offsets = Vec::with_capacity(fragments.len());
    let mut at = 0u32;
    for fragment in &fragments {
        offsets.push(at);
        at += fragment.len() as u32 + 8;
    }
    obj.put(DataElement::new_with_len(
        tags::PIXEL_DATA,
        VR::OB,
        Length::UNDEFINED,
        PixelFragmentSequence::new(offsets, fragments),
    ));
}
