//! Parsers of the job keywords that go beyond scripts: `services`,
//! `artifacts`, `cache`, `needs`, `dependencies`, `retry`, `parallel`,
//! `rules` and `workflow`. Each records lint errors in GitLab's wording and
//! returns `None` (or a default) on error.

use super::basics::{
    parse_allow_failure, parse_image_like, parse_variables, parse_when, string_list,
};
use super::lint::{Ctx, UNSUPPORTED_HINT};
use super::model::{ArtifactsSpec, CacheKey, CacheSpec, ImageSpec, Need, RetrySpec, Rule, When};
use super::yaml::{Node, Value};

/// Report types the mock sends, with GitLab's format and default file name.
pub const REPORT_TYPES: &[(&str, &str, &str)] = &[
    ("junit", "gzip", "junit.xml.gz"),
    ("dotenv", "gzip", ".env.gz"),
];

/// A string or a list of strings.
fn one_or_list(n: &Node) -> Option<Vec<String>> {
    match &n.value {
        Value::Str(s) => Some(vec![s.clone()]),
        _ => string_list(n),
    }
}

fn bool_of(cx: &mut Ctx<'_>, n: &Node, what: &str) -> Option<bool> {
    match n.value {
        Value::Bool(b) => Some(b),
        _ => {
            cx.err(
                n.pos,
                format!("{what} config should be a boolean value"),
                None,
            );
            None
        }
    }
}

fn list_of(cx: &mut Ctx<'_>, n: &Node, what: &str) -> Option<Vec<String>> {
    let l = one_or_list(n);
    if l.is_none() {
        cx.err(
            n.pos,
            format!("{what} config should be an array of strings"),
            None,
        );
    }
    l
}

fn when_of(cx: &mut Ctx<'_>, n: &Node, what: &str) -> Option<String> {
    match n.as_str() {
        Some(w @ ("on_success" | "on_failure" | "always")) => Some(w.to_string()),
        _ => {
            cx.err(
                n.pos,
                format!("{what} config should be on_success, on_failure or always"),
                None,
            );
            None
        }
    }
}

fn unknown_key(cx: &mut Ctx<'_>, k: &Node, what: &str, allowed: &str) {
    cx.err(
        k.pos,
        format!(
            "{what} config contains unknown keys: {}",
            k.scalar_string().unwrap_or_default()
        ),
        Some(&format!("allowed: {allowed}")),
    );
}

pub(super) fn parse_services(cx: &mut Ctx<'_>, n: &Node, what: &str) -> Option<Vec<ImageSpec>> {
    let Value::Seq(items) = &n.value else {
        cx.err(
            n.pos,
            format!("{what} config should be a array"),
            Some("e.g. services: [postgres:16, {name: redis, alias: cache}]"),
        );
        return None;
    };
    let before = cx.errors.len();
    let out: Vec<ImageSpec> = items
        .iter()
        .filter_map(|i| parse_image_like(cx, i, what, true))
        .collect();
    (cx.errors.len() == before).then_some(out)
}

pub(super) fn parse_artifacts(cx: &mut Ctx<'_>, n: &Node, what: &str) -> Option<ArtifactsSpec> {
    let Some(map) = n.as_map() else {
        cx.err(n.pos, format!("{what} config should be a hash"), None);
        return None;
    };
    let before = cx.errors.len();
    let mut a = ArtifactsSpec {
        when: "on_success".into(),
        ..ArtifactsSpec::default()
    };
    for (k, v) in map {
        let key = k.scalar_string().unwrap_or_default();
        let w = format!("{what}:{key}");
        match key.as_str() {
            "paths" => a.paths = list_of(cx, v, &w).unwrap_or_default(),
            "exclude" => a.exclude = list_of(cx, v, &w).unwrap_or_default(),
            "name" => match v.scalar_string() {
                Some(s) if !matches!(v.value, Value::Seq(_) | Value::Map(_)) => a.name = Some(s),
                _ => cx.err(v.pos, format!("{w} config should be a string"), None),
            },
            "untracked" => a.untracked = bool_of(cx, v, &w).unwrap_or(false),
            "when" => a.when = when_of(cx, v, &w).unwrap_or_else(|| "on_success".into()),
            "expire_in" => match &v.value {
                Value::Str(s) => a.expire_in = Some(s.clone()),
                Value::Int(i) => a.expire_in = Some(format!("{i} sec")),
                _ => cx.err(v.pos, format!("{w} config should be a duration"), None),
            },
            "expose_as" | "public" | "access" => {}
            "reports" => {
                let Some(rm) = v.as_map() else {
                    cx.err(v.pos, format!("{w} config should be a hash"), None);
                    continue;
                };
                for (rk, rv) in rm {
                    let rt = rk.scalar_string().unwrap_or_default();
                    if REPORT_TYPES.iter().any(|(t, _, _)| *t == rt) {
                        if let Some(paths) = list_of(cx, rv, &format!("{w}:{rt}")) {
                            a.reports.push((rt, paths));
                        }
                    } else {
                        cx.err(
                            rk.pos,
                            format!("{w}:{rt} is not supported by mock-gitlab yet"),
                            Some("supported report types: junit, dotenv"),
                        );
                    }
                }
            }
            _ => unknown_key(
                cx,
                k,
                what,
                "paths, exclude, name, untracked, when, expire_in, expose_as, public, access, reports",
            ),
        }
    }
    (cx.errors.len() == before).then_some(a)
}

pub(super) fn parse_cache(cx: &mut Ctx<'_>, n: &Node, what: &str) -> Option<Vec<CacheSpec>> {
    let items: Vec<&Node> = match &n.value {
        Value::Seq(items) => items.iter().collect(),
        Value::Map(_) => vec![n],
        _ => {
            cx.err(
                n.pos,
                format!("{what} config should be a hash or an array of hashes"),
                None,
            );
            return None;
        }
    };
    if items.len() > 4 {
        cx.err(
            n.pos,
            format!("{what} config no more than 4 caches can be created"),
            None,
        );
        return None;
    }
    let before = cx.errors.len();
    let mut out = Vec::new();
    for item in items {
        let Some(map) = item.as_map() else {
            cx.err(item.pos, format!("{what} config should be a hash"), None);
            continue;
        };
        let mut c = CacheSpec {
            key: CacheKey::Plain("default".into()),
            paths: Vec::new(),
            untracked: false,
            policy: "pull-push".into(),
            when: "on_success".into(),
            fallback_keys: Vec::new(),
        };
        for (k, v) in map {
            let key = k.scalar_string().unwrap_or_default();
            let w = format!("{what}:{key}");
            match key.as_str() {
                "key" => match &v.value {
                    Value::Str(_) | Value::Int(_) => {
                        let s = v.scalar_string().unwrap_or_default();
                        if s.contains('/') || s == "." || s == ".." || s.contains("%2F") {
                            cx.err(
                                v.pos,
                                format!("{w} config cannot contain the \"/\" character"),
                                None,
                            );
                        }
                        c.key = CacheKey::Plain(s);
                    }
                    Value::Map(km) => {
                        let mut files = None;
                        let mut prefix = None;
                        for (kk, kv) in km {
                            match kk.scalar_string().unwrap_or_default().as_str() {
                                "files" => files = list_of(cx, kv, &format!("{w}:files")),
                                "prefix" => prefix = kv.scalar_string(),
                                _ => unknown_key(cx, kk, &w, "files, prefix"),
                            }
                        }
                        match files {
                            Some(f) if !f.is_empty() && f.len() <= 2 => {
                                c.key = CacheKey::Files { files: f, prefix }
                            }
                            _ => cx.err(
                                v.pos,
                                format!(
                                    "{w}:files config should be an array of one or two strings"
                                ),
                                None,
                            ),
                        }
                    }
                    _ => cx.err(
                        v.pos,
                        format!("{w} config should be a string or a hash"),
                        None,
                    ),
                },
                "paths" => c.paths = list_of(cx, v, &w).unwrap_or_default(),
                "untracked" => c.untracked = bool_of(cx, v, &w).unwrap_or(false),
                "policy" => match v.as_str() {
                    Some(p @ ("pull" | "push" | "pull-push")) => c.policy = p.to_string(),
                    _ => cx.err(
                        v.pos,
                        format!("{w} should be pull-push, push, or pull"),
                        None,
                    ),
                },
                "when" => c.when = when_of(cx, v, &w).unwrap_or_else(|| "on_success".into()),
                "fallback_keys" => c.fallback_keys = list_of(cx, v, &w).unwrap_or_default(),
                "unprotect" => {
                    bool_of(cx, v, &w);
                }
                _ => unknown_key(
                    cx,
                    k,
                    what,
                    "key, paths, untracked, policy, when, fallback_keys, unprotect",
                ),
            }
        }
        out.push(c);
    }
    (cx.errors.len() == before).then_some(out)
}

pub(super) fn parse_needs(cx: &mut Ctx<'_>, n: &Node, what: &str) -> Option<Vec<Need>> {
    let Value::Seq(items) = &n.value else {
        cx.err(n.pos, format!("{what} config should be an array"), None);
        return None;
    };
    let before = cx.errors.len();
    let mut out = Vec::new();
    for i in items {
        match &i.value {
            Value::Str(s) => out.push(Need {
                job: s.clone(),
                artifacts: true,
                optional: false,
            }),
            Value::Map(m) => {
                let mut need = Need {
                    job: String::new(),
                    artifacts: true,
                    optional: false,
                };
                for (k, v) in m {
                    let key = k.scalar_string().unwrap_or_default();
                    match key.as_str() {
                        "job" => match v.as_str() {
                            Some(s) => need.job = s.to_string(),
                            None => {
                                cx.err(v.pos, format!("{what}:job config should be a string"), None)
                            }
                        },
                        "artifacts" => {
                            need.artifacts =
                                bool_of(cx, v, &format!("{what}:artifacts")).unwrap_or(true)
                        }
                        "optional" => {
                            need.optional =
                                bool_of(cx, v, &format!("{what}:optional")).unwrap_or(false)
                        }
                        "pipeline" | "project" | "ref" | "parallel" => cx.err(
                            k.pos,
                            format!("{what}:{key} is not supported by mock-gitlab yet"),
                            Some(UNSUPPORTED_HINT),
                        ),
                        _ => unknown_key(cx, k, what, "job, artifacts, optional"),
                    }
                }
                if need.job.is_empty() && cx.errors.len() == before {
                    cx.err(i.pos, format!("{what} config should contain a job"), None);
                }
                out.push(need);
            }
            _ => cx.err(
                i.pos,
                format!("{what} config should be a string or a hash"),
                None,
            ),
        }
    }
    (cx.errors.len() == before).then_some(out)
}

pub(super) fn parse_dependencies(cx: &mut Ctx<'_>, n: &Node, what: &str) -> Option<Vec<String>> {
    let l = string_list(n);
    if l.is_none() {
        cx.err(
            n.pos,
            format!("{what} config should be an array of strings"),
            None,
        );
    }
    l
}

const RETRY_WHEN: &[&str] = &[
    "always",
    "unknown_failure",
    "script_failure",
    "api_failure",
    "stuck_or_timeout_failure",
    "runner_system_failure",
    "runner_unsupported",
    "stale_schedule",
    "job_execution_timeout",
    "archived_failure",
    "unmet_prerequisites",
    "scheduler_failure",
    "data_integrity_failure",
];

pub(super) fn parse_retry(cx: &mut Ctx<'_>, n: &Node, what: &str) -> Option<RetrySpec> {
    let max_of = |v: &Node| match v.value {
        Value::Int(i) if (0..=2).contains(&i) => Some(i as u32),
        _ => None,
    };
    match &n.value {
        Value::Int(_) => match max_of(n) {
            Some(max) => Some(RetrySpec {
                max,
                ..RetrySpec::default()
            }),
            None => {
                cx.err(
                    n.pos,
                    format!("{what} config must be between 0 and 2"),
                    None,
                );
                None
            }
        },
        Value::Map(m) => {
            let before = cx.errors.len();
            let mut r = RetrySpec::default();
            for (k, v) in m {
                match k.scalar_string().unwrap_or_default().as_str() {
                    "max" => match max_of(v) {
                        Some(x) => r.max = x,
                        None => cx.err(
                            v.pos,
                            format!("{what}:max config must be between 0 and 2"),
                            None,
                        ),
                    },
                    "when" => match one_or_list(v) {
                        Some(l) => {
                            for w in &l {
                                if !RETRY_WHEN.contains(&w.as_str()) {
                                    cx.err(v.pos, format!("{what}:when unknown value: {w}"), None);
                                }
                            }
                            r.when = l;
                        }
                        None => cx.err(
                            v.pos,
                            format!("{what}:when config should be a string or an array of strings"),
                            None,
                        ),
                    },
                    "exit_codes" => {
                        let codes: Option<Vec<i32>> = match &v.value {
                            Value::Int(i) => i32::try_from(*i).ok().map(|c| vec![c]),
                            Value::Seq(items) => items
                                .iter()
                                .map(|i| match i.value {
                                    Value::Int(c) => i32::try_from(c).ok(),
                                    _ => None,
                                })
                                .collect(),
                            _ => None,
                        };
                        match codes {
                            Some(c) => r.exit_codes = c,
                            None => cx.err(v.pos, format!("{what}:exit_codes config should be an integer or an array of integers"), None),
                        }
                    }
                    _ => unknown_key(cx, k, what, "max, when, exit_codes"),
                }
            }
            (cx.errors.len() == before).then_some(r)
        }
        _ => {
            cx.err(
                n.pos,
                format!("{what} config should be a hash or an integer"),
                None,
            );
            None
        }
    }
}

/// `parallel:`: a count, or the combinations of a matrix (each a list of
/// (variable, value), in key order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parallel {
    Count(u32),
    Matrix(Vec<Vec<(String, String)>>),
}

pub(super) fn parse_parallel(cx: &mut Ctx<'_>, n: &Node, what: &str) -> Option<Parallel> {
    match &n.value {
        Value::Int(i) if (1..=200).contains(i) => Some(Parallel::Count(*i as u32)),
        Value::Int(_) => {
            cx.err(
                n.pos,
                format!(
                    "{what} config must be greater than or equal to 1 and less than or equal to 200"
                ),
                None,
            );
            None
        }
        Value::Map(m) => {
            let matrix = m
                .iter()
                .find(|(k, _)| k.as_str() == Some("matrix"))
                .map(|(_, v)| v);
            if m.len() != 1 || matrix.is_none() {
                cx.err(
                    n.pos,
                    format!("{what} config should be an integer or a hash with matrix"),
                    None,
                );
                return None;
            }
            let Some(Value::Seq(entries)) = matrix.map(|x| &x.value) else {
                cx.err(
                    n.pos,
                    format!("{what}:matrix config should be an array of hashes"),
                    None,
                );
                return None;
            };
            let mut combos: Vec<Vec<(String, String)>> = Vec::new();
            for e in entries {
                let Some(em) = e.as_map() else {
                    cx.err(
                        e.pos,
                        format!("{what}:matrix config should be an array of hashes"),
                        None,
                    );
                    return None;
                };
                let mut partial: Vec<Vec<(String, String)>> = vec![Vec::new()];
                for (k, v) in em {
                    let key = k.scalar_string().unwrap_or_default();
                    let values: Option<Vec<String>> = match &v.value {
                        Value::Seq(items) => items
                            .iter()
                            .map(|i| match i.value {
                                Value::Str(_) | Value::Int(_) | Value::Float(_) => {
                                    i.scalar_string()
                                }
                                _ => None,
                            })
                            .collect(),
                        Value::Str(_) | Value::Int(_) | Value::Float(_) => {
                            v.scalar_string().map(|s| vec![s])
                        }
                        _ => None,
                    };
                    let Some(values) = values else {
                        cx.err(
                            v.pos,
                            format!(
                                "{what}:matrix:{key} should be a string or an array of strings"
                            ),
                            None,
                        );
                        return None;
                    };
                    partial = partial
                        .into_iter()
                        .flat_map(|p| {
                            let key = &key;
                            values.iter().map(move |val| {
                                let mut q = p.clone();
                                q.push((key.clone(), val.clone()));
                                q
                            })
                        })
                        .collect();
                }
                combos.extend(partial);
            }
            if combos.is_empty() || combos.len() > 200 {
                cx.err(
                    n.pos,
                    format!("{what}:matrix config generates too many jobs (maximum is 200)"),
                    None,
                );
                return None;
            }
            Some(Parallel::Matrix(combos))
        }
        _ => {
            cx.err(
                n.pos,
                format!("{what} config should be an integer or a hash"),
                None,
            );
            None
        }
    }
}

pub(super) fn parse_rules(cx: &mut Ctx<'_>, n: &Node, what: &str) -> Option<Vec<Rule>> {
    let Value::Seq(items) = &n.value else {
        cx.err(
            n.pos,
            format!("{what} config should be an array of hashes"),
            None,
        );
        return None;
    };
    let before = cx.errors.len();
    let mut out = Vec::new();
    for i in items {
        let Some(m) = i.as_map() else {
            cx.err(
                i.pos,
                format!("{what} config should be an array of hashes"),
                None,
            );
            continue;
        };
        let mut r = Rule::default();
        for (k, v) in m {
            let key = k.scalar_string().unwrap_or_default();
            let w = format!("{what}:{key}");
            match key.as_str() {
                "if" => match v.as_str() {
                    Some(s) => {
                        if let Err(e) = super::rules::eval_if(s, &|_| None) {
                            cx.err(v.pos, format!("{w} invalid expression syntax: {e}"), None);
                        }
                        r.if_expr = Some(s.to_string());
                    }
                    None => cx.err(v.pos, format!("{w} config should be a string"), None),
                },
                "changes" => {
                    let ok =
                        one_or_list(v).is_some() || v.get("paths").and_then(one_or_list).is_some();
                    if !ok {
                        cx.err(
                            v.pos,
                            format!(
                                "{w} config should be an array of strings or a hash with paths"
                            ),
                            None,
                        );
                    }
                    r.changes = true;
                }
                "exists" => {
                    let l = one_or_list(v).or_else(|| v.get("paths").and_then(one_or_list));
                    match l {
                        Some(l) => r.exists = Some(l),
                        None => cx.err(
                            v.pos,
                            format!(
                                "{w} config should be an array of strings or a hash with paths"
                            ),
                            None,
                        ),
                    }
                }
                "when" => {
                    let wv = parse_when(cx, v, &w);
                    if wv == When::Delayed {
                        // It would need rules:start_in, which is not implemented.
                        cx.err(
                            v.pos,
                            format!("{w} delayed is not supported by mock-gitlab yet"),
                            Some("use a job-level `when: delayed` with `start_in:`"),
                        );
                    }
                    r.when = Some(wv);
                }
                "allow_failure" => r.allow_failure = Some(parse_allow_failure(cx, v, &w)),
                "variables" => r.variables = parse_variables(cx, v, &w),
                "needs" | "start_in" | "interruptible" => cx.err(
                    k.pos,
                    format!("{w} is not supported by mock-gitlab yet"),
                    Some(UNSUPPORTED_HINT),
                ),
                _ => unknown_key(
                    cx,
                    k,
                    what,
                    "if, changes, exists, when, allow_failure, variables",
                ),
            }
        }
        out.push(r);
    }
    (cx.errors.len() == before).then_some(out)
}

/// `workflow:` → its rules (`name` and `auto_cancel` are accepted and ignored).
pub(super) fn parse_workflow(cx: &mut Ctx<'_>, n: &Node) -> Option<Vec<Rule>> {
    let Some(m) = n.as_map() else {
        cx.err(n.pos, "workflow config should be a hash", None);
        return None;
    };
    let mut rules = None;
    for (k, v) in m {
        match k.scalar_string().unwrap_or_default().as_str() {
            "rules" => rules = parse_rules(cx, v, "workflow:rules"),
            "name" | "auto_cancel" => {}
            _ => unknown_key(cx, k, "workflow", "rules, name, auto_cancel"),
        }
    }
    rules
}
