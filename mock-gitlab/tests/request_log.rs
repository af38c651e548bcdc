//! The JSONL request log: one complete JSON object per request, the fields
//! documented in the README, and never a secret.

mod common;

use common::{Lab, fixture};
use mock_gitlab::{Action, Fault, RunnerSpec};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonl_log_is_complete_and_has_no_secrets() {
    let logs = tempfile::tempdir().unwrap();
    let path = logs.path().join("run-1/requests.jsonl");
    let lab = Lab::start_with(|c| c.request_log = Some(path.clone())).await;
    assert_eq!(lab.mock.request_log_path().as_deref(), Some(path.as_path()));
    let runner = lab.mock.create_runner(RunnerSpec::default());
    lab.mock
        .add_project("group/hello", &fixture("hello"))
        .unwrap();
    lab.mock.create_pipeline("group/hello", "main").unwrap();

    let mut secrets = vec![
        runner.token.clone(),
        lab.mock.registration_token(),
        "glrt-wrongwrongwrong".to_string(),
        "qt-secret-in-query".to_string(),
        "pat-secret-header".to_string(),
    ];

    // A wrong runner token (header and body), a job, its trace and updates.
    let r = lab
        .http
        .post(lab.url("/jobs/request"))
        .header("RUNNER-TOKEN", "glrt-wrongwrongwrong")
        .json(&json!({"token": "glrt-wrongwrongwrong"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let v = lab.take_job(&runner.token).await;
    let (id, jt) = (v["id"].as_u64().unwrap(), v["token"].as_str().unwrap());
    secrets.push(jt.to_string());
    lab.mock.add_fault(
        Fault::new("PATCH /api/v4/jobs/:id/trace", Action::Trace416)
            .unwrap()
            .times(1),
    );
    let r = lab.patch_trace(id, jt, Some("0-4"), b"hello").await;
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    let r = lab.patch_trace(id, jt, Some("0-4"), b"hello").await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    // Token in the query and a PRIVATE-TOKEN header.
    let r = lab
        .http
        .get(lab.url(&format!(
            "/jobs/{id}/artifacts?job_token=qt-secret-in-query&direct_download=true"
        )))
        .header("PRIVATE-TOKEN", "pat-secret-header")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error());
    // git with Basic auth (the job token as password).
    let r = lab
        .http
        .get(format!(
            "{}/group/hello.git/info/refs?service=git-upload-pack",
            lab.mock.local_url()
        ))
        .basic_auth("gitlab-ci-token", Some(jt))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = lab
        .put_job(id, json!({"token": jt, "state": "success"}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);

    lab.mock.sync_request_log().await;
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.ends_with('\n'), "complete lines only");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let records = lab.mock.requests();
    assert_eq!(lines.len(), records.len());
    for (l, rec) in lines.iter().zip(&records) {
        for key in [
            "ts",
            "method",
            "path",
            "query",
            "status",
            "latency_ms",
            "request_bytes",
            "response_bytes",
            "fault",
            "runner_token",
            "job_token",
            "private_token",
            "authorization",
            "query_token",
        ] {
            assert!(l.get(key).is_some(), "{key} missing in {l}");
        }
        assert_eq!(l["method"], rec.method);
        assert_eq!(l["path"], rec.path);
        assert_eq!(l["status"], rec.status);
        assert!(l["latency_ms"].as_f64().unwrap() >= 0.0);
    }
    let find = |status: u64, path_end: &str| {
        lines
            .iter()
            .find(|l| l["status"] == status && l["path"].as_str().unwrap().ends_with(path_end))
            .unwrap_or_else(|| panic!("no {status} {path_end} in the log"))
    };
    let wrong = find(403, "/jobs/request");
    assert_eq!(wrong["runner_token"], true);
    assert!(wrong["request_bytes"].as_u64().unwrap() > 0);
    let job = find(201, "/jobs/request");
    assert!(job["response_bytes"].as_u64().unwrap() > 500);
    let rejected = find(416, "/trace");
    assert_eq!(rejected["fault"], "trace_416");
    assert_eq!(rejected["job_token"], true);
    assert_eq!(rejected["query"], "debug_trace=false");
    let accepted = find(202, "/trace");
    assert!(accepted["fault"].is_null());
    assert_eq!(accepted["request_bytes"], 5);
    let artifacts = lines
        .iter()
        .find(|l| l["path"].as_str().unwrap().ends_with("/artifacts"))
        .unwrap();
    assert_eq!(artifacts["query"], "direct_download=true");
    assert_eq!(artifacts["query_token"], true);
    assert_eq!(artifacts["private_token"], true);
    let git = find(200, "/info/refs");
    assert_eq!(git["authorization"], true);

    for s in &secrets {
        assert!(!text.contains(s.as_str()), "a secret leaked into the log");
    }
    assert!(!text.contains("gitlab-ci-token"));

    // Shutdown writes what is queued; a request after it is not half-logged.
    let n = lines.len();
    lab.mock.clone().shutdown().await;
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), n);
    assert!(text.ends_with('\n'));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_can_be_switched_on_and_off() {
    let lab = Lab::start().await;
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.jsonl");
    lab.post("/runners/verify", json!({})).await;
    lab.mock.set_request_log(Some(&a)).unwrap();
    lab.post("/runners/verify", json!({"token": "glrt-zzzzzzzzzz"}))
        .await;
    lab.post("/runners/verify", json!({})).await;
    lab.mock.set_request_log(None).unwrap();
    lab.post("/runners/verify", json!({})).await;
    let text = std::fs::read_to_string(&a).unwrap();
    assert_eq!(text.lines().count(), 2);
    assert!(!text.contains("glrt-zzzzzzzzzz"));
    assert_eq!(lab.mock.requests().len(), 4);
}
