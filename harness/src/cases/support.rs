//! What many cases share: checks on a finished job and its trace, the usual outcome, variables,
//! a variant of the suite's lab, and the job output the report compares across modes.

use anyhow::{Result, ensure};

use super::Outcome;
use crate::lab::{JobView, Lab, LabOptions, PipelineRun, RunnerExtras};

/// Check a trace contains every needle, naming the missing one and showing the trace.
pub fn ensure_trace_has(trace: &str, needles: &[&str]) -> Result<()> {
    for n in needles {
        ensure!(trace.contains(n), "trace lacks {n:?}; trace:\n{trace}");
    }
    Ok(())
}

pub(super) fn outcome(run: PipelineRun) -> Outcome {
    Outcome {
        run: Some(run),
        note: None,
        finding: None,
        snapshot: true,
    }
}

/// The job, which must have ended `status`, or an error with its trace.
pub(super) fn job_ended<'r>(run: &'r PipelineRun, name: &str, status: &str) -> Result<JobView<'r>> {
    let job = run.job(name);
    ensure!(
        job.status() == status,
        "job {name} ended {} (expected {status}); trace:\n{}",
        job.status(),
        job.trace()
    );
    Ok(job)
}

pub(super) fn var(key: &str, value: &str) -> mock_gitlab::Variable {
    mock_gitlab::Variable {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    }
}

pub(super) fn masked(key: &str, value: &str) -> mock_gitlab::Variable {
    mock_gitlab::Variable {
        masked: true,
        ..var(key, value)
    }
}

/// A variant of the suite's lab: the same options, the runner's container and registration carrying
/// `extras`.
pub(super) async fn variant(lab: &Lab, extras: RunnerExtras) -> Result<Lab> {
    let mut opts: LabOptions = lab.options().clone();
    opts.extras = extras;
    Lab::start_with(opts).await
}

/// The writable directory the documented fix mounts (Kubernetes: an emptyDir) and points HOME at.
pub(super) const CUSTOM_HOME: &str = "/my_custom_dir";

/// What the jobs of a run printed from their `step_script` section on, normalised like a
/// snapshot: the part a user's pipeline sees, which should not depend on the executor.
pub fn job_output(run: &PipelineRun) -> String {
    let mut s = String::new();
    for j in &run.jobs {
        let text = run.job(&j.name).snapshot();
        s.push_str(&format!("== job {} ({})\n", j.name, j.status.as_str()));
        s.push_str(&step_script_on(&text));
    }
    s
}

/// The lines of a snapshot-normalised trace from its `step_script` section on, without the
/// docker executor's per-container lines: the part of one job's output [`job_output`] compares.
pub fn step_script_on(text: &str) -> String {
    let mut s = String::new();
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
    s
}
