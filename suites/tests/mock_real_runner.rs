//! mock-gitlab against the REAL gitlab-runner on this host (shell executor, no containers): the
//! coordinator's own end-to-end check. The runner comes from the forge (the same binary the labs
//! put in their images), so this never skips.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

mod support;
use support::{MockLab, fixture, runner_bin};

use mock_gitlab::{JobStatus, PipelineStatus, RegisteredVia, RunnerSpec};

fn runner_cmd(bin: &Path, dir: &Path) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(bin);
    c.current_dir(dir)
        .env("HOME", dir)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    c
}

async fn run_ok(mut c: tokio::process::Command, what: &str) -> String {
    let out = tokio::time::timeout(Duration::from_secs(120), c.output())
        .await
        .unwrap_or_else(|_| panic!("{what} timed out"))
        .expect("spawn gitlab-runner");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{text}",
        out.status
    );
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_single_hello_failing_and_timeout() {
    let bin = runner_bin().await;
    let lab = MockLab::start_with(|c| c.trace_update_interval = 1).await;
    let runner = lab.mock.create_runner(RunnerSpec::default());
    for name in ["hello", "failing", "timeout"] {
        lab.mock
            .add_project(&format!("group/{name}"), &fixture(name))
            .unwrap();
    }
    let hello = lab.mock.create_pipeline("group/hello", "main").unwrap();
    let failing = lab.mock.create_pipeline("group/failing", "main").unwrap();
    let timeout = lab.mock.create_pipeline("group/timeout", "main").unwrap();

    let work = tempfile::tempdir().unwrap();
    let mut c = runner_cmd(&bin, work.path());
    c.args(["run-single", "--url"])
        .arg(lab.mock.external_url())
        .arg("--token")
        .arg(&runner.token)
        .args(["--executor", "shell", "--builds-dir"])
        .arg(work.path().join("builds"))
        .arg("--cache-dir")
        .arg(work.path().join("cache"))
        .args(["--max-builds", "3", "--wait-timeout", "60"]);
    let log = run_ok(c, "gitlab-runner run-single").await;

    let p = lab
        .mock
        .wait_pipeline(hello, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(p.status, PipelineStatus::Success, "{log}");
    let j = &p.jobs[0];
    assert_eq!(j.checksum_ok, Some(true));
    assert_eq!(j.reported_bytesize, Some(j.trace.len() as u64));
    let trace = j.normalized_trace();
    eprintln!("--- normalized trace of job {} ---\n{trace}", j.id);
    assert!(trace.contains("hello from runnerlab"), "{trace}");
    assert!(
        trace.contains("This README was checked out by gitlab-runner from mock-gitlab."),
        "{trace}"
    );
    assert!(trace.contains("Job succeeded"), "{trace}");
    // Two-phase commit: the acknowledgement PUT comes first.
    assert_eq!(j.state_updates.first().map(String::as_str), Some("running"));
    assert_eq!(j.state_updates.last().map(String::as_str), Some("success"));

    let p = lab
        .mock
        .wait_pipeline(failing, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(p.status, PipelineStatus::Failed);
    let j = &p.jobs[0];
    assert_eq!(j.status, JobStatus::Failed);
    assert_eq!(j.failure_reason.as_deref(), Some("script_failure"));
    assert_eq!(j.exit_code, Some(3));
    assert_eq!(j.checksum_ok, Some(true));

    let p = lab
        .mock
        .wait_pipeline(timeout, Duration::from_secs(90))
        .await
        .unwrap();
    let j = &p.jobs[0];
    assert_eq!(j.status, JobStatus::Failed);
    assert_eq!(j.failure_reason.as_deref(), Some("job_execution_timeout"));
    assert_eq!(j.checksum_ok, Some(true));

    let runners = lab.mock.runners();
    let rec = &runners[0];
    assert!(rec.features.get("trace_checksum").copied().unwrap_or(false));
    assert!(
        rec.system_ids
            .iter()
            .any(|s| s.starts_with("s_") || s.starts_with("r_"))
    );
    // Everything the runner sent was JSON we understood: no 4xx on the API.
    let bad: Vec<_> = lab
        .mock
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/api/") && r.status >= 400)
        .collect();
    assert!(bad.is_empty(), "{bad:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn register_verify_run_and_unregister() {
    let bin = runner_bin().await;
    let lab = MockLab::start_with(|_| {}).await;
    let runner = lab.mock.create_runner(RunnerSpec::default());
    lab.mock
        .add_project("group/hello", &fixture("hello"))
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let cfg = work.path().join("config.toml");

    // New flow: glrt token → only /runners/verify.
    let mut c = runner_cmd(&bin, work.path());
    c.args(["register", "--non-interactive", "--url"])
        .arg(lab.mock.external_url())
        .arg("--token")
        .arg(&runner.token)
        .args(["--executor", "shell", "--name", "t", "--config"])
        .arg(&cfg)
        .arg("--builds-dir")
        .arg(work.path().join("builds"));
    run_ok(c, "gitlab-runner register (glrt)").await;
    let toml = std::fs::read_to_string(&cfg).unwrap();
    assert!(toml.contains(&format!("id = {}", runner.id)), "{toml}");
    assert!(lab.mock.runners()[0].verify_count >= 1);

    let mut c = runner_cmd(&bin, work.path());
    c.args(["verify", "-c"]).arg(&cfg);
    run_ok(c, "gitlab-runner verify").await;

    // `run` long-polls (its second request carries last_update and is held);
    // a pipeline created then must be dispatched at once, not after a hold.
    let mut c = runner_cmd(&bin, work.path());
    c.args(["run", "-c"])
        .arg(&cfg)
        .arg("--working-directory")
        .arg(work.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while lab.mock.runners()[0].long_polls == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "runner never long-polled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = lab.mock.create_pipeline("group/hello", "main").unwrap();
    let p = lab.mock.wait_pipeline(pid, Duration::from_secs(90)).await;
    let _ = child.kill().await;
    let p = p.unwrap();
    assert_eq!(p.status, PipelineStatus::Success);
    assert_eq!(p.jobs[0].checksum_ok, Some(true));
    let j = &p.jobs[0];
    let wait = j.dispatched_at.unwrap() - j.queued_at.unwrap();
    assert!(
        wait < Duration::from_secs(2),
        "held poll woke after {wait:?}"
    );

    // Legacy flow: registration token → POST /runners.
    let cfg2 = work.path().join("legacy.toml");
    let mut c = runner_cmd(&bin, work.path());
    c.args(["register", "--non-interactive", "--url"])
        .arg(lab.mock.external_url())
        .arg("--registration-token")
        .arg(lab.mock.registration_token())
        .args([
            "--executor",
            "shell",
            "--name",
            "legacy",
            "--tag-list",
            "a,b",
            "--config",
        ])
        .arg(&cfg2);
    run_ok(c, "gitlab-runner register (legacy)").await;
    let legacy = lab
        .mock
        .runners()
        .into_iter()
        .find(|r| r.registered_via == RegisteredVia::Legacy)
        .expect("legacy runner");
    assert_eq!(legacy.tags, vec!["a", "b"]);

    // Unregister both: DELETE /runners/managers (glrt) and DELETE /runners.
    for cfg in [&cfg, &cfg2] {
        let mut c = runner_cmd(&bin, work.path());
        c.args(["unregister", "--all-runners", "-c"]).arg(cfg);
        run_ok(c, "gitlab-runner unregister").await;
    }
    let reqs = lab.mock.requests();
    assert!(
        reqs.iter()
            .any(|r| r.method == "DELETE" && r.path == "/api/v4/runners" && r.status == 204)
    );
    assert!(
        reqs.iter().any(|r| r.method == "DELETE"
            && r.path == "/api/v4/runners/managers"
            && r.status == 204)
    );
}
