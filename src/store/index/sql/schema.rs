//! The index tables as the SQL sees them: one table per query level (patient, study,
//! series, instance), each with its alias, its unique key and the column that references
//! its parent; and the normalised companion columns of person names.

pub(super) use crate::model::query::normalize_name;
use crate::model::query::{IndexedAttr, Level};

pub(super) fn table(level: Level) -> &'static str {
    match level {
        Level::Patient => "patient",
        Level::Study => "study",
        Level::Series => "series",
        Level::Image => "instance",
    }
}

pub(super) fn alias(level: Level) -> &'static str {
    match level {
        Level::Patient => "p",
        Level::Study => "st",
        Level::Series => "se",
        Level::Image => "i",
    }
}

/// The column of `level`'s table that references its parent's `id`.
pub(super) fn parent_fk(level: Level) -> &'static str {
    match level {
        Level::Patient => "",
        Level::Study => "patient_pk",
        Level::Series => "study_pk",
        Level::Image => "series_pk",
    }
}

pub(super) fn parent(level: Level) -> Option<Level> {
    match level {
        Level::Patient => None,
        Level::Study => Some(Level::Patient),
        Level::Series => Some(Level::Study),
        Level::Image => Some(Level::Series),
    }
}

pub(super) fn child(level: Level) -> Option<Level> {
    match level {
        Level::Patient => Some(Level::Study),
        Level::Study => Some(Level::Series),
        Level::Series => Some(Level::Image),
        Level::Image => None,
    }
}

/// The level's unique key column (and its stable sort order).
pub(super) fn unique_column(level: Level) -> &'static str {
    match level {
        Level::Patient => "patient_id",
        Level::Study => "study_instance_uid",
        Level::Series => "series_instance_uid",
        Level::Image => "sop_instance_uid",
    }
}

/// The normalised companion column of a person-name column.
pub(super) fn norm_column(attr: &IndexedAttr) -> Option<&'static str> {
    match attr.column {
        "patient_name" => Some("patient_name_norm"),
        "referring_physician_name" => Some("referring_physician_name_norm"),
        _ => None,
    }
}

/// The rows of `patient_name_word` for a normalised name (migration 0010): its suffixes that
/// start at the beginning or after a component or word separator (`^`, space, `=`), so that
/// "a prefix of the name, of a component or of a word" is one prefix match on them.
pub(super) fn name_words(norm: &str) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    let mut start = true;
    for (i, c) in norm.char_indices() {
        if start && !words.iter().any(|w| w == &norm[i..]) {
            words.push(norm[i..].to_string());
        }
        start = matches!(c, '^' | ' ' | '=');
    }
    words
}

/// `table alias JOIN parent ... ` from `from` up to and including `to` (`to` above `from`).
pub(super) fn chain(from: Level, to: Level) -> String {
    let mut s = format!("{} {}", table(from), alias(from));
    let mut level = from;
    while level > to {
        let Some(up) = parent(level) else { break };
        s.push_str(&format!(
            " JOIN {} {} ON {}.id = {}.{}",
            table(up),
            alias(up),
            alias(up),
            alias(level),
            parent_fk(level)
        ));
        level = up;
    }
    s
}

pub(super) fn qualified(attr: &IndexedAttr) -> String {
    format!("{}.{}", alias(attr.level), attr.column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_words_start_at_components_and_words() {
        assert_eq!(
            name_words("de vries^jan^^dr"),
            ["de vries^jan^^dr", "vries^jan^^dr", "jan^^dr", "^dr", "dr"]
        );
        assert_eq!(name_words("a=b"), ["a=b", "b"]);
        assert_eq!(name_words("x^"), ["x^"]);
        assert!(name_words("").is_empty());
        // The same suffix twice is one row.
        assert_eq!(name_words("^^"), ["^^", "^"]);
    }

    #[test]
    fn normalizes_names() {
        assert_eq!(normalize_name("Müller^Zoë"), "muller^zoe");
        assert_eq!(normalize_name("Øster^Straße"), "oster^strasse");
        assert_eq!(normalize_name("ÉLODIE Łukasz"), "elodie lukasz");
        assert_eq!(normalize_name("Zoe\u{0308}"), "zoe");
    }
}
