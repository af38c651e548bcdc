//! mock-gitlab next to collabora's `gitlab-runner-mock` (crates.io; the
//! coordinator mock behind the `gitlab-runner` crate's own tests): the same
//! raw-HTTP probes, written as a runner or a test driver would send them, go
//! to both, and each probe's verdict is asserted per coordinator. Ours must
//! support every feature; theirs is pinned to what it does today, so this
//! fails if either side changes. The table it prints is the one in the
//! README (mock-gitlab: REST API, …). The real gitlab-runner against theirs is in
//! suites/tests/mock_features_real_runner.rs (it needs the forged binary).

mod common;

use std::time::Duration;

use common::{Lab, header, temp_fixture};
use gitlab_runner_mock::{GitlabRunnerMock, MockJobStepName, MockJobStepWhen};
use mock_gitlab::RunnerSpec;
use reqwest::{Client, Response};
use serde_json::{Value, json};

const PROJECT: &str = "group/cmp";
const CI: &str = "job:\n  script:\n    - echo hello\n";
const BOUNDARY: &str = "cmpBoundary7";
/// An upper bound for anything that should be immediate; never a wait.
const DEADLINE: Duration = Duration::from_secs(10);

enum Kind {
    Ours {
        lab: Lab,
        token: String,
        _fixture: tempfile::TempDir,
    },
    Theirs(GitlabRunnerMock),
}

/// One coordinator under test, behind the few hooks a probe needs beyond HTTP
/// (queueing and cancelling a job are the test driver's side of each mock).
struct Coord {
    kind: Kind,
    http: Client,
}

/// A job as handed out by `POST /jobs/request`.
struct Job {
    id: u64,
    token: String,
    payload: Value,
}

impl Coord {
    async fn ours() -> Coord {
        // A long hold, so a held request can only end early by a queued job.
        let lab = Lab::start_with(|c| c.long_poll = Duration::from_secs(60)).await;
        let fixture = temp_fixture(CI);
        lab.mock.add_project(PROJECT, fixture.path()).unwrap();
        let token = lab.mock.create_runner(RunnerSpec::default()).token;
        Coord {
            kind: Kind::Ours {
                lab,
                token,
                _fixture: fixture,
            },
            http: client(),
        }
    }

    async fn theirs() -> Coord {
        Coord {
            kind: Kind::Theirs(GitlabRunnerMock::start().await),
            http: client(),
        }
    }

    /// `http://127.0.0.1:<port>`, no trailing slash.
    fn base(&self) -> String {
        match &self.kind {
            Kind::Ours { lab, .. } => lab.mock.local_url(),
            Kind::Theirs(m) => m.uri().as_str().trim_end_matches('/').to_string(),
        }
    }

    fn api(&self, path: &str) -> String {
        format!("{}/api/v4{path}", self.base())
    }

    fn runner_token(&self) -> String {
        match &self.kind {
            Kind::Ours { token, .. } => token.clone(),
            Kind::Theirs(m) => m.runner_token().to_string(),
        }
    }

    /// Queue one job whose script is `echo hello`.
    fn queue_job(&self) {
        match &self.kind {
            Kind::Ours { lab, .. } => {
                lab.mock.create_pipeline(PROJECT, "main").unwrap();
            }
            Kind::Theirs(m) => {
                let mut b = m.job_builder("job".into());
                b.add_step(
                    MockJobStepName::Script,
                    vec!["echo hello".into()],
                    3600,
                    MockJobStepWhen::OnSuccess,
                    false,
                );
                m.enqueue_job(b.build());
            }
        }
    }

    /// Cancel from the driver's side; `false` when the mock cannot do it.
    fn cancel(&self, id: u64, graceful: bool) -> bool {
        match &self.kind {
            Kind::Ours { lab, .. } => {
                lab.mock.cancel_job(id, graceful).unwrap();
                true
            }
            // `MockJob::cancel` is the only cancel there is: forced, no `canceling`.
            Kind::Theirs(_) if graceful => false,
            Kind::Theirs(m) => {
                m.get_job(id).expect("job").cancel();
                true
            }
        }
    }

    /// Job requests being held right now, if the mock can tell.
    fn held_requests(&self) -> Option<u64> {
        match &self.kind {
            Kind::Ours { lab, .. } => Some(lab.mock.runners().iter().map(|r| r.long_polls).sum()),
            Kind::Theirs(_) => None,
        }
    }

    async fn request_job(&self, last_update: Option<&str>, refspecs: bool) -> Response {
        // What gitlab-runner 19 sends (theirs asserts the system_id shape).
        let mut body = json!({
            "token": self.runner_token(),
            "system_id": "s_0123456789ab",
            "info": {"name": "gitlab-runner", "version": "19.4.0", "executor": "shell",
                     "features": {"refspecs": refspecs, "trace_checksum": true}},
        });
        if let Some(l) = last_update {
            body["last_update"] = json!(l);
        }
        self.http
            .post(self.api("/jobs/request"))
            .json(&body)
            .send()
            .await
            .expect("job request")
    }

    /// Queue a job and take it as a runner would.
    async fn running_job(&self) -> Job {
        self.queue_job();
        let r = self.request_job(None, true).await;
        assert_eq!(r.status(), 201, "no job handed out");
        let payload: Value = r.json().await.unwrap();
        Job {
            id: payload["id"].as_u64().unwrap(),
            token: payload["token"].as_str().unwrap().to_string(),
            payload,
        }
    }

    async fn put_job(&self, id: u64, token: &str, state: &str) -> Response {
        self.http
            .put(self.api(&format!("/jobs/{id}")))
            .json(&json!({"token": token, "state": state}))
            .send()
            .await
            .expect("put")
    }

    async fn patch_trace(&self, id: u64, token: &str, range: &str, data: &[u8]) -> Response {
        self.http
            .patch(self.api(&format!("/jobs/{id}/trace")))
            .header("JOB-TOKEN", token)
            .header("Content-Type", "text/plain")
            .header("Content-Range", range)
            .body(data.to_vec())
            .send()
            .await
            .expect("patch")
    }

    async fn upload(&self, id: u64, token: &str, query: &str, body: Vec<u8>) -> Response {
        self.http
            .post(self.api(&format!("/jobs/{id}/artifacts?{query}")))
            .header("JOB-TOKEN", token)
            .header(
                "Content-Type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(body)
            .send()
            .await
            .expect("upload")
    }

    async fn download(&self, id: u64, token: &str, range: Option<&str>) -> Response {
        let mut rq = self
            .http
            .get(self.api(&format!("/jobs/{id}/artifacts")))
            .header("JOB-TOKEN", token);
        if let Some(r) = range {
            rq = rq.header("Range", r);
        }
        rq.send().await.expect("download")
    }
}

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

fn h(r: &Response, name: &str) -> String {
    header(r, name).unwrap_or_else(|| "-".into())
}

/// A multipart body: the `file` part, after optional plain form fields.
fn multipart(fields: &[(&str, &str)], data: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    for (k, v) in fields {
        b.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    b.extend_from_slice(
        format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"artifacts.zip\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
    );
    b.extend_from_slice(data);
    b.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    b
}

// ---- the probes: each starts from a fresh coordinator and returns a verdict ----

/// Legacy registration (`gitlab-runner register --registration-token`).
async fn register(c: &Coord) -> String {
    let r = c
        .http
        .post(c.api("/runners"))
        .json(&json!({"token": "reg-token-123", "description": "cmp", "info": {}}))
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    let token = if v["token"].is_string() {
        "token issued"
    } else {
        "no token"
    };
    format!("{s}, {token}")
}

/// `gitlab-runner verify` / the start-up check of a `glrt-` runner.
async fn verify(c: &Coord) -> String {
    let r = c
        .http
        .post(c.api("/runners/verify"))
        .json(&json!({"token": c.runner_token(), "system_id": "s_0123456789ab"}))
        .send()
        .await
        .unwrap();
    r.status().as_u16().to_string()
}

/// An empty queue: 204, and the queue version the runner should long-poll on.
async fn no_job(c: &Coord) -> String {
    let r = c.request_job(None, true).await;
    format!(
        "{}, X-GitLab-Last-Update: {}",
        r.status().as_u16(),
        if header(&r, "x-gitlab-last-update").is_some() {
            "set"
        } else {
            "-"
        }
    )
}

/// A request carrying the current `last_update` must be held until a job is
/// queued (GitLab's Workhorse long polling).
async fn long_poll(c: &Coord) -> String {
    let first = c.request_job(None, true).await;
    let lu = header(&first, "x-gitlab-last-update").unwrap_or_else(|| "1".into());
    let req = c.request_job(Some(&lu), true);
    tokio::pin!(req);
    // Either the request ends (not held) or the mock reports it held.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        tokio::select! {
            r = &mut req => return format!("answered at once: {}", r.status().as_u16()),
            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
        if c.held_requests().unwrap_or(0) > 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "request neither answered nor held"
        );
    }
    c.queue_job();
    let r = tokio::time::timeout(DEADLINE, req)
        .await
        .expect("held request not woken by the queued job");
    format!("held; woken by a queued job: {}", r.status().as_u16())
}

/// A runner that does not announce `features.refspecs` (older runners,
/// collabora's library before 0.3) while a job is pending.
async fn no_refspecs(c: &Coord) -> String {
    c.queue_job();
    c.request_job(None, false)
        .await
        .status()
        .as_u16()
        .to_string()
}

/// `PUT /jobs/:id` keep-alive: status and the headers the runner acts on.
async fn update_headers(c: &Coord) -> String {
    let j = c.running_job().await;
    let r = c.put_job(j.id, &j.token, "running").await;
    format!(
        "{}, Job-Status: {}, X-GitLab-Trace-Update-Interval: {}",
        r.status().as_u16(),
        h(&r, "job-status"),
        h(&r, "x-gitlab-trace-update-interval")
    )
}

/// An accepted trace PATCH.
async fn trace_append(c: &Coord) -> String {
    let j = c.running_job().await;
    let r = c.patch_trace(j.id, &j.token, "0-4", b"hello").await;
    format!(
        "{}, Range: {}, Job-Status: {}, Interval: {}",
        r.status().as_u16(),
        h(&r, "range"),
        h(&r, "job-status"),
        h(&r, "x-gitlab-trace-update-interval")
    )
}

/// A PATCH that does not start where the trace ends: 416, and `Range` tells
/// the runner where to resume (without it the runner restarts from 0).
async fn trace_wrong_range(c: &Coord) -> String {
    let j = c.running_job().await;
    assert_eq!(
        c.patch_trace(j.id, &j.token, "0-4", b"hello")
            .await
            .status(),
        202
    );
    let r = c.patch_trace(j.id, &j.token, "10-14", b"world").await;
    format!("{}, Range: {}", r.status().as_u16(), h(&r, "range"))
}

/// Wrong job tokens on update, trace and artifact download.
async fn job_token_checks(c: &Coord) -> String {
    let j = c.running_job().await;
    let put = c.put_job(j.id, "wrong", "running").await.status().as_u16();
    let patch = c
        .patch_trace(j.id, "wrong", "0-0", b"x")
        .await
        .status()
        .as_u16();
    let get = c.download(j.id, "wrong", None).await.status().as_u16();
    format!("PUT {put}, PATCH {patch}, GET artifacts {get}")
}

/// Graceful cancel: the runner must see `Job-Status: canceling` (it then
/// stops the script and runs `after_script`).
async fn graceful_cancel(c: &Coord) -> String {
    let j = c.running_job().await;
    if !c.cancel(j.id, true) {
        return "no graceful cancel".into();
    }
    let r = c.put_job(j.id, &j.token, "running").await;
    format!(
        "{}, Job-Status: {}",
        r.status().as_u16(),
        h(&r, "job-status")
    )
}

/// Forced cancel: 403 with `Job-Status: canceled` on update and trace.
async fn forced_cancel(c: &Coord) -> String {
    let j = c.running_job().await;
    assert!(c.cancel(j.id, false));
    let put = c.put_job(j.id, &j.token, "running").await;
    let patch = c.patch_trace(j.id, &j.token, "0-0", b"x").await;
    format!(
        "PUT {} {}, PATCH {} {}",
        put.status().as_u16(),
        h(&put, "job-status"),
        patch.status().as_u16(),
        h(&patch, "job-status")
    )
}

/// Upload as gitlab-runner does (one `file` part; `artifact_type` and
/// `artifact_format` in the query string), then download as a dependent job.
async fn artifacts_as_runner(c: &Coord) -> String {
    let j = c.running_job().await;
    let up = c
        .upload(
            j.id,
            &j.token,
            "artifact_type=archive&artifact_format=zip",
            multipart(&[], b"PK-artifact-bytes"),
        )
        .await
        .status()
        .as_u16();
    let down = c.download(j.id, &j.token, None).await;
    let status = down.status().as_u16();
    let body = down.bytes().await.unwrap();
    let same = if body.as_ref() == b"PK-artifact-bytes" {
        "same bytes"
    } else {
        "no bytes"
    };
    format!("upload {up}, download {status} ({same})")
}

/// A ranged artifact download (resumed downloads). The type is sent both
/// ways so each mock stores it as an archive.
async fn artifacts_range(c: &Coord) -> String {
    let j = c.running_job().await;
    let data: Vec<u8> = (0..100u8).collect();
    let up = c
        .upload(
            j.id,
            &j.token,
            "artifact_type=archive&artifact_format=zip",
            multipart(
                &[("artifact_type", "archive"), ("artifact_format", "zip")],
                &data,
            ),
        )
        .await;
    assert_eq!(up.status(), 201);
    let r = c.download(j.id, &j.token, Some("bytes=10-19")).await;
    let status = r.status().as_u16();
    let cr = h(&r, "content-range");
    let len = r.bytes().await.unwrap().len();
    format!("{status}, Content-Range: {cr}, {len} bytes")
}

/// The payload's `repo_url`: does the coordinator serve it (smart HTTP)?
async fn git(c: &Coord) -> String {
    let j = c.running_job().await;
    let repo = j.payload["git_info"]["repo_url"]
        .as_str()
        .unwrap()
        .to_string();
    let url = url::Url::parse(&repo).unwrap();
    let base = url::Url::parse(&c.base()).unwrap();
    if url.host() != base.host() || url.port_or_known_default() != base.port_or_known_default() {
        // Not ours to contact (no network here): ask the coordinator for the
        // same path instead.
        let here = format!(
            "{}{}/info/refs?service=git-upload-pack",
            c.base(),
            url.path()
        );
        let s = c.http.get(here).send().await.unwrap().status().as_u16();
        return format!("repo_url {repo} (elsewhere); same path here: {s}");
    }
    // The URL carries gitlab-ci-token:<job token>, which reqwest sends as Basic auth.
    let r = c
        .http
        .get(format!("{repo}/info/refs?service=git-upload-pack"))
        .send()
        .await
        .unwrap();
    let ct = h(&r, "content-type");
    format!(
        "repo_url on the coordinator; info/refs {} {ct}",
        r.status().as_u16()
    )
}

/// A pipeline from a `.gitlab-ci.yml` through the REST API (test drivers).
async fn rest_pipeline(c: &Coord) -> String {
    let token = match &c.kind {
        Kind::Ours { lab, .. } => lab.mock.admin_token(),
        Kind::Theirs(_) => "admin".into(),
    };
    let r = c
        .http
        .post(c.api("/projects/group%2Fcmp/pipeline?ref=main"))
        .header("PRIVATE-TOKEN", token)
        .send()
        .await
        .unwrap();
    r.status().as_u16().to_string()
}

/// A body that is not JSON on `PUT /jobs/:id`.
async fn malformed_update(c: &Coord) -> String {
    let j = c.running_job().await;
    match c
        .http
        .put(c.api(&format!("/jobs/{}", j.id)))
        .header("Content-Type", "application/json")
        .body("{not json")
        .send()
        .await
    {
        Ok(r) => r.status().as_u16().to_string(),
        // Theirs unwraps the parse inside its responder: the panic drops the
        // connection (its message shows in this test's output).
        Err(e) if e.is_request() => "connection dropped (responder panicked)".into(),
        Err(e) => format!("error: {e}"),
    }
}

type Verdict<'a> = std::pin::Pin<Box<dyn Future<Output = String> + 'a>>;
type Probe = for<'a> fn(&'a Coord) -> Verdict<'a>;

macro_rules! probe {
    ($f:ident) => {{
        fn p(c: &Coord) -> Verdict<'_> {
            Box::pin($f(c))
        }
        p as Probe
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_probes_against_both_coordinators() {
    // (feature, probe, verdict of mock-gitlab, verdict of gitlab-runner-mock 0.3.2)
    let rows: Vec<(&str, Probe, &str, &str)> = vec![
        (
            "register (POST /runners)",
            probe!(register),
            "201, token issued",
            "404, no token",
        ),
        (
            "verify (POST /runners/verify)",
            probe!(verify),
            "200",
            "404",
        ),
        (
            "job request, empty queue",
            probe!(no_job),
            "204, X-GitLab-Last-Update: set",
            "204, X-GitLab-Last-Update: -",
        ),
        (
            "long poll (last_update current)",
            probe!(long_poll),
            "held; woken by a queued job: 201",
            "answered at once: 204",
        ),
        (
            "job request without features.refspecs",
            probe!(no_refspecs),
            "201",
            "204",
        ),
        (
            "PUT /jobs/:id headers",
            probe!(update_headers),
            "200, Job-Status: running, X-GitLab-Trace-Update-Interval: 3",
            "200, Job-Status: running, X-GitLab-Trace-Update-Interval: -",
        ),
        (
            "trace PATCH accepted",
            probe!(trace_append),
            "202, Range: 0-5, Job-Status: running, Interval: 3",
            "202, Range: -, Job-Status: running, Interval: 3",
        ),
        (
            "trace PATCH, wrong Content-Range",
            probe!(trace_wrong_range),
            "416, Range: 0-5",
            "416, Range: -",
        ),
        (
            "job token checks",
            probe!(job_token_checks),
            "PUT 403, PATCH 403, GET artifacts 403",
            "PUT 403, PATCH 403, GET artifacts 403",
        ),
        (
            "graceful cancel",
            probe!(graceful_cancel),
            "200, Job-Status: canceling",
            "no graceful cancel",
        ),
        (
            "forced cancel",
            probe!(forced_cancel),
            "PUT 403 canceled, PATCH 403 canceled",
            "PUT 403 canceled, PATCH 403 canceled",
        ),
        (
            "artifacts up/down as the runner sends them",
            probe!(artifacts_as_runner),
            "upload 201, download 200 (same bytes)",
            "upload 201, download 404 (no bytes)",
        ),
        (
            "artifact download with Range",
            probe!(artifacts_range),
            "206, Content-Range: bytes 10-19/100, 10 bytes",
            "200, Content-Range: -, 100 bytes",
        ),
        (
            "git repo behind the payload's repo_url",
            probe!(git),
            "repo_url on the coordinator; info/refs 200 application/x-git-upload-pack-advertisement",
            "repo_url https://bla/dummy.git (elsewhere); same path here: 404",
        ),
        (
            "REST: pipeline from .gitlab-ci.yml",
            probe!(rest_pipeline),
            "201",
            "404",
        ),
        (
            "malformed JSON on PUT /jobs/:id",
            probe!(malformed_update),
            "400",
            "connection dropped (responder panicked)",
        ),
    ];

    let mut table =
        String::from("| feature | mock-gitlab | gitlab-runner-mock 0.3.2 |\n| --- | --- | --- |\n");
    let mut mismatches = Vec::new();
    for (feature, probe, want_ours, want_theirs) in rows {
        // A fresh coordinator per probe, so no probe sees another's jobs.
        let ours = probe(&Coord::ours().await).await;
        let theirs = probe(&Coord::theirs().await).await;
        table.push_str(&format!("| {feature} | {ours} | {theirs} |\n"));
        if ours != want_ours {
            mismatches.push(format!(
                "{feature}: mock-gitlab gave {ours:?}, want {want_ours:?}"
            ));
        }
        if theirs != want_theirs {
            mismatches.push(format!(
                "{feature}: gitlab-runner-mock gave {theirs:?}, want {want_theirs:?}"
            ));
        }
    }
    eprintln!("{table}");
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
