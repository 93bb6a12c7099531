//! ebRIM stored-query requests on arbitrary bytes: `ebrim::StoredQuery::from_xml` (the
//! AdhocQueryRequest of ITI-18/38, through `crate::xml`), `ebrim::query::parse_value`, and the
//! AdhocQueryResponse writer's escaping. The checks, and what they assert, are in
//! `fuzz/checks/ebrim_query.rs`, shared with the corpus replay in `tests/fuzz_corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

mod checks {
    include!("../checks/ebrim_query.rs");
}

fuzz_target!(|data: &[u8]| {
    checks::check_input(data);
});
