//! `runnerlab bench`: figures measured side by side in one run, never asserted in tests.
//!
//! - end-to-end wall time of a trivial pipeline vs the runner's own job duration (first `running`
//!   update to final update), as a ratio: what the lab and coordinator add around a job;
//! - dispatch latency: job queued on the mock → the runner's job request answered with it;
//! - set-up: the runner forge warm (cache hit) and `Lab::start` warm; the cold forge time recorded
//!   in the cached build's provenance.

pub mod peer;
pub mod pinp;

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
pub struct ModeBench {
    pub executor: String,
    /// What the jobs of this row set, e.g. `FF_NETWORK_PER_BUILD=false` (empty: the lab's defaults).
    pub variant: String,
    /// Pipeline creation → pipeline finished, seconds (idle-runner jobs).
    pub e2e_wall_s: Stats,
    /// The runner's first `running` update → final update, seconds.
    pub runner_job_s: Stats,
    /// The job script's own time: the `step_script` section in the trace's line timestamps.
    pub script_s: Stats,
    /// p50 of e2e wall minus script time: what runner, executor and Podman add to a job.
    pub overhead_p50_s: f64,
    /// Containers started per job (Podman events of the run's labelled containers).
    pub containers_per_job: f64,
    /// e2e p50 / (containers per job × the `podman run --rm` floor p50); only with containers.
    pub floor_ratio: Option<f64>,
    /// e2e p50 / (containers per job × the compat-API floor p50): the same ratio against what a
    /// container costs on the path the docker executor takes. Docker mode only.
    pub api_floor_ratio: Option<f64>,
    /// p50 seconds of each job-log section (prepare_executor, get_sources, step_script, …): where
    /// a job's time goes.
    pub sections_p50_s: Vec<(String, f64)>,
    /// Job queued → job handed to the runner, milliseconds, with the runner parked in a long-poll.
    pub dispatch_idle_ms: Stats,
    /// The same for a pipeline created right after the previous one finished: the runner is then
    /// between polls (its `check_interval`, 3 s by default), as it would be with GitLab.
    pub dispatch_back_to_back_ms: Stats,
    pub lab_start_warm_s: f64,
}

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub runner: String,
    pub jobs: usize,
    /// `podman run --rm <base> true` as the lab user, seconds: the floor a container costs here.
    pub podman_run_floor_s: Stats,
    /// The same `true` container through the lab's Docker-compatible API socket, in the calls the
    /// docker executor makes (create, start, wait `not-running`, remove), seconds.
    pub podman_api_floor_s: Option<Stats>,
    /// `GET /info` + `GET /version` on that socket, seconds: the docker executor asks both at
    /// the start of every job.
    pub podman_api_info_version_s: Option<Stats>,
    pub modes: Vec<ModeBench>,
    pub forge_warm_s: f64,
    pub forge_cold_s_recorded: f64,
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Each job-log section's duration in seconds, in trace order, from the per-line timestamps of its
/// `section_start:<epoch>:<name>` and `section_end:<epoch>:<name>` lines
/// (`2026-…Z 00O section_start:…:step_script`).
pub fn section_seconds(raw: &str) -> Vec<(String, f64)> {
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;
    let mut open: Vec<(String, OffsetDateTime)> = Vec::new();
    let mut done = Vec::new();
    for line in raw.lines() {
        let Some(ts) = line
            .split_whitespace()
            .next()
            .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
        else {
            continue;
        };
        for (kind, start) in [("section_start:", true), ("section_end:", false)] {
            let Some(i) = line.find(kind) else { continue };
            // <epoch>:<name>, the name ending at `[options]`, `\r` or the end of the line.
            let rest = &line[i + kind.len()..];
            let Some(name) = rest.split_once(':').map(|(_, n)| {
                n.split(['[', '\r', '\x1b'])
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_owned()
            }) else {
                continue;
            };
            if start {
                open.push((name, ts));
            } else if let Some(k) = open.iter().rposition(|(n, _)| *n == name) {
                let (n, t0) = open.remove(k);
                done.push((n, (ts - t0).as_seconds_f64()));
            }
        }
    }
    done
}

/// One `podman run --rm --network none <base> true` as the lab user, seconds.
async fn podman_floor_once(lab: &Lab) -> Result<f64> {
    let t = Instant::now();
    lab.podman()
        .run([
            "run",
            "--rm",
            "--network",
            "none",
            "--label",
            &format!("{}={}", crate::engine::podman::RUN_LABEL, lab.run_id()),
            crate::forge::base::LATEST,
            "true",
        ])
        .await?;
    Ok(secs(t.elapsed()))
}

/// The floors of a container here, `n` runs each, taken in turns so that both see the same
/// machine: `podman run --rm` on the command line and, when the lab has an API socket and runs the
/// docker executor, the same container through the compat API (see [`api_floor_once`]).
pub async fn measure_floors(lab: &Lab, n: usize) -> Result<(Stats, Option<ApiFloor>)> {
    let docker = match (lab.executor().mode().has_api_floor(), lab.api_socket()) {
        (true, Some(sock)) => Some(bollard::Docker::connect_with_unix(
            &sock.to_string_lossy(),
            60,
            bollard::API_DEFAULT_VERSION,
        )?),
        _ => None,
    };
    let (mut cli, mut life, mut hello) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        cli.push(podman_floor_once(lab).await?);
        if let Some(d) = &docker {
            let (l, h) = api_floor_once(d, lab.run_id(), i).await?;
            life.push(l);
            hello.push(h);
        }
    }
    let api = docker.map(|_| ApiFloor {
        lifecycle_s: Stats::of(life),
        info_version_s: Stats::of(hello),
    });
    Ok((Stats::of(cli), api))
}

/// Containers of this run started since `since`. No `--until`: podman 4.3.1 returns nothing with
/// it in `--stream=false` mode, so this is called right after the window closes.
pub(crate) async fn containers_started(lab: &Lab, since: &str) -> Result<usize> {
    let out = lab
        .podman()
        .text([
            "events",
            "--stream=false",
            "--since",
            since,
            "--filter",
            "event=start",
            "--filter",
            &format!(
                "label={}={}",
                crate::engine::podman::RUN_LABEL,
                lab.run_id()
            ),
            "--format",
            "{{.Name}}",
        ])
        .await?;
    Ok(out.lines().filter(|l| !l.trim().is_empty()).count())
}

/// The compat-API floor and the per-job handshake, measured on the lab's own API socket.
pub struct ApiFloor {
    pub lifecycle_s: Stats,
    pub info_version_s: Stats,
}

/// A `true` container through the Docker-compatible API, in the calls the runner's docker
/// executor makes for each of its containers (create, start, wait `not-running`, remove), and
/// `GET /info` + `GET /version`, which it asks at every job: (lifecycle, info + version) seconds.
/// Without a network, like the CLI floor: the two differ only in the path.
async fn api_floor_once(docker: &bollard::Docker, run_id: &str, i: usize) -> Result<(f64, f64)> {
    use bollard::models::{ContainerCreateBody, HostConfig};
    use bollard::query_parameters::{
        CreateContainerOptions, RemoveContainerOptions, WaitContainerOptions,
    };
    use futures_util::StreamExt;
    let t = Instant::now();
    docker.info().await?;
    docker.version().await?;
    let hello = secs(t.elapsed());
    let name = format!("{run_id}-api-floor-{i}");
    let t = Instant::now();
    let body = ContainerCreateBody {
        image: Some(crate::forge::base::LATEST.into()),
        cmd: Some(vec!["true".into()]),
        labels: Some(
            [(
                crate::engine::podman::RUN_LABEL.to_owned(),
                run_id.to_owned(),
            )]
            .into(),
        ),
        host_config: Some(HostConfig {
            network_mode: Some("none".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let created = docker
        .create_container(
            Some(CreateContainerOptions {
                name: Some(name),
                ..Default::default()
            }),
            body,
        )
        .await?;
    let ran = async {
        docker
            .start_container(
                &created.id,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await?;
        let mut wait = docker.wait_container(
            &created.id,
            Some(WaitContainerOptions {
                condition: "not-running".into(),
            }),
        );
        while let Some(r) = wait.next().await {
            r?;
        }
        anyhow::Ok(())
    }
    .await;
    // Removed whatever happened: a floor container must not outlive the measurement.
    let removed = docker
        .remove_container(
            &created.id,
            Some(RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await;
    ran?;
    removed?;
    Ok((secs(t.elapsed()), hello))
}

/// What the floors of a bench run are, measured once (the first lab that can).
#[derive(Default)]
struct Floors {
    cli: Option<Stats>,
    api: Option<ApiFloor>,
}

async fn bench_mode(
    mode: Executor,
    jobs: usize,
    runner_opts: &GetOptions,
    engine: &crate::engine::EngineRef,
    floors: &mut Floors,
) -> Result<Vec<ModeBench>> {
    let mut lopts = LabOptions::new(mode);
    lopts.engine = engine.clone();
    lopts.runner = runner_opts.clone();
    let lab = Lab::start_with(lopts).await?;
    let lab_start_warm_s = secs(lab.started_in());
    // The default configuration, then the mode's variants (docker: without a network per build).
    let variants: Vec<Option<(&str, &str)>> = std::iter::once(None)
        .chain(mode.mode().bench_variants().iter().map(|&v| Some(v)))
        .collect();
    let mut rows = Vec::new();
    for variant in variants {
        let w = bench_window(&lab, mode, jobs, variant).await?;
        rows.push((variant, w));
    }
    // After the windows, so that the floors' own containers are not counted.
    // The docker lab measures both floors in turns (its API floor needs the socket), replacing a
    // CLI floor an earlier lab took; otherwise the first lab measures the CLI floor.
    if floors.cli.is_none() || (mode.mode().has_api_floor() && floors.api.is_none()) {
        eprintln!("runnerlab bench: container floors (7 runs)");
        let (cli, api) = measure_floors(&lab, 7).await?;
        floors.cli = Some(cli);
        if api.is_some() {
            floors.api = api;
        }
    }
    lab.shutdown().await?;
    let mut out = Vec::new();
    for (variant, w) in rows {
        let containers_per_job = w.started as f64 / jobs as f64;
        let wall = Stats::of(w.wall);
        // The job script's own time is its `step_script` section.
        let script = Stats::of(
            w.sections
                .iter()
                .find(|(n, _)| n == "step_script")
                .map(|(_, v)| v.clone())
                .unwrap_or_default(),
        );
        let overhead_p50_s = wall.p50 - if script.n > 0 { script.p50 } else { 0.0 };
        let ratio = |floor: f64| {
            (containers_per_job > 0.0).then(|| wall.p50 / (containers_per_job * floor))
        };
        out.push(ModeBench {
            executor: mode.name().into(),
            variant: variant.map(|(k, v)| format!("{k}={v}")).unwrap_or_default(),
            floor_ratio: floors.cli.as_ref().and_then(|f| ratio(f.p50)),
            api_floor_ratio: match (mode.mode().has_api_floor(), &floors.api) {
                (true, Some(a)) => ratio(a.lifecycle_s.p50),
                _ => None,
            },
            e2e_wall_s: wall,
            runner_job_s: Stats::of(w.job_s),
            script_s: script,
            overhead_p50_s,
            containers_per_job,
            sections_p50_s: w
                .sections
                .into_iter()
                .map(|(n, v)| (n, Stats::of(v).p50))
                .collect(),
            dispatch_idle_ms: Stats::of(w.idle),
            dispatch_back_to_back_ms: Stats::of(w.b2b),
            lab_start_warm_s,
        });
    }
    Ok(out)
}

/// What one window of `jobs` trivial jobs measured.
struct Window {
    wall: Vec<f64>,
    job_s: Vec<f64>,
    idle: Vec<f64>,
    b2b: Vec<f64>,
    sections: Vec<(String, Vec<f64>)>,
    started: usize,
}

async fn bench_window(
    lab: &Lab,
    mode: Executor,
    jobs: usize,
    variant: Option<(&str, &str)>,
) -> Result<Window> {
    let now = || {
        time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    let since = now();
    let mut w = Window {
        wall: Vec::new(),
        job_s: Vec::new(),
        idle: Vec::new(),
        b2b: Vec::new(),
        sections: Vec::new(),
        started: 0,
    };
    let label = variant
        .map(|(k, v)| format!(", {k}={v}"))
        .unwrap_or_default();
    for i in 0..jobs {
        // Even jobs: queued while the runner listens (the target case); odd: back to back.
        let parked = i % 2 == 0;
        eprintln!(
            "runnerlab bench: {mode}{label} job {}/{jobs} ({})",
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
        let mut p = lab.pipeline("hello");
        if let Some((k, v)) = variant {
            p = p.variable(mock_gitlab::Variable {
                key: k.into(),
                value: v.into(),
                masked: false,
                protected: false,
                file: false,
                raw: false,
            });
        }
        let run = p.run().await?;
        let job = run.job("hello");
        ensure!(
            job.status() == "success",
            "bench job ended {}",
            job.status()
        );
        if let (Some(q), Some(d)) = (job.job.queued_at, job.job.dispatched_at) {
            let ms = secs(d.saturating_duration_since(q)) * 1000.0;
            if parked {
                w.idle.push(ms)
            } else {
                w.b2b.push(ms)
            }
        }
        // Overhead is measured on idle-runner jobs only: back-to-back ones mostly measure check_interval.
        if let (true, Some(d)) = (parked, job.duration()) {
            w.wall.push(secs(run.wall));
            w.job_s.push(secs(d));
            for (name, secs) in section_seconds(&job.job.trace_text()) {
                match w.sections.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, v)) => v.push(secs),
                    None => w.sections.push((name, vec![secs])),
                }
            }
        }
    }
    w.started = containers_started(lab, &since).await?;
    Ok(w)
}

pub async fn run(
    jobs: usize,
    modes: &[Executor],
    runner_opts: &GetOptions,
    engine: &crate::engine::EngineRef,
) -> Result<(BenchReport, std::path::PathBuf)> {
    ensure!(jobs > 0, "--jobs must be at least 1");
    // Warm the cache first so that the timed call below is a pure cache hit.
    let forged = runner::get(runner_opts).await?;
    let t = Instant::now();
    runner::get(runner_opts).await?;
    let forge_warm_s = secs(t.elapsed());
    let mut floors = Floors::default();
    let mut results = Vec::new();
    for &mode in modes {
        results.extend(bench_mode(mode, jobs, runner_opts, engine, &mut floors).await?);
    }
    let (api_life, api_hello) = match floors.api {
        Some(a) => (Some(a.lifecycle_s), Some(a.info_version_s)),
        None => (None, None),
    };
    let report = BenchReport {
        runner: forged.describe(),
        jobs,
        podman_run_floor_s: floors.cli.unwrap_or_else(|| Stats::of(Vec::new())),
        podman_api_floor_s: api_life,
        podman_api_info_version_s: api_hello,
        modes: results,
        forge_warm_s,
        forge_cold_s_recorded: forged.provenance.build_seconds,
    };
    let out = paths::run_output_dir(&format!(
        "bench-{}",
        time::OffsetDateTime::now_utc().unix_timestamp()
    ));
    paths::write_atomic(
        &out.join("bench.json"),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    Ok((report, out))
}

/// One fleet size of `bench --fleet`.
#[derive(Debug, Serialize)]
pub struct FleetRound {
    pub runners: usize,
    pub jobs: usize,
    /// Pipeline creation → its last job finished, seconds.
    pub wall_s: f64,
    pub jobs_per_min: f64,
    /// Jobs each runner took, in fleet order.
    pub per_runner: Vec<usize>,
    pub fleet_start_s: f64,
}

/// `bench --fleet`: the `fleet-bench` fixture (20 trivial untagged jobs queued at once) on a fleet
/// of one runner, then of two (each `concurrent = 1`), in one run on the same host.
#[derive(Debug, Serialize)]
pub struct FleetBench {
    pub runner: String,
    pub executor: String,
    pub rounds: Vec<FleetRound>,
    /// Throughput of two runners over that of one.
    pub ratio: f64,
}

async fn fleet_round(
    mode: Executor,
    runners: usize,
    runner_opts: &GetOptions,
) -> Result<FleetRound> {
    use crate::lab::fleet::{Fleet, FleetOptions, RunnerSpec};
    let specs = (1..=runners)
        .map(|i| RunnerSpec::new(&format!("runner-{i}")))
        .collect();
    let mut opts = FleetOptions::new(mode, specs);
    opts.runner = runner_opts.clone();
    let fleet = Fleet::start(opts).await?;
    let fleet_start_s = secs(fleet.started_in());
    // Every runner listening, so that neither starts the burst late.
    for r in fleet.runners() {
        r.wait_idle(Duration::from_secs(30)).await?;
    }
    eprintln!("runnerlab bench: fleet of {runners}: 20 jobs");
    let run = fleet
        .pipeline("fleet-bench")
        .timeout(Duration::from_secs(600))
        .run()
        .await?;
    ensure!(
        run.status() == "success",
        "fleet bench pipeline ended {}",
        run.status()
    );
    let per_runner = fleet.runners().iter().map(|r| r.jobs().len()).collect();
    let jobs = run.jobs.len();
    let wall_s = secs(run.wall);
    fleet.shutdown().await?;
    Ok(FleetRound {
        runners,
        jobs,
        wall_s,
        jobs_per_min: jobs as f64 * 60.0 / wall_s,
        per_runner,
        fleet_start_s,
    })
}

/// Throughput of the same burst over one runner and over two, side by side in one run.
pub async fn run_fleet(
    mode: Executor,
    runner_opts: &GetOptions,
) -> Result<(FleetBench, std::path::PathBuf)> {
    let forged = runner::get(runner_opts).await?;
    let one = fleet_round(mode, 1, runner_opts).await?;
    let two = fleet_round(mode, 2, runner_opts).await?;
    let report = FleetBench {
        runner: forged.describe(),
        executor: mode.name().into(),
        ratio: two.jobs_per_min / one.jobs_per_min,
        rounds: vec![one, two],
    };
    let out = paths::run_output_dir(&format!(
        "bench-fleet-{}",
        time::OffsetDateTime::now_utc().unix_timestamp()
    ));
    paths::write_atomic(
        &out.join("bench-fleet.json"),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    Ok((report, out))
}

impl std::fmt::Display for FleetBench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "runner: {}", self.runner)?;
        writeln!(
            f,
            "fleet throughput, {} executor, trivial jobs queued at once:",
            self.executor
        )?;
        for r in &self.rounds {
            writeln!(
                f,
                "{} runner(s): {} jobs in {:.1}s = {:.1} jobs/min (per runner {:?}; fleet start {:.1}s)",
                r.runners, r.jobs, r.wall_s, r.jobs_per_min, r.per_runner, r.fleet_start_s
            )?;
        }
        writeln!(f, "2 runners / 1 runner: {:.2}x", self.ratio)
    }
}

impl ModeBench {
    /// The row's name: the mode, and the variant if any.
    fn row(&self) -> String {
        match self.variant.as_str() {
            "" => self.executor.clone(),
            v => format!("{} {v}", self.executor),
        }
    }
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "runner: {}", self.runner)?;
        write!(
            f,
            "floors p50: podman run --rm {:.2}s (n={})",
            self.podman_run_floor_s.p50, self.podman_run_floor_s.n
        )?;
        if let (Some(a), Some(h)) = (&self.podman_api_floor_s, &self.podman_api_info_version_s) {
            write!(
                f,
                "; the same through the compat API {:.2}s (n={}); GET /info + /version {:.2}s",
                a.p50, a.n, h.p50
            )?;
        }
        writeln!(f, "\nidle-runner jobs per mode (trivial `echo` job):")?;
        let w = self
            .modes
            .iter()
            .map(|m| m.row().len())
            .max()
            .unwrap_or(4)
            .max(4);
        writeln!(
            f,
            "{:<w$} {:>9} {:>9} {:>9} {:>9} {:>10} {:>7} {:>7} {:>9} {:>9} {:>9}",
            "mode",
            "e2e p50",
            "job p50",
            "script",
            "overhead",
            "containers",
            "/floor",
            "/api",
            "disp idle",
            "disp b2b",
            "lab start"
        )?;
        let ratio = |r: Option<f64>| r.map(|r| format!("{r:.2}")).unwrap_or_else(|| "—".into());
        for m in &self.modes {
            writeln!(
                f,
                "{:<w$} {:>8.2}s {:>8.2}s {:>8.2}s {:>8.2}s {:>10.1} {:>7} {:>7} {:>7.1}ms {:>7.0}ms {:>8.2}s",
                m.row(),
                m.e2e_wall_s.p50,
                m.runner_job_s.p50,
                m.script_s.p50,
                m.overhead_p50_s,
                m.containers_per_job,
                ratio(m.floor_ratio),
                ratio(m.api_floor_ratio),
                m.dispatch_idle_ms.p50,
                m.dispatch_back_to_back_ms.p50,
                m.lab_start_warm_s
            )?;
        }
        for m in &self.modes {
            let parts: Vec<String> = m
                .sections_p50_s
                .iter()
                .map(|(n, s)| format!("{n} {s:.2}"))
                .collect();
            writeln!(f, "{:<w$} sections p50 (s): {}", m.row(), parts.join(", "))?;
        }
        writeln!(
            f,
            "forge warm {:.2}s (cold build recorded: {:.0}s)",
            self.forge_warm_s, self.forge_cold_s_recorded
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The job script's own time, as `bench_mode` takes it: the `step_script` section.
    fn script_seconds(raw: &str) -> Option<f64> {
        section_seconds(raw)
            .into_iter()
            .find(|(n, _)| n == "step_script")
            .map(|(_, s)| s)
    }

    #[test]
    fn script_time_comes_from_the_step_script_section_lines() {
        let raw = "2026-12-01T02:10:16.035146Z 00O+section_start:1796091016:step_script\n\
                   2026-12-01T02:10:16.050817Z 01O $ echo hi\n\
                   2026-12-01T02:10:17.555881Z 00O section_end:1796091017:step_script\n";
        let s = script_seconds(raw).unwrap();
        assert!((s - 1.520735).abs() < 1e-6, "{s}");
        assert_eq!(script_seconds("no sections here"), None);
    }

    #[test]
    fn sections_nest_and_carry_options() {
        let raw = "2026-12-01T02:10:16.000000Z 00O+section_start:1:step_script\r\x1b[0K\n\
                   2026-12-01T02:10:16.500000Z 01O section_start:1:section_script_step_1[collapsed=true]\r\x1b[0K$ x\n\
                   2026-12-01T02:10:16.750000Z 01O section_end:1:section_script_step_1\r\x1b[0K\n\
                   2026-12-01T02:10:17.000000Z 00O section_end:1:step_script\r\x1b[0K\n";
        let got: Vec<(String, f64)> = section_seconds(raw);
        assert_eq!(
            got,
            [
                ("section_script_step_1".to_owned(), 0.25),
                ("step_script".to_owned(), 1.0)
            ]
        );
    }
}
