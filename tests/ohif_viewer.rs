//! The OHIF viewer against the gateway, in headless Chromium: the prebuilt OHIF dist (npm
//! `@ohif/app`, fetched by `npm ci` in `tests/ohif`) is served by `tests/ohif/run.mjs` with a
//! DICOMweb data source on our `/dicomweb`, and driven by playwright-core. It must list the
//! studies that QIDO-RS returns, open a CT series and render a non-blank image.
//!
//! Needs Node.js 20+, `npm ci` in `tests/ohif` and Debian's `chromium` (`bash .ci/run`
//! installs them); a missing piece fails with a message that says how to install it. The
//! browser flow and its checks are in `tests/common/ohif.rs`.

mod common;

use common::ohif::{require_ohif_setup, run_viewer};
use common::Gateway;

#[tokio::test(flavor = "multi_thread")]
async fn ohif_lists_opens_and_renders_a_ct_study() {
    let dir = require_ohif_setup();
    let gw = Gateway::start("[dicomweb]\ncors_origins = [\"*\"]").await;

    // 2 patients (both Müller^Zoë), each a CT study (20 slices) and an MR study (5 slices)
    let data = tempfile::tempdir().unwrap();
    let mut args = beeldbrug::testdata::GenerateArgs::with_defaults(data.path());
    args.ct_slices = 20;
    args.mr_slices = 5;
    let files = beeldbrug::testdata::generate(&args).expect("generate test data");
    let studies: std::collections::BTreeSet<_> =
        files.iter().map(|f| f.study_uid.clone()).collect();
    let port = gw.port.to_string();
    let data_arg = data.path().to_str().unwrap().to_string();
    let stored = tokio::task::spawn_blocking(move || {
        common::dcmtk(
            "storescu",
            &[
                "-aec",
                "BEELDBRUG",
                "+sd",
                "+r",
                "127.0.0.1",
                &port,
                &data_arg,
            ],
        )
    })
    .await
    .unwrap();
    assert!(
        stored.status.success(),
        "storescu: {}",
        String::from_utf8_lossy(&stored.stderr)
    );

    let run = run_viewer(dir, gw.dicomweb_url(), 45000).await;
    gw.stop().await;
    run.assert_ok(studies.len());
}
