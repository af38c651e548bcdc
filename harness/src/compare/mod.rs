//! Upgrade conformance: the same cases on stack A and stack B (Podman engine, runner build, runner
//! configuration), or a saved baseline against a new run, compared case by case, with a gate.
//!
//! - [`stack`]: `--a`/`--b` specs (`podman=trixie,runner=module:<v>,config=K=V`);
//! - [`diff`]: report A against report B: classified rows, job output diffs, job cost, `--accept`,
//!   the gate;
//! - [`render`]: `compare.json` (schema [`SCHEMA`]), `compare.md`, `compare.html`;
//! - [`partition`]: `--partition k/N` and the merge of the parts;
//! - [`baseline`]: `--save-baseline NAME` / `--baseline NAME` under `<cache>/baselines/`;
//! - [`soak`]: `--soak N`: both stacks soaked, leak verdicts side by side, in the gate.
//!
//! A compare directory holds `a/` and `b/` (each a whole report directory: `report.json`, its
//! traces) next to `compare.{json,md,html}`, so it is self-contained and its links resolve.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::conformance::SuiteOptions;
use crate::report::Report;

pub mod baseline;
pub mod diff;
pub mod partition;
pub mod render;
pub mod soak;
pub mod stack;

pub use diff::{Accept, Class, Diff, Gate, Side};
pub use partition::Partition;
pub use stack::Stack;

pub const SCHEMA: &str = "runnerlab.compare/1";

/// One side of a comparison, as compare.json records it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SideInfo {
    /// [`Stack::label`], or `baseline NAME`.
    pub label: String,
    /// The stack the side ran (none for a baseline).
    pub stack: Option<Stack>,
    /// The baseline's name, when the side is one.
    pub baseline: Option<String>,
    /// The side's report directory relative to the compare directory (`a`, `b`).
    pub dir: String,
    pub run_id: String,
    /// The runner's provenance (`describe`).
    pub runner: String,
    /// The Podman version.
    pub podman: String,
}

/// `compare.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Comparison {
    pub schema: String,
    pub a: SideInfo,
    pub b: SideInfo,
    /// The `--accept` entries the comparison applied.
    pub accept: Vec<Accept>,
    #[serde(flatten)]
    pub diff: Diff,
    /// `--soak N`: both sides soaked (`a/soak/`, `b/soak/`); its regressions are in `diff.gate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak: Option<soak::SoakComparison>,
}

/// Read a `report.json`: a missing file, broken JSON, another schema or a report that does not
/// fit the model are each a one-line error naming the file and ending with `fix`.
pub fn load_report(path: &Path, fix: &str) -> Result<Report> {
    let one_line = |s: String| s.replace('\n', " ");
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => bail!(
            "`{}` cannot be read ({}) — fix: {fix}",
            path.display(),
            one_line(e.to_string())
        ),
    };
    let found = match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(v) => match v.get("schema").and_then(|s| s.as_str()) {
            Some(s) => format!("{s:?}"),
            None => "no schema".to_owned(),
        },
        Err(e) => format!("invalid JSON: {}", one_line(e.to_string())),
    };
    if found != format!("{:?}", crate::report::SCHEMA) {
        bail!(
            "`{}` is not a runnerlab report (expected schema {}, found {found}) — fix: {fix}",
            path.display(),
            crate::report::SCHEMA
        );
    }
    serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "`{}` is corrupt ({}) — fix: {fix}",
            path.display(),
            one_line(e.to_string())
        )
    })
}

/// What `runnerlab compare` was asked.
#[derive(Clone, Debug)]
pub struct CompareOptions {
    /// Stack A; ignored with `baseline`.
    pub a: Stack,
    pub b: Stack,
    /// Compare B with this saved baseline instead of running A.
    pub baseline: Option<String>,
    pub accept: Vec<Accept>,
    /// Modes, cases, parallelism and runner options shared by both runs; each stack's runner,
    /// engine and configuration are applied by [`run_stack`].
    pub suite: SuiteOptions,
    /// `--soak N`: after the cases, each side soaked N builds per mode (its modes).
    pub soak: Option<usize>,
    /// The compare directory.
    pub out: PathBuf,
}

/// The default compare directory: `target/runnerlab/compare-<unix time>/`.
pub fn default_out_dir() -> PathBuf {
    crate::paths::run_output_dir(&format!(
        "compare-{}",
        time::OffsetDateTime::now_utc().unix_timestamp()
    ))
}

/// The suite options for `stack`: `suite` with the stack's runner source, engine and runner
/// environment overrides.
pub fn suite_for(stack: &Stack, suite: &SuiteOptions) -> Result<SuiteOptions> {
    let mut s = suite.clone();
    s.runner = stack.get_options(&suite.runner)?;
    if stack.engine() != s.engine.name() {
        s.engine = crate::engine::open(stack.engine())?;
    }
    s.config_env = stack.config_env().to_vec();
    Ok(s)
}

/// Run the conformance suite on `stack`; returns the report and its directory.
pub async fn run_stack(stack: &Stack, suite: &SuiteOptions) -> Result<(Report, PathBuf)> {
    let opts = suite_for(stack, suite)?;
    crate::conformance::run_suite(&opts)
        .await
        .with_context(|| format!("running the suite on {stack}"))
}

/// `report` restricted to the modes and cases of `suite` and to its partition (a baseline holds a
/// whole run; the side it is compared with may be a selection).
pub fn restrict(report: &Report, suite: &SuiteOptions) -> Report {
    let mut r = report.clone();
    r.cases.retain(|c| {
        (suite.only.is_empty() || suite.only.contains(&c.name))
            && suite.modes.iter().any(|m| m.name() == c.mode)
    });
    if let Some(p) = suite.partition {
        let pairs: Vec<(String, String)> = r
            .cases
            .iter()
            .map(|c| (c.name.clone(), c.mode.clone()))
            .collect();
        let keep = partition::pairs_of(p, &pairs);
        r.cases
            .retain(|c| keep.iter().any(|(n, m)| *n == c.name && *m == c.mode));
    }
    let kept = |case: &str, mode: &str| r.cases.iter().any(|c| c.name == case && c.mode == mode);
    let cross_mode = r
        .cross_mode
        .iter()
        .filter(|d| kept(&d.case, &d.base) && kept(&d.case, &d.mode))
        .cloned()
        .collect();
    r.cross_mode = cross_mode;
    r
}

/// Put a side's report directory into the compare directory: `src` copied to `dst` (which must not
/// exist), its report files (json, md, junit.xml, html) replaced by `report`'s.
fn place_side(report: &Report, src: &Path, dst: &Path) -> Result<()> {
    if dst.exists() {
        bail!(
            "{} exists — fix: give --out a new or empty directory",
            dst.display()
        );
    }
    baseline::copy_dir(src, dst)?;
    report.write(dst)?;
    Ok(())
}

fn side_info(
    label: String,
    stack: Option<Stack>,
    baseline: Option<String>,
    dir: &str,
    r: &Report,
) -> SideInfo {
    SideInfo {
        label,
        stack,
        baseline,
        dir: dir.to_owned(),
        run_id: r.run_id.clone(),
        runner: r.environment.runner.describe.clone(),
        podman: r.environment.podman.version.clone(),
    }
}

/// Compare `<out>/a` with `<out>/b` and write compare.{json,md,html} into `out`. `a` and `b` give
/// the sides' labels, stacks and baseline names (their other fields are refreshed).
pub fn finish(out: &Path, a: SideInfo, b: SideInfo, accept: Vec<Accept>) -> Result<Comparison> {
    let sa = Side::load(&out.join("a"))?;
    let sb = Side::load(&out.join("b"))?;
    let mut d = diff::diff(
        &sa,
        &sb,
        &accept,
        &format!("A ({})", a.label),
        &format!("B ({})", b.label),
    )?;
    let soaks = load_soak(&out.join("a/soak"))?.zip(load_soak(&out.join("b/soak"))?);
    let soak = soaks.map(|(ra, rb)| {
        // Accept lines for soak verdicts (`soak:<metric>`) are used by the soak comparison.
        let mut used: Vec<bool> = accept
            .iter()
            .map(|x| !x.case.starts_with("soak:"))
            .collect();
        let s = soak::compare((&ra, "a/soak"), (&rb, "b/soak"), &accept, &mut used);
        d.unused_accepts.retain(|x| {
            !x.case.starts_with("soak:")
                || !accept
                    .iter()
                    .zip(&used)
                    .any(|(y, u)| *u && y.case == x.case && y.mode == x.mode)
        });
        d.gate.unaccepted_regressions += s.unaccepted_regressions;
        d.gate.passed = d.gate.unaccepted_regressions == 0;
        d.gate.exit_code = u8::from(!d.gate.passed);
        s
    });
    let c = Comparison {
        schema: SCHEMA.into(),
        a: side_info(a.label, a.stack, a.baseline, "a", &sa.report),
        b: side_info(b.label, b.stack, b.baseline, "b", &sb.report),
        accept,
        diff: d,
        soak,
    };
    render::write(&c, out)?;
    Ok(c)
}

/// A side's soak report, when the side was soaked (`<side>/soak/soak.json`).
fn load_soak(dir: &Path) -> Result<Option<crate::soak::SoakReport>> {
    let p = dir.join(crate::soak::render::JSON);
    if !p.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    serde_json::from_str(&text).map(Some).map_err(|e| {
        anyhow::anyhow!(
            "`{}` is not a runnerlab soak report ({}) — fix: run the compare again",
            p.display(),
            e.to_string().replace('\n', " ")
        )
    })
}

/// Soak `stack` `builds` builds per mode of `suite` into `out` (the side's `soak/`).
async fn soak_stack(stack: &Stack, suite: &SuiteOptions, builds: usize, out: &Path) -> Result<()> {
    let s = suite_for(stack, suite)?;
    let mut o = crate::soak::SoakOptions::new(s.modes.clone(), builds);
    o.runner = s.runner;
    o.engine = s.engine;
    o.config_env = s.config_env;
    o.out_dir = Some(out.to_path_buf());
    eprintln!("runnerlab compare: soaking {stack}: {builds} builds per mode");
    let (r, _) = crate::soak::run(&o)
        .await
        .with_context(|| format!("soaking {stack}"))?;
    eprintln!(
        "runnerlab compare: soak of {stack}: {} in {:.0} s",
        if r.passed { "pass" } else { "FAIL" },
        r.wall_s
    );
    Ok(())
}

/// `runnerlab compare`: run (or load) both sides, compare them, write the compare directory.
pub async fn run(opts: &CompareOptions) -> Result<Comparison> {
    if opts.soak == Some(0) {
        bail!("--soak 0 soaks nothing — fix: --soak N with N ≥ 10 (100 for a nightly verdict)");
    }
    if opts.soak.is_some() && opts.suite.partition.is_some() {
        bail!(
            "--soak with --partition would soak both stacks in every part — fix: run the soak as a compare of its own, without --partition"
        );
    }
    if opts.soak.is_some() && opts.baseline.is_some() {
        bail!(
            "--soak soaks both stacks, and a baseline is a saved report, not a stack — fix: compare two stacks (--a/--b) with --soak, or leave --soak out"
        );
    }
    // A baseline that cannot be used fails before anything is created or run.
    let base = opts.baseline.as_deref().map(baseline::load).transpose()?;
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating {}", opts.out.display()))?;
    let a_info = match (&opts.baseline, base) {
        (Some(name), Some(side)) => {
            place_side(
                &restrict(&side.report, &opts.suite),
                &side.dir,
                &opts.out.join("a"),
            )?;
            side_info(
                format!("baseline {name}"),
                None,
                Some(name.clone()),
                "a",
                &side.report,
            )
        }
        _ => {
            let (r, dir) = run_stack(&opts.a, &opts.suite).await?;
            place_side(&r, &dir, &opts.out.join("a"))?;
            side_info(opts.a.label(), Some(opts.a.clone()), None, "a", &r)
        }
    };
    let (r, dir) = run_stack(&opts.b, &opts.suite).await?;
    place_side(&r, &dir, &opts.out.join("b"))?;
    let b_info = side_info(opts.b.label(), Some(opts.b.clone()), None, "b", &r);
    if let Some(n) = opts.soak {
        // In turns, never side by side: the two soaks' curves would share the two cores.
        soak_stack(&opts.a, &opts.suite, n, &opts.out.join("a/soak")).await?;
        soak_stack(&opts.b, &opts.suite, n, &opts.out.join("b/soak")).await?;
    }
    finish(&opts.out, a_info, b_info, opts.accept.clone())
}

/// What `runnerlab merge` produced.
#[derive(Debug)]
pub enum Merged {
    /// Parts of a partitioned conformance run: one report.
    Report(Box<Report>),
    /// Parts of a partitioned compare: one comparison (its gate is the merge's exit code).
    Compare(Box<Comparison>),
}

/// Merge the report directories of `dirs` into `out` (report.json/md/junit.xml and the traces).
fn merge_reports(dirs: &[PathBuf], out: &Path) -> Result<Report> {
    let mut parts = Vec::new();
    for d in dirs {
        parts.push((
            d.clone(),
            load_report(
                &d.join("report.json"),
                "run that part again, or leave it out of the merge",
            )?,
        ));
    }
    let merged = partition::merge(&parts, diff::trace_output)?;
    for d in dirs {
        let traces = d.join("traces");
        if traces.is_dir() {
            baseline::copy_dir(&traces, &out.join("traces"))?;
        }
    }
    merged.write(out)?;
    Ok(merged)
}

/// `runnerlab merge PART_DIR... --out DIR`: the parts of a partitioned conformance run (each a
/// report directory) or of a partitioned compare (each a compare directory) joined into `out`.
pub fn merge_dirs(parts: &[PathBuf], out: &Path) -> Result<Merged> {
    if parts.is_empty() {
        bail!("nothing to merge — fix: runnerlab merge PART_DIR... --out DIR");
    }
    let is_compare = |d: &PathBuf| d.join("compare.json").is_file();
    let is_report = |d: &PathBuf| d.join("report.json").is_file();
    if parts.iter().all(is_report) {
        return Ok(Merged::Report(Box::new(merge_reports(parts, out)?)));
    }
    if !parts.iter().all(is_compare) {
        let bad = parts
            .iter()
            .find(|d| !is_compare(d) && !is_report(d))
            .or_else(|| parts.iter().find(|d| !is_compare(d)))
            .expect("one part is not a compare directory");
        bail!(
            "{} holds neither report.json nor compare.json, or the parts are of different kinds — fix: merge only the --out directories of one partitioned `conformance` or `compare` run",
            bad.display()
        );
    }
    let mut metas: Vec<Comparison> = Vec::new();
    for d in parts {
        let p = d.join("compare.json");
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        let c: Comparison = serde_json::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "`{}` is not a runnerlab compare ({}) — fix: run that part again",
                p.display(),
                e.to_string().replace('\n', " ")
            )
        })?;
        if c.schema != SCHEMA {
            bail!(
                "`{}` is schema {:?}, expected {SCHEMA} — fix: produce the parts with this runnerlab",
                p.display(),
                c.schema
            );
        }
        if let Some(first) = metas.first() {
            let what = if first.a.label != c.a.label {
                Some(format!("A {:?} vs {:?}", first.a.label, c.a.label))
            } else if first.b.label != c.b.label {
                Some(format!("B {:?} vs {:?}", first.b.label, c.b.label))
            } else if first.accept != c.accept {
                Some("the --accept lists".to_owned())
            } else {
                None
            };
            if let Some(what) = what {
                bail!(
                    "cannot merge {} with {}: they compared different things ({what}) — fix: merge only the parts of one compare",
                    parts[0].display(),
                    d.display()
                );
            }
        }
        metas.push(c);
    }
    for side in ["a", "b"] {
        let dirs: Vec<PathBuf> = parts.iter().map(|d| d.join(side)).collect();
        merge_reports(&dirs, &out.join(side))?;
    }
    let first = metas.swap_remove(0);
    Ok(Merged::Compare(Box::new(finish(
        out,
        first.a,
        first.b,
        first.accept,
    )?)))
}

#[cfg(test)]
mod tests {
    use super::diff::tests::{case, report};
    use super::*;
    use crate::report::Status;

    fn write_report(dir: &Path, r: &Report, traces: &[(&str, &str)]) {
        r.write(dir).unwrap();
        for (p, t) in traces {
            crate::paths::write_atomic(&dir.join(p), t.as_bytes()).unwrap();
        }
    }

    fn suite() -> SuiteOptions {
        SuiteOptions {
            modes: crate::executor::Executor::ALL.to_vec(),
            runner: Default::default(),
            only: Vec::new(),
            parallel: 1,
            runner_on_host: false,
            engine: crate::engine::host(),
            config_env: Vec::new(),
            partition: None,
        }
    }

    #[test]
    fn suite_for_applies_the_stack() {
        let st = Stack::parse("--b", "podman=host,runner=module:v9,config=FF_X=1").unwrap();
        let s = suite_for(&st, &suite()).unwrap();
        assert_eq!(s.engine.name(), "host");
        assert_eq!(s.config_env, [("FF_X".to_owned(), "1".to_owned())]);
        assert_eq!(
            s.runner.from,
            Some(crate::forge::runner::Source::Module("v9".into()))
        );
    }

    #[test]
    fn report_json_round_trips_byte_identical() {
        let r = report(vec![case(
            "hello",
            "shell",
            Status::KnownFinding,
            Some("t"),
        )]);
        let json = r.json().unwrap();
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back.json().unwrap(), json);
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("report.json"), &json).unwrap();
        load_report(&tmp.path().join("report.json"), "x").unwrap();
    }

    #[test]
    fn restrict_keeps_the_selection_and_the_partition() {
        let r = report(vec![
            case("a", "shell", Status::Passed, None),
            case("b", "shell", Status::Passed, None),
            case("a", "docker", Status::Passed, None),
        ]);
        let mut s = suite();
        s.modes = vec![crate::executor::Executor::Shell];
        let names =
            |r: &Report| -> Vec<String> { r.cases.iter().map(|c| c.name.clone()).collect() };
        assert_eq!(names(&restrict(&r, &s)), ["a", "b"]);
        s.only = vec!["b".into()];
        assert_eq!(names(&restrict(&r, &s)), ["b"]);
        s.only.clear();
        s.partition = Some(Partition { index: 2, total: 2 });
        assert_eq!(restrict(&r, &s).cases.len(), 1);
    }

    /// Two partitioned compares merged: one comparison over every case, the gate recomputed.
    #[test]
    fn merge_of_compare_parts_recomputes_the_gate() {
        let tmp = tempfile::tempdir().unwrap();
        let t = "traces/p/hello.shell.log";
        let parts: Vec<PathBuf> = [1, 2]
            .iter()
            .map(|k| tmp.path().join(format!("part{k}")))
            .collect();
        let a_cases = [
            case("hello", "shell", Status::Passed, Some(t)),
            case("svc", "docker", Status::Passed, None),
        ];
        let b_cases = [
            case("hello", "shell", Status::Passed, Some(t)),
            case("svc", "docker", Status::Failed, None),
        ];
        for (i, part) in parts.iter().enumerate() {
            let mut ra = report(vec![a_cases[i].clone()]);
            let mut rb = report(vec![b_cases[i].clone()]);
            ra.run_id = format!("rl-a{i}");
            rb.run_id = format!("rl-b{i}");
            write_report(&part.join("a"), &ra, &[(t, "[step_script]\nhi\n")]);
            write_report(&part.join("b"), &rb, &[(t, "[step_script]\nho\n")]);
            let info = |label: &str| SideInfo {
                label: label.into(),
                stack: None,
                baseline: None,
                dir: String::new(),
                run_id: String::new(),
                runner: String::new(),
                podman: String::new(),
            };
            finish(part, info("podman=host"), info("podman=trixie"), Vec::new()).unwrap();
        }
        let out = tmp.path().join("merged");
        let Merged::Compare(c) = merge_dirs(&parts, &out).unwrap() else {
            panic!("expected a comparison");
        };
        assert_eq!(c.diff.rows.len(), 2);
        assert_eq!(c.diff.gate.exit_code, 1);
        assert_eq!(c.diff.diffs.len(), 1);
        assert_eq!(c.a.run_id, "rl-a0+rl-a1");
        assert!(out.join("compare.html").is_file());
        assert!(out.join("b").join(t).is_file());

        // Parts of different comparisons are refused.
        let c2: Comparison =
            serde_json::from_str(&std::fs::read_to_string(parts[1].join("compare.json")).unwrap())
                .unwrap();
        let mut c2 = c2;
        c2.b.label = "podman=host".into();
        std::fs::write(
            parts[1].join("compare.json"),
            serde_json::to_string(&c2).unwrap(),
        )
        .unwrap();
        let e = format!(
            "{:#}",
            merge_dirs(&parts, &tmp.path().join("m2")).unwrap_err()
        );
        assert!(
            e.contains("compared different things (B \"podman=trixie\" vs \"podman=host\")"),
            "{e}"
        );

        // A directory that is neither.
        let e = format!(
            "{:#}",
            merge_dirs(&[tmp.path().to_path_buf()], &out).unwrap_err()
        );
        assert!(e.contains("neither report.json nor compare.json"), "{e}");
    }

    #[test]
    fn merge_of_report_parts_writes_one_report() {
        let tmp = tempfile::tempdir().unwrap();
        let p1 = tmp.path().join("p1");
        let p2 = tmp.path().join("p2");
        write_report(
            &p1,
            &report(vec![case("hello", "docker", Status::Passed, None)]),
            &[],
        );
        write_report(
            &p2,
            &report(vec![case("hello", "shell", Status::Failed, None)]),
            &[],
        );
        let out = tmp.path().join("out");
        let Merged::Report(r) = merge_dirs(&[p1, p2], &out).unwrap() else {
            panic!("expected a report");
        };
        // Canonical order: shell before docker.
        let modes: Vec<&str> = r.cases.iter().map(|c| c.mode.as_str()).collect();
        assert_eq!(modes, ["shell", "docker"]);
        assert!(out.join("junit.xml").is_file());
        load_report(&out.join("report.json"), "x").unwrap();
    }
}
