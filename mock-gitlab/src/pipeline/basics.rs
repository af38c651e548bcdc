//! Parsers of the basic keywords that jobs and `default` share: scripts, tags, `timeout`,
//! `when`, `allow_failure`, images and `variables`. Each records lint errors in GitLab's
//! wording and returns `None` (or a default) on error.

use super::duration::parse_duration;
use super::lint::{Ctx, Pos, UNSUPPORTED_HINT};
use super::model::{AllowFailure, ImageSpec, Variable, When};
use super::yaml::{Node, Value};

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
