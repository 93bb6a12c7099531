//! Chain monitoring (ketenregie, issue 17 item 2): the state of the chain from this gateway to
//! its peers, probed on a schedule (`server.chain_probe_secs`) and on demand by the console:
//!
//! - the PACS: its probe through the core (C-ECHO, PS3.7 9.1.5);
//! - each remote gateway on the participant list: a TLS handshake with our client
//!   certificate toward its query endpoint (latency, protocol, the certificate it presents);
//! - the consent service (Mitz): a connection (and TLS handshake with our peer client
//!   configuration where it is https);
//! - our own certificate, client CA and CRLs: expiry and age.
//!
//! Certificates are flagged 30, 7 and 1 days before they expire ([`WARN_DAYS`]); a CRL whose
//! nextUpdate has passed is stale. A peer that becomes unreachable, or a certificate that
//! crosses a warning level, is an alert: a `CHAIN-ALERT` audit record (a PS3.15 Security
//! Alert, A.5.3.13) and the Prometheus metrics `beeldbrug_chain_peer_up`,
//! `beeldbrug_chain_probe_seconds` and `beeldbrug_chain_certificate_days`
//! (`crate::metrics`). The console reads [`Monitor::snapshot`] (`GET /admin/chain`).

use crate::config::Config;
use crate::core::Core;
use crate::trust::tls::{der, TlsState};
use crate::trust::{Caller, Operation, Outcome, Trust};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Longest probe of one peer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Days before expiry from which a certificate is flagged.
pub const WARN_DAYS: [i64; 3] = [30, 7, 1];

/// One peer's state.
#[derive(Debug, Clone, Default)]
struct PeerState {
    kind: &'static str,
    name: String,
    address: Option<String>,
    reachable: Option<bool>,
    detail: String,
    latency_ms: u64,
    probes: u64,
    failures: u64,
    last_probe: Option<String>,
    last_success: Option<String>,
    last_failure: Option<(String, String)>,
    certificate: Option<Value>,
    /// The certificate's warning level last seen (to alert on a change only).
    warning: Option<String>,
    extra: Value,
}

impl PeerState {
    fn json(&self) -> Value {
        json!({
            "kind": self.kind,
            "name": self.name,
            "address": self.address,
            "reachable": self.reachable,
            "probe": self.last_probe.as_ref().map(|_| json!({
                "ok": self.reachable == Some(true),
                "detail": self.detail,
                "latency_ms": self.latency_ms,
            })),
            "probes": self.probes,
            "failures": self.failures,
            "error_rate": if self.probes > 0 { self.failures as f64 / self.probes as f64 } else { 0.0 },
            "last_probe": self.last_probe,
            "log": {
                "last_success": self.last_success,
                "last_failure": self.last_failure.as_ref().map(|(at, why)| json!({ "at": at, "error": why })),
            },
            "certificate": self.certificate,
            "details": self.extra,
        })
    }
}

/// One probe's outcome.
struct Probed {
    kind: &'static str,
    name: String,
    address: Option<String>,
    ok: bool,
    detail: String,
    latency_ms: u64,
    certificate: Option<Value>,
    extra: Value,
}

/// The chain's state, probed by [`Monitor::run`] and [`Monitor::probe_now`].
#[derive(Debug)]
pub struct Monitor {
    config: Arc<Config>,
    core: Arc<Core>,
    trust: Arc<Trust>,
    tls: Arc<TlsState>,
    peers: Mutex<BTreeMap<String, PeerState>>,
    checked_at: Mutex<Option<String>>,
    /// One probe round at a time.
    round: tokio::sync::Mutex<()>,
}

/// Days from now to `at` (Unix seconds), rounded down; negative once past.
fn days_until(at: i64) -> i64 {
    (at - crate::clock::unix_seconds()).div_euclid(86_400)
}

/// The warning of an expiry: the smallest of [`WARN_DAYS`] it falls within, or "expired".
pub fn expiry_warning(at: i64) -> Option<String> {
    if at <= crate::clock::unix_seconds() {
        return Some("expired".into());
    }
    let days = days_until(at);
    WARN_DAYS
        .iter()
        .rev()
        .find(|&&d| days < d)
        .map(|d| format!("expires within {d} day{}", if *d == 1 { "" } else { "s" }))
}

fn rfc3339(at: i64) -> Option<String> {
    time::OffsetDateTime::from_unix_timestamp(at)
        .ok()?
        .format(&time::format_description::well_known::Rfc3339)
        .ok()
}

/// A certificate's subject, fingerprint, expiry and warning.
pub fn certificate_json(der_bytes: &[u8]) -> Value {
    let validity = der::validity(der_bytes);
    json!({
        "subject": der::subject(der_bytes),
        "sha256": crate::trust::tls::fingerprint(der_bytes),
        "not_after": validity.and_then(|(_, a)| rfc3339(a)),
        "days_left": validity.map(|(_, a)| days_until(a)),
        "warning": validity.and_then(|(_, a)| expiry_warning(a)),
    })
}

/// `host`, `port` of an http(s) URL, and whether it is https.
fn authority(url: &str) -> Option<(String, u16, bool)> {
    let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else {
        (false, url.strip_prefix("http://")?)
    };
    let host_port = rest.split(['/', '?', '#']).next()?;
    let host_port = host_port.rsplit('@').next()?;
    let (host, port) = match host_port.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.ends_with(']') => (h.to_string(), p.parse().ok()?),
        _ => (host_port.to_string(), if https { 443 } else { 80 }),
    };
    Some((host.trim_matches(['[', ']']).to_string(), port, https))
}

fn millis(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Monitor {
    pub fn new(
        config: Arc<Config>,
        core: Arc<Core>,
        trust: Arc<Trust>,
        tls: Arc<TlsState>,
    ) -> Monitor {
        Monitor {
            config,
            core,
            trust,
            tls,
            peers: Mutex::default(),
            checked_at: Mutex::default(),
            round: tokio::sync::Mutex::new(()),
        }
    }

    /// Probe every `server.chain_probe_secs` until `shutdown` (nothing when it is 0).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let secs = self.config.server.chain_probe_secs;
        if secs == 0 {
            return;
        }
        let mut tick = tokio::time::interval(Duration::from_secs(secs));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first round one interval after the start: the peers may be starting too.
        tick.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.probe_now() => {}
            }
        }
    }

    /// Connect to `url` and, for https with our peer client configuration, finish a TLS
    /// handshake: what happened, the latency and the certificate the peer presented.
    async fn probe_url(&self, url: &str) -> (bool, String, u64, Option<Value>) {
        let started = Instant::now();
        let Some((host, port, https)) = authority(url) else {
            return (false, format!("{url:?} is not an http(s) URL"), 0, None);
        };
        let attempt = async {
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|e| format!("connect {host}:{port}: {e}"))?;
            let client = match (https, self.tls.peer_client()) {
                (true, Some(client)) => client,
                (true, None) => {
                    return Ok((
                        "connected (no tls.client_ca_file: no TLS handshake)".to_string(),
                        None,
                    ))
                }
                (false, _) => return Ok(("connected (plain HTTP)".to_string(), None)),
            };
            let name = rustls_pki_types::ServerName::try_from(host.clone())
                .map_err(|e| format!("server name {host:?}: {e}"))?;
            let tls = tokio_rustls::TlsConnector::from(client)
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS handshake: {e}"))?;
            let (_, conn) = tls.get_ref();
            let cert = conn
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| certificate_json(c));
            let version = conn
                .protocol_version()
                .map(|v| format!("{v:?}"))
                .unwrap_or_default();
            Ok::<_, String>((format!("TLS handshake ({version})"), cert))
        };
        match tokio::time::timeout(PROBE_TIMEOUT, attempt).await {
            Ok(Ok((said, cert))) => (true, said, millis(started), cert),
            Ok(Err(why)) => (false, why, millis(started), None),
            Err(_) => (
                false,
                format!("no answer in {PROBE_TIMEOUT:?}"),
                millis(started),
                None,
            ),
        }
    }

    /// Probe every peer now (one round at a time), record the outcomes, the metrics and
    /// the alerts.
    pub async fn probe_now(&self) {
        let _round = self.round.lock().await;
        let mut probed = Vec::new();
        for p in self.core.probe_sources().await {
            let address = self
                .config
                .pacs
                .as_ref()
                .map(|c| format!("{}@{}:{}", c.ae_title, c.host, c.port));
            probed.push(Probed {
                kind: "pacs",
                name: p.source.to_string(),
                address,
                ok: p.ok,
                detail: p.detail,
                latency_ms: p.latency_ms,
                certificate: None,
                extra: Value::Null,
            });
        }
        let gateways = self
            .trust
            .participants
            .all()
            .into_iter()
            .map(|gw| async move {
                let url = gw
                    .query_url
                    .clone()
                    .or_else(|| gw.retrieve_url.clone())
                    .or_else(|| gw.dicomweb_url.clone());
                let (ok, detail, latency_ms, certificate) = match &url {
                    Some(url) => self.probe_url(url).await,
                    None => (false, "no endpoint on the participant list".into(), 0, None),
                };
                Probed {
                    kind: "gateway",
                    name: gw.name.clone(),
                    address: url,
                    ok,
                    detail,
                    latency_ms,
                    certificate,
                    extra: json!({
                        "ura": gw.ura,
                        "home_community_id": gw.home_community_id,
                        "certificate_sha256": gw.certificate_sha256,
                    }),
                }
            });
        probed.extend(futures::future::join_all(gateways).await);
        let mitz = self.config.trust.consent.url.trim().to_string();
        if !mitz.is_empty() {
            let (ok, detail, latency_ms, certificate) = self.probe_url(&mitz).await;
            probed.push(Probed {
                kind: "consent",
                name: "Mitz".into(),
                address: Some(mitz),
                ok,
                detail,
                latency_ms,
                certificate,
                extra: Value::Null,
            });
        }
        let mut alerts = Vec::new();
        {
            let now = crate::clock::now_rfc3339();
            let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            for p in probed {
                let key = format!("{}:{}", p.kind, p.name);
                let state = peers.entry(key).or_default();
                let was = state.reachable;
                state.kind = p.kind;
                state.name = p.name.clone();
                state.address = p.address;
                state.reachable = Some(p.ok);
                state.detail = p.detail.clone();
                state.latency_ms = p.latency_ms;
                state.probes += 1;
                state.last_probe = Some(now.clone());
                state.extra = p.extra;
                if p.ok {
                    state.last_success = Some(now.clone());
                    if p.certificate.is_some() {
                        state.certificate = p.certificate;
                    }
                } else {
                    state.failures += 1;
                    state.last_failure = Some((now.clone(), p.detail.clone()));
                }
                crate::metrics::chain_probe(
                    p.kind,
                    &p.name,
                    p.ok,
                    Duration::from_millis(p.latency_ms),
                );
                match (was, p.ok) {
                    (Some(false), true) => {
                        alerts.push(format!("{} {} reachable again", p.kind, p.name))
                    }
                    (Some(true) | None, false) => {
                        alerts.push(format!("{} {} unreachable: {}", p.kind, p.name, p.detail))
                    }
                    _ => {}
                }
                let days = state
                    .certificate
                    .as_ref()
                    .and_then(|c| c["days_left"].as_i64());
                if let Some(days) = days {
                    crate::metrics::chain_certificate_days(p.kind, &p.name, days);
                }
                let warning = state
                    .certificate
                    .as_ref()
                    .and_then(|c| c["warning"].as_str().map(str::to_string));
                if warning != state.warning {
                    if let Some(w) = &warning {
                        alerts.push(format!("{} {}: certificate {w}", p.kind, p.name));
                    }
                    state.warning = warning;
                }
            }
        }
        *self.checked_at.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(crate::clock::now_rfc3339());
        for own in self.own_warnings() {
            alerts.push(own);
        }
        for alert in alerts {
            tracing::warn!(alert = %alert, "chain monitoring");
            let caller = Caller::new("beeldbrug-chain", "local");
            let recovered = alert.ends_with("reachable again");
            let outcome = Outcome {
                result: if recovered { "success" } else { "alert" }.into(),
                detail: alert,
                grounds: "chain monitoring".into(),
                ..Default::default()
            };
            self.trust
                .audit(&caller, Operation::ChainAlert, outcome)
                .await;
        }
    }

    /// Warnings of our own certificate (newly crossed levels only are alerts, kept per file).
    fn own_warnings(&self) -> Vec<String> {
        static SEEN: Mutex<BTreeMap<String, String>> = Mutex::new(BTreeMap::new());
        let mut out = Vec::new();
        let tls = &self.config.tls;
        for path in tls.cert_file.iter() {
            let Ok(certs) = crate::trust::tls::load_certs(path) else {
                continue;
            };
            if let Some((_, not_after)) = certs.first().and_then(|c| der::validity(c)) {
                crate::metrics::chain_certificate_days(
                    "own",
                    "tls.cert_file",
                    days_until(not_after),
                );
                if let Some(w) = expiry_warning(not_after) {
                    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
                    let key = path.display().to_string();
                    if seen.get(&key) != Some(&w) {
                        seen.insert(key.clone(), w.clone());
                        out.push(format!("our certificate {key}: {w}"));
                    }
                }
            }
        }
        out
    }

    /// Our own TLS material: the listeners' certificate, the client CA, the CRLs.
    fn own_tls(&self) -> Value {
        let tls = &self.config.tls;
        let cert = |path: &Option<std::path::PathBuf>| {
            path.as_ref()
                .map(|p| match crate::trust::tls::load_certs(p) {
                    Ok(certs) => json!({
                        "file": p.display().to_string(),
                        "certificates": certs.iter().map(|c| certificate_json(c)).collect::<Vec<_>>(),
                    }),
                    Err(e) => json!({ "file": p.display().to_string(), "error": e.to_string() }),
                })
        };
        let now = crate::clock::unix_seconds();
        let crls: Vec<Value> = tls
            .crl_files
            .iter()
            .map(|p| match crate::trust::tls::load_crls(p) {
                Ok(list) => json!({
                    "file": p.display().to_string(),
                    "crls": list.iter().map(|c| {
                        let times = der::crl_updates(c);
                        let next = times.and_then(|(_, n)| n);
                        json!({
                            "this_update": times.and_then(|(t, _)| rfc3339(t)),
                            "age_hours": times.map(|(t, _)| (now - t) / 3600),
                            "next_update": next.and_then(rfc3339),
                            "warning": next.filter(|n| *n <= now).map(|_| "nextUpdate passed: stale CRL"),
                        })
                    }).collect::<Vec<_>>(),
                }),
                Err(e) => json!({ "file": p.display().to_string(), "error": e.to_string() }),
            })
            .collect();
        json!({
            "certificate": cert(&tls.cert_file),
            "client_ca": cert(&tls.client_ca_file),
            "crls": crls,
        })
    }

    /// The chain as the console and `GET /admin/chain` show it: each peer's probes and the
    /// real traffic toward it (`traffic`: calls, failures, error rate and latencies of the
    /// outgoing calls since start, `metrics::peer_traffic`); a peer only called, never
    /// probed, is listed with its traffic.
    pub fn snapshot(&self) -> Value {
        let mut traffic: BTreeMap<String, Value> = crate::metrics::peer_traffic()
            .into_iter()
            .map(|t| {
                let key = format!("{}:{}", t.kind, t.peer);
                (key, traffic_json(&t))
            })
            .collect();
        let mut peers: Vec<Value> = self
            .peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(key, state)| {
                let mut peer = state.json();
                peer["traffic"] = traffic.remove(key).unwrap_or(Value::Null);
                peer
            })
            .collect();
        for (key, t) in traffic {
            let (kind, name) = key.split_once(":").unwrap_or(("", key.as_str()));
            peers.push(json!({
                "kind": kind,
                "name": name,
                "reachable": null,
                "probe": null,
                "probes": 0,
                "failures": 0,
                "error_rate": 0.0,
                "traffic": t,
            }));
        }
        let warnings: Vec<String> = peers
            .iter()
            .filter_map(|p| {
                let name = format!("{} {}", p["kind"].as_str()?, p["name"].as_str()?);
                match (
                    p["reachable"].as_bool(),
                    p["certificate"]["warning"].as_str(),
                ) {
                    (Some(false), _) => Some(format!("{name} unreachable")),
                    (_, Some(w)) => Some(format!("{name}: certificate {w}")),
                    _ => None,
                }
            })
            .collect();
        json!({
            "probe_secs": self.config.server.chain_probe_secs,
            "checked_at": *self.checked_at.lock().unwrap_or_else(|e| e.into_inner()),
            "peers": peers,
            "warnings": warnings,
            "own": self.own_tls(),
        })
    }
}

/// One peer's real traffic as the chain view shows it.
fn traffic_json(t: &crate::metrics::PeerTraffic) -> Value {
    json!({
        "calls": t.calls,
        "failures": t.failures,
        "error_rate": t.error_rate,
        "last_latency_ms": t.last_latency_ms,
        "mean_latency_ms": t.mean_latency_ms,
        "max_latency_ms": t.max_latency_ms,
        "last_call": t.last_call,
        "last_failure": t.last_failure.as_ref().map(|(at, why)| json!({ "at": at, "error": why })),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_host_port_and_scheme() {
        assert_eq!(
            authority("https://gw.example.nl/xca/iti38"),
            Some(("gw.example.nl".into(), 443, true))
        );
        assert_eq!(
            authority("http://127.0.0.1:8080/x"),
            Some(("127.0.0.1".into(), 8080, false))
        );
        assert_eq!(
            authority("https://[::1]:9443/"),
            Some(("::1".into(), 9443, true))
        );
        assert_eq!(authority("ftp://x"), None);
    }

    #[test]
    fn expiry_warnings_at_30_7_and_1_days() {
        let now = crate::clock::unix_seconds();
        let day = 86_400;
        assert_eq!(expiry_warning(now + 100 * day), None);
        assert_eq!(
            expiry_warning(now + 20 * day).as_deref(),
            Some("expires within 30 days")
        );
        assert_eq!(
            expiry_warning(now + 5 * day).as_deref(),
            Some("expires within 7 days")
        );
        assert_eq!(
            expiry_warning(now + 3600).as_deref(),
            Some("expires within 1 day")
        );
        assert_eq!(expiry_warning(now - 1).as_deref(), Some("expired"));
    }
}
