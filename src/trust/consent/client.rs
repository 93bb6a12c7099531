//! One closed (or open) question over HTTP(S): a SOAP 1.2 request-response exchange by HTTP POST (SOAP
//! 1.2 part 2 §7, `application/soap+xml` with the `action` parameter, RFC 3902), over mTLS
//! when the endpoint is `https`. One connection per question: the cache keeps the rate low.

use super::xacml::{self, XacmlError};
use super::ConsentDecision;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Largest answer read (a decision is about 2 KiB).
const MAX_ANSWER: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("consent url {0:?}: {1}")]
    Url(String, String),
    #[error("consent TLS: {0}")]
    Tls(String),
    #[error("connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("TLS handshake with {0}: {1}")]
    Handshake(String, std::io::Error),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("HTTP {status}: {detail}")]
    Status { status: u16, detail: String },
    #[error("answer: {0}")]
    Answer(#[from] XacmlError),
}

/// Where and how to ask.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub url: String,
    uri: Uri,
    host: String,
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Endpoint {
    /// `url` is `http://` (tests, a local simulator) or `https://` with `ca_file` (required)
    /// and our certificate and key for mTLS.
    pub fn new(
        url: &str,
        ca_file: Option<&PathBuf>,
        cert_file: Option<&PathBuf>,
        key_file: Option<&PathBuf>,
    ) -> Result<Endpoint, ClientError> {
        let bad = |why: &str| ClientError::Url(url.to_string(), why.to_string());
        let uri: Uri = url
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| bad(&e.to_string()))?;
        let host = uri.host().ok_or_else(|| bad("no host"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let (https, default_port) = match uri.scheme_str() {
            Some("https") => (true, 443),
            Some("http") => (false, 80),
            _ => return Err(bad("scheme must be http or https")),
        };
        let tls = if https {
            let ca = ca_file.ok_or_else(|| {
                ClientError::Tls("trust.consent.ca_file is required for https".into())
            })?;
            let identity = match (cert_file, key_file) {
                (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
                (None, None) => None,
                _ => {
                    return Err(ClientError::Tls(
                        "trust.consent.cert_file and key_file go together".into(),
                    ))
                }
            };
            Some(
                crate::trust::tls::client_config(ca, identity)
                    .map_err(|e| ClientError::Tls(e.to_string()))?,
            )
        } else {
            None
        };
        Ok(Endpoint {
            url: url.to_string(),
            port: uri.port_u16().unwrap_or(default_port),
            uri,
            host,
            tls,
        })
    }

    /// Ask one question; the whole exchange (connect, TLS, request, answer) within `timeout`.
    pub async fn ask(
        &self,
        question: &xacml::Question,
        issuer: &str,
        timeout: Duration,
    ) -> Result<ConsentDecision, ClientError> {
        let answer = self.exchange_question(question, issuer, timeout).await?;
        Ok(xacml::parse_response(&answer, Some(&question.id))?)
    }

    /// Ask the open question (`question.open`): the data holders (URAs) the answer permits.
    pub async fn ask_open(
        &self,
        question: &xacml::Question,
        issuer: &str,
        timeout: Duration,
    ) -> Result<Vec<String>, ClientError> {
        let answer = self.exchange_question(question, issuer, timeout).await?;
        Ok(xacml::parse_open_response(&answer, Some(&question.id))?)
    }

    async fn exchange_question(
        &self,
        question: &xacml::Question,
        issuer: &str,
        timeout: Duration,
    ) -> Result<Bytes, ClientError> {
        let envelope =
            xacml::query_envelope(question, issuer, &crate::clock::now_rfc3339(), &self.url);
        tokio::time::timeout(timeout, self.post(envelope))
            .await
            .map_err(|_| ClientError::Timeout(timeout))?
    }

    async fn post(&self, envelope: String) -> Result<Bytes, ClientError> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| ClientError::Connect(format!("{}:{}", self.host, self.port), e))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            Some(config) => {
                let name = ServerName::try_from(self.host.clone())
                    .map_err(|e| ClientError::Tls(e.to_string()))?;
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| ClientError::Handshake(self.host.clone(), e))?;
                self.exchange(tls, envelope).await
            }
            None => self.exchange(tcp, envelope).await,
        }
    }

    async fn exchange<S>(&self, stream: S, envelope: String) -> Result<Bytes, ClientError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let http = |e: hyper::Error| ClientError::Http(e.to_string());
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http)?;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        let path = self.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let authority = self
            .uri
            .authority()
            .map(|a| a.as_str().to_string())
            .unwrap_or_else(|| self.host.clone());
        let request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(HOST, authority)
            .header(
                CONTENT_TYPE,
                format!(
                    "application/soap+xml; charset=utf-8; action=\"{}\"",
                    xacml::ACTION_QUERY
                ),
            )
            .body(Full::new(Bytes::from(envelope)))
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let response = sender.send_request(request).await.map_err(http);
        let result = async {
            let response = response?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| ClientError::Http(format!("reading the answer: {e}")))?
                .to_bytes();
            match status {
                200 => Ok(body),
                // A SOAP fault travels with 400 or 500 (SOAP 1.2 part 2 §7.5.2.2): name it.
                _ => match xacml::parse_response(&body, None) {
                    Err(fault @ XacmlError::Fault { .. }) => Err(ClientError::Answer(fault)),
                    _ => Err(ClientError::Status {
                        status,
                        detail: String::from_utf8_lossy(&body[..body.len().min(200)])
                            .trim()
                            .to_string(),
                    }),
                },
            }
        }
        .await;
        driver.abort();
        result
    }
}
