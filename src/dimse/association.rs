//! An established association and the DIMSE message layer on top of it (PS3.7 Annex E,
//! PS3.8 9.3.5): command fragments are reassembled, data set fragments are handed out one
//! PDV at a time so a large data set can go straight to disk, and outgoing command and data
//! always travel in separate PDUs (some SCPs refuse them combined).
//!
//! The association's own task reads its PDUs, when it asks for the next event: no reader
//! task and no channel between the socket and the handler, so a PDU costs no task hand-off.
//! Reads are cancel-safe (a read dropped in a `select!` loses nothing) and can be tried
//! without waiting ([`Association::try_next_event`]: a C-CANCEL during C-FIND/C-MOVE/C-GET).
//! While the handler is busy nothing is read: the peer is held back by TCP's flow control.

use super::command::{CommandError, CommandField, CommandSet, MAX_COMMAND_SET};
use super::pdu::{Frame, PduError, PduReader, PduWriter, Pdv};
use dicom_ul::pdu::{AbortRQSource, Pdu};
use std::collections::VecDeque;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

pub type BoxedWriter = Box<dyn AsyncWrite + Send + Unpin>;
pub type BoxedReader = Box<dyn AsyncRead + Send + Unpin>;

#[derive(Debug, thiserror::Error)]
pub enum AssociationError {
    #[error(transparent)]
    Pdu(#[from] PduError),
    #[error("bad command set: {0}")]
    Command(#[from] CommandError),
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("association rejected by peer: {0}")]
    Rejected(String),
    #[error("association aborted by peer")]
    Aborted,
    #[error("peer accepted no presentation context")]
    NoContexts,
    #[error("peer released the association")]
    Released,
}

impl AssociationError {
    /// A rejection the peer marked transient (PS3.8 9.3.4: e.g. local limit exceeded): worth
    /// retrying later.
    pub fn is_transient_rejection(&self) -> bool {
        matches!(self, AssociationError::Rejected(why) if why.starts_with("Transient"))
    }
}

/// An accepted presentation context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentationContext {
    pub id: u8,
    pub abstract_syntax: String,
    pub transfer_syntax: String,
    /// The association requestor may act as SCP for this SOP class (SCU/SCP role selection,
    /// PS3.7 D.3.3.4): needed to send it C-STORE sub-operations of a C-GET.
    pub requestor_is_scp: bool,
}

/// What arrives on an association.
#[derive(Debug)]
pub enum Event {
    Command {
        context_id: u8,
        command: CommandSet,
    },
    /// One data set fragment; `is_last` closes the data set.
    Data(Pdv),
    ReleaseRequested,
    ReleaseReplied,
    Aborted,
}

/// What the acceptor said of itself in its A-ASSOCIATE-AC (PS3.7 D.3.3): kept for reports
/// such as the PACS capability probe. Empty on associations we accepted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerInfo {
    /// The maximum PDU length it announced (0: no limit).
    pub max_pdu: Option<u32>,
    pub implementation_class_uid: Option<String>,
    pub implementation_version_name: Option<String>,
}

pub struct Association {
    writer: PduWriter<BoxedWriter>,
    reader: PduReader<BoxedReader>,
    /// The peer's stream ended (an error, A-ABORT or A-RELEASE-RP was read): every later
    /// read says `Closed`.
    reader_done: bool,
    queued: VecDeque<Pdv>,
    command_buf: Vec<u8>,
    command_context: Option<u8>,
    pub contexts: Vec<PresentationContext>,
    pub calling_ae: String,
    pub called_ae: String,
    pub peer: String,
    /// Largest PDU we may send (the peer's announced maximum, capped by ours).
    pub send_max_pdu: u32,
    /// The acceptor's A-ASSOCIATE-AC details, when we requested the association.
    pub peer_info: PeerInfo,
    next_message_id: u16,
    /// Instances sent by C-GET and C-MOVE sub-operations of this association (SCP side),
    /// for its operations-log line.
    pub instances_sent: u32,
}

impl Association {
    pub(crate) fn start(
        reader: PduReader<BoxedReader>,
        writer: PduWriter<BoxedWriter>,
        contexts: Vec<PresentationContext>,
        calling_ae: String,
        called_ae: String,
        peer: String,
        send_max_pdu: u32,
    ) -> Self {
        Association {
            writer,
            reader,
            reader_done: false,
            queued: VecDeque::new(),
            command_buf: Vec::new(),
            command_context: None,
            contexts,
            calling_ae,
            called_ae,
            peer,
            send_max_pdu,
            peer_info: PeerInfo::default(),
            next_message_id: 1,
            instances_sent: 0,
        }
    }

    pub fn context(&self, id: u8) -> Option<&PresentationContext> {
        self.contexts.iter().find(|c| c.id == id)
    }

    /// First accepted context for an abstract syntax, preferring `transfer_syntax` if given.
    pub fn context_for(
        &self,
        abstract_syntax: &str,
        transfer_syntax: Option<&str>,
    ) -> Option<&PresentationContext> {
        let mut candidates = self
            .contexts
            .iter()
            .filter(|c| c.abstract_syntax == abstract_syntax);
        match transfer_syntax {
            Some(ts) => {
                let all: Vec<_> = candidates.collect();
                all.iter()
                    .find(|c| c.transfer_syntax == ts)
                    .or(all.first())
                    .copied()
            }
            None => candidates.next(),
        }
    }

    pub fn next_message_id(&mut self) -> u16 {
        let id = self.next_message_id;
        self.next_message_id = self.next_message_id.wrapping_add(1).max(1);
        id
    }

    /// The next event; command fragments are reassembled into one [`Event::Command`].
    pub async fn next_event(&mut self) -> Result<Event, AssociationError> {
        loop {
            if let Some(event) = self.take_queued()? {
                return Ok(event);
            }
            let frame = self.read_frame().await;
            if let Some(event) = self.absorb(frame)? {
                return Ok(event);
            }
        }
    }

    /// Like [`next_event`](Self::next_event) but returns `None` at once when nothing is
    /// waiting; used to check for C-CANCEL between items.
    pub fn try_next_event(&mut self) -> Result<Option<Event>, AssociationError> {
        loop {
            if let Some(event) = self.take_queued()? {
                return Ok(Some(event));
            }
            if self.reader_done {
                return self.absorb(None).map(|_| None);
            }
            match self.reader.try_read() {
                Some(frame) => {
                    let frame = self.ended_by(frame);
                    if let Some(event) = self.absorb(Some(frame))? {
                        return Ok(Some(event));
                    }
                }
                None => return Ok(None),
            }
        }
    }

    /// The next PDU (cancel-safe); `None` once the stream has ended.
    async fn read_frame(&mut self) -> Option<Result<Frame, PduError>> {
        if self.reader_done {
            return None;
        }
        let frame = self.reader.read().await;
        Some(self.ended_by(frame))
    }

    /// Note whether `frame` is the last the peer's stream gives.
    fn ended_by(&mut self, frame: Result<Frame, PduError>) -> Result<Frame, PduError> {
        self.reader_done = matches!(
            &frame,
            Err(_) | Ok(Frame::Other(Pdu::AbortRQ { .. })) | Ok(Frame::Other(Pdu::ReleaseRP))
        );
        frame
    }

    /// True when a C-CANCEL-RQ for `message_id` has arrived (PS3.7 9.3.2.3 etc.).
    /// Anything else that arrives meanwhile is an error: we negotiate no asynchronous operations.
    pub fn cancel_requested(&mut self, message_id: u16) -> Result<bool, AssociationError> {
        match self.try_next_event()? {
            None => Ok(false),
            Some(Event::Command { command, .. }) if command.field == CommandField::CCancelRq => {
                Ok(command.message_id_responded == Some(message_id))
            }
            Some(Event::Aborted) => Err(AssociationError::Aborted),
            Some(other) => Err(AssociationError::Protocol(format!(
                "unexpected {} while an operation is in progress",
                describe_event(&other)
            ))),
        }
    }

    fn take_queued(&mut self) -> Result<Option<Event>, AssociationError> {
        while let Some(pdv) = self.queued.pop_front() {
            if self.context(pdv.context_id).is_none() {
                return Err(AssociationError::Protocol(format!(
                    "PDV on unknown presentation context {}",
                    pdv.context_id
                )));
            }
            if pdv.is_command {
                if self.command_context.is_some_and(|c| c != pdv.context_id) {
                    return Err(AssociationError::Protocol(
                        "command fragments on two contexts".into(),
                    ));
                }
                self.command_context = Some(pdv.context_id);
                if self.command_buf.len() + pdv.data.len() > MAX_COMMAND_SET {
                    return Err(CommandError::TooLarge.into());
                }
                self.command_buf.extend_from_slice(&pdv.data);
                if pdv.is_last {
                    let command = CommandSet::decode(&self.command_buf);
                    self.command_buf.clear();
                    let context_id = self.command_context.take().unwrap_or(pdv.context_id);
                    return Ok(Some(Event::Command {
                        context_id,
                        command: command?,
                    }));
                }
            } else {
                if self.command_context.is_some() {
                    return Err(AssociationError::Protocol(
                        "data set fragment before the command set was complete".into(),
                    ));
                }
                return Ok(Some(Event::Data(pdv)));
            }
        }
        Ok(None)
    }

    fn absorb(
        &mut self,
        frame: Option<Result<Frame, PduError>>,
    ) -> Result<Option<Event>, AssociationError> {
        match frame {
            None => Err(PduError::Closed.into()),
            Some(Err(e)) => Err(e.into()),
            Some(Ok(Frame::PData(pdvs))) => {
                self.queued.extend(pdvs);
                Ok(None)
            }
            Some(Ok(Frame::Other(Pdu::ReleaseRQ))) => Ok(Some(Event::ReleaseRequested)),
            Some(Ok(Frame::Other(Pdu::ReleaseRP))) => Ok(Some(Event::ReleaseReplied)),
            Some(Ok(Frame::Other(Pdu::AbortRQ { .. }))) => Ok(Some(Event::Aborted)),
            Some(Ok(Frame::Other(pdu))) => Err(AssociationError::Protocol(format!(
                "unexpected PDU {}",
                pdu.short_description()
            ))),
        }
    }

    /// Collect a whole (small) data set: identifiers and responses. Larger than `limit` is
    /// a protocol error rather than unbounded memory.
    pub async fn receive_data_set(
        &mut self,
        context_id: u8,
        limit: usize,
    ) -> Result<Vec<u8>, AssociationError> {
        let mut out = Vec::new();
        loop {
            match self.next_event().await? {
                Event::Data(pdv) => {
                    if pdv.context_id != context_id {
                        return Err(AssociationError::Protocol(
                            "data set on another context".into(),
                        ));
                    }
                    if out.len() + pdv.data.len() > limit {
                        return Err(AssociationError::Protocol(format!(
                            "data set larger than {limit} bytes"
                        )));
                    }
                    out.extend_from_slice(&pdv.data);
                    if pdv.is_last {
                        return Ok(out);
                    }
                }
                Event::Aborted => return Err(AssociationError::Aborted),
                other => {
                    return Err(AssociationError::Protocol(format!(
                        "expected a data set, got {}",
                        describe_event(&other)
                    )))
                }
            }
        }
    }

    /// Largest PDV payload we may put in one PDU.
    fn max_fragment(&self) -> usize {
        (self.send_max_pdu as usize).saturating_sub(6).max(1)
    }

    /// Send a command set, in its own PDU(s).
    pub async fn send_command(
        &mut self,
        context_id: u8,
        command: &CommandSet,
    ) -> Result<(), AssociationError> {
        let bytes = command.encode();
        self.send_fragments(context_id, true, &bytes).await?;
        self.writer.flush().await?;
        Ok(())
    }

    /// Send a command set and its in-memory data set (each in PDUs of its own), in as few
    /// writes as the PDU size allows: the command goes out with the data set's first PDU.
    pub async fn send_message(
        &mut self,
        context_id: u8,
        command: &CommandSet,
        data: &[u8],
    ) -> Result<(), AssociationError> {
        self.send_message_parts(context_id, command, &[data]).await
    }

    /// [`send_message`](Self::send_message) with the data set in parts (as it was received):
    /// a PDV may span parts, which are written gathered (vectored), not copied together.
    pub async fn send_message_parts<B: AsRef<[u8]>>(
        &mut self,
        context_id: u8,
        command: &CommandSet,
        parts: &[B],
    ) -> Result<(), AssociationError> {
        let bytes = command.encode();
        self.send_fragments(context_id, true, &bytes).await?;
        let max = self.max_fragment();
        // PDVs of the largest size the peer takes, each gathered from as many parts as it
        // spans: a data set received in pieces of any size (odd ones too: an MTOM part
        // read as the network delivered it) goes out in even, full fragments (PS3.5 7.1:
        // a data set's length is even), whatever its pieces were.
        // (Plain loops: an iterator adapter held across the writes makes the future's
        // `Send` depend on lifetimes the compiler cannot prove for every caller.)
        let total: usize = parts.iter().map(|p| p.as_ref().len()).sum();
        if total == 0 {
            self.writer.write_pdv(context_id, false, true, &[]).await?;
            self.writer.flush().await?;
            return Ok(());
        }
        let (mut part, mut at, mut sent) = (0usize, 0usize, 0usize);
        while sent < total {
            let want = max.min(total - sent);
            let mut slices: Vec<&[u8]> = Vec::new();
            let mut got = 0;
            while got < want {
                let piece = parts[part].as_ref();
                let take = (piece.len() - at).min(want - got);
                if take > 0 {
                    slices.push(&piece[at..at + take]);
                }
                at += take;
                got += take;
                if at == piece.len() {
                    part += 1;
                    at = 0;
                }
            }
            sent += want;
            self.writer
                .write_pdv_gathered(context_id, false, sent == total, &slices)
                .await?;
        }
        self.writer.flush().await?;
        Ok(())
    }

    /// Send an in-memory data set, in its own PDU(s).
    pub async fn send_data(&mut self, context_id: u8, data: &[u8]) -> Result<(), AssociationError> {
        self.send_fragments(context_id, false, data).await?;
        self.writer.flush().await?;
        Ok(())
    }

    async fn send_fragments(
        &mut self,
        context_id: u8,
        is_command: bool,
        data: &[u8],
    ) -> Result<(), AssociationError> {
        let max = self.max_fragment();
        if data.is_empty() {
            self.writer
                .write_pdv(context_id, is_command, true, &[])
                .await?;
            return Ok(());
        }
        let mut chunks = data.chunks(max).peekable();
        while let Some(chunk) = chunks.next() {
            let last = chunks.peek().is_none();
            self.writer
                .write_pdv(context_id, is_command, last, chunk)
                .await?;
        }
        Ok(())
    }

    /// Stream exactly `length` bytes of a data set from `source` (a blob on disk), one PDU
    /// at a time; memory use is one fragment.
    pub async fn send_data_from<R: AsyncRead + Unpin>(
        &mut self,
        context_id: u8,
        source: &mut R,
        length: u64,
    ) -> Result<(), AssociationError> {
        let max = self.max_fragment();
        let mut buf = vec![0u8; max.min(length.max(1) as usize)];
        let mut remaining = length;
        if remaining == 0 {
            self.writer.write_pdv(context_id, false, true, &[]).await?;
        }
        while remaining > 0 {
            let n = (remaining as usize).min(buf.len());
            source
                .read_exact(&mut buf[..n])
                .await
                .map_err(|e| AssociationError::Pdu(PduError::Io(e)))?;
            remaining -= n as u64;
            self.writer
                .write_pdv(context_id, false, remaining == 0, &buf[..n])
                .await?;
        }
        self.writer.flush().await?;
        Ok(())
    }

    /// Answer an A-RELEASE-RQ (PS3.8 7.2) and close.
    pub async fn reply_release(mut self) {
        let _ = self.writer.write_pdu(&Pdu::ReleaseRP).await;
        self.writer.shutdown().await;
    }

    /// Request release as the requestor and wait for the reply (PS3.8 7.2).
    pub async fn release(mut self) -> Result<(), AssociationError> {
        self.writer.write_pdu(&Pdu::ReleaseRQ).await?;
        loop {
            match self.next_event().await {
                Ok(Event::ReleaseReplied) | Err(AssociationError::Pdu(PduError::Closed)) => break,
                // A release collision (PS3.8 7.2.4): answer theirs too.
                Ok(Event::ReleaseRequested) => {
                    let _ = self.writer.write_pdu(&Pdu::ReleaseRP).await;
                }
                Ok(Event::Aborted) => return Err(AssociationError::Aborted),
                Ok(_) => continue,
                Err(e) => return Err(e),
            }
        }
        self.writer.shutdown().await;
        Ok(())
    }

    /// Send A-ABORT (PS3.8 7.3) and close.
    pub async fn abort(mut self) {
        let _ = self
            .writer
            .write_pdu(&Pdu::AbortRQ {
                source: AbortRQSource::ServiceUser,
            })
            .await;
        self.writer.shutdown().await;
    }
}

pub fn describe_event(event: &Event) -> String {
    match event {
        Event::Command { command, .. } => command.field.name().to_string(),
        Event::Data(_) => "data set fragment".into(),
        Event::ReleaseRequested => "A-RELEASE-RQ".into(),
        Event::ReleaseReplied => "A-RELEASE-RP".into(),
        Event::Aborted => "A-ABORT".into(),
    }
}
