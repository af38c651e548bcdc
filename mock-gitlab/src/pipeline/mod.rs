//! Pipelines: `.gitlab-ci.yml` parsing (`config`, `yaml`), lint errors
//! (`lint`), durations, and the stage engine below that moves jobs from
//! `created` to `pending`/`skipped` as earlier stages finish.

pub mod config;
pub mod duration;
pub mod lint;
pub mod yaml;

use std::time::Instant;

use crate::state::{JobStatus, PipelineId, PipelineStatus, State};
use config::When;

/// What `advance` changed, for logging and wake-ups.
#[derive(Debug, Default)]
pub(crate) struct Advance {
    pub pipeline: Option<PipelineId>,
    /// Jobs that became pending (must be announced to long-polling runners).
    pub enqueued: Vec<u64>,
    pub skipped: Vec<u64>,
    /// The pipeline's new status if it changed.
    pub pipeline_status: Option<PipelineStatus>,
}

/// Re-evaluate a pipeline after a job changed state.
///
/// GitLab semantics (stage-ordered, no `needs:`): the jobs of a stage are
/// decided only once every job of all earlier stages is complete. Then
/// `on_success` jobs run if no earlier job failed (failures with
/// `allow_failure` do not count), `on_failure` jobs run only if one did,
/// `always` jobs run regardless, and `manual` jobs are skipped for now.
pub(crate) fn advance(st: &mut State, pid: PipelineId) -> Advance {
    let mut out = Advance {
        pipeline: Some(pid),
        ..Advance::default()
    };
    let Some(p) = st.pipelines.get(&pid.0) else {
        return out;
    };
    let stages = p.stages.clone();
    let job_ids = p.job_ids.clone();
    let old_status = p.status;

    let mut prior_failed = false;
    let mut all_complete = true;
    for stage in &stages {
        let ids: Vec<u64> = job_ids
            .iter()
            .copied()
            .filter(|id| st.jobs.get(id).is_some_and(|j| &j.record.stage == stage))
            .collect();
        if ids.is_empty() {
            continue;
        }
        for id in &ids {
            let Some(job) = st.jobs.get_mut(id) else {
                continue;
            };
            if job.record.status != JobStatus::Created {
                continue;
            }
            let run = match job.spec.when {
                When::OnSuccess => !prior_failed,
                When::OnFailure => prior_failed,
                When::Always => true,
                When::Manual | When::Delayed | When::Never => false,
            };
            if run {
                job.record.status = JobStatus::Pending;
                job.record.queued_at = Some(Instant::now());
                st.queue.push_back(*id);
                out.enqueued.push(*id);
            } else {
                job.record.status = JobStatus::Skipped;
                job.record.finished_at = Some(Instant::now());
                out.skipped.push(*id);
            }
        }
        let mut stage_complete = true;
        for id in &ids {
            let Some(job) = st.jobs.get(id) else { continue };
            let r = &job.record;
            if !r.status.is_complete() {
                stage_complete = false;
            }
            let failed = matches!(r.status, JobStatus::Failed | JobStatus::Canceled);
            if failed && !job.spec.allow_failure.permits(r.exit_code) {
                prior_failed = true;
            }
        }
        if !stage_complete {
            all_complete = false;
            break;
        }
    }

    let any_started = job_ids.iter().any(|id| {
        st.jobs
            .get(id)
            .is_some_and(|j| !matches!(j.record.status, JobStatus::Created | JobStatus::Pending))
    });
    let new_status = if all_complete {
        let all_skipped = job_ids.iter().all(|id| {
            st.jobs
                .get(id)
                .is_none_or(|j| j.record.status == JobStatus::Skipped)
        });
        if prior_failed {
            PipelineStatus::Failed
        } else if all_skipped {
            PipelineStatus::Skipped
        } else {
            PipelineStatus::Success
        }
    } else if any_started {
        PipelineStatus::Running
    } else {
        PipelineStatus::Pending
    };
    if let Some(p) = st.pipelines.get_mut(&pid.0)
        && new_status != old_status
    {
        p.status = new_status;
        if new_status.is_complete() {
            p.finished_at = Some(Instant::now());
        }
        out.pipeline_status = Some(new_status);
    }
    out
}
