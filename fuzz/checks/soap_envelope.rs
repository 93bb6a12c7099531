// Checks of the `soap_envelope` fuzz target, shared by `fuzz/fuzz_targets/soap_envelope.rs`
// and the corpus replay in `tests/fuzz_corpus.rs` (both `include!` this file).

use beeldbrug::xds::envelope::{read, MAX_PARTS};
use beeldbrug::xds::{fault, retrieve, NS_SOAP12, NS_XDSB, NS_XDSI, NS_XOP};
use bytes::Bytes;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

/// The SOAP front's reader on arbitrary bytes. The first line (up to `\n`, a trailing `\r`
/// dropped) is the `Content-Type` header value, the rest the HTTP body:
/// 1. `xds::envelope::read` never panics or hangs;
/// 2. on `Ok`: an action is named, the Body's one element is there, an MTOM request has at most
///    `MAX_PARTS` parts and every `xop:Include` names one of them, a kept assertion is a
///    SAML Assertion document of its own; the retrieve readers on the body never panic and
///    keep to `MAX_DOCUMENTS`;
/// 3. on `Err`: the Fault answered is a well-formed SOAP 1.2 envelope that relates to the
///    request's MessageID when one was read.
///
/// Returns whether the input was read as a request.
pub fn check_envelope(data: &[u8]) -> bool {
    let (line, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let content_type = std::str::from_utf8(line).ok();
    match block_on(read(content_type, Bytes::copy_from_slice(body))) {
        Ok(envelope) => {
            assert!(!envelope.action.is_empty(), "no action");
            assert!(!envelope.body.name.is_empty());
            assert!(envelope.attachments.len() <= MAX_PARTS);
            for include in envelope.body.descendants().filter(|e| e.is(NS_XOP, "Include")) {
                let href = include.attr("href").expect("checked href");
                assert!(href.starts_with("cid:"), "{href}");
                assert!(envelope.mtom, "xop:Include outside MTOM");
            }
            if let Some(assertion) = &envelope.assertion {
                let root = beeldbrug::xml::parse_with(
                    assertion.as_bytes(),
                    &beeldbrug::xds::envelope::LIMITS,
                )
                .expect("a kept assertion parses on its own");
                assert!(root.is(beeldbrug::trust::saml::NS_SAML, "Assertion"));
            }
            if envelope.body.is(NS_XDSI, "RetrieveImagingDocumentSetRequest") {
                if let Ok(r) = retrieve::read_imaging(&envelope.body) {
                    assert!(!r.documents.is_empty() && r.documents.len() <= retrieve::MAX_DOCUMENTS);
                    assert!(r.syntaxes.is_some_and(|s| !s.is_empty()));
                }
            }
            if envelope.body.is(NS_XDSB, "RetrieveDocumentSetRequest") {
                if let Ok(r) = retrieve::read_documents(&envelope.body) {
                    assert!(!r.documents.is_empty() && r.documents.len() <= retrieve::MAX_DOCUMENTS);
                }
            }
            true
        }
        Err((error, message_id)) => {
            let xml = fault::envelope(&error, message_id.as_deref());
            let root = beeldbrug::xml::parse(xml.as_bytes()).expect("the Fault is well-formed");
            assert!(root.is(NS_SOAP12, "Envelope"));
            if let Some(id) = &message_id {
                let relates = root
                    .child(NS_SOAP12, "Header")
                    .and_then(|h| h.child("http://www.w3.org/2005/08/addressing", "RelatesTo"))
                    .expect("RelatesTo");
                assert_eq!(&relates.text, id);
            }
            false
        }
    }
}

/// Run `fut` to completion on this thread (multer over an in-memory stream needs no reactor).
fn block_on<F: Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(out) => return out,
            Poll::Pending => std::thread::park(),
        }
    }
}
