//! Helpers shared by the tests that run the real gitlab-runner on this host against mock-gitlab.

#![allow(dead_code)] // each test binary uses its own subset

use std::path::PathBuf;

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
