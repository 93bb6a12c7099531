//! TLS checks (REFERENCE §2: mutual TLS on every inter-GtK transaction, TLS 1.2 and 1.3 only
//! with NCSC "good"/"sufficient" suites, revocation checked, only qualified GtKs):
//!
//! - the good side with rustls and our client identity (`trust::tls::provider`: the suites
//!   we allow): TLS 1.3 and TLS 1.2 handshakes, the chain against our CAs, revocation
//!   against our CRLs, the certificate against the participant list;
//! - the bad side with a ClientHello of our own, since rustls never offers TLS 1.0 / 1.1 or a
//!   weak suite: the peer must answer it with an alert (or close), never a ServerHello;
//! - a connection without a client certificate must get no HTTP answer.

use super::http::{self, Session};
use super::{Check, Requirement, Suite};
use rustls::SupportedProtocolVersion;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const VERSIONS: Requirement = Requirement {
    id: "tls.versions",
    text: "TLS 1.2 and 1.3 only: the peer completes a TLS 1.3 or 1.2 handshake and refuses TLS 1.0 and 1.1",
    reference: "REFERENCE §2 Trust (mTLS, TLS 1.2 and 1.3 only)",
};
pub const SUITES: Requirement = Requirement {
    id: "tls.cipher-suites",
    text: "NCSC \"good\"/\"sufficient\" cipher suites only: no suite with static RSA key exchange, 3DES, RC4 or NULL is accepted in TLS 1.2",
    reference: "REFERENCE §2 Trust (NCSC \"good\"/\"sufficient\" cipher suites)",
};
pub const CHAIN: Requirement = Requirement {
    id: "cert.chain",
    text: "The peer's server certificate chains to a CA we trust, is valid now and names the host",
    reference: "REFERENCE §2 Trust (PKIoverheid or UZI server certificates)",
};
pub const REVOCATION: Requirement = Requirement {
    id: "cert.revocation",
    text: "The peer's certificate is not revoked according to our CRLs (current ones)",
    reference: "REFERENCE §2 Trust (revocation checked, CRL or OCSP)",
};
pub const PARTICIPANT: Requirement = Requirement {
    id: "cert.participant",
    text: "The certificate the peer presents is the one on our participant list for it",
    reference:
        "REFERENCE §2 Trust (only qualified GtKs; participant list: certificate → organisation)",
};
pub const NO_CLIENT_CERT: Requirement = Requirement {
    id: "refuse.no-client-cert",
    text: "A connection without a client certificate is refused: no HTTP answer",
    reference: "REFERENCE §2 Trust (mTLS on every inter-GtK transaction)",
};

/// TLS 1.2 suites below NCSC "sufficient" (2021: "phase out" or "insufficient"): static RSA key
/// exchange, 3DES, RC4, NULL.
const WEAK_SUITES: &[(u16, &str)] = &[
    (0x009c, "TLS_RSA_WITH_AES_128_GCM_SHA256"),
    (0x009d, "TLS_RSA_WITH_AES_256_GCM_SHA384"),
    (0x002f, "TLS_RSA_WITH_AES_128_CBC_SHA"),
    (0x0035, "TLS_RSA_WITH_AES_256_CBC_SHA"),
    (0x003c, "TLS_RSA_WITH_AES_128_CBC_SHA256"),
    (0x003d, "TLS_RSA_WITH_AES_256_CBC_SHA256"),
    (0xc012, "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA"),
    (0xc008, "TLS_ECDHE_ECDSA_WITH_3DES_EDE_CBC_SHA"),
    (0x0016, "TLS_DHE_RSA_WITH_3DES_EDE_CBC_SHA"),
    (0x000a, "TLS_RSA_WITH_3DES_EDE_CBC_SHA"),
    (0xc011, "TLS_ECDHE_RSA_WITH_RC4_128_SHA"),
    (0xc007, "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA"),
    (0x0005, "TLS_RSA_WITH_RC4_128_SHA"),
    (0xc010, "TLS_ECDHE_RSA_WITH_NULL_SHA"),
    (0xc006, "TLS_ECDHE_ECDSA_WITH_NULL_SHA"),
    (0x003b, "TLS_RSA_WITH_NULL_SHA256"),
    (0x0002, "TLS_RSA_WITH_NULL_SHA"),
];

/// TLS 1.2 suites NCSC rates "sufficient" but beeldbrug does not offer (AES-CBC with ECDHE or
/// DHE): accepted ones are named in the evidence, not failed.
const CBC_SUITES: &[(u16, &str)] = &[
    (0xc013, "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"),
    (0xc014, "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA"),
    (0xc027, "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256"),
    (0xc028, "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384"),
    (0xc009, "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA"),
    (0xc00a, "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA"),
    (0xc023, "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256"),
    (0xc024, "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384"),
    (0x0033, "TLS_DHE_RSA_WITH_AES_128_CBC_SHA"),
    (0x0039, "TLS_DHE_RSA_WITH_AES_256_CBC_SHA"),
    (0x0067, "TLS_DHE_RSA_WITH_AES_128_CBC_SHA256"),
    (0x006b, "TLS_DHE_RSA_WITH_AES_256_CBC_SHA256"),
];

/// Suites a TLS 1.0 / 1.1 server could pick (the legacy versions' own suites).
const LEGACY_SUITES: &[u16] = &[
    0xc013, 0xc014, 0xc009, 0xc00a, 0x002f, 0x0035, 0x0033, 0x0039, 0x000a, 0xc012,
];

fn suite_name(id: u16) -> String {
    WEAK_SUITES
        .iter()
        .chain(CBC_SUITES)
        .find(|(s, _)| *s == id)
        .map(|(_, n)| n.to_string())
        .unwrap_or_else(|| format!("0x{id:04x}"))
}

const BOTH: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// What the peer said to a ClientHello of ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    /// A ServerHello: the version and suite it chose.
    Accepted { version: u16, suite: u16 },
    /// An alert, a closed connection or silence: why.
    Refused(String),
}

/// A TLS ClientHello (RFC 5246 7.4.1.2) offering at most `version` and only `suites`.
pub fn client_hello(version: u16, suites: &[u16], server_name: Option<&str>) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&version.to_be_bytes());
    let random = crate::oplog::new_correlation(None);
    let mut r = [0u8; 32];
    for (i, b) in random.bytes().rev().take(32).enumerate() {
        r[i] = b;
    }
    body.extend_from_slice(&r);
    body.push(0); // no session id
    body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for s in suites {
        body.extend_from_slice(&s.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]); // compression: null
    let mut ext = Vec::new();
    let mut push_ext = |kind: u16, data: &[u8]| {
        ext.extend_from_slice(&kind.to_be_bytes());
        ext.extend_from_slice(&(data.len() as u16).to_be_bytes());
        ext.extend_from_slice(data);
    };
    if let Some(name) = server_name {
        let n = name.as_bytes();
        let mut d = Vec::new();
        d.extend_from_slice(&((n.len() + 3) as u16).to_be_bytes());
        d.push(0);
        d.extend_from_slice(&(n.len() as u16).to_be_bytes());
        d.extend_from_slice(n);
        push_ext(0x0000, &d);
    }
    // supported_groups: x25519, secp256r1, secp384r1; ec_point_formats: uncompressed.
    push_ext(0x000a, &[0, 6, 0x00, 0x1d, 0x00, 0x17, 0x00, 0x18]);
    push_ext(0x000b, &[1, 0]);
    // signature_algorithms: RSA PKCS#1 and PSS, ECDSA, with SHA-256/384/512 and SHA-1.
    let sigs: [u16; 10] = [
        0x0401, 0x0501, 0x0601, 0x0804, 0x0805, 0x0806, 0x0403, 0x0503, 0x0201, 0x0203,
    ];
    let mut d = Vec::new();
    d.extend_from_slice(&((sigs.len() * 2) as u16).to_be_bytes());
    for s in sigs {
        d.extend_from_slice(&s.to_be_bytes());
    }
    push_ext(0x000d, &d);
    push_ext(0x0017, &[]); // extended_master_secret
    push_ext(0xff01, &[0]); // renegotiation_info
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut handshake = vec![1u8];
    handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

/// Read the peer's answer to a ClientHello: the ServerHello's version and suite, or why not.
pub fn read_server_hello(bytes: &[u8]) -> Option<Hello> {
    let header = bytes.get(..5)?;
    let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
    match header[0] {
        0x15 => {
            let alert = bytes.get(5..7)?;
            Some(Hello::Refused(format!(
                "alert {} ({})",
                alert[1],
                alert_name(alert[1])
            )))
        }
        0x16 => {
            let record = bytes.get(5..5 + len)?;
            if record.first() != Some(&2) {
                return Some(Hello::Refused(format!(
                    "handshake message {} instead of a ServerHello",
                    record.first().copied().unwrap_or(0)
                )));
            }
            let hello = record.get(4..)?;
            let version = u16::from_be_bytes([*hello.first()?, *hello.get(1)?]);
            let session_len = usize::from(*hello.get(34)?);
            let at = 35 + session_len;
            let suite = u16::from_be_bytes([*hello.get(at)?, *hello.get(at + 1)?]);
            Some(Hello::Accepted { version, suite })
        }
        other => Some(Hello::Refused(format!("record type {other}"))),
    }
}

fn alert_name(code: u8) -> &'static str {
    match code {
        40 => "handshake_failure",
        47 => "illegal_parameter",
        70 => "protocol_version",
        71 => "insufficient_security",
        80 => "internal_error",
        86 => "inappropriate_fallback",
        112 => "unrecognized_name",
        _ => "alert",
    }
}

/// Send a ClientHello and read what comes back (until a whole first record, an EOF or the
/// timeout).
pub async fn hello(
    host: &str,
    port: u16,
    version: u16,
    suites: &[u16],
    timeout: Duration,
) -> Hello {
    let server_name = host.parse::<std::net::IpAddr>().is_err().then_some(host);
    let attempt = async {
        let mut tcp = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("connect {host}:{port}: {e}"))?;
        tcp.write_all(&client_hello(version, suites, server_name))
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut got = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            if let Some(answer) = read_server_hello(&got) {
                return Ok(answer);
            }
            let n = tcp.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                return Ok(Hello::Refused(if got.is_empty() {
                    "connection closed without an answer".into()
                } else {
                    "connection closed mid-record".into()
                }));
            }
            got.extend_from_slice(&buf[..n]);
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(h)) => h,
        Ok(Err(why)) => Hello::Refused(why),
        Err(_) => Hello::Refused(format!("no answer within {timeout:?}")),
    }
}

/// Offer `suites` in TLS 1.2 until the peer refuses: the ones it picked (each then offered no
/// more), and how it refused the rest.
async fn accepted_suites(
    host: &str,
    port: u16,
    suites: &[(u16, &str)],
    timeout: Duration,
) -> (Vec<String>, String) {
    let mut offered: Vec<u16> = suites.iter().map(|(s, _)| *s).collect();
    let mut accepted = Vec::new();
    while !offered.is_empty() {
        match hello(host, port, 0x0303, &offered, timeout).await {
            Hello::Accepted { suite, version } => {
                accepted.push(format!("{} ({})", suite_name(suite), version_name(version)));
                let before = offered.len();
                offered.retain(|s| *s != suite);
                if offered.len() == before {
                    return (accepted, "it picked a suite not offered".into());
                }
            }
            Hello::Refused(why) => return (accepted, why),
        }
    }
    (accepted, "every one offered was accepted".into())
}

fn version_name(v: u16) -> &'static str {
    match v {
        0x0300 => "SSL 3.0",
        0x0301 => "TLS 1.0",
        0x0302 => "TLS 1.1",
        0x0303 => "TLS 1.2",
        0x0304 => "TLS 1.3",
        _ => "unknown",
    }
}

fn describe(session: &Session) -> String {
    let cert = session
        .certificates
        .first()
        .map(|c| {
            let info = crate::chain::certificate_json(c);
            format!(
                "{} (SHA-256 {}), valid until {} ({} days left{})",
                info["subject"].as_str().unwrap_or("?"),
                info["sha256"].as_str().unwrap_or("?"),
                info["not_after"].as_str().unwrap_or("?"),
                info["days_left"],
                info["warning"]
                    .as_str()
                    .map(|w| format!(", {w}"))
                    .unwrap_or_default()
            )
        })
        .unwrap_or_else(|| "no certificate".into());
    format!("{} {}; certificate {cert}", session.version, session.suite)
}

/// Every TLS check.
pub async fn run(suite: &Suite) -> Vec<Check> {
    let timeout = suite.options.timeout;
    let (Some(ca), Some((cert, key))) = (&suite.ca, &suite.identity) else {
        let why = "no CA for the peers' certificates or no client certificate configured \
                   ([remote] ca_file / client_cert_file or their [tls] defaults)";
        return [
            VERSIONS,
            SUITES,
            CHAIN,
            REVOCATION,
            PARTICIPANT,
            NO_CLIENT_CERT,
        ]
        .iter()
        .map(|r| Check::fail(r, why, Instant::now()))
        .collect();
    };
    let identity = Some((cert.as_path(), key.as_path()));
    let (host, port) = (suite.host.as_str(), suite.port);
    let mut checks = Vec::new();

    // The chain, without the CRLs (they have a check of their own).
    let started = Instant::now();
    let chain = match http::client_config(ca, &[], identity, BOTH) {
        Ok(config) => http::handshake(config, host, port, timeout)
            .await
            .map(|(_, s)| s),
        Err(e) => Err(e),
    };
    checks.push(match &chain {
        Ok(session) => Check::pass(&CHAIN, describe(session), started),
        Err(why) => Check::fail(&CHAIN, why.clone(), started),
    });

    // Versions: 1.3 and 1.2 with rustls, 1.0 and 1.1 with our own ClientHello.
    let started = Instant::now();
    let mut good = Vec::new();
    let mut lines = Vec::new();
    for (name, version) in [
        ("TLS 1.3", &rustls::version::TLS13),
        ("TLS 1.2", &rustls::version::TLS12),
    ] {
        let result = match http::client_config(ca, &[], identity, &[version]) {
            Ok(config) => http::handshake(config, host, port, timeout).await,
            Err(e) => Err(e),
        };
        match result {
            Ok((_, s)) => {
                good.push(name);
                lines.push(format!("{name}: accepted ({})", s.suite));
            }
            Err(why) => lines.push(format!("{name}: not completed ({why})")),
        }
    }
    let mut legacy_accepted = Vec::new();
    for version in [0x0301u16, 0x0302] {
        match hello(host, port, version, LEGACY_SUITES, timeout).await {
            Hello::Accepted { version: v, suite } => {
                legacy_accepted.push(version_name(version));
                lines.push(format!(
                    "{}: ACCEPTED, the peer answered {} with {}",
                    version_name(version),
                    version_name(v),
                    suite_name(suite)
                ));
            }
            Hello::Refused(why) => {
                lines.push(format!("{}: refused ({why})", version_name(version)))
            }
        }
    }
    checks.push(if !good.is_empty() && legacy_accepted.is_empty() {
        Check::pass(&VERSIONS, lines.join("\n"), started)
    } else {
        Check::fail(&VERSIONS, lines.join("\n"), started)
    });

    // Weak suites, offered in TLS 1.2: each one the peer picks is named, then offered no
    // more; the same for the CBC suites NCSC still rates "sufficient" (named, not failed).
    let started = Instant::now();
    let (accepted, last) = accepted_suites(host, port, WEAK_SUITES, timeout).await;
    let (cbc, _) = accepted_suites(host, port, CBC_SUITES, timeout).await;
    let negotiated = chain
        .as_ref()
        .map(|s| format!("with our suites it chose {} ({})", s.suite, s.version))
        .unwrap_or_else(|e| format!("no handshake with our suites ({e})"));
    let cbc = if cbc.is_empty() {
        "no AES-CBC suite accepted either".to_string()
    } else {
        format!(
            "AES-CBC suites accepted (NCSC \"sufficient\"; beeldbrug offers none): {}",
            cbc.join(", ")
        )
    };
    checks.push(if accepted.is_empty() {
        Check::pass(
            &SUITES,
            format!(
                "{negotiated}; {} weak TLS 1.2 suites (static RSA, 3DES, RC4, NULL) offered at once, refused: {last}; {cbc}",
                WEAK_SUITES.len()
            ),
            started,
        )
    } else {
        Check::fail(
            &SUITES,
            format!(
                "{negotiated}; weak suites accepted: {}; {cbc}",
                accepted.join(", ")
            ),
            started,
        )
    });

    // Revocation against our CRLs.
    let started = Instant::now();
    checks.push(if suite.crls.is_empty() {
        Check::skip(
            &REVOCATION,
            "no tls.crl_files configured: nothing to check the peer's certificate against",
        )
    } else {
        let files: Vec<String> = suite.crls.iter().map(|p| p.display().to_string()).collect();
        match http::client_config(ca, &suite.crls, identity, BOTH) {
            Ok(config) => match http::handshake(config, host, port, timeout).await {
                Ok(_) => Check::pass(
                    &REVOCATION,
                    format!("not revoked according to {}", files.join(", ")),
                    started,
                ),
                Err(why) => Check::fail(
                    &REVOCATION,
                    format!("{why} (CRLs {})", files.join(", ")),
                    started,
                ),
            },
            Err(why) => Check::fail(&REVOCATION, why, started),
        }
    });

    // The participant entry's fingerprint.
    let started = Instant::now();
    checks.push(match (&suite.participant, &chain) {
        (None, _) => Check::skip(
            &PARTICIPANT,
            format!(
                "no [[participant]] on our list names {} (add it once the peer qualifies)",
                suite.options.peer
            ),
        ),
        (Some(p), Ok(session)) => {
            let presented = session
                .certificates
                .first()
                .map(|c| crate::trust::tls::fingerprint(c))
                .unwrap_or_default();
            if crate::trust::tls::same_fingerprint(&p.certificate_sha256, &presented) {
                Check::pass(
                    &PARTICIPANT,
                    format!(
                        "{} ({}, URA {}): {presented}",
                        p.name, p.home_community_id, p.ura
                    ),
                    started,
                )
            } else {
                Check::fail(
                    &PARTICIPANT,
                    format!(
                        "{} presented {presented}, the list has {}",
                        p.name, p.certificate_sha256
                    ),
                    started,
                )
            }
        }
        (Some(p), Err(why)) => Check::fail(
            &PARTICIPANT,
            format!("{}: no certificate to compare ({why})", p.name),
            started,
        ),
    });

    // No client certificate: an ITI-38 POST must get no HTTP answer.
    let started = Instant::now();
    let envelope = crate::remote::soap::envelope(
        crate::remote::soap::ACTION_ITI38,
        &suite.query_url,
        None,
        &suite.assertion().unwrap_or_default(),
        &http::find_documents_body(&suite.options.bsn),
    );
    let result = match http::client_config(ca, &[], None, BOTH) {
        Ok(config) => {
            http::request(
                config,
                hyper::Method::POST,
                &suite.query_url,
                &http::soap_headers(crate::remote::soap::ACTION_ITI38, None),
                Some(envelope),
                timeout,
            )
            .await
        }
        Err(e) => Err(e),
    };
    checks.push(match result {
        Err(why) => Check::pass(
            &NO_CLIENT_CERT,
            format!("refused without a client certificate: {why}"),
            started,
        ),
        Ok((answer, session)) => Check::fail(
            &NO_CLIENT_CERT,
            format!(
                "the peer answered HTTP {} ({}, {} bytes) over {} without a client certificate",
                answer.status,
                answer.content_type(),
                answer.body.len(),
                session.version
            ),
            started,
        ),
    });
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_hello_is_well_formed() {
        let hello = client_hello(0x0302, &[0xc013, 0x002f], Some("gw.example"));
        assert_eq!(&hello[..3], &[0x16, 0x03, 0x01]);
        let len = usize::from(u16::from_be_bytes([hello[3], hello[4]]));
        assert_eq!(hello.len(), 5 + len);
        assert_eq!(hello[5], 1, "ClientHello");
        let body_len = u32::from_be_bytes([0, hello[6], hello[7], hello[8]]) as usize;
        assert_eq!(body_len + 4, len);
        assert_eq!(&hello[9..11], &[0x03, 0x02]);
        assert_eq!(hello[43], 0, "no session id");
        assert_eq!(&hello[44..50], &[0, 4, 0xc0, 0x13, 0x00, 0x2f]);
        assert!(hello.windows(10).any(|w| w == b"gw.example"));
    }

    #[test]
    fn server_hellos_and_alerts_are_read() {
        assert_eq!(
            read_server_hello(&[0x15, 3, 3, 0, 2, 2, 70]),
            Some(Hello::Refused("alert 70 (protocol_version)".into()))
        );
        let mut hello = vec![2u8, 0, 0, 0, 3, 3];
        hello.extend_from_slice(&[7u8; 32]);
        hello.push(0);
        hello.extend_from_slice(&[0xc0, 0x13, 0]);
        let mut record = vec![0x16, 3, 3];
        record.extend_from_slice(&(hello.len() as u16).to_be_bytes());
        record.extend_from_slice(&hello);
        assert_eq!(
            read_server_hello(&record),
            Some(Hello::Accepted {
                version: 0x0303,
                suite: 0xc013
            })
        );
        assert_eq!(read_server_hello(&record[..10]), None, "not whole yet");
    }
}
