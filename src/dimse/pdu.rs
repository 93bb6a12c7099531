//! PDU framing (PS3.8 9.3): read and write whole PDUs on a byte stream, with strict size
//! limits and timeouts.
//!
//! Association PDUs are parsed and written by `dicom-ul`. P-DATA-TF (PS3.8 9.3.5) is framed
//! here directly: its PDVs are sliced out of one buffer without copying, and outgoing data is
//! written header-then-payload so a large data set never gets copied into a PDU struct.

use bytes::{Buf, Bytes, BytesMut};
use dicom_ul::pdu::{read_pdu, write_pdu, Pdu};
use std::io::IoSlice;
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
///
/// [`read`](PduReader::read) is cancel-safe: what has arrived of a PDU is kept here, so a
/// read dropped in a `select!` (or tried without waiting, [`try_read`](PduReader::try_read))
/// loses nothing. The header is read on its own and the body into a buffer of exactly its
/// length, which is not zeroed first and is handed out as the PDVs' `Bytes` without a copy.
pub struct PduReader<R> {
    inner: R,
    /// Largest PDU body accepted (our advertised maximum for P-DATA).
    pub max_pdu: u32,
    pub timeout: Duration,
    header: [u8; 6],
    /// Bytes of `header` read so far.
    header_len: usize,
    /// The body being read, once the header is complete (capacity: its length).
    body: Option<BytesMut>,
}

impl<R: AsyncRead + Unpin> PduReader<R> {
    pub fn new(inner: R, max_pdu: u32, timeout: Duration) -> Self {
        PduReader {
            inner,
            max_pdu,
            timeout,
            header: [0; 6],
            header_len: 0,
            body: None,
        }
    }

    /// Read one whole PDU. The length field is checked before any body is read, so a peer
    /// that announces 4 GiB is refused without allocating it. Times out when the peer sends
    /// nothing for `timeout`.
    pub async fn read(&mut self) -> Result<Frame, PduError> {
        self.read_frame(true).await
    }

    /// A whole PDU if one can be read without waiting (what has arrived of one is kept for
    /// the next read).
    pub fn try_read(&mut self) -> Option<Result<Frame, PduError>> {
        use futures::FutureExt;
        self.read_frame(false).now_or_never()
    }

    async fn read_frame(&mut self, wait: bool) -> Result<Frame, PduError> {
        while self.header_len < 6 {
            let (timeout, inner) = (self.timeout, &mut self.inner);
            let into = &mut self.header[self.header_len..];
            match timed(timeout, wait, inner.read(into)).await? {
                0 if self.header_len == 0 => return Err(PduError::Closed),
                0 => return Err(PduError::Closed),
                n => self.header_len += n,
            }
        }
        let header = self.header;
        let kind = header[0];
        let length = u32::from_be_bytes([header[2], header[3], header[4], header[5]]);
        if self.body.is_none() {
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
            self.body = Some(BytesMut::with_capacity(length as usize));
        }
        let length = length as usize;
        loop {
            let body = self.body.as_mut().expect("body started above");
            let missing = length - body.len();
            if missing == 0 {
                break;
            }
            let (timeout, inner) = (self.timeout, &mut self.inner);
            let into = &mut bytes::BufMut::limit(&mut *body, missing);
            if timed(timeout, wait, inner.read_buf(into)).await? == 0 {
                return Err(PduError::Malformed("PDU truncated by end of stream".into()));
            }
        }
        // Whole: the next read starts a new PDU.
        let body = self.body.take().expect("body started above");
        self.header_len = 0;
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

/// One read or write of the peer's stream: at once when it can go without waiting (no
/// timer then), else within `timeout` (`wait`), or not at all (pending: the caller's
/// `now_or_never` gives up).
async fn timed<T>(
    timeout: Duration,
    wait: bool,
    op: impl std::future::Future<Output = std::io::Result<T>>,
) -> Result<T, PduError> {
    use futures::FutureExt;
    let mut op = std::pin::pin!(op);
    if let Some(done) = op.as_mut().now_or_never() {
        return Ok(done?);
    }
    if !wait {
        return std::future::pending().await;
    }
    match tokio::time::timeout(timeout, op).await {
        Err(_) => Err(PduError::Timeout(timeout)),
        Ok(r) => Ok(r?),
    }
}

/// P-DATA payloads up to this size are copied into the writer's buffer and go out with what
/// comes next; larger ones are written from where they are, in one vectored write with what
/// is buffered.
const COALESCE: usize = 16 * 1024;

/// Writes PDUs to one half of a connection.
///
/// PDU headers, commands and small data sets are collected in a buffer and go out with the
/// next large payload (one vectored write) or at [`flush`](PduWriter::flush): a C-STORE
/// request and its data set leave in one write, not four small segments (the connections
/// run with `TCP_NODELAY`).
pub struct PduWriter<W> {
    inner: W,
    pub timeout: Duration,
    pending: Vec<u8>,
}

impl<W: AsyncWrite + Unpin> PduWriter<W> {
    pub fn new(inner: W, timeout: Duration) -> Self {
        PduWriter {
            inner,
            timeout,
            pending: Vec::new(),
        }
    }

    /// Write a non-data PDU (association, release, abort) encoded by dicom-ul, at once.
    pub async fn write_pdu(&mut self, pdu: &Pdu) -> Result<(), PduError> {
        write_pdu(&mut self.pending, pdu).map_err(|e| PduError::Malformed(e.to_string()))?;
        self.flush().await
    }

    /// Write one P-DATA-TF PDU holding a single PDV (PS3.8 9.3.5, E.2 message control header).
    /// A small one may stay buffered until the next write or [`flush`](PduWriter::flush).
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
        self.pending.extend_from_slice(&head);
        if data.len() <= COALESCE {
            self.pending.extend_from_slice(data);
            if self.pending.len() >= COALESCE {
                self.write_pending(&[]).await?;
            }
            return Ok(());
        }
        self.write_pending(data).await
    }

    /// [`write_pdv`](PduWriter::write_pdv) of a PDV whose value is `data` joined: pieces of
    /// a data set as they were received, gathered into one PDV without copying them.
    pub async fn write_pdv_gathered(
        &mut self,
        context_id: u8,
        is_command: bool,
        is_last: bool,
        data: &[&[u8]],
    ) -> Result<(), PduError> {
        let len: usize = data.iter().map(|d| d.len()).sum();
        if let [one] = data {
            return self.write_pdv(context_id, is_command, is_last, one).await;
        }
        if len <= COALESCE {
            let joined = data.concat();
            return self
                .write_pdv(context_id, is_command, is_last, &joined)
                .await;
        }
        let item_len = len as u32 + 2;
        let mut head = [0u8; 12];
        head[0] = pdu_type::P_DATA_TF;
        head[2..6].copy_from_slice(&(item_len + 4).to_be_bytes());
        head[6..10].copy_from_slice(&item_len.to_be_bytes());
        head[10] = context_id;
        head[11] = u8::from(is_command) | (u8::from(is_last) << 1);
        self.pending.extend_from_slice(&head);
        let mut slices: Vec<IoSlice<'_>> = std::iter::once(IoSlice::new(&self.pending))
            .chain(data.iter().map(|d| IoSlice::new(d)))
            .collect();
        let mut left = &mut slices[..];
        while !left.is_empty() {
            let n = timed(self.timeout, true, self.inner.write_vectored(left)).await?;
            if n == 0 {
                return Err(PduError::Io(std::io::ErrorKind::WriteZero.into()));
            }
            IoSlice::advance_slices(&mut left, n);
        }
        self.pending.clear();
        Ok(())
    }

    /// Write out what is buffered (then flush the stream).
    pub async fn flush(&mut self) -> Result<(), PduError> {
        self.write_pending(&[]).await?;
        timed(self.timeout, true, self.inner.flush()).await
    }

    /// Write the buffer and then `data`, vectored.
    async fn write_pending(&mut self, data: &[u8]) -> Result<(), PduError> {
        let mut slices = [IoSlice::new(&self.pending), IoSlice::new(data)];
        let mut left = &mut slices[..];
        IoSlice::advance_slices(&mut left, 0);
        while !left.is_empty() {
            let n = timed(self.timeout, true, self.inner.write_vectored(left)).await?;
            if n == 0 {
                return Err(PduError::Io(std::io::ErrorKind::WriteZero.into()));
            }
            IoSlice::advance_slices(&mut left, n);
        }
        self.pending.clear();
        Ok(())
    }

    pub async fn shutdown(&mut self) {
        let _ = self.write_pending(&[]).await;
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
        // Small PDVs wait in the buffer for the next write or the flush.
        w.flush().await.unwrap();
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

    #[tokio::test(flavor = "multi_thread")]
    async fn a_pdu_arriving_in_pieces_survives_reads_given_up() {
        let mut bytes = Vec::new();
        let mut w = PduWriter::new(&mut bytes, Duration::from_secs(1));
        w.write_pdv(1, false, true, &[7u8; 1000]).await.unwrap();
        w.flush().await.unwrap();
        let (mut tx, rx) = tokio::io::duplex(64 * 1024);
        let mut r = PduReader::new(rx, 16384, Duration::from_secs(5));
        assert!(r.try_read().is_none());
        // Part of the header, then part of the body: each read given up keeps what came.
        tx.write_all(&bytes[..3]).await.unwrap();
        assert!(r.try_read().is_none());
        tx.write_all(&bytes[3..500]).await.unwrap();
        assert!(r.try_read().is_none());
        let slow = tokio::time::timeout(Duration::from_millis(20), r.read()).await;
        assert!(slow.is_err(), "nothing more has come");
        tx.write_all(&bytes[500..]).await.unwrap();
        match r.read().await.unwrap() {
            Frame::PData(p) => {
                assert_eq!(p.len(), 1);
                assert_eq!(&p[0].data[..], &[7u8; 1000][..]);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(r.try_read().is_none());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn small_and_large_pdvs_read_back_in_order() {
        let mut bytes = Vec::new();
        let mut w = PduWriter::new(&mut bytes, Duration::from_secs(1));
        let large: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        w.write_pdv(1, true, true, b"command").await.unwrap();
        w.write_pdv(1, false, false, &large).await.unwrap();
        w.write_pdv(1, false, true, b"tail").await.unwrap();
        w.flush().await.unwrap();
        let mut r = PduReader::new(&bytes[..], 262_144, Duration::from_secs(1));
        let mut got = Vec::new();
        while let Ok(Frame::PData(p)) = r.read().await {
            got.extend(p);
        }
        assert_eq!(got.len(), 3);
        assert!(got[0].is_command && &got[0].data[..] == b"command");
        assert!(!got[1].is_last && got[1].data == large);
        assert!(got[2].is_last && &got[2].data[..] == b"tail");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn silence_times_out_and_a_cut_body_is_malformed() {
        let (_tx, rx) = tokio::io::duplex(1024);
        let mut r = PduReader::new(rx, 16384, Duration::from_millis(50));
        assert!(matches!(r.read().await, Err(PduError::Timeout(_))));
        let cut: &[u8] = &[0x04, 0, 0, 0, 0, 20, 0, 0];
        let mut r = PduReader::new(cut, 16384, Duration::from_secs(1));
        assert!(matches!(r.read().await, Err(PduError::Malformed(_))));
        let mut r = PduReader::new(&[][..], 16384, Duration::from_secs(1));
        assert!(matches!(r.read().await, Err(PduError::Closed)));
    }
}
