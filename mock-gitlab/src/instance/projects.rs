//! Projects, runners and CI/CD variables of a mock instance: what GitLab's UI and admin do.

use std::path::Path;

use anyhow::anyhow;

use super::MockGitlab;
use crate::git;
use crate::state::{
    CreatedRunner, MergeRequest, Project, ProjectState, RegisteredVia, RunnerRecord, RunnerSpec,
    Variable,
};

impl MockGitlab {
    /// Create a runner as in the UI; returns its id and `glrt-` token.
    pub fn create_runner(&self, spec: RunnerSpec) -> CreatedRunner {
        let run_untagged = spec.run_untagged || spec.tags.is_empty();
        let (id, token) = self.inner.add_runner(RunnerRecord {
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
}
