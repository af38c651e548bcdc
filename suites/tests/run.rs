//! `runnerlab run DIR`: a project that is not a fixture, through the real runner (shell mode, the
//! fastest), as the command runs it: exit status, live output, artifacts, traces, report.json,
//! and nothing left behind. The library function is what `runnerlab run` calls.

use std::path::Path;
use std::process::Command;

use runnerlab::Executor;
use runnerlab::podman::Podman;
use runnerlab::run::{Exit, RunOptions, RunOutcome, run};

const PIPELINE: &str = r#"stages: [build, test]
build:
  stage: build
  script:
    - echo "ref $CI_COMMIT_REF_NAME, greeting $GREETING"
    - test ! -e ignored.log
    - mkdir -p out && echo "built from $(cat src/input.txt)" > out/result.txt
  artifacts:
    paths: [out/]
test:
  stage: test
  when: always
  script:
    - cat out/result.txt
    - echo "failing on purpose"; exit 3
"#;

/// A git work tree with a committed file, an untracked one and an ignored one.
fn project(ci: &str) -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("runnerlab-run-test-")
        .tempdir()
        .expect("tempdir");
    std::fs::write(d.path().join(".gitlab-ci.yml"), ci).unwrap();
    std::fs::create_dir(d.path().join("src")).unwrap();
    std::fs::write(d.path().join("src/input.txt"), "the working tree\n").unwrap();
    std::fs::write(d.path().join(".gitignore"), "*.log\n").unwrap();
    std::fs::write(d.path().join("ignored.log"), "not part of the project\n").unwrap();
    let st = Command::new("sh")
        .arg("-ec")
        .arg("git init -q . && git add .gitlab-ci.yml .gitignore && git -c user.name=t -c user.email=t@t.invalid commit -qm ci")
        .current_dir(d.path())
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .status()
        .unwrap();
    assert!(st.success());
    d
}

async fn run_it(opts: &RunOptions) -> (RunOutcome, String) {
    let mut out: Vec<u8> = Vec::new();
    let outcome = run(opts, &mut out).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    match outcome {
        Ok(o) => (o, text),
        Err(e) => panic!("runnerlab run failed: {e:#}\noutput:\n{text}"),
    }
}

fn assert_nothing_left(run_id: &str) {
    let left = Podman::lab()
        .expect("lab store")
        .labelled(Some(run_id))
        .expect("listing");
    assert!(left.is_empty(), "left behind by {run_id}: {left}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_pipeline_exits_1_with_artifacts_traces_and_report() -> anyhow::Result<()> {
    let p = project(PIPELINE);
    let mut opts = RunOptions::new(p.path(), Executor::Shell);
    opts.variables = vec![("GREETING".into(), "hi there".into())];
    let (outcome, text) = run_it(&opts).await;

    assert_eq!(outcome.exit, Exit::Failed, "{text}");
    assert_eq!(outcome.exit.code(), 1);
    assert_eq!(outcome.status.as_deref(), Some("failed"), "{text}");
    // Live output: the runner's sections folded to one line, the script in full, status lines,
    // the summary; no colour when not on a terminal.
    for want in [
        "▸ Getting source from Git repository (",
        "ref main, greeting hi there",
        "failing on purpose",
        "● build  passed in ",
        "● test   failed in ",
        "(script_failure, exit code 3)",
        "[2/2]",
        "pipeline #1 failed in ",
    ] {
        assert!(text.contains(want), "no {want:?} in:\n{text}");
    }
    assert!(
        !text.contains("Fetching changes"),
        "a folded section's lines showed:\n{text}"
    );
    assert!(
        !text.contains('\x1b'),
        "colours without a terminal:\n{text}"
    );

    let dir = outcome.dir.as_deref().expect("report directory");
    assert_eq!(
        std::fs::read_to_string(dir.join("artifacts/build/out/result.txt"))?,
        "built from the working tree\n"
    );
    assert!(!dir.join("artifacts/test").exists(), "test uploads nothing");
    let test_log = std::fs::read_to_string(dir.join("traces/test.log"))?;
    assert!(
        test_log.contains("built from the working tree"),
        "{test_log}"
    );
    assert!(test_log.contains("failing on purpose"), "{test_log}");
    assert!(dir.join("traces/build.log").is_file());

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json"))?)?;
    assert_eq!(report["schema"], "runnerlab.report/1");
    assert_eq!(report["run_id"], outcome.run_id.as_deref().unwrap());
    let cases = report["cases"].as_array().expect("cases");
    let status_of = |name: &str| {
        cases
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| (c["status"].clone(), c["mode"].clone(), c["trace"].clone()))
    };
    assert_eq!(
        status_of("build"),
        Some(("passed".into(), "shell".into(), "traces/build.log".into()))
    );
    assert_eq!(
        status_of("test"),
        Some(("failed".into(), "shell".into(), "traces/test.log".into()))
    );

    assert_nothing_left(outcome.run_id.as_deref().expect("a lab ran"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selected_job_on_a_branch_passes_and_exits_0() -> anyhow::Result<()> {
    let p = project(PIPELINE);
    let mut opts = RunOptions::new(p.path(), Executor::Shell);
    opts.jobs = vec!["build".into()];
    opts.branch = "feature/x".into();
    let (outcome, text) = run_it(&opts).await;
    assert_eq!(outcome.exit, Exit::Passed, "{text}");
    assert!(text.contains("on feature/x: 1 job\n"), "{text}");
    assert!(text.contains("ref feature/x, greeting \n"), "{text}");
    assert!(!text.contains("── test ──"), "{text}");
    assert_nothing_left(outcome.run_id.as_deref().expect("a lab ran"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lint_error_exits_2_with_line_and_column_and_starts_no_lab() -> anyhow::Result<()> {
    let p = project("build:\n  stage: build\n  scrip:\n    - make\n");
    let opts = RunOptions::new(p.path(), Executor::Shell);
    let (outcome, text) = run_it(&opts).await;
    assert_eq!(outcome.exit, Exit::Usage, "{text}");
    assert_eq!(outcome.exit.code(), 2);
    assert!(outcome.run_id.is_none(), "a lab started: {text}");
    let file = p.path().join(".gitlab-ci.yml");
    let want = format!(
        "{}:3:3: jobs:build config contains unknown keys: scrip",
        file.display()
    );
    assert!(
        outcome.errors.iter().any(|e| e.starts_with(&want)),
        "{:?}",
        outcome.errors
    );
    for e in &outcome.errors {
        assert!(
            text.contains(&format!("{e}\n")),
            "{e:?} not printed on one line:\n{text}"
        );
    }
    // A job that is not in the pipeline is a usage error too, before any lab.
    let mut opts = RunOptions::new(Path::new(p.path()), Executor::Shell);
    std::fs::write(&file, PIPELINE)?;
    opts.jobs = vec!["nope".into()];
    let (outcome, text) = run_it(&opts).await;
    assert_eq!(outcome.exit, Exit::Usage, "{text}");
    assert!(
        text.contains("job \"nope\" is not in this pipeline; its jobs: build, test"),
        "{text}"
    );
    Ok(())
}
