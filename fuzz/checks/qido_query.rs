// Checks of the `qido_query` fuzz target, shared by `fuzz/fuzz_targets/qido_query.rs` and
// the corpus replay in `tests/fuzz_corpus.rs` (both `include!` this file, so there is one
// copy of each check).

use beeldbrug::core::query::indexed_attr;
use beeldbrug::core::{AttrKind, Level, Matcher, Query, INDEXED_ATTRS};
use beeldbrug::dicomweb::frames::parse_frame_list;
use beeldbrug::dicomweb::qido_params::{parse, IncludeFields, QidoError, QidoRequest};
use beeldbrug::dicomweb::rendered::parse_params;
use dicom_core::Tag;

const LEVELS: [Level; 4] = [Level::Patient, Level::Study, Level::Series, Level::Image];
const CAPS: [u32; 3] = [0, 1000, u32::MAX];
const SCOPE_UID: &str = "1.2.826.0.1.3680043.2.1125.1";

/// DICOMweb query strings on arbitrary text (lossy UTF-8, as a raw query string):
/// 1. `qido_params::parse` at every level, with and without a scope key from the URL, under
///    a few result caps: it must never panic; on `Ok` the limit is set and within the cap,
///    every key is on an indexed attribute with a well-formed matcher, and the scope key is
///    kept; on `Err` there is a message for the 400 (`check_qido`);
/// 2. `frames::parse_frame_list` (WADO-RS `/frames/{list}`) on the same text
///    (`check_frame_list`);
/// 3. `rendered::parse_params` (WADO-RS `/rendered` query) on the same text
///    (`check_render_params`).
///
/// Returns how many QIDO-RS parses succeeded.
pub fn check_input(data: &[u8]) -> usize {
    let raw = String::from_utf8_lossy(data);
    let ok = check_qido(&raw);
    check_frame_list(&raw);
    check_render_params(&raw);
    ok
}

/// `check_qido_outcome` on every level and cap, with and without a scope key; returns how
/// many parses succeeded.
fn check_qido(raw: &str) -> usize {
    let mut ok = 0;
    for level in LEVELS {
        for max in CAPS {
            let outcome = parse(Query::new(level), raw, max);
            ok += check_qido_outcome(raw, level, max, false, outcome);
            // A series-level request under /studies/{uid}: the URL's key comes first.
            let study = indexed_attr(Tag(0x0020, 0x000D)).expect("StudyInstanceUID is indexed");
            let scoped = Query::new(level).with_key(study, Matcher::Single(SCOPE_UID.to_string()));
            let outcome = parse(scoped, raw, max);
            ok += check_qido_outcome(raw, level, max, true, outcome);
        }
    }
    ok
}

/// What `parse` returned: 1 for a request that passes every check, 0 for an error with a
/// message.
fn check_qido_outcome(
    raw: &str,
    level: Level,
    max: u32,
    scoped: bool,
    outcome: Result<QidoRequest, QidoError>,
) -> usize {
    let r = match outcome {
        Ok(r) => r,
        Err(e) => {
            assert!(
                !e.to_string().is_empty(),
                "{raw:?}: error without a message"
            );
            return 0;
        }
    };
    let q = &r.query;
    assert_eq!(q.level, level);
    match q.limit {
        Some(n) => assert!(n <= max, "{raw:?}: limit {n} over the cap {max}"),
        None => panic!("{raw:?}: no limit set"),
    }
    if scoped {
        let first = q.keys.first().expect("scope key kept");
        assert_eq!(first.attr.keyword, "StudyInstanceUID");
        assert_eq!(first.matcher, Matcher::Single(SCOPE_UID.to_string()));
    }
    let fuzzy = serde_urlencoded::from_str::<Vec<(String, String)>>(raw)
        .expect("parse accepted the query string")
        .iter()
        .rev()
        .find(|(k, _)| k == "fuzzymatching")
        .is_some_and(|(_, v)| v == "true");
    for key in &q.keys {
        assert!(
            INDEXED_ATTRS.iter().any(|a| std::ptr::eq(a, key.attr)),
            "{raw:?}: key on {} is not an indexed attribute",
            key.attr.keyword
        );
        check_matcher(raw, fuzzy, key.attr.kind, key.attr.keyword, &key.matcher);
    }
    if let IncludeFields::Listed(tags) = &r.include {
        assert!(
            tags.len() <= raw.len(),
            "{raw:?}: more include fields than text"
        );
    }
    for w in &r.warnings {
        assert!(!w.is_empty());
    }
    1
}

/// What a key that passed validation may hold.
/// `fuzzy`: the request has `fuzzymatching=true`.
fn check_matcher(raw: &str, fuzzy: bool, kind: AttrKind, keyword: &str, matcher: &Matcher) {
    let is_uid = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.split('.')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    };
    let is_date = |s: &str| s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit());
    let is_time = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    let context = || format!("{raw:?}: {keyword} {matcher:?}");
    match (kind, matcher) {
        (_, Matcher::Universal) => panic!("{}: universal key kept", context()),
        (AttrKind::Uid, Matcher::Single(u)) => assert!(is_uid(u), "{}", context()),
        (AttrKind::Uid, Matcher::UidList(l)) => {
            assert!(l.len() >= 2 && l.iter().all(|u| is_uid(u)), "{}", context())
        }
        (AttrKind::Uid, _) => panic!("{}: UID key with another matcher", context()),
        (AttrKind::Date | AttrKind::Time, m) => {
            let valid = if kind == AttrKind::Date {
                is_date
            } else {
                is_time
            };
            match m {
                Matcher::Single(v) => assert!(valid(v), "{}", context()),
                Matcher::Range { from, to } => {
                    assert!(from.is_some() || to.is_some(), "{}", context());
                    assert!(
                        from.iter().chain(to).all(|v| valid(v)),
                        "{}: bad range end",
                        context()
                    );
                }
                _ => panic!("{}: date/time key with another matcher", context()),
            }
        }
        // ModalitiesInStudy becomes a list on Modality.
        (AttrKind::Text, Matcher::UidList(l)) => {
            assert_eq!(keyword, "Modality", "{}", context());
            assert!(!l.is_empty(), "{}", context());
        }
        (
            AttrKind::Text | AttrKind::PersonName,
            Matcher::Single(v) | Matcher::Wildcard(v) | Matcher::Fuzzy(v),
        ) => {
            assert!(!v.is_empty(), "{}", context());
            assert!(
                !matches!(matcher, Matcher::Fuzzy(_)) || (kind == AttrKind::PersonName && fuzzy),
                "{}: fuzzy matcher without fuzzymatching=true",
                context()
            );
            assert!(
                !v.chars().any(char::is_control),
                "{}: control character accepted",
                context()
            )
        }
        _ => panic!("{}: unexpected matcher", context()),
    }
}

/// A frame list that parses is 1..=100000 frame numbers, none of them 0.
fn check_frame_list(raw: &str) {
    match parse_frame_list(raw) {
        Ok(frames) => {
            assert!(!frames.is_empty() && frames.len() <= 100_000, "{raw:?}");
            assert!(frames.iter().all(|&f| f > 0), "{raw:?}: frame 0 accepted");
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

/// Rendered parameters that parse are in range: quality 1..=100, viewport 1..=8192 each way,
/// a finite window with a positive width.
fn check_render_params(raw: &str) {
    match parse_params(raw) {
        Ok(p) => {
            assert!(
                (1..=100).contains(&p.quality),
                "{raw:?}: quality {}",
                p.quality
            );
            if let Some((w, h)) = p.viewport {
                assert!(
                    (1..=8192).contains(&w) && (1..=8192).contains(&h),
                    "{raw:?}"
                );
            }
            if let Some(w) = p.window {
                assert!(w.width > 0.0, "{raw:?}: window width {}", w.width);
                assert!(
                    w.center.is_finite() && w.width.is_finite(),
                    "{raw:?}: window {w:?} is not finite"
                );
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}
