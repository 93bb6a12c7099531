//! RLE Lossless (PS3.5 Annex G): our encoder (dicom-rs 0.10 has none) and our decoder
//! (dicom-rs 0.10's reads each segment through a byte-wise `Read` into a fresh buffer and
//! panics on a short segment; this one unpacks from the slice into reused planes and fails
//! cleanly).

use super::pixels::{frame_count, native_pixels, put_fragments, uint};
use dicom_dictionary_std::tags;
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

/// Unpack one PackBits segment (PS3.5 G.3.2) into `plane`, which it must fill; runs past
/// the end of the plane (an encoder's padding) are cut off. A segment that ends before the
/// plane is full is an error.
pub fn unpack_bits(mut segment: &[u8], plane: &mut [u8]) -> Result<(), String> {
    let mut at = 0;
    // While a whole run's worth (128 bytes) fits on both sides, every run moves a fixed
    // 128 bytes and the position advances by the run's true length: the bytes written past
    // it are written again by the runs that follow. Fixed-size moves are a few vector
    // stores, where a copy or fill of the run's own length is a `memcpy`/`memset` call per
    // run, most of the decode time for short runs.
    while at + 128 <= plane.len() && segment.len() > 128 {
        let header = segment[0] as i8;
        let to: &mut [u8; 128] = (&mut plane[at..at + 128]).try_into().expect("128 bytes");
        if header >= 0 {
            let run = header as usize + 1;
            *to = segment[1..129].try_into().expect("128 bytes");
            at += run;
            segment = &segment[1 + run..];
        } else if header != -128 {
            *to = [segment[1]; 128];
            at += (1 - header as isize) as usize;
            segment = &segment[2..];
        } else {
            segment = &segment[1..];
        }
    }
    while at < plane.len() {
        let Some((&header, rest)) = segment.split_first() else {
            return Err(format!(
                "a segment decodes to {at} of {} bytes",
                plane.len()
            ));
        };
        let header = header as i8;
        if header >= 0 {
            // A literal run of header + 1 bytes.
            let run = header as usize + 1;
            let Some(literal) = rest.get(..run) else {
                return Err(format!("a segment's literal run is cut short at {at}"));
            };
            let take = run.min(plane.len() - at);
            plane[at..at + take].copy_from_slice(&literal[..take]);
            at += take;
            segment = &rest[run..];
        } else if header != -128 {
            // One byte repeated 1 - header times.
            let Some((&byte, rest)) = rest.split_first() else {
                return Err(format!("a segment's replicate run is cut short at {at}"));
            };
            let take = ((1 - header as isize) as usize).min(plane.len() - at);
            plane[at..at + take].fill(byte);
            at += take;
            segment = rest;
        } else {
            // -128: no operation.
            segment = rest;
        }
    }
    Ok(())
}

/// Decode one RLE frame (PS3.5 G.2, G.5) of `pixels` pixels of `samples` samples of `bytes`
/// bytes each into `out` (`pixels * samples * bytes` long): native little endian, samples
/// interleaved per pixel (Planar Configuration 0), as dicom-rs's decoder writes them.
/// `planes` is scratch space reused across frames: a frame of one segment is unpacked
/// straight into `out`; otherwise every segment is unpacked into its own plane and the
/// planes are interleaved in one pass, which the compiler turns into byte shuffles (a
/// strided scatter per segment was a quarter of the decode time).
pub fn decode_frame(
    fragment: &[u8],
    pixels: usize,
    samples: usize,
    bytes: usize,
    out: &mut [u8],
    planes: &mut Vec<u8>,
) -> Result<(), String> {
    let segments = samples * bytes;
    if out.len() != pixels * segments {
        return Err("output of the wrong size".into());
    }
    let bounds = segment_bounds(fragment, segments)?;
    if segments == 1 {
        return unpack_bits(&fragment[bounds[0].clone()], out);
    }
    planes.resize(pixels * segments, 0);
    // Segment n is sample n / bytes, most significant byte first (PS3.5 G.2); plane k
    // (k = sample * bytes + byte, little endian) is the byte at offset k of each pixel.
    for (n, range) in bounds.iter().enumerate() {
        let (sample, from_msb) = (n / bytes, n % bytes);
        let k = sample * bytes + (bytes - 1 - from_msb);
        unpack_bits(
            &fragment[range.clone()],
            &mut planes[k * pixels..(k + 1) * pixels],
        )?;
    }
    let (first, rest) = planes.split_at(pixels);
    match segments {
        // 16-bit grey (CT, MR, CR): low byte plane, high byte plane.
        2 => {
            for ((pixel, &low), &high) in out.chunks_exact_mut(2).zip(first).zip(rest) {
                pixel.copy_from_slice(&[low, high]);
            }
        }
        // 8-bit colour: R, G, B planes.
        3 => {
            let (second, third) = rest.split_at(pixels);
            for (((pixel, &r), &g), &b) in out.chunks_exact_mut(3).zip(first).zip(second).zip(third)
            {
                pixel.copy_from_slice(&[r, g, b]);
            }
        }
        _ => {
            for (k, plane) in planes.chunks_exact(pixels).enumerate() {
                for (to, &byte) in out[k..].iter_mut().step_by(segments).zip(plane) {
                    *to = byte;
                }
            }
        }
    }
    Ok(())
}

/// The byte range of each of the `segments` segments an RLE header (PS3.5 G.5) names:
/// in order, after the 64-byte header, within the fragment.
fn segment_bounds(fragment: &[u8], segments: usize) -> Result<Vec<std::ops::Range<usize>>, String> {
    let le32 = |at: usize| -> Option<usize> {
        Some(u32::from_le_bytes(fragment.get(at..at + 4)?.try_into().ok()?) as usize)
    };
    if fragment.len() < 64 {
        return Err("shorter than its header".into());
    }
    let count = le32(0).ok_or("shorter than its header")?;
    if count != segments || segments > 15 {
        return Err(format!("{count} segments, {segments} expected"));
    }
    (0..segments)
        .map(|n| {
            let start = le32(4 + 4 * n).ok_or("shorter than its header")?;
            let end = if n + 1 < segments {
                le32(8 + 4 * n).ok_or("shorter than its header")?
            } else {
                fragment.len()
            };
            if start < 64 || start > end || end > fragment.len() {
                return Err(format!("segment at {start}..{end} outside the fragment"));
            }
            Ok(start..end)
        })
        .collect()
}

/// Whether an RLE frame of `decoded` bytes can come out of a fragment of `encoded` bytes:
/// PackBits makes at most 128 bytes of 2 (PS3.5 G.3.1), so a header claiming more lies.
/// Checked before the output is allocated, instead of walking every segment first.
pub fn plausible(encoded: usize, decoded: usize) -> bool {
    decoded <= encoded.saturating_mul(64)
}

/// Replace `obj`'s native Pixel Data by RLE fragments, one per frame, with a basic
/// offset table (PS3.5 A.4, G).
pub fn encode_object(obj: &mut DefaultDicomObject) -> Result<(), String> {
    let rows = uint(obj, tags::ROWS)?;
    let cols = uint(obj, tags::COLUMNS)?;
    let samples = uint(obj, tags::SAMPLES_PER_PIXEL)?;
    let allocated = uint(obj, tags::BITS_ALLOCATED)?;
    if allocated % 8 != 0 {
        return Err(format!("RLE of {allocated}-bit samples is not supported"));
    }
    let planar = samples > 1 && uint(obj, tags::PLANAR_CONFIGURATION).unwrap_or(0) == 1;
    let frames = frame_count(obj);
    let bytes = allocated / 8;
    let pixels = rows * cols;
    let frame_len = pixels * samples * bytes;
    let data = native_pixels(obj, frame_len, frames)?;
    let fragments = data
        .chunks_exact(frame_len)
        .take(frames)
        .map(|frame| encode_frame(frame, pixels, samples, bytes, planar))
        .collect::<Result<Vec<_>, _>>()?;
    drop(data);
    put_fragments(obj, fragments);
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
    fn unpack_bits_agrees_with_the_reference_decoder() {
        // Planes of mixed runs (long and short replicates, literals of every length),
        // decoded by the block path and its careful tail alike.
        let mut seed = 0x2545_f491_u32;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        for len in [1usize, 127, 128, 129, 257, 4096, 65_536 + 77] {
            let mut plane = Vec::with_capacity(len);
            while plane.len() < len {
                let r = next();
                let run = 1 + (r >> 8) as usize % 200;
                if r % 3 == 0 {
                    plane.extend(std::iter::repeat_n(r as u8, run));
                } else {
                    plane.extend((0..run).map(|_| next() as u8));
                }
            }
            plane.truncate(len);
            let mut seg = Vec::new();
            pack_bits(&plane, &mut seg);
            // No-op headers (-128) between runs change nothing.
            let mut with_noops = vec![0x80u8];
            with_noops.extend_from_slice(&seg);
            for segment in [&seg, &with_noops] {
                let mut out = vec![0xAAu8; len];
                unpack_bits(segment, &mut out).unwrap();
                assert_eq!(out, plane, "plane of {len}");
            }
        }
        // A replicate run past the end of the plane (padding) is cut off.
        let seg = [0x81u8, b'a', 0x80, 0x81, b'b', 0x81, b'c'];
        let mut out = vec![0u8; 200];
        unpack_bits(&seg, &mut out).unwrap();
        assert!(out[..128].iter().all(|&b| b == b'a') && out[128..].iter().all(|&b| b == b'b'));
        // A segment one byte short of its plane is an error.
        let mut short = vec![0u8; 385];
        assert!(unpack_bits(&seg, &mut short).is_err());
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

    #[test]
    fn decode_frame_undoes_encode_frame_for_every_layout() {
        // (samples, bytes): 8-bit grey, 16-bit grey, 8-bit RGB, 16-bit RGB, 32-bit grey.
        for (samples, bytes) in [(1, 1), (1, 2), (3, 1), (3, 2), (1, 4)] {
            let pixels = 300;
            let frame: Vec<u8> = (0..pixels * samples * bytes)
                .map(|i| ((i * 7 + i / 5) % 251) as u8)
                .collect();
            let encoded = encode_frame(&frame, pixels, samples, bytes, false).unwrap();
            let mut out = vec![0u8; frame.len()];
            let mut planes = Vec::new();
            decode_frame(&encoded, pixels, samples, bytes, &mut out, &mut planes).unwrap();
            assert_eq!(out, frame, "{samples} samples of {bytes} bytes");
            // The planes are reused for the next frame.
            out.fill(0);
            decode_frame(&encoded, pixels, samples, bytes, &mut out, &mut planes).unwrap();
            assert_eq!(out, frame);
        }
    }

    #[test]
    fn decode_frame_refuses_what_does_not_add_up() {
        let frame = [1u8, 0, 2, 0, 3, 0];
        let enc = encode_frame(&frame, 3, 1, 2, false).unwrap();
        let mut out = vec![0u8; 6];
        let mut planes = Vec::new();
        // Cut short, a header only, the wrong segment count, more pixels than coded.
        assert!(decode_frame(&enc[..enc.len() - 2], 3, 1, 2, &mut out, &mut planes).is_err());
        assert!(decode_frame(&enc[..40], 3, 1, 2, &mut out, &mut planes).is_err());
        assert!(decode_frame(&enc, 6, 1, 1, &mut out, &mut planes).is_err());
        let mut longer = vec![0u8; 8];
        assert!(decode_frame(&enc, 4, 1, 2, &mut longer, &mut planes).is_err());
        // A segment offset past the end of the fragment.
        let mut lying = enc.clone();
        lying[8..12].copy_from_slice(&10_000u32.to_le_bytes());
        assert!(decode_frame(&lying, 3, 1, 2, &mut out, &mut planes).is_err());
        assert!(plausible(100, 6400) && !plausible(100, 6401));
    }
}
