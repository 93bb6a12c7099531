//! Association negotiation, done by hand to see the whole A-ASSOCIATE-AC (PS3.8 7.1,
//! PS3.7 D.3.3), and C-ECHO.

use super::report::*;
use super::{rejected_context, timed_out, within, ProbeOptions};
use crate::dimse::negotiate::{self, LinkOptions, ProposedContext};
use crate::dimse::pdu::{Frame, PduReader, PduWriter};
use crate::dimse::scu::{native_syntaxes, ScuOptions};
use crate::dimse::status::{self, Category};
use crate::pacs::Pacs;
use dicom_ul::pdu::{
    AssociationRJResult, AssociationRQ, Pdu, PresentationContextProposed,
    PresentationContextResultReason, RequestorRoles, UserVariableItem,
};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Association negotiation, done by hand to see the whole A-ASSOCIATE-AC

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
