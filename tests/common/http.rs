//! A minimal HTTP/1.1 client on a raw socket: exact control over what is sent (broken
//! multipart bodies, odd headers) and over when the connection goes away.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Open a connection and send the request head and body; the caller reads the answer.
pub async fn send(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    if method == "POST"
        && !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.expect("write head");
    stream.write_all(body).await.expect("write body");
    stream
}

/// Send a request and read the whole response (the server closes the connection).
pub async fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut stream = send(port, method, path, headers, body).await;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read response");
    parse(&raw)
}

/// `GET path` with one `Accept` header: the whole response.
pub async fn get(port: u16, path: &str, accept: &str) -> HttpResponse {
    request(port, "GET", path, &[("Accept", accept)], b"").await
}

/// A whole response as read off the wire (head, then the body, de-chunked if chunked).
pub fn parse(raw: &[u8]) -> HttpResponse {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    HttpResponse {
        status,
        headers,
        body,
    }
}

pub fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or(0);
        if size == 0 || data.len() < eol + 2 + size {
            return out;
        }
        out.extend_from_slice(&data[eol + 2..eol + 2 + size]);
        data = &data[(eol + 4 + size).min(data.len())..];
    }
}

/// A multipart/related body of `parts` (content type, bytes) with `boundary`.
pub fn multipart(boundary: &str, parts: &[(&str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (content_type, bytes) in parts {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Type: {content_type}\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    body
}

/// STOW-RS all `files` in one request to `/dicomweb/studies`.
pub async fn stow_files(port: u16, files: &[beeldbrug::testdata::GeneratedFile]) -> HttpResponse {
    let bytes: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(&f.path).expect("generated file"))
        .collect();
    let parts: Vec<(&str, &[u8])> = bytes
        .iter()
        .map(|b| ("application/dicom", b.as_slice()))
        .collect();
    let ct = "multipart/related; type=\"application/dicom\"; boundary=StowFiles";
    let body = multipart("StowFiles", &parts);
    request(
        port,
        "POST",
        "/dicomweb/studies",
        &[("Content-Type", ct)],
        &body,
    )
    .await
}

/// The bodies of a `multipart/related` response's parts, in order (each part must carry a
/// Content-Length, as beeldbrug's do).
pub fn multipart_parts(r: &HttpResponse) -> Vec<Vec<u8>> {
    let boundary = r
        .header("Content-Type")
        .expect("Content-Type")
        .split("boundary=")
        .nth(1)
        .expect("boundary")
        .trim_matches('"')
        .to_string();
    let delimiter = format!("--{boundary}");
    let mut got = Vec::new();
    let mut rest = &r.body[..];
    while let Some(at) = rest
        .windows(delimiter.len())
        .position(|w| w == delimiter.as_bytes())
    {
        rest = &rest[at + delimiter.len()..];
        if rest.starts_with(b"--") {
            break;
        }
        let head_end = rest
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("part head");
        let head = String::from_utf8_lossy(&rest[..head_end]).to_string();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .expect("part Content-Length")
            .trim()
            .parse()
            .expect("length");
        got.push(rest[head_end + 4..head_end + 4 + len].to_vec());
        rest = &rest[head_end + 4 + len..];
    }
    got
}
