//! The two-hospital topology of `docker/compose.yml`, started as plain processes on loopback by
//! `docker/loopback.sh` (issue 16): two gateways on PostgreSQL and an S3 bucket each (moto),
//! two Orthanc PACS, mitz-sim and Prometheus. Orthanc A's study search and retrieve go
//! through gateway A to gateway B (XCA-I over mTLS) and B's Orthanc; Prometheus scrapes both
//! gateways' `/metrics` over mTLS and sees the exchange in A's per-peer counters.

mod common;

use common::http::get;
use common::postgres::postgres_url;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Runs `docker/loopback.sh --stop` when the test ends, however it ends.
struct Topology<'a>(&'a Path);

impl Drop for Topology<'_> {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("--stop")
            .arg(self.0)
            .status();
    }
}

fn script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/loopback.sh")
}

/// The ports the script chose (`ports.env`: `NAME_PORT=1234` lines).
fn port(dir: &Path, name: &str) -> u16 {
    let env = std::fs::read_to_string(dir.join("ports.env")).expect("ports.env");
    env.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}_PORT=")))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name}_PORT in ports.env"))
}

/// `text` percent-encoded for a query string.
fn encoded(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Poll `check` every half second until it says yes or `secs` pass.
async fn eventually<F, Fut>(secs: u64, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hospitals_exchange_a_study_and_prometheus_scrapes_both_gateways() {
    for tool in [
        "prometheus",
        "Orthanc",
        "storescu",
        "findscu",
        "movescu",
        "dcmodify",
    ] {
        common::require_tool(tool);
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("topology");
    let prefix = format!("loopback_{}", std::process::id());
    let started = Command::new("bash")
        .arg(script())
        .arg(&dir)
        .env("BEELDBRUG", env!("CARGO_BIN_EXE_beeldbrug"))
        .env("PG_URL", postgres_url())
        .env("DB_PREFIX", &prefix)
        .output()
        .expect("run docker/loopback.sh");
    let _topology = Topology(&dir);
    assert!(
        started.status.success(),
        "docker/loopback.sh failed:\n{}{}",
        String::from_utf8_lossy(&started.stdout),
        String::from_utf8_lossy(&started.stderr)
    );

    // A CT study of the patient Mitz permits, held only by B's Orthanc.
    let study_dir = tmp.path().join("study");
    let made = Command::new(env!("CARGO_BIN_EXE_beeldbrug"))
        .args([
            "generate",
            "--seed",
            "7",
            "--patients",
            "1",
            "--ct-slices",
            "3",
        ])
        .args(["--mr-slices", "0", "-o"])
        .arg(&study_dir)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let files: Vec<String> = walk(&study_dir);
    assert_eq!(files.len(), 3);
    let mut modify = vec!["-nb", "-m", "(0010,0020)=999999990"];
    modify.extend(files.iter().map(String::as_str));
    let out = common::dcmtk("dcmodify", &modify);
    assert!(out.status.success(), "{out:?}");
    let ob = port(&dir, "OB_DIMSE").to_string();
    let mut store = vec!["-aec", "ORTHANC", "127.0.0.1", ob.as_str()];
    store.extend(files.iter().map(String::as_str));
    let out = common::dcmtk("storescu", &store);
    assert!(out.status.success(), "store into Orthanc B: {out:?}");
    let study = dicom_object::open_file(&files[0])
        .unwrap()
        .element(dicom_dictionary_std::tags::STUDY_INSTANCE_UID)
        .unwrap()
        .to_str()
        .unwrap()
        .trim_end_matches('\0')
        .to_string();

    // Orthanc A's side, as DCMTK speaks for it (AE ORTHANC, a local user of gateway A):
    // C-FIND by BSN finds B's study through A; C-MOVE brings it into Orthanc A.
    let a = port(&dir, "A_DIMSE").to_string();
    let find = common::dcmtk(
        "findscu",
        &[
            "-S",
            "-aet",
            "ORTHANC",
            "-aec",
            "BEELDBRUG",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            "PatientID=999999990",
            "-k",
            "StudyInstanceUID",
            "127.0.0.1",
            &a,
        ],
    );
    let found =
        String::from_utf8_lossy(&find.stderr).to_string() + &String::from_utf8_lossy(&find.stdout);
    assert!(
        find.status.success() && found.contains(&study),
        "C-FIND at A finds B's study {study}:\n{found}"
    );
    let moved = common::dcmtk(
        "movescu",
        &[
            "-S",
            "-aet",
            "ORTHANC",
            "-aec",
            "BEELDBRUG",
            "-aem",
            "ORTHANC",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            &format!("StudyInstanceUID={study}"),
            "127.0.0.1",
            &a,
        ],
    );
    assert!(moved.status.success(), "C-MOVE at A: {moved:?}");
    let oa = port(&dir, "OA_HTTP");
    let instances = get(oa, "/instances", "application/json").await.json();
    assert_eq!(
        instances.as_array().map(Vec::len),
        Some(3),
        "Orthanc A holds B's three instances: {instances}"
    );

    // Prometheus: both gateways up, and A's RAD-75 calls to B counted in what it scraped.
    let prom = port(&dir, "PROM");
    let targets_up = eventually(30, || async move {
        {
            let v = get(prom, "/api/v1/targets", "application/json")
                .await
                .json();
            let targets = v["data"]["activeTargets"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            targets.len() == 2 && targets.iter().all(|t| t["health"] == "up")
        }
    })
    .await;
    assert!(targets_up, "Prometheus scrapes both gateways");
    let query = "beeldbrug_peer_calls_total{hospital=\"a\",call=\"rad75\",outcome=\"ok\"}";
    let path = format!("/api/v1/query?query={}", encoded(query));
    let counted = eventually(30, || {
        let path = path.clone();
        async move {
            let v = get(prom, &path, "application/json").await.json();
            v["data"]["result"].as_array().is_some_and(|r| {
                r.iter().any(|s| {
                    s["value"][1]
                        .as_str()
                        .and_then(|n| n.parse::<f64>().ok())
                        .is_some_and(|n| n >= 1.0)
                })
            })
        }
    })
    .await;
    assert!(counted, "Prometheus holds A's RAD-75 calls to B ({query})");
    drop(_topology);
    let _ = Command::new("psql")
        .arg(postgres_url())
        .args([
            "-q",
            "-c",
            &format!("DROP DATABASE IF EXISTS {prefix}_a WITH (FORCE)"),
        ])
        .args([
            "-c",
            &format!("DROP DATABASE IF EXISTS {prefix}_b WITH (FORCE)"),
        ])
        .status();
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path.display().to_string());
        }
    }
    out.sort();
    out
}

/// The configurations `docker/compose.yml` runs (`loopback.sh --configs-only` with the
/// compose service names, listening on all interfaces) pass the gateway's own start-up
/// checks, the secure-by-default rules for listeners beyond loopback included.
#[test]
fn the_compose_configurations_load() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("twin");
    let compose =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/compose.yml"))
            .unwrap();
    let mut command = Command::new("bash");
    command.arg(script()).arg("--configs-only").arg(&dir);
    // the setup service's environment, read from compose.yml
    for key in [
        "HOST_A",
        "HOST_B",
        "HOST_ORTHANC_A",
        "HOST_ORTHANC_B",
        "HOST_MITZ",
        "HOST_S3",
        "LISTEN",
        "PG_URL",
    ] {
        let value = compose
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{key}: ")))
            .unwrap_or_else(|| panic!("compose.yml's setup sets {key}"));
        command.env(key, value.trim_matches('"'));
    }
    let out = command.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    for who in ["a", "b"] {
        let config = beeldbrug::config::Config::load(Some(&dir.join(format!("{who}.toml"))))
            .unwrap_or_else(|e| panic!("compose's {who}.toml: {e}"));
        assert_eq!(config.http.listen, "0.0.0.0:8443");
        assert!(config
            .index_url()
            .starts_with("postgres://postgres@postgres:5432/twin_"));
    }
    let orthanc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("orthanc-a/orthanc.json")).unwrap())
            .unwrap();
    assert_eq!(
        orthanc["DicomModalities"]["BEELDBRUG"],
        serde_json::json!(["BEELDBRUG", "gateway-a", 11112])
    );
}
