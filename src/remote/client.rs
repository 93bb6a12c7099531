//! The HTTPS client toward other hospitals' gateways: mutual TLS with our client certificate
//! (`[remote] client_cert_file`), the peer's server certificate checked against the CAs and
//! CRLs (`trust::tls::gateway_client_config`) and then its SHA-256 fingerprint against the
//! peer's `[[participant]]` entry (REFERENCE §2: only qualified GtKs, by certificate). One
//! HTTP/1.1 connection per call; connect and handshake bounded by the peer timeout.

use super::RemoteError;
use crate::trust::participants::Participant;
use crate::trust::tls::{fingerprint, same_fingerprint};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, Uri};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use std::path::PathBuf;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tracing::Instrument;

/// The files of our TLS client side.
#[derive(Debug, Clone)]
pub struct ClientFiles {
    /// The peers' CAs.
    pub ca: PathBuf,
    /// CRLs of those CAs (`tls.crl_files`).
    pub crls: Vec<PathBuf>,
    /// Our certificate chain and key.
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl ClientFiles {
    fn connector(&self) -> Result<TlsConnector, RemoteError> {
        crate::trust::tls::gateway_client_config(&self.ca, &self.crls, &self.cert, &self.key)
            .map(TlsConnector::from)
            .map_err(|e| RemoteError::Config(e.to_string()))
    }
}

/// Calls other gateways over mutual TLS.
#[derive(Debug, Clone)]
pub struct PeerClient {
    files: ClientFiles,
    timeout: Duration,
}

impl PeerClient {
    /// A client with these files, which must make a TLS configuration now.
    pub fn new(files: ClientFiles, timeout: Duration) -> Result<PeerClient, RemoteError> {
        files.connector()?;
        Ok(PeerClient { files, timeout })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// POST a SOAP 1.2 message with `action` to `url` of `peer`, the exchange's correlation
    /// id also as an HTTP header (`oplog::CORRELATION_HEADER`) and the trace's `traceparent`
    /// (`telemetry`); the answer's head once it
    /// arrives (within the timeout), its body to be read by the caller.
    pub async fn post_soap(
        &self,
        peer: &Participant,
        url: &str,
        action: &str,
        correlation: &str,
        envelope: String,
    ) -> Result<Response<Incoming>, RemoteError> {
        // SOAP 1.2 over HTTP: the action as a parameter of the media type (RFC 3902).
        let content_type = format!("application/soap+xml; charset=UTF-8; action=\"{action}\"");
        // A span per call named by the action's last part
        // (`CrossGatewayRetrieveImagingDocumentSet`, `CrossGatewayQuery`, ...).
        let name = action.rsplit([':', '/']).next().unwrap_or(action);
        let headers = [
            (hyper::header::CONTENT_TYPE.as_str(), content_type),
            (crate::oplog::CORRELATION_HEADER, correlation.to_string()),
        ];
        self.send(
            peer,
            url,
            name,
            hyper::Method::POST,
            &headers,
            Bytes::from(envelope),
        )
        .await
    }

    /// GET a DICOMweb resource (WADO-RS, PS3.18 10.4) at `url` of `peer` with `accept`, our
    /// XUA assertion as `Authorization: SAML <base64>` (what our gateway's DICOMweb front
    /// takes from a participant: `trust::Trust::verify_credentials`), the correlation id and
    /// the `traceparent`; the answer's head within the timeout, its body for the caller.
    pub async fn get_dicomweb(
        &self,
        peer: &Participant,
        url: &str,
        accept: &str,
        assertion: &str,
        correlation: &str,
    ) -> Result<Response<Incoming>, RemoteError> {
        use base64::Engine;
        let authorization = format!(
            "SAML {}",
            base64::engine::general_purpose::STANDARD.encode(assertion)
        );
        let headers = [
            (hyper::header::ACCEPT.as_str(), accept.to_string()),
            (hyper::header::AUTHORIZATION.as_str(), authorization),
            (crate::oplog::CORRELATION_HEADER, correlation.to_string()),
        ];
        self.send(
            peer,
            url,
            "WADO-RS",
            hyper::Method::GET,
            &headers,
            Bytes::new(),
        )
        .await
    }

    /// One request over a fresh mutual-TLS connection to `peer` (its certificate checked
    /// against the CAs, the CRLs and its participant entry), in a `name` span until the
    /// answer's head (`telemetry::peer_call`), which carries the trace's `traceparent`.
    async fn send(
        &self,
        peer: &Participant,
        url: &str,
        name: &str,
        method: hyper::Method,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<Response<Incoming>, RemoteError> {
        let call = async {
            let uri: Uri = url
                .parse()
                .map_err(|e| RemoteError::Config(format!("{url:?}: {e}")))?;
            if uri.scheme_str() != Some("https") {
                return Err(RemoteError::Config(format!("{url:?} is not https")));
            }
            let host = uri
                .host()
                .ok_or_else(|| RemoteError::Config(format!("{url:?} has no host")))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(443);
            let tcp = TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|e| RemoteError::Unreachable(format!("{host}:{port}: {e}")))?;
            let _ = tcp.set_nodelay(true);
            let name = ServerName::try_from(host.clone())
                .map_err(|e| RemoteError::Config(format!("{host:?}: {e}")))?;
            let tls = self
                .files
                .connector()?
                .connect(name, tcp)
                .await
                .map_err(|e| RemoteError::Tls(format!("{host}:{port}: {e}")))?;
            // The chain verified; now the certificate must be the participant's own.
            let presented = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| fingerprint(c.as_ref()))
                .unwrap_or_default();
            if !same_fingerprint(&peer.certificate_sha256, &presented) {
                return Err(RemoteError::Tls(format!(
                    "{} presented certificate {presented}, not the one on its participant entry",
                    peer.name
                )));
            }
            let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .map_err(|e| RemoteError::Unreachable(format!("{host}:{port}: {e}")))?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "connection to a peer gateway ended");
                }
            });
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
            let mut request = request
                .body(Full::new(body))
                .map_err(|e| RemoteError::Config(e.to_string()))?;
            // W3C Trace Context: the peer's spans join our trace (`telemetry`).
            crate::telemetry::inject(request.headers_mut());
            sender
                .send_request(request)
                .await
                .map_err(|e| RemoteError::Unreachable(format!("{host}:{port}: {e}")))
        };
        let span = crate::telemetry::peer_call(name, &peer.name);
        let answer = tokio::time::timeout(self.timeout, call)
            .instrument(span.clone())
            .await;
        if !matches!(&answer, Ok(Ok(r)) if r.status().is_success()) {
            crate::telemetry::failed(&span);
        }
        answer.map_err(|_| {
            RemoteError::Timeout(format!(
                "{} did not answer within {} s",
                peer.name,
                self.timeout.as_secs()
            ))
        })?
    }
}
