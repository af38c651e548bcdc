//! Lint errors in the style of GitLab's CI lint, with file:line:column.

/// 1-based line and column.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

/// One problem found in a CI configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    /// `None` for problems that concern the file as a whole (missing, empty).
    pub pos: Option<Pos>,
    pub message: String,
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn new(file: &str, pos: Option<Pos>, message: String, hint: Option<&str>) -> Self {
        Diagnostic {
            file: file.to_string(),
            pos,
            message,
            hint: hint.map(str::to_string),
        }
    }
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Messages quote the user's YAML (keys may hold newlines); one
        // diagnostic must stay one line so editors and greps can jump to it.
        let message = one_line(&self.message);
        match self.pos {
            Some(p) => write!(f, "{}:{}:{}: {message}", self.file, p.line, p.column)?,
            None => write!(f, "{}: {message}", self.file)?,
        }
        if let Some(h) = &self.hint {
            write!(f, " ({})", one_line(h))?;
        }
        Ok(())
    }
}

fn one_line(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains(['\n', '\r']) {
        s.replace('\n', "\\n").replace('\r', "\\r").into()
    } else {
        s.into()
    }
}

/// Why a pipeline could not be created. Holds at least one diagnostic; the
/// `Display` form prints one line per diagnostic, each `FILE:LINE:COL: problem (hint)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LintError {
    pub diagnostics: Vec<Diagnostic>,
}

impl LintError {
    pub fn single(d: Diagnostic) -> Self {
        LintError {
            diagnostics: vec![d],
        }
    }

    /// A problem not tied to a position (unknown project, missing file).
    pub fn general(file: &str, message: impl Into<String>, hint: Option<&str>) -> Self {
        Self::single(Diagnostic::new(file, None, message.into(), hint))
    }

    /// The first diagnostic.
    pub fn first(&self) -> Option<&Diagnostic> {
        self.diagnostics.first()
    }
}

impl std::fmt::Display for LintError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LintError {}

/// Where lint errors are collected while one file is parsed.
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
