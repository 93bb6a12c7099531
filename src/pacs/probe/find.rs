//! C-FIND at each level (PS3.4 C.4.1, C.6) with the return keys beeldbrug asks for, and the
//! character sets of the answers (PS3.5 6.1.2.5).

use super::report::*;
use super::{rejected_context, timed_out, within, ProbeOptions};
use crate::dimse::dataset::{self, QUERY_RETRIEVE_LEVEL, SPECIFIC_CHARACTER_SET};
use crate::dimse::scu::{find_context, find_raw};
use crate::dimse::sop;
use crate::dimse::status::{self, Category};
use crate::model::query::{
    computed, indexed_attr_by_keyword, Level, Matcher, Query, INDEXED_ATTRS,
};
use crate::model::Selection;
use crate::pacs::query::{decode_match, identifier};
use crate::pacs::{Pacs, PacsError};
use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::header::Header;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;
use dicom_object::InMemDicomObject;
use std::collections::BTreeSet;
use std::time::Instant;

// ---------------------------------------------------------------------------------------------
// C-FIND

#[derive(Default)]
struct CharsetTally {
    seen: BTreeSet<String>,
    matches: usize,
    without: usize,
    non_ascii_without: usize,
    undecodable_text: usize,
}

fn keyword(tag: Tag) -> String {
    StandardDataDictionary
        .by_tag(tag)
        .map(|e| e.alias().to_string())
        .unwrap_or_else(|| tag.to_string())
}

fn text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let v = obj.element(tag).ok()?.to_str().ok()?;
    let v = v.trim_matches(|c: char| c == ' ' || c == '\0');
    (!v.is_empty()).then(|| v.to_string())
}

fn texts(obj: &InMemDicomObject) -> impl Iterator<Item = Option<String>> + '_ {
    obj.iter()
        .filter(|e| {
            matches!(
                e.vr(),
                VR::PN | VR::LO | VR::SH | VR::LT | VR::ST | VR::UT | VR::UC
            )
        })
        .map(|e| e.to_str().ok().map(|s| s.into_owned()))
}

fn has_non_ascii_text(obj: &InMemDicomObject) -> bool {
    texts(obj).any(|t| t.is_some_and(|s| !s.is_ascii()))
}

/// Text that its declared character set cannot decode (e.g. Latin-1 bytes declared UTF-8):
/// dicom-encoding writes each such byte as `\ooo` (octal, 200 to 377).
fn has_undecodable_text(obj: &InMemDicomObject) -> bool {
    let escaped = |s: &str| {
        s.as_bytes().windows(4).any(|w| {
            w[0] == b'\\'
                && matches!(w[1], b'2' | b'3')
                && (b'0'..=b'7').contains(&w[2])
                && (b'0'..=b'7').contains(&w[3])
        })
    };
    texts(obj).any(|t| t.is_none_or(|s| s.contains('\u{FFFD}') || escaped(&s)))
}

/// The Patient Root PATIENT-level identifier (PS3.4 C.6.1.1.2): patient keys only.
fn patient_identifier() -> InMemDicomObject {
    let mut obj = InMemDicomObject::new_empty();
    obj.put(DataElement::new(
        SPECIFIC_CHARACTER_SET,
        VR::CS,
        PrimitiveValue::from("ISO_IR 192"),
    ));
    obj.put(DataElement::new(
        QUERY_RETRIEVE_LEVEL,
        VR::CS,
        PrimitiveValue::from("PATIENT"),
    ));
    for attr in INDEXED_ATTRS.iter().filter(|a| a.level == Level::Patient) {
        let vr = match attr.kind {
            crate::model::AttrKind::PersonName => VR::PN,
            crate::model::AttrKind::Date => VR::DA,
            _ if attr.keyword == "PatientSex" => VR::CS,
            _ => VR::LO,
        };
        obj.put(DataElement::new(attr.tag, vr, PrimitiveValue::Empty));
    }
    for tag in [
        computed::NUMBER_OF_PATIENT_RELATED_STUDIES,
        computed::NUMBER_OF_PATIENT_RELATED_SERIES,
        computed::NUMBER_OF_PATIENT_RELATED_INSTANCES,
    ] {
        obj.put(DataElement::new(tag, VR::IS, PrimitiveValue::Empty));
    }
    obj
}

fn uid_query(level: Level, keys: &[(&str, &str)]) -> Query {
    keys.iter().fold(
        Query::new(level),
        |q, (keyword, uid)| match indexed_attr_by_keyword(keyword) {
            Some(attr) => q.with_key(attr, Matcher::Single(uid.to_string())),
            None => q,
        },
    )
}

/// One C-FIND; the section and the decoded matches.
async fn find_once(
    pacs: &Pacs,
    model: &'static str,
    level: &str,
    query: String,
    id: &InMemDicomObject,
    options: &ProbeOptions,
    tally: &mut CharsetTally,
) -> (FindSection, Vec<InMemDicomObject>) {
    let started = Instant::now();
    let model_name = if model == sop::PATIENT_ROOT_FIND {
        "Patient Root"
    } else {
        "Study Root"
    };
    let mut section = FindSection {
        level: level.to_string(),
        model: model_name.to_string(),
        query,
        check: Check::new(Outcome::Failed, "", started),
        status: None,
        matches: 0,
        filled: Vec::new(),
        empty: Vec::new(),
    };
    let found = within(options.check_timeout, async {
        let mut conn = pacs.connect(&[find_context(model)]).await?;
        let found = find_raw(&mut conn.assoc, model, id, options.max_matches).await;
        let _ = conn.release().await;
        found.map_err(|e| PacsError::Retrieve(e.to_string()))
    })
    .await;
    let (raw, status, ts) = match found {
        None => {
            section.check = Check::new(Outcome::Failed, timed_out(options.check_timeout), started);
            return (section, Vec::new());
        }
        Some(Err(e)) if rejected_context(&e) => {
            section.check = Check::new(
                Outcome::NotSupported,
                format!("{model_name} C-FIND not offered"),
                started,
            );
            return (section, Vec::new());
        }
        Some(Err(e)) => {
            section.check = Check::new(Outcome::Failed, e.to_string(), started);
            return (section, Vec::new());
        }
        Some(Ok(found)) => found,
    };
    section.status = Some(status);
    let mut matches = Vec::with_capacity(raw.len());
    let mut undecodable = 0;
    for r in &raw {
        let plain = match dataset::decode(r, &ts) {
            Ok(obj) => obj,
            Err(_) => {
                undecodable += 1;
                continue;
            }
        };
        tally.matches += 1;
        let obj = match text(&plain, SPECIFIC_CHARACTER_SET) {
            Some(cs) => {
                tally.seen.insert(cs);
                tally.undecodable_text += usize::from(has_undecodable_text(&plain));
                plain
            }
            None => {
                tally.without += 1;
                let obj = decode_match(r, &ts, &pacs.config.default_charset).unwrap_or(plain);
                tally.non_ascii_without += usize::from(has_non_ascii_text(&obj));
                obj
            }
        };
        matches.push(obj);
    }
    section.matches = matches.len();
    for element in id.iter() {
        let tag = element.tag();
        if tag == SPECIFIC_CHARACTER_SET || tag == QUERY_RETRIEVE_LEVEL {
            continue;
        }
        if matches.iter().any(|m| text(m, tag).is_some()) {
            section.filled.push(keyword(tag));
        } else {
            section.empty.push(keyword(tag));
        }
    }
    let undecodable = if undecodable > 0 {
        format!("; {undecodable} matches could not be decoded")
    } else {
        String::new()
    };
    section.check = match status::category(status) {
        Category::Success => Check::new(
            if undecodable.is_empty() {
                Outcome::Ok
            } else {
                Outcome::Warning
            },
            format!("{} match(es){undecodable}", matches.len()),
            started,
        ),
        Category::Cancel | Category::Pending => Check::new(
            Outcome::Ok,
            format!(
                "more than {} matches: C-CANCEL after {}{undecodable}",
                options.max_matches,
                matches.len()
            ),
            started,
        ),
        Category::Warning => Check::new(
            Outcome::Warning,
            format!(
                "{} matches; final {}",
                matches.len(),
                status::describe(status)
            ),
            started,
        ),
        Category::Failure => Check::new(
            Outcome::Failed,
            format!("final {}", status::describe(status)),
            started,
        ),
    };
    (section, matches)
}

/// Prefer the match with the fewest related instances (but some), else the first.
fn pick(matches: &[InMemDicomObject], uid: Tag, count: Tag) -> Option<String> {
    let with_uid = || matches.iter().filter_map(|m| Some((text(m, uid)?, m)));
    with_uid()
        .filter_map(|(u, m)| Some((text(m, count)?.parse::<u64>().ok()?, u)))
        .filter(|(n, _)| *n > 0)
        .min()
        .map(|(_, u)| u)
        .or_else(|| with_uid().next().map(|(u, _)| u))
}

/// The C-FIND sections, the character sets seen, and the instance to retrieve. `skip`: why
/// nothing can be asked (no association).
pub(super) async fn check_find(
    pacs: &Pacs,
    options: &ProbeOptions,
    skip: Option<&str>,
) -> (Vec<FindSection>, CharsetSection, Option<Selection>) {
    let started = Instant::now();
    let mut tally = CharsetTally::default();
    let mut sections = Vec::new();
    if let Some(why) = skip {
        let mut charsets = charset_section(tally, pacs, started);
        charsets.check.detail = why.to_string();
        return (sections, charsets, None);
    }
    let (patient, _) = find_once(
        pacs,
        sop::PATIENT_ROOT_FIND,
        "PATIENT",
        "all patients".into(),
        &patient_identifier(),
        options,
        &mut tally,
    )
    .await;
    sections.push(patient);

    let (study_query, described) = match &options.study {
        Some(uid) => (
            uid_query(Level::Study, &[("StudyInstanceUID", uid)]),
            format!("StudyInstanceUID={uid}"),
        ),
        None => (Query::new(Level::Study), "all studies".to_string()),
    };
    let (studies_found, studies) = find_once(
        pacs,
        sop::STUDY_ROOT_FIND,
        "STUDY",
        described,
        &identifier(&study_query),
        options,
        &mut tally,
    )
    .await;
    sections.push(studies_found);
    let study = pick(
        &studies,
        Tag(0x0020, 0x000D),
        computed::NUMBER_OF_STUDY_RELATED_INSTANCES,
    )
    .or_else(|| options.study.clone());

    let mut selection = None;
    if let Some(study) = study {
        let (series_found, series) = find_once(
            pacs,
            sop::STUDY_ROOT_FIND,
            "SERIES",
            format!("StudyInstanceUID={study}"),
            &identifier(&uid_query(Level::Series, &[("StudyInstanceUID", &study)])),
            options,
            &mut tally,
        )
        .await;
        sections.push(series_found);
        if let Some(series) = pick(
            &series,
            Tag(0x0020, 0x000E),
            computed::NUMBER_OF_SERIES_RELATED_INSTANCES,
        ) {
            let keys = [
                ("StudyInstanceUID", &*study),
                ("SeriesInstanceUID", &*series),
            ];
            let (images_found, images) = find_once(
                pacs,
                sop::STUDY_ROOT_FIND,
                "IMAGE",
                format!("StudyInstanceUID={study} SeriesInstanceUID={series}"),
                &identifier(&uid_query(Level::Image, &keys)),
                options,
                &mut tally,
            )
            .await;
            sections.push(images_found);
            selection = images
                .iter()
                .find_map(|m| text(m, Tag(0x0008, 0x0018)))
                .map(|sop| Selection {
                    study_uids: vec![study.clone()],
                    series_uids: vec![series.clone()],
                    sop_instance_uids: vec![sop],
                    ..Selection::default()
                });
        }
    }

    // No instance found (a PACS without C-FIND): the whole study named on the command line.
    if selection.is_none() {
        selection = options.study.clone().map(|study| Selection {
            study_uids: vec![study],
            ..Selection::default()
        });
    }

    // QIDO-RS "all series" asks the PACS without a StudyInstanceUID: a relational query
    // (PS3.4 C.4.1.2.2.1), which not every PACS supports.
    let hierarchical = sections
        .iter()
        .find(|s| s.level == "SERIES")
        .map_or(0, |s| s.matches);
    let (mut relational, _) = find_once(
        pacs,
        sop::STUDY_ROOT_FIND,
        "SERIES (relational)",
        "no StudyInstanceUID".into(),
        &identifier(&Query::new(Level::Series)),
        options,
        &mut tally,
    )
    .await;
    if relational.check.outcome == Outcome::Failed && relational.status.is_some() {
        relational.check.outcome = Outcome::NotSupported;
        relational.check.detail = format!(
            "{}: hierarchical queries only (QIDO-RS across studies finds no series)",
            relational.check.detail
        );
    } else if relational.check.outcome.works() && relational.matches == 0 && hierarchical > 0 {
        relational.check.outcome = Outcome::Warning;
        relational.check.detail =
            "0 matches where the hierarchical query found some: hierarchical queries only?".into();
    }
    sections.push(relational);
    (sections, charset_section(tally, pacs, started), selection)
}

fn charset_section(tally: CharsetTally, pacs: &Pacs, started: Instant) -> CharsetSection {
    let (outcome, detail) = if tally.matches == 0 {
        (Outcome::Skipped, "no matches to look at".to_string())
    } else if tally.non_ascii_without > 0 || tally.undecodable_text > 0 {
        let mut why = Vec::new();
        if tally.non_ascii_without > 0 {
            why.push(format!(
                "{} of {} matches carry non-ASCII text without Specific Character Set (read \
                 as {})",
                tally.non_ascii_without, tally.matches, pacs.config.default_charset
            ));
        }
        if tally.undecodable_text > 0 {
            why.push(format!(
                "{} of {} matches hold text their Specific Character Set cannot decode",
                tally.undecodable_text, tally.matches
            ));
        }
        (Outcome::Warning, why.join("; "))
    } else if tally.without == 0 {
        let n = tally.matches;
        (
            Outcome::Ok,
            format!("{n} matches, all with Specific Character Set"),
        )
    } else {
        let (n, without) = (tally.matches, tally.without);
        (
            Outcome::Ok,
            format!("{n} matches, {without} without Specific Character Set (all ASCII)"),
        )
    };
    CharsetSection {
        check: Check::new(outcome, detail, started),
        seen: tally.seen.into_iter().collect(),
        matches: tally.matches,
        matches_without_charset: tally.without,
        non_ascii_without_charset: tally.non_ascii_without,
        undecodable_text: tally.undecodable_text,
        assumed_when_missing: pacs.config.default_charset.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latin1_declared_utf8_is_undecodable_text() {
        // (0008,0005) CS "ISO_IR 192" and (0010,0010) PN "M\xFCller" (Latin-1), explicit LE.
        let mut raw = vec![0x08, 0x00, 0x05, 0x00, b'C', b'S', 10, 0];
        raw.extend_from_slice(b"ISO_IR 192");
        raw.extend_from_slice(&[0x10, 0x00, 0x10, 0x00, b'P', b'N', 6, 0]);
        raw.extend_from_slice(&[b'M', 0xFC, b'l', b'l', b'e', b'r']);
        let obj = dataset::decode(&raw, sop::EXPLICIT_VR_LE).unwrap();
        assert!(has_undecodable_text(&obj));
        let utf8 = "M\u{fc}ller".as_bytes().to_vec();
        let mut raw = raw[..26].to_vec();
        raw[24] = utf8.len() as u8 + 1;
        raw.extend_from_slice(&utf8);
        raw.push(b' ');
        let obj = dataset::decode(&raw, sop::EXPLICIT_VR_LE).unwrap();
        assert!(!has_undecodable_text(&obj));
        assert!(has_non_ascii_text(&obj));
    }

    #[test]
    fn picks_the_smallest_non_empty() {
        let m = |uid: &str, n: &str| {
            let mut o = InMemDicomObject::new_empty();
            o.put(DataElement::new(
                Tag(0x0020, 0x000D),
                VR::UI,
                PrimitiveValue::from(uid),
            ));
            o.put(DataElement::new(
                computed::NUMBER_OF_STUDY_RELATED_INSTANCES,
                VR::IS,
                PrimitiveValue::from(n),
            ));
            o
        };
        let count = computed::NUMBER_OF_STUDY_RELATED_INSTANCES;
        let uid = Tag(0x0020, 0x000D);
        let all = [m("1.1", "9"), m("1.2", "0"), m("1.3", "3")];
        assert_eq!(pick(&all, uid, count).as_deref(), Some("1.3"));
        assert_eq!(pick(&all[1..2], uid, count).as_deref(), Some("1.2"));
        assert_eq!(pick(&[], uid, count), None);
    }
}
