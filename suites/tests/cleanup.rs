//! A leftover is a bug: labs remove everything they create on drop, during a panic, and the reaper
//! removes what a killed run left.

use std::process::Stdio;

use runnerlab::podman::{OWNER_LABEL, Podman, RUN_LABEL};
use runnerlab::{Executor, Lab, reaper};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_removes_every_labelled_resource() -> anyhow::Result<()> {
    let lab = Lab::start(Executor::Shell).await?;
    let run_id = lab.run_id().to_owned();
    let podman = lab.podman().clone();
    let before = podman.labelled(Some(&run_id))?;
    assert_eq!(before.containers.len(), 1, "the runner container: {before}");
    assert_eq!(before.volumes.len(), 1, "the config volume: {before}");
    lab.pipeline("hello").run().await?;
    lab.shutdown().await?;
    let after = podman.labelled(Some(&run_id))?;
    assert!(after.is_empty(), "left behind: {after}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_test_leaves_nothing_behind() -> anyhow::Result<()> {
    let podman = Podman::lab()?;
    let handle = tokio::spawn(async move {
        let lab = Lab::start(Executor::Shell).await.expect("lab");
        let run_id = lab.run_id().to_owned();
        // Hand the run id out through the panic message, then unwind with the lab alive.
        panic!("deliberate panic in run {run_id}");
    });
    let err = handle.await.expect_err("the task panicked");
    let msg = err
        .into_panic()
        .downcast::<String>()
        .map(|s| *s)
        .unwrap_or_default();
    let run_id = msg
        .rsplit(' ')
        .next()
        .expect("run id in message")
        .to_owned();
    assert!(run_id.starts_with("rl-"), "{msg}");
    let left = podman.labelled(Some(&run_id))?;
    assert!(left.is_empty(), "left behind after a panic: {left}");
    Ok(())
}

#[tokio::test]
async fn the_reaper_removes_runs_whose_owner_died_and_spares_live_ones() -> anyhow::Result<()> {
    let podman = Podman::lab()?;
    let dead = format!("rl-dead{:04x}", rand_u16());
    let live = format!("rl-live{:04x}", rand_u16());
    // A process that has exited: its pid/start-time pair can never be alive again.
    let mut child = std::process::Command::new("true").spawn()?;
    let pid = child.id();
    let start = runnerlab::podman::process_start_time(pid).unwrap_or(1);
    child.wait()?;
    for (run, owner) in [
        (&dead, format!("{pid}:{start}")),
        (&live, runnerlab::podman::owner_tag()),
    ] {
        let st = podman
            .std_command([
                "volume",
                "create",
                "--label",
                &format!("{RUN_LABEL}={run}"),
                "--label",
                &format!("{OWNER_LABEL}={owner}"),
                &format!("{run}-vol"),
            ])
            .stdout(Stdio::null())
            .status()?;
        assert!(st.success());
    }
    let reaped = reaper::reap_dead(std::slice::from_ref(&podman));
    let live_left = podman.labelled(Some(&live))?;
    // Clean our live run before asserting, so a failure leaves nothing either.
    podman.remove_run(&live)?;
    // Another test's lab start may have reaped the dead run first; either way it must be gone.
    assert!(!reaped.iter().any(|(r, _)| r == &live), "live run reaped");
    assert_eq!(live_left.volumes.len(), 1);
    assert!(podman.labelled(Some(&dead))?.is_empty());
    Ok(())
}

fn rand_u16() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    (std::process::id() as u16) ^ (nanos as u16)
}

/// A killed harness leaves a runner on the host running (reparented to init) in its lab's socket
/// directory: the reaper stops it and removes the directory, as it does for the API service.
#[tokio::test]
async fn the_reaper_stops_the_host_runner_of_a_dead_run() -> anyhow::Result<()> {
    let podman = Podman::lab()?;
    let user = podman.user().expect("the lab store is rootless").clone();
    let dir = user
        .runtime_dir()
        .join("podman")
        .join(format!("rl-dead{:04x}", rand_u16()));
    std::fs::create_dir_all(dir.join("runner"))?;
    let mut gone = std::process::Command::new("true").spawn()?;
    let pid = gone.id();
    let start = runnerlab::podman::process_start_time(pid).unwrap_or(1);
    gone.wait()?;
    std::fs::write(dir.join("owner"), format!("{pid}:{start}"))?;
    // Where `hostrunner` puts the runner's binary; any long-running program stands in for it.
    let bin = dir.join("runner/gitlab-runner");
    std::fs::copy("/bin/sleep", &bin)?;
    let mut runner = std::process::Command::new("setpriv")
        .arg(format!("--reuid={}", user.uid))
        .arg(format!("--regid={}", user.gid))
        .arg("--init-groups")
        .arg(&bin)
        .arg("300")
        .spawn()?;
    // The reaper knows a host runner by its binary's path in argv[0]: until setpriv has exec'd it,
    // the child is the test or setpriv, and nothing says it is the dead run's runner.
    let cmdline = format!("/proc/{}/cmdline", runner.id());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !std::fs::read(&cmdline)
        .unwrap_or_default()
        .starts_with(bin.to_string_lossy().as_bytes())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the stand-in runner did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    reaper::reap_dead(std::slice::from_ref(&podman));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(st) = runner.try_wait()? {
            break Some(st);
        }
        if std::time::Instant::now() > deadline {
            let _ = runner.kill();
            let _ = runner.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let dir_left = dir.exists();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        status.is_some(),
        "the reaper left the dead run's host runner running"
    );
    assert!(!dir_left, "the reaper left {}", dir.display());
    Ok(())
}
