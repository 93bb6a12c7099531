//! The console's peers and `GET /admin/chain`: the chain monitoring's view
//! ([`crate::chain::Monitor`]) of the PACS, each remote gateway and the consent service, with
//! our own certificate and CRLs.

use super::{Admin, AdminState};
use axum::extract::State;
use axum::Json;
use serde_json::Value;

/// `GET /admin/api/peers`: probe every peer now, then the chain's state.
pub async fn peers(State(state): State<AdminState>, _admin: Admin) -> Json<Value> {
    state.chain.probe_now().await;
    Json(state.chain.snapshot())
}

/// `GET /admin/chain`: the chain's state as the scheduled probes left it
/// (`server.chain_probe_secs`), with the warnings (peers unreachable, certificates within
/// 30, 7 or 1 days of expiry).
pub async fn chain(State(state): State<AdminState>, _admin: Admin) -> Json<Value> {
    Json(state.chain.snapshot())
}
