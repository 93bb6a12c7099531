// Checks of the `multipart` fuzz target, shared by `fuzz/fuzz_targets/multipart.rs` and the
// corpus replay in `tests/fuzz_corpus.rs` (both `include!` this file, so there is one copy
// of each check).

use beeldbrug::dicomweb::media::{instance_choices, parse_accept, parse_media_type, Framing};
use beeldbrug::dicomweb::stow::request_boundary;
use bytes::Bytes;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

/// One field as read: name, file name, content type essence, header count, data.
#[derive(Debug, PartialEq, Eq)]
struct Part {
    name: Option<String>,
    file_name: Option<String>,
    content_type: Option<String>,
    headers: usize,
    data: Vec<u8>,
}

/// Split the input into the header line (up to `\n`, a trailing `\r` dropped) and the body.
fn split_input(data: &[u8]) -> (Option<&str>, &[u8]) {
    let (line, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    (std::str::from_utf8(line).ok(), body)
}

/// `parse_media_type` and `parse_accept` on the header line: what they return is
/// normalised (lowercase essence and parameter names, q in range, best first, `*/*` for a
/// missing or blank header), and `instance_choices` picks only from the ranges given.
fn check_media(header: Option<&str>) {
    if let Some(m) = header.and_then(parse_media_type) {
        assert_eq!(m.essence, m.essence.to_ascii_lowercase());
        assert!(m.essence.contains('/') && !m.essence.contains(char::is_whitespace));
        assert!((0.0..=1.0).contains(&m.q), "q {}", m.q);
        assert!(m.params.iter().all(|(k, _)| *k == k.to_ascii_lowercase()));
    }
    let ranges = parse_accept(header);
    assert!(ranges.iter().all(|r| r.q > 0.0 && r.q <= 1.0));
    assert!(
        ranges.windows(2).all(|w| w[0].q >= w[1].q),
        "not best first"
    );
    if header.is_none_or(|h| h.trim().is_empty()) {
        assert_eq!(ranges.len(), 1);
        assert_eq!(ranges[0].essence, "*/*");
    }
    let choices = instance_choices(&ranges, false);
    assert!(choices.iter().all(|(f, _)| *f == Framing::Multipart));
    assert!(choices.len() <= ranges.len());
    assert!(instance_choices(&ranges, true).len() <= ranges.len());
}

/// Read every field and chunk of `chunks` as a multipart body with `boundary`.
async fn read_all(boundary: &str, chunks: Vec<Bytes>) -> Result<Vec<Part>, String> {
    let total: usize = chunks.iter().map(Bytes::len).sum();
    let stream = futures::stream::iter(chunks.into_iter().map(Ok::<Bytes, std::io::Error>));
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut parts = Vec::new();
    let mut seen = 0usize;
    loop {
        let mut field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(message(e)),
        };
        // Each field needs at least a delimiter line: a bound against a loop that never ends.
        assert!(parts.len() <= total, "more fields than body bytes");
        let mut part = Part {
            name: field.name().map(str::to_string),
            file_name: field.file_name().map(str::to_string),
            content_type: field
                .content_type()
                .map(|m| m.essence_str().to_ascii_lowercase()),
            headers: field.headers().len(),
            data: Vec::new(),
        };
        loop {
            match field.chunk().await {
                Ok(Some(chunk)) => {
                    seen += chunk.len();
                    assert!(seen <= total, "fields hold more bytes than the body");
                    part.data.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => return Err(message(e)),
            }
        }
        parts.push(part);
    }
    Ok(parts)
}

/// The message of a multer error, which must not be empty.
fn message(e: multer::Error) -> String {
    let m = e.to_string();
    assert!(!m.is_empty(), "multer error without a message: {e:?}");
    m
}

/// STOW-RS request framing on arbitrary bytes. The first line (up to `\n`, a trailing `\r`
/// dropped) is the `Content-Type` header value, the rest the body:
/// 1. `media::parse_media_type` and `media::parse_accept` on the header line: never panic,
///    and what they return is normalised (lowercase essence, q in range, best first);
/// 2. `stow::request_boundary`: an accepted boundary is 1..=70 bytes of a
///    `multipart/related` type;
/// 3. with that boundary, `multer::Multipart` reads every field and chunk (as `stow.rs`
///    does), once from the body in one piece and once in small chunks: never a panic or a
///    hang, never more field bytes than the body holds, and the same parts either way when
///    both succeed.
///
/// Returns the number of parts read when the body was read to its end.
pub fn check_multipart(data: &[u8]) -> usize {
    let (header, body) = split_input(data);
    check_media(header);
    let Ok(boundary) = request_boundary(header) else {
        return 0;
    };
    assert!(!boundary.is_empty() && boundary.len() <= 70, "{boundary:?}");
    let media = header
        .and_then(parse_media_type)
        .expect("accepted type parses");
    assert_eq!(media.essence, "multipart/related");
    let whole = block_on(read_all(&boundary, vec![Bytes::copy_from_slice(body)]));
    let size = 1 + body.len() % 7;
    let pieces = body.chunks(size).map(Bytes::copy_from_slice).collect();
    let split = block_on(read_all(&boundary, pieces));
    if let Ok(parts) = &whole {
        if !parts.is_empty() {
            let delimiter = format!("--{boundary}");
            assert!(
                body.windows(delimiter.len())
                    .any(|w| w == delimiter.as_bytes()),
                "parts without a delimiter"
            );
        }
    }
    match (&whole, &split) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "chunking changes the parts"),
        (Err(_), Err(_)) => {}
        _ => panic!("chunking changes the outcome: {whole:?} vs {split:?}"),
    }
    whole.map_or(0, |parts| parts.len())
}

/// Run `fut` to completion on this thread. multer over an in-memory stream needs no
/// reactor, so this is `futures::executor::block_on`, which the main crate's `futures`
/// (built without its `executor` feature) does not offer to `tests/fuzz_corpus.rs`.
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
