//! The other direction, for our initiating gateway: a `query:AdhocQueryResponse` read back
//! into a [`QueryResponse`] (ebRS 3.0 query.xsd, rim.xsd; ITI TF-2b 3.38.4.2: the answer of
//! an ITI-38 Cross Gateway Query), and a `query:AdhocQueryRequest` written
//! ([`adhoc_query_request`]). DocumentEntries (`rim:ExtrinsicObject`) are read whole; other
//! objects (SubmissionSets, Associations, ObjectRefs) are skipped: the initiating side only
//! needs the documents.

use super::model::{
    Classification, ExternalIdentifier, ObjectKind, QueryResponse, RegistryError, RegistryObject,
    ResponseStatus, ReturnType, Severity, Slot, Status,
};
use super::ns;
use super::QueryId;
use crate::xml::Element;
use std::fmt::Write;

/// Why an answer could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ResponseError {
    #[error("not a query:AdhocQueryResponse but {0}")]
    NotAResponse(String),
    #[error("unknown response status {0:?}")]
    Status(String),
}

/// Read a `query:AdhocQueryResponse`: its status, its RegistryErrors and its DocumentEntries
/// (LeafClass); `home` is the homeCommunityId the first DocumentEntry carries.
pub fn adhoc_query_response(element: &Element) -> Result<QueryResponse, ResponseError> {
    if !element.is(ns::QUERY, "AdhocQueryResponse") {
        return Err(ResponseError::NotAResponse(element.expanded_name()));
    }
    let raw_status = element.attr("status").unwrap_or_default().trim();
    let status = match raw_status {
        s if s == ResponseStatus::Success.urn() => ResponseStatus::Success,
        s if s == ResponseStatus::PartialSuccess.urn() => ResponseStatus::PartialSuccess,
        s if s == ResponseStatus::Failure.urn() => ResponseStatus::Failure,
        other => return Err(ResponseError::Status(other.to_string())),
    };
    let errors = element
        .child(ns::RS, "RegistryErrorList")
        .map(|list| {
            list.children_named(ns::RS, "RegistryError")
                .map(|e| RegistryError {
                    code: e.attr("errorCode").unwrap_or_default().to_string(),
                    context: e.attr("codeContext").unwrap_or_default().to_string(),
                    location: e.attr("location").unwrap_or_default().to_string(),
                    severity: match e.attr("severity") {
                        Some(s) if s == Severity::Warning.urn() => Severity::Warning,
                        _ => Severity::Error,
                    },
                })
                .collect()
        })
        .unwrap_or_default();
    let mut home = None;
    let objects = element
        .child(ns::RIM, "RegistryObjectList")
        .map(|list| {
            list.children_named(ns::RIM, "ExtrinsicObject")
                .map(|o| {
                    if home.is_none() {
                        home = o.attr("home").map(str::to_string);
                    }
                    document_entry(o)
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(QueryResponse {
        status,
        objects,
        associations: Vec::new(),
        errors,
        return_type: ReturnType::LeafClass,
        home,
    })
}

fn document_entry(o: &Element) -> RegistryObject {
    let id = o.attr("id").unwrap_or_default().to_string();
    RegistryObject {
        kind: ObjectKind::DocumentEntry,
        lid: o.attr("lid").map_or_else(|| id.clone(), str::to_string),
        id,
        object_type: o.attr("objectType").map(str::to_string),
        mime_type: o.attr("mimeType").map(str::to_string),
        status: o
            .attr("status")
            .and_then(Status::from_urn)
            .unwrap_or(Status::Approved),
        name: localized(o, "Name"),
        description: localized(o, "Description"),
        slots: slots(o),
        classifications: o
            .children_named(ns::RIM, "Classification")
            .map(|c| Classification {
                id: c.attr("id").unwrap_or_default().to_string(),
                scheme: c.attr("classificationScheme").map(str::to_string),
                classification_node: c.attr("classificationNode").map(str::to_string),
                node: c.attr("nodeRepresentation").unwrap_or_default().to_string(),
                name: localized(c, "Name"),
                slots: slots(c),
            })
            .collect(),
        external_identifiers: o
            .children_named(ns::RIM, "ExternalIdentifier")
            .map(|e| ExternalIdentifier {
                id: e.attr("id").unwrap_or_default().to_string(),
                scheme: e
                    .attr("identificationScheme")
                    .unwrap_or_default()
                    .to_string(),
                value: e.attr("value").unwrap_or_default().to_string(),
                name: localized(e, "Name").unwrap_or_default(),
            })
            .collect(),
    }
}

fn slots(e: &Element) -> Vec<Slot> {
    e.children_named(ns::RIM, "Slot")
        .map(|s| Slot {
            name: s.attr("name").unwrap_or_default().to_string(),
            values: s
                .child(ns::RIM, "ValueList")
                .map(|list| {
                    list.children_named(ns::RIM, "Value")
                        .map(|v| v.trimmed().to_string())
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect()
}

/// The first `rim:LocalizedString` value of child `name` (Name, Description).
fn localized(e: &Element, name: &str) -> Option<String> {
    e.child(ns::RIM, name)?
        .child(ns::RIM, "LocalizedString")?
        .attr("value")
        .map(str::to_string)
}

/// A `query:AdhocQueryRequest` for stored query `id` with `slots` (each value as it goes on
/// the wire: `'single'` or `('a','b')`, ITI TF-2a 3.18.4.1.2.3.5), LeafClass, namespaces
/// declared on it.
pub fn adhoc_query_request(id: QueryId, slots: &[Slot]) -> String {
    let mut out = String::with_capacity(1024);
    let _ = write!(
        out,
        r#"<query:AdhocQueryRequest xmlns:query="{}" xmlns:rim="{}"><query:ResponseOption returnComposedObjects="true" returnType="LeafClass"/><rim:AdhocQuery id="{}">"#,
        ns::QUERY,
        ns::RIM,
        id.uuid()
    );
    super::render::write_slots(&mut out, slots);
    out.push_str("</rim:AdhocQuery></query:AdhocQueryRequest>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ebrim::{render, StoredQuery};

    fn entry() -> RegistryObject {
        RegistryObject {
            kind: ObjectKind::DocumentEntry,
            id: "urn:uuid:1".into(),
            lid: "urn:uuid:1".into(),
            object_type: Some(ns::STABLE_DOCUMENT.into()),
            mime_type: Some("application/dicom".into()),
            status: Status::Approved,
            name: Some("CT thorax".into()),
            description: None,
            slots: vec![
                Slot::new("repositoryUniqueId", ["1.2.3"]),
                Slot::new(
                    ns::REFERENCE_ID_LIST,
                    ["1.2.840.1^^^^urn:ihe:iti:xds:2013:studyInstanceUID"],
                ),
            ],
            classifications: Vec::new(),
            external_identifiers: vec![ExternalIdentifier {
                id: "urn:uuid:2".into(),
                scheme: ns::DE_UNIQUE_ID.into(),
                value: "1.2.840.9".into(),
                name: "XDSDocumentEntry.uniqueId".into(),
            }],
        }
    }

    /// What our responding side writes, our initiating side reads back unchanged.
    #[test]
    fn reads_back_what_the_registry_renders() {
        let mut sent = QueryResponse::found(vec![entry()], Vec::new(), ReturnType::LeafClass);
        sent.home = Some("urn:oid:1.2.3.4".into());
        let xml = render::adhoc_query_response(&sent);
        let read = adhoc_query_response(&crate::xml::parse(xml.as_bytes()).unwrap()).unwrap();
        assert_eq!(read.status, ResponseStatus::Success);
        assert_eq!(read.home.as_deref(), Some("urn:oid:1.2.3.4"));
        assert_eq!(read.objects, vec![entry()]);
    }

    /// The request we write is one our registry's reader accepts, parameters intact.
    #[test]
    fn the_request_reads_as_a_stored_query() {
        let xml = adhoc_query_request(
            QueryId::FindDocuments,
            &[
                Slot::new(
                    "$XDSDocumentEntryPatientId",
                    ["'999999990^^^&2.16.840.1.113883.2.4.6.3&ISO'"],
                ),
                Slot::new(
                    "$XDSDocumentEntryStatus",
                    [format!("('{}')", ns::STATUS_APPROVED)],
                ),
            ],
        );
        let query = StoredQuery::from_xml(xml.as_bytes()).unwrap();
        assert_eq!(query.id, QueryId::FindDocuments);
        assert_eq!(
            query.params.single("$XDSDocumentEntryPatientId"),
            Some("999999990^^^&2.16.840.1.113883.2.4.6.3&ISO")
        );
    }
}
