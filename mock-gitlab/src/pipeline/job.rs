//! One job and the `default` section: which keywords are supported, and the job's spec with
//! the defaults applied.

use super::basics::{
    parse_allow_failure, parse_image, parse_script, parse_tags, parse_timeout, parse_variables,
    parse_when,
};
use super::duration::parse_duration;
use super::keywords;
use super::lint::{Ctx, Pos, UNSUPPORTED_HINT};
use super::model::{
    AllowFailure, ArtifactsSpec, CacheSpec, DEFAULT_TIMEOUT_S, ImageSpec, JobSpec, RetrySpec, When,
};
use super::yaml::{Node, Value};

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
pub(super) struct Defaults {
    pub(super) before_script: Option<Vec<String>>,
    pub(super) after_script: Option<Vec<String>>,
    pub(super) image: Option<ImageSpec>,
    pub(super) services: Option<Vec<ImageSpec>>,
    pub(super) artifacts: Option<ArtifactsSpec>,
    pub(super) cache: Option<Vec<CacheSpec>>,
    pub(super) retry: Option<RetrySpec>,
    pub(super) interruptible: Option<bool>,
    pub(super) timeout_s: Option<u64>,
    pub(super) tags: Option<Vec<String>>,
}

pub(super) fn parse_default(cx: &mut Ctx<'_>, d: &Node, defaults: &mut Defaults) {
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

pub(super) fn parse_job(
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
