//! PDU framing (PS3.8 9.3): read and write whole PDUs on a byte stream, with strict size
//! limits and timeouts.
//!
//! Association PDUs are parsed and written by `dicom-ul`. P-DATA-TF (PS3.8 9.3.5) is framed
//! here directly: its PDVs are sliced out of one buffer without copying, and outgoing data is
//! written header-then-payload so a large data set never gets copied into a PDU struct.

use bytes::{Buf, Bytes, BytesMut};
use dicom_ul::pdu::{read_pdu, write_pdu, Pdu};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// PDU types (PS3.8 Table 9-11).
pub mod pdu_type {
    pub const ASSOCIATE_RQ: u8 = 0x01;
    pub const ASSOCIATE_AC: u8 = 0x02;
    pub const ASSOCIATE_RJ: u8 = 0x03;
    pub const P_DATA_TF: u8 = 0x04;
    pub const RELEASE_RQ: u8 = 0x05;
    pub const RELEASE_RP: u8 = 0x06;
    pub const ABORT: u8 = 0x07;
}

/// Largest association PDU we accept before negotiation (an A-ASSOCIATE-RQ with hundreds of
/// presentation contexts is ~30 KiB).
pub const MAX_ASSOCIATION_PDU: u32 = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum PduError {
    #[error("connection closed by peer")]
    Closed,
    #[error("timed out after {0:?} waiting for the peer")]
    Timeout(Duration),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("PDU of {length} bytes exceeds the limit of {limit} bytes")]
    TooLarge { length: u32, limit: u32 },
    #[error("unknown PDU type 0x{0:02X}")]
    UnknownType(u8),
    #[error("malformed PDU: {0}")]
    Malformed(String),
}

/// One presentation data value (PS3.8 9.3.5.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pdv {
    pub context_id: u8,
    /// Message control header bit 0: command (true) or data set (false) fragment.
    pub is_command: bool,
    /// Message control header bit 1: last fragment of this command or data set.
    pub is_last: bool,
    pub data: Bytes,
}

/// A received PDU.
#[derive(Debug)]
pub enum Frame {
    PData(Vec<Pdv>),
    /// Any other PDU, parsed by dicom-ul.
    Other(Pdu),
}

/// Parse the variable part of a P-DATA-TF PDU into its PDVs (PS3.8 9.3.5).
pub fn parse_pdata(mut body: Bytes) -> Result<Vec<Pdv>, PduError> {
    let mut pdvs = Vec::new();
    while body.has_remaining() {
        if body.remaining() < 6 {
            return Err(PduError::Malformed("truncated PDV item header".into()));
        }
        let item_len = body.get_u32() as usize;
        if item_len < 2 || item_len > body.remaining() {
            return Err(PduError::Malformed(format!(
                "PDV item length {item_len} does not fit the PDU"
            )));
        }
        let context_id = body.get_u8();
        let header = body.get_u8();
        let data = body.split_to(item_len - 2);
        pdvs.push(Pdv {
            context_id,
            is_command: header & 0x01 != 0,
            is_last: header & 0x02 != 0,
            data,
        });
    }
    if pdvs.is_empty() {
        return Err(PduError::Malformed("P-DATA-TF without PDV items".into()));
    }
    Ok(pdvs)
}

/// Reads PDUs from one half of a connection.
pub struct PduReader<R> {
    inner: R,
    /// Largest PDU body accepted (our advertised maximum for P-DATA).
    pub max_pdu: u32,
    pub timeout: Duration,
}

impl<R: AsyncRead + Unpin> PduReader<R> {
    pub fn new(inner: R, max_pdu: u32, timeout: Duration) -> Self {
        PduReader {
            inner,
            max_pdu,
            timeout,
        }
    }

    /// Read one whole PDU. The length field is checked before any body is read, so a peer
    /// that announces 4 GiB is refused without allocating it.
    pub async fn read(&mut self) -> Result<Frame, PduError> {
        let mut header = [0u8; 6];
        match tokio::time::timeout(self.timeout, self.inner.read_exact(&mut header)).await {
            Err(_) => return Err(PduError::Timeout(self.timeout)),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(PduError::Closed)
            }
            Ok(r) => r?,
        };
        let kind = header[0];
        let length = u32::from_be_bytes([header[2], header[3], header[4], header[5]]);
        let limit = match kind {
            // PS3.8 9.3.5: the P-DATA body may not exceed the maximum length we announced.
            pdu_type::P_DATA_TF => self.max_pdu.saturating_add(6),
            pdu_type::ASSOCIATE_RQ | pdu_type::ASSOCIATE_AC => MAX_ASSOCIATION_PDU,
            pdu_type::ASSOCIATE_RJ
            | pdu_type::RELEASE_RQ
            | pdu_type::RELEASE_RP
            | pdu_type::ABORT => 64,
            other => return Err(PduError::UnknownType(other)),
        };
        if length > limit {
            return Err(PduError::TooLarge { length, limit });
        }
        let mut body = BytesMut::zeroed(length as usize);
        match tokio::time::timeout(self.timeout, self.inner.read_exact(&mut body)).await {
            Err(_) => return Err(PduError::Timeout(self.timeout)),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(PduError::Malformed("PDU truncated by end of stream".into()))
            }
            Ok(r) => r?,
        };
        if kind == pdu_type::P_DATA_TF {
            return parse_pdata(body.freeze()).map(Frame::PData);
        }
        let mut whole = BytesMut::with_capacity(6 + body.len());
        whole.extend_from_slice(&header);
        whole.extend_from_slice(&body);
        match read_pdu(whole.freeze(), MAX_ASSOCIATION_PDU, true) {
            Ok(Some(pdu)) => Ok(Frame::Other(pdu)),
            Ok(None) => Err(PduError::Malformed("incomplete PDU".into())),
            Err(e) => Err(PduError::Malformed(e.to_string())),
        }
    }
}

/// Writes PDUs to one half of a connection.
pub struct PduWriter<W> {
    inner: W,
    pub timeout: Duration,
}

impl<W: AsyncWrite + Unpin> PduWriter<W> {
    pub fn new(inner: W, timeout: Duration) -> Self {
        PduWriter { inner, timeout }
    }

    /// Write a non-data PDU (association, release, abort) encoded by dicom-ul.
    pub async fn write_pdu(&mut self, pdu: &Pdu) -> Result<(), PduError> {
        let mut buf = Vec::with_capacity(512);
        write_pdu(&mut buf, pdu).map_err(|e| PduError::Malformed(e.to_string()))?;
        self.write_all(&buf).await
    }

    /// Write one P-DATA-TF PDU holding a single PDV (PS3.8 9.3.5, E.2 message control header).
    pub async fn write_pdv(
        &mut self,
        context_id: u8,
        is_command: bool,
        is_last: bool,
        data: &[u8],
    ) -> Result<(), PduError> {
        let item_len = data.len() as u32 + 2;
        let mut head = [0u8; 12];
        head[0] = pdu_type::P_DATA_TF;
        head[2..6].copy_from_slice(&(item_len + 4).to_be_bytes());
        head[6..10].copy_from_slice(&item_len.to_be_bytes());
        head[10] = context_id;
        head[11] = u8::from(is_command) | (u8::from(is_last) << 1);
        self.write_all(&head).await?;
        self.write_all(data).await
    }

    pub async fn flush(&mut self) -> Result<(), PduError> {
        match tokio::time::timeout(self.timeout, self.inner.flush()).await {
            Err(_) => Err(PduError::Timeout(self.timeout)),
            Ok(r) => Ok(r?),
        }
    }

    async fn write_all(&mut self, data: &[u8]) -> Result<(), PduError> {
        match tokio::time::timeout(self.timeout, self.inner.write_all(data)).await {
            Err(_) => Err(PduError::Timeout(self.timeout)),
            Ok(r) => Ok(r?),
        }
    }

    pub async fn shutdown(&mut self) {
        let _ = tokio::time::timeout(self.timeout, self.inner.shutdown()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pdata_round_trip_items() {
        let mut body = Vec::new();
        for (id, hdr, payload) in [(1u8, 3u8, &b"cmd"[..]), (1, 0, &b"data!"[..])] {
            body.extend_from_slice(&(payload.len() as u32 + 2).to_be_bytes());
            body.push(id);
            body.push(hdr);
            body.extend_from_slice(payload);
        }
        let pdvs = parse_pdata(Bytes::from(body)).unwrap();
        assert_eq!(pdvs.len(), 2);
        assert!(pdvs[0].is_command && pdvs[0].is_last);
        assert_eq!(&pdvs[1].data[..], b"data!");
        assert!(!pdvs[1].is_command && !pdvs[1].is_last);
    }

    #[test]
    fn pdata_rejects_overlong_item() {
        let body = Bytes::from_static(&[0, 0, 0, 9, 1, 0, 1, 2]);
        assert!(matches!(parse_pdata(body), Err(PduError::Malformed(_))));
        assert!(parse_pdata(Bytes::new()).is_err());
        assert!(parse_pdata(Bytes::from_static(&[0, 0, 0, 1, 1, 0])).is_err());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn huge_length_is_refused_before_reading() {
        let bytes: &[u8] = &[0x04, 0, 0xFF, 0xFF, 0xFF, 0xFF];
        let mut reader = PduReader::new(bytes, 16384, Duration::from_secs(1));
        assert!(matches!(
            reader.read().await,
            Err(PduError::TooLarge { .. })
        ));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn written_pdv_reads_back() {
        let mut buf = Vec::new();
        let mut w = PduWriter::new(&mut buf, Duration::from_secs(1));
        w.write_pdv(3, false, true, b"abcd").await.unwrap();
        let mut r = PduReader::new(&buf[..], 16384, Duration::from_secs(1));
        match r.read().await.unwrap() {
            Frame::PData(p) => {
                assert_eq!(p[0].context_id, 3);
                assert!(p[0].is_last && !p[0].is_command);
                assert_eq!(&p[0].data[..], b"abcd");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
