//! Soak runs through the real runner: the verdicts must pass a clean run and catch a leak.
//!
//! The short soaks run in every `cargo nextest run`, next to other tests that use the same rootless
//! store, so they judge only what is the lab's own (`shared_host`). The 100-builds-per-mode soak is
//! the nightly one: `cargo nextest run --profile soak` (it has the host to itself there).

use std::time::Duration;

use runnerlab::Executor;
use runnerlab::soak::{self, SoakOptions, SoakReport};

fn verdict<'a>(r: &'a SoakReport, mode: &str, metric: &str) -> &'a soak::verdict::Verdict {
    r.verdicts
        .iter()
        .find(|v| v.mode == mode && v.metric == metric)
        .unwrap_or_else(|| panic!("no verdict {mode} {metric}: {:#?}", r.verdicts))
}

fn short(executor: Executor, builds: usize) -> SoakOptions {
    let mut o = SoakOptions::new(vec![executor], builds);
    o.shared_host = true;
    o.interval = Duration::from_millis(500);
    o.store_every = 2;
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_soak_passes_and_writes_a_complete_report() -> anyhow::Result<()> {
    let (r, dir) = soak::run(&short(Executor::Custom, 8)).await?;
    let failed: Vec<_> = r.failed_verdicts().filter(|v| v.binding).collect();
    assert!(r.passed, "a clean soak failed: {failed:#?}");
    assert_eq!(r.builds.len(), 8);
    assert!(
        r.builds
            .iter()
            .all(|b| b.status == "success" && b.checksum_ok)
    );
    // Same fixture, same commit: every build's normalised trace is the same.
    assert!(
        r.builds
            .windows(2)
            .all(|w| w[0].trace_sha256 == w[1].trace_sha256)
    );
    assert!(verdict(&r, "custom", "lab.containers").pass);
    assert_eq!(r.modes[0].leftovers_after_cleanup, 0);
    assert!(!r.series.samples.is_empty());
    assert!(
        r.series
            .samples
            .iter()
            .any(|s| s.groups["runner"].procs > 0)
    );

    // The report is complete: JSON that reads back, the tables, and one plot per judged curve.
    let back: SoakReport = serde_json::from_slice(&std::fs::read(dir.join("soak.json"))?)?;
    assert_eq!(back.schema, "runnerlab.soak/1");
    // (serde_json's default float parsing may differ in the last bit: compare what identifies builds.)
    let id = |b: &soak::Build| {
        (
            b.mode.clone(),
            b.n,
            b.status.clone(),
            b.checksum_ok,
            b.trace_sha256.clone(),
        )
    };
    assert_eq!(
        back.builds.iter().map(id).collect::<Vec<_>>(),
        r.builds.iter().map(id).collect::<Vec<_>>()
    );
    let html = std::fs::read_to_string(dir.join("report.html"))?;
    for p in [
        "plots/custom-runner.rss.svg",
        "plots/custom-lab.containers.svg",
        "plots/custom-build.duration.svg",
    ] {
        assert!(html.contains(p), "report.html does not show {p}");
        let svg = std::fs::read_to_string(dir.join(p))?;
        assert!(
            svg.starts_with("<svg") && svg.contains("<circle"),
            "{p} has no points"
        );
    }
    for f in ["report.md", "builds.csv", "samples.csv", "verdicts.csv"] {
        assert!(std::fs::metadata(dir.join(f))?.len() > 0, "{f} is empty");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cleanup_that_leaves_a_container_per_build_is_caught() -> anyhow::Result<()> {
    let mut o = short(Executor::Custom, 6);
    o.leak = true;
    let (r, _) = soak::run(&o).await?;
    assert!(!r.passed, "the leak was not caught: {:#?}", r.verdicts);
    let v = verdict(&r, "custom", "lab.containers");
    assert!(!v.pass && v.binding, "{v:#?}");
    assert!(
        (v.slope_per_build - 1.0).abs() < 0.01,
        "one container per build: {v:#?}"
    );
    assert!(!verdict(&r, "custom", "lab.left_behind").pass);
    // The builds themselves succeed: a leak is not a failed build.
    assert!(r.builds.iter().all(|b| b.status == "success"));
    // And the lab's cleanup still removes what leaked.
    assert_eq!(r.modes[0].leftovers_after_cleanup, 0);
    Ok(())
}

/// Nightly (`--profile soak`), not in every run: once, in CI, the second build after the restart
/// hung with its job "running" until the pipeline timed out. The API service's stderr then went to
/// a pipe nobody read (a service whose writes block there hangs every call behind them); it now
/// goes to `podman-api.log`, and the hang has not recurred in 7 runs, 5 of them under load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "nightly soak profile: the API-restart scenario (see the doc comment)"]
async fn the_runner_builds_on_after_the_podman_api_service_restarts() -> anyhow::Result<()> {
    let mut o = short(Executor::Docker, 4);
    o.restart_api_after = Some(2);
    let (r, _) = soak::run(&o).await?;
    let restart = r.modes[0]
        .api_restart
        .as_ref()
        .expect("the service was restarted");
    assert_eq!(restart.after_build, 2);
    // The lab mounts the socket's directory, so the new socket is reachable: nothing is lost.
    assert_eq!(
        restart.first_good_build,
        Some(3),
        "{restart:#?}\n{:#?}",
        r.builds
    );
    assert_eq!(restart.lost_builds, 0);
    assert!(verdict(&r, "docker", "api_restart.lost_builds").pass);
    assert!(r.builds.iter().all(|b| b.status == "success"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_shows_in_the_builds_and_a_prune_recovers() -> anyhow::Result<()> {
    let d = soak::disk::run(&Default::default(), 1024, 20).await?;
    let n = d
        .first_symptom
        .unwrap_or_else(|| panic!("a 1 GiB store never filled: {d:#?}"));
    // Every build before the symptom succeeded: the disk filled, nothing else went wrong.
    assert!(
        d.builds[..n - 1].iter().all(|b| b.status == "success"),
        "{d:#?}"
    );
    assert!(
        d.freed_mib >= 40.0,
        "the prune freed only {:.0} MiB",
        d.freed_mib
    );
    assert!(d.recovered, "no build succeeded after the prune: {d:#?}");
    Ok(())
}

/// The nightly soak: 100 builds in each mode, with the host to itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "nightly: cargo nextest run --profile soak --run-ignored only"]
async fn soak_100_builds_every_mode() -> anyhow::Result<()> {
    let builds = std::env::var("RUNNERLAB_SOAK_BUILDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let (r, dir) = soak::run(&SoakOptions::new(Executor::ALL.to_vec(), builds)).await?;
    let failed: Vec<_> = r.failed_verdicts().collect();
    assert!(
        r.passed,
        "soak failed ({}): {failed:#?}",
        dir.join("report.html").display()
    );
    Ok(())
}
