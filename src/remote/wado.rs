//! A fetch's instances by WADO-RS (PS3.18 10.4, RetrieveStudy / RetrieveSeries /
//! RetrieveInstance) from a peer gateway that offers DICOMweb (its participant entry's
//! `dicomweb_url`), where `[remote] prefer_wado_rs` allows it: instead of RAD-75, not
//! besides. The same mutual TLS identity as the SOAP calls; the same local user, as a fresh
//! XUA assertion bound to the patient in `Authorization: SAML <base64>` (what a beeldbrug
//! peer's DICOMweb front takes from a participant, next to a bearer JWT for its own users);
//! the exchange's correlation id and `traceparent`. The study is asked for as stored
//! (`transfer-syntax=*`, PS3.18 8.7.3.5.2), each `application/dicom` part of the
//! `multipart/related` answer (PS3.18 8.7.3.3.1) read into the cache fill as it arrives, as
//! RAD-75's parts are ([`super::Parts::read_part`]): bounded by `max_instance_bytes` and the
//! per-part timeout, stopped when the consumers leave, nothing of a broken part kept.

use super::*;

/// What the request asks for: every instance as stored (PS3.18 8.7.3.5.2, `*`).
const ACCEPT: &str = "multipart/related; type=\"application/dicom\"; transfer-syntax=*";

/// Longest error answer read for its message.
const ERROR_BODY_LIMIT: usize = 4 << 10;

impl RemoteSource {
    /// The instances of `documents` by WADO-RS from `base` (the peer's DICOMweb base URL):
    /// the study in one request when every instance of its manifest is asked for, else a request per series whose every instance is asked for and one
    /// per other instance. Each request carries an assertion of its own.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn read_by_wado_rs(
        &self,
        peer: &Participant,
        base: &str,
        claims: &Claims,
        correlation: &str,
        study: &RemoteStudy,
        documents: &[DocumentRequest],
        manifest: &[Referenced],
        classes: &HashMap<String, String>,
        sink: &Sink<'_>,
        report: &mut FetchReport,
    ) -> Result<(), RemoteError> {
        let whole_study = documents.len() == manifest.len();
        let resources = resources(&study.study_uid, documents, manifest, whole_study)?;
        let base = base.trim_end_matches('/');
        let parts = Parts {
            study_uid: &study.study_uid,
            classes,
            timeout: self.timeout,
            max_bytes: self.max_instance_bytes,
        };
        self.fill_cache(sink, report, |fill| async move {
            for resource in &resources {
                let url = format!("{base}{resource}");
                let assertion = self
                    .issuer
                    .issue(claims, Some(&peer.home_community_id))
                    .map_err(|e| {
                        RemoteError::Config(format!("cannot issue an XUA assertion: {e}"))
                    })?;
                let response = self
                    .client
                    .get_dicomweb(peer, &url, ACCEPT, &assertion, correlation)
                    .await?;
                let Some(mut multipart) = open(response, self.timeout).await? else {
                    // Nothing there (204, 404): counted as missing by the caller.
                    continue;
                };
                loop {
                    let next = tokio::select! {
                        _ = sink.cancel.cancelled() => return Err(RemoteError::Cancelled),
                        next = tokio::time::timeout(self.timeout, multipart.next_field()) => next
                            .map_err(|_| RemoteError::Timeout("the next instance did not arrive in time".into()))?
                            .map_err(|e| RemoteError::Malformed(format!("multipart: {e}")))?,
                    };
                    let Some(mut part) = next else { break };
                    let name = part
                        .headers()
                        .get("content-location")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or(resource)
                        .to_string();
                    parts
                        .read_part(&mut part, &name, &fill, sink.cancel, None)
                        .await?;
                }
            }
            Ok(())
        })
        .await
    }
}

/// The WADO-RS resources (paths below the base URL) that name exactly `documents`.
fn resources(
    study: &str,
    documents: &[DocumentRequest],
    manifest: &[Referenced],
    whole_study: bool,
) -> Result<Vec<String>, RemoteError> {
    // UIDs from another gateway's manifest go into a URL path: digits and dots only
    // (PS3.5 9.1).
    let checked = |uid: &str| -> Result<(), RemoteError> {
        let valid = !uid.is_empty()
            && uid.len() <= 64
            && uid.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        if valid {
            Ok(())
        } else {
            Err(RemoteError::Malformed(format!("{uid:?} is not a UID")))
        }
    };
    checked(study)?;
    if whole_study {
        return Ok(vec![format!("/studies/{study}")]);
    }
    let mut out = Vec::new();
    let mut series_done: Vec<&str> = Vec::new();
    for d in documents {
        checked(&d.series)?;
        checked(&d.document)?;
        if series_done.contains(&d.series.as_str()) {
            continue;
        }
        let in_series = manifest.iter().filter(|(s, _, _)| *s == d.series).count();
        let asked = documents.iter().filter(|o| o.series == d.series).count();
        if in_series > 0 && asked == in_series {
            series_done.push(&d.series);
            out.push(format!("/studies/{study}/series/{}", d.series));
        } else {
            out.push(format!(
                "/studies/{study}/series/{}/instances/{}",
                d.series, d.document
            ));
        }
    }
    Ok(out)
}

/// The `multipart/related` answer to read, or `None` when the peer has nothing there
/// (204 No Content, 404). Other answers are the request's failure, with what the peer
/// says (its first few KiB).
async fn open(
    response: hyper::Response<hyper::body::Incoming>,
    timeout: Duration,
) -> Result<Option<multer::Multipart<'static>>, RemoteError> {
    use http_body_util::BodyExt;
    let status = response.status();
    if status == hyper::StatusCode::NO_CONTENT || status == hyper::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    // 200, or 206 when the peer could send only some (PS3.18 10.4.3).
    if status == hyper::StatusCode::OK || status == hyper::StatusCode::PARTIAL_CONTENT {
        let content_type = response
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let Some((boundary, _)) = soap::mtom_params(&content_type)? else {
            return Err(RemoteError::Malformed(format!(
                "WADO-RS answered {content_type:?}, not multipart/related"
            )));
        };
        let stream = response.into_body().into_data_stream();
        return Ok(Some(multer::Multipart::new(stream, boundary)));
    }
    let read = async {
        let mut body = response.into_body();
        let mut said = Vec::new();
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            if let Some(data) = frame.data_ref() {
                said.extend_from_slice(data);
            }
            if said.len() >= ERROR_BODY_LIMIT {
                said.truncate(ERROR_BODY_LIMIT);
                break;
            }
        }
        String::from_utf8_lossy(&said).trim().to_string()
    };
    let said = tokio::time::timeout(timeout, read)
        .await
        .unwrap_or_default();
    let why = format!("WADO-RS: HTTP {status}: {said}");
    Err(match status.as_u16() {
        401 | 403 => RemoteError::Refused(why),
        502..=504 => RemoteError::Unreachable(why),
        _ => RemoteError::Fault(why),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(series: &str, sop: &str) -> DocumentRequest {
        DocumentRequest {
            home: "urn:oid:1.2".into(),
            repository: "1.2.3".into(),
            document: sop.into(),
            study: "1.9".into(),
            series: series.into(),
        }
    }

    #[test]
    fn the_fewest_resources_that_name_the_selection() {
        let manifest: Vec<Referenced> = [
            ("1.9.1", "1.9.1.1"),
            ("1.9.1", "1.9.1.2"),
            ("1.9.2", "1.9.2.1"),
        ]
        .iter()
        .map(|(s, i)| {
            (
                s.to_string(),
                "1.2.840.10008.5.1.4.1.1.2".to_string(),
                i.to_string(),
            )
        })
        .collect();
        let all: Vec<DocumentRequest> = manifest.iter().map(|(s, _, i)| doc(s, i)).collect();
        assert_eq!(
            resources("1.9", &all, &manifest, true).unwrap(),
            ["/studies/1.9"]
        );
        // A whole series and one instance of another.
        let some = [doc("1.9.2", "1.9.2.1"), doc("1.9.1", "1.9.1.2")];
        assert_eq!(
            resources("1.9", &some, &manifest, false).unwrap(),
            [
                "/studies/1.9/series/1.9.2",
                "/studies/1.9/series/1.9.1/instances/1.9.1.2"
            ]
        );
        // Something that is no UID never reaches a URL.
        let hostile = [doc("1.9.1", "../../admin")];
        assert!(matches!(
            resources("1.9", &hostile, &manifest, false),
            Err(RemoteError::Malformed(_))
        ));
        assert!(resources("1.9?x=1", &all, &manifest, true).is_err());
    }
}
