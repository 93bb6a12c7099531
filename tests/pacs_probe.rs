//! The capability probe (`beeldbrug probe`, `pacs::probe`) against real PACSs: Orthanc,
//! DCMTK dcmqrscp (with and without C-GET), and the quirky PACS (tests/pacs/quirky_pacs.py)
//! in its misbehaving modes. Each test starts its peer on free ports, loads the generated
//! studies into it, starts a beeldbrug gateway whose `[pacs]` is that peer (its DIMSE
//! listener on a port the peer knows as a C-MOVE destination), probes, and checks the report.
//! A missing peer is a failure, never a skip.

mod common;

use beeldbrug::config::Config;
use beeldbrug::pacs::config::RetrieveMode;
use beeldbrug::pacs::probe::{self, Outcome, ProbeOptions, ProbeReport};
use beeldbrug::server::Running;
use beeldbrug::testdata::GeneratedFile;
use common::dcmqrscp::Dcmqrscp;
use common::orthanc::{store, Orthanc};
use common::quirky::QuirkyPacs;
use common::{free_port, generate};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Our AE title: the calling AE and the C-MOVE destination.
const OUR_AE: &str = "BBPROBE";

fn options() -> ProbeOptions {
    ProbeOptions {
        check_timeout: Duration::from_secs(30),
        ..ProbeOptions::default()
    }
}

/// Gateway configuration: DIMSE on `our_port` (known to the PACS), `[pacs]` on `pacs_port`.
fn gateway_toml(dir: &Path, our_port: u16, pacs_ae: &str, pacs_port: u16, extra: &str) -> String {
    format!(
        "[dimse]\nae_title = \"{OUR_AE}\"\nlisten = \"127.0.0.1:{our_port}\"\n\
         [http]\nlisten = \"127.0.0.1:0\"\n\
         [storage]\ndata_dir = \"{}\"\n\
         [pacs]\nae_title = \"{pacs_ae}\"\nhost = \"127.0.0.1\"\nport = {pacs_port}\n\
         timeout_secs = 20\nmove_gap_secs = 20\nforward_stow = false\n{extra}\n",
        dir.join("data").display()
    )
}

async fn start_gateway(toml: &str) -> Running {
    let config = Config::from_toml(toml).expect("gateway config");
    beeldbrug::server::start(config)
        .await
        .expect("gateway starts")
}

async fn probe_gateway(running: &Running) -> ProbeReport {
    let gateway = running.context.gateway.clone().expect("gateway mode");
    let report = probe::run_gateway(&gateway, &options()).await;
    eprintln!("{report}");
    report
}

fn studies(files: &[GeneratedFile]) -> BTreeSet<String> {
    files.iter().map(|f| f.study_uid.clone()).collect()
}

fn find<'a>(report: &'a ProbeReport, level: &str) -> &'a probe::FindSection {
    report
        .find
        .iter()
        .find(|s| s.level == level)
        .unwrap_or_else(|| panic!("no C-FIND {level} in the report\n{report}"))
}

/// What every PACS here does alike: it answers, lists our studies, fills the keys.
fn assert_queries(report: &ProbeReport, files: &[GeneratedFile]) {
    assert_eq!(report.association.check.outcome, Outcome::Ok, "{report}");
    assert!(report.association.max_pdu.is_some(), "{report}");
    assert_eq!(report.echo.check.outcome, Outcome::Ok, "{report}");
    assert_eq!(report.echo.status, Some(0), "{report}");
    let study = find(report, "STUDY");
    assert_eq!(study.check.outcome, Outcome::Ok, "{report}");
    assert_eq!(study.matches, studies(files).len(), "{report}");
    for key in ["StudyInstanceUID", "PatientID", "PatientName", "StudyDate"] {
        assert!(study.filled.contains(&key.to_string()), "{key}\n{report}");
    }
    for level in ["SERIES", "IMAGE"] {
        let s = find(report, level);
        assert_eq!(s.check.outcome, Outcome::Ok, "{level}\n{report}");
        assert!(s.matches > 0, "{level}\n{report}");
    }
    assert!(find(report, "IMAGE")
        .filled
        .contains(&"SOPInstanceUID".to_string()));
    // Both Müller^Zoë patients: one ISO_IR 100, one ISO_IR 192 on disk.
    assert_eq!(
        report.character_sets.non_ascii_without_charset, 0,
        "{report}"
    );
    assert!(!report.character_sets.seen.is_empty(), "{report}");
}

fn accepted_syntaxes(report: &ProbeReport) -> BTreeSet<&str> {
    report
        .transfer_syntaxes
        .accepted
        .iter()
        .map(|s| s.uid.as_str())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Orthanc

/// Orthanc (tests/common/orthanc.rs) knowing our AE as a C-MOVE destination.
async fn start_orthanc(dir: &Path, our_port: u16) -> (Orthanc, u16) {
    let orthanc = Orthanc::start_with(dir, &[(OUR_AE, our_port)]).await;
    let port = orthanc.dicom_port;
    (orthanc, port)
}

#[tokio::test(flavor = "multi_thread")]
async fn orthanc_gets_and_moves_with_originator_and_a_waiting_final_response() {
    let dir = tempfile::tempdir().expect("temp dir");
    let files = generate(&dir.path().join("in"), false);
    let our_port = free_port();
    let (orthanc, port) = start_orthanc(dir.path(), our_port).await;
    store(port, "ORTHANC", &files);
    let toml = gateway_toml(
        dir.path(),
        our_port,
        "ORTHANC",
        port,
        "probe_at_start = false",
    );
    let running = start_gateway(&toml).await;
    let report = probe_gateway(&running).await;
    let context = |r: &ProbeReport| format!("{r}\n{}", orthanc.log_tail());

    assert_queries(&report, &files);
    let a = &report.association;
    // Orthanc's DICOM layer is DCMTK's.
    assert!(
        a.implementation_class_uid.is_some() && a.implementation_version_name.is_some(),
        "{}",
        context(&report)
    );
    for service in ["Verification", "Study Root C-FIND", "Study Root C-GET"] {
        let s = a.services.iter().find(|s| s.name == service).unwrap();
        assert!(s.accepted, "{service}\n{}", context(&report));
    }
    assert_eq!(find(&report, "PATIENT").check.outcome, Outcome::Ok);
    assert_eq!(find(&report, "PATIENT").matches, 2);

    let g = &report.get;
    assert_eq!(g.check.outcome, Outcome::Ok, "{}", context(&report));
    assert_eq!(g.storage_role_accepted, Some(true));
    assert_eq!(g.result.as_ref().unwrap().received, 1);
    let m = &report.move_;
    assert_eq!(m.check.outcome, Outcome::Ok, "{}", context(&report));
    assert_eq!(m.destination_known, Some(true));
    assert_eq!(m.move_originator, Some(true));
    assert_eq!(m.without_originator, Some(0));
    assert_eq!(m.final_waits, Some(true));
    assert!(report.quirks.is_empty(), "{}", context(&report));
    assert_eq!(report.recommended, Some(RetrieveMode::CGet));

    let accepted = accepted_syntaxes(&report);
    for ts in [
        beeldbrug::dimse::sop::EXPLICIT_VR_LE,
        beeldbrug::dimse::sop::IMPLICIT_VR_LE,
        beeldbrug::dimse::sop::JPEG_BASELINE,
    ] {
        assert!(accepted.contains(ts), "{ts}\n{}", context(&report));
    }
    let sent = report.transfer_syntaxes.sent_by_get.as_ref().unwrap();
    assert!(beeldbrug::dimse::sop::is_native_le(&sent.uid), "{sent}");
    assert!(report.transfer_syntaxes.sent_by_move.is_some());

    // The JSON form carries the same.
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).expect("JSON");
    assert_eq!(json["recommended"], "c-get");
    assert_eq!(json["move"]["final_waits"], true);
    assert_eq!(json["get"]["outcome"], "ok");
    running.stop().await;
}

// ---------------------------------------------------------------------------------------------
// DCMTK dcmqrscp

/// dcmqrscp (tests/common/dcmqrscp.rs) with one AE `QRSCP` and our AE in its host table as
/// a C-MOVE destination.
async fn start_dcmqrscp(dir: &Path, our_port: u16, extra: &[&str]) -> (Dcmqrscp, u16) {
    let qrscp = Dcmqrscp::start(dir, "QRSCP", &[(OUR_AE, our_port)], extra).await;
    let port = qrscp.port;
    (qrscp, port)
}

#[tokio::test(flavor = "multi_thread")]
async fn dcmqrscp_without_c_get_moves() {
    let dir = tempfile::tempdir().expect("temp dir");
    let files = generate(&dir.path().join("in"), false);
    let our_port = free_port();
    let (qrscp, port) = start_dcmqrscp(dir.path(), our_port, &["--disable-get"]).await;
    qrscp.load(&files);
    let toml = gateway_toml(
        dir.path(),
        our_port,
        "QRSCP",
        port,
        "probe_at_start = false",
    );
    let running = start_gateway(&toml).await;
    let report = probe_gateway(&running).await;
    let context = |r: &ProbeReport| format!("{r}\n{}", qrscp.log_tail());

    assert_queries(&report, &files);
    assert!(
        report
            .association
            .implementation_version_name
            .as_deref()
            .is_some_and(|v| v.starts_with("OFFIS_DCMTK")),
        "{}",
        context(&report)
    );
    assert_eq!(
        report.get.check.outcome,
        Outcome::NotSupported,
        "{}",
        context(&report)
    );
    let m = &report.move_;
    assert_eq!(m.check.outcome, Outcome::Ok, "{}", context(&report));
    assert_eq!(m.move_originator, Some(true));
    assert_eq!(m.final_waits, Some(true));
    assert_eq!(m.result.as_ref().unwrap().received, 1);
    assert_eq!(report.recommended, Some(RetrieveMode::CMove));
    assert!(accepted_syntaxes(&report).contains(beeldbrug::dimse::sop::EXPLICIT_VR_LE));
    running.stop().await;
}

/// `beeldbrug probe --json` as a PACS engineer runs it: the gateway's own DIMSE port from the
/// config file receives the C-MOVE; dcmqrscp as shipped (with C-GET).
#[tokio::test(flavor = "multi_thread")]
async fn cli_probe_prints_json_and_text_for_dcmqrscp() {
    let dir = tempfile::tempdir().expect("temp dir");
    let files = generate(&dir.path().join("in"), false);
    let our_port = free_port();
    let (qrscp, port) = start_dcmqrscp(dir.path(), our_port, &[]).await;
    qrscp.load(&files);
    let cfg = dir.path().join("beeldbrug.toml");
    std::fs::write(&cfg, gateway_toml(dir.path(), our_port, "QRSCP", port, "")).unwrap();
    let cfg = cfg.display().to_string();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_beeldbrug"))
            .args(args)
            .output()
            .expect("run beeldbrug")
    };
    let out = run(&["probe", "-c", &cfg, "--json", "--timeout", "30"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{stdout}\n{stderr}\n{}",
        qrscp.log_tail()
    );
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON document");
    assert_eq!(json["pacs"]["ae_title"], "QRSCP");
    assert_eq!(json["echo"]["outcome"], "ok", "{stdout}");
    assert_eq!(
        json["get"]["outcome"],
        "ok",
        "{stdout}\n{}",
        qrscp.log_tail()
    );
    assert_eq!(
        json["move"]["outcome"],
        "ok",
        "{stdout}\n{}",
        qrscp.log_tail()
    );
    assert_eq!(json["move"]["move_originator"], true);
    assert_eq!(json["recommended"], "c-get");

    let out = run(&["probe", "-c", &cfg, "--timeout", "30"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for needle in [
        "capability probe of PACS QRSCP",
        "C-ECHO",
        "C-FIND STUDY",
        "C-GET",
        "C-MOVE",
        "Retrieve: recommended c-get",
    ] {
        assert!(text.contains(needle), "{needle:?} missing:\n{text}");
    }
    eprintln!("{text}");

    // `beeldbrug serve` holds the DIMSE port: the probe runs without its C-MOVE check.
    let toml = gateway_toml(
        dir.path(),
        our_port,
        "QRSCP",
        port,
        "probe_at_start = false",
    );
    let serving = start_gateway(&toml).await;
    let out = run(&["probe", "-c", &cfg, "--json", "--timeout", "30"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON document");
    assert_eq!(json["get"]["outcome"], "ok", "{stdout}");
    assert_eq!(json["move"]["outcome"], "skipped", "{stdout}");
    let why = json["move"]["detail"].as_str().unwrap_or_default();
    assert!(why.contains("cannot listen"), "{why}");
    serving.stop().await;
    let _ = files;
}

#[test]
fn cli_probe_needs_a_pacs_and_fails_when_it_does_not_answer() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = dir.path().join("beeldbrug.toml");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_beeldbrug"))
            .args(args)
            .output()
            .expect("run beeldbrug")
    };
    std::fs::write(
        &cfg,
        format!(
            "[dimse]\nlisten = \"127.0.0.1:0\"\n[storage]\ndata_dir = \"{}\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let out = run(&["probe", "-c", cfg.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("[pacs]"), "{stderr}");

    // Nobody listens on the PACS port: the report says so, and the exit status.
    let closed = free_port();
    std::fs::write(
        &cfg,
        gateway_toml(dir.path(), free_port(), "NOBODY", closed, ""),
    )
    .unwrap();
    let out = run(&["probe", "-c", cfg.to_str().unwrap(), "--timeout", "5"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout}");
    assert!(stderr.contains("C-ECHO"), "{stderr}");
    eprintln!("{stdout}");
    for needle in [
        "Association                FAILED",
        "C-ECHO                     FAILED",
        "not run: no association",
        "Retrieve: recommended none",
    ] {
        assert!(stdout.contains(needle), "{needle:?} missing:\n{stdout}");
    }
}

/// `serve` with `retrieve = "auto"`: the start-up probe picks C-MOVE for a PACS without C-GET.
#[tokio::test(flavor = "multi_thread")]
async fn start_up_probe_sets_the_retrieve_mode() {
    let dir = tempfile::tempdir().expect("temp dir");
    let files = generate(&dir.path().join("in"), false);
    let our_port = free_port();
    let (qrscp, port) = start_dcmqrscp(dir.path(), our_port, &["--disable-get"]).await;
    qrscp.load(&files);
    let toml = gateway_toml(dir.path(), our_port, "QRSCP", port, "retrieve = \"auto\"");
    let running = start_gateway(&toml).await;
    let gateway = running.context.gateway.clone().expect("gateway mode");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while gateway.pacs.mode() == RetrieveMode::Auto {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the start-up probe chose no mode\n{}",
            qrscp.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(gateway.pacs.mode(), RetrieveMode::CMove);
    running.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The quirky PACS

async fn probe_quirky(flags: &[&str], study: bool) -> (ProbeReport, QuirkyPacs) {
    probe_quirky_knowing(flags, study, OUR_AE).await
}

/// The quirky PACS knowing our DIMSE port as the C-MOVE destination `known_as`.
async fn probe_quirky_knowing(
    flags: &[&str],
    study: bool,
    known_as: &str,
) -> (ProbeReport, QuirkyPacs) {
    let dir = tempfile::tempdir().expect("temp dir");
    let files = generate(&dir.path().join("in"), false);
    let our_port = free_port();
    let pacs = QuirkyPacs::start_with_destinations(
        &dir.path().join("in"),
        "QUIRKY",
        flags,
        &[(known_as, our_port)],
    );
    let toml = gateway_toml(
        dir.path(),
        our_port,
        "QUIRKY",
        pacs.port(),
        "probe_at_start = false",
    );
    let running = start_gateway(&toml).await;
    let gateway = running.context.gateway.clone().expect("gateway mode");
    let mut options = options();
    if study {
        // A PACS without C-FIND: the operator names the study (`--study`).
        let smallest = files
            .iter()
            .filter(|f| f.sop_class_uid != "1.2.840.10008.5.1.4.1.1.2")
            .map(|f| f.study_uid.clone())
            .next();
        options.study = smallest;
    }
    let report = probe::run_gateway(&gateway, &options).await;
    eprintln!("{report}");
    running.stop().await;
    (report, pacs)
}

#[tokio::test(flavor = "multi_thread")]
async fn quirky_normal_pacs_has_no_quirks() {
    let (report, pacs) = probe_quirky(&[], false).await;
    let context = format!("{report}\n{}", pacs.log_tail());
    assert_eq!(report.get.check.outcome, Outcome::Ok, "{context}");
    assert_eq!(report.move_.check.outcome, Outcome::Ok, "{context}");
    assert_eq!(report.move_.final_waits, Some(true), "{context}");
    assert_eq!(report.move_.move_originator, Some(true), "{context}");
    assert!(report.quirks.is_empty(), "{context}");
    assert_eq!(report.recommended, Some(RetrieveMode::CGet));
}

#[tokio::test(flavor = "multi_thread")]
async fn quirky_only_move() {
    let (report, pacs) = probe_quirky(&["--services", "move"], true).await;
    let context = format!("{report}\n{}", pacs.log_tail());
    assert_eq!(
        report.echo.check.outcome,
        Outcome::NotSupported,
        "{context}"
    );
    assert!(!report.echo_ok());
    assert_eq!(
        find(&report, "STUDY").check.outcome,
        Outcome::NotSupported,
        "{context}"
    );
    assert_eq!(report.get.check.outcome, Outcome::NotSupported, "{context}");
    assert_eq!(report.move_.check.outcome, Outcome::Ok, "{context}");
    assert_eq!(report.recommended, Some(RetrieveMode::CMove));
    let services = &report.association.services;
    let accepted: Vec<&str> = services
        .iter()
        .filter(|s| s.accepted)
        .map(|s| s.name.as_str())
        .collect();
    assert!(
        accepted.iter().all(|s| s.ends_with("C-MOVE")),
        "{accepted:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn quirky_without_move_originator() {
    let (report, pacs) = probe_quirky(&["--no-move-originator"], false).await;
    let context = format!("{report}\n{}", pacs.log_tail());
    assert_eq!(report.move_.check.outcome, Outcome::Warning, "{context}");
    assert!(
        report.move_.without_originator.unwrap_or(0) > 0,
        "{context}"
    );
    assert_eq!(report.move_.move_originator, Some(false));
    assert!(report.quirks.iter().any(|q| q.contains("Move Originator")));
    assert_eq!(report.recommended, Some(RetrieveMode::CGet));
}

#[tokio::test(flavor = "multi_thread")]
async fn quirky_early_final_response() {
    let (report, pacs) = probe_quirky(&["--early-final", "--pause", "0.3"], false).await;
    let context = format!("{report}\n{}", pacs.log_tail());
    assert_eq!(report.move_.check.outcome, Outcome::Warning, "{context}");
    assert_eq!(report.move_.final_waits, Some(false), "{context}");
    assert_eq!(report.move_.result.as_ref().unwrap().received, 1);
    assert!(report.quirks.iter().any(|q| q.contains("final C-MOVE")));
}

#[tokio::test(flavor = "multi_thread")]
async fn quirky_without_charset() {
    let (report, pacs) = probe_quirky(&["--no-charset"], false).await;
    let context = format!("{report}\n{}", pacs.log_tail());
    let c = &report.character_sets;
    assert_eq!(c.check.outcome, Outcome::Warning, "{context}");
    assert!(c.non_ascii_without_charset > 0, "{context}");
    assert!(c.seen.is_empty(), "{context}");
    assert!(report
        .quirks
        .iter()
        .any(|q| q.contains("Specific Character Set")));
}

#[tokio::test(flavor = "multi_thread")]
async fn quirky_compressed_then_failed_is_retried_uncompressed() {
    let (report, pacs) = probe_quirky(&["--fail-compressed"], false).await;
    let context = format!("{report}\n{}", pacs.log_tail());
    assert!(report.get.retried_uncompressed, "{context}");
    assert_eq!(report.get.check.outcome, Outcome::Warning, "{context}");
    assert_eq!(report.recommended, Some(RetrieveMode::CGet));
}

#[tokio::test(flavor = "multi_thread")]
async fn quirky_that_does_not_know_us_refuses_the_move() {
    let (report, pacs) = probe_quirky_knowing(&[], false, "SOMEONE_ELSE").await;
    let context = format!("{report}\n{}", pacs.log_tail());
    let m = &report.move_;
    assert_eq!(m.check.outcome, Outcome::Failed, "{context}");
    assert_eq!(m.destination_known, Some(false), "{context}");
    assert_eq!(m.result.as_ref().map(|r| r.status), Some(0xA801));
    assert!(m.check.detail.contains("register AE BBPROBE"), "{context}");
    assert_eq!(report.recommended, Some(RetrieveMode::CGet));
}
