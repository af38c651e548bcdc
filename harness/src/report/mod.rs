//! The conformance report: `report.json` (schema `runnerlab.report/1`, documented in
//! ARCHITECTURE.md), `report.md` (a table of cases × modes), `junit.xml` for CI and `report.html`
//! (the table in colour, filters, every trace embedded). Each file is written completely or not at
//! all.
//!
//! This module holds the report's model (the schema); `json`, `markdown`, `junit` and `html` render it,
//! `cross_mode` compares job outputs across modes, `environment` gathers what the report says about
//! the machine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::paths::write_atomic;
use crate::redact::scrub;

mod cross_mode;
mod environment;
mod html;
mod json;
pub(crate) use cross_mode::unified_diff;
mod junit;
mod markdown;

pub use cross_mode::cross_mode;
pub use environment::environment;

pub const SCHEMA: &str = "runnerlab.report/1";

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Passed,
    Failed,
    KnownFinding,
    Skipped,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
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

#[derive(Clone, Debug, Serialize, Deserialize)]
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

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PodmanEnv {
    pub version: String,
    pub rootless: bool,
    pub runtime: String,
    pub cgroup_version: String,
    /// `netavark` or `cni` (catalogue C2: DNS and alias behaviour differ).
    pub network_backend: String,
    /// The store's user namespace, `container:host:size` ranges (`0:1001:1 1:100000:65536`).
    pub uid_map: String,
    /// The engine the lab ran on (`host`, `trixie`).
    #[serde(default)]
    pub engine: String,
    /// Podman, conmon, OCI runtime, network backend and rootless network, each with its version.
    #[serde(default)]
    pub components: Vec<crate::engine::Component>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Environment {
    pub runner: RunnerEnv,
    pub podman: PodmanEnv,
    pub kernel: String,
    pub harness_version: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// Always [`SCHEMA`] when written by this harness; a `String` so reports can be read back.
    pub schema: String,
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
#[derive(Clone, Debug, Serialize, Deserialize)]
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
#[derive(Clone, Debug, Serialize, Deserialize)]
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
    /// e2e / (containers × cli floor): the ratio (target ≤ 2.0).
    pub ratio_cli: Option<f64>,
    /// e2e / (containers × api floor).
    pub ratio_api: Option<f64>,
}

/// One case's job output in `mode` compared with `base` (job output: from `step_script` on,
/// normalised; see `conformance::job_output`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CrossModeDiff {
    pub case: String,
    pub base: String,
    pub mode: String,
    /// Lines only in one of the two outputs.
    pub differing_lines: usize,
    /// Unified diff, empty when the outputs are the same.
    pub diff: String,
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

    /// Write report.json, report.md, junit.xml and report.html into `dir`; returns their paths.
    /// The traces must be in `dir` already: report.html embeds them.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        let json = dir.join("report.json");
        let md = dir.join("report.md");
        let junit = dir.join("junit.xml");
        let html = dir.join("report.html");
        write_atomic(&json, scrub(&self.json()?).as_bytes())?;
        write_atomic(&md, scrub(&self.markdown()).as_bytes())?;
        write_atomic(&junit, scrub(&self.junit()).as_bytes())?;
        write_atomic(&html, scrub(&self.html(dir)).as_bytes())?;
        Ok(vec![json, md, junit, html])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report with a bit of everything, for the format tests.
    pub(super) fn sample() -> Report {
        Report {
            schema: SCHEMA.into(),
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
                    engine: "host".into(),
                    components: vec![],
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
}
