//! The Mitz messages on arbitrary bytes: an answer to the closed or the open question (what
//! the consent client reads) and a question (what `beeldbrug mitz-sim` reads). The checks,
//! and what they assert, are in `fuzz/checks/xacml.rs`, shared with the corpus replay in
//! `tests/fuzz_corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

mod checks {
    include!("../checks/xacml.rs");
}

fuzz_target!(|data: &[u8]| {
    checks::check_input(data);
});
