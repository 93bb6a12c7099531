//! Gateway mode with the OHIF viewer: with only Orthanc holding the data, OHIF opens a study
//! through beeldbrug. The study list comes from Orthanc's C-FIND, the CT study opens from
//! what beeldbrug retrieves by C-GET (metadata, frames and thumbnails all answered through
//! the PACS path), its viewport is not blank, no request to the gateway fails, and the study
//! ends complete in beeldbrug's cache.
//!
//! Needs Orthanc (with its DICOMweb plugin), DCMTK, Node.js 20+, `npm ci` in `tests/ohif`
//! and Debian's `chromium` (`bash .ci/run` installs them).

mod common;

use beeldbrug::core::Selection;
use common::gateway_mode::{audit_details, pacs_toml};
use common::ohif::{require_ohif_setup, run_viewer};
use common::orthanc::{store, Orthanc};
use common::{free_port, Gateway};
use std::collections::BTreeMap;

#[tokio::test(flavor = "multi_thread")]
async fn ohif_opens_a_study_held_only_by_orthanc() {
    let ohif = require_ohif_setup();

    // 2 patients (both Müller^Zoë), each a CT study (20 slices) and an MR study (5 slices),
    // in Orthanc only.
    let dir = tempfile::tempdir().unwrap();
    let mut args = beeldbrug::testdata::GenerateArgs::with_defaults(dir.path().join("src"));
    args.ct_slices = 20;
    args.mr_slices = 5;
    let files = beeldbrug::testdata::generate(&args).expect("generate test data");
    let mut per_study: BTreeMap<String, u64> = BTreeMap::new();
    for f in &files {
        *per_study.entry(f.study_uid.clone()).or_default() += 1;
    }
    let our_port = free_port();
    let orthanc = Orthanc::start_with(dir.path(), &[("BEELDBRUG", our_port)]).await;
    let stored = files.clone();
    let orthanc_port = orthanc.dicom_port;
    tokio::task::spawn_blocking(move || store(orthanc_port, "ORTHANC", &stored))
        .await
        .unwrap();

    let gateway = Gateway::start_dimse_on(
        our_port,
        &format!(
            "{}[dicomweb]\ncors_origins = [\"*\"]\n",
            pacs_toml("ORTHANC", orthanc.dicom_port, "c-get", "")
        ),
    )
    .await;
    let ctx = gateway.context();
    for study in per_study.keys() {
        let selection = Selection {
            study_uids: vec![study.clone()],
            ..Default::default()
        };
        assert_eq!(
            ctx.index.count_instances(&selection).await.unwrap(),
            0,
            "{study}: nothing in beeldbrug's cache before the viewer runs"
        );
    }

    let run = run_viewer(ohif, gateway.dicomweb_url(), 60000).await;
    let result = run.assert_ok(per_study.len());

    // The CT study the viewer opened came through the PACS path and is whole in the cache.
    let ct = result["ct_study"].as_str().expect("ct_study").to_string();
    let expected = per_study[&ct];
    let selection = Selection {
        study_uids: vec![ct.clone()],
        ..Default::default()
    };
    let cached = ctx.index.count_instances(&selection).await.unwrap();
    // The state is written after the last retrieve's sync pass: give it a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let state = loop {
        let state = ctx.index.cached_study(&ct).await.unwrap();
        if state.as_ref().is_some_and(|s| s.complete) || std::time::Instant::now() > deadline {
            break state;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let audits = audit_details(ctx, "WADO-RS").await;
    assert_eq!(
        cached,
        expected,
        "{ct}: every instance of the opened CT study is cached ({state:?})\n{}",
        orthanc.log_tail()
    );
    let state =
        state.unwrap_or_else(|| panic!("{ct}: no cache state, so not fetched from the PACS"));
    assert!(
        state.complete && state.pacs_instances == expected,
        "{ct}: complete in the cache with Orthanc's {expected} instances: {state:?}\nWADO-RS audits: {audits:?}"
    );
    // Every WADO-RS answered, except requests the browser itself abandoned (a prefetch still
    // running when the test closes the viewer: its handler is dropped, and its one audit
    // record says so). A failed answer is never one of those.
    let (answered, rest): (Vec<_>, Vec<_>) =
        audits.iter().partition(|(outcome, _)| outcome == "success");
    assert!(
        !answered.is_empty()
            && rest
                .iter()
                .all(|(_, detail)| detail.starts_with("ended without outcome")),
        "every WADO-RS answered or was abandoned by the browser: {audits:?}"
    );
    gateway.stop().await;
    drop(orthanc);
}
