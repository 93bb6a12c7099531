//! The capability probe (`beeldbrug probe`, and at start-up with `[pacs] probe_at_start`):
//! what the local PACS does of what gateway mode needs, one check at a time, as a report a
//! PACS vendor can read as an interoperability statement (text, or JSON for tools).
//!
//! Checks: association negotiation (the services and storage transfer syntaxes it accepts,
//! its maximum PDU and implementation), C-ECHO, C-FIND at each level with the return keys
//! beeldbrug asks for (which it fills), the character sets its answers use, a real C-GET and
//! a real C-MOVE (to our own Storage SCP) of one instance: the syntax it sends, whether it
//! names the Move Originator and whether its final C-MOVE response waits for the
//! sub-operations. Each check has its own timeout and reports its own failure; the others
//! still run. With `retrieve = "auto"` the gateway takes its retrieve mode from
//! [`ProbeReport::recommended`].

use super::config::RetrieveMode;
use super::fetch::{self, FetchReport, Sink};
use super::gateway::Gateway;
use super::query::{decode_match, identifier};
use super::{Pacs, PacsError};
use crate::config::Config;
use crate::core::query::{computed, indexed_attr_by_keyword, Level, Matcher, Query, INDEXED_ATTRS};
use crate::core::{InstanceLocation, Selection};
use crate::dimse::association::AssociationError;
use crate::dimse::dataset::{self, QUERY_RETRIEVE_LEVEL, SPECIFIC_CHARACTER_SET};
use crate::dimse::negotiate::{self, LinkOptions, ProposedContext};
use crate::dimse::pdu::{Frame, PduReader, PduWriter};
use crate::dimse::scu::{find_context, find_raw, native_syntaxes, ScuOptions};
use crate::dimse::sop;
use crate::dimse::status::{self, Category};
use crate::store::{BlobStore, Index};
use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::header::Header;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;
use dicom_object::InMemDicomObject;
use dicom_ul::pdu::{
    AssociationRJResult, AssociationRQ, Pdu, PresentationContextProposed,
    PresentationContextResultReason, RequestorRoles, UserVariableItem,
};
use serde::Serialize;
use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How the probe runs.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// Longest time one check may take.
    pub check_timeout: Duration,
    /// Most C-FIND matches read per query (a C-CANCEL ends the rest, PS3.4 C.4.1.2.3).
    pub max_matches: usize,
    /// The study used below STUDY level and for the retrieves; default: one the PACS lists.
    pub study: Option<String>,
    /// Where our DIMSE listener is (for the hint when the PACS does not know us).
    pub our_address: Option<String>,
    /// Why the C-MOVE check cannot run (no Storage SCP of ours is listening), if so.
    pub skip_move: Option<String>,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            check_timeout: Duration::from_secs(30),
            max_matches: 200,
            study: None,
            our_address: None,
            skip_move: None,
        }
    }
}

/// What a check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Ok,
    /// Works, with a quirk gateway mode works around.
    Warning,
    /// The PACS does not offer it (presentation context rejected).
    NotSupported,
    Failed,
    /// Not run (nothing to run it on, or not possible here).
    Skipped,
}

impl Outcome {
    /// Works, perhaps with a quirk.
    pub fn works(self) -> bool {
        matches!(self, Outcome::Ok | Outcome::Warning)
    }

    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Warning => "WARNING",
            Outcome::NotSupported => "NOT SUPPORTED",
            Outcome::Failed => "FAILED",
            Outcome::Skipped => "skipped",
        }
    }
}

/// One check's outcome, a line saying why, and how long it took.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub outcome: Outcome,
    pub detail: String,
    pub millis: u64,
}

impl Check {
    fn new(outcome: Outcome, detail: impl Into<String>, started: Instant) -> Check {
        Check {
            outcome,
            detail: detail.into(),
            millis: started.elapsed().as_millis() as u64,
        }
    }
}

/// A transfer syntax, with its name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Syntax {
    pub uid: String,
    pub name: String,
}

impl Syntax {
    fn of(uid: &str) -> Syntax {
        let uid = uid.trim_end_matches(['\0', ' ']);
        let name = match uid {
            sop::IMPLICIT_VR_LE => "Implicit VR Little Endian",
            sop::EXPLICIT_VR_LE => "Explicit VR Little Endian",
            sop::DEFLATED_EXPLICIT_VR_LE => "Deflated Explicit VR Little Endian",
            sop::EXPLICIT_VR_BE => "Explicit VR Big Endian",
            sop::JPEG_BASELINE => "JPEG Baseline",
            JPEG_EXTENDED => "JPEG Extended",
            sop::JPEG_LOSSLESS_SV1 => "JPEG Lossless SV1",
            JPEG_LS_LOSSLESS => "JPEG-LS Lossless",
            JPEG_LS_NEAR_LOSSLESS => "JPEG-LS Near-Lossless",
            sop::JPEG_2000_LOSSLESS => "JPEG 2000 Lossless",
            sop::JPEG_2000 => "JPEG 2000",
            sop::RLE_LOSSLESS => "RLE Lossless",
            HTJ2K_LOSSLESS => "HTJ2K Lossless",
            _ => "",
        };
        Syntax {
            uid: uid.to_string(),
            name: name.to_string(),
        }
    }
}

impl fmt::Display for Syntax {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.name.is_empty() {
            write!(f, "{}", self.uid)
        } else {
            write!(f, "{} ({})", self.name, self.uid)
        }
    }
}

const JPEG_EXTENDED: &str = "1.2.840.10008.1.2.4.51";
const JPEG_LS_LOSSLESS: &str = "1.2.840.10008.1.2.4.80";
const JPEG_LS_NEAR_LOSSLESS: &str = "1.2.840.10008.1.2.4.81";
const HTJ2K_LOSSLESS: &str = "1.2.840.10008.1.2.4.201";
const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";

/// Transfer syntaxes proposed for CT Image Storage besides the configured ones.
const STANDARD_SYNTAXES: &[&str] = &[
    sop::EXPLICIT_VR_LE,
    sop::IMPLICIT_VR_LE,
    sop::EXPLICIT_VR_BE,
    sop::DEFLATED_EXPLICIT_VR_LE,
    sop::JPEG_BASELINE,
    JPEG_EXTENDED,
    sop::JPEG_LOSSLESS_SV1,
    JPEG_LS_LOSSLESS,
    JPEG_LS_NEAR_LOSSLESS,
    sop::JPEG_2000_LOSSLESS,
    sop::JPEG_2000,
    sop::RLE_LOSSLESS,
    HTJ2K_LOSSLESS,
];

/// The Query/Retrieve services proposed in the negotiation check (PS3.4 C.6).
const SERVICES: &[(&str, &str)] = &[
    ("Verification", sop::VERIFICATION),
    ("Patient Root C-FIND", sop::PATIENT_ROOT_FIND),
    ("Patient Root C-MOVE", sop::PATIENT_ROOT_MOVE),
    ("Patient Root C-GET", sop::PATIENT_ROOT_GET),
    ("Study Root C-FIND", sop::STUDY_ROOT_FIND),
    ("Study Root C-MOVE", sop::STUDY_ROOT_MOVE),
    ("Study Root C-GET", sop::STUDY_ROOT_GET),
];

/// Whom the probe talked to, as whom.
#[derive(Debug, Clone, Serialize)]
pub struct Peer {
    pub ae_title: String,
    pub host: String,
    pub port: u16,
    /// Our calling AE title toward the PACS.
    pub calling_ae: String,
    /// The C-MOVE destination we ask for (our DIMSE listener's AE title).
    pub move_destination: String,
}

/// One proposed presentation context and the PACS's answer.
#[derive(Debug, Clone, Serialize)]
pub struct Service {
    pub name: String,
    pub sop_class: String,
    pub accepted: bool,
    pub transfer_syntax: Option<String>,
}

/// A-ASSOCIATE negotiation (PS3.8 7.1, PS3.7 D.3.3).
#[derive(Debug, Clone, Serialize)]
pub struct AssociationSection {
    #[serde(flatten)]
    pub check: Check,
    /// The PACS's maximum PDU length (0: unlimited, PS3.8 D.1).
    pub max_pdu: Option<u32>,
    pub implementation_class_uid: Option<String>,
    pub implementation_version_name: Option<String>,
    pub services: Vec<Service>,
}

/// C-ECHO (PS3.7 9.1.5).
#[derive(Debug, Clone, Serialize)]
pub struct EchoSection {
    #[serde(flatten)]
    pub check: Check,
    pub status: Option<u16>,
}

/// One C-FIND (PS3.4 C.4.1) and the return keys the PACS filled.
#[derive(Debug, Clone, Serialize)]
pub struct FindSection {
    pub level: String,
    pub model: String,
    /// The matching keys sent (the rest of the identifier is universal return keys).
    pub query: String,
    #[serde(flatten)]
    pub check: Check,
    pub status: Option<u16>,
    pub matches: usize,
    /// Return keys with a value in at least one match.
    pub filled: Vec<String>,
    /// Return keys asked for and never given a value.
    pub empty: Vec<String>,
}

/// Specific Character Set (PS3.5 6.1.2.5) in the C-FIND answers.
#[derive(Debug, Clone, Serialize)]
pub struct CharsetSection {
    #[serde(flatten)]
    pub check: Check,
    /// Values of (0008,0005) seen in matches.
    pub seen: Vec<String>,
    pub matches: usize,
    pub matches_without_charset: usize,
    /// Matches with non-ASCII text and no Specific Character Set (decoded as
    /// `default_charset`, PS3.5 6.1.2.3 would make them ASCII).
    pub non_ascii_without_charset: usize,
    /// Matches with text their declared Specific Character Set cannot decode.
    pub undecodable_text: usize,
    pub assumed_when_missing: String,
}

/// Storage transfer syntaxes: what the PACS accepts as C-STORE SCP (what beeldbrug can send
/// it, e.g. forwarded STOW-RS studies) and what it sends when retrieving.
#[derive(Debug, Clone, Serialize)]
pub struct SyntaxSection {
    #[serde(flatten)]
    pub check: Check,
    pub sop_class: String,
    pub accepted: Vec<Syntax>,
    pub refused: Vec<Syntax>,
    /// The syntax the C-GET instance arrived in (every storage syntax proposed).
    pub sent_by_get: Option<Syntax>,
    /// The syntax the C-MOVE instance arrived in (as our SCP accepted it).
    pub sent_by_move: Option<Syntax>,
}

/// A retrieve's final counts and what arrived.
#[derive(Debug, Clone, Serialize)]
pub struct Retrieved {
    pub status: u16,
    pub completed: u16,
    pub failed: u16,
    pub warning: u16,
    pub received: usize,
    pub transfer_syntax: Option<Syntax>,
}

/// C-GET of one instance (PS3.4 C.4.3).
#[derive(Debug, Clone, Serialize)]
pub struct GetSection {
    #[serde(flatten)]
    pub check: Check,
    /// What was retrieved: `SOPInstanceUID=...` (or a whole study without C-FIND).
    pub selection: Option<String>,
    /// The PACS accepted our SCP role for storage (PS3.7 D.3.3.4), needed for C-GET.
    pub storage_role_accepted: Option<bool>,
    /// Every sub-operation failed in the compressed syntaxes it accepted; retried with
    /// uncompressed syntaxes only.
    pub retried_uncompressed: bool,
    pub result: Option<Retrieved>,
}

/// C-MOVE of one instance to our own Storage SCP (PS3.4 C.4.2).
#[derive(Debug, Clone, Serialize)]
pub struct MoveSection {
    #[serde(flatten)]
    pub check: Check,
    /// What was retrieved: `SOPInstanceUID=...` (or a whole study without C-FIND).
    pub selection: Option<String>,
    pub destination: String,
    /// False: 0xA801, the PACS does not know our AE title as a destination.
    pub destination_known: Option<bool>,
    /// Every sub-operation carried Move Originator AE Title / Message ID (PS3.7 9.3.1.1).
    pub move_originator: Option<bool>,
    pub without_originator: Option<usize>,
    /// The final C-MOVE response came after every sub-operation (PS3.4 C.4.2.3).
    pub final_waits: Option<bool>,
    pub result: Option<Retrieved>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    pub beeldbrug_version: String,
    pub started_at: String,
    pub pacs: Peer,
    pub association: AssociationSection,
    pub echo: EchoSection,
    pub find: Vec<FindSection>,
    pub character_sets: CharsetSection,
    pub transfer_syntaxes: SyntaxSection,
    pub get: GetSection,
    #[serde(rename = "move")]
    pub move_: MoveSection,
    /// Deviations from the standard that gateway mode works around, in words.
    pub quirks: Vec<String>,
    pub configured_retrieve: RetrieveMode,
    /// C-GET if it worked, else C-MOVE if that worked, else none.
    pub recommended: Option<RetrieveMode>,
}

impl ProbeReport {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The PACS answered C-ECHO with success.
    pub fn echo_ok(&self) -> bool {
        self.echo.check.outcome.works()
    }
}

/// Why `beeldbrug probe` cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("no [pacs] section in the configuration: there is no PACS to probe")]
    NoPacs,
    #[error(transparent)]
    Serve(#[from] crate::server::ServeError),
    #[error(transparent)]
    Blob(#[from] crate::store::BlobError),
    #[error(transparent)]
    Index(#[from] crate::store::IndexError),
}

// ---------------------------------------------------------------------------------------------
// Running it

/// Probe the gateway's PACS, fetching into the gateway's store (the C-MOVE instance arrives
/// through its Storage SCP, which must be listening).
pub async fn run_gateway(gateway: &Gateway, options: &ProbeOptions) -> ProbeReport {
    run(
        &gateway.pacs,
        &gateway.blobs,
        gateway.index.as_ref(),
        options,
    )
    .await
}

/// Probe `pacs`; retrieved instances go into `blobs` / `index`.
pub async fn run(
    pacs: &Pacs,
    blobs: &BlobStore,
    index: &dyn Index,
    options: &ProbeOptions,
) -> ProbeReport {
    let started_at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let (association, mut transfer_syntaxes) = check_association(pacs, options).await;
    let echo = check_echo(pacs, options).await;
    let (find, character_sets, selection) = check_find(pacs, options).await;
    let store = Store { blobs, index };
    let get = check_get(pacs, &store, selection.as_ref(), options).await;
    let move_ = check_move(pacs, &store, selection.as_ref(), options).await;
    transfer_syntaxes.sent_by_get = get.result.as_ref().and_then(|r| r.transfer_syntax.clone());
    transfer_syntaxes.sent_by_move = move_
        .result
        .as_ref()
        .and_then(|r| r.transfer_syntax.clone());
    let recommended = if get.check.outcome.works() {
        Some(RetrieveMode::CGet)
    } else if move_.check.outcome.works() {
        Some(RetrieveMode::CMove)
    } else {
        None
    };
    let mut report = ProbeReport {
        beeldbrug_version: env!("CARGO_PKG_VERSION").to_string(),
        started_at,
        pacs: Peer {
            ae_title: pacs.config.ae_title.clone(),
            host: pacs.config.host.clone(),
            port: pacs.config.port,
            calling_ae: pacs.config.calling_ae(&pacs.our_ae).to_string(),
            move_destination: pacs.our_ae.clone(),
        },
        association,
        echo,
        find,
        character_sets,
        transfer_syntaxes,
        get,
        move_,
        quirks: Vec::new(),
        configured_retrieve: pacs.config.retrieve,
        recommended,
    };
    report.quirks = quirks(&report);
    report
}

/// `beeldbrug probe`: start the gateway in-process (its Storage SCP on `dimse.listen`, the
/// address the PACS knows us by, receives the C-MOVE), probe, stop. When that address is
/// taken (a running `beeldbrug serve`), probe without the C-MOVE check.
pub async fn standalone(
    mut config: Config,
    mut options: ProbeOptions,
) -> Result<ProbeReport, ProbeError> {
    let Some(pacs_config) = config.pacs.as_mut() else {
        return Err(ProbeError::NoPacs);
    };
    pacs_config.probe_at_start = false;
    let pacs_config = pacs_config.clone();
    config.http.listen = "127.0.0.1:0".into();
    let listen = config.dimse.listen.clone();
    options.our_address.get_or_insert_with(|| listen.clone());
    match crate::server::start(config.clone()).await {
        Ok(running) => {
            let report = match running.context.gateway.clone() {
                Some(gateway) => Ok(run_gateway(&gateway, &options).await),
                None => Err(ProbeError::NoPacs),
            };
            running.stop().await;
            report
        }
        Err(crate::server::ServeError::Bind(addr, e)) if addr == listen => {
            options.skip_move = Some(format!(
                "cannot listen on {listen} for the sub-operations ({e}); if `beeldbrug serve` \
                 runs there, its start-up probe reports C-MOVE"
            ));
            let blobs = BlobStore::open(&config.storage.data_dir).await?;
            let index = crate::store::open_index(&config.index_url()).await?;
            let pacs = Pacs::new(pacs_config, &config.dimse.ae_title);
            Ok(run(&pacs, &blobs, index.as_ref(), &options).await)
        }
        Err(e) => Err(e.into()),
    }
}

/// `serve` with `[pacs] probe_at_start`: once the listeners are up, probe, log the report,
/// and with `retrieve = "auto"` take the recommended retrieve mode. Ends with `shutdown`.
pub fn spawn_at_start(gateway: Arc<Gateway>, our_address: String, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let options = ProbeOptions {
            our_address: Some(our_address),
            ..ProbeOptions::default()
        };
        let report = tokio::select! {
            r = run_gateway(&gateway, &options) => r,
            _ = shutdown.cancelled() => return,
        };
        tracing::info!("PACS capability probe\n{report}");
        if gateway.pacs.config.retrieve != RetrieveMode::Auto {
            return;
        }
        match report.recommended {
            Some(mode) => {
                gateway.pacs.set_mode(mode);
                tracing::info!(?mode, "retrieve mode chosen by the capability probe");
            }
            None => tracing::warn!(
                "capability probe: neither C-GET nor C-MOVE worked; retrieve mode stays auto \
                 (C-GET, then C-MOVE)"
            ),
        }
    });
}

/// Run a check within `limit`; `None` when it did not end in time.
async fn within<T>(limit: Duration, fut: impl Future<Output = T>) -> Option<T> {
    tokio::time::timeout(limit, fut).await.ok()
}

fn timed_out(limit: Duration) -> String {
    format!("no answer within {} s", limit.as_secs_f32())
}

fn rejected_context(e: &PacsError) -> bool {
    matches!(
        e,
        PacsError::NotSupported(_)
            | PacsError::Association {
                source: AssociationError::NoContexts,
                ..
            }
    )
}

// ---------------------------------------------------------------------------------------------
// Association negotiation, done by hand to see the whole A-ASSOCIATE-AC

struct Negotiated {
    max_pdu: Option<u32>,
    implementation_class_uid: Option<String>,
    implementation_version_name: Option<String>,
    /// Per proposed context, in order: the accepted transfer syntax.
    accepted: Vec<Option<String>>,
    /// SOP classes for which the PACS accepted our SCP role.
    scp_roles: Vec<String>,
}

/// Propose `proposed`, read the answer, release. A transient rejection (PS3.8 9.3.4, a PACS
/// at its association limit) is retried until the caller's timeout.
async fn negotiate(pacs: &Pacs, proposed: &[ProposedContext]) -> Result<Negotiated, String> {
    let opts = pacs.scu_options(LinkOptions::default().max_pdu);
    loop {
        match negotiate_once(&opts, proposed).await {
            Err((true, why)) => {
                tracing::debug!(%why, "PACS busy; retrying the probe's association");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err((false, why)) => return Err(why),
            Ok(n) => return Ok(n),
        }
    }
}

/// Err((transient, why)).
async fn negotiate_once(
    opts: &ScuOptions,
    proposed: &[ProposedContext],
) -> Result<Negotiated, (bool, String)> {
    let fail = |why: String| (false, why);
    let addr = format!("{}:{}", opts.host, opts.port);
    let stream = tokio::time::timeout(opts.connect_timeout, tokio::net::TcpStream::connect(&addr))
        .await
        .map_err(|_| fail(format!("cannot connect to {addr}: timed out")))?
        .map_err(|e| fail(format!("cannot connect to {addr}: {e}")))?;
    let _ = stream.set_nodelay(true);
    let (r, w) = stream.into_split();
    let mut reader = PduReader::new(r, opts.link.max_pdu, opts.link.timeout);
    let mut writer = PduWriter::new(w, opts.link.timeout);
    let contexts: Vec<PresentationContextProposed> = proposed
        .iter()
        .enumerate()
        .map(|(i, p)| PresentationContextProposed {
            id: (i * 2 + 1) as u8,
            abstract_syntax: p.abstract_syntax.clone(),
            transfer_syntaxes: p.transfer_syntaxes.clone(),
        })
        .collect();
    let mut user_variables = vec![
        UserVariableItem::MaxLength(opts.link.max_pdu),
        UserVariableItem::ImplementationClassUID(negotiate::IMPLEMENTATION_CLASS_UID.into()),
        UserVariableItem::ImplementationVersionName(negotiate::IMPLEMENTATION_VERSION.into()),
    ];
    let mut role_classes: Vec<&str> = Vec::new();
    for p in proposed.iter().filter(|p| p.we_are_scp) {
        if !role_classes.contains(&p.abstract_syntax.as_str()) {
            role_classes.push(&p.abstract_syntax);
            user_variables.push(UserVariableItem::ScuScpRoleSelectionSubItem(
                p.abstract_syntax.clone(),
                RequestorRoles {
                    scu: false,
                    scp: true,
                },
            ));
        }
    }
    let rq = AssociationRQ {
        protocol_version: 1,
        calling_ae_title: opts.calling_ae.clone(),
        called_ae_title: opts.called_ae.clone(),
        application_context_name: negotiate::APPLICATION_CONTEXT.to_string(),
        presentation_contexts: contexts.clone(),
        user_variables,
    };
    let io = |e: crate::dimse::pdu::PduError| fail(e.to_string());
    writer
        .write_pdu(&Pdu::AssociationRQ(rq))
        .await
        .map_err(io)?;
    writer.flush().await.map_err(io)?;
    let ac = match reader.read().await.map_err(io)? {
        Frame::Other(Pdu::AssociationAC(ac)) => ac,
        Frame::Other(Pdu::AssociationRJ(rj)) => {
            let transient = matches!(rj.result, AssociationRJResult::Transient);
            return Err((
                transient,
                format!("association rejected: {:?} / {:?}", rj.result, rj.source),
            ));
        }
        Frame::Other(Pdu::AbortRQ { source }) => {
            return Err(fail(format!(
                "association aborted by the PACS ({source:?})"
            )))
        }
        _ => return Err(fail("expected A-ASSOCIATE-AC".into())),
    };
    let mut n = Negotiated {
        max_pdu: None,
        implementation_class_uid: None,
        implementation_version_name: None,
        accepted: vec![None; proposed.len()],
        scp_roles: Vec::new(),
    };
    for item in &ac.user_variables {
        match item {
            UserVariableItem::MaxLength(len) => n.max_pdu = Some(*len),
            UserVariableItem::ImplementationClassUID(uid) => {
                n.implementation_class_uid = Some(uid.trim_end_matches('\0').to_string())
            }
            UserVariableItem::ImplementationVersionName(v) => {
                n.implementation_version_name = Some(v.trim().to_string())
            }
            UserVariableItem::ScuScpRoleSelectionSubItem(uid, roles) if roles.scp => {
                n.scp_roles.push(uid.trim_end_matches('\0').to_string())
            }
            _ => {}
        }
    }
    for result in &ac.presentation_contexts {
        if result.reason != PresentationContextResultReason::Acceptance {
            continue;
        }
        let i = (result.id as usize).saturating_sub(1) / 2;
        if let Some(slot) = n.accepted.get_mut(i) {
            *slot = Some(result.transfer_syntax.trim_end_matches('\0').to_string());
        }
    }
    // A-RELEASE (PS3.8 7.2); the answer is awaited briefly, then the connection closes.
    if writer.write_pdu(&Pdu::ReleaseRQ).await.is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while let Ok(frame) = reader.read().await {
                if matches!(frame, Frame::Other(Pdu::ReleaseRP)) {
                    break;
                }
            }
        })
        .await;
    }
    writer.shutdown().await;
    Ok(n)
}

async fn check_association(
    pacs: &Pacs,
    options: &ProbeOptions,
) -> (AssociationSection, SyntaxSection) {
    let started = Instant::now();
    let mut proposed: Vec<ProposedContext> = SERVICES
        .iter()
        .map(|(_, class)| ProposedContext {
            abstract_syntax: class.to_string(),
            transfer_syntaxes: native_syntaxes(),
            we_are_scp: false,
        })
        .collect();
    let mut syntaxes: Vec<String> = Vec::new();
    for ts in pacs
        .config
        .transfer_syntaxes
        .iter()
        .map(String::as_str)
        .chain(STANDARD_SYNTAXES.iter().copied())
    {
        if !syntaxes.iter().any(|s| s == ts) && syntaxes.len() < 100 {
            syntaxes.push(ts.to_string());
        }
    }
    proposed.extend(syntaxes.iter().map(|ts| ProposedContext {
        abstract_syntax: CT_IMAGE_STORAGE.into(),
        transfer_syntaxes: vec![ts.clone()],
        we_are_scp: false,
    }));
    let negotiated = within(options.check_timeout, negotiate(pacs, &proposed)).await;
    let mut assoc = AssociationSection {
        check: Check::new(Outcome::Failed, "", started),
        max_pdu: None,
        implementation_class_uid: None,
        implementation_version_name: None,
        services: Vec::new(),
    };
    let mut storage = SyntaxSection {
        check: Check::new(Outcome::Skipped, "no association", started),
        sop_class: format!("CT Image Storage ({CT_IMAGE_STORAGE})"),
        accepted: Vec::new(),
        refused: Vec::new(),
        sent_by_get: None,
        sent_by_move: None,
    };
    let n = match negotiated {
        None => {
            assoc.check = Check::new(Outcome::Failed, timed_out(options.check_timeout), started);
            return (assoc, storage);
        }
        Some(Err(why)) => {
            assoc.check = Check::new(Outcome::Failed, why, started);
            return (assoc, storage);
        }
        Some(Ok(n)) => n,
    };
    assoc.max_pdu = n.max_pdu;
    assoc.implementation_class_uid = n.implementation_class_uid;
    assoc.implementation_version_name = n.implementation_version_name;
    assoc.services = SERVICES
        .iter()
        .zip(&n.accepted)
        .map(|((name, class), ts)| Service {
            name: name.to_string(),
            sop_class: class.to_string(),
            accepted: ts.is_some(),
            transfer_syntax: ts.clone(),
        })
        .collect();
    let offered = assoc.services.iter().filter(|s| s.accepted).count();
    assoc.check = Check::new(
        Outcome::Ok,
        format!(
            "accepted; {offered} of {} query/retrieve services offered",
            SERVICES.len()
        ),
        started,
    );
    for (ts, result) in syntaxes.iter().zip(&n.accepted[SERVICES.len()..]) {
        match result {
            Some(_) => storage.accepted.push(Syntax::of(ts)),
            None => storage.refused.push(Syntax::of(ts)),
        }
    }
    storage.check = if storage.accepted.is_empty() {
        Check::new(
            Outcome::NotSupported,
            "accepts no CT Image Storage from us: not a Storage SCP for beeldbrug (STOW-RS \
             studies cannot be forwarded to it)",
            started,
        )
    } else {
        Check::new(
            Outcome::Ok,
            format!(
                "accepts {} of {} proposed syntaxes as C-STORE SCP",
                storage.accepted.len(),
                syntaxes.len()
            ),
            started,
        )
    };
    (assoc, storage)
}

async fn check_echo(pacs: &Pacs, options: &ProbeOptions) -> EchoSection {
    let started = Instant::now();
    match within(options.check_timeout, pacs.echo()).await {
        None => EchoSection {
            check: Check::new(Outcome::Failed, timed_out(options.check_timeout), started),
            status: None,
        },
        Some(Err(e)) if rejected_context(&e) => EchoSection {
            check: Check::new(
                Outcome::NotSupported,
                format!("Verification not offered: {e}"),
                started,
            ),
            status: None,
        },
        Some(Err(e)) => EchoSection {
            check: Check::new(Outcome::Failed, e.to_string(), started),
            status: None,
        },
        Some(Ok(status)) => EchoSection {
            check: Check::new(
                if status::category(status) == Category::Success {
                    Outcome::Ok
                } else {
                    Outcome::Failed
                },
                status::describe(status),
                started,
            ),
            status: Some(status),
        },
    }
}

// ---------------------------------------------------------------------------------------------
// C-FIND

#[derive(Default)]
struct CharsetTally {
    seen: BTreeSet<String>,
    matches: usize,
    without: usize,
    non_ascii_without: usize,
    undecodable_text: usize,
}

fn keyword(tag: Tag) -> String {
    StandardDataDictionary
        .by_tag(tag)
        .map(|e| e.alias().to_string())
        .unwrap_or_else(|| tag.to_string())
}

fn text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let v = obj.element(tag).ok()?.to_str().ok()?;
    let v = v.trim_matches(|c: char| c == ' ' || c == '\0');
    (!v.is_empty()).then(|| v.to_string())
}

fn texts(obj: &InMemDicomObject) -> impl Iterator<Item = Option<String>> + '_ {
    obj.iter()
        .filter(|e| {
            matches!(
                e.vr(),
                VR::PN | VR::LO | VR::SH | VR::LT | VR::ST | VR::UT | VR::UC
            )
        })
        .map(|e| e.to_str().ok().map(|s| s.into_owned()))
}

fn has_non_ascii_text(obj: &InMemDicomObject) -> bool {
    texts(obj).any(|t| t.is_some_and(|s| !s.is_ascii()))
}

/// Text that its declared character set cannot decode (e.g. Latin-1 bytes declared UTF-8):
/// dicom-encoding writes each such byte as `\ooo` (octal, 200 to 377).
fn has_undecodable_text(obj: &InMemDicomObject) -> bool {
    let escaped = |s: &str| {
        s.as_bytes().windows(4).any(|w| {
            w[0] == b'\\'
                && matches!(w[1], b'2' | b'3')
                && (b'0'..=b'7').contains(&w[2])
                && (b'0'..=b'7').contains(&w[3])
        })
    };
    texts(obj).any(|t| t.is_none_or(|s| s.contains('\u{FFFD}') || escaped(&s)))
}

/// The Patient Root PATIENT-level identifier (PS3.4 C.6.1.1.2): patient keys only.
fn patient_identifier() -> InMemDicomObject {
    let mut obj = InMemDicomObject::new_empty();
    obj.put(DataElement::new(
        SPECIFIC_CHARACTER_SET,
        VR::CS,
        PrimitiveValue::from("ISO_IR 192"),
    ));
    obj.put(DataElement::new(
        QUERY_RETRIEVE_LEVEL,
        VR::CS,
        PrimitiveValue::from("PATIENT"),
    ));
    for attr in INDEXED_ATTRS.iter().filter(|a| a.level == Level::Patient) {
        let vr = match attr.kind {
            crate::core::AttrKind::PersonName => VR::PN,
            crate::core::AttrKind::Date => VR::DA,
            _ if attr.keyword == "PatientSex" => VR::CS,
            _ => VR::LO,
        };
        obj.put(DataElement::new(attr.tag, vr, PrimitiveValue::Empty));
    }
    for tag in [
        computed::NUMBER_OF_PATIENT_RELATED_STUDIES,
        computed::NUMBER_OF_PATIENT_RELATED_SERIES,
        computed::NUMBER_OF_PATIENT_RELATED_INSTANCES,
    ] {
        obj.put(DataElement::new(tag, VR::IS, PrimitiveValue::Empty));
    }
    obj
}

fn uid_query(level: Level, keys: &[(&str, &str)]) -> Query {
    keys.iter().fold(
        Query::new(level),
        |q, (keyword, uid)| match indexed_attr_by_keyword(keyword) {
            Some(attr) => q.with_key(attr, Matcher::Single(uid.to_string())),
            None => q,
        },
    )
}

/// One C-FIND; the section and the decoded matches.
async fn find_once(
    pacs: &Pacs,
    model: &'static str,
    level: &str,
    query: String,
    id: &InMemDicomObject,
    options: &ProbeOptions,
    tally: &mut CharsetTally,
) -> (FindSection, Vec<InMemDicomObject>) {
    let started = Instant::now();
    let model_name = if model == sop::PATIENT_ROOT_FIND {
        "Patient Root"
    } else {
        "Study Root"
    };
    let mut section = FindSection {
        level: level.to_string(),
        model: model_name.to_string(),
        query,
        check: Check::new(Outcome::Failed, "", started),
        status: None,
        matches: 0,
        filled: Vec::new(),
        empty: Vec::new(),
    };
    let found = within(options.check_timeout, async {
        let mut conn = pacs.connect(&[find_context(model)]).await?;
        let found = find_raw(&mut conn.assoc, model, id, options.max_matches).await;
        let _ = conn.release().await;
        found.map_err(|e| PacsError::Retrieve(e.to_string()))
    })
    .await;
    let (raw, status, ts) = match found {
        None => {
            section.check = Check::new(Outcome::Failed, timed_out(options.check_timeout), started);
            return (section, Vec::new());
        }
        Some(Err(e)) if rejected_context(&e) => {
            section.check = Check::new(
                Outcome::NotSupported,
                format!("{model_name} C-FIND not offered"),
                started,
            );
            return (section, Vec::new());
        }
        Some(Err(e)) => {
            section.check = Check::new(Outcome::Failed, e.to_string(), started);
            return (section, Vec::new());
        }
        Some(Ok(found)) => found,
    };
    section.status = Some(status);
    let mut matches = Vec::with_capacity(raw.len());
    let mut undecodable = 0;
    for r in &raw {
        let plain = match dataset::decode(r, &ts) {
            Ok(obj) => obj,
            Err(_) => {
                undecodable += 1;
                continue;
            }
        };
        tally.matches += 1;
        let obj = match text(&plain, SPECIFIC_CHARACTER_SET) {
            Some(cs) => {
                tally.seen.insert(cs);
                tally.undecodable_text += usize::from(has_undecodable_text(&plain));
                plain
            }
            None => {
                tally.without += 1;
                let obj = decode_match(r, &ts, &pacs.config.default_charset).unwrap_or(plain);
                tally.non_ascii_without += usize::from(has_non_ascii_text(&obj));
                obj
            }
        };
        matches.push(obj);
    }
    section.matches = matches.len();
    for element in id.iter() {
        let tag = element.tag();
        if tag == SPECIFIC_CHARACTER_SET || tag == QUERY_RETRIEVE_LEVEL {
            continue;
        }
        if matches.iter().any(|m| text(m, tag).is_some()) {
            section.filled.push(keyword(tag));
        } else {
            section.empty.push(keyword(tag));
        }
    }
    let undecodable = if undecodable > 0 {
        format!("; {undecodable} matches could not be decoded")
    } else {
        String::new()
    };
    section.check = match status::category(status) {
        Category::Success => Check::new(
            if undecodable.is_empty() {
                Outcome::Ok
            } else {
                Outcome::Warning
            },
            format!("{} match(es){undecodable}", matches.len()),
            started,
        ),
        Category::Cancel | Category::Pending => Check::new(
            Outcome::Ok,
            format!(
                "more than {} matches: C-CANCEL after {}{undecodable}",
                options.max_matches,
                matches.len()
            ),
            started,
        ),
        Category::Warning => Check::new(
            Outcome::Warning,
            format!(
                "{} matches; final {}",
                matches.len(),
                status::describe(status)
            ),
            started,
        ),
        Category::Failure => Check::new(
            Outcome::Failed,
            format!("final {}", status::describe(status)),
            started,
        ),
    };
    (section, matches)
}

/// Prefer the match with the fewest related instances (but some), else the first.
fn pick(matches: &[InMemDicomObject], uid: Tag, count: Tag) -> Option<String> {
    let with_uid = || matches.iter().filter_map(|m| Some((text(m, uid)?, m)));
    with_uid()
        .filter_map(|(u, m)| Some((text(m, count)?.parse::<u64>().ok()?, u)))
        .filter(|(n, _)| *n > 0)
        .min()
        .map(|(_, u)| u)
        .or_else(|| with_uid().next().map(|(u, _)| u))
}

async fn check_find(
    pacs: &Pacs,
    options: &ProbeOptions,
) -> (Vec<FindSection>, CharsetSection, Option<Selection>) {
    let started = Instant::now();
    let mut tally = CharsetTally::default();
    let mut sections = Vec::new();
    let (patient, _) = find_once(
        pacs,
        sop::PATIENT_ROOT_FIND,
        "PATIENT",
        "all patients".into(),
        &patient_identifier(),
        options,
        &mut tally,
    )
    .await;
    sections.push(patient);

    let (study_query, described) = match &options.study {
        Some(uid) => (
            uid_query(Level::Study, &[("StudyInstanceUID", uid)]),
            format!("StudyInstanceUID={uid}"),
        ),
        None => (Query::new(Level::Study), "all studies".to_string()),
    };
    let (studies_found, studies) = find_once(
        pacs,
        sop::STUDY_ROOT_FIND,
        "STUDY",
        described,
        &identifier(&study_query),
        options,
        &mut tally,
    )
    .await;
    sections.push(studies_found);
    let study = pick(
        &studies,
        Tag(0x0020, 0x000D),
        computed::NUMBER_OF_STUDY_RELATED_INSTANCES,
    )
    .or_else(|| options.study.clone());

    let mut selection = None;
    if let Some(study) = study {
        let (series_found, series) = find_once(
            pacs,
            sop::STUDY_ROOT_FIND,
            "SERIES",
            format!("StudyInstanceUID={study}"),
            &identifier(&uid_query(Level::Series, &[("StudyInstanceUID", &study)])),
            options,
            &mut tally,
        )
        .await;
        sections.push(series_found);
        if let Some(series) = pick(
            &series,
            Tag(0x0020, 0x000E),
            computed::NUMBER_OF_SERIES_RELATED_INSTANCES,
        ) {
            let keys = [
                ("StudyInstanceUID", &*study),
                ("SeriesInstanceUID", &*series),
            ];
            let (images_found, images) = find_once(
                pacs,
                sop::STUDY_ROOT_FIND,
                "IMAGE",
                format!("StudyInstanceUID={study} SeriesInstanceUID={series}"),
                &identifier(&uid_query(Level::Image, &keys)),
                options,
                &mut tally,
            )
            .await;
            sections.push(images_found);
            selection = images
                .iter()
                .find_map(|m| text(m, Tag(0x0008, 0x0018)))
                .map(|sop| Selection {
                    study_uids: vec![study.clone()],
                    series_uids: vec![series.clone()],
                    sop_instance_uids: vec![sop],
                    ..Selection::default()
                });
        }
    }

    // No instance found (a PACS without C-FIND): the whole study named on the command line.
    if selection.is_none() {
        selection = options.study.clone().map(|study| Selection {
            study_uids: vec![study],
            ..Selection::default()
        });
    }

    // QIDO-RS "all series" asks the PACS without a StudyInstanceUID: a relational query
    // (PS3.4 C.4.1.2.2.1), which not every PACS supports.
    let hierarchical = sections
        .iter()
        .find(|s| s.level == "SERIES")
        .map_or(0, |s| s.matches);
    let (mut relational, _) = find_once(
        pacs,
        sop::STUDY_ROOT_FIND,
        "SERIES (relational)",
        "no StudyInstanceUID".into(),
        &identifier(&Query::new(Level::Series)),
        options,
        &mut tally,
    )
    .await;
    if relational.check.outcome == Outcome::Failed && relational.status.is_some() {
        relational.check.outcome = Outcome::NotSupported;
        relational.check.detail = format!(
            "{}: hierarchical queries only (QIDO-RS across studies finds no series)",
            relational.check.detail
        );
    } else if relational.check.outcome.works() && relational.matches == 0 && hierarchical > 0 {
        relational.check.outcome = Outcome::Warning;
        relational.check.detail =
            "0 matches where the hierarchical query found some: hierarchical queries only?".into();
    }
    sections.push(relational);

    let (outcome, detail) = if tally.matches == 0 {
        (Outcome::Skipped, "no matches to look at".to_string())
    } else if tally.non_ascii_without > 0 || tally.undecodable_text > 0 {
        let mut why = Vec::new();
        if tally.non_ascii_without > 0 {
            why.push(format!(
                "{} of {} matches carry non-ASCII text without Specific Character Set (read \
                 as {})",
                tally.non_ascii_without, tally.matches, pacs.config.default_charset
            ));
        }
        if tally.undecodable_text > 0 {
            why.push(format!(
                "{} of {} matches hold text their Specific Character Set cannot decode",
                tally.undecodable_text, tally.matches
            ));
        }
        (Outcome::Warning, why.join("; "))
    } else if tally.without == 0 {
        let n = tally.matches;
        (
            Outcome::Ok,
            format!("{n} matches, all with Specific Character Set"),
        )
    } else {
        let (n, without) = (tally.matches, tally.without);
        (
            Outcome::Ok,
            format!("{n} matches, {without} without Specific Character Set (all ASCII)"),
        )
    };
    let charsets = CharsetSection {
        check: Check::new(outcome, detail, started),
        seen: tally.seen.into_iter().collect(),
        matches: tally.matches,
        matches_without_charset: tally.without,
        non_ascii_without_charset: tally.non_ascii_without,
        undecodable_text: tally.undecodable_text,
        assumed_when_missing: pacs.config.default_charset.clone(),
    };
    (sections, charsets, selection)
}

// ---------------------------------------------------------------------------------------------
// Retrieves

struct Store<'a> {
    blobs: &'a BlobStore,
    index: &'a dyn Index,
}

#[derive(Clone, Copy)]
enum Retrieve {
    Get { compressed: bool },
    Move,
}

/// Run a retrieve within `limit`, taking what it hands on; on timeout, cancel it (C-CANCEL)
/// and give it a few seconds to end. `None`: it did not end in time.
async fn retrieve(
    pacs: &Pacs,
    store: &Store<'_>,
    selection: &Selection,
    how: Retrieve,
    limit: Duration,
) -> (
    Option<Result<FetchReport, PacsError>>,
    Vec<InstanceLocation>,
) {
    let (tx, mut rx) = mpsc::channel(4);
    let cancel = CancellationToken::new();
    let mut arrived = Vec::new();
    let sink = Sink {
        blobs: store.blobs,
        index: store.index,
        out: &tx,
        cancel: &cancel,
    };
    let fut = async {
        match how {
            Retrieve::Get { compressed } => fetch::get(pacs, selection, compressed, &sink).await,
            Retrieve::Move => fetch::move_(pacs, selection, &sink).await,
        }
    };
    tokio::pin!(fut);
    let deadline = tokio::time::sleep(limit);
    tokio::pin!(deadline);
    let result = loop {
        tokio::select! {
            r = &mut fut => break Some(r),
            Some(loc) = rx.recv() => arrived.push(loc),
            _ = &mut deadline => break None,
        }
    };
    if result.is_none() {
        // C-CANCEL, and a few seconds for the PACS's final response.
        cancel.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                tokio::select! {
                    _ = &mut fut => break,
                    Some(loc) = rx.recv() => arrived.push(loc),
                }
            }
        })
        .await;
    }
    while let Ok(loc) = rx.try_recv() {
        arrived.push(loc);
    }
    (result, arrived)
}

fn describe(selection: &Selection) -> String {
    match (
        selection.sop_instance_uids.first(),
        selection.study_uids.first(),
    ) {
        (Some(sop), _) => format!("SOPInstanceUID={sop}"),
        (None, Some(study)) => format!("StudyInstanceUID={study}"),
        (None, None) => "-".into(),
    }
}

fn retrieved(report: &FetchReport, arrived: &[InstanceLocation]) -> Retrieved {
    Retrieved {
        status: report.status,
        completed: report.completed,
        failed: report.failed,
        warning: report.warning,
        received: report.received,
        transfer_syntax: arrived.first().map(|l| Syntax::of(&l.transfer_syntax_uid)),
    }
}

fn counts(report: &FetchReport) -> String {
    format!(
        "final {}: {} completed, {} failed, {} warning; {} received",
        status::describe(report.status),
        report.completed,
        report.failed,
        report.warning,
        report.received
    )
}

fn delivered(report: &FetchReport) -> bool {
    matches!(
        status::category(report.status),
        Category::Success | Category::Warning
    ) && report.failed == 0
        && report.received > 0
}

async fn check_get(
    pacs: &Pacs,
    store: &Store<'_>,
    selection: Option<&Selection>,
    options: &ProbeOptions,
) -> GetSection {
    let started = Instant::now();
    let mut section = GetSection {
        check: Check::new(Outcome::Skipped, "", started),
        selection: selection.map(describe),
        storage_role_accepted: None,
        retried_uncompressed: false,
        result: None,
    };
    // Is the C-GET model offered, and our SCP role for storage (PS3.7 D.3.3.4)?
    let proposed = [
        ProposedContext {
            abstract_syntax: sop::STUDY_ROOT_GET.into(),
            transfer_syntaxes: native_syntaxes(),
            we_are_scp: false,
        },
        ProposedContext {
            abstract_syntax: CT_IMAGE_STORAGE.into(),
            transfer_syntaxes: native_syntaxes(),
            we_are_scp: true,
        },
    ];
    match within(options.check_timeout, negotiate(pacs, &proposed)).await {
        Some(Ok(n)) if n.accepted[0].is_none() => {
            section.check = Check::new(
                Outcome::NotSupported,
                "Study Root C-GET not offered (presentation context rejected)",
                started,
            );
            return section;
        }
        Some(Ok(n)) => {
            section.storage_role_accepted =
                Some(n.scp_roles.iter().any(|c| c == CT_IMAGE_STORAGE) && n.accepted[1].is_some())
        }
        Some(Err(_)) | None => {}
    }
    let Some(selection) = selection else {
        section.check.detail = "no instance to retrieve (C-FIND found none)".into();
        return section;
    };
    let limit = options.check_timeout;
    let how = Retrieve::Get { compressed: true };
    let (mut result, mut arrived) = retrieve(pacs, store, selection, how, limit).await;
    if let Some(Ok(r)) = &result {
        if r.compressed_failed {
            section.retried_uncompressed = true;
            let how = Retrieve::Get { compressed: false };
            (result, arrived) = retrieve(pacs, store, selection, how, limit).await;
        }
    }
    section.check = match result {
        None => Check::new(Outcome::Failed, timed_out(limit), started),
        Some(Err(e)) if rejected_context(&e) => Check::new(
            Outcome::NotSupported,
            "Study Root C-GET not offered (presentation context rejected)",
            started,
        ),
        Some(Err(e)) => Check::new(Outcome::Failed, e.to_string(), started),
        Some(Ok(r)) => {
            section.result = Some(retrieved(&r, &arrived));
            let mut detail = counts(&r);
            if let Some(ts) = arrived.first() {
                detail.push_str(&format!(
                    "; sent as {}",
                    Syntax::of(&ts.transfer_syntax_uid)
                ));
            }
            let outcome = if !delivered(&r) {
                Outcome::Failed
            } else if section.retried_uncompressed {
                detail.push_str(
                    "; the first attempt failed every instance in the compressed syntaxes \
                     it had accepted, the retry with uncompressed syntaxes worked",
                );
                Outcome::Warning
            } else {
                Outcome::Ok
            };
            Check::new(outcome, detail, started)
        }
    };
    section
}

async fn check_move(
    pacs: &Pacs,
    store: &Store<'_>,
    selection: Option<&Selection>,
    options: &ProbeOptions,
) -> MoveSection {
    let started = Instant::now();
    let mut section = MoveSection {
        check: Check::new(Outcome::Skipped, "", started),
        selection: selection.map(describe),
        destination: pacs.our_ae.clone(),
        destination_known: None,
        move_originator: None,
        without_originator: None,
        final_waits: None,
        result: None,
    };
    if let Some(why) = &options.skip_move {
        section.check.detail = why.clone();
        return section;
    }
    let Some(selection) = selection else {
        section.check.detail = "no instance to retrieve (C-FIND found none)".into();
        return section;
    };
    let limit = options.check_timeout;
    let (result, arrived) = retrieve(pacs, store, selection, Retrieve::Move, limit).await;
    let ours = options
        .our_address
        .as_deref()
        .map(|a| format!(" at {a}"))
        .unwrap_or_default();
    section.check = match result {
        None if arrived.is_empty() => Check::new(
            Outcome::Failed,
            format!(
                "{}; nothing arrived at our Storage SCP (does the PACS know {}{ours}?)",
                timed_out(limit),
                pacs.our_ae
            ),
            started,
        ),
        None => Check::new(Outcome::Failed, timed_out(limit), started),
        Some(Err(e)) if rejected_context(&e) => Check::new(
            Outcome::NotSupported,
            "Study Root C-MOVE not offered (presentation context rejected)",
            started,
        ),
        Some(Err(e)) => Check::new(
            Outcome::Failed,
            format!(
                "{e} (the sub-operations did not reach us: does the PACS know {}{ours}?)",
                pacs.our_ae
            ),
            started,
        ),
        Some(Ok(r)) if r.status == 0xA801 => {
            section.destination_known = Some(false);
            section.result = Some(retrieved(&r, &arrived));
            Check::new(
                Outcome::Failed,
                format!(
                    "refused: {}: register AE {}{ours} at the PACS",
                    status::describe(r.status),
                    pacs.our_ae
                ),
                started,
            )
        }
        Some(Ok(r)) => {
            section.destination_known = Some(true);
            section.result = Some(retrieved(&r, &arrived));
            let mut detail = counts(&r);
            if let Some(ts) = arrived.first() {
                detail.push_str(&format!(
                    "; sent as {}",
                    Syntax::of(&ts.transfer_syntax_uid)
                ));
            }
            let mut outcome = Outcome::Failed;
            if delivered(&r) {
                outcome = Outcome::Ok;
                section.without_originator = Some(r.without_originator);
                section.move_originator = Some(r.without_originator == 0);
                section.final_waits = Some(!r.final_before_subops);
                if r.without_originator > 0 {
                    outcome = Outcome::Warning;
                    detail.push_str("; no Move Originator in the sub-operations");
                }
                if r.final_before_subops {
                    outcome = Outcome::Warning;
                    detail.push_str("; final response before the sub-operations arrived");
                }
            }
            Check::new(outcome, detail, started)
        }
    };
    section
}

fn quirks(report: &ProbeReport) -> Vec<String> {
    let mut out = Vec::new();
    if report.move_.move_originator == Some(false) {
        out.push(
            "C-MOVE sub-operations carry no Move Originator AE Title / Message ID (PS3.7 \
             9.3.1.1): beeldbrug matches them to the retrieve by their UIDs"
                .to_string(),
        );
    }
    if report.move_.final_waits == Some(false) {
        out.push(
            "the final C-MOVE response comes before the sub-operations (PS3.4 C.4.2.3): \
             beeldbrug waits for the reported number of instances"
                .to_string(),
        );
    }
    if report.character_sets.non_ascii_without_charset > 0 {
        out.push(format!(
            "C-FIND answers hold non-ASCII text without Specific Character Set (PS3.5 \
             6.1.2.3): read as {} (pacs.default_charset)",
            report.character_sets.assumed_when_missing
        ));
    }
    if report.character_sets.undecodable_text > 0 {
        out.push(
            "C-FIND answers hold text their Specific Character Set cannot decode (e.g. the \
             query's ISO_IR 192 echoed over Latin-1 bytes, PS3.5 6.1.2.5)"
                .to_string(),
        );
    }
    if report.get.retried_uncompressed && report.get.check.outcome.works() {
        out.push(
            "C-GET: accepts compressed storage syntaxes and then fails every sub-operation: \
             beeldbrug retries with uncompressed syntaxes"
                .to_string(),
        );
    }
    if report.get.storage_role_accepted == Some(false) && report.get.check.outcome.works() {
        out.push("C-GET works without accepting our SCP/SCU role selection (PS3.7 D.3.3.4)".into());
    }
    if let Some(s) = report
        .find
        .iter()
        .find(|s| s.level.starts_with("SERIES (") && !s.check.outcome.works())
    {
        out.push(format!("C-FIND: {}", s.check.detail));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Text

fn line(f: &mut fmt::Formatter<'_>, what: &str, check: &Check) -> fmt::Result {
    writeln!(
        f,
        "{what:<26} {:<13} {}",
        check.outcome.label(),
        check.detail
    )
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "-".into()
    } else {
        items.join(", ")
    }
}

fn syntaxes(items: &[Syntax]) -> String {
    if items.is_empty() {
        return "-".into();
    }
    items
        .iter()
        .map(|s| {
            if s.name.is_empty() {
                s.uid.clone()
            } else {
                s.name.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn yes_no(v: Option<bool>, yes: &str, no: &str) -> String {
    match v {
        Some(true) => yes.into(),
        Some(false) => no.into(),
        None => "unknown".into(),
    }
}

impl fmt::Display for ProbeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.pacs;
        writeln!(
            f,
            "beeldbrug {} capability probe of PACS {} at {}:{} ({})",
            self.beeldbrug_version, p.ae_title, p.host, p.port, self.started_at
        )?;
        writeln!(
            f,
            "  calling AE {}, C-MOVE destination {}\n",
            p.calling_ae, p.move_destination
        )?;
        let a = &self.association;
        line(f, "Association", &a.check)?;
        if a.check.outcome.works() {
            writeln!(
                f,
                "    max PDU {}; implementation {} {}",
                a.max_pdu.map_or("-".to_string(), |n| if n == 0 {
                    "unlimited".into()
                } else {
                    n.to_string()
                }),
                a.implementation_class_uid.as_deref().unwrap_or("-"),
                a.implementation_version_name.as_deref().unwrap_or("")
            )?;
            for s in &a.services {
                writeln!(
                    f,
                    "    {:<24} {}",
                    s.name,
                    match &s.transfer_syntax {
                        Some(ts) => format!("accepted ({})", Syntax::of(ts).name),
                        None => "rejected".into(),
                    }
                )?;
            }
        }
        line(f, "C-ECHO", &self.echo.check)?;
        for s in &self.find {
            line(f, &format!("C-FIND {}", s.level), &s.check)?;
            writeln!(f, "    {}, {}", s.model, s.query)?;
            if s.check.outcome.works() {
                writeln!(f, "    filled: {}", list(&s.filled))?;
                writeln!(f, "    never filled: {}", list(&s.empty))?;
            }
        }
        let c = &self.character_sets;
        line(f, "Character sets", &c.check)?;
        writeln!(f, "    seen: {}", list(&c.seen))?;
        let t = &self.transfer_syntaxes;
        line(f, "Storage syntaxes", &t.check)?;
        writeln!(f, "    {}", t.sop_class)?;
        writeln!(f, "    accepted: {}", syntaxes(&t.accepted))?;
        writeln!(f, "    refused: {}", syntaxes(&t.refused))?;
        let sent = |s: &Option<Syntax>| s.as_ref().map_or("-".to_string(), Syntax::to_string);
        writeln!(f, "    sent by C-GET: {}", sent(&t.sent_by_get))?;
        writeln!(f, "    sent by C-MOVE: {}", sent(&t.sent_by_move))?;
        let g = &self.get;
        line(f, "C-GET", &g.check)?;
        if let Some(s) = g.selection.as_ref().filter(|_| g.result.is_some()) {
            writeln!(f, "    {s}")?;
        }
        if g.storage_role_accepted.is_some() {
            writeln!(
                f,
                "    storage SCP role (PS3.7 D.3.3.4): {}",
                yes_no(g.storage_role_accepted, "accepted", "not accepted")
            )?;
        }
        let m = &self.move_;
        line(f, "C-MOVE", &m.check)?;
        if let Some(s) = m.selection.as_ref().filter(|_| m.result.is_some()) {
            writeln!(f, "    {s} to {}", m.destination)?;
        }
        if m.result.is_some() {
            writeln!(
                f,
                "    destination known: {}; Move Originator: {}; final response: {}",
                yes_no(m.destination_known, "yes", "no (0xA801)"),
                yes_no(m.move_originator, "sent", "missing"),
                yes_no(
                    m.final_waits,
                    "after the sub-operations",
                    "before the sub-operations"
                )
            )?;
        }
        writeln!(f)?;
        if self.quirks.is_empty() {
            writeln!(f, "Quirks: none found")?;
        } else {
            writeln!(f, "Quirks:")?;
            for q in &self.quirks {
                writeln!(f, "  - {q}")?;
            }
        }
        let mode = |m: RetrieveMode| match m {
            RetrieveMode::CGet => "c-get",
            RetrieveMode::CMove => "c-move",
            RetrieveMode::Auto => "auto",
        };
        writeln!(
            f,
            "Retrieve: recommended {} (configured {})",
            self.recommended
                .map_or("none (neither C-GET nor C-MOVE worked)", mode),
            mode(self.configured_retrieve)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_names() {
        assert_eq!(
            Syntax::of("1.2.840.10008.1.2.4.50\0").to_string(),
            "JPEG Baseline (1.2.840.10008.1.2.4.50)"
        );
        assert_eq!(Syntax::of("1.2.3").to_string(), "1.2.3");
    }

    #[test]
    fn latin1_declared_utf8_is_undecodable_text() {
        // (0008,0005) CS "ISO_IR 192" and (0010,0010) PN "M\xFCller" (Latin-1), explicit LE.
        let mut raw = vec![0x08, 0x00, 0x05, 0x00, b'C', b'S', 10, 0];
        raw.extend_from_slice(b"ISO_IR 192");
        raw.extend_from_slice(&[0x10, 0x00, 0x10, 0x00, b'P', b'N', 6, 0]);
        raw.extend_from_slice(&[b'M', 0xFC, b'l', b'l', b'e', b'r']);
        let obj = dataset::decode(&raw, sop::EXPLICIT_VR_LE).unwrap();
        assert!(has_undecodable_text(&obj));
        let utf8 = "M\u{fc}ller".as_bytes().to_vec();
        let mut raw = raw[..26].to_vec();
        raw[24] = utf8.len() as u8 + 1;
        raw.extend_from_slice(&utf8);
        raw.push(b' ');
        let obj = dataset::decode(&raw, sop::EXPLICIT_VR_LE).unwrap();
        assert!(!has_undecodable_text(&obj));
        assert!(has_non_ascii_text(&obj));
    }

    #[test]
    fn picks_the_smallest_non_empty() {
        let m = |uid: &str, n: &str| {
            let mut o = InMemDicomObject::new_empty();
            o.put(DataElement::new(
                Tag(0x0020, 0x000D),
                VR::UI,
                PrimitiveValue::from(uid),
            ));
            o.put(DataElement::new(
                computed::NUMBER_OF_STUDY_RELATED_INSTANCES,
                VR::IS,
                PrimitiveValue::from(n),
            ));
            o
        };
        let count = computed::NUMBER_OF_STUDY_RELATED_INSTANCES;
        let uid = Tag(0x0020, 0x000D);
        let all = [m("1.1", "9"), m("1.2", "0"), m("1.3", "3")];
        assert_eq!(pick(&all, uid, count).as_deref(), Some("1.3"));
        assert_eq!(pick(&all[1..2], uid, count).as_deref(), Some("1.2"));
        assert_eq!(pick(&[], uid, count), None);
    }
}
