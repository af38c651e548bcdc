//! runnerlab: a conformance suite and test harness for GitLab Runner on rootless Podman.
//!
//! The map is in ARCHITECTURE.md. In short: [`engine`] is the Podman installation a lab runs on
//! (stores, API services), [`executor`] says what each executor mode is, [`forge`] gets the real
//! runner and builds images, [`host`] provisions and diagnoses the machine, [`lab`] brings up
//! mock-gitlab plus runners under one run id (one runner, a fleet, a private registry),
//! [`cases`] declares the conformance cases and [`conformance`] runs them, [`report`] writes what
//! they found, [`run`] runs a directory's own pipeline (`runnerlab run`), [`soak`] and [`bench`] measure, [`reaper`] removes what killed runs left, and
//! [`redact`] keeps secrets out of everything.

pub mod bench;
pub mod cases;
pub mod compare;
pub mod conformance;
pub mod engine;
pub mod executor;
pub mod forge;
pub mod host;
pub mod lab;
pub mod paths;
pub mod reaper;
pub mod redact;
pub mod report;
pub mod run;
pub mod soak;

// The paths of the flat layout, kept for code written against them (tests, users' suites).
pub use engine::{podman, service};
pub use executor::hostrunner;
pub use lab::{fleet, registry};

pub use executor::Executor;
pub use fleet::{Fleet, FleetOptions};
pub use lab::{JobView, Lab, LabOptions, PipelineRun, RunnerInstance};
