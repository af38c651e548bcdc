//! The conformance runner: every applicable case (see [`crate::cases`]) in every mode asked for,
//! modes side by side on one lab each, and the report of what they found (see [`crate::report`]).
//! The case declarations and the report formats live apart; the paths of both stay reachable here.

use std::time::Instant;

use anyhow::Result;

use crate::lab::Executor;

mod cost;

use cost::{job_overhead_s, trivial_job_cost};

pub use crate::cases::{
    Case, Outcome, case, cases, ensure_trace_has, job_output, not_applicable, pinp_extras,
};
pub use crate::report::environment;

/// Options of a conformance run.
#[derive(Clone, Debug)]
pub struct SuiteOptions {
    pub modes: Vec<Executor>,
    pub runner: crate::forge::runner::GetOptions,
    /// Only the cases with these names (all when empty).
    pub only: Vec<String>,
    /// How many modes run at the same time, each on its own lab.
    pub parallel: usize,
    /// Docker mode with the runner on the host instead of in a container.
    pub runner_on_host: bool,
    /// The Podman installation every lab of the suite runs on.
    pub engine: crate::engine::EngineRef,
    /// Runner environment overrides (`gitlab-runner register --env KEY=VALUE`, i.e.
    /// `[runners] environment`), in order; empty for the default configuration.
    pub config_env: Vec<(String, String)>,
    /// Only this part of the (case, mode) pairs, in canonical order (`--partition k/N`).
    pub partition: Option<crate::compare::Partition>,
}

/// Run every applicable case in every mode on one lab per mode, and write the report.
pub async fn run_suite(opts: &SuiteOptions) -> Result<(crate::report::Report, std::path::PathBuf)> {
    use crate::report::{Report, SCHEMA};
    let started = Instant::now();
    let started_at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let runner = crate::forge::runner::get(&opts.runner).await?;
    let podman = crate::engine::podman::Podman::rootless_on(
        opts.engine.clone(),
        crate::engine::podman::LabUser::lookup()?,
    );
    let mut environment = environment(&podman, &runner).await?;
    if opts.runner_on_host {
        environment.runner.placement = "host".into();
    }
    let run_id = crate::lab::new_run_id();
    let out = crate::paths::run_output_dir(&run_id);
    std::fs::create_dir_all(&out)?;
    let mut results = Vec::new();
    // (case, mode, the jobs' output) for the cross-mode comparison.
    let mut outputs: Vec<(&'static str, &'static str, String)> = Vec::new();
    let selected: Vec<Case> = cases()
        .into_iter()
        .filter(|c| opts.only.is_empty() || opts.only.iter().any(|o| o == c.name))
        .collect();
    let part = partition_pairs(opts, &selected);
    let total: usize = opts
        .modes
        .iter()
        .map(|m| {
            selected
                .iter()
                .filter(|c| c.modes.contains(m) && in_part(&part, c.name, *m))
                .count()
        })
        .sum();
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} [{elapsed}] {msg}")
            .expect("static template"),
    );
    // Result lines go above the bar on a terminal, and to stderr as plain lines elsewhere.
    let say = |line: String| {
        if bar.is_hidden() {
            eprintln!("{line}");
        } else {
            bar.println(line);
        }
    };
    // Modes run side by side, `parallel` at a time: a case mostly waits (for the runner, for
    // containers), so two labs on two cores take little longer than one.
    // The `hello` job's cost is measured alone (see `Quiet`): the other modes' cases wait.
    let quiet = Quiet::default();
    let per_mode: Vec<ModeResults> = {
        use futures_util::StreamExt;
        let (selected, out, bar, say, quiet) = (&selected, &out, &bar, &say, &quiet);
        let mut runs = futures_util::stream::iter(opts.modes.iter().enumerate())
            .map(|(i, mode)| async move {
                (
                    i,
                    run_mode(*mode, selected, opts, out, bar, say, quiet).await,
                )
            })
            .buffer_unordered(opts.parallel.max(1));
        let mut done = Vec::new();
        while let Some((i, r)) = runs.next().await {
            done.push((i, r?));
        }
        // The report lists modes in the order asked for, whatever finished first.
        done.sort_by_key(|(i, _)| *i);
        done.into_iter().map(|(_, r)| r).collect()
    };
    let mut job_cost = Vec::new();
    for (r, o, c) in per_mode {
        results.extend(r);
        outputs.extend(o);
        job_cost.extend(c);
    }
    bar.finish_and_clear();
    // Canonical order (modes, then cases as declared), whatever order the modes finished in: the
    // order partitions and merges count in.
    crate::compare::partition::sort_canonical(&mut results);
    let report = Report {
        schema: SCHEMA.into(),
        run_id,
        started_at,
        duration_s: started.elapsed().as_secs_f64(),
        environment,
        cases: results,
        cross_mode: crate::report::cross_mode(&outputs),
        job_cost,
    };
    for f in report.write(&out)? {
        // Every secret of the run (tokens, registry credentials) was registered: none may be in a
        // report, whatever a case put in its detail.
        let text = std::fs::read_to_string(&f)?;
        anyhow::ensure!(
            !crate::redact::contains_secret(&text),
            "{} holds a registered secret: a scrub is missing on its way there",
            f.display()
        );
    }
    Ok((report, out))
}

/// One mode's case results, its jobs' outputs (case, mode, output) for the cross-mode comparison,
/// and what its jobs cost beyond their scripts.
type ModeResults = (
    Vec<crate::report::CaseResult>,
    Vec<(&'static str, &'static str, String)>,
    Option<crate::report::ModeCost>,
);

/// Modes run side by side, but a job's cost measured while other labs start containers says
/// more about the load than about the executor (a `hello` docker job took 15.9 s instead of
/// 6.8 s so). Lab starts and cases hold a read lock; the `hello` case and the floors measured
/// after it hold the write lock, so they run alone (tokio's lock is fair: queued cases wait).
#[derive(Default)]
struct Quiet(tokio::sync::RwLock<()>);

/// The trace files under a lab's output directory, with their modification times.
fn trace_files(
    lab_out: &std::path::Path,
) -> std::collections::BTreeMap<std::path::PathBuf, std::time::SystemTime> {
    fn walk(
        d: &std::path::Path,
        into: &mut std::collections::BTreeMap<std::path::PathBuf, std::time::SystemTime>,
    ) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, into);
            } else if let Ok(m) = e.metadata().and_then(|m| m.modified()) {
                into.insert(p, m);
            }
        }
    }
    let mut m = std::collections::BTreeMap::new();
    walk(&lab_out.join("traces"), &mut m);
    m
}

/// Copy the traces a case wrote (new or rewritten since `before`) from the lab's directory to the
/// report's; the first one's path relative to the report, if any.
fn keep_new_traces(
    lab_out: &std::path::Path,
    before: &std::collections::BTreeMap<std::path::PathBuf, std::time::SystemTime>,
    out: &std::path::Path,
) -> Result<Option<String>> {
    let mut first = None;
    for (p, m) in trace_files(lab_out) {
        if before.get(&p) == Some(&m) {
            continue;
        }
        let Ok(rel) = p.strip_prefix(lab_out) else {
            continue;
        };
        if let Ok(bytes) = std::fs::read(&p) {
            crate::paths::write_atomic(&out.join(rel), &bytes)?;
            first.get_or_insert_with(|| rel.to_string_lossy().into_owned());
        }
    }
    Ok(first)
}

/// The (case, mode) pairs of `--partition k/N`: every selected case in every mode asked for
/// (skipped pairs too), in the canonical order, this part's share; `None` without a partition.
fn partition_pairs(opts: &SuiteOptions, selected: &[Case]) -> Option<Vec<(String, String)>> {
    let p = opts.partition?;
    let pairs: Vec<(String, String)> = opts
        .modes
        .iter()
        .flat_map(|m| {
            selected
                .iter()
                .map(|c| (c.name.to_owned(), m.name().to_owned()))
        })
        .collect();
    Some(crate::compare::partition::pairs_of(p, &pairs))
}

fn in_part(part: &Option<Vec<(String, String)>>, case: &str, mode: Executor) -> bool {
    part.as_ref()
        .is_none_or(|p| p.iter().any(|(c, m)| c == case && m == mode.name()))
}

/// Every applicable case of `selected` in one mode, on one lab.
async fn run_mode(
    mode: Executor,
    selected: &[Case],
    opts: &SuiteOptions,
    out: &std::path::Path,
    bar: &indicatif::ProgressBar,
    say: &(dyn Fn(String) + Sync),
    quiet: &Quiet,
) -> Result<ModeResults> {
    use crate::report::{CaseResult, Status};
    let mut results = Vec::new();
    let mut outputs = Vec::new();
    let part = partition_pairs(opts, selected);
    let selected: Vec<&Case> = selected
        .iter()
        .filter(|c| in_part(&part, c.name, mode))
        .collect();
    let applicable: Vec<&Case> = selected
        .iter()
        .copied()
        .filter(|c| c.modes.contains(&mode))
        .collect();
    for c in selected.iter().filter(|c| !c.modes.contains(&mode)) {
        results.push(CaseResult {
            name: c.name.into(),
            mode: mode.name().into(),
            status: Status::Skipped,
            duration_s: 0.0,
            trace: None,
            detail: Some(c.skip_reason(mode)),
        });
    }
    if applicable.is_empty() {
        return Ok((results, outputs, None));
    }
    bar.set_message(format!("starting a {mode} lab"));
    let mut lopts = crate::lab::LabOptions::new(mode);
    lopts.runner = opts.runner.clone();
    lopts.runner_on_host = opts.runner_on_host;
    lopts.engine = opts.engine.clone();
    // A stack's runner configuration: `[runners] environment` entries.
    for (k, v) in &opts.config_env {
        lopts
            .extras
            .register_args
            .extend(["--env".into(), format!("{k}={v}")]);
    }
    let started = {
        let _shared = quiet.0.read().await;
        crate::lab::Lab::start_with(lopts).await
    };
    let lab = match started {
        Ok(l) => l,
        Err(e) => {
            for c in applicable {
                results.push(CaseResult {
                    name: c.name.into(),
                    mode: mode.name().into(),
                    status: Status::Failed,
                    duration_s: 0.0,
                    trace: None,
                    detail: Some(crate::redact::scrub(&format!(
                        "the {mode} lab did not start: {e:#}"
                    ))),
                });
            }
            return Ok((results, outputs, None));
        }
    };
    let mut overheads = Vec::new();
    let mut trivial = None;
    for c in applicable {
        let since = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let measured = c.name == "hello";
        // Held until the case (and, for `hello`, the floors after it) is done.
        let (_shared, _alone) = if measured {
            (None, Some(quiet.0.write().await))
        } else {
            (Some(quiet.0.read().await), None)
        };
        let t = Instant::now();
        bar.set_message(format!("{mode} {}", c.name));
        let traces_before = trace_files(lab.out_dir());
        let res = (c.run)(&lab).await;
        let duration_s = t.elapsed().as_secs_f64();
        let (status, detail, trace) = match res {
            Ok(o) => {
                let trace = o.run.as_ref().and_then(|r| {
                    r.jobs.first().map(|j| {
                        let p = r.trace_path(std::path::Path::new(""), &j.name);
                        p.to_string_lossy().into_owned()
                    })
                });
                if let Some(r) = &o.run {
                    outputs.push((c.name, mode.name(), job_output(r)));
                    overheads.extend(r.jobs.iter().filter_map(job_overhead_s));
                    if measured && o.finding.is_none() {
                        trivial = trivial_job_cost(&lab, r, &since).await;
                    }
                }
                // Keep the traces next to the report so its links resolve.
                if let Some(r) = &o.run {
                    for j in &r.jobs {
                        let src = r.trace_path(&r.out_dir, &j.name);
                        let dst = r.trace_path(out, &j.name);
                        if let Ok(bytes) = std::fs::read(&src) {
                            crate::paths::write_atomic(&dst, &bytes)?;
                        }
                    }
                }
                match o.finding {
                    Some(f) => (Status::KnownFinding, Some(f), trace),
                    None => (Status::Passed, o.note, trace),
                }
            }
            Err(e) => {
                // The pipelines the case ran before its checks failed: their traces go next to
                // the report too, so a failure links its job log (and `compare` can diff it).
                let trace = keep_new_traces(lab.out_dir(), &traces_before, out)?;
                match c.known_in(mode) {
                    Some(reason) => (
                        Status::KnownFinding,
                        Some(crate::redact::scrub(&format!("{reason}\n\n{e:#}"))),
                        trace,
                    ),
                    None => (
                        Status::Failed,
                        Some(crate::redact::scrub(&format!("{e:#}"))),
                        trace,
                    ),
                }
            }
        };
        bar.inc(1);
        say(format!(
            "runnerlab: {mode:>6} {:<28} {} {:.1}s",
            c.name,
            match status {
                Status::Passed => "ok",
                Status::KnownFinding => "ok (known finding)",
                Status::Skipped => "skipped",
                Status::Failed => "FAILED",
            },
            duration_s
        ));
        results.push(CaseResult {
            name: c.name.into(),
            mode: mode.name().into(),
            status,
            duration_s,
            trace,
            detail,
        });
    }
    let removed = {
        let _shared = quiet.0.read().await;
        lab.shutdown().await?
    };
    tracing::debug!("removed {removed}");
    let cost = (!overheads.is_empty()).then(|| crate::report::ModeCost {
        mode: mode.name().into(),
        jobs: overheads.len(),
        median_overhead_s: crate::bench::Stats::of(overheads).p50,
        trivial,
    });
    Ok((results, outputs, cost))
}
