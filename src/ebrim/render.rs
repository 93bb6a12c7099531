//! `query:AdhocQueryResponse` written out (ebRS 3.0 query.xsd, rim.xsd): the objects as
//! LeafClass (ExtrinsicObject, RegistryPackage, Association, each with its Slots, Name,
//! Classifications and ExternalIdentifiers in the schema's order) or as ObjectRefs, then the
//! RegistryErrorList. Every value goes through [`crate::xml::escape`].

use super::model::{
    Association, Classification, ExternalIdentifier, ObjectKind, QueryResponse, RegistryObject,
    ReturnType, Severity, Slot,
};
use super::ns;
use crate::xml::escape;
use std::fmt::Write;

/// The whole `query:AdhocQueryResponse` element, namespaces declared on it (the SOAP front
/// puts it in the Body as it is).
pub fn adhoc_query_response(response: &QueryResponse) -> String {
    let mut out = String::with_capacity(4096);
    let _ = write!(
        out,
        r#"<query:AdhocQueryResponse xmlns:query="{}" xmlns:rim="{}" xmlns:rs="{}" status="{}">"#,
        ns::QUERY,
        ns::RIM,
        ns::RS,
        response.status.urn()
    );
    if !response.errors.is_empty() {
        let highest = if response
            .errors
            .iter()
            .any(|e| e.severity == Severity::Error)
        {
            Severity::Error
        } else {
            Severity::Warning
        };
        let _ = write!(
            out,
            r#"<rs:RegistryErrorList highestSeverity="{}">"#,
            highest.urn()
        );
        for e in &response.errors {
            let _ = write!(
                out,
                r#"<rs:RegistryError errorCode="{}" codeContext="{}" severity="{}""#,
                escape(&e.code),
                escape(&e.context),
                e.severity.urn()
            );
            if !e.location.is_empty() {
                let _ = write!(out, r#" location="{}""#, escape(&e.location));
            }
            out.push_str("/>");
        }
        out.push_str("</rs:RegistryErrorList>");
    }
    out.push_str("<rim:RegistryObjectList>");
    let home = response.home.as_deref();
    match response.return_type {
        ReturnType::ObjectRef => {
            for id in response.ids() {
                let _ = write!(
                    out,
                    r#"<rim:ObjectRef id="{}"{}/>"#,
                    escape(id),
                    home_attr(home)
                );
            }
        }
        ReturnType::LeafClass => {
            for object in &response.objects {
                write_object(&mut out, object, home);
            }
            for association in &response.associations {
                write_association(&mut out, association, home);
            }
        }
    }
    out.push_str("</rim:RegistryObjectList></query:AdhocQueryResponse>");
    out
}

fn home_attr(home: Option<&str>) -> String {
    match home {
        Some(h) => format!(r#" home="{}""#, escape(h)),
        None => String::new(),
    }
}

fn write_object(out: &mut String, o: &RegistryObject, home: Option<&str>) {
    let element = match o.kind {
        ObjectKind::DocumentEntry => "rim:ExtrinsicObject",
        ObjectKind::SubmissionSet | ObjectKind::Folder => "rim:RegistryPackage",
    };
    let object_type = match o.kind {
        ObjectKind::DocumentEntry => o.object_type.as_deref().unwrap_or(ns::STABLE_DOCUMENT),
        _ => ns::OBJECT_TYPE_PACKAGE,
    };
    let _ = write!(
        out,
        r#"<{element} id="{}"{} lid="{}" objectType="{}" status="{}""#,
        escape(&o.id),
        home_attr(home),
        escape(&o.lid),
        escape(object_type),
        o.status.urn()
    );
    if let (ObjectKind::DocumentEntry, Some(mime)) = (o.kind, &o.mime_type) {
        let _ = write!(out, r#" mimeType="{}""#, escape(mime));
    }
    out.push('>');
    write_slots(out, &o.slots);
    write_name(out, "rim:Name", o.name.as_deref());
    write_name(out, "rim:Description", o.description.as_deref());
    out.push_str(r#"<rim:VersionInfo versionName="1"/>"#);
    for c in &o.classifications {
        write_classification(out, c, &o.id, home);
    }
    for e in &o.external_identifiers {
        write_external_id(out, e, &o.id, home);
    }
    let _ = write!(out, "</{element}>");
}

fn write_association(out: &mut String, a: &Association, home: Option<&str>) {
    let _ = write!(
        out,
        r#"<rim:Association id="{}"{} objectType="{}" status="{}" associationType="{}" sourceObject="{}" targetObject="{}">"#,
        escape(&a.id),
        home_attr(home),
        ns::OBJECT_TYPE_ASSOCIATION,
        a.status.urn(),
        escape(&a.assoc_type),
        escape(&a.source),
        escape(&a.target)
    );
    write_slots(out, &a.slots);
    out.push_str("</rim:Association>");
}

fn write_classification(out: &mut String, c: &Classification, object: &str, home: Option<&str>) {
    let _ = write!(
        out,
        r#"<rim:Classification id="{}"{} objectType="{}""#,
        escape(&c.id),
        home_attr(home),
        ns::OBJECT_TYPE_CLASSIFICATION
    );
    if let Some(scheme) = &c.scheme {
        let _ = write!(out, r#" classificationScheme="{}""#, escape(scheme));
    }
    let _ = write!(out, r#" classifiedObject="{}""#, escape(object));
    if let Some(node) = &c.classification_node {
        let _ = write!(out, r#" classificationNode="{}""#, escape(node));
    }
    if c.scheme.is_some() {
        let _ = write!(out, r#" nodeRepresentation="{}""#, escape(&c.node));
    }
    out.push('>');
    write_slots(out, &c.slots);
    write_name(out, "rim:Name", c.name.as_deref());
    out.push_str("</rim:Classification>");
}

fn write_external_id(out: &mut String, e: &ExternalIdentifier, object: &str, home: Option<&str>) {
    let _ = write!(
        out,
        r#"<rim:ExternalIdentifier id="{}"{} objectType="{}" registryObject="{}" identificationScheme="{}" value="{}">"#,
        escape(&e.id),
        home_attr(home),
        ns::OBJECT_TYPE_EXTERNAL_ID,
        escape(object),
        escape(&e.scheme),
        escape(&e.value)
    );
    write_name(out, "rim:Name", Some(&e.name));
    out.push_str("</rim:ExternalIdentifier>");
}

pub(super) fn write_slots(out: &mut String, slots: &[Slot]) {
    for slot in slots {
        let _ = write!(
            out,
            r#"<rim:Slot name="{}"><rim:ValueList>"#,
            escape(&slot.name)
        );
        for v in &slot.values {
            let _ = write!(out, "<rim:Value>{}</rim:Value>", escape(v));
        }
        out.push_str("</rim:ValueList></rim:Slot>");
    }
}

fn write_name(out: &mut String, element: &str, value: Option<&str>) {
    if let Some(v) = value {
        let _ = write!(
            out,
            r#"<{element}><rim:LocalizedString value="{}"/></{element}>"#,
            escape(v)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::model::*;
    use super::*;

    #[test]
    fn escapes_and_marks_home() {
        let object = RegistryObject {
            kind: ObjectKind::DocumentEntry,
            id: "urn:uuid:1".into(),
            lid: "urn:uuid:1".into(),
            object_type: None,
            mime_type: Some("application/dicom".into()),
            status: Status::Approved,
            name: Some("a<b & \"c\"".into()),
            description: None,
            slots: vec![Slot::new("creationTime", ["20250101"])],
            classifications: vec![],
            external_identifiers: vec![],
        };
        let mut r = QueryResponse::found(vec![object], vec![], ReturnType::LeafClass);
        r.home = Some("urn:oid:1.2".into());
        let xml = adhoc_query_response(&r);
        assert!(
            xml.contains(r#"value="a&lt;b &amp; &quot;c&quot;""#),
            "{xml}"
        );
        assert!(xml.contains(r#"home="urn:oid:1.2""#));
        crate::xml::parse(xml.as_bytes()).unwrap();
        r.return_type = ReturnType::ObjectRef;
        let xml = adhoc_query_response(&r);
        assert!(xml.contains(r#"<rim:ObjectRef id="urn:uuid:1" home="urn:oid:1.2"/>"#));
    }
}
