//! Shared helpers: a mock in a temporary directory and a fake runner client
//! speaking the runner protocol over HTTP (reqwest).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use mock_gitlab::{Config, MockGitlab};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

pub struct Lab {
    pub mock: MockGitlab,
    pub http: reqwest::Client,
    _dir: tempfile::TempDir,
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/projects")
        .join(name)
}

/// A fixture directory made on the fly with one `.gitlab-ci.yml`.
pub fn temp_fixture(ci_yml: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::write(d.path().join(".gitlab-ci.yml"), ci_yml).expect("write ci yml");
    d
}

impl Lab {
    pub async fn start() -> Lab {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(f: impl FnOnce(&mut Config)) -> Lab {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = Config {
            data_dir: dir.path().to_path_buf(),
            registration_token: "reg-token-123".into(),
            ..Config::default()
        };
        f(&mut cfg);
        let mock = MockGitlab::start(cfg).await.expect("start mock");
        Lab {
            mock,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client"),
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/api/v4{path}", self.mock.local_url())
    }

    pub async fn post(&self, path: &str, body: Value) -> Response {
        self.http
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    /// One job request as the runner sends it.
    pub async fn request_job(&self, token: &str, last_update: Option<&str>) -> Response {
        let mut body = json!({
            "info": {
                "name": "gitlab-runner", "version": "19.4.0", "executor": "shell",
                "features": {"trace_checksum": true, "refspecs": true, "image": false}
            },
            "token": token,
            "system_id": "s_0123456789ab",
        });
        if let Some(l) = last_update {
            body["last_update"] = json!(l);
        }
        self.post("/jobs/request", body).await
    }

    /// Request until a job arrives (each answer must be 201 or 204).
    pub async fn take_job(&self, token: &str) -> Value {
        for _ in 0..50 {
            let r = self.request_job(token, None).await;
            match r.status() {
                StatusCode::CREATED => return r.json().await.expect("job json"),
                StatusCode::NO_CONTENT => tokio::task::yield_now().await,
                s => panic!("unexpected job request status {s}"),
            }
        }
        panic!("no job was handed out");
    }

    pub async fn put_job(&self, id: u64, body: Value) -> Response {
        self.http
            .put(self.url(&format!("/jobs/{id}")))
            .json(&body)
            .send()
            .await
            .expect("put")
    }

    pub async fn patch_trace(
        &self,
        id: u64,
        token: &str,
        range: Option<&str>,
        data: &[u8],
    ) -> Response {
        let mut req = self
            .http
            .patch(self.url(&format!("/jobs/{id}/trace?debug_trace=false")))
            .header("JOB-TOKEN", token)
            .header("Content-Type", "text/plain")
            .body(data.to_vec());
        if let Some(r) = range {
            req = req.header("Content-Range", r);
        }
        req.send().await.expect("patch")
    }
}

pub fn header(r: &Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

pub fn crc(bytes: &[u8]) -> String {
    format!("crc32:{:08x}", crc32fast_hash(bytes))
}

/// CRC-32 IEEE, written out here so the tests check the mock against an
/// independent implementation.
fn crc32fast_hash(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            let mask = (!(crc & 1)).wrapping_add(1);
            crc = (crc >> 1) ^ (0xedb8_8320 & mask);
        }
    }
    !crc
}

/// The real git client, isolated from this host's configuration and never prompting.
pub async fn git(dir: &Path, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "/bin/false")
        .env_remove("GIT_DIR")
        .output()
        .await
        .expect("run git")
}

/// The trimmed stdout of a git command that must have succeeded.
pub fn ok(o: &std::process::Output) -> String {
    assert!(
        o.status.success(),
        "git failed: {}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}
