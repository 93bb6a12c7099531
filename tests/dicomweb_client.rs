//! DICOMweb against the real client viewers and scripts use: `dicomweb-client` (PyPI) stores,
//! searches and retrieves every generated study through beeldbrug (see
//! `tests/dicomweb/client_roundtrip.py` for the checks), and every request leaves its audit event.

mod common;

use common::Gateway;
use std::path::Path;
use std::process::Command;

/// Run a Python script; fail (never skip) when python3 or dicomweb-client is missing.
pub fn python(script: &Path, args: &[&str]) -> std::process::Output {
    let probe = Command::new("python3")
        .args(["-c", "import dicomweb_client, pydicom, numpy, PIL"])
        .output()
        .expect("python3 must be installed");
    assert!(
        probe.status.success(),
        "dicomweb-client is not installed: run `pip install dicomweb-client pydicom numpy pillow` \
         (or `bash .ci/run`): {}",
        String::from_utf8_lossy(&probe.stderr)
    );
    Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .expect("run python3")
}

#[tokio::test(flavor = "multi_thread")]
async fn dicomweb_client_round_trips_every_generated_study() {
    let gateway = Gateway::start_public("").await;
    let data = tempfile::tempdir().unwrap();
    let args = beeldbrug::testdata::GenerateArgs {
        out: data.path().to_path_buf(),
        seed: 11,
        patients: 2,
        ct_slices: 3,
        mr_slices: 2,
        dx: false,
        multiframe_frames: 5,
        frame_size: 64,
        encapsulated: true,
        implicit: true,
    };
    let files = beeldbrug::testdata::generate(&args).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dicomweb/client_roundtrip.py");
    let url = gateway.dicomweb_url();
    let dir = data.path().display().to_string();
    let out = tokio::task::spawn_blocking(move || python(&script, &[&url, &dir]))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "dicomweb-client round trip failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("ok: {} instances", files.len())),
        "{stdout}"
    );

    // One audit event per request, each naming what it touched.
    let events = gateway.context().index.audit_events(10_000).await.unwrap();
    for op in ["STOW-RS", "QIDO-RS", "WADO-RS"] {
        assert!(
            events
                .iter()
                .any(|e| e.operation == op && e.outcome == "success"),
            "no successful {op} audit event"
        );
    }
    let study = &files[0].study_uid;
    assert!(events
        .iter()
        .any(|e| e.operation == "WADO-RS" && e.study_uids.contains(study.as_str())));
    assert!(events
        .iter()
        .filter(|e| e.operation == "STOW-RS")
        .all(|e| e.outcome == "success" && !e.patient_ids.is_empty()));
    gateway.stop().await;
}
