//! `mock-gitlab`: a GitLab coordinator mock faithful enough that the real
//! `gitlab-runner` cannot tell it from GitLab.
//!
//! It serves the runner API under `/api/v4` (registration, verify, job
//! request with long polling, job updates, incremental traces), serves git
//! over smart HTTP through the real `git http-backend`, and turns
//! `.gitlab-ci.yml` files of fixture projects into stage-ordered pipelines.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use mock_gitlab::{Config, MockGitlab, RunnerSpec};
//! let mock = MockGitlab::start(Config::default()).await?;
//! let runner = mock.create_runner(RunnerSpec::default());
//! mock.add_project("group/hello", std::path::Path::new("fixtures/projects/hello"))?;
//! let id = mock.create_pipeline("group/hello", "main")?;
//! // ... run `gitlab-runner run-single --url {mock.external_url()} --token {runner.token}` ...
//! let done = mock.wait_pipeline(id, std::time::Duration::from_secs(120)).await?;
//! # Ok(()) }
//! ```

pub mod api;
mod config;
mod fault_plan;
pub mod faults;
pub mod git;
mod instance;
pub mod junit;
pub mod payload;
pub mod pipeline;
mod reqlog;
mod server;
pub mod state;
pub mod trace;
mod web;

pub use config::Config;
pub use faults::{Action, Fault, FaultPlan, FaultPlanError};
pub use instance::MockGitlab;
pub use pipeline::lint::{Diagnostic, LintError};
pub use state::{
    ArtifactRecord, CreatedRunner, JobRecord, JobStatus, MergeRequest, PipelineId, PipelineRecord,
    PipelineStatus, Project, RefKind, RegisteredVia, RequestRecord, RunnerRecord, RunnerSpec,
    Variable,
};
pub use trace::{normalize_trace, trace_checksum};
