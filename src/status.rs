//! DIMSE status codes as data (PS3.7 Annex C; service-specific meanings from PS3.4).

/// Status category (PS3.7 C.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    Success,
    Pending,
    Cancel,
    Warning,
    Failure,
}

/// Named status codes used by beeldbrug.
pub mod code {
    pub const SUCCESS: u16 = 0x0000;
    /// PS3.4 C.4.1.1.4: matches are continuing, optional keys supported.
    pub const PENDING: u16 = 0xFF00;
    /// PS3.4 C.4.1.1.4: matches are continuing, some optional keys not supported.
    pub const PENDING_WARNING: u16 = 0xFF01;
    /// PS3.7 C.3: terminated by C-CANCEL.
    pub const CANCEL: u16 = 0xFE00;
    /// PS3.4 B.2.3 / C.4.2.1.5: coercion of data elements / sub-operations with failures.
    pub const WARNING_SUBOPS_FAILED: u16 = 0xB000;
    pub const WARNING_COERCION: u16 = 0xB000;
    /// PS3.4 B.2.3: data set does not match SOP class (warning; stored anyway).
    pub const WARNING_DATASET_MISMATCH: u16 = 0xB007;
    /// PS3.4 B.2.3: elements discarded.
    pub const WARNING_ELEMENTS_DISCARDED: u16 = 0xB006;
    /// PS3.7 C.5.x: processing failure.
    pub const PROCESSING_FAILURE: u16 = 0x0110;
    /// PS3.7 C.5.6: SOP class not supported.
    pub const SOP_CLASS_NOT_SUPPORTED: u16 = 0x0122;
    /// PS3.7 C.5.x: unrecognized operation.
    pub const UNRECOGNIZED_OPERATION: u16 = 0x0211;
    /// PS3.7 C.5.15: not authorized.
    pub const NOT_AUTHORIZED: u16 = 0x0124;
    /// PS3.4 B.2.3: refused, out of resources.
    pub const OUT_OF_RESOURCES: u16 = 0xA700;
    /// PS3.4 C.4.2.1.5: out of resources, unable to calculate number of matches.
    pub const OUT_OF_RESOURCES_MATCHES: u16 = 0xA701;
    /// PS3.4 C.4.2.1.5: out of resources, unable to perform sub-operations.
    pub const OUT_OF_RESOURCES_SUBOPS: u16 = 0xA702;
    /// PS3.4 C.4.2.1.5: move destination unknown.
    pub const MOVE_DESTINATION_UNKNOWN: u16 = 0xA801;
    /// PS3.4 B.2.3 / C.4.1.1.4: data set / identifier does not match SOP class.
    pub const IDENTIFIER_MISMATCH: u16 = 0xA900;
    /// PS3.4 B.2.3 / C.4.1.1.4: cannot understand / unable to process.
    pub const CANNOT_UNDERSTAND: u16 = 0xC000;
}

/// One row of a status table: a code range, its category and meaning.
#[derive(Debug, Clone, Copy)]
pub struct StatusEntry {
    pub from: u16,
    pub to: u16,
    pub category: Category,
    pub meaning: &'static str,
}

const fn row(from: u16, to: u16, category: Category, meaning: &'static str) -> StatusEntry {
    StatusEntry {
        from,
        to,
        category,
        meaning,
    }
}

/// The general status table (PS3.7 C.1-C.5) with the C-STORE/C-FIND/C-MOVE/C-GET specifics
/// of PS3.4 B.2.3 and C.4. First match wins, so specific rows precede ranges.
pub static STATUS_TABLE: &[StatusEntry] = &[
    row(0x0000, 0x0000, Category::Success, "Success"),
    row(
        0xFF00,
        0xFF00,
        Category::Pending,
        "Pending: matches/sub-operations are continuing",
    ),
    row(
        0xFF01,
        0xFF01,
        Category::Pending,
        "Pending: optional keys not supported",
    ),
    row(
        0xFE00,
        0xFE00,
        Category::Cancel,
        "Cancel: terminated by C-CANCEL",
    ),
    row(
        0x0001,
        0x0001,
        Category::Warning,
        "Warning: requested optional attributes not supported",
    ),
    row(
        0x0107,
        0x0107,
        Category::Warning,
        "Warning: attribute list error",
    ),
    row(
        0x0116,
        0x0116,
        Category::Warning,
        "Warning: attribute value out of range",
    ),
    row(
        0xB000,
        0xB000,
        Category::Warning,
        "Warning: coercion of data elements / sub-operations complete with failures",
    ),
    row(
        0xB006,
        0xB006,
        Category::Warning,
        "Warning: elements discarded",
    ),
    row(
        0xB007,
        0xB007,
        Category::Warning,
        "Warning: data set does not match SOP class",
    ),
    row(0xB001, 0xBFFF, Category::Warning, "Warning"),
    row(
        0x0110,
        0x0110,
        Category::Failure,
        "Failure: processing failure",
    ),
    row(
        0x0122,
        0x0122,
        Category::Failure,
        "Refused: SOP class not supported",
    ),
    row(0x0124, 0x0124, Category::Failure, "Refused: not authorized"),
    row(
        0x0211,
        0x0211,
        Category::Failure,
        "Failure: unrecognized operation",
    ),
    row(
        0xA700,
        0xA700,
        Category::Failure,
        "Refused: out of resources",
    ),
    row(
        0xA701,
        0xA701,
        Category::Failure,
        "Refused: out of resources, unable to calculate number of matches",
    ),
    row(
        0xA702,
        0xA702,
        Category::Failure,
        "Refused: out of resources, unable to perform sub-operations",
    ),
    row(
        0xA801,
        0xA801,
        Category::Failure,
        "Refused: move destination unknown",
    ),
    row(
        0xA900,
        0xA900,
        Category::Failure,
        "Error: data set does not match SOP class",
    ),
    row(
        0xA700,
        0xA7FF,
        Category::Failure,
        "Refused: out of resources",
    ),
    row(
        0xA900,
        0xA9FF,
        Category::Failure,
        "Error: data set does not match SOP class",
    ),
    row(
        0xC000,
        0xCFFF,
        Category::Failure,
        "Error: cannot understand",
    ),
];

pub fn lookup(status: u16) -> Option<&'static StatusEntry> {
    STATUS_TABLE
        .iter()
        .find(|e| (e.from..=e.to).contains(&status))
}

/// Category of a status; anything not in the table is a failure (PS3.7 C.4).
pub fn category(status: u16) -> Category {
    lookup(status)
        .map(|e| e.category)
        .unwrap_or(Category::Failure)
}

pub fn meaning(status: u16) -> &'static str {
    lookup(status).map(|e| e.meaning).unwrap_or("Failure")
}

pub fn describe(status: u16) -> String {
    format!("0x{status:04X} ({})", meaning(status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_follow_ps3_7_annex_c() {
        assert_eq!(category(0x0000), Category::Success);
        assert_eq!(category(0xFF01), Category::Pending);
        assert_eq!(category(0xFE00), Category::Cancel);
        assert_eq!(category(0xB007), Category::Warning);
        assert_eq!(category(0xB123), Category::Warning);
        assert_eq!(category(0xA801), Category::Failure);
        assert_eq!(category(0xC123), Category::Failure);
        assert_eq!(category(0x1234), Category::Failure);
        assert!(meaning(0xA801).contains("destination"));
    }
}
