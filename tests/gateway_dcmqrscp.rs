//! Gateway mode with DCMTK dcmqrscp as the local PACS, a second real PACS after Orthanc:
//! C-MOVE only (`--disable-get`), hierarchical C-FIND only, no Number of ... Related
//! Instances in its answers, and Implicit VR files sent converted to Explicit VR.
//!
//! - QIDO-RS (studies, series, instances) through beeldbrug lists what was loaded.
//! - WADO-RS `transfer-syntax=*` of each study, by `c-move` and by `auto` (the C-GET
//!   attempt finds no C-GET and beeldbrug falls back to C-MOVE): every instance, byte-exact
//!   where dcmqrscp sent the stored syntax and as DCMTK converts it where it did not; the
//!   study complete in the cache (counted by IMAGE-level matches), the second retrieve from
//!   the cache.
//! - A study fetched series by series, as a viewer does, is complete in the cache.

mod common;

use beeldbrug::pacs::config::RetrieveMode;
use common::dcmqrscp::{dcmconv, Dcmqrscp};
use common::gateway_mode::{
    audit_details, dataset_of, datasets, pacs_toml, syntax_of, wado, AS_STORED,
};
use common::http::request;
use common::{free_port, generate, Gateway};
use serde_json::Value as Json;
use std::collections::{BTreeMap, BTreeSet};

const AE: &str = "DCMQRSCP";

struct Setup {
    _dir: tempfile::TempDir,
    files: Vec<beeldbrug::testdata::GeneratedFile>,
    pacs: Dcmqrscp,
    gateway: Gateway,
}

/// Generated studies (uncompressed: Explicit and Implicit VR) in dcmqrscp, which knows
/// beeldbrug as C-MOVE destination, and beeldbrug in front of it retrieving by `retrieve`.
async fn setup(retrieve: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let files = generate(&dir.path().join("src"), false);
    let our_port = free_port();
    let pacs = Dcmqrscp::start(
        dir.path(),
        AE,
        &[("BEELDBRUG", our_port)],
        &["--disable-get"],
    )
    .await;
    let loaded = files.clone();
    let pacs = tokio::task::spawn_blocking(move || {
        pacs.load(&loaded);
        pacs
    })
    .await
    .unwrap();
    let gateway = Gateway::start_dimse_on(our_port, &pacs_toml(AE, pacs.port, retrieve, "")).await;
    Setup {
        _dir: dir,
        files,
        pacs,
        gateway,
    }
}

impl Setup {
    /// QIDO-RS `path` through beeldbrug: the values of `key` (a UID attribute), with the
    /// whole answer for failure messages.
    async fn qido(&self, path: &str, key: &str) -> (BTreeSet<String>, Vec<Json>) {
        let r = request(self.gateway.http_port, "GET", path, &[], b"").await;
        assert!(
            r.status == 200 || r.status == 204,
            "GET {path}: {} {}\n{}",
            r.status,
            r.text(),
            self.pacs.log_tail()
        );
        if r.status == 204 {
            return (BTreeSet::new(), Vec::new());
        }
        let Json::Array(items) = r.json() else {
            panic!("GET {path}: not an array")
        };
        let uids = items
            .iter()
            .map(|item| {
                item[key]["Value"][0]
                    .as_str()
                    .unwrap_or_else(|| panic!("GET {path}: no {key} in {item}"))
                    .to_string()
            })
            .collect();
        (uids, items)
    }

    fn studies(&self) -> BTreeMap<String, Vec<&beeldbrug::testdata::GeneratedFile>> {
        let mut out: BTreeMap<String, Vec<_>> = BTreeMap::new();
        for f in &self.files {
            out.entry(f.study_uid.clone()).or_default().push(f);
        }
        out
    }

    /// WADO-RS each study as stored, through beeldbrug: every instance, byte-exact where
    /// the syntax is the one stored, and the study complete in the cache afterwards.
    async fn retrieve_every_study(&self) {
        let ctx = self.gateway.context();
        for (study, files) in self.studies() {
            let path = format!("/dicomweb/studies/{study}");
            let r = request(
                self.gateway.http_port,
                "GET",
                &path,
                &[("Accept", AS_STORED)],
                b"",
            )
            .await;
            assert_eq!(
                r.status,
                200,
                "GET {path}: {}\nWADO-RS audits: {:?}\n{}",
                r.text(),
                audit_details(ctx, "WADO-RS").await,
                self.pacs.log_tail()
            );
            let parts = common::http::multipart_parts(&r);
            let syntaxes: BTreeMap<String, String> = parts
                .iter()
                .map(|p| (dataset_of(p).0, syntax_of(p)))
                .collect();
            let got = datasets(&parts);
            let expected: BTreeSet<&str> = files.iter().map(|f| f.sop_uid.as_str()).collect();
            assert_eq!(
                got.keys().map(String::as_str).collect::<BTreeSet<_>>(),
                expected,
                "{study}: every instance\n{}",
                self.pacs.log_tail()
            );
            let mut exact = 0;
            for f in &files {
                if syntaxes[&f.sop_uid] != f.transfer_syntax {
                    // dcmqrscp converted it on the way out (PS3.5 A.1/A.2); what it sent
                    // is what DCMTK writes for the source in that syntax.
                    let (_, converted) = dataset_of(&dcmconv(&f.path, &syntaxes[&f.sop_uid]));
                    assert!(
                        got[&f.sop_uid] == converted,
                        "{}: as dcmqrscp converted it to {}",
                        f.sop_uid,
                        syntaxes[&f.sop_uid]
                    );
                    continue;
                }
                let (_, source) = dataset_of(&std::fs::read(&f.path).unwrap());
                assert!(
                    got[&f.sop_uid] == source,
                    "{}: byte-exact as stored ({})",
                    f.sop_uid,
                    f.transfer_syntax
                );
                exact += 1;
            }
            eprintln!(
                "{study}: {} instances, {exact} in the stored syntax, the others converted",
                files.len()
            );
            let state = settled_state(ctx, &study).await;
            assert!(
                state
                    .as_ref()
                    .is_some_and(|s| s.complete && s.pacs_instances == files.len() as u64),
                "{study} is complete in the cache with dcmqrscp's {} instances: {state:?}",
                files.len()
            );
        }
    }

    /// How many WADO-RS audit events say the answer was streamed from the PACS; all
    /// WADO-RS events must be successes.
    async fn streamed_from_pacs(&self) -> usize {
        let audits = audit_details(self.gateway.context(), "WADO-RS").await;
        assert!(audits.iter().all(|(o, _)| o == "success"), "{audits:?}");
        audits
            .iter()
            .filter(|(_, d)| d.contains("from the local PACS"))
            .count()
    }

    /// The first retrieve of each study comes from the PACS, the second from the cache.
    async fn retrieve_twice(&self) {
        let studies = self.studies().len();
        // dcmqrscp leaves Number of Study Related Instances (0020,1208) out of its C-FIND
        // answers: beeldbrug counts the IMAGE-level matches to know when a study is whole.
        let (_, items) = self.qido("/dicomweb/studies", "0020000D").await;
        assert!(
            items.iter().all(|item| item.get("00201208").is_none()),
            "dcmqrscp now reports Number of Study Related Instances: {items:?}"
        );
        self.retrieve_every_study().await;
        let first = self.streamed_from_pacs().await;
        assert_eq!(first, studies, "each study streamed from dcmqrscp once");
        let before = datasets_of_all(self).await;
        let after = datasets_of_all(self).await;
        assert!(before == after, "the cache answers with the same data sets");
        assert_eq!(
            self.streamed_from_pacs().await,
            first,
            "the second retrieves came from the cache"
        );
    }
}

/// The cache state of `study` once its retrieve has recorded it: the response may end
/// just before the retrieve writes the state (after the fetched instances are durable).
async fn settled_state(
    ctx: &beeldbrug::server::Context,
    study: &str,
) -> Option<beeldbrug::store::index::CachedStudy> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let state = ctx.index.cached_study(study).await.unwrap();
        if state.as_ref().is_some_and(|s| s.complete) || std::time::Instant::now() > deadline {
            return state;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Every study as stored, from beeldbrug: data sets by SOP Instance UID.
async fn datasets_of_all(setup: &Setup) -> BTreeMap<String, Vec<u8>> {
    let mut all = BTreeMap::new();
    for study in setup.studies().keys() {
        let (_, parts) = wado(
            setup.gateway.http_port,
            &format!("/dicomweb/studies/{study}"),
            AS_STORED,
        )
        .await;
        all.extend(datasets(&parts));
    }
    all
}

#[tokio::test(flavor = "multi_thread")]
async fn qido_through_beeldbrug_lists_what_dcmqrscp_holds() {
    let s = setup("c-move").await;
    let studies = s.studies();

    let (found, items) = s.qido("/dicomweb/studies", "0020000D").await;
    assert_eq!(
        found,
        studies.keys().cloned().collect::<BTreeSet<_>>(),
        "studies: {items:?}"
    );
    for item in &items {
        let uid = item["0020000D"]["Value"][0].as_str().unwrap();
        let f = studies[uid][0];
        assert_eq!(
            item["00100020"]["Value"][0],
            f.patient_id.as_str(),
            "{item}"
        );
        assert_eq!(
            item["00100010"]["Value"][0]["Alphabetic"],
            f.patient_name.as_str(),
            "patient name decoded from dcmqrscp's answer: {item}"
        );
    }
    let path = "/dicomweb/studies?PatientName=muller&fuzzymatching=true";
    let (fuzzy, _) = s.qido(path, "0020000D").await;
    assert_eq!(
        fuzzy.len(),
        studies.len(),
        "{path}: both Müller^Zoë patients"
    );

    for (study, files) in &studies {
        let series: BTreeSet<String> = files.iter().map(|f| f.series_uid.clone()).collect();
        let path = format!("/dicomweb/studies/{study}/series");
        let (found, items) = s.qido(&path, "0020000E").await;
        assert_eq!(found, series, "{path}: {items:?}");
        for se in &series {
            let sops: BTreeSet<String> = files
                .iter()
                .filter(|f| &f.series_uid == se)
                .map(|f| f.sop_uid.clone())
                .collect();
            let path = format!("/dicomweb/studies/{study}/series/{se}/instances");
            let (found, items) = s.qido(&path, "00080018").await;
            assert_eq!(found, sops, "{path}: {items:?}");
        }
    }
    // A study's instances: an IMAGE-level query under the study; dcmqrscp answers it only
    // with the Series Instance UID present as a (universal) key ("hierarchicalCompare: No
    // UID Key found at level 2" and 0xC000 without it).
    for (study, files) in &studies {
        let sops: BTreeSet<String> = files.iter().map(|f| f.sop_uid.clone()).collect();
        let path = format!("/dicomweb/studies/{study}/instances");
        let (found, items) = s.qido(&path, "00080018").await;
        assert_eq!(found, sops, "{path}: {items:?}");
    }

    // The real traffic toward the PACS in the chain view (issue 17 item 3): the C-FINDs
    // above with their latency; and in the metrics. (Counted per process: other
    // tests here query a "local PACS" of their own, so at least these.)
    let chain = s.gateway.context().chain.snapshot();
    let pacs = chain["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == "pacs" && p["name"] == "local PACS")
        .map(|p| p["traffic"].clone())
        .unwrap_or_else(|| panic!("the PACS in the chain view: {chain:#}"));
    // At least the two study searches (by name: never answered from the cache alone).
    let queries: u64 = 2;
    assert!(
        pacs["calls"].as_u64().unwrap() >= queries,
        "{queries} queries: {pacs:#}"
    );
    assert!(pacs["last_call"].is_string(), "{pacs:#}");
    assert!(
        pacs["max_latency_ms"].as_u64().unwrap() >= pacs["mean_latency_ms"].as_u64().unwrap(),
        "{pacs:#}"
    );
    let metrics = beeldbrug::metrics::render();
    assert!(
        metrics.contains(
            "beeldbrug_peer_calls_total{kind=\"pacs\",peer=\"local PACS\",call=\"find\",outcome=\"ok\"}"
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn wado_by_c_move_from_dcmqrscp() {
    let s = setup("c-move").await;
    s.retrieve_twice().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn wado_by_auto_falls_back_to_c_move_without_c_get() {
    let s = setup("auto").await;
    s.retrieve_twice().await;
    let gateway = s.gateway.context().gateway.clone().expect("gateway mode");
    assert_eq!(
        gateway.pacs.mode(),
        RetrieveMode::CMove,
        "auto settled on C-MOVE after dcmqrscp refused C-GET"
    );
}

/// What a viewer does (OHIF asks series metadata, then frames): every series of every
/// study fetched on its own. Once the cache holds every instance dcmqrscp reported for a
/// study, the study counts as complete, with the study's count, not a series'.
#[tokio::test(flavor = "multi_thread")]
async fn a_study_fetched_series_by_series_is_complete() {
    let s = setup("c-move").await;
    let ctx = s.gateway.context();
    let studies = s.studies();
    for (study, files) in &studies {
        let series: BTreeSet<&str> = files.iter().map(|f| f.series_uid.as_str()).collect();
        for se in &series {
            let path = format!("/dicomweb/studies/{study}/series/{se}/metadata");
            let r = request(s.gateway.http_port, "GET", &path, &[], b"").await;
            assert_eq!(
                r.status,
                200,
                "GET {path}: {}\n{}",
                r.text(),
                s.pacs.log_tail()
            );
            let n = files.iter().filter(|f| f.series_uid == *se).count();
            assert_eq!(r.json().as_array().map(Vec::len), Some(n), "{path}");
        }
        let selection = beeldbrug::core::Selection {
            study_uids: vec![study.clone()],
            ..Default::default()
        };
        let cached = ctx.index.count_instances(&selection).await.unwrap();
        assert_eq!(cached, files.len() as u64, "{study}: every instance cached");
    }
    // Each study's state, once its last retrieve has recorded it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let wrong = loop {
        let mut wrong = Vec::new();
        for (study, files) in &studies {
            let series: BTreeSet<&str> = files.iter().map(|f| f.series_uid.as_str()).collect();
            let state = ctx.index.cached_study(study).await.unwrap();
            let n = files.len() as u64;
            if !state
                .as_ref()
                .is_some_and(|st| st.complete && st.pacs_instances == n)
            {
                wrong.push(format!(
                    "{study} ({} series, {n} instances, all cached): {state:?}",
                    series.len()
                ));
            }
        }
        if wrong.is_empty() || std::time::Instant::now() > deadline {
            break wrong;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(
        wrong.is_empty(),
        "studies whose every series was fetched should be complete with the study's \
         instance count:\n{}",
        wrong.join("\n")
    );
}
