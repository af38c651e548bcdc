//! Report A against report B: each case × mode classified, job outputs diffed, job cost side by
//! side, and the gate.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::report::{ModeCost, Report, Status};

/// What happened to a case × mode between A and B.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Class {
    /// Passed (or a known finding) in A, failed in B. Fails the gate.
    Regression,
    /// A regression listed in the `--accept` file: reported, not failing.
    Accepted,
    /// Failed in A, passed in B.
    Fix,
    /// A known finding in B that A did not have (passed or failed there).
    FindingAppeared,
    /// A known finding in A that passed in B.
    FindingGone,
    /// Skipped on one side only: the case (no longer) applies.
    NotApplicableChanged,
    Unchanged,
    /// Only B has the case × mode.
    MissingInA,
    /// Only A has the case × mode.
    MissingInB,
}

impl Class {
    pub const ALL: [Class; 9] = [
        Class::Regression,
        Class::Accepted,
        Class::Fix,
        Class::FindingAppeared,
        Class::FindingGone,
        Class::NotApplicableChanged,
        Class::Unchanged,
        Class::MissingInA,
        Class::MissingInB,
    ];

    /// The name used in compare.json, compare.md and compare.html.
    pub fn name(self) -> &'static str {
        match self {
            Class::Regression => "regression",
            Class::Accepted => "accepted",
            Class::Fix => "fix",
            Class::FindingAppeared => "finding-appeared",
            Class::FindingGone => "finding-gone",
            Class::NotApplicableChanged => "not-applicable-changed",
            Class::Unchanged => "unchanged",
            Class::MissingInA => "missing-in-a",
            Class::MissingInB => "missing-in-b",
        }
    }
}

/// The class of a status change (before any `--accept`).
pub fn classify(a: Option<Status>, b: Option<Status>) -> Class {
    use Status::*;
    match (a, b) {
        (None, _) => Class::MissingInA,
        (_, None) => Class::MissingInB,
        (Some(a), Some(b)) if a == b => Class::Unchanged,
        (Some(Skipped), _) | (_, Some(Skipped)) => Class::NotApplicableChanged,
        (Some(Passed | KnownFinding), Some(Failed)) => Class::Regression,
        (Some(Failed), Some(Passed)) => Class::Fix,
        (Some(Passed | Failed), Some(KnownFinding)) => Class::FindingAppeared,
        (Some(KnownFinding), Some(Passed)) => Class::FindingGone,
        // Equal statuses are handled above.
        (Some(_), Some(_)) => Class::Unchanged,
    }
}

/// One line of an `--accept` file: a regression the user has looked at and accepts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accept {
    pub case: String,
    pub mode: String,
    pub reason: String,
}

/// Parse an `--accept` file's text (`file` names it in errors): one `case mode reason` a line,
/// `#` comments and blank lines ignored.
pub fn parse_accept(file: &Path, text: &str) -> Result<Vec<Accept>> {
    let mut out: Vec<Accept> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let at = format!("{}:{}", file.display(), i + 1);
        let line = match raw.find('#') {
            Some(p) => &raw[..p],
            None => raw,
        }
        .trim();
        if line.is_empty() {
            continue;
        }
        // Fields are separated by any run of whitespace; the reason is the rest of the line.
        let word = |s: &'_ str| -> (String, String) {
            let s = s.trim_start();
            let end = s.find(char::is_whitespace).unwrap_or(s.len());
            (s[..end].to_owned(), s[end..].trim().to_owned())
        };
        let (case, rest) = word(line);
        let (mode, reason) = word(&rest);
        let (case, mode, reason) = (case.as_str(), mode.as_str(), reason.as_str());
        if mode.is_empty() || reason.is_empty() {
            bail!(
                "{at}: expected `<case> <mode> <reason>`, found {line:?} — fix: name the case, the executor mode and why the regression is accepted (e.g. `services docker FF_NETWORK_PER_BUILD is off on purpose`)"
            );
        }
        if mode.parse::<crate::executor::Executor>().is_err() {
            bail!(
                "{at}: unknown executor mode {mode:?} — fix: use shell, docker or custom (one line per mode)"
            );
        }
        if let Some(prev) = out.iter().position(|a| a.case == case && a.mode == mode) {
            bail!(
                "{at}: {case} {mode} is already accepted on an earlier line (entry {}) — fix: keep one line per case and mode",
                prev + 1
            );
        }
        out.push(Accept {
            case: case.to_owned(),
            mode: mode.to_owned(),
            reason: reason.to_owned(),
        });
    }
    Ok(out)
}

/// Read and parse an `--accept` file.
pub fn load_accept(file: &Path) -> Result<Vec<Accept>> {
    let text = std::fs::read_to_string(file).with_context(|| {
        format!(
            "cannot read the accept file {} — fix: check the --accept path",
            file.display()
        )
    })?;
    parse_accept(file, &text)
}

/// One case × mode, A against B.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub case: String,
    pub mode: String,
    pub a: Option<Status>,
    pub b: Option<Status>,
    pub class: Class,
    /// The `--accept` reason, for [`Class::Accepted`].
    pub accepted: Option<String>,
    /// The main job's trace, relative to the report directory of each side.
    pub trace_a: Option<String>,
    pub trace_b: Option<String>,
    /// Lines only in one side's normalised job output (0: same, or no output to compare).
    pub output_differing_lines: usize,
}

/// The unified diff of one case × mode's normalised job output, A against B.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutputDiff {
    pub case: String,
    pub mode: String,
    pub differing_lines: usize,
    pub diff: String,
}

/// One mode's job cost in A and in B.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CostRow {
    pub mode: String,
    pub a: Option<ModeCost>,
    pub b: Option<ModeCost>,
    /// B − A of the median overhead, seconds.
    pub overhead_change_s: Option<f64>,
    /// B − A of the `hello` job's e2e / (containers × CLI floor).
    pub ratio_cli_change: Option<f64>,
    /// B − A of the `hello` job's e2e / (containers × API floor).
    pub ratio_api_change: Option<f64>,
}

/// The verdict: exit 0 when no regression is left unaccepted, 1 otherwise (2, a comparison that
/// could not be made, is an error before there is a verdict).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gate {
    pub passed: bool,
    pub exit_code: u8,
    pub unaccepted_regressions: usize,
}

/// A report and the directory its trace paths are relative to.
#[derive(Clone, Debug)]
pub struct Side {
    pub report: Report,
    pub dir: PathBuf,
}

impl Side {
    /// Load `<dir>/report.json`; errors name the file and the fix.
    pub fn load(dir: &Path) -> Result<Side> {
        Ok(Side {
            report: super::load_report(
                &dir.join("report.json"),
                "point at a report directory (target/runnerlab/<run>/), or run `cargo lab conformance` again",
            )?,
            dir: dir.to_path_buf(),
        })
    }

    /// A trace's normalised job output (see [`trace_output`]).
    pub fn job_output(&self, trace: &str) -> Result<String> {
        trace_output(&self.dir, trace)
    }
}

/// The normalised job output of the trace `trace` (relative to the report directory `dir`): from
/// `step_script` on, run-specific values replaced, as the cross-mode comparison sees it.
pub fn trace_output(dir: &Path, trace: &str) -> Result<String> {
    let p = dir.join(trace);
    let text = std::fs::read_to_string(&p).with_context(|| {
        format!(
            "{} is listed in {} but cannot be read — fix: keep the report directory whole (copy it with its traces/)",
            p.display(),
            dir.join("report.json").display()
        )
    })?;
    Ok(crate::cases::step_script_on(
        &crate::redact::normalize_for_snapshot(&text),
    ))
}

/// Everything the comparison found (labels and paths are added by the caller).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Diff {
    pub rows: Vec<Row>,
    pub diffs: Vec<OutputDiff>,
    pub job_cost: Vec<CostRow>,
    /// Rows per class name.
    pub summary: BTreeMap<String, usize>,
    /// `--accept` lines that matched no regression (stale, or a typo).
    pub unused_accepts: Vec<Accept>,
    pub gate: Gate,
}

/// Compare B with A. `a_label` and `b_label` head the unified diffs.
pub fn diff(a: &Side, b: &Side, accept: &[Accept], a_label: &str, b_label: &str) -> Result<Diff> {
    let mut keys: Vec<(&str, &str)> = Vec::new();
    for c in a.report.cases.iter().chain(&b.report.cases) {
        let k = (c.name.as_str(), c.mode.as_str());
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    let find = |r: &Report, (n, m): (&str, &str)| {
        r.cases.iter().find(|c| c.name == n && c.mode == m).cloned()
    };
    let mut rows = Vec::new();
    let mut diffs = Vec::new();
    let mut used = vec![false; accept.len()];
    for k in keys {
        let (ca, cb) = (find(&a.report, k), find(&b.report, k));
        let mut class = classify(ca.as_ref().map(|c| c.status), cb.as_ref().map(|c| c.status));
        let mut accepted = None;
        if class == Class::Regression
            && let Some(i) = accept.iter().position(|x| x.case == k.0 && x.mode == k.1)
        {
            class = Class::Accepted;
            accepted = Some(accept[i].reason.clone());
            used[i] = true;
        }
        let trace_a = ca.and_then(|c| c.trace);
        let trace_b = cb.and_then(|c| c.trace);
        let mut output_differing_lines = 0;
        if let (Some(ta), Some(tb)) = (&trace_a, &trace_b) {
            let (oa, ob) = (a.job_output(ta)?, b.job_output(tb)?);
            let (n, text) = crate::report::unified_diff(
                &oa,
                &ob,
                &format!("{a_label} {}/{}", k.0, k.1),
                &format!("{b_label} {}/{}", k.0, k.1),
            );
            if n > 0 {
                output_differing_lines = n;
                diffs.push(OutputDiff {
                    case: k.0.to_owned(),
                    mode: k.1.to_owned(),
                    differing_lines: n,
                    diff: text,
                });
            }
        }
        rows.push(Row {
            case: k.0.to_owned(),
            mode: k.1.to_owned(),
            a: find(&a.report, k).map(|c| c.status),
            b: find(&b.report, k).map(|c| c.status),
            class,
            accepted,
            trace_a,
            trace_b,
            output_differing_lines,
        });
    }
    let mut summary = BTreeMap::new();
    for c in Class::ALL {
        summary.insert(
            c.name().to_owned(),
            rows.iter().filter(|r| r.class == c).count(),
        );
    }
    let unaccepted = rows.iter().filter(|r| r.class == Class::Regression).count();
    Ok(Diff {
        job_cost: job_cost(&a.report.job_cost, &b.report.job_cost),
        rows,
        diffs,
        summary,
        unused_accepts: accept
            .iter()
            .zip(used)
            .filter(|(_, u)| !u)
            .map(|(a, _)| a.clone())
            .collect(),
        gate: Gate {
            passed: unaccepted == 0,
            exit_code: u8::from(unaccepted > 0),
            unaccepted_regressions: unaccepted,
        },
    })
}

/// Each mode's job cost side by side, modes in A's order then B's.
pub fn job_cost(a: &[ModeCost], b: &[ModeCost]) -> Vec<CostRow> {
    let mut modes: Vec<&str> = Vec::new();
    for c in a.iter().chain(b) {
        if !modes.contains(&c.mode.as_str()) {
            modes.push(&c.mode);
        }
    }
    let change = |x: Option<f64>, y: Option<f64>| Some(y? - x?);
    modes
        .into_iter()
        .map(|m| {
            let ca = a.iter().find(|c| c.mode == m).cloned();
            let cb = b.iter().find(|c| c.mode == m).cloned();
            let ta = ca.as_ref().and_then(|c| c.trivial.as_ref());
            let tb = cb.as_ref().and_then(|c| c.trivial.as_ref());
            CostRow {
                mode: m.to_owned(),
                overhead_change_s: change(
                    ca.as_ref().map(|c| c.median_overhead_s),
                    cb.as_ref().map(|c| c.median_overhead_s),
                ),
                ratio_cli_change: change(
                    ta.and_then(|t| t.ratio_cli),
                    tb.and_then(|t| t.ratio_cli),
                ),
                ratio_api_change: change(
                    ta.and_then(|t| t.ratio_api),
                    tb.and_then(|t| t.ratio_api),
                ),
                a: ca,
                b: cb,
            }
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::report::{CaseResult, Environment, PodmanEnv, RunnerEnv, SCHEMA, TrivialJobCost};

    pub(crate) fn env(runner: &str, podman: &str) -> Environment {
        Environment {
            runner: RunnerEnv {
                version: "19.4.0".into(),
                revision: "fc1f1862".into(),
                source: "module:v1".into(),
                compat: None,
                describe: runner.into(),
                placement: "container".into(),
            },
            podman: PodmanEnv {
                version: podman.into(),
                rootless: true,
                runtime: "runc".into(),
                cgroup_version: "v2".into(),
                network_backend: "netavark".into(),
                uid_map: String::new(),
                engine: "host".into(),
                components: vec![],
            },
            kernel: "6.1".into(),
            harness_version: "0.1.0".into(),
        }
    }

    pub(crate) fn case(name: &str, mode: &str, status: Status, trace: Option<&str>) -> CaseResult {
        CaseResult {
            name: name.into(),
            mode: mode.into(),
            status,
            duration_s: 1.0,
            trace: trace.map(Into::into),
            detail: None,
        }
    }

    pub(crate) fn report(cases: Vec<CaseResult>) -> Report {
        Report {
            schema: SCHEMA.into(),
            run_id: "rl-test".into(),
            started_at: "2026-12-02T00:00:00Z".into(),
            duration_s: 1.0,
            environment: env("19.4.0 (fc1f1862)", "4.3.1"),
            cases,
            cross_mode: Vec::new(),
            job_cost: Vec::new(),
        }
    }

    fn side(dir: &Path, cases: Vec<CaseResult>, traces: &[(&str, &str)]) -> Side {
        for (p, text) in traces {
            crate::paths::write_atomic(&dir.join(p), text.as_bytes()).unwrap();
        }
        Side {
            report: report(cases),
            dir: dir.to_path_buf(),
        }
    }

    #[test]
    fn classification_table() {
        use Status::*;
        let table = [
            (Some(Passed), Some(Passed), Class::Unchanged),
            (Some(Failed), Some(Failed), Class::Unchanged),
            (Some(KnownFinding), Some(KnownFinding), Class::Unchanged),
            (Some(Skipped), Some(Skipped), Class::Unchanged),
            (Some(Passed), Some(Failed), Class::Regression),
            (Some(KnownFinding), Some(Failed), Class::Regression),
            (Some(Failed), Some(Passed), Class::Fix),
            (Some(Passed), Some(KnownFinding), Class::FindingAppeared),
            (Some(Failed), Some(KnownFinding), Class::FindingAppeared),
            (Some(KnownFinding), Some(Passed), Class::FindingGone),
            (Some(Skipped), Some(Passed), Class::NotApplicableChanged),
            (Some(Skipped), Some(Failed), Class::NotApplicableChanged),
            (Some(Passed), Some(Skipped), Class::NotApplicableChanged),
            (
                Some(KnownFinding),
                Some(Skipped),
                Class::NotApplicableChanged,
            ),
            (None, Some(Passed), Class::MissingInA),
            (Some(Failed), None, Class::MissingInB),
        ];
        for (a, b, want) in table {
            assert_eq!(classify(a, b), want, "{a:?} → {b:?}");
        }
    }

    #[test]
    fn accept_file_parses_comments_blanks_and_reasons() {
        let text = "# accepted for the 19.5 upgrade\n\nservices docker FF_NETWORK_PER_BUILD off on purpose\n  cancel   shell  flaky on this host # ticket 12\n";
        let a = parse_accept(Path::new("accept.txt"), text).unwrap();
        assert_eq!(
            a,
            [
                Accept {
                    case: "services".into(),
                    mode: "docker".into(),
                    reason: "FF_NETWORK_PER_BUILD off on purpose".into()
                },
                Accept {
                    case: "cancel".into(),
                    mode: "shell".into(),
                    reason: "flaky on this host".into()
                },
            ]
        );
    }

    #[test]
    fn accept_file_errors_name_file_line_and_fix() {
        let e = |t: &str| format!("{:#}", parse_accept(Path::new("acc"), t).unwrap_err());
        let m = e("# c\nservices docker\n");
        assert!(
            m.starts_with("acc:2: expected `<case> <mode> <reason>`"),
            "{m}"
        );
        assert!(m.contains("fix:"), "{m}");
        let m = e("services dokker because\n");
        assert!(
            m.starts_with("acc:1: unknown executor mode \"dokker\""),
            "{m}"
        );
        let m = e("a shell x\na shell y\n");
        assert!(m.starts_with("acc:2: a shell is already accepted"), "{m}");
        let m = e("lonely\n");
        assert!(m.starts_with("acc:1:"), "{m}");
    }

    #[test]
    fn diff_classifies_accepts_and_gates() {
        use Status::*;
        let ta = tempfile::tempdir().unwrap();
        let tb = tempfile::tempdir().unwrap();
        let a = side(
            ta.path(),
            vec![
                case("hello", "shell", Passed, Some("traces/p/hello.shell.log")),
                case("svc", "docker", Passed, None),
                case("net", "docker", Passed, None),
                case("old", "shell", Failed, None),
                case("gone", "custom", Passed, None),
            ],
            &[(
                "traces/p/hello.shell.log",
                "Running with gitlab-runner\n[step_script]\n$ echo hi\nhi\nJob succeeded\n",
            )],
        );
        let b = side(
            tb.path(),
            vec![
                case("hello", "shell", Passed, Some("traces/p/hello.shell.log")),
                case("svc", "docker", Failed, None),
                case("net", "docker", Failed, None),
                case("old", "shell", Passed, None),
                case("new", "shell", Passed, None),
            ],
            &[(
                "traces/p/hello.shell.log",
                "Running with gitlab-runner 19.5\n[step_script]\n$ echo hi\nhi\nWARNING: new\nJob succeeded\n",
            )],
        );
        let accept = vec![
            Accept {
                case: "net".into(),
                mode: "docker".into(),
                reason: "known".into(),
            },
            Accept {
                case: "stale".into(),
                mode: "shell".into(),
                reason: "old".into(),
            },
        ];
        let d = diff(&a, &b, &accept, "A", "B").unwrap();
        let classes: Vec<(&str, Class)> =
            d.rows.iter().map(|r| (r.case.as_str(), r.class)).collect();
        assert_eq!(
            classes,
            [
                ("hello", Class::Unchanged),
                ("svc", Class::Regression),
                ("net", Class::Accepted),
                ("old", Class::Fix),
                ("gone", Class::MissingInB),
                ("new", Class::MissingInA),
            ]
        );
        assert_eq!(d.rows[2].accepted.as_deref(), Some("known"));
        // Both passed, but the output differs (the runner's banner is before step_script).
        assert_eq!(d.diffs.len(), 1);
        assert_eq!(d.diffs[0].differing_lines, 1);
        assert!(
            d.diffs[0].diff.contains("+WARNING: new"),
            "{}",
            d.diffs[0].diff
        );
        assert!(!d.diffs[0].diff.contains("19.5"), "{}", d.diffs[0].diff);
        assert_eq!(d.rows[0].output_differing_lines, 1);
        assert_eq!(d.summary["regression"], 1);
        assert_eq!(d.summary["accepted"], 1);
        assert_eq!(d.unused_accepts.len(), 1);
        assert_eq!(
            d.gate,
            Gate {
                passed: false,
                exit_code: 1,
                unaccepted_regressions: 1
            }
        );
        // Accepting the other regression passes the gate.
        let mut all = accept.clone();
        all.push(Accept {
            case: "svc".into(),
            mode: "docker".into(),
            reason: "r".into(),
        });
        let d = diff(&a, &b, &all, "A", "B").unwrap();
        assert!(d.gate.passed);
        assert_eq!(d.gate.exit_code, 0);
    }

    #[test]
    fn a_missing_trace_file_is_an_error_naming_it() {
        let ta = tempfile::tempdir().unwrap();
        let a = side(
            ta.path(),
            vec![case("hello", "shell", Status::Passed, Some("traces/x.log"))],
            &[],
        );
        let e = format!("{:#}", diff(&a, &a, &[], "A", "B").unwrap_err());
        assert!(e.contains("traces/x.log"), "{e}");
        assert!(e.contains("fix:"), "{e}");
    }

    #[test]
    fn job_cost_side_by_side_with_changes() {
        let cost = |mode: &str, over: f64, ratio: Option<f64>| ModeCost {
            mode: mode.into(),
            jobs: 3,
            median_overhead_s: over,
            trivial: ratio.map(|r| TrivialJobCost {
                e2e_s: 2.0,
                script_s: 0.1,
                containers: 2,
                cli_floor_s: 0.5,
                api_floor_s: None,
                ratio_cli: Some(r),
                ratio_api: None,
            }),
        };
        let rows = job_cost(
            &[cost("shell", 1.0, Some(2.0)), cost("docker", 3.0, None)],
            &[cost("shell", 1.5, Some(2.5)), cost("custom", 2.0, None)],
        );
        let modes: Vec<&str> = rows.iter().map(|r| r.mode.as_str()).collect();
        assert_eq!(modes, ["shell", "docker", "custom"]);
        assert_eq!(rows[0].overhead_change_s, Some(0.5));
        assert_eq!(rows[0].ratio_cli_change, Some(0.5));
        assert_eq!(rows[0].ratio_api_change, None);
        assert!(rows[1].b.is_none() && rows[1].overhead_change_s.is_none());
        assert!(rows[2].a.is_none());
    }
}
