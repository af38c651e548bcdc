//! Job requests: 204 + X-GitLab-Last-Update, long polling, exactly-once
//! assignment, payload shape, tag matching.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{Lab, fixture, header, temp_fixture};
use mock_gitlab::{JobStatus, PipelineStatus, RunnerSpec};
use reqwest::StatusCode;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_job_gives_204_with_last_update() {
    let lab = Lab::start().await;
    let runner = lab.mock.create_runner(RunnerSpec::default());

    let r = lab.request_job("glrt-nope", None).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    let r = lab.request_job(&runner.token, None).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let v1 = header(&r, "x-gitlab-last-update").expect("X-GitLab-Last-Update");
    assert_eq!(v1, lab.mock.queue_version());

    // A stale last_update is answered at once (no hold).
    let t = Instant::now();
    let r = lab.request_job(&runner.token, Some("stale")).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(t.elapsed() < Duration::from_secs(5));

    let rec = lab.mock.runners().into_iter().next().unwrap();
    assert_eq!(rec.poll_count, 2);
    assert_eq!(rec.features.get("trace_checksum"), Some(&true));
    assert_eq!(rec.features.get("image"), Some(&false));
    assert!(rec.system_ids.contains("s_0123456789ab"));
    assert_eq!(rec.version.as_deref(), Some("19.4.0"));

    // Queuing a job changes the version.
    lab.mock
        .add_project("group/hello", &fixture("hello"))
        .unwrap();
    lab.mock.create_pipeline("group/hello", "main").unwrap();
    assert_ne!(lab.mock.queue_version(), v1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn long_poll_holds_then_times_out() {
    let lab = Lab::start_with(|c| c.long_poll = Duration::from_millis(400)).await;
    let runner = lab.mock.create_runner(RunnerSpec::default());
    let version = lab.mock.queue_version();
    let t = Instant::now();
    let r = lab.request_job(&runner.token, Some(&version)).await;
    let elapsed = t.elapsed();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(
        elapsed >= Duration::from_millis(380),
        "returned after {elapsed:?}, expected a hold of ~400ms"
    );
    assert_eq!(header(&r, "x-gitlab-last-update"), Some(version));
    assert_eq!(lab.mock.runners()[0].long_polls, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn long_poll_wakes_immediately_when_a_job_is_queued() {
    let hold = Duration::from_secs(30);
    let lab = Lab::start_with(|c| c.long_poll = hold).await;
    let runner = lab.mock.create_runner(RunnerSpec::default());
    lab.mock
        .add_project("group/hello", &fixture("hello"))
        .unwrap();
    let version = lab.mock.queue_version();

    let started = Instant::now();
    let poll = {
        let http = lab.http.clone();
        let url = lab.url("/jobs/request");
        let body = serde_json::json!({"token": runner.token, "last_update": version});
        tokio::spawn(async move {
            let r = http.post(url).json(&body).send().await.unwrap();
            (r.status(), Instant::now(), r.json::<Value>().await.ok())
        })
    };
    // Wait (with a deadline, no fixed sleep) until the request reached the mock.
    let deadline = Instant::now() + Duration::from_secs(10);
    while lab.mock.runners()[0].poll_count == 0 {
        assert!(Instant::now() < deadline, "request never arrived");
        tokio::task::yield_now().await;
    }
    let queued_at = Instant::now();
    lab.mock.create_pipeline("group/hello", "main").unwrap();
    let (status, returned_at, body) = poll.await.unwrap();
    assert_eq!(status, StatusCode::CREATED);
    let wake = returned_at.duration_since(queued_at);
    assert!(
        wake < Duration::from_secs(2),
        "long poll took {wake:?} to wake after the job was queued (hold {hold:?})"
    );
    assert!(started.elapsed() < hold);
    assert_eq!(body.unwrap()["job_info"]["name"], "hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_once_assignment_with_8_concurrent_pollers() {
    let jobs: String = (0..12)
        .map(|i| format!("job{i}:\n  script: echo {i}\n"))
        .collect();
    let fx = temp_fixture(&jobs);
    let lab = Lab::start_with(|c| c.long_poll = Duration::from_secs(2)).await;
    lab.mock.add_project("group/many", fx.path()).unwrap();
    let runners: Vec<_> = (0..8)
        .map(|i| {
            lab.mock.create_runner(RunnerSpec {
                description: format!("r{i}"),
                tags: vec![],
                run_untagged: true,
            })
        })
        .collect();
    // All pollers first park in a long poll, then the pipeline is created.
    let version = lab.mock.queue_version();
    let mut tasks = Vec::new();
    for r in &runners {
        let http = lab.http.clone();
        let mock = lab.mock.clone();
        let url = lab.url("/jobs/request");
        let token = r.token.clone();
        let version = version.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            let mut last = version;
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                assert!(Instant::now() < deadline, "pollers did not drain the queue");
                let body = serde_json::json!({"token": token, "last_update": last});
                let r = http.post(&url).json(&body).send().await.unwrap();
                match r.status() {
                    StatusCode::CREATED => {
                        let v: Value = r.json().await.unwrap();
                        got.push(v["id"].as_u64().unwrap());
                    }
                    StatusCode::NO_CONTENT => {
                        if let Some(l) = common::header(&r, "x-gitlab-last-update") {
                            last = l;
                        }
                        // Stop once the pipeline exists and nothing is pending.
                        let jobs = mock.jobs();
                        if !jobs.is_empty() && jobs.iter().all(|j| j.status != JobStatus::Pending) {
                            break;
                        }
                    }
                    s => panic!("unexpected status {s}"),
                }
            }
            got
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while lab.mock.runners().iter().any(|r| r.poll_count == 0) {
        assert!(Instant::now() < deadline, "pollers never arrived");
        tokio::task::yield_now().await;
    }
    let pid = lab.mock.create_pipeline("group/many", "main").unwrap();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let unique: HashSet<u64> = all.iter().copied().collect();
    assert_eq!(
        all.len(),
        unique.len(),
        "a job was handed out twice: {all:?}"
    );
    assert_eq!(unique.len(), 12, "not every job was handed out: {all:?}");
    let p = lab.mock.pipeline(pid);
    assert!(p.jobs.iter().all(|j| j.status == JobStatus::Running));
    let runners_used: HashSet<u64> = p.jobs.iter().filter_map(|j| j.runner_id).collect();
    assert!(!runners_used.is_empty());
    assert_eq!(p.status, PipelineStatus::Running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn payload_is_what_the_runner_expects() {
    let lab = Lab::start_with(|c| c.external_host = Some("10.0.2.2".into())).await;
    let runner = lab.mock.create_runner(RunnerSpec::default());
    let project = lab
        .mock
        .add_project("group/hello", &fixture("hello"))
        .unwrap();
    let pid = lab.mock.create_pipeline("group/hello", "main").unwrap();

    let r = lab.request_job(&runner.token, None).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        header(&r, "content-type").as_deref(),
        Some("application/json")
    );
    let text = r.text().await.unwrap();
    for forbidden in ["\"run\"", "\"inputs\"", "\"secrets\""] {
        assert!(!text.contains(forbidden), "payload contains {forbidden}");
    }
    let v: Value = serde_json::from_str(&text).unwrap();
    let id = v["id"].as_u64().unwrap();
    let token = v["token"].as_str().unwrap();
    let port = lab.mock.local_url().rsplit(':').next().unwrap().to_string();
    assert_eq!(
        v["git_info"]["repo_url"],
        format!("http://gitlab-ci-token:{token}@10.0.2.2:{port}/group/hello.git")
    );
    let sha = v["git_info"]["sha"].as_str().unwrap();
    assert_eq!(sha, project.sha);
    assert_eq!(sha.len(), 40);
    assert!(sha.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(
        v["git_info"]["refspecs"],
        serde_json::json!([
            format!("+{sha}:refs/pipelines/{}", pid.0),
            "+refs/heads/main:refs/remotes/origin/main"
        ])
    );
    assert_eq!(v["git_info"]["depth"], 20);
    assert_eq!(v["git_info"]["ref_type"], "branch");
    assert_eq!(v["runner_info"]["timeout"], 3600);
    assert_eq!(
        v["steps"][0]["script"],
        serde_json::json!(["echo \"hello from runnerlab\"", "cat README.md"])
    );
    assert!(v["image"].is_null());
    for k in [
        "services",
        "artifacts",
        "cache",
        "credentials",
        "dependencies",
    ] {
        assert_eq!(v[k], serde_json::json!([]), "{k}");
    }
    assert!(
        v["features"]["failure_reasons"]
            .as_array()
            .unwrap()
            .contains(&"job_execution_timeout".into())
    );
    let vars = v["variables"].as_array().unwrap();
    let var = |k: &str| vars.iter().find(|x| x["key"] == k).cloned().unwrap();
    assert_eq!(var("CI_JOB_TOKEN")["value"], token);
    assert_eq!(var("CI_JOB_TOKEN")["masked"], true);
    assert_eq!(var("CI_JOB_TOKEN")["public"], false);
    assert_eq!(var("CI_JOB_ID")["value"], id.to_string());
    assert_eq!(
        var("CI_SERVER_URL")["value"],
        format!("http://10.0.2.2:{port}")
    );
    assert_eq!(var("CI_PROJECT_PATH")["value"], "group/hello");
    assert_eq!(var("CI_PIPELINE_ID")["value"], pid.0.to_string());
    assert_eq!(var("CI_COMMIT_SHA")["value"], sha);
    assert_eq!(var("CI_RUNNER_ID")["value"], runner.id.to_string());
    assert!(!text.contains(&runner.token));

    let job = lab.mock.job(id).unwrap();
    assert_eq!(job.status, JobStatus::Running);
    assert_eq!(job.runner_id, Some(runner.id));
    assert!(job.dispatched_at.is_some());
    // No second job.
    let r = lab.request_job(&runner.token, None).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tags_decide_which_runner_gets_a_job() {
    let fx =
        temp_fixture("tagged:\n  tags: [podman]\n  script: echo t\nuntagged:\n  script: echo u\n");
    let lab = Lab::start().await;
    lab.mock.add_project("group/tags", fx.path()).unwrap();
    let only_tagged = lab.mock.create_runner(RunnerSpec {
        description: "podman only".into(),
        tags: vec!["podman".into()],
        run_untagged: false,
    });
    let plain = lab.mock.create_runner(RunnerSpec::default());
    lab.mock.create_pipeline("group/tags", "main").unwrap();

    let v = lab.take_job(&plain.token).await;
    assert_eq!(v["job_info"]["name"], "untagged");
    let r = lab.request_job(&plain.token, None).await;
    assert_eq!(
        r.status(),
        StatusCode::NO_CONTENT,
        "plain runner must not get the tagged job"
    );
    let v = lab.take_job(&only_tagged.token).await;
    assert_eq!(v["job_info"]["name"], "tagged");
    let vars = v["variables"].as_array().unwrap();
    let tags = vars.iter().find(|x| x["key"] == "CI_RUNNER_TAGS").unwrap();
    assert_eq!(tags["value"], "[\"podman\"]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn variables_timeout_and_depth_reach_the_payload() {
    let fx = temp_fixture(
        r#"
variables:
  GIT_DEPTH: "3"
  GLOBAL: g
default:
  image: alpine:3
  before_script: [echo before]
job:
  timeout: 1h 30m
  variables:
    LOCAL: l
    GLOBAL: overridden
  script: [echo $GLOBAL]
  after_script: [echo after]
"#,
    );
    let lab = Lab::start().await;
    lab.mock.add_project("group/vars", fx.path()).unwrap();
    let runner = lab.mock.create_runner(RunnerSpec::default());
    lab.mock.create_pipeline("group/vars", "main").unwrap();
    let v = lab.take_job(&runner.token).await;
    assert_eq!(v["git_info"]["depth"], 3);
    assert_eq!(v["runner_info"]["timeout"], 5400);
    assert_eq!(v["image"]["name"], "alpine:3");
    assert_eq!(
        v["steps"][0]["script"],
        serde_json::json!(["echo before", "echo $GLOBAL"])
    );
    assert_eq!(v["steps"][1]["name"], "after_script");
    assert_eq!(v["steps"][1]["script"], serde_json::json!(["echo after"]));
    let vars = v["variables"].as_array().unwrap();
    let last = |k: &str| vars.iter().rev().find(|x| x["key"] == k).cloned().unwrap();
    assert_eq!(last("GLOBAL")["value"], "overridden");
    assert_eq!(last("LOCAL")["value"], "l");
}
