//! The console's JSON API (`/admin/api/...`); every handler takes an [`Admin`], so nothing
//! here runs for a caller the console's decision refused.

use super::{record, Admin, AdminError, AdminState, Checked};
use crate::core::query::{indexed_attr_by_keyword, Level, Matcher, Query};
use crate::core::Match;
use crate::dicomweb::WebCaller;
use crate::trust::{Operation, Outcome};
use axum::extract::{Path, Query as Params, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use dicom_core::Tag;
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Duration;

/// Most studies one search lists.
const MAX_STUDIES: u32 = 200;

/// How often the transfer feed sends the list.
const FEED_INTERVAL: Duration = Duration::from_millis(400);

/// `GET /admin/api/whoami`: who the console takes the caller for, or why it would refuse
/// them (`authenticated: false`, not audited: nothing is read). The app shows its login
/// form then.
pub async fn whoami(
    State(state): State<AdminState>,
    Checked(caller, decision): Checked,
) -> Json<Value> {
    if !decision.is_permit() {
        return Json(json!({ "authenticated": false, "reason": decision.reason() }));
    }
    let config = &state.web.config;
    Json(json!({
        "authenticated": true,
        "subject": caller.claims.as_ref().map(|c| c.subject.clone()).unwrap_or_else(|| caller.ae_title.clone()),
        "organisation_ura": caller.claims.as_ref().map(|c| c.organisation_ura.clone()),
        "role": caller.claims.as_ref().map(|c| c.role.clone()),
        "certificate_sha256": caller.certificate_sha256,
        "expires_at": caller.claims.as_ref().map(|c| c.expires_at),
        "gateway": {
            "ae_title": config.dimse.ae_title,
            "version": env!("CARGO_PKG_VERSION"),
            "gateway_mode": config.pacs.is_some(),
            "xds": config.xds.enabled,
            "remote": config.remote.enabled,
        },
    }))
}

/// Query of `GET /admin/api/studies`.
#[derive(Debug, Deserialize)]
pub struct StudySearch {
    /// Patient ID (the BSN), exact.
    pub bsn: Option<String>,
    /// Patient name: case- and accent-insensitive prefix per name component (`muller`
    /// finds `Müller^Zoë`).
    pub name: Option<String>,
    /// Study date from / to, `YYYY-MM-DD` or `YYYYMMDD`.
    pub from: Option<String>,
    pub to: Option<String>,
    pub modality: Option<String>,
    pub limit: Option<u32>,
}

fn attr(keyword: &str) -> &'static crate::core::IndexedAttr {
    indexed_attr_by_keyword(keyword).expect("an indexed attribute")
}

/// A date as `YYYYMMDD`, from `YYYY-MM-DD` or `YYYYMMDD`.
fn dicom_date(raw: &str) -> Result<String, AdminError> {
    let d: String = raw.trim().chars().filter(|c| *c != '-').collect();
    if d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit()) {
        Ok(d)
    } else {
        Err(AdminError::BadRequest(format!(
            "{raw:?} is not a date (YYYY-MM-DD)"
        )))
    }
}

/// The study-level query of a search.
pub fn study_query(s: &StudySearch) -> Result<Query, AdminError> {
    let given = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let mut q = Query::new(Level::Study);
    if let Some(bsn) = given(&s.bsn) {
        if bsn
            .chars()
            .any(|c| c.is_control() || c == '*' || c == '?' || c == '\\')
        {
            return Err(AdminError::BadRequest(
                "a patient ID is matched exactly".into(),
            ));
        }
        q = q.with_key(attr("PatientID"), Matcher::Single(bsn));
    }
    if let Some(name) = given(&s.name) {
        if name.chars().any(char::is_control) {
            return Err(AdminError::BadRequest(
                "control characters in the name".into(),
            ));
        }
        let name = name.trim_end_matches('*').to_string();
        let matcher = if name.contains(['*', '?']) {
            Matcher::Wildcard(name)
        } else {
            Matcher::Fuzzy(name)
        };
        q = q.with_key(attr("PatientName"), matcher);
    }
    let from = given(&s.from).map(|d| dicom_date(&d)).transpose()?;
    let to = given(&s.to).map(|d| dicom_date(&d)).transpose()?;
    if from.is_some() || to.is_some() {
        q = q.with_key(attr("StudyDate"), Matcher::Range { from, to });
    }
    if let Some(m) = given(&s.modality) {
        let m = m.to_ascii_uppercase();
        if m.len() > 16 || !m.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(AdminError::BadRequest(format!("{m:?} is not a modality")));
        }
        q = q.with_key(attr("Modality"), Matcher::UidList(vec![m]));
    }
    q.limit = Some(s.limit.unwrap_or(50).clamp(1, MAX_STUDIES));
    Ok(q)
}

fn get(m: &Match, group: u16, element: u16) -> String {
    m.get(&Tag(group, element)).cloned().unwrap_or_default()
}

fn study_json(m: &Match) -> Value {
    json!({
        "study_instance_uid": get(m, 0x0020, 0x000D),
        "patient_id": get(m, 0x0010, 0x0020),
        "patient_name": get(m, 0x0010, 0x0010),
        "patient_birth_date": get(m, 0x0010, 0x0030),
        "study_date": get(m, 0x0008, 0x0020),
        "study_description": get(m, 0x0008, 0x1030),
        "accession_number": get(m, 0x0008, 0x0050),
        "modalities": get(m, 0x0008, 0x0061).split('\\').filter(|s| !s.is_empty()).collect::<Vec<_>>(),
        "series": get(m, 0x0020, 0x1206).parse::<u64>().ok(),
        "instances": get(m, 0x0020, 0x1208).parse::<u64>().ok(),
    })
}

fn series_json(m: &Match) -> Value {
    json!({
        "series_instance_uid": get(m, 0x0020, 0x000E),
        "modality": get(m, 0x0008, 0x0060),
        "series_number": get(m, 0x0020, 0x0011),
        "series_description": get(m, 0x0008, 0x103E),
        "instances": get(m, 0x0020, 0x1209).parse::<u64>().ok(),
    })
}

/// Run a query through the core with the console's ticket, which records the patients the
/// answer named (NEN 7513: an operator's search is an access too).
async fn query(
    state: &AdminState,
    caller: &crate::trust::Caller,
    q: Query,
    what: &str,
) -> Result<(Vec<Match>, Vec<String>), AdminError> {
    let core = &state.web.core;
    let ticket = core.admit(caller, Operation::Admin).await?;
    let max = q.limit.unwrap_or(MAX_STUDIES) as usize;
    let mut found = core.query(ticket, q, max).await?;
    for m in &found.matches {
        found.ticket.touch_match(m);
    }
    let unanswered: Vec<String> = found.unanswered.iter().map(|e| e.to_string()).collect();
    let result = if unanswered.is_empty() {
        "success"
    } else {
        "partial"
    };
    found
        .ticket
        .finish(
            result,
            format!("console {what}: {} matches", found.matches.len()),
        )
        .await;
    Ok((found.matches, unanswered))
}

/// `GET /admin/api/studies?bsn=&name=&from=&to=&modality=`: studies over the cache and
/// every source the web front reaches, merged by the core.
pub async fn studies(
    State(state): State<AdminState>,
    Admin(caller): Admin,
    Params(search): Params<StudySearch>,
) -> Result<Json<Value>, AdminError> {
    let q = study_query(&search)?;
    if q.keys.is_empty() {
        return Err(AdminError::BadRequest(
            "give a BSN, a name, a date or a modality".into(),
        ));
    }
    let (matches, unanswered) = query(&state, &caller, q, "study search").await?;
    Ok(Json(json!({
        "studies": matches.iter().map(study_json).collect::<Vec<_>>(),
        "unanswered": unanswered,
    })))
}

/// `GET /admin/api/studies/{study}`: its series and where it lives (cache, each source, the
/// XDS registry's KOS publication).
pub async fn study(
    State(state): State<AdminState>,
    Admin(caller): Admin,
    Path(study): Path<String>,
) -> Result<Json<Value>, AdminError> {
    check_uid(&study)?;
    let q = Query::new(Level::Series)
        .with_key(attr("StudyInstanceUID"), Matcher::Single(study.clone()));
    let (series, unanswered) = query(&state, &caller, q, "study series").await?;
    let mut series: Vec<Value> = series.iter().map(series_json).collect();
    series.sort_by_key(|s| {
        s["series_number"]
            .as_str()
            .and_then(|n| n.trim().parse::<i64>().ok())
            .unwrap_or(i64::MAX)
    });
    let place = state.web.core.study_where(&caller, &study).await;
    Ok(Json(json!({
        "study_instance_uid": study,
        "series": series,
        "where": place,
        "unanswered": unanswered,
    })))
}

fn check_uid(uid: &str) -> Result<(), AdminError> {
    let ok =
        !uid.is_empty() && uid.len() <= 64 && uid.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    ok.then_some(())
        .ok_or_else(|| AdminError::BadRequest(format!("{uid:?} is not a UID")))
}

/// `GET /admin/api/studies/{study}/series/{series}/thumbnail`: the DICOMweb front's series
/// thumbnail (PS3.18 10.4.1.1.4) for the console's caller (its own WADO-RS record).
pub async fn thumbnail(
    State(state): State<AdminState>,
    Admin(caller): Admin,
    Path((study, series)): Path<(String, String)>,
) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::ACCEPT, HeaderValue::from_static("image/jpeg"));
    let answer = crate::dicomweb::rendered::series_thumbnail(
        State(state.web.clone()),
        WebCaller(caller),
        headers,
        Path((study, series)),
        axum::extract::RawQuery(None),
    )
    .await;
    let mut response = answer.into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=300"),
    );
    response
}

fn transfers_json(state: &AdminState) -> Value {
    json!({ "transfers": state.web.core.transfers() })
}

/// `GET /admin/api/transfers`: the retrieves running now, then the last ended ones.
pub async fn transfers(State(state): State<AdminState>, _admin: Admin) -> Json<Value> {
    Json(transfers_json(&state))
}

/// `GET /admin/api/transfers/events`: the same list as server-sent events (`event:
/// transfers`), every [`FEED_INTERVAL`] while something runs or changed, with keep-alives.
/// The feed ends with the session's claims (it is decided once, when it opens).
pub async fn transfer_events(
    State(state): State<AdminState>,
    Admin(caller): Admin,
) -> Sse<impl futures::Stream<Item = Result<Event, std::convert::Infallible>>> {
    let expires = caller
        .claims
        .as_ref()
        .map(|c| c.expires_at)
        .unwrap_or(i64::MAX);
    let stream = futures::stream::unfold(
        (state, None::<String>, true),
        move |(state, last, first)| async move {
            loop {
                if !first {
                    tokio::time::sleep(FEED_INTERVAL).await;
                }
                if crate::clock::unix_seconds() >= expires {
                    return None;
                }
                let data = transfers_json(&state).to_string();
                let running = data.contains("\"state\":\"running\"");
                if last.as_deref() != Some(data.as_str()) || running || first {
                    let event = Event::default().event("transfers").data(data.clone());
                    return Some((Ok(event), (state, Some(data), false)));
                }
            }
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// `DELETE /admin/api/transfers/{id}`: cancel a running retrieve.
pub async fn cancel_transfer(
    State(state): State<AdminState>,
    Admin(caller): Admin,
    Path(id): Path<u64>,
) -> Result<Json<Value>, AdminError> {
    if !state.web.core.cancel_transfer(id) {
        return Err(AdminError::NotFound(format!("no running transfer {id}")));
    }
    record(
        &state.web,
        &caller,
        format!("console: transfer {id} cancelled"),
    )
    .await;
    Ok(Json(json!({ "cancelled": id })))
}

/// Query of `GET /admin/api/queues`.
#[derive(Debug, Deserialize)]
pub struct QueueParams {
    pub limit: Option<u32>,
}

/// `GET /admin/api/queues`: the forward queue (STOW-RS instances for the PACS) with counts
/// per state, and the studies waiting for their publication (XDS-I).
pub async fn queues(
    State(state): State<AdminState>,
    _admin: Admin,
    Params(p): Params<QueueParams>,
) -> Result<Json<Value>, AdminError> {
    let limit = p.limit.unwrap_or(500).clamp(1, 10_000);
    let core = &state.web.core;
    let jobs = core.forward_queue(limit).await?;
    let mut counts = std::collections::BTreeMap::<String, u64>::new();
    for j in &jobs {
        *counts.entry(j.state.clone()).or_default() += 1;
    }
    let publication = core.publication_queue(limit).await?;
    let config = &state.web.config;
    Ok(Json(json!({
        "forward": {
            "enabled": config.pacs.as_ref().is_some_and(|p| p.forward_stow),
            "pacs": config.pacs.as_ref().map(|p| format!("{}@{}:{}", p.ae_title, p.host, p.port)),
            "counts": counts,
            "jobs": jobs,
        },
        "publication": {
            "enabled": config.xds.enabled,
            "studies": publication,
        },
    })))
}

/// Body of `POST /admin/api/queues/forward/requeue`.
#[derive(Debug, Deserialize)]
pub struct Requeue {
    /// Failed jobs to put back; empty or absent: every failed job.
    #[serde(default)]
    pub ids: Vec<i64>,
}

/// `POST /admin/api/queues/forward/requeue`: failed forward jobs back in the queue, due now.
pub async fn requeue(
    State(state): State<AdminState>,
    Admin(caller): Admin,
    Json(body): Json<Requeue>,
) -> Result<Json<Value>, AdminError> {
    if body.ids.len() > 10_000 {
        return Err(AdminError::BadRequest("at most 10000 ids at once".into()));
    }
    let n = state.web.core.requeue_failed(&body.ids).await?;
    let which = if body.ids.is_empty() {
        "all failed".to_string()
    } else {
        format!("{} named", body.ids.len())
    };
    record(
        &state.web,
        &caller,
        format!("console: {n} failed forward jobs re-queued ({which})"),
    )
    .await;
    Ok(Json(json!({ "requeued": n })))
}

/// `POST /admin/api/queues/publication/{study}/publish`: publish a waiting study now (its
/// quiet period and its back-off after failures skipped); the attempt shows on the
/// transfers page and its outcome on the queues page.
pub async fn publish_now(
    State(state): State<AdminState>,
    Admin(caller): Admin,
    Path(study): Path<String>,
) -> Result<Json<Value>, AdminError> {
    check_uid(&study)?;
    if !state.web.core.publish_now(&study).await? {
        return Err(AdminError::NotFound(format!(
            "study {study} does not wait for its publication"
        )));
    }
    record(
        &state.web,
        &caller,
        format!("console: publication of study {study} asked for now"),
    )
    .await;
    Ok(Json(json!({ "requested": study })))
}

/// Query of the audit endpoints.
#[derive(Debug, Deserialize)]
pub struct AuditParams {
    pub bsn: Option<String>,
    pub limit: Option<u32>,
}

/// One patient's trail with the chain's verification; the read itself is recorded (an
/// AUDIT-READ record naming the patient, as `beeldbrug audit` and `GET /admin/audit` do).
async fn read_trail(
    state: &AdminState,
    caller: &crate::trust::Caller,
    p: &AuditParams,
    how: &str,
) -> Result<crate::trust::audit::PatientTrail, AdminError> {
    let Some(bsn) = p.bsn.as_deref().map(str::trim).filter(|b| !b.is_empty()) else {
        return Err(AdminError::BadRequest("give ?bsn=".into()));
    };
    let trust = &state.web.trust;
    let limit = p.limit.unwrap_or(1000).clamp(1, 100_000);
    let trail = trust.audit.patient_trail(bsn, limit).await;
    let (outcome, result) = match trail {
        Ok(trail) => (
            Outcome {
                patient_ids: vec![bsn.to_string()],
                result: "success".into(),
                detail: format!(
                    "console {how}: {} audit records of one patient read; {}",
                    trail.records.len(),
                    crate::trust::audit::cli::describe(&trail.verification)
                ),
                grounds: "operator console".into(),
                ..Default::default()
            },
            Ok(trail),
        ),
        Err(e) => (
            Outcome {
                patient_ids: vec![bsn.to_string()],
                result: "failure".into(),
                detail: e.to_string(),
                ..Default::default()
            },
            Err(AdminError::Internal(e.to_string())),
        ),
    };
    // Reading without leaving a trace is not allowed: no answer if the read is not recorded.
    trust
        .audit_before_answer(caller, Operation::AuditRead, outcome)
        .await
        .map_err(|e| AdminError::Unavailable(e.to_string()))?;
    result
}

/// `GET /admin/api/audit?bsn=`: the patient's records (NEN 7513), oldest first, and the
/// verification of the whole hash chain.
pub async fn audit(
    State(state): State<AdminState>,
    Admin(caller): Admin,
    Params(p): Params<AuditParams>,
) -> Result<Json<Value>, AdminError> {
    let trail = read_trail(&state, &caller, &p, "audit view").await?;
    Ok(Json(json!({
        "patient_id": trail.patient_id,
        "records": trail.records,
        "verification": trail.verification,
        "chain": crate::trust::audit::cli::describe(&trail.verification),
    })))
}

/// `GET /admin/api/audit.csv?bsn=`: the same records as CSV (`beeldbrug audit --csv`).
pub async fn audit_csv(
    State(state): State<AdminState>,
    Admin(caller): Admin,
    Params(p): Params<AuditParams>,
) -> Result<Response, AdminError> {
    let trail = read_trail(&state, &caller, &p, "audit export").await?;
    let body = crate::trust::audit::cli::csv(&trail.records);
    let name = format!(
        "attachment; filename=\"audit-{}.csv\"",
        trail
            .patient_id
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect::<String>()
    );
    let disposition =
        HeaderValue::from_str(&name).unwrap_or_else(|_| HeaderValue::from_static("attachment"));
    let chain = HeaderValue::from_str(&crate::trust::audit::cli::describe(&trail.verification))
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            ),
            (header::CONTENT_DISPOSITION, disposition),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (header::HeaderName::from_static("x-audit-chain"), chain),
        ],
        body,
    )
        .into_response())
}

/// `GET /admin/api/config`: the effective configuration, secrets masked.
pub async fn config(State(state): State<AdminState>, _admin: Admin) -> Json<Value> {
    let mut value = serde_json::to_value(&*state.web.config).unwrap_or(Value::Null);
    mask(&mut value);
    Json(json!({ "config": value }))
}

/// Does a key name a secret? (Passwords, secrets, private keys' contents; a key *file*'s
/// path is no secret and stays.)
fn secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "passphrase",
        "private_key",
        "api_key",
        "credential",
    ]
    .iter()
    .any(|s| k.contains(s))
        || k == "token"
}

/// Mask secrets in place: values under secret keys, and the password in a URL's userinfo
/// (`postgres://user:***@host/db`).
pub fn mask(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if secret_key(k) && !v.is_null() {
                    *v = Value::String("***".into());
                } else {
                    mask(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask),
        Value::String(s) => {
            if let (Some(scheme), Some(at)) = (s.find("://"), s.rfind('@')) {
                if at > scheme {
                    if let Some((user, _)) = s[scheme + 3..at].split_once(':') {
                        *s = format!("{}{user}:***{}", &s[..scheme + 3], &s[at..]);
                    }
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_and_the_rest_kept() {
        let mut v = json!({
            "storage": { "index": "postgres://bb:hunter2@db/beeldbrug", "data_dir": "/var/lib/x" },
            "syslog": { "password": "p", "client_key_file": "/etc/k.pem" },
            "list": [{ "secret": "s" }, "https://u:pw@h/x"],
        });
        mask(&mut v);
        assert_eq!(v["storage"]["index"], "postgres://bb:***@db/beeldbrug");
        assert_eq!(v["storage"]["data_dir"], "/var/lib/x");
        assert_eq!(v["syslog"]["password"], "***");
        assert_eq!(v["syslog"]["client_key_file"], "/etc/k.pem");
        assert_eq!(v["list"][0]["secret"], "***");
        assert_eq!(v["list"][1], "https://u:***@h/x");
        assert!(!v.to_string().contains("hunter2"));
    }

    #[test]
    fn a_search_becomes_a_study_query() {
        let s = StudySearch {
            bsn: Some(" 999999990 ".into()),
            name: Some("müller".into()),
            from: Some("2024-01-01".into()),
            to: None,
            modality: Some("ct".into()),
            limit: None,
        };
        let q = study_query(&s).unwrap();
        assert_eq!(q.level, Level::Study);
        let matchers: Vec<_> = q
            .keys
            .iter()
            .map(|k| (k.attr.keyword, k.matcher.clone()))
            .collect();
        assert_eq!(
            matchers,
            vec![
                ("PatientID", Matcher::Single("999999990".into())),
                ("PatientName", Matcher::Fuzzy("müller".into())),
                (
                    "StudyDate",
                    Matcher::Range {
                        from: Some("20240101".into()),
                        to: None
                    }
                ),
                ("Modality", Matcher::UidList(vec!["CT".into()])),
            ]
        );
        let bad = StudySearch {
            bsn: Some("9*".into()),
            name: None,
            from: None,
            to: None,
            modality: None,
            limit: None,
        };
        assert!(study_query(&bad).is_err());
    }
}
