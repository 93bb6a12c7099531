//! Queries answered by the PACS: a core [`Query`] becomes a Study Root C-FIND identifier
//! (PS3.4 C.6.2), the matches come back as [`Match`] rows like the index's, so QIDO-RS
//! answers look the same from either source. What a PACS cannot match (fuzzy person names)
//! is matched here on the results.

use super::{Pacs, PacsError};
use crate::dimse::dataset::{self, QUERY_RETRIEVE_LEVEL, SPECIFIC_CHARACTER_SET};
use crate::dimse::scu::{find_context, find_raw};
use crate::dimse::sop;
use crate::dimse::status::{self, Category};
use crate::model::query::{computed, indexed_attr, Level, Match, Matcher, Query, INDEXED_ATTRS};
use crate::model::Selection;
use dicom_core::header::Header;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_object::InMemDicomObject;

/// Computed return keys asked for per level (PS3.4 C.6.2.1.x optional keys).
fn computed_keys(level: Level) -> &'static [Tag] {
    match level {
        Level::Patient | Level::Study => &[
            computed::MODALITIES_IN_STUDY,
            computed::NUMBER_OF_STUDY_RELATED_SERIES,
            computed::NUMBER_OF_STUDY_RELATED_INSTANCES,
        ],
        Level::Series => &[computed::NUMBER_OF_SERIES_RELATED_INSTANCES],
        Level::Image => &[],
    }
}

fn vr_of(tag: Tag) -> VR {
    match indexed_attr(tag).map(|a| a.kind) {
        Some(crate::model::AttrKind::PersonName) => VR::PN,
        Some(crate::model::AttrKind::Date) => VR::DA,
        Some(crate::model::AttrKind::Time) => VR::TM,
        Some(crate::model::AttrKind::Uid) => VR::UI,
        _ => match tag {
            computed::MODALITIES_IN_STUDY | QUERY_RETRIEVE_LEVEL => VR::CS,
            Tag(0x0008, 0x0060) | Tag(0x0010, 0x0040) => VR::CS,
            Tag(0x0020, 0x0011) | Tag(0x0020, 0x0013) | Tag(0x0028, 0x0008) => VR::IS,
            Tag(0x0028, 0x0010) | Tag(0x0028, 0x0011) | Tag(0x0028, 0x0100) => VR::US,
            t if t.group() == 0x0020 && (0x1200..=0x1209).contains(&t.element()) => VR::IS,
            _ => VR::LO,
        },
    }
}

fn put(obj: &mut InMemDicomObject, tag: Tag, value: &str) {
    let vr = vr_of(tag);
    let value = if value.is_empty() {
        PrimitiveValue::Empty
    } else {
        PrimitiveValue::from(value)
    };
    obj.put(DataElement::new(tag, vr, value));
}

/// The C-FIND identifier of a query: its matching keys (fuzzy ones left universal, to be
/// matched here) and every attribute the index would return at that level, empty.
pub fn identifier(query: &Query) -> InMemDicomObject {
    let mut obj = InMemDicomObject::new_empty();
    // ISO_IR 192: matching values are UTF-8 already (PS3.5 6.1.2.5.3 allows it in queries).
    obj.put(DataElement::new(
        SPECIFIC_CHARACTER_SET,
        VR::CS,
        PrimitiveValue::from("ISO_IR 192"),
    ));
    put(&mut obj, QUERY_RETRIEVE_LEVEL, query.level.code());
    let level = query.level.max(Level::Study);
    const UNIQUE: [&str; 4] = [
        "PatientID",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPInstanceUID",
    ];
    let returned = INDEXED_ATTRS
        .iter()
        .filter(|a| a.level <= level)
        .filter(|a| !query.unique_keys_only || UNIQUE.contains(&a.keyword));
    for attr in returned {
        put(&mut obj, attr.tag, "");
    }
    for &tag in computed_keys(query.level) {
        put(&mut obj, tag, "");
    }
    for key in &query.keys {
        let value = match &key.matcher {
            Matcher::Universal | Matcher::Fuzzy(_) => continue,
            Matcher::Single(v) | Matcher::Wildcard(v) => v.clone(),
            Matcher::Range { from, to } => format!(
                "{}-{}",
                from.as_deref().unwrap_or(""),
                to.as_deref().unwrap_or("")
            ),
            Matcher::UidList(list) => list.join("\\"),
        };
        // QIDO's ModalitiesInStudy becomes a Modality key in the core query; at study
        // level the PACS knows it as ModalitiesInStudy (PS3.4 C.6.2.1.2).
        let tag = if key.attr.keyword == "Modality" && query.level <= Level::Study {
            computed::MODALITIES_IN_STUDY
        } else {
            key.attr.tag
        };
        put(&mut obj, tag, &value);
    }
    obj
}

/// A match identifier as a [`Match`] row.
pub fn to_match(obj: &InMemDicomObject) -> Match {
    let mut m = Match::new();
    for element in obj.iter() {
        let tag = element.tag();
        // The computed attributes by name: (0020,1201), (0020,1203) ... are not attributes.
        let known = indexed_attr(tag).is_some()
            || matches!(
                tag,
                computed::NUMBER_OF_PATIENT_RELATED_STUDIES
                    | computed::NUMBER_OF_PATIENT_RELATED_SERIES
                    | computed::NUMBER_OF_PATIENT_RELATED_INSTANCES
                    | computed::NUMBER_OF_STUDY_RELATED_SERIES
                    | computed::NUMBER_OF_STUDY_RELATED_INSTANCES
                    | computed::NUMBER_OF_SERIES_RELATED_INSTANCES
                    | computed::MODALITIES_IN_STUDY
                    | computed::SOP_CLASSES_IN_STUDY
            );
        if !known || element.vr() == VR::SQ {
            continue;
        }
        let Ok(value) = element.to_str() else {
            continue;
        };
        let value = value
            .split('\\')
            .map(|v| v.trim_matches(|c: char| c == ' ' || c == '\0'))
            .collect::<Vec<_>>()
            .join("\\");
        // Only empty values (`\`, `\\`) is no value: it must not replace what the cache has.
        if value.split('\\').any(|v| !v.is_empty()) {
            m.insert(tag, value);
        }
    }
    m
}

/// Decode a match, assuming `default_charset` when the PACS sent no Specific Character Set
/// but non-ASCII bytes (PS3.5 6.1.2.3 would make them invalid; Latin-1 is the usual truth).
pub fn decode_match(
    raw: &[u8],
    ts: &str,
    default_charset: &str,
) -> Result<InMemDicomObject, String> {
    dataset::decode_with_default_charset(raw, ts, default_charset).map(|(obj, _)| obj)
}

/// The instances the PACS reports in the computed attribute `tag` (a Number of ... Related
/// Instances) over all `matches`; `None` when a match leaves it out, or when the counts add
/// up past `u64` (a PACS's number, not to be trusted: `+` would panic or wrap around).
pub fn reported_count(matches: &[Match], tag: Tag) -> Option<u64> {
    matches.iter().try_fold(0u64, |sum, m| {
        sum.checked_add(m.get(&tag)?.trim().parse::<u64>().ok()?)
    })
}

impl Pacs {
    /// C-FIND at the query's level (Study Root); at most `max_results` matches.
    pub async fn find(&self, query: &Query, max_results: usize) -> Result<Vec<Match>, PacsError> {
        let model = sop::STUDY_ROOT_FIND;
        let mut conn = self.connect(&[find_context(model)]).await?;
        let found = find_raw(&mut conn.assoc, model, &identifier(query), max_results).await;
        let _ = conn.release().await;
        let (raw, status, ts) = found.map_err(|e| self.error(e))?;
        if !matches!(
            status::category(status),
            Category::Success | Category::Cancel
        ) {
            return Err(PacsError::FindStatus(status));
        }
        let mut out = Vec::with_capacity(raw.len());
        for r in &raw {
            let obj =
                decode_match(r, &ts, &self.config.default_charset).map_err(PacsError::Retrieve)?;
            // Fuzzy name keys are left to the core (`Capabilities::fuzzy_names`).
            out.push(to_match(&obj));
        }
        Ok(out)
    }

    /// How many instances the PACS holds for a selection: the Number of ... Related
    /// Instances it reports, or, when it fills none, its IMAGE-level matches counted.
    pub async fn count(&self, selection: &Selection) -> Result<u64, PacsError> {
        let level = selection.level();
        let uid_key = |keyword: &str, list: &[String]| {
            let attr = crate::model::query::indexed_attr_by_keyword(keyword).expect("indexed");
            let matcher = match list {
                [one] => Matcher::Single(one.clone()),
                many => Matcher::UidList(many.to_vec()),
            };
            (attr, matcher)
        };
        // Only counted: the unique keys (and the computed counts) are all it needs.
        let mut query = Query::new(level).unique_keys_only();
        for (keyword, list) in [
            ("StudyInstanceUID", &selection.study_uids),
            ("SeriesInstanceUID", &selection.series_uids),
            ("SOPInstanceUID", &selection.sop_instance_uids),
        ] {
            if !list.is_empty() {
                let (attr, matcher) = uid_key(keyword, list);
                query = query.with_key(attr, matcher);
            }
        }
        let counted = match level {
            Level::Study | Level::Patient => Some(computed::NUMBER_OF_STUDY_RELATED_INSTANCES),
            Level::Series => Some(computed::NUMBER_OF_SERIES_RELATED_INSTANCES),
            Level::Image => None,
        };
        let matches = self.find(&query, usize::MAX).await?;
        if let Some(tag) = counted {
            if let Some(n) = reported_count(&matches, tag) {
                return Ok(n);
            }
            if matches.is_empty() {
                return Ok(0);
            }
            let mut images = query.clone();
            images.level = Level::Image;
            return Ok(self.find(&images, usize::MAX).await?.len() as u64);
        }
        Ok(matches.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::query::indexed_attr_by_keyword;

    #[test]
    fn identifier_maps_keys() {
        let q = Query::new(Level::Study)
            .with_key(
                indexed_attr_by_keyword("PatientName").unwrap(),
                Matcher::Fuzzy("muller".into()),
            )
            .with_key(
                indexed_attr_by_keyword("StudyDate").unwrap(),
                Matcher::Range {
                    from: Some("20200101".into()),
                    to: None,
                },
            )
            .with_key(
                indexed_attr_by_keyword("Modality").unwrap(),
                Matcher::Single("CT".into()),
            );
        let obj = identifier(&q);
        let s = |tag| {
            obj.element(tag)
                .unwrap()
                .to_str()
                .unwrap()
                .trim()
                .to_string()
        };
        assert_eq!(s(QUERY_RETRIEVE_LEVEL), "STUDY");
        assert_eq!(
            s(Tag(0x0010, 0x0010)),
            "",
            "fuzzy is matched here, not by the PACS"
        );
        assert_eq!(s(Tag(0x0008, 0x0020)), "20200101-");
        assert_eq!(s(computed::MODALITIES_IN_STUDY), "CT");
        assert!(obj
            .element(computed::NUMBER_OF_STUDY_RELATED_INSTANCES)
            .is_ok());
    }

    #[test]
    fn latin1_without_charset_uses_the_default() {
        // (0010,0010) PN "Müller" in Latin-1, Explicit VR LE, no Specific Character Set.
        let mut raw = vec![0x10, 0x00, 0x10, 0x00, b'P', b'N', 6, 0];
        raw.extend_from_slice(&[b'M', 0xFC, b'l', b'l', b'e', b'r']);
        let obj = decode_match(&raw, sop::EXPLICIT_VR_LE, "ISO_IR 100").unwrap();
        let m = to_match(&obj);
        assert_eq!(m[&Tag(0x0010, 0x0010)], "Müller");
    }

    #[test]
    fn binary_values_of_a_broken_length_are_refused() {
        // (0028,0010) US of 3 bytes, then (0010,0010) PN "AB": read out of step, the
        // parser would take "\x01" + the PN header for a header announcing ~4 GiB.
        let mut raw = vec![0x28, 0x00, 0x10, 0x00, b'U', b'S', 3, 0, 0, 2, 1];
        raw.extend_from_slice(&[0x10, 0x00, 0x10, 0x00, b'P', b'N', 2, 0, b'A', b'B']);
        let err = decode_match(&raw, sop::EXPLICIT_VR_LE, "ISO_IR 100").unwrap_err();
        assert!(err.contains("whole number"), "{err}");
        // The same with a US of 2 bytes decodes.
        raw.remove(10);
        raw[6] = 2;
        let m = to_match(&decode_match(&raw, sop::EXPLICIT_VR_LE, "ISO_IR 100").unwrap());
        assert_eq!(m[&Tag(0x0028, 0x0010)], "512");
        assert_eq!(m[&Tag(0x0010, 0x0010)], "AB");
    }

    #[test]
    fn reported_counts_do_not_overflow() {
        let tag = computed::NUMBER_OF_STUDY_RELATED_INSTANCES;
        let m = |n: &str| Match::from([(tag, n.to_string())]);
        assert_eq!(reported_count(&[m("7"), m(" 5 ")], tag), Some(12));
        assert_eq!(reported_count(&[m("7"), Match::new()], tag), None);
        let huge = m("18446744073709551615");
        assert_eq!(
            reported_count(std::slice::from_ref(&huge), tag),
            Some(u64::MAX)
        );
        assert_eq!(reported_count(&[huge, m("1")], tag), None, "no wrap-around");
    }
}
