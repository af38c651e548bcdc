//! What every pipeline relies on, whatever the executor: a job runs its script, fails with the
//! right exit code and reason, times out, is canceled, gets its variables, and sends its log whole.
//! Also the runner's own life: its registration survives a restart, it runs jobs side by side, and
//! it leaves no container behind.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};

use super::support::{ensure_trace_has, job_ended, outcome};
use super::{ALL, Case, Outcome};
use crate::lab::Lab;

pub(super) const HELLO: Case = Case {
    name: "hello",
    about: "a job clones the project over HTTP, runs its script and succeeds; the trace checksum matches",
    modes: ALL,
    known: &[],
    not_applicable: &[],
    run: |lab| Box::pin(hello(lab)),
};

async fn hello(lab: &Lab) -> Result<Outcome> {
    let run = lab.pipeline("hello").run().await?;
    let job = run.job("hello");
    ensure!(
        job.status() == "success",
        "job hello ended {}; trace:\n{}",
        job.status(),
        job.trace()
    );
    ensure_trace_has(
        &job.trace(),
        &[
            "Running with gitlab-runner",
            "Getting source from Git repository",
            "hello from runnerlab",
            "Job succeeded",
        ],
    )?;
    ensure!(
        job.checksum_ok() == Some(true),
        "the runner's CRC32 does not match the trace mock-gitlab stored ({:?})",
        job.checksum_ok()
    );
    Ok(outcome(run))
}

pub(super) const EXIT_CODE: Case = Case {
    name: "exit-code",
    about: "`exit 3` fails the job with script_failure and exit code 3",
    modes: ALL,
    known: &[],
    not_applicable: &[],
    run: |lab| Box::pin(exit_code(lab)),
};

async fn exit_code(lab: &Lab) -> Result<Outcome> {
    let run = lab.pipeline("failing").run().await?;
    let job = run.job("fail");
    ensure!(job.status() == "failed", "job fail ended {}", job.status());
    ensure!(
        job.failure_reason() == Some("script_failure"),
        "failure reason {:?}, expected script_failure",
        job.failure_reason()
    );
    ensure!(
        job.exit_code() == Some(3),
        "exit code {:?}, expected 3",
        job.exit_code()
    );
    // The shell executor reports the process's "exit status", container executors an "exit code".
    let trace = job.trace();
    ensure!(
        trace.contains("ERROR: Job failed: exit status 3")
            || trace.contains("ERROR: Job failed: exit code 3"),
        "trace lacks the job failure line with exit 3; trace:\n{trace}"
    );
    ensure!(job.checksum_ok() == Some(true), "trace checksum mismatch");
    Ok(outcome(run))
}

pub(super) const JOB_TIMEOUT: Case = Case {
    name: "job-timeout",
    about: "a job with `timeout: 10s` that sleeps 60 s fails with job_execution_timeout",
    modes: ALL,
    known: &[],
    not_applicable: &[],
    run: |lab| Box::pin(job_timeout(lab)),
};

async fn job_timeout(lab: &Lab) -> Result<Outcome> {
    let t = Instant::now();
    let run = lab
        .pipeline("timeout")
        .timeout(Duration::from_secs(120))
        .run()
        .await?;
    let job = run.job("sleepy");
    ensure!(
        job.status() == "failed",
        "job sleepy ended {}",
        job.status()
    );
    ensure!(
        job.failure_reason() == Some("job_execution_timeout"),
        "failure reason {:?}, expected job_execution_timeout",
        job.failure_reason()
    );
    ensure_trace_has(&job.trace(), &["execution took longer than"])?;
    let took = t.elapsed().as_secs_f64();
    // The runner image runs jobs as gitlab-runner through `su` (upstream's `run --user=…`). On timeout
    // the runner stops su, but the script's children keep running and the job only ends when they do.
    let finding = (took > 40.0).then(|| {
        format!(
            "the job ended {took:.0}s after it started although its timeout is 10s: the script's processes \
             were not killed on timeout (shell executor with --user, i.e. su); the job ended when `sleep 60` did"
        )
    });
    Ok(Outcome {
        run: Some(run),
        note: Some(format!(
            "job ended after {took:.1}s (timeout 10s, script sleeps 60s)"
        )),
        finding,
        snapshot: true,
    })
}

pub(super) const CONFIG_SURVIVES_RESTART: Case = Case {
    name: "config-survives-restart",
    about: "the registration in the config volume survives a runner container restart",
    modes: ALL,
    known: &[],
    not_applicable: &[],
    run: |lab| Box::pin(config_survives_restart(lab)),
};

async fn config_survives_restart(lab: &Lab) -> Result<Outcome> {
    let registrations_before = lab.mock().runners().len();
    lab.restart_runner().await?;
    let list = lab.exec_runner(&["list"]).await?;
    ensure!(
        list.contains(&format!("{}-runner", lab.run_id())),
        "`gitlab-runner list` after restart does not show the registration:\n{list}"
    );
    ensure!(
        lab.mock().runners().len() == registrations_before,
        "the runner registered again after a restart"
    );
    let run = lab.pipeline("hello").run().await?;
    ensure!(
        run.job("hello").status() == "success",
        "job after restart: {}",
        run.job("hello").status()
    );
    Ok(outcome(run))
}

pub(super) const ALLOW_FAILURE_EXIT_CODES: Case = Case {
    name: "allow-failure-exit-codes",
    about: "a job exiting with an allowed exit code fails, yet the pipeline goes on and succeeds",
    modes: ALL,
    known: &[],
    not_applicable: &[],
    run: |lab| Box::pin(allow_failure_exit_codes(lab)),
};

async fn allow_failure_exit_codes(lab: &Lab) -> Result<Outcome> {
    let run = lab.pipeline("allow-failure").run().await?;
    let flaky = job_ended(&run, "flaky", "failed")?;
    ensure!(
        flaky.exit_code() == Some(42),
        "exit code {:?}",
        flaky.exit_code()
    );
    job_ended(&run, "after", "success")?;
    ensure!(run.status() == "success", "pipeline ended {}", run.status());
    Ok(outcome(run))
}

pub(super) const AFTER_SCRIPT_AFTER_FAILURE: Case = Case {
    name: "after-script-after-failure",
    about: "after_script runs after a failed script and sees CI_JOB_STATUS=failed",
    modes: ALL,
    known: &[],
    not_applicable: &[],
    run: |lab| Box::pin(after_script_after_failure(lab)),
};

async fn after_script_after_failure(lab: &Lab) -> Result<Outcome> {
    let run = lab.pipeline("after-script").run().await?;
    let job = job_ended(&run, "fail-then-clean-up", "failed")?;
    ensure!(
        job.exit_code() == Some(7),
        "exit code {:?}",
        job.exit_code()
    );
    ensure_trace_has(
        &job.trace(),
        &["AFTER_SCRIPT_MARKER ran with status failed"],
    )?;
    Ok(outcome(run))
}

const SECRET: &str = "s3cr3t-Value-4-runnerlab";

pub(super) const VARIABLES: Case = Case {
    name: "variables",
    about: "job variables expand, a masked project variable shows as [MASKED] only, a file variable is a file",
    modes: ALL,
    known: &[],
    not_applicable: &[],
    run: |lab| Box::pin(variables(lab)),
};

async fn variables(lab: &Lab) -> Result<Outcome> {
    use mock_gitlab::Variable;
    let run = lab
        .pipeline("variables")
        .variable(Variable {
            key: "SECRET_TOKEN".into(),
            value: SECRET.into(),
            masked: true,
            ..Default::default()
        })
        .variable(Variable {
            key: "CONFIG_FILE".into(),
            value: "setting=from-a-file-variable\n".into(),
            file: true,
            ..Default::default()
        })
        .run()
        .await?;
    let job = job_ended(&run, "show", "success")?;
    // The raw bytes the coordinator got: masking is the runner's job, not the harness's.
    let raw = job.job.trace_text();
    ensure!(
        !raw.contains(SECRET),
        "the masked value reached the coordinator"
    );
    ensure_trace_has(
        &raw,
        &[
            "message is hello from the job",
            "secret is [MASKED]",
            "setting=from-a-file-variable",
        ],
    )?;
    Ok(outcome(run))
}

pub(super) const UNICODE_AND_ANSI: Case = Case {
    name: "unicode-and-ansi",
    about: "unicode and ANSI colour sequences reach the coordinator byte for byte",
    modes: ALL,
    known: &[],
    not_applicable: &[],
    run: |lab| Box::pin(unicode_and_ansi(lab)),
};

async fn unicode_and_ansi(lab: &Lab) -> Result<Outcome> {
    let run = lab.pipeline("unicode").run().await?;
    let job = job_ended(&run, "colours", "success")?;
    let raw = job.job.trace_text();
    ensure_trace_has(
        &raw,
        &[
            "ünïcödé ✓ 日本語 🚀",
            "\x1b[31mred\x1b[0m",
            "\x1b[1;32mbold green\x1b[0m",
        ],
    )?;
    ensure!(job.checksum_ok() == Some(true), "trace checksum mismatch");
    Ok(outcome(run))
}

pub(super) const LARGE_TRACE: Case = Case {
    name: "large-trace",
    about: "a 10 MiB job log arrives whole: the runner's CRC32 matches what the coordinator stored",
    modes: ALL,
    known: &[],
    not_applicable: &[],
    run: |lab| Box::pin(large_trace(lab)),
};

async fn large_trace(lab: &Lab) -> Result<Outcome> {
    let run = lab.pipeline("large-trace").run().await?;
    let job = job_ended(&run, "big", "success")?;
    let size = job.job.trace.len();
    ensure!(
        size >= 10 * 1024 * 1024,
        "trace is {size} bytes, expected at least 10 MiB"
    );
    ensure!(
        job.checksum_ok() == Some(true),
        "the runner's CRC32 does not match the {size} stored bytes"
    );
    ensure_trace_has(&job.trace(), &["end of the large trace", "Job succeeded"])?;
    let note = format!("{size} bytes, {} trace PATCHes", job.job.trace_patches);
    let mut o = outcome(run);
    o.note = Some(note);
    Ok(o)
}

pub(super) const SCRIPT_SECTIONS: Case = Case {
    name: "script-sections",
    about: "FF_SCRIPT_SECTIONS puts a multi-line script command in its own collapsible log section",
    modes: ALL,
    known: &[],
    not_applicable: &[],
    run: |lab| Box::pin(script_sections(lab)),
};

async fn script_sections(lab: &Lab) -> Result<Outcome> {
    let run = lab.pipeline("script-sections").run().await?;
    let job = job_ended(&run, "sections", "success")?;
    let raw = job.job.trace_text();
    // The second command is the multi-line one: its section is named after its index.
    ensure_trace_has(
        &raw,
        &[
            "$ echo one-liner",
            ":section_script_step_1[hide_duration=true,collapsed=true]",
            "section_end:",
        ],
    )?;
    // Output lines, not the echoed command in the section header.
    let text = job.trace();
    for out in ["multi-a", "multi-b"] {
        ensure!(
            text.lines().any(|l| l.trim_end_matches('\r') == out),
            "the multi-line command did not print {out:?}; trace:\n{text}"
        );
    }
    ensure!(
        !raw.contains("section_script_step_0"),
        "the one-line command got a section of its own"
    );
    Ok(outcome(run))
}

pub(super) const GRACEFUL_CANCEL: Case = Case {
    name: "graceful-cancel",
    about: "a job canceled while running stops, runs after_script, and ends canceled",
    modes: ALL,
    known: &[],
    not_applicable: &[],
    run: |lab| Box::pin(graceful_cancel(lab)),
};

async fn graceful_cancel(lab: &Lab) -> Result<Outcome> {
    let started = lab
        .pipeline("cancel")
        .timeout(Duration::from_secs(150))
        .spawn()?;
    let id = started.wait_trace("ticker", "tick 3").await?;
    let t = Instant::now();
    lab.mock().cancel_job(id, true)?;
    let run = started.wait().await?;
    let took = t.elapsed().as_secs_f64();
    let job = job_ended(&run, "ticker", "canceled")?;
    let trace = job.trace();
    ensure_trace_has(&trace, &["AFTER_SCRIPT_MARKER after cancel"])?;
    // The ticker runs 60 s; a job that printed its last tick was not stopped by the cancel.
    let ran_on = trace.contains("tick 60");
    let mode = lab.executor();
    let finding = match (ran_on, mode.mode().stops_script_on_cancel()) {
        (false, _) => None,
        // Same cause as the job-timeout finding: the runner stops `su`, not the script under it.
        (true, false) => Some(format!(
            "the job ended {took:.0}s after the cancel: the script's processes were not killed \
             (shell executor with --user, i.e. su); it ended when the script did"
        )),
        (true, true) => anyhow::bail!("the {mode} job ran on for {took:.0}s after the cancel"),
    };
    Ok(Outcome {
        run: Some(run),
        note: Some(format!("job ended {took:.1}s after the cancel")),
        finding,
        // How many ticks precede the cancel is a race.
        snapshot: false,
    })
}

pub(super) const PREDEFINED_VARIABLES: Case = Case {
    name: "predefined-variables",
    about: "CI_JOB_ID, CI_COMMIT_SHA, CI_PROJECT_PATH, … match the coordinator's job; CI_JOB_TOKEN is masked",
    modes: ALL,
    known: &[],
    not_applicable: &[],
    run: |lab| Box::pin(predefined_variables(lab)),
};

async fn predefined_variables(lab: &Lab) -> Result<Outcome> {
    let run = lab.pipeline("predefined-variables").run().await?;
    let job = job_ended(&run, "show", "success")?;
    let trace = job.trace();
    let value = |key: &str| -> Option<String> {
        let prefix = format!("{key}=");
        trace
            .lines()
            .find_map(|l| l.strip_prefix(&prefix).map(|v| v.trim_end().to_owned()))
    };
    let want = [
        ("CI_JOB_ID", job.job.id.to_string()),
        ("CI_JOB_NAME", "show".to_owned()),
        ("CI_PIPELINE_ID", run.record.id.to_string()),
        ("CI_COMMIT_SHA", run.record.sha.clone()),
        ("CI_COMMIT_REF_NAME", run.record.git_ref.clone()),
        ("CI_PROJECT_PATH", run.record.project.clone()),
        // The runner masks the job token in the log like any masked variable.
        ("CI_JOB_TOKEN", "[MASKED]".to_owned()),
    ];
    for (key, expected) in want {
        let got = value(key);
        ensure!(
            got.as_deref() == Some(expected.as_str()),
            "{key} is {got:?} in the job, the coordinator says {expected:?}"
        );
    }
    let dir = value("CI_PROJECT_DIR").unwrap_or_default();
    ensure!(
        dir.ends_with(&format!("/{}", run.record.project)),
        "CI_PROJECT_DIR {dir:?} does not end in the project path {}",
        run.record.project
    );
    Ok(outcome(run))
}

pub(super) const BEFORE_SCRIPT_FAILURE: Case = Case {
    name: "before-script-failure",
    about: "a failing before_script fails the job with its exit code, skips script, runs after_script",
    modes: ALL,
    known: &[],
    not_applicable: &[],
    run: |lab| Box::pin(before_script_failure(lab)),
};

async fn before_script_failure(lab: &Lab) -> Result<Outcome> {
    let run = lab.pipeline("before-script").run().await?;
    let job = job_ended(&run, "setup-fails", "failed")?;
    ensure!(
        job.exit_code() == Some(4),
        "exit code {:?}, expected 4",
        job.exit_code()
    );
    ensure!(
        job.failure_reason() == Some("script_failure"),
        "failure reason {:?}",
        job.failure_reason()
    );
    let trace = job.trace();
    ensure_trace_has(
        &trace,
        &["BEFORE_SCRIPT_MARKER", "AFTER_SCRIPT_MARKER status failed"],
    )?;
    ensure!(
        !trace
            .lines()
            .any(|l| l.trim_end() == "SCRIPT_MARKER should not run"),
        "script ran after before_script failed; trace:\n{trace}"
    );
    Ok(outcome(run))
}

pub(super) const CONCURRENT_JOBS: Case = Case {
    name: "concurrent-jobs",
    about: "with `concurrent = 2` two jobs of one stage run at the same time on one runner",
    modes: ALL,
    known: &[],
    not_applicable: &[],
    run: |lab| Box::pin(concurrent_jobs(lab)),
};

async fn concurrent_jobs(lab: &Lab) -> Result<Outcome> {
    // A variant of the suite's lab: `concurrent` is fixed when the runner starts.
    let mut opts = lab.options().clone();
    opts.concurrent = 2;
    let lab2 = Lab::start_with(opts).await?;
    let run = lab2.pipeline("concurrent").run().await?;
    let (a, b) = (
        job_ended(&run, "left", "success")?,
        job_ended(&run, "right", "success")?,
    );
    let span = |j: &crate::lab::JobView| j.job.started_at.zip(j.job.finished_at);
    let (Some((a0, a1)), Some((b0, b1))) = (span(&a), span(&b)) else {
        anyhow::bail!("the mock did not record when the jobs ran");
    };
    // Each job sleeps 8 s: run one after the other they cannot overlap.
    let overlap = a1.min(b1).saturating_duration_since(a0.max(b0));
    let t0 = a0.min(b0);
    let at = |t: Instant| t.saturating_duration_since(t0).as_secs_f64();
    ensure!(
        !overlap.is_zero(),
        "the two jobs ran one after the other: left {:.1}–{:.1}s, right {:.1}–{:.1}s",
        at(a0),
        at(a1),
        at(b0),
        at(b1)
    );
    Ok(Outcome {
        note: Some(format!("the jobs overlapped {:.1}s", overlap.as_secs_f64())),
        // Which job gets which concurrency slot (names, build dirs) is a race.
        snapshot: false,
        ..outcome(run)
    })
}

pub(super) const NO_LEFTOVERS_AFTER_JOBS: Case = Case {
    name: "no-leftovers-after-jobs",
    about: "after jobs the Podman store holds no job, helper or service container of the run",
    modes: ALL,
    known: &[],
    not_applicable: &[],
    run: |lab| Box::pin(no_leftovers_after_jobs(lab)),
};

async fn no_leftovers_after_jobs(lab: &Lab) -> Result<Outcome> {
    let run = lab.pipeline("hello").run().await?;
    job_ended(&run, "hello", "success")?;
    // The runner removes job containers after the final update; allow it a moment, by polling.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = lab.podman().labelled(Some(lab.run_id()))?;
        let extra: Vec<&String> = r
            .containers
            .iter()
            .filter(|c| *c != lab.runner_container())
            .collect();
        if extra.is_empty() && r.networks.is_empty() {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "job containers or networks left after the job: {extra:?} {:?}",
            r.networks
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(outcome(run))
}
