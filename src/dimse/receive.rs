//! Receiving the data set of a C-STORE-RQ (PS3.4 B.2, PS3.7 9.1.1), shared by the Storage SCP
//! and the C-GET retrieves of the PACS client, where the PACS sends the instances as C-STORE
//! sub-operations on our own association (PS3.4 C.4.3).
//!
//! Two ways in:
//! - [`header_for`] and [`next_fragment`]: the Part 10 header and the data set as it arrives,
//!   for the durable ingest of the Storage SCP (through the core: checked, fsynced, renamed
//!   and indexed before the answer);
//! - [`receive_into_fill`]: into a cache fill (`store::ingest::cache_fill`), for copies of
//!   what a PACS holds, fetched by our own retrieves: the sub-operation can be answered once
//!   the data set is in, while the fill's thread writes, checks and renames it behind.
//!
//! [`MoveArrivals`] is how the Storage SCP reaches the C-MOVE retrieves waiting for their
//! sub-operations, without the DIMSE layer depending on the PACS client that implements it.

use super::association::{describe_event, PresentationContext};
use super::command::CommandSet;
use super::dataset::file_header;
use super::status::code;
use super::{Association, AssociationError, Event};
use crate::core::InstanceLocation;
use crate::store::ingest::{Expected, FillWriter};

/// Why a store failed, as the C-STORE status and an error comment.
pub(crate) struct Failure(pub u16, pub String);

/// The C-MOVE retrieves of ours that wait for their sub-operations (PS3.4 C.4.2.2: they
/// arrive on the Storage SCP, on an association the PACS opens).
#[async_trait::async_trait]
pub trait MoveArrivals: Send + Sync + std::fmt::Debug {
    /// The cache fill of the retrieve this C-STORE-RQ is a sub-operation of, when the PACS
    /// names it in the Move Originator fields (PS3.7 9.3.1.1). Its data set then goes into
    /// that fill, handled like a C-GET sub-operation: answered once received, stored without
    /// fsync behind it and indexed by the retrieve. `None`: an ordinary C-STORE (or a PACS
    /// that leaves the originator out), stored durably by the SCP.
    fn fill_for(&self, rq: &CommandSet) -> Option<FillWriter>;

    /// An instance the Storage SCP stored and indexed itself: hand it to the retrieve whose
    /// selection holds it (preferring the one the Move Originator Message ID names), if any.
    /// Resolves once that retrieve took it, so a slow retrieve slows the PACS.
    async fn stored(&self, originator_id: Option<u16>, loc: InstanceLocation);
}

/// What a C-STORE-RQ says about its instance, to check against the data set.
pub(crate) fn expected(rq: &CommandSet) -> Expected<'_> {
    Expected {
        sop_class: rq.affected_sop_class.as_deref(),
        sop_instance: rq.affected_sop_instance.as_deref(),
        study_uid: None,
    }
}

/// The Part 10 header for the data set of `rq` received on `pc`.
pub(crate) fn header_for(
    assoc: &Association,
    rq: &CommandSet,
    pc: &PresentationContext,
) -> Result<Vec<u8>, Failure> {
    let sop_class = rq.affected_sop_class.as_deref().unwrap_or_default();
    let sop_instance = rq.affected_sop_instance.as_deref().unwrap_or_default();
    file_header(
        sop_class,
        sop_instance,
        &pc.transfer_syntax,
        &assoc.calling_ae,
    )
    .map_err(|e| Failure(code::CANNOT_UNDERSTAND, e.to_string()))
}

/// The next fragment of the data set on `context_id`: `(bytes, is_last)`.
pub(crate) async fn next_fragment(
    assoc: &mut Association,
    context_id: u8,
) -> Result<(bytes::Bytes, bool), AssociationError> {
    match assoc.next_event().await? {
        Event::Data(pdv) if pdv.context_id != context_id => Err(AssociationError::Protocol(
            "data set fragment on another context".into(),
        )),
        Event::Data(pdv) => Ok((pdv.data, pdv.is_last)),
        Event::Aborted => Err(AssociationError::Aborted),
        other => Err(AssociationError::Protocol(format!(
            "expected C-STORE data set, got {}",
            describe_event(&other)
        ))),
    }
}

/// Receive the data set of a C-STORE-RQ into a cache fill: once this returns `Ok(Ok(()))`
/// the whole data set has been handed to the fill, which stores it (or reports why not)
/// in order behind. Outer `Err`: the association is broken (the instance is dropped, and
/// with it its temp file); inner: this instance failed, the association goes on.
pub(crate) async fn receive_into_fill(
    fill: &FillWriter,
    assoc: &mut Association,
    context_id: u8,
    rq: &CommandSet,
    pc: &PresentationContext,
) -> Result<Result<(), Failure>, AssociationError> {
    let header = match header_for(assoc, rq, pc) {
        Ok(h) => h,
        Err(failure) => {
            drain_data_set(assoc).await?;
            return Ok(Err(failure));
        }
    };
    let mut instance = fill.begin(header);
    loop {
        let (data, is_last) = next_fragment(assoc, context_id).await?;
        if instance.push(data).await.is_err() {
            if !is_last {
                drain_data_set(assoc).await?;
            }
            return Ok(Err(Failure(
                code::OUT_OF_RESOURCES,
                "the cache fill has stopped".into(),
            )));
        }
        if is_last {
            break;
        }
    }
    Ok(instance
        .finish(&expected(rq))
        .await
        .map_err(|e| Failure(code::OUT_OF_RESOURCES, e.to_string())))
}

/// Read and discard the rest of a data set we will not use (so the association stays in step).
pub(crate) async fn drain_data_set(assoc: &mut Association) -> Result<(), AssociationError> {
    loop {
        match assoc.next_event().await? {
            Event::Data(pdv) if pdv.is_last => return Ok(()),
            Event::Data(_) => continue,
            Event::Aborted => return Err(AssociationError::Aborted),
            other => {
                return Err(AssociationError::Protocol(format!(
                    "expected data set, got {}",
                    describe_event(&other)
                )))
            }
        }
    }
}
