//! The DIMSE listener and the SCP side of each service class.
//!
//! The listener is capped: at most `max_associations` run at once and the next one gets an
//! A-ASSOCIATE-RJ "local limit exceeded" (PS3.8 Table 9-21). On shutdown it stops accepting
//! (new connections are refused) and waits for the associations in flight to finish.

mod echo;
mod find;
mod get;
mod move_;
mod retrieve;
pub(crate) mod store;

use super::association::{Association, AssociationError, Event};
use super::command::CommandField;
use super::negotiate::{accept, AcceptPolicy, LinkOptions, Refusal};
use super::pdu::PduError;
use super::sop;
use crate::config::Config;
use crate::store::{BlobStore, Index};
use crate::trust::{Caller, Trust};
use dicom_ul::pdu::{AssociationRQ, PresentationContextProposed, PresentationContextResultReason};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

pub use store::StoreTally;

/// Everything an SCP handler may use.
#[derive(Debug)]
pub struct ScpContext {
    pub config: Arc<Config>,
    pub index: Arc<dyn Index>,
    pub blobs: BlobStore,
    pub trust: Arc<Trust>,
    pub link: LinkOptions,
    /// Gateway mode: the local PACS behind the cache (`[pacs]`); `None` answers from the
    /// store only.
    pub gateway: Option<Arc<crate::pacs::gateway::Gateway>>,
}

impl ScpContext {
    pub fn new(
        config: Arc<Config>,
        index: Arc<dyn Index>,
        blobs: BlobStore,
        trust: Arc<Trust>,
    ) -> Self {
        let link = LinkOptions {
            max_pdu: config.dimse.max_pdu,
            timeout: Duration::from_secs(config.dimse.timeout_secs),
        };
        let gateway = config.pacs.clone().map(|pacs| {
            Arc::new(crate::pacs::gateway::Gateway {
                pacs: crate::pacs::Pacs::new(pacs, &config.dimse.ae_title),
                fetches: Default::default(),
                blobs: blobs.clone(),
                index: index.clone(),
                cache: config.cache.clone(),
            })
        });
        ScpContext {
            config,
            index,
            blobs,
            trust,
            link,
            gateway,
        }
    }
}

/// Serve DIMSE on `listener` until `shutdown` completes, then finish in-flight associations.
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<ScpContext>,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(ctx.config.dimse.max_associations));
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let (socket, addr) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning or exiting.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = socket.set_nodelay(true);
                let ctx = ctx.clone();
                match permits.clone().try_acquire_owned() {
                    Ok(permit) => {
                        tasks.spawn(async move {
                            handle_connection(socket, addr.to_string(), ctx).await;
                            drop(permit);
                        });
                    }
                    Err(_) => {
                        tasks.spawn(refuse_busy(socket, addr.to_string(), ctx));
                    }
                }
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    drop(listener);
    tracing::info!(
        in_flight = tasks.len(),
        "DIMSE listener closed; waiting for associations in flight"
    );
    while tasks.join_next().await.is_some() {}
}

struct Busy;

impl AcceptPolicy for Busy {
    fn admit(&self, _rq: &AssociationRQ) -> Result<(), Refusal> {
        Err(Refusal::LocalLimitExceeded)
    }
    fn choose_transfer_syntax(
        &self,
        _pc: &PresentationContextProposed,
    ) -> Result<String, PresentationContextResultReason> {
        Err(PresentationContextResultReason::NoReason)
    }
}

async fn refuse_busy(socket: TcpStream, peer: String, ctx: Arc<ScpContext>) {
    let link = LinkOptions {
        timeout: Duration::from_secs(5),
        ..ctx.link.clone()
    };
    let _ = accept(
        socket,
        peer.clone(),
        &ctx.config.dimse.ae_title,
        &link,
        &Busy,
    )
    .await;
    tracing::warn!(%peer, "association refused: limit of {} reached", ctx.config.dimse.max_associations);
}

/// What we accept: verification, the query/retrieve models, and every storage SOP class
/// in any transfer syntax we can store as received.
struct Policy<'a> {
    ctx: &'a ScpContext,
    peer: &'a str,
}

impl AcceptPolicy for Policy<'_> {
    fn admit(&self, rq: &AssociationRQ) -> Result<(), Refusal> {
        let ours = &self.ctx.config.dimse.ae_title;
        if self.ctx.config.dimse.check_called_ae && rq.called_ae_title.trim() != ours {
            return Err(Refusal::CalledAeNotRecognized);
        }
        let caller = Caller::new(rq.calling_ae_title.trim(), self.peer);
        if !self.ctx.trust.admit(&caller).is_permit() {
            return Err(Refusal::CallingAeNotRecognized);
        }
        Ok(())
    }

    fn choose_transfer_syntax(
        &self,
        pc: &PresentationContextProposed,
    ) -> Result<String, PresentationContextResultReason> {
        let abs = pc.abstract_syntax.as_str();
        let accept_ts: fn(&str) -> bool = if abs == sop::VERIFICATION
            || sop::is_find(abs)
            || sop::is_move(abs)
            || sop::is_get(abs)
        {
            sop::is_native_le
        } else if sop::is_storage(abs) {
            sop::can_store_syntax
        } else {
            return Err(PresentationContextResultReason::AbstractSyntaxNotSupported);
        };
        // PS3.8 9.3.3.2: we pick one; the proposer's order is its preference.
        pc.transfer_syntaxes
            .iter()
            .map(|ts| ts.trim_end_matches('\0'))
            .find(|ts| accept_ts(ts))
            .map(str::to_string)
            .ok_or(PresentationContextResultReason::TransferSyntaxesNotSupported)
    }
}

async fn handle_connection(socket: TcpStream, peer: String, ctx: Arc<ScpContext>) {
    let policy = Policy {
        ctx: &ctx,
        peer: &peer,
    };
    let mut assoc = match accept(
        socket,
        peer.clone(),
        &ctx.config.dimse.ae_title,
        &ctx.link,
        &policy,
    )
    .await
    {
        Ok(a) => a,
        Err(e) => {
            tracing::info!(%peer, error = %e, "association not established");
            return;
        }
    };
    let caller = Caller::new(assoc.calling_ae.clone(), peer.clone());
    tracing::debug!(%peer, calling = %caller.ae_title, contexts = assoc.contexts.len(), "association accepted");
    let mut tally = StoreTally::default();
    let ending = serve_association(&ctx, &mut assoc, &caller, &mut tally).await;
    tally.audit(&ctx.trust, &caller).await;
    match ending {
        Ok(Ending::Released) => assoc.reply_release().await,
        Ok(Ending::Aborted) | Err(AssociationError::Pdu(PduError::Closed)) => {}
        Err(e) => {
            tracing::warn!(%peer, error = %e, "aborting association");
            assoc.abort().await;
        }
    }
}

enum Ending {
    Released,
    Aborted,
}

async fn serve_association(
    ctx: &ScpContext,
    assoc: &mut Association,
    caller: &Caller,
    tally: &mut StoreTally,
) -> Result<Ending, AssociationError> {
    loop {
        match assoc.next_event().await? {
            Event::Command {
                context_id,
                command,
            } => match command.field {
                CommandField::CEchoRq => {
                    echo::handle(ctx, assoc, context_id, &command, caller).await?
                }
                CommandField::CStoreRq => {
                    store::handle(ctx, assoc, context_id, &command, caller, tally).await?
                }
                CommandField::CFindRq => {
                    find::handle(ctx, assoc, context_id, &command, caller).await?
                }
                CommandField::CMoveRq => {
                    move_::handle(ctx, assoc, context_id, &command, caller).await?
                }
                CommandField::CGetRq => {
                    get::handle(ctx, assoc, context_id, &command, caller).await?
                }
                // A cancel that arrives after its operation finished is ignored (PS3.7 9.3.2.3).
                CommandField::CCancelRq => {}
                other => {
                    return Err(AssociationError::Protocol(format!(
                        "unexpected {} from requestor",
                        other.name()
                    )))
                }
            },
            Event::ReleaseRequested => return Ok(Ending::Released),
            Event::Aborted => return Ok(Ending::Aborted),
            Event::Data(_) => {
                return Err(AssociationError::Protocol(
                    "data set without a command".into(),
                ))
            }
            Event::ReleaseReplied => {
                return Err(AssociationError::Protocol("unexpected A-RELEASE-RP".into()))
            }
        }
    }
}

/// Read and discard the rest of a data set we will not use (so the association stays in step).
pub(crate) async fn drain_data_set(assoc: &mut Association) -> Result<(), AssociationError> {
    loop {
        match assoc.next_event().await? {
            Event::Data(pdv) if pdv.is_last => return Ok(()),
            Event::Data(_) => continue,
            Event::Aborted => return Err(AssociationError::Aborted),
            other => {
                return Err(AssociationError::Protocol(format!(
                    "expected data set, got {}",
                    super::association::describe_event(&other)
                )))
            }
        }
    }
}
