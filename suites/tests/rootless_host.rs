//! Rootless, proved from the host: while a job runs, every process of the lab — the runner, the
//! Podman API service, conmon, the job, helpers, services, and in Podman-in-Podman the container
//! the job starts — is read from `/proc/<pid>/status` on the host, and none has uid or gid 0 in
//! any of its four fields. `rootless-identity` reads the uid map from inside; this reads it from
//! outside. See `runnerlab::lab::host_identity` for how the lab's processes are found.

use std::time::Instant;

use rstest::rstest;
use runnerlab::conformance::pinp_extras;
use runnerlab::lab::LabOptions;
use runnerlab::lab::host_identity::{self, Expect, Proof};
use runnerlab::{Executor, Lab};

/// Print the table (shown on failure and with `--no-capture`), check the lab's own leftovers.
async fn finish(lab: Lab, proof: &Proof, what: &str, t0: Instant) -> anyhow::Result<()> {
    eprintln!(
        "{what}: {}\ncontainers seen over the job: {:?}\nthe lab's processes while the job held:\n{}",
        proof.summary(),
        proof.containers_seen(),
        proof.table()
    );
    let run_id = lab.run_id().to_owned();
    let podman = lab.podman().clone();
    lab.shutdown().await?;
    let left = podman.labelled(Some(&run_id))?;
    assert!(left.is_empty(), "left behind: {left}");
    eprintln!("{what}: {:.1}s", t0.elapsed().as_secs_f64());
    Ok(())
}

#[rstest]
#[case::shell(Executor::Shell)]
#[case::docker(Executor::Docker)]
#[case::custom(Executor::Custom)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_process_of_a_running_job_is_host_root(#[case] mode: Executor) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let lab = Lab::start(mode).await?;
    let expect = Expect {
        // The shell executor ignores `services:`.
        service: mode != Executor::Shell,
        inner_container: false,
    };
    let proof = host_identity::prove(&lab, "host-identity", "hold", expect).await?;
    assert!(proof.service.is_some() == expect.service);
    if mode == Executor::Docker {
        // The sampling thread met the docker executor's helper (sources, then cleanup) as well.
        let seen = proof.containers_seen();
        assert!(
            seen.iter().any(|c| c.ends_with("-predefined")),
            "no helper container among {seen:?}"
        );
    }
    finish(lab, &proof, mode.name(), t0).await
}

/// Podman in Podman (docker mode with the `podman-build` flags): the container the job's own podman
/// runs is a process on the host too, two pid namespaces down, and it is not root there either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_process_of_a_container_inside_a_job_is_host_root() -> anyhow::Result<()> {
    let t0 = Instant::now();
    let mode = Executor::Docker;
    let probe = LabOptions::new(mode);
    let runner = runnerlab::forge::runner::get(&probe.runner).await?;
    let podman = runnerlab::podman::Podman::lab()?;
    let stores = runnerlab::engine::stores(podman.engine())?;
    let images = runnerlab::forge::images::ensure(&runner, &stores).await?;
    let pinp = runnerlab::forge::pinp::ensure(&runner, &images, &podman).await?;
    let (extras, _) = pinp_extras(mode, &pinp)?;
    let lab = Lab::start_with(LabOptions { extras, ..probe }).await?;
    let expect = Expect {
        service: false,
        inner_container: true,
    };
    let proof = host_identity::prove(&lab, "host-identity-pinp", "inner-hold", expect).await?;
    finish(lab, &proof, "docker, podman in podman", t0).await
}
