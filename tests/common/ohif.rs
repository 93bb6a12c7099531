//! The OHIF viewer in headless Chromium (tests/ohif/run.mjs, driven by playwright-core)
//! against a gateway's `/dicomweb`: it must list the studies that QIDO-RS returns, open a CT
//! study and render a non-blank image, with no failed request to the gateway.
//!
//! Needs Node.js 20+, `npm ci` in `tests/ohif` and Debian's `chromium` (`bash .ci/run`
//! installs them); a missing piece fails with a message that says how to install it.

use serde_json::Value;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Upper bound for the node script (study list + viewer take ~15 s on 2 cores).
pub const NODE_TIMEOUT: Duration = Duration::from_secs(150);

fn ohif_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("ohif")
}

/// Fail (never skip) when node, the npm packages or chromium are missing; the folder of
/// run.mjs.
pub fn require_ohif_setup() -> PathBuf {
    let dir = ohif_dir();
    let install = "run `apt-get install -y chromium nodejs npm` and `npm ci` in tests/ohif (or `bash .ci/run`)";
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|o| o.status.success()),
        "Node.js (`node`) is not on PATH: {install}"
    );
    assert!(
        dir.join("node_modules/playwright-core/package.json")
            .exists(),
        "tests/ohif/node_modules/playwright-core is missing: {install}"
    );
    assert!(
        dir.join("ohif-dist/index.html").exists(),
        "tests/ohif/ohif-dist (the prebuilt OHIF viewer) is missing: {install}"
    );
    let chromium = std::env::var_os("CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    assert!(
        chromium.exists(),
        "{} is missing: {install}",
        chromium.display()
    );
    dir
}

/// Run `node run.mjs` with a deadline; returns (exit status, stdout, stderr).
pub fn run_node(dir: &Path, args: &[String]) -> (Option<i32>, String, String) {
    run_script(dir, "run.mjs", args)
}

/// [`run_node`] with another script of `dir`.
pub fn run_script(dir: &Path, script: &str, args: &[String]) -> (Option<i32>, String, String) {
    let mut child = Command::new("node")
        .arg(script)
        .args(args)
        .current_dir(dir)
        // own process group, so that a hung run is killed together with its Chromium
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start node");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + NODE_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for node") {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    (status, out.join().unwrap(), err.join().unwrap())
}

/// What one run of the viewer gave.
pub struct ViewerRun {
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Run the viewer flow against `dicomweb` (e.g. `http://127.0.0.1:PORT/dicomweb`), each
/// wait up to `timeout_ms`; `dir` from [`require_ohif_setup`].
pub async fn run_viewer(dir: PathBuf, dicomweb: String, timeout_ms: u32) -> ViewerRun {
    run_viewer_with(dir, dicomweb, timeout_ms, Vec::new()).await
}

/// [`run_viewer`] with more options of run.mjs (`--mrn`, `--bearer-tokens`).
pub async fn run_viewer_with(
    dir: PathBuf,
    dicomweb: String,
    timeout_ms: u32,
    options: Vec<String>,
) -> ViewerRun {
    let mut node_args = vec![
        "--dicomweb".to_string(),
        dicomweb,
        "--timeout-ms".to_string(),
        timeout_ms.to_string(),
    ];
    node_args.extend(options);
    let (status, stdout, stderr) = tokio::task::spawn_blocking(move || run_node(&dir, &node_args))
        .await
        .unwrap();
    ViewerRun {
        status,
        stdout,
        stderr,
    }
}

impl ViewerRun {
    /// Check the run: the study list shows `studies` studies of Müller^Zoë, a CT study
    /// opened and rendered a non-blank image, no request to the gateway failed. Returns the
    /// script's JSON result.
    pub fn assert_ok(&self, studies: usize) -> Value {
        let result = self.assert_opened(studies);
        let pretty = serde_json::to_string_pretty(&result).unwrap();
        assert_eq!(result["patient_name"], "Müller^Zoë", "{pretty}");
        assert_eq!(result["patient_name_shown"], true, "{pretty}");
        result
    }

    /// [`ViewerRun::assert_ok`] without the patient's name (a study list row may lack it:
    /// another hospital's gateway publishes no demographics by default).
    pub fn assert_opened(&self, studies: usize) -> Value {
        let (stdout, stderr) = (&self.stdout, &self.stderr);
        let status = self.status.unwrap_or_else(|| {
            panic!("tests/ohif/run.mjs did not finish within {NODE_TIMEOUT:?}\nstdout: {stdout}\nstderr: {stderr}")
        });
        let result: Value = stdout
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str(l).ok())
            .unwrap_or_else(|| {
                panic!("tests/ohif/run.mjs (exit {status}) printed no JSON result\nstdout: {stdout}\nstderr: {stderr}")
            });
        let pretty = serde_json::to_string_pretty(&result).unwrap();
        if let Some(setup) = result.get("setup_error") {
            panic!("OHIF test setup: {setup}\nstderr: {stderr}");
        }
        for tolerated in result["tolerated_requests"]
            .as_array()
            .into_iter()
            .flatten()
        {
            eprintln!("tolerated gateway gap: {tolerated}");
        }
        eprintln!(
            "OHIF: study list after {} ms, viewer image after {} ms, total {} ms",
            result["t_study_list_ms"], result["t_viewer_ms"], result["t_total_ms"]
        );
        assert!(
            status == 0 && result["ok"] == Value::Bool(true),
            "OHIF against beeldbrug failed (exit {status}): {}\n\nfull result: {pretty}\nstderr: {stderr}",
            result["failures"]
        );
        // the script compares with QIDO-RS; also pin what that QIDO-RS answer must be
        assert_eq!(result["qido_studies"], studies, "{pretty}");
        assert_eq!(result["study_list_rows"], studies, "{pretty}");
        assert!(
            result["viewport_image"]["variance"].as_f64().unwrap_or(0.0) > 100.0,
            "{pretty}"
        );
        result
    }
}
