//! The Podman API service (`podman system service`) for a store: started by the harness,
//! health-checked through the Docker-compatible API the way the runner's docker executor talks to it
//! (bollard), and stopped when dropped. There is no systemd socket activation on the target hosts.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bollard::Docker;

use crate::engine::podman::Podman;

/// A running API service; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct ApiService {
    child: tokio::process::Child,
    socket: PathBuf,
    client: Docker,
    /// `ApiVersion` the service reported (docker-compat API version).
    pub api_version: String,
    /// Podman's own version, from the same answer.
    pub podman_version: String,
}

impl ApiService {
    /// Start the service of `podman`'s store on `socket` and wait (deadline `timeout`) until it answers
    /// `/_ping` and `/version`. Its stderr is appended to `log`.
    pub async fn start(
        podman: &Podman,
        socket: PathBuf,
        log: &Path,
        timeout: Duration,
    ) -> Result<ApiService> {
        if let Some(dir) = socket.parent() {
            // podman 4.3.1 does not create the socket's directory ("bind: no such file or directory").
            if !dir.is_dir() {
                bail!(
                    "{} does not exist\n  fix: cargo lab setup (creates the rootless runtime dir and its podman/ folder)",
                    dir.display()
                );
            }
        }
        if socket.exists() {
            // A stale socket from a killed service would make `bind` fail.
            let _ = std::fs::remove_file(&socket);
        }
        let uri = format!("unix://{}", socket.display());
        // A file, never a pipe nobody reads: a service whose warnings fill a 64 KiB pipe blocks
        // in write(2) and every API call behind it hangs. Appended, so a restart keeps the story.
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let log_start = log_file.metadata().map(|m| m.len()).unwrap_or(0);
        // RUNNERLAB_API_LOG_LEVEL=info logs every API request with its timing (podman's own
        // `--log-level`), to see where a job's time goes through the socket.
        let level = std::env::var("RUNNERLAB_API_LOG_LEVEL").ok();
        let mut args = vec!["system", "service", "--time=0", uri.as_str()];
        if let Some(l) = level.as_deref() {
            args.insert(0, l);
            args.insert(0, "--log-level");
        }
        let child = podman
            .command(args)
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .context("starting podman system service")?;
        let deadline = Instant::now() + timeout;
        let mut child = child;
        loop {
            if let Some(st) = child.try_wait()? {
                let err = std::fs::read(log).unwrap_or_default();
                let err = String::from_utf8_lossy(err.get(log_start as usize..).unwrap_or(&[]));
                bail!(
                    "podman system service exited ({st}) before answering: {}\n  (log: {})",
                    err.trim(),
                    log.display()
                );
            }
            // bollard refuses to build a client for a socket that does not exist (yet); rootless
            // podman may also replace the socket once while it re-executes into its user namespace.
            if let Ok(client) = Docker::connect_with_unix(
                &socket.to_string_lossy(),
                30,
                bollard::API_DEFAULT_VERSION,
            ) && client.ping().await.is_ok()
            {
                let v = client.version().await.context("GET /version")?;
                return Ok(ApiService {
                    child,
                    socket,
                    client,
                    api_version: v.api_version.unwrap_or_default(),
                    podman_version: v.version.unwrap_or_default(),
                });
            }
            if Instant::now() > deadline {
                let _ = child.start_kill();
                bail!(
                    "the Podman API service on {} did not answer within {timeout:?}",
                    socket.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The service's process id (for samplers); `None` once it has been reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub fn socket(&self) -> &PathBuf {
        &self.socket
    }

    pub fn client(&self) -> &Docker {
        &self.client
    }

    /// Whether the service process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stop the service and wait for it to exit.
    pub async fn stop(mut self) -> Result<()> {
        self.terminate();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        let _ = self.child.start_kill();
        let _ = std::fs::remove_file(&self.socket);
        Ok(())
    }

    fn terminate(&mut self) {
        if let Some(pid) = self.child.id() {
            // SIGTERM first: podman removes its socket and exits cleanly. The pid is podman's own
            // (setpriv execs), so the signal reaches it.
            // SAFETY: kill(2) with a pid we spawned.
            unsafe {
                libc::kill(pid as i32, libc::SIGTERM);
            }
        }
    }
}

impl Drop for ApiService {
    fn drop(&mut self) {
        self.terminate();
        // kill_on_drop on the Command sends SIGKILL if it did not exit; a killed service leaves its
        // socket file behind, so remove it here.
        let _ = self.child.start_kill();
        let _ = std::fs::remove_file(&self.socket);
    }
}
