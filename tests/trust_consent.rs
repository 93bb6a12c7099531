//! The Mitz-style consent check against the simulator, over real sockets: every decision for
//! the right BSN, requester- and purpose-specific rows, the cache (seen through the
//! simulator's query count), a service that is down, slow or answers garbage (Indeterminate),
//! SOAP 1.2 faults from the simulator, mTLS with the test PKI, and the request we send
//! validated against the SOAP 1.2 envelope and WS-Addressing schemas with xmllint.

#[path = "common/mitz.rs"]
mod mitz;
#[path = "common/pki.rs"]
mod pki;

use beeldbrug::trust::consent::simulator::{self, ConsentTable};
use beeldbrug::trust::consent::{
    xacml, Consent, ConsentConfig, ConsentDecision, ConsentRequest, NotApplicable,
};
use mitz::{raw_http, InProcessMitz, MitzSim};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const PERMIT: &str = "999999990";
const DENY: &str = "123456782";
const INDETERMINATE: &str = "111222333";
const NOT_APPLICABLE: &str = "999998456";
const UNKNOWN: &str = "999911120";
const URA: &str = "00000666";
const OTHER_URA: &str = "00000777";

fn request(bsn: &str) -> ConsentRequest {
    ConsentRequest {
        bsn: bsn.into(),
        requester_ura: URA.into(),
        provider_uzi: "000095254".into(),
        role: "01.015".into(),
        purpose_of_use: "TREATMENT".into(),
    }
}

fn consent(url: &str, cache_secs: u64) -> Consent {
    Consent::new(&ConsentConfig {
        url: url.into(),
        cache_secs,
        timeout_secs: 2,
        ..Default::default()
    })
}

const TABLE: &str = r#"
[[consent]]
bsn = "999999990"
decision = "Permit"

[[consent]]
bsn = "123456782"
decision = "Deny"

[[consent]]
bsn = "111222333"
decision = "Indeterminate"

[[consent]]
bsn = "999998456"
requester_ura = "*"
decision = "NotApplicable"

# A patient who said yes in general, but no to one organisation, and only for treatment.
[[consent]]
bsn = "100000009"
requester_ura = "*"
purpose = "TREATMENT"
decision = "Permit"

[[consent]]
bsn = "100000009"
requester_ura = "00000777"
decision = "Deny"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn every_decision_for_the_right_patient() {
    let sim = MitzSim::start_table(TABLE);
    let c = consent(&sim.url, 0);
    for (bsn, expected) in [
        (PERMIT, ConsentDecision::Permit),
        (DENY, ConsentDecision::Deny),
        (INDETERMINATE, ConsentDecision::Indeterminate),
        (NOT_APPLICABLE, ConsentDecision::NotApplicable),
        (UNKNOWN, ConsentDecision::NotApplicable),
    ] {
        assert_eq!(c.decide(&request(bsn)).await, expected, "BSN {bsn}");
    }
    assert_eq!(sim.queries(), 5);
    assert!(c.permits(ConsentDecision::Permit));
    assert!(!c.permits(ConsentDecision::NotApplicable));

    // Requester- and purpose-specific rows.
    let both = request("100000009");
    assert_eq!(c.decide(&both).await, ConsentDecision::Permit);
    let other_org = ConsentRequest {
        requester_ura: OTHER_URA.into(),
        ..both.clone()
    };
    assert_eq!(c.decide(&other_org).await, ConsentDecision::Deny);
    let other_purpose = ConsentRequest {
        purpose_of_use: "COC".into(),
        ..both.clone()
    };
    assert_eq!(
        c.decide(&other_purpose).await,
        ConsentDecision::NotApplicable
    );

    // NotApplicable per configuration.
    let lenient = Consent::new(&ConsentConfig {
        url: sim.url.clone(),
        not_applicable: NotApplicable::Permit,
        ..Default::default()
    });
    let answer = lenient.decide(&request(UNKNOWN)).await;
    assert!(lenient.permits(answer));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cache_answers_a_repeat_until_it_expires() {
    let sim = MitzSim::start_table(TABLE);
    let c = consent(&sim.url, 1);
    let r = request(PERMIT);
    let first = c.check(&r).await;
    assert_eq!(
        (first.decision, first.cached),
        (ConsentDecision::Permit, false)
    );
    let second = c.check(&r).await;
    assert_eq!(
        (second.decision, second.cached),
        (ConsentDecision::Permit, true)
    );
    assert_eq!(
        sim.queries(),
        1,
        "a repeat within cache_secs is not asked again"
    );

    // The whole request is the key: another role is another question.
    let other_role = ConsentRequest {
        role: "30.000".into(),
        ..r.clone()
    };
    assert_eq!(c.decide(&other_role).await, ConsentDecision::Permit);
    assert_eq!(sim.queries(), 2);

    // A Deny is cached too; an Indeterminate is not.
    c.decide(&request(DENY)).await;
    c.decide(&request(DENY)).await;
    assert_eq!(sim.queries(), 3);
    c.decide(&request(INDETERMINATE)).await;
    c.decide(&request(INDETERMINATE)).await;
    assert_eq!(sim.queries(), 5);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let third = c.check(&r).await;
    assert_eq!(
        (third.decision, third.cached),
        (ConsentDecision::Permit, false)
    );
    assert_eq!(sim.queries(), 6, "expired after cache_secs");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_that_is_down_gives_indeterminate() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let c = consent(&format!("http://{addr}/"), 60);
    let outcome = c.check(&request(PERMIT)).await;
    assert_eq!(outcome.decision, ConsentDecision::Indeterminate);
    assert!(
        outcome.reason.as_deref().unwrap_or("").contains("connect"),
        "{outcome:?}"
    );
    // Not cached: once the service is up, it is asked.
    let listener = TcpListener::bind(addr).await.unwrap();
    let sim = simulator::Simulator::new(ConsentTable::of(&[(PERMIT, ConsentDecision::Permit)]));
    let task = tokio::spawn(simulator::serve(listener, sim.clone(), None));
    assert_eq!(c.decide(&request(PERMIT)).await, ConsentDecision::Permit);
    assert_eq!(sim.queries(), 1);
    task.abort();
}

/// A server that answers every connection with `answer` (after reading the request), or
/// never answers when `answer` is None.
async fn fake_server(answer: Option<&'static str>) -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let _ = tcp.read(&mut buf).await;
                match answer {
                    Some(a) => {
                        let _ = tcp.write_all(a.as_bytes()).await;
                        let _ = tcp.shutdown().await;
                    }
                    None => tokio::time::sleep(Duration::from_secs(30)).await,
                }
            });
        }
    });
    (url, task)
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_or_silence_gives_indeterminate() {
    let html = "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 44\r\nConnection: close\r\n\r\n<html><body>502 Bad Gateway</body></html>\n\n\n";
    let soap_without_decision = "HTTP/1.1 200 OK\r\nContent-Type: application/soap+xml\r\nContent-Length: 84\r\nConnection: close\r\n\r\n<e:Envelope xmlns:e=\"http://www.w3.org/2003/05/soap-envelope\"><e:Body/></e:Envelope>";
    let not_http = "SSH-2.0-OpenSSH_9.2\r\n";
    let server_error =
        "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbusy";
    for (answer, reason) in [
        (html, "SOAP 1.2"),
        (soap_without_decision, "no XACML Decision"),
        (not_http, "HTTP"),
        (server_error, "503"),
    ] {
        let (url, task) = fake_server(Some(answer)).await;
        let c = consent(&url, 60);
        let outcome = c.check(&request(PERMIT)).await;
        assert_eq!(outcome.decision, ConsentDecision::Indeterminate, "{answer}");
        let why = outcome.reason.unwrap_or_default();
        assert!(why.contains(reason), "{answer:?}: {why}");
        task.abort();
    }
    let (url, task) = fake_server(None).await;
    let c = Consent::new(&ConsentConfig {
        url,
        timeout_secs: 1,
        ..Default::default()
    });
    let started = Instant::now();
    let outcome = c.check(&request(PERMIT)).await;
    assert_eq!(outcome.decision, ConsentDecision::Indeterminate);
    assert!(outcome
        .reason
        .unwrap_or_default()
        .contains("no answer within"));
    assert!(started.elapsed() < Duration::from_secs(3));
    task.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_simulator_answers_malformed_soap_with_faults() {
    let sim = MitzSim::start(&[(PERMIT, ConsentDecision::Permit)]);
    let post = |content_type: &str, body: &str| {
        format!(
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let soap = "application/soap+xml; charset=utf-8";
    let fault_code = |body: &str| match xacml::parse_response(body.as_bytes(), None) {
        Err(xacml::XacmlError::Fault { code, .. }) => code,
        other => panic!("not a fault: {other:?}: {body}"),
    };
    let (status, body) = raw_http(sim.addr, &post(soap, "<oops"));
    assert_eq!((status, fault_code(&body).as_str()), (400, "env:Sender"));
    let soap11 =
        r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body/></s:Envelope>"#;
    let (status, body) = raw_http(sim.addr, &post(soap, soap11));
    assert_eq!(
        (status, fault_code(&body).as_str()),
        (500, "env:VersionMismatch")
    );
    let no_query = r#"<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"><e:Body><x/></e:Body></e:Envelope>"#;
    let (status, body) = raw_http(sim.addr, &post(soap, no_query));
    assert_eq!((status, fault_code(&body).as_str()), (400, "env:Sender"));
    let (status, _) = raw_http(sim.addr, &post("text/xml", no_query));
    assert_eq!(status, 415);
    let (status, _) = raw_http(
        sim.addr,
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 405);
    // The client names the fault it got.
    let (url, task) = fake_server(Some(
        "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/soap+xml\r\nContent-Length: 237\r\nConnection: close\r\n\r\n<e:Envelope xmlns:e=\"http://www.w3.org/2003/05/soap-envelope\"><e:Body><e:Fault><e:Code><e:Value>e:Receiver</e:Value></e:Code><e:Reason><e:Text xml:lang=\"en\">consent register unavailable</e:Text></e:Reason></e:Fault></e:Body></e:Envelope>",
    ))
    .await;
    let outcome = consent(&url, 0).check(&request(PERMIT)).await;
    assert_eq!(outcome.decision, ConsentDecision::Indeterminate);
    assert!(outcome
        .reason
        .unwrap_or_default()
        .contains("consent register unavailable"),);
    task.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn over_mtls_with_the_test_pki() {
    let pki = pki::Pki::new();
    let sim = MitzSim::start_tls(TABLE, &pki.server.cert, &pki.server.key, Some(&pki.ca_file));
    assert!(sim.url.starts_with("https://127.0.0.1:"), "{}", sim.url);
    let tls_consent = |ca: &PathBuf, identity: Option<(&PathBuf, &PathBuf)>| {
        Consent::new(&ConsentConfig {
            url: sim.url.clone(),
            timeout_secs: 5,
            ca_file: Some(ca.clone()),
            cert_file: identity.map(|(c, _)| c.clone()),
            key_file: identity.map(|(_, k)| k.clone()),
            ..Default::default()
        })
    };
    let good = tls_consent(&pki.ca_file, Some((&pki.client.cert, &pki.client.key)));
    assert_eq!(good.decide(&request(PERMIT)).await, ConsentDecision::Permit);
    assert_eq!(good.decide(&request(DENY)).await, ConsentDecision::Deny);

    // No client certificate: the simulator refuses the handshake.
    let anonymous = tls_consent(&pki.ca_file, None)
        .check(&request(PERMIT))
        .await;
    assert_eq!(anonymous.decision, ConsentDecision::Indeterminate);
    // A certificate from a CA the simulator does not trust.
    let stranger = tls_consent(&pki.ca_file, Some((&pki.unknown.cert, &pki.unknown.key)))
        .check(&request(PERMIT))
        .await;
    assert_eq!(stranger.decision, ConsentDecision::Indeterminate);
    // A server we do not trust.
    let wrong_ca = tls_consent(
        &pki.unknown_ca_file,
        Some((&pki.client.cert, &pki.client.key)),
    )
    .check(&request(PERMIT))
    .await;
    assert_eq!(wrong_ca.decision, ConsentDecision::Indeterminate);
    assert!(wrong_ca.reason.unwrap_or_default().contains("TLS"));

    // The in-process simulator with the same configuration counts what got through.
    let tls = simulator::server_tls(&pki.server.cert, &pki.server.key, Some(&pki.ca_file)).unwrap();
    let inproc = InProcessMitz::start(
        ConsentTable::of(&[(PERMIT, ConsentDecision::Permit)]),
        Some(tls),
    )
    .await;
    let good = Consent::new(&ConsentConfig {
        url: inproc.url.clone(),
        ca_file: Some(pki.ca_file.clone()),
        cert_file: Some(pki.client.cert.clone()),
        key_file: Some(pki.client.key.clone()),
        ..Default::default()
    });
    let anonymous = Consent::new(&ConsentConfig {
        url: inproc.url.clone(),
        ca_file: Some(pki.ca_file.clone()),
        ..Default::default()
    });
    assert_eq!(
        anonymous.decide(&request(PERMIT)).await,
        ConsentDecision::Indeterminate
    );
    assert_eq!(inproc.queries(), 0, "refused before any query");
    assert_eq!(good.decide(&request(PERMIT)).await, ConsentDecision::Permit);
    assert_eq!(good.decide(&request(PERMIT)).await, ConsentDecision::Permit);
    assert_eq!(inproc.queries(), 1, "the second answer came from the cache");
}

/// Capture the query the client sends (through a recording proxy in front of the
/// simulator): its HTTP framing per SOAP 1.2 part 2, and the envelope validated against the
/// SOAP 1.2 and WS-Addressing schemas (xmllint, the vendored tests/schemas or
/// $BEELDBRUG_SCHEMAS).
#[tokio::test(flavor = "multi_thread")]
async fn the_request_is_a_valid_soap12_envelope() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/mitz/closed-question",
        listener.local_addr().unwrap()
    );
    let sim = simulator::Simulator::new(ConsentTable::of(&[(PERMIT, ConsentDecision::Permit)]));
    let (sent_tx, sent_rx) = tokio::sync::oneshot::channel::<(String, Vec<u8>)>();
    let sim2 = sim.clone();
    let task = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut raw = Vec::new();
        let mut buf = [0u8; 8192];
        let (head, body) = loop {
            let n = tcp.read(&mut buf).await.unwrap();
            raw.extend_from_slice(&buf[..n]);
            let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&raw[..end]).to_string();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap();
            while raw.len() < end + 4 + length {
                let n = tcp.read(&mut buf).await.unwrap();
                raw.extend_from_slice(&buf[..n]);
            }
            break (head, raw[end + 4..end + 4 + length].to_vec());
        };
        let (status, answer) = sim2.answer(&body);
        let reply = format!(
            "HTTP/1.1 {status} OK\r\nContent-Type: application/soap+xml; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
            answer.len()
        );
        tcp.write_all(reply.as_bytes()).await.unwrap();
        let _ = sent_tx.send((head, body));
    });
    let c = Consent::new(&ConsentConfig {
        url: url.clone(),
        custodian_ura: "00000659".into(),
        ..Default::default()
    });
    assert_eq!(c.decide(&request(PERMIT)).await, ConsentDecision::Permit);
    let (head, body) = sent_rx.await.unwrap();
    task.abort();

    let head_lower = head.to_ascii_lowercase();
    assert!(
        head.starts_with("POST /mitz/closed-question HTTP/1.1"),
        "{head}"
    );
    assert!(
        head_lower.contains(
            "content-type: application/soap+xml; charset=utf-8; action=\"xacmlauthorizationdecisionqueryrequest\""
        ),
        "{head}"
    );
    // What the simulator read back is what we meant to ask.
    let q = xacml::parse_query(&body).unwrap();
    assert_eq!(
        (
            q.bsn.as_str(),
            q.requester_ura.as_str(),
            q.provider_uzi.as_str(),
            q.role.as_str(),
            q.purpose_of_use.as_str(),
            q.facility_type.as_str(),
            q.custodian_ura.as_str()
        ),
        (
            PERMIT,
            URA,
            "000095254",
            "01.015",
            "TREATMENT",
            "Z3",
            "00000659"
        )
    );
    let text = String::from_utf8(body.clone()).unwrap();
    for needle in [
        "urn:oasis:names:tc:xacml:2.0:profile:saml2.0:v2:schema:protocol",
        "urn:oasis:names:tc:xacml:2.0:context:schema:os",
        "root=\"2.16.840.1.113883.2.4.6.3\" extension=\"999999990\"",
        "root=\"2.16.528.1.1007.3.3\" extension=\"00000666\"",
        "<wsa:To>http://127.0.0.1:",
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }

    let schemas = std::env::var("BEELDBRUG_SCHEMAS")
        .unwrap_or(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemas").into());
    let schemas = PathBuf::from(schemas);
    assert!(
        schemas.join("drivers/soap12-ihe-envelope.xsd").exists(),
        "no schemas at {}",
        schemas.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("query.xml");
    std::fs::write(&file, &body).unwrap();
    let validate = |file: &std::path::Path| {
        std::process::Command::new("xmllint")
            .env("XML_CATALOG_FILES", schemas.join("catalog.xml"))
            .args(["--nonet", "--noout", "--schema"])
            .arg(schemas.join("drivers/soap12-ihe-envelope.xsd"))
            .arg(file)
            .output()
            .expect("xmllint (Debian: libxml2-utils)")
    };
    let out = validate(&file);
    assert!(
        out.status.success(),
        "{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The validation can fail: an envelope with a header out of place does not pass.
    let broken = dir.path().join("broken.xml");
    std::fs::write(
        &broken,
        text.replacen("<env:Header>", "<env:Body/><env:Header>", 1),
    )
    .unwrap();
    assert!(!validate(&broken).status.success());
    // The simulator's answer is a valid envelope too, its assertion included. The SAML 2.0
    // profile of XACML v2.0 assertion schema is not among the shared schemas: its statement
    // type is transcribed here (an extension of saml:StatementAbstractType holding the
    // xacml-context Response, then optionally the Request), with the XACML context itself
    // left to lax processing.
    let driver = dir.path().join("xacml-saml-driver.xsd");
    std::fs::write(
        &driver,
        format!(
            r#"<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema"
  targetNamespace="urn:oasis:names:tc:xacml:2.0:profile:saml2.0:v2:schema:assertion"
  xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" elementFormDefault="qualified">
  <xs:import namespace="http://www.w3.org/2003/05/soap-envelope" schemaLocation="{s}/soap/soap12-envelope.xsd"/>
  <xs:import namespace="http://www.w3.org/2005/08/addressing" schemaLocation="{s}/ws-addressing/ws-addr.xsd"/>
  <xs:import namespace="urn:oasis:names:tc:SAML:2.0:assertion" schemaLocation="{s}/saml-2.0/saml-schema-assertion-2.0.xsd"/>
  <xs:complexType name="XACMLAuthzDecisionStatementType">
    <xs:complexContent>
      <xs:extension base="saml:StatementAbstractType">
        <xs:sequence>
          <xs:any namespace="urn:oasis:names:tc:xacml:2.0:context:schema:os" processContents="lax" minOccurs="1" maxOccurs="2"/>
        </xs:sequence>
      </xs:extension>
    </xs:complexContent>
  </xs:complexType>
</xs:schema>
"#,
            s = schemas.display()
        ),
    )
    .unwrap();
    let answer = dir.path().join("answer.xml");
    let (_, envelope) = sim.answer(&body);
    std::fs::write(&answer, &envelope).unwrap();
    let validate_answer = |file: &std::path::Path| {
        std::process::Command::new("xmllint")
            .env("XML_CATALOG_FILES", schemas.join("catalog.xml"))
            .args(["--nonet", "--noout", "--schema"])
            .arg(&driver)
            .arg(file)
            .output()
            .expect("xmllint")
    };
    let out = validate_answer(&answer);
    assert!(
        out.status.success(),
        "{}\n{envelope}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A statement without its XACML Response, or before the assertion's Issuer, fails.
    let start = envelope.find("<xacml-context:Response").unwrap();
    let end =
        envelope.find("</xacml-context:Response>").unwrap() + "</xacml-context:Response>".len();
    let no_response = format!("{}{}", &envelope[..start], &envelope[end..]);
    std::fs::write(&broken, no_response).unwrap();
    assert!(!validate_answer(&broken).status.success());
}
