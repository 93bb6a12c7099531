//! The one query model every front translates into (PS3.4 C.2.2.2 matching).
//!
//! C-FIND, QIDO-RS and (later) ITI-38 all become a [`Query`]: a level, a list of matching keys
//! on indexed attributes, paging. The index answers with [`Match`] rows that hold the indexed
//! and computed attributes of that level and the levels above it.

use dicom_core::Tag;
use std::collections::BTreeMap;

/// Query/Retrieve level (PS3.4 C.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Patient,
    Study,
    Series,
    Image,
}

impl Level {
    /// Parse the value of Query/Retrieve Level (0008,0052).
    pub fn from_code(code: &str) -> Option<Level> {
        match code.trim() {
            "PATIENT" => Some(Level::Patient),
            "STUDY" => Some(Level::Study),
            "SERIES" => Some(Level::Series),
            "IMAGE" => Some(Level::Image),
            _ => None,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Level::Patient => "PATIENT",
            Level::Study => "STUDY",
            Level::Series => "SERIES",
            Level::Image => "IMAGE",
        }
    }
}

/// How an attribute's value is matched (its VR family, PS3.4 C.2.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrKind {
    /// LO, SH, CS, ST, IS ...: single value and wildcard matching.
    Text,
    /// PN: like text, plus fuzzy (case and accent insensitive) matching on request.
    PersonName,
    /// DA: single value and range matching, `YYYYMMDD`.
    Date,
    /// TM: single value and range matching, `HHMMSS.FFFFFF`.
    Time,
    /// UI: single value and UID list matching, never wildcards.
    Uid,
}

/// An attribute held in the index.
#[derive(Debug, Clone, Copy)]
pub struct IndexedAttr {
    pub tag: Tag,
    pub keyword: &'static str,
    pub level: Level,
    pub kind: AttrKind,
    /// Column in the level's table.
    pub column: &'static str,
}

macro_rules! attr {
    ($g:expr, $e:expr, $kw:expr, $level:ident, $kind:ident, $col:expr) => {
        IndexedAttr {
            tag: Tag($g, $e),
            keyword: $kw,
            level: Level::$level,
            kind: AttrKind::$kind,
            column: $col,
        }
    };
}

/// Every attribute the index can match on and return (PS3.4 C.6.1.1 / C.6.2.1 keys).
pub static INDEXED_ATTRS: &[IndexedAttr] = &[
    attr!(
        0x0010,
        0x0010,
        "PatientName",
        Patient,
        PersonName,
        "patient_name"
    ),
    attr!(0x0010, 0x0020, "PatientID", Patient, Text, "patient_id"),
    attr!(
        0x0010,
        0x0021,
        "IssuerOfPatientID",
        Patient,
        Text,
        "issuer_of_patient_id"
    ),
    attr!(
        0x0010,
        0x0030,
        "PatientBirthDate",
        Patient,
        Date,
        "patient_birth_date"
    ),
    attr!(0x0010, 0x0040, "PatientSex", Patient, Text, "patient_sex"),
    attr!(
        0x0020,
        0x000D,
        "StudyInstanceUID",
        Study,
        Uid,
        "study_instance_uid"
    ),
    attr!(0x0008, 0x0020, "StudyDate", Study, Date, "study_date"),
    attr!(0x0008, 0x0030, "StudyTime", Study, Time, "study_time"),
    attr!(
        0x0008,
        0x0050,
        "AccessionNumber",
        Study,
        Text,
        "accession_number"
    ),
    attr!(0x0020, 0x0010, "StudyID", Study, Text, "study_id"),
    attr!(
        0x0008,
        0x1030,
        "StudyDescription",
        Study,
        Text,
        "study_description"
    ),
    attr!(
        0x0008,
        0x0090,
        "ReferringPhysicianName",
        Study,
        PersonName,
        "referring_physician_name"
    ),
    attr!(
        0x0020,
        0x000E,
        "SeriesInstanceUID",
        Series,
        Uid,
        "series_instance_uid"
    ),
    attr!(0x0008, 0x0060, "Modality", Series, Text, "modality"),
    attr!(
        0x0020,
        0x0011,
        "SeriesNumber",
        Series,
        Text,
        "series_number"
    ),
    attr!(
        0x0008,
        0x103E,
        "SeriesDescription",
        Series,
        Text,
        "series_description"
    ),
    attr!(
        0x0018,
        0x0015,
        "BodyPartExamined",
        Series,
        Text,
        "body_part_examined"
    ),
    attr!(0x0008, 0x0021, "SeriesDate", Series, Date, "series_date"),
    attr!(
        0x0008,
        0x0018,
        "SOPInstanceUID",
        Image,
        Uid,
        "sop_instance_uid"
    ),
    attr!(0x0008, 0x0016, "SOPClassUID", Image, Uid, "sop_class_uid"),
    attr!(
        0x0020,
        0x0013,
        "InstanceNumber",
        Image,
        Text,
        "instance_number"
    ),
    attr!(0x0028, 0x0010, "Rows", Image, Text, "rows"),
    attr!(0x0028, 0x0011, "Columns", Image, Text, "columns"),
    attr!(
        0x0028,
        0x0008,
        "NumberOfFrames",
        Image,
        Text,
        "number_of_frames"
    ),
    attr!(
        0x0028,
        0x0100,
        "BitsAllocated",
        Image,
        Text,
        "bits_allocated"
    ),
];

/// Attributes computed by the index per level (PS3.4 C.6.1.1.x, "additional" keys).
pub mod computed {
    use dicom_core::Tag;
    pub const NUMBER_OF_PATIENT_RELATED_STUDIES: Tag = Tag(0x0020, 0x1200);
    pub const NUMBER_OF_PATIENT_RELATED_SERIES: Tag = Tag(0x0020, 0x1202);
    pub const NUMBER_OF_PATIENT_RELATED_INSTANCES: Tag = Tag(0x0020, 0x1204);
    pub const NUMBER_OF_STUDY_RELATED_SERIES: Tag = Tag(0x0020, 0x1206);
    pub const NUMBER_OF_STUDY_RELATED_INSTANCES: Tag = Tag(0x0020, 0x1208);
    pub const NUMBER_OF_SERIES_RELATED_INSTANCES: Tag = Tag(0x0020, 0x1209);
    /// Multi-valued, joined with `\`.
    pub const MODALITIES_IN_STUDY: Tag = Tag(0x0008, 0x0061);
    /// Multi-valued, joined with `\`.
    pub const SOP_CLASSES_IN_STUDY: Tag = Tag(0x0008, 0x0062);
}

pub fn indexed_attr(tag: Tag) -> Option<&'static IndexedAttr> {
    INDEXED_ATTRS.iter().find(|a| a.tag == tag)
}

pub fn indexed_attr_by_keyword(keyword: &str) -> Option<&'static IndexedAttr> {
    INDEXED_ATTRS.iter().find(|a| a.keyword == keyword)
}

/// How one key matches (PS3.4 C.2.2.2.1 - C.2.2.2.5). Values are UTF-8, already decoded
/// from the request's Specific Character Set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matcher {
    /// Empty value: matches everything, and asks for the attribute back (C.2.2.2.3).
    Universal,
    /// Exact value (C.2.2.2.1).
    Single(String),
    /// `*` any run, `?` one character (C.2.2.2.4).
    Wildcard(String),
    /// Inclusive range; an open end is `None` (C.2.2.2.5). Values are `YYYYMMDD` / `HHMMSS...`.
    Range {
        from: Option<String>,
        to: Option<String>,
    },
    /// Any of these UIDs (C.2.2.2.2).
    UidList(Vec<String>),
    /// PN only: case- and accent-insensitive prefix match per name component (QIDO fuzzymatching).
    Fuzzy(String),
}

impl Matcher {
    /// Interpret a request value for an attribute of `kind` (PS3.4 C.2.2.2).
    pub fn parse(kind: AttrKind, raw: &str) -> Matcher {
        let value = raw.trim_matches(|c: char| c == ' ' || c == '\0');
        if value.is_empty() || value == "*" {
            return Matcher::Universal;
        }
        match kind {
            AttrKind::Uid => {
                if value.contains('\\') {
                    Matcher::UidList(value.split('\\').map(|s| s.trim().to_string()).collect())
                } else {
                    Matcher::Single(value.to_string())
                }
            }
            AttrKind::Date | AttrKind::Time if value.contains('-') => {
                let (from, to) = value.split_once('-').unwrap_or((value, ""));
                let opt = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_string());
                Matcher::Range {
                    from: opt(from),
                    to: opt(to),
                }
            }
            AttrKind::Date | AttrKind::Time => Matcher::Single(value.to_string()),
            AttrKind::Text | AttrKind::PersonName => {
                if value.contains('*') || value.contains('?') {
                    Matcher::Wildcard(value.to_string())
                } else {
                    Matcher::Single(value.to_string())
                }
            }
        }
    }
}

/// One matching key.
#[derive(Debug, Clone)]
pub struct QueryKey {
    pub attr: &'static IndexedAttr,
    pub matcher: Matcher,
}

/// A query against the index at one level.
#[derive(Debug, Clone)]
pub struct Query {
    pub level: Level,
    pub keys: Vec<QueryKey>,
    /// At most this many matches; `None` = no limit.
    pub limit: Option<u32>,
    pub offset: u32,
    /// The asker needs only the unique keys of the matches (and the Patient ID, which
    /// consent decides on), not every attribute: a PACS is asked for no more, which spares
    /// it reading its files for attributes it does not index (Orthanc reads every matching
    /// instance's file for Rows, Columns, Bits Allocated).
    pub unique_keys_only: bool,
}

impl Query {
    pub fn new(level: Level) -> Self {
        Query {
            level,
            keys: Vec::new(),
            limit: None,
            offset: 0,
            unique_keys_only: false,
        }
    }

    /// The same query, asking only for the unique keys (see [`Query::unique_keys_only`]).
    pub fn unique_keys_only(mut self) -> Self {
        self.unique_keys_only = true;
        self
    }

    /// Add a matching key; universal matches are kept out (they constrain nothing).
    pub fn with_key(mut self, attr: &'static IndexedAttr, matcher: Matcher) -> Self {
        if matcher != Matcher::Universal {
            self.keys.push(QueryKey { attr, matcher });
        }
        self
    }
}

/// Does a match satisfy the query's fuzzy person-name keys (QIDO-RS `fuzzymatching`)?
/// For sources that cannot match names fuzzily: they are asked without those keys and the
/// core matches here, as the index does (case- and accent-insensitive, prefix per component).
pub fn matches_fuzzy(query: &Query, m: &Match) -> bool {
    query.keys.iter().all(|key| match &key.matcher {
        Matcher::Fuzzy(q) => {
            let q = normalize_name(q.trim());
            let v = normalize_name(m.get(&key.attr.tag).map(String::as_str).unwrap_or(""));
            v.starts_with(&q) || v.split(['^', ' ', '=']).any(|part| part.starts_with(&q))
        }
        _ => true,
    })
}

/// Lowercase and strip diacritics, for fuzzy person-name matching (`_norm` columns).
/// Covers Latin-1 and Latin Extended-A letters and combining marks (U+0300..U+036F).
pub fn normalize_name(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars().flat_map(char::to_lowercase) {
        let mapped: &str = match c {
            'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' | 'ă' | 'ą' => "a",
            'æ' => "ae",
            'ç' | 'ć' | 'ĉ' | 'ċ' | 'č' => "c",
            'ď' | 'đ' | 'ð' => "d",
            'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ĕ' | 'ė' | 'ę' | 'ě' => "e",
            'ĝ' | 'ğ' | 'ġ' | 'ģ' => "g",
            'ĥ' | 'ħ' => "h",
            'ì' | 'í' | 'î' | 'ï' | 'ĩ' | 'ī' | 'ĭ' | 'į' | 'ı' => "i",
            'ĳ' => "ij",
            'ĵ' => "j",
            'ķ' | 'ĸ' => "k",
            'ĺ' | 'ļ' | 'ľ' | 'ŀ' | 'ł' => "l",
            'ñ' | 'ń' | 'ņ' | 'ň' | 'ŉ' | 'ŋ' => "n",
            'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' | 'ŏ' | 'ő' => "o",
            'œ' => "oe",
            'ŕ' | 'ŗ' | 'ř' => "r",
            'ś' | 'ŝ' | 'ş' | 'š' | 'ſ' => "s",
            'ß' => "ss",
            'ţ' | 'ť' | 'ŧ' => "t",
            'þ' => "th",
            'ù' | 'ú' | 'û' | 'ü' | 'ũ' | 'ū' | 'ŭ' | 'ů' | 'ű' | 'ų' => "u",
            'ŵ' => "w",
            'ý' | 'ÿ' | 'ŷ' => "y",
            'ź' | 'ż' | 'ž' => "z",
            '\u{0300}'..='\u{036F}' => "",
            _ => {
                out.push(c);
                continue;
            }
        };
        out.push_str(mapped);
    }
    out
}

/// One answer row: values by tag, for the query level and the levels above it, plus the
/// computed attributes of [`computed`]. Multi-valued values are joined with `\`.
pub type Match = BTreeMap<Tag, String>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuzzy_matching_on_results() {
        let q = Query::new(Level::Study).with_key(
            indexed_attr_by_keyword("PatientName").unwrap(),
            Matcher::Fuzzy("zoe".into()),
        );
        let mut m = Match::new();
        m.insert(Tag(0x0010, 0x0010), "Müller^Zoë".into());
        assert!(matches_fuzzy(&q, &m));
        m.insert(Tag(0x0010, 0x0010), "Jansen^Piet".into());
        assert!(!matches_fuzzy(&q, &m));
    }
}
