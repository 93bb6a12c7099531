//! Arbitrary bytes as a received data set: stored through the ingest check, then (or, when
//! refused, as if placed in the store by other means) retrieved through every conversion
//! path — transcoding, metadata JSON, frames, rendered, DIMSE re-encoding. None may panic,
//! overflow the stack or hang; a refusal leaves nothing behind. The checks, and what they
//! assert, are in `fuzz/checks/stored_dataset.rs`, shared with the corpus replay in
//! `tests/fuzz_corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

mod checks {
    include!("../checks/stored_dataset.rs");
}

fuzz_target!(|data: &[u8]| {
    checks::check_stored(data);
});
