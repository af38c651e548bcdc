//! One registered runner of a lab or fleet: its container (or host process), config volume and API service.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use mock_gitlab::{CreatedRunner, JobRecord, MockGitlab, RunnerSpec};

use crate::engine::SocketDir;
use crate::engine::podman::{OWNER_LABEL, Podman, RUN_LABEL};
use crate::engine::service::ApiService;
use crate::executor::{Executor, ExecutorSetup, SetupContext};
use crate::redact::{self, scrub};

use super::core::{InstanceSpec, RunCore};

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
    pub(super) async fn launch(core: &RunCore, spec: InstanceSpec) -> Result<RunnerInstance> {
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
    let mut a = Vec::new();
    if let Some(n) = podman.engine().container_network() {
        a.extend(["--network".into(), n.into()]);
    }
    a.extend(["-v".into(), format!("{config_volume}:/etc/gitlab-runner")]);
    a
}
