//! YAML loading with positions.
//!
//! We use `saphyr-parser` (the event layer of the `saphyr` YAML 1.2 library)
//! and build the tree ourselves:
//! * every node keeps its line and column, not only parse errors, so lint
//!   messages for well-formed but invalid configs ("job has no script") can
//!   point at the offending key;
//! * the build is iterative with GitLab's depth limit (100): saphyr's own
//!   loader and tree drop recurse once per nesting level, and a hostile
//!   `- - - - …` overflowed the stack even on a 256 MiB thread;
//! * anchors/aliases are resolved with a node budget (no billion laughs),
//!   YAML merge keys (`<<: *anchor`, common in `.gitlab-ci.yml`, not part of
//!   YAML 1.2) are applied, duplicate keys are reported, and non-core tags
//!   such as GitLab's `!reference` are kept visible.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span, Tag};

pub use super::lint::Pos;
use super::lint::{Diagnostic, LintError};

/// GitLab refuses configs above 1 MiB (`Gitlab::Config::Loader::Yaml::MAX_YAML_SIZE`).
pub const MAX_YAML_SIZE: usize = 1024 * 1024;
/// GitLab refuses configs nested deeper than 100 levels (`MAX_YAML_DEPTH`).
pub const MAX_YAML_DEPTH: usize = 100;
/// Nodes that alias expansion and merge keys may produce in total.
pub const ALIAS_BUDGET: usize = 100_000;

#[derive(Clone, Debug)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
    /// A node with an explicit non-core tag such as `!reference`.
    Tagged(String, Box<Node>),
}

#[derive(Clone, Debug)]
pub struct Node {
    pub pos: Pos,
    pub value: Value,
}

impl Node {
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// A scalar rendered as a string the way GitLab would see it as a key
    /// or a variable value.
    pub fn scalar_string(&self) -> Option<String> {
        match &self.value {
            Value::Str(s) => Some(s.clone()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(f.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Null => Some(String::new()),
            _ => None,
        }
    }

    /// Look up a key of a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.scalar_string().as_deref() == Some(key))
            .map(|(_, v)| v)
    }

    pub fn type_name(&self) -> &'static str {
        match &self.value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int(_) => "integer",
            Value::Float(_) => "float",
            Value::Str(_) => "string",
            Value::Seq(_) => "array",
            Value::Map(_) => "hash",
            Value::Tagged(..) => "tagged value",
        }
    }

    /// Number of nodes in this subtree, counting at most `limit + 1`.
    /// Iterative: trees are at most `MAX_YAML_DEPTH` deep anyway, but this
    /// stays cheap for wide ones.
    fn size_capped(&self, limit: usize) -> usize {
        let mut count = 0;
        let mut stack = vec![self];
        while let Some(n) = stack.pop() {
            count += 1;
            if count > limit {
                break;
            }
            match &n.value {
                Value::Seq(items) => stack.extend(items.iter()),
                Value::Map(entries) => {
                    for (k, v) in entries {
                        stack.push(k);
                        stack.push(v);
                    }
                }
                Value::Tagged(_, inner) => stack.push(inner),
                _ => {}
            }
        }
        count
    }
}

/// Parse a YAML document. `Ok(None)` means the file holds no document.
///
/// A GitLab config may start with a `spec:` header document; the pipeline
/// configuration is then the second document.
pub fn parse(src: &str, file: &str) -> Result<Option<Node>, LintError> {
    if src.len() > MAX_YAML_SIZE {
        return Err(LintError::single(Diagnostic::new(
            file,
            None,
            format!(
                "config is too big ({} bytes, the limit is {MAX_YAML_SIZE})",
                src.len()
            ),
            Some("split the configuration or remove unused parts"),
        )));
    }
    // The loader is iterative and depth-limited; this only guards against a
    // bug in the parser library taking the server down.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| load(src, file)));
    let docs = match result {
        Ok(r) => r?,
        Err(_) => {
            return Err(LintError::single(Diagnostic::new(
                file,
                None,
                "the YAML parser failed on this input".to_string(),
                Some("simplify the file; this is a bug in the YAML library"),
            )));
        }
    };
    let mut docs = docs.into_iter();
    let Some(first) = docs.next() else {
        return Ok(None);
    };
    match docs.next() {
        Some(second) if first.get("spec").is_some() => Ok(Some(second)),
        _ => Ok(Some(first)),
    }
}

fn pos_of(span: &Span) -> Pos {
    Pos {
        line: span.start.line().max(1),
        column: span.start.col() + 1,
    }
}

struct Frame {
    pos: Pos,
    anchor: usize,
    tag: Option<Tag>,
    kind: FrameKind,
}

enum FrameKind {
    Seq(Vec<Node>),
    Map {
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
    },
}

struct Loader<'f> {
    file: &'f str,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    budget: usize,
    docs: Vec<Node>,
}

impl Loader<'_> {
    fn err(&self, pos: Option<Pos>, msg: impl Into<String>, hint: Option<&str>) -> LintError {
        LintError::single(Diagnostic::new(self.file, pos, msg.into(), hint))
    }

    fn spend(&mut self, n: usize, pos: Pos) -> Result<(), LintError> {
        if n > self.budget {
            return Err(self.err(
                Some(pos),
                "anchors and aliases expand to too many nodes",
                Some("reduce the use of nested aliases and merge keys"),
            ));
        }
        self.budget -= n;
        Ok(())
    }

    /// Attach a finished node to its parent (or make it a document root).
    fn push(&mut self, node: Node, anchor: usize) -> Result<(), LintError> {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        let Some(top) = self.stack.last_mut() else {
            self.docs.push(node);
            return Ok(());
        };
        match &mut top.kind {
            FrameKind::Seq(items) => items.push(node),
            FrameKind::Map { entries, key } => match key.take() {
                None => *key = Some(node),
                Some(k) => {
                    let ks = k.scalar_string();
                    if ks.as_deref() != Some("<<")
                        && let Some((prev, _)) = entries
                            .iter()
                            .find(|(pk, _)| ks.is_some() && pk.scalar_string() == ks)
                    {
                        let (line, col) = (prev.pos.line, prev.pos.column);
                        return Err(self.err(
                            Some(k.pos),
                            format!(
                                "duplicate key {:?} (first defined at {line}:{col})",
                                ks.unwrap_or_default()
                            ),
                            Some("remove or rename one of them"),
                        ));
                    }
                    entries.push((k, node));
                }
            },
        }
        Ok(())
    }

    fn finish_map(&mut self, pos: Pos, entries: Vec<(Node, Node)>) -> Result<Value, LintError> {
        if !entries.iter().any(|(k, _)| k.as_str() == Some("<<")) {
            return Ok(Value::Map(entries));
        }
        let mut out: Vec<(Node, Node)> = Vec::with_capacity(entries.len());
        let mut merged: Vec<(Node, Node)> = Vec::new();
        for (k, v) in entries {
            if k.as_str() != Some("<<") {
                out.push((k, v));
                continue;
            }
            let sources: Vec<Node> = match v.value {
                Value::Map(_) => vec![v],
                Value::Seq(items) => items,
                _ => {
                    return Err(self.err(
                        Some(v.pos),
                        "merge key `<<` needs a mapping or a list of mappings",
                        Some("use `<<: *anchor` with an anchored mapping"),
                    ));
                }
            };
            // Earlier sources win over later ones, as in YAML 1.1.
            for src in sources {
                let Value::Map(map) = src.value else {
                    return Err(self.err(
                        Some(src.pos),
                        "merge key `<<` needs a mapping or a list of mappings",
                        Some("use `<<: *anchor` with an anchored mapping"),
                    ));
                };
                for (mk, mv) in map {
                    let ks = mk.scalar_string();
                    if !merged.iter().any(|(x, _)| x.scalar_string() == ks) {
                        merged.push((mk, mv));
                    }
                }
            }
        }
        // Explicit keys win over merged ones.
        for (k, v) in merged {
            let ks = k.scalar_string();
            if !out.iter().any(|(ok, _)| ok.scalar_string() == ks) {
                let n = k.size_capped(self.budget) + v.size_capped(self.budget);
                self.spend(n, pos)?;
                out.push((k, v));
            }
        }
        Ok(Value::Map(out))
    }
}

fn tag_name(t: &Tag) -> String {
    format!("{}{}", t.handle, t.suffix)
}

fn is_core(t: &Tag) -> bool {
    t.handle == "!!" || t.handle == "tag:yaml.org,2002:"
}

/// Wrap a finished collection in its tag, if it has a non-core one.
fn tagged(pos: Pos, value: Value, tag: Option<Tag>) -> Node {
    match tag {
        Some(t) if !is_core(&t) => Node {
            pos,
            value: Value::Tagged(tag_name(&t), Box::new(Node { pos, value })),
        },
        _ => Node { pos, value },
    }
}

/// YAML 1.2 core schema resolution of a plain scalar.
fn resolve_plain(s: &str) -> Value {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Value::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    if let Some(i) = parse_int(s) {
        return Value::Int(i);
    }
    let float_like = s
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
        && s.chars().any(|c| c.is_ascii_digit());
    if float_like && let Ok(f) = s.parse::<f64>() {
        return Value::Float(f);
    }
    Value::Str(s.to_string())
}

fn parse_int(s: &str) -> Option<i64> {
    if let Some(h) = s.strip_prefix("0x") {
        return i64::from_str_radix(h, 16).ok();
    }
    if let Some(o) = s.strip_prefix("0o") {
        return i64::from_str_radix(o, 8).ok();
    }
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn scalar_value(
    text: &str,
    style: ScalarStyle,
    tag: Option<&Tag>,
    pos: Pos,
    file: &str,
) -> Result<Node, LintError> {
    let bad = |what: &str| {
        LintError::single(Diagnostic::new(
            file,
            Some(pos),
            format!("{text:?} is not a valid {what}"),
            Some("fix the value or remove the tag"),
        ))
    };
    let value = match tag {
        Some(t) if is_core(t) => match t.suffix.as_str() {
            "str" => Value::Str(text.to_string()),
            "int" => Value::Int(parse_int(text).ok_or_else(|| bad("integer"))?),
            "float" => match resolve_plain(text) {
                Value::Float(f) => Value::Float(f),
                Value::Int(i) => Value::Float(i as f64),
                _ => return Err(bad("float")),
            },
            "bool" => match resolve_plain(text) {
                Value::Bool(b) => Value::Bool(b),
                _ => return Err(bad("boolean")),
            },
            "null" => Value::Null,
            _ => Value::Str(text.to_string()),
        },
        Some(t) => {
            let inner = Node {
                pos,
                value: Value::Str(text.to_string()),
            };
            Value::Tagged(tag_name(t), Box::new(inner))
        }
        None if style == ScalarStyle::Plain => resolve_plain(text),
        None => Value::Str(text.to_string()),
    };
    Ok(Node { pos, value })
}

fn load(src: &str, file: &str) -> Result<Vec<Node>, LintError> {
    let mut l = Loader {
        file,
        stack: Vec::new(),
        anchors: HashMap::new(),
        budget: ALIAS_BUDGET,
        docs: Vec::new(),
    };
    for ev in Parser::new_from_str(src) {
        let (ev, span) = match ev {
            Ok(x) => x,
            Err(e) => {
                let m = e.marker();
                return Err(l.err(
                    Some(Pos {
                        line: m.line().max(1),
                        column: m.col() + 1,
                    }),
                    format!("YAML syntax error: {}", e.info()),
                    Some("check the indentation and quoting around this position"),
                ));
            }
        };
        let pos = pos_of(&span);
        let is_seq = matches!(ev, Event::SequenceStart(..));
        match ev {
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart(_)
            | Event::DocumentEnd => {}
            Event::Scalar(text, style, anchor, tag) => {
                let node = scalar_value(&text, style, tag.as_deref(), pos, file)?;
                l.push(node, anchor)?;
            }
            Event::Alias(id) => {
                let Some(node) = l.anchors.get(&id).cloned() else {
                    return Err(l.err(
                        Some(pos),
                        "unknown alias",
                        Some("define the anchor (&name) before using it (*name)"),
                    ));
                };
                let n = node.size_capped(l.budget);
                l.spend(n, pos)?;
                // Keep the alias's position so errors inside point at the use.
                let node = Node { pos, ..node };
                l.push(node, 0)?;
            }
            Event::SequenceStart(anchor, tag) | Event::MappingStart(anchor, tag) => {
                if l.stack.len() >= MAX_YAML_DEPTH {
                    return Err(l.err(
                        Some(pos),
                        format!("config is nested too deeply (more than {MAX_YAML_DEPTH} levels)"),
                        Some("flatten the structure"),
                    ));
                }
                l.stack.push(Frame {
                    pos,
                    anchor,
                    tag: tag.map(|t| t.into_owned()),
                    kind: if is_seq {
                        FrameKind::Seq(Vec::new())
                    } else {
                        FrameKind::Map {
                            entries: Vec::new(),
                            key: None,
                        }
                    },
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(frame) = l.stack.pop() else {
                    return Err(l.err(Some(pos), "unbalanced YAML structure", None));
                };
                let value = match frame.kind {
                    FrameKind::Seq(items) => Value::Seq(items),
                    FrameKind::Map { entries, .. } => l.finish_map(frame.pos, entries)?,
                };
                let node = tagged(frame.pos, value, frame.tag);
                l.push(node, frame.anchor)?;
            }
        }
    }
    Ok(l.docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let n = parse("a:\n  b: 1\n", "x.yml").unwrap().unwrap();
        let b = n.get("a").unwrap().get("b").unwrap();
        assert_eq!(b.pos, Pos { line: 2, column: 6 });
        let (k, _) = &n.get("a").unwrap().as_map().unwrap()[0];
        assert_eq!(k.pos, Pos { line: 2, column: 3 });
    }

    #[test]
    fn merge_keys_apply_and_explicit_wins() {
        let src = ".base: &base\n  a: 1\n  b: 2\njob:\n  <<: *base\n  b: 3\n";
        let n = parse(src, "x.yml").unwrap().unwrap();
        let job = n.get("job").unwrap();
        assert!(matches!(job.get("a").unwrap().value, Value::Int(1)));
        assert!(matches!(job.get("b").unwrap().value, Value::Int(3)));
    }

    #[test]
    fn syntax_error_has_location() {
        let e = parse("a:\n  - x\n - y\n", "f.yml").unwrap_err();
        let d = &e.diagnostics[0];
        assert!(d.pos.is_some(), "{e}");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let src = "- ".repeat(200_000) + "x\n";
        assert!(parse(&src, "f.yml").is_err());
        let src = "[".repeat(10_000);
        assert!(parse(&src, "f.yml").is_err());
    }

    #[test]
    fn reference_tag_is_kept() {
        let n = parse("a: !reference [.x, script]\n", "f.yml")
            .unwrap()
            .unwrap();
        assert!(matches!(n.get("a").unwrap().value, Value::Tagged(ref t, _) if t == "!reference"));
    }
}
