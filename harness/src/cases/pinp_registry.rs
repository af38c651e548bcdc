//! Images made and fetched by jobs: `podman build` inside a job (Podman in rootless Podman, never
//! privileged), and a private registry (TLS, htpasswd) pulled from with DOCKER_AUTH_CONFIG and pushed
//! to with `podman login`, with no credential in any trace, log or report.

use std::time::Duration;

use anyhow::{Result, ensure};

use super::support::{ensure_trace_has, job_ended, job_output, masked, outcome, var, variant};
use super::{ALL, CONTAINERS, Case, Outcome};
use crate::executor::For;
use crate::forge::pinp::{ARCHIVE_IN_JOB, PinpImages};
use crate::lab::registry::Registry;
use crate::lab::{Executor, Lab, PipelineRun, RunnerExtras};

/// What the runner needs so that its jobs can run `podman build`, per mode, and the same as one
/// line for the report. Never `--privileged`: the inner podman runs rootless (no CAP_SYS_ADMIN).
/// - `unmask=/proc/*`: without it every RUN step fails to mount /proc (the outer runtime masks
///   /proc paths, and a rootless podman may only mount a proc that is fully visible);
/// - a tmpfs on `/var/lib/containers`: the inner store cannot use native overlay on the outer
///   overlayfs, and fuse-overlayfs would need /dev/fuse (0600 root on the host). A tmpfs goes with
///   the container, so nothing outlives the job unlabelled (an anonymous volume would);
/// - the builder archive, bind-mounted read-only (no registry; see `forge::pinp::ensure_archive`).
pub fn pinp_extras(mode: Executor, pinp: &PinpImages) -> Result<(RunnerExtras, String)> {
    let m = mode.mode();
    let mut x = RunnerExtras::default();
    if m.jobs_run_in_runner_container() {
        // The jobs' podman comes from the runner image.
        x.image = Some(pinp.shell_runner.clone());
    }
    m.add_security_opt(&mut x, For::Jobs, "unmask=/proc/*")?;
    m.add_tmpfs(&mut x, For::Jobs, "/var/lib/containers", "rw")?;
    m.add_volume(
        &mut x,
        &pinp.archive.to_string_lossy(),
        ARCHIVE_IN_JOB,
        true,
    )?;
    let note = format!("{}; no --privileged, no devices, no cap_add", x.describe());
    Ok((x, note))
}

pub(super) const PODMAN_BUILD: Case = Case {
    name: "podman-build",
    about: "a job runs `podman build` (multi-stage, Go builder) and `podman run` of the result, \
            unprivileged, with a rootless podman inside rootless Podman",
    modes: ALL,
    known: &[],
    not_applicable: &[],
    run: |lab| Box::pin(podman_build(lab)),
};

async fn podman_build(lab: &Lab) -> Result<Outcome> {
    let pinp = crate::forge::pinp::ensure(lab.runner(), lab.images(), lab.podman()).await?;
    // A variant of the suite's lab: the runner's container and registration carry the flags.
    let (extras, flags) = pinp_extras(lab.executor(), &pinp)?;
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
    let user = lab.executor().mode().job_identity();
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

/// Why the registry-pull cases skip shell mode.
const SHELL_IGNORES_IMAGE: &[(Executor, &str)] = &[(
    Executor::Shell,
    "the shell executor ignores `image:` and DOCKER_AUTH_CONFIG: jobs run in the runner's \
     container (registry-push covers the registry in shell mode)",
)];

/// What the runner needs to pull a job's image from the private registry (the job's image sets
/// `pull_policy: if-not-present`), and the same as one line for the report. The TLS trust is the
/// rootless user's, per registry (see `registry`).
fn registry_pull_extras(mode: Executor) -> Result<(RunnerExtras, String)> {
    let mut x = RunnerExtras::default();
    mode.mode().allow_pull_policy(&mut x, "if-not-present")?;
    let note = format!(
        "{}; CA in ~runner-user/.config/containers/certs.d/127.0.0.1:<port>/ca.crt",
        x.describe()
    );
    Ok((x, note))
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
    let environment = crate::report::environment(lab2.podman(), lab2.runner()).await?;
    let mode = lab2.executor();
    lab2.shutdown().await?;
    let report = crate::report::Report {
        schema: crate::report::SCHEMA.into(),
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

pub(super) const REGISTRY_PULL: Case = Case {
    name: "registry-pull",
    about: "the job's image comes from a private registry (TLS, htpasswd) with credentials only \
            from DOCKER_AUTH_CONFIG, a masked variable that appears in no trace, log or report",
    modes: CONTAINERS,
    known: &[],
    not_applicable: SHELL_IGNORES_IMAGE,
    run: |lab| Box::pin(registry_pull(lab)),
};

async fn registry_pull(lab: &Lab) -> Result<Outcome> {
    let (extras, flags) = registry_pull_extras(lab.executor())?;
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

pub(super) const REGISTRY_WRONG_CREDENTIALS: Case = Case {
    name: "registry-wrong-credentials",
    about: "a wrong password in DOCKER_AUTH_CONFIG fails the job with the registry's refusal \
            (unauthorized, or authentication required) in the trace, and the password appears nowhere",
    modes: CONTAINERS,
    known: &[],
    not_applicable: SHELL_IGNORES_IMAGE,
    run: |lab| Box::pin(registry_wrong_credentials(lab)),
};

async fn registry_wrong_credentials(lab: &Lab) -> Result<Outcome> {
    let (extras, _) = registry_pull_extras(lab.executor())?;
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
    // Podman 4.3 quotes the registry's `unauthorized`; 5.4 says `authentication required`.
    let refusal = ["unauthorized", "authentication required"]
        .into_iter()
        .find(|w| trace.contains(w))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "the trace does not say the registry refused the credentials (\"unauthorized\" or \
                 \"authentication required\"); trace:\n{trace}"
            )
        })?;
    ensure!(
        !trace.contains("seed image from the runnerlab private registry"),
        "the job ran in the image although its credentials were wrong; trace:\n{trace}"
    );
    // Docker: runner 19.4 classifies an `unauthorized` pull as runner_configuration_error, which it
    // reports as script_failure (GitLab has no such reason). Custom: a failed prepare is a system
    // failure by the driver's contract (the runner retries prepare twice first).
    let want = lab2.executor().mode().pull_failure_reason();
    ensure!(
        job.failure_reason() == Some(want),
        "failure reason {:?}, expected {want}",
        job.failure_reason()
    );
    let note = format!("failure reason {want}; the trace says the registry refused: `{refusal}`");
    ensure_no_credential_leak(lab2, &reg, &run, "registry-wrong-credentials", &note).await?;
    Ok(Outcome {
        note: Some(note),
        ..outcome(run)
    })
}

pub(super) const REGISTRY_PUSH: Case = Case {
    name: "registry-push",
    about: "a job logs in to a private registry with masked variables (`podman login`; a wrong \
            password is refused), builds, pushes and pulls back an image, unprivileged, with \
            podman inside rootless Podman",
    modes: ALL,
    known: &[],
    not_applicable: &[],
    run: |lab| Box::pin(registry_push(lab)),
};

async fn registry_push(lab: &Lab) -> Result<Outcome> {
    let pinp = crate::forge::pinp::ensure(lab.runner(), lab.images(), lab.podman()).await?;
    let (extras, flags) = pinp_extras(lab.executor(), &pinp)?;
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
