//! The GitLab-compatible REST subset: a driver creates a project and a
//! pipeline, reads jobs and traces, cancels, retries and plays jobs through
//! `/api/v4/projects/…` with a `PRIVATE-TOKEN`, while the runner side takes
//! jobs through the runner API as the real runner does.

mod common;

use common::{Lab, crc};
use mock_gitlab::RunnerSpec;
use reqwest::{Method, Response};
use serde_json::{Value, json};

const CI: &str = r#"
stages: [build, test, deploy]
build:
  stage: build
  script: echo "$GREETING"
  artifacts:
    paths: [out/]
test:
  stage: test
  script: sleep 100
deploy:
  stage: deploy
  script: echo deploy
  when: manual
"#;

const BOUNDARY: &str = "restBoundary7";

/// A fixtures root holding `demo/` (the pipeline above) and `broken/` (bad YAML).
fn fixtures_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    for (name, ci) in [("demo", CI), ("broken", "build:\n  script: [\n")] {
        std::fs::create_dir(root.path().join(name)).unwrap();
        std::fs::write(root.path().join(name).join(".gitlab-ci.yml"), ci).unwrap();
    }
    root
}

async fn rest(lab: &Lab, method: Method, path: &str, body: Option<Value>) -> Response {
    let mut req = lab
        .http
        .request(method, lab.url(path))
        .header("PRIVATE-TOKEN", lab.mock.admin_token());
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap()
}

async fn json_of(r: Response, status: u16) -> Value {
    assert_eq!(r.status().as_u16(), status, "unexpected status");
    r.json().await.unwrap()
}

/// The runner's part of a job: trace, optional artifact, final state.
async fn finish(lab: &Lab, job: &Value, trace: &[u8], state: &str, artifact: Option<&[u8]>) {
    let id = job["id"].as_u64().unwrap();
    let token = job["token"].as_str().unwrap();
    if !trace.is_empty() {
        let r = lab
            .patch_trace(id, token, Some(&format!("0-{}", trace.len() - 1)), trace)
            .await;
        assert_eq!(r.status(), 202);
    }
    if let Some(data) = artifact {
        let mut body = format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"artifacts.zip\"\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(data);
        body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
        let r = lab
            .http
            .post(lab.url(&format!(
                "/jobs/{id}/artifacts?artifact_format=zip&artifact_type=archive"
            )))
            .header("JOB-TOKEN", token)
            .header(
                "Content-Type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let r = lab
        .put_job(
            id,
            json!({"token": token, "state": state, "failure_reason": if state == "failed" {"script_failure"} else {""},
                   "output": {"checksum": crc(trace), "bytesize": trace.len()}}),
        )
        .await;
    assert_eq!(r.status(), 200);
}

fn by_name<'a>(jobs: &'a Value, name: &str) -> &'a Value {
    jobs.as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == name)
        .unwrap_or_else(|| panic!("no job {name} in {jobs}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rest_drives_a_whole_pipeline() {
    let root = fixtures_root();
    let root_path = root.path().to_path_buf();
    let lab = Lab::start_with(move |c| c.fixtures_root = Some(root_path)).await;
    let runner = lab.mock.create_runner(RunnerSpec::default());

    let project = json_of(
        rest(
            &lab,
            Method::POST,
            "/projects",
            Some(json!({
            "name": "demo", "namespace": "group", "import_fixture": "demo"})),
        )
        .await,
        201,
    )
    .await;
    assert!(project["id"].is_u64(), "{project}");
    assert_eq!(project["path_with_namespace"], "group/demo");
    assert!(
        project["web_url"]
            .as_str()
            .unwrap()
            .ends_with("/group/demo")
    );
    let pid_num = project["id"].as_u64().unwrap();
    // Same project by number and by URL-encoded path.
    let again = json_of(
        rest(&lab, Method::GET, &format!("/projects/{pid_num}"), None).await,
        200,
    )
    .await;
    assert_eq!(again["path_with_namespace"], "group/demo");

    let pipeline = json_of(
        rest(&lab, Method::POST, "/projects/group%2Fdemo/pipeline?ref=main", Some(json!({
            "variables": [{"key": "GREETING", "value": "hello from the API", "variable_type": "env_var"}]}))).await,
        201,
    )
    .await;
    let pl = pipeline["id"].as_u64().unwrap();
    assert_eq!(pipeline["status"], "pending");
    assert_eq!(pipeline["ref"], "main");
    assert_eq!(pipeline["source"], "api");
    assert_eq!(pipeline["project_id"], pid_num);
    assert_eq!(pipeline["sha"].as_str().unwrap().len(), 40);
    let base = format!("/projects/{pid_num}");

    // The runner takes `build`; the pipeline variable reached it.
    let build = lab.take_job(&runner.token).await;
    let vars = build["variables"].as_array().unwrap();
    assert!(
        vars.iter()
            .any(|v| v["key"] == "GREETING" && v["value"] == "hello from the API"),
        "{vars:?}"
    );
    let build_id = build["id"].as_u64().unwrap();
    let running = json_of(
        rest(&lab, Method::GET, &format!("{base}/jobs/{build_id}"), None).await,
        200,
    )
    .await;
    assert_eq!(running["status"], "running");
    assert_eq!(running["pipeline"]["id"], pl);
    assert_eq!(running["runner"]["id"], runner.id);
    finish(
        &lab,
        &build,
        b"hello from the API\n",
        "success",
        Some(b"PK\x05\x06zip"),
    )
    .await;

    let jobs = json_of(
        rest(
            &lab,
            Method::GET,
            &format!("{base}/pipelines/{pl}/jobs"),
            None,
        )
        .await,
        200,
    )
    .await;
    assert_eq!(jobs.as_array().unwrap().len(), 3);
    assert_eq!(by_name(&jobs, "build")["status"], "success");
    assert_eq!(
        by_name(&jobs, "build")["artifacts"][0]["file_type"],
        "archive"
    );
    assert_eq!(by_name(&jobs, "test")["status"], "pending");
    assert_eq!(by_name(&jobs, "deploy")["status"], "created");

    let trace = rest(
        &lab,
        Method::GET,
        &format!("{base}/jobs/{build_id}/trace"),
        None,
    )
    .await;
    assert_eq!(trace.status(), 200);
    assert!(
        common::header(&trace, "content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(trace.text().await.unwrap(), "hello from the API\n");
    let art = rest(
        &lab,
        Method::GET,
        &format!("{base}/jobs/{build_id}/artifacts"),
        None,
    )
    .await;
    assert_eq!(art.status(), 200);
    assert_eq!(&art.bytes().await.unwrap()[..], b"PK\x05\x06zip");

    // `test` runs; a cancel shows `canceling` until the runner ends it, then `canceled`.
    let test = lab.take_job(&runner.token).await;
    let test_id = test["id"].as_u64().unwrap();
    let c = json_of(
        rest(
            &lab,
            Method::POST,
            &format!("{base}/jobs/{test_id}/cancel"),
            None,
        )
        .await,
        201,
    )
    .await;
    assert_eq!(c["status"], "canceling");
    finish(&lab, &test, b"Terminated\n", "failed", None).await;
    let t = json_of(
        rest(&lab, Method::GET, &format!("{base}/jobs/{test_id}"), None).await,
        200,
    )
    .await;
    assert_eq!(t["status"], "canceled");
    let p = json_of(
        rest(&lab, Method::GET, &format!("{base}/pipelines/{pl}"), None).await,
        200,
    )
    .await;
    assert_eq!(p["status"], "canceled");

    // Retry: a new job, pending; the pipeline runs again; the old attempt is hidden by default.
    let retry = json_of(
        rest(
            &lab,
            Method::POST,
            &format!("{base}/jobs/{test_id}/retry"),
            None,
        )
        .await,
        201,
    )
    .await;
    let retry_id = retry["id"].as_u64().unwrap();
    assert_ne!(retry_id, test_id);
    assert_eq!(retry["name"], "test");
    assert_eq!(retry["status"], "pending");
    let p = json_of(
        rest(&lab, Method::GET, &format!("{base}/pipelines/{pl}"), None).await,
        200,
    )
    .await;
    assert_eq!(p["status"], "running", "a job of it ran already");
    assert!(p["finished_at"].is_null());
    let jobs = json_of(
        rest(
            &lab,
            Method::GET,
            &format!("{base}/pipelines/{pl}/jobs"),
            None,
        )
        .await,
        200,
    )
    .await;
    assert_eq!(by_name(&jobs, "test")["id"], retry_id);
    let all = json_of(
        rest(
            &lab,
            Method::GET,
            &format!("{base}/pipelines/{pl}/jobs?include_retried=true"),
            None,
        )
        .await,
        200,
    )
    .await;
    assert_eq!(all.as_array().unwrap().len(), 4);
    // A retried job cannot be retried twice.
    let r = rest(
        &lab,
        Method::POST,
        &format!("{base}/jobs/{test_id}/retry"),
        None,
    )
    .await;
    assert_eq!(r.status(), 403);

    let test2 = lab.take_job(&runner.token).await;
    assert_eq!(test2["id"].as_u64(), Some(retry_id));
    finish(&lab, &test2, b"ok\n", "success", None).await;

    // `deploy` waits for "Play".
    let jobs = json_of(
        rest(
            &lab,
            Method::GET,
            &format!("{base}/pipelines/{pl}/jobs"),
            None,
        )
        .await,
        200,
    )
    .await;
    let deploy = by_name(&jobs, "deploy");
    assert_eq!(deploy["status"], "manual");
    let deploy_id = deploy["id"].as_u64().unwrap();
    let r = lab.request_job(&runner.token, None).await;
    assert_eq!(
        r.status(),
        204,
        "a manual job is not handed out before play"
    );
    let played = json_of(
        rest(
            &lab,
            Method::POST,
            &format!("{base}/jobs/{deploy_id}/play"),
            None,
        )
        .await,
        201,
    )
    .await;
    assert_eq!(played["status"], "pending");
    let r = rest(
        &lab,
        Method::POST,
        &format!("{base}/jobs/{deploy_id}/play"),
        None,
    )
    .await;
    assert_eq!(r.status(), 400, "a played job is not playable again");
    let d = lab.take_job(&runner.token).await;
    assert_eq!(d["id"].as_u64(), Some(deploy_id));
    finish(&lab, &d, b"deploy\n", "success", None).await;
    let p = json_of(
        rest(&lab, Method::GET, &format!("{base}/pipelines/{pl}"), None).await,
        200,
    )
    .await;
    assert_eq!(p["status"], "success");
    assert!(p["finished_at"].is_string());
    assert_eq!(
        lab.mock
            .pipeline(mock_gitlab::PipelineId(pl))
            .status
            .as_str(),
        "success"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rest_cancels_a_pipeline() {
    let root = fixtures_root();
    let root_path = root.path().to_path_buf();
    let lab = Lab::start_with(move |c| c.fixtures_root = Some(root_path)).await;
    json_of(
        rest(
            &lab,
            Method::POST,
            "/projects",
            Some(json!({
            "path": "demo", "namespace": "group", "import_fixture": "demo"})),
        )
        .await,
        201,
    )
    .await;
    let p = json_of(
        rest(
            &lab,
            Method::POST,
            "/projects/group%2Fdemo/pipeline?ref=main",
            None,
        )
        .await,
        201,
    )
    .await;
    let pl = p["id"].as_u64().unwrap();
    let c = json_of(
        rest(
            &lab,
            Method::POST,
            &format!("/projects/group%2Fdemo/pipelines/{pl}/cancel"),
            None,
        )
        .await,
        201,
    )
    .await;
    assert_eq!(c["status"], "canceled");
    let jobs = json_of(
        rest(
            &lab,
            Method::GET,
            &format!("/projects/group%2Fdemo/pipelines/{pl}/jobs"),
            None,
        )
        .await,
        200,
    )
    .await;
    for j in jobs.as_array().unwrap() {
        assert!(
            matches!(
                j["status"].as_str(),
                Some("canceled") | Some("manual") | Some("skipped")
            ),
            "{j}"
        );
    }
    // Canceling a finished job answers with the job unchanged, like GitLab.
    let id = jobs[0]["id"].as_u64().unwrap();
    let j = json_of(
        rest(
            &lab,
            Method::POST,
            &format!("/projects/group%2Fdemo/jobs/{id}/cancel"),
            None,
        )
        .await,
        201,
    )
    .await;
    assert_eq!(j["status"], "canceled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rest_refuses_bad_requests() {
    let root = fixtures_root();
    let root_path = root.path().to_path_buf();
    let lab = Lab::start_with(move |c| c.fixtures_root = Some(root_path)).await;

    // 401: no token, a wrong one, a runner token.
    let runner = lab.mock.create_runner(RunnerSpec::default());
    for token in [
        None,
        Some("glpat-wrong".to_string()),
        Some(runner.token.clone()),
    ] {
        let mut req = lab.http.get(lab.url("/projects/1"));
        if let Some(t) = token {
            req = req.header("PRIVATE-TOKEN", t);
        }
        let r = req.send().await.unwrap();
        assert_eq!(
            json_of(r, 401).await,
            json!({"message": "401 Unauthorized"})
        );
    }
    let r = lab
        .http
        .post(lab.url("/projects"))
        .json(&json!({"name": "x", "import_fixture": "demo"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Bearer works like PRIVATE-TOKEN.
    let r = lab
        .http
        .get(lab.url("/projects/1"))
        .bearer_auth(lab.mock.admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_of(r, 404).await,
        json!({"message": "404 Project Not Found"})
    );

    // Fixture paths must stay under the root.
    for bad in ["../demo", "/etc", "", "demo/../../x", "missing"] {
        let r = rest(
            &lab,
            Method::POST,
            "/projects",
            Some(json!({"name": "x", "namespace": "g", "import_fixture": bad})),
        )
        .await;
        assert_eq!(r.status(), 400, "{bad}");
    }
    #[cfg(unix)]
    {
        let link = lab.mock.data_dir().join("outside");
        std::fs::create_dir_all(&link).unwrap();
        std::os::unix::fs::symlink(&link, root.path().join("escape")).unwrap();
        let r = rest(
            &lab,
            Method::POST,
            "/projects",
            Some(json!({"name": "x", "namespace": "g", "import_fixture": "escape"})),
        )
        .await;
        assert_eq!(r.status(), 400, "a symlink out of the root");
    }

    json_of(
        rest(
            &lab,
            Method::POST,
            "/projects",
            Some(json!({"name": "broken", "namespace": "g", "import_fixture": "broken"})),
        )
        .await,
        201,
    )
    .await;
    let r = rest(
        &lab,
        Method::POST,
        "/projects",
        Some(json!({"name": "broken", "namespace": "g", "import_fixture": "broken"})),
    )
    .await;
    assert_eq!(r.status(), 400, "duplicate project");

    // Lint errors: 400 with GitLab's {"message": {"base": [...]}}.
    let e = json_of(
        rest(
            &lab,
            Method::POST,
            "/projects/g%2Fbroken/pipeline?ref=main",
            None,
        )
        .await,
        400,
    )
    .await;
    let base = e["message"]["base"].as_array().unwrap();
    assert!(!base.is_empty());
    assert!(base[0].as_str().unwrap().contains(".gitlab-ci.yml"), "{e}");
    let e = json_of(
        rest(
            &lab,
            Method::POST,
            "/projects/g%2Fbroken/pipeline?ref=nope",
            None,
        )
        .await,
        400,
    )
    .await;
    assert!(
        e["message"]["base"][0].as_str().unwrap().contains("nope"),
        "{e}"
    );

    // 404s.
    for path in [
        "/projects/999",
        "/projects/g%2Fmissing",
        "/projects/g%2Fbroken/pipelines/999",
        "/projects/g%2Fbroken/pipelines/999/jobs",
        "/projects/g%2Fbroken/jobs/999",
        "/projects/g%2Fbroken/jobs/999/trace",
        "/projects/g%2Fbroken/jobs/abc",
    ] {
        let r = rest(&lab, Method::GET, path, None).await;
        assert_eq!(r.status(), 404, "{path}");
    }
    for path in [
        "/projects/999/pipeline?ref=main",
        "/projects/g%2Fbroken/jobs/999/retry",
        "/projects/g%2Fbroken/jobs/999/play",
    ] {
        let r = rest(&lab, Method::POST, path, None).await;
        assert_eq!(r.status(), 404, "{path}");
    }
}

#[tokio::test]
async fn rest_imports_are_refused_without_a_fixtures_root() {
    let lab = Lab::start().await;
    let r = rest(
        &lab,
        Method::POST,
        "/projects",
        Some(json!({"name": "x", "namespace": "g", "import_fixture": "hello"})),
    )
    .await;
    assert_eq!(r.status(), 403);
}
