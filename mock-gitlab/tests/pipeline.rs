//! Stage ordering, failure propagation, `when:`, `allow_failure`, lint
//! errors with positions, and wait_pipeline.

mod common;

use std::time::Duration;

use common::{Lab, crc, fixture, temp_fixture};
use mock_gitlab::{JobStatus, PipelineStatus, RunnerSpec};
use serde_json::{Value, json};

/// Finish a dispatched job the way the runner does.
async fn finish(lab: &Lab, job: &Value, state: &str, exit_code: Option<i32>) {
    let id = job["id"].as_u64().unwrap();
    let token = job["token"].as_str().unwrap();
    let trace = format!("running {}\n", job["job_info"]["name"]);
    let r = lab
        .patch_trace(
            id,
            token,
            Some(&format!("0-{}", trace.len() - 1)),
            trace.as_bytes(),
        )
        .await;
    assert_eq!(r.status(), 202);
    let mut body = json!({"token": token, "state": state,
        "output": {"checksum": crc(trace.as_bytes()), "bytesize": trace.len()}});
    if state == "failed" {
        body["failure_reason"] = json!("script_failure");
    }
    if let Some(c) = exit_code {
        body["exit_code"] = json!(c);
    }
    let r = lab.put_job(id, body).await;
    assert_eq!(r.status(), 200);
}

const STAGED: &str = r#"
stages: [build, test, deploy]
compile:
  stage: build
  script: make
unit:
  stage: test
  script: make test
lint:
  stage: test
  allow_failure: true
  script: make lint
ship:
  stage: deploy
  script: make ship
cleanup:
  stage: deploy
  when: always
  script: make clean
on-fail:
  stage: deploy
  when: on_failure
  script: echo failed
manual:
  stage: deploy
  when: manual
  script: echo manual
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stages_run_in_order_and_allow_failure_does_not_fail() {
    let fx = temp_fixture(STAGED);
    let lab = Lab::start().await;
    lab.mock.add_project("group/staged", fx.path()).unwrap();
    let runner = lab.mock.create_runner(RunnerSpec::default());
    let pid = lab.mock.create_pipeline("group/staged", "main").unwrap();

    let p = lab.mock.pipeline(pid);
    assert_eq!(p.status, PipelineStatus::Pending);
    assert_eq!(p.job("compile").unwrap().status, JobStatus::Pending);
    assert_eq!(p.job("unit").unwrap().status, JobStatus::Created);

    let j = lab.take_job(&runner.token).await;
    assert_eq!(j["job_info"]["name"], "compile");
    assert_eq!(lab.request_job(&runner.token, None).await.status(), 204);
    finish(&lab, &j, "success", None).await;

    let a = lab.take_job(&runner.token).await;
    let b = lab.take_job(&runner.token).await;
    let mut names = vec![a["job_info"]["name"].clone(), b["job_info"]["name"].clone()];
    names.sort_by_key(|v| v.to_string());
    assert_eq!(names, vec![json!("lint"), json!("unit")]);
    let (unit, lint) = if a["job_info"]["name"] == "unit" {
        (a, b)
    } else {
        (b, a)
    };
    finish(&lab, &lint, "failed", Some(1)).await;
    // Deploy waits for the whole test stage.
    assert_eq!(lab.request_job(&runner.token, None).await.status(), 204);
    finish(&lab, &unit, "success", None).await;

    let mut deploy = vec![];
    for _ in 0..2 {
        let j = lab.take_job(&runner.token).await;
        deploy.push(j["job_info"]["name"].as_str().unwrap().to_string());
        finish(&lab, &j, "success", None).await;
    }
    deploy.sort();
    assert_eq!(deploy, vec!["cleanup", "ship"]);

    let p = lab
        .mock
        .wait_pipeline(pid, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(p.status, PipelineStatus::Success);
    assert_eq!(p.job("on-fail").unwrap().status, JobStatus::Skipped);
    assert_eq!(p.job("manual").unwrap().status, JobStatus::Skipped);
    let lint = p.job("lint").unwrap();
    assert_eq!(lint.status, JobStatus::Failed);
    assert_eq!(lint.failure_reason.as_deref(), Some("script_failure"));
    assert_eq!(lint.exit_code, Some(1));
    assert!(lint.allow_failure);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failure_skips_later_on_success_jobs_but_runs_always_and_on_failure() {
    let fx = temp_fixture(STAGED);
    let lab = Lab::start().await;
    lab.mock.add_project("group/staged", fx.path()).unwrap();
    let runner = lab.mock.create_runner(RunnerSpec::default());
    let pid = lab.mock.create_pipeline("group/staged", "main").unwrap();

    let j = lab.take_job(&runner.token).await;
    finish(&lab, &j, "failed", Some(2)).await;

    let mut ran = vec![];
    for _ in 0..2 {
        let j = lab.take_job(&runner.token).await;
        ran.push(j["job_info"]["name"].as_str().unwrap().to_string());
        finish(&lab, &j, "success", None).await;
    }
    ran.sort();
    assert_eq!(ran, vec!["cleanup", "on-fail"]);
    assert_eq!(lab.request_job(&runner.token, None).await.status(), 204);

    let p = lab
        .mock
        .wait_pipeline(pid, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(p.status, PipelineStatus::Failed);
    for skipped in ["unit", "lint", "ship", "manual"] {
        assert_eq!(
            p.job(skipped).unwrap().status,
            JobStatus::Skipped,
            "{skipped}"
        );
    }
    assert_eq!(p.job("compile").unwrap().exit_code, Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wait_pipeline_times_out_naming_unfinished_jobs() {
    let lab = Lab::start().await;
    lab.mock
        .add_project("group/hello", &fixture("hello"))
        .unwrap();
    let pid = lab.mock.create_pipeline("group/hello", "main").unwrap();
    let err = lab
        .mock
        .wait_pipeline(pid, Duration::from_millis(200))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("hello (pending"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wait_pipeline_is_woken_by_the_final_update() {
    let lab = Lab::start().await;
    let runner = lab.mock.create_runner(RunnerSpec::default());
    lab.mock
        .add_project("group/hello", &fixture("hello"))
        .unwrap();
    let pid = lab.mock.create_pipeline("group/hello", "main").unwrap();
    let waiter = {
        let mock = lab.mock.clone();
        tokio::spawn(async move { mock.wait_pipeline(pid, Duration::from_secs(30)).await })
    };
    let j = lab.take_job(&runner.token).await;
    finish(&lab, &j, "success", None).await;
    let p = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("wait_pipeline was not woken")
        .unwrap()
        .unwrap();
    assert_eq!(p.status, PipelineStatus::Success);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lint_errors_name_file_line_and_column() {
    let lab = Lab::start().await;
    lab.mock
        .add_project("group/malformed", &fixture("malformed"))
        .unwrap();
    lab.mock
        .add_project("group/malformed-yaml", &fixture("malformed-yaml"))
        .unwrap();

    let e = lab
        .mock
        .create_pipeline("group/malformed", "main")
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        ".gitlab-ci.yml:6:1: jobs:build config should contain a script (add \"script:\" with at least one command)"
    );
    let e = lab
        .mock
        .create_pipeline("group/malformed-yaml", "main")
        .unwrap_err();
    let d = e.first().unwrap();
    assert_eq!(d.pos.map(|p| p.line), Some(6), "{e}");
    assert!(e.to_string().starts_with(".gitlab-ci.yml:6:"), "{e}");
    assert!(e.to_string().contains("YAML syntax error"), "{e}");

    let e = lab.mock.create_pipeline("group/nope", "main").unwrap_err();
    assert!(
        e.to_string().contains("project group/nope does not exist"),
        "{e}"
    );
    lab.mock
        .add_project("group/hello", &fixture("hello"))
        .unwrap();
    let e = lab
        .mock
        .create_pipeline("group/hello", "no-such-branch")
        .unwrap_err();
    assert!(e.to_string().contains("no-such-branch"), "{e}");
    let e = lab
        .mock
        .create_pipeline("group/hello", "--upload-pack=x")
        .unwrap_err();
    assert!(e.to_string().contains("cannot be resolved"), "{e}");
    assert!(lab.mock.jobs().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fixture_shas_are_deterministic() {
    let a = Lab::start().await;
    let b = Lab::start().await;
    let pa = a
        .mock
        .add_project("group/hello", &fixture("hello"))
        .unwrap();
    let pb = b.mock.add_project("x/y", &fixture("hello")).unwrap();
    assert_eq!(pa.sha, pb.sha);
    assert_eq!(pa.sha.len(), 40);
    assert!(
        a.mock
            .add_project("group/hello", &fixture("hello"))
            .is_err()
    );
    assert!(a.mock.add_project("../evil", &fixture("hello")).is_err());
    assert!(
        a.mock
            .add_project("group/x", &fixture("does-not-exist"))
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_releases_held_long_polls() {
    let lab = Lab::start_with(|c| c.long_poll = Duration::from_secs(60)).await;
    let runner = lab.mock.create_runner(RunnerSpec::default());
    let version = lab.mock.queue_version();
    let poll = {
        let http = lab.http.clone();
        let url = lab.url("/jobs/request");
        let body = json!({"token": runner.token, "last_update": version});
        tokio::spawn(async move { http.post(url).json(&body).send().await.map(|r| r.status()) })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while lab.mock.runners()[0].poll_count == 0 {
        assert!(std::time::Instant::now() < deadline);
        tokio::task::yield_now().await;
    }
    let t = std::time::Instant::now();
    lab.mock.clone().shutdown().await;
    let status = tokio::time::timeout(Duration::from_secs(5), poll)
        .await
        .expect("held poll not released")
        .unwrap()
        .unwrap();
    assert_eq!(status, 204);
    assert!(t.elapsed() < Duration::from_secs(5));
}
