//! A small RLE Lossless encoder (DICOM PS3.5 Annex G).
//!
//! A frame becomes one fragment: a 64-byte header (segment count, then up to 15 segment
//! offsets, all `u32` little-endian) followed by one PackBits-compressed segment per byte
//! plane, most significant byte first. Each row is compressed separately and each segment
//! is padded to even length.

/// Encode a 16-bit single-sample frame as an RLE Lossless fragment (2 segments).
pub(crate) fn encode_u16(pixels: &[u16], rows: usize, cols: usize) -> Vec<u8> {
    assert_eq!(pixels.len(), rows * cols);
    let mut out = vec![0u8; 64];
    let mut offsets = [0u32; 2];
    let mut plane = vec![0u8; cols];
    for (seg, offset) in offsets.iter_mut().enumerate() {
        *offset = out.len() as u32;
        let shift = if seg == 0 { 8 } else { 0 };
        for row in pixels.chunks_exact(cols) {
            for (b, &v) in plane.iter_mut().zip(row) {
                *b = (v >> shift) as u8;
            }
            packbits(&plane, &mut out);
        }
        if out.len() % 2 == 1 {
            out.push(0);
        }
    }
    out[0..4].copy_from_slice(&2u32.to_le_bytes());
    out[4..8].copy_from_slice(&offsets[0].to_le_bytes());
    out[8..12].copy_from_slice(&offsets[1].to_le_bytes());
    out
}

/// PackBits: header n in 0..=127 → copy the next n+1 bytes literally; header n in
/// -127..=-1 → repeat the next byte 1-n times; -128 is never emitted.
fn packbits(src: &[u8], out: &mut Vec<u8>) {
    let n = src.len();
    let mut i = 0;
    while i < n {
        let mut run = 1;
        while i + run < n && run < 128 && src[i + run] == src[i] {
            run += 1;
        }
        if run >= 2 {
            out.push((1 - run as i16) as i8 as u8);
            out.push(src[i]);
            i += run;
            continue;
        }
        let start = i;
        i += 1;
        while i < n && i - start < 128 && !(i + 1 < n && src[i] == src[i + 1]) {
            i += 1;
        }
        out.push((i - start - 1) as u8);
        out.extend_from_slice(&src[start..i]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unpack(mut src: &[u8], expected: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while out.len() < expected {
            let h = src[0] as i8;
            src = &src[1..];
            if h >= 0 {
                let k = h as usize + 1;
                out.extend_from_slice(&src[..k]);
                src = &src[k..];
            } else if h != -128 {
                let k = (1 - h as isize) as usize;
                out.extend(std::iter::repeat_n(src[0], k));
                src = &src[1..];
            }
        }
        out
    }

    #[test]
    fn packbits_roundtrip() {
        let mut cases: Vec<Vec<u8>> = vec![
            vec![],
            vec![1],
            vec![1, 1],
            vec![1, 2],
            vec![7; 300],
            (0..=255).collect(),
        ];
        let mut mixed = Vec::new();
        for i in 0..1000u32 {
            mixed.push(if i % 7 < 3 { 9 } else { (i * 31 % 251) as u8 });
        }
        cases.push(mixed);
        for c in cases {
            let mut enc = Vec::new();
            packbits(&c, &mut enc);
            assert_eq!(unpack(&enc, c.len()), c);
        }
    }
}
