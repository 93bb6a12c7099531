//! `/metrics` and `/health` (issue 16, item 3), and what the fronts answer for an indexed
//! instance whose file is gone (item 4), against a running gateway with real peers (DCMTK
//! storescu and echoscu, HTTP on the wire):
//!
//! - after STOW-RS, QIDO-RS, WADO-RS, C-ECHO and C-STORE traffic the scraped counters have
//!   moved (requests per front, bytes, latency histogram, DIMSE operations and instances,
//!   retrieves from the cache, queue depths);
//! - `/metrics` is behind the same trust decision as `/admin`: without credentials where
//!   anonymous DICOMweb is off, 401;
//! - an instance whose file went missing: WADO-RS answers 404 (not 500) and the log says how
//!   to repair it; the `missing_blobs` counter moves.

mod common;

use common::http::{get, multipart, request};
use common::{dcmtk, Gateway};
use std::collections::BTreeMap;

/// Sample lines of an OpenMetrics text: `name{labels}` to value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

async fn scrape(port: u16) -> BTreeMap<String, f64> {
    let got = get(port, "/metrics", "*/*").await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert!(
        got.header("content-type")
            .is_some_and(|ct| ct.starts_with("application/openmetrics-text")),
        "{:?}",
        got.header("content-type")
    );
    assert!(
        got.text().ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF"
    );
    samples(&got.text())
}

fn value(s: &BTreeMap<String, f64>, name: &str) -> f64 {
    s.get(name).copied().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_move_with_traffic_and_health_answers() {
    let gw = Gateway::start("").await;
    let src = tempfile::tempdir().unwrap();
    let files = common::generate(src.path(), false);
    let health = get(gw.http_port, "/health", "application/json").await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");

    let before = scrape(gw.http_port).await;

    // STOW-RS of one study, then QIDO-RS and WADO-RS of it.
    let study = files[0].study_uid.clone();
    let parts: Vec<Vec<u8>> = files
        .iter()
        .filter(|f| f.study_uid == study)
        .map(|f| std::fs::read(&f.path).unwrap())
        .collect();
    let refs: Vec<(&str, &[u8])> = parts
        .iter()
        .map(|p| ("application/dicom", p.as_slice()))
        .collect();
    let body = multipart("m-boundary", &refs);
    let stow = request(
        gw.http_port,
        "POST",
        &format!("/dicomweb/studies/{study}"),
        &[
            (
                "Content-Type",
                "multipart/related; type=\"application/dicom\"; boundary=m-boundary",
            ),
            ("Accept", "application/dicom+json"),
        ],
        &body,
    )
    .await;
    assert_eq!(stow.status, 200, "{}", stow.text());
    let qido = get(gw.http_port, "/dicomweb/studies", "application/dicom+json").await;
    assert_eq!(qido.status, 200);
    let wado = get(
        gw.http_port,
        &format!("/dicomweb/studies/{study}"),
        "multipart/related; type=\"application/dicom\"",
    )
    .await;
    assert_eq!(wado.status, 200);
    assert!(wado.body.len() > 10_000);

    // C-ECHO and C-STORE of another study.
    let port = gw.port.to_string();
    let echo = dcmtk("echoscu", &["-aec", "BEELDBRUG", "127.0.0.1", &port]);
    assert!(echo.status.success());
    let other = files.iter().find(|f| f.study_uid != study).unwrap();
    let store = dcmtk(
        "storescu",
        &[
            "-aec",
            "BEELDBRUG",
            "127.0.0.1",
            &port,
            other.path.to_str().unwrap(),
        ],
    );
    assert!(store.status.success(), "{store:?}");

    // The association lines are written when they end: give the last one a moment.
    let mut after = scrape(gw.http_port).await;
    for _ in 0..20 {
        if value(
            &after,
            "beeldbrug_dimse_instances_total{direction=\"stored\"}",
        ) > value(
            &before,
            "beeldbrug_dimse_instances_total{direction=\"stored\"}",
        ) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        after = scrape(gw.http_port).await;
    }
    let moved = |name: &str, by: f64| {
        let (b, a) = (value(&before, name), value(&after, name));
        assert!(a - b >= by, "{name}: {b} -> {a}, expected +{by}");
    };
    moved(
        "beeldbrug_requests_total{front=\"dicomweb\",outcome=\"ok\"}",
        3.0,
    );
    moved(
        "beeldbrug_response_bytes_total{front=\"dicomweb\"}",
        10_000.0,
    );
    moved(
        "beeldbrug_request_duration_seconds_count{front=\"dicomweb\"}",
        3.0,
    );
    moved(
        "beeldbrug_requests_total{front=\"dimse\",outcome=\"ok\"}",
        2.0,
    );
    moved("beeldbrug_dimse_operations_total{operation=\"echo\"}", 1.0);
    moved("beeldbrug_dimse_operations_total{operation=\"store\"}", 1.0);
    moved("beeldbrug_dimse_instances_total{direction=\"stored\"}", 1.0);
    moved("beeldbrug_retrievals_total{source=\"cache\"}", 1.0);
    assert!(after.contains_key("beeldbrug_queue_depth{queue=\"forward\"}"));
    assert!(after.contains_key("beeldbrug_queue_depth{queue=\"syslog_outbox\"}"));
    assert!(after.contains_key("beeldbrug_dimse_associations_open"));
    assert!(after.contains_key("beeldbrug_cache_bytes"));

    // An instance whose file is gone: 404 with a clear reason, counted; never a 500.
    let lost = files.iter().find(|f| f.study_uid == study).unwrap();
    let located = gw
        .context()
        .index
        .locate(&beeldbrug::core::Selection {
            sop_instance_uids: vec![lost.sop_uid.clone()],
            ..Default::default()
        })
        .await
        .unwrap();
    std::fs::remove_file(gw.data_dir().join("blobs").join(&located[0].blob_key)).unwrap();
    let path = format!(
        "/dicomweb/studies/{study}/series/{}/instances/{}",
        lost.series_uid, lost.sop_uid
    );
    let single = get(gw.http_port, &path, "application/dicom").await;
    assert_eq!(single.status, 404, "{}", single.text());
    assert!(single.text().contains("missing"), "{}", single.text());
    let frames = get(
        gw.http_port,
        &format!("{path}/frames/1"),
        "multipart/related; type=\"application/octet-stream\"",
    )
    .await;
    assert_eq!(frames.status, 404, "{}", frames.text());
    let metadata = get(
        gw.http_port,
        &format!("{path}/metadata"),
        "application/dicom+json",
    )
    .await;
    assert_ne!(metadata.status, 500, "{}", metadata.text());
    // The study from the cache: the body breaks off at the lost instance, never a whole
    // answer without it (PS3.18 8.7.1.2: no closing delimiter).
    let whole = get(
        gw.http_port,
        &format!("/dicomweb/studies/{study}"),
        "multipart/related; type=\"application/dicom\"",
    )
    .await;
    assert_eq!(whole.status, 200, "{}", whole.text());
    assert!(
        !whole.body.ends_with(b"--\r\n"),
        "a whole study answer without its lost instance"
    );
    let counted = scrape(gw.http_port).await;
    assert!(value(&counted, "beeldbrug_missing_blobs_total") >= 2.0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_need_credentials_where_anonymous_is_off() {
    let gw = Gateway::start("[dicomweb]\nallow_anonymous = false\n").await;
    let got = get(gw.http_port, "/metrics", "*/*").await;
    assert_eq!(got.status, 401, "{}", got.text());
    // Liveness stays open (orchestrators probe it without credentials).
    assert_eq!(
        get(gw.http_port, "/health", "application/json")
            .await
            .status,
        200
    );
    gw.stop().await;
}
