// Checks of the `codestream` fuzz target, shared by `fuzz/fuzz_targets/codestream.rs` and the
// corpus replay in `tests/fuzz_corpus.rs` (both `include!` this file).

use beeldbrug::dimse::dataset::{file_header, open_stored, Extent};
use beeldbrug::transcode::{decode_frame, transcode_file, EXPLICIT_VR_LE, JPEG_LS_LOSSLESS};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

/// The compressed syntaxes a stored instance may be in, as the first input byte selects.
/// HTJ2K and JPEG XL come last so that the earlier inputs keep their syntax.
pub const SYNTAXES: [&str; 13] = [
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.51",
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.5",
    "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.4.201",
    "1.2.840.10008.1.2.4.203",
    "1.2.840.10008.1.2.4.110",
    "1.2.840.10008.1.2.4.112",
];

/// An input: byte 0 the syntax ([`SYNTAXES`]), bytes 1 and 2 Rows - 1 and Columns - 1
/// (up to 256 x 256), byte 3 Bits Allocated (bit 0: 16, else 8) and the number of frames
/// (bits 1-2, plus one); the rest the codestream, cut into that many fragments, one per frame
/// (for Deflate: the deflated data set itself). Written as a stored Part 10 file, it goes
/// through the one decode entry of every retrieve (`transcode::transcode_file` into Explicit
/// VR LE, and into JPEG-LS: decode then encode) and the frame decoder of `/frames` and
/// `/rendered` (`transcode::decode_frame`). Any may fail; none may panic, and what the data
/// set announces bounds what is allocated (the fuzzer's RSS limit). Returns whether the
/// instance decoded.
pub fn check_codestream(data: &[u8]) -> bool {
    let Some((head, body)) = data.split_first_chunk::<4>() else {
        return false;
    };
    let ts = SYNTAXES[head[0] as usize % SYNTAXES.len()];
    let rows = head[1] as u16 + 1;
    let cols = head[2] as u16 + 1;
    let bits: u16 = if head[3] & 1 == 1 { 16 } else { 8 };
    let frames = ((head[3] >> 1) & 3) as usize + 1;
    let mut file = file_header("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4", ts, "FUZZ").unwrap();
    if ts == "1.2.840.10008.1.2.1.99" {
        file.extend_from_slice(body);
    } else {
        file.extend_from_slice(&data_set(rows, cols, bits, frames, body));
    }
    let path = fresh_path();
    std::fs::write(&path, &file).expect("write the instance");
    let decoded = transcode_file(&path, EXPLICIT_VR_LE).is_ok();
    let _ = transcode_file(&path, JPEG_LS_LOSSLESS);
    if let Ok((obj, _)) = open_stored(&path, Extent::Whole) {
        for frame in 0..frames as u32 {
            let _ = decode_frame(&obj, frame);
        }
    }
    let _ = std::fs::remove_file(&path);
    decoded
}

/// A CT image data set in Explicit VR LE with encapsulated Pixel Data: an empty basic
/// offset table and `body` cut into `frames` fragments.
pub fn data_set(rows: u16, cols: u16, bits: u16, frames: usize, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut short = |group: u16, element: u16, vr: &[u8; 2], value: &[u8]| {
        let mut value = value.to_vec();
        if value.len() % 2 == 1 {
            value.push(if vr == b"UI" { 0 } else { b' ' });
        }
        out.extend_from_slice(&group.to_le_bytes());
        out.extend_from_slice(&element.to_le_bytes());
        out.extend_from_slice(vr);
        out.extend_from_slice(&(value.len() as u16).to_le_bytes());
        out.extend_from_slice(&value);
    };
    short(0x0008, 0x0016, b"UI", b"1.2.840.10008.5.1.4.1.1.2");
    short(0x0008, 0x0018, b"UI", b"1.2.3.4");
    short(0x0028, 0x0002, b"US", &1u16.to_le_bytes());
    short(0x0028, 0x0004, b"CS", b"MONOCHROME2");
    short(0x0028, 0x0008, b"IS", frames.to_string().as_bytes());
    short(0x0028, 0x0010, b"US", &rows.to_le_bytes());
    short(0x0028, 0x0011, b"US", &cols.to_le_bytes());
    short(0x0028, 0x0100, b"US", &bits.to_le_bytes());
    short(0x0028, 0x0101, b"US", &bits.to_le_bytes());
    short(0x0028, 0x0102, b"US", &(bits - 1).to_le_bytes());
    short(0x0028, 0x0103, b"US", &0u16.to_le_bytes());
    out.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
    let item = |out: &mut Vec<u8>, value: &[u8]| {
        out.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0]);
        out.extend_from_slice(&((value.len() + value.len() % 2) as u32).to_le_bytes());
        out.extend_from_slice(value);
        if value.len() % 2 == 1 {
            out.push(0);
        }
    };
    item(&mut out, &[]);
    let per = body.len().div_ceil(frames).max(1);
    let mut chunks: Vec<&[u8]> = body.chunks(per).collect();
    chunks.resize(frames, &[]);
    for chunk in chunks {
        item(&mut out, chunk);
    }
    out.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
    out
}

fn fresh_path() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!(
        "beeldbrug-fuzz-codestream-{}-{n}.dcm",
        std::process::id()
    ))
}
