//! What a job costs beyond its script, measured during the conformance run itself: the report's
//! `job_cost`.

use crate::lab::{Lab, PipelineRun};

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
pub(super) fn job_overhead_s(j: &mock_gitlab::JobRecord) -> Option<f64> {
    Some(job_e2e_s(j)? - script_s(j)?)
}

/// The `hello` job against the container floors, measured on the same lab right after the case.
/// A floor that cannot be measured leaves its figures out; it never fails the run.
pub(super) async fn trivial_job_cost(
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
