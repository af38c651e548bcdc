//! The `trixie` engine: Podman 5.4 from Debian 13, installed by debootstrap into a root filesystem
//! the harness owns and run on the host kernel in a private mount namespace, next to the host's own
//! Podman (the `host` engine) without sharing any state with it.
//!
//! Layout, `<cache>/engines/trixie-<input hash>/` (complete or absent; the hash covers
//! `fixtures/engines/trixie/`):
//! - `rootfs/`: the debootstrapped trixie with the engine's configs in `/etc/containers`;
//! - `versions.json`: the resolved package versions ([`Versions`], the report's Podman facts);
//! - `storage/{rootful,rootless-<uid>}`: the graph roots, persistent (images forged into the engine
//!   stay), seen inside as `/var/lib/runnerlab/storage`;
//! - `state/`: the holder ([`HolderState`]), one owner file per attached [`TrixieEngine`] in
//!   `owners/`, the generated passwd/group/subuid/subgid, the holder's log, and the lock.
//!
//! The namespace is held by a `sleep infinity` (the *holder*): rootfs bind-mounted onto itself,
//! /proc, /sys and /dev, a private tmpfs on /dev/shm (libpod's lock segment must not be the host
//! engine's) and on /run, `pivot_root` (the kernel refuses CLONE_NEWUSER in a chroot), the hybrid
//! layout's cgroup2 mount unmounted (crun refuses it). The host's /tmp, the lab user's home and
//! `/run/user/<uid>/podman` (the labs' API socket directories) are bind-mounted at the same paths,
//! so paths the harness hands to podman (build contexts, sockets, bind mounts) mean the same on
//! both sides. Podman commands enter it with `nsenter` ([`TrixieEngine::argv`]).
//!
//! One holder serves every lab on the engine, across processes: each attaches with an owner file
//! (`state/owners/<run id>` holding its owner tag) under a file lock; the last to detach stops the
//! holder. A killed harness leaves its owner file naming a dead process; [`reap`] (and the next
//! start) drops such files and stops a holder nobody owns. Stopping stops the engine's containers
//! through Podman (so netavark removes its firewall rules and bridges), kills every process whose
//! root is the engine's rootfs and their descendants, and removes a leftover `inet netavark` table.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::engine::podman::{
    LabUser, is_root, owner_alive, owner_tag, process_running, process_start_time,
};
use crate::forge::{sha256_str, sha256_tree};
use crate::paths;

/// The engine's name (`cargo lab setup --engine trixie`).
pub const NAME: &str = "trixie";
/// The Debian suite it is installed from.
pub const SUITE: &str = "trixie";
/// Bumped when the install steps change in a way the fixture files do not show.
const RECIPE_REVISION: &str = "1";
/// Where the engine's storage directory is seen inside the namespace (storage.conf names it).
const STORAGE_INSIDE: &str = "var/lib/runnerlab/storage";
/// The engine's configuration inside its rootfs; every podman of the engine is pointed at it.
const CONTAINERS_CONF: &str = "/etc/containers/containers.conf";
const STORAGE_CONF: &str = "/etc/containers/storage.conf";
const PATH: &str = "PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin";
/// The address rootless containers reach the host's loopback at: pasta's `--map-host-loopback`
/// (containers.conf `pasta_options`), the same address the host engine's slirp4netns uses.
pub const HOST_GATEWAY: &str = "10.0.2.2";
/// The rootful default network's bridge (fixtures/engines/trixie/networks/podman.json): not the
/// host engine's `podman0`, since both engines' rootful networks live in the host's namespace.
pub const DEFAULT_BRIDGE: &str = "rl-trixie0";

/// Packages whose versions are the engine's facts, by role.
const FACT_PACKAGES: &[&str] = &[
    "podman",
    "conmon",
    "crun",
    "runc",
    "netavark",
    "aardvark-dns",
    "passt",
    "slirp4netns",
    "nftables",
    "golang-github-containers-common",
];

/// This engine's fixture directory: package list and configs.
pub fn fixtures() -> PathBuf {
    paths::fixtures().join("engines").join(NAME)
}

/// The directory every engine lives under.
pub fn engines_dir() -> PathBuf {
    paths::cache_dir().join("engines")
}

/// The packages `debootstrap --include` gets (comments and blank lines dropped).
pub fn packages() -> Result<Vec<String>> {
    let p = fixtures().join("packages");
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    Ok(text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

/// Hash of everything the install is made from (the mirror is not: it gives the same packages).
pub fn input_hash() -> Result<String> {
    Ok(sha256_str(&[
        RECIPE_REVISION,
        SUITE,
        &sha256_tree(&fixtures())?,
    ]))
}

fn mirror() -> String {
    std::env::var("RUNNERLAB_DEBIAN_MIRROR")
        .unwrap_or_else(|_| "http://deb.debian.org/debian".into())
}

/// One piece of the engine with its version: upstream (`5.4.2`) and Debian's (`5.4.2+ds1-2+b2`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Component {
    pub name: String,
    pub version: String,
    pub package_version: String,
}

/// `versions.json`: what `install` resolved.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Versions {
    pub engine: String,
    pub suite: String,
    pub input_hash: String,
    pub podman: Component,
    pub conmon: Component,
    /// The runtime containers.conf selects, and the other one installed.
    pub oci_runtime: Component,
    pub other_runtimes: Vec<Component>,
    pub network_backend: Component,
    pub dns: Component,
    pub firewall: Component,
    /// Podman 5's default rootless network, as containers.conf leaves it.
    pub rootless_network: Component,
    pub other_rootless_networks: Vec<Component>,
    /// Every package of [`FACT_PACKAGES`] with its Debian version.
    pub packages: BTreeMap<String, String>,
    /// How long debootstrap and the rest of the install took, in seconds.
    pub install_seconds: f64,
}

/// The facts a report's `environment.podman` shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Facts {
    pub engine: String,
    pub podman: Component,
    pub conmon: Component,
    pub oci_runtime: Component,
    pub network_backend: Component,
    pub rootless_network: Component,
}

impl Facts {
    /// One line: `podman 5.4.2 (conmon 2.1.12, crun 1.21, netavark 1.14.0, rootless pasta …)`.
    pub fn describe(&self) -> String {
        format!(
            "podman {} (conmon {}, {} {}, {} {}, rootless {} {})",
            self.podman.version,
            self.conmon.version,
            self.oci_runtime.name,
            self.oci_runtime.version,
            self.network_backend.name,
            self.network_backend.version,
            self.rootless_network.name,
            self.rootless_network.version
        )
    }
}

impl Versions {
    pub fn facts(&self) -> Facts {
        Facts {
            engine: self.engine.clone(),
            podman: self.podman.clone(),
            conmon: self.conmon.clone(),
            oci_runtime: self.oci_runtime.clone(),
            network_backend: self.network_backend.clone(),
            rootless_network: self.rootless_network.clone(),
        }
    }
}

/// `5.4.2+ds1-2+b2` → `5.4.2`; `0.0~git20250503.587980c-2+deb13u1` → `0.0~git20250503.587980c`;
/// `1:2.1.12-4` → `2.1.12`.
pub fn upstream_version(debian: &str) -> String {
    let v = debian.split_once(':').map_or(debian, |(_, v)| v);
    let v = v.rsplit_once('-').map_or(v, |(u, _)| u);
    let v = v.split("+ds").next().unwrap_or(v);
    v.split("+dfsg").next().unwrap_or(v).to_owned()
}

/// An installed engine: its directory and versions.
#[derive(Clone, Debug)]
pub struct EngineInstall {
    pub dir: PathBuf,
    pub versions: Versions,
    /// Whether this call built it (false: it was already there).
    pub built: bool,
}

impl EngineInstall {
    /// The install of the current fixture inputs, if present.
    pub fn find() -> Result<Option<EngineInstall>> {
        let dir = engines_dir().join(format!("{NAME}-{}", &input_hash()?[..16]));
        if !dir.join("versions.json").is_file() {
            return Ok(None);
        }
        Ok(Some(Self::load(&dir)?))
    }

    /// The install of the current inputs, or an error saying how to make it.
    pub fn require() -> Result<EngineInstall> {
        Self::find()?.with_context(|| {
            format!(
                "the {NAME} engine (Podman 5.4 from Debian 13) is not installed\n  fix: cargo lab setup --engine {NAME}"
            )
        })
    }

    pub fn load(dir: &Path) -> Result<EngineInstall> {
        let p = dir.join("versions.json");
        let versions: Versions = serde_json::from_slice(
            &std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?,
        )
        .with_context(|| format!("parsing {}", p.display()))?;
        Ok(EngineInstall {
            dir: dir.to_path_buf(),
            versions,
            built: false,
        })
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    pub fn storage(&self) -> PathBuf {
        self.dir.join("storage")
    }

    /// The rootful graph root, as the host sees it.
    pub fn rootful_graphroot(&self) -> PathBuf {
        self.storage().join("rootful")
    }

    /// The rootless graph root of `uid`, as the host sees it.
    pub fn rootless_graphroot(&self, uid: u32) -> PathBuf {
        self.storage().join(format!("rootless-{uid}"))
    }

    pub fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    pub fn facts(&self) -> Facts {
        self.versions.facts()
    }

    /// `nft list ruleset` of the host's network namespace, with the engine's own nft (the host has
    /// none): what netavark 1.14 of this engine adds and must remove.
    pub fn nft_ruleset(&self) -> Result<String> {
        let out = Command::new("chroot")
            .arg(self.rootfs())
            .args(["/usr/sbin/nft", "list", "ruleset"])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::null())
            .output()
            .context("running the engine's nft (chroot)")?;
        if !out.status.success() {
            bail!(
                "nft list ruleset failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

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

fn configure_rootfs(rootfs: &Path) -> Result<()> {
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

fn resolve_versions(rootfs: &Path, hash: &str) -> Result<Versions> {
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

/// An exclusive flock(2) on `path`, held while the file stays open.
fn lock_file(path: &Path) -> Result<File> {
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening lock {}", path.display()))?;
    f.lock()
        .with_context(|| format!("locking {}", path.display()))?;
    Ok(f)
}

/// Engine state changes of this process are serialised here first: flock(2) locks belong to open
/// files, so two threads of one process would not exclude each other through a second open.
static LOCAL: Mutex<()> = Mutex::new(());

/// Both locks on an engine's state: this process's, then the one between processes.
struct StateLock {
    _file: File,
    _local: std::sync::MutexGuard<'static, ()>,
}

fn lock_state(install: &EngineInstall) -> Result<StateLock> {
    let local = LOCAL.lock().unwrap_or_else(|e| e.into_inner());
    std::fs::create_dir_all(install.state().join("owners"))?;
    Ok(StateLock {
        _file: lock_file(&install.state().join("lock"))?,
        _local: local,
    })
}

/// The running holder of an engine's namespace (`state/holder.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderState {
    pub pid: u32,
    /// Start time of `pid` (clock ticks since boot): tells a reused pid.
    pub start: u64,
    /// `mnt:[inode]` of its mount namespace.
    pub mnt_ns: String,
    /// The lab user made visible in the namespace.
    pub uid: u32,
    pub user: String,
}

impl HolderState {
    fn path(install: &EngineInstall) -> PathBuf {
        install.state().join("holder.json")
    }

    fn read(install: &EngineInstall) -> Option<HolderState> {
        serde_json::from_slice(&std::fs::read(Self::path(install)).ok()?).ok()
    }

    /// Whether this holder is still the process it was (same pid, start time and namespace).
    pub fn alive(&self) -> bool {
        process_running(self.pid)
            && process_start_time(self.pid) == Some(self.start)
            && mnt_ns(self.pid).as_deref() == Some(self.mnt_ns.as_str())
    }
}

fn mnt_ns(pid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/mnt"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// The shell the holder runs (as `sh -c`, in a fresh mount namespace with private propagation):
/// build the engine's view, pivot into it, say `ready`, then hold the namespace with `sleep`.
const HOLDER_SCRIPT: &str = r#"set -eu
R=$1 STORAGE=$2 ETC=$3 UID_=$4 GID_=$5 HOME_=$6
mount --bind "$R" "$R"
mount -t proc proc "$R/proc"
mount --rbind /sys "$R/sys"
mount --rbind /dev "$R/dev"
mount -t tmpfs -o mode=1777,nosuid,nodev runnerlab-shm "$R/dev/shm"
mount -t tmpfs -o mode=755,nosuid,nodev runnerlab-run "$R/run"
mount --bind "$STORAGE" "$R/var/lib/runnerlab/storage"
mount --bind /tmp "$R/tmp"
for f in passwd group subuid subgid; do mount --bind "$ETC/$f" "$R/etc/$f"; done
for f in resolv.conf hosts; do [ -f "/etc/$f" ] && [ -f "$R/etc/$f" ] && mount --bind "/etc/$f" "$R/etc/$f"; done
mkdir -p "$R$HOME_"
mount --bind "$HOME_" "$R$HOME_"
install -d -o "$UID_" -g "$GID_" -m 700 "$R/run/user/$UID_"
install -d -o "$UID_" -g "$GID_" -m 700 "$R/run/user/$UID_/podman"
if [ -d "/run/user/$UID_/podman" ]; then mount --bind "/run/user/$UID_/podman" "$R/run/user/$UID_/podman"; fi
cd "$R"
pivot_root . .oldroot
cd /
umount -l /.oldroot
mount --make-rshared /
if mountpoint -q /sys/fs/cgroup/unified; then umount /sys/fs/cgroup/unified; fi
echo ready
exec sleep infinity </dev/null >/dev/null 2>&1
"#;

/// An attachment to the running `trixie` engine. The holder lives while any attachment does;
/// dropping the last one (in any process) stops it.
pub struct TrixieEngine {
    install: EngineInstall,
    user: LabUser,
    holder: HolderState,
    owner_file: PathBuf,
    detached: bool,
}

impl std::fmt::Debug for TrixieEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrixieEngine")
            .field("dir", &self.install.dir)
            .field("holder", &self.holder)
            .field("owner_file", &self.owner_file)
            .finish()
    }
}

/// What stopping the engine did.
#[derive(Debug, Default)]
pub struct StopReport {
    /// Whether this detach was the last and the holder was stopped.
    pub holder_stopped: bool,
    /// Processes that had to be signalled after Podman stopped its containers.
    pub killed: Vec<u32>,
    /// Whether a leftover `inet netavark` table was removed.
    pub removed_nft_table: bool,
    /// Whether the default network's bridge was left and removed.
    pub removed_bridge: bool,
}

impl TrixieEngine {
    /// Attach `run_id` to the engine, starting its holder when none runs. Blocking (a fresh holder
    /// is ready in well under a second).
    pub fn start(install: &EngineInstall, user: &LabUser, run_id: &str) -> Result<TrixieEngine> {
        if !is_root() {
            bail!(
                "the {NAME} engine needs root (it mounts its namespace)\n  fix: run the harness as root"
            );
        }
        if run_id.is_empty() || run_id.contains('/') {
            bail!("bad run id {run_id:?} for an engine owner file");
        }
        let _l = lock_state(install)?;
        prune_dead_owners(install);
        let holder = match HolderState::read(install) {
            Some(h) if h.alive() && h.uid == user.uid => h,
            Some(h) => {
                // Dead, or made for another user: nobody may still be using it (the owner files
                // of live runs name the holder's user) — stop what is left before starting anew.
                if live_owners(install) > 0 && h.alive() {
                    bail!(
                        "the {NAME} engine runs for uid {} and is in use; it cannot serve uid {} at the same time",
                        h.uid,
                        user.uid
                    );
                }
                shutdown(install, Some(&h));
                start_holder(install, user)?
            }
            None => {
                // A holder file lost with the holder still around cannot happen through this
                // module; processes from a crash without one are still swept.
                sweep(install);
                start_holder(install, user)?
            }
        };
        let owner_file = install.state().join("owners").join(run_id);
        paths::write_atomic(&owner_file, owner_tag().as_bytes())?;
        Ok(TrixieEngine {
            install: install.clone(),
            user: user.clone(),
            holder,
            owner_file,
            detached: false,
        })
    }

    pub fn install(&self) -> &EngineInstall {
        &self.install
    }

    pub fn holder(&self) -> &HolderState {
        &self.holder
    }

    pub fn user(&self) -> &LabUser {
        &self.user
    }

    /// Where rootless containers reach the host's 127.0.0.1.
    pub fn host_gateway(&self) -> &str {
        HOST_GATEWAY
    }

    pub fn facts(&self) -> Facts {
        self.install.facts()
    }

    /// Program and leading arguments that run this engine's `podman` (rootful, or rootless as
    /// `rootless`), followed by `global` flags; the pid of the command is podman's own (nsenter,
    /// setpriv and env exec), so signals reach it.
    pub fn argv(
        &self,
        rootless: Option<&LabUser>,
        global: &[OsString],
    ) -> (OsString, Vec<OsString>) {
        argv_for(self.holder.pid, &marker(&self.install), rootless, global)
    }

    /// `podman ARGS…` of this engine as a std command (from `/`, stdin null).
    pub fn std_command<I, S>(&self, rootless: Option<&LabUser>, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let (prog, pre) = self.argv(rootless, &[]);
        let mut c = Command::new(prog);
        c.args(pre)
            .args(args.into_iter().map(Into::into))
            .current_dir("/")
            .stdin(Stdio::null());
        c
    }

    /// The same as a tokio command, killed on drop.
    pub fn command<I, S>(&self, rootless: Option<&LabUser>, args: I) -> tokio::process::Command
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let (prog, pre) = self.argv(rootless, &[]);
        let mut c = tokio::process::Command::new(prog);
        c.args(pre)
            .args(args.into_iter().map(Into::into))
            .current_dir("/")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        c
    }

    /// Detach; the last attachment stops the holder and everything in the engine.
    pub fn stop(mut self) -> Result<StopReport> {
        self.detach()
    }

    fn detach(&mut self) -> Result<StopReport> {
        if self.detached {
            return Ok(StopReport::default());
        }
        self.detached = true;
        let _l = lock_state(&self.install)?;
        let _ = std::fs::remove_file(&self.owner_file);
        prune_dead_owners(&self.install);
        if live_owners(&self.install) > 0 {
            return Ok(StopReport::default());
        }
        Ok(shutdown(
            &self.install,
            HolderState::read(&self.install).as_ref(),
        ))
    }
}

impl Drop for TrixieEngine {
    fn drop(&mut self) {
        if let Err(e) = self.detach() {
            eprintln!("runnerlab: stopping the {NAME} engine: {e:#}");
        }
    }
}

/// `RUNNERLAB_ENGINE=<engine dir name>`: in the environment of every podman of the engine, which
/// conmon, pasta, aardvark-dns and the rootless pause process inherit. pasta sandboxes itself
/// (its own root and mount namespace) and outlives a namespace that dies under it, so only this
/// tells it from the host engine's processes.
fn marker(install: &EngineInstall) -> String {
    format!(
        "RUNNERLAB_ENGINE={}",
        install
            .dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
    )
}

fn argv_for(
    holder: u32,
    marker: &str,
    rootless: Option<&LabUser>,
    global: &[OsString],
) -> (OsString, Vec<OsString>) {
    let mut a: Vec<OsString> = vec![
        "-t".into(),
        holder.to_string().into(),
        "-m".into(),
        "-r".into(),
        "-w".into(),
        "--".into(),
    ];
    match rootless {
        Some(u) => {
            // The same user and environment as on the host (the engine's PATH below wins).
            a.push("setpriv".into());
            a.extend(u.setpriv_env());
        }
        None => {
            a.extend(["env".into(), "-i".into(), "HOME=/root".into()]);
        }
    }
    a.extend([
        PATH.into(),
        format!("CONTAINERS_CONF={CONTAINERS_CONF}").into(),
        format!("CONTAINERS_STORAGE_CONF={STORAGE_CONF}").into(),
        // cgroup v1 is deprecated in Podman 5, which says so on every command otherwise.
        "PODMAN_IGNORE_CGROUPSV1_WARNING=1".into(),
        marker.into(),
        "podman".into(),
    ]);
    a.extend(global.iter().cloned());
    ("nsenter".into(), a)
}

/// Count owner files naming live processes.
fn live_owners(install: &EngineInstall) -> usize {
    std::fs::read_dir(install.state().join("owners"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| {
                    let tag = std::fs::read_to_string(e.path()).unwrap_or_default();
                    owner_alive(tag.trim())
                })
                .count()
        })
        .unwrap_or(0)
}

/// Remove owner files whose process died (a killed harness); returns their run ids.
fn prune_dead_owners(install: &EngineInstall) -> Vec<String> {
    let mut gone = Vec::new();
    if let Ok(rd) = std::fs::read_dir(install.state().join("owners")) {
        for e in rd.flatten() {
            let tag = std::fs::read_to_string(e.path()).unwrap_or_default();
            // A file being written (write_atomic's temp file) has no tag yet; only the lock holder
            // writes, so an empty file here is a leftover.
            if !owner_alive(tag.trim()) {
                let _ = std::fs::remove_file(e.path());
                gone.push(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    gone
}

/// The generated /etc files that make the lab user exist inside (and only inside) the namespace.
fn write_user_files(install: &EngineInstall, user: &LabUser) -> Result<PathBuf> {
    let etc = install.state().join("etc");
    std::fs::create_dir_all(&etc)?;
    let rootfs = install.rootfs();
    let base = |f: &str| std::fs::read_to_string(rootfs.join("etc").join(f)).unwrap_or_default();
    let keep = |text: String| -> String {
        // Drop any line of the same name or id (a rootfs change), then add ours.
        text.lines()
            .filter(|l| {
                let f: Vec<&str> = l.split(':').collect();
                f.first() != Some(&user.name.as_str())
                    && f.get(2) != Some(&user.uid.to_string().as_str())
            })
            .map(|l| format!("{l}\n"))
            .collect()
    };
    let host_subid = |f: &str| -> String {
        std::fs::read_to_string(f)
            .unwrap_or_default()
            .lines()
            .find(|l| l.split(':').next() == Some(user.name.as_str()))
            .map(|l| format!("{l}\n"))
            .unwrap_or_else(|| format!("{}:100000:65536\n", user.name))
    };
    let files = [
        (
            "passwd",
            keep(base("passwd"))
                + &format!(
                    "{n}:x:{u}:{g}::{h}:/bin/sh\n",
                    n = user.name,
                    u = user.uid,
                    g = user.gid,
                    h = user.home.display()
                ),
        ),
        (
            "group",
            keep(base("group")) + &format!("{}:x:{}:\n", user.name, user.gid),
        ),
        ("subuid", host_subid("/etc/subuid")),
        ("subgid", host_subid("/etc/subgid")),
    ];
    for (f, text) in files {
        paths::write_atomic(&etc.join(f), text.as_bytes())?;
    }
    Ok(etc)
}

fn start_holder(install: &EngineInstall, user: &LabUser) -> Result<HolderState> {
    let storage = install.storage();
    std::fs::create_dir_all(install.rootful_graphroot())?;
    let rl = install.rootless_graphroot(user.uid);
    std::fs::create_dir_all(&rl)?;
    user.chown(&rl)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&storage, std::fs::Permissions::from_mode(0o755))?;
    std::fs::set_permissions(
        install.rootful_graphroot(),
        std::fs::Permissions::from_mode(0o700),
    )?;
    std::fs::set_permissions(&rl, std::fs::Permissions::from_mode(0o700))?;
    let etc = write_user_files(install, user)?;
    // The labs' API socket directories are bound in from the host: it must exist before the bind
    // (setup makes it; a fresh boot without setup does not have it).
    let sockets = user.runtime_dir().join("podman");
    if user.runtime_dir().is_dir() && !sockets.is_dir() {
        std::fs::create_dir(&sockets)?;
        user.chown(&sockets)?;
        std::fs::set_permissions(&sockets, std::fs::Permissions::from_mode(0o700))?;
    }
    let log_path = install.state().join("holder.log");
    let log = File::options()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
    let mut child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
        .arg(HOLDER_SCRIPT)
        .arg(format!("runnerlab-{NAME}-holder"))
        .arg(install.rootfs())
        .arg(&storage)
        .arg(&etc)
        .arg(user.uid.to_string())
        .arg(user.gid.to_string())
        .arg(&user.home)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        // Its own process group: the holder outlives this process and must not get the signals
        // of its terminal or test runner.
        .process_group(0)
        .spawn()
        .context("starting the engine's namespace holder (unshare)")?;
    let pid = child.id();
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let ready = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
    if ready.trim() != "ready" {
        let _ = child.kill();
        let _ = child.wait();
        let err = std::fs::read(&log_path).unwrap_or_default();
        let err = String::from_utf8_lossy(err.get(log_start as usize..).unwrap_or(&[]));
        bail!(
            "the {NAME} engine's namespace did not come up: {}\n  (log: {})",
            err.trim(),
            log_path.display()
        );
    }
    // Reap it if it ever dies while this process lives (no zombie for the pid checks).
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    let holder = HolderState {
        pid,
        start: process_start_time(pid).context("the holder vanished")?,
        mnt_ns: mnt_ns(pid).context("the holder's mount namespace")?,
        uid: user.uid,
        user: user.name.clone(),
    };
    paths::write_atomic(
        &HolderState::path(install),
        serde_json::to_string(&holder)?.as_bytes(),
    )?;
    Ok(holder)
}

/// `(st_dev, st_ino)` of a directory.
fn dir_id(p: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

/// Every process of the engine: those whose root directory is its rootfs (podman, conmon,
/// aardvark-dns, the rootless pause process, the holder) or whose environment carries its
/// [`marker`] (pasta), and all their descendants (containers).
pub fn engine_pids(install: &EngineInstall) -> Vec<u32> {
    let Some(root) = dir_id(&install.rootfs()) else {
        return Vec::new();
    };
    let mut parent: BTreeMap<u32, u32> = BTreeMap::new();
    let mut inside = std::collections::BTreeSet::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id();
    let mut mark = marker(install).into_bytes();
    mark.push(0);
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me || !process_running(pid) {
            continue;
        }
        if let Some(ppid) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                let after = s.get(s.rfind(')')? + 2..)?.to_owned();
                after.split_whitespace().nth(1)?.parse::<u32>().ok()
            })
        {
            parent.insert(pid, ppid);
        }
        if dir_id(&PathBuf::from(format!("/proc/{pid}/root"))) == Some(root)
            || std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split_inclusive(|b| *b == 0).any(|v| v == mark))
        {
            inside.insert(pid);
        }
    }
    // Descendants: repeat until no process joins (trees are shallow).
    loop {
        let more: Vec<u32> = parent
            .iter()
            .filter(|(p, pp)| !inside.contains(*p) && inside.contains(*pp))
            .map(|(p, _)| *p)
            .collect();
        if more.is_empty() {
            break;
        }
        inside.extend(more);
    }
    inside.into_iter().collect()
}

/// Stop the engine: containers through Podman (network teardown), then every process left,
/// then a leftover firewall table; remove the holder file. Never fails (it runs in `Drop`).
fn shutdown(install: &EngineInstall, holder: Option<&HolderState>) -> StopReport {
    let mut report = StopReport::default();
    let live = holder.filter(|h| h.alive());
    // Podman is entered through the holder, or, when the holder was killed, through any process
    // still in its namespace (conmon keeps it alive while containers run).
    let entry = match (live, holder) {
        (Some(h), _) => Some(h.pid),
        (None, Some(h)) => engine_pids(install)
            .into_iter()
            .find(|p| mnt_ns(*p).as_deref() == Some(h.mnt_ns.as_str())),
        (None, None) => None,
    };
    if let (Some(pid), Some(h)) = (entry, holder) {
        // The gid and home only matter for setpriv's groups and podman's config lookup, which
        // CONTAINERS_CONF pins; the real ones are in the namespace's passwd.
        let user = LabUser::lookup()
            .ok()
            .filter(|u| u.uid == h.uid)
            .unwrap_or_else(|| LabUser {
                name: h.user.clone(),
                uid: h.uid,
                gid: h.uid,
                home: PathBuf::from("/"),
            });
        // Stopping through Podman tears the networks down (netavark's rules and bridges). No
        // grace: with no owner left, whatever still runs is a leftover.
        for who in [None, Some(&user)] {
            let (prog, pre) = argv_for(pid, &marker(install), who, &[]);
            let _ = Command::new(&prog)
                .args(&pre)
                .args(["stop", "--all", "--time", "0"])
                .current_dir("/")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
    // Everything of the engine but the holder: SIGTERM, then SIGKILL.
    let holder_pid = live.map(|h| h.pid);
    for (sig, polls) in [(libc::SIGTERM, 30), (libc::SIGKILL, 50)] {
        let pids: Vec<u32> = engine_pids(install)
            .into_iter()
            .filter(|p| Some(*p) != holder_pid)
            .collect();
        if pids.is_empty() {
            break;
        }
        for p in &pids {
            if !report.killed.contains(p) {
                report.killed.push(*p);
            }
            // SAFETY: kill(2) on processes rooted in this engine's rootfs or descended from them.
            unsafe {
                libc::kill(*p as i32, sig);
            }
        }
        for _ in 0..polls {
            if !pids.iter().any(|p| process_running(*p)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // netavark 1.14 leaves its (then empty) table behind, and the default bridge when the
    // namespace died before Podman could tear it down. Nobody else writes `inet netavark` here
    // (the host engine's netavark 1.4 uses iptables) or names a bridge DEFAULT_BRIDGE. The
    // rootfs's tools through chroot: the host has no nft, and the namespace may be gone.
    if holder.is_some() {
        let chroot = |args: &[&str]| {
            Command::new("chroot")
                .arg(install.rootfs())
                .args(args)
                .env_clear()
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        report.removed_nft_table = chroot(&["nft", "delete", "table", "inet", "netavark"]);
        report.removed_bridge = chroot(&["ip", "link", "delete", DEFAULT_BRIDGE]);
    }
    if let Some(h) = live {
        // SAFETY: kill(2) on the holder this engine started (pid, start time and namespace checked).
        unsafe {
            libc::kill(h.pid as i32, libc::SIGKILL);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while process_running(h.pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        report.holder_stopped = true;
    }
    sweep(install);
    let _ = std::fs::remove_file(HolderState::path(install));
    report
}

/// Kill whatever is still rooted in the engine (a holder that died with processes around).
fn sweep(install: &EngineInstall) {
    for _ in 0..3 {
        let pids = engine_pids(install);
        if pids.is_empty() {
            return;
        }
        for p in &pids {
            // SAFETY: kill(2) on processes rooted in this engine's rootfs or descended from them.
            unsafe {
                libc::kill(*p as i32, libc::SIGKILL);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What [`reap`] did for one engine directory.
#[derive(Debug)]
pub struct Reaped {
    pub dir: PathBuf,
    /// Run ids whose owner died.
    pub dead_owners: Vec<String>,
    pub stopped: Option<StopReport>,
}

/// For every installed trixie engine: drop owner files of dead processes, and stop a holder (or
/// leftover processes) nobody alive owns. Live engines of concurrent runs are never touched.
/// With `all`, stop every engine whatever its owners (`runnerlab reap --all`, nothing running).
pub fn reap(all: bool) -> Vec<Reaped> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(engines_dir()) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let dir = e.path();
        if !name.starts_with(&format!("{NAME}-")) || !dir.join("versions.json").is_file() {
            continue;
        }
        let Ok(install) = EngineInstall::load(&dir) else {
            continue;
        };
        let Ok(_l) = lock_state(&install) else {
            continue;
        };
        let dead_owners = prune_dead_owners(&install);
        let holder = HolderState::read(&install);
        let busy = live_owners(&install) > 0;
        let leftovers = holder.is_some() || !engine_pids(&install).is_empty();
        let stopped = if (all || !busy) && leftovers {
            if all {
                let _ = std::fs::remove_dir_all(install.state().join("owners"));
            }
            Some(shutdown(&install, holder.as_ref()))
        } else {
            None
        };
        if !dead_owners.is_empty() || stopped.is_some() {
            out.push(Reaped {
                dir,
                dead_owners,
                stopped,
            });
        }
    }
    out
}

impl crate::engine::Engine for TrixieEngine {
    fn name(&self) -> &str {
        NAME
    }

    fn podman_argv(
        &self,
        store: &crate::engine::podman::Store,
        global: &[OsString],
    ) -> (OsString, Vec<OsString>) {
        match store {
            crate::engine::podman::Store::Rootful => self.argv(None, global),
            crate::engine::podman::Store::Rootless(u) => self.argv(Some(u), global),
        }
    }

    fn host_gateway(&self) -> &str {
        HOST_GATEWAY
    }

    fn container_network(&self) -> Option<&str> {
        // Podman 5.4's default rootless network, pasta: containers.conf maps HOST_GATEWAY to the
        // host's loopback (`pasta_options = ["--map-host-loopback", …]`). Named nowhere, so that a
        // 4.3 podman-remote (the custom driver's client) need not know the word.
        None
    }

    fn facts(&self) -> Facts {
        TrixieEngine::facts(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_versions_drop_debian_parts() {
        assert_eq!(upstream_version("5.4.2+ds1-2+b2"), "5.4.2");
        assert_eq!(upstream_version("2.1.12-4"), "2.1.12");
        assert_eq!(upstream_version("1:2.1.12-4"), "2.1.12");
        assert_eq!(
            upstream_version("0.0~git20250503.587980c-2+deb13u1"),
            "0.0~git20250503.587980c"
        );
        assert_eq!(upstream_version("1.21-1"), "1.21");
    }

    #[test]
    fn package_list_is_read_without_comments() {
        let p = packages().unwrap();
        assert!(p.iter().any(|x| x == "podman"));
        assert!(p.iter().all(|x| !x.contains('#') && !x.contains(' ')));
    }

    #[test]
    fn argv_enters_the_namespace_and_runs_podman_last() {
        let u = LabUser {
            name: "runner-user".into(),
            uid: 1001,
            gid: 1001,
            home: "/home/runner-user".into(),
        };
        let (prog, a) = argv_for(
            42,
            "RUNNERLAB_ENGINE=trixie-x",
            Some(&u),
            &["--log-level".into(), "info".into()],
        );
        assert_eq!(prog, "nsenter");
        let a: Vec<String> = a.iter().map(|x| x.to_string_lossy().into_owned()).collect();
        assert_eq!(&a[..3], ["-t", "42", "-m"]);
        assert!(a.contains(&"--reuid=1001".to_owned()));
        assert!(a.contains(&"XDG_RUNTIME_DIR=/run/user/1001".to_owned()));
        assert_eq!(&a[a.len() - 3..], ["podman", "--log-level", "info"]);
        assert!(a.contains(&"RUNNERLAB_ENGINE=trixie-x".to_owned()));
        let (_, rootful) = argv_for(42, "RUNNERLAB_ENGINE=trixie-x", None, &[]);
        assert!(!rootful.iter().any(|x| x == "setpriv"));
        assert_eq!(rootful.last().unwrap(), "podman");
    }
}
