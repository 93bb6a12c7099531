//! The container image is secure by default (issue 12 item 2): the environment the
//! Dockerfile sets, fed with the configuration its CMD names into the loader `beeldbrug serve`
//! uses (`Config::load`: embedded default, file, environment), gives the production settings;
//! the image runs as an unprivileged user. Docker itself is not needed: the test reads the
//! files. The demo compose file, which does weaken the checks, gives a configuration that
//! starts.
//!
//! One test in its own binary: it sets process environment variables, which no other test
//! may see.

use beeldbrug::config::Config;
use std::path::{Path, PathBuf};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// The Dockerfile's instructions of the final stage, continuation lines joined: (keyword in
/// upper case, arguments).
fn final_stage(dockerfile: &str) -> Vec<(String, String)> {
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let t = line.trim();
        if current.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        if let Some(head) = t.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(t);
        joined.push(std::mem::take(&mut current));
    }
    let mut stage = Vec::new();
    for instruction in joined {
        let (keyword, args) = instruction
            .split_once(char::is_whitespace)
            .unwrap_or((instruction.as_str(), ""));
        let keyword = keyword.to_ascii_uppercase();
        if keyword == "FROM" {
            stage.clear();
        }
        stage.push((keyword, args.trim().to_string()));
    }
    stage
}

/// `ENV` arguments: `K=V K2="V 2"`, or the legacy `K V` form.
fn env_pairs(args: &str) -> Vec<(String, String)> {
    if !args.split_whitespace().next().unwrap_or("").contains('=') {
        let (k, v) = args.split_once(char::is_whitespace).unwrap_or((args, ""));
        return vec![(k.to_string(), v.trim().to_string())];
    }
    let mut pairs = Vec::new();
    let mut rest = args.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=').expect("ENV K=V");
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"').expect("closing quote");
            (&quoted[..end], &quoted[end + 1..])
        } else {
            after.split_once(char::is_whitespace).unwrap_or((after, ""))
        };
        pairs.push((key.trim().to_string(), value.to_string()));
        rest = after.trim_start();
    }
    pairs
}

/// An exec-form (JSON array) instruction's words.
fn exec_form(args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|e| panic!("not exec form ({e}): {args}"))
}

/// The repository file the image has at `image_path`, by the final stage's `COPY` lines.
fn repo_file_for(stage: &[(String, String)], image_path: &str) -> PathBuf {
    for (keyword, args) in stage {
        let words: Vec<&str> = args.split_whitespace().collect();
        if keyword != "COPY" || words.iter().any(|w| w.starts_with("--from")) || words.len() != 2 {
            continue;
        }
        let (src, dest) = (words[0], words[1]);
        if let Some(rest) = image_path.strip_prefix(dest) {
            return Path::new(REPO).join(src).join(rest.trim_start_matches('/'));
        }
    }
    panic!("{image_path} is not copied into the image");
}

/// Load like `beeldbrug serve --config <file>` with exactly `env` as the `BEELDBRUG_`
/// environment.
fn load_with_env(file: Option<&Path>, env: &[(String, String)]) -> Result<Config, String> {
    let ours: Vec<String> = std::env::vars()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with("BEELDBRUG_"))
        .collect();
    for k in ours {
        std::env::remove_var(k);
    }
    for (k, v) in env {
        std::env::set_var(k, v);
    }
    let loaded = Config::load(file).map_err(|e| e.to_string());
    for (k, _) in env {
        std::env::remove_var(k);
    }
    loaded
}

/// The `environment:` map of a compose service (a flat `KEY: "value"` block).
fn compose_environment(compose: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut indent = None;
    for line in compose.lines() {
        let depth = line.len() - line.trim_start().len();
        match indent {
            None if line.trim() == "environment:" => indent = Some(depth),
            Some(d) if depth > d && !line.trim().is_empty() => {
                let (k, v) = line.trim().split_once(':').expect("KEY: value");
                pairs.push((k.trim().to_string(), v.trim().trim_matches('"').to_string()));
            }
            Some(_) if !line.trim().is_empty() => indent = None,
            _ => {}
        }
    }
    pairs
}

#[test]
fn image_is_secure_by_default_and_the_demo_compose_starts() {
    let dockerfile = std::fs::read_to_string(Path::new(REPO).join("docker/Dockerfile")).unwrap();
    let stage = final_stage(&dockerfile);
    let all = |kw: &str| -> Vec<&String> {
        stage
            .iter()
            .filter(|(k, _)| k == kw)
            .map(|(_, a)| a)
            .collect()
    };

    // Not root: a USER, by name or number, that is neither root nor 0.
    let user = all("USER");
    let user = user.last().expect("the image sets USER");
    let name = user.split(':').next().unwrap();
    assert!(name != "root" && name != "0", "USER {user}");

    // The command: `beeldbrug serve --config <file in the image>`.
    let mut command = exec_form(all("ENTRYPOINT").last().expect("ENTRYPOINT"));
    command.extend(exec_form(all("CMD").last().expect("CMD")));
    assert_eq!(&command[..2], ["beeldbrug", "serve"], "{command:?}");
    let at = command
        .iter()
        .position(|w| w == "--config" || w == "-c")
        .unwrap_or_else(|| panic!("no --config in {command:?}"));
    let config_in_image = &command[at + 1];
    let config_file = repo_file_for(&stage, config_in_image);
    assert_eq!(
        config_file,
        Path::new(REPO).join("config/production.toml"),
        "the image starts config/production.toml"
    );

    let env: Vec<(String, String)> = all("ENV").iter().flat_map(|a| env_pairs(a)).collect();
    for (k, v) in &env {
        assert!(
            !k.contains("ALLOW_INSECURE") && !k.contains("ALLOW_ANONYMOUS"),
            "the image sets {k}={v}"
        );
    }
    let image = load_with_env(Some(&config_file), &env).expect("the image's configuration loads");
    let production = load_with_env(Some(&config_file), &[]).unwrap();
    assert!(!image.http.allow_insecure_public);
    assert!(!image.dimse.allow_insecure_public);
    assert!(!image.dicomweb.allow_anonymous);
    assert!(!image.dimse.allow_unknown_callers);
    assert!(image.trust.require_token);
    assert!(image.tls.client_ca_file.is_some(), "mTLS");
    assert_eq!(image.storage.data_dir, production.storage.data_dir);
    assert_eq!(image.dimse.listen, production.dimse.listen);
    assert_eq!(image.http.listen, production.http.listen);
    assert_eq!(image.index_url(), production.index_url());

    // The data directory is the image's volume, the listeners' ports are exposed.
    let volumes: Vec<&str> = all("VOLUME")
        .iter()
        .flat_map(|a| a.split_whitespace())
        .collect();
    assert!(
        volumes.contains(&production.storage.data_dir.to_str().unwrap()),
        "VOLUME {volumes:?}"
    );
    let exposed: Vec<&str> = all("EXPOSE")
        .iter()
        .flat_map(|a| a.split_whitespace())
        .collect();
    for listen in [&production.dimse.listen, &production.http.listen] {
        let port = listen.rsplit(':').next().unwrap();
        assert!(exposed.contains(&port), "EXPOSE {exposed:?} lacks {port}");
    }

    // Environment beats the file: an insecure variable in the image would switch the check
    // off whatever the operator's file says (the bug this guards against).
    let weakened = [(
        "BEELDBRUG_HTTP__ALLOW_INSECURE_PUBLIC".to_string(),
        "true".to_string(),
    )];
    assert!(
        load_with_env(Some(&config_file), &weakened)
            .unwrap()
            .http
            .allow_insecure_public
    );

    // The demo compose file: the embedded default plus its environment starts, on all
    // interfaces, only because it says it is a demo.
    let compose = std::fs::read_to_string(Path::new(REPO).join("docker/compose.demo.yml")).unwrap();
    let demo_env = compose_environment(&compose);
    let demo = load_with_env(None, &demo_env).expect("the demo configuration loads");
    assert!(demo.dimse.listen.starts_with("0.0.0.0:"), "{demo_env:?}");
    assert!(demo.http.listen.starts_with("0.0.0.0:"), "{demo_env:?}");
    assert!(demo.dimse.allow_insecure_public && demo.http.allow_insecure_public);
    let without: Vec<(String, String)> = demo_env
        .iter()
        .filter(|(k, _)| !k.contains("ALLOW_INSECURE_PUBLIC"))
        .cloned()
        .collect();
    assert!(load_with_env(None, &without).is_err());
}
