//! Finding frames inside a stored file without reading the pixel data (PS3.5 8.2, A.4).
//!
//! Native pixel data: frame *n* is a fixed-size slice of the value. Encapsulated pixel data:
//! the item headers of the fragments are walked with seeks (8 bytes read per fragment), and
//! frames are mapped to fragments one-to-one, through the Basic Offset Table, or all
//! fragments to a single frame (PS3.5 A.4).

use crate::dimse::dataset::{self, DatasetError};
use dicom_core::Tag;
use dicom_object::InMemDicomObject;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("{0}")]
    File(#[from] DatasetError),
    #[error("cannot read {0}")]
    Io(#[from] std::io::Error),
    #[error("the instance has no pixel data")]
    NoPixelData,
    #[error("encapsulated pixel data is malformed: {0}")]
    Malformed(String),
    #[error("frame {0} does not exist (the instance has {1})")]
    NoSuchFrame(u32, u32),
    #[error("invalid frame list {0:?}: expected 1-based frame numbers separated by commas")]
    BadList(String),
}

/// Byte ranges `(offset, length)` in the file.
pub type Ranges = Vec<(u64, u64)>;

/// Where the pixel data of one stored instance is.
#[derive(Debug, Clone)]
pub struct PixelLayout {
    pub transfer_syntax: String,
    pub number_of_frames: u32,
    /// Offset and length of the whole Pixel Data value (native only).
    pub native_value: Option<(u64, u64)>,
    /// Native: bytes per frame.
    frame_len: u64,
    /// Encapsulated: the fragments of each frame.
    encapsulated: Option<Vec<Ranges>>,
    /// Deflated Explicit VR LE (PS3.5 A.5): native pixel data whose offsets are in the
    /// inflated data set, not in the file; served from the data set inflated in memory.
    pub inflated: bool,
}

fn number(obj: &InMemDicomObject, tag: Tag) -> Option<u64> {
    obj.element(tag).ok()?.to_int::<u64>().ok()
}

/// Upper bound on fragments walked, against a file of millions of empty items.
const MAX_FRAGMENTS: usize = 1 << 20;

impl PixelLayout {
    /// Locate the pixel data of the Part 10 file at `path`; `obj` is its data set read up
    /// to Pixel Data (for rows, columns and the like).
    pub fn read(path: &Path, obj: &InMemDicomObject) -> Result<PixelLayout, FrameError> {
        let layout = dataset::read_layout(path)?;
        let transfer_syntax = layout
            .meta
            .transfer_syntax()
            .trim_end_matches('\0')
            .to_string();
        let inflated = transfer_syntax == crate::sop::DEFLATED_EXPLICIT_VR_LE;
        let at = if inflated {
            // Where Pixel Data is in the inflated data set (streamed, not held).
            let mut file = std::fs::File::open(path)?;
            file.seek(SeekFrom::Start(layout.dataset_offset))?;
            dataset::check_deflated(file, layout.dataset_len())?
        } else {
            dataset::pixel_data_in(path, &layout)?
        };
        let at = at.ok_or(FrameError::NoPixelData)?;
        let number_of_frames = number(obj, Tag(0x0028, 0x0008)).unwrap_or(1).max(1) as u32;
        match at.len {
            Some(len) => {
                let rows = number(obj, Tag(0x0028, 0x0010)).unwrap_or(0);
                let cols = number(obj, Tag(0x0028, 0x0011)).unwrap_or(0);
                let spp = number(obj, Tag(0x0028, 0x0002)).unwrap_or(1);
                let bits = number(obj, Tag(0x0028, 0x0100)).unwrap_or(8);
                let frame_len = (rows * cols * spp * bits).div_ceil(8);
                let value_len = u64::from(len);
                if frame_len == 0 || frame_len * u64::from(number_of_frames) > value_len {
                    return Err(FrameError::Malformed(format!(
                        "{number_of_frames} frames of {frame_len} bytes do not fit a value of {value_len}"
                    )));
                }
                Ok(PixelLayout {
                    transfer_syntax,
                    number_of_frames,
                    native_value: Some((at.value_offset, value_len)),
                    frame_len,
                    encapsulated: None,
                    inflated,
                })
            }
            // PS3.5 A.5: a deflated data set's pixel data is native.
            None if inflated => Err(FrameError::Malformed(
                "encapsulated pixel data in a deflated data set".into(),
            )),
            None => {
                let mut file = std::io::BufReader::new(std::fs::File::open(path)?);
                file.seek(SeekFrom::Start(at.value_offset))?;
                let frames = map_fragments(&mut file, layout.file_len, number_of_frames)?;
                Ok(PixelLayout {
                    transfer_syntax,
                    number_of_frames,
                    native_value: None,
                    frame_len: 0,
                    encapsulated: Some(frames),
                    inflated: false,
                })
            }
        }
    }

    pub fn is_encapsulated(&self) -> bool {
        self.encapsulated.is_some()
    }

    /// The byte ranges of frame `n` (1-based).
    pub fn frame(&self, n: u32) -> Result<Ranges, FrameError> {
        if n == 0 || n > self.number_of_frames {
            return Err(FrameError::NoSuchFrame(n, self.number_of_frames));
        }
        let i = (n - 1) as usize;
        match (&self.encapsulated, self.native_value) {
            (Some(frames), _) => Ok(frames[i].clone()),
            (None, Some((offset, _))) => Ok(vec![(
                offset + u64::from(n - 1) * self.frame_len,
                self.frame_len,
            )]),
            (None, None) => Err(FrameError::NoPixelData),
        }
    }
}

/// Parse a frame list (`1,3,5`) of a `/frames/{list}` URL (PS3.18 10.4.1.1.5).
pub fn parse_frame_list(list: &str) -> Result<Vec<u32>, FrameError> {
    let frames: Option<Vec<u32>> = list
        .split(',')
        .map(|f| f.trim().parse::<u32>().ok().filter(|n| *n > 0))
        .collect();
    match frames {
        Some(f) if !f.is_empty() && f.len() <= 100_000 => Ok(f),
        _ => Err(FrameError::BadList(list.to_string())),
    }
}

/// Read one item header: `(tag, length)`; item headers are always little endian (PS3.5 A.4).
fn item_header<R: Read>(r: &mut R) -> Result<(Tag, u32), FrameError> {
    let mut h = [0u8; 8];
    r.read_exact(&mut h)
        .map_err(|e| FrameError::Malformed(format!("truncated item header: {e}")))?;
    let tag = Tag(
        u16::from_le_bytes([h[0], h[1]]),
        u16::from_le_bytes([h[2], h[3]]),
    );
    Ok((tag, u32::from_le_bytes([h[4], h[5], h[6], h[7]])))
}

/// Walk the items of encapsulated pixel data (positioned just after its element header) and
/// group the fragments into `frames` frames.
fn map_fragments<R: Read + Seek>(
    r: &mut R,
    file_len: u64,
    frames: u32,
) -> Result<Vec<Ranges>, FrameError> {
    const ITEM: Tag = Tag(0xFFFE, 0xE000);
    const SEQUENCE_END: Tag = Tag(0xFFFE, 0xE0DD);
    let (tag, bot_len) = item_header(r)?;
    if tag != ITEM || bot_len % 4 != 0 || u64::from(bot_len) > file_len {
        return Err(FrameError::Malformed("no Basic Offset Table item".into()));
    }
    let mut bot_bytes = vec![0u8; bot_len as usize];
    r.read_exact(&mut bot_bytes)?;
    let bot: Vec<u64> = bot_bytes
        .chunks_exact(4)
        .map(|c| u64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
        .collect();
    // (offset of the item from the first fragment's item, value offset, value length)
    let mut fragments: Vec<(u64, u64, u64)> = Vec::new();
    let first = r.stream_position()?;
    loop {
        let item_start = r.stream_position()?;
        let (tag, len) = item_header(r)?;
        if tag == SEQUENCE_END {
            break;
        }
        if tag != ITEM {
            return Err(FrameError::Malformed(format!(
                "unexpected {tag} among fragments"
            )));
        }
        let value = item_start + 8;
        if value + u64::from(len) > file_len || fragments.len() >= MAX_FRAGMENTS {
            return Err(FrameError::Malformed(
                "fragment runs past the end of the file".into(),
            ));
        }
        fragments.push((item_start - first, value, u64::from(len)));
        r.seek(SeekFrom::Current(i64::from(len)))?;
    }
    let n = frames as usize;
    let ranges = |f: &[(u64, u64, u64)]| f.iter().map(|&(_, v, l)| (v, l)).collect::<Ranges>();
    if n == 1 {
        return Ok(vec![ranges(&fragments)]);
    }
    if fragments.len() == n {
        return Ok(fragments.iter().map(|&(_, v, l)| vec![(v, l)]).collect());
    }
    if bot.len() == n {
        let mut out = Vec::with_capacity(n);
        for (i, start) in bot.iter().enumerate() {
            let end = bot.get(i + 1).copied().unwrap_or(u64::MAX);
            let frame: Vec<_> = fragments
                .iter()
                .filter(|(at, _, _)| (*start..end).contains(at))
                .copied()
                .collect();
            if frame.is_empty() {
                return Err(FrameError::Malformed(format!(
                    "frame {} has no fragments",
                    i + 1
                )));
            }
            out.push(ranges(&frame));
        }
        return Ok(out);
    }
    Err(FrameError::Malformed(format!(
        "{} fragments for {n} frames and no usable Basic Offset Table",
        fragments.len()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(tag: (u16, u16), body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&tag.0.to_le_bytes());
        v.extend_from_slice(&tag.1.to_le_bytes());
        v.extend_from_slice(&(body.len() as u32).to_le_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn fragments_map_through_the_offset_table() {
        // Frame 1 is two fragments, frame 2 one; the BOT holds each frame's first item offset.
        let f1a = item((0xFFFE, 0xE000), &[1, 1, 1, 1]);
        let f1b = item((0xFFFE, 0xE000), &[2, 2, 2, 2]);
        let f2 = item((0xFFFE, 0xE000), &[3, 3]);
        let second = (f1a.len() + f1b.len()) as u32;
        let mut bot = Vec::new();
        bot.extend_from_slice(&0u32.to_le_bytes());
        bot.extend_from_slice(&second.to_le_bytes());
        let mut data = item((0xFFFE, 0xE000), &bot);
        let base = data.len() as u64;
        data.extend(f1a);
        data.extend(f1b);
        data.extend(f2);
        data.extend(item((0xFFFE, 0xE0DD), &[]));
        let len = data.len() as u64;
        let frames = map_fragments(&mut std::io::Cursor::new(data), len, 2).unwrap();
        assert_eq!(frames[0], vec![(base + 8, 4), (base + 20, 4)]);
        assert_eq!(frames[1], vec![(base + 32, 2)]);
    }

    #[test]
    fn truncated_or_bogus_items_are_errors() {
        let data = item((0xFFFE, 0xE000), &[]);
        let mut bogus = data.clone();
        bogus.extend(item((0x0010, 0x0010), &[0; 4]));
        for d in [data, bogus] {
            let len = d.len() as u64;
            assert!(map_fragments(&mut std::io::Cursor::new(d), len, 1).is_err());
        }
        assert!(parse_frame_list("1,x").is_err());
        assert!(parse_frame_list("0").is_err());
        assert_eq!(parse_frame_list("2, 1").unwrap(), vec![2, 1]);
    }
}
