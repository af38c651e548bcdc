//! `runnerlab bench --peer`: the same pipeline through `runnerlab run` (the real gitlab-runner, docker
//! executor, rootless Podman) and through gitlab-ci-local (which re-implements the runner in Node),
//! on the same machine, in turns. A figure, never asserted.
//!
//! ```text
//! prerequisites: node, git, rsync (gitlab-ci-local shells out to both; rsync is apt-installed when
//!   root and missing) ─► gitlab-ci-local 4.65.0: npm install into <cache>/peer/ (first use)
//! warm lab (docker mode, check_interval 1 s, as `run` starts it) ─► util image stand-in
//!   (base + rsync, tagged docker.io/firecow/gitlab-ci-local-util:latest, lab user's store)
//! W P W P W P   W: fixtures/projects/peer-bench through `run::run_on` on the warm lab, timed
//!                  from pipeline creation to its end
//!               P: the whole `gitlab-ci-local` process as the lab user (setpriv, its HOME) in a
//!                  fresh copy of the project under /tmp, `--container-executable podman`
//!                  (its default pull policy `if-not-present`: local images only), timed whole;
//!                  what it leaves in the store (containers, gcl-* volumes) removed after each run
//! warm lab removed ─► C C: the whole `runnerlab run` (pre-flight, lab start, pipeline, removal)
//! ─► target/runnerlab/bench-peer-<time>/bench-peer.json (+ each run's output), printed table
//! ```
//!
//! Every run must pass all five jobs with `build`'s artifact printed by `test-a`; a failed run is an
//! error, not a figure.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde::Serialize;

use crate::engine::podman::{LabUser, Podman, is_root};
use crate::executor::Executor;
use crate::forge::runner::{self, GetOptions};
use crate::lab::{Lab, LabOptions};
use crate::paths;
use crate::run::{self, Exit, RunOptions};

/// The gitlab-ci-local release compared against.
pub const GCL_VERSION: &str = "4.65.0";
/// gitlab-ci-local 4.65.0's util image (`--helper-image` default, `src/argv.js`).
pub const UTIL_IMAGE: &str = "docker.io/firecow/gitlab-ci-local-util:latest";
/// The fixture project both tools run.
pub const FIXTURE: &str = "peer-bench";
const JOBS: [&str; 5] = ["build", "test-a", "test-b", "test-c", "deploy"];
/// What `test-a` prints when `build`'s artifact reached it.
const ARTIFACT_LINE: &str = "built by build";

#[derive(Clone, Debug)]
pub struct PeerOptions {
    /// Warm runnerlab runs and gitlab-ci-local runs (interleaved).
    pub runs: usize,
    /// Whole `runnerlab run`s (lab start included), after the interleaved runs.
    pub cold_runs: usize,
    pub runner: GetOptions,
}

impl Default for PeerOptions {
    fn default() -> PeerOptions {
        PeerOptions {
            runs: 3,
            cold_runs: 2,
            runner: GetOptions::default(),
        }
    }
}

/// One timed run.
#[derive(Debug, Serialize)]
pub struct PeerRun {
    /// `runnerlab-warm`, `gitlab-ci-local` or `runnerlab-cold`.
    pub tool: String,
    /// Its place in the sequence, from 1.
    pub seq: usize,
    pub wall_s: f64,
    /// Its output, relative to the bench directory.
    pub log: String,
}

/// Where a warm runnerlab pipeline's time goes (medians over the warm runs, seconds).
#[derive(Debug, Serialize)]
pub struct WarmBreakdown {
    /// Pipeline creation → end.
    pub wall_s: f64,
    /// Time with no job on the runner: creation → first job handed out, and between a job's end
    /// and the next job's hand-out (the runner asks again after `check_interval`, 1 s here).
    pub runner_idle_s: f64,
    /// A job handed out → its first `running` update (the runner's own preparations before it
    /// reports).
    pub dispatch_to_running_s: f64,
    /// Each job-log section summed over the five jobs (prepare_executor, get_sources, …), in
    /// first-seen order.
    pub sections_s: Vec<(String, f64)>,
    /// Hand-out → end of the five jobs, summed, minus the sections: what the runner does
    /// outside its sections (final trace and status updates, container removal).
    pub unsectioned_s: f64,
}

#[derive(Debug, Serialize)]
pub struct PeerBench {
    pub runner: String,
    pub peer: String,
    pub executor: String,
    pub fixture: String,
    pub runs: Vec<PeerRun>,
    pub warm_median_s: f64,
    pub cold_median_s: f64,
    pub peer_median_s: f64,
    /// Warm runnerlab median / gitlab-ci-local median.
    pub warm_ratio: f64,
    /// Cold runnerlab median / gitlab-ci-local median.
    pub cold_ratio: f64,
    pub lab_start_s: f64,
    pub warm_breakdown: WarmBreakdown,
    /// What gitlab-ci-local left in the lab user's store and the bench removed, over all its runs
    /// (its own clean-up fails on this Podman).
    pub peer_leftover_containers: usize,
    pub peer_leftover_volumes: usize,
}

/// The median: the middle value, or the mean of the two middle ones.
pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    match xs.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => xs[n / 2],
        n => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

fn which(prog: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
        .unwrap_or(false)
}

/// node, git and rsync on the host: gitlab-ci-local runs on Node and shells out to git and rsync
/// (it copies the tracked files with `rsync` before any job). rsync is installed when missing and
/// we are root.
fn ensure_prerequisites() -> Result<()> {
    for (prog, fix) in [
        (
            "node",
            "install Node.js 18 or newer (apt-get install nodejs)",
        ),
        ("npm", "install npm (apt-get install npm)"),
        ("git", "apt-get install git"),
    ] {
        if !which(prog) {
            bail!("bench --peer needs `{prog}` on PATH for gitlab-ci-local.\n  fix: {fix}");
        }
    }
    if !which("rsync") {
        if !is_root() {
            bail!(
                "bench --peer needs `rsync` on the host: gitlab-ci-local copies the project with it.\n  \
                 fix: apt-get install rsync"
            );
        }
        eprintln!(
            "runnerlab bench --peer: installing rsync (gitlab-ci-local copies the project with it)"
        );
        let st = std::process::Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args([
                "-o",
                crate::host::APT_LOCK_WAIT,
                "install",
                "-y",
                "-qq",
                "--no-install-recommends",
                "rsync",
            ])
            .status()
            .context("running apt-get")?;
        ensure!(
            st.success(),
            "apt-get install rsync failed ({st}).\n  fix: apt-get update && apt-get install rsync"
        );
    }
    Ok(())
}

/// The installed package's entry point under an npm `--prefix`.
fn gcl_entry(prefix: &Path) -> PathBuf {
    prefix.join("node_modules/gitlab-ci-local/src/index.js")
}

/// gitlab-ci-local 4.65.0 in `<cache>/peer/gitlab-ci-local-4.65.0`, complete or absent: installed
/// into a temporary directory beside it, then renamed.
pub fn ensure_gitlab_ci_local() -> Result<PathBuf> {
    let root = paths::cache_dir().join("peer");
    let dest = root.join(format!("gitlab-ci-local-{GCL_VERSION}"));
    if gcl_entry(&dest).is_file() {
        return Ok(dest);
    }
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".gitlab-ci-local-")
        .tempdir_in(&root)?;
    eprintln!(
        "runnerlab bench --peer: npm install gitlab-ci-local@{GCL_VERSION} into {} (first use)…",
        dest.display()
    );
    let t = Instant::now();
    let out = std::process::Command::new("npm")
        .arg("install")
        .arg("--prefix")
        .arg(tmp.path())
        .args([
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            &format!("gitlab-ci-local@{GCL_VERSION}"),
        ])
        .stdin(Stdio::null())
        .output()
        .context("running npm (is Node.js's npm installed? apt-get install npm)")?;
    if !out.status.success() {
        bail!(
            "npm install gitlab-ci-local@{GCL_VERSION} failed ({}):\n{}\n  fix: make sure npm reaches its \
             registry (`npm config get registry`, a proxy in `npm config set proxy …`), or install it \
             yourself: npm install --prefix {} gitlab-ci-local@{GCL_VERSION}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            dest.display()
        );
    }
    ensure!(
        gcl_entry(tmp.path()).is_file(),
        "npm installed gitlab-ci-local@{GCL_VERSION} without {}",
        gcl_entry(Path::new("<prefix>")).display()
    );
    let kept = tmp.keep();
    if let Err(e) = std::fs::rename(&kept, &dest) {
        std::fs::remove_dir_all(&kept).ok();
        // Another bench finished the same install first: use it.
        if !gcl_entry(&dest).is_file() {
            return Err(e).with_context(|| format!("renaming into {}", dest.display()));
        }
    }
    eprintln!(
        "runnerlab bench --peer: gitlab-ci-local {GCL_VERSION} installed in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    Ok(dest)
}

/// Build the util image's stand-in into the lab user's store (rebuilt when its inputs change).
async fn ensure_util_image(store: &Podman) -> Result<()> {
    crate::forge::images::build_one(
        &paths::fixtures().join("containerfiles/gitlab-ci-local-util"),
        &[],
        crate::forge::base::LATEST,
        UTIL_IMAGE,
        None,
        std::slice::from_ref(store),
        true,
    )
    .await
}

/// Run `cmd` (a program and its arguments) as the lab user, in `dir`, with its HOME.
fn as_user(user: &LabUser, dir: &Path, cmd: &[&std::ffi::OsStr]) -> tokio::process::Command {
    let mut c = if is_root() {
        let mut c = tokio::process::Command::new("setpriv");
        c.args(user.setpriv_env()).args(cmd);
        c
    } else {
        let mut c = tokio::process::Command::new(cmd[0]);
        c.args(&cmd[1..]);
        c
    };
    c.current_dir(dir).stdin(Stdio::null()).kill_on_drop(true);
    c
}

/// Recursively make `p` the lab user's.
fn chown_tree(user: &LabUser, p: &Path) -> Result<()> {
    if !is_root() {
        return Ok(());
    }
    user.chown(p)?;
    if std::fs::symlink_metadata(p)?.is_dir() {
        for e in std::fs::read_dir(p)? {
            let e = e?;
            if !e.file_type()?.is_symlink() {
                chown_tree(user, &e.path())?;
            }
        }
    }
    Ok(())
}

/// Where the peer runs: a directory under /tmp the lab user owns, holding a copy of the
/// gitlab-ci-local installation (root's cache is not readable by the lab user) and, per run, a
/// fresh copy of the fixture committed to git (gitlab-ci-local reads its git data).
struct PeerWork {
    dir: tempfile::TempDir,
    entry: PathBuf,
}

async fn peer_work(user: &LabUser, install: &Path) -> Result<PeerWork> {
    let dir = tempfile::Builder::new()
        .prefix("runnerlab-peer-")
        .tempdir_in("/tmp")?;
    let gcl = dir.path().join("gitlab-ci-local");
    let st = tokio::process::Command::new("cp")
        .arg("-a")
        .arg(install)
        .arg(&gcl)
        .status()
        .await?;
    ensure!(st.success(), "copying {} failed", install.display());
    chown_tree(user, dir.path())?;
    Ok(PeerWork {
        entry: gcl_entry(&gcl),
        dir,
    })
}

/// A fresh copy of the fixture for run `n`, a git work tree with one commit, the lab user's.
async fn peer_project(work: &PeerWork, user: &LabUser, n: usize) -> Result<PathBuf> {
    let proj = work.dir.path().join(format!("project-{n}"));
    std::fs::create_dir_all(&proj)?;
    let src = paths::fixtures().join("projects").join(FIXTURE);
    for e in std::fs::read_dir(&src)? {
        let e = e?;
        std::fs::copy(e.path(), proj.join(e.file_name()))?;
    }
    chown_tree(user, &proj)?;
    for args in [
        &["git", "init", "-q", "-b", "main", "."][..],
        &["git", "add", "-A"],
        &[
            "git",
            "-c",
            "user.name=runnerlab",
            "-c",
            "user.email=dev@runnerlab.invalid",
            "commit",
            "-qm",
            "peer-bench",
        ],
    ] {
        let a: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
        let out = as_user(user, &proj, &a).output().await?;
        ensure!(
            out.status.success(),
            "{} in {}: {}",
            args.join(" "),
            proj.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(proj)
}

/// gitlab-ci-local's volumes in the store (`gcl-<job>-<id>-build|tmp`).
async fn gcl_volumes(store: &Podman) -> Result<BTreeSet<String>> {
    Ok(store
        .text(["volume", "ls", "--format", "{{.Name}}"])
        .await?
        .lines()
        .filter(|l| l.starts_with("gcl-"))
        .map(str::to_owned)
        .collect())
}

/// Remove what a gitlab-ci-local run left: its volumes not in `before`, and every container that
/// mounts one of them (its job and util containers carry no label, but each mounts its job's
/// volumes). Returns (containers, volumes) removed.
async fn remove_peer_leftovers(
    store: &Podman,
    before: &BTreeSet<String>,
) -> Result<(usize, usize)> {
    let new: Vec<String> = gcl_volumes(store)
        .await?
        .into_iter()
        .filter(|v| !before.contains(v))
        .collect();
    let mut containers = BTreeSet::new();
    for v in &new {
        for id in store
            .text(["ps", "-aq", "--filter", &format!("volume={v}")])
            .await?
            .lines()
            .filter(|l| !l.trim().is_empty())
        {
            containers.insert(id.trim().to_owned());
        }
    }
    if !containers.is_empty() {
        let mut args = vec!["rm".to_owned(), "-f".to_owned()];
        args.extend(containers.iter().cloned());
        store.run(&args).await?;
    }
    if !new.is_empty() {
        let mut args = vec!["volume".to_owned(), "rm".to_owned(), "-f".to_owned()];
        args.extend(new.iter().cloned());
        store.run(&args).await?;
    }
    Ok((containers.len(), new.len()))
}

/// One whole gitlab-ci-local process on the fixture; its wall time. Its output goes to `log`.
async fn peer_once(
    work: &PeerWork,
    user: &LabUser,
    store: &Podman,
    n: usize,
    log: &Path,
    leftovers: &mut (usize, usize),
) -> Result<f64> {
    let proj = peer_project(work, user, n).await?;
    let before = gcl_volumes(store).await?;
    let args: Vec<&std::ffi::OsStr> = [
        std::ffi::OsStr::new("node"),
        work.entry.as_os_str(),
        "--container-executable".as_ref(),
        "podman".as_ref(),
        // The default, spelled out: an image in the store is used as it is, never pulled.
        "--pull-policy".as_ref(),
        "if-not-present".as_ref(),
        "--no-color".as_ref(),
    ]
    .to_vec();
    let t = Instant::now();
    let out = as_user(user, &proj, &args)
        .output()
        .await
        .context("running gitlab-ci-local")?;
    let wall = t.elapsed().as_secs_f64();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    paths::write_atomic(log, text.as_bytes())?;
    let (c, v) = remove_peer_leftovers(store, &before).await?;
    leftovers.0 += c;
    leftovers.1 += v;
    check_peer_output(out.status.success(), &text)
        .with_context(|| format!("gitlab-ci-local run {n}: see {}", log.display()))?;
    Ok(wall)
}

/// A gitlab-ci-local run passed: exit 0, ` PASS  <job>` for the five jobs, `test-a > built by build`.
fn check_peer_output(success: bool, text: &str) -> Result<()> {
    ensure!(success, "gitlab-ci-local failed");
    let passed: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("PASS"))
        .map(str::trim)
        .collect();
    for j in JOBS {
        ensure!(passed.contains(j), "job {j} did not pass");
    }
    ensure!(
        text.lines()
            .any(|l| l.starts_with("test-a") && l.contains(&format!("> {ARTIFACT_LINE}"))),
        "test-a did not print build's artifact ({ARTIFACT_LINE:?})"
    );
    Ok(())
}

/// A runnerlab run passed: five jobs passed and `test-a`'s trace prints the artifact.
fn check_runnerlab(outcome: &run::RunOutcome) -> Result<PathBuf> {
    ensure!(
        outcome.exit == Exit::Passed,
        "the pipeline ended {}",
        outcome.status.as_deref().unwrap_or("without running")
    );
    let dir = outcome
        .dir
        .clone()
        .context("the run wrote no report directory")?;
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("report.json"))?)?;
    let cases = report["cases"].as_array().cloned().unwrap_or_default();
    for j in JOBS {
        ensure!(
            cases
                .iter()
                .any(|c| c["name"] == j && c["status"] == "passed"),
            "job {j} did not pass"
        );
    }
    let trace = std::fs::read_to_string(dir.join("traces/test-a.log"))?;
    ensure!(
        trace.lines().any(|l| l.trim_end() == ARTIFACT_LINE),
        "test-a did not print build's artifact ({ARTIFACT_LINE:?})"
    );
    Ok(dir)
}

fn run_options(out: PathBuf, runner: &GetOptions) -> RunOptions {
    let mut o = RunOptions::new(
        paths::fixtures().join("projects").join(FIXTURE),
        Executor::Docker,
    );
    o.out = Some(out);
    o.runner = runner.clone();
    o.timeout = Duration::from_secs(600);
    o
}

/// Where one warm pipeline's time went (see [`WarmBreakdown`]), seconds.
struct WarmSample {
    wall: f64,
    idle: f64,
    to_running: f64,
    sections: Vec<(String, f64)>,
    unsectioned: f64,
}

fn warm_sample(lab: &Lab, pipeline: u64, wall: f64) -> WarmSample {
    let rec = lab.mock().pipeline(mock_gitlab::PipelineId(pipeline));
    let jobs: Vec<_> = rec.jobs.iter().filter(|j| !j.retried).collect();
    // The runner's busy time: the union of [handed out, finished] of its jobs.
    let mut spans: Vec<(Instant, Instant)> = jobs
        .iter()
        .filter_map(|j| Some((j.dispatched_at?, j.finished_at?)))
        .collect();
    spans.sort();
    let mut busy = 0.0;
    let mut cur: Option<(Instant, Instant)> = None;
    for (a, b) in spans {
        cur = match cur {
            Some((s, e)) if a <= e => Some((s, e.max(b))),
            Some((s, e)) => {
                busy += e.duration_since(s).as_secs_f64();
                Some((a, b))
            }
            None => Some((a, b)),
        };
    }
    if let Some((s, e)) = cur {
        busy += e.duration_since(s).as_secs_f64();
    }
    let mut sections: Vec<(String, f64)> = Vec::new();
    let mut handed_to_end = 0.0;
    let mut to_running = 0.0;
    for j in &jobs {
        if let (Some(d), Some(f)) = (j.dispatched_at, j.finished_at) {
            handed_to_end += f.saturating_duration_since(d).as_secs_f64();
        }
        if let (Some(d), Some(s)) = (j.dispatched_at, j.started_at) {
            to_running += s.saturating_duration_since(d).as_secs_f64();
        }
        for (name, s) in super::section_seconds(&j.trace_text()) {
            // Top-level sections only: the script's own steps nest inside step_script.
            if name.starts_with("section_script_step") {
                continue;
            }
            match sections.iter_mut().find(|(n, _)| *n == name) {
                Some((_, v)) => *v += s,
                None => sections.push((name, s)),
            }
        }
    }
    let sectioned: f64 = sections.iter().map(|(_, s)| s).sum();
    WarmSample {
        wall,
        idle: (wall - busy).max(0.0),
        to_running,
        unsectioned: (handed_to_end - sectioned).max(0.0),
        sections,
    }
}

fn breakdown(samples: &[WarmSample]) -> WarmBreakdown {
    let m = |f: &dyn Fn(&WarmSample) -> f64| median(samples.iter().map(f).collect());
    let mut names: Vec<String> = Vec::new();
    for s in samples {
        for (n, _) in &s.sections {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
    }
    WarmBreakdown {
        wall_s: m(&|s| s.wall),
        runner_idle_s: m(&|s| s.idle),
        dispatch_to_running_s: m(&|s| s.to_running),
        sections_s: names
            .iter()
            .map(|n| {
                (
                    n.clone(),
                    m(&|s| {
                        s.sections
                            .iter()
                            .find(|(k, _)| k == n)
                            .map_or(0.0, |(_, v)| *v)
                    }),
                )
            })
            .collect(),
        unsectioned_s: m(&|s| s.unsectioned),
    }
}

pub async fn run(opts: &PeerOptions) -> Result<(PeerBench, PathBuf)> {
    ensure!(opts.runs > 0, "--jobs (runs per tool) must be at least 1");
    ensure_prerequisites()?;
    let install = ensure_gitlab_ci_local()?;
    let forged = runner::get(&opts.runner).await?;
    let out = paths::run_output_dir(&format!(
        "bench-peer-{}",
        time::OffsetDateTime::now_utc().unix_timestamp()
    ));
    std::fs::create_dir_all(&out)?;
    let user = LabUser::lookup()?;
    let store = Podman::rootless(user.clone());

    eprintln!("runnerlab bench --peer: starting the warm lab (docker mode)");
    let lab = Lab::start_with(LabOptions {
        runner: opts.runner.clone(),
        // As `runnerlab run` starts it.
        check_interval: Some(1),
        ..LabOptions::new(Executor::Docker)
    })
    .await?;
    let lab_start_s = lab.started_in().as_secs_f64();
    let result = async {
        ensure_util_image(&store).await?;
        let work = peer_work(&user, &install).await?;
        let mut runs = Vec::new();
        let mut samples = Vec::new();
        let mut leftovers = (0, 0);
        let mut seq = 0;
        for i in 1..=opts.runs {
            seq += 1;
            eprintln!(
                "runnerlab bench --peer: [{seq}] runnerlab warm run {i}/{}",
                opts.runs
            );
            let log = format!("runnerlab-warm-{i}.log");
            let mut f = std::fs::File::create(out.join(&log))?;
            let o = run::run_on(
                &lab,
                &run_options(out.join(format!("runnerlab-warm-{i}")), &opts.runner),
                &format!("{FIXTURE}-{i}"),
                &mut f,
            )
            .await?;
            f.flush()?;
            check_runnerlab(&o).with_context(|| {
                format!("runnerlab warm run {i}: see {}", out.join(&log).display())
            })?;
            let wall = o.wall.context("no pipeline time")?.as_secs_f64();
            samples.push(warm_sample(&lab, o.pipeline.unwrap_or(0), wall));
            eprintln!("runnerlab bench --peer: [{seq}] runnerlab warm {wall:.2}s");
            runs.push(PeerRun {
                tool: "runnerlab-warm".into(),
                seq,
                wall_s: wall,
                log,
            });

            seq += 1;
            eprintln!(
                "runnerlab bench --peer: [{seq}] gitlab-ci-local run {i}/{}",
                opts.runs
            );
            let log = format!("gitlab-ci-local-{i}.log");
            let wall = peer_once(&work, &user, &store, i, &out.join(&log), &mut leftovers).await?;
            eprintln!("runnerlab bench --peer: [{seq}] gitlab-ci-local {wall:.2}s");
            runs.push(PeerRun {
                tool: "gitlab-ci-local".into(),
                seq,
                wall_s: wall,
                log,
            });
        }
        anyhow::Ok((runs, samples, leftovers, seq))
    }
    .await;
    lab.shutdown().await?;
    let (mut runs, samples, leftovers, mut seq) = result?;

    for i in 1..=opts.cold_runs {
        seq += 1;
        eprintln!(
            "runnerlab bench --peer: [{seq}] runnerlab cold run {i}/{} (lab start included)",
            opts.cold_runs
        );
        let log = format!("runnerlab-cold-{i}.log");
        let mut f = std::fs::File::create(out.join(&log))?;
        let t = Instant::now();
        let o = run::run(
            &run_options(out.join(format!("runnerlab-cold-{i}")), &opts.runner),
            &mut f,
        )
        .await?;
        let wall = t.elapsed().as_secs_f64();
        f.flush()?;
        check_runnerlab(&o)
            .with_context(|| format!("runnerlab cold run {i}: see {}", out.join(&log).display()))?;
        eprintln!("runnerlab bench --peer: [{seq}] runnerlab cold {wall:.2}s");
        runs.push(PeerRun {
            tool: "runnerlab-cold".into(),
            seq,
            wall_s: wall,
            log,
        });
    }

    let of = |tool: &str| -> Vec<f64> {
        runs.iter()
            .filter(|r| r.tool == tool)
            .map(|r| r.wall_s)
            .collect()
    };
    let warm = median(of("runnerlab-warm"));
    let cold = median(of("runnerlab-cold"));
    let peer = median(of("gitlab-ci-local"));
    let report = PeerBench {
        runner: forged.describe(),
        peer: format!("gitlab-ci-local {GCL_VERSION} (node {})", node_version()),
        executor: "docker".into(),
        fixture: FIXTURE.into(),
        runs,
        warm_median_s: warm,
        cold_median_s: cold,
        peer_median_s: peer,
        warm_ratio: warm / peer,
        cold_ratio: cold / peer,
        lab_start_s,
        warm_breakdown: breakdown(&samples),
        peer_leftover_containers: leftovers.0,
        peer_leftover_volumes: leftovers.1,
    };
    paths::write_atomic(
        &out.join("bench-peer.json"),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    Ok((report, out))
}

fn node_version() -> String {
    std::process::Command::new("node")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

impl std::fmt::Display for PeerBench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "runner: {}", self.runner)?;
        writeln!(f, "peer:   {}", self.peer)?;
        writeln!(
            f,
            "fixture {} (5 jobs, 3 stages, one artifact), {} executor; in turns:",
            self.fixture, self.executor
        )?;
        writeln!(f, "{:>3}  {:<16} {:>8}", "#", "tool", "wall")?;
        for r in &self.runs {
            writeln!(f, "{:>3}  {:<16} {:>7.2}s", r.seq, r.tool, r.wall_s)?;
        }
        writeln!(
            f,
            "medians: runnerlab warm {:.2}s, runnerlab cold {:.2}s (lab start {:.1}s), gitlab-ci-local {:.2}s",
            self.warm_median_s, self.cold_median_s, self.lab_start_s, self.peer_median_s
        )?;
        writeln!(
            f,
            "ratio warm/gitlab-ci-local {:.2}x, cold/gitlab-ci-local {:.2}x",
            self.warm_ratio, self.cold_ratio
        )?;
        let b = &self.warm_breakdown;
        let parts: Vec<String> = b
            .sections_s
            .iter()
            .map(|(n, s)| format!("{n} {s:.2}"))
            .collect();
        writeln!(
            f,
            "warm pipeline {:.2}s (medians): runner idle between jobs {:.2}s; over the 5 jobs: \
             hand-out → running {:.2}s, sections {}; outside sections {:.2}s",
            b.wall_s,
            b.runner_idle_s,
            b.dispatch_to_running_s,
            parts.join(", "),
            b.unsectioned_s
        )?;
        writeln!(
            f,
            "gitlab-ci-local left {} containers and {} volumes in the lab user's store (removed)",
            self.peer_leftover_containers, self.peer_leftover_volumes
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_is_the_middle_or_the_mean_of_the_middle_two() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0]), 2.5);
        assert!(median(Vec::new()).is_nan());
    }

    #[test]
    fn a_peer_run_passes_only_with_all_jobs_and_the_artifact() {
        let ok = "test-a > built by build\n PASS  build \n PASS  test-a\n PASS  test-b\n PASS  test-c\n PASS  deploy\n";
        check_peer_output(true, ok).unwrap();
        assert!(check_peer_output(false, ok).is_err());
        assert!(check_peer_output(true, &ok.replace(" PASS  deploy", " FAIL  deploy")).is_err());
        assert!(check_peer_output(true, &ok.replace("built by build", "")).is_err());
    }
}
