//! The job payload (`POST /jobs/request` → 201), as the runner's `spec.Job`
//! expects it. See runner-protocol.md §4.
//!
//! Type traps this module guards against (each makes the real runner drop the
//! job silently): integers must be JSON integers (all numeric fields here are
//! integer types, never `f64`); `run`, `inputs` and `secrets` are never
//! emitted (there are no such fields); `pull_policy` is always an array;
//! `project_jobs_running_on_instance_runners_count` is a string.

use serde::Serialize;

use crate::pipeline::config::{ArtifactsSpec, CacheKey, CacheSpec, ImageSpec, JobSpec, Variable};
use crate::state::RefKind;

/// GitLab's full list of failure reasons (`Ci::Build.failure_reasons`); the
/// runner maps its own reasons against this list before reporting.
pub const FAILURE_REASONS: &[&str] = &[
    "unknown_failure",
    "script_failure",
    "api_failure",
    "stuck_or_timeout_failure",
    "runner_system_failure",
    "missing_dependency_failure",
    "runner_unsupported",
    "stale_schedule",
    "job_execution_timeout",
    "archived_failure",
    "unmet_prerequisites",
    "scheduler_failure",
    "data_integrity_failure",
    "forward_deployment_failure",
    "user_blocked",
    "project_deleted",
    "ci_quota_exceeded",
    "pipeline_loop_detected",
    "no_matching_runner",
    "trace_size_exceeded",
    "builds_disabled",
    "environment_creation_failure",
    "deployment_rejected",
    "failed_outdated_deployment_job",
    "protected_environment_failure",
    "insufficient_bridge_permissions",
    "downstream_bridge_project_not_found",
    "invalid_bridge_trigger",
    "upstream_bridge_project_not_found",
    "insufficient_upstream_permissions",
    "bridge_pipeline_is_child_pipeline",
    "downstream_pipeline_creation_failed",
    "secrets_provider_not_found",
    "reached_max_descendant_pipelines_depth",
    "ip_restriction_failure",
    "reached_max_pipeline_hierarchy_size",
    "reached_downstream_pipeline_trigger_rate_limit",
];

/// The GitLab version the mock claims to be (`CI_SERVER_VERSION`).
pub const SERVER_VERSION: &str = "18.11.0";
pub const SERVER_REVISION: &str = "249f0215a1b";
/// The default git depth of a new GitLab project.
pub const DEFAULT_GIT_DEPTH: u32 = 20;
const ZERO_SHA: &str = "0000000000000000000000000000000000000000";

#[derive(Serialize, Debug, Clone)]
pub struct JobPayload {
    pub id: u64,
    pub token: String,
    pub allow_git_fetch: bool,
    pub job_info: JobInfo,
    pub git_info: GitInfo,
    pub runner_info: RunnerInfo,
    pub variables: Vec<JobVariable>,
    pub steps: Vec<Step>,
    pub image: Option<Image>,
    pub services: Vec<Image>,
    pub artifacts: Vec<serde_json::Value>,
    pub cache: Vec<serde_json::Value>,
    pub credentials: Vec<serde_json::Value>,
    pub dependencies: Vec<Dependency>,
    pub hooks: Vec<serde_json::Value>,
    pub features: Features,
}

#[derive(Serialize, Debug, Clone)]
pub struct JobInfo {
    pub id: u64,
    pub name: String,
    pub stage: String,
    pub pipeline_id: u64,
    pub project_id: u64,
    pub project_name: String,
    pub project_full_path: String,
    pub instance_id: String,
    pub instance_uuid: String,
    pub namespace_id: u64,
    pub root_namespace_id: u64,
    pub organization_id: u64,
    pub user_id: u64,
    pub scoped_user_id: Option<u64>,
    /// A *string* in the runner's type; a number fails decoding.
    pub project_jobs_running_on_instance_runners_count: String,
    pub time_in_queue_seconds: u64,
    pub queue_size: u64,
    pub queue_depth: u64,
}

#[derive(Serialize, Debug, Clone)]
pub struct GitInfo {
    pub repo_url: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub sha: String,
    pub before_sha: String,
    pub ref_type: String,
    pub refspecs: Vec<String>,
    pub depth: u32,
    pub repo_object_format: String,
    pub protected: bool,
}

#[derive(Serialize, Debug, Clone)]
pub struct RunnerInfo {
    /// Shown by 19.x runners as "UUID: …" in the trace header.
    pub uuid: String,
    pub timeout: u64,
    pub runner_session_url: Option<String>,
}

#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct JobVariable {
    pub key: String,
    pub value: String,
    pub public: bool,
    pub masked: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub file: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub raw: bool,
}

impl JobVariable {
    fn public(key: &str, value: impl Into<String>) -> Self {
        JobVariable {
            key: key.into(),
            value: value.into(),
            public: true,
            masked: false,
            file: false,
            raw: false,
        }
    }

    fn secret(key: &str, value: impl Into<String>) -> Self {
        JobVariable {
            key: key.into(),
            value: value.into(),
            public: false,
            masked: true,
            file: false,
            raw: false,
        }
    }
}

#[derive(Serialize, Debug, Clone)]
pub struct Step {
    pub name: String,
    pub script: Vec<String>,
    pub timeout: u64,
    pub when: String,
    pub allow_failure: bool,
}

/// `image` and each `services[]` entry (GitLab's `Image`/`Service` entities).
#[derive(Serialize, Debug, Clone)]
pub struct Image {
    pub name: String,
    /// Services only; one alias or a comma-separated list, as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// Services only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Always an array when present: a string here fails decoding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull_policy: Option<Vec<String>>,
    pub ports: Vec<serde_json::Value>,
    /// Services only.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub variables: Vec<JobVariable>,
    /// `{docker: {user, platform}}`; unknown keys here make the runner fail the job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executor_opts: Option<serde_json::Value>,
}

impl From<&ImageSpec> for Image {
    fn from(s: &ImageSpec) -> Self {
        let mut docker = serde_json::Map::new();
        if let Some(u) = &s.docker_user {
            docker.insert("user".into(), u.clone().into());
        }
        if let Some(p) = &s.docker_platform {
            docker.insert("platform".into(), p.clone().into());
        }
        Image {
            name: s.name.clone(),
            alias: s.alias.clone(),
            command: s.command.clone(),
            entrypoint: s.entrypoint.clone(),
            pull_policy: s.pull_policy.clone(),
            ports: Vec::new(),
            variables: s
                .variables
                .iter()
                .map(|v| JobVariable {
                    raw: v.raw,
                    ..JobVariable::public(&v.key, v.value.clone())
                })
                .collect(),
            executor_opts: (!docker.is_empty())
                .then(|| serde_json::json!({ "docker": serde_json::Value::Object(docker) })),
        }
    }
}

/// One `dependencies[]` entry: a finished job whose archive the runner downloads.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    pub id: u64,
    pub name: String,
    /// The *running* job's token (recent GitLab); the download accepts it.
    pub token: String,
    pub artifacts_file: ArtifactsFile,
}

#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct ArtifactsFile {
    pub filename: String,
    /// An integer: a float fails decoding.
    pub size: u64,
}

/// `artifacts[]` entries as GitLab's `BuildRunnerPresenter#artifacts` makes
/// them: the archive (if there are paths or untracked) then one per report.
pub fn artifact_entries(a: &ArtifactsSpec) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    if !a.paths.is_empty() || a.untracked {
        out.push(serde_json::json!({
            "name": a.name,
            "untracked": a.untracked,
            "paths": a.paths,
            "exclude": a.exclude,
            "when": a.when,
            "artifact_type": "archive",
            "artifact_format": "zip",
            "expire_in": a.expire_in,
        }));
    }
    for (kind, paths) in &a.reports {
        let Some((_, format, file)) = crate::pipeline::keywords::REPORT_TYPES
            .iter()
            .find(|(t, _, _)| t == kind)
        else {
            continue;
        };
        out.push(serde_json::json!({
            "name": file,
            "untracked": false,
            "paths": paths,
            "when": "always",
            "artifact_type": kind,
            "artifact_format": format,
            "expire_in": a.expire_in,
        }));
    }
    out
}

/// `cache[]` entries. GitLab's "separate caches for protected branches"
/// (on by default) suffixes keys and fallback keys with `-protected` on
/// protected refs, which every mock ref is.
pub fn cache_entries(caches: &[CacheSpec]) -> Vec<serde_json::Value> {
    caches
        .iter()
        .map(|c| {
            let key = match &c.key {
                CacheKey::Plain(k) => k.clone(),
                // Resolved at pipeline creation; kept for completeness.
                CacheKey::Files { prefix, .. } => prefix.clone().unwrap_or_else(|| "default".into()),
            };
            serde_json::json!({
                "key": format!("{key}-protected"),
                "untracked": c.untracked,
                "policy": c.policy,
                "paths": c.paths,
                "when": c.when,
                "fallback_keys": c.fallback_keys.iter().map(|k| format!("{k}-protected")).collect::<Vec<_>>(),
            })
        })
        .collect()
}

/// GitLab's "variables inside other variables" (`BuildRunnerPresenter#runner_variables`:
/// `sort_and_expand_all(keep_undefined: true, expand_file_refs: false, expand_raw_refs: false)`):
/// GitLab resolves references between variables before it sends them, because the runner
/// expands a value only one level deep (`B: "$A-x"`, `C: "$B/y"` reach a job as `C=<A>-x/y`
/// only thanks to this). References (`$NAME`, `${NAME}`) take the referenced variable's
/// expanded value, the last definition of a name winning and a variable that references its own
/// name getting the definition before it; undefined names, references to file-type or raw
/// variables and `$$` stay as written; raw values are sent as written. A reference cycle
/// leaves every value as written, as GitLab does.
pub fn expand_references(vars: &mut [JobVariable]) {
    use std::collections::HashMap;
    let mut last: HashMap<&str, usize> = HashMap::new();
    for (i, v) in vars.iter().enumerate() {
        last.insert(v.key.as_str(), i);
    }
    struct Resolver<'a> {
        vars: &'a [JobVariable],
        last: HashMap<&'a str, usize>,
        done: Vec<Option<String>>,
        visiting: Vec<bool>,
    }
    impl Resolver<'_> {
        /// The definition a reference to `name` from variable `from` means.
        fn target(&self, from: usize, name: &str) -> Option<usize> {
            match self.last.get(name) {
                Some(&j) if j != from => Some(j),
                Some(_) => (0..from).rev().find(|&j| self.vars[j].key == name),
                None => None,
            }
        }

        /// The expanded value of variable `i`; `None` on a reference cycle.
        fn resolve(&mut self, i: usize) -> Option<String> {
            if let Some(v) = &self.done[i] {
                return Some(v.clone());
            }
            let v = &self.vars[i];
            if v.raw || !v.value.contains('$') {
                self.done[i] = Some(v.value.clone());
                return Some(v.value.clone());
            }
            if self.visiting[i] {
                return None;
            }
            self.visiting[i] = true;
            let c: Vec<char> = v.value.chars().collect();
            let mut out = String::new();
            let mut k = 0;
            while k < c.len() {
                if c[k] != '$' {
                    out.push(c[k]);
                    k += 1;
                    continue;
                }
                if c.get(k + 1) == Some(&'$') {
                    out.push_str("$$");
                    k += 2;
                    continue;
                }
                let braced = c.get(k + 1) == Some(&'{');
                let start = if braced { k + 2 } else { k + 1 };
                let mut j = start;
                let first_ok = c
                    .get(start)
                    .is_some_and(|ch| ch.is_ascii_alphabetic() || *ch == '_');
                while first_ok && j < c.len() && (c[j].is_ascii_alphanumeric() || c[j] == '_') {
                    j += 1;
                }
                if j == start || (braced && c.get(j) != Some(&'}')) {
                    out.push('$');
                    k += 1;
                    continue;
                }
                let end = if braced { j + 1 } else { j };
                let written: String = c[k..end].iter().collect();
                let name: String = c[start..j].iter().collect();
                match self.target(i, &name) {
                    Some(t) if !self.vars[t].file && !self.vars[t].raw => {
                        out.push_str(&self.resolve(t)?)
                    }
                    _ => out.push_str(&written),
                }
                k = end;
            }
            self.visiting[i] = false;
            self.done[i] = Some(out.clone());
            Some(out)
        }
    }
    let n = vars.len();
    let mut r = Resolver {
        vars,
        last,
        done: vec![None; n],
        visiting: vec![false; n],
    };
    let mut expanded = Vec::with_capacity(n);
    for i in 0..n {
        match r.resolve(i) {
            Some(v) => expanded.push(v),
            None => return,
        }
    }
    for (v, e) in vars.iter_mut().zip(expanded) {
        v.value = e;
    }
}

#[derive(Serialize, Debug, Clone)]
pub struct Features {
    pub trace_sections: bool,
    pub failure_reasons: Vec<String>,
}

/// Everything needed to build one payload.
pub struct PayloadContext<'a> {
    pub job_id: u64,
    pub job_token: &'a str,
    pub spec: &'a JobSpec,
    pub pipeline_variables: &'a [Variable],
    pub pipeline_id: u64,
    pub pipeline_iid: u64,
    pub pipeline_created_at: &'a str,
    /// `CI_PIPELINE_SOURCE`: `push`, or `api` for pipelines made through the REST API.
    pub pipeline_source: &'a str,
    pub job_started_at: &'a str,
    pub project_id: u64,
    pub project_path: &'a str,
    /// The branch, the tag, or `refs/merge-requests/<iid>/head`.
    pub git_ref: &'a str,
    pub kind: &'a RefKind,
    pub sha: &'a str,
    pub commit_message: &'a str,
    /// `http://host:port`, what the runner was given.
    pub external_url: &'a str,
    pub runner_id: u64,
    pub runner_description: &'a str,
    pub runner_tags: &'a [String],
    pub time_in_queue_s: u64,
    /// Project CI/CD variables; sent after the YAML ones, so they win.
    pub project_variables: &'a [crate::Variable],
    pub dependencies: Vec<Dependency>,
}

/// Lowercase, non-alphanumerics to `-`, at most 63 chars, no leading or
/// trailing `-` (GitLab's `CI_*_SLUG` rule).
pub fn slugify(s: &str) -> String {
    let lowered: String = s
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let cut: String = lowered.chars().take(63).collect();
    cut.trim_matches('-').to_string()
}

fn host_and_port(url: &str) -> (String, String) {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or(url);
    let hostport = rest.split('/').next().unwrap_or(rest);
    match hostport.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && p.chars().all(|c| c.is_ascii_digit()) => {
            (h.to_string(), p.to_string())
        }
        _ => (hostport.to_string(), "80".to_string()),
    }
}

/// The predefined variables that depend on what a pipeline runs for, as GitLab sets them:
/// `CI_COMMIT_BRANCH` for branches only, `CI_COMMIT_TAG` (and `CI_COMMIT_TAG_MESSAGE`) for tags
/// only, `CI_MERGE_REQUEST_*` for merge requests only, whose `CI_COMMIT_REF_NAME` is the source
/// branch. Used for `rules:if` at creation and in the job payload, so both agree.
pub fn ref_variables(
    kind: &RefKind,
    git_ref: &str,
    project_id: u64,
    project_path: &str,
    project_url: &str,
) -> Vec<(&'static str, String)> {
    let ref_name = match kind {
        RefKind::MergeRequest(mr) => mr.source_branch.as_str(),
        _ => git_ref,
    };
    let mut v = vec![
        ("CI_COMMIT_REF_NAME", ref_name.to_string()),
        ("CI_COMMIT_REF_SLUG", slugify(ref_name)),
    ];
    match kind {
        RefKind::Branch => v.push(("CI_COMMIT_BRANCH", git_ref.to_string())),
        RefKind::Tag { message } => {
            v.push(("CI_COMMIT_TAG", git_ref.to_string()));
            v.push(("CI_COMMIT_TAG_MESSAGE", message.clone().unwrap_or_default()));
        }
        RefKind::MergeRequest(mr) => {
            // One project: source and target project are the same.
            v.extend([
                ("CI_MERGE_REQUEST_ID", mr.id.to_string()),
                ("CI_MERGE_REQUEST_IID", mr.iid.to_string()),
                ("CI_MERGE_REQUEST_REF_PATH", git_ref.to_string()),
                ("CI_MERGE_REQUEST_PROJECT_ID", project_id.to_string()),
                ("CI_MERGE_REQUEST_PROJECT_PATH", project_path.to_string()),
                ("CI_MERGE_REQUEST_PROJECT_URL", project_url.to_string()),
                (
                    "CI_MERGE_REQUEST_TARGET_BRANCH_NAME",
                    mr.target_branch.clone(),
                ),
                ("CI_MERGE_REQUEST_TARGET_BRANCH_PROTECTED", "true".into()),
                ("CI_MERGE_REQUEST_TITLE", mr.title.clone()),
                ("CI_MERGE_REQUEST_SQUASH_ON_MERGE", "false".into()),
                ("CI_MERGE_REQUEST_DRAFT", "false".into()),
                ("CI_MERGE_REQUEST_SOURCE_PROJECT_ID", project_id.to_string()),
                (
                    "CI_MERGE_REQUEST_SOURCE_PROJECT_PATH",
                    project_path.to_string(),
                ),
                (
                    "CI_MERGE_REQUEST_SOURCE_PROJECT_URL",
                    project_url.to_string(),
                ),
                (
                    "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME",
                    mr.source_branch.clone(),
                ),
                ("CI_MERGE_REQUEST_SOURCE_BRANCH_PROTECTED", "true".into()),
                ("CI_MERGE_REQUEST_EVENT_TYPE", "detached".into()),
                ("CI_MERGE_REQUEST_DIFF_ID", mr.iid.to_string()),
                ("CI_MERGE_REQUEST_DIFF_BASE_SHA", mr.target_sha.clone()),
                // Set for merged-results pipelines only; empty in detached ones.
                ("CI_MERGE_REQUEST_SOURCE_BRANCH_SHA", String::new()),
                ("CI_MERGE_REQUEST_TARGET_BRANCH_SHA", String::new()),
            ]);
        }
    }
    v
}

/// `git_info.refspecs` as GitLab's `Ci::BuildRunnerPresenter#refspecs` makes them: the
/// pipeline's persistent ref first; with a depth, the branch's or the tag's own refspec (none
/// for a merge request pipeline: the persistent ref carries its commit); without a depth, every
/// branch and tag.
pub fn refspecs(
    kind: &RefKind,
    git_ref: &str,
    sha: &str,
    pipeline_id: u64,
    depth: u32,
) -> Vec<String> {
    let mut specs = vec![format!("+{sha}:refs/pipelines/{pipeline_id}")];
    if depth > 0 {
        match kind {
            RefKind::Branch => specs.push(format!(
                "+refs/heads/{git_ref}:refs/remotes/origin/{git_ref}"
            )),
            RefKind::Tag { .. } => specs.push(format!("+refs/tags/{git_ref}:refs/tags/{git_ref}")),
            RefKind::MergeRequest(_) => {}
        }
    } else {
        specs.push("+refs/heads/*:refs/remotes/origin/*".into());
        specs.push("+refs/tags/*:refs/tags/*".into());
    }
    specs
}

/// Build the payload GitLab would send for this job.
pub fn build(cx: &PayloadContext<'_>) -> JobPayload {
    let spec = cx.spec;
    let (host, port) = host_and_port(cx.external_url);
    let project_name = cx
        .project_path
        .rsplit('/')
        .next()
        .unwrap_or(cx.project_path)
        .to_string();
    let namespace = cx
        .project_path
        .rsplit_once('/')
        .map(|(ns, _)| ns.to_string())
        .unwrap_or_default();
    let root_namespace = namespace.split('/').next().unwrap_or("").to_string();
    let project_url = format!("{}/{}", cx.external_url, cx.project_path);
    let repo_url = {
        let without_scheme = cx
            .external_url
            .strip_prefix("http://")
            .unwrap_or(cx.external_url);
        format!(
            "http://gitlab-ci-token:{}@{}/{}.git",
            cx.job_token, without_scheme, cx.project_path
        )
    };

    // Pipeline then job variables; GitLab lets later entries win.
    let yaml_vars: Vec<&Variable> = cx
        .pipeline_variables
        .iter()
        .chain(spec.variables.iter())
        .collect();
    let depth = cx
        .project_variables
        .iter()
        .rev()
        .find(|v| v.key == "GIT_DEPTH")
        .map(|v| v.value.clone())
        .or_else(|| {
            yaml_vars
                .iter()
                .rev()
                .find(|v| v.key == "GIT_DEPTH")
                .map(|v| v.value.clone())
        })
        .map(|v| v.trim().parse::<u32>().unwrap_or(0))
        .unwrap_or(DEFAULT_GIT_DEPTH);

    let short_sha: String = cx.sha.chars().take(8).collect();
    let runner_tags = serde_json::to_string(cx.runner_tags).unwrap_or_else(|_| "[]".into());
    let registry = format!("{host}:5050");
    let image_path = format!("{registry}/{}", cx.project_path.to_lowercase());

    fn p(key: &str, value: impl Into<String>) -> JobVariable {
        JobVariable::public(key, value)
    }
    let mut variables = vec![
        p("CI_PIPELINE_ID", cx.pipeline_id.to_string()),
        p(
            "CI_PIPELINE_URL",
            format!("{project_url}/-/pipelines/{}", cx.pipeline_id),
        ),
        p("CI_JOB_ID", cx.job_id.to_string()),
        p("CI_JOB_URL", format!("{project_url}/-/jobs/{}", cx.job_id)),
        JobVariable::secret("CI_JOB_TOKEN", cx.job_token),
        p("CI_JOB_STARTED_AT", cx.job_started_at),
        JobVariable::secret("CI_BUILD_TOKEN", cx.job_token),
        p("CI_REGISTRY_USER", "gitlab-ci-token"),
        JobVariable::secret("CI_REGISTRY_PASSWORD", cx.job_token),
        JobVariable {
            public: false,
            masked: false,
            ..p("CI_REPOSITORY_URL", repo_url.clone())
        },
        p("CI_DEPENDENCY_PROXY_USER", "gitlab-ci-token"),
        JobVariable::secret("CI_DEPENDENCY_PROXY_PASSWORD", cx.job_token),
        p("CI_JOB_NAME", spec.name.clone()),
        p("CI_JOB_NAME_SLUG", slugify(&spec.name)),
        p("CI_JOB_STAGE", spec.stage.clone()),
        p(
            "CI_NODE_TOTAL",
            spec.node.map(|(_, n)| n).unwrap_or(1).to_string(),
        ),
        p("CI", "true"),
        p("GITLAB_CI", "true"),
        p("CI_SERVER_FQDN", host.clone()),
        p("CI_SERVER_URL", cx.external_url),
        p("CI_SERVER_HOST", host.clone()),
        p("CI_SERVER_PORT", port.clone()),
        p("CI_SERVER_PROTOCOL", "http"),
        p("CI_SERVER_SHELL_SSH_HOST", host.clone()),
        p("CI_SERVER_SHELL_SSH_PORT", "22"),
        p("CI_SERVER_NAME", "GitLab"),
        p("CI_SERVER_VERSION", SERVER_VERSION),
        p("CI_SERVER_VERSION_MAJOR", "18"),
        p("CI_SERVER_VERSION_MINOR", "11"),
        p("CI_SERVER_VERSION_PATCH", "0"),
        p("CI_SERVER_REVISION", SERVER_REVISION),
        p("GITLAB_FEATURES", ""),
        p("CI_PROJECT_ID", cx.project_id.to_string()),
        p("CI_PROJECT_NAME", project_name.clone()),
        p("CI_PROJECT_TITLE", project_name.clone()),
        p("CI_PROJECT_DESCRIPTION", ""),
        p("CI_PROJECT_PATH", cx.project_path),
        p("CI_PROJECT_PATH_SLUG", slugify(cx.project_path)),
        p("CI_PROJECT_NAMESPACE", namespace.clone()),
        p("CI_PROJECT_NAMESPACE_SLUG", slugify(&namespace)),
        p("CI_PROJECT_NAMESPACE_ID", "1"),
        p("CI_PROJECT_ROOT_NAMESPACE", root_namespace),
        p("CI_PROJECT_URL", project_url.clone()),
        p("CI_PROJECT_VISIBILITY", "private"),
        p("CI_PROJECT_REPOSITORY_LANGUAGES", ""),
        p("CI_PROJECT_CLASSIFICATION_LABEL", ""),
        p("CI_DEFAULT_BRANCH", "main"),
        p("CI_CONFIG_PATH", ".gitlab-ci.yml"),
        p("CI_PAGES_DOMAIN", "example.com"),
        p("CI_PAGES_URL", ""),
        p("CI_API_V4_URL", format!("{}/api/v4", cx.external_url)),
        p(
            "CI_API_GRAPHQL_URL",
            format!("{}/api/graphql", cx.external_url),
        ),
        p("CI_REGISTRY", registry),
        p("CI_REGISTRY_IMAGE", image_path),
        p("CI_DEPENDENCY_PROXY_SERVER", format!("{host}:{port}")),
        p(
            "CI_DEPENDENCY_PROXY_GROUP_IMAGE_PREFIX",
            format!("{host}:{port}/{namespace}/dependency_proxy/containers"),
        ),
        p(
            "CI_DEPENDENCY_PROXY_DIRECT_GROUP_IMAGE_PREFIX",
            format!("{host}:{port}/{namespace}/dependency_proxy/containers"),
        ),
        p("CI_PIPELINE_IID", cx.pipeline_iid.to_string()),
        p("CI_PIPELINE_SOURCE", cx.pipeline_source),
        p("CI_PIPELINE_CREATED_AT", cx.pipeline_created_at),
        p("CI_PIPELINE_NAME", ""),
        p("CI_COMMIT_SHA", cx.sha),
        p("CI_COMMIT_SHORT_SHA", short_sha),
        p("CI_COMMIT_BEFORE_SHA", ZERO_SHA),
    ];
    variables.extend(
        ref_variables(
            cx.kind,
            cx.git_ref,
            cx.project_id,
            cx.project_path,
            &project_url,
        )
        .into_iter()
        .map(|(k, v)| p(k, v)),
    );
    variables.extend([
        p("CI_COMMIT_MESSAGE", cx.commit_message),
        p(
            "CI_COMMIT_TITLE",
            cx.commit_message.lines().next().unwrap_or(""),
        ),
        p("CI_COMMIT_DESCRIPTION", ""),
        p("CI_COMMIT_REF_PROTECTED", "true"),
        // GitLab formats this with an explicit offset.
        p(
            "CI_COMMIT_TIMESTAMP",
            crate::git::COMMIT_DATE.replace('Z', "+00:00"),
        ),
        p(
            "CI_COMMIT_AUTHOR",
            format!(
                "{} <{}>",
                crate::git::COMMIT_AUTHOR_NAME,
                crate::git::COMMIT_AUTHOR_EMAIL
            ),
        ),
        p("CI_RUNNER_ID", cx.runner_id.to_string()),
        p("CI_RUNNER_DESCRIPTION", cx.runner_description),
        p("CI_RUNNER_TAGS", runner_tags),
        p("GITLAB_USER_ID", "1"),
        p("GITLAB_USER_EMAIL", crate::git::COMMIT_AUTHOR_EMAIL),
        p("GITLAB_USER_LOGIN", "root"),
        p("GITLAB_USER_NAME", "Administrator"),
    ]);
    if let Some((i, _)) = spec.node {
        variables.push(p("CI_NODE_INDEX", i.to_string()));
    }
    for v in yaml_vars {
        variables.push(JobVariable {
            raw: v.raw,
            ..p(&v.key, v.value.clone())
        });
    }
    for v in cx.project_variables {
        variables.push(JobVariable {
            key: v.key.clone(),
            value: v.value.clone(),
            public: false,
            masked: v.masked,
            file: v.file,
            raw: v.raw,
        });
    }

    expand_references(&mut variables);

    let mut script = spec.before_script.clone();
    script.extend(spec.script.iter().cloned());
    let mut steps = vec![Step {
        name: "script".into(),
        script,
        timeout: spec.timeout_s,
        when: "on_success".into(),
        allow_failure: false,
    }];
    if !spec.after_script.is_empty() {
        steps.push(Step {
            name: "after_script".into(),
            script: spec.after_script.clone(),
            timeout: spec.timeout_s,
            when: "always".into(),
            allow_failure: true,
        });
    }

    JobPayload {
        id: cx.job_id,
        token: cx.job_token.to_string(),
        // GitLab's project default is "git fetch".
        allow_git_fetch: true,
        job_info: JobInfo {
            id: cx.job_id,
            name: spec.name.clone(),
            stage: spec.stage.clone(),
            pipeline_id: cx.pipeline_id,
            project_id: cx.project_id,
            project_name,
            project_full_path: cx.project_path.to_string(),
            instance_id: "1".into(),
            instance_uuid: "00000000-0000-4000-8000-000000000001".into(),
            namespace_id: 1,
            root_namespace_id: 1,
            organization_id: 1,
            user_id: 1,
            scoped_user_id: None,
            project_jobs_running_on_instance_runners_count: "0".into(),
            time_in_queue_seconds: cx.time_in_queue_s,
            queue_size: 0,
            queue_depth: 0,
        },
        git_info: GitInfo {
            repo_url,
            git_ref: cx.git_ref.to_string(),
            sha: cx.sha.to_string(),
            before_sha: ZERO_SHA.into(),
            // GitLab's `ref_type` knows tags and branches only; a merge request is `branch`.
            ref_type: match cx.kind {
                RefKind::Tag { .. } => "tag",
                _ => "branch",
            }
            .into(),
            refspecs: refspecs(cx.kind, cx.git_ref, cx.sha, cx.pipeline_id, depth),
            depth,
            repo_object_format: "sha1".into(),
            protected: true,
        },
        runner_info: RunnerInfo {
            uuid: format!("6d6f636b-0000-4000-8000-{:012x}", cx.runner_id),
            timeout: spec.timeout_s,
            runner_session_url: None,
        },
        variables,
        steps,
        image: spec.image.as_ref().map(Image::from),
        services: spec.services.iter().map(Image::from).collect(),
        artifacts: spec
            .artifacts
            .as_ref()
            .map(artifact_entries)
            .unwrap_or_default(),
        cache: cache_entries(&spec.cache),
        credentials: Vec::new(),
        dependencies: cx.dependencies.clone(),
        hooks: Vec::new(),
        features: Features {
            trace_sections: true,
            failure_reasons: FAILURE_REASONS.iter().map(|s| s.to_string()).collect(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::config::{AllowFailure, When};
    use crate::pipeline::yaml::Pos;

    fn sample() -> JobPayload {
        let spec = JobSpec {
            name: "hello world".into(),
            stage: "test".into(),
            before_script: vec!["echo before".into()],
            script: vec!["echo hi".into()],
            after_script: vec!["echo after".into()],
            variables: vec![Variable {
                key: "GIT_DEPTH".into(),
                value: "5".into(),
                raw: false,
            }],
            image: Some(ImageSpec {
                name: "alpine".into(),
                pull_policy: Some(vec!["always".into()]),
                docker_user: Some("1000".into()),
                ..ImageSpec::default()
            }),
            timeout_s: 10,
            tags: vec![],
            allow_failure: AllowFailure::default(),
            when: When::OnSuccess,
            pos: Pos::default(),
            services: vec![ImageSpec {
                name: "postgres:16".into(),
                alias: Some("db,pg".into()),
                command: Some(vec!["postgres".into(), "-c".into(), "fsync=off".into()]),
                variables: vec![Variable {
                    key: "POSTGRES_PASSWORD".into(),
                    value: "x".into(),
                    raw: false,
                }],
                ..ImageSpec::default()
            }],
            artifacts: Some(ArtifactsSpec {
                paths: vec!["out/".into()],
                when: "on_success".into(),
                expire_in: Some("1 week".into()),
                reports: vec![("junit".into(), vec!["report.xml".into()])],
                ..ArtifactsSpec::default()
            }),
            cache: vec![CacheSpec {
                key: CacheKey::Plain("deps".into()),
                paths: vec!["vendor/".into()],
                untracked: false,
                policy: "pull-push".into(),
                when: "on_success".into(),
                fallback_keys: vec!["main".into()],
            }],
            dependencies: None,
            needs: None,
            retry: Default::default(),
            interruptible: false,
            rules: None,
            node: Some((2, 3)),
            base_name: "hello world".into(),
            start_in_s: None,
        };
        let project_vars = vec![crate::Variable {
            key: "SECRET".into(),
            value: "s3cr3t-value".into(),
            masked: true,
            file: true,
            ..Default::default()
        }];
        let globals = vec![Variable {
            key: "RAW".into(),
            value: "$X".into(),
            raw: true,
        }];
        build(&PayloadContext {
            pipeline_source: "push",
            job_id: 1001,
            job_token: "glcbt-secret",
            spec: &spec,
            pipeline_variables: &globals,
            pipeline_id: 7,
            pipeline_iid: 1,
            pipeline_created_at: "2026-01-01T00:00:00Z",
            job_started_at: "2026-01-01T00:00:01Z",
            project_id: 3,
            project_path: "group/hello",
            git_ref: "main",
            kind: &RefKind::Branch,
            sha: "0123456789abcdef0123456789abcdef01234567",
            commit_message: crate::git::COMMIT_MESSAGE,
            external_url: "http://10.0.2.2:8080",
            runner_id: 4,
            runner_description: "r",
            runner_tags: &["a".to_string()],
            time_in_queue_s: 0,
            project_variables: &project_vars,
            dependencies: vec![Dependency {
                id: 1000,
                name: "build".into(),
                token: "glcbt-secret".into(),
                artifacts_file: ArtifactsFile {
                    filename: "artifacts.zip".into(),
                    size: 123,
                },
            }],
        })
    }

    fn walk(v: &serde_json::Value, path: &str, f: &mut dyn FnMut(&str, &serde_json::Value)) {
        f(path, v);
        match v {
            serde_json::Value::Object(m) => {
                for (k, c) in m {
                    walk(c, &format!("{path}.{k}"), f);
                }
            }
            serde_json::Value::Array(a) => {
                for (i, c) in a.iter().enumerate() {
                    walk(c, &format!("{path}[{i}]"), f);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn no_floats_and_no_forbidden_keys() {
        let v = serde_json::to_value(sample()).unwrap();
        let text = serde_json::to_string(&v).unwrap();
        walk(&v, "$", &mut |path, node| {
            if let serde_json::Value::Number(n) = node {
                assert!(n.is_u64() || n.is_i64(), "{path} is not an integer: {n}");
            }
            if let serde_json::Value::Object(m) = node {
                for bad in ["run", "inputs", "secrets"] {
                    assert!(!m.contains_key(bad), "{path} has key {bad}");
                }
            }
        });
        assert!(!text.contains("\"run\""));
        assert!(!text.contains("\"inputs\""));
        assert!(!text.contains("\"secrets\""));
        assert!(!text.contains("3600.0"));
        // Specific type traps.
        assert!(v["job_info"]["project_jobs_running_on_instance_runners_count"].is_string());
        assert!(v["image"]["pull_policy"].is_array());
        assert!(v["id"].is_u64());
        assert!(v["runner_info"]["timeout"].is_u64());
        assert!(v["steps"][0]["timeout"].is_u64());
    }

    #[test]
    fn payload_content() {
        let v = serde_json::to_value(sample()).unwrap();
        assert_eq!(
            v["git_info"]["repo_url"],
            "http://gitlab-ci-token:glcbt-secret@10.0.2.2:8080/group/hello.git"
        );
        assert_eq!(v["git_info"]["depth"], 5);
        assert_eq!(
            v["git_info"]["refspecs"][0],
            "+0123456789abcdef0123456789abcdef01234567:refs/pipelines/7"
        );
        assert_eq!(
            v["git_info"]["refspecs"][1],
            "+refs/heads/main:refs/remotes/origin/main"
        );
        assert_eq!(
            v["steps"][0]["script"],
            serde_json::json!(["echo before", "echo hi"])
        );
        assert_eq!(v["steps"][1]["name"], "after_script");
        let vars = v["variables"].as_array().unwrap();
        let get = |k: &str| vars.iter().rev().find(|x| x["key"] == k).unwrap().clone();
        assert_eq!(get("CI_JOB_TOKEN")["masked"], true);
        assert_eq!(get("CI_JOB_TOKEN")["public"], false);
        assert_eq!(get("CI_SERVER_HOST")["value"], "10.0.2.2");
        assert_eq!(get("CI_SERVER_PORT")["value"], "8080");
        assert_eq!(get("CI_PROJECT_NAMESPACE")["value"], "group");
        assert_eq!(get("CI_JOB_NAME_SLUG")["value"], "hello-world");
        assert_eq!(get("RAW")["raw"], true);
        assert!(get("CI_JOB_ID").get("raw").is_none());
        assert_eq!(
            v["features"]["failure_reasons"].as_array().unwrap().len(),
            37
        );
        assert_eq!(get("CI_NODE_INDEX")["value"], "2");
        assert_eq!(get("CI_NODE_TOTAL")["value"], "3");
        assert_eq!(get("SECRET")["masked"], true);
        assert_eq!(get("SECRET")["file"], true);
    }

    #[test]
    fn refspecs_per_ref_kind_and_depth() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        let persistent = format!("+{sha}:refs/pipelines/7");
        let mr = RefKind::MergeRequest(crate::MergeRequest {
            id: 501,
            iid: 1,
            title: "X".into(),
            source_branch: "x".into(),
            target_branch: "main".into(),
            sha: sha.into(),
            target_sha: sha.into(),
            merge_sha: sha.into(),
        });
        let tag = RefKind::Tag { message: None };
        assert_eq!(
            refspecs(&RefKind::Branch, "main", sha, 7, 20),
            [
                persistent.clone(),
                "+refs/heads/main:refs/remotes/origin/main".into()
            ]
        );
        assert_eq!(
            refspecs(&tag, "v1", sha, 7, 20),
            [persistent.clone(), "+refs/tags/v1:refs/tags/v1".into()]
        );
        assert_eq!(
            refspecs(&mr, "refs/merge-requests/1/head", sha, 7, 20),
            vec![persistent.clone()]
        );
        for kind in [RefKind::Branch, tag, mr] {
            assert_eq!(
                refspecs(&kind, "main", sha, 7, 0),
                [
                    persistent.clone(),
                    "+refs/heads/*:refs/remotes/origin/*".into(),
                    "+refs/tags/*:refs/tags/*".into()
                ]
            );
        }
    }

    #[test]
    fn container_fields() {
        let v = serde_json::to_value(sample()).unwrap();
        assert_eq!(v["image"]["name"], "alpine");
        assert_eq!(v["image"]["executor_opts"]["docker"]["user"], "1000");
        assert!(v["image"].get("alias").is_none());
        let svc = &v["services"][0];
        assert_eq!(svc["name"], "postgres:16");
        assert_eq!(svc["alias"], "db,pg");
        assert_eq!(
            svc["command"],
            serde_json::json!(["postgres", "-c", "fsync=off"])
        );
        assert_eq!(svc["variables"][0]["key"], "POSTGRES_PASSWORD");
        assert!(svc["ports"].is_array());
        let a = v["artifacts"].as_array().unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0]["artifact_type"], "archive");
        assert_eq!(a[0]["artifact_format"], "zip");
        assert_eq!(a[0]["paths"], serde_json::json!(["out/"]));
        assert_eq!(a[0]["expire_in"], "1 week");
        assert_eq!(a[1]["artifact_type"], "junit");
        assert_eq!(a[1]["artifact_format"], "gzip");
        assert_eq!(a[1]["name"], "junit.xml.gz");
        assert_eq!(a[1]["when"], "always");
        let c = &v["cache"][0];
        assert_eq!(c["key"], "deps-protected");
        assert_eq!(c["fallback_keys"], serde_json::json!(["main-protected"]));
        assert_eq!(c["policy"], "pull-push");
        let d = &v["dependencies"][0];
        assert_eq!(d["id"], 1000);
        assert_eq!(d["artifacts_file"]["size"], 123);
    }
}
