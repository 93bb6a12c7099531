//! SOAP 1.2 Faults (SOAP 1.2 part 1 §5.4) with the WS-Addressing fault action and
//! `wsa:RelatesTo` (WS-Addressing SOAP binding §6), and the one error type of the SOAP front.
//!
//! A Fault names what was wrong with the request in terms of the request (never a path, a
//! query or a stack): the caller's own mistakes are `env:Sender` (HTTP 400, SOAP 1.2 part 2
//! §7.5.1.2), ours are `env:Receiver` (HTTP 500, or 503 when nothing is served now) with a
//! generic text; what went wrong inside is logged.

use super::{NS_SOAP12, NS_WSA, NS_WSSE};
use crate::xml::escape;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// `wsa:Action` of every Fault (WS-Addressing SOAP binding §6).
pub const FAULT_ACTION: &str = "http://www.w3.org/2005/08/addressing/soap/fault";

/// Why a SOAP request is answered with a Fault.
#[derive(Debug, thiserror::Error)]
pub enum XdsError {
    /// Not a SOAP 1.2 message we can read: media type, MIME framing, XML, envelope, body.
    #[error("{0}")]
    Malformed(String),
    /// Larger than the limits.
    #[error("{0}")]
    TooLarge(String),
    /// A SOAP 1.1 (or other) envelope.
    #[error("only SOAP 1.2 envelopes are accepted")]
    VersionMismatch,
    /// A header block with `mustUnderstand` that we do not process.
    #[error("header {0} is not understood")]
    MustUnderstand(String),
    /// A required WS-Addressing header is missing (wsa:Action).
    #[error("WS-Addressing header {0} is required")]
    HeaderRequired(String),
    /// A WS-Addressing header is invalid or repeated.
    #[error("{0}")]
    InvalidHeader(String),
    /// A non-anonymous `wsa:ReplyTo` / `wsa:FaultTo`: we answer on the same connection only.
    #[error("only the anonymous address is supported for {0}")]
    OnlyAnonymous(String),
    /// No action of that name on this endpoint.
    #[error("action {0:?} is not supported on this endpoint")]
    ActionNotSupported(String),
    /// The WS-Security header cannot be processed (repeated, several assertions).
    #[error("{0}")]
    InvalidSecurity(String),
    /// The trust decision refused the call (credentials missing or bad, or not allowed).
    #[error("{0}")]
    FailedAuthentication(String),
    /// Nothing is served now (the audit trail cannot be written, a source is unreachable).
    #[error("{0}")]
    Unavailable(String),
    /// Something went wrong on our side: logged, answered generically.
    #[error("{0}")]
    Internal(String),
}

impl XdsError {
    /// `env:Code/env:Value`, and the subcode (namespace, qualified name) where there is one.
    fn codes(&self) -> (&'static str, Option<(&'static str, &'static str)>) {
        let wsa = |s| Some((NS_WSA, s));
        let wsse = |s| Some((NS_WSSE, s));
        match self {
            XdsError::Malformed(_) | XdsError::TooLarge(_) => ("env:Sender", None),
            XdsError::VersionMismatch => ("env:VersionMismatch", None),
            XdsError::MustUnderstand(_) => ("env:MustUnderstand", None),
            XdsError::HeaderRequired(_) => {
                ("env:Sender", wsa("wsa:MessageAddressingHeaderRequired"))
            }
            XdsError::InvalidHeader(_) => ("env:Sender", wsa("wsa:InvalidAddressingHeader")),
            XdsError::OnlyAnonymous(_) => ("env:Sender", wsa("wsa:OnlyAnonymousAddressSupported")),
            XdsError::ActionNotSupported(_) => ("env:Sender", wsa("wsa:ActionNotSupported")),
            XdsError::InvalidSecurity(_) => ("env:Sender", wsse("wsse:InvalidSecurity")),
            XdsError::FailedAuthentication(_) => ("env:Sender", wsse("wsse:FailedAuthentication")),
            XdsError::Unavailable(_) | XdsError::Internal(_) => ("env:Receiver", None),
        }
    }

    /// The HTTP status of the Fault (SOAP 1.2 part 2 §7.5.1.2).
    pub fn status(&self) -> StatusCode {
        match self {
            XdsError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            XdsError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// The `env:Reason` text: the problem with the request; ours only in general terms.
    fn reason(&self) -> String {
        match self {
            XdsError::Internal(_) => "the request could not be processed".into(),
            other => other.to_string(),
        }
    }
}

/// The Fault envelope for `error`, relating to the request's MessageID when it had one.
pub fn envelope(error: &XdsError, relates_to: Option<&str>) -> String {
    let (code, subcode) = error.codes();
    let subcode = match subcode {
        Some((ns, qname)) => {
            let prefix = qname.split(':').next().unwrap_or_default();
            format!(
                "<env:Subcode><env:Value xmlns:{prefix}=\"{ns}\">{qname}</env:Value></env:Subcode>"
            )
        }
        None => String::new(),
    };
    let relates = relates_to
        .map(|id| format!("<wsa:RelatesTo>{}</wsa:RelatesTo>", escape(id)))
        .unwrap_or_default();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
<env:Envelope xmlns:env=\"{NS_SOAP12}\" xmlns:wsa=\"{NS_WSA}\">\
<env:Header><wsa:Action env:mustUnderstand=\"true\">{FAULT_ACTION}</wsa:Action>\
<wsa:MessageID>urn:uuid:{id}</wsa:MessageID>{relates}</env:Header>\
<env:Body><env:Fault><env:Code><env:Value>{code}</env:Value>{subcode}</env:Code>\
<env:Reason><env:Text xml:lang=\"en\">{reason}</env:Text></env:Reason></env:Fault></env:Body>\
</env:Envelope>\n",
        id = crate::trust::consent::new_uuid(),
        reason = escape(&error.reason()),
    )
}

/// The Fault as an HTTP answer.
pub fn response(error: &XdsError, relates_to: Option<&str>) -> Response {
    let status = error.status();
    if status.is_server_error() {
        tracing::warn!(error = %error, "SOAP request failed");
    } else {
        tracing::info!(error = %error, "SOAP request refused with a Fault");
    }
    let mut response = (status, envelope(error, relates_to)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/soap+xml; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_names_its_codes_and_relates_to_the_request() {
        let xml = envelope(
            &XdsError::FailedAuthentication("no assertion".into()),
            Some("urn:uuid:1<2"),
        );
        let root = crate::xml::parse(xml.as_bytes()).unwrap();
        assert!(root.is(NS_SOAP12, "Envelope"));
        let header = root.child(NS_SOAP12, "Header").unwrap();
        assert_eq!(header.child(NS_WSA, "Action").unwrap().text, FAULT_ACTION);
        assert_eq!(
            header.child(NS_WSA, "RelatesTo").unwrap().text,
            "urn:uuid:1<2"
        );
        let fault = root
            .child(NS_SOAP12, "Body")
            .and_then(|b| b.child(NS_SOAP12, "Fault"))
            .unwrap();
        let code = fault.child(NS_SOAP12, "Code").unwrap();
        assert_eq!(code.child(NS_SOAP12, "Value").unwrap().text, "env:Sender");
        let sub = code.child(NS_SOAP12, "Subcode").unwrap();
        assert_eq!(
            sub.child(NS_SOAP12, "Value").unwrap().text,
            "wsse:FailedAuthentication"
        );
        // Internal problems are not told.
        let xml = envelope(&XdsError::Internal("/var/lib/x: disk".into()), None);
        assert!(!xml.contains("/var/lib") && !xml.contains("RelatesTo"));
        assert!(xml.contains("env:Receiver"));
    }
}
