//! `runnerlab bench --pinp`: the `go-multistage` fixture's `podman build` inside a job (Podman in
//! rootless Podman, per mode) against the same build by the lab user's Podman on the host, measured
//! side by side in one run: host, then each mode, `reps` times. Figures, never asserted.
//!
//! Both builds start without cache (the job's store is a fresh tmpfs; the host build uses
//! `--no-cache --layers=false`), so the ratio is what nesting costs, not what a cache saves.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::bench::Stats;
use crate::engine::podman::Podman;
use crate::forge::runner::GetOptions;
use crate::lab::{Executor, Lab, LabOptions, new_run_id};

const PROJECT: &str = "go-multistage";

#[derive(Debug, Serialize)]
pub struct PinpMode {
    pub executor: String,
    /// `podman build` inside the job, as the job times it.
    pub inner_build_s: Stats,
    /// The whole job (runner's running → final update): load of the builder archive, build, run.
    pub job_s: Stats,
    /// inner p50 / host p50.
    pub ratio_p50: f64,
}

#[derive(Debug, Serialize)]
pub struct PinpBench {
    pub reps: usize,
    /// The same build by the lab user's Podman on the host.
    pub host_build_s: Stats,
    pub modes: Vec<PinpMode>,
}

/// One uncached host build of the fixture, labelled and removed afterwards.
async fn host_build(podman: &Podman, context: &std::path::Path) -> Result<f64> {
    let id = new_run_id();
    let tag = format!("localhost/runnerlab-bench/playground:{id}");
    let label = format!("{}={id}", crate::engine::podman::RUN_LABEL);
    let ctx = context.to_string_lossy();
    let t = Instant::now();
    let res = podman
        .run([
            "build",
            "--no-cache",
            "--layers=false",
            "--label",
            &label,
            "-t",
            &tag,
            &ctx,
        ])
        .await;
    let took = t.elapsed().as_secs_f64();
    // Removed whether or not the build worked: a benchmark leaves nothing in the store.
    let _ = podman.run(["rmi", "-f", &tag]).await;
    let ids = podman
        .text(["images", "-q", "--filter", &format!("label={label}")])
        .await
        .unwrap_or_default();
    for i in ids.split_whitespace() {
        let _ = podman.run(["rmi", "-f", i]).await;
    }
    res.context("podman build of the fixture on the host")?;
    Ok(took)
}

/// The inner build's time as the job prints it (`inner podman build took <ms>ms`).
fn inner_seconds(trace: &str) -> Option<f64> {
    trace.lines().find_map(|l| {
        l.trim_end()
            .strip_prefix("inner podman build took ")?
            .strip_suffix("ms")?
            .parse::<f64>()
            .ok()
            .map(|ms| ms / 1000.0)
    })
}

pub async fn run(modes: &[Executor], reps: usize, runner: &GetOptions) -> Result<PinpBench> {
    if reps == 0 {
        bail!("--jobs must be at least 1");
    }
    let podman = Podman::lab()?;
    let user = podman
        .user()
        .context("the PinP benchmark needs the rootless lab user")?
        .clone();
    // The build context, readable by the lab user (the checkout may not be).
    let ctx = tempfile::Builder::new()
        .prefix("runnerlab-pinp-")
        .tempdir()?;
    for f in ["Containerfile", "main.go"] {
        let src = crate::paths::fixtures()
            .join("projects")
            .join(PROJECT)
            .join(f);
        std::fs::copy(&src, ctx.path().join(f))
            .with_context(|| format!("copying {}", src.display()))?;
        user.chown(&ctx.path().join(f))?;
    }
    user.chown(ctx.path())?;

    let mut labs = Vec::new();
    for &mode in modes {
        let mut opts = LabOptions::new(mode);
        opts.runner = runner.clone();
        let lab = Lab::start_with(opts).await?;
        let pinp = crate::forge::pinp::ensure(lab.runner(), lab.images(), lab.podman()).await?;
        let (extras, _) = crate::cases::pinp_extras(mode, &pinp)?;
        let mut opts = lab.options().clone();
        opts.extras = extras;
        // The PinP variant only: the plain lab was there to forge the images.
        drop(lab);
        labs.push((mode, Lab::start_with(opts).await?));
    }
    let mut host = Vec::new();
    let mut inner: Vec<Vec<f64>> = vec![Vec::new(); labs.len()];
    let mut jobs: Vec<Vec<f64>> = vec![Vec::new(); labs.len()];
    for rep in 1..=reps {
        host.push(host_build(&podman, ctx.path()).await?);
        eprintln!(
            "runnerlab bench: pinp {rep}/{reps}: host build {:.1}s",
            host[host.len() - 1]
        );
        for (i, (mode, lab)) in labs.iter().enumerate() {
            let run = lab
                .pipeline(PROJECT)
                .timeout(Duration::from_secs(300))
                .run()
                .await?;
            let job = run.job("podman-build");
            if job.status() != "success" {
                bail!(
                    "the {mode} PinP job ended {}; trace:\n{}",
                    job.status(),
                    job.trace()
                );
            }
            let s = inner_seconds(&job.trace()).context("the job did not print its build time")?;
            inner[i].push(s);
            if let Some(d) = job.duration() {
                jobs[i].push(d.as_secs_f64());
            }
            eprintln!("runnerlab bench: pinp {rep}/{reps}: {mode} inner build {s:.1}s");
        }
    }
    let host_build_s = Stats::of(host);
    let modes = labs
        .iter()
        .zip(inner.into_iter().zip(jobs))
        .map(|((mode, _), (inner, jobs))| {
            let inner_build_s = Stats::of(inner);
            PinpMode {
                executor: mode.name().to_owned(),
                ratio_p50: inner_build_s.p50 / host_build_s.p50.max(1e-9),
                inner_build_s,
                job_s: Stats::of(jobs),
            }
        })
        .collect();
    Ok(PinpBench {
        reps,
        host_build_s,
        modes,
    })
}

impl std::fmt::Display for PinpBench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "podman build of {PROJECT}, uncached, {} reps side by side: host p50 {:.2}s",
            self.reps, self.host_build_s.p50
        )?;
        writeln!(
            f,
            "{:<7} {:>12} {:>12} {:>10}",
            "mode", "inner p50", "job p50", "inner/host"
        )?;
        for m in &self.modes {
            writeln!(
                f,
                "{:<7} {:>11.2}s {:>11.2}s {:>10.2}",
                m.executor, m.inner_build_s.p50, m.job_s.p50, m.ratio_p50
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_inner_build_time_is_read_from_the_jobs_line() {
        let t = "$ echo ...\ninner podman build took 1534ms\n$ podman run";
        assert_eq!(super::inner_seconds(t), Some(1.534));
        assert_eq!(super::inner_seconds("no such line"), None);
    }
}
