//! What a lab and a fleet share: the run id, its guard (cleanup on drop and panic), mock-gitlab.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use mock_gitlab::MockGitlab;

use crate::engine::EngineRef;
use crate::engine::podman::{Podman, RUN_LABEL, Resources, owner_tag};
use crate::executor::{Executor, RunnerExtras};
use crate::forge::images::{self, LabImages};
use crate::forge::runner::{self, ForgedRunner, GetOptions};
use crate::redact::{self, scrub};
use crate::{paths, reaper};

use super::instance::RunnerInstance;
use super::pipeline::{PipelineBuilder, list_projects};

/// A new run id: `rl-` and 8 hex digits; short enough for container names, unique per run.
pub fn new_run_id() -> String {
    format!("rl-{:08x}", rand::random::<u32>())
}

/// Removes everything labelled with the run id when dropped (normal exit or panic). One per run:
/// a lab's single runner and a fleet's runners all report to it.
pub(super) struct RunGuard {
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
    pub(super) fn add_host_runner(
        &self,
        pid: crate::executor::hostrunner::PidCell,
        raw: PathBuf,
        log: &str,
    ) {
        self.host_runners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((pid, raw, log.to_owned()));
    }

    pub(super) fn add_runner(&self, ctr: &str, log: &str) {
        self.runner_ctrs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((ctr.to_owned(), log.to_owned()));
    }

    /// Record label filters of what a runner creates without our label; saved at once so that the
    /// reaper finds them after a kill.
    pub(super) fn add_foreign(&self, owner: &str, labels: &[String]) -> Result<()> {
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
    pub(super) guard: RunGuard,
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
    pub(super) fn project_path(&self, project: &str) -> Result<String> {
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

    /// Register directory `dir` (its files as they are, one commit on `main`) with the mock as
    /// project `runnerlab/<name>`; `pipeline(name)` then runs it like a fixture. Returns its path
    /// on the mock.
    pub(super) fn add_project_dir(&self, name: &str, dir: &std::path::Path) -> Result<String> {
        let mut known = self.projects.lock().unwrap_or_else(|e| e.into_inner());
        if known.contains_key(name) {
            bail!("project {name:?} is already registered on this lab");
        }
        let path = format!("runnerlab/{name}");
        self.mock
            .add_project(&path, dir)
            .with_context(|| format!("adding project {}", dir.display()))?;
        known.insert(name.to_owned(), path.clone());
        Ok(path)
    }

    pub(crate) async fn shutdown(self) -> Result<Resources> {
        let mock = self.mock.clone();
        mock.shutdown().await;
        self.guard.cleanup()
    }
}
