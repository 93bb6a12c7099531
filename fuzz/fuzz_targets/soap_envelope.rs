//! The SOAP front's request reader on arbitrary bytes: the first line is the `Content-Type`
//! header value, the rest the body (plain SOAP 1.2 or MTOM/XOP), read by
//! `xds::envelope::read`, then the retrieve readers. The checks, and what they assert, are in
//! `fuzz/checks/soap_envelope.rs`, shared with the corpus replay in `tests/fuzz_corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

mod checks {
    include!("../checks/soap_envelope.rs");
}

fuzz_target!(|data: &[u8]| {
    checks::check_envelope(data);
});
