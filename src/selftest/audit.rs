//! Audit record presence (REFERENCE §4): did the peer record the self-test's exchanges with
//! the test patient in its audit trail? A peer proves it by handing over the trail: the
//! console's `GET /admin/api/audit?bsn=` of a beeldbrug (the NEN 7513 trail of one patient
//! with the verification of its hash chain, each record with the correlation id the call
//! carried). That needs admin access to the peer: an admin client certificate of the peer's
//! own (`--audit-cert`, `--audit-key`; listed in its `trust.admin_certificates`) or a token of
//! its organisation with an admin role (`--audit-token`), or both. Without them, or when the
//! peer has no such API (another product), the requirement is reported as not checkable from
//! here (skip), with the correlation ids to look up in the peer's trail by hand.

use super::http;
use super::{Check, Requirement, Status, Suite};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub const RECORDS: Requirement = Requirement {
    id: "audit.records",
    text: "The peer records every exchange with the test patient in its audit trail (NEN 7513), each findable by the correlation id the call carried, and its hash chain verifies",
    reference: "REFERENCE §4 Logging and audit (every exchange between gateways logged at both ends; queryable per BSN, can be handed to the other gateway)",
};

/// The checks whose calls concern the test patient, so the peer's trail of that patient
/// must hold a record of each (the refusals are recorded too, but need not name the
/// patient: their assertion was not accepted).
const PATIENT_EXCHANGES: [&str; 5] = [
    "iti38.find-documents",
    "iti39.manifest",
    "rad75.retrieve",
    "qido.studies",
    "wado.metadata",
];

/// How the self-test reads the peer's audit trail.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// The trail's URL (default `<peer>/admin/api/audit`).
    pub url: Option<String>,
    /// A client certificate and key the peer admits to its console (default: ours).
    pub identity: Option<(PathBuf, PathBuf)>,
    /// A bearer token of the peer's organisation with an admin role.
    pub token: Option<String>,
}

impl Access {
    /// Whether anything was given that could admit us (else the check is not attempted).
    pub fn given(&self) -> bool {
        self.identity.is_some() || self.token.is_some()
    }
}

/// The exchanges to look for: check id → correlation id.
fn exchanges(checks: &[Check]) -> BTreeMap<&'static str, String> {
    checks
        .iter()
        .filter(|c| c.status == Status::Pass && PATIENT_EXCHANGES.contains(&c.id))
        .filter_map(|c| c.correlation_id.clone().map(|id| (c.id, id)))
        .collect()
}

fn ids_list(wanted: &BTreeMap<&'static str, String>) -> String {
    wanted
        .iter()
        .map(|(check, id)| format!("{check}: {id}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// What one read of the trail gave.
enum Read {
    Trail(Value),
    /// Not checkable from here (no access, no such API): why.
    NotCheckable(String),
    Failed(String),
}

async fn read(suite: &Suite, url: &str, session: &mut Option<String>) -> Read {
    let access = &suite.options.audit;
    let Some(ca) = &suite.ca else {
        return Read::NotCheckable("no CA configured to reach the peer".into());
    };
    let identity = access.identity.clone().or_else(|| suite.identity.clone());
    let config = match http::client_config(
        ca,
        &[],
        identity.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
        &[&rustls::version::TLS13, &rustls::version::TLS12],
    ) {
        Ok(c) => c,
        Err(e) => return Read::Failed(format!("TLS client: {e}")),
    };
    let timeout = suite.options.timeout;
    // A bearer token is single-use at a beeldbrug: exchanged once for a console session.
    if let (Some(token), None) = (&access.token, &session) {
        let login = url
            .rsplit_once("/audit")
            .map(|(base, _)| format!("{base}/session"))
            .unwrap_or_else(|| url.to_string());
        let headers = [
            ("authorization", format!("Bearer {}", token.trim())),
            (crate::admin::CSRF_HEADER, "1".to_string()),
        ];
        match http::request(
            config.clone(),
            hyper::Method::POST,
            &login,
            &headers,
            None,
            timeout,
        )
        .await
        {
            Ok((answer, _)) if answer.status == 200 => {
                *session = answer
                    .headers
                    .get_all(hyper::header::SET_COOKIE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .find_map(|v| v.split(';').next().map(str::to_string));
            }
            Ok((answer, _)) => {
                return Read::NotCheckable(format!(
                    "the peer refused the admin token at {login}: HTTP {}",
                    answer.status
                ))
            }
            Err(e) => return Read::Failed(format!("{login}: {e}")),
        }
    }
    let mut headers = vec![("accept", "application/json".to_string())];
    if let Some(cookie) = session {
        headers.push(("cookie", cookie.clone()));
    }
    let answer = match http::request(config, hyper::Method::GET, url, &headers, None, timeout).await
    {
        Ok((answer, _)) => answer,
        Err(e) => return Read::Failed(format!("{url}: {e}")),
    };
    let excerpt = String::from_utf8_lossy(&answer.body[..answer.body.len().min(160)]).into_owned();
    match answer.status {
        200 => match serde_json::from_slice::<Value>(&answer.body) {
            Ok(v) if v["records"].is_array() => Read::Trail(v),
            _ => Read::NotCheckable(format!(
                "{url} answered 200 but not with an audit trail ({}): not a beeldbrug console",
                answer.content_type()
            )),
        },
        401 | 403 | 404 | 405 => Read::NotCheckable(format!(
            "the peer does not hand over its audit trail to us: {url} answered HTTP {} {excerpt}",
            answer.status
        )),
        status => Read::Failed(format!("{url}: HTTP {status} {excerpt}")),
    }
}

/// The check, after the others (`checks`: their correlation ids).
pub async fn run(suite: &Suite, checks: &[Check]) -> Check {
    let wanted = exchanges(checks);
    if wanted.is_empty() {
        return Check::skip(
            &RECORDS,
            "not checkable: no exchange with the test patient succeeded to look up",
        );
    }
    let access = &suite.options.audit;
    if !access.given() {
        return Check::skip(
            &RECORDS,
            format!(
                "not checkable from here: no admin access to the peer's audit trail \
                 (--audit-cert/--audit-key or --audit-token-file); look up these correlation ids in its trail: {}",
                ids_list(&wanted)
            ),
        );
    }
    let started = Instant::now();
    let base = suite.options.peer.trim_end_matches('/');
    let url = format!(
        "{}?bsn={}&limit=100000",
        access
            .url
            .clone()
            .unwrap_or_else(|| format!("{base}/admin/api/audit")),
        suite.options.bsn
    );
    // A record may be written just after its answer: look again for a while.
    let deadline = Instant::now() + suite.options.timeout.min(Duration::from_secs(10));
    let mut session = None;
    loop {
        let trail = match read(suite, &url, &mut session).await {
            Read::Trail(t) => t,
            Read::NotCheckable(why) => {
                return Check::skip(
                    &RECORDS,
                    format!(
                        "not checkable from here: {why}; look up these correlation ids in its trail: {}",
                        ids_list(&wanted)
                    ),
                )
            }
            Read::Failed(why) => return Check::fail(&RECORDS, why, started),
        };
        let records = trail["records"].as_array().cloned().unwrap_or_default();
        let mut found = Vec::new();
        let mut missing = Vec::new();
        for (check, id) in &wanted {
            match records
                .iter()
                .find(|r| r["correlation_id"].as_str() == Some(id.as_str()))
            {
                Some(r) => found.push(format!(
                    "{check} → record {} ({} {})",
                    r["seq"],
                    r["operation"].as_str().unwrap_or("?"),
                    r["outcome"].as_str().unwrap_or("?")
                )),
                None => missing.push(format!("{check} ({id})")),
            }
        }
        let chain_ok = trail["verification"]["ok"].as_bool();
        let chain = trail["chain"].as_str().unwrap_or("not said");
        let chain = chain.strip_prefix("chain: ").unwrap_or(chain).to_string();
        if missing.is_empty() || Instant::now() >= deadline {
            let summary = format!(
                "{} records of the test patient at {url}; hash chain: {chain}",
                records.len()
            );
            return if !missing.is_empty() {
                Check::fail(
                    &RECORDS,
                    format!(
                        "no audit record with the correlation id of: {}; found: {}; {summary}",
                        missing.join(", "),
                        if found.is_empty() {
                            "none".to_string()
                        } else {
                            found.join(", ")
                        }
                    ),
                    started,
                )
            } else if chain_ok == Some(false) {
                Check::fail(
                    &RECORDS,
                    format!(
                        "every exchange recorded, but the hash chain does not verify; {summary}"
                    ),
                    started,
                )
            } else {
                Check::pass(
                    &RECORDS,
                    format!(
                        "every exchange with the test patient recorded: {}; {summary}",
                        found.join(", ")
                    ),
                    started,
                )
            };
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
