//! The job payload (`POST /jobs/request` → 201), as the runner's `spec.Job`
//! expects it. See runner-protocol.md §4.
//!
//! Type traps this module guards against (each makes the real runner drop the
//! job silently): integers must be JSON integers (all numeric fields here are
//! integer types, never `f64`); `run`, `inputs` and `secrets` are never
//! emitted (there are no such fields); `pull_policy` is always an array;
//! `project_jobs_running_on_instance_runners_count` is a string.

mod build;
mod job;
mod variables;

pub use build::{PayloadContext, artifact_entries, build, cache_entries, refspecs};
pub use job::{
    ArtifactsFile, DEFAULT_GIT_DEPTH, Dependency, FAILURE_REASONS, Features, GitInfo, Image,
    JobInfo, JobPayload, JobVariable, RunnerInfo, SERVER_REVISION, SERVER_VERSION, Step,
};
pub use variables::{expand_references, ref_variables, slugify};
