//! The probe's report: its sections, and the text a PACS vendor reads.

use crate::dimse::sop;
use crate::pacs::config::RetrieveMode;
use serde::Serialize;
use std::fmt;
use std::time::Instant;

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
    pub(super) fn new(outcome: Outcome, detail: impl Into<String>, started: Instant) -> Check {
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
    pub(super) fn of(uid: &str) -> Syntax {
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
pub(super) const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";

/// Transfer syntaxes proposed for CT Image Storage besides the configured ones.
pub(super) const STANDARD_SYNTAXES: &[&str] = &[
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
pub(super) const SERVICES: &[(&str, &str)] = &[
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
        if c.matches > 0 {
            writeln!(f, "    seen: {}", list(&c.seen))?;
        }
        let t = &self.transfer_syntaxes;
        line(f, "Storage syntaxes", &t.check)?;
        if t.check.outcome != Outcome::Skipped {
            writeln!(f, "    {}", t.sop_class)?;
            writeln!(f, "    accepted: {}", syntaxes(&t.accepted))?;
            writeln!(f, "    refused: {}", syntaxes(&t.refused))?;
        }
        let sent = |s: &Option<Syntax>| s.as_ref().map_or("-".to_string(), Syntax::to_string);
        if t.sent_by_get.is_some() || t.sent_by_move.is_some() {
            writeln!(f, "    sent by C-GET: {}", sent(&t.sent_by_get))?;
            writeln!(f, "    sent by C-MOVE: {}", sent(&t.sent_by_move))?;
        }
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
}
