//! `beeldbrug serve`: open the store and index, bind the DIMSE and HTTP listeners, and run
//! until shutdown; then stop accepting and let in-flight work finish, up to
//! `server.shutdown_grace_secs`, after which the rest is aborted ([`Running::stop_within`]).
//!
//! With `[tls] cert_file` the HTTP listener speaks HTTPS only (mutual TLS when
//! `client_ca_file` is set), `[tls] dimse_listen` adds a DICOM TLS listener (PS3.15 B.1), and
//! a task reloads certificates, CRLs and the participant list without restart.

use crate::config::Config;
use crate::core::{CacheRules, Core, Front};
use crate::dimse::receive::MoveArrivals;
use crate::dimse::scp::{self, ScpContext};
use crate::http::HttpState;
use crate::pacs::source::PacsSource;
use crate::store::{open_index, BlobStore, Index};
use crate::trust::tls::{TlsState, Watcher};
use crate::trust::Trust;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot create data directory {0}: {1}")]
    DataDir(String, std::io::Error),
    #[error("data directory {0} is not writable: {1}")]
    DataDirNotWritable(String, std::io::Error),
    #[error("the index ({0}) does not take writes: {1}")]
    IndexNotWritable(String, crate::store::IndexError),
    #[error(transparent)]
    Blob(#[from] crate::store::BlobError),
    #[error(transparent)]
    Index(#[from] crate::store::IndexError),
    #[error(transparent)]
    Journal(#[from] crate::store::journal::JournalError),
    #[error(transparent)]
    Trust(#[from] crate::trust::TrustError),
    #[error("cannot listen on {0}: {1}")]
    Bind(String, std::io::Error),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("TLS: {0}")]
    Tls(#[from] crate::trust::tls::TlsError),
    #[error(transparent)]
    Remote(#[from] crate::remote::RemoteError),
}

/// A started gateway: its bound addresses and the handle that stops it.
pub struct Running {
    pub dimse_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// The DICOM TLS listener (`tls.dimse_listen`), if any.
    pub dimse_tls_addr: Option<SocketAddr>,
    /// The live TLS configurations (reloaded in the background).
    pub tls: Arc<TlsState>,
    pub shutdown: CancellationToken,
    pub context: Arc<Context>,
    tasks: tokio::task::JoinSet<()>,
}

/// What the composition root opened and wired. The fronts see only [`Context::fronts`] (the
/// core and trust); the rest is for what is no front: `/ready` and `/admin`, the background
/// tasks (retention, STOW-RS forwarding, the probe), the CLI and tests.
#[derive(Debug)]
pub struct Context {
    pub config: Arc<Config>,
    pub trust: Arc<Trust>,
    pub index: Arc<dyn Index>,
    pub blobs: BlobStore,
    pub core: Arc<Core>,
    /// Gateway mode: the local PACS (`[pacs]`).
    pub gateway: Option<Arc<PacsSource>>,
    /// The DIMSE and DICOMweb fronts' context.
    pub fronts: Arc<ScpContext>,
    /// Chain monitoring: the PACS, remote gateways and Mitz probed on a schedule.
    pub chain: Arc<crate::chain::Monitor>,
}

/// After the deadline, how long aborting what is left may take before we stop waiting.
const ABORT_WAIT: Duration = Duration::from_secs(5);

impl Running {
    /// Stop accepting and wait for in-flight associations and requests to finish.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
    }

    /// Stop accepting; give associations and requests in flight `grace` to finish, then
    /// abort the rest: associations get an A-ABORT (PS3.8 7.3), HTTP listeners stop and
    /// their connections close with the process. Whatever was acknowledged is durable by
    /// then (a C-STORE or STOW-RS is answered only after fsync and commit), so cutting the
    /// rest loses nothing acknowledged. Returns whether everything finished in time.
    pub async fn stop_within(mut self, grace: Duration) -> bool {
        self.shutdown.cancel();
        let drained = tokio::time::timeout(grace, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await
        .is_ok();
        if !drained {
            tracing::warn!(
                grace_secs = grace.as_secs(),
                "shutdown deadline (server.shutdown_grace_secs) reached: aborting associations \
                 and closing connections still open"
            );
            self.context.fronts.abort.cancel();
            let _ = tokio::time::timeout(ABORT_WAIT, async {
                while self.tasks.join_next().await.is_some() {}
            })
            .await;
        }
        drained
    }

    /// Wait until the listeners end (after `shutdown` is cancelled).
    pub async fn wait(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// The core and its sources, with the routes from each front to them (DESIGN "core"):
/// DICOMweb reaches the cache and the PACS; DIMSE the cache, and the PACS too with
/// `dimse.proxy_pacs`; both reach other hospitals' gateways with `[remote] enabled` (DESIGN
/// flow 2: the local PACS asks the network). The XDS front never does: another gateway's
/// call is not passed on.
pub fn compose_core(
    config: &Config,
    index: &Arc<dyn crate::store::Index>,
    blobs: &BlobStore,
    trust: &Arc<Trust>,
    remote: Option<Arc<crate::remote::RemoteSource>>,
) -> (Arc<Core>, Option<Arc<PacsSource>>) {
    let rules = CacheRules {
        max_bytes: config.cache.max_bytes,
        refresh_secs: config.cache.refresh_secs,
        client_wait: Some(std::time::Duration::from_secs(
            config.cache.client_wait_secs,
        )),
    };
    let mut builder = Core::builder(trust.clone(), index.clone(), blobs.clone()).cache_rules(rules);
    let gateway = config.pacs.clone().map(|pacs| {
        Arc::new(PacsSource {
            pacs: crate::pacs::Pacs::new(pacs, &config.dimse.ae_title),
            blobs: blobs.clone(),
            index: index.clone(),
        })
    });
    if let Some(pacs) = &gateway {
        let mut fronts = vec![Front::Web];
        if config.dimse.proxy_pacs {
            fronts.push(Front::Dimse);
        }
        // Other hospitals' gateways (RAD-75) get what the PACS holds, streamed through.
        if config.xds.enabled {
            fronts.push(Front::Xds);
        }
        builder = builder.source(pacs.clone(), &fronts);
    }
    if let Some(remote) = remote {
        builder = builder.source(remote, &[Front::Dimse, Front::Web]);
    }
    if config.xds.enabled {
        // The XDS-I registry (ITI-18/38, the documents of ITI-43/RAD-69), on the index.
        let settings = Arc::new(crate::registry::Settings::from_config(config));
        let board = builder.transfer_board();
        builder = builder.registry(crate::registry::XdsRegistry::new(
            index.clone(),
            blobs.clone(),
            settings,
            Some(board),
        ));
    }
    (builder.build(), gateway)
}

/// Open everything and start serving in the background.
pub async fn start(config: Config) -> Result<Running, ServeError> {
    let config = Arc::new(config);
    config.tls.validate()?;
    // Certificates, keys, CAs and CRLs are read now: a bad file stops the start, named.
    let tls = Arc::new(TlsState::new(&config)?);
    std::fs::create_dir_all(&config.storage.data_dir)
        .map_err(|e| ServeError::DataDir(config.storage.data_dir.display().to_string(), e))?;
    // An existing but read-only directory (or a full disk) would only show at the first
    // store: say so now, with the path.
    check_writable(&config.storage.data_dir).map_err(|e| {
        ServeError::DataDirNotWritable(config.storage.data_dir.display().to_string(), e)
    })?;
    let started = std::time::SystemTime::now();
    let blobs = BlobStore::open_config(&config.storage).await?;
    let index = open_index(&config.index_url()).await?;
    index
        .probe_write()
        .await
        .map_err(|e| ServeError::IndexNotWritable(redacted_url(&config.index_url()), e))?;
    // The ingest journal (store::journal, filesystem blobs): blob files of acknowledged
    // instances that a power loss took are written again from it before anything is served.
    let blobs = if blobs.is_remote() {
        blobs
    } else {
        match crate::store::journal::Journal::open(&blobs, index.as_ref()).await? {
            (Some(journal), _) => blobs.with_journal(journal),
            (None, _) => blobs,
        }
    };
    // Deletes and replacements a crash interrupted (store::delete): their files go before
    // anything is served.
    crate::store::delete::sweep(index.as_ref(), &blobs)
        .await
        .map_err(|crate::store::delete::DeleteError::Index(e)| e)?;
    let trust = Arc::new(Trust::new(&config, index.clone())?);
    let remote = match config.remote.enabled {
        true => Some(Arc::new(crate::remote::RemoteSource::new(
            &config,
            trust.clone(),
        )?)),
        false => None,
    };
    let (core, gateway) = compose_core(&config, &index, &blobs, &trust, remote);
    if let Some(gateway) = &gateway {
        gateway.pacs.set_tls(tls.clone());
    }
    let move_arrivals = gateway
        .as_ref()
        .map(|g| Arc::new(g.pacs.moves.clone()) as Arc<dyn MoveArrivals>);
    let fronts = Arc::new(
        ScpContext::new(config.clone(), trust.clone(), core.clone(), move_arrivals)
            .with_tls(tls.clone()),
    );
    let chain = Arc::new(crate::chain::Monitor::new(
        config.clone(),
        core.clone(),
        trust.clone(),
        tls.clone(),
    ));
    let context = Arc::new(Context {
        config: config.clone(),
        trust: trust.clone(),
        index,
        blobs,
        core,
        gateway,
        fronts,
        chain,
    });

    let dimse = TcpListener::bind(&config.dimse.listen)
        .await
        .map_err(|e| ServeError::Bind(config.dimse.listen.clone(), e))?;
    let http = TcpListener::bind(&config.http.listen)
        .await
        .map_err(|e| ServeError::Bind(config.http.listen.clone(), e))?;
    let dimse_addr = dimse
        .local_addr()
        .map_err(|e| ServeError::Bind(config.dimse.listen.clone(), e))?;
    let http_addr = http
        .local_addr()
        .map_err(|e| ServeError::Bind(config.http.listen.clone(), e))?;
    let dimse_tls = match &config.tls.dimse_listen {
        Some(listen) => {
            let listener = TcpListener::bind(listen)
                .await
                .map_err(|e| ServeError::Bind(listen.clone(), e))?;
            let addr = listener
                .local_addr()
                .map_err(|e| ServeError::Bind(listen.clone(), e))?;
            Some((listener, addr))
        }
        None => None,
    };
    let dimse_tls_addr = dimse_tls.as_ref().map(|(_, a)| *a);

    let shutdown = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    // Files of instance versions a crash left unindexed (store::recovery): in the
    // background, only those older than this start (an ingest of ours is newer) less
    // `storage.orphan_grace_secs`. One of the tasks, so a stop waits for it (or cuts it
    // short) and nothing holds the index after.
    {
        let (index, blobs) = (context.index.clone(), context.blobs.clone());
        let token = shutdown.clone();
        // Older than the grace, too: another node sharing the store may have written a
        // file just before this start whose row it has not committed yet.
        let grace = std::time::Duration::from_secs(config.storage.orphan_grace_secs);
        let cutoff = started.checked_sub(grace).unwrap_or(std::time::UNIX_EPOCH);
        tasks.spawn(async move {
            tokio::select! {
                _ = token.cancelled() => {}
                swept = crate::store::recovery::recover(index.as_ref(), &blobs, cutoff) => {
                    if let Err(e) = swept {
                        tracing::warn!(error = %e, "blob store recovery (orphan sweep) failed");
                    }
                }
            }
        });
    }
    // The files of replaced instance versions, once readers can no longer hold their keys.
    tasks.spawn(crate::store::delete::run_superseded_sweeps(
        context.index.clone(),
        context.blobs.clone(),
        shutdown.clone(),
    ));
    let (ctx, token) = (context.fronts.clone(), shutdown.clone());
    tasks.spawn(async move { scp::serve(dimse, ctx, token.cancelled_owned()).await });
    if let Some((listener, _)) = dimse_tls {
        let (ctx, token, tls) = (context.fronts.clone(), shutdown.clone(), tls.clone());
        tasks.spawn(
            async move { scp::serve_tls(listener, ctx, tls, token.cancelled_owned()).await },
        );
    }
    let token = shutdown.clone();
    let web_state = HttpState {
        web: context.fronts.clone(),
        index: context.index.clone(),
        blobs: context.blobs.clone(),
        gateway: context.gateway.clone(),
        chain: context.chain.clone(),
    };
    if tls.http().is_some() {
        let tls = tls.clone();
        let abort = context.fronts.abort.clone();
        tasks.spawn(async move {
            let router = crate::http::router(web_state);
            tokio::select! {
                _ = crate::trust::tls::listener::serve(http, router, tls, token) => {}
                _ = abort.cancelled() => {}
            }
        });
    } else {
        let abort = context.fronts.abort.clone();
        tasks.spawn(async move {
            let app =
                crate::http::router(web_state).into_make_service_with_connect_info::<SocketAddr>();
            let serve = axum::serve(http, app).with_graceful_shutdown(token.cancelled_owned());
            tokio::select! {
                served = serve => if let Err(e) = served {
                    tracing::error!(error = %e, "HTTP listener failed");
                },
                _ = abort.cancelled() => {}
            }
        });
    }
    let watcher = Watcher {
        state: tls.clone(),
        trust,
    };
    if !watcher.idle() {
        tasks.spawn(watcher.run(shutdown.clone()));
    }
    // Chain monitoring: the peers probed every server.chain_probe_secs (issue 17).
    tasks.spawn(context.chain.clone().run(shutdown.clone()));
    if config.storage.keep_received_days > 0 {
        // Studies received by STOW-RS are deleted after storage.keep_received_days.
        tasks.spawn(crate::store::retention::run(
            context.index.clone(),
            context.blobs.clone(),
            context.trust.clone(),
            config.storage.keep_received_days,
            shutdown.clone(),
        ));
    }
    if config.xds.enabled {
        // XDS-I: each study registered once complete (registry::publish).
        let publisher = crate::registry::publish::Publisher {
            index: context.index.clone(),
            blobs: context.blobs.clone(),
            settings: Arc::new(crate::registry::Settings::from_config(&config)),
            owner: crate::registry::publish::Publisher::owner_id(),
            // Gateway mode: a manifest names what the PACS holds of the study, not only what
            // the cache holds of it.
            holdings: context
                .gateway
                .as_ref()
                .map(|_| context.core.clone() as Arc<dyn crate::core::Holdings>),
            transfers: Some(context.core.transfer_board()),
        };
        tasks.spawn(publisher.run(shutdown.clone()));
    }
    if let Some(gateway) = context.gateway.clone() {
        // Gateway mode: the queue of STOW-RS studies for the PACS (pacs::forward).
        let (trust, token) = (context.trust.clone(), shutdown.clone());
        let board = context.core.transfer_board();
        tasks.spawn(crate::pacs::forward::run(gateway, trust, board, token));
    }
    if let Some(gateway) = context.gateway.clone() {
        if gateway.pacs.config.probe_at_start {
            // Gateway mode: what the PACS supports, logged; the retrieve mode when `auto`.
            crate::pacs::probe::spawn_at_start(gateway, dimse_addr.to_string(), shutdown.clone());
        }
    }
    tracing::info!(%dimse_addr, %http_addr, dimse_tls = ?dimse_tls_addr, https = tls.http().is_some(), ae_title = %config.dimse.ae_title, "beeldbrug serving");
    Ok(Running {
        dimse_addr,
        http_addr,
        dimse_tls_addr,
        tls,
        shutdown,
        context,
        tasks,
    })
}

/// Create, fsync and remove a small file in `dir`.
fn check_writable(dir: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let probe = dir.join(format!(".beeldbrug-write-check-{}", std::process::id()));
    let written = std::fs::File::create(&probe).and_then(|mut f| {
        f.write_all(b"beeldbrug\n")?;
        f.sync_all()
    });
    let removed = std::fs::remove_file(&probe);
    written?;
    match removed {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// An index URL without its password, for messages.
fn redacted_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_url_password_is_hidden() {
        assert_eq!(
            redacted_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(redacted_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redacted_url("sqlite:///x/index.db"), "sqlite:///x/index.db");
    }
}
