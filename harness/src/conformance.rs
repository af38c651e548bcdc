//! Conformance cases: what a user upgrading gitlab-runner or Podman cares about, each a pipeline
//! run on a lab plus the checks that say it behaved. The `runnerlab conformance` command and the
//! test suites run the same cases, so a report and a `cargo nextest` run cannot disagree.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};

use crate::forge::pinp::{ARCHIVE_IN_JOB, PinpImages};
use crate::lab::{Executor, Lab, LabOptions, PipelineRun, RunnerExtras};
use crate::registry::Registry;

pub use crate::report::environment;

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
    /// Whether the jobs' traces are stable enough to snapshot (not when jobs race each other).
    pub snapshot: bool,
}

type CaseFn = for<'a> fn(&'a Lab) -> Pin<Box<dyn Future<Output = Result<Outcome>> + 'a>>;

/// A conformance case.
pub struct Case {
    pub name: &'static str,
    pub about: &'static str,
    /// The executor modes the case applies to.
    pub modes: &'static [Executor],
    /// Known incompatibilities: in these modes a failure of the case is reported as a
    /// `known-finding` with the reason, not as a failure.
    pub known: &'static [(Executor, &'static str)],
    pub run: CaseFn,
}

impl Case {
    /// The known incompatibility of this case in `mode`, if any.
    pub fn known_in(&self, mode: Executor) -> Option<&'static str> {
        self.known.iter().find(|(m, _)| *m == mode).map(|(_, r)| *r)
    }
}

const ALL: &[Executor] = &Executor::ALL;
const CONTAINERS: &[Executor] = &[Executor::Docker, Executor::Custom];
/// Features of the docker executor the custom executor's interface does not carry (entrypoint,
/// job user, feature flags of the docker executor).
const DOCKER: &[Executor] = &[Executor::Docker];

/// Every case, in report order.
pub fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "hello",
            about: "a job clones the project over HTTP, runs its script and succeeds; the trace checksum matches",
            modes: ALL,
            known: &[],
            run: |lab| Box::pin(hello(lab)),
        },
        Case {
            name: "exit-code",
            about: "`exit 3` fails the job with script_failure and exit code 3",
            modes: ALL,
            known: &[],
            run: |lab| Box::pin(exit_code(lab)),
        },
        Case {
            name: "job-timeout",
            about: "a job with `timeout: 10s` that sleeps 60 s fails with job_execution_timeout",
            modes: ALL,
            known: &[],
            run: |lab| Box::pin(job_timeout(lab)),
        },
        Case {
            name: "config-survives-restart",
            about: "the registration in the config volume survives a runner container restart",
            modes: ALL,
            known: &[],
            run: |lab| Box::pin(config_survives_restart(lab)),
        },
        Case {
            name: "allow-failure-exit-codes",
            about: "a job exiting with an allowed exit code fails, yet the pipeline goes on and succeeds",
            modes: ALL,
            known: &[],
            run: |lab| Box::pin(allow_failure_exit_codes(lab)),
        },
        Case {
            name: "after-script-after-failure",
            about: "after_script runs after a failed script and sees CI_JOB_STATUS=failed",
            modes: ALL,
            known: &[],
            run: |lab| Box::pin(after_script_after_failure(lab)),
        },
        Case {
            name: "variables",
            about: "job variables expand, a masked project variable shows as [MASKED] only, a file variable is a file",
            modes: ALL,
            known: &[],
            run: |lab| Box::pin(variables(lab)),
        },
        Case {
            name: "artifacts-between-stages",
            about: "a file uploaded as an artifact by one stage is downloaded by the next",
            modes: ALL,
            known: &[(
                Executor::Custom,
                "the custom executor runs the artifact uploader inside the job container, whose image \
                 has no gitlab-runner binary (the podman driver does not inject one)",
            )],
            run: |lab| Box::pin(artifacts_between_stages(lab)),
        },
        Case {
            name: "cache-between-jobs",
            about: "a cache saved by one job is restored by the next",
            modes: ALL,
            known: &[(
                Executor::Custom,
                "the custom executor runs the cache archiver inside the job container, whose image has \
                 no gitlab-runner binary (the podman driver does not inject one)",
            )],
            run: |lab| Box::pin(cache_between_jobs(lab)),
        },
        Case {
            name: "unicode-and-ansi",
            about: "unicode and ANSI colour sequences reach the coordinator byte for byte",
            modes: ALL,
            known: &[],
            run: |lab| Box::pin(unicode_and_ansi(lab)),
        },
        Case {
            name: "large-trace",
            about: "a 10 MiB job log arrives whole: the runner's CRC32 matches what the coordinator stored",
            modes: ALL,
            known: &[],
            run: |lab| Box::pin(large_trace(lab)),
        },
        Case {
            name: "git-strategy-none",
            about: "GIT_STRATEGY=none skips the checkout",
            modes: ALL,
            known: &[],
            run: |lab| Box::pin(git_strategy_none(lab)),
        },
        Case {
            name: "git-depth",
            about: "GIT_DEPTH=1 makes a shallow clone over smart HTTP",
            modes: ALL,
            known: &[],
            run: |lab| Box::pin(git_depth(lab)),
        },
        Case {
            name: "rootless-identity",
            about: "the job runs in a user namespace that does not map host root (rootless Podman)",
            modes: ALL,
            known: &[],
            run: |lab| Box::pin(rootless_identity(lab)),
        },
        Case {
            name: "script-sections",
            about: "FF_SCRIPT_SECTIONS puts a multi-line script command in its own collapsible log section",
            modes: ALL,
            known: &[],
            run: |lab| Box::pin(script_sections(lab)),
        },
        Case {
            name: "graceful-cancel",
            about: "a job canceled while running stops, runs after_script, and ends canceled",
            modes: ALL,
            known: &[],
            run: |lab| Box::pin(graceful_cancel(lab)),
        },
        Case {
            name: "services-by-alias",
            about: "a service container is reachable from the job by its alias",
            modes: CONTAINERS,
            known: &[],
            run: |lab| Box::pin(services_by_alias(lab)),
        },
        Case {
            name: "redis-service",
            about: "a real service (Redis from Debian's package) is reached by its alias; the job \
                    writes and reads a key",
            modes: CONTAINERS,
            known: &[],
            run: |lab| Box::pin(redis_service(lab)),
        },
        Case {
            name: "git-strategy-clone",
            about: "GIT_STRATEGY=clone checks out the pipeline's commit into a fresh repository every time",
            modes: ALL,
            known: &[],
            run: |lab| Box::pin(git_strategy_clone(lab)),
        },
        Case {
            name: "git-strategy-fetch",
            about: "GIT_STRATEGY=fetch reuses the work tree where the executor keeps it, without dubious-ownership errors",
            modes: ALL,
            known: &[],
            run: |lab| Box::pin(git_strategy_fetch(lab)),
        },
        Case {
            name: "predefined-variables",
            about: "CI_JOB_ID, CI_COMMIT_SHA, CI_PROJECT_PATH, … match the coordinator's job; CI_JOB_TOKEN is masked",
            modes: ALL,
            known: &[],
            run: |lab| Box::pin(predefined_variables(lab)),
        },
        Case {
            name: "before-script-failure",
            about: "a failing before_script fails the job with its exit code, skips script, runs after_script",
            modes: ALL,
            known: &[],
            run: |lab| Box::pin(before_script_failure(lab)),
        },
        Case {
            name: "image-entrypoint",
            about: "`image:entrypoint` runs before the job's shell, which it hands over to",
            modes: DOCKER,
            known: &[],
            run: |lab| Box::pin(image_entrypoint(lab)),
        },
        Case {
            name: "services-without-network-per-build",
            about: "a service is reachable by alias with FF_NETWORK_PER_BUILD off (no Docker links on Podman)",
            modes: DOCKER,
            known: &[],
            run: |lab| Box::pin(services_without_network_per_build(lab)),
        },
        Case {
            name: "non-root-job-user",
            about: "a job run as uid 1000 (`image:docker:user`) writes into the work tree the helper checked out",
            modes: DOCKER,
            known: &[],
            run: |lab| Box::pin(non_root_job_user(lab)),
        },
        Case {
            name: "concurrent-jobs",
            about: "with `concurrent = 2` two jobs of one stage run at the same time on one runner",
            modes: ALL,
            known: &[],
            run: |lab| Box::pin(concurrent_jobs(lab)),
        },
        Case {
            name: "no-leftovers-after-jobs",
            about: "after jobs the Podman store holds no job, helper or service container of the run",
            modes: ALL,
            known: &[],
            run: |lab| Box::pin(no_leftovers_after_jobs(lab)),
        },
        Case {
            name: "git-submodules",
            about: "`GIT_SUBMODULE_STRATEGY: normal` fetches a submodule (relative URL, another \
                    project) with the job token",
            modes: ALL,
            known: &[],
            run: |lab| Box::pin(git_submodules(lab)),
        },
        Case {
            name: "merge-request-pipeline",
            about: "a merge request pipeline checks out `refs/merge-requests/1/head` with the \
                    `CI_MERGE_REQUEST_*` variables; jobs without rules stay out, as in GitLab",
            modes: ALL,
            known: &[],
            run: |lab| Box::pin(merge_request_pipeline(lab)),
        },
        Case {
            name: "git-lfs",
            about: "a Git LFS file is checked out with its content: the runner's `git lfs pull` \
                    fetches it from the coordinator's LFS API with the job token",
            modes: ALL,
            known: &[],
            run: |lab| Box::pin(git_lfs(lab)),
        },
        Case {
            name: "gitconfig-home",
            about: "the seeds' `//.gitconfig` failure: a non-root job without a writable HOME cannot \
                    write git's global config; HOME on a writable mount (the documented fix) can",
            modes: ALL,
            known: &[],
            run: |lab| Box::pin(gitconfig_home(lab)),
        },
        Case {
            name: "fleet-tag-routing",
            about: "two runners with their own config volumes and tags: each job lands on the runner \
                    its tags name, untagged jobs only on the runner with run_untagged",
            modes: ALL,
            known: &[],
            run: |lab| Box::pin(fleet_tag_routing(lab)),
        },
        Case {
            name: "podman-build",
            about: "a job runs `podman build` (multi-stage, Go builder) and `podman run` of the result, \
                    unprivileged, with a rootless podman inside rootless Podman",
            modes: ALL,
            known: &[],
            run: |lab| Box::pin(podman_build(lab)),
        },
        Case {
            name: "docker-host-service",
            about: "the seed's `DOCKER_HOST: tcp://docker:2375` reaches a real engine: a Podman API \
                    service in a service container (alias `docker`) builds and runs the job's image, \
                    unprivileged, on rootless Podman",
            modes: &[Executor::Docker, Executor::Custom],
            known: &[],
            run: |lab| Box::pin(docker_host_service(lab)),
        },
        Case {
            name: "registry-pull",
            about: "the job's image comes from a private registry (TLS, htpasswd) with credentials only \
                    from DOCKER_AUTH_CONFIG, a masked variable that appears in no trace, log or report",
            modes: CONTAINERS,
            known: &[],
            run: |lab| Box::pin(registry_pull(lab)),
        },
        Case {
            name: "registry-wrong-credentials",
            about: "a wrong password in DOCKER_AUTH_CONFIG fails the job with the registry's refusal \
                    (unauthorized) in the trace, and the password appears nowhere",
            modes: CONTAINERS,
            known: &[],
            run: |lab| Box::pin(registry_wrong_credentials(lab)),
        },
        Case {
            name: "registry-push",
            about: "a job logs in to a private registry with masked variables (`podman login`; a wrong \
                    password is refused), builds, pushes and pulls back an image, unprivileged, with \
                    podman inside rootless Podman",
            modes: ALL,
            known: &[],
            run: |lab| Box::pin(registry_push(lab)),
        },
    ]
}

/// Why `case` does not run in `mode` (the report's detail for a skipped case).
pub fn not_applicable(case: &str, mode: Executor) -> String {
    match (case, mode) {
        ("registry-pull" | "registry-wrong-credentials", Executor::Shell) => {
            "the shell executor ignores `image:` and DOCKER_AUTH_CONFIG: jobs run in the runner's \
             container (registry-push covers the registry in shell mode)"
                .into()
        }
        _ => format!("not applicable to the {mode} executor"),
    }
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
    Ok(outcome(run))
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
    Ok(outcome(run))
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
        snapshot: true,
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
    Ok(outcome(run))
}

/// Options of a conformance run.
#[derive(Clone, Debug)]
pub struct SuiteOptions {
    pub modes: Vec<Executor>,
    pub runner: crate::forge::runner::GetOptions,
    /// Only the cases with these names (all when empty).
    pub only: Vec<String>,
    /// How many modes run at the same time, each on its own lab.
    pub parallel: usize,
    /// Docker mode with the runner on the host instead of in a container.
    pub runner_on_host: bool,
}

/// Run every applicable case in every mode on one lab per mode, and write the report.
pub async fn run_suite(opts: &SuiteOptions) -> Result<(crate::report::Report, std::path::PathBuf)> {
    use crate::report::{Report, SCHEMA};
    let started = Instant::now();
    let started_at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let runner = crate::forge::runner::get(&opts.runner).await?;
    let podman = crate::podman::Podman::lab()?;
    let mut environment = environment(&podman, &runner).await?;
    if opts.runner_on_host {
        environment.runner.placement = "host".into();
    }
    let run_id = crate::lab::new_run_id();
    let out = crate::paths::run_output_dir(&run_id);
    std::fs::create_dir_all(&out)?;
    let mut results = Vec::new();
    // (case, mode, the jobs' output) for the cross-mode comparison.
    let mut outputs: Vec<(&'static str, &'static str, String)> = Vec::new();
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
    // Modes run side by side, `parallel` at a time: a case mostly waits (for the runner, for
    // containers), so two labs on two cores take little longer than one.
    // The `hello` job's cost is measured alone (see `Quiet`): the other modes' cases wait.
    let quiet = Quiet::default();
    let per_mode: Vec<ModeResults> = {
        use futures_util::StreamExt;
        let (selected, out, bar, say, quiet) = (&selected, &out, &bar, &say, &quiet);
        let mut runs = futures_util::stream::iter(opts.modes.iter().enumerate())
            .map(|(i, mode)| async move {
                (
                    i,
                    run_mode(*mode, selected, opts, out, bar, say, quiet).await,
                )
            })
            .buffer_unordered(opts.parallel.max(1));
        let mut done = Vec::new();
        while let Some((i, r)) = runs.next().await {
            done.push((i, r?));
        }
        // The report lists modes in the order asked for, whatever finished first.
        done.sort_by_key(|(i, _)| *i);
        done.into_iter().map(|(_, r)| r).collect()
    };
    let mut job_cost = Vec::new();
    for (r, o, c) in per_mode {
        results.extend(r);
        outputs.extend(o);
        job_cost.extend(c);
    }
    bar.finish_and_clear();
    let report = Report {
        schema: SCHEMA,
        run_id,
        started_at,
        duration_s: started.elapsed().as_secs_f64(),
        environment,
        cases: results,
        cross_mode: crate::report::cross_mode(&outputs),
        job_cost,
    };
    for f in report.write(&out)? {
        // Every secret of the run (tokens, registry credentials) was registered: none may be in a
        // report, whatever a case put in its detail.
        let text = std::fs::read_to_string(&f)?;
        anyhow::ensure!(
            !crate::redact::contains_secret(&text),
            "{} holds a registered secret: a scrub is missing on its way there",
            f.display()
        );
    }
    Ok((report, out))
}

/// One mode's case results, its jobs' outputs (case, mode, output) for the cross-mode comparison,
/// and what its jobs cost beyond their scripts.
type ModeResults = (
    Vec<crate::report::CaseResult>,
    Vec<(&'static str, &'static str, String)>,
    Option<crate::report::ModeCost>,
);

/// Modes run side by side, but a job's cost measured while other labs start containers says
/// more about the load than about the executor (a `hello` docker job took 15.9 s instead of
/// 6.8 s so). Lab starts and cases hold a read lock; the `hello` case and the floors measured
/// after it hold the write lock, so they run alone (tokio's lock is fair: queued cases wait).
#[derive(Default)]
struct Quiet(tokio::sync::RwLock<()>);

/// Every applicable case of `selected` in one mode, on one lab.
async fn run_mode(
    mode: Executor,
    selected: &[Case],
    opts: &SuiteOptions,
    out: &std::path::Path,
    bar: &indicatif::ProgressBar,
    say: &(dyn Fn(String) + Sync),
    quiet: &Quiet,
) -> Result<ModeResults> {
    use crate::report::{CaseResult, Status};
    let mut results = Vec::new();
    let mut outputs = Vec::new();
    let applicable: Vec<&Case> = selected
        .iter()
        .filter(|c| c.modes.contains(&mode))
        .collect();
    for c in selected.iter().filter(|c| !c.modes.contains(&mode)) {
        results.push(CaseResult {
            name: c.name.into(),
            mode: mode.name().into(),
            status: Status::Skipped,
            duration_s: 0.0,
            trace: None,
            detail: Some(not_applicable(c.name, mode)),
        });
    }
    if applicable.is_empty() {
        return Ok((results, outputs, None));
    }
    bar.set_message(format!("starting a {mode} lab"));
    let mut lopts = crate::lab::LabOptions::new(mode);
    lopts.runner = opts.runner.clone();
    lopts.runner_on_host = opts.runner_on_host;
    let started = {
        let _shared = quiet.0.read().await;
        crate::lab::Lab::start_with(lopts).await
    };
    let lab = match started {
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
            return Ok((results, outputs, None));
        }
    };
    let mut overheads = Vec::new();
    let mut trivial = None;
    for c in applicable {
        let since = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let measured = c.name == "hello";
        // Held until the case (and, for `hello`, the floors after it) is done.
        let (_shared, _alone) = if measured {
            (None, Some(quiet.0.write().await))
        } else {
            (Some(quiet.0.read().await), None)
        };
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
                if let Some(r) = &o.run {
                    outputs.push((c.name, mode.name(), job_output(r)));
                    overheads.extend(r.jobs.iter().filter_map(job_overhead_s));
                    if measured && o.finding.is_none() {
                        trivial = trivial_job_cost(&lab, r, &since).await;
                    }
                }
                // Keep the traces next to the report so its links resolve.
                if let Some(r) = &o.run {
                    for j in &r.jobs {
                        let src = r.trace_path(&r.out_dir, &j.name);
                        let dst = r.trace_path(out, &j.name);
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
            Err(e) => match c.known_in(mode) {
                Some(reason) => (
                    Status::KnownFinding,
                    Some(crate::redact::scrub(&format!("{reason}\n\n{e:#}"))),
                    None,
                ),
                None => (
                    Status::Failed,
                    Some(crate::redact::scrub(&format!("{e:#}"))),
                    None,
                ),
            },
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
    let removed = {
        let _shared = quiet.0.read().await;
        lab.shutdown().await?
    };
    tracing::debug!("removed {removed}");
    let cost = (!overheads.is_empty()).then(|| crate::report::ModeCost {
        mode: mode.name().into(),
        jobs: overheads.len(),
        median_overhead_s: crate::bench::Stats::of(overheads).p50,
        trivial,
    });
    Ok((results, outputs, cost))
}

/// A job's end-to-end time: handed to the runner → finished. From dispatch, not from queueing:
/// the wait for a runner's next poll is the coordinator's pace, not the executor's cost.
fn job_e2e_s(j: &mock_gitlab::JobRecord) -> Option<f64> {
    Some(
        j.finished_at?
            .saturating_duration_since(j.dispatched_at?)
            .as_secs_f64(),
    )
}

/// The `step_script` section's seconds: the job script's own time.
fn script_s(j: &mock_gitlab::JobRecord) -> Option<f64> {
    crate::bench::section_seconds(&j.trace_text())
        .into_iter()
        .find(|(n, _)| n == "step_script")
        .map(|(_, s)| s)
}

/// A job's e2e time minus its script's: what runner, executor and Podman add. None for a job
/// without a script section (never started, or canceled before it).
fn job_overhead_s(j: &mock_gitlab::JobRecord) -> Option<f64> {
    Some(job_e2e_s(j)? - script_s(j)?)
}

/// The `hello` job against the container floors, measured on the same lab right after the case.
/// A floor that cannot be measured leaves its figures out; it never fails the run.
async fn trivial_job_cost(
    lab: &Lab,
    run: &PipelineRun,
    since: &str,
) -> Option<crate::report::TrivialJobCost> {
    let job = run.jobs.iter().find(|j| j.name == "hello")?;
    let (e2e_s, script_s) = (job_e2e_s(job)?, script_s(job)?);
    // Counted before the floors start containers of their own.
    let containers = crate::bench::containers_started(lab, since).await.ok()?;
    let (cli, api) = crate::bench::measure_floors(lab, 5).await.ok()?;
    let cli_floor_s = cli.p50;
    let api_floor_s = api.map(|a| a.lifecycle_s.p50);
    let ratio = |floor: f64| (containers > 0).then(|| e2e_s / (containers as f64 * floor));
    Some(crate::report::TrivialJobCost {
        e2e_s,
        script_s,
        containers,
        cli_floor_s,
        api_floor_s,
        ratio_cli: ratio(cli_floor_s),
        ratio_api: api_floor_s.and_then(ratio),
    })
}

/// What the jobs of a run printed from their `step_script` section on, normalised like a
/// snapshot: the part a user's pipeline sees, which should not depend on the executor.
pub fn job_output(run: &PipelineRun) -> String {
    let mut s = String::new();
    for j in &run.jobs {
        let text = run.job(&j.name).snapshot();
        s.push_str(&format!("== job {} ({})\n", j.name, j.status.as_str()));
        let mut on = false;
        for line in text.lines() {
            on |= line.starts_with("[step_script]");
            // The docker executor's per-container lines name images and networks: executor detail.
            let executor_detail = line == "Using default image"
                || line.starts_with("Using effective pull policy")
                || line.starts_with("Using docker image")
                || line.starts_with("Container runner-");
            if on && !executor_detail {
                s.push_str(line);
                s.push('\n');
            }
        }
    }
    s
}

fn outcome(run: PipelineRun) -> Outcome {
    Outcome {
        run: Some(run),
        note: None,
        finding: None,
        snapshot: true,
    }
}

/// The job, which must have ended `status`, or an error with its trace.
fn job_ended<'r>(
    run: &'r PipelineRun,
    name: &str,
    status: &str,
) -> Result<crate::lab::JobView<'r>> {
    let job = run.job(name);
    ensure!(
        job.status() == status,
        "job {name} ended {} (expected {status}); trace:\n{}",
        job.status(),
        job.trace()
    );
    Ok(job)
}

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

async fn artifacts_between_stages(lab: &Lab) -> Result<Outcome> {
    let run = lab.pipeline("artifacts").run().await?;
    let build = job_ended(&run, "build", "success")?;
    let test = job_ended(&run, "test", "success")?;
    let uploaded = lab.mock().artifacts(build.job.id);
    ensure!(
        uploaded
            .iter()
            .any(|a| a.artifact_type == "archive" && !a.bytes.is_empty()),
        "mock-gitlab holds no archive of job build"
    );
    ensure_trace_has(&test.trace(), &[&format!("built by job {}", build.job.id)])?;
    Ok(outcome(run))
}

async fn cache_between_jobs(lab: &Lab) -> Result<Outcome> {
    let run = lab.pipeline("cache").run().await?;
    job_ended(&run, "fill", "success")?;
    let used = job_ended(&run, "use", "success")?;
    ensure_trace_has(&used.trace(), &["cached by fill"])?;
    Ok(outcome(run))
}

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

async fn git_strategy_none(lab: &Lab) -> Result<Outcome> {
    let run = lab.pipeline("git-none").run().await?;
    let job = job_ended(&run, "nocheckout", "success")?;
    ensure_trace_has(
        &job.trace(),
        &["Skipping Git repository setup", "no checkout, as asked"],
    )?;
    Ok(outcome(run))
}

async fn git_depth(lab: &Lab) -> Result<Outcome> {
    let run = lab.pipeline("git-depth").run().await?;
    let job = job_ended(&run, "shallow", "success")?;
    ensure_trace_has(
        &job.trace(),
        &[
            "git depth set to 1",
            "commits in history 1",
            "the clone is shallow",
        ],
    )?;
    Ok(outcome(run))
}

async fn rootless_identity(lab: &Lab) -> Result<Outcome> {
    let run = lab.pipeline("identity").run().await?;
    let job = job_ended(&run, "whoami", "success")?;
    let trace = job.trace();
    // uid_map lines: "<inside> <outside> <count>". Rootful (or no namespace) maps 0 to 0 over the
    // whole 32-bit range; rootless maps inside 0 to the lab user's uid.
    let maps: Vec<Vec<u64>> = trace
        .lines()
        .map(|l| {
            l.split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect::<Vec<u64>>()
        })
        .filter(|v| v.len() == 3)
        .collect();
    ensure!(!maps.is_empty(), "no uid_map in the trace:\n{trace}");
    let uid = lab.podman().user().map(|u| u.uid as u64).unwrap_or(0);
    ensure!(
        !maps.iter().any(|m| m[1] == 0 && m[2] == 4294967295),
        "the job runs in the host's user namespace (uid map 0 0 4294967295):\n{trace}"
    );
    ensure!(
        maps.iter().any(|m| m[0] == 0 && m[1] == uid && m[2] == 1),
        "container root is not the lab user (uid {uid}) on the host:\n{trace}"
    );
    Ok(outcome(run))
}

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
    let finding = match (ran_on, lab.executor()) {
        (false, _) => None,
        // Same cause as the job-timeout finding: the runner stops `su`, not the script under it.
        (true, Executor::Shell) => Some(format!(
            "the job ended {took:.0}s after the cancel: the script's processes were not killed \
             (shell executor with --user, i.e. su); it ended when the script did"
        )),
        (true, mode) => anyhow::bail!("the {mode} job ran on for {took:.0}s after the cancel"),
    };
    Ok(Outcome {
        run: Some(run),
        note: Some(format!("job ended {took:.1}s after the cancel")),
        finding,
        // How many ticks precede the cancel is a race.
        snapshot: false,
    })
}

async fn services_by_alias(lab: &Lab) -> Result<Outcome> {
    let run = lab.pipeline("services").run().await?;
    let job = job_ended(&run, "svc-lookup", "success")?;
    ensure_trace_has(&job.trace(), &[" svc"])?;
    Ok(outcome(run))
}

async fn redis_service(lab: &Lab) -> Result<Outcome> {
    crate::forge::services::ensure_redis(lab.images(), lab.podman()).await?;
    let run = lab.pipeline("redis-service").run().await?;
    let job = job_ended(&run, "redis", "success")?;
    let trace = job.trace();
    // The answers, not the echoed commands: `PONG` alone on a line, then the value read back.
    ensure!(
        trace.lines().any(|l| l.trim_end() == "PONG"),
        "redis did not answer PING by its alias; trace:\n{trace}"
    );
    ensure!(
        trace.lines().any(|l| l.trim_end() == "stored by redis"),
        "the value written to redis was not read back; trace:\n{trace}"
    );
    Ok(outcome(run))
}

async fn git_strategy(lab: &Lab, strategy: &str) -> Result<PipelineRun> {
    lab.pipeline("git-strategy")
        .variable(mock_gitlab::Variable {
            key: "GIT_STRATEGY".into(),
            value: strategy.into(),
            ..Default::default()
        })
        .run()
        .await
}

/// The job checked out the pipeline's commit and the fixture's file is there.
fn checked_out(run: &PipelineRun) -> Result<String> {
    let job = job_ended(run, "head", "success")?;
    let trace = job.trace();
    ensure!(
        trace.lines().any(|l| l.trim() == run.record.sha),
        "HEAD is not the pipeline's commit {}; trace:\n{trace}",
        run.record.sha
    );
    ensure_trace_has(&trace, &["a file in the work tree"])?;
    ensure!(
        !trace.contains("dubious ownership"),
        "git refused the work tree (dubious ownership); trace:\n{trace}"
    );
    Ok(trace)
}

async fn git_strategy_clone(lab: &Lab) -> Result<Outcome> {
    let first = git_strategy(lab, "clone").await?;
    checked_out(&first)?;
    let second = git_strategy(lab, "clone").await?;
    let trace = checked_out(&second)?;
    ensure_trace_has(&trace, &["Created fresh repository"])?;
    ensure!(
        !trace.contains("Reinitialized existing Git repository"),
        "clone reused the previous work tree; trace:\n{trace}"
    );
    Ok(outcome(second))
}

async fn git_strategy_fetch(lab: &Lab) -> Result<Outcome> {
    let first = git_strategy(lab, "fetch").await?;
    checked_out(&first)?;
    let second = git_strategy(lab, "fetch").await?;
    let trace = checked_out(&second)?;
    let reused = trace.contains("Reinitialized existing Git repository");
    // Shell keeps builds_dir in the runner container and docker in a per-project volume, so the
    // second job fetches into the first one's tree. The podman driver gives every job a new
    // container: nothing to reuse, a fresh clone is right there.
    match lab.executor() {
        Executor::Shell | Executor::Docker => ensure!(
            reused,
            "the second fetch did not reuse the work tree; trace:\n{trace}"
        ),
        Executor::Custom => ensure!(
            !reused,
            "a job container of the podman driver found an earlier job's work tree; trace:\n{trace}"
        ),
    }
    Ok(Outcome {
        note: Some(format!(
            "second job {}",
            if reused {
                "reused the work tree"
            } else {
                "cloned afresh"
            }
        )),
        ..outcome(second)
    })
}

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

async fn image_entrypoint(lab: &Lab) -> Result<Outcome> {
    let run = lab.pipeline("image-entrypoint").run().await?;
    let job = job_ended(&run, "entrypoint", "success")?;
    let trace = job.trace();
    ensure!(
        trace.lines().any(|l| l.trim_end() == "entrypoint-ran"),
        "the entrypoint's marker is not there; trace:\n{trace}"
    );
    Ok(outcome(run))
}

async fn services_without_network_per_build(lab: &Lab) -> Result<Outcome> {
    let run = lab.pipeline("services-legacy").run().await?;
    let job = job_ended(&run, "svc-lookup", "success")?;
    let trace = job.trace();
    // The alias resolves through the runner's link emulation (extra_hosts), since Podman has no
    // links. The fixture's service exposes no port, so the runner's health check only warns.
    ensure!(
        trace
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some("svc")),
        "the alias svc did not resolve; trace:\n{trace}"
    );
    Ok(outcome(run))
}

async fn non_root_job_user(lab: &Lab) -> Result<Outcome> {
    let run = lab.pipeline("non-root-user").run().await?;
    let job = job_ended(&run, "as-1000", "success")?;
    let trace = job.trace();
    ensure!(
        trace.lines().any(|l| l.trim_end() == "1000"),
        "the job did not run as uid 1000; trace:\n{trace}"
    );
    ensure!(
        trace
            .lines()
            .any(|l| l.starts_with("1000 ") && l.trim_end().ends_with("/by-uid-1000")),
        "the file written in the work tree is not owned by uid 1000; trace:\n{trace}"
    );
    Ok(outcome(run))
}

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

/// What the runner needs so that its jobs can run `podman build`, per mode, and the same as one
/// line for the report. Never `--privileged`: the inner podman runs rootless (no CAP_SYS_ADMIN).
/// - `unmask=/proc/*`: without it every RUN step fails to mount /proc (the outer runtime masks
///   /proc paths, and a rootless podman may only mount a proc that is fully visible);
/// - a tmpfs on `/var/lib/containers`: the inner store cannot use native overlay on the outer
///   overlayfs, and fuse-overlayfs would need /dev/fuse (0600 root on the host). A tmpfs goes with
///   the container, so nothing outlives the job unlabelled (an anonymous volume would);
/// - the builder archive, bind-mounted read-only (no registry; see `forge::pinp::ensure_archive`).
pub(crate) fn pinp_extras(mode: Executor, pinp: &PinpImages) -> (RunnerExtras, String) {
    let archive = format!("{}:{ARCHIVE_IN_JOB}:ro", pinp.archive.display());
    match mode {
        Executor::Shell => (
            RunnerExtras {
                image: Some(pinp.shell_runner.clone()),
                run_args: vec![
                    "--security-opt".into(),
                    "unmask=/proc/*".into(),
                    // The jobs' user (gitlab-runner) keeps its store there too.
                    "--tmpfs".into(),
                    "/var/lib/containers:rw,mode=1777".into(),
                    "-v".into(),
                    archive,
                ],
                register_args: vec![],
            },
            "runner container (image gitlab-runner-pinp): --security-opt unmask=/proc/*, \
             --tmpfs /var/lib/containers:rw,mode=1777, archive -v …:ro; no --privileged, no devices, \
             no cap_add"
                .into(),
        ),
        Executor::Docker => (
            RunnerExtras {
                register_args: vec![
                    "--docker-security-opt".into(),
                    "unmask=/proc/*".into(),
                    // A `key:value` pair (the help's "json object" ends up as a literal key).
                    "--docker-tmpfs".into(),
                    "/var/lib/containers:rw".into(),
                    "--docker-volumes".into(),
                    archive,
                ],
                ..RunnerExtras::default()
            },
            "[runners.docker] security_opt = [\"unmask=/proc/*\"], tmpfs = {\"/var/lib/containers\" = \"rw\"}, \
             volumes += archive:ro; privileged = false, no devices, no cap_add"
                .into(),
        ),
        Executor::Custom => (
            RunnerExtras {
                // The driver appends PODMAN_RUN_ARGS (split on whitespace) to the job container's flags.
                run_args: vec![
                    "-e".into(),
                    format!(
                        "PODMAN_RUN_ARGS=--security-opt=unmask=/proc/* \
                         --tmpfs=/var/lib/containers:rw --volume={archive}"
                    ),
                ],
                ..RunnerExtras::default()
            },
            "PODMAN_RUN_ARGS=--security-opt=unmask=/proc/* --tmpfs=/var/lib/containers:rw \
             --volume=archive:ro; no --privileged, no devices, no cap_add"
                .into(),
        ),
    }
}

async fn docker_host_service(lab: &Lab) -> Result<Outcome> {
    let pinp = crate::forge::pinp::ensure(lab.runner(), lab.images(), lab.podman()).await?;
    // The job gets the Podman-in-Podman flags (for the builder archive's mount); the service, which
    // runs the builds, needs the same nesting flags through the services' own settings.
    let (mut extras, job_flags) = pinp_extras(lab.executor(), &pinp);
    // The seed's HOME=/my_custom_dir must exist wherever the job's variables go (the helper's git
    // writes its global config there): the documented fix, a writable mount (Kubernetes: an
    // emptyDir), here a tmpfs on the job's containers and, since services get the job's
    // variables too, on the service.
    let home = format!("{CUSTOM_HOME}:rw,mode=1777");
    let service_flags = match lab.executor() {
        Executor::Docker => {
            extras.register_args.extend([
                "--docker-tmpfs".into(),
                home.clone(),
                "--docker-services-security-opt".into(),
                "unmask=/proc/*".into(),
                "--docker-services-tmpfs".into(),
                "/var/lib/containers:rw".into(),
                "--docker-services-tmpfs".into(),
                home,
            ]);
            format!(
                "tmpfs += {{\"{CUSTOM_HOME}\" = \"rw,mode=1777\"}}; services_security_opt = [\"unmask=/proc/*\"], \
                 services_tmpfs = {{\"/var/lib/containers\" = \"rw\", \"{CUSTOM_HOME}\" = \"rw,mode=1777\"}}"
            )
        }
        Executor::Custom => {
            // The driver gives services their own variables only, so HOME stays theirs.
            for a in extras.run_args.iter_mut() {
                if a.starts_with("PODMAN_RUN_ARGS=") {
                    a.push_str(&format!(" --tmpfs={home}"));
                }
            }
            extras.run_args.extend([
                "-e".into(),
                "PODMAN_SERVICE_ARGS=--security-opt=unmask=/proc/* --tmpfs=/var/lib/containers:rw"
                    .into(),
            ]);
            format!(
                "PODMAN_RUN_ARGS += --tmpfs={CUSTOM_HOME}:rw,mode=1777; PODMAN_SERVICE_ARGS=--security-opt=unmask=/proc/* \
                 --tmpfs=/var/lib/containers:rw"
            )
        }
        Executor::Shell => {
            anyhow::bail!("{}", not_applicable("docker-host-service", lab.executor()))
        }
    };
    let lab2 = variant(lab, extras).await?;
    let run = lab2
        .pipeline("docker-host-service")
        .timeout(Duration::from_secs(300))
        .run()
        .await?;
    let job = job_ended(&run, "podman-remote-build", "success")?;
    let trace = job.trace();
    ensure_trace_has(
        &trace,
        &[
            "Successfully tagged localhost/playground-bis:testing",
            "hello from playground-bis:testing, built by the Podman service at DOCKER_HOST",
            // Built in the service, not by the job's own podman.
            "playground-bis images in the service 1, in the job 0",
        ],
    )?;
    ensure!(
        trace.lines().any(|l| l.starts_with("service API ")),
        "the job did not reach the service's API through DOCKER_HOST; trace:\n{trace}"
    );
    // Two engines: the service answers with its own host name.
    let hosts = trace
        .lines()
        .find_map(|l| l.strip_prefix("job host "))
        .and_then(|l| l.split_once(", service host "));
    match hosts {
        Some((job, service)) if !job.trim().is_empty() && job.trim() != service.trim() => {}
        _ => anyhow::bail!(
            "expected the service's host name to differ from the job's; trace:\n{trace}"
        ),
    }
    Ok(Outcome {
        note: Some(format!(
            "job: {job_flags}; HOME and service: {service_flags}; DOCKER_HOST is read by the job's \
             `podman --url`, podman itself ignores it"
        )),
        ..outcome(run)
    })
}

async fn merge_request_pipeline(lab: &Lab) -> Result<Outcome> {
    let run = lab.pipeline("merge-request").merge_request(1).run().await?;
    let names: Vec<&str> = run.jobs.iter().map(|j| j.name.as_str()).collect();
    // `branch-job` has no rules: GitLab's default `only: [branches, tags]` keeps it out.
    ensure!(
        names == ["mr-job"],
        "a merge request pipeline should hold mr-job only, it holds {names:?}"
    );
    let job = job_ended(&run, "mr-job", "success")?;
    let trace = job.trace();
    ensure_trace_has(
        &trace,
        &[
            "(ref is refs/merge-requests/1/head)",
            "merge request !1 from add-feature into main",
            "ref name add-feature, branch ''",
            "only in merge request !1",
        ],
    )?;
    Ok(outcome(run))
}

async fn git_lfs(lab: &Lab) -> Result<Outcome> {
    let run = lab.pipeline("lfs").run().await?;
    let job = job_ended(&run, "lfs", "success")?;
    let trace = job.trace();
    // The content, not the pointer, after `cat`; `*` = checked out (`-` would be a pointer only).
    let after_cat = trace
        .split("$ cat data/blob.bin")
        .nth(1)
        .and_then(|t| t.lines().nth(1))
        .map(str::trim);
    ensure!(
        after_cat == Some("real LFS content: not a pointer"),
        "data/blob.bin holds {after_cat:?} after the checkout, not its LFS content; trace:\n{trace}"
    );
    ensure_trace_has(
        &trace,
        &[
            "* data/blob.bin",
            "version https://git-lfs.github.com/spec/v1",
        ],
    )?;
    Ok(outcome(run))
}

async fn podman_build(lab: &Lab) -> Result<Outcome> {
    let pinp = crate::forge::pinp::ensure(lab.runner(), lab.images(), lab.podman()).await?;
    // A variant of the suite's lab: the runner's container and registration carry the flags.
    let (extras, flags) = pinp_extras(lab.executor(), &pinp);
    let lab2 = variant(lab, extras).await?;
    let run = lab2
        .pipeline("go-multistage")
        .timeout(Duration::from_secs(300))
        .run()
        .await?;
    let job = job_ended(&run, "podman-build", "success")?;
    let trace = job.trace();
    // `rootless: {{…}}` in the echoed command never reads `rootless: true`: only podman's answer does.
    ensure_trace_has(
        &trace,
        &[
            "rootless: true",
            "COMMIT playground:testing",
            "Successfully tagged localhost/playground:testing",
            "hello from playground:testing, built by podman inside a job",
        ],
    )?;
    let user = match lab.executor() {
        Executor::Shell => "uid=1000(gitlab-runner)",
        Executor::Docker | Executor::Custom => "uid=0(root)",
    };
    ensure!(
        trace.lines().any(|l| l.starts_with(user)),
        "the job did not run as {user}; trace:\n{trace}"
    );
    // A figure for the report, never asserted (the job prints it; snapshots see [DURATION]).
    let took = trace.lines().find_map(|l| {
        l.trim_end()
            .strip_prefix("inner podman build took ")?
            .strip_suffix("ms")?
            .parse::<u64>()
            .ok()
    });
    let took = took.map_or("?".to_owned(), |ms| format!("{:.1}s", ms as f64 / 1000.0));
    let note = format!("{flags}; inner podman build {took}");
    // Shell mode: the job's user gets no sub-ids. Given some, newuidmap fails ("write to uid_map
    // failed: Operation not permitted") unless the runner container has CAP_SYS_ADMIN, which this
    // case does not grant. The build works, with every file of an inner image owned by that user.
    let finding = trace
        .contains("Using rootless single mapping into the namespace")
        .then(|| {
            format!(
                "the job's podman (user gitlab-runner in the runner container) maps a single uid: \
                 sub-ids need newuidmap, which needs CAP_SYS_ADMIN in the runner container; with \
                 ignore_chown_errors every file of an inner image belongs to gitlab-runner. {note}"
            )
        });
    Ok(Outcome {
        note: Some(note),
        finding,
        ..outcome(run)
    })
}

/// The writable directory the documented fix mounts (Kubernetes: an emptyDir) and points HOME at.
const CUSTOM_HOME: &str = "/my_custom_dir";

/// The seeds' `//.gitconfig` troubleshooting entry, reproduced and then fixed as documented.
async fn gitconfig_home(lab: &Lab) -> Result<Outcome> {
    let mode = lab.executor();
    // A variant of the suite's lab: the runner writes global git config while getting the sources
    // (as the Kubernetes executor does by default), and the fix's directory is mounted.
    let tmpfs = format!("{CUSTOM_HOME}:rw,mode=1777");
    let mut extras = RunnerExtras {
        register_args: vec!["--safe-directory-checkout=true".into()],
        ..RunnerExtras::default()
    };
    match mode {
        // Shell jobs run in the runner container.
        Executor::Shell => extras.run_args.extend(["--tmpfs".into(), tmpfs]),
        Executor::Docker => extras
            .register_args
            .extend(["--docker-tmpfs".into(), tmpfs]),
        // The driver's job container runs as uid 1000 (the custom executor does not carry
        // `image:docker:user`), with the tmpfs.
        Executor::Custom => extras.run_args.extend([
            "-e".into(),
            format!("PODMAN_RUN_ARGS=--user=1000 --tmpfs={tmpfs}"),
        ]),
    }
    let lab2 = variant(lab, extras).await?;
    let run = lab2.pipeline("gitconfig-home").run().await?;

    let failed = job_ended(&run, "unwritable-home", "failed")?;
    let trace = failed.trace();
    let error = "error: could not lock config file //.gitconfig: Permission denied";
    let at = trace
        .find(error)
        .ok_or_else(|| anyhow::anyhow!("the seed's error is not in the trace:\n{trace}"))?;
    // Where it fails is what differs between executors: while getting the sources when the runner
    // writes the config as the job's user, in the script when a root helper got the sources.
    let script_at = trace.find("step_script");
    let in_sources = script_at.is_none_or(|s| at < s);
    let expect_in_sources = mode != Executor::Docker;
    ensure!(
        in_sources == expect_in_sources,
        "the error came {} in {mode} (expected {}); trace:\n{trace}",
        if in_sources {
            "while getting the sources"
        } else {
            "in the script"
        },
        if expect_in_sources {
            "while getting the sources"
        } else {
            "in the script"
        },
    );
    ensure!(
        !trace.contains("global git config written"),
        "the script went on after the failure; trace:\n{trace}"
    );

    let fixed = job_ended(&run, "custom-home", "success")?;
    let trace = fixed.trace();
    ensure!(
        !trace.contains("could not lock config file"),
        "the fix did not help; trace:\n{trace}"
    );
    ensure_trace_has(&trace, &["global git config in /my_custom_dir/.gitconfig"])?;
    // Shell jobs run as the runner container's gitlab-runner, uid 1000 too.
    ensure!(
        trace.lines().any(|l| l.trim_end() == "1000"),
        "the job did not run as uid 1000; trace:\n{trace}"
    );
    let note = if in_sources {
        "fails while getting the sources (the runner writes global git config as the job's user)"
    } else {
        "the helper gets the sources as root; the failure shows when the job writes global git config"
    };
    Ok(Outcome {
        note: Some(note.into()),
        ..outcome(run)
    })
}

async fn git_submodules(lab: &Lab) -> Result<Outcome> {
    let run = lab.pipeline("submodules").run().await?;
    let job = job_ended(&run, "with-submodule", "success")?;
    let trace = job.trace();
    ensure_trace_has(
        &trace,
        &[
            "Updating/initializing submodules",
            "Updated submodules",
            "hello from the submodule",
        ],
    )?;
    // `git submodule status`: a leading space means checked out at the recorded commit.
    ensure!(
        trace
            .lines()
            .any(|l| l.starts_with(' ') && l.split_whitespace().nth(1) == Some("lib")),
        "git submodule status does not show lib checked out at its commit; trace:\n{trace}"
    );
    Ok(outcome(run))
}

/// What the runner needs to pull a job's image from the private registry, per mode, and the same
/// as one line for the report. The TLS trust is the rootless user's, per registry (see `registry`).
fn registry_pull_extras(mode: Executor) -> (RunnerExtras, String) {
    match mode {
        // The lab registers `pull_policy = ["never"]`; the job asks for if-not-present, which
        // must be allowed (a job's pull_policy outside allowed_pull_policies fails the job).
        Executor::Docker => (
            RunnerExtras {
                register_args: vec![
                    "--docker-allowed-pull-policies".into(),
                    "never".into(),
                    "--docker-allowed-pull-policies".into(),
                    "if-not-present".into(),
                ],
                ..RunnerExtras::default()
            },
            "[runners.docker] allowed_pull_policies = [\"never\", \"if-not-present\"] (the job's \
             image sets pull_policy: if-not-present); CA in ~runner-user/.config/containers/certs.d/\
             127.0.0.1:<port>/ca.crt"
                .into(),
        ),
        // A later `-e` wins over the lab's RUNNERLAB_PULL_POLICY=never.
        Executor::Custom => (
            RunnerExtras {
                run_args: vec!["-e".into(), "RUNNERLAB_PULL_POLICY=if-not-present".into()],
                ..RunnerExtras::default()
            },
            "RUNNERLAB_PULL_POLICY=if-not-present (the driver pulls with --authfile from \
             CUSTOM_ENV_DOCKER_AUTH_CONFIG); CA in ~runner-user/.config/containers/certs.d/\
             127.0.0.1:<port>/ca.crt"
                .into(),
        ),
        Executor::Shell => (RunnerExtras::default(), String::new()),
    }
}

/// A variant of the suite's lab: the same options, the runner's container and registration carrying
/// `extras`.
async fn variant(lab: &Lab, extras: RunnerExtras) -> Result<Lab> {
    let mut opts: LabOptions = lab.options().clone();
    opts.extras = extras;
    Lab::start_with(opts).await
}

/// A private registry under the run id of a variant of the suite's lab with `extras`. Bound as
/// `let (reg, lab2) = …`, the lab is dropped first (later bindings drop first): the registry then
/// removes the images pulled from it once no job container uses them.
async fn registry_lab(lab: &Lab, extras: RunnerExtras) -> Result<(Registry, Lab)> {
    let lab2 = variant(lab, extras).await?;
    let reg = Registry::start(lab2.podman(), lab2.images(), lab2.run_id()).await?;
    Ok((reg, lab2))
}

/// The report's line for a registry case: the mode's flags and the timings.
fn registry_note(flags: &str, reg: &Registry, job: &crate::lab::JobView<'_>) -> String {
    let took = job
        .duration()
        .map_or("?".into(), |d| format!("{:.1}s", d.as_secs_f64()));
    format!(
        "{flags}; registry ready in {:.1}s, seed push {:.1}s, job {took}",
        reg.ready_in.as_secs_f64(),
        reg.seed_push.as_secs_f64()
    )
}

fn var(key: &str, value: &str) -> mock_gitlab::Variable {
    mock_gitlab::Variable {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    }
}

fn masked(key: &str, value: &str) -> mock_gitlab::Variable {
    mock_gitlab::Variable {
        masked: true,
        ..var(key, value)
    }
}

/// Fail if any credential of `reg` appears in `text`. The message names the place and which
/// credential, never the text (it would hold the secret).
fn ensure_no_credential(reg: &Registry, place: &str, text: &str) -> Result<()> {
    for s in reg.secrets() {
        if text.contains(&s) {
            let kind = if s.starts_with('{') {
                "DOCKER_AUTH_CONFIG value"
            } else if s.ends_with('=') || s.len() > 40 {
                "base64 user:password"
            } else {
                "password"
            };
            anyhow::bail!("a registry credential ({kind}) appears in {place}");
        }
    }
    Ok(())
}

/// The credentials of `reg` appear nowhere the run wrote: the raw trace the coordinator got (the
/// runner's masking, not ours), the normalised trace and snapshot, the runner's raw log, and —
/// after `lab2` is shut down — every file under its output directory (traces, runner.log) and a
/// report of the case written there by the report writer.
async fn ensure_no_credential_leak(
    lab2: Lab,
    reg: &Registry,
    run: &PipelineRun,
    case: &str,
    note: &str,
) -> Result<()> {
    for j in &run.jobs {
        let view = run.job(&j.name);
        ensure_no_credential(
            reg,
            &format!("the raw trace of job {}", j.name),
            &j.trace_text(),
        )?;
        ensure_no_credential(reg, &format!("the trace of job {}", j.name), &view.trace())?;
        ensure_no_credential(
            reg,
            &format!("the snapshot of job {}", j.name),
            &view.snapshot(),
        )?;
    }
    let raw_log = lab2
        .podman()
        .run(["logs", lab2.runner_container()])
        .await
        .map(|o| format!("{}{}", o.stdout, o.stderr))?;
    ensure_no_credential(reg, "the runner container's log", &raw_log)?;
    let out = lab2.out_dir().to_path_buf();
    let environment = environment(lab2.podman(), lab2.runner()).await?;
    let mode = lab2.executor();
    lab2.shutdown().await?;
    let report = crate::report::Report {
        schema: crate::report::SCHEMA,
        run_id: out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        started_at: String::new(),
        duration_s: 0.0,
        environment,
        cases: vec![crate::report::CaseResult {
            name: case.into(),
            mode: mode.name().into(),
            status: crate::report::Status::Passed,
            duration_s: 0.0,
            trace: run.jobs.first().map(|j| {
                run.trace_path(std::path::Path::new(""), &j.name)
                    .to_string_lossy()
                    .into_owned()
            }),
            detail: Some(note.into()),
        }],
        cross_mode: crate::report::cross_mode(&[(case, mode.name(), job_output(run))]),
        job_cost: vec![],
    };
    report.write(&out)?;
    let mut files = Vec::new();
    crate::forge::walk(&out, &out, &mut files)?;
    ensure!(
        files.iter().any(|f| f.ends_with("runner.log")),
        "no runner.log in {} after the lab's shutdown",
        out.display()
    );
    for f in files {
        let p = out.join(&f);
        let text = String::from_utf8_lossy(&std::fs::read(&p)?).into_owned();
        ensure_no_credential(reg, &p.display().to_string(), &text)?;
    }
    Ok(())
}

async fn registry_pull(lab: &Lab) -> Result<Outcome> {
    let (extras, flags) = registry_pull_extras(lab.executor());
    let (reg, lab2) = registry_lab(lab, extras).await?;
    let auth = reg.docker_auth_config(&reg.host_address(), reg.password());
    let run = lab2
        .pipeline("registry-pull")
        .variable(var("REGISTRY_IMAGE", &reg.seed_image()))
        .variable(masked("DOCKER_AUTH_CONFIG", &auth))
        .run()
        .await?;
    let job = job_ended(&run, "pull-from-registry", "success")?;
    ensure_trace_has(
        &job.trace(),
        &["seed image from the runnerlab private registry"],
    )?;
    let note = registry_note(&flags, &reg, &job);
    ensure_no_credential_leak(lab2, &reg, &run, "registry-pull", &note).await?;
    Ok(Outcome {
        note: Some(note),
        ..outcome(run)
    })
}

async fn registry_wrong_credentials(lab: &Lab) -> Result<Outcome> {
    let (extras, _) = registry_pull_extras(lab.executor());
    let (reg, lab2) = registry_lab(lab, extras).await?;
    // The right user with a password of the same shape: only the password is wrong.
    let wrong =
        rand::distr::SampleString::sample_string(&rand::distr::Alphanumeric, &mut rand::rng(), 32);
    let auth = reg.docker_auth_config(&reg.host_address(), &wrong);
    let run = lab2
        .pipeline("registry-pull")
        .variable(var("REGISTRY_IMAGE", &reg.seed_image()))
        .variable(masked("DOCKER_AUTH_CONFIG", &auth))
        .run()
        .await?;
    let job = job_ended(&run, "pull-from-registry", "failed")?;
    let trace = job.trace();
    ensure!(
        trace.contains("unauthorized"),
        "the trace does not say the registry refused the credentials (\"unauthorized\"); trace:\n{trace}"
    );
    ensure!(
        !trace.contains("seed image from the runnerlab private registry"),
        "the job ran in the image although its credentials were wrong; trace:\n{trace}"
    );
    // Docker: runner 19.4 classifies an `unauthorized` pull as runner_configuration_error, which it
    // reports as script_failure (GitLab has no such reason). Custom: a failed prepare is a system
    // failure by the driver's contract (the runner retries prepare twice first).
    let want = match lab2.executor() {
        Executor::Custom => "runner_system_failure",
        _ => "script_failure",
    };
    ensure!(
        job.failure_reason() == Some(want),
        "failure reason {:?}, expected {want}",
        job.failure_reason()
    );
    let note = format!("failure reason {want}; the trace quotes the registry's `unauthorized`");
    ensure_no_credential_leak(lab2, &reg, &run, "registry-wrong-credentials", &note).await?;
    Ok(Outcome {
        note: Some(note),
        ..outcome(run)
    })
}

async fn registry_push(lab: &Lab) -> Result<Outcome> {
    let pinp = crate::forge::pinp::ensure(lab.runner(), lab.images(), lab.podman()).await?;
    let (extras, flags) = pinp_extras(lab.executor(), &pinp);
    let (reg, lab2) = registry_lab(lab, extras).await?;
    let run = lab2
        .pipeline("registry-push")
        .timeout(Duration::from_secs(300))
        .variable(var("REGISTRY", &reg.job_address()))
        .variable(var("REGISTRY_USER", reg.username()))
        .variable(masked("REGISTRY_PASSWORD", reg.password()))
        .variable(mock_gitlab::Variable {
            file: true,
            ..var("REGISTRY_CA", reg.ca_pem())
        })
        .run()
        .await?;
    let job = job_ended(&run, "push-and-pull", "success")?;
    ensure_trace_has(
        &job.trace(),
        &[
            // The wrong password first: podman's own words for the registry's 401.
            "invalid username/password",
            "Login Succeeded!",
            "Successfully tagged",
            "built by podman inside a job, pushed to the private registry and pulled back",
        ],
    )?;
    let note = registry_note(&flags, &reg, &job);
    ensure_no_credential_leak(lab2, &reg, &run, "registry-push", &note).await?;
    // The same single uid mapping as podman-build in shell mode: it works, with every file of
    // the pulled and built images owned by gitlab-runner.
    let finding = job
        .trace()
        .contains("Using rootless single mapping into the namespace")
        .then(|| {
            format!(
                "the job's podman (user gitlab-runner in the runner container) maps a single uid \
                 (see podman-build): login, pull, build, push and pull back work, with every file \
                 of the images owned by gitlab-runner. {note}"
            )
        });
    Ok(Outcome {
        note: Some(note),
        finding,
        ..outcome(run)
    })
}

/// The seed's several-runners setup (`runner-1-config`, `runner-2-config`) as a case: a fleet of its
/// own, in the lab's mode, with the lab's runner.
async fn fleet_tag_routing(lab: &Lab) -> Result<Outcome> {
    use crate::fleet::{Fleet, FleetOptions, RunnerSpec};
    let mut opts = FleetOptions::new(
        lab.executor(),
        vec![
            RunnerSpec::new("build")
                .tags(&["build"])
                .run_untagged(false),
            RunnerSpec::new("test").tags(&["test"]).run_untagged(true),
        ],
    );
    opts.runner = lab.options().runner.clone();
    let fleet = Fleet::start(opts).await?;
    let run = fleet.pipeline("fleet-routing").run().await?;
    let (build, test) = (fleet.runner("build").id(), fleet.runner("test").id());
    for (name, want, why) in [
        ("compile", build, "tagged build"),
        ("package", build, "tagged build"),
        ("unit", test, "tagged test"),
        ("integration", test, "tagged test"),
        ("lint", test, "untagged: only `test` has run_untagged"),
        ("docs", test, "untagged: only `test` has run_untagged"),
    ] {
        let j = job_ended(&run, name, "success")?;
        let took = j
            .job
            .runner_id
            .and_then(|id| fleet.runner_by_id(id))
            .and_then(|r| r.name().map(str::to_owned));
        ensure!(
            j.job.runner_id == Some(want),
            "job {name} ({why}) ran on runner {took:?}"
        );
    }
    let registrations = fleet
        .runners()
        .iter()
        .map(|r| r.record().map_or(0, |rec| rec.verify_count))
        .collect::<Vec<_>>();
    fleet.shutdown().await?;
    Ok(Outcome {
        note: Some(format!(
            "2 runners, 2 config volumes; build jobs on `build`, test and untagged jobs on `test`; \
             verifications per runner {registrations:?}"
        )),
        // The two runners work at once: which job's trace comes first is not fixed.
        snapshot: false,
        ..outcome(run)
    })
}
