//! Podman-in-Podman (issue 7): the images a job needs to run `podman build` inside itself, built
//! into the lab store on first use and cached by input hash like the other forged images.
//!
//! - `localhost/runnerlab/pinp:latest`: the job image, the base plus the podman stack and the
//!   in-container configuration of `fixtures/containerfiles/pinp/`;
//! - `localhost/runnerlab/gitlab-runner-pinp:<version>`: the same on top of the runner image, for
//!   shell mode, whose jobs run inside the runner container;
//! - `localhost/runnerlab/golang:latest`: a Go builder (Debian's `golang`) for multi-stage builds;
//! - an archive of the builder and `localhost/runnerlab/base:latest`, the images the inner podman
//!   builds `FROM` (see [`ensure_archive`] for why an archive).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::images::{LabImages, build_one};
use super::runner::ForgedRunner;
use super::sha256_str;
use crate::engine::podman::{LabUser, Podman, is_root};
use crate::paths;

/// The job image with podman inside.
pub const JOB_IMAGE: &str = "localhost/runnerlab/pinp:latest";
/// The Go builder image.
pub const GOLANG_IMAGE: &str = "localhost/runnerlab/golang:latest";
/// Where jobs find the archive of the images they build from (mounted read-only).
pub const ARCHIVE_IN_JOB: &str = "/var/lib/runnerlab/images/go-builder.tar";

/// The runner image with podman inside (shell mode).
pub fn shell_runner_tag(version: &str) -> String {
    format!("localhost/runnerlab/gitlab-runner-pinp:{version}")
}

/// What [`ensure`] made.
#[derive(Clone, Debug)]
pub struct PinpImages {
    pub job: String,
    pub shell_runner: String,
    pub golang: String,
    /// On the host, readable by the lab user's containers; mount it at [`ARCHIVE_IN_JOB`].
    pub archive: PathBuf,
}

/// Build the Podman-in-Podman images in the lab store (not the rootful one: only rootless labs use
/// them) and write the builder archive. Needs the network on first use (apt in the builds).
pub async fn ensure(
    runner: &ForgedRunner,
    images: &LabImages,
    podman: &Podman,
) -> Result<PinpImages> {
    // Concurrent labs (nextest runs two) would build the same images and archive twice.
    let _guard = super::lock(&paths::cache_dir().join("pinp/forge.lock")).await?;
    let cf = paths::fixtures().join("containerfiles");
    let stores = std::slice::from_ref(podman);
    let shell_runner = shell_runner_tag(&runner.provenance.version);
    let pinp = cf.join("pinp");
    build_one(&pinp, &[], &images.base, JOB_IMAGE, None, stores, true).await?;
    build_one(
        &pinp,
        &[],
        &images.runner,
        &shell_runner,
        Some(runner),
        stores,
        true,
    )
    .await?;
    build_one(
        &cf.join("golang"),
        &[],
        &images.base,
        GOLANG_IMAGE,
        None,
        stores,
        true,
    )
    .await?;
    let archive = ensure_archive(podman, &[GOLANG_IMAGE, super::base::LATEST]).await?;
    Ok(PinpImages {
        job: JOB_IMAGE.into(),
        shell_runner,
        golang: GOLANG_IMAGE.into(),
        archive,
    })
}

/// A `docker-archive` of `refs` under the lab user's cache, named by the images' ids, so that it is
/// rewritten only when an image changes.
///
/// Why an archive the job loads, rather than an additional image store mounted read-only: a store
/// is used as it lies on disk, so its files must be owned by the ids the inner podman maps. That
/// holds for root in a docker or custom job (its inner user namespace is the identity of the lab
/// user's), where a store works and costs nothing; it does not hold for the shell executor's
/// `gitlab-runner`, whose inner podman maps a single uid (see `fixtures/containerfiles/pinp`), so
/// every root-owned file of a shared store would be unreadable to it. `podman load` writes the
/// layers with whatever mapping the loading podman has: one mechanism for all three modes, at the
/// price of a load per job (~10 s for the ~800 MB of Go toolchain and base).
pub async fn ensure_archive(podman: &Podman, refs: &[&str]) -> Result<PathBuf> {
    let mut ids = Vec::new();
    for r in refs {
        ids.push(
            podman
                .text(["image", "inspect", "--format", "{{.Id}}", r])
                .await
                .with_context(|| format!("image {r} for the builder archive"))?,
        );
    }
    let mut parts: Vec<&str> = refs.to_vec();
    parts.extend(ids.iter().map(String::as_str));
    let hash = sha256_str(&parts);
    let dir = archive_dir(podman)?;
    let file = dir.join(format!("go-builder-{}.tar", &hash[..12]));
    if file.is_file() {
        return Ok(file);
    }
    let progress = super::Progress::new("builder archive");
    progress.step(format!("podman save {}", refs.join(" ")));
    // Complete or absent: podman (as the lab user, who owns the directory) writes a partial file
    // that is renamed into place.
    let partial = dir.join(format!(
        ".go-builder-{}.{}.partial",
        &hash[..12],
        std::process::id()
    ));
    let _ = std::fs::remove_file(&partial);
    let mut args: Vec<String> = [
        "save",
        "--quiet",
        "--multi-image-archive",
        "--format",
        "docker-archive",
        "-o",
    ]
    .map(String::from)
    .to_vec();
    args.push(partial.to_string_lossy().into_owned());
    args.extend(refs.iter().map(|r| r.to_string()));
    if let Err(e) = podman.run(&args).await {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    {
        use std::os::unix::fs::PermissionsExt;
        // Shell-mode jobs read it as gitlab-runner, not as the file's owner.
        std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o644))?;
    }
    std::fs::rename(&partial, &file)?;
    // Older archives are of images that no longer exist under these names.
    for e in std::fs::read_dir(&dir)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("go-builder-") && name.ends_with(".tar") && e.path() != file {
            let _ = std::fs::remove_file(e.path());
        }
    }
    progress.finish(format!("{} ready", file.display()));
    Ok(file)
}

/// `~<lab user>/.cache/runnerlab/pinp`, owned by the lab user: its podman writes the archive and
/// its containers mount it.
fn archive_dir(podman: &Podman) -> Result<PathBuf> {
    let Some(user) = podman.user() else {
        bail!("the Podman-in-Podman images live in the rootless lab store");
    };
    let dir = user.home.join(".cache/runnerlab/pinp");
    create_owned(&user.home, &dir, user)?;
    Ok(dir)
}

/// Create `dir` and its missing parents below `home`, owned by `user` when we are root.
pub(crate) fn create_owned(home: &Path, dir: &Path, user: &LabUser) -> Result<()> {
    let rel = dir
        .strip_prefix(home)
        .with_context(|| format!("{} is not under {}", dir.display(), home.display()))?;
    let mut p = home.to_path_buf();
    for c in rel.components() {
        p.push(c);
        if !p.is_dir() {
            std::fs::create_dir(&p).with_context(|| format!("creating {}", p.display()))?;
            if is_root() {
                std::os::unix::fs::chown(&p, Some(user.uid), Some(user.gid))
                    .with_context(|| format!("chown {}", p.display()))?;
            }
        }
    }
    Ok(())
}
