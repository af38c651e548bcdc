//! Podman control: one [`Podman`] per store (rootful or rootless). Commands go through the podman CLI,
//! which is the interface users script against; the API socket is used where the runner uses it
//! (see [`crate::engine::service`]).
//!
//! When the harness runs as root, rootless commands are run as the lab user through `setpriv`
//! (not `runuser`, whose pid is not podman's); when it runs as an ordinary user it *is* the lab user.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result, bail};

use crate::engine::EngineRef;
use crate::redact::scrub;

/// The label every resource the harness creates carries; its value is the run id.
pub const RUN_LABEL: &str = "runnerlab.run";
/// `<pid>:<start time>` of the process that owns a run; the reaper uses it to tell dead runs.
pub const OWNER_LABEL: &str = "runnerlab.owner";
/// Content hash of the inputs an image was built from.
pub const INPUT_LABEL: &str = "runnerlab.input-hash";

/// The unprivileged user that owns the rootless Podman store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

impl LabUser {
    /// Default name of the rootless user; `RUNNERLAB_USER` overrides it.
    pub const DEFAULT_NAME: &'static str = "runner-user";

    pub fn configured_name() -> String {
        std::env::var("RUNNERLAB_USER").unwrap_or_else(|_| Self::DEFAULT_NAME.to_owned())
    }

    /// Look the user up in the passwd database. When the harness itself runs unprivileged, the
    /// current user is the lab user whatever `RUNNERLAB_USER` says.
    pub fn lookup() -> Result<LabUser> {
        let name = if is_root() {
            Self::configured_name()
        } else {
            std::env::var("USER").unwrap_or_default()
        };
        let name = if name.is_empty() {
            current_user_name()?
        } else {
            name
        };
        let out = std::process::Command::new("getent")
            .args(["passwd", &name])
            .output()
            .context("running getent")?;
        if !out.status.success() {
            bail!(
                "the rootless user {name:?} does not exist.\n  fix: run `cargo lab setup` (as root), or create it: \
                 useradd -m -u 1001 -U -s /bin/bash {name}  (or set RUNNERLAB_USER to an existing user)"
            );
        }
        let line = String::from_utf8_lossy(&out.stdout);
        let f: Vec<&str> = line.trim().split(':').collect();
        if f.len() < 7 {
            bail!("unexpected passwd entry for {name}: {line}");
        }
        Ok(LabUser {
            name,
            uid: f[2].parse().context("uid")?,
            gid: f[3].parse().context("gid")?,
            home: PathBuf::from(f[5]),
        })
    }

    pub fn runtime_dir(&self) -> PathBuf {
        PathBuf::from(format!("/run/user/{}", self.uid))
    }

    /// Make `path` this user's (root creates directories the rootless podman writes into).
    pub fn chown(&self, path: &Path) -> Result<()> {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes())?;
        // SAFETY: chown(2) with a NUL-terminated path.
        if unsafe { libc::chown(c.as_ptr(), self.uid, self.gid) } != 0 {
            bail!(
                "chown {} to {}: {}",
                path.display(),
                self.name,
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }

    /// `setpriv` arguments that become this user with a clean environment, up to the program.
    pub fn setpriv_env(&self) -> Vec<OsString> {
        vec![
            format!("--reuid={}", self.uid).into(),
            format!("--regid={}", self.gid).into(),
            "--init-groups".into(),
            "env".into(),
            "-i".into(),
            format!("HOME={}", self.home.display()).into(),
            format!("USER={}", self.name).into(),
            format!("LOGNAME={}", self.name).into(),
            "PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin".into(),
            format!("XDG_RUNTIME_DIR={}", self.runtime_dir().display()).into(),
        ]
    }

    /// The rootless Podman API socket as the runner's docker executor sees it.
    pub fn socket_path(&self) -> PathBuf {
        self.runtime_dir().join("podman/podman.sock")
    }
}

fn current_user_name() -> Result<String> {
    let out = std::process::Command::new("id").arg("-un").output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Which Podman store a command talks to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Store {
    Rootful,
    Rootless(LabUser),
}

impl Store {
    pub fn name(&self) -> &'static str {
        match self {
            Store::Rootful => "rootful",
            Store::Rootless(_) => "rootless",
        }
    }
}

/// A handle on one Podman store of one engine.
#[derive(Clone, Debug)]
pub struct Podman {
    engine: EngineRef,
    store: Store,
    /// Global flags for every command (`--root`/`--runroot` of a store elsewhere).
    global: Vec<OsString>,
}

/// What a finished podman command printed.
#[derive(Debug)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
}

impl Podman {
    /// The host engine's rootful store.
    pub fn rootful() -> Podman {
        Podman::rootful_on(crate::engine::host())
    }

    /// The host engine's rootless store of `user`.
    pub fn rootless(user: LabUser) -> Podman {
        Podman::rootless_on(crate::engine::host(), user)
    }

    pub fn rootful_on(engine: EngineRef) -> Podman {
        Podman {
            engine,
            store: Store::Rootful,
            global: Vec::new(),
        }
    }

    pub fn rootless_on(engine: EngineRef, user: LabUser) -> Podman {
        Podman {
            engine,
            store: Store::Rootless(user),
            global: Vec::new(),
        }
    }

    /// The rootless store of the configured lab user on the host engine.
    pub fn lab() -> Result<Podman> {
        Ok(Podman::rootless(LabUser::lookup()?))
    }

    /// The engine this store belongs to.
    pub fn engine(&self) -> &EngineRef {
        &self.engine
    }

    /// The same user's Podman with its images, containers and volumes in `graphroot`/`runroot`
    /// instead of the configured store (a small filesystem for the disk-full scenario).
    pub fn with_store(&self, graphroot: &std::path::Path, runroot: &std::path::Path) -> Podman {
        let mut p = self.clone();
        p.global = vec![
            "--root".into(),
            graphroot.into(),
            "--runroot".into(),
            runroot.into(),
        ];
        p
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn user(&self) -> Option<&LabUser> {
        match &self.store {
            Store::Rootless(u) => Some(u),
            Store::Rootful => None,
        }
    }

    /// Program and leading arguments that run `podman` in this store: the engine's business.
    fn argv(&self) -> (OsString, Vec<OsString>) {
        self.engine.podman_argv(&self.store, &self.global)
    }

    /// A `tokio` command for `podman ARGS…` in this store, run from `/` so that the lab user can
    /// always enter the working directory.
    pub fn command<I, S>(&self, args: I) -> tokio::process::Command
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let (prog, pre) = self.argv();
        let mut c = tokio::process::Command::new(prog);
        c.args(pre)
            .args(args.into_iter().map(Into::into))
            .current_dir("/")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        c
    }

    /// The same as [`Podman::command`] for synchronous contexts (`Drop`, the reaper, panics).
    pub fn std_command<I, S>(&self, args: I) -> std::process::Command
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let (prog, pre) = self.argv();
        let mut c = std::process::Command::new(prog);
        c.args(pre)
            .args(args.into_iter().map(Into::into))
            .current_dir("/")
            .stdin(Stdio::null());
        c
    }

    /// Run `podman ARGS…`, capture its output, and fail with podman's own words if it fails.
    pub async fn run<I, S>(&self, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let shown = display_args(&args);
        let out = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .await
            .with_context(|| format!("starting `podman {shown}` ({})", self.store.name()))?;
        let o = Output {
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        if !out.status.success() {
            bail!(
                "`podman {shown}` ({} store) failed with {}:\n{}",
                self.store.name(),
                out.status,
                scrub(tail(&o.stderr, 20).trim())
            );
        }
        Ok(o)
    }

    /// Run `podman ARGS…` and return trimmed stdout.
    pub async fn text<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        Ok(self.run(args).await?.stdout.trim().to_owned())
    }

    pub async fn image_exists(&self, reference: &str) -> bool {
        self.command(["image", "exists", reference])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// The value of label `key` on image `reference`, if the image exists and has it.
    pub async fn image_label(&self, reference: &str, key: &str) -> Option<String> {
        let fmt = format!("{{{{index .Labels \"{key}\"}}}}");
        let v = self
            .text(["image", "inspect", "--format", &fmt, reference])
            .await
            .ok()?;
        (!v.is_empty() && v != "<no value>").then_some(v)
    }

    /// `podman import` a rootfs tarball, streamed through stdin so that the lab user need not be
    /// able to read the file.
    pub async fn import_tar(
        &self,
        tar: &Path,
        tag: &str,
        changes: &[String],
        message: &str,
    ) -> Result<()> {
        let mut args: Vec<String> = vec!["import".into()];
        for c in changes {
            args.push("--change".into());
            args.push(c.clone());
        }
        args.extend(["--message".into(), message.into(), "-".into(), tag.into()]);
        let file =
            std::fs::File::open(tar).with_context(|| format!("opening {}", tar.display()))?;
        let out = self
            .command(&args)
            .stdin(Stdio::from(file))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .await?;
        if !out.status.success() {
            bail!(
                "`podman import {}` ({} store) failed: {}",
                tar.display(),
                self.store.name(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Copy an image from this store into `other` (`podman save | podman load`).
    pub async fn copy_image_to(&self, reference: &str, other: &Podman) -> Result<()> {
        let mut save = self
            .command(["save", "--format", "oci-archive", reference])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdout = save.stdout.take().expect("piped stdout");
        let stdout: Stdio = stdout.try_into().context("piping podman save")?;
        let load = other
            .command(["load"])
            .stdin(stdout)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .await?;
        let saved = save.wait_with_output().await?;
        if !saved.status.success() || !load.status.success() {
            bail!(
                "copying {reference} from the {} to the {} store failed: {}{}",
                self.store.name(),
                other.store.name(),
                String::from_utf8_lossy(&saved.stderr).trim(),
                String::from_utf8_lossy(&load.stderr).trim()
            );
        }
        let loaded = String::from_utf8_lossy(&load.stdout);
        // An oci-archive loads under its name; make sure the tag is what callers ask for.
        if !other.image_exists(reference).await
            && let Some(id) = loaded.split_whitespace().last()
        {
            other.run(["tag", id, reference]).await?;
        }
        Ok(())
    }

    /// Names of containers, volumes and networks labelled with `run_id` (or with any run when `None`).
    pub fn labelled(&self, run_id: Option<&str>) -> Result<Resources> {
        match run_id {
            Some(r) => self.matching(&format!("{RUN_LABEL}={r}")),
            None => self.matching(RUN_LABEL),
        }
    }

    /// Names of containers, volumes and networks matching a label filter (`key` or `key=value`).
    pub fn matching(&self, label: &str) -> Result<Resources> {
        let filter = format!("label={label}");
        let list = |args: &[&str]| -> Result<Vec<String>> {
            let out = self
                .std_command(args)
                .output()
                .context("listing podman resources")?;
            if !out.status.success() {
                bail!(
                    "podman {} failed: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            Ok(String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect())
        };
        Ok(Resources {
            containers: list(&["ps", "-a", "--filter", &filter, "--format", "{{.Names}}"])?,
            volumes: list(&["volume", "ls", "--filter", &filter, "--format", "{{.Name}}"])?,
            networks: list(&[
                "network",
                "ls",
                "--filter",
                &filter,
                "--format",
                "{{.Name}}",
            ])?,
        })
    }

    /// Remove everything labelled with `run_id`, synchronously (safe in `Drop` and during panics).
    pub fn remove_run(&self, run_id: &str) -> Result<Resources> {
        self.remove_matching(&format!("{RUN_LABEL}={run_id}"))
    }

    /// Remove every container, volume and network matching a label filter, synchronously.
    pub fn remove_matching(&self, label: &str) -> Result<Resources> {
        let mut found = self.matching(label)?;
        // A second pass removes what a dying client created while the first ran.
        for _ in 0..2 {
            self.remove_found(label, &found);
            let left = self.matching(label)?;
            if left.is_empty() {
                return Ok(found);
            }
            found.containers.extend(left.containers);
            found.volumes.extend(left.volumes);
            found.networks.extend(left.networks);
        }
        let left = self.matching(label)?;
        bail!(
            "could not remove {} resources labelled {label}: {left}",
            self.store.name()
        )
    }

    fn remove_found(&self, label: &str, found: &Resources) {
        let filter = format!("label={label}");
        // Containers first: volumes and networks in use cannot be removed.
        let _ = self
            .std_command(["rm", "-f", "-t", "2", "--filter", &filter])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        for v in &found.volumes {
            let _ = self
                .std_command(["volume", "rm", "-f", v])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        for n in &found.networks {
            let _ = self
                .std_command(["network", "rm", "-f", n])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Every container, volume and network of a store with its labels (three podman calls).
#[derive(Debug, Default)]
pub struct Inventory {
    pub containers: Vec<(String, BTreeMap<String, String>)>,
    pub volumes: Vec<(String, BTreeMap<String, String>)>,
    pub networks: Vec<(String, BTreeMap<String, String>)>,
}

impl Inventory {
    /// Names of what carries any of `labels` (`key=value`).
    pub fn matching_any(&self, labels: &[String]) -> Resources {
        let hit = |l: &BTreeMap<String, String>| {
            labels.iter().any(|want| {
                let (k, v) = want.split_once('=').unwrap_or((want, ""));
                l.get(k).is_some_and(|x| v.is_empty() || x == v)
            })
        };
        let pick = |v: &[(String, BTreeMap<String, String>)]| -> Vec<String> {
            v.iter()
                .filter(|(_, l)| hit(l))
                .map(|(n, _)| n.clone())
                .collect()
        };
        Resources {
            containers: pick(&self.containers),
            volumes: pick(&self.volumes),
            networks: pick(&self.networks),
        }
    }
}

impl Podman {
    pub async fn inventory(&self) -> Result<Inventory> {
        fn rows(
            json: &str,
            name: &str,
            labels: &str,
        ) -> Result<Vec<(String, BTreeMap<String, String>)>> {
            let v: Vec<serde_json::Value> = serde_json::from_str(json.trim()).or_else(|e| {
                if json.trim().is_empty() {
                    Ok(Vec::new())
                } else {
                    Err(e)
                }
            })?;
            Ok(v.iter()
                .map(|o| {
                    let n = match &o[name] {
                        serde_json::Value::Array(a) => a.first().and_then(|x| x.as_str()),
                        x => x.as_str(),
                    }
                    .unwrap_or_default()
                    .to_owned();
                    let l = o[labels]
                        .as_object()
                        .map(|m| {
                            m.iter()
                                .map(|(k, v)| {
                                    (k.clone(), v.as_str().unwrap_or_default().to_owned())
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    (n, l)
                })
                .collect())
        }
        Ok(Inventory {
            containers: rows(
                &self.text(["ps", "-a", "--format", "json"]).await?,
                "Names",
                "Labels",
            )?,
            volumes: rows(
                &self.text(["volume", "ls", "--format", "json"]).await?,
                "Name",
                "Labels",
            )?,
            // Podman 4 spells the network fields in lower case.
            networks: rows(
                &self.text(["network", "ls", "--format", "json"]).await?,
                "name",
                "labels",
            )?,
        })
    }
}

/// Containers, volumes and networks (by name).
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Resources {
    pub containers: Vec<String>,
    pub volumes: Vec<String>,
    pub networks: Vec<String>,
}

impl Resources {
    pub fn is_empty(&self) -> bool {
        self.containers.is_empty() && self.volumes.is_empty() && self.networks.is_empty()
    }
    /// Containers, volumes and networks together.
    pub fn len(&self) -> usize {
        self.containers.len() + self.volumes.len() + self.networks.len()
    }
}

impl std::fmt::Display for Resources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "containers {:?}, volumes {:?}, networks {:?}",
            self.containers, self.volumes, self.networks
        )
    }
}

fn display_args(args: &[OsString]) -> String {
    scrub(
        &args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" "),
    )
}

fn tail(s: &str, lines: usize) -> &str {
    let idx = s
        .char_indices()
        .rev()
        .filter(|(_, c)| *c == '\n')
        .nth(lines)
        .map(|(i, _)| i + 1)
        .unwrap_or(0);
    &s[idx..]
}

/// `<pid>:<start time>` of this process: unique even when pids are reused.
pub fn owner_tag() -> String {
    let pid = std::process::id();
    format!("{pid}:{}", process_start_time(pid).unwrap_or(0))
}

/// The fields of /proc/PID/stat after the command name, from field 3 (state) on: the name may
/// contain spaces and parentheses; the fields after its last closing parenthesis are plain.
fn stat_after_comm(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(stat.get(stat.rfind(')')? + 2..)?.to_owned())
}

/// Field 22 of /proc/PID/stat (start time in clock ticks since boot).
pub fn process_start_time(pid: u32) -> Option<u64> {
    stat_after_comm(pid)?
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// Whether `pid` exists and has not exited: a zombie (or dead) process only waits for its parent
/// to reap it, so a process stopped by a signal counts as gone as soon as it exits.
pub fn process_running(pid: u32) -> bool {
    stat_after_comm(pid)
        .and_then(|r| r.chars().next())
        .is_some_and(|state| !matches!(state, 'Z' | 'X'))
}

/// Whether the process described by an owner tag is still alive.
pub fn owner_alive(tag: &str) -> bool {
    let Some((pid, start)) = tag.split_once(':') else {
        return false;
    };
    let (Ok(pid), Ok(start)) = (pid.parse::<u32>(), start.parse::<u64>()) else {
        return false;
    };
    process_start_time(pid) == Some(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An exited child its parent has not reaped yet is a zombie: stopping it is done.
    #[test]
    fn a_zombie_is_not_running() {
        let mut live = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let mut exited = std::process::Command::new("true").spawn().unwrap();
        let pid = exited.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while process_running(pid) {
            assert!(std::time::Instant::now() < deadline, "`true` did not exit");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
        assert!(process_running(live.id()));
        let _ = live.kill();
        let _ = live.wait();
        exited.wait().unwrap();
        assert!(!process_running(pid));
    }

    #[test]
    fn inventory_matches_any_label_by_key_and_value() {
        let l = |kv: &[(&str, &str)]| -> BTreeMap<String, String> {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let inv = Inventory {
            containers: vec![
                ("mine".into(), l(&[("runnerlab.run", "rl-1")])),
                ("other".into(), l(&[("runnerlab.run", "rl-2")])),
                (
                    "gitlab".into(),
                    l(&[("com.gitlab.gitlab-runner.runner.id", "abc")]),
                ),
            ],
            volumes: vec![("plain".into(), l(&[]))],
            networks: vec![(
                "net".into(),
                l(&[("com.gitlab.gitlab-runner.runner.id", "abc")]),
            )],
        };
        let r = inv.matching_any(&[
            "runnerlab.run=rl-1".into(),
            "com.gitlab.gitlab-runner.runner.id=abc".into(),
        ]);
        assert_eq!(r.containers, ["mine", "gitlab"]);
        assert!(r.volumes.is_empty());
        assert_eq!(r.networks, ["net"]);
    }

    #[test]
    fn own_owner_tag_is_alive_and_a_bogus_one_is_not() {
        assert!(owner_alive(&owner_tag()));
        assert!(!owner_alive("999999999:1"));
        assert!(!owner_alive("garbage"));
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 1), "c\n");
        assert_eq!(tail("a", 5), "a");
    }
}
