//! Pipelines on a lab: start one, wait for it, read its jobs, traces and snapshots.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use mock_gitlab::{JobRecord, PipelineRecord};

use crate::executor::Executor;
use crate::paths;
use crate::redact::{self, scrub};

use super::core::RunCore;

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
    pub(super) core: &'a RunCore,
    pub(super) executor: Executor,
    pub(super) project: String,
    pub(super) git_ref: String,
    pub(super) merge_request: Option<u64>,
    pub(super) timeout: Duration,
    pub(super) variables: Vec<mock_gitlab::Variable>,
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
