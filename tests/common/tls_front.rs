//! A TLS front for a plain-HTTP server (a hospital's reverse proxy before its DICOMweb
//! server): it presents `cert`, requires a client certificate from `ca` (mutual TLS, as
//! a gateway's endpoints do) and passes the decrypted bytes both ways to 127.0.0.1:`upstream`.
//! It remembers the SHA-256 fingerprint of each client certificate it accepted.
#![allow(dead_code)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};

pub struct TlsFront {
    pub port: u16,
    /// The fingerprints (`AA:BB:…`, as `CertFiles::fingerprint`) of the client certificates
    /// of the connections accepted.
    pub clients: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsFront {
    pub async fn start(upstream: u16, ca: &Path, cert: &Path, key: &Path) -> TlsFront {
        let acceptor = crate::common::pki::mtls_acceptor(ca, cert, key);
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let clients = Arc::new(Mutex::new(Vec::new()));
        let seen = clients.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let seen = seen.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    if let Some(cert) = tls.get_ref().1.peer_certificates().and_then(|c| c.first())
                    {
                        seen.lock()
                            .unwrap()
                            .push(beeldbrug::trust::tls::fingerprint(cert.as_ref()));
                    }
                    let Ok(mut plain) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        TlsFront {
            port,
            clients,
            task,
        }
    }
}
