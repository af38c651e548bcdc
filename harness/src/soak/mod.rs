//! Soak runs: the `soak` fixture pipeline built again and again through the real runner, one
//! executor mode after the other, with the resource curves and the verdicts that say whether
//! anything accumulates (the seed's "crashes every 100 builds").
//!
//! Per mode: start a lab, point the [`ProcSampler`] at its runner and API service, take a baseline
//! reading, then for every build run the pipeline, wait until the runner asks for the next job
//! (its cleanup is over), and take a per-build reading (processes every build, store counts and
//! disk every `store_every` builds). Verdicts are fitted on the per-build readings; the 1 Hz series
//! is the curve people look at. Output: `target/runnerlab/soak-<run>/` (see [`render`]).

pub mod disk;
mod judge;
pub mod loopstore;
pub mod render;
pub mod sampler;
pub mod verdict;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::engine::podman::Podman;
use crate::forge::runner::GetOptions;
use crate::lab::{Executor, Lab, LabOptions};
use sampler::{GroupStat, ProcSampler, Sampled, StoreCounts, StorePaths, Targets};
use verdict::Verdict;

pub use judge::{DRIFT_LIMIT, METRICS, Metric, Scope, judge_all, metric_points};
use judge::{apply_known, count_verdict};

/// The fixture project every build runs.
pub const PROJECT: &str = "soak";
/// The job variable that makes the custom driver leave a container behind on every build.
pub const LEAK_VARIABLE: &str = "RUNNERLAB_SOAK_LEAK";

#[derive(Clone, Debug)]
pub struct SoakOptions {
    pub executors: Vec<Executor>,
    pub builds: usize,
    /// Sampling interval of the /proc series.
    pub interval: Duration,
    /// Store counts and disk use every this many builds (and at the first and last).
    pub store_every: usize,
    /// Turn on the custom driver's leak switch (custom mode only): the verdicts must catch it.
    pub leak: bool,
    pub runner: GetOptions,
    /// Runner `check_interval` (s). The default 3 s is also the gap between back-to-back builds;
    /// 1 s lets a 100-build soak of three modes fit in 20 minutes without changing what is built.
    pub check_interval: u32,
    /// Output directory; default `target/runnerlab/soak-<run>/`.
    pub out_dir: Option<PathBuf>,
    /// Other work uses the rootless store meanwhile (a test suite running in parallel): host-scope
    /// verdicts are reported but do not decide the result.
    pub shared_host: bool,
    /// Restart the lab's Podman API service after this build (docker and custom modes): does the
    /// runner recover, and how many builds are lost?
    pub restart_api_after: Option<usize>,
    /// Also run the disk-full scenario on a store of this many MiB (root only).
    pub disk_full_mib: Option<u64>,
    /// The Podman engine the labs run on (`--engine`).
    pub engine: crate::engine::EngineRef,
    /// A stack's runner configuration (`compare`'s `config=`): `[runners] environment` entries.
    pub config_env: Vec<(String, String)>,
}

impl SoakOptions {
    pub fn new(executors: Vec<Executor>, builds: usize) -> SoakOptions {
        SoakOptions {
            executors,
            builds,
            interval: Duration::from_secs(1),
            store_every: 10,
            leak: false,
            runner: GetOptions::default(),
            check_interval: 1,
            out_dir: None,
            shared_host: false,
            restart_api_after: None,
            disk_full_mib: None,
            engine: crate::engine::host(),
            config_env: Vec::new(),
        }
    }
}

/// One build of a soak.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Build {
    pub mode: String,
    pub n: usize,
    /// Job status as the mock recorded it (`success`, `failed`, …) or `error` when the pipeline
    /// did not finish (the harness's error is in `error`).
    pub status: String,
    pub duration_s: f64,
    /// The runner's trace checksum matched the trace the mock assembled.
    pub checksum_ok: bool,
    /// sha256 of the normalised trace: equal builds have equal traces apart from run-specific lines.
    pub trace_sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The kept trace (the first, any unlike the one before, any failure), relative to the soak
    /// directory: normalised like snapshots, secrets removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
}

/// A reading taken after build `n` (0: before the first build).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PerBuild {
    pub n: usize,
    /// Seconds on the sampler's clock.
    pub t_s: f64,
    pub groups: BTreeMap<String, GroupStat>,
    /// What the lab owns in the store (its run label and the runner's own labels), every build.
    pub lab: LabCounts,
    /// The whole store, every `store_every` builds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreCounts>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LabCounts {
    pub containers: u64,
    pub volumes: u64,
    pub networks: u64,
}

impl LabCounts {
    fn growth_since(&self, before: &LabCounts) -> LabCounts {
        LabCounts {
            containers: self.containers.saturating_sub(before.containers),
            volumes: self.volumes.saturating_sub(before.volumes),
            networks: self.networks.saturating_sub(before.networks),
        }
    }
}

/// One executor mode's soak.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModeSoak {
    pub mode: String,
    pub run_id: String,
    pub lab_start_s: f64,
    pub wall_s: f64,
    pub readings: Vec<PerBuild>,
    /// What the lab's cleanup removed after the soak (the runner container, config volume, …
    /// and anything builds leaked).
    pub removed_by_cleanup: usize,
    /// Store objects more at the end than at the baseline: what builds left behind (whole store).
    pub left_behind: StoreCounts,
    /// The lab's own objects more at the end than at the baseline.
    pub lab_left_behind: LabCounts,
    /// What carried this run's label after cleanup: must be nothing.
    pub leftovers_after_cleanup: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_restart: Option<ApiRestart>,
}

/// The Podman API service restarted in the middle of a soak.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApiRestart {
    pub after_build: usize,
    /// How long the socket was gone.
    pub socket_gone_s: f64,
    /// Builds after the restart that did not succeed.
    pub lost_builds: usize,
    /// The first build after the restart that succeeded, if any.
    pub first_good_build: Option<usize>,
}

/// `soak.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SoakReport {
    pub schema: String,
    pub id: String,
    pub started: String,
    pub builds_per_mode: usize,
    /// The Podman engine soaked: its name and components (older reports: the host engine).
    #[serde(default)]
    pub engine: String,
    pub leak_switch: bool,
    /// The disk-full scenario, when it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_full: Option<disk::DiskFull>,
    /// Stopped by Ctrl-C before all builds ran (never a pass).
    #[serde(default)]
    pub interrupted: bool,
    pub check_interval_s: u32,
    pub builds: Vec<Build>,
    pub modes: Vec<ModeSoak>,
    pub series: Sampled,
    /// The mode each sample belongs to (`series.samples[i]` ↔ `series_mode[i]`).
    pub series_mode: Vec<String>,
    pub verdicts: Vec<Verdict>,
    pub passed: bool,
    pub wall_s: f64,
}

impl SoakReport {
    pub fn failed_verdicts(&self) -> impl Iterator<Item = &Verdict> {
        self.verdicts.iter().filter(|v| !v.pass)
    }
}

/// Ctrl-C, caught once for the whole soak.
pub struct Interrupt {
    hit: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

impl Interrupt {
    fn listen() -> std::sync::Arc<Interrupt> {
        let i = std::sync::Arc::new(Interrupt {
            hit: false.into(),
            notify: tokio::sync::Notify::new(),
        });
        let weak = std::sync::Arc::downgrade(&i);
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok()
                && let Some(i) = weak.upgrade()
            {
                i.hit.store(true, std::sync::atomic::Ordering::SeqCst);
                i.notify.notify_waiters();
            }
        });
        i
    }
    fn is_set(&self) -> bool {
        self.hit.load(std::sync::atomic::Ordering::SeqCst)
    }
    async fn wait(&self) {
        let n = self.notify.notified();
        if !self.is_set() {
            n.await;
        }
    }
}

/// Run a soak and write its report. Returns the report (also when verdicts fail).
pub async fn run(opts: &SoakOptions) -> Result<(SoakReport, PathBuf)> {
    if opts.leak && opts.executors.iter().any(|e| !e.mode().has_leak_switch()) {
        bail!(
            "--leak switches on a leak in the custom executor's cleanup script, which only the custom \
             mode runs\n  fix: add `-e custom` (and no other mode) to use --leak"
        );
    }
    if opts.builds == 0 && opts.disk_full_mib.is_none() {
        bail!("--builds must be at least 1 (0 only with --disk-full)");
    }
    let id = crate::lab::new_run_id();
    let out = opts
        .out_dir
        .clone()
        .unwrap_or_else(|| crate::paths::run_output_dir(&format!("soak-{id}")));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    if opts.disk_full_mib.is_some() && opts.engine.name() != crate::engine::host().name() {
        bail!(
            "--disk-full builds a loop-mounted store for the host engine only\n  fix: leave out --disk-full, or --engine"
        );
    }
    let user = crate::engine::podman::LabUser::lookup()
        .context("soak runs watch the rootless store; run `cargo lab setup` first")?;
    let podman = Podman::rootless_on(opts.engine.clone(), user.clone());
    let store_paths = StorePaths::of(&podman).await?;
    let sampler = ProcSampler::start(sampler::UserIds::of(&user), opts.interval);
    let t0 = Instant::now();
    let started = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let mut builds = Vec::new();
    let mut modes = Vec::new();
    let mut mode_bounds: Vec<(String, f64)> = Vec::new();
    let mut total_done = 0u64;
    let interrupt = Interrupt::listen();
    // `--builds 0`: the disk-full scenario alone.
    let soak_modes: &[Executor] = if opts.builds == 0 {
        &[]
    } else {
        &opts.executors
    };
    for &mode in soak_modes {
        if interrupt.is_set() {
            break;
        }
        mode_bounds.push((mode.to_string(), t0.elapsed().as_secs_f64()));
        let ctx = Ctx {
            opts,
            podman: &podman,
            store_paths: &store_paths,
            sampler: &sampler,
            out: &out,
            interrupt: &interrupt,
        };
        let m = soak_mode(&ctx, mode, &mut builds, &mut total_done)
            .await
            .with_context(|| format!("soak of the {mode} mode"))?;
        modes.push(m);
    }
    let disk_full = match opts.disk_full_mib {
        Some(size) if !interrupt.is_set() => Some({
            mode_bounds.push(("disk-full".into(), t0.elapsed().as_secs_f64()));
            sampler.set_targets(Targets::default());
            disk::run(&opts.runner, size, 20)
                .await
                .context("the disk-full scenario")?
        }),
        _ => None,
    };
    let series = sampler.finish();
    // Each sample belongs to the mode that was running when it was taken.
    let series_mode = series
        .samples
        .iter()
        .map(|s| {
            mode_bounds
                .iter()
                .rev()
                .find(|(_, t)| *t <= s.t_s)
                .map(|(m, _)| m.clone())
                .unwrap_or_default()
        })
        .collect();
    let interrupted = interrupt.is_set();
    let mut verdicts = judge_all(&modes, &builds, opts.shared_host);
    apply_known(&mut verdicts);
    if let Some(d) = &disk_full {
        let mut v = count_verdict(
            "docker",
            "disk_full.recovered",
            "builds",
            0.0,
            match (d.first_symptom, &d.after_prune) {
                (Some(n), Some(a)) => format!(
                    "a {} MiB store showed a full disk at build {n}; `{}` freed {:.0} MiB; the next build: {}",
                    d.size_mib, d.prune_command, d.freed_mib, a.status
                ),
                _ => format!(
                    "a {} MiB store never filled in {} builds",
                    d.size_mib,
                    d.builds.len()
                ),
            },
        );
        v.pass = d.recovered && d.first_symptom.is_some();
        verdicts.push(v);
    }
    let passed = !interrupted
        && verdicts
            .iter()
            .all(|v| v.pass || !v.binding || v.known.is_some())
        && builds
            .iter()
            .all(|b| b.status == "success" && b.checksum_ok)
        && modes.iter().all(|m| m.leftovers_after_cleanup == 0);
    let report = SoakReport {
        schema: "runnerlab.soak/1".into(),
        id,
        started,
        builds_per_mode: opts.builds,
        engine: format!("{}: {}", opts.engine.name(), opts.engine.facts().describe()),
        leak_switch: opts.leak,
        interrupted,
        disk_full,
        check_interval_s: opts.check_interval,
        builds,
        modes,
        series,
        series_mode,
        verdicts,
        passed,
        wall_s: t0.elapsed().as_secs_f64(),
    };
    render::write_all(&report, &out)?;
    Ok((report, out))
}

/// What every mode of one soak shares.
struct Ctx<'a> {
    opts: &'a SoakOptions,
    podman: &'a Podman,
    store_paths: &'a StorePaths,
    sampler: &'a ProcSampler,
    out: &'a std::path::Path,
    interrupt: &'a Interrupt,
}

async fn soak_mode(
    ctx: &Ctx<'_>,
    mode: Executor,
    builds: &mut Vec<Build>,
    total_done: &mut u64,
) -> Result<ModeSoak> {
    let Ctx {
        opts,
        podman,
        sampler,
        out,
        interrupt,
        ..
    } = *ctx;
    let t_mode = Instant::now();
    let mut lopts = LabOptions::new(mode);
    lopts.runner = opts.runner.clone();
    lopts.check_interval = Some(opts.check_interval);
    lopts.engine = opts.engine.clone();
    for (k, v) in &opts.config_env {
        lopts
            .extras
            .register_args
            .extend(["--env".into(), format!("{k}={v}")]);
    }
    eprintln!(
        "runnerlab soak: {mode}: starting a lab (engine {})",
        opts.engine.name()
    );
    let mut lab = Lab::start_with(lopts).await?;
    let lab_start_s = lab.started_in().as_secs_f64();
    sampler.set_targets(Targets {
        runner: Some(lab.runner_pid().await?),
        api: lab.api_pid(),
    });
    let mut readings = vec![reading(&lab, ctx, 0, true).await?];
    let baseline_store = readings[0].store.clone().unwrap_or_default();
    let mut consecutive_errors = 0;
    let mut api_restart = None;
    for n in 1..=opts.builds {
        let mut p = lab.pipeline(PROJECT).timeout(Duration::from_secs(300));
        if opts.leak {
            p = p.variable(mock_gitlab::Variable {
                key: LEAK_VARIABLE.into(),
                value: "1".into(),
                ..Default::default()
            });
        }
        let started = Instant::now();
        // Ctrl-C ends the soak after cleaning up and writing the report of what ran.
        let res = tokio::select! {
            r = p.run() => Some(r),
            _ = interrupt.wait() => None,
        };
        let Some(res) = res else {
            eprintln!("runnerlab soak: interrupted; cleaning up and writing the report");
            break;
        };
        let build = match res {
            Ok(run) => {
                consecutive_errors = 0;
                let job = run.jobs.first().context("the soak pipeline has no job")?;
                let view = crate::lab::JobView { job };
                // Builds differ by their job id only (container names, CI_JOB_ID): equal builds
                // hash equal.
                let trace = crate::redact::normalize_for_snapshot(&view.trace());
                let trace = regex::Regex::new(&format!(r"\b{}\b", job.id))
                    .map(|re| re.replace_all(&trace, "[JOB_ID]").into_owned())
                    .unwrap_or(trace);
                let status = view.status();
                let sha = hex::encode(sha2::Sha256::digest(trace.as_bytes()));
                // Kept: the first trace, every trace unlike the one before, every failure.
                let differs = builds
                    .last()
                    .is_none_or(|b: &Build| b.mode != mode.to_string() || b.trace_sha256 != sha);
                let kept = if status != "success" || differs {
                    let rel = format!("traces/{mode}-{n}.log");
                    crate::paths::write_atomic(&out.join(&rel), trace.as_bytes())?;
                    Some(rel)
                } else {
                    None
                };
                if let Some(f) = job.finished_at {
                    lab.wait_asking_since(f, Duration::from_secs(120)).await?;
                }
                Build {
                    mode: mode.to_string(),
                    n,
                    status,
                    duration_s: view.duration().unwrap_or(run.wall).as_secs_f64(),
                    checksum_ok: view.checksum_ok().unwrap_or(false),
                    trace_sha256: sha,
                    error: None,
                    trace: kept,
                }
            }
            Err(e) => {
                consecutive_errors += 1;
                Build {
                    mode: mode.to_string(),
                    n,
                    status: "error".into(),
                    duration_s: started.elapsed().as_secs_f64(),
                    checksum_ok: false,
                    trace_sha256: String::new(),
                    error: Some(format!("{e:#}")),
                    trace: None,
                }
            }
        };
        *total_done += 1;
        sampler.set_builds(*total_done);
        eprintln!(
            "runnerlab soak: {mode} {n}/{}: {} in {:.1} s{}",
            opts.builds,
            build.status,
            build.duration_s,
            build
                .error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        );
        builds.push(build);
        let count_store = n % opts.store_every.max(1) == 0 || n == opts.builds || n == 1;
        readings.push(reading(&lab, ctx, n, count_store).await?);
        if opts.restart_api_after == Some(n) && mode.mode().uses_api_service() {
            let gone = lab.restart_api().await?;
            sampler.set_targets(Targets {
                runner: Some(lab.runner_pid().await?),
                api: lab.api_pid(),
            });
            eprintln!(
                "runnerlab soak: {mode}: restarted the Podman API service after build {n} (socket gone {:.1} s)",
                gone.as_secs_f64()
            );
            api_restart = Some(ApiRestart {
                after_build: n,
                socket_gone_s: gone.as_secs_f64(),
                lost_builds: 0,
                first_good_build: None,
            });
        }
        if consecutive_errors >= 3 {
            eprintln!(
                "runnerlab soak: {mode}: 3 builds in a row did not finish; stopping this mode"
            );
            break;
        }
    }
    // Against the reading after the first build: that build creates state meant to persist
    // (the cache volume of the slot); what grows after it is left behind.
    if let Some(r) = api_restart.as_mut() {
        let after: Vec<&Build> = builds
            .iter()
            .filter(|b| b.mode == mode.to_string() && b.n > r.after_build)
            .collect();
        r.first_good_build = after.iter().find(|b| b.status == "success").map(|b| b.n);
        r.lost_builds = after.iter().take_while(|b| b.status != "success").count();
    }
    let after_first = &readings[1.min(readings.len() - 1)];
    let last = &readings[readings.len() - 1];
    let lab_left_behind = last.lab.growth_since(&after_first.lab);
    // The store is counted after the first and the last build (and every `store_every`).
    let counted = |r: &PerBuild| r.store.clone().unwrap_or_else(|| baseline_store.clone());
    let left_behind = counted(last_store_reading(&readings)).growth_since(&counted(after_first));
    let run_id = lab.run_id().to_owned();
    sampler.set_targets(Targets::default());
    let removed = lab.shutdown().await?;
    let leftovers = podman.labelled(Some(&run_id))?;
    Ok(ModeSoak {
        mode: mode.to_string(),
        run_id,
        lab_start_s,
        wall_s: t_mode.elapsed().as_secs_f64(),
        readings,
        removed_by_cleanup: removed.len(),
        left_behind,
        lab_left_behind,
        leftovers_after_cleanup: leftovers.len(),
        api_restart,
    })
}

/// The last reading that counted the store (a mode stopped early may end between counts).
fn last_store_reading(readings: &[PerBuild]) -> &PerBuild {
    readings
        .iter()
        .rev()
        .find(|r| r.store.is_some())
        .unwrap_or(&readings[0])
}

/// A per-build reading: processes now, the lab's own objects, and the whole store when
/// `count_store` (one listing of the store serves both).
async fn reading(lab: &Lab, ctx: &Ctx<'_>, n: usize, count_store: bool) -> Result<PerBuild> {
    let inv = ctx.podman.inventory().await?;
    let mine = lab.own(&inv);
    let store = match count_store {
        true => Some(sampler::store_counts(ctx.podman, ctx.store_paths, &inv).await?),
        false => None,
    };
    let sampler = ctx.sampler;
    Ok(PerBuild {
        n,
        t_s: sampler.elapsed().as_secs_f64(),
        groups: sampler.reading(),
        lab: LabCounts {
            containers: mine.containers.len() as u64,
            volumes: mine.volumes.len() as u64,
            networks: mine.networks.len() as u64,
        },
        store,
    })
}
