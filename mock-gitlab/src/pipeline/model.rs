//! What a CI configuration means once parsed: stages, variables and job specs, the shapes
//! that pipeline creation, the engine and job payloads share.

use super::lint::Pos;

pub const DEFAULT_STAGES: [&str; 3] = ["build", "test", "deploy"];
/// GitLab's default job timeout (the project default, 1 h).
pub const DEFAULT_TIMEOUT_S: u64 = 3600;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    OnSuccess,
    OnFailure,
    Always,
    Manual,
    Delayed,
    Never,
}

impl When {
    pub fn as_str(self) -> &'static str {
        match self {
            When::OnSuccess => "on_success",
            When::OnFailure => "on_failure",
            When::Always => "always",
            When::Manual => "manual",
            When::Delayed => "delayed",
            When::Never => "never",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Variable {
    pub key: String,
    pub value: String,
    /// `expand: false` → sent as `raw: true`.
    pub raw: bool,
}

/// `image:` or one entry of `services:`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageSpec {
    pub name: String,
    pub entrypoint: Option<Vec<String>>,
    pub pull_policy: Option<Vec<String>>,
    /// Services only: one alias or a comma-separated list, sent as written.
    pub alias: Option<String>,
    /// Services only.
    pub command: Option<Vec<String>>,
    /// Services only.
    pub variables: Vec<Variable>,
    /// `docker: {user}` → `executor_opts.docker.user`.
    pub docker_user: Option<String>,
    /// `docker: {platform}` → `executor_opts.docker.platform`.
    pub docker_platform: Option<String>,
}

/// `artifacts:`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArtifactsSpec {
    pub name: Option<String>,
    pub paths: Vec<String>,
    pub exclude: Vec<String>,
    pub untracked: bool,
    /// `on_success` (default), `on_failure` or `always`.
    pub when: String,
    pub expire_in: Option<String>,
    /// `reports:` as (type, paths), e.g. `("junit", ["report.xml"])`.
    pub reports: Vec<(String, Vec<String>)>,
}

/// `cache:` key: a string, or `{files, prefix}` (resolved at pipeline creation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheKey {
    Plain(String),
    Files {
        files: Vec<String>,
        prefix: Option<String>,
    },
}

/// One `cache:` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheSpec {
    pub key: CacheKey,
    pub paths: Vec<String>,
    pub untracked: bool,
    /// `pull`, `push` or `pull-push` (default).
    pub policy: String,
    /// `on_success` (default), `on_failure` or `always`.
    pub when: String,
    pub fallback_keys: Vec<String>,
}

/// One `needs:` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Need {
    pub job: String,
    /// Whether the needed job's artifacts are downloaded (default true).
    pub artifacts: bool,
    /// `optional: true`: no error if the job is not in the pipeline.
    pub optional: bool,
}

/// `retry:`; `max == 0` means no retries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetrySpec {
    pub max: u32,
    /// Failure reasons that allow a retry (`always` = any). Empty = `always`.
    pub when: Vec<String>,
    /// If non-empty, only these exit codes allow a retry.
    pub exit_codes: Vec<i32>,
}

impl RetrySpec {
    /// Whether a failure with this reason and exit code may be retried.
    pub fn permits(&self, reason: Option<&str>, exit_code: Option<i32>) -> bool {
        let reason_ok = self.when.is_empty()
            || self.when.iter().any(|w| {
                w == "always"
                    || Some(w.as_str()) == reason
                    || (w == "unknown_failure" && reason.is_none())
            });
        let code_ok =
            self.exit_codes.is_empty() || exit_code.is_some_and(|c| self.exit_codes.contains(&c));
        reason_ok && code_ok
    }
}

/// One `rules:` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    pub if_expr: Option<String>,
    /// `changes:` is accepted and always true (every mock pipeline is a
    /// push of a new branch, where GitLab also evaluates it to true).
    pub changes: bool,
    /// `exists:` globs, matched against the repository's files.
    pub exists: Option<Vec<String>>,
    pub when: Option<When>,
    pub allow_failure: Option<AllowFailure>,
    pub variables: Vec<Variable>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowFailure {
    pub allowed: bool,
    /// `allow_failure: {exit_codes: [...]}`: failure allowed only for these.
    pub exit_codes: Vec<i32>,
}

impl AllowFailure {
    /// Whether a failure with this exit code is allowed.
    pub fn permits(&self, exit_code: Option<i32>) -> bool {
        if self.allowed {
            return true;
        }
        match exit_code {
            Some(c) => self.exit_codes.contains(&c),
            None => false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobSpec {
    pub name: String,
    pub stage: String,
    pub before_script: Vec<String>,
    pub script: Vec<String>,
    pub after_script: Vec<String>,
    pub variables: Vec<Variable>,
    pub image: Option<ImageSpec>,
    pub timeout_s: u64,
    pub tags: Vec<String>,
    pub allow_failure: AllowFailure,
    pub when: When,
    pub pos: Pos,
    pub services: Vec<ImageSpec>,
    pub artifacts: Option<ArtifactsSpec>,
    pub cache: Vec<CacheSpec>,
    /// `dependencies:`; `None` = all jobs of earlier stages.
    pub dependencies: Option<Vec<String>>,
    /// `needs:`; `Some` (even empty) makes the job a DAG job.
    pub needs: Option<Vec<Need>>,
    pub retry: RetrySpec,
    pub interruptible: bool,
    /// `rules:` (already evaluated when the pipeline was created).
    pub rules: Option<Vec<Rule>>,
    /// `(CI_NODE_INDEX, CI_NODE_TOTAL)` for `parallel:` jobs.
    pub node: Option<(u32, u32)>,
    /// The job's name in the YAML (differs from `name` for `parallel:`).
    pub base_name: String,
    /// `start_in:` of a `when: delayed` job, in seconds.
    pub start_in_s: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CiConfig {
    /// All stages including the implicit `.pre` and `.post`.
    pub stages: Vec<String>,
    pub variables: Vec<Variable>,
    /// Visible jobs in file order, excluding `when: never`.
    pub jobs: Vec<JobSpec>,
}
