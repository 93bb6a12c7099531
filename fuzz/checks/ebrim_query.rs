// Checks of the `ebrim_query` fuzz target, shared by `fuzz/fuzz_targets/ebrim_query.rs` and
// the corpus replay in `tests/fuzz_corpus.rs` (both `include!` this file, so there is one
// copy of each check).

use beeldbrug::ebrim::query::{parse_value, QueryId};
use beeldbrug::ebrim::{
    codes, render, ObjectKind, QueryResponse, RegistryError, RegistryObject, ReturnType, Slot,
    Status, StoredQuery,
};

/// Arbitrary bytes as an `AdhocQueryRequest` (through the crate's one XML reader, with its
/// limits) and as a stored-query slot value:
/// 1. `StoredQuery::from_xml` never panics; on `Ok` every required parameter of the query has
///    a value and the answer renders; on `Err` the error carries one of the stored-query
///    error codes and renders as a well-formed Failure (`check_request`);
/// 2. `parse_value` on the text never panics, and a value it accepts, rendered in a
///    response, reads back unchanged (escaping) (`check_value`).
///
/// Returns 1 when the input was a valid stored query.
pub fn check_input(data: &[u8]) -> usize {
    let ok = check_request(data);
    check_value(&String::from_utf8_lossy(data));
    usize::from(ok)
}

fn check_request(data: &[u8]) -> bool {
    match StoredQuery::from_xml(data) {
        Ok(query) => {
            assert!(QueryId::from_uuid(query.id.uuid()) == Some(query.id));
            if let Some(targets) = &query.target_communities {
                assert!(targets.iter().all(|t| !t.is_empty()));
            }
            let answer = QueryResponse::empty(query.return_type);
            well_formed(&render::adhoc_query_response(&answer));
            true
        }
        Err(e) => {
            assert!(
                [
                    codes::UNKNOWN_STORED_QUERY,
                    codes::PARAM_NUMBER,
                    codes::REGISTRY_ERROR
                ]
                .contains(&e.code.as_str()),
                "unexpected error code {e:?}"
            );
            let xml = render::adhoc_query_response(&QueryResponse::failure(vec![e]));
            well_formed(&xml);
            false
        }
    }
}

fn check_value(text: &str) {
    let _ = parse_value(text);
    // XML 1.0 cannot carry every character (C0 controls but tab/LF/CR): those values never
    // come from a parsed request; skip them.
    if text.chars().any(|c| (c < ' ' && !matches!(c, '\t' | '\n' | '\r')) || c == '\u{fffe}' || c == '\u{ffff}') {
        return;
    }
    let object = RegistryObject {
        kind: ObjectKind::DocumentEntry,
        id: "urn:uuid:00000000-0000-4000-8000-000000000000".into(),
        lid: "urn:uuid:00000000-0000-4000-8000-000000000000".into(),
        object_type: None,
        mime_type: Some(text.into()),
        status: Status::Approved,
        name: Some(text.into()),
        description: None,
        slots: vec![Slot::new("value", [text])],
        classifications: vec![],
        external_identifiers: vec![],
    };
    let mut answer = QueryResponse::found(vec![object], vec![], ReturnType::LeafClass);
    answer.errors.push(RegistryError::new(codes::REGISTRY_ERROR, text, text));
    let xml = render::adhoc_query_response(&answer);
    let Ok(root) = beeldbrug::xml::parse_with(
        xml.as_bytes(),
        &beeldbrug::xml::Limits {
            max_bytes: usize::MAX,
            ..beeldbrug::xml::Limits::DEFAULT
        },
    ) else {
        panic!("rendered response does not parse: {xml}");
    };
    let value = root
        .descendants()
        .find(|e| e.name == "Value")
        .expect("the slot value");
    // Attribute and text values come back as written, line ends normalised (XML 1.0 §2.11).
    let expected = text.replace("\r\n", "\n").replace('\r', "\n");
    assert_eq!(value.text, expected);
}

fn well_formed(xml: &str) {
    if let Err(e) = beeldbrug::xml::parse(xml.as_bytes()) {
        panic!("rendered response is not well-formed ({e}): {xml}");
    }
}
