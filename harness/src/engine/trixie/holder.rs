//! The namespace holder: its state and locks, starting it, the owners that keep it, stopping
//! and reaping it.

use super::*;

use std::collections::BTreeMap;
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

use crate::engine::podman::{LabUser, owner_alive, process_running, process_start_time};
use crate::paths;

/// An exclusive flock(2) on `path`, held while the file stays open.
pub(super) fn lock_file(path: &Path) -> Result<File> {
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
pub(super) static LOCAL: Mutex<()> = Mutex::new(());

/// Both locks on an engine's state: this process's, then the one between processes.
pub(super) struct StateLock {
    _file: File,
    _local: std::sync::MutexGuard<'static, ()>,
}

pub(super) fn lock_state(install: &EngineInstall) -> Result<StateLock> {
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

    pub(super) fn read(install: &EngineInstall) -> Option<HolderState> {
        serde_json::from_slice(&std::fs::read(Self::path(install)).ok()?).ok()
    }

    /// Whether this holder is still the process it was (same pid, start time and namespace).
    pub fn alive(&self) -> bool {
        process_running(self.pid)
            && process_start_time(self.pid) == Some(self.start)
            && mnt_ns(self.pid).as_deref() == Some(self.mnt_ns.as_str())
    }
}

pub(super) fn mnt_ns(pid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/mnt"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// The shell the holder runs (as `sh -c`, in a fresh mount namespace with private propagation):
/// build the engine's view, pivot into it, say `ready`, then hold the namespace with `sleep`.
pub(super) const HOLDER_SCRIPT: &str = r#"set -eu
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

/// Count owner files naming live processes.
pub(super) fn live_owners(install: &EngineInstall) -> usize {
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
pub(super) fn prune_dead_owners(install: &EngineInstall) -> Vec<String> {
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
pub(super) fn write_user_files(install: &EngineInstall, user: &LabUser) -> Result<PathBuf> {
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

pub(super) fn start_holder(install: &EngineInstall, user: &LabUser) -> Result<HolderState> {
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
pub(super) fn dir_id(p: &Path) -> Option<(u64, u64)> {
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
pub(super) fn shutdown(install: &EngineInstall, holder: Option<&HolderState>) -> StopReport {
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
        // Removing through Podman tears the networks down (netavark's rules and bridges). No
        // grace, and the records go too: the engine's stores are runnerlab's alone, so with no
        // owner left every container in them is a leftover (a `--rm` container whose cleanup
        // process is killed below would otherwise stay as a record).
        for who in [None, Some(&user)] {
            let (prog, pre) = argv_for(pid, &marker(install), who, &[]);
            let _ = Command::new(&prog)
                .args(&pre)
                .args(["rm", "--all", "--force", "--time", "0"])
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
pub(super) fn sweep(install: &EngineInstall) {
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
