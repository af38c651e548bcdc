//! `compare.json` (schema [`super::SCHEMA`]), `compare.md` and `compare.html`, written atomically.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::Comparison;
use super::diff::{Class, CostRow, Row};
use crate::report::Status;

fn status(s: Option<Status>) -> &'static str {
    match s {
        None => "—",
        Some(Status::Passed) => "passed",
        Some(Status::Failed) => "failed",
        Some(Status::KnownFinding) => "known-finding",
        Some(Status::Skipped) => "skipped",
    }
}

/// The summary line: every class with rows, and the gate.
pub fn summary_line(c: &Comparison) -> String {
    let n = |k: Class| c.diff.summary.get(k.name()).copied().unwrap_or(0);
    let plural =
        |k: usize, one: &str, many: &str| format!("{k} {}", if k == 1 { one } else { many });
    let mut parts = vec![
        plural(n(Class::Regression), "regression", "regressions"),
        plural(
            n(Class::Accepted),
            "accepted regression",
            "accepted regressions",
        ),
        plural(n(Class::Fix), "fix", "fixes"),
        plural(
            n(Class::FindingAppeared),
            "finding appeared",
            "findings appeared",
        ),
        plural(n(Class::FindingGone), "finding gone", "findings gone"),
        format!("{} not applicable changed", n(Class::NotApplicableChanged)),
        format!("{} unchanged", n(Class::Unchanged)),
    ];
    if n(Class::MissingInA) > 0 {
        parts.push(format!("{} missing in A", n(Class::MissingInA)));
    }
    if n(Class::MissingInB) > 0 {
        parts.push(format!("{} missing in B", n(Class::MissingInB)));
    }
    parts.push(plural(
        c.diff.diffs.len(),
        "output differs",
        "outputs differ",
    ));
    if let Some(soak) = &c.soak {
        let n = |k: super::soak::SoakClass| soak.rows.iter().filter(|r| r.class == k).count();
        parts.push(format!(
            "soak: {} regressions, {} fixes",
            n(super::soak::SoakClass::Regression),
            n(super::soak::SoakClass::Fix)
        ));
    }
    format!(
        "{} — GATE: {}",
        parts.join(", "),
        if c.diff.gate.passed { "pass" } else { "fail" }
    )
}

fn link(dir: &str, trace: Option<&str>) -> Option<String> {
    trace.map(|t| {
        if dir.is_empty() {
            t.to_owned()
        } else {
            format!("{}/{t}", dir.trim_end_matches('/'))
        }
    })
}

fn f(x: Option<f64>, unit: &str) -> String {
    x.map(|x| format!("{x:.2}{unit}"))
        .unwrap_or_else(|| "—".into())
}

fn signed(x: Option<f64>, unit: &str) -> String {
    x.map(|x| format!("{x:+.2}{unit}"))
        .unwrap_or_else(|| "—".into())
}

/// The job-cost cells of one row: overhead A, B, Δ; hello e2e A, B; CLI ratio A, B, Δ; API ratio
/// A, B, Δ.
fn cost_cells(r: &CostRow) -> Vec<String> {
    let ta = r.a.as_ref().and_then(|c| c.trivial.as_ref());
    let tb = r.b.as_ref().and_then(|c| c.trivial.as_ref());
    vec![
        r.mode.clone(),
        f(r.a.as_ref().map(|c| c.median_overhead_s), "s"),
        f(r.b.as_ref().map(|c| c.median_overhead_s), "s"),
        signed(r.overhead_change_s, "s"),
        f(ta.map(|t| t.e2e_s), "s"),
        f(tb.map(|t| t.e2e_s), "s"),
        f(ta.and_then(|t| t.ratio_cli), ""),
        f(tb.and_then(|t| t.ratio_cli), ""),
        signed(r.ratio_cli_change, ""),
        f(ta.and_then(|t| t.ratio_api), ""),
        f(tb.and_then(|t| t.ratio_api), ""),
        signed(r.ratio_api_change, ""),
    ]
}

const COST_HEADER: [&str; 12] = [
    "mode",
    "overhead A",
    "overhead B",
    "Δ",
    "hello e2e A",
    "hello e2e B",
    "e2e/CLI floor A",
    "e2e/CLI floor B",
    "Δ",
    "e2e/API floor A",
    "e2e/API floor B",
    "Δ",
];

fn output_cell(n: usize) -> String {
    match n {
        0 => "same".into(),
        1 => "1 line".into(),
        n => format!("{n} lines"),
    }
}

fn class_cell(r: &Row) -> String {
    match &r.accepted {
        Some(why) => format!("{} ({why})", r.class.name()),
        None => r.class.name().to_owned(),
    }
}

pub fn markdown(c: &Comparison) -> String {
    let mut s = format!(
        "# runnerlab compare\n\n**{}**\n\n- A: `{}` — runner {}, podman {} (`{}/report.json`)\n- B: `{}` — runner {}, podman {} (`{}/report.json`)\n",
        summary_line(c),
        c.a.label,
        c.a.runner,
        c.a.podman,
        c.a.dir,
        c.b.label,
        c.b.runner,
        c.b.podman,
        c.b.dir,
    );
    if !c.diff.unused_accepts.is_empty() {
        s.push_str("- accept lines that matched no regression: ");
        let v: Vec<String> = c
            .diff
            .unused_accepts
            .iter()
            .map(|a| format!("`{} {}`", a.case, a.mode))
            .collect();
        s.push_str(&v.join(", "));
        s.push('\n');
    }
    s.push_str(
        "\n| case | mode | A | B | class | output | traces |\n|---|---|---|---|---|---|---|\n",
    );
    for r in &c.diff.rows {
        let mut traces = Vec::new();
        if let Some(l) = link(&c.a.dir, r.trace_a.as_deref()) {
            traces.push(format!("[A]({l})"));
        }
        if let Some(l) = link(&c.b.dir, r.trace_b.as_deref()) {
            traces.push(format!("[B]({l})"));
        }
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            r.case,
            r.mode,
            status(r.a),
            status(r.b),
            class_cell(r).replace('|', "\\|"),
            output_cell(r.output_differing_lines),
            traces.join(" ")
        ));
    }
    if !c.diff.diffs.is_empty() {
        s.push_str(
            "\n## Job output differences\n\nThe main job's output from `step_script` on, normalised, A against B.\n",
        );
        for d in &c.diff.diffs {
            s.push_str(&format!(
                "\n<details><summary>{} ({}): {} lines</summary>\n\n```diff\n{}```\n</details>\n",
                d.case, d.mode, d.differing_lines, d.diff
            ));
        }
    }
    if !c.diff.job_cost.is_empty() {
        s.push_str("\n## Job cost\n\nMedian overhead per job and the `hello` job against the container floors, A and B side by side (figures, never pass/fail).\n\n");
        s.push_str(&format!(
            "| {} |\n|{}\n",
            COST_HEADER.join(" | "),
            "---|".repeat(COST_HEADER.len())
        ));
        for r in &c.diff.job_cost {
            s.push_str(&format!("| {} |\n", cost_cells(r).join(" | ")));
        }
    }
    if let Some(soak) = &c.soak {
        s.push_str(&super::soak::markdown(soak));
    }
    s
}

/// Escape text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn colour(k: Class) -> &'static str {
    match k {
        Class::Regression => "#f8d0d0",
        Class::Accepted => "#f8e8c8",
        Class::Fix => "#d0f0d0",
        Class::FindingAppeared => "#fff3b0",
        Class::FindingGone => "#e0f0ff",
        Class::NotApplicableChanged => "#e8e8e8",
        Class::Unchanged => "#ffffff",
        Class::MissingInA | Class::MissingInB => "#e8d8f0",
    }
}

pub fn html(c: &Comparison) -> String {
    let mut s = String::from(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>runnerlab compare</title>\n<style>\
         body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}\
         td,th{border:1px solid #bbb;padding:.2em .5em;text-align:left}\
         pre{background:#f6f6f6;padding:.5em;overflow-x:auto}\
         .add{color:#075d07;background:#e6ffe6}.del{color:#8a0b0b;background:#ffe6e6}.hunk{color:#555}\
         .gate-pass{color:#075d07}.gate-fail{color:#8a0b0b}\
         </style></head><body>\n<h1>runnerlab compare</h1>\n",
    );
    s.push_str(&format!(
        "<p class=\"{}\"><strong>{}</strong></p>\n<ul><li>A: <code>{}</code> — runner {}, podman {}</li><li>B: <code>{}</code> — runner {}, podman {}</li></ul>\n",
        if c.diff.gate.passed { "gate-pass" } else { "gate-fail" },
        esc(&summary_line(c)),
        esc(&c.a.label),
        esc(&c.a.runner),
        esc(&c.a.podman),
        esc(&c.b.label),
        esc(&c.b.runner),
        esc(&c.b.podman),
    ));
    s.push_str("<table>\n<tr><th>case</th><th>mode</th><th>A</th><th>B</th><th>class</th><th>output</th><th>traces</th></tr>\n");
    for r in &c.diff.rows {
        let mut traces = Vec::new();
        if let Some(l) = link(&c.a.dir, r.trace_a.as_deref()) {
            traces.push(format!("<a href=\"{}\">A</a>", esc(&l)));
        }
        if let Some(l) = link(&c.b.dir, r.trace_b.as_deref()) {
            traces.push(format!("<a href=\"{}\">B</a>", esc(&l)));
        }
        s.push_str(&format!(
            "<tr style=\"background:{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            colour(r.class),
            esc(&r.case),
            esc(&r.mode),
            status(r.a),
            status(r.b),
            esc(&class_cell(r)),
            output_cell(r.output_differing_lines),
            traces.join(" ")
        ));
    }
    s.push_str("</table>\n");
    if !c.diff.diffs.is_empty() {
        s.push_str("<h2>Job output differences</h2>\n");
        for d in &c.diff.diffs {
            s.push_str(&format!(
                "<h3>{} ({}): {} lines</h3>\n<pre>",
                esc(&d.case),
                esc(&d.mode),
                d.differing_lines
            ));
            for line in d.diff.lines() {
                let class = if line.starts_with("+++") || line.starts_with("---") {
                    None
                } else if line.starts_with('+') {
                    Some("add")
                } else if line.starts_with('-') {
                    Some("del")
                } else if line.starts_with("@@") {
                    Some("hunk")
                } else {
                    None
                };
                match class {
                    Some(k) => s.push_str(&format!("<span class=\"{k}\">{}</span>\n", esc(line))),
                    None => s.push_str(&format!("{}\n", esc(line))),
                }
            }
            s.push_str("</pre>\n");
        }
    }
    if !c.diff.job_cost.is_empty() {
        s.push_str("<h2>Job cost</h2>\n<table>\n<tr>");
        for h in COST_HEADER {
            s.push_str(&format!("<th>{}</th>", esc(h)));
        }
        s.push_str("</tr>\n");
        for r in &c.diff.job_cost {
            s.push_str("<tr>");
            for cell in cost_cells(r) {
                s.push_str(&format!("<td>{}</td>", esc(&cell)));
            }
            s.push_str("</tr>\n");
        }
        s.push_str("</table>\n");
    }
    if let Some(soak) = &c.soak {
        s.push_str(&format!(
            "<h2>Soak</h2>\n<p>{} builds per mode on each side. A: {} (<a href=\"{}/report.html\">soak report</a>); B: {} (<a href=\"{}/report.html\">soak report</a>).</p>\n<table>\n<tr><th>mode</th><th>metric</th><th>A</th><th>B</th><th>class</th></tr>\n",
            soak.b.builds_per_mode,
            esc(&soak.a.engine),
            esc(&soak.a.dir),
            esc(&soak.b.engine),
            esc(&soak.b.dir),
        ));
        for r in &soak.rows {
            let bg = match r.class {
                super::soak::SoakClass::Regression => "#ffd6d6",
                super::soak::SoakClass::Fix => "#d6ffd6",
                super::soak::SoakClass::Unchanged | super::soak::SoakClass::NotComparable => "#fff",
                _ => "#fff3c4",
            };
            s.push_str(&format!(
                "<tr style=\"background:{bg}\"><td>{}</td><td>{}</td><td title=\"{}\">{}</td><td title=\"{}\">{}</td><td>{}</td></tr>\n",
                esc(&r.mode),
                esc(&r.metric),
                esc(r.a.as_ref().map(|c| c.note.as_str()).unwrap_or("")),
                esc(&super::soak::cell_text(r.a.as_ref(), &r.unit)),
                esc(r.b.as_ref().map(|c| c.note.as_str()).unwrap_or("")),
                esc(&super::soak::cell_text(r.b.as_ref(), &r.unit)),
                esc(r.class.name()),
            ));
        }
        s.push_str("</table>\n");
    }
    s.push_str("</body></html>\n");
    s
}

/// Write compare.json, compare.md and compare.html into `dir`; returns their paths.
pub fn write(c: &Comparison, dir: &Path) -> Result<Vec<PathBuf>> {
    use crate::redact::scrub;
    let files = [
        ("compare.json", serde_json::to_string_pretty(c)?),
        ("compare.md", markdown(c)),
        ("compare.html", html(c)),
    ];
    let mut out = Vec::new();
    for (name, text) in files {
        let p = dir.join(name);
        crate::paths::write_atomic(&p, scrub(&text).as_bytes())?;
        out.push(p);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::diff::tests::{case, report};
    use super::super::diff::{Accept, Side, diff};
    use super::super::{Comparison, SideInfo};
    use super::*;
    use crate::report::{ModeCost, TrivialJobCost};

    fn sample(dir: &Path) -> Comparison {
        let a_dir = dir.join("a");
        let b_dir = dir.join("b");
        let t = "traces/p/hello.shell.log";
        crate::paths::write_atomic(&a_dir.join(t), b"[step_script]\n$ echo <hi>\nhi\n").unwrap();
        crate::paths::write_atomic(&b_dir.join(t), b"[step_script]\n$ echo <hi>\nho & co\n")
            .unwrap();
        let mut ra = report(vec![
            case("hello", "shell", Status::Passed, Some(t)),
            case("svc", "docker", Status::Passed, None),
            case("net", "docker", Status::Passed, None),
        ]);
        let mut rb = report(vec![
            case("hello", "shell", Status::Passed, Some(t)),
            case("svc", "docker", Status::Failed, None),
            case("net", "docker", Status::Failed, None),
        ]);
        let cost = |r: f64| ModeCost {
            mode: "shell".into(),
            jobs: 2,
            median_overhead_s: r,
            trivial: Some(TrivialJobCost {
                e2e_s: 2.0 * r,
                script_s: 0.1,
                containers: 1,
                cli_floor_s: 0.5,
                api_floor_s: None,
                ratio_cli: Some(r),
                ratio_api: None,
            }),
        };
        ra.job_cost = vec![cost(1.0)];
        rb.job_cost = vec![cost(1.5)];
        let accept = vec![Accept {
            case: "net".into(),
            mode: "docker".into(),
            reason: "<on purpose>".into(),
        }];
        let (sa, sb) = (
            Side {
                report: ra,
                dir: a_dir,
            },
            Side {
                report: rb,
                dir: b_dir,
            },
        );
        let info = |label: &str, d: &str, s: &Side| SideInfo {
            label: label.into(),
            stack: None,
            baseline: None,
            dir: d.into(),
            run_id: s.report.run_id.clone(),
            runner: s.report.environment.runner.describe.clone(),
            podman: s.report.environment.podman.version.clone(),
        };
        Comparison {
            schema: super::super::SCHEMA.into(),
            a: info("podman=host", "a", &sa),
            b: info("podman=<trixie>", "b", &sb),
            accept: accept.clone(),
            diff: diff(&sa, &sb, &accept, "A", "B").unwrap(),
            soak: None,
        }
    }

    #[test]
    fn compare_json_parses_back() {
        let tmp = tempfile::tempdir().unwrap();
        let c = sample(tmp.path());
        let files = write(&c, tmp.path()).unwrap();
        assert_eq!(files.len(), 3);
        let text = std::fs::read_to_string(tmp.path().join("compare.json")).unwrap();
        let back: Comparison = serde_json::from_str(&text).unwrap();
        assert_eq!(back.schema, "runnerlab.compare/1");
        assert_eq!(back.diff.rows, c.diff.rows);
        assert_eq!(back.diff.diffs, c.diff.diffs);
        assert_eq!(back.diff.gate, c.diff.gate);
        assert_eq!(back.accept, c.accept);
        assert_eq!(back.a.label, "podman=host");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["rows"][1]["class"], "regression");
        assert_eq!(v["rows"][2]["class"], "accepted");
        assert_eq!(v["gate"]["exit_code"], 1);
    }

    #[test]
    fn markdown_has_summary_table_links_diffs_and_cost() {
        let tmp = tempfile::tempdir().unwrap();
        let md = markdown(&sample(tmp.path()));
        assert!(
            md.contains("**1 regression, 1 accepted regression, 0 fixes, 0 findings appeared, 0 findings gone, 0 not applicable changed, 1 unchanged, 1 output differs — GATE: fail**"),
            "{md}"
        );
        assert!(
            md.contains("| hello | shell | passed | passed | unchanged | 2 lines | [A](a/traces/p/hello.shell.log) [B](b/traces/p/hello.shell.log) |"),
            "{md}"
        );
        assert!(
            md.contains("| svc | docker | passed | failed | regression | same |  |"),
            "{md}"
        );
        assert!(
            md.contains("| net | docker | passed | failed | accepted (<on purpose>) |"),
            "{md}"
        );
        assert!(md.contains("+ho & co"), "{md}");
        assert!(
            md.contains("| shell | 1.00s | 1.50s | +0.50s | 2.00s | 3.00s | 1.00 | 1.50 | +0.50 | — | — | — |"),
            "{md}"
        );
    }

    #[test]
    fn html_escapes_and_colours() {
        let tmp = tempfile::tempdir().unwrap();
        let h = html(&sample(tmp.path()));
        assert!(h.contains("podman=&lt;trixie&gt;"), "{h}");
        assert!(!h.contains("<trixie>"), "{h}");
        assert!(h.contains("accepted (&lt;on purpose&gt;)"), "{h}");
        assert!(h.contains("<span class=\"add\">+ho &amp; co</span>"), "{h}");
        assert!(h.contains("<span class=\"del\">-hi</span>"), "{h}");
        assert!(h.contains("$ echo &lt;hi&gt;"), "{h}");
        assert!(h.contains("background:#f8d0d0"), "{h}");
        assert!(h.contains("class=\"gate-fail\""), "{h}");
        assert!(h.contains("href=\"a/traces/p/hello.shell.log\""), "{h}");
    }
}
