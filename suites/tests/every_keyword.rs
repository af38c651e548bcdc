//! Issue #5's "done when": the `every-keyword` fixture (every `.gitlab-ci.yml` keyword the
//! issue lists) runs through the REAL gitlab-runner (`run-single`, shell executor, on this
//! host) against mock-gitlab, with the expected job graph, statuses, artifacts passed between
//! jobs and a JUnit report stored.
//!
//! No Podman lab: the shell executor runs the jobs here, so `image:` and `services:` are
//! asserted from the payload the runner received, not from the trace.

use std::collections::BTreeSet;
use std::io::Read;
use std::time::Duration;

mod support;
use support::{MockLab, Runner, fixture, runner_bin};

use mock_gitlab::{JobRecord, JobStatus, PipelineRecord, PipelineStatus, RunnerSpec, Variable};
use serde_json::{Value, json};

const PROJECT: &str = "group/every-keyword";
const SECRET: &str = "ek-s3cr3t-T0ken-9f2a7c";
const DEPLOY_KEY: &str = "protected-deploy-key";
const CONFIG: &str = "endpoint=https://deploy.example";

/// Jobs that run, attempts counted: 4 prepare, 2 compile + 2 shard + 2 flaky attempts +
/// 1 delayed, 5 test, 1 report, the played manual job, 1 cleanup. `run-single` exits after
/// as many.
const BUILDS: u32 = 19;
/// `start_in` of warmup-delayed.
const START_IN: Duration = Duration::from_secs(2);

/// The REST client of the mock's control API (GitLab's REST v4 subset).
struct Rest {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Rest {
    async fn get(&self, path: &str) -> Value {
        let r = self
            .http
            .get(format!("{}/api/v4{path}", self.base))
            .header("PRIVATE-TOKEN", &self.token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        assert!(status.is_success(), "GET {path}: {status} {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    async fn post(&self, path: &str) -> (reqwest::StatusCode, Value) {
        let r = self
            .http
            .post(format!("{}/api/v4{path}", self.base))
            .header("PRIVATE-TOKEN", &self.token)
            .header("Content-Type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }
}

/// Poll the REST API (with a deadline) until the manual job waits to be played, then play it.
async fn play_manual_job(rest: &Rest, project_id: u64, pid: u64, name: &str) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    let id = loop {
        let jobs = rest
            .get(&format!("/projects/{project_id}/pipelines/{pid}/jobs"))
            .await;
        let job = jobs
            .as_array()
            .and_then(|a| a.iter().find(|j| j["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no job {name} in {jobs}"));
        if job["status"] == "manual" {
            break job["id"].as_u64().expect("job id");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} never became manual: {}",
            job["status"]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (status, body) = rest
        .post(&format!("/projects/{project_id}/jobs/{id}/play"))
        .await;
    // Grape answers a POST with 201 unless told otherwise, as GitLab's play does.
    assert_eq!(status, 201, "play {name}: {body}");
    assert_eq!(body["status"], "pending", "play {name}: {body}");
    id
}

fn job<'a>(p: &'a PipelineRecord, name: &str) -> &'a JobRecord {
    p.job(name)
        .unwrap_or_else(|| panic!("no job {name:?} in the pipeline"))
}

/// The job graph as one line per job record (retried attempts included), in stage order then
/// id order: what a reader checks at a glance, and what the snapshot keeps.
fn graph(p: &PipelineRecord) -> String {
    let mut jobs: Vec<&JobRecord> = p.jobs.iter().collect();
    jobs.sort_by_key(|j| (p.stages.iter().position(|s| *s == j.stage), j.id));
    let mut out = format!("pipeline {}\n", p.status);
    for j in jobs {
        out.push_str(&format!(
            "{:<9} {:<26} {:<8} {:<13} exit={:<4} reason={}{}\n",
            j.stage,
            j.name,
            j.status.as_str(),
            if j.allow_failure { "allow_failure" } else { "" },
            j.exit_code.map_or("-".to_string(), |c| c.to_string()),
            j.failure_reason.as_deref().unwrap_or("-"),
            if j.retried { " (retried)" } else { "" },
        ));
    }
    out
}

/// File names in a zip archive, from its central directory (enough to see what was kept).
fn zip_names(bytes: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    let mut i = 0;
    while i + 46 <= bytes.len() {
        if bytes[i..i + 4] == [0x50, 0x4b, 0x01, 0x02] {
            let n = u16::from_le_bytes([bytes[i + 28], bytes[i + 29]]) as usize;
            let extra = u16::from_le_bytes([bytes[i + 30], bytes[i + 31]]) as usize;
            let comment = u16::from_le_bytes([bytes[i + 32], bytes[i + 33]]) as usize;
            if let Some(name) = bytes.get(i + 46..i + 46 + n) {
                names.push(String::from_utf8_lossy(name).into_owned());
            }
            i += 46 + n + extra + comment;
        } else {
            i += 1;
        }
    }
    names
}

fn dependency_names(payload: &Value) -> Vec<String> {
    payload["dependencies"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn payload_var<'a>(payload: &'a Value, key: &str) -> Option<&'a Value> {
    payload["variables"]
        .as_array()?
        .iter()
        .rev()
        .find(|v| v["key"] == key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_keyword_pipeline_runs_through_the_real_runner() {
    let started = std::time::Instant::now();
    let bin = runner_bin().await;
    let lab = MockLab::start().await;
    let project = lab
        .mock
        .add_project(PROJECT, &fixture("every-keyword"))
        .expect("add the fixture project");
    for v in [
        Variable {
            key: "SECRET_TOKEN".into(),
            value: SECRET.into(),
            masked: true,
            ..Default::default()
        },
        Variable {
            key: "DEPLOY_KEY".into(),
            value: DEPLOY_KEY.into(),
            protected: true,
            ..Default::default()
        },
        Variable {
            key: "CONFIG_FILE".into(),
            value: CONFIG.into(),
            file: true,
            ..Default::default()
        },
    ] {
        lab.mock.set_variable(PROJECT, v).expect("set variable");
    }
    // Tagged like the jobs (`default:tags: [shell]`).
    let runner = lab.mock.create_runner(RunnerSpec {
        tags: vec!["shell".into(), "lab".into()],
        ..RunnerSpec::default()
    });
    let pid = lab
        .mock
        .create_pipeline(PROJECT, "main")
        .unwrap_or_else(|e| panic!("the fixture does not lint:\n{e}"));

    // The exact set of jobs created: matrix and parallel expansions in, every rules-excluded
    // and `when: never` job out.
    let created: BTreeSet<String> = lab
        .mock
        .pipeline(pid)
        .jobs
        .iter()
        .map(|j| j.name.clone())
        .collect();
    let want: BTreeSet<String> = [
        "prepare-sources",
        "rules-if-job",
        "rules-changes-job",
        "rules-exists-job",
        "compile: [amd64, release]",
        "compile: [arm64, release]",
        "shard 1/2",
        "shard 2/2",
        "flaky",
        "warmup-delayed",
        "dag-consumer",
        "unit-tests",
        "variables-job",
        "allowed-to-fail",
        "broken-test",
        "on-failure-notify",
        "deploy-staging",
        "deploy-manual",
        "cleanup-always",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(created, want, "jobs created");

    let rest = Rest {
        http: reqwest::Client::new(),
        base: lab.mock.local_url(),
        token: lab.mock.admin_token(),
    };
    // workflow:rules' `when: never`: a pipeline made through the API (source `api`, not `push`)
    // is not created at all.
    let (status, body) = rest
        .post(&format!("/projects/{}/pipeline?ref=main", project.id))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.to_string()
            .contains("Pipeline filtered out by workflow rules"),
        "{body}"
    );

    let mut r = Runner::spawn(&bin, &lab, &runner.token, BUILDS);
    let manual_id = play_manual_job(&rest, project.id, pid.0, "deploy-manual").await;
    let p = lab
        .mock
        .wait_pipeline(pid, Duration::from_secs(240))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", graph(&lab.mock.pipeline(pid))));
    assert!(
        r.wait_exit(Duration::from_secs(30)).await,
        "the runner did not exit after {BUILDS} builds:\n{}",
        graph(&p)
    );
    let g = graph(&p);
    eprintln!("{g}");

    // Statuses. broken-test fails for real, so the pipeline fails; allowed-to-fail's exit 42
    // is allowed; flaky passes on its retry; on_failure runs, on_success after it is skipped.
    assert_eq!(p.status, PipelineStatus::Failed, "{g}");
    let status = |n: &str| job(&p, n).status;
    for n in [
        "prepare-sources",
        "rules-if-job",
        "rules-changes-job",
        "rules-exists-job",
        "compile: [amd64, release]",
        "compile: [arm64, release]",
        "shard 1/2",
        "shard 2/2",
        "flaky",
        "warmup-delayed",
        "dag-consumer",
        "unit-tests",
        "variables-job",
        "on-failure-notify",
        "deploy-manual",
        "cleanup-always",
    ] {
        assert_eq!(status(n), JobStatus::Success, "{n}:\n{g}");
    }
    let allowed = job(&p, "allowed-to-fail");
    assert_eq!(
        (allowed.status, allowed.exit_code, allowed.allow_failure),
        (JobStatus::Failed, Some(42), true),
        "{g}"
    );
    let broken = job(&p, "broken-test");
    assert_eq!(
        (
            broken.status,
            broken.exit_code,
            broken.failure_reason.as_deref()
        ),
        (JobStatus::Failed, Some(1), Some("script_failure")),
        "{g}"
    );
    assert!(!broken.allow_failure, "{g}");
    assert_eq!(
        p.attempts("broken-test").len(),
        1,
        "not retried (default retry: runner_system_failure only)"
    );
    assert_eq!(status("deploy-staging"), JobStatus::Skipped, "{g}");
    let manual = job(&p, "deploy-manual");
    assert_eq!(manual.id, manual_id);
    assert!(manual.allow_failure, "when: manual may fail by default");

    // retry: max 2, when script_failure — the first attempt fails, the second passes.
    let flaky = p.attempts("flaky");
    assert_eq!(flaky.len(), 2, "{g}");
    assert_eq!(flaky[0].status, JobStatus::Failed);
    assert_eq!(flaky[0].failure_reason.as_deref(), Some("script_failure"));
    assert!(flaky[0].retried);
    assert_eq!(flaky[1].retry_of, Some(flaky[0].id));
    let t = flaky[1].normalized_trace();
    assert!(
        t.contains(&format!(
            "second attempt passes (first was job {})",
            flaky[0].id
        )),
        "{t}"
    );

    // Order. The DAG job (stage test) needs only prepare-sources: it is dispatched before any
    // build-stage job, and finishes before that stage does. on_failure runs after the failure.
    let dag = job(&p, "dag-consumer");
    let build_jobs: Vec<&JobRecord> = p.jobs.iter().filter(|j| j.stage == "build").collect();
    assert!(!build_jobs.is_empty());
    for b in &build_jobs {
        assert!(
            dag.dispatched_at.unwrap() < b.dispatched_at.unwrap(),
            "dag-consumer was dispatched after {} of the build stage:\n{g}",
            b.name
        );
    }
    let build_end = build_jobs.iter().filter_map(|b| b.finished_at).max();
    assert!(dag.finished_at.unwrap() < build_end.unwrap(), "{g}");
    // when: delayed — due start_in after its stage opened (the prepare stage ended), and
    // not queued before that.
    let delayed = job(&p, "warmup-delayed");
    let due = delayed.scheduled_at.expect("warmup-delayed was scheduled");
    let prepare_end = p
        .jobs
        .iter()
        .filter(|j| j.stage == "prepare")
        .filter_map(|j| j.finished_at)
        .max()
        .unwrap();
    assert!(due >= prepare_end + START_IN, "{g}");
    assert!(delayed.queued_at.unwrap() >= due, "{g}");
    let notify = job(&p, "on-failure-notify");
    assert!(notify.dispatched_at.unwrap() > broken.finished_at.unwrap());

    // Artifacts: prepare-sources uploads out/ without the excluded *.log, kept 1 hour.
    let arts = lab.mock.artifacts(job(&p, "prepare-sources").id);
    let archive = arts
        .iter()
        .find(|a| a.artifact_type == "archive")
        .expect("prepare-sources archive");
    assert_eq!(archive.expire_in.as_deref(), Some("1 hour"));
    let names = zip_names(&archive.bytes);
    assert!(names.iter().any(|n| n == "out/keep.txt"), "{names:?}");
    assert!(!names.iter().any(|n| n.ends_with(".log")), "{names:?}");
    // …downloaded by the DAG job (needs:artifacts) and by unit-tests (dependencies).
    for n in ["dag-consumer", "unit-tests"] {
        let t = job(&p, n).normalized_trace();
        assert!(
            t.contains("artifact made by prepare-sources from template-var"),
            "{n}:\n{t}"
        );
        assert!(t.contains("excluded file absent"), "{n}:\n{t}");
    }
    // artifacts:when on_failure: the failed job's debug log is kept.
    let broken_arts = lab.mock.artifacts(broken.id);
    assert!(
        broken_arts.iter().any(|a| a.artifact_type == "archive"
            && zip_names(&a.bytes).contains(&"debug/failure.log".to_string())),
        "broken-test artifacts: {:?}",
        broken_arts
            .iter()
            .map(|a| (&a.artifact_type, zip_names(&a.bytes)))
            .collect::<Vec<_>>()
    );

    // The JUnit report: stored as GitLab stores it (gzip), with the job's test cases.
    let ut = job(&p, "unit-tests");
    let reports = lab.mock.artifacts(ut.id);
    let junit = reports
        .iter()
        .find(|a| a.artifact_type == "junit")
        .unwrap_or_else(|| {
            let types: Vec<&String> = reports.iter().map(|a| &a.artifact_type).collect();
            panic!("no junit report stored, only {types:?}")
        });
    assert_eq!(junit.format, "gzip");
    assert_eq!(junit.expire_in.as_deref(), Some("2 days"));
    let mut xml = String::new();
    flate2::read::GzDecoder::new(&junit.bytes[..])
        .read_to_string(&mut xml)
        .expect("the junit report is gzip");
    assert_eq!(xml.matches("<testcase ").count(), 3, "{xml}");
    assert_eq!(xml.matches("<skipped/>").count(), 1, "{xml}");
    assert!(
        reports.iter().all(|a| a.artifact_type != "archive"),
        "reports only"
    );
    // …and counted by the mock as GitLab's pipeline test report does (one suite per job).
    let summary = rest
        .get(&format!(
            "/projects/{}/pipelines/{pid}/test_report_summary",
            project.id
        ))
        .await;
    let total = &summary["total"];
    assert_eq!(
        (
            &total["count"],
            &total["success"],
            &total["failed"],
            &total["skipped"]
        ),
        (&json!(3), &json!(2), &json!(0), &json!(1)),
        "{summary}"
    );
    assert_eq!(summary["test_suites"][0]["name"], "unit-tests", "{summary}");
    assert_eq!(summary["test_suites"][0]["build_ids"], json!([ut.id]));

    // Variables: override and expansion order, raw, rules and workflow variables, templates.
    let t = ut.normalized_trace();
    assert!(t.contains("greeting line hi world"), "{t}");
    let short_sha: String = project.sha.chars().take(8).collect();
    assert!(
        t.contains(&format!("job label every-keyword-{short_sha}/unit")),
        "{t}"
    );
    assert!(t.contains("raw text $APP_NAME stays literal"), "{t}");
    let t = job(&p, "rules-if-job").normalized_trace();
    assert!(t.contains("rule var from-rules workflow full"), "{t}");
    let t = job(&p, "rules-exists-job").normalized_trace();
    assert!(t.contains("exists app source"), "{t}");
    let t = job(&p, "compile: [arm64, release]").normalized_trace();
    assert!(
        t.contains("compile ARCH=arm64 MODE=release node=2/2"),
        "{t}"
    );
    assert!(t.contains("cache has vendored by prepare-sources"), "{t}");
    assert!(
        job(&p, "shard 2/2")
            .normalized_trace()
            .contains("shard 2 of 2")
    );
    let t = job(&p, "prepare-sources").normalized_trace();
    assert!(
        t.contains(&format!(
            "context prepare-sources stage=prepare pipeline={pid}"
        )),
        "!reference: {t}"
    );
    assert!(
        t.contains("default before_script for prepare-sources"),
        "{t}"
    );
    assert!(
        t.contains("default after_script for prepare-sources status=success"),
        "{t}"
    );
    // Masked, protected and file-type project variables; predefined ones.
    let t = job(&p, "variables-job").normalized_trace();
    assert!(t.contains("secret is [MASKED]"), "{t}");
    assert!(
        t.contains(&format!("deploy key length {}", DEPLOY_KEY.len())),
        "{t}"
    );
    assert!(t.contains(&format!("config file {CONFIG}")), "{t}");
    assert!(
        t.contains("CI_PROJECT_PATH=group/every-keyword CI_COMMIT_BRANCH=main CI_PIPELINE_SOURCE=push CI_JOB_STAGE=test"),
        "{t}"
    );
    for j in &p.jobs {
        assert!(
            !j.trace_text().contains(SECRET),
            "the masked value reached the trace of {}",
            j.name
        );
    }

    // The payloads: image and services (ignored by the shell executor), timeouts, cache
    // policies, artifacts options and the dependencies each job was given.
    let payload = |n: &str| {
        lab.mock
            .job_payload(job(&p, n).id)
            .unwrap_or_else(|| panic!("{n} has no payload"))
    };
    let pc = payload("compile: [amd64, release]");
    assert_eq!(
        pc["image"]["name"],
        "docker.io/library/debian:bookworm-slim"
    );
    assert_eq!(pc["image"]["entrypoint"], json!([""]));
    assert_eq!(pc["services"].as_array().map(Vec::len), Some(1));
    let svc = &pc["services"][0];
    assert_eq!(svc["name"], "docker.io/library/redis:7");
    assert_eq!(svc["alias"], "cache-db");
    assert_eq!(
        svc["entrypoint"],
        json!(["/usr/local/bin/docker-entrypoint.sh"])
    );
    assert_eq!(svc["command"], json!(["redis-server", "--save", ""]));
    assert_eq!(pc["runner_info"]["timeout"], 600, "default:timeout 10m");
    assert_eq!(pc["cache"][0]["policy"], "pull");
    assert_eq!(pc["cache"][0]["key"], "deps-$CI_COMMIT_REF_SLUG-protected");
    assert_eq!(
        payload_var(&pc, "ARCH").map(|v| v["value"].clone()),
        Some(json!("amd64"))
    );
    assert_eq!(dependency_names(&pc), ["prepare-sources"]);
    let pu = payload("unit-tests");
    assert_eq!(pu["runner_info"]["timeout"], 300);
    assert_eq!(pu["steps"][0]["timeout"], 300);
    assert_eq!(dependency_names(&pu), ["prepare-sources"]);
    assert_eq!(
        dependency_names(&payload("dag-consumer")),
        ["prepare-sources"]
    );
    assert!(
        dependency_names(&payload("variables-job")).is_empty(),
        "needs:artifacts false"
    );
    assert!(dependency_names(&payload("deploy-manual")).is_empty());
    assert!(dependency_names(&payload("cleanup-always")).is_empty());
    let pp = payload("prepare-sources");
    assert_eq!(pp["cache"][0]["policy"], "push");
    let a = &pp["artifacts"][0];
    assert_eq!(
        (&a["paths"], &a["exclude"], &a["when"], &a["expire_in"]),
        (
            &json!(["out/"]),
            &json!(["out/*.log"]),
            &json!("on_success"),
            &json!("1 hour")
        )
    );
    let pv = payload("variables-job");
    let var = |k: &str| payload_var(&pv, k).unwrap_or_else(|| panic!("no {k} in the payload"));
    assert_eq!(var("SECRET_TOKEN")["masked"], true);
    assert_eq!(var("CONFIG_FILE")["file"], true);
    assert_eq!(var("DEPLOY_KEY")["value"], DEPLOY_KEY);
    assert_eq!(var("WORKFLOW_FLAVOUR")["value"], "full");
    assert_eq!(var("RAW_TEXT")["raw"], true);

    // tags: default:tags reach every job, a job's own (from the extended template) too.
    for n in ["unit-tests", "prepare-sources"] {
        let j = rest
            .get(&format!("/projects/{}/jobs/{}", project.id, job(&p, n).id))
            .await;
        assert_eq!(j["tag_list"], json!(["shell"]), "{n}: {j}");
    }

    insta::assert_snapshot!("every_keyword_graph", g);
    eprintln!(
        "every-keyword: {} job records, {:.1} s",
        p.jobs.len(),
        started.elapsed().as_secs_f64()
    );
}
