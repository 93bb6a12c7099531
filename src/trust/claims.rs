//! What a caller claims about itself, from a verified OAuth 2.0 bearer JWT or an XUA SAML 2.0
//! assertion (REFERENCE §2): organisation (URA), professional (UZI), role (RoleCodeNL),
//! purpose of use, and optionally the one patient (BSN) the claims are bound to.

/// Where the claims came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimSource {
    /// OAuth 2.0 bearer JWT (RFC 6750, RFC 7519).
    Jwt,
    /// XUA SAML 2.0 assertion (IHE ITI-40).
    Saml,
    /// Configured for a DIMSE peer inside the hospital (`[[dimse.peers]]`).
    Configured,
    /// A participant (mTLS certificate) that presented no token: its organisation only.
    Participant,
}

/// Verified claims of one request. Only ever built by a verifier (jwt, saml) or from
/// configuration: a front never fills it from unverified input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub source: ClaimSource,
    /// `iss` / the assertion's Issuer.
    pub issuer: String,
    /// `sub` / the assertion's NameID.
    pub subject: String,
    /// Requesting organisation, URA (OID 2.16.528.1.1007.3.3).
    pub organisation_ura: String,
    /// Professional, UZI number (OID 2.16.528.1.1007.3.1).
    pub professional_uzi: String,
    /// Role, a RoleCodeNL code (OID 2.16.840.1.113883.2.4.15.111).
    pub role: String,
    /// Purpose of use, e.g. `TREATMENT` (XSPA purposeofuse).
    pub purpose_of_use: String,
    /// The patient (BSN) the token is bound to, if any: then only that patient's data.
    pub patient_bsn: Option<String>,
    /// `jti` / the assertion ID: the token's identity, for replay checks and the audit trail.
    pub token_id: String,
    /// Expiry, seconds since the Unix epoch.
    pub expires_at: i64,
}

impl Claims {
    /// Claims that come from our own configuration rather than a token: an organisation
    /// (`subject` = the participant or AE it was configured for), no professional, role,
    /// purpose or patient until the caller sets them; they do not expire.
    pub fn of_organisation(source: ClaimSource, subject: &str, organisation_ura: &str) -> Claims {
        Claims {
            source,
            issuer: match source {
                ClaimSource::Participant => "participants",
                _ => "config",
            }
            .into(),
            subject: subject.into(),
            organisation_ura: organisation_ura.into(),
            professional_uzi: String::new(),
            role: String::new(),
            purpose_of_use: String::new(),
            patient_bsn: None,
            token_id: String::new(),
            expires_at: i64::MAX,
        }
    }
}
