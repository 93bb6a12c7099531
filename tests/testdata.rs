//! Tests for the deterministic synthetic-study generator (`beeldbrug::testdata`).

use beeldbrug::testdata::{
    bsn_is_valid, fictitious_bsn, generate, GenerateArgs, GenerateError, GeneratedFile,
    CT_IMAGE_STORAGE, EXPLICIT_VR_LE, IMPLICIT_VR_LE, JPEG_BASELINE, RLE_LOSSLESS,
    SC_MULTIFRAME_GRAYSCALE_WORD,
};
use dicom_core::value::Value;
use dicom_dictionary_std::tags;
use dicom_object::{open_file, DefaultDicomObject};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

/// A small run that exercises every variant except the big DX.
fn small_args(out: &Path) -> GenerateArgs {
    GenerateArgs {
        out: out.to_path_buf(),
        seed: 42,
        patients: 5,
        ct_slices: 3,
        mr_slices: 2,
        dx: false,
        multiframe_frames: 3,
        frame_size: 64,
        encapsulated: true,
        implicit: true,
    }
}

fn generate_small() -> (tempfile::TempDir, Vec<GeneratedFile>) {
    let dir = tempfile::tempdir().unwrap();
    let files = generate(&small_args(dir.path())).expect("generate");
    (dir, files)
}

fn str_of(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> String {
    obj.element(tag)
        .unwrap_or_else(|e| panic!("missing {tag}: {e}"))
        .to_str()
        .unwrap()
        .trim_end_matches([' ', '\0'])
        .to_string()
}

fn int_of(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> u64 {
    obj.element(tag).unwrap().to_int::<u64>().unwrap()
}

/// The 11-test, written independently of the library.
fn elfproef(s: &str) -> bool {
    let d: Vec<i64> = s
        .chars()
        .filter_map(|c| c.to_digit(10))
        .map(i64::from)
        .collect();
    if d.len() != 9 || s.len() != 9 || d.iter().all(|&x| x == 0) {
        return false;
    }
    let sum: i64 = (0..8).map(|i| d[i] * (9 - i as i64)).sum::<i64>() - d[8];
    sum % 11 == 0
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Value of the first explicit-VR-LE (0010,0010) PN element in the raw file bytes.
fn raw_patient_name(bytes: &[u8]) -> Vec<u8> {
    let at = find(bytes, &[0x10, 0x00, 0x10, 0x00, b'P', b'N']).expect("PN element");
    let len = u16::from_le_bytes([bytes[at + 6], bytes[at + 7]]) as usize;
    bytes[at + 8..at + 8 + len].to_vec()
}

/// PackBits-based RLE Lossless (PS3.5 Annex G) decoder for 16-bit single-sample frames.
fn rle_decode_u16(fragment: &[u8], rows: usize, cols: usize) -> Vec<u16> {
    let u32_at = |i: usize| u32::from_le_bytes(fragment[i..i + 4].try_into().unwrap()) as usize;
    let segments = u32_at(0);
    assert_eq!(segments, 2, "16-bit grayscale has two segments");
    let offsets: Vec<usize> = (0..segments).map(|i| u32_at(4 + 4 * i)).collect();
    assert_eq!(offsets[0], 64, "first segment follows the 64-byte header");
    for i in 2..15 {
        assert_eq!(u32_at(4 + 4 * i), 0, "unused offsets are zero");
    }
    let n = rows * cols;
    let planes: Vec<Vec<u8>> = (0..segments)
        .map(|s| {
            let end = offsets.get(s + 1).copied().unwrap_or(fragment.len());
            let mut src = &fragment[offsets[s]..end];
            let mut out = Vec::with_capacity(n);
            while out.len() < n {
                let h = src[0] as i8;
                src = &src[1..];
                match h {
                    0..=127 => {
                        let k = h as usize + 1;
                        out.extend_from_slice(&src[..k]);
                        src = &src[k..];
                    }
                    -127..=-1 => {
                        let k = (1 - h as isize) as usize;
                        out.extend(std::iter::repeat_n(src[0], k));
                        src = &src[1..];
                    }
                    -128 => {}
                }
            }
            assert_eq!(out.len(), n, "segment {s} decodes to exactly one plane");
            assert!(src.len() <= 1, "segment {s} has only padding left");
            out
        })
        .collect();
    planes[0]
        .iter()
        .zip(&planes[1])
        .map(|(&hi, &lo)| u16::from(hi) << 8 | u16::from(lo))
        .collect()
}

fn fragments(obj: &DefaultDicomObject) -> (Vec<u32>, Vec<Vec<u8>>) {
    match obj.element(tags::PIXEL_DATA).unwrap().value() {
        Value::PixelSequence(seq) => (seq.offset_table().to_vec(), seq.fragments().to_vec()),
        other => panic!("expected encapsulated pixel data, got {other:?}"),
    }
}

#[test]
fn known_bsns() {
    // 111222333: 9+8+7+12+10+8+9+6 = 69; 69-3 = 66 = 6*11
    assert!(elfproef("111222333") && bsn_is_valid("111222333"));
    // 999999990: 9*44 = 396 = 36*11; minus 0
    assert!(elfproef("999999990") && bsn_is_valid("999999990"));
    // 123456789: 9+16+21+24+25+24+21+16 = 156; 156-9 = 147 = 13*11+4
    assert!(!elfproef("123456789") && !bsn_is_valid("123456789"));
    for bad in [
        "000000000",
        "11122233",
        "1112223330",
        "11122233x",
        "",
        "111222334",
    ] {
        assert!(!bsn_is_valid(bad), "{bad}");
    }
    // the library agrees with the independent implementation on a range of numbers
    for n in (100_000_000u32..100_100_000).step_by(7) {
        let s = n.to_string();
        assert_eq!(bsn_is_valid(&s), elfproef(&s), "{s}");
    }
    for seed in 0..500 {
        let b = fictitious_bsn(seed);
        assert!(elfproef(&b), "{b}");
        assert_eq!(b, fictitious_bsn(seed));
    }
}

#[test]
fn deterministic_byte_identical() {
    let (a, fa) = generate_small();
    let (b, fb) = generate_small();
    assert_eq!(fa.len(), fb.len());
    assert!(!fa.is_empty());
    for (x, y) in fa.iter().zip(&fb) {
        let rx = x.path.strip_prefix(a.path()).unwrap();
        let ry = y.path.strip_prefix(b.path()).unwrap();
        assert_eq!(rx, ry);
        assert_eq!(x.sop_uid, y.sop_uid);
        let bx = std::fs::read(&x.path).unwrap();
        let by = std::fs::read(&y.path).unwrap();
        assert!(bx == by, "{} differs", rx.display());
    }
    // a different seed changes UIDs and patient ids
    let c = tempfile::tempdir().unwrap();
    let mut args = small_args(c.path());
    args.seed = 43;
    let fc = generate(&args).unwrap();
    assert_ne!(fa[0].sop_uid, fc[0].sop_uid);
    assert_ne!(fa[0].patient_id, fc[0].patient_id);
}

#[test]
fn every_file_parses_with_declared_metadata() {
    let (dir, files) = generate_small();
    // 5 patients × (CT 3 × 4 variants + MR 2) + 1 multi-frame
    assert_eq!(files.len(), 5 * (3 * 4 + 2) + 1);
    let mut sops = HashSet::new();
    let mut patient_ids = BTreeMap::new();
    for f in &files {
        assert!(f.path.starts_with(dir.path()));
        assert!(sops.insert(f.sop_uid.clone()), "duplicate SOP UID");
        for uid in [&f.study_uid, &f.series_uid, &f.sop_uid] {
            assert!(uid.starts_with("2.25.") && uid.len() <= 64, "{uid}");
            assert!(uid[5..].bytes().all(|c| c.is_ascii_digit()), "{uid}");
        }
        let bytes = std::fs::read(&f.path).unwrap();
        assert_eq!(&bytes[128..132], b"DICM");
        let obj = open_file(&f.path).unwrap_or_else(|e| panic!("{}: {e}", f.path.display()));
        let meta = obj.meta();
        assert_eq!(meta.transfer_syntax(), f.transfer_syntax);
        assert_eq!(meta.media_storage_sop_instance_uid(), f.sop_uid);
        assert_eq!(meta.media_storage_sop_class_uid(), f.sop_class_uid);
        assert!(!meta.implementation_class_uid().is_empty());
        assert_eq!(str_of(&obj, tags::SOP_INSTANCE_UID), f.sop_uid);
        assert_eq!(str_of(&obj, tags::SOP_CLASS_UID), f.sop_class_uid);
        assert_eq!(str_of(&obj, tags::STUDY_INSTANCE_UID), f.study_uid);
        assert_eq!(str_of(&obj, tags::SERIES_INSTANCE_UID), f.series_uid);
        assert_eq!(str_of(&obj, tags::PATIENT_ID), f.patient_id);
        assert_eq!(str_of(&obj, tags::PATIENT_NAME), f.patient_name);
        assert_eq!(
            str_of(&obj, tags::ISSUER_OF_PATIENT_ID),
            "2.16.840.1.113883.2.4.6.3"
        );
        let charset = obj
            .element_opt(tags::SPECIFIC_CHARACTER_SET)
            .unwrap()
            .map(|e| e.to_str().unwrap().trim().to_string())
            .unwrap_or_default();
        assert_eq!(charset, f.charset);
        for tag in [
            tags::PATIENT_BIRTH_DATE,
            tags::PATIENT_SEX,
            tags::STUDY_DATE,
            tags::STUDY_TIME,
            tags::ACCESSION_NUMBER,
            tags::STUDY_ID,
            tags::STUDY_DESCRIPTION,
            tags::REFERRING_PHYSICIAN_NAME,
            tags::MODALITY,
            tags::SERIES_NUMBER,
            tags::SERIES_DESCRIPTION,
            tags::BODY_PART_EXAMINED,
            tags::SERIES_DATE,
            tags::INSTANCE_NUMBER,
            tags::WINDOW_CENTER,
            tags::WINDOW_WIDTH,
        ] {
            assert!(!str_of(&obj, tag).is_empty(), "{tag} empty");
        }
        assert_eq!(
            str_of(&obj, tags::PHOTOMETRIC_INTERPRETATION),
            "MONOCHROME2"
        );
        assert_eq!(int_of(&obj, tags::SAMPLES_PER_PIXEL), 1);
        assert_eq!(int_of(&obj, tags::PIXEL_REPRESENTATION), 0);
        let bits = int_of(&obj, tags::BITS_ALLOCATED);
        assert_eq!(
            int_of(&obj, tags::HIGH_BIT),
            int_of(&obj, tags::BITS_STORED) - 1
        );
        if f.sop_class_uid == CT_IMAGE_STORAGE {
            assert_eq!(int_of(&obj, tags::ROWS), 512);
            for tag in [
                tags::IMAGE_POSITION_PATIENT,
                tags::IMAGE_ORIENTATION_PATIENT,
                tags::PIXEL_SPACING,
                tags::SLICE_THICKNESS,
                tags::RESCALE_SLOPE,
                tags::RESCALE_INTERCEPT,
            ] {
                assert!(!str_of(&obj, tag).is_empty(), "{tag} empty");
            }
            let expected_bits = if f.transfer_syntax == JPEG_BASELINE {
                8
            } else {
                16
            };
            assert_eq!(bits, expected_bits);
        }
        assert!(bsn_is_valid(&f.patient_id) && elfproef(&f.patient_id));
        let name = patient_ids
            .entry(f.patient_id.clone())
            .or_insert_with(|| f.patient_name.clone());
        assert_eq!(*name, f.patient_name, "one name per patient id");
    }
    assert_eq!(patient_ids.len(), 5, "distinct BSNs");
    // both Müller^Zoë patients exist, with different BSNs and charsets
    let zoe: Vec<&GeneratedFile> = files
        .iter()
        .filter(|f| f.patient_name == "Müller^Zoë" && f.instance_is_first_ct())
        .collect();
    assert_eq!(zoe.len(), 2);
    assert_ne!(zoe[0].patient_id, zoe[1].patient_id);
    assert_eq!(zoe[0].charset, "ISO_IR 100");
    assert_eq!(zoe[1].charset, "ISO_IR 192");
    // transfer syntaxes covered
    let ts: HashSet<&str> = files.iter().map(|f| f.transfer_syntax.as_str()).collect();
    for t in [EXPLICIT_VR_LE, IMPLICIT_VR_LE, JPEG_BASELINE, RLE_LOSSLESS] {
        assert!(ts.contains(t), "{t} missing");
    }
}

trait FirstCt {
    fn instance_is_first_ct(&self) -> bool;
}

impl FirstCt for GeneratedFile {
    /// Selects one file per patient: the explicit-VR CT instance 1.
    fn instance_is_first_ct(&self) -> bool {
        self.sop_class_uid == CT_IMAGE_STORAGE
            && self.transfer_syntax == EXPLICIT_VR_LE
            && open_file(&self.path)
                .map(|o| int_of(&o, tags::INSTANCE_NUMBER) == 1)
                .unwrap_or(false)
    }
}

#[test]
fn charsets_on_disk() {
    let (_dir, files) = generate_small();
    let latin1 = files
        .iter()
        .find(|f| f.charset == "ISO_IR 100" && f.patient_name == "Müller^Zoë")
        .unwrap();
    let utf8 = files
        .iter()
        .find(|f| f.charset == "ISO_IR 192" && f.patient_name == "Müller^Zoë")
        .unwrap();

    let raw = std::fs::read(&latin1.path).unwrap();
    // "Müller^Zoë" in Latin-1: 10 bytes, already even
    assert_eq!(
        raw_patient_name(&raw),
        b"M\xFCller^Zo\xEB".to_vec(),
        "ISO_IR 100 must hold Latin-1 bytes"
    );
    assert!(
        find(&raw, "Müller".as_bytes()).is_none(),
        "no UTF-8 in a Latin-1 file"
    );
    let obj = open_file(&latin1.path).unwrap();
    assert_eq!(str_of(&obj, tags::SPECIFIC_CHARACTER_SET), "ISO_IR 100");
    assert_eq!(str_of(&obj, tags::PATIENT_NAME), "Müller^Zoë");

    let raw = std::fs::read(&utf8.path).unwrap();
    assert_eq!(raw_patient_name(&raw), "Müller^Zoë".as_bytes().to_vec()); // 12 bytes, even
    let obj = open_file(&utf8.path).unwrap();
    assert_eq!(str_of(&obj, tags::SPECIFIC_CHARACTER_SET), "ISO_IR 192");
    assert_eq!(str_of(&obj, tags::PATIENT_NAME), "Müller^Zoë");

    // the plain-ASCII patient is written without Specific Character Set
    let ascii = files.iter().find(|f| f.charset.is_empty()).unwrap();
    assert!(ascii.patient_name.is_ascii());
    let obj = open_file(&ascii.path).unwrap();
    assert!(obj
        .element_opt(tags::SPECIFIC_CHARACTER_SET)
        .unwrap()
        .is_none());

    // other diacritic names round-trip in both charsets
    for f in files.iter().filter(|f| !f.patient_name.is_ascii()) {
        let obj = open_file(&f.path).unwrap();
        assert_eq!(str_of(&obj, tags::PATIENT_NAME), f.patient_name);
    }
}

/// Native pixel bytes of a file: the last rows*cols*2 bytes.
fn native_pixels(path: &Path, n: usize) -> Vec<u16> {
    let raw = std::fs::read(path).unwrap();
    raw[raw.len() - 2 * n..]
        .chunks_exact(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// The explicit-VR CT file of the same patient and instance number as `f`.
fn explicit_twin<'a>(files: &'a [GeneratedFile], f: &GeneratedFile) -> &'a GeneratedFile {
    let instance = int_of(&open_file(&f.path).unwrap(), tags::INSTANCE_NUMBER);
    files
        .iter()
        .find(|g| {
            g.patient_id == f.patient_id
                && g.study_uid == f.study_uid
                && g.transfer_syntax == EXPLICIT_VR_LE
                && g.sop_class_uid == CT_IMAGE_STORAGE
                && int_of(&open_file(&g.path).unwrap(), tags::INSTANCE_NUMBER) == instance
        })
        .unwrap()
}

#[test]
fn rle_fragments_decode_to_original_pixels() {
    let (_dir, files) = generate_small();
    let rle: Vec<&GeneratedFile> = files
        .iter()
        .filter(|f| f.transfer_syntax == RLE_LOSSLESS)
        .collect();
    assert_eq!(rle.len(), 5 * 3);
    for f in rle.iter().take(4) {
        let obj = open_file(&f.path).unwrap();
        let (bot, frags) = fragments(&obj);
        assert!(bot.is_empty());
        assert_eq!(frags.len(), 1, "one fragment per frame");
        assert_eq!(frags[0].len() % 2, 0);
        let decoded = rle_decode_u16(&frags[0], 512, 512);
        let twin = explicit_twin(&files, f);
        assert_ne!(twin.series_uid, f.series_uid);
        assert_eq!(decoded, native_pixels(&twin.path, 512 * 512));
        // sanity: the phantom has structure (air, tissue, bone)
        let min = *decoded.iter().min().unwrap();
        let max = *decoded.iter().max().unwrap();
        assert!(min < 100 && max > 1500, "{min}..{max}");
    }
}

#[test]
fn jpeg_fragments_are_baseline_jpeg() {
    let (_dir, files) = generate_small();
    let jpegs: Vec<&GeneratedFile> = files
        .iter()
        .filter(|f| f.transfer_syntax == JPEG_BASELINE)
        .collect();
    assert_eq!(jpegs.len(), 5 * 3);
    for f in &jpegs {
        let raw = std::fs::read(&f.path).unwrap();
        // encapsulated Pixel Data: OB with undefined length
        assert!(find(
            &raw,
            &[0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]
        )
        .is_some());
        let obj = open_file(&f.path).unwrap();
        assert_eq!(int_of(&obj, tags::BITS_ALLOCATED), 8);
        assert_eq!(str_of(&obj, tags::LOSSY_IMAGE_COMPRESSION), "01");
        let (bot, frags) = fragments(&obj);
        assert!(bot.is_empty());
        assert_eq!(frags.len(), 1);
        let j = &frags[0];
        assert_eq!(j.len() % 2, 0);
        assert_eq!(&j[..2], &[0xFF, 0xD8], "SOI");
        let end = if j.ends_with(&[0xFF, 0xD9]) {
            j.len()
        } else {
            j.len() - 1
        };
        assert_eq!(&j[end - 2..end], &[0xFF, 0xD9], "EOI");
        // baseline SOF0: precision 8, 512 lines, 512 samples, 1 component
        let sof = find(j, &[0xFF, 0xC0]).expect("SOF0 (baseline)");
        assert_eq!(&j[sof + 4..sof + 10], &[8, 0x02, 0x00, 0x02, 0x00, 1]);
        assert!(find(j, &[0xFF, 0xC2]).is_none(), "not progressive");
    }
    // decode with DCMTK when it is installed (no JPEG decoder is compiled in)
    if let Ok(out) = std::process::Command::new("dcmdjpeg")
        .arg(&jpegs[0].path)
        .arg(jpegs[0].path.with_extension("raw.dcm"))
        .output()
    {
        assert!(
            out.status.success(),
            "dcmdjpeg failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn implicit_copies_hold_the_same_pixels() {
    let (_dir, files) = generate_small();
    let implicit: Vec<&GeneratedFile> = files
        .iter()
        .filter(|f| f.transfer_syntax == IMPLICIT_VR_LE)
        .collect();
    assert_eq!(implicit.len(), 5 * 3);
    for f in implicit.iter().take(3) {
        let raw = std::fs::read(&f.path).unwrap();
        // implicit VR: (7FE0,0010) followed directly by the 32-bit length
        let n = 512 * 512 * 2;
        let hdr = &raw[raw.len() - n - 8..raw.len() - n];
        assert_eq!(&hdr[..4], &[0xE0, 0x7F, 0x10, 0x00]);
        assert_eq!(u32::from_le_bytes(hdr[4..].try_into().unwrap()) as usize, n);
        let twin = explicit_twin(&files, f);
        assert_ne!(twin.sop_uid, f.sop_uid);
        assert_eq!(
            native_pixels(&f.path, 512 * 512),
            native_pixels(&twin.path, 512 * 512)
        );
        let obj = open_file(&f.path).unwrap();
        assert_eq!(str_of(&obj, tags::PATIENT_NAME), f.patient_name);
    }
}

#[test]
fn multiframe_size_matches_header_plus_frames() {
    let (_dir, files) = generate_small();
    let mf: Vec<&GeneratedFile> = files
        .iter()
        .filter(|f| f.sop_class_uid == SC_MULTIFRAME_GRAYSCALE_WORD)
        .collect();
    assert_eq!(mf.len(), 1);
    let f = mf[0];
    let obj = open_file(&f.path).unwrap();
    assert_eq!(int_of(&obj, tags::NUMBER_OF_FRAMES), 3);
    assert_eq!(int_of(&obj, tags::ROWS), 64);
    assert_eq!(int_of(&obj, tags::COLUMNS), 64);
    let pixel_len = 64 * 64 * 2 * 3;
    let raw = std::fs::read(&f.path).unwrap();
    let header_len = raw.len() - pixel_len;
    // the 12-byte explicit VR header of (7FE0,0010) ends the header part
    let hdr = &raw[header_len - 12..header_len];
    assert_eq!(&hdr[..8], &[0xE0, 0x7F, 0x10, 0x00, b'O', b'W', 0, 0]);
    assert_eq!(
        u32::from_le_bytes(hdr[8..].try_into().unwrap()) as usize,
        pixel_len
    );
    let value = obj.element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap();
    assert_eq!(value.len(), pixel_len);
    assert_eq!(&value[..], &raw[header_len..]);
    // frames differ (the bolus moves)
    let frame = 64 * 64 * 2;
    assert_ne!(
        &raw[header_len..header_len + frame],
        &raw[header_len + frame..header_len + 2 * frame]
    );
}

#[test]
fn too_large_multiframe_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = GenerateArgs::with_defaults(dir.path());
    args.multiframe_frames = 2100;
    args.frame_size = 1024;
    assert!(matches!(
        generate(&args),
        Err(GenerateError::PixelDataTooLarge { .. })
    ));
    // nothing was written
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn dx_is_written_and_parses() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = GenerateArgs::with_defaults(dir.path());
    args.patients = 1;
    args.ct_slices = 0;
    args.mr_slices = 0;
    args.dx = true;
    let files = generate(&args).unwrap();
    assert_eq!(files.len(), 1);
    let f = &files[0];
    assert_eq!(f.sop_class_uid, "1.2.840.10008.5.1.4.1.1.1.1");
    let len = std::fs::metadata(&f.path).unwrap().len();
    assert!(len > 3072 * 3072 * 2);
    let obj = open_file(&f.path).unwrap();
    assert_eq!(int_of(&obj, tags::ROWS), 3072);
    assert_eq!(str_of(&obj, tags::MODALITY), "DX");
    assert_eq!(str_of(&obj, tags::PATIENT_NAME), "Müller^Zoë");
}
