//! A job's trace rendered live for a terminal, from the raw bytes the runner PATCHes.
//!
//! The runner writes `<RFC 3339 µs> <stream><O|E><' '|'+'> ` before every line (`+`: the line
//! continues the previous one), and wraps each phase of a job in
//! `section_start:<unix>:<name>[<options>]\r\x1b[0K<header>` … `section_end:<unix>:<name>\r\x1b[0K`.
//! [`TraceRenderer`] turns that into lines to print:
//!
//! * the runner's own sections (preparing the executor, getting sources, caches, artifacts…) are
//!   **folded** to one line, `▸ <header> (mm:ss)`, printed when the section ends; a folded section
//!   that printed an `ERROR:` line, or that never ended (the job died in it), is shown in full;
//! * the job's script (`step_script`, `step_<name>`, `build_script`, `after_script`) is shown
//!   line by line: its header when it starts, every line, `└ mm:ss` when it ends; sections the
//!   script opens itself are shown too, unless they say `[collapsed=true]`;
//! * colours are kept (`color`) or stripped; erase-line codes and carriage-return redraws are
//!   resolved as a terminal would.

use std::sync::LazyLock;

use regex::Regex;

static TIMESTAMP: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z [0-9a-f]{2}[OE]([ +])")
        .expect("static regex")
});
/// A section marker: kind, unix time, name, options.
static MARKER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"section_(start|end):(\d+):([A-Za-z0-9_.\-]+)(\[[^\]\r\n]*\])?\r\x1b\[0K")
        .expect("static regex")
});
static ANSI: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]").expect("static regex"));
static ERASE_LINE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\x1b\[[0-2]?K").expect("static regex"));

/// Remove ANSI escape sequences.
pub fn strip_ansi(s: &str) -> String {
    ANSI.replace_all(s, "").into_owned()
}

/// GitLab's section duration: `mm:ss`, `h:mm:ss` from an hour on.
pub fn duration(secs: u64) -> String {
    if secs >= 3600 {
        format!("{}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
    } else {
        format!("{:02}:{:02}", secs / 60, secs % 60)
    }
}

/// Whether a section is the job's script rather than the runner's own work.
fn is_script_section(name: &str) -> bool {
    name.starts_with("step_") || name == "build_script" || name == "after_script"
}

struct Section {
    name: String,
    started: u64,
    header: String,
    /// Folded (its lines are held) rather than shown.
    folded: bool,
    /// Held lines of a folded section (nested headers included).
    held: Vec<String>,
    error: bool,
}

/// Live rendering of one job's trace; feed it bytes as they arrive.
pub struct TraceRenderer {
    color: bool,
    /// Bytes after the last newline.
    partial: Vec<u8>,
    /// The last complete line: printed once the next line shows it is not continued (`+`).
    last: Option<String>,
    open: Vec<Section>,
}

impl TraceRenderer {
    pub fn new(color: bool) -> TraceRenderer {
        TraceRenderer {
            color,
            partial: Vec::new(),
            last: None,
            open: Vec::new(),
        }
    }

    /// New trace bytes; returns the lines ready to print (without newlines).
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        self.partial.extend_from_slice(bytes);
        while let Some(i) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=i).collect();
            let line = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
            self.raw_line(line, &mut out);
        }
        out
    }

    /// Nothing new arrived for a while: the held line is not going to be continued.
    pub fn idle(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(l) = self.last.take() {
            self.line(&l, &mut out);
        }
        out
    }

    /// The job ended: everything left, including a partial last line and what folded sections
    /// that never ended were holding.
    pub fn finish(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.partial.is_empty() {
            let line = String::from_utf8_lossy(&std::mem::take(&mut self.partial)).into_owned();
            self.raw_line(line, &mut out);
        }
        if let Some(l) = self.last.take() {
            self.line(&l, &mut out);
        }
        while let Some(s) = self.open.pop() {
            if s.folded && !self.hidden() {
                out.push(self.paint(&format!("▸ {} (did not end)", s.header)));
                out.extend(s.held);
            } else if let Some(parent) = self.open.last_mut().filter(|p| p.folded) {
                parent.held.extend(s.held);
            }
        }
        out
    }

    /// One line as the runner sent it: timestamp prefix and continuations resolved.
    fn raw_line(&mut self, line: String, out: &mut Vec<String>) {
        let (text, continued) = match TIMESTAMP.captures(&line) {
            Some(c) => (
                line[c.get(0).map_or(0, |m| m.end())..].to_owned(),
                c.get(1).is_some_and(|m| m.as_str() == "+"),
            ),
            None => (line, false),
        };
        match (continued, self.last.as_mut()) {
            (true, Some(prev)) => prev.push_str(&text),
            _ => {
                if let Some(prev) = self.last.replace(text) {
                    self.line(&prev, out);
                }
            }
        }
    }

    /// Whether lines go to a folded section rather than out.
    fn hidden(&self) -> bool {
        self.open.iter().any(|s| s.folded)
    }

    fn emit(&mut self, text: String, out: &mut Vec<String>) {
        if let Some(s) = self.open.iter_mut().rev().find(|s| s.folded) {
            if strip_ansi(&text).contains("ERROR:") {
                s.error = true;
            }
            s.held.push(text);
        } else {
            out.push(text);
        }
    }

    fn paint(&self, s: &str) -> String {
        if self.color {
            s.to_owned()
        } else {
            strip_ansi(s)
        }
    }

    /// A logical line: section markers, then text.
    fn line(&mut self, line: &str, out: &mut Vec<String>) {
        let mut rest = line;
        let mut had_marker = false;
        loop {
            let Some(c) = MARKER.captures(rest) else {
                self.text(rest, had_marker, out);
                return;
            };
            let m = c.get(0).expect("whole match");
            // Text before a marker (usually an erase-line code) is part of the line before.
            self.text(&rest[..m.start()], true, out);
            had_marker = true;
            let ts: u64 = c[2].parse().unwrap_or(0);
            let name = c[3].to_owned();
            let collapsed = c
                .get(4)
                .is_some_and(|o| o.as_str().contains("collapsed=true"));
            let after = &rest[m.end()..];
            if &c[1] == "start" {
                // The header runs to the next marker or the end of the line.
                let end = MARKER.find(after).map_or(after.len(), |n| n.start());
                let header = self.clean(&after[..end]);
                let top = self.open.is_empty();
                let folded = collapsed || (top && !is_script_section(&name));
                if !folded {
                    let shown = self.paint(&header);
                    self.emit(shown, out);
                }
                self.open.push(Section {
                    name,
                    started: ts,
                    header,
                    folded,
                    held: Vec::new(),
                    error: false,
                });
                rest = &after[end..];
            } else {
                self.end_section(&name, ts, out);
                rest = after;
            }
        }
    }

    fn end_section(&mut self, name: &str, ts: u64, out: &mut Vec<String>) {
        let Some(i) = self.open.iter().rposition(|s| s.name == name) else {
            return; // an end without a start: nothing to close
        };
        // Sections left open inside it end with it.
        while self.open.len() > i + 1 {
            let inner = self.open.pop().expect("len checked");
            if let Some(p) = self.open.last_mut() {
                p.held.extend(inner.held);
                p.error |= inner.error;
            }
        }
        let s = self.open.pop().expect("index valid");
        let took = duration(ts.saturating_sub(s.started));
        if s.folded {
            let line = self.paint(&format!("▸ {} ({took})", s.header));
            self.emit(line, out);
            if s.error {
                for l in s.held {
                    self.emit(l, out);
                }
            }
        } else {
            let line = self.paint(&format!("└ {took}"));
            self.emit(line, out);
        }
    }

    /// Text of a line (no markers): erase-line codes dropped, `\r` redraws resolved.
    fn text(&mut self, t: &str, beside_marker: bool, out: &mut Vec<String>) {
        let t = self.clean(t);
        if beside_marker && strip_ansi(&t).trim().is_empty() {
            return;
        }
        let t = self.paint(&t);
        self.emit(t, out);
    }

    fn clean(&self, t: &str) -> String {
        let t = ERASE_LINE.replace_all(t, "");
        let t = t.strip_suffix('\r').unwrap_or(&t);
        // A carriage return redraws the line: what a terminal ends up showing is the last part.
        let shown = t.rsplit('\r').find(|p| !p.is_empty()).unwrap_or("");
        let mut s = shown.to_owned();
        if self.color && s.contains('\x1b') {
            s.push_str("\x1b[0m");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(raw: &[u8], color: bool) -> Vec<String> {
        let mut r = TraceRenderer::new(color);
        let mut out = r.push(raw);
        out.extend(r.finish());
        out
    }

    /// A shell-executor job as runner 19.4 wrote it (recorded from `runnerlab run -e shell`,
    /// timestamps and ids as they were).
    const RECORDED: &[u8] = include_bytes!("testdata/shell-job.trace");

    #[test]
    fn a_recorded_trace_folds_the_runner_sections_and_shows_the_script() {
        let out = render(RECORDED, false);
        insta::assert_snapshot!(out.join("\n"));
    }

    #[test]
    fn colours_stay_for_a_terminal_and_go_otherwise() {
        let colored = render(RECORDED, true).join("\n");
        assert!(colored.contains("\x1b[32;1m"), "{colored:?}");
        let plain = render(RECORDED, false).join("\n");
        assert!(!plain.contains('\x1b'), "{plain:?}");
    }

    #[test]
    fn bytes_in_any_chunks_give_the_same_lines() {
        let whole = render(RECORDED, false);
        for size in [1, 7, 64, 1000] {
            let mut r = TraceRenderer::new(false);
            let mut out = Vec::new();
            for chunk in RECORDED.chunks(size) {
                out.extend(r.push(chunk));
            }
            out.extend(r.finish());
            assert_eq!(out, whole, "chunks of {size}");
        }
    }

    const T: &str = "2026-04-16T10:00:00.123456Z";

    #[test]
    fn a_folded_section_is_one_line_with_its_duration() {
        let raw = format!(
            "{T} 00O Running with gitlab-runner 19.4.0\n\
             {T} 00O \x1b[0Ksection_start:1700000000:get_sources\r\x1b[0K\x1b[0K\x1b[36;1mGetting source from Git repository\x1b[0;m\n\
             {T} 00O Fetching changes...\n\
             {T} 00O section_end:1700000065:get_sources\r\x1b[0K\n\
             {T} 00O \x1b[32;1mJob succeeded\x1b[0;m\n"
        );
        assert_eq!(
            render(raw.as_bytes(), false),
            [
                "Running with gitlab-runner 19.4.0",
                "▸ Getting source from Git repository (01:05)",
                "Job succeeded"
            ]
        );
    }

    #[test]
    fn the_script_is_shown_with_its_header_and_end() {
        let raw = format!(
            "{T} 00O section_start:1700000000:step_script\r\x1b[0K\x1b[0K\x1b[36;1mExecuting \"step_script\" stage of the job script\x1b[0;m\n\
             {T} 00O \x1b[32;1m$ echo hi\x1b[0;m\n\
             {T} 01O hi\n\
             {T} 01O par\n\
             {T} 01O+tial\n\
             {T} 00O section_end:1700000002:step_script\r\x1b[0K\n"
        );
        assert_eq!(
            render(raw.as_bytes(), false),
            [
                "Executing \"step_script\" stage of the job script",
                "$ echo hi",
                "hi",
                "partial",
                "└ 00:02"
            ]
        );
    }

    #[test]
    fn a_continuation_waits_for_the_next_line_or_idle() {
        let mut r = TraceRenderer::new(false);
        assert!(r.push(format!("{T} 01O par\n").as_bytes()).is_empty());
        assert!(r.push(format!("{T} 01O+tial\n").as_bytes()).is_empty());
        assert_eq!(r.idle(), ["partial"]);
        assert!(r.finish().is_empty());
    }

    #[test]
    fn a_folded_section_with_an_error_or_without_an_end_is_shown_in_full() {
        let raw = format!(
            "{T} 00O section_start:1700000000:get_sources\r\x1b[0K\x1b[36;1mGetting source from Git repository\x1b[0;m\n\
             {T} 00O fatal: unable to access\n\
             {T} 00O \x1b[31;1mERROR: Job failed: exit code 1\x1b[0;m\n\
             {T} 00O section_end:1700000003:get_sources\r\x1b[0K\n\
             {T} 00O section_start:1700000004:upload_artifacts_on_failure\r\x1b[0KUploading artifacts for failed job\n\
             {T} 00O Uploading artifacts...\n"
        );
        assert_eq!(
            render(raw.as_bytes(), false),
            [
                "▸ Getting source from Git repository (00:03)",
                "fatal: unable to access",
                "ERROR: Job failed: exit code 1",
                "▸ Uploading artifacts for failed job (did not end)",
                "Uploading artifacts...",
            ]
        );
    }

    #[test]
    fn the_scripts_own_sections_show_unless_collapsed() {
        let raw = format!(
            "{T} 00O section_start:1:step_script\r\x1b[0KExecuting step_script\n\
             {T} 01O section_start:2:mine\r\x1b[0KMy section\n\
             {T} 01O inside mine\n\
             {T} 01O section_end:3:mine\r\x1b[0K\n\
             {T} 01O section_start:3:quiet[collapsed=true]\r\x1b[0KQuiet section\n\
             {T} 01O inside quiet\n\
             {T} 01O section_end:5:quiet\r\x1b[0K\n\
             {T} 00O section_end:6:step_script\r\x1b[0K\n"
        );
        assert_eq!(
            render(raw.as_bytes(), false),
            [
                "Executing step_script",
                "My section",
                "inside mine",
                "└ 00:01",
                "▸ Quiet section (00:02)",
                "└ 00:05"
            ]
        );
    }

    #[test]
    fn carriage_return_redraws_and_plain_text_pass() {
        assert_eq!(
            render(b"10%\r50%\r100%\nplain\n\nlast", false),
            ["100%", "plain", "", "last"]
        );
        assert_eq!(duration(3725), "1:02:05");
    }
}
