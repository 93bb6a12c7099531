//! The live TLS configurations and their reload without restart: every `tls.refresh_secs`
//! (at most an hour: CRLs, REFERENCE §2) and whenever one of the files changes (checked every
//! `tls.watch_secs`), the configurations are rebuilt and swapped at once; connections already
//! open keep the configuration they were accepted with, new ones get the new one. A reload
//! that fails (a half-written file, a key that does not match its certificate) keeps the old
//! configuration, logs an error and is tried again at the next check.

use super::{client_config, server_config, TlsConfig, TlsError};
use crate::config::Config;
use crate::trust::Trust;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};
use tokio_util::sync::CancellationToken;

/// ALPN for the HTTPS listener (RFC 7301): h2 first, then HTTP/1.1.
const HTTP_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// One configuration, swapped atomically.
#[derive(Debug)]
struct Live<T>(RwLock<Arc<T>>);

impl<T> Live<T> {
    fn new(value: Arc<T>) -> Self {
        Live(RwLock::new(value))
    }
    fn get(&self) -> Arc<T> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
    fn set(&self, value: Arc<T>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = value;
    }
}

/// Everything built from `[tls]` (and `[pacs] tls`), as currently loaded.
#[derive(Debug)]
pub struct TlsState {
    config: TlsConfig,
    /// `pacs.ca_file` when `pacs.tls`.
    pacs_ca: Option<PathBuf>,
    http: Option<Live<rustls::ServerConfig>>,
    dimse: Option<Live<rustls::ServerConfig>>,
    pacs: Option<Live<rustls::ClientConfig>>,
    peers: Option<Live<rustls::ClientConfig>>,
}

struct Built {
    http: Option<Arc<rustls::ServerConfig>>,
    dimse: Option<Arc<rustls::ServerConfig>>,
    pacs: Option<Arc<rustls::ClientConfig>>,
    peers: Option<Arc<rustls::ClientConfig>>,
}

impl TlsState {
    /// Load everything now: an error here stops the start (files named).
    pub fn new(config: &Config) -> Result<TlsState, TlsError> {
        let pacs_ca = config
            .pacs
            .as_ref()
            .filter(|p| p.tls)
            .map(|p| p.ca_file.clone().ok_or(TlsError::Missing("pacs.ca_file")))
            .transpose()?;
        let mut state = TlsState {
            config: config.tls.clone(),
            pacs_ca,
            http: None,
            dimse: None,
            pacs: None,
            peers: None,
        };
        let built = state.build()?;
        state.http = built.http.map(Live::new);
        state.dimse = built.dimse.map(Live::new);
        state.pacs = built.pacs.map(Live::new);
        state.peers = built.peers.map(Live::new);
        Ok(state)
    }

    /// No TLS anywhere (tests of other modules, the CLI).
    pub fn disabled() -> TlsState {
        TlsState {
            config: TlsConfig::default(),
            pacs_ca: None,
            http: None,
            dimse: None,
            pacs: None,
            peers: None,
        }
    }

    fn build(&self) -> Result<Built, TlsError> {
        let (http, dimse) = if self.config.enabled() {
            let base = server_config(&self.config)?;
            let mut http = (*base).clone();
            http.alpn_protocols = HTTP_ALPN.iter().map(|p| p.to_vec()).collect();
            (Some(Arc::new(http)), Some(base))
        } else {
            (None, None)
        };
        let ours = self
            .config
            .cert_file
            .as_deref()
            .zip(self.config.key_file.as_deref());
        let pacs = match &self.pacs_ca {
            Some(ca) => Some(client_config(ca, ours)?),
            None => None,
        };
        // Toward remote gateways (C-MOVE destinations): the same CAs we accept them by.
        let peers = match (&self.config.client_ca_file, ours) {
            (Some(ca), Some(_)) => Some(client_config(ca, ours)?),
            _ => None,
        };
        Ok(Built {
            http,
            dimse,
            pacs,
            peers,
        })
    }

    /// Rebuild everything; swap only when all of it built.
    pub fn reload(&self) -> Result<(), TlsError> {
        let built = self.build()?;
        if let (Some(live), Some(new)) = (&self.http, built.http) {
            live.set(new);
        }
        if let (Some(live), Some(new)) = (&self.dimse, built.dimse) {
            live.set(new);
        }
        if let (Some(live), Some(new)) = (&self.pacs, built.pacs) {
            live.set(new);
        }
        if let (Some(live), Some(new)) = (&self.peers, built.peers) {
            live.set(new);
        }
        Ok(())
    }

    /// The HTTPS listener's configuration (ALPN h2, http/1.1); `None`: plain HTTP.
    pub fn http(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.http.as_ref().map(Live::get)
    }

    /// The DICOM TLS listener's configuration (PS3.15 B.1).
    pub fn dimse(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.dimse.as_ref().map(Live::get)
    }

    /// The client configuration toward the PACS (`pacs.tls`).
    pub fn pacs_client(&self) -> Option<Arc<rustls::ClientConfig>> {
        self.pacs.as_ref().map(Live::get)
    }

    /// The client configuration toward remote gateways (`[[dimse.peers]]` with a
    /// `certificate_sha256`, e.g. as C-MOVE destinations): their certificates verified against
    /// `tls.client_ca_file`, ours presented. `None` without `client_ca_file`.
    pub fn peer_client(&self) -> Option<Arc<rustls::ClientConfig>> {
        self.peers.as_ref().map(Live::get)
    }

    pub fn config(&self) -> &TlsConfig {
        &self.config
    }

    fn files(&self) -> Vec<PathBuf> {
        let c = &self.config;
        c.cert_file
            .iter()
            .chain(&c.key_file)
            .chain(&c.client_ca_file)
            .chain(&c.crl_files)
            .chain(&self.pacs_ca)
            .cloned()
            .collect()
    }
}

/// What a file looked like at the last check: modification time and size.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn stamps(paths: &[PathBuf]) -> Vec<Stamp> {
    paths.iter().map(|p| stamp(p)).collect()
}

/// The reload task: TLS configurations and the participant list.
pub struct Watcher {
    pub state: Arc<TlsState>,
    pub trust: Arc<Trust>,
}

impl Watcher {
    /// Nothing to watch: no TLS and no participants file.
    pub fn idle(&self) -> bool {
        self.state.http.is_none()
            && self.state.pacs.is_none()
            && self.trust.config.participants_file.is_none()
    }

    /// Run until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        if self.idle() {
            return;
        }
        let cfg = self.state.config();
        let watch = Duration::from_secs(cfg.watch_secs.max(1));
        let refresh = Duration::from_secs(cfg.refresh_secs.max(1));
        let tls_files = self.state.files();
        let participants: Vec<PathBuf> = self
            .trust
            .config
            .participants_file
            .iter()
            .cloned()
            .collect();
        let mut tls_seen = stamps(&tls_files);
        let mut participants_seen = stamps(&participants);
        let mut last_full = Instant::now();
        let mut tick = tokio::time::interval(watch);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let due = last_full.elapsed() >= refresh;
            let tls_now = stamps(&tls_files);
            if !tls_files.is_empty() && (due || tls_now != tls_seen) {
                match self.state.reload() {
                    Ok(()) => {
                        tracing::info!(
                            scheduled = due,
                            "TLS configuration reloaded (certificates, CAs, CRLs)"
                        );
                        tls_seen = tls_now;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "TLS reload failed; keeping the previous configuration")
                    }
                }
            }
            let participants_now = stamps(&participants);
            if due || participants_now != participants_seen {
                if let Some(path) = participants.first() {
                    match self.trust.participants.reload(path) {
                        Ok(n) => {
                            tracing::info!(participants = n, file = %path.display(), "participant list reloaded");
                            participants_seen = participants_now;
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "participant list reload failed; keeping the previous list")
                        }
                    }
                }
            }
            if due {
                last_full = Instant::now();
            }
        }
    }
}
