//! The `trixie` engine (Podman 5.4 from Debian 13 in the harness's own root filesystem) end to end,
//! next to the host's Podman: images copied in, rootful and rootless runs, an API service answering
//! the host through bollard, the host's loopback from rootless containers, and nothing left after
//! stop. Skips (saying how to install it) when the engine is not installed;
//! `RUNNERLAB_INSTALL_ENGINES=1` installs it first (debootstrap, about a minute).

use std::ffi::OsString;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use runnerlab::engine::trixie::{self, EngineInstall, TrixieEngine};
use runnerlab::podman::{LabUser, Podman, RUN_LABEL, is_root};
use tokio::io::AsyncWriteExt;

const BASE: &str = "localhost/runnerlab/base:latest";

fn run_id() -> String {
    format!("rl-{:08x}", rand_u32())
}

fn rand_u32() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    t.subsec_nanos() ^ std::process::id().rotate_left(16)
}

/// The engine when installed (or installable on request), else `None` after saying how.
fn engine_or_skip() -> Result<Option<EngineInstall>> {
    if !is_root() {
        eprintln!("SKIP: the trixie engine tests need root (mount namespaces)");
        return Ok(None);
    }
    if let Some(i) = EngineInstall::find()? {
        return Ok(Some(i));
    }
    if std::env::var_os("RUNNERLAB_INSTALL_ENGINES").is_some() {
        let t = Instant::now();
        let i = trixie::install(|m| eprintln!("install: {m}"))?;
        eprintln!(
            "FIGURE install cold: {:.1} s ({})",
            t.elapsed().as_secs_f64(),
            i.dir.display()
        );
        return Ok(Some(i));
    }
    eprintln!(
        "SKIP: the trixie engine is not installed.\n  install: cargo lab setup --engine trixie  \
         (or run with RUNNERLAB_INSTALL_ENGINES=1)"
    );
    Ok(None)
}

/// Tests of one engine holder must not overlap (each asserts the holder stops at the end).
fn exclusive(install: &EngineInstall) -> Result<std::fs::File> {
    let f = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(install.dir.join("tests.lock"))?;
    f.lock()?;
    Ok(f)
}

async fn out(mut c: tokio::process::Command, what: &str) -> Result<String> {
    let o = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .with_context(|| format!("starting {what}"))?;
    if !o.status.success() {
        bail!(
            "{what} failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout).trim().to_owned())
}

/// `podman save | podman load` from the host engine's store into one of the trixie engine's.
async fn copy_in(
    from: &Podman,
    engine: &TrixieEngine,
    to: Option<&LabUser>,
    image: &str,
) -> Result<()> {
    let mut save = from
        .command(["save", "--format", "oci-archive", image])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout: Stdio = save.stdout.take().expect("piped").try_into()?;
    let load = engine
        .command(to, ["load"])
        .stdin(stdout)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await?;
    let saved = save.wait_with_output().await?;
    ensure!(
        saved.status.success() && load.status.success(),
        "copying {image} into the trixie engine: {} {}",
        String::from_utf8_lossy(&saved.stderr).trim(),
        String::from_utf8_lossy(&load.stderr).trim()
    );
    Ok(())
}

/// An image to test with: the lab's base image from the host engine, or (no base yet) the engine's
/// own rootfs imported as an image.
async fn bring_image(engine: &TrixieEngine, user: &LabUser) -> Result<String> {
    let host = Podman::lab()?;
    if host.image_exists(BASE).await {
        for who in [None, Some(user)] {
            copy_in(&host, engine, who, BASE).await?;
        }
        return Ok(BASE.to_owned());
    }
    eprintln!("no {BASE} in the host store yet: importing the engine's rootfs as an image");
    let tag = "localhost/runnerlab/trixie-rootfs:latest";
    for who in [None, Some(user)] {
        let tar = std::process::Command::new("tar")
            .args(["--numeric-owner", "-C"])
            .arg(engine.install().rootfs())
            .args(["--exclude=./var/lib/runnerlab", "-cf", "-", "."])
            .stdout(Stdio::piped())
            .spawn()?;
        let st = engine
            .std_command(who, ["import", "-", tag])
            .stdin(tar.stdout.expect("piped"))
            .stdout(Stdio::null())
            .status()?;
        ensure!(st.success(), "podman import of the rootfs failed");
    }
    Ok(tag.to_owned())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn mountinfo_mentions(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

fn has_netavark_table(ruleset: &str) -> bool {
    ruleset.lines().any(|l| l.trim() == "table inet netavark {")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trixie_engine_end_to_end() -> Result<()> {
    let Some(install) = engine_or_skip()? else {
        return Ok(());
    };
    let _x = exclusive(&install)?;
    let user = LabUser::lookup()?;
    let host = Podman::lab()?;
    let run = run_id();
    let nft_before = install.nft_ruleset()?;
    let host_base_before = host
        .text(["image", "inspect", "--format", "{{.Id}}", BASE])
        .await
        .ok();
    eprintln!("facts: {:?}", install.facts());

    let t = Instant::now();
    let engine = TrixieEngine::start(&install, &user, &run)?;
    eprintln!(
        "FIGURE engine start: {} ms (holder {})",
        t.elapsed().as_millis(),
        engine.holder().pid
    );
    let holder = engine.holder().clone();

    // Version and store facts, rootful and rootless.
    let v = out(
        engine.command(Some(&user), ["version", "--format", "{{.Client.Version}}"]),
        "podman version",
    )
    .await?;
    ensure!(v.starts_with("5.4."), "podman version says {v}");
    let fmt = "{{.Host.Security.Rootless}} {{.Store.GraphRoot}} {{.Host.OCIRuntime.Name}} {{.Host.RootlessNetworkCmd}} {{.Host.NetworkBackend}}";
    let rl = out(
        engine.command(Some(&user), ["info", "--format", fmt]),
        "podman info (rootless)",
    )
    .await?;
    eprintln!("rootless info: {rl}");
    ensure!(
        rl.starts_with(&format!(
            "true /var/lib/runnerlab/storage/rootless-{} crun pasta netavark",
            user.uid
        )),
        "rootless info: {rl}"
    );
    let rf = out(
        engine.command(None, ["info", "--format", fmt]),
        "podman info (rootful)",
    )
    .await?;
    eprintln!("rootful info: {rf}");
    ensure!(
        rf.starts_with("false /var/lib/runnerlab/storage/rootful crun"),
        "rootful info: {rf}"
    );

    // An image from the host engine, then runs on both stores.
    let t = Instant::now();
    let image = bring_image(&engine, &user).await?;
    eprintln!(
        "FIGURE copy {image} into both stores: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let label = format!("{RUN_LABEL}={run}");
    for who in [None, Some(&user)] {
        out(
            engine.command(who, ["run", "--rm", "--label", &label, &image, "true"]),
            &format!(
                "podman run --rm true ({})",
                who.map_or("rootful", |_| "rootless")
            ),
        )
        .await?;
    }
    // The rootful default bridge: its interface is the engine's own, not the host engine's podman0.
    let addr = out(
        engine.command(
            None,
            [
                "run",
                "--rm",
                "--label",
                &label,
                &image,
                "sh",
                "-c",
                "grep -v ^# /proc/net/route | head -2; cat /etc/hostname",
            ],
        ),
        "rootful run on the default bridge",
    )
    .await?;
    eprintln!("rootful bridge run: {addr}");
    let nft_during = install.nft_ruleset()?;
    eprintln!(
        "netavark table while the engine runs: {}",
        has_netavark_table(&nft_during)
    );

    // An API service of the rootless store, answering the host through bollard.
    let dir = user.runtime_dir().join("podman").join(&run);
    std::fs::create_dir_all(&dir)?;
    user.chown(&dir)?;
    std::fs::write(dir.join("owner"), runnerlab::podman::owner_tag())?;
    let sock = dir.join("podman.sock");
    let log = std::fs::File::create(std::env::temp_dir().join(format!("{run}-api.log")))?;
    let mut svc = engine
        .command(
            Some(&user),
            [
                OsString::from("system"),
                "service".into(),
                "--time=0".into(),
                format!("unix://{}", sock.display()).into(),
            ],
        )
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let version = loop {
        if let Some(st) = svc.try_wait()? {
            bail!("the engine's API service exited: {st}");
        }
        if let Ok(c) = bollard::Docker::connect_with_unix(
            &sock.to_string_lossy(),
            30,
            bollard::API_DEFAULT_VERSION,
        ) && c.ping().await.is_ok()
        {
            break c.version().await?;
        }
        ensure!(
            Instant::now() < deadline,
            "the API service did not answer on {}",
            sock.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!(
        "API /version: podman {:?}, api {:?}",
        version.version, version.api_version
    );
    ensure!(
        version
            .version
            .as_deref()
            .is_some_and(|v| v.starts_with("5.4.")),
        "API /version: {version:?}"
    );
    // SIGTERM reaches podman itself (nsenter, setpriv and env exec).
    let pid = svc.id().context("service pid")?;
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    let st = tokio::time::timeout(Duration::from_secs(10), svc.wait()).await??;
    eprintln!("API service stopped: {st}");
    std::fs::remove_dir_all(&dir)?;

    // The host's loopback from rootless containers: default network and a per-build network.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let server = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let _ = s.write_all(b"hello-from-host-loopback\n").await;
        }
    });
    let gw = engine.host_gateway().to_owned();
    let probe = format!("exec 3<>/dev/tcp/{gw}/{port} && head -1 <&3");
    let net = format!("{run}-net");
    out(
        engine.command(Some(&user), ["network", "create", "--label", &label, &net]),
        "podman network create",
    )
    .await?;
    for network in ["default", net.as_str()] {
        let mut args = vec!["run", "--rm", "--label", &label];
        if network != "default" {
            args.extend(["--network", network]);
        }
        args.extend([image.as_str(), "bash", "-c", &probe]);
        let said = out(
            engine.command(Some(&user), args),
            &format!("rootless container to {gw}:{port} ({network} network)"),
        )
        .await?;
        ensure!(
            said == "hello-from-host-loopback",
            "rootless container on the {network} network got {said:?} from {gw}:{port}"
        );
        eprintln!("host loopback from a rootless container ({network} network) at {gw}:{port}: ok");
    }
    server.abort();
    out(
        engine.command(Some(&user), ["network", "rm", &net]),
        "podman network rm",
    )
    .await?;

    // Figures: `podman run --rm base true`, rootless, on both engines in turns.
    if image == BASE {
        let (mut h, mut tx) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            let t = Instant::now();
            host.run(["run", "--rm", BASE, "true"]).await?;
            h.push(t.elapsed().as_secs_f64() * 1000.0);
            let t = Instant::now();
            out(
                engine.command(Some(&user), ["run", "--rm", BASE, "true"]),
                "timed run",
            )
            .await?;
            tx.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        eprintln!(
            "FIGURE rootless `podman run --rm base true` median of 5: host {:.0} ms {h:.0?}, trixie {:.0} ms {tx:.0?}",
            median(h.clone()),
            median(tx.clone())
        );
    }

    // Stop with containers running, rootful (on the bridge) and rootless: nothing may remain.
    for who in [None, Some(&user)] {
        out(
            engine.command(
                who,
                [
                    "run", "-d", "--rm", "--label", &label, &image, "sleep", "600",
                ],
            ),
            "podman run -d sleep",
        )
        .await?;
    }
    let t = Instant::now();
    let report = engine.stop()?;
    eprintln!(
        "FIGURE engine stop: {} ms ({report:?})",
        t.elapsed().as_millis()
    );
    ensure!(
        report.holder_stopped,
        "the last detach did not stop the holder"
    );
    let pasta = pasta_of_the_engine(&install);
    ensure!(pasta.is_empty(), "pasta of the engine left: {pasta:?}");
    ensure!(
        !runnerlab::podman::process_running(holder.pid),
        "the holder {} still runs",
        holder.pid
    );
    let left = trixie::engine_pids(&install);
    ensure!(left.is_empty(), "engine processes left: {left:?}");
    for needle in [
        install.dir.to_string_lossy().as_ref(),
        "runnerlab-shm",
        "runnerlab-run",
    ] {
        let m = mountinfo_mentions(needle);
        ensure!(m.is_empty(), "mounts left naming {needle}: {m:?}");
    }
    let nft_after = install.nft_ruleset()?;
    ensure!(
        has_netavark_table(&nft_after) == has_netavark_table(&nft_before),
        "the engine's `table inet netavark` is left:\n{nft_after}"
    );
    if nft_after != nft_before {
        eprintln!(
            "note: the host's ruleset changed meanwhile (other labs run rootful containers?)"
        );
    }
    ensure!(
        !install.dir.join("state/holder.json").exists(),
        "holder.json left"
    );
    // The host engine's store did not see any of it.
    let host_base_after = host
        .text(["image", "inspect", "--format", "{{.Id}}", BASE])
        .await
        .ok();
    ensure!(
        host_base_before == host_base_after,
        "the host store's base changed"
    );
    let host_info = host
        .text(["info", "--format", "{{.Store.GraphRoot}}"])
        .await?;
    ensure!(
        !host_info.contains("runnerlab/storage"),
        "host graphroot {host_info}"
    );
    ensure!(
        !host
            .text([
                "ps",
                "-a",
                "--filter",
                &format!("label={label}"),
                "--format",
                "{{.Names}}"
            ])
            .await?
            .lines()
            .any(|l| !l.is_empty()),
        "the host store has containers of the engine's run"
    );
    Ok(())
}

/// Two attachments share one holder; the last detach stops it; a holder whose only owner was
/// killed is stopped by `reap`, and a live owner keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_holder_is_shared_and_reaped_when_its_owners_die() -> Result<()> {
    let Some(install) = engine_or_skip()? else {
        return Ok(());
    };
    let _x = exclusive(&install)?;
    let user = LabUser::lookup()?;
    let a = TrixieEngine::start(&install, &user, &run_id())?;
    let b = TrixieEngine::start(&install, &user, &format!("{}b", run_id()))?;
    ensure!(a.holder() == b.holder(), "two holders: {a:?} {b:?}");
    let pid = a.holder().pid;
    let r = a.stop()?;
    ensure!(
        !r.holder_stopped && runnerlab::podman::process_running(pid),
        "A's detach stopped the shared holder"
    );
    // A live rootless podman process in the engine (the pause process stays after this).
    let st = b
        .std_command(
            Some(&user),
            ["info", "--format", "{{.Host.Security.Rootless}}"],
        )
        .stdout(Stdio::null())
        .status()?;
    ensure!(st.success(), "podman info in the shared engine");

    // A run that is killed: its owner file names a process that then dies.
    let mut victim = std::process::Command::new("sleep").arg("600").spawn()?;
    let tag = format!(
        "{}:{}",
        victim.id(),
        runnerlab::podman::process_start_time(victim.id()).context("start time")?
    );
    std::fs::write(install.state().join("owners").join("rl-killed"), &tag)?;
    drop(b.stop()?); // B detaches; the victim still owns the engine
    ensure!(
        runnerlab::podman::process_running(pid),
        "the holder stopped while the victim owned it"
    );
    ensure!(
        trixie::reap(false).iter().all(|r| r.stopped.is_none()),
        "reap stopped an engine with a live owner"
    );
    victim.kill()?;
    victim.wait()?;
    let reaped = trixie::reap(false);
    eprintln!("reaped: {reaped:?}");
    ensure!(
        reaped.iter().any(|r| r.dead_owners == ["rl-killed"]
            && r.stopped.as_ref().is_some_and(|s| s.holder_stopped)),
        "reap did not stop the ownerless holder: {reaped:?}"
    );
    ensure!(
        !runnerlab::podman::process_running(pid),
        "the holder {pid} still runs"
    );
    let left = trixie::engine_pids(&install);
    ensure!(left.is_empty(), "engine processes left: {left:?}");

    // A holder killed while containers run: the last detach still stops them (entering through
    // a process left in the namespace) and removes what netavark put into the host's namespace.
    let c = TrixieEngine::start(&install, &user, &run_id())?;
    let image = bring_image_if_there(&c).await?;
    for who in [None, Some(&user)] {
        let st = c
            .std_command(
                who,
                [
                    "run",
                    "-d",
                    "--rm",
                    "--label",
                    "runnerlab.run=rl-holder-killed",
                    &image,
                    "sleep",
                    "600",
                ],
            )
            .stdout(Stdio::null())
            .status()?;
        ensure!(st.success(), "podman run -d");
    }
    let holder = c.holder().pid;
    std::process::Command::new("kill")
        .args(["-KILL", &holder.to_string()])
        .status()?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while runnerlab::podman::process_running(holder) {
        ensure!(Instant::now() < deadline, "the holder survived SIGKILL");
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = c.stop()?;
    eprintln!("after a killed holder: {r:?}");
    ensure!(!r.holder_stopped, "the holder was already dead");
    let pasta: Vec<u32> = r
        .killed
        .iter()
        .copied()
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "pasta")
        })
        .collect();
    ensure!(pasta.is_empty(), "pasta left running: {pasta:?}");
    let left = trixie::engine_pids(&install);
    ensure!(left.is_empty(), "engine processes left: {left:?}");
    ensure!(
        !install.nft_ruleset()?.contains("table inet netavark"),
        "the netavark table is left"
    );
    let links = std::process::Command::new("ip")
        .args(["-br", "link"])
        .output()?;
    ensure!(
        !String::from_utf8_lossy(&links.stdout).contains(trixie::DEFAULT_BRIDGE),
        "the bridge {} is left",
        trixie::DEFAULT_BRIDGE
    );
    Ok(())
}

/// An image already in the engine's stores (the end-to-end test copies base in), else its rootfs.
async fn bring_image_if_there(engine: &TrixieEngine) -> Result<String> {
    let user = LabUser::lookup()?;
    let have = |who: Option<&LabUser>| {
        engine
            .std_command(who, ["image", "exists", BASE])
            .status()
            .is_ok_and(|s| s.success())
    };
    if have(None) && have(Some(&user)) {
        return Ok(BASE.to_owned());
    }
    bring_image(engine, &user).await
}

/// Running pasta processes (`pasta`, `pasta.avx2`) carrying the engine's marker. Exited ones are
/// zombies until init reaps them (pasta daemonizes), with an empty environment: not left.
fn pasta_of_the_engine(install: &EngineInstall) -> Vec<String> {
    let name = install
        .dir
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let p = e.path();
        let comm = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
        if !comm.starts_with("pasta") {
            continue;
        }
        let env = std::fs::read(p.join("environ")).unwrap_or_default();
        let marked = String::from_utf8_lossy(&env).contains(&name);
        let state = std::fs::read_to_string(p.join("stat")).unwrap_or_default();
        eprintln!(
            "pasta {}: marked {marked}, env {} bytes, stat {}",
            p.display(),
            env.len(),
            state.trim()
        );
        let zombie = state
            .get(state.rfind(')').map_or(0, |i| i + 2)..)
            .is_some_and(|r| r.starts_with('Z'));
        if marked && !zombie {
            found.push(format!("{} {}", p.display(), comm.trim()));
        }
    }
    found
}

/// The lab on the second engine: `hello` in every executor mode runs through Podman 5.4, and when
/// the labs and the engine are gone, neither engine holds anything of the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_in_every_mode_on_the_trixie_engine() -> Result<()> {
    use runnerlab::{Executor, Lab, LabOptions};
    let Some(install) = engine_or_skip()? else {
        return Ok(());
    };
    let _x = exclusive(&install)?;
    let engine = runnerlab::engine::open(trixie::NAME)?;
    let user = LabUser::lookup()?;
    let stores = runnerlab::engine::stores(&engine)?;
    let mut runs = Vec::new();
    for mode in Executor::ALL {
        let mut opts = LabOptions::new(mode);
        opts.engine = engine.clone();
        let lab = Lab::start_with(opts).await?;
        let version = lab
            .podman()
            .text(["version", "--format", "{{.Server.Version}}"])
            .await?;
        ensure!(
            version.starts_with("5.4"),
            "{mode}: the lab's podman is {version}"
        );
        let run = lab.pipeline("hello").run().await?;
        let job = run.job("hello");
        ensure!(
            job.status() == "success" && job.checksum_ok() == Some(true),
            "{mode} on trixie: hello ended {} (checksum {:?}); trace:\n{}",
            job.status(),
            job.checksum_ok(),
            job.trace()
        );
        runs.push(lab.run_id().to_owned());
        lab.shutdown().await?;
    }
    for s in &stores {
        for run in &runs {
            let r = s.labelled(Some(run))?;
            ensure!(
                r.is_empty(),
                "trixie {} store after {run}: {r}",
                s.store().name()
            );
        }
    }
    let host = Podman::rootless(user.clone());
    for run in &runs {
        let r = host.labelled(Some(run))?;
        ensure!(r.is_empty(), "the host store holds {run}'s {r}");
    }
    drop(stores);
    drop(engine);
    let pids = trixie::engine_pids(&install);
    ensure!(
        pids.is_empty(),
        "engine processes after the last detach: {pids:?}"
    );
    Ok(())
}
