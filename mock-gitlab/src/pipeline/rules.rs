//! `rules:if` expressions and `rules:exists` globs.
//!
//! Expressions follow GitLab's `Gitlab::Ci::Pipeline::Expression`: operands
//! are `$VAR`/`${VAR}`, `"string"`/`'string'`, `null` and `/regex/flags`;
//! operators `==`, `!=`, `=~`, `!~`, `&&`, `||` and parentheses (`&&` binds
//! tighter than `||`). A bare variable is true when it is set and non-empty.
//! Regexes use the `regex` crate (RE2-like, as GitLab's untrusted regexps).

use regex::RegexBuilder;

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Var(String),
    Str(String),
    Null,
    Regex(String, String),
    Eq,
    Ne,
    Match,
    NoMatch,
    And,
    Or,
    LParen,
    RParen,
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let c: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < c.len() {
        let ch = c[i];
        if ch.is_whitespace() {
            i += 1;
            continue;
        }
        let two: String = c[i..(i + 2).min(c.len())].iter().collect();
        match two.as_str() {
            "==" | "!=" | "=~" | "!~" | "&&" | "||" => {
                out.push(match two.as_str() {
                    "==" => Tok::Eq,
                    "!=" => Tok::Ne,
                    "=~" => Tok::Match,
                    "!~" => Tok::NoMatch,
                    "&&" => Tok::And,
                    _ => Tok::Or,
                });
                i += 2;
                continue;
            }
            _ => {}
        }
        match ch {
            '(' => {
                out.push(Tok::LParen);
                i += 1;
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1;
            }
            '$' => {
                i += 1;
                let braced = i < c.len() && c[i] == '{';
                if braced {
                    i += 1;
                }
                let start = i;
                while i < c.len() && (c[i].is_ascii_alphanumeric() || c[i] == '_') {
                    i += 1;
                }
                if start == i {
                    return Err(format!("invalid variable at position {start}"));
                }
                let name: String = c[start..i].iter().collect();
                if braced {
                    if i >= c.len() || c[i] != '}' {
                        return Err("unterminated ${".into());
                    }
                    i += 1;
                }
                out.push(Tok::Var(name));
            }
            '"' | '\'' => {
                let q = ch;
                i += 1;
                let start = i;
                while i < c.len() && c[i] != q {
                    i += 1;
                }
                if i >= c.len() {
                    return Err("unterminated string".into());
                }
                out.push(Tok::Str(c[start..i].iter().collect()));
                i += 1;
            }
            '/' => {
                i += 1;
                let mut pat = String::new();
                while i < c.len() && c[i] != '/' {
                    if c[i] == '\\' && i + 1 < c.len() {
                        if c[i + 1] == '/' {
                            pat.push('/');
                        } else {
                            pat.push('\\');
                            pat.push(c[i + 1]);
                        }
                        i += 2;
                        continue;
                    }
                    pat.push(c[i]);
                    i += 1;
                }
                if i >= c.len() {
                    return Err("unterminated regex".into());
                }
                i += 1;
                let fstart = i;
                while i < c.len() && c[i].is_ascii_alphabetic() {
                    i += 1;
                }
                out.push(Tok::Regex(pat, c[fstart..i].iter().collect()));
            }
            'n' if c[i..].starts_with(&['n', 'u', 'l', 'l']) => {
                out.push(Tok::Null);
                i += 4;
            }
            _ => return Err(format!("unexpected {ch:?}")),
        }
    }
    Ok(out)
}

#[derive(Clone, Debug)]
enum Val {
    Str(Option<String>),
    Re(String, String),
}

impl Val {
    fn truthy(&self) -> bool {
        match self {
            Val::Str(s) => s.as_deref().is_some_and(|s| !s.is_empty()),
            Val::Re(..) => true,
        }
    }
}

struct P<'a> {
    toks: Vec<Tok>,
    i: usize,
    vars: &'a dyn Fn(&str) -> Option<String>,
}

impl P<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.i)
    }

    fn or(&mut self) -> Result<bool, String> {
        let mut v = self.and()?;
        while self.peek() == Some(&Tok::Or) {
            self.i += 1;
            let r = self.and()?;
            v = v || r;
        }
        Ok(v)
    }

    fn and(&mut self) -> Result<bool, String> {
        let mut v = self.cmp()?;
        while self.peek() == Some(&Tok::And) {
            self.i += 1;
            let r = self.cmp()?;
            v = v && r;
        }
        Ok(v)
    }

    fn cmp(&mut self) -> Result<bool, String> {
        if self.peek() == Some(&Tok::LParen) {
            self.i += 1;
            let v = self.or()?;
            if self.peek() != Some(&Tok::RParen) {
                return Err("missing )".into());
            }
            self.i += 1;
            return Ok(v);
        }
        let left = self.operand()?;
        let op = match self.peek() {
            Some(t @ (Tok::Eq | Tok::Ne | Tok::Match | Tok::NoMatch)) => t.clone(),
            _ => return Ok(left.truthy()),
        };
        self.i += 1;
        let right = self.operand()?;
        match op {
            Tok::Eq | Tok::Ne => {
                let eq = match (&left, &right) {
                    (Val::Str(a), Val::Str(b)) => a == b,
                    _ => false,
                };
                Ok(if op == Tok::Eq { eq } else { !eq })
            }
            _ => {
                let (text, pat, flags) = match (&left, &right) {
                    (Val::Str(s), Val::Re(p, f)) => (s.clone(), p.clone(), f.clone()),
                    // GitLab 15+: a variable on the right is a regex too.
                    (Val::Str(s), Val::Str(Some(p))) => {
                        let p = p.trim();
                        match p.strip_prefix('/').and_then(|r| r.rsplit_once('/')) {
                            Some((pat, flags)) => (s.clone(), pat.to_string(), flags.to_string()),
                            None => return Err(format!("{p:?} is not a regex")),
                        }
                    }
                    _ => return Err("=~ needs a regex on the right".into()),
                };
                let re = RegexBuilder::new(&pat)
                    .case_insensitive(flags.contains('i'))
                    .multi_line(flags.contains('m'))
                    .build()
                    .map_err(|e| format!("invalid regex /{pat}/: {e}"))?;
                let m = text.as_deref().is_some_and(|t| re.is_match(t));
                Ok(if op == Tok::Match { m } else { !m })
            }
        }
    }

    fn operand(&mut self) -> Result<Val, String> {
        let t = self.peek().cloned().ok_or("expression ends early")?;
        self.i += 1;
        Ok(match t {
            Tok::Var(n) => Val::Str((self.vars)(&n)),
            Tok::Str(s) => Val::Str(Some(s)),
            Tok::Null => Val::Str(None),
            Tok::Regex(p, f) => Val::Re(p, f),
            other => return Err(format!("unexpected {other:?}")),
        })
    }
}

/// Evaluate a `rules:if` expression. `vars` returns a variable's value
/// (`None` when undefined).
pub fn eval_if(expr: &str, vars: &dyn Fn(&str) -> Option<String>) -> Result<bool, String> {
    let toks = tokenize(expr)?;
    if toks.is_empty() {
        return Err("empty expression".into());
    }
    let mut p = P { toks, i: 0, vars };
    let v = p.or()?;
    if p.i != p.toks.len() {
        return Err(format!("unexpected {:?}", p.toks[p.i]));
    }
    Ok(v)
}

/// Shell-like glob as in `rules:exists`: `*` within a segment, `**` across
/// segments, `?` one character.
pub fn glob_match(pattern: &str, path: &str) -> bool {
    fn rec(p: &[char], s: &[char]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some('*') if p.get(1) == Some(&'*') => {
                let rest = if p.get(2) == Some(&'/') {
                    &p[3..]
                } else {
                    &p[2..]
                };
                (0..=s.len()).any(|i| rec(rest, &s[i..]))
            }
            Some('*') => (0..=s.len())
                .take_while(|&i| i == 0 || s[i - 1] != '/')
                .any(|i| rec(&p[1..], &s[i..])),
            Some('?') => !s.is_empty() && s[0] != '/' && rec(&p[1..], &s[1..]),
            Some(c) => s.first() == Some(c) && rec(&p[1..], &s[1..]),
        }
    }
    let p: Vec<char> = pattern.trim_start_matches('/').chars().collect();
    let s: Vec<char> = path.chars().collect();
    rec(&p, &s)
}

/// Expand `$VAR`, `${VAR}` in `s` (unknown variables become empty; `$$` is
/// a literal `$`).
pub fn expand(s: &str, vars: &dyn Fn(&str) -> Option<String>) -> String {
    let c: Vec<char> = s.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < c.len() {
        if c[i] != '$' {
            out.push(c[i]);
            i += 1;
            continue;
        }
        if c.get(i + 1) == Some(&'$') {
            out.push('$');
            i += 2;
            continue;
        }
        let braced = c.get(i + 1) == Some(&'{');
        let start = if braced { i + 2 } else { i + 1 };
        let mut j = start;
        while j < c.len() && (c[j].is_ascii_alphanumeric() || c[j] == '_') {
            j += 1;
        }
        if j == start || (braced && c.get(j) != Some(&'}')) {
            out.push('$');
            i += 1;
            continue;
        }
        let name: String = c[start..j].iter().collect();
        out.push_str(&vars(&name).unwrap_or_default());
        i = if braced { j + 1 } else { j };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(n: &str) -> Option<String> {
        match n {
            "CI_COMMIT_BRANCH" => Some("main".into()),
            "EMPTY" => Some(String::new()),
            "RE" => Some("/^ma/".into()),
            _ => None,
        }
    }

    #[test]
    fn expressions() {
        let t = |e: &str| eval_if(e, &v).unwrap();
        assert!(t("$CI_COMMIT_BRANCH == \"main\""));
        assert!(t("$CI_COMMIT_BRANCH != 'dev'"));
        assert!(t("$CI_COMMIT_BRANCH =~ /^MA/i"));
        assert!(!t("$CI_COMMIT_BRANCH =~ /^dev/"));
        assert!(t("$CI_COMMIT_BRANCH !~ /^dev/"));
        assert!(t("$CI_COMMIT_BRANCH =~ $RE"));
        assert!(t("$CI_COMMIT_BRANCH"));
        assert!(!t("$EMPTY"));
        assert!(!t("$NOPE"));
        assert!(t("$NOPE == null"));
        assert!(t(
            "${CI_COMMIT_BRANCH} == \"main\" && ($NOPE || $CI_COMMIT_BRANCH)"
        ));
        assert!(t(
            "$NOPE || $CI_COMMIT_BRANCH == 'main' && $CI_COMMIT_BRANCH"
        ));
        assert!(!t("($NOPE || $CI_COMMIT_BRANCH == 'main') && $EMPTY"));
        assert!(eval_if("$A ==", &v).is_err());
        assert!(eval_if("$A == 'x", &v).is_err());
        assert!(eval_if("($A", &v).is_err());
    }

    #[test]
    fn globs() {
        assert!(glob_match("Cargo.toml", "Cargo.toml"));
        assert!(glob_match("*.md", "README.md"));
        assert!(!glob_match("*.md", "docs/a.md"));
        assert!(glob_match("**/*.md", "docs/a.md"));
        assert!(glob_match("docs/**", "docs/x/y"));
        assert!(glob_match("/a?c", "abc"));
    }

    #[test]
    fn expansion() {
        assert_eq!(
            expand("x-$CI_COMMIT_BRANCH-${CI_COMMIT_BRANCH}-$$-$NOPE", &v),
            "x-main-main-$-"
        );
    }
}
