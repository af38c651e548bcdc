//! The conformance report: `report.json` (schema `runnerlab.report/1`, documented in
//! ARCHITECTURE.md), `report.md` (a table of cases × modes) and `junit.xml` for CI. Each file is
//! written completely or not at all.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;

use crate::paths::write_atomic;
use crate::redact::scrub;

pub const SCHEMA: &str = "runnerlab.report/1";

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Passed,
    Failed,
    KnownFinding,
    Skipped,
}

#[derive(Clone, Debug, Serialize)]
pub struct CaseResult {
    pub name: String,
    pub mode: String,
    pub status: Status,
    pub duration_s: f64,
    /// Path of the main job's normalised trace, relative to the report.
    pub trace: Option<String>,
    /// Failure message, skip reason or note.
    pub detail: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RunnerEnv {
    pub version: String,
    pub revision: String,
    pub source: String,
    pub compat: Option<String>,
    pub describe: String,
    /// Where the runner ran: `container` (the socket's directory mounted into it) or `host` (the
    /// docker mode's runner on the host, as the lab user).
    pub placement: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct PodmanEnv {
    pub version: String,
    pub rootless: bool,
    pub runtime: String,
    pub cgroup_version: String,
    /// `netavark` or `cni` (catalogue C2: DNS and alias behaviour differ).
    pub network_backend: String,
    /// The store's user namespace, `container:host:size` ranges (`0:1001:1 1:100000:65536`).
    pub uid_map: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Environment {
    pub runner: RunnerEnv,
    pub podman: PodmanEnv,
    pub kernel: String,
    pub harness_version: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub run_id: String,
    pub started_at: String,
    pub duration_s: f64,
    pub environment: Environment,
    pub cases: Vec<CaseResult>,
    /// Per case, how each mode's job output differs from the first mode's (schema 1 addition).
    pub cross_mode: Vec<CrossModeDiff>,
    /// Per mode, what the runner, the executor and Podman add to a job (schema 1 addition).
    pub job_cost: Vec<ModeCost>,
}

/// What a job costs beyond its script in one mode, measured during the conformance run itself.
#[derive(Clone, Debug, Serialize)]
pub struct ModeCost {
    pub mode: String,
    /// Jobs measured: every job of the mode's cases that has a `step_script` section.
    pub jobs: usize,
    /// Median over those jobs of (handed to the runner → finished) − the `step_script` section's
    /// time, seconds.
    pub median_overhead_s: f64,
    /// The `hello` case's one trivial job against the container floors, when it ran and passed.
    pub trivial: Option<TrivialJobCost>,
}

/// The `hello` job against what a container costs here. Floors are measured right after the case,
/// on the same lab: ratios of figures taken side by side, never pass/fail.
#[derive(Clone, Debug, Serialize)]
pub struct TrivialJobCost {
    /// Handed to the runner → finished, seconds.
    pub e2e_s: f64,
    pub script_s: f64,
    /// Containers of the lab started during the case (Podman `start` events).
    pub containers: usize,
    /// `podman run --rm --network none <base> true` as the lab user, p50 seconds.
    pub cli_floor_s: f64,
    /// The same container through the lab's Docker-compatible API (create, start, wait, remove),
    /// p50 seconds; docker mode only.
    pub api_floor_s: Option<f64>,
    /// e2e / (containers × cli floor): the issue's ratio (target ≤ 2.0).
    pub ratio_cli: Option<f64>,
    /// e2e / (containers × api floor).
    pub ratio_api: Option<f64>,
}

/// One case's job output in `mode` compared with `base` (job output: from `step_script` on,
/// normalised; see `conformance::job_output`).
#[derive(Clone, Debug, Serialize)]
pub struct CrossModeDiff {
    pub case: String,
    pub base: String,
    pub mode: String,
    /// Lines only in one of the two outputs.
    pub differing_lines: usize,
    /// Unified diff, empty when the outputs are the same.
    pub diff: String,
}

/// Compare the outputs of each case across modes, against the first mode that ran it.
pub fn cross_mode(outputs: &[(&str, &str, String)]) -> Vec<CrossModeDiff> {
    let mut out = Vec::new();
    // Outputs come mode by mode: each case once, in first-seen order.
    let mut names: Vec<&str> = Vec::new();
    for o in outputs {
        if !names.contains(&o.0) {
            names.push(o.0);
        }
    }
    for name in names {
        let mut runs = outputs.iter().filter(|o| o.0 == name);
        let Some((_, base_mode, base)) = runs.next() else {
            continue;
        };
        for (_, mode, text) in runs {
            let diff = similar::TextDiff::from_lines(base.as_str(), text.as_str());
            let differing_lines = diff
                .iter_all_changes()
                .filter(|c| c.tag() != similar::ChangeTag::Equal)
                .count();
            let unified = if differing_lines == 0 {
                String::new()
            } else {
                diff.unified_diff()
                    .context_radius(2)
                    .header(base_mode, mode)
                    .to_string()
            };
            out.push(CrossModeDiff {
                case: name.to_owned(),
                base: (*base_mode).to_owned(),
                mode: (*mode).to_owned(),
                differing_lines,
                diff: unified,
            });
        }
    }
    out
}

impl Report {
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut m = BTreeMap::new();
        for c in &self.cases {
            let k = match c.status {
                Status::Passed => "passed",
                Status::Failed => "failed",
                Status::KnownFinding => "known-finding",
                Status::Skipped => "skipped",
            };
            *m.entry(k).or_default() += 1;
        }
        m
    }

    /// Write report.json, report.md and junit.xml into `dir`; returns their paths.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        let json = dir.join("report.json");
        let md = dir.join("report.md");
        let junit = dir.join("junit.xml");
        write_atomic(
            &json,
            scrub(&serde_json::to_string_pretty(self)?).as_bytes(),
        )?;
        write_atomic(&md, scrub(&self.markdown()).as_bytes())?;
        write_atomic(&junit, scrub(&self.junit()).as_bytes())?;
        Ok(vec![json, md, junit])
    }

    pub fn markdown(&self) -> String {
        let e = &self.environment;
        let mut s = format!(
            "# runnerlab conformance report `{}`\n\n\
             - runner: **{}**, {}\n- podman: {} ({}, runtime {}, cgroup {}, network {}, uid map {})\n- kernel: {}\n- started: {}, took {:.1}s\n\n",
            self.run_id,
            e.runner.describe,
            if e.runner.placement == "host" {
                "on the host (as the lab user)"
            } else {
                "in a container"
            },
            e.podman.version,
            if e.podman.rootless {
                "rootless"
            } else {
                "rootful"
            },
            e.podman.runtime,
            e.podman.cgroup_version,
            e.podman.network_backend,
            if e.podman.uid_map.is_empty() {
                "none"
            } else {
                e.podman.uid_map.as_str()
            },
            e.kernel,
            self.started_at,
            self.duration_s,
        );
        let mut modes: Vec<&str> = self.cases.iter().map(|c| c.mode.as_str()).collect();
        modes.sort();
        modes.dedup();
        let mut names: Vec<&str> = Vec::new();
        for c in &self.cases {
            if !names.contains(&c.name.as_str()) {
                names.push(&c.name);
            }
        }
        s.push_str(&format!(
            "| case | {} |\n|---|{}\n",
            modes.join(" | "),
            "---|".repeat(modes.len())
        ));
        for n in &names {
            let cells: Vec<String> = modes
                .iter()
                .map(
                    |m| match self.cases.iter().find(|c| c.name == *n && c.mode == *m) {
                        None => "—".into(),
                        Some(c) => {
                            let mark = match c.status {
                                Status::Passed => "✓",
                                Status::Failed => "✗",
                                Status::KnownFinding => "⚠",
                                Status::Skipped => "skip",
                            };
                            match &c.trace {
                                Some(t) => format!("[{mark}]({t}) {:.1}s", c.duration_s),
                                None => format!("{mark} {:.1}s", c.duration_s),
                            }
                        }
                    },
                )
                .collect();
            s.push_str(&format!("| {n} | {} |\n", cells.join(" | ")));
        }
        let counts = self.counts();
        s.push_str(&format!(
            "\n{} passed, {} failed, {} known findings, {} skipped\n",
            counts.get("passed").unwrap_or(&0),
            counts.get("failed").unwrap_or(&0),
            counts.get("known-finding").unwrap_or(&0),
            counts.get("skipped").unwrap_or(&0)
        ));
        if !self.cross_mode.is_empty() {
            s.push_str(
                "\n## Cross-mode differences\n\nJob output from `step_script` on, normalised, compared \
                 with the first mode that ran the case.\n\n| case | mode | vs | differing lines |\n|---|---|---|---|\n",
            );
            for d in &self.cross_mode {
                s.push_str(&format!(
                    "| {} | {} | {} | {} |\n",
                    d.case,
                    d.mode,
                    d.base,
                    if d.differing_lines == 0 {
                        "same".to_owned()
                    } else {
                        d.differing_lines.to_string()
                    }
                ));
            }
            for d in self.cross_mode.iter().filter(|d| d.differing_lines > 0) {
                s.push_str(&format!(
                    "\n<details><summary>{}: {} vs {}</summary>\n\n```diff\n{}```\n</details>\n",
                    d.case, d.mode, d.base, d.diff
                ));
            }
        }
        if !self.job_cost.is_empty() {
            s.push_str(
                "\n## Job cost\n\nWhat runner, executor and Podman add to a job: the median of (handed to the runner → finished) \
                 − `step_script` over every job of the mode, and the `hello` job against the floor of a \
                 container here (`podman run --rm`, and the same container through the compat API), measured \
                 side by side in this run while the other modes' cases waited.\n\n| mode | jobs | median overhead | hello e2e | containers | CLI floor | API floor | e2e / (containers × CLI floor) | e2e / (containers × API floor) |\n|---|---|---|---|---|---|---|---|---|\n",
            );
            let f = |x: Option<f64>, unit: &str| {
                x.map(|x| format!("{x:.2}{unit}"))
                    .unwrap_or_else(|| "—".into())
            };
            for c in &self.job_cost {
                let t = c.trivial.as_ref();
                s.push_str(&format!(
                    "| {} | {} | {:.2}s | {} | {} | {} | {} | {} | {} |\n",
                    c.mode,
                    c.jobs,
                    c.median_overhead_s,
                    f(t.map(|t| t.e2e_s), "s"),
                    t.map(|t| t.containers.to_string())
                        .unwrap_or_else(|| "—".into()),
                    f(t.map(|t| t.cli_floor_s), "s"),
                    f(t.and_then(|t| t.api_floor_s), "s"),
                    f(t.and_then(|t| t.ratio_cli), ""),
                    f(t.and_then(|t| t.ratio_api), ""),
                ));
            }
        }
        let details: Vec<&CaseResult> = self.cases.iter().filter(|c| c.detail.is_some()).collect();
        if !details.is_empty() {
            s.push_str("\n## Details\n\n");
            for c in details {
                s.push_str(&format!(
                    "### {} ({})\n\n```\n{}\n```\n\n",
                    c.name,
                    c.mode,
                    c.detail.as_deref().unwrap_or("")
                ));
            }
        }
        s
    }

    pub fn junit(&self) -> String {
        let counts = self.counts();
        let mut s = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"runnerlab\" tests=\"{}\" failures=\"{}\" time=\"{:.3}\">\n",
            self.cases.len(),
            counts.get("failed").unwrap_or(&0),
            self.duration_s
        );
        let mut modes: Vec<&str> = self.cases.iter().map(|c| c.mode.as_str()).collect();
        modes.sort();
        modes.dedup();
        for m in modes {
            let cs: Vec<&CaseResult> = self.cases.iter().filter(|c| c.mode == m).collect();
            s.push_str(&format!(
                "  <testsuite name=\"conformance.{m}\" tests=\"{}\" failures=\"{}\">\n",
                cs.len(),
                cs.iter().filter(|c| c.status == Status::Failed).count()
            ));
            for c in cs {
                s.push_str(&format!(
                    "    <testcase classname=\"conformance.{m}\" name=\"{}\" time=\"{:.3}\"",
                    xml(&c.name),
                    c.duration_s
                ));
                match c.status {
                    Status::Passed | Status::KnownFinding => s.push_str("/>\n"),
                    Status::Failed => s.push_str(&format!(
                        ">\n      <failure message=\"case failed\">{}</failure>\n    </testcase>\n",
                        xml(c.detail.as_deref().unwrap_or(""))
                    )),
                    Status::Skipped => s.push_str(&format!(
                        ">\n      <skipped message=\"{}\"/>\n    </testcase>\n",
                        xml(c.detail.as_deref().unwrap_or(""))
                    )),
                }
            }
            s.push_str("  </testsuite>\n");
        }
        s.push_str("</testsuites>\n");
        s
    }
}

fn xml(s: &str) -> String {
    s.chars()
        .filter(|c| *c == '\n' || *c == '\t' || !c.is_control())
        .collect::<String>()
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        Report {
            schema: SCHEMA,
            run_id: "rl-0000abcd".into(),
            started_at: "2026-11-23T00:00:00Z".into(),
            duration_s: 3.0,
            environment: Environment {
                runner: RunnerEnv {
                    version: "19.4.0".into(),
                    revision: "fc1f1862".into(),
                    source: "module:v1".into(),
                    compat: Some("19.4.0@abc".into()),
                    describe: "19.4.0 (fc1f1862) built from module v1 with compat layer 19.4.0@abc"
                        .into(),
                    placement: "container".into(),
                },
                podman: PodmanEnv {
                    version: "4.3.1".into(),
                    rootless: true,
                    runtime: "runc".into(),
                    cgroup_version: "v1".into(),
                    network_backend: "netavark".into(),
                    uid_map: "0:1001:1 1:100000:65536".into(),
                },
                kernel: "6.x".into(),
                harness_version: "0.1.0".into(),
            },
            cases: vec![
                CaseResult {
                    name: "hello".into(),
                    mode: "shell".into(),
                    status: Status::Passed,
                    duration_s: 1.0,
                    trace: Some("traces/hello/hello.shell.log".into()),
                    detail: None,
                },
                CaseResult {
                    name: "exit-code".into(),
                    mode: "shell".into(),
                    status: Status::Failed,
                    duration_s: 2.0,
                    trace: None,
                    detail: Some("exit code <None> & more".into()),
                },
            ],
            cross_mode: cross_mode(&[
                ("hello", "shell", "$ echo hi\nhi\nJob succeeded\n".into()),
                ("exit-code", "shell", "exit 3\n".into()),
                ("hello", "docker", "$ echo hi\nhi\nJob succeeded\n".into()),
                ("exit-code", "docker", "exit 3\n".into()),
                (
                    "hello",
                    "custom",
                    "$ echo hi\nhi\nsomething else\nJob succeeded\n".into(),
                ),
            ]),
            job_cost: vec![ModeCost {
                mode: "docker".into(),
                jobs: 2,
                median_overhead_s: 4.5,
                trivial: Some(TrivialJobCost {
                    e2e_s: 5.0,
                    script_s: 0.5,
                    containers: 4,
                    cli_floor_s: 0.25,
                    api_floor_s: Some(0.5),
                    ratio_cli: Some(5.0),
                    ratio_api: Some(2.5),
                }),
            }],
        }
    }

    #[test]
    fn cross_mode_compares_each_mode_with_the_first() {
        let r = sample();
        // Suites produce outputs mode by mode; each case is compared once per other mode.
        let d: Vec<(&str, &str, usize)> = r
            .cross_mode
            .iter()
            .map(|d| (d.case.as_str(), d.mode.as_str(), d.differing_lines))
            .collect();
        assert_eq!(
            d,
            [
                ("hello", "docker", 0),
                ("hello", "custom", 1),
                ("exit-code", "docker", 0)
            ]
        );
        assert!(
            r.cross_mode[1].diff.contains("+something else"),
            "{:?}",
            r.cross_mode[1]
        );
        let md = r.markdown();
        assert!(md.contains("| hello | docker | shell | same |"), "{md}");
        assert!(md.contains("| hello | custom | shell | 1 |"), "{md}");
    }

    #[test]
    fn markdown_has_a_row_per_case_and_the_runner_provenance() {
        let md = sample().markdown();
        assert!(
            md.contains("| hello | [✓](traces/hello/hello.shell.log) 1.0s |"),
            "{md}"
        );
        assert!(md.contains("| exit-code | ✗ 2.0s |"), "{md}");
        assert!(md.contains("with compat layer 19.4.0@abc"), "{md}");
        assert!(
            md.contains("network netavark, uid map 0:1001:1 1:100000:65536"),
            "{md}"
        );
        assert!(md.contains("1 passed, 1 failed"), "{md}");
        assert!(
            md.contains("| docker | 2 | 4.50s | 5.00s | 4 | 0.25s | 0.50s | 5.00 | 2.50 |"),
            "{md}"
        );
    }

    #[test]
    fn junit_escapes_and_counts_failures() {
        let x = sample().junit();
        assert!(x.contains("tests=\"2\" failures=\"1\""), "{x}");
        assert!(x.contains("exit code &lt;None&gt; &amp; more"), "{x}");
    }

    #[test]
    fn json_uses_the_documented_status_names() {
        let j = serde_json::to_value(sample()).unwrap();
        assert_eq!(j["cases"][0]["status"], "passed");
        assert_eq!(j["environment"]["runner"]["compat"], "19.4.0@abc");
        assert_eq!(j["schema"], SCHEMA);
    }
}
