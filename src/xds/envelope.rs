//! Reading a SOAP 1.2 request: plain `application/soap+xml`, or MTOM/XOP
//! (`multipart/related; type="application/xop+xml"`, XOP 1.0, SOAP MTOM) whose root part is
//! the envelope and whose other parts are resolved by Content-ID wherever the envelope has an
//! `xop:Include`.
//!
//! Limits: [`MAX_BODY`] for the HTTP body, [`LIMITS`] for the envelope (size, depth, nodes;
//! no DTD, so no entity is ever expanded: [`crate::xml`]), [`MAX_ATTRIBUTE`] for any one
//! attribute value. Anything outside them, or not a SOAP 1.2 envelope with a Body holding one
//! element, is an [`XdsError`] answered as a Fault.
//!
//! WS-Addressing (1.0 SOAP binding §3): exactly one `wsa:Action` (missing:
//! `wsa:MessageAddressingHeaderRequired`), at most one `wsa:MessageID` / `wsa:To`;
//! `wsa:ReplyTo` / `wsa:FaultTo` anonymous or absent (we answer on the connection only).
//! WS-Security: at most one `wsse:Security` header, holding at most one `saml2:Assertion`,
//! which is kept as the signed text ([`crate::xml::extract_at`]) for the SAML verifier.
//! Any other header block marked `mustUnderstand` is a MustUnderstand Fault.

use super::{XdsError, NS_SOAP11, NS_SOAP12, NS_WSA, NS_WSSE, NS_XOP};
use crate::dicomweb::media::parse_media_type;
use crate::trust::saml::NS_SAML;
use crate::xml::{self, Element, Limits};
use bytes::Bytes;
use std::collections::HashMap;

/// Largest HTTP body accepted: the envelope and any MTOM parts.
pub const MAX_BODY: usize = 8 << 20;
/// The envelope: a RetrieveImagingDocumentSetRequest of [`super::retrieve::MAX_DOCUMENTS`]
/// documents is about 1.5 MB and 30,000 nodes.
pub const LIMITS: Limits = Limits {
    max_bytes: 4 << 20,
    max_depth: 32,
    max_nodes: 100_000,
};
/// Longest attribute value accepted (UIDs, codes and URIs are far shorter).
pub const MAX_ATTRIBUTE: usize = 8 * 1024;
/// Most MIME parts in an MTOM request.
pub const MAX_PARTS: usize = 64;

/// The anonymous address (WS-Addressing 1.0 core §2.1).
pub const WSA_ANONYMOUS: &str = "http://www.w3.org/2005/08/addressing/anonymous";
const WSA_NONE: &str = "http://www.w3.org/2005/08/addressing/none";

/// A request as read.
#[derive(Debug)]
pub struct Envelope {
    /// `wsa:Action`.
    pub action: String,
    /// `wsa:MessageID`, when given: the answer's `wsa:RelatesTo`.
    pub message_id: Option<String>,
    /// `wsa:To`, when given.
    pub to: Option<String>,
    /// The one element in the Body.
    pub body: Element,
    /// The XUA assertion of the `wsse:Security` header, as a document of its own with the
    /// bytes that were signed.
    pub assertion: Option<String>,
    /// MTOM parts other than the root, by Content-ID (without `<>`).
    pub attachments: HashMap<String, Bytes>,
    /// Whether the request came as MTOM/XOP.
    pub mtom: bool,
    /// The exchange's correlation id (`<CorrelationID>` in `oplog::NS_CORRELATION`), when
    /// the calling gateway sent a valid one.
    pub correlation_id: Option<String>,
}

/// A Fault, with the request's MessageID when it was read before the problem.
pub type ReadError = (XdsError, Option<String>);

fn bad(why: impl Into<String>) -> ReadError {
    (XdsError::Malformed(why.into()), None)
}

/// Read a request body of `content_type`.
pub async fn read(content_type: Option<&str>, body: Bytes) -> Result<Envelope, ReadError> {
    if body.len() > MAX_BODY {
        return Err((
            XdsError::TooLarge(format!("the request is larger than {MAX_BODY} bytes")),
            None,
        ));
    }
    let media = content_type
        .and_then(parse_media_type)
        .ok_or_else(|| bad("no Content-Type: expected application/soap+xml or MTOM"))?;
    let param = |name: &str| {
        media
            .params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    match media.essence.as_str() {
        "application/soap+xml" => {
            let mut envelope = parse(&body, &HashMap::new())?;
            envelope.mtom = false;
            Ok(envelope)
        }
        "multipart/related" => {
            let inner = param("type").unwrap_or_default();
            if !inner.eq_ignore_ascii_case("application/xop+xml") {
                return Err(bad(format!(
                    "multipart/related of type {inner:?}: only MTOM (application/xop+xml) is accepted"
                )));
            }
            let boundary = param("boundary")
                .filter(|b| !b.is_empty() && b.len() <= 70)
                .ok_or_else(|| bad("multipart/related without a valid boundary"))?;
            let start = param("start").map(strip_angle);
            let (root, attachments) = read_parts(body, boundary, start).await?;
            let mut envelope = parse(&root, &attachments)?;
            envelope.attachments = attachments;
            envelope.mtom = true;
            Ok(envelope)
        }
        "text/xml" => Err((XdsError::VersionMismatch, None)),
        other => Err(bad(format!(
            "Content-Type {other}: expected application/soap+xml or MTOM"
        ))),
    }
}

fn strip_angle(id: &str) -> String {
    let id = id.trim();
    id.strip_prefix('<')
        .and_then(|i| i.strip_suffix('>'))
        .unwrap_or(id)
        .to_string()
}

/// The MIME parts of an MTOM body: the root (the `start` part, else the first) and the rest
/// by Content-ID. A part other than the root without a Content-ID, a repeated Content-ID, a
/// body with no part (a wrong boundary) or a root that is not `application/xop+xml` is an
/// error.
async fn read_parts(
    body: Bytes,
    boundary: &str,
    start: Option<String>,
) -> Result<(Bytes, HashMap<String, Bytes>), ReadError> {
    let stream = futures::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut root: Option<Bytes> = None;
    let mut parts: HashMap<String, Bytes> = HashMap::new();
    let mut count = 0usize;
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(bad(format!("MTOM body unreadable: {e}"))),
        };
        count += 1;
        if count > MAX_PARTS {
            return Err(bad(format!("more than {MAX_PARTS} MIME parts")));
        }
        let id = field
            .headers()
            .get("content-id")
            .and_then(|v| v.to_str().ok())
            .map(strip_angle)
            .filter(|id| !id.is_empty());
        let essence = field
            .content_type()
            .map(|m| m.essence_str().to_ascii_lowercase());
        let is_root = match (&start, &id) {
            (Some(s), Some(id)) => s == id,
            (Some(_), None) => false,
            (None, _) => root.is_none() && count == 1,
        };
        let data = field
            .bytes()
            .await
            .map_err(|e| bad(format!("MTOM part unreadable: {e}")))?;
        if is_root {
            if essence.as_deref() != Some("application/xop+xml") {
                return Err(bad(
                    "the root MIME part is not application/xop+xml".to_string()
                ));
            }
            root = Some(data);
            continue;
        }
        let Some(id) = id else {
            return Err(bad(format!("MIME part {count} has no Content-ID")));
        };
        if parts.insert(id.clone(), data).is_some() {
            return Err(bad(format!("Content-ID {id:?} is used twice")));
        }
    }
    if count == 0 {
        return Err(bad("no MIME part with the announced boundary".to_string()));
    }
    let root = root.ok_or_else(|| bad("no root MIME part (start) in the MTOM body"))?;
    Ok((root, parts))
}

/// Read the envelope; `attachments` resolve its `xop:Include`s.
fn parse(xml: &[u8], attachments: &HashMap<String, Bytes>) -> Result<Envelope, ReadError> {
    let root = xml::parse_with(xml, &LIMITS).map_err(|e| match e {
        xml::XmlError::TooLarge { .. } => (XdsError::TooLarge(e.to_string()), None),
        other => bad(other.to_string()),
    })?;
    if root.is(NS_SOAP11, "Envelope") {
        return Err((XdsError::VersionMismatch, None));
    }
    if !root.is(NS_SOAP12, "Envelope") {
        return Err(bad(format!(
            "{} is not a SOAP 1.2 Envelope",
            root.expanded_name()
        )));
    }
    for e in root.descendants() {
        if e.attrs.iter().any(|(_, _, v)| v.len() > MAX_ATTRIBUTE) {
            return Err((
                XdsError::TooLarge(format!(
                    "an attribute of {} is longer than {MAX_ATTRIBUTE} bytes",
                    e.expanded_name()
                )),
                None,
            ));
        }
    }
    // Header (optional, first), then Body (SOAP 1.2 part 1 §5).
    let mut children = root.children.iter();
    let (header, body) = match (children.next(), children.next(), children.next()) {
        (Some(h), Some(b), None) if h.is(NS_SOAP12, "Header") && b.is(NS_SOAP12, "Body") => {
            (Some(h), b)
        }
        (Some(b), None, None) if b.is(NS_SOAP12, "Body") => (None, b),
        _ => {
            return Err(bad(
                "the Envelope must hold an optional Header, then a Body",
            ))
        }
    };
    let mut headers = Headers::default();
    if let Some(header) = header {
        headers.read(header)?;
    }
    let message_id = headers.message_id.clone();
    let with_id = |e: XdsError| (e, message_id.clone());
    let action = headers
        .action
        .ok_or_else(|| with_id(XdsError::HeaderRequired("wsa:Action".into())))?;
    let mut elements = body.children.iter();
    let content = match (elements.next(), elements.next()) {
        (Some(only), None) => only.clone(),
        _ => {
            return Err(with_id(XdsError::Malformed(
                "the Body must hold exactly one element".into(),
            )))
        }
    };
    for include in content.descendants().filter(|e| e.is(NS_XOP, "Include")) {
        let href = include.attr("href").unwrap_or_default();
        let id = href
            .strip_prefix("cid:")
            .map(percent_decode)
            .ok_or_else(|| with_id(XdsError::Malformed(format!("xop:Include href {href:?}"))))?;
        if !attachments.contains_key(&id) {
            return Err(with_id(XdsError::Malformed(format!(
                "xop:Include names Content-ID {id:?}, which no MIME part has"
            ))));
        }
    }
    let assertion = match headers.assertions {
        0 => None,
        1 => {
            let found = xml::extract_at(
                xml,
                &LIMITS,
                &[(NS_SOAP12, "Header"), (NS_WSSE, "Security")],
                NS_SAML,
                "Assertion",
            )
            .map_err(|e| with_id(XdsError::Malformed(e.to_string())))?;
            found.into_iter().next()
        }
        _ => {
            return Err(with_id(XdsError::InvalidSecurity(
                "more than one assertion in wsse:Security".into(),
            )))
        }
    };
    Ok(Envelope {
        action,
        message_id,
        to: headers.to,
        body: content,
        assertion,
        attachments: HashMap::new(),
        mtom: false,
        correlation_id: headers.correlation_id,
    })
}

/// The header blocks we read.
#[derive(Default)]
struct Headers {
    action: Option<String>,
    message_id: Option<String>,
    to: Option<String>,
    securities: usize,
    assertions: usize,
    correlation_id: Option<String>,
}

impl Headers {
    fn read(&mut self, header: &Element) -> Result<(), ReadError> {
        // The MessageID first, so that every Fault about the others can relate to it.
        let ids: Vec<&Element> = header.children_named(NS_WSA, "MessageID").collect();
        if ids.len() > 1 {
            return Err((
                XdsError::InvalidHeader("wsa:MessageID is repeated".into()),
                None,
            ));
        }
        self.message_id = ids
            .first()
            .map(|e| e.trimmed().to_string())
            .filter(|s| !s.is_empty());
        let with_id = |e: XdsError| (e, self.message_id.clone());
        for block in &header.children {
            let single = |slot: &Option<String>, name: &str| {
                if slot.is_some() {
                    Err(with_id(XdsError::InvalidHeader(format!(
                        "wsa:{name} is repeated"
                    ))))
                } else {
                    Ok(Some(block.trimmed().to_string()))
                }
            };
            if block.in_ns(NS_WSA) {
                match block.name.as_str() {
                    "Action" => self.action = single(&self.action, "Action")?,
                    "To" => self.to = single(&self.to, "To")?,
                    "MessageID" => {}
                    "ReplyTo" | "FaultTo" => {
                        let address = block
                            .child(NS_WSA, "Address")
                            .map(|a| a.trimmed())
                            .unwrap_or(WSA_ANONYMOUS);
                        if address != WSA_ANONYMOUS && address != WSA_NONE {
                            return Err(with_id(XdsError::OnlyAnonymous(format!(
                                "wsa:{}",
                                block.name
                            ))));
                        }
                    }
                    _ => {}
                }
                continue;
            }
            if block.is(
                crate::oplog::NS_CORRELATION,
                crate::oplog::CORRELATION_ELEMENT,
            ) {
                // The first valid one; a repeated or malformed one is ignored (it is a
                // trace, not a credential).
                if self.correlation_id.is_none() {
                    self.correlation_id = crate::oplog::correlation_from_peer(block.trimmed());
                }
                continue;
            }
            if block.is(NS_WSSE, "Security") {
                self.securities += 1;
                if self.securities > 1 {
                    return Err(with_id(XdsError::InvalidSecurity(
                        "more than one wsse:Security header".into(),
                    )));
                }
                self.assertions = block.children_named(NS_SAML, "Assertion").count();
                continue;
            }
            let must = block
                .attr_ns(NS_SOAP12, "mustUnderstand")
                .map(str::trim)
                .is_some_and(|v| v == "true" || v == "1");
            if must {
                return Err(with_id(XdsError::MustUnderstand(block.expanded_name())));
            }
        }
        if self.action.as_deref().is_some_and(str::is_empty) {
            return Err(with_id(XdsError::InvalidHeader(
                "wsa:Action is empty".into(),
            )));
        }
        Ok(())
    }
}

/// `%XX` escapes of a `cid:` URL (RFC 2392) decoded; anything else kept.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    const ACTION: &str = "urn:ihe:rad:2009:RetrieveImagingDocumentSet";

    fn soap(header: &str, body: &str) -> String {
        format!(
            r#"<s:Envelope xmlns:s="{NS_SOAP12}" xmlns:a="{NS_WSA}"><s:Header>{header}</s:Header><s:Body>{body}</s:Body></s:Envelope>"#
        )
    }

    fn plain(xml: &str) -> Result<Envelope, ReadError> {
        block_on(read(
            Some("application/soap+xml; charset=utf-8"),
            Bytes::from(xml.to_string()),
        ))
    }

    #[test]
    fn reads_the_addressing_headers_and_the_body() {
        let e = plain(&soap(
            &format!("<a:Action s:mustUnderstand=\"1\">{ACTION}</a:Action><a:MessageID>urn:uuid:1</a:MessageID><a:ReplyTo><a:Address>{WSA_ANONYMOUS}</a:Address></a:ReplyTo><a:To>https://x/xds</a:To>"),
            "<r:Req xmlns:r=\"urn:r\"/>",
        ))
        .unwrap();
        assert_eq!(e.action, ACTION);
        assert_eq!(e.message_id.as_deref(), Some("urn:uuid:1"));
        assert_eq!(e.to.as_deref(), Some("https://x/xds"));
        assert!(e.body.is("urn:r", "Req"));
        assert!(e.assertion.is_none() && !e.mtom);
    }

    #[test]
    fn bad_envelopes_are_faults() {
        let id = "<a:MessageID>m1</a:MessageID>";
        let act = format!("<a:Action>{ACTION}</a:Action>");
        type Case = (String, fn(&XdsError) -> bool, Option<&'static str>);
        let cases: Vec<Case> = vec![
            (soap(id, "<x/>"), |e| matches!(e, XdsError::HeaderRequired(_)), Some("m1")),
            (
                soap(&format!("{act}{act}"), "<x/>"),
                |e| matches!(e, XdsError::InvalidHeader(_)),
                None,
            ),
            (
                soap(&format!("{act}{id}<a:ReplyTo><a:Address>http://evil/</a:Address></a:ReplyTo>"), "<x/>"),
                |e| matches!(e, XdsError::OnlyAnonymous(_)),
                Some("m1"),
            ),
            (
                soap(&format!("{act}<w:Security xmlns:w=\"{NS_WSSE}\"/><w:Security xmlns:w=\"{NS_WSSE}\"/>"), "<x/>"),
                |e| matches!(e, XdsError::InvalidSecurity(_)),
                None,
            ),
            (
                soap(&format!("{act}<q:Other xmlns:q=\"urn:q\" s:mustUnderstand=\"true\"/>"), "<x/>"),
                |e| matches!(e, XdsError::MustUnderstand(_)),
                None,
            ),
            (soap(&act, "<x/><y/>"), |e| matches!(e, XdsError::Malformed(_)), None),
            (soap(&act, ""), |e| matches!(e, XdsError::Malformed(_)), None),
            (
                format!(r#"<s:Envelope xmlns:s="{NS_SOAP11}"><s:Body/></s:Envelope>"#),
                |e| matches!(e, XdsError::VersionMismatch),
                None,
            ),
            (
                r#"<!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>"#.to_string(),
                |e| matches!(e, XdsError::Malformed(_)),
                None,
            ),
            (
                soap(&act, &format!("<x a=\"{}\"/>", "y".repeat(MAX_ATTRIBUTE + 1))),
                |e| matches!(e, XdsError::TooLarge(_)),
                None,
            ),
            (
                soap(&act, &("<x>".repeat(40) + &"</x>".repeat(40))),
                |e| matches!(e, XdsError::Malformed(_)),
                None,
            ),
            (
                soap(&act, &format!("<x><i:Include xmlns:i=\"{NS_XOP}\" href=\"cid:nope\"/></x>")),
                |e| matches!(e, XdsError::Malformed(_)),
                None,
            ),
        ];
        for (xml, is, relates) in cases {
            let (e, id) = plain(&xml).unwrap_err();
            assert!(is(&e), "{xml}: {e:?}");
            assert_eq!(id.as_deref(), relates, "{xml}");
        }
    }

    fn mtom(
        boundary: &str,
        parts: &[(&str, Option<&str>, &str)],
        declared: &str,
    ) -> Result<Envelope, ReadError> {
        let mut body = String::new();
        for (ct, id, data) in parts {
            body.push_str(&format!("--{boundary}\r\nContent-Type: {ct}\r\n"));
            if let Some(id) = id {
                body.push_str(&format!("Content-ID: <{id}>\r\n"));
            }
            body.push_str(&format!("\r\n{data}\r\n"));
        }
        body.push_str(&format!("--{boundary}--\r\n"));
        let ct = format!(
            "multipart/related; type=\"application/xop+xml\"; boundary={declared}; start=\"<root>\"; start-info=\"application/soap+xml\""
        );
        block_on(read(Some(&ct), Bytes::from(body)))
    }

    #[test]
    fn mtom_parts_resolve_by_content_id() {
        let act = format!("<a:Action>{ACTION}</a:Action>");
        let env = soap(
            &act,
            &format!("<x><i:Include xmlns:i=\"{NS_XOP}\" href=\"cid:part%401\"/></x>"),
        );
        let xop = "application/xop+xml; type=\"application/soap+xml\"";
        let e = mtom(
            "b1",
            &[
                (xop, Some("root"), &env),
                ("application/octet-stream", Some("part@1"), "DATA"),
            ],
            "b1",
        )
        .unwrap();
        assert!(e.mtom);
        assert_eq!(&e.attachments["part@1"][..], b"DATA");
        // A wrong boundary, a part without Content-ID, a missing part, a wrong root type.
        assert!(mtom("b1", &[(xop, Some("root"), &env)], "b2").is_err());
        assert!(mtom(
            "b1",
            &[
                (xop, Some("root"), &env),
                ("application/octet-stream", None, "DATA")
            ],
            "b1"
        )
        .is_err());
        assert!(mtom("b1", &[(xop, Some("root"), &env)], "b1").is_err());
        assert!(mtom("b1", &[("text/plain", Some("root"), &env)], "b1").is_err());
    }

    #[test]
    fn the_assertion_is_kept_as_sent() {
        let assertion = format!(
            "<saml2:Assertion xmlns:saml2=\"{NS_SAML}\" ID=\"_1\"><saml2:Issuer>i</saml2:Issuer></saml2:Assertion>"
        );
        let xml = soap(
            &format!("<a:Action>{ACTION}</a:Action><w:Security xmlns:w=\"{NS_WSSE}\">{assertion}</w:Security>"),
            "<x/>",
        );
        let e = plain(&xml).unwrap();
        let kept = e.assertion.unwrap();
        assert!(kept.starts_with("<saml2:Assertion xmlns:"), "{kept}");
        assert!(kept.contains(&format!("xmlns:s=\"{NS_SOAP12}\"")), "{kept}");
        assert_eq!(kept.matches("xmlns:saml2=").count(), 1, "{kept}");
        assert!(kept.ends_with("</saml2:Assertion>"));
        let two = soap(
            &format!("<a:Action>{ACTION}</a:Action><w:Security xmlns:w=\"{NS_WSSE}\">{assertion}{assertion}</w:Security>"),
            "<x/>",
        );
        assert!(matches!(
            plain(&two),
            Err((XdsError::InvalidSecurity(_), _))
        ));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%40b"), "a@b");
        assert_eq!(percent_decode("a%4"), "a%4");
        assert_eq!(percent_decode("%zz%"), "%zz%");
    }
}
