//! The runner on the host: the other common deployment of the docker executor on Podman (a
//! `gitlab-runner` installed on the machine, talking to the user's Podman socket), next to the
//! runner container every other lab uses.
//!
//! It runs as the lab user, from a copy of the forged binary in the lab's socket directory (the
//! user may not read the cache), with its `config.toml` there too, so the reaper finds and stops it
//! like the lab's API service when the harness is killed.
//!
//! One URL must reach mock-gitlab from the runner on the host *and* from job containers (the
//! helper uploads artifacts to the runner's own `url`): `http://runnerlab-gitlab:<port>`. The
//! runner resolves it to 127.0.0.1 through an `/etc/hosts` bind-mounted in a private mount
//! namespace (only its own view changes), and the job containers to 10.0.2.2 (slirp4netns's way to
//! the host loopback) through `[runners.docker] extra_hosts`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::engine::podman::LabUser;

/// The name job containers and the host runner both use for mock-gitlab.
pub const GITLAB_HOST: &str = "runnerlab-gitlab";

/// The current pid of a host runner, shared with the lab's cleanup guard (a restart changes it).
pub type PidCell = std::sync::Arc<std::sync::Mutex<Option<u32>>>;

pub struct HostRunner {
    user: LabUser,
    dir: PathBuf,
    child: tokio::sync::Mutex<Option<tokio::process::Child>>,
    pid: PidCell,
}

impl HostRunner {
    /// Prepare `<dir>/runner/`: the binary, the hosts file, room for config.toml.
    pub fn prepare(user: &LabUser, socket_dir: &Path, binary: &Path) -> Result<HostRunner> {
        let dir = socket_dir.join("runner");
        std::fs::create_dir_all(&dir)?;
        let bin = dir.join("gitlab-runner");
        std::fs::copy(binary, &bin)
            .with_context(|| format!("copying {} for the lab user", binary.display()))?;
        std::fs::write(
            dir.join("hosts"),
            format!("127.0.0.1\tlocalhost {GITLAB_HOST}\n::1\tlocalhost ip6-localhost\n"),
        )?;
        for f in [&dir, &bin, &dir.join("hosts")] {
            user.chown(f)?;
        }
        Ok(HostRunner {
            user: user.clone(),
            dir,
            child: tokio::sync::Mutex::new(None),
            pid: PidCell::default(),
        })
    }

    pub fn config(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    /// What the runner prints, before it is scrubbed into the lab's `runner.log`.
    pub fn raw_log(&self) -> PathBuf {
        self.dir.join("runner.log")
    }

    /// `gitlab-runner ARGS…` as the lab user, in a mount namespace of its own with our hosts file.
    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let u = &self.user;
        let mut c = tokio::process::Command::new("unshare");
        // unshare and sh exec, so the pid of this command is the runner's.
        c.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(
                r#"mount --bind "$0" /etc/hosts && u=$1 g=$2 h=$3 n=$4 r=$5 b=$6 && shift 6 && exec setpriv --reuid="$u" --regid="$g" --init-groups env -i HOME="$h" USER="$n" LOGNAME="$n" PATH=/usr/local/bin:/usr/bin:/bin XDG_RUNTIME_DIR="$r" "$b" "$@""#,
            )
            .arg(self.dir.join("hosts"))
            .arg(u.uid.to_string())
            .arg(u.gid.to_string())
            .arg(&u.home)
            .arg(&u.name)
            .arg(u.runtime_dir())
            .arg(self.dir.join("gitlab-runner"))
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        c
    }

    /// Run a `gitlab-runner` subcommand to completion (register, list, verify); its output.
    pub async fn exec(&self, args: &[&str]) -> Result<String> {
        let out = self
            .command(args)
            .output()
            .await
            .context("running gitlab-runner on the host (unshare, setpriv)")?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            bail!(
                "gitlab-runner {} on the host failed ({}):\n{}",
                args.first().unwrap_or(&""),
                out.status,
                crate::redact::scrub(&text)
            );
        }
        Ok(text)
    }

    /// Start `gitlab-runner run` (again, after [`HostRunner::stop`]).
    pub async fn start(&self) -> Result<u32> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.raw_log())?;
        let cfg = self.config();
        let cfg = cfg.to_string_lossy();
        let work = self.dir.to_string_lossy();
        let child = self
            .command(&["run", "--config", &cfg, "--working-directory", &work])
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting gitlab-runner run on the host")?;
        let pid = child.id().context("the host runner exited at once")?;
        *self.child.lock().await = Some(child);
        *self.pid.lock().unwrap_or_else(|e| e.into_inner()) = Some(pid);
        Ok(pid)
    }

    /// Stop the runner (SIGTERM, then SIGKILL after `grace`) and reap it.
    pub async fn stop(&self, grace: Duration) {
        let Some(mut child) = self.child.lock().await.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            // SAFETY: kill(2) on the child we spawned and have not reaped.
            unsafe {
                libc::kill(pid as i32, libc::SIGTERM);
            }
        }
        if tokio::time::timeout(grace, child.wait()).await.is_err() {
            let _ = child.kill().await;
        }
    }

    /// The pid cell a cleanup guard reads when it must kill the runner synchronously.
    pub fn pid_cell(&self) -> PidCell {
        self.pid.clone()
    }

    pub async fn pid(&self) -> Option<u32> {
        self.child.lock().await.as_ref().and_then(|c| c.id())
    }

    /// The last lines the runner printed.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(self.raw_log()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Set `key = n` among the global settings of config.toml (not register flags).
    pub fn set_global(&self, key: &str, n: u32) -> Result<()> {
        let path = self.config();
        let text = std::fs::read_to_string(&path)?;
        let prefix = format!("{key} = ");
        let mut found = false;
        let out: Vec<String> = text
            .lines()
            .map(|l| {
                if l.starts_with(&prefix) {
                    found = true;
                    format!("{key} = {n}")
                } else {
                    l.to_owned()
                }
            })
            .collect();
        if !found {
            bail!("{} has no global `{key}` line", path.display());
        }
        crate::paths::write_atomic(&path, (out.join("\n") + "\n").as_bytes())?;
        self.user.chown(&path)
    }
}

/// Kill a host runner synchronously (from `Drop`): SIGKILL, then wait until it is gone or a zombie.
pub fn kill_now(pid: u32) {
    // SAFETY: kill(2) on the runner process this lab started.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if !crate::engine::podman::process_running(pid) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
