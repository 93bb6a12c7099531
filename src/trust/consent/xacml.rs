//! The closed question's messages: an `XACMLAuthzDecisionQuery` (SAML 2.0 profile of XACML
//! v2.0, §5 "XACMLAuthzDecisionQuery") carrying an XACML 2.0 context `<Request>` (XACML 2.0
//! core §6.1), in a SOAP 1.2 envelope (SOAP 1.2 part 1 §5) with WS-Addressing headers; the
//! answer, a `samlp:Response` with an assertion whose `XACMLAuthzDecisionStatement` carries
//! the XACML context `<Response>` (profile §4.1; XACML 2.0 core §6.11 Decision); and SOAP 1.2
//! faults. Both directions are here: the client writes queries and reads responses, the
//! simulator reads queries and writes responses.
//!
//! The attribute identifiers and HL7 data types follow the Mitz/OTV attribute set (as in the
//! XUA assertion, REFERENCE §2): BSN as HL7 `II` under OID 2.16.840.1.113883.2.4.6.3, URA under
//! 2.16.528.1.1007.3.3, UZI under 2.16.528.1.1007.3.1, role as HL7 `CV` in RoleCodeNL
//! (2.16.840.1.113883.2.4.15.111), facility type in 2.16.840.1.113883.2.4.15.1060, purpose of
//! use in HL7 PurposeOfUse (2.16.840.1.113883.1.11.20448).

use super::ConsentDecision;
use crate::xml::{self, escape, Element, XmlError};

pub const SOAP12: &str = "http://www.w3.org/2003/05/soap-envelope";
pub const SOAP11: &str = "http://schemas.xmlsoap.org/soap/envelope/";
pub const WSA: &str = "http://www.w3.org/2005/08/addressing";
pub const SAML: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
pub const SAMLP: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
/// SAML 2.0 profile of XACML v2.0, protocol and assertion schemas.
pub const XACML_SAMLP: &str = "urn:oasis:names:tc:xacml:2.0:profile:saml2.0:v2:schema:protocol";
pub const XACML_SAML: &str = "urn:oasis:names:tc:xacml:2.0:profile:saml2.0:v2:schema:assertion";
/// XACML 2.0 context schema.
pub const XACML_CONTEXT: &str = "urn:oasis:names:tc:xacml:2.0:context:schema:os";
/// XACML 3.0 core schema: Mitz's production interface carries XACML 3.0 `<Response>`s; the
/// decision reader accepts either.
pub const XACML3: &str = "urn:oasis:names:tc:xacml:3.0:core:schema:wd-17";
pub const HL7: &str = "urn:hl7-org:v3";
pub const XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";

/// WS-Addressing actions of the closed question, as Mitz clients send them.
pub const ACTION_QUERY: &str = "XACMLAuthorizationDecisionQueryRequest";
pub const ACTION_RESPONSE: &str = "XACMLAuthorizationDecisionQueryResponse";

pub const OID_BSN: &str = "2.16.840.1.113883.2.4.6.3";
pub const OID_URA: &str = "2.16.528.1.1007.3.3";
pub const OID_UZI: &str = "2.16.528.1.1007.3.1";
pub const OID_ROLE: &str = "2.16.840.1.113883.2.4.15.111";
pub const OID_FACILITY_TYPE: &str = "2.16.840.1.113883.2.4.15.1060";
pub const OID_PURPOSE_OF_USE: &str = "2.16.840.1.113883.1.11.20448";

const SUBJECT_CATEGORY: &str = "urn:oasis:names:tc:xacml:1.0:subject-category:access-subject";
const ATTR_PROVIDER: &str = "urn:ihe:iti:xua:2017:subject:provider-identifier";
const ATTR_ROLE: &str = "urn:oasis:names:tc:xacml:2.0:subject:role";
const ATTR_INSTITUTION: &str = "urn:nl:otv:names:tc:1.0:subject:provider-institution";
/// The patient, as IHE XUA and Mitz name it; XACML 2.0 core's own `1.0:resource:resource-id`
/// is accepted on reading.
const ATTR_RESOURCE_ID: &str = "urn:oasis:names:tc:xacml:2.0:resource:resource-id";
const ATTR_RESOURCE_ID_1: &str = "urn:oasis:names:tc:xacml:1.0:resource:resource-id";
const ATTR_FACILITY_TYPE: &str =
    "urn:ihe:iti:appc:2016:document-entry:healthcare-facility-type-code";
const ATTR_AUTHOR_INSTITUTION: &str = "urn:ihe:iti:appc:2016:author-institution:id";
const ATTR_PURPOSE: &str = "urn:oasis:names:tc:xspa:1.0:subject:purposeofuse";
/// The scope of a resource request (XACML 2.0 multiple resource profile §2.1.1):
/// `Descendants` asks one decision per resource under the patient, here per data holder.
const ATTR_SCOPE: &str = "urn:oasis:names:tc:xacml:2.0:resource:scope";
const SCOPE_DESCENDANTS: &str = "Descendants";
const TYPE_STRING: &str = "http://www.w3.org/2001/XMLSchema#string";
const TYPE_II: &str = "urn:hl7-org:v3#II";
const TYPE_CV: &str = "urn:hl7-org:v3#CV";

const STATUS_SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";
const XACML_STATUS_OK: &str = "urn:oasis:names:tc:xacml:1.0:status:ok";
const XACML_STATUS_ERROR: &str = "urn:oasis:names:tc:xacml:1.0:status:processing-error";

#[derive(Debug, thiserror::Error)]
pub enum XacmlError {
    #[error(transparent)]
    Xml(#[from] XmlError),
    #[error("not a SOAP 1.2 envelope (root {0})")]
    NotSoap12(String),
    #[error("SOAP envelope without a Body")]
    NoBody,
    #[error("SOAP fault {code}: {reason}")]
    Fault { code: String, reason: String },
    #[error("header block {0} must be understood and is not")]
    MustUnderstand(String),
    #[error("no XACMLAuthzDecisionQuery in the SOAP body")]
    NoQuery,
    #[error("bad query: {0}")]
    BadQuery(String),
    #[error("SAML status {0}")]
    Status(String),
    #[error("answer to query {got:?}, asked {asked:?}")]
    InResponseTo { asked: String, got: String },
    #[error("no XACML Decision in the answer")]
    NoDecision,
    #[error("unknown XACML Decision {0:?}")]
    BadDecision(String),
}

/// The SOAP 1.2 fault codes (SOAP 1.2 part 1 §5.4.6) and their HTTP status (part 2 §7.5.2.2,
/// table 20).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultCode {
    VersionMismatch,
    MustUnderstand,
    Sender,
    Receiver,
}

impl FaultCode {
    pub fn name(self) -> &'static str {
        match self {
            FaultCode::VersionMismatch => "VersionMismatch",
            FaultCode::MustUnderstand => "MustUnderstand",
            FaultCode::Sender => "Sender",
            FaultCode::Receiver => "Receiver",
        }
    }

    /// `env:Sender` → 400 Bad Request; every other fault → 500 Internal Server Error.
    pub fn http_status(self) -> u16 {
        match self {
            FaultCode::Sender => 400,
            _ => 500,
        }
    }
}

impl XacmlError {
    /// The fault a receiver of a bad query answers with.
    pub fn fault_code(&self) -> FaultCode {
        match self {
            XacmlError::NotSoap12(_) => FaultCode::VersionMismatch,
            XacmlError::MustUnderstand(_) => FaultCode::MustUnderstand,
            _ => FaultCode::Sender,
        }
    }
}

/// The closed question: may the requester see data of this patient, held by us? Or, with
/// `open`, the open question: where (at which data holders) may the requester find data of
/// this patient (REFERENCE §2)? The open question is the closed one without a data holder
/// and with the resource scope `Descendants` (XACML 2.0 multiple resource profile §2.1.1):
/// its answer carries one `Result` per data holder, named by its URA in `ResourceId`
/// (XACML 2.0 core §6.10).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Question {
    /// The open question (where), not the closed one (may).
    pub open: bool,
    /// SAML request ID (an NCName), echoed as `InResponseTo`.
    pub id: String,
    /// WS-Addressing MessageID, echoed as `RelatesTo`.
    pub message_id: String,
    /// Patient BSN (resource-id).
    pub bsn: String,
    /// Requesting organisation (URA), `subject:provider-institution`.
    pub requester_ura: String,
    /// Requesting professional (UZI), `subject:provider-identifier`.
    pub provider_uzi: String,
    /// RoleCodeNL code, `subject:role`.
    pub role: String,
    /// Purpose of use (environment).
    pub purpose_of_use: String,
    /// Facility type of the data holder (e.g. `Z3`, ziekenhuis).
    pub facility_type: String,
    /// The data holder's URA (`author-institution:id`), when known.
    pub custodian_ura: String,
}

fn ii(attribute_id: &str, root: &str, extension: &str) -> String {
    format!(
        "<xacml-context:Attribute AttributeId=\"{attribute_id}\" DataType=\"{TYPE_II}\">\
<xacml-context:AttributeValue><hl7:InstanceIdentifier root=\"{root}\" extension=\"{}\"/>\
</xacml-context:AttributeValue></xacml-context:Attribute>",
        escape(extension)
    )
}

fn cv(attribute_id: &str, code: &str, code_system: &str) -> String {
    format!(
        "<xacml-context:Attribute AttributeId=\"{attribute_id}\" DataType=\"{TYPE_CV}\">\
<xacml-context:AttributeValue><hl7:CodedValue code=\"{}\" codeSystem=\"{code_system}\"/>\
</xacml-context:AttributeValue></xacml-context:Attribute>",
        escape(code)
    )
}

/// The SOAP 1.2 envelope of one closed question, POSTed to `destination`.
pub fn query_envelope(
    q: &Question,
    issuer: &str,
    issue_instant: &str,
    destination: &str,
) -> String {
    let mut subject = String::new();
    if !q.provider_uzi.is_empty() {
        subject.push_str(&ii(ATTR_PROVIDER, OID_UZI, &q.provider_uzi));
    }
    if !q.role.is_empty() {
        subject.push_str(&cv(ATTR_ROLE, &q.role, OID_ROLE));
    }
    subject.push_str(&ii(ATTR_INSTITUTION, OID_URA, &q.requester_ura));
    let mut resource = ii(ATTR_RESOURCE_ID, OID_BSN, &q.bsn);
    if !q.facility_type.is_empty() {
        resource.push_str(&cv(ATTR_FACILITY_TYPE, &q.facility_type, OID_FACILITY_TYPE));
    }
    if q.open {
        resource.push_str(&format!(
            "<xacml-context:Attribute AttributeId=\"{ATTR_SCOPE}\" DataType=\"{TYPE_STRING}\">\
<xacml-context:AttributeValue>{SCOPE_DESCENDANTS}</xacml-context:AttributeValue></xacml-context:Attribute>"
        ));
    } else if !q.custodian_ura.is_empty() {
        resource.push_str(&ii(ATTR_AUTHOR_INSTITUTION, OID_URA, &q.custodian_ura));
    }
    let environment = cv(ATTR_PURPOSE, &q.purpose_of_use, OID_PURPOSE_OF_USE);
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<env:Envelope xmlns:env="{SOAP12}" xmlns:wsa="{WSA}">
<env:Header>
<wsa:Action env:mustUnderstand="true">{ACTION_QUERY}</wsa:Action>
<wsa:MessageID>{message_id}</wsa:MessageID>
<wsa:To>{destination}</wsa:To>
</env:Header>
<env:Body>
<xacml-samlp:XACMLAuthzDecisionQuery xmlns:xacml-samlp="{XACML_SAMLP}" xmlns:saml="{SAML}" xmlns:xacml-context="{XACML_CONTEXT}" xmlns:hl7="{HL7}" ID="{id}" Version="2.0" IssueInstant="{issue_instant}" Destination="{destination}" InputContextOnly="false" ReturnContext="false" CombinePolicies="true">
<saml:Issuer>{issuer}</saml:Issuer>
<xacml-context:Request>
<xacml-context:Subject SubjectCategory="{SUBJECT_CATEGORY}">{subject}</xacml-context:Subject>
<xacml-context:Resource>{resource}</xacml-context:Resource>
<xacml-context:Action/>
<xacml-context:Environment>{environment}</xacml-context:Environment>
</xacml-context:Request>
</xacml-samlp:XACMLAuthzDecisionQuery>
</env:Body>
</env:Envelope>
"#,
        message_id = escape(&q.message_id),
        destination = escape(destination),
        id = escape(&q.id),
        issue_instant = escape(issue_instant),
        issuer = escape(issuer),
    )
}

/// The SOAP 1.2 envelope of the answer (what Mitz, here the simulator, sends). The statement
/// is a `saml:Statement` of `xsi:type` `xacml-saml:XACMLAuthzDecisionStatementType`: the
/// profile's own element has no substitution group, so this is the form a SAML assertion
/// schema accepts (and what OpenSAML and IPF write).
pub fn response_envelope(
    q: &Question,
    decision: ConsentDecision,
    issuer: &str,
    issue_instant: &str,
    response_id: &str,
    assertion_id: &str,
) -> String {
    let results = result_xml(None, decision);
    envelope_of_results(
        q,
        &results,
        issuer,
        issue_instant,
        response_id,
        assertion_id,
    )
}

/// The answer to the open question: one `Result` per data holder (its URA as `ResourceId`)
/// with the decision for that holder. No holder at all: one `NotApplicable` without a
/// `ResourceId` (a context Response has at least one Result, XACML 2.0 core §6.9).
pub fn open_response_envelope(
    q: &Question,
    holders: &[(String, ConsentDecision)],
    issuer: &str,
    issue_instant: &str,
    response_id: &str,
    assertion_id: &str,
) -> String {
    let results: String = if holders.is_empty() {
        result_xml(None, ConsentDecision::NotApplicable)
    } else {
        holders
            .iter()
            .map(|(ura, decision)| result_xml(Some(ura), *decision))
            .collect()
    };
    envelope_of_results(
        q,
        &results,
        issuer,
        issue_instant,
        response_id,
        assertion_id,
    )
}

fn result_xml(resource_id: Option<&str>, decision: ConsentDecision) -> String {
    let status = if decision == ConsentDecision::Indeterminate {
        XACML_STATUS_ERROR
    } else {
        XACML_STATUS_OK
    };
    let resource_id = resource_id
        .map(|id| format!(" ResourceId=\"{}\"", escape(id)))
        .unwrap_or_default();
    format!(
        "<xacml-context:Result{resource_id}>\n<xacml-context:Decision>{}</xacml-context:Decision>\n\
<xacml-context:Status><xacml-context:StatusCode Value=\"{status}\"/></xacml-context:Status>\n\
</xacml-context:Result>\n",
        decision.as_str()
    )
}

fn envelope_of_results(
    q: &Question,
    results: &str,
    issuer: &str,
    issue_instant: &str,
    response_id: &str,
    assertion_id: &str,
) -> String {
    let relates_to = if q.message_id.is_empty() {
        String::new()
    } else {
        format!("\n<wsa:RelatesTo>{}</wsa:RelatesTo>", escape(&q.message_id))
    };
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<env:Envelope xmlns:env="{SOAP12}" xmlns:wsa="{WSA}">
<env:Header>
<wsa:Action>{ACTION_RESPONSE}</wsa:Action>{relates_to}
</env:Header>
<env:Body>
<samlp:Response xmlns:samlp="{SAMLP}" xmlns:saml="{SAML}" ID="{response_id}" InResponseTo="{in_response_to}" Version="2.0" IssueInstant="{issue_instant}">
<saml:Issuer>{issuer}</saml:Issuer>
<samlp:Status><samlp:StatusCode Value="{STATUS_SUCCESS}"/></samlp:Status>
<saml:Assertion ID="{assertion_id}" Version="2.0" IssueInstant="{issue_instant}">
<saml:Issuer>{issuer}</saml:Issuer>
<saml:Statement xmlns:xsi="{XSI}" xmlns:xacml-saml="{XACML_SAML}" xsi:type="xacml-saml:XACMLAuthzDecisionStatementType">
<xacml-context:Response xmlns:xacml-context="{XACML_CONTEXT}">
{results}</xacml-context:Response>
</saml:Statement>
</saml:Assertion>
</samlp:Response>
</env:Body>
</env:Envelope>
"#,
        response_id = escape(response_id),
        assertion_id = escape(assertion_id),
        in_response_to = escape(&q.id),
        issue_instant = escape(issue_instant),
        issuer = escape(issuer),
    )
}

/// A SOAP 1.2 fault (part 1 §5.4).
pub fn fault_envelope(code: FaultCode, reason: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<env:Envelope xmlns:env="{SOAP12}">
<env:Body>
<env:Fault>
<env:Code><env:Value>env:{code}</env:Value></env:Code>
<env:Reason><env:Text xml:lang="en">{reason}</env:Text></env:Reason>
</env:Fault>
</env:Body>
</env:Envelope>
"#,
        code = code.name(),
        reason = escape(reason),
    )
}

/// The Body of a SOAP 1.2 envelope, after the header blocks are checked: a block marked
/// `mustUnderstand` that is not WS-Addressing is a MustUnderstand fault (part 1 §5.2.3).
fn body(root: &Element) -> Result<&Element, XacmlError> {
    if !root.is(SOAP12, "Envelope") {
        return Err(XacmlError::NotSoap12(root.expanded_name()));
    }
    if let Some(header) = root.child(SOAP12, "Header") {
        for block in &header.children {
            let must = matches!(
                block.attr_ns(SOAP12, "mustUnderstand").map(str::trim),
                Some("true") | Some("1")
            );
            if must && !block.in_ns(WSA) {
                return Err(XacmlError::MustUnderstand(block.expanded_name()));
            }
        }
    }
    let body = root.child(SOAP12, "Body").ok_or(XacmlError::NoBody)?;
    if let Some(fault) = body.child(SOAP12, "Fault") {
        let code = fault
            .child(SOAP12, "Code")
            .and_then(|c| c.child(SOAP12, "Value"))
            .map(|v| v.trimmed().to_string())
            .unwrap_or_default();
        let reason = fault
            .child(SOAP12, "Reason")
            .and_then(|r| r.child(SOAP12, "Text"))
            .map(|t| t.trimmed().to_string())
            .unwrap_or_default();
        return Err(XacmlError::Fault { code, reason });
    }
    Ok(body)
}

/// Read an answer: the decision, or why there is none. `asked` is the query's ID; an answer
/// that names another one is refused (SAML core §3.2.2 `InResponseTo`).
pub fn parse_response(xml: &[u8], asked: Option<&str>) -> Result<ConsentDecision, XacmlError> {
    let mut combined: Option<ConsentDecision> = None;
    for (_, d) in parse_results(xml, asked)? {
        combined = Some(match combined {
            None => d,
            Some(c) => c.stricter(d),
        });
    }
    combined.ok_or(XacmlError::NoDecision)
}

/// Read the answer to the open question: the data holders (URAs, in the order given, each
/// once) whose `Result` is Permit. A Result without a `ResourceId` names no holder; a holder
/// named twice counts with its strictest decision.
pub fn parse_open_response(xml: &[u8], asked: Option<&str>) -> Result<Vec<String>, XacmlError> {
    let results = parse_results(xml, asked)?;
    let mut holders: Vec<(String, ConsentDecision)> = Vec::new();
    for (id, d) in results {
        let Some(id) = id.filter(|id| !id.is_empty()) else {
            continue;
        };
        match holders.iter_mut().find(|(h, _)| *h == id) {
            Some((_, seen)) => *seen = seen.stricter(d),
            None => holders.push((id, d)),
        }
    }
    Ok(holders
        .into_iter()
        .filter(|(_, d)| *d == ConsentDecision::Permit)
        .map(|(h, _)| h)
        .collect())
}

/// Every Result of every XACML context Response in the body (inside the assertion's
/// statement, either as `xacml-saml:XACMLAuthzDecisionStatement` or as `saml:Statement
/// xsi:type="…XACMLAuthzDecisionStatementType"`, or bare): its `ResourceId` and decision.
fn parse_results(
    xml: &[u8],
    asked: Option<&str>,
) -> Result<Vec<(Option<String>, ConsentDecision)>, XacmlError> {
    let root = xml::parse(xml)?;
    let body = body(&root)?;
    if let Some(response) = body.child(SAMLP, "Response") {
        let status = response
            .child(SAMLP, "Status")
            .and_then(|s| s.child(SAMLP, "StatusCode"))
            .and_then(|c| c.attr("Value"))
            .map(str::trim)
            .unwrap_or("");
        if status != STATUS_SUCCESS {
            return Err(XacmlError::Status(status.to_string()));
        }
        if let (Some(asked), Some(got)) = (asked, response.attr("InResponseTo")) {
            if asked != got {
                return Err(XacmlError::InResponseTo {
                    asked: asked.to_string(),
                    got: got.to_string(),
                });
            }
        }
    }
    let mut out = Vec::new();
    for result in body
        .descendants()
        .filter(|e| e.is(XACML_CONTEXT, "Result") || e.is(XACML3, "Result"))
    {
        let ns = result.ns.as_deref().unwrap_or_default();
        let Some(decision) = result.child(ns, "Decision") else {
            return Err(XacmlError::NoDecision);
        };
        let d = ConsentDecision::parse(decision.trimmed()).ok_or_else(|| {
            XacmlError::BadDecision(decision.trimmed().chars().take(40).collect())
        })?;
        out.push((result.attr("ResourceId").map(|id| id.trim().to_string()), d));
    }
    if out.is_empty() {
        return Err(XacmlError::NoDecision);
    }
    Ok(out)
}

fn attribute_value<'a>(section: &'a Element, ids: &[&str]) -> Option<&'a Element> {
    section
        .children_named(XACML_CONTEXT, "Attribute")
        .find(|a| a.attr("AttributeId").is_some_and(|id| ids.contains(&id)))
        .and_then(|a| a.child(XACML_CONTEXT, "AttributeValue"))
}

/// An HL7 II's extension under the expected root; a plain string value is taken as is.
fn ii_value(section: Option<&Element>, ids: &[&str], root: &str) -> Result<String, XacmlError> {
    let Some(value) = section.and_then(|s| attribute_value(s, ids)) else {
        return Ok(String::new());
    };
    match value.child(HL7, "InstanceIdentifier") {
        Some(id) => {
            if id.attr("root") != Some(root) {
                return Err(XacmlError::BadQuery(format!(
                    "{} has root {:?}, expected {root}",
                    ids[0],
                    id.attr("root").unwrap_or("")
                )));
            }
            Ok(id.attr("extension").unwrap_or("").trim().to_string())
        }
        None => Ok(value.trimmed().to_string()),
    }
}

/// An HL7 CV's code; a plain string value is taken as is.
fn cv_value(section: Option<&Element>, id: &str) -> String {
    let Some(value) = section.and_then(|s| attribute_value(s, &[id])) else {
        return String::new();
    };
    match value.child(HL7, "CodedValue") {
        Some(cv) => cv.attr("code").unwrap_or("").trim().to_string(),
        None => value.trimmed().to_string(),
    }
}

/// Read a closed question (the simulator's side).
pub fn parse_query(xml: &[u8]) -> Result<Question, XacmlError> {
    let root = xml::parse(xml)?;
    let body = body(&root)?;
    let message_id = root
        .child(SOAP12, "Header")
        .and_then(|h| h.child(WSA, "MessageID"))
        .map(|m| m.trimmed().to_string())
        .unwrap_or_default();
    let query = body
        .child(XACML_SAMLP, "XACMLAuthzDecisionQuery")
        .ok_or(XacmlError::NoQuery)?;
    let id = query.attr("ID").unwrap_or("").trim();
    if id.is_empty() {
        return Err(XacmlError::BadQuery("no ID".into()));
    }
    if query.attr("Version") != Some("2.0") {
        return Err(XacmlError::BadQuery("Version is not 2.0".into()));
    }
    let request = query
        .child(XACML_CONTEXT, "Request")
        .ok_or_else(|| XacmlError::BadQuery("no xacml-context:Request".into()))?;
    let subject = request.children_named(XACML_CONTEXT, "Subject").find(|s| {
        s.attr("SubjectCategory")
            .is_none_or(|c| c == SUBJECT_CATEGORY)
    });
    let resource = request.child(XACML_CONTEXT, "Resource");
    let environment = request.child(XACML_CONTEXT, "Environment");
    let bsn = ii_value(resource, &[ATTR_RESOURCE_ID, ATTR_RESOURCE_ID_1], OID_BSN)?;
    if bsn.is_empty() {
        return Err(XacmlError::BadQuery("no patient (resource-id)".into()));
    }
    let requester_ura = ii_value(subject, &[ATTR_INSTITUTION], OID_URA)?;
    if requester_ura.is_empty() {
        return Err(XacmlError::BadQuery("no provider-institution".into()));
    }
    let open = resource
        .and_then(|r| attribute_value(r, &[ATTR_SCOPE]))
        .is_some_and(|v| matches!(v.trimmed(), "Descendants" | "Children"));
    Ok(Question {
        open,
        id: id.to_string(),
        message_id,
        bsn,
        requester_ura,
        provider_uzi: ii_value(subject, &[ATTR_PROVIDER], OID_UZI)?,
        role: cv_value(subject, ATTR_ROLE),
        purpose_of_use: cv_value(environment, ATTR_PURPOSE),
        facility_type: cv_value(resource, ATTR_FACILITY_TYPE),
        custodian_ura: ii_value(resource, &[ATTR_AUTHOR_INSTITUTION], OID_URA)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn question() -> Question {
        Question {
            open: false,
            id: "_q1".into(),
            message_id: "urn:uuid:0b6c3c8e-2a0f-4f55-9d35-3b8d1b1f2a10".into(),
            bsn: "999999990".into(),
            requester_ura: "00000666".into(),
            provider_uzi: "000095254".into(),
            role: "01.015".into(),
            purpose_of_use: "TREATMENT".into(),
            facility_type: "Z3".into(),
            custodian_ura: "00000659".into(),
        }
    }

    #[test]
    fn open_question_round_trips() {
        let q = Question {
            open: true,
            custodian_ura: String::new(),
            ..question()
        };
        let xml = query_envelope(&q, "urn:issuer", "2026-12-05T10:00:00Z", "http://mitz/");
        assert!(
            !xml.contains(ATTR_AUTHOR_INSTITUTION),
            "no data holder named"
        );
        assert_eq!(parse_query(xml.as_bytes()).unwrap(), q);
        let holders = [
            ("22220000".to_string(), ConsentDecision::Permit),
            ("33330000".to_string(), ConsentDecision::Deny),
            ("44440000".to_string(), ConsentDecision::Permit),
            ("44440000".to_string(), ConsentDecision::Indeterminate),
        ];
        let answer = open_response_envelope(&q, &holders, "sim", "t", "_r", "_a");
        assert_eq!(
            parse_open_response(answer.as_bytes(), Some("_q1")).unwrap(),
            ["22220000"],
            "Permit only, a holder with any stricter result left out"
        );
        let none = open_response_envelope(&q, &[], "sim", "t", "_r", "_a");
        assert!(parse_open_response(none.as_bytes(), Some("_q1"))
            .unwrap()
            .is_empty());
        assert!(matches!(
            parse_open_response(answer.as_bytes(), Some("_other")),
            Err(XacmlError::InResponseTo { .. })
        ));
    }

    #[test]
    fn query_round_trips() {
        let q = question();
        let xml = query_envelope(
            &q,
            "beeldbrug",
            "2026-01-01T00:00:00Z",
            "https://mitz/x?a&b",
        );
        assert_eq!(parse_query(xml.as_bytes()).unwrap(), q);
    }

    #[test]
    fn response_round_trips() {
        let q = question();
        for d in [
            ConsentDecision::Permit,
            ConsentDecision::Deny,
            ConsentDecision::Indeterminate,
            ConsentDecision::NotApplicable,
        ] {
            let xml = response_envelope(&q, d, "mitz", "2026-01-01T00:00:00Z", "_r", "_a");
            assert_eq!(parse_response(xml.as_bytes(), Some("_q1")).unwrap(), d);
        }
        let xml = response_envelope(&q, ConsentDecision::Permit, "m", "t", "_r", "_a");
        assert!(matches!(
            parse_response(xml.as_bytes(), Some("_other")),
            Err(XacmlError::InResponseTo { .. })
        ));
    }

    /// A real-shaped answer with other prefixes, default namespaces, a `saml:Statement
    /// xsi:type` statement, whitespace around the decision and a signature we do not read.
    #[test]
    fn reads_other_prefixes() {
        let xml = br#"<?xml version="1.0"?>
<soap:Envelope xmlns:soap="http://www.w3.org/2003/05/soap-envelope">
 <soap:Body>
  <Response xmlns="urn:oasis:names:tc:SAML:2.0:protocol" ID="_9" InResponseTo="_q1" Version="2.0" IssueInstant="2026-01-01T00:00:00Z">
   <Issuer xmlns="urn:oasis:names:tc:SAML:2.0:assertion">https://mitz</Issuer>
   <Status><StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/></Status>
   <a:Assertion xmlns:a="urn:oasis:names:tc:SAML:2.0:assertion" ID="_8" Version="2.0" IssueInstant="2026-01-01T00:00:00Z">
    <a:Issuer>https://mitz</a:Issuer>
    <ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo/></ds:Signature>
    <a:Statement xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xs="urn:oasis:names:tc:xacml:2.0:profile:saml2.0:v2:schema:assertion" xsi:type="xs:XACMLAuthzDecisionStatementType">
     <ctx:Response xmlns:ctx="urn:oasis:names:tc:xacml:2.0:context:schema:os">
      <ctx:Result ResourceId="999999990">
       <ctx:Decision>
         Deny
       </ctx:Decision>
      </ctx:Result>
     </ctx:Response>
    </a:Statement>
   </a:Assertion>
  </Response>
 </soap:Body>
</soap:Envelope>"#;
        assert_eq!(
            parse_response(xml, Some("_q1")).unwrap(),
            ConsentDecision::Deny
        );
    }

    /// Mitz's production answer: an XACML 3.0 Response straight in the body.
    #[test]
    fn reads_xacml3_bare_response() {
        let xml =
            br#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Header/><s:Body>
<Response xmlns="urn:oasis:names:tc:xacml:3.0:core:schema:wd-17"><Result><Decision>Permit</Decision>
<Status><StatusCode Value="urn:oasis:names:tc:xacml:1.0:status:ok"/></Status></Result></Response>
</s:Body></s:Envelope>"#;
        assert_eq!(parse_response(xml, None).unwrap(), ConsentDecision::Permit);
    }

    #[test]
    fn several_results_take_the_strictest() {
        let xml = br#"<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"><e:Body>
<c:Response xmlns:c="urn:oasis:names:tc:xacml:2.0:context:schema:os">
<c:Result><c:Decision>Permit</c:Decision></c:Result>
<c:Result><c:Decision>NotApplicable</c:Decision></c:Result></c:Response></e:Body></e:Envelope>"#;
        assert_eq!(
            parse_response(xml, None).unwrap(),
            ConsentDecision::NotApplicable
        );
    }

    type Expect = fn(&XacmlError) -> bool;

    #[test]
    fn refuses_what_is_not_an_answer() {
        let cases: [(&[u8], Expect); 8] = [
            (b"garbage", |e| matches!(e, XacmlError::Xml(_))),
            (b"<html><body>502 Bad Gateway</body></html>", |e| {
                matches!(e, XacmlError::NotSoap12(_))
            }),
            (
                br#"<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body/></e:Envelope>"#,
                |e| matches!(e, XacmlError::NotSoap12(_)),
            ),
            (
                br#"<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"/>"#,
                |e| matches!(e, XacmlError::NoBody),
            ),
            (
                br#"<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"><e:Body/></e:Envelope>"#,
                |e| matches!(e, XacmlError::NoDecision),
            ),
            (
                br#"<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"><e:Body><c:Response xmlns:c="urn:oasis:names:tc:xacml:2.0:context:schema:os"><c:Result><c:Decision>Yes</c:Decision></c:Result></c:Response></e:Body></e:Envelope>"#,
                |e| matches!(e, XacmlError::BadDecision(_)),
            ),
            (
                br#"<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"><e:Body><p:Response xmlns:p="urn:oasis:names:tc:SAML:2.0:protocol"><p:Status><p:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Responder"/></p:Status></p:Response></e:Body></e:Envelope>"#,
                |e| matches!(e, XacmlError::Status(_)),
            ),
            (
                fault_envelope(FaultCode::Receiver, "down for maintenance").leak().as_bytes(),
                |e| matches!(e, XacmlError::Fault { code, reason } if code == "env:Receiver" && reason == "down for maintenance"),
            ),
        ];
        for (xml, expected) in cases {
            let err = parse_response(xml, None).unwrap_err();
            assert!(expected(&err), "{}: {err}", String::from_utf8_lossy(xml));
        }
    }

    #[test]
    fn bad_queries_map_to_faults() {
        let q = question();
        let good = query_envelope(&q, "b", "t", "d");
        let soap11 = good.replace(SOAP12, SOAP11);
        assert_eq!(
            parse_query(soap11.as_bytes()).unwrap_err().fault_code(),
            FaultCode::VersionMismatch
        );
        let unknown_header = good.replace(
            "<env:Header>",
            "<env:Header><x:Secret xmlns:x=\"urn:x\" env:mustUnderstand=\"1\"/>",
        );
        assert_eq!(
            parse_query(unknown_header.as_bytes())
                .unwrap_err()
                .fault_code(),
            FaultCode::MustUnderstand
        );
        let no_bsn = good.replace(OID_BSN, "1.2.3");
        assert_eq!(
            parse_query(no_bsn.as_bytes()).unwrap_err().fault_code(),
            FaultCode::Sender
        );
        assert!(matches!(
            parse_query(b"<x/>").unwrap_err(),
            XacmlError::NotSoap12(_)
        ));
        assert_eq!(FaultCode::Sender.http_status(), 400);
        assert_eq!(FaultCode::Receiver.http_status(), 500);
    }
}
