//! XUA SAML 2.0 assertions (IHE ITI TF-2b 3.40, REFERENCE §2): verify the signature, the
//! validity window (at most 10 minutes), the trusted issuer, the gateway it arrived from and
//! the required Twiin attributes ([`verify`]); issue signed assertions for our own outgoing
//! calls ([`issue`]).
//!
//! XML-DSig (enveloped signature, exclusive C14N) is bergshamra's, pure Rust; the checks
//! around it that bind the signature to the assertion read (signature wrapping) are ours.
//! See docs/trust-tokens.md for the choice.

pub mod issue;
pub mod verify;

pub use issue::SamlIssuer;
pub use verify::SamlVerifier;

/// SAML 2.0 assertion namespace (SAML core 2.2).
pub const NS_SAML: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
/// XML-DSig namespace.
pub const NS_DSIG: &str = "http://www.w3.org/2000/09/xmldsig#";
/// HL7 V3 namespace (CE, II attribute values).
pub const NS_HL7: &str = "urn:hl7-org:v3";

/// Professional (UZI), required.
pub const ATTR_PROVIDER_ID: &str = "urn:ihe:iti:xua:2017:subject:provider-identifier";
/// Role (RoleCodeNL, HL7 V3 CE), required.
pub const ATTR_ROLE: &str = "urn:oasis:names:tc:xacml:2.0:subject:role";
/// Organisation (URA), required.
pub const ATTR_INSTITUTION: &str = "urn:nl:otv:names:tc:1.0:subject:provider-institution";
/// Purpose of use, required.
pub const ATTR_PURPOSE: &str = "urn:oasis:names:tc:xspa:1.0:subject:purposeofuse";
/// The professional who mandated this one (conditional).
pub const ATTR_MANDATED: &str = "urn:nl:otv:names:tc:1.0:subject:mandated";
/// The patient (BSN) the assertion is bound to (optional).
pub const ATTR_RESOURCE_ID: &str = "urn:oasis:names:tc:xacml:2.0:resource:resource-id";
/// Subject name (optional, informative).
pub const ATTR_SUBJECT_ID: &str = "urn:oasis:names:tc:xspa:1.0:subject:subject-id";

/// UZI number OID.
pub const OID_UZI: &str = "2.16.528.1.1007.3.1";
/// URA OID.
pub const OID_URA: &str = "2.16.528.1.1007.3.3";
/// RoleCodeNL code system OID.
pub const OID_ROLE_CODE_NL: &str = "2.16.840.1.113883.2.4.15.111";
/// BSN OID.
pub const OID_BSN: &str = "2.16.840.1.113883.2.4.6.3";
/// HL7 PurposeOfUse code system (the one IHE XUA names).
pub const OID_PURPOSE_OF_USE: &str = "2.16.840.1.113883.1.11.20448";

/// The longest validity window accepted or issued (REFERENCE §2: at most 10 minutes).
pub const MAX_WINDOW_SECS: i64 = 600;

// The settings' types live in `config/trust.rs` (config imports no module it configures).
pub use crate::config::trust::{SamlConfig, TrustedIssuerConfig};

/// Strip `urn:oid:` from an OID.
pub(crate) fn bare_oid(oid: &str) -> &str {
    let oid = oid.trim();
    oid.strip_prefix("urn:oid:").unwrap_or(oid)
}

/// A certificate fingerprint compared without colons and case.
pub(crate) fn fingerprint_eq(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        s.chars()
            .filter(|c| *c != ':')
            .flat_map(char::to_lowercase)
            .collect::<String>()
    };
    let (a, b) = (norm(a), norm(b));
    a.len() == 64 && a == b
}

/// The DER certificates in a PEM file (one or more `CERTIFICATE` blocks).
pub(crate) fn read_certificates(path: &std::path::Path) -> Result<Vec<Vec<u8>>, String> {
    use base64::Engine;
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut certs = Vec::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
        let body = &rest[start + "-----BEGIN CERTIFICATE-----".len()..];
        let end = body
            .find("-----END CERTIFICATE-----")
            .ok_or_else(|| format!("{}: unterminated certificate", path.display()))?;
        let b64: String = body[..end].split_whitespace().collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("{}: bad certificate base64: {e}", path.display()))?;
        certs.push(der);
        rest = &body[end..];
    }
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate", path.display()));
    }
    Ok(certs)
}
