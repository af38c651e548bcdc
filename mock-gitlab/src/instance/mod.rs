//! One mock instance: the state shared by every handle and handler ([`Inner`]) and the
//! [`MockGitlab`] handle's operations (snapshots, faults and the request log here; projects,
//! runners and variables in `projects`; pipelines and jobs in `pipelines`). Starting and stopping
//! the server is [`crate::server`]'s.

mod pipelines;
mod projects;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::fault_plan::{Fault, FaultPlan, Faults};
use crate::junit;
use crate::pipeline;
use crate::reqlog::RequestLog;
use crate::state::{
    ArtifactRecord, JobRecord, PipelineId, PipelineRecord, Project, RegisteredVia, RequestRecord,
    Runner, RunnerRecord, State, random_token,
};

/// Shared server state behind every handle and handler.
pub(crate) struct Inner {
    pub(crate) external_url: String,
    pub(crate) local_url: String,
    pub(crate) registration_token: String,
    pub(crate) long_poll: Duration,
    pub(crate) trace_update_interval: u32,
    pub(crate) data_dir: PathBuf,
    pub(crate) max_artifact_size: u64,
    pub(crate) admin_token: String,
    pub(crate) fixtures_root: Option<PathBuf>,
    state: Mutex<State>,
    /// Queue version; bumped whenever jobs become pending.
    pub(crate) queue_tx: watch::Sender<u64>,
    /// Bumped on every job or pipeline state change (for `wait_pipeline`).
    pub(crate) changes_tx: watch::Sender<u64>,
    pub(crate) shutdown_tx: watch::Sender<bool>,
    /// Per-instance prefix of `X-GitLab-Last-Update` values.
    pub(crate) nonce: String,
    /// The server task, until `shutdown` takes it.
    pub(crate) server: Mutex<Option<JoinHandle<()>>>,
    /// The fault plan in force and its counters (its own lock: never held with `state`'s).
    pub(crate) faults: Mutex<Faults>,
    /// The JSONL request log, if one is open.
    pub(crate) request_log: Mutex<Option<RequestLog>>,
}

impl Inner {
    /// The state of a new instance configured by `cfg`, reached at `local_url` from this host
    /// and at `external_url` by runners: `cfg`'s faults planned and its request log open.
    pub(crate) fn new(
        cfg: &Config,
        local_url: String,
        external_url: String,
    ) -> anyhow::Result<Inner> {
        let (queue_tx, _) = watch::channel(0u64);
        let (changes_tx, _) = watch::channel(0u64);
        let (shutdown_tx, _) = watch::channel(false);
        let inner = Inner {
            external_url,
            local_url,
            registration_token: cfg.registration_token.clone(),
            long_poll: cfg.long_poll,
            trace_update_interval: cfg.trace_update_interval,
            data_dir: cfg.data_dir.clone(),
            max_artifact_size: cfg.max_artifact_size,
            admin_token: cfg.admin_token.clone(),
            fixtures_root: cfg.fixtures_root.clone(),
            state: Mutex::new(State::new()),
            queue_tx,
            changes_tx,
            shutdown_tx,
            nonce: format!("{}-", random_token("", 8).to_lowercase()),
            server: Mutex::new(None),
            faults: Mutex::new(Faults::default()),
            request_log: Mutex::new(None),
        };
        inner.set_faults(cfg.faults.clone());
        if let Some(p) = &cfg.request_log {
            let log =
                RequestLog::open(p).with_context(|| format!("open request log {}", p.display()))?;
            *inner.request_log.lock().unwrap_or_else(|e| e.into_inner()) = Some(log);
        }
        Ok(inner)
    }

    /// Lock the state; a poisoned lock (a panicked holder) is recovered,
    /// since every critical section leaves the state consistent.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Append a request to the JSONL log, if one is open (formatting only;
    /// the write happens on the log's thread).
    pub(crate) fn log_request(&self, rec: &RequestRecord) {
        if let Some(log) = self
            .request_log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            log.append(rec);
        }
    }

    /// Wake whoever waits on state changes after `advance`.
    pub(crate) fn notify_change(&self, adv: &pipeline::Advance) {
        for id in &adv.skipped {
            tracing::info!(job = id, "job created -> skipped");
        }
        for id in &adv.scheduled {
            tracing::info!(job = id, "job created -> scheduled");
        }
        for id in &adv.enqueued {
            tracing::info!(job = id, "job created -> pending");
        }
        if let (Some(p), Some(s)) = (adv.pipeline, adv.pipeline_status) {
            tracing::info!(pipeline = %p, status = %s, "pipeline status changed");
        }
        if !adv.enqueued.is_empty() {
            self.queue_tx.send_modify(|v| *v += 1);
        }
        self.changes_tx.send_modify(|v| *v += 1);
    }
}

impl Inner {
    /// Wake runners for a job made pending outside `advance` (retry, play).
    fn notify_enqueued(&self, pid: PipelineId, job: u64, adv: &pipeline::Advance) {
        tracing::info!(pipeline = %pid, job, "job pending again");
        self.queue_tx.send_modify(|v| *v += 1);
        self.notify_change(adv);
    }

    fn set_faults(&self, plan: FaultPlan) {
        for f in &plan.faults {
            tracing::info!(endpoint = %f.endpoint, action = %f.action, times = ?f.times, probability = ?f.probability, "fault planned");
        }
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set(plan);
    }

    /// The queue version as sent in `X-GitLab-Last-Update`. The per-instance
    /// nonce keeps a runner's value from a previous mock from matching.
    pub(crate) fn last_update_value(&self) -> String {
        format!("{}{}", self.nonce, *self.queue_tx.borrow())
    }

    /// Insert a runner with a fresh token; returns (id, token).
    ///
    /// Like GitLab (`Ci::Runner#prefix_for_new_and_legacy_runner`), only
    /// runners created in the UI/API get the `glrt-` prefix; runners
    /// registered with the legacy registration token get a bare token. The
    /// real runner relies on this: it unregisters `glrt-` tokens through
    /// `DELETE /runners/managers` and others through `DELETE /runners`.
    pub(crate) fn add_runner(&self, mut record: RunnerRecord) -> (u64, String) {
        let mut st = self.lock();
        let id = st.next_runner_id;
        st.next_runner_id += 1;
        record.id = id;
        let prefix = match record.registered_via {
            RegisteredVia::Glrt => "glrt-",
            RegisteredVia::Legacy => "",
        };
        let token = random_token(prefix, 20);
        st.runner_by_token.insert(token.clone(), id);
        st.runners.insert(
            id,
            Runner {
                record,
                token: token.clone(),
            },
        );
        (id, token)
    }
}

/// A running mock GitLab. Cheap to clone; all clones share one server.
#[derive(Clone)]
pub struct MockGitlab {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for MockGitlab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockGitlab")
            .field("local_url", &self.inner.local_url)
            .field("external_url", &self.inner.external_url)
            .finish_non_exhaustive()
    }
}

impl MockGitlab {
    /// `http://127.0.0.1:PORT` (reachable from this host).
    pub fn local_url(&self) -> String {
        self.inner.local_url.clone()
    }

    /// The URL the runner is given (`http://{external_host}:PORT`).
    pub fn external_url(&self) -> String {
        self.inner.external_url.clone()
    }

    /// The legacy instance registration token.
    pub fn registration_token(&self) -> String {
        self.inner.registration_token.clone()
    }

    /// The REST API administrator's `PRIVATE-TOKEN` (`Config::admin_token`).
    pub fn admin_token(&self) -> String {
        self.inner.admin_token.clone()
    }

    pub(crate) fn from_inner(inner: Arc<Inner>) -> MockGitlab {
        MockGitlab { inner }
    }

    /// Snapshot of a pipeline.
    ///
    /// # Panics
    /// If `id` was not returned by this mock's `create_pipeline`; use
    /// [`MockGitlab::try_pipeline`] for a non-panicking variant.
    pub fn pipeline(&self, id: PipelineId) -> PipelineRecord {
        self.try_pipeline(id)
            .unwrap_or_else(|| panic!("pipeline {id} does not exist in this mock"))
    }

    /// Snapshot of a pipeline, `None` if unknown.
    pub fn try_pipeline(&self, id: PipelineId) -> Option<PipelineRecord> {
        let st = self.inner.lock();
        st.pipelines.get(&id.0).map(|p| st.pipeline_record(p))
    }

    /// Snapshot of a job.
    pub fn job(&self, id: u64) -> Option<JobRecord> {
        self.inner.lock().jobs.get(&id).map(|j| j.record.clone())
    }

    /// Snapshots of all jobs, by id.
    pub fn jobs(&self) -> Vec<JobRecord> {
        self.inner
            .lock()
            .jobs
            .values()
            .map(|j| j.record.clone())
            .collect()
    }

    /// Snapshots of all runners (including removed ones), by id.
    pub fn runners(&self) -> Vec<RunnerRecord> {
        self.inner
            .lock()
            .runners
            .values()
            .map(|r| r.record.clone())
            .collect()
    }

    /// Every request seen so far, oldest first (tokens never included).
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.inner.lock().requests.iter().cloned().collect()
    }

    /// A project by path.
    pub fn project(&self, path: &str) -> Option<Project> {
        self.inner
            .lock()
            .projects
            .get(path)
            .map(|p| p.project.clone())
    }

    /// The current `X-GitLab-Last-Update` value.
    pub fn queue_version(&self) -> String {
        self.inner.last_update_value()
    }

    /// Where bare repositories and work trees are kept.
    pub fn data_dir(&self) -> PathBuf {
        self.inner.data_dir.clone()
    }

    /// The JSON payload the runner received for this job (image, services, variables, steps,
    /// artifacts, cache, dependencies…), `None` until it was dispatched or if it does not exist.
    /// It holds the job token and masked values: keep it out of logs.
    pub fn job_payload(&self, job_id: u64) -> Option<serde_json::Value> {
        self.inner
            .lock()
            .jobs
            .get(&job_id)
            .and_then(|j| j.payload.clone())
    }

    /// The pipeline's test report summary (GitLab's `test_report_summary`): the `junit`
    /// reports of its latest job attempts, one suite per job name. `None` if the pipeline does
    /// not exist.
    pub fn test_report_summary(&self, id: PipelineId) -> Option<junit::TestReportSummary> {
        // Copy the reports out, parse them without holding the state.
        let reports: Vec<(String, u64, Vec<u8>, String)> = {
            let st = self.inner.lock();
            let p = st.pipelines.get(&id.0)?;
            p.job_ids
                .iter()
                .filter_map(|jid| st.jobs.get(jid))
                .filter(|j| !j.record.retried)
                .flat_map(|j| {
                    j.artifacts
                        .iter()
                        .filter(|a| a.artifact_type == "junit")
                        .map(|a| {
                            (
                                j.record.name.clone(),
                                j.record.id,
                                a.bytes.clone(),
                                a.format.clone(),
                            )
                        })
                })
                .collect()
        };
        let mut summary = junit::TestReportSummary::default();
        for (name, job_id, bytes, format) in reports {
            junit::add_report(&mut summary, &name, job_id, &bytes, &format);
        }
        Some(summary)
    }

    /// Artifacts uploaded by a job (one per `artifact_type`), empty if none
    /// or if the job does not exist.
    pub fn artifacts(&self, job_id: u64) -> Vec<ArtifactRecord> {
        self.inner
            .lock()
            .jobs
            .get(&job_id)
            .map(|j| j.artifacts.clone())
            .unwrap_or_default()
    }

    /// Replace the fault plan (counters start over). An empty plan turns faults off.
    pub fn set_faults(&self, plan: FaultPlan) {
        self.inner.set_faults(plan);
    }

    /// Add a fault after those in force.
    pub fn add_fault(&self, fault: Fault) {
        tracing::info!(endpoint = %fault.endpoint, action = %fault.action, times = ?fault.times, "fault added");
        self.inner
            .faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(fault);
    }

    /// Remove every fault.
    pub fn clear_faults(&self) {
        self.inner.set_faults(FaultPlan::default());
    }

    /// The fault plan in force.
    pub fn faults(&self) -> FaultPlan {
        self.inner
            .faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .plan()
    }

    /// Start appending one JSON line per request to `path` (created if
    /// missing, appended to if present), or stop with `None`. A previous log
    /// is closed after its queued lines are written.
    pub fn set_request_log(&self, path: Option<&Path>) -> anyhow::Result<()> {
        let new = match path {
            Some(p) => Some(
                RequestLog::open(p).with_context(|| format!("open request log {}", p.display()))?,
            ),
            None => None,
        };
        let old = std::mem::replace(
            &mut *self
                .inner
                .request_log
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
            new,
        );
        if let Some(old) = old {
            old.close();
        }
        Ok(())
    }

    /// Path of the open request log.
    pub fn request_log_path(&self) -> Option<PathBuf> {
        self.inner
            .request_log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|l| l.path().to_path_buf())
    }

    /// Wait until every request recorded so far is written to the request log.
    pub async fn sync_request_log(&self) {
        let rx = self
            .inner
            .request_log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|l| l.sync());
        if let Some(rx) = rx {
            let _ = rx.await;
        }
    }
}
