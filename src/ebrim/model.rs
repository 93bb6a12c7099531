//! The ebRIM 3.0 objects a registry answers with (OASIS regrep-rim-3.0, as ITI TF-3 4.2.3
//! maps XDS metadata onto them), kept generic: a DocumentEntry is an `ExtrinsicObject`, a
//! SubmissionSet or Folder a `RegistryPackage`, each with its Slots, Classifications and
//! ExternalIdentifiers in document order. The registry stores them as they are (serde JSON)
//! and the stored queries read them through the accessors here.

use super::ns;
use serde::{Deserialize, Serialize};

/// `rim:Slot`: a name with its values, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    pub name: String,
    pub values: Vec<String>,
}

impl Slot {
    pub fn new(name: &str, values: impl IntoIterator<Item = impl Into<String>>) -> Slot {
        Slot {
            name: name.into(),
            values: values.into_iter().map(Into::into).collect(),
        }
    }
}

/// `rim:Classification`: a coded value (`scheme` + `node` = the code, the `codingScheme` slot,
/// the display name), an author (slots, empty node), or the SubmissionSet / Folder marker
/// (`classification_node`, no scheme).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Classification {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classification_node: Option<String>,
    #[serde(default)]
    pub node: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub slots: Vec<Slot>,
}

impl Classification {
    /// A coded value: `code` in `coding_scheme`, shown as `display`.
    pub fn code(id: String, scheme: &str, code: &Code) -> Classification {
        Classification {
            id,
            scheme: Some(scheme.into()),
            node: code.code.clone(),
            name: Some(code.display.clone()),
            slots: vec![Slot::new("codingScheme", [code.scheme.clone()])],
            ..Default::default()
        }
    }

    /// The `codingScheme` slot's value.
    pub fn coding_scheme(&self) -> Option<&str> {
        self.slots
            .iter()
            .find(|s| s.name == "codingScheme")
            .and_then(|s| s.values.first())
            .map(String::as_str)
    }
}

/// A code with its coding scheme and display name (XDS "Code" attributes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Code {
    pub code: String,
    pub scheme: String,
    pub display: String,
}

impl Code {
    pub fn new(code: &str, scheme: &str, display: &str) -> Code {
        Code {
            code: code.into(),
            scheme: scheme.into(),
            display: display.into(),
        }
    }
}

/// `rim:ExternalIdentifier`: patientId, uniqueId, sourceId.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalIdentifier {
    pub id: String,
    pub scheme: String,
    pub value: String,
    pub name: String,
}

/// Which XDS object a registry object is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ObjectKind {
    DocumentEntry,
    SubmissionSet,
    Folder,
}

impl ObjectKind {
    pub fn name(self) -> &'static str {
        match self {
            ObjectKind::DocumentEntry => "DocumentEntry",
            ObjectKind::SubmissionSet => "SubmissionSet",
            ObjectKind::Folder => "Folder",
        }
    }

    pub fn from_name(name: &str) -> Option<ObjectKind> {
        [
            ObjectKind::DocumentEntry,
            ObjectKind::SubmissionSet,
            ObjectKind::Folder,
        ]
        .into_iter()
        .find(|k| k.name() == name)
    }
}

/// availabilityStatus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    Approved,
    Deprecated,
}

impl Status {
    pub fn urn(self) -> &'static str {
        match self {
            Status::Approved => ns::STATUS_APPROVED,
            Status::Deprecated => ns::STATUS_DEPRECATED,
        }
    }

    pub fn from_urn(urn: &str) -> Option<Status> {
        match urn {
            ns::STATUS_APPROVED => Some(Status::Approved),
            ns::STATUS_DEPRECATED => Some(Status::Deprecated),
            _ => None,
        }
    }
}

/// A DocumentEntry (`rim:ExtrinsicObject`), SubmissionSet or Folder (`rim:RegistryPackage`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryObject {
    pub kind: ObjectKind,
    /// entryUUID, `urn:uuid:…`.
    pub id: String,
    /// The logical id (the entryUUID of the first version).
    pub lid: String,
    /// DocumentEntry objectType: stable ([`ns::STABLE_DOCUMENT`]) for everything we publish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub slots: Vec<Slot>,
    #[serde(default)]
    pub classifications: Vec<Classification>,
    #[serde(default)]
    pub external_identifiers: Vec<ExternalIdentifier>,
}

impl RegistryObject {
    /// The values of slot `name` (empty when absent).
    pub fn slot(&self, name: &str) -> &[String] {
        self.slots
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.values.as_slice())
            .unwrap_or(&[])
    }

    /// The first value of slot `name`.
    pub fn slot_value(&self, name: &str) -> Option<&str> {
        self.slot(name).first().map(String::as_str)
    }

    /// The value of the external identifier of `scheme`.
    pub fn external_id(&self, scheme: &str) -> Option<&str> {
        self.external_identifiers
            .iter()
            .find(|e| e.scheme == scheme)
            .map(|e| e.value.as_str())
    }

    /// The codes classified under `scheme`, as `(code, codingScheme)`.
    pub fn codes(&self, scheme: &str) -> Vec<(&str, &str)> {
        self.classifications
            .iter()
            .filter(|c| c.scheme.as_deref() == Some(scheme))
            .map(|c| (c.node.as_str(), c.coding_scheme().unwrap_or("")))
            .collect()
    }

    /// The author classifications' slot `name` values (authorPerson, authorInstitution).
    pub fn author_values(&self, author_scheme: &str, name: &str) -> Vec<&str> {
        self.classifications
            .iter()
            .filter(|c| c.scheme.as_deref() == Some(author_scheme))
            .flat_map(|c| c.slots.iter().filter(|s| s.name == name))
            .flat_map(|s| s.values.iter().map(String::as_str))
            .collect()
    }

    /// The patientId (XDS CX form) of this object.
    pub fn patient_id(&self) -> Option<&str> {
        self.external_id(match self.kind {
            ObjectKind::DocumentEntry => ns::DE_PATIENT_ID,
            ObjectKind::SubmissionSet => ns::SS_PATIENT_ID,
            ObjectKind::Folder => ns::FOL_PATIENT_ID,
        })
    }

    /// The uniqueId of this object.
    pub fn unique_id(&self) -> Option<&str> {
        self.external_id(match self.kind {
            ObjectKind::DocumentEntry => ns::DE_UNIQUE_ID,
            ObjectKind::SubmissionSet => ns::SS_UNIQUE_ID,
            ObjectKind::Folder => ns::FOL_UNIQUE_ID,
        })
    }
}

/// `rim:Association` (HasMember, RPLC, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Association {
    pub id: String,
    /// `urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember`, `urn:ihe:iti:2007:AssociationType:RPLC`, …
    pub assoc_type: String,
    pub source: String,
    pub target: String,
    pub status: Status,
    #[serde(default)]
    pub slots: Vec<Slot>,
}

/// Severity of a `rs:RegistryError`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

impl Severity {
    pub fn urn(self) -> &'static str {
        match self {
            Severity::Error => "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error",
            Severity::Warning => "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Warning",
        }
    }
}

/// One `rs:RegistryError` (ITI TF-3 Table 4.2.4.1-2 codes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryError {
    /// `XDSUnknownStoredQuery`, `XDSStoredQueryParamNumber`, `XDSRegistryError`,
    /// `XDSUnknownCommunity`, …
    pub code: String,
    /// Readable context (never patient data beyond what the request named).
    pub context: String,
    /// Where: the parameter, the community id.
    pub location: String,
    pub severity: Severity,
}

impl RegistryError {
    pub fn new(code: &str, context: impl Into<String>, location: impl Into<String>) -> Self {
        RegistryError {
            code: code.into(),
            context: context.into(),
            location: location.into(),
            severity: Severity::Error,
        }
    }
}

/// The error codes of ITI TF-3 Table 4.2.4.1-2 that the stored queries use.
pub mod codes {
    pub const UNKNOWN_STORED_QUERY: &str = "XDSUnknownStoredQuery";
    pub const PARAM_NUMBER: &str = "XDSStoredQueryParamNumber";
    pub const REGISTRY_ERROR: &str = "XDSRegistryError";
    pub const UNKNOWN_COMMUNITY: &str = "XDSUnknownCommunity";
    pub const UNKNOWN_PATIENT_ID: &str = "XDSUnknownPatientId";
    pub const TOO_MANY_RESULTS: &str = "XDSTooManyResults";
}

/// What the AdhocQueryResponse returns: full objects or references.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReturnType {
    #[default]
    LeafClass,
    ObjectRef,
}

/// The response status (ebRS 3.0; PartialSuccess is IHE's, ITI TF-3 4.2.4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseStatus {
    Success,
    PartialSuccess,
    Failure,
}

impl ResponseStatus {
    pub fn urn(self) -> &'static str {
        match self {
            ResponseStatus::Success => "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success",
            ResponseStatus::PartialSuccess => "urn:ihe:iti:2007:ResponseStatusType:PartialSuccess",
            ResponseStatus::Failure => "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure",
        }
    }
}

/// An AdhocQueryResponse before rendering: the objects and associations found, the errors,
/// how to return them, and the homeCommunityId to put on every object (ITI-38; `None` for
/// ITI-18).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryResponse {
    pub status: ResponseStatus,
    pub objects: Vec<RegistryObject>,
    pub associations: Vec<Association>,
    pub errors: Vec<RegistryError>,
    pub return_type: ReturnType,
    pub home: Option<String>,
}

impl QueryResponse {
    /// Objects found, no errors: Success.
    pub fn found(
        objects: Vec<RegistryObject>,
        associations: Vec<Association>,
        return_type: ReturnType,
    ) -> QueryResponse {
        QueryResponse {
            status: ResponseStatus::Success,
            objects,
            associations,
            errors: Vec::new(),
            return_type,
            home: None,
        }
    }

    /// Nothing found, for these errors: Failure.
    pub fn failure(errors: Vec<RegistryError>) -> QueryResponse {
        QueryResponse {
            status: ResponseStatus::Failure,
            objects: Vec::new(),
            associations: Vec::new(),
            errors,
            return_type: ReturnType::LeafClass,
            home: None,
        }
    }

    /// Empty Success (a patient with no entries, or one whose consent refused).
    pub fn empty(return_type: ReturnType) -> QueryResponse {
        QueryResponse::found(Vec::new(), Vec::new(), return_type)
    }

    /// The ids of every object and association, in answer order (ObjectRef rendering).
    pub fn ids(&self) -> Vec<&str> {
        self.objects
            .iter()
            .map(|o| o.id.as_str())
            .chain(self.associations.iter().map(|a| a.id.as_str()))
            .collect()
    }
}
