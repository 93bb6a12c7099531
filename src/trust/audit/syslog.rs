//! Audit messages to a syslog receiver over TLS: RFC 5424 messages with the PS3.15 XML as
//! MSG, octet-counted frames (RFC 5425 4.3) on a TLS connection (RFC 5425; port 6514), as
//! IHE ATNA (ITI-20) asks.
//!
//! Messages wait in the index's outbox (written in the same transaction as the chain record),
//! so none is lost while the receiver is down: a background sender claims due messages,
//! writes them, and deletes them only after the write and the TLS close succeeded; a failed
//! attempt leaves them for a retry with exponential backoff. Delivery is at least once: a
//! connection lost after the receiver took a batch sends that batch again.

use crate::clock::unix_seconds;
use crate::store::index::OutboxMessage;
use crate::store::Index;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

/// Facility 10 (security/authorization), severity 5 (notice): IHE ITI TF-2 3.20.6.
const PRI: u8 = 10 * 8 + 5;
/// MSGID of ATNA messages in the DICOM/RFC 3881 format (IHE ITI TF-2 3.20.6).
const MSGID: &str = "IHE+RFC-3881";

#[derive(Debug, thiserror::Error)]
pub enum SyslogError {
    #[error("trust.audit.ca_file is required with syslog_host (RFC 5425 is TLS only)")]
    NoCa,
    #[error("TLS client for the syslog receiver: {0}")]
    Tls(#[from] crate::trust::tls::TlsError),
    #[error("syslog host {0:?} is not a valid TLS server name")]
    ServerName(String),
    #[error("syslog receiver {0}: {1}")]
    Io(String, std::io::Error),
    #[error("syslog receiver {0}: timed out")]
    Timeout(String),
}

/// Where and how to send.
#[derive(Debug, Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
    /// The name the receiver's certificate must carry (default: `host`).
    pub server_name: String,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Longest wait between attempts while the receiver is down.
    pub retry_max: Duration,
    /// How often the outbox is looked at without a new record (other processes, retries).
    pub poll: Duration,
    pub batch: u32,
}

/// The RFC 5424 header fields of our messages.
#[derive(Debug, Clone)]
pub struct Header {
    pub hostname: String,
    pub app_name: String,
    pub procid: String,
}

/// `PRINTUSASCII` without spaces, at most `max` characters, `-` when empty (RFC 5424 6.2).
fn field(value: &str, max: usize) -> String {
    let v: String = value
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if v.is_empty() {
        "-".into()
    } else {
        v
    }
}

/// An RFC 3339 time as RFC 5424 TIMESTAMP: UTC, at most 6 fractional digits; `-` (NILVALUE)
/// if it does not parse.
fn timestamp(time: &str) -> String {
    use time::format_description::well_known::Rfc3339;
    let Ok(t) = time::OffsetDateTime::parse(time, &Rfc3339) else {
        return "-".into();
    };
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// One RFC 5424 message: `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - BOM MSG`
/// (no structured data; MSG is UTF-8, so it starts with the BOM, RFC 5424 6.4).
pub fn message(header: &Header, time: &str, xml: &str) -> String {
    format!(
        "<{PRI}>1 {} {} {} {} {MSGID} - \u{feff}{xml}",
        timestamp(time),
        field(&header.hostname, 255),
        field(&header.app_name, 48),
        field(&header.procid, 128),
    )
}

/// Octet counting (RFC 5425 4.3, RFC 6587 3.4.1): `MSG-LEN SP SYSLOG-MSG`.
pub fn frame(message: &str) -> Vec<u8> {
    let mut out = format!("{} ", message.len()).into_bytes();
    out.extend_from_slice(message.as_bytes());
    out
}

/// This machine's host name (`/proc/sys/kernel/hostname`, `/etc/hostname`), or empty.
pub fn system_hostname() -> String {
    for path in ["/proc/sys/kernel/hostname", "/etc/hostname"] {
        if let Ok(name) = std::fs::read_to_string(path) {
            let name = name.trim();
            if !name.is_empty() {
                return name.to_string();
            }
        }
    }
    String::new()
}

/// The background sender: started once per [`Audit`](super::Audit) with a syslog target.
pub struct Sender {
    index: Arc<dyn Index>,
    target: Target,
    tls: Option<tokio_rustls::TlsConnector>,
    wake: Arc<Notify>,
    owner: String,
    claims: AtomicU64,
}

impl Sender {
    pub fn new(index: Arc<dyn Index>, target: Target, wake: Arc<Notify>) -> Sender {
        let tls = match connector(&target) {
            Ok(c) => Some(c),
            Err(e) => {
                // Messages keep queueing; they go out once the configuration is fixed.
                tracing::error!(error = %e, "AUDIT: syslog sender cannot start; audit messages stay queued");
                None
            }
        };
        Sender {
            index,
            owner: format!(
                "{}:{}:{}",
                system_hostname(),
                std::process::id(),
                time::OffsetDateTime::now_utc().unix_timestamp_nanos()
            ),
            target,
            tls,
            wake,
            claims: AtomicU64::new(0),
        }
    }

    /// Send until the runtime ends.
    pub async fn run(self) {
        let Some(tls) = self.tls.clone() else { return };
        let mut delay = Duration::from_secs(1);
        loop {
            let now = unix_seconds();
            // A claim outlives any attempt (connect and write time out well before).
            let until = now + 120;
            let owner = format!(
                "{}:{}",
                self.owner,
                self.claims.fetch_add(1, Ordering::Relaxed)
            );
            let batch = match self
                .index
                .claim_audit_outbox(&owner, now, until, self.target.batch)
                .await
            {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "AUDIT: cannot read the syslog outbox");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.target.retry_max);
                    continue;
                }
            };
            if batch.is_empty() {
                let _ = tokio::time::timeout(self.target.poll, self.wake.notified()).await;
                continue;
            }
            let ids: Vec<i64> = batch.iter().map(|m| m.id).collect();
            match self.send(&tls, &batch).await {
                Ok(()) => {
                    delay = Duration::from_secs(1);
                    if let Err(e) = self.index.delete_audit_outbox(&ids).await {
                        // Sent but still queued: sent again after the claim runs out.
                        tracing::error!(error = %e, "AUDIT: cannot remove sent syslog messages");
                    }
                }
                Err(e) => {
                    tracing::error!(
                        error = %e,
                        queued = ids.len(),
                        retry_secs = delay.as_secs(),
                        "AUDIT: syslog receiver unreachable; audit messages stay queued"
                    );
                    let retry_at = unix_seconds() + i64::try_from(delay.as_secs()).unwrap_or(60);
                    if let Err(e) = self
                        .index
                        .retry_audit_outbox(&ids, retry_at, &e.to_string())
                        .await
                    {
                        tracing::error!(error = %e, "AUDIT: cannot update the syslog outbox");
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.target.retry_max);
                }
            }
        }
    }

    /// One connection per batch: connect, write every frame, close (TLS close_notify), and
    /// wait for the receiver to close too, so the batch is known to have been read.
    async fn send(
        &self,
        tls: &tokio_rustls::TlsConnector,
        batch: &[OutboxMessage],
    ) -> Result<(), SyslogError> {
        let addr = format!("{}:{}", self.target.host, self.target.port);
        let io = |e| SyslogError::Io(addr.clone(), e);
        let timeout = Duration::from_secs(10);
        let name = rustls_pki_types::ServerName::try_from(self.target.server_name.clone())
            .map_err(|_| SyslogError::ServerName(self.target.server_name.clone()))?;
        let attempt = async {
            let tcp = tokio::net::TcpStream::connect(&addr).await.map_err(io)?;
            let _ = tcp.set_nodelay(true);
            let mut stream = tls.connect(name, tcp).await.map_err(io)?;
            let mut bytes = Vec::new();
            for m in batch {
                bytes.extend_from_slice(&frame(&m.message));
            }
            stream.write_all(&bytes).await.map_err(io)?;
            stream.flush().await.map_err(io)?;
            stream.shutdown().await.map_err(io)?;
            Ok::<_, SyslogError>(stream)
        };
        let mut stream = tokio::time::timeout(timeout, attempt)
            .await
            .map_err(|_| SyslogError::Timeout(addr.clone()))??;
        // The receiver answers our close with its own once it read everything. One that
        // keeps the connection open is given the benefit of the doubt after a while.
        let mut sink = [0u8; 256];
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match stream.read(&mut sink).await {
                    Ok(0) => return Ok(()),
                    Ok(_) => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
        })
        .await;
        match closed {
            Ok(Ok(())) | Err(_) => Ok(()),
            Ok(Err(e)) => Err(io(e)),
        }
    }
}

fn connector(target: &Target) -> Result<tokio_rustls::TlsConnector, SyslogError> {
    let ca = target.ca_file.as_deref().ok_or(SyslogError::NoCa)?;
    let client = match (&target.cert_file, &target.key_file) {
        (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
        _ => None,
    };
    let config = crate::trust::tls::client_config(ca, client)?;
    Ok(tokio_rustls::TlsConnector::from(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc5424_message_and_octet_counting() {
        let header = Header {
            hostname: "gw 1".into(),
            app_name: "beeldbrug".into(),
            procid: "42".into(),
        };
        let m = message(&header, "2025-01-02T03:04:05.123456789+01:00", "<x>é</x>");
        assert_eq!(
            m,
            "<85>1 2025-01-02T02:04:05.123456Z gw1 beeldbrug 42 IHE+RFC-3881 - \u{feff}<x>é</x>"
        );
        let f = frame(&m);
        let (len, rest) = std::str::from_utf8(&f).unwrap().split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), rest.len());
        assert_eq!(timestamp("garbage"), "-");
        assert_eq!(field("", 10), "-");
    }
}
