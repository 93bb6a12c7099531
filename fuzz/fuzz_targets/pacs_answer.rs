//! C-FIND match identifiers from the PACS on arbitrary bytes: `pacs::query::decode_match`
//! (Explicit and Implicit VR Little Endian, a few default character sets), `to_match`,
//! `matches_fuzzy` with fuzzy person-name queries and `reported_count`. The checks, and
//! what they assert, are in `fuzz/checks/pacs_answer.rs`, shared with the corpus replay in
//! `tests/fuzz_corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

mod checks {
    include!("../checks/pacs_answer.rs");
}

fuzz_target!(|data: &[u8]| {
    checks::check_answer(data);
});
