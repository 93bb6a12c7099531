//! QIDO-RS query parameters (PS3.18 8.3.4, 10.6.1.2) into the core [`Query`].
//!
//! Pure and synchronous, so it can be fuzzed: every malformed input is a [`QidoError`] that
//! becomes a 400 with its message, never a panic.

use crate::core::query::{computed, indexed_attr, AttrKind, IndexedAttr, Matcher, Query};
use dicom_core::dictionary::DataDictionary;
use dicom_core::Tag;
use dicom_dictionary_std::StandardDataDictionary;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QidoError {
    #[error("query string does not parse: {0}")]
    Syntax(String),
    #[error("unknown attribute {0:?}: not a DICOM keyword or tag")]
    UnknownAttribute(String),
    #[error("invalid value {value:?} for {attribute}: {problem}")]
    BadValue {
        attribute: String,
        value: String,
        problem: String,
    },
    #[error("invalid {name} {value:?}: {problem}")]
    BadParameter {
        name: &'static str,
        value: String,
        problem: &'static str,
    },
}

/// Which attributes the client asked for beyond the required ones (PS3.18 8.3.4.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IncludeFields {
    Listed(Vec<Tag>),
    All,
}

/// A parsed QIDO-RS request.
#[derive(Debug, Clone)]
pub struct QidoRequest {
    pub query: Query,
    pub include: IncludeFields,
    /// Warnings for the `Warning` header (PS3.18 8.3.4.5): ignored keys, a cut limit.
    pub warnings: Vec<String>,
}

/// Parse the query string of a QIDO-RS request at `level`, with the scope's own keys (the
/// study / series UIDs of the URL) already in `query`.
pub fn parse(mut query: Query, raw: &str, max_results: u32) -> Result<QidoRequest, QidoError> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(raw).map_err(|e| QidoError::Syntax(e.to_string()))?;
    let fuzzy = match pairs.iter().rev().find(|(k, _)| k == "fuzzymatching") {
        None => false,
        Some((_, v)) => match v.as_str() {
            "true" => true,
            "false" => false,
            _ => {
                return Err(QidoError::BadParameter {
                    name: "fuzzymatching",
                    value: v.clone(),
                    problem: "expected true or false",
                })
            }
        },
    };
    let mut include = IncludeFields::Listed(Vec::new());
    let mut warnings = Vec::new();
    query.limit = Some(max_results);
    for (key, value) in &pairs {
        match key.as_str() {
            "fuzzymatching" => {}
            "limit" => {
                let n = parse_count("limit", value)?;
                if n > max_results {
                    warnings.push(format!(
                        "limit {n} exceeds the maximum of {max_results} results per request; \
                         use offset to page"
                    ));
                }
                query.limit = Some(n.min(max_results));
            }
            "offset" => query.offset = parse_count("offset", value)?,
            "includefield" => {
                for field in value.split(',').map(str::trim).filter(|f| !f.is_empty()) {
                    if field == "all" {
                        include = IncludeFields::All;
                    } else {
                        let tag = resolve_attribute(field)?;
                        if let IncludeFields::Listed(tags) = &mut include {
                            tags.push(tag);
                        }
                    }
                }
            }
            _ => {
                let tag = resolve_attribute(key)?;
                match matching_key(tag, key, value, fuzzy)? {
                    Some((attr, matcher)) => query = query.with_key(attr, matcher),
                    None => warnings.push(format!(
                        "matching on {key} is not supported; the key was ignored"
                    )),
                }
            }
        }
    }
    Ok(QidoRequest {
        query,
        include,
        warnings,
    })
}

fn parse_count(name: &'static str, value: &str) -> Result<u32, QidoError> {
    value
        .trim()
        .parse::<u32>()
        .map_err(|_| QidoError::BadParameter {
            name,
            value: value.to_string(),
            problem: "expected a non-negative integer below 2^32",
        })
}

/// A keyword (`PatientName`) or tag (`00100010`) of a standard attribute. Sequence paths
/// (`00081111.00081150`) are not matched on here.
pub fn resolve_attribute(name: &str) -> Result<Tag, QidoError> {
    let unknown = || QidoError::UnknownAttribute(name.to_string());
    if name.len() == 8 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
        let g = u16::from_str_radix(&name[..4], 16).map_err(|_| unknown())?;
        let e = u16::from_str_radix(&name[4..], 16).map_err(|_| unknown())?;
        return Ok(Tag(g, e));
    }
    StandardDataDictionary
        .by_name(name)
        .map(|e| e.tag.inner())
        .ok_or_else(unknown)
}

/// The index key and matcher for `tag=value`; `None` when the attribute is not indexed.
fn matching_key(
    tag: Tag,
    name: &str,
    value: &str,
    fuzzy: bool,
) -> Result<Option<(&'static IndexedAttr, Matcher)>, QidoError> {
    let bad = |problem: &str| QidoError::BadValue {
        attribute: name.to_string(),
        value: value.to_string(),
        problem: problem.to_string(),
    };
    if tag == computed::MODALITIES_IN_STUDY {
        // PS3.4 C.6.2.1.2: a study matches when any of its series has one of the modalities.
        let modality = indexed_attr(Tag(0x0008, 0x0060)).expect("Modality is indexed");
        let list: Vec<String> = split_list(value);
        if list.iter().any(|m| !is_code_string(m)) {
            return Err(bad("expected code strings like CT or MR"));
        }
        return Ok((!list.is_empty()).then_some((modality, Matcher::UidList(list))));
    }
    let Some(attr) = indexed_attr(tag) else {
        return Ok(None);
    };
    // No value of a matching key may carry control characters, tabs and newlines included.
    if value.chars().any(char::is_control) {
        return Err(bad("control characters are not allowed"));
    }
    let matcher = match attr.kind {
        AttrKind::Uid => {
            let list = split_list(value);
            if let Some(u) = list.iter().find(|u| !is_uid(u)) {
                return Err(bad(&format!("{u:?} is not a UID")));
            }
            match list.len() {
                0 => Matcher::Universal,
                1 => Matcher::Single(list[0].clone()),
                _ => Matcher::UidList(list),
            }
        }
        AttrKind::Date => {
            check_range(value, is_date).map_err(|_| bad("expected YYYYMMDD or a range"))?;
            Matcher::parse(attr.kind, value)
        }
        AttrKind::Time => {
            check_range(value, is_time).map_err(|_| bad("expected HHMMSS[.FFFFFF] or a range"))?;
            Matcher::parse(attr.kind, value)
        }
        AttrKind::PersonName if fuzzy => {
            let v = value.trim().trim_end_matches('*');
            if v.is_empty() {
                Matcher::Universal
            } else if v.contains(['*', '?']) {
                Matcher::parse(attr.kind, value)
            } else {
                Matcher::Fuzzy(v.to_string())
            }
        }
        AttrKind::Text | AttrKind::PersonName => Matcher::parse(attr.kind, value),
    };
    Ok(Some((attr, matcher)))
}

/// PS3.18 8.3.4.1: a UID list is comma-separated (a backslash is accepted as well).
fn split_list(value: &str) -> Vec<String> {
    value
        .split([',', '\\'])
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn is_uid(s: &str) -> bool {
    s.len() <= 64
        && s.split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

fn is_code_string(s: &str) -> bool {
    s.len() <= 16
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_' || b == b' ')
}

/// `YYYYMMDD` with a plausible month and day.
fn is_date(s: &str) -> bool {
    if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let month: u32 = s[4..6].parse().unwrap_or(0);
    let day: u32 = s[6..8].parse().unwrap_or(0);
    (1..=12).contains(&month) && (1..=31).contains(&day)
}

/// `HH[MM[SS[.F{1,6}]]]` within range.
fn is_time(s: &str) -> bool {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if !(whole.len() == 2 || whole.len() == 4 || whole.len() == 6)
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > 6
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || (s.contains('.') && (frac.is_empty() || whole.len() != 6))
    {
        return false;
    }
    let part = |i: usize| {
        whole
            .get(i..i + 2)
            .map_or(0, |p| p.parse::<u32>().unwrap_or(99))
    };
    part(0) < 24 && part(2) < 60 && part(4) < 61
}

/// A single value or an `a-b` range whose given ends pass `valid` (PS3.4 C.2.2.2.5).
fn check_range(value: &str, valid: fn(&str) -> bool) -> Result<(), ()> {
    // Trim exactly what `Matcher::parse` trims, so that what is checked is what is matched.
    let v = value.trim_matches([' ', '\0']);
    if v.is_empty() {
        return Ok(());
    }
    let ok = match v.split_once('-') {
        Some((from, to)) => {
            (!from.is_empty() || !to.is_empty())
                && (from.is_empty() || valid(from))
                && (to.is_empty() || valid(to))
                && (from.is_empty() || to.is_empty() || from <= to)
        }
        None => valid(v),
    };
    ok.then_some(()).ok_or(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::query::Level;

    fn study(raw: &str) -> Result<QidoRequest, QidoError> {
        parse(Query::new(Level::Study), raw, 1000)
    }

    #[test]
    fn keys_by_keyword_and_tag() {
        let r = study("PatientName=M%C3%BCller*&00100020=999912345&StudyDate=20200101-20201231")
            .unwrap();
        assert_eq!(r.query.keys.len(), 3);
        assert_eq!(r.query.keys[0].matcher, Matcher::Wildcard("Müller*".into()));
        assert_eq!(r.query.keys[1].attr.keyword, "PatientID");
        assert_eq!(
            r.query.keys[2].matcher,
            Matcher::Range {
                from: Some("20200101".into()),
                to: Some("20201231".into())
            }
        );
    }

    #[test]
    fn fuzzy_names_uid_lists_and_modalities() {
        let r = study("PatientName=muller&fuzzymatching=true&StudyInstanceUID=1.2.3,1.2.4&ModalitiesInStudy=CT")
            .unwrap();
        assert_eq!(r.query.keys[0].matcher, Matcher::Fuzzy("muller".into()));
        assert_eq!(
            r.query.keys[1].matcher,
            Matcher::UidList(vec!["1.2.3".into(), "1.2.4".into()])
        );
        assert_eq!(r.query.keys[2].attr.keyword, "Modality");
    }

    #[test]
    fn paging_and_includefield() {
        let r = study(
            "limit=100000000&offset=5&includefield=StudyDescription,00081030&includefield=all",
        )
        .unwrap();
        assert_eq!(r.query.limit, Some(1000));
        assert_eq!(r.query.offset, 5);
        assert_eq!(r.include, IncludeFields::All);
        assert_eq!(r.warnings.len(), 1);
        let r = study("includefield=StudyDescription").unwrap();
        assert_eq!(r.include, IncludeFields::Listed(vec![Tag(0x0008, 0x1030)]));
    }

    #[test]
    fn bad_input_is_an_error_with_a_message() {
        for raw in [
            "NoSuchAttribute=1",
            "StudyDate=2020-13-45",
            "StudyDate=20201301",
            "StudyDate=20201231-20200101",
            "StudyTime=25",
            "StudyInstanceUID=1.2.abc",
            "limit=-1",
            "offset=x",
            "fuzzymatching=yes",
            "includefield=Bogus",
            "0010001G=x",
            "ModalitiesInStudy=c t",
            "PatientName=M%1F*r&fuzzymatching=true",
            "StudyDate=%09",
            "PatientBirthDate=%0A00001010",
            "StudyDate=%E2%80%8320200101",
        ] {
            let err = study(raw).unwrap_err();
            assert!(!err.to_string().is_empty(), "{raw}");
        }
    }

    #[test]
    fn known_but_unindexed_attributes_are_ignored_with_a_warning() {
        let r = study("PatientWeight=70").unwrap();
        assert!(r.query.keys.is_empty());
        assert_eq!(r.warnings.len(), 1);
    }
}
