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

pub mod fleet;
pub mod registry;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use mock_gitlab::{CreatedRunner, JobRecord, MockGitlab, PipelineRecord, RunnerSpec};

use crate::engine::podman::{OWNER_LABEL, Podman, RUN_LABEL, Resources, owner_tag};
use crate::engine::service::ApiService;
use crate::engine::{EngineRef, SocketDir};
pub use crate::executor::{Executor, RunnerExtras};
use crate::executor::{ExecutorSetup, SetupContext};
use crate::forge::images::{self, LabImages};
use crate::forge::runner::{self, ForgedRunner, GetOptions};
use crate::redact::{self, scrub};
use crate::{paths, reaper};

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

/// A new run id: `rl-` and 8 hex digits; short enough for container names, unique per run.
pub fn new_run_id() -> String {
    format!("rl-{:08x}", rand::random::<u32>())
}

/// Removes everything labelled with the run id when dropped (normal exit or panic). One per run:
/// a lab's single runner and a fleet's runners all report to it.
struct RunGuard {
    run_id: String,
    podman: Podman,
    out_dir: PathBuf,
    /// Runner containers, each with the file (in `out_dir`) its log is kept in.
    runner_ctrs: Mutex<Vec<(String, String)>>,
    /// Runners on the host: their current pid (a restart changes it), raw log, the file its log
    /// is kept in.
    host_runners: Mutex<Vec<(crate::executor::hostrunner::PidCell, PathBuf, String)>>,
    /// Resources the runners made without our label (docker executor cache volumes, networks).
    foreign: Mutex<Option<reaper::RunRecord>>,
}

impl RunGuard {
    /// A runner on the host: killed first at cleanup, its log kept.
    fn add_host_runner(&self, pid: crate::executor::hostrunner::PidCell, raw: PathBuf, log: &str) {
        self.host_runners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((pid, raw, log.to_owned()));
    }

    fn add_runner(&self, ctr: &str, log: &str) {
        self.runner_ctrs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((ctr.to_owned(), log.to_owned()));
    }

    /// Record label filters of what a runner creates without our label; saved at once so that the
    /// reaper finds them after a kill.
    fn add_foreign(&self, owner: &str, labels: &[String]) -> Result<()> {
        if labels.is_empty() {
            return Ok(());
        }
        let mut f = self.foreign.lock().unwrap_or_else(|e| e.into_inner());
        let rec = f.get_or_insert_with(|| reaper::RunRecord {
            run_id: self.run_id.clone(),
            owner: owner.to_owned(),
            foreign_labels: Vec::new(),
        });
        rec.foreign_labels.extend(labels.iter().cloned());
        rec.save()
    }

    fn cleanup(&self) -> Result<Resources> {
        let hosts =
            std::mem::take(&mut *self.host_runners.lock().unwrap_or_else(|e| e.into_inner()));
        for (pid, raw, log_name) in &hosts {
            // The runner first, as for containers below; its log is kept, scrubbed.
            if let Some(pid) = *pid.lock().unwrap_or_else(|e| e.into_inner()) {
                crate::executor::hostrunner::kill_now(pid);
            }
            if let Ok(log) = std::fs::read(raw) {
                let _ = paths::write_atomic(
                    &self.out_dir.join(log_name),
                    scrub(&String::from_utf8_lossy(&log)).as_bytes(),
                );
            }
        }
        let ctrs = std::mem::take(&mut *self.runner_ctrs.lock().unwrap_or_else(|e| e.into_inner()));
        for (ctr, log_name) in &ctrs {
            // Keep the runner's own log next to the report: the first thing to read when a job fails.
            if let Ok(out) = self.podman.std_command(["logs", ctr]).output() {
                let mut log = out.stdout;
                log.extend_from_slice(&out.stderr);
                let _ = paths::write_atomic(
                    &self.out_dir.join(log_name),
                    scrub(&String::from_utf8_lossy(&log)).as_bytes(),
                );
            }
        }
        if !ctrs.is_empty() {
            // The runners first (one call: podman stops them in parallel): a runner in the middle
            // of a job creates containers while the rest is being removed.
            let mut args = vec!["rm", "-f", "-t", "2"];
            args.extend(ctrs.iter().map(|(c, _)| c.as_str()));
            let _ = self
                .podman
                .std_command(args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
        // The services log at warning level (no request bodies), but nothing leaves unscrubbed.
        for e in std::fs::read_dir(&self.out_dir)
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if !(name.starts_with("podman-api") && name.ends_with(".log")) {
                continue;
            }
            if let Ok(text) = std::fs::read_to_string(e.path()) {
                let clean = scrub(&text);
                if clean != text {
                    let _ = paths::write_atomic(&e.path(), clean.as_bytes());
                }
            }
        }
        let mut removed = self.podman.remove_run(&self.run_id)?;
        // After the runners are gone nothing recreates them.
        if let Some(rec) = self
            .foreign
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let r = rec.remove(&self.podman)?;
            removed.containers.extend(r.containers);
            removed.volumes.extend(r.volumes);
            removed.networks.extend(r.networks);
        }
        Ok(removed)
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        if let Err(e) = self.cleanup() {
            eprintln!("runnerlab: cleanup of {} incomplete: {e:#}", self.run_id);
        }
    }
}

/// What a lab and a fleet share: one run id, one store, one mock-gitlab, one guard, and the runner
/// instances registered against that mock. Field order is drop order.
pub(crate) struct RunCore {
    pub(crate) run_id: String,
    pub(crate) podman: Podman,
    pub(crate) mock: MockGitlab,
    pub(crate) runner: ForgedRunner,
    pub(crate) images: LabImages,
    pub(crate) owner: String,
    pub(crate) out_dir: PathBuf,
    projects: Mutex<HashMap<String, String>>,
    // The guard removes containers before the instances' API services stop (the custom driver
    // talks through them) and before the mock's data dir goes away.
    guard: RunGuard,
    pub(crate) instances: Vec<RunnerInstance>,
    _data: tempfile::TempDir,
}

/// One runner instance to add to a run.
pub(crate) struct InstanceSpec {
    /// `None`: a lab's single runner (`<run>-runner`, volume `<run>-config`); `Some(n)`: a fleet's
    /// runner `<run>-<n>` with volume `<run>-<n>-config` (the seed's `runner-1-config` pattern).
    pub name: Option<String>,
    pub executor: Executor,
    pub tags: Vec<String>,
    pub run_untagged: bool,
    /// The runner's global `concurrent`.
    pub concurrent: u32,
    /// `[[runners]] limit` (0: no limit of its own).
    pub limit: u32,
    pub check_interval: Option<u32>,
    pub extras: RunnerExtras,
    /// Docker mode: the runner on the host rather than in a container.
    pub on_host: bool,
}

impl RunCore {
    /// Reap dead runs, get the runner and images, start mock-gitlab: everything but runners.
    /// `store`: a store other than the engine's lab user store (its engine is then the lab's).
    pub(crate) async fn start(
        engine: &EngineRef,
        store: Option<&Podman>,
        runner_opts: &GetOptions,
    ) -> Result<RunCore> {
        let podman = match store {
            Some(p) => p.clone(),
            None => Podman::rootless_on(engine.clone(), crate::engine::podman::LabUser::lookup()?),
        };
        // Leftovers of killed runs go first, so that they cannot pile up across test runs.
        reaper::reap_dead(std::slice::from_ref(&podman));
        let runner = runner::get(runner_opts).await?;
        let stores = match store {
            Some(p) => vec![p.clone()],
            None => crate::engine::stores(podman.engine())?,
        };
        let images = images::ensure(&runner, &stores).await?;
        let run_id = new_run_id();
        let out_dir = paths::run_output_dir(&run_id);
        std::fs::create_dir_all(&out_dir)?;
        let guard = RunGuard {
            run_id: run_id.clone(),
            podman: podman.clone(),
            out_dir: out_dir.clone(),
            runner_ctrs: Mutex::new(Vec::new()),
            host_runners: Mutex::new(Vec::new()),
            foreign: Mutex::new(None),
        };
        let data = tempfile::Builder::new()
            .prefix(&format!("runnerlab-{run_id}-"))
            .tempdir()?;
        let cfg = mock_gitlab::Config {
            // The rootless runner container reaches the host's loopback through the engine's gateway.
            external_host: Some(podman.engine().host_gateway().into()),
            data_dir: data.path().to_path_buf(),
            ..Default::default()
        };
        let mock = MockGitlab::start(cfg)
            .await
            .context("starting mock-gitlab")?;
        redact::register_secret(&mock.registration_token());
        Ok(RunCore {
            run_id,
            podman,
            mock,
            runner,
            images,
            owner: owner_tag(),
            out_dir,
            projects: Mutex::new(HashMap::new()),
            guard,
            instances: Vec::new(),
            _data: data,
        })
    }

    /// Create a runner on the mock, register it into its own config volume and start its container
    /// (not waiting for its first poll: see [`RunnerInstance::wait_polls_beyond`]).
    pub(crate) async fn launch(&mut self, spec: InstanceSpec) -> Result<&RunnerInstance> {
        let inst = RunnerInstance::launch(self, spec).await?;
        self.instances.push(inst);
        Ok(self.instances.last().expect("just pushed"))
    }

    /// What of `inv` belongs to this run: the run's label, and the GitLab labels of what the
    /// runners create without ours (docker mode's cache volumes and build networks).
    pub(crate) fn own(&self, inv: &crate::engine::podman::Inventory) -> Resources {
        let mut labels = vec![format!("{RUN_LABEL}={}", self.run_id)];
        labels.extend(
            self.guard
                .foreign
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .flat_map(|r| r.foreign_labels.clone()),
        );
        inv.matching_any(&labels)
    }

    pub(crate) fn pipeline(&self, project: &str, executor: Executor) -> PipelineBuilder<'_> {
        PipelineBuilder {
            core: self,
            executor,
            project: project.to_owned(),
            git_ref: "main".into(),
            merge_request: None,
            timeout: Duration::from_secs(180),
            variables: Vec::new(),
        }
    }

    /// Register fixture `project` with the mock once; returns its path on the mock.
    fn project_path(&self, project: &str) -> Result<String> {
        let mut known = self.projects.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = known.get(project) {
            return Ok(p.clone());
        }
        let dir = paths::fixtures().join("projects").join(project);
        if !dir.join(".gitlab-ci.yml").is_file() {
            bail!(
                "no fixture project {project:?}: {} has no .gitlab-ci.yml\n  fix: add it, or use one of: {}",
                dir.display(),
                list_projects().join(", ")
            );
        }
        let path = format!("runnerlab/{project}");
        self.mock
            .add_project(&path, &dir)
            .with_context(|| format!("adding project {}", dir.display()))?;
        known.insert(project.to_owned(), path.clone());
        Ok(path)
    }

    pub(crate) async fn shutdown(self) -> Result<Resources> {
        let mock = self.mock.clone();
        mock.shutdown().await;
        self.guard.cleanup()
    }
}

/// One registered runner container of a lab or fleet: its own mock runner (id, `glrt-` token),
/// its own config volume, its own API service in docker and custom modes.
pub struct RunnerInstance {
    name: Option<String>,
    executor: Executor,
    podman: Podman,
    mock: MockGitlab,
    registered: CreatedRunner,
    container: String,
    config_volume: String,
    register_output: String,
    api_log: PathBuf,
    /// Set when the runner runs on the host (`container` and `config_volume` are then empty).
    host: Option<crate::executor::hostrunner::HostRunner>,
    api: Option<ApiService>,
    // Removed after the service stopped.
    _socket_dir: Option<SocketDir>,
}

impl RunnerInstance {
    async fn launch(core: &RunCore, spec: InstanceSpec) -> Result<RunnerInstance> {
        let run_id = &core.run_id;
        let podman = &core.podman;
        // The Lab's names are kept as they were; a fleet's carry the runner's name.
        let (base, config_volume, api_log, runner_log) = match &spec.name {
            None => (
                format!("{run_id}-runner"),
                format!("{run_id}-config"),
                API_LOG.to_owned(),
                "runner.log".to_owned(),
            ),
            Some(n) => (
                format!("{run_id}-{n}"),
                format!("{run_id}-{n}-config"),
                format!("podman-api-{n}.log"),
                format!("runner-{n}.log"),
            ),
        };
        let one_shot_prefix = match &spec.name {
            None => run_id.clone(),
            Some(_) => base.clone(),
        };
        let registered = core.mock.create_runner(RunnerSpec {
            description: base.clone(),
            tags: spec.tags.clone(),
            run_untagged: spec.run_untagged,
        });
        redact::register_secret(&registered.token);
        let owner = &core.owner;
        let socket_name = match &spec.name {
            None => run_id.clone(),
            Some(_) => base.clone(),
        };
        let api_log = core.out_dir.join(api_log);
        let mut mode = spec
            .executor
            .mode()
            .setup(SetupContext {
                run_id,
                socket_name: &socket_name,
                owner,
                runner_token: &registered.token,
                podman,
                runner: &core.runner,
                images: &core.images,
                api_log: &api_log,
            })
            .await?;
        mode.extend(&spec.extras);
        core.guard.add_foreign(owner, &mode.foreign_labels)?;
        if spec.on_host {
            return RunnerInstance::launch_on_host(
                core, spec, mode, registered, base, runner_log, api_log,
            )
            .await;
        }
        let labels = [
            "--label".to_owned(),
            format!("{RUN_LABEL}={run_id}"),
            "--label".to_owned(),
            format!("{OWNER_LABEL}={owner}"),
        ];
        let mut args: Vec<String> = vec!["volume".into(), "create".into()];
        args.extend(labels.iter().cloned());
        args.push(config_volume.clone());
        podman.run(&args).await?;

        // A short-lived container of the runner image on the config volume (register, configure).
        let one_shot = |name: &str, entrypoint: Option<&str>, cmd: &[&str]| -> Vec<String> {
            let mut a: Vec<String> = vec![
                "run".into(),
                "--rm".into(),
                "--name".into(),
                format!("{one_shot_prefix}-{name}"),
            ];
            a.extend(labels.iter().cloned());
            a.extend(common_run_args(podman, &config_volume));
            a.extend(mode.run_args.iter().cloned());
            if let Some(e) = entrypoint {
                a.extend(["--entrypoint".into(), e.to_owned()]);
            }
            a.push(mode.image.clone());
            a.extend(cmd.iter().map(|s| s.to_string()));
            a
        };
        let url = core.mock.external_url();
        let reg = register_args(&url, &registered.token, &spec, &base, &mode.register_args);
        let reg: Vec<&str> = reg.iter().map(String::as_str).collect();
        let register = podman
            .run(one_shot("register", None, &reg))
            .await
            .context("gitlab-runner register")?;
        let register_output = scrub(&format!("{}{}", register.stdout, register.stderr));
        // Global settings are not register flags: set them in the config volume.
        let mut global = Vec::new();
        if spec.concurrent != 1 {
            global.push(("concurrent", spec.concurrent));
        }
        if let Some(n) = spec.check_interval {
            global.push(("check_interval", n));
        }
        for (key, n) in global {
            let script = format!(
                "sed -i 's/^{key} = .*/{key} = {n}/' /etc/gitlab-runner/config.toml && \
                 grep -qx '{key} = {n}' /etc/gitlab-runner/config.toml"
            );
            podman
                .run(one_shot("configure", Some("sh"), &["-c", &script]))
                .await
                .with_context(|| format!("setting {key} = {n} in the runner's config.toml"))?;
        }

        let mut args: Vec<String> = vec!["run".into(), "-d".into(), "--name".into(), base.clone()];
        args.extend(labels.iter().cloned());
        args.extend(common_run_args(podman, &config_volume));
        args.extend(mode.run_args.iter().cloned());
        args.push(mode.image.clone());
        // Registered with the guard even if `run` fails half-way: a created container is removed.
        core.guard.add_runner(&base, &runner_log);
        podman
            .run(&args)
            .await
            .context("starting the runner container")?;
        Ok(RunnerInstance {
            name: spec.name,
            executor: spec.executor,
            podman: podman.clone(),
            mock: core.mock.clone(),
            registered,
            container: base,
            config_volume,
            register_output,
            api_log,
            host: None,
            api: mode.api,
            _socket_dir: mode.socket_dir,
        })
    }

    /// The docker mode's runner on the host, as the lab user (see `hostrunner`).
    async fn launch_on_host(
        core: &RunCore,
        spec: InstanceSpec,
        mode: ExecutorSetup,
        registered: CreatedRunner,
        name: String,
        runner_log: String,
        api_log: PathBuf,
    ) -> Result<RunnerInstance> {
        use crate::executor::hostrunner::{GITLAB_HOST, HostRunner};
        if !spec.executor.mode().runs_on_host() {
            bail!(
                "the runner on the host is a docker-executor deployment; {} mode runs it in a container",
                spec.executor
            );
        }
        let dir = mode
            .socket_dir
            .as_ref()
            .context("a mode whose runner runs on the host has a socket directory")?;
        let user = core
            .podman
            .user()
            .context("the runner on the host runs as the rootless lab user")?;
        let hr = HostRunner::prepare(user, dir.path(), &core.runner.runner_bin())?;
        let port = core
            .mock
            .local_url()
            .rsplit(':')
            .next()
            .unwrap_or_default()
            .to_owned();
        let url = format!("http://{GITLAB_HOST}:{port}");
        let cfg = hr.config().to_string_lossy().into_owned();
        let extra_host = format!("{GITLAB_HOST}:{}", core.podman.engine().host_gateway());
        let mut reg = register_args(&url, &registered.token, &spec, &name, &mode.register_args);
        reg.extend([
            "--config".to_owned(),
            cfg,
            // Job and helper containers reach the same name on the host's loopback.
            "--docker-extra-hosts".to_owned(),
            extra_host,
        ]);
        let reg: Vec<&str> = reg.iter().map(String::as_str).collect();
        let out = hr
            .exec(&reg)
            .await
            .context("gitlab-runner register (on the host)")?;
        if spec.concurrent != 1 {
            hr.set_global("concurrent", spec.concurrent)?;
        }
        if let Some(n) = spec.check_interval {
            hr.set_global("check_interval", n)?;
        }
        core.guard
            .add_host_runner(hr.pid_cell(), hr.raw_log(), &runner_log);
        hr.start().await?;
        Ok(RunnerInstance {
            name: spec.name,
            executor: spec.executor,
            podman: core.podman.clone(),
            mock: core.mock.clone(),
            registered,
            container: String::new(),
            config_volume: String::new(),
            register_output: scrub(&out),
            api_log,
            host: Some(hr),
            api: mode.api,
            _socket_dir: mode.socket_dir,
        })
    }

    /// Whether this runner runs on the host rather than in a container.
    pub fn on_host(&self) -> bool {
        self.host.is_some()
    }

    /// The fleet's name of this runner (`None` for a lab's single runner).
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
    /// The mock's id of this runner.
    pub fn id(&self) -> u64 {
        self.registered.id
    }
    /// The name it was registered with, which is also its container's name.
    pub fn container(&self) -> &str {
        &self.container
    }
    pub fn config_volume(&self) -> &str {
        &self.config_volume
    }
    pub fn executor(&self) -> Executor {
        self.executor
    }
    /// What `gitlab-runner register` printed (secrets removed).
    pub fn register_output(&self) -> &str {
        &self.register_output
    }

    /// The mock's record of this runner.
    pub fn record(&self) -> Option<mock_gitlab::RunnerRecord> {
        self.mock
            .runners()
            .into_iter()
            .find(|r| r.id == self.registered.id)
    }

    /// The jobs the mock handed to this runner, by id.
    pub fn jobs(&self) -> Vec<JobRecord> {
        self.mock
            .jobs()
            .into_iter()
            .filter(|j| j.runner_id == Some(self.registered.id))
            .collect()
    }

    pub fn poll_count(&self) -> u64 {
        self.record().map(|r| r.poll_count).unwrap_or(0)
    }

    /// Wait until the runner has asked for a job since `since` polls (the sign that it is up).
    pub async fn wait_polls_beyond(&self, since: u64, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.poll_count() > since {
                return Ok(());
            }
            if Instant::now() > deadline {
                let logs = match &self.host {
                    Some(h) => h.log_tail(30),
                    None => self
                        .podman
                        .run(["logs", "--tail", "30", &self.container])
                        .await
                        .map(|o| format!("{}{}", o.stdout, o.stderr))
                        .unwrap_or_default(),
                };
                bail!(
                    "runner {} did not ask mock-gitlab for a job within {timeout:?}; last runner log lines:\n{}",
                    self.container,
                    scrub(&logs)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Wait until the runner is parked in a long-poll on the mock (idle and listening), so that a job
    /// queued now is handed over at once.
    pub async fn wait_idle(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let held = |i: &RunnerInstance| i.record().map(|r| r.long_polls).unwrap_or(0);
        let before = held(self);
        // A hold that started before this call may be about to time out; wait for a fresh one.
        while held(self) == before {
            if Instant::now() > deadline {
                bail!("the runner did not start a long-poll within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Wait until the runner asks for a job again after `finished` (a job's end on the mock's clock):
    /// with `concurrent = 1` that is the sign that the job's cleanup is over.
    pub async fn wait_asking_since(&self, finished: Instant, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let asked = self.record().and_then(|r| r.last_poll);
            if asked.is_some_and(|t| t > finished) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the runner did not ask for a job within {timeout:?} of the last job's end");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Host pid of the runner container's main process (`gitlab-runner run`).
    pub async fn pid(&self) -> Result<u32> {
        if let Some(h) = &self.host {
            return h
                .pid()
                .await
                .context("the runner on the host is not running");
        }
        let pid = self
            .podman
            .text(["inspect", "--format", "{{.State.Pid}}", &self.container])
            .await?;
        pid.trim()
            .parse::<u32>()
            .ok()
            .filter(|p| *p > 0)
            .with_context(|| format!("runner container {} has no pid ({pid:?})", self.container))
    }

    /// Run `gitlab-runner ARGS…` inside the running runner container (like `podman exec`).
    pub async fn exec(&self, args: &[&str]) -> Result<String> {
        if let Some(h) = &self.host {
            let cfg = h.config().to_string_lossy().into_owned();
            let mut a = args.to_vec();
            a.extend(["--config", &cfg]);
            return Ok(scrub(&strip_ansi(&h.exec(&a).await?)));
        }
        let mut a = vec!["exec", &self.container, "gitlab-runner"];
        a.extend_from_slice(args);
        let out = self.podman.run(a).await?;
        Ok(scrub(&strip_ansi(&format!("{}{}", out.stdout, out.stderr))))
    }

    /// Restart the runner container and wait until it polls again (config must come from the volume).
    pub async fn restart(&self) -> Result<()> {
        let before = self.poll_count();
        if let Some(h) = &self.host {
            h.stop(Duration::from_secs(5)).await;
            self.start_host(h).await?;
        } else {
            self.podman
                .run(["restart", "-t", "5", &self.container])
                .await?;
        }
        self.wait_polls_beyond(before, Duration::from_secs(60))
            .await
    }

    /// Stop the runner container (its stop signal, SIGQUIT, is the runner's graceful shutdown).
    /// Container and config volume stay.
    pub async fn stop(&self) -> Result<()> {
        if let Some(h) = &self.host {
            h.stop(Duration::from_secs(10)).await;
            return Ok(());
        }
        self.podman
            .run(["stop", "-t", "10", &self.container])
            .await?;
        Ok(())
    }

    /// Start the stopped container again and wait until it polls (config from the volume).
    pub async fn start(&self) -> Result<()> {
        let before = self.poll_count();
        if let Some(h) = &self.host {
            self.start_host(h).await?;
        } else {
            self.podman.run(["start", &self.container]).await?;
        }
        self.wait_polls_beyond(before, Duration::from_secs(60))
            .await
    }

    /// Start the host runner again (the guard follows its pid through [`HostRunner::pid_cell`]).
    ///
    /// [`HostRunner::pid_cell`]: crate::executor::hostrunner::HostRunner::pid_cell
    async fn start_host(&self, h: &crate::executor::hostrunner::HostRunner) -> Result<()> {
        h.start().await.map(|_| ())
    }

    /// Stop this runner's Podman API service and start a new one on the same socket path, as a host
    /// restarting `podman.service` would. Returns how long the socket was gone.
    pub async fn restart_api(&mut self) -> Result<Duration> {
        let old = self
            .api
            .take()
            .context("this runner's mode has no Podman API service (shell mode)")?;
        let socket = old.socket().clone();
        let t0 = Instant::now();
        old.stop().await?;
        self.api = Some(
            ApiService::start(&self.podman, socket, &self.api_log, Duration::from_secs(30)).await?,
        );
        Ok(t0.elapsed())
    }

    /// Host pid of this runner's Podman API service (docker and custom modes).
    pub fn api_pid(&self) -> Option<u32> {
        self.api.as_ref().and_then(ApiService::pid)
    }

    /// The socket of this runner's Podman API service (docker and custom modes).
    pub fn api_socket(&self) -> Option<&Path> {
        self.api.as_ref().map(|a| a.socket().as_path())
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

    /// Remove everything this lab created and return what was removed. Dropping does the same.
    pub async fn shutdown(self) -> Result<Resources> {
        self.core.shutdown().await
    }
}

/// The API service's stderr, next to the report (scrubbed when the lab ends).
const API_LOG: &str = "podman-api.log";

/// The runner colours its log lines even without a terminal; callers want the words.
fn strip_ansi(s: &str) -> String {
    static ANSI: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"\x1b\[[0-9;]*[A-Za-z]").expect("static regex")
    });
    ANSI.replace_all(s, "").into_owned()
}

/// Arguments every runner container gets: network that reaches the host's loopback, the config volume.
/// `gitlab-runner register` for one runner instance, wherever it runs.
fn register_args(
    url: &str,
    token: &str,
    spec: &InstanceSpec,
    name: &str,
    mode_args: &[String],
) -> Vec<String> {
    let mut a: Vec<String> = [
        "register",
        "--non-interactive",
        "--url",
        url,
        "--token",
        token,
        "--executor",
        spec.executor.name(),
        "--name",
        name,
        // Room for the 10 MiB trace case (the runner's default limit is 4 MiB).
        "--output-limit",
        "16384",
    ]
    .map(str::to_owned)
    .to_vec();
    if spec.limit > 0 {
        a.extend(["--limit".to_owned(), spec.limit.to_string()]);
    }
    a.extend(mode_args.iter().cloned());
    a
}

fn common_run_args(podman: &Podman, config_volume: &str) -> Vec<String> {
    vec![
        "--network".into(),
        podman.engine().container_network().into(),
        "-v".into(),
        format!("{config_volume}:/etc/gitlab-runner"),
    ]
}

/// Names of the fixture projects.
pub fn list_projects() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(paths::fixtures().join("projects"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().join(".gitlab-ci.yml").is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A pipeline about to run.
pub struct PipelineBuilder<'a> {
    core: &'a RunCore,
    executor: Executor,
    project: String,
    git_ref: String,
    merge_request: Option<u64>,
    timeout: Duration,
    variables: Vec<mock_gitlab::Variable>,
}

/// A pipeline that has been created and may still be running.
pub struct StartedPipeline<'a> {
    core: &'a RunCore,
    executor: Executor,
    project: String,
    id: mock_gitlab::PipelineId,
    timeout: Duration,
    started: Instant,
}

impl StartedPipeline<'_> {
    pub fn id(&self) -> mock_gitlab::PipelineId {
        self.id
    }

    /// The jobs of the pipeline as they are now.
    pub fn jobs(&self) -> Vec<JobRecord> {
        self.core
            .mock
            .jobs()
            .into_iter()
            .filter(|j| j.pipeline_id == self.id)
            .collect()
    }

    /// Wait (deadline: the builder's timeout) until job `name`'s trace contains `text`; returns its id.
    pub async fn wait_trace(&self, name: &str, text: &str) -> Result<u64> {
        let deadline = Instant::now() + self.timeout;
        loop {
            if let Some(j) = self.jobs().into_iter().find(|j| j.name == name)
                && j.trace_text().contains(text)
            {
                return Ok(j.id);
            }
            if Instant::now() > deadline {
                bail!(
                    "job {name} did not print {text:?} within {:?}",
                    self.timeout
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Wait for the pipeline to finish.
    pub async fn wait(self) -> Result<PipelineRun> {
        let record = self.core.mock.wait_pipeline(self.id, self.timeout).await?;
        let run = PipelineRun {
            project: self.project,
            jobs: record.jobs.clone(),
            record,
            wall: self.started.elapsed(),
            executor: self.executor,
            out_dir: self.core.out_dir.clone(),
        };
        run.save_traces()?;
        Ok(run)
    }
}

impl<'a> PipelineBuilder<'a> {
    /// A branch or a tag (default `main`).
    pub fn git_ref(mut self, r: &str) -> Self {
        self.git_ref = r.to_owned();
        self
    }

    /// A merge request pipeline for the fixture's `.merge-requests/<iid>-<branch>/` instead.
    pub fn merge_request(mut self, iid: u64) -> Self {
        self.merge_request = Some(iid);
        self
    }

    /// How long the whole pipeline may take before `run` fails (default 180 s).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// A project-level CI/CD variable (masked, file, …) set before the pipeline is created.
    pub fn variable(mut self, v: mock_gitlab::Variable) -> Self {
        if v.masked {
            redact::register_secret(&v.value);
        }
        self.variables.push(v);
        self
    }

    /// Create the pipeline on the mock and return at once.
    pub fn spawn(self) -> Result<StartedPipeline<'a>> {
        let path = self.core.project_path(&self.project)?;
        for v in self.variables {
            self.core.mock.set_variable(&path, v)?;
        }
        let started = Instant::now();
        let created = match self.merge_request {
            Some(iid) => self.core.mock.create_merge_request_pipeline(&path, iid),
            None => self.core.mock.create_pipeline(&path, &self.git_ref),
        };
        let id = created.map_err(|e| anyhow!("{e}"))?;
        Ok(StartedPipeline {
            core: self.core,
            executor: self.executor,
            project: self.project,
            id,
            timeout: self.timeout,
            started,
        })
    }

    /// Create the pipeline on the mock and wait for it to finish.
    pub async fn run(self) -> Result<PipelineRun> {
        self.spawn()?.wait().await
    }
}

/// A finished pipeline.
#[derive(Clone, Debug)]
pub struct PipelineRun {
    pub project: String,
    pub record: PipelineRecord,
    pub jobs: Vec<JobRecord>,
    /// From pipeline creation to its end, as the harness saw it.
    pub wall: Duration,
    pub executor: Executor,
    /// The output directory of the lab that ran it (its traces are under `traces/`).
    pub out_dir: PathBuf,
}

impl PipelineRun {
    /// The job called `name`. Panics with the list of jobs if there is none: tests want that.
    pub fn job(&self, name: &str) -> JobView<'_> {
        match self.jobs.iter().find(|j| j.name == name) {
            Some(j) => JobView { job: j },
            None => panic!(
                "pipeline of {} has no job {name:?}; jobs: {:?}",
                self.project,
                self.jobs.iter().map(|j| &j.name).collect::<Vec<_>>()
            ),
        }
    }

    pub fn status(&self) -> String {
        self.record.status.to_string()
    }

    /// Where a job's trace is kept: `<out>/<project>/<job>.<mode>.log` (normalised, secrets removed).
    pub fn trace_path(&self, out: &Path, job: &str) -> PathBuf {
        out.join("traces")
            .join(&self.project)
            .join(format!("{job}.{}.log", self.executor))
    }

    fn save_traces(&self) -> Result<()> {
        for j in &self.jobs {
            let p = self.trace_path(&self.out_dir, &j.name);
            paths::write_atomic(&p, JobView { job: j }.trace().as_bytes())?;
        }
        Ok(())
    }
}

/// One job of a finished pipeline.
#[derive(Clone, Copy, Debug)]
pub struct JobView<'a> {
    pub job: &'a JobRecord,
}

impl JobView<'_> {
    pub fn status(&self) -> String {
        self.job.status.to_string()
    }
    pub fn failure_reason(&self) -> Option<&str> {
        self.job.failure_reason.as_deref()
    }
    pub fn exit_code(&self) -> Option<i32> {
        self.job.exit_code
    }
    pub fn checksum_ok(&self) -> Option<bool> {
        self.job.checksum_ok
    }
    /// The trace as the mock assembled it, normalised (timestamps, ANSI and section markers
    /// stripped) and with every secret removed.
    pub fn trace(&self) -> String {
        scrub(&mock_gitlab::normalize_trace(&self.job.trace_text()))
    }
    /// The trace ready for a snapshot: [`JobView::trace`] with run-specific values replaced.
    ///
    /// A trace over 64 KiB is summarised (head and tail, long lines cut): a snapshot is reviewed
    /// by people, and megabytes of generated lines say nothing a summary does not.
    pub fn snapshot(&self) -> String {
        const LIMIT: usize = 64 * 1024;
        let text = redact::normalize_for_snapshot(&self.trace());
        if text.len() <= LIMIT {
            return text;
        }
        // Sizes and line counts vary with run-specific lines; the case asserts the size itself.
        let cut = |l: &&str| -> String {
            match l.char_indices().nth(120) {
                Some((i, _)) => format!("{}[…]", &l[..i]),
                None => l.to_string(),
            }
        };
        let lines: Vec<&str> = text.lines().collect();
        let n = lines.len();
        let head: Vec<String> = lines[..n.min(12)].iter().map(cut).collect();
        let tail: Vec<String> = lines[n.saturating_sub(8)..].iter().map(cut).collect();
        format!(
            "[trace over 64 KiB: first 12 and last 8 lines, long lines cut]\n{}\n[…]\n{}\n",
            head.join("\n"),
            tail.join("\n")
        )
    }
    /// From the runner's first `running` update to its final update, as the mock recorded it.
    pub fn duration(&self) -> Option<Duration> {
        match (self.job.started_at, self.job.finished_at) {
            (Some(s), Some(f)) => Some(f.saturating_duration_since(s)),
            _ => None,
        }
    }
}
