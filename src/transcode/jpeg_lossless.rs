//! JPEG lossless, non-hierarchical (ITU-T T.81 Annex H, process 14; DICOM JPEG Lossless
//! `.4.57` and its first-order-prediction subset `.4.70`, PS3.5 A.4.1): our decoder.
//!
//! dicom-rs 0.10 decodes these with `jpeg-decoder`, whose lossless path reads the entropy
//! coded data a byte at a time through `io::Read`, keeps every difference in an `i32` vector
//! and converts the result twice; at about 0.6 times DCMTK's speed it was our slowest codec
//! against DCMTK's. This one decodes from the slice with a 64-bit bit buffer and a lookup
//! table for Huffman codes of up to [`LOOKUP_BITS`] bits, predicting as it goes.
//!
//! What it does not handle it hands back (`Ok(None)`) for `jpeg-decoder` to do as before:
//! any frame other than SOF3, sampling factors other than 1, restart intervals (no encoder
//! here writes them to test against), a precision that does not match Bits Allocated.

pub use super::jpeg::Frame;
use super::jpeg::{be16, next_marker, segment_len, Bits, Huffman};

/// Decode the JPEG lossless codestream at the start of `data` into `out`, which must be
/// exactly the frame's size (`width * height * components` samples of `bytes` bytes).
/// `Ok(None)`: a codestream this decoder leaves to `jpeg-decoder`.
pub fn decode(data: &[u8], bytes: usize, out: &mut [u8]) -> Result<Option<Frame>, String> {
    if !data.starts_with(&[0xFF, 0xD8]) {
        return Err("no SOI at the start of the frame".into());
    }
    let mut at = 2;
    let mut tables: [Option<Huffman>; 4] = [None, None, None, None];
    let mut restart_interval = 0usize;
    let mut frame: Option<(usize, usize, u8, Vec<u8>)> = None; // width, height, precision, ids
    let mut samples: Vec<u16> = Vec::new();
    loop {
        if at >= data.len() && frame.is_some() {
            // Some encoders end the last scan without EOI.
            break;
        }
        match next_marker(data, &mut at)? {
            0xD9 => break, // EOI
            0xC3 => {
                let len = segment_len(data, at)?;
                let segment = data.get(at + 2..at + len).ok_or("SOF3 cut short")?;
                at += len;
                let [precision, h1, h0, w1, w0, n, rest @ ..] = segment else {
                    return Err("SOF3 cut short".into());
                };
                let (width, height, n) = (
                    (*w1 as usize) << 8 | *w0 as usize,
                    (*h1 as usize) << 8 | *h0 as usize,
                    *n as usize,
                );
                if rest.len() < 3 * n || n == 0 {
                    return Err("SOF3 with too few components".into());
                }
                // Sampling factors other than 1 x 1, or a precision stored in other than
                // Bits Allocated: left to jpeg-decoder.
                if rest[..3 * n].chunks(3).any(|c| c[1] != 0x11)
                    || !(2..=16).contains(precision)
                    || (*precision > 8) != (bytes == 2)
                    || height == 0
                {
                    return Ok(None);
                }
                if width * height * n * bytes != out.len() {
                    return Err(format!(
                        "SOF3 of {width} x {height} x {n} does not fit the image"
                    ));
                }
                samples = vec![0u16; width * height * n];
                frame = Some((
                    width,
                    height,
                    *precision,
                    rest[..3 * n].chunks(3).map(|c| c[0]).collect(),
                ));
            }
            0xC0..=0xC2 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => return Ok(None),
            0xC4 => {
                let len = segment_len(data, at)?;
                let mut segment = data.get(at + 2..at + len).ok_or("DHT cut short")?;
                at += len;
                while let [class_id, counts @ ..] = segment {
                    let counts: &[u8; 16] = counts
                        .get(..16)
                        .and_then(|c| c.try_into().ok())
                        .ok_or("DHT cut short")?;
                    let total: usize = counts.iter().map(|&c| c as usize).sum();
                    let values = segment.get(17..17 + total).ok_or("DHT cut short")?;
                    if class_id >> 4 == 0 {
                        let slot = tables
                            .get_mut((class_id & 0x0F) as usize)
                            .ok_or("DHT table number above 3")?;
                        *slot = Some(Huffman::new(counts, values)?);
                    }
                    segment = &segment[17 + total..];
                }
            }
            0xDD => {
                restart_interval = be16(data, at + 2)?;
                at += segment_len(data, at)?;
            }
            0xDA => {
                let len = segment_len(data, at)?;
                let segment = data.get(at + 2..at + len).ok_or("SOS cut short")?;
                at += len;
                let Some((width, height, precision, ids)) = &frame else {
                    return Err("SOS before SOF3".into());
                };
                let ns = *segment.first().ok_or("SOS cut short")? as usize;
                let selectors = segment.get(1..1 + 2 * ns).ok_or("SOS cut short")?;
                let [predictor, _, point] = segment
                    .get(1 + 2 * ns..4 + 2 * ns)
                    .and_then(|s| <[u8; 3]>::try_from(s).ok())
                    .ok_or("SOS cut short")?;
                if restart_interval != 0 {
                    return Ok(None);
                }
                let mut scan = Vec::with_capacity(ns);
                for pair in selectors.chunks(2) {
                    let index = ids
                        .iter()
                        .position(|&id| id == pair[0])
                        .ok_or("SOS names a component not in SOF3")?;
                    let table = tables
                        .get((pair[1] >> 4) as usize)
                        .and_then(|t| t.as_ref())
                        .ok_or("SOS uses an undefined Huffman table")?;
                    scan.push((index, table));
                }
                if scan.is_empty() || predictor > 7 || point & 0x0F >= *precision {
                    return Err("SOS with a bad predictor or point transform".into());
                }
                let shape = Shape {
                    width: *width,
                    height: *height,
                    components: ids.len(),
                    precision: *precision,
                    predictor,
                    point: point & 0x0F,
                };
                at = decode_scan(data, at, &shape, &scan, &mut samples)?;
            }
            // APPn, COM, DQT, DNL, other segments with a length: skipped.
            0xD0..=0xD7 | 0x01 => {}
            _ => at += segment_len(data, at)?,
        }
    }
    let Some((width, height, precision, ids)) = frame else {
        return Err("no SOF3 frame header".into());
    };
    if bytes == 2 {
        for (pair, v) in out.chunks_exact_mut(2).zip(&samples) {
            pair.copy_from_slice(&v.to_le_bytes());
        }
    } else {
        for (o, v) in out.iter_mut().zip(&samples) {
            *o = *v as u8;
        }
    }
    Ok(Some(Frame {
        width,
        height,
        components: ids.len(),
        precision,
        end: at,
    }))
}

struct Shape {
    width: usize,
    height: usize,
    components: usize,
    precision: u8,
    predictor: u8,
    point: u8,
}

/// The samples of one scan with predictor `P` (T.81 H.1.2.1, table H.1): the first line
/// from the left (its first sample from 2^(P - Pt - 1)), the first sample of every other
/// line from above, the rest by `P`; each sample modulo 2^16.
#[inline(always)]
fn predicted<const P: u8>(
    bits: &mut Bits,
    (width, height, nc, line, initial): (usize, usize, usize, usize, i32),
    scan: &[(usize, &Huffman)],
    samples: &mut [u16],
) -> Result<(), String> {
    for y in 0..height {
        let row = y * line;
        for x in 0..width {
            for &(c, table) in scan {
                let diff = bits.difference(table)?;
                let here = row + x * nc + c;
                let prediction = if x == 0 {
                    if y == 0 {
                        initial
                    } else {
                        samples[here - line] as i32
                    }
                } else if y == 0 {
                    samples[here - nc] as i32
                } else {
                    let ra = samples[here - nc] as i32;
                    match P {
                        1 => ra,
                        2 => samples[here - line] as i32,
                        3 => samples[here - line - nc] as i32,
                        4 => ra + samples[here - line] as i32 - samples[here - line - nc] as i32,
                        5 => {
                            ra + ((samples[here - line] as i32 - samples[here - line - nc] as i32)
                                >> 1)
                        }
                        6 => {
                            samples[here - line] as i32
                                + ((ra - samples[here - line - nc] as i32) >> 1)
                        }
                        7 => (ra + samples[here - line] as i32) >> 1,
                        _ => 0,
                    }
                };
                samples[here] = ((prediction + diff) & 0xFFFF) as u16;
            }
        }
    }
    Ok(())
}

/// One scan: `scan` lists the frame index and table of each of its components; samples are
/// interleaved in `samples` by frame component. Returns where the entropy-coded data ended.
fn decode_scan(
    data: &[u8],
    at: usize,
    shape: &Shape,
    scan: &[(usize, &Huffman)],
    samples: &mut [u16],
) -> Result<usize, String> {
    let Shape {
        width,
        height,
        components: nc,
        precision,
        predictor,
        point,
    } = *shape;
    let mut bits = Bits::new(data, at);
    let initial = 1i32 << (precision - point - 1);
    let line = width * nc;
    let shape = (width, height, nc, line, initial);
    match predictor {
        1 => predicted::<1>(&mut bits, shape, scan, samples)?,
        2 => predicted::<2>(&mut bits, shape, scan, samples)?,
        3 => predicted::<3>(&mut bits, shape, scan, samples)?,
        4 => predicted::<4>(&mut bits, shape, scan, samples)?,
        5 => predicted::<5>(&mut bits, shape, scan, samples)?,
        6 => predicted::<6>(&mut bits, shape, scan, samples)?,
        7 => predicted::<7>(&mut bits, shape, scan, samples)?,
        _ => predicted::<0>(&mut bits, shape, scan, samples)?,
    }
    if bits.ended_early() {
        return Err("the entropy-coded data ends early".into());
    }
    if point > 0 {
        // The point transform (H.1.2.1): the scan's samples scaled back up.
        for &(c, _) in scan {
            for sample in samples[c..].iter_mut().step_by(nc) {
                *sample <<= point;
            }
        }
    }
    // Past the entropy-coded data: to the marker that ends it.
    let mut end = bits.marker.unwrap_or(bits.at);
    while end + 1 < data.len()
        && !(data[end] == 0xFF && data[end + 1] != 0 && data[end + 1] != 0xFF)
    {
        end += 1;
    }
    Ok(end.min(data.len()))
}
