//! With `--pacs`: the PACS probe's report (`pacs::probe`, what `beeldbrug probe` prints) as
//! requirements of REFERENCE §6 (DIMSE toward the local PACS).

use super::{Check, Requirement, Status};
use crate::pacs::probe::ProbeReport;
use crate::pacs::probe::{Check as ProbeCheck, Outcome};

pub const ECHO: Requirement = Requirement {
    id: "pacs.echo",
    text: "The PACS answers C-ECHO (Verification) with success",
    reference: "REFERENCE §6 DIMSE toward the local PACS (Verification SCU/SCP)",
};
pub const FIND: Requirement = Requirement {
    id: "pacs.find",
    text: "The PACS answers Study Root C-FIND at STUDY, SERIES and IMAGE level",
    reference:
        "REFERENCE §6 DIMSE toward the local PACS (Study Root C-FIND at STUDY/SERIES/IMAGE level)",
};
pub const CHARSET: Requirement = Requirement {
    id: "pacs.charset",
    text: "Names with diacritics come back intact (Specific Character Set honoured)",
    reference: "REFERENCE §6 DIMSE toward the local PACS (character sets; Müller^Zoë)",
};
pub const RETRIEVE: Requirement = Requirement {
    id: "pacs.retrieve",
    text: "The PACS delivers an instance by C-GET or by C-MOVE to the gateway's Storage SCP",
    reference: "REFERENCE §6 DIMSE toward the local PACS (C-MOVE with our C-STORE SCP as destination, C-GET)",
};

fn from(r: &Requirement, check: &ProbeCheck) -> Check {
    let status = match check.outcome {
        Outcome::Ok | Outcome::Warning => Status::Pass,
        Outcome::Skipped => Status::Skip,
        Outcome::NotSupported | Outcome::Failed => Status::Fail,
    };
    let mut c = Check::new(r, status, check.detail.clone(), std::time::Instant::now());
    c.millis = check.millis;
    c
}

/// The probe's sections as checks.
pub fn checks(report: &ProbeReport) -> Vec<Check> {
    let mut out = vec![from(&ECHO, &report.echo.check)];
    let failed: Vec<String> = report
        .find
        .iter()
        .filter(|f| !f.check.outcome.works())
        .map(|f| format!("{} {}: {}", f.model, f.level, f.check.detail))
        .collect();
    let levels: Vec<String> = report
        .find
        .iter()
        .map(|f| format!("{} {} ({} matches)", f.model, f.level, f.matches))
        .collect();
    let millis = report.find.iter().map(|f| f.check.millis).sum();
    let mut find = if report.find.is_empty() {
        Check::skip(&FIND, "no C-FIND ran")
    } else if failed.is_empty() {
        Check::pass(&FIND, levels.join("; "), std::time::Instant::now())
    } else {
        Check::fail(&FIND, failed.join("; "), std::time::Instant::now())
    };
    find.millis = millis;
    out.push(find);
    out.push(from(&CHARSET, &report.character_sets.check));
    let get = &report.get.check;
    let move_ = &report.move_.check;
    let evidence = format!(
        "C-GET: {:?} ({}); C-MOVE: {:?} ({}); recommended: {:?}",
        get.outcome, get.detail, move_.outcome, move_.detail, report.recommended
    );
    let mut retrieve = if get.outcome.works() || move_.outcome.works() {
        Check::pass(&RETRIEVE, evidence, std::time::Instant::now())
    } else {
        Check::fail(&RETRIEVE, evidence, std::time::Instant::now())
    };
    retrieve.millis = get.millis + move_.millis;
    out.push(retrieve);
    out
}
