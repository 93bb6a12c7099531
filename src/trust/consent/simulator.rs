//! `beeldbrug mitz-sim`: a small, faithful simulator of the Mitz closed-question interface
//! (XACML decision query over SOAP 1.2, optionally over mTLS), answering from a consent
//! table, and of the open question (where may data of this patient be found: one Result per
//! data holder, see [`xacml::Question`]). For tests and demos only: it holds no real
//! consents and signs nothing.
//!
//! - `POST` (any path): one `XACMLAuthzDecisionQuery` in, one `samlp:Response` out; a
//!   malformed message gets a SOAP 1.2 fault with the HTTP status of SOAP 1.2 part 2
//!   §7.5.2.2 (env:Sender 400, others 500); another media type than `application/soap+xml`
//!   gets 415.
//! - `GET /stats`: `{"queries": n, "open_queries": o, "faults": m}` (every POST counts as a
//!   query, an open question also as an open one), so tests can see whether a client asked.

use super::xacml::{self, FaultCode};
use super::ConsentDecision;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::net::TcpListener;

/// Largest query read.
const MAX_QUERY: usize = 1 << 20;

#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "A test and demo tool, not Mitz: it answers the closed question from a TOML table \
(`[[consent]] bsn, requester_ura (or \"*\"), holder_ura (or \"*\"), purpose (optional), decision`); \
an unknown BSN is NotApplicable. The open question (where) is answered with the holders the rows \
of the BSN name, each with its decision. GET /stats counts the queries. See docs/trust-consent.md."
)]
pub struct SimulatorArgs {
    /// Address to listen on (port 0: any free port; the URL is printed on stdout).
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: String,
    /// Consent table (TOML).
    #[arg(long)]
    pub consents: PathBuf,
    /// Server certificate chain (PEM): serve HTTPS.
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// Server private key (PEM).
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    /// Trusted CAs for client certificates (PEM): a client certificate is required (mTLS).
    #[arg(long, requires = "cert")]
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum SimulatorError {
    #[error("consent table {0}: {1}")]
    Table(String, String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("listen on {0}: {1}")]
    Listen(String, std::io::Error),
}

/// One row of the consent table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentEntry {
    pub bsn: String,
    /// The requesting organisation (URA), or `"*"` (the default) for any.
    #[serde(default = "any")]
    pub requester_ura: String,
    /// The data holder (URA) this row is about, or `"*"` (the default) for any. The holders
    /// a BSN's rows name are where the open question says its data may be found.
    #[serde(default = "any")]
    pub holder_ura: String,
    /// The purpose of use this row is for; absent: any.
    #[serde(default)]
    pub purpose: Option<String>,
    pub decision: ConsentDecision,
}

fn any() -> String {
    "*".into()
}

/// `[[consent]]` rows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentTable {
    #[serde(default)]
    pub consent: Vec<ConsentEntry>,
}

impl ConsentTable {
    pub fn load(path: &Path) -> Result<ConsentTable, SimulatorError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SimulatorError::Table(path.display().to_string(), e.to_string()))?;
        ConsentTable::from_toml(&text)
            .map_err(|e| SimulatorError::Table(path.display().to_string(), e))
    }

    pub fn from_toml(text: &str) -> Result<ConsentTable, String> {
        use figment::providers::{Format, Toml};
        figment::Figment::from(Toml::string(text))
            .extract()
            .map_err(|e| e.to_string())
    }

    /// A table of `(bsn, decision)` rows for any requester and purpose.
    pub fn of(rows: &[(&str, ConsentDecision)]) -> ConsentTable {
        ConsentTable {
            consent: rows
                .iter()
                .map(|(bsn, decision)| ConsentEntry {
                    bsn: bsn.to_string(),
                    requester_ura: any(),
                    holder_ura: any(),
                    purpose: None,
                    decision: *decision,
                })
                .collect(),
        }
    }

    /// The most specific matching row (a named holder before `"*"`, then a named requester,
    /// then a named purpose; the first of equals); no row: NotApplicable (no consent
    /// registered). A row naming a holder applies only to a question naming that holder.
    pub fn decide(&self, q: &xacml::Question) -> ConsentDecision {
        let mut best: Option<(u8, ConsentDecision)> = None;
        for row in &self.consent {
            if row.bsn.trim() != q.bsn {
                continue;
            }
            let holder_named = row.holder_ura != "*";
            if holder_named && row.holder_ura.trim() != q.custodian_ura {
                continue;
            }
            let requester_named = row.requester_ura != "*";
            if requester_named && row.requester_ura.trim() != q.requester_ura {
                continue;
            }
            if let Some(p) = &row.purpose {
                if !p.eq_ignore_ascii_case(&q.purpose_of_use) {
                    continue;
                }
            }
            let score = u8::from(holder_named) * 4
                + u8::from(requester_named) * 2
                + u8::from(row.purpose.is_some());
            if best.is_none_or(|(s, _)| score > s) {
                best = Some((score, row.decision));
            }
        }
        best.map_or(ConsentDecision::NotApplicable, |(_, d)| d)
    }

    /// The open question: every holder the BSN's rows name (in table order, once), with the
    /// closed question's decision for that holder.
    pub fn locate(&self, q: &xacml::Question) -> Vec<(String, ConsentDecision)> {
        let mut holders: Vec<String> = Vec::new();
        for row in &self.consent {
            let holder = row.holder_ura.trim();
            if row.bsn.trim() == q.bsn && holder != "*" && !holders.iter().any(|h| h == holder) {
                holders.push(holder.to_string());
            }
        }
        holders
            .into_iter()
            .map(|holder| {
                let closed = xacml::Question {
                    open: false,
                    custodian_ura: holder.clone(),
                    ..q.clone()
                };
                (holder, self.decide(&closed))
            })
            .collect()
    }
}

/// The simulator's state: its table and counters.
#[derive(Debug)]
pub struct Simulator {
    table: ConsentTable,
    queries: AtomicU64,
    open_queries: AtomicU64,
    faults: AtomicU64,
}

impl Simulator {
    pub fn new(table: ConsentTable) -> Arc<Simulator> {
        Arc::new(Simulator {
            table,
            queries: AtomicU64::new(0),
            open_queries: AtomicU64::new(0),
            faults: AtomicU64::new(0),
        })
    }

    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }

    /// Open questions answered so far.
    pub fn open_queries(&self) -> u64 {
        self.open_queries.load(Ordering::Relaxed)
    }

    pub fn faults(&self) -> u64 {
        self.faults.load(Ordering::Relaxed)
    }

    /// The answer to one SOAP message: HTTP status and envelope.
    pub fn answer(&self, body: &[u8]) -> (u16, String) {
        match xacml::parse_query(body) {
            Ok(q) if q.open => {
                self.open_queries.fetch_add(1, Ordering::Relaxed);
                let holders = self.table.locate(&q);
                tracing::info!(query = %q.id, holders = ?holders, "mitz-sim: open question");
                let envelope = xacml::open_response_envelope(
                    &q,
                    &holders,
                    "urn:beeldbrug:mitz-sim",
                    &crate::clock::now_rfc3339(),
                    &super::new_id(),
                    &super::new_id(),
                );
                (200, envelope)
            }
            Ok(q) => {
                let decision = self.table.decide(&q);
                tracing::info!(query = %q.id, %decision, "mitz-sim");
                let envelope = xacml::response_envelope(
                    &q,
                    decision,
                    "urn:beeldbrug:mitz-sim",
                    &crate::clock::now_rfc3339(),
                    &super::new_id(),
                    &super::new_id(),
                );
                (200, envelope)
            }
            Err(e) => {
                self.faults.fetch_add(1, Ordering::Relaxed);
                let code = e.fault_code();
                tracing::info!(error = %e, "mitz-sim: fault");
                (
                    code.http_status(),
                    xacml::fault_envelope(code, &e.to_string()),
                )
            }
        }
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let reply = |status: u16, content_type: &str, body: String| {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            if let Ok(v) = content_type.parse() {
                r.headers_mut().insert(CONTENT_TYPE, v);
            }
            r
        };
        const SOAP: &str = "application/soap+xml; charset=utf-8";
        if req.method() == Method::GET && req.uri().path() == "/stats" {
            let stats = serde_json::json!({
                "queries": self.queries(),
                "open_queries": self.open_queries(),
                "faults": self.faults(),
            });
            return reply(200, "application/json", stats.to_string());
        }
        if req.method() != Method::POST {
            let mut r = reply(405, "text/plain", "POST a SOAP 1.2 message\n".into());
            r.headers_mut()
                .insert(ALLOW, hyper::header::HeaderValue::from_static("POST"));
            return r;
        }
        self.queries.fetch_add(1, Ordering::Relaxed);
        // SOAP 1.2 part 2 §7.1.4: the media type is application/soap+xml.
        let media_type = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase())
            .unwrap_or_default();
        if media_type != "application/soap+xml" {
            self.faults.fetch_add(1, Ordering::Relaxed);
            return reply(
                415,
                "text/plain",
                format!("expected application/soap+xml, got {media_type:?}\n"),
            );
        }
        let body = match Limited::new(req.into_body(), MAX_QUERY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                self.faults.fetch_add(1, Ordering::Relaxed);
                let fault = xacml::fault_envelope(FaultCode::Sender, &e.to_string());
                return reply(400, SOAP, fault);
            }
        };
        let (status, envelope) = self.answer(&body);
        reply(status, SOAP, envelope)
    }
}

/// Serve on `listener` until the task is dropped or aborted: plain HTTP, or HTTPS with `tls`
/// (which requires a client certificate when built with a client CA).
pub async fn serve(
    listener: TcpListener,
    simulator: Arc<Simulator>,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> std::io::Result<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "mitz-sim: accept");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let simulator = simulator.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let simulator = simulator.clone();
                async move { Ok::<_, std::convert::Infallible>(simulator.handle(req).await) }
            });
            let http = hyper::server::conn::http1::Builder::new();
            let result = match acceptor {
                Some(acceptor) => match acceptor.accept(tcp).await {
                    Ok(stream) => http.serve_connection(TokioIo::new(stream), service).await,
                    Err(e) => {
                        tracing::info!(%peer, error = %e, "mitz-sim: TLS handshake refused");
                        return;
                    }
                },
                None => http.serve_connection(TokioIo::new(tcp), service).await,
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "mitz-sim: connection");
            }
        });
    }
}

/// The server TLS configuration: our certificate, a client certificate required when
/// `client_ca` is given (the gateway's own TLS rules: TLS 1.2/1.3, NCSC suites).
pub fn server_tls(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, SimulatorError> {
    let config = crate::trust::tls::TlsConfig {
        cert_file: Some(cert.to_path_buf()),
        key_file: Some(key.to_path_buf()),
        client_ca_file: client_ca.map(Path::to_path_buf),
        ..Default::default()
    };
    crate::trust::tls::server_config(&config).map_err(|e| SimulatorError::Tls(e.to_string()))
}

pub async fn run(args: SimulatorArgs) -> anyhow::Result<()> {
    let table = ConsentTable::load(&args.consents)?;
    let tls = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => Some(server_tls(cert, key, args.client_ca.as_deref())?),
        _ => None,
    };
    let listener = TcpListener::bind(&args.listen)
        .await
        .map_err(|e| SimulatorError::Listen(args.listen.clone(), e))?;
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "mitz-sim ({} consent rows, test and demo only) listening on {scheme}://{addr}/",
            table.consent.len()
        )?;
        out.flush()?;
    }
    let simulator = Simulator::new(table);
    tokio::select! {
        result = serve(listener, simulator, tls) => result?,
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn question(bsn: &str, ura: &str, purpose: &str) -> xacml::Question {
        xacml::Question {
            id: "_q".into(),
            bsn: bsn.into(),
            requester_ura: ura.into(),
            purpose_of_use: purpose.into(),
            ..Default::default()
        }
    }

    #[test]
    fn table_picks_the_most_specific_row() {
        let table = ConsentTable::from_toml(
            r#"
[[consent]]
bsn = "999999990"
decision = "Permit"

[[consent]]
bsn = "999999990"
requester_ura = "00000666"
decision = "Deny"

[[consent]]
bsn = "999999990"
requester_ura = "00000666"
purpose = "COC"
decision = "Indeterminate"

[[consent]]
bsn = "111222333"
requester_ura = "*"
purpose = "TREATMENT"
decision = "Permit"
"#,
        )
        .unwrap();
        let d = |bsn, ura, p| table.decide(&question(bsn, ura, p));
        assert_eq!(
            d("999999990", "00000001", "TREATMENT"),
            ConsentDecision::Permit
        );
        assert_eq!(
            d("999999990", "00000666", "TREATMENT"),
            ConsentDecision::Deny
        );
        assert_eq!(
            d("999999990", "00000666", "coc"),
            ConsentDecision::Indeterminate
        );
        assert_eq!(
            d("111222333", "00000001", "TREATMENT"),
            ConsentDecision::Permit
        );
        assert_eq!(
            d("111222333", "00000001", "COC"),
            ConsentDecision::NotApplicable
        );
        assert_eq!(
            d("123456782", "00000001", "TREATMENT"),
            ConsentDecision::NotApplicable
        );
    }

    #[test]
    fn holders_decide_closed_and_open_questions() {
        let table = ConsentTable::from_toml(
            r#"
[[consent]]
bsn = "999999990"
holder_ura = "22220000"
decision = "Permit"

[[consent]]
bsn = "999999990"
holder_ura = "33330000"
decision = "Deny"

[[consent]]
bsn = "999999990"
holder_ura = "33330000"
requester_ura = "00000001"
decision = "Permit"

[[consent]]
bsn = "123456782"
decision = "Permit"
"#,
        )
        .unwrap();
        let held_by = |holder: &str, ura: &str| xacml::Question {
            custodian_ura: holder.into(),
            ..question("999999990", ura, "TREATMENT")
        };
        assert_eq!(
            table.decide(&held_by("33330000", "00000002")),
            ConsentDecision::Deny
        );
        assert_eq!(
            table.decide(&held_by("33330000", "00000001")),
            ConsentDecision::Permit
        );
        assert_eq!(
            table.decide(&held_by("", "00000002")),
            ConsentDecision::NotApplicable,
            "rows naming a holder do not answer a question without one"
        );
        let open = |bsn: &str, ura: &str| xacml::Question {
            open: true,
            ..question(bsn, ura, "TREATMENT")
        };
        assert_eq!(
            table.locate(&open("999999990", "00000002")),
            [
                ("22220000".to_string(), ConsentDecision::Permit),
                ("33330000".to_string(), ConsentDecision::Deny)
            ]
        );
        assert!(
            table.locate(&open("123456782", "00000002")).is_empty(),
            "no row names a holder"
        );
        let sim = Simulator::new(table);
        let q = open("999999990", "00000001");
        let (status, body) = sim.answer(xacml::query_envelope(&q, "t", "t", "d").as_bytes());
        assert_eq!(status, 200);
        assert_eq!(
            xacml::parse_open_response(body.as_bytes(), Some(&q.id)).unwrap(),
            ["22220000", "33330000"]
        );
        assert_eq!((sim.queries(), sim.open_queries()), (0, 1));
    }

    #[test]
    fn table_refuses_unknown_keys_and_decisions() {
        assert!(ConsentTable::from_toml("[[consent]]\nbsn = \"1\"\ndecision = \"Maybe\"").is_err());
        assert!(ConsentTable::from_toml(
            "[[consent]]\nbsn = \"1\"\ndecision = \"Deny\"\nura = \"2\""
        )
        .is_err());
    }

    #[test]
    fn answers_and_faults() {
        let sim = Simulator::new(ConsentTable::of(&[("999999990", ConsentDecision::Deny)]));
        let q = xacml::Question {
            id: "_abc".into(),
            bsn: "999999990".into(),
            requester_ura: "00000666".into(),
            ..Default::default()
        };
        let (status, body) = sim.answer(xacml::query_envelope(&q, "t", "t", "d").as_bytes());
        assert_eq!(status, 200);
        assert_eq!(
            xacml::parse_response(body.as_bytes(), Some("_abc")).unwrap(),
            ConsentDecision::Deny
        );
        let (status, body) = sim.answer(b"<not soap");
        assert_eq!(status, 400);
        assert!(matches!(
            xacml::parse_response(body.as_bytes(), None),
            Err(xacml::XacmlError::Fault { code, .. }) if code == "env:Sender"
        ));
        assert_eq!(sim.faults(), 1);
    }
}
