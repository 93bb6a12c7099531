//! DICOMweb query strings on arbitrary text: `qido_params::parse`, `frames::parse_frame_list`
//! and `rendered::parse_params`. The checks, and what they assert, are in
//! `fuzz/checks/qido_query.rs`, shared with the corpus replay in `tests/fuzz_corpus.rs`.
//!
//! Run with `-dict=qido_query.dict` (keywords, parameters, whitespace escapes, `NaN`/`inf`).
#![no_main]

use libfuzzer_sys::fuzz_target;

mod checks {
    include!("../checks/qido_query.rs");
}

fuzz_target!(|data: &[u8]| {
    checks::check_input(data);
});
