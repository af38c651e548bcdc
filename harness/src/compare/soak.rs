//! `compare --soak N`: both stacks soaked N builds per mode, their leak verdicts side by side.
//!
//! A soak verdict that holds on A and fails on B (binding, not a known finding) is a regression
//! of the gate, as a case that passed on A and failed on B is; `--accept` takes it as
//! `soak:<metric> <mode> <reason>`. A verdict that cannot be judged on either side ("too short to
//! judge") is shown, never classified as a change.

use serde::{Deserialize, Serialize};

use super::diff::Accept;
use crate::soak::SoakReport;
use crate::soak::verdict::Verdict;

/// How a verdict changed from A to B.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SoakClass {
    /// Held on A, fails on B: fails the gate unless accepted.
    Regression,
    /// A regression listed in `--accept`.
    Accepted,
    /// Failed on A, holds on B.
    Fix,
    /// A known finding (of the mode, on this Podman) on B that A did not show.
    FindingAppeared,
    /// A known finding on A that B no longer shows.
    FindingGone,
    Unchanged,
    /// Judged on one side only (too few builds, or the metric exists on one side only).
    NotComparable,
}

impl SoakClass {
    pub fn name(self) -> &'static str {
        match self {
            SoakClass::Regression => "regression",
            SoakClass::Accepted => "accepted regression",
            SoakClass::Fix => "fix",
            SoakClass::FindingAppeared => "finding appeared",
            SoakClass::FindingGone => "finding gone",
            SoakClass::Unchanged => "unchanged",
            SoakClass::NotComparable => "not comparable",
        }
    }
}

/// One side's verdict of a metric, as the comparison shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SoakCell {
    /// `pass`, `FAIL`, `known finding`, `too short to judge`, `not judged`, `high (not binding)`.
    pub status: String,
    pub slope_per_build: f64,
    pub note: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Holds,
    Fails,
    Known,
    Unjudged,
}

fn outcome(v: &Verdict) -> Outcome {
    match v {
        v if !v.judged => Outcome::Unjudged,
        v if v.pass => Outcome::Holds,
        v if v.known.is_some() => Outcome::Known,
        // A verdict of the shared host is reported, never decides.
        v if !v.binding => Outcome::Unjudged,
        _ => Outcome::Fails,
    }
}

fn cell(v: &Verdict) -> SoakCell {
    let status = match (outcome(v), v.binding) {
        (Outcome::Unjudged, _) if v.note.starts_with("too short") => "too short to judge",
        (Outcome::Unjudged, false) if v.judged => "high (not binding)",
        (Outcome::Unjudged, _) => "not judged",
        (Outcome::Holds, _) => "pass",
        (Outcome::Known, _) => "known finding",
        (Outcome::Fails, _) => "FAIL",
    };
    SoakCell {
        status: status.into(),
        slope_per_build: v.slope_per_build,
        note: match &v.known {
            Some(k) => format!("{} — {k}", v.note),
            None => v.note.clone(),
        },
    }
}

/// A metric of a mode, A against B.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SoakRow {
    pub mode: String,
    pub metric: String,
    pub unit: String,
    pub a: Option<SoakCell>,
    pub b: Option<SoakCell>,
    pub class: SoakClass,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted: Option<String>,
}

/// One side's soak, as compare.json records it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SoakSide {
    /// The soak's report directory relative to the compare directory (`a/soak`).
    pub dir: String,
    pub id: String,
    pub engine: String,
    pub builds_per_mode: usize,
    pub passed: bool,
    pub wall_s: f64,
}

/// The soaks of both sides compared.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SoakComparison {
    pub a: SoakSide,
    pub b: SoakSide,
    pub rows: Vec<SoakRow>,
    pub unaccepted_regressions: usize,
}

/// The accept key of a soak verdict: `soak:<metric>`.
pub fn accept_key(metric: &str) -> String {
    format!("soak:{metric}")
}

fn classify(a: Option<&Verdict>, b: Option<&Verdict>) -> SoakClass {
    use Outcome::*;
    let (Some(a), Some(b)) = (a, b) else {
        return SoakClass::NotComparable;
    };
    match (outcome(a), outcome(b)) {
        (Unjudged, _) | (_, Unjudged) => SoakClass::NotComparable,
        (Holds, Fails) | (Known, Fails) => SoakClass::Regression,
        (Fails, Holds) | (Fails, Known) => SoakClass::Fix,
        (Holds, Known) | (Fails, Fails) | (Holds, Holds) | (Known, Known) => {
            if outcome(a) != Known && outcome(b) == Known {
                SoakClass::FindingAppeared
            } else {
                SoakClass::Unchanged
            }
        }
        (Known, Holds) => SoakClass::FindingGone,
    }
}

/// Compare two soaks; `accept` may turn regressions into accepted ones (marking `used`).
pub fn compare(
    a: (&SoakReport, &str),
    b: (&SoakReport, &str),
    accept: &[Accept],
    used: &mut [bool],
) -> SoakComparison {
    let mut keys: Vec<(&str, &str, &str)> = Vec::new();
    for v in a.0.verdicts.iter().chain(&b.0.verdicts) {
        let k = (v.mode.as_str(), v.metric.as_str(), v.unit.as_str());
        if !keys.iter().any(|x| x.0 == k.0 && x.1 == k.1) {
            keys.push(k);
        }
    }
    let find = |r: &'_ SoakReport, mode: &str, metric: &str| -> Option<Verdict> {
        r.verdicts
            .iter()
            .find(|v| v.mode == mode && v.metric == metric)
            .cloned()
    };
    let mut rows = Vec::new();
    for (mode, metric, unit) in keys {
        let (va, vb) = (find(a.0, mode, metric), find(b.0, mode, metric));
        let mut class = classify(va.as_ref(), vb.as_ref());
        let mut accepted = None;
        if class == SoakClass::Regression
            && let Some(i) = accept
                .iter()
                .position(|x| x.case == accept_key(metric) && x.mode == mode)
        {
            class = SoakClass::Accepted;
            accepted = Some(accept[i].reason.clone());
            used[i] = true;
        }
        rows.push(SoakRow {
            mode: mode.into(),
            metric: metric.into(),
            unit: unit.into(),
            a: va.as_ref().map(cell),
            b: vb.as_ref().map(cell),
            class,
            accepted,
        });
    }
    let side = |r: &SoakReport, dir: &str| SoakSide {
        dir: dir.into(),
        id: r.id.clone(),
        engine: r.engine.clone(),
        builds_per_mode: r.builds_per_mode,
        passed: r.passed,
        wall_s: r.wall_s,
    };
    SoakComparison {
        a: side(a.0, a.1),
        b: side(b.0, b.1),
        unaccepted_regressions: rows
            .iter()
            .filter(|r| r.class == SoakClass::Regression)
            .count(),
        rows,
    }
}

/// The slope cell of a row side: `pass +0.000 fds/build`.
pub fn cell_text(c: Option<&SoakCell>, unit: &str) -> String {
    match c {
        None => "—".into(),
        Some(c) => format!("{} ({:+.3} {unit}/build)", c.status, c.slope_per_build),
    }
}

/// The Markdown section of a soak comparison.
pub fn markdown(s: &SoakComparison) -> String {
    let mut o = format!(
        "\n## Soak\n\n{} builds per mode on each side. A: {} (`{}/report.html`, {}); B: {} (`{}/report.html`, {}). Leak verdicts side by side; a verdict that holds on A and fails on B fails the gate.\n\n| mode | metric | A | B | class |\n|---|---|---|---|---|\n",
        s.b.builds_per_mode,
        s.a.engine,
        s.a.dir,
        if s.a.passed { "pass" } else { "FAIL" },
        s.b.engine,
        s.b.dir,
        if s.b.passed { "pass" } else { "FAIL" },
    );
    for r in &s.rows {
        o.push_str(&format!(
            "| {} | {} | {} | {} | {}{} |\n",
            r.mode,
            r.metric,
            cell_text(r.a.as_ref(), &r.unit),
            cell_text(r.b.as_ref(), &r.unit),
            r.class.name(),
            r.accepted
                .as_deref()
                .map(|x| format!(": {x}"))
                .unwrap_or_default()
                .replace('|', "\\|"),
        ));
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(mode: &str, metric: &str, pass: bool, known: bool, judged: bool) -> Verdict {
        Verdict {
            mode: mode.into(),
            metric: metric.into(),
            unit: "zombies".into(),
            slope_per_build: if pass { 0.0 } else { 6.0 },
            slope_stderr: 0.0,
            r2: 1.0,
            threshold_per_build: 0.05,
            first: 0.0,
            last: 0.0,
            pass,
            judged,
            known: known.then(|| "podman#9777".into()),
            scope: "lab".into(),
            binding: true,
            note: String::new(),
        }
    }

    fn soak(verdicts: Vec<Verdict>) -> SoakReport {
        serde_json::from_value(serde_json::json!({
            "schema": "runnerlab.soak/1", "id": "s", "started": "", "builds_per_mode": 40,
            "leak_switch": false, "check_interval_s": 1, "builds": [], "modes": [],
            "series": {"interval_s": 1.0, "samples": [], "overhead_pct_of_core": 0.0,
                       "wall_s": 1.0},
            "series_mode": [], "verdicts": verdicts, "passed": true, "wall_s": 1.0
        }))
        .expect("a minimal soak report")
    }

    #[test]
    fn verdicts_are_classified_and_the_gate_counts_regressions() {
        let a = soak(vec![
            v("docker", "podman-api.zombies", false, true, true),
            v("custom", "conmon.procs", true, false, true),
            v("shell", "runner.rss", true, false, true),
            v("shell", "runner.fds", false, false, true),
            v("shell", "runner.threads", true, false, false),
        ]);
        let b = soak(vec![
            v("docker", "podman-api.zombies", true, false, true),
            v("custom", "conmon.procs", false, false, true),
            v("shell", "runner.rss", true, false, true),
            v("shell", "runner.fds", true, false, true),
            v("shell", "runner.threads", false, false, true),
        ]);
        let mut used = [];
        let c = compare((&a, "a/soak"), (&b, "b/soak"), &[], &mut used);
        let class = |m: &str| c.rows.iter().find(|r| r.metric == m).unwrap().class;
        assert_eq!(class("podman-api.zombies"), SoakClass::FindingGone);
        assert_eq!(class("conmon.procs"), SoakClass::Regression);
        assert_eq!(class("runner.rss"), SoakClass::Unchanged);
        assert_eq!(class("runner.fds"), SoakClass::Fix);
        // Unjudged on A: no claim either way.
        assert_eq!(class("runner.threads"), SoakClass::NotComparable);
        assert_eq!(c.unaccepted_regressions, 1);
        let md = markdown(&c);
        assert!(md.contains("| custom | conmon.procs | pass"), "{md}");

        let accept = [Accept {
            case: accept_key("conmon.procs"),
            mode: "custom".into(),
            reason: "5.4 keeps conmon for --rm".into(),
        }];
        let mut used = [false];
        let c = compare((&a, "a/soak"), (&b, "b/soak"), &accept, &mut used);
        assert_eq!(c.unaccepted_regressions, 0);
        assert!(used[0]);
    }
}
