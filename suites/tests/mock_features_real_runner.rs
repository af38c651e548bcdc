//! The real gitlab-runner (shell executor, `run-single`) against the mock:
//! artifacts up and down, cache save/restore, masked and file variables,
//! after_script after a failure, graceful and forced cancel, a merge request pipeline, and a
//! Git LFS file fetched by the runner's `git lfs pull`. Last, the same small job against
//! collabora's `gitlab-runner-mock` instead (`vs_gitlab_runner_mock_*`, issue #5).
//!
//! The runner is the forged one (the binary the labs put in their images), so these never skip.

use std::path::Path;
use std::time::Duration;

mod support;
use support::{MockLab, Runner, fixture, runner_bin};

use gitlab_runner_mock::{
    GitlabRunnerMock, MockJob, MockJobState, MockJobStepName, MockJobStepWhen,
};
use mock_gitlab::{JobStatus, PipelineStatus, RunnerSpec, Variable};

/// A fixture directory made on the fly with one `.gitlab-ci.yml`.
fn temp_fixture(ci_yml: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::write(d.path().join(".gitlab-ci.yml"), ci_yml).expect("write ci yml");
    d
}

async fn run_fixture(
    bin: &Path,
    lab: &MockLab,
    project: &str,
    dir: &std::path::Path,
    vars: Vec<Variable>,
    builds: u32,
) -> mock_gitlab::PipelineRecord {
    lab.mock.add_project(project, dir).unwrap();
    for v in vars {
        lab.mock.set_variable(project, v).unwrap();
    }
    let runner = lab.mock.create_runner(RunnerSpec::default());
    let pid = lab.mock.create_pipeline(project, "main").unwrap();
    let mut r = Runner::spawn(bin, lab, &runner.token, builds);
    let p = lab
        .mock
        .wait_pipeline(pid, Duration::from_secs(120))
        .await
        .unwrap();
    assert!(
        r.wait_exit(Duration::from_secs(30)).await,
        "runner did not exit"
    );
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn artifacts_flow_from_build_to_test() {
    let bin = runner_bin().await;
    let lab = MockLab::start().await;
    let p = run_fixture(
        &bin,
        &lab,
        "group/artifacts",
        &fixture("artifacts"),
        vec![],
        2,
    )
    .await;
    let build = p.job("build").unwrap();
    let test = p.job("test").unwrap();
    assert_eq!(
        p.status,
        PipelineStatus::Success,
        "{}",
        test.normalized_trace()
    );
    let arts = lab.mock.artifacts(build.id);
    assert_eq!(arts.len(), 1, "{arts:?}");
    assert_eq!(arts[0].artifact_type, "archive");
    assert_eq!(arts[0].format, "zip");
    assert_eq!(arts[0].expire_in.as_deref(), Some("1 week"));
    assert!(arts[0].bytes.starts_with(b"PK"));
    let t = test.normalized_trace();
    assert!(
        t.contains(&format!("built by job {}", build.id)),
        "test trace:\n{t}"
    );
    let downloads = lab
        .mock
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path == format!("/api/v4/jobs/{}/artifacts", build.id))
        .collect::<Vec<_>>();
    assert!(downloads.iter().any(|r| r.status == 200), "{downloads:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cache_is_saved_and_restored() {
    let bin = runner_bin().await;
    let lab = MockLab::start().await;
    let p = run_fixture(&bin, &lab, "group/cache", &fixture("cache"), vec![], 2).await;
    let t = p.job("use").unwrap().normalized_trace();
    assert_eq!(p.status, PipelineStatus::Success, "{t}");
    assert!(t.contains("cached by fill"), "{t}");
    assert!(t.contains("shared-protected"), "{t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn masked_and_file_variables() {
    let bin = runner_bin().await;
    let lab = MockLab::start().await;
    let vars = vec![
        Variable {
            key: "SECRET_TOKEN".into(),
            value: "s3cr3t-v4lue-xyz".into(),
            masked: true,
            ..Default::default()
        },
        Variable {
            key: "CONFIG_FILE".into(),
            value: "file-content-line".into(),
            file: true,
            ..Default::default()
        },
    ];
    let p = run_fixture(
        &bin,
        &lab,
        "group/variables",
        &fixture("variables"),
        vars,
        1,
    )
    .await;
    let j = p.job("show").unwrap();
    let t = j.normalized_trace();
    assert_eq!(j.status, JobStatus::Success, "{t}");
    assert!(t.contains("message is hello from the job"), "{t}");
    assert!(t.contains("secret is [MASKED]"), "{t}");
    assert!(!j.trace_text().contains("s3cr3t-v4lue-xyz"));
    assert!(t.contains("file-content-line"), "{t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_script_runs_after_failure() {
    let bin = runner_bin().await;
    let lab = MockLab::start().await;
    let p = run_fixture(
        &bin,
        &lab,
        "group/after",
        &fixture("after-script"),
        vec![],
        1,
    )
    .await;
    let j = p.job("fail-then-clean-up").unwrap();
    let t = j.normalized_trace();
    assert_eq!(j.status, JobStatus::Failed);
    assert_eq!(j.exit_code, Some(7));
    assert!(
        t.contains("AFTER_SCRIPT_MARKER ran with status failed"),
        "{t}"
    );
}

// The runner only learns about a cancel from the reply to a PATCH (sent
// while output flows) or to the keep-alive PUT (every ~30 s of silence), so
// the 30 s sleep prints a tick every second.
const SLEEPER: &str = r#"
sleeper:
  variables:
    GIT_STRATEGY: none
  script:
    - echo "SLEEP_STARTED"
    - for i in $(seq 30); do echo "tick $i"; sleep 1; done
  after_script:
    - echo "AFTER_CANCEL_MARKER"
"#;

async fn cancel_case(graceful: bool) {
    let bin = runner_bin().await;
    let lab = MockLab::start_with(|c| c.trace_update_interval = 1).await;
    let fx = temp_fixture(SLEEPER);
    lab.mock.add_project("group/sleeper", fx.path()).unwrap();
    let runner = lab.mock.create_runner(RunnerSpec::default());
    let pid = lab.mock.create_pipeline("group/sleeper", "main").unwrap();
    let mut r = Runner::spawn(&bin, &lab, &runner.token, 1);
    // Wait (with a deadline) until the script is running.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let id = loop {
        let j = lab.mock.pipeline(pid).jobs[0].clone();
        if j.trace_text().contains("SLEEP_STARTED") {
            break j.id;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the job never started sleeping: {:?}",
            j.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    lab.mock.cancel_job(id, graceful).unwrap();
    let p = lab
        .mock
        .wait_pipeline(pid, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(
        r.wait_exit(Duration::from_secs(30)).await,
        "runner did not exit"
    );
    let j = p.job("sleeper").unwrap();
    eprintln!(
        "cancel(graceful={graceful}): status={} failure_reason={:?} exit_code={:?} updates={:?}\n{}",
        j.status,
        j.failure_reason,
        j.exit_code,
        j.state_updates,
        j.normalized_trace()
    );
    assert_eq!(j.status, JobStatus::Canceled);
    assert_eq!(p.status, PipelineStatus::Canceled);
    let finished = j.finished_at.unwrap();
    assert!(finished.duration_since(j.started_at.unwrap()) < Duration::from_secs(25));
    if graceful {
        let t = j.normalized_trace();
        assert!(t.contains("AFTER_CANCEL_MARKER"), "{t}");
        assert_eq!(j.state_updates.last().map(String::as_str), Some("failed"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graceful_cancel_runs_after_script() {
    cancel_case(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forced_cancel_aborts() {
    cancel_case(false).await;
}

/// A merge request pipeline (`.merge-requests/1-add-feature/` of the `merge-request` fixture):
/// the runner fetches with GitLab's refspecs for it and checks out the merge request's commit,
/// the job sees `CI_MERGE_REQUEST_*` and the file only the merge request has, and the job
/// without `rules` is not part of the pipeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn merge_request_pipeline_checks_out_the_merge_request() {
    let bin = runner_bin().await;
    let lab = MockLab::start().await;
    let project = lab
        .mock
        .add_project("group/merge-request", &fixture("merge-request"))
        .unwrap();
    let mr = project.merge_requests[0].clone();
    let runner = lab.mock.create_runner(RunnerSpec::default());
    let pid = lab
        .mock
        .create_merge_request_pipeline("group/merge-request", 1)
        .unwrap();
    let mut r = Runner::spawn(&bin, &lab, &runner.token, 1);
    let p = lab
        .mock
        .wait_pipeline(pid, Duration::from_secs(120))
        .await
        .unwrap();
    assert!(
        r.wait_exit(Duration::from_secs(30)).await,
        "runner did not exit"
    );
    let names: Vec<&str> = p.jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names, ["mr-job"]);
    let j = p.job("mr-job").unwrap();
    let t = j.normalized_trace();
    assert_eq!(j.status, JobStatus::Success, "{t}");
    assert!(t.contains(&format!("HEAD is {}", mr.sha)), "{t}");
    assert_ne!(mr.sha, project.sha);
    assert!(
        t.contains("merge request !1 from add-feature into main"),
        "{t}"
    );
    assert!(t.contains("ref name add-feature, branch ''"), "{t}");
    assert!(t.contains("only in merge request !1"), "{t}");
    // The runner's own checkout line names the merge request ref.
    assert!(
        t.contains(&format!(
            "Checking out {} as detached HEAD (ref is refs/merge-requests/1/head)",
            &mr.sha[..8]
        )),
        "{t}"
    );
}

/// A Git LFS file (`lfs` fixture): the repository holds a pointer, and the runner's
/// `git lfs pull` after checkout gets the content from the mock's LFS batch API with the job
/// token. The runner host needs git-lfs and its filters (`git lfs install`): Debian's package
/// configures them system-wide; the test also puts them in a global config of the runner's own,
/// so it does not depend on that (and never touches the host's). Without filters the trace says
/// `Skipping object checkout, Git LFS is not installed` and the job shows the pointer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lfs_file_is_pulled_by_the_runner() {
    let bin = runner_bin().await;
    let lab = MockLab::start().await;
    let cfg_dir = tempfile::tempdir().unwrap();
    let global = cfg_dir.path().join("gitconfig");
    std::fs::write(&global, "").unwrap();
    let o = std::process::Command::new("git")
        .args(["lfs", "install", "--skip-repo"])
        .env("GIT_CONFIG_GLOBAL", &global)
        .output()
        .expect("run git");
    assert!(
        o.status.success(),
        "git lfs install failed (is Debian's git-lfs installed? `cargo lab setup` installs it): {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let project = lab.mock.add_project("group/lfs", &fixture("lfs")).unwrap();
    assert_eq!(project.lfs_objects, 1);
    let runner = lab.mock.create_runner(RunnerSpec::default());
    let pid = lab.mock.create_pipeline("group/lfs", "main").unwrap();
    let mut r = Runner::spawn_with_env(
        &bin,
        &lab,
        &runner.token,
        1,
        &[("GIT_CONFIG_GLOBAL", global.as_os_str())],
    );
    let p = lab
        .mock
        .wait_pipeline(pid, Duration::from_secs(120))
        .await
        .unwrap();
    assert!(
        r.wait_exit(Duration::from_secs(30)).await,
        "runner did not exit"
    );
    let j = p.job("lfs").unwrap();
    let t = j.normalized_trace();
    assert_eq!(j.status, JobStatus::Success, "{t}");
    // `cat` shows the content; `git lfs ls-files` marks the file checked out (`*`, not `-`);
    // the blob in the repository is the pointer.
    let after_cat = t
        .split("$ cat data/blob.bin")
        .nth(1)
        .unwrap_or_else(|| panic!("no cat in the trace:\n{t}"));
    assert_eq!(
        after_cat.lines().nth(1).map(str::trim),
        Some("real LFS content: not a pointer"),
        "{t}"
    );
    assert!(t.contains("* data/blob.bin"), "{t}");
    assert!(
        t.contains("version https://git-lfs.github.com/spec/v1"),
        "{t}"
    );
    let downloads = lab
        .mock
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.starts_with("/group/lfs.git/gitlab-lfs/objects/"))
        .collect::<Vec<_>>();
    assert!(downloads.iter().any(|r| r.status == 200), "{downloads:?}");
    assert!(!j.trace_text().contains(&runner.token));
}

// ---- the same job against collabora's gitlab-runner-mock (issue #5) ----
//
// mock-gitlab/tests/vs_gitlab_runner_mock.rs compares the two coordinators over raw HTTP; here
// the real runner meets theirs. Its jobs come from `MockJobBuilder` (no .gitlab-ci.yml, no
// repository): the payload's `repo_url` is a fixed `https://bla/dummy.git`.

/// A job of theirs with one script step.
fn theirs_job(
    m: &GitlabRunnerMock,
    script: &str,
    vars: &[(&str, &str)],
) -> gitlab_runner_mock::MockJobBuilder {
    let mut b = m.job_builder("job".into());
    b.add_step(
        MockJobStepName::Script,
        vec![script.into()],
        3600,
        MockJobStepWhen::OnSuccess,
        false,
    );
    for (k, v) in vars {
        b.add_variable((*k).into(), (*v).into(), true, false);
    }
    b
}

/// Poll (with a deadline) until theirs has seen the job's final state.
async fn theirs_finished(job: &MockJob) -> MockJobState {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while !job.finished() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "job {} never finished: {:?}\n{}",
            job.id(),
            job.state(),
            String::from_utf8_lossy(&job.log())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    job.state()
}

/// An HTTP proxy on loopback that records each request line and refuses it: the runner's git
/// goes through it, so a clone of a host that is not here never leaves this machine.
async fn refusing_proxy() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = l.accept().await {
            let mut r = tokio::io::BufReader::new(conn);
            let mut line = String::new();
            let _ = r.read_line(&mut line).await;
            s.lock().unwrap().push(line.trim().to_string());
            let _ = r
                .get_mut()
                .write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                .await;
        }
    });
    (url, seen)
}

/// Ours, for reference: the same one-line job from a .gitlab-ci.yml, with the default git
/// strategy (the runner clones from the mock), succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn vs_gitlab_runner_mock_ours_clones_and_succeeds() {
    let bin = runner_bin().await;
    let lab = MockLab::start().await;
    let fx = temp_fixture("job:\n  script:\n    - echo hello from the job\n");
    let p = run_fixture(&bin, &lab, "group/cmp", fx.path(), vec![], 1).await;
    let j = p.job("job").unwrap();
    let t = j.normalized_trace();
    assert_eq!(j.status, JobStatus::Success, "{t}");
    assert!(t.contains("hello from the job"), "{t}");
    assert!(t.contains("Checking out"), "{t}");
}

/// Theirs with the default git strategy: the runner takes the job, but `get_sources` cannot
/// clone `https://bla/dummy.git` (here, through a refusing proxy), so the job fails before the
/// script runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn vs_gitlab_runner_mock_theirs_fails_in_get_sources() {
    let bin = runner_bin().await;
    let m = GitlabRunnerMock::start().await;
    let job = theirs_job(&m, "echo hello from the job", &[]).build();
    m.enqueue_job(job.clone());
    let (proxy, seen) = refusing_proxy().await;
    let proxy = std::ffi::OsString::from(proxy);
    let no_proxy = std::ffi::OsString::from("127.0.0.1,localhost");
    let mut r = Runner::spawn_at(
        &bin,
        m.uri().as_str(),
        m.runner_token(),
        1,
        &[
            ("https_proxy", &proxy),
            ("HTTPS_PROXY", &proxy),
            ("no_proxy", &no_proxy),
            ("NO_PROXY", &no_proxy),
        ],
    );
    let state = theirs_finished(&job).await;
    assert!(
        r.wait_exit(Duration::from_secs(30)).await,
        "runner did not exit"
    );
    let log = String::from_utf8_lossy(&job.log()).into_owned();
    assert_eq!(state, MockJobState::Failed, "{log}");
    assert!(log.contains("bla/dummy.git"), "{log}");
    assert!(!log.contains("hello from the job"), "{log}");
    let seen = seen.lock().unwrap().clone();
    // The evidence for the comparison table in README.md.
    eprintln!("proxy saw {seen:?}; the job's git lines:");
    for l in log
        .lines()
        .filter(|l| l.contains("bla") || l.contains("fatal"))
    {
        eprintln!("  {l}");
    }
    assert_eq!(
        seen.first().map(String::as_str),
        Some("CONNECT bla:443 HTTP/1.1"),
        "{seen:?}"
    );
}

/// Theirs with `GIT_STRATEGY: none`: the script runs and the job succeeds; the trace arrives in
/// order (theirs checks each Content-Range).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn vs_gitlab_runner_mock_theirs_succeeds_without_git() {
    let bin = runner_bin().await;
    let m = GitlabRunnerMock::start().await;
    let job = theirs_job(&m, "echo hello from the job", &[("GIT_STRATEGY", "none")]).build();
    m.enqueue_job(job.clone());
    let mut r = Runner::spawn_at(&bin, m.uri().as_str(), m.runner_token(), 1, &[]);
    let state = theirs_finished(&job).await;
    assert!(
        r.wait_exit(Duration::from_secs(30)).await,
        "runner did not exit"
    );
    let log = String::from_utf8_lossy(&job.log()).into_owned();
    assert_eq!(state, MockJobState::Success, "{log}");
    assert!(log.contains("hello from the job"), "{log}");
    assert!(job.log_patches() >= 1);
}

/// Theirs and artifacts: the real runner's upload is accepted, but theirs reads
/// `artifact_type` from form fields while the runner sends it in the query string, so the
/// archive is stored untyped and the dependent job gets no `artifacts_file` to download
/// (ours: `artifacts_flow_from_build_to_test`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn vs_gitlab_runner_mock_theirs_loses_the_artifact_type() {
    let bin = runner_bin().await;
    let m = GitlabRunnerMock::start().await;
    let none = [("GIT_STRATEGY", "none")];
    let mut b = theirs_job(&m, "echo built > out.txt", &none);
    b.add_artifact_paths(vec!["out.txt".into()]);
    let build = b.build();
    let mut b = theirs_job(&m, "cat out.txt", &none);
    b.dependency(build.clone());
    let test = b.build();
    m.enqueue_job(build.clone());
    m.enqueue_job(test.clone());
    // One runner (and builds dir) per job: with GIT_STRATEGY none a shared working directory
    // would still hold out.txt from the first job. Theirs hands out `test` only once `build`
    // has finished, so the first runner can only take `build`.
    let mut r = Runner::spawn_at(&bin, m.uri().as_str(), m.runner_token(), 1, &[]);
    assert_eq!(theirs_finished(&build).await, MockJobState::Success);
    assert!(
        r.wait_exit(Duration::from_secs(30)).await,
        "runner did not exit"
    );
    let mut r = Runner::spawn_at(&bin, m.uri().as_str(), m.runner_token(), 1, &[]);
    let state = theirs_finished(&test).await;
    assert!(
        r.wait_exit(Duration::from_secs(30)).await,
        "runner did not exit"
    );
    let arts: Vec<_> = build.uploaded_artifacts().collect();
    assert_eq!(arts.len(), 1, "{arts:?}");
    assert!(arts[0].data.starts_with(b"PK"), "not a zip");
    assert_eq!(arts[0].artifact_type, None);
    let log = String::from_utf8_lossy(&test.log()).into_owned();
    eprintln!("stored artifact_type: {:?}", arts[0].artifact_type);
    for l in log
        .lines()
        .filter(|l| l.contains("out.txt") || l.contains("rtifacts"))
    {
        eprintln!("  {l}");
    }
    assert_eq!(state, MockJobState::Failed, "{log}");
    assert!(!log.contains("Downloading artifacts"), "{log}");
    assert!(log.contains("out.txt: No such file"), "{log}");
}
