//! The Debian base image every lab image is built `FROM`: debootstrap minbase → clean → tar →
//! `podman import`, into the rootless store (and the rootful one when running as root).
//! There is no registry, so this is where every image starts.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::{Progress, lock, sha256_str};
use crate::engine::podman::{INPUT_LABEL, Podman, is_root};
use crate::paths;

/// What goes into the base image. Its hash names the image, so a change rebuilds it.
#[derive(Clone, Debug)]
pub struct BaseRecipe {
    pub suite: String,
    pub mirror: String,
    pub packages: Vec<String>,
}

/// Bumped when the steps below change in a way the recipe fields do not show.
const RECIPE_REVISION: &str = "1";

impl Default for BaseRecipe {
    fn default() -> Self {
        BaseRecipe {
            suite: "bookworm".into(),
            mirror: std::env::var("RUNNERLAB_DEBIAN_MIRROR")
                .unwrap_or_else(|_| "http://deb.debian.org/debian".into()),
            // git and git-lfs for the shell executor and the helper, curl for health checks.
            packages: [
                "bash",
                "git",
                "git-lfs",
                "ca-certificates",
                "curl",
                "procps",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

impl BaseRecipe {
    pub fn hash(&self) -> String {
        // The mirror is not part of the content: a different mirror gives the same image.
        sha256_str(&[RECIPE_REVISION, &self.suite, &self.packages.join(",")])
    }

    /// `localhost/runnerlab/base:<suite>-<hash12>`
    pub fn tag(&self) -> String {
        format!(
            "localhost/runnerlab/base:{}-{}",
            self.suite,
            &self.hash()[..12]
        )
    }
}

/// The stores the lab builds into: the rootless lab store always, the rootful one when root.
pub fn stores() -> Result<Vec<Podman>> {
    crate::engine::stores(&crate::engine::host())
}

/// Make sure the base image exists in every store; returns its tag.
pub async fn ensure(recipe: &BaseRecipe, stores: &[Podman]) -> Result<String> {
    let tag = recipe.tag();
    let hash = recipe.hash();
    let mut missing = Vec::new();
    for s in stores {
        if s.image_label(&tag, INPUT_LABEL).await.as_deref() != Some(hash.as_str()) {
            missing.push(s.clone());
        }
    }
    if missing.is_empty() {
        tag_latest(&tag, &hash, stores).await?;
        return Ok(tag);
    }
    let cache = paths::cache_dir().join("base");
    let _guard = lock(&cache.join(format!("{hash}.lock"))).await?;
    let tar = cache.join(format!("{}-{}.tar", recipe.suite, &hash[..12]));
    let progress = Progress::new("base image");
    if !tar.exists() {
        debootstrap(recipe, &tar, &progress)?;
    }
    for s in &missing {
        progress.step(format!("podman import into the {} store", s.store().name()));
        s.import_tar(
            &tar,
            &tag,
            &[
                "CMD [\"/bin/bash\"]".into(),
                "ENV LANG=C.UTF-8".into(),
                format!("LABEL {INPUT_LABEL}={hash}"),
                "LABEL org.opencontainers.image.title=runnerlab-base".into(),
            ],
            &format!(
                "debootstrap minbase {} + {}",
                recipe.suite,
                recipe.packages.join(",")
            ),
        )
        .await?;
    }
    progress.finish(format!("{tag} ready"));
    tag_latest(&tag, &hash, stores).await?;
    Ok(tag)
}

/// `localhost/runnerlab/base:latest`: a stable name for fixtures (`image: localhost/runnerlab/base:latest`).
pub const LATEST: &str = "localhost/runnerlab/base:latest";

async fn tag_latest(tag: &str, hash: &str, stores: &[Podman]) -> Result<()> {
    for s in stores {
        if s.image_label(LATEST, INPUT_LABEL).await.as_deref() != Some(hash) {
            s.run(["tag", tag, LATEST]).await?;
        }
    }
    Ok(())
}

fn debootstrap(recipe: &BaseRecipe, tar: &std::path::Path, progress: &Progress) -> Result<()> {
    if !is_root() {
        bail!(
            "building the base image needs root (debootstrap).\n  fix: run `sudo cargo lab setup` once; \
             the image is then cached for every user of this machine"
        );
    }
    let scratch = tempfile::Builder::new()
        .prefix("runnerlab-base-")
        .tempdir_in(tar.parent().expect("cache dir"))?;
    let root: PathBuf = scratch.path().join("rootfs");
    progress.step(format!(
        "debootstrap {} ({}) from {}",
        recipe.suite,
        recipe.packages.join(","),
        recipe.mirror
    ));
    let out = Command::new("debootstrap")
        .args([
            "--variant=minbase",
            &format!("--include={}", recipe.packages.join(",")),
        ])
        .arg(&recipe.suite)
        .arg(&root)
        .arg(&recipe.mirror)
        .output()
        .context("running debootstrap (is it installed? `cargo lab setup` installs it)")?;
    if !out.status.success() {
        let log = String::from_utf8_lossy(&out.stdout);
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        bail!(
            "debootstrap of {} from {} failed:\n{}\n{}\n  fix: check that the mirror is reachable (RUNNERLAB_DEBIAN_MIRROR overrides it)",
            recipe.suite,
            recipe.mirror,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    progress.step("cleaning the rootfs");
    std::fs::write(
        root.join("etc/apt/sources.list"),
        format!(
            "deb {m} {s} main\ndeb {m} {s}-updates main\ndeb http://deb.debian.org/debian-security {s}-security main\n",
            m = recipe.mirror,
            s = recipe.suite
        ),
    )?;
    for d in ["var/cache/apt/archives", "var/lib/apt/lists"] {
        clear_dir(&root.join(d))?;
    }
    for f in [
        "var/cache/apt/pkgcache.bin",
        "var/cache/apt/srcpkgcache.bin",
    ] {
        let _ = std::fs::remove_file(root.join(f));
    }
    clear_dir(&root.join("var/log"))?;
    // An empty machine-id: every container gets its own.
    std::fs::write(root.join("etc/machine-id"), "")?;
    std::fs::write(
        root.join("etc/apt/apt.conf.d/90norecommends"),
        "APT::Install-Recommends \"false\";\n",
    )?;
    progress.step("packing the rootfs");
    let partial = tar.with_extension("tar.partial");
    let st = Command::new("tar")
        .args(["--numeric-owner", "--xattrs", "--acls", "-C"])
        .arg(&root)
        .arg("-cf")
        .arg(&partial)
        .arg(".")
        .status()?;
    if !st.success() {
        bail!("tar of the base rootfs failed ({st})");
    }
    std::fs::rename(&partial, tar)?;
    Ok(())
}

/// Remove the contents of a directory, keeping the directory.
fn clear_dir(d: &std::path::Path) -> Result<()> {
    if let Ok(rd) = std::fs::read_dir(d) {
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                // Keep the skeleton apt expects (archives/partial, lists/partial).
                clear_dir(&p)?;
            } else {
                std::fs::remove_file(&p)?;
            }
        }
    }
    Ok(())
}
