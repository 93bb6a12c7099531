//! Gateway mode with Orthanc as the local PACS (C-GET and C-MOVE): QIDO-RS and WADO-RS
//! through beeldbrug, with the data only in Orthanc, give what the same requests give
//! against a beeldbrug whose cache was filled by STOW-RS; `transfer-syntax=*` byte-exact.
//! The second retrieve is answered from the cache.

mod common;

use common::gateway_mode::{audit_details, becomes_complete, datasets, pacs_toml, wado, AS_STORED};
use common::http::{request, stow_files};
use common::orthanc::{store, Orthanc};
use common::{free_port, generate, Gateway};
use serde_json::Value as Json;
use std::collections::{BTreeMap, BTreeSet};

/// QIDO results keyed by a UID attribute, without RetrieveURL (each gateway names itself).
async fn qido(port: u16, path: &str, key: &str) -> BTreeMap<String, Json> {
    let r = request(port, "GET", path, &[], b"").await;
    assert!(
        r.status == 200 || r.status == 204,
        "GET {path}: {}",
        r.text()
    );
    if r.status == 204 {
        return BTreeMap::new();
    }
    let Json::Array(items) = r.json() else {
        panic!("not an array")
    };
    items
        .into_iter()
        .map(|mut item| {
            item.as_object_mut().unwrap().remove("00081190");
            let uid = item[key]["Value"][0].as_str().unwrap().to_string();
            (uid, item)
        })
        .collect()
}

/// Attributes both answers carry must agree; the gateway's answer must carry every
/// attribute the cache's does.
fn same_answers(
    via_pacs: &BTreeMap<String, Json>,
    from_cache: &BTreeMap<String, Json>,
    what: &str,
) {
    assert_eq!(
        via_pacs.keys().collect::<Vec<_>>(),
        from_cache.keys().collect::<Vec<_>>(),
        "{what}: the same results"
    );
    for (uid, cached) in from_cache {
        let got = via_pacs[uid].as_object().unwrap();
        for (tag, value) in cached.as_object().unwrap() {
            assert_eq!(got.get(tag), Some(value), "{what} {uid}: attribute {tag}");
        }
    }
}

async fn gateway_matches_cache(retrieve: &str) {
    let dir = tempfile::tempdir().unwrap();
    let files = generate(&dir.path().join("src"), true);
    let studies: BTreeSet<String> = files.iter().map(|f| f.study_uid.clone()).collect();

    let reference = Gateway::start("").await;
    let r = stow_files(reference.http_port, &files).await;
    assert_eq!(r.status, 200, "{}", r.text());

    let our_port = free_port();
    let orthanc = Orthanc::start_with(dir.path(), &[("BEELDBRUG", our_port)]).await;
    store(orthanc.dicom_port, "ORTHANC", &files);
    let gateway = Gateway::start_dimse_on(
        our_port,
        &pacs_toml("ORTHANC", orthanc.dicom_port, retrieve, ""),
    )
    .await;
    let (g, c) = (gateway.http_port, reference.http_port);

    // QIDO-RS from Orthanc's C-FIND answers as from the cache.
    let path = "/dicomweb/studies";
    same_answers(
        &qido(g, path, "0020000D").await,
        &qido(c, path, "0020000D").await,
        path,
    );
    for study in &studies {
        let path = format!("/dicomweb/studies/{study}/series");
        same_answers(
            &qido(g, &path, "0020000E").await,
            &qido(c, &path, "0020000E").await,
            &path,
        );
        let path = format!("/dicomweb/studies/{study}/instances");
        same_answers(
            &qido(g, &path, "00080018").await,
            &qido(c, &path, "00080018").await,
            &path,
        );
    }
    let path = "/dicomweb/studies?PatientName=muller&fuzzymatching=true";
    let fuzzy = qido(g, path, "0020000D").await;
    assert!(!fuzzy.is_empty(), "fuzzy matching done by beeldbrug");
    same_answers(&fuzzy, &qido(c, path, "0020000D").await, path);

    // WADO-RS: the first retrieve streams from the PACS, byte-exact as stored.
    for study in &studies {
        let path = format!("/dicomweb/studies/{study}");
        let (_, via_pacs) = wado(g, &path, AS_STORED).await;
        let (_, cached) = wado(c, &path, AS_STORED).await;
        let (via_pacs, cached) = (datasets(&via_pacs), datasets(&cached));
        assert_eq!(via_pacs.len(), cached.len(), "{study}: every instance");
        assert!(
            via_pacs == cached,
            "{study}: the same data sets, byte for byte"
        );
        assert!(
            becomes_complete(gateway.context(), study).await,
            "{study} is complete in the cache"
        );
    }
    let audits = audit_details(gateway.context(), "WADO-RS").await;
    let from_pacs = audits
        .iter()
        .filter(|(_, d)| d.contains("from the local PACS"))
        .count();
    assert_eq!(from_pacs, studies.len(), "{audits:?}");
    assert!(audits.iter().all(|(o, _)| o == "success"), "{audits:?}");

    // Again: from the cache now, in the default syntax (decoded where compressed).
    let accept = "multipart/related; type=\"application/dicom\"";
    for study in &studies {
        let path = format!("/dicomweb/studies/{study}");
        let (_, again) = wado(g, &path, accept).await;
        let (_, cached) = wado(c, &path, accept).await;
        assert!(
            datasets(&again) == datasets(&cached),
            "{study}: default syntax"
        );
    }
    let audits = audit_details(gateway.context(), "WADO-RS").await;
    let from_pacs_after = audits
        .iter()
        .filter(|(_, d)| d.contains("from the local PACS"))
        .count();
    assert_eq!(
        from_pacs_after, from_pacs,
        "second retrieves came from the cache"
    );

    // A series of a study not yet fetched, in a fresh gateway: metadata fetches it first.
    gateway.stop().await;
    let gateway = Gateway::start_dimse_on(
        our_port,
        &pacs_toml("ORTHANC", orthanc.dicom_port, retrieve, ""),
    )
    .await;
    let f = &files[0];
    let path = format!(
        "/dicomweb/studies/{}/series/{}/metadata",
        f.study_uid, f.series_uid
    );
    let via = request(gateway.http_port, "GET", &path, &[], b"").await;
    let cached = request(c, "GET", &path, &[], b"").await;
    assert_eq!(via.status, 200, "{}", via.text());
    let count = |r: &common::http::HttpResponse| r.json().as_array().unwrap().len();
    assert_eq!(count(&via), count(&cached));
    gateway.stop().await;
    reference.stop().await;
    drop(orthanc);
}

#[tokio::test(flavor = "multi_thread")]
async fn orthanc_by_c_get_answers_like_the_cache() {
    gateway_matches_cache("c-get").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn orthanc_by_c_move_answers_like_the_cache() {
    gateway_matches_cache("c-move").await;
}
