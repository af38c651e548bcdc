//! `setup --engine trixie`: debootstrap, the engine's configs, the resolved versions.

use super::*;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::engine::podman::is_root;
use crate::paths;

/// Install the engine (idempotent: returns at once when the current inputs are installed).
/// `progress` gets one line per step.
pub fn install(progress: impl Fn(&str)) -> Result<EngineInstall> {
    if let Some(i) = EngineInstall::find()? {
        return Ok(i);
    }
    if !is_root() {
        bail!(
            "installing the {NAME} engine needs root (debootstrap, then mounts to run it)\n  fix: sudo cargo lab setup --engine {NAME}"
        );
    }
    if !["/usr/sbin/debootstrap", "/usr/bin/debootstrap"]
        .iter()
        .any(|p| Path::new(p).exists())
    {
        bail!(
            "debootstrap not found\n  fix: cargo lab setup  (installs it), or apt-get install debootstrap"
        );
    }
    let hash = input_hash()?;
    let base = engines_dir();
    std::fs::create_dir_all(&base)?;
    let dir = base.join(format!("{NAME}-{}", &hash[..16]));
    // One installer at a time; a second one waits and then finds the result.
    let _lock = lock_file(&base.join(format!("{NAME}-{}.lock", &hash[..16])))?;
    if dir.join("versions.json").is_file() {
        return EngineInstall::load(&dir);
    }
    let started = Instant::now();
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{NAME}-{}.partial-", &hash[..16]))
        .tempdir_in(&base)?;
    let rootfs = tmp.path().join("rootfs");
    let pkgs = packages()?;
    let mirror = mirror();
    progress(&format!(
        "debootstrap {SUITE} ({}) from {mirror}",
        pkgs.join(",")
    ));
    let out = Command::new("debootstrap")
        .args([
            "--variant=minbase",
            &format!("--include={}", pkgs.join(",")),
        ])
        .arg(SUITE)
        .arg(&rootfs)
        .arg(&mirror)
        .stdin(Stdio::null())
        .output()
        .context("running debootstrap\n  fix: cargo lab setup  (installs it)")?;
    if !out.status.success() {
        let log = String::from_utf8_lossy(&out.stdout);
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        bail!(
            "debootstrap of {SUITE} from {mirror} failed:\n{}\n{}\n  fix: check that the mirror is reachable (RUNNERLAB_DEBIAN_MIRROR overrides it)",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    progress("installing the engine's configuration");
    configure_rootfs(&rootfs)?;
    progress("resolving versions");
    let mut versions = resolve_versions(&rootfs, &hash)?;
    versions.install_seconds = started.elapsed().as_secs_f64();
    paths::write_atomic(
        &tmp.path().join("versions.json"),
        serde_json::to_string_pretty(&versions)?.as_bytes(),
    )?;
    // Complete or absent: the directory appears under its final name only now.
    let staged = tmp.keep();
    std::fs::rename(&staged, &dir)
        .with_context(|| format!("renaming {} to {}", staged.display(), dir.display()))?;
    progress(&format!(
        "{NAME}: podman {} in {} ({:.0} s)",
        versions.podman.version,
        dir.display(),
        versions.install_seconds
    ));
    Ok(EngineInstall {
        dir,
        versions,
        built: true,
    })
}

pub(super) fn configure_rootfs(rootfs: &Path) -> Result<()> {
    let fx = fixtures();
    let etc = rootfs.join("etc/containers");
    std::fs::create_dir_all(etc.join("networks"))?;
    for (from, to) in [
        ("containers.conf", "containers.conf"),
        ("storage.conf", "storage.conf"),
        ("networks/podman.json", "networks/podman.json"),
    ] {
        std::fs::copy(fx.join(from), etc.join(to))
            .with_context(|| format!("installing {from} into the {NAME} rootfs"))?;
    }
    // Mount points the holder binds onto.
    for d in [STORAGE_INSIDE, ".oldroot", "home"] {
        std::fs::create_dir_all(rootfs.join(d))?;
    }
    for f in ["etc/subuid", "etc/subgid"] {
        let p = rootfs.join(f);
        if !p.exists() {
            std::fs::write(&p, "")?;
        }
    }
    // The apt caches are 100 MB the engine never uses.
    for d in ["var/cache/apt/archives", "var/lib/apt/lists"] {
        if let Ok(rd) = std::fs::read_dir(rootfs.join(d)) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_file()) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
    Ok(())
}

pub(super) fn resolve_versions(rootfs: &Path, hash: &str) -> Result<Versions> {
    let out = Command::new("dpkg-query")
        .arg(format!(
            "--admindir={}",
            rootfs.join("var/lib/dpkg").display()
        ))
        .args(["-W", "-f=${Package} ${Version} ${Status}\n"])
        .args(FACT_PACKAGES)
        .output()
        .context("running dpkg-query on the engine's rootfs")?;
    let mut packages = BTreeMap::new();
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        let mut it = l.split_whitespace();
        if let (Some(p), Some(v)) = (it.next(), it.next())
            && l.ends_with("installed")
        {
            packages.insert(p.to_owned(), v.to_owned());
        }
    }
    let comp = |name: &str, pkg: &str| -> Result<Component> {
        let pv = packages
            .get(pkg)
            .with_context(|| format!("package {pkg} is not installed in the {NAME} rootfs"))?;
        Ok(Component {
            name: name.to_owned(),
            version: upstream_version(pv),
            package_version: pv.clone(),
        })
    };
    let conf = std::fs::read_to_string(rootfs.join("etc/containers/containers.conf"))?;
    let setting = |key: &str| -> Option<String> {
        conf.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim().trim_matches('"').to_owned())
        })
    };
    let runtime = setting("runtime").unwrap_or_else(|| "crun".into());
    let other_runtime = if runtime == "crun" { "runc" } else { "crun" };
    let rootless = setting("default_rootless_network_cmd").unwrap_or_else(|| "pasta".into());
    let (rl_pkg, other_rl, other_rl_pkg) = if rootless == "pasta" {
        ("passt", "slirp4netns", "slirp4netns")
    } else {
        ("slirp4netns", "pasta", "passt")
    };
    Ok(Versions {
        engine: NAME.into(),
        suite: SUITE.into(),
        input_hash: hash.into(),
        podman: comp("podman", "podman")?,
        conmon: comp("conmon", "conmon")?,
        oci_runtime: comp(&runtime, &runtime)?,
        other_runtimes: vec![comp(other_runtime, other_runtime)?],
        network_backend: comp("netavark", "netavark")?,
        dns: comp("aardvark-dns", "aardvark-dns")?,
        firewall: comp(
            &setting("firewall_driver").unwrap_or_else(|| "nftables".into()),
            "nftables",
        )?,
        rootless_network: comp(&rootless, rl_pkg)?,
        other_rootless_networks: vec![comp(other_rl, other_rl_pkg)?],
        packages,
        install_seconds: 0.0,
    })
}
