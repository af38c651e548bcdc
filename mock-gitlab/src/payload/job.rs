//! The payload's JSON shapes and the constants it carries (see the type traps in
//! [`crate::payload`]).

use serde::Serialize;

use crate::pipeline::model::ImageSpec;

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

pub(super) const ZERO_SHA: &str = "0000000000000000000000000000000000000000";

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
    pub(super) fn public(key: &str, value: impl Into<String>) -> Self {
        JobVariable {
            key: key.into(),
            value: value.into(),
            public: true,
            masked: false,
            file: false,
            raw: false,
        }
    }

    pub(super) fn secret(key: &str, value: impl Into<String>) -> Self {
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

#[derive(Serialize, Debug, Clone)]
pub struct Features {
    pub trace_sections: bool,
    pub failure_reasons: Vec<String>,
}
