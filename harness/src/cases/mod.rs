//! Conformance cases as data: what a user upgrading gitlab-runner or Podman cares about, each a
//! pipeline run on a lab plus the checks that say it behaved. A [`Case`] names the executor modes it
//! applies to, why it does not apply to the others, and the known incompatibilities it reproduces;
//! the family files hold each case's declaration next to the async fn that runs it:
//!
//! - `basics`: scripts, exit codes, timeouts, cancel, variables, traces, the runner's own life;
//! - `git`: getting the sources (strategies, depth, submodules, merge requests, LFS);
//! - `artifacts_cache`: artifacts between stages, the cache between jobs;
//! - `services`: service containers, the job's image entrypoint and user;
//! - `pinp_registry`: `podman build` in a job, a private registry;
//! - `fleet`: several runners against one coordinator;
//! - `seed`: the seed project's troubleshooting entries.
//!
//! The `runnerlab conformance` command (see [`crate::conformance`]) and the test suites run the same
//! cases, so a report and a `cargo nextest` run cannot disagree.

use std::future::Future;
use std::pin::Pin;

use anyhow::Result;

use crate::lab::{Executor, Lab, PipelineRun};

mod artifacts_cache;
mod basics;
mod fleet;
mod git;
mod pinp_registry;
mod seed;
mod services;
mod support;

pub use pinp_registry::pinp_extras;
pub use support::{ensure_trace_has, job_output, step_script_on};

/// What a case produced.
#[derive(Debug)]
pub struct Outcome {
    /// The pipeline, when the case ran one.
    pub run: Option<PipelineRun>,
    /// One line for the report when the case has something to say beyond pass/fail.
    pub note: Option<String>,
    /// A known incompatibility the case observed while what it asserts still held: reported as
    /// `known-finding`, with this text.
    pub finding: Option<String>,
    /// Whether the jobs' traces are stable enough to snapshot (not when jobs race each other).
    pub snapshot: bool,
}

/// How a case runs on a lab.
pub type CaseFn = for<'a> fn(&'a Lab) -> Pin<Box<dyn Future<Output = Result<Outcome>> + 'a>>;

/// A conformance case.
pub struct Case {
    pub name: &'static str,
    pub about: &'static str,
    /// The executor modes the case applies to.
    pub modes: &'static [Executor],
    /// Known incompatibilities: in these modes a failure of the case is reported as a
    /// `known-finding` with the reason, not as a failure.
    pub known: &'static [(Executor, &'static str)],
    /// Why the case does not apply to a mode outside `modes`, where there is more to say than
    /// "not applicable to the <mode> executor".
    pub not_applicable: &'static [(Executor, &'static str)],
    pub run: CaseFn,
}

impl Case {
    /// The known incompatibility of this case in `mode`, if any.
    pub fn known_in(&self, mode: Executor) -> Option<&'static str> {
        self.known.iter().find(|(m, _)| *m == mode).map(|(_, r)| *r)
    }

    /// Why the case does not run in `mode` (the report's detail for a skipped case).
    pub fn skip_reason(&self, mode: Executor) -> String {
        match self.not_applicable.iter().find(|(m, _)| *m == mode) {
            Some((_, reason)) => (*reason).into(),
            None => skip_reason(mode),
        }
    }
}

/// The skip reason of a case with nothing particular to say about `mode`.
fn skip_reason(mode: Executor) -> String {
    format!("not applicable to the {mode} executor")
}

const ALL: &[Executor] = &Executor::ALL;
const CONTAINERS: &[Executor] = &[Executor::Docker, Executor::Custom];
/// Features of the docker executor the custom executor's interface does not carry (entrypoint,
/// job user, feature flags of the docker executor).
const DOCKER: &[Executor] = &[Executor::Docker];

/// Every case, in report order.
pub fn cases() -> Vec<Case> {
    vec![
        basics::HELLO,
        basics::EXIT_CODE,
        basics::JOB_TIMEOUT,
        basics::CONFIG_SURVIVES_RESTART,
        basics::ALLOW_FAILURE_EXIT_CODES,
        basics::AFTER_SCRIPT_AFTER_FAILURE,
        basics::VARIABLES,
        artifacts_cache::ARTIFACTS_BETWEEN_STAGES,
        artifacts_cache::CACHE_BETWEEN_JOBS,
        basics::UNICODE_AND_ANSI,
        basics::LARGE_TRACE,
        git::GIT_STRATEGY_NONE,
        git::GIT_DEPTH,
        seed::ROOTLESS_IDENTITY,
        seed::ROOTLESS_FROM_HOST,
        basics::SCRIPT_SECTIONS,
        basics::GRACEFUL_CANCEL,
        services::SERVICES_BY_ALIAS,
        services::REDIS_SERVICE,
        git::GIT_STRATEGY_CLONE,
        git::GIT_STRATEGY_FETCH,
        basics::PREDEFINED_VARIABLES,
        basics::BEFORE_SCRIPT_FAILURE,
        services::IMAGE_ENTRYPOINT,
        services::SERVICES_WITHOUT_NETWORK_PER_BUILD,
        services::NON_ROOT_JOB_USER,
        basics::CONCURRENT_JOBS,
        basics::NO_LEFTOVERS_AFTER_JOBS,
        git::GIT_SUBMODULES,
        git::MERGE_REQUEST_PIPELINE,
        git::GIT_LFS,
        seed::GITCONFIG_HOME,
        fleet::FLEET_TAG_ROUTING,
        pinp_registry::PODMAN_BUILD,
        services::DOCKER_HOST_SERVICE,
        pinp_registry::REGISTRY_PULL,
        pinp_registry::REGISTRY_WRONG_CREDENTIALS,
        pinp_registry::REGISTRY_PUSH,
    ]
}

/// Why `case` does not run in `mode` (the report's detail for a skipped case).
pub fn not_applicable(case: &str, mode: Executor) -> String {
    self::case(case).map_or_else(|| skip_reason(mode), |c| c.skip_reason(mode))
}

/// Look a case up by name.
pub fn case(name: &str) -> Option<Case> {
    cases().into_iter().find(|c| c.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_reasons_fit_the_modes() {
        let all = cases();
        for (i, c) in all.iter().enumerate() {
            assert!(
                all[..i].iter().all(|o| o.name != c.name),
                "{} twice",
                c.name
            );
            assert!(
                c.known.iter().all(|(m, _)| c.modes.contains(m)),
                "{}: a known finding in a mode it does not run in",
                c.name
            );
            assert!(
                c.not_applicable.iter().all(|(m, _)| !c.modes.contains(m)),
                "{}: a skip reason for a mode it runs in",
                c.name
            );
        }
    }

    #[test]
    fn skip_reasons() {
        assert_eq!(
            not_applicable("registry-pull", Executor::Shell),
            "the shell executor ignores `image:` and DOCKER_AUTH_CONFIG: jobs run in the runner's \
             container (registry-push covers the registry in shell mode)"
        );
        assert_eq!(
            not_applicable("registry-wrong-credentials", Executor::Shell),
            not_applicable("registry-pull", Executor::Shell)
        );
        assert_eq!(
            not_applicable("image-entrypoint", Executor::Custom),
            "not applicable to the custom executor"
        );
        assert_eq!(
            not_applicable("no-such-case", Executor::Shell),
            "not applicable to the shell executor"
        );
    }
}
