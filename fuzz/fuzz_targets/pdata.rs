//! P-DATA-TF and PDU framing on arbitrary bytes: `parse_pdata`, `PduReader`, and an acceptor
//! fed the bytes with and without a valid A-ASSOCIATE-RQ first. None of them may panic or
//! hang. The checks, and what they assert, are in `fuzz/checks/pdata.rs`, shared with the
//! corpus replay in `tests/fuzz_corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

mod checks {
    include!("../checks/pdata.rs");
}

fuzz_target!(|data: &[u8]| {
    checks::check_pdata(data);
});
