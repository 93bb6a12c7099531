//! Association negotiation, reporting what the A-ASSOCIATE-AC says (PS3.8 7.1, PS3.7 D.3.3,
//! kept on the association as `peer_info`), and C-ECHO.

use super::report::*;
use super::{rejected_context, timed_out, within, ProbeOptions};
use crate::dimse::association::AssociationError;
use crate::dimse::negotiate::{LinkOptions, ProposedContext};
use crate::dimse::scu::{connect, native_syntaxes, ScuOptions};
use crate::dimse::status::{self, Category};
use crate::pacs::Pacs;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Association negotiation

pub(super) struct Negotiated {
    pub(super) max_pdu: Option<u32>,
    pub(super) implementation_class_uid: Option<String>,
    pub(super) implementation_version_name: Option<String>,
    /// Per proposed context, in order: the accepted transfer syntax.
    pub(super) accepted: Vec<Option<String>>,
    /// SOP classes for which the PACS accepted our SCP role.
    pub(super) scp_roles: Vec<String>,
}

/// Propose `proposed`, read the answer, release. A transient rejection (PS3.8 9.3.4, a PACS
/// at its association limit) is retried until the caller's timeout.
pub(super) async fn negotiate(
    pacs: &Pacs,
    proposed: &[ProposedContext],
) -> Result<Negotiated, String> {
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

/// Err((transient, why)). A PACS that accepts none of the contexts is an answer (nothing
/// accepted), not an error.
async fn negotiate_once(
    opts: &ScuOptions,
    proposed: &[ProposedContext],
) -> Result<Negotiated, (bool, String)> {
    let mut assoc = match connect(opts, proposed).await {
        Ok(assoc) => assoc,
        Err(AssociationError::NoContexts) => {
            return Ok(Negotiated {
                max_pdu: None,
                implementation_class_uid: None,
                implementation_version_name: None,
                accepted: vec![None; proposed.len()],
                scp_roles: Vec::new(),
            })
        }
        Err(e) => return Err((e.is_transient_rejection(), e.to_string())),
    };
    // `request` numbers the proposed contexts 1, 3, 5, ... in order (PS3.8 9.3.2.2).
    let accepted = (0..proposed.len())
        .map(|i| {
            let id = (i * 2 + 1) as u8;
            assoc
                .context(id)
                .map(|c| c.transfer_syntax.trim_end_matches('\0').to_string())
        })
        .collect();
    let mut scp_roles: Vec<String> = Vec::new();
    for c in assoc.contexts.iter().filter(|c| c.requestor_is_scp) {
        if !scp_roles.contains(&c.abstract_syntax) {
            scp_roles.push(c.abstract_syntax.clone());
        }
    }
    let info = std::mem::take(&mut assoc.peer_info);
    // A-RELEASE (PS3.8 7.2), awaited briefly.
    let _ = tokio::time::timeout(Duration::from_secs(5), assoc.release()).await;
    Ok(Negotiated {
        max_pdu: info.max_pdu,
        implementation_class_uid: info.implementation_class_uid,
        implementation_version_name: info.implementation_version_name,
        accepted,
        scp_roles,
    })
}

pub(super) async fn check_association(
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

pub(super) async fn check_echo(pacs: &Pacs, options: &ProbeOptions) -> EchoSection {
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
