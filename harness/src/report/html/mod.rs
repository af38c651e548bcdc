//! `report.html`: the report for people, one self-contained file (inline CSS, a little vanilla JS,
//! nothing fetched). The case × mode table in colour with filters (failed, known findings, modes;
//! also from the URL: `#failed`, `#findings`, `#mode=docker`), every job trace embedded and one
//! click away with the runner's sections folded, the cross-mode diffs and the job cost. Everything
//! but the filters reads without JS.

use std::fmt::Write as _;
use std::path::{Component, Path};
use std::sync::LazyLock;

use regex::Regex;

use super::{CaseResult, Report, Status};
use crate::redact::scrub;

/// An embedded trace stops after this many bytes (at a line end); the page links the whole file.
const TRACE_CAP: usize = 200 * 1024;

/// A runner section marker in a raw trace: `section_start:<ts>:<name>[options]\r\x1b[0K`.
static RAW_SECTION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"section_(start|end):\d+:([A-Za-z0-9_.-]+)(?:\[[^\]\r\n]*\])?\r?(?:\x1b\[0K)?")
        .expect("section regex")
});

/// A section header as a normalised trace keeps it: `[<name>] <header>` at the start of a line.
static NORMALISED_SECTION: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\[([a-z][a-z0-9_.-]*)\](?: (.*))?$").expect("section regex"));

impl Report {
    /// The content of `report.html`. Traces are read from `dir` (their paths are relative to the
    /// report) and embedded, at most [`TRACE_CAP`] bytes each.
    pub fn html(&self, dir: &Path) -> String {
        let modes = self.modes();
        let names = self.names();
        let mut s = String::with_capacity(64 * 1024);
        let _ = write!(
            s,
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>runnerlab conformance {id}</title>\n<style>{CSS}</style></head><body>\n\
             <header><h1>runnerlab conformance <code>{id}</code></h1>\n",
            id = esc(&self.run_id)
        );
        s.push_str(&self.html_counts());
        s.push_str(&self.html_environment());
        s.push_str(
            "<nav><a href=\"#results\">results</a> · <a href=\"#cross-mode\">cross-mode differences</a> · \
             <a href=\"#job-cost\">job cost</a> · <a href=\"#traces\">traces and details</a> · also \
             <a href=\"report.md\">report.md</a>, <a href=\"report.json\">report.json</a>, \
             <a href=\"junit.xml\">junit.xml</a></nav></header>\n",
        );

        // Filters: shown by the script (they need it).
        s.push_str(
            "<form id=\"filters\" hidden><span class=\"fl\">show only</span>\
             <label><input type=\"checkbox\" id=\"f-failed\"> failed</label>\
             <label><input type=\"checkbox\" id=\"f-findings\"> known findings</label>\
             <span class=\"fl\">modes</span>",
        );
        for m in &modes {
            let _ = write!(
                s,
                "<label><input type=\"checkbox\" class=\"f-mode\" value=\"{m}\" checked> {m}</label>",
                m = esc(m)
            );
        }
        s.push_str("<span id=\"f-count\"></span></form>\n");

        // The table. Entries below (trace, detail) are numbered in report order.
        let entry_of = |c: &CaseResult| -> Option<usize> {
            self.cases
                .iter()
                .filter(|c| c.trace.is_some() || c.detail.is_some())
                .position(|e| std::ptr::eq(e, c))
        };
        s.push_str(
            "<h2 id=\"results\">Results</h2>\n<table id=\"matrix\"><thead><tr><th>case</th>",
        );
        for m in &modes {
            let _ = write!(s, "<th data-mode=\"{m}\">{m}</th>", m = esc(m));
        }
        s.push_str("</tr></thead>\n<tbody>\n");
        for n in &names {
            let _ = write!(s, "<tr><th scope=\"row\">{}</th>", esc(n));
            for m in &modes {
                match self.cases.iter().find(|c| c.name == *n && c.mode == *m) {
                    None => {
                        let _ = write!(s, "<td class=\"none\" data-mode=\"{}\">—</td>", esc(m));
                    }
                    Some(c) => {
                        let title = c
                            .detail
                            .as_deref()
                            .map(|d| format!(" title=\"{}\"", esc(&scrub(d))))
                            .unwrap_or_default();
                        let word = format!(
                            "{}{}",
                            status_word(&c.status),
                            if c.detail.is_some() {
                                " <span class=\"note\">i</span>"
                            } else {
                                ""
                            }
                        );
                        let label = match entry_of(c) {
                            Some(i) => format!("<a href=\"#t-{i}\">{word}</a>"),
                            None => word,
                        };
                        let _ = write!(
                            s,
                            "<td class=\"{cls}\" data-mode=\"{m}\" data-status=\"{cls}\"{title}>{label} \
                             <span class=\"dur\">{d}</span></td>",
                            cls = status_class(&c.status),
                            m = esc(m),
                            d = duration(c.duration_s),
                        );
                    }
                }
            }
            s.push_str("</tr>\n");
        }
        s.push_str("</tbody></table>\n<p class=\"hint\">Click a cell for its job trace and details; <span class=\"note\">i</span>: the result has a note (hover for it).</p>\n");

        s.push_str(&self.html_cross_mode());
        s.push_str(&self.html_job_cost());

        // Traces and details.
        s.push_str(
            "<h2 id=\"traces\">Traces and details</h2>\n<p class=\"hint\">Each job's normalised trace \
             (secrets scrubbed), the runner's sections folded.</p>\n",
        );
        for (i, c) in self
            .cases
            .iter()
            .filter(|c| c.trace.is_some() || c.detail.is_some())
            .enumerate()
        {
            let cls = status_class(&c.status);
            let _ = writeln!(
                s,
                "<details class=\"entry\" id=\"t-{i}\" data-mode=\"{m}\" data-status=\"{cls}\">\
                 <summary><span class=\"badge {cls}\">{w}</span> <b>{n}</b> · {m} · {d}</summary>",
                m = esc(&c.mode),
                w = status_word(&c.status),
                n = esc(&c.name),
                d = duration(c.duration_s),
            );
            if let Some(d) = &c.detail {
                let _ = writeln!(s, "<pre class=\"detail\">{}</pre>", esc(&scrub(d)));
            }
            if let Some(t) = &c.trace {
                s.push_str(&embed_trace(dir, t));
            }
            s.push_str("<p class=\"back\"><a href=\"#results\">↑ results</a></p></details>\n");
        }
        let _ = write!(s, "<script>{JS}</script>\n</body></html>\n");
        s
    }

    /// Modes in the order the report lists them (the order asked for).
    fn modes(&self) -> Vec<&str> {
        let mut modes: Vec<&str> = Vec::new();
        for c in &self.cases {
            if !modes.contains(&c.mode.as_str()) {
                modes.push(&c.mode);
            }
        }
        modes
    }

    /// Case names in report order.
    fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for c in &self.cases {
            if !names.contains(&c.name.as_str()) {
                names.push(&c.name);
            }
        }
        names
    }

    fn html_counts(&self) -> String {
        let counts = self.counts();
        let mut s = String::from("<p class=\"counts\">");
        for (k, word) in [
            ("passed", "passed"),
            ("failed", "failed"),
            ("known-finding", "known findings"),
            ("skipped", "skipped"),
        ] {
            let _ = write!(
                s,
                "<span class=\"badge {k}\">{} {word}</span> ",
                counts.get(k).unwrap_or(&0)
            );
        }
        let _ = writeln!(
            s,
            "<span class=\"dur\">{} results</span></p>",
            self.cases.len()
        );
        s
    }

    fn html_environment(&self) -> String {
        let e = &self.environment;
        let p = &e.podman;
        let mut s = String::from("<dl class=\"env\">");
        let mut row = |k: &str, v: String| {
            let _ = write!(s, "<dt>{k}</dt><dd>{v}</dd>");
        };
        row(
            "runner",
            format!(
                "{}, {}",
                esc(&e.runner.describe),
                if e.runner.placement == "host" {
                    "on the host (as the lab user)"
                } else {
                    "in a container"
                }
            ),
        );
        row(
            "podman",
            esc(&format!(
                "{} ({}, runtime {}, cgroup {}, network {}, uid map {})",
                p.version,
                if p.rootless { "rootless" } else { "rootful" },
                p.runtime,
                p.cgroup_version,
                p.network_backend,
                if p.uid_map.is_empty() {
                    "none"
                } else {
                    &p.uid_map
                }
            )),
        );
        if !p.engine.is_empty() || !p.components.is_empty() {
            let parts: Vec<String> = p
                .components
                .iter()
                .map(|c| format!("{} {} ({})", c.name, c.version, c.package_version))
                .collect();
            row(
                "engine",
                format!(
                    "<code>{}</code>{}",
                    esc(&p.engine),
                    if parts.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", esc(&parts.join(", ")))
                    }
                ),
            );
        }
        row("kernel", esc(&e.kernel));
        row(
            "started",
            format!(
                "{}, took {}",
                esc(&self.started_at),
                duration(self.duration_s)
            ),
        );
        row("harness", esc(&e.harness_version));
        s.push_str("</dl>\n");
        s
    }

    fn html_cross_mode(&self) -> String {
        let mut s = String::from("<h2 id=\"cross-mode\">Cross-mode differences</h2>\n");
        if self.cross_mode.is_empty() {
            s.push_str("<p>One mode ran: nothing to compare.</p>\n");
            return s;
        }
        let differing = self
            .cross_mode
            .iter()
            .filter(|d| d.differing_lines > 0)
            .count();
        let _ = writeln!(
            s,
            "<p>Job output from <code>step_script</code> on, normalised, compared with the first mode \
             that ran the case: {differing} of {} comparisons differ.</p>",
            self.cross_mode.len()
        );
        s.push_str("<div class=\"xdiffs\">\n");
        for (i, d) in self
            .cross_mode
            .iter()
            .filter(|d| d.differing_lines > 0)
            .enumerate()
        {
            let _ = write!(
                s,
                "<details class=\"xdiff\" id=\"d-{i}\" data-mode=\"{m}\"><summary><b>{c}</b> · {m} vs {b} · \
                 {n} line{pl}</summary><pre class=\"diff\">",
                c = esc(&d.case),
                m = esc(&d.mode),
                b = esc(&d.base),
                n = d.differing_lines,
                pl = if d.differing_lines == 1 { "" } else { "s" },
            );
            for l in d.diff.lines() {
                let cls = if l.starts_with("+++") || l.starts_with("---") {
                    "fh"
                } else if l.starts_with("@@") {
                    "hunk"
                } else if l.starts_with('+') {
                    "add"
                } else if l.starts_with('-') {
                    "del"
                } else {
                    "ctx"
                };
                // The newline inside the (block) span: outside it, it would add an empty line.
                let _ = write!(
                    s,
                    "<span class=\"{cls}\">{}\n</span>",
                    esc(&strip_controls(l))
                );
            }
            s.push_str("</pre></details>\n");
        }
        s.push_str("</div>\n");
        let same: Vec<String> = self
            .cross_mode
            .iter()
            .filter(|d| d.differing_lines == 0)
            .map(|d| format!("{} ({} vs {})", d.case, d.mode, d.base))
            .collect();
        if !same.is_empty() {
            let _ = writeln!(
                s,
                "<details class=\"same\"><summary>{} comparisons with the same output</summary><p>{}</p></details>",
                same.len(),
                esc(&same.join(", "))
            );
        }
        s
    }

    fn html_job_cost(&self) -> String {
        let mut s = String::from("<h2 id=\"job-cost\">Job cost</h2>\n");
        if self.job_cost.is_empty() {
            s.push_str("<p>Not measured in this run.</p>\n");
            return s;
        }
        s.push_str(
            "<p>What runner, executor and Podman add to a job: the median of (handed to the runner → \
             finished) − <code>step_script</code> over every job of the mode, and the <code>hello</code> \
             job against the floor of a container here (<code>podman run --rm</code>, and the same \
             container through the compat API), measured side by side in this run. Figures, never \
             pass/fail.</p>\n<table class=\"cost\"><thead><tr><th>mode</th><th>jobs</th>\
             <th>median overhead</th><th>hello e2e</th><th>containers</th><th>CLI floor</th>\
             <th>API floor</th><th>e2e / (containers × CLI floor)</th>\
             <th>e2e / (containers × API floor)</th></tr></thead><tbody>\n",
        );
        let f = |x: Option<f64>, unit: &str| {
            x.map(|x| format!("{x:.2}{unit}"))
                .unwrap_or_else(|| "—".into())
        };
        for c in &self.job_cost {
            let t = c.trivial.as_ref();
            let cells = [
                esc(&c.mode),
                c.jobs.to_string(),
                format!("{:.2} s", c.median_overhead_s),
                f(t.map(|t| t.e2e_s), " s"),
                t.map(|t| t.containers.to_string())
                    .unwrap_or_else(|| "—".into()),
                f(t.map(|t| t.cli_floor_s), " s"),
                f(t.and_then(|t| t.api_floor_s), " s"),
                f(t.and_then(|t| t.ratio_cli), ""),
                f(t.and_then(|t| t.ratio_api), ""),
            ];
            let _ = writeln!(
                s,
                "<tr data-mode=\"{}\"><td>{}</td></tr>",
                esc(&c.mode),
                cells.join("</td><td>")
            );
        }
        s.push_str("</tbody></table>\n");
        s
    }
}

fn status_class(s: &Status) -> &'static str {
    match s {
        Status::Passed => "passed",
        Status::Failed => "failed",
        Status::KnownFinding => "known-finding",
        Status::Skipped => "skipped",
    }
}

fn status_word(s: &Status) -> &'static str {
    match s {
        Status::Passed => "passed",
        Status::Failed => "failed",
        Status::KnownFinding => "finding",
        Status::Skipped => "skipped",
    }
}

fn duration(s: f64) -> String {
    if s >= 59.95 {
        let t = s.round() as u64;
        format!("{}m{:02}s", t / 60, t % 60)
    } else {
        format!("{s:.1}s")
    }
}

/// Text and attribute values, escaped.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(ch),
        }
    }
    out
}

/// Control characters other than tab and newline go: they have no place in HTML.
fn strip_controls(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control() || *c == '\t' || *c == '\n')
        .collect()
}

/// A relative path as a URL: its bytes outside the unreserved set percent-encoded.
fn href(path: &str) -> String {
    let mut out = String::new();
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// One trace, read from `dir` and rendered: the file's link, then its lines with sections folded.
fn embed_trace(dir: &Path, rel: &str) -> String {
    let link = format!("<a href=\"{}\">{}</a>", esc(&href(rel)), esc(rel));
    let inside = Path::new(rel)
        .components()
        .all(|c| matches!(c, Component::Normal(_)));
    let bytes = match inside.then(|| std::fs::read(dir.join(rel))) {
        Some(Ok(b)) => b,
        Some(Err(e)) => {
            return format!(
                "<p class=\"file\">trace {link}: not readable ({})</p>\n",
                esc(&e.to_string())
            );
        }
        None => return format!("<p class=\"file\">trace {link}: outside the report</p>\n"),
    };
    let total = bytes.len();
    let text = String::from_utf8_lossy(&bytes);
    let (shown, cut) = cap(&text, TRACE_CAP);
    let mut s = format!(
        "<p class=\"file\">trace {link} ({})</p>\n<div class=\"trace\">",
        kib(total)
    );
    s.push_str(&render_trace(&scrub(shown)));
    s.push_str("</div>\n");
    if cut {
        let _ = writeln!(
            s,
            "<p class=\"cut\">Trace cut after {} of {}: the whole trace is {link}.</p>",
            kib(shown.len()),
            kib(total)
        );
    }
    s
}

fn kib(n: usize) -> String {
    if n < 1024 {
        format!("{n} B")
    } else {
        format!("{:.1} KiB", n as f64 / 1024.0)
    }
}

/// At most `max` bytes of `text`, ending at a line end when there is one; and whether it was cut.
fn cap(text: &str, max: usize) -> (&str, bool) {
    if text.len() <= max {
        return (text, false);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let head = &text[..end];
    match head.rfind('\n') {
        Some(i) if i > 0 => (&text[..=i], true),
        _ => (head, true),
    }
}

/// A section being rendered: its name, its header (HTML), its body (HTML) and its line count.
struct Frame {
    name: String,
    header: String,
    body: String,
    lines: usize,
}

impl Frame {
    fn new(name: &str, header: String) -> Self {
        Frame {
            name: name.to_owned(),
            header,
            body: String::new(),
            lines: 0,
        }
    }
}

/// Close the innermost section into its parent.
fn close(stack: &mut Vec<Frame>) {
    if stack.len() < 2 {
        return;
    }
    let f = stack.pop().expect("two frames");
    let parent = stack.last_mut().expect("a parent");
    let _ = write!(
        parent.body,
        "<details class=\"sec\"><summary><span class=\"sn\">{}</span> {}<span class=\"nl\">{} line{}</span></summary>\
         <div class=\"sb\">{}</div></details>",
        esc(&f.name),
        f.header,
        f.lines,
        if f.lines == 1 { "" } else { "s" },
        f.body
    );
    parent.lines += f.lines + 1;
}

fn push_line(stack: &mut [Frame], html: &str) {
    let f = stack.last_mut().expect("the root frame");
    f.body.push_str(html);
    f.body.push('\n');
    f.lines += 1;
}

/// A job trace as HTML (inside an element with `white-space: pre-wrap`): the runner's sections as
/// nested `<details>` (folded) with their headers as summaries, SGR colours as spans, other escape
/// sequences and control characters dropped, all text escaped.
///
/// Raw traces mark sections with `section_start:` / `section_end:`; normalised ones (what the lab
/// saves) keep `[<name>] <header>` lines: there a section runs to the next one, script steps
/// (`section_script_step_*`) nest in the stage around them, and the job's verdict closes them all.
fn render_trace(text: &str) -> String {
    let raw = text.contains("section_start:");
    let mut stack = vec![Frame::new("", String::new())];
    let mut sgr = Sgr::default();
    let body = text.strip_suffix('\n').unwrap_or(text);
    for line in body.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if raw {
            // Text, then markers each followed by their text (a start's text is its header).
            let mut last = 0;
            let mut pending: Option<(bool, String)> = None;
            let mut segments: Vec<(Option<(bool, String)>, &str)> = Vec::new();
            for m in RAW_SECTION.captures_iter(line) {
                let whole = m.get(0).expect("match");
                segments.push((pending.take(), &line[last..whole.start()]));
                pending = Some((&m[1] == "start", m[2].to_owned()));
                last = whole.end();
            }
            segments.push((pending, &line[last..]));
            let segments_had_no_marker = segments.len() == 1;
            let mut content = String::new();
            for (marker, text) in segments {
                match marker {
                    None => content.push_str(&sgr.render(text)),
                    Some((false, name)) => {
                        if !content.is_empty() {
                            push_line(&mut stack, &std::mem::take(&mut content));
                        }
                        if stack.iter().skip(1).any(|f| f.name == name) {
                            while stack.last().is_some_and(|f| f.name != name) {
                                close(&mut stack);
                            }
                            close(&mut stack);
                        }
                        content.push_str(&sgr.render(text));
                    }
                    Some((true, name)) => {
                        if !content.is_empty() {
                            push_line(&mut stack, &std::mem::take(&mut content));
                        }
                        let header = sgr.render(text);
                        stack.push(Frame::new(&name, header));
                    }
                }
            }
            if !content.is_empty() || segments_had_no_marker {
                push_line(&mut stack, &content);
            }
        } else if let Some(m) = NORMALISED_SECTION.captures(line) {
            let name = &m[1];
            let keep = usize::from(name.starts_with("section_script_step_") && stack.len() > 1);
            while stack.len() > 1 + keep {
                close(&mut stack);
            }
            let header = sgr.render(m.get(2).map_or("", |h| h.as_str()));
            stack.push(Frame::new(name, header));
        } else {
            if line.starts_with("Job succeeded") || line.starts_with("ERROR: Job failed") {
                while stack.len() > 1 {
                    close(&mut stack);
                }
            }
            let html = sgr.render(line);
            push_line(&mut stack, &html);
        }
    }
    while stack.len() > 1 {
        close(&mut stack);
    }
    stack.pop().expect("the root frame").body
}

/// The SGR state a trace has set: a foreground colour (30–37, 90–97) and bold.
#[derive(Default)]
struct Sgr {
    fg: Option<u8>,
    bold: bool,
}

impl Sgr {
    /// `text` escaped, its SGR sequences applied as spans (closed within the text), other escape
    /// sequences and control characters dropped, text before a carriage return overwritten.
    fn render(&mut self, text: &str) -> String {
        let text = match text.rfind('\r') {
            Some(i) => &text[i + 1..],
            None => text,
        };
        let mut out = String::new();
        let mut run = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '\x1b' {
                self.flush(&mut out, &mut run);
                match chars.peek() {
                    Some('[') => {
                        chars.next();
                        let mut params = String::new();
                        let mut fin = None;
                        for p in chars.by_ref() {
                            if ('\x40'..='\x7e').contains(&p) {
                                fin = Some(p);
                                break;
                            }
                            params.push(p);
                        }
                        if fin == Some('m') {
                            self.apply(&params);
                        }
                    }
                    Some(']') => {
                        // OSC: up to BEL or ESC \.
                        chars.next();
                        while let Some(p) = chars.next() {
                            if p == '\x07' {
                                break;
                            }
                            if p == '\x1b' {
                                chars.next();
                                break;
                            }
                        }
                    }
                    Some(_) => {
                        chars.next();
                    }
                    None => {}
                }
            } else if !c.is_control() || c == '\t' {
                run.push(c);
            }
        }
        self.flush(&mut out, &mut run);
        out
    }

    fn flush(&self, out: &mut String, run: &mut String) {
        if run.is_empty() {
            return;
        }
        let mut classes = Vec::new();
        if let Some(c) = self.fg {
            classes.push(format!("c{c}"));
        }
        if self.bold {
            classes.push("b".to_owned());
        }
        if classes.is_empty() {
            out.push_str(&esc(run));
        } else {
            let _ = write!(
                out,
                "<span class=\"{}\">{}</span>",
                classes.join(" "),
                esc(run)
            );
        }
        run.clear();
    }

    fn apply(&mut self, params: &str) {
        let mut ps = params.split(';').map(|p| p.parse::<u16>().unwrap_or(0));
        while let Some(p) = ps.next() {
            match p {
                0 => *self = Sgr::default(),
                1 => self.bold = true,
                22 => self.bold = false,
                30..=37 | 90..=97 => self.fg = Some(p as u8),
                39 => self.fg = None,
                // 256-colour and true-colour forms: their arguments are not ours.
                38 | 48 => match ps.next() {
                    Some(5) => {
                        ps.next();
                    }
                    Some(2) => {
                        ps.next();
                        ps.next();
                        ps.next();
                    }
                    _ => {}
                },
                _ => {}
            }
        }
    }
}

const CSS: &str = "\
:root{--pass:#1a7f37;--pass-bg:#dcf5e0;--fail:#b42318;--fail-bg:#fde0dd;--find:#8a5a00;--find-bg:#fff0c2;--skip:#666;--skip-bg:#eee}\
[hidden]{display:none!important}\
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:1.5em 2em;color:#1f2328}\
h1{font-size:1.5em;margin:0 0 .3em}h2{font-size:1.2em;margin:1.6em 0 .5em;border-bottom:1px solid #ddd}\
code{font-family:ui-monospace,'DejaVu Sans Mono',monospace;font-size:.92em}\
.counts .badge{font-size:1em;padding:.15em .6em}\
.badge{display:inline-block;border-radius:1em;padding:0 .5em;font-size:.85em;font-weight:600}\
.badge.passed{background:var(--pass-bg);color:var(--pass)}.badge.failed{background:var(--fail-bg);color:var(--fail)}\
.badge.known-finding{background:var(--find-bg);color:var(--find)}.badge.skipped{background:var(--skip-bg);color:var(--skip)}\
dl.env{display:grid;grid-template-columns:max-content 1fr;gap:.1em 1em;margin:.6em 0}dl.env dt{font-weight:600;color:#555}dl.env dd{margin:0}\
nav{margin:.6em 0;color:#555}\
#filters{position:sticky;top:0;z-index:2;background:#f6f8fa;border:1px solid #ddd;border-radius:6px;padding:.4em .8em;display:flex;flex-wrap:wrap;gap:.3em 1em;align-items:center}\
#filters .fl{font-weight:600;color:#555}#f-count{margin-left:auto;color:#555}\
table{border-collapse:collapse}th,td{border:1px solid #d0d7de;padding:.2em .6em;text-align:left}\
thead th{background:#f6f8fa;position:sticky;top:2.4em}\
#matrix tbody th{font-weight:500;font-family:ui-monospace,'DejaVu Sans Mono',monospace;font-size:.92em}\
#matrix td{min-width:7em;white-space:nowrap}\
#matrix td a{color:inherit;font-weight:600;text-decoration:none}#matrix td a:hover{text-decoration:underline}\
td.passed{background:var(--pass-bg);color:var(--pass)}td.failed{background:var(--fail-bg);color:var(--fail)}\
td.known-finding{background:var(--find-bg);color:var(--find)}td.skipped{background:var(--skip-bg);color:var(--skip)}\
td.none{color:#aaa;text-align:center}\
.dur{font-size:.85em;opacity:.75}\
.note{display:inline-block;width:1.15em;height:1.15em;line-height:1.15em;border-radius:50%;border:1px solid currentColor;text-align:center;font:italic 600 .75em/1.15em Georgia,serif;vertical-align:.1em}.hint{color:#666;font-size:.9em}\
table.cost td{text-align:right}table.cost td:first-child{text-align:left}\
details>summary{cursor:pointer}\
details.entry{border:1px solid #d0d7de;border-radius:6px;margin:.3em 0;padding:.2em .6em}\
details.entry[open]{border-color:#888}details.entry>summary{padding:.15em 0}\
details.entry:target{outline:2px solid #0969da}\
pre.detail{white-space:pre-wrap;background:#f6f8fa;border-left:3px solid #bbb;padding:.4em .6em;margin:.4em 0}\
p.file,p.cut{margin:.4em 0;font-size:.9em;color:#555}p.cut{color:var(--find)}p.back{margin:.3em 0;font-size:.85em}\
.trace{background:#1e1e1e;color:#ddd;font:12px/1.4 ui-monospace,'DejaVu Sans Mono',monospace;white-space:pre-wrap;overflow-wrap:anywhere;padding:.5em .7em;border-radius:4px;max-height:80vh;overflow:auto}\
.trace details.sec>summary{color:#8cc4ff;list-style-position:inside}\
.trace .sn{color:#999;font-size:.9em;margin-right:.4em}.trace .nl{color:#777;font-size:.85em;margin-left:.8em}\
.trace .sb{border-left:1px solid #444;margin-left:.3em;padding-left:.8em}\
.trace .b{font-weight:700}\
.c30{color:#666}.c31{color:#f66}.c32{color:#6c6}.c33{color:#dc4}.c34{color:#69f}.c35{color:#d6d}.c36{color:#5cc}.c37{color:#ddd}\
.c90{color:#888}.c91{color:#f88}.c92{color:#8e8}.c93{color:#fe6}.c94{color:#8af}.c95{color:#f8f}.c96{color:#7ee}.c97{color:#fff}\
.xdiffs{display:grid;grid-template-columns:repeat(auto-fill,minmax(24em,1fr));gap:.15em 1.5em}\
details.xdiff[open]{grid-column:1/-1}details.same p{color:#555;font-size:.9em}\
pre.diff{font:12px/1.4 ui-monospace,'DejaVu Sans Mono',monospace;background:#f6f8fa;border:1px solid #d0d7de;border-radius:4px;padding:.4em 0;overflow:auto;margin:.3em 0 .8em}\
pre.diff span{display:block;padding:0 .7em}\
pre.diff .add{background:#dafbe1;color:#116329}pre.diff .del{background:#ffebe9;color:#82071e}\
pre.diff .hunk{color:#8250df;background:#f3eefc}pre.diff .fh{color:#57606a;font-weight:600}\
";

const JS: &str = r#"
(function () {
  var form = document.getElementById('filters');
  var failed = document.getElementById('f-failed');
  var findings = document.getElementById('f-findings');
  var modes = Array.prototype.slice.call(document.querySelectorAll('.f-mode'));
  var count = document.getElementById('f-count');
  var rows = Array.prototype.slice.call(document.querySelectorAll('#matrix tbody tr'));
  form.hidden = false;
  function apply() {
    var on = {};
    modes.forEach(function (m) { on[m.value] = m.checked; });
    var want = [];
    if (failed.checked) want.push('failed');
    if (findings.checked) want.push('known-finding');
    var wanted = function (el) {
      return on[el.dataset.mode] !== false &&
        (want.length === 0 || want.indexOf(el.dataset.status) >= 0);
    };
    document.querySelectorAll('#matrix [data-mode]').forEach(function (c) {
      c.hidden = on[c.dataset.mode] === false;
    });
    var shown = 0;
    rows.forEach(function (r) {
      var ok = want.length === 0 ||
        Array.prototype.some.call(r.querySelectorAll('td[data-status]'), wanted);
      r.hidden = !ok;
      if (ok) shown++;
    });
    document.querySelectorAll('details.entry').forEach(function (d) { d.hidden = !wanted(d); });
    document.querySelectorAll('details.xdiff, table.cost tr[data-mode]').forEach(function (d) {
      d.hidden = on[d.dataset.mode] === false;
    });
    count.textContent = shown + ' of ' + rows.length + ' cases';
  }
  function openEntry(id) {
    var d = document.getElementById(id);
    if (d && d.tagName === 'DETAILS') {
      d.hidden = false;
      d.open = true;
      d.scrollIntoView();
      return true;
    }
    return false;
  }
  function fromHash() {
    var h = decodeURIComponent(location.hash.slice(1));
    if (!h || openEntry(h)) return;
    var parts = h.split(/[&,+ ]/);
    failed.checked = parts.indexOf('failed') >= 0;
    findings.checked = parts.indexOf('findings') >= 0;
    var ms = parts.filter(function (p) { return p.indexOf('mode=') === 0; })
      .map(function (p) { return p.slice(5); });
    if (ms.length) modes.forEach(function (m) { m.checked = ms.indexOf(m.value) >= 0; });
    apply();
  }
  [failed, findings].concat(modes).forEach(function (i) { i.addEventListener('change', apply); });
  window.addEventListener('hashchange', fromHash);
  apply();
  fromHash();
})();
"#;

#[cfg(test)]
mod tests;
