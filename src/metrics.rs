//! Prometheus metrics (issue 16, item 3): what the fronts, the core, the trust decision and the
//! store count as they work, and [`render`] for `GET /metrics` (OpenMetrics text, which
//! Prometheus scrapes; served behind the same trust decision as `/admin`, see `http.rs`).
//!
//! Call sites are one line each (`crate::metrics::...`); the names, all prefixed
//! `beeldbrug_`, are listed in `docs/operations.md` ("Metrics"). Labels never carry patient
//! data or UIDs: fronts, route templates' front, outcomes, queue names.
//!
//! Gauges that describe the index (queue depths, cache size) are read at scrape time by the
//! `/metrics` handler ([`set_queue_depth`], [`set_cache`]); the rest count as things happen.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::LazyLock;
use std::time::Duration;

type Labels = Vec<(&'static str, String)>;
type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

/// Every metric of the process, registered once.
struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    duration: HistogramFamily,
    response_bytes: Family<Labels, Counter>,
    dimse_operations: Family<Labels, Counter>,
    dimse_instances: Family<Labels, Counter>,
    associations_open: Gauge,
    retrievals: Family<Labels, Counter>,
    tokens: Family<Labels, Counter>,
    consent: Family<Labels, Counter>,
    queue_depth: Family<Labels, Gauge>,
    cache_bytes: Gauge,
    cache_studies: Gauge,
    orphans_removed: Counter,
    missing_blobs: Counter,
    ingest_groups: Counter,
    ingest_group_instances: Counter,
    chain_up: Family<Labels, Gauge>,
    chain_latency: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    chain_certificate_days: Family<Labels, Gauge>,
    peer_calls: Family<Labels, Counter>,
    peer_call_duration: HistogramFamily,
}

/// Request durations from 5 ms to about 80 s.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::with_prefix("beeldbrug");
    let m = Metrics {
        requests: Family::default(),
        duration: Family::new_with_constructor(duration_histogram),
        response_bytes: Family::default(),
        dimse_operations: Family::default(),
        dimse_instances: Family::default(),
        associations_open: Gauge::default(),
        retrievals: Family::default(),
        tokens: Family::default(),
        consent: Family::default(),
        queue_depth: Family::default(),
        cache_bytes: Gauge::default(),
        cache_studies: Gauge::default(),
        orphans_removed: Counter::default(),
        missing_blobs: Counter::default(),
        ingest_groups: Counter::default(),
        ingest_group_instances: Counter::default(),
        chain_up: Family::default(),
        chain_latency: Family::default(),
        chain_certificate_days: Family::default(),
        peer_calls: Family::default(),
        peer_call_duration: Family::new_with_constructor(duration_histogram),
        registry: Registry::default(),
    };
    registry.register(
        "requests",
        "Requests per front (dicomweb, wado_uri, xds, admin, dimse: one per association) and outcome (ok, client_error, error)",
        m.requests.clone(),
    );
    registry.register(
        "request_duration_seconds",
        "Time from request to the end of its answer per front (DIMSE: the association)",
        m.duration.clone(),
    );
    registry.register(
        "response_bytes",
        "Bytes of HTTP response bodies sent per front",
        m.response_bytes.clone(),
    );
    registry.register(
        "dimse_operations",
        "DIMSE requests per operation (echo, find, store, move, get)",
        m.dimse_operations.clone(),
    );
    registry.register(
        "dimse_instances",
        "Instances per direction: stored (C-STORE successes), sent (C-GET/C-MOVE sub-operations)",
        m.dimse_instances.clone(),
    );
    registry.register(
        "dimse_associations_open",
        "DIMSE associations open now",
        m.associations_open.clone(),
    );
    registry.register(
        "retrievals",
        "Retrieves per source that answered (cache: a hit; pacs or a remote gateway: a miss)",
        m.retrievals.clone(),
    );
    registry.register(
        "token_verifications",
        "Credentials verified per scheme (bearer, saml) and outcome (valid, invalid)",
        m.tokens.clone(),
    );
    registry.register(
        "consent_decisions",
        "Consent service answers per answer",
        m.consent.clone(),
    );
    registry.register(
        "queue_depth",
        "Items waiting per queue (forward, publication, syslog_outbox), read at scrape time",
        m.queue_depth.clone(),
    );
    registry.register(
        "cache_bytes",
        "Bytes of studies cached from the PACS, read at scrape time",
        m.cache_bytes.clone(),
    );
    registry.register(
        "cache_studies",
        "Studies cached from the PACS, read at scrape time",
        m.cache_studies.clone(),
    );
    registry.register(
        "recovered_orphans",
        "Blob files no index row named (left by a crash), removed by the start's sweep",
        m.orphans_removed.clone(),
    );
    registry.register(
        "missing_blobs",
        "Reads of an indexed instance whose file was missing (each logged for repair)",
        m.missing_blobs.clone(),
    );
    registry.register(
        "ingest_group_commits",
        "Group commits of C-STORE and STOW-RS ingest (one round of fsyncs each)",
        m.ingest_groups.clone(),
    );
    registry.register(
        "ingest_group_instances",
        "Instances made durable by the group commits (divided by the commits: the mean group size)",
        m.ingest_group_instances.clone(),
    );
    registry.register(
        "chain_peer_up",
        "Chain monitoring: 1 when the peer (kind: pacs, gateway, consent) answered its last probe, else 0",
        m.chain_up.clone(),
    );
    registry.register(
        "chain_probe_seconds",
        "Chain monitoring: how long the peer's last probe took",
        m.chain_latency.clone(),
    );
    registry.register(
        "chain_certificate_days",
        "Chain monitoring: days until the certificate expires (a peer's as presented, ours: kind own)",
        m.chain_certificate_days.clone(),
    );
    registry.register(
        "peer_calls",
        "Real outgoing calls per peer (kind: pacs, gateway), call (find, count, fetch, forward, iti38, iti39, rad75) and outcome (ok, error)",
        m.peer_calls.clone(),
    );
    registry.register(
        "peer_call_duration_seconds",
        "Time of real outgoing calls per peer (a retrieve: until its last instance)",
        m.peer_call_duration.clone(),
    );
    Metrics { registry, ..m }
});

/// The real traffic toward one peer since start (for the chain view, `GET /admin/chain`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct PeerTraffic {
    pub kind: String,
    pub peer: String,
    pub calls: u64,
    pub failures: u64,
    pub error_rate: f64,
    pub last_latency_ms: u64,
    pub mean_latency_ms: u64,
    pub max_latency_ms: u64,
    pub last_call: Option<String>,
    /// When the last failure was and what it was.
    pub last_failure: Option<(String, String)>,
}

/// Per (kind, peer): the traffic so far and the sum of latencies.
static TRAFFIC: std::sync::Mutex<std::collections::BTreeMap<(String, String), (PeerTraffic, u64)>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// One real outgoing call to `peer` (a participant's name or the PACS's source name; no
/// patient data): which call, its outcome (the error's text) and how long it took.
pub fn peer_call(
    kind: &'static str,
    peer: &str,
    call: &'static str,
    result: Result<(), &str>,
    took: Duration,
) {
    let outcome = if result.is_ok() { "ok" } else { "error" };
    METRICS
        .peer_calls
        .get_or_create(&labels(&[
            ("kind", kind),
            ("peer", peer),
            ("call", call),
            ("outcome", outcome),
        ]))
        .inc();
    METRICS
        .peer_call_duration
        .get_or_create(&labels(&[("kind", kind), ("peer", peer)]))
        .observe(took.as_secs_f64());
    let ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
    let now = crate::clock::now_rfc3339();
    let mut traffic = TRAFFIC.lock().unwrap_or_else(|e| e.into_inner());
    let (t, sum) = traffic
        .entry((kind.to_string(), peer.to_string()))
        .or_insert_with(|| {
            (
                PeerTraffic {
                    kind: kind.to_string(),
                    peer: peer.to_string(),
                    ..Default::default()
                },
                0,
            )
        });
    t.calls += 1;
    *sum = sum.saturating_add(ms);
    if let Err(why) = result {
        t.failures += 1;
        t.last_failure = Some((now.clone(), format!("{call}: {why}")));
    }
    t.error_rate = t.failures as f64 / t.calls as f64;
    t.last_latency_ms = ms;
    t.mean_latency_ms = *sum / t.calls;
    t.max_latency_ms = t.max_latency_ms.max(ms);
    t.last_call = Some(now);
}

/// The real traffic toward every peer called since start.
pub fn peer_traffic() -> Vec<PeerTraffic> {
    TRAFFIC
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .map(|(t, _)| t.clone())
        .collect()
}

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

/// The front of an HTTP route template.
fn front_of(route: &str) -> &'static str {
    if route.starts_with("/dicomweb") {
        "dicomweb"
    } else if route.starts_with("/wado") {
        "wado_uri"
    } else if route.starts_with("/admin")
        || matches!(route, "/health" | "/ready" | "/metrics" | "(no route)")
    {
        "admin"
    } else {
        "xds"
    }
}

fn outcome_of(status: u16) -> &'static str {
    match status {
        500.. => "error",
        400..=499 => "client_error",
        _ => "ok",
    }
}

/// One HTTP request answered (from the operations log's line: route template, status,
/// body bytes, time to the end of the body; `complete` false when the body broke off).
pub fn http_request(route: &str, status: u16, bytes: u64, elapsed: Duration, complete: bool) {
    let m = &*METRICS;
    let front = front_of(route);
    let outcome = if complete {
        outcome_of(status)
    } else {
        "error"
    };
    m.requests
        .get_or_create(&labels(&[("front", front), ("outcome", outcome)]))
        .inc();
    m.duration
        .get_or_create(&labels(&[("front", front)]))
        .observe(elapsed.as_secs_f64());
    m.response_bytes
        .get_or_create(&labels(&[("front", front)]))
        .inc_by(bytes);
}

/// One DIMSE association ended (from the operations log's line): its operations and the
/// instances it stored and sent, by name (`echo`, `find`, ...; `stored`, `sent`).
pub fn dimse_association(
    outcome: &str,
    operations: &[(&str, u32)],
    instances: &[(&str, u32)],
    elapsed: Duration,
) {
    let m = &*METRICS;
    let result = match outcome {
        "released" => "ok",
        "rejected" => "client_error",
        _ => "error",
    };
    m.requests
        .get_or_create(&labels(&[("front", "dimse"), ("outcome", result)]))
        .inc();
    m.duration
        .get_or_create(&labels(&[("front", "dimse")]))
        .observe(elapsed.as_secs_f64());
    for &(operation, n) in operations {
        if n > 0 {
            m.dimse_operations
                .get_or_create(&labels(&[("operation", operation)]))
                .inc_by(u64::from(n));
        }
    }
    for &(direction, n) in instances {
        if n > 0 {
            m.dimse_instances
                .get_or_create(&labels(&[("direction", direction)]))
                .inc_by(u64::from(n));
        }
    }
}

/// An open DIMSE association, counted in `dimse_associations_open` while this lives.
#[derive(Debug)]
pub struct OpenAssociation(());

impl Drop for OpenAssociation {
    fn drop(&mut self) {
        METRICS.associations_open.dec();
    }
}

/// A DIMSE association was accepted: hold the guard until it ends.
pub fn association_opened() -> OpenAssociation {
    METRICS.associations_open.inc();
    OpenAssociation(())
}

/// A retrieve will be answered from `source` ("cache" is a hit).
pub fn retrieval(source: &str) {
    METRICS
        .retrievals
        .get_or_create(&labels(&[("source", source)]))
        .inc();
}

/// A credential (`bearer`, `saml`, ...) was verified, or refused.
pub fn token_verified(scheme: &str, valid: bool) {
    let scheme = scheme.to_ascii_lowercase();
    let scheme = match scheme.as_str() {
        "bearer" | "saml" => scheme,
        _ => "other".to_string(),
    };
    let outcome = if valid { "valid" } else { "invalid" };
    METRICS
        .tokens
        .get_or_create(&vec![("scheme", scheme), ("outcome", outcome.to_string())])
        .inc();
}

/// The consent service answered (the answer's name, e.g. `Permit`, `Deny`).
pub fn consent_answer(answer: &str) {
    METRICS
        .consent
        .get_or_create(&labels(&[("answer", answer)]))
        .inc();
}

/// Items waiting in `queue` now.
pub fn set_queue_depth(queue: &'static str, depth: u64) {
    METRICS
        .queue_depth
        .get_or_create(&labels(&[("queue", queue)]))
        .set(i64::try_from(depth).unwrap_or(i64::MAX));
}

/// A chain monitoring probe of `peer` (a participant's or the PACS's name, no patient data).
pub fn chain_probe(kind: &'static str, peer: &str, up: bool, took: Duration) {
    let l = labels(&[("kind", kind), ("peer", peer)]);
    METRICS.chain_up.get_or_create(&l).set(i64::from(up));
    METRICS
        .chain_latency
        .get_or_create(&l)
        .set(took.as_secs_f64());
}

/// Days until a certificate of the chain expires.
pub fn chain_certificate_days(kind: &'static str, peer: &str, days: i64) {
    METRICS
        .chain_certificate_days
        .get_or_create(&labels(&[("kind", kind), ("peer", peer)]))
        .set(days);
}

/// The cache's size now.
pub fn set_cache(studies: u64, bytes: u64) {
    let m = &*METRICS;
    m.cache_studies
        .set(i64::try_from(studies).unwrap_or(i64::MAX));
    m.cache_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
}

/// Orphaned blob files removed by recovery.
pub fn orphans_removed(n: usize) {
    METRICS.orphans_removed.inc_by(n as u64);
}

/// A group commit of `n` instances (`store::ingest::Committer`).
pub fn ingest_group(n: usize) {
    METRICS.ingest_groups.inc();
    METRICS.ingest_group_instances.inc_by(n as u64);
}

/// An indexed instance's file was found missing.
pub fn missing_blob() {
    METRICS.missing_blobs.inc();
}

/// Every metric in the OpenMetrics text format.
pub fn render() -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &METRICS.registry);
    out
}

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_appear_in_the_text() {
        http_request(
            "/dicomweb/studies",
            200,
            1234,
            Duration::from_millis(12),
            true,
        );
        http_request("/dicomweb/studies", 500, 0, Duration::from_millis(3), true);
        let guard = association_opened();
        retrieval("cache");
        token_verified("Bearer", false);
        set_queue_depth("forward", 3);
        let text = render();
        for expected in [
            "beeldbrug_requests_total{front=\"dicomweb\",outcome=\"ok\"}",
            "beeldbrug_requests_total{front=\"dicomweb\",outcome=\"error\"}",
            "beeldbrug_request_duration_seconds_bucket{",
            "beeldbrug_response_bytes_total{front=\"dicomweb\"}",
            "beeldbrug_dimse_associations_open",
            "beeldbrug_retrievals_total{source=\"cache\"}",
            "beeldbrug_token_verifications_total{scheme=\"bearer\",outcome=\"invalid\"}",
            "beeldbrug_queue_depth{queue=\"forward\"} 3",
            "# EOF",
        ] {
            assert!(text.contains(expected), "{expected} in\n{text}");
        }
        drop(guard);
        peer_call(
            "gateway",
            "unit-test-peer",
            "iti38",
            Ok(()),
            Duration::from_millis(10),
        );
        peer_call(
            "gateway",
            "unit-test-peer",
            "rad75",
            Err("timed out"),
            Duration::from_millis(30),
        );
        let t = peer_traffic()
            .into_iter()
            .find(|t| t.peer == "unit-test-peer")
            .unwrap();
        assert_eq!((t.calls, t.failures, t.error_rate), (2, 1, 0.5));
        assert_eq!((t.mean_latency_ms, t.max_latency_ms), (20, 30));
        assert_eq!(t.last_failure.unwrap().1, "rad75: timed out");
        let text = render();
        assert!(text.contains(
            "beeldbrug_peer_calls_total{kind=\"gateway\",peer=\"unit-test-peer\",call=\"rad75\",outcome=\"error\"} 1"
        ), "{text}");
        assert_eq!(front_of("/wado"), "wado_uri");
        assert_eq!(front_of("/metrics"), "admin");
        assert_eq!(front_of("/xds/iti18"), "xds");
    }
}
