//! `.gitlab-ci.yml` → `CiConfig`, with GitLab-lint-like diagnostics.
//!
//! Supported now: `stages`, top-level `variables`, `default` (before_script,
//! after_script, image, timeout, tags, interruptible), the deprecated global
//! `image`/`before_script`/`after_script`, and per job `stage`, `script`,
//! `before_script`, `after_script`, `variables`, `image`, `timeout`, `tags`,
//! `allow_failure` (bool or `exit_codes`), `when`. GitLab keywords the mock does
//! not implement yet are reported as errors rather than silently ignored, so a
//! test never passes for the wrong reason.

use super::duration::parse_duration;
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

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSpec {
    pub name: String,
    pub entrypoint: Option<Vec<String>>,
    pub pull_policy: Option<Vec<String>>,
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
const TOP_LEVEL_UNSUPPORTED: &[&str] = &["include", "services", "cache", "workflow"];

const JOB_SUPPORTED: &[&str] = &[
    "stage",
    "script",
    "before_script",
    "after_script",
    "variables",
    "image",
    "timeout",
    "tags",
    "allow_failure",
    "when",
    // Accepted and ignored: no effect on what a runner sees.
    "interruptible",
    "coverage",
    "environment",
    "resource_group",
];
const JOB_UNSUPPORTED: &[&str] = &[
    "artifacts",
    "cache",
    "services",
    "dependencies",
    "needs",
    "rules",
    "only",
    "except",
    "extends",
    "trigger",
    "parallel",
    "release",
    "secrets",
    "hooks",
    "pages",
    "inherit",
    "start_in",
    "run",
    "retry",
    "identity",
    "id_tokens",
    "manual_confirmation",
    "dast_configuration",
];
const DEFAULT_SUPPORTED: &[&str] = &[
    "before_script",
    "after_script",
    "image",
    "timeout",
    "tags",
    "interruptible",
];
const DEFAULT_UNSUPPORTED: &[&str] = &[
    "artifacts",
    "cache",
    "hooks",
    "id_tokens",
    "retry",
    "services",
];

/// Defaults applying to every job.
#[derive(Default)]
struct Defaults {
    before_script: Option<Vec<String>>,
    after_script: Option<Vec<String>>,
    image: Option<ImageSpec>,
    timeout_s: Option<u64>,
    tags: Option<Vec<String>>,
}

struct Ctx<'a> {
    file: &'a str,
    errors: Vec<Diagnostic>,
}

impl Ctx<'_> {
    fn err(&mut self, pos: Pos, message: impl Into<String>, hint: Option<&str>) {
        self.errors
            .push(Diagnostic::new(self.file, Some(pos), message.into(), hint));
    }
}

const UNSUPPORTED_HINT: &str =
    "mock-gitlab does not implement this keyword yet; remove it or extend mock-gitlab/src/pipeline";

/// Parse and validate a CI configuration.
pub fn parse_config(src: &str, file: &str) -> Result<CiConfig, LintError> {
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
    let Some(map) = root.as_map() else {
        cx.err(
            root.pos,
            format!("root config should be a hash, not {}", root.type_name()),
            Some("the file must be a mapping of keywords and job names"),
        );
        return Err(LintError {
            diagnostics: cx.errors,
        });
    };

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
    let variables = match root.get("variables") {
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
    if let Some(d) = root.get("default") {
        parse_default(&mut cx, d, &mut defaults);
    }

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
        if let Some(job) = parse_job(&mut cx, &name, k.pos, v, &defaults, &all_stages)
            && job.when != When::Never
        {
            jobs.push(job);
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
    if jobs.is_empty() {
        // Every job is `when: never`: GitLab refuses to create an empty pipeline.
        return Err(LintError::general(
            file,
            "no jobs would run in this pipeline",
            Some("all jobs are `when: never`"),
        ));
    }
    Ok(CiConfig {
        stages: all_stages,
        variables,
        jobs,
    })
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
) -> Option<JobSpec> {
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
    let allow_failure = match v.get("allow_failure") {
        Some(n) => parse_allow_failure(cx, n, &format!("{prefix}:allow_failure")),
        None => AllowFailure::default(),
    };
    let when = match v.get("when") {
        Some(n) => parse_when(cx, n, &format!("{prefix}:when")),
        None => When::OnSuccess,
    };

    if cx.errors.len() > errors_before {
        return None;
    }
    Some(JobSpec {
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
    })
}

/// A string, or a (nested, up to 10 levels) array of strings, flattened.
fn parse_script(cx: &mut Ctx<'_>, n: &Node, what: &str) -> Option<Vec<String>> {
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

fn string_list(n: &Node) -> Option<Vec<String>> {
    match &n.value {
        Value::Seq(items) => items
            .iter()
            .map(|i| i.as_str().map(str::to_string))
            .collect(),
        _ => None,
    }
}

fn parse_tags(cx: &mut Ctx<'_>, n: &Node, what: &str) -> Option<Vec<String>> {
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

fn parse_timeout(cx: &mut Ctx<'_>, n: &Node, what: &str) -> Option<u64> {
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

fn parse_when(cx: &mut Ctx<'_>, n: &Node, what: &str) -> When {
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
        Some(When::Delayed) => {
            cx.err(
                n.pos,
                format!("{what} delayed is not supported by mock-gitlab yet"),
                Some(UNSUPPORTED_HINT),
            );
            When::Delayed
        }
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

fn parse_allow_failure(cx: &mut Ctx<'_>, n: &Node, what: &str) -> AllowFailure {
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

fn parse_image(cx: &mut Ctx<'_>, n: &Node, what: &str) -> Option<ImageSpec> {
    match &n.value {
        Value::Str(s) => Some(ImageSpec {
            name: s.clone(),
            entrypoint: None,
            pull_policy: None,
        }),
        Value::Map(map) => {
            let mut ok = true;
            let mut name = None;
            let mut entrypoint = None;
            let mut pull_policy = None;
            for (k, v) in map {
                match k.scalar_string().unwrap_or_default().as_str() {
                    "name" => match v.as_str() {
                        Some(s) => name = Some(s.to_string()),
                        None => {
                            cx.err(
                                v.pos,
                                format!("{what}:name config should be a string"),
                                None,
                            );
                            ok = false;
                        }
                    },
                    "entrypoint" => match string_list(v) {
                        Some(l) => entrypoint = Some(l),
                        None => {
                            cx.err(
                                v.pos,
                                format!("{what}:entrypoint config should be an array of strings"),
                                None,
                            );
                            ok = false;
                        }
                    },
                    "pull_policy" => {
                        // A single string or a list; the payload always carries a list.
                        let l = match &v.value {
                            Value::Str(s) => Some(vec![s.clone()]),
                            _ => string_list(v),
                        };
                        match l {
                            Some(l) => pull_policy = Some(l),
                            None => {
                                cx.err(
                                    v.pos,
                                    format!("{what}:pull_policy config should be a string or an array of strings"),
                                    None,
                                );
                                ok = false;
                            }
                        }
                    }
                    "docker" | "kubernetes" => {
                        cx.err(
                            k.pos,
                            format!("{what} executor options are not supported by mock-gitlab yet"),
                            Some(UNSUPPORTED_HINT),
                        );
                        ok = false;
                    }
                    other => {
                        cx.err(
                            k.pos,
                            format!("{what} config contains unknown keys: {other}"),
                            Some("allowed: name, entrypoint, pull_policy"),
                        );
                        ok = false;
                    }
                }
            }
            match name {
                Some(name) if ok => Some(ImageSpec {
                    name,
                    entrypoint,
                    pull_policy,
                }),
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

fn parse_variables(cx: &mut Ctx<'_>, n: &Node, what: &str) -> Vec<Variable> {
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
                "j:\n  script: x\n  rules: []\n",
                "3:3: jobs:j:rules config is not supported",
            ),
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
                "1:1: include config is not supported",
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
