//! `runnerlab bench`: figures measured side by side in one run, never asserted in tests.
//!
//! - end-to-end wall time of a trivial pipeline vs the runner's own job duration (first `running`
//!   update to final update), as a ratio: what the lab and coordinator add around a job;
//! - dispatch latency: job queued on the mock → the runner's job request answered with it;
//! - set-up: the runner forge warm (cache hit) and `Lab::start` warm; the cold forge time recorded
//!   in the cached build's provenance.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use serde::Serialize;

use crate::forge::runner::{self, GetOptions};
use crate::lab::{Executor, Lab, LabOptions};
use crate::paths;

#[derive(Debug, Serialize)]
pub struct Stats {
    pub n: usize,
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub max: f64,
}

impl Stats {
    pub fn of(mut xs: Vec<f64>) -> Stats {
        xs.sort_by(|a, b| a.total_cmp(b));
        let q = |p: f64| {
            if xs.is_empty() {
                f64::NAN
            } else {
                xs[((xs.len() - 1) as f64 * p).round() as usize]
            }
        };
        Stats {
            n: xs.len(),
            min: q(0.0),
            p50: q(0.5),
            p90: q(0.9),
            max: q(1.0),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub runner: String,
    pub jobs: usize,
    /// Pipeline creation → pipeline finished, seconds.
    pub e2e_wall_s: Stats,
    /// The runner's first `running` update → final update, seconds.
    pub runner_job_s: Stats,
    /// p50 of e2e wall / runner job duration.
    pub overhead_ratio_p50: f64,
    /// Job queued → job handed to the runner, milliseconds, with the runner parked in a long-poll.
    pub dispatch_idle_ms: Stats,
    /// The same for a pipeline created right after the previous one finished: the runner is then
    /// between polls (its `check_interval`, 3 s by default), as it would be with GitLab.
    pub dispatch_back_to_back_ms: Stats,
    pub forge_warm_s: f64,
    pub forge_cold_s_recorded: f64,
    pub lab_start_warm_s: f64,
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

pub async fn run(
    jobs: usize,
    runner_opts: &GetOptions,
) -> Result<(BenchReport, std::path::PathBuf)> {
    ensure!(jobs > 0, "--jobs must be at least 1");
    // Warm the cache first so that the timed call below is a pure cache hit.
    let forged = runner::get(runner_opts).await?;
    let t = Instant::now();
    runner::get(runner_opts).await?;
    let forge_warm_s = secs(t.elapsed());
    let mut lopts = LabOptions::new(Executor::Shell);
    lopts.runner = runner_opts.clone();
    let lab = Lab::start_with(lopts).await?;
    let lab_start_warm_s = secs(lab.started_in());
    let (mut wall, mut job_s, mut idle, mut b2b) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..jobs {
        // Even jobs: queued while the runner listens (the target case); odd: back to back.
        let parked = i % 2 == 0;
        eprintln!(
            "runnerlab bench: job {}/{jobs} ({})",
            i + 1,
            if parked {
                "runner idle"
            } else {
                "back to back"
            }
        );
        if parked {
            lab.wait_idle(Duration::from_secs(30)).await?;
        }
        let run = lab.pipeline("hello").run().await?;
        let job = run.job("hello");
        ensure!(
            job.status() == "success",
            "bench job ended {}",
            job.status()
        );
        if let (Some(q), Some(d)) = (job.job.queued_at, job.job.dispatched_at) {
            let ms = secs(d.saturating_duration_since(q)) * 1000.0;
            if parked { idle.push(ms) } else { b2b.push(ms) }
        }
        // Overhead is measured on idle-runner jobs only: back-to-back ones mostly measure check_interval.
        if let (true, Some(d)) = (parked, job.duration()) {
            wall.push(secs(run.wall));
            job_s.push(secs(d));
        }
    }
    let ratios: Vec<f64> = wall.iter().zip(&job_s).map(|(w, j)| w / j).collect();
    let report = BenchReport {
        runner: forged.describe(),
        jobs,
        e2e_wall_s: Stats::of(wall),
        runner_job_s: Stats::of(job_s),
        overhead_ratio_p50: Stats::of(ratios).p50,
        dispatch_idle_ms: Stats::of(idle),
        dispatch_back_to_back_ms: Stats::of(b2b),
        forge_warm_s,
        forge_cold_s_recorded: forged.provenance.build_seconds,
        lab_start_warm_s,
    };
    let out = paths::run_output_dir(lab.run_id());
    paths::write_atomic(
        &out.join("bench.json"),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    lab.shutdown().await?;
    Ok((report, out))
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "runner: {}", self.runner)?;
        writeln!(f, "idle-runner jobs:")?;
        writeln!(
            f,
            "e2e wall (s)        p50 {:.2}  p90 {:.2}  min {:.2}  max {:.2}  (n={})",
            self.e2e_wall_s.p50,
            self.e2e_wall_s.p90,
            self.e2e_wall_s.min,
            self.e2e_wall_s.max,
            self.e2e_wall_s.n
        )?;
        writeln!(
            f,
            "runner job (s)      p50 {:.2}  p90 {:.2}  min {:.2}  max {:.2}",
            self.runner_job_s.p50,
            self.runner_job_s.p90,
            self.runner_job_s.min,
            self.runner_job_s.max
        )?;
        writeln!(f, "e2e / job ratio     p50 {:.2}", self.overhead_ratio_p50)?;
        writeln!(
            f,
            "dispatch idle (ms)  p50 {:.1}  p90 {:.1}  max {:.1}  (n={})",
            self.dispatch_idle_ms.p50,
            self.dispatch_idle_ms.p90,
            self.dispatch_idle_ms.max,
            self.dispatch_idle_ms.n
        )?;
        writeln!(
            f,
            "dispatch b2b (ms)   p50 {:.1}  p90 {:.1}  max {:.1}  (n={}, runner between polls)",
            self.dispatch_back_to_back_ms.p50,
            self.dispatch_back_to_back_ms.p90,
            self.dispatch_back_to_back_ms.max,
            self.dispatch_back_to_back_ms.n
        )?;
        writeln!(
            f,
            "forge warm {:.2}s (cold build recorded: {:.0}s); lab start warm {:.2}s",
            self.forge_warm_s, self.forge_cold_s_recorded, self.lab_start_warm_s
        )
    }
}
