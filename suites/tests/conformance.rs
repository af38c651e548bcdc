//! The conformance cases as tests: one lab per case and mode, the same checks `runnerlab
//! conformance` reports, plus a snapshot of each job's normalised trace.

use rstest::rstest;
use runnerlab::conformance;
use runnerlab::{Executor, Lab};

#[rstest]
#[case::hello("hello")]
#[case::exit_code("exit-code")]
#[case::job_timeout("job-timeout")]
#[case::config_survives_restart("config-survives-restart")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case(
    #[case] name: &str,
    #[values(Executor::Shell, Executor::Docker, Executor::Custom)] mode: Executor,
) -> anyhow::Result<()> {
    let case = conformance::case(name).expect("case exists");
    assert!(
        case.modes.contains(&mode),
        "{name} does not apply to {mode}"
    );
    let lab = Lab::start(mode).await?;
    let outcome = (case.run)(&lab).await?;
    if let Some(run) = &outcome.run {
        for job in &run.jobs {
            let view = run.job(&job.name);
            insta::assert_snapshot!(format!("{name}.{mode}.{}", job.name), view.snapshot());
        }
    }
    Ok(())
}
