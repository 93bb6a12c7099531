//! QIDO-RS search (PS3.18 10.6): the six search resources, answered from the index as
//! `application/dicom+json` with the attributes PS3.18 Table 10.6.3-3/4/5 requires per level.

use super::json::{put, vr_of};
use super::media::{covers, parse_accept};
use super::qido_params::{self, IncludeFields};
use super::{base_url, WebCaller, WebError, WebState};
use crate::core::query::indexed_attr_by_keyword;
use crate::core::query::{computed, Level, Match, Query, INDEXED_ATTRS};
use crate::core::{Found, Matcher};
use crate::trust::Operation;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use dicom_core::{Tag, VR};
use serde_json::{Map, Value as Json};
use std::collections::BTreeSet;

const RETRIEVE_URL: Tag = Tag(0x0008, 0x1190);
const INSTANCE_AVAILABILITY: Tag = Tag(0x0008, 0x0056);

/// Which resource was searched: what the URL already fixes.
#[derive(Debug, Clone, Default)]
struct Scope {
    study: Option<String>,
    series: Option<String>,
}

/// The attributes returned by default per level (PS3.18 Table 10.6.3-3 study, -4 series,
/// -5 instance), where the index holds them. `StudyDescription` and `SeriesDate` are added:
/// every viewer's study list asks for them.
fn required(level: Level) -> &'static [&'static str] {
    match level {
        Level::Patient | Level::Study => &[
            "StudyDate",
            "StudyTime",
            "AccessionNumber",
            "ModalitiesInStudy",
            "ReferringPhysicianName",
            "PatientName",
            "PatientID",
            "PatientBirthDate",
            "PatientSex",
            "StudyInstanceUID",
            "StudyID",
            "StudyDescription",
            "NumberOfStudyRelatedSeries",
            "NumberOfStudyRelatedInstances",
        ],
        Level::Series => &[
            "Modality",
            "SeriesDescription",
            "SeriesInstanceUID",
            "SeriesNumber",
            "SeriesDate",
            "NumberOfSeriesRelatedInstances",
        ],
        Level::Image => &[
            "SOPClassUID",
            "SOPInstanceUID",
            "InstanceNumber",
            "Rows",
            "Columns",
            "BitsAllocated",
            "NumberOfFrames",
        ],
    }
}

fn keyword_tag(keyword: &str) -> Option<Tag> {
    indexed_attr_by_keyword(keyword)
        .map(|a| a.tag)
        .or(match keyword {
            "ModalitiesInStudy" => Some(computed::MODALITIES_IN_STUDY),
            "NumberOfStudyRelatedSeries" => Some(computed::NUMBER_OF_STUDY_RELATED_SERIES),
            "NumberOfStudyRelatedInstances" => Some(computed::NUMBER_OF_STUDY_RELATED_INSTANCES),
            "NumberOfSeriesRelatedInstances" => Some(computed::NUMBER_OF_SERIES_RELATED_INSTANCES),
            _ => None,
        })
}

/// The tags one result carries: the required ones of the query level and of the levels the
/// URL does not fix (PS3.18 10.6.3.3.2/3), plus `includefield`.
fn returned_tags(level: Level, scope: &Scope, include: &IncludeFields) -> BTreeSet<Tag> {
    let mut levels = vec![level];
    if level >= Level::Series && scope.study.is_none() {
        levels.push(Level::Study);
    }
    if level == Level::Image && scope.series.is_none() {
        levels.push(Level::Series);
    }
    let mut tags: BTreeSet<Tag> = levels
        .iter()
        .flat_map(|l| required(*l).iter().filter_map(|k| keyword_tag(k)))
        .collect();
    // The UIDs of the levels above, so that a result can be retrieved.
    for keyword in ["StudyInstanceUID", "SeriesInstanceUID"] {
        let tag = keyword_tag(keyword).expect("indexed");
        if INDEXED_ATTRS
            .iter()
            .any(|a| a.tag == tag && a.level <= level)
        {
            tags.insert(tag);
        }
    }
    match include {
        IncludeFields::All => tags.extend(
            INDEXED_ATTRS
                .iter()
                .filter(|a| a.level <= level)
                .map(|a| a.tag),
        ),
        IncludeFields::Listed(list) => tags.extend(list.iter().copied()),
    }
    tags
}

/// One result as a DICOM JSON object.
fn result_json(m: &Match, level: Level, tags: &BTreeSet<Tag>, base: &str) -> Json {
    let mut obj = Map::new();
    for tag in tags {
        // PS3.18 10.6.3.3.3: attributes are returned "if present"; the index keeps an absent
        // value as empty, so empty ones are left out.
        if let Some(value) = m.get(tag).filter(|v| !v.is_empty()) {
            put(&mut obj, *tag, vr_of(*tag), value);
        }
    }
    let uid = |k: &str| {
        keyword_tag(k)
            .and_then(|t| m.get(&t))
            .cloned()
            .unwrap_or_default()
    };
    let url = match level {
        Level::Patient | Level::Study => format!("{base}/studies/{}", uid("StudyInstanceUID")),
        Level::Series => format!(
            "{base}/studies/{}/series/{}",
            uid("StudyInstanceUID"),
            uid("SeriesInstanceUID")
        ),
        Level::Image => format!(
            "{base}/studies/{}/series/{}/instances/{}",
            uid("StudyInstanceUID"),
            uid("SeriesInstanceUID"),
            uid("SOPInstanceUID")
        ),
    };
    put(&mut obj, RETRIEVE_URL, VR::UR, &url);
    // Everything indexed is on local disk (PS3.4 C.4.23.1.1 "ONLINE").
    put(&mut obj, INSTANCE_AVAILABILITY, VR::CS, "ONLINE");
    // No Specific Character Set: it would name the source encoding (PS3.18 F.2.2 Note 3),
    // which the index does not keep; JSON text is Unicode either way.
    Json::Object(obj)
}

async fn search(
    state: WebState,
    caller: WebCaller,
    headers: HeaderMap,
    level: Level,
    scope: Scope,
    raw: Option<String>,
) -> Result<Response, WebError> {
    let caller = caller.0;
    let ticket = state.core.admit(&caller, Operation::QidoRs).await?;
    // PS3.18 10.6.1.2: answers are DICOM JSON here (the XML model is not offered).
    let accept = parse_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    if !accept
        .iter()
        .any(|r| covers(&r.essence, "application/dicom+json") || r.essence == "application/json")
    {
        let why = "search results are offered as application/dicom+json";
        ticket.finish("failure", why).await;
        return Err(WebError::NotAcceptable(why.into()));
    }
    let mut query = Query::new(level);
    for (keyword, uid) in [
        ("StudyInstanceUID", &scope.study),
        ("SeriesInstanceUID", &scope.series),
    ] {
        if let Some(uid) = uid {
            let attr = indexed_attr_by_keyword(keyword).expect("indexed");
            query = query.with_key(attr, Matcher::Single(uid.clone()));
        }
    }
    let request = match qido_params::parse(
        query,
        raw.as_deref().unwrap_or(""),
        state.config.dicomweb.max_results,
    ) {
        Ok(r) => r,
        Err(e) => {
            ticket.finish("failure", e.to_string()).await;
            return Err(WebError::BadRequest(e.to_string()));
        }
    };
    // The cache, and in gateway mode the PACS (the source of truth) merged with what only
    // the cache holds; only the patients this caller may see (a search naming a refused
    // patient is a 403).
    let max = state.config.dicomweb.max_results as usize;
    let Found {
        matches,
        mut ticket,
        unanswered,
    } = state.core.query(ticket, request.query, max).await?;
    let mut warnings = request.warnings;
    // A source that did not answer: the matches are what the others hold (PS3.18 8.3.4.5
    // warning), rather than no answer at all.
    for e in &unanswered {
        warnings.push(format!("{e}; the results may be incomplete"));
    }
    let base = base_url(&state, &headers);
    let tags = returned_tags(level, &scope, &request.include);
    let body: Vec<Json> = matches
        .iter()
        .map(|m| result_json(m, level, &tags, &base))
        .collect();

    for m in &matches {
        ticket.touch_match(m);
    }
    let mut detail = format!("{} {} matches", matches.len(), level.code());
    let result = match unanswered.is_empty() {
        true => "success",
        false => {
            let names: Vec<&str> = unanswered.iter().map(|e| e.source_name).collect();
            detail.push_str(&format!(", not answered by: {}", names.join(", ")));
            "partial"
        }
    };
    // Fail closed: no answer leaves without its audit record.
    if let Err(e) = ticket.finish_before_answer(result, detail).await {
        return Err(WebError::Unavailable(e.to_string()));
    }

    // PS3.18 8.3.4.4.1: no matches is 204 with an empty body (CP-2473 would make it 200).
    let mut response = if body.is_empty() {
        StatusCode::NO_CONTENT.into_response()
    } else {
        let bytes = serde_json::to_vec(&body).map_err(|e| WebError::Internal(e.to_string()))?;
        ([(header::CONTENT_TYPE, "application/dicom+json")], bytes).into_response()
    };
    for warning in warnings {
        // PS3.18 8.3.4.5: "299 <agent>: <text>" warnings for ignored or limited parameters.
        let text = format!("299 beeldbrug: \"{}\"", warning.replace('"', "'"));
        if let Ok(v) = HeaderValue::from_str(&text) {
            response.headers_mut().append(header::WARNING, v);
        }
    }
    Ok(response)
}

pub async fn studies(
    State(s): State<WebState>,
    c: WebCaller,
    h: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, WebError> {
    search(s, c, h, Level::Study, Scope::default(), q).await
}

pub async fn all_series(
    State(s): State<WebState>,
    c: WebCaller,
    h: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, WebError> {
    search(s, c, h, Level::Series, Scope::default(), q).await
}

pub async fn all_instances(
    State(s): State<WebState>,
    c: WebCaller,
    h: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, WebError> {
    search(s, c, h, Level::Image, Scope::default(), q).await
}

pub async fn study_series(
    State(s): State<WebState>,
    c: WebCaller,
    h: HeaderMap,
    Path(study): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, WebError> {
    let scope = Scope {
        study: Some(study),
        series: None,
    };
    search(s, c, h, Level::Series, scope, q).await
}

pub async fn study_instances(
    State(s): State<WebState>,
    c: WebCaller,
    h: HeaderMap,
    Path(study): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, WebError> {
    let scope = Scope {
        study: Some(study),
        series: None,
    };
    search(s, c, h, Level::Image, scope, q).await
}

pub async fn series_instances(
    State(s): State<WebState>,
    c: WebCaller,
    h: HeaderMap,
    Path((study, series)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Result<Response, WebError> {
    let scope = Scope {
        study: Some(study),
        series: Some(series),
    };
    search(s, c, h, Level::Image, scope, q).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dicomweb::json::tag_key;

    #[test]
    fn study_results_carry_the_required_attributes() {
        let tags = returned_tags(
            Level::Study,
            &Scope::default(),
            &IncludeFields::Listed(vec![]),
        );
        for t in ["00080020", "00080061", "00100010", "0020000D", "00201208"] {
            assert!(tags.iter().any(|x| tag_key(*x) == t), "{t}");
        }
        let tags = returned_tags(
            Level::Image,
            &Scope {
                study: Some("1".into()),
                series: Some("2".into()),
            },
            &IncludeFields::Listed(vec![]),
        );
        assert!(tags.contains(&Tag(0x0008, 0x0018)));
        assert!(
            !tags.contains(&Tag(0x0010, 0x0010)),
            "study attributes only when unscoped"
        );
    }
}
