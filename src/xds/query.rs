//! ITI-18 Registry Stored Query and ITI-38 Cross Gateway Query (ITI TF-2 3.18, 3.38): the
//! `query:AdhocQueryRequest` goes to the core's registry ([`crate::core::Core::registry_request`]:
//! consent, `$targetCommunityIdList`, the one audit record), and its `AdhocQueryResponse`
//! comes back in a plain SOAP 1.2 envelope. Every outcome of a stored query, an unknown one
//! included, is a RegistryResponse status, never a Fault (ITI TF-3 4.2.4).

use super::retrieve::Reply;
use super::{Call, XdsError};
use crate::core::RegistryScope;
use crate::trust::Operation;
use axum::http::header;
use axum::response::{IntoResponse, Response};

/// Answer ITI-18 (inside the hospital) or ITI-38 (another community: homeCommunityId on
/// every object).
pub async fn stored_query(call: Call) -> Result<Response, XdsError> {
    let Call {
        state,
        action,
        envelope,
        ticket,
    } = call;
    let scope = match action.operation {
        Operation::Iti38 => RegistryScope::CrossGateway,
        _ => RegistryScope::Local,
    };
    let answer = state
        .core
        .registry_request(ticket, &envelope.body, scope)
        .await;
    let reply = Reply {
        action: action.reply,
        relates_to: envelope.message_id.clone(),
        home_community: state.config.xds.home_community_id.clone(),
        repository: state.config.xds.repository_unique_id.clone(),
        cross: scope == RegistryScope::CrossGateway,
    };
    let xml = format!(
        "{}{}{}",
        reply.head(),
        crate::ebrim::render::adhoc_query_response(&answer),
        Reply::tail()
    );
    Ok((
        [(header::CONTENT_TYPE, "application/soap+xml; charset=UTF-8")],
        xml,
    )
        .into_response())
}
