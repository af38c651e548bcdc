//! Host provisioning (`runnerlab setup`) and diagnosis (`runnerlab doctor`).
//!
//! Follows the recipe verified on Debian 12 with cgroup v1 and no systemd: runc (crun refuses hybrid
//! cgroups), explicit default ulimits (root lacks CAP_SYS_RESOURCE), cgroupfs, file events, netavark,
//! native overlay rootless, /run/user/UID made by hand, /dev/net/tun opened for slirp4netns.
//! Every check says what is wrong and how to fix it; `setup` applies the fixes, each idempotent.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::engine::podman::{LabUser, Podman, is_root};
use crate::paths;

/// Debian packages the lab needs on the host. iptables is only a "Suggests" of podman, yet without
/// it every rootful run on the default bridge fails inside netavark.
pub const PACKAGES: &[&str] = &[
    "podman",
    "runc",
    "conmon",
    "netavark",
    "aardvark-dns",
    "slirp4netns",
    "uidmap",
    "fuse-overlayfs",
    "catatonit",
    "debootstrap",
    "iptables",
    "git",
    // The runner's `git lfs pull` after checkout (mock-gitlab serves Git LFS; suites test it);
    // its postinst configures the LFS filters system-wide, which the pull needs.
    "git-lfs",
    "ca-certificates",
    // aws-lc-sys (under the gitlab-runner crate mock-gitlab's tests cross-check against) builds
    // with cmake.
    "cmake",
];

/// The uid the rootless user gets when setup creates it (the one the recipe and the seeds use).
pub const DEFAULT_UID: u32 = 1001;

/// One line of `doctor`.
#[derive(Debug)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    /// What was found (on failure: what is wrong).
    pub detail: String,
    /// How to fix it by hand.
    pub fix: String,
    /// Whether the lab cannot work without it (the Go toolchain, say, is only needed for one source).
    pub required: bool,
}

fn check(name: &'static str, ok: bool, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        name,
        ok,
        detail: detail.into(),
        fix: fix.into(),
        required: true,
    }
}

fn missing_packages() -> Vec<&'static str> {
    PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            let out = Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output();
            !matches!(out, Ok(o) if String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect()
}

fn file_has_all(path: &Path, needles: &[&str]) -> bool {
    std::fs::read_to_string(path)
        .map(|t| needles.iter().all(|n| t.contains(n)))
        .unwrap_or(false)
}

/// Settings that must be in effect, as they appear in containers.conf.
const CONTAINERS_CONF_KEYS: &[&str] = &[
    "runtime = \"runc\"",
    "cgroup_manager = \"cgroupfs\"",
    "events_logger = \"file\"",
    "nofile=16384:16384",
];

fn subid_ok(file: &str, user: &str) -> bool {
    std::fs::read_to_string(file)
        .map(|t| {
            t.lines().any(|l| {
                let f: Vec<&str> = l.split(':').collect();
                f.len() == 3 && f[0] == user && f[2].parse::<u32>().unwrap_or(0) >= 65536
            })
        })
        .unwrap_or(false)
}

fn rootless_conf_dir(u: &LabUser) -> PathBuf {
    u.home.join(".config/containers")
}

/// Run every check. Never fails: a check that cannot run is reported as failing.
pub fn doctor() -> Vec<Check> {
    let mut checks = Vec::new();
    let missing = missing_packages();
    checks.push(check(
        "packages",
        missing.is_empty(),
        if missing.is_empty() {
            format!("{} Debian packages installed", PACKAGES.len())
        } else {
            format!("missing: {}", missing.join(" "))
        },
        format!("apt-get update && apt-get install -y {}", missing.join(" ")),
    ));
    let cc = Path::new("/etc/containers/containers.conf");
    checks.push(check(
        "containers.conf",
        file_has_all(cc, CONTAINERS_CONF_KEYS),
        format!(
            "{}: runtime runc, cgroupfs, file events, nofile/nproc ulimits",
            cc.display()
        ),
        "cargo lab setup  (installs fixtures/host/rootful/containers.conf)",
    ));
    let sc = Path::new("/etc/containers/storage.conf");
    checks.push(check(
        "storage.conf",
        file_has_all(sc, &["driver = \"overlay\""]),
        format!("{}: overlay driver", sc.display()),
        "cargo lab setup  (installs fixtures/host/rootful/storage.conf)",
    ));
    let tun_ok = std::fs::metadata("/dev/net/tun")
        .map(|m| m.permissions().mode() & 0o666 == 0o666)
        .unwrap_or(false);
    checks.push(check(
        "/dev/net/tun",
        tun_ok,
        "mode 0666, for rootless slirp4netns (devtmpfs resets it at boot)",
        "chmod 666 /dev/net/tun",
    ));
    let name = LabUser::configured_name();
    match LabUser::lookup() {
        Err(e) => checks.push(check(
            "rootless user",
            false,
            e.to_string(),
            format!("useradd -m -u {DEFAULT_UID} -U -s /bin/bash {name}"),
        )),
        Ok(u) => {
            checks.push(check(
                "rootless user",
                true,
                format!("{} uid {}", u.name, u.uid),
                "",
            ));
            let ids = subid_ok("/etc/subuid", &u.name) && subid_ok("/etc/subgid", &u.name);
            checks.push(check(
                "subuid/subgid",
                ids,
                format!("{}: 65536 subordinate uids and gids", u.name),
                format!(
                    "usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {}",
                    u.name
                ),
            ));
            let d = rootless_conf_dir(&u);
            checks.push(check(
                "rootless config",
                file_has_all(&d.join("containers.conf"), CONTAINERS_CONF_KEYS)
                    && file_has_all(&d.join("containers.conf"), &["allow_host_loopback=true"])
                    && file_has_all(&d.join("storage.conf"), &["driver = \"overlay\""]),
                format!("{}/{{containers,storage}}.conf", d.display()),
                "cargo lab setup  (installs fixtures/host/rootless/*)",
            ));
            let rd = u.runtime_dir();
            let rd_ok = std::fs::metadata(&rd)
                .map(|m| {
                    use std::os::unix::fs::MetadataExt;
                    m.uid() == u.uid
                })
                .unwrap_or(false)
                && rd.join("podman").is_dir();
            checks.push(check(
                "runtime dir",
                rd_ok,
                format!("{} (and podman/ in it) owned by {} (no logind here)", rd.display(), u.name),
                format!(
                    "install -d -o {0} -g {0} -m 700 {1} && install -d -o {0} -g {0} -m 700 {1}/podman",
                    u.name,
                    rd.display()
                ),
            ));
            let info = Podman::rootless(u.clone())
                .std_command([
                    "info",
                    "--format",
                    "{{.Host.OCIRuntime.Name}} {{.Store.GraphDriverName}} {{.Host.Security.Rootless}}",
                ])
                .output();
            let (ok, detail) = match info {
                Ok(o) if o.status.success() => {
                    let s = String::from_utf8_lossy(&o.stdout).trim().to_owned();
                    (
                        s == "runc overlay true",
                        format!("runtime/driver/rootless: {s}"),
                    )
                }
                Ok(o) => (false, String::from_utf8_lossy(&o.stderr).trim().to_owned()),
                Err(e) => (false, e.to_string()),
            };
            checks.push(check(
                "rootless podman",
                ok,
                detail,
                format!(
                    "cargo lab setup  (if the driver is vfs: runuser -u {} -- podman system reset -f)",
                    u.name
                ),
            ));
        }
    }
    if is_root() {
        let info = Podman::rootful()
            .std_command([
                "info",
                "--format",
                "{{.Host.OCIRuntime.Name}} {{.Store.GraphDriverName}}",
            ])
            .output();
        let (ok, detail) = match info {
            Ok(o) if o.status.success() => {
                let s = String::from_utf8_lossy(&o.stdout).trim().to_owned();
                (s == "runc overlay", format!("runtime/driver: {s}"))
            }
            Ok(o) => (false, String::from_utf8_lossy(&o.stderr).trim().to_owned()),
            Err(e) => (false, e.to_string()),
        };
        checks.push(check("rootful podman", ok, detail, "cargo lab setup"));
    }
    checks.extend(engine_checks());
    let go = Command::new("go").arg("version").output();
    checks.push(optional(check(
        "go toolchain",
        matches!(&go, Ok(o) if o.status.success()),
        match &go {
            Ok(o) => String::from_utf8_lossy(&o.stdout).trim().to_owned(),
            Err(_) => "no `go` on PATH (needed only to build the runner from its module)".into(),
        },
        "install Go ≥ 1.26 (https://go.dev/dl) or use `runnerlab runner get --from path:/…` / `--from image:…`",
    )));
    checks
}

/// Every installed second engine: its install is whole, and (as root) it starts, answers rootful
/// and rootless, and stops again. Not installing one is fine (optional).
fn engine_checks() -> Vec<Check> {
    use crate::engine::trixie;
    let install = match trixie::EngineInstall::find() {
        Ok(Some(i)) => i,
        Ok(None) => {
            return vec![optional(check(
                "engine trixie",
                false,
                "not installed (Podman 5.4 for `compare --b podman=trixie`)",
                "cargo lab setup --engine trixie",
            ))];
        }
        Err(e) => {
            return vec![check(
                "engine trixie",
                false,
                format!("{e:#}"),
                "rm -rf ~/.cache/runnerlab/engines/trixie-* && cargo lab setup --engine trixie",
            )];
        }
    };
    let what = install.facts().describe();
    if !is_root() {
        return vec![optional(check(
            "engine trixie",
            true,
            format!("{what}; not started (needs root)"),
            "",
        ))];
    }
    let probe = || -> anyhow::Result<String> {
        let user = LabUser::lookup()?;
        let e = trixie::TrixieEngine::start(&install, &user, &crate::lab::new_run_id())?;
        let mut seen = Vec::new();
        for rootless in [None, Some(&user)] {
            let o = e
                .std_command(
                    rootless,
                    ["info", "--format", "{{.Host.Security.Rootless}}"],
                )
                .output()?;
            if !o.status.success() {
                bail!(
                    "podman info ({}) failed: {}",
                    if rootless.is_some() {
                        "rootless"
                    } else {
                        "rootful"
                    },
                    String::from_utf8_lossy(&o.stderr).trim()
                );
            }
            seen.push(String::from_utf8_lossy(&o.stdout).trim().to_owned());
        }
        e.stop()?;
        Ok(format!("rootless: {}", seen.join("/")))
    };
    match probe() {
        Ok(s) => vec![check("engine trixie", true, format!("{what}; {s}"), "")],
        Err(e) => vec![check(
            "engine trixie",
            false,
            format!("{what}: {e:#}"),
            "cargo lab reap, then cargo lab doctor again; if it persists, reinstall: cargo lab setup --engine trixie",
        )],
    }
}

fn optional(mut c: Check) -> Check {
    c.required = false;
    c
}

/// Print the checks as `doctor` does; returns whether every required one passed.
pub fn print_checks(checks: &[Check]) -> bool {
    let mut all = true;
    for c in checks {
        if c.ok {
            println!("  ✓ {:<18} {}", c.name, c.detail);
        } else {
            all &= !c.required;
            let mark = if c.required { "✗" } else { "!" };
            println!("  {mark} {:<18} {}", c.name, c.detail);
            if !c.fix.is_empty() {
                println!("    {:<18} fix: {}", "", c.fix);
            }
        }
    }
    all
}

fn sh(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let st = cmd.status().with_context(|| format!("running {shown}"))?;
    if !st.success() {
        bail!("{shown} failed with {st}");
    }
    Ok(())
}

/// Install `src` at `dst` unless it already has the same content; an existing different file that
/// runnerlab did not write is kept as `<dst>.runnerlab-backup`.
fn install_file(src: &Path, dst: &Path, owner: Option<&LabUser>) -> Result<bool> {
    let want = std::fs::read(src).with_context(|| format!("reading {}", src.display()))?;
    let text = String::from_utf8_lossy(&want).into_owned();
    let text = match owner {
        // The rootless storage.conf names the user's own home and runtime dir.
        Some(u) => text
            .replace("/run/user/1001", &u.runtime_dir().to_string_lossy())
            .replace("/home/runner-user", &u.home.to_string_lossy()),
        None => text,
    };
    // Podman reads these as the rootless user too: they must be world-readable, also when an
    // earlier setup left them 0600.
    let readable = |p: &Path| -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644))
            .with_context(|| format!("chmod 644 {}", p.display()))
    };
    if std::fs::read(dst).ok().as_deref() == Some(text.as_bytes()) {
        readable(dst)?;
        return Ok(false);
    }
    if dst.exists() {
        let backup = dst.with_extension("conf.runnerlab-backup");
        if !backup.exists() {
            std::fs::copy(dst, &backup)?;
        }
    }
    paths::write_atomic(dst, text.as_bytes())?;
    readable(dst)?;
    if let Some(u) = owner {
        chown(dst, u)?;
    }
    Ok(true)
}

fn chown(p: &Path, u: &LabUser) -> Result<()> {
    std::os::unix::fs::chown(p, Some(u.uid), Some(u.gid))
        .with_context(|| format!("chown {}", p.display()))
}

/// Bring the host to the recipe. Idempotent; prints one line per step.
pub fn setup() -> Result<()> {
    if !is_root() {
        let failing: Vec<Check> = doctor().into_iter().filter(|c| !c.ok).collect();
        if failing.is_empty() {
            println!("host already set up (running unprivileged: nothing to change)");
            return Ok(());
        }
        print_checks(&failing);
        bail!(
            "setup needs root for the fixes above; run `sudo cargo lab setup` or apply them by hand"
        );
    }
    let fixtures = paths::fixtures().join("host");
    let missing = missing_packages();
    if missing.is_empty() {
        println!("  ✓ packages installed");
    } else {
        println!("  → apt-get install {}", missing.join(" "));
        // Another apt (a second set-up, unattended upgrades) may hold dpkg's lock: wait for it
        // rather than fail a fresh machine's first run.
        sh(Command::new("apt-get").args(["-o", APT_LOCK_WAIT, "update", "-qq"]))?;
        sh(Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args([
                "-o",
                APT_LOCK_WAIT,
                "install",
                "-y",
                "-qq",
                "--no-install-recommends",
            ])
            .args(&missing))?;
    }
    std::fs::create_dir_all("/etc/containers")?;
    for f in ["containers.conf", "storage.conf"] {
        let changed = install_file(
            &fixtures.join("rootful").join(f),
            &Path::new("/etc/containers").join(f),
            None,
        )?;
        println!(
            "  {} /etc/containers/{f}",
            if changed { "→ wrote" } else { "✓" }
        );
    }
    sh(Command::new("chmod").args(["666", "/dev/net/tun"]))?;
    std::fs::create_dir_all("/run/podman")?;
    let name = LabUser::configured_name();
    if LabUser::lookup().is_err() {
        println!("  → useradd {name}");
        sh(Command::new("useradd").args([
            "-m",
            "-u",
            &DEFAULT_UID.to_string(),
            "-U",
            "-s",
            "/bin/bash",
            &name,
        ]))?;
    }
    let u = LabUser::lookup()?;
    if !(subid_ok("/etc/subuid", &u.name) && subid_ok("/etc/subgid", &u.name)) {
        println!("  → subordinate ids for {}", u.name);
        sh(Command::new("usermod").args([
            "--add-subuids",
            "100000-165535",
            "--add-subgids",
            "100000-165535",
            &u.name,
        ]))?;
    }
    let conf = rootless_conf_dir(&u);
    for d in [u.home.join(".config"), conf.clone()] {
        std::fs::create_dir_all(&d)?;
        chown(&d, &u)?;
    }
    let mut rootless_changed = false;
    for f in ["containers.conf", "storage.conf"] {
        rootless_changed |=
            install_file(&fixtures.join("rootless").join(f), &conf.join(f), Some(&u))?;
    }
    let rd = u.runtime_dir();
    for d in [rd.clone(), rd.join("podman")] {
        std::fs::create_dir_all(&d)?;
        chown(&d, &u)?;
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700))?;
    }
    println!(
        "  ✓ user {} (uid {}), runtime dir {}",
        u.name,
        u.uid,
        rd.display()
    );
    let lab = Podman::rootless(u.clone());
    let driver = lab
        .std_command(["info", "--format", "{{.Store.GraphDriverName}}"])
        .output()
        .context("rootless podman info")?;
    let driver = String::from_utf8_lossy(&driver.stdout).trim().to_owned();
    if driver != "overlay" {
        // A store first opened without storage.conf is pinned to vfs; only a reset changes that.
        println!(
            "  → rootless store uses {driver:?}; resetting it to overlay (rootless_changed={rootless_changed})"
        );
        sh(&mut lab.std_command(["system", "reset", "-f"]))?;
    }
    let ok = doctor();
    if print_checks(&ok) {
        Ok(())
    } else {
        bail!("host setup incomplete: see the ✗ lines above")
    }
}

/// How long apt waits for dpkg's lock held by another apt (seconds, as apt's option).
pub const APT_LOCK_WAIT: &str = "DPkg::Lock::Timeout=600";
