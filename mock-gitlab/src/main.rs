//! `mock-gitlab`: serve the mock from the command line.
//!
//! ```text
//! mock-gitlab --bind 127.0.0.1:8080 --external-host 127.0.0.1 \
//!     --project group/hello=fixtures/projects/hello --pipeline group/hello
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use mock_gitlab::{Config, FaultPlan, MockGitlab, RunnerSpec};

#[derive(Parser, Debug)]
#[command(
    name = "mock-gitlab",
    version,
    about = "A GitLab coordinator mock for running the real gitlab-runner against",
    long_about = "Serves the GitLab runner API (/api/v4) and git over smart HTTP for fixture \
                  projects. Prints its URL, the legacy registration token and the glrt token of \
                  one created runner, optionally queues pipelines, and logs job transitions. \
                  Stop with Ctrl-C."
)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080", env = "MOCK_GITLAB_BIND")]
    bind: SocketAddr,

    /// Host name or address the runner uses to reach this server
    /// (e.g. 10.0.2.2 from a rootless container).
    #[arg(long, env = "MOCK_GITLAB_EXTERNAL_HOST")]
    external_host: Option<String>,

    /// Project to serve, as PATH=FIXTURE_DIR (repeatable),
    /// e.g. group/hello=fixtures/projects/hello.
    #[arg(long = "project", value_name = "PATH=DIR")]
    projects: Vec<String>,

    /// Queue a pipeline on `main` for this project (repeatable).
    #[arg(long = "pipeline", value_name = "PATH")]
    pipelines: Vec<String>,

    /// Legacy registration token (random if not given).
    #[arg(long, env = "MOCK_GITLAB_REGISTRATION_TOKEN")]
    registration_token: Option<String>,

    /// Tags of the runner created at start-up (comma separated).
    #[arg(long, default_value = "", value_name = "TAGS")]
    runner_tags: String,

    /// Long-poll hold for job requests, in seconds.
    #[arg(long, default_value_t = 20)]
    long_poll: u64,

    /// X-GitLab-Trace-Update-Interval sent to runners, in seconds.
    #[arg(long, default_value_t = 3)]
    trace_update_interval: u32,

    /// Directory for bare repositories (a fresh temporary one by default).
    #[arg(long)]
    data_dir: Option<PathBuf>,

    /// Fault plan to apply (.json or .toml; see the README's "faults and request log").
    #[arg(long, value_name = "FILE")]
    faults: Option<PathBuf>,

    /// Append one JSON line per request to this file (token values never written).
    #[arg(long, value_name = "FILE")]
    request_log: Option<PathBuf>,

    /// The only directory `POST /api/v4/projects` may import fixtures from (`import_fixture`).
    #[arg(long, value_name = "DIR", env = "MOCK_GITLAB_FIXTURES_ROOT")]
    fixtures_root: Option<PathBuf>,

    /// `PRIVATE-TOKEN` of the REST API (random by default, printed at start).
    #[arg(long, env = "MOCK_GITLAB_ADMIN_TOKEN")]
    admin_token: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "mock_gitlab=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();

    let mut cfg = Config {
        bind: args.bind,
        external_host: args.external_host,
        long_poll: Duration::from_secs(args.long_poll),
        trace_update_interval: args.trace_update_interval,
        ..Config::default()
    };
    if let Some(t) = args.registration_token {
        cfg.registration_token = t;
    }
    if let Some(d) = args.data_dir {
        cfg.data_dir = d;
    }
    if let Some(f) = &args.faults {
        // The error names the file, the line and the fix; no backtrace noise around it.
        cfg.faults = match FaultPlan::from_file(f) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("mock-gitlab: bad --faults: {e}");
                std::process::exit(2);
            }
        };
        println!(
            "faults:             {} from {}",
            cfg.faults.faults.len(),
            f.display()
        );
    }
    cfg.request_log = args.request_log.clone();
    cfg.fixtures_root = args.fixtures_root.clone();
    if let Some(t) = args.admin_token.clone() {
        cfg.admin_token = t;
    }
    let mock = MockGitlab::start(cfg).await?;

    for spec in &args.projects {
        let Some((path, dir)) = spec.split_once('=') else {
            bail!("--project wants PATH=DIR, got {spec:?}");
        };
        let p = mock
            .add_project(path, std::path::Path::new(dir))
            .with_context(|| format!("adding project {path}"))?;
        println!(
            "project:            {} (id {}, sha {})",
            p.path, p.id, p.sha
        );
    }
    let tags: Vec<String> = args
        .runner_tags
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    let runner = mock.create_runner(RunnerSpec {
        description: "mock-gitlab runner".into(),
        run_untagged: tags.is_empty(),
        tags,
    });
    println!("url:                {}", mock.external_url());
    println!("local url:          {}", mock.local_url());
    if let Some(p) = mock.request_log_path() {
        println!("request log:        {}", p.display());
    }
    println!("registration token: {}", mock.registration_token());
    println!("admin token:        {}", mock.admin_token());
    println!(
        "runner token:       {} (runner id {})",
        runner.token, runner.id
    );
    for project in &args.pipelines {
        match mock.create_pipeline(project, "main") {
            Ok(id) => println!("pipeline:           {id} for {project}"),
            Err(e) => bail!("pipeline for {project} failed lint:\n{e}"),
        }
    }
    println!(
        "try: gitlab-runner run-single --url {} --token {} --executor shell --max-builds 1",
        mock.external_url(),
        runner.token
    );

    tokio::signal::ctrl_c().await?;
    for p in mock.jobs() {
        println!(
            "job {} {}: {}{}",
            p.id,
            p.name,
            p.status,
            p.checksum_ok
                .map(|ok| format!(" (checksum ok: {ok})"))
                .unwrap_or_default()
        );
    }
    mock.shutdown().await;
    Ok(())
}
