//! Engines: the Podman installation a lab runs on — its `podman` binary and how it is entered,
//! its rootful and rootless stores, where its API service sockets live, how its containers reach
//! the host's loopback, and the facts a report names it by.
//!
//! [`HostEngine`] is the host's own Podman (Debian 12's 4.3.1 here). Another engine (a Podman from
//! a root filesystem run in a private mount namespace) implements [`Engine`] and is handed to
//! [`crate::lab::LabOptions::engine`]; the lab, the forge and the executor modes only ever talk to
//! it through [`podman::Podman`] handles it made.

pub mod podman;
pub mod service;
pub mod trixie;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use anyhow::{Context, Result, bail};

use podman::{LabUser, Podman, Store, is_root};

/// A Podman installation.
pub trait Engine: Send + Sync + std::fmt::Debug {
    /// The name users pass (`--engine NAME`) and reports carry: `host`, …
    fn name(&self) -> &str;

    /// Program and leading arguments that run this engine's `podman` on `store`, with `global`
    /// flags (e.g. `--root`) after `podman`.
    fn podman_argv(&self, store: &Store, global: &[OsString]) -> (OsString, Vec<OsString>);

    /// The address at which the rootless store's containers reach the host's loopback (where
    /// mock-gitlab and the private registry listen).
    fn host_gateway(&self) -> &str;

    /// The `--network` of runner containers and of the custom driver's job containers: one that
    /// reaches [`Engine::host_gateway`]; `None`: the engine's default rootless network does.
    fn container_network(&self) -> Option<&str>;

    /// What the report names the engine by: Podman, conmon, the OCI runtime, the network backend
    /// and the rootless network, each with its version.
    fn facts(&self) -> Facts;

    /// Where the host sees a path that this engine's podman names (a store's graph root, say):
    /// the engine may run in a mount namespace of its own.
    fn host_path(&self, path: &std::path::Path) -> std::path::PathBuf {
        path.to_path_buf()
    }
}

pub use trixie::{Component, Facts};

/// A shared handle on an engine.
pub type EngineRef = Arc<dyn Engine>;

/// The host's own Podman, run directly (rootful) or as the lab user through `setpriv` (rootless).
#[derive(Debug)]
pub struct HostEngine;

static HOST: LazyLock<EngineRef> = LazyLock::new(|| Arc::new(HostEngine));

/// The host engine.
pub fn host() -> EngineRef {
    HOST.clone()
}

/// The names users can pass to `--engine`.
pub const NAMES: &[&str] = &["host", trixie::NAME];

/// Open the engine users name: the host's, or an installed one attached for this process's runs
/// (its namespace is started when nothing else runs it, and stopped when the last user drops it).
pub fn open(name: &str) -> Result<EngineRef> {
    match name {
        "host" => Ok(host()),
        trixie::NAME => {
            let install = trixie::EngineInstall::require()?;
            let user = LabUser::lookup()?;
            let engine = trixie::TrixieEngine::start(&install, &user, &crate::lab::new_run_id())?;
            Ok(Arc::new(engine))
        }
        other => bail!(
            "unknown engine {other:?}: expected one of {}\n  fix: `--engine host`, or install one with `cargo lab setup --engine trixie`",
            NAMES.join(", ")
        ),
    }
}

impl Engine for HostEngine {
    fn name(&self) -> &str {
        "host"
    }

    fn podman_argv(&self, store: &Store, global: &[OsString]) -> (OsString, Vec<OsString>) {
        match store {
            Store::Rootless(u) if is_root() => {
                let mut a = u.setpriv_env();
                a.push("podman".into());
                a.extend(global.iter().cloned());
                ("setpriv".into(), a)
            }
            _ => ("podman".into(), global.to_vec()),
        }
    }

    fn host_gateway(&self) -> &str {
        // slirp4netns `allow_host_loopback` (the rootless containers.conf sets it for bridges too).
        "10.0.2.2"
    }

    fn container_network(&self) -> Option<&str> {
        Some("slirp4netns:allow_host_loopback=true")
    }

    fn facts(&self) -> Facts {
        // Debian's packages: the binaries' own --version output differs per tool.
        let v = |pkg: &str, name: &str| {
            let out = std::process::Command::new("dpkg-query")
                .args(["-W", "-f", "${Version}", pkg])
                .output();
            let package_version = out
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_default();
            Component {
                name: name.to_owned(),
                version: trixie::upstream_version(&package_version),
                package_version,
            }
        };
        Facts {
            engine: "host".into(),
            podman: v("podman", "podman"),
            conmon: v("conmon", "conmon"),
            // fixtures/host/rootful/containers.conf: runc (crun 1.8.1 refuses the hybrid layout).
            oci_runtime: v("runc", "runc"),
            network_backend: v("netavark", "netavark"),
            rootless_network: v("slirp4netns", "slirp4netns"),
        }
    }
}

/// A lab's own directory for its Podman API socket, `<runtime dir>/podman/<name>/`, removed
/// when dropped. The runner container mounts the *directory*: a bind mount of the socket file pins
/// its inode, so a restarted service (a new socket) would be unreachable for good.
#[derive(Debug)]
pub struct SocketDir(PathBuf);

impl SocketDir {
    pub fn create(user: &LabUser, name: &str, owner: &str) -> Result<SocketDir> {
        let podman_dir = user.runtime_dir().join("podman");
        if !podman_dir.is_dir() {
            bail!(
                "{} does not exist\n  fix: cargo lab setup (creates the rootless runtime dir and its podman/ folder)",
                podman_dir.display()
            );
        }
        let dir = podman_dir.join(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let d = SocketDir(dir);
        // The reaper removes directories of dead owners.
        crate::paths::write_atomic(&d.0.join("owner"), owner.as_bytes())?;
        if is_root() {
            user.chown(&d.0)?;
        }
        Ok(d)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn socket(&self) -> PathBuf {
        self.0.join("podman.sock")
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The stores of `engine` images are forged into: the lab user's, and the rootful one when root.
pub fn stores(engine: &EngineRef) -> Result<Vec<Podman>> {
    let mut v = vec![Podman::rootless_on(engine.clone(), LabUser::lookup()?)];
    if is_root() {
        v.push(Podman::rootful_on(engine.clone()));
    }
    Ok(v)
}
