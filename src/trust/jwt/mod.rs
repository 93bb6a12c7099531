//! OAuth 2.0 bearer JWTs (RFC 6750, RFC 7519) with jsonwebtoken: trusted issuers and their
//! JWKS, `aud`, `iss`, `exp`, `nbf`, `jti` replay protection and the required Twiin claims.
//!
//! Claim names (docs/trust-tokens.md): the registered `iss`, `sub`, `aud`, `exp`, `nbf`,
//! `jti` (RFC 7519 4.1) and the private claims (RFC 7519 4.3) [`CLAIM_URA`],
//! [`CLAIM_UZI`], [`CLAIM_ROLE`], [`CLAIM_PURPOSE`] and the optional [`CLAIM_BSN`].
//!
//! [`TokenError`] is shared with the SAML verifier: both reasons end up in a 401 and in the
//! audit trail, and never carry patient data.

pub mod jwks;
pub mod replay;

use super::claims::{ClaimSource, Claims};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::Validation;
use serde::Deserialize;

/// Requesting organisation, URA (OID 2.16.528.1.1007.3.3).
pub const CLAIM_URA: &str = "ura";
/// Professional, UZI number (OID 2.16.528.1.1007.3.1).
pub const CLAIM_UZI: &str = "uzi";
/// Role, RoleCodeNL code (OID 2.16.840.1.113883.2.4.15.111).
pub const CLAIM_ROLE: &str = "role";
/// Purpose of use (XSPA purposeofuse code, e.g. `TREAT`).
pub const CLAIM_PURPOSE: &str = "purpose_of_use";
/// Optional: the one patient (BSN) the token is bound to.
pub const CLAIM_BSN: &str = "bsn";

/// Clock leeway for `exp` / `nbf` (and the SAML validity window), seconds.
pub const LEEWAY_SECS: i64 = 30;

// The settings' types live in `config/trust.rs` (config imports no module it configures).
pub use crate::config::trust::{IssuerConfig, JwtConfig};

/// Why a token or assertion was refused (or a configuration not loaded). The texts are
/// short and carry no patient data: they go into a 401 and into the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("untrusted issuer")]
    UntrustedIssuer,
    #[error("algorithm not allowed: {0}")]
    Algorithm(String),
    #[error("bad signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("validity too long: {0}")]
    TooLong(String),
    #[error("wrong audience")]
    WrongAudience,
    #[error("token replayed")]
    Replayed,
    #[error("missing claim {0}")]
    MissingClaim(String),
    #[error("invalid claim {0}: {1}")]
    InvalidClaim(String, String),
    #[error("signature does not cover the assertion (wrapping)")]
    Wrapped,
    #[error("assertion not accepted from this gateway")]
    WrongGateway,
    #[error("{key}: {reason}")]
    Config { key: String, reason: String },
    #[error("cannot sign: {0}")]
    Signing(String),
}

/// A loaded trusted issuer.
#[derive(Debug)]
struct Issuer {
    issuer: String,
    audience: String,
    jwks: jwks::Jwks,
    /// `reusable`: no replay check for its tokens.
    reusable: bool,
}

/// Verifies bearer JWTs.
#[derive(Debug, Default)]
pub struct JwtVerifier {
    issuers: Vec<Issuer>,
    max_lifetime_secs: i64,
    replay: replay::ReplayCache,
}

/// The registered and Twiin claims read from a token; all optional here so that a missing
/// one gets its own reason.
#[derive(Debug, Deserialize)]
struct Payload {
    iss: Option<String>,
    sub: Option<String>,
    exp: Option<serde_json::Value>,
    jti: Option<serde_json::Value>,
    ura: Option<serde_json::Value>,
    uzi: Option<serde_json::Value>,
    role: Option<serde_json::Value>,
    purpose_of_use: Option<serde_json::Value>,
    bsn: Option<serde_json::Value>,
}

impl JwtVerifier {
    pub fn new(config: &JwtConfig) -> Result<JwtVerifier, TokenError> {
        if config.max_lifetime_secs <= 0 {
            return Err(TokenError::Config {
                key: "max_lifetime_secs".into(),
                reason: "must be positive".into(),
            });
        }
        let mut issuers = Vec::new();
        for (i, entry) in config.issuers.iter().enumerate() {
            if entry.issuer.trim().is_empty() {
                return Err(TokenError::Config {
                    key: format!("issuers[{i}].issuer"),
                    reason: "empty".into(),
                });
            }
            if entry.audience.trim().is_empty() {
                return Err(TokenError::Config {
                    key: format!("issuers[{i}].audience"),
                    reason: "empty".into(),
                });
            }
            if issuers.iter().any(|s: &Issuer| s.issuer == entry.issuer) {
                return Err(TokenError::Config {
                    key: format!("issuers[{i}].issuer"),
                    reason: format!("{:?} listed twice", entry.issuer),
                });
            }
            let jwks = jwks::Jwks::load(&entry.jwks_file, format!("issuers[{i}].jwks_file"))?;
            issuers.push(Issuer {
                issuer: entry.issuer.clone(),
                audience: entry.audience.clone(),
                jwks,
                reusable: entry.reusable,
            });
        }
        Ok(JwtVerifier {
            issuers,
            max_lifetime_secs: config.max_lifetime_secs,
            replay: replay::ReplayCache::default(),
        })
    }

    /// Whether any issuer is trusted (bearer JWTs are accepted at all).
    pub fn is_enabled(&self) -> bool {
        !self.issuers.is_empty()
    }

    /// Verify a bearer token (the part after `Authorization: Bearer `, RFC 6750 2.1).
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        self.verify_at(token, crate::clock::unix_seconds())
    }

    fn verify_at(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        let token = token.trim();
        if self.issuers.is_empty() {
            return Err(TokenError::Invalid("bearer JWTs are not accepted".into()));
        }
        if token.len() > 16 * 1024 {
            return Err(TokenError::Malformed("too long".into()));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| TokenError::Malformed("not a JWS compact serialization".into()))?;
        // The issuer decides which keys verify the token, so it is read (unverified) first
        // and checked against the signed claims by jsonwebtoken afterwards.
        let unverified: Payload = jsonwebtoken::dangerous::insecure_decode(token)
            .map_err(|_| TokenError::Malformed("unreadable claims".into()))?
            .claims;
        let iss = unverified
            .iss
            .as_deref()
            .ok_or_else(|| TokenError::MissingClaim("iss".into()))?;
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.issuer == iss)
            .ok_or(TokenError::UntrustedIssuer)?;

        // Algorithms from the key type only (RFC 8725 3.1): `none` and HS* never verify.
        let keys = issuer.jwks.keys();
        let candidates: Vec<&jwks::VerifyingKey> = keys
            .iter()
            // A `kid` (RFC 7515 4.1.4) picks the key; keys without one stay candidates.
            .filter(|k| match (&header.kid, &k.kid) {
                (Some(want), Some(have)) => want == have,
                _ => true,
            })
            .collect();
        if candidates.is_empty() {
            return Err(TokenError::BadSignature);
        }
        let allowed: Vec<&&jwks::VerifyingKey> = candidates
            .iter()
            .filter(|k| k.algorithms.contains(&header.alg))
            .collect();
        if allowed.is_empty() {
            return Err(TokenError::Algorithm(format!("{:?}", header.alg)));
        }

        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_SECS as u64;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.set_issuer(&[issuer.issuer.as_str()]);
        validation.set_audience(&[issuer.audience.as_str()]);

        let mut last = TokenError::BadSignature;
        let mut verified = None;
        for key in allowed {
            match jsonwebtoken::decode::<serde_json::Value>(token, &key.key, &validation) {
                Ok(data) => {
                    verified = Some(data.claims);
                    break;
                }
                Err(e) => {
                    last = map_error(e.kind());
                    if !matches!(last, TokenError::BadSignature) {
                        break;
                    }
                }
            }
        }
        let claims = verified.ok_or(last)?;
        let payload: Payload = serde_json::from_value(claims)
            .map_err(|_| TokenError::Malformed("unreadable claims".into()))?;
        self.claims(issuer, payload, now)
    }

    /// Whether the tokens of `issuer` may be presented again until they expire
    /// (`[[trust.jwt.issuers]] reusable`).
    pub fn reusable(&self, issuer: &str) -> bool {
        self.issuers
            .iter()
            .any(|i| i.issuer == issuer && i.reusable)
    }

    /// The Twiin claims of a verified payload, then the replay check (last, so a refused
    /// token does not use up its `jti`).
    fn claims(&self, issuer: &Issuer, p: Payload, now: i64) -> Result<Claims, TokenError> {
        let exp = p
            .exp
            .as_ref()
            .and_then(|v| v.as_f64())
            .ok_or_else(|| TokenError::MissingClaim("exp".into()))? as i64;
        if exp - now > self.max_lifetime_secs {
            return Err(TokenError::TooLong(format!(
                "exp more than {} s ahead",
                self.max_lifetime_secs
            )));
        }
        let jti = string_claim(&p.jti, "jti")?;
        if jti.len() > 256 {
            return Err(TokenError::InvalidClaim("jti".into(), "too long".into()));
        }
        let ura = string_claim(&p.ura, CLAIM_URA)?;
        check_identifier(&ura, CLAIM_URA)?;
        let uzi = string_claim(&p.uzi, CLAIM_UZI)?;
        check_identifier(&uzi, CLAIM_UZI)?;
        let role = string_claim(&p.role, CLAIM_ROLE)?;
        check_code(&role, CLAIM_ROLE)?;
        let purpose = string_claim(&p.purpose_of_use, CLAIM_PURPOSE)?;
        check_code(&purpose, CLAIM_PURPOSE)?;
        let bsn = match &p.bsn {
            None | Some(serde_json::Value::Null) => None,
            Some(_) => {
                let bsn = string_claim(&p.bsn, CLAIM_BSN)?;
                check_bsn(&bsn, CLAIM_BSN)?;
                Some(bsn)
            }
        };
        if !issuer.reusable
            && !self
                .replay
                .check_and_insert(&issuer.issuer, &jti, exp + LEEWAY_SECS, now)
        {
            return Err(TokenError::Replayed);
        }
        Ok(Claims {
            source: ClaimSource::Jwt,
            issuer: issuer.issuer.clone(),
            subject: p.sub.unwrap_or_else(|| uzi.clone()),
            organisation_ura: ura,
            professional_uzi: uzi,
            role,
            purpose_of_use: purpose,
            patient_bsn: bsn,
            token_id: jti,
            expires_at: exp,
        })
    }
}

fn map_error(kind: &ErrorKind) -> TokenError {
    match kind {
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_) => TokenError::BadSignature,
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidAudience => TokenError::WrongAudience,
        ErrorKind::InvalidIssuer => TokenError::UntrustedIssuer,
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
            TokenError::Algorithm("not allowed for this key".into())
        }
        ErrorKind::MissingRequiredClaim(c) => TokenError::MissingClaim(c.clone()),
        ErrorKind::InvalidClaimFormat(c) => TokenError::InvalidClaim(c.clone(), "format".into()),
        _ => TokenError::Malformed("cannot be decoded".into()),
    }
}

/// A required string claim (numbers are accepted for identifiers issued as JSON numbers).
fn string_claim(value: &Option<serde_json::Value>, name: &str) -> Result<String, TokenError> {
    match value {
        None | Some(serde_json::Value::Null) => Err(TokenError::MissingClaim(name.into())),
        Some(serde_json::Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        Some(serde_json::Value::Number(n)) if n.is_u64() => Ok(n.to_string()),
        Some(serde_json::Value::String(_)) => Err(TokenError::MissingClaim(name.into())),
        Some(_) => Err(TokenError::InvalidClaim(name.into(), "not a string".into())),
    }
}

/// URA and UZI numbers: digits only (the number, without its OID).
pub(crate) fn check_identifier(value: &str, name: &str) -> Result<(), TokenError> {
    if value.is_empty() || value.len() > 20 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TokenError::InvalidClaim(name.into(), "not a number".into()));
    }
    Ok(())
}

/// Codes (RoleCodeNL `01.015`, purpose `TREAT`): short, letters, digits, `.`, `-`, `_`.
pub(crate) fn check_code(value: &str, name: &str) -> Result<(), TokenError> {
    if value.is_empty()
        || value.len() > 64
        || !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(TokenError::InvalidClaim(name.into(), "not a code".into()));
    }
    Ok(())
}

/// A BSN: nine digits passing the 11-test. The reason never repeats the value.
pub(crate) fn check_bsn(value: &str, name: &str) -> Result<(), TokenError> {
    if !crate::trust::policy::is_bsn(value) {
        return Err(TokenError::InvalidClaim(
            name.into(),
            "not a valid BSN".into(),
        ));
    }
    Ok(())
}
