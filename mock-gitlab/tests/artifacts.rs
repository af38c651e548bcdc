//! Artifact upload (multipart, chunked, query parameters, 403/413) and
//! download (tokens, 404, Range), and `dependencies[]` in later payloads.

mod common;

use common::{Lab, crc, temp_fixture};
use mock_gitlab::RunnerSpec;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BOUNDARY: &str = "runnerlabBoundary42";

fn multipart(filename: &str, data: &[u8]) -> Vec<u8> {
    let mut b = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    b.extend_from_slice(data);
    b.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    b
}

async fn upload(lab: &Lab, id: u64, token: &str, query: &str, body: Vec<u8>) -> reqwest::Response {
    lab.http
        .post(lab.url(&format!("/jobs/{id}/artifacts?{query}")))
        .header("JOB-TOKEN", token)
        .header(
            "Content-Type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
        .send()
        .await
        .unwrap()
}

/// The same upload as the runner sends it: `Transfer-Encoding: chunked`.
async fn upload_chunked(lab: &Lab, id: u64, token: &str, query: &str, body: &[u8]) -> u16 {
    let addr = lab
        .mock
        .local_url()
        .trim_start_matches("http://")
        .to_string();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /api/v4/jobs/{id}/artifacts?{query} HTTP/1.1\r\nHost: {addr}\r\nJOB-TOKEN: {token}\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    for chunk in body.chunks(7) {
        s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await
            .unwrap();
        s.write_all(chunk).await.unwrap();
        s.write_all(b"\r\n").await.unwrap();
    }
    s.write_all(b"0\r\n\r\n").await.unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await.unwrap();
    let line = String::from_utf8_lossy(&resp);
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

async fn succeed(lab: &Lab, job: &Value) {
    let id = job["id"].as_u64().unwrap();
    let token = job["token"].as_str().unwrap();
    let r = lab
        .put_job(
            id,
            json!({"token": token, "state": "success", "output": {"checksum": crc(b""), "bytesize": 0}}),
        )
        .await;
    assert_eq!(r.status(), 200);
}

const CI: &str = r#"
stages: [build, test, deploy]
build:
  stage: build
  script: make
  artifacts:
    name: "bin-$CI_JOB_NAME"
    paths: [out/]
    exclude: [out/*.tmp]
    expire_in: 2 days
    when: always
    reports:
      junit: report.xml
nothing:
  stage: build
  script: "true"
test:
  stage: test
  script: cat out/x
only-nothing:
  stage: test
  dependencies: [nothing]
  script: "true"
deploy:
  stage: deploy
  needs: [{job: build, artifacts: false}]
  script: "true"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upload_download_and_dependencies() {
    let fx = temp_fixture(CI);
    let lab = Lab::start_with(|c| c.max_artifact_size = 1024).await;
    lab.mock.add_project("group/art", fx.path()).unwrap();
    let runner = lab.mock.create_runner(RunnerSpec::default());
    let pid = lab.mock.create_pipeline("group/art", "main").unwrap();

    let mut build = lab.take_job(&runner.token).await;
    if build["job_info"]["name"] != "build" {
        let other = build;
        build = lab.take_job(&runner.token).await;
        succeed(&lab, &other).await;
    }
    let arts = build["artifacts"].as_array().unwrap();
    assert_eq!(arts.len(), 2);
    assert_eq!(arts[0]["name"], "bin-$CI_JOB_NAME");
    assert_eq!(arts[0]["exclude"], json!(["out/*.tmp"]));
    assert_eq!(arts[0]["when"], "always");
    assert_eq!(arts[0]["expire_in"], "2 days");
    assert_eq!(arts[0]["artifact_type"], "archive");
    assert_eq!(arts[0]["artifact_format"], "zip");
    assert_eq!(arts[1]["artifact_type"], "junit");
    assert_eq!(arts[1]["artifact_format"], "gzip");
    assert_eq!(arts[1]["paths"], json!(["report.xml"]));
    let id = build["id"].as_u64().unwrap();
    let token = build["token"].as_str().unwrap();

    // Wrong token, unknown job, not multipart, too large.
    let r = upload(
        &lab,
        id,
        "nope",
        "artifact_type=archive",
        multipart("a.zip", b"PK"),
    )
    .await;
    assert_eq!(r.status(), 403);
    let r = upload(&lab, 999_999, token, "", multipart("a.zip", b"PK")).await;
    assert_eq!(r.status(), 404);
    let r = lab
        .http
        .post(lab.url(&format!("/jobs/{id}/artifacts")))
        .header("JOB-TOKEN", token)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = upload(&lab, id, token, "", multipart("a.zip", &[0u8; 2048])).await;
    assert_eq!(r.status(), 413);

    // The archive, chunked like the runner sends it; the junit report.
    let zip: Vec<u8> = b"PK\x03\x04 fake zip \r\n-- with a dash line".to_vec();
    let status = upload_chunked(
        &lab,
        id,
        token,
        "artifact_format=zip&artifact_type=archive&expire_in=2+days",
        &multipart("artifacts.zip", &zip),
    )
    .await;
    assert_eq!(status, 201);
    let r = upload(
        &lab,
        id,
        token,
        "artifact_format=gzip&artifact_type=junit",
        multipart("junit.xml.gz", b"\x1f\x8b"),
    )
    .await;
    assert_eq!(r.status(), 201);
    let stored = lab.mock.artifacts(id);
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].artifact_type, "archive");
    assert_eq!(stored[0].format, "zip");
    assert_eq!(stored[0].filename, "artifacts.zip");
    assert_eq!(stored[0].bytes, zip);
    assert_eq!(stored[0].expire_in.as_deref(), Some("2 days"));
    assert_eq!(stored[1].artifact_type, "junit");

    // Download with the job's own token, in full and by range.
    let get = |token: &str, range: Option<&str>| {
        let mut rq = lab
            .http
            .get(lab.url(&format!("/jobs/{id}/artifacts?direct_download=true")))
            .header("JOB-TOKEN", token);
        if let Some(r) = range {
            rq = rq.header("Range", r);
        }
        rq.send()
    };
    let r = get(token, None).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().to_vec(), zip);
    let r = get(token, Some("bytes=0-3")).await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        common::header(&r, "content-range").as_deref(),
        Some(&*format!("bytes 0-3/{}", zip.len()))
    );
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"PK\x03\x04");
    let r = get(token, Some("bytes=9999-")).await.unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(get("wrong", None).await.unwrap().status(), 403);
    succeed(&lab, &build).await;
    let nothing_id = lab.mock.pipeline(pid).job("nothing").unwrap().id;
    if lab.mock.job(nothing_id).unwrap().status != mock_gitlab::JobStatus::Success {
        let n = lab.take_job(&runner.token).await;
        succeed(&lab, &n).await;
    }

    // test: all earlier stages → only build has an archive.
    // only-nothing: dependencies: [nothing] → none.
    // deploy (needs: build, artifacts: false) starts right after build,
    // regardless of stages → no dependencies.
    let mut seen = 0;
    while seen < 3 {
        let j = lab.take_job(&runner.token).await;
        let deps = j["dependencies"].as_array().unwrap();
        match j["job_info"]["name"].as_str().unwrap() {
            "test" => {
                assert_eq!(deps.len(), 1, "{deps:?}");
                assert_eq!(deps[0]["id"], id);
                assert_eq!(deps[0]["name"], "build");
                assert_eq!(deps[0]["artifacts_file"]["filename"], "artifacts.zip");
                assert_eq!(deps[0]["artifacts_file"]["size"], zip.len());
                // The dependent job's own token (recent GitLab) downloads it.
                assert_eq!(deps[0]["token"], j["token"]);
                let r = get(j["token"].as_str().unwrap(), None).await.unwrap();
                assert_eq!(r.status(), 200);
                // A job without an archive → 404.
                let r = lab
                    .http
                    .get(lab.url(&format!("/jobs/{nothing_id}/artifacts")))
                    .header("JOB-TOKEN", j["token"].as_str().unwrap())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 404);
            }
            "only-nothing" | "deploy" => assert!(deps.is_empty(), "{deps:?}"),
            other => panic!("unexpected job {other}"),
        }
        succeed(&lab, &j).await;
        seen += 1;
    }
    let p = lab
        .mock
        .wait_pipeline(pid, std::time::Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(p.status, mock_gitlab::PipelineStatus::Success);

    // Uploads after the job finished are refused.
    let r = upload(&lab, id, token, "", multipart("a.zip", b"PK")).await;
    assert_eq!(r.status(), 403);
}

/// JUnit reports (gzip, as the runner uploads them) are counted per job in the pipeline's
/// `test_report_summary`, in the library and over REST; an unreadable one is a `suite_error`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn junit_reports_make_the_test_report_summary() {
    use std::io::Write;
    let ci = r#"
unit:
  script: x
  artifacts: {reports: {junit: report.xml}}
broken-report:
  script: x
  artifacts: {reports: {junit: report.xml}}
"#;
    let fx = temp_fixture(ci);
    let lab = Lab::start().await;
    let project = lab.mock.add_project("group/j", fx.path()).unwrap();
    let runner = lab.mock.create_runner(RunnerSpec::default());
    let pid = lab.mock.create_pipeline("group/j", "main").unwrap();
    let xml = r#"<testsuites><testsuite name="s">
<testcase name="a" time="0.25"/><testcase name="b"><failure/></testcase>
<testcase name="c"><skipped/></testcase></testsuite></testsuites>"#;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(xml.as_bytes()).unwrap();
    let gz = gz.finish().unwrap();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let j = lab.take_job(&runner.token).await;
        let id = j["id"].as_u64().unwrap();
        let token = j["token"].as_str().unwrap();
        let body: &[u8] = if j["job_info"]["name"] == "unit" {
            &gz
        } else {
            b"\x1f\x8b not really"
        };
        let r = upload(
            &lab,
            id,
            token,
            "artifact_format=gzip&artifact_type=junit",
            multipart("junit.xml.gz", body),
        )
        .await;
        assert_eq!(r.status(), 201);
        succeed(&lab, &j).await;
        ids.push((j["job_info"]["name"].as_str().unwrap().to_string(), id));
    }
    let s = lab.mock.test_report_summary(pid).unwrap();
    assert_eq!(
        (
            s.total.count,
            s.total.success,
            s.total.failed,
            s.total.skipped
        ),
        (3, 1, 1, 1)
    );
    let unit = s.suites.iter().find(|t| t.name == "unit").unwrap();
    assert_eq!(unit.counts.count, 3);
    assert!(unit.suite_error.is_none());
    let broken = s.suites.iter().find(|t| t.name == "broken-report").unwrap();
    assert!(
        broken.suite_error.as_deref().unwrap().contains("gzip"),
        "{broken:?}"
    );
    let r: Value = lab
        .http
        .get(lab.url(&format!(
            "/projects/{}/pipelines/{}/test_report_summary",
            project.id, pid.0
        )))
        .header("PRIVATE-TOKEN", lab.mock.admin_token())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["total"]["count"], 3);
    assert_eq!(r["total"]["failed"], 1);
    assert_eq!(r["total"]["time"], 0.25);
    let unit_id = ids.iter().find(|(n, _)| n == "unit").unwrap().1;
    let suite = r["test_suites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "unit")
        .unwrap();
    assert_eq!(suite["build_ids"], json!([unit_id]));
    assert_eq!(suite["skipped_count"], 1);
    assert!(r["total"]["suite_error"].is_string());
}
