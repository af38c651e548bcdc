//! Pipelines: `.gitlab-ci.yml` parsing (`config`, `yaml`), lint errors
//! (`lint`), durations, and the stage engine below that moves jobs from
//! `created` to `pending`/`skipped` as earlier stages finish.

mod basics;
pub mod config;
pub mod duration;
mod job;
pub mod keywords;
pub mod lint;
pub(crate) mod model;
pub mod preprocess;
pub mod rules;
pub mod yaml;

use std::time::Instant;

use crate::state::{JobStatus, PipelineId, PipelineStatus, State};
use model::When;

/// What `advance` changed, for logging and wake-ups.
#[derive(Debug, Default)]
pub(crate) struct Advance {
    pub pipeline: Option<PipelineId>,
    /// Jobs that became pending (must be announced to long-polling runners).
    pub enqueued: Vec<u64>,
    pub skipped: Vec<u64>,
    /// `when: delayed` jobs that became scheduled.
    pub scheduled: Vec<u64>,
    /// The pipeline's new status if it changed.
    pub pipeline_status: Option<PipelineStatus>,
}

/// Whether a finished job counts as a failure for what follows it.
fn counts_as_failed(job: &crate::state::Job) -> bool {
    let r = &job.record;
    match r.status {
        JobStatus::Failed => !job.spec.allow_failure.permits(r.exit_code),
        JobStatus::Canceled => true,
        _ => false,
    }
}

/// Move a `created` job to `pending` or `skipped` given whether what it
/// waits for failed.
fn decide(st: &mut State, id: u64, failed: bool, out: &mut Advance) {
    let Some(job) = st.jobs.get_mut(&id) else {
        return;
    };
    let run = match job.spec.when {
        When::OnSuccess | When::Delayed => !failed,
        When::OnFailure => failed,
        When::Always => true,
        When::Manual | When::Never => false,
    };
    if run && job.spec.when == When::Delayed {
        // GitLab's `scheduled`: pending once `start_in` has passed (see `promote_due`).
        let due = Instant::now() + std::time::Duration::from_secs(job.spec.start_in_s.unwrap_or(0));
        job.record.status = JobStatus::Scheduled;
        job.record.scheduled_at = Some(due);
        st.scheduled.insert(id, due);
        out.scheduled.push(id);
    } else if run {
        job.record.status = JobStatus::Pending;
        job.record.queued_at = Some(Instant::now());
        st.queue.push_back(id);
        out.enqueued.push(id);
    } else {
        job.record.status = JobStatus::Skipped;
        job.record.finished_at = Some(Instant::now());
        out.skipped.push(id);
    }
}

/// Re-evaluate a pipeline after a job changed state.
///
/// GitLab semantics: a job with `needs:` (a DAG job) is decided as soon as
/// every job it needs is complete; any other job once every job of all
/// earlier stages is complete. Then `on_success` jobs run if nothing they
/// wait for failed (failures with `allow_failure` do not count; cancels and,
/// for needs, skips do), `on_failure` jobs run only if something did,
/// `always` jobs run regardless, and `manual` jobs are skipped for now.
/// Retried attempts are ignored.
pub(crate) fn advance(st: &mut State, pid: PipelineId) -> Advance {
    let mut out = Advance {
        pipeline: Some(pid),
        ..Advance::default()
    };
    let Some(p) = st.pipelines.get(&pid.0) else {
        return out;
    };
    let stages = p.stages.clone();
    let old_status = p.status;
    let job_ids: Vec<u64> = p
        .job_ids
        .iter()
        .copied()
        .filter(|id| st.jobs.get(id).is_some_and(|j| !j.record.retried))
        .collect();

    // Deciding a job can complete a stage (skips) or a need, so repeat
    // until nothing changes; each round decides at least one job.
    loop {
        let mut changed = false;

        // DAG jobs.
        for id in &job_ids {
            let Some(job) = st.jobs.get(id) else { continue };
            if job.record.status != JobStatus::Created {
                continue;
            }
            let Some(needs) = job.spec.needs.clone() else {
                continue;
            };
            let mut ready = true;
            let mut failed = false;
            for n in &needs {
                for dep in st.latest_jobs_named(pid, &n.job) {
                    if !dep.record.status.is_complete() {
                        ready = false;
                    }
                    if counts_as_failed(dep) || dep.record.status == JobStatus::Skipped {
                        failed = true;
                    }
                }
            }
            if ready {
                decide(st, *id, failed, &mut out);
                changed = true;
            }
        }

        // Stage-ordered jobs.
        let mut prior_failed = false;
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
                let undecided = st.jobs.get(id).is_some_and(|j| {
                    j.record.status == JobStatus::Created && j.spec.needs.is_none()
                });
                if undecided {
                    decide(st, *id, prior_failed, &mut out);
                    changed = true;
                }
            }
            let mut stage_complete = true;
            for id in &ids {
                let Some(job) = st.jobs.get(id) else { continue };
                if !job.record.status.is_complete() {
                    stage_complete = false;
                }
                if counts_as_failed(job) {
                    prior_failed = true;
                }
            }
            if !stage_complete {
                break;
            }
        }
        if !changed {
            break;
        }
    }

    let jobs: Vec<&crate::state::Job> = job_ids.iter().filter_map(|id| st.jobs.get(id)).collect();
    let all_complete = jobs.iter().all(|j| j.record.status.is_complete());
    let any_started = jobs.iter().any(|j| {
        !matches!(
            j.record.status,
            JobStatus::Created | JobStatus::Scheduled | JobStatus::Pending
        )
    });
    let new_status = if all_complete {
        let failed = jobs
            .iter()
            .any(|j| j.record.status == JobStatus::Failed && counts_as_failed(j));
        let canceled = jobs.iter().any(|j| j.record.status == JobStatus::Canceled);
        let all_skipped = jobs.iter().all(|j| j.record.status == JobStatus::Skipped);
        if failed {
            PipelineStatus::Failed
        } else if canceled {
            PipelineStatus::Canceled
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

/// Cancel one job (see `MockGitlab::cancel_job`); returns its pipeline.
pub(crate) fn cancel_job(st: &mut State, id: u64, graceful: bool) -> anyhow::Result<PipelineId> {
    let job = st
        .jobs
        .get_mut(&id)
        .ok_or_else(|| anyhow::anyhow!("job {id} does not exist"))?;
    let r = &mut job.record;
    let pid = r.pipeline_id;
    match r.status {
        JobStatus::Created | JobStatus::Scheduled | JobStatus::Pending => {
            r.status = JobStatus::Canceled;
            r.finished_at = Some(Instant::now());
            r.finished_wall = Some(std::time::SystemTime::now());
            st.queue.retain(|q| *q != id);
            st.scheduled.remove(&id);
            tracing::info!(job = id, "job canceled before it started");
        }
        JobStatus::Running if graceful => {
            r.canceling = true;
            tracing::info!(job = id, "job running -> canceling");
        }
        JobStatus::Running => {
            r.status = JobStatus::Canceled;
            r.canceling = false;
            r.finished_at = Some(Instant::now());
            r.finished_wall = Some(std::time::SystemTime::now());
            tracing::info!(job = id, "job running -> canceled (forced)");
        }
        s => anyhow::bail!("job {id} is already {s}"),
    }
    Ok(pid)
}

/// After a job failed: if its `retry:` allows it, mark it retried and
/// create the next attempt (a new job id, same name). Returns the new id.
pub(crate) fn maybe_retry(st: &mut State, id: u64) -> Option<u64> {
    let job = st.jobs.get(&id)?;
    let r = &job.record;
    if r.status != JobStatus::Failed
        || !job
            .spec
            .retry
            .permits(r.failure_reason.as_deref(), r.exit_code)
    {
        return None;
    }
    // Attempts so far: follow the retry chain back.
    let mut attempts = 1;
    let mut cur = r.retry_of;
    while let Some(prev) = cur {
        attempts += 1;
        cur = st.jobs.get(&prev).and_then(|j| j.record.retry_of);
    }
    if attempts > job.spec.retry.max {
        return None;
    }
    let (new_id, _) = new_attempt(st, id)?;
    tracing::info!(
        job = id,
        retry = new_id,
        attempt = attempts + 1,
        "job retried"
    );
    Some(new_id)
}

/// The next attempt of job `id` (same spec and pipeline variables, a new id), listed in its
/// pipeline; `id` is marked retried. Returns the new id and the pipeline.
fn new_attempt(st: &mut State, id: u64) -> Option<(u64, PipelineId)> {
    let job = st.jobs.get(&id)?;
    let r = &job.record;
    let (pid, project, spec, vars) = (
        r.pipeline_id,
        r.project.clone(),
        job.spec.clone(),
        job.pipeline_variables.clone(),
    );
    let new_id = st.insert_job(pid, &project, spec, vars, Some(id));
    if let Some(j) = st.jobs.get_mut(&id) {
        j.record.retried = true;
    }
    if let Some(p) = st.pipelines.get_mut(&pid.0) {
        p.job_ids.push(new_id);
    }
    Some((new_id, pid))
}

/// A pipeline that gets a pending job again is not finished any more.
fn reopen(st: &mut State, pid: PipelineId) {
    if let Some(p) = st.pipelines.get_mut(&pid.0) {
        p.finished_at = None;
    }
}

/// GitLab's "Retry" (`Ci::RetryJobService`): a finished job that is not
/// already retried gets a new attempt, pending at once; returns its id and
/// pipeline. Later jobs the first attempt's result decided stay as they are.
pub(crate) fn retry_job(st: &mut State, id: u64) -> anyhow::Result<(u64, PipelineId)> {
    let job = st
        .jobs
        .get(&id)
        .ok_or_else(|| anyhow::anyhow!("job {id} does not exist"))?;
    let r = &job.record;
    if !matches!(
        r.status,
        JobStatus::Success | JobStatus::Failed | JobStatus::Canceled
    ) || r.retried
    {
        anyhow::bail!("job {id} is not retryable (it is {})", r.status);
    }
    let (new_id, pid) =
        new_attempt(st, id).ok_or_else(|| anyhow::anyhow!("job {id} does not exist"))?;
    if let Some(j) = st.jobs.get_mut(&new_id) {
        j.record.status = JobStatus::Pending;
        j.record.queued_at = Some(Instant::now());
    }
    st.queue.push_back(new_id);
    reopen(st, pid);
    tracing::info!(job = id, retry = new_id, "job retried by request");
    Ok((new_id, pid))
}

/// Whether a job waits for "Play": `when: manual`, decided (skipped) and never played.
pub(crate) fn is_manual(job: &crate::state::Job) -> bool {
    job.spec.when == When::Manual && job.record.status == JobStatus::Skipped
}

/// GitLab's "Play" on a manual job: it becomes pending; returns its pipeline.
pub(crate) fn play_job(st: &mut State, id: u64) -> anyhow::Result<PipelineId> {
    let job = st
        .jobs
        .get_mut(&id)
        .ok_or_else(|| anyhow::anyhow!("job {id} does not exist"))?;
    if !is_manual(job) {
        anyhow::bail!("job {id} is not a manual job waiting to be played");
    }
    let r = &mut job.record;
    r.status = JobStatus::Pending;
    r.queued_at = Some(Instant::now());
    r.finished_at = None;
    let pid = r.pipeline_id;
    st.queue.push_back(id);
    reopen(st, pid);
    tracing::info!(job = id, "manual job played -> pending");
    Ok(pid)
}

/// What `promote_due` did.
pub(crate) struct Promoted {
    /// Jobs that became pending.
    pub jobs: Vec<u64>,
    /// Their pipelines, re-evaluated.
    pub advances: Vec<Advance>,
    /// When the next scheduled job is due.
    pub next_due: Option<Instant>,
}

/// Scheduled (`when: delayed`) jobs whose time has come become pending.
pub(crate) fn promote_due(st: &mut State, now: Instant) -> Promoted {
    let due: Vec<u64> = st
        .scheduled
        .iter()
        .filter(|(_, t)| **t <= now)
        .map(|(id, _)| *id)
        .collect();
    let mut pipelines = Vec::new();
    let mut jobs = Vec::new();
    for id in due {
        st.scheduled.remove(&id);
        let Some(job) = st.jobs.get_mut(&id) else {
            continue;
        };
        if job.record.status != JobStatus::Scheduled {
            continue;
        }
        job.record.status = JobStatus::Pending;
        job.record.queued_at = Some(now);
        let pid = job.record.pipeline_id;
        st.queue.push_back(id);
        jobs.push(id);
        tracing::info!(job = id, "job scheduled -> pending (start_in passed)");
        if !pipelines.contains(&pid) {
            pipelines.push(pid);
        }
    }
    let advances = pipelines.into_iter().map(|pid| advance(st, pid)).collect();
    Promoted {
        jobs,
        advances,
        next_due: st.scheduled.values().min().copied(),
    }
}
