// Checks of the `xacml` fuzz target, shared by `fuzz/fuzz_targets/xacml.rs` and the corpus
// replay in `tests/fuzz_corpus.rs` (both `include!` this file, so there is one copy of each
// check).

use beeldbrug::trust::consent::xacml::{self, Question};
use beeldbrug::trust::consent::ConsentDecision;

/// Arbitrary bytes as what Mitz (or something posing as it) answers, and as what a client
/// asks the simulator:
/// 1. `parse_response` and `parse_open_response` never panic; an open answer names no
///    holder twice and no empty holder, and a closed answer that parses gives one of the
///    four decisions;
/// 2. `parse_query` never panics; a question it reads, written again, reads back equal
///    (the simulator answers what was asked), and an answer to it built by the simulator's
///    writer reads back with the decision (closed) or the permitted holders (open).
///
/// Returns 1 when the input was read as a question or an answer.
pub fn check_input(data: &[u8]) -> usize {
    let mut read = 0;
    if let Ok(decision) = xacml::parse_response(data, None) {
        assert!(ConsentDecision::parse(decision.as_str()) == Some(decision));
        read = 1;
    }
    if let Ok(holders) = xacml::parse_open_response(data, None) {
        let mut seen = std::collections::BTreeSet::new();
        assert!(holders.iter().all(|h| !h.is_empty() && seen.insert(h.as_str())));
        read = 1;
    }
    if let Ok(question) = xacml::parse_query(data) {
        check_question(&question);
        read = 1;
    }
    read
}

fn check_question(q: &Question) {
    let again = xacml::query_envelope(q, "urn:fuzz", "2026-01-01T00:00:00Z", "http://mitz/");
    let back = xacml::parse_query(again.as_bytes()).expect("a written question reads back");
    // The writer leaves out an empty provider or role, and the data holder of an open one.
    let expected = Question {
        custodian_ura: if q.open {
            String::new()
        } else {
            q.custodian_ura.clone()
        },
        ..q.clone()
    };
    assert_eq!(back.bsn, expected.bsn);
    assert_eq!(back.requester_ura, expected.requester_ura);
    assert_eq!(back.open, expected.open);
    assert_eq!(back.custodian_ura, expected.custodian_ura);
    if q.open {
        let holders = [
            ("11110000".to_string(), ConsentDecision::Permit),
            ("22220000".to_string(), ConsentDecision::Deny),
        ];
        let answer = xacml::open_response_envelope(q, &holders, "sim", "t", "_r", "_a");
        let permitted = xacml::parse_open_response(answer.as_bytes(), Some(&q.id))
            .expect("the simulator's open answer reads back");
        assert_eq!(permitted, ["11110000"]);
    } else {
        let answer = xacml::response_envelope(q, ConsentDecision::Deny, "sim", "t", "_r", "_a");
        let decision = xacml::parse_response(answer.as_bytes(), Some(&q.id))
            .expect("the simulator's answer reads back");
        assert_eq!(decision, ConsentDecision::Deny);
    }
}
