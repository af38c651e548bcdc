//! `.gitlab-ci.yml` → `CiConfig`, with GitLab-lint-like diagnostics.
//!
//! Supported: `stages`, top-level `variables`, `include` (local files only),
//! `workflow:rules`, `default` (before_script, after_script, image, services,
//! artifacts, cache, retry, timeout, tags, interruptible), the deprecated
//! global `image`/`services`/`cache`/`before_script`/`after_script`, YAML
//! anchors and merge keys, `!reference`, `extends`, and per job `stage`,
//! `script`, `before_script`, `after_script`, `variables`, `image`,
//! `services`, `timeout`, `tags`, `allow_failure` (bool or `exit_codes`),
//! `when` (`delayed` with `start_in`), `artifacts` (reports: junit, dotenv),
//! `cache`, `dependencies`, `needs`, `rules` (if, changes (always true),
//! exists, when, allow_failure, variables), `workflow:rules:variables`,
//! `retry`, `parallel` (count or matrix), `interruptible`.
//! GitLab keywords the mock does not implement yet are reported as errors
//! rather than silently ignored, so a test never passes for the wrong reason.

use super::duration::parse_duration;
use super::keywords;
use super::lint::{Diagnostic, LintError};
use super::yaml::{Node, Pos, Value};

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

const TOP_LEVEL_KEYWORDS: &[&str] = &[
    "default",
    "include",
    "before_script",
    "image",
    "services",
    "after_script",
    "variables",
    "stages",
    "cache",
    "workflow",
    "spec",
];
const TOP_LEVEL_UNSUPPORTED: &[&str] = &[];

const JOB_SUPPORTED: &[&str] = &[
    "stage",
    "script",
    "before_script",
    "after_script",
    "variables",
    "image",
    "services",
    "timeout",
    "tags",
    "allow_failure",
    "when",
    "artifacts",
    "cache",
    "dependencies",
    "needs",
    "rules",
    "retry",
    "parallel",
    "interruptible",
    "start_in",
    // Accepted and ignored: no effect on what a runner sees.
    "coverage",
    "environment",
    "resource_group",
];
const JOB_UNSUPPORTED: &[&str] = &[
    "only",
    "except",
    "trigger",
    "release",
    "secrets",
    "hooks",
    "pages",
    "inherit",
    "run",
    "identity",
    "id_tokens",
    "manual_confirmation",
    "dast_configuration",
];
const DEFAULT_SUPPORTED: &[&str] = &[
    "before_script",
    "after_script",
    "image",
    "services",
    "artifacts",
    "cache",
    "retry",
    "timeout",
    "tags",
    "interruptible",
];
const DEFAULT_UNSUPPORTED: &[&str] = &["hooks", "id_tokens"];

/// Defaults applying to every job.
#[derive(Default)]
struct Defaults {
    before_script: Option<Vec<String>>,
    after_script: Option<Vec<String>>,
    image: Option<ImageSpec>,
    services: Option<Vec<ImageSpec>>,
    artifacts: Option<ArtifactsSpec>,
    cache: Option<Vec<CacheSpec>>,
    retry: Option<RetrySpec>,
    interruptible: Option<bool>,
    timeout_s: Option<u64>,
    tags: Option<Vec<String>>,
}

pub(super) struct Ctx<'a> {
    pub(super) file: &'a str,
    pub(super) errors: Vec<Diagnostic>,
}

impl Ctx<'_> {
    pub(super) fn err(&mut self, pos: Pos, message: impl Into<String>, hint: Option<&str>) {
        self.errors
            .push(Diagnostic::new(self.file, Some(pos), message.into(), hint));
    }
}

pub(super) const UNSUPPORTED_HINT: &str =
    "mock-gitlab does not implement this keyword yet; remove it or extend mock-gitlab/src/pipeline";

/// What pipeline creation knows beyond the YAML itself: variables for
/// `rules:if` (predefined and project variables), the repository's files
/// (`rules:exists`) and a reader for `include:local` and `cache:key:files`.
pub struct PipelineContext<'a> {
    /// Predefined variables (`CI_COMMIT_BRANCH`, …).
    pub variables: Vec<(String, String)>,
    /// Project CI/CD variables (they override YAML ones).
    pub project_variables: Vec<(String, String)>,
    pub files: Vec<String>,
    pub read_file: &'a dyn Fn(&str) -> Option<String>,
}

fn no_file(_: &str) -> Option<String> {
    None
}

impl PipelineContext<'static> {
    /// A push pipeline on `branch` of a repository without files.
    pub fn for_branch(branch: &str) -> Self {
        PipelineContext {
            variables: vec![
                ("CI_COMMIT_BRANCH".into(), branch.into()),
                ("CI_COMMIT_REF_NAME".into(), branch.into()),
                ("CI_DEFAULT_BRANCH".into(), "main".into()),
                ("CI_PIPELINE_SOURCE".into(), "push".into()),
            ],
            project_variables: Vec::new(),
            files: Vec::new(),
            read_file: &no_file,
        }
    }
}

/// Parse and validate a CI configuration (as a push pipeline on `main` of a
/// repository without other files).
pub fn parse_config(src: &str, file: &str) -> Result<CiConfig, LintError> {
    parse_config_with(src, file, &PipelineContext::for_branch("main"))
}

/// Parse, validate and evaluate (`include`, `extends`, `!reference`,
/// `rules`, `workflow:rules`, `parallel`, `cache:key:files`) a CI configuration.
pub fn parse_config_with(
    src: &str,
    file: &str,
    pcx: &PipelineContext<'_>,
) -> Result<CiConfig, LintError> {
    let Some(root) = super::yaml::parse(src, file)? else {
        return Err(LintError::general(
            file,
            "Please provide content of .gitlab-ci.yml",
            Some("the file is empty"),
        ));
    };
    let mut cx = Ctx {
        file,
        errors: Vec::new(),
    };
    if root.as_map().is_none() {
        cx.err(
            root.pos,
            format!("root config should be a hash, not {}", root.type_name()),
            Some("the file must be a mapping of keywords and job names"),
        );
        return Err(LintError {
            diagnostics: cx.errors,
        });
    }
    let root = super::preprocess::preprocess(&mut cx, root, pcx.read_file);
    if !cx.errors.is_empty() {
        return Err(LintError {
            diagnostics: cx.errors,
        });
    }
    let map = root.as_map().unwrap_or_default();

    // Stages.
    let mut stages: Vec<String> = DEFAULT_STAGES.iter().map(|s| s.to_string()).collect();
    if let Some(n) = root.get("stages") {
        match string_list(n) {
            Some(list) => stages = list,
            None => cx.err(
                n.pos,
                "stages config should be an array of strings",
                Some("e.g. stages: [build, test]"),
            ),
        }
    }
    let mut all_stages = vec![".pre".to_string()];
    for s in stages {
        if !all_stages.contains(&s) && s != ".post" {
            all_stages.push(s);
        }
    }
    all_stages.push(".post".to_string());

    // Global variables.
    let mut variables = match root.get("variables") {
        Some(n) => parse_variables(&mut cx, n, "variables"),
        None => Vec::new(),
    };

    // Defaults: `default:` wins over the deprecated global keywords.
    let mut defaults = Defaults::default();
    if let Some(n) = root.get("before_script") {
        defaults.before_script = parse_script(&mut cx, n, "before_script");
    }
    if let Some(n) = root.get("after_script") {
        defaults.after_script = parse_script(&mut cx, n, "after_script");
    }
    if let Some(n) = root.get("image") {
        defaults.image = parse_image(&mut cx, n, "image");
    }
    if let Some(n) = root.get("services") {
        defaults.services = keywords::parse_services(&mut cx, n, "services");
    }
    if let Some(n) = root.get("cache") {
        defaults.cache = keywords::parse_cache(&mut cx, n, "cache");
    }
    if let Some(d) = root.get("default") {
        parse_default(&mut cx, d, &mut defaults);
    }
    let workflow_rules = root
        .get("workflow")
        .and_then(|n| keywords::parse_workflow(&mut cx, n));

    // Unsupported top-level keywords.
    for (k, _) in map {
        if let Some(ks) = k.scalar_string()
            && TOP_LEVEL_UNSUPPORTED.contains(&ks.as_str())
        {
            cx.err(
                k.pos,
                format!("{ks} config is not supported by mock-gitlab yet"),
                Some(UNSUPPORTED_HINT),
            );
        }
    }

    // Jobs.
    let mut jobs = Vec::new();
    let mut visible = 0usize;
    let mut all_names = Vec::new();
    for (k, v) in map {
        let Some(name) = k.scalar_string() else {
            cx.err(
                k.pos,
                "job names must be strings",
                Some("use a plain scalar as the key"),
            );
            continue;
        };
        if TOP_LEVEL_KEYWORDS.contains(&name.as_str()) || name.starts_with('.') {
            continue;
        }
        visible += 1;
        if let Some((job, parallel)) = parse_job(&mut cx, &name, k.pos, v, &defaults, &all_stages) {
            for j in expand_parallel(job, parallel) {
                all_names.push(j.name.clone());
                jobs.push(j);
            }
        }
    }
    if visible == 0 && cx.errors.is_empty() {
        cx.err(
            root.pos,
            "jobs config should contain at least one visible job",
            Some("add a job with a script; names starting with '.' are hidden"),
        );
    }
    if !cx.errors.is_empty() {
        return Err(LintError {
            diagnostics: cx.errors,
        });
    }

    // workflow:rules decide whether there is a pipeline at all.
    if let Some(rules) = &workflow_rules {
        let lookup = |k: &str| lookup_var(pcx, &variables, &[], k);
        match first_matching_rule(rules, &lookup, &pcx.files) {
            // The matching rule's `variables:` override global ones for every job and for
            // the jobs' `rules:` (GitLab's workflow:rules:variables).
            Some(r) if r.when != Some(When::Never) => variables.extend(r.variables.iter().cloned()),
            _ => {
                return Err(LintError::general(
                    file,
                    "Pipeline filtered out by workflow rules.",
                    Some("no workflow:rules entry matched, or the matching one says when: never"),
                ));
            }
        }
    }

    // rules: decide which jobs exist and with which `when`. A job without `rules` has GitLab's
    // default `only: [branches, tags]`, so it is not part of a merge request pipeline.
    let merge_request_pipeline = pcx
        .variables
        .iter()
        .any(|(k, v)| k == "CI_PIPELINE_SOURCE" && v == "merge_request_event");
    let mut kept = Vec::new();
    for mut job in jobs {
        if job.rules.is_none() && merge_request_pipeline {
            continue;
        }
        if let Some(rules) = job.rules.clone() {
            let lookup = |k: &str| lookup_var(pcx, &variables, &job.variables, k);
            match first_matching_rule(&rules, &lookup, &pcx.files) {
                None => continue,
                Some(r) => {
                    if let Some(w) = r.when {
                        job.when = w;
                    }
                    if let Some(a) = &r.allow_failure {
                        job.allow_failure = a.clone();
                    }
                    job.variables.extend(r.variables.iter().cloned());
                }
            }
        }
        if job.when == When::Never {
            continue;
        }
        for c in &mut job.cache {
            if let CacheKey::Files { files, prefix } = &c.key {
                c.key = CacheKey::Plain(files_key(files, prefix.as_deref(), pcx.read_file));
            }
        }
        kept.push(job);
    }
    let jobs = kept;

    // needs: and dependencies: must name jobs of this pipeline.
    let base_of = |n: &str| -> Vec<&JobSpec> {
        jobs.iter()
            .filter(|j| j.name == n || j.base_name == n)
            .collect()
    };
    for j in &jobs {
        let stage_idx = all_stages.iter().position(|s| *s == j.stage);
        if let Some(needs) = &j.needs {
            for n in needs {
                let found = base_of(&n.job);
                if found.is_empty() && !n.optional {
                    let why = if all_names.contains(&n.job) {
                        "is not in any previous stage (it was excluded by rules)"
                    } else {
                        "does not exist in the pipeline"
                    };
                    cx.err(
                        j.pos,
                        format!(
                            "'{}' job needs '{}' job, but '{}' {why}",
                            j.name, n.job, n.job
                        ),
                        Some("fix the name or mark the need optional: true"),
                    );
                }
                for f in found {
                    let fi = all_stages.iter().position(|s| *s == f.stage);
                    if fi > stage_idx {
                        cx.err(
                            j.pos,
                            format!(
                                "'{}' job needs '{}' job, but '{}' is in a later stage",
                                j.name, n.job, n.job
                            ),
                            None,
                        );
                    }
                }
            }
        }
        if let Some(deps) = &j.dependencies {
            for d in deps {
                let found = base_of(d);
                if found.is_empty() {
                    cx.err(
                        j.pos,
                        format!("jobs:{} dependencies: undefined dependency: {d}", j.name),
                        None,
                    );
                }
                let in_needs = j
                    .needs
                    .as_ref()
                    .is_some_and(|ns| ns.iter().any(|n| n.job == *d));
                if j.needs.is_some() && !in_needs {
                    cx.err(
                        j.pos,
                        format!(
                            "jobs:{} dependencies the {d} should be part of needs",
                            j.name
                        ),
                        None,
                    );
                }
                for f in found {
                    let fi = all_stages.iter().position(|s| *s == f.stage);
                    if fi >= stage_idx && j.needs.is_none() {
                        cx.err(
                            j.pos,
                            format!("jobs:{} dependencies: {d} is not defined in current or prior stages", j.name),
                            None,
                        );
                    }
                }
            }
        }
    }
    if !cx.errors.is_empty() {
        return Err(LintError {
            diagnostics: cx.errors,
        });
    }
    if jobs.is_empty() {
        // Every job is `when: never`: GitLab refuses to create an empty pipeline.
        return Err(LintError::general(
            file,
            "no jobs would run in this pipeline",
            Some(if merge_request_pipeline {
                "all jobs are `when: never` or excluded by rules; in a merge request pipeline only \
                 jobs with rules run (e.g. - if: $CI_PIPELINE_SOURCE == \"merge_request_event\")"
            } else {
                "all jobs are `when: never` or excluded by rules"
            }),
        ));
    }
    Ok(CiConfig {
        stages: all_stages,
        variables,
        jobs,
    })
}

/// A variable as `rules:if` sees it: project variables win over job
/// variables, which win over global YAML variables, which win over
/// predefined ones.
fn lookup_var(
    pcx: &PipelineContext<'_>,
    globals: &[Variable],
    job: &[Variable],
    key: &str,
) -> Option<String> {
    let find = |vars: &[(String, String)]| {
        vars.iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    find(&pcx.project_variables)
        .or_else(|| {
            job.iter()
                .rev()
                .find(|v| v.key == key)
                .map(|v| v.value.clone())
        })
        .or_else(|| {
            globals
                .iter()
                .rev()
                .find(|v| v.key == key)
                .map(|v| v.value.clone())
        })
        .or_else(|| find(&pcx.variables))
}

fn first_matching_rule<'r>(
    rules: &'r [Rule],
    vars: &dyn Fn(&str) -> Option<String>,
    files: &[String],
) -> Option<&'r Rule> {
    rules.iter().find(|r| {
        let if_ok = r
            .if_expr
            .as_deref()
            .is_none_or(|e| super::rules::eval_if(e, vars).unwrap_or(false));
        let exists_ok = r.exists.as_ref().is_none_or(|globs| {
            globs
                .iter()
                .any(|g| files.iter().any(|f| super::rules::glob_match(g, f)))
        });
        if_ok && exists_ok
    })
}

/// `cache:key:files` → `<prefix>-<sha>`: GitLab hashes the last commits of
/// the files; the mock hashes their content (stable per fixture).
fn files_key(
    files: &[String],
    prefix: Option<&str>,
    read_file: &dyn Fn(&str) -> Option<String>,
) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let mut any = false;
    for f in files {
        if let Some(c) = read_file(f.trim_start_matches('/')) {
            any = true;
            h.update(f.as_bytes());
            h.update([0]);
            h.update(c.as_bytes());
        }
    }
    let hash = if any {
        let d = h.finalize();
        d.iter().take(20).map(|b| format!("{b:02x}")).collect()
    } else {
        "default".to_string()
    };
    match prefix {
        Some(p) => format!("{p}-{hash}"),
        None => hash,
    }
}

/// `parallel:` → one job per node, named like GitLab (`name 1/3`,
/// `name: [a, b]`), with `CI_NODE_INDEX`/`CI_NODE_TOTAL` and matrix variables.
fn expand_parallel(job: JobSpec, parallel: Option<keywords::Parallel>) -> Vec<JobSpec> {
    match parallel {
        None => vec![job],
        Some(keywords::Parallel::Count(n)) => (1..=n)
            .map(|i| JobSpec {
                name: format!("{} {i}/{n}", job.base_name),
                node: Some((i, n)),
                ..job.clone()
            })
            .collect(),
        Some(keywords::Parallel::Matrix(combos)) => {
            let n = combos.len() as u32;
            combos
                .into_iter()
                .enumerate()
                .map(|(i, combo)| {
                    let label: Vec<&str> = combo.iter().map(|(_, v)| v.as_str()).collect();
                    let mut variables = job.variables.clone();
                    for (k, v) in &combo {
                        variables.push(Variable {
                            key: k.clone(),
                            value: v.clone(),
                            raw: false,
                        });
                    }
                    JobSpec {
                        name: format!("{}: [{}]", job.base_name, label.join(", ")),
                        node: Some((i as u32 + 1, n)),
                        variables,
                        ..job.clone()
                    }
                })
                .collect()
        }
    }
}

fn parse_default(cx: &mut Ctx<'_>, d: &Node, defaults: &mut Defaults) {
    let Some(map) = d.as_map() else {
        cx.err(d.pos, "default config should be a hash", None);
        return;
    };
    for (k, v) in map {
        let key = k.scalar_string().unwrap_or_default();
        match key.as_str() {
            "before_script" => defaults.before_script = parse_script(cx, v, "default:before_script"),
            "after_script" => defaults.after_script = parse_script(cx, v, "default:after_script"),
            "image" => defaults.image = parse_image(cx, v, "default:image"),
            "services" => defaults.services = keywords::parse_services(cx, v, "default:services"),
            "artifacts" => {
                defaults.artifacts = keywords::parse_artifacts(cx, v, "default:artifacts")
            }
            "cache" => defaults.cache = keywords::parse_cache(cx, v, "default:cache"),
            "retry" => defaults.retry = keywords::parse_retry(cx, v, "default:retry"),
            "interruptible" => match v.value {
                Value::Bool(b) => defaults.interruptible = Some(b),
                _ => cx.err(v.pos, "default:interruptible config should be a boolean value", None),
            },
            "timeout" => defaults.timeout_s = parse_timeout(cx, v, "default:timeout"),
            "tags" => defaults.tags = parse_tags(cx, v, "default:tags"),
            k2 if DEFAULT_SUPPORTED.contains(&k2) => {}
            k2 if DEFAULT_UNSUPPORTED.contains(&k2) => cx.err(
                k.pos,
                format!("default:{k2} config is not supported by mock-gitlab yet"),
                Some(UNSUPPORTED_HINT),
            ),
            other => cx.err(
                k.pos,
                format!("default config contains unknown keys: {other}"),
                Some("allowed: after_script, artifacts, before_script, cache, hooks, id_tokens, image, interruptible, retry, services, tags, timeout"),
            ),
        }
    }
}

fn parse_job(
    cx: &mut Ctx<'_>,
    name: &str,
    key_pos: Pos,
    v: &Node,
    defaults: &Defaults,
    stages: &[String],
) -> Option<(JobSpec, Option<keywords::Parallel>)> {
    let prefix = format!("jobs:{name}");
    let Some(map) = v.as_map() else {
        cx.err(
            key_pos,
            format!("{prefix} config should be a hash"),
            Some("a job is a mapping with at least `script:`"),
        );
        return None;
    };
    let errors_before = cx.errors.len();
    let mut unknown = Vec::new();
    for (k, _) in map {
        let ks = k.scalar_string().unwrap_or_default();
        if JOB_SUPPORTED.contains(&ks.as_str()) {
            continue;
        }
        if JOB_UNSUPPORTED.contains(&ks.as_str()) {
            cx.err(
                k.pos,
                format!("{prefix}:{ks} config is not supported by mock-gitlab yet"),
                Some(UNSUPPORTED_HINT),
            );
        } else {
            unknown.push((ks, k.pos));
        }
    }
    if let Some((_, pos)) = unknown.first() {
        let names: Vec<&str> = unknown.iter().map(|(n, _)| n.as_str()).collect();
        cx.err(
            *pos,
            format!(
                "{prefix} config contains unknown keys: {}",
                names.join(", ")
            ),
            Some("check the keyword's spelling and indentation"),
        );
    }

    let script = match v.get("script") {
        Some(n) => parse_script(cx, n, &format!("{prefix}:script")),
        None => {
            cx.err(
                key_pos,
                format!("{prefix} config should contain a script"),
                Some("add \"script:\" with at least one command"),
            );
            None
        }
    };
    if let (Some(s), Some(n)) = (&script, v.get("script"))
        && s.is_empty()
    {
        cx.err(
            n.pos,
            format!("{prefix}:script config should not be empty"),
            Some("add at least one command"),
        );
    }
    let before_script = match v.get("before_script") {
        Some(n) => parse_script(cx, n, &format!("{prefix}:before_script")),
        None => defaults.before_script.clone(),
    };
    let after_script = match v.get("after_script") {
        Some(n) => parse_script(cx, n, &format!("{prefix}:after_script")),
        None => defaults.after_script.clone(),
    };

    let stage = match v.get("stage") {
        Some(n) => match n.as_str() {
            Some(s) => {
                if !stages.iter().any(|x| x == s) {
                    cx.err(
                        n.pos,
                        format!(
                            "{prefix} chosen stage {s} does not exist; available stages are {}",
                            stages.join(", ")
                        ),
                        Some("add it to `stages:` or fix the name"),
                    );
                }
                s.to_string()
            }
            None => {
                cx.err(
                    n.pos,
                    format!("{prefix}:stage config should be a string"),
                    None,
                );
                String::new()
            }
        },
        None => "test".to_string(),
    };
    if v.get("stage").is_none() && !stages.iter().any(|s| s == "test") {
        cx.err(
            key_pos,
            format!(
                "{prefix} chosen stage test does not exist; available stages are {}",
                stages.join(", ")
            ),
            Some("jobs without `stage:` go to `test`; set `stage:` explicitly"),
        );
    }

    let variables = match v.get("variables") {
        Some(n) => parse_variables(cx, n, &format!("{prefix}:variables")),
        None => Vec::new(),
    };
    let image = match v.get("image") {
        Some(n) => parse_image(cx, n, &format!("{prefix}:image")),
        None => defaults.image.clone(),
    };
    let timeout_s = match v.get("timeout") {
        Some(n) => parse_timeout(cx, n, &format!("{prefix}:timeout")),
        None => defaults.timeout_s,
    }
    .unwrap_or(DEFAULT_TIMEOUT_S);
    let tags = match v.get("tags") {
        Some(n) => parse_tags(cx, n, &format!("{prefix}:tags")),
        None => defaults.tags.clone(),
    }
    .unwrap_or_default();
    let when = match v.get("when") {
        Some(n) => parse_when(cx, n, &format!("{prefix}:when")),
        None => When::OnSuccess,
    };
    // GitLab: a job-level `when: manual` job may fail by default (it does not block or fail
    // the pipeline); `rules:when: manual` keeps the default false.
    let allow_failure = match v.get("allow_failure") {
        Some(n) => parse_allow_failure(cx, n, &format!("{prefix}:allow_failure")),
        None => AllowFailure {
            allowed: when == When::Manual,
            exit_codes: Vec::new(),
        },
    };
    let services = match v.get("services") {
        Some(n) => keywords::parse_services(cx, n, &format!("{prefix}:services")),
        None => defaults.services.clone(),
    }
    .unwrap_or_default();
    let artifacts = match v.get("artifacts") {
        Some(n) => keywords::parse_artifacts(cx, n, &format!("{prefix}:artifacts")),
        None => defaults.artifacts.clone(),
    };
    let cache = match v.get("cache") {
        Some(n) => keywords::parse_cache(cx, n, &format!("{prefix}:cache")),
        None => defaults.cache.clone(),
    }
    .unwrap_or_default();
    let dependencies = v
        .get("dependencies")
        .and_then(|n| keywords::parse_dependencies(cx, n, &format!("{prefix}:dependencies")));
    let needs = v
        .get("needs")
        .and_then(|n| keywords::parse_needs(cx, n, &format!("{prefix}:needs")));
    let retry = match v.get("retry") {
        Some(n) => keywords::parse_retry(cx, n, &format!("{prefix}:retry")),
        None => defaults.retry.clone(),
    }
    .unwrap_or_default();
    let interruptible = match v.get("interruptible").map(|n| (&n.value, n.pos)) {
        Some((Value::Bool(b), _)) => *b,
        Some((_, pos)) => {
            cx.err(
                pos,
                format!("{prefix}:interruptible config should be a boolean value"),
                None,
            );
            false
        }
        None => defaults.interruptible.unwrap_or(false),
    };
    let rules = v
        .get("rules")
        .and_then(|n| keywords::parse_rules(cx, n, &format!("{prefix}:rules")));
    if v.get("rules").is_some() && v.get("when").is_some() {
        cx.err(
            key_pos,
            format!("{prefix} config key may not be used with `rules`: when"),
            Some("move `when:` into the rules"),
        );
    }
    // `start_in:` belongs to `when: delayed` (GitLab: at most one week).
    let start_in_s = match (v.get("start_in"), when) {
        (Some(n), When::Delayed) => {
            let s = n.as_str().and_then(parse_duration);
            match s {
                Some(s) if s <= 7 * 24 * 3600 => Some(s),
                Some(_) => {
                    cx.err(
                        n.pos,
                        format!("{prefix} start in should be less than or equal to one week"),
                        None,
                    );
                    None
                }
                None => {
                    cx.err(
                        n.pos,
                        format!("{prefix} start in should be a duration"),
                        Some("e.g. start_in: 30 seconds"),
                    );
                    None
                }
            }
        }
        (Some(n), _) => {
            cx.err(
                n.pos,
                format!("{prefix} start in must be blank when not delayed"),
                Some("add `when: delayed` or remove `start_in:`"),
            );
            None
        }
        (None, When::Delayed) => {
            cx.err(
                key_pos,
                format!("{prefix} start in can't be blank when delayed"),
                Some("add e.g. `start_in: 30 seconds`"),
            );
            None
        }
        (None, _) => None,
    };
    let parallel = v
        .get("parallel")
        .and_then(|n| keywords::parse_parallel(cx, n, &format!("{prefix}:parallel")));

    if cx.errors.len() > errors_before {
        return None;
    }
    Some((
        JobSpec {
            name: name.to_string(),
            stage,
            before_script: before_script.unwrap_or_default(),
            script: script.unwrap_or_default(),
            after_script: after_script.unwrap_or_default(),
            variables,
            image,
            timeout_s,
            tags,
            allow_failure,
            when,
            pos: key_pos,
            services,
            artifacts,
            cache,
            dependencies,
            needs,
            retry,
            interruptible,
            rules,
            node: None,
            base_name: name.to_string(),
            start_in_s,
        },
        parallel,
    ))
}

/// A string, or a (nested, up to 10 levels) array of strings, flattened.
pub(super) fn parse_script(cx: &mut Ctx<'_>, n: &Node, what: &str) -> Option<Vec<String>> {
    fn flatten(n: &Node, depth: usize, out: &mut Vec<String>) -> Result<(), Pos> {
        match &n.value {
            Value::Str(s) => {
                out.push(s.clone());
                Ok(())
            }
            Value::Seq(items) if depth < 10 => {
                for it in items {
                    flatten(it, depth + 1, out)?;
                }
                Ok(())
            }
            _ => Err(n.pos),
        }
    }
    let mut out = Vec::new();
    match flatten(n, 0, &mut out) {
        Ok(()) => Some(out),
        Err(pos) => {
            cx.err(
                pos,
                format!(
                    "{what} config should be a string or a nested array of strings up to 10 levels deep"
                ),
                Some("quote commands that YAML reads as numbers, booleans or mappings (e.g. a `: ` inside a command)"),
            );
            None
        }
    }
}

pub(super) fn string_list(n: &Node) -> Option<Vec<String>> {
    match &n.value {
        Value::Seq(items) => items
            .iter()
            .map(|i| i.as_str().map(str::to_string))
            .collect(),
        _ => None,
    }
}

pub(super) fn parse_tags(cx: &mut Ctx<'_>, n: &Node, what: &str) -> Option<Vec<String>> {
    match string_list(n) {
        Some(t) => Some(t),
        None => {
            cx.err(
                n.pos,
                format!("{what} config should be an array of strings"),
                None,
            );
            None
        }
    }
}

pub(super) fn parse_timeout(cx: &mut Ctx<'_>, n: &Node, what: &str) -> Option<u64> {
    let parsed = match &n.value {
        Value::Str(s) => parse_duration(s),
        Value::Int(i) if *i > 0 => Some(*i as u64),
        _ => None,
    };
    if parsed.is_none() {
        cx.err(
            n.pos,
            format!("{what} config should be a duration"),
            Some("e.g. \"10s\", \"1h 30m\" or \"10 minutes\""),
        );
    }
    parsed
}

pub(super) fn parse_when(cx: &mut Ctx<'_>, n: &Node, what: &str) -> When {
    let w = match n.as_str() {
        Some("on_success") => Some(When::OnSuccess),
        Some("on_failure") => Some(When::OnFailure),
        Some("always") => Some(When::Always),
        Some("manual") => Some(When::Manual),
        Some("delayed") => Some(When::Delayed),
        Some("never") => Some(When::Never),
        _ => None,
    };
    match w {
        Some(w) => w,
        None => {
            cx.err(
                n.pos,
                format!(
                    "{what} config should be one of: on_success, on_failure, always, manual, delayed, never"
                ),
                None,
            );
            When::OnSuccess
        }
    }
}

pub(super) fn parse_allow_failure(cx: &mut Ctx<'_>, n: &Node, what: &str) -> AllowFailure {
    match &n.value {
        Value::Bool(b) => AllowFailure {
            allowed: *b,
            exit_codes: Vec::new(),
        },
        Value::Map(_) => {
            let codes = n.get("exit_codes");
            let list: Option<Vec<i32>> = match codes.map(|c| &c.value) {
                Some(Value::Int(i)) => i32::try_from(*i).ok().map(|i| vec![i]),
                Some(Value::Seq(items)) => items
                    .iter()
                    .map(|i| match i.value {
                        Value::Int(v) => i32::try_from(v).ok(),
                        _ => None,
                    })
                    .collect(),
                _ => None,
            };
            match list {
                Some(exit_codes) if n.as_map().map(|m| m.len()) == Some(1) => AllowFailure {
                    allowed: false,
                    exit_codes,
                },
                _ => {
                    cx.err(
                        n.pos,
                        format!(
                            "{what} config should be a boolean value or a hash with exit_codes"
                        ),
                        Some("e.g. allow_failure: {exit_codes: [137, 255]}"),
                    );
                    AllowFailure::default()
                }
            }
        }
        _ => {
            cx.err(
                n.pos,
                format!("{what} config should be a boolean value or a hash"),
                None,
            );
            AllowFailure::default()
        }
    }
}

pub(super) fn parse_image(cx: &mut Ctx<'_>, n: &Node, what: &str) -> Option<ImageSpec> {
    parse_image_like(cx, n, what, false)
}

/// `image:` (`service == false`) or one `services:` entry: a string or a
/// hash. Services also take `alias`, `command` and `variables`.
pub(super) fn parse_image_like(
    cx: &mut Ctx<'_>,
    n: &Node,
    what: &str,
    service: bool,
) -> Option<ImageSpec> {
    match &n.value {
        Value::Str(s) => Some(ImageSpec {
            name: s.clone(),
            ..ImageSpec::default()
        }),
        Value::Map(map) => {
            let errors_before = cx.errors.len();
            let mut spec = ImageSpec::default();
            let mut name = None;
            for (k, v) in map {
                let key = k.scalar_string().unwrap_or_default();
                let bad = |cx: &mut Ctx<'_>, msg: String| cx.err(v.pos, msg, None);
                match key.as_str() {
                    "name" => match v.as_str() {
                        Some(s) => name = Some(s.to_string()),
                        None => bad(cx, format!("{what}:name config should be a string")),
                    },
                    "entrypoint" => match string_list(v) {
                        Some(l) => spec.entrypoint = Some(l),
                        None => bad(
                            cx,
                            format!("{what}:entrypoint config should be an array of strings"),
                        ),
                    },
                    "pull_policy" => {
                        // A single string or a list; the payload always carries a list.
                        let l = match &v.value {
                            Value::Str(s) => Some(vec![s.clone()]),
                            _ => string_list(v),
                        };
                        match l {
                            Some(l) => spec.pull_policy = Some(l),
                            None => bad(
                                cx,
                                format!(
                                    "{what}:pull_policy config should be a string or an array of strings"
                                ),
                            ),
                        }
                    }
                    "alias" if service => match v.as_str() {
                        Some(s) => spec.alias = Some(s.to_string()),
                        None => bad(cx, format!("{what}:alias config should be a string")),
                    },
                    "command" if service => match string_list(v) {
                        Some(l) => spec.command = Some(l),
                        None => bad(
                            cx,
                            format!("{what}:command config should be an array of strings"),
                        ),
                    },
                    "variables" if service => {
                        spec.variables = parse_variables(cx, v, &format!("{what}:variables"));
                    }
                    "docker" => {
                        let Some(m) = v.as_map() else {
                            bad(cx, format!("{what}:docker config should be a hash"));
                            continue;
                        };
                        for (dk, dv) in m {
                            let dks = dk.scalar_string().unwrap_or_default();
                            let val = dv
                                .scalar_string()
                                .filter(|_| matches!(dv.value, Value::Str(_) | Value::Int(_)));
                            match (dks.as_str(), val) {
                                ("user", Some(u)) => spec.docker_user = Some(u),
                                ("platform", Some(p)) => spec.docker_platform = Some(p),
                                ("user" | "platform", None) => bad(
                                    cx,
                                    format!("{what}:docker:{dks} config should be a string"),
                                ),
                                (other, _) => {
                                    cx.err(
                                        dk.pos,
                                        format!(
                                            "{what}:docker config contains unknown keys: {other}"
                                        ),
                                        Some("allowed: platform, user"),
                                    );
                                }
                            }
                        }
                    }
                    "kubernetes" => {
                        cx.err(
                            k.pos,
                            format!(
                                "{what}:kubernetes options are not supported by mock-gitlab yet"
                            ),
                            Some(UNSUPPORTED_HINT),
                        );
                    }
                    other => {
                        cx.err(
                            k.pos,
                            format!("{what} config contains unknown keys: {other}"),
                            Some(if service {
                                "allowed: name, alias, entrypoint, command, variables, pull_policy, docker"
                            } else {
                                "allowed: name, entrypoint, pull_policy, docker"
                            }),
                        );
                    }
                }
            }
            let ok = cx.errors.len() == errors_before;
            match name {
                Some(name) if ok => Some(ImageSpec { name, ..spec }),
                Some(_) => None,
                None => {
                    if ok {
                        cx.err(n.pos, format!("{what} config should contain a name"), None);
                    }
                    None
                }
            }
        }
        _ => {
            cx.err(
                n.pos,
                format!("{what} config should be a hash or a string"),
                None,
            );
            None
        }
    }
}

pub(super) fn parse_variables(cx: &mut Ctx<'_>, n: &Node, what: &str) -> Vec<Variable> {
    let Some(map) = n.as_map() else {
        cx.err(
            n.pos,
            format!("{what} config should be a hash of key value pairs"),
            Some("e.g. variables: {GIT_DEPTH: \"10\"}"),
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for (k, v) in map {
        let Some(key) = k.scalar_string() else {
            cx.err(k.pos, format!("{what} keys should be strings"), None);
            continue;
        };
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            cx.err(
                k.pos,
                format!("{what} key {key:?} is not a valid variable name"),
                Some("use letters, digits and underscores"),
            );
            continue;
        }
        match &v.value {
            Value::Str(_) | Value::Int(_) | Value::Float(_) | Value::Null => out.push(Variable {
                key,
                value: v.scalar_string().unwrap_or_default(),
                raw: false,
            }),
            Value::Map(_) => {
                let value = v.get("value").and_then(|x| match x.value {
                    Value::Str(_) | Value::Int(_) | Value::Float(_) => x.scalar_string(),
                    _ => None,
                });
                let expand = match v.get("expand").map(|x| &x.value) {
                    None => Some(true),
                    Some(Value::Bool(b)) => Some(*b),
                    Some(_) => None,
                };
                match (value, expand) {
                    (Some(value), Some(expand)) => out.push(Variable {
                        key,
                        value,
                        raw: !expand,
                    }),
                    _ => cx.err(
                        v.pos,
                        format!("{what}:{key} config should be a string or a hash with value (and optional description, expand, options)"),
                        None,
                    ),
                }
            }
            _ => cx.err(
                v.pos,
                format!("{what}:{key} value should be a string or a number"),
                Some("quote the value, e.g. \"true\""),
            ),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lint(src: &str) -> String {
        parse_config(src, ".gitlab-ci.yml").unwrap_err().to_string()
    }

    #[test]
    fn minimal_job() {
        let c = parse_config("hello:\n  script: echo hi\n", ".gitlab-ci.yml").unwrap();
        assert_eq!(c.jobs.len(), 1);
        let j = &c.jobs[0];
        assert_eq!(j.stage, "test");
        assert_eq!(j.script, vec!["echo hi"]);
        assert_eq!(j.timeout_s, 3600);
        assert_eq!(c.stages, vec![".pre", "build", "test", "deploy", ".post"]);
    }

    #[test]
    fn defaults_and_overrides() {
        let src = r#"
stages: [one, two]
variables:
  A: "1"
  N: 5
  R: {value: "$X", expand: false}
default:
  before_script: [echo before]
  after_script: echo after
  image: alpine
  timeout: 1h 30m
a:
  stage: one
  script: [echo a, [echo nested]]
  tags: [x]
  allow_failure: true
b:
  stage: two
  image: {name: "busybox", pull_policy: if-not-present}
  before_script: []
  script: echo b
  timeout: 10s
  when: always
  variables: {B: x}
.hidden:
  nothing: here
never:
  stage: two
  script: x
  when: never
"#;
        let c = parse_config(src, ".gitlab-ci.yml").unwrap();
        assert_eq!(c.stages, vec![".pre", "one", "two", ".post"]);
        assert_eq!(c.variables.len(), 3);
        assert_eq!(c.variables[1].value, "5");
        assert!(c.variables[2].raw);
        assert_eq!(c.jobs.len(), 2);
        let a = &c.jobs[0];
        assert_eq!(a.before_script, vec!["echo before"]);
        assert_eq!(a.script, vec!["echo a", "echo nested"]);
        assert_eq!(a.after_script, vec!["echo after"]);
        assert_eq!(a.timeout_s, 5400);
        assert_eq!(a.image.as_ref().unwrap().name, "alpine");
        assert!(a.allow_failure.allowed);
        let b = &c.jobs[1];
        assert!(b.before_script.is_empty());
        assert_eq!(b.timeout_s, 10);
        assert_eq!(b.when, When::Always);
        assert_eq!(
            b.image.as_ref().unwrap().pull_policy,
            Some(vec!["if-not-present".to_string()])
        );
    }

    #[test]
    fn missing_script_points_at_job() {
        let e = lint("stages: [build]\n\nbuild:\n  stage: build\n");
        assert_eq!(
            e,
            ".gitlab-ci.yml:3:1: jobs:build config should contain a script (add \"script:\" with at least one command)"
        );
    }

    #[test]
    fn table_of_errors() {
        let cases: &[(&str, &str)] = &[
            ("", "Please provide content"),
            ("- a\n", "1:1: root config should be a hash"),
            (
                "j:\n  script: [1]\n",
                "2:12: jobs:j:script config should be a string",
            ),
            ("j: 5\n", "1:1: jobs:j config should be a hash"),
            (
                "j:\n  script: x\n  stage: nope\n",
                "3:10: jobs:j chosen stage nope does not exist",
            ),
            (
                "j:\n  script: x\n  scirpt: y\n",
                "3:3: jobs:j config contains unknown keys: scirpt",
            ),
            (
                "j:\n  script: x\n  timeout: forever\n",
                "3:12: jobs:j:timeout config should be a duration",
            ),
            (
                "j:\n  script: x\n  when: sometimes\n",
                "3:9: jobs:j:when config should be one of",
            ),
            (
                "j:\n  script: x\n  only: [main]\n",
                "3:3: jobs:j:only config is not supported",
            ),
            ("j:\n  script: x\n  rules: []\n", "no jobs would run"),
            (
                "j:\n  script: x\n  variables: [a]\n",
                "3:14: jobs:j:variables config should be a hash",
            ),
            (
                "j:\n  script: x\n  tags: a\n",
                "3:9: jobs:j:tags config should be an array of strings",
            ),
            (
                "j:\n  script: x\n  allow_failure: maybe\n",
                "3:18: jobs:j:allow_failure config should be a boolean",
            ),
            (
                "j:\n  script: x\n  image: [a]\n",
                "3:10: jobs:j:image config should be a hash or a string",
            ),
            (
                "stages: build\nj:\n  script: x\n",
                "1:9: stages config should be an array of strings",
            ),
            (
                ".hidden:\n  script: x\n",
                "jobs config should contain at least one visible job",
            ),
            (
                "include: x.yml\nj:\n  script: x\n",
                "1:10: Local file `x.yml` does not exist!",
            ),
            (
                "j:\n  script: x\nj:\n  script: y\n",
                "3:1: duplicate key \"j\" (first defined at 1:1)",
            ),
            ("j:\n  script:\n    - a\n   - b\n", "4:4: YAML syntax error"),
            (
                "j:\n  script: []\n",
                "2:11: jobs:j:script config should not be empty",
            ),
            ("j:\n  script: *nope\n", "YAML syntax error"),
            ("j: &a\n  script: x\n  <<: 5\n", "merge key"),
        ];
        for (src, want) in cases {
            let got = lint(src);
            assert!(
                got.contains(want),
                "for {src:?}: got {got:?}, want {want:?}"
            );
        }
    }
}
