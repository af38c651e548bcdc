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

mod holder;
mod install;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::engine::podman::{LabUser, is_root, owner_tag};
use crate::forge::{sha256_str, sha256_tree};
use crate::paths;

use holder::*;
pub use holder::{HolderState, Reaped, engine_pids, reap};
pub use install::install;

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

    fn host_path(&self, path: &Path) -> PathBuf {
        // The holder's view of its namespace: the runroot is the namespace's own tmpfs.
        PathBuf::from(format!("/proc/{}/root", self.holder.pid))
            .join(path.strip_prefix("/").unwrap_or(path))
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
