//! `--partition k/N`: a run split over N machines (CI's `parallel: N`), and the merge of the parts'
//! reports into one.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use crate::report::{CaseResult, ModeCost, Report, SCHEMA};

/// Part `index` (1-based) of `total`, like nextest's `count:k/N`: the i-th item (0-based) of the
/// stable ordered list belongs to part (i mod N) + 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Partition {
    pub index: usize,
    pub total: usize,
}

impl std::str::FromStr for Partition {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Partition> {
        let fix = "expected --partition k/N with 1 ≤ k ≤ N (e.g. 2/3; in GitLab CI: ${CI_NODE_INDEX}/${CI_NODE_TOTAL})";
        let Some((k, n)) = s.trim().split_once('/') else {
            bail!("--partition {s:?}: {fix}");
        };
        let (Ok(index), Ok(total)) = (k.trim().parse::<usize>(), n.trim().parse::<usize>()) else {
            bail!("--partition {s:?}: k and N must be whole numbers; {fix}");
        };
        if total == 0 || index == 0 || index > total {
            bail!("--partition {s:?}: k must be between 1 and N; {fix}");
        }
        Ok(Partition { index, total })
    }
}

impl std::fmt::Display for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.total)
    }
}

impl Partition {
    /// Whether the item at `i` (0-based, in the canonical order) belongs to this part.
    pub fn includes(&self, i: usize) -> bool {
        i % self.total + 1 == self.index
    }

    /// This part's items of `items` (in the canonical order), order kept.
    pub fn select<T: Clone>(&self, items: &[T]) -> Vec<T> {
        items
            .iter()
            .enumerate()
            .filter(|(i, _)| self.includes(*i))
            .map(|(_, t)| t.clone())
            .collect()
    }
}

/// The canonical (case, mode) order of a report: modes in [`crate::executor::Executor::ALL`]
/// order, cases in [`crate::cases::cases`] order within a mode; names the harness does not know
/// go last, by name.
pub fn canonical_key(name: &str, mode: &str) -> (usize, String, usize, String) {
    let modes: Vec<&str> = crate::executor::Executor::ALL
        .iter()
        .map(|m| m.name())
        .collect();
    let cases: Vec<&str> = crate::cases::cases().iter().map(|c| c.name).collect();
    key_in(&modes, &cases, name, mode)
}

fn key_in(
    modes: &[&str],
    cases: &[&str],
    name: &str,
    mode: &str,
) -> (usize, String, usize, String) {
    let pos = |list: &[&str], x: &str| list.iter().position(|y| *y == x).unwrap_or(usize::MAX);
    (
        pos(modes, mode),
        mode.to_owned(),
        pos(cases, name),
        name.to_owned(),
    )
}

/// Sort case results into the canonical order (stable).
pub fn sort_canonical(cases: &mut [CaseResult]) {
    cases.sort_by_cached_key(|c| canonical_key(&c.name, &c.mode));
}

/// The (case, mode) pairs a partitioned run covers: `pairs` in canonical order, this part's share.
pub fn pairs_of(part: Partition, pairs: &[(String, String)]) -> Vec<(String, String)> {
    let mut all = pairs.to_vec();
    all.sort_by_cached_key(|(c, m)| canonical_key(c, m));
    part.select(&all)
}

/// What must be equal for parts to merge: they ran the same stack.
fn environment_differences(a: &Report, b: &Report) -> Vec<String> {
    let (ea, eb) = (&a.environment, &b.environment);
    let mut d = Vec::new();
    let mut check = |what: &str, x: String, y: String| {
        if x != y {
            d.push(format!("{what} {x:?} vs {y:?}"));
        }
    };
    check("schema", a.schema.clone(), b.schema.clone());
    check(
        "runner",
        ea.runner.describe.clone(),
        eb.runner.describe.clone(),
    );
    check(
        "runner placement",
        ea.runner.placement.clone(),
        eb.runner.placement.clone(),
    );
    check(
        "podman version",
        ea.podman.version.clone(),
        eb.podman.version.clone(),
    );
    check(
        "podman rootless",
        ea.podman.rootless.to_string(),
        eb.podman.rootless.to_string(),
    );
    check(
        "OCI runtime",
        ea.podman.runtime.clone(),
        eb.podman.runtime.clone(),
    );
    check(
        "cgroup version",
        ea.podman.cgroup_version.clone(),
        eb.podman.cgroup_version.clone(),
    );
    check(
        "network backend",
        ea.podman.network_backend.clone(),
        eb.podman.network_backend.clone(),
    );
    check(
        "harness version",
        ea.harness_version.clone(),
        eb.harness_version.clone(),
    );
    d
}

/// Join the reports of a partitioned run (each with the directory it came from, for errors and
/// traces) into one: cases in canonical order, the cross-mode comparison recomputed from the
/// parts' traces (`load_output` gives a trace's normalised job output), job costs joined.
///
/// Refuses parts of another schema or another stack (naming both parts and what differs) and a
/// case × mode present in two parts. `counts` are computed from the merged cases.
pub fn merge(
    parts: &[(PathBuf, Report)],
    load_output: impl Fn(&Path, &str) -> Result<String>,
) -> Result<Report> {
    let Some((first_dir, first)) = parts.first() else {
        bail!(
            "nothing to merge — fix: name the part directories (runnerlab merge PART_DIR... --out DIR)"
        );
    };
    if first.schema != SCHEMA {
        bail!(
            "{} is schema {:?}, expected {SCHEMA} — fix: produce the parts with this runnerlab",
            first_dir.join("report.json").display(),
            first.schema
        );
    }
    for (dir, r) in &parts[1..] {
        let d = environment_differences(first, r);
        if !d.is_empty() {
            bail!(
                "cannot merge {} with {}: they ran different stacks ({}) — fix: merge only the parts of one run",
                first_dir.display(),
                dir.display(),
                d.join(", ")
            );
        }
    }
    let mut cases: Vec<CaseResult> = Vec::new();
    let mut from: Vec<&Path> = Vec::new();
    for (dir, r) in parts {
        for c in &r.cases {
            if let Some(i) = cases
                .iter()
                .position(|x| x.name == c.name && x.mode == c.mode)
            {
                bail!(
                    "{} {} is in both {} and {} — fix: merge each part once, and parts of one --partition N only",
                    c.name,
                    c.mode,
                    from[i].display(),
                    dir.display()
                );
            }
            cases.push(c.clone());
            from.push(dir);
        }
    }
    let mut order: Vec<usize> = (0..cases.len()).collect();
    order.sort_by_cached_key(|i| canonical_key(&cases[*i].name, &cases[*i].mode));
    let cases: Vec<CaseResult> = order.iter().map(|i| cases[*i].clone()).collect();
    let from: Vec<&Path> = order.iter().map(|i| from[*i]).collect();
    // Cross-mode: mode by mode, as a whole run produces its outputs.
    let mut outputs: Vec<(&str, &str, String)> = Vec::new();
    for (c, dir) in cases.iter().zip(&from) {
        if let Some(t) = &c.trace {
            outputs.push((&c.name, &c.mode, load_output(dir, t)?));
        }
    }
    let cross_mode = crate::report::cross_mode(&outputs);
    Ok(Report {
        schema: first.schema.clone(),
        run_id: {
            // Parts of one baseline share its run id.
            let mut ids: Vec<&str> = Vec::new();
            for (_, r) in parts {
                if !ids.contains(&r.run_id.as_str()) {
                    ids.push(&r.run_id);
                }
            }
            ids.join("+")
        },
        started_at: parts
            .iter()
            .map(|(_, r)| r.started_at.clone())
            .min()
            .unwrap_or_default(),
        // The parts ran side by side: the longest is the run's.
        duration_s: parts.iter().map(|(_, r)| r.duration_s).fold(0.0, f64::max),
        environment: first.environment.clone(),
        cases,
        cross_mode,
        job_cost: merge_costs(parts.iter().map(|(_, r)| r.job_cost.as_slice())),
    })
}

/// Per mode: jobs summed, the median overhead as the jobs-weighted mean of the parts' medians
/// (the parts' jobs are not in their reports), the `hello` job's figures from the part that ran it.
fn merge_costs<'a>(parts: impl Iterator<Item = &'a [ModeCost]>) -> Vec<ModeCost> {
    let mut out: Vec<ModeCost> = Vec::new();
    for c in parts.flatten() {
        match out.iter_mut().find(|o| o.mode == c.mode) {
            None => out.push(c.clone()),
            Some(o) => {
                let jobs = o.jobs + c.jobs;
                if jobs > 0 {
                    o.median_overhead_s = (o.median_overhead_s * o.jobs as f64
                        + c.median_overhead_s * c.jobs as f64)
                        / jobs as f64;
                }
                o.jobs = jobs;
                if o.trivial.is_none() {
                    o.trivial = c.trivial.clone();
                }
            }
        }
    }
    out.sort_by_cached_key(|c| canonical_key("", &c.mode).0);
    out
}

#[cfg(test)]
mod tests {
    use super::super::diff::tests::{case, env, report};
    use super::*;
    use crate::report::Status;

    #[test]
    fn parses_k_of_n_with_clear_errors() {
        assert_eq!(
            "2/3".parse::<Partition>().unwrap(),
            Partition { index: 2, total: 3 }
        );
        for bad in ["0/3", "4/3", "a/b", "3", "1/0", ""] {
            let e = format!("{:#}", bad.parse::<Partition>().unwrap_err());
            assert!(e.starts_with(&format!("--partition {bad:?}")), "{e}");
            assert!(e.contains("expected --partition k/N"), "{e}");
        }
    }

    #[test]
    fn partitions_cover_every_item_exactly_once() {
        let items: Vec<usize> = (0..10).collect();
        for n in 1..=4 {
            let mut all: Vec<usize> = (1..=n)
                .flat_map(|k| Partition { index: k, total: n }.select(&items))
                .collect();
            all.sort();
            assert_eq!(all, items, "N = {n}");
        }
        // Round robin, like nextest's count:k/N.
        assert_eq!(
            Partition { index: 1, total: 3 }.select(&items),
            [0, 3, 6, 9]
        );
        assert_eq!(Partition { index: 3, total: 3 }.select(&items), [2, 5, 8]);
    }

    /// A full synthetic run in canonical order: every case in every mode.
    fn full() -> Report {
        let mut cases = Vec::new();
        for m in crate::executor::Executor::ALL {
            for c in crate::cases::cases().iter().take(7) {
                cases.push(case(c.name, m.name(), Status::Passed, None));
            }
        }
        report(cases)
    }

    fn part(full: &Report, p: Partition) -> Report {
        let mut r = full.clone();
        r.cases = p.select(&full.cases);
        r.run_id = format!("rl-part{}", p.index);
        r
    }

    fn no_traces(_: &Path, _: &str) -> Result<String> {
        unreachable!("the synthetic parts have no traces")
    }

    #[test]
    fn three_partitions_merged_equal_the_full_run() {
        let full = full();
        let mut sorted = full.cases.clone();
        sort_canonical(&mut sorted);
        let names = |v: &[CaseResult]| -> Vec<(String, String)> {
            v.iter().map(|c| (c.name.clone(), c.mode.clone())).collect()
        };
        assert_eq!(
            names(&sorted),
            names(&full.cases),
            "synthetic run is canonical"
        );
        // Parts in any order.
        let parts: Vec<(PathBuf, Report)> = [3, 1, 2]
            .into_iter()
            .map(|k| {
                (
                    PathBuf::from(format!("part{k}")),
                    part(&full, Partition { index: k, total: 3 }),
                )
            })
            .collect();
        let merged = merge(&parts, no_traces).unwrap();
        assert_eq!(names(&merged.cases), names(&full.cases));
        assert_eq!(merged.counts(), full.counts());
        assert_eq!(merged.run_id, "rl-part3+rl-part1+rl-part2");
        // pairs_of agrees with selecting from the report.
        let pairs = names(&full.cases);
        let p2 = Partition { index: 2, total: 3 };
        assert_eq!(pairs_of(p2, &pairs), names(&p2.select(&full.cases)));
    }

    #[test]
    fn merge_refuses_duplicates_other_stacks_and_schemas() {
        let full = full();
        let p1 = part(&full, Partition { index: 1, total: 2 });
        let e = format!(
            "{:#}",
            merge(
                &[("x".into(), p1.clone()), ("y".into(), p1.clone())],
                no_traces
            )
            .unwrap_err()
        );
        assert!(e.contains("is in both x and y"), "{e}");

        let mut other = part(&full, Partition { index: 2, total: 2 });
        other.environment = env("19.5.0 (deadbeef)", "5.4.2");
        let e = format!(
            "{:#}",
            merge(&[("x".into(), p1.clone()), ("y".into(), other)], no_traces).unwrap_err()
        );
        assert!(e.starts_with("cannot merge x with y"), "{e}");
        assert!(
            e.contains(r#"runner "19.4.0 (fc1f1862)" vs "19.5.0 (deadbeef)""#),
            "{e}"
        );
        assert!(e.contains(r#"podman version "4.3.1" vs "5.4.2""#), "{e}");

        let mut old = p1.clone();
        old.schema = "runnerlab.report/0".into();
        let e = format!("{:#}", merge(&[("x".into(), old)], no_traces).unwrap_err());
        assert!(e.contains("expected runnerlab.report/1"), "{e}");
        assert!(merge(&[], no_traces).is_err());
    }

    #[test]
    fn merge_recomputes_cross_mode_and_joins_costs() {
        let mut a = report(vec![case(
            "hello",
            "shell",
            Status::Passed,
            Some("t/h.shell"),
        )]);
        let mut b = report(vec![case(
            "hello",
            "docker",
            Status::Passed,
            Some("t/h.docker"),
        )]);
        let cost = |mode: &str, jobs, over| ModeCost {
            mode: mode.into(),
            jobs,
            median_overhead_s: over,
            trivial: None,
        };
        a.job_cost = vec![cost("shell", 1, 1.0)];
        b.job_cost = vec![cost("shell", 3, 3.0), cost("docker", 2, 5.0)];
        let merged = merge(&[("a".into(), a), ("b".into(), b)], |dir, t| {
            Ok(format!("{}:{t}\nsame\n", dir.display()))
        })
        .unwrap();
        assert_eq!(merged.cross_mode.len(), 1);
        assert_eq!(merged.cross_mode[0].base, "shell");
        assert_eq!(merged.cross_mode[0].mode, "docker");
        assert_eq!(merged.cross_mode[0].differing_lines, 2);
        let shell = merged.job_cost.iter().find(|c| c.mode == "shell").unwrap();
        assert_eq!(shell.jobs, 4);
        assert!((shell.median_overhead_s - 2.5).abs() < 1e-9);
    }
}
