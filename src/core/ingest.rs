//! The one ingest path of the fronts: C-STORE and STOW-RS hand the core an instance's bytes as
//! they arrive ([`Incoming`]) and what the sender said of it ([`Expected`]); the core has it
//! checked, parsed up to Pixel Data, fsynced, renamed into place and indexed (`store::ingest`)
//! before the front acknowledges it, and the operation's ticket learns its patient and study.
//!
//! - [`Core::incoming`]: a new instance's bytes, written as they stream in. On the filesystem
//!   store a temp file; an object store would buffer or upload here, the fronts unchanged.
//!   Dropped or [`aborted`](Incoming::abort) before it is ingested, nothing stays.
//! - [`Core::ingest`]: durable and indexed now, one instance (C-STORE), in a group commit
//!   with whatever other associations and requests store meanwhile
//!   ([`Committer`](crate::store::ingest::Committer): one round of fsyncs and one index
//!   transaction for the group).
//! - [`Core::ingest_durable`] then [`Core::index`]: durable now (in a group commit too),
//!   indexed in batches of one index transaction each (STOW-RS: many parts per request).
//!   Not indexed means not acknowledged: a batch the index refuses has its files removed
//!   and its instances failed.
//!
//! The trust decision and the one audit record: a STOW-RS request is admitted once
//! ([`Core::admit`]) and its [`Ticket`] finished by the front; the C-STOREs of one association
//! are decided one by one as they arrive and share one record ([`Stores`], one "instances
//! transferred" event per association, PS3.15 A.5.3.6 style).

use super::{Core, Refusal, Ticket};
use crate::model::InstanceLocation;
use crate::status::code;
use crate::store::ingest::{index_batch, InMemory, MemoryHold, Received};
use crate::store::{InstanceRecord, PendingBlob};
use crate::trust::{Caller, Decision, Operation, Trust};
use std::sync::Arc;

pub use crate::model::ingest::{Expected, IngestFailure};

/// An instance's bytes on their way in, before they are checked and stored: held in memory
/// while it is small (checked and parsed from there, and written to its temp file in one
/// `writev` on the ingest's blocking thread: no hand-off per write, no read-back), in a temp
/// file once it passes [`IN_MEMORY_BYTES`] (a large instance is never held whole).
#[derive(Debug)]
pub struct Incoming {
    blobs: crate::store::BlobStore,
    /// The bytes so far while in memory, and their share of the process's budget
    /// (`store::ingest::MEMORY_BUDGET`).
    pieces: Vec<bytes::Bytes>,
    hold: MemoryHold,
    len: u64,
    /// The temp file, once spilled.
    file: Option<PendingBlob>,
}

/// Most bytes of one instance held in memory while it arrives (a 512x512 CT slice is 0.5 MB;
/// what is larger streams to its temp file).
pub const IN_MEMORY_BYTES: u64 = 4 * 1024 * 1024;

fn cannot_write(e: crate::store::BlobError) -> IngestFailure {
    IngestFailure::new(code::OUT_OF_RESOURCES, format!("cannot write: {e}"))
}

impl Incoming {
    /// Append the next bytes (`OUT_OF_RESOURCES`, "cannot write: ..." when the store cannot).
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), IngestFailure> {
        match &mut self.file {
            Some(file) => {
                self.len += bytes.len() as u64;
                file.write(bytes).await.map_err(cannot_write)
            }
            None => self.push(bytes::Bytes::copy_from_slice(bytes)).await,
        }
    }

    /// [`write`](Self::write) without a copy while the instance is held in memory.
    pub async fn push(&mut self, bytes: bytes::Bytes) -> Result<(), IngestFailure> {
        self.len += bytes.len() as u64;
        if let Some(file) = &mut self.file {
            return file.write(&bytes).await.map_err(cannot_write);
        }
        let more = bytes.len() as u64;
        self.pieces.push(bytes);
        if self.len > IN_MEMORY_BYTES || !self.hold.grow(more) {
            // Too large to hold, or the process holds enough already: to a temp file from
            // here on.
            let mut file = self.blobs.begin().await.map_err(cannot_write)?;
            for piece in std::mem::take(&mut self.pieces) {
                file.write(&piece).await.map_err(cannot_write)?;
            }
            self.file = Some(file);
            self.hold = MemoryHold::default();
        }
        Ok(())
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Give up on the instance: nothing of it stays.
    pub async fn abort(self) {
        if let Some(file) = self.file {
            file.abort().await
        }
    }

    fn into_received(self) -> Received {
        match self.file {
            Some(file) => Received::File(file),
            None => Received::Memory(InMemory {
                pieces: self.pieces,
                hold: self.hold,
            }),
        }
    }
}

/// An instance stored, durable and indexed: acknowledge it with `status` (success, or a
/// warning such as B007).
#[derive(Debug, Clone)]
pub struct StoredInstance {
    pub status: u16,
    pub location: InstanceLocation,
}

/// An instance durable in the store but not yet indexed, so not yet to be acknowledged:
/// [`Core::index`] completes it.
#[derive(Debug, Clone)]
pub struct Durable {
    status: u16,
    record: InstanceRecord,
}

impl Durable {
    pub fn status(&self) -> u16 {
        self.status
    }

    pub fn location(&self) -> InstanceLocation {
        self.record.location()
    }
}

impl Core {
    /// Start receiving an instance (in memory first: a temp file is made when it grows past
    /// [`IN_MEMORY_BYTES`], or by the ingest).
    pub async fn incoming(&self) -> Result<Incoming, IngestFailure> {
        Ok(Incoming {
            blobs: self.blobs.clone(),
            pieces: Vec::new(),
            hold: MemoryHold::default(),
            len: 0,
            file: None,
        })
    }

    /// Make a received instance durable and indexed; the ticket learns its patient and
    /// study. Any failure leaves nothing of it.
    pub async fn ingest(
        &self,
        ticket: &mut Ticket,
        incoming: Incoming,
        expected: Expected<'_>,
    ) -> Result<StoredInstance, IngestFailure> {
        let ingested = self
            .committer
            .persist(incoming.into_received(), expected)
            .await?;
        touch(ticket, std::slice::from_ref(&ingested.record));
        Ok(StoredInstance {
            status: ingested.status,
            location: ingested.record.location(),
        })
    }

    /// The first half of [`Core::ingest`], for many instances at once: durable, not yet
    /// indexed (no ticket: the parts of one request are stored concurrently).
    pub async fn ingest_durable(
        &self,
        incoming: Incoming,
        expected: Expected<'_>,
    ) -> Result<Durable, IngestFailure> {
        let ingested = self
            .committer
            .store_blob(incoming.into_received(), expected)
            .await?;
        Ok(Durable {
            status: ingested.status,
            record: ingested.record,
        })
    }

    /// The second half: index `batch` in one transaction; the ticket learns their patients
    /// and studies. On `Err` all of them failed and their files are gone.
    pub async fn index(
        &self,
        ticket: &mut Ticket,
        batch: Vec<Durable>,
    ) -> Result<(), IngestFailure> {
        let records: Vec<InstanceRecord> = batch.into_iter().map(|d| d.record).collect();
        index_batch(&self.blobs, self.index.as_ref(), &records).await?;
        touch(ticket, &records);
        Ok(())
    }

    /// The C-STOREs of one association (see [`Stores`]).
    pub fn stores(&self, caller: &Caller) -> Stores {
        Stores {
            trust: self.trust.clone(),
            caller: caller.clone(),
            ticket: None,
            stored: 0,
            failed: 0,
        }
    }
}

/// The ticket learns the patients and studies of stored instances (those that name one).
fn touch(ticket: &mut Ticket, records: &[InstanceRecord]) {
    let named = |v: &str| (!v.is_empty()).then(|| v.to_string());
    let patients: Vec<String> = records
        .iter()
        .filter_map(|r| named(r.patient_id()))
        .collect();
    let studies: Vec<String> = records
        .iter()
        .filter_map(|r| named(r.study_instance_uid()))
        .collect();
    ticket.touch_ids(&patients, &studies);
}

/// The C-STOREs of one association, owed one audit record for all of them, written by
/// [`Stores::finish`] when the association ends: "success", "failure" or "partial" with the
/// counts of instances stored and failed, and the patients and studies stored. Each instance
/// is decided as it arrives ([`Stores::admit`]: the audit trail may fail mid-association, and
/// then the next store is refused, fail closed); a refusal is not recorded on its own but
/// counted as a failed instance in that record. Nothing stored or failed: no record.
#[derive(Debug)]
pub struct Stores {
    trust: Arc<Trust>,
    caller: Caller,
    /// Taken at the first instance; dropped unfinished it still writes its record.
    ticket: Option<Ticket>,
    stored: u32,
    failed: u32,
}

impl Stores {
    /// The trust decision for the next instance; on a permit, the ticket to ingest it with.
    pub fn admit(&mut self) -> Result<&mut Ticket, Refusal> {
        let refusal = match self.trust.decide(&self.caller, Operation::Store) {
            Decision::Permit => return Ok(self.ticket()),
            Decision::Unauthenticated(why) => Refusal::Unauthenticated(why),
            Decision::Deny(why) => Refusal::Forbidden(why),
            Decision::Unavailable(why) => Refusal::Unavailable(why),
        };
        Err(refusal)
    }

    fn ticket(&mut self) -> &mut Ticket {
        let (trust, caller) = (&self.trust, &self.caller);
        self.ticket
            .get_or_insert_with(|| Ticket::new(trust.clone(), caller, Operation::Store))
    }

    /// The trace the association's C-STOREs belong to (one trace, one audit record): named
    /// in the record if it is set before the first instance is admitted.
    pub fn traced(&mut self, trace_id: String) {
        if self.ticket.is_none() {
            self.caller.trace_id = Some(trace_id);
        }
    }

    /// An instance stored (ingested with the ticket, or taken by a retrieve's cache fill,
    /// whose own record names its patient).
    pub fn stored(&mut self) {
        self.ticket();
        self.stored += 1;
    }

    /// An instance not stored (refused, or failed on its way in).
    pub fn failed(&mut self) {
        self.ticket();
        self.failed += 1;
    }

    /// Instances stored so far.
    pub fn stored_count(&self) -> u32 {
        self.stored
    }

    /// Write the association's record, if anything was stored or failed.
    pub async fn finish(mut self) {
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        if self.stored == 0 && self.failed == 0 {
            // Admitted, then cut off before any instance was in.
            ticket.discard();
            return;
        }
        let result = match (self.stored, self.failed) {
            (_, 0) => "success",
            (0, _) => "failure",
            _ => "partial",
        };
        let detail = format!("{} instances stored, {} failed", self.stored, self.failed);
        ticket.finish(result, detail).await;
    }
}
