//! Payload completeness (image, services, cache, variables) and pipeline
//! keywords (extends, !reference, include, rules, workflow, parallel,
//! needs, retry), plus cancel, all over HTTP.

mod common;

use std::time::Duration;

use common::{Lab, crc, header};
use mock_gitlab::{JobStatus, PipelineStatus, RunnerSpec, Variable};
use serde_json::{Value, json};

fn fixture_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for (name, content) in files {
        let p = d.path().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    d
}

async fn setup(files: &[(&str, &str)]) -> (Lab, String, mock_gitlab::PipelineId) {
    let fx = fixture_with(files);
    let lab = Lab::start().await;
    lab.mock.add_project("group/p", fx.path()).unwrap();
    let runner = lab.mock.create_runner(RunnerSpec::default());
    let pid = lab.mock.create_pipeline("group/p", "main").unwrap();
    (lab, runner.token, pid)
}

async fn finish(lab: &Lab, job: &Value, state: &str, exit_code: Option<i32>) -> reqwest::Response {
    let id = job["id"].as_u64().unwrap();
    let token = job["token"].as_str().unwrap();
    let mut body = json!({"token": token, "state": state,
        "output": {"checksum": crc(b""), "bytesize": 0}});
    if state == "failed" {
        body["failure_reason"] = json!("script_failure");
    }
    if let Some(c) = exit_code {
        body["exit_code"] = json!(c);
    }
    lab.put_job(id, body).await
}

fn var<'a>(job: &'a Value, key: &str) -> Option<&'a Value> {
    job["variables"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|v| v["key"] == key)
}

fn names(lab: &Lab, pid: mock_gitlab::PipelineId) -> Vec<String> {
    lab.mock
        .pipeline(pid)
        .jobs
        .iter()
        .map(|j| j.name.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn image_services_and_defaults_in_the_payload() {
    let ci = r#"
default:
  image: {name: "alpine:3", entrypoint: [""], pull_policy: [always, if-not-present], docker: {user: "1000:1000"}}
  services:
    - redis:7
    - name: postgres:16
      alias: db,pg
      entrypoint: [docker-entrypoint.sh]
      command: [postgres, -c, fsync=off]
      variables: {POSTGRES_PASSWORD: pw}
job:
  script: echo hi
plain:
  image: busybox
  services: []
  script: echo hi
"#;
    let (lab, token, _) = setup(&[(".gitlab-ci.yml", ci)]).await;
    for _ in 0..2 {
        let j = lab.take_job(&token).await;
        if j["job_info"]["name"] == "plain" {
            assert_eq!(j["image"], json!({"name": "busybox", "ports": []}));
            assert_eq!(j["services"], json!([]));
        } else {
            let img = &j["image"];
            assert_eq!(img["name"], "alpine:3");
            assert_eq!(img["entrypoint"], json!([""]));
            assert_eq!(img["pull_policy"], json!(["always", "if-not-present"]));
            assert_eq!(
                img["executor_opts"],
                json!({"docker": {"user": "1000:1000"}})
            );
            let s = j["services"].as_array().unwrap();
            assert_eq!(s[0], json!({"name": "redis:7", "ports": []}));
            assert_eq!(s[1]["alias"], "db,pg");
            assert_eq!(s[1]["entrypoint"], json!(["docker-entrypoint.sh"]));
            assert_eq!(s[1]["command"], json!(["postgres", "-c", "fsync=off"]));
            assert_eq!(s[1]["variables"][0]["key"], "POSTGRES_PASSWORD");
            assert_eq!(s[1]["variables"][0]["value"], "pw");
            // CI_JOB_IMAGE is the runner's to set.
            assert!(var(&j, "CI_JOB_IMAGE").is_none());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn project_variables_override_yaml_and_are_typed() {
    let ci = r#"
variables: {A: global, B: global, REF: "$A-ref"}
job:
  variables: {B: job, C: job}
  script: echo
"#;
    let fx = fixture_with(&[(".gitlab-ci.yml", ci)]);
    let lab = Lab::start().await;
    lab.mock.add_project("group/v", fx.path()).unwrap();
    assert!(
        lab.mock
            .set_variable(
                "group/v",
                Variable {
                    key: "X".into(),
                    value: "short".into(),
                    masked: true,
                    ..Default::default()
                }
            )
            .is_err(),
        "masked values need 8+ characters"
    );
    assert!(
        lab.mock
            .set_variable(
                "nope/nope",
                Variable {
                    key: "X".into(),
                    ..Default::default()
                }
            )
            .is_err()
    );
    for v in [
        Variable {
            key: "C".into(),
            value: "project".into(),
            ..Default::default()
        },
        Variable {
            key: "SECRET".into(),
            value: "s3cr3t-value".into(),
            masked: true,
            protected: true,
            ..Default::default()
        },
        Variable {
            key: "CFG".into(),
            value: "a=b\n".into(),
            file: true,
            ..Default::default()
        },
        Variable {
            key: "RAWV".into(),
            value: "$NOT_EXPANDED".into(),
            raw: true,
            ..Default::default()
        },
    ] {
        lab.mock.set_variable("group/v", v).unwrap();
    }
    assert_eq!(lab.mock.variables("group/v").len(), 4);
    let runner = lab.mock.create_runner(RunnerSpec::default());
    lab.mock.create_pipeline("group/v", "main").unwrap();
    let j = lab.take_job(&runner.token).await;
    assert_eq!(var(&j, "A").unwrap()["value"], "global");
    assert_eq!(var(&j, "B").unwrap()["value"], "job");
    assert_eq!(var(&j, "C").unwrap()["value"], "project");
    // GitLab resolves references between variables before sending them.
    assert_eq!(var(&j, "REF").unwrap()["value"], "global-ref");
    let s = var(&j, "SECRET").unwrap();
    assert_eq!(s["masked"], true);
    assert_eq!(s["public"], false);
    let f = var(&j, "CFG").unwrap();
    assert_eq!(f["file"], true);
    assert_eq!(f["value"], "a=b\n");
    assert_eq!(var(&j, "RAWV").unwrap()["raw"], true);
    let vars = j["variables"].as_array().unwrap();
    let pos = |k: &str| vars.iter().position(|v| v["key"] == k).unwrap();
    assert!(
        pos("C") > pos("B"),
        "project variables come after YAML ones"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cache_entries() {
    let ci = r#"
job:
  cache:
    - key: deps
      paths: [vendor/]
      policy: pull
      fallback_keys: [main]
    - key: {files: [Gemfile.lock], prefix: gems}
      paths: [gems/]
      untracked: true
      when: always
  script: echo
"#;
    let (lab, token, _) = setup(&[(".gitlab-ci.yml", ci), ("Gemfile.lock", "rack 3\n")]).await;
    let j = lab.take_job(&token).await;
    let c = j["cache"].as_array().unwrap();
    assert_eq!(c[0]["key"], "deps-protected");
    assert_eq!(c[0]["policy"], "pull");
    assert_eq!(c[0]["paths"], json!(["vendor/"]));
    assert_eq!(c[0]["fallback_keys"], json!(["main-protected"]));
    assert_eq!(c[0]["when"], "on_success");
    let k = c[1]["key"].as_str().unwrap();
    assert!(
        k.starts_with("gems-") && k.ends_with("-protected") && k.len() > 30,
        "{k}"
    );
    assert_eq!(c[1]["untracked"], true);
    assert_eq!(c[1]["policy"], "pull-push");
    assert_eq!(c[1]["when"], "always");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn extends_reference_and_include() {
    let ci = r#"
include:
  - local: ci/common.yml
  - /ci/more.yml
.base:
  variables: {A: base, B: base}
  before_script: [echo base]
.mid:
  extends: .base
  variables: {B: mid}
.other:
  tags: []
job:
  extends: [.mid, .other]
  variables: {C: job}
  script:
    - !reference [.setup, script]
    - echo job
"#;
    let common = ".setup:\n  script: [echo setup-1, echo setup-2]\n";
    let more = "included:\n  script: echo included\n";
    let (lab, token, pid) = setup(&[
        (".gitlab-ci.yml", ci),
        ("ci/common.yml", common),
        ("ci/more.yml", more),
    ])
    .await;
    let mut n = names(&lab, pid);
    n.sort();
    assert_eq!(n, vec!["included", "job"]);
    for _ in 0..2 {
        let j = lab.take_job(&token).await;
        if j["job_info"]["name"] == "job" {
            assert_eq!(var(&j, "A").unwrap()["value"], "base");
            assert_eq!(var(&j, "B").unwrap()["value"], "mid");
            assert_eq!(var(&j, "C").unwrap()["value"], "job");
            assert_eq!(
                j["steps"][0]["script"],
                json!(["echo base", "echo setup-1", "echo setup-2", "echo job"])
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keyword_lint_errors() {
    let lab = Lab::start().await;
    let cases: &[(&str, &str)] = &[
        (
            "j:\n  extends: .nope\n  script: x\n",
            "j: unknown keys in `extends` (.nope)",
        ),
        (
            ".a:\n  extends: .b\n.b:\n  extends: .a\nj:\n  extends: .a\n  script: x\n",
            "circular dependency",
        ),
        (
            "j:\n  script: [!reference [.x, script]]\n",
            "!reference [.x, script] could not be found",
        ),
        (
            "include: {remote: 'https://x/y.yml'}\nj:\n  script: x\n",
            "include:remote is not supported",
        ),
        (
            "j:\n  script: x\n  needs: [nope]\n",
            "'j' job needs 'nope' job, but 'nope' does not exist",
        ),
        (
            "j:\n  script: x\n  dependencies: [nope]\n",
            "undefined dependency: nope",
        ),
        (
            "a:\n  stage: deploy\n  script: x\nj:\n  script: x\n  needs: [a]\n",
            "is in a later stage",
        ),
        (
            "j:\n  script: x\n  rules: [{if: '$A =='}]\n",
            "invalid expression syntax",
        ),
        (
            "j:\n  script: x\n  when: always\n  rules: [{when: always}]\n",
            "may not be used with `rules`: when",
        ),
        ("j:\n  script: x\n  retry: 3\n", "must be between 0 and 2"),
        (
            "j:\n  script: x\n  parallel: 0\n",
            "greater than or equal to 1",
        ),
        (
            "j:\n  script: x\n  artifacts: {reports: {sast: x.json}}\n",
            "reports:sast is not supported",
        ),
        (
            "j:\n  script: x\n  cache: {key: a/b}\n",
            "cannot contain the \"/\" character",
        ),
        (
            "j:\n  script: x\n  services: [{name: x, ports: [80]}]\n",
            "unknown keys: ports",
        ),
        (
            "j:\n  script: x\n  image: {name: x, docker: {privileged: true}}\n",
            "docker config contains unknown keys: privileged",
        ),
        (
            "workflow:\n  rules: [{if: '$CI_COMMIT_BRANCH == \"dev\"'}]\nj:\n  script: x\n",
            "Pipeline filtered out by workflow rules",
        ),
        (
            "j:\n  script: x\n  only: [main]\n",
            "only config is not supported",
        ),
    ];
    for (i, (src, want)) in cases.iter().enumerate() {
        let fx = fixture_with(&[(".gitlab-ci.yml", src)]);
        let path = format!("group/lint{i}");
        lab.mock.add_project(&path, fx.path()).unwrap();
        let err = lab
            .mock
            .create_pipeline(&path, "main")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(want),
            "for {src:?}: got {err:?}, want {want:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rules_workflow_and_exists() {
    let ci = r#"
workflow:
  rules:
    - if: $CI_PIPELINE_SOURCE == "merge_request_event"
      when: never
    - when: always
variables: {MODE: fast}
on-main:
  script: x
  rules:
    - if: '$CI_COMMIT_BRANCH == "main" && ($MODE == "fast" || $MODE == "slow")'
      when: always
      allow_failure: true
      variables: {FROM_RULE: "yes"}
not-dev:
  script: x
  rules:
    - if: $CI_COMMIT_BRANCH =~ /^dev/
    - if: $CI_COMMIT_BRANCH !~ /^DEV/i
      when: manual
never:
  script: x
  rules:
    - if: $CI_COMMIT_TAG
has-readme:
  script: x
  rules:
    - exists: ["*.md"]
has-go:
  script: x
  rules:
    - exists: ["**/*.go"]
project-var:
  script: x
  rules:
    - if: $DEPLOY == "yes"
changes:
  script: x
  rules:
    - changes: [src/**/*]
"#;
    let fx = fixture_with(&[(".gitlab-ci.yml", ci), ("README.md", "hi\n")]);
    let lab = Lab::start().await;
    lab.mock.add_project("group/r", fx.path()).unwrap();
    lab.mock
        .set_variable(
            "group/r",
            Variable {
                key: "DEPLOY".into(),
                value: "yes".into(),
                ..Default::default()
            },
        )
        .unwrap();
    let runner = lab.mock.create_runner(RunnerSpec::default());
    let pid = lab.mock.create_pipeline("group/r", "main").unwrap();
    let mut n = names(&lab, pid);
    n.sort();
    assert_eq!(
        n,
        vec!["changes", "has-readme", "not-dev", "on-main", "project-var"]
    );
    let p = lab.mock.pipeline(pid);
    assert!(p.job("on-main").unwrap().allow_failure);
    // manual from the rule → skipped (manual jobs are not run by the mock).
    assert_eq!(p.job("not-dev").unwrap().status, JobStatus::Skipped);
    let mut seen = 0;
    while seen < 4 {
        let j = lab.take_job(&runner.token).await;
        if j["job_info"]["name"] == "on-main" {
            assert_eq!(var(&j, "FROM_RULE").unwrap()["value"], "yes");
        }
        finish(&lab, &j, "success", None).await;
        seen += 1;
    }
    let p = lab
        .mock
        .wait_pipeline(pid, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(p.status, PipelineStatus::Success);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_and_matrix() {
    let ci = r#"
shard:
  parallel: 3
  script: x
matrix:
  parallel:
    matrix:
      - OS: [linux, mac]
        ARCH: amd64
      - OS: windows
  script: x
after:
  stage: deploy
  needs: [shard]
  script: x
"#;
    let (lab, token, pid) = setup(&[(".gitlab-ci.yml", ci)]).await;
    assert_eq!(
        names(&lab, pid),
        vec![
            "shard 1/3",
            "shard 2/3",
            "shard 3/3",
            "matrix: [linux, amd64]",
            "matrix: [mac, amd64]",
            "matrix: [windows]",
            "after"
        ]
    );
    let mut shards = 0;
    loop {
        let j = lab.take_job(&token).await;
        let name = j["job_info"]["name"].as_str().unwrap().to_string();
        if name == "after" {
            // DAG: after the three shards, while matrix jobs may still run.
            assert_eq!(shards, 3);
            break;
        }
        if name.starts_with("shard") {
            assert_eq!(var(&j, "CI_NODE_TOTAL").unwrap()["value"], "3");
            let idx = var(&j, "CI_NODE_INDEX").unwrap()["value"]
                .as_str()
                .unwrap()
                .to_string();
            assert_eq!(name, format!("shard {idx}/3"));
            shards += 1;
        } else if name == "matrix: [mac, amd64]" {
            assert_eq!(var(&j, "OS").unwrap()["value"], "mac");
            assert_eq!(var(&j, "ARCH").unwrap()["value"], "amd64");
            assert_eq!(var(&j, "CI_NODE_INDEX").unwrap()["value"], "2");
            assert_eq!(var(&j, "CI_NODE_TOTAL").unwrap()["value"], "3");
            // Keep one matrix job running to show `after` does not wait for it.
            continue;
        }
        finish(&lab, &j, "success", None).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn needs_start_jobs_regardless_of_stage() {
    let ci = r#"
stages: [build, test, deploy]
slow:
  stage: build
  script: x
fast:
  stage: build
  script: x
after-fast:
  stage: deploy
  needs: [fast]
  script: x
no-needs:
  stage: test
  needs: []
  script: x
stage-job:
  stage: test
  script: x
"#;
    let (lab, token, pid) = setup(&[(".gitlab-ci.yml", ci)]).await;
    let p = lab.mock.pipeline(pid);
    // `needs: []` starts at once.
    assert_eq!(p.job("no-needs").unwrap().status, JobStatus::Pending);
    let mut running = std::collections::HashMap::new();
    for _ in 0..3 {
        let j = lab.take_job(&token).await;
        running.insert(j["job_info"]["name"].as_str().unwrap().to_string(), j);
    }
    finish(&lab, &running["fast"], "success", None).await;
    let j = lab.take_job(&token).await;
    assert_eq!(j["job_info"]["name"], "after-fast");
    assert_eq!(
        lab.mock.pipeline(pid).job("stage-job").unwrap().status,
        JobStatus::Created
    );
    finish(&lab, &j, "failed", Some(1)).await;
    finish(&lab, &running["slow"], "success", None).await;
    finish(&lab, &running["no-needs"], "success", None).await;
    let j = lab.take_job(&token).await;
    assert_eq!(j["job_info"]["name"], "stage-job");
    finish(&lab, &j, "success", None).await;
    let p = lab
        .mock
        .wait_pipeline(pid, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(p.status, PipelineStatus::Failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retry_requeues_as_a_new_job_and_exit_codes_allow_failure() {
    let ci = r#"
flaky:
  retry: {max: 2, when: script_failure, exit_codes: [1]}
  script: x
no-retry-code:
  retry: {max: 2, exit_codes: [1]}
  script: x
soft:
  allow_failure: {exit_codes: [3]}
  script: x
"#;
    let (lab, token, pid) = setup(&[(".gitlab-ci.yml", ci)]).await;
    let mut ids = Vec::new();
    let mut done = false;
    while !done {
        let j = lab.take_job(&token).await;
        match j["job_info"]["name"].as_str().unwrap() {
            "flaky" => {
                ids.push(j["id"].as_u64().unwrap());
                if ids.len() < 3 {
                    finish(&lab, &j, "failed", Some(1)).await;
                } else {
                    finish(&lab, &j, "success", None).await;
                }
            }
            "no-retry-code" => {
                finish(&lab, &j, "failed", Some(2)).await;
            }
            _ => {
                finish(&lab, &j, "failed", Some(3)).await;
            }
        }
        let p = lab.mock.pipeline(pid);
        done = p.status.is_complete();
    }
    assert_eq!(ids.len(), 3, "two retries, three attempts");
    assert!(ids.windows(2).all(|w| w[1] > w[0]));
    let p = lab.mock.pipeline(pid);
    let attempts = p.attempts("flaky");
    assert_eq!(attempts.len(), 3);
    assert!(attempts[0].retried && attempts[1].retried && !attempts[2].retried);
    assert_eq!(attempts[2].retry_of, Some(attempts[1].id));
    assert_eq!(p.job("flaky").unwrap().status, JobStatus::Success);
    assert_eq!(p.attempts("no-retry-code").len(), 1);
    assert_eq!(p.job("soft").unwrap().status, JobStatus::Failed);
    // no-retry-code failed for real; soft's exit code 3 is an allowed failure.
    assert_eq!(p.status, PipelineStatus::Failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graceful_and_forced_cancel_over_http() {
    let ci = "stages: [a, b]\none:\n  stage: a\n  script: x\ntwo:\n  stage: a\n  script: x\nlater:\n  stage: b\n  script: x\n";
    let (lab, token, pid) = setup(&[(".gitlab-ci.yml", ci)]).await;
    let one = lab.take_job(&token).await;
    let two = lab.take_job(&token).await;
    let (one_id, one_tok) = (one["id"].as_u64().unwrap(), one["token"].as_str().unwrap());
    let (two_id, two_tok) = (two["id"].as_u64().unwrap(), two["token"].as_str().unwrap());
    assert_eq!(
        lab.put_job(one_id, json!({"token": one_tok, "state": "running"}))
            .await
            .status(),
        200
    );

    // Graceful: PATCH and PUT say `canceling`; the final `failed` → canceled.
    lab.mock.cancel_job(one_id, true).unwrap();
    assert!(lab.mock.job(one_id).unwrap().canceling);
    let r = lab
        .patch_trace(one_id, one_tok, Some("0-4"), b"hello")
        .await;
    assert_eq!(r.status(), 202);
    assert_eq!(header(&r, "job-status").as_deref(), Some("canceling"));
    let r = lab
        .put_job(one_id, json!({"token": one_tok, "state": "running"}))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "job-status").as_deref(), Some("canceling"));
    let r = lab
        .put_job(
            one_id,
            json!({"token": one_tok, "state": "failed", "failure_reason": "unknown_failure",
            "output": {"checksum": crc(b"hello"), "bytesize": 5}}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let j = lab.mock.job(one_id).unwrap();
    assert_eq!(j.status, JobStatus::Canceled);
    assert!(!j.canceling);
    assert_eq!(j.checksum_ok, Some(true));

    // Forced: canceled at once; the next PATCH/PUT gets 403 + canceled.
    lab.mock.cancel_job(two_id, false).unwrap();
    assert_eq!(lab.mock.job(two_id).unwrap().status, JobStatus::Canceled);
    let r = lab.patch_trace(two_id, two_tok, Some("0-1"), b"hi").await;
    assert_eq!(r.status(), 403);
    assert_eq!(header(&r, "job-status").as_deref(), Some("canceled"));
    let r = finish(&lab, &two, "failed", None).await;
    assert_eq!(r.status(), 403);
    assert_eq!(header(&r, "job-status").as_deref(), Some("canceled"));
    assert!(
        lab.mock.cancel_job(two_id, false).is_err(),
        "already canceled"
    );

    let p = lab
        .mock
        .wait_pipeline(pid, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(p.job("later").unwrap().status, JobStatus::Skipped);
    assert_eq!(p.status, PipelineStatus::Canceled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_pipeline_cancels_pending_and_created_jobs() {
    let ci = "stages: [a, b]\none:\n  stage: a\n  script: x\ntwo:\n  stage: b\n  script: x\n";
    let (lab, token, pid) = setup(&[(".gitlab-ci.yml", ci)]).await;
    lab.mock.cancel_pipeline(pid, true).unwrap();
    let p = lab.mock.pipeline(pid);
    assert_eq!(p.status, PipelineStatus::Canceled);
    assert!(p.jobs.iter().all(|j| j.status == JobStatus::Canceled));
    // Nothing is handed out any more.
    assert_eq!(lab.request_job(&token, None).await.status(), 204);
}

/// GitLab resolves references between variables before it sends them (the runner expands one
/// level only, so a two-level reference reached a real runner's job unexpanded); raw and
/// file-type references, undefined names and `$$` are left for the runner, as GitLab does.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nested_variable_references_are_resolved_in_the_payload() {
    let ci = r#"
variables:
  APP: app
  LABEL: "$APP-$CI_COMMIT_SHORT_SHA"
  GREETING: hello
  LINE: "${GREETING} world"
  RAW: {value: "$APP literal", expand: false}
  KEEP: "$RAW|$CFG|$UNDEFINED|$$APP|$1"
  LOOP_A: "$LOOP_B"
job:
  variables:
    GREETING: hi
    JOB_LABEL: "$LABEL/job"
    APP: "$APP-v2"
  script: echo
"#;
    let (lab, token, _) = setup(&[(".gitlab-ci.yml", ci)]).await;
    lab.mock
        .set_variable(
            "group/p",
            Variable {
                key: "CFG".into(),
                value: "a=$APP".into(),
                file: true,
                ..Default::default()
            },
        )
        .unwrap();
    // Pipelines read project variables when they are created: make a second one.
    let pid = lab.mock.create_pipeline("group/p", "main").unwrap();
    let mut j = lab.take_job(&token).await;
    while j["job_info"]["pipeline_id"] != pid.0 {
        j = lab.take_job(&token).await;
    }
    let val = |k: &str| var(&j, k).unwrap()["value"].as_str().unwrap().to_string();
    let short = val("CI_COMMIT_SHORT_SHA");
    // The job's APP references its own name: it means the definition before it (the global).
    assert_eq!(val("APP"), "app-v2");
    assert_eq!(val("LABEL"), format!("app-v2-{short}"));
    assert_eq!(val("JOB_LABEL"), format!("app-v2-{short}/job"));
    // The last definition of a name wins, as the runner's own expansion does.
    assert_eq!(val("LINE"), "hi world");
    assert_eq!(val("RAW"), "$APP literal");
    assert_eq!(val("KEEP"), "$RAW|$CFG|$UNDEFINED|$$APP|$1");
    assert_eq!(
        val("CFG"),
        "a=app-v2",
        "file variables' own values are expanded"
    );
    assert_eq!(val("LOOP_A"), "$LOOP_B", "undefined");
}

/// A reference cycle: GitLab sends every value as written.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_variable_reference_cycle_leaves_values_as_written() {
    let ci = r#"
variables:
  A: "x-$B"
  B: "y-$A"
  C: "$D"
  D: d
job:
  script: echo
"#;
    let (lab, token, _) = setup(&[(".gitlab-ci.yml", ci)]).await;
    let j = lab.take_job(&token).await;
    let val = |k: &str| var(&j, k).unwrap()["value"].as_str().unwrap().to_string();
    assert_eq!(val("A"), "x-$B");
    assert_eq!(val("B"), "y-$A");
    assert_eq!(val("C"), "$D");
}

/// workflow:rules:variables of the matching rule reach every job and override global ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workflow_rule_variables_reach_the_jobs() {
    let ci = r#"
variables: {FLAVOUR: global, KEEP: kept}
workflow:
  rules:
    - if: '$CI_COMMIT_BRANCH == "nope"'
      variables: {FLAVOUR: wrong}
    - if: '$CI_COMMIT_BRANCH == "main"'
      variables: {FLAVOUR: full, EXTRA: added}
ruled:
  rules:
    - if: '$FLAVOUR == "full"'
  script: echo
"#;
    let (lab, token, pid) = setup(&[(".gitlab-ci.yml", ci)]).await;
    assert_eq!(
        names(&lab, pid),
        ["ruled"],
        "job rules see workflow variables"
    );
    let j = lab.take_job(&token).await;
    assert_eq!(var(&j, "FLAVOUR").unwrap()["value"], "full");
    assert_eq!(var(&j, "EXTRA").unwrap()["value"], "added");
    assert_eq!(var(&j, "KEEP").unwrap()["value"], "kept");
}

/// GitLab marks a job that failed with an allowed exit code `allow_failure: true` (the real
/// runner's `exit 42` under `allow_failure: {exit_codes: [42]}` left it false here), and a
/// job-level `when: manual` job may fail by default; `rules:when: manual` keeps it false.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn allow_failure_follows_exit_codes_and_manual_defaults() {
    let ci = r#"
allowed-code:
  allow_failure: {exit_codes: [42]}
  script: x
other-code:
  allow_failure: {exit_codes: [42]}
  script: x
play-me:
  when: manual
  script: x
ruled-manual:
  rules:
    - when: manual
  script: x
"#;
    let (lab, token, pid) = setup(&[(".gitlab-ci.yml", ci)]).await;
    for _ in 0..2 {
        let j = lab.take_job(&token).await;
        let code = if j["job_info"]["name"] == "allowed-code" {
            42
        } else {
            7
        };
        finish(&lab, &j, "failed", Some(code)).await;
    }
    let p = lab.mock.pipeline(pid);
    let af = |n: &str| p.job(n).unwrap().allow_failure;
    assert!(af("allowed-code"), "exit 42 is allowed");
    assert!(!af("other-code"), "exit 7 is not");
    assert!(
        af("play-me"),
        "when: manual defaults to allow_failure: true"
    );
    assert!(!af("ruled-manual"), "rules:when: manual does not");
    assert_eq!(
        p.status,
        PipelineStatus::Failed,
        "other-code failed for real"
    );
}

/// `when: delayed` with `start_in`: scheduled when its stage opens, pending once `start_in`
/// has passed (no runner request needed to notice), and cancelable while scheduled.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delayed_jobs_wait_start_in_then_run() {
    let ci = r#"
stages: [a, b]
first:
  stage: a
  script: x
later:
  stage: b
  when: delayed
  start_in: 1 second
  script: x
dropped:
  stage: b
  when: delayed
  start_in: 1 hour
  script: x
"#;
    let (lab, token, pid) = setup(&[(".gitlab-ci.yml", ci)]).await;
    let j = lab.take_job(&token).await;
    assert_eq!(j["job_info"]["name"], "first");
    finish(&lab, &j, "success", None).await;
    let opened = std::time::Instant::now();
    let p = lab.mock.pipeline(pid);
    let later = p.job("later").unwrap().clone();
    assert_eq!(later.status, JobStatus::Scheduled);
    assert_eq!(p.status, PipelineStatus::Running);
    let due = later.scheduled_at.expect("scheduled_at");
    assert!(
        due >= opened + Duration::from_millis(900),
        "start_in counts from the stage"
    );
    assert_eq!(
        lab.request_job(&token, None).await.status(),
        204,
        "not before start_in"
    );
    lab.mock
        .cancel_job(p.job("dropped").unwrap().id, false)
        .unwrap();
    // Polled with a deadline: the mock's own timer makes it pending.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let j = loop {
        let r = lab.request_job(&token, None).await;
        if r.status() == 201 {
            break r.json::<Value>().await.unwrap();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never became pending"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(j["job_info"]["name"], "later");
    let rec = lab.mock.job(later.id).unwrap();
    assert!(rec.queued_at.unwrap() >= due);
    finish(&lab, &j, "success", None).await;
    let p = lab.mock.pipeline(pid);
    assert_eq!(p.job("dropped").unwrap().status, JobStatus::Canceled);
    assert_eq!(p.status, PipelineStatus::Canceled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delayed_lint_errors() {
    let lab = Lab::start().await;
    for (src, want) in [
        (
            "j:\n  when: delayed\n  script: x\n",
            "1:1: jobs:j start in can't be blank when delayed",
        ),
        (
            "j:\n  start_in: 1 minute\n  script: x\n",
            "2:13: jobs:j start in must be blank when not delayed",
        ),
        (
            "j:\n  when: delayed\n  start_in: 8 days\n  script: x\n",
            "jobs:j start in should be less than or equal to one week",
        ),
        (
            "j:\n  when: delayed\n  start_in: soon\n  script: x\n",
            "jobs:j start in should be a duration",
        ),
        (
            "j:\n  rules:\n    - when: delayed\n  script: x\n",
            "rules:when delayed is not supported by mock-gitlab yet",
        ),
    ] {
        let fx = fixture_with(&[(".gitlab-ci.yml", src)]);
        let path = format!("group/l{}", src.len());
        lab.mock.add_project(&path, fx.path()).unwrap();
        let e = lab
            .mock
            .create_pipeline(&path, "main")
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "for {src:?}: got {e:?}, want {want:?}");
    }
}
