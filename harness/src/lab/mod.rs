//! The lab: mock-gitlab in-process, the real gitlab-runner in a rootless Podman container, one run id.
//!
//! ```no_run
//! # async fn f() -> anyhow::Result<()> {
//! use runnerlab::{Executor, Lab};
//! let lab = Lab::start(Executor::Shell).await?;
//! let run = lab.pipeline("hello").run().await?;
//! assert_eq!(run.job("hello").status(), "success");
//! # Ok(()) }
//! ```
//!
//! Everything the lab creates carries `runnerlab.run=<run id>` and is removed when the lab is
//! dropped — also while a test panics. A run whose owner died without dropping (SIGKILL) is removed
//! by the reaper the next time any lab starts.

mod core;
pub mod fleet;
pub mod host_identity;
mod instance;
mod pipeline;
pub mod registry;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use mock_gitlab::MockGitlab;

use crate::engine::EngineRef;
use crate::engine::podman::{Podman, Resources};
use crate::forge::images::LabImages;
use crate::forge::runner::{ForgedRunner, GetOptions};

pub use crate::executor::{Executor, RunnerExtras};
pub use core::new_run_id;
pub(crate) use core::{InstanceSpec, RunCore};
pub use instance::RunnerInstance;
pub use pipeline::{JobView, PipelineBuilder, PipelineRun, StartedPipeline, list_projects};

/// How to start a lab.
#[derive(Clone, Debug)]
pub struct LabOptions {
    pub executor: Executor,
    pub runner: GetOptions,
    /// How long the runner may take to register and poll for the first time.
    pub ready_timeout: Duration,
    /// The runner's global `concurrent` (jobs at once); registration writes 1.
    pub concurrent: u32,
    /// What a case adds to the runner beyond its executor mode (image, flags, registration).
    pub extras: RunnerExtras,
    /// The runner's global `check_interval` in seconds; `None` keeps the runner's default (3 s),
    /// which is also the gap between back-to-back jobs.
    pub check_interval: Option<u32>,
    /// A store other than the lab user's own (same user, other `--root`): images are built into it
    /// and everything runs there. See `loopstore`.
    pub store: Option<Podman>,
    /// Docker mode only: the runner runs on the host as the lab user (see `hostrunner`) instead of
    /// in a container with the socket's directory mounted.
    pub runner_on_host: bool,
    /// The Podman installation the lab runs on (the host's own by default).
    pub engine: EngineRef,
}

impl LabOptions {
    pub fn new(executor: Executor) -> LabOptions {
        LabOptions {
            executor,
            runner: GetOptions::default(),
            ready_timeout: Duration::from_secs(90),
            concurrent: 1,
            extras: RunnerExtras::default(),
            check_interval: None,
            store: None,
            runner_on_host: false,
            engine: crate::engine::host(),
        }
    }
}

/// A running lab. Drop it (or call [`Lab::shutdown`]) to remove everything it created.
pub struct Lab {
    started_in: Duration,
    options: LabOptions,
    core: RunCore,
}

impl Lab {
    /// Start a lab with the default runner for `executor`.
    pub async fn start(executor: Executor) -> Result<Lab> {
        Lab::start_with(LabOptions::new(executor)).await
    }

    pub async fn start_with(opts: LabOptions) -> Result<Lab> {
        let t0 = Instant::now();
        let mut core = RunCore::start(&opts.engine, opts.store.as_ref(), &opts.runner).await?;
        core.launch(InstanceSpec {
            name: None,
            executor: opts.executor,
            tags: vec![],
            run_untagged: true,
            concurrent: opts.concurrent,
            limit: 0,
            check_interval: opts.check_interval,
            extras: opts.extras.clone(),
            on_host: opts.runner_on_host,
        })
        .await?
        .wait_polls_beyond(0, opts.ready_timeout)
        .await?;
        Ok(Lab {
            started_in: t0.elapsed(),
            options: opts,
            core,
        })
    }

    /// The lab's runner instance.
    pub fn instance(&self) -> &RunnerInstance {
        &self.core.instances[0]
    }

    /// Whether the runner runs on the host rather than in a container.
    pub fn runner_on_host(&self) -> bool {
        self.instance().on_host()
    }

    /// Wait until the runner is parked in a long-poll on the mock (idle and listening), so that a job
    /// queued now is handed over at once. Returns immediately if it already is.
    pub async fn wait_idle(&self, timeout: Duration) -> Result<()> {
        self.instance().wait_idle(timeout).await
    }

    /// Wait until the runner asks for a job again after `finished` (a job's end on the mock's clock):
    /// with `concurrent = 1` that is the sign that the job's cleanup is over.
    pub async fn wait_asking_since(&self, finished: Instant, timeout: Duration) -> Result<()> {
        self.instance().wait_asking_since(finished, timeout).await
    }

    /// What of `inv` (a listing of this lab's store) belongs to this lab: the run's label, and the
    /// GitLab labels of what the runner creates without ours (docker mode's cache volumes and
    /// build networks).
    pub fn own(&self, inv: &crate::engine::podman::Inventory) -> Resources {
        self.core.own(inv)
    }

    /// Host pid of the runner container's main process (`gitlab-runner run`).
    pub async fn runner_pid(&self) -> Result<u32> {
        self.instance().pid().await
    }

    /// Stop the lab's Podman API service and start a new one on the same socket path, as a host
    /// restarting `podman.service` would. Returns how long the socket was gone.
    pub async fn restart_api(&mut self) -> Result<Duration> {
        self.core.instances[0].restart_api().await
    }

    /// The socket of the lab's Podman API service (docker and custom modes).
    pub fn api_socket(&self) -> Option<&Path> {
        self.instance().api_socket()
    }

    /// Host pid of the lab's Podman API service (docker and custom modes).
    pub fn api_pid(&self) -> Option<u32> {
        self.instance().api_pid()
    }

    pub fn run_id(&self) -> &str {
        &self.core.run_id
    }
    /// The options this lab was started with (a case may start a variant of it).
    pub fn options(&self) -> &LabOptions {
        &self.options
    }

    pub fn executor(&self) -> Executor {
        self.options.executor
    }
    pub fn mock(&self) -> &MockGitlab {
        &self.core.mock
    }
    pub fn podman(&self) -> &Podman {
        &self.core.podman
    }
    pub fn runner(&self) -> &ForgedRunner {
        &self.core.runner
    }
    pub fn images(&self) -> &LabImages {
        &self.core.images
    }
    pub fn runner_container(&self) -> &str {
        self.instance().container()
    }
    pub fn config_volume(&self) -> &str {
        self.instance().config_volume()
    }
    /// The mock's id of the registered runner.
    pub fn runner_id(&self) -> u64 {
        self.instance().id()
    }
    /// What `gitlab-runner register` printed (secrets removed).
    pub fn register_output(&self) -> &str {
        self.instance().register_output()
    }
    /// Wall time of [`Lab::start`].
    pub fn started_in(&self) -> Duration {
        self.started_in
    }
    /// `target/runnerlab/<run id>/`.
    pub fn out_dir(&self) -> &Path {
        &self.core.out_dir
    }

    /// Run `gitlab-runner ARGS…` inside the running runner container (like `podman exec`).
    pub async fn exec_runner(&self, args: &[&str]) -> Result<String> {
        self.instance().exec(args).await
    }

    /// Restart the runner container and wait until it polls again (config must come from the volume).
    pub async fn restart_runner(&self) -> Result<()> {
        self.instance().restart().await
    }

    /// A pipeline of fixture project `fixtures/projects/<project>`.
    pub fn pipeline(&self, project: &str) -> PipelineBuilder<'_> {
        self.core.pipeline(project, self.options.executor)
    }

    /// Register a directory (not a fixture) as project `runnerlab/<name>` on the mock, as it is
    /// now; [`Lab::pipeline`]`(name)` runs it, or the mock's own calls with the returned path.
    pub fn add_project(&self, name: &str, dir: &Path) -> Result<String> {
        self.core.add_project_dir(name, dir)
    }

    /// Remove everything this lab created and return what was removed. Dropping does the same.
    pub async fn shutdown(self) -> Result<Resources> {
        self.core.shutdown().await
    }
}
