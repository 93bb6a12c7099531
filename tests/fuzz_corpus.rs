//! Replays the cargo-fuzz corpora (`fuzz/corpus/command_set`, `fuzz/corpus/pdata`,
//! `fuzz/corpus/qido_query`, `fuzz/corpus/multipart`, `fuzz/corpus/pacs_answer`,
//! `fuzz/corpus/stored_dataset`, `fuzz/corpus/ebrim_query`, `fuzz/corpus/soap_envelope`,
//! `fuzz/corpus/codestream`, `fuzz/corpus/xacml`) through
//! the same checks as the fuzz targets in `fuzz/fuzz_targets/`, so CI exercises every seed
//! and every input the fuzzer kept without needing the fuzzer (or a nightly toolchain). The checks are in
//! `fuzz/checks/<target>.rs`, included here and by each fuzz target: one copy of each.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

mod command_set_checks {
    include!("../fuzz/checks/command_set.rs");
}
mod pdata_checks {
    include!("../fuzz/checks/pdata.rs");
}
mod qido_checks {
    include!("../fuzz/checks/qido_query.rs");
}
mod multipart_checks {
    include!("../fuzz/checks/multipart.rs");
}
mod pacs_answer_checks {
    include!("../fuzz/checks/pacs_answer.rs");
}
mod stored_dataset_checks {
    include!("../fuzz/checks/stored_dataset.rs");
}
mod ebrim_query_checks {
    include!("../fuzz/checks/ebrim_query.rs");
}

mod soap_envelope_checks {
    include!("../fuzz/checks/soap_envelope.rs");
}

mod codestream_checks {
    include!("../fuzz/checks/codestream.rs");
}

mod xacml_checks {
    include!("../fuzz/checks/xacml.rs");
}

/// Every regular, non-hidden file of one corpus, with its contents.
fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .filter_map(|entry| {
            let path = entry.expect("corpus entry").path();
            let name = path.file_name()?.to_string_lossy().into_owned();
            (path.is_file() && !name.starts_with('.')).then(|| {
                let bytes = std::fs::read(&path).expect("read corpus file");
                (path, bytes)
            })
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "corpus {} is empty", dir.display());
    files
}

/// How long one corpus file may take.
const LIMIT: Duration = Duration::from_secs(10);

/// `check(bytes)` on a thread of its own: a panic fails the test naming `path`, and so does
/// an input that takes longer than `LIMIT`.
fn replay<T: Send + 'static>(path: &Path, bytes: Vec<u8>, check: fn(&[u8]) -> T) -> T {
    let name = path.display().to_string();
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            // Dropping `tx` unsent (a panic) disconnects the channel.
            let _ = tx.send(check(&bytes));
        })
        .expect("spawn replay thread");
    match rx.recv_timeout(LIMIT) {
        Ok(out) => out,
        Err(RecvTimeoutError::Timeout) => panic!("{name} hangs"),
        Err(RecvTimeoutError::Disconnected) => panic!("{name} fails"),
    }
}

#[test]
fn command_set_corpus_replays() {
    let mut decoded = 0;
    for (path, bytes) in corpus("command_set") {
        if replay(&path, bytes, command_set_checks::check_decode) {
            decoded += 1;
        }
    }
    // The seeds include valid command sets: the round trip must have run on some.
    assert!(decoded > 0, "no corpus file decodes");
}

#[test]
fn pdata_corpus_replays() {
    let (mut parsed, mut events) = (0, 0);
    for (path, bytes) in corpus("pdata") {
        let (ok, n) = replay(&path, bytes, pdata_checks::check_pdata);
        parsed += usize::from(ok);
        events += n;
    }
    assert!(parsed > 0, "no corpus file parses as a P-DATA-TF body");
    assert!(events > 0, "no corpus file produced a DIMSE event");
}

#[test]
fn qido_query_corpus_replays() {
    let mut parsed = 0;
    for (path, bytes) in corpus("qido_query") {
        parsed += replay(&path, bytes, qido_checks::check_input);
    }
    // The seeds include valid queries: the checks on `Ok` must have run.
    assert!(parsed > 0, "no corpus file parses as a QIDO-RS query");
}

#[test]
fn multipart_corpus_replays() {
    let mut parts = 0;
    for (path, bytes) in corpus("multipart") {
        parts += replay(&path, bytes, multipart_checks::check_multipart);
    }
    // The seeds include valid bodies: the part checks must have run.
    assert!(parts > 0, "no corpus file yields a part");
}

#[test]
fn pacs_answer_corpus_replays() {
    let mut decoded = 0;
    for (path, bytes) in corpus("pacs_answer") {
        decoded += replay(&path, bytes, pacs_answer_checks::check_answer);
    }
    // The seeds include real C-FIND answers: the match checks must have run.
    assert!(decoded > 0, "no corpus file decodes as a match identifier");
}

#[test]
fn stored_dataset_corpus_replays() {
    let mut accepted = 0;
    for (path, bytes) in corpus("stored_dataset") {
        accepted += replay(&path, bytes, stored_dataset_checks::check_stored);
    }
    // The seeds include whole CT data sets: the retrieve paths of stored instances must
    // have run, not only those of refused ones.
    assert!(accepted > 0, "no corpus file is accepted by ingest");
}

#[test]
fn ebrim_query_corpus_replays() {
    let mut parsed = 0;
    for (path, bytes) in corpus("ebrim_query") {
        parsed += replay(&path, bytes, ebrim_query_checks::check_input);
    }
    // The seeds include the IHE/NIST sample requests: the checks on `Ok` must have run.
    assert!(parsed > 0, "no corpus file reads as a stored query");
}

#[test]
fn soap_envelope_corpus_replays() {
    let mut read = 0;
    for (path, bytes) in corpus("soap_envelope") {
        read += usize::from(replay(&path, bytes, soap_envelope_checks::check_envelope));
    }
    // The seeds include valid requests (plain and MTOM): the checks on `Ok` must have run.
    assert!(read > 0, "no corpus file is read as a SOAP request");
}

#[test]
fn codestream_corpus_replays() {
    let mut decoded = 0;
    for (path, bytes) in corpus("codestream") {
        if replay(&path, bytes, codestream_checks::check_codestream) {
            decoded += 1;
        }
    }
    // The seeds include whole codestreams from independent encoders: the decoders must have
    // run on good input, not only refused broken input.
    assert!(decoded > 0, "no corpus file decodes");
}

/// The slow unit of the 120 s fuzz run (71 s under the fuzzer, 3 s per decode in CharLS
/// built optimised): a 96 x 80 16-bit JPEG-LS frame whose scan data ends without an EOI, so
/// CharLS 2.4's bit reader runs past the end of the buffer into a negative bit count and reads
/// zero bits some 2^32 times. It is refused before CharLS sees it, by every decode entry,
/// naming the missing marker; with the EOI put back, CharLS itself refuses the garbled scan
/// (the marker stops its reader), which the corpus replay's time limit holds to a moment.
#[test]
fn jpeg_ls_frame_without_eoi_is_refused_before_the_codec() {
    use beeldbrug::dimse::dataset::{file_header, open_stored, Extent};
    use beeldbrug::transcode::{
        decode_frame, transcode_file, EXPLICIT_VR_LE, IMPLICIT_VR_LE, JPEG_LS_LOSSLESS,
    };
    let (_, input) = corpus("codestream")
        .into_iter()
        .find(|(path, _)| path.ends_with("jpeg-ls-no-eoi"))
        .expect("the slow unit is in the codestream corpus");
    // Byte 0 selects JPEG-LS lossless, then 96 x 80, 16 bits, one frame (the checks' format).
    assert_eq!(
        codestream_checks::SYNTAXES[input[0] as usize % codestream_checks::SYNTAXES.len()],
        JPEG_LS_LOSSLESS
    );
    let stored = |codestream: &[u8]| {
        let mut file = file_header(
            "1.2.840.10008.5.1.4.1.1.2",
            "1.2.3.4",
            JPEG_LS_LOSSLESS,
            "FUZZ",
        )
        .unwrap();
        file.extend_from_slice(&codestream_checks::data_set(96, 80, 16, 1, codestream));
        let path = std::env::temp_dir().join(format!(
            "beeldbrug-jls-no-eoi-{}-{}.dcm",
            std::process::id(),
            codestream.len()
        ));
        std::fs::write(&path, file).unwrap();
        path
    };
    let path = stored(&input[4..]);
    for target in [EXPLICIT_VR_LE, IMPLICIT_VR_LE] {
        let refused = transcode_file(&path, target).expect_err("a frame without EOI decodes");
        assert!(
            refused
                .to_string()
                .contains("JPEG-LS frame 1 does not end with an EOI marker"),
            "into {target}: {refused}"
        );
    }
    let (obj, _) = open_stored(&path, Extent::Whole).unwrap();
    let refused = decode_frame(&obj, 0).expect_err("a frame without EOI decodes");
    assert!(
        refused.contains("does not end with an EOI marker"),
        "{refused}"
    );
    std::fs::remove_file(&path).unwrap();

    let mut terminated = input[4..].to_vec();
    terminated.extend_from_slice(&[0xFF, 0xD9]);
    let path = stored(&terminated);
    let refused = transcode_file(&path, EXPLICIT_VR_LE).expect_err("the garbled scan decodes");
    assert!(
        !refused.to_string().contains("EOI"),
        "with its EOI the frame reaches CharLS: {refused}"
    );
    std::fs::remove_file(&path).unwrap();
}

/// A `stored_dataset` fuzz unit (2026-12-06): a CT data set with Bits Stored 1036 and Bits
/// Allocated 16. Rendering it panicked in dicom-pixeldata 0.10's LUT ("attempt to shift left
/// with overflow", `lut.rs`), which sizes the LUT by the power of two at or above Bits Stored.
/// Every decode entry now refuses it first, naming the attributes.
#[test]
fn bits_stored_beyond_bits_allocated_is_refused_before_rendering() {
    use beeldbrug::dicomweb::rendered::{render, RenderParams};
    use beeldbrug::dimse::dataset::{file_header, open_stored, Extent};
    use beeldbrug::transcode::{decode_frame, transcode_file, EXPLICIT_VR_LE};
    let (_, data_set) = corpus("stored_dataset")
        .into_iter()
        .find(|(path, _)| path.ends_with("bits-stored-1036"))
        .expect("the unit is in the stored_dataset corpus");
    let mut file = file_header(
        "1.2.840.10008.5.1.4.1.1.2",
        "1.2.3.4",
        EXPLICIT_VR_LE,
        "FUZZ",
    )
    .unwrap();
    file.extend_from_slice(&data_set);
    let path =
        std::env::temp_dir().join(format!("beeldbrug-bits-stored-{}.dcm", std::process::id()));
    std::fs::write(&path, file).unwrap();
    let params = RenderParams {
        window: None,
        viewport: None,
        quality: 90,
    };
    let refused = render(
        &path,
        1,
        &params,
        false,
        dicom_pixeldata::image::ImageFormat::Png,
    )
    .expect_err("rendered with Bits Stored 1036");
    assert!(
        refused.contains("Bits Stored 1036 is not within Bits Allocated 16"),
        "{refused}"
    );
    let (obj, _) = open_stored(&path, Extent::Whole).unwrap();
    assert!(decode_frame(&obj, 0).is_err());
    // Into the other uncompressed syntax the pixels are carried, not interpreted: no refusal
    // needed there, and none may panic.
    let _ = transcode_file(&path, beeldbrug::transcode::IMPLICIT_VR_LE);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn xacml_corpus_replays() {
    let mut read = 0;
    for (path, bytes) in corpus("xacml") {
        read += replay(&path, bytes, xacml_checks::check_input);
    }
    // The seeds include closed and open questions and answers: the checks on `Ok` ran.
    assert!(
        read >= 4,
        "only {read} corpus files read as a question or answer"
    );
}
