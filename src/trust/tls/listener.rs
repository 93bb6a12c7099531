//! The HTTPS listener: the axum router over tokio-rustls and hyper-util's auto builder
//! (HTTP/1.1 and h2, chosen by ALPN, RFC 7301). Each request carries `ConnectInfo<SocketAddr>`
//! and, where the client presented a verified certificate, a [`TlsPeer`] extension. A failed
//! handshake is logged and ends that connection only. On shutdown it stops accepting and waits
//! for the connections in flight to finish their requests.

use super::{TlsPeer, TlsState};
use axum::extract::connect_info::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Longest a client may take to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serve `router` over TLS on `listener` until `shutdown`; each connection gets the TLS
/// configuration current when it was accepted (see [`TlsState::http`]).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Arc<TlsState>,
    shutdown: CancellationToken,
) {
    let graceful = GracefulShutdown::new();
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    loop {
        let (socket, addr) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "HTTPS accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(config) = tls.http() else {
            tracing::error!("HTTPS listener without a TLS configuration");
            break;
        };
        let _ = socket.set_nodelay(true);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let (router, builder, watcher) = (router.clone(), builder.clone(), graceful.watcher());
        tokio::spawn(async move {
            let stream =
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(socket)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::info!(peer = %addr, error = %e, "TLS handshake refused");
                        return;
                    }
                    Err(_) => {
                        tracing::info!(peer = %addr, "TLS handshake timed out");
                        return;
                    }
                };
            let peer = TlsPeer::of(stream.get_ref().1);
            if let Some(p) = &peer {
                tracing::debug!(peer = %addr, subject = %p.subject, sha256 = %p.certificate_sha256, "TLS client verified");
            }
            let service =
                router.map_request(move |mut req: axum::http::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ConnectInfo(addr));
                    if let Some(p) = &peer {
                        req.extensions_mut().insert(p.clone());
                    }
                    req.map(axum::body::Body::new)
                });
            let service = hyper_util::service::TowerToHyperService::new(service);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(peer = %addr, error = %e, "HTTPS connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
