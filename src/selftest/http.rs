//! The self-test's connections: the TLS client configuration a check asks for, the SOAP
//! request headers and the ITI-38 body every SOAP check sends, and one HTTPS request with the TLS client configuration a check asks for
//! (with or without our client certificate, with or without the CRLs), the answer read
//! whole, and what the TLS session was (version, suite, the peer's certificates).

use crate::ebrim::{ns, QueryId, Slot};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Method, Request, Uri};
use hyper_util::rt::TokioIo;
use rustls::SupportedProtocolVersion;
use rustls_pki_types::{CertificateDer, ServerName};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Largest answer read.
const LIMIT: usize = 256 << 20;

/// What the TLS session was.
#[derive(Debug, Clone)]
pub struct Session {
    pub version: String,
    pub suite: String,
    pub certificates: Vec<CertificateDer<'static>>,
}

/// An HTTP answer, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn content_type(&self) -> String {
        self.headers
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }
}

/// Connect and finish the TLS handshake with `config` to `host:port`.
pub async fn handshake(
    config: Arc<rustls::ClientConfig>,
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<(TlsStream<TcpStream>, Session), String> {
    let connect = async {
        let tcp = TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("connect {host}:{port}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| format!("server name {host:?}: {e}"))?;
        let tls = TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?;
        let (_, conn) = tls.get_ref();
        let session = Session {
            version: conn
                .protocol_version()
                .map(|v| format!("{v:?}"))
                .unwrap_or_default(),
            suite: conn
                .negotiated_cipher_suite()
                .map(|s| format!("{:?}", s.suite()))
                .unwrap_or_default(),
            certificates: conn
                .peer_certificates()
                .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
                .unwrap_or_default(),
        };
        Ok((tls, session))
    };
    tokio::time::timeout(timeout, connect)
        .await
        .map_err(|_| format!("no TLS handshake with {host}:{port} within {timeout:?}"))?
}

/// An error with its causes (hyper's "operation was canceled" says little; the TLS alert
/// under it says why).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// One request over a fresh connection: the answer read whole and the session.
pub async fn request(
    config: Arc<rustls::ClientConfig>,
    method: Method,
    url: &str,
    headers: &[(&str, String)],
    body: Option<String>,
    timeout: Duration,
) -> Result<(Answer, Session), String> {
    let uri: Uri = url.parse().map_err(|e| format!("{url:?}: {e}"))?;
    let host = uri
        .host()
        .ok_or_else(|| format!("{url:?} has no host"))?
        .trim_matches(['[', ']'])
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let (tls, session) = handshake(config, &host, port, timeout).await?;
    let exchange = async {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        // The connection's own error (a TLS alert from the peer) says why a request failed.
        let connection = tokio::spawn(connection);
        let authority = uri
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_else(|| host.clone());
        let path = uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, authority);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| e.to_string())?;
        let response = match sender.send_request(request).await {
            Ok(r) => r,
            Err(e) => {
                let why = match tokio::time::timeout(Duration::from_secs(1), connection).await {
                    Ok(Ok(Err(c))) => format!("{} ({})", chain(&c), chain(&e)),
                    _ => chain(&e),
                };
                return Err(format!("no HTTP answer: {why}"));
            }
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let limited = http_body_util::Limited::new(response.into_body(), LIMIT);
        let body = limited
            .collect()
            .await
            .map_err(|e| format!("HTTP {status}, body cut off: {e}"))?
            .to_bytes();
        Ok::<_, String>(Answer {
            status,
            headers,
            body,
        })
    };
    let answer = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("no answer from {url} within {timeout:?}"))??;
    Ok((answer, session))
}

/// A client configuration toward the peer: the CAs, the CRLs when given, our identity when
/// given, the versions asked.
pub fn client_config(
    ca: &Path,
    crls: &[PathBuf],
    identity: Option<(&Path, &Path)>,
    versions: &[&'static SupportedProtocolVersion],
) -> Result<Arc<rustls::ClientConfig>, String> {
    use crate::trust::tls;
    let provider = tls::provider();
    let roots = Arc::new(tls::roots(ca).map_err(|e| e.to_string())?);
    let mut loaded = Vec::new();
    for file in crls {
        loaded.extend(tls::load_crls(file).map_err(|e| e.to_string())?);
    }
    let mut verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider.clone());
    if !loaded.is_empty() {
        verifier = verifier.with_crls(loaded).enforce_revocation_expiration();
    }
    let verifier = verifier.build().map_err(|e| e.to_string())?;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| e.to_string())?
        .with_webpki_verifier(verifier);
    let config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                tls::load_certs(cert).map_err(|e| e.to_string())?,
                tls::load_key(key).map_err(|e| e.to_string())?,
            )
            .map_err(|e| e.to_string())?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The HTTP headers of a SOAP 1.2 request (the action as a media type parameter, RFC 3902).
pub fn soap_headers(action: &str, correlation: Option<&str>) -> Vec<(&'static str, String)> {
    let mut headers = vec![(
        "content-type",
        format!("application/soap+xml; charset=UTF-8; action=\"{action}\""),
    )];
    if let Some(id) = correlation {
        headers.push((crate::oplog::CORRELATION_HEADER, id.to_string()));
    }
    headers
}

/// An ITI-38 FindDocuments request for `bsn` (approved entries).
pub fn find_documents_body(bsn: &str) -> String {
    crate::ebrim::response::adhoc_query_request(
        QueryId::FindDocuments,
        &[
            Slot::new(
                "$XDSDocumentEntryPatientId",
                [format!("'{bsn}^^^&2.16.840.1.113883.2.4.6.3&ISO'")],
            ),
            Slot::new(
                "$XDSDocumentEntryStatus",
                [format!("('{}')", ns::STATUS_APPROVED)],
            ),
        ],
    )
}
