//! The DIMSE front: our own message layer on `dicom-ul`'s PDU codec (dicom-rs has no DIMSE
//! layer), and one module per service class.
//!
//! - [`pdu`]: PDU framing with strict length checks and timeouts (PS3.8 9.3).
//! - [`negotiate`]: association establishment as acceptor and requestor (PS3.8 7.1, PS3.7 D.3).
//! - [`association`]: an established association; command/data reassembly (PS3.7 E, PS3.8 E).
//! - [`command`]: command set encode/decode (PS3.7 9.3, E.1).
//! - [`status`], [`dataset`], [`sop`]: status codes, data sets and UIDs, shared with the
//!   store (top-level modules, named here too).
//! - [`receive`]: the data set of a C-STORE-RQ into a temp file or a cache fill (Storage SCP
//!   and C-GET sub-operations), and the hook for our C-MOVEs' sub-operations.
//! - [`scp`]: the listener and the SCP side of C-ECHO, C-STORE, C-FIND, C-MOVE and C-GET.
//! - [`scu`]: the SCU side of the same services (CLI and C-MOVE sub-operations).

pub mod association;
pub mod command;
pub use crate::dataset;
pub mod negotiate;
pub mod pdu;
pub mod receive;
pub mod scp;
pub mod scu;
pub use crate::sop;
pub use crate::status;

pub use association::{Association, AssociationError, Event, PresentationContext};
pub use command::{CommandField, CommandSet};
pub use negotiate::{LinkOptions, ProposedContext};
