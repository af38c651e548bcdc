//! A fleet: several registered runner containers against ONE mock-gitlab, under one run id — the
//! seed's multi-runner layout (`runner-1-config`, `runner-2-config`: one config volume and one
//! container per runner, each registered with its own token and tags).
//!
//! ```no_run
//! # async fn f() -> anyhow::Result<()> {
//! use runnerlab::Executor;
//! use runnerlab::fleet::{Fleet, FleetOptions, RunnerSpec};
//! let fleet = Fleet::start(FleetOptions::new(
//!     Executor::Shell,
//!     vec![
//!         RunnerSpec::new("build").tags(&["build"]).run_untagged(false),
//!         RunnerSpec::new("test").tags(&["test"]),
//!     ],
//! ))
//! .await?;
//! let run = fleet.pipeline("fleet-routing").run().await?;
//! assert_eq!(run.job("compile").job.runner_id, Some(fleet.runner("build").id()));
//! # Ok(()) }
//! ```
//!
//! The fleet is a [`crate::lab`] run with more than one runner instance: the same guard removes
//! everything labelled `runnerlab.run=<run id>` on drop (also during a panic), the same owner label
//! and run record let the reaper remove a killed fleet, and pipelines work as on a lab.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use mock_gitlab::MockGitlab;

use crate::engine::podman::{Podman, Resources};
use crate::forge::runner::GetOptions;
use crate::lab::{Executor, InstanceSpec, PipelineBuilder, RunCore, RunnerExtras};

pub use crate::lab::RunnerInstance;

/// One runner of a fleet, like the UI's "New runner" form plus the runner's own `config.toml`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunnerSpec {
    /// Names its container `<run>-<name>` and volume `<run>-<name>-config`: lower-case letters,
    /// digits and inner dashes.
    pub name: String,
    pub tags: Vec<String>,
    /// Whether it may take jobs without tags (a runner without tags always may, as in GitLab).
    pub run_untagged: bool,
    /// Global `concurrent` of its `config.toml` (each runner container has its own).
    pub concurrent: u32,
    /// `[[runners]] limit`: jobs at once for this registration; 0 = no limit of its own.
    pub limit: u32,
}

impl RunnerSpec {
    /// Untagged jobs allowed, no tags, `concurrent = 1`, no limit.
    pub fn new(name: &str) -> RunnerSpec {
        RunnerSpec {
            name: name.to_owned(),
            tags: Vec::new(),
            run_untagged: true,
            concurrent: 1,
            limit: 0,
        }
    }
    pub fn tags(mut self, tags: &[&str]) -> Self {
        self.tags = tags.iter().map(|t| t.to_string()).collect();
        self
    }
    pub fn run_untagged(mut self, yes: bool) -> Self {
        self.run_untagged = yes;
        self
    }
    pub fn concurrent(mut self, n: u32) -> Self {
        self.concurrent = n;
        self
    }
    pub fn limit(mut self, n: u32) -> Self {
        self.limit = n;
        self
    }
}

/// How to start a fleet.
#[derive(Clone, Debug)]
pub struct FleetOptions {
    pub executor: Executor,
    pub runners: Vec<RunnerSpec>,
    pub runner: GetOptions,
    /// How long each runner may take to register and poll for the first time.
    pub ready_timeout: Duration,
    /// Every runner's `check_interval` in seconds (`None`: the runner's default, 3 s).
    pub check_interval: Option<u32>,
}

impl FleetOptions {
    pub fn new(executor: Executor, runners: Vec<RunnerSpec>) -> FleetOptions {
        FleetOptions {
            executor,
            runners,
            runner: GetOptions::default(),
            ready_timeout: Duration::from_secs(90),
            check_interval: None,
        }
    }
}

/// Names become container and volume names next to the run's other names; a bad one fails here,
/// before anything is created.
fn check_specs(specs: &[RunnerSpec]) -> Result<()> {
    if specs.is_empty() {
        bail!("a fleet needs at least one runner");
    }
    for (i, s) in specs.iter().enumerate() {
        let ok = !s.name.is_empty()
            && s.name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !s.name.starts_with('-')
            && !s.name.ends_with('-');
        if !ok {
            bail!(
                "fleet runner name {:?}: use lower-case letters, digits and inner dashes",
                s.name
            );
        }
        if specs[..i].iter().any(|o| o.name == s.name) {
            bail!("fleet runner name {:?} is used twice", s.name);
        }
        if s.concurrent == 0 {
            bail!("fleet runner {:?}: concurrent must be at least 1", s.name);
        }
        // `<name>-register` is the one-shot container of runner `<name>`.
        if let Some(base) = ["-register", "-configure"]
            .iter()
            .find_map(|sfx| s.name.strip_suffix(sfx))
            && specs.iter().any(|o| o.name == base)
        {
            bail!(
                "fleet runner names {:?} and {base:?} would share container names",
                s.name
            );
        }
    }
    Ok(())
}

/// A running fleet. Drop it (or call [`Fleet::shutdown`]) to remove everything it created.
pub struct Fleet {
    started_in: Duration,
    options: FleetOptions,
    core: RunCore,
}

impl Fleet {
    /// Start mock-gitlab, then each runner: a runner on the mock with its tags, a config volume,
    /// `register` with its own `glrt-` token, its container; then wait until every runner polls.
    pub async fn start(opts: FleetOptions) -> Result<Fleet> {
        check_specs(&opts.runners)?;
        let t0 = Instant::now();
        let mut core = RunCore::start(&crate::engine::host(), None, &opts.runner).await?;
        // Launched one after the other (register is a short container each); they come up in
        // parallel while the next is launched, so the polls below mostly wait once.
        for s in &opts.runners {
            core.launch(InstanceSpec {
                name: Some(s.name.clone()),
                executor: opts.executor,
                tags: s.tags.clone(),
                run_untagged: s.run_untagged,
                concurrent: s.concurrent,
                limit: s.limit,
                check_interval: opts.check_interval,
                extras: RunnerExtras::default(),
                on_host: false,
            })
            .await?;
        }
        for r in &core.instances {
            r.wait_polls_beyond(0, opts.ready_timeout).await?;
        }
        Ok(Fleet {
            started_in: t0.elapsed(),
            options: opts,
            core,
        })
    }

    /// The runner called `name`. Panics with the fleet's names if there is none: tests want that.
    pub fn runner(&self, name: &str) -> &RunnerInstance {
        self.try_runner(name).unwrap_or_else(|| {
            panic!(
                "the fleet has no runner {name:?}; runners: {:?}",
                self.options
                    .runners
                    .iter()
                    .map(|r| &r.name)
                    .collect::<Vec<_>>()
            )
        })
    }

    pub fn try_runner(&self, name: &str) -> Option<&RunnerInstance> {
        self.core.instances.iter().find(|r| r.name() == Some(name))
    }

    /// The runner the mock knows by `id`.
    pub fn runner_by_id(&self, id: u64) -> Option<&RunnerInstance> {
        self.core.instances.iter().find(|r| r.id() == id)
    }

    /// Every runner, in the order of [`FleetOptions::runners`].
    pub fn runners(&self) -> &[RunnerInstance] {
        &self.core.instances
    }

    /// A pipeline of fixture project `fixtures/projects/<project>`, as on a lab.
    pub fn pipeline(&self, project: &str) -> PipelineBuilder<'_> {
        self.core.pipeline(project, self.options.executor)
    }

    /// What of `inv` belongs to this fleet (its run label, and what its runners made with GitLab's
    /// labels only).
    pub fn own(&self, inv: &crate::engine::podman::Inventory) -> Resources {
        self.core.own(inv)
    }

    pub fn run_id(&self) -> &str {
        &self.core.run_id
    }
    pub fn options(&self) -> &FleetOptions {
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
    /// Wall time of [`Fleet::start`].
    pub fn started_in(&self) -> Duration {
        self.started_in
    }
    /// `target/runnerlab/<run id>/` (one `runner-<name>.log` per runner after shutdown).
    pub fn out_dir(&self) -> &Path {
        &self.core.out_dir
    }

    /// Remove everything this fleet created and return what was removed. Dropping does the same.
    pub async fn shutdown(self) -> Result<Resources> {
        self.core.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_before_anything_is_created() {
        let ok = [RunnerSpec::new("build"), RunnerSpec::new("test-2")];
        assert!(check_specs(&ok).is_ok());
        for bad in [
            vec![],
            vec![RunnerSpec::new("Build")],
            vec![RunnerSpec::new("a_b")],
            vec![RunnerSpec::new("-a")],
            vec![RunnerSpec::new("a"), RunnerSpec::new("a")],
            vec![RunnerSpec::new("a"), RunnerSpec::new("a-register")],
            vec![RunnerSpec::new("a").concurrent(0)],
        ] {
            assert!(check_specs(&bad).is_err(), "{bad:?}");
        }
    }
}
