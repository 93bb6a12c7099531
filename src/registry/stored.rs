//! The stored queries of ITI TF-2a 3.18.4.1.2.3.7 over the registry: the index selects by
//! patient, entryUUID, uniqueId or association end; the rest of each query's parameters are
//! matched here, on the ebRIM objects (a patient has a handful of entries).
//!
//! Matching rules (ITI TF-2a 3.18.4.1.2.3.5, 3.18.4.1.2.3.6): the values of one parameter are
//! ORed; several slots of one code parameter are ANDed; a code `code^^^scheme` matches the
//! object's classification with that code and coding scheme; a time `From` is inclusive, `To`
//! exclusive, and an object without the attribute does not match a time parameter; author
//! names match with `%` and `_` wildcards; DocumentEntries are stable ones unless
//! `$XDSDocumentEntryType` asks otherwise.

use super::{associations, objects};
use crate::core::registry::RegistryAnswer;
use crate::ebrim::{
    ns, Association, ObjectKind, QueryId, QueryResponse, RegistryObject, StoredQuery,
};
use crate::store::index::RegistryLookup;
use crate::store::{Index, IndexError};
use std::collections::{BTreeMap, BTreeSet};

/// Evaluate `query` (its parameters already checked by `ebrim::query`).
pub async fn evaluate(
    index: &dyn Index,
    query: &StoredQuery,
) -> Result<RegistryAnswer, IndexError> {
    let p = &query.params;
    let (objects_found, associations_found) = match query.id {
        QueryId::FindDocuments | QueryId::FindDocumentsByReferenceId => {
            let docs = by_patient(
                index,
                ObjectKind::DocumentEntry,
                p.single("$XDSDocumentEntryPatientId"),
                |d| document_matches(query, d),
            )
            .await?;
            (docs, Vec::new())
        }
        QueryId::FindSubmissionSets => {
            let sets = by_patient(
                index,
                ObjectKind::SubmissionSet,
                p.single("$XDSSubmissionSetPatientId"),
                |s| submission_set_matches(query, s),
            )
            .await?;
            (sets, Vec::new())
        }
        QueryId::FindFolders => {
            let folders = by_patient(
                index,
                ObjectKind::Folder,
                p.single("$XDSFolderPatientId"),
                |f| {
                    status_matches(&p.values("$XDSFolderStatus"), f)
                        && time_matches(
                            f.slot_value("lastUpdateTime"),
                            p.single("$XDSFolderLastUpdateTimeFrom"),
                            p.single("$XDSFolderLastUpdateTimeTo"),
                        )
                        && codes_match(query, "$XDSFolderCodeList", f, ns::FOL_CODE_LIST)
                },
            )
            .await?;
            (folders, Vec::new())
        }
        QueryId::GetAll => {
            let patient = p.single("$patientId");
            let mut found = by_patient(index, ObjectKind::DocumentEntry, patient, |d| {
                status_matches(&p.values("$XDSDocumentEntryStatus"), d) && contents_match(query, d)
            })
            .await?;
            found.extend(
                by_patient(index, ObjectKind::SubmissionSet, patient, |s| {
                    status_matches(&p.values("$XDSSubmissionSetStatus"), s)
                })
                .await?,
            );
            found.extend(
                by_patient(index, ObjectKind::Folder, patient, |f| {
                    status_matches(&p.values("$XDSFolderStatus"), f)
                })
                .await?,
            );
            let assocs = among(index, &found).await?;
            (found, assocs)
        }
        QueryId::GetDocuments => (
            get(
                index,
                query,
                ObjectKind::DocumentEntry,
                "$XDSDocumentEntryEntryUUID",
                "$XDSDocumentEntryUniqueId",
            )
            .await?,
            Vec::new(),
        ),
        QueryId::GetFolders => (
            get(
                index,
                query,
                ObjectKind::Folder,
                "$XDSFolderEntryUUID",
                "$XDSFolderUniqueId",
            )
            .await?,
            Vec::new(),
        ),
        QueryId::GetAssociations => {
            let uuids: Vec<String> = p.values("$uuid").into_iter().map(str::to_string).collect();
            (Vec::new(), associations(index, &uuids).await?)
        }
        QueryId::GetDocumentsAndAssociations => {
            let docs = get(
                index,
                query,
                ObjectKind::DocumentEntry,
                "$XDSDocumentEntryEntryUUID",
                "$XDSDocumentEntryUniqueId",
            )
            .await?;
            let ids: Vec<String> = docs.iter().map(|d| d.id.clone()).collect();
            let assocs = associations(index, &ids).await?;
            (docs, assocs)
        }
        QueryId::GetSubmissionSets => {
            let uuids: Vec<String> = p.values("$uuid").into_iter().map(str::to_string).collect();
            let members: Vec<Association> = associations(index, &uuids)
                .await?
                .into_iter()
                .filter(|a| a.assoc_type == ns::HAS_MEMBER && uuids.contains(&a.target))
                .collect();
            let sources: Vec<String> = members.iter().map(|a| a.source.clone()).collect();
            let sets: Vec<RegistryObject> = objects(index, &RegistryLookup::Uuids(sources))
                .await?
                .into_iter()
                .filter(|o| o.kind == ObjectKind::SubmissionSet)
                .collect();
            let set_ids: BTreeSet<&str> = sets.iter().map(|s| s.id.as_str()).collect();
            let members = members
                .into_iter()
                .filter(|a| set_ids.contains(a.source.as_str()))
                .collect();
            (sets, members)
        }
        QueryId::GetSubmissionSetAndContents | QueryId::GetFolderAndContents => {
            let (kind, uuid, unique) = if query.id == QueryId::GetSubmissionSetAndContents {
                (
                    ObjectKind::SubmissionSet,
                    "$XDSSubmissionSetEntryUUID",
                    "$XDSSubmissionSetUniqueId",
                )
            } else {
                (
                    ObjectKind::Folder,
                    "$XDSFolderEntryUUID",
                    "$XDSFolderUniqueId",
                )
            };
            let packages = get(index, query, kind, uuid, unique).await?;
            let Some(package) = packages.into_iter().next() else {
                return answer(index, query, Vec::new(), Vec::new()).await;
            };
            let members: Vec<Association> = associations(index, std::slice::from_ref(&package.id))
                .await?
                .into_iter()
                .filter(|a| a.assoc_type == ns::HAS_MEMBER && a.source == package.id)
                .collect();
            let targets: Vec<String> = members.iter().map(|a| a.target.clone()).collect();
            let contents: Vec<RegistryObject> = objects(index, &RegistryLookup::Uuids(targets))
                .await?
                .into_iter()
                .filter(|o| match o.kind {
                    ObjectKind::DocumentEntry => contents_match(query, o),
                    ObjectKind::Folder => kind == ObjectKind::SubmissionSet,
                    ObjectKind::SubmissionSet => false,
                })
                .collect();
            let mut found = vec![package];
            found.extend(contents);
            let assocs = among(index, &found).await?;
            (found, assocs)
        }
        QueryId::GetFoldersForDocument => {
            let docs = get(
                index,
                query,
                ObjectKind::DocumentEntry,
                "$XDSDocumentEntryEntryUUID",
                "$XDSDocumentEntryUniqueId",
            )
            .await?;
            let ids: Vec<String> = docs.iter().map(|d| d.id.clone()).collect();
            let sources: Vec<String> = associations(index, &ids)
                .await?
                .into_iter()
                .filter(|a| a.assoc_type == ns::HAS_MEMBER && ids.contains(&a.target))
                .map(|a| a.source)
                .collect();
            let folders = objects(index, &RegistryLookup::Uuids(sources))
                .await?
                .into_iter()
                .filter(|o| o.kind == ObjectKind::Folder)
                .collect();
            (folders, Vec::new())
        }
        QueryId::GetRelatedDocuments => {
            let docs = get(
                index,
                query,
                ObjectKind::DocumentEntry,
                "$XDSDocumentEntryEntryUUID",
                "$XDSDocumentEntryUniqueId",
            )
            .await?;
            let Some(doc) = docs.into_iter().next() else {
                return answer(index, query, Vec::new(), Vec::new()).await;
            };
            let types = p.values("$AssociationTypes");
            let related: Vec<Association> = associations(index, std::slice::from_ref(&doc.id))
                .await?
                .into_iter()
                .filter(|a| types.contains(&a.assoc_type.as_str()))
                .collect();
            let others: Vec<String> = related
                .iter()
                .map(|a| {
                    if a.source == doc.id {
                        a.target.clone()
                    } else {
                        a.source.clone()
                    }
                })
                .collect();
            let others: Vec<RegistryObject> = objects(index, &RegistryLookup::Uuids(others))
                .await?
                .into_iter()
                .filter(|o| o.kind == ObjectKind::DocumentEntry && type_matches(query, o))
                .collect();
            if others.is_empty() {
                (Vec::new(), Vec::new())
            } else {
                let other_ids: BTreeSet<&str> = others.iter().map(|o| o.id.as_str()).collect();
                let related = related
                    .into_iter()
                    .filter(|a| {
                        other_ids.contains(a.source.as_str())
                            || other_ids.contains(a.target.as_str())
                    })
                    .collect();
                let mut found = vec![doc];
                found.extend(others);
                (found, related)
            }
        }
    };
    answer(index, query, objects_found, associations_found).await
}

/// The answer with the patient of each association (from the objects it joins).
async fn answer(
    index: &dyn Index,
    query: &StoredQuery,
    found: Vec<RegistryObject>,
    assocs: Vec<Association>,
) -> Result<RegistryAnswer, IndexError> {
    let mut patients: BTreeMap<String, String> = found
        .iter()
        .map(|o| (o.id.clone(), o.patient_id().unwrap_or("").to_string()))
        .collect();
    let missing: Vec<String> = assocs
        .iter()
        .flat_map(|a| [a.source.clone(), a.target.clone()])
        .filter(|id| !patients.contains_key(id))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if !missing.is_empty() {
        for o in objects(index, &RegistryLookup::Uuids(missing)).await? {
            patients.insert(o.id.clone(), o.patient_id().unwrap_or("").to_string());
        }
    }
    let association_patients = assocs
        .iter()
        .map(|a| {
            let patient = patients
                .get(&a.source)
                .filter(|p| !p.is_empty())
                .or_else(|| patients.get(&a.target))
                .cloned()
                .unwrap_or_default();
            (a.id.clone(), patient)
        })
        .collect();
    Ok(RegistryAnswer {
        response: QueryResponse::found(found, assocs, query.return_type),
        association_patients,
    })
}

/// The objects of `kind` registered for `patient` that `keep` accepts (none without a
/// patient).
async fn by_patient(
    index: &dyn Index,
    kind: ObjectKind,
    patient: Option<&str>,
    keep: impl Fn(&RegistryObject) -> bool,
) -> Result<Vec<RegistryObject>, IndexError> {
    let Some(patient) = patient else {
        return Ok(Vec::new());
    };
    let lookup = RegistryLookup::Patient {
        kind: kind.name().to_string(),
        patient_id: patient.trim().to_string(),
    };
    Ok(objects(index, &lookup)
        .await?
        .into_iter()
        .filter(|o| o.kind == kind && keep(o))
        .collect())
}

/// Objects of `kind` by entryUUID or uniqueId (whichever parameter the query has).
async fn get(
    index: &dyn Index,
    query: &StoredQuery,
    kind: ObjectKind,
    uuid_param: &str,
    unique_param: &str,
) -> Result<Vec<RegistryObject>, IndexError> {
    let p = &query.params;
    let uuids: Vec<String> = p
        .values(uuid_param)
        .into_iter()
        .map(str::to_string)
        .collect();
    let lookup = if uuids.is_empty() {
        RegistryLookup::UniqueIds(
            p.values(unique_param)
                .into_iter()
                .map(str::to_string)
                .collect(),
        )
    } else {
        RegistryLookup::Uuids(uuids)
    };
    Ok(objects(index, &lookup)
        .await?
        .into_iter()
        .filter(|o| o.kind == kind)
        .collect())
}

/// The associations whose both ends are among `found`.
async fn among(
    index: &dyn Index,
    found: &[RegistryObject],
) -> Result<Vec<Association>, IndexError> {
    let ids: Vec<String> = found.iter().map(|o| o.id.clone()).collect();
    let set: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    Ok(associations(index, &ids)
        .await?
        .into_iter()
        .filter(|a| set.contains(a.source.as_str()) && set.contains(a.target.as_str()))
        .collect())
}

fn status_matches(wanted: &[&str], o: &RegistryObject) -> bool {
    wanted.is_empty() || wanted.contains(&o.status.urn())
}

fn type_matches(query: &StoredQuery, o: &RegistryObject) -> bool {
    let wanted = query.params.values("$XDSDocumentEntryType");
    let object_type = o.object_type.as_deref().unwrap_or(ns::STABLE_DOCUMENT);
    if wanted.is_empty() {
        object_type == ns::STABLE_DOCUMENT
    } else {
        wanted.contains(&object_type)
    }
}

/// FindDocuments (and FindDocumentsByReferenceId) on one DocumentEntry.
fn document_matches(query: &StoredQuery, d: &RegistryObject) -> bool {
    let p = &query.params;
    status_matches(&p.values("$XDSDocumentEntryStatus"), d)
        && type_matches(query, d)
        && codes_match(query, "$XDSDocumentEntryClassCode", d, ns::DE_CLASS_CODE)
        && codes_match(query, "$XDSDocumentEntryTypeCode", d, ns::DE_TYPE_CODE)
        && codes_match(
            query,
            "$XDSDocumentEntryPracticeSettingCode",
            d,
            ns::DE_PRACTICE_SETTING_CODE,
        )
        && codes_match(
            query,
            "$XDSDocumentEntryHealthcareFacilityTypeCode",
            d,
            ns::DE_FACILITY_TYPE_CODE,
        )
        && codes_match(
            query,
            "$XDSDocumentEntryEventCodeList",
            d,
            ns::DE_EVENT_CODE,
        )
        && codes_match(
            query,
            "$XDSDocumentEntryConfidentialityCode",
            d,
            ns::DE_CONFIDENTIALITY_CODE,
        )
        && codes_match(query, "$XDSDocumentEntryFormatCode", d, ns::DE_FORMAT_CODE)
        && time_matches(
            d.slot_value("creationTime"),
            p.single("$XDSDocumentEntryCreationTimeFrom"),
            p.single("$XDSDocumentEntryCreationTimeTo"),
        )
        && time_matches(
            d.slot_value("serviceStartTime"),
            p.single("$XDSDocumentEntryServiceStartTimeFrom"),
            p.single("$XDSDocumentEntryServiceStartTimeTo"),
        )
        && time_matches(
            d.slot_value("serviceStopTime"),
            p.single("$XDSDocumentEntryServiceStopTimeFrom"),
            p.single("$XDSDocumentEntryServiceStopTimeTo"),
        )
        && authors_match(
            &p.values("$XDSDocumentEntryAuthorPerson"),
            &d.author_values(ns::DE_AUTHOR, "authorPerson"),
        )
        && references_match(&p.values("$XDSDocumentEntryReferenceIdList"), d)
}

/// The DocumentEntry filters of GetAll, GetSubmissionSetAndContents, GetFolderAndContents.
fn contents_match(query: &StoredQuery, d: &RegistryObject) -> bool {
    type_matches(query, d)
        && codes_match(query, "$XDSDocumentEntryFormatCode", d, ns::DE_FORMAT_CODE)
        && codes_match(
            query,
            "$XDSDocumentEntryConfidentialityCode",
            d,
            ns::DE_CONFIDENTIALITY_CODE,
        )
}

fn submission_set_matches(query: &StoredQuery, s: &RegistryObject) -> bool {
    let p = &query.params;
    let sources = p.values("$XDSSubmissionSetSourceId");
    status_matches(&p.values("$XDSSubmissionSetStatus"), s)
        && (sources.is_empty()
            || s.external_id(ns::SS_SOURCE_ID)
                .is_some_and(|id| sources.contains(&id)))
        && time_matches(
            s.slot_value("submissionTime"),
            p.single("$XDSSubmissionSetSubmissionTimeFrom"),
            p.single("$XDSSubmissionSetSubmissionTimeTo"),
        )
        && authors_match(
            &p.values("$XDSSubmissionSetAuthorPerson"),
            &s.author_values(ns::SS_AUTHOR, "authorPerson"),
        )
        && codes_match(
            query,
            "$XDSSubmissionSetContentType",
            s,
            ns::SS_CONTENT_TYPE_CODE,
        )
}

/// Every slot of a code parameter (AND) has a value (OR) the object carries.
fn codes_match(query: &StoredQuery, param: &str, o: &RegistryObject, scheme: &str) -> bool {
    let have = o.codes(scheme);
    query.params.code_sets(param).iter().all(|any| {
        any.iter().any(|(code, coding)| {
            have.iter()
                .any(|(c, s)| c == code && (coding.is_empty() || s == coding))
        })
    })
}

/// A DTM against `[from, to)`, both compared as 14 digits (shorter values padded with 0).
fn time_matches(value: Option<&str>, from: Option<&str>, to: Option<&str>) -> bool {
    if from.is_none() && to.is_none() {
        return true;
    }
    let Some(value) = value else {
        return false;
    };
    let pad = |s: &str| format!("{:0<14}", s.trim());
    let value = pad(value);
    from.is_none_or(|f| value >= pad(f)) && to.is_none_or(|t| value < pad(t))
}

/// SQL LIKE (`%`, `_`) over author names; no pattern matches everything.
fn authors_match(patterns: &[&str], authors: &[&str]) -> bool {
    patterns.is_empty()
        || patterns
            .iter()
            .any(|p| authors.iter().any(|a| like(p.as_bytes(), a.as_bytes())))
}

fn like(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'%', rest)) => (0..=text.len()).any(|i| like(rest, &text[i..])),
        Some((b'_', rest)) => !text.is_empty() && like(rest, &text[1..]),
        Some((c, rest)) => text.first() == Some(c) && like(rest, &text[1..]),
    }
}

fn references_match(wanted: &[&str], d: &RegistryObject) -> bool {
    wanted.is_empty()
        || d.slot(ns::REFERENCE_ID_LIST)
            .iter()
            .any(|r| wanted.contains(&r.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_likes() {
        assert!(time_matches(
            Some("20250102"),
            Some("2025"),
            Some("20250103")
        ));
        assert!(!time_matches(Some("20250103"), None, Some("20250103")));
        assert!(!time_matches(None, Some("2025"), None));
        assert!(time_matches(None, None, None));
        assert!(like(b"%Jansen%", b"^Jansen^Piet"));
        assert!(like(b"J_n", b"Jan"));
        assert!(!like(b"J_n", b"Jaan"));
    }
}
