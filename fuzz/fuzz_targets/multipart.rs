//! STOW-RS request framing on arbitrary bytes: the first line is the `Content-Type` header
//! value (`media::parse_media_type`, `media::parse_accept`, `stow::request_boundary`), the
//! rest a body read with `multer` in one piece and in small chunks. The checks, and what they
//! assert, are in `fuzz/checks/multipart.rs`, shared with the corpus replay in
//! `tests/fuzz_corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

mod checks {
    include!("../checks/multipart.rs");
}

fuzz_target!(|data: &[u8]| {
    checks::check_multipart(data);
});
