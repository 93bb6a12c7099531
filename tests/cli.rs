//! The `beeldbrug` binary: configuration errors, and its SCU commands against a running gateway.

mod common;

use common::Gateway;
use std::process::Command;

fn beeldbrug(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_beeldbrug"))
        .args(args)
        .output()
        .expect("run beeldbrug")
}

#[test]
fn config_error_names_the_key_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[dimse]\nmax_pdu = 12\n").unwrap();
    let out = beeldbrug(&["serve", "--config", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("dimse.max_pdu"), "stderr: {stderr}");

    std::fs::write(&bad, "[dimse]\nunknown_key = 1\n").unwrap();
    let out = beeldbrug(&["serve", "--config", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown_key"));

    let out = beeldbrug(&["serve", "--config", "/nonexistent/beeldbrug.toml"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}

#[test]
fn shipped_example_configs_are_valid() {
    for name in ["config/beeldbrug.toml", "config/production.toml"] {
        let text = std::fs::read_to_string(name).unwrap();
        let config =
            beeldbrug::config::Config::from_toml(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        config.validate().unwrap();
    }
}

/// config/production.toml through the loader `beeldbrug serve` uses (file over the embedded
/// default): it has what docs/trust.md says a GtK has.
#[test]
fn production_config_loads_through_the_real_loader() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/production.toml");
    let config = beeldbrug::config::Config::load(Some(&path)).unwrap();
    assert!(!config.dimse.allow_unknown_callers);
    assert!(!config.dicomweb.allow_anonymous);
    assert!(config.trust.require_token);
    assert!(config.tls.client_ca_file.is_some());
    assert!(
        !config.trust.allowed_roles.is_empty(),
        "an allowed-roles list"
    );
    assert!(config.trust.audit.syslog_host.is_some(), "[trust.audit]");
    assert!(config.trust.audit.ca_file.is_some());
    assert!(!config.trust.consent.url.is_empty(), "[trust.consent]");
}

/// Issue 12 item 3: DIMSE beyond loopback admitting any caller is refused at start, the
/// message naming the key that allows it; with that key set it starts.
#[test]
fn public_dimse_listener_without_caller_check_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("public.toml");
    let toml = |extra: &str| {
        format!(
            "[dimse]\nlisten = \"0.0.0.0:0\"\nallow_unknown_callers = true\n{extra}\n\
             [http]\nlisten = \"127.0.0.1:0\"\n[storage]\ndata_dir = \"{}\"\n",
            dir.path().join("data").display()
        )
    };
    let serve = || {
        Command::new(env!("CARGO_BIN_EXE_beeldbrug"))
            .args(["serve", "--config", config.to_str().unwrap()])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run beeldbrug serve")
    };
    let exited_within = |child: &mut std::process::Child, secs: u64| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        while std::time::Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        None
    };

    std::fs::write(&config, toml("")).unwrap();
    let mut child = serve();
    let status = exited_within(&mut child, 20);
    if status.is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        status.is_some_and(|s| !s.success()),
        "serve started with any caller on 0.0.0.0: {stderr}"
    );
    assert!(stderr.contains("dimse.allow_insecure_public"), "{stderr}");
    assert!(stderr.contains("dimse.listen"), "{stderr}");

    std::fs::write(&config, toml("allow_insecure_public = true")).unwrap();
    let mut child = serve();
    let status = exited_within(&mut child, 3);
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    assert!(
        status.is_none(),
        "the demo setting did not start: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn environment_overrides_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_beeldbrug"))
        .args(["serve"])
        .env("BEELDBRUG_DIMSE__AE_TITLE", "WAY_TOO_LONG_AE_TITLE_X")
        .env("BEELDBRUG_STORAGE__DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("dimse.ae_title"));
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_scu_round_trip_against_the_gateway() {
    let dest = Gateway::start("[dimse]\nae_title = \"DEST\"").await;
    let peer = format!(
        "[[dimse.peers]]\nae_title = \"DEST\"\nhost = \"127.0.0.1\"\nport = {}\n",
        dest.port
    );
    let gw = Gateway::start(&peer).await;
    let data = tempfile::tempdir().unwrap();
    let files = common::generate(data.path(), false);
    let port = gw.port.to_string();
    let base = ["--host", "127.0.0.1", "--port", port.as_str()];
    let run = move |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            beeldbrug(&refs)
        })
    };
    let args = |cmd: &[&str]| -> Vec<String> {
        cmd.iter()
            .chain(base.iter())
            .map(|s| s.to_string())
            .collect()
    };

    let out = run(args(&["echo"])).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut store = args(&["store"]);
    store.push(data.path().display().to_string());
    let out = run(store).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!(
        "stored {} of {} files",
        files.len(),
        files.len()
    )));

    let out = run(args(&[
        "find",
        "--json",
        "-L",
        "STUDY",
        "-k",
        "PatientName=Müller^Zoë",
        "-k",
        "StudyInstanceUID",
    ]))
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let expected: std::collections::BTreeSet<_> = files
        .iter()
        .filter(|f| f.patient_name == "Müller^Zoë")
        .map(|f| f.study_uid.clone())
        .collect();
    assert!(!expected.is_empty());
    let got: std::collections::BTreeSet<_> = rows
        .iter()
        .map(|r| r["StudyInstanceUID"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, expected);
    assert!(rows.iter().all(|r| r["PatientName"] == "Müller^Zoë"));

    let study = files[0].study_uid.clone();
    let in_study = files.iter().filter(|f| f.study_uid == study).count();
    let key = format!("StudyInstanceUID={study}");
    let out = run(args(&["move", "--dest", "DEST", "-k", &key]))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("{in_study} completed, 0 failed"))
    );
    let moved = dest
        .context()
        .index
        .locate(&beeldbrug::core::Selection {
            study_uids: vec![study.clone()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(moved.len(), in_study);

    let out_dir = tempfile::tempdir().unwrap();
    let out_path = out_dir.path().display().to_string();
    let out = run(args(&["get", "-o", &out_path, "-k", &key]))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_dir(out_dir.path()).unwrap().count(), in_study);

    let out = run(args(&["move", "--dest", "NOWHERE", "-k", &key]))
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("0xA801"));

    // Every operation left an audit event.
    let events = gw.context().index.audit_events(100).await.unwrap();
    for op in ["C-ECHO", "C-STORE", "C-FIND", "C-MOVE", "C-GET"] {
        assert!(
            events.iter().any(|e| e.operation == op),
            "no audit event for {op}"
        );
    }
    gw.stop().await;
    dest.stop().await;
}
