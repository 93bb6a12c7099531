//! The console's peers: the PACS (its probe through the core: C-ECHO), each remote gateway
//! on the participant list (a TLS handshake with our client certificate toward its query
//! endpoint: latency and the certificate it presents), the consent service (Mitz: a
//! connection), and our own certificate and CRLs (expiry, age). Each probe's last success
//! and failure are kept ([`PeerLog`]) for as long as the process runs.

use super::{Admin, AdminState};
use crate::trust::tls::der;
use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Longest probe of one peer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Days before expiry from which a certificate or CRL is flagged.
pub const WARN_DAYS: [i64; 3] = [30, 7, 1];

/// Last success and failure per peer.
#[derive(Debug, Default)]
pub struct PeerLog(Mutex<HashMap<String, (Option<String>, Option<(String, String)>)>>);

impl PeerLog {
    fn note(&self, peer: &str, ok: bool, detail: &str) -> Value {
        let now = crate::clock::now_rfc3339();
        let mut log = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let entry = log.entry(peer.to_string()).or_default();
        if ok {
            entry.0 = Some(now);
        } else {
            entry.1 = Some((now, detail.to_string()));
        }
        json!({
            "last_success": entry.0,
            "last_failure": entry.1.as_ref().map(|(at, why)| json!({ "at": at, "error": why })),
        })
    }
}

/// Days from now to `at` (Unix seconds), rounded down; negative once past.
fn days_until(at: i64) -> i64 {
    (at - crate::clock::unix_seconds()).div_euclid(86_400)
}

/// The warning level of an expiry: the smallest of [`WARN_DAYS`] it falls within, or
/// "expired".
pub fn expiry_warning(at: i64) -> Option<String> {
    let days = days_until(at);
    if at <= crate::clock::unix_seconds() {
        return Some("expired".into());
    }
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

/// A certificate's subject, validity and warning.
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

/// Our own TLS material: the certificate of the listeners, the client CA, the CRLs.
fn own_tls(state: &AdminState) -> Value {
    let tls = &state.web.config.tls;
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
                    json!({
                        "this_update": times.and_then(|(t, _)| rfc3339(t)),
                        "age_hours": times.map(|(t, _)| (now - t) / 3600),
                        "next_update": times.and_then(|(_, n)| n).and_then(rfc3339),
                        "warning": times.and_then(|(_, n)| n).and_then(|n| {
                            if n <= now { Some("next update passed: stale CRL".to_string()) } else { None }
                        }),
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

/// `host:port` of an http(s) URL, and whether it is https.
fn authority(url: &str) -> Option<(String, u16, bool)> {
    let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else {
        (false, url.strip_prefix("http://")?)
    };
    let host_port = rest.split(['/', '?', '#']).next()?;
    let host_port = host_port.rsplit('@').next()?;
    let (host, port) = match host_port.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h.to_string(), p.parse().ok()?),
        _ => (host_port.to_string(), if https { 443 } else { 80 }),
    };
    Some((host.trim_matches(['[', ']']).to_string(), port, https))
}

/// Connect to `url` and, for https with a client configuration, finish a TLS handshake:
/// the latency and the certificate the peer presented.
async fn probe_url(state: &AdminState, url: &str) -> (bool, String, u64, Option<Value>) {
    let started = Instant::now();
    let ms = |s: Instant| u64::try_from(s.elapsed().as_millis()).unwrap_or(u64::MAX);
    let Some((host, port, https)) = authority(url) else {
        return (false, format!("{url:?} is not an http(s) URL"), 0, None);
    };
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("connect {host}:{port}: {e}"))?;
        let client = match (https, state.web.tls.peer_client()) {
            (true, Some(client)) => client,
            (true, None) => {
                return Ok((
                    "connected (no tls.client_ca_file: TLS not tried)".to_string(),
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
        Ok(Ok((said, cert))) => (true, said, ms(started), cert),
        Ok(Err(why)) => (false, why, ms(started), None),
        Err(_) => (
            false,
            format!("no answer in {PROBE_TIMEOUT:?}"),
            ms(started),
            None,
        ),
    }
}

/// `GET /admin/api/peers`: probe every peer now; with each, its last success and failure.
pub async fn peers(State(state): State<AdminState>, _admin: Admin) -> Json<Value> {
    let config = state.web.config.clone();
    let mut peers = Vec::new();
    for p in state.web.core.probe_sources().await {
        let address = config
            .pacs
            .as_ref()
            .filter(|_| p.source.contains("PACS"))
            .map(|c| format!("{}@{}:{}", c.ae_title, c.host, c.port));
        let log = state
            .peers
            .note(&format!("source:{}", p.source), p.ok, &p.detail);
        peers.push(json!({
            "kind": "pacs",
            "name": p.source,
            "address": address,
            "probe": { "ok": p.ok, "detail": p.detail, "latency_ms": p.latency_ms },
            "log": log,
        }));
    }
    let probes = state.web.trust.participants.all().into_iter().map(|gw| {
        let state = state.clone();
        async move {
            let url = gw
                .query_url
                .clone()
                .or_else(|| gw.retrieve_url.clone())
                .or_else(|| gw.dicomweb_url.clone());
            let probe = match &url {
                Some(url) => {
                    let (ok, detail, latency_ms, cert) = probe_url(&state, url).await;
                    let log = state.peers.note(&format!("gateway:{}", gw.name), ok, &detail);
                    json!({ "probe": { "ok": ok, "detail": detail, "latency_ms": latency_ms }, "certificate": cert, "log": log })
                }
                None => json!({ "probe": null }),
            };
            let mut entry = json!({
                "kind": "gateway",
                "name": gw.name,
                "ura": gw.ura,
                "home_community_id": gw.home_community_id,
                "address": url,
                "certificate_sha256": gw.certificate_sha256,
            });
            if let (Some(e), Some(p)) = (entry.as_object_mut(), probe.as_object()) {
                e.extend(p.clone());
            }
            entry
        }
    });
    peers.extend(futures::future::join_all(probes).await);
    let mitz = config.trust.consent.url.trim();
    if !mitz.is_empty() {
        let (ok, detail, latency_ms, cert) = probe_url(&state, mitz).await;
        let log = state.peers.note("consent", ok, &detail);
        peers.push(json!({
            "kind": "consent",
            "name": "Mitz (consent)",
            "address": mitz,
            "probe": { "ok": ok, "detail": detail, "latency_ms": latency_ms },
            "certificate": cert,
            "log": log,
        }));
    }
    Json(json!({ "own": own_tls(&state), "peers": peers }))
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
