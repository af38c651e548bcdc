//! The runner and helper images: `podman build FROM` the forged base with the forged binaries,
//! tagged `localhost/runnerlab/gitlab-runner:<version>` and `…/gitlab-runner-helper:<version>`,
//! rebuilt only when an input (Containerfile, base, binary) changes.

use std::path::Path;

use anyhow::{Context, Result};

use super::runner::ForgedRunner;
use super::{Progress, sha256_file, sha256_str, sha256_tree};
use crate::paths;
use crate::podman::{INPUT_LABEL, Podman};

/// Tags of the lab images for one runner.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LabImages {
    pub base: String,
    pub runner: String,
    pub helper: String,
}

pub fn runner_tag(version: &str) -> String {
    format!("localhost/runnerlab/gitlab-runner:{version}")
}

pub fn helper_tag(version: &str) -> String {
    format!("localhost/runnerlab/gitlab-runner-helper:{version}")
}

/// Make sure the base, runner and helper images exist in every store.
pub async fn ensure(runner: &ForgedRunner, stores: &[Podman]) -> Result<LabImages> {
    let base = super::base::ensure(&super::base::BaseRecipe::default(), stores).await?;
    let version = &runner.provenance.version;
    let images = LabImages {
        base: base.clone(),
        runner: runner_tag(version),
        helper: helper_tag(version),
    };
    let cf = paths::fixtures().join("containerfiles");
    build_one(
        &cf.join("gitlab-runner"),
        &[("gitlab-runner", &runner.runner_bin())],
        &base,
        &images.runner,
        runner,
        stores,
    )
    .await?;
    build_one(
        &cf.join("gitlab-runner-helper"),
        &[("gitlab-runner-helper", &runner.helper_bin())],
        &base,
        &images.helper,
        runner,
        stores,
    )
    .await?;
    Ok(images)
}

async fn build_one(
    context_src: &Path,
    binaries: &[(&str, &Path)],
    base: &str,
    tag: &str,
    runner: &ForgedRunner,
    stores: &[Podman],
) -> Result<()> {
    let mut parts = vec![sha256_tree(context_src)?, base.to_owned()];
    for (_, b) in binaries {
        parts.push(sha256_file(b)?);
    }
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    let hash = sha256_str(&refs);
    let mut progress: Option<Progress> = None;
    for s in stores {
        if s.image_label(tag, INPUT_LABEL).await.as_deref() == Some(hash.as_str()) {
            continue;
        }
        let p = progress.get_or_insert_with(|| Progress::new(tag));
        p.step(format!("podman build ({} store)", s.store().name()));
        // The lab user must be able to read the context, so it lives under /tmp, not in root's cache.
        let ctx = tempfile::Builder::new()
            .prefix("runnerlab-ctx-")
            .tempdir_in("/tmp")?;
        copy_dir(context_src, ctx.path())?;
        for (name, b) in binaries {
            std::fs::copy(b, ctx.path().join(name))
                .with_context(|| format!("copying {}", b.display()))?;
        }
        open_up(ctx.path())?;
        let label_src = format!("runnerlab.runner={}", runner.describe());
        s.run([
            "build",
            "--quiet",
            "--network=none",
            "--build-arg",
            &format!("BASE={base}"),
            "--label",
            &format!("{INPUT_LABEL}={hash}"),
            "--label",
            &label_src,
            "-t",
            tag,
            &ctx.path().to_string_lossy(),
        ])
        .await?;
    }
    if let Some(p) = progress {
        p.finish(format!("{tag} ready"));
    }
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    for e in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let e = e?;
        let dst = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            std::fs::create_dir_all(&dst)?;
            copy_dir(&e.path(), &dst)?;
        } else {
            std::fs::copy(e.path(), &dst)?;
        }
    }
    Ok(())
}

/// World-readable context: directories 0755, files keep their bits plus read for all.
fn open_up(p: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let md = std::fs::metadata(p)?;
    if md.is_dir() {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))?;
        for e in std::fs::read_dir(p)? {
            open_up(&e?.path())?;
        }
    } else {
        let mode = md.permissions().mode() | 0o444;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}
