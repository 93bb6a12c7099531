//! beeldbrug: a DICOM gateway for Dutch national image exchange (Twiin "Beeldbeschikbaarheid").
//!
//! The layout follows fronts → core → sources:
//!
//! - [`dimse`]: the DIMSE front, our own message layer on `dicom-ul`'s PDU codec: PDU framing
//!   with strict size checks and timeouts, association negotiation, command sets, status
//!   tables, and one module per service class (echo, store, find, move, get) as SCP and SCU.
//! - [`http`]: the HTTP listener: `/health`, `/ready` (the checks that the gateway can take
//!   work: index, blobs, disk, audit trail, PACS), and [`dicomweb`] under `/dicomweb`.
//! - [`dicomweb`]: the DICOMweb front (PS3.18): QIDO-RS, WADO-RS, STOW-RS, streamed.
//! - [`core`]: the one query model ([`core::Query`]) and retrieve model ([`core::Selection`])
//!   that every front translates into.
//! - [`trust`]: the one decision point every query and retrieval passes, and its audit trail.
//! - [`xml`]: the one XML reader (namespace-resolved element tree, size, depth and node
//!   limits, no DTDs) for the SOAP and SAML messages the trust layer and later the XDS-I front
//!   read.
//! - [`store`]: blobs on the filesystem and the index (SQLite or PostgreSQL).
//! - [`pacs`]: gateway mode: the hospital's PACS as the source behind the cache (C-FIND for
//!   queries, C-GET / C-MOVE retrieves streamed as they arrive and shared between requests,
//!   cache rules, the capability probe, forwarding STOW-RS studies to the PACS).
//! - [`cli`]: the command line (serve, echo, find, store, move, get, generate, probe, forward).
//! - [`config`]: typed configuration (embedded default TOML, file, `BEELDBRUG_*` environment),
//!   every section's types included: it imports none of the modules it configures.
//! - [`sop`]: the SOP class and transfer syntax UIDs that the fronts, the sources and the
//!   configuration name (also `dimse::sop`).
//! - [`server`]: wiring it together for `beeldbrug serve`, and the shutdown deadline.
//! - [`clock`]: the wall clock (RFC 3339 and Unix seconds) every record and queue reads.
//! - [`oplog`]: logging setup and the operations log (one line per association and request).
//! - [`testdata`]: the deterministic synthetic-study generator used by tests and benchmarks
//!   (`test-data/README.md` says why it lives here and how to make data).

pub mod cli;
pub mod clock;
pub mod config;
pub mod core;
pub mod dicomweb;
pub mod dimse;
pub mod http;
pub mod oplog;
pub mod pacs;
pub mod server;
pub mod sop;
pub mod store;
pub mod testdata;
pub mod trust;
pub mod xml;
