//! runnerlab: a conformance suite and test harness for GitLab Runner on rootless Podman.
//!
//! The map is in ARCHITECTURE.md. In short: [`forge`] gets the real runner and builds images,
//! [`host`] provisions and diagnoses the machine, [`lab`] brings up mock-gitlab plus a runner
//! container under one run id, [`fleet`] several runner containers against one mock,
//! [`conformance`] holds the cases, [`report`] writes what they found, [`reaper`] removes what
//! killed runs left, [`registry`] runs a private registry per lab, and [`redact`] keeps secrets out
//! of everything.

pub mod bench;
pub mod bench_pinp;
pub mod conformance;
pub mod engine;
pub mod fleet;
pub mod forge;
pub mod host;
pub mod hostrunner;
pub mod lab;
pub mod loopstore;
pub mod paths;
pub mod podman;
pub mod reaper;
pub mod redact;
pub mod registry;
pub mod report;
pub mod sampler;
pub mod service;
pub mod soak;

pub use fleet::{Fleet, FleetOptions};
pub use lab::{Executor, JobView, Lab, LabOptions, PipelineRun, RunnerInstance};
