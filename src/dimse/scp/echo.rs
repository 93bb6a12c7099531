//! Verification SOP class as SCP (PS3.4 A.4, PS3.7 9.3.5).

use super::ScpContext;
use crate::dimse::command::{CommandField, CommandSet};
use crate::dimse::status::code;
use crate::dimse::{Association, AssociationError};
use crate::trust::{Caller, Operation};

pub async fn handle(
    ctx: &ScpContext,
    assoc: &mut Association,
    context_id: u8,
    rq: &CommandSet,
    caller: &Caller,
) -> Result<(), AssociationError> {
    // A refusal is audited by the core; a permit's record is written once answered.
    let ticket = ctx.core.admit(caller, Operation::Echo).await.ok();
    let status = match ticket {
        Some(_) => code::SUCCESS,
        None => code::NOT_AUTHORIZED,
    };
    let rsp = CommandSet::response_to(rq, CommandField::CEchoRsp, status);
    assoc.send_command(context_id, &rsp).await?;
    if let Some(ticket) = ticket {
        ticket.finish("success", "").await;
    }
    Ok(())
}
