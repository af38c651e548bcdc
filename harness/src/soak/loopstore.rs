//! A small Podman store of its own: an ext4 file system in a file, loop-mounted, owned by the lab
//! user, for scenarios that must fill a disk without touching the real store (the disk-full soak
//! scenario). Unmounted and deleted when dropped; the reaper removes those of killed runs.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::engine::podman::{LabUser, Podman, is_root};

/// Where loop stores live: `/var/tmp/runnerlab-loop/<run id>/{image,mnt,owner}`.
const BASE: &str = "/var/tmp/runnerlab-loop";

pub struct LoopStore {
    dir: PathBuf,
    mnt: PathBuf,
    runroot: PathBuf,
    pub size_mib: u64,
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl LoopStore {
    /// Make a `size_mib` ext4 file system for `user`, mounted, with an empty graphroot and runroot.
    pub fn create(
        user: &LabUser,
        base_podman: &Podman,
        run_id: &str,
        owner: &str,
        size_mib: u64,
    ) -> Result<LoopStore> {
        if !is_root() {
            bail!(
                "a loop-mounted store needs root (mkfs, mount)\n  fix: run the disk-full scenario as root"
            );
        }
        let dir = Path::new(BASE).join(run_id);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let store = LoopStore {
            mnt: dir.join("mnt"),
            runroot: user.runtime_dir().join(format!("runnerlab-{run_id}")),
            dir,
            size_mib,
        };
        // The reaper unmounts stores of dead owners.
        std::fs::write(store.dir.join("owner"), owner)?;
        std::fs::write(
            store.dir.join("runroot"),
            store.runroot.as_os_str().as_encoded_bytes(),
        )?;
        let image = store.dir.join("image");
        let f = std::fs::File::create(&image)?;
        f.set_len(size_mib * 1024 * 1024)?;
        drop(f);
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0"])
            .arg(&image))
        .context("mkfs.ext4 (package e2fsprogs)")?;
        std::fs::create_dir_all(&store.mnt)?;
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&store.mnt))
        .context("loop-mounting the store's file system")?;
        user.chown(&store.mnt)?;
        // Rootless podman lives in the mount namespace of the user's pause process, made before this
        // mount; with private propagation (no systemd) it never sees it. Mount the same device there.
        let dev = String::from_utf8(
            Command::new("findmnt")
                .args(["-n", "-o", "SOURCE"])
                .arg(&store.mnt)
                .output()?
                .stdout,
        )?
        .trim()
        .to_owned();
        let pause = pause_pid(user, base_podman)?;
        run(Command::new("nsenter")
            .arg(format!("--target={pause}"))
            .arg("--mount")
            .arg("mount")
            .arg(&dev)
            .arg(&store.mnt))
        .context("mounting the store in the rootless user's mount namespace")?;
        std::fs::write(store.dir.join("pause"), pause.to_string())?;
        std::fs::create_dir_all(store.graphroot())?;
        user.chown(&store.graphroot())?;
        std::fs::create_dir_all(&store.runroot)?;
        user.chown(&store.runroot)?;
        Ok(store)
    }

    pub fn graphroot(&self) -> PathBuf {
        self.mnt.join("storage")
    }

    /// `podman` of `base`'s user, in this store.
    pub fn podman(&self, base: &Podman) -> Podman {
        base.with_store(&self.graphroot(), &self.runroot)
    }

    /// Used and total bytes of the file system.
    pub fn usage(&self) -> Result<(u64, u64)> {
        let c = std::ffi::CString::new(self.mnt.as_os_str().as_encoded_bytes())?;
        // SAFETY: statvfs(3) into a zeroed struct we own.
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
            bail!(
                "statvfs {}: {}",
                self.mnt.display(),
                std::io::Error::last_os_error()
            );
        }
        let total = s.f_blocks * s.f_frsize;
        let free = s.f_bavail * s.f_frsize;
        Ok((total - free, total))
    }
}

/// The user's rootless pause process (started by any podman command if none runs).
fn pause_pid(user: &LabUser, podman: &Podman) -> Result<u32> {
    let file = user.runtime_dir().join("libpod/tmp/pause.pid");
    let read = || -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(&file).ok()?.trim().parse().ok()?;
        Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
    };
    if let Some(p) = read() {
        return Ok(p);
    }
    let _ = podman.std_command(["info"]).output();
    read().with_context(|| {
        format!(
            "no rootless pause process ({} after `podman info`)",
            file.display()
        )
    })
}

fn remove(dir: &Path, runroot: Option<&Path>) {
    let mnt = dir.join("mnt");
    if let Some(pid) = std::fs::read_to_string(dir.join("pause"))
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
    {
        let _ = Command::new("nsenter")
            .arg(format!("--target={pid}"))
            .arg("--mount")
            .args(["umount", "-l"])
            .arg(&mnt)
            .output();
    }
    // Lazy: a process of the store that is still exiting must not keep the file system forever.
    let _ = Command::new("umount").arg("-l").arg(&mnt).output();
    if let Some(r) = runroot {
        let _ = std::fs::remove_dir_all(r);
    }
    let _ = std::fs::remove_dir_all(dir);
}

impl Drop for LoopStore {
    fn drop(&mut self) {
        remove(&self.dir, Some(&self.runroot));
    }
}

/// Remove the loop stores of dead runs (or all of them).
pub fn reap(all: bool) {
    let Ok(rd) = std::fs::read_dir(BASE) else {
        return;
    };
    for e in rd.flatten() {
        let owner = std::fs::read_to_string(e.path().join("owner")).unwrap_or_default();
        if all || !crate::engine::podman::owner_alive(owner.trim()) {
            let runroot = std::fs::read_to_string(e.path().join("runroot")).ok();
            remove(&e.path(), runroot.as_deref().map(Path::new));
        }
    }
}
