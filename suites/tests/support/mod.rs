//! Helpers shared by the tests that run the real gitlab-runner on this host against mock-gitlab.

#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// The forged runner binary (the one the labs put in their images): these tests never skip.
pub async fn runner_bin() -> PathBuf {
    runnerlab::forge::runner::get(&Default::default())
        .await
        .expect("the forged runner")
        .runner_bin()
}

/// A fixture project directory.
pub fn fixture(name: &str) -> PathBuf {
    runnerlab::paths::fixtures().join("projects").join(name)
}

/// mock-gitlab in a temporary data dir.
pub struct MockLab {
    pub mock: mock_gitlab::MockGitlab,
    _dir: tempfile::TempDir,
}

impl MockLab {
    pub async fn start() -> MockLab {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(f: impl FnOnce(&mut mock_gitlab::Config)) -> MockLab {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = mock_gitlab::Config {
            data_dir: dir.path().to_path_buf(),
            ..Default::default()
        };
        f(&mut cfg);
        let mock = mock_gitlab::MockGitlab::start(cfg)
            .await
            .expect("start mock");
        MockLab { mock, _dir: dir }
    }
}

/// The real runner as `run-single` with the shell executor against a mock, killed on drop.
pub struct Runner {
    child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl Runner {
    /// `run-single` for `builds` jobs, in its own scratch directory.
    pub fn spawn(bin: &Path, lab: &MockLab, token: &str, builds: u32) -> Runner {
        Self::spawn_with_env(bin, lab, token, builds, &[])
    }

    /// [`Runner::spawn`] with extra environment (the shell executor's jobs inherit it).
    pub fn spawn_with_env(
        bin: &Path,
        lab: &MockLab,
        token: &str,
        builds: u32,
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Runner {
        Self::spawn_at(bin, &lab.mock.local_url(), token, builds, env)
    }

    /// [`Runner::spawn_with_env`] against any coordinator URL.
    pub fn spawn_at(
        bin: &Path,
        url: &str,
        token: &str,
        builds: u32,
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Runner {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = tokio::process::Command::new(bin);
        c.envs(env.iter().copied());
        c.current_dir(dir.path())
            .args(["run-single", "--url", url, "--token", token])
            .args(["--executor", "shell", "--builds-dir"])
            .arg(dir.path().join("builds"))
            .arg("--cache-dir")
            .arg(dir.path().join("cache"))
            .args(["--max-builds", &builds.to_string(), "--wait-timeout", "60"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        Runner {
            child: c.spawn().expect("spawn gitlab-runner"),
            _dir: dir,
        }
    }

    pub async fn wait_exit(&mut self, within: Duration) -> bool {
        tokio::time::timeout(within, self.child.wait())
            .await
            .is_ok()
    }
}
