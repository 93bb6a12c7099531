//! Issue 5, TLS: mTLS on the HTTP listener, DICOM TLS on the DIMSE listener and toward the
//! PACS, CRLs and the participant list, reloaded without restart; checked with real clients
//! (rustls, curl, sslscan, DCMTK echoscu, Orthanc with DICOM TLS).

mod common;

use beeldbrug::trust::tls::{client_config, fingerprint};
use common::http::{multipart_parts, parse, HttpResponse};
use common::orthanc::Orthanc;
use common::pki::{CertFiles, Pki};
use common::{dcmtk, generate, require_tool, Gateway};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const OOST: (&str, &str, &str) = (
    "Ziekenhuis Oost",
    "12345678",
    "urn:oid:2.16.528.1.1007.3.3.1",
);

/// `[tls]` with the test CA, its CRL and a participants file listing `participants`; files
/// are checked every second.
fn tls_toml(pki: &Pki, participants: &[&CertFiles], extra: &str) -> String {
    let list = pki.path().join("participants.toml");
    let entries: Vec<_> = participants
        .iter()
        .map(|c| (OOST.0, OOST.1, OOST.2, *c))
        .collect();
    std::fs::write(&list, Pki::participants_toml(&entries)).unwrap();
    format!(
        "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nclient_ca_file = \"{}\"\ncrl_files = [\"{}\"]\n\
         watch_secs = 1\n{extra}\n[trust]\nparticipants_file = \"{}\"\n[dicomweb]\nallow_anonymous = false\n",
        pki.server.cert.display(),
        pki.server.key.display(),
        pki.ca_file.display(),
        pki.crl_file.display(),
        list.display(),
    )
}

/// What a rustls client got: the answer and the server certificate's fingerprint, or why the
/// connection failed (the TLS alert, for a refused handshake).
async fn https(
    port: u16,
    path: &str,
    client: Option<&CertFiles>,
    ca: &Path,
) -> Result<(HttpResponse, String), String> {
    let config = client_config(ca, client.map(|c| (c.cert.as_path(), c.key.as_path())))
        .map_err(|e| e.to_string())?;
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let server = fingerprint(tls.get_ref().1.peer_certificates().unwrap()[0].as_ref());
    let head =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    // In TLS 1.3 the server refuses a client certificate after the client's handshake is
    // done: the refusal (an alert) arrives on the first write or read.
    tls.write_all(head.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        match tls.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            // A peer that closes without close_notify after a complete answer.
            Err(e) if !raw.is_empty() && e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e.to_string()),
        }
    }
    if raw.is_empty() {
        return Err("connection closed without an answer".into());
    }
    Ok((parse(&raw), server))
}

/// A refusal that names `alert` (rustls prints the alert the server sent).
async fn refused_with(port: u16, client: Option<&CertFiles>, ca: &Path, alert: &str) {
    match https(port, "/health", client, ca).await {
        Ok((r, _)) => panic!(
            "expected a refused handshake ({alert}), got HTTP {}",
            r.status
        ),
        Err(e) => assert!(e.contains(alert), "expected {alert}, got: {e}"),
    }
}

/// Wait until `check` holds (the reload task checks files every second).
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{what}: not within 15 s");
}

fn curl(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(require_tool("curl"))
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("run curl");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn https_requires_a_valid_client_certificate_of_a_participant() {
    let pki = Pki::new();
    let stranger = pki.issue_client("stranger");
    let gw = Gateway::start(&tls_toml(&pki, &[&pki.client], "")).await;
    let (port, ca) = (gw.http_port, pki.ca_file.as_path());

    // Refused in the handshake, each with its own alert.
    refused_with(port, None, ca, "CertificateRequired").await;
    refused_with(port, Some(&pki.unknown), ca, "UnknownCA").await;
    refused_with(port, Some(&pki.expired), ca, "CertificateExpired").await;
    refused_with(port, Some(&pki.revoked), ca, "CertificateRevoked").await;

    // A participant is served, and the server presents its own certificate.
    let (r, server) = https(port, "/health", Some(&pki.client), ca).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(server, pki.server.fingerprint);
    let (r, _) = https(port, "/dicomweb/studies", Some(&pki.client), ca)
        .await
        .unwrap();
    assert!(
        r.status == 200 || r.status == 204,
        "participant: {} {}",
        r.status,
        r.text()
    );

    // Verified, but on no participant entry: 403 from the policy.
    let (r, _) = https(port, "/dicomweb/studies", Some(&stranger), ca)
        .await
        .unwrap();
    assert_eq!(r.status, 403, "non-participant: {}", r.text());

    // curl (OpenSSL): h2 by ALPN with a certificate, refused without one.
    let url = format!("https://127.0.0.1:{port}/health");
    let (ca_s, cert, key) = (
        ca.display().to_string(),
        pki.client.cert.display().to_string(),
        pki.client.key.display().to_string(),
    );
    let (ok, out) = curl(&[
        "--http2",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{http_version}",
        "--cacert",
        &ca_s,
        "--cert",
        &cert,
        "--key",
        &key,
        &url,
    ]);
    assert!(
        ok && out.trim() == "200 2",
        "curl with a certificate: {out}"
    );
    let (ok, out) = curl(&[
        "--http1.1",
        "-o",
        "/dev/null",
        "-w",
        "%{http_version}",
        "--cacert",
        &ca_s,
        "--cert",
        &cert,
        "--key",
        &key,
        &url,
    ]);
    assert!(ok && out.trim() == "1.1", "curl HTTP/1.1: {out}");
    let (ok, out) = curl(&["--cacert", &ca_s, &url]);
    assert!(!ok, "curl without a certificate was served: {out}");
    // Plain HTTP on the TLS port gets no answer.
    let (ok, out) = curl(&[&format!("http://127.0.0.1:{port}/health")]);
    assert!(!ok, "plain HTTP was served: {out}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn crl_participants_and_certificates_reload_without_restart() {
    let pki = Pki::new();
    // The gateway reads copies that the test rewrites in place.
    let live_cert = pki.path().join("live-cert.pem");
    let live_key = pki.path().join("live-key.pem");
    std::fs::copy(&pki.server.cert, &live_cert).unwrap();
    std::fs::copy(&pki.server.key, &live_key).unwrap();
    let other = pki.issue_client("other");
    let toml = tls_toml(&pki, &[&pki.client], "")
        .replace(
            &pki.server.cert.display().to_string(),
            &live_cert.display().to_string(),
        )
        .replace(
            &pki.server.key.display().to_string(),
            &live_key.display().to_string(),
        );
    let gw = Gateway::start(&toml).await;
    let (port, ca) = (gw.http_port, pki.ca_file.clone());
    let status = |c: CertFiles| {
        let ca = ca.clone();
        async move {
            https(port, "/dicomweb/studies", Some(&c), &ca)
                .await
                .map(|(r, _)| r.status)
        }
    };
    assert!(matches!(status(pki.client.clone()).await, Ok(200 | 204)));
    assert_eq!(status(other.clone()).await, Ok(403));

    // The participant list grows: `other` is served, without restart.
    let list = pki.path().join("participants.toml");
    std::fs::write(
        &list,
        Pki::participants_toml(&[
            (OOST.0, OOST.1, OOST.2, &pki.client),
            ("West", "87654321", "urn:oid:1.2.3.4", &other),
        ]),
    )
    .unwrap();
    eventually("participant added", || async {
        matches!(status(other.clone()).await, Ok(200 | 204))
    })
    .await;

    // A broken participants file keeps the list that was loaded.
    std::fs::write(&list, "[[participant]]\nname = ").unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(matches!(status(other.clone()).await, Ok(200 | 204)));

    // `client` is revoked: the rewritten CRL is applied to new connections.
    pki.write_crl(&[&pki.revoked, &pki.client]);
    eventually("revocation applied", || async {
        status(pki.client.clone())
            .await
            .is_err_and(|e| e.contains("CertificateRevoked"))
    })
    .await;
    assert!(matches!(status(other.clone()).await, Ok(200 | 204)));

    // A broken CRL keeps the configuration that was loaded.
    std::fs::write(
        &pki.crl_file,
        "-----BEGIN X509 CRL-----\nnot base64\n-----END X509 CRL-----\n",
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(matches!(status(other.clone()).await, Ok(200 | 204)));
    assert!(status(pki.client.clone()).await.is_err());

    // Reloads are all or nothing: while the CRL is broken nothing else changes either.
    // Certificate rotation (with a good CRL again): the new server certificate is
    // presented without restart.
    pki.write_crl(&[&pki.revoked, &pki.client]);
    let rotated = pki.issue_server("server-2026", &["127.0.0.1", "localhost"]);
    std::fs::copy(&rotated.cert, &live_cert).unwrap();
    std::fs::copy(&rotated.key, &live_key).unwrap();
    eventually("rotated certificate presented", || async {
        https(port, "/health", Some(&other), &ca)
            .await
            .is_ok_and(|(_, server)| server == rotated.fingerprint)
    })
    .await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sslscan_sees_only_tls12_tls13_and_ncsc_suites() {
    let pki = Pki::new();
    let gw = Gateway::start(&tls_toml(&pki, &[&pki.client], "")).await;
    // With a client certificate: TLS 1.2 handshakes only complete with one (mTLS).
    let out = std::process::Command::new(require_tool("sslscan"))
        .args([
            "--no-colour".to_string(),
            format!("--certs={}", pki.client.cert.display()),
            format!("--pk={}", pki.client.key.display()),
            format!("127.0.0.1:{}", gw.http_port),
        ])
        .output()
        .expect("run sslscan");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{text}");
    for old in ["SSLv2", "SSLv3", "TLSv1.0", "TLSv1.1"] {
        let line = text
            .lines()
            .find(|l| l.starts_with(old))
            .unwrap_or_else(|| panic!("sslscan does not report {old}:\n{text}"));
        assert!(line.contains("disabled"), "{line}\n{text}");
    }
    for new in ["TLSv1.2", "TLSv1.3"] {
        let line = text
            .lines()
            .find(|l| l.starts_with(new))
            .unwrap_or_default();
        assert!(line.contains("enabled"), "{new}: {line}\n{text}");
    }
    const ALLOWED: &[&str] = &[
        "TLS_AES_256_GCM_SHA384",
        "TLS_AES_128_GCM_SHA256",
        "TLS_CHACHA20_POLY1305_SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-RSA-CHACHA20-POLY1305",
    ];
    let suites: Vec<(String, String)> = text
        .lines()
        .filter(|l| l.starts_with("Preferred") || l.starts_with("Accepted"))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.get(1)?.to_string(), f.get(4)?.to_string()))
        })
        .collect();
    assert!(suites.iter().any(|(v, _)| v == "TLSv1.3"), "{text}");
    assert!(suites.iter().any(|(v, _)| v == "TLSv1.2"), "{text}");
    for (version, suite) in &suites {
        assert!(
            (version == "TLSv1.2" || version == "TLSv1.3") && ALLOWED.contains(&suite.as_str()),
            "sslscan found {version} {suite}:\n{text}"
        );
    }
    gw.stop().await;
}

/// echoscu, over DICOM TLS (`+tls key cert +cf ca`) or plain.
fn echoscu(port: u16, aet: &str, tls: Option<(&CertFiles, &Path)>) -> (bool, String) {
    let port = port.to_string();
    let mut args: Vec<String> = vec![];
    if let Some((c, ca)) = tls {
        args.extend([
            "+tls".into(),
            c.key.display().to_string(),
            c.cert.display().to_string(),
            "+cf".into(),
            ca.display().to_string(),
        ]);
    }
    args.extend([
        "-aet".into(),
        aet.into(),
        "-aec".into(),
        "BEELDBRUG".into(),
        "127.0.0.1".into(),
        port,
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = dcmtk("echoscu", &args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success() && !text.contains("E:"), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn dicom_tls_listener_checks_the_peer_certificate() {
    let pki = Pki::new();
    let stranger = pki.issue_client("stranger");
    let extra = format!(
        "dimse_listen = \"127.0.0.1:0\"\n[dimse]\nallow_unknown_callers = false\n\
         [[dimse.peers]]\nae_title = \"REMOTEGW\"\nhost = \"127.0.0.1\"\nport = 11112\ncertificate_sha256 = \"{}\"\n\
         [[dimse.peers]]\nae_title = \"MODALITY\"\nhost = \"127.0.0.1\"\nport = 11113\n",
        pki.client.fingerprint.to_lowercase()
    );
    let gw = Gateway::start(&tls_toml(&pki, &[&pki.client], &extra)).await;
    let tls_port = gw
        .running
        .as_ref()
        .unwrap()
        .dimse_tls_addr
        .expect("DICOM TLS listener")
        .port();
    let ca = pki.ca_file.as_path();

    let (ok, out) = echoscu(tls_port, "REMOTEGW", Some((&pki.client, ca)));
    assert!(ok, "the configured certificate over DICOM TLS: {out}");
    // Another valid certificate for that AE: the association is rejected.
    let (ok, out) = echoscu(tls_port, "REMOTEGW", Some((&stranger, ca)));
    assert!(
        !ok && out.contains("Calling AE Title Not Recognized"),
        "{out}"
    );
    // That AE over plain DIMSE: rejected too.
    let (ok, out) = echoscu(gw.port, "REMOTEGW", None);
    assert!(
        !ok && out.contains("Calling AE Title Not Recognized"),
        "{out}"
    );
    // Revoked and unknown-CA certificates never get past the handshake.
    let (ok, out) = echoscu(tls_port, "REMOTEGW", Some((&pki.revoked, ca)));
    assert!(!ok && !out.contains("Association Accepted"), "{out}");
    let (ok, out) = echoscu(tls_port, "MODALITY", Some((&pki.unknown, ca)));
    assert!(!ok && !out.contains("Association Accepted"), "{out}");
    // A peer without a configured certificate still works, plain or over TLS.
    let (ok, out) = echoscu(gw.port, "MODALITY", None);
    assert!(ok, "{out}");
    let (ok, out) = echoscu(tls_port, "MODALITY", Some((&stranger, ca)));
    assert!(ok, "{out}");
    gw.stop().await;
}

/// Orthanc with DICOM TLS only, requiring our client certificate.
async fn orthanc_tls(dir: &Path, pki: &Pki) -> Orthanc {
    let cert = pki.issue_server("orthanc", &["127.0.0.1", "localhost"]);
    let tls = serde_json::json!({
        "DicomTlsEnabled": true,
        "DicomTlsCertificate": cert.cert,
        "DicomTlsPrivateKey": cert.key,
        "DicomTlsTrustedCertificates": pki.ca_file,
        "DicomTlsRemoteCertificateRequired": true,
    });
    Orthanc::start_configured(dir, &[], tls).await
}

/// HTTPS without a client certificate (the gateway has no `client_ca_file` here).
async fn get(port: u16, path: &str, ca: &Path) -> HttpResponse {
    https(port, path, None, ca)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
        .0
}

fn pacs_tls_toml(pki: &Pki, pacs_port: u16, ca: &Path) -> String {
    format!(
        "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n\
         [pacs]\nae_title = \"ORTHANC\"\nhost = \"127.0.0.1\"\nport = {pacs_port}\nretrieve = \"c-get\"\n\
         probe_at_start = false\nforward_stow = false\ntls = true\nca_file = \"{}\"\n",
        pki.server.cert.display(),
        pki.server.key.display(),
        ca.display()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_retrieves_from_orthanc_over_dicom_tls() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let files = generate(&dir.path().join("src"), false);
    let orthanc = orthanc_tls(dir.path(), &pki).await;
    let (orthanc_http, orthanc_dicom) = (orthanc.http_port, orthanc.dicom_port);
    for f in &files {
        let body = std::fs::read(&f.path).unwrap();
        let r = common::http::request(orthanc_http, "POST", "/instances", &[], &body).await;
        assert_eq!(r.status, 200, "load into Orthanc: {}", r.text());
    }
    let gw = Gateway::start(&pacs_tls_toml(&pki, orthanc_dicom, &pki.ca_file)).await;
    let (port, ca) = (gw.http_port, pki.ca_file.as_path());

    // C-FIND over DICOM TLS.
    let r = get(port, "/dicomweb/studies", ca).await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), orthanc.log_tail());
    let studies = r.json();
    let study = files[0].study_uid.clone();
    assert!(studies.to_string().contains(&study), "{studies}");

    // C-GET over DICOM TLS: every instance of the study arrives.
    let wanted = files.iter().filter(|f| f.study_uid == study).count();
    let r = https(port, &format!("/dicomweb/studies/{study}"), None, ca)
        .await
        .unwrap()
        .0;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), orthanc.log_tail());
    assert_eq!(multipart_parts(&r).len(), wanted);
    gw.stop().await;

    // The PACS's certificate is verified: against the wrong CA nothing is answered.
    let gw = Gateway::start(&pacs_tls_toml(&pki, orthanc_dicom, &pki.unknown_ca_file)).await;
    let r = get(gw.http_port, "/dicomweb/studies", &pki.ca_file).await;
    assert!(
        r.status >= 500,
        "answered through an unverified PACS: {} {}",
        r.status,
        r.text()
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_tls_configuration_stops_the_start_naming_the_problem() {
    let pki = Pki::new();
    let base = |tls: &str| {
        let toml = format!(
            "[storage]\ndata_dir = \"{}\"\n{tls}",
            pki.path().join("data").display()
        );
        beeldbrug::config::Config::from_toml(&toml).map_err(|e| e.to_string())
    };
    let cases: Vec<(String, String)> = vec![
        (format!("[tls]\ncert_file = \"{}\"\n", pki.server.cert.display()), "tls.key_file".into()),
        (
            format!("[tls]\ncert_file = \"/nonexistent/c.pem\"\nkey_file = \"{}\"\n", pki.server.key.display()),
            "/nonexistent/c.pem".into(),
        ),
        (
            format!(
                "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
                pki.server.cert.display(),
                pki.client.key.display()
            ),
            "TLS".into(),
        ),
        (
            format!(
                "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nclient_ca_file = \"{}\"\ncrl_files = [\"{}\"]\n",
                pki.server.cert.display(),
                pki.server.key.display(),
                pki.ca_file.display(),
                pki.server.cert.display()
            ),
            "CRL".into(),
        ),
    ];
    for (tls, expected) in cases {
        // Key-level problems are found when the configuration loads, file problems at start.
        let err = match base(&tls) {
            Err(e) => e,
            Ok(config) => match beeldbrug::server::start(config).await {
                Ok(r) => {
                    r.stop().await;
                    panic!("started with {tls}")
                }
                Err(e) => e.to_string(),
            },
        };
        assert!(err.contains(&expected), "{tls}: {err}");
    }
    let err = beeldbrug::config::Config::from_toml(
        "[pacs]\nae_title = \"P\"\nhost = \"h\"\nport = 104\ntls = true\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("pacs.ca_file"), "{err}");
    let _: PathBuf = pki.crl_file.clone();
}
