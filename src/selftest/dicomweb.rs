//! DICOMweb basics (REFERENCE §5) where the peer has a DICOMweb URL: QIDO-RS `/studies` for
//! the test patient, and WADO-RS metadata of a study it finds (JSON, BulkDataURI rather than
//! inline pixel data). Mutual TLS with our identity and the test user's assertion as
//! `Authorization: SAML <base64>`; the correlation id as `X-Correlation-ID`.

use super::http;
use super::{Check, Requirement, Suite};
use std::time::Instant;

pub const QIDO: Requirement = Requirement {
    id: "qido.studies",
    text: "QIDO-RS /studies?PatientID=<test BSN> answers 200 with application/dicom+json (an array) or 204",
    reference: "REFERENCE §5 DICOMweb (QIDO-RS; JSON default); §1 (a gateway SHALL offer DICOMweb)",
};
pub const WADO: Requirement = Requirement {
    id: "wado.metadata",
    text: "WADO-RS /studies/{study}/metadata answers 200 with application/dicom+json, no inline pixel data",
    reference: "REFERENCE §5 DICOMweb (WADO-RS /metadata: BulkDataURI for large values, never inline pixel data)",
};

/// Pixel Data (7FE0,0010) in DICOM JSON.
const PIXEL_DATA: &str = "7FE00010";

async fn get(suite: &Suite, url: &str, correlation: &str) -> Result<http::Answer, String> {
    let (Some(ca), Some((cert, key))) = (&suite.ca, &suite.identity) else {
        return Err("no CA or client certificate configured".into());
    };
    let config = http::client_config(
        ca,
        &[],
        Some((cert, key)),
        &[&rustls::version::TLS13, &rustls::version::TLS12],
    )?;
    let assertion = suite.assertion()?;
    use base64::Engine;
    let headers = [
        ("accept", "application/dicom+json".to_string()),
        (
            "authorization",
            format!(
                "SAML {}",
                base64::engine::general_purpose::STANDARD.encode(assertion)
            ),
        ),
        (crate::oplog::CORRELATION_HEADER, correlation.to_string()),
    ];
    let (answer, _) = http::request(
        config,
        hyper::Method::GET,
        url,
        &headers,
        None,
        suite.options.timeout,
    )
    .await?;
    Ok(answer)
}

/// The QIDO-RS and WADO-RS checks.
pub async fn run(suite: &Suite) -> Vec<Check> {
    let Some(base) = suite
        .dicomweb_url
        .as_deref()
        .map(|u| u.trim_end_matches('/'))
    else {
        let why = "the peer has no DICOMweb URL (none on its participant entry, no --dicomweb-url)";
        return vec![Check::skip(&QIDO, why), Check::skip(&WADO, why)];
    };
    let mut checks = Vec::new();
    let started = Instant::now();
    let correlation = crate::oplog::new_correlation(None);
    let url = format!(
        "{base}/studies?PatientID={}&includefield=StudyInstanceUID",
        suite.options.bsn
    );
    let mut study = None;
    let check = match get(suite, &url, &correlation).await {
        Err(why) => Check::fail(&QIDO, why, started),
        Ok(answer) if answer.status == 204 => {
            Check::pass(&QIDO, "204 No Content: no study for the test BSN", started)
        }
        Ok(answer) if answer.status == 200 => {
            let json: Result<serde_json::Value, _> = serde_json::from_slice(&answer.body);
            match json {
                Ok(serde_json::Value::Array(items))
                    if answer.content_type().starts_with("application/dicom+json") =>
                {
                    study = items
                        .iter()
                        .find_map(|i| i["0020000D"]["Value"][0].as_str().map(str::to_string));
                    Check::pass(
                        &QIDO,
                        format!(
                            "200 {}: {} studies{}",
                            answer.content_type(),
                            items.len(),
                            study
                                .as_ref()
                                .map(|s| format!(" (first {s})"))
                                .unwrap_or_default()
                        ),
                        started,
                    )
                }
                _ => Check::fail(
                    &QIDO,
                    format!(
                        "200 {} but not a DICOM JSON array ({} bytes)",
                        answer.content_type(),
                        answer.body.len()
                    ),
                    started,
                ),
            }
        }
        Ok(answer) => Check::fail(
            &QIDO,
            format!(
                "HTTP {}: {}",
                answer.status,
                String::from_utf8_lossy(&answer.body[..answer.body.len().min(200)])
            ),
            started,
        ),
    };
    checks.push(check.correlated(&correlation));

    let Some(study) = study else {
        checks.push(Check::skip(
            &WADO,
            "QIDO-RS found no study of the test BSN to read metadata of",
        ));
        return checks;
    };
    let started = Instant::now();
    let correlation = crate::oplog::new_correlation(None);
    let url = format!("{base}/studies/{study}/metadata");
    let check = match get(suite, &url, &correlation).await {
        Err(why) => Check::fail(&WADO, why, started),
        Ok(answer) if answer.status == 200 => {
            match serde_json::from_slice::<serde_json::Value>(&answer.body) {
                Ok(serde_json::Value::Array(items)) if !items.is_empty() => {
                    let inline = items
                        .iter()
                        .filter(|i| i[PIXEL_DATA].get("InlineBinary").is_some())
                        .count();
                    if inline == 0 {
                        Check::pass(
                            &WADO,
                            format!(
                                "200 {}: metadata of {} instances, pixel data by BulkDataURI",
                                answer.content_type(),
                                items.len()
                            ),
                            started,
                        )
                    } else {
                        Check::fail(
                            &WADO,
                            format!(
                                "{inline} of {} instances carry inline pixel data",
                                items.len()
                            ),
                            started,
                        )
                    }
                }
                _ => Check::fail(
                    &WADO,
                    format!(
                        "200 {} but not a non-empty DICOM JSON array",
                        answer.content_type()
                    ),
                    started,
                ),
            }
        }
        Ok(answer) => Check::fail(&WADO, format!("HTTP {}", answer.status), started),
    };
    checks.push(check.correlated(&correlation));
    checks
}
