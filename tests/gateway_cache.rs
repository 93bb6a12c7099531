//! The cache rules of gateway mode against Orthanc as the PACS: least-recently-used eviction
//! above `cache.max_bytes` (a study being streamed is pinned), and a study that changed in
//! the PACS is fetched again once `cache.refresh_secs` has passed.

mod common;

use common::gateway_mode::{becomes_complete, pacs_toml, wado, AS_STORED};
use common::http::send;
use common::orthanc::{store, Orthanc};
use common::{free_port, Gateway};
use std::collections::BTreeMap;
use std::time::Duration;

fn studies(
    files: &[beeldbrug::testdata::GeneratedFile],
) -> BTreeMap<String, Vec<&beeldbrug::testdata::GeneratedFile>> {
    let mut out: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for f in files {
        out.entry(f.study_uid.clone()).or_default().push(f);
    }
    out
}

fn generate(dir: &std::path::Path, ct_slices: u32) -> Vec<beeldbrug::testdata::GeneratedFile> {
    let args = beeldbrug::testdata::GenerateArgs {
        out: dir.to_path_buf(),
        seed: 11,
        patients: 2,
        ct_slices,
        mr_slices: 2,
        dx: false,
        multiframe_frames: 0,
        frame_size: 64,
        encapsulated: false,
        implicit: false,
    };
    beeldbrug::testdata::generate(&args).expect("generate")
}

async fn cached_instances(gateway: &Gateway, study: &str) -> u64 {
    let selection = beeldbrug::core::Selection {
        study_uids: vec![study.into()],
        ..Default::default()
    };
    gateway
        .context()
        .index
        .count_instances(&selection)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn least_recently_used_studies_are_evicted_and_streamed_ones_pinned() {
    let dir = tempfile::tempdir().unwrap();
    // Two CT studies of 48 slices (about 25 MB each: more than socket buffers hold) and two
    // small MR studies.
    let files = generate(&dir.path().join("src"), 48);
    let by_study = studies(&files);
    let mut cts: Vec<&String> = by_study
        .iter()
        .filter(|(_, f)| f.len() >= 48)
        .map(|(uid, _)| uid)
        .collect();
    cts.sort();
    let (a, b) = (cts[0].clone(), cts[1].clone());
    // Orthanc answers C-GET to known modalities only.
    let our_port = free_port();
    let orthanc = Orthanc::start_with(dir.path(), &[("BEELDBRUG", our_port)]).await;
    store(orthanc.dicom_port, "ORTHANC", &files);
    // Room for one CT study, not two.
    let gateway = Gateway::start_dimse_on(
        our_port,
        &format!(
            "{}[cache]\nmax_bytes = 36000000\n",
            pacs_toml("ORTHANC", orthanc.dicom_port, "c-get", "")
        ),
    )
    .await;
    let port = gateway.http_port;
    wado(port, &format!("/dicomweb/studies/{a}"), AS_STORED).await;
    assert!(becomes_complete(gateway.context(), &a).await);

    // A slow client holds a stream of A open (it reads nothing): A is pinned.
    let held = send(
        port,
        "GET",
        &format!("/dicomweb/studies/{a}"),
        &[("Accept", AS_STORED)],
        b"",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    wado(port, &format!("/dicomweb/studies/{b}"), AS_STORED).await;
    assert!(becomes_complete(gateway.context(), &b).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        cached_instances(&gateway, &a).await,
        48,
        "a streamed study is not evicted"
    );

    // Released: the next fetch evicts the least recently used study to fit.
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let small = by_study
        .keys()
        .find(|k| **k != a && **k != b)
        .unwrap()
        .clone();
    wado(port, &format!("/dicomweb/studies/{small}"), AS_STORED).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while cached_instances(&gateway, &a).await != 0 {
        assert!(std::time::Instant::now() < deadline, "A was not evicted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gateway
        .context()
        .index
        .cached_study(&a)
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        cached_instances(&gateway, &b).await,
        48,
        "the more recent study stays"
    );
    // Its blobs are gone from disk too (just after its index rows: store::delete).
    let left = || {
        walk(&gateway.data_dir())
            .iter()
            .filter(|p| p.to_string_lossy().contains(&a))
            .count()
    };
    while left() != 0 {
        assert!(std::time::Instant::now() < deadline, "A's files stay");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Evicted is not lost: the PACS still has it.
    let (_, parts) = wado(port, &format!("/dicomweb/studies/{a}"), AS_STORED).await;
    assert_eq!(parts.len(), 48);
    gateway.stop().await;
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

async fn changed_study_after(refresh_secs: u64) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let files = generate(&dir.path().join("src"), 4);
    let by_study = studies(&files);
    let (study, members) = by_study.iter().find(|(_, f)| f.len() == 4).unwrap();
    let (late, early): (Vec<_>, Vec<_>) = files
        .iter()
        .cloned()
        .partition(|f| f.sop_uid == members[3].sop_uid);
    let our_port = free_port();
    let orthanc = Orthanc::start_with(dir.path(), &[("BEELDBRUG", our_port)]).await;
    store(orthanc.dicom_port, "ORTHANC", &early);
    let gateway = Gateway::start_dimse_on(
        our_port,
        &format!(
            "{}[cache]\nrefresh_secs = {refresh_secs}\n",
            pacs_toml("ORTHANC", orthanc.dicom_port, "c-get", "")
        ),
    )
    .await;
    let path = format!("/dicomweb/studies/{study}");
    let (_, parts) = wado(gateway.http_port, &path, AS_STORED).await;
    assert_eq!(parts.len(), 3);
    assert!(becomes_complete(gateway.context(), study).await);
    // The PACS receives one more instance of the study.
    store(orthanc.dicom_port, "ORTHANC", &late);
    let (_, parts) = wado(gateway.http_port, &path, AS_STORED).await;
    gateway.stop().await;
    parts.len()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_study_that_changed_in_the_pacs_is_fetched_again_after_the_refresh_time() {
    assert_eq!(
        changed_study_after(0).await,
        4,
        "re-checked and fetched again"
    );
    assert_eq!(
        changed_study_after(3600).await,
        3,
        "still fresh: the cache answers"
    );
}
