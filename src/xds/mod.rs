//! The SOAP front (IHE XDS-I.b / XCA-I, XDS.b / XCA): SOAP 1.2 with WS-Addressing on the HTTP(S)
//! listener, when `[xds] enabled`. Like every front it translates its wire into the core's
//! terms and back, and reaches the cache and the sources only through [`crate::core`]:
//!
//! - [`envelope`]: the request reader: `application/soap+xml` or MTOM/XOP
//!   (`multipart/related; type="application/xop+xml"`), size and XML limits ([`crate::xml`]:
//!   no DTDs, depth, nodes), SOAP 1.2 envelope, WS-Addressing headers, the one
//!   `wsse:Security` header and its XUA assertion as signed.
//! - [`fault`]: SOAP 1.2 Faults (`env:Sender` / `env:Receiver` with WS-Addressing and
//!   WS-Security subcodes, `wsa:RelatesTo` the request's MessageID), the one error type
//!   [`XdsError`] of the module.
//! - [`retrieve`]: RAD-69 / RAD-75 (images by Study, Series and SOP Instance UID) and ITI-43 /
//!   ITI-39 (documents by uniqueId), answered as a streamed MTOM/XOP
//!   `RetrieveDocumentSetResponse` ([`mtom`]).
//! - [`rendered`]: WADO-WS RetrieveRenderedImagingDocumentSet (JPEG / PNG renderings).
//!
//! Dispatch is by `wsa:Action` from one table, [`ACTIONS`]: the endpoint it arrives on, the
//! body element it carries, the action of the answer, the trust operation (so the audit
//! event) and the handler. Every action goes through the same steps in [`dispatch`]: read
//! the envelope, verify the caller's credentials (an XUA assertion in `wsse:Security`, or a
//! bearer JWT from inside the hospital), [`crate::core::Core::admit`] (a refusal is audited
//! there and answered `env:Sender` / `wsse:FailedAuthentication`), then the handler with the
//! operation's ticket. Adding a transaction is one entry in the table and its handler.

pub mod envelope;
pub mod fault;
pub mod mtom;
pub mod query;
pub mod rendered;
pub mod retrieve;

pub use envelope::Envelope;
pub use fault::XdsError;

use crate::core::{CoreError, Refusal, Ticket};
use crate::dicomweb::{WebCaller, WebState};
use crate::trust::Operation;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use futures::future::BoxFuture;

/// The shared state of the handlers: the same as DICOMweb's (core, trust, configuration).
pub type XdsState = WebState;

/// SOAP 1.2 envelope namespace.
pub const NS_SOAP12: &str = "http://www.w3.org/2003/05/soap-envelope";
/// SOAP 1.1 envelope namespace (answered with a VersionMismatch Fault).
pub const NS_SOAP11: &str = "http://schemas.xmlsoap.org/soap/envelope/";
/// WS-Addressing 1.0.
pub const NS_WSA: &str = "http://www.w3.org/2005/08/addressing";
/// WS-Security 1.0 secext.
pub const NS_WSSE: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd";
/// XOP include.
pub const NS_XOP: &str = "http://www.w3.org/2004/08/xop/include";
/// XDS.b (ITI-43 / ITI-39 and the RetrieveDocumentSetResponse of RAD-69 / RAD-75).
pub const NS_XDSB: &str = "urn:ihe:iti:xds-b:2007";
/// XDS-I.b (RAD-69 / RAD-75 requests).
pub const NS_XDSI: &str = "urn:ihe:rad:xdsi-b:2009";
/// ebRS 3.0 registry services (RegistryResponse, RegistryError).
pub const NS_RS: &str = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0";

/// The SOAP endpoints on the HTTP listener.
pub const ENDPOINTS: &[&str] = &[
    "/xds/registry",
    "/xds/repository",
    "/xca/query",
    "/xca/retrieve",
    "/wado-ws",
];

/// A handler: the admitted call in, the HTTP answer (a Fault included) out.
pub type Handler = fn(Call) -> BoxFuture<'static, Result<Response, XdsError>>;

/// One SOAP action this gateway answers.
#[derive(Debug)]
pub struct Action {
    /// `wsa:Action` of the request.
    pub action: &'static str,
    /// The endpoint (path) it is answered on.
    pub endpoint: &'static str,
    /// The body element the request carries: (namespace, local name).
    pub body: (&'static str, &'static str),
    /// `wsa:Action` of the answer.
    pub reply: &'static str,
    /// The trust decision and audit event of the call.
    pub operation: Operation,
    pub handler: Handler,
}

/// Every action, by endpoint.
pub static ACTIONS: &[Action] = &[
    Action {
        action: "urn:ihe:iti:2007:RegistryStoredQuery",
        endpoint: "/xds/registry",
        body: (crate::ebrim::ns::QUERY, "AdhocQueryRequest"),
        reply: "urn:ihe:iti:2007:RegistryStoredQueryResponse",
        operation: Operation::Iti18,
        handler: |call| Box::pin(query::stored_query(call)),
    },
    Action {
        action: "urn:ihe:iti:2007:CrossGatewayQuery",
        endpoint: "/xca/query",
        body: (crate::ebrim::ns::QUERY, "AdhocQueryRequest"),
        reply: "urn:ihe:iti:2007:CrossGatewayQueryResponse",
        operation: Operation::Iti38,
        handler: |call| Box::pin(query::stored_query(call)),
    },
    Action {
        action: "urn:ihe:rad:2009:RetrieveImagingDocumentSet",
        endpoint: "/xds/repository",
        body: (NS_XDSI, "RetrieveImagingDocumentSetRequest"),
        reply: "urn:ihe:iti:2007:RetrieveDocumentSetResponse",
        operation: Operation::Rad69,
        handler: |call| Box::pin(retrieve::imaging(call)),
    },
    Action {
        action: "urn:ihe:iti:2007:RetrieveDocumentSet",
        endpoint: "/xds/repository",
        body: (NS_XDSB, "RetrieveDocumentSetRequest"),
        reply: "urn:ihe:iti:2007:RetrieveDocumentSetResponse",
        operation: Operation::Iti43,
        handler: |call| Box::pin(retrieve::documents(call)),
    },
    Action {
        action: "urn:ihe:rad:2011:CrossGatewayRetrieveImagingDocumentSet",
        endpoint: "/xca/retrieve",
        body: (NS_XDSI, "RetrieveImagingDocumentSetRequest"),
        reply: "urn:ihe:rad:2011:CrossGatewayRetrieveImagingDocumentSetResponse",
        operation: Operation::Rad75,
        handler: |call| Box::pin(retrieve::imaging(call)),
    },
    Action {
        action: "urn:ihe:iti:2007:CrossGatewayRetrieve",
        endpoint: "/xca/retrieve",
        body: (NS_XDSB, "RetrieveDocumentSetRequest"),
        reply: "urn:ihe:iti:2007:CrossGatewayRetrieveResponse",
        operation: Operation::Iti39,
        handler: |call| Box::pin(retrieve::documents(call)),
    },
    Action {
        action: "urn:dicom:wado:ws:2011:RetrieveRenderedImagingDocumentSet",
        endpoint: "/wado-ws",
        body: (
            rendered::NS_WADO,
            "RetrieveRenderedImagingDocumentSetRequest",
        ),
        reply: "urn:dicom:wado:ws:2011:RetrieveRenderedImagingDocumentSetResponse",
        operation: Operation::WadoWs,
        handler: |call| Box::pin(rendered::rendered(call)),
    },
];

/// The action a request names on an endpoint.
pub fn action(endpoint: &str, action: &str) -> Option<&'static Action> {
    ACTIONS
        .iter()
        .find(|a| a.endpoint == endpoint && a.action == action.trim())
}

/// An admitted call: the envelope read, the action, the operation's ticket (owed its one
/// audit record).
pub struct Call {
    pub state: XdsState,
    pub action: &'static Action,
    pub envelope: Envelope,
    pub ticket: Ticket,
}

impl Call {
    /// Whether the request came in as a cross-community call (RAD-75, ITI-39): the answer
    /// then names our homeCommunityId on every document.
    pub fn cross_community(&self) -> bool {
        matches!(self.action.operation, Operation::Rad75 | Operation::Iti39)
    }
}

/// The `/xds/*`, `/xca/*` and `/wado-ws` routes.
pub fn router(state: XdsState) -> Router {
    let mut router = Router::new();
    for &endpoint in ENDPOINTS {
        router = router.route(
            endpoint,
            post(
                move |State(state): State<XdsState>,
                      caller: WebCaller,
                      headers: HeaderMap,
                      body: Body| async move {
                    dispatch(state, endpoint, caller, headers, body).await
                },
            ),
        );
    }
    router.with_state(state)
}

/// Read, verify, admit, answer: the steps every action takes.
async fn dispatch(
    state: XdsState,
    endpoint: &'static str,
    caller: WebCaller,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = match axum::body::to_bytes(body, envelope::MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return fault::response(
                &XdsError::TooLarge(format!(
                    "the request is larger than {} bytes",
                    envelope::MAX_BODY
                )),
                None,
            )
        }
    };
    let envelope = match envelope::read(content_type.as_deref(), bytes).await {
        Ok(e) => e,
        Err((e, message_id)) => return fault::response(&e, message_id.as_deref()),
    };
    let relates_to = envelope.message_id.clone();
    let fail = |e: XdsError| fault::response(&e, relates_to.as_deref());
    let Some(action) = action(endpoint, &envelope.action) else {
        return fail(XdsError::ActionNotSupported(envelope.action.clone()));
    };
    if !envelope.body.is(action.body.0, action.body.1) {
        return fail(XdsError::Malformed(format!(
            "{} carries {{{}}}{}, not {}",
            action.action,
            action.body.0,
            action.body.1,
            envelope.body.expanded_name()
        )));
    }
    let mut caller = caller.0;
    if envelope.correlation_id.is_some() {
        caller.correlation_id = envelope.correlation_id.clone();
    }
    if let Some(assertion) = &envelope.assertion {
        // The assertion of the WS-Security header is the call's credential; a bearer token
        // beside it is not looked at.
        caller.credential_error = None;
        caller.claims = None;
        let verified = match state
            .trust
            .saml
            .verify(assertion, caller.participant.as_deref())
        {
            Ok(claims) => state
                .trust
                .claim_token_across_nodes(&claims)
                .await
                .map(|()| claims),
            Err(e) => Err(e.to_string()),
        };
        match verified {
            Ok(claims) => {
                if caller.participant.is_none() {
                    caller.ae_title = claims.subject.clone();
                }
                caller.claims = Some(claims);
            }
            Err(why) => caller.credential_error = Some(format!("XUA assertion: {why}")),
        }
    }
    let ticket = match state.core.admit(&caller, action.operation).await {
        Ok(t) => t,
        Err(e) => return fail(XdsError::from(e)),
    };
    let call = Call {
        state,
        action,
        envelope,
        ticket,
    };
    match (action.handler)(call).await {
        Ok(response) => response,
        Err(e) => fail(e),
    }
}

impl From<CoreError> for XdsError {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::Refused(Refusal::Unauthenticated(why))
            | CoreError::Refused(Refusal::Forbidden(why)) => XdsError::FailedAuthentication(why),
            CoreError::Refused(Refusal::Unavailable(why)) => XdsError::Unavailable(why),
            CoreError::NotFound(why) => XdsError::Internal(why),
            CoreError::Source(e) => XdsError::Unavailable(format!(
                "the {} could not answer: {}",
                e.source_name, e.message
            )),
            CoreError::Index(e) if e.is_unavailable() => XdsError::Unavailable(e.to_string()),
            CoreError::Index(e) => XdsError::Internal(e.to_string()),
        }
    }
}
