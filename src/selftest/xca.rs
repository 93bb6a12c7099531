//! The cross-gateway SOAP checks (REFERENCE §1, §2): XUA refusals, then ITI-38 FindDocuments,
//! ITI-39 of the manifest and RAD-75 of an instance for the fictitious test BSN, over mutual
//! TLS with our identity, each request with a correlation id.

use super::http::{self, find_documents_body, Answer};
use super::{Check, Requirement, Suite};
use crate::remote::soap::{self, DocumentRequest};
use crate::remote::studies::{read_manifest, RemoteStudy};
use crate::remote::RemoteError;
use std::time::Instant;

pub const NO_ASSERTION: Requirement = Requirement {
    id: "xua.missing",
    text: "ITI-38 without an XUA assertion in wsse:Security is refused with a SOAP Fault",
    reference:
        "REFERENCE §2 Trust (XUA: reject a missing assertion); §1 (ITI-40 on every inter-GtK call)",
};
pub const EXPIRED: Requirement = Requirement {
    id: "xua.expired",
    text: "ITI-38 with an expired (otherwise valid, signed) assertion is refused with a SOAP Fault",
    reference: "REFERENCE §2 Trust (XUA: valid at most 10 minutes; reject an expired assertion)",
};
pub const UNSIGNED: Requirement = Requirement {
    id: "xua.unsigned",
    text: "ITI-38 with an assertion without its signature is refused with a SOAP Fault",
    reference: "REFERENCE §2 Trust (XUA: signed; reject an unsigned assertion)",
};
pub const BAD_SIGNATURE: Requirement = Requirement {
    id: "xua.bad-signature",
    text: "ITI-38 with an assertion changed after signing (a bad signature) is refused with a SOAP Fault",
    reference: "REFERENCE §2 Trust (XUA: reject a badly signed assertion)",
};
pub const ITI38: Requirement = Requirement {
    id: "iti38.find-documents",
    text: "ITI-38 Cross Gateway Query FindDocuments for a fictitious test BSN (valid assertion) gets a well-formed AdhocQueryResponse",
    reference: "REFERENCE §1 Exchange between gateways (ITI-38, SOAP 1.2, synchronous); §2 (identifiers: test patients use fictitious BSNs)",
};
pub const ITI39: Requirement = Requirement {
    id: "iti39.manifest",
    text: "ITI-39 Cross Gateway Retrieve of the KOS manifest ITI-38 found returns it (MTOM/XOP, a KOS naming the study's instances)",
    reference: "REFERENCE §1 Exchange between gateways (RAD-75 preceded by ITI-38 to find the KOS manifest); §3 (KOS manifest)",
};
pub const RAD75: Requirement = Requirement {
    id: "rad75.retrieve",
    text: "RAD-75 Cross Gateway Retrieve Imaging Document Set returns a requested instance as application/dicom (or, for an unknown one, a RegistryError, not a Fault)",
    reference: "REFERENCE §1 Exchange between gateways (RAD-75; XDSMissingDocument with Location = SOP Instance UID)",
};

/// An assertion without its `ds:Signature`.
fn unsigned(assertion: &str) -> Option<String> {
    let start = assertion.find("<ds:Signature")?;
    let end = assertion.find("</ds:Signature>")? + "</ds:Signature>".len();
    Some(format!("{}{}", &assertion[..start], &assertion[end..]))
}

/// A signed assertion with the professional's UZI number changed after signing.
fn tampered(assertion: &str, uzi: &str) -> Option<String> {
    let from = format!("extension=\"{uzi}\"");
    let other = if uzi == "999999999" {
        "999999998"
    } else {
        "999999999"
    };
    assertion
        .contains(&from)
        .then(|| assertion.replacen(&from, &format!("extension=\"{other}\""), 1))
}

/// What a SOAP call got.
enum Soap {
    Fault(String),
    Answer(Answer),
}

/// POST `envelope` to `url` over mutual TLS: a Fault, or the answer.
async fn post(
    suite: &Suite,
    url: &str,
    action: &str,
    correlation: &str,
    assertion: &str,
    body: &str,
) -> Result<Soap, String> {
    let (Some(ca), Some((cert, key))) = (&suite.ca, &suite.identity) else {
        return Err("no CA or client certificate configured".into());
    };
    let config = http::client_config(
        ca,
        &[],
        Some((cert, key)),
        &[&rustls::version::TLS13, &rustls::version::TLS12],
    )?;
    let envelope = soap::envelope(action, url, Some(correlation), assertion, body);
    let (answer, _) = http::request(
        config,
        hyper::Method::POST,
        url,
        &http::soap_headers(action, Some(correlation)),
        Some(envelope),
        suite.options.timeout,
    )
    .await?;
    if !answer.content_type().starts_with("multipart/") {
        if let Err(RemoteError::Fault(reason)) = soap::body_of(&answer.body) {
            return Ok(Soap::Fault(format!("HTTP {}: {reason}", answer.status)));
        }
    }
    Ok(Soap::Answer(answer))
}

fn snippet(answer: &Answer) -> String {
    let text = String::from_utf8_lossy(&answer.body[..answer.body.len().min(300)]).into_owned();
    format!(
        "HTTP {} {}: {}",
        answer.status,
        answer.content_type(),
        text.trim()
    )
}

/// One refusal case: an ITI-38 that must end in a SOAP Fault.
async fn refusal(
    suite: &Suite,
    requirement: &Requirement,
    assertion: Result<String, String>,
) -> Check {
    let started = Instant::now();
    let correlation = crate::oplog::new_correlation(None);
    let assertion = match assertion {
        Ok(a) => a,
        Err(why) => return Check::skip(requirement, why),
    };
    let result = post(
        suite,
        &suite.query_url,
        soap::ACTION_ITI38,
        &correlation,
        &assertion,
        &find_documents_body(&suite.options.bsn),
    )
    .await;
    let check = match result {
        Ok(Soap::Fault(reason)) => {
            Check::pass(requirement, format!("SOAP Fault: {reason}"), started)
        }
        Ok(Soap::Answer(answer)) => Check::fail(
            requirement,
            format!("accepted: answered without a Fault ({})", snippet(&answer)),
            started,
        ),
        Err(why) => Check::fail(
            requirement,
            format!("no SOAP answer at all ({why}): a refusal must be a SOAP Fault"),
            started,
        ),
    };
    check.correlated(&correlation)
}

/// The parts of a retrieve answer: (status, errors, the first part's bytes).
async fn retrieve_parts(answer: Answer) -> Result<(String, Vec<String>, Option<Vec<u8>>), String> {
    let mut mtom = soap::retrieve_from_bytes(&answer.content_type(), answer.body)
        .await
        .map_err(|e| e.to_string())?;
    let (status, errors, _) = mtom.documents();
    let mut first = None;
    if let Some((_, mut part)) = mtom.next_part().await.map_err(|e| e.to_string())? {
        let mut bytes = Vec::new();
        while let Some(chunk) = part.chunk().await.map_err(|e| e.to_string())? {
            bytes.extend_from_slice(&chunk);
        }
        first = Some(bytes);
    }
    Ok((status, errors, first))
}

/// Every SOAP check.
pub async fn run(suite: &Suite) -> Vec<Check> {
    let mut checks = Vec::new();
    let now = crate::clock::unix_seconds();
    checks.push(refusal(suite, &NO_ASSERTION, Ok(String::new())).await);
    // Issued an hour ago: its NotOnOrAfter (at most 10 minutes later) has passed.
    checks.push(refusal(suite, &EXPIRED, suite.assertion_at(now - 3600)).await);
    let signed = suite.assertion();
    let strip = signed.clone().and_then(|a| {
        unsigned(&a).ok_or_else(|| "the assertion has no ds:Signature to remove".to_string())
    });
    checks.push(refusal(suite, &UNSIGNED, strip).await);
    let changed = signed.and_then(|a| {
        tampered(&a, &suite.options.uzi)
            .ok_or_else(|| "the assertion does not name the test UZI".to_string())
    });
    checks.push(refusal(suite, &BAD_SIGNATURE, changed).await);

    // ITI-38 FindDocuments for the test patient.
    let started = Instant::now();
    let correlation = crate::oplog::new_correlation(None);
    let mut found: Option<RemoteStudy> = None;
    let check = match suite.assertion() {
        Err(why) => Check::fail(&ITI38, why, started),
        Ok(assertion) => {
            let result = post(
                suite,
                &suite.query_url,
                soap::ACTION_ITI38,
                &correlation,
                &assertion,
                &find_documents_body(&suite.options.bsn),
            )
            .await;
            match result {
                Err(why) => Check::fail(&ITI38, why, started),
                Ok(Soap::Fault(reason)) => {
                    Check::fail(&ITI38, format!("SOAP Fault: {reason}"), started)
                }
                Ok(Soap::Answer(answer)) => {
                    let read = soap::body_of(&answer.body)
                        .map_err(|e| e.to_string())
                        .and_then(|e| {
                            crate::ebrim::response::adhoc_query_response(&e)
                                .map_err(|e| e.to_string())
                        });
                    match read {
                        Err(why) => Check::fail(
                            &ITI38,
                            format!("not an AdhocQueryResponse: {why} ({})", snippet(&answer)),
                            started,
                        ),
                        Ok(response)
                            if response.status == crate::ebrim::ResponseStatus::Failure =>
                        {
                            Check::fail(
                                &ITI38,
                                format!(
                                    "status Failure: {}",
                                    response
                                        .errors
                                        .iter()
                                        .map(|e| format!("{} {}", e.code, e.context))
                                        .collect::<Vec<_>>()
                                        .join("; ")
                                ),
                                started,
                            )
                        }
                        Ok(response) => {
                            let home = response.home.clone();
                            let studies: Vec<RemoteStudy> = response
                                .objects
                                .iter()
                                .filter_map(|o| RemoteStudy::from_entry(o, "peer", home.as_deref()))
                                .collect();
                            found = studies.first().cloned();
                            Check::pass(
                                &ITI38,
                                format!(
                                    "{:?}, {} registry objects, {} KOS manifests for BSN {}{}",
                                    response.status,
                                    response.objects.len(),
                                    studies.len(),
                                    suite.options.bsn,
                                    found
                                        .as_ref()
                                        .map(|s| format!(
                                            " (study {}, home {})",
                                            s.study_uid, s.home
                                        ))
                                        .unwrap_or_default()
                                ),
                                started,
                            )
                        }
                    }
                }
            }
        }
    };
    checks.push(check.correlated(&correlation));

    // ITI-39 of the manifest, then RAD-75 of its first instance.
    let started = Instant::now();
    let correlation = crate::oplog::new_correlation(None);
    let mut referenced = None;
    let check = match &found {
        None => Check::skip(
            &ITI39,
            format!(
                "the peer has no KOS manifest for the test BSN {}: nothing to retrieve (RAD-75 is asked for an unknown document instead)",
                suite.options.bsn
            ),
        ),
        Some(study) => {
            let body = soap::iti39_body(&[DocumentRequest {
                home: study.home.clone(),
                repository: study.repository.clone(),
                document: study.manifest.clone(),
                study: study.study_uid.clone(),
                series: String::new(),
            }]);
            let result = match suite.assertion() {
                Ok(a) => {
                    post(suite, &suite.retrieve_url, soap::ACTION_ITI39, &correlation, &a, &body)
                        .await
                }
                Err(e) => Err(e),
            };
            match result {
                Err(why) => Check::fail(&ITI39, why, started),
                Ok(Soap::Fault(reason)) => {
                    Check::fail(&ITI39, format!("SOAP Fault: {reason}"), started)
                }
                Ok(Soap::Answer(answer)) => match retrieve_parts(answer).await {
                    Err(why) => Check::fail(&ITI39, format!("malformed answer: {why}"), started),
                    Ok((status, errors, None)) => Check::fail(
                        &ITI39,
                        format!("no document: {status} {}", errors.join("; ")),
                        started,
                    ),
                    Ok((_, _, Some(bytes))) => match read_manifest(&bytes, &study.study_uid) {
                        Ok(list) if !list.is_empty() => {
                            let n = list.len();
                            referenced = list.into_iter().next();
                            Check::pass(
                                &ITI39,
                                format!(
                                    "manifest {} ({} bytes) names {n} instances of study {}",
                                    study.manifest,
                                    bytes.len(),
                                    study.study_uid
                                ),
                                started,
                            )
                        }
                        Ok(_) => Check::fail(&ITI39, "the manifest names no instance", started),
                        Err(why) => Check::fail(&ITI39, format!("not a KOS: {why}"), started),
                    },
                },
            }
        }
    };
    checks.push(if found.is_some() {
        check.correlated(&correlation)
    } else {
        check
    });

    let started = Instant::now();
    let correlation = crate::oplog::new_correlation(None);
    let (document, expect_instance) = match (&found, &referenced) {
        (Some(study), Some((series, _, sop))) => (
            DocumentRequest {
                home: study.home.clone(),
                repository: study.repository.clone(),
                document: sop.clone(),
                study: study.study_uid.clone(),
                series: series.clone(),
            },
            true,
        ),
        (Some(_), None) => {
            checks.push(Check::skip(
                &RAD75,
                "no instance from the manifest to ask for",
            ));
            return checks;
        }
        (None, _) => (
            DocumentRequest {
                home: suite
                    .participant
                    .as_ref()
                    .map(|p| p.home_community_id.clone())
                    .unwrap_or_else(|| "urn:oid:2.25.0".into()),
                repository: "2.25.1".into(),
                document: "2.25.329800735698586629295641978511506172918".into(),
                study: "2.25.329800735698586629295641978511506172919".into(),
                series: "2.25.329800735698586629295641978511506172920".into(),
            },
            false,
        ),
    };
    let body = soap::rad75_body(std::slice::from_ref(&document), crate::remote::SYNTAXES);
    let result = match suite.assertion() {
        Ok(a) => {
            post(
                suite,
                &suite.retrieve_url,
                soap::ACTION_RAD75,
                &correlation,
                &a,
                &body,
            )
            .await
        }
        Err(e) => Err(e),
    };
    let check = match result {
        Err(why) => Check::fail(&RAD75, why, started),
        Ok(Soap::Fault(reason)) => Check::fail(&RAD75, format!("SOAP Fault: {reason}"), started),
        Ok(Soap::Answer(answer)) => match retrieve_parts(answer).await {
            Err(why) => Check::fail(&RAD75, format!("malformed answer: {why}"), started),
            Ok((status, errors, Some(bytes))) if expect_instance => {
                let is_dicom = bytes.get(128..132) == Some(b"DICM".as_slice());
                let names_it = bytes
                    .windows(document.document.len())
                    .any(|w| w == document.document.as_bytes());
                if is_dicom && names_it {
                    Check::pass(
                        &RAD75,
                        format!(
                            "instance {} ({} bytes, DICOM Part 10); {status}",
                            document.document,
                            bytes.len()
                        ),
                        started,
                    )
                } else {
                    Check::fail(
                        &RAD75,
                        format!(
                            "the part is not the instance asked for (Part 10: {is_dicom}, names {}: {names_it}); {status} {}",
                            document.document,
                            errors.join("; ")
                        ),
                        started,
                    )
                }
            }
            Ok((status, errors, None)) if expect_instance => Check::fail(
                &RAD75,
                format!("no instance: {status} {}", errors.join("; ")),
                started,
            ),
            Ok((status, errors, part)) => {
                if part.is_none() && !errors.is_empty() {
                    Check::pass(
                        &RAD75,
                        format!("unknown document: {status}, {}", errors.join("; ")),
                        started,
                    )
                } else {
                    Check::fail(
                        &RAD75,
                        format!(
                            "an unknown document was answered {status} without a RegistryError{}",
                            if part.is_some() { ", with a part" } else { "" }
                        ),
                        started,
                    )
                }
            }
        },
    };
    checks.push(check.correlated(&correlation));
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assertions_are_stripped_and_tampered() {
        let a = "<saml2:Assertion><saml2:Issuer>x</saml2:Issuer><ds:Signature xmlns:ds=\"d\"><ds:SignedInfo/></ds:Signature><hl7:id extension=\"900012345\"/></saml2:Assertion>";
        let u = unsigned(a).unwrap();
        assert!(!u.contains("Signature") && u.contains("900012345"));
        let t = tampered(a, "900012345").unwrap();
        assert!(t.contains("extension=\"999999999\"") && t.contains("ds:Signature"));
        assert_eq!(tampered(a, "1"), None);
    }
}
