//! The mock's in-memory world: runners, projects, pipelines, jobs and the
//! request log, plus the public snapshot types the harness inspects.
//!
//! Everything lives behind one `std::sync::Mutex`. Critical sections are short
//! and never await, which is what makes job assignment atomic: a job is taken
//! off the queue and marked running under a single lock acquisition, so two
//! concurrent polls can never both receive it.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use crate::pipeline::model::JobSpec;

/// Upper bound on kept request records, so a long soak cannot eat memory.
const MAX_REQUEST_RECORDS: usize = 100_000;

/// Status of a job, named like GitLab's `Ci::Build` statuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobStatus {
    Created,
    /// `when: delayed`: its stage is open; it becomes pending at `JobRecord::scheduled_at`.
    Scheduled,
    Pending,
    Running,
    Success,
    Failed,
    Canceled,
    Skipped,
}

impl JobStatus {
    /// The lowercase name GitLab uses in `Job-Status` headers.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Created => "created",
            JobStatus::Scheduled => "scheduled",
            JobStatus::Pending => "pending",
            JobStatus::Running => "running",
            JobStatus::Success => "success",
            JobStatus::Failed => "failed",
            JobStatus::Canceled => "canceled",
            JobStatus::Skipped => "skipped",
        }
    }

    /// Whether the job reached a final state.
    pub fn is_complete(self) -> bool {
        matches!(
            self,
            JobStatus::Success | JobStatus::Failed | JobStatus::Canceled | JobStatus::Skipped
        )
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Status of a pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PipelineStatus {
    Created,
    Pending,
    Running,
    Success,
    Failed,
    Canceled,
    Skipped,
}

impl PipelineStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PipelineStatus::Created => "created",
            PipelineStatus::Pending => "pending",
            PipelineStatus::Running => "running",
            PipelineStatus::Success => "success",
            PipelineStatus::Failed => "failed",
            PipelineStatus::Canceled => "canceled",
            PipelineStatus::Skipped => "skipped",
        }
    }

    pub fn is_complete(self) -> bool {
        matches!(
            self,
            PipelineStatus::Success
                | PipelineStatus::Failed
                | PipelineStatus::Canceled
                | PipelineStatus::Skipped
        )
    }
}

impl std::fmt::Display for PipelineStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identifier of a pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PipelineId(pub u64);

impl std::fmt::Display for PipelineId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Snapshot of one job, as the harness sees it.
#[derive(Clone, Debug)]
pub struct JobRecord {
    pub id: u64,
    pub pipeline_id: PipelineId,
    pub project: String,
    pub name: String,
    pub stage: String,
    pub status: JobStatus,
    pub failure_reason: Option<String>,
    pub exit_code: Option<i32>,
    /// The trace exactly as assembled from the runner's PATCHes.
    pub trace: Vec<u8>,
    /// `None` until a final update carrying a checksum arrived; then whether
    /// the runner's CRC-32 and byte size match the stored trace.
    pub checksum_ok: Option<bool>,
    /// `output.bytesize` of the last update that carried one.
    pub reported_bytesize: Option<u64>,
    /// `output.checksum` (or the legacy top-level `checksum`) of the last update.
    pub reported_checksum: Option<String>,
    pub runner_id: Option<u64>,
    pub allow_failure: bool,
    pub timeout_s: u64,
    /// Every `state` the runner PUT, in order (e.g. `running`, `success`).
    pub state_updates: Vec<String>,
    /// Number of accepted (202) trace PATCHes.
    pub trace_patches: u32,
    /// Number of rejected (416) trace PATCHes.
    pub trace_rejections: u32,
    pub created_at: Instant,
    /// `when: delayed`: when the job is due to become pending (its stage opened + `start_in`).
    pub scheduled_at: Option<Instant>,
    pub queued_at: Option<Instant>,
    pub dispatched_at: Option<Instant>,
    /// First sign of life from the runner after dispatch (PUT running or PATCH).
    pub started_at: Option<Instant>,
    pub finished_at: Option<Instant>,
    pub dispatched_wall: Option<SystemTime>,
    pub finished_wall: Option<SystemTime>,
    /// A later attempt of this job exists (`retry:`); the pipeline ignores this one.
    pub retried: bool,
    /// The job this one retries, if it is a retry.
    pub retry_of: Option<u64>,
    /// `cancel_job(_, true)` was called while it ran; the runner is being told `canceling`.
    pub canceling: bool,
}

impl JobRecord {
    /// The trace as (lossy) UTF-8.
    pub fn trace_text(&self) -> String {
        String::from_utf8_lossy(&self.trace).into_owned()
    }

    /// The trace with timestamps, ANSI escapes and section markers removed.
    pub fn normalized_trace(&self) -> String {
        crate::trace::normalize_trace(&self.trace_text())
    }
}

/// Snapshot of a pipeline and its jobs (ordered by id).
#[derive(Clone, Debug)]
pub struct PipelineRecord {
    pub id: PipelineId,
    pub project: String,
    /// As GitLab shows it: the branch, the tag, or `refs/merge-requests/<iid>/head`.
    pub git_ref: String,
    pub kind: RefKind,
    /// GitLab's pipeline source (`push`, `api`, `merge_request_event`).
    pub source: &'static str,
    pub sha: String,
    pub status: PipelineStatus,
    pub stages: Vec<String>,
    pub jobs: Vec<JobRecord>,
    pub created_at: Instant,
    pub finished_at: Option<Instant>,
}

impl PipelineRecord {
    /// The job with this name, if any (the latest attempt if it was retried).
    pub fn job(&self, name: &str) -> Option<&JobRecord> {
        self.jobs.iter().rev().find(|j| j.name == name)
    }

    /// Every attempt of the job with this name, oldest first.
    pub fn attempts(&self, name: &str) -> Vec<&JobRecord> {
        self.jobs.iter().filter(|j| j.name == name).collect()
    }
}

/// A project-level CI/CD variable (Settings → CI/CD → Variables).
///
/// Sent after the YAML variables, so it overrides them (GitLab's
/// precedence). `protected` variables are sent too, since every mock ref is
/// protected. Predefined variables can be overridden, as in GitLab.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Variable {
    pub key: String,
    pub value: String,
    /// The runner replaces the value with `[MASKED]` in the trace.
    pub masked: bool,
    pub protected: bool,
    /// The runner writes the value to a file; the variable holds its path.
    pub file: bool,
    /// No `$VAR` expansion by the runner.
    pub raw: bool,
}

impl std::fmt::Debug for Variable {
    // Masked values are secrets; keep them out of `{:?}` output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Variable")
            .field("key", &self.key)
            .field(
                "value",
                &if self.masked {
                    "[MASKED]"
                } else {
                    self.value.as_str()
                },
            )
            .field("masked", &self.masked)
            .field("protected", &self.protected)
            .field("file", &self.file)
            .field("raw", &self.raw)
            .finish()
    }
}

/// One uploaded artifact (`POST /jobs/:id/artifacts`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArtifactRecord {
    /// `artifact_type` query parameter (`archive` if absent).
    pub artifact_type: String,
    /// `artifact_format` query parameter (`zip` if absent).
    pub format: String,
    /// The filename of the multipart part `file`.
    pub filename: String,
    pub bytes: Vec<u8>,
    /// `expire_in` query parameter, if sent.
    pub expire_in: Option<String>,
}

/// How a runner came into being.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisteredVia {
    /// `POST /runners` with the instance registration token (deprecated flow).
    Legacy,
    /// Created through the library API, like in the UI; token starts with `glrt-`.
    Glrt,
}

/// Snapshot of a runner.
#[derive(Clone, Debug)]
pub struct RunnerRecord {
    pub id: u64,
    pub description: String,
    pub tags: Vec<String>,
    pub run_untagged: bool,
    pub registered_via: RegisteredVia,
    /// Runner managers seen (verify and job requests carry `system_id`).
    pub system_ids: BTreeSet<String>,
    /// `info.features` of the last job request.
    pub features: BTreeMap<String, bool>,
    /// `info.version` of the last request that carried one.
    pub version: Option<String>,
    /// `info.executor` of the last request that carried one.
    pub executor: Option<String>,
    pub poll_count: u64,
    /// When the last job request arrived (before any hold): a runner with
    /// `concurrent = 1` asks again only once its previous job is cleaned up.
    pub last_poll: Option<Instant>,
    /// Job requests that were held (long poll: `last_update` was current).
    pub long_polls: u64,
    pub verify_count: u64,
    /// Set by `DELETE /runners`; a removed runner's token is rejected.
    pub removed: bool,
}

/// One HTTP request as seen by the mock. Tokens are never recorded.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    /// Query string with any `*token*` parameter removed.
    pub query: Option<String>,
    pub status: u16,
    pub elapsed: Duration,
    pub at: SystemTime,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    /// Whether a `RUNNER-TOKEN` header was present (value not kept).
    pub runner_token_header: bool,
    /// Whether a `JOB-TOKEN` header was present (value not kept).
    pub job_token_header: bool,
    /// Whether a `PRIVATE-TOKEN` header was present (value not kept).
    pub private_token_header: bool,
    /// Whether an `Authorization` header was present (git's Basic job-token auth; value not kept).
    pub authorization_header: bool,
    /// Whether the query carried a `*token*` parameter (removed from `query`).
    pub query_token: bool,
    /// Request body size (`Content-Length`), if known.
    pub request_bytes: Option<u64>,
    /// Response body bytes sent, if known (not for streamed bodies such as git's).
    pub response_bytes: Option<u64>,
    /// The fault(s) applied, e.g. `status(503)` or `delay(200ms), trace_416`.
    pub fault: Option<String>,
}

/// A project known to the mock.
#[derive(Clone, Debug)]
pub struct Project {
    pub id: u64,
    pub path: String,
    /// The commit created from the fixture (40 hex).
    pub sha: String,
    /// The merge requests the fixture declares (`.merge-requests/<iid>-<branch>/`), by iid.
    pub merge_requests: Vec<MergeRequest>,
    /// How many files are stored as Git LFS objects (`filter=lfs` in `.gitattributes`).
    pub lfs_objects: usize,
}

/// An open merge request from a fixture's `.merge-requests/<iid>-<source-branch>/`: its files
/// overlaid on `main` as one commit on the source branch, into `main`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MergeRequest {
    /// Instance-wide id (`CI_MERGE_REQUEST_ID`).
    pub id: u64,
    /// Per-project number (`!1`, `CI_MERGE_REQUEST_IID`).
    pub iid: u64,
    /// GitLab's default title from the branch name (`add-feature` → `Add feature`); also the
    /// commit message.
    pub title: String,
    pub source_branch: String,
    pub target_branch: String,
    /// The source branch's commit, at `refs/merge-requests/<iid>/head`.
    pub sha: String,
    /// The target's commit the source branched from (`CI_MERGE_REQUEST_DIFF_BASE_SHA`).
    pub target_sha: String,
    /// The merge commit of the source into the target, at `refs/merge-requests/<iid>/merge`.
    pub merge_sha: String,
}

/// What a pipeline was created for, as GitLab distinguishes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefKind {
    Branch,
    /// A tag; `message` for an annotated one (`CI_COMMIT_TAG_MESSAGE`).
    Tag {
        message: Option<String>,
    },
    /// A merge request pipeline (GitLab's "detached" kind: it runs the source branch's commit,
    /// `ref` is `refs/merge-requests/<iid>/head`, source `merge_request_event`).
    MergeRequest(MergeRequest),
}

/// What `create_runner` needs, like the UI's "New instance runner" form.
#[derive(Clone, Debug)]
pub struct RunnerSpec {
    pub description: String,
    pub tags: Vec<String>,
    pub run_untagged: bool,
}

impl Default for RunnerSpec {
    fn default() -> Self {
        RunnerSpec {
            description: "runnerlab".into(),
            tags: Vec::new(),
            run_untagged: true,
        }
    }
}

/// Result of `create_runner`.
#[derive(Clone)]
pub struct CreatedRunner {
    pub id: u64,
    pub token: String,
}

impl std::fmt::Debug for CreatedRunner {
    // The token is a secret; keep it out of `{:?}` output (test failures, logs).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedRunner")
            .field("id", &self.id)
            .field("token", &"[MASKED]")
            .finish()
    }
}

// ---------------------------------------------------------------------------
// Internal state
// ---------------------------------------------------------------------------

pub(crate) struct Runner {
    pub record: RunnerRecord,
    pub token: String,
}

pub(crate) struct ProjectState {
    pub project: Project,
    pub bare_repo: PathBuf,
    /// Pipeline counter per project (`CI_PIPELINE_IID`).
    pub pipeline_iid: u64,
    /// Project CI/CD variables, in the order they were set.
    pub variables: Vec<Variable>,
    /// Projects whose jobs' tokens may clone this one (it is their submodule): GitLab's job token
    /// allowlist. A project's own jobs always may.
    pub readable_by: Vec<String>,
    /// Where its Git LFS objects are (`<oid>` files).
    pub lfs_store: PathBuf,
    /// Messages of annotated tags made through the API, by tag name.
    pub tag_messages: BTreeMap<String, String>,
}

pub(crate) struct Job {
    pub record: JobRecord,
    pub token: String,
    pub spec: JobSpec,
    /// Pipeline-level `variables:`, kept per job so the payload can be built
    /// without looking the pipeline up again.
    pub pipeline_variables: Vec<crate::pipeline::model::Variable>,
    /// Uploaded artifacts, one per type (a re-upload replaces).
    pub artifacts: Vec<ArtifactRecord>,
    /// The payload the runner got for this job (`POST /jobs/request` → 201), once dispatched.
    /// Kept here rather than in `JobRecord`: it holds the job token and masked values.
    pub payload: Option<serde_json::Value>,
}

pub(crate) struct Pipeline {
    pub id: PipelineId,
    pub iid: u64,
    pub project: String,
    /// The branch, the tag, or `refs/merge-requests/<iid>/head`.
    pub git_ref: String,
    pub kind: RefKind,
    /// The commit's message (`CI_COMMIT_MESSAGE`).
    pub commit_message: String,
    pub sha: String,
    pub status: PipelineStatus,
    pub stages: Vec<String>,
    pub job_ids: Vec<u64>,
    pub created_at: Instant,
    pub created_wall: SystemTime,
    pub finished_at: Option<Instant>,
    /// Pipeline variables given at creation (API or "Run pipeline" form); they win over project ones.
    pub variables: Vec<Variable>,
    /// GitLab's pipeline source: `push` (library), `api` (REST API), `merge_request_event`.
    pub source: &'static str,
}

pub(crate) struct State {
    pub next_runner_id: u64,
    pub next_project_id: u64,
    pub next_pipeline_id: u64,
    pub next_job_id: u64,
    pub next_merge_request_id: u64,
    pub runners: BTreeMap<u64, Runner>,
    pub runner_by_token: HashMap<String, u64>,
    pub projects: BTreeMap<String, ProjectState>,
    pub pipelines: BTreeMap<u64, Pipeline>,
    pub jobs: BTreeMap<u64, Job>,
    /// Ids of pending jobs in queue order.
    pub queue: VecDeque<u64>,
    /// Scheduled (`when: delayed`) jobs and when each is due.
    pub scheduled: BTreeMap<u64, Instant>,
    pub requests: VecDeque<RequestRecord>,
}

impl State {
    pub fn new() -> Self {
        State {
            next_runner_id: 1,
            next_project_id: 1,
            next_pipeline_id: 1,
            // GitLab job ids are large and distinct from pipeline ids; starting
            // elsewhere catches code that mixes the two up.
            next_job_id: 1001,
            // Instance-wide merge request ids differ from iids, so a mix-up shows.
            next_merge_request_id: 501,
            runners: BTreeMap::new(),
            runner_by_token: HashMap::new(),
            projects: BTreeMap::new(),
            pipelines: BTreeMap::new(),
            jobs: BTreeMap::new(),
            queue: VecDeque::new(),
            scheduled: BTreeMap::new(),
            requests: VecDeque::new(),
        }
    }

    pub fn runner_by_token(&self, token: &str) -> Option<&Runner> {
        let id = self.runner_by_token.get(token)?;
        self.runners.get(id).filter(|r| !r.record.removed)
    }

    pub fn runner_by_token_mut(&mut self, token: &str) -> Option<&mut Runner> {
        let id = *self.runner_by_token.get(token)?;
        self.runners.get_mut(&id).filter(|r| !r.record.removed)
    }

    pub fn push_request(&mut self, rec: RequestRecord) {
        if self.requests.len() >= MAX_REQUEST_RECORDS {
            self.requests.pop_front();
        }
        self.requests.push_back(rec);
    }

    /// Create a job in `created` state and return its id (the caller adds it
    /// to the pipeline's `job_ids`).
    pub fn insert_job(
        &mut self,
        pipeline_id: PipelineId,
        project: &str,
        spec: JobSpec,
        pipeline_variables: Vec<crate::pipeline::model::Variable>,
        retry_of: Option<u64>,
    ) -> u64 {
        let id = self.next_job_id;
        self.next_job_id += 1;
        let record = JobRecord {
            id,
            pipeline_id,
            project: project.to_string(),
            name: spec.name.clone(),
            stage: spec.stage.clone(),
            status: JobStatus::Created,
            failure_reason: None,
            exit_code: None,
            trace: Vec::new(),
            checksum_ok: None,
            reported_bytesize: None,
            reported_checksum: None,
            runner_id: None,
            allow_failure: spec.allow_failure.allowed,
            timeout_s: spec.timeout_s,
            state_updates: Vec::new(),
            trace_patches: 0,
            trace_rejections: 0,
            created_at: Instant::now(),
            scheduled_at: None,
            queued_at: None,
            dispatched_at: None,
            started_at: None,
            finished_at: None,
            dispatched_wall: None,
            finished_wall: None,
            retried: false,
            retry_of,
            canceling: false,
        };
        self.jobs.insert(
            id,
            Job {
                record,
                token: random_token("glcbt-", 24),
                spec,
                pipeline_variables,
                artifacts: Vec::new(),
                payload: None,
            },
        );
        id
    }

    /// The latest attempt of each job named `name` (or, for `parallel:`
    /// jobs, with that base name) in a pipeline.
    pub fn latest_jobs_named(&self, pid: PipelineId, name: &str) -> Vec<&Job> {
        let Some(p) = self.pipelines.get(&pid.0) else {
            return Vec::new();
        };
        p.job_ids
            .iter()
            .filter_map(|id| self.jobs.get(id))
            .filter(|j| !j.record.retried && (j.spec.name == name || j.spec.base_name == name))
            .collect()
    }

    pub fn pipeline_record(&self, p: &Pipeline) -> PipelineRecord {
        PipelineRecord {
            id: p.id,
            project: p.project.clone(),
            git_ref: p.git_ref.clone(),
            kind: p.kind.clone(),
            source: p.source,
            sha: p.sha.clone(),
            status: p.status,
            stages: p.stages.clone(),
            jobs: p
                .job_ids
                .iter()
                .filter_map(|id| self.jobs.get(id))
                .map(|j| j.record.clone())
                .collect(),
            created_at: p.created_at,
            finished_at: p.finished_at,
        }
    }
}

/// Whether a runner with these settings may take a job with `job_tags`
/// (GitLab: job tags must be a subset of the runner's; untagged jobs need
/// `run_untagged`).
pub(crate) fn runner_matches(runner: &RunnerRecord, job_tags: &[String]) -> bool {
    if job_tags.is_empty() {
        return runner.run_untagged;
    }
    job_tags.iter().all(|t| runner.tags.contains(t))
}

/// A random token of alphanumerics with the given prefix.
pub(crate) fn random_token(prefix: &str, len: usize) -> String {
    use rand::Rng;
    use rand::distr::Alphanumeric;
    let body: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect();
    format!("{prefix}{body}")
}
