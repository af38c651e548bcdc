//! Whole-file transformations applied before jobs are parsed, in GitLab's
//! order: `include:` (local files only) is merged under the main file, then
//! `!reference [job, key, …]` tags are replaced by what they point at, then
//! `extends:` is resolved (deep merge of hashes, arrays replaced, multi-level
//! and lists of parents, at most 11 levels).

use std::collections::HashMap;

use super::lint::Pos;
use super::lint::{Ctx, UNSUPPORTED_HINT};
use super::yaml::{Node, Value};

/// GitLab's limits: nested includes, `!reference` depth, `extends` depth.
const MAX_INCLUDE_DEPTH: usize = 100;
const MAX_INCLUDES: usize = 150;
const MAX_REFERENCE_DEPTH: usize = 10;
const MAX_EXTENDS_DEPTH: usize = 11;

/// Deep merge: hashes are merged key by key (`over` wins), anything else is
/// replaced by `over`.
pub(super) fn deep_merge(base: &Node, over: &Node) -> Node {
    match (&base.value, &over.value) {
        (Value::Map(b), Value::Map(o)) => {
            let mut out: Vec<(Node, Node)> = b.clone();
            for (k, v) in o {
                let ks = k.scalar_string();
                match out.iter_mut().find(|(x, _)| x.scalar_string() == ks) {
                    Some((_, existing)) => *existing = deep_merge(existing, v),
                    None => out.push((k.clone(), v.clone())),
                }
            }
            Node {
                pos: over.pos,
                value: Value::Map(out),
            }
        }
        _ => over.clone(),
    }
}

fn without_key(n: &Node, key: &str) -> Node {
    match &n.value {
        Value::Map(m) => Node {
            pos: n.pos,
            value: Value::Map(
                m.iter()
                    .filter(|(k, _)| k.scalar_string().as_deref() != Some(key))
                    .cloned()
                    .collect(),
            ),
        },
        _ => n.clone(),
    }
}

/// Apply all three steps. Problems are recorded in `cx`.
pub(super) fn preprocess(
    cx: &mut Ctx<'_>,
    root: Node,
    read_file: &dyn Fn(&str) -> Option<String>,
) -> Node {
    let mut count = 0;
    let root = includes(cx, root, read_file, 0, &mut count);
    let snapshot = root.clone();
    let root = references(cx, &root, &snapshot, 0);
    extends(cx, root)
}

// ---------------------------------------------------------------------------
// include
// ---------------------------------------------------------------------------

fn includes(
    cx: &mut Ctx<'_>,
    root: Node,
    read_file: &dyn Fn(&str) -> Option<String>,
    depth: usize,
    count: &mut usize,
) -> Node {
    let Some(inc) = root.get("include").cloned() else {
        return root;
    };
    let entries: Vec<Node> = match inc.value {
        Value::Seq(items) => items,
        _ => vec![inc],
    };
    let mut base: Option<Node> = None;
    for e in entries {
        let (path, pos) = match &e.value {
            Value::Str(s) => (Some(s.clone()), e.pos),
            Value::Map(m) => {
                let mut local = None;
                for (k, v) in m {
                    match k.scalar_string().unwrap_or_default().as_str() {
                        "local" => local = v.as_str().map(str::to_string),
                        "rules" | "inputs" => cx.err(
                            k.pos,
                            format!("include:{} is not supported by mock-gitlab yet", k.scalar_string().unwrap_or_default()),
                            Some(UNSUPPORTED_HINT),
                        ),
                        other @ ("remote" | "project" | "template" | "component" | "file" | "ref") => cx.err(
                            k.pos,
                            format!("include:{other} is not supported by mock-gitlab yet (only include:local)"),
                            Some(UNSUPPORTED_HINT),
                        ),
                        other => cx.err(
                            k.pos,
                            format!("include config contains unknown keys: {other}"),
                            None,
                        ),
                    }
                }
                (local, e.pos)
            }
            _ => {
                cx.err(
                    e.pos,
                    "include config should be a string, a hash or an array of them",
                    None,
                );
                continue;
            }
        };
        let Some(path) = path else {
            continue;
        };
        if path.contains("://") {
            cx.err(
                pos,
                format!("include {path}: remote includes are not supported by mock-gitlab yet"),
                Some(UNSUPPORTED_HINT),
            );
            continue;
        }
        if path.contains('*') {
            cx.err(
                pos,
                format!("include {path}: wildcard includes are not supported by mock-gitlab yet"),
                Some(UNSUPPORTED_HINT),
            );
            continue;
        }
        *count += 1;
        if depth >= MAX_INCLUDE_DEPTH || *count > MAX_INCLUDES {
            cx.err(
                pos,
                format!("Maximum of {MAX_INCLUDES} nested includes are allowed"),
                None,
            );
            return without_key(&root, "include");
        }
        let rel = path.trim_start_matches('/');
        let Some(src) = read_file(rel) else {
            cx.err(
                pos,
                format!("Local file `{path}` does not exist!"),
                Some("include:local paths are relative to the repository root"),
            );
            continue;
        };
        let node = match super::yaml::parse(&src, rel) {
            Ok(Some(n)) if n.as_map().is_some() => n,
            Ok(_) => {
                cx.err(
                    pos,
                    format!("Local file `{path}` does not have valid YAML syntax (not a hash)"),
                    None,
                );
                continue;
            }
            Err(e) => {
                cx.errors.extend(e.diagnostics);
                continue;
            }
        };
        let node = includes(cx, node, read_file, depth + 1, count);
        base = Some(match base {
            Some(b) => deep_merge(&b, &node),
            None => node,
        });
    }
    let main = without_key(&root, "include");
    match base {
        Some(b) => deep_merge(&b, &main),
        None => main,
    }
}

// ---------------------------------------------------------------------------
// !reference
// ---------------------------------------------------------------------------

fn lookup<'a>(root: &'a Node, path: &[String]) -> Option<&'a Node> {
    let mut cur = root;
    for p in path {
        cur = cur.get(p)?;
    }
    Some(cur)
}

fn references(cx: &mut Ctx<'_>, n: &Node, root: &Node, depth: usize) -> Node {
    match &n.value {
        Value::Tagged(tag, inner) if tag == "!reference" => {
            let path: Option<Vec<String>> = match &inner.value {
                Value::Seq(items) if !items.is_empty() => items
                    .iter()
                    .map(|i| i.as_str().map(str::to_string))
                    .collect(),
                _ => None,
            };
            let Some(path) = path else {
                cx.err(
                    n.pos,
                    "!reference needs an array of strings, e.g. !reference [.setup, script]",
                    None,
                );
                return Node {
                    pos: n.pos,
                    value: Value::Null,
                };
            };
            if depth >= MAX_REFERENCE_DEPTH {
                cx.err(
                    n.pos,
                    format!("!reference {path:?} is nested more than {MAX_REFERENCE_DEPTH} levels"),
                    None,
                );
                return Node {
                    pos: n.pos,
                    value: Value::Null,
                };
            }
            match lookup(root, &path) {
                Some(target) => {
                    let resolved = references(cx, target, root, depth + 1);
                    Node {
                        pos: n.pos,
                        value: resolved.value,
                    }
                }
                None => {
                    cx.err(
                        n.pos,
                        format!("!reference [{}] could not be found", path.join(", ")),
                        Some("check the job name and key path"),
                    );
                    Node {
                        pos: n.pos,
                        value: Value::Null,
                    }
                }
            }
        }
        Value::Seq(items) => Node {
            pos: n.pos,
            value: Value::Seq(
                items
                    .iter()
                    .map(|i| references(cx, i, root, depth))
                    .collect(),
            ),
        },
        Value::Map(entries) => Node {
            pos: n.pos,
            value: Value::Map(
                entries
                    .iter()
                    .map(|(k, v)| (k.clone(), references(cx, v, root, depth)))
                    .collect(),
            ),
        },
        _ => n.clone(),
    }
}

// ---------------------------------------------------------------------------
// extends
// ---------------------------------------------------------------------------

fn extends(cx: &mut Ctx<'_>, root: Node) -> Node {
    let Value::Map(entries) = &root.value else {
        return root;
    };
    let originals: HashMap<String, Node> = entries
        .iter()
        .filter_map(|(k, v)| Some((k.scalar_string()?, v.clone())))
        .collect();
    let mut done: HashMap<String, Node> = HashMap::new();
    let mut out = Vec::with_capacity(entries.len());
    for (k, v) in entries {
        let name = k.scalar_string().unwrap_or_default();
        if v.get("extends").is_some() {
            let mut stack = Vec::new();
            let resolved = resolve(cx, &originals, &name, k.pos, &mut stack, &mut done);
            out.push((k.clone(), resolved.unwrap_or_else(|| v.clone())));
        } else {
            out.push((k.clone(), v.clone()));
        }
    }
    Node {
        pos: root.pos,
        value: Value::Map(out),
    }
}

fn resolve(
    cx: &mut Ctx<'_>,
    all: &HashMap<String, Node>,
    name: &str,
    pos: Pos,
    stack: &mut Vec<String>,
    done: &mut HashMap<String, Node>,
) -> Option<Node> {
    if let Some(n) = done.get(name) {
        return Some(n.clone());
    }
    let node = all.get(name)?;
    let Some(ext) = node.get("extends") else {
        return Some(node.clone());
    };
    if stack.iter().any(|s| s == name) {
        cx.err(
            pos,
            format!("{name}: circular dependency detected in `extends`"),
            None,
        );
        return None;
    }
    if stack.len() >= MAX_EXTENDS_DEPTH {
        cx.err(
            pos,
            format!("{name}: nesting too deep in `extends` (more than {MAX_EXTENDS_DEPTH} levels)"),
            None,
        );
        return None;
    }
    let parents: Vec<String> = match &ext.value {
        Value::Str(s) => vec![s.clone()],
        Value::Seq(items) => match items
            .iter()
            .map(|i| i.as_str().map(str::to_string))
            .collect()
        {
            Some(v) => v,
            None => {
                cx.err(
                    ext.pos,
                    format!("jobs:{name}:extends should be a string or an array of strings"),
                    None,
                );
                return None;
            }
        },
        _ => {
            cx.err(
                ext.pos,
                format!("jobs:{name}:extends should be a string or an array of strings"),
                None,
            );
            return None;
        }
    };
    stack.push(name.to_string());
    let mut base: Option<Node> = None;
    for p in &parents {
        if !all.contains_key(p) {
            cx.err(
                ext.pos,
                format!("{name}: unknown keys in `extends` ({p})"),
                Some("the job or hidden job named in extends must exist in the file"),
            );
            continue;
        }
        if all.get(p).is_some_and(|n| n.as_map().is_none()) {
            cx.err(
                ext.pos,
                format!("{name}: invalid base hash in `extends` ({p})"),
                None,
            );
            continue;
        }
        let Some(resolved) = resolve(cx, all, p, ext.pos, stack, done) else {
            continue;
        };
        base = Some(match base {
            Some(b) => deep_merge(&b, &resolved),
            None => resolved,
        });
    }
    stack.pop();
    let own = without_key(node, "extends");
    let merged = match base {
        Some(b) => deep_merge(&b, &own),
        None => own,
    };
    // Keep the job's own position for error messages.
    let merged = Node {
        pos: node.pos,
        value: merged.value,
    };
    done.insert(name.to_string(), merged.clone());
    Some(merged)
}
