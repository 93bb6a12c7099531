//! `CommandSet::decode` on arbitrary bytes: it must never panic, and whatever it accepts
//! must survive a round trip through `encode`. The checks, and what they assert, are in
//! `fuzz/checks/command_set.rs`, shared with the corpus replay in `tests/fuzz_corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

mod checks {
    include!("../checks/command_set.rs");
}

fuzz_target!(|data: &[u8]| {
    checks::check_decode(data);
});
