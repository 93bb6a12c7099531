//! OAuth 2.0 bearer JWTs (RFC 6750, RFC 7519) with jsonwebtoken: trusted issuers and their
//! JWKS, `aud`, `iss`, `exp`, `nbf`, `jti` replay protection and the required Twiin claims.

use super::claims::Claims;
use serde::{Deserialize, Serialize};

/// `[trust.jwt]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtConfig {
    /// Trusted issuers; empty: bearer JWTs are not accepted.
    pub issuers: Vec<IssuerConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// `iss` value.
    pub issuer: String,
    /// The issuer's JSON Web Key Set (RFC 7517), a file.
    pub jwks_file: std::path::PathBuf,
    /// Required `aud`.
    pub audience: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// Verifies bearer JWTs.
#[derive(Debug, Default)]
pub struct JwtVerifier {}

impl JwtVerifier {
    pub fn new(config: &JwtConfig) -> Result<JwtVerifier, TokenError> {
        let _ = config;
        Ok(JwtVerifier {})
    }

    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let _ = token;
        Err(TokenError::Invalid(
            "bearer JWTs are not accepted yet".into(),
        ))
    }
}
