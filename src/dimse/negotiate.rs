//! Association establishment (PS3.8 7.1, PS3.7 Annex D): accepting an A-ASSOCIATE-RQ as the
//! acceptor, and requesting one as the requestor.

use super::association::{
    Association, AssociationError, BoxedReader, BoxedWriter, PresentationContext,
};
use super::pdu::{Frame, PduError, PduReader, PduWriter};
use dicom_ul::pdu::{
    AbortRQServiceProviderReason, AbortRQSource, AssociationAC, AssociationRJ, AssociationRJResult,
    AssociationRJServiceUserReason, AssociationRJSource, AssociationRQ, Pdu,
    PresentationContextProposed, PresentationContextResult, PresentationContextResultReason,
    RequestorRoles, UserVariableItem,
};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// DICOM application context name (PS3.7 A.2.1).
pub const APPLICATION_CONTEXT: &str = "1.2.840.10008.3.1.1.1";
/// Our implementation class UID and version name (PS3.7 D.3.3.2), as in the files we write.
pub use crate::sop::{IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION};

/// Transport and limits shared by both sides.
#[derive(Debug, Clone)]
pub struct LinkOptions {
    /// Our maximum PDU length (PS3.8 D.1), announced to the peer and enforced on reads.
    pub max_pdu: u32,
    /// Read and write timeout for each PDU.
    pub timeout: Duration,
}

impl Default for LinkOptions {
    fn default() -> Self {
        LinkOptions {
            max_pdu: 262_144,
            timeout: Duration::from_secs(60),
        }
    }
}

/// Why an acceptor refuses an association (PS3.8 Table 9-21).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    CallingAeNotRecognized,
    CalledAeNotRecognized,
    /// Transient: too many associations right now (service-provider, local limit exceeded).
    LocalLimitExceeded,
    /// Transient: we cannot serve anyone now (service-provider, temporary congestion), e.g.
    /// the audit trail cannot be written.
    TemporaryCongestion,
    NoReason,
}

impl Refusal {
    fn to_rj(self) -> AssociationRJ {
        use dicom_ul::pdu::AssociationRJServiceProviderPresentationReason as Presentation;
        let (result, source) = match self {
            Refusal::CallingAeNotRecognized => (
                AssociationRJResult::Permanent,
                AssociationRJSource::ServiceUser(
                    AssociationRJServiceUserReason::CallingAETitleNotRecognized,
                ),
            ),
            Refusal::CalledAeNotRecognized => (
                AssociationRJResult::Permanent,
                AssociationRJSource::ServiceUser(
                    AssociationRJServiceUserReason::CalledAETitleNotRecognized,
                ),
            ),
            Refusal::LocalLimitExceeded => (
                AssociationRJResult::Transient,
                AssociationRJSource::ServiceProviderPresentation(Presentation::LocalLimitExceeded),
            ),
            Refusal::TemporaryCongestion => (
                AssociationRJResult::Transient,
                AssociationRJSource::ServiceProviderPresentation(Presentation::TemporaryCongestion),
            ),
            Refusal::NoReason => (
                AssociationRJResult::Permanent,
                AssociationRJSource::ServiceUser(AssociationRJServiceUserReason::NoReasonGiven),
            ),
        };
        AssociationRJ { result, source }
    }
}

/// The acceptor's decisions, supplied by the service layer.
pub trait AcceptPolicy: Send + Sync {
    /// Admit or refuse the association as a whole (AE titles, peer address, limits).
    fn admit(&self, rq: &AssociationRQ) -> Result<(), Refusal>;
    /// Pick the transfer syntax for a proposed context, or say why not (PS3.8 9.3.3.2).
    fn choose_transfer_syntax(
        &self,
        pc: &PresentationContextProposed,
    ) -> Result<String, PresentationContextResultReason>;
}

fn split<S>(stream: S) -> (BoxedReader, BoxedWriter)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (r, w) = tokio::io::split(stream);
    (Box::new(r), Box::new(w))
}

fn peer_max_pdu(items: &[UserVariableItem], ours: u32) -> u32 {
    let announced = items.iter().find_map(|i| match i {
        UserVariableItem::MaxLength(n) => Some(*n),
        _ => None,
    });
    // 0 means "no limit" (PS3.8 D.1); never send more than we would accept ourselves.
    match announced {
        Some(0) | None => ours,
        Some(n) => n.clamp(
            dicom_ul::pdu::MINIMUM_PDU_SIZE,
            ours.max(dicom_ul::pdu::MINIMUM_PDU_SIZE),
        ),
    }
}

fn user_items(max_pdu: u32, roles: Vec<UserVariableItem>) -> Vec<UserVariableItem> {
    let mut items = vec![
        UserVariableItem::MaxLength(max_pdu),
        UserVariableItem::ImplementationClassUID(IMPLEMENTATION_CLASS_UID.to_string()),
        UserVariableItem::ImplementationVersionName(IMPLEMENTATION_VERSION.to_string()),
    ];
    items.extend(roles);
    items
}

/// Accept (or refuse) an association on a fresh connection.
///
/// Anything other than a well-formed A-ASSOCIATE-RQ as the first PDU gets an A-ABORT and
/// an error; a refusal gets an A-ASSOCIATE-RJ. Neither panics nor allocates what the peer
/// announces beyond our limits.
pub async fn accept<S>(
    stream: S,
    peer: String,
    ae_title: &str,
    link: &LinkOptions,
    policy: &dyn AcceptPolicy,
) -> Result<Association, AssociationError>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (r, w) = split(stream);
    let mut reader = PduReader::new(r, link.max_pdu, link.timeout);
    let mut writer = PduWriter::new(w, link.timeout);

    let rq = match reader.read().await {
        Ok(Frame::Other(Pdu::AssociationRQ(rq))) => rq,
        Ok(other) => {
            abort_provider(&mut writer, AbortRQServiceProviderReason::UnexpectedPdu).await;
            return Err(AssociationError::Protocol(format!(
                "expected A-ASSOCIATE-RQ, got {}",
                describe_frame(&other)
            )));
        }
        Err(
            e @ (PduError::UnknownType(_) | PduError::TooLarge { .. } | PduError::Malformed(_)),
        ) => {
            abort_provider(&mut writer, AbortRQServiceProviderReason::UnrecognizedPdu).await;
            return Err(e.into());
        }
        Err(e) => return Err(e.into()),
    };

    if let Err(refusal) = policy.admit(&rq) {
        let _ = writer.write_pdu(&Pdu::AssociationRJ(refusal.to_rj())).await;
        writer.shutdown().await;
        return Err(AssociationError::Rejected(format!(
            "{:?} (calling AE {:?}, called AE {:?})",
            refusal, rq.calling_ae_title, rq.called_ae_title
        )));
    }

    let proposed_roles: Vec<(String, RequestorRoles)> = rq
        .user_variables
        .iter()
        .filter_map(|i| match i {
            UserVariableItem::ScuScpRoleSelectionSubItem(uid, roles) => Some((uid.clone(), *roles)),
            _ => None,
        })
        .collect();

    let mut results = Vec::new();
    let mut contexts = Vec::new();
    for pc in &rq.presentation_contexts {
        match policy.choose_transfer_syntax(pc) {
            Ok(ts) => {
                let requestor_is_scp = proposed_roles
                    .iter()
                    .any(|(uid, roles)| uid == &pc.abstract_syntax && roles.scp);
                results.push(PresentationContextResult {
                    id: pc.id,
                    reason: PresentationContextResultReason::Acceptance,
                    transfer_syntax: ts.clone(),
                });
                contexts.push(PresentationContext {
                    id: pc.id,
                    abstract_syntax: pc.abstract_syntax.clone(),
                    transfer_syntax: ts,
                    requestor_is_scp,
                });
            }
            Err(reason) => results.push(PresentationContextResult {
                id: pc.id,
                reason,
                // PS3.8 9.3.3.2: the transfer syntax sub-item is not significant when rejected.
                transfer_syntax: pc.transfer_syntaxes.first().cloned().unwrap_or_default(),
            }),
        }
    }

    // PS3.7 D.3.3.4: accept the roles proposed for SOP classes we accepted.
    let role_replies = proposed_roles
        .iter()
        .filter(|(uid, _)| contexts.iter().any(|c| &c.abstract_syntax == uid))
        .map(|(uid, roles)| UserVariableItem::ScuScpRoleSelectionSubItem(uid.clone(), *roles))
        .collect();

    let send_max_pdu = peer_max_pdu(&rq.user_variables, link.max_pdu);
    let ac = AssociationAC {
        protocol_version: 1,
        calling_ae_title: rq.calling_ae_title.clone(),
        called_ae_title: if rq.called_ae_title.trim().is_empty() {
            ae_title.to_string()
        } else {
            rq.called_ae_title.clone()
        },
        application_context_name: APPLICATION_CONTEXT.to_string(),
        presentation_contexts: results,
        user_variables: user_items(link.max_pdu, role_replies),
    };
    writer.write_pdu(&Pdu::AssociationAC(ac)).await?;
    writer.flush().await?;

    Ok(Association::start(
        reader,
        writer,
        contexts,
        rq.calling_ae_title.trim().to_string(),
        rq.called_ae_title.trim().to_string(),
        peer,
        send_max_pdu,
    ))
}

/// A context we propose as requestor.
#[derive(Debug, Clone)]
pub struct ProposedContext {
    pub abstract_syntax: String,
    pub transfer_syntaxes: Vec<String>,
    /// Propose that we act as SCP for this SOP class (C-GET storage sub-operations).
    pub we_are_scp: bool,
}

/// Request an association as requestor (PS3.8 7.1.1).
pub async fn request<S>(
    stream: S,
    peer: String,
    calling_ae: &str,
    called_ae: &str,
    link: &LinkOptions,
    proposed: &[ProposedContext],
) -> Result<Association, AssociationError>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (r, w) = split(stream);
    let mut reader = PduReader::new(r, link.max_pdu, link.timeout);
    let mut writer = PduWriter::new(w, link.timeout);

    let pcs: Vec<PresentationContextProposed> = proposed
        .iter()
        .enumerate()
        .map(|(i, p)| PresentationContextProposed {
            id: (i * 2 + 1) as u8,
            abstract_syntax: p.abstract_syntax.clone(),
            transfer_syntaxes: p.transfer_syntaxes.clone(),
        })
        .collect();
    if pcs.len() > 128 {
        return Err(AssociationError::Protocol(
            "more than 128 presentation contexts".into(),
        ));
    }
    let mut roles = Vec::new();
    for p in proposed.iter().filter(|p| p.we_are_scp) {
        let item = UserVariableItem::ScuScpRoleSelectionSubItem(
            p.abstract_syntax.clone(),
            RequestorRoles {
                scu: false,
                scp: true,
            },
        );
        if !roles.contains(&item) {
            roles.push(item);
        }
    }
    let rq = AssociationRQ {
        protocol_version: 1,
        calling_ae_title: calling_ae.to_string(),
        called_ae_title: called_ae.to_string(),
        application_context_name: APPLICATION_CONTEXT.to_string(),
        presentation_contexts: pcs.clone(),
        user_variables: user_items(link.max_pdu, roles),
    };
    writer.write_pdu(&Pdu::AssociationRQ(rq)).await?;
    writer.flush().await?;

    let ac = match reader.read().await? {
        Frame::Other(Pdu::AssociationAC(ac)) => ac,
        Frame::Other(Pdu::AssociationRJ(rj)) => {
            return Err(AssociationError::Rejected(format!(
                "{:?} / {:?}",
                rj.result, rj.source
            )))
        }
        Frame::Other(Pdu::AbortRQ { .. }) => return Err(AssociationError::Aborted),
        other => {
            return Err(AssociationError::Protocol(format!(
                "expected A-ASSOCIATE-AC, got {}",
                describe_frame(&other)
            )))
        }
    };
    let accepted_scp_role: Vec<String> = ac
        .user_variables
        .iter()
        .filter_map(|i| match i {
            UserVariableItem::ScuScpRoleSelectionSubItem(uid, r) if r.scp => Some(uid.clone()),
            _ => None,
        })
        .collect();
    let contexts: Vec<PresentationContext> = ac
        .presentation_contexts
        .iter()
        .filter(|r| r.reason == PresentationContextResultReason::Acceptance)
        .filter_map(|r| {
            let pc = pcs.iter().find(|p| p.id == r.id)?;
            Some(PresentationContext {
                id: r.id,
                abstract_syntax: pc.abstract_syntax.clone(),
                transfer_syntax: r.transfer_syntax.clone(),
                requestor_is_scp: accepted_scp_role.contains(&pc.abstract_syntax),
            })
        })
        .collect();
    if contexts.is_empty() {
        let _ = writer
            .write_pdu(&Pdu::AbortRQ {
                source: AbortRQSource::ServiceUser,
            })
            .await;
        writer.shutdown().await;
        return Err(AssociationError::NoContexts);
    }
    let send_max_pdu = peer_max_pdu(&ac.user_variables, link.max_pdu);
    let mut assoc = Association::start(
        reader,
        writer,
        contexts,
        calling_ae.to_string(),
        called_ae.to_string(),
        peer,
        send_max_pdu,
    );
    for item in &ac.user_variables {
        let text = |s: &str| Some(s.trim_matches(|c: char| c == '\0' || c == ' ').to_string());
        match item {
            UserVariableItem::MaxLength(n) => assoc.peer_info.max_pdu = Some(*n),
            UserVariableItem::ImplementationClassUID(uid) => {
                assoc.peer_info.implementation_class_uid = text(uid)
            }
            UserVariableItem::ImplementationVersionName(v) => {
                assoc.peer_info.implementation_version_name = text(v)
            }
            _ => {}
        }
    }
    Ok(assoc)
}

async fn abort_provider(writer: &mut PduWriter<BoxedWriter>, reason: AbortRQServiceProviderReason) {
    let _ = writer
        .write_pdu(&Pdu::AbortRQ {
            source: AbortRQSource::ServiceProvider(reason),
        })
        .await;
    writer.shutdown().await;
}

fn describe_frame(frame: &Frame) -> String {
    match frame {
        Frame::PData(_) => "P-DATA-TF".into(),
        Frame::Other(pdu) => pdu.short_description().to_string(),
    }
}
