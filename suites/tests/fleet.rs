//! Fleets (issue 7): several runner containers, one config volume each, registered with their own
//! tokens and tags against ONE mock-gitlab — the seed's `runner-1-config` / `runner-2-config`
//! layout. Everything is asserted on the mock's records (which runner took which job, when).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use runnerlab::Executor;
use runnerlab::fleet::{Fleet, FleetOptions, RunnerSpec};
use runnerlab::podman::{OWNER_LABEL, RUN_LABEL};

/// `build` takes build-tagged jobs only; `test` takes test-tagged and untagged jobs.
fn build_and_test() -> Vec<RunnerSpec> {
    vec![
        RunnerSpec::new("build")
            .tags(&["build"])
            .run_untagged(false),
        RunnerSpec::new("test").tags(&["test"]).run_untagged(true),
    ]
}

/// The most jobs that were in a runner's hands at once: each job counts from dispatch (the runner
/// holds a slot from its request) to its final update.
fn max_overlap(spans: &[(Instant, Instant)]) -> usize {
    let mut ev: Vec<(Instant, i32)> = spans
        .iter()
        .flat_map(|(a, b)| [(*a, 1), (*b, -1)])
        .collect();
    // At equal times an end comes first: a job ending as another starts is no overlap.
    ev.sort_by(|x, y| x.0.cmp(&y.0).then(x.1.cmp(&y.1)));
    let (mut now, mut max) = (0i32, 0i32);
    for (_, d) in ev {
        now += d;
        max = max.max(now);
    }
    max as usize
}

/// Poll the mock (deadline) until `cond` holds for the pipeline's jobs.
async fn wait_jobs(
    fleet: &Fleet,
    what: &str,
    timeout: Duration,
    cond: impl Fn(&[mock_gitlab::JobRecord]) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let jobs = fleet.mock().jobs();
        if cond(&jobs) {
            return Ok(());
        }
        if Instant::now() > deadline {
            let states: Vec<String> = jobs
                .iter()
                .map(|j| format!("{} {} runner {:?}", j.name, j.status, j.runner_id))
                .collect();
            anyhow::bail!("{what} not within {timeout:?}; jobs: {}", states.join(", "));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn job<'a>(jobs: &'a [mock_gitlab::JobRecord], name: &str) -> Option<&'a mock_gitlab::JobRecord> {
    jobs.iter().find(|j| j.name == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_runner_lists_exactly_its_own_registration() -> anyhow::Result<()> {
    let fleet = Fleet::start(FleetOptions::new(Executor::Shell, build_and_test())).await?;
    let run = fleet.run_id().to_owned();
    let names: Vec<String> = fleet
        .runners()
        .iter()
        .map(|r| r.container().to_owned())
        .collect();
    assert_eq!(names, [format!("{run}-build"), format!("{run}-test")]);
    for r in fleet.runners() {
        let list = r.exec(&["list"]).await?;
        let entries: Vec<&str> = list.lines().filter(|l| l.contains("Executor=")).collect();
        assert_eq!(
            entries.len(),
            1,
            "{}: list shows {entries:?}\n{list}",
            r.container()
        );
        assert!(
            entries[0].trim_start().starts_with(r.container()),
            "{}: {}",
            r.container(),
            entries[0]
        );
        assert!(entries[0].contains("Executor=shell"), "{}", entries[0]);
        for other in names.iter().filter(|n| *n != r.container()) {
            assert!(
                !list.contains(other.as_str()),
                "{other} in {}'s list",
                r.container()
            );
        }
        assert!(
            !list.contains("glrt-") || list.contains("glrt-[MASKED]"),
            "{list}"
        );
    }
    // Two runners on the one mock, with the tags they were created with, each verified once by
    // its own `register` and polling with its own token.
    let recs = fleet.mock().runners();
    assert_eq!(recs.len(), 2);
    for (r, tags, untagged) in [("build", "build", false), ("test", "test", true)] {
        let rec = fleet.runner(r).record().expect("record");
        assert_eq!(rec.description, format!("{run}-{r}"));
        assert_eq!(rec.tags, [tags]);
        assert_eq!(rec.run_untagged, untagged);
        assert_eq!(rec.verify_count, 1, "{r}");
        assert!(rec.poll_count > 0, "{r}");
        assert_eq!(rec.executor.as_deref(), Some("shell"));
    }
    // One container and one config volume per runner, all labelled with the run and its owner
    // (what the reaper judges a killed fleet by).
    let podman = fleet.podman().clone();
    let mine = podman.labelled(Some(&run))?;
    let set = |v: &[String]| v.iter().cloned().collect::<BTreeSet<_>>();
    assert_eq!(set(&mine.containers), set(&names));
    assert_eq!(
        set(&mine.volumes),
        set(&[format!("{run}-build-config"), format!("{run}-test-config")])
    );
    let owner = runnerlab::podman::owner_tag();
    for (kind, labels, name) in mine
        .containers
        .iter()
        .map(|c| ("container", ".Config.Labels", c))
        .chain(mine.volumes.iter().map(|v| ("volume", ".Labels", v)))
    {
        let fmt = format!("{{{{index {labels} \"{OWNER_LABEL}\"}}}}");
        let got = podman
            .text([kind, "inspect", "--format", &fmt, name])
            .await?;
        assert_eq!(got, owner, "{kind} {name}");
    }
    fleet.shutdown().await?;
    let left = podman.matching(&format!("{RUN_LABEL}={run}"))?;
    assert!(left.is_empty(), "left behind: {left}");
    Ok(())
}

/// Docker mode too: each runner with its own API service; what the runners create with GitLab's
/// labels only (cache volumes) goes with the fleet.
#[rstest::rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_land_on_the_runner_their_tags_name(
    #[values(Executor::Shell, Executor::Docker)] mode: Executor,
) -> anyhow::Result<()> {
    let fleet = Fleet::start(FleetOptions::new(mode, build_and_test())).await?;
    let run = fleet.pipeline("fleet-routing").run().await?;
    assert_eq!(run.status(), "success");
    let (build, test) = (fleet.runner("build").id(), fleet.runner("test").id());
    for (name, want) in [
        ("compile", build),
        ("package", build),
        ("unit", test),
        ("integration", test),
        // Untagged: only `test` has run_untagged.
        ("lint", test),
        ("docs", test),
    ] {
        let j = run.job(name);
        assert_eq!(j.status(), "success", "{name}: {}", j.trace());
        assert_eq!(
            j.job.runner_id,
            Some(want),
            "{name} ran on {:?}",
            j.job
                .runner_id
                .and_then(|id| fleet.runner_by_id(id))
                .map(|r| r.container())
        );
    }
    let took = |r: &str| -> BTreeSet<String> {
        fleet.runner(r).jobs().into_iter().map(|j| j.name).collect()
    };
    assert_eq!(
        took("build"),
        BTreeSet::from(["compile".into(), "package".into()])
    );
    assert_eq!(
        took("test"),
        BTreeSet::from([
            "docs".into(),
            "integration".into(),
            "lint".into(),
            "unit".into()
        ])
    );
    let podman = fleet.podman().clone();
    let mine = fleet.own(&podman.inventory().await?);
    if mode == Executor::Docker {
        // Two config volumes plus the build and cache volumes the docker executor made.
        assert!(mine.volumes.len() > 2, "{mine}");
    }
    fleet.shutdown().await?;
    let after = podman.inventory().await?;
    let names = |v: &[(String, std::collections::BTreeMap<String, String>)]| -> BTreeSet<String> {
        v.iter().map(|(n, _)| n.clone()).collect()
    };
    let (ctrs, vols) = (names(&after.containers), names(&after.volumes));
    let left: Vec<&String> = mine
        .containers
        .iter()
        .filter(|c| ctrs.contains(*c))
        .chain(mine.volumes.iter().filter(|v| vols.contains(*v)))
        .collect();
    assert!(left.is_empty(), "left after shutdown: {left:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_and_limit_cap_a_burst_of_twenty_jobs() -> anyhow::Result<()> {
    // `conc` is capped by its global `concurrent`, `lim` by its `[[runners]] limit` under a larger
    // `concurrent`: both at 2.
    let fleet = Fleet::start(FleetOptions::new(
        Executor::Shell,
        vec![
            RunnerSpec::new("conc")
                .tags(&["conc"])
                .run_untagged(false)
                .concurrent(2),
            RunnerSpec::new("lim")
                .tags(&["lim"])
                .run_untagged(false)
                .concurrent(4)
                .limit(2),
        ],
    ))
    .await?;
    let run = fleet
        .pipeline("fleet-burst")
        .timeout(Duration::from_secs(300))
        .run()
        .await?;
    assert_eq!(run.jobs.len(), 20);
    assert_eq!(run.status(), "success");
    let mut report = Vec::new();
    for name in ["conc", "lim"] {
        let r = fleet.runner(name);
        let jobs: Vec<_> = run
            .jobs
            .iter()
            .filter(|j| j.name.starts_with(&format!("{name} ")))
            .collect();
        assert_eq!(jobs.len(), 10);
        let mut spans = Vec::new();
        for j in &jobs {
            assert_eq!(j.runner_id, Some(r.id()), "{} ran elsewhere", j.name);
            let (Some(a), Some(b)) = (j.dispatched_at, j.finished_at) else {
                panic!("{}: no dispatch or finish time recorded", j.name);
            };
            spans.push((a, b));
        }
        let max = max_overlap(&spans);
        report.push(format!("{name}: at most {max} at once"));
        assert!(max <= 2, "{name} ran {max} jobs at once (cap 2)");
        assert_eq!(
            max, 2,
            "{name} never ran two jobs at once: the cap was not reached"
        );
    }
    eprintln!("{}", report.join("; "));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_stopped_mid_pipeline_resumes_from_its_volume_without_registering_again()
-> anyhow::Result<()> {
    let fleet = Fleet::start(FleetOptions::new(Executor::Shell, build_and_test())).await?;
    let (build, test) = (fleet.runner("build"), fleet.runner("test"));
    let started = fleet
        .pipeline("fleet-restart")
        .timeout(Duration::from_secs(240))
        .spawn()?;
    // `first` done by build, `gate` holding the pipeline on test.
    wait_jobs(
        &fleet,
        "first done and gate running",
        Duration::from_secs(120),
        |js| {
            job(js, "first").is_some_and(|j| j.status.as_str() == "success")
                && job(js, "gate").is_some_and(|j| j.status.as_str() == "running")
        },
    )
    .await?;
    let registrations = |m: &mock_gitlab::MockGitlab| -> (usize, usize) {
        let r = m.requests();
        let n = |p: &str| {
            r.iter()
                .filter(|q| q.method == "POST" && q.path == p)
                .count()
        };
        (n("/api/v4/runners"), n("/api/v4/runners/verify"))
    };
    let runners_before = fleet.mock().runners().len();
    let verify_before = build.record().expect("record").verify_count;
    let requests_before = registrations(fleet.mock());
    let config_hash = |r: &runnerlab::RunnerInstance| {
        let podman = fleet.podman().clone();
        let ctr = r.container().to_owned();
        async move {
            podman
                .text(["exec", &ctr, "sha256sum", "/etc/gitlab-runner/config.toml"])
                .await
        }
    };
    let hash_before = config_hash(build).await?;

    build.stop().await?;
    // Release the gate: stage two's `after` is queued while its only runner is down.
    fleet
        .podman()
        .run(["exec", test.container(), "touch", "/tmp/fleet-gate"])
        .await?;
    wait_jobs(&fleet, "after pending", Duration::from_secs(60), |js| {
        job(js, "after").is_some_and(|j| j.status.as_str() == "pending")
    })
    .await?;
    assert_eq!(
        fleet.mock().pipeline(started.id()).status.as_str(),
        "running",
        "the restart must happen mid-pipeline"
    );
    build.start().await?;
    let run = started.wait().await?;
    assert_eq!(run.status(), "success");
    let after = run.job("after");
    assert_eq!(
        after.job.runner_id,
        Some(build.id()),
        "the same runner id takes stage two"
    );
    assert_eq!(run.job("first").job.runner_id, Some(build.id()));
    assert_eq!(run.job("gate").job.runner_id, Some(test.id()));
    // No new runner, no registration, no verify: the container came back on its volume's config.
    assert_eq!(fleet.mock().runners().len(), runners_before);
    assert_eq!(build.record().expect("record").verify_count, verify_before);
    assert_eq!(registrations(fleet.mock()), requests_before);
    assert_eq!(config_hash(build).await?, hash_before);
    let list = build.exec(&["list"]).await?;
    assert_eq!(
        list.lines().filter(|l| l.contains("Executor=")).count(),
        1,
        "{list}"
    );
    assert!(list.contains(build.container()), "{list}");
    Ok(())
}

#[test]
fn overlap_counts_jobs_in_hand_at_once() {
    let t = Instant::now();
    let s = |a: u64, b: u64| (t + Duration::from_secs(a), t + Duration::from_secs(b));
    assert_eq!(max_overlap(&[]), 0);
    assert_eq!(max_overlap(&[s(0, 1), s(1, 2), s(2, 3)]), 1);
    assert_eq!(max_overlap(&[s(0, 3), s(1, 2), s(1, 4)]), 3);
    assert_eq!(max_overlap(&[s(0, 2), s(1, 3), s(2, 4)]), 2);
}

/// The Lab is a run with one runner instance; its names and API stay what they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lab_is_still_one_runner_with_its_old_names() -> anyhow::Result<()> {
    let lab = runnerlab::Lab::start(Executor::Shell).await?;
    let run = lab.run_id().to_owned();
    assert_eq!(lab.runner_container(), format!("{run}-runner"));
    assert_eq!(lab.config_volume(), format!("{run}-config"));
    assert_eq!(lab.instance().id(), lab.runner_id());
    let hello = lab.pipeline("hello").run().await?;
    assert_eq!(hello.job("hello").status(), "success");
    assert_eq!(hello.job("hello").job.runner_id, Some(lab.runner_id()));
    let out = lab.out_dir().to_owned();
    let podman = lab.podman().clone();
    let removed = lab.shutdown().await?;
    // The runner container goes first (`rm -f`), before the listing of what the run label finds.
    assert_eq!(removed.volumes, [format!("{run}-config")]);
    assert!(out.join("runner.log").is_file());
    assert!(podman.labelled(Some(&run))?.is_empty());
    Ok(())
}

const CHILD_ENV: &str = "RUNNERLAB_FLEET_CHILD";

/// Not a test on its own: the process `a_killed_fleet_is_reaped` starts (and kills). It starts a
/// docker-mode fleet (two runners, two API services), prints the run id and waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of a_killed_fleet_is_reaped"]
async fn fleet_child_waiting_to_be_killed() -> anyhow::Result<()> {
    if std::env::var_os(CHILD_ENV).is_none() {
        return Ok(());
    }
    let fleet = Fleet::start(FleetOptions::new(
        Executor::Docker,
        vec![RunnerSpec::new("a"), RunnerSpec::new("b")],
    ))
    .await?;
    println!("FLEET-RUN {}", fleet.run_id());
    std::future::pending::<()>().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_fleet_is_reaped_like_a_killed_lab() -> anyhow::Result<()> {
    use std::io::BufRead;
    let podman = runnerlab::podman::Podman::lab()?;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            "fleet_child_waiting_to_be_killed",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_ENV, "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(run) = line.strip_prefix("FLEET-RUN ") {
                let _ = tx.send(run.to_owned());
            }
        }
    });
    let run = rx.recv_timeout(Duration::from_secs(240));
    // SIGKILL: no Drop, no guard; containers, volumes, API services and socket dirs stay behind.
    child.kill()?;
    child.wait()?;
    let run = run.map_err(|_| anyhow::anyhow!("the child fleet did not start within 240 s"))?;
    let user = podman.user().expect("rootless").clone();
    let socket_dirs: Vec<_> = ["a", "b"]
        .iter()
        .map(|n| user.runtime_dir().join(format!("podman/{run}-{n}")))
        .collect();
    runnerlab::reaper::reap_dead(std::slice::from_ref(&podman));
    // Another test's lab start may have reaped it first; either way it must be gone.
    let left = podman.labelled(Some(&run))?;
    assert!(left.is_empty(), "left after reaping: {left}");
    for d in &socket_dirs {
        assert!(!d.exists(), "{} left after reaping", d.display());
    }
    let services = std::fs::read_dir("/proc")?
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|c| String::from_utf8_lossy(c).contains(&format!("podman/{run}-")))
        .count();
    assert_eq!(services, 0, "API services of the killed fleet still run");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_fleet_test_leaves_nothing_behind() -> anyhow::Result<()> {
    let podman = runnerlab::podman::Podman::lab()?;
    let handle = tokio::spawn(async move {
        let fleet = Fleet::start(FleetOptions::new(Executor::Shell, build_and_test()))
            .await
            .expect("fleet");
        // Hand the run id out through the panic message, then unwind with the fleet alive.
        panic!("deliberate panic in run {}", fleet.run_id());
    });
    let msg = handle
        .await
        .expect_err("the task panicked")
        .into_panic()
        .downcast::<String>()
        .map(|s| *s)
        .unwrap_or_default();
    let run = msg.rsplit(' ').next().unwrap_or_default().to_owned();
    assert!(run.starts_with("rl-"), "{msg}");
    let left = podman.labelled(Some(&run))?;
    assert!(left.is_empty(), "left behind after a panic: {left}");
    Ok(())
}
