//! Job updates and incremental traces: PATCH 202/416/400/403, final PUT with
//! correct and wrong checksums, Job-Status and update-interval headers.

mod common;

use common::{Lab, crc, fixture, header};
use mock_gitlab::{JobStatus, PipelineStatus, RunnerSpec};
use reqwest::StatusCode;
use serde_json::json;

async fn running_job(lab: &Lab, project: &str, fx: &str) -> (u64, String) {
    let runner = lab.mock.create_runner(RunnerSpec::default());
    lab.mock.add_project(project, &fixture(fx)).unwrap();
    lab.mock.create_pipeline(project, "main").unwrap();
    let v = lab.take_job(&runner.token).await;
    (
        v["id"].as_u64().unwrap(),
        v["token"].as_str().unwrap().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trace_patch_ranges() {
    let lab = Lab::start_with(|c| c.trace_update_interval = 1).await;
    let (id, token) = running_job(&lab, "group/hello", "hello").await;

    // Acknowledgement PUT (two-phase commit, 18.5+).
    let r = lab
        .put_job(
            id,
            json!({"token": token, "state": "running", "output": {}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "job-status").as_deref(), Some("running"));
    assert_eq!(
        header(&r, "x-gitlab-trace-update-interval").as_deref(),
        Some("1")
    );
    assert_eq!(r.text().await.unwrap(), "200");

    let r = lab
        .patch_trace(id, &token, Some("0-9"), b"0123456789")
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&r, "range").as_deref(), Some("0-10"));
    assert_eq!(header(&r, "job-status").as_deref(), Some("running"));
    assert_eq!(
        header(&r, "x-gitlab-trace-update-interval").as_deref(),
        Some("1")
    );

    // A gap or an overlap: 416 with the stored length.
    for bad in ["5-9", "11-20", "0-9"] {
        let r = lab.patch_trace(id, &token, Some(bad), b"xxxxx").await;
        assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE, "{bad}");
        assert_eq!(header(&r, "range").as_deref(), Some("0-10"), "{bad}");
    }
    let r = lab.patch_trace(id, &token, None, b"abc").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = lab
        .patch_trace(id, &token, Some("bytes 10-12"), b"abc")
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = lab.patch_trace(id, "wrong", Some("10-12"), b"abc").await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = lab
        .patch_trace(999_999, &token, Some("10-12"), b"abc")
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    let r = lab.patch_trace(id, &token, Some("10-12"), b"abc").await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&r, "range").as_deref(), Some("0-13"));

    let job = lab.mock.job(id).unwrap();
    assert_eq!(job.trace, b"0123456789abc");
    assert_eq!(job.trace_patches, 2);
    assert_eq!(job.trace_rejections, 3);
    assert!(job.started_at.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn final_put_with_correct_checksum() {
    let lab = Lab::start().await;
    let (id, token) = running_job(&lab, "group/hello", "hello").await;
    let trace = b"Running with gitlab-runner\nhello from runnerlab\nJob succeeded\n";
    let r = lab
        .patch_trace(id, &token, Some(&format!("0-{}", trace.len() - 1)), trace)
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);

    // Token in the JOB-TOKEN header only (17.11+ runners send both).
    let r = lab
        .http
        .put(lab.url(&format!("/jobs/{id}")))
        .header("JOB-TOKEN", &token)
        .json(&json!({
            "state": "success",
            "checksum": crc(trace),
            "output": {"checksum": crc(trace), "bytesize": trace.len()}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "job-status").as_deref(), Some("success"));
    assert_eq!(
        header(&r, "x-gitlab-trace-update-interval").as_deref(),
        Some("3")
    );

    let job = lab.mock.job(id).unwrap();
    assert_eq!(job.status, JobStatus::Success);
    assert_eq!(job.checksum_ok, Some(true));
    assert_eq!(job.reported_bytesize, Some(trace.len() as u64));
    assert_eq!(job.exit_code, None);
    assert_eq!(job.state_updates, vec!["success"]);
    assert!(job.trace_text().contains("hello from runnerlab"));
    let p = lab.mock.pipeline(job.pipeline_id);
    assert_eq!(p.status, PipelineStatus::Success);

    // The job is over: further updates are refused with its status.
    let r = lab
        .put_job(id, json!({"token": token, "state": "running"}))
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(header(&r, "job-status").as_deref(), Some("success"));
    let r = lab.patch_trace(id, &token, Some("63-63"), b"x").await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn final_put_with_wrong_checksum_or_size() {
    let lab = Lab::start().await;
    let runner = lab.mock.create_runner(RunnerSpec::default());
    lab.mock
        .add_project("group/hello", &fixture("hello"))
        .unwrap();
    lab.mock.create_pipeline("group/hello", "main").unwrap();
    lab.mock.create_pipeline("group/hello", "main").unwrap();
    let trace = b"some output\n";

    // Wrong checksum.
    let v = lab.take_job(&runner.token).await;
    let (id, token) = (v["id"].as_u64().unwrap(), v["token"].as_str().unwrap());
    lab.patch_trace(id, token, Some("0-11"), trace).await;
    let r = lab
        .put_job(
            id,
            json!({"token": token, "state": "success",
                   "output": {"checksum": "crc32:deadbeef", "bytesize": trace.len()}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(lab.mock.job(id).unwrap().checksum_ok, Some(false));

    // Right checksum, wrong size.
    let v = lab.take_job(&runner.token).await;
    let (id, token) = (v["id"].as_u64().unwrap(), v["token"].as_str().unwrap());
    lab.patch_trace(id, token, Some("0-11"), trace).await;
    let r = lab
        .put_job(
            id,
            json!({"token": token, "state": "success",
                   "output": {"checksum": crc(trace), "bytesize": 999}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(lab.mock.job(id).unwrap().checksum_ok, Some(false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn put_rejects_bad_tokens_and_states() {
    let lab = Lab::start().await;
    let (id, token) = running_job(&lab, "group/hello", "hello").await;
    let r = lab
        .put_job(id, json!({"token": "nope", "state": "success"}))
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = lab.put_job(id, json!({"state": "success"})).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = lab
        .put_job(id, json!({"token": token, "state": "exploded"}))
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = lab
        .put_job(424_242, json!({"token": token, "state": "success"}))
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = lab
        .http
        .put(lab.url("/jobs/not-a-number"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(lab.mock.job(id).unwrap().status, JobStatus::Running);
}
