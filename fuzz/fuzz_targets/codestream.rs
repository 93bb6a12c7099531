//! Truncated and lying codestreams in every compressed syntax (JPEG, JPEG-LS, JPEG 2000, RLE,
//! Deflate) as stored instances, through the one decode entry of every retrieve and the frame
//! decoder: an error, never a panic, no allocation beyond what the data set announces. The
//! input format and the checks are in `fuzz/checks/codestream.rs`, shared with the corpus
//! replay in `tests/fuzz_corpus.rs`; seeds from `make_codestream_seeds.py`.
#![no_main]

use libfuzzer_sys::fuzz_target;

mod checks {
    include!("../checks/codestream.rs");
}

fuzz_target!(|data: &[u8]| {
    checks::check_codestream(data);
});
