//! Conformance cases: what a user upgrading gitlab-runner or Podman cares about, each a pipeline
//! run on a lab plus the checks that say it behaved. The `runnerlab conformance` command and the
//! test suites run the same cases, so a report and a `cargo nextest` run cannot disagree.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};

use crate::lab::{Executor, Lab, PipelineRun};

/// What a case produced.
#[derive(Debug)]
pub struct Outcome {
    /// The pipeline, when the case ran one.
    pub run: Option<PipelineRun>,
    /// One line for the report when the case has something to say beyond pass/fail.
    pub note: Option<String>,
    /// A known incompatibility the case observed while what it asserts still held: reported as
    /// `known-finding`, with this text.
    pub finding: Option<String>,
}

type CaseFn = for<'a> fn(&'a Lab) -> Pin<Box<dyn Future<Output = Result<Outcome>> + 'a>>;

/// A conformance case.
pub struct Case {
    pub name: &'static str,
    pub about: &'static str,
    /// The executor modes the case applies to.
    pub modes: &'static [Executor],
    pub run: CaseFn,
}

/// Every case, in report order.
pub fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "hello",
            about: "a job clones the project over HTTP, runs its script and succeeds; the trace checksum matches",
            modes: &Executor::ALL,
            run: |lab| Box::pin(hello(lab)),
        },
        Case {
            name: "exit-code",
            about: "`exit 3` fails the job with script_failure and exit code 3",
            modes: &Executor::ALL,
            run: |lab| Box::pin(exit_code(lab)),
        },
        Case {
            name: "job-timeout",
            about: "a job with `timeout: 10s` that sleeps 60 s fails with job_execution_timeout",
            modes: &Executor::ALL,
            run: |lab| Box::pin(job_timeout(lab)),
        },
        Case {
            name: "config-survives-restart",
            about: "the registration in the config volume survives a runner container restart",
            modes: &Executor::ALL,
            run: |lab| Box::pin(config_survives_restart(lab)),
        },
    ]
}

/// Look a case up by name.
pub fn case(name: &str) -> Option<Case> {
    cases().into_iter().find(|c| c.name == name)
}

/// Check a trace contains every needle, naming the missing one and showing the trace.
pub fn ensure_trace_has(trace: &str, needles: &[&str]) -> Result<()> {
    for n in needles {
        ensure!(trace.contains(n), "trace lacks {n:?}; trace:\n{trace}");
    }
    Ok(())
}

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
    Ok(Outcome {
        run: Some(run),
        note: None,
        finding: None,
    })
}

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
    Ok(Outcome {
        run: Some(run),
        note: None,
        finding: None,
    })
}

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
    })
}

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
    Ok(Outcome {
        run: Some(run),
        note: None,
        finding: None,
    })
}

/// Options of a conformance run.
#[derive(Clone, Debug)]
pub struct SuiteOptions {
    pub modes: Vec<Executor>,
    pub runner: crate::forge::runner::GetOptions,
    /// Only the cases with these names (all when empty).
    pub only: Vec<String>,
}

/// Run every applicable case in every mode on one lab per mode, and write the report.
pub async fn run_suite(opts: &SuiteOptions) -> Result<(crate::report::Report, std::path::PathBuf)> {
    use crate::report::{CaseResult, Report, SCHEMA, Status};
    let started = Instant::now();
    let started_at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let runner = crate::forge::runner::get(&opts.runner).await?;
    let podman = crate::podman::Podman::lab()?;
    let environment = environment(&podman, &runner).await?;
    let run_id = crate::lab::new_run_id();
    let out = crate::paths::run_output_dir(&run_id);
    std::fs::create_dir_all(&out)?;
    let mut results = Vec::new();
    let selected: Vec<Case> = cases()
        .into_iter()
        .filter(|c| opts.only.is_empty() || opts.only.iter().any(|o| o == c.name))
        .collect();
    let total: usize = opts
        .modes
        .iter()
        .map(|m| selected.iter().filter(|c| c.modes.contains(m)).count())
        .sum();
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} [{elapsed}] {msg}")
            .expect("static template"),
    );
    // Result lines go above the bar on a terminal, and to stderr as plain lines elsewhere.
    let say = |line: String| {
        if bar.is_hidden() {
            eprintln!("{line}");
        } else {
            bar.println(line);
        }
    };
    for mode in &opts.modes {
        let applicable: Vec<&Case> = selected.iter().filter(|c| c.modes.contains(mode)).collect();
        for c in selected.iter().filter(|c| !c.modes.contains(mode)) {
            results.push(CaseResult {
                name: c.name.into(),
                mode: mode.name().into(),
                status: Status::Skipped,
                duration_s: 0.0,
                trace: None,
                detail: Some(format!("not applicable to the {mode} executor")),
            });
        }
        if applicable.is_empty() {
            continue;
        }
        bar.set_message(format!("starting a {mode} lab"));
        let mut lopts = crate::lab::LabOptions::new(*mode);
        lopts.runner = opts.runner.clone();
        let lab = match crate::lab::Lab::start_with(lopts).await {
            Ok(l) => l,
            Err(e) => {
                for c in applicable {
                    results.push(CaseResult {
                        name: c.name.into(),
                        mode: mode.name().into(),
                        status: Status::Failed,
                        duration_s: 0.0,
                        trace: None,
                        detail: Some(crate::redact::scrub(&format!(
                            "the {mode} lab did not start: {e:#}"
                        ))),
                    });
                }
                continue;
            }
        };
        for c in applicable {
            let t = Instant::now();
            bar.set_message(format!("{mode} {}", c.name));
            let res = (c.run)(&lab).await;
            let duration_s = t.elapsed().as_secs_f64();
            let (status, detail, trace) = match res {
                Ok(o) => {
                    let trace = o.run.as_ref().and_then(|r| {
                        r.jobs.first().map(|j| {
                            let p = r.trace_path(std::path::Path::new(""), &j.name);
                            p.to_string_lossy().into_owned()
                        })
                    });
                    // Keep the traces next to the report so its links resolve.
                    if let Some(r) = &o.run {
                        for j in &r.jobs {
                            let src = r.trace_path(lab.out_dir(), &j.name);
                            let dst = r.trace_path(&out, &j.name);
                            if let Ok(bytes) = std::fs::read(&src) {
                                crate::paths::write_atomic(&dst, &bytes)?;
                            }
                        }
                    }
                    match o.finding {
                        Some(f) => (Status::KnownFinding, Some(f), trace),
                        None => (Status::Passed, o.note, trace),
                    }
                }
                Err(e) => (
                    Status::Failed,
                    Some(crate::redact::scrub(&format!("{e:#}"))),
                    None,
                ),
            };
            bar.inc(1);
            say(format!(
                "runnerlab: {mode:>6} {:<28} {} {:.1}s",
                c.name,
                match status {
                    Status::Passed => "ok",
                    Status::KnownFinding => "ok (known finding)",
                    Status::Skipped => "skipped",
                    Status::Failed => "FAILED",
                },
                duration_s
            ));
            results.push(CaseResult {
                name: c.name.into(),
                mode: mode.name().into(),
                status,
                duration_s,
                trace,
                detail,
            });
        }
        let removed = lab.shutdown().await?;
        tracing::debug!("removed {removed}");
    }
    bar.finish_and_clear();
    let report = Report {
        schema: SCHEMA,
        run_id,
        started_at,
        duration_s: started.elapsed().as_secs_f64(),
        environment,
        cases: results,
    };
    report.write(&out)?;
    Ok((report, out))
}

/// What the report says about the machine, the runner and Podman.
pub async fn environment(
    podman: &crate::podman::Podman,
    runner: &crate::forge::runner::ForgedRunner,
) -> Result<crate::report::Environment> {
    use crate::report::{Environment, PodmanEnv, RunnerEnv};
    let info = podman
        .text([
            "info",
            "--format",
            "{{.Version.Version}}|{{.Host.Security.Rootless}}|{{.Host.OCIRuntime.Name}}|{{.Host.CgroupsVersion}}|{{.Host.Kernel}}",
        ])
        .await?;
    let f: Vec<&str> = info.split('|').collect();
    let get = |i: usize| f.get(i).copied().unwrap_or("").to_owned();
    let p = &runner.provenance;
    Ok(Environment {
        runner: RunnerEnv {
            version: p.version.clone(),
            revision: p.revision.clone(),
            source: p.source.clone(),
            compat: p
                .compat
                .as_ref()
                .map(|c| format!("{}@{}", c.name, &c.hash[..12])),
            describe: p.describe(),
        },
        podman: PodmanEnv {
            version: get(0),
            rootless: get(1) == "true",
            runtime: get(2),
            cgroup_version: get(3),
        },
        kernel: get(4),
        harness_version: env!("CARGO_PKG_VERSION").into(),
    })
}
