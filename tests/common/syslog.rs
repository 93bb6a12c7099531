//! A syslog receiver over TLS for the audit tests: RFC 5425 (mutual TLS with the test PKI),
//! octet-counted frames (RFC 5425 4.3), each RFC 5424 message kept as a string. It answers
//! the sender's close with its own, as a receiver that read everything does.
#![allow(dead_code)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub struct SyslogReceiver {
    pub port: u16,
    messages: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl SyslogReceiver {
    /// Listen on 127.0.0.1:`port` (0: any) with `cert`/`key`, requiring a client
    /// certificate from `ca`.
    pub async fn start(port: u16, ca: &Path, cert: &Path, key: &Path) -> SyslogReceiver {
        let acceptor = crate::common::pki::mtls_acceptor(ca, cert, key);
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind syslog receiver");
        let port = listener.local_addr().expect("addr").port();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let kept = messages.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let kept = kept.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut raw = Vec::new();
                    let mut buf = [0u8; 8192];
                    loop {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => raw.extend_from_slice(&buf[..n]),
                        }
                    }
                    let frames = parse_frames(&raw);
                    kept.lock().expect("lock").extend(frames);
                    let _ = tls.shutdown().await;
                });
            }
        });
        SyslogReceiver {
            port,
            messages,
            task,
        }
    }

    pub fn messages(&self) -> Vec<String> {
        self.messages.lock().expect("lock").clone()
    }

    /// Wait until at least `n` messages arrived (or `timeout` passed); all that arrived.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = self.messages();
            if got.len() >= n || tokio::time::Instant::now() >= deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn stop(self) {
        self.task.abort();
    }
}

/// Octet-counted frames: `MSG-LEN SP SYSLOG-MSG`, repeated. Panics on a malformed frame.
pub fn parse_frames(mut raw: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    while !raw.is_empty() {
        let space = raw
            .iter()
            .position(|b| *b == b' ')
            .expect("MSG-LEN followed by a space");
        let len: usize = std::str::from_utf8(&raw[..space])
            .expect("ASCII length")
            .parse()
            .expect("MSG-LEN is a number");
        let body = &raw[space + 1..space + 1 + len];
        out.push(String::from_utf8(body.to_vec()).expect("UTF-8 message"));
        raw = &raw[space + 1 + len..];
    }
    out
}

/// The parts of an RFC 5424 message: (PRI, VERSION, TIMESTAMP, HOSTNAME, APP-NAME, PROCID,
/// MSGID, STRUCTURED-DATA, MSG).
pub fn split_rfc5424(message: &str) -> Vec<String> {
    // STRUCTURED-DATA is NILVALUE here (no spaces inside); MSG is everything after it.
    let parts: Vec<&str> = message.splitn(8, ' ').collect();
    assert_eq!(parts.len(), 8, "RFC 5424 header and MSG: {message}");
    let (pri, version) = parts[0]
        .trim_start_matches('<')
        .split_once('>')
        .expect("<PRI>VERSION");
    let mut out = vec![pri.to_string(), version.to_string()];
    out.extend(parts[1..].iter().map(|p| p.to_string()));
    out
}
