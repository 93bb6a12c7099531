//! The quirky PACS test peer (tests/pacs/quirky_pacs.py) itself: it starts from the harness,
//! answers DCMTK's echoscu and findscu over beeldbrug's generated studies, and leaves out a
//! service when told to.

mod common;

use common::quirky::QuirkyPacs;
use common::{dcmtk, generate};
use std::collections::BTreeMap;

const TIMEOUTS: [&str; 6] = ["-to", "15", "-ta", "30", "-td", "60"];

/// Run a DCMTK SCU against the PACS; stdout and stderr as one text.
fn scu(tool: &str, pacs: &QuirkyPacs, args: &[&str]) -> (bool, String) {
    let port = pacs.port().to_string();
    let mut all = vec!["-aec", pacs.ae_title()];
    all.extend(TIMEOUTS);
    all.extend(args);
    all.extend(["127.0.0.1", port.as_str()]);
    let out = dcmtk(tool, &all);
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn echo_and_study_find_over_generated_files() {
    let data = tempfile::tempdir().expect("temp dir");
    let files = generate(data.path(), false);
    let mut per_study: BTreeMap<String, usize> = BTreeMap::new();
    for f in &files {
        *per_study.entry(f.study_uid.clone()).or_default() += 1;
    }

    let pacs = QuirkyPacs::start(data.path(), "QUIRKY", &[]);
    let (ok, text) = scu("echoscu", &pacs, &[]);
    assert!(ok, "echoscu failed\n{text}\n{}", pacs.log_tail());

    let (ok, text) = scu(
        "findscu",
        &pacs,
        &[
            "-S",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            "StudyInstanceUID",
            "-k",
            "NumberOfStudyRelatedInstances",
        ],
    );
    assert!(ok, "findscu failed\n{text}\n{}", pacs.log_tail());
    let responses = text.matches("Find Response:").count();
    assert_eq!(responses, per_study.len(), "one response per study\n{text}");
    for (uid, count) in &per_study {
        // DCMTK prints the value as received: an odd-length UID keeps its NUL pad.
        let at = [format!("[{uid}]"), format!("[{uid}\0]")]
            .iter()
            .find_map(|quoted| text.find(quoted.as_str()))
            .unwrap_or_else(|| panic!("study {uid} not found\n{text}"));
        let rest = &text[at..];
        let line = rest
            .lines()
            .find(|l| l.contains("NumberOfStudyRelatedInstances"))
            .expect("count line");
        assert!(
            line.contains(&format!("[{count} ]")) || line.contains(&format!("[{count}]")),
            "study {uid}: expected {count} instances: {line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_left_out_is_not_negotiated() {
    let data = tempfile::tempdir().expect("temp dir");
    generate(data.path(), false);
    let pacs = QuirkyPacs::start(data.path(), "MOVEONLY", &["--services", "move"]);
    let (ok, text) = scu("echoscu", &pacs, &[]);
    assert!(!ok, "echo must be refused by a move-only PACS\n{text}");
    assert!(
        text.contains("No Acceptable Presentation Contexts"),
        "{text}\n{}",
        pacs.log_tail()
    );
}
