//! Chain monitoring (issue 17 item 2) with two gateways on loopback over mutual TLS: A lists B
//! on its participant list and probes it every second (a TLS handshake with A's client
//! certificate toward B's query endpoint). B's certificate expires in 5 days: A's chain view
//! (`GET /admin/chain`, read with an admin client certificate) flags it within 7 days and
//! records a CHAIN-ALERT. Stopping B shows B unreachable within one probe interval, the metric
//! `beeldbrug_chain_peer_up` goes from 1 to 0, and another alert is recorded. A client
//! certificate of the same CA that is not an admin certificate gets 403.
//!
//! Needs curl (for the HTTPS requests with a client certificate).

mod common;

use common::pki::Pki;
use common::{free_port, require_tool, Gateway};
use serde_json::Value;
use std::time::{Duration, Instant};

const B: &str = "ziekenhuis-b";

/// `curl` over HTTPS with a client certificate: (HTTP status, body).
fn curl(pki: &Pki, cert: &common::pki::CertFiles, url: &str) -> (u16, String) {
    let out = std::process::Command::new(require_tool("curl"))
        .args([
            "-sS",
            "--cacert",
            pki.ca_file.to_str().unwrap(),
            "--cert",
            cert.cert.to_str().unwrap(),
            "--key",
            cert.key.to_str().unwrap(),
            "-w",
            "\n%{http_code}",
            url,
        ])
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), body.to_string())
}

fn peer_b(chain: &Value) -> Value {
    chain["peers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == B)
        .cloned()
        .unwrap_or(Value::Null)
}

/// The `beeldbrug_chain_peer_up` sample of B, if any.
fn metric_up() -> Option<String> {
    beeldbrug::metrics::render()
        .lines()
        .find(|l| l.starts_with("beeldbrug_chain_peer_up{") && l.contains(B))
        .map(|l| l.rsplit(' ').next().unwrap_or("").to_string())
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "within one probe interval: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_stopping_and_a_certificate_near_expiry_show_in_the_chain() {
    let pki = Pki::new();
    // B: HTTPS (mTLS) on a port A knows, with a certificate that ends in 5 days.
    let b_cert = pki.issue_server_for_days("gateway-b", &["127.0.0.1", "localhost"], 5);
    let b_port = free_port();
    let b = Gateway::start_on(
        &format!("127.0.0.1:{b_port}"),
        &format!(
            "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nclient_ca_file = \"{}\"\n",
            b_cert.cert.display(),
            b_cert.key.display(),
            pki.ca_file.display()
        ),
    )
    .await;

    // A: B on its participant list; probes every second; an admin certificate.
    let admin = pki.issue_client("operator");
    let stranger = pki.issue_client("stranger");
    let participants = pki.path().join("participants.toml");
    std::fs::write(
        &participants,
        format!(
            "{}query_url = \"https://127.0.0.1:{b_port}/xca/iti38\"\n",
            Pki::participants_toml(&[(
                B,
                "87654321",
                "urn:oid:2.16.528.1.1007.3.3.87654321",
                &b_cert
            )])
        ),
    )
    .unwrap();
    let a = Gateway::start(&format!(
        "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nclient_ca_file = \"{}\"\n\
         [trust]\nparticipants_file = \"{}\"\nadmin_certificates = [\"{}\"]\n\
         [server]\nchain_probe_secs = 1\n",
        pki.server.cert.display(),
        pki.server.key.display(),
        pki.ca_file.display(),
        participants.display(),
        admin.fingerprint,
    ))
    .await;
    let ctx = a.context();
    let url = format!("https://127.0.0.1:{}/admin/chain", a.http_port);

    // Within one interval (plus the round itself): B reachable, its certificate flagged.
    wait_for("B probed reachable", || {
        peer_b(&ctx.chain.snapshot())["reachable"] == Value::Bool(true)
    })
    .await;
    let (status, body) = tokio::task::block_in_place(|| curl(&pki, &admin, &url));
    assert_eq!(status, 200, "{body}");
    let chain: Value = serde_json::from_str(&body).expect("JSON");
    let peer = peer_b(&chain);
    assert_eq!(peer["kind"], "gateway", "{chain:#}");
    assert!(
        peer["probe"]["detail"]
            .as_str()
            .unwrap_or("")
            .starts_with("TLS handshake"),
        "{chain:#}"
    );
    assert!(
        beeldbrug::trust::tls::same_fingerprint(
            peer["certificate"]["sha256"].as_str().unwrap_or(""),
            &b_cert.fingerprint
        ),
        "{chain:#}"
    );
    assert_eq!(peer["certificate"]["days_left"], 4, "{chain:#}");
    assert_eq!(
        peer["certificate"]["warning"], "expires within 7 days",
        "{chain:#}"
    );
    assert!(
        chain["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w == &format!("gateway {B}: certificate expires within 7 days")),
        "{chain:#}"
    );
    assert_eq!(metric_up().as_deref(), Some("1"));
    assert!(beeldbrug::metrics::render()
        .lines()
        .any(|l| l.starts_with("beeldbrug_chain_certificate_days{")
            && l.contains(B)
            && l.ends_with(" 4")));

    // A client certificate of the same CA that is no admin certificate gets nothing.
    let (status, body) = tokio::task::block_in_place(|| curl(&pki, &stranger, &url));
    assert_eq!(status, 403, "{body}");
    assert!(!body.contains(B), "{body}");

    // B stops: unreachable within one probe interval, the metric follows.
    b.stop().await;
    wait_for("B probed unreachable", || {
        peer_b(&ctx.chain.snapshot())["reachable"] == Value::Bool(false)
    })
    .await;
    assert_eq!(metric_up().as_deref(), Some("0"));
    let chain = ctx.chain.snapshot();
    assert!(
        chain["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w == &format!("gateway {B} unreachable")),
        "{chain:#}"
    );
    assert!(peer_b(&chain)["log"]["last_failure"]["error"]
        .as_str()
        .unwrap_or("")
        .contains("connect"));

    // Both alerts are on the record (PS3.15 Security Alerts), written once the round ends.
    let alert = |text: String| async move {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let alerts: Vec<String> = ctx
                .index
                .audit_events(10_000)
                .await
                .unwrap()
                .into_iter()
                .filter(|e| e.operation == "CHAIN-ALERT")
                .map(|e| e.detail)
                .collect();
            if alerts.iter().any(|d| d.starts_with(&text)) {
                return;
            }
            assert!(Instant::now() < deadline, "no alert {text:?}: {alerts:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    alert(format!("gateway {B}: certificate expires within 7 days")).await;
    alert(format!("gateway {B} unreachable")).await;
    a.stop().await;
}
