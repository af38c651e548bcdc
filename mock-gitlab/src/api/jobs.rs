//! `POST /jobs/request` (with long polling) and `PUT /jobs/:id`
//! (runner-protocol.md §3 and §5).

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::runners::RunnerInfoBody;
use crate::instance::Inner;
use crate::payload::{self, JobPayload, PayloadContext};
use crate::state::{JobStatus, runner_matches};
use crate::web::{bad_json, hv, json, json_message, parse_body, token_from};

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct RequestBody {
    token: Option<String>,
    system_id: Option<String>,
    last_update: Option<String>,
    info: Option<RunnerInfoBody>,
}

/// `POST /jobs/request`.
///
/// Answers 201 with a job if one matches; otherwise, if the runner's
/// `last_update` equals the current queue version, holds the request (long
/// poll) until a job is queued, the hold expires or the server shuts down;
/// then 204 with `X-GitLab-Last-Update`.
pub(crate) async fn request(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(b) = parse_body::<RequestBody>(&body) else {
        return bad_json();
    };
    let Some(token) = token_from(b.token.as_deref(), &headers, "RUNNER-TOKEN") else {
        return json_message(StatusCode::FORBIDDEN, "403 Forbidden");
    };
    let runner_id = {
        let mut st = inner.lock();
        let Some(r) = st.runner_by_token_mut(&token) else {
            return json_message(StatusCode::FORBIDDEN, "403 Forbidden");
        };
        r.record.poll_count += 1;
        r.record.last_poll = Some(Instant::now());
        // GitLab creates the runner manager on job requests too.
        if let Some(s) = b.system_id.as_ref().filter(|s| !s.is_empty()) {
            r.record.system_ids.insert(s.clone());
        }
        if let Some(info) = &b.info {
            info.apply(&mut r.record);
        }
        r.record.id
    };

    let deadline = tokio::time::Instant::now() + inner.long_poll;
    let mut held = false;
    loop {
        // Subscribe before looking at the queue so a job queued in between
        // still wakes us.
        let mut queue_rx = inner.queue_tx.subscribe();
        if let Some(p) = inner.try_assign(runner_id) {
            return json(StatusCode::CREATED, &p);
        }
        let version = inner.last_update_value();
        let may_hold = !held && b.last_update.as_deref() == Some(version.as_str());
        if !may_hold {
            return no_job(&version);
        }
        held = true;
        if let Some(r) = inner.lock().runners.get_mut(&runner_id) {
            r.record.long_polls += 1;
        }
        let mut shutdown_rx = inner.shutdown_tx.subscribe();
        tokio::select! {
            _ = queue_rx.changed() => continue,
            _ = tokio::time::sleep_until(deadline) => {}
            _ = shutdown_rx.wait_for(|stop| *stop) => {}
        }
        return no_job(&inner.last_update_value());
    }
}

fn no_job(version: &str) -> Response {
    (
        StatusCode::NO_CONTENT,
        [(
            header::HeaderName::from_static("x-gitlab-last-update"),
            hv(version),
        )],
    )
        .into_response()
}

impl Inner {
    /// Atomically take the first pending job this runner may run, mark it
    /// running and build its payload.
    pub(crate) fn try_assign(&self, runner_id: u64) -> Option<JobPayload> {
        let mut st = self.lock();
        let runner = st.runners.get(&runner_id)?.record.clone();
        let pos = st.queue.iter().position(|id| {
            st.jobs.get(id).is_some_and(|j| {
                j.record.status == JobStatus::Pending && runner_matches(&runner, &j.spec.tags)
            })
        })?;
        let job_id = st.queue.remove(pos)?;
        let now = Instant::now();
        let wall = SystemTime::now();
        let (pipeline_id, project_path) = {
            let j = st.jobs.get_mut(&job_id)?;
            j.record.status = JobStatus::Running;
            j.record.runner_id = Some(runner_id);
            j.record.dispatched_at = Some(now);
            j.record.dispatched_wall = Some(wall);
            (j.record.pipeline_id, j.record.project.clone())
        };
        // Move the pipeline to running.
        let adv = crate::pipeline::advance(&mut st, pipeline_id);
        let j = st.jobs.get(&job_id)?;
        let p = st.pipelines.get(&pipeline_id.0)?;
        let project = st.projects.get(&project_path)?;
        let queued_for = j
            .record
            .queued_at
            .map(|q| now.saturating_duration_since(q).as_secs())
            .unwrap_or(0);
        let dependencies = dependencies_of(&st, job_id);
        let project_variables: Vec<crate::state::Variable> = project
            .variables
            .iter()
            .chain(&p.variables)
            .cloned()
            .collect();
        let payload = payload::build(&PayloadContext {
            job_id,
            job_token: &j.token,
            spec: &j.spec,
            pipeline_variables: &j.pipeline_variables,
            pipeline_id: p.id.0,
            pipeline_iid: p.iid,
            pipeline_created_at: &crate::web::rfc3339(p.created_wall),
            pipeline_source: p.source,
            job_started_at: &crate::web::rfc3339(wall),
            project_id: project.project.id,
            project_path: &project.project.path,
            git_ref: &p.git_ref,
            kind: &p.kind,
            sha: &p.sha,
            commit_message: &p.commit_message,
            external_url: &self.external_url,
            runner_id,
            runner_description: &runner.description,
            runner_tags: &runner.tags,
            time_in_queue_s: queued_for,
            project_variables: &project_variables,
            dependencies,
        });
        let name = j.record.name.clone();
        if let Some(j) = st.jobs.get_mut(&job_id) {
            j.payload = serde_json::to_value(&payload).ok();
        }
        drop(st);
        tracing::info!(job = job_id, %name, runner = runner_id, "job pending -> running (dispatched)");
        self.notify_change(&adv);
        Some(payload)
    }
}

/// The `dependencies[]` of a job about to run: the jobs named in
/// `dependencies:`, else those in `needs:` with `artifacts: true`, else all
/// jobs of earlier stages; only latest attempts that uploaded an archive.
fn dependencies_of(st: &crate::state::State, job_id: u64) -> Vec<payload::Dependency> {
    let Some(job) = st.jobs.get(&job_id) else {
        return Vec::new();
    };
    let pid = job.record.pipeline_id;
    let Some(p) = st.pipelines.get(&pid.0) else {
        return Vec::new();
    };
    let named: Option<Vec<String>> = match (&job.spec.dependencies, &job.spec.needs) {
        (Some(d), _) => Some(d.clone()),
        (None, Some(n)) => Some(
            n.iter()
                .filter(|n| n.artifacts)
                .map(|n| n.job.clone())
                .collect(),
        ),
        (None, None) => None,
    };
    let candidates: Vec<&crate::state::Job> = match named {
        Some(names) => names
            .iter()
            .flat_map(|n| st.latest_jobs_named(pid, n))
            .collect(),
        None => {
            let stage_idx = |s: &str| p.stages.iter().position(|x| x == s);
            let mine = stage_idx(&job.spec.stage);
            p.job_ids
                .iter()
                .filter_map(|id| st.jobs.get(id))
                .filter(|j| !j.record.retried && stage_idx(&j.spec.stage) < mine)
                .collect()
        }
    };
    candidates
        .into_iter()
        .filter_map(|d| {
            let a = d.artifacts.iter().find(|a| a.artifact_type == "archive")?;
            Some(payload::Dependency {
                id: d.record.id,
                name: d.record.name.clone(),
                token: job.token.clone(),
                artifacts_file: payload::ArtifactsFile {
                    filename: a.filename.clone(),
                    size: a.bytes.len() as u64,
                },
            })
        })
        .collect()
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct Output {
    checksum: Option<String>,
    bytesize: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct UpdateBody {
    token: Option<String>,
    state: Option<String>,
    failure_reason: Option<String>,
    checksum: Option<String>,
    output: Option<Output>,
    exit_code: Option<i64>,
}

pub(crate) fn job_headers(
    status: JobStatus,
    interval: u32,
) -> [(header::HeaderName, header::HeaderValue); 2] {
    [
        (
            header::HeaderName::from_static("job-status"),
            hv(status.as_str()),
        ),
        (
            header::HeaderName::from_static("x-gitlab-trace-update-interval"),
            hv(&interval.to_string()),
        ),
    ]
}

/// Like [`job_headers`], but a job being canceled gracefully reports
/// `canceling` (the runner then stops the script and runs `after_script`).
pub(crate) fn job_headers_for(
    status: JobStatus,
    canceling: bool,
    interval: u32,
) -> [(header::HeaderName, header::HeaderValue); 2] {
    let mut h = job_headers(status, interval);
    if canceling && status == JobStatus::Running {
        h[0].1 = hv("canceling");
    }
    h
}

/// `PUT /jobs/:id`: state updates (acknowledgement, keep-alive, final).
pub(crate) async fn update(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return json_message(StatusCode::NOT_FOUND, "404 Not Found");
    };
    let Some(b) = parse_body::<UpdateBody>(&body) else {
        return bad_json();
    };
    let token = token_from(b.token.as_deref(), &headers, "JOB-TOKEN");
    let interval = inner.trace_update_interval;

    let mut st = inner.lock();
    let Some(job) = st.jobs.get_mut(&id) else {
        return json_message(StatusCode::NOT_FOUND, "404 Not Found");
    };
    if !token.is_some_and(|t| crate::web::ct_eq(&t, &job.token)) {
        return json_message(StatusCode::FORBIDDEN, "403 Forbidden");
    }
    if job.record.status != JobStatus::Running {
        // GitLab: 403 "Job is not running", with the real status attached.
        let status = job.record.status;
        return (
            StatusCode::FORBIDDEN,
            job_headers(status, interval),
            "403 Forbidden - Job is not running",
        )
            .into_response();
    }
    let state = b.state.clone().unwrap_or_default();
    let new_status = match state.as_str() {
        "running" | "pending" => None,
        "success" => Some(JobStatus::Success),
        "failed" => Some(JobStatus::Failed),
        _ => {
            return json(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({"error": "state does not have a valid value"}),
            );
        }
    };
    let now = Instant::now();
    let r = &mut job.record;
    r.state_updates.push(state.clone());
    if r.started_at.is_none() {
        r.started_at = Some(now);
    }
    let reported_checksum = b
        .output
        .as_ref()
        .and_then(|o| o.checksum.clone())
        .or(b.checksum.clone())
        .filter(|c| !c.is_empty());
    let reported_size = b.output.as_ref().and_then(|o| o.bytesize);
    if reported_checksum.is_some() {
        r.reported_checksum = reported_checksum.clone();
    }
    if reported_size.is_some() {
        r.reported_bytesize = reported_size;
    }
    let canceling = r.canceling;
    let Some(final_status) = new_status else {
        return (
            StatusCode::OK,
            job_headers_for(JobStatus::Running, canceling, interval),
            "200",
        )
            .into_response();
    };
    // A graceful cancel ends with the runner's `failed`: that is `canceled`.
    let final_status = if canceling && final_status == JobStatus::Failed {
        JobStatus::Canceled
    } else {
        final_status
    };
    r.canceling = false;

    if let Some(sum) = &reported_checksum {
        let size_ok = reported_size.is_none_or(|s| s == r.trace.len() as u64);
        r.checksum_ok = Some(size_ok && *sum == crate::trace::trace_checksum(&r.trace));
    }
    r.status = final_status;
    r.finished_at = Some(now);
    r.finished_wall = Some(SystemTime::now());
    r.exit_code = b.exit_code.and_then(|c| i32::try_from(c).ok());
    if matches!(final_status, JobStatus::Failed | JobStatus::Canceled) {
        r.failure_reason = Some(
            b.failure_reason
                .clone()
                .filter(|f| !f.is_empty())
                .unwrap_or_else(|| "unknown_failure".into()),
        );
    }
    // GitLab (`Status::Reason#force_allow_failure?`): a failure with an exit code listed in
    // `allow_failure:exit_codes` makes the job itself allow_failure (a warning, not a failure).
    if final_status == JobStatus::Failed && job.spec.allow_failure.permits(r.exit_code) {
        r.allow_failure = true;
    }
    let pipeline_id = r.pipeline_id;
    let name = r.name.clone();
    let checksum_ok = r.checksum_ok;
    let failure = r.failure_reason.clone();
    let exit_code = r.exit_code;
    let retry = crate::pipeline::maybe_retry(&mut st, id);
    let adv = crate::pipeline::advance(&mut st, pipeline_id);
    drop(st);
    tracing::info!(
        job = id,
        %name,
        status = %final_status,
        failure_reason = ?failure,
        exit_code = ?exit_code,
        checksum_ok = ?checksum_ok,
        retry = ?retry,
        "job running -> {final_status}"
    );
    inner.notify_change(&adv);
    (StatusCode::OK, job_headers(final_status, interval), "200").into_response()
}
