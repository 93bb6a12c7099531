//! The local PACS as a [`Source`] behind the cache: C-FIND for queries and counts, C-GET or
//! C-MOVE (as configured or probed) for fetches.

use super::config::RetrieveMode;
use super::fetch::{self, FetchReport, Sink};
use super::{Pacs, PacsError};
use crate::clock::unix_seconds as now;
use crate::core::source::{Capabilities, Source, SourceError, SourceErrorKind};
use crate::dimse::association::AssociationError;
use crate::dimse::status::{self, Category};
use crate::model::query::{Level, Match, Query};
use crate::model::Selection;
use crate::store::{BlobStore, Index};
use std::sync::Arc;
use tracing::Instrument;

/// The name the PACS goes by in logs, audit details and error messages.
pub const NAME: &str = "local PACS";

/// Gateway mode: the hospital's PACS behind the cache (`[pacs]`).
#[derive(Debug)]
pub struct PacsSource {
    pub pacs: Pacs,
    /// Where the capability probe stores what it fetches (the gateway's own store).
    pub blobs: BlobStore,
    pub index: Arc<dyn Index>,
}

impl From<PacsError> for SourceError {
    fn from(e: PacsError) -> Self {
        let kind = match &e {
            PacsError::Association {
                source: AssociationError::NoContexts,
                ..
            }
            | PacsError::NotSupported(_) => SourceErrorKind::NotSupported,
            PacsError::Association { .. } => SourceErrorKind::Unreachable,
            PacsError::FindStatus(_) | PacsError::Retrieve(_) => SourceErrorKind::Failed,
            PacsError::Cancelled => SourceErrorKind::Cancelled,
        };
        SourceError::new(NAME, kind, e.to_string())
    }
}

impl PacsSource {
    /// Does `[pacs]` forward what `sender` stores by STOW-RS?
    pub fn forwards_from(&self, sender: &str) -> bool {
        let config = &self.pacs.config;
        config.forward_stow
            && !config
                .forward_except
                .iter()
                .any(|s| s.trim() == sender.trim())
    }

    /// C-GET or C-MOVE as configured or probed; C-GET retried uncompressed when the PACS
    /// accepted compressed syntaxes and then failed every sub-operation.
    async fn retrieve(
        &self,
        selection: &Selection,
        sink: &Sink<'_>,
    ) -> Result<FetchReport, PacsError> {
        let mode = self.pacs.mode();
        if mode == RetrieveMode::CMove {
            return fetch::move_(&self.pacs, selection, sink).await;
        }
        let got = match fetch::get(&self.pacs, selection, true, sink).await {
            Ok(r) if r.compressed_failed => {
                tracing::warn!("PACS failed every instance in a compressed syntax it accepted; retrying uncompressed");
                fetch::get(&self.pacs, selection, false, sink).await
            }
            other => other,
        };
        match got {
            Err(PacsError::NotSupported(_)) if mode == RetrieveMode::Auto => {
                tracing::info!("PACS does not offer C-GET; using C-MOVE from now on");
                self.pacs.set_mode(RetrieveMode::CMove);
                fetch::move_(&self.pacs, selection, sink).await
            }
            other => other,
        }
    }
}

#[async_trait::async_trait]
impl Source for PacsSource {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            // Study Root (PS3.4 C.6.2): no PATIENT level.
            query_levels: vec![Level::Study, Level::Series, Level::Image],
            retrieve: true,
            // C-FIND matches names by wildcard at best (PS3.4 C.2.2.2.4), never fuzzily.
            fuzzy_names: false,
            transfer_syntaxes: self.pacs.config.transfer_syntaxes.clone(),
        }
    }

    async fn find(&self, query: &Query, window: usize) -> Result<Vec<Match>, SourceError> {
        let started = std::time::Instant::now();
        let span = crate::telemetry::peer_call("C-FIND", &self.pacs.config.ae_title);
        let result = self.pacs.find(query, window).instrument(span.clone()).await;
        if result.is_err() {
            crate::telemetry::failed(&span);
        }
        traffic("find", &result, started);
        Ok(result?)
    }

    async fn count(&self, selection: &Selection) -> Result<u64, SourceError> {
        let started = std::time::Instant::now();
        let span = crate::telemetry::peer_call("C-FIND", &self.pacs.config.ae_title);
        let result = self.pacs.count(selection).instrument(span.clone()).await;
        if result.is_err() {
            crate::telemetry::failed(&span);
        }
        traffic("count", &result, started);
        Ok(result?)
    }

    /// C-ECHO (PS3.7 9.1.5), as `/ready` does.
    async fn probe(&self) -> Option<Result<String, SourceError>> {
        Some(
            self.pacs
                .echo()
                .await
                .map(|status| format!("C-ECHO status 0x{status:04X}"))
                .map_err(SourceError::from),
        )
    }

    /// Failed forward jobs were put back (the console): the worker looks now.
    fn queue_changed(&self) {
        self.pacs.forward.wake();
    }

    /// STOW-RS studies go on to the PACS through the durable forward queue (`[pacs]
    /// forward_stow`, `forward_except`).
    async fn received(&self, sender: &str, items: &[(String, String)]) {
        if !self.forwards_from(sender) {
            return;
        }
        match self.index.enqueue_forward(items, sender, now()).await {
            Ok(()) => {
                tracing::info!(
                    sender,
                    instances = items.len(),
                    pacs = %self.pacs.config.ae_title,
                    "queued for forwarding to the PACS"
                );
                self.pacs.forward.wake();
            }
            // The instances stay stored either way.
            Err(e) => tracing::error!(
                error = %e,
                sender,
                instances = items.len(),
                "cannot queue STOW-RS instances for forwarding to the PACS"
            ),
        }
    }

    async fn fetch(
        &self,
        selection: &Selection,
        sink: &Sink<'_>,
    ) -> Result<FetchReport, SourceError> {
        let started = std::time::Instant::now();
        let result = self.retrieve(selection, sink).await;
        let mut report = match result {
            Ok(report) => report,
            Err(e) => {
                let e = SourceError::from(e);
                if e.kind != SourceErrorKind::Cancelled {
                    traffic("fetch", &Err::<(), _>(e.message.clone()), started);
                }
                return Err(e);
            }
        };
        report.ok = matches!(
            status::category(report.status),
            Category::Success | Category::Warning
        );
        let outcome = if report.ok {
            Ok(())
        } else {
            Err(format!("final status 0x{:04X}", report.status))
        };
        traffic("fetch", &outcome, started);
        Ok(report)
    }
}

/// A real call to the PACS, for its error rate and latency in the chain view
/// (`metrics::peer_call`, kind `pacs`, named as the chain monitor names it).
fn traffic<T, E: std::fmt::Display>(
    call: &'static str,
    result: &Result<T, E>,
    started: std::time::Instant,
) {
    let why = result.as_ref().err().map(|e| e.to_string());
    crate::metrics::peer_call(
        "pacs",
        NAME,
        call,
        why.as_deref().map_or(Ok(()), Err),
        started.elapsed(),
    );
}
