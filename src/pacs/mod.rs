//! The local PACS as a source (gateway mode, DESIGN "sources"): the hospital's archive stays
//! the source of truth and beeldbrug answers from it on demand.
//!
//! - [`config`]: `[pacs]` and `[cache]`.
//! - [`Pacs`]: associations toward the PACS, at most `max_associations` at once; further
//!   requests queue, and a PACS that refuses a transient "local limit exceeded" is retried.
//! - [`query`]: QIDO-RS / core queries answered by C-FIND.
//! - [`fetch`]: C-GET and C-MOVE retrieves that store each instance as it arrives.
//! - [`moves`]: routes the C-STORE sub-operations of our C-MOVEs, which arrive on our own
//!   SCP, to the retrieve that asked for them.
//! - [`source`]: the PACS behind the core's one `Source` contract (find, count, fetch).
//! - [`probe`]: the capability probe: what the PACS supports, as a report, and the retrieve
//!   mode it recommends.
//! - [`forward`]: studies received by STOW-RS forwarded to the PACS by C-STORE, through a
//!   durable queue with retries.

pub mod config;
pub mod fetch;
pub mod forward;
pub mod moves;
pub mod probe;
pub mod query;
pub mod source;

use crate::dimse::association::{Association, AssociationError};
use crate::dimse::negotiate::{LinkOptions, ProposedContext};
use crate::dimse::scu::{self, ScuOptions};
use config::{PacsConfig, RetrieveMode};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why the PACS could not answer.
#[derive(Debug, thiserror::Error)]
pub enum PacsError {
    #[error("PACS {ae} at {addr}: {source}")]
    Association {
        ae: String,
        addr: String,
        source: AssociationError,
    },
    #[error("PACS answered C-FIND with status 0x{0:04X}")]
    FindStatus(u16),
    #[error("PACS retrieve failed: {0}")]
    Retrieve(String),
    #[error("PACS accepted none of the proposed presentation contexts for {0}")]
    NotSupported(&'static str),
    #[error("retrieve cancelled")]
    Cancelled,
}

impl PacsError {
    /// An association on which the PACS accepted none of our contexts means it does not
    /// offer the service at all.
    pub fn unsupported_as(self, service: &'static str) -> PacsError {
        match self {
            PacsError::Association {
                source: AssociationError::NoContexts,
                ..
            } => PacsError::NotSupported(service),
            other => other,
        }
    }
}

/// An open association toward the PACS, holding one of the `max_associations` permits.
pub struct PacsAssociation {
    pub assoc: Association,
    _permit: OwnedSemaphorePermit,
}

impl PacsAssociation {
    /// Release (PS3.8 7.2); the permit goes back either way.
    pub async fn release(self) -> Result<(), AssociationError> {
        self.assoc.release().await
    }
}

/// The local PACS: where it is, who we are toward it, and how we retrieve from it.
#[derive(Debug)]
pub struct Pacs {
    pub config: PacsConfig,
    /// Our AE title on the DIMSE listener: the C-MOVE destination.
    pub our_ae: String,
    permits: Arc<Semaphore>,
    mode: RwLock<RetrieveMode>,
    message_ids: std::sync::atomic::AtomicU16,
    pub moves: moves::MoveHub,
    /// The forward queue worker's wake-up and retry policy.
    pub forward: forward::Forwarder,
    /// DICOM TLS toward the PACS (`pacs.tls`): the live client configuration, set at start
    /// and swapped on reload ([`Pacs::set_tls`]).
    tls: RwLock<Option<Arc<crate::trust::tls::TlsState>>>,
}

/// How long a refused association (transient, local limit) is retried before it fails.
const BUSY_RETRY_FOR: Duration = Duration::from_secs(60);

impl Pacs {
    pub fn new(config: PacsConfig, our_ae: &str) -> Self {
        let permits = Arc::new(Semaphore::new(config.max_associations));
        Pacs {
            mode: RwLock::new(config.retrieve),
            message_ids: std::sync::atomic::AtomicU16::new(1),
            config,
            our_ae: our_ae.to_string(),
            permits,
            moves: moves::MoveHub::default(),
            forward: forward::Forwarder::default(),
            tls: RwLock::new(None),
        }
    }

    /// Where the TLS client configuration toward the PACS comes from (`pacs.tls`). Without
    /// it a `tls = true` PACS is never connected to (fail closed).
    pub fn set_tls(&self, tls: Arc<crate::trust::tls::TlsState>) {
        *self.tls.write().unwrap_or_else(|e| e.into_inner()) = Some(tls);
    }

    /// SCU options toward the PACS. The read timeout covers the longest pause between
    /// sub-operations a PACS may take.
    pub fn scu_options(&self, max_pdu: u32) -> ScuOptions {
        let mut opts = ScuOptions::new(
            &self.config.host,
            self.config.port,
            self.config.calling_ae(&self.our_ae),
            &self.config.ae_title,
        );
        opts.link = LinkOptions {
            max_pdu,
            timeout: Duration::from_secs(self.config.timeout_secs.max(self.config.move_gap_secs)),
        };
        opts.connect_timeout = Duration::from_secs(self.config.connect_timeout_secs);
        if self.config.tls {
            opts.require_tls = true;
            opts.tls_server_name = self.config.tls_server_name().to_string();
            opts.tls = self
                .tls
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .and_then(|t| t.pacs_client());
        }
        opts
    }

    fn error(&self, source: AssociationError) -> PacsError {
        PacsError::Association {
            ae: self.config.ae_title.clone(),
            addr: format!("{}:{}", self.config.host, self.config.port),
            source,
        }
    }

    /// Open an association: wait for a permit (queue), and retry while the PACS refuses
    /// with a transient rejection (a PACS that allows one association at a time).
    pub async fn connect(
        &self,
        contexts: &[ProposedContext],
    ) -> Result<PacsAssociation, PacsError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| PacsError::Retrieve("PACS client is shutting down".into()))?;
        let opts = self.scu_options(crate::dimse::negotiate::LinkOptions::default().max_pdu);
        let deadline = tokio::time::Instant::now() + BUSY_RETRY_FOR;
        let mut backoff = Duration::from_millis(100);
        loop {
            match scu::connect(&opts, contexts).await {
                Ok(assoc) => {
                    return Ok(PacsAssociation {
                        assoc,
                        _permit: permit,
                    })
                }
                Err(e) if e.is_transient_rejection() && tokio::time::Instant::now() < deadline => {
                    tracing::debug!(error = %e, "PACS busy; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(self.error(e)),
            }
        }
    }

    /// A message ID unique among our requests to the PACS (wrapping, never 0).
    pub fn next_message_id(&self) -> u16 {
        use std::sync::atomic::Ordering;
        loop {
            let id = self.message_ids.fetch_add(1, Ordering::Relaxed);
            if id != 0 {
                return id;
            }
        }
    }

    /// The retrieve mode in force: configured, or chosen by the probe when `auto`.
    pub fn mode(&self) -> RetrieveMode {
        *self.mode.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Fix the retrieve mode (the probe's choice, when configured `auto`).
    pub fn set_mode(&self, mode: RetrieveMode) {
        *self.mode.write().unwrap_or_else(|e| e.into_inner()) = mode;
    }

    /// C-ECHO (PS3.7 9.1.5).
    pub async fn echo(&self) -> Result<u16, PacsError> {
        let _permit = self.permits.acquire().await;
        scu::echo(&self.scu_options(LinkOptions::default().max_pdu))
            .await
            .map_err(|e| self.error(e))
    }
}
