//! Pipelines and jobs of a mock instance: creating pipelines from a project's
//! `.gitlab-ci.yml` and driving jobs (cancel, retry, play) as GitLab's buttons do.

use std::time::{Duration, Instant, SystemTime};

use anyhow::anyhow;

use super::MockGitlab;
use crate::git;
use crate::payload;
use crate::pipeline;
use crate::pipeline::lint::LintError;
use crate::state::{
    MergeRequest, Pipeline, PipelineId, PipelineRecord, PipelineStatus, RefKind, Variable,
};

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

impl MockGitlab {
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

    /// [`MockGitlab::create_pipeline_with`] holding only the jobs named in `jobs` (a job's name,
    /// or the YAML name of a `parallel:` job for all its instances) and, transitively, the jobs
    /// they `needs:` — what `gitlab-ci-local JOB` or a `runnerlab run --job` asks for. The
    /// configuration is linted whole first; a name that is not a job of this pipeline (after
    /// `rules`) is an error listing the jobs there are. Empty `jobs`: every job.
    pub fn create_pipeline_only(
        &self,
        project: &str,
        git_ref: &str,
        variables: &[Variable],
        jobs: &[String],
    ) -> Result<PipelineId, LintError> {
        self.create_pipeline_selected(project, Target::Ref(git_ref), variables, "push", jobs)
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
        self.create_pipeline_selected(project, target, variables, source, &[])
    }

    fn create_pipeline_selected(
        &self,
        project: &str,
        target: Target<'_>,
        variables: &[Variable],
        source: &'static str,
        only: &[String],
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
        let mut cfg = pipeline::config::parse_config_with(&src, FILE, &pcx)?;
        select_jobs(&mut cfg, only, FILE)?;

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
}

/// Keep the jobs named in `only` (by name, or by YAML name for `parallel:` instances) and what
/// they `needs:`, transitively; empty `only` keeps everything. Stages left without jobs are
/// passed over by the engine as GitLab passes over empty stages.
fn select_jobs(
    cfg: &mut pipeline::model::CiConfig,
    only: &[String],
    file: &str,
) -> Result<(), LintError> {
    if only.is_empty() {
        return Ok(());
    }
    let named = |j: &pipeline::model::JobSpec, n: &str| j.name == n || j.base_name == n;
    let mut keep = vec![false; cfg.jobs.len()];
    let mut todo: Vec<String> = Vec::new();
    for n in only {
        if !cfg.jobs.iter().any(|j| named(j, n)) {
            let names: Vec<&str> = cfg.jobs.iter().map(|j| j.name.as_str()).collect();
            return Err(LintError::general(
                file,
                format!(
                    "job {n:?} is not in this pipeline; its jobs: {}",
                    names.join(", ")
                ),
                Some("jobs that rules or when: never leave out are not in it"),
            ));
        }
        todo.push(n.clone());
    }
    while let Some(n) = todo.pop() {
        for (i, j) in cfg.jobs.iter().enumerate() {
            if keep[i] || !named(j, &n) {
                continue;
            }
            keep[i] = true;
            // A need of a job that is not in the pipeline is `optional: true` (else the whole
            // configuration would not have linted): nothing to add then.
            todo.extend(j.needs.iter().flatten().map(|need| need.job.clone()));
        }
    }
    let mut i = 0;
    cfg.jobs.retain(|_| {
        i += 1;
        keep[i - 1]
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::select_jobs;
    use crate::pipeline::config::parse_config;

    const CI: &str = "
stages: [build, test, deploy]
build: {stage: build, script: [make]}
lint: {stage: build, script: [lint]}
unit: {stage: test, script: [t], needs: [build], parallel: 2}
e2e: {stage: test, script: [e], needs: [unit]}
deploy: {stage: deploy, script: [d]}
";

    fn names(only: &[&str]) -> Result<Vec<String>, String> {
        let mut cfg = parse_config(CI, ".gitlab-ci.yml").map_err(|e| e.to_string())?;
        let only: Vec<String> = only.iter().map(|s| s.to_string()).collect();
        select_jobs(&mut cfg, &only, ".gitlab-ci.yml").map_err(|e| e.to_string())?;
        Ok(cfg.jobs.into_iter().map(|j| j.name).collect())
    }

    #[test]
    fn no_selection_keeps_every_job() {
        assert_eq!(
            names(&[]).unwrap(),
            ["build", "lint", "unit 1/2", "unit 2/2", "e2e", "deploy"]
        );
    }

    #[test]
    fn a_job_comes_with_what_it_needs_transitively_in_file_order() {
        assert_eq!(
            names(&["e2e"]).unwrap(),
            ["build", "unit 1/2", "unit 2/2", "e2e"]
        );
        assert_eq!(names(&["deploy", "lint"]).unwrap(), ["lint", "deploy"]);
    }

    #[test]
    fn a_parallel_instance_is_named_alone_or_all_by_its_yaml_name() {
        assert_eq!(names(&["unit 2/2"]).unwrap(), ["build", "unit 2/2"]);
        assert_eq!(names(&["unit"]).unwrap(), ["build", "unit 1/2", "unit 2/2"]);
    }

    #[test]
    fn an_unknown_job_is_an_error_listing_the_jobs() {
        let e = names(&["build", "nope"]).unwrap_err();
        assert!(
            e.starts_with(".gitlab-ci.yml: job \"nope\" is not in this pipeline; its jobs: build, lint, unit 1/2"),
            "{e}"
        );
    }
}
