//! Files that outlive a job: artifacts uploaded to the coordinator and downloaded by a later stage,
//! and a cache saved by one job and restored by the next.

use anyhow::{Result, ensure};

use super::support::{ensure_trace_has, job_ended, outcome};
use super::{ALL, Case, Outcome};
use crate::lab::{Executor, Lab};

pub(super) const ARTIFACTS_BETWEEN_STAGES: Case = Case {
    name: "artifacts-between-stages",
    about: "a file uploaded as an artifact by one stage is downloaded by the next",
    modes: ALL,
    known: &[(
        Executor::Custom,
        "the custom executor runs the artifact uploader inside the job container, whose image \
         has no gitlab-runner binary (the podman driver does not inject one)",
    )],
    not_applicable: &[],
    run: |lab| Box::pin(artifacts_between_stages(lab)),
};

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

pub(super) const CACHE_BETWEEN_JOBS: Case = Case {
    name: "cache-between-jobs",
    about: "a cache saved by one job is restored by the next",
    modes: ALL,
    known: &[(
        Executor::Custom,
        "the custom executor runs the cache archiver inside the job container, whose image has \
         no gitlab-runner binary (the podman driver does not inject one)",
    )],
    not_applicable: &[],
    run: |lab| Box::pin(cache_between_jobs(lab)),
};

async fn cache_between_jobs(lab: &Lab) -> Result<Outcome> {
    let run = lab.pipeline("cache").run().await?;
    job_ended(&run, "fill", "success")?;
    let used = job_ended(&run, "use", "success")?;
    ensure_trace_has(&used.trace(), &["cached by fill"])?;
    Ok(outcome(run))
}
