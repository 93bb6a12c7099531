//! Verification SOP class as SCP (PS3.4 A.4, PS3.7 9.3.5).

use super::ScpContext;
use crate::dimse::command::{CommandField, CommandSet};
use crate::dimse::status::code;
use crate::dimse::{Association, AssociationError};
use crate::trust::{Caller, Operation, Outcome};

pub async fn handle(
    ctx: &ScpContext,
    assoc: &mut Association,
    context_id: u8,
    rq: &CommandSet,
    caller: &Caller,
) -> Result<(), AssociationError> {
    let status = if ctx.trust.decide(caller, Operation::Echo).is_permit() {
        code::SUCCESS
    } else {
        code::NOT_AUTHORIZED
    };
    let rsp = CommandSet::response_to(rq, CommandField::CEchoRsp, status);
    assoc.send_command(context_id, &rsp).await?;
    let result = if status == code::SUCCESS {
        "success"
    } else {
        "refused"
    };
    ctx.trust
        .audit(
            caller,
            Operation::Echo,
            Outcome {
                result: result.into(),
                ..Default::default()
            },
        )
        .await;
    Ok(())
}
