//! `query:AdhocQueryRequest` → [`StoredQuery`]: the stored query's id, its parameters checked
//! against ITI TF-2a 3.18.4.1.2.3.7 (Tables 3.18.4.1.2.3.7.1-1 …), the return type and the home
//! community. Errors are [`RegistryError`]s for the response, never panics.

use super::model::{codes, RegistryError, ReturnType};
use super::ns;
use crate::xml::{self, Element};
use std::collections::BTreeMap;

/// The stored queries of ITI TF-2a 3.18.4.1.2.3.7 (Table 3.18.4.1.2.3.7-1 ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QueryId {
    FindDocuments,
    FindDocumentsByReferenceId,
    FindSubmissionSets,
    FindFolders,
    GetAll,
    GetDocuments,
    GetFolders,
    GetAssociations,
    GetDocumentsAndAssociations,
    GetSubmissionSets,
    GetSubmissionSetAndContents,
    GetFolderAndContents,
    GetFoldersForDocument,
    GetRelatedDocuments,
}

impl QueryId {
    pub const ALL: [QueryId; 14] = [
        QueryId::FindDocuments,
        QueryId::FindDocumentsByReferenceId,
        QueryId::FindSubmissionSets,
        QueryId::FindFolders,
        QueryId::GetAll,
        QueryId::GetDocuments,
        QueryId::GetFolders,
        QueryId::GetAssociations,
        QueryId::GetDocumentsAndAssociations,
        QueryId::GetSubmissionSets,
        QueryId::GetSubmissionSetAndContents,
        QueryId::GetFolderAndContents,
        QueryId::GetFoldersForDocument,
        QueryId::GetRelatedDocuments,
    ];

    pub fn uuid(self) -> &'static str {
        match self {
            QueryId::FindDocuments => "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d",
            QueryId::FindDocumentsByReferenceId => "urn:uuid:12941a89-e02e-4be5-967c-ce4bfc8fe492",
            QueryId::FindSubmissionSets => "urn:uuid:f26abbcb-ac74-4422-8a30-edb644bbc1a9",
            QueryId::FindFolders => "urn:uuid:958f3006-baad-4929-a4de-ff1114824431",
            QueryId::GetAll => "urn:uuid:10b545ea-725c-446d-9b95-8aeb444eddf3",
            QueryId::GetDocuments => "urn:uuid:5c4f972b-d56b-40ac-a5fc-c8ca9b40b9d4",
            QueryId::GetFolders => "urn:uuid:5737b14c-8a1a-4539-b659-e03a34a5e1e4",
            QueryId::GetAssociations => "urn:uuid:a7ae438b-4bc2-4642-93e9-be891f7bb155",
            QueryId::GetDocumentsAndAssociations => "urn:uuid:bab9529a-4a10-40b3-a01f-f68a615d247a",
            QueryId::GetSubmissionSets => "urn:uuid:51224314-5390-4169-9b91-b1980040715a",
            QueryId::GetSubmissionSetAndContents => "urn:uuid:e8e3cb2c-e39c-46b9-99e4-c12f57260b83",
            QueryId::GetFolderAndContents => "urn:uuid:b909a503-523d-4517-8acf-8e5834dfc4c7",
            QueryId::GetFoldersForDocument => "urn:uuid:10cae35a-c7f9-4cf5-b61e-fc3278ffb578",
            QueryId::GetRelatedDocuments => "urn:uuid:d90e5407-b356-4d91-a89f-873917b4b0e6",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            QueryId::FindDocuments => "FindDocuments",
            QueryId::FindDocumentsByReferenceId => "FindDocumentsByReferenceId",
            QueryId::FindSubmissionSets => "FindSubmissionSets",
            QueryId::FindFolders => "FindFolders",
            QueryId::GetAll => "GetAll",
            QueryId::GetDocuments => "GetDocuments",
            QueryId::GetFolders => "GetFolders",
            QueryId::GetAssociations => "GetAssociations",
            QueryId::GetDocumentsAndAssociations => "GetDocumentsAndAssociations",
            QueryId::GetSubmissionSets => "GetSubmissionSets",
            QueryId::GetSubmissionSetAndContents => "GetSubmissionSetAndContents",
            QueryId::GetFolderAndContents => "GetFolderAndContents",
            QueryId::GetFoldersForDocument => "GetFoldersForDocument",
            QueryId::GetRelatedDocuments => "GetRelatedDocuments",
        }
    }

    pub fn from_uuid(id: &str) -> Option<QueryId> {
        let id = id.trim();
        QueryId::ALL
            .into_iter()
            .find(|q| q.uuid().eq_ignore_ascii_case(id))
    }

    /// The query's parameters: (name, required, multiple values).
    fn params(self) -> &'static [(&'static str, bool, bool)] {
        const FIND_DOCUMENTS: &[(&str, bool, bool)] = &[
            ("$XDSDocumentEntryPatientId", true, false),
            ("$XDSDocumentEntryClassCode", false, true),
            ("$XDSDocumentEntryTypeCode", false, true),
            ("$XDSDocumentEntryPracticeSettingCode", false, true),
            ("$XDSDocumentEntryCreationTimeFrom", false, false),
            ("$XDSDocumentEntryCreationTimeTo", false, false),
            ("$XDSDocumentEntryServiceStartTimeFrom", false, false),
            ("$XDSDocumentEntryServiceStartTimeTo", false, false),
            ("$XDSDocumentEntryServiceStopTimeFrom", false, false),
            ("$XDSDocumentEntryServiceStopTimeTo", false, false),
            ("$XDSDocumentEntryHealthcareFacilityTypeCode", false, true),
            ("$XDSDocumentEntryEventCodeList", false, true),
            ("$XDSDocumentEntryConfidentialityCode", false, true),
            ("$XDSDocumentEntryAuthorPerson", false, true),
            ("$XDSDocumentEntryFormatCode", false, true),
            ("$XDSDocumentEntryStatus", true, true),
            ("$XDSDocumentEntryType", false, true),
        ];
        const BY_REFERENCE_ID: &[(&str, bool, bool)] = &[
            ("$XDSDocumentEntryPatientId", true, false),
            ("$XDSDocumentEntryReferenceIdList", true, true),
            ("$XDSDocumentEntryClassCode", false, true),
            ("$XDSDocumentEntryTypeCode", false, true),
            ("$XDSDocumentEntryPracticeSettingCode", false, true),
            ("$XDSDocumentEntryCreationTimeFrom", false, false),
            ("$XDSDocumentEntryCreationTimeTo", false, false),
            ("$XDSDocumentEntryServiceStartTimeFrom", false, false),
            ("$XDSDocumentEntryServiceStartTimeTo", false, false),
            ("$XDSDocumentEntryServiceStopTimeFrom", false, false),
            ("$XDSDocumentEntryServiceStopTimeTo", false, false),
            ("$XDSDocumentEntryHealthcareFacilityTypeCode", false, true),
            ("$XDSDocumentEntryEventCodeList", false, true),
            ("$XDSDocumentEntryConfidentialityCode", false, true),
            ("$XDSDocumentEntryAuthorPerson", false, true),
            ("$XDSDocumentEntryFormatCode", false, true),
            ("$XDSDocumentEntryStatus", true, true),
            ("$XDSDocumentEntryType", false, true),
        ];
        const FIND_SUBMISSION_SETS: &[(&str, bool, bool)] = &[
            ("$XDSSubmissionSetPatientId", true, false),
            ("$XDSSubmissionSetSourceId", false, true),
            ("$XDSSubmissionSetSubmissionTimeFrom", false, false),
            ("$XDSSubmissionSetSubmissionTimeTo", false, false),
            ("$XDSSubmissionSetAuthorPerson", false, false),
            ("$XDSSubmissionSetContentType", false, true),
            ("$XDSSubmissionSetStatus", true, true),
        ];
        const FIND_FOLDERS: &[(&str, bool, bool)] = &[
            ("$XDSFolderPatientId", true, false),
            ("$XDSFolderLastUpdateTimeFrom", false, false),
            ("$XDSFolderLastUpdateTimeTo", false, false),
            ("$XDSFolderCodeList", false, true),
            ("$XDSFolderStatus", true, true),
        ];
        const GET_ALL: &[(&str, bool, bool)] = &[
            ("$patientId", true, false),
            ("$XDSDocumentEntryStatus", true, true),
            ("$XDSSubmissionSetStatus", true, true),
            ("$XDSFolderStatus", true, true),
            ("$XDSDocumentEntryFormatCode", false, true),
            ("$XDSDocumentEntryConfidentialityCode", false, true),
            ("$XDSDocumentEntryType", false, true),
        ];
        const DOCUMENTS: &[(&str, bool, bool)] = &[
            ("$XDSDocumentEntryEntryUUID", false, true),
            ("$XDSDocumentEntryUniqueId", false, true),
            ("$homeCommunityId", false, false),
        ];
        const FOLDERS: &[(&str, bool, bool)] = &[
            ("$XDSFolderEntryUUID", false, true),
            ("$XDSFolderUniqueId", false, true),
            ("$homeCommunityId", false, false),
        ];
        const UUIDS: &[(&str, bool, bool)] =
            &[("$uuid", true, true), ("$homeCommunityId", false, false)];
        const SUBMISSION_SET_AND_CONTENTS: &[(&str, bool, bool)] = &[
            ("$XDSSubmissionSetEntryUUID", false, false),
            ("$XDSSubmissionSetUniqueId", false, false),
            ("$XDSDocumentEntryFormatCode", false, true),
            ("$XDSDocumentEntryConfidentialityCode", false, true),
            ("$XDSDocumentEntryType", false, true),
            ("$homeCommunityId", false, false),
        ];
        const FOLDER_AND_CONTENTS: &[(&str, bool, bool)] = &[
            ("$XDSFolderEntryUUID", false, false),
            ("$XDSFolderUniqueId", false, false),
            ("$XDSDocumentEntryFormatCode", false, true),
            ("$XDSDocumentEntryConfidentialityCode", false, true),
            ("$XDSDocumentEntryType", false, true),
            ("$homeCommunityId", false, false),
        ];
        const ONE_DOCUMENT: &[(&str, bool, bool)] = &[
            ("$XDSDocumentEntryEntryUUID", false, false),
            ("$XDSDocumentEntryUniqueId", false, false),
            ("$homeCommunityId", false, false),
        ];
        const RELATED: &[(&str, bool, bool)] = &[
            ("$XDSDocumentEntryEntryUUID", false, false),
            ("$XDSDocumentEntryUniqueId", false, false),
            ("$AssociationTypes", true, true),
            ("$XDSDocumentEntryType", false, true),
            ("$homeCommunityId", false, false),
        ];
        match self {
            QueryId::FindDocuments => FIND_DOCUMENTS,
            QueryId::FindDocumentsByReferenceId => BY_REFERENCE_ID,
            QueryId::FindSubmissionSets => FIND_SUBMISSION_SETS,
            QueryId::FindFolders => FIND_FOLDERS,
            QueryId::GetAll => GET_ALL,
            QueryId::GetDocuments | QueryId::GetDocumentsAndAssociations => DOCUMENTS,
            QueryId::GetFolders => FOLDERS,
            QueryId::GetAssociations | QueryId::GetSubmissionSets => UUIDS,
            QueryId::GetSubmissionSetAndContents => SUBMISSION_SET_AND_CONTENTS,
            QueryId::GetFolderAndContents => FOLDER_AND_CONTENTS,
            QueryId::GetFoldersForDocument => ONE_DOCUMENT,
            QueryId::GetRelatedDocuments => RELATED,
        }
    }

    /// Exactly one of two parameters must be given (entryUUID or uniqueId).
    fn one_of(self) -> Option<(&'static str, &'static str)> {
        match self {
            QueryId::GetDocuments
            | QueryId::GetDocumentsAndAssociations
            | QueryId::GetFoldersForDocument
            | QueryId::GetRelatedDocuments => {
                Some(("$XDSDocumentEntryEntryUUID", "$XDSDocumentEntryUniqueId"))
            }
            QueryId::GetFolders | QueryId::GetFolderAndContents => {
                Some(("$XDSFolderEntryUUID", "$XDSFolderUniqueId"))
            }
            QueryId::GetSubmissionSetAndContents => {
                Some(("$XDSSubmissionSetEntryUUID", "$XDSSubmissionSetUniqueId"))
            }
            _ => None,
        }
    }
}

/// The Twiin `$targetCommunityIdList` slot (REFERENCE §1): which communities the query is for.
pub const TARGET_COMMUNITIES: &str = "$targetCommunityIdList";

/// Code-valued parameters: several slots of one of them are ANDed, the values of each slot
/// ORed (ITI TF-2a 3.18.4.1.2.3.5).
const CODE_PARAMS: &[&str] = &[
    "$XDSDocumentEntryClassCode",
    "$XDSDocumentEntryTypeCode",
    "$XDSDocumentEntryPracticeSettingCode",
    "$XDSDocumentEntryHealthcareFacilityTypeCode",
    "$XDSDocumentEntryEventCodeList",
    "$XDSDocumentEntryConfidentialityCode",
    "$XDSDocumentEntryFormatCode",
    "$XDSFolderCodeList",
    "$XDSSubmissionSetContentType",
];

/// The parameters of a stored query: each name with the values of each of its slots (a
/// slot's list `('a','b')` unpacked, quotes removed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(BTreeMap<String, Vec<Vec<String>>>);

impl Params {
    pub fn has(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    /// The value of a single-valued parameter.
    pub fn single(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .and_then(|slots| slots.first())
            .and_then(|values| values.first())
            .map(String::as_str)
    }

    /// Every value of every slot of `name` (ORed).
    pub fn values(&self, name: &str) -> Vec<&str> {
        self.0
            .get(name)
            .into_iter()
            .flatten()
            .flatten()
            .map(String::as_str)
            .collect()
    }

    /// A code parameter as an AND of ORs: one list per slot, each `(code, codingScheme)`
    /// from `code^^^scheme` (an empty scheme when the value has none).
    pub fn code_sets(&self, name: &str) -> Vec<Vec<(String, String)>> {
        self.0
            .get(name)
            .into_iter()
            .flatten()
            .map(|slot| slot.iter().map(|v| split_code(v)).collect())
            .collect()
    }

    /// Set a parameter (tests and the core's own queries).
    pub fn insert(&mut self, name: &str, values: Vec<String>) {
        self.0.entry(name.into()).or_default().push(values);
    }
}

/// `code^^^scheme` → (code, scheme).
fn split_code(value: &str) -> (String, String) {
    match value.split_once("^^^") {
        Some((code, scheme)) => (code.to_string(), scheme.to_string()),
        None => (value.to_string(), String::new()),
    }
}

/// A stored query as read from an `AdhocQueryRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredQuery {
    pub id: QueryId,
    pub return_type: ReturnType,
    /// `AdhocQuery/@home` or `$homeCommunityId`: the community the query is for.
    pub home: Option<String>,
    pub params: Params,
    /// `$targetCommunityIdList`: `None` when absent; `Some(empty)` when present but empty.
    pub target_communities: Option<Vec<String>>,
}

impl StoredQuery {
    /// A query with its parameters (tests, and callers building one themselves); unchecked.
    pub fn new(id: QueryId, params: Params) -> StoredQuery {
        StoredQuery {
            id,
            return_type: ReturnType::LeafClass,
            home: None,
            params,
            target_communities: None,
        }
    }

    /// Read a whole `AdhocQueryRequest` document (within [`xml::Limits::DEFAULT`]).
    pub fn from_xml(bytes: &[u8]) -> Result<StoredQuery, RegistryError> {
        let root = xml::parse(bytes).map_err(|e| {
            RegistryError::new(
                codes::REGISTRY_ERROR,
                format!("unreadable request: {e}"),
                "",
            )
        })?;
        StoredQuery::from_element(&root)
    }

    /// Read a `query:AdhocQueryRequest` element (the SOAP Body's child).
    pub fn from_element(request: &Element) -> Result<StoredQuery, RegistryError> {
        let bad = |why: String| RegistryError::new(codes::REGISTRY_ERROR, why, "");
        if !request.is(ns::QUERY, "AdhocQueryRequest") {
            return Err(bad(format!(
                "expected {{{}}}AdhocQueryRequest, got {}",
                ns::QUERY,
                request.expanded_name()
            )));
        }
        let return_type = match request
            .child(ns::QUERY, "ResponseOption")
            .and_then(|o| o.attr("returnType"))
            .map(str::trim)
        {
            None | Some("LeafClass") | Some("LeafClassWithRepositoryItem") => ReturnType::LeafClass,
            Some("ObjectRef") => ReturnType::ObjectRef,
            Some(other) => return Err(bad(format!("returnType {other:?} is not supported"))),
        };
        let adhoc = request
            .child(ns::RIM, "AdhocQuery")
            .ok_or_else(|| bad("no rim:AdhocQuery".into()))?;
        let query_id = adhoc.attr("id").unwrap_or("").trim();
        let id = QueryId::from_uuid(query_id).ok_or_else(|| {
            RegistryError::new(
                codes::UNKNOWN_STORED_QUERY,
                format!("unknown stored query {query_id:?}"),
                query_id,
            )
        })?;
        let mut params = Params::default();
        let mut target_communities = None;
        for slot in adhoc.children_named(ns::RIM, "Slot") {
            let name = slot.attr("name").unwrap_or("").trim();
            let mut values = Vec::new();
            for value in slot
                .children_named(ns::RIM, "ValueList")
                .flat_map(|l| l.children_named(ns::RIM, "Value"))
            {
                let (mut parsed, _) = parse_value(value.trimmed()).map_err(|why| {
                    RegistryError::new(
                        codes::PARAM_NUMBER,
                        format!("parameter {name}: {why}"),
                        name,
                    )
                })?;
                values.append(&mut parsed);
            }
            if name == TARGET_COMMUNITIES {
                target_communities
                    .get_or_insert_with(Vec::new)
                    .extend(values.into_iter().filter(|v| !v.is_empty()));
                continue;
            }
            let Some(&(_, _, multiple)) = id.params().iter().find(|(n, _, _)| *n == name) else {
                continue; // a parameter the query does not define: ignored
            };
            if !multiple && (values.len() > 1 || params.has(name)) {
                return Err(RegistryError::new(
                    codes::PARAM_NUMBER,
                    format!("parameter {name} takes one value"),
                    name,
                ));
            }
            if multiple && params.has(name) && !CODE_PARAMS.contains(&name) {
                return Err(RegistryError::new(
                    codes::PARAM_NUMBER,
                    format!("parameter {name} given in more than one slot"),
                    name,
                ));
            }
            params.insert(name, values);
        }
        for &(name, required, _) in id.params() {
            if required && params.values(name).is_empty() {
                return Err(RegistryError::new(
                    codes::PARAM_NUMBER,
                    format!("required parameter {name} missing"),
                    name,
                ));
            }
        }
        if let Some((a, b)) = id.one_of() {
            let (has_a, has_b) = (!params.values(a).is_empty(), !params.values(b).is_empty());
            if has_a == has_b {
                return Err(RegistryError::new(
                    codes::PARAM_NUMBER,
                    format!("exactly one of {a} and {b} is required"),
                    if has_a { b } else { a },
                ));
            }
        }
        let home = adhoc
            .attr("home")
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .or_else(|| params.single("$homeCommunityId"))
            .map(str::to_string);
        Ok(StoredQuery {
            id,
            return_type,
            home,
            params,
            target_communities,
        })
    }
}

/// One `rim:Value` of a stored-query slot: `'text'` (quotes doubled inside), a list
/// `('a', 'b', 3)`, or a bare token (times and numbers). Returns the values and whether the
/// list syntax was used.
pub fn parse_value(raw: &str) -> Result<(Vec<String>, bool), String> {
    let raw = raw.trim();
    if let Some(inner) = raw.strip_prefix('(') {
        let inner = inner
            .strip_suffix(')')
            .ok_or_else(|| "a list must end with ')'".to_string())?;
        let mut values = Vec::new();
        let mut rest = inner.trim_start();
        while !rest.is_empty() {
            let (value, after) = if rest.starts_with('\'') {
                quoted(rest)?
            } else {
                let end = rest.find(',').unwrap_or(rest.len());
                (rest[..end].trim().to_string(), &rest[end..])
            };
            values.push(value);
            rest = after.trim_start();
            match rest.strip_prefix(',') {
                Some(next) => rest = next.trim_start(),
                None if rest.is_empty() => {}
                None => return Err(format!("unexpected {rest:?} in a list")),
            }
        }
        return Ok((values, true));
    }
    if raw.starts_with('\'') {
        let (value, rest) = quoted(raw)?;
        if !rest.trim().is_empty() {
            return Err(format!("unexpected {:?} after a quoted value", rest.trim()));
        }
        return Ok((vec![value], false));
    }
    Ok((vec![raw.to_string()], false))
}

/// A `'…'` string at the start of `s` (`''` is a quote): the value and what follows.
fn quoted(s: &str) -> Result<(String, &str), String> {
    let body = &s[1..];
    let mut value = String::new();
    let mut chars = body.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '\'' {
            if let Some((_, '\'')) = chars.peek() {
                chars.next();
                value.push('\'');
                continue;
            }
            return Ok((value, &body[i + 1..]));
        }
        value.push(c);
    }
    Err("an unterminated quoted value".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(query: &str, slots: &[(&str, &[&str])]) -> String {
        let mut s = format!(
            r#"<query:AdhocQueryRequest xmlns:query="{}" xmlns:rim="{}"><query:ResponseOption returnComposedObjects="true" returnType="ObjectRef"/><rim:AdhocQuery id="{query}">"#,
            ns::QUERY,
            ns::RIM
        );
        for (name, values) in slots {
            s.push_str(&format!(r#"<rim:Slot name="{name}"><rim:ValueList>"#));
            for v in *values {
                s.push_str(&format!("<rim:Value>{}</rim:Value>", crate::xml::escape(v)));
            }
            s.push_str("</rim:ValueList></rim:Slot>");
        }
        s.push_str("</rim:AdhocQuery></query:AdhocQueryRequest>");
        s
    }

    #[test]
    fn values_lists_and_quotes() {
        assert_eq!(parse_value("'a'").unwrap(), (vec!["a".into()], false));
        assert_eq!(
            parse_value("('a', 'b''c' ,3)").unwrap(),
            (vec!["a".into(), "b'c".into(), "3".into()], true)
        );
        assert_eq!(parse_value("20041225").unwrap().0, ["20041225"]);
        assert_eq!(parse_value("()").unwrap(), (vec![], true));
        assert!(parse_value("('a'").is_err());
        assert!(parse_value("'a").is_err());
        assert!(parse_value("('a' 'b')").is_err());
    }

    #[test]
    fn find_documents_with_codes_anded_and_ored() {
        let xml = request(
            QueryId::FindDocuments.uuid(),
            &[
                (
                    "$XDSDocumentEntryPatientId",
                    &["'999999990^^^&2.16.840.1.113883.2.4.6.3&ISO'"],
                ),
                (
                    "$XDSDocumentEntryStatus",
                    &["('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')"],
                ),
                (
                    "$XDSDocumentEntryEventCodeList",
                    &["('CT^^^1.2.840.10008.2.16.4','MR^^^1.2.840.10008.2.16.4')"],
                ),
                (
                    "$XDSDocumentEntryEventCodeList",
                    &["('CT^^^1.2.840.10008.2.16.4')"],
                ),
                ("$XDSDocumentEntryCreationTimeFrom", &["20200101"]),
            ],
        );
        let q = StoredQuery::from_xml(xml.as_bytes()).unwrap();
        assert_eq!(q.id, QueryId::FindDocuments);
        assert_eq!(q.return_type, ReturnType::ObjectRef);
        assert_eq!(
            q.params.single("$XDSDocumentEntryPatientId"),
            Some("999999990^^^&2.16.840.1.113883.2.4.6.3&ISO")
        );
        let sets = q.params.code_sets("$XDSDocumentEntryEventCodeList");
        assert_eq!(sets.len(), 2);
        assert_eq!(sets[0].len(), 2);
        assert_eq!(sets[0][1], ("MR".into(), "1.2.840.10008.2.16.4".into()));
        assert_eq!(
            q.params.single("$XDSDocumentEntryCreationTimeFrom"),
            Some("20200101")
        );
        assert_eq!(q.target_communities, None);
    }

    #[test]
    fn errors_are_data() {
        let unknown = request("urn:uuid:00000000-0000-0000-0000-000000000000", &[]);
        let e = StoredQuery::from_xml(unknown.as_bytes()).unwrap_err();
        assert_eq!(e.code, codes::UNKNOWN_STORED_QUERY);
        let missing = request(
            QueryId::FindDocuments.uuid(),
            &[("$XDSDocumentEntryPatientId", &["'1'"])],
        );
        let e = StoredQuery::from_xml(missing.as_bytes()).unwrap_err();
        assert_eq!(
            (e.code.as_str(), e.location.as_str()),
            (codes::PARAM_NUMBER, "$XDSDocumentEntryStatus")
        );
        let two = request(
            QueryId::FindDocuments.uuid(),
            &[
                ("$XDSDocumentEntryPatientId", &["('1','2')"]),
                ("$XDSDocumentEntryStatus", &["('x')"]),
            ],
        );
        assert_eq!(
            StoredQuery::from_xml(two.as_bytes()).unwrap_err().code,
            codes::PARAM_NUMBER
        );
        let both = request(
            QueryId::GetDocuments.uuid(),
            &[
                ("$XDSDocumentEntryEntryUUID", &["('urn:uuid:1')"]),
                ("$XDSDocumentEntryUniqueId", &["('1.2')"]),
            ],
        );
        assert_eq!(
            StoredQuery::from_xml(both.as_bytes()).unwrap_err().code,
            codes::PARAM_NUMBER
        );
        let neither = request(QueryId::GetDocuments.uuid(), &[]);
        assert_eq!(
            StoredQuery::from_xml(neither.as_bytes()).unwrap_err().code,
            codes::PARAM_NUMBER
        );
        assert_eq!(
            StoredQuery::from_xml(b"<x/>").unwrap_err().code,
            codes::REGISTRY_ERROR
        );
        assert_eq!(
            StoredQuery::from_xml(b"<x").unwrap_err().code,
            codes::REGISTRY_ERROR
        );
    }

    #[test]
    fn target_communities_absent_empty_or_listed() {
        let base: &[(&str, &[&str])] = &[("$uuid", &["('urn:uuid:1')"])];
        let q = StoredQuery::from_xml(request(QueryId::GetAssociations.uuid(), base).as_bytes())
            .unwrap();
        assert_eq!(q.target_communities, None);
        let mut slots = base.to_vec();
        slots.push((TARGET_COMMUNITIES, &["()"]));
        let q = StoredQuery::from_xml(request(QueryId::GetAssociations.uuid(), &slots).as_bytes())
            .unwrap();
        assert_eq!(q.target_communities, Some(vec![]));
        let mut slots = base.to_vec();
        slots.push((TARGET_COMMUNITIES, &["('urn:oid:1.2','urn:oid:3.4')"]));
        let q = StoredQuery::from_xml(request(QueryId::GetAssociations.uuid(), &slots).as_bytes())
            .unwrap();
        assert_eq!(
            q.target_communities,
            Some(vec!["urn:oid:1.2".into(), "urn:oid:3.4".into()])
        );
    }
}
