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

pub use super::model::{
    AllowFailure, ArtifactsSpec, CacheKey, CacheSpec, CiConfig, DEFAULT_STAGES, DEFAULT_TIMEOUT_S,
    ImageSpec, JobSpec, Need, RetrySpec, Rule, Variable, When,
};

use super::basics::{parse_image, parse_script, parse_variables, string_list};
use super::job::{Defaults, parse_default, parse_job};
use super::keywords;
use super::lint::{Ctx, LintError, UNSUPPORTED_HINT};

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
