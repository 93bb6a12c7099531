//! The one query model, retrieve model and ingest model every layer shares: fronts translate into
//! them, the core answers them, the index and the sources match and locate by them. They
//! know nothing of any of those (dicom-rs layering: the lowest layer above `dicom-*`).
//!
//! - [`query`]: a [`Query`] (a level, matching keys on indexed attributes, paging, PS3.4
//!   C.2.2.2) and its [`Match`] rows.
//! - [`retrieve`]: a [`Selection`] of instances by unique keys, and where an instance lives
//!   ([`InstanceLocation`]).
//! - [`ingest`]: what a sender says of an instance it stores ([`Expected`]) and why one was
//!   not stored ([`IngestFailure`]).

pub mod ingest;
pub mod query;
pub mod retrieve;

pub use ingest::{Expected, IngestFailure};
pub use query::{AttrKind, IndexedAttr, Level, Match, Matcher, Query, QueryKey, INDEXED_ATTRS};
pub use retrieve::{InstanceLocation, Selection};
