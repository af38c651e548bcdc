//! Executor modes: what each way of running jobs *is*, one file per mode.
//!
//! [`Executor`] names a mode (it is what users type, what reports carry and what cases list);
//! [`Executor::mode`] is the one place that maps a name to its [`ExecutorMode`]. Everything
//! mode-specific — the runner container and registration it needs, its API service, what the runner
//! creates without our label, whether its runner can run on the host, its job-cost floor, what the
//! soak samples and knows about it, how a case's needs (a tmpfs, a volume, a security option, an
//! environment variable for jobs) become its configuration — is a method of that trait. The rest of
//! the harness asks the mode and never matches on it.
//!
//! Adding a mode: a file here implementing [`ExecutorMode`], a variant of [`Executor`], a line in
//! [`Executor::mode`] and in [`Executor::ALL`].

pub mod custom;
pub mod docker;
pub mod hostrunner;
pub mod shell;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::str::FromStr;

use anyhow::{Result, bail};

use crate::engine::SocketDir;
use crate::engine::podman::Podman;
use crate::engine::service::ApiService;
use crate::forge::images::LabImages;
use crate::forge::runner::ForgedRunner;

/// The name of an executor mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Executor {
    /// Jobs run inside the runner container.
    Shell,
    /// The docker executor pointed at the rootless Podman socket.
    Docker,
    /// The custom executor driving podman through fixtures/executors/podman scripts.
    Custom,
}

impl Executor {
    /// Every mode, in report order.
    pub const ALL: [Executor; 3] = [Executor::Shell, Executor::Docker, Executor::Custom];

    /// What the mode is: the registry of modes.
    pub fn mode(self) -> &'static dyn ExecutorMode {
        match self {
            Executor::Shell => &shell::Shell,
            Executor::Docker => &docker::Docker,
            Executor::Custom => &custom::Custom,
        }
    }

    pub fn name(self) -> &'static str {
        self.mode().name()
    }
}

impl FromStr for Executor {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match Executor::ALL.into_iter().find(|e| e.name() == s) {
            Some(e) => Ok(e),
            None => bail!(
                "unknown executor {s:?}: expected one of {}",
                Executor::ALL.map(Executor::name).join(", ")
            ),
        }
    }
}

impl std::fmt::Display for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A future a mode returns from a trait method (the trait is used as `dyn`).
pub type ModeFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// What a runner instance's set-up gives a mode to work with.
pub struct SetupContext<'a> {
    pub run_id: &'a str,
    /// The directory of this runner's API socket under the engine's socket root (the run id for a
    /// lab; one per runner in a fleet).
    pub socket_name: &'a str,
    /// The owner tag of the run (reaper).
    pub owner: &'a str,
    /// The runner's `glrt-` token.
    pub runner_token: &'a str,
    pub podman: &'a Podman,
    pub runner: &'a ForgedRunner,
    pub images: &'a LabImages,
    /// Where the API service's stderr goes.
    pub api_log: &'a Path,
}

/// A growth a mode is known to show on this Podman: reported as a known finding with its
/// explanation instead of failing the soak (and flagged when it stops reproducing).
#[derive(Debug)]
pub struct KnownGrowth {
    pub metric: &'static str,
    pub why: &'static str,
}

/// What an executor mode is. One implementation per file in this folder.
pub trait ExecutorMode: Sync + Send {
    /// The name users type (`-e NAME`), `gitlab-runner register --executor` takes, and reports carry.
    fn name(&self) -> &'static str;

    /// What the mode adds to the runner container and its registration; starts its API service.
    fn setup<'a>(&'a self, ctx: SetupContext<'a>) -> ModeFuture<'a, ExecutorSetup>;

    /// Whether the runner drives containers through a Podman API service of the lab (soak metrics
    /// of the service, API restarts).
    fn uses_api_service(&self) -> bool;

    /// Whether the runner may run on the host instead of in a container (`--runner-on-host`).
    fn runs_on_host(&self) -> bool {
        false
    }

    /// Whether the job-cost floor is also measured through the compat API (the calls this mode's
    /// runner makes), besides `podman run --rm`.
    fn has_api_floor(&self) -> bool {
        false
    }

    /// `bench` variants beyond the default configuration: one job variable each.
    fn bench_variants(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }

    /// Soak growths known for this mode on Podman 4.3.1.
    fn known_growths(&self) -> &'static [KnownGrowth] {
        &[]
    }

    /// Whether the soak's `--leak` switch (a leak in the custom driver's cleanup) applies.
    fn has_leak_switch(&self) -> bool {
        false
    }

    /// Whether jobs run inside the runner container (their tools come from the runner image).
    fn jobs_run_in_runner_container(&self) -> bool {
        false
    }

    /// What `id` prints first in a job: who jobs run as by default.
    fn job_identity(&self) -> &'static str {
        "uid=0(root)"
    }

    /// Whether a project's next job finds the previous job's work tree (GIT_STRATEGY fetch reuses it).
    fn reuses_builds_dir(&self) -> bool {
        true
    }

    /// Whether the sources are fetched by a separate (root) helper rather than as the job's user.
    fn sources_by_helper(&self) -> bool {
        false
    }

    /// Whether service containers get the job's variables (HOME included).
    fn services_get_job_variables(&self) -> bool {
        false
    }

    /// The failure reason of a job whose image cannot be pulled (e.g. wrong registry credentials).
    fn pull_failure_reason(&self) -> &'static str {
        "script_failure"
    }

    /// Whether cancelling or timing out a job stops its script's processes.
    fn stops_script_on_cancel(&self) -> bool {
        true
    }

    /// `target` containers get a tmpfs at `path` with mount `options` (e.g. `rw,mode=1777`).
    fn add_tmpfs(&self, x: &mut RunnerExtras, target: For, path: &str, options: &str)
    -> Result<()>;

    /// Job containers get the host path `src` at `dst` (`ro`: read-only).
    fn add_volume(&self, x: &mut RunnerExtras, src: &str, dst: &str, ro: bool) -> Result<()>;

    /// `target` containers run with `--security-opt OPT`.
    fn add_security_opt(&self, x: &mut RunnerExtras, target: For, opt: &str) -> Result<()>;

    /// Job containers run as `uid`, where the runner's configuration can say so; `false` when the
    /// mode cannot (the job's own `image:docker:user` or the runner's `--user` decide there).
    fn add_job_user(&self, _x: &mut RunnerExtras, _uid: u32) -> bool {
        false
    }

    /// Jobs may pull their image with `policy` (besides the lab's `never`).
    fn allow_pull_policy(&self, _x: &mut RunnerExtras, _policy: &str) -> Result<()> {
        bail!("the {} executor pulls no job images", self.name())
    }
}

/// Which containers a runner setting is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum For {
    /// The job's own container (the runner container in shell mode).
    Jobs,
    /// The job's service containers.
    Services,
}

/// What a case adds to a lab's runner beyond its executor mode, e.g. what Podman-in-Podman jobs
/// need (the podman-build case). Empty by default. Built through the mode's `add_*` methods, so
/// a case says what jobs need and the mode says how its configuration carries it.
#[derive(Clone, Debug, Default)]
pub struct RunnerExtras {
    /// Replaces the mode's runner image.
    pub image: Option<String>,
    /// More `podman run` arguments for the runner container (and its one-shot containers).
    pub run_args: Vec<String>,
    /// More `gitlab-runner register` arguments.
    pub register_args: Vec<String>,
}

/// What an executor mode adds to the runner container and its registration.
pub struct ExecutorSetup {
    /// The runner image to run.
    pub image: String,
    /// Extra `podman run` arguments (mounts, environment).
    pub run_args: Vec<String>,
    /// Extra `gitlab-runner register` arguments.
    pub register_args: Vec<String>,
    /// The Podman API service the executor drives, if any.
    pub api: Option<ApiService>,
    /// Label filters for what the runner creates without our label.
    pub foreign_labels: Vec<String>,
    /// Where the API service's socket lives (mounted into the runner container).
    pub socket_dir: Option<SocketDir>,
}

impl RunnerExtras {
    /// One line for a report: what the runner gets beyond its mode.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(i) = &self.image {
            parts.push(format!("runner image {i}"));
        }
        if !self.run_args.is_empty() {
            parts.push(format!("runner container: {}", self.run_args.join(" ")));
        }
        if !self.register_args.is_empty() {
            parts.push(format!("register: {}", self.register_args.join(" ")));
        }
        parts.join("; ")
    }
}

impl ExecutorSetup {
    /// A mode that needs nothing beyond the runner image.
    pub fn plain(image: String) -> ExecutorSetup {
        ExecutorSetup {
            image,
            run_args: Vec::new(),
            register_args: Vec::new(),
            api: None,
            foreign_labels: Vec::new(),
            socket_dir: None,
        }
    }

    pub fn extend(&mut self, extras: &RunnerExtras) {
        if let Some(image) = &extras.image {
            self.image = image.clone();
        }
        self.run_args.extend(extras.run_args.iter().cloned());
        self.register_args
            .extend(extras.register_args.iter().cloned());
    }
}

/// One API service per runner instance, on its own socket: labs running side by side never share one.
pub(crate) async fn start_api_service(ctx: &SetupContext<'_>) -> Result<(SocketDir, ApiService)> {
    let user = ctx.podman.user().ok_or_else(|| {
        anyhow::anyhow!("an executor driving a Podman API service needs the rootless store")
    })?;
    let dir = SocketDir::create(user, ctx.socket_name, ctx.owner)?;
    let api = ApiService::start(
        ctx.podman,
        dir.socket(),
        ctx.api_log,
        std::time::Duration::from_secs(30),
    )
    .await?;
    Ok((dir, api))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_the_registry() {
        for e in Executor::ALL {
            assert_eq!(e.name().parse::<Executor>().unwrap(), e);
            assert_eq!(e.mode().name(), e.name());
        }
        let err = "kubernetes".parse::<Executor>().unwrap_err().to_string();
        assert!(err.contains("shell, docker, custom"), "{err}");
    }
}
