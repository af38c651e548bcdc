//! The runner and helper images: `podman build FROM` the forged base with the forged binaries,
//! tagged `localhost/runnerlab/gitlab-runner:<version>` and `…/gitlab-runner-helper:<version>`,
//! rebuilt only when an input (Containerfile, base, binary) changes.

use std::path::Path;

use anyhow::{Context, Result};

use super::runner::ForgedRunner;
use super::{Progress, sha256_file, sha256_str, sha256_tree};
use crate::engine::podman::{INPUT_LABEL, Podman};
use crate::paths;

/// Tags of the lab images for one runner.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LabImages {
    pub base: String,
    pub runner: String,
    pub helper: String,
}

/// The runner image plus the custom executor's Podman driver (`fixtures/executors/podman/`).
pub fn runner_podman_tag(version: &str) -> String {
    format!("localhost/runnerlab/gitlab-runner-podman:{version}")
}

/// Build the custom-executor runner image (`FROM` the runner image) in every store; returns its tag.
/// Unlike the others it installs the podman client from Debian, so its build needs the network.
pub async fn ensure_runner_podman(
    runner: &ForgedRunner,
    images: &LabImages,
    stores: &[Podman],
) -> Result<String> {
    let tag = runner_podman_tag(&runner.provenance.version);
    let driver = paths::fixtures().join("executors/podman");
    let files: Vec<(String, std::path::PathBuf)> =
        ["config", "prepare", "run", "cleanup", "common.sh"]
            .iter()
            .map(|f| (f.to_string(), driver.join(f)))
            .collect();
    let refs: Vec<(&str, &Path)> = files
        .iter()
        .map(|(n, p)| (n.as_str(), p.as_path()))
        .collect();
    build_one(
        &paths::fixtures().join("containerfiles/gitlab-runner-podman"),
        &refs,
        &images.runner,
        &tag,
        Some(runner),
        stores,
        true,
    )
    .await?;
    Ok(tag)
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
        Some(runner),
        stores,
        false,
    )
    .await?;
    build_one(
        &cf.join("gitlab-runner-helper"),
        &[("gitlab-runner-helper", &runner.helper_bin())],
        &base,
        &images.helper,
        Some(runner),
        stores,
        false,
    )
    .await?;
    Ok(images)
}

/// `podman build` `context_src` (plus `binaries`, copied in) `FROM` `base` as `tag` in every store
/// whose copy of `tag` was built from other inputs. `runner` labels images that contain it.
pub async fn build_one(
    context_src: &Path,
    binaries: &[(&str, &Path)],
    base: &str,
    tag: &str,
    runner: Option<&ForgedRunner>,
    stores: &[Podman],
    network: bool,
) -> Result<()> {
    // The base tag names its content (recipe hash); a runner image is named by version only, so
    // its input hash stands in for it.
    let base_id = match stores.first() {
        Some(s) => s
            .image_label(base, INPUT_LABEL)
            .await
            .unwrap_or_else(|| base.to_owned()),
        None => base.to_owned(),
    };
    let mut parts = vec![sha256_tree(context_src)?, base_id];
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
        let mut args: Vec<String> = [
            "build",
            "--quiet",
            if network {
                "--network=host"
            } else {
                "--network=none"
            },
            "--build-arg",
            &format!("BASE={base}"),
            "--label",
            &format!("{INPUT_LABEL}={hash}"),
        ]
        .map(String::from)
        .to_vec();
        if let Some(r) = runner {
            args.extend([
                "--label".into(),
                format!("runnerlab.runner={}", r.describe()),
            ]);
        }
        args.extend(["-t".into(), tag.into(), ctx.path().to_string_lossy().into()]);
        let old = image_id(s, tag).await;
        s.run(&args).await?;
        // The superseded build would stay behind as a dangling `<none>` image (hundreds of MB per
        // runner rebuild). An image still used by a container is refused by rmi: kept, harmless.
        if let Some(old) = old
            && image_id(s, tag).await.as_deref() != Some(old.as_str())
            && let Err(e) = s.run(["rmi", old.as_str()]).await
        {
            tracing::debug!("kept the superseded image {old} of {tag}: {e:#}");
        }
    }
    if let Some(p) = progress {
        p.finish(format!("{tag} ready"));
    }
    Ok(())
}

/// The image id `tag` names in `store`, if any.
async fn image_id(store: &Podman, tag: &str) -> Option<String> {
    store
        .text(["image", "inspect", "--format", "{{.Id}}", tag])
        .await
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
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
