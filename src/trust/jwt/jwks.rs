//! One trusted issuer's JSON Web Key Set (RFC 7517 5), read from a file and read again when
//! the file changes (size or modification time), so a key rollover needs no restart.
//!
//! The algorithms a key may verify follow from its key type only (RFC 7518 3.1): RSA keys
//! RS*/PS*, EC P-256 ES256, EC P-384 ES384, OKP Ed25519 EdDSA. A JWK `alg` (RFC 7517 4.4)
//! narrows that to one. Symmetric (`oct`) keys are never loaded, so `none` and HS* can never
//! verify a token; keys whose `use` (RFC 7517 4.2) is not `sig` are skipped.

use super::TokenError;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// A verification key and the algorithms it may verify.
pub struct VerifyingKey {
    pub kid: Option<String>,
    pub key: DecodingKey,
    pub algorithms: Vec<Algorithm>,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("algorithms", &self.algorithms)
            .finish()
    }
}

/// The key set of one issuer file.
#[derive(Debug)]
pub struct Jwks {
    path: PathBuf,
    /// Config key named in errors (`issuers[N].jwks_file`).
    config_key: String,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    stamp: Option<(u64, Option<SystemTime>)>,
    keys: Arc<Vec<VerifyingKey>>,
}

impl Jwks {
    /// Load the file now: a missing or unusable file is a configuration error at start-up.
    pub fn load(path: &Path, config_key: String) -> Result<Jwks, TokenError> {
        let stamp = stamp(path);
        let keys = read_keys(path).map_err(|reason| TokenError::Config {
            key: config_key.clone(),
            reason,
        })?;
        if keys.is_empty() {
            return Err(TokenError::Config {
                key: config_key,
                reason: format!("{}: no usable signature keys", path.display()),
            });
        }
        Ok(Jwks {
            path: path.to_path_buf(),
            config_key,
            state: Mutex::new(State {
                stamp,
                keys: Arc::new(keys),
            }),
        })
    }

    /// The current keys, read again first when the file changed. A file that became
    /// unreadable or unusable keeps the previous keys (and says so in the log).
    pub fn keys(&self) -> Arc<Vec<VerifyingKey>> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = stamp(&self.path);
        if now.is_some() && now != state.stamp {
            match read_keys(&self.path) {
                Ok(keys) if !keys.is_empty() => {
                    tracing::info!(file = %self.path.display(), keys = keys.len(), "JWKS reloaded");
                    state.keys = Arc::new(keys);
                    state.stamp = now;
                }
                Ok(_) => tracing::warn!(
                    key = %self.config_key,
                    "JWKS changed but holds no usable keys; keeping the previous keys"
                ),
                Err(reason) => tracing::warn!(
                    key = %self.config_key,
                    %reason,
                    "JWKS changed but cannot be read; keeping the previous keys"
                ),
            }
        }
        state.keys.clone()
    }
}

fn stamp(path: &Path) -> Option<(u64, Option<SystemTime>)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()))
}

/// Read the usable verification keys of a JWKS file. Keys of an unsupported type are
/// skipped with a warning; a file that is not a JWKS is an error.
fn read_keys(path: &Path) -> Result<Vec<VerifyingKey>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
    let entries = value
        .get("keys")
        .and_then(|k| k.as_array())
        .ok_or_else(|| format!("{}: no \"keys\" array (RFC 7517 5)", path.display()))?;
    let mut keys = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        match verifying_key(entry) {
            Ok(key) => keys.push(key),
            Err(why) => tracing::warn!(file = %path.display(), key = i, %why, "JWK skipped"),
        }
    }
    Ok(keys)
}

/// One JWK as a verification key, with the algorithms its type allows.
fn verifying_key(entry: &serde_json::Value) -> Result<VerifyingKey, String> {
    if entry.get("kty").and_then(|k| k.as_str()) == Some("oct") {
        return Err("symmetric (oct) keys are not accepted".into());
    }
    let jwk: Jwk =
        serde_json::from_value(entry.clone()).map_err(|e| format!("not a supported JWK: {e}"))?;
    if let Some(usage) = &jwk.common.public_key_use {
        if *usage != PublicKeyUse::Signature {
            return Err("\"use\" is not \"sig\"".into());
        }
    }
    let by_type: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => vec![
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => return Err("unsupported EC curve".into()),
        },
        AlgorithmParameters::OctetKeyPair(okp) => match okp.curve {
            EllipticCurve::Ed25519 => vec![Algorithm::EdDSA],
            _ => return Err("unsupported OKP curve".into()),
        },
        AlgorithmParameters::OctetKey(_) => {
            return Err("symmetric (oct) keys are not accepted".into())
        }
    };
    let algorithms = match entry.get("alg").and_then(|a| a.as_str()) {
        None => by_type,
        Some(alg) => {
            let alg: Algorithm = alg
                .parse()
                .map_err(|_| format!("unknown \"alg\" {alg:?}"))?;
            if !by_type.contains(&alg) {
                return Err(format!("\"alg\" {alg:?} does not fit the key type"));
            }
            vec![alg]
        }
    };
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("unusable key: {e}"))?;
    Ok(VerifyingKey {
        kid: jwk.common.key_id.clone(),
        key,
        algorithms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithms_follow_key_type() {
        let ec = serde_json::json!({"kty":"EC","crv":"P-256",
            "x":"WKn-ZIGevcwGIyyrzFoZNBdaq9_TsqzGl96oc0CWuis",
            "y":"y77t-RvAHRKTsSGdIYUfweuOvwrvDD-Q3Hv5J0fSKbE","kid":"a"});
        let key = verifying_key(&ec).unwrap();
        assert_eq!(key.algorithms, vec![Algorithm::ES256]);
        let mut wrong = ec.clone();
        wrong["alg"] = "RS256".into();
        assert!(verifying_key(&wrong).is_err());
        let mut hs = ec.clone();
        hs["alg"] = "HS256".into();
        assert!(verifying_key(&hs).is_err());
        let oct = serde_json::json!({"kty":"oct","k":"c2VjcmV0"});
        assert!(verifying_key(&oct).is_err());
        let mut enc = ec;
        enc["use"] = "enc".into();
        assert!(verifying_key(&enc).is_err());
    }
}
