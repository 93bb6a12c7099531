//! Just enough DER (X.690) to print a certificate's subject (RFC 5280 4.1.2.6) in logs, and
//! for the console (issue 17) a certificate's validity (RFC 5280 4.1.2.5) and a CRL's
//! thisUpdate / nextUpdate (RFC 5280 5.1.2.4-5): bounds-checked, never panics on what a
//! peer sent.

/// One TLV: tag, content, rest.
fn tlv(data: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = data.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;

/// `CN=..., O=..., C=...` from a DER certificate.
pub fn subject(cert: &[u8]) -> Option<String> {
    let (tag, certificate, _) = tlv(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    let (_, tbs, _) = tlv(certificate)?;
    let mut fields = tbs;
    // version [0] EXPLICIT is optional.
    if fields.first() == Some(&0xa0) {
        fields = tlv(fields)?.2;
    }
    // serialNumber, signature, issuer, validity, then subject.
    for _ in 0..4 {
        fields = tlv(fields)?.2;
    }
    let (tag, mut name, _) = tlv(fields)?;
    if tag != SEQUENCE {
        return None;
    }
    let mut parts = Vec::new();
    while !name.is_empty() {
        let (tag, mut rdn, rest) = tlv(name)?;
        name = rest;
        if tag != SET {
            return None;
        }
        while !rdn.is_empty() {
            let (_, attr, rest) = tlv(rdn)?;
            rdn = rest;
            let (tag, oid, value) = tlv(attr)?;
            if tag != OID {
                return None;
            }
            let (_, value, _) = tlv(value)?;
            let text = String::from_utf8_lossy(value);
            parts.push(format!("{}={}", label(oid), text.trim()));
        }
    }
    Some(parts.join(", "))
}

const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// A Time (RFC 5280 4.1.2.5.1-2: UTCTime `YYMMDDHHMMSSZ`, years 50-99 are 19xx, or
/// GeneralizedTime `YYYYMMDDHHMMSSZ`) as Unix seconds.
fn time_value(tag: u8, value: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(value).ok()?;
    let digits = text.strip_suffix('Z')?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (year, rest) = match (tag, digits.len()) {
        (UTC_TIME, 12) => {
            let yy: i32 = digits[..2].parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &digits[2..])
        }
        (GENERALIZED_TIME, 14) => (digits[..4].parse().ok()?, &digits[4..]),
        _ => return None,
    };
    let n = |i: usize| rest[i..i + 2].parse::<u8>().ok();
    let month = time::Month::try_from(n(0)?).ok()?;
    let date = time::Date::from_calendar_date(year, month, n(2)?).ok()?;
    let at = date.with_hms(n(4)?, n(6)?, n(8)?).ok()?;
    Some(at.assume_utc().unix_timestamp())
}

/// The fields of the signed part of a certificate or CRL (RFC 5280 4.1, 5.1: a SEQUENCE
/// whose first element is the tbsCertificate / tbsCertList SEQUENCE).
fn to_be_signed(der: &[u8]) -> Option<&[u8]> {
    let (tag, signed, _) = tlv(der)?;
    if tag != SEQUENCE {
        return None;
    }
    Some(tlv(signed)?.1)
}

/// A certificate's notBefore and notAfter, Unix seconds.
pub fn validity(cert: &[u8]) -> Option<(i64, i64)> {
    let mut fields = to_be_signed(cert)?;
    if fields.first() == Some(&0xa0) {
        fields = tlv(fields)?.2;
    }
    // serialNumber, signature, issuer, then validity.
    for _ in 0..3 {
        fields = tlv(fields)?.2;
    }
    let (tag, validity, _) = tlv(fields)?;
    if tag != SEQUENCE {
        return None;
    }
    let (t1, not_before, rest) = tlv(validity)?;
    let (t2, not_after, _) = tlv(rest)?;
    Some((time_value(t1, not_before)?, time_value(t2, not_after)?))
}

/// A CRL's thisUpdate and nextUpdate (optional), Unix seconds.
pub fn crl_updates(crl: &[u8]) -> Option<(i64, Option<i64>)> {
    let mut fields = to_be_signed(crl)?;
    // version INTEGER is optional (v2 CRLs carry it).
    if fields.first() == Some(&0x02) {
        fields = tlv(fields)?.2;
    }
    // signature, issuer, then thisUpdate.
    for _ in 0..2 {
        fields = tlv(fields)?.2;
    }
    let (t1, this_update, rest) = tlv(fields)?;
    let this_update = time_value(t1, this_update)?;
    let next_update = match tlv(rest) {
        Some((t, v, _)) if t == UTC_TIME || t == GENERALIZED_TIME => time_value(t, v),
        _ => None,
    };
    Some((this_update, next_update))
}

/// Short names of the usual attribute types (RFC 4514 3, X.520), else the dotted OID.
fn label(oid: &[u8]) -> String {
    match oid {
        [0x55, 0x04, 0x03] => "CN".into(),
        [0x55, 0x04, 0x05] => "serialNumber".into(),
        [0x55, 0x04, 0x06] => "C".into(),
        [0x55, 0x04, 0x07] => "L".into(),
        [0x55, 0x04, 0x08] => "ST".into(),
        [0x55, 0x04, 0x0a] => "O".into(),
        [0x55, 0x04, 0x0b] => "OU".into(),
        _ => dotted(oid),
    }
}

fn dotted(oid: &[u8]) -> String {
    let mut arcs: Vec<u64> = Vec::new();
    let mut value: u64 = 0;
    for b in oid {
        value = (value << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (value / 40).min(2);
                arcs.push(first);
                arcs.push(value - first * 40);
            } else {
                arcs.push(value);
            }
            value = 0;
        }
    }
    arcs.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_of_both_kinds() {
        assert_eq!(time_value(UTC_TIME, b"700101000000Z"), Some(0));
        assert_eq!(time_value(UTC_TIME, b"491231235959Z"), Some(2524607999));
        assert_eq!(
            time_value(GENERALIZED_TIME, b"20500101000000Z"),
            Some(2524608000)
        );
        assert_eq!(time_value(UTC_TIME, b"701301000000Z"), None);
        assert_eq!(time_value(UTC_TIME, b"7001010000Z"), None);
        assert_eq!(validity(&[0x30, 0x00]), None);
        assert_eq!(crl_updates(&[]), None);
    }

    #[test]
    fn validity_and_crl_times_of_rcgen_made_ones() {
        use rcgen::{CertificateParams, CertificateRevocationListParams, KeyPair, SerialNumber};
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        params.not_before = time::OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        // After 2049: a GeneralizedTime (RFC 5280 4.1.2.5).
        params.not_after = time::OffsetDateTime::from_unix_timestamp(2_600_000_000).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::KeyCertSign,
        ];
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(validity(cert.der()), Some((1_700_000_000, 2_600_000_000)));
        let crl = CertificateRevocationListParams {
            this_update: time::OffsetDateTime::from_unix_timestamp(1_750_000_000).unwrap(),
            next_update: time::OffsetDateTime::from_unix_timestamp(1_750_086_400).unwrap(),
            crl_number: SerialNumber::from(7u64),
            issuing_distribution_point: None,
            revoked_certs: vec![],
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&rcgen::Issuer::from_params(&params, &key))
        .unwrap();
        assert_eq!(
            crl_updates(crl.der()),
            Some((1_750_000_000, Some(1_750_086_400)))
        );
    }

    #[test]
    fn garbage_gives_none() {
        assert_eq!(subject(&[]), None);
        assert_eq!(subject(&[0x30, 0x82, 0xff]), None);
        assert_eq!(subject(&[0x30, 0x03, 0x30, 0x01]), None);
    }

    #[test]
    fn dotted_oids() {
        assert_eq!(
            dotted(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d]),
            "1.2.840.113549"
        );
    }
}
