//! Issue XUA assertions for our own outgoing calls (IHE ITI TF-2b 3.40.4.1.2): the Twiin
//! attributes of a [`Claims`], valid at most 10 minutes, signed enveloped with exclusive
//! C14N (SAML core 5.4) by bergshamra with our key; our certificate in the KeyInfo.
//!
//! Element order follows saml-schema-assertion-2.0.xsd (Issuer, Signature, Subject,
//! Conditions, statements), so the result validates against the SAML 2.0 schema.

use super::*;
use crate::trust::claims::Claims;
use crate::trust::jwt::TokenError;
use crate::xml::escape;
use bergshamra::core::algorithm as alg;
use bergshamra::{DsigContext, KeysManager};
use std::sync::atomic::{AtomicU64, Ordering};

/// Signs assertions with our key.
pub struct SamlIssuer {
    issuer: String,
    validity_secs: i64,
    signature_method: &'static str,
    certificate_b64: String,
    dsig: DsigContext,
}

impl std::fmt::Debug for SamlIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SamlIssuer")
            .field("issuer", &self.issuer)
            .field("validity_secs", &self.validity_secs)
            .field("signature_method", &self.signature_method)
            .finish()
    }
}

impl SamlIssuer {
    /// From `[trust.saml] issuer, signing_cert_file, signing_key_file, validity_secs`.
    pub fn new(config: &SamlConfig) -> Result<SamlIssuer, TokenError> {
        let missing = |key: &str| TokenError::Config {
            key: key.into(),
            reason: "required to issue assertions".into(),
        };
        if config.issuer.trim().is_empty() {
            return Err(missing("issuer"));
        }
        let cert_file = config
            .signing_cert_file
            .as_ref()
            .ok_or_else(|| missing("signing_cert_file"))?;
        let key_file = config
            .signing_key_file
            .as_ref()
            .ok_or_else(|| missing("signing_key_file"))?;
        let validity_secs = config.validity_secs.unwrap_or(300);
        if !(1..=MAX_WINDOW_SECS).contains(&validity_secs) {
            return Err(TokenError::Config {
                key: "validity_secs".into(),
                reason: format!("must be 1..={MAX_WINDOW_SECS}"),
            });
        }
        let certs = read_certificates(cert_file).map_err(|reason| TokenError::Config {
            key: "signing_cert_file".into(),
            reason,
        })?;
        let key_pem = std::fs::read(key_file).map_err(|e| TokenError::Config {
            key: "signing_key_file".into(),
            reason: format!("cannot read {}: {e}", key_file.display()),
        })?;
        let key = bergshamra::keys::loader::load_pem_auto(&key_pem, None)
            .ok()
            .filter(|k| k.has_private_key())
            .ok_or_else(|| TokenError::Config {
                key: "signing_key_file".into(),
                reason: "not an RSA or EC private key (PEM)".into(),
            })?;
        let signature_method = match key.algorithm_name() {
            "RSA" => alg::RSA_SHA256,
            "EC-P256" => "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256",
            other => {
                return Err(TokenError::Config {
                    key: "signing_key_file".into(),
                    reason: format!("{other} keys are not supported (RSA or EC P-256)"),
                })
            }
        };
        // The certificate must be the key's: compare the public keys.
        let cert_key = bergshamra::keys::loader::load_x509_cert_der(&certs[0]).map_err(|e| {
            TokenError::Config {
                key: "signing_cert_file".into(),
                reason: format!("unusable certificate: {e}"),
            }
        })?;
        if cert_key.to_spki_der() != key.to_spki_der() {
            return Err(TokenError::Config {
                key: "signing_key_file".into(),
                reason: "does not match signing_cert_file".into(),
            });
        }
        let mut keys = KeysManager::new();
        keys.add_key(key);
        use base64::Engine;
        Ok(SamlIssuer {
            issuer: config.issuer.trim().to_string(),
            validity_secs,
            signature_method,
            certificate_b64: base64::engine::general_purpose::STANDARD.encode(&certs[0]),
            dsig: DsigContext::new(keys),
        })
    }

    /// A signed assertion carrying `claims`, for `audience` (the recipient, if known).
    pub fn issue(&self, claims: &Claims, audience: Option<&str>) -> Result<String, TokenError> {
        let now = time::OffsetDateTime::now_utc();
        self.issue_at(claims, audience, now.unix_timestamp())
    }

    pub(crate) fn issue_at(
        &self,
        claims: &Claims,
        audience: Option<&str>,
        now: i64,
    ) -> Result<String, TokenError> {
        let id = new_id(now);
        let template = self.template(&id, claims, audience, now)?;
        bergshamra::sign(&self.dsig, &template).map_err(|e| TokenError::Signing(e.to_string()))
    }

    fn template(
        &self,
        id: &str,
        c: &Claims,
        audience: Option<&str>,
        now: i64,
    ) -> Result<String, TokenError> {
        let instant = format_time(now)?;
        let until = format_time(now + self.validity_secs)?;
        let e = escape;
        let subject = if c.subject.is_empty() {
            &c.professional_uzi
        } else {
            &c.subject
        };
        let audience = match audience {
            Some(a) => format!(
                "<saml2:AudienceRestriction><saml2:Audience>{}</saml2:Audience></saml2:AudienceRestriction>",
                e(a)
            ),
            None => String::new(),
        };
        let ii = |oid: &str, value: &str| {
            format!(
                "<hl7:id xmlns:hl7=\"{NS_HL7}\" xsi:type=\"hl7:II\" root=\"{oid}\" extension=\"{}\"/>",
                e(value)
            )
        };
        let mut attributes = vec![
            attribute(ATTR_SUBJECT_ID, &format!("<saml2:AttributeValue xsi:type=\"xs:string\">{}</saml2:AttributeValue>", e(subject))),
            attribute(ATTR_PROVIDER_ID, &value(&ii(OID_UZI, &c.professional_uzi))),
            attribute(ATTR_INSTITUTION, &value(&ii(OID_URA, &c.organisation_ura))),
            attribute(
                ATTR_ROLE,
                &value(&format!(
                    "<hl7:Role xmlns:hl7=\"{NS_HL7}\" xsi:type=\"hl7:CE\" code=\"{}\" codeSystem=\"{OID_ROLE_CODE_NL}\" codeSystemName=\"RoleCodeNL\"/>",
                    e(&c.role)
                )),
            ),
            attribute(
                ATTR_PURPOSE,
                &value(&format!(
                    "<hl7:PurposeOfUse xmlns:hl7=\"{NS_HL7}\" xsi:type=\"hl7:CE\" code=\"{}\" codeSystem=\"{OID_PURPOSE_OF_USE}\" codeSystemName=\"PurposeOfUse\"/>",
                    e(&c.purpose_of_use)
                )),
            ),
        ];
        if let Some(bsn) = &c.patient_bsn {
            attributes.push(attribute(
                ATTR_RESOURCE_ID,
                &format!(
                    "<saml2:AttributeValue xsi:type=\"xs:string\">{}^^^&amp;{OID_BSN}&amp;ISO</saml2:AttributeValue>",
                    e(bsn)
                ),
            ));
        }
        Ok(format!(
            "<saml2:Assertion xmlns:saml2=\"{NS_SAML}\" \
xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
xmlns:xs=\"http://www.w3.org/2001/XMLSchema\" \
ID=\"{id}\" IssueInstant=\"{instant}\" Version=\"2.0\">\
<saml2:Issuer>{issuer}</saml2:Issuer>\
<ds:Signature xmlns:ds=\"{NS_DSIG}\"><ds:SignedInfo>\
<ds:CanonicalizationMethod Algorithm=\"{c14n}\"/>\
<ds:SignatureMethod Algorithm=\"{method}\"/>\
<ds:Reference URI=\"#{id}\"><ds:Transforms>\
<ds:Transform Algorithm=\"{enveloped}\"/>\
<ds:Transform Algorithm=\"{c14n}\"/>\
</ds:Transforms>\
<ds:DigestMethod Algorithm=\"{digest}\"/>\
<ds:DigestValue></ds:DigestValue>\
</ds:Reference></ds:SignedInfo>\
<ds:SignatureValue></ds:SignatureValue>\
<ds:KeyInfo><ds:X509Data><ds:X509Certificate>{cert}</ds:X509Certificate></ds:X509Data></ds:KeyInfo>\
</ds:Signature>\
<saml2:Subject><saml2:NameID Format=\"urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified\">{subject}</saml2:NameID>\
<saml2:SubjectConfirmation Method=\"urn:oasis:names:tc:SAML:2.0:cm:bearer\"/></saml2:Subject>\
<saml2:Conditions NotBefore=\"{instant}\" NotOnOrAfter=\"{until}\">{audience}</saml2:Conditions>\
<saml2:AuthnStatement AuthnInstant=\"{instant}\"><saml2:AuthnContext>\
<saml2:AuthnContextClassRef>urn:oasis:names:tc:SAML:2.0:ac:classes:X509</saml2:AuthnContextClassRef>\
</saml2:AuthnContext></saml2:AuthnStatement>\
<saml2:AttributeStatement>{attributes}</saml2:AttributeStatement>\
</saml2:Assertion>",
            issuer = e(&self.issuer),
            c14n = alg::EXC_C14N,
            method = self.signature_method,
            enveloped = alg::ENVELOPED_SIGNATURE,
            digest = alg::SHA256,
            cert = self.certificate_b64,
            subject = e(subject),
            attributes = attributes.concat(),
        ))
    }
}

fn attribute(name: &str, values: &str) -> String {
    format!(
        "<saml2:Attribute Name=\"{name}\" NameFormat=\"urn:oasis:names:tc:SAML:2.0:attrname-format:uri\">{values}</saml2:Attribute>"
    )
}

fn value(inner: &str) -> String {
    format!("<saml2:AttributeValue>{inner}</saml2:AttributeValue>")
}

fn format_time(unix: i64) -> Result<String, TokenError> {
    let t = time::OffsetDateTime::from_unix_timestamp(unix)
        .map_err(|e| TokenError::Signing(e.to_string()))?;
    t.format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| TokenError::Signing(e.to_string()))
}

/// A fresh assertion ID (an xs:ID: starts with `_`), unique per process and time.
fn new_id(now: i64) -> String {
    use sha2::{Digest, Sha256};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hash = Sha256::new();
    hash.update(now.to_le_bytes());
    hash.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    hash.update(std::process::id().to_le_bytes());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    hash.update(nanos.to_le_bytes());
    let digest = hash.finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("_{hex}")
}
