//! Fault injection, driven over HTTP the way the runner talks: each fault kind
//! as the client sees it, counts and seeded probabilities, the fault in the
//! request record, and plan files (library and `--faults`).

mod common;

use std::time::{Duration, Instant};

use common::{Lab, fixture, header};
use mock_gitlab::{Action, Fault, FaultPlan, JobStatus, RunnerSpec};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A lab with one runner and one pending `hello` job.
async fn lab_with_pending_job() -> (Lab, String) {
    let lab = Lab::start().await;
    let runner = lab.mock.create_runner(RunnerSpec::default());
    lab.mock
        .add_project("group/hello", &fixture("hello"))
        .unwrap();
    lab.mock.create_pipeline("group/hello", "main").unwrap();
    (lab, runner.token)
}

/// A lab whose `hello` job is running, acknowledged: (lab, job id, job token).
async fn lab_with_running_job() -> (Lab, u64, String) {
    let (lab, token) = lab_with_pending_job().await;
    let v = lab.take_job(&token).await;
    let (id, jt) = (
        v["id"].as_u64().unwrap(),
        v["token"].as_str().unwrap().to_string(),
    );
    let r = lab
        .put_job(id, json!({"token": jt, "state": "running", "output": {}}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    (lab, id, jt)
}

fn faults_of(lab: &Lab, path_suffix: &str) -> Vec<Option<String>> {
    lab.mock
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with(path_suffix))
        .map(|r| r.fault)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_fault_counts_and_gitlab_body() {
    let (lab, token) = lab_with_pending_job().await;
    lab.mock.add_fault(
        Fault::new("POST /api/v4/jobs/request", Action::status(503))
            .unwrap()
            .times(2),
    );
    for _ in 0..2 {
        let r = lab.request_job(&token, None).await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            header(&r, "content-type")
                .unwrap()
                .starts_with("application/json")
        );
        let v: Value = r.json().await.unwrap();
        assert_eq!(v, json!({"message": "503 Service Unavailable"}));
    }
    // The route did not run: the job is still there for the third request.
    assert_eq!(lab.mock.jobs()[0].status, JobStatus::Pending);
    let r = lab.request_job(&token, None).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        faults_of(&lab, "/jobs/request"),
        [Some("status(503)".into()), Some("status(503)".into()), None]
    );
    let recs = lab.mock.requests();
    assert_eq!(recs[0].status, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_connection_gives_no_response() {
    let (lab, id, jt) = lab_with_running_job().await;
    lab.mock.add_fault(
        Fault::new("PUT /api/v4/jobs/:id", Action::DropConnection)
            .unwrap()
            .times(1),
    );
    let err = lab
        .http
        .put(lab.url(&format!("/jobs/{id}")))
        .json(&json!({"token": jt, "state": "success"}))
        .send()
        .await
        .expect_err("the connection closes without a response");
    assert!(!err.is_status() && err.status().is_none(), "{err:?}");
    // The route never ran; the runner's retry goes through.
    assert_eq!(lab.mock.job(id).unwrap().status, JobStatus::Running);
    let r = lab
        .put_job(id, json!({"token": jt, "state": "success"}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(lab.mock.job(id).unwrap().status, JobStatus::Success);
    let puts = faults_of(&lab, &format!("/jobs/{id}"));
    // ack PUT, dropped PUT, final PUT
    assert_eq!(puts, [None, Some("drop_connection".into()), None]);
    let dropped = lab
        .mock
        .requests()
        .into_iter()
        .find(|r| r.fault.is_some())
        .unwrap();
    assert_eq!(dropped.response_bytes, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_body_loses_the_job_like_a_cut_connection() {
    let (lab, token) = lab_with_pending_job().await;
    lab.mock.add_fault(
        Fault::new("POST /api/v4/jobs/request", Action::TruncatedBody)
            .unwrap()
            .times(1),
    );
    let r = lab.request_job(&token, None).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let announced: u64 = header(&r, "content-length").unwrap().parse().unwrap();
    assert!(r.bytes().await.is_err(), "the body must end early");
    // As with GitLab, the job was handed out: the runner just never got it.
    let job = &lab.mock.jobs()[0];
    assert_eq!(job.status, JobStatus::Running);
    let rec = lab
        .mock
        .requests()
        .into_iter()
        .find(|r| r.fault.is_some())
        .unwrap();
    assert_eq!(rec.fault.as_deref(), Some("truncated_body"));
    assert_eq!(rec.response_bytes, Some(announced / 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_on_a_job_answer() {
    let (lab, token) = lab_with_pending_job().await;
    lab.mock.add_fault(
        Fault::new("POST /api/v4/jobs/request", Action::MalformedJson)
            .unwrap()
            .times(1),
    );
    let r = lab.request_job(&token, None).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        header(&r, "content-type").as_deref(),
        Some("application/json")
    );
    let body = r.bytes().await.unwrap();
    assert!(!body.is_empty());
    assert!(serde_json::from_slice::<Value>(&body).is_err());
    assert_eq!(
        faults_of(&lab, "/jobs/request"),
        [Some("malformed_json".into())]
    );
}

/// What the runner does with PATCH answers, from byte `offset` on: 202
/// advances to `end+1`, 416 resumes from the number after the dash of
/// `Range`. Returns the number of 416s.
async fn send_trace_like_runner(
    lab: &Lab,
    id: u64,
    jt: &str,
    data: &[u8],
    mut offset: usize,
    chunk: usize,
) -> u32 {
    let mut rejections = 0;
    while offset < data.len() {
        let end = (offset + chunk).min(data.len());
        let r = lab
            .patch_trace(
                id,
                jt,
                Some(&format!("{offset}-{}", end - 1)),
                &data[offset..end],
            )
            .await;
        match r.status() {
            StatusCode::ACCEPTED => offset = end,
            StatusCode::RANGE_NOT_SATISFIABLE => {
                rejections += 1;
                let range = header(&r, "range").expect("416 carries Range");
                offset = range.split_once('-').unwrap().1.parse().unwrap();
            }
            s => panic!("unexpected PATCH status {s}"),
        }
        assert!(rejections < 20, "no progress");
    }
    rejections
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_416_carries_range_and_the_runner_resumes() {
    let (lab, id, jt) = lab_with_running_job().await;
    // Let the first PATCH through, reject the next two.
    lab.mock.add_fault(
        Fault::new("PATCH /api/v4/jobs/:id/trace", Action::Trace416)
            .unwrap()
            .skip(1)
            .times(2),
    );
    let data: Vec<u8> = (0..100u8).map(|i| b'a' + i % 26).collect();

    // The 416 names the stored size (the first chunk's 10 bytes), like GitLab's.
    let r = lab.patch_trace(id, &jt, Some("0-9"), &data[..10]).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = lab.patch_trace(id, &jt, Some("10-19"), &data[10..20]).await;
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&r, "range").as_deref(), Some("0-10"));
    assert_eq!(header(&r, "job-status").as_deref(), Some("running"));
    assert!(header(&r, "x-gitlab-trace-update-interval").is_some());

    // The rest, sent the runner's way, survives the second 416 intact.
    assert_eq!(
        send_trace_like_runner(&lab, id, &jt, &data, 10, 30).await,
        1
    );
    let job = lab.mock.job(id).unwrap();
    assert_eq!(job.trace, data);
    assert_eq!(job.trace_rejections, 0, "faults do not touch the job");
    let on_trace = faults_of(&lab, "/trace");
    assert_eq!(
        on_trace,
        [
            None,
            Some("trace_416".into()),
            Some("trace_416".into()),
            None,
            None,
            None
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_then_status_compose() {
    let (lab, id, jt) = lab_with_running_job().await;
    lab.mock.set_faults(FaultPlan {
        seed: 0,
        faults: vec![
            Fault::new("PUT /api/v4/jobs/:id", Action::Delay(300))
                .unwrap()
                .times(2),
            Fault::new("PUT /api/v4/jobs/:id", Action::status(500))
                .unwrap()
                .times(1),
        ],
    });
    let t = Instant::now();
    let r = lab
        .put_job(id, json!({"token": jt, "state": "running"}))
        .await;
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    let t = Instant::now();
    let r = lab
        .put_job(id, json!({"token": jt, "state": "running"}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(t.elapsed() >= Duration::from_millis(300));
    let r = lab
        .put_job(id, json!({"token": jt, "state": "running"}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    // set_faults replaced the plan, so the acknowledgement PUT (before it) saw none.
    assert_eq!(
        faults_of(&lab, &format!("/jobs/{id}")),
        [
            None,
            Some("delay(300ms), status(500)".into()),
            Some("delay(300ms)".into()),
            None
        ]
    );
}

/// The statuses 40 job requests get under a 30 % `status(500)` fault.
async fn statuses_under(seed: u64) -> Vec<u16> {
    let lab = Lab::start().await;
    let runner = lab.mock.create_runner(RunnerSpec::default());
    lab.mock.set_faults(FaultPlan {
        seed,
        faults: vec![
            Fault::new("POST /api/v4/jobs/request", Action::status(500))
                .unwrap()
                .probability(0.3),
        ],
    });
    let mut out = Vec::new();
    for _ in 0..40 {
        out.push(lab.request_job(&runner.token, None).await.status().as_u16());
    }
    let recorded: Vec<u16> = lab.mock.requests().iter().map(|r| r.status).collect();
    assert_eq!(recorded, out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probability_is_deterministic_per_seed() {
    let a = statuses_under(7).await;
    let b = statuses_under(7).await;
    assert_eq!(a, b, "same seed, same faults");
    let failed = a.iter().filter(|s| **s == 500).count();
    assert!((4..=20).contains(&failed), "{failed} of 40 at p=0.3");
    assert!(a.iter().all(|s| *s == 500 || *s == 204));
    let c = statuses_under(8).await;
    assert_ne!(a, c, "another seed, other rolls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_and_artifact_endpoints() {
    let (lab, id, jt) = lab_with_running_job().await;
    lab.mock.set_faults(FaultPlan {
        seed: 1,
        faults: vec![
            Fault::new("GET git", Action::status(502)).unwrap(),
            Fault::new("GET /api/v4/jobs/:id/artifacts", Action::status(500)).unwrap(),
        ],
    });
    let r = lab
        .http
        .get(format!(
            "{}/group/hello.git/info/refs?service=git-upload-pack",
            lab.mock.local_url()
        ))
        .basic_auth("gitlab-ci-token", Some(&jt))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    let r = lab
        .http
        .get(lab.url(&format!("/jobs/{id}/artifacts")))
        .header("JOB-TOKEN", &jt)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    // Other endpoints are untouched.
    let r = lab
        .put_job(id, json!({"token": jt, "state": "running"}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    lab.mock.clear_faults();
    let r = lab
        .http
        .get(format!(
            "{}/group/hello.git/info/refs?service=git-upload-pack",
            lab.mock.local_url()
        ))
        .basic_auth("gitlab-ci-token", Some(&jt))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_from_config_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let json_path = dir.path().join("faults.json");
    std::fs::write(
        &json_path,
        r#"{"seed": 3, "faults": [
  {"endpoint": "POST /api/v4/jobs/request", "action": {"status": 429}, "times": 1}
]}"#,
    )
    .unwrap();
    let plan = FaultPlan::from_file(&json_path).unwrap();
    let toml_path = dir.path().join("faults.toml");
    std::fs::write(
        &toml_path,
        "seed = 3\n\n[[faults]]\nendpoint = \"POST /api/v4/jobs/request\"\naction = { status = 429 }\ntimes = 1\n",
    )
    .unwrap();
    assert_eq!(FaultPlan::from_file(&toml_path).unwrap(), plan);

    let lab = Lab::start_with(|c| c.faults = plan.clone()).await;
    assert_eq!(lab.mock.faults(), plan);
    let runner = lab.mock.create_runner(RunnerSpec::default());
    let r = lab.request_job(&runner.token, None).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let r = lab.request_job(&runner.token, None).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    // A bad file: the error names the file, the line and the fix.
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        "{\"faults\": [\n  {\"endpoint\": \"PATCH /api/v4/jobs/:id/trace\",\n   \"action\": \"trace416\"}\n]}\n",
    )
    .unwrap();
    let e = FaultPlan::from_file(&bad).unwrap_err().to_string();
    assert!(e.starts_with(&format!("{}:3: ", bad.display())), "{e}");
    assert!(e.contains("trace416") && e.contains("fix: "), "{e}");
}

#[test]
fn binary_rejects_a_bad_plan_with_file_line_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("plan.toml");
    std::fs::write(
        &bad,
        "[[faults]]\nendpoint = \"FETCH /api/v4/jobs/request\"\naction = \"drop_connection\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mock-gitlab"))
        .args(["--bind", "127.0.0.1:0", "--faults"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:2:", bad.display())), "{err}");
    assert!(err.contains("unknown method \"FETCH\""), "{err}");
    assert!(err.contains("fix:"), "{err}");
}
