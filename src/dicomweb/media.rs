//! Media types: parsing `Accept` and `Content-Type` (RFC 9110 12.5.1, 8.3) and choosing what a
//! WADO-RS resource can be returned as (PS3.18 8.7.3, 10.4.1.2).

/// `1.2.840.10008.1.2.1`, the default transfer syntax of WADO-RS (PS3.18 8.7.3.5.2).
pub const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
pub const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";

/// One media range of an `Accept` header, or a `Content-Type`.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaRange {
    /// `type/subtype`, lowercased.
    pub essence: String,
    /// Parameters with lowercased names and unquoted values.
    pub params: Vec<(String, String)>,
    pub q: f32,
}

impl MediaRange {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Split on `sep` outside double quotes.
fn split_unquoted(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                parts.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

/// Parse one media type with parameters (`multipart/related; type="application/dicom"`).
pub fn parse_media_type(text: &str) -> Option<MediaRange> {
    let mut pieces = split_unquoted(text, ';').into_iter();
    let essence = pieces.next()?.trim().to_ascii_lowercase();
    let (ty, sub) = essence.split_once('/')?;
    if ty.is_empty() || sub.is_empty() || essence.contains(char::is_whitespace) {
        return None;
    }
    let mut params = Vec::new();
    let mut q = 1.0;
    for piece in pieces {
        let piece = piece.trim();
        if piece.is_empty() {
            continue;
        }
        let (k, v) = piece.split_once('=')?;
        let k = k.trim().to_ascii_lowercase();
        let v = v.trim().trim_matches('"').to_string();
        if k == "q" {
            q = v.parse().ok().filter(|q: &f32| (0.0..=1.0).contains(q))?;
        } else {
            params.push((k, v));
        }
    }
    Some(MediaRange { essence, params, q })
}

/// The media ranges of an `Accept` header, best first (stable for equal q). An absent or
/// empty header is `*/*`. Ranges that do not parse are skipped; q=0 means "not acceptable".
pub fn parse_accept(header: Option<&str>) -> Vec<MediaRange> {
    let text = header.unwrap_or("").trim();
    if text.is_empty() {
        return vec![parse_media_type("*/*").expect("static media type")];
    }
    let mut ranges: Vec<MediaRange> = split_unquoted(text, ',')
        .into_iter()
        .filter_map(parse_media_type)
        .filter(|r| r.q > 0.0)
        .collect();
    ranges.sort_by(|a, b| b.q.partial_cmp(&a.q).unwrap_or(std::cmp::Ordering::Equal));
    ranges
}

/// Does `range` (possibly with wildcards) cover `essence`?
pub fn covers(range: &str, essence: &str) -> bool {
    if range == "*/*" || range == essence {
        return true;
    }
    match (range.split_once('/'), essence.split_once('/')) {
        (Some((rt, "*")), Some((et, _))) => rt == et,
        _ => false,
    }
}

/// Which transfer syntax a client asked for (PS3.18 8.7.3.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyntaxRequest {
    /// `transfer-syntax=*`: as stored.
    AsStored,
    /// A specific UID (no parameter means Explicit VR Little Endian).
    Uid(String),
}

impl SyntaxRequest {
    pub fn from_param(value: Option<&str>) -> SyntaxRequest {
        match value.map(str::trim) {
            Some("*") => SyntaxRequest::AsStored,
            Some(uid) if !uid.is_empty() => SyntaxRequest::Uid(uid.to_string()),
            _ => SyntaxRequest::Uid(EXPLICIT_VR_LE.to_string()),
        }
    }
}

/// How DICOM instances are framed in a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `multipart/related; type="application/dicom"`.
    Multipart,
    /// A single `application/dicom` body (single-instance resources only).
    Single,
}

/// The acceptable instance representations, best first: `(framing, syntax)` for each media
/// range that can carry DICOM instances (PS3.18 10.4.1.2, Table 8.7.3-2).
pub fn instance_choices(
    accept: &[MediaRange],
    single_allowed: bool,
) -> Vec<(Framing, SyntaxRequest)> {
    let mut out = Vec::new();
    for range in accept {
        let ts = SyntaxRequest::from_param(range.param("transfer-syntax"));
        if covers(&range.essence, "multipart/related") {
            let inner = range.param("type").unwrap_or("application/dicom");
            if inner.eq_ignore_ascii_case("application/dicom") {
                out.push((Framing::Multipart, ts));
            }
        } else if range.essence == "application/dicom" && single_allowed {
            out.push((Framing::Single, ts));
        }
    }
    out
}

/// Media type of one frame or bulk value stored in transfer syntax `ts` (PS3.18 Table 8.7.3-5).
pub fn frame_media_type(ts: &str) -> &'static str {
    match ts {
        "1.2.840.10008.1.2.4.50"
        | "1.2.840.10008.1.2.4.51"
        | "1.2.840.10008.1.2.4.57"
        | "1.2.840.10008.1.2.4.70" => "image/jpeg",
        "1.2.840.10008.1.2.4.80" | "1.2.840.10008.1.2.4.81" => "image/jls",
        "1.2.840.10008.1.2.4.90" | "1.2.840.10008.1.2.4.91" => "image/jp2",
        "1.2.840.10008.1.2.4.201" | "1.2.840.10008.1.2.4.202" | "1.2.840.10008.1.2.4.203" => {
            "image/jphc"
        }
        "1.2.840.10008.1.2.4.110" | "1.2.840.10008.1.2.4.111" | "1.2.840.10008.1.2.4.112" => {
            "image/jxl"
        }
        "1.2.840.10008.1.2.5" => "image/dicom-rle",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_is_sorted_by_q_and_keeps_parameters() {
        let r = parse_accept(Some(
            "application/dicom+json;q=0.5, multipart/related; type=\"application/dicom\"; transfer-syntax=*",
        ));
        assert_eq!(r[0].essence, "multipart/related");
        assert_eq!(r[0].param("type"), Some("application/dicom"));
        assert_eq!(r[0].param("transfer-syntax"), Some("*"));
        assert_eq!(r[1].essence, "application/dicom+json");
        assert_eq!(parse_accept(None)[0].essence, "*/*");
        assert!(parse_media_type("nonsense").is_none());
        assert!(parse_media_type("a/b; q=7").is_none());
    }

    #[test]
    fn instance_choices_follow_ps3_18() {
        let a = parse_accept(Some("multipart/related; type=\"application/dicom\""));
        assert_eq!(
            instance_choices(&a, false),
            vec![(
                Framing::Multipart,
                SyntaxRequest::Uid(EXPLICIT_VR_LE.into())
            )]
        );
        let a = parse_accept(Some("application/dicom; transfer-syntax=*"));
        assert!(instance_choices(&a, false).is_empty());
        assert_eq!(
            instance_choices(&a, true),
            vec![(Framing::Single, SyntaxRequest::AsStored)]
        );
        let a = parse_accept(Some("multipart/related; type=\"image/jpeg\""));
        assert!(instance_choices(&a, true).is_empty());
    }
}
