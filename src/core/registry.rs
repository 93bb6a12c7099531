//! The XDS registry behind the core (issue 14): ITI-18 Registry Stored Query and ITI-38 Cross
//! Gateway Query are answered here, whichever SOAP endpoint asked, with the same consent rule
//! as a DICOM query and one audit record (Query, 110112) per call.
//!
//! The registry itself (`crate::registry`) sits behind the small [`Registry`] trait, wired in
//! `server::compose_core`; the fronts reach it only through [`Core::registry_query`] (or
//! [`Core::registry_request`], which reads the request first) and [`Core::registry_document`].
//!
//! Consent: the registry answers the query as asked; the core then drops every object and
//! association of a patient the caller may not see (Mitz Deny or Indeterminate, a token bound
//! to another patient), so the answer is exactly the one for a patient without entries
//! (Success, empty list). The ticket records every patient the query named or returned.

use super::ticket::Ticket;
use super::Core;
use crate::ebrim::{
    codes, Association, QueryResponse, RegistryError, RegistryObject, ResponseStatus, StoredQuery,
};
use async_trait::async_trait;
use std::collections::{BTreeMap, BTreeSet};

/// The XDS-I registry and repository (implemented by `crate::registry`).
#[async_trait]
pub trait Registry: Send + Sync + std::fmt::Debug {
    /// Our homeCommunityId (`urn:oid:…`).
    fn home_community_id(&self) -> &str;

    /// Evaluate a stored query over every entry, without consent (the core applies it).
    async fn query(&self, query: &StoredQuery) -> Result<RegistryAnswer, String>;

    /// A published document by its uniqueId (the KOS or report SOP Instance UID): where it
    /// is stored, for ITI-43 / RAD-69 / ITI-39 retrieves.
    async fn document(&self, unique_id: &str) -> Result<Option<PublishedDocument>, String>;

    /// Whether a study has a manifest already (or was looked at and not published): gateway
    /// mode asks before it lists a study the PACS reports ([`Core::publish_reported`]).
    async fn is_published(&self, study_uid: &str) -> Result<bool, String>;

    /// Publish a study only a source holds: its study-level row and the image-level rows of
    /// its instances ([`super::Holdings::study_instances`]).
    async fn publish_reported(
        &self,
        study: &crate::model::query::Match,
        instances: &[crate::model::query::Match],
    ) -> Result<(), String>;
}

/// What the registry found for a stored query, before consent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryAnswer {
    pub response: QueryResponse,
    /// The patient (XDS CX form) of each association, from the objects it joins.
    pub association_patients: BTreeMap<String, String>,
}

/// A published document: its entry and where its instance is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedDocument {
    pub entry_uuid: String,
    pub unique_id: String,
    /// availabilityStatus URN (Approved or Deprecated: both are retrievable).
    pub status: String,
    pub mime_type: String,
    /// The BSN (bare), for the consent decision of a retrieve.
    pub patient_id: String,
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub sop_instance_uid: String,
    pub repository_unique_id: String,
}

/// Which transaction asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistryScope {
    /// ITI-18, inside the hospital: no homeCommunityId on the objects.
    Local,
    /// ITI-38 from another community: homeCommunityId on every object.
    CrossGateway,
}

/// The BSN of an XDS patient id (`<id>^^^&<oid>&ISO`): the part before the first `^`.
pub fn bare_patient_id(xds: &str) -> &str {
    xds.split('^').next().unwrap_or("").trim()
}

impl Core {
    /// The registry, when XDS is enabled.
    pub fn registry(&self) -> Option<&std::sync::Arc<dyn Registry>> {
        self.registry.as_ref()
    }

    /// Read an `AdhocQueryRequest` element and answer it ([`Core::registry_query`]); a request
    /// that is not a valid stored query is answered with its RegistryError (Failure) and
    /// audited as a failed query.
    pub async fn registry_request(
        &self,
        ticket: Ticket,
        request: &crate::xml::Element,
        scope: RegistryScope,
    ) -> QueryResponse {
        match StoredQuery::from_element(request) {
            Ok(query) => self.registry_query(ticket, &query, scope).await,
            Err(error) => {
                ticket
                    .finish("failure", format!("{}: {}", error.code, error.context))
                    .await;
                QueryResponse::failure(vec![error])
            }
        }
    }

    /// Answer a stored query (ITI-18, or ITI-38 with [`RegistryScope::CrossGateway`]): the
    /// target communities checked, the query evaluated by the registry, the patients the
    /// caller may not see dropped, our homeCommunityId put on every object for ITI-38. Always
    /// an answer (errors are RegistryErrors in it); the ticket's record is written.
    pub async fn registry_query(
        &self,
        mut ticket: Ticket,
        query: &StoredQuery,
        scope: RegistryScope,
    ) -> QueryResponse {
        let named: Vec<String> = named_patients(query)
            .into_iter()
            .map(|p| bare_patient_id(&p).to_string())
            .filter(|p| !p.is_empty())
            .collect();
        ticket.touch_ids(&named, &[]);
        let Some(registry) = self.registry.clone() else {
            let error = RegistryError::new(
                codes::REGISTRY_ERROR,
                "this gateway has no XDS registry (xds.enabled = false)",
                "",
            );
            ticket.finish("failure", error.context.clone()).await;
            return QueryResponse::failure(vec![error]);
        };
        let home = registry.home_community_id().to_string();
        // $targetCommunityIdList (REFERENCE §1): absent → as before; empty → error; unknown ids
        // → PartialSuccess naming each; only ours → Success.
        let mut community_errors = Vec::new();
        let mut ours_targeted = true;
        if let Some(targets) = &query.target_communities {
            if targets.is_empty() {
                let error = RegistryError::new(
                    codes::PARAM_NUMBER,
                    "$targetCommunityIdList is present but empty",
                    crate::ebrim::query::TARGET_COMMUNITIES,
                );
                ticket.finish("failure", error.context.clone()).await;
                return QueryResponse::failure(vec![error]);
            }
            ours_targeted = targets.iter().any(|t| same_community(t, &home));
            for t in targets.iter().filter(|t| !same_community(t, &home)) {
                community_errors.push(RegistryError::new(
                    codes::UNKNOWN_COMMUNITY,
                    format!("unknown community {t}"),
                    t.as_str(),
                ));
            }
        }
        if let Some(asked) = &query.home {
            if !same_community(asked, &home) {
                let error = RegistryError::new(
                    codes::UNKNOWN_COMMUNITY,
                    format!("unknown community {asked}"),
                    asked.as_str(),
                );
                ticket.finish("failure", error.context.clone()).await;
                return QueryResponse::failure(vec![error]);
            }
        }
        if ours_targeted && !self.xds_sources().is_empty() {
            // Gateway mode: the patient's studies only the PACS holds are published first,
            // for callers who may see the patient (no PACS query on behalf of a refusal).
            let decisions = match self.trust.patient_scoped(ticket.caller()) {
                true => Some(
                    self.trust
                        .patients_access(ticket.caller(), named.iter().map(String::as_str))
                        .await,
                ),
                false => None,
            };
            for bsn in &named {
                let allowed = decisions
                    .as_ref()
                    .is_none_or(|d| d.get(bsn.as_str()).is_some_and(|d| d.decision.is_permit()));
                if allowed {
                    self.publish_reported(&registry, bsn, ticket.caller()).await;
                }
            }
        }
        let mut response = if ours_targeted {
            match registry.query(query).await {
                Ok(answer) => self.permitted(&mut ticket, answer).await,
                Err(why) => {
                    tracing::error!(error = %why, "registry query failed");
                    let error = RegistryError::new(
                        codes::REGISTRY_ERROR,
                        "the registry could not answer",
                        "",
                    );
                    ticket.finish("failure", why).await;
                    return QueryResponse::failure(vec![error]);
                }
            }
        } else {
            QueryResponse::empty(query.return_type)
        };
        response.return_type = query.return_type;
        if !response.errors.is_empty() && response.objects.is_empty() {
            response.status = ResponseStatus::Failure;
        }
        if !community_errors.is_empty() {
            response.errors.extend(community_errors);
            response.status = ResponseStatus::PartialSuccess;
        }
        if scope == RegistryScope::CrossGateway {
            response.home = Some(home);
        }
        let result = match response.status {
            ResponseStatus::Success => "success",
            ResponseStatus::PartialSuccess => "partial",
            ResponseStatus::Failure => "failure",
        };
        let detail = format!(
            "{} {}: {} objects, {} associations{}",
            match scope {
                RegistryScope::Local => "ITI-18",
                RegistryScope::CrossGateway => "ITI-38",
            },
            query.id.name(),
            response.objects.len(),
            response.associations.len(),
            match response.errors.first() {
                Some(e) => format!(", {}", e.code),
                None => String::new(),
            }
        );
        ticket.finish(result, detail).await;
        response
    }

    /// The registry's answer limited to the patients the caller may see; the patients and
    /// studies it returns recorded on the ticket.
    async fn permitted(&self, ticket: &mut Ticket, answer: RegistryAnswer) -> QueryResponse {
        let RegistryAnswer {
            mut response,
            association_patients,
        } = answer;
        let patient_of_object = |o: &RegistryObject| {
            o.patient_id()
                .map(bare_patient_id)
                .unwrap_or("")
                .to_string()
        };
        let patient_of_association = |a: &Association| {
            association_patients
                .get(&a.id)
                .map(|p| bare_patient_id(p))
                .unwrap_or("")
                .to_string()
        };
        if self.trust.patient_scoped(ticket.caller()) {
            let mut patients: BTreeSet<String> =
                response.objects.iter().map(patient_of_object).collect();
            patients.extend(response.associations.iter().map(patient_of_association));
            let decisions = self
                .trust
                .patients_access(ticket.caller(), patients.iter().map(String::as_str))
                .await;
            let allowed = |p: &str| decisions.get(p).is_some_and(|d| d.decision.is_permit());
            response.objects.retain(|o| allowed(&patient_of_object(o)));
            response
                .associations
                .retain(|a| allowed(&patient_of_association(a)));
            ticket.set_grounds(crate::trust::policy::grounds(&decisions));
        }
        let patients: Vec<String> = response
            .objects
            .iter()
            .map(patient_of_object)
            .chain(response.associations.iter().map(patient_of_association))
            .filter(|p| !p.is_empty())
            .collect();
        let studies: Vec<String> = response
            .objects
            .iter()
            .flat_map(|o| o.slot(crate::ebrim::ns::REFERENCE_ID_LIST).to_vec())
            .filter_map(|r| {
                r.strip_suffix(crate::ebrim::ns::REF_STUDY_UID)
                    .map(|s| s.trim_end_matches('^').to_string())
            })
            .collect();
        ticket.touch_ids(&patients, &studies);
        response
    }

    /// A published document by its uniqueId (the SOP Instance UID of a KOS or report), for
    /// ITI-43 / RAD-69 / ITI-39: build the retrieve's `Selection` from its study, series and
    /// instance, and let [`Core::retrieve`] decide the patient as for any retrieve. `None`
    /// when no registry is configured or no such document was published.
    pub async fn registry_document(&self, unique_id: &str) -> Option<PublishedDocument> {
        let registry = self.registry.as_ref()?;
        match registry.document(unique_id).await {
            Ok(found) => found,
            Err(e) => {
                tracing::error!(error = %e, "registry document lookup failed");
                None
            }
        }
    }
}

/// The patient ids a query names (FindDocuments, FindSubmissionSets, FindFolders, GetAll).
fn named_patients(query: &StoredQuery) -> Vec<String> {
    [
        "$XDSDocumentEntryPatientId",
        "$XDSSubmissionSetPatientId",
        "$XDSFolderPatientId",
        "$patientId",
    ]
    .iter()
    .filter_map(|p| query.params.single(p))
    .map(str::to_string)
    .collect()
}

/// Community ids compare without regard to a missing `urn:oid:` prefix.
fn same_community(a: &str, b: &str) -> bool {
    let bare = |s: &str| s.trim().trim_start_matches("urn:oid:").to_string();
    bare(a) == bare(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patient_ids_and_communities() {
        assert_eq!(
            bare_patient_id("999999990^^^&2.16.840.1.113883.2.4.6.3&ISO"),
            "999999990"
        );
        assert_eq!(bare_patient_id(""), "");
        assert!(same_community("urn:oid:1.2.3", "1.2.3"));
        assert!(!same_community("urn:oid:1.2.3", "urn:oid:1.2.4"));
    }
}
