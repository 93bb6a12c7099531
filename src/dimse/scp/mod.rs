//! The DIMSE listener and the SCP side of each service class.
//!
//! The listener is capped: at most `max_associations` run at once (and at most
//! `max_associations_per_address` from one address) and the next one gets an
//! A-ASSOCIATE-RJ "local limit exceeded" (PS3.8 Table 9-21). A connection holds no slot
//! until its A-ASSOCIATE-RQ is in: until then it is pending, closed by the ARTIM timer
//! (`artim_secs`, PS3.8 9.1.5) and bounded in number (`max_pending`,
//! `max_pending_per_address`; beyond them the oldest pending connection is closed), so idle
//! or trickling connections cannot lock real peers out (see `admission.rs`). On shutdown it
//! stops accepting (new connections are refused) and waits for the associations in flight
//! to finish, until the shutdown deadline aborts those left (`ScpContext::abort`).
//!
//! [`serve_tls`] is the same listener over DICOM TLS (PS3.15 B.1): the handshake comes first
//! (in the connection's task, so a slow client never holds the accept loop; it counts
//! against the same ARTIM deadline), then the association. The limits are shared by both
//! listeners. A `[[dimse.peers]]` entry with `certificate_sha256` is only admitted over TLS
//! with exactly that certificate.

mod admission;
mod echo;
mod find;
mod get;
mod move_;
mod retrieve;
mod store;

/// Identifiers (C-FIND, C-GET, C-MOVE) are small; more than this is a misbehaving peer.
const MAX_IDENTIFIER: usize = 1024 * 1024;

use super::association::{Association, AssociationError, Event};
use super::command::CommandField;
use super::negotiate::{accept, AcceptPolicy, LinkOptions, Refusal};
use super::pdu::PduError;
use super::receive::MoveArrivals;
use super::sop;
use crate::config::Config;
use crate::core::Stores;
use crate::trust::tls::{TlsPeer, TlsState};
use crate::trust::{Caller, Trust};
use admission::{Admission, Closed, Full, Limits, Pending, Slot};
use dicom_ul::pdu::{AssociationRQ, PresentationContextProposed, PresentationContextResultReason};
use std::borrow::Cow;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tracing::Instrument;

/// Everything an SCP handler (and a DICOMweb handler: `dicomweb::WebState`) may use: the
/// core, through which every query, retrieve and store goes, and the trust layer for who
/// the caller is. No store, index or PACS: a front reaches those through the core only.
#[derive(Debug)]
pub struct ScpContext {
    pub config: Arc<Config>,
    pub trust: Arc<Trust>,
    pub link: LinkOptions,
    /// Where every query, retrieve and store is answered (C-FIND, C-MOVE, C-GET, C-STORE,
    /// QIDO-RS, WADO-RS, STOW-RS).
    pub core: Arc<crate::core::Core>,
    /// Gateway mode: our C-MOVE retrieves waiting for the sub-operations the Storage SCP
    /// receives.
    pub move_arrivals: Option<Arc<dyn MoveArrivals>>,
    /// Pending connections and association slots, shared by the plain and the TLS listener.
    admission: Arc<Admission>,
    /// The live TLS configurations (`TlsState::peer_client` toward TLS peers).
    pub tls: Arc<TlsState>,
    /// Cancelled when the shutdown deadline passes: associations still open get an A-ABORT
    /// and the HTTP listeners stop (`server::Running::stop_within`).
    pub abort: tokio_util::sync::CancellationToken,
}

impl ScpContext {
    pub fn new(
        config: Arc<Config>,
        trust: Arc<Trust>,
        core: Arc<crate::core::Core>,
        move_arrivals: Option<Arc<dyn MoveArrivals>>,
    ) -> Self {
        let link = LinkOptions {
            max_pdu: config.dimse.max_pdu,
            timeout: Duration::from_secs(config.dimse.timeout_secs),
        };
        let admission = Admission::new(Limits::of(&config.dimse));
        ScpContext {
            config,
            trust,
            link,
            core,
            move_arrivals,
            admission,
            tls: Arc::new(TlsState::disabled()),
            abort: Default::default(),
        }
    }

    /// The TLS configurations loaded at start (server start sets them).
    pub fn with_tls(mut self, tls: Arc<TlsState>) -> Self {
        self.tls = tls;
        self
    }
}

/// Serve DIMSE on `listener` until `shutdown` completes, then finish in-flight associations.
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<ScpContext>,
    shutdown: impl Future<Output = ()>,
) {
    serve_on(listener, ctx, None, shutdown).await
}

/// Serve DICOM TLS (PS3.15 B.1) on `listener`: each connection gets the TLS configuration
/// current when it was accepted (reloaded without restart, see `trust::tls::reload`).
pub async fn serve_tls(
    listener: TcpListener,
    ctx: Arc<ScpContext>,
    tls: Arc<TlsState>,
    shutdown: impl Future<Output = ()>,
) {
    serve_on(listener, ctx, Some(tls), shutdown).await
}

async fn serve_on(
    listener: TcpListener,
    ctx: Arc<ScpContext>,
    tls: Option<Arc<TlsState>>,
    shutdown: impl Future<Output = ()>,
) {
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
                let pending = ctx.admission.pending(addr);
                match &tls {
                    None => {
                        tasks.spawn(handle_connection(socket, addr, ctx, None, pending));
                    }
                    Some(tls) => {
                        let Some(config) = tls.dimse() else {
                            tracing::error!("DICOM TLS listener without a TLS configuration");
                            break;
                        };
                        let acceptor = tokio_rustls::TlsAcceptor::from(config);
                        tasks.spawn(async move {
                            let handshake = tokio::select! {
                                closed = pending.closed() => {
                                    log_closed(closed, &addr, &ctx, "during the DICOM TLS handshake");
                                    return;
                                }
                                handshake = acceptor.accept(socket) => handshake,
                            };
                            let stream = match handshake {
                                Ok(s) => s,
                                Err(e) => {
                                    tracing::info!(peer = %addr, error = %e, "DICOM TLS handshake refused");
                                    return;
                                }
                            };
                            let tls_peer = TlsPeer::of(stream.get_ref().1);
                            handle_connection(stream, addr, ctx, tls_peer, pending).await
                        });
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

/// A pending connection is closed: say why (PS3.8 9.1.5), without anything from the peer.
fn log_closed(closed: Closed, peer: &SocketAddr, ctx: &ScpContext, when: &str) {
    match closed {
        Closed::Artim => tracing::info!(
            %peer,
            artim_secs = ctx.admission.limits().artim.as_secs(),
            "connection closed {when}: no A-ASSOCIATE-RQ within the ARTIM time (dimse.artim_secs)"
        ),
        // Logged when displaced, with the limit that did it.
        Closed::Displaced => {}
    }
}

/// What we accept: verification, the query/retrieve models, and every storage SOP class
/// in any transfer syntax we can store as received.
struct Policy<'a> {
    ctx: &'a ScpContext,
    peer: &'a str,
    tls: Option<&'a TlsPeer>,
    pending: &'a Pending,
    /// Taken by `admit` once everything else admits the association; held while it runs.
    slot: OnceLock<Slot>,
    /// The association's id in the operations log and its audit records.
    request_id: &'a str,
    /// The calling AE title of the request, once seen (for the log line of a rejection).
    calling: OnceLock<String>,
}

impl Policy<'_> {
    /// A refused association is audited like any refusal (one record). `admit` runs inside
    /// the negotiation, synchronously, so the record is written by a task of its own.
    fn audit_refusal(&self, caller: Caller, why: String) {
        let trust = self.ctx.trust.clone();
        tokio::spawn(async move {
            let outcome = crate::trust::Outcome {
                result: "refused".into(),
                detail: why,
                ..Default::default()
            };
            trust
                .audit(&caller, crate::trust::Operation::Associate, outcome)
                .await;
        });
    }
}

impl AcceptPolicy for Policy<'_> {
    fn admit(&self, rq: &AssociationRQ) -> Result<(), Refusal> {
        let _ = self.calling.set(rq.calling_ae_title.trim().to_string());
        let ours = &self.ctx.config.dimse.ae_title;
        if self.ctx.config.dimse.check_called_ae && rq.called_ae_title.trim() != ours {
            return Err(Refusal::CalledAeNotRecognized);
        }
        let calling = rq.calling_ae_title.trim();
        let mut caller = Caller::dimse(calling, self.peer);
        caller.certificate_sha256 = self.tls.map(|p| p.certificate_sha256.clone());
        caller.request_id = Some(self.request_id.to_string());
        // Fail closed: nothing is served while the audit trail cannot be written (PS3.8
        // Table 9-21: transient, temporary congestion; the peer tries again later).
        if let Some(why) = self.ctx.trust.audit_unavailable() {
            tracing::warn!(peer = %self.peer, calling, "association refused: {why}");
            self.audit_refusal(caller, why);
            return Err(Refusal::TemporaryCongestion);
        }
        if let crate::trust::Decision::Deny(why) = self.ctx.trust.admit(&caller) {
            self.audit_refusal(caller, why);
            return Err(Refusal::CallingAeNotRecognized);
        }
        if let Some(expected) = self
            .ctx
            .config
            .peer(calling)
            .and_then(|p| p.certificate_sha256.as_deref())
        {
            let presented = self.tls.map(|p| p.certificate_sha256.as_str());
            if !presented.is_some_and(|fp| crate::trust::tls::same_fingerprint(fp, expected)) {
                tracing::warn!(
                    peer = %self.peer,
                    calling,
                    presented = presented.unwrap_or("(no TLS client certificate)"),
                    "association refused: the peer's certificate is not the one configured"
                );
                let why = "the TLS client certificate is not the one configured for this AE";
                self.audit_refusal(caller, why.into());
                return Err(Refusal::CallingAeNotRecognized);
            }
        }
        // Last, so that a caller refused for who it is never takes a slot.
        match self.pending.admit() {
            Ok(slot) => {
                let _ = self.slot.set(slot);
                Ok(())
            }
            Err(full) => {
                let limit = match full {
                    Full::Listener(n) => format!("dimse.max_associations ({n})"),
                    Full::Address(n) => format!("dimse.max_associations_per_address ({n})"),
                };
                tracing::warn!(peer = %self.peer, calling, %limit, "association refused: limit reached");
                Err(Refusal::LocalLimitExceeded)
            }
        }
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

async fn handle_connection<S>(
    socket: S,
    addr: SocketAddr,
    ctx: Arc<ScpContext>,
    tls: Option<TlsPeer>,
    pending: Pending,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let started = std::time::Instant::now();
    let request_id = crate::oplog::request_id();
    let peer = addr.to_string();
    let policy = Policy {
        ctx: &ctx,
        peer: &peer,
        tls: tls.as_ref(),
        pending: &pending,
        slot: OnceLock::new(),
        request_id: &request_id,
        calling: OnceLock::new(),
    };
    let accepted = tokio::select! {
        closed = pending.closed() => {
            log_closed(closed, &addr, &ctx, "before its association");
            return;
        }
        accepted = accept(
            socket,
            peer.clone(),
            &ctx.config.dimse.ae_title,
            &ctx.link,
            &policy,
        ) => accepted,
    };
    let mut assoc = match accepted {
        Ok(a) => a,
        Err(e) => {
            tracing::info!(%peer, error = %e, "association not established");
            let outcome = match e {
                AssociationError::Rejected(_) => "rejected",
                _ => "aborted",
            };
            let calling = policy.calling.get().map(String::as_str).unwrap_or("");
            crate::oplog::association(
                &request_id,
                calling,
                &peer,
                outcome,
                &Default::default(),
                started,
            );
            return;
        }
    };
    // Accepted means admitted: the slot is ours until the association ends.
    let Some(_slot) = policy.slot.into_inner() else {
        tracing::error!(%peer, "association accepted without a slot");
        assoc.abort().await;
        return;
    };
    drop(pending);
    let _open = crate::metrics::association_opened();
    let mut caller = Caller::dimse(assoc.calling_ae.clone(), peer.clone());
    caller.request_id = Some(request_id.clone());
    if let Some(tls) = &tls {
        caller.participant = ctx.trust.participants.lookup(&tls.certificate_sha256);
        caller.certificate_sha256 = Some(tls.certificate_sha256.clone());
    }
    tracing::debug!(%peer, calling = %caller.ae_title, contexts = assoc.contexts.len(), "association accepted");
    let mut stores = ctx.core.stores(&caller);
    let mut activity = crate::oplog::AssociationActivity::default();
    // At the shutdown deadline the operation in progress is dropped: a store not yet
    // answered leaves no acknowledged instance behind (its temp file goes with it).
    let ending = tokio::select! {
        ending = serve_association(&ctx, &mut assoc, &caller, &mut stores, &mut activity) => ending,
        _ = ctx.abort.cancelled() => Ok(Ending::ShutDown),
    };
    activity.stored = stores.stored_count();
    stores.finish().await;
    activity.sent = assoc.instances_sent;
    let outcome = match ending {
        Ok(Ending::Released) => {
            assoc.reply_release().await;
            "released"
        }
        Ok(Ending::ShutDown) => {
            tracing::warn!(%peer, "shutdown deadline: aborting association");
            assoc.abort().await;
            "aborted at the shutdown deadline"
        }
        Ok(Ending::Aborted) | Err(AssociationError::Pdu(PduError::Closed)) => "aborted",
        Err(e) => {
            tracing::warn!(%peer, error = %e, "aborting association");
            assoc.abort().await;
            "aborted"
        }
    };
    crate::oplog::association(
        &request_id,
        &caller.ae_title,
        &peer,
        outcome,
        &activity,
        started,
    );
}

enum Ending {
    Released,
    Aborted,
    /// The shutdown deadline passed (we abort).
    ShutDown,
}

/// The root span of one operation on the association (`telemetry`) and the caller whose
/// audit record names its trace (the association's own when the operation is not traced).
fn traced<'a>(operation: &str, caller: &'a Caller) -> (tracing::Span, Cow<'a, Caller>) {
    let span = crate::telemetry::dimse_operation(operation, &caller.ae_title);
    match crate::telemetry::trace_id(&span) {
        Some(id) => {
            let mut traced = caller.clone();
            traced.trace_id = Some(id);
            (span, Cow::Owned(traced))
        }
        None => (span, Cow::Borrowed(caller)),
    }
}

async fn serve_association(
    ctx: &ScpContext,
    assoc: &mut Association,
    caller: &Caller,
    stores: &mut Stores,
    activity: &mut crate::oplog::AssociationActivity,
) -> Result<Ending, AssociationError> {
    let mut stores_span: Option<tracing::Span> = None;
    loop {
        match assoc.next_event().await? {
            Event::Command {
                context_id,
                command,
            } => match command.field {
                CommandField::CEchoRq => {
                    activity.echo += 1;
                    echo::handle(ctx, assoc, context_id, &command, caller).await?
                }
                CommandField::CStoreRq => {
                    activity.store += 1;
                    // The association's C-STOREs are one transfer: one trace (its root span
                    // lives as long as the association), one span per instance in it, and
                    // the one audit record of the stores names that trace.
                    let stores_span = stores_span.get_or_insert_with(|| {
                        let span = crate::telemetry::dimse_operation("C-STORE", &caller.ae_title);
                        if let Some(id) = crate::telemetry::trace_id(&span) {
                            stores.traced(id);
                        }
                        span
                    });
                    let span = stores_span.in_scope(|| crate::telemetry::sub_operation("C-STORE"));
                    store::handle(ctx, assoc, context_id, &command, stores)
                        .instrument(span)
                        .await?
                }
                CommandField::CFindRq => {
                    activity.find += 1;
                    let (span, caller) = traced("C-FIND", caller);
                    find::handle(ctx, assoc, context_id, &command, &caller)
                        .instrument(span)
                        .await?
                }
                CommandField::CMoveRq => {
                    activity.move_ += 1;
                    let (span, caller) = traced("C-MOVE", caller);
                    move_::handle(ctx, assoc, context_id, &command, &caller)
                        .instrument(span)
                        .await?
                }
                CommandField::CGetRq => {
                    activity.get += 1;
                    let (span, caller) = traced("C-GET", caller);
                    get::handle(ctx, assoc, context_id, &command, &caller)
                        .instrument(span)
                        .await?
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
