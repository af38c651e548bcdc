//! The conformance cases as tests: one lab per case and mode, the same checks `runnerlab
//! conformance` reports, plus a snapshot of each job's normalised trace.
//!
//! A case with a known incompatibility in a mode (`Case::known`) must still reproduce it: when it
//! stops reproducing (a fixed runner or Podman) the test fails and says to drop the entry.

use rstest::rstest;
use runnerlab::conformance;
use runnerlab::lab::LabOptions;
use runnerlab::{Executor, Lab};

async fn check(name: &str, mode: Executor) -> anyhow::Result<()> {
    check_on(name, LabOptions::new(mode), mode.name()).await
}

/// Run case `name` on a lab started with `opts`; snapshots are named `<case>.<variant>.<job>`.
async fn check_on(name: &str, opts: LabOptions, variant: &str) -> anyhow::Result<()> {
    let mode = opts.executor;
    let case = conformance::case(name).expect("case exists");
    assert!(
        case.modes.contains(&mode),
        "{name} does not apply to {mode}: list it under the right test"
    );
    let lab = Lab::start_with(opts).await?;
    let result = (case.run)(&lab).await;
    let outcome = match (result, case.known_in(mode)) {
        (Ok(o), None) => o,
        (Err(e), None) => return Err(e),
        (Err(e), Some(reason)) => {
            eprintln!("known finding reproduced: {reason}\n{e:#}");
            return Ok(());
        }
        (Ok(_), Some(reason)) => anyhow::bail!(
            "{name} passed in {mode} although it is listed as a known finding ({reason}); \
             remove the entry from conformance::cases() if the incompatibility is gone"
        ),
    };
    if let Some(f) = &outcome.finding {
        eprintln!("known finding observed: {f}");
    }
    if let (Some(run), true) = (&outcome.run, outcome.snapshot) {
        for job in &run.jobs {
            let view = run.job(&job.name);
            insta::assert_snapshot!(format!("{name}.{variant}.{}", job.name), view.snapshot());
        }
    }
    Ok(())
}

#[rstest]
#[case::hello("hello")]
#[case::exit_code("exit-code")]
#[case::job_timeout("job-timeout")]
#[case::config_survives_restart("config-survives-restart")]
#[case::allow_failure_exit_codes("allow-failure-exit-codes")]
#[case::after_script_after_failure("after-script-after-failure")]
#[case::variables("variables")]
#[case::artifacts_between_stages("artifacts-between-stages")]
#[case::cache_between_jobs("cache-between-jobs")]
#[case::unicode_and_ansi("unicode-and-ansi")]
#[case::large_trace("large-trace")]
#[case::git_strategy_none("git-strategy-none")]
#[case::git_depth("git-depth")]
#[case::rootless_identity("rootless-identity")]
#[case::rootless_from_host("rootless-from-host")]
#[case::script_sections("script-sections")]
#[case::graceful_cancel("graceful-cancel")]
#[case::git_strategy_clone("git-strategy-clone")]
#[case::git_strategy_fetch("git-strategy-fetch")]
#[case::predefined_variables("predefined-variables")]
#[case::before_script_failure("before-script-failure")]
#[case::concurrent_jobs("concurrent-jobs")]
#[case::no_leftovers_after_jobs("no-leftovers-after-jobs")]
#[case::git_submodules("git-submodules")]
#[case::merge_request_pipeline("merge-request-pipeline")]
#[case::git_lfs("git-lfs")]
#[case::gitconfig_home("gitconfig-home")]
#[case::fleet_tag_routing("fleet-tag-routing")]
#[case::podman_build("podman-build")]
#[case::registry_push("registry-push")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mode(
    #[case] name: &str,
    #[values(Executor::Shell, Executor::Docker, Executor::Custom)] mode: Executor,
) -> anyhow::Result<()> {
    check(name, mode).await
}

#[rstest]
#[case::services_by_alias("services-by-alias")]
#[case::redis_service("redis-service")]
#[case::registry_pull("registry-pull")]
#[case::registry_wrong_credentials("registry-wrong-credentials")]
#[case::docker_host_service("docker-host-service")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_modes(
    #[case] name: &str,
    #[values(Executor::Docker, Executor::Custom)] mode: Executor,
) -> anyhow::Result<()> {
    check(name, mode).await
}

#[rstest]
#[case::image_entrypoint("image-entrypoint")]
#[case::services_without_network_per_build("services-without-network-per-build")]
#[case::non_root_job_user("non-root-job-user")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_only(#[case] name: &str) -> anyhow::Result<()> {
    check(name, Executor::Docker).await
}

/// Every case is exercised by one of the tests above, in exactly the modes it declares.
#[test]
fn every_case_is_listed() {
    let src = include_str!("conformance.rs");
    for c in conformance::cases() {
        let listed = format!("(\"{}\")]", c.name);
        assert!(
            src.contains(&listed),
            "case {} is not listed in suites/tests/conformance.rs",
            c.name
        );
        let section = match c.modes {
            m if m == Executor::ALL.as_slice() => "async fn every_mode",
            [Executor::Docker, Executor::Custom] => "async fn container_modes",
            [Executor::Docker] => "async fn docker_only",
            other => panic!("case {} has modes {other:?}: add a test for them", c.name),
        };
        let at = src.find(&listed).unwrap();
        let next_fn = src[at..].find("async fn ").map(|i| at + i).unwrap();
        assert!(
            src[next_fn..].starts_with(section),
            "case {} is listed under the wrong test for its modes",
            c.name
        );
    }
}

/// The docker executor with the runner on the host (as the lab user, `url` reached by name from the
/// host and from job containers) instead of in a container: the other deployment users have.
#[rstest]
#[case::hello("hello")]
#[case::config_survives_restart("config-survives-restart")]
#[case::artifacts_between_stages("artifacts-between-stages")]
#[case::cache_between_jobs("cache-between-jobs")]
#[case::services_by_alias("services-by-alias")]
#[case::git_submodules("git-submodules")]
#[case::no_leftovers_after_jobs("no-leftovers-after-jobs")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_runner_on_host(#[case] name: &str) -> anyhow::Result<()> {
    let mut opts = LabOptions::new(Executor::Docker);
    opts.runner_on_host = true;
    check_on(name, opts, "docker-host").await
}
