//! MTOM/XOP response framing (SOAP MTOM, XOP 1.0, RFC 2387): the root part holds the SOAP
//! envelope (`application/xop+xml; type="application/soap+xml"`), each document one part of
//! its own named by Content-ID, which the envelope's `xop:Include` points at.

use bytes::Bytes;

/// Content-ID of the root part.
pub const ROOT_ID: &str = "root.message@beeldbrug";

/// The `Content-Type` of an MTOM answer with `boundary`.
pub fn content_type(boundary: &str) -> String {
    format!(
        "multipart/related; type=\"application/xop+xml\"; boundary={boundary}; \
         start=\"<{ROOT_ID}>\"; start-info=\"application/soap+xml\""
    )
}

/// The Content-ID of the `n`th document of an answer.
pub fn document_id(n: usize) -> String {
    format!("doc{n}@beeldbrug")
}

/// The root part: delimiter, headers and the envelope.
pub fn root_part(boundary: &str, envelope: &str) -> Bytes {
    Bytes::from(format!(
        "--{boundary}\r\nContent-Type: application/xop+xml; charset=UTF-8; type=\"application/soap+xml\"\r\n\
         Content-Transfer-Encoding: binary\r\nContent-ID: <{ROOT_ID}>\r\n\r\n{envelope}\r\n"
    ))
}

/// The delimiter and headers that open a document's part.
pub fn part_header(boundary: &str, content_id: &str, content_type: &str) -> Bytes {
    Bytes::from(format!(
        "--{boundary}\r\nContent-Type: {content_type}\r\nContent-Transfer-Encoding: binary\r\n\
         Content-ID: <{content_id}>\r\n\r\n"
    ))
}

/// The CRLF that ends a part's data.
pub fn part_end() -> &'static [u8] {
    b"\r\n"
}

/// The closing delimiter.
pub fn closing(boundary: &str) -> Bytes {
    Bytes::from(format!("--{boundary}--\r\n"))
}
