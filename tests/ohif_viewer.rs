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

/// Send every file under `dir` to the gateway with DCMTK `tool` (`storescu` or `dcmsend`).
async fn send_tree(gw: &Gateway, tool: &'static str, dir: &std::path::Path) {
    let port = gw.port.to_string();
    let dir = dir.to_str().unwrap().to_string();
    let sent = tokio::task::spawn_blocking(move || {
        common::dcmtk(
            tool,
            &["-aec", "BEELDBRUG", "+sd", "+r", "127.0.0.1", &port, &dir],
        )
    })
    .await
    .unwrap();
    assert!(
        sent.status.success(),
        "{tool}: {}",
        String::from_utf8_lossy(&sent.stderr)
    );
}

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
    send_tree(&gw, "storescu", data.path()).await;

    let run = run_viewer(dir, gw.dicomweb_url(), 45000).await;
    gw.stop().await;
    run.assert_ok(studies.len());
}

/// OHIF opens a study stored as JPEG 2000 lossless (issue 13): the generated studies are
/// encoded by an independent encoder (pydicom with pylibjpeg-openjpeg, `codecs.py j2k`),
/// sent by DCMTK `dcmsend` in their own syntax, kept as stored, and the viewer renders a
/// non-blank CT image from them.
#[tokio::test(flavor = "multi_thread")]
async fn ohif_opens_a_jpeg2000_study() {
    let dir = require_ohif_setup();
    let gw = Gateway::start("[dicomweb]\ncors_origins = [\"*\"]").await;

    let data = tempfile::tempdir().unwrap();
    let mut args = beeldbrug::testdata::GenerateArgs::with_defaults(data.path().join("native"));
    args.ct_slices = 10;
    args.mr_slices = 3;
    let files = beeldbrug::testdata::generate(&args).expect("generate test data");
    let studies: std::collections::BTreeSet<_> =
        files.iter().map(|f| f.study_uid.clone()).collect();
    let j2k = data.path().join("j2k");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/codecs/codecs.py");
    let encoded = std::process::Command::new("python3")
        .args([script, "j2k"])
        .arg(data.path().join("native"))
        .arg(&j2k)
        .output()
        .expect("python3 tests/codecs/codecs.py j2k");
    assert!(
        encoded.status.success(),
        "codecs.py j2k: {}",
        String::from_utf8_lossy(&encoded.stderr)
    );
    let count: usize = String::from_utf8_lossy(&encoded.stdout)
        .trim()
        .parse()
        .unwrap();
    assert_eq!(count, files.len(), "every generated instance encoded");

    send_tree(&gw, "dcmsend", &j2k).await;

    // Kept as stored: every instance's syntax in the index is JPEG 2000 lossless.
    let ctx = gw.context();
    for study in &studies {
        let selection = beeldbrug::core::Selection {
            study_uids: vec![study.clone()],
            ..Default::default()
        };
        let syntaxes = ctx.index.transfer_syntaxes(&selection).await.unwrap();
        assert_eq!(
            syntaxes,
            ["1.2.840.10008.1.2.4.90"],
            "{study}: every instance kept as stored"
        );
    }

    let run = run_viewer(dir, gw.dicomweb_url(), 60000).await;
    gw.stop().await;
    run.assert_ok(studies.len());
}
