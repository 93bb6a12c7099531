//! `[xds]`: publishing studies in the XDS-I registry and answering other gateways over
//! IHE XCA-I (ITI-18/38, RAD-69/75, ITI-39/43, WADO-WS). Off unless `enabled`.

use super::ConfigError;
use serde::{Deserialize, Serialize};

/// `[xds]`: the identities this gateway publishes and answers under.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct XdsConfig {
    /// Publish studies and serve the SOAP endpoints (`/xds/*`, `/xca/*`, `/wado-ws`).
    pub enabled: bool,
    /// Our community, `urn:oid:<oid>` (ITI TF-3 4.2.3.2.12 homeCommunityId).
    pub home_community_id: String,
    /// The repository's OID, also the KOS Retrieve Location UID (RAD TF-3 4.68).
    pub repository_unique_id: String,
    /// The Document Source's OID, the SubmissionSet's sourceId (ITI TF-3 4.2.3.3.9).
    pub source_id: String,
    /// A study is complete, and published, after this many seconds without a new instance.
    pub quiet_secs: u64,
    /// The organisation's name in authorInstitution (its URA is `trust.own_ura`).
    pub organisation_name: String,
}

impl Default for XdsConfig {
    fn default() -> Self {
        XdsConfig {
            enabled: false,
            home_community_id: String::new(),
            repository_unique_id: String::new(),
            source_id: String::new(),
            quiet_secs: 300,
            organisation_name: String::new(),
        }
    }
}

impl XdsConfig {
    /// When enabled, the identities must be set: an entry without them cannot be found or
    /// retrieved by another community.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.enabled {
            return Ok(());
        }
        let invalid = |key: &str, problem: &str| ConfigError::Invalid {
            key: format!("xds.{key}"),
            problem: problem.into(),
        };
        let oid = |s: &str| {
            !s.is_empty()
                && s.split('.')
                    .all(|arc| !arc.is_empty() && arc.bytes().all(|b| b.is_ascii_digit()))
        };
        match self.home_community_id.strip_prefix("urn:oid:") {
            Some(rest) if oid(rest) => {}
            _ => return Err(invalid("home_community_id", "must be urn:oid:<oid>")),
        }
        if !oid(&self.repository_unique_id) {
            return Err(invalid("repository_unique_id", "must be an OID"));
        }
        if !oid(&self.source_id) {
            return Err(invalid("source_id", "must be an OID"));
        }
        if self.organisation_name.trim().is_empty() {
            return Err(invalid("organisation_name", "must be set"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enabled() -> XdsConfig {
        XdsConfig {
            enabled: true,
            home_community_id: "urn:oid:1.2.3".into(),
            repository_unique_id: "1.2.3.4".into(),
            source_id: "1.2.3.5".into(),
            quiet_secs: 1,
            organisation_name: "Ziekenhuis".into(),
        }
    }

    #[test]
    fn disabled_needs_nothing_and_enabled_needs_identities() {
        assert!(XdsConfig::default().validate().is_ok());
        assert!(enabled().validate().is_ok());
        let mut c = enabled();
        c.home_community_id = "1.2.3".into();
        assert!(c.validate().is_err());
        let mut c = enabled();
        c.repository_unique_id = "1..2".into();
        assert!(c.validate().is_err());
        let mut c = enabled();
        c.organisation_name = " ".into();
        assert!(c.validate().is_err());
    }
}
