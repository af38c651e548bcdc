//! `mock-gitlab`: a GitLab coordinator mock faithful enough that the real
//! `gitlab-runner` cannot tell it from GitLab.
//!
//! It serves the runner API under `/api/v4` (registration, verify, job
//! request with long polling, job updates, incremental traces), serves git
//! over smart HTTP through the real `git http-backend`, and turns
//! `.gitlab-ci.yml` files of fixture projects into stage-ordered pipelines.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use mock_gitlab::{Config, MockGitlab, RunnerSpec};
//! let mock = MockGitlab::start(Config::default()).await?;
//! let runner = mock.create_runner(RunnerSpec::default());
//! mock.add_project("group/hello", std::path::Path::new("fixtures/projects/hello"))?;
//! let id = mock.create_pipeline("group/hello", "main")?;
//! // ... run `gitlab-runner run-single --url {mock.external_url()} --token {runner.token}` ...
//! let done = mock.wait_pipeline(id, std::time::Duration::from_secs(120)).await?;
//! # Ok(()) }
//! ```

pub mod api;
pub mod faults;
pub mod git;
pub mod junit;
pub mod payload;
pub mod pipeline;
mod reqlog;
pub mod state;
pub mod trace;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, anyhow};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use faults::{Action, Fault, FaultPlan, FaultPlanError};
pub use pipeline::lint::{Diagnostic, LintError};
pub use state::{
    ArtifactRecord, CreatedRunner, JobRecord, JobStatus, MergeRequest, PipelineId, PipelineRecord,
    PipelineStatus, Project, RefKind, RegisteredVia, RequestRecord, RunnerRecord, RunnerSpec,
    Variable,
};
pub use trace::{normalize_trace, trace_checksum};

use state::{Pipeline, ProjectState, RunnerRecord as RR, State, random_token};

/// Configuration of a mock instance.
#[derive(Clone)]
pub struct Config {
    /// Where to listen. Default `127.0.0.1:0` (a free port).
    pub bind: SocketAddr,
    /// Host the runner uses to reach the mock (e.g. `10.0.2.2` from a
    /// rootless container); the external URL is `http://{host}:{port}`.
    /// Default `127.0.0.1`.
    pub external_host: Option<String>,
    /// The instance's legacy registration token.
    pub registration_token: String,
    /// How long a job request with an up-to-date `last_update` is held.
    pub long_poll: Duration,
    /// `X-GitLab-Trace-Update-Interval` in seconds.
    pub trace_update_interval: u32,
    /// Bare repositories and fixture work trees go here.
    pub data_dir: PathBuf,
    /// Artifact uploads above this many bytes are refused with 413
    /// (GitLab's default maximum artifacts size is 100 MiB).
    pub max_artifact_size: u64,
    /// Faults applied from the start (see [`MockGitlab::set_faults`]).
    pub faults: FaultPlan,
    /// Append one JSON line per request to this file (see
    /// [`MockGitlab::set_request_log`]).
    pub request_log: Option<PathBuf>,
    /// `PRIVATE-TOKEN` of the REST API's administrator (see [`api::rest`]).
    pub admin_token: String,
    /// The only directory `POST /api/v4/projects` may import fixtures from
    /// (`import_fixture` is relative to it); `None` refuses imports, so the
    /// API can never read arbitrary paths.
    pub fixtures_root: Option<PathBuf>,
}

impl std::fmt::Debug for Config {
    // The registration token is a secret: keep it out of logs and panics.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("bind", &self.bind)
            .field("external_host", &self.external_host)
            .field("registration_token", &"[MASKED]")
            .field("long_poll", &self.long_poll)
            .field("trace_update_interval", &self.trace_update_interval)
            .field("data_dir", &self.data_dir)
            .field("max_artifact_size", &self.max_artifact_size)
            .field("faults", &self.faults)
            .field("request_log", &self.request_log)
            .field("admin_token", &"[MASKED]")
            .field("fixtures_root", &self.fixtures_root)
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            external_host: None,
            registration_token: random_token("GR1348941", 20),
            long_poll: Duration::from_secs(20),
            trace_update_interval: 3,
            data_dir: std::env::temp_dir().join(format!(
                "mock-gitlab-{}-{}",
                std::process::id(),
                random_token("", 8)
            )),
            max_artifact_size: 100 * 1024 * 1024,
            faults: FaultPlan::default(),
            request_log: None,
            admin_token: random_token("glpat-", 20),
            fixtures_root: None,
        }
    }
}

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
    server: Mutex<Option<JoinHandle<()>>>,
    /// The fault plan in force and its counters (its own lock: never held with `state`'s).
    pub(crate) faults: Mutex<faults::Faults>,
    request_log: Mutex<Option<reqlog::RequestLog>>,
}

impl Inner {
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

/// The timer of `when: delayed` jobs: after every state change (a job may have become
/// scheduled) and when the earliest scheduled job is due, due jobs become pending. Holds the
/// state only weakly and ends with the mock.
fn spawn_scheduler(inner: &Arc<Inner>) {
    let weak = Arc::downgrade(inner);
    let mut changes = inner.changes_tx.subscribe();
    let mut stop = inner.shutdown_tx.subscribe();
    tokio::spawn(async move {
        loop {
            let next_due = {
                let Some(inner) = weak.upgrade() else { return };
                let mut st = inner.lock();
                let p = pipeline::promote_due(&mut st, Instant::now());
                drop(st);
                if !p.jobs.is_empty() {
                    inner.queue_tx.send_modify(|v| *v += 1);
                }
                for adv in &p.advances {
                    inner.notify_change(adv);
                }
                p.next_due
            };
            let due = async {
                match next_due {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = changes.changed() => if r.is_err() { return },
                _ = due => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    });
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
}

/// Format a wall-clock time like GitLab does in `CI_*_AT` variables.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::from(t)
        .format(&fmt)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

/// What a pipeline is created for, as `rules_variables` needs it.
struct RulesRef<'a> {
    project: &'a str,
    project_id: u64,
    project_url: &'a str,
    git_ref: &'a str,
    kind: &'a RefKind,
    sha: &'a str,
    commit_message: &'a str,
    source: &'a str,
}

/// The predefined variables `rules:if` and `workflow:rules` can see at
/// pipeline creation (the job-level ones do not exist yet then).
fn rules_variables(r: &RulesRef<'_>) -> Vec<(String, String)> {
    let RulesRef {
        project,
        project_id,
        sha,
        source,
        ..
    } = *r;
    let (namespace, name) = project.rsplit_once('/').unwrap_or(("", project));
    let by_ref = payload::ref_variables(r.kind, r.git_ref, project_id, project, r.project_url);
    by_ref
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .chain(
            [
                ("CI", "true".to_string()),
                ("GITLAB_CI", "true".to_string()),
                ("CI_COMMIT_REF_PROTECTED", "true".to_string()),
                ("CI_COMMIT_SHA", sha.to_string()),
                ("CI_COMMIT_SHORT_SHA", sha.chars().take(8).collect()),
                ("CI_COMMIT_BEFORE_SHA", "0".repeat(40)),
                ("CI_COMMIT_MESSAGE", r.commit_message.to_string()),
                (
                    "CI_COMMIT_TITLE",
                    r.commit_message.lines().next().unwrap_or("").to_string(),
                ),
                ("CI_DEFAULT_BRANCH", "main".to_string()),
                ("CI_PIPELINE_SOURCE", source.to_string()),
                ("CI_PROJECT_ID", project_id.to_string()),
                ("CI_PROJECT_PATH", project.to_string()),
                ("CI_PROJECT_NAME", name.to_string()),
                ("CI_PROJECT_NAMESPACE", namespace.to_string()),
                ("CI_SERVER_NAME", "GitLab".to_string()),
                ("CI_SERVER_VERSION", payload::SERVER_VERSION.to_string()),
                ("GITLAB_USER_LOGIN", "root".to_string()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v)),
        )
        .collect()
}

/// The message of a fixture commit, known without asking git: `main`'s is
/// [`git::COMMIT_MESSAGE`], a merge request's head its title, its merge ref GitLab's merge
/// message.
fn commit_message_of(sha: &str, merge_requests: &[MergeRequest]) -> String {
    for mr in merge_requests {
        if mr.sha == sha {
            return mr.title.clone();
        }
        if mr.merge_sha == sha {
            return git::merge_message(&mr.source_branch, &mr.target_branch);
        }
    }
    git::COMMIT_MESSAGE.to_string()
}

/// What a pipeline is asked for.
pub(crate) enum Target<'a> {
    /// A branch or a tag name (or `refs/heads/…`, `refs/tags/…`).
    Ref(&'a str),
    /// A merge request by iid.
    MergeRequest(u64),
}

/// A running mock GitLab. Cheap to clone; all clones share one server.
#[derive(Clone)]
pub struct MockGitlab {
    inner: Arc<Inner>,
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
    /// Bind, start serving, and return a handle.
    pub async fn start(cfg: Config) -> anyhow::Result<MockGitlab> {
        std::fs::create_dir_all(&cfg.data_dir)
            .with_context(|| format!("create data dir {}", cfg.data_dir.display()))?;
        let listener = tokio::net::TcpListener::bind(cfg.bind)
            .await
            .with_context(|| format!("bind {}", cfg.bind))?;
        let addr = listener.local_addr()?;
        let local_ip = if addr.ip().is_unspecified() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            addr.ip()
        };
        let local_url = match local_ip {
            IpAddr::V6(ip) => format!("http://[{ip}]:{}", addr.port()),
            IpAddr::V4(ip) => format!("http://{ip}:{}", addr.port()),
        };
        let external_host = cfg
            .external_host
            .clone()
            .unwrap_or_else(|| "127.0.0.1".into());
        let external_url = format!("http://{external_host}:{}", addr.port());
        let (queue_tx, _) = watch::channel(0u64);
        let (changes_tx, _) = watch::channel(0u64);
        let (shutdown_tx, _) = watch::channel(false);
        let inner = Arc::new(Inner {
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
            faults: Mutex::new(faults::Faults::default()),
            request_log: Mutex::new(None),
        });
        inner.set_faults(cfg.faults.clone());
        if let Some(p) = &cfg.request_log {
            let log = reqlog::RequestLog::open(p)
                .with_context(|| format!("open request log {}", p.display()))?;
            *inner.request_log.lock().unwrap_or_else(|e| e.into_inner()) = Some(log);
        }
        let app = api::router(inner.clone());
        let mut stop = inner.shutdown_tx.subscribe();
        let handle = tokio::spawn(async move {
            let res = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
            if let Err(e) = res {
                tracing::error!(error = %e, "mock-gitlab server failed");
            }
        });
        *inner.server.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        spawn_scheduler(&inner);
        tracing::info!(url = %inner.local_url, external = %inner.external_url, "mock-gitlab listening");
        Ok(MockGitlab { inner })
    }

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

    /// Create a runner as in the UI; returns its id and `glrt-` token.
    pub fn create_runner(&self, spec: RunnerSpec) -> CreatedRunner {
        let run_untagged = spec.run_untagged || spec.tags.is_empty();
        let (id, token) = self.inner.add_runner(RR {
            id: 0,
            description: spec.description,
            tags: spec.tags,
            run_untagged,
            registered_via: RegisteredVia::Glrt,
            system_ids: Default::default(),
            features: Default::default(),
            version: None,
            executor: None,
            poll_count: 0,
            last_poll: None,
            long_polls: 0,
            verify_count: 0,
            removed: false,
        });
        tracing::info!(runner = id, "runner created");
        CreatedRunner { id, token }
    }

    /// Import a fixture directory as project `path` (`group/name`): one
    /// commit on `main` with a fixed author and date, so the SHA is stable.
    ///
    /// Each `.submodules/<name>/` of the fixture becomes project `group/<project>-<name>` and a
    /// submodule at `<name>` with the relative URL `../<project>-<name>.git`; jobs of this project
    /// may clone it with their job token.
    pub fn add_project(&self, path: &str, fixture_dir: &Path) -> anyhow::Result<Project> {
        git::validate_project_path(path)?;
        if self.inner.lock().projects.contains_key(path) {
            return Err(anyhow!("project {path} already exists"));
        }
        let mut submodules = Vec::new();
        let subs_dir = fixture_dir.join(git::SUBMODULES_DIR);
        if subs_dir.is_dir() {
            let mut names: Vec<String> = std::fs::read_dir(&subs_dir)?
                .filter_map(|e| e.ok())
                .filter(|e| e.path().is_dir())
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .collect();
            names.sort();
            let (group, name) = path.rsplit_once('/').unwrap_or(("", path));
            for sub in names {
                let sub_project = format!("{name}-{sub}");
                let sub_path = format!("{group}/{sub_project}");
                let p = self.add_project(&sub_path, &subs_dir.join(&sub))?;
                if let Some(ps) = self.inner.lock().projects.get_mut(&sub_path) {
                    ps.readable_by.push(path.to_string());
                }
                submodules.push(git::Gitlink {
                    path: sub,
                    url: format!("../{sub_project}.git"),
                    sha: p.sha,
                });
            }
        }
        let repo = git::create_bare_repo(&self.inner.data_dir, path, fixture_dir, &submodules)?;
        let mut st = self.inner.lock();
        let id = st.next_project_id;
        st.next_project_id += 1;
        let mut merge_requests = repo.merge_requests;
        for mr in &mut merge_requests {
            mr.id = st.next_merge_request_id;
            st.next_merge_request_id += 1;
        }
        let project = Project {
            id,
            path: path.to_string(),
            sha: repo.sha,
            merge_requests,
            lfs_objects: repo.lfs_objects,
        };
        st.projects.insert(
            path.to_string(),
            ProjectState {
                project: project.clone(),
                bare_repo: repo.bare,
                pipeline_iid: 0,
                variables: Vec::new(),
                readable_by: Vec::new(),
                lfs_store: git::lfs_store(&self.inner.data_dir, path),
                tag_messages: Default::default(),
            },
        );
        tracing::info!(project = %path, id, sha = %project.sha, submodules = submodules.len(),
            merge_requests = project.merge_requests.len(), lfs_objects = project.lfs_objects, "project added");
        Ok(project)
    }

    /// Create a pipeline for `git_ref` (a branch, else a tag; `refs/heads/…` and `refs/tags/…`
    /// say which) from the project's `.gitlab-ci.yml` at that ref; its first stage's jobs
    /// become pending at once.
    pub fn create_pipeline(&self, project: &str, git_ref: &str) -> Result<PipelineId, LintError> {
        self.create_pipeline_with(project, git_ref, &[])
    }

    /// Create a merge request pipeline (GitLab's "detached" kind, source
    /// `merge_request_event`) for merge request `iid` of the project (declared by its fixture's
    /// `.merge-requests/<iid>-<branch>/`): it runs the source branch's commit, `ref` is
    /// `refs/merge-requests/<iid>/head`, and jobs see `CI_MERGE_REQUEST_*`. As in GitLab, jobs
    /// without `rules:` are not part of it.
    pub fn create_merge_request_pipeline(
        &self,
        project: &str,
        iid: u64,
    ) -> Result<PipelineId, LintError> {
        self.create_pipeline_for(
            project,
            Target::MergeRequest(iid),
            &[],
            "merge_request_event",
        )
    }

    /// A project's merge requests (from its fixture), by iid.
    pub fn merge_requests(&self, project: &str) -> Vec<MergeRequest> {
        self.project(project)
            .map(|p| p.merge_requests)
            .unwrap_or_default()
    }

    /// Create tag `name` at `git_ref` (a branch, a tag or a 40-hex commit), annotated when
    /// `message` is given; returns the commit. Pipelines for it: `create_pipeline(project, name)`.
    pub fn create_tag(
        &self,
        project: &str,
        name: &str,
        git_ref: &str,
        message: Option<&str>,
    ) -> anyhow::Result<String> {
        let bare = self
            .inner
            .lock()
            .projects
            .get(project)
            .map(|p| p.bare_repo.clone())
            .ok_or_else(|| anyhow!("project {project} does not exist"))?;
        let home = &self.inner.data_dir;
        let sha = if git_ref.len() == 40 && git_ref.chars().all(|c| c.is_ascii_hexdigit()) {
            git::resolve_commit(home, &bare, git_ref)?
        } else {
            let (_, _, sha) = git::resolve_named(home, &bare, git_ref)?;
            sha
        };
        git::create_tag(home, &bare, name, &sha, message)?;
        if let Some(m) = message
            && let Some(p) = self.inner.lock().projects.get_mut(project)
        {
            p.tag_messages.insert(name.to_string(), m.to_string());
        }
        tracing::info!(%project, tag = %name, %sha, annotated = message.is_some(), "tag created");
        Ok(sha)
    }

    /// [`MockGitlab::create_pipeline`] with pipeline variables (GitLab's "Run
    /// pipeline" form or the API's `variables`): they win over project and
    /// YAML variables and are visible to `rules:if`.
    pub fn create_pipeline_with(
        &self,
        project: &str,
        git_ref: &str,
        variables: &[Variable],
    ) -> Result<PipelineId, LintError> {
        self.create_pipeline_from(project, git_ref, variables, "push")
    }

    /// A branch or tag pipeline with GitLab's `source` (`push`, `api`, …).
    pub(crate) fn create_pipeline_from(
        &self,
        project: &str,
        git_ref: &str,
        variables: &[Variable],
        source: &'static str,
    ) -> Result<PipelineId, LintError> {
        self.create_pipeline_for(project, Target::Ref(git_ref), variables, source)
    }

    /// Create a pipeline with GitLab's `source` (`push`, `api`, `merge_request_event`): it is
    /// `CI_PIPELINE_SOURCE` for `rules` and for the jobs.
    pub(crate) fn create_pipeline_for(
        &self,
        project: &str,
        target: Target<'_>,
        variables: &[Variable],
        source: &'static str,
    ) -> Result<PipelineId, LintError> {
        const FILE: &str = ".gitlab-ci.yml";
        let (bare, merge_requests, tag_messages) = match self.inner.lock().projects.get(project) {
            Some(p) => (
                p.bare_repo.clone(),
                p.project.merge_requests.clone(),
                p.tag_messages.clone(),
            ),
            None => {
                return Err(LintError::general(
                    FILE,
                    format!("project {project} does not exist"),
                    Some("add it with add_project first"),
                ));
            }
        };
        let (git_ref, kind, sha) = match target {
            Target::Ref(r) => {
                let (name, is_tag, sha) = git::resolve_named(&self.inner.data_dir, &bare, r)
                    .map_err(|e| {
                        LintError::general(
                            FILE,
                            format!("reference {r} of {project} cannot be resolved: {e}"),
                            Some("pipelines run on existing branches and tags"),
                        )
                    })?;
                let kind = if is_tag {
                    RefKind::Tag {
                        message: tag_messages.get(&name).cloned(),
                    }
                } else {
                    RefKind::Branch
                };
                (name, kind, sha)
            }
            Target::MergeRequest(iid) => {
                let Some(mr) = merge_requests.iter().find(|m| m.iid == iid).cloned() else {
                    return Err(LintError::general(
                        FILE,
                        format!("{project} has no merge request !{iid}"),
                        Some("declare it in the fixture as .merge-requests/<iid>-<source-branch>/"),
                    ));
                };
                let sha = mr.sha.clone();
                (
                    format!("refs/merge-requests/{iid}/head"),
                    RefKind::MergeRequest(mr),
                    sha,
                )
            }
        };
        let commit_message = commit_message_of(&sha, &merge_requests);
        let git_ref = git_ref.as_str();
        let src = match git::read_file_at(&self.inner.data_dir, &bare, &sha, FILE) {
            Ok(Some(s)) => s,
            Ok(None) => {
                return Err(LintError::general(
                    FILE,
                    format!("{project} has no {FILE} at {git_ref}"),
                    Some("add a .gitlab-ci.yml to the fixture"),
                ));
            }
            Err(e) => {
                return Err(LintError::general(
                    FILE,
                    format!("cannot read {FILE}: {e}"),
                    None,
                ));
            }
        };
        let (project_id, project_vars) = {
            let st = self.inner.lock();
            match st.projects.get(project) {
                Some(p) => (p.project.id, p.variables.clone()),
                None => (0, Vec::new()),
            }
        };
        let files = git::list_files(&self.inner.data_dir, &bare, &sha).unwrap_or_default();
        let data_dir = self.inner.data_dir.clone();
        let read = |path: &str| -> Option<String> {
            git::read_file_at(&data_dir, &bare, &sha, path)
                .ok()
                .flatten()
        };
        let project_url = format!("{}/{project}", self.inner.external_url);
        let pcx = pipeline::config::PipelineContext {
            variables: rules_variables(&RulesRef {
                project,
                project_id,
                project_url: &project_url,
                git_ref,
                kind: &kind,
                sha: &sha,
                commit_message: &commit_message,
                source,
            }),
            project_variables: project_vars
                .iter()
                .chain(variables)
                .map(|v| (v.key.clone(), v.value.clone()))
                .collect(),
            files,
            read_file: &read,
        };
        let cfg = pipeline::config::parse_config_with(&src, FILE, &pcx)?;

        let mut st = self.inner.lock();
        let pid = PipelineId(st.next_pipeline_id);
        st.next_pipeline_id += 1;
        let iid = match st.projects.get_mut(project) {
            Some(p) => {
                p.pipeline_iid += 1;
                p.pipeline_iid
            }
            None => 1,
        };
        let now = Instant::now();
        let mut job_ids = Vec::new();
        // Jobs in stage order, then file order, like GitLab's job ids.
        let mut specs = cfg.jobs.clone();
        specs.sort_by_key(|j| cfg.stages.iter().position(|s| *s == j.stage));
        for spec in specs {
            let id = st.insert_job(pid, project, spec, cfg.variables.clone(), None);
            job_ids.push(id);
        }
        st.pipelines.insert(
            pid.0,
            Pipeline {
                id: pid,
                iid,
                project: project.to_string(),
                git_ref: git_ref.to_string(),
                kind,
                commit_message,
                sha,
                status: PipelineStatus::Created,
                stages: cfg.stages.clone(),
                job_ids,
                created_at: now,
                created_wall: SystemTime::now(),
                finished_at: None,
                variables: variables.to_vec(),
                source,
            },
        );
        let adv = pipeline::advance(&mut st, pid);
        drop(st);
        tracing::info!(pipeline = %pid, %project, %git_ref, "pipeline created");
        self.inner.notify_change(&adv);
        Ok(pid)
    }

    /// Wait until the pipeline is complete, or fail after `timeout` naming
    /// the jobs that are still not finished. Woken by state changes; no polling
    /// interval.
    pub async fn wait_pipeline(
        &self,
        id: PipelineId,
        timeout: Duration,
    ) -> anyhow::Result<PipelineRecord> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Subscribe before checking so a change in between is not lost.
            let mut rx = self.inner.changes_tx.subscribe();
            let rec = self
                .try_pipeline(id)
                .ok_or_else(|| anyhow!("pipeline {id} does not exist"))?;
            if rec.status.is_complete() {
                return Ok(rec);
            }
            tokio::select! {
                r = rx.changed() => {
                    if r.is_err() {
                        return Err(anyhow!("mock-gitlab stopped while waiting for pipeline {id}"));
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    let rec = self.try_pipeline(id).unwrap_or(rec);
                    let waiting: Vec<String> = rec
                        .jobs
                        .iter()
                        .filter(|j| !j.status.is_complete())
                        .map(|j| format!("{} ({}, id {})", j.name, j.status, j.id))
                        .collect();
                    return Err(anyhow!(
                        "pipeline {id} still {} after {timeout:?}; unfinished jobs: {}",
                        rec.status,
                        waiting.join(", ")
                    ));
                }
            }
        }
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

    /// Set (or replace) a project CI/CD variable. It applies to pipelines
    /// created afterwards, overrides YAML variables of the same name, and is
    /// visible to `rules:if`.
    ///
    /// Like GitLab, a masked value must be at least 8 characters long and
    /// may not contain whitespace; the key must be letters, digits and `_`.
    pub fn set_variable(&self, project: &str, var: Variable) -> anyhow::Result<()> {
        if var.key.is_empty()
            || !var
                .key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(anyhow!(
                "variable key {:?} is invalid: use letters, digits and underscores",
                var.key
            ));
        }
        if var.masked && (var.value.chars().count() < 8 || var.value.contains(char::is_whitespace))
        {
            return Err(anyhow!(
                "variable {} cannot be masked: the value must be at least 8 characters without whitespace",
                var.key
            ));
        }
        let mut st = self.inner.lock();
        let p = st
            .projects
            .get_mut(project)
            .ok_or_else(|| anyhow!("project {project} does not exist"))?;
        p.variables.retain(|v| v.key != var.key);
        tracing::info!(%project, key = %var.key, masked = var.masked, file = var.file, "project variable set");
        p.variables.push(var);
        Ok(())
    }

    /// A project's CI/CD variables.
    pub fn variables(&self, project: &str) -> Vec<Variable> {
        self.inner
            .lock()
            .projects
            .get(project)
            .map(|p| p.variables.clone())
            .unwrap_or_default()
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

    /// Cancel a job, as the "Cancel" button does.
    ///
    /// * created/pending: canceled at once (never handed out);
    /// * running, `graceful`: every following PATCH/PUT is answered with
    ///   `Job-Status: canceling`; the runner stops the script, runs
    ///   `after_script`, and its final `failed` is recorded as `canceled`
    ///   (a final `success` that raced the cancel stays `success`);
    /// * running, forced: recorded `canceled` at once; the runner's next
    ///   PATCH/PUT gets 403 with `Job-Status: canceled` and it aborts.
    ///
    /// Canceling a finished job is an error.
    pub fn cancel_job(&self, id: u64, graceful: bool) -> anyhow::Result<()> {
        let mut st = self.inner.lock();
        let pid = pipeline::cancel_job(&mut st, id, graceful)?;
        let adv = pipeline::advance(&mut st, pid);
        drop(st);
        self.inner.notify_change(&adv);
        Ok(())
    }

    /// Cancel every unfinished job of a pipeline (see [`MockGitlab::cancel_job`]);
    /// jobs not started yet are canceled at once.
    pub fn cancel_pipeline(&self, id: PipelineId, graceful: bool) -> anyhow::Result<()> {
        let mut st = self.inner.lock();
        let job_ids = st
            .pipelines
            .get(&id.0)
            .map(|p| p.job_ids.clone())
            .ok_or_else(|| anyhow!("pipeline {id} does not exist"))?;
        for jid in job_ids {
            let unfinished = st
                .jobs
                .get(&jid)
                .is_some_and(|j| !j.record.status.is_complete() && !j.record.canceling);
            if unfinished {
                pipeline::cancel_job(&mut st, jid, graceful)?;
            }
        }
        let adv = pipeline::advance(&mut st, id);
        drop(st);
        tracing::info!(pipeline = %id, graceful, "pipeline canceled");
        self.inner.notify_change(&adv);
        Ok(())
    }

    /// Retry a finished job like GitLab's "Retry" button: a new job (new id
    /// and token) with the same definition becomes pending, the old one is
    /// marked retried. Returns the new job's id.
    pub fn retry_job(&self, id: u64) -> anyhow::Result<u64> {
        let mut st = self.inner.lock();
        let (new_id, pid) = pipeline::retry_job(&mut st, id)?;
        let adv = pipeline::advance(&mut st, pid);
        drop(st);
        self.inner.notify_enqueued(pid, new_id, &adv);
        Ok(new_id)
    }

    /// Start a `when: manual` job ("Play"): it becomes pending.
    pub fn play_job(&self, id: u64) -> anyhow::Result<()> {
        let mut st = self.inner.lock();
        let pid = pipeline::play_job(&mut st, id)?;
        let adv = pipeline::advance(&mut st, pid);
        drop(st);
        self.inner.notify_enqueued(pid, id, &adv);
        Ok(())
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
                reqlog::RequestLog::open(p)
                    .with_context(|| format!("open request log {}", p.display()))?,
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

    /// Stop serving. Held long polls are answered (204) at once, in-flight
    /// requests finish, then the listener closes.
    pub async fn shutdown(self) {
        let _ = self.inner.shutdown_tx.send(true);
        let handle = self
            .inner
            .server
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(mut h) = handle {
            // A client keeping a connection busy must not block us forever.
            if tokio::time::timeout(Duration::from_secs(5), &mut h)
                .await
                .is_err()
            {
                h.abort();
            }
        }
        // After the server: every recorded request is in the queue; write it all, then close.
        let log = self
            .inner
            .request_log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(log) = log {
            let _ = tokio::task::spawn_blocking(move || log.close()).await;
        }
        tracing::info!("mock-gitlab stopped");
    }
}
