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

/// An exclusive lock on `path` (created if needed), held until dropped, so that concurrent
/// harness processes never build the same thing twice.
pub fn lock(path: &Path) -> Result<File> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
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
