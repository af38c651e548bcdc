//! `report.md`: the environment, a table of cases × modes, the cross-mode differences, the job
//! cost and each case's detail.

use super::{CaseResult, Report, Status};

impl Report {
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
        if !e.podman.components.is_empty() {
            let parts: Vec<String> = e
                .podman
                .components
                .iter()
                .map(|c| format!("{} {} ({})", c.name, c.version, c.package_version))
                .collect();
            s.insert_str(
                s.find("- kernel:").unwrap_or(s.len()),
                &format!("- engine `{}`: {}\n", e.podman.engine, parts.join(", ")),
            );
        }
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
}

#[cfg(test)]
mod tests {
    use super::super::tests::sample;

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
}
