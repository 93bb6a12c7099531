//! beeldbrug: a DICOM gateway for Dutch national image exchange (Twiin "Beeldbeschikbaarheid").
//!
//! The layout follows the data, fronts → core → sources; each layer knows nothing above it:
//!
//! - Fronts translate a wire protocol into the core's terms and back, nothing more:
//!   - [`dimse`]: the DIMSE layer, our own message layer on `dicom-ul`'s PDU codec: PDU
//!     framing with strict size checks and timeouts, association negotiation, command sets,
//!     status tables, the SCU side (used by the PACS source and the CLI), and in
//!     [`dimse::scp`] the DIMSE front: the listener and one module per service class (echo,
//!     store, find, move, get).
//!   - [`http`]: the HTTP listener: `/health`, `/ready` (the checks that the gateway can take
//!     work: index, blobs, disk, audit trail, PACS), and [`dicomweb`] under `/dicomweb`.
//!   - [`dicomweb`]: the DICOMweb front (PS3.18): QIDO-RS, WADO-RS, STOW-RS, streamed.
//!   - [`xds`]: the SOAP front (IHE XDS-I.b / XCA-I): SOAP 1.2 + WS-Addressing + MTOM/XOP,
//!     dispatched by `wsa:Action`; RAD-69/75 and ITI-43/39 retrieves, streamed.
//!   - [`admin`]: the operator's console (issue 17) under `/admin`: a JSON API over the
//!     core (studies, transfers, queues) and trust (the audit trail, peers), and the
//!     single-page app that reads it, for our own administrators only.
//! - [`core`]: where every query and retrieve is answered and every stored instance taken
//!   in: the trust decision and the one audit record of each operation, the routes from
//!   each front to the sources, the cache or a shared, streamed fetch from a source, queries
//!   merged over the sources, and the one ingest path of C-STORE and STOW-RS (bytes as they
//!   arrive, acknowledged once fsynced and indexed).
//! - [`model`]: the one query model ([`model::Query`]), retrieve model
//!   ([`model::Selection`]) and ingest model ([`model::Expected`], [`model::IngestFailure`])
//!   every layer shares.
//! - [`trust`]: the decision point (callers, tokens, XUA, consent, patients) and the audit
//!   trail.
//! - Sources, behind [`core::Source`]:
//!   - [`store`]: the cache: blobs on the filesystem and the index (SQLite or PostgreSQL),
//!     and the checks, fsync and indexing behind the core's ingest path
//!     ([`store::ingest`]).
//!   - [`pacs`]: the hospital's PACS (C-FIND for queries, C-GET / C-MOVE retrieves, the
//!     capability probe, forwarding STOW-RS studies to the PACS).
//!   - [`remote`]: other hospitals' gateways, the XCA-I initiating gateway (ITI-38 to find
//!     a patient's studies, ITI-39 for a manifest, RAD-75 streamed into the cache), over
//!     mutual TLS with an XUA assertion for the local user.
//! - [`registry`]: the XDS-I registry and repository on the index database (DocumentEntry,
//!   SubmissionSet, Association; the stored queries over them), the KOS manifest builder, and
//!   the publisher that registers each study once it is complete; behind
//!   [`core::registry::Registry`].
//! - [`ebrim`]: ebRIM/ebRS 3.0 on the wire for the stored queries (AdhocQueryRequest read into
//!   a [`ebrim::StoredQuery`], AdhocQueryResponse written), a leaf like [`xml`].
//! - [`xml`]: the one XML reader (namespace-resolved element tree, size, depth and node
//!   limits, no DTDs) for the SOAP and SAML messages the trust layer and later the XDS-I front
//!   read.
//! - [`server`]: the composition root: builds the core with its sources and routes
//!   (`server::compose_core`), starts the listeners, and the shutdown deadline; what it
//!   opened is in `server::Context` (the fronts see only the core and trust).
//! - [`chain`]: chain monitoring (ketenregie): the PACS, the remote gateways and Mitz probed
//!   on a schedule, certificate and CRL expiry, alerts as audit records and metrics.
//! - [`selftest`]: the qualification self-test (kwalificatie): a scripted conformance suite
//!   against another gateway (TLS, certificates, XUA refusals, ITI-38 / ITI-39 / RAD-75,
//!   DICOMweb) and the PACS probe, reported per requirement with its REFERENCE section.
//! - [`cli`]: the command line (serve, echo, find, store, move, get, generate, probe, forward,
//!   selftest).
//! - [`config`]: typed configuration (embedded default TOML, file, `BEELDBRUG_*` environment),
//!   every section's types included: it imports none of the modules it configures.
//! - [`sop`]: the SOP class and transfer syntax UIDs that the fronts, the sources and the
//!   configuration name (also `dimse::sop`).
//! - [`dataset`]: DICOM files and data sets as stored: the structure check before any
//!   parse, encoding, Pixel Data location (also `dimse::dataset`); [`status`]: the DICOM
//!   status codes and their categories (PS3.7 C, also `dimse::status`). Leaves, below the
//!   store and the DIMSE layer alike.
//! - [`clock`]: the wall clock (RFC 3339 and Unix seconds) every record and queue reads.
//! - [`metrics`]: the Prometheus metrics every layer counts (one line per call site) and
//!   their text for `GET /metrics`.
//! - [`oplog`]: the operations log (one line per association and request).
//! - [`telemetry`]: the subscriber: the log's format, and traces across protocols (OTLP).
//! - [`testdata`]: the deterministic synthetic-study generator used by tests and benchmarks
//!   (`test-data/README.md` says why it lives here and how to make data).

pub mod admin;
pub mod chain;
pub mod cli;
pub mod clock;
pub mod config;
pub mod core;
pub mod dataset;
pub mod dicomweb;
pub mod dimse;
pub mod ebrim;
pub mod http;
pub mod metrics;
pub mod model;
pub mod oplog;
pub mod pacs;
pub mod registry;
pub mod remote;
pub mod selftest;
pub mod server;
pub mod sop;
pub mod status;
pub mod store;
pub mod telemetry;
pub mod testdata;
pub mod transcode;
pub mod trust;
pub mod xds;
pub mod xml;
