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
    /// DocumentEntry classCode of a study's KOS manifest (docs/xds.md "Codes": the defaults
    /// and where they come from).
    pub class_code: XdsCode,
    /// DocumentEntry typeCode of a KOS manifest.
    pub type_code: XdsCode,
    /// DocumentEntry confidentialityCode.
    pub confidentiality_code: XdsCode,
    /// DocumentEntry healthcareFacilityTypeCode.
    pub healthcare_facility_type_code: XdsCode,
    /// DocumentEntry practiceSettingCode.
    pub practice_setting_code: XdsCode,
    /// SubmissionSet contentTypeCode.
    pub content_type_code: XdsCode,
    /// Put the patient's name, birth date and sex in sourcePatientInfo (PID-5, -7, -8).
    /// Off by default: other communities identify the patient by BSN (PID-3, always there),
    /// and Twiin asks to release no more than needed (REFERENCE §2).
    pub publish_demographics: bool,
}

/// A coded XDS metadata value: code, coding scheme (OID) and display name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XdsCode {
    pub code: String,
    pub scheme: String,
    pub display: String,
}

impl XdsCode {
    fn new(code: &str, scheme: &str, display: &str) -> XdsCode {
        XdsCode {
            code: code.into(),
            scheme: scheme.into(),
            display: display.into(),
        }
    }
}

/// SNOMED CT, LOINC and HL7 v3 Confidentiality, as XDS coding schemes.
const SNOMED: &str = "2.16.840.1.113883.6.96";
const LOINC: &str = "2.16.840.1.113883.6.1";
const CONFIDENTIALITY: &str = "2.16.840.1.113883.5.25";

impl Default for XdsConfig {
    fn default() -> Self {
        XdsConfig {
            enabled: false,
            home_community_id: String::new(),
            repository_unique_id: String::new(),
            source_id: String::new(),
            quiet_secs: 300,
            organisation_name: String::new(),
            // Twiin afsprakenstelsel, BB "Metadata radiologisch verslag": classCode
            // 9491000146107 (SNOMED CT, imaging documentation) for imaging documents.
            class_code: XdsCode::new("9491000146107", SNOMED, "Imaging documentation"),
            // LOINC 18748-4, the XDS-I manifest's usual typeCode (no Dutch source found).
            type_code: XdsCode::new("18748-4", LOINC, "Diagnostic imaging study"),
            // HL7 v3 Confidentiality "N" (the Nictiz XDS metadata value set's default).
            confidentiality_code: XdsCode::new("N", CONFIDENTIALITY, "normal"),
            healthcare_facility_type_code: XdsCode::new("22232009", SNOMED, "Hospital"),
            practice_setting_code: XdsCode::new("394914008", SNOMED, "Radiology"),
            content_type_code: XdsCode::new("18748-4", LOINC, "Diagnostic imaging study"),
            publish_demographics: false,
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
        for (key, code) in [
            ("class_code", &self.class_code),
            ("type_code", &self.type_code),
            ("confidentiality_code", &self.confidentiality_code),
            (
                "healthcare_facility_type_code",
                &self.healthcare_facility_type_code,
            ),
            ("practice_setting_code", &self.practice_setting_code),
            ("content_type_code", &self.content_type_code),
        ] {
            if code.code.trim().is_empty() || !oid(&code.scheme) {
                return Err(invalid(key, "needs a code and an OID coding scheme"));
            }
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
            ..XdsConfig::default()
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
