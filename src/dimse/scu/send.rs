//! C-STORE as SCU (PS3.4 B.2): from files on disk (CLI) and from the blob store
//! (C-MOVE / C-GET sub-operations). Data sets stream from disk one PDU at a time.

use super::{connect, ScuOptions};
use crate::dimse::association::{Association, AssociationError};
use crate::dimse::command::{CommandField, CommandSet};
use crate::dimse::dataset::{read_layout, DatasetError, FileLayout};
use crate::dimse::negotiate::ProposedContext;
use crate::dimse::{sop, Event};
use crate::transcode::{self, Plan, WireSyntax};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use tokio::io::AsyncSeekExt;

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Association(#[from] AssociationError),
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    #[error(
        "peer accepted no context for SOP class {sop_class} in transfer syntax {transfer_syntax}"
    )]
    NoContext {
        sop_class: String,
        transfer_syntax: String,
    },
    #[error("cannot read {0}: {1}")]
    Io(String, std::io::Error),
}

impl SendError {
    /// Errors that end the association, as opposed to failing one instance.
    pub fn is_fatal(&self) -> bool {
        matches!(self, SendError::Association(_))
    }
}

/// The result of one C-STORE sub-operation.
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    pub status: u16,
    /// A C-CANCEL-RQ for this message ID arrived while we waited (C-GET, PS3.4 C.4.3.3).
    pub cancel_for: Option<u16>,
}

/// Which stored instances [`send_file`] may re-encode when the peer accepted no context in
/// their own syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Uncompressed ones only, into another uncompressed syntax (the CLI and the forward to
    /// the PACS: a compressed file goes as it is or fails, never silently decompressed).
    Uncompressed,
    /// Whatever [`crate::transcode::choose`] makes of the contexts the peer accepted: C-GET
    /// and C-MOVE sub-operations, where a peer proposing only Explicit VR LE must still
    /// receive a JPEG 2000 study, one accepting only JPEG-LS gets it encoded, and the
    /// configured wire syntax (`[dimse] wire_syntax`) is used for uncompressed instances
    /// where accepted (issue 13).
    Transcode(Option<WireSyntax>),
    /// As [`Fallback::Uncompressed`], but an instance stored uncompressed goes in the wire
    /// syntax where the peer accepted it (the forward to the PACS, `[pacs] wire_syntax`).
    Wire(WireSyntax),
}

impl Fallback {
    /// C-GET/C-MOVE sub-operations with `[dimse] wire_syntax` (validated at start; a bad
    /// value here means none).
    pub fn for_retrieve(wire_syntax: &str) -> Fallback {
        Fallback::Transcode(WireSyntax::parse(wire_syntax).ok().flatten())
    }
}

/// [`send_file_with`] re-encoding uncompressed instances only.
pub async fn send_file(
    assoc: &mut Association,
    path: &Path,
    originator: Option<(&str, u16)>,
) -> Result<Sent, SendError> {
    send_file_with(assoc, path, originator, Fallback::Uncompressed).await
}

/// Send one Part 10 file over `assoc`, streaming its data set. Uses a context for its SOP
/// class in its own transfer syntax; else, as `fallback` allows, one in an uncompressed
/// syntax the peer accepted, re-encoding the instance into it (held in memory, one at a
/// time).
pub async fn send_file_with(
    assoc: &mut Association,
    path: &Path,
    originator: Option<(&str, u16)>,
    fallback: Fallback,
) -> Result<Sent, SendError> {
    let p = path.to_path_buf();
    let (layout, in_memory) = tokio::task::spawn_blocking(move || load(&p))
        .await
        .map_err(|e| SendError::Io(path.display().to_string(), std::io::Error::other(e)))??;
    let sop_class = layout.meta.media_storage_sop_class_uid().to_string();
    let sop_instance = layout.meta.media_storage_sop_instance_uid().to_string();
    let stored_ts = layout.meta.transfer_syntax().to_string();
    let (pc, plan) = context_to_send(assoc, &sop_class, &stored_ts, fallback)
        .map(|(pc, plan)| (pc.clone(), plan))
        .ok_or_else(|| SendError::NoContext {
            sop_class: sop_class.clone(),
            transfer_syntax: stored_ts.clone(),
        })?;

    let id = assoc.next_message_id();
    let mut rq = CommandSet::request(CommandField::CStoreRq, id, &sop_class).with_data_set(true);
    rq.affected_sop_instance = Some(sop_instance);
    if let Some((ae, msg)) = originator {
        rq.move_originator_ae = Some(ae.to_string());
        rq.move_originator_id = Some(msg);
    }
    if plan == Plan::AsStored {
        match in_memory {
            // The usual case: command and data set in one go, no further hand-off.
            Some(data) => assoc.send_message(pc.id, &rq, &data).await?,
            None => {
                let mut file = tokio::fs::File::open(path)
                    .await
                    .map_err(|e| SendError::Io(path.display().to_string(), e))?;
                file.seek(SeekFrom::Start(layout.dataset_offset))
                    .await
                    .map_err(|e| SendError::Io(path.display().to_string(), e))?;
                assoc.send_command(pc.id, &rq).await?;
                assoc
                    .send_data_from(pc.id, &mut file, layout.dataset_len())
                    .await?;
            }
        }
    } else {
        // Re-encode in memory into the accepted syntax (crate::transcode): decode compressed
        // pixel data, inflate or deflate the data set, encode frames, or just change the VR
        // encoding. One instance at a time.
        let p = path.to_path_buf();
        let target = pc.transfer_syntax.clone();
        let bytes = tokio::task::spawn_blocking(move || transcode::transcode_dataset(&p, &target))
            .await
            .map_err(|e| SendError::Io(path.display().to_string(), std::io::Error::other(e)))?
            .map_err(DatasetError::from)?;
        assoc.send_message(pc.id, &rq, &bytes).await?;
    }
    store_response(assoc, id).await
}

/// Send one instance whose data set is in memory as a source delivered it (`data_set`: the
/// stored file's bytes after its meta group, in the pieces they came in), on a context for
/// its class in its own syntax, without reading the file. `Ok(None)`: the peer accepted no
/// such context; send the file instead ([`send_file_with`] may re-encode it).
pub async fn send_data_set(
    assoc: &mut Association,
    sop_class: &str,
    sop_instance: &str,
    transfer_syntax: &str,
    data_set: &[bytes::Bytes],
    originator: Option<(&str, u16)>,
) -> Result<Option<Sent>, SendError> {
    let Some(pc) = assoc
        .contexts
        .iter()
        .find(|c| c.abstract_syntax == sop_class && c.transfer_syntax == transfer_syntax)
        .map(|c| c.id)
    else {
        return Ok(None);
    };
    let id = assoc.next_message_id();
    let mut rq = CommandSet::request(CommandField::CStoreRq, id, sop_class).with_data_set(true);
    rq.affected_sop_instance = Some(sop_instance.to_string());
    if let Some((ae, msg)) = originator {
        rq.move_originator_ae = Some(ae.to_string());
        rq.move_originator_id = Some(msg);
    }
    assoc.send_message_parts(pc, &rq, data_set).await?;
    store_response(assoc, id).await.map(Some)
}

/// Wait for the C-STORE-RSP to message `id`, noting a C-CANCEL-RQ that comes meanwhile.
async fn store_response(assoc: &mut Association, id: u16) -> Result<Sent, SendError> {
    let mut cancel_for = None;
    loop {
        match assoc.next_event().await? {
            Event::Command { command, .. }
                if command.field == CommandField::CStoreRsp
                    && command.message_id_responded == Some(id) =>
            {
                return Ok(Sent {
                    status: command.status(),
                    cancel_for,
                });
            }
            Event::Command { command, .. } if command.field == CommandField::CCancelRq => {
                cancel_for = command.message_id_responded;
            }
            Event::Aborted => return Err(AssociationError::Aborted.into()),
            other => {
                return Err(AssociationError::Protocol(format!(
                    "expected C-STORE-RSP, got {}",
                    crate::dimse::association::describe_event(&other)
                ))
                .into())
            }
        }
    }
}

/// Data sets up to this size are read into memory in one blocking call with the file's meta
/// group; larger ones stream from the file one PDU at a time.
const IN_MEMORY: u64 = 8 * 1024 * 1024;

/// The layout of a stored file and, when it is small enough, its data set.
fn load(path: &Path) -> Result<(FileLayout, Option<Vec<u8>>), SendError> {
    let layout = read_layout(path)?;
    let len = layout.dataset_len();
    if len > IN_MEMORY {
        return Ok((layout, None));
    }
    let io = |e| SendError::Io(path.display().to_string(), e);
    let mut file = std::fs::File::open(path).map_err(io)?;
    file.seek(SeekFrom::Start(layout.dataset_offset))
        .map_err(io)?;
    let mut data = Vec::with_capacity(len as usize);
    file.take(len).read_to_end(&mut data).map_err(io)?;
    if data.len() as u64 != len {
        return Err(io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    Ok((layout, Some(data)))
}

/// The accepted context to send an instance of `sop_class` stored in `stored_ts` on, and
/// whether it goes as stored: [`Fallback::Uncompressed`] allows the stored syntax or, for
/// an uncompressed instance, another uncompressed one; [`Fallback::Transcode`] whatever
/// [`transcode::choose`] makes of the accepted contexts.
fn context_to_send<'a>(
    assoc: &'a Association,
    sop_class: &str,
    stored_ts: &str,
    fallback: Fallback,
) -> Option<(&'a crate::dimse::association::PresentationContext, Plan)> {
    let for_class: Vec<_> = assoc
        .contexts
        .iter()
        .filter(|c| c.abstract_syntax == sop_class)
        .collect();
    let offered: Vec<&str> = for_class
        .iter()
        .map(|c| c.transfer_syntax.as_str())
        .collect();
    let (ts, plan) = match fallback {
        Fallback::Transcode(wire) => transcode::choose(stored_ts, &offered, wire)?,
        Fallback::Wire(w) if w.applies_to(stored_ts) && offered.contains(&w.uid()) => {
            (w.uid(), Plan::Transcode(w.uid().to_string()))
        }
        Fallback::Uncompressed | Fallback::Wire(_) => {
            if let Some(o) = offered.iter().find(|o| **o == stored_ts) {
                (*o, Plan::AsStored)
            } else if sop::is_native_le(stored_ts) {
                let o = offered.iter().find(|o| sop::is_native_le(o))?;
                (*o, Plan::Transcode(o.to_string()))
            } else {
                return None;
            }
        }
    };
    let pc = for_class.into_iter().find(|c| c.transfer_syntax == ts)?;
    Some((pc, plan))
}

/// [`propose_for_with`] for instances sent with [`Fallback::Uncompressed`].
pub fn propose_for(pairs: impl IntoIterator<Item = (String, String)>) -> Vec<ProposedContext> {
    propose_for_with(pairs, Fallback::Uncompressed)
}

/// Contexts for a set of (SOP class, transfer syntax) pairs: each pair as stored, plus an
/// uncompressed alternative per SOP class when the stored syntax is uncompressed, or, with
/// [`Fallback::Transcode`], can be decoded (the destination may not accept the compressed
/// one), and the wire syntax first where it applies ([`transcode::to_propose`]).
pub fn propose_for_with(
    pairs: impl IntoIterator<Item = (String, String)>,
    fallback: Fallback,
) -> Vec<ProposedContext> {
    let mut out: Vec<ProposedContext> = Vec::new();
    for (class, ts) in pairs {
        let add = |out: &mut Vec<ProposedContext>, tss: Vec<String>| {
            if !out
                .iter()
                .any(|c| c.abstract_syntax == class && c.transfer_syntaxes == tss)
            {
                out.push(ProposedContext {
                    abstract_syntax: class.clone(),
                    transfer_syntaxes: tss,
                    we_are_scp: false,
                });
            }
        };
        match fallback {
            Fallback::Transcode(wire) => {
                for tss in transcode::to_propose(&ts, wire) {
                    add(&mut out, tss);
                }
            }
            Fallback::Uncompressed | Fallback::Wire(_) => {
                if let Fallback::Wire(w) = fallback {
                    if w.applies_to(&ts) {
                        add(&mut out, vec![w.uid().to_string()]);
                    }
                }
                add(&mut out, vec![ts.clone()]);
                if sop::is_native_le(&ts) {
                    add(&mut out, super::native_syntaxes());
                }
            }
        }
    }
    out.truncate(128);
    out
}

/// Read the meta of each file and propose what they need.
pub fn propose_for_files(files: &[PathBuf]) -> (Vec<ProposedContext>, Vec<(PathBuf, String)>) {
    let mut pairs = Vec::new();
    let mut unreadable = Vec::new();
    for f in files {
        match read_layout(f) {
            Ok(l) => pairs.push((
                l.meta.media_storage_sop_class_uid().to_string(),
                l.meta.transfer_syntax().to_string(),
            )),
            Err(e) => unreadable.push((f.clone(), e.to_string())),
        }
    }
    (propose_for(pairs), unreadable)
}

/// Outcome of sending many files.
#[derive(Debug, Default)]
pub struct StoreReport {
    pub sent: u32,
    pub warnings: u32,
    pub failed: Vec<(PathBuf, String)>,
    pub bytes: u64,
}

/// Send files over one association, calling `progress` after each.
pub async fn store_files(
    opts: &ScuOptions,
    files: &[PathBuf],
    mut progress: impl FnMut(&Path, u64),
) -> Result<StoreReport, AssociationError> {
    let (contexts, unreadable) = propose_for_files(files);
    let mut report = StoreReport {
        failed: unreadable,
        ..Default::default()
    };
    if contexts.is_empty() {
        return Ok(report);
    }
    let mut assoc = connect(opts, &contexts).await?;
    for f in files {
        if report.failed.iter().any(|(p, _)| p == f) {
            continue;
        }
        let size = std::fs::metadata(f).map(|m| m.len()).unwrap_or(0);
        match send_file(&mut assoc, f, None).await {
            Ok(sent) => match crate::dimse::status::category(sent.status) {
                crate::dimse::status::Category::Success => report.sent += 1,
                crate::dimse::status::Category::Warning => {
                    report.sent += 1;
                    report.warnings += 1;
                }
                _ => report
                    .failed
                    .push((f.clone(), crate::dimse::status::describe(sent.status))),
            },
            Err(SendError::Association(e)) => return Err(e),
            Err(e) => report.failed.push((f.clone(), e.to_string())),
        }
        report.bytes += size;
        progress(f, size);
    }
    assoc.release().await?;
    Ok(report)
}
