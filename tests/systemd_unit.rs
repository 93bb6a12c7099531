//! The systemd unit (issue 16, item 8, `packaging/systemd/beeldbrug.service`) fits the
//! production configuration it starts: `systemd-analyze verify` accepts it (with `ExecStart`
//! pointed at this build's binary), it runs as an unprivileged user with its state directory
//! being the configured data directory, and systemd waits longer on stop than the gateway's
//! own shutdown grace, so a stop drains instead of being killed.

use beeldbrug::config::Config;
use std::path::Path;
use std::process::Command;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn unit() -> String {
    std::fs::read_to_string(Path::new(REPO).join("packaging/systemd/beeldbrug.service"))
        .expect("packaging/systemd/beeldbrug.service")
}

/// The value of `key=` in the unit (the last one counts, as in systemd).
fn value(unit: &str, key: &str) -> Option<String> {
    unit.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().to_string())
        .next_back()
}

#[test]
fn the_unit_starts_the_production_configuration_safely() {
    let unit = unit();
    let exec = value(&unit, "ExecStart").expect("ExecStart");
    assert_eq!(
        exec,
        "/usr/local/bin/beeldbrug serve --config /etc/beeldbrug/production.toml"
    );
    let user = value(&unit, "User").expect("User");
    assert!(!user.is_empty() && user != "root" && user != "0", "{user}");
    assert_eq!(value(&unit, "NoNewPrivileges").as_deref(), Some("yes"));
    assert_eq!(value(&unit, "ProtectSystem").as_deref(), Some("strict"));

    // The configuration it names (what docker/Dockerfile copies to /etc/beeldbrug).
    let production = std::fs::read_to_string(Path::new(REPO).join("config/production.toml"))
        .expect("config/production.toml");
    let config = Config::from_toml(&production).expect("production.toml loads");
    // ProtectSystem=strict leaves only the state directory writable: it must be data_dir.
    let state = value(&unit, "StateDirectory").expect("StateDirectory");
    assert_eq!(
        Path::new("/var/lib").join(&state),
        config.storage.data_dir,
        "StateDirectory must be storage.data_dir"
    );
    // systemd's stop timeout above the gateway's drain (docs/operations.md "Shutdown").
    let stop: u64 = value(&unit, "TimeoutStopSec")
        .expect("TimeoutStopSec")
        .parse()
        .expect("seconds");
    assert!(
        stop > config.server.shutdown_grace_secs + 5,
        "TimeoutStopSec={stop} must exceed shutdown_grace_secs={}",
        config.server.shutdown_grace_secs
    );
    assert_eq!(value(&unit, "KillSignal").as_deref(), Some("SIGTERM"));
}

#[test]
fn systemd_analyze_verifies_the_unit() {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        panic!("systemd-analyze is not installed: apt-get install -y systemd");
    };
    assert!(version.status.success());
    // The same unit with ExecStart at this build's binary (verify checks that it exists).
    let dir = tempfile::tempdir().unwrap();
    let unit = unit().replace("/usr/local/bin/beeldbrug", env!("CARGO_BIN_EXE_beeldbrug"));
    let path = dir.path().join("beeldbrug.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("run systemd-analyze");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Lines about other units on this machine are not ours.
    let ours: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("beeldbrug.service"))
        .collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify: {text}"
    );
}
