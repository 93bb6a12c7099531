//! Caller claims against real peers: bearer JWTs minted with keys made here (JWKS files),
//! XUA assertions signed by xmlsec1 and by signxml (RSA-SHA256 and ECDSA-SHA256), and our
//! own issued assertions checked by `xmlsec1 --verify` and xmllint against the SAML schema.

#[path = "common/tokens.rs"]
mod tokens;

use beeldbrug::trust::jwt::{IssuerConfig, JwtConfig, JwtVerifier, TokenError};
use beeldbrug::trust::saml::{SamlConfig, SamlIssuer, SamlVerifier, TrustedIssuerConfig};
use beeldbrug::trust::{ClaimSource, Claims, Participant};
use tokens::*;

const AUD: &str = "https://beeldbrug.test/dicomweb";
const ISS: &str = "https://idp.ziekenhuis.test";

fn jwt_verifier(idps: &[&JwtIdp]) -> JwtVerifier {
    JwtVerifier::new(&JwtConfig {
        issuers: idps
            .iter()
            .map(|i| IssuerConfig {
                issuer: i.issuer.clone(),
                jwks_file: i.jwks_file.clone(),
                audience: i.audience.clone(),
                reusable: false,
            })
            .collect(),
        ..Default::default()
    })
    .unwrap()
}

fn refused(result: Result<Claims, TokenError>) -> TokenError {
    let err = result.expect_err("token should be refused");
    // Reasons go into a 401 and the audit trail: never the patient.
    assert!(!err.to_string().contains(TEST_BSN), "{err}");
    err
}

#[test]
fn jwt_valid_token_gives_its_claims() {
    let dir = tempfile::tempdir().unwrap();
    let idp = JwtIdp::new(dir.path(), ISS, AUD);
    let verifier = jwt_verifier(&[&idp]);
    let claims = idp.claims();
    let token = idp.mint(&claims);
    let got = verifier.verify(&token).unwrap();
    assert_eq!(got.source, ClaimSource::Jwt);
    assert_eq!(got.issuer, ISS);
    assert_eq!(got.organisation_ura, TEST_URA);
    assert_eq!(got.professional_uzi, TEST_UZI);
    assert_eq!(got.role, TEST_ROLE);
    assert_eq!(got.purpose_of_use, TEST_PURPOSE);
    assert_eq!(got.patient_bsn.as_deref(), Some(TEST_BSN));
    assert_eq!(got.token_id, claims["jti"].as_str().unwrap());
    assert_eq!(got.expires_at, claims["exp"].as_i64().unwrap());
    // The patient is optional.
    let unbound = mint_jwt(&idp, |c| {
        c.as_object_mut().unwrap().remove("bsn");
    });
    assert_eq!(verifier.verify(&unbound).unwrap().patient_bsn, None);
}

/// `reusable = true`: a session's access token is accepted again until it expires; every
/// other check still applies, and the one-use issuer beside it still refuses a replay.
#[test]
fn jwt_tokens_of_a_reusable_issuer_are_accepted_again() {
    let dir = tempfile::tempdir().unwrap();
    let session = JwtIdp::new(dir.path(), "https://login.ziekenhuis.test", AUD);
    let once = JwtIdp::new(dir.path(), ISS, AUD);
    let issuer = |i: &JwtIdp, reusable| IssuerConfig {
        issuer: i.issuer.clone(),
        jwks_file: i.jwks_file.clone(),
        audience: i.audience.clone(),
        reusable,
    };
    let verifier = JwtVerifier::new(&JwtConfig {
        issuers: vec![issuer(&session, true), issuer(&once, false)],
        ..Default::default()
    })
    .unwrap();
    assert!(verifier.reusable(&session.issuer));
    assert!(!verifier.reusable(&once.issuer));

    let token = session.mint(&session.claims());
    for _ in 0..3 {
        assert_eq!(verifier.verify(&token).unwrap().issuer, session.issuer);
    }
    let expired = mint_jwt(&session, |c| c["exp"] = (now() - 120).into());
    assert_eq!(refused(verifier.verify(&expired)), TokenError::Expired);

    let token = once.mint(&once.claims());
    verifier.verify(&token).unwrap();
    assert_eq!(refused(verifier.verify(&token)), TokenError::Replayed);
}

#[test]
fn jwt_refusals_have_distinct_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let idp = JwtIdp::new(dir.path(), ISS, AUD);
    let verifier = jwt_verifier(&[&idp]);
    let now = now();

    let expired = mint_jwt(&idp, |c| c["exp"] = (now - 120).into());
    assert_eq!(refused(verifier.verify(&expired)), TokenError::Expired);

    let early = mint_jwt(&idp, |c| c["nbf"] = (now + 120).into());
    assert_eq!(refused(verifier.verify(&early)), TokenError::NotYetValid);

    let audience = mint_jwt(&idp, |c| c["aud"] = "https://elsewhere.test".into());
    assert_eq!(
        refused(verifier.verify(&audience)),
        TokenError::WrongAudience
    );

    let stranger = JwtIdp::with_kid(dir.path(), "https://unknown.test", AUD, "s1");
    let unknown = stranger.mint(&stranger.claims());
    assert_eq!(
        refused(verifier.verify(&unknown)),
        TokenError::UntrustedIssuer
    );

    // Same iss and kid, another key: the signature does not verify.
    let forger = JwtIdp::with_kid(dir.path(), ISS, AUD, "k1");
    let forged = forger.mint(&forger.claims());
    assert_eq!(refused(verifier.verify(&forged)), TokenError::BadSignature);

    // One byte of the signature changed.
    let mut tampered = idp.mint(&idp.claims()).into_bytes();
    let last = tampered.len() - 5;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert_eq!(
        refused(verifier.verify(&tampered)),
        TokenError::BadSignature
    );

    let too_long = mint_jwt(&idp, |c| c["exp"] = (now + 7200).into());
    assert!(matches!(
        refused(verifier.verify(&too_long)),
        TokenError::TooLong(_)
    ));

    let token = idp.mint(&idp.claims());
    verifier.verify(&token).unwrap();
    assert_eq!(refused(verifier.verify(&token)), TokenError::Replayed);

    for claim in [
        "jti",
        "ura",
        "uzi",
        "role",
        "purpose_of_use",
        "exp",
        "aud",
        "iss",
    ] {
        let missing = mint_jwt(&idp, |c| {
            c.as_object_mut().unwrap().remove(claim);
        });
        assert_eq!(
            refused(verifier.verify(&missing)),
            TokenError::MissingClaim(claim.into()),
            "without {claim}"
        );
    }

    let bad_bsn = mint_jwt(&idp, |c| c["bsn"] = "999999991".into());
    assert_eq!(
        refused(verifier.verify(&bad_bsn)),
        TokenError::InvalidClaim("bsn".into(), "not a valid BSN".into())
    );
}

#[test]
fn jwt_algorithms_come_from_the_key_type() {
    let dir = tempfile::tempdir().unwrap();
    let idp = JwtIdp::new(dir.path(), ISS, AUD);
    let verifier = jwt_verifier(&[&idp]);
    let claims = serde_json::to_vec(&idp.claims()).unwrap();
    let b64url = |b: &[u8]| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    };
    // alg "none": unsigned.
    let none = format!(
        "{}.{}.",
        b64url(br#"{"alg":"none","kid":"k1"}"#),
        b64url(&claims)
    );
    assert!(matches!(
        refused(verifier.verify(&none)),
        TokenError::Malformed(_)
    ));
    // HS256 keyed with the public JWK (the classic key confusion).
    let x = idp.jwk();
    let secret = serde_json::to_vec(&x).unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("k1".into());
    let hs = jsonwebtoken::encode(
        &header,
        &idp.claims(),
        &jsonwebtoken::EncodingKey::from_secret(&secret),
    )
    .unwrap();
    assert!(matches!(
        refused(verifier.verify(&hs)),
        TokenError::Algorithm(_)
    ));
}

#[test]
fn jwt_jwks_file_is_read_again_when_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let idp = JwtIdp::new(dir.path(), ISS, AUD);
    let verifier = jwt_verifier(&[&idp]);
    // A rollover: the issuer publishes its new key (kid k2) next to the old one.
    let next = JwtIdp::with_kid(dir.path(), ISS, AUD, "k2");
    let token = next.mint(&next.claims());
    assert_eq!(refused(verifier.verify(&token)), TokenError::BadSignature);
    std::thread::sleep(std::time::Duration::from_millis(20));
    idp.write_jwks(&[&idp, &next]);
    verifier.verify(&token).unwrap();
    verifier.verify(&idp.mint(&idp.claims())).unwrap();
}

// ---- SAML ----

fn gateway(name: &str, fingerprint: &str) -> Participant {
    Participant {
        name: name.into(),
        ura: "87654321".into(),
        home_community_id: "urn:oid:2.16.840.1.113883.2.4.6.6.99".into(),
        certificate_sha256: fingerprint.into(),
        query_url: None,
        retrieve_url: None,
        dicomweb_url: None,
    }
}

const GTK_FP: &str = "AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99";

fn saml_verifier(idps: &[&SamlIdp], local: bool) -> SamlVerifier {
    SamlVerifier::new(&SamlConfig {
        trusted_issuers: idps
            .iter()
            .map(|i| TrustedIssuerConfig {
                issuer: i.issuer.clone(),
                cert_file: i.cert_pem.clone(),
                gateways: vec!["gtk-a".into(), GTK_FP.to_lowercase().replace(':', "")],
                local,
            })
            .collect(),
        ..Default::default()
    })
    .unwrap()
}

fn check_saml_claims(claims: &Claims, issuer: &str, id: &str) {
    assert_eq!(claims.source, ClaimSource::Saml);
    assert_eq!(claims.issuer, issuer);
    assert_eq!(claims.organisation_ura, TEST_URA);
    assert_eq!(claims.professional_uzi, TEST_UZI);
    assert_eq!(claims.role, TEST_ROLE);
    assert_eq!(claims.purpose_of_use, TEST_PURPOSE);
    assert_eq!(claims.patient_bsn.as_deref(), Some(TEST_BSN));
    assert_eq!(claims.token_id, id);
}

/// Change one byte: the URA's last digit (inside a signed attribute value).
fn alter_attribute(xml: &str) -> String {
    let from = format!("extension=\"{TEST_URA}\"");
    assert!(xml.contains(&from));
    xml.replacen(&from, "extension=\"12345679\"", 1)
}

/// Change one byte of the SignatureValue.
fn alter_signature(xml: &str) -> String {
    let start = xml.find("SignatureValue>").unwrap() + "SignatureValue>".len() + 10;
    let mut bytes = xml.as_bytes().to_vec();
    bytes[start] = if bytes[start] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap()
}

/// A peer that signs an assertion.
type Signer<'a> = &'a dyn Fn(&AssertionSpec) -> String;

#[test]
fn saml_signed_by_xmlsec1_and_signxml_accepted_and_one_byte_changes_refused() {
    let dir = tempfile::tempdir().unwrap();
    for kind in [KeyKind::Rsa, KeyKind::Ec] {
        let idp = SamlIdp::new(dir.path(), "urn:oid:2.16.528.1.1007.3.3.12345678.1", kind);
        let verifier = saml_verifier(&[&idp], true);
        let signers: [(&str, Signer); 2] = [
            ("xmlsec1", &|s| idp.sign_xmlsec(s)),
            ("signxml", &|s| idp.sign_signxml(s)),
        ];
        for (signer, sign) in signers {
            let what = format!("{signer} {kind:?}");
            let spec = AssertionSpec::valid(&idp.issuer);
            let signed = sign(&spec);
            verify_xmlsec(&signed, &idp.cert_pem).unwrap_or_else(|e| panic!("{what}: {e}"));
            let claims = verifier
                .verify(&signed, None)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            check_saml_claims(&claims, &idp.issuer, &spec.id);

            let spec = AssertionSpec::valid(&idp.issuer);
            let signed = sign(&spec);
            let altered = alter_attribute(&signed);
            assert!(verify_xmlsec(&altered, &idp.cert_pem).is_err(), "{what}");
            assert_eq!(
                refused(verifier.verify(&altered, None)),
                TokenError::BadSignature,
                "{what}: attribute"
            );
            let altered = alter_signature(&signed);
            assert_eq!(
                refused(verifier.verify(&altered, None)),
                TokenError::BadSignature,
                "{what}: signature"
            );
            // Still unused: the intact one is accepted after the altered ones were refused.
            verifier.verify(&signed, None).unwrap();
        }
    }
}

#[test]
fn saml_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let idp = SamlIdp::new(dir.path(), "https://xua.ziekenhuis.test", KeyKind::Rsa);
    let verifier = saml_verifier(&[&idp], true);
    let now = now();
    let valid = || AssertionSpec::valid(&idp.issuer);

    let mut spec = valid();
    spec.not_before = now - 400;
    spec.not_on_or_after = now - 100;
    assert_eq!(
        refused(verifier.verify(&idp.sign_xmlsec(&spec), None)),
        TokenError::Expired
    );

    let mut spec = valid();
    spec.not_before = now + 120;
    spec.not_on_or_after = now + 400;
    assert_eq!(
        refused(verifier.verify(&idp.sign_xmlsec(&spec), None)),
        TokenError::NotYetValid
    );

    let mut spec = valid();
    spec.not_on_or_after = spec.not_before + 601;
    assert!(matches!(
        refused(verifier.verify(&idp.sign_xmlsec(&spec), None)),
        TokenError::TooLong(_)
    ));

    for (suffix, label) in [
        ("provider-identifier", "provider-identifier"),
        ("subject:role", "role"),
        ("provider-institution", "provider-institution"),
        ("purposeofuse", "purposeofuse"),
    ] {
        let spec = valid().without(suffix);
        assert_eq!(
            refused(verifier.verify(&idp.sign_xmlsec(&spec), None)),
            TokenError::MissingClaim(label.into()),
            "without {suffix}"
        );
    }

    // An issuer we do not trust, and a trusted issuer's name signed with another key (its
    // own certificate in KeyInfo does not help).
    let stranger = SamlIdp::new(dir.path(), "https://stranger.test", KeyKind::Rsa);
    let spec = AssertionSpec::valid(&stranger.issuer);
    assert_eq!(
        refused(verifier.verify(&stranger.sign_xmlsec(&spec), None)),
        TokenError::UntrustedIssuer
    );
    let impostor = SamlIdp::new(dir.path(), &idp.issuer, KeyKind::Rsa);
    assert_eq!(
        refused(verifier.verify(&impostor.sign_xmlsec(&valid()), None)),
        TokenError::BadSignature
    );

    let signed = idp.sign_xmlsec(&valid());
    verifier.verify(&signed, None).unwrap();
    assert_eq!(
        refused(verifier.verify(&signed, None)),
        TokenError::Replayed
    );

    // A patient that is not a valid BSN.
    let mut spec = valid();
    spec.attributes.last_mut().unwrap().1 =
        "999999991^^^&amp;2.16.840.1.113883.2.4.6.3&amp;ISO".into();
    assert_eq!(
        refused(verifier.verify(&idp.sign_xmlsec(&spec), None)),
        TokenError::InvalidClaim("resource-id".into(), "not a valid BSN".into())
    );
}

#[test]
fn saml_escaped_hl7_values_are_read() {
    // Some issuers send the CE / II as escaped text (see samples/xua/nhn-no_*).
    let dir = tempfile::tempdir().unwrap();
    let idp = SamlIdp::new(dir.path(), "https://xua.escaped.test", KeyKind::Ec);
    let verifier = saml_verifier(&[&idp], true);
    let mut spec = AssertionSpec::valid(&idp.issuer);
    for (name, value) in spec.attributes.iter_mut() {
        if name.ends_with("role") || name.ends_with("provider-identifier") {
            *value = value
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;");
        }
    }
    let claims = verifier.verify(&idp.sign_xmlsec(&spec), None).unwrap();
    check_saml_claims(&claims, &idp.issuer, &spec.id);
}

#[test]
fn saml_signature_wrapping_refused() {
    let dir = tempfile::tempdir().unwrap();
    let idp = SamlIdp::new(dir.path(), "https://xua.ziekenhuis.test", KeyKind::Rsa);
    let verifier = saml_verifier(&[&idp], true);
    let spec = AssertionSpec::valid(&idp.issuer);
    let signed = idp.sign_xmlsec(&spec);
    let body = signed
        .trim_start()
        .strip_prefix("<?xml version=\"1.0\"?>")
        .unwrap_or(&signed)
        .trim();
    // XSW: the signed original moved into the Advice of an evil assertion (other ID, other
    // URA) that carries the original Signature, whose Reference still points at the
    // original's ID.
    let signature_start = body.find("<ds:Signature").unwrap();
    let signature_end = body.find("</ds:Signature>").unwrap() + "</ds:Signature>".len();
    let signature = &body[signature_start..signature_end];
    let evil_id = format!("{}evil", spec.id);
    let evil_body = alter_attribute(body).replace(signature, "").replacen(
        &format!("ID=\"{}\"", spec.id),
        &format!("ID=\"{evil_id}\""),
        1,
    );
    let issuer_end = evil_body.find("</saml2:Issuer>").unwrap() + "</saml2:Issuer>".len();
    // The enveloped-signature transform leaves the original's digest the same without its
    // Signature, so the one Signature left in the document still verifies over it.
    let advice = format!(
        "<saml2:Advice>{}</saml2:Advice>",
        body.replace(signature, "")
    );
    let evil = format!(
        "{}{signature}{}",
        &evil_body[..issuer_end],
        &evil_body[issuer_end..]
    );
    // Advice sits after Conditions (before the statements); put the original there.
    let statements = evil.find("<saml2:AuthnStatement").unwrap();
    let xsw = format!("{}{advice}{}", &evil[..statements], &evil[statements..]);
    assert_eq!(refused(verifier.verify(&xsw, None)), TokenError::Wrapped);

    // The same with the evil assertion keeping the original's ID (duplicate IDs).
    let xsw_same_id = xsw.replacen(
        &format!("ID=\"{evil_id}\""),
        &format!("ID=\"{}\"", spec.id),
        1,
    );
    assert_eq!(
        refused(verifier.verify(&xsw_same_id, None)),
        TokenError::Wrapped
    );

    // The original itself is fine.
    verifier.verify(&signed, None).unwrap();
}

#[test]
fn saml_bound_to_the_gateway_it_arrives_from() {
    let dir = tempfile::tempdir().unwrap();
    let idp = SamlIdp::new(dir.path(), "https://xua.gtk-a.test", KeyKind::Ec);
    let verifier = saml_verifier(&[&idp], false);
    let by_name = gateway("gtk-a", "00:11");
    let by_fingerprint = gateway("renamed", GTK_FP);
    let other = gateway("gtk-b", "00:22");
    let sign = || idp.sign_xmlsec(&AssertionSpec::valid(&idp.issuer));
    verifier.verify(&sign(), Some(&by_name)).unwrap();
    verifier.verify(&sign(), Some(&by_fingerprint)).unwrap();
    assert_eq!(
        refused(verifier.verify(&sign(), Some(&other))),
        TokenError::WrongGateway
    );
    // Not local: an assertion of this issuer must come over mTLS from its gateway.
    assert_eq!(
        refused(verifier.verify(&sign(), None)),
        TokenError::WrongGateway
    );
}

#[test]
fn saml_issued_by_us_verifies_with_xmlsec1_and_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    for kind in [KeyKind::Rsa, KeyKind::Ec] {
        let idp = SamlIdp::new(dir.path(), "urn:oid:2.16.528.1.1007.3.3.12345678", kind);
        let issuer = SamlIssuer::new(&idp.issuer_config()).unwrap();
        let claims = Claims {
            source: ClaimSource::Configured,
            issuer: String::new(),
            subject: "Dr. A. & B. <Test>".into(),
            organisation_ura: TEST_URA.into(),
            professional_uzi: TEST_UZI.into(),
            role: TEST_ROLE.into(),
            purpose_of_use: TEST_PURPOSE.into(),
            patient_bsn: Some(TEST_BSN.into()),
            token_id: String::new(),
            expires_at: 0,
        };
        let xml = issuer
            .issue(&claims, Some("https://gtk-b.test/xca"))
            .unwrap();
        verify_xmlsec(&xml, &idp.cert_pem).unwrap_or_else(|e| panic!("{kind:?}: {e}\n{xml}"));
        validate_assertion_schema(&xml).unwrap_or_else(|e| panic!("{kind:?}: {e}\n{xml}"));
        assert!(verify_xmlsec(&alter_attribute(&xml), &idp.cert_pem).is_err());

        // The receiving side (our verifier) reads back the same claims.
        let verifier = saml_verifier(&[&idp], true);
        let got = verifier.verify(&xml, None).unwrap();
        assert_eq!(got.organisation_ura, TEST_URA);
        assert_eq!(got.professional_uzi, TEST_UZI);
        assert_eq!(got.role, TEST_ROLE);
        assert_eq!(got.purpose_of_use, TEST_PURPOSE);
        assert_eq!(got.patient_bsn.as_deref(), Some(TEST_BSN));
        assert_eq!(got.subject, claims.subject);
        assert!(got.expires_at - now() <= 600);
    }
}

#[test]
fn config_errors_name_the_key() {
    let err = JwtVerifier::new(&JwtConfig {
        issuers: vec![IssuerConfig {
            issuer: ISS.into(),
            jwks_file: "/nonexistent/jwks.json".into(),
            audience: AUD.into(),
            reusable: false,
        }],
        ..Default::default()
    })
    .unwrap_err();
    assert!(
        err.to_string().starts_with("issuers[0].jwks_file:"),
        "{err}"
    );
    let err = SamlIssuer::new(&SamlConfig {
        issuer: "x".into(),
        ..Default::default()
    })
    .unwrap_err();
    assert!(err.to_string().starts_with("signing_cert_file:"), "{err}");
    let err = SamlVerifier::new(&SamlConfig {
        trusted_issuers: vec![TrustedIssuerConfig {
            issuer: "x".into(),
            cert_file: "/nonexistent.pem".into(),
            gateways: vec!["a".into()],
            local: false,
        }],
        ..Default::default()
    })
    .unwrap_err();
    assert!(
        err.to_string().starts_with("trusted_issuers[0].cert_file:"),
        "{err}"
    );
}
