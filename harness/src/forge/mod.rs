//! Forges: the expensive things the lab needs, built once, cached by the hash of their inputs, and
//! verified on every use.
//!
//! - [`base`]: the Debian base image (debootstrap → `podman import`), the root of every image.
//! - [`runner`]: the real gitlab-runner and its helper binary (from a path, an image or the Go module).
//! - [`images`]: the runner and helper images, `podman build FROM` the base.
//! - [`pinp`]: the Podman-in-Podman job images and the Go builder archive jobs build from.
//! - [`registry`]: the private registry server (Debian's `docker-registry`) and its seed image.

pub mod base;
pub mod images;
pub mod pinp;
pub mod registry;
pub mod runner;
pub mod services;

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

/// sha256 of a file, hex.
pub fn sha256_file(p: &Path) -> Result<String> {
    let mut f = File::open(p).with_context(|| format!("opening {}", p.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// sha256 over a directory tree: sorted relative paths, their modes' executable bit and contents.
pub fn sha256_tree(dir: &Path) -> Result<String> {
    let mut files = Vec::new();
    walk(dir, dir, &mut files)?;
    files.sort();
    let mut h = Sha256::new();
    for rel in files {
        let p = dir.join(&rel);
        h.update(rel.to_string_lossy().as_bytes());
        h.update([0]);
        h.update(std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?);
        h.update([0]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Relative paths of every regular file under `dir`.
pub fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e?;
        let ft = e.file_type()?;
        let p = e.path();
        if ft.is_dir() {
            walk(root, &p, out)?;
        } else if ft.is_file() {
            out.push(p.strip_prefix(root).expect("under root").to_path_buf());
        }
    }
    Ok(())
}

/// sha256 of strings, hex.
pub fn sha256_str(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())
}

/// An exclusive lock on a path, held until dropped: a file lock between processes, and an async
/// mutex between the tasks of this one.
pub struct LockGuard {
    // Dropped first: closing the file releases the flock before the next local waiter runs.
    _file: File,
    _local: tokio::sync::OwnedMutexGuard<()>,
}

/// An exclusive lock on `path` (created if needed), held until dropped, so that concurrent
/// harness processes and concurrent labs of one process never build the same thing twice.
///
/// Two tasks of one process (a conformance run's modes side by side) must not both block in
/// flock(2): a second open file of the same path conflicts with the first even in one process, and
/// a blocked executor thread can be the one the holder needs to finish. So tasks queue on an async
/// mutex per path, and only the winner waits for the file lock, on a blocking thread.
pub async fn lock(path: &Path) -> Result<LockGuard> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};
    type Locals = Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>;
    static LOCALS: OnceLock<Locals> = OnceLock::new();
    let local = LOCALS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(path.to_path_buf())
        .or_default()
        .clone();
    let local = local.lock_owned().await;
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening lock {}", path.display()))?;
    let shown = path.display().to_string();
    let f = tokio::task::spawn_blocking(move || f.lock().map(|()| f))
        .await
        .context("the lock task panicked")?
        .with_context(|| format!("locking {shown}"))?;
    Ok(LockGuard {
        _file: f,
        _local: local,
    })
}

/// A progress line for long work: a spinner with the step and elapsed time on a terminal,
/// plain lines on stderr otherwise (CI logs), silent under `RUNNERLAB_QUIET`.
pub struct Progress {
    bar: Option<ProgressBar>,
    started: Instant,
    label: String,
}

impl Progress {
    pub fn new(label: &str) -> Progress {
        let quiet = std::env::var_os("RUNNERLAB_QUIET").is_some();
        let bar = (!quiet).then(|| {
            let b = ProgressBar::new_spinner();
            b.set_style(
                ProgressStyle::with_template("{spinner} {prefix} [{elapsed}] {msg}")
                    .expect("static template"),
            );
            b.set_prefix(label.to_owned());
            b.enable_steady_tick(Duration::from_millis(200));
            b
        });
        Progress {
            bar,
            started: Instant::now(),
            label: label.to_owned(),
        }
    }

    /// Announce a step. On a terminal the spinner shows it; elsewhere it is one stderr line.
    pub fn step(&self, msg: impl Into<String>) {
        let msg = msg.into();
        if let Some(b) = &self.bar {
            if b.is_hidden() {
                eprintln!(
                    "[{} +{:>5.1}s] {msg}",
                    self.label,
                    self.started.elapsed().as_secs_f64()
                );
            } else {
                b.set_message(msg);
            }
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn finish(&self, msg: impl Into<String>) {
        let msg = msg.into();
        if let Some(b) = &self.bar {
            if b.is_hidden() {
                eprintln!(
                    "[{} +{:>5.1}s] {msg}",
                    self.label,
                    self.started.elapsed().as_secs_f64()
                );
            } else {
                b.finish_with_message(msg);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two tasks of one process on one thread take turns; before, the second blocked the thread in
    /// flock(2) while the first, on the same thread, could never release.
    #[tokio::test(flavor = "current_thread")]
    async fn tasks_of_one_process_take_turns_on_a_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let first = lock(&path).await.unwrap();
        let waiter = {
            let (path, order) = (path.clone(), order.clone());
            tokio::spawn(async move {
                let _g = lock(&path).await.unwrap();
                order.lock().unwrap().push("second");
            })
        };
        // The waiter runs up to its lock and yields instead of blocking this only thread.
        tokio::task::yield_now().await;
        order.lock().unwrap().push("first");
        drop(first);
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("the second task got the lock")
            .unwrap();
        assert_eq!(*order.lock().unwrap(), ["first", "second"]);
    }
}
