//! The SOAP side of our calls to other gateways: the request envelope (SOAP 1.2,
//! WS-Addressing 1.0, our XUA assertion in `wsse:Security`: ITI TF-2b 3.40.4.1.2), the
//! request bodies (ITI-38 AdhocQueryRequest through [`crate::ebrim::response`], RAD-75
//! RetrieveImagingDocumentSetRequest, ITI-39 RetrieveDocumentSetRequest), and the answers:
//! read whole for a query, or as an MTOM/XOP stream for a retrieve ([`RetrieveAnswer`]:
//! the envelope first, then one part at a time, never the whole message in memory).

use super::RemoteError;
use crate::xml::{self, escape, Element};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::Response;
use std::collections::HashMap;
use std::fmt::Write;
use std::time::Duration;

pub const NS_SOAP12: &str = "http://www.w3.org/2003/05/soap-envelope";
pub const NS_WSA: &str = "http://www.w3.org/2005/08/addressing";
pub const NS_WSSE: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd";
pub const NS_XDSB: &str = "urn:ihe:iti:xds-b:2007";
pub const NS_XDSI: &str = "urn:ihe:rad:xdsi-b:2009";
pub const NS_RS: &str = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0";
pub const NS_XOP: &str = "http://www.w3.org/2004/08/xop/include";

/// ITI TF-2b 3.38.4.1.2: Cross Gateway Query.
pub const ACTION_ITI38: &str = "urn:ihe:iti:2007:CrossGatewayQuery";
/// RAD TF-3 4.75.4.1.2: Cross Gateway Retrieve Imaging Document Set.
pub const ACTION_RAD75: &str = "urn:ihe:rad:2011:CrossGatewayRetrieveImagingDocumentSet";
/// ITI TF-2b 3.39.4.1.2: Cross Gateway Retrieve.
pub const ACTION_ITI39: &str = "urn:ihe:iti:2007:CrossGatewayRetrieve";

/// Largest query answer or retrieve envelope read into memory.
const ENVELOPE_LIMIT: usize = 1 << 20;

/// A SOAP 1.2 request: WS-Addressing Action, MessageID, ReplyTo (anonymous), To; the
/// exchange's correlation id (`bb:CorrelationID`, not mustUnderstand: issue 17 item 2); the
/// XUA assertion (a signed `saml2:Assertion`, inserted as signed) in `wsse:Security`, or no
/// `wsse:Security` at all when `assertion` is empty (the self-test's refusal case).
pub fn envelope(
    action: &str,
    to: &str,
    correlation: Option<&str>,
    assertion: &str,
    body: &str,
) -> String {
    let assertion = strip_xml_declaration(assertion);
    let correlation = correlation
        .map(|c| {
            format!(
                "<bb:{el} xmlns:bb=\"{ns}\">{c}</bb:{el}>",
                el = crate::oplog::CORRELATION_ELEMENT,
                ns = crate::oplog::NS_CORRELATION,
                c = escape(c)
            )
        })
        .unwrap_or_default();
    let security = if assertion.is_empty() {
        String::new()
    } else {
        format!("<wsse:Security xmlns:wsse=\"{NS_WSSE}\">{assertion}</wsse:Security>")
    };
    format!(
        "<s:Envelope xmlns:s=\"{NS_SOAP12}\" xmlns:a=\"{NS_WSA}\"><s:Header>\
<a:Action s:mustUnderstand=\"1\">{action}</a:Action>\
<a:MessageID>urn:uuid:{id}</a:MessageID>\
<a:ReplyTo><a:Address>http://www.w3.org/2005/08/addressing/anonymous</a:Address></a:ReplyTo>\
<a:To>{to}</a:To>{correlation}{security}\
</s:Header><s:Body>{body}</s:Body></s:Envelope>",
        action = escape(action),
        id = crate::trust::consent::new_uuid(),
        to = escape(to),
    )
}

fn strip_xml_declaration(xml: &str) -> &str {
    let t = xml.trim_start();
    match t.strip_prefix("<?xml") {
        Some(rest) => rest
            .split_once("?>")
            .map_or(t, |(_, after)| after.trim_start()),
        None => t,
    }
}

/// One document to retrieve (RAD-75 groups them by study and series).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentRequest {
    pub home: String,
    pub repository: String,
    pub document: String,
    pub study: String,
    pub series: String,
}

/// The documents of one series in a request.
type SeriesGroup<'a> = (&'a str, Vec<&'a DocumentRequest>);

/// A RAD-75 `RetrieveImagingDocumentSetRequest` (RAD TF-3 4.69.4.1.2 / 4.75): documents
/// grouped by study and series, in `syntaxes`.
pub fn rad75_body(documents: &[DocumentRequest], syntaxes: &[&str]) -> String {
    let mut grouped: Vec<(&str, Vec<SeriesGroup>)> = Vec::new();
    for d in documents {
        let study = match grouped.iter_mut().find(|(s, _)| *s == d.study) {
            Some(s) => s,
            None => {
                grouped.push((&d.study, Vec::new()));
                grouped.last_mut().expect("pushed")
            }
        };
        match study.1.iter_mut().find(|(s, _)| *s == d.series) {
            Some(series) => series.1.push(d),
            None => study.1.push((&d.series, vec![d])),
        }
    }
    let mut out = format!(
        "<xdsi:RetrieveImagingDocumentSetRequest xmlns:xdsi=\"{NS_XDSI}\" xmlns:xdsb=\"{NS_XDSB}\">"
    );
    for (study, series) in grouped {
        let _ = write!(
            out,
            "<xdsi:StudyRequest studyInstanceUID=\"{}\">",
            escape(study)
        );
        for (series, docs) in series {
            let _ = write!(
                out,
                "<xdsi:SeriesRequest seriesInstanceUID=\"{}\">",
                escape(series)
            );
            for d in docs {
                document_request(&mut out, d);
            }
            out.push_str("</xdsi:SeriesRequest>");
        }
        out.push_str("</xdsi:StudyRequest>");
    }
    out.push_str("<xdsi:TransferSyntaxUIDList>");
    for ts in syntaxes {
        let _ = write!(
            out,
            "<xdsi:TransferSyntaxUID>{}</xdsi:TransferSyntaxUID>",
            escape(ts)
        );
    }
    out.push_str("</xdsi:TransferSyntaxUIDList></xdsi:RetrieveImagingDocumentSetRequest>");
    out
}

/// An ITI-39 `RetrieveDocumentSetRequest` (XDS.b) for documents by uniqueId.
pub fn iti39_body(documents: &[DocumentRequest]) -> String {
    let mut out = format!("<xdsb:RetrieveDocumentSetRequest xmlns:xdsb=\"{NS_XDSB}\">");
    for d in documents {
        document_request(&mut out, d);
    }
    out.push_str("</xdsb:RetrieveDocumentSetRequest>");
    out
}

fn document_request(out: &mut String, d: &DocumentRequest) {
    let _ = write!(
        out,
        "<xdsb:DocumentRequest><xdsb:HomeCommunityId>{}</xdsb:HomeCommunityId>\
<xdsb:RepositoryUniqueId>{}</xdsb:RepositoryUniqueId>\
<xdsb:DocumentUniqueId>{}</xdsb:DocumentUniqueId></xdsb:DocumentRequest>",
        escape(&d.home),
        escape(&d.repository),
        escape(&d.document)
    );
}

/// The Body's first element of a SOAP 1.2 envelope; a Fault is an error with its reason.
pub fn body_of(xml_bytes: &[u8]) -> Result<Element, RemoteError> {
    let root = xml::parse(xml_bytes).map_err(|e| RemoteError::Malformed(e.to_string()))?;
    if !root.is(NS_SOAP12, "Envelope") {
        return Err(RemoteError::Malformed(format!(
            "not a SOAP 1.2 envelope but {}",
            root.expanded_name()
        )));
    }
    let body = root
        .child(NS_SOAP12, "Body")
        .ok_or_else(|| RemoteError::Malformed("envelope without Body".into()))?;
    let first = body
        .children
        .first()
        .ok_or_else(|| RemoteError::Malformed("empty Body".into()))?;
    if first.is(NS_SOAP12, "Fault") {
        let reason = first
            .child(NS_SOAP12, "Reason")
            .and_then(|r| r.child(NS_SOAP12, "Text"))
            .map(|t| t.trimmed().to_string())
            .unwrap_or_default();
        return Err(RemoteError::Fault(reason));
    }
    Ok(first.clone())
}

fn content_type(response: &Response<Incoming>) -> String {
    response
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// `multipart/related` with its boundary and start, or `None` for a plain SOAP answer (or
/// any other media type).
pub(super) fn mtom_params(
    content_type: &str,
) -> Result<Option<(String, Option<String>)>, RemoteError> {
    let mut parts = content_type.split(';');
    let essence = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    if essence != "multipart/related" {
        return Ok(None);
    }
    let mut boundary = None;
    let mut start = None;
    for p in parts {
        if let Some((k, v)) = p.split_once('=') {
            let v = v.trim().trim_matches('"').to_string();
            match k.trim().to_ascii_lowercase().as_str() {
                "boundary" => boundary = Some(v),
                "start" => start = Some(strip_angle(&v)),
                _ => {}
            }
        }
    }
    let boundary = boundary
        .filter(|b| !b.is_empty() && b.len() <= 70)
        .ok_or_else(|| {
            RemoteError::Malformed("multipart/related without a valid boundary".into())
        })?;
    Ok(Some((boundary, start)))
}

fn strip_angle(id: &str) -> String {
    let id = id.trim();
    id.strip_prefix('<')
        .and_then(|i| i.strip_suffix('>'))
        .unwrap_or(id)
        .to_string()
}

/// A body read into memory up to `limit` bytes, within `timeout`.
async fn read_limited(
    body: Incoming,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, RemoteError> {
    let read = async {
        let mut stream = body.into_data_stream();
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| RemoteError::Unreachable(e.to_string()))?;
            if out.len() + chunk.len() > limit {
                return Err(RemoteError::Malformed(format!(
                    "answer larger than {limit} bytes"
                )));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(out))
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| RemoteError::Timeout("the answer did not arrive in time".into()))?
}

/// A query's answer read whole (plain SOAP or MTOM with only the root part): the Body's
/// first element.
pub async fn read_answer(
    response: Response<Incoming>,
    timeout: Duration,
) -> Result<Element, RemoteError> {
    let status = response.status();
    match mtom_params(&content_type(&response))? {
        None => {
            let bytes = read_limited(response.into_body(), ENVELOPE_LIMIT, timeout).await?;
            let body = body_of(&bytes);
            if !status.is_success() && body.is_ok() {
                return Err(RemoteError::Malformed(format!(
                    "HTTP {status} with a SOAP answer"
                )));
            }
            body
        }
        Some((boundary, start)) => {
            let stream = response.into_body().into_data_stream();
            let mut answer =
                tokio::time::timeout(timeout, MtomStream::open(stream, boundary, start))
                    .await
                    .map_err(|_| {
                        RemoteError::Timeout("the answer did not arrive in time".into())
                    })??;
            Ok(std::mem::take(&mut answer.body))
        }
    }
}

/// One DocumentResponse of a retrieve's envelope.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DocumentResponse {
    pub home: String,
    pub repository: String,
    pub document: String,
    pub mime_type: String,
}

/// A retrieve's MTOM answer being read: the envelope (status, errors, the documents by
/// Content-ID) once it is open, then the document parts one at a time.
pub struct MtomStream {
    /// The Body's first element (the RetrieveDocumentSetResponse).
    pub body: Element,
    multipart: multer::Multipart<'static>,
}

impl MtomStream {
    /// Read the envelope part of an MTOM body arriving as `stream`.
    pub async fn open<S, E>(
        stream: S,
        boundary: String,
        start: Option<String>,
    ) -> Result<MtomStream, RemoteError>
    where
        S: futures::Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        let mut multipart = multer::Multipart::new(stream, boundary);
        let mut root = multipart
            .next_field()
            .await
            .map_err(|e| RemoteError::Malformed(format!("MTOM: {e}")))?
            .ok_or_else(|| RemoteError::Malformed("MTOM answer without parts".into()))?;
        let id = content_id(root.headers());
        if start.is_some() && id != start {
            return Err(RemoteError::Malformed(
                "MTOM: the first part is not the start part".into(),
            ));
        }
        let mut xml = Vec::new();
        while let Some(chunk) = root
            .chunk()
            .await
            .map_err(|e| RemoteError::Malformed(format!("MTOM root part: {e}")))?
        {
            if xml.len() + chunk.len() > ENVELOPE_LIMIT {
                return Err(RemoteError::Malformed("MTOM root part too large".into()));
            }
            xml.extend_from_slice(&chunk);
        }
        drop(root);
        let body = body_of(&xml)?;
        Ok(MtomStream { body, multipart })
    }

    /// The next document part: its Content-ID and the part, to be read chunk by chunk.
    pub async fn next_part(
        &mut self,
    ) -> Result<Option<(String, multer::Field<'static>)>, RemoteError> {
        let Some(field) = self
            .multipart
            .next_field()
            .await
            .map_err(|e| RemoteError::Malformed(format!("MTOM: {e}")))?
        else {
            return Ok(None);
        };
        let id = content_id(field.headers())
            .ok_or_else(|| RemoteError::Malformed("MTOM part without Content-ID".into()))?;
        Ok(Some((id, field)))
    }

    /// The RegistryResponse status and errors, and the DocumentResponses by the Content-ID
    /// of their part.
    pub fn documents(&self) -> (String, Vec<String>, HashMap<String, DocumentResponse>) {
        let registry = self.body.child(NS_RS, "RegistryResponse");
        let status = registry
            .and_then(|r| r.attr("status"))
            .unwrap_or_default()
            .to_string();
        let errors = registry
            .and_then(|r| r.child(NS_RS, "RegistryErrorList"))
            .map(|l| {
                l.children_named(NS_RS, "RegistryError")
                    .map(|e| {
                        format!(
                            "{} {}: {}",
                            e.attr("errorCode").unwrap_or_default(),
                            e.attr("location").unwrap_or_default(),
                            e.attr("codeContext").unwrap_or_default()
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut documents = HashMap::new();
        for d in self.body.children_named(NS_XDSB, "DocumentResponse") {
            let text = |name: &str| {
                d.child(NS_XDSB, name)
                    .map(|e| e.trimmed().to_string())
                    .unwrap_or_default()
            };
            let href = d
                .child(NS_XDSB, "Document")
                .and_then(|doc| doc.child(NS_XOP, "Include"))
                .and_then(|inc| inc.attr("href"))
                .unwrap_or_default();
            let Some(cid) = href.strip_prefix("cid:") else {
                continue;
            };
            documents.insert(
                cid.to_string(),
                DocumentResponse {
                    home: text("HomeCommunityId"),
                    repository: text("RepositoryUniqueId"),
                    document: text("DocumentUniqueId"),
                    mime_type: text("mimeType"),
                },
            );
        }
        (status, errors, documents)
    }
}

fn content_id(headers: &hyper::HeaderMap) -> Option<String> {
    headers
        .get("content-id")
        .and_then(|v| v.to_str().ok())
        .map(strip_angle)
        .filter(|id| !id.is_empty())
}

/// Open a retrieve's answer as an MTOM stream (a plain SOAP answer is a Fault or an answer
/// without documents: read whole).
pub async fn open_retrieve(
    response: Response<Incoming>,
    timeout: Duration,
) -> Result<MtomStream, RemoteError> {
    match mtom_params(&content_type(&response))? {
        Some((boundary, start)) => {
            let stream = response.into_body().into_data_stream();
            tokio::time::timeout(timeout, MtomStream::open(stream, boundary, start))
                .await
                .map_err(|_| RemoteError::Timeout("the answer did not arrive in time".into()))?
        }
        None => {
            let bytes = read_limited(response.into_body(), ENVELOPE_LIMIT, timeout).await?;
            let body = body_of(&bytes)?;
            let empty = futures::stream::empty::<Result<Bytes, std::io::Error>>();
            Ok(MtomStream {
                body,
                multipart: multer::Multipart::new(empty, "none"),
            })
        }
    }
}

/// A retrieve's answer read whole already (`content_type` and `body`), opened as
/// [`open_retrieve`] opens a streamed one: for the qualification self-test.
pub async fn retrieve_from_bytes(
    content_type: &str,
    body: Bytes,
) -> Result<MtomStream, RemoteError> {
    match mtom_params(content_type)? {
        Some((boundary, start)) => {
            let stream = futures::stream::once(async move { Ok::<_, std::io::Error>(body) });
            MtomStream::open(stream, boundary, start).await
        }
        None => {
            let body = body_of(&body)?;
            let empty = futures::stream::empty::<Result<Bytes, std::io::Error>>();
            Ok(MtomStream {
                body,
                multipart: multer::Multipart::new(empty, "none"),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rad75_groups_documents_by_study_and_series() {
        let d = |series: &str, doc: &str| DocumentRequest {
            home: "urn:oid:1.2".into(),
            repository: "1.2.3".into(),
            document: doc.into(),
            study: "1.9".into(),
            series: series.into(),
        };
        let body = rad75_body(
            &[d("1.9.1", "a"), d("1.9.2", "b"), d("1.9.1", "c")],
            &["1.2.840.10008.1.2.1"],
        );
        let e = xml::parse(body.as_bytes()).unwrap();
        let study: Vec<_> = e.children_named(NS_XDSI, "StudyRequest").collect();
        assert_eq!(study.len(), 1);
        let series: Vec<_> = study[0].children_named(NS_XDSI, "SeriesRequest").collect();
        assert_eq!(series.len(), 2);
        assert_eq!(
            series[0].children_named(NS_XDSB, "DocumentRequest").count(),
            2
        );
    }

    #[test]
    fn the_assertion_goes_in_without_its_declaration() {
        let env = envelope(ACTION_ITI38, "https://x/xca/query", Some("urn:uuid:7"), "<?xml version=\"1.0\"?>\n<saml2:Assertion xmlns:saml2=\"urn:oasis:names:tc:SAML:2.0:assertion\"/>", "<b/>");
        let e = xml::parse(env.as_bytes()).unwrap();
        let security = e
            .child(NS_SOAP12, "Header")
            .unwrap()
            .child(NS_WSSE, "Security")
            .unwrap();
        assert_eq!(security.children[0].name, "Assertion");
        let header = e.child(NS_SOAP12, "Header").unwrap();
        let correlation = header
            .child(
                crate::oplog::NS_CORRELATION,
                crate::oplog::CORRELATION_ELEMENT,
            )
            .unwrap();
        assert_eq!(correlation.trimmed(), "urn:uuid:7");
    }

    const ENVELOPE: &str = "<e:Envelope xmlns:e=\"http://www.w3.org/2003/05/soap-envelope\"><e:Body>\
<b:RetrieveDocumentSetResponse xmlns:b=\"urn:ihe:iti:xds-b:2007\" xmlns:x=\"http://www.w3.org/2004/08/xop/include\">\
<rs:RegistryResponse xmlns:rs=\"urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0\" status=\"urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success\"/>\
<b:DocumentResponse><b:HomeCommunityId>urn:oid:1.2</b:HomeCommunityId><b:RepositoryUniqueId>1.2.3</b:RepositoryUniqueId>\
<b:DocumentUniqueId>1.2.3.4</b:DocumentUniqueId><b:mimeType>application/dicom</b:mimeType>\
<b:Document><x:Include href=\"cid:doc0\"/></b:Document></b:DocumentResponse>\
</b:RetrieveDocumentSetResponse></e:Body></e:Envelope>";

    /// An MTOM body in pieces of `size` bytes, as a network would deliver it.
    fn body(
        text: String,
        size: usize,
    ) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
        let bytes = Bytes::from(text);
        let pieces: Vec<Result<Bytes, std::io::Error>> = (0..bytes.len())
            .step_by(size)
            .map(|at| Ok(bytes.slice(at..(at + size).min(bytes.len()))))
            .collect();
        futures::stream::iter(pieces)
    }

    fn root() -> String {
        format!("--b1\r\nContent-Type: application/xop+xml; type=\"application/soap+xml\"\r\nContent-ID: <root>\r\n\r\n{ENVELOPE}\r\n")
    }

    async fn read_all(text: String) -> Result<Vec<(String, Vec<u8>)>, RemoteError> {
        let mut mtom = MtomStream::open(body(text, 7), "b1".into(), Some("root".into())).await?;
        let mut parts = Vec::new();
        while let Some((id, mut field)) = mtom.next_part().await? {
            let mut data = Vec::new();
            while let Some(chunk) = field
                .chunk()
                .await
                .map_err(|e| RemoteError::Malformed(e.to_string()))?
            {
                data.extend_from_slice(&chunk);
            }
            parts.push((id, data));
        }
        Ok(parts)
    }

    #[tokio::test]
    async fn an_mtom_answer_is_read_part_by_part() {
        let text = format!("{}--b1\r\nContent-Type: application/dicom\r\nContent-ID: <doc0>\r\n\r\nDICOMBYTES\r\n--b1--\r\n", root());
        let mut mtom = MtomStream::open(body(text.clone(), 5), "b1".into(), None)
            .await
            .unwrap();
        let (status, errors, documents) = mtom.documents();
        assert!(status.ends_with("Success") && errors.is_empty());
        assert_eq!(documents["doc0"].document, "1.2.3.4");
        assert!(mtom.next_part().await.unwrap().is_some());
        assert_eq!(
            read_all(text).await.unwrap(),
            [("doc0".to_string(), b"DICOMBYTES".to_vec())]
        );
    }

    /// Malformed or hostile answers are clean errors, never a panic or an endless read.
    #[tokio::test]
    async fn a_malformed_mtom_answer_is_a_clean_failure() {
        let cases = [
            // A boundary that is not the announced one: no part at all.
            "--other\r\nContent-ID: <root>\r\n\r\n<x/>\r\n--other--\r\n".to_string(),
            // A document part without Content-ID.
            format!(
                "{}--b1\r\nContent-Type: application/dicom\r\n\r\nDATA\r\n--b1--\r\n",
                root()
            ),
            // Cut off in the middle of a part (the peer went away).
            format!(
                "{}--b1\r\nContent-Type: application/dicom\r\nContent-ID: <doc0>\r\n\r\nDATA",
                root()
            ),
            // A root part that is no SOAP envelope.
            "--b1\r\nContent-ID: <root>\r\n\r\n<html>oops</html>\r\n--b1--\r\n".to_string(),
            // The start part is not first.
            format!(
                "--b1\r\nContent-ID: <doc0>\r\n\r\nDATA\r\n{}--b1--\r\n",
                root()
            ),
        ];
        for (i, case) in cases.into_iter().enumerate() {
            match read_all(case).await {
                Err(RemoteError::Malformed(_)) => {}
                other => panic!("case {i}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_fault_is_an_error_with_its_reason() {
        let fault = format!("<e:Envelope xmlns:e=\"{NS_SOAP12}\"><e:Body><e:Fault><e:Code><e:Value>e:Sender</e:Value></e:Code><e:Reason><e:Text>token expired</e:Text></e:Reason></e:Fault></e:Body></e:Envelope>");
        match body_of(fault.as_bytes()) {
            Err(RemoteError::Fault(r)) => assert_eq!(r, "token expired"),
            other => panic!("{other:?}"),
        }
    }
}
