//! DICOM PS3.15 A.5 audit messages (the IHE ATNA format) for one audit record, valid against
//! the A.5.1 RELAX NG schema (edition 2020).
//!
//! One operation, one message (docs/audit.md):
//!
//! | Record | Message |
//! |---|---|
//! | refused, credentials missing or bad | User Authentication (110114, A.5.3.14), Login (110122) failed |
//! | refused otherwise | Security Alert (110113, A.5.3.13), Use of Restricted Function (110132) |
//! | C-FIND, QIDO-RS, ITI-18, ITI-38 | Query (110112, A.5.3.12) |
//! | C-MOVE, C-GET, WADO-RS, WADO-URI, RAD-69, RAD-75, WADO-WS (we send) | DICOM Instances Transferred (110104, A.5.3.4), action R |
//! | ITI-43, ITI-39 (documents sent) | Export (110106, A.5.3.7), action R |
//! | C-STORE, STOW-RS (we receive) | DICOM Instances Transferred (110104, A.5.3.4), action C |
//! | AUDIT-READ | Audit Log Used (110101, A.5.3.1) |
//! | DELETE (operator, retention) | DICOM Instances Accessed (110103, A.5.3.6), action D |
//! | CHAIN-ALERT (chain monitoring) | Security Alert (110113, A.5.3.13), Node Authentication (110126) |
//! | C-ECHO (permitted) | none: verification concerns no patient and PS3.15 has no event for it |
//!
//! A record with a correlation id across gateways (issue 17) names it as one more participant
//! object: a system object (type 2) in the role Job (20), `ParticipantObjectID` the id,
//! `ParticipantObjectIDTypeCode` `CorrelationID` of `urn:beeldbrug:correlation:1`. A record
//! of a traced operation (issue 16, `telemetry`) names its W3C trace id the same way, type
//! code `TraceID` of `urn:beeldbrug:trace:1`.
//!
//! The record is written once the operation has ended, so Begin Transferring (110102), which
//! announces a transfer before it starts, is not sent: 110104 carries the same participants
//! and the outcome.

use crate::store::index::AuditRecord;
use crate::trust::policy::is_bsn;
use quick_xml::events::{BytesDecl, BytesText, Event};
use quick_xml::Writer;

/// OID of the BSN (REFERENCE §2).
pub const BSN_OID: &str = "2.16.840.1.113883.2.4.6.3";
/// OID of UZI numbers (professionals).
pub const UZI_OID: &str = "2.16.528.1.1007.3.1";
/// OID of URA numbers (organisations).
pub const URA_OID: &str = "2.16.528.1.1007.3.3";
/// OID of RoleCodeNL.
pub const ROLE_OID: &str = "2.16.840.1.113883.2.4.15.111";
/// ParticipantObjectIDTypeCode of the correlation id across gateways: its code and the
/// coding scheme (the namespace of the SOAP header that carries it).
pub const CORRELATION_CODE: &str = "CorrelationID";
pub const CORRELATION_SYSTEM: &str = "urn:beeldbrug:correlation:1";
/// ParticipantObjectIDTypeCode of the trace id (W3C Trace Context, 32 hex digits).
pub const TRACE_CODE: &str = "TraceID";
pub const TRACE_SYSTEM: &str = "urn:beeldbrug:trace:1";
/// Study Root Query/Retrieve Information Model - FIND.
const STUDY_ROOT_FIND: &str = "1.2.840.10008.5.1.4.1.2.2.1";

#[derive(Debug, thiserror::Error)]
pub enum DicomAuditError {
    #[error("writing the audit message: {0}")]
    Write(#[from] std::io::Error),
}

/// Who reports: `AuditSourceIdentification` and our own active participant.
#[derive(Debug, Clone, Default)]
pub struct Source {
    /// AuditSourceID (and our UserID): the application name.
    pub app_name: String,
    /// AuditEnterpriseSiteID: our organisation (URA), if configured.
    pub site_id: String,
    /// Our host name, our NetworkAccessPointID.
    pub host: String,
}

/// The PS3.15 event of a record, `None` where no message is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    AuditLogUsed,
    /// Instances deleted from the store (DICOM Instances Accessed, action D).
    InstancesDeleted,
    InstancesTransferred {
        we_send: bool,
    },
    Query,
    /// Export (110106, A.5.3.7): documents sent out by ITI-43 / ITI-39.
    Export,
    SecurityAlert,
    UserAuthentication,
}

/// Which message a record maps to.
pub fn event_of(record: &AuditRecord) -> Option<Kind> {
    let refused = record.outcome == "refused" || record.outcome == "unauthenticated";
    if refused {
        return Some(if is_authentication_failure(record) {
            Kind::UserAuthentication
        } else {
            Kind::SecurityAlert
        });
    }
    match record.operation.as_str() {
        "C-FIND" | "QIDO-RS" | "ITI-18" | "ITI-38" | "MITZ-OPEN-QUESTION" => Some(Kind::Query),
        "C-MOVE" | "C-GET" | "WADO-RS" | "WADO-URI" | "RAD-69" | "RAD-75" | "WADO-WS" => {
            Some(Kind::InstancesTransferred { we_send: true })
        }
        // Documents (the KOS manifest, reports) handed to another organisation's system.
        "ITI-43" | "ITI-39" => Some(Kind::Export),
        "C-STORE" | "STOW-RS" => Some(Kind::InstancesTransferred { we_send: false }),
        "AUDIT-READ" => Some(Kind::AuditLogUsed),
        "DELETE" => Some(Kind::InstancesDeleted),
        // Chain monitoring: a peer unreachable, a certificate near its expiry (issue 17).
        "CHAIN-ALERT" => Some(Kind::SecurityAlert),
        _ => None,
    }
}

/// A refusal for credentials (HTTP 401) rather than for rights: outcome `unauthenticated`,
/// or the grounds say so (`Decision::Unauthenticated`).
fn is_authentication_failure(record: &AuditRecord) -> bool {
    record.outcome == "unauthenticated" || record.grounds.starts_with("unauthenticated")
}

/// A patient ID in the form the message carries: a BSN as
/// `999999990^^^&2.16.840.1.113883.2.4.6.3&ISO`, anything else as it is.
pub fn patient_object_id(id: &str) -> String {
    if is_bsn(id) {
        format!("{id}^^^&{BSN_OID}&ISO")
    } else {
        id.to_string()
    }
}

/// One element, built before writing (attributes in any order, children in schema order).
struct El {
    name: &'static str,
    attrs: Vec<(&'static str, String)>,
    children: Vec<El>,
    text: Option<String>,
}

impl El {
    fn new(name: &'static str) -> El {
        El {
            name,
            attrs: Vec::new(),
            children: Vec::new(),
            text: None,
        }
    }

    fn attr(mut self, name: &'static str, value: impl Into<String>) -> El {
        self.attrs.push((name, clean(&value.into())));
        self
    }

    fn child(mut self, child: El) -> El {
        self.children.push(child);
        self
    }

    fn text(mut self, text: impl Into<String>) -> El {
        self.text = Some(clean(&text.into()));
        self
    }

    /// A `CodedValueType` element (A.5.1: csd-code, codeSystemName, originalText).
    fn coded(name: &'static str, code: &str, system: &str, text: &str) -> El {
        El::new(name)
            .attr("csd-code", code)
            .attr("codeSystemName", system)
            .attr("originalText", text)
    }

    fn write(&self, w: &mut Writer<Vec<u8>>) -> std::io::Result<()> {
        let element = w
            .create_element(self.name)
            .with_attributes(self.attrs.iter().map(|(k, v)| (*k, v.as_str())));
        match (&self.text, self.children.is_empty()) {
            (Some(t), _) => {
                element.write_text_content(BytesText::new(t))?;
            }
            (None, true) => {
                element.write_empty()?;
            }
            (None, false) => {
                element.write_inner_content(|w| {
                    for c in &self.children {
                        c.write(w)?;
                    }
                    Ok(())
                })?;
            }
        }
        Ok(())
    }
}

/// XML 1.0 refuses most control characters; tokens should not carry line breaks either.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn base64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

/// PS3.15 A.5.1 EventOutcomeIndicator.
fn outcome_indicator(outcome: &str) -> &'static str {
    match outcome {
        "success" => "0",
        // Partial and cancelled transfers, refusals: minor failure.
        "partial" | "cancelled" | "refused" | "unauthenticated" => "4",
        _ => "8",
    }
}

/// The peer's IP address from `ip:port` or `[v6]:port`.
fn address_of(source: &str) -> String {
    match source.parse::<std::net::SocketAddr>() {
        Ok(a) => a.ip().to_string(),
        Err(_) => source.to_string(),
    }
}

fn is_ip(s: &str) -> bool {
    s.parse::<std::net::IpAddr>().is_ok()
}

/// `AuditMessage` of `record`, or `None` where its operation has no message.
pub fn message(record: &AuditRecord, source: &Source) -> Result<Option<String>, DicomAuditError> {
    let Some(event) = event_of(record) else {
        return Ok(None);
    };
    let (code, meaning, action) = match event {
        Kind::AuditLogUsed => ("110101", "Audit Log Used", "R"),
        Kind::InstancesDeleted => ("110103", "DICOM Instances Accessed", "D"),
        Kind::InstancesTransferred { we_send: true } => {
            ("110104", "DICOM Instances Transferred", "R")
        }
        Kind::InstancesTransferred { we_send: false } => {
            ("110104", "DICOM Instances Transferred", "C")
        }
        Kind::Export => ("110106", "Export", "R"),
        Kind::Query => ("110112", "Query", "E"),
        Kind::SecurityAlert => ("110113", "Security Alert", "E"),
        Kind::UserAuthentication => ("110114", "User Authentication", "E"),
    };

    // A.5.1 EventIdentification: EventID, EventTypeCode*, EventOutcomeDescription?.
    let mut ident = El::new("EventIdentification")
        .attr("EventActionCode", action)
        .attr("EventDateTime", record.time.clone())
        .attr("EventOutcomeIndicator", outcome_indicator(&record.outcome))
        .child(El::coded("EventID", code, "DCM", meaning));
    match event {
        Kind::SecurityAlert if record.operation == "CHAIN-ALERT" => {
            ident = ident.child(El::coded(
                "EventTypeCode",
                "110126",
                "DCM",
                "Node Authentication",
            ));
        }
        Kind::SecurityAlert => {
            ident = ident.child(El::coded(
                "EventTypeCode",
                "110132",
                "DCM",
                "Use of Restricted Function",
            ));
        }
        Kind::UserAuthentication => {
            ident = ident.child(El::coded("EventTypeCode", "110122", "DCM", "Login"));
        }
        _ => {}
    }
    let description = [record.operation.as_str(), record.detail.as_str()]
        .iter()
        .filter(|s| !s.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(": ");
    if !description.is_empty() {
        ident = ident.child(El::new("EventOutcomeDescription").text(description));
    }

    let mut root = El::new("AuditMessage").child(ident);

    // The remote side: the calling gateway or AE, at its network address (A.5.2).
    // Roles per A.5.3.4: who receives instances is the Destination (110152), who sends
    // them the Source (110153); a query's or alert's caller is the Source.
    let (remote_role, our_role) = match event {
        Kind::InstancesTransferred { we_send: true } | Kind::Export => (
            ("110152", "Destination Role ID"),
            ("110153", "Source Role ID"),
        ),
        _ => (
            ("110153", "Source Role ID"),
            ("110152", "Destination Role ID"),
        ),
    };
    let remote_address = address_of(&record.source_address);
    let mut remote = El::new("ActiveParticipant")
        .attr(
            "UserID",
            if record.gateway.is_empty() {
                remote_address.clone()
            } else {
                record.gateway.clone()
            },
        )
        .attr("UserIsRequestor", "true");
    if record.operation.starts_with("C-") && !record.gateway.is_empty() {
        remote = remote.attr("AlternativeUserID", format!("AETITLES={}", record.gateway));
    }
    if !record.certificate_sha256.is_empty() {
        remote = remote.attr("UserName", format!("SHA256:{}", record.certificate_sha256));
    }
    if !remote_address.is_empty() {
        remote = remote
            .attr("NetworkAccessPointID", remote_address.clone())
            .attr(
                "NetworkAccessPointTypeCode",
                if is_ip(&remote_address) { "2" } else { "1" },
            );
    }
    remote = remote.child(El::coded("RoleIDCode", remote_role.0, "DCM", remote_role.1));
    root = root.child(remote);

    // The professional (UZI) acting for an organisation (URA) in a role (RoleCodeNL), from
    // verified claims: the human requestor NEN 7513 asks for.
    if !record.professional_uzi.is_empty() {
        let mut person = El::new("ActiveParticipant")
            .attr(
                "UserID",
                format!("{}^^^&{UZI_OID}&ISO", record.professional_uzi),
            )
            .attr("UserIsRequestor", "true");
        if !record.organisation_ura.is_empty() {
            person = person.attr(
                "AlternativeUserID",
                format!("{}^^^&{URA_OID}&ISO", record.organisation_ura),
            );
        }
        if !record.role.is_empty() {
            person = person.child(El::coded(
                "RoleIDCode",
                &record.role,
                ROLE_OID,
                &record.role,
            ));
        }
        root = root.child(person);
    } else if !record.organisation_ura.is_empty() {
        let mut org = El::new("ActiveParticipant")
            .attr(
                "UserID",
                format!("{}^^^&{URA_OID}&ISO", record.organisation_ura),
            )
            .attr("UserIsRequestor", "true");
        if !record.role.is_empty() {
            org = org.child(El::coded(
                "RoleIDCode",
                &record.role,
                ROLE_OID,
                &record.role,
            ));
        }
        root = root.child(org);
    }

    // Us.
    let mut us = El::new("ActiveParticipant")
        .attr("UserID", source.app_name.clone())
        .attr("UserIsRequestor", "false");
    if !source.host.is_empty() {
        us = us.attr("NetworkAccessPointID", source.host.clone()).attr(
            "NetworkAccessPointTypeCode",
            if is_ip(&source.host) { "2" } else { "1" },
        );
    }
    us = us.child(El::coded("RoleIDCode", our_role.0, "DCM", our_role.1));
    root = root.child(us);

    let mut audit_source = El::new("AuditSourceIdentification");
    if !source.site_id.is_empty() {
        audit_source = audit_source.attr("AuditEnterpriseSiteID", source.site_id.clone());
    }
    root = root.child(
        audit_source
            .attr("AuditSourceID", source.app_name.clone())
            // 4: application server process.
            .child(El::new("AuditSourceTypeCode").attr("csd-code", "4")),
    );

    // Participant objects, in A.5.3.x order: the query or the log, patients, studies.
    match event {
        Kind::Query => {
            let (id, id_type) = if record.operation == "C-FIND" {
                (
                    STUDY_ROOT_FIND,
                    El::coded(
                        "ParticipantObjectIDTypeCode",
                        "110181",
                        "DCM",
                        "SOP Class UID",
                    ),
                )
            } else {
                (
                    "QIDO-RS",
                    El::coded("ParticipantObjectIDTypeCode", "12", "RFC-3881", "URI"),
                )
            };
            root = root.child(
                El::new("ParticipantObjectIdentification")
                    .attr("ParticipantObjectID", id)
                    .attr("ParticipantObjectTypeCode", "2")
                    .attr("ParticipantObjectTypeCodeRole", "24")
                    .child(id_type)
                    .child(El::new("ParticipantObjectQuery").text(base64(&record.detail))),
            );
        }
        Kind::AuditLogUsed => {
            root = root.child(
                El::new("ParticipantObjectIdentification")
                    .attr("ParticipantObjectID", format!("{}:audit", source.app_name))
                    .attr("ParticipantObjectTypeCode", "2")
                    .attr("ParticipantObjectTypeCodeRole", "13")
                    .child(El::coded(
                        "ParticipantObjectIDTypeCode",
                        "12",
                        "RFC-3881",
                        "URI",
                    ))
                    .child(El::new("ParticipantObjectName").text("Security Audit Log")),
            );
        }
        _ => {}
    }
    for patient in record.patient_ids.iter().filter(|p| !p.is_empty()) {
        let mut object = El::new("ParticipantObjectIdentification")
            .attr("ParticipantObjectID", patient_object_id(patient))
            .attr("ParticipantObjectTypeCode", "1")
            .attr("ParticipantObjectTypeCodeRole", "1")
            .child(El::coded(
                "ParticipantObjectIDTypeCode",
                "2",
                "RFC-3881",
                "Patient Number",
            ))
            // No patient name is kept in the audit trail: the name element carries the ID.
            .child(El::new("ParticipantObjectName").text(patient.clone()));
        // PurposeOfUse: the 2020 schema has no PurposeOfUse element (added to A.5.1 later),
        // so it travels as a detail of the patient it concerns.
        if !record.purpose_of_use.is_empty() {
            object = object.child(
                El::new("ParticipantObjectDetail")
                    .attr("type", "PurposeOfUse")
                    .attr("value", base64(&record.purpose_of_use)),
            );
        }
        root = root.child(object);
    }
    for study in record.study_uids.iter().filter(|s| !s.is_empty()) {
        root = root.child(
            El::new("ParticipantObjectIdentification")
                .attr("ParticipantObjectID", study.clone())
                .attr("ParticipantObjectTypeCode", "2")
                .attr("ParticipantObjectTypeCodeRole", "3")
                .child(El::coded(
                    "ParticipantObjectIDTypeCode",
                    "110180",
                    "DCM",
                    "Study Instance UID",
                ))
                .child(El::new("ParticipantObjectName").text(study.clone()))
                .child(
                    El::new("ParticipantObjectDescription").child(
                        El::new("ParticipantObjectContainsStudy")
                            .child(El::new("StudyIDs").attr("UID", study.clone())),
                    ),
                ),
        );
    }

    // The exchange's correlation id across gateways (issue 17): a system object, the job
    // this record is part of, identified by the id as the SOAP header / X-Correlation-ID
    // carried it, so the peer's message of the same exchange names the same object.
    if !record.correlation_id.is_empty() {
        root = root.child(
            El::new("ParticipantObjectIdentification")
                .attr("ParticipantObjectID", record.correlation_id.clone())
                .attr("ParticipantObjectTypeCode", "2")
                .attr("ParticipantObjectTypeCodeRole", "20")
                .child(El::coded(
                    "ParticipantObjectIDTypeCode",
                    CORRELATION_CODE,
                    CORRELATION_SYSTEM,
                    "Correlation ID",
                ))
                .child(El::new("ParticipantObjectName").text("correlation id across gateways")),
        );
    }

    // The operation's trace (issue 16): the same kind of object, so that the collector's
    // trace of the transfer is found from the audit message.
    if !record.trace_id.is_empty() {
        root = root.child(
            El::new("ParticipantObjectIdentification")
                .attr("ParticipantObjectID", record.trace_id.clone())
                .attr("ParticipantObjectTypeCode", "2")
                .attr("ParticipantObjectTypeCodeRole", "20")
                .child(El::coded(
                    "ParticipantObjectIDTypeCode",
                    TRACE_CODE,
                    TRACE_SYSTEM,
                    "Trace ID",
                ))
                .child(El::new("ParticipantObjectName").text("OpenTelemetry trace")),
        );
    }

    let mut writer = Writer::new(Vec::new());
    writer.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    root.write(&mut writer)?;
    Ok(Some(
        String::from_utf8_lossy(&writer.into_inner()).into_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bsn_eleven_test() {
        assert!(is_bsn("999999990"));
        assert!(is_bsn("123456782"));
        assert!(!is_bsn("123456789"));
        assert!(!is_bsn("99999999"));
        assert!(!is_bsn("P1"));
        assert_eq!(
            patient_object_id("999999990"),
            "999999990^^^&2.16.840.1.113883.2.4.6.3&ISO"
        );
        assert_eq!(patient_object_id("P1"), "P1");
    }

    fn record(operation: &str, outcome: &str) -> AuditRecord {
        AuditRecord {
            seq: 1,
            time: "2025-01-01T10:00:00.123Z".into(),
            operation: operation.into(),
            outcome: outcome.into(),
            detail: "1 study <&> \u{1}".into(),
            gateway: "REMOTE_AE".into(),
            source_address: "127.0.0.1:40000".into(),
            professional_uzi: "123456789".into(),
            organisation_ura: "12345678".into(),
            role: "01.015".into(),
            purpose_of_use: "TREAT".into(),
            patient_ids: vec!["999999990".into()],
            study_uids: vec!["1.2.3".into()],
            ..Default::default()
        }
    }

    #[test]
    fn mapping() {
        let ev = |op, out| event_of(&record(op, out));
        assert_eq!(ev("C-FIND", "success"), Some(Kind::Query));
        assert_eq!(ev("QIDO-RS", "failure"), Some(Kind::Query));
        assert_eq!(
            ev("WADO-RS", "partial"),
            Some(Kind::InstancesTransferred { we_send: true })
        );
        assert_eq!(
            ev("STOW-RS", "success"),
            Some(Kind::InstancesTransferred { we_send: false })
        );
        assert_eq!(ev("C-MOVE", "refused"), Some(Kind::SecurityAlert));
        assert_eq!(
            ev("QIDO-RS", "unauthenticated"),
            Some(Kind::UserAuthentication)
        );
        assert_eq!(ev("AUDIT-READ", "success"), Some(Kind::AuditLogUsed));
        assert_eq!(ev("C-ECHO", "success"), None);
        assert_eq!(ev("C-ECHO", "refused"), Some(Kind::SecurityAlert));
        // The SOAP front: images sent, documents exported.
        for op in ["RAD-69", "RAD-75"] {
            assert_eq!(
                ev(op, "partial"),
                Some(Kind::InstancesTransferred { we_send: true })
            );
        }
        assert_eq!(ev("ITI-43", "success"), Some(Kind::Export));
        assert_eq!(ev("ITI-39", "refused"), Some(Kind::SecurityAlert));
    }

    #[test]
    fn a_document_retrieve_is_an_export() {
        let xml = message(&record("ITI-39", "success"), &Source::default())
            .unwrap()
            .unwrap();
        assert!(xml.contains("csd-code=\"110106\""), "{xml}");
        assert!(xml.contains("originalText=\"Export\""), "{xml}");
        // The remote gateway receives: Destination.
        assert!(xml.contains("csd-code=\"110152\""), "{xml}");
    }

    #[test]
    fn message_escapes_and_names_everyone() {
        let source = Source {
            app_name: "beeldbrug".into(),
            site_id: "87654321".into(),
            host: "gw.example".into(),
        };
        let xml = message(&record("WADO-RS", "success"), &source)
            .unwrap()
            .unwrap();
        assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?><AuditMessage>"));
        assert!(xml.contains("csd-code=\"110104\""), "{xml}");
        assert!(xml.contains("1 study &lt;&amp;&gt;  "), "{xml}");
        assert!(xml.contains("999999990^^^&amp;2.16.840.1.113883.2.4.6.3&amp;ISO"));
        assert!(xml.contains("123456789^^^&amp;2.16.528.1.1007.3.1&amp;ISO"));
        assert!(xml.contains("12345678^^^&amp;2.16.528.1.1007.3.3&amp;ISO"));
        assert!(xml.contains("codeSystemName=\"2.16.840.1.113883.2.4.15.111\""));
        assert!(xml.contains("NetworkAccessPointID=\"127.0.0.1\""));
        assert!(xml.contains("type=\"PurposeOfUse\" value=\"VFJFQVQ=\""));
        assert!(message(&record("C-ECHO", "success"), &source)
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_traced_record_names_its_trace_and_an_untraced_one_none() {
        let mut traced = record("WADO-RS", "success");
        traced.trace_id = "4bf92f3577b34da6a3ce929d0e0e4736".into();
        let xml = message(&traced, &Source::default()).unwrap().unwrap();
        assert!(
            xml.contains("ParticipantObjectID=\"4bf92f3577b34da6a3ce929d0e0e4736\""),
            "{xml}"
        );
        assert!(xml.contains("csd-code=\"TraceID\""), "{xml}");
        assert!(
            xml.contains("codeSystemName=\"urn:beeldbrug:trace:1\""),
            "{xml}"
        );
        let xml = message(&record("WADO-RS", "success"), &Source::default())
            .unwrap()
            .unwrap();
        assert!(!xml.contains("TraceID"), "{xml}");
    }

    #[test]
    fn a_delete_is_instances_accessed_with_action_d() {
        assert_eq!(
            event_of(&record("DELETE", "success")),
            Some(Kind::InstancesDeleted)
        );
        let xml = message(&record("DELETE", "success"), &Source::default())
            .unwrap()
            .unwrap();
        assert!(xml.contains("csd-code=\"110103\""), "{xml}");
        assert!(xml.contains("EventActionCode=\"D\""), "{xml}");
        assert!(xml.contains("999999990^^^&amp;2.16.840.1.113883.2.4.6.3&amp;ISO"));
    }
}
