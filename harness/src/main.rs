//! The `runnerlab` command line. `cargo lab …` is an alias for it (see .cargo/config.toml).

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use runnerlab::executor::Executor;
use runnerlab::forge::runner::{GetOptions, HelperSource, Source};
use runnerlab::{bench, compare, conformance, forge, host, podman, reaper, redact, soak};

#[derive(Parser)]
#[command(
    name = "runnerlab",
    version,
    about = "Conformance suite and test harness for GitLab Runner on rootless Podman",
    long_about = "Runs the real gitlab-runner in rootless Podman against a mock GitLab coordinator, \
                  in shell, docker and custom executor modes, and reports what works.\n\n\
                  First time on a machine: `runnerlab setup` (as root), then `runnerlab conformance`."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Provision this host (packages, Podman config, rootless user, runner and images; the test
    /// runner with --nextest). Idempotent; prints a timeline of its phases.
    Setup {
        /// Skip the runner forge and images (host only).
        #[arg(long)]
        host_only: bool,
        /// Also install cargo-nextest (the test command's runner; built from source, minutes when
        /// cold). The conformance run does not need it.
        #[arg(long, conflicts_with = "no_nextest")]
        nextest: bool,
        /// Kept for old scripts: nextest is only installed with --nextest.
        #[arg(long, hide = true)]
        no_nextest: bool,
        /// Also install this engine (`trixie`: Podman 5.4 from Debian 13 in a root filesystem of
        /// its own, next to the host's Podman).
        #[arg(long)]
        engine: Option<String>,
        #[command(flatten)]
        runner: RunnerArgs,
    },
    /// Check the host and say what is wrong and how to fix it.
    Doctor,
    /// Get, build or verify the real gitlab-runner.
    #[command(subcommand)]
    Runner(RunnerCmd),
    /// Run the conformance cases and write target/runnerlab/<run>/report.{json,md,html} and junit.xml.
    Conformance {
        /// Executor modes: shell, docker, custom or all (repeatable).
        #[arg(long = "executor", short = 'e', default_value = "all")]
        executors: Vec<String>,
        /// Only these cases (repeatable); see `runnerlab cases`.
        #[arg(long = "case")]
        cases: Vec<String>,
        /// How many executor modes run at the same time, each on its own lab (1: one after another).
        /// All three by default: a case mostly waits for the runner and for containers, so three labs
        /// share two cores well.
        #[arg(long, default_value_t = 3)]
        parallel: usize,
        /// Run the runner on the host (as the lab user) instead of in a container; docker mode
        /// only. The report's environment says which.
        #[arg(long)]
        runner_on_host: bool,
        /// The Podman the labs run on: `host` (this machine's), or `trixie` (Podman 5.4 from
        /// Debian 13, installed by `cargo lab setup --engine trixie`).
        #[arg(long, default_value = "host")]
        engine: String,
        /// Also keep a copy of the run's report directory as baseline NAME (in
        /// <cache>/baselines/NAME/, replacing an older one), for `runnerlab compare --baseline NAME`.
        #[arg(long, value_name = "NAME")]
        save_baseline: Option<String>,
        /// Run only part k of N of the (case, mode) pairs (1-based, round robin in canonical order);
        /// join the parts' directories with `runnerlab merge`.
        #[arg(long, value_name = "k/N")]
        partition: Option<String>,
        #[command(flatten)]
        runner: RunnerArgs,
    },
    /// Compare two stacks (Podman engine, runner build, runner configuration), or a saved baseline
    /// with a new run, case by case; writes compare.{json,md,html} and exits 1 on a regression.
    #[command(after_help = COMPARE_HELP)]
    Compare {
        /// Stack A: comma-separated podman=<engine>, runner=<source>, config=<default|K=V;K=V>
        /// (missing keys: podman=host, the default runner, config=default).
        #[arg(long = "a", value_name = "STACK", conflicts_with = "baseline")]
        a: Option<String>,
        /// Stack B, as --a.
        #[arg(long = "b", value_name = "STACK")]
        b: Option<String>,
        /// Use baseline NAME (saved with `conformance --save-baseline NAME`) as A.
        #[arg(long, value_name = "NAME")]
        baseline: Option<String>,
        /// Regressions to accept: one `<case> <mode> <reason>` a line, `#` comments. Accepted
        /// regressions are reported but do not fail the gate.
        #[arg(long, value_name = "FILE")]
        accept: Option<std::path::PathBuf>,
        /// Executor modes: shell, docker, custom or all (repeatable).
        #[arg(long = "executor", short = 'e', default_value = "all")]
        executors: Vec<String>,
        /// Only these cases (repeatable); see `runnerlab cases`.
        #[arg(long = "case")]
        cases: Vec<String>,
        /// How many executor modes run at the same time, each on its own lab.
        #[arg(long, default_value_t = 3)]
        parallel: usize,
        /// Run only part k of N of the (case, mode) pairs on both sides; join the parts'
        /// --out directories with `runnerlab merge`.
        #[arg(long, value_name = "k/N")]
        partition: Option<String>,
        /// After the cases, soak each stack N builds per mode (in turns) and put the leak verdicts
        /// side by side; a verdict that holds on A and fails on B is a regression of the gate
        /// (accept it as `soak:<metric> <mode> <reason>`).
        #[arg(long, value_name = "N")]
        soak: Option<usize>,
        /// The compare directory (default target/runnerlab/compare-<time>/); must not hold a/ or b/.
        #[arg(long, value_name = "DIR")]
        out: Option<std::path::PathBuf>,
        #[command(flatten)]
        runner: RunnerArgs,
    },
    /// Join the --out directories of a partitioned `conformance` or `compare` run into one
    /// (a compare: exits 1 on a regression, like the compare itself).
    #[command(after_help = MERGE_HELP)]
    Merge {
        /// The parts' directories (each a report directory, or each a compare directory).
        #[arg(required = true, value_name = "PART_DIR")]
        parts: Vec<std::path::PathBuf>,
        /// Where the merged report or comparison goes.
        #[arg(long, value_name = "DIR")]
        out: std::path::PathBuf,
    },
    /// List the conformance cases.
    Cases,
    /// Measure end-to-end overhead, dispatch latency and set-up times.
    Bench {
        /// Number of trivial jobs to time per mode (docker mode: per variant). Not with --fleet,
        /// whose burst is the fixture's 20 jobs, nor --peer (3 runs per tool).
        #[arg(long, default_value_t = 10, conflicts_with_all = ["fleet", "peer"])]
        jobs: usize,
        /// Executor modes: shell, docker, custom or all (repeatable).
        #[arg(long = "executor", short = 'e', default_value = "all")]
        executors: Vec<String>,
        /// Instead: `podman build` of the go-multistage fixture inside a job (per mode) against the
        /// same build on the host, side by side, `--jobs` times.
        #[arg(long)]
        pinp: bool,
        /// Instead: fleet throughput, 20 trivial jobs over one runner and over two (per mode;
        /// `-e shell` for one), writes bench-fleet.json.
        #[arg(long)]
        fleet: bool,
        /// Instead: side by side with gitlab-ci-local 4.65.0 (npm-installed into the cache on
        /// first use): the `peer-bench` fixture (5 jobs, 3 stages, an artifact) through `runnerlab
        /// run` in docker mode on a warm lab and through gitlab-ci-local on rootless Podman as the
        /// lab user, 3 runs each in turns, then 2 whole `runnerlab run`s (lab start included);
        /// prints each run and the wall-time ratios, writes bench-peer.json. Not asserted.
        #[arg(long, conflicts_with_all = ["pinp", "fleet", "executors", "engine"])]
        peer: bool,
        /// The Podman the labs run on (`host`, `trixie`); the trivial-job bench only.
        #[arg(long, default_value = "host")]
        engine: String,
        #[command(flatten)]
        runner: RunnerArgs,
    },
    /// Build the soak pipeline again and again per mode, sample resources, and judge whether anything
    /// accumulates; writes target/runnerlab/soak-<run>/{soak.json,report.html,report.md,plots/}.
    /// Exits 1 when a verdict fails.
    Soak {
        /// Executor modes: shell, docker, custom or all (repeatable).
        #[arg(long = "executor", short = 'e', default_value = "all")]
        executors: Vec<String>,
        /// Builds per mode.
        #[arg(long, default_value_t = 100)]
        builds: usize,
        /// Sampling interval of the process curves, in milliseconds.
        #[arg(long, default_value_t = 1000, value_name = "MS")]
        interval_ms: u64,
        /// Count the store's objects and disk use every N builds.
        #[arg(long, default_value_t = 10, value_name = "N")]
        store_every: usize,
        /// Runner check_interval in seconds (also the gap between builds; the runner's default is 3).
        #[arg(long, default_value_t = 1, value_name = "S")]
        check_interval: u32,
        /// Switch on the custom driver's leak (a container left behind per build): the verdicts must
        /// catch it. Custom mode only.
        #[arg(long)]
        leak: bool,
        /// Other work uses the rootless store meanwhile: judge only the lab's own processes and
        /// objects; whole-user and whole-store curves are reported, not binding.
        #[arg(long)]
        shared_host: bool,
        /// Restart the Podman API service after build N (docker and custom modes) and count the
        /// builds lost until the runner builds again.
        #[arg(long, value_name = "N")]
        restart_api_after: Option<usize>,
        /// Also run the disk-full scenario: the docker executor on a loop-mounted store of this many
        /// MiB, builds that cache 40 MiB each until the disk is full, then `podman system prune`
        /// and one more build (root only; `--builds 0` for the scenario alone).
        #[arg(long, value_name = "MIB", num_args = 0..=1, default_missing_value = "1024")]
        disk_full: Option<u64>,
        /// Output directory (default target/runnerlab/soak-<run>/).
        #[arg(long, value_name = "DIR")]
        out: Option<std::path::PathBuf>,
        /// The Podman engine to soak on: host, or trixie (installed by `setup --engine trixie`).
        #[arg(long, default_value = "host")]
        engine: String,
        #[command(flatten)]
        runner: RunnerArgs,
    },
    /// Run a project's own .gitlab-ci.yml through the real runner on a lab (its working tree,
    /// committed on a branch of mock-gitlab); traces live, artifacts and report kept.
    #[command(after_help = RUN_EXAMPLES)]
    Run(RunArgs),
    /// Remove containers, volumes and networks left by killed runs.
    Reap {
        /// Remove every runnerlab resource, even of runs that look alive.
        #[arg(long)]
        all: bool,
    },
    /// Check that nothing of runnerlab is left on any engine (CI's last step): exits 1 listing
    /// what is there. Every engine's stores: what carries `runnerlab.run`, and in a second
    /// engine's own stores any container at all; engine namespaces still running.
    Leftovers,
}

const RUN_EXAMPLES: &str = "\
Examples:
  cargo lab run ~/src/my-project                     all jobs, docker executor
  cargo lab run . -e shell                           the shell executor (fastest)
  cargo lab run . --job test --var DEPLOY=yes --ref feature/x
                                                     job `test` and what it needs, a pipeline
                                                     variable, on branch feature/x
  cargo lab run . --tag v1.0                         a tag pipeline
  cargo lab run . --keep                             leave the lab up: REST API, admin token and
                                                     runner logs are printed; Ctrl-C removes it

Files: in a git work tree, `git ls-files -co --exclude-standard` (tracked and untracked, not
ignored); otherwise every file. Output: target/runnerlab/run-<id>/{report.json, traces/<job>.log,
artifacts/<job>/}.
Exit status: 0 pipeline passed, 1 pipeline failed, 2 usage or CI configuration error (lint errors
as FILE:LINE:COLUMN: message), 130 interrupted.";

#[derive(clap::Args)]
struct RunArgs {
    /// The project directory (with .gitlab-ci.yml at its top).
    #[arg(default_value = ".")]
    dir: std::path::PathBuf,
    /// Executor mode: shell, docker or custom.
    #[arg(long = "executor", short = 'e', default_value = "docker")]
    executor: Executor,
    /// Only this job and what it `needs:` (repeatable); a parallel job's YAML name selects all
    /// its instances.
    #[arg(long = "job", value_name = "NAME")]
    jobs: Vec<String>,
    /// A pipeline variable KEY=VALUE (repeatable); it wins over project and YAML variables.
    #[arg(long = "var", value_name = "KEY=VALUE", value_parser = parse_var)]
    vars: Vec<(String, String)>,
    /// The branch the working tree is committed on.
    #[arg(long = "ref", value_name = "BRANCH", default_value = "main")]
    branch: String,
    /// Run a tag pipeline: the tag is made on the working tree's commit.
    #[arg(long, value_name = "TAG", conflicts_with = "branch")]
    tag: Option<String>,
    /// Leave the lab running after the pipeline (REST API, admin token and runner logs are
    /// printed) until Ctrl-C.
    #[arg(long)]
    keep: bool,
    /// Colours in the output: auto (when stdout is a terminal), always, never.
    #[arg(long, value_name = "WHEN", default_value = "auto")]
    color: ColorWhen,
    /// How long the pipeline may take, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 3600)]
    timeout: u64,
    #[command(flatten)]
    runner: RunnerArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ColorWhen {
    Auto,
    Always,
    Never,
}

fn parse_var(s: &str) -> Result<(String, String)> {
    runnerlab::run::parse_var(s)
}

async fn run_cmd(args: RunArgs) -> Result<u8> {
    use std::io::IsTerminal;
    let mut opts = runnerlab::run::RunOptions::new(args.dir, args.executor);
    opts.jobs = args.jobs;
    opts.variables = args.vars;
    opts.branch = args.branch;
    opts.tag = args.tag;
    opts.keep = args.keep;
    opts.color = match args.color {
        ColorWhen::Always => true,
        ColorWhen::Never => false,
        ColorWhen::Auto => std::io::stdout().is_terminal(),
    };
    opts.timeout = std::time::Duration::from_secs(args.timeout);
    opts.runner = args.runner.options()?;
    let outcome = runnerlab::run::run(&opts, &mut std::io::stdout()).await?;
    Ok(outcome.exit.code())
}

const COMPARE_HELP: &str = "\
Examples:
  cargo lab compare --a podman=host --b podman=trixie
  cargo lab compare --a runner=module:<v> --b runner=path:/opt/gitlab-runner-19.5/gitlab-runner
  cargo lab compare --a config=default --b 'config=FF_NETWORK_PER_BUILD=false'
  cargo lab conformance --save-baseline before-upgrade
  cargo lab compare --baseline before-upgrade --accept upgrade-accept.txt

Each case x mode is classified: regression (passed or known finding -> failed), fix (failed ->
passed), finding appeared / finding gone, not applicable changed (skipped on one side), unchanged,
missing in A/B. Job outputs that differ are diffed even when both passed.

Exit status: 0 no unaccepted regression, 1 a regression, 2 the comparison failed.";

const MERGE_HELP: &str = "\
Examples:
  runnerlab conformance --partition 1/3 ...   (and 2/3, 3/3, e.g. on three CI nodes)
  runnerlab merge part1/ part2/ part3/ --out merged/
  runnerlab merge compare-1/ compare-2/ --out compare/   (parts of `compare --partition k/2`)

Parts must come from one run (same stack, same schema); a case x mode in two parts is refused.";

#[derive(Subcommand)]
enum RunnerCmd {
    /// Return a verified runner (build or extract it if the cache has none) and its images.
    Get {
        #[command(flatten)]
        runner: RunnerArgs,
        /// Only the binaries, no images.
        #[arg(long)]
        no_images: bool,
        /// Print the provenance record as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the versions in fixtures/runner-versions.toml.
    Versions,
}

#[derive(clap::Args, Clone, Default)]
struct RunnerArgs {
    /// Runner version (a row of fixtures/runner-versions.toml); default: the row marked default.
    #[arg(long = "runner-version", alias = "version", value_name = "V")]
    version: Option<String>,
    /// Where to get it: path:/abs/gitlab-runner, image:<ref> or module:<pseudo-version>.
    #[arg(long = "from", value_name = "SOURCE")]
    from: Option<String>,
    /// Helper for a path: or image: source: path:/abs/gitlab-runner-helper or image:<ref>
    /// (default: gitlab-runner-helper next to the runner, or the version's helper image).
    #[arg(long, value_name = "SOURCE")]
    helper: Option<String>,
}

impl RunnerArgs {
    fn options(&self) -> Result<GetOptions> {
        Ok(GetOptions {
            version: self.version.clone(),
            from: self.from.as_deref().map(str::parse::<Source>).transpose()?,
            helper: self
                .helper
                .as_deref()
                .map(str::parse::<HelperSource>)
                .transpose()?,
        })
    }
}

fn check_cases(cases: &[String]) -> Result<()> {
    let known: Vec<&str> = conformance::cases().iter().map(|c| c.name).collect();
    for c in cases {
        if !known.contains(&c.as_str()) {
            bail!("unknown case {c:?}; known cases: {}", known.join(", "));
        }
    }
    Ok(())
}

fn parse_executors(v: &[String]) -> Result<Vec<Executor>> {
    let mut out = Vec::new();
    for s in v {
        for part in s.split(',') {
            if part == "all" {
                out.extend(Executor::ALL);
            } else {
                out.push(part.parse()?);
            }
        }
    }
    out.dedup();
    Ok(out)
}

fn secs(t: std::time::Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

async fn ensure_nextest() -> Result<()> {
    let have = std::process::Command::new("cargo")
        .args(["nextest", "--version"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if have {
        println!("  ✓ cargo-nextest installed");
        return Ok(());
    }
    println!("  → cargo install cargo-nextest --locked (a few minutes, once)");
    let st = tokio::process::Command::new("cargo")
        .args(["install", "cargo-nextest", "--locked"])
        .status()
        .await
        .context("running cargo install")?;
    if !st.success() {
        bail!("cargo install cargo-nextest failed ({st})");
    }
    Ok(())
}

async fn get_runner(args: &RunnerArgs, images: bool) -> Result<forge::runner::ForgedRunner> {
    let r = forge::runner::get(&args.options()?).await?;
    if images {
        let imgs = forge::images::ensure(&r, &forge::base::stores()?).await?;
        println!(
            "images: {} {} (base {})",
            imgs.runner, imgs.helper, imgs.base
        );
    }
    Ok(r)
}

async fn real_main(cli: Cli) -> Result<bool> {
    match cli.cmd {
        Cmd::Setup {
            host_only,
            nextest,
            no_nextest: _,
            engine,
            runner,
        } => {
            let total = std::time::Instant::now();
            let mut timeline: Vec<(&str, f64)> = Vec::new();
            let t = std::time::Instant::now();
            println!("host:");
            host::setup()?;
            timeline.push(("host (packages, Podman config, lab user)", secs(t)));
            if nextest {
                let t = std::time::Instant::now();
                ensure_nextest().await?;
                timeline.push(("cargo-nextest", secs(t)));
            }
            match engine.as_deref() {
                None | Some("host") => {}
                Some(runnerlab::engine::trixie::NAME) => {
                    let t = std::time::Instant::now();
                    println!("engine {}:", runnerlab::engine::trixie::NAME);
                    let i = tokio::task::spawn_blocking(|| {
                        runnerlab::engine::trixie::install(|m| println!("  → {m}"))
                    })
                    .await??;
                    println!("  ✓ {} in {}", i.facts().describe(), i.dir.display());
                    timeline.push(("engine trixie", secs(t)));
                }
                Some(other) => bail!(
                    "unknown engine {other:?}: expected one of {}\n  fix: `--engine trixie` (host is always there)",
                    runnerlab::engine::NAMES.join(", ")
                ),
            }
            if !host_only {
                // The base image (debootstrap: mostly the network) is built while the runner
                // compiles (the CPU): they do not depend on each other.
                let t = std::time::Instant::now();
                let base = tokio::spawn(async {
                    let t = std::time::Instant::now();
                    let stores = forge::base::stores()?;
                    forge::base::ensure(&forge::base::BaseRecipe::default(), &stores).await?;
                    anyhow::Ok(secs(t))
                });
                let r = forge::runner::get(&runner.options()?).await?;
                timeline.push(("runner (get or build)", secs(t)));
                let base_s = base.await.context("the base image task")??;
                timeline.push(("base image (alongside the runner)", base_s));
                let t = std::time::Instant::now();
                let imgs = forge::images::ensure(&r, &forge::base::stores()?).await?;
                timeline.push(("runner and helper images", secs(t)));
                println!(
                    "images: {} {} (base {})",
                    imgs.runner, imgs.helper, imgs.base
                );
                println!("runner: {}", r.describe());
            }
            println!("setup timeline:");
            for (phase, s) in &timeline {
                println!("  {phase:<40} {s:>7.1} s");
            }
            println!("  {:<40} {:>7.1} s", "total", secs(total));
            Ok(true)
        }
        Cmd::Doctor => Ok(host::print_checks(&host::doctor())),
        Cmd::Runner(RunnerCmd::Get {
            runner,
            no_images,
            json,
        }) => {
            let r = get_runner(&runner, !no_images).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r.provenance)?);
            } else {
                println!("{}", r.describe());
                println!(
                    "  runner  {} (sha256 {})",
                    r.runner_bin().display(),
                    r.provenance.runner_sha256
                );
                println!(
                    "  helper  {} (sha256 {})",
                    r.helper_bin().display(),
                    r.provenance.helper_sha256
                );
            }
            Ok(true)
        }
        Cmd::Runner(RunnerCmd::Versions) => {
            for v in forge::runner::versions()? {
                println!(
                    "{:<10} {}{}  module:{}  image:{}",
                    v.name,
                    v.revision,
                    if v.default { " (default)" } else { "" },
                    v.pseudo_version.as_deref().unwrap_or("-"),
                    v.image.as_deref().unwrap_or("-")
                );
            }
            Ok(true)
        }
        Cmd::Cases => {
            for c in runnerlab::cases::cases() {
                let modes: Vec<&str> = c.modes.iter().map(|m| m.name()).collect();
                println!("{:<28} [{}] {}", c.name, modes.join(","), c.about);
            }
            Ok(true)
        }
        Cmd::Conformance {
            executors,
            cases,
            parallel,
            runner_on_host,
            engine,
            save_baseline,
            partition,
            runner,
        } => {
            check_cases(&cases)?;
            if let Some(name) = &save_baseline {
                compare::baseline::validate_name(name)?;
            }
            let opts = conformance::SuiteOptions {
                modes: parse_executors(&executors)?,
                runner: runner.options()?,
                only: cases,
                parallel,
                runner_on_host,
                engine: runnerlab::engine::open(&engine)?,
                config_env: Vec::new(),
                partition: partition
                    .as_deref()
                    .map(str::parse::<compare::Partition>)
                    .transpose()?,
            };
            if runner_on_host && opts.modes.iter().any(|m| !m.mode().runs_on_host()) {
                bail!(
                    "--runner-on-host is a docker-executor deployment: add `-e docker`\n  \
                     (shell and custom modes always run the runner in a container)"
                );
            }
            let (report, dir) = conformance::run_suite(&opts).await?;
            let counts = report.counts();
            println!("runner: {}", report.environment.runner.describe);
            println!(
                "{} passed, {} failed, {} known findings, {} skipped",
                counts.get("passed").unwrap_or(&0),
                counts.get("failed").unwrap_or(&0),
                counts.get("known-finding").unwrap_or(&0),
                counts.get("skipped").unwrap_or(&0)
            );
            println!("report: {}", dir.join("report.md").display());
            println!("html: {}", dir.join("report.html").display());
            if let Some(name) = &save_baseline {
                let b = compare::baseline::save(name, &dir)?;
                println!("baseline {name}: {}", b.display());
            }
            Ok(counts.get("failed").copied().unwrap_or(0) == 0)
        }
        Cmd::Compare {
            a,
            b,
            baseline,
            accept,
            executors,
            cases,
            parallel,
            partition,
            soak,
            out,
            runner,
        } => {
            check_cases(&cases)?;
            let a = compare::Stack::parse("--a", a.as_deref().unwrap_or(""))?;
            let b = compare::Stack::parse("--b", b.as_deref().unwrap_or(""))?;
            if let Some(name) = &baseline {
                compare::baseline::validate_name(name)?;
            }
            let accept = match &accept {
                Some(f) => compare::diff::load_accept(f)?,
                None => Vec::new(),
            };
            let opts = compare::CompareOptions {
                a,
                b,
                baseline,
                accept,
                suite: conformance::SuiteOptions {
                    modes: parse_executors(&executors)?,
                    runner: runner.options()?,
                    only: cases,
                    parallel,
                    runner_on_host: false,
                    engine: runnerlab::engine::host(),
                    config_env: Vec::new(),
                    partition: partition
                        .as_deref()
                        .map(str::parse::<compare::Partition>)
                        .transpose()?,
                },
                soak,
                out: out.unwrap_or_else(compare::default_out_dir),
            };
            let c = compare::run(&opts).await?;
            print_comparison(&c, &opts.out);
            Ok(c.diff.gate.passed)
        }
        Cmd::Merge { parts, out } => match compare::merge_dirs(&parts, &out)? {
            compare::Merged::Report(r) => {
                let counts = r.counts();
                println!(
                    "merged {} parts: {} passed, {} failed, {} known findings, {} skipped",
                    parts.len(),
                    counts.get("passed").unwrap_or(&0),
                    counts.get("failed").unwrap_or(&0),
                    counts.get("known-finding").unwrap_or(&0),
                    counts.get("skipped").unwrap_or(&0)
                );
                println!("report: {}", out.join("report.md").display());
                Ok(counts.get("failed").copied().unwrap_or(0) == 0)
            }
            compare::Merged::Compare(c) => {
                print_comparison(&c, &out);
                Ok(c.diff.gate.passed)
            }
        },
        Cmd::Bench {
            jobs,
            executors,
            pinp,
            fleet,
            peer,
            engine,
            runner,
        } => {
            if peer {
                let opts = bench::peer::PeerOptions {
                    runner: runner.options()?,
                    ..Default::default()
                };
                let (report, dir) = bench::peer::run(&opts).await?;
                print!("{report}");
                println!("bench-peer.json: {}", dir.join("bench-peer.json").display());
                return Ok(true);
            }
            let modes = parse_executors(&executors)?;
            if fleet {
                for mode in modes {
                    let (report, dir) = bench::run_fleet(mode, &runner.options()?).await?;
                    print!("{report}");
                    println!(
                        "bench-fleet.json: {}",
                        dir.join("bench-fleet.json").display()
                    );
                }
                return Ok(true);
            }
            if pinp {
                let report = runnerlab::bench::pinp::run(&modes, jobs, &runner.options()?).await?;
                print!("{report}");
                let out = runnerlab::paths::run_output_dir(&format!(
                    "bench-pinp-{}",
                    time::OffsetDateTime::now_utc().unix_timestamp()
                ));
                runnerlab::paths::write_atomic(
                    &out.join("bench-pinp.json"),
                    serde_json::to_string_pretty(&report)?.as_bytes(),
                )?;
                println!("bench-pinp.json: {}", out.join("bench-pinp.json").display());
                return Ok(true);
            }
            let engine = runnerlab::engine::open(&engine)?;
            let (report, dir) = bench::run(jobs, &modes, &runner.options()?, &engine).await?;
            print!("{report}");
            println!("bench.json: {}", dir.join("bench.json").display());
            Ok(true)
        }
        Cmd::Soak {
            executors,
            builds,
            interval_ms,
            store_every,
            check_interval,
            leak,
            shared_host,
            restart_api_after,
            disk_full,
            out,
            engine,
            runner,
        } => {
            let mut opts = soak::SoakOptions::new(parse_executors(&executors)?, builds);
            opts.engine = runnerlab::engine::open(&engine)?;
            opts.interval = std::time::Duration::from_millis(interval_ms.max(50));
            opts.store_every = store_every.max(1);
            opts.check_interval = check_interval;
            opts.leak = leak;
            opts.shared_host = shared_host;
            opts.restart_api_after = restart_api_after;
            opts.disk_full_mib = disk_full;
            opts.out_dir = out;
            opts.runner = runner.options()?;
            let (report, dir) = soak::run(&opts).await?;
            for v in report.failed_verdicts() {
                let what = match (&v.known, v.binding) {
                    (Some(_), _) => "known finding",
                    (None, true) => "FAIL",
                    (None, false) => "high (host shared, not binding)",
                };
                println!("{what} {} {}: {}", v.mode, v.metric, v.note);
            }
            if report.interrupted {
                println!("soak interrupted: the report covers the builds that ran");
            }
            println!(
                "soak {}: {} ({} builds, {:.0} s, sampler {:.2} % of a core)",
                report.id,
                if report.passed { "pass" } else { "FAIL" },
                report.builds.len(),
                report.wall_s,
                report.series.overhead_pct_of_core
            );
            println!("report: {}", dir.join("report.html").display());
            Ok(report.passed)
        }
        // Dispatched by main (its own exit statuses).
        Cmd::Run(_) => unreachable!("runnerlab run is dispatched before real_main"),
        Cmd::Leftovers => {
            let mut found = Vec::new();
            for s in runnerlab::engine::stores(&runnerlab::engine::host())? {
                let r = s.labelled(None)?;
                if !r.is_empty() {
                    found.push(format!("host engine, {} store: {r}", s.store().name()));
                }
            }
            if let Some(install) = runnerlab::engine::trixie::EngineInstall::find()? {
                let pids = runnerlab::engine::trixie::engine_pids(&install);
                if !pids.is_empty() {
                    found.push(format!(
                        "engine {}: processes still running: {pids:?}",
                        install.dir.display()
                    ));
                }
                // Opening it starts its namespace for the look, and stops it again on drop.
                let e = runnerlab::engine::open(runnerlab::engine::trixie::NAME)?;
                for s in runnerlab::engine::stores(&e)? {
                    // The engine's stores are runnerlab's alone: any container is left over.
                    let ctrs = s.text(["ps", "-a", "--format", "{{.Names}}"]).await?;
                    let r = s.labelled(None)?;
                    if !ctrs.is_empty() || !r.is_empty() {
                        found.push(format!(
                            "engine trixie, {} store: containers [{}]; labelled: {r}",
                            s.store().name(),
                            ctrs.replace('\n', " ")
                        ));
                    }
                }
            }
            if found.is_empty() {
                println!("no leftovers on any engine");
                Ok(true)
            } else {
                for f in &found {
                    println!("leftover: {f}");
                }
                Ok(false)
            }
        }
        Cmd::Reap { all } => {
            let mut stores = runnerlab::engine::stores(&runnerlab::engine::host())?;
            // An installed second engine's stores too: opened for the reaping (its namespace is
            // started if nothing runs it, and stopped again when the handle drops).
            let other = if podman::is_root()
                && runnerlab::engine::trixie::EngineInstall::find()?.is_some()
            {
                let e = runnerlab::engine::open(runnerlab::engine::trixie::NAME)?;
                stores.extend(runnerlab::engine::stores(&e)?);
                Some(e)
            } else {
                None
            };
            let removed = reaper::reap(&stores, all);
            drop(stores);
            drop(other);
            for r in runnerlab::engine::trixie::reap(all) {
                if let Some(st) = r
                    .stopped
                    .filter(|s| s.holder_stopped || !s.killed.is_empty())
                {
                    println!("reaped engine {}: {st:?}", r.dir.display());
                }
            }
            if removed.is_empty() {
                println!("nothing to reap");
            }
            for (run, r) in removed {
                println!("reaped {run}: {r}");
            }
            Ok(true)
        }
    }
}

fn print_comparison(c: &compare::Comparison, out: &std::path::Path) {
    println!("A: {} ({}, podman {})", c.a.label, c.a.runner, c.a.podman);
    println!("B: {} ({}, podman {})", c.b.label, c.b.runner, c.b.podman);
    for r in &c.diff.rows {
        if !matches!(r.class, compare::Class::Unchanged) {
            println!("  {:<24} {:<28} {}", r.class.name(), r.case, r.mode);
        }
    }
    for a in &c.diff.unused_accepts {
        println!("  accept line matched no regression: {} {}", a.case, a.mode);
    }
    println!("{}", compare::render::summary_line(c));
    println!("compare: {}", out.join("compare.html").display());
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RUNNERLAB_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runnerlab: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let done = rt.block_on(async move {
        match cli.cmd {
            // `run` has its own exit statuses (2: usage or lint error, 130: interrupted).
            Cmd::Run(args) => run_cmd(args).await,
            cmd => real_main(Cli { cmd }).await.map(|ok| u8::from(!ok)),
        }
    });
    match done {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("runnerlab: error: {}", redact::scrub(&format!("{e:#}")));
            ExitCode::from(2)
        }
    }
}
