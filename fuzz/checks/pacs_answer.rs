// Checks of the `pacs_answer` fuzz target, shared by `fuzz/fuzz_targets/pacs_answer.rs` and
// the corpus replay in `tests/fuzz_corpus.rs` (both `include!` this file, so there is one
// copy of each check).

use beeldbrug::core::query::{computed, indexed_attr, indexed_attr_by_keyword};
use beeldbrug::core::{Level, Match, Matcher, Query};
use beeldbrug::dimse::sop::{EXPLICIT_VR_LE, IMPLICIT_VR_LE};
use beeldbrug::core::query::matches_fuzzy;
use beeldbrug::pacs::query::{decode_match, reported_count, to_match};
use beeldbrug::store::index::normalize_name;
use dicom_core::Tag;

/// The transfer syntaxes a PACS answers C-FIND in (those beeldbrug proposes).
const SYNTAXES: [&str; 2] = [EXPLICIT_VR_LE, IMPLICIT_VR_LE];

/// `[pacs] default_charset` values: the usual ones, and garbage of odd length.
const CHARSETS: [&str; 4] = ["ISO_IR 100", "ISO_IR 192", "ISO_IR 6", "NO\\SUCH ÿ"];

/// The computed attributes a match may carry besides the indexed ones.
const COMPUTED: [Tag; 8] = [
    computed::NUMBER_OF_PATIENT_RELATED_STUDIES,
    computed::NUMBER_OF_PATIENT_RELATED_SERIES,
    computed::NUMBER_OF_PATIENT_RELATED_INSTANCES,
    computed::NUMBER_OF_STUDY_RELATED_SERIES,
    computed::NUMBER_OF_STUDY_RELATED_INSTANCES,
    computed::NUMBER_OF_SERIES_RELATED_INSTANCES,
    computed::MODALITIES_IN_STUDY,
    computed::SOP_CLASSES_IN_STUDY,
];

/// The person names matched fuzzily by `matches_fuzzy`.
const PERSON_NAMES: [&str; 2] = ["PatientName", "ReferringPhysicianName"];

/// A C-FIND match identifier from the PACS, as arbitrary bytes:
/// 1. `pacs::query::decode_match` in Explicit and Implicit VR Little Endian, with each of a
///    few default character sets: it must never panic or hang; an answer in ASCII, or one
///    that names its own Specific Character Set, decodes the same whatever the default;
/// 2. `to_match` on what decodes: only indexed or computed attributes, every value (and
///    every value of a multi-valued one) non-empty, without leading or trailing spaces or
///    NULs (`check_match`);
/// 3. `matches_fuzzy` with fuzzy person-name queries: empty queries match everything, a
///    name matches its own components, a name without the query in it does not match, and
///    two keys match when both do (`check_fuzzy`);
/// 4. `reported_count` (what `Pacs::count` sums) over every match decoded, several times
///    over: the exact sum of the reported counts, `None` when one is missing or the sum does
///    not fit, never a panic or a wrapped total (`check_count`).
///
/// Returns how many of the (syntax, charset) decodes succeeded.
pub fn check_answer(data: &[u8]) -> usize {
    let mut all = Vec::new();
    for ts in SYNTAXES {
        // Whether the answer names its own character set, in its first element (not by
        // `dataset::decode`: only `decode_match` guards against what dicom-rs misreads).
        let own_charset = data.starts_with(&[0x08, 0x00, 0x05, 0x00]);
        let mut outcomes = Vec::with_capacity(CHARSETS.len());
        for charset in CHARSETS {
            let m = decode_match(data, ts, charset)
                .ok()
                .map(|obj| to_match(&obj));
            if let Some(m) = &m {
                check_match(m);
                check_fuzzy(m);
            }
            outcomes.push(m);
        }
        if data.is_ascii() || own_charset {
            assert!(
                outcomes.windows(2).all(|w| w[0] == w[1]),
                "the default charset changes an answer that does not need it ({ts}): {outcomes:?}"
            );
        }
        all.extend(outcomes.into_iter().flatten());
    }
    let decoded = all.len();
    check_count(&all);
    decoded
}

/// Tags, values and their padding in one match.
fn check_match(m: &Match) {
    let padded = |v: &str| v.starts_with([' ', '\0']) || v.ends_with([' ', '\0']);
    for (tag, value) in m {
        assert!(
            indexed_attr(*tag).is_some() || COMPUTED.contains(tag),
            "{tag} is neither indexed nor computed (value {value:?})"
        );
        assert!(!value.is_empty(), "{tag} kept with an empty value");
        assert!(!padded(value), "{tag} keeps its padding: {value:?}");
        for part in value.split('\\') {
            assert!(
                !padded(part),
                "{tag} keeps the padding of {part:?}: {value:?}"
            );
        }
        assert!(
            value.split('\\').any(|part| !part.is_empty()),
            "{tag} kept with only empty values: {value:?}"
        );
    }
}

/// A study-level query with a fuzzy key on each `(keyword, text)`.
fn fuzzy(keys: &[(&str, &str)]) -> Query {
    keys.iter()
        .fold(Query::new(Level::Study), |q, (keyword, text)| {
            let attr = indexed_attr_by_keyword(keyword).expect("a person name is indexed");
            q.with_key(attr, Matcher::Fuzzy((*text).to_string()))
        })
}

/// `matches_fuzzy` with fuzzy person-name queries on one match.
fn check_fuzzy(m: &Match) {
    for keyword in PERSON_NAMES {
        let tag = indexed_attr_by_keyword(keyword).expect("indexed").tag;
        let value = m.get(&tag).map(String::as_str).unwrap_or("");
        let normalized = normalize_name(value);
        // Empty (or blank) queries are universal.
        assert!(matches_fuzzy(&fuzzy(&[(keyword, "")]), m));
        assert!(matches_fuzzy(&fuzzy(&[(keyword, "  ")]), m));
        // A name without the query in it cannot match it.
        for text in ["muller", "zoe", "jansen^piet"] {
            if !normalized.contains(&normalize_name(text)) {
                assert!(
                    !matches_fuzzy(&fuzzy(&[(keyword, text)]), m),
                    "{value:?} matches {text:?}"
                );
            }
        }
        // Every component of a name (family, given, ..., each representation) matches it,
        // and so does its first character.
        for part in value.split(['^', ' ', '=']) {
            if part.is_empty() || part.trim() != part {
                continue;
            }
            assert!(
                matches_fuzzy(&fuzzy(&[(keyword, part)]), m),
                "{value:?} does not match its component {part:?}"
            );
            let first: String = part.chars().take(1).collect();
            assert!(
                matches_fuzzy(&fuzzy(&[(keyword, &first)]), m),
                "{value:?} does not match {first:?}"
            );
        }
    }
    // Two keys match when each does.
    let [a, b] = PERSON_NAMES;
    for (x, y) in [("muller", "zoe"), ("", "muller"), ("zoe", "")] {
        assert_eq!(
            matches_fuzzy(&fuzzy(&[(a, x), (b, y)]), m),
            matches_fuzzy(&fuzzy(&[(a, x)]), m) && matches_fuzzy(&fuzzy(&[(b, y)]), m),
        );
    }
    // Keys the PACS matched are not matched again.
    let study = indexed_attr_by_keyword("StudyInstanceUID").expect("indexed");
    let q = Query::new(Level::Study).with_key(study, Matcher::Single("1.2.3".into()));
    assert!(matches_fuzzy(&q, m));
}

/// `reported_count` over `matches`, and over them three times: the exact sum, or `None`.
fn check_count(matches: &[Match]) {
    let thrice: Vec<Match> = matches
        .iter()
        .chain(matches)
        .chain(matches)
        .cloned()
        .collect();
    for tag in &COMPUTED[..6] {
        for set in [matches, &thrice[..]] {
            let expected = set
                .iter()
                .map(|m| m.get(tag).and_then(|v| v.trim().parse::<u64>().ok()))
                .try_fold(0u128, |sum, n| n.map(|n| sum + u128::from(n)))
                .and_then(|sum| u64::try_from(sum).ok());
            assert_eq!(reported_count(set, *tag), expected, "{tag} over {set:?}");
        }
    }
}
