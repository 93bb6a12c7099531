//! A real S3-compatible server for the object-storage tests: moto's standalone server
//! (`moto[server]` from PyPI, installed by `.ci/run`) on 127.0.0.1 with a port of the
//! kernel's choosing, read from its log; a bucket made with a plain S3 `CreateBucket`; and
//! an `object_store` client onto it to look at what the gateway put there.

use super::peer::PeerProcess;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;
use std::path::Path;
use std::time::{Duration, Instant};

pub struct S3Server {
    pub process: PeerProcess,
    pub port: u16,
    log: std::path::PathBuf,
}

impl S3Server {
    /// Start moto on `127.0.0.1:0` in `dir` (its log goes there) and wait until it answers.
    pub async fn start(dir: &Path) -> S3Server {
        let python = which("python3");
        let args = ["-m", "moto.server", "-H", "127.0.0.1", "-p", "0"].map(String::from);
        let mut process = PeerProcess::spawn("moto_server", &python, &args, dir);
        let log = dir.join("moto_server.log");
        let deadline = Instant::now() + Duration::from_secs(60);
        let port = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(port) = text
                .split("Running on http://127.0.0.1:")
                .nth(1)
                .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|p| p.parse::<u16>().ok())
            {
                break port;
            }
            if let Ok(Some(status)) = process.child.try_wait() {
                panic!(
                    "moto_server exited ({status}); install it with `pip install 'moto[server]'` \
                     (or `bash .ci/run`)\n{}",
                    process.log_tail()
                );
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not start\n{}",
                process.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        process.wait_for_port(port).await;
        S3Server { process, port, log }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `CreateBucket` (path style, unsigned: moto does not check signatures).
    pub async fn create_bucket(&self, bucket: &str) {
        let r = super::http::request(self.port, "PUT", &format!("/{bucket}"), &[], b"").await;
        assert_eq!(r.status, 200, "CreateBucket {bucket}: {}", r.text());
    }

    /// The gateway's `[storage]` lines for `s3://bucket/prefix` on this server.
    pub fn storage_toml(&self, bucket: &str, prefix: &str) -> String {
        format!(
            "[storage]\nblobs = \"s3://{bucket}/{prefix}\"\n[storage.s3]\nendpoint = \"{}\"\n\
             region = \"us-east-1\"\naccess_key_id = \"test\"\nsecret_access_key = \"test\"\n\
             allow_http = true\ntimeout_secs = 5\nconnect_timeout_secs = 2\nmax_retries = 1\n\
             orphan_grace_secs = 0\n",
            self.endpoint()
        )
    }

    /// A client onto `bucket`, to look at the objects.
    pub fn client(&self, bucket: &str) -> AmazonS3 {
        AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_endpoint(self.endpoint())
            .with_region("us-east-1")
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .with_allow_http(true)
            .build()
            .expect("S3 client")
    }

    /// Stop the server (kill and reap): the bucket is unreachable from then on.
    pub fn kill(&mut self) {
        let _ = self.process.child.kill();
        let _ = self.process.child.wait();
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text[text.len().saturating_sub(4000)..].to_string()
    }
}

/// Every object key under `prefix` (the part after `prefix/`), sorted.
pub async fn list(client: &AmazonS3, prefix: &str) -> Vec<String> {
    use futures::TryStreamExt;
    let p = ObjectPath::from(prefix);
    let mut keys: Vec<String> = client
        .list(Some(&p))
        .map_ok(|m| {
            m.location
                .as_ref()
                .strip_prefix(&format!("{prefix}/"))
                .unwrap_or(m.location.as_ref())
                .to_string()
        })
        .try_collect()
        .await
        .expect("list objects");
    keys.sort();
    keys
}

/// The bytes of one object.
pub async fn get(client: &AmazonS3, prefix: &str, key: &str) -> Vec<u8> {
    client
        .get(&ObjectPath::from(format!("{prefix}/{key}")))
        .await
        .expect("get object")
        .bytes()
        .await
        .expect("object bytes")
        .to_vec()
}

fn which(program: &str) -> std::path::PathBuf {
    let out = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .expect("sh");
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(!path.is_empty(), "{program} is not installed");
    path.into()
}
